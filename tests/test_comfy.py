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

from streammask import MaskPipeline, ModelLoadError, ParameterError, SourceNotFoundError
from streammask import comfy
from streammask.comfy import (
    NODE_CLASS_MAPPINGS,
    NODE_DISPLAY_NAME_MAPPINGS,
    StreamMaskEssentials,
    StreamMaskLoadCLIPSeg,
    StreamMaskMaskByText,
    StreamMaskMixlab,
    StreamMaskVideo,
    StreamMaskVideoFrames,
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
# Outputs a node adds after its seed's: the masks a seed returns typed IMAGE, typed MASK.
EXTRA_RETURNS = {StreamMaskMixlab: (), StreamMaskEssentials: (), StreamMaskMaskByText: ("MASK", "MASK")}
# Inputs a node adds to its seed's, each optional and defaulting to the seed's behaviour.
EXTRA_INPUTS = {
    StreamMaskMixlab: {},
    StreamMaskEssentials: {"clamp": False},
    StreamMaskMaskByText: {"normalize_scope": "batch", "model_size": "max_side"},
}


def comfy_kwargs(cls, **given):
    """Keyword arguments as ComfyUI builds them: every widget at its default, links and overrides from ``given``."""
    kwargs = {}
    for name in cls.INPUT_TYPES().get("hidden", {}):
        if name in given:
            kwargs[name] = given.pop(name)
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
    (handle,) = call_node(StreamMaskLoadCLIPSeg, model_path=str(tiny_model_dir), device="cpu")
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
        "StreamMaskLoadCLIPSeg", "StreamMaskMixlab", "StreamMaskEssentials", "StreamMaskMaskByText",
        "StreamMaskVideoFrames", "StreamMaskVideo"}
    assert "comfy" not in sys.modules and "folder_paths" not in sys.modules  # ComfyUI is never required


@pytest.mark.parametrize("name", sorted(NODE_CLASS_MAPPINGS))
def test_node_declaration(name):
    cls = NODE_CLASS_MAPPINGS[name]
    assert cls.__name__ == name
    # where users look for masks: the seeds use essentials/segmentation and mixlab's Mask
    assert cls.CATEGORY == ("mask/segmentation/video" if "Video" in name else "mask/segmentation")
    assert "StreamMask" in NODE_DISPLAY_NAME_MAPPINGS[name]
    assert isinstance(cls.RETURN_TYPES, tuple) and len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    types_ = cls.INPUT_TYPES()
    assert set(types_) <= {"required", "optional", "hidden"} and types_["required"]
    names = [n for group in types_.values() for n in group]
    assert len(names) == len(set(names))
    # the function accepts exactly these keyword arguments
    sig = inspect.signature(getattr(cls, cls.FUNCTION))
    sig.bind(None, **{n: None for n in names})
    for group in (types_["required"], types_.get("optional", {})):
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
    assert cls.RETURN_TYPES == return_types + EXTRA_RETURNS[cls]
    if return_names:
        assert cls.RETURN_NAMES[:len(return_names)] == return_names


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
    (again,) = call_node(StreamMaskLoadCLIPSeg, model_path=str(tiny_model_dir), device="cpu", dtype="float32")
    assert again is clipseg  # cpu + auto resolves to float32: the same cache entry
    assert clipseg.device.type == "cpu" and clipseg.dtype == torch.float32
    (other,) = call_node(StreamMaskLoadCLIPSeg, model_path=str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert other is not clipseg and other.dtype == torch.bfloat16
    (q,) = call_node(StreamMaskLoadCLIPSeg, model_path=str(tiny_model_dir), device="cpu", dtype="int8")
    assert q is not clipseg and q.quantized == "int8" and q.dtype == torch.float32
    assert "int8" in StreamMaskLoadCLIPSeg.INPUT_TYPES()["required"]["dtype"][0]


@pytest.mark.parametrize("kwargs, name", [
    (dict(device="tpu"), "device"),
    (dict(dtype="float64"), "dtype"),
])
def test_loader_rejects(tiny_model_dir, kwargs, name):
    with pytest.raises(ParameterError, match=name):
        call_node(StreamMaskLoadCLIPSeg, model_path=str(tiny_model_dir), **kwargs)


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
    thresholded, raw, thresholded_mask, raw_mask = call_node(StreamMaskMaskByText, image=image, clipseg=clipseg, **kw)
    assert thresholded.shape == raw.shape == image.shape[:3]  # (B, H, W) although typed IMAGE, as the seed
    # the same masks typed MASK, as copies (a node working in place on one pair leaves the other alone)
    assert torch.equal(thresholded_mask, thresholded) and torch.equal(raw_mask, raw)
    assert thresholded_mask.data_ptr() != thresholded.data_ptr() and raw_mask.data_ptr() != raw.data_ptr()
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
    _, raw, _, _ = call_node(StreamMaskMaskByText, image=image, clipseg=clipseg, prompt="car", normalize="yes",
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
    (StreamMaskMixlab, dict(text=""), "^text=''"),  # the node's input name, not the library's "prompt"
    (StreamMaskEssentials, dict(prompt="car", dilate=40), "dilate"),
    (StreamMaskMaskByText, dict(prompt="car", normalize="maybe"), "normalize"),
    (StreamMaskMaskByText, dict(prompt="  "), "prompt"),
    (StreamMaskEssentials, dict(prompt="car", image=torch.zeros(2, 3, 8, 8, dtype=torch.uint8)), "image"),
    (StreamMaskEssentials, dict(prompt="car", image=torch.zeros(2, 8, 8, 2)), "image"),
    (StreamMaskEssentials, dict(prompt="car", clipseg="not a model"),
     r"^clipseg='str' is not allowed: expected a CLIPSeg or a SAM 3 model: the output of a Load CLIPSeg / SAM 3"),
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
    # outside ComfyUI: the paths (the VIDEO outputs need ComfyUI; tests/test_comfy_video.py stands it in)
    out = call_node(
        StreamMaskVideo, clipseg=clipseg, video_path=str(carphone), prompt="car", variant="mixlab",
        variant_params="blur = 1.5\nthreshold=0.2; dilation_factor = '2'", out_dir=str(tmp_path / "out"),
        max_frames=10, progress=False)
    assert "ui" not in out  # no preview without ComfyUI's output folder
    mask, heatmap, matte = out["result"][:3]
    assert out["result"][3:] == (None, None, None, "")  # the VIDEOs need ComfyUI; no sidecar without SAM 3
    assert [Path(p).name for p in (mask, heatmap, matte)] == [
        "carphone.mixlab.mask.mp4", "carphone.mixlab.heatmap.mp4", "carphone.mixlab.matte.mov"]
    for path in (mask, heatmap, matte):
        assert count_frames(Path(path)) == (10, 176, 144)
    # only the outputs asked for; the others come back empty
    mask2, heatmap2, matte2 = call_node(
        StreamMaskVideo, clipseg=clipseg, video_path=str(carphone), prompt="car", variant="masquerade",
        variant_params="negative_prompt = sky", outputs="mask", out_dir=str(tmp_path / "out"), max_frames=3,
        mask_format="ffv1", progress=False)["result"][:3]
    assert heatmap2 == matte2 == "" and Path(mask2).name == "carphone.masquerade.mask.mkv"
    assert count_frames(Path(mask2))[0] == 3


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


# -- the pack as ComfyUI-Manager installs it: the repository itself in custom_nodes/ -----------

REPO = Path(__file__).resolve().parents[1]


def test_repository_is_the_node_pack(tmp_path):
    """``git clone <repo> custom_nodes/streammask``: ComfyUI imports the clone's __init__.py by its path, and the
    nodes come from the clone's own streammask package (git pull updates them), not from an installed copy."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout of the repository")
    clone = tmp_path / "custom_nodes" / "streammask"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{REPO}", str(clone)], check=True)
    for name in ("__init__.py", "requirements.txt", "streammask/comfy.py"):  # the working tree's, not HEAD's
        shutil.copy(REPO / name, clone / name)
    runner_import = f"""
import sys
sys.path.insert(0, {str(clone.parent)!r})  # a test runner with the clone's parent on sys.path, the clone named streammask
import streammask
assert streammask.__file__ == {str(clone / "streammask" / "__init__.py")!r}, streammask.__file__
assert hasattr(streammask, "process_video")  # the package, not the pack's __init__.py
"""
    comfy_load = f"""
import importlib.util, sys
path = {str(clone)!r}
name = path.replace(".", "_x_")  # ComfyUI 0.3.64's load_custom_node: the module is named after its path
spec = importlib.util.spec_from_file_location(name, path + "/__init__.py")
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
import streammask.comfy
assert module.NODE_CLASS_MAPPINGS is streammask.comfy.NODE_CLASS_MAPPINGS and len(module.NODE_CLASS_MAPPINGS) == 6
assert streammask.comfy.__file__.startswith(path + "/"), streammask.comfy.__file__
print("ok")
"""
    # -I: no user site, no PYTHON* variables; this venv's editable install of the checkout is still there, and
    # the clone's package must win over it: loaded by path first, and after a runner imported the clone by name
    for script in (comfy_load, runner_import + comfy_load):
        r = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                           timeout=300)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_requirements_match_pyproject():
    """requirements.txt (what the Manager installs) is pyproject's dependencies less torch (ComfyUI's own)."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    reqs = [line for line in lines if line and not line.startswith("#")]
    assert reqs == [d for d in deps if not d.startswith("torch")]
    comfy = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]


# -- models in ComfyUI/models/clipseg ----------------------------------------------------------

@pytest.fixture
def comfy_base(tmp_path, monkeypatch):
    """A ComfyUI folder with ComfyUI's modules stood in for (tests/comfy_fakes.py)."""
    import comfy_fakes

    base = tmp_path / "ComfyUI"
    fp = comfy_fakes.install(monkeypatch, base)
    monkeypatch.chdir(tmp_path)  # the server's working directory is not ComfyUI's folder (Windows portable)
    return base, fp


def link_model(tiny_model_dir, folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(tiny_model_dir, target_is_directory=True)
    return folder


def test_model_folder_registered_and_listed(comfy_base, tiny_model_dir, tmp_path):
    base, fp = comfy_base
    extra = tmp_path / "shared-models" / "clipseg"  # an extra_model_paths.yaml "clipseg:" entry, added first
    fp.add_model_folder_path("clipseg", str(extra))
    link_model(tiny_model_dir, extra / "tiny-extra")
    link_model(tiny_model_dir, base / "models" / "clipseg" / "CIDAS" / "tiny")
    (base / "models" / "clipseg" / "empty").mkdir()  # no weights: not a model
    assert comfy.register_model_folder() == [extra, base / "models" / "clipseg"]
    assert comfy.register_model_folder() == [extra, base / "models" / "clipseg"]  # idempotent
    choices, opts = StreamMaskLoadCLIPSeg.INPUT_TYPES()["required"]["model"]
    assert choices == ["CIDAS/clipseg-rd64-refined", "facebook/sam3", "tiny-extra", "CIDAS/tiny"]
    assert opts["default"] == choices[0]
    (handle,) = call_node(StreamMaskLoadCLIPSeg, model="CIDAS/tiny", device="cpu")
    assert handle.name == str((base / "models" / "clipseg" / "CIDAS" / "tiny").resolve())


def test_model_relative_paths_resolve_in_comfyui(comfy_base, tiny_model_dir, tmp_path):
    base, _ = comfy_base
    link_model(tiny_model_dir, base / "models" / "clipseg" / "x")
    # relative to the clipseg folder, and to ComfyUI's folder, never to the server's working directory
    for given in ("x", "models/clipseg/x"):
        (handle,) = call_node(StreamMaskLoadCLIPSeg, model_path=given, device="cpu")
        assert handle.name == str((base / "models" / "clipseg" / "x").resolve())
    link_model(tiny_model_dir, tmp_path / "models" / "clipseg" / "y")  # only below the working directory
    with pytest.raises(SourceNotFoundError) as err:
        call_node(StreamMaskLoadCLIPSeg, model_path="models/clipseg/y", device="cpu")
    message = str(err.value)
    assert message.startswith("model_path 'models/clipseg/y' is neither a folder")
    assert str(base / "models" / "clipseg") in message and "--" not in message and "hf download" not in message


@pytest.mark.parametrize("given, label", [(dict(model="CIDAS/clipseg-rd64-refined"), "model"),
                                          (dict(model_path="someone/clipseg-x"), "model_path")])
def test_model_not_downloaded_message(comfy_base, monkeypatch, given, label):
    base, _ = comfy_base
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(comfy, "in_cache", lambda name, revision: False)  # whatever this machine's hub cache holds
    with pytest.raises(ModelLoadError) as err:
        call_node(StreamMaskLoadCLIPSeg, device="cpu", **given)
    message = str(err.value)
    name = next(iter(given.values()))
    target = base / "models" / "clipseg" / name.split("/")[-1]
    assert message.startswith(f"{label} {name!r} is not downloaded yet and HF_HUB_OFFLINE is set")
    assert f"hf download {name} --local-dir {target}" in message and "--model" not in message


def test_model_folder_without_safetensors(comfy_base, tiny_model_dir):
    import shutil

    base, _ = comfy_base
    folder = base / "models" / "clipseg" / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    for f in folder.glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(ModelLoadError, match=r"^model_path '.*pickled' holds no \.safetensors weights"):
        call_node(StreamMaskLoadCLIPSeg, model_path="pickled", device="cpu")


# -- SAM 3 through the loader ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def sam3_handle(tiny_sam3_dir):
    (handle,) = call_node(StreamMaskLoadCLIPSeg, model_path=str(tiny_sam3_dir), device="cpu")
    return handle


def test_loader_loads_sam3_from_the_model_folder(comfy_base, tiny_sam3_dir, sam3_handle):
    from streammask.model.sam3 import Sam3Segmenter

    base, _ = comfy_base
    link_model(tiny_sam3_dir, base / "models" / "clipseg" / "sam3-tiny")
    choices = StreamMaskLoadCLIPSeg.INPUT_TYPES()["required"]["model"][0]
    assert choices == ["CIDAS/clipseg-rd64-refined", "facebook/sam3", "sam3-tiny"]
    (handle,) = call_node(StreamMaskLoadCLIPSeg, model="sam3-tiny", device="cpu")
    # SAM 3, told by its config.json, with the options' defaults (they are the running nodes' inputs)
    assert isinstance(handle, Sam3Segmenter) and handle.name == str(tiny_sam3_dir.resolve())
    assert (handle.max_objects, handle.forget_after) == (16, 300) and handle.dtype == torch.float32
    # the cache key is what the loaded object depends on: the resolved folder (the link and the real path are
    # one model), revision, device, dtype
    assert handle is sam3_handle
    (again,) = call_node(StreamMaskLoadCLIPSeg, model="sam3-tiny", device="cpu", dtype="float32")
    assert again is handle
    (half,) = call_node(StreamMaskLoadCLIPSeg, model="sam3-tiny", device="cpu", dtype="bfloat16")
    assert isinstance(half, Sam3Segmenter) and half is not handle and half.dtype == torch.bfloat16
    with pytest.raises(ParameterError, match=r"^dtype='int8' is not allowed: expected .* with SAM 3"):
        call_node(StreamMaskLoadCLIPSeg, model="sam3-tiny", device="cpu", dtype="int8")


def test_sam3_options_make_a_view_not_a_reload(sam3_handle):
    view = sam3_handle.with_options(sam3_max_objects=2, sam3_forget_after=5)
    assert view is not sam3_handle and view.model is sam3_handle.model and view.lock is sam3_handle.lock
    assert (view.max_objects, view.forget_after) == (2, 5) and (sam3_handle.max_objects, sam3_handle.forget_after) == (16, 300)
    assert sam3_handle.with_options(sam3_max_objects=16) is sam3_handle
    with pytest.raises(ParameterError, match="^sam3_max_objects=0"):
        sam3_handle.with_options(sam3_max_objects=0)


@pytest.mark.parametrize("cls, given", [
    (StreamMaskMixlab, dict(text="car")),
    (StreamMaskEssentials, dict(prompt="car")),
    (StreamMaskMaskByText, dict(prompt="car")),
])
def test_seed_nodes_refuse_sam3_with_the_pipelines_reason(sam3_handle, image, cls, given):
    """The seed variants reproduce CLIPSeg nodes: with SAM 3 each node refuses as MaskPipeline does, with why."""
    variant = cls.VARIANT
    with pytest.raises(ParameterError) as pipeline_err:
        MaskPipeline(sam3_handle, prompt="car", variants=(variant,))
    with pytest.raises(ParameterError) as err:
        call_node(cls, image=image[:1], clipseg=sam3_handle, **given)
    assert str(err.value) == str(pipeline_err.value)
    assert str(err.value).startswith(f"variants={variant!r} is not allowed: expected 'soft' with Sam3Segmenter: "
                                     "mixlab, essentials and masquerade reproduce ComfyUI CLIPSeg nodes")


def test_sam3_not_downloaded_message(comfy_base, monkeypatch):
    base, _ = comfy_base
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(comfy, "in_cache", lambda name, revision: False)
    with pytest.raises(ModelLoadError) as err:
        call_node(StreamMaskLoadCLIPSeg, device="cpu", model="facebook/sam3")
    message = str(err.value)
    target = base / "models" / "clipseg" / "sam3"
    assert message == (
        "model 'facebook/sam3' is not downloaded yet and HF_HUB_OFFLINE is set: facebook/sam3 is gated: accept "
        "Meta's SAM License on https://huggingface.co/facebook/sam3 while logged in, then download it once where "
        f"there is network (`hf auth login`, then `hf download facebook/sam3 --local-dir {target}`) and pick 'sam3' "
        "in model, or set model_path to a local copy")


def test_sam3_gated_download_message_in_node_words(comfy_base, monkeypatch):
    """The hub answers 401 for a gated model: load_sam3's one sentence, in the node's words."""
    from streammask.model import sam3

    def refused(*args, **kwargs):
        raise OSError("401 Client Error. Cannot access gated repo for url https://huggingface.co/facebook/sam3")

    monkeypatch.setattr(comfy, "in_cache", lambda name, revision: True)  # past the download check: the load fails
    monkeypatch.setattr(sam3, "from_pretrained", refused)
    with pytest.raises(ModelLoadError) as err:
        call_node(StreamMaskLoadCLIPSeg, device="cpu", model="facebook/sam3")
    assert str(err.value) == (
        "Cannot download the SAM 3 weights 'facebook/sam3': access is gated; facebook/sam3 is gated: accept Meta's "
        "SAM License on https://huggingface.co/facebook/sam3 while logged in, then run `hf auth login` and "
        "`hf download facebook/sam3` once where there is network, or set model_path to a local copy (a folder in "
        "ComfyUI/models/clipseg).")


def test_library_messages_in_node_words():
    assert comfy._node_words("--model 'x' offers no safetensors weights: pass --revision of a commit") == \
        "model 'x' offers no safetensors weights: pass revision of a commit"
    assert "model_path" in comfy._node_words("run `hf download x` once, or pass --model PATH pointing at a local copy.")
    assert comfy._node_words("--max-frames 3") == "max_frames 3"
