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


DOCS = README.parent / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]


def test_every_flag_in_the_readme_and_docs_exists():
    flags = _flags_by_command()
    known = set().union(*flags.values())
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        mentioned = set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", text))
        assert sorted(mentioned - known) == [], page.name
    assert re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", README.read_text(encoding="utf-8")), "no flags in the README"
    # the commands' own pages name their own flags in their tables
    for command, page in (("batch", "batch.md"), ("preview", "preview.md")):
        text = (DOCS / page).read_text(encoding="utf-8")
        table_flags = set(re.findall(r"^\| `(--[a-z0-9-]+)`", text, flags=re.M))
        assert sorted(table_flags - flags[command]) == [], command


def test_the_readme_links_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), (page.name, target)


def test_readme_default_batch_size_is_auto():
    from streammask.pipeline import RUN_PARAMS

    text = (DOCS / "usage.md").read_text(encoding="utf-8")
    assert RUN_PARAMS["batch_size"].default is None  # auto
    assert "| `--batch-size` | `auto` |" in text and "| `--batch-size` | 8 |" not in text
