"""The README's command lines stay true: every ``--flag`` it mentions is a flag of a ``streammask`` command,
and the shipped pipeline files it points to load."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from streammask.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _flags_by_command() -> dict[str, set[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {opt for action in p._actions for opt in action.option_strings if opt.startswith("--")}
            for name, p in sub.choices.items()}


def test_every_flag_in_the_readme_exists():
    flags = _flags_by_command()
    known = set().union(*flags.values())
    mentioned = set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", README.read_text(encoding="utf-8")))
    assert mentioned, "no flags found in the README"
    assert sorted(mentioned - known) == []
    # the commands' own sections name their own flags
    for command, heading in (("batch", "### Scaling out"), ("preview", "## Live preview")):
        text = README.read_text(encoding="utf-8")
        section = text[text.index(heading):]
        section = section[:section.index("\n## ", 1)]
        table_flags = set(re.findall(r"^\| `(--[a-z0-9-]+)`", section, flags=re.M))
        assert sorted(table_flags - flags[command]) == [], command


def test_readme_default_batch_size_is_auto():
    from streammask.pipeline import RUN_PARAMS

    text = README.read_text(encoding="utf-8")
    assert RUN_PARAMS["batch_size"].default is None  # auto
    assert "| `--batch-size` | `auto` |" in text and "| `--batch-size` | 8 |" not in text
