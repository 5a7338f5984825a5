"""End-to-end speed of the model's CPU thread policies, on a quiet machine and on a loaded one.

Runs ``process_video`` on a clip with the full-size CLIPSeg architecture (random weights: the same compute
as the real model) and each policy: ``--threads 1``, ``--threads N`` (every core) and the default (tuned
while running). "Loaded" starts one CPU burner process per core (pure-Python busy loops, the kind of load
an editor or a browser puts on a machine) for the whole measurement. Policies run in interleaved rounds;
the median frames/s per policy is reported, with its ratio to the best fixed count.

    python benchmarks/threads.py examples/carphone.mp4 --frames 24 --rounds 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streammask import load_clipseg, process_video  # noqa: E402
from streammask.model.threads import available_cores  # noqa: E402
from streammask.testing import save_random_clipseg  # noqa: E402


def _burn(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 31 + 7) % 1_000_003


def _run(clip: str, model, frames: int, threads, outputs) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        s = process_video(clip, prompt="person", out_dir=out, segmenter=model, max_frames=frames, progress=False,
                          outputs=outputs, threads=threads, batch_size=1)
        return s.frames / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--outputs", default="mask,heatmap,matte")
    ap.add_argument("--conditions", default="quiet,loaded")
    args = ap.parse_args(argv)
    cores = available_cores()
    policies = [("1 thread", 1), (f"{cores} threads", cores), ("tuned (default)", None)]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_random_clipseg(Path(tmp) / "clipseg", full_size=True)
        model = load_clipseg(model_dir, device="cpu")
        print(f"{args.frames} frames of {args.input}, full-size CLIPSeg (random weights), outputs {args.outputs}, "
              f"{cores} cores, median of {args.rounds} interleaved rounds\n")
        print("| machine | policy | frames/s | vs the best fixed count |")
        print("|---|---|---|---|")
        for condition in args.conditions.split(","):
            stop = mp.Event()
            burners = []
            if condition == "loaded":
                burners = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(cores)]
                for b in burners:
                    b.start()
            try:
                fps = {name: [] for name, _ in policies}
                for _ in range(args.rounds):
                    for name, threads in policies:
                        fps[name].append(_run(args.input, model, args.frames, threads, args.outputs.split(",")))
            finally:
                stop.set()
                for b in burners:
                    b.join()
            med = {k: statistics.median(v) for k, v in fps.items()}
            best_fixed = max(med["1 thread"], med[f"{cores} threads"])
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            for name, _ in policies:
                print(f"| {condition} (load {load:.1f}) | {name} | {med[name]:.2f} | {med[name] / best_fixed:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
