"""The command-line reference, generated from the parameter declarations so that it cannot drift.

``python -m streammask.cli.reference > docs/cli.md`` writes it; ``tests/test_docs.py`` fails when
``docs/cli.md`` differs from what this module generates. Every run setting (``RUN_PARAMS``) is at
once a ``streammask run`` flag, a ``process_video`` keyword and a pipeline-file key; every variant
parameter a ``--VARIANT-NAME`` flag and a key of the pipeline file's ``[VARIANT]`` table.
"""

from __future__ import annotations

import argparse
import sys
from typing import Iterable

from ..params import Param
from ..pipeline.settings import RUN_PARAMS
from ..variants import VARIANTS
from .main import build_parser

__all__ = ["generate"]


def _default(p: Param) -> str:
    if p.default is None:
        return "auto" if "auto" in p.help else "none"
    if isinstance(p.default, bool):
        return "on" if p.default else "off"
    if isinstance(p.default, (tuple, list)):
        return ",".join(str(v) for v in p.default)
    return str(p.default) if p.default != "" else "(empty)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _options(command: str) -> dict[str, list[str]]:
    """``{dest: option strings}`` of a subcommand, as its parser has them."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: list(a.option_strings) for a in sub.choices[command]._actions if a.option_strings}


def _table(params: Iterable[Param], *, prefix: str = "") -> list[str]:
    options = _options("run")
    rows = ["| flag | pipeline key | default | allowed | meaning |", "|---|---|---|---|---|"]
    for p in params:
        flags = options[(f"{prefix}__" if prefix else "") + p.name]
        rows.append(f"| {', '.join(f'`{f}`' for f in flags)} | `{p.name}` | `{_cell(_default(p))}` | "
                    f"{_cell(p.allowed())} | {_cell(p.help)} |")
    return rows


def _subcommand_flags(name: str) -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.choices[name]
    run_flags = {"--" + q.name.replace("_", "-") for q in RUN_PARAMS}
    rows = ["| flag | meaning |", "|---|---|"]
    for action in p._actions:
        flags = [o for o in action.option_strings if o.startswith("--")]
        if not flags or flags[0] in run_flags or flags[0] == "--help" or "__" in (action.dest or ""):
            continue
        rows.append(f"| `{'`, `'.join(flags)}` | {_cell(action.help or '')} |")
    return rows


def generate() -> str:
    """The whole reference, as Markdown."""
    lines = [
        "# Command-line reference",
        "",
        "Generated from the parameter declarations by `python -m streammask.cli.reference > docs/cli.md` "
        "(a test fails when this page and the code disagree). Each run setting is a `streammask run` flag, a "
        "`streammask.process_video` keyword (the flag without `--`, with `_`) and a pipeline-file key; each "
        "variant parameter is a `--VARIANT-NAME` flag and a key of the pipeline file's `[VARIANT]` table.",
        "",
        "## Run settings (`run`, `batch`; most of them in `preview`)",
        "",
        *_table(RUN_PARAMS),
    ]
    for name, variant in VARIANTS.items():
        lines += ["", f"## Variant `{name}`: {variant.title}", "", *_table(variant.params, prefix=name)]
    for command in ("batch", "preview", "bench"):
        lines += ["", f"## `streammask {command}`: its own flags", "", *_subcommand_flags(command)]
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(generate())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
