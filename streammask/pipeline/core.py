"""The core of the pipeline: frames in, variant outputs out, batch by batch, on the segmenter's device.

:class:`MaskPipeline` plans one model call per preprocessing and size for every
variant's prompts, runs the variants' post-processing, and (on a stream) the temporal
smoother and the key-frame reducer; :meth:`MaskPipeline.render` turns a variant's
output into host images (:mod:`.render`).
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np
import torch

from ..errors import ParameterError
from ..refine import MatteRefiner
from ..temporal.keyframes import DEFAULT_STATIC_PSNR, WorkReducer
from ..temporal.smoothers import TEMPORAL_PARAMS, smoother_for
from ..variants import VariantOutput, check_prompt, get_variant
from .render import MATTE_ALPHA, render
from .settings import RUN_PARAMS, normalize_variants
from .transfer import PendingHost, upload

__all__ = ["Segmenter", "MaskPipeline", "REFINED_MASK_VARIANTS", "check_supported_variants"]

REFINED_MASK_VARIANTS = ("soft",)
"""Variants whose mask itself (and so their mask, heatmap and matte outputs) the matte refinement
replaces; every other variant keeps its exact mask and heatmap (the seed nodes' output), and only
its matte's alpha is refined."""


class Segmenter(Protocol):
    """Anything that turns frames into logits: :class:`~streammask.model.ClipSeg`, or a test oracle.

    A *stateful* segmenter (SAM 3: :class:`~streammask.model.sam3.Sam3Segmenter`, whose output for a frame
    depends on the frames before it) also has ``open_stream()``, returning a per-video object with this same
    ``segment`` interface plus ``state_dict()`` / ``load_state_dict()``; :class:`MaskPipeline` opens one per
    stream and hands its state over with the temporal smoothers'. A segmenter may restrict the variants it
    serves (``supported_variants``, with the reason in ``variants_note``).
    """

    device: torch.device
    size: int

    def segment(self, frames: torch.Tensor, prompts: Sequence[str], *, preprocess: str = "pil",
                size: int | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 frames -> ``(B, P, S, S)`` float32 logits."""
        ...


def check_supported_variants(segmenter: Any, variants: Iterable[str]) -> None:
    """Refuse a variant the segmenter does not serve (its ``supported_variants``; SAM 3: ``soft`` only).

    Raises:
        ParameterError: naming ``variants``, the variant and the ones allowed, with the segmenter's
            ``variants_note`` (why).
    """
    supported = getattr(segmenter, "supported_variants", None)
    for name in variants if supported is not None else ():
        if name not in supported:
            raise ParameterError("variants", name, " or ".join(repr(v) for v in supported) + " with "
                                 f"{type(segmenter).__name__}: {getattr(segmenter, 'variants_note', '')}")


class MaskPipeline:
    """Frames in, variant outputs out, batch by batch, on the segmenter's device.

    Args:
        segmenter: a loaded :class:`~streammask.model.ClipSeg` (or any :class:`Segmenter`).
        prompt: the prompt text.
        variants: variant names, or ``{name: params}``.
        heatmap_alpha: opacity of the default heatmap overlay.
        colormap: colormap of the default heatmap overlay.
        stride, skip_static, static_psnr: reduced work in :meth:`process_stream` (the model on key
            frames only, masks carried to the others; see :class:`~streammask.temporal.keyframes.WorkReducer`);
            :meth:`process` always runs the model on every frame.
        refiner: the matte refinement and edge controls (:class:`~streammask.refine.MatteRefiner`), or
            ``None``. Per frame, after each variant's post-processing: it replaces the mask of the
            :data:`REFINED_MASK_VARIANTS` (``soft``) and gives every other variant a refined matte
            alpha (``extra["matte_alpha"]``, which :meth:`render` writes into the matte) while their
            own mask stays exact.
        refine_mattes: compute the other variants' refined matte alpha (``False`` when no matte is
            written: :func:`~streammask.process_video` skips the work).

    Example:
        >>> pipe = MaskPipeline(load_clipseg("path/to/clipseg"), prompt="person")  # doctest: +SKIP
        >>> out = pipe.process(frames_uint8_bhwc)  # doctest: +SKIP
        >>> out["soft"].mask.shape  # (B, 1, H, W)  # doctest: +SKIP
    """

    def __init__(self, segmenter: Segmenter, *, prompt: str, variants: Any = ("soft",), heatmap_alpha: float = 0.5,
                 colormap: str = "jet", temporal: str = "none", stride: int = 1, skip_static: bool = False,
                 static_psnr: float = DEFAULT_STATIC_PSNR, refiner: MatteRefiner | None = None,
                 refine_mattes: bool = True, **temporal_options: Any) -> None:
        check_prompt(prompt)
        self.segmenter = segmenter
        self.prompt = prompt
        self.variants = normalize_variants(variants)
        self.heatmap_alpha = RUN_PARAMS["heatmap_alpha"].validate(heatmap_alpha)
        self.colormap = RUN_PARAMS["colormap"].validate(colormap)
        self.temporal = dict(TEMPORAL_PARAMS.validate(dict(temporal_options, temporal=temporal)))
        smoother_for(self.temporal)  # validate now, not at the first batch
        check_supported_variants(segmenter, self.variants)
        check = getattr(segmenter, "check_prompts", None)
        if check is not None:  # CLIP's 77-token limit: refuse now, not at the first batch
            check(self._labelled_prompts())
        self.stream = self._open_stream()  # a stateful segmenter's per-video state (SAM 3's tracker), else None
        self.state: dict[str, dict] = {name: {} for name in self.variants}  # per-stream variant state
        self.refiner = refiner if refiner is not None and refiner.active else None  # stateless, per frame
        self.refine_mattes = refine_mattes
        self._smoothers: dict[tuple[str, int], Any] = {}
        self.reducer = WorkReducer(stride=stride, skip_static=skip_static, static_psnr=static_psnr,
                                   cut_threshold=self.temporal["cut_threshold"], flow_side=self.temporal["flow_side"],
                                   flow_algorithm=self.temporal["flow_algorithm"])  # stream path only

    def _labelled_prompts(self) -> list[tuple[str, str]]:
        """Every prompt text the variants send to the model, with the parameter it comes from."""
        main = {self.prompt, *self.prompt.split("|")}
        pairs: dict[str, str] = {}
        for name, params in self.variants.items():
            for q in get_variant(name).prompts(self.prompt, params):
                pairs.setdefault(q, "prompt" if q in main else f"{name}.negative_prompt")
        return [(label, q) for q, label in pairs.items()]

    def _open_stream(self):
        open_stream = getattr(self.segmenter, "open_stream", None)
        return open_stream() if open_stream is not None else None

    @property
    def model(self) -> Segmenter:
        """What the frames go through: the stream of a stateful segmenter, else the segmenter itself."""
        return self.stream if self.stream is not None else self.segmenter

    def reset(self) -> None:
        """Forget per-stream state: variant statistics, temporal smoothing and a stateful segmenter's
        tracking (call between videos)."""
        self.state = {name: {} for name in self.variants}
        self._smoothers = {}
        self.reducer.reset()
        self.stream = self._open_stream()

    def stream_state(self) -> dict[str, Any]:
        """The per-stream state (variant statistics, temporal smoothers, the ``--stride`` /
        ``--skip-static`` reducer) as copies: hand it to
        :meth:`load_stream_state` of a pipeline with the same settings to continue the stream."""
        return {"variants": copy.deepcopy(self.state),
                "smoothers": {key: sm.state_dict() for key, sm in self._smoothers.items()},
                "reducer": self.reducer.state_dict() if self.reducer.enabled else None,
                "segmenter": self.stream.state_dict() if self.stream is not None else None}

    def load_stream_state(self, state: Mapping[str, Any]) -> None:
        """Continue a stream from :meth:`stream_state`."""
        self.state = {name: copy.deepcopy(dict(state.get("variants", {}).get(name, {}))) for name in self.variants}
        self._smoothers = {}
        for key, sm_state in state.get("smoothers", {}).items():
            smoother = smoother_for(self.temporal)
            smoother.load_state_dict(sm_state)
            self._smoothers[key] = smoother
        self.reducer.reset()
        if state.get("reducer") is not None:  # --stride / --skip-static: the key frame and the stride phase
            self.reducer.load_state_dict(state["reducer"])
        if self.stream is not None:  # a stateful segmenter: the tracker's memory and ids
            self.stream = self._open_stream()
            if state.get("segmenter") is not None:
                self.stream.load_state_dict(state["segmenter"])

    def continue_stream(self, previous: "MaskPipeline") -> bool:
        """Take over ``previous``'s per-stream state (temporal history, variant statistics), shared,
        not copied, when it runs the same prompt (the same logits): the live preview changing a
        threshold keeps its smoothing. Returns whether the state was taken over."""
        if previous.prompt != self.prompt or previous.temporal != self.temporal:
            return False
        self._smoothers = previous._smoothers
        if previous.stream is not None and previous.segmenter is self.segmenter:
            self.stream = previous.stream  # SAM 3: the tracker goes on with the same ids
        self.state = {name: previous.state.get(name, {}) for name in self.variants}
        return True

    @property
    def delay(self) -> int:
        """Frames the temporal smoother looks ahead (a centered window holds frames back); 0 when causal."""
        return smoother_for(self.temporal).delay

    @property
    def device(self) -> torch.device:
        return self.segmenter.device

    def to_device(self, frames: Any) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 numpy/tensor -> ``(B, 3, H, W)`` uint8 tensor on the device."""
        return upload(frames, self.device).get()

    def _plan(self, hw: tuple[int, int]):
        """One model call per (preprocess, size): the union of every variant's prompts."""
        groups: dict[tuple[str, int], list[str]] = {}
        needs = {}
        for name, params in self.variants.items():
            v = get_variant(name)
            key = (v.preprocess, v.model_size(params, hw, self.segmenter.size))
            prompts = v.prompts(self.prompt, params)
            needs[name] = (key, prompts)
            group = groups.setdefault(key, [])
            group.extend(q for q in prompts if q not in group)
        return groups, needs

    def _logits(self, x: torch.Tensor):
        groups, needs = self._plan(tuple(x.shape[-2:]))
        logits = {key: self.model.segment(x, prompts, preprocess=key[0], size=key[1]) for key, prompts in groups.items()}
        return logits, groups, needs

    def _variants(self, logits, groups, needs, x: torch.Tensor) -> dict[str, VariantOutput]:
        out = {}
        for name, params in self.variants.items():
            key, prompts = needs[name]
            idx = [groups[key].index(q) for q in prompts]
            out[name] = self._refine(name, get_variant(name).postprocess(logits[key][:, idx], x, self.prompt, params,
                                                                          self.state[name]), x)
        return out

    def _refine(self, name: str, result: VariantOutput, x: torch.Tensor) -> VariantOutput:
        """The matte refinement and edge controls (see ``refiner`` in the class docstring)."""
        if self.refiner is None:
            return result
        if name in REFINED_MASK_VARIANTS:
            result.mask = self.refiner(x, result.mask)
        elif self.refine_mattes:
            result.extra[MATTE_ALPHA] = self.refiner(x, result.mask.clamp(0, 1))
        return result

    def _as_device_frames(self, frames: Any) -> torch.Tensor:
        if isinstance(frames, torch.Tensor) and frames.dim() == 4 and frames.shape[1] == 3 and frames.shape[-1] != 3:
            return frames.to(self.device)
        return self.to_device(frames)

    @torch.inference_mode()
    def process(self, frames: Any) -> dict[str, VariantOutput]:
        """Run every variant on a batch, without temporal smoothing.

        Args:
            frames: ``(B, H, W, 3)`` uint8 RGB frames (numpy or torch, any device), or
                ``(B, 3, H, W)`` uint8 already on the device.

        Returns:
            ``{variant: VariantOutput}`` with tensors on the device.
        """
        x = self._as_device_frames(frames)
        logits, groups, needs = self._logits(x)
        return self._variants(logits, groups, needs, x)

    @torch.inference_mode()
    def process_stream(self, frames: Any, payload: Sequence[Any]):
        """Run a batch of consecutive frames of one stream, with temporal smoothing.

        A smoother with look-ahead (centered windows) may hold frames back and return
        them with a later call or :meth:`flush_stream`, each with its own frame and
        payload item (pass e.g. ``(pts, host_frame)`` per frame).

        Returns:
            ``(results, frames, payload)``: ``results`` is ``{variant: VariantOutput}``
            for the returned frames (``None`` when none is ready), ``frames`` the
            ``(N, 3, H, W)`` device frames they belong to, ``payload`` their items.
        """
        x = self._as_device_frames(frames)
        if self.reducer.enabled:  # --stride / --skip-static: the model on key frames only
            groups, needs = self._plan(tuple(x.shape[-2:]))
            logits = self.reducer.logits(x, lambda keys: self._logits(keys)[0])
        else:
            logits, groups, needs = self._logits(x)
        if self.temporal["temporal"] == "none":
            return self._variants(logits, groups, needs, x), x, list(payload)
        smoothed = {}
        x_out, pay_out = x, list(payload)
        for key, value in logits.items():
            smoother = self._smoothers.get(key)
            if smoother is None:
                smoother = self._smoothers[key] = smoother_for(self.temporal)
            smoothed[key], x_out, pay_out = smoother.update(value, x, list(payload))
        if not pay_out:
            return None, x_out, []
        return self._variants(smoothed, groups, needs, x_out), x_out, list(pay_out)

    @torch.inference_mode()
    def flush_stream(self):
        """End of stream: the frames a look-ahead smoother still holds, as :meth:`process_stream`."""
        if not self._smoothers:
            return None, None, []
        smoothed = {}
        x_out, pay_out = None, []
        for key, smoother in self._smoothers.items():
            smoothed[key], x_out, pay_out = smoother.flush()
        if not pay_out:
            return None, x_out, []
        groups, needs = self._plan(tuple(x_out.shape[-2:]))
        return self._variants(smoothed, groups, needs, x_out), x_out, list(pay_out)

    def render(self, frames: torch.Tensor, result: VariantOutput, kinds: Sequence[str],
               host_frames: np.ndarray | None = None, **options: Any) -> dict[str, np.ndarray] | PendingHost:
        """Turn a variant's output into uint8 (or uint16) host images per output kind, with this
        pipeline's heatmap colormap and opacity: :func:`~streammask.pipeline.render.render`."""
        return render(frames, result, kinds, host_frames, colormap=self.colormap, heatmap_alpha=self.heatmap_alpha,
                      **options)
