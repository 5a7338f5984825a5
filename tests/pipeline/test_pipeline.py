import av
import numpy as np
import pytest
import torch

import streammask
from streammask import MaskPipeline, ParameterError, process_video
from streammask.io.writers import partial_path


def _decode(path, fmt):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
        return [f.to_ndarray(format=fmt) for f in frames], [f.pts for f in frames], s.time_base


def test_end_to_end_real_clip_all_outputs(carphone, tmp_path, tiny_model, capsys):
    with av.open(str(carphone)) as c:
        src_pts = [f.pts for f in c.decode(video=0)]
    summary = process_video(carphone, out_dir=tmp_path / "out", prompt="person|car", segmenter=tiny_model,
                            batch_size=16, variants=["soft", "mixlab"], progress=True,
                            mask_format="ffv1")
    assert summary.frames == 120
    assert "frame" in capsys.readouterr().err  # the progress bar
    assert set(summary.outputs) == {f"{v}.{k}" for v in ("soft", "mixlab") for k in ("mask", "heatmap", "matte")}
    for key, path in summary.outputs.items():
        assert path.exists() and not partial_path(path).exists()
        imgs, pts, tb = _decode(path, "rgba" if key.endswith("matte") else "rgb24")
        assert len(imgs) == 120, key
        assert imgs[0].shape[:2] == (144, 176)
        times = [float(p * tb) for p in pts]
        assert times == pytest.approx([p / 30000 for p in src_pts], abs=5.01e-4 if path.suffix == ".mkv" else 1e-9), key
    masks, _, _ = _decode(summary.outputs["soft.mask"], "gray")
    mattes, _, _ = _decode(summary.outputs["soft.matte"], "rgba64le")
    for m, t in zip(masks[::10], mattes[::10]):
        # 8-bit lossless FFV1 mask vs ProRes 4444 alpha (the 16-bit mask, decoded at 10 bits): rounding only
        err = np.abs(m.astype(float) - t[..., 3] / 257)
        assert err.max() <= 1
    assert 0.05 < np.mean([m.mean() for m in masks]) / 255 < 0.95  # the mask is not degenerate


def test_one_model_call_per_batch_and_prompt_encoded_once(synthetic_clip, tmp_path, tiny_model_dir):
    model = streammask.load_clipseg(tiny_model_dir, device="cpu")
    calls = []
    real = model.segment

    def counting(frames, prompts, **kw):
        calls.append((frames.shape[0], tuple(prompts), kw.get("preprocess")))
        return real(frames, prompts, **kw)

    model.segment = counting
    s = process_video(synthetic_clip, out_dir=tmp_path, prompt="sky|trees", segmenter=model, batch_size=4,
                      variants=["soft", "mixlab", "essentials"], outputs="mask", progress=False)
    assert s.frames == 12
    # soft, mixlab and essentials share the PIL preprocessing: one call per batch with the union of prompts
    assert len(calls) == 3 and all(c[2] == "pil" for c in calls)
    assert calls[0][1] == ("sky", "trees", "sky|trees")
    assert model.text_encode_calls == 3 and s.text_encodes == 3


def test_batch_size_does_not_change_masks(synthetic_clip, tiny_model):
    frames = np.stack([b for batch in streammask.read_batches(synthetic_clip, batch_size=12) for b in batch.frames])
    pipe = MaskPipeline(tiny_model, prompt="person", variants=["soft"])
    whole = pipe.process(frames)["soft"].mask
    parts = torch.cat([pipe.process(frames[i:i + 5])["soft"].mask for i in range(0, 12, 5)])
    torch.testing.assert_close(whole, parts, atol=1e-4, rtol=0)


def test_writer_failure_reaches_caller_and_leaves_no_final_file(synthetic_clip, tmp_path, tiny_model, monkeypatch):
    from streammask.io import writers

    original = writers.VideoWriter.write

    def failing(self, frames, pts):
        if self.path.name.endswith("heatmap.mp4") and self.frames_written >= 4:
            raise OSError(28, "No space left on device (simulated)")
        return original(self, frames, pts)

    monkeypatch.setattr(writers.VideoWriter, "write", failing)
    with pytest.raises(OSError, match="No space left"):
        process_video(synthetic_clip, out_dir=tmp_path / "o", prompt="x", segmenter=tiny_model, batch_size=4,
                      progress=False)
    assert not (tmp_path / "o").exists()  # no partial file, and the folder the run created is removed


def test_decoder_failure_reaches_caller(synthetic_clip, tmp_path, tiny_model, monkeypatch):
    import streammask.pipeline.run as pipeline

    def broken(*a, **k):
        yield next(iter(streammask.read_batches(synthetic_clip, batch_size=4)))
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(pipeline, "read_batches", broken)
    with pytest.raises(RuntimeError, match="decoder exploded"):
        process_video(synthetic_clip, out_dir=tmp_path / "o", prompt="x", segmenter=tiny_model, progress=False)
    assert not (tmp_path / "o").exists()  # no partial file, and the folder the run created is removed


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompt=""), "prompt"),
    (dict(prompt="a", variants=["nope"]), "variant='nope'"),
    (dict(prompt="a", outputs="mask,gif"), "outputs="),
    (dict(prompt="a", batch_size=0), "batch_size=0"),
    (dict(prompt="a", variants={"mixlab": {"blur": 20}}), "mixlab.blur=20"),
    (dict(prompt="a", variants={"mixlab": {"sharpen": 1}}), "sharpen"),
])
def test_bad_arguments(synthetic_clip, tmp_path, tiny_model, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        process_video(synthetic_clip, out_dir=tmp_path, segmenter=tiny_model, progress=False, **kwargs)


def test_masquerade_running_normalisation_is_batch_size_independent(synthetic_clip, tiny_model):
    frames = np.stack([f for b in streammask.read_batches(synthetic_clip, batch_size=12) for f in b.frames])
    params = {"masquerade": {"normalize": "yes", "normalize_scope": "running"}}
    one = MaskPipeline(tiny_model, prompt="person", variants=params).process(frames)["masquerade"].mask
    pipe = MaskPipeline(tiny_model, prompt="person", variants=params)
    chunks = torch.cat([pipe.process(frames[i:i + 5])["masquerade"].mask for i in range(0, 12, 5)])
    torch.testing.assert_close(one, chunks, atol=1e-4, rtol=0)
    # the first frame is normalised by its own min/max; the last by the whole clip's
    first = one[0]
    assert float(first.min()) == pytest.approx(0.0, abs=1e-6) and float(first.max()) == pytest.approx(1.0, abs=1e-6)
    assert float(one.max()) <= 1.0 + 1e-6


@pytest.mark.parametrize("temporal,options", [("median", {"window": 5}), ("flow", {}), ("ema", {"ema_alpha": 0.3})])
def test_temporal_smoothing_keeps_every_frame_and_timestamp(synthetic_clip, tmp_path, tiny_model, temporal, options):
    with av.open(str(synthetic_clip)) as c:
        src_pts = [f.pts for f in c.decode(video=0)]
    s = process_video(synthetic_clip, out_dir=tmp_path, prompt="person", segmenter=tiny_model, batch_size=4,
                      outputs=["mask", "matte"], mask_format="ffv1", progress=False, temporal=temporal, **options)
    masks, _, _ = _decode(s.outputs["soft.mask"], "gray")
    mattes, pts, tb = _decode(s.outputs["soft.matte"], "rgba")
    assert len(masks) == len(mattes) == 12
    assert pts == src_pts  # a centered window delays frames internally, never in the output
    # each matte keeps its own source frame (not a neighbour's) beside its smoothed mask
    src = [f for b in streammask.read_batches(synthetic_clip, batch_size=12) for f in b.frames]
    for m, f in zip(mattes, src):
        assert np.abs(m[..., :3].astype(int) - f.astype(int)).mean() < 3


def test_temporal_result_does_not_depend_on_batch_size(synthetic_clip, tiny_model):
    frames = np.stack([f for b in streammask.read_batches(synthetic_clip, batch_size=12) for f in b.frames])

    def run(bs):
        pipe = MaskPipeline(tiny_model, prompt="person", variants=["soft"], temporal="median", window=3)
        masks = []
        for i in range(0, 12, bs):
            res, _, pay = pipe.process_stream(frames[i:i + bs], list(range(i, min(i + bs, 12))))
            if res:
                masks.append(res["soft"].mask)
        res, _, pay = pipe.flush_stream()
        if res:
            masks.append(res["soft"].mask)
        return torch.cat(masks)

    torch.testing.assert_close(run(12), run(5), atol=1e-5, rtol=0)
    smoothed, raw = run(12), MaskPipeline(tiny_model, prompt="person").process(frames)["soft"].mask
    assert not torch.allclose(smoothed, raw)  # the smoother did something


def test_bad_temporal_option(synthetic_clip, tmp_path, tiny_model):
    with pytest.raises(ParameterError, match="ema_alpha"):
        process_video(synthetic_clip, out_dir=tmp_path, prompt="x", segmenter=tiny_model, temporal="ema", ema_alpha=3)
    with pytest.raises(ParameterError, match="temporal='blur'"):
        process_video(synthetic_clip, out_dir=tmp_path, prompt="x", segmenter=tiny_model, temporal="blur")


@pytest.mark.parametrize("failure", ["model", "prompt"])
def test_a_failed_run_leaves_no_output_folder_it_created(synthetic_clip, tiny_model, tmp_path, failure):
    """A refused or failed run removes the (empty) output folders it created, and nothing else."""
    out = tmp_path / "new" / "deeper"
    if failure == "model":  # a folder without safetensors weights
        (tmp_path / "no-weights").mkdir()
        with pytest.raises(streammask.ModelLoadError):
            process_video(synthetic_clip, prompt="person", out_dir=out, model=tmp_path / "no-weights", progress=False)
    else:  # refused after the model is loaded: longer than CLIP's 77 tokens
        with pytest.raises(ParameterError, match="tokens"):
            process_video(synthetic_clip, prompt="word " * 100, out_dir=out, segmenter=tiny_model, progress=False)
    assert not (tmp_path / "new").exists()
    assert tmp_path.exists()


def test_a_failed_run_keeps_an_output_folder_that_existed(synthetic_clip, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    with pytest.raises(ParameterError):
        process_video(synthetic_clip, prompt="|", out_dir=out, progress=False)
    assert out.is_dir()


def test_summary_separates_work_from_waiting_and_names_the_slowest_stage(synthetic_clip, tmp_path, monkeypatch):
    """A slow encoder: the model stage's time waiting for room in the encoder's queue is reported as waiting, not
    work, and the encoder is named the slowest stage."""
    import time

    from streammask.io import writers

    original = writers.VideoWriter.write

    def slow(self, frames, pts):
        time.sleep(0.15)
        return original(self, frames, pts)

    monkeypatch.setattr(writers.VideoWriter, "write", slow)
    from streammask.testing import NullSegmenter

    s = process_video(synthetic_clip, out_dir=tmp_path / "o", prompt="x", segmenter=NullSegmenter(), batch_size=2,
                      outputs=["mask"], queue_size=1, progress=False)
    stage = "segment + post-process"
    assert s.slowest_stage == "encode soft.mask", s.stage_seconds
    assert s.wait_seconds[stage] > 0.3  # blocked on the full encoder queue
    encoded = s.stage_seconds["encode soft.mask"]
    assert s.stage_seconds[stage] < encoded
    text = s.describe()
    assert "<- slowest" in next(line for line in text.splitlines() if "encode soft.mask" in line)


def test_summary_gives_one_off_steps_no_rate():
    from streammask.pipeline.run import RunSummary

    s = RunSummary(source="c.mp4", frames=10, seconds=2.0, outputs={},
                   stage_seconds={"load model": 7.08, "decode": 0.5, "segment + post-process": 1.0},
                   wait_seconds={"decode": 0.2})
    line = next(line for line in s.describe().splitlines() if "load model" in line)
    assert "(once)" in line and "frames/s" not in line and "/s" not in line.replace("7.08 s", "")
    assert s.slowest_stage == "segment + post-process"
