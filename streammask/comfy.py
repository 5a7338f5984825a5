"""ComfyUI nodes: streammask's variants as a custom node pack.

Importable without ComfyUI (nothing here imports it at module level); the
ComfyUI entry point is ``comfyui/streammask_nodes/__init__.py``, which
re-exports :data:`NODE_CLASS_MAPPINGS` and :data:`NODE_DISPLAY_NAME_MAPPINGS`.

Nodes (category ``streammask``):

* ``StreamMaskLoadCLIPSeg`` -- loads CLIPSeg once and returns a handle of type
  ``STREAMMASK_CLIPSEG`` (a :class:`~streammask.model.ClipSeg`). Loaded models
  are kept in a cache keyed by (model, revision, device, dtype), so re-queueing
  a workflow does not reload them; :func:`clear_model_cache` empties it.
* ``StreamMaskMixlab``, ``StreamMaskEssentials``, ``StreamMaskMaskByText`` --
  the ``mixlab``, ``essentials`` and ``masquerade`` variants on a ComfyUI
  ``IMAGE`` batch (``(B, H, W, 3)`` float in ``[0, 1]``), with the seed nodes'
  input names, defaults, ranges and outputs, plus the ``clipseg`` handle.
  Batches run in chunks of :data:`CHUNK_FRAMES` frames to bound device memory.
* ``StreamMaskVideo`` -- streams a whole video file through
  :func:`~streammask.pipeline.process_video` (never holding it in memory) and
  returns the paths of the mask / heatmap / matte files it wrote.

Every widget input is generated from a :class:`~streammask.params.Param`
declaration (the variant's ``params`` and ``RUN_PARAMS``), the same ones the
CLI and pipeline files use, so names, defaults and ranges cannot drift.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from .errors import ParameterError
from .model.clipseg import ClipSeg, load_clipseg, resolve_device, resolve_dtype
from .params import Param, ParamSet
from .pipeline.settings import RUN_PARAMS
from .pipeline.core import MaskPipeline
from .pipeline.run import process_video
from .variants import VARIANTS, get_variant
from .variants import check_prompt

__all__ = [
    "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "MODEL_TYPE", "CHUNK_FRAMES", "clear_model_cache",
    "parse_variant_params", "StreamMaskLoadCLIPSeg", "StreamMaskMixlab", "StreamMaskEssentials",
    "StreamMaskMaskByText", "StreamMaskVideo",
]

CATEGORY = "streammask"
MODEL_TYPE = "STREAMMASK_CLIPSEG"
CHUNK_FRAMES = 16  # frames per model call at 352x352; larger model inputs get proportionally fewer

# (model, revision, device, dtype) -> loaded model. A cache, not configuration:
# the handle always travels through the graph; this only avoids reloading.
_MODEL_CACHE: dict[tuple[str, str | None, str, str], ClipSeg] = {}


# -- inputs generated from Param declarations ----------------------------------

def _widget(p: Param, **ui: Any) -> tuple[str, tuple]:
    """``(input name, INPUT_TYPES entry)`` for a parameter; ``ui`` adds ComfyUI-only widget options."""
    kind, opts = p.comfy_input()
    return p.comfy_name or p.name, (kind, {**opts, "tooltip": p.help, **ui})


def _widgets(params, **per_name_ui: dict) -> dict[str, tuple]:
    return dict(_widget(p, **per_name_ui.get(p.name, {})) for p in params)


def _handle_input() -> dict[str, tuple]:
    return {"clipseg": (MODEL_TYPE, {"tooltip": "the model from a StreamMask Load CLIPSeg node"})}


def _prompt_param(name: str, *, multiline: bool) -> Param:
    return dataclasses.replace(RUN_PARAMS["prompt"], comfy_name=name, multiline=multiline)


def _device_choices() -> tuple[str, ...]:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ("auto", "cpu", "cuda") + (tuple(f"cuda:{i}" for i in range(count)) if count > 1 else ())


def _loader_params() -> ParamSet:
    return ParamSet((
        RUN_PARAMS["model"],
        dataclasses.replace(RUN_PARAMS["revision"], help="model revision (branch, tag or commit) to pin; empty: latest"),
        Param("device", "choice", "auto", "where the model runs (auto: CUDA when available)", choices=_device_choices()),
        RUN_PARAMS["dtype"],
    ), owner="StreamMaskLoadCLIPSeg")


# -- ComfyUI tensors <-> streammask tensors ------------------------------------

def _as_bhwc(image: Any) -> torch.Tensor:
    """A ComfyUI ``IMAGE`` as ``(B, H, W, 3)`` float32 on its device (gray expanded, alpha dropped)."""
    if not isinstance(image, torch.Tensor):
        raise ParameterError("image", type(image).__name__, "a ComfyUI IMAGE tensor (B, H, W, 3) float in [0, 1]")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] == 0 or image.shape[-1] not in (1, 3, 4) or not image.is_floating_point():
        raise ParameterError("image", f"{image.dtype} tensor of shape {tuple(image.shape)}",
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


def _check_handle(clipseg: Any) -> ClipSeg:
    if not isinstance(clipseg, ClipSeg):
        raise ParameterError("clipseg", type(clipseg).__name__, "the output of a StreamMask Load CLIPSeg node")
    return clipseg


def _run_pipeline(clipseg: ClipSeg, image: Any, prompt: str, variant: str, params: Mapping[str, Any], take) -> None:
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
    """Load CLIPSeg (Hugging Face id or local folder of safetensors weights) once, as a handle."""

    DESCRIPTION = "Loads CLIPSeg for the StreamMask nodes; loaded models are cached and reused across runs."
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("clipseg",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": _widgets(_loader_params())}

    def load(self, model: str, device: str = "auto", dtype: str = "auto", revision: str = "") -> tuple[ClipSeg]:
        p = _loader_params().validate(dict(model=model, device=device, dtype=dtype, revision=revision or None),
                                      where="StreamMaskLoadCLIPSeg")
        dev = resolve_device(p["device"])
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        # int8 is a load option (load_clipseg checks it against the device), not a torch dtype
        dt = p["dtype"] if p["dtype"] == "int8" else resolve_dtype(p["dtype"], dev)
        local = Path(p["model"]).expanduser()
        name = str(local.resolve()) if local.is_dir() else p["model"]
        key = (name, p["revision"], str(dev), str(dt).removeprefix("torch."))
        if key not in _MODEL_CACHE:
            _MODEL_CACHE[key] = load_clipseg(name, revision=p["revision"], device=dev, dtype=dt)
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

    def segment_image(self, image: torch.Tensor, text: str, clipseg: ClipSeg, **params: Any):
        """Returns ``Mask`` ``(B, H, W)``, ``Heatmap Mask`` and ``BW Mask`` ``(B, H, W, 3)``, float in ``[0, 1]``."""
        p = VARIANTS[self.VARIANT].validate(params, where=type(self).__name__)
        b, h, w = _as_bhwc(image).shape[:3]
        mask, heat, bw = torch.empty(b, h, w), torch.empty(b, h, w, 3), torch.empty(b, h, w, 3)

        def take(s, out):
            mask[s] = out.mask[:, 0].cpu()
            heat[s] = _image_out(out.heatmap)
            bw[s] = _image_out(out.extra["bw"])

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

    def execute(self, image: torch.Tensor, clipseg: ClipSeg, prompt: str, **params: Any):
        """Returns ``mask`` ``(B, H, W)`` float (bicubic: may leave ``[0, 1]`` unless ``clamp``, as the seed)."""
        p = VARIANTS[self.VARIANT].validate(params, where=type(self).__name__)
        b, h, w = _as_bhwc(image).shape[:3]
        mask = torch.empty(b, h, w)

        def take(s, out):
            mask[s] = out.mask[:, 0].cpu()

        _run_pipeline(clipseg, image, prompt, self.VARIANT, p, take)
        return (mask,)


class StreamMaskMaskByText:
    """masquerade "Mask By Text" (seed 003), batched: same inputs and outputs.

    The seed never quantizes the image, and neither does this node: the float
    image is normalised and resized on the device (an image from an 8-bit
    source gives exactly what the video pipeline gives on its uint8 frames).
    Like the seed, both outputs are typed ``IMAGE`` but shaped ``(B, H, W)``,
    so that masquerade's other nodes accept them. ``model_size`` defaults to
    ``max_side`` here (the seed's square of side max(W, H)); ``352`` is much
    faster on large images. ``normalize = yes`` rescales by the min and max
    over the whole input batch, as the seed does, however many chunks it takes.
    """

    VARIANT = "masquerade"
    DESCRIPTION = "masquerade Mask By Text: max over '|' prompts minus negative prompts, optional normalisation."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("thresholded_mask", "raw_mask")
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

    def get_mask(self, image: torch.Tensor, clipseg: ClipSeg, prompt: str, **params: Any):
        """Returns ``thresholded_mask`` (0/1) and ``raw_mask``, each ``(B, H, W)`` float."""
        variant = get_variant(self.VARIANT)
        unknown = [k for k in params if k not in self.SEED_INPUTS + self.EXTRA_INPUTS]
        if unknown:
            raise ParameterError(unknown[0], params[unknown[0]], "one of " + ", ".join(self.SEED_INPUTS + self.EXTRA_INPUTS))
        p = self._params().validate(params, where=type(self).__name__)
        seg = _check_handle(clipseg)
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
        return (thresholded, raw)


# -- video ---------------------------------------------------------------------------

def _video_params() -> ParamSet:
    return ParamSet((
        Param("video", "str", "", "input video file (a relative path is looked up in ComfyUI's input folder)"),
        RUN_PARAMS["prompt"],
        Param("variant", "choice", "soft", "post-processing variant", choices=tuple(VARIANTS)),
        Param("variant_params", "str", "", "the variant's parameters, one 'name = value' per line or separated "
              "by ';' (e.g. 'blur = 2; threshold = 0.4'); empty: its defaults", multiline=True),
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
    ), owner="StreamMaskVideo")


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


def _comfy_folder(kind: str) -> Path | None:
    """ComfyUI's input or output folder, or ``None`` outside ComfyUI."""
    try:
        import folder_paths
    except ImportError:
        return None
    return Path(folder_paths.get_input_directory() if kind == "input" else folder_paths.get_output_directory())


def _resolve(path: str, kind: str) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    folder = _comfy_folder(kind)
    if folder is None or (kind == "input" and p.exists() and not (folder / p).exists()):
        return p
    return folder / p


class StreamMaskVideo:
    """Mask a whole video file, streaming it in bounded memory, and return the written files' paths."""

    DESCRIPTION = ("Streams a video file through CLIPSeg and writes mask / heatmap / matte files "
                   "(named {stem}.{variant}.{kind}.{ext}); returns their paths ('' for outputs not requested).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "STRING", "STRING")
    RETURN_NAMES = ("mask_path", "heatmap_path", "matte_path")
    FUNCTION = "run"
    OUTPUT_NODE = True  # it writes files: run even when nothing consumes its outputs
    REQUIRED = ("video", "prompt", "variant", "outputs", "out_dir")

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        params = _video_params()
        return {
            "required": {**_handle_input(), **_widgets(params[n] for n in cls.REQUIRED)},
            "optional": _widgets(p for p in params if p.name not in cls.REQUIRED),
        }

    @classmethod
    def IS_CHANGED(cls, video: str = "", **_: Any) -> str:
        """Re-run when the input file changes, not only when the inputs do."""
        try:
            st = _resolve(video, "input").stat()
        except OSError:
            return ""
        return f"{st.st_mtime_ns}:{st.st_size}"

    def run(self, clipseg: ClipSeg, **inputs: Any) -> tuple[str, str, str]:
        p = _video_params().validate(inputs, where=type(self).__name__)
        seg = _check_handle(clipseg)
        if not p["video"].strip():
            raise ParameterError("video", p["video"], "the path of a video file")
        variant = p["variant"]
        progress: _ComfyProgress | None = None

        def on_batch(done: int, total: int | None) -> None:  # ComfyUI progress bar and Cancel between batches
            nonlocal progress
            if progress is None:
                progress = _ComfyProgress(total or 0)
            progress.check()
            progress.update(done - progress.done)
            progress.done = done

        summary = process_video(
            _resolve(p["video"], "input"), out_dir=_resolve(p["out_dir"], "output"), prompt=p["prompt"],
            variants={variant: parse_variant_params(p["variant_params"], variant)}, outputs=p["outputs"],
            batch_size=p["batch_size"] or None, mask_format=p["mask_format"], heatmap_format=p["heatmap_format"],
            matte_format=p["matte_format"], heatmap_alpha=p["heatmap_alpha"], colormap=p["colormap"],
            max_frames=p["max_frames"] or None, progress=p["progress"], segmenter=seg, on_batch=on_batch,
            audio=p["audio"], matte_style=p["matte_style"], matte_color=p["matte_color"],
            background=_resolve(p["background"], "input") if p["background"].strip() else None,
            overwrite=True,  # a node re-run replaces its own outputs, as ComfyUI users expect
        )
        return tuple(str(summary.outputs.get(f"{variant}.{kind}", "")) for kind in ("mask", "heatmap", "matte"))


NODE_CLASS_MAPPINGS = {
    "StreamMaskLoadCLIPSeg": StreamMaskLoadCLIPSeg,
    "StreamMaskMixlab": StreamMaskMixlab,
    "StreamMaskEssentials": StreamMaskEssentials,
    "StreamMaskMaskByText": StreamMaskMaskByText,
    "StreamMaskVideo": StreamMaskVideo,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "StreamMaskLoadCLIPSeg": "StreamMask Load CLIPSeg",
    "StreamMaskMixlab": "StreamMask CLIPSeg (mixlab)",
    "StreamMaskEssentials": "StreamMask Apply CLIPSeg+ (essentials)",
    "StreamMaskMaskByText": "StreamMask Mask By Text (masquerade)",
    "StreamMaskVideo": "StreamMask Video",
}
