"""ComfyUI nodes: streammask's variants as a custom node pack.

Importable without ComfyUI (nothing here imports it at module level). The ComfyUI entry points
are the repository's ``__init__.py`` (the clone in ``custom_nodes/`` is the pack, as
ComfyUI-Manager installs it) and ``comfyui/streammask_nodes/__init__.py`` (with the package
pip-installed); both re-export :data:`NODE_CLASS_MAPPINGS` and :data:`NODE_DISPLAY_NAME_MAPPINGS`.

Nodes (categories ``mask/segmentation`` and ``mask/segmentation/video``):

* ``StreamMaskLoadCLIPSeg`` -- loads CLIPSeg or SAM 3 once and returns a handle of type
  ``STREAMMASK_CLIPSEG`` (a :class:`~streammask.model.ClipSeg` or a
  :class:`~streammask.model.sam3.Sam3Segmenter`, chosen by the model's ``config.json``): a hub id
  (``CIDAS/clipseg-rd64-refined``, ``facebook/sam3``), or a model folder under ``ComfyUI/models/clipseg``
  (registered with ComfyUI's ``folder_paths`` as ``clipseg``, so ``extra_model_paths.yaml`` can add
  folders). Loaded models are kept in a cache keyed by (model, revision, device, dtype), what the
  loaded object depends on, so re-queueing a workflow does not reload them; :func:`clear_model_cache`
  empties it. SAM 3's tracking options (``sam3_max_objects``, ``sam3_forget_after``) are inputs of
  the nodes that run it, applied to a view of the loaded model (:meth:`Sam3Segmenter.with_options`).
* ``StreamMaskMixlab``, ``StreamMaskEssentials``, ``StreamMaskMaskByText`` -- the ``mixlab``,
  ``essentials`` and ``masquerade`` variants on a ComfyUI ``IMAGE`` batch (``(B, H, W, 3)`` float
  in ``[0, 1]``), with the seed nodes' input names, defaults, ranges and outputs, plus the
  ``clipseg`` handle (Mask By Text adds ``MASK`` copies of its two ``IMAGE``-typed masks).
  Batches run in chunks of :data:`CHUNK_FRAMES` frames to bound device memory. CLIPSeg only: with
  a SAM 3 handle they refuse with the pipeline's reason (the variants are tuned to CLIPSeg).
* ``StreamMaskVideoFrames`` -- any variant over the frames of a loaded video (an ``IMAGE``
  batch), with temporal smoothing across the batch (and across the chunks a VideoHelperSuite
  Meta Batch Manager feeds): ``MASK`` + heatmap ``IMAGE``, as many frames as came in. With SAM 3
  (``soft`` only) the frames go through one tracker in order, so ids and masks continue across chunks.
* ``StreamMaskVideo`` -- streams a whole video file (a ``VIDEO`` input, a file in ComfyUI's
  input folder or a path) through :func:`~streammask.pipeline.process_video`, never holding it
  in memory, and returns the written files as paths and as ``VIDEO`` outputs, with a preview;
  with SAM 3 also ``instances = separate`` (a track per object id) and the JSON sidecar's path.

Every widget input is generated from a :class:`~streammask.params.Param` declaration (the
variant's ``params``, ``RUN_PARAMS`` and ``TEMPORAL_PARAMS``), the same ones the CLI and
pipeline files use, so names, defaults and ranges cannot drift. Error messages name the
node's inputs (``text``, ``model_path``), never CLI flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from .errors import ModelLoadError, ParameterError, SourceNotFoundError, StreamMaskError
from .model.clipseg import DEFAULT_MODEL, ClipSeg, load_clipseg, resolve_device, resolve_dtype
from .model.hub import hub_reachable, in_cache
from .model.sam3 import SAM3_GATED, SAM3_MODEL, SAM3_PARAMS, Sam3Segmenter, is_sam3_model, load_sam3
from .params import Param, ParamSet
from .pipeline.core import REFINED_MASK_VARIANTS, MaskPipeline, check_supported_variants
from .pipeline.run import process_video
from .pipeline.settings import OUTPUT_KINDS, RUN_PARAMS
from .refine import REFINE_PARAMS, MatteRefiner
from .temporal.smoothers import TEMPORAL_PARAMS
from .variants import VARIANTS, check_prompt, get_variant

__all__ = [
    "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "MODEL_TYPE", "MODEL_FOLDER", "CHUNK_FRAMES",
    "clear_model_cache", "register_model_folder", "local_models", "resolve_model", "parse_variant_params",
    "StreamMaskLoadCLIPSeg", "StreamMaskMixlab", "StreamMaskEssentials", "StreamMaskMaskByText",
    "StreamMaskVideoFrames", "StreamMaskVideo",
]

CATEGORY = "mask/segmentation"  # where the seeds' users look: essentials/segmentation, mixlab's Mask
VIDEO_CATEGORY = "mask/segmentation/video"
MODEL_TYPE = "STREAMMASK_CLIPSEG"
MODEL_FOLDER = "clipseg"  # ComfyUI/models/clipseg, one folder per model
CHUNK_FRAMES = 16  # frames per model call at 352x352; larger model inputs get proportionally fewer
NO_FILE = "none"  # the file picker's entry for "no file: use the video input or video_path"
LOADER_NAME = "Load CLIPSeg / SAM 3 (StreamMask)"

ModelHandle = ClipSeg | Sam3Segmenter
"""What travels on a ``STREAMMASK_CLIPSEG`` link: a loaded CLIPSeg or SAM 3."""

# (model, revision, device, dtype) -> loaded model: what the loaded object depends on (the model's kind
# follows from its name). A cache, not configuration: the handle always travels through the graph.
_MODEL_CACHE: dict[tuple[str, str | None, str, str], ModelHandle] = {}


# -- inputs generated from Param declarations ----------------------------------

def _widget(p: Param, **ui: Any) -> tuple[str, tuple]:
    """``(input name, INPUT_TYPES entry)`` for a parameter; ``ui`` adds ComfyUI-only widget options."""
    kind, opts = p.comfy_input()
    return p.comfy_name or p.name, (kind, {**opts, "tooltip": p.help, **ui})


def _widgets(params, **per_name_ui: dict) -> dict[str, tuple]:
    return dict(_widget(p, **per_name_ui.get(p.name, {})) for p in params)


def _handle_input() -> dict[str, tuple]:
    return {"clipseg": (MODEL_TYPE, {"tooltip": f"the model (CLIPSeg or SAM 3) from a {LOADER_NAME} node"})}


def _prompt_param(name: str, *, multiline: bool) -> Param:
    return dataclasses.replace(RUN_PARAMS["prompt"], comfy_name=name, multiline=multiline)


def _device_choices() -> tuple[str, ...]:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ("auto", "cpu", "cuda") + (tuple(f"cuda:{i}" for i in range(count)) if count > 1 else ())


# -- messages in the node's words ----------------------------------------------

_FLAG = re.compile(r"--([a-z][a-z0-9-]*)")


def _node_words(text: str) -> str:
    """A library message in a node's words: ``--model-path`` -> ``model_path`` (its input names)."""
    text = text.replace("pass --model PATH pointing at a local copy",
                        "set model_path to a local copy (a folder in ComfyUI/models/clipseg)")
    return _FLAG.sub(lambda m: m.group(1).replace("-", "_"), text)


@contextlib.contextmanager
def _input_names(**renames: str) -> Iterator[None]:
    """Re-raise a :class:`ParameterError` under the node's input name: ``renames`` maps the
    library's names (``prompt``) to the node's (``text``); a variant's ``mixlab.blur`` becomes ``blur``."""
    try:
        yield
    except ParameterError as exc:
        name = renames.get(exc.name, exc.name)
        if name == exc.name and "." in name:
            name = name.split(".", 1)[1]
        if name == exc.name:
            raise
        raise ParameterError(name, exc.value, exc.allowed) from None


# -- ComfyUI's folders ------------------------------------------------------------

def _folder_paths():
    """ComfyUI's ``folder_paths`` module, or ``None`` outside ComfyUI."""
    try:
        import folder_paths
    except ImportError:
        return None
    return folder_paths


def register_model_folder() -> list[Path]:
    """Register ``ComfyUI/models/clipseg`` with ComfyUI's ``folder_paths`` (as ``clipseg``) and
    return every folder registered under that name, in order: those from ``extra_model_paths.yaml``
    (a ``clipseg:`` key) and the default one. Idempotent; ``[]`` outside ComfyUI."""
    fp = _folder_paths()
    if fp is None:
        return []
    default = os.path.join(fp.models_dir, MODEL_FOLDER)
    if MODEL_FOLDER not in fp.folder_names_and_paths or default not in fp.get_folder_paths(MODEL_FOLDER):
        fp.add_model_folder_path(MODEL_FOLDER, default)
    with contextlib.suppress(OSError):  # so that users see where models go
        os.makedirs(default, exist_ok=True)
    return [Path(p) for p in fp.get_folder_paths(MODEL_FOLDER)]


def _is_model_dir(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def local_models(max_depth: int = 3) -> dict[str, Path]:
    """The CLIPSeg folders (``config.json`` + ``*.safetensors``) under ComfyUI's ``clipseg`` model
    folders, by name: the path below its model folder, ``/``-separated (``clipseg-rd64-refined``,
    ``CIDAS/clipseg-rd64-refined``). The first folder wins a name found in two. Hidden folders
    (``.cache``) are skipped; ``{}`` outside ComfyUI."""
    found: dict[str, Path] = {}
    for root in register_model_folder():
        if not root.is_dir():
            continue
        for dirpath, dirnames, _ in os.walk(root, followlinks=True):
            here = Path(dirpath)
            depth = len(here.relative_to(root).parts)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < max_depth else []
            if depth and _is_model_dir(here):
                found.setdefault(here.relative_to(root).as_posix(), here)
    return found


def _comfy_folder(kind: str) -> Path | None:
    """ComfyUI's ``input``, ``output`` or ``temp`` folder, or ``None`` outside ComfyUI."""
    fp = _folder_paths()
    if fp is None:
        return None
    return Path({"input": fp.get_input_directory, "output": fp.get_output_directory,
                 "temp": fp.get_temp_directory}[kind]())


def _resolve(path: str, kind: str) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    folder = _comfy_folder(kind)
    if folder is None or (kind == "input" and p.exists() and not (folder / p).exists()):
        return p
    return folder / p


def _input_videos() -> list[str]:
    """The video files in ComfyUI's input folder (what core Load Video lists); ``[]`` outside ComfyUI."""
    fp = _folder_paths()
    if fp is None:
        return []
    folder = fp.get_input_directory()
    try:
        files = [f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))]
    except OSError:
        return []
    return sorted(fp.filter_files_content_types(files, ["video"]))


# -- the model ------------------------------------------------------------------------

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def resolve_model(model: str, model_path: str = "") -> tuple[str, str]:
    """What the loader loads: ``(a local folder or a hub id, the input it came from)``.

    ``model_path`` (when not blank) wins over ``model``. A listed local model or a relative path
    is looked up in ComfyUI's ``clipseg`` model folders, then below ComfyUI's base folder (so
    ``models/clipseg/x`` works whatever the server's working directory); outside ComfyUI a
    relative path is taken from the working directory. A value that is no folder is a hub id
    (``name`` or ``owner/name``) or an error naming the input and the folders looked in.
    """
    label, value = ("model_path", model_path.strip()) if model_path and model_path.strip() else ("model", model)
    path = Path(value).expanduser()
    if path.is_absolute():
        if path.is_dir():
            return str(path), label
        raise SourceNotFoundError(f"{label} {value!r}: no such folder")
    fp = _folder_paths()
    roots = [*register_model_folder(), Path(fp.base_path)] if fp is not None else [Path.cwd()]
    for root in roots:
        if (root / path).is_dir():
            return str(root / path), label
    if _HUB_ID.fullmatch(value) and ".." not in value:
        return value, label
    raise SourceNotFoundError(f"{label} {value!r} is neither a folder (looked in {', '.join(map(str, roots))}) "
                              "nor a Hugging Face model id (owner/name)")


def _check_downloadable(name: str, revision: str | None, label: str) -> None:
    """A hub id that is not in the cache needs the hub: say so in the node's words, before loading."""
    if in_cache(name, revision):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if offline or not hub_reachable():
        folders = register_model_folder()
        target = (folders[-1] if folders else Path("ComfyUI/models/clipseg")) / name.split("/")[-1]
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub cannot be reached"
        if name == SAM3_MODEL:  # gated: the license comes before the download
            raise ModelLoadError(
                f"{label} {name!r} is not downloaded yet and {why}: {SAM3_GATED}, then download it once where "
                f"there is network (`hf auth login`, then `hf download {name} --local-dir {target}`) and pick "
                f"{target.name!r} in model, or set model_path to a local copy")
        raise ModelLoadError(
            f"{label} {name!r} is not downloaded yet and {why}: download it once where there is network "
            f"(`hf download {name} --local-dir {target}`), then pick {target.name!r} in model, or set model_path "
            "to a local copy")


def _loader_params() -> ParamSet:
    names = tuple(dict.fromkeys((DEFAULT_MODEL, SAM3_MODEL, *local_models())))
    return ParamSet((
        Param("model", "choice", DEFAULT_MODEL, "a Hugging Face id (downloaded once into the hub cache; facebook/sam3 "
              "is gated: accept Meta's SAM License on its page and log in first) or a model folder found in "
              "ComfyUI/models/clipseg (one folder per model: config.json, *.safetensors, the tokenizer and "
              "preprocessor files); CLIPSeg or SAM 3, told apart by the model's config.json", choices=names),
        Param("device", "choice", "auto", "where the model runs (auto: CUDA when available)", choices=_device_choices()),
        RUN_PARAMS["dtype"],
        Param("model_path", "str", "", "another model, used instead of model when not empty: a Hugging Face id or a "
              "folder (a relative path is looked up in ComfyUI/models/clipseg, then in ComfyUI's folder)"),
        dataclasses.replace(RUN_PARAMS["revision"], default="", nullable=False,
                            help="model revision (branch, tag or commit) to pin; empty: latest"),
    ), owner="StreamMaskLoadCLIPSeg")


# -- ComfyUI tensors <-> streammask tensors ------------------------------------

def _as_bhwc(image: Any, name: str = "image") -> torch.Tensor:
    """A ComfyUI ``IMAGE`` as ``(B, H, W, 3)`` float32 on its device (gray expanded, alpha dropped)."""
    if not isinstance(image, torch.Tensor):
        raise ParameterError(name, type(image).__name__, "a ComfyUI IMAGE tensor (B, H, W, 3) float in [0, 1]")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] == 0 or image.shape[-1] not in (1, 3, 4) or not image.is_floating_point():
        raise ParameterError(name, f"{image.dtype} tensor of shape {tuple(image.shape)}",
                             "a ComfyUI IMAGE tensor (B, H, W, 3) float in [0, 1]")
    if image.shape[-1] == 1:
        image = image.expand(-1, -1, -1, 3)
    elif image.shape[-1] == 4:
        image = image[..., :3]
    return image.float()


def quantize_truncate(image: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, 3)`` float in ``[0, 1]`` -> uint8 by truncation, as the seeds do.

    mixlab: ``(x * 255).astype(np.uint8)``; essentials: ``x.mul(255).clamp(0, 255).byte()``.
    Both truncate (0.999 -> 254); in ``[0, 1]`` they agree, and the clamp keeps
    out-of-range inputs from wrapping around.
    """
    return image.float().mul(255).clamp_(0, 255).to(torch.uint8)


def quantize_round(image: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, 3)`` float in ``[0, 1]`` -> uint8, rounded (exact for 8-bit sources)."""
    return image.float().mul(255).round_().clamp_(0, 255).to(torch.uint8)


def _image_out(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` uint8 on any device -> ComfyUI ``(B, H, W, 3)`` float32 on the CPU."""
    return x.permute(0, 2, 3, 1).cpu().float().div_(255.0)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class _ComfyProgress:
    """ComfyUI's progress bar and Cancel button when running inside ComfyUI; nothing otherwise."""

    def __init__(self, total: int) -> None:
        self._bar = self._mm = None
        self.done = 0
        try:
            import comfy.model_management as mm
            import comfy.utils

            self._bar, self._mm = comfy.utils.ProgressBar(total), mm
        except Exception:  # not running inside ComfyUI
            pass

    def check(self) -> None:
        if self._mm is not None:
            self._mm.throw_exception_if_processing_interrupted()

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)


def _check_handle(clipseg: Any) -> ModelHandle:
    if not isinstance(clipseg, (ClipSeg, Sam3Segmenter)):
        raise ParameterError("clipseg", type(clipseg).__name__,
                             f"a CLIPSeg or a SAM 3 model: the output of a {LOADER_NAME} node")
    return clipseg


def _with_sam3_options(seg: ModelHandle, p: Mapping[str, Any]) -> ModelHandle:
    """A SAM 3 handle with the node's ``sam3_max_objects`` / ``sam3_forget_after`` (a view sharing the
    weights: nothing reloads); a CLIPSeg handle as it is (the options are SAM 3's)."""
    if not isinstance(seg, Sam3Segmenter):
        return seg
    return seg.with_options(**{q.name: p[q.name] for q in SAM3_PARAMS})


def _run_pipeline(clipseg: ModelHandle, image: Any, prompt: str, variant: str, params: Mapping[str, Any], take) -> None:
    """Run ``variant`` over the batch in chunks; ``take(slice, VariantOutput)`` stores each chunk's results."""
    frames = _as_bhwc(image)
    pipe = MaskPipeline(_check_handle(clipseg), prompt=prompt, variants={variant: params})
    progress = _ComfyProgress(frames.shape[0])
    for s in _chunks(frames.shape[0], CHUNK_FRAMES):
        progress.check()
        take(s, pipe.process(quantize_truncate(frames[s]))[variant])
        progress.update(s.stop - s.start)


# -- nodes -----------------------------------------------------------------------

class StreamMaskLoadCLIPSeg:
    """Load CLIPSeg or SAM 3 (a hub id, or a folder of safetensors weights in ComfyUI/models/clipseg) once, as a handle.

    Which one is read from the model's ``config.json`` (``model_type = "sam3_video"``: SAM 3), as
    ``streammask run --model`` does; a hub id that is not downloaded is judged by its name. The class
    name stays ``StreamMaskLoadCLIPSeg`` and the output type ``STREAMMASK_CLIPSEG`` (saved workflows use them).
    """

    DESCRIPTION = ("Loads CLIPSeg or SAM 3 for the StreamMask nodes: a Hugging Face id (CIDAS/clipseg-rd64-refined, "
                   "facebook/sam3: gated, accept its license first), or a model folder in ComfyUI/models/clipseg. "
                   "Loaded models are cached and reused across runs.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("clipseg",)
    FUNCTION = "load"
    REQUIRED = ("model", "device", "dtype")

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        params = _loader_params()
        return {"required": _widgets(params[n] for n in cls.REQUIRED),
                "optional": _widgets(p for p in params if p.name not in cls.REQUIRED)}

    def load(self, model: str, device: str = "auto", dtype: str = "auto", model_path: str = "",
             revision: str = "") -> tuple[ModelHandle]:
        with _input_names():
            p = _loader_params().validate(dict(model=model, device=device, dtype=dtype, model_path=model_path or "",
                                               revision=revision or ""), where=LOADER_NAME)
            dev = resolve_device(p["device"])
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        # int8 is a load option (load_clipseg checks it against the device), not a torch dtype
        dt = p["dtype"] if p["dtype"] == "int8" else resolve_dtype(p["dtype"], dev)
        name, label = resolve_model(p["model"], p["model_path"])
        revision_ = p["revision"].strip() or None
        is_local = Path(name).is_dir()
        if is_local:
            name = str(Path(name).resolve())
        key = (name, revision_, str(dev), str(dt).removeprefix("torch."))
        if key not in _MODEL_CACHE:
            if is_local and not any(Path(name).glob("*.safetensors")):
                raise ModelLoadError(f"{label} {name!r} holds no .safetensors weights: streammask loads safetensors "
                                     "only (convert with transformers' save_pretrained(..., safe_serialization=True))")
            if not is_local:
                _check_downloadable(name, revision_, label)
            load = load_sam3 if is_sam3_model(name, revision_) else load_clipseg  # as load_from_settings picks
            try:
                _MODEL_CACHE[key] = load(name, revision=revision_, device=dev, dtype=dt)
            except ParameterError:
                raise
            except StreamMaskError as exc:  # the library's message, in the node's words
                text = str(exc).replace(f"--model {name!r}", f"{label} {name!r}")
                raise type(exc)(_node_words(text)) from None
        return (_MODEL_CACHE[key],)


def clear_model_cache() -> None:
    """Forget every model :class:`StreamMaskLoadCLIPSeg` loaded (they are freed once no graph holds them)."""
    _MODEL_CACHE.clear()


class StreamMaskMixlab:
    """mixlab "CLIPSeg" (seed 000), batched: same inputs and outputs."""

    VARIANT = "mixlab"
    DESCRIPTION = "mixlab CLIPSeg: thresholded, blurred, normalised, dilated; Greys_r mask, viridis heatmap, BW image."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MASK", "IMAGE", "IMAGE")
    RETURN_NAMES = ("Mask", "Heatmap Mask", "BW Mask")
    FUNCTION = "segment_image"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {"image": ("IMAGE",),
                         **_widgets([_prompt_param("text", multiline=False)], prompt={"dynamicPrompts": False}),
                         **_handle_input()},
            "optional": _widgets(VARIANTS[cls.VARIANT].params),
        }

    def segment_image(self, image: torch.Tensor, text: str, clipseg: ModelHandle, **params: Any):
        """Returns ``Mask`` ``(B, H, W)``, ``Heatmap Mask`` and ``BW Mask`` ``(B, H, W, 3)``, float in ``[0, 1]``."""
        with _input_names(prompt="text"):
            p = VARIANTS[self.VARIANT].validate(params, where=NODE_DISPLAY_NAME_MAPPINGS[type(self).__name__])
            check_prompt(text, name="text")
        b, h, w = _as_bhwc(image).shape[:3]
        mask, heat, bw = torch.empty(b, h, w), torch.empty(b, h, w, 3), torch.empty(b, h, w, 3)

        def take(s, out):
            mask[s] = out.mask[:, 0].cpu()
            heat[s] = _image_out(out.heatmap)
            bw[s] = _image_out(out.extra["bw"])

        with _input_names(prompt="text"):
            _run_pipeline(clipseg, image, text, self.VARIANT, p, take)
        return (mask, heat, bw)


class StreamMaskEssentials:
    """essentials "Apply CLIPSeg+" (seed 001), batched: same inputs and output."""

    VARIANT = "essentials"
    DESCRIPTION = "essentials Apply CLIPSeg+: binary cut, smooth, grow/shrink, blur, bicubic resize."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    FUNCTION = "execute"
    SEED_INPUTS = ("threshold", "smooth", "dilate", "blur")  # the rest of the variant's params are optional extras

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        params = VARIANTS[cls.VARIANT].params
        return {
            "required": {**_handle_input(), "image": ("IMAGE",),
                         **_widgets([_prompt_param("prompt", multiline=False)]),
                         **_widgets(params[n] for n in cls.SEED_INPUTS)},
            "optional": _widgets(p for p in params if p.name not in cls.SEED_INPUTS),
        }

    def execute(self, image: torch.Tensor, clipseg: ModelHandle, prompt: str, **params: Any):
        """Returns ``mask`` ``(B, H, W)`` float (bicubic: may leave ``[0, 1]`` unless ``clamp``, as the seed)."""
        with _input_names():
            p = VARIANTS[self.VARIANT].validate(params, where=NODE_DISPLAY_NAME_MAPPINGS[type(self).__name__])
        b, h, w = _as_bhwc(image).shape[:3]
        mask = torch.empty(b, h, w)

        def take(s, out):
            mask[s] = out.mask[:, 0].cpu()

        _run_pipeline(clipseg, image, prompt, self.VARIANT, p, take)
        return (mask,)


class StreamMaskMaskByText:
    """masquerade "Mask By Text" (seed 003), batched: same inputs and outputs, plus the masks typed ``MASK``.

    The seed never quantizes the image, and neither does this node: the float
    image is normalised and resized on the device (an image from an 8-bit
    source gives exactly what the video pipeline gives on its uint8 frames).
    Like the seed, the first two outputs are typed ``IMAGE`` but shaped ``(B, H, W)``,
    so that masquerade's other nodes accept them; the last two hold the same
    masks typed ``MASK`` (core nodes such as ImageToMask fail on the first two).
    ``model_size`` defaults to ``max_side`` here (the seed's square of side
    max(W, H)); ``352`` is much faster on large images. ``normalize = yes``
    rescales by the min and max over the whole input batch, as the seed does,
    however many chunks it takes.
    """

    VARIANT = "masquerade"
    DESCRIPTION = ("masquerade Mask By Text: max over '|' prompts minus negative prompts, optional normalisation. "
                   "The first two outputs are the seed's (B, H, W) masks typed IMAGE; the last two are them as MASK.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "IMAGE", "MASK", "MASK")
    RETURN_NAMES = ("thresholded_mask", "raw_mask", "thresholded MASK", "raw MASK")
    FUNCTION = "get_mask"
    SEED_INPUTS = ("negative_prompt", "precision", "normalize")
    EXTRA_INPUTS = ("normalize_scope", "model_size")  # "output" only picks the video outputs' mask: not an input here
    DEFAULTS = {"model_size": "max_side"}  # faithful for images; the video pipeline defaults to 352

    @classmethod
    def _params(cls) -> ParamSet:
        params = VARIANTS[cls.VARIANT].params
        return ParamSet(tuple(dataclasses.replace(p, default=cls.DEFAULTS.get(p.name, p.default)) for p in params),
                        owner=params.owner)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        params = cls._params()
        return {
            "required": {"image": ("IMAGE",), **_widgets([_prompt_param("prompt", multiline=True)]),
                         **_widgets(params[n] for n in cls.SEED_INPUTS), **_handle_input()},
            "optional": _widgets(params[n] for n in cls.EXTRA_INPUTS),
        }

    def get_mask(self, image: torch.Tensor, clipseg: ModelHandle, prompt: str, **params: Any):
        """Returns ``thresholded_mask`` (0/1) and ``raw_mask``, each ``(B, H, W)`` float, then the same typed ``MASK``."""
        variant = get_variant(self.VARIANT)
        unknown = [k for k in params if k not in self.SEED_INPUTS + self.EXTRA_INPUTS]
        if unknown:
            raise ParameterError(unknown[0], params[unknown[0]], "one of " + ", ".join(self.SEED_INPUTS + self.EXTRA_INPUTS))
        with _input_names():
            p = self._params().validate(params, where=NODE_DISPLAY_NAME_MAPPINGS[type(self).__name__])
        seg = _check_handle(clipseg)
        check_supported_variants(seg, [self.VARIANT])  # SAM 3: the pipeline's refusal, with its reason
        check_prompt(prompt)
        frames = _as_bhwc(image)
        b, h, w = frames.shape[:3]
        # batch-wide normalisation needs every chunk first: run the chunks unnormalised, normalise below
        batch_norm = p["normalize"] == "yes" and p["normalize_scope"] == "batch"
        chunk_params = dict(p, normalize="no") if batch_norm else p
        size = variant.model_size(p, (h, w), seg.size)
        prompts = variant.prompts(prompt, p)
        raw, thresholded = torch.empty(b, h, w), torch.empty(b, h, w)
        progress = _ComfyProgress(b)
        state: dict = {}  # running normalisation carries its statistics across chunks
        for s in _chunks(b, max(1, CHUNK_FRAMES * seg.size ** 2 // size ** 2)):
            progress.check()
            x = frames[s]
            with torch.inference_mode():
                logits = seg.logits(seg.preprocess(x.permute(0, 3, 1, 2), mode="imagenet_float", size=size), prompts)
                u8 = quantize_round(x).to(seg.device).permute(0, 3, 1, 2)  # frames are only used for their size
                out = variant.postprocess(logits, u8, prompt, chunk_params, state)
            raw[s] = out.extra["raw_mask"][:, 0].cpu()
            thresholded[s] = out.extra["thresholded_mask"][:, 0].cpu()
            progress.update(s.stop - s.start)
        if batch_norm:  # the seed: (mask - min) / (max - min) over the batch (0/0 -> 0 rather than NaN)
            lo, hi = raw.min(), raw.max()
            raw = torch.nan_to_num((raw - lo) / (hi - lo), nan=0.0)
            thresholded = (raw >= p["precision"]).float()
        # the MASK outputs are copies: a node downstream that works in place must not change the other pair
        return (thresholded, raw, thresholded.clone(), raw.clone())


# -- video ---------------------------------------------------------------------------

def parse_variant_params(text: str, variant: str) -> dict[str, Any]:
    """``"blur = 2; threshold = 0.4"`` (or one per line) -> the variant's validated parameters.

    Values may be quoted; unknown names and out-of-range values raise :class:`ParameterError`.
    """
    values: dict[str, str] = {}
    for item in re.split(r"[;\n]", text or ""):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError("variant_params", item.strip(), "'name = value' items, one per line or separated by ';'")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return get_variant(variant).validate(values, where="variant_params")


def _variant_inputs() -> tuple[Param, Param]:
    return (Param("variant", "choice", "soft", "post-processing variant", choices=tuple(VARIANTS)),
            Param("variant_params", "str", "", "the variant's parameters, one 'name = value' per line or separated "
                  "by ';' (e.g. 'blur = 2; threshold = 0.4'); empty: its defaults", multiline=True))


def _frames_params() -> ParamSet:
    # new inputs go last: a saved workflow keeps its widget values by position
    return ParamSet((RUN_PARAMS["prompt"], *_variant_inputs(), RUN_PARAMS["heatmap_alpha"], RUN_PARAMS["colormap"],
                     *TEMPORAL_PARAMS, *SAM3_PARAMS, *REFINE_PARAMS), owner="StreamMaskVideoFrames")


class StreamMaskVideoFrames:
    """Any variant over the frames of a loaded video (an ``IMAGE`` batch), with temporal smoothing.

    Takes what a video loader gives (core Load Video -> Get Video Components, VideoHelperSuite's
    Load Video): ``(B, H, W, 3)`` float frames. Frames are rounded to 8 bits (exact for 8-bit
    video) and run through the same pipeline as a video file, in chunks of :data:`CHUNK_FRAMES`,
    so the ``mask`` equals what ``streammask run`` computes on the same frames; ``temporal``
    smooths across the whole batch, look-ahead windows included (their last frames are flushed
    at the end): the outputs always hold as many frames as ``images``.

    With VideoHelperSuite's Meta Batch Manager connected to ``meta_batch`` (a long video loaded
    in chunks, one execution per chunk), the smoothing state is carried from one chunk to the next
    (kept on this node, dropped after the last chunk), so chunked and one-pass results agree; that
    needs a causal smoother (look-ahead would need the next chunk's frames).
    """

    DESCRIPTION = ("Masks the frames of a loaded video (IMAGE batch) with any variant and temporal smoothing across "
                   "them; returns MASK and heatmap IMAGE batches with as many frames as came in.")
    CATEGORY = VIDEO_CATEGORY
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("mask", "heatmap")
    FUNCTION = "segment_frames"
    REQUIRED = ("prompt", "variant")

    def __init__(self) -> None:
        # ComfyUI keeps one instance per node of the graph: the smoothing state of an unfinished meta batch
        self._carry: tuple[tuple, dict] | None = None

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        params = _frames_params()
        return {
            "required": {**_handle_input(), "images": ("IMAGE", {"tooltip": "the video's frames (B, H, W, 3)"}),
                         **_widgets(params[n] for n in cls.REQUIRED)},
            "optional": {**_widgets(p for p in params if p.name not in cls.REQUIRED),
                         "meta_batch": ("VHS_BatchManager", {"tooltip": "VideoHelperSuite's Meta Batch Manager: "
                                        "carry the smoothing from one chunk of the video to the next"})},
        }

    def segment_frames(self, clipseg: ModelHandle, images: torch.Tensor, prompt: str, variant: str,
                       meta_batch: Any = None, **inputs: Any):
        """Returns ``mask`` ``(B, H, W)`` float and ``heatmap`` ``(B, H, W, 3)`` float in ``[0, 1]``."""
        with _input_names():
            p = _frames_params().validate(dict(inputs, prompt=prompt, variant=variant),
                                          where="CLIPSeg Video Frames (StreamMask)")
        seg = _with_sam3_options(_check_handle(clipseg), p)
        params = parse_variant_params(p.pop("variant_params"), p["variant"])
        temporal = {t.name: p[t.name] for t in TEMPORAL_PARAMS}
        refiner = MatteRefiner.from_settings(p)
        if refiner is not None and refiner.active and variant not in REFINED_MASK_VARIANTS:
            raise ParameterError("refine", p["refine"], "'none' (and choke, feather, clip_black, clip_white at their "
                                 f"defaults) with variant {variant!r} on this node: refinement changes the mask of "
                                 f"{', '.join(REFINED_MASK_VARIANTS)} only (the other variants keep their node's exact "
                                 "mask and get a refined matte, which this node does not output)")
        with _input_names(variants="variant"):
            # one pipeline for the whole batch: SAM 3's tracker sees the frames in order, chunk after chunk
            pipe = MaskPipeline(seg, prompt=p["prompt"], variants={variant: params}, heatmap_alpha=p["heatmap_alpha"],
                                colormap=p["colormap"], refiner=refiner, refine_mattes=False, **temporal)
        frames = _as_bhwc(images, "images")
        b, h, w = frames.shape[:3]
        carry = meta_batch is not None
        if carry and pipe.delay:
            raise ParameterError("temporal", f"{p['temporal']} (window_align = {p['window_align']})",
                                 "a causal smoother with meta_batch: ema, hysteresis, flow, or median/mean with "
                                 "window_align = trailing (a centered window would need the next chunk's frames)")
        key = (p["prompt"], variant, tuple(sorted(params.items())), tuple(sorted(temporal.items())), (h, w),
               type(seg).__name__, tuple(p[q.name] for q in SAM3_PARAMS))
        if carry and self._carry is not None and self._carry[0] == key:
            pipe.load_stream_state(self._carry[1])
        self._carry = None
        mask, heat = torch.empty(b, h, w), torch.empty(b, h, w, 3)
        filled = 0

        def take(results, x, indices) -> None:
            nonlocal filled
            if not indices:
                return
            out = results[variant]
            idx = torch.as_tensor(indices)
            mask[idx] = out.mask[:, 0].float().cpu()
            rendered = pipe.render(x, out, ["heatmap"])["heatmap"]
            heat[idx] = torch.from_numpy(rendered).float().div_(255.0)
            filled += len(indices)

        progress = _ComfyProgress(b)
        for s in _chunks(b, CHUNK_FRAMES):
            progress.check()
            take(*pipe.process_stream(quantize_round(frames[s]), list(range(s.start, s.stop))))
            progress.update(s.stop - s.start)
        # the state for the next chunk, taken before the flush, which ends the stream (causal: flushes nothing)
        state = pipe.stream_state() if carry and not getattr(meta_batch, "has_closed_inputs", True) else None
        take(*pipe.flush_stream())
        if filled != b:  # every frame comes out exactly once (a look-ahead smoother flushes its last ones)
            raise RuntimeError(f"internal error: {filled} of {b} frames came out of the pipeline")
        if state is not None:
            self._carry = (key, state)
        return (mask, heat)


def _video_params() -> ParamSet:
    return ParamSet((
        Param("video_file", "choice", NO_FILE, "a video in ComfyUI's input folder (upload one here); used when the "
              "video input is not connected and video_path is empty", choices=(NO_FILE, *_input_videos())),
        Param("video_path", "str", "", "a video file by path (a relative path is looked up in ComfyUI's input "
              "folder); used when the video input is not connected"),
        RUN_PARAMS["prompt"],
        *_variant_inputs(),
        RUN_PARAMS["outputs"],
        dataclasses.replace(RUN_PARAMS["out_dir"], help="output folder (a relative path is under ComfyUI's output folder)"),
        dataclasses.replace(RUN_PARAMS["batch_size"], default=0, min=0, nullable=False,
                            help="frames per model batch (0: automatic, from free GPU memory; 1 on a CPU)"),
        RUN_PARAMS["mask_format"],
        RUN_PARAMS["heatmap_format"],
        RUN_PARAMS["matte_format"],
        RUN_PARAMS["heatmap_alpha"],
        RUN_PARAMS["colormap"],
        dataclasses.replace(RUN_PARAMS["max_frames"], default=0, min=0, nullable=False,
                            help="stop after this many frames (0: the whole video)"),
        RUN_PARAMS["progress"],
        RUN_PARAMS["audio"],
        RUN_PARAMS["matte_style"],
        RUN_PARAMS["matte_color"],
        dataclasses.replace(RUN_PARAMS["background"], default="", nullable=False,
                            help="image or video behind the foreground for matte_style=background (a relative path "
                                 "is looked up in ComfyUI's input folder)"),
        *TEMPORAL_PARAMS,
        # new inputs go last (a saved workflow keeps its widget values by position), all optional with defaults
        RUN_PARAMS["instances"],
        *SAM3_PARAMS,
        *REFINE_PARAMS,
    ), owner="StreamMaskVideo")


def _video_source(video: Any, video_file: str, video_path: str) -> tuple[Path, Path | None]:
    """The file to stream and a temporary folder to remove afterwards (``None`` when the file is the user's).

    ``video`` (a ComfyUI ``VIDEO``) wins, then ``video_path``, then ``video_file``. A ``VIDEO``
    backed by a file is streamed from that file; one held in memory (a ``BytesIO``, or frames
    from Create Video) is written to a temporary file first.
    """
    if isinstance(video, (str, os.PathLike)) and str(video).strip():  # API-format workflows may give a path here
        video_path, video = os.fspath(video), None
    if video is not None:
        source = None
        with contextlib.suppress(Exception):  # VideoFromComponents has no stream source of its own
            source = video.get_stream_source()
        if isinstance(source, str):
            return Path(source), None
        temp_root = _comfy_folder("temp")
        if temp_root is not None:
            temp_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="streammask-", dir=temp_root))
        target = tmp / "video.mp4"
        try:
            if source is not None and hasattr(source, "read"):
                with open(target, "wb") as f:
                    shutil.copyfileobj(source, f)
            elif hasattr(video, "save_to"):
                video.save_to(str(target))
            else:
                raise ParameterError("video", type(video).__name__, "a ComfyUI VIDEO (from Load Video, Create Video, ...)")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target, tmp
    if video_path and video_path.strip():
        return _resolve(video_path.strip(), "input"), None
    if video_file and video_file != NO_FILE:
        fp = _folder_paths()
        return (Path(fp.get_annotated_filepath(video_file)) if fp is not None else _resolve(video_file, "input")), None
    raise ParameterError("video", None, "a connected VIDEO input, a video_path, or a video_file from ComfyUI's input folder")


def _preview(paths: Mapping[str, Path]) -> list[dict[str, str]]:
    """ComfyUI's preview entries (``{"filename", "subfolder", "type": "output"}``) for the written videos
    a browser plays (.mp4, .webm) that lie in ComfyUI's output folder; heatmap first."""
    out_root = _comfy_folder("output")
    if out_root is None:
        return []
    items = []
    for kind in ("heatmap", "mask", "matte"):
        path = paths.get(kind)
        if path is None or path.suffix.lower() not in (".mp4", ".webm"):
            continue
        try:
            rel = path.resolve().relative_to(out_root.resolve())
        except ValueError:
            continue
        items.append({"filename": rel.name, "subfolder": "" if rel.parent == Path(".") else rel.parent.as_posix(),
                      "type": "output"})
    return items


def _track_paths(outputs: Mapping[str, Path], variant: str, kind: str) -> list[Path]:
    """``instances = separate``: the per-object tracks of ``kind`` (``VARIANT.idN.KIND``), by id."""
    pattern = re.compile(rf"{re.escape(variant)}\.id(\d+)\.{kind}")
    found = [(int(m.group(1)), path) for key, path in outputs.items() if (m := pattern.fullmatch(key))]
    return [path for _, path in sorted(found)]


def _video_outputs(paths: Mapping[str, Path], settings: Mapping[str, Any]) -> tuple:
    """The ``VIDEO`` outputs: ComfyUI's ``VideoFromFile`` of each written file; a blocker with a
    message for an output that was not requested, is an image sequence or (``instances = separate``)
    is one track per object. ``None`` outside ComfyUI."""
    try:
        from comfy_api.input_impl import VideoFromFile
        from comfy_execution.graph_utils import ExecutionBlocker
    except ImportError:  # not inside ComfyUI: the paths are the outputs
        return (None,) * len(OUTPUT_KINDS)
    out = []
    for kind in OUTPUT_KINDS:
        path = paths.get(kind)
        if settings["instances"] == "separate" and kind in settings["outputs"] and kind != "heatmap":
            out.append(ExecutionBlocker(f"StreamMask Video: instances = separate writes one {kind} track per object "
                                        f"id, not one video (their paths are in {kind}_path, one per line)"))
        elif path is None:
            out.append(ExecutionBlocker(f"StreamMask Video: the {kind} output was not written "
                                        f"(outputs = {','.join(settings['outputs'])})"))
        elif path.is_dir():
            out.append(ExecutionBlocker(f"StreamMask Video: {kind}_format = {settings[f'{kind}_format']} writes a "
                                        "folder of images, not a video file"))
        else:
            out.append(VideoFromFile(str(path)))
    return tuple(out)


class StreamMaskVideo:
    """Mask a whole video file, streaming it in bounded memory; the written files as paths and ``VIDEO``s.

    The source is a connected ``VIDEO`` (core Load Video), else ``video_path``, else ``video_file``
    (a file picker over ComfyUI's input folder, with upload). The files go to ``out_dir`` (under
    ComfyUI's output folder) as ``{stem}.{variant}.{kind}.{ext}``, written under temporary names
    and renamed when complete, so Cancel leaves no partial file. The outputs are the paths (``''``
    for outputs not requested) and the same files as ``VIDEO`` (for Save Video, Get Video Components;
    Save Video remuxes into MP4, which takes H.264/H.265/VP9 but not the ProRes matte); the mp4/webm
    files under the output folder are shown on the node. The node runs again when one of the files
    its last run wrote is gone.

    With a SAM 3 handle: ``instances = union`` gives the same three files (every instance together);
    ``instances = separate`` writes one mask and one matte track per object id
    (``{stem}.{variant}.idN.{kind}.{ext}``, each as long as the clip): ``mask_path`` and ``matte_path``
    then hold their paths one per line, in id order (their ``VIDEO`` outputs are blocked: there is no
    single file), ``heatmap`` is the colour-per-id overlay. ``instances_path`` is the JSON sidecar of
    ids, prompts, scores and boxes per frame (``{stem}.sam3.instances.json``; ``''`` without one).
    ``sam3_max_objects`` / ``sam3_forget_after`` apply to this run (the loaded weights are shared).
    The refinement inputs (``refine``, ``choke``, ``feather``, ...) work as ``streammask run``'s.
    """

    DESCRIPTION = ("Streams a video through CLIPSeg or SAM 3 (never holding it in memory) and writes mask / heatmap / "
                   "matte files named {stem}.{variant}.{kind}.{ext}; returns their paths and the files as VIDEO. With "
                   "SAM 3 and instances = separate: one mask / matte track per object id (their paths one per line), "
                   "a colour-per-id heatmap and a JSON sidecar (instances_path).")
    CATEGORY = VIDEO_CATEGORY
    # new outputs go last: saved workflows link outputs by index
    RETURN_TYPES = ("STRING", "STRING", "STRING", "VIDEO", "VIDEO", "VIDEO", "STRING")
    RETURN_NAMES = ("mask_path", "heatmap_path", "matte_path", "mask", "heatmap", "matte", "instances_path")
    FUNCTION = "run"
    OUTPUT_NODE = True  # it writes files: run even when nothing consumes its outputs
    # video_file is required because ComfyUI's frontend adds its upload button to required combos only
    REQUIRED = ("video_file", "prompt", "variant", "outputs", "out_dir")
    # (node id, its widget values) -> the files that run wrote: IS_CHANGED re-runs the node when one is
    # gone, where ComfyUI would otherwise return its cached outputs (paths to files that no longer exist)
    _written: dict[tuple[str, str], tuple[str, ...]] = {}
    _WRITTEN_KEPT = 256  # records kept (the oldest go first)

    @staticmethod
    def _record_key(unique_id: Any, inputs: Mapping[str, Any]) -> tuple[str, str]:
        """The same key from IS_CHANGED (links are ``None`` there) and from the run (links are objects)."""
        widgets = sorted((k, repr(v)) for k, v in inputs.items() if k not in ("clipseg", "video", "unique_id"))
        return str(unique_id), repr(widgets)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        params = _video_params()
        return {
            "required": {**_handle_input(), **_widgets((params[n] for n in cls.REQUIRED), video_file={"video_upload": True})},
            "optional": {"video": ("VIDEO", {"tooltip": "a video from Load Video (used before video_path and video_file)"}),
                         **_widgets(p for p in params if p.name not in cls.REQUIRED)},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def IS_CHANGED(cls, unique_id: Any = None, video: Any = None, **inputs: Any):
        """Run again when a file the last run with these inputs wrote is gone, or when the input file changed.

        ComfyUI calls it with the widget values (a connected input is ``None`` here) before it looks in its cache.
        """
        written = cls._written.get(cls._record_key(unique_id, inputs), ())
        if any(not os.path.exists(p) for p in written):
            return float("nan")  # never equal to itself: ComfyUI runs the node
        try:
            source, _ = _video_source(video if isinstance(video, str) else None, inputs.get("video_file", NO_FILE),
                                      inputs.get("video_path", ""))
            st = source.stat()
        except (OSError, StreamMaskError):
            return ""
        return f"{st.st_mtime_ns}:{st.st_size}"

    def run(self, clipseg: ModelHandle, video: Any = None, unique_id: Any = None, **inputs: Any) -> dict[str, Any]:
        with _input_names():
            p = _video_params().validate(inputs, where="CLIPSeg Video File (StreamMask)")
        seg = _with_sam3_options(_check_handle(clipseg), p)
        variant = p["variant"]
        variant_params = parse_variant_params(p["variant_params"], variant)
        source, tmp = _video_source(video, p["video_file"], p["video_path"])
        progress: _ComfyProgress | None = None

        def on_batch(done: int, total: int | None) -> None:  # ComfyUI progress bar and Cancel between batches
            nonlocal progress
            if progress is None:
                progress = _ComfyProgress(total or 0)
            progress.check()
            progress.update(done - progress.done)
            progress.done = done

        try:
            with _input_names(variants="variant"):  # SAM 3 refuses the seed variants: name the node's input
                summary = process_video(
                    source, out_dir=_resolve(p["out_dir"], "output"), prompt=p["prompt"],
                    variants={variant: variant_params}, outputs=p["outputs"], batch_size=p["batch_size"] or None,
                    mask_format=p["mask_format"], heatmap_format=p["heatmap_format"], matte_format=p["matte_format"],
                    heatmap_alpha=p["heatmap_alpha"], colormap=p["colormap"], max_frames=p["max_frames"] or None,
                    progress=p["progress"], segmenter=seg, on_batch=on_batch, audio=p["audio"],
                    matte_style=p["matte_style"], matte_color=p["matte_color"],
                    background=_resolve(p["background"], "input") if p["background"].strip() else None,
                    overwrite=True,  # a node re-run replaces its own outputs, as ComfyUI users expect
                    instances=p["instances"],
                    **{q.name: p[q.name] for q in (*TEMPORAL_PARAMS, *REFINE_PARAMS)},
                )
        except ParameterError:
            raise
        except StreamMaskError as exc:  # the library's message, in the node's words
            raise type(exc)(_node_words(str(exc))) from None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        paths = {kind: summary.outputs[f"{variant}.{kind}"] for kind in OUTPUT_KINDS
                 if f"{variant}.{kind}" in summary.outputs}
        # instances = separate: a track per object id for mask and matte, their paths one per line, by id
        tracks = {kind: _track_paths(summary.outputs, variant, kind) for kind in OUTPUT_KINDS}
        sidecar = summary.outputs.get("instances")
        if unique_id is not None:
            written = type(self)._written
            written.pop(key := self._record_key(unique_id, inputs), None)
            written[key] = tuple(str(path) for path in summary.outputs.values())
            while len(written) > self._WRITTEN_KEPT:
                written.pop(next(iter(written)))
        result = (*("\n".join(map(str, tracks[kind])) if tracks[kind] else str(paths.get(kind, ""))
                    for kind in OUTPUT_KINDS),
                  *_video_outputs(paths, p), str(sidecar) if sidecar is not None else "")
        preview = _preview(paths)
        return {"ui": {"images": preview, "animated": (True,)}, "result": result} if preview else {"result": result}


NODE_CLASS_MAPPINGS = {
    "StreamMaskLoadCLIPSeg": StreamMaskLoadCLIPSeg,
    "StreamMaskMixlab": StreamMaskMixlab,
    "StreamMaskEssentials": StreamMaskEssentials,
    "StreamMaskMaskByText": StreamMaskMaskByText,
    "StreamMaskVideoFrames": StreamMaskVideoFrames,
    "StreamMaskVideo": StreamMaskVideo,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "StreamMaskLoadCLIPSeg": LOADER_NAME,
    "StreamMaskMixlab": "CLIPSeg (StreamMask, mixlab)",
    "StreamMaskEssentials": "Apply CLIPSeg+ (StreamMask, essentials)",
    "StreamMaskMaskByText": "Mask By Text (StreamMask, masquerade)",
    "StreamMaskVideoFrames": "CLIPSeg Video Frames (StreamMask)",
    "StreamMaskVideo": "CLIPSeg Video File, streaming (StreamMask)",
}
