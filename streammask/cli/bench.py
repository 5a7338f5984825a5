"""``streammask bench``: throughput on one clip (model only, end to end, seed-style loop; SAM 3 by object count)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..bench import (RANDOM_SIZES, SEGMENTERS, format_markdown, parse_object_counts, resolve_segmenter,
                     run_benchmark, run_encoder_benchmark)
from ..io.writers import X264_PRESETS
from ..model.options import DTYPES
from .common import CommandContext, guarded

__all__ = ["add_bench_parser", "build_bench_parser", "run_bench_command", "main"]


def _batch_arg(text: str) -> int | None:
    if text.strip().lower() in ("auto", "none"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid batch size {text!r}: a positive integer or 'auto'") from None


def _add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("input", metavar="INPUT", help="input video file")
    p.add_argument("--frames", type=int, default=48, help="frames of the clip to use (default 48)")
    p.add_argument("--batch-size", type=_batch_arg, default=None,
                   help="model batch size (default auto: as `streammask run`, 1 on a CPU, from free GPU memory on "
                        "CUDA; 8 with --segmenter null)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="model precision of streammask's passes (the seed-style loop runs float32 for int8; "
                        "int8 is refused with SAM 3)")
    p.add_argument("--channels-last", action="store_true",
                   help="CLIPSeg: channels_last weights and input in streammask's passes (refused with SAM 3)")
    p.add_argument("--compile", action="store_true",
                   help="CLIPSeg: torch.compile in streammask's passes (refused with SAM 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="the model's CPU threads in every pass (default: torch's count; CLIPSeg's end-to-end pass "
                        "tunes them as `streammask run` does, SAM 3's keeps torch's count)")
    p.add_argument("--model", default=None,
                   help="model id or directory, CLIPSeg or SAM 3 (told apart by its config.json; default: a "
                        "random-weight model, see --segmenter and --random-size)")
    p.add_argument("--segmenter", default="auto", choices=SEGMENTERS,
                   help="auto: SAM 3 when --model is one, else CLIPSeg; sam3 without --model: a random-weight SAM 3 "
                        "that keeps every detection (the objects tracked are --sam3-objects); null: no model (fixed "
                        "logits), to measure the pipeline against each encoder alone (encoder-bound, as behind a "
                        "fast GPU)")
    p.add_argument("--random-size", default="full", choices=RANDOM_SIZES,
                   help="the random-weight model built without --model: full (the real architecture, the real "
                        "model's compute) or tiny (the tests' model: the pipeline's cost, not the model's)")
    p.add_argument("--sam3-objects", metavar="N[,N...]", default=None,
                   help="SAM 3: object counts to measure, e.g. 0,1,4 (0: the detector alone); with a random model "
                        "exactly that many are tracked, with --model each is a cap (sam3_max_objects) and the "
                        "objects are what the model finds (default: 1 for a random model, 16 with --model)")
    p.add_argument("--seed-frames", type=int, default=None,
                   help="CLIPSeg: frames for the seed-style loop (default: --frames; SAM 3 has no seed-style loop)")
    p.add_argument("--encoder-preset", default="fast", choices=X264_PRESETS,
                   help="x264 preset of the H.264 mask and heatmap outputs (default fast)")
    p.add_argument("--mask-heatmap", action="store_true",
                   help="also run end to end with the mask and heatmap outputs only (no ProRes matte)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the result as JSON ('-': stdout)")
    return p


_DESCRIPTION = ("Benchmark on one clip: model-only, end-to-end (all three outputs) and seed-style per-frame "
                "throughput, per-stage seconds, peak memory, device and versions. With SAM 3: model-only and "
                "end-to-end throughput per object count, with the objects tracked per frame (no seed-style loop).")


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to ``subparsers`` (from ``parser.add_subparsers()``); returns it."""
    p = subparsers.add_parser("bench", help="measure throughput (model only, end to end, seed-style loop)",
                              description=_DESCRIPTION)
    return _add_arguments(p)


def build_bench_parser(prog: str = "streammask bench") -> argparse.ArgumentParser:
    """A standalone parser with the ``bench`` arguments (used by ``benchmarks/bench.py``)."""
    return _add_arguments(argparse.ArgumentParser(prog=prog, description=_DESCRIPTION))


def run_bench_command(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed ``bench`` arguments: print the markdown table, write ``--json``; exit status."""
    return guarded(_bench, args)


def _bench(args: argparse.Namespace, ctx: CommandContext) -> int:
    kind = resolve_segmenter(args.segmenter, args.model)
    if kind == "null":
        result = run_encoder_benchmark(args.input, frames=args.frames, batch_size=args.batch_size,
                                       device=args.device, encoder_preset=args.encoder_preset)
    else:
        result = run_benchmark(args.input, frames=args.frames, batch_size=args.batch_size, device=args.device,
                               dtype=args.dtype, model=args.model, seed_frames=args.seed_frames,
                               mask_heatmap=args.mask_heatmap, encoder_preset=args.encoder_preset, segmenter=kind,
                               random_size=args.random_size, sam3_objects=parse_object_counts(args.sam3_objects),
                               channels_last=args.channels_last, compile=args.compile, threads=args.threads)
    text = json.dumps(result, indent=2)
    if args.json == "-":
        print(text)
    else:
        print(format_markdown(result))
        if args.json:
            Path(args.json).write_text(text + "\n")
    return 0


def main(argv=None) -> int:
    """``python -m streammask.cli.bench`` / ``benchmarks/bench.py``: the ``bench`` subcommand alone."""
    return run_bench_command(build_bench_parser().parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
