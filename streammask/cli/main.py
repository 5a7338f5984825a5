"""Command line: a thin layer over the library.

Flags are generated from the parameter declarations (``RUN_PARAMS`` and each
variant's ``params``), so ``--batch-size`` is ``batch_size=`` in the API and
``batch_size =`` in a pipeline file, and ``--mixlab-blur`` is ``blur`` in the
pipeline file's ``[mixlab]`` table. Each subcommand lives in its own module
(:mod:`.run`, :mod:`.batch`, :mod:`.bench`, :mod:`.preview`); :mod:`.common`
holds what they share (settings, signals, exit statuses).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from .. import __version__
from . import batch
from . import bench
from . import preview
from . import run

__all__ = ["main", "build_parser"]

COMMANDS = {"run": run.run_command, "probe": run.probe_command, "batch": batch.run_batch_command,
            "bench": bench.run_bench_command, "preview": preview.run_preview_command}
"""Subcommand name -> ``command(args) -> exit status``."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streammask", description="Text-prompted video masking with CLIPSeg.")
    parser.add_argument("--version", action="version", version=f"streammask {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run.add_run_parser(sub)
    run.add_probe_parser(sub)
    batch.add_batch_parser(sub)
    bench.add_bench_parser(sub)
    preview.add_preview_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="streammask: %(levelname)s: %(message)s")
    return COMMANDS[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
