"""The ComfyUI node pack, called the way ComfyUI calls it (no ComfyUI needed)."""

from __future__ import annotations

import importlib.util
import inspect
import sys
import types
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from streammask import MaskPipeline, ParameterError
from streammask import comfy
from streammask.comfy import (
    NODE_CLASS_MAPPINGS,
    NODE_DISPLAY_NAME_MAPPINGS,
    StreamMaskEssentials,
    StreamMaskLoadCLIPSeg,
    StreamMaskMaskByText,
    StreamMaskMixlab,
    StreamMaskVideo,
    parse_variant_params,
)
from streammask.io.video import read_batches

from conftest import CARPHONE
from seed_reference import SEED_INPUT_TYPES as SEEDS

ENTRY_POINT = Path(__file__).resolve().parents[1] / "comfyui" / "streammask_nodes" / "__init__.py"

# The seeds' INPUT_TYPES (tests/seed_reference.py), less their model inputs (ours is the "clipseg" handle).
SEED_INPUT_TYPES = {
    cls: {group: {k: v for k, v in inputs.items() if k != "clip_seg"} for group, inputs in SEEDS[name].items()}
    for cls, name in ((StreamMaskMixlab, "mixlab"), (StreamMaskEssentials, "essentials"), (StreamMaskMaskByText, "masquerade"))
}
SEED_RETURNS = {
    StreamMaskMixlab: (("MASK", "IMAGE", "IMAGE"), ("Mask", "Heatmap Mask", "BW Mask")),
    StreamMaskEssentials: (("MASK",), None),
    StreamMaskMaskByText: (("IMAGE", "IMAGE"), ("thresholded_mask", "raw_mask")),
}
# Inputs a node adds to its seed's, each optional and defaulting to the seed's behaviour.
EXTRA_INPUTS = {
    StreamMaskMixlab: {},
    StreamMaskEssentials: {"clamp": False},
    StreamMaskMaskByText: {"normalize_scope": "batch", "model_size": "max_side"},
}


def comfy_kwargs(cls, **given):
    """Keyword arguments as ComfyUI builds them: every widget at its default, links and overrides from ``given``."""
    kwargs = {}
    for group in ("required", "optional"):
        for name, spec in cls.INPUT_TYPES().get(group, {}).items():
            kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            if name in given:
                kwargs[name] = given.pop(name)
            elif isinstance(kind, list):
                kwargs[name] = opts.get("default", kind[0])
            elif kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                kwargs[name] = opts.get("default", "" if kind == "STRING" else None)
            else:
                assert group == "optional", f"{cls.__name__}: required link {name!r} ({kind}) not given"
    assert not given, f"{cls.__name__} has no inputs {sorted(given)}"
    return kwargs


def call_node(cls, **given):
    node = cls()
    return getattr(node, cls.FUNCTION)(**comfy_kwargs(cls, **given))


@pytest.fixture(scope="module")
def clipseg(tiny_model_dir):
    (handle,) = call_node(StreamMaskLoadCLIPSeg, model=str(tiny_model_dir), device="cpu")
    return handle


@pytest.fixture(scope="module")
def image():
    """Three carphone frames as a ComfyUI IMAGE: (B, H, W, 3) float32 in [0, 1], as LoadImage makes them."""
    frames = next(read_batches(CARPHONE, batch_size=3)).frames
    return torch.from_numpy(frames.astype(np.float32) / 255.0)


# -- the pack ----------------------------------------------------------------------

def test_entry_point_loads_like_comfyui():
    # ComfyUI: spec_from_file_location(<folder name>, <folder>/__init__.py), registered in sys.modules
    spec = importlib.util.spec_from_file_location("streammask_nodes", ENTRY_POINT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["streammask_nodes"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["streammask_nodes"]
    assert module.NODE_CLASS_MAPPINGS is NODE_CLASS_MAPPINGS
    assert module.NODE_DISPLAY_NAME_MAPPINGS is NODE_DISPLAY_NAME_MAPPINGS
    assert set(NODE_CLASS_MAPPINGS) == set(NODE_DISPLAY_NAME_MAPPINGS) == {
        "StreamMaskLoadCLIPSeg", "StreamMaskMixlab", "StreamMaskEssentials", "StreamMaskMaskByText", "StreamMaskVideo"}
    assert "comfy" not in sys.modules and "folder_paths" not in sys.modules  # ComfyUI is never required


@pytest.mark.parametrize("name", sorted(NODE_CLASS_MAPPINGS))
def test_node_declaration(name):
    cls = NODE_CLASS_MAPPINGS[name]
    assert cls.__name__ == name
    assert cls.CATEGORY == "streammask"
    assert isinstance(cls.RETURN_TYPES, tuple) and len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    types_ = cls.INPUT_TYPES()
    assert set(types_) <= {"required", "optional"} and types_["required"]
    names = [n for group in types_.values() for n in group]
    assert len(names) == len(set(names))
    # the function accepts exactly these keyword arguments
    sig = inspect.signature(getattr(cls, cls.FUNCTION))
    sig.bind(None, **{n: None for n in names})
    for group in types_.values():
        for spec in group.values():
            if len(spec) > 1 and isinstance(spec[0], list):
                assert spec[1]["default"] in spec[0]
            if len(spec) > 1 and "min" in spec[1]:
                assert spec[1]["min"] <= spec[1]["default"] <= spec[1].get("max", float("inf"))
            if spec[0] == "INT":  # ComfyUI's INT widgets want ints, not 4.0
                assert all(type(spec[1][k]) is int for k in ("default", "min", "max", "step") if k in spec[1])


@pytest.mark.parametrize("cls", list(SEED_INPUT_TYPES), ids=lambda c: c.__name__)
def test_seed_inputs_reproduced(cls):
    seed, ours = SEED_INPUT_TYPES[cls], cls.INPUT_TYPES()
    for group, inputs in seed.items():
        for name, spec in inputs.items():
            assert name in ours[group], f"{name} is not a {group} input"
            mine = ours[group][name]
            assert mine[0] == spec[0], name
            for key, value in (spec[1] if len(spec) > 1 else {}).items():
                assert mine[1].get(key) == value and type(mine[1].get(key)) in (type(value), float), (name, key)
    # besides the seed's inputs: the model handle, and optional extras whose defaults keep the seed's behaviour
    assert ours["required"]["clipseg"] == ("STREAMMASK_CLIPSEG", ours["required"]["clipseg"][1])
    extra_required = set(ours["required"]) - set(seed["required"]) - {"clipseg"}
    assert not extra_required
    extras = {n: spec[1]["default"] for n, spec in ours.get("optional", {}).items() if n not in seed.get("optional", {})}
    assert extras == EXTRA_INPUTS[cls]
    return_types, return_names = SEED_RETURNS[cls]
    assert cls.RETURN_TYPES == return_types
    if return_names:
        assert cls.RETURN_NAMES == return_names


def test_inputs_come_from_param_declarations():
    from streammask.variants import VARIANTS

    nodes = ((StreamMaskMixlab, "mixlab"), (StreamMaskEssentials, "essentials"), (StreamMaskMaskByText, "masquerade"))
    for cls, variant in nodes:
        types_ = cls.INPUT_TYPES()
        flat = {**types_["required"], **types_.get("optional", {})}
        for p in VARIANTS[variant].params:
            if p.name == "output":  # masquerade: which mask the *video* outputs carry; the node returns both
                assert p.name not in flat
                continue
            kind, opts = p.comfy_input()
            if p.name == "model_size":  # the image node defaults to the seed's max_side, the video pipeline to 352
                opts = {**opts, "default": "max_side"}
            assert flat[p.name][0] == kind and flat[p.name][1]["tooltip"] == p.help
            assert {k: flat[p.name][1][k] for k in opts} == opts


# -- loader -----------------------------------------------------------------------

def test_loader_caches(tiny_model_dir, clipseg):
    (again,) = call_node(StreamMaskLoadCLIPSeg, model=str(tiny_model_dir), device="cpu", dtype="float32")
    assert again is clipseg  # cpu + auto resolves to float32: the same cache entry
    assert clipseg.device.type == "cpu" and clipseg.dtype == torch.float32
    (other,) = call_node(StreamMaskLoadCLIPSeg, model=str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert other is not clipseg and other.dtype == torch.bfloat16
    (q,) = call_node(StreamMaskLoadCLIPSeg, model=str(tiny_model_dir), device="cpu", dtype="int8")
    assert q is not clipseg and q.quantized == "int8" and q.dtype == torch.float32
    assert "int8" in StreamMaskLoadCLIPSeg.INPUT_TYPES()["required"]["dtype"][0]


@pytest.mark.parametrize("kwargs, name", [
    (dict(device="tpu"), "device"),
    (dict(dtype="float64"), "dtype"),
])
def test_loader_rejects(tiny_model_dir, kwargs, name):
    with pytest.raises(ParameterError, match=name):
        call_node(StreamMaskLoadCLIPSeg, model=str(tiny_model_dir), **kwargs)


# -- image nodes --------------------------------------------------------------------

def test_mixlab(clipseg, image):
    mask, heat, bw = call_node(StreamMaskMixlab, image=image, text="car", clipseg=clipseg)
    b, h, w = image.shape[:3]
    assert mask.shape == (b, h, w) and heat.shape == bw.shape == (b, h, w, 3)
    for t in (mask, heat, bw):
        assert t.dtype == torch.float32 and t.device.type == "cpu" and 0 <= t.min() and t.max() <= 1
        t.mul_(1.0)  # a normal tensor: ComfyUI nodes downstream may work in place
    assert torch.equal(mask, bw[..., 0]) and torch.equal(bw[..., 0], bw[..., 2])
    assert torch.equal(torch.round(mask * 255), mask * 255)  # 8-bit steps, like the seed's 'L' image
    # the same as the video pipeline on frames truncated to uint8, as the seed truncates
    frames = (image * 255).numpy().astype(np.uint8)
    ref = MaskPipeline(clipseg, prompt="car", variants=["mixlab"]).process(frames)["mixlab"]
    assert torch.equal(mask, ref.mask[:, 0])
    assert torch.equal(heat, ref.heatmap.permute(0, 2, 3, 1).float() / 255)


def test_essentials(clipseg, image):
    (mask,) = call_node(StreamMaskEssentials, image=image, prompt="car", clipseg=clipseg, smooth=4, dilate=-1, blur=3)
    assert mask.shape == image.shape[:3] and mask.dtype == torch.float32
    frames = image.mul(255).clamp(0, 255).byte()
    params = dict(threshold=0.4, smooth=4, dilate=-1, blur=3)
    ref = MaskPipeline(clipseg, prompt="car", variants={"essentials": params}).process(frames)["essentials"]
    assert torch.equal(mask, ref.mask[:, 0])
    (clamped,) = call_node(StreamMaskEssentials, image=image, prompt="car", clipseg=clipseg, clamp=True, blur=3)
    assert 0 <= clamped.min() and clamped.max() <= 1


@pytest.mark.parametrize("model_size", ["352", "max_side"])
def test_mask_by_text(clipseg, image, model_size):
    kw = dict(prompt="car|road", negative_prompt="sky", precision=0.3, model_size=model_size)
    thresholded, raw = call_node(StreamMaskMaskByText, image=image, clipseg=clipseg, **kw)
    assert thresholded.shape == raw.shape == image.shape[:3]  # (B, H, W) although typed IMAGE, as the seed
    assert set(thresholded.unique().tolist()) <= {0.0, 1.0} and 0 <= raw.min() and raw.max() <= 1
    assert torch.equal(thresholded, (raw >= 0.3).float())
    # an image from 8-bit frames: the float path equals the video pipeline on those uint8 frames
    frames = torch.round(image * 255).byte()
    params = dict(negative_prompt="sky", precision=0.3, model_size=model_size)
    ref = MaskPipeline(clipseg, prompt="car|road", variants={"masquerade": params}).process(frames)["masquerade"]
    assert torch.allclose(raw, ref.extra["raw_mask"][:, 0], atol=1e-6)


def test_mask_by_text_float_input_is_not_quantized(clipseg, image):
    shifted = (image + 0.4 / 255).clamp(0, 1)  # rounds back to the same uint8 frames
    a = call_node(StreamMaskMaskByText, image=image[:1], clipseg=clipseg, prompt="car", model_size="352")[1]
    b = call_node(StreamMaskMaskByText, image=shifted[:1], clipseg=clipseg, prompt="car", model_size="352")[1]
    assert not torch.equal(a, b)


def test_chunks_equal_one_batch(clipseg, image, monkeypatch):
    kw = dict(image=image, clipseg=clipseg)
    whole = [call_node(StreamMaskMixlab, text="car", **kw), call_node(StreamMaskEssentials, prompt="car", **kw),
             call_node(StreamMaskMaskByText, prompt="car", normalize="yes", **kw)]
    monkeypatch.setattr(comfy, "CHUNK_FRAMES", 2)
    chunked = [call_node(StreamMaskMixlab, text="car", **kw), call_node(StreamMaskEssentials, prompt="car", **kw),
               call_node(StreamMaskMaskByText, prompt="car", normalize="yes", **kw)]
    # CPU kernels round differently for different batch sizes (logits move by ~1e-5), which can move
    # an 8-bit output by a step or flip a pixel sitting on a threshold: allow that on a few pixels
    for outs_a, outs_b in zip(whole, chunked):
        for a, b in zip(outs_a, outs_b):
            assert a.shape == b.shape
            assert ((a - b).abs() <= 1e-5).float().mean() >= 0.999
    # normalize=yes is over the whole batch (the seed), not per chunk
    raw = chunked[2][1]
    assert raw.min() == 0 and raw.max() == 1
    assert any(raw[s].max() < 1 or raw[s].min() > 0 for s in (slice(0, 2), slice(2, 3)))


def test_mask_by_text_normalize_per_frame(clipseg, image):
    _, raw = call_node(StreamMaskMaskByText, image=image, clipseg=clipseg, prompt="car", normalize="yes",
                       normalize_scope="frame", model_size="352")
    assert torch.allclose(raw.amin(dim=(1, 2)), torch.zeros(len(raw))) and torch.allclose(raw.amax(dim=(1, 2)), torch.ones(len(raw)))


def test_image_layouts(clipseg, image):
    one = image[0]  # (H, W, 3): a single unbatched image
    (mask,) = call_node(StreamMaskEssentials, image=one, prompt="car", clipseg=clipseg)
    assert mask.shape == (1, *one.shape[:2])
    rgba = torch.cat([image[:2], torch.ones_like(image[:2, ..., :1])], dim=-1)
    (m4,) = call_node(StreamMaskEssentials, image=rgba, prompt="car", clipseg=clipseg)
    (m3,) = call_node(StreamMaskEssentials, image=image[:2], prompt="car", clipseg=clipseg)
    assert torch.equal(m3, m4)


class Interrupted(Exception):
    pass


def test_comfy_progress_and_cancel(clipseg, image, monkeypatch):
    # inside ComfyUI: its progress bar advances per chunk and its Cancel button stops between chunks
    updates, cancel_after = [], {"calls": 1}

    class ProgressBar:
        def __init__(self, total):
            updates.append(("total", total))

        def update(self, n):
            updates.append(("update", n))

    def throw_exception_if_processing_interrupted():
        cancel_after["calls"] -= 1
        if cancel_after["calls"] < 0:
            raise Interrupted

    pkg, utils, mm = types.ModuleType("comfy"), types.ModuleType("comfy.utils"), types.ModuleType("comfy.model_management")
    utils.ProgressBar = ProgressBar
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    pkg.utils, pkg.model_management = utils, mm
    for name, module in (("comfy", pkg), ("comfy.utils", utils), ("comfy.model_management", mm)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(comfy, "CHUNK_FRAMES", 1)
    with pytest.raises(Interrupted):
        call_node(StreamMaskEssentials, image=image[:2], prompt="car", clipseg=clipseg)
    assert updates == [("total", 2), ("update", 1)]


@pytest.mark.parametrize("cls, given, match", [
    (StreamMaskMixlab, dict(text="car", blur=16.0), "blur"),
    (StreamMaskMixlab, dict(text=""), "prompt"),
    (StreamMaskEssentials, dict(prompt="car", dilate=40), "dilate"),
    (StreamMaskMaskByText, dict(prompt="car", normalize="maybe"), "normalize"),
    (StreamMaskMaskByText, dict(prompt="  "), "prompt"),
    (StreamMaskEssentials, dict(prompt="car", image=torch.zeros(2, 3, 8, 8, dtype=torch.uint8)), "image"),
    (StreamMaskEssentials, dict(prompt="car", image=torch.zeros(2, 8, 8, 2)), "image"),
    (StreamMaskEssentials, dict(prompt="car", clipseg="not a model"), "clipseg"),
])
def test_bad_inputs(clipseg, image, cls, given, match):
    given = {"image": image[:1], "clipseg": clipseg, **given}
    with pytest.raises(ParameterError, match=match):
        call_node(cls, **given)


# -- video node ---------------------------------------------------------------------

def count_frames(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return len(frames), frames[0].width, frames[0].height


def test_video_node_writes_playable_files(clipseg, carphone, tmp_path):
    mask, heatmap, matte = call_node(
        StreamMaskVideo, clipseg=clipseg, video=str(carphone), prompt="car", variant="mixlab",
        variant_params="blur = 1.5\nthreshold=0.2; dilation_factor = '2'", out_dir=str(tmp_path / "out"),
        max_frames=10, progress=False)
    assert [Path(p).name for p in (mask, heatmap, matte)] == [
        "carphone.mixlab.mask.mp4", "carphone.mixlab.heatmap.mp4", "carphone.mixlab.matte.mov"]
    for path in (mask, heatmap, matte):
        assert count_frames(Path(path)) == (10, 176, 144)
    # only the outputs asked for; the others come back empty
    mask2, heatmap2, matte2 = call_node(
        StreamMaskVideo, clipseg=clipseg, video=str(carphone), prompt="car", variant="masquerade",
        variant_params="negative_prompt = sky", outputs="mask", out_dir=str(tmp_path / "out"), max_frames=3,
        mask_format="ffv1", progress=False)
    assert heatmap2 == matte2 == "" and Path(mask2).name == "carphone.masquerade.mask.mkv"
    assert count_frames(Path(mask2))[0] == 3


def test_video_node_comfy_folders(clipseg, carphone, tmp_path, monkeypatch):
    # inside ComfyUI, relative paths are under its input / output folders
    fake = types.ModuleType("folder_paths")
    fake.get_input_directory = lambda: str(carphone.parent)
    fake.get_output_directory = lambda: str(tmp_path / "comfy-output")
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    assert StreamMaskVideo.IS_CHANGED(video=carphone.name) != ""
    (mask, _, _) = call_node(StreamMaskVideo, clipseg=clipseg, video=carphone.name, prompt="car", outputs="mask",
                             out_dir="masks", max_frames=2, progress=False)
    assert Path(mask).parent == tmp_path / "comfy-output" / "masks"


def test_parse_variant_params():
    assert parse_variant_params("", "mixlab") == {"blur": 3.0, "threshold": 0.3, "dilation_factor": 4}
    assert parse_variant_params("binary = yes; dilate=-2", "soft")["dilate"] == -2
    assert parse_variant_params("negative_prompt = 'sky|trees'\nnormalize=yes", "masquerade")["negative_prompt"] == "sky|trees"
    with pytest.raises(ParameterError, match="a known key for mixlab in variant_params"):
        parse_variant_params("sigma = 2", "mixlab")
    with pytest.raises(ParameterError, match="name = value"):
        parse_variant_params("blur 2", "mixlab")
    with pytest.raises(ParameterError, match="mixlab.blur"):
        parse_variant_params("blur = 99", "mixlab")


def test_video_node_rejects(clipseg, tmp_path):
    with pytest.raises(ParameterError, match="video"):
        call_node(StreamMaskVideo, clipseg=clipseg, prompt="car", out_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError):
        call_node(StreamMaskVideo, clipseg=clipseg, video=str(tmp_path / "missing.mp4"), prompt="car",
                  out_dir=str(tmp_path))
    with pytest.raises(ParameterError, match="outputs"):
        call_node(StreamMaskVideo, clipseg=clipseg, video=str(CARPHONE), prompt="car", outputs="mask,alpha",
                  out_dir=str(tmp_path))
