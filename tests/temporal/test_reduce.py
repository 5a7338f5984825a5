"""Reduced work: --stride (motion-compensated carry) and --skip-static (reuse on unchanged frames)."""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from conftest import encode_frames, write_synthetic_clip
from oracle import OracleNoise, OracleSegmenter, iou, make_clip

from streammask import MaskPipeline, process_video
from streammask.errors import ParameterError
from streammask.temporal.keyframes import WorkReducer, psnr


class CountingSegmenter:
    """Wraps a segmenter and records every frame the model is asked about."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.device = inner.device
        self.size = inner.size
        self.dtype = getattr(inner, "dtype", torch.float32)
        self.calls = 0
        self.frames: list[torch.Tensor] = []

    def segment(self, frames, prompts, **kwargs):
        self.calls += 1
        self.frames.extend(f.clone() for f in frames)
        return self.inner.segment(frames, prompts, **kwargs)


def _read(path):
    """``(frames (N, H, W, 3) uint8, pts)`` of a video file."""
    with av.open(str(path)) as c:
        decoded = [(f.to_ndarray(format="rgb24"), f.pts) for f in c.decode(video=0)]
    return np.stack([d[0] for d in decoded]), [d[1] for d in decoded]


def _run(clip, out, segmenter, **kwargs):
    """Lossless FFV1 masks, so that frames can be compared exactly."""
    kwargs.setdefault("mask_format", "ffv1")
    return process_video(clip, prompt="person", out_dir=out, outputs=["mask"], segmenter=segmenter, progress=False,
                         **kwargs)


def write_static_scenes(path, *, scenes=3, frames_per_scene=6, size=(64, 48)):
    """``scenes`` different still images, each held for ``frames_per_scene`` frames (lossless FFV1)."""
    w, h = size
    rng = np.random.default_rng(7)
    images = []
    for s in range(scenes):
        base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        images += [base] * frames_per_scene
    with av.open(str(path), "w") as c:
        st = c.add_stream("ffv1", rate=Fraction(30000, 1001))
        st.width, st.height, st.pix_fmt = w, h, "bgr0"
        encode_frames(c, st, images, range(len(images)))
    return path


@pytest.mark.parametrize("stride, batch_size", [(3, 5), (3, 1), (2, 4), (5, 12)])
def test_stride_calls_the_model_every_nth_frame_and_keeps_frames(stride, batch_size, tmp_path, tiny_model):
    clip = write_synthetic_clip(tmp_path / "moving.mp4", frames=12)
    counter = CountingSegmenter(tiny_model)
    summary = _run(clip, tmp_path / "out", counter, stride=stride, batch_size=batch_size, mask_format="mp4")
    assert len(counter.frames) == math.ceil(12 / stride) == summary.model_frames
    assert counter.calls <= math.ceil(12 / batch_size)  # key frames of one batch go through the model together
    src, src_pts = _read(clip)
    masks, pts = _read(summary.outputs["soft.mask"])
    assert summary.frames == len(masks) == 12 and pts == src_pts
    # the key frames the model saw are the source frames 0, stride, 2*stride, ... (decoded identically)
    seen = torch.stack(counter.frames).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(seen, src[::stride])


def test_stride_key_frames_equal_the_full_run(tmp_path, tiny_model):
    """At key frames the mask is the model's own; between them it is a warp of it, not a copy of the full run."""
    clip = write_synthetic_clip(tmp_path / "moving.mp4", frames=9)
    full = _read(_run(clip, tmp_path / "full", tiny_model, batch_size=4).outputs["soft.mask"])[0].astype(int)
    strided = _read(_run(clip, tmp_path / "s3", tiny_model, batch_size=4, stride=3).outputs["soft.mask"])[0].astype(int)
    assert np.abs(strided[::3] - full[::3]).max() <= 1  # a model batch of other frames: float rounding only
    assert np.abs(strided - full).mean() > 0  # the in-between frames are carried, not re-inferred


def test_skip_static_calls_the_model_once_per_scene(tmp_path, tiny_model):
    clip = write_static_scenes(tmp_path / "static.mkv", scenes=3, frames_per_scene=6)
    counter = CountingSegmenter(tiny_model)
    summary = _run(clip, tmp_path / "out", counter, skip_static=True, batch_size=4)
    assert len(counter.frames) == 3 == summary.model_frames
    masks, pts = _read(summary.outputs["soft.mask"])
    assert len(masks) == 18 and pts == _read(_run(clip, tmp_path / "pts", tiny_model).outputs["soft.mask"])[1]
    full = _read(_run(clip, tmp_path / "full", tiny_model, batch_size=4).outputs["soft.mask"])[0]
    # static frames reuse their scene's first mask, which the full run recomputes from identical input
    # (up to float rounding from a different model batch)
    assert np.abs(masks.astype(int) - full).max() <= 1


def test_skip_static_equals_the_full_run_without_static_frames(tmp_path, tiny_model):
    clip = write_synthetic_clip(tmp_path / "moving.mp4", frames=10)  # the square moves every frame: PSNR ~ 20 dB
    counter = CountingSegmenter(tiny_model)
    summary = _run(clip, tmp_path / "skip", counter, skip_static=True, batch_size=3)
    assert len(counter.frames) == 10 == summary.model_frames
    full = _run(clip, tmp_path / "full", tiny_model, batch_size=3)
    np.testing.assert_array_equal(_read(summary.outputs["soft.mask"])[0], _read(full.outputs["soft.mask"])[0])


def test_static_psnr_threshold_decides(tmp_path, tiny_model):
    """A threshold below the moving clip's frame-to-frame PSNR makes it "static"; the model then runs on frame 0
    only, and --static-psnr 100 (never static unless identical) runs it on every frame."""
    clip = write_synthetic_clip(tmp_path / "moving.mp4", frames=6)
    low = CountingSegmenter(tiny_model)
    _run(clip, tmp_path / "low", low, skip_static=True, static_psnr=10)
    high = CountingSegmenter(tiny_model)
    _run(clip, tmp_path / "high", high, skip_static=True, static_psnr=100)
    assert (len(low.frames), len(high.frames)) == (1, 6)


def test_every_variant_and_the_temporal_smoother_see_the_carried_logits(tmp_path, tiny_model):
    clip = write_synthetic_clip(tmp_path / "moving.mp4", frames=8)
    counter = CountingSegmenter(tiny_model)
    summary = process_video(clip, prompt="person", out_dir=tmp_path / "out", variants=["soft", "mixlab"],
                            outputs=["mask", "heatmap"], segmenter=counter, progress=False, stride=4, batch_size=3,
                            temporal="ema")
    assert len(counter.frames) == 2
    for key in ("soft.mask", "soft.heatmap", "mixlab.mask", "mixlab.heatmap"):
        frames, pts = _read(summary.outputs[key])
        assert len(frames) == 8 and pts == list(range(0, 8 * 1001, 1001))


def test_stride_makes_a_key_frame_at_every_scene_cut():
    clip = make_clip("cut", length=16, size=(60, 80), seed=0)
    cut = int(np.flatnonzero(clip.cuts)[0])
    oracle = CountingSegmenter(OracleSegmenter(clip, size=64, seed=0))
    pipe = MaskPipeline(oracle, prompt="object", stride=100)
    frames = clip.frames_bchw()
    for s in range(0, len(clip), 5):
        pipe.process_stream(frames[s:s + 5], list(range(s, min(s + 5, len(clip)))))
    seen = [f for f in oracle.frames]
    assert len(seen) == 2
    assert torch.equal(seen[0], frames[0]) and torch.equal(seen[1], frames[cut])


def _carry_iou(clip, stride, *, warp: bool):
    oracle = OracleSegmenter(clip, size=96, seed=0, noise=OracleNoise(pixel_std=0, edge_jitter=0, edge_wobble=0,
                                                                      blotches=0, dropout=0))
    frames = clip.frames_bchw()
    if warp:
        reducer = WorkReducer(stride=stride)
        logits = torch.cat([reducer.logits(frames[s:s + 8], lambda f: {"k": oracle.segment(f, ["object"])})["k"]
                            for s in range(0, len(clip), 8)])
    else:  # hold the key frame's mask unchanged
        logits = oracle.segment(frames[::stride], ["object"]).repeat_interleave(stride, dim=0)[:len(clip)]
    return iou((logits[:, 0] > 0).numpy(), oracle.truth(0))


def test_motion_compensation_beats_holding_the_mask():
    """With a noise-free oracle, warping the key frame's mask along the flow tracks the moving objects far
    better than holding it: the carry really uses the motion."""
    clip = make_clip("moving", length=24, size=(120, 160), seed=1)
    hold = _carry_iou(clip, 4, warp=False)
    carried = _carry_iou(clip, 4, warp=True)
    every = _carry_iou(clip, 1, warp=True)
    assert every > 99.0  # stride 1 = the model on every frame
    assert carried > hold + 8.0, (carried, hold)  # measured: 87.5 vs 74.9
    assert carried > 85.0


def test_reducer_counts_and_reset():
    r = WorkReducer(stride=3)
    frames = torch.zeros(7, 3, 16, 16, dtype=torch.uint8)
    infer = lambda f: {"k": torch.zeros(len(f), 1, 8, 8)}  # noqa: E731
    assert r.logits(frames, infer)["k"].shape == (7, 1, 8, 8)
    assert r.counts == {"model": 3, "carried": 4, "static": 0}
    r.reset()
    r.logits(frames[:2], infer)  # a new stream starts with a key frame
    assert r.counts["model"] == 4


def test_psnr():
    a = torch.zeros(3, 8, 8, dtype=torch.uint8)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 255) == pytest.approx(0.0)
    assert psnr(a, a + 1) == pytest.approx(48.13, abs=0.01)


@pytest.mark.parametrize("kwargs, match", [
    ({"stride": 0}, r"stride.*0.*\[1, 1000\]"),
    ({"stride": 2.5}, r"stride.*2\.5"),
    ({"static_psnr": 5}, r"static_psnr.*5.*\[10, 100\]"),
    ({"skip_static": "maybe"}, r"skip_static.*maybe.*true or false"),
])
def test_bad_reduce_options(kwargs, match, synthetic_clip, tiny_model, tmp_path):
    with pytest.raises(ParameterError, match=match):
        _run(synthetic_clip, tmp_path, tiny_model, **kwargs)


def test_cli_flags_and_pipeline_file_keys(tmp_path, tiny_model_dir, capsys):
    """--stride / --skip-static / --batch-size auto on the command line, and the same keys in a pipeline file."""
    from streammask.cli import main

    clip = write_synthetic_clip(tmp_path / "moving.mp4", frames=7)
    code = main(["run", str(clip), "--prompt", "person", "--model", str(tiny_model_dir), "--device", "cpu",
                 "-o", str(tmp_path / "cli"), "--outputs", "mask", "--stride", "3", "--skip-static",
                 "--static-psnr", "45", "--batch-size", "auto", "--attn-implementation", "sdpa"])
    out = capsys.readouterr().out
    assert code == 0
    assert "model ran on 3 of 7 frames" in out
    pipeline = tmp_path / "reduce.toml"
    pipeline.write_text('prompt = "person"\noutputs = ["mask"]\nstride = 2\nbatch_size = "auto"\nchannels_last = true\n')
    code = main(["run", str(clip), "--pipeline", str(pipeline), "--model", str(tiny_model_dir), "--device", "cpu",
                 "-o", str(tmp_path / "file")])
    assert code == 0
    assert "model ran on 4 of 7 frames" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, match", [
    ({"stride": 0}, r"stride.*0"),
    ({"skip_static": "maybe"}, r"skip_static.*maybe"),
    ({"static_psnr": 200}, r"static_psnr.*200"),
])
def test_reducer_validates_its_options(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        WorkReducer(**kwargs)
