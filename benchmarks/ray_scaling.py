"""Throughput of the Ray engine with 1 and 2 actors (and the local engine) on this machine.

    python benchmarks/ray_scaling.py [--clips 4] [--frames 6] [--json PATH]

Full-size random-weight CLIPSeg (``save_random_clipseg(full_size=True)``: the real model's cost), CPU actors
(one CPU and one torch thread each), clips cut from ``examples/carphone.mp4``, mask output only. Times are wall
seconds of ``run_batch`` with Ray already started (actor start-up and model loading included: each actor loads
the model once) and frames/s over all clips; "warm" runs the same tasks on actors that have already loaded the
model (``streammask.batch.ray.MaskWorker``, a free actor takes the next clip), i.e. the steady-state throughput of
a long batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--frames", type=int, default=6, help="frames per clip")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--no-local", action="store_true", help="skip the local-engine run")
    args = ap.parse_args()

    import av
    import ray
    import torch

    from streammask import run_batch
    from streammask.testing import save_random_clipseg

    work = Path(tempfile.mkdtemp(prefix="streammask-ray-scaling-"))
    model = save_random_clipseg(work / "model", full_size=True)
    clips = work / "clips"
    clips.mkdir()
    with av.open(str(ROOT / "examples" / "carphone.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(args.clips * args.frames), c.decode(video=0))]
    for i in range(args.clips):
        with av.open(str(clips / f"clip{i}.mp4"), "w") as out:
            s = out.add_stream("libx264", rate=30)
            s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
            for img in frames[i * args.frames:(i + 1) * args.frames]:
                for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(p)
            for p in s.encode(None):
                out.mux(p)
    kw = dict(prompt="person", outputs=["mask"], batch_size=1, device="cpu", model=model, progress=False)
    total = args.clips * args.frames
    results = {}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    def warm(actors: int) -> dict:
        from collections import deque

        from streammask.batch.ray import MaskWorker

        cls = ray.remote(num_cpus=1)(MaskWorker)
        t0 = time.perf_counter()
        pool = [cls.remote(str(model), None, "cpu", "auto") for _ in range(actors)]
        ray.get([a.ping.remote() for a in pool])
        load = time.perf_counter() - t0
        kwargs = {k: v for k, v in kw.items() if k not in ("model", "device", "progress")}
        todo = deque(sorted(clips.glob("*.mp4")))
        inflight, free, frames_done = {}, list(pool), 0
        t0 = time.perf_counter()
        while todo or inflight:
            while todo and free:
                a = free.pop()
                clip = todo.popleft()
                inflight[a.run.remote(str(clip), str(work / f"warm{actors}" / clip.stem), kwargs)] = a
            ready, _ = ray.wait(list(inflight), num_returns=1)
            free.append(inflight.pop(ready[0]))
            frames_done += ray.get(ready[0])["frames"]
        sec = time.perf_counter() - t0
        for a in pool:
            ray.kill(a)
        return {"seconds": round(sec, 2), "frames_per_s": round(frames_done / sec, 3), "model_load_s": round(load, 2)}

    try:
        for actors in (1, 2):
            results[f"warm_{actors}_actor"] = warm(actors)
            print(actors, "actor(s), warm:", results[f"warm_{actors}_actor"], flush=True)
        for actors in (1, 2):
            t0 = time.perf_counter()
            rep = run_batch([clips], out_dir=work / f"ray{actors}", engine="ray", actors=actors, **kw)
            sec = time.perf_counter() - t0
            assert rep.exit_code == 0, rep.describe()
            results[f"ray_{actors}_actor"] = {"seconds": round(sec, 2), "frames_per_s": round(total / sec, 3)}
            print(actors, "actor(s):", results[f"ray_{actors}_actor"], flush=True)
    finally:
        ray.shutdown()
    if not args.no_local:
        t0 = time.perf_counter()
        run_batch([clips], out_dir=work / "local", **kw)
        sec = time.perf_counter() - t0
        results["local_engine"] = {"seconds": round(sec, 2), "frames_per_s": round(total / sec, 3),
                                   "torch_threads": torch.get_num_threads()}
        print("local:", results["local_engine"], flush=True)
    results["ratio_2_vs_1_actor"] = round(results["ray_1_actor"]["seconds"] / results["ray_2_actor"]["seconds"], 3)
    results["ratio_2_vs_1_actor_warm"] = round(results["warm_1_actor"]["seconds"] / results["warm_2_actor"]["seconds"], 3)
    results["machine"] = {  # load average: other work on the machine at the time"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "ray": ray.__version__, "load_average": os.getloadavg()}
    results["clips"], results["frames_per_clip"] = args.clips, args.frames
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
