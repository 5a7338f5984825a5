"""Reduced work: run the model on fewer frames and carry its output to the others.

Two options, declared once in :data:`REDUCE_PARAMS` (CLI flags ``--stride N``,
``--skip-static``, ``--static-psnr DB``; pipeline-file keys; API keywords):

* ``stride = N``: the model sees every N-th frame (a *key* frame); each frame in
  between gets the previous frame's probability map warped to it along the dense
  optical flow between the two frames (OpenCV DIS on area-downscaled frames, the
  machinery of the ``flow`` temporal smoother:
  :meth:`streammask.temporal.flow.OpticalFlow.motion` and :func:`streammask.temporal.flow.warp`),
  so the key frame's map is carried forward frame by frame along the motion.
  (Chaining frame-to-frame flows tracks fast motion better than one flow straight
  back to the key frame: on noise-free oracle clips at stride 8, IoU 74 vs 65 %.)
* ``skip_static``: at a frame where the model would run, it is skipped when the
  frame barely changed from the last key frame (PSNR of the full-resolution RGB
  frames >= ``static_psnr`` dB): the key frame's logits are reused as they are.

A scene cut (:class:`streammask.temporal.flow.SceneCutDetector`, ``cut_threshold``)
always makes a key frame, so no mask is carried across a cut. Frame count, order
and timestamps are unchanged: only where the logits come from differs, and every
variant and temporal smoother downstream sees the carried logits like the model's.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError
from ..params import Param, ParamSet
from .flow import DEFAULT_CUT_THRESHOLD, DEFAULT_FLOW_ALGORITHM, DEFAULT_FLOW_SIDE, OpticalFlow, SceneCutDetector, flow_size, small_frames, warp
from .smoothers import to_logits

__all__ = ["REDUCE_PARAMS", "WorkReducer", "psnr"]

DEFAULT_STATIC_PSNR = 40.0

REDUCE_PARAMS = ParamSet((
    Param("stride", "int", 1, "run the model on every N-th frame; the frames between get its mask warped along the "
          "optical flow (1 = every frame)", min=1, max=1000),
    Param("skip_static", "bool", False, "skip the model where a frame barely changed from the last frame it saw "
          "(PSNR >= --static-psnr) and reuse that frame's mask"),
    Param("static_psnr", "float", DEFAULT_STATIC_PSNR,
          "skip-static: PSNR (dB, full-resolution RGB vs the last frame the model saw) at or above which a frame counts "
          "as unchanged", min=10.0, max=100.0, step=0.5),
))
"""The reduced-work options, declared once."""

Logits = dict  # {(preprocess, size): (B, P, S, S) float32}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two uint8 images of the same shape (``inf`` when identical).

    Example:
        >>> a = torch.zeros(3, 4, 4, dtype=torch.uint8)
        >>> round(psnr(a, a + 1), 2)
        48.13
    """
    mse = float((a.float() - b.float()).square_().mean())
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


class WorkReducer:
    """Decides per frame whether the model runs, and fills in the frames it skips.

    One reducer follows one stream (consecutive batches of one video); call
    :meth:`reset` between videos.

    Args:
        stride: the model runs on at most every ``stride``-th frame (>= 1).
        skip_static: skip a due model call when the frame's PSNR against the last
            key frame is at least ``static_psnr``.
        static_psnr: dB.
        cut_threshold: scene-cut threshold (see :class:`~streammask.temporal.SceneCutDetector`).
        flow_side, flow_algorithm: the optical flow that carries masks from frame
            to frame (see :class:`~streammask.temporal.FlowSmoother`).

    Attributes:
        counts: frames per source of their logits: ``model``, ``carried`` (the
            previous frame's map warped along the flow), ``static`` (a key frame's
            logits reused).

    Example:
        >>> r = WorkReducer(stride=2)
        >>> calls = []
        >>> def infer(f):
        ...     calls.append(len(f))
        ...     return {("pil", 8): torch.zeros(len(f), 1, 8, 8)}
        >>> out = r.logits(torch.zeros(5, 3, 16, 16, dtype=torch.uint8), infer)
        >>> out[("pil", 8)].shape, calls, r.counts
        (torch.Size([5, 1, 8, 8]), [3], {'model': 3, 'carried': 2, 'static': 0})
    """

    def __init__(self, *, stride: int = 1, skip_static: bool = False, static_psnr: float = DEFAULT_STATIC_PSNR,
                 cut_threshold: float = DEFAULT_CUT_THRESHOLD, flow_side: int = DEFAULT_FLOW_SIDE,
                 flow_algorithm: str = DEFAULT_FLOW_ALGORITHM) -> None:
        REDUCE_PARAMS.validate({"stride": stride, "skip_static": skip_static, "static_psnr": static_psnr})
        self.stride, self.skip_static, self.static_psnr = int(stride), bool(skip_static), float(static_psnr)
        self.cuts = SceneCutDetector(threshold=cut_threshold)
        if isinstance(flow_side, bool) or not isinstance(flow_side, int) or flow_side < 16:
            raise ParameterError("flow_side", flow_side, "an integer >= 16")
        self.flow_side = flow_side
        self._motion = OpticalFlow(algorithm=flow_algorithm)
        self.counts = {"model": 0, "carried": 0, "static": 0}
        self.reset()

    @property
    def enabled(self) -> bool:
        """Whether any frame can be skipped (``stride > 1`` or ``skip_static``)."""
        return self.stride > 1 or self.skip_static

    def __repr__(self) -> str:
        return (f"WorkReducer(stride={self.stride}, skip_static={self.skip_static}, static_psnr={self.static_psnr}, "
                f"cut_threshold={self.cuts.threshold}, flow_side={self.flow_side}, "
                f"flow_algorithm={self._motion.algorithm!r})")

    def reset(self) -> None:
        """Forget the stream (key frame, its logits, the counter); ``counts`` are kept."""
        self.cuts.reset()
        self._key_frame: torch.Tensor | None = None  # (3, H, W) uint8 last frame the model saw, on the frames' device
        self._key_logits: Logits | None = None  # {key: (P, S, S)} its logits
        self._prev_small: np.ndarray | None = None  # (h, w, 3) uint8 previous frame, for the flow
        self._prev_logits: Logits | None = None  # {key: (P, S, S)} previous frame's output logits
        self._since = 0  # frames since the last model call or static check

    def state_dict(self) -> dict:
        """The stream's state (key frame and its logits, the previous frame and its logits, the
        frames since the last model call, the scene-cut detector) as host copies: hand it to
        :meth:`load_state_dict` of a reducer with the same settings to continue the stream exactly
        (e.g. the next segment of a clip). ``counts`` are not part of it."""
        def host(x):
            return None if x is None else x.detach().cpu().clone()

        def host_logits(d):
            return None if d is None else {k: host(v) for k, v in d.items()}

        return {"key_frame": host(self._key_frame), "key_logits": host_logits(self._key_logits),
                "prev_small": None if self._prev_small is None else self._prev_small.copy(),
                "prev_logits": host_logits(self._prev_logits), "since": self._since, "cuts": self.cuts.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Continue a stream from :meth:`state_dict` (tensors go to the frames' device on the next batch)."""
        def copy_logits(d):
            return None if d is None else {k: v.clone() for k, v in d.items()}

        self._key_frame = None if state["key_frame"] is None else state["key_frame"].clone()
        self._key_logits = copy_logits(state["key_logits"])
        self._prev_small = None if state["prev_small"] is None else state["prev_small"].copy()
        self._prev_logits = copy_logits(state["prev_logits"])
        self._since = int(state["since"])
        self.cuts.load_state_dict(state["cuts"])

    def _to(self, device: torch.device) -> None:
        """Move the held tensors to ``device`` (after :meth:`load_state_dict`)."""
        if self._key_frame is not None and self._key_frame.device != device:
            self._key_frame = self._key_frame.to(device)
        for name in ("_key_logits", "_prev_logits"):
            d = getattr(self, name)
            if d is not None:
                setattr(self, name, {k: v.to(device) for k, v in d.items()})

    def _small(self, frames: torch.Tensor) -> np.ndarray:
        h, w = flow_size(frames.shape[-2], frames.shape[-1], self.flow_side)
        return small_frames(frames, (h, w)).cpu().numpy()

    def logits(self, frames: torch.Tensor, infer: Callable[[torch.Tensor], Logits]) -> Logits:
        """Logits for every frame of a batch, the model run only on the key frames.

        Args:
            frames: ``(B, 3, H, W)`` uint8, consecutive frames of the stream.
            infer: ``frames (K, 3, H, W) -> {key: (K, P, S, S) float32 logits}``, the
                model; called once per batch with the key frames (not at all when
                there are none).

        Returns:
            ``{key: (B, P, S, S)}`` float32 logits, one per input frame, in order.
        """
        b = frames.shape[0]
        self._to(frames.device)
        cuts = self.cuts.update(frames)
        small = self._small(frames) if self.stride > 1 else None
        # 1. decide, frame by frame: ("model", j) for the j-th key frame of this batch,
        #    ("static", ref) with ref the key frame ("batch", j) or the held one ("state",),
        #    ("carried", motion field from this frame to the previous one)
        plan: list[tuple] = []
        keys: list[int] = []
        key_frame, since = self._key_frame, self._since
        ref: tuple = ("state",)
        for i in range(b):
            new_key = key_frame is None or cuts[i] or key_frame.shape != frames[i].shape
            mode = "model"
            if not new_key:
                since += 1
                if since < self.stride:
                    mode = "carried"
                elif self.skip_static and psnr(frames[i], key_frame) >= self.static_psnr:
                    mode, since = "static", 0
            if mode == "model":
                ref = ("batch", len(keys))
                keys.append(i)
                key_frame, since = frames[i], 0
                plan.append(("model", ref))
            elif mode == "static":
                plan.append(("static", ref))
            else:
                prev_small = small[i - 1] if i > 0 else self._prev_small
                plan.append(("carried", self._motion.motion(small[i], prev_small)))
        # 2. the model on the key frames, once
        fresh = infer(frames[keys]) if keys else None
        # 3. every frame's logits, in order (a carried frame warps the previous frame's output)
        names = list(fresh) if fresh is not None else list(self._key_logits or {})
        out = {}
        for name in names:
            held = self._key_logits[name] if self._key_logits is not None else None
            prev = self._prev_logits[name] if self._prev_logits is not None else None
            rows = []
            for step in plan:
                if step[0] == "carried":
                    row = self._carry(prev, step[1])
                else:
                    ref = step[1]
                    row = (fresh[name][ref[1]] if ref[0] == "batch" else held).float()
                rows.append(row)
                prev = row
            out[name] = torch.stack(rows)
        for step in plan:
            self.counts[step[0]] += 1
        if keys:
            self._key_logits = {name: fresh[name][len(keys) - 1].clone() for name in names}
            self._key_frame = frames[keys[-1]].clone()
        self._prev_logits = {name: out[name][-1].clone() for name in names}
        self._prev_small = small[-1].copy() if small is not None else None
        self._since = since
        return out

    @staticmethod
    def _carry(logits: torch.Tensor, field: np.ndarray) -> torch.Tensor:
        """Warp ``(P, S, S)`` logits' probabilities along a ``(3, h, w)`` motion field (flow, reliability)."""
        flow = torch.from_numpy(field[:2]).to(logits.device).unsqueeze(0)
        s_h, s_w = logits.shape[-2:]
        if tuple(flow.shape[-2:]) != (s_h, s_w):
            flow = F.interpolate(flow, size=(s_h, s_w), mode="bilinear", align_corners=False)
        prob = torch.sigmoid(logits.float()).unsqueeze(0)
        return to_logits(warp(prob, flow)[0])

