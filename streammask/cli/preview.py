"""``streammask preview``: the live preview (see :mod:`streammask.preview`)."""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from typing import Callable

from ..model.clipseg import load_from_settings
from ..model.options import MODEL_SPEED_PARAMS
from ..params import add_arguments
from ..pipeline.settings import RUN_PARAMS, normalize_variants
from ..preview.session import PREVIEW_PARAMS, PreviewSession, check_causal, recording_paths
from ..preview.sources import StreamDroppedError, parse_source
from ..preview.web import parse_serve
from ..temporal.smoothers import TEMPORAL_PARAMS
from ..variants import check_prompt
from .common import CommandContext, add_run_settings, collect_settings, guarded

__all__ = ["add_preview_parser", "run_preview_command"]


# ---------------------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------------------
_RUN_KEYS_NOT_IN_PREVIEW = ("out_dir", "max_frames", "queue_size", "progress", "strict", "keep_partial",
                            # not (yet) applied to a live preview or its recordings: not offered
                            "audio", "matte_style", "matte_color", "background", "max_batch_mb",
                            "stride", "skip_static", "static_psnr", "threads", "vp9_deadline", "vp9_cpu_used",
                            "refine", "refine_radius", "refine_eps", "refine_sharpen", "choke", "feather",
                            "clip_black", "clip_white")


def add_preview_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``preview`` subcommand."""
    p = subparsers.add_parser(
        "preview", help="live preview of a camera, a stream or a file, with bounded latency",
        description="Show the mask live: source | heatmap | matte in a window (and/or a local web page with "
                    "--serve), with keys to change the threshold, views, variant and prompt. Stale frames are "
                    "dropped, never queued, so the latency stays bounded. Keys: up/down threshold, v views, "
                    "c variant, space pause, s snapshot, p or Enter new prompt, q or Esc quit.")
    p.add_argument("source", metavar="SOURCE", nargs="?", default="0",
                   help="camera index (0) or device (/dev/video0, avfoundation:0, dshow:video=NAME), stream URL "
                        "(rtsp://, http://, udp://, ...) or video file (default: camera 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="no status line and no summary")
    group = p.add_argument_group("preview settings")
    add_arguments(group, [q for q in PREVIEW_PARAMS if q.name != "no_window"])
    group.add_argument("--no-window", dest="no_window", action="store_true", default=None,
                       help=PREVIEW_PARAMS["no_window"].help)
    add_run_settings(p, skip=_RUN_KEYS_NOT_IN_PREVIEW,
                     title="run settings (as `streammask run`; --batch-size defaults to 1 here)")
    return p


def _status_printer(stream) -> Callable[[PreviewSession], None]:
    last = [0.0]

    def on_frame(session: PreviewSession) -> None:
        now = time.perf_counter()
        if now - last[0] < 1.0:
            return
        last[0] = now
        s = session.stats
        stream.write(f"\rpreview: {session.processed} frames  {s.fps:5.1f} fps  latency {1000 * s.last:4.0f} ms  "
                     f"dropped {session.capture.frames.dropped}   ")
        stream.flush()

    return on_frame


def _stdin_prompts() -> "queue.Queue[str] | None":
    """Lines typed in the terminal become the new prompt (when stdin is a terminal)."""
    try:
        if not sys.stdin or not sys.stdin.isatty():
            return None
    except (ValueError, OSError):
        return None
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            lines.put(line)

    threading.Thread(target=read, name="streammask-stdin", daemon=True).start()
    return lines


def _recorded(session: PreviewSession | None, record: str | None) -> str:
    if not record:
        return ""
    n = len(session.recordings) if session is not None else 0
    return f"; {n} recording(s) finalized in {record}" if n else "; nothing was recorded yet"


def run_preview_command(args: argparse.Namespace) -> int:
    """``streammask preview``: 0 at the end of the source / quit / window closed, 1 when a stream dropped for good,
    2 for bad input, 130 on Ctrl-C, 143 on SIGTERM. Recordings are finalized in every case."""
    return guarded(_preview, args)


def _preview(args: argparse.Namespace, ctx: CommandContext) -> int:
    settings = collect_settings(args)
    for key in _RUN_KEYS_NOT_IN_PREVIEW:
        settings.pop(key, None)
    for q in PREVIEW_PARAMS:
        value = getattr(args, q.name, None)
        if value is not None:
            settings[q.name] = q.validate(value, label="--" + q.name.replace("_", "-"))
    prompt = settings.pop("prompt", "")
    check_prompt(prompt, name="--prompt", where=" (give --prompt or a pipeline file's prompt)")
    model_settings = {key: settings.pop(key) for key in ("model", "revision", "device", "dtype", *MODEL_SPEED_PARAMS.names())
                      if key in settings}
    quiet = args.quiet
    record = settings.get("record")
    session = None
    ctx.stop_lead = "\n"
    ctx.stop_detail = lambda: _recorded(session, record)
    try:
        # validate the source and settings before the (slow) model load
        parse_source(args.source)
        if settings.get("serve"):
            parse_serve(settings["serve"], allow_remote=bool(settings.get("allow_remote")))
        check_causal(TEMPORAL_PARAMS.validate({k: v for k, v in settings.items() if k in TEMPORAL_PARAMS}))
        if record:  # existing recordings: refused before the model load, as `run` does
            recording_paths(parse_source(args.source), record,
                            variants=tuple(normalize_variants(settings.get("variants", ("soft",)))),
                            outputs=RUN_PARAMS["outputs"].validate(settings.get("outputs", ("mask", "heatmap", "matte"))),
                            formats={k: settings.get(f"{k}_format", RUN_PARAMS[f"{k}_format"].default)
                                     for k in ("mask", "heatmap", "matte")},
                            template=settings.get("output_template"), overwrite=bool(settings.get("overwrite")))
        segmenter = load_from_settings(model_settings)
        session = PreviewSession(args.source, prompt=prompt, segmenter=segmenter,
                                 on_frame=None if quiet else _status_printer(sys.stderr),
                                 prompt_lines=_stdin_prompts(), announce=sys.stderr, **settings)
        summary = session.run()
    except StreamDroppedError as exc:
        print(f"\nstreammask: error: {exc}{_recorded(session, record)}", file=sys.stderr)
        return 1
    if not quiet:
        print("", file=sys.stderr)
        print(summary.describe())
    return 0
