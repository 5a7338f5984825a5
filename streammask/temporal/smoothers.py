"""Temporal smoothing of mask logits: one explicit state object per method.

CLIPSeg sees every frame on its own, so its masks flicker. A smoother sits
between inference and a variant's post-processing: it takes a batch of logits
``(B, P, S, S)`` with the batch's frames ``(B, 3, H, W)`` and an opaque per-frame
payload, smooths in probability space (``sigmoid``), and hands back logits
(``torch.logit`` with a clamp of :data:`LOGIT_EPS`) so that every variant's
post-processing runs unchanged after it.

Methods (:data:`TEMPORAL_METHODS`, built by :func:`make_temporal`):

==============  ====================================  ========  ==================
method          state object                          causal    delay (frames)
==============  ====================================  ========  ==================
``none``        :class:`IdentitySmoother`             yes       0
``ema``         :class:`EmaSmoother`                  yes       0
``median``      :class:`MedianSmoother`               [1]_      ``window // 2``
``mean``        :class:`MeanSmoother`                 [1]_      ``window // 2``
``hysteresis``  :class:`HysteresisSmoother`           yes       0
``flow``        :class:`FlowSmoother`                 yes       0
==============  ====================================  ========  ==================

.. [1] centered windows (the default) look ahead ``window // 2`` frames;
   ``window_align='trailing'`` makes them causal (no delay, but a moving edge lags).

``none`` returns the logits untouched (the same tensor). ``hysteresis`` outputs
probabilities of exactly 0 or 1: meant for binary outputs (``soft`` with
``binary``, ``essentials``, ``masquerade``'s thresholded mask); on a soft variant
it turns the soft map into a hard one. Every other method changes only the
probabilities, and each variant applies its own threshold, blur, dilation or
normalisation to the smoothed map exactly as it would to a single frame's.

Every method except ``none`` watches for scene cuts (:class:`SceneCutDetector`:
mean absolute difference of 32x32 gray thumbnails above ``cut_threshold``) and
starts afresh at a cut, so a mask never bleeds across one; windowed methods
never mix frames from two scenes.

The protocol (kept by every smoother):

* ``update(logits, frames, payload) -> (logits, frames, payload)``: may return
  fewer frames than it was given (look-ahead delay) and return the held ones on
  later calls, in order, each with its own frame and payload;
* ``flush()`` at the end of the stream returns what is still held and resets;
* ``reset()`` forgets everything (held frames included);
* ``state_dict()`` / ``load_state_dict(state)``: processing a clip in chunks, or
  handing the state from one worker to another, gives exactly the output of one
  pass;
* attributes ``method``, ``causal`` and ``delay``.

One smoother follows one stream: the frames of consecutive calls must be
consecutive frames of the same video.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError
from ..params import Param, ParamSet
from .flow import DEFAULT_CUT_THRESHOLD, DEFAULT_FLOW_ALGORITHM, DEFAULT_FLOW_ERROR, DEFAULT_FLOW_SIDE, FLOW_ALGORITHMS, FlowAlgorithm, OpticalFlow, SceneCutDetector, flow_size, small_frames, warp

__all__ = [
    "TEMPORAL_METHODS",
    "TEMPORAL_PARAMS",
    "METHOD_PARAMS",
    "LOGIT_EPS",
    "make_temporal",
    "TemporalSmoother",
    "IdentitySmoother",
    "EmaSmoother",
    "MedianSmoother",
    "MeanSmoother",
    "HysteresisSmoother",
    "FlowSmoother",
    "smoother_for",
]

LOGIT_EPS = 1e-6
"""Probabilities are clamped to ``[LOGIT_EPS, 1 - LOGIT_EPS]`` before ``torch.logit`` (|logit| <= 13.8)."""


TEMPORAL_METHODS = ("none", "ema", "median", "mean", "hysteresis", "flow")
WindowAlign = Literal["centered", "trailing"]

DEFAULT_FLOW_STRENGTH = 0.8

TEMPORAL_PARAMS = ParamSet((
    Param("temporal", "choice", "none", "temporal smoothing of the masks between frames", choices=TEMPORAL_METHODS),
    Param("ema_alpha", "float", 0.5, "ema: weight of the current frame (1 = no smoothing; lower = smoother but lags)",
          min=0.01, max=1.0, step=0.01),
    Param("window", "int", 5, "median/mean: frames in the window", min=1, max=31),
    Param("window_align", "choice", "centered",
          "median/mean: 'centered' looks ahead window//2 frames (output delayed, no lag); 'trailing' is causal but lags",
          choices=("centered", "trailing")),
    Param("hysteresis_on", "float", 0.6, "hysteresis: a pixel turns on when its probability reaches this",
          min=0.0, max=1.0, step=0.01),
    Param("hysteresis_off", "float", 0.4, "hysteresis: a pixel turns off when its probability falls to this",
          min=0.0, max=1.0, step=0.01),
    Param("flow_strength", "float", DEFAULT_FLOW_STRENGTH,
          "flow: largest weight of the motion-compensated history (0.8: about the last 5 frames; 0 = no smoothing)",
          min=0.0, max=0.99, step=0.01),
    Param("flow_error", "float", DEFAULT_FLOW_ERROR,
          "flow: photometric error of the warp (mean RGB difference, 0-1) at which the history's weight falls to 1/e",
          min=0.001, max=1.0, step=0.005),
    Param("flow_side", "int", DEFAULT_FLOW_SIDE, "flow: longest side of the downscaled frames the optical flow runs on",
          min=16, max=2048),
    Param("flow_algorithm", "choice", DEFAULT_FLOW_ALGORITHM, "flow: OpenCV optical flow (DIS preset or Farneback)",
          choices=FLOW_ALGORITHMS),
    Param("cut_threshold", "float", DEFAULT_CUT_THRESHOLD,
          "scene cut when the mean gray difference (0-1) of 32x32 thumbnails of consecutive frames exceeds this; "
          "the smoothing state resets (1 = never)", min=0.0, max=1.0, step=0.01),
))
"""Every temporal parameter, declared once (CLI flags, pipeline-file keys, ComfyUI inputs)."""

METHOD_PARAMS: dict[str, tuple[str, ...]] = {
    "none": (),
    "ema": ("ema_alpha", "cut_threshold"),
    "median": ("window", "window_align", "cut_threshold"),
    "mean": ("window", "window_align", "cut_threshold"),
    "hysteresis": ("hysteresis_on", "hysteresis_off", "cut_threshold"),
    "flow": ("flow_strength", "flow_error", "flow_side", "flow_algorithm", "cut_threshold"),
}
"""The keys of :data:`TEMPORAL_PARAMS` each method uses."""


# ---------------------------------------------------------------------------
# functions
# ---------------------------------------------------------------------------
def _check_batch(logits: torch.Tensor, frames: torch.Tensor, payload: Sequence[Any]) -> int:
    if not isinstance(logits, torch.Tensor) or not isinstance(frames, torch.Tensor):
        raise TypeError(f"logits and frames must be torch.Tensor, got {type(logits).__name__} and {type(frames).__name__}")
    if logits.dim() != 4:
        raise ValueError(f"logits must have shape (B, P, S, S), got {tuple(logits.shape)}")
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must have shape (B, 3, H, W), got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 RGB, got {frames.dtype}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    b = logits.shape[0]
    if frames.shape[0] != b or len(payload) != b:
        raise ValueError(f"logits, frames and payload must hold the same number of frames, "
                         f"got {b}, {frames.shape[0]} and {len(payload)}")
    return b


def to_logits(prob: torch.Tensor) -> torch.Tensor:
    """Probabilities to float32 logits, clamped to ``[LOGIT_EPS, 1 - LOGIT_EPS]`` first."""
    return torch.logit(prob.float(), eps=LOGIT_EPS)


# ---------------------------------------------------------------------------
# smoothers
# ---------------------------------------------------------------------------
class TemporalSmoother(ABC):
    """Base class: batch checks, scene cuts, empty outputs, state hand-over.

    Subclasses implement :meth:`_smooth` (and, when they hold state,
    :meth:`_reset`, :meth:`_state` and :meth:`_load_state`).
    """

    method: str = ""
    causal: bool = True
    delay: int = 0

    def __init__(self, *, cut_threshold: float = DEFAULT_CUT_THRESHOLD) -> None:
        self.cuts = SceneCutDetector(threshold=cut_threshold)
        self._shapes: tuple[tuple[int, ...], tuple[int, ...], torch.device] | None = None  # for empty outputs

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()}causal={self.causal}, delay={self.delay})"

    def _describe(self) -> str:
        return f"cut_threshold={self.cuts.threshold}, "

    # -- protocol ------------------------------------------------------------
    def update(self, logits: torch.Tensor, frames: torch.Tensor, payload: Sequence[Any]
               ) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        """Smooth one batch of consecutive frames.

        Args:
            logits: ``(B, P, S, S)`` float logits (``P`` prompts, ``S`` the model side).
            frames: ``(B, 3, H, W)`` uint8 RGB frames the logits were computed from,
                on the same device.
            payload: ``B`` opaque per-frame items (e.g. ``(index, pts, host frame)``),
                returned with their frame.

        Returns:
            ``(logits, frames, payload)`` with ``B' <= B + held`` frames: float32
            logits ``(B', P, S, S)``, frames ``(B', 3, H, W)`` and a list of ``B'``
            payload items, in stream order. Delayed methods return fewer frames
            at the start of a stream and the rest on later calls or at :meth:`flush`.
        """
        b = _check_batch(logits, frames, payload)
        self._shapes = (tuple(logits.shape[1:]), tuple(frames.shape[1:]), logits.device)
        if b == 0:
            return self._empty()
        cuts = self.cuts.update(frames)
        return self._smooth(logits.float(), frames, list(payload), cuts)

    def flush(self) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        """End of stream: return the frames still held (none for causal methods) and reset."""
        out = self._flush()
        self.reset()
        return out

    def reset(self) -> None:
        """Forget the stream: state, scene-cut memory and any held frames."""
        self.cuts.reset()
        self._reset()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the stream elsewhere (tensors are copies).

        Held frames and their payload items are part of the state.
        """
        return {"method": self.method, "cuts": self.cuts.state_dict(), "shapes": self._shapes, **self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a smoother of the same method and parameters."""
        if state.get("method") != self.method:
            raise ParameterError("state", state.get("method"), f"the state of a {self.method!r} smoother")
        self.cuts.load_state_dict(state["cuts"])
        self._shapes = state.get("shapes")
        self._load_state(state)

    # -- for subclasses ------------------------------------------------------
    @abstractmethod
    def _smooth(self, logits, frames, payload, cuts):
        """Smooth one batch; ``cuts[i]`` says frame ``i`` starts a new scene."""

    def _flush(self) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        return self._empty()

    def _reset(self) -> None:
        pass

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        pass

    def _empty(self) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        if self._shapes is None:
            return torch.empty(0, 0, 0, 0), torch.empty(0, 3, 0, 0, dtype=torch.uint8), []
        lshape, fshape, device = self._shapes
        return (torch.empty((0, *lshape), device=device),
                torch.empty((0, *fshape), dtype=torch.uint8, device=device), [])


def _clone(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.detach().clone()


class IdentitySmoother(TemporalSmoother):
    """``none``: the logits pass through untouched (same tensor), no cut detection."""

    method = "none"

    def __init__(self) -> None:
        super().__init__(cut_threshold=1.0)

    def _describe(self) -> str:
        return ""

    def update(self, logits, frames, payload):
        b = _check_batch(logits, frames, payload)
        self._shapes = (tuple(logits.shape[1:]), tuple(frames.shape[1:]), logits.device)
        return (logits, frames, list(payload)) if b else self._empty()

    def _smooth(self, logits, frames, payload, cuts):
        return logits, frames, list(payload)


class _RecurrentSmoother(TemporalSmoother):
    """A smoother whose whole state is the previous output frame (``_prev``)."""

    def _reset(self) -> None:
        self._prev = None

    def _state(self) -> dict[str, Any]:
        return {"prev": _clone(self._prev)}

    def _load_state(self, state: dict[str, Any]) -> None:
        self._prev = _clone(state["prev"])


class EmaSmoother(_RecurrentSmoother):
    """``ema``: exponential moving average of probabilities.

    ``s_t = alpha * p_t + (1 - alpha) * s_{t-1}``, ``s = p`` on the first frame of
    a scene. Causal, no delay, but it averages moving edges with where they were,
    so they trail (0.6 frames at ``alpha=0.5``, 1.5 at 0.3 on the oracle benchmark):
    the trade-off of the OBS background-removal plugin's fixed average.

    Args:
        alpha: weight of the current frame, in ``(0, 1]``.
        cut_threshold: see :class:`SceneCutDetector`.
    """

    method = "ema"

    def __init__(self, *, alpha: float = 0.5, cut_threshold: float = DEFAULT_CUT_THRESHOLD) -> None:
        super().__init__(cut_threshold=cut_threshold)
        if not 0.0 < alpha <= 1.0:
            raise ParameterError("ema_alpha", alpha, "a number in (0, 1]")
        self.alpha = float(alpha)
        self._prev: torch.Tensor | None = None

    def _describe(self) -> str:
        return f"alpha={self.alpha}, " + super()._describe()

    def _smooth(self, logits, frames, payload, cuts):
        prob = torch.sigmoid(logits)
        out = torch.empty_like(prob)
        prev = None if self._prev is None else self._prev.to(prob.device)
        for i, cut in enumerate(cuts):
            prev = prob[i] if (cut or prev is None or prev.shape != prob[i].shape) else \
                torch.lerp(prev, prob[i], self.alpha)
            out[i] = prev
        self._prev = prev.clone()
        return to_logits(out), frames, payload


class HysteresisSmoother(_RecurrentSmoother):
    """``hysteresis``: a binary mask with separate on and off thresholds.

    A pixel turns on when its probability reaches ``on``, turns off when it falls
    to ``off`` and otherwise keeps its previous value, so pixels hovering near a
    single threshold stop blinking. On the first frame of a scene pixels start on
    where the probability reaches ``(on + off) / 2``. Output probabilities are 0
    or 1 (logits ``-+13.8``): meant for binary outputs.

    Args:
        on, off: thresholds with ``0 <= off <= on <= 1``.
        cut_threshold: see :class:`SceneCutDetector`.
    """

    method = "hysteresis"

    def __init__(self, *, on: float = 0.6, off: float = 0.4, cut_threshold: float = DEFAULT_CUT_THRESHOLD) -> None:
        super().__init__(cut_threshold=cut_threshold)
        if not 0.0 <= off <= on <= 1.0:
            raise ParameterError("hysteresis_off", off, f"a number in [0, hysteresis_on={on}]")
        self.on, self.off = float(on), float(off)
        self._prev: torch.Tensor | None = None  # bool (P, S, S)

    def _describe(self) -> str:
        return f"on={self.on}, off={self.off}, " + super()._describe()

    def _smooth(self, logits, frames, payload, cuts):
        prob = torch.sigmoid(logits)
        out = torch.empty(prob.shape, dtype=torch.bool, device=prob.device)
        prev = None if self._prev is None else self._prev.to(prob.device)
        for i, cut in enumerate(cuts):
            p = prob[i]
            if cut or prev is None or prev.shape != p.shape:
                prev = p >= 0.5 * (self.on + self.off)
            else:
                prev = (p >= self.on) | (prev & (p > self.off))
            out[i] = prev
        self._prev = prev.clone()
        return to_logits(out.float()), frames, payload


class WindowSmoother(TemporalSmoother):
    """Base of ``median`` and ``mean``: a reduction over a window of ``window`` frames.

    Centered windows cover ``window - 1 - window // 2`` frames before and
    ``window // 2`` after the output frame, so the output is delayed by
    ``window // 2`` frames: :meth:`update` returns fewer frames at first and the
    held ones later (with their own frames and payload), :meth:`flush` returns
    the rest with windows truncated at the end of the stream. Trailing windows
    cover the ``window`` frames up to the output frame: causal, no delay.
    Windows never reach across a scene cut.

    Args:
        window: frames in the window (1 = no smoothing).
        align: ``centered`` or ``trailing``.
        cut_threshold: see :class:`SceneCutDetector`.
    """

    def __init__(self, *, window: int = 5, align: WindowAlign = "centered",
                 cut_threshold: float = DEFAULT_CUT_THRESHOLD) -> None:
        super().__init__(cut_threshold=cut_threshold)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ParameterError("window", window, "an integer >= 1")
        if align not in ("centered", "trailing"):
            raise ParameterError("window_align", align, "one of 'centered', 'trailing'")
        self.window, self.align = window, align
        self.after = window // 2 if align == "centered" else 0
        self.before = window - 1 - self.after
        self.delay = self.after
        self.causal = self.after == 0
        self._reset()

    def _describe(self) -> str:
        return f"window={self.window}, align={self.align!r}, " + super()._describe()

    @abstractmethod
    def _reduce(self, probs: torch.Tensor) -> torch.Tensor:
        """``(n, P, S, S)`` probabilities of the window -> ``(P, S, S)``."""

    def _reset(self) -> None:
        self._items: list[tuple[torch.Tensor, torch.Tensor, Any, int]] = []  # (prob, frame, payload, scene)
        self._first = 0  # stream index of _items[0]
        self._next = 0  # stream index of the next frame to return
        self._scene = -1

    def _smooth(self, logits, frames, payload, cuts):
        prob = torch.sigmoid(logits)
        for i, cut in enumerate(cuts):
            self._scene += int(cut)
            # copies: a held frame must not pin the whole batch, nor change if the caller reuses its buffers
            self._items.append((prob[i].clone(), frames[i].clone(), payload[i], self._scene))
        return self._emit(self._first + len(self._items) - self.after)

    def _flush(self):
        return self._emit(self._first + len(self._items))

    def _emit(self, stop: int):
        """Return the frames with stream index in ``[_next, stop)`` and drop what no window needs any more."""
        end = self._first + len(self._items)
        out_p, out_f, out_x = [], [], []
        for j in range(self._next, stop):
            scene = self._items[j - self._first][3]
            lo, hi = max(self._first, j - self.before), min(end, j + self.after + 1)
            win = [it[0] for it in self._items[lo - self._first:hi - self._first] if it[3] == scene]
            out_p.append(self._reduce(torch.stack(win)))
            _, frame, item, _ = self._items[j - self._first]
            out_f.append(frame)
            out_x.append(item)
        self._next = max(self._next, stop)
        drop = max(0, min(self._next - self.before, end) - self._first)
        del self._items[:drop]
        self._first += drop
        if not out_p:
            return self._empty()
        return to_logits(torch.stack(out_p)), torch.stack(out_f), out_x

    def _state(self) -> dict[str, Any]:
        return {"items": [(p.clone(), f.clone(), x, s) for p, f, x, s in self._items],
                "first": self._first, "next": self._next, "scene": self._scene}

    def _load_state(self, state: dict[str, Any]) -> None:
        self._items = [(p.clone(), f.clone(), x, s) for p, f, x, s in state["items"]]
        self._first, self._next, self._scene = state["first"], state["next"], state["scene"]


class MedianSmoother(WindowSmoother):
    """``median``: per-pixel median of the probabilities in the window (see :class:`WindowSmoother`).

    With an even number of frames (a truncated window) the two middle values are averaged.
    """

    method = "median"

    def _reduce(self, probs: torch.Tensor) -> torch.Tensor:
        n = probs.shape[0]
        if n == 1:
            return probs[0]
        s = probs.sort(dim=0).values
        return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class MeanSmoother(WindowSmoother):
    """``mean``: per-pixel mean of the probabilities in the window (see :class:`WindowSmoother`)."""

    method = "mean"

    def _reduce(self, probs: torch.Tensor) -> torch.Tensor:
        return probs.mean(dim=0)


class FlowSmoother(TemporalSmoother):
    """``flow``: motion-compensated recursive averaging.

    For each frame, the dense optical flow from the current to the previous frame
    is computed with OpenCV (DIS or Farneback) on gray frames area-downscaled to
    ``flow_side``; the previous *smoothed* probability map is warped along it to
    the current frame and averaged with the current probabilities, with a weight
    lowered where the warp is unreliable::

        c   = exp(-(e / error_scale)^2)          reliability of the warp, per pixel
        m   = min(c * warp(n_{t-1}), strength / (1 - strength))    frames of usable history
        s_t = lerp(p_t, warp(s_{t-1}), m / (m + 1))
        n_t = m + 1

    ``e`` is the photometric error of the warp: the mean over R, G, B of
    ``|frame_t - warp(frame_{t-1})|`` (0-1, both lightly blurred) on the small
    frames, and ``c = 0`` where the flow points outside the previous frame.
    ``n`` counts the frames averaged into each pixel and travels with the warp,
    so a pixel that has just been uncovered (or whose warp failed) starts a fresh
    average instead of keeping one noisy sample with a high weight; the weight
    of the history is at most ``strength``. Where the warp is right the mask is
    averaged along the motion, so moving edges do not trail; where it is wrong
    (occlusions, objects appearing, flow errors) the current frame wins. The
    first frame of a scene is passed through. Causal, no delay.

    The flow runs on host copies of the small frames (one transfer per batch);
    warping and blending stay on the logits' device. Cost on one CPU core per
    frame at ``flow_side=240``: about 5 ms with ``dis_medium``, 1-2 ms with
    ``dis_fast`` (which smooths less, see ``benchmarks/temporal_quality.py``).

    Args:
        strength: the largest weight of the warped history, in ``[0, 1)``
            (0.8: about the last 5 frames, along the motion).
        error_scale: photometric error (0-1) at which a warp's reliability falls to ``1/e``.
        flow_side: longest side of the frames the flow is computed on.
        algorithm: ``dis_ultrafast``, ``dis_fast``, ``dis_medium`` or ``farneback``.
        cut_threshold: see :class:`SceneCutDetector`.

    Example:
        >>> f = FlowSmoother()
        >>> logits, frames, payload = f.update(torch.zeros(2, 1, 32, 32), torch.zeros(2, 3, 24, 32, dtype=torch.uint8), [0, 1])
        >>> logits.shape, payload
        (torch.Size([2, 1, 32, 32]), [0, 1])
    """

    method = "flow"
    error_blur = 0.5  # Gaussian sigma (small-frame pixels) applied to both frames before the error

    def __init__(self, *, strength: float = DEFAULT_FLOW_STRENGTH, error_scale: float = DEFAULT_FLOW_ERROR,
                 flow_side: int = DEFAULT_FLOW_SIDE, algorithm: FlowAlgorithm = DEFAULT_FLOW_ALGORITHM,
                 cut_threshold: float = DEFAULT_CUT_THRESHOLD) -> None:
        super().__init__(cut_threshold=cut_threshold)
        if not 0.0 <= strength < 1.0:
            raise ParameterError("flow_strength", strength, "a number in [0, 1)")
        if isinstance(flow_side, bool) or not isinstance(flow_side, int) or flow_side < 16:
            raise ParameterError("flow_side", flow_side, "an integer >= 16")
        self._optical = OpticalFlow(algorithm=algorithm, error_scale=error_scale, error_blur=self.error_blur)
        self.strength, self.error_scale = float(strength), float(error_scale)
        self.flow_side, self.algorithm = flow_side, algorithm
        self._reset()

    def _describe(self) -> str:
        return (f"strength={self.strength}, error_scale={self.error_scale}, flow_side={self.flow_side}, "
                f"algorithm={self.algorithm!r}, " + super()._describe())

    def _reset(self) -> None:
        self._prev: torch.Tensor | None = None  # (P, S, S) smoothed probabilities of the previous frame
        self._count: torch.Tensor | None = None  # (1, S, S) frames averaged into _prev
        self._prev_small: np.ndarray | None = None  # (h, w, 3) uint8 previous small frame

    def _state(self) -> dict[str, Any]:
        small = None if self._prev_small is None else torch.from_numpy(self._prev_small.copy())
        return {"prev": _clone(self._prev), "count": _clone(self._count), "prev_small": small}

    def _load_state(self, state: dict[str, Any]) -> None:
        self._prev, self._count = _clone(state["prev"]), _clone(state["count"])
        small = state["prev_small"]
        self._prev_small = None if small is None else small.detach().cpu().numpy().copy()

    def motion(self, cur: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """Flow and reliability of one frame pair: :meth:`OpticalFlow.motion <streammask.temporal.flow.OpticalFlow.motion>`."""
        return self._optical.motion(cur, prev)

    def _smooth(self, logits, frames, payload, cuts):
        prob = torch.sigmoid(logits)
        b, _, s_h, s_w = prob.shape
        h, w = flow_size(frames.shape[2], frames.shape[3], self.flow_side)
        small = small_frames(frames, (h, w)).cpu().numpy()
        fields = np.zeros((b, 3, h, w), np.float32)
        linked = []  # whether frame i continues the average of frame i - 1
        prev_small = self._prev_small
        for i in range(b):
            ok = not cuts[i] and prev_small is not None and prev_small.shape == small[i].shape
            if ok:
                fields[i] = self.motion(small[i], prev_small)
            linked.append(ok)
            prev_small = small[i]
        if any(linked):
            field = torch.from_numpy(fields).to(prob.device)
            if (h, w) != (s_h, s_w):
                field = F.interpolate(field, size=(s_h, s_w), mode="bilinear", align_corners=False)
        prev = None if self._prev is None else self._prev.to(prob.device)
        count = None if self._count is None else self._count.to(prob.device)
        n_max = self.strength / (1.0 - self.strength)
        out = torch.empty_like(prob)
        for i in range(b):
            if linked[i] and prev is not None and prev.shape == prob[i].shape:
                warped = warp(torch.cat([prev, count]).unsqueeze(0), field[i:i + 1, :2])[0]
                m = (field[i, 2:3] * warped[-1:]).clamp_(max=n_max)
                prev = torch.lerp(prob[i], warped[:-1], m / (m + 1))
                count = m + 1
            else:
                prev = prob[i]
                count = torch.ones_like(prob[i, :1])
            out[i] = prev
        self._prev, self._count = prev.clone(), count.clone()
        self._prev_small = prev_small.copy()
        return to_logits(out), frames, payload


# ---------------------------------------------------------------------------
# factory
# ---------------------------------------------------------------------------
def smoother_for(settings: Mapping[str, Any]) -> TemporalSmoother:
    """The smoother a settings mapping asks for: its ``temporal`` method with its :data:`TEMPORAL_PARAMS`
    keys (other keys are ignored).

    Example:
        >>> smoother_for({"temporal": "ema", "ema_alpha": 0.3, "prompt": "person"})
        EmaSmoother(alpha=0.3, cut_threshold=0.12, causal=True, delay=0)
    """
    return make_temporal(settings.get("temporal", "none"),
                         **{k: v for k, v in settings.items() if k in TEMPORAL_PARAMS and k != "temporal"})


def make_temporal(name: str = "none", **params: Any) -> TemporalSmoother:
    """Build the smoother for a method of :data:`TEMPORAL_METHODS`.

    Args:
        name: the method.
        **params: keys of :data:`TEMPORAL_PARAMS` (validated; missing ones take their
            defaults). Keys another method uses are accepted and ignored, so the whole
            validated flag set can be passed; ``temporal``, when given, must equal ``name``.

    Raises:
        ParameterError: unknown method, unknown key or a value out of range.

    Example:
        >>> make_temporal("ema", ema_alpha=0.3)
        EmaSmoother(alpha=0.3, cut_threshold=0.12, causal=True, delay=0)
    """
    TEMPORAL_PARAMS["temporal"].validate(name)
    if "temporal" in params and params.pop("temporal") != name:
        raise ParameterError("temporal", name, "the same method as the 'temporal' key")
    p = TEMPORAL_PARAMS.validate(params)
    if name == "none":
        return IdentitySmoother()
    cut = p["cut_threshold"]
    if name == "ema":
        return EmaSmoother(alpha=p["ema_alpha"], cut_threshold=cut)
    if name in ("median", "mean"):
        cls = MedianSmoother if name == "median" else MeanSmoother
        return cls(window=p["window"], align=p["window_align"], cut_threshold=cut)
    if name == "hysteresis":
        return HysteresisSmoother(on=p["hysteresis_on"], off=p["hysteresis_off"], cut_threshold=cut)
    return FlowSmoother(strength=p["flow_strength"], error_scale=p["flow_error"], flow_side=p["flow_side"],
                        algorithm=p["flow_algorithm"], cut_threshold=cut)
