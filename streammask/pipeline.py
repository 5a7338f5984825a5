"""The streaming pipeline: decode -> segment -> variants -> outputs.

* :class:`MaskPipeline` works batch by batch on frames a caller brings.
* :func:`process_video` streams a file through it: a decode thread, inference
  on the caller's thread, one encoder thread per output file, all connected by
  bounded queues, with a progress bar and a :class:`RunSummary` at the end.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch

from . import ops
from .errors import ParameterError
from .model import DEFAULT_MODEL, DTYPES, load_clipseg
from .params import Param, ParamSet
from .safety import (DEFAULT_OUTPUT_TEMPLATE, check_outputs, ensure_output_dir, fit_batch_to_memory, plan_outputs,
                     queue_slots)
from .perf import MODEL_SPEED_PARAMS, choose_batch_size, count_prompts, model_speed_options
from .reduce import DEFAULT_STATIC_PSNR, REDUCE_PARAMS, WorkReducer
from .stages import SinkThread, StageTimer, prefetch
from .temporal import TEMPORAL_PARAMS, make_temporal
from .transfer import HostCopy, PendingHost, upload, upload_batches
from .variants import VARIANTS, VariantOutput, get_variant
from .video import probe, read_batches
from .writers import FORMATS, OUTPUT_PARAMS, make_writer, output_look

if TYPE_CHECKING:
    from .segments import FrameRange

__all__ = ["Segmenter", "MaskPipeline", "RunSummary", "process_video", "RUN_PARAMS", "OUTPUT_KINDS", "normalize_variants"]

OUTPUT_KINDS = ("mask", "heatmap", "matte")

RUN_PARAMS = ParamSet((
    Param("prompt", "str", "", "text prompt; several prompts separated by '|' (e.g. 'sky|trees')"),
    Param("out_dir", "str", "streammask-out", "output folder", cli_aliases=("-o",)),
    Param("variants", "list", ("soft",), "post-processing variants to run in one pass", choices=tuple(VARIANTS),
          cli_aliases=("--variant",)),
    Param("outputs", "list", OUTPUT_KINDS, "outputs to write per variant", choices=OUTPUT_KINDS),
    Param("model", "str", DEFAULT_MODEL, "Hugging Face model id or local directory of CLIPSeg weights (safetensors)"),
    Param("revision", "str", None, "model revision (branch, tag or commit) to pin", nullable=True),
    Param("device", "str", "auto", "auto | cpu | cuda | cuda:N"),
    Param("dtype", "choice", "auto", "model precision (auto: float16 on CUDA, float32 on CPU; int8: CPU only, "
          "~2x faster there, within a stated tolerance of float32)", choices=DTYPES),
    Param("batch_size", "int", None, "frames per model batch; none/auto: from free GPU memory on CUDA, 1 on a CPU "
          "(the fastest there)", min=1, max=1024, nullable=True),
    Param("mask_format", "choice", "mp4", "mask file format", choices=tuple(FORMATS["mask"])),
    Param("heatmap_format", "choice", "mp4", "heatmap file format", choices=tuple(FORMATS["heatmap"])),
    Param("matte_format", "choice", "prores", "matte file format", choices=tuple(FORMATS["matte"])),
    Param("heatmap_alpha", "float", 0.5, "opacity of the colormap over the frame (variants without their own heatmap)",
          min=0.0, max=1.0),
    Param("colormap", "choice", "jet", "colormap of the heatmap (variants without their own heatmap)",
          choices=ops.COLORMAPS),
    Param("max_frames", "int", None, "stop after this many frames", min=1, nullable=True),
    Param("queue_size", "int", 4, "batches buffered between stages", min=1, max=64),
    Param("progress", "bool", True, "show a progress bar on stderr"),
    Param("strict", "bool", False, "stop with an error at the first damaged packet (default: skip it, count it, go on)"),
    Param("keep_partial", "bool", False,
          "on an error or interruption, finalize the outputs written so far (playable) instead of deleting them"),
    *TEMPORAL_PARAMS,
    *OUTPUT_PARAMS,
    Param("overwrite", "bool", False, "replace existing outputs (default: refuse to start when one exists)"),
    Param("output_template", "str", DEFAULT_OUTPUT_TEMPLATE,
          "output name without its suffix; fields {stem}, {variant}, {kind}; must stay a plain name in out_dir"),
    Param("max_batch_mb", "float", 256.0, "most MB of decoded frames per batch and per queue: batch_size and queue "
          "sizes are reduced for large frames (8K: 2 frames per batch)", min=1.0),
    *MODEL_SPEED_PARAMS,
    *REDUCE_PARAMS,
))


class Segmenter(Protocol):
    """Anything that turns frames into logits: :class:`~streammask.model.ClipSeg`, or a test oracle."""

    device: torch.device
    size: int

    def segment(self, frames: torch.Tensor, prompts: Sequence[str], *, preprocess: str = "pil",
                size: int | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 frames -> ``(B, P, S, S)`` float32 logits."""
        ...


def normalize_variants(variants: Any) -> dict[str, dict[str, Any]]:
    """``"mixlab"`` / ``["soft", "mixlab"]`` / ``{"mixlab": {"blur": 2}}`` -> validated ``{name: params}``."""
    if isinstance(variants, str):
        variants = [v for v in variants.split(",") if v.strip()]
    if isinstance(variants, Mapping):
        items = list(variants.items())
    else:
        items = [(v, {}) for v in variants]
    if not items:
        raise ParameterError("variants", variants, "at least one of " + ", ".join(VARIANTS))
    out: dict[str, dict[str, Any]] = {}
    for name, params in items:
        name = name.strip()
        out[name] = get_variant(name).validate(params or {})
    return out


@dataclass
class RunSummary:
    """What :func:`process_video` did."""

    source: str
    frames: int
    seconds: float
    outputs: dict[str, Path]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    text_encodes: int | None = None
    damaged_packets: int = 0
    batch_size: int | None = None  # the batch size used (chosen automatically unless given)
    model_frames: int | None = None  # frames the model ran on, with --stride / --skip-static (None: every frame)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    def describe(self) -> str:
        lines = [f"{self.frames} frames in {self.seconds:.2f} s ({self.fps:.2f} frames/s end to end)"]
        for stage, sec in sorted(self.stage_seconds.items()):
            rate = self.frames / sec if sec > 0 else float("inf")
            lines.append(f"  {stage:<28} {sec:8.2f} s busy  ({rate:9.1f} frames/s)")
        if self.model_frames is not None:
            lines.append(f"  model ran on {self.model_frames} of {self.frames} frames (--stride / --skip-static)")
        if self.damaged_packets:
            lines.append(f"  skipped {self.damaged_packets} damaged packet(s) in the input (--strict makes this an error)")
        for key, path in self.outputs.items():
            lines.append(f"  wrote {key:<22} {path}")
        return "\n".join(lines)


class MaskPipeline:
    """Frames in, variant outputs out, batch by batch, on the segmenter's device.

    Args:
        segmenter: a loaded :class:`~streammask.model.ClipSeg` (or any :class:`Segmenter`).
        prompt: the prompt text.
        variants: variant names, or ``{name: params}``.
        heatmap_alpha: opacity of the default heatmap overlay.
        colormap: colormap of the default heatmap overlay.
        stride, skip_static, static_psnr: reduced work in :meth:`process_stream` (the model on key
            frames only, masks carried to the others; see :class:`~streammask.reduce.WorkReducer`);
            :meth:`process` always runs the model on every frame.

    Example:
        >>> pipe = MaskPipeline(load_clipseg("path/to/clipseg"), prompt="person")  # doctest: +SKIP
        >>> out = pipe.process(frames_uint8_bhwc)  # doctest: +SKIP
        >>> out["soft"].mask.shape  # (B, 1, H, W)  # doctest: +SKIP
    """

    def __init__(self, segmenter: Segmenter, *, prompt: str, variants: Any = ("soft",), heatmap_alpha: float = 0.5,
                 colormap: str = "jet", temporal: str = "none", stride: int = 1, skip_static: bool = False,
                 static_psnr: float = DEFAULT_STATIC_PSNR, **temporal_options: Any) -> None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ParameterError("prompt", prompt, "a non-empty text such as 'person' or 'sky|trees'")
        self.segmenter = segmenter
        self.prompt = prompt
        self.variants = normalize_variants(variants)
        self.heatmap_alpha = RUN_PARAMS["heatmap_alpha"].validate(heatmap_alpha)
        self.colormap = RUN_PARAMS["colormap"].validate(colormap)
        self.temporal = dict(TEMPORAL_PARAMS.validate(dict(temporal_options, temporal=temporal)))
        make_temporal(**{"name": temporal, **self.temporal})  # validate now, not at the first batch
        check = getattr(segmenter, "check_prompts", None)
        if check is not None:  # CLIP's 77-token limit: refuse now, not at the first batch
            check(self._labelled_prompts())
        self.state: dict[str, dict] = {name: {} for name in self.variants}  # per-stream variant state
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

    def reset(self) -> None:
        """Forget per-stream state: variant statistics and temporal smoothing (call between videos)."""
        self.state = {name: {} for name in self.variants}
        self._smoothers = {}
        self.reducer.reset()

    def stream_state(self) -> dict[str, Any]:
        """The per-stream state (variant statistics, temporal smoothers, the ``--stride`` /
        ``--skip-static`` reducer) as copies: hand it to
        :meth:`load_stream_state` of a pipeline with the same settings to continue the stream."""
        import copy

        return {"variants": copy.deepcopy(self.state),
                "smoothers": {key: sm.state_dict() for key, sm in self._smoothers.items()},
                "reducer": self.reducer.state_dict() if self.reducer.enabled else None}

    def load_stream_state(self, state: Mapping[str, Any]) -> None:
        """Continue a stream from :meth:`stream_state`."""
        import copy

        self.state = {name: copy.deepcopy(dict(state.get("variants", {}).get(name, {}))) for name in self.variants}
        self._smoothers = {}
        for key, sm_state in state.get("smoothers", {}).items():
            smoother = make_temporal(**{"name": self.temporal["temporal"], **self.temporal})
            smoother.load_state_dict(sm_state)
            self._smoothers[key] = smoother
        self.reducer.reset()
        if state.get("reducer") is not None:  # --stride / --skip-static: the key frame and the stride phase
            self.reducer.load_state_dict(state["reducer"])

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
        logits = {key: self.segmenter.segment(x, prompts, preprocess=key[0], size=key[1]) for key, prompts in groups.items()}
        return logits, groups, needs

    def _variants(self, logits, groups, needs, x: torch.Tensor) -> dict[str, VariantOutput]:
        out = {}
        for name, params in self.variants.items():
            key, prompts = needs[name]
            idx = [groups[key].index(q) for q in prompts]
            out[name] = get_variant(name).postprocess(logits[key][:, idx], x, self.prompt, params, self.state[name])
        return out

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
                smoother = self._smoothers[key] = make_temporal(**{"name": self.temporal["temporal"], **self.temporal})
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
               host_frames: np.ndarray | None = None, *, bits: Mapping[str, int] | None = None,
               matte_style: str = "straight", matte_color: tuple[int, int, int] = (0, 255, 0),
               background: np.ndarray | None = None, host_frames16: np.ndarray | None = None,
               defer_matte: bool = False, defer_copy: bool = False) -> dict[str, np.ndarray] | PendingHost:
        """Turn a variant's output into uint8 (or uint16) host images per output kind.

        Only uint8 / uint16 data crosses from the device to the host: the mask is
        quantized on the device. The matte is assembled on the host from
        ``host_frames`` (the decoded frames) when given, so the RGB channels never
        make a round trip through the device.

        Args:
            frames: ``(B, 3, H, W)`` uint8 on the device.
            result: the variant's output.
            kinds: subset of ``mask``, ``heatmap``, ``matte``.
            host_frames: ``(B, H, W, 3)`` uint8 numpy copy of ``frames``, if the caller has one.
            bits: ``{kind: 8 or 16}``: 16 gives the mask (and the matte) as uint16 (0-65535).
            matte_style, matte_color, background: see :func:`~streammask.matte.compose_matte`
                (``background``: ``(B, H, W, 3)`` uint8 frames).
            host_frames16: ``(B, H, W, 3)`` uint16 frames of a deep (10-bit+) source: the RGB of a
                16-bit matte, instead of ``host_frames`` (no 8-bit banding).
            defer_matte: give the matte as a :class:`~streammask.matte.MatteBatch` that the writer
                composes on its thread (what :func:`process_video` does), not as an array.
            defer_copy: return at once, with the device -> host copies still running (on CUDA: a
                side stream into pinned buffers, :class:`~streammask.transfer.HostCopy`), as a
                :class:`~streammask.transfer.PendingHost` whose ``result()`` is the dict below.

        Returns:
            ``{kind: (B, H, W, C) numpy}`` with C = 1 (mask), 3 (heatmap), 4 (matte; 3 or 1 for
            the styles without alpha).
        """
        from .matte import MatteBatch

        bits = bits or {}
        clamped = result.mask.clamp(0, 1)
        fetch = HostCopy(frames.device)
        mask_slots: dict[int, int] = {}  # depth -> index in fetch

        def mask_slot(depth: int) -> int:
            if depth not in mask_slots:
                if depth == 16:
                    # quantized on the device; 2 bytes a pixel cross to the host as int16 offset by
                    # 32768 (int16 works on every device, uint16 has few CUDA kernels), then flip the top bit
                    q = ((clamped * 65535 + 0.5).to(torch.int32) - 32768).to(torch.int16)
                else:
                    q = ops.to_uint8(clamped)
                mask_slots[depth] = fetch.add(q.permute(0, 2, 3, 1))
            return mask_slots[depth]

        slots: dict[str, int] = {}
        if "mask" in kinds:
            slots["mask"] = mask_slot(bits.get("mask", 8))
        if "heatmap" in kinds:
            heat = result.heatmap
            if heat is None:
                colour = ops.apply_colormap(result.mask.clamp(0, 1), self.colormap)
                heat = ops.blend(frames, colour, self.heatmap_alpha)
            slots["heatmap"] = fetch.add(heat.permute(0, 2, 3, 1))
        if "matte" in kinds:
            slots["matte"] = mask_slot(bits.get("matte", 8))
            if host_frames is None:
                slots["rgb"] = fetch.add(frames.permute(0, 2, 3, 1))

        def finish() -> dict[str, np.ndarray]:
            arrays = fetch.wait()
            if 16 in mask_slots:
                i = mask_slots[16]
                arrays[i] = arrays[i].view(np.uint16) ^ np.uint16(0x8000)
            out = {kind: arrays[slots[kind]] for kind in ("mask", "heatmap") if kind in slots}
            if "matte" in slots:
                rgb = host_frames if host_frames is not None else arrays[slots["rgb"]]
                if host_frames16 is not None and bits.get("matte", 8) == 16:
                    rgb = host_frames16
                matte = MatteBatch(rgb, arrays[slots["matte"]], style=matte_style, color=matte_color,
                                   background=background)
                out["matte"] = matte if defer_matte else matte.compose()
            return out

        return PendingHost(finish) if defer_copy else finish()


def _copy_ahead(device: torch.device) -> int:
    """Rendered batches :func:`process_video` keeps in flight before handing them to the
    encoders: 1 on CUDA (their device -> host copies overlap the next batch's compute), 0
    elsewhere (the copies are synchronous: holding a batch back would only delay it)."""
    return 1 if torch.device(device).type == "cuda" else 0


def _stack_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """``(N, H, W, C)`` from N ``(H, W, C)`` frames: a view, not a copy, when they are
    consecutive rows of one array (a decoded batch without look-ahead, the usual case)."""
    base = rows[0].base
    if isinstance(base, np.ndarray) and base.ndim == rows[0].ndim + 1 and base.flags.c_contiguous \
            and base.shape[1:] == rows[0].shape:
        step = base.strides[0]
        offset = rows[0].ctypes.data - base.ctypes.data
        start = offset // step
        if offset % step == 0 and start + len(rows) <= len(base) and all(
                r.base is base and r.ctypes.data == base.ctypes.data + (start + k) * step for k, r in enumerate(rows)):
            return base[start:start + len(rows)]
    return np.stack(rows)


def _progress(total: int | None, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="frame", desc=desc, disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.25, smoothing=0.1)


def _select(result: VariantOutput, keep: list[int]) -> VariantOutput:
    """The frames ``keep`` of a batch's variant output."""
    return VariantOutput(mask=result.mask[keep], heatmap=None if result.heatmap is None else result.heatmap[keep],
                         extra={k: v[keep] for k, v in result.extra.items()})


def _finalize_partial(sinks: dict, writers: dict) -> None:
    """``keep_partial``: let the encoder threads finish what they hold, then close (flush,
    rename) every writer; a writer that cannot be finalized is removed."""
    for sink in sinks.values():
        try:
            sink.close()
        except BaseException:
            sink.abort()
    for w in writers.values():
        if hasattr(w, "audio_to_video_end"):
            w.audio_to_video_end = True  # the kept video is cut short: so is its audio
        try:
            if getattr(w, "frames_written", 1) > 0:
                w.close()
            else:
                w.abort()
        except BaseException:
            w.abort()


def process_video(
    source: str | os.PathLike,
    *,
    prompt: str,
    out_dir: str | os.PathLike = "streammask-out",
    variants: Any = ("soft",),
    outputs: Sequence[str] | str = OUTPUT_KINDS,
    model: str | os.PathLike = DEFAULT_MODEL,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int | None = None,
    mask_format: str = "mp4",
    heatmap_format: str = "mp4",
    matte_format: str = "prores",
    heatmap_alpha: float = 0.5,
    colormap: str = "jet",
    max_frames: int | None = None,
    queue_size: int = 4,
    progress: bool = True,
    strict: bool = False,
    keep_partial: bool = False,
    overwrite: bool = False,
    output_template: str = DEFAULT_OUTPUT_TEMPLATE,
    max_batch_mb: float = 256.0,
    segmenter: Segmenter | None = None,
    on_batch: Callable[[int, int | None], None] | None = None,
    frame_range: FrameRange | None = None,
    temporal: str = "none",
    audio: bool = True,
    matte_style: str = "straight",
    matte_color: str = "#00ff00",
    background: str | os.PathLike | None = None,
    **temporal_options: Any,
) -> RunSummary:
    """Mask a whole video with a text prompt, streaming, in bounded memory.

    One decode and one model call per batch feed every requested variant's
    outputs. Each output is written under a temporary name and renamed when
    complete; on any error (or ``KeyboardInterrupt``) every partial file is
    removed, unless ``keep_partial``: then the outputs written so far are
    finalized under their final names (playable). The original exception
    reaches the caller either way. Damaged packets in the input are skipped
    and counted (:attr:`RunSummary.damaged_packets`) unless ``strict``.

    Args:
        source: input video file.
        out_dir: output folder (created); files are named ``{stem}.{variant}.{kind}.{ext}``.
        prompt: text prompt, ``|`` separates several.
        variants: variant names or ``{name: params}`` (see :data:`~streammask.variants.VARIANTS`).
        outputs: any of ``mask``, ``heatmap``, ``matte``.
        model, revision, device, dtype: see :func:`~streammask.model.load_clipseg`.
        segmenter: an already loaded model (or a test oracle); ``model`` is then ignored.
        on_batch: called as ``on_batch(frames_done, total_or_None)`` after each batch (GUI
            progress); an exception it raises stops the run like any other error (cancel).
        temporal: temporal smoothing method (``none``, ``ema``, ``median``, ``mean``,
            ``hysteresis``, ``flow``); ``temporal_options`` are its parameters
            (``ema_alpha``, ``window``, ``flow_strength``, ... see ``streammask run --help``).
        frame_range: a :class:`~streammask.segments.FrameRange`: write only frames
            ``[start, end)`` (source pts kept), after seeking and warming up temporal state
            (see :mod:`streammask.segments`); ``max_frames`` is then ignored.
        batch_size: frames per model batch; ``None``: automatic (:func:`~streammask.perf.choose_batch_size`).
        temporal_options: also take the model speed options (``attn_implementation``, ``channels_last``,
            ``compile``: :data:`~streammask.perf.MODEL_SPEED_PARAMS`) and the reduced-work options
            (``stride``, ``skip_static``, ``static_psnr``: :data:`~streammask.reduce.REDUCE_PARAMS`).
        Others: see ``streammask run --help`` (each keyword is a CLI flag and a pipeline-file key).

    Returns:
        A :class:`RunSummary`.
    """
    variant_params = normalize_variants(variants)
    settings = RUN_PARAMS.validate(dict(
        out_dir=os.fspath(out_dir), prompt=prompt, variants=tuple(variant_params),
        outputs=outputs, model=os.fspath(model), revision=revision, device=device, dtype=dtype, batch_size=batch_size,
        mask_format=mask_format, heatmap_format=heatmap_format, matte_format=matte_format,
        heatmap_alpha=heatmap_alpha, colormap=colormap, max_frames=max_frames, queue_size=queue_size, progress=progress,
        strict=strict, keep_partial=keep_partial, temporal=temporal, audio=audio, matte_style=matte_style,
        matte_color=matte_color, background=None if background is None else os.fspath(background),
        overwrite=overwrite, output_template=output_template, max_batch_mb=max_batch_mb, **temporal_options,
    ))
    if not prompt.strip():
        raise ParameterError("prompt", prompt, "a non-empty text such as 'person' or 'sky|trees'")
    info = probe(source)
    kinds = settings["outputs"]
    fmt_for = {"mask": settings["mask_format"], "heatmap": settings["heatmap_format"], "matte": settings["matte_format"]}
    look = output_look(settings, info, kinds)
    # before any work: names stay in out_dir, nothing replaces the input or (without overwrite) an existing file
    planned = plan_outputs(source, out_dir, variants=variant_params, kinds=kinds, formats=fmt_for,
                           template=settings["output_template"])
    check_outputs(source, planned, overwrite=settings["overwrite"],
                  folders=[p for (_, k), p in planned.items() if FORMATS[k][fmt_for[k]].suffix == ""])
    out = ensure_output_dir(out_dir)
    t_start = time.perf_counter()
    timer = StageTimer()
    if segmenter is None:
        t0 = time.perf_counter()
        segmenter = load_clipseg(model, revision=revision, device=device, dtype=dtype, **model_speed_options(settings))
        timer.add("load model", time.perf_counter() - t0)
    pipe = MaskPipeline(segmenter, prompt=prompt, variants=variant_params, heatmap_alpha=heatmap_alpha, colormap=colormap,
                        **{p.name: settings[p.name] for p in (*TEMPORAL_PARAMS, *REDUCE_PARAMS)})
    settings["batch_size"] = choose_batch_size(
        settings["batch_size"], device=segmenter.device, frame_hw=(info.height, info.width),
        dtype=getattr(segmenter, "dtype", torch.float32), model_side=getattr(segmenter, "size", 352),
        prompts=count_prompts(prompt), variants=len(variant_params))
    # large frames: fewer per batch and per queue, so memory stays within max_batch_mb
    batch_size = fit_batch_to_memory(settings["batch_size"], width=info.width, height=info.height,
                                     max_batch_mb=settings["max_batch_mb"])
    settings["batch_size"] = batch_size
    pixels = batch_size * info.width * info.height
    decode_slots = queue_slots(settings["queue_size"], pixels * 3, max_batch_mb=settings["max_batch_mb"])

    stem = Path(source).stem
    writers: dict[tuple[str, str], Any] = {}
    sinks: dict[tuple[str, str], SinkThread] = {}
    stop = threading.Event()
    total = info.num_frames if max_frames is None or info.num_frames is None else min(info.num_frames, max_frames)
    if frame_range is not None:
        from .segments import range_batches

        total = frame_range.end - frame_range.start
        if frame_range.state:
            pipe.load_stream_state(frame_range.state)
    bar = _progress(total, settings["progress"], f"{stem} [{','.join(variant_params)}]")
    # rendered batches whose device -> host copies may still run: handed to the encoders a batch
    # later, so the host does not wait for the GPU while it has queued work (CUDA only)
    in_flight: deque = deque()
    ahead = _copy_ahead(segmenter.device)

    def hand_over(keep: int) -> None:
        while len(in_flight) > keep:
            rendered, pts = in_flight.popleft()
            t0 = time.perf_counter()
            done = {name: pending.result() for name, pending in rendered.items()}
            if ahead:  # time the host still waited for copies that ran behind the next batch's compute
                timer.add("device -> host wait", time.perf_counter() - t0)
            for name, per_kind in done.items():
                for kind, arr in per_kind.items():
                    sinks[(name, kind)].put((arr, pts))

    frames_done = 0
    read_stats: dict[str, int] = {}
    try:
        for name in variant_params:
            for kind in kinds:
                path, suffix = planned[(name, kind)], FORMATS[kind][fmt_for[kind]].suffix
                name_stem = path.with_name(path.name[:len(path.name) - len(suffix)])  # make_writer adds the suffix
                w = make_writer(kind, fmt_for[kind], name_stem, width=info.width, height=info.height,
                                rate=info.frame_rate, time_base=info.time_base, channels=look["channels"].get(kind),
                                # a segment has no audio: the join copies the source's audio once
                                audio_source=source if settings["audio"] and frame_range is None else None,
                                audio_to_video_end=max_frames is not None, preset=settings["encoder_preset"])
                writers[(name, kind)] = w
                slots = queue_slots(settings["queue_size"], pixels * FORMATS[kind][fmt_for[kind]].channels,
                                    max_batch_mb=settings["max_batch_mb"])
                sinks[(name, kind)] = SinkThread(lambda item, w=w: w.write(*item), maxsize=slots,
                                                 name=f"encode {name}.{kind}", timer=timer)
        deep = "matte" in kinds and look["bits"].get("matte") == 16 and settings["matte_style"] != "alpha"
        if frame_range is None:
            reader = read_batches(source, batch_size=batch_size, max_frames=max_frames,
                                  strict=settings["strict"], stats=read_stats, deep=deep)
        else:
            reader = range_batches(source, frame_range, pipe, batch_size=batch_size,
                                   strict=settings["strict"], stats=read_stats, deep=deep)
        # on CUDA the decode thread also copies each batch to the device (its own stream), ahead of the model
        batches = prefetch(upload_batches(reader, segmenter.device), maxsize=decode_slots, name="decode",
                           timer=timer, stop=stop)
        def emit(results, x, payload) -> None:
            if not payload:
                return
            keep = None
            if frame_range is not None:  # warm-up and look-ahead frames are not written
                keep = [i for i, item in enumerate(payload) if frame_range.start <= item[3] < frame_range.end]
                if not keep:
                    return
                payload = [payload[i] for i in keep]
            pts = [item[0] for item in payload]
            host = _stack_rows([item[1] for item in payload]) if "matte" in kinds else None
            host16 = np.stack([item[2] for item in payload]) if payload[0][2] is not None else None
            bg = None
            if look["background"] is not None:  # by the clip's frame index: a segment's frames as in one pass
                bg = look["background"].take(len(pts), indices=[item[3] for item in payload])
            rendered = {name: pipe.render(x if keep is None else x[keep], res if keep is None else _select(res, keep),
                                          kinds, host_frames=host, bits=look["bits"], background=bg,
                                          host_frames16=host16, defer_matte=True, defer_copy=True,
                                          matte_style=settings["matte_style"], matte_color=look["color"])
                        for name, res in results.items()}
            in_flight.append((rendered, pts))
            hand_over(ahead)

        for batch, on_device in batches:
            t0 = time.perf_counter()
            frames = batch.frames if on_device is None else on_device.get()
            deep16 = batch.frames16 if batch.frames16 is not None else [None] * len(batch)
            emit(*pipe.process_stream(frames, list(zip(batch.pts, batch.frames, deep16,
                                                       range(batch.start, batch.start + len(batch))))))
            timer.add("segment + post-process", time.perf_counter() - t0)
            n_written = len(batch) if frame_range is None else sum(
                frame_range.start <= i < frame_range.end for i in range(batch.start, batch.start + len(batch)))
            frames_done += n_written
            bar.update(n_written)
            if on_batch is not None:
                on_batch(frames_done, total)
        if frame_range is not None:
            frame_range.state_out = pipe.stream_state()
        emit(*pipe.flush_stream())
        hand_over(0)
        for key, sink in sinks.items():
            sink.close()
        paths = {f"{n}.{k}": w.close() for (n, k), w in writers.items()}
    except BaseException:
        stop.set()
        if settings["keep_partial"]:
            try:  # the batches already rendered are part of what was written so far
                hand_over(0)
            except Exception:
                in_flight.clear()
            _finalize_partial(sinks, writers)
        else:
            for sink in sinks.values():
                sink.abort()
            for w in writers.values():
                w.abort()
        raise
    finally:
        bar.close()
    summary = RunSummary(source=str(source), frames=frames_done, seconds=time.perf_counter() - t_start, outputs=paths,
                         stage_seconds=dict(timer.seconds), text_encodes=getattr(segmenter, "text_encode_calls", None),
                         damaged_packets=read_stats.get("damaged_packets", 0), batch_size=batch_size,
                         model_frames=pipe.reducer.counts["model"] if pipe.reducer.enabled else None)
    return summary
