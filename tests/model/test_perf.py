"""Speed options: precision tolerance, attention / channels_last / compile, automatic batch size."""

from __future__ import annotations

import logging
import os
import re

import pytest
import torch

from streammask import load_clipseg, process_video, read_batches
from streammask.errors import ParameterError
from streammask.model.batch_size import CPU_BATCH_SIZE, MAX_AUTO_BATCH, auto_batch_size, choose_batch_size, frame_memory_bytes

PROMPTS = ["person", "car"]

# The tolerances stated in README "Performance options": |delta probability| vs float32
# (mean, 99th percentile, max) and the % of pixels whose mask at p = 0.5 flips.
# Measured on the tiny random model (carphone, 8 frames, 2 prompts): float16 0.00035 / 0.0025 / 0.021 / 0.04 %,
# bfloat16 0.0026 / 0.018 / 0.29 / 0.32 %; the bounds leave about 2x margin.
TOLERANCE = {
    "float16": dict(mean=0.001, p99=0.006, max=0.06, flip_pct=0.1),
    "bfloat16": dict(mean=0.006, p99=0.04, max=0.5, flip_pct=0.75),
}


@pytest.fixture(scope="module")
def carphone_frames():
    from conftest import CARPHONE

    frames = next(iter(read_batches(CARPHONE, batch_size=8))).frames
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()


def _probs(model, frames):
    return torch.sigmoid(model.segment(frames, PROMPTS))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_masks_within_tolerance_of_fp32(dtype, tiny_model, tiny_model_dir, carphone_frames):
    """fp16 and bf16 both run on a CPU with torch 2.13, so neither needs CUDA here."""
    low = load_clipseg(tiny_model_dir, device="cpu", dtype=dtype)
    assert low.dtype == getattr(torch, dtype)
    ref = _probs(tiny_model, carphone_frames)
    got = _probs(low, carphone_frames)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    delta = (got - ref).abs().flatten()
    tol = TOLERANCE[dtype]
    flips = 100 * ((got > 0.5) != (ref > 0.5)).float().mean().item()
    assert delta.mean().item() <= tol["mean"]
    assert torch.quantile(delta[::7], 0.99).item() <= tol["p99"]
    assert delta.max().item() <= tol["max"]
    assert flips <= tol["flip_pct"]
    assert delta.max().item() > 0  # it really ran in lower precision


@pytest.mark.parametrize("impl", ["eager", "sdpa", "auto"])
def test_attention_implementations_agree(impl, tiny_model, tiny_model_dir, carphone_frames):
    from streammask.model import attention_implementation

    model = load_clipseg(tiny_model_dir, device="cpu", attn_implementation=impl)
    if impl != "auto":
        assert attention_implementation(model.model) == impl
    torch.testing.assert_close(_probs(model, carphone_frames[:2]), _probs(tiny_model, carphone_frames[:2]),
                               atol=1e-4, rtol=0)


def test_sdpa_falls_back_silently_when_unsupported(tiny_model_dir, monkeypatch, caplog):
    from transformers import CLIPSegForImageSegmentation

    real = CLIPSegForImageSegmentation.from_pretrained.__func__

    def no_sdpa(cls, name, *args, **kwargs):
        if kwargs.get("attn_implementation") == "sdpa":
            raise ValueError("CLIPSegForImageSegmentation does not support an attention implementation through "
                             "torch.nn.functional.scaled_dot_product_attention yet")
        return real(cls, name, *args, **kwargs)

    monkeypatch.setattr(CLIPSegForImageSegmentation, "from_pretrained", classmethod(no_sdpa))
    with caplog.at_level(logging.DEBUG, logger="streammask.model"):
        model = load_clipseg(tiny_model_dir, device="cpu", attn_implementation="sdpa")
    assert model.model is not None
    assert any("sdpa" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


def test_channels_last_gives_the_same_logits(tiny_model, tiny_model_dir, carphone_frames):
    model = load_clipseg(tiny_model_dir, device="cpu", channels_last=True)
    conv = model.model.clip.vision_model.embeddings.patch_embedding.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model.segment(carphone_frames[:2], PROMPTS), tiny_model.segment(carphone_frames[:2], PROMPTS),
                               atol=1e-4, rtol=1e-4)


def test_compile_wraps_vision_and_decoder(tiny_model, tiny_model_dir, carphone_frames, monkeypatch):
    """torch.compile is reached for both per-frame modules and the compiled model gives the same logits.

    Inductor's code generation takes ~25 s for the tiny model on a 2-core CPU, too slow for the
    suite, so the compiled callables are built with the ``eager`` backend (TorchDynamo traces the
    forward, no code generation); the inductor path runs in ``test_compile_inductor`` (opt-in).
    """
    real_compile = torch.compile
    compiled = []

    def eager_compile(fn, *args, **kwargs):
        compiled.append(getattr(fn, "__self__", fn).__class__.__name__)
        return real_compile(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    torch._dynamo.reset()
    model = load_clipseg(tiny_model_dir, device="cpu", compile=True)
    assert model.compiled and sorted(compiled) == ["CLIPSegDecoder", "CLIPSegVisionModel"]
    torch.testing.assert_close(model.segment(carphone_frames[:2], PROMPTS), tiny_model.segment(carphone_frames[:2], PROMPTS),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not os.environ.get("STREAMMASK_SLOW"),
                    reason="slow: torch.compile with inductor takes ~25 s for the tiny model on a 2-core CPU "
                           "(set STREAMMASK_SLOW=1 to run)")
def test_compile_inductor(tiny_model, tiny_model_dir, carphone_frames):
    torch._dynamo.reset()
    model = load_clipseg(tiny_model_dir, device="cpu", compile=True)
    torch.testing.assert_close(model.segment(carphone_frames[:2], PROMPTS), tiny_model.segment(carphone_frames[:2], PROMPTS),
                               atol=1e-3, rtol=1e-3)


def test_bad_attention_implementation(tiny_model_dir):
    with pytest.raises(ParameterError, match=r"attn_implementation.*'flash'.*'auto', 'sdpa', 'eager'"):
        load_clipseg(tiny_model_dir, device="cpu", attn_implementation="flash")


# -- automatic batch size ------------------------------------------------------------------------------------------

GIB = 2 ** 30


@pytest.mark.parametrize("free, hw, dtype, kwargs, expected", [
    # 1080p fp16: ~225 MiB per frame (see the module docstring); half of the free memory used
    (80 * GIB, (1080, 1920), "float16", {}, MAX_AUTO_BATCH),
    (2 * GIB, (1080, 1920), "float16", {}, 4),
    (2 * GIB, (1080, 1920), "float32", {}, 3),
    (2 * GIB, (1080, 1920), "float16", {"variants": 3}, 2),
    (2 * GIB, (1080, 1920), "float16", {"headroom": 1.0}, 9),
    (8 * GIB, (144, 176), "float16", {}, 46),
    (8 * GIB, (144, 176), "float16", {"prompts": 4}, 17),
    (8 * GIB, (144, 176), "float16", {"max_batch": 8}, 8),
    (100 * 2 ** 20, (1080, 1920), "float16", {}, 1),  # not even one frame fits: 1
    (0, (64, 64), "float32", {}, 1),
])
def test_auto_batch_size_table(free, hw, dtype, kwargs, expected):
    assert auto_batch_size(free, hw, dtype, **kwargs) == expected


def test_frame_memory_grows_with_size_dtype_prompts_and_variants():
    base = frame_memory_bytes((720, 1280), "float16")
    assert frame_memory_bytes((1080, 1920), "float16") > base
    assert frame_memory_bytes((720, 1280), "float32") > base
    assert frame_memory_bytes((720, 1280), torch.bfloat16) == base
    assert frame_memory_bytes((720, 1280), "float16", prompts=2) > base
    assert frame_memory_bytes((720, 1280), "float16", variants=2) > base


@pytest.mark.parametrize("kwargs", [{"headroom": 0}, {"headroom": 1.5}, {"max_batch": 0}])
def test_auto_batch_size_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        auto_batch_size(GIB, (64, 64), "float16", **kwargs)


def test_choose_batch_size_cpu_and_explicit():
    assert choose_batch_size(None, device="cpu", frame_hw=(1080, 1920), dtype="float32") == CPU_BATCH_SIZE
    assert choose_batch_size(5, device="cpu", frame_hw=(1080, 1920), dtype="float32") == 5
    assert choose_batch_size(5, device="cuda", frame_hw=(1080, 1920), dtype="float16") == 5  # never asks the GPU


def test_choose_batch_size_cuda_reads_free_memory(monkeypatch):
    asked = []

    def mem_get_info(device=None):
        asked.append(torch.device(device))
        return 3 * GIB, 80 * GIB

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    got = choose_batch_size(None, device="cuda:0", frame_hw=(1080, 1920), dtype=torch.float16)
    assert asked == [torch.device("cuda:0")]
    assert got == auto_batch_size(3 * GIB, (1080, 1920), torch.float16) == 6


def test_process_video_auto_batch_size(synthetic_clip, tiny_model, tmp_path):
    """``batch_size`` left out: 1 on the CPU; the summary reports it; ``"auto"`` is accepted like ``None``."""
    summary = process_video(synthetic_clip, prompt="person", out_dir=tmp_path / "a", outputs=["mask"],
                            segmenter=tiny_model, progress=False, max_frames=3)
    assert summary.batch_size == CPU_BATCH_SIZE and summary.frames == 3
    summary = process_video(synthetic_clip, prompt="person", out_dir=tmp_path / "b", outputs=["mask"],
                            segmenter=tiny_model, progress=False, max_frames=3, batch_size="auto")
    assert summary.batch_size == CPU_BATCH_SIZE


def test_process_video_auto_batch_size_on_cuda_path(synthetic_clip, tiny_model, tmp_path, monkeypatch):
    """The CUDA branch, with torch.cuda's memory query monkeypatched and a segmenter that claims CUDA."""
    import streammask.pipeline.run as pipeline

    chosen = []
    real = pipeline.choose_batch_size

    def spy(batch_size, *, device, **kwargs):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (int(1.5 * GIB), 16 * GIB))
        got = real(batch_size, device="cuda", **kwargs)
        chosen.append((got, kwargs["frame_hw"], kwargs["dtype"]))
        return got

    monkeypatch.setattr(pipeline, "choose_batch_size", spy)
    summary = process_video(synthetic_clip, prompt="person", out_dir=tmp_path, outputs=["mask"], segmenter=tiny_model,
                            progress=False)
    expected = auto_batch_size(int(1.5 * GIB), (48, 64), torch.float32)
    assert chosen == [(expected, (48, 64), torch.float32)]
    assert summary.batch_size == expected and summary.frames == 12


@pytest.mark.parametrize("flag, value, match", [
    ("--batch-size", "0", r"batch.size.*'0'.*integer in \[1, 1024\] or none"),
    ("--batch-size", "many", r"batch.size.*'many'"),
    ("--stride", "0", r"stride.*'0'.*\[1, 1000\]"),
    ("--static-psnr", "5", r"static.psnr.*'5'.*\[10, 100\]"),
    ("--attn-implementation", "flash", r"attn.implementation.*flash"),
])
def test_cli_bad_speed_flags(flag, value, match, synthetic_clip, tmp_path, capsys):
    from streammask.cli import main

    code = main(["run", str(synthetic_clip), "--prompt", "x", "-o", str(tmp_path), flag, value])
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(match, err), err


# -- int8 (CPU) ----------------------------------------------------------------------------------------------------

# |delta p| vs float32 (mean / p99 / max, % mask flips), weights per channel: the tiny model (same frames and prompts
# as above) 0.0035 / 0.025 / 0.21 / 0.44 %; the full-size random model (4 frames, "person") 0.0032 / 0.020 / 0.083 /
# 0.37 % (benchmarks/RESULTS.md). The bounds leave about 2x margin.
INT8_TOLERANCE = dict(mean=0.008, p99=0.05, max=0.5, flip_pct=1.0)


def test_int8_masks_within_tolerance_of_fp32(tiny_model, tiny_model_dir, carphone_frames):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    q = load_clipseg(tiny_model_dir, device="cpu", dtype="int8")
    assert q.quantized == "int8" and q.dtype == torch.float32 and "dtype=int8" in repr(q)
    vision = q.model.clip.vision_model.encoder
    quantized = [m for m in vision.modules() if isinstance(m, DynamicLinear)]
    assert len(quantized) == 6 * len(vision.layers)  # q, k, v, out projections and the two MLP layers per layer
    assert not any(isinstance(m, DynamicLinear) for m in q.model.clip.text_model.modules())
    ref = _probs(tiny_model, carphone_frames)
    got = _probs(q, carphone_frames)
    delta = (got - ref).abs().flatten()
    flips = 100 * ((got > 0.5) != (ref > 0.5)).float().mean().item()
    assert delta.mean().item() <= INT8_TOLERANCE["mean"]
    assert torch.quantile(delta[::7], 0.99).item() <= INT8_TOLERANCE["p99"]
    assert delta.max().item() <= INT8_TOLERANCE["max"]
    assert flips <= INT8_TOLERANCE["flip_pct"]
    assert delta.max().item() > 0


def test_int8_refused_on_cuda_and_with_compile(tiny_model_dir):
    from streammask.model import resolve_dtype

    with pytest.raises(ParameterError, match=r"dtype='int8'.*CPU only"):
        resolve_dtype("int8", torch.device("cuda"))
    assert resolve_dtype("int8", torch.device("cpu")) == torch.float32
    with pytest.raises(ParameterError, match=r"compile=True.*int8"):
        load_clipseg(tiny_model_dir, device="cpu", dtype="int8", compile=True)


def test_cli_runs_int8(synthetic_clip, tiny_model_dir, tmp_path):
    from streammask.cli import main

    out = tmp_path / "out"
    rc = main(["run", str(synthetic_clip), "--prompt", "person", "--model", str(tiny_model_dir), "--device", "cpu",
               "--dtype", "int8", "--outputs", "mask", "--mask-format", "png", "-o", str(out)])
    assert rc == 0
    pngs = sorted(out.rglob("*.png"))
    assert pngs and all(p.stat().st_size > 0 for p in pngs)
