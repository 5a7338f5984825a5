"""Model-only speed of the model options (dtype, attention, channels_last, torch.compile) on one device.

Full-size CLIPSeg rd64-refined architecture with random weights (same compute as the
real model), preprocessed frames of a real clip, one prompt. The configurations run
in interleaved rounds (so that a slower or busier period of a shared machine hits
each of them alike) and the median frames/s per configuration is reported, with its
masks' difference to float32.

    python benchmarks/model_options.py examples/carphone.mp4                 # CPU, batch 1, 3 rounds
    python benchmarks/model_options.py clip.mp4 --device cuda --batch-size 32 --compile   # GPU (not run yet)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streammask import load_clipseg, read_batches  # noqa: E402
from streammask.model import attention_implementation  # noqa: E402
from streammask.testing import save_random_clipseg  # noqa: E402

CONFIGS = [
    ("float32, sdpa (default on CPU)", {"dtype": "float32"}),
    ("float32, eager attention", {"dtype": "float32", "attn_implementation": "eager"}),
    ("float32, channels_last", {"dtype": "float32", "channels_last": True}),
    ("bfloat16", {"dtype": "bfloat16"}),
    ("float16", {"dtype": "float16"}),
    ("int8 (dynamic, vision linears)", {"dtype": "int8"}),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model, pixels: torch.Tensor, iters: int) -> tuple[float, float]:
    """``(frames/s wall clock, CPU seconds per frame)``: the CPU time of the process is far less
    sensitive than the wall clock to other jobs on a shared machine."""
    model.logits(pixels, ["person"])  # warm-up (and compilation)
    _sync(model.device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        model.logits(pixels, ["person"])
    _sync(model.device)
    n = iters * pixels.shape[0]
    return n / (time.perf_counter() - t0), (time.process_time() - c0) / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="add float32 / bfloat16 with torch.compile (slow start)")
    ap.add_argument("--no-fp16", action="store_true", help="leave float16 out (very slow on most CPUs)")
    ap.add_argument("--model", help="model directory (default: full-size random weights)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = [c for c in CONFIGS if not (args.no_fp16 and c[1]["dtype"] == "float16")
               and not (args.device != "cpu" and c[1]["dtype"] == "int8")]  # int8 is CPU only
    if args.compile:
        configs += [("float32, compile", {"dtype": "float32", "compile": True}),
                    ("bfloat16, compile", {"dtype": "bfloat16", "compile": True})]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or save_random_clipseg(Path(tmp) / "full", full_size=True)
        frames = next(iter(read_batches(args.input, batch_size=args.batch_size))).frames
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
        models = {}
        for label, opts in configs:
            m = load_clipseg(model_dir, device=args.device, **opts)
            t0 = time.perf_counter()
            m.logits(m.preprocess(x), ["person"])
            models[label] = (m, time.perf_counter() - t0)
        ref = torch.sigmoid(models[configs[0][0]][0].segment(x, ["person"]))
        fps: dict[str, list[float]] = {label: [] for label, _ in configs}
        cpu: dict[str, list[float]] = {label: [] for label, _ in configs}
        for r in range(args.rounds):
            for label, _ in configs:
                m = models[label][0]
                f, c = measure(m, m.preprocess(x), args.iters)
                fps[label].append(f)
                cpu[label].append(c)
                print(f"round {r} {label}: {f:.3f} fps, {c:.2f} CPU s/frame", file=sys.stderr, flush=True)
        base = statistics.median(fps[configs[0][0]])
        base_cpu = statistics.median(cpu[configs[0][0]])
        lines = [f"Model only, `{args.input}` ({x.shape[-1]}x{x.shape[-2]} -> 352x352), batch {args.batch_size}, "
                 f"{args.device} ({platform.processor() or platform.machine()}, {args.threads} threads), torch "
                 f"{torch.__version__}; median of {args.rounds} interleaved rounds x {args.iters} batches:", "",
                 "| configuration | attention | frames/s (wall) | vs float32 | CPU s/frame | vs float32 (CPU time) "
                 "| first call s | mean / p99 / max abs d prob | % mask flips at 0.5 |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for label, _ in configs:
            m, first = models[label]
            p = torch.sigmoid(m.segment(x, ["person"]))
            d = (p - ref).abs().flatten()
            p99 = torch.quantile(d[::7].float(), 0.99).item()
            flips = 100 * ((p > 0.5) != (ref > 0.5)).float().mean().item()
            med, med_cpu = statistics.median(fps[label]), statistics.median(cpu[label])
            lines.append(f"| {label} | {attention_implementation(m.model)} | {med:.3f} | {med / base:.2f}x | {med_cpu:.2f} | "
                         f"{base_cpu / med_cpu:.2f}x | {first:.1f} | "
                         f"{d.mean().item():.4f} / {p99:.4f} / {d.max().item():.4f} | {flips:.3f} |")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
