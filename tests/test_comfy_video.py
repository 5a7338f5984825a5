"""The ComfyUI video nodes, called the way ComfyUI calls them (ComfyUI's modules stood in for: tests/comfy_fakes.py).

``tests/test_comfy_server.py`` runs the same nodes inside a real ComfyUI server.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import sys
import types
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import comfy_fakes
from conftest import CARPHONE, write_synthetic_clip
from PIL import Image

from streammask import MaskPipeline, ParameterError, process_video
from streammask import comfy
from streammask.comfy import StreamMaskLoadCLIPSeg, StreamMaskVideo, StreamMaskVideoFrames
from streammask.io.video import read_batches
from streammask.refine import MatteRefiner
from test_comfy import call_node, comfy_kwargs, count_frames


@pytest.fixture(scope="module")
def clipseg(tiny_model_dir):
    (handle,) = call_node(StreamMaskLoadCLIPSeg, model_path=str(tiny_model_dir), device="cpu")
    return handle


@pytest.fixture(scope="module")
def video_frames():
    """Carphone's first 20 frames as a video loader gives them: (B, H, W, 3) float32 = uint8 / 255."""
    frames = next(read_batches(CARPHONE, batch_size=20)).frames
    return frames, torch.from_numpy(frames.astype(np.float32) / 255.0)


@pytest.fixture
def comfy_base(tmp_path, monkeypatch):
    base = tmp_path / "ComfyUI"
    comfy_fakes.install(monkeypatch, base)
    return base


def one_pass(clipseg, frames_u8, variant="soft", params=None, refiner=None, **temporal):
    """The reference: the video pipeline's stream path over all frames in one call, then its flush."""
    pipe = MaskPipeline(clipseg, prompt="car", variants={variant: params or {}}, refiner=refiner, **temporal)
    masks, heats = {}, {}
    for results, x, idx in (pipe.process_stream(frames_u8, list(range(len(frames_u8)))), pipe.flush_stream()):
        if idx:
            out = results[variant]
            heat = pipe.render(x, out, ["heatmap"])["heatmap"]
            for k, i in enumerate(idx):
                masks[i], heats[i] = out.mask[k, 0], torch.from_numpy(heat[k]).float() / 255
    n = len(frames_u8)
    return torch.stack([masks[i] for i in range(n)]), torch.stack([heats[i] for i in range(n)])


# -- IMAGE batch: the frames of a loaded video ---------------------------------------------

@pytest.mark.parametrize("variant, variant_params, temporal", [
    ("soft", "", dict(temporal="ema", ema_alpha=0.3)),
    ("mixlab", "blur = 1", dict(temporal="median", window=5)),  # centered: looks 2 frames ahead, flushed at the end
    ("essentials", "", dict(temporal="none")),
    ("masquerade", "negative_prompt = sky", dict(temporal="hysteresis")),
])
def test_frames_node_is_the_video_pipeline(clipseg, video_frames, monkeypatch, variant, variant_params, temporal):
    u8, images = video_frames
    monkeypatch.setattr(comfy, "CHUNK_FRAMES", 6)  # 20 frames in 4 chunks: smoothing crosses chunk borders
    mask, heat = call_node(StreamMaskVideoFrames, clipseg=clipseg, images=images, prompt="car", variant=variant,
                           variant_params=variant_params, **temporal)
    assert mask.shape == (20, 144, 176) and heat.shape == (20, 144, 176, 3)  # as many frames as came in
    assert mask.dtype == heat.dtype == torch.float32 and 0 <= heat.min() and heat.max() <= 1
    ref_mask, ref_heat = one_pass(clipseg, u8, variant, comfy.parse_variant_params(variant_params, variant), **temporal)
    # chunks vs one batch: CPU kernels round differently per batch size (logits move by ~1e-5)
    assert ((mask - ref_mask).abs() <= 1e-4).float().mean() >= 0.999
    assert ((heat - ref_heat).abs() <= 1.5 / 255).float().mean() >= 0.999


class MetaBatch:
    """What the node reads of VideoHelperSuite's Meta Batch Manager: ``has_closed_inputs`` (set with the last chunk)."""

    def __init__(self) -> None:
        self.has_closed_inputs = False


def test_frames_node_carries_smoothing_across_meta_batch_chunks(clipseg, video_frames):
    u8, images = video_frames
    node = StreamMaskVideoFrames()  # ComfyUI keeps one instance per node across the executions of a meta batch
    kw = dict(clipseg=clipseg, prompt="car", variant="soft", temporal="ema", ema_alpha=0.3)
    manager = MetaBatch()
    chunks = []
    for s in (slice(0, 7), slice(7, 14), slice(14, 20)):
        manager.has_closed_inputs = s.stop == 20
        chunks.append(getattr(node, node.FUNCTION)(**comfy_kwargs_for(images=images[s], meta_batch=manager, **kw)))
    mask = torch.cat([c[0] for c in chunks])
    ref_mask, _ = one_pass(clipseg, u8, temporal="ema", ema_alpha=0.3)
    assert ((mask - ref_mask).abs() <= 1e-4).float().mean() >= 0.999
    # without the carry, the second chunk starts afresh: visibly different
    fresh = call_node(StreamMaskVideoFrames, images=images[7:14], **kw)[0]
    assert (fresh - ref_mask[7:14]).abs().max() > 1e-3
    # after the last chunk the state is dropped: the next meta batch starts afresh
    assert node._carry is None
    manager.has_closed_inputs = False
    again = getattr(node, node.FUNCTION)(**comfy_kwargs_for(images=images[0:7], meta_batch=manager, **kw))[0]
    assert ((again - ref_mask[0:7]).abs() <= 1e-4).float().mean() >= 0.999


def test_frames_node_refines_the_soft_mask_as_the_pipeline_does(clipseg, video_frames, monkeypatch):
    u8, images = video_frames
    monkeypatch.setattr(comfy, "CHUNK_FRAMES", 6)
    settings = dict(refine="guided", refine_radius=3.0, choke=1.0, feather=1.5)
    mask, _ = call_node(StreamMaskVideoFrames, clipseg=clipseg, images=images, prompt="car", variant="soft", **settings)
    plain, _ = call_node(StreamMaskVideoFrames, clipseg=clipseg, images=images, prompt="car", variant="soft")
    ref_mask, _ = one_pass(clipseg, u8, refiner=MatteRefiner(**settings))
    assert ((mask - ref_mask).abs() <= 1e-4).float().mean() >= 0.999
    assert (mask - plain).abs().mean() > 1 / 255  # the refinement reached the mask


def test_frames_node_refuses_refinement_a_seed_mask_would_not_show(clipseg, video_frames):
    with pytest.raises(ParameterError, match="^refine='guided'.*'mixlab'"):
        call_node(StreamMaskVideoFrames, clipseg=clipseg, images=video_frames[1][:2], prompt="car", variant="mixlab",
                  refine="guided")
    with pytest.raises(ParameterError, match="^refine='none'.*'essentials'"):  # an edge control alone: refused too
        call_node(StreamMaskVideoFrames, clipseg=clipseg, images=video_frames[1][:2], prompt="car",
                  variant="essentials", choke=2.0)


def comfy_kwargs_for(**given):
    from test_comfy import comfy_kwargs

    return comfy_kwargs(StreamMaskVideoFrames, **given)


@pytest.mark.parametrize("given, match", [
    (dict(temporal="median"), "^temporal='median"),  # centered window + meta batch: would need the next chunk
    (dict(variant_params="blur = 99", variant="mixlab"), "mixlab.blur"),
    (dict(prompt=""), "^prompt=''"),
    (dict(images=torch.zeros(2, 3, 8, 8, dtype=torch.uint8)), "^images="),
])
def test_frames_node_rejects(clipseg, video_frames, given, match):
    given = {"images": video_frames[1][:2], "prompt": "car", "variant": "soft", "meta_batch": MetaBatch(), **given}
    with pytest.raises(ParameterError, match=match):
        call_node(StreamMaskVideoFrames, clipseg=clipseg, **given)


# -- the streaming file node ---------------------------------------------------------------

def run_video(clipseg, **given):
    return call_node(StreamMaskVideo, clipseg=clipseg, **{"prompt": "car", "progress": False, **given})


def test_video_node_file_picker_outputs_and_preview(clipseg, comfy_base):
    shutil.copy(CARPHONE, comfy_base / "input" / "carphone.mp4")
    (comfy_base / "input" / "notes.txt").write_text("not a video")
    choices, opts = StreamMaskVideo.INPUT_TYPES()["required"]["video_file"]
    assert choices == ["none", "carphone.mp4"] and opts["video_upload"] is True  # core Load Video's picker
    out = run_video(clipseg, video_file="carphone.mp4", out_dir="masks", max_frames=6, unique_id="7")
    mask_path, heatmap_path, matte_path, mask, heatmap, matte, instances_path = out["result"]
    assert instances_path == ""  # the SAM 3 sidecar's path: none with CLIPSeg
    folder = comfy_base / "output" / "masks"
    assert [Path(p) for p in (mask_path, heatmap_path, matte_path)] == [
        folder / "carphone.soft.mask.mp4", folder / "carphone.soft.heatmap.mp4", folder / "carphone.soft.matte.mov"]
    # VIDEO outputs: ComfyUI's VideoFromFile of each file (for Save Video, Get Video Components)
    assert [v.get_stream_source() for v in (mask, heatmap, matte)] == [mask_path, heatmap_path, matte_path]
    # the preview: the videos a browser plays, in ComfyUI's output folder (the ProRes .mov is not one)
    assert out["ui"] == {"images": [{"filename": "carphone.soft.heatmap.mp4", "subfolder": "masks", "type": "output"},
                                    {"filename": "carphone.soft.mask.mp4", "subfolder": "masks", "type": "output"}],
                         "animated": (True,)}
    for path in (mask_path, heatmap_path, matte_path):
        assert count_frames(Path(path)) == (6, 176, 144)


def test_video_node_takes_comfy_video(clipseg, comfy_base, tmp_path):
    # a VIDEO backed by a file (core Load Video): streamed from that file
    out = run_video(clipseg, video=comfy_fakes.VideoFromFile(str(CARPHONE)), outputs="mask", max_frames=4,
                    out_dir="a")["result"]
    assert Path(out[0]) == comfy_base / "output" / "a" / "carphone_pristine.soft.mask.mp4"
    assert isinstance(out[4], comfy_fakes.ExecutionBlocker) and "heatmap output was not written" in out[4].message
    # a VIDEO held in memory: written to a temporary file in ComfyUI's temp folder, removed afterwards
    in_memory = comfy_fakes.VideoFromFile(io.BytesIO(CARPHONE.read_bytes()))
    out = run_video(clipseg, video=in_memory, outputs="mask", max_frames=4, out_dir="b")["result"]
    assert Path(out[0]).name == "video.soft.mask.mp4" and count_frames(Path(out[0]))[0] == 4

    class FramesVideo:  # Create Video's VideoFromComponents: no stream source, save_to writes a file
        def get_stream_source(self):
            raise ValueError("cannot write MP4 to a buffer without a format")

        def save_to(self, path, **_):
            shutil.copy(CARPHONE, path)

    out = run_video(clipseg, video=FramesVideo(), outputs="mask", max_frames=4, out_dir="c")["result"]
    assert count_frames(Path(out[0]))[0] == 4
    assert list((comfy_base / "temp").iterdir()) == []
    # the VIDEO wins over the other sources; an image sequence is no VIDEO
    out = run_video(clipseg, video=comfy_fakes.VideoFromFile(str(CARPHONE)), video_path="missing.mp4",
                    outputs="mask", mask_format="png", max_frames=2, out_dir="d")["result"]
    assert Path(out[0]).is_dir() and "writes a folder of images" in out[3].message


def test_video_node_runs_again_when_an_output_is_gone(clipseg, comfy_base):
    from test_comfy import comfy_kwargs

    shutil.copy(CARPHONE, comfy_base / "input" / "clip.mp4")
    # ComfyUI calls IS_CHANGED with the widget values (connected inputs are None there), then the node with all
    kw = comfy_kwargs(StreamMaskVideo, clipseg=None, unique_id="12", video_file="clip.mp4", prompt="car",
                      outputs="mask,heatmap", out_dir="o", max_frames=3, progress=False)
    before = StreamMaskVideo.IS_CHANGED(**kw)
    out = StreamMaskVideo().run(**dict(kw, clipseg=clipseg))["result"]
    after = StreamMaskVideo.IS_CHANGED(**kw)
    assert before == after != ""  # the run itself does not invalidate ComfyUI's cache
    Path(out[1]).unlink()  # the user deletes an output: ComfyUI must run the node again, not return the cached paths
    changed = StreamMaskVideo.IS_CHANGED(**kw)
    assert isinstance(changed, float) and math.isnan(changed)
    assert StreamMaskVideo.IS_CHANGED(**dict(kw, unique_id="13")) == before  # another node's record is its own
    assert StreamMaskVideo.IS_CHANGED(**dict(kw, max_frames=4)) == before  # and so is another setting's
    StreamMaskVideo().run(**dict(kw, clipseg=clipseg))
    assert StreamMaskVideo.IS_CHANGED(**kw) == before
    (comfy_base / "input" / "clip.mp4").write_bytes(CARPHONE.read_bytes()[:-10])  # the input changes
    assert StreamMaskVideo.IS_CHANGED(**kw) != before


def test_video_node_temporal_smoothing(clipseg, carphone, tmp_path):
    out = run_video(clipseg, video_path=str(carphone), outputs="mask", mask_format="ffv1", max_frames=8,
                    out_dir=str(tmp_path / "o"), temporal="median", window=3)["result"]
    assert count_frames(Path(out[0]))[0] == 8  # look-ahead frames flushed at the end


@pytest.mark.parametrize("given, error, match", [
    (dict(), ParameterError, "^video=None is not allowed: expected a connected VIDEO input, a video_path"),
    (dict(video_path="missing.mp4"), FileNotFoundError, "missing.mp4"),
    (dict(video_path=str(CARPHONE), outputs="mask,alpha"), ParameterError, "^outputs="),
    (dict(video_path=str(CARPHONE), temporal="blur"), ParameterError, "^temporal="),
])
def test_video_node_rejects(clipseg, tmp_path, given, error, match):
    with pytest.raises(error, match=match) as err:
        run_video(clipseg, out_dir=str(tmp_path), **given)
    assert "--" not in str(err.value)


# -- SAM 3 --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sam3(tiny_sam3_dir):
    (handle,) = call_node(StreamMaskLoadCLIPSeg, model_path=str(tiny_sam3_dir), device="cpu")
    return handle


def decode(path: Path, fmt: str = "gray") -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format=fmt) for f in c.decode(video=0)])


@pytest.mark.usefixtures("one_thread")
def test_frames_node_runs_sam3_as_one_tracker(sam3, video_frames, monkeypatch):
    """SAM 3 over an IMAGE batch in chunks of 3: one tracker sees the frames in order, so the masks equal one
    pass of the pipeline; a new tracker per chunk (what a pipeline per chunk would do) gives other masks."""
    u8, images = video_frames[0][:8], video_frames[1][:8]
    monkeypatch.setattr(comfy, "CHUNK_FRAMES", 3)
    kw = dict(clipseg=sam3, prompt="person|car", variant="soft")
    mask, heat = call_node(StreamMaskVideoFrames, images=images, **kw)
    assert mask.shape == (8, 144, 176) and heat.shape == (8, 144, 176, 3)
    pipe = MaskPipeline(sam3, prompt="person|car")
    ref = pipe.process_stream(u8, list(range(8)))[0]["soft"].mask[:, 0]
    assert (mask - ref).abs().max() <= 1e-5 and ref.max() > 0.5  # the tiny model finds instances
    chunked = torch.cat([call_node(StreamMaskVideoFrames, images=images[s], **kw)[0]
                         for s in (slice(0, 3), slice(3, 6), slice(6, 8))])
    assert (chunked[3:] - ref[3:]).abs().max() > 0.1  # a fresh tracker at frame 3 is visibly not the same
    # a Meta Batch Manager's chunks (one execution each) carry the tracker over: one pass again
    node, manager = StreamMaskVideoFrames(), MetaBatch()
    parts = []
    for s in (slice(0, 3), slice(3, 8)):
        manager.has_closed_inputs = s.stop == 8
        parts.append(getattr(node, node.FUNCTION)(**comfy_kwargs_for(images=images[s], meta_batch=manager, **kw))[0])
    assert (torch.cat(parts) - ref).abs().max() <= 1e-5


def test_frames_node_refuses_seed_variants_with_sam3(sam3, video_frames):
    with pytest.raises(ParameterError, match="^variant='mixlab' is not allowed: expected 'soft' with Sam3Segmenter: "
                                             "mixlab, essentials and masquerade reproduce ComfyUI CLIPSeg nodes"):
        call_node(StreamMaskVideoFrames, clipseg=sam3, images=video_frames[1][:2], prompt="car", variant="mixlab")


@pytest.mark.usefixtures("one_thread")
def test_video_node_sam3_union_is_the_pipeline(sam3, carphone, tmp_path):
    out = run_video(sam3, video_path=str(carphone), prompt="person|car", outputs="mask,heatmap", mask_format="ffv1",
                    max_frames=6, out_dir=str(tmp_path / "node"))["result"]
    assert out[2] == "" and out[6] == ""  # no matte asked for; no sidecar with instances = union
    ref = process_video(carphone, segmenter=sam3, prompt="person|car", outputs=("mask",), mask_format="ffv1",
                        max_frames=6, out_dir=tmp_path / "ref", progress=False)
    mask = decode(Path(out[0]))
    assert mask.shape == (6, 144, 176) and mask.max() > 128
    assert np.array_equal(mask, decode(ref.outputs["soft.mask"]))


@pytest.mark.usefixtures("one_thread")
def test_video_node_sam3_separate_tracks_and_sidecar(sam3, comfy_base):
    shutil.copy(CARPHONE, comfy_base / "input" / "clip.mp4")
    n = 8
    kw = dict(video_file="clip.mp4", prompt="person|car", instances="separate", sam3_max_objects=3, max_frames=n,
              out_dir="sep")
    out = run_video(sam3, unique_id="5", **kw)
    mask_paths, heatmap_path, matte_paths, mask, heatmap, matte, sidecar = out["result"]
    folder = comfy_base / "output" / "sep"
    assert Path(sidecar) == folder / "clip.sam3.instances.json"
    side = json.loads(Path(sidecar).read_text())
    ids = sorted(int(i) for i in side["ids"])
    assert 2 <= len(ids) and len(side["frames"]) == n
    # mask_path / matte_path: one track per id, one path per line, in id order, each as long as the clip
    assert mask_paths.split("\n") == [str(folder / f"clip.soft.id{i}.mask.mp4") for i in ids]
    assert matte_paths.split("\n") == [str(folder / f"clip.soft.id{i}.matte.mov") for i in ids]
    for path in mask_paths.split("\n") + matte_paths.split("\n"):
        assert count_frames(Path(path)) == (n, 176, 144)
    assert Path(heatmap_path) == folder / "clip.soft.heatmap.mp4" and heatmap.get_stream_source() == heatmap_path
    for blocked, kind in ((mask, "mask"), (matte, "matte")):
        assert isinstance(blocked, comfy_fakes.ExecutionBlocker) and f"one {kind} track per object id" in blocked.message
    # the ids are stable: each listed from its first to its last frame of the sidecar, its track empty where
    # the sidecar does not list it; at most sam3_max_objects at once (the handle itself keeps its 16)
    per_frame = [[o["id"] for o in f["objects"]] for f in side["frames"]]
    assert max(len(f) for f in per_frame) <= 3 and sam3.max_objects == 16
    for obj_id in ids:
        seen = [i for i, f in enumerate(per_frame) if obj_id in f]
        entry = side["ids"][str(obj_id)]
        assert (entry["first_frame"], entry["last_frame"], entry["frames_visible"]) == (seen[0], seen[-1], len(seen))
        track = decode(folder / f"clip.soft.id{obj_id}.mask.mp4")
        assert all(track[i].max() < 16 for i in range(n) if i not in seen)  # empty (lossy: near 0)
        assert any(track[i].max() >= 128 for i in seen)  # (a listed mask may be positive below pixel size)
    # the same run again: the same ids and tracks (the node replaces its own outputs), nothing stale left
    again = run_video(sam3, unique_id="5", **kw)["result"]
    assert again[0] == mask_paths and json.loads(Path(again[6]).read_text())["ids"] == side["ids"]
    assert StreamMaskVideo.IS_CHANGED(**comfy_kwargs(StreamMaskVideo, clipseg=None, unique_id="5", progress=False,
                                                     **kw)) != ""
    Path(sidecar).unlink()  # a written file is gone, the sidecar included: ComfyUI must run the node again
    changed = StreamMaskVideo.IS_CHANGED(**comfy_kwargs(StreamMaskVideo, clipseg=None, unique_id="5",
                                                        progress=False, **kw))
    assert isinstance(changed, float) and math.isnan(changed)
    # with a cap of one object, never more than one listed per frame
    one = run_video(sam3, **dict(kw, sam3_max_objects=1, out_dir="one"))["result"]
    assert max(len(f["objects"]) for f in json.loads(Path(one[6]).read_text())["frames"]) == 1
    assert len(one[0].split("\n")) < len(ids) or len(ids) == 1


def test_video_node_separate_needs_sam3(clipseg, carphone, tmp_path):
    with pytest.raises(ParameterError, match="^instances='separate' is not allowed: expected 'union' with this model"):
        run_video(clipseg, video_path=str(carphone), instances="separate", out_dir=str(tmp_path))


# -- refinement ---------------------------------------------------------------------------------

@pytest.mark.usefixtures("one_thread")
def test_video_node_refinement_reaches_the_pipeline(clipseg, carphone, tmp_path):
    """refine / choke / feather on the node change the written mask and matte exactly as process_video's do."""
    common = dict(video_path=str(carphone), outputs="mask,matte", mask_format="ffv1", matte_format="png",
                  max_frames=3)
    plain = run_video(clipseg, out_dir=str(tmp_path / "plain"), **common)["result"]
    refined = run_video(clipseg, out_dir=str(tmp_path / "refined"), refine="guided", refine_radius=3.0, choke=1.5,
                        feather=1.0, **common)["result"]
    ref = process_video(carphone, segmenter=clipseg, prompt="car", outputs=("mask", "matte"), mask_format="ffv1",
                        matte_format="png", max_frames=3, out_dir=tmp_path / "ref", progress=False,
                        refine="guided", refine_radius=3.0, choke=1.5, feather=1.0)
    plain_mask, mask = decode(Path(plain[0])), decode(Path(refined[0]))
    assert np.abs(mask.astype(int) - plain_mask.astype(int)).mean() > 1.0  # an effect, not a no-op
    assert np.array_equal(mask, decode(ref.outputs["soft.mask"]))
    alpha = lambda folder: np.stack([np.asarray(Image.open(f))[..., 3] for f in sorted(Path(folder).glob("*.png"))])
    assert np.array_equal(alpha(refined[2]), alpha(ref.outputs["soft.matte"]))
    assert not np.array_equal(alpha(refined[2]), alpha(plain[2]))
    with pytest.raises(ParameterError, match="^clip_white=0.2 is not allowed: expected a number above clip_black"):
        run_video(clipseg, out_dir=str(tmp_path / "bad"), clip_black=0.5, clip_white=0.2, **common)


# -- memory: a long clip through the streaming node ------------------------------------------

def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the RSS from /proc (Linux)")
def test_video_node_memory_stays_flat_on_a_long_clip(clipseg, tmp_path, monkeypatch):
    """640 frames at 320x240 through the streaming node, RSS read after every batch: after the first
    batches (model, encoders and queues warmed up) it stays within a few MB. The frames alone are
    147 MB as uint8 and 590 MB as a ComfyUI IMAGE batch (what a loader that holds every frame needs)."""
    frames, (w, h) = 640, (320, 240)
    clip = write_synthetic_clip(tmp_path / "long.mp4", frames=frames, size=(w, h))
    samples: list[tuple[int, float]] = []

    class ProgressBar:  # ComfyUI's progress bar: called after every batch
        def __init__(self, total):
            self.done = 0

        def update(self, n):
            self.done += n
            samples.append((self.done, rss_mb()))

    utils, mm = types.ModuleType("comfy.utils"), types.ModuleType("comfy.model_management")
    utils.ProgressBar = ProgressBar
    mm.throw_exception_if_processing_interrupted = lambda: None
    pkg = types.ModuleType("comfy")
    pkg.utils, pkg.model_management = utils, mm
    for name, module in (("comfy", pkg), ("comfy.utils", utils), ("comfy.model_management", mm)):
        monkeypatch.setitem(sys.modules, name, module)
    out = run_video(clipseg, video_path=str(clip), outputs="mask,heatmap", out_dir=str(tmp_path / "out"))["result"]
    assert count_frames(Path(out[0]))[0] == frames and samples[-1][0] == frames
    warm = max(r for done, r in samples if done <= frames // 8)
    late = max(r for done, r in samples if done > frames // 8)
    print(f"\nRSS: {samples[0][1]:.0f} MB after the first batch, {warm:.0f} MB at most over the first {frames // 8} "
          f"frames, {late:.0f} MB at most over the other {frames - frames // 8} frames (decoded frames: "
          f"{frames * w * h * 3 / 2**20:.0f} MB as uint8, {frames * w * h * 3 * 4 / 2**20:.0f} MB as float)")
    assert late - warm < 40, samples[::32]
