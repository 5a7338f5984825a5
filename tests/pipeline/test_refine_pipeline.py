"""The matte refinement in the pipeline: the settings, what it touches, and invariance to batches and segments."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from streammask import ParameterError, PipelineFileError, process_video
from streammask.batch.segments import process_segments
from streammask.cli import main
from streammask.pipeline import RUN_PARAMS
from streammask.pipeline.settings import load_pipeline
from streammask.refine import REFINE_PARAMS

from conftest import CARPHONE
from matte_oracle import MatteOracle, clip_metrics, load_textures, make_matte_clip, write_lossless

SIZE = (180, 320)
SIDE = 96  # the oracle's square: ~3.3 frame pixels a model pixel, as 352 at 720p
RADIUS = 24.0  # refine_radius counts 352ths of the long side: 24 -> 22 px here, ~6.5 oracle pixels, as the default at 720p


@pytest.fixture(scope="module")
def matte_clip(tmp_path_factory):
    textures = load_textures([CARPHONE])
    clip = make_matte_clip("wobble", textures, length=8, size=SIZE, seed=0)
    return clip, write_lossless(clip.frames, tmp_path_factory.mktemp("matte") / "wobble.mkv")


def _read_sequence(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("*.png"))
    return np.stack([cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files])


def _run(src, out, oracle, **kw):
    kw.setdefault("outputs", ["mask"])
    kw.setdefault("mask_format", "png16")
    return process_video(src, prompt="object", segmenter=oracle, out_dir=out, progress=False, **kw)


def test_settings_are_declared_once_in_run_params():
    for p in REFINE_PARAMS:
        assert RUN_PARAMS[p.name] is p
    assert RUN_PARAMS["refine"].default == "none" and RUN_PARAMS["refine"].choices == ("none", "guided")


def test_guided_refinement_lowers_the_matte_errors(matte_clip, tmp_path):
    clip, src = matte_clip
    oracle = MatteOracle(clip, size=SIDE)
    scores = {}
    for method in ("none", "guided"):
        s = _run(src, tmp_path / method, oracle, refine=method, refine_radius=RADIUS)
        scores[method] = clip_metrics(_read_sequence(s.outputs["soft.mask"]).astype(np.float32) / 65535, clip.alpha)
    none, guided = scores["none"], scores["guided"]
    assert guided["mad"] < 0.6 * none["mad"]
    assert guided["grad"] < 0.7 * none["grad"]
    assert guided["dtssd"] <= none["dtssd"]


def test_seed_variants_keep_their_exact_mask_and_get_a_refined_matte(matte_clip, tmp_path):
    clip, src = matte_clip
    oracle = MatteOracle(clip, size=SIDE)
    kw = dict(variants=["soft", "mixlab", "essentials", "masquerade"], outputs=["mask", "matte"], mask_format="png",
              matte_format="png")
    plain = _run(src, tmp_path / "plain", oracle, **kw)
    none = _run(src, tmp_path / "none", oracle, refine="none", **kw)
    guided = _run(src, tmp_path / "guided", oracle, refine="guided", refine_radius=RADIUS, choke=1, **kw)
    for name in ("soft", "mixlab", "essentials", "masquerade"):
        for kind in ("mask", "matte"):  # refine="none" is the default and changes nothing
            np.testing.assert_array_equal(_read_sequence(none.outputs[f"{name}.{kind}"]),
                                          _read_sequence(plain.outputs[f"{name}.{kind}"]))
        matte_none = _read_sequence(none.outputs[f"{name}.matte"])
        matte_guided = _read_sequence(guided.outputs[f"{name}.matte"])
        np.testing.assert_array_equal(matte_guided[..., :3], matte_none[..., :3])  # the colour is the frame's
        assert not np.array_equal(matte_guided[..., 3], matte_none[..., 3])  # every matte's alpha is refined
        mask_none = _read_sequence(none.outputs[f"{name}.mask"])
        mask_guided = _read_sequence(guided.outputs[f"{name}.mask"])
        if name == "soft":  # the soft variant's mask is the refined matte
            assert not np.array_equal(mask_guided, mask_none)
            np.testing.assert_array_equal(mask_guided, matte_guided[..., 3])
        else:  # a seed node's mask stays exactly the node's
            np.testing.assert_array_equal(mask_guided, mask_none)


def test_edge_controls_without_refinement(matte_clip, tmp_path):
    clip, src = matte_clip
    oracle = MatteOracle(clip, size=SIDE)
    base = _read_sequence(_run(src, tmp_path / "base", oracle).outputs["soft.mask"]).astype(np.int64)
    choked = _read_sequence(_run(src, tmp_path / "choke", oracle, choke=3).outputs["soft.mask"]).astype(np.int64)
    grown = _read_sequence(_run(src, tmp_path / "grow", oracle, choke=-3).outputs["soft.mask"]).astype(np.int64)
    assert choked.sum() < base.sum() < grown.sum()
    clipped = _read_sequence(_run(src, tmp_path / "levels", oracle, clip_black=0.2, clip_white=0.8)
                             .outputs["soft.mask"]).astype(np.int64)
    assert ((base <= 0.2 * 65535) <= (clipped == 0)).all() and ((base >= 0.8 * 65535) <= (clipped == 65535)).all()


def test_batched_equals_frame_by_frame(matte_clip, tmp_path):
    clip, src = matte_clip
    oracle = MatteOracle(clip, size=SIDE)
    kw = dict(refine="guided", refine_radius=RADIUS, choke=1.5, feather=1.0, clip_black=0.02, clip_white=0.98)
    one = _run(src, tmp_path / "b1", oracle, batch_size=1, **kw)
    many = _run(src, tmp_path / "b5", oracle, batch_size=5, **kw)
    np.testing.assert_array_equal(_read_sequence(many.outputs["soft.mask"]), _read_sequence(one.outputs["soft.mask"]))


@pytest.mark.parametrize("temporal", ["none", "ema"])
def test_segments_equal_one_pass(matte_clip, tmp_path, temporal):
    clip, src = matte_clip
    oracle = MatteOracle(clip, size=SIDE)
    kw = dict(prompt="object", segmenter=oracle, progress=False, batch_size=2, outputs=["mask", "matte"],
              mask_format="png16", matte_format="png", refine="guided", refine_radius=RADIUS, temporal=temporal)
    one = process_video(src, out_dir=tmp_path / "one", **kw)
    seg = process_segments(src, [(0, 2), (2, 6), (6, 8)], out_dir=tmp_path / "seg", overlap=2, **kw)
    for key in ("soft.mask", "soft.matte"):
        np.testing.assert_array_equal(_read_sequence(seg.outputs[key]), _read_sequence(one.outputs[key]))


def test_flags_and_pipeline_keys(tmp_path, matte_clip, capsys):
    pipe = tmp_path / "p.toml"
    pipe.write_text('prompt = "x"\nrefine = "guided"\nrefine_radius = 4.5\nchoke = -2\nfeather = 1.5\n'
                    'clip_black = 0.1\nclip_white = 0.9\n')
    s = load_pipeline(pipe)
    assert (s["refine"], s["refine_radius"], s["choke"], s["feather"], s["clip_black"], s["clip_white"]) == (
        "guided", 4.5, -2.0, 1.5, 0.1, 0.9)
    pipe.write_text('prompt = "x"\nrefine = "magic"\n')
    with pytest.raises(PipelineFileError, match="refine='magic'.*'none', 'guided'"):
        load_pipeline(pipe)
    _, src = matte_clip
    assert main(["run", str(src), "--prompt", "x", "--refine", "sharp"]) == 2
    err = capsys.readouterr().err
    assert "--refine" in err and "sharp" in err and "'guided'" in err
    assert main(["run", str(src), "--prompt", "x", "--choke", "1000"]) == 2
    assert "--choke" in capsys.readouterr().err


def test_clip_points_out_of_order_are_refused_before_any_work(matte_clip, tmp_path):
    clip, src = matte_clip
    with pytest.raises(ParameterError, match="clip_white"):
        _run(src, tmp_path / "bad", MatteOracle(clip, size=SIDE), clip_black=0.7, clip_white=0.3)
    assert not (tmp_path / "bad").exists()
