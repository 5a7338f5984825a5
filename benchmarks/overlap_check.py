"""End-to-end frames/s of ``process_video`` with and without the copy / compute overlap.

``streammask.pipeline.transfer`` overlaps, on CUDA, the upload of batch n + 1 (decode thread, side
stream, pinned memory) and the download of batch n - 1's outputs (second stream, pinned
buffers, handed to the encoders a batch later) with the model on batch n. This script
runs the same clip both ways in interleaved rounds and reports the median frames/s and
the seconds the host still waited for downloads (``device -> host wait``):

* ``overlap``: what ``process_video`` does;
* ``serial``: frames uploaded by the inference thread when it needs them and each
  batch's downloads waited for at once (the behaviour before the overlap).

Full-size CLIPSeg rd64-refined architecture with random weights unless ``--model``.
On a CPU both modes run the same synchronous copies (the figures should match).

    python benchmarks/overlap_check.py clip.mp4 --device cuda --dtype float16 --batch-size 32 --frames 512
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streammask import load_clipseg, process_video  # noqa: E402
import streammask.pipeline.run as pipeline_mod  # noqa: E402
from streammask.testing import save_random_clipseg  # noqa: E402


@contextmanager
def serial_copies():
    """``process_video`` without the overlap: no uploads ahead, no batch in flight."""
    saved = pipeline_mod.upload_batches, pipeline_mod._copy_ahead
    pipeline_mod.upload_batches = lambda batches, device: ((b, None) for b in batches)
    pipeline_mod._copy_ahead = lambda device: 0
    try:
        yield
    finally:
        pipeline_mod.upload_batches, pipeline_mod._copy_ahead = saved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("--model", help="model directory (default: full-size random weights)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--outputs", default="mask,heatmap", help="comma-separated output kinds (default mask,heatmap)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or save_random_clipseg(Path(tmp) / "full", full_size=True)
        seg = load_clipseg(model_dir, device=args.device, dtype=args.dtype)
        kw = dict(prompt="person", segmenter=seg, outputs=args.outputs.split(","), batch_size=args.batch_size,
                  max_frames=args.frames, progress=False, overwrite=True, audio=False)
        process_video(args.input, out_dir=Path(tmp) / "warm", **dict(kw, max_frames=min(args.frames, 2 * (args.batch_size or 8))))
        fps: dict[str, list[float]] = {"overlap": [], "serial": []}
        wait: dict[str, list[float]] = {"overlap": [], "serial": []}
        for r in range(args.rounds):
            for mode in fps:
                if mode == "serial":
                    with serial_copies():
                        s = process_video(args.input, out_dir=Path(tmp) / mode, **kw)
                else:
                    s = process_video(args.input, out_dir=Path(tmp) / mode, **kw)
                fps[mode].append(s.frames / s.seconds)
                wait[mode].append(s.stage_seconds.get("device -> host wait", 0.0))
                print(f"round {r + 1} {mode}: {fps[mode][-1]:.1f} frames/s", flush=True)
    print(f"\n{seg!r}, batch {s.batch_size}, {s.frames} frames, outputs {args.outputs}\n")
    print("| copies | frames/s (median) | device -> host wait (s, median) |")
    print("|---|---|---|")
    for mode in fps:
        print(f"| {mode} | {statistics.median(fps[mode]):.1f} | {statistics.median(wait[mode]):.3f} |")
    print(f"\noverlap / serial: {statistics.median(fps['overlap']) / statistics.median(fps['serial']):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
