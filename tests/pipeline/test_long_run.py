"""Long run (issue 9): a synthetic 20,000-frame 32x32 clip through process_video completes, every output holds exactly
the source's frames with the source's timestamps, and peak RSS is flat against a 1,000-frame run.

The segmenter is a fast stand-in (logits from the frame's brightness): the run measures the pipeline (decode
thread, post-processing, three encoder threads, bounded queues), not the model. tests/oracle.py's oracle recognises
frames by their exact bytes, which a decoded (lossy) clip does not keep, so it cannot be used on a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from conftest import encode_frames

REPO = Path(__file__).resolve().parents[2]
LONG, SHORT = 20_000, 1_000
SIZE = 32
SLACK_MB = 15.0

_RUN = r"""
import json, resource, sys, time
import torch
import torch.nn.functional as F
import streammask

class BrightnessSegmenter:
    device = torch.device("cpu")
    size = 32
    def segment(self, frames, prompts, *, preprocess="pil", size=None):
        s = size or self.size
        x = F.interpolate(frames.float().mean(1, keepdim=True), size=(s, s), mode="area")
        return ((x - 128.0) / 16.0).expand(-1, len(prompts), -1, -1).contiguous()

src, out = sys.argv[1:3]
t0 = time.perf_counter()
s = streammask.process_video(src, prompt="bright", out_dir=out, segmenter=BrightnessSegmenter(), batch_size=32,
                             outputs=("mask", "heatmap", "matte"), progress=False)
print(json.dumps({"frames": s.frames, "seconds": time.perf_counter() - t0,
                  "outputs": {k: str(v) for k, v in s.outputs.items()},
                  "peak_rss_mb": int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]) / 1024}))
"""


def write_long_clip(path: Path, frames: int, size: int = SIZE) -> Path:
    """H.264 ultrafast, a bright square walking over a gradient; 30000/1001 frames/s, time base 1/30000."""
    import av

    rate = Fraction(30000, 1001)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "tune": "zerolatency"})
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.time_base = s.codec_context.time_base = Fraction(1, 30000)
        base = np.zeros((size, size, 3), np.uint8)
        base[..., 0] = np.linspace(0, 255, size, dtype=np.uint8)[None, :]

        def images():
            for i in range(frames):
                img = base.copy()
                x = (i * 3) % (size - 8)
                img[8:20, x:x + 8] = 255
                yield img

        encode_frames(c, s, images(), [i * 1001 for i in range(frames)])
    return path


def _packet_pts(path: Path) -> list[int]:
    import av

    with av.open(str(path)) as c:
        st = c.streams.video[0]
        return sorted(p.pts for p in c.demux(st) if p.size)


def test_long_run_exact_frames_and_flat_memory(tmp_path):
    t0 = time.perf_counter()
    long = write_long_clip(tmp_path / "long.mp4", LONG)
    short = write_long_clip(tmp_path / "short.mp4", SHORT)
    t_write = time.perf_counter() - t0
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", _RUN, str(src), str(tmp_path / f"out_{src.stem}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for src in (long, short)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    b, a = results
    print(f"clips written in {t_write:.1f} s; {LONG} frames in {b['seconds']:.1f} s "
          f"({LONG / b['seconds']:.0f} frames/s), peak RSS {b['peak_rss_mb']:.1f} MB; {SHORT} frames: "
          f"peak RSS {a['peak_rss_mb']:.1f} MB")
    assert (a["frames"], b["frames"]) == (SHORT, LONG)
    src_pts = _packet_pts(long)
    assert len(src_pts) == LONG
    for key, path in b["outputs"].items():
        pts = _packet_pts(Path(path))
        assert len(pts) == LONG, (key, len(pts))
        assert pts == src_pts, key  # MP4/MOV keep the source time base: the timestamps are the source's
    limit = a["peak_rss_mb"] * 1.10 + SLACK_MB
    assert b["peak_rss_mb"] <= limit, (
        f"peak RSS grew with clip length: {SHORT} frames {a['peak_rss_mb']:.1f} MB, {LONG} frames "
        f"{b['peak_rss_mb']:.1f} MB (limit {limit:.1f} MB)")
