"""Encode speed and size of every output format, on the frames of a real clip scaled to 720p (or any size).

Each format is written through streammask's own writers (``make_writer``) from the same frames: the
clip's RGB for the heatmap, a soft disc as the mask, the two as RGBA for the matte. Reported per
format: frames/s of the encoder alone, and MB per second of video at the clip's frame rate. The VP9
(WebM) matte is measured at several libvpx settings (``--vp9-deadline`` / ``--vp9-cpu-used``).
Formats run in interleaved rounds so a busier period of a shared machine hits each alike; the median
frames/s is kept.

    python benchmarks/output_formats.py examples/carphone.mp4 --frames 48            # 720p
    python benchmarks/output_formats.py ../shared/media/bikes.mp4 --size 1920x1080
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streammask import probe, read_batches  # noqa: E402
from streammask.io.writers import FORMATS, make_writer  # noqa: E402

VP9_SETTINGS = [("good", 0), ("good", 4), ("realtime", 6), ("realtime", 8)]


def _frames(path: str, n: int, size: tuple[int, int]) -> list[np.ndarray]:
    w, h = size
    out = []
    for batch in read_batches(path, batch_size=8, max_frames=n):
        out.extend(cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA if f.shape[1] > w else cv2.INTER_CUBIC)
                   for f in batch.frames)
    while len(out) < n:  # a short clip: play it again
        out.extend(out[: n - len(out)])
    return out


def _masks(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    r = min(w, h) / 3
    return [np.clip(255 * (1 - (np.hypot(xx - w / 2 - 8 * np.sin(i / 5) * r / 4, yy - h / 2) - r) / 12), 0, 255)
            .astype(np.uint8)[..., None] for i in range(n)]


def _encode(kind: str, fmt: str, frames: list[np.ndarray], tmp: Path, rate: Fraction, **options) -> tuple[float, int]:
    h, w = frames[0].shape[:2]
    writer = make_writer(kind, fmt, tmp / f"{kind}.{fmt}.{len(os.listdir(tmp))}", width=w, height=h, rate=rate,
                         time_base=1 / rate, **options)
    t0 = time.perf_counter()
    for i in range(0, len(frames), 8):
        chunk = np.stack(frames[i:i + 8])
        writer.write(chunk, list(range(i, i + len(chunk))))
    path = writer.close()
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size
    return len(frames) / seconds, size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", default="1280x720", help="WxH the frames are scaled to (default 1280x720)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    info = probe(args.input)
    rate = info.frame_rate or Fraction(25)
    rgb = _frames(args.input, args.frames, size)
    masks = _masks(args.frames, size)
    rgba = [np.dstack([f, m]) for f, m in zip(rgb, masks)]
    jobs = []
    for fmt in FORMATS["mask"]:
        jobs.append((f"mask {fmt}", "mask", fmt, masks, {}))
    for fmt in FORMATS["heatmap"]:
        jobs.append((f"heatmap {fmt}", "heatmap", fmt, rgb, {}))
    for fmt in FORMATS["matte"]:
        if fmt == "webm":
            for deadline, cpu in VP9_SETTINGS:
                jobs.append((f"matte webm ({deadline}, cpu-used {cpu})", "matte", fmt, rgba,
                             {"vp9_deadline": deadline, "vp9_cpu_used": cpu}))
        else:
            jobs.append((f"matte {fmt}", "matte", fmt, rgba, {}))
    fps: dict[str, list[float]] = {name: [] for name, *_ in jobs}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, kind, fmt, frames, options in jobs:
                try:
                    f, nbytes = _encode(kind, fmt, frames, Path(tmp), rate, **options)
                except Exception as exc:  # a codec this FFmpeg build lacks (e.g. libx265)
                    print(f"{name}: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
                    continue
                fps[name].append(f)
                sizes[name] = nbytes
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.frames} frames of {args.input} at {size[0]}x{size[1]}, {float(rate):.3f} fps; "
          f"{os.cpu_count()} cores, load {load:.1f}; median of {args.rounds} interleaved rounds\n")
    print("| output | encode frames/s | MB per second of video |")
    print("|---|---|---|")
    for name, values in fps.items():
        if values:
            mb_s = sizes[name] / 1e6 / (args.frames / float(rate))
            print(f"| {name} | {statistics.median(values):.1f} | {mb_s:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
