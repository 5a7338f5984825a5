"""streammask.bench: the benchmark's result structure and its command-line function (no speed thresholds)."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from streammask.bench import STAGES, format_markdown, run_benchmark
from streammask.cli.bench import add_bench_parser, run_bench_command


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def result(tmp_path_factory, tiny_model_dir):
    from conftest import write_synthetic_clip

    clip = write_synthetic_clip(tmp_path_factory.mktemp("bench") / "clip.mp4", frames=6)
    return run_benchmark(clip, model=str(tiny_model_dir), frames=4, batch_size=2, seed_frames=2, device="cpu")


def test_result_keys_and_types(result):
    for key in ("end_to_end_fps", "model_only_fps", "seed_loop_fps"):
        assert _positive(result[key]), (key, result[key])
    assert result["frames"] == 4 and result["seed_frames"] == 2 and result["batch_size"] == 2
    assert tuple(result["stages_s"]) == STAGES
    assert all(_positive(v) for v in result["stages_s"].values()), result["stages_s"]
    assert _positive(result["peak_rss_mb"])
    assert result["end_to_end_peak_rss_mb"] is None or _positive(result["end_to_end_peak_rss_mb"])
    assert result["device"].startswith("cpu")
    assert result["peak_gpu_mem_mb"] is None  # CPU run
    assert result["gpu_util_end_to_end_pct"] is None
    for name in ("torch", "transformers", "av", "streammask", "python", "cpu"):
        assert isinstance(result["versions"][name], str) and result["versions"][name]
    assert any(k.startswith("encode") for k in result["end_to_end_busy_s"])
    assert result["end_to_end_mask_heatmap_fps"] is None  # not asked for
    json.dumps(result)  # JSON-ready
    assert torch.is_grad_enabled()  # the benchmark leaves the global grad mode as it found it


def test_markdown_table(result):
    text = format_markdown(result)
    assert "| measurement | frames/s |" in text
    for stage in STAGES:
        assert f"| {stage} |" in text


def _parser():
    parser = argparse.ArgumentParser(prog="streammask")
    add_bench_parser(parser.add_subparsers(dest="command"))
    return parser


def test_cli_function(tmp_path, tiny_model_dir, capsys):
    from conftest import write_synthetic_clip

    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=4)
    out = tmp_path / "bench.json"
    args = _parser().parse_args(["bench", str(clip), "--frames", "3", "--batch-size", "2", "--seed-frames", "1",
                                 "--device", "cpu", "--dtype", "int8", "--model", str(tiny_model_dir),
                                 "--mask-heatmap", "--json", str(out)])
    assert args.command == "bench"
    assert run_bench_command(args) == 0
    text = capsys.readouterr().out
    assert "| measurement | frames/s |" in text and "| end to end, mask + heatmap only |" in text
    data = json.loads(out.read_text())
    # streammask's passes in int8, the seed-style loop as the seed nodes run it (float32, every layer)
    assert data["frames"] == 3 and data["dtype"] == "int8" and data["seed_loop_dtype"] == "float32"
    assert data["vision_layers"] == "3 of 3"
    for key in ("end_to_end_fps", "model_only_fps", "seed_loop_fps", "end_to_end_mask_heatmap_fps",
                "end_to_end_mask_heatmap_over_model_only"):
        assert _positive(data[key]), (key, data[key])


def test_default_batch_size_is_the_runs(tmp_path, tiny_model_dir):
    from conftest import write_synthetic_clip

    from streammask.model.batch_size import CPU_BATCH_SIZE

    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=3)
    assert _parser().parse_args(["bench", str(clip)]).batch_size is None
    assert _parser().parse_args(["bench", str(clip), "--batch-size", "auto"]).batch_size is None
    r = run_benchmark(clip, model=str(tiny_model_dir), frames=2, seed_frames=1, device="cpu")
    assert r["batch_size"] == CPU_BATCH_SIZE == 1


def test_cli_errors_are_one_line(tmp_path, capsys):
    args = _parser().parse_args(["bench", str(tmp_path / "missing.mp4"), "--frames", "2"])
    assert run_bench_command(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("streammask: error:") and len(err.strip().splitlines()) == 1

    args = _parser().parse_args(["bench", str(tmp_path / "missing.mp4"), "--frames", "0"])
    assert run_bench_command(args) == 2


@pytest.mark.needs_cuda
def test_cuda_figures(tmp_path, tiny_model_dir):
    from conftest import write_synthetic_clip

    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=4)
    r = run_benchmark(clip, model=str(tiny_model_dir), frames=4, batch_size=2, seed_frames=2, device="cuda")
    assert r["device"].startswith("cuda") and r["dtype"] == "float16"
    assert _positive(r["peak_gpu_mem_mb"]) and _positive(r["model_only_fps"]) and _positive(r["end_to_end_fps"])
    assert all(_positive(v) for v in r["stages_s"].values())


# -- encoder-bound mode (null segmenter): structure only, no timing assertions ---------------------------------------

def test_null_segmenter_is_a_segmenter_of_the_right_shape():
    from streammask.bench import NullSegmenter

    seg = NullSegmenter(device="cpu")
    frames = torch.zeros(3, 3, 20, 30, dtype=torch.uint8)
    logits = seg.segment(frames, ["a", "b"], size=64)
    assert logits.shape == (3, 2, 64, 64) and logits.dtype == torch.float32
    assert logits.device == frames.device
    p = torch.sigmoid(logits)
    assert p.max() > 0.9 and p.min() < 0.1  # a disc with edges, not a constant
    assert seg.segment(frames, ["a"]).shape == (3, 1, 352, 352)


def test_null_segmenter_mode_keys(tmp_path, capsys):
    from conftest import write_synthetic_clip

    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=6)
    out = tmp_path / "null.json"
    args = _parser().parse_args(["bench", str(clip), "--segmenter", "null", "--frames", "4", "--batch-size", "2",
                                 "--device", "cpu", "--json", str(out)])
    assert run_bench_command(args) == 0
    text = capsys.readouterr().out
    assert "null segmenter" in text and "| pipeline only, mask + heatmap + matte |" in text
    r = json.loads(out.read_text())
    assert r["mode"] == "null_segmenter" and r["frames"] == 4 and r["segmenter_calls"] > 0
    for key in ("pipeline_only_fps", "pipeline_only_fps_mask_heatmap", "decode_fps", "encoder_bound_ratio",
                "encoder_bound_ratio_mask_heatmap"):
        assert _positive(r[key]), (key, r[key])
    assert set(r["encoder_standalone_fps"]) == {"mask", "heatmap", "matte"}
    assert all(_positive(v) for v in r["encoder_standalone_fps"].values())
    assert r["slowest_encoder"] in r["encoder_standalone_fps"]
    assert any(k.startswith("encode") for k in r["end_to_end_busy_s"]["all"])
    assert r["device"].startswith("cpu")


def test_null_segmenter_mode_bad_input_is_one_line(tmp_path, capsys):
    args = _parser().parse_args(["bench", str(tmp_path / "missing.mp4"), "--segmenter", "null"])
    assert run_bench_command(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("streammask: error:") and len(err.strip().splitlines()) == 1
