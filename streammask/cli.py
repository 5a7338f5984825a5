"""Command line: a thin layer over :func:`streammask.process_video`.

Flags are generated from the parameter declarations (``RUN_PARAMS`` and each
variant's ``params``), so ``--batch-size`` is ``batch_size=`` in the API and
``batch_size =`` in a pipeline file, and ``--mixlab-blur`` is ``blur`` in the
pipeline file's ``[mixlab]`` table.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any, Sequence

from .errors import ParameterError, StreamMaskError
from .params import add_arguments

__all__ = ["main", "build_parser", "Terminated"]


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM.

    Like ``KeyboardInterrupt`` it is not an ``Exception``, so ``except Exception``
    blocks let it through and :func:`~streammask.process_video`'s cleanup runs.
    """


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _install_sigterm():
    """Install the SIGTERM handler (main thread only); returns the previous handler or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - platforms without SIGTERM
        return None


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .pipeline import RUN_PARAMS
    from .variants import VARIANTS

    parser = argparse.ArgumentParser(prog="streammask", description="Text-prompted video masking with CLIPSeg.")
    parser.add_argument("--version", action="version", version=f"streammask {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="mask a video: write mask, heatmap and matte outputs",
                         description="Mask a video with a text prompt and write mask / heatmap / matte outputs.")
    run.add_argument("input", metavar="INPUT", help="input video file")
    run.add_argument("--pipeline", metavar="FILE", help="TOML pipeline file holding the same settings (flags override it)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    add_arguments(run, list(RUN_PARAMS), title="run settings")
    for name, variant in VARIANTS.items():
        add_arguments(run, list(variant.params), prefix=name, title=f"variant {name!r} ({variant.title})")

    probe = sub.add_parser("probe", help="print a video's metadata")
    probe.add_argument("input", metavar="INPUT")

    from .batch import add_batch_parser
    from .bench import add_bench_parser

    add_batch_parser(sub)
    add_bench_parser(sub)
    from .preview import add_preview_parser

    add_preview_parser(sub)
    return parser


def _collect(args: argparse.Namespace) -> dict[str, Any]:
    from .pipeline import RUN_PARAMS
    from .pipeline_file import load_pipeline
    from .variants import VARIANTS

    settings: dict[str, Any] = load_pipeline(args.pipeline) if args.pipeline else {}
    file_variants: dict[str, dict] = settings.pop("variants", None) or {}
    for p in RUN_PARAMS:
        value = getattr(args, p.name, None)
        if value is None:
            continue
        if p.kind == "list":
            value = ",".join(value)
        settings[p.name] = p.validate(value, label="--" + p.name.replace("_", "-"))
    names = list(settings.pop("variants", None) or file_variants or ["soft"])
    variants: dict[str, dict] = {}
    for name in names:
        if name not in VARIANTS:
            raise ParameterError("--variants", name, "one of " + ", ".join(VARIANTS))
        params = dict(file_variants.get(name, {}))
        for p in VARIANTS[name].params:
            value = getattr(args, f"{name}__{p.name}", None)
            if value is not None:
                params[p.name] = p.validate(value, label=f"--{name}-{p.name.replace('_', '-')}")
        variants[name] = params
    # flags given for a variant that is not selected are most likely a mistake
    for name, variant in VARIANTS.items():
        if name in variants:
            continue
        for p in variant.params:
            if getattr(args, f"{name}__{p.name}", None) is not None:
                flag = f"--{name}-{p.name.replace('_', '-')}"
                raise ParameterError(flag, getattr(args, f"{name}__{p.name}"),
                                     f"a flag of a selected variant (add --variant {name})")
    settings["variants"] = variants
    if args.quiet:
        settings["progress"] = False
    return settings


def _kept(settings: dict[str, Any]) -> str:
    return "kept (finalized)" if settings.get("keep_partial") else "removed"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="streammask: %(levelname)s: %(message)s")
    previous = _install_sigterm()
    settings: dict[str, Any] = {}
    try:
        if args.command == "probe":
            from .video import probe

            print(probe(args.input).describe())
            return 0
        if args.command == "batch":
            from .batch import run_batch_command

            return run_batch_command(args)
        if args.command == "bench":
            from .bench import run_bench_command

            return run_bench_command(args)
        if args.command == "preview":
            from .preview import run_preview_command

            return run_preview_command(args)
        from .pipeline import process_video

        settings = _collect(args)
        if not settings.get("prompt", "").strip():
            raise ParameterError("--prompt", settings.get("prompt", ""), "a non-empty text (give --prompt or a pipeline file's prompt)")
        quiet = args.quiet
        summary = process_video(args.input, **settings)
        if not quiet:
            print(summary.describe())
        return 0
    except StreamMaskError as exc:
        print(f"streammask: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as exc:
        return stopped_exit_code(exc, f"; partial outputs were {_kept(settings)}")
    except Exception as exc:  # a stage crashed mid-run (a bug, or the system: out of memory, ...): exit 1
        print(f"streammask: failed: {type(exc).__name__}: {exc}; partial outputs were {_kept(settings)} "
              "(STREAMMASK_TRACEBACK=1 prints the traceback)", file=sys.stderr)
        if os.environ.get("STREAMMASK_TRACEBACK", "") not in ("", "0"):
            import traceback

            traceback.print_exc()
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def stopped_exit_code(exc: BaseException, detail: str = "", *, lead: str = "") -> int:
    """Print the one stderr line for a run stopped by Ctrl-C or SIGTERM and return its exit status.

    Args:
        exc: the :class:`KeyboardInterrupt` (130, ``interrupted (SIGINT)``) or :class:`Terminated`
            (143, ``terminated (SIGTERM)``).
        detail: text after the reason (e.g. ``"; partial outputs were kept"``).
        lead: text before ``streammask:`` (the preview's ``"\n"`` ends its status line first).
    """
    if isinstance(exc, KeyboardInterrupt):
        print(f"{lead}streammask: interrupted (SIGINT){detail}", file=sys.stderr)
        return 130
    print(f"{lead}streammask: terminated (SIGTERM){detail}", file=sys.stderr)
    return 143


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
