"""Motion and scene cuts between frames: the optical flow, warping, and the scene-cut detector.

Shared by the ``flow`` smoother (:mod:`.smoothers`) and the key-frame reducer
(:mod:`.keyframes`): :class:`OpticalFlow` computes dense flow and its reliability on
small host copies of the frames, :func:`warp` carries a map along it on the device,
:class:`SceneCutDetector` flags the frames that start a new shot.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError

__all__ = ["OpticalFlow", "SceneCutDetector", "warp", "small_frames", "thumbnails", "flow_size", "FLOW_ALGORITHMS",
           "DEFAULT_CUT_THRESHOLD", "DEFAULT_FLOW_ERROR", "DEFAULT_FLOW_SIDE", "DEFAULT_FLOW_ALGORITHM", "THUMB_SIDE"]

THUMB_SIDE = 32
"""Side of the gray thumbnails the scene-cut detector compares."""


FlowAlgorithm = Literal["dis_ultrafast", "dis_fast", "dis_medium", "farneback"]


FLOW_ALGORITHMS = ("dis_ultrafast", "dis_fast", "dis_medium", "farneback")


DEFAULT_CUT_THRESHOLD = 0.12


DEFAULT_FLOW_ERROR = 0.05


DEFAULT_FLOW_SIDE = 240


DEFAULT_FLOW_ALGORITHM = "dis_medium"


def small_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-downscaled frames in OpenCV's layout, on the frames' device.

    Args:
        frames: ``(B, 3, H, W)`` uint8 RGB.
        size: ``(h, w)`` of the result.

    Returns:
        ``(B, h, w, 3)`` uint8 RGB, rounded.

    Example:
        >>> small_frames(torch.full((2, 3, 8, 8), 200, dtype=torch.uint8), (4, 4)).shape
        torch.Size([2, 4, 4, 3])
    """
    x = frames.float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="area")
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def thumbnails(frames: torch.Tensor, side: int = THUMB_SIDE) -> torch.Tensor:
    """``(B, 3, H, W)`` uint8 -> ``(B, side, side)`` float32 gray thumbnails in ``[0, 1]``, on the host."""
    x = frames.float()
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    return (F.interpolate(gray, size=(side, side), mode="area")[:, 0] / 255.0).cpu()


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``x`` by a flow given in normalized coordinates.

    ``out[..., y, x] = x[..., y + flow_y, x + flow_x]`` (bilinear, border padding),
    with the flow in units of half the image (``grid_sample``'s, ``align_corners=False``).

    Args:
        x: ``(B, C, H, W)`` float.
        flow: ``(B, 2, H, W)`` float, ``(dx, dy)`` normalized offsets.

    Returns:
        ``(B, C, H, W)``.

    Example:
        >>> warp(torch.rand(1, 2, 5, 5), torch.zeros(1, 2, 5, 5)).shape
        torch.Size([1, 2, 5, 5])
    """
    b, _, h, w = x.shape
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    grid = base.unsqueeze(0) + flow.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def flow_size(h: int, w: int, side: int) -> tuple[int, int]:
    """The ``(h, w)`` of the small frames the flow runs on: the longest side at most ``side``, at least 8."""
    scale = min(1.0, side / max(h, w))
    return max(8, round(h * scale)), max(8, round(w * scale))


class SceneCutDetector:
    """Flags the frames that start a new scene.

    A frame starts a scene when it is the first one seen (after construction or
    :meth:`reset`) or when the mean absolute difference between its 32x32 gray
    thumbnail and the previous frame's (values in ``[0, 1]``) exceeds
    ``threshold``. Thumbnails average away texture and noise, so a camera pan or
    a moving object scores far lower than a cut between two shots.

    Args:
        threshold: in ``[0, 1]``; 1 never cuts (except on the first frame).
    """

    def __init__(self, *, threshold: float = DEFAULT_CUT_THRESHOLD) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ParameterError("cut_threshold", threshold, "a number in [0, 1]")
        self.threshold = float(threshold)
        self._prev: torch.Tensor | None = None
        self.last_scores: list[float] = []  # the difference scores of the last update (first frame: inf)

    def update(self, frames: torch.Tensor) -> list[bool]:
        """``(B, 3, H, W)`` uint8 -> ``B`` flags, True where a frame starts a new scene."""
        thumbs = thumbnails(frames)
        flags, scores = [], []
        prev = self._prev
        if prev is not None and prev.device != thumbs.device:  # loaded from a state_dict (on the host)
            prev = prev.to(thumbs.device)
        for t in thumbs:
            score = math.inf if prev is None else float((t - prev).abs().mean())
            scores.append(score)
            flags.append(score > self.threshold or prev is None)
            prev = t
        self._prev = prev
        self.last_scores = scores
        return flags

    def reset(self) -> None:
        self._prev = None

    def state_dict(self) -> dict[str, Any]:
        return {"prev": None if self._prev is None else self._prev.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        prev = state["prev"]
        self._prev = None if prev is None else prev.detach().cpu().clone()


class OpticalFlow:
    """Dense optical flow between small frames, with the warp's reliability, on the host (OpenCV).

    One object serves the ``flow`` smoother and the ``--stride`` / ``--skip-static`` key-frame
    reducer. It keeps no state between calls but the OpenCV engine.

    Args:
        algorithm: ``dis_ultrafast``, ``dis_fast``, ``dis_medium`` or ``farneback``.
        error_scale: photometric error (0-1) at which a warp's reliability falls to ``1/e``.
        error_blur: Gaussian sigma (small-frame pixels) applied to both frames before the error.

    Example:
        >>> f = OpticalFlow()
        >>> f.motion(np.zeros((24, 32, 3), np.uint8), np.zeros((24, 32, 3), np.uint8)).shape
        (3, 24, 32)
    """

    def __init__(self, *, algorithm: FlowAlgorithm = DEFAULT_FLOW_ALGORITHM, error_scale: float = DEFAULT_FLOW_ERROR,
                 error_blur: float = 0.5) -> None:
        if algorithm not in FLOW_ALGORITHMS:
            raise ParameterError("flow_algorithm", algorithm, "one of " + ", ".join(repr(a) for a in FLOW_ALGORITHMS))
        if not error_scale > 0:
            raise ParameterError("flow_error", error_scale, "a number > 0")
        self.algorithm, self.error_scale, self.error_blur = algorithm, float(error_scale), float(error_blur)
        self._engine = None  # the OpenCV DIS object (no state between calls)

    def __repr__(self) -> str:
        return f"OpticalFlow(algorithm={self.algorithm!r}, error_scale={self.error_scale}, error_blur={self.error_blur})"

    def flow(self, cur: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """``(h, w, 2)`` float32 pixel flow with ``cur(x) ~ prev(x + flow(x))`` from ``(h, w)`` uint8 gray frames."""
        import cv2

        if self.algorithm == "farneback":
            return cv2.calcOpticalFlowFarneback(cur, prev, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        if self._engine is None:
            preset = {"dis_ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "dis_fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                      "dis_medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[self.algorithm]
            self._engine = cv2.DISOpticalFlow_create(preset)
        return self._engine.calc(cur, prev, None)

    def motion(self, cur: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """Flow and reliability of one frame pair, on the host.

        Args:
            cur, prev: ``(h, w, 3)`` uint8 RGB small frames.

        Returns:
            ``(3, h, w)`` float32: the flow ``(dx, dy)`` in normalized units (see
            :func:`warp`) and the reliability ``exp(-(e / error_scale)^2)`` in ``[0, 1]``,
            0 where the flow leaves the frame.
        """
        import cv2

        h, w = cur.shape[:2]
        flow = self.flow(cv2.cvtColor(cur, cv2.COLOR_RGB2GRAY), cv2.cvtColor(prev, cv2.COLOR_RGB2GRAY))
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        mx, my = gx + flow[..., 0], gy + flow[..., 1]
        warped = cv2.remap(prev.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        current = cur.astype(np.float32)
        if self.error_blur > 0:  # texture finer than the flow resolves is not a warp error
            current = cv2.GaussianBlur(current, (0, 0), self.error_blur)
            warped = cv2.GaussianBlur(warped, (0, 0), self.error_blur)
        err = np.abs(current - warped).mean(axis=2) * (1.0 / 255.0)
        reliability = np.exp(-np.square(err * (1.0 / self.error_scale)))
        reliability[(mx < -0.5) | (mx > w - 0.5) | (my < -0.5) | (my > h - 0.5)] = 0.0
        return np.stack([flow[..., 0] * (2.0 / w), flow[..., 1] * (2.0 / h), reliability]).astype(np.float32)
