"""SAM 3 through the pipeline: process_video / the CLI / batches / segments / the live preview, union and separate
instances (per-object tracks, the overlay, the JSON sidecar)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from streammask import ParameterError, process_video
from streammask.errors import OutputExistsError
from streammask.batch.segments import check_segments_for_tracker, process_segments
from streammask.cli import main
from streammask.model.sam3 import FrameInstances

from conftest import CARPHONE, write_gop_clip, write_synthetic_clip

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(progress=False, device="cpu")


def _decode(path: Path, fmt: str = "gray") -> tuple[list[int], np.ndarray]:
    with av.open(str(path)) as c:
        frames = [(f.pts, f.to_ndarray(format=fmt)) for f in c.decode(video=0)]
    return [p for p, _ in frames], np.stack([a for _, a in frames])


def _source_pts(path: Path, n: int) -> list[int]:
    with av.open(str(path)) as c:
        return [f.pts for _, f in zip(range(n), c.decode(video=0))]


def _png_track(folder: Path) -> np.ndarray:
    """A PNG-sequence mask track as (N, H, W) uint8."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


# -- union ----------------------------------------------------------------------------------------------------------

def test_real_clip_every_output_kind(tmp_path, tiny_sam3):
    """The bundled carphone clip (176x144, 29.97 fps): mask, heatmap and matte, every frame with its source pts."""
    n = 12
    summary = process_video(CARPHONE, segmenter=tiny_sam3, prompt="person|car", out_dir=tmp_path / "out",
                            max_frames=n, **FAST)
    assert summary.frames == n and summary.batch_size == tiny_sam3.preferred_batch_size
    assert sorted(summary.outputs) == ["soft.heatmap", "soft.mask", "soft.matte"]
    src = _source_pts(CARPHONE, n)
    for key, path in summary.outputs.items():
        pts, frames = _decode(path, "gray" if key.endswith("mask") else "rgb24")
        assert pts == src, key
        assert frames.shape[1:3] == (144, 176)
    _, masks = _decode(summary.outputs["soft.mask"])
    assert masks.max() > 128  # the calibrated random model finds instances, so the mask is not empty


@pytest.mark.parametrize("options", [
    dict(temporal="ema", ema_alpha=0.5, mask_format="ffv1", matte_format="png", matte_style="premultiplied"),
    dict(temporal="flow", mask_format="png16", outputs=("mask",), soft={"threshold": 0.5, "binary": True}),
    dict(stride=2, outputs=("mask", "heatmap"), matte_style="solid"),
])
def test_union_with_temporal_formats_and_styles(tmp_path, tiny_sam3, synthetic_clip, options):
    options = dict(options)
    variants = {"soft": options.pop("soft")} if "soft" in options else ("soft",)
    summary = process_video(synthetic_clip, segmenter=tiny_sam3, prompt="person", out_dir=tmp_path / "o",
                            variants=variants, **options, **FAST)
    assert summary.frames == 12 and summary.outputs


def test_seed_variants_are_refused_with_the_reason(tmp_path, tiny_sam3, synthetic_clip):
    with pytest.raises(ParameterError, match="'soft' with Sam3Segmenter: mixlab, essentials and masquerade"):
        process_video(synthetic_clip, segmenter=tiny_sam3, prompt="person", variants=("soft", "mixlab"),
                      out_dir=tmp_path / "o", **FAST)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("instances", ["union", "separate"])
def test_cli_streams_the_real_clip_with_every_output_kind(tmp_path, tiny_sam3_dir, carphone, capsys, instances):
    """`streammask run carphone.mp4 --model TINY_SAM3 --prompt person --instances ...`: every output kind, each with
    the clip's frames and source timestamps; separate: a mask and a matte track per id of the sidecar."""
    n = 8
    out = tmp_path / "cli"
    code = main(["run", str(carphone), "--model", str(tiny_sam3_dir), "--prompt", "person|car", "--device", "cpu",
                 "--instances", instances, "--sam3-max-objects", "3", "--max-frames", str(n), "-o", str(out),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    src = _source_pts(carphone, n)
    names = sorted(p.name for p in out.iterdir())
    if instances == "union":
        assert names == ["carphone.soft.heatmap.mp4", "carphone.soft.mask.mp4", "carphone.soft.matte.mov"]
    else:
        side = json.loads((out / "carphone.sam3.instances.json").read_text())
        ids = sorted(int(i) for i in side["ids"])
        assert ids and len(side["frames"]) == n
        assert names == sorted(["carphone.sam3.instances.json", "carphone.soft.heatmap.mp4"]
                               + [f"carphone.soft.id{i}.{k}" for i in ids for k in ("mask.mp4", "matte.mov")])
    for name in names:
        if name.endswith((".mp4", ".mov")):
            assert _decode(out / name, "rgb24")[0] == src, name


# -- segments, batches, the preview ---------------------------------------------------------------------------------

def test_segments_hand_the_tracker_over_and_equal_one_pass(tmp_path, tiny_sam3):
    clip = write_gop_clip(tmp_path / "gop.mp4", frames=16, gop=4, size=(64, 48))
    # threads fixed: a tuned count may differ between the two runs, and SAM 3's logits differ in their last bits
    # with the thread count (the tracker's decisions can amplify that); bit-identity needs the same arithmetic
    kw = dict(segmenter=tiny_sam3, prompt="person|car", outputs=("mask",), mask_format="ffv1", batch_size=4,
              threads=1, **FAST)
    one = process_video(clip, out_dir=tmp_path / "one", **kw)
    seg = process_segments(clip, [(0, 8), (8, 16)], out_dir=tmp_path / "seg", **kw)
    a_pts, a = _decode(one.outputs["soft.mask"])
    b_pts, b = _decode(seg.outputs["soft.mask"])
    assert len(a) == len(b) == 16 and np.array_equal(a, b)


def test_segments_refused_where_ids_cannot_carry(tmp_path):
    with pytest.raises(ParameterError, match="Ray"):
        check_segments_for_tracker({"segment_seconds": 60}, {"temporal": "none"}, handover=False)
    with pytest.raises(ParameterError, match="look-ahead"):
        check_segments_for_tracker({}, {"temporal": "median", "window": 5, "window_align": "centered"}, handover=True)
    with pytest.raises(ParameterError, match="instances"):
        check_segments_for_tracker({"instances": "separate"}, {"temporal": "none"}, handover=True)


def test_ray_engine_refuses_sam3_segments_before_starting(tiny_sam3_dir):
    from streammask.batch.ray import run_ray

    with pytest.raises(ParameterError, match="segment_seconds"):
        run_ray([], base={"model": str(tiny_sam3_dir), "revision": None}, record=lambda r: None,
                options={"segment_seconds": 1.0})


def test_ray_actor_loads_sam3_and_runs_whole_clips(tmp_path, tiny_sam3_dir, synthetic_clip):
    """The Ray engine's actor class (called directly here: Ray itself is not needed to run it) loads SAM 3 by the
    model's config, with the batch's SAM 3 options, and processes a whole clip."""
    from streammask.batch.ray import MaskWorker
    from streammask.model.sam3 import Sam3Segmenter

    worker = MaskWorker(str(tiny_sam3_dir), None, "cpu", "auto", {"sam3_max_objects": 2, "sam3_forget_after": 50})
    assert isinstance(worker.segmenter, Sam3Segmenter) and worker.segmenter.max_objects == 2
    done = worker.run(str(synthetic_clip), str(tmp_path / "ray"), {"prompt": "person", "outputs": ("mask",)})
    assert done["frames"] == 12 and list(done["outputs"]) == ["soft.mask"]


def test_local_batch_with_sam3(tmp_path, tiny_sam3, synthetic_clip):
    from streammask import run_batch

    (tmp_path / "b").mkdir()
    second = write_synthetic_clip(tmp_path / "b" / "second.mp4", frames=6)
    report = run_batch([synthetic_clip, second], out_dir=tmp_path / "batch", segmenter=tiny_sam3, prompt="person",
                       outputs=["mask"], progress=False, device="cpu")
    assert [r.status for r in report.results] == ["ok", "ok"]


def test_live_preview_runs_sam3(tmp_path, tiny_sam3, synthetic_clip):
    from streammask.preview.session import PreviewSession

    summary = PreviewSession(synthetic_clip, prompt="person", segmenter=tiny_sam3, no_window=True,
                             record=str(tmp_path / "rec")).run()
    assert summary.processed == 12 and summary.recordings


# -- separate instances ---------------------------------------------------------------------------------------------

class ScriptedSam3:
    """A stateful segmenter with scripted instances (16x16 logits): id 1 visible in frames 0-3 and retired after
    frame 7; id 2 appears at frame 5 and stays. Its stream records what it is asked."""

    stateful = True
    supported_variants = ("soft",)
    variants_note = "scripted"
    device = torch.device("cpu")
    dtype = torch.float32
    size = 16
    name = "scripted"

    def open_stream(self):
        return ScriptedStream()


class ScriptedStream:
    def __init__(self) -> None:
        self.n = 0
        self.last_instances: list[FrameInstances] = []

    def segment(self, frames, prompts, *, preprocess="pil", size=None):
        out = torch.full((len(frames), len(prompts), 16, 16), -20.0)
        self.last_instances = []
        for b in range(len(frames)):
            n = self.n
            ids = [i for i, shown in ((1, n <= 3), (2, n >= 5)) if shown]
            logits = torch.full((len(ids), 16, 16), -8.0)
            for k, obj_id in enumerate(ids):
                logits[k, 2:8, 2 + 6 * (obj_id - 1):8 + 6 * (obj_id - 1)] = 8.0
            if ids:
                out[b, 0] = logits.amax(0)
            self.last_instances.append(FrameInstances(
                frame=n, ids=ids, prompts=["person"] * len(ids), scores=[0.9] * len(ids),
                tracker_scores=[0.8] * len(ids), logits=logits, retired=[1] if n == 7 else [], raw_logits=logits))
            self.n += 1
        return out

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        self.n = state["n"]


def test_separate_tracks_start_at_the_first_frame_and_end_at_retirement(tmp_path, synthetic_clip):
    out = tmp_path / "sep"
    summary = process_video(synthetic_clip, segmenter=ScriptedSam3(), prompt="person", out_dir=out,
                            instances="separate", mask_format="png", matte_format="png", batch_size=4, **FAST)
    assert sorted(summary.outputs) == ["instances", "soft.heatmap", "soft.id1.mask", "soft.id1.matte",
                                       "soft.id2.mask", "soft.id2.matte"]
    one, two = _png_track(out / "synthetic.soft.id1.mask"), _png_track(out / "synthetic.soft.id2.mask")
    # id 1: frames 0-7 (retired after frame 7), visible in 0-3; id 2: all 12 frames, empty before it appeared
    assert len(one) == 8 and len(two) == 12
    assert [int(f.max()) for f in one] == [255] * 4 + [0] * 4
    assert [int(f.max()) for f in two] == [0] * 5 + [255] * 7
    seq = json.loads((out / "synthetic.soft.id2.mask" / "sequence.json").read_text())
    assert Fraction(seq["frame_rate"]) == Fraction(30000, 1001)
    alpha = _png_track(out / "synthetic.soft.id2.matte")[..., 3]
    assert np.array_equal(alpha, two)  # the matte's alpha is the track's mask, transparent before it appeared
    pts, heat = _decode(summary.outputs["soft.heatmap"], "rgb24")
    assert len(heat) == 12 and pts == _source_pts(synthetic_clip, 12)
    side = json.loads(summary.outputs["instances"].read_text())
    assert side["frame_rate"] == "30000/1001" and len(side["frames"]) == 12
    assert [[o["id"] for o in f["objects"]] for f in side["frames"]] == \
        [[1]] * 4 + [[]] + [[2]] * 7
    assert side["frames"][5]["pts"] == pts[5]
    assert side["ids"]["1"] == {"prompt": "person", "first_frame": 0, "last_frame": 3, "frames_visible": 4}
    assert side["ids"]["2"]["first_frame"] == 5
    # the box: id 2's square, logits 8 in rows 2-7 and columns 8-13 of 16, at the 64x48 frame size
    x0, y0, x1, y1 = side["frames"][6]["objects"][0]["box"]
    assert 28 <= x0 <= 32 and 52 <= x1 <= 56 and 4 <= y0 <= 8 and 22 <= y1 <= 26


def test_a_failed_separate_run_leaves_nothing_that_looks_finished(tmp_path, synthetic_clip):
    """id 1's track is finished (renamed) when the object is retired after frame 7; a run that fails later removes
    it with the rest."""
    def cancel(done, total):
        if done >= 12:
            raise RuntimeError("cancelled")

    out = tmp_path / "failed"
    with pytest.raises(RuntimeError, match="cancelled"):
        process_video(synthetic_clip, segmenter=ScriptedSam3(), prompt="person", out_dir=out, instances="separate",
                      outputs=("mask",), batch_size=4, on_batch=cancel, **FAST)
    assert not out.exists()


def test_separate_with_the_tiny_model(tmp_path, tiny_sam3, synthetic_clip):
    """Real tracking (random weights): every id in the sidecar has a full-length track, empty exactly where the
    sidecar does not list it."""
    out = tmp_path / "real"
    summary = process_video(synthetic_clip, segmenter=tiny_sam3, prompt="person|car", out_dir=out,
                            instances="separate", mask_format="png", outputs=("mask",), **FAST)
    side = json.loads(summary.outputs["instances"].read_text())
    assert side["ids"], "the tiny model tracks something in 12 frames"
    for obj_id in side["ids"]:
        track = _png_track(out / f"synthetic.soft.id{obj_id}.mask")
        assert len(track) == 12
        listed = [any(o["id"] == int(obj_id) for o in f["objects"]) for f in side["frames"]]
        assert all(f.max() == 0 for f, x in zip(track, listed) if not x)
        assert any(f.max() >= 128 for f, x in zip(track, listed) if x)


def test_separate_refusals(tmp_path, tiny_model_dir, tiny_sam3, synthetic_clip):
    with pytest.raises(ParameterError, match="instances='separate' is not allowed.*CLIPSeg"):
        process_video(synthetic_clip, model=str(tiny_model_dir), prompt="person", instances="separate",
                      out_dir=tmp_path / "a", **FAST)
    with pytest.raises(ParameterError, match="temporal"):
        process_video(synthetic_clip, segmenter=tiny_sam3, prompt="person", instances="separate", temporal="ema",
                      out_dir=tmp_path / "b", **FAST)
    with pytest.raises(ParameterError, match="stride"):
        process_video(synthetic_clip, segmenter=tiny_sam3, prompt="person", instances="separate", stride=2,
                      out_dir=tmp_path / "c", **FAST)


def test_separate_refuses_existing_outputs_and_overwrite_removes_stale_tracks(tmp_path, synthetic_clip):
    out = tmp_path / "again"
    out.mkdir()
    stale = out / "synthetic.soft.id9.mask.mp4"
    stale.write_bytes(b"old")
    kw = dict(segmenter=ScriptedSam3(), prompt="person", out_dir=out, instances="separate", outputs=("mask",),
              batch_size=4, **FAST)
    with pytest.raises(OutputExistsError, match="id9"):
        process_video(synthetic_clip, **kw)
    summary = process_video(synthetic_clip, overwrite=True, **kw)
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir()) == ["synthetic.sam3.instances.json", "synthetic.soft.id1.mask.mp4",
                                                     "synthetic.soft.id2.mask.mp4"]
    assert summary.frames == 12
