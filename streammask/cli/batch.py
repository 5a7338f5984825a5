"""``streammask batch``: many clips with one model load, resume, a report (see :mod:`streammask.batch`)."""

from __future__ import annotations

import argparse
from typing import Any

from ..batch.jobs import BATCH_PARAMS, REPORT_NAME, plan_batch_work
from ..batch.local import run_batch
from ..params import add_arguments
from .common import CommandContext, add_run_settings, collect_settings, guarded

__all__ = ["add_batch_parser", "run_batch_command"]


def add_batch_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``batch`` subcommand (same run settings, variant flags and pipeline files as ``run``)."""
    batch = subparsers.add_parser(
        "batch", help="mask many clips (files, folders, manifests) with one model load, with resume",
        description="Mask many clips: files, folders (recursive) and CSV/JSONL manifests with per-clip overrides. "
                    "Each clip is written to its own subfolder of -o; one JSONL row per clip is appended to the "
                    "report; clips already done with the same settings are skipped. Exit status 1 when any clip "
                    "failed.")
    batch.add_argument("inputs", metavar="INPUT", nargs="+",
                       help="video file, folder (searched recursively) or manifest (.csv with a header, .jsonl)")
    batch.add_argument("--force", action="store_true", help="re-process clips that are already done")
    batch.add_argument("--report", metavar="FILE", help=f"JSONL report to append to (default OUTDIR/{REPORT_NAME})")
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no summary")
    add_arguments(batch, list(BATCH_PARAMS), title="engine, segments, dry run")
    add_run_settings(batch, title="run settings (every clip; a manifest can override them per clip)")
    return batch


def _dry_run(args: argparse.Namespace, out_dir: str, opts: dict[str, Any], settings: dict[str, Any]) -> int:
    """``--dry-run``: print the plan; write nothing."""
    engine = opts.get("engine", "local")
    workers = 1 if engine == "local" else int(opts.get("actors") or 1)
    settings = {k: v for k, v in settings.items() if k != "progress"}
    plan, skipped, failed = plan_batch_work(
        args.inputs, out_dir=out_dir, workers=workers, segment_seconds=opts.get("segment_seconds"),
        overlap_frames=opts.get("overlap_frames", BATCH_PARAMS["overlap_frames"].default), force=args.force, **settings)
    print(f"dry run ({engine} engine): nothing is written")
    print(plan.describe())
    print(f"  {len(skipped)} clip(s) already done (skipped)" + "".join(f"\n    {p}" for p in skipped))
    for path, error in failed.items():
        print(f"  cannot run {path}: {error}")
    return 1 if failed else 0


def run_batch_command(args: argparse.Namespace) -> int:
    """Run ``streammask batch``: 0 when every clip is ok or skipped, 1 when any failed, 2 for a usage error."""
    return guarded(_batch, args)


def _batch(args: argparse.Namespace, ctx: CommandContext) -> int:
    ctx.stop_detail = lambda: "; clips finished so far are recorded and will be skipped by a re-run"
    settings = collect_settings(args)
    settings.setdefault("progress", True)
    out_dir = settings.pop("out_dir", "streammask-out")
    opts = {p.name: p.validate(getattr(args, p.name), label="--" + p.name.replace("_", "-"))
            for p in BATCH_PARAMS if getattr(args, p.name, None) is not None}
    if opts.pop("dry_run", False):
        return _dry_run(args, out_dir, opts, settings)
    report = run_batch(args.inputs, out_dir=out_dir, force=args.force, report=args.report, **opts, **settings)
    if not args.quiet:
        print(report.describe())
    return report.exit_code
