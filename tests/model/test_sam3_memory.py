"""SAM 3 runs in flat memory (issue 22): peak RSS of a 240-frame run is within 10 % (+ 15 MB of allocator slack) of a
30-frame run, while the same 240 frames through transformers' stock streaming session (no pruning) grow it.

Each run is its own subprocess (``VmHWM`` in ``/proc/self/status`` is that run's peak alone): ``process_video``
with the tiny random SAM 3 (112x112 input, at most 4 objects) and all three outputs, on one torch thread. The stock
run replaces the pruned stream by ``open_stream(prune=False)``: the session then keeps every frame's pixels,
per-object outputs and bookkeeping, as transformers 5.25 does (~0.4 MB a frame at this size with 4 objects;
~16.5 MB a frame with one object at 1008x1008). This asserts memory, not time.
"""

from __future__ import annotations

from conftest import write_synthetic_clip
from peak_rss import result, start

SHORT, LONG = 30, 240
SLACK_MB = 15.0
STOCK_GROWTH_MB = 60.0  # the stock session grows by ~90 MB over 210 frames here: well above the flat run's limit

_RUN = r"""
import json, sys
import torch
torch.set_num_threads(1)
import streammask
from streammask.model.sam3 import Sam3Segmenter, load_sam3
src, out, model, mode = sys.argv[1:5]
seg = load_sam3(model, device="cpu", sam3_max_objects=4)
if mode == "stock":  # transformers' session as it is: nothing pruned
    opened = Sam3Segmenter.open_stream
    seg.open_stream = lambda **kw: opened(seg, prune=False, **kw)
s = streammask.process_video(src, prompt="person|car", out_dir=out, segmenter=seg, batch_size=4,
                             outputs=("mask", "heatmap", "matte"), progress=False)
print(json.dumps({"frames": s.frames, "outputs": sorted(s.outputs), "peak_rss_mb": peak_rss_mb()}))
"""


def test_peak_rss_flat_with_clip_length_and_stock_grows(tmp_path, tiny_sam3_dir):
    short = write_synthetic_clip(tmp_path / "short.mp4", frames=SHORT, size=(64, 48))
    long = write_synthetic_clip(tmp_path / "long.mp4", frames=LONG, size=(64, 48))
    runs = {"long": (long, "pruned"), "stock": (long, "stock"), "short": (short, "pruned")}
    procs = {name: start(_RUN, src, tmp_path / f"out_{name}", tiny_sam3_dir, mode, OMP_NUM_THREADS="1")
             for name, (src, mode) in runs.items()}
    res = {name: result(p) for name, p in procs.items()}
    assert (res["short"]["frames"], res["long"]["frames"], res["stock"]["frames"]) == (SHORT, LONG, LONG)
    assert res["long"]["outputs"] == ["soft.heatmap", "soft.mask", "soft.matte"]
    short_mb, long_mb, stock_mb = (res[k]["peak_rss_mb"] for k in ("short", "long", "stock"))
    limit = short_mb * 1.10 + SLACK_MB
    print(f"peak RSS: {SHORT} frames {short_mb:.1f} MB, {LONG} frames {long_mb:.1f} MB pruned, "
          f"{stock_mb:.1f} MB stock (limit {limit:.1f} MB)")
    assert long_mb <= limit, f"peak RSS grew with clip length: {short_mb:.1f} -> {long_mb:.1f} MB (limit {limit:.1f})"
    assert stock_mb >= short_mb + STOCK_GROWTH_MB, (
        f"the stock session should grow (it keeps every frame): {short_mb:.1f} -> {stock_mb:.1f} MB")
