"""``streammask run`` and ``streammask probe``."""

from __future__ import annotations

import argparse
from typing import Any

from ..io.video import probe
from ..pipeline.run import process_video
from ..variants import check_prompt
from .common import CommandContext, add_run_settings, collect_settings, guarded

__all__ = ["add_run_parser", "run_command", "add_probe_parser", "probe_command"]


def add_run_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``run`` subcommand: every run setting and variant flag."""
    run = subparsers.add_parser("run", help="mask a video: write mask, heatmap and matte outputs",
                                description="Mask a video with a text prompt and write mask / heatmap / matte outputs.")
    run.add_argument("input", metavar="INPUT", help="input video file")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    add_run_settings(run)
    return run


def _kept(settings: dict[str, Any]) -> str:
    return "kept (finalized)" if settings.get("keep_partial") else "removed"


def run_command(args: argparse.Namespace) -> int:
    """``streammask run``: 0 when every output is written (exit statuses: :func:`~streammask.cli.common.guarded`)."""
    return guarded(_run, args)


def _run(args: argparse.Namespace, ctx: CommandContext) -> int:
    settings: dict[str, Any] = {}
    ctx.stop_detail = ctx.failure_detail = lambda: f"; partial outputs were {_kept(settings)}"
    settings.update(collect_settings(args))
    check_prompt(settings.get("prompt", ""), name="--prompt", where=" (give --prompt or a pipeline file's prompt)")
    summary = process_video(args.input, **settings)
    if not args.quiet:
        print(summary.describe())
    return 0


def add_probe_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``probe`` subcommand."""
    p = subparsers.add_parser("probe", help="print a video's metadata",
                              description="Print a video's metadata; the frame count is the header's and the "
                                          "packets counted in the file (demuxed, not decoded).")
    p.add_argument("input", metavar="INPUT")
    return p


def probe_command(args: argparse.Namespace) -> int:
    """``streammask probe``: print the video's metadata."""
    return guarded(_probe, args)


def _probe(args: argparse.Namespace, ctx: CommandContext) -> int:
    print(probe(args.input, count_frames=True).describe())
    return 0
