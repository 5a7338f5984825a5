"""streammask.bench: the benchmark's result structure and its command-line function (no speed thresholds)."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from streammask.bench import STAGES, format_markdown, run_benchmark
from streammask.errors import ParameterError
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


def test_tiny_random_clipseg_with_load_options(tmp_path):
    """Without --model, --random-size tiny builds the tests' CLIPSeg; threads and channels_last reach the passes."""
    from conftest import write_synthetic_clip

    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=2)
    before = torch.get_num_threads()
    r = run_benchmark(clip, random_size="tiny", frames=2, seed_frames=1, device="cpu", threads=1, channels_last=True)
    assert r["model"].startswith("tiny CLIPSeg, random weights") and r["model_input"] == "352x352"
    assert r["threads"] == 1 and r["channels_last"] is True and r["compile"] is False
    assert _positive(r["model_only_fps"]) and _positive(r["end_to_end_fps"]) and _positive(r["seed_loop_fps"])
    assert torch.get_num_threads() == before  # restored


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


# -- SAM 3: model only and end to end by object count (structure and counts, no timing assertions) -------------------

CARPHONE = "examples/carphone.mp4"


@pytest.fixture(scope="module")
def sam3_every_dir(tmp_path_factory):
    """The tests' tiny SAM 3 with every detection kept: the objects tracked equal the cap."""
    from streammask.model.threads import torch_threads

    from streammask.bench import save_random_sam3

    with torch_threads(1):
        return save_random_sam3(tmp_path_factory.mktemp("sam3-bench") / "tiny", size="tiny")


def _bench_cli(argv, capsys):
    rc = run_bench_command(_parser().parse_args(["bench", *argv]))
    out, err = capsys.readouterr()
    return rc, out, err


def test_sam3_model_only_and_end_to_end_by_object_count(tmp_path, sam3_every_dir, capsys):
    from streammask.bench import SAM3_SEED_LOOP_SKIPPED

    out = tmp_path / "sam3.json"
    rc, text, err = _bench_cli([CARPHONE, "--model", str(sam3_every_dir), "--frames", "2", "--sam3-objects", "0,2",
                                "--device", "cpu", "--threads", "1", "--json", str(out)], capsys)
    assert rc == 0, err
    r = json.loads(out.read_text())
    assert r["mode"] == "sam3" and r["frames"] == 2 and r["threads"] == 1 and r["device"].startswith("cpu")
    assert r["model_input"] == "112x112" and r["mask_size"] == "32x32"
    assert [row["objects"] for row in r["sam3"]] == [0, 2]
    for row in r["sam3"]:
        n = row["objects"]
        # every detection kept: the tracker holds exactly the cap from the first frame on
        assert row["tracked_per_frame"] == [n, n] and row["tracked_mean"] == n and row["tracked_max"] == n
        for key in ("model_only_fps", "model_only_s_per_frame", "end_to_end_fps", "end_to_end_s_per_frame",
                    "end_to_end_over_model_only"):
            assert _positive(row[key]), (key, row[key])
        assert row["end_to_end_frames"] == 2 and row["end_to_end_batch_size"] == 4
        assert any(k.startswith("encode") for k in row["end_to_end_busy_s"])
    assert r["objects_source"].startswith("found by the model")  # a --model: the counts are caps
    assert r["seed_loop_fps"] is None and r["seed_loop_skipped"] == SAM3_SEED_LOOP_SKIPPED
    assert torch.is_grad_enabled()
    # the markdown: one row per count, no seed-loop row but the reason it was not run
    assert "| objects (cap) | objects tracked per frame, mean / max |" in text
    assert "| 0 | 0 / 0 |" in text and "| 2 | 2 / 2 |" in text
    assert "| seed-style" not in text and f"Seed-style per-frame loop: {SAM3_SEED_LOOP_SKIPPED}." in text
    assert format_markdown(r) == text.rstrip("\n")


def test_sam3_random_model_without_model(tmp_path):
    """--segmenter sam3 without --model builds a random SAM 3 that keeps every detection: the count is controlled."""
    r = run_benchmark(CARPHONE, segmenter="sam3", random_size="tiny", sam3_objects=[1], frames=1, device="cpu",
                      threads=1)
    assert r["mode"] == "sam3" and r["model"].startswith("tiny SAM 3, random weights")
    assert r["objects_source"].startswith("controlled")
    (row,) = r["sam3"]
    assert row["objects"] == 1 and row["tracked_per_frame"] == [1]
    assert _positive(row["model_only_fps"]) and _positive(row["end_to_end_fps"])


@pytest.mark.parametrize("flags, named", [
    (["--dtype", "int8"], "dtype='int8'"),
    (["--compile"], "compile=True"),
    (["--channels-last"], "channels_last=True"),
])
def test_sam3_refusals_are_runs(tmp_path, sam3_every_dir, capsys, flags, named):
    """int8, --compile and --channels-last: exit 2 with one line, the same line as `streammask run`."""
    from streammask.cli import main

    rc, _, err = _bench_cli([CARPHONE, "--model", str(sam3_every_dir), "--frames", "1", *flags], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("streammask: error:")
    assert named in err and "SAM 3" in err
    assert main(["run", CARPHONE, "--model", str(sam3_every_dir), "--prompt", "person", "-o", str(tmp_path),
                 *flags]) == 2
    assert capsys.readouterr().err == err


@pytest.mark.parametrize("argv, named", [
    (["--sam3-objects", "1,x"], "sam3_objects='1,x'"),
    (["--sam3-objects", "-1"], "sam3_objects='-1'"),
    (["--seed-frames", "2"], "seed_frames=2"),
    (["--mask-heatmap"], "mask_heatmap=True"),
    (["--segmenter", "clipseg"], "segmenter='clipseg'"),
    (["--random-size", "tiny"], "random_size='tiny'"),
])
def test_sam3_bad_input_is_one_line(sam3_every_dir, capsys, argv, named):
    rc, _, err = _bench_cli([CARPHONE, "--model", str(sam3_every_dir), "--frames", "1", *argv], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and named in err, err


def test_object_counts_are_sam3s(tiny_model_dir, capsys):
    rc, _, err = _bench_cli([CARPHONE, "--model", str(tiny_model_dir), "--sam3-objects", "2"], capsys)
    assert rc == 2 and "sam3_objects=[2]" in err and "CLIPSeg" in err


def test_resolve_segmenter(sam3_every_dir, tiny_model_dir):
    from streammask.bench import resolve_segmenter

    assert resolve_segmenter("auto", None) == "clipseg"
    assert resolve_segmenter("sam3", None) == "sam3"
    assert resolve_segmenter("auto", sam3_every_dir) == "sam3"
    assert resolve_segmenter("auto", tiny_model_dir) == "clipseg"
    assert resolve_segmenter("null", tiny_model_dir) == "null"
    with pytest.raises(ParameterError, match="segmenter='sam3'.*'auto' or 'clipseg'"):
        resolve_segmenter("sam3", tiny_model_dir)
    with pytest.raises(ParameterError, match="segmenter='bogus'"):
        resolve_segmenter("bogus", None)
