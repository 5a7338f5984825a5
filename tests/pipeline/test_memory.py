"""Host memory stays flat with clip length (issue 7).

Each run is its own subprocess (the two run side by side), so ``VmHWM`` (``/proc/self/status``) is the peak
of that run alone (not ``ru_maxrss``: Linux carries it over fork and exec from the parent, so inside a full pytest
run it measured pytest):
a 60-frame and a 1200-frame synthetic 64x48 clip through ``process_video`` with
the tiny model and all three outputs must reach the same peak RSS within 10 %
(plus 15 MB of slack for allocator noise). A pipeline that kept frames, outputs
or per-frame tensors would grow with the clip instead.
"""

from __future__ import annotations

from conftest import write_synthetic_clip
from peak_rss import result, start

SHORT, LONG = 60, 1200
SLACK_MB = 15.0

_RUN = r"""
import json, sys
import streammask
src, out, model = sys.argv[1:4]
s = streammask.process_video(src, prompt="person", out_dir=out, model=model, device="cpu", batch_size=8,
                             outputs=("mask", "heatmap", "matte"), progress=False)
print(json.dumps({"frames": s.frames, "outputs": sorted(s.outputs), "peak_rss_mb": peak_rss_mb()}))
"""


def test_peak_rss_flat_with_clip_length(tmp_path, tiny_model_dir):
    short = write_synthetic_clip(tmp_path / "short.mp4", frames=SHORT, size=(64, 48))
    long = write_synthetic_clip(tmp_path / "long.mp4", frames=LONG, size=(64, 48))
    # two processes side by side (each has its own VmHWM): the short run hides under the long one's time
    procs = [start(_RUN, src, tmp_path / f"out_{src.stem}", tiny_model_dir) for src in (long, short)]
    b, a = [result(p, timeout=300) for p in procs]
    assert (a["frames"], b["frames"]) == (SHORT, LONG)
    assert a["outputs"] == b["outputs"] == ["soft.heatmap", "soft.mask", "soft.matte"]
    limit = a["peak_rss_mb"] * 1.10 + SLACK_MB
    assert b["peak_rss_mb"] <= limit, (
        f"peak RSS grew with clip length: {SHORT} frames {a['peak_rss_mb']:.1f} MB, "
        f"{LONG} frames {b['peak_rss_mb']:.1f} MB (limit {limit:.1f} MB)")
