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
    # separate instances are joined across segments (tests below): not refused
    assert check_segments_for_tracker({"instances": "separate"}, {"temporal": "none"}, handover=True) is None


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
    """A stateful segmenter with scripted instances (16x16 logits): by default id 1 visible in frames 0-3 and retired
    after frame 7; id 2 appears at frame 5 and stays. ``visible``: ``{id: frames it is visible in}``, ``retired``:
    ``{frame: ids retired after it}``. Its stream's state (the frame count) is handed over like SAM 3's."""

    stateful = True
    supported_variants = ("soft",)
    variants_note = "scripted"
    device = torch.device("cpu")
    dtype = torch.float32
    size = 16
    name = "scripted"

    def __init__(self, visible: dict[int, range] | None = None, retired: dict[int, list[int]] | None = None) -> None:
        self.visible = visible or {1: range(0, 4), 2: range(5, 10 ** 6)}
        self.retired = retired if retired is not None else {7: [1]}

    def open_stream(self):
        return ScriptedStream(self.visible, self.retired)


class ScriptedStream:
    def __init__(self, visible: dict[int, range], retired: dict[int, list[int]]) -> None:
        self.visible, self.retired = visible, retired
        self.n = 0
        self.last_instances: list[FrameInstances] = []

    def segment(self, frames, prompts, *, preprocess="pil", size=None):
        out = torch.full((len(frames), len(prompts), 16, 16), -20.0)
        self.last_instances = []
        for b in range(len(frames)):
            n = self.n
            ids = sorted(i for i, frames in self.visible.items() if n in frames)
            logits = torch.full((len(ids), 16, 16), -8.0)
            for k, obj_id in enumerate(ids):
                logits[k, 2:8, 2 + 6 * (obj_id - 1):8 + 6 * (obj_id - 1)] = 8.0
            if ids:
                out[b, 0] = logits.amax(0)
            self.last_instances.append(FrameInstances(
                frame=n, ids=ids, prompts=["person"] * len(ids), scores=[0.9] * len(ids),
                tracker_scores=[0.8] * len(ids), logits=logits, retired=list(self.retired.get(n, [])),
                raw_logits=logits))
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
    with pytest.raises(ParameterError, match=r"^soft.invert=True .*compositor"):  # absent = the whole picture
        process_video(synthetic_clip, segmenter=tiny_sam3, prompt="person", instances="separate",
                      variants={"soft": {"invert": True}}, out_dir=tmp_path / "d", **FAST)
    assert not (tmp_path / "d").exists()


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


# -- separate instances in segments: each id's track joined as one pass writes it -----------------------------------

_LOSSY = (".mp4", ".webm")


def _video_frames(path: Path) -> tuple[list[int], list[np.ndarray]]:
    """pts and frames of a video output as decoded (8 or 16 bits, with alpha where there is one)."""
    with av.open(str(path)) as c:
        out = []
        for f in c.decode(video=0):
            name = f.format.name
            fmt = ("gray" if name == "gray" else "rgba64le" if name.startswith("yuva444p1") else
                   "rgba" if name.startswith("yuva") else "rgb24")
            out.append((f.pts, f.to_ndarray(format=fmt)))
    return [p for p, _ in out], [a for _, a in out]


def _assert_same_outputs(one: Path, seg: Path) -> None:
    """Every output of the one-pass folder ``one`` equals the segment-split one's: sequences file for file
    (byte-identical images, frames.csv, sequence.json), lossless videos frame for frame with the same pts, lossy
    ones with the same pts and close frames, the sidecar as JSON."""
    names = sorted(p.name for p in one.iterdir() if not p.name.startswith("."))  # not a batch's done record
    assert names == sorted(p.name for p in seg.iterdir() if not p.name.startswith("."))
    assert not (seg / ".segments").exists()
    for name in names:
        a, b = one / name, seg / name
        if a.is_dir():
            files = sorted(p.name for p in a.iterdir())
            assert files == sorted(p.name for p in b.iterdir()), name
            for f in files:
                assert (a / f).read_bytes() == (b / f).read_bytes(), f"{name}/{f}"
        elif name.endswith(".json"):
            assert json.loads(a.read_text()) == json.loads(b.read_text())
        else:
            a_pts, a_frames = _video_frames(a)
            b_pts, b_frames = _video_frames(b)
            assert a_pts == b_pts and len(a_frames) == len(b_frames), name
            for i, (x, y) in enumerate(zip(a_frames, b_frames)):
                if name.endswith(_LOSSY) and "heatmap" not in name:  # encoded per segment: close, not identical
                    mse = np.mean((x.astype(float) - y.astype(float)) ** 2)
                    assert mse == 0 or 10 * np.log10((np.iinfo(x.dtype).max ** 2) / mse) > 30, f"{name} frame {i}"
                elif not name.endswith(_LOSSY):
                    assert np.array_equal(x, y), f"{name} frame {i}"


@pytest.mark.parametrize("formats", [
    dict(mask_format="ffv1", matte_format="png"),
    dict(mask_format="png16", matte_format="prores", matte_style="solid"),
    dict(mask_format="tiff16", matte_format="exr"),
    dict(mask_format="png", matte_format="tiff16", matte_style="premultiplied"),
    dict(mask_format="mp4", matte_format="webm"),
    dict(mask_format="h265", matte_format="png16", matte_style="background", background="VIDEO"),
])
def test_separate_segments_join_each_track_as_one_pass(tmp_path, formats):
    """Scripted instances over 24 frames, split into 4 segments on the batch grid ([0, 6), [6, 12), [12, 18),
    [18, 24)): id 1 (visible in frames 0-5) is retired after frame 14, in the middle of the third segment; id 2
    first appears at frame 8, in the second segment, and is not seen in frames 15-16; id 3 first appears at frame
    19, in the last segment, so its track's empty start reaches back over three segments. Every output format of
    the tracks joins to the one-pass files."""
    clip = write_synthetic_clip(tmp_path / "synthetic.mp4", frames=24)
    if formats.get("background") == "VIDEO":  # addressed by the clip's frame index (7 frames: it wraps around)
        formats = {**formats, "background": write_gop_clip(tmp_path / "bg.mp4", frames=7, gop=4, size=(64, 48))}
    # (retired after frame 14, not 13: libx265 sometimes gives a 2-frame stream's first packet a garbage dts)
    script = dict(visible={1: range(0, 6), 2: [*range(8, 15), *range(17, 24)], 3: range(19, 24)}, retired={14: [1]})
    kw = dict(prompt="person", instances="separate", outputs=("mask", "heatmap", "matte"), batch_size=2,
              **formats, **FAST)
    one = process_video(clip, segmenter=ScriptedSam3(**script), out_dir=tmp_path / "one", **kw)
    seg = process_segments(clip, [(0, 6), (6, 12), (12, 18), (18, 24)], out_dir=tmp_path / "seg",
                           segmenter=ScriptedSam3(**script), **kw)
    assert sorted(seg.outputs) == sorted(one.outputs) == ["instances", "soft.heatmap", "soft.id1.mask",
                                                          "soft.id1.matte", "soft.id2.mask", "soft.id2.matte",
                                                          "soft.id3.mask", "soft.id3.matte"]
    assert seg.frames == 24
    _assert_same_outputs(tmp_path / "one", tmp_path / "seg")
    # what the join had to get right, read from the joined files: id 1 ends at its retirement (15 frames), ids 2
    # and 3 run over the whole clip, with the clip's timestamps
    src = _source_pts(clip, 24)
    lengths = {1: 15, 2: 24, 3: 24}
    for obj_id, n in lengths.items():
        track = seg.outputs[f"soft.id{obj_id}.mask"]
        if track.is_dir():
            rows = (track / "frames.csv").read_text().splitlines()[1:]
            assert [int(r.split(",")[2]) for r in rows] == src[:n]
        else:
            with av.open(str(track)) as c:
                times = [f.time for f in c.decode(video=0)]
            assert np.allclose(times, [float(p * Fraction(1, 30000)) for p in src[:n]], atol=1e-3)  # mkv: ms
            _, masks = _decode(track)
            if formats["mask_format"] == "ffv1":
                shown = [i for i in range(n) if i in script["visible"][obj_id]]
                assert [i for i in range(n) if masks[i].max() > 128] == shown
    side = json.loads(seg.outputs["instances"].read_text())
    assert side["ids"]["1"] == {"prompt": "person", "first_frame": 0, "last_frame": 5, "frames_visible": 6}
    assert side["ids"]["2"] == {"prompt": "person", "first_frame": 8, "last_frame": 23, "frames_visible": 14}
    assert side["ids"]["3"] == {"prompt": "person", "first_frame": 19, "last_frame": 23, "frames_visible": 5}
    assert [f["pts"] for f in side["frames"]] == src and [f["frame"] for f in side["frames"]] == list(range(24))


def test_separate_segments_with_the_tiny_model(tmp_path, tiny_sam3):
    """Real tracking (random weights, the tracker handed over): the tiny model finds ids 0 and 1 in frame 0 and
    ids 2 and 3 in frame 1, so with a first segment of one frame two ids first appear in the second segment;
    4 segments give the one-pass tracks and sidecar."""
    clip = write_gop_clip(tmp_path / "gop.mp4", frames=16, gop=4, size=(64, 48))
    # no heatmap (H.264 only; tested above): a one-frame H.264 segment cannot be remuxed after the encoder's delay
    kw = dict(segmenter=tiny_sam3, prompt="person|car", instances="separate", outputs=("mask", "matte"),
              mask_format="ffv1", matte_format="png", batch_size=1, threads=1, **FAST)
    one = process_video(clip, out_dir=tmp_path / "one", **kw)
    side = json.loads(one.outputs["instances"].read_text())
    firsts = {int(k): v["first_frame"] for k, v in side["ids"].items()}
    assert 0 in firsts.values() and 1 in firsts.values(), firsts  # an id first seen in the second segment
    seg = process_segments(clip, [(0, 1), (1, 7), (7, 12), (12, 16)], out_dir=tmp_path / "seg", **kw)
    assert sorted(seg.outputs) == sorted(one.outputs)
    _assert_same_outputs(tmp_path / "one", tmp_path / "seg")
    shown = 0
    for obj_id in firsts:  # tracks from the clip's first frame, empty where the sidecar does not list the id
        matte = seg.outputs[f"soft.id{obj_id}.matte"]  # PNG, straight alpha: the alpha is the mask
        rows = (matte / "frames.csv").read_text().splitlines()[1:]
        assert [int(r.split(",")[2]) for r in rows] == _source_pts(clip, 16)
        alpha = _png_track(matte)[..., 3]
        listed = [any(o["id"] == obj_id for o in f["objects"]) for f in side["frames"]]
        assert all(a.max() == 0 for a, x in zip(alpha, listed) if not x) and listed[0] == (firsts[obj_id] == 0)
        shown += int(alpha.max() > 0)
    assert shown, "the tiny model's tracks are not all empty"


def test_separate_segment_ranges_with_warm_up_are_refused(tmp_path, synthetic_clip):
    from streammask.pipeline.ranges import FrameRange

    with pytest.raises(ParameterError, match="frame_range=.*without warm-up"):
        process_video(synthetic_clip, segmenter=ScriptedSam3(), prompt="person", instances="separate",
                      out_dir=tmp_path / "w", frame_range=FrameRange(4, 8, warmup_start=2, exact=True), **FAST)
    assert not (tmp_path / "w").exists()


def test_separate_outputs_do_not_depend_on_batches_or_the_segment_grid(tmp_path):
    """A frame an object is not listed in is written empty (and not tinted) whatever batch it is in: one pass with
    batches of 1 and of 4 write the same files (a straight matte keeps no colour under alpha 0 where the object
    is not), and segments whose boundaries are off the batch grid ([0, 5), [5, 11), ..., what `streammask batch`
    plans when no batch size is given) join to the same files too."""
    clip = write_synthetic_clip(tmp_path / "synthetic.mp4", frames=24)
    script = dict(visible={1: range(0, 6), 2: [*range(8, 15), *range(17, 24)], 3: range(19, 24)}, retired={13: [1]})
    kw = dict(prompt="person", instances="separate", outputs=("mask", "heatmap", "matte"), mask_format="png",
              matte_format="png", matte_style="straight", **FAST)
    process_video(clip, segmenter=ScriptedSam3(**script), out_dir=tmp_path / "b1", batch_size=1, **kw)
    process_video(clip, segmenter=ScriptedSam3(**script), out_dir=tmp_path / "b4", batch_size=4, **kw)
    process_segments(clip, [(0, 5), (5, 11), (11, 17), (17, 24)], out_dir=tmp_path / "seg", batch_size=4,
                     segmenter=ScriptedSam3(**script), **kw)
    _assert_same_outputs(tmp_path / "b1", tmp_path / "b4")
    _assert_same_outputs(tmp_path / "b1", tmp_path / "seg")
    straight = _png_track(tmp_path / "b4" / "synthetic.soft.id2.matte")
    assert straight[:8].max() == 0 and straight[15:17].max() == 0 and straight[8].max() == 255


def test_cli_batch_splits_separate_instances_into_segments(tmp_path, tiny_sam3_dir, capsys, monkeypatch):
    """`streammask batch --segment-seconds ... --instances separate` (the local engine: segments one after another,
    the tracker handed over) writes the per-object tracks, overlay and sidecar of `streammask run`."""
    import streammask.batch.local as local

    calls = []

    def spy(source, ranges, **kw):
        calls.append((list(ranges), kw["instances"]))
        return process_segments(source, ranges, **kw)

    monkeypatch.setattr(local, "process_segments", spy)
    clip = write_gop_clip(tmp_path / "clips" / "gop.mp4", frames=16, gop=4, size=(64, 48))
    common = ["--model", str(tiny_sam3_dir), "--prompt", "person|car", "--device", "cpu", "--instances", "separate",
              "--mask-format", "ffv1", "--matte-format", "png", "--threads", "1", "--no-progress"]
    assert main(["run", str(clip), "-o", str(tmp_path / "run"), *common]) == 0, capsys.readouterr().err
    assert main(["batch", str(clip), "-o", str(tmp_path / "batch"), "--segment-seconds", "0.2", *common]) == 0, \
        capsys.readouterr().err
    report = [json.loads(line) for line in (tmp_path / "batch" / "streammask-report.jsonl").read_text().splitlines()]
    assert [r["status"] for r in report] == ["ok"] and any(".id" in k for k in report[0]["outputs"])
    assert len(calls) == 1 and len(calls[0][0]) == 3 and calls[0][1] == "separate"  # 16 frames, ~6 per segment
    _assert_same_outputs(tmp_path / "run", tmp_path / "batch" / "gop")


def test_joins_refuse_parts_that_do_not_follow(tmp_path):
    """The sidecar join: frames must follow across parts, a part must be complete; the track join: a track's parts
    must be consecutive segments. Each failure is an OutputError and leaves no joined file."""
    from streammask.batch.segments import join_instances
    from streammask.errors import OutputError
    from streammask.io.instances import InstanceSidecar, join_sidecars

    def sidecar(name, frames, *, close=True):
        side = InstanceSidecar(tmp_path / name, width=64, height=48, frame_rate=Fraction(30), time_base=Fraction(1, 30),
                               header={"source": "x.mp4"})
        for f in frames:
            side.write_frame(f, f, [{"id": 1, "prompt": "person", "score": 0.9, "tracker_score": 0.8,
                                     "box": [0, 0, 3, 3]}] if f % 2 else [])
        if close:
            return side.close()
        side._file.flush()
        return side.tmp

    a, b = sidecar("a.json", range(0, 3)), sidecar("b.json", range(3, 5))
    joined = join_sidecars([a, b], tmp_path / "ab.json")
    doc = json.loads(joined.read_text())
    assert [f["frame"] for f in doc["frames"]] == [0, 1, 2, 3, 4]
    assert doc["ids"] == {"1": {"prompt": "person", "first_frame": 1, "last_frame": 3, "frames_visible": 2}}
    with pytest.raises(OutputError, match="frame 0 does not follow frame 4"):
        join_sidecars([b, a], tmp_path / "ba.json")
    unfinished = sidecar("c.json", range(5, 7), close=False)
    with pytest.raises(OutputError, match="unfinished"):
        join_sidecars([a, b, unfinished], tmp_path / "abc.json")
    assert not (tmp_path / "ba.json").exists() and not (tmp_path / "abc.json").exists()
    assert [p.name for p in tmp_path.glob(".*")] == [".c.partial.json"]  # c.json's own, unfinished
    with pytest.raises(OutputError, match=r"soft.id1.mask: it is missing from segment\(s\) \[1\]"):
        join_instances([{"instances": a, "soft.id1.mask": tmp_path / "p0"}, {"instances": b},
                        {"instances": b, "soft.id1.mask": tmp_path / "p2"}], tmp_path / "out", start_times=[0, 1, 2])
