"""Make a benchmark clip: a source clip scaled to a size and looped to a frame count, H.264.

The GPU targets of the performance issue are stated for a 1920x1080 H.264 input; the bundled
clip is 176x144, so this scales it up (bicubic, OpenCV) and loops it (forwards, backwards,
forwards, ... so there is no jump), keeping the source's exact frame rate, with PyAV alone
(no ffmpeg binary needed, which the GPU machine lacks).

    python benchmarks/make_clip.py examples/carphone.mp4 /tmp/clip1080.mp4 --size 1920x1080 --frames 600
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def make_clip(source: str, dest: str, *, width: int, height: int, frames: int, crf: int = 18) -> Path:
    """Write ``frames`` frames of ``source`` scaled to ``width`` x ``height`` to ``dest`` (H.264, yuv420p).

    Returns:
        ``dest`` as a path (written to ``dest + ".part"`` first, renamed when complete).
    """
    if width % 2 or height % 2 or width < 2 or height < 2:
        raise SystemExit(f"--size {width}x{height}: width and height must be even and >= 2 (yuv420p)")
    with av.open(source) as src:
        stream = src.streams.video[0]
        rate = Fraction(stream.average_rate or 25)
        pics = [f.to_ndarray(format="rgb24") for f in src.decode(stream)]
    if not pics:
        raise SystemExit(f"{source}: no video frames")
    cycle = pics + pics[-2:0:-1] if len(pics) > 2 else pics
    dest_path = Path(dest)
    part = dest_path.with_name(dest_path.name + ".part")
    with av.open(str(part), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": str(crf), "preset": "veryfast"}
        vs.codec_context.time_base = 1 / Fraction(rate)
        scaled: dict[int, np.ndarray] = {}
        for i in range(frames):
            k = i % len(cycle)
            if k not in scaled:
                scaled[k] = cv2.resize(cycle[k], (width, height), interpolation=cv2.INTER_CUBIC)
            frame = av.VideoFrame.from_ndarray(scaled[k], format="rgb24")
            frame.pts = i
            frame.time_base = vs.codec_context.time_base
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
    part.replace(dest_path)
    return dest_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("dest")
    ap.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT (default 1920x1080)")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--crf", type=int, default=18)
    args = ap.parse_args(argv)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 1920x1080") from None
    path = make_clip(args.source, args.dest, width=w, height=h, frames=args.frames, crf=args.crf)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
