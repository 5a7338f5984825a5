"""Variants: the post-processing semantics of a mask, declared once.

A variant turns model logits into a soft mask at the frame's size (plus, for
some, its own heatmap). Each declares its parameters (:class:`~streammask.params.Param`)
which generate CLI flags (``--mixlab-blur``), pipeline-file keys
(``[variants.mixlab] blur = ...``) and ComfyUI inputs.

``soft`` is streammask's own default; ``mixlab``, ``essentials`` and
``masquerade`` reproduce three ComfyUI nodes (see the README's table of
deviations).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from . import ops
from .errors import ParameterError
from .params import Param, ParamSet

__all__ = ["Variant", "VariantOutput", "VARIANTS", "get_variant", "split_prompts", "check_prompt"]


def split_prompts(text: str) -> list[str]:
    """``"sky|trees"`` -> ``["sky", "trees"]`` (blank parts dropped)."""
    return [p.strip() for p in text.split("|") if p.strip()]


def check_prompt(prompt: Any, *, name: str = "prompt", where: str = "") -> str:
    """Refuse a prompt without text: empty, blank, or only ``|`` separators (``"|"``).

    Args:
        prompt: the prompt as given.
        name: the parameter's name in the face that took it (``--prompt``, ``text``, ...).
        where: what to add to the message (where else the prompt can be given).

    Returns:
        ``prompt``, unchanged.

    Raises:
        ParameterError: naming ``name`` and the value.
    """
    if not isinstance(prompt, str) or not split_prompts(prompt):
        raise ParameterError(name, prompt, "a non-empty text such as 'person' or 'sky|trees'" + where)
    return prompt


@dataclass
class VariantOutput:
    """What a variant produces for a batch, on the device.

    Attributes:
        mask: ``(B, 1, H, W)`` float, the mask at the frame size (may leave
            ``[0, 1]`` for the faithful essentials mode; writers clamp).
        heatmap: ``(B, 3, H, W)`` uint8, the variant's own heatmap overlay, or
            ``None`` to use the run's default overlay.
        extra: further named outputs (ComfyUI nodes return them).
    """

    mask: torch.Tensor
    heatmap: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


class Variant(ABC):
    """Base class: declare ``name``, ``params``, ``preprocess`` and implement :meth:`postprocess`."""

    name: str = ""
    title: str = ""
    params: ParamSet = ParamSet(())
    preprocess: str = "pil"
    threshold_param: str = "threshold"  # the parameter `--threshold` and the live preview's up/down keys set

    def prompts(self, prompt: str, p: Mapping[str, Any]) -> list[str]:
        """All prompt texts whose logits the variant needs, in order."""
        return split_prompts(prompt)

    def model_size(self, p: Mapping[str, Any], frame_hw: tuple[int, int], default: int) -> int:
        return default

    @abstractmethod
    def postprocess(self, logits: torch.Tensor, frames: torch.Tensor, prompt: str, p: Mapping[str, Any],
                    state: dict | None = None) -> VariantOutput:
        """Turn logits into outputs.

        Args:
            logits: ``(B, P, S, S)`` float32 for the prompts of :meth:`prompts`.
            frames: ``(B, 3, H, W)`` uint8 RGB on the same device.
            prompt: the prompt text as the user gave it.
            p: validated parameters.
            state: a dict the caller keeps for one stream (one per variant and video), for
                variants whose output depends on earlier batches; ``None`` for stateless use.
        """

    def validate(self, values: Mapping[str, Any] | None, *, where: str | None = None) -> dict[str, Any]:
        return self.params.validate(values, where=where)


class SoftVariant(Variant):
    """streammask's default: the probability map, optionally cut, blurred and grown."""

    name = "soft"
    title = "Soft probability mask"
    params = ParamSet((
        Param("threshold", "float", 0.0, "cut probabilities below this to 0 (0 keeps the soft map)", min=0.0, max=1.0, step=0.01),
        Param("binary", "bool", False, "output 1 where the probability exceeds the threshold, else 0"),
        Param("blur", "float", 0.0, "Gaussian blur sigma in model pixels (352 across), applied after the cut", min=0.0, max=32.0, step=0.1),
        Param("dilate", "int", 0, "grow (>0) or shrink (<0) the mask by this many model pixels", min=-32, max=32),
        Param("invert", "bool", False, "invert the mask (1 - mask)"),
    ), owner="soft")

    def postprocess(self, logits, frames, prompt, p, state=None):
        prob = torch.sigmoid(logits).amax(dim=1, keepdim=True)
        if p["binary"]:
            prob = (prob > p["threshold"]).float()
        elif p["threshold"] > 0:
            prob = ops.threshold_keep(prob, p["threshold"])
        if p["dilate"]:
            prob = ops.cross_dilate(prob, p["dilate"])
        if p["blur"] > 0:
            prob = ops.gaussian_blur_scipy(prob, p["blur"])
        mask = ops.resize(prob, tuple(frames.shape[-2:]), "bilinear").clamp_(0, 1)
        if p["invert"]:
            mask = 1.0 - mask
        return VariantOutput(mask=mask)


class MixlabVariant(Variant):
    """mixlab "CLIPSeg" (seed 000)."""

    name = "mixlab"
    title = "mixlab CLIPSeg"
    params = ParamSet((
        Param("blur", "float", 3.0, "Gaussian blur sigma (scipy gaussian_filter) at 352x352", min=0.0, max=15.0, step=0.1),
        Param("threshold", "float", 0.3, "probabilities at or below this become 0", min=0.0, max=1.0, step=0.05),
        Param("dilation_factor", "int", 4, "dilate with a square of side 2*f+1", min=0, max=10, step=1),
    ), owner="mixlab")
    prompt_name = "text"

    def prompts(self, prompt, p):
        return [prompt]  # the seed encodes the text as one prompt, '|' included

    def postprocess(self, logits, frames, prompt, p, state=None):
        prob = torch.sigmoid(logits[:, :1])
        x = ops.threshold_keep(prob, p["threshold"])
        x = ops.gaussian_blur_scipy(x, p["blur"])
        # Nothing above the threshold: the seed divides 0 by 0 and its whole map is NaN,
        # which matplotlib colours with the "bad" colour, black, in both colormaps. Keep
        # that (a black heatmap layer, an all-zero mask) without letting NaN through.
        x = ops.minmax_normalize(x, nan_to_zero=False)
        empty = torch.isnan(x).flatten(1).any(dim=1).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        x = torch.nan_to_num(x, nan=0.0)
        x = ops.box_dilate(x, int(p["dilation_factor"] * 2) + 1)
        size = tuple(frames.shape[-2:])
        black = torch.zeros((), dtype=torch.uint8, device=x.device)
        heat = torch.where(empty, black, ops.apply_colormap(x, "viridis"))
        bw = torch.where(empty, black, ops.apply_colormap(x, "greys_r")[:, :1])
        heat = ops.resize_cv2_linear(heat, size)  # the seed's cv2.resize(INTER_LINEAR) of uint8, bit for bit
        bw = ops.resize_cv2_linear(bw, size)
        heatmap = ops.blend(frames, heat, 0.5)  # cv2.addWeighted(frame, 0.5, heat, 0.5, 0)
        return VariantOutput(mask=bw.float() / 255.0, heatmap=heatmap, extra={"bw": bw.expand(-1, 3, -1, -1)})


class EssentialsVariant(Variant):
    """essentials "Apply CLIPSeg+" (seed 001)."""

    name = "essentials"
    title = "essentials Apply CLIPSeg+"
    params = ParamSet((
        Param("threshold", "float", 0.4, "probability above which a pixel is in the mask", min=0.0, max=1.0, step=0.05),
        Param("smooth", "int", 9, "torchvision v2 Gaussian blur (kernel size, made odd) of the binary mask, rounded back to binary", min=0, max=32, step=1),
        Param("dilate", "int", 0, "grow (>0) or shrink (<0) by this many 3x3-cross passes", min=-32, max=32, step=1),
        Param("blur", "int", 0, "torchvision v2 Gaussian blur (kernel size, made odd) of the float mask", min=0, max=64, step=1),
        Param("clamp", "bool", False, "clamp the bicubic-resized mask to [0, 1] (the seed does not)"),
    ), owner="essentials")

    def prompts(self, prompt, p):
        return [prompt]

    def postprocess(self, logits, frames, prompt, p, state=None):
        x = torch.sigmoid(logits[:, :1]) > p["threshold"]  # bool, as the seed's
        smooth = int(p["smooth"])
        if smooth > 0:
            smooth += 1 - smooth % 2
            # torchvision v2 (the node's ``transforms.v2``) blurs the *boolean* mask in float32,
            # rounds and casts back: True where the Gaussian-weighted share of True pixels is
            # above 0.5, a majority-type filter (not a dilation).
            x = ops.gaussian_blur_torchvision(x, smooth)
        x = x.float()
        if p["dilate"]:
            x = ops.cross_dilate(x, int(p["dilate"]))
        blur = int(p["blur"])
        if blur > 0:
            blur += 1 - blur % 2
            x = ops.gaussian_blur_torchvision(x, blur)
        mask = ops.resize(x, tuple(frames.shape[-2:]), "bicubic")
        if p["clamp"]:
            mask = mask.clamp(0, 1)
        return VariantOutput(mask=mask)


class MasqueradeVariant(Variant):
    """masquerade "Mask By Text" (seed 003)."""

    name = "masquerade"
    threshold_param = "precision"
    title = "masquerade Mask By Text"
    preprocess = "imagenet_float"
    params = ParamSet((
        Param("negative_prompt", "str", "", "prompts to subtract, separated by '|' (empty: none)", multiline=True),
        Param("precision", "float", 0.5, "threshold of thresholded_mask (mask >= precision)", min=0.0, max=1.0, step=0.01),
        Param("normalize", "choice", "no", "rescale the mask by its min and max", choices=("no", "yes")),
        Param("normalize_scope", "choice", "batch",
              "min/max over each 'batch' (the seed), each 'frame', or 'running': over all frames so far in the stream",
              choices=("batch", "frame", "running")),
        Param("output", "choice", "raw", "which mask the mask/matte outputs carry", choices=("raw", "thresholded")),
        Param("model_size", "choice", "352", "model input side: '352' (fast) or 'max_side' (the seed: max(W, H))", choices=("352", "max_side")),
    ), owner="masquerade")

    def prompts(self, prompt, p):
        pos = prompt.split("|")
        neg = p["negative_prompt"].split("|") if p["negative_prompt"] != "" else []
        return pos + neg

    def model_size(self, p, frame_hw, default):
        return max(frame_hw) if p["model_size"] == "max_side" else default

    def postprocess(self, logits, frames, prompt, p, state=None):
        n_pos = len(prompt.split("|"))
        size = tuple(frames.shape[-2:])
        prob = torch.sigmoid(ops.resize(logits, size, "nearest"))
        mask = prob[:, :n_pos].amax(dim=1, keepdim=True)
        if prob.shape[1] > n_pos:
            mask = torch.minimum(mask, 1.0 - prob[:, n_pos:].amax(dim=1, keepdim=True))
        if p["normalize"] == "yes":
            if p["normalize_scope"] == "frame":
                mask = ops.minmax_normalize(mask, nan_to_zero=True)
            elif p["normalize_scope"] == "running" and state is not None:
                # causal per-clip statistics: the min/max over every frame seen so far in this stream
                # (frame by frame, so the result does not depend on the batch size)
                flat = mask.flatten(1)
                lo = torch.cummin(flat.amin(dim=1), dim=0).values
                hi = torch.cummax(flat.amax(dim=1), dim=0).values
                if "lo" in state:
                    lo = torch.minimum(lo, state["lo"])
                    hi = torch.maximum(hi, state["hi"])
                state["lo"], state["hi"] = lo[-1], hi[-1]
                lo, hi = lo.view(-1, 1, 1, 1), hi.view(-1, 1, 1, 1)
                mask = torch.nan_to_num((mask - lo) / (hi - lo), nan=0.0)
            else:
                lo, hi = mask.min(), mask.max()
                mask = torch.nan_to_num((mask - lo) / (hi - lo), nan=0.0)
        thresholded = (mask >= p["precision"]).float()
        out = thresholded if p["output"] == "thresholded" else mask
        return VariantOutput(mask=out, extra={"thresholded_mask": thresholded, "raw_mask": mask})


VARIANTS: dict[str, Variant] = {v.name: v for v in (SoftVariant(), MixlabVariant(), EssentialsVariant(), MasqueradeVariant())}


def get_variant(name: str) -> Variant:
    """The registered variant called ``name``."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ParameterError("variant", name, "one of " + ", ".join(repr(n) for n in VARIANTS)) from None
