"""Segments: frame ranges with seeking and warm-up, lossless joins, equality with one pass."""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from streammask import InvalidVideoError, process_video
from streammask.pipeline.ranges import FrameRange
from streammask.io.concat import concat_video
from streammask.io.video import frame_pts
from streammask.batch.segments import process_segments

from conftest import write_gop_clip as _gop_clip

RATE = Fraction(30000, 1001)
FRAMES = 40
RANGES = [(0, 13), (13, 27), (27, 40)]  # not on the batch grid: segments are widened to it
ALIGNED = [(0, 12), (12, 28), (28, 40)]  # multiples of the batch size (4): needed for a state hand-over


def _decode(path: Path, fmt: str) -> tuple[list[int], np.ndarray]:
    with av.open(str(path)) as c:
        frames = [(f.pts, f.to_ndarray(format=fmt)) for f in c.decode(video=0)]
    return [p for p, _ in frames], np.stack([a for _, a in frames])


def _packets(path: Path) -> list[tuple[int, int, bool]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [(p.pts, p.dts, p.is_keyframe) for p in c.demux(s) if p.size]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def _ffprobe_frames(path: Path) -> int:
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe is not installed (apt-get install ffmpeg)")
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout)["streams"][0]["nb_read_frames"])


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory) -> Path:
    return _gop_clip(tmp_path_factory.mktemp("segclip") / "gop.mp4")


def _kw(tiny_model, **extra):
    return dict(prompt="person", segmenter=tiny_model, progress=False, batch_size=4, **extra)


def test_frame_range_seeks_and_keeps_pts(gop_clip, tiny_model, tmp_path):
    index = frame_pts(gop_clip)
    assert len(index) == FRAMES and index == [i * 1001 for i in range(FRAMES)]
    one = process_video(gop_clip, out_dir=tmp_path / "one", outputs=["mask"], mask_format="ffv1", **_kw(tiny_model))
    rng = FrameRange(18, 30, warmup_start=14)  # a keyframe at 16: frames 16.. decode after the seek
    seg = process_video(gop_clip, out_dir=tmp_path / "seg", outputs=["mask"], mask_format="ffv1", frame_range=rng,
                        **_kw(tiny_model))
    assert seg.frames == 12
    pts_one, one_mask = _decode(one.outputs["soft.mask"], "gray")
    pts_seg, seg_mask = _decode(seg.outputs["soft.mask"], "gray")
    assert pts_seg == pts_one[18:30]
    np.testing.assert_array_equal(seg_mask, one_mask[18:30])


def test_none_segments_equal_one_pass(gop_clip, tiny_model, tmp_path):
    kw = _kw(tiny_model, mask_format="ffv1", matte_format="prores")
    one = process_video(gop_clip, out_dir=tmp_path / "one", **kw)
    seg = process_segments(gop_clip, RANGES, out_dir=tmp_path / "seg", overlap=3, **kw)
    assert seg.frames == one.frames == FRAMES
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == sorted(p.name for p in one.outputs.values())
    # lossless mask and intra-only ProRes matte: identical frames and timestamps
    for key, fmt in (("soft.mask", "gray"), ("soft.matte", "rgba64le")):
        pts_one, a = _decode(one.outputs[key], fmt)
        pts_seg, b = _decode(seg.outputs[key], fmt)
        assert pts_seg == pts_one and len(pts_one) == FRAMES  # (Matroska: milliseconds)
        np.testing.assert_array_equal(a, b)
        assert _ffprobe_frames(seg.outputs[key]) == FRAMES
    # H.264 heatmap, encoded per segment and remuxed: same timestamps, continuous dts, one keyframe per segment
    pts_one, a = _decode(one.outputs["soft.heatmap"], "rgb24")
    pts_seg, b = _decode(seg.outputs["soft.heatmap"], "rgb24")
    assert pts_seg == pts_one and _psnr(a, b) > 25  # two lossy encodings (crf 18) of the same noisy frames
    packets = _packets(seg.outputs["soft.heatmap"])
    dts = [d for _, d, _ in packets]
    assert all(x < y for x, y in zip(dts, dts[1:]))
    assert sorted(p for p, _, k in packets if k) == [0, 13 * 1001, 27 * 1001]
    assert _ffprobe_frames(seg.outputs["soft.heatmap"]) == FRAMES
    assert not (tmp_path / "seg" / ".segments").exists()


def test_png_sequences_join(gop_clip, tiny_model, tmp_path):
    kw = _kw(tiny_model, mask_format="png", matte_format="png", outputs=["mask", "matte"])
    one = process_video(gop_clip, out_dir=tmp_path / "one", **kw)
    seg = process_segments(gop_clip, RANGES, out_dir=tmp_path / "seg", **kw)
    for key in ("soft.mask", "soft.matte"):
        a, b = one.outputs[key], seg.outputs[key]
        names = sorted(p.name for p in a.iterdir())
        assert sorted(p.name for p in b.iterdir()) == names and len(names) == FRAMES + 2
        for name in names:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name  # pngs, frames.csv, sequence.json


def test_mkv_time_base_join(tiny_model, tmp_path):
    clip = _gop_clip(tmp_path / "ms.mkv", frames=24, time_base=Fraction(1, 1000))
    kw = _kw(tiny_model, outputs=["mask"], mask_format="ffv1")
    one = process_video(clip, out_dir=tmp_path / "one", **kw)
    seg = process_segments(clip, [(0, 9), (9, 24)], out_dir=tmp_path / "seg", **kw)
    pts_one, a = _decode(one.outputs["soft.mask"], "gray")
    pts_seg, b = _decode(seg.outputs["soft.mask"], "gray")
    assert pts_seg == pts_one and len(pts_one) == 24
    np.testing.assert_array_equal(a, b)


def test_mp4_mask_join(gop_clip, tiny_model, tmp_path):
    kw = _kw(tiny_model, outputs=["mask"])  # H.264 mask
    one = process_video(gop_clip, out_dir=tmp_path / "one", **kw)
    seg = process_segments(gop_clip, RANGES, out_dir=tmp_path / "seg", **kw)
    pts_one, a = _decode(one.outputs["soft.mask"], "gray")
    pts_seg, b = _decode(seg.outputs["soft.mask"], "gray")
    assert pts_seg == pts_one and _psnr(a, b) > 35
    assert _ffprobe_frames(seg.outputs["soft.mask"]) == FRAMES


def test_ema_handover_is_exact_overlap_approximates(gop_clip, tiny_model, tmp_path):
    kw = _kw(tiny_model, outputs=["mask"], mask_format="ffv1", temporal="ema", ema_alpha=0.3)
    one = process_video(gop_clip, out_dir=tmp_path / "one", **kw)
    _, a = _decode(one.outputs["soft.mask"], "gray")
    handed = process_segments(gop_clip, ALIGNED, out_dir=tmp_path / "handover", handover=True, **kw)
    _, b = _decode(handed.outputs["soft.mask"], "gray")
    np.testing.assert_array_equal(a, b)
    # in parallel (no hand-over) the warm-up approximates the state: the error decays as (1 - alpha)^overlap
    errors = {}
    for overlap in (0, 8, 16):
        par = process_segments(gop_clip, ALIGNED, out_dir=tmp_path / f"overlap{overlap}", handover=False, overlap=overlap,
                               **kw)
        _, c = _decode(par.outputs["soft.mask"], "gray")
        np.testing.assert_array_equal(c[:12], a[:12])  # the first segment is the one-pass start
        errors[overlap] = int(np.abs(c.astype(int) - a.astype(int)).max())
    print("ema alpha 0.3, max mask error (of 255) by warm-up frames:", errors)
    assert errors[0] > errors[8] > errors[16] and errors[16] <= 1


def test_centered_window_with_overlap_is_exact(gop_clip, tiny_model, tmp_path):
    kw = _kw(tiny_model, outputs=["mask"], mask_format="ffv1", temporal="mean", window=5)
    one = process_video(gop_clip, out_dir=tmp_path / "one", **kw)
    seg = process_segments(gop_clip, RANGES, out_dir=tmp_path / "seg", overlap=2, **kw)  # handover does not apply
    pts_one, a = _decode(one.outputs["soft.mask"], "gray")
    pts_seg, b = _decode(seg.outputs["soft.mask"], "gray")
    assert pts_seg == pts_one
    np.testing.assert_array_equal(a, b)


def test_join_refuses_mismatched_parts(gop_clip, tiny_model, tmp_path):
    a = process_video(gop_clip, out_dir=tmp_path / "a", outputs=["mask"], **_kw(tiny_model), max_frames=8)
    b = process_video(gop_clip, out_dir=tmp_path / "b", outputs=["mask"], **_kw(tiny_model), max_frames=8)
    with pytest.raises(OSError, match="decode time"):  # the same timestamps twice
        concat_video([a.outputs["soft.mask"], b.outputs["soft.mask"]], tmp_path / "joined.mp4")
    assert not list(tmp_path.glob("*joined*"))


def test_range_past_the_end(gop_clip, tiny_model, tmp_path):
    with pytest.raises(InvalidVideoError, match="frame"):
        process_video(gop_clip, out_dir=tmp_path / "x", outputs=["mask"], frame_range=FrameRange(45, 50),
                      **_kw(tiny_model))


def test_local_batch_segments_hand_over_state(gop_clip, tiny_model, tmp_path, monkeypatch):
    import streammask.batch.segments
    from streammask import run_batch
    from streammask.batch import DONE_NAME

    kw = _kw(tiny_model, outputs=["mask"], mask_format="ffv1", temporal="ema", ema_alpha=0.3)
    one = process_video(gop_clip, out_dir=tmp_path / "one", **kw)
    ranges = []

    def spy(*args, frame_range=None, **kwargs):
        ranges.append(None if frame_range is None else (frame_range.warmup_start, frame_range.start, frame_range.end))
        return process_video(*args, frame_range=frame_range, **kwargs)

    monkeypatch.setattr(streammask.batch.segments, "process_video", spy)
    rep = run_batch([gop_clip], out_dir=tmp_path / "batch", segment_seconds=0.45, overlap_frames=0, **kw)
    # 0.45 s = 13 frames -> 4 segments on the batch grid (4), each continuing the previous one's state
    assert ranges == [(0, 0, 12), (12, 12, 20), (20, 20, 32), (32, 32, 40)]
    assert [(r.status, r.frames) for r in rep.results] == [("ok", FRAMES)], rep.results[0].error
    clip_dir = tmp_path / "batch" / "gop"
    assert sorted(p.name for p in clip_dir.iterdir()) == [DONE_NAME, "gop.soft.mask.mkv"]
    pts_one, a = _decode(one.outputs["soft.mask"], "gray")
    pts_seg, b = _decode(clip_dir / "gop.soft.mask.mkv", "gray")
    assert pts_seg == pts_one
    np.testing.assert_array_equal(a, b)  # sequential segments with the smoother state handed over: exact


def test_segments_of_one_and_two_frames_join(gop_clip, tiny_model, tmp_path):
    """A 1-2 frame H.264 part has no B-frames (decode time = frame time), the next part's decode times start
    frames earlier: the join moves those decode times on by ticks instead of refusing the clip."""
    ranges = [(0, 1), (1, 3), (3, 20), (20, 21), (21, 40)]
    kw = {**_kw(tiny_model, outputs=["mask", "heatmap"]), "batch_size": 1}
    one = process_video(gop_clip, out_dir=tmp_path / "one", **kw)
    seg = process_segments(gop_clip, ranges, out_dir=tmp_path / "seg", **kw)
    # each part is encoded on its own (x264's look-ahead sees other frames): ~36 dB on the mask, ~27 dB on the
    # heatmap's noise texture, as with long segments; a frame decoded from the wrong reference would be far lower
    for key, floor in (("soft.mask", 33), ("soft.heatmap", 24)):
        pts_one, a = _decode(one.outputs[key], "rgb24")
        pts_seg, b = _decode(seg.outputs[key], "rgb24")
        assert pts_seg == pts_one and len(pts_seg) == FRAMES
        assert min(_psnr(x, y) for x, y in zip(a, b)) > floor, key
        dts = [d for _, d, _ in _packets(seg.outputs[key])]
        assert all(x < y for x, y in zip(dts, dts[1:]))
        assert _ffprobe_frames(seg.outputs[key]) == FRAMES
