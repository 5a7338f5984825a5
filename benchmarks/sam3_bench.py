"""SAM 3 in streammask: speed by object count, end to end, and memory over long clips.

    python benchmarks/sam3_bench.py speed  [--size tiny|full] [--objects 0,1,4,16] [--frames N] [--device D]
    python benchmarks/sam3_bench.py e2e    [--size tiny|full] [--clip examples/carphone.mp4] [--frames N] [--objects N]
    python benchmarks/sam3_bench.py memory [--size tiny|full] [--frames 100,500,1000,2000,5000] [--stock N]
    python benchmarks/sam3_bench.py held   [--size tiny|full] [--frames N] [--objects N]
    (each takes --json PATH; --model DIR uses a local SAM 3 directory, e.g. the real facebook/sam3, instead)

Models (``streammask.bench.save_random_sam3``, shared with ``streammask bench``): ``tiny`` is the tests' random
SAM 3 (``save_random_sam3_video(image_size=112)``), ``full`` the ``facebook/sam3`` architecture with random weights
(``save_random_sam3_video(full_size=True)``: ~860 M parameters, 1008x1008 input; real weights cost the same). Both
are built with every detection kept (``streammask.bench.SAM3_EVERY_DETECTION``:
``score_threshold_detection = new_det_thresh = det_nms_thresh = 0``), so the number of objects tracked from the
first frame on is exactly the ``sam3_max_objects`` cap: the object count is controlled, as speed depends on it (the
tracker runs once per object and frame).

* ``speed``: model only (preprocess + one ``Sam3Stream.segment`` call per frame on frames already decoded and on
  the device), frames/s per object count, after one warm-up frame on a stream of its own:
  ``streammask.bench.sam3_model_only``, the measurement ``streammask bench --segmenter sam3`` makes on a clip.
* ``e2e``: ``process_video`` with all three outputs (H.264 mask, H.264 heatmap, ProRes matte) on the clip:
  ``streammask.bench.sam3_end_to_end``, as ``streammask bench`` (which also reports the objects tracked).
* ``memory``: ``process_video`` (mask output) over a synthetic clip of the longest length, the process's current RSS
  (``/proc/self/status`` VmRSS) and CUDA memory (allocated, reserved, peak) sampled when each listed frame count is
  reached; ``--stock N`` adds a run of the first N frames through transformers' stock session (no pruning).
* ``held``: bytes of tensors the session holds after each frame, stock vs pruned (per-frame growth).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from streammask.bench import load_sam3_for_objects, sam3_end_to_end, sam3_model_only, save_random_sam3  # noqa: E402

CARPHONE = ROOT / "examples" / "carphone.mp4"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cuda_mb(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    return {"cuda_allocated_mb": torch.cuda.memory_allocated(device) / 2**20,
            "cuda_reserved_mb": torch.cuda.memory_reserved(device) / 2**20,
            "cuda_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20}


def _model_dir(args, workdir: Path) -> Path:
    if args.model:
        return Path(args.model)
    return save_random_sam3(workdir / f"sam3-{args.size}", size=args.size)


def _load(path: Path, args, objects: int):
    return load_sam3_for_objects(path, objects=[objects], device=args.device, dtype=args.dtype)


def _frames(n: int, h: int = 144, w: int = 176) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = (torch.rand(1, 3, h, w, generator=g) * 255).to(torch.uint8)
    return [base.roll(3 * i, dims=-1) for i in range(n)]


def speed(args, path: Path) -> dict:
    counts = [int(x) for x in args.objects.split(",")]
    seg = _load(path, args, max(counts))
    frames = [f.to(seg.device) for f in _frames(args.frames)]
    rows = []
    for objects in counts:
        row = sam3_model_only(seg, frames, objects=objects)  # streammask.bench: the same as `streammask bench`
        row["tracked"] = row["tracked_per_frame"][-1]
        rows.append(row)
        print(f"objects {objects:3d} (tracked {row['tracked']:3d}): {row['fps']:.3f} frames/s "
              f"({row['s_per_frame']:.3f} s/frame)", flush=True)
    return {"speed": rows}


def e2e(args, path: Path) -> dict:
    seg = _load(path, args, int(args.objects))
    with tempfile.TemporaryDirectory() as out:
        s = sam3_end_to_end(seg, args.clip, out, objects=int(args.objects), frames=args.frames,
                            batch_size=args.batch_size)
    print(s.describe(), flush=True)
    return {"e2e": {"frames": s.frames, "seconds": s.seconds, "fps": s.fps, "objects": int(args.objects),
                    "stage_seconds": s.stage_seconds, "batch_size": s.batch_size}}


def _write_clip(path: Path, frames: int, size=(64, 48)) -> Path:
    import av

    w, h = size
    rate = Fraction(30000, 1001)
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=rate, options={"preset": "ultrafast"})
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = (xx * 255 // (w - 1)).astype(np.uint8)
            img[..., 2] = ((yy + i) % h * 255 // (h - 1)).astype(np.uint8)
            x0 = (3 * i) % (w - 16)
            img[8:24, x0:x0 + 16] = 255
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    return path


def memory(args, path: Path, workdir: Path) -> dict:
    from streammask import process_video

    marks = sorted(int(x) for x in args.frames_list.split(","))
    clip = _write_clip(workdir / "long.mp4", marks[-1])
    result = {}
    for mode, n in (("pruned", marks[-1]), ("stock", args.stock)):
        if not n:
            continue
        seg = _load(path, args, int(args.objects))
        if mode == "stock":
            from streammask.model.sam3 import Sam3Segmenter

            opened = Sam3Segmenter.open_stream
            seg.open_stream = lambda **kw: opened(seg, prune=False, **kw)
        samples, t0 = [], time.perf_counter()
        wanted = [m for m in marks if m <= n] or [n]

        def on_batch(done, total, _samples=samples, _wanted=wanted, _dev=seg.device):
            while _wanted and done >= _wanted[0]:
                _samples.append({"frames": done, "rss_mb": _rss_mb(), "seconds": time.perf_counter() - t0,
                                 **_cuda_mb(_dev)})
                print(f"{mode}: {done} frames, RSS {_samples[-1]['rss_mb']:.1f} MB, "
                      f"{_samples[-1]['seconds']:.0f} s", flush=True)
                _wanted.pop(0)

        with tempfile.TemporaryDirectory() as out:
            process_video(clip, segmenter=seg, prompt="person|car", out_dir=out, max_frames=n, outputs=("mask",),
                          progress=False, batch_size=args.batch_size, on_batch=on_batch)
        result[mode] = samples
        del seg
    return {"memory": result}


def held(args, path: Path) -> dict:
    seg = _load(path, args, int(args.objects))
    rows = {}
    for mode, opts in (("stock", {"prune": False}), ("pruned", {})):
        stream = seg.open_stream(**opts)
        series = []
        for f in _frames(args.frames):
            stream.segment(f.to(seg.device), ["person"])
            series.append(stream.held_bytes() / 2**20)
        rows[mode] = series
        print(f"{mode}: held MB per frame {[round(v, 1) for v in series]}", flush=True)
    return {"held_mb": rows, "objects": int(args.objects)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("speed", "e2e", "memory", "held"))
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--model", help="a local SAM 3 directory (the real weights) instead of a random model")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--objects", default="0,1,4,16", help="speed: object counts; e2e/memory/held: one count")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--frames-list", default="100,500,1000,2000,5000", help="memory: where RSS is sampled")
    ap.add_argument("--stock", type=int, default=0, help="memory: also run this many frames through the stock session")
    ap.add_argument("--clip", default=str(CARPHONE))
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path = _model_dir(args, workdir)
        if args.what == "speed":
            res = speed(args, path)
        elif args.what == "e2e":
            res = e2e(args, path)
        elif args.what == "memory":
            res = memory(args, path, workdir)
        else:
            res = held(args, path)
    res.update(what=args.what, size=args.size if not args.model else args.model, device=args.device,
               dtype=args.dtype, threads=torch.get_num_threads(), torch=torch.__version__,
               transformers=transformers.__version__, machine=platform.processor() or platform.machine(),
               cpus=os.cpu_count(), load_avg=os.getloadavg(),
               gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
