"""What every subcommand shares: settings from flags and pipeline files, signals and exit statuses.

Exit statuses: 0 done, 1 a run that failed mid-way (a crashed stage; a batch with a failed
clip; a live stream that dropped for good), 2 bad input (one line naming the parameter),
130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ParameterError, StreamMaskError
from ..params import add_arguments
from ..pipeline.settings import RUN_PARAMS, load_pipeline
from ..variants import VARIANTS

__all__ = ["Terminated", "install_sigterm", "collect_settings", "stopped_exit_code", "add_run_settings",
           "CommandContext", "guarded"]


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM.

    Like ``KeyboardInterrupt`` it is not an ``Exception``, so ``except Exception``
    blocks let it through and :func:`~streammask.process_video`'s cleanup runs.
    """


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def install_sigterm():
    """Install the SIGTERM handler (main thread only); returns the previous handler or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - platforms without SIGTERM
        return None


def add_run_settings(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = (),
                     title: str = "run settings") -> None:
    """Add ``--pipeline``, the run settings of :data:`~streammask.RUN_PARAMS` (but ``skip``) and every
    variant's flags (``--mixlab-blur``): what ``run``, ``batch`` and ``preview`` share."""
    parser.add_argument("--pipeline", metavar="FILE",
                        help="TOML pipeline file holding the same settings (flags override it)")
    add_arguments(parser, [p for p in RUN_PARAMS if p.name not in skip], title=title)
    for name, variant in VARIANTS.items():
        add_arguments(parser, list(variant.params), prefix=name, title=f"variant {name!r} ({variant.title})")


def collect_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run settings of parsed flags: a ``--pipeline`` file's, overridden by the flags given,
    each validated and named by its flag in errors; ``variants`` as ``{name: params}``."""
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


@dataclass
class CommandContext:
    """What a subcommand tells :func:`guarded` about a stop (Ctrl-C, SIGTERM) while it runs.

    Attributes:
        stop_detail: called after a stop: the text after the reason (e.g. ``"; partial outputs were removed"``).
        stop_lead: text before ``streammask:`` (a status line to end first).
        failure_detail: the same, after a crash (exit status 1).
    """

    stop_detail: Callable[[], str] = field(default=lambda: "")
    stop_lead: str = ""
    failure_detail: Callable[[], str] = field(default=lambda: "")


def guarded(command: Callable[[argparse.Namespace, CommandContext], int], args: argparse.Namespace) -> int:
    """Run a subcommand with the shared exit statuses: its own status, 2 for a :class:`StreamMaskError`
    (one line), 130 / 143 for Ctrl-C / SIGTERM, 1 for any other exception (one line;
    ``STREAMMASK_TRACEBACK=1`` prints the traceback)."""
    ctx = CommandContext()
    previous = install_sigterm()
    try:
        return command(args, ctx)
    except StreamMaskError as exc:
        print(f"streammask: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as exc:
        return stopped_exit_code(exc, ctx.stop_detail(), lead=ctx.stop_lead)
    except Exception as exc:  # a stage crashed mid-run (a bug, or the system: out of memory, ...): exit 1
        print(f"{ctx.stop_lead}streammask: failed: {type(exc).__name__}: {exc}{ctx.failure_detail()} "
              "(STREAMMASK_TRACEBACK=1 prints the traceback)", file=sys.stderr)
        if os.environ.get("STREAMMASK_TRACEBACK", "") not in ("", "0"):
            import traceback

            traceback.print_exc()
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
