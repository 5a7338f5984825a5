"""Composited clips with known alpha, an oracle that plays CLIPSeg, and the matting metrics.

Test helper (``from matte_oracle import ...`` in tests; ``benchmarks/matte_quality.py`` puts
``tests/`` on ``sys.path``). Everything is numpy in memory and seeded.

* :func:`load_textures` reads frames of real clips (the project's ``carphone`` clip, and any
  other clip given, e.g. ``../shared/media/bikes.mp4``) to use as foreground and background.
* :func:`make_matte_clip` composes ``I = a * F + (1 - a) * B`` with a known alpha ``a``:
  ``wobble`` (two moving shapes whose soft edges wobble; one has a hole), ``strands`` (a head-like
  shape with thin hair-like strands of partial alpha that sway) and ``holes`` (a turning ring and a
  plate with several holes). The background pans; the foreground texture moves with its shape.
* :class:`MatteOracle` has the :class:`streammask.pipeline.Segmenter` interface and plays a
  352-square segmenter: the true alpha squashed to the ``S x S`` square (area average), blurred by a
  few model pixels, with fresh low-frequency noise every frame, returned as logits.
* :func:`mad`, :func:`mse`, :func:`grad_error`, :func:`dtssd`: the metrics of RobustVideoMatting's
  evaluation (``evaluation/evaluate_hr.py``) and MatAnyone's: MAD and MSE (x 1e3), Grad (Gaussian
  derivative gradient error, sigma 1.4, summed over the frame / 1e3) and dtSSD (x 1e2).
"""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import av
import cv2
import numpy as np
import torch

__all__ = ["MATTE_KINDS", "write_lossless", "MatteClip", "load_textures", "make_matte_clip", "MatteOracle", "mad", "mse",
           "grad_error", "dtssd", "clip_metrics"]

MATTE_KINDS = ("wobble", "strands", "holes")


# ---------------------------------------------------------------------------
# textures from real clips
# ---------------------------------------------------------------------------
def load_textures(paths: Sequence[str | Path], *, per_clip: int = 3) -> list[np.ndarray]:
    """``per_clip`` frames spread over each clip, ``(H, W, 3)`` float32 RGB 0-255 each (PyAV decode)."""
    import av

    out = []
    for path in paths:
        with av.open(str(path)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        picks = np.linspace(0, len(frames) - 1, per_clip).round().astype(int)
        out += [frames[i].astype(np.float32) for i in picks]
    return out


def _plate(tex: np.ndarray, h: int, w: int, scale: float) -> np.ndarray:
    """``tex`` scaled by ``scale`` and mirror-tiled to at least ``(h, w)``."""
    if scale != 1.0:
        tex = cv2.resize(tex, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    th, tw = tex.shape[:2]
    reps_y, reps_x = -(-h // th) + 1, -(-w // tw) + 1
    row = np.concatenate([tex if i % 2 == 0 else tex[:, ::-1] for i in range(reps_x)], axis=1)
    plate = np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(reps_y)], axis=0)
    return np.ascontiguousarray(plate[:h, :w])


# ---------------------------------------------------------------------------
# clips
# ---------------------------------------------------------------------------
@dataclass
class MatteClip:
    """A composed clip and its truth.

    Attributes:
        name: ``kind/seed``.
        frames: ``(T, H, W, 3)`` uint8 RGB, ``round(a * F + (1 - a) * B)`` plus sensor noise.
        alpha: ``(T, H, W)`` float32 in ``[0, 1]``, the true alpha.
    """

    name: str
    frames: np.ndarray
    alpha: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return f"MatteClip({self.name!r}, frames={self.frames.shape})"

    def frames_bchw(self) -> torch.Tensor:
        """``(T, 3, H, W)`` uint8 tensor."""
        return torch.from_numpy(self.frames).permute(0, 3, 1, 2).contiguous()


def _wobbly_shape(gx, gy, cx, cy, radius, aspect, angle, harmonics, t, softness):
    """Soft-edged wobbly ellipse: alpha from the (radial) signed distance, edge width ``softness`` px
    (varying around the outline)."""
    c, s = math.cos(angle), math.sin(angle)
    u = (c * (gx - cx) + s * (gy - cy))
    v = (-s * (gx - cx) + c * (gy - cy)) * aspect
    rho = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    r = np.full_like(rho, radius)
    for k, amp, phase, speed in harmonics:
        r += radius * amp * np.sin(k * theta + phase + speed * t)
    width = softness * (1.0 + 0.7 * np.sin(2 * theta + 0.3 * t))  # sharp here, soft there
    return np.clip(0.5 + (r - rho) / np.maximum(width, 0.35), 0.0, 1.0), theta


def _strands(h, w, cx, cy, radius, t, rng_params, scale):
    """Coverage of thin, swaying hair-like strands leaving a shape of ``radius`` around ``(cx, cy)``."""
    canvas = np.zeros((h, w), np.float32)
    for base_angle, length, bend, phase, opacity, width in rng_params:
        layer = np.zeros((h, w), np.uint8)
        pts = []
        ang = base_angle + 0.15 * math.sin(0.25 * t + phase)
        for k in range(17):
            sfrac = k / 16.0
            d = radius * 0.92 + sfrac * length * scale
            off = bend * scale * sfrac * sfrac * math.sin(0.3 * t + phase)
            x = cx + d * math.cos(ang) - off * math.sin(ang)
            y = cy + d * math.sin(ang) + off * math.cos(ang)
            pts.append((x, y))
        arr = np.round(np.asarray(pts) * 16).astype(np.int32)[None]
        cv2.polylines(layer, arr, False, 255, thickness=max(1, int(round(width * scale))), lineType=cv2.LINE_AA,
                      shift=4)
        canvas = np.maximum(canvas, layer.astype(np.float32) / 255.0 * opacity)
    return canvas


def make_matte_clip(kind: str, textures: Sequence[np.ndarray], *, length: int = 24, size: tuple[int, int] = (720, 1280),
                    seed: int = 0) -> MatteClip:
    """Compose one clip with known alpha.

    Args:
        kind: one of :data:`MATTE_KINDS`.
        textures: real images (:func:`load_textures`); the foreground and the background are
            drawn from them by ``seed``.
        length: frames.
        size: ``(H, W)``; lengths scale with the height (a clip looks the same at any size).
        seed: picks the textures, the shapes, their paths and the sensor noise.
    """
    if kind not in MATTE_KINDS:
        raise ValueError(f"kind={kind!r} is not one of {MATTE_KINDS}")
    h, w = size
    rng = np.random.default_rng([seed, MATTE_KINDS.index(kind)])
    k = h / 720.0  # one unit = 1 px at 720p
    i_fg, i_bg = rng.choice(len(textures), 2, replace=len(textures) < 2)
    pan = (rng.uniform(-3, 3) * k, rng.uniform(-1.5, 1.5) * k)
    margin = int(abs(pan[0]) * length + abs(pan[1]) * length) + 8
    bg_plate = _plate(textures[i_bg], h + 2 * margin, w + 2 * margin, rng.uniform(1.2, 2.2) * k)
    fg_plate = _plate(textures[i_fg], h + 2 * margin, w + 2 * margin, rng.uniform(1.5, 3.0) * k)
    fg_plate = np.clip(fg_plate * rng.uniform(0.8, 1.2, 3) + rng.uniform(-25, 25, 3), 0, 255).astype(np.float32)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))

    def harmonics(n):
        return [(int(rng.integers(2, 9)), rng.uniform(0.02, 0.08), rng.uniform(0, 2 * math.pi), rng.uniform(-0.3, 0.3))
                for _ in range(n)]

    shapes = []  # (path(t) -> (cx, cy, angle), radius, aspect, harmonics, softness, hole)
    if kind == "wobble":
        for j in range(2):
            x0, y0 = rng.uniform(0.25, 0.75) * w, rng.uniform(0.3, 0.7) * h
            vx, vy = rng.uniform(-6, 6) * k, rng.uniform(-3, 3) * k
            spin = rng.uniform(-0.05, 0.05)
            shapes.append((lambda t, x0=x0, y0=y0, vx=vx, vy=vy, spin=spin: (x0 + vx * t, y0 + vy * t, spin * t),
                           rng.uniform(90, 160) * k, rng.uniform(0.6, 1.4), harmonics(4), rng.uniform(1.0, 3.0) * k,
                           0.3 if j == 0 else 0.0))
    elif kind == "strands":
        x0, y0 = rng.uniform(0.4, 0.6) * w, rng.uniform(0.45, 0.6) * h
        shapes.append((lambda t: (x0 + 2.0 * k * t, y0 + 8 * k * math.sin(t / 6), 0.0), 150 * k, 1.15, harmonics(3),
                       1.5 * k, 0.0))
        n = int(rng.integers(22, 34))
        strand_params = [(rng.uniform(-math.pi * 0.95, -math.pi * 0.05) if i % 3 else rng.uniform(-math.pi, math.pi),
                          rng.uniform(30, 110), rng.uniform(-40, 40), rng.uniform(0, 2 * math.pi),
                          rng.uniform(0.45, 0.95), rng.uniform(1.0, 2.5)) for i in range(n)]
    else:  # holes
        x0, y0 = rng.uniform(0.3, 0.45) * w, rng.uniform(0.4, 0.6) * h
        shapes.append((lambda t: (x0 + 3 * k * t, y0, 0.06 * t), 170 * k, 1.0, harmonics(2), 2.0 * k, 0.55))
        x1, y1 = rng.uniform(0.6, 0.75) * w, rng.uniform(0.35, 0.65) * h
        shapes.append((lambda t: (x1 - 2 * k * t, y1 + 1.5 * k * t, -0.04 * t), 130 * k, 0.8, harmonics(2), 1.2 * k,
                       0.0))
        hole_specs = [(rng.uniform(-0.5, 0.5), rng.uniform(-0.4, 0.4), rng.uniform(14, 30) * k) for _ in range(4)]

    frames = np.empty((length, h, w, 3), np.uint8)
    alpha = np.empty((length, h, w), np.float32)
    for t in range(length):
        a = np.zeros((h, w), np.float32)
        for j, (path, radius, aspect, harm, soft, hole) in enumerate(shapes):
            cx, cy, ang = path(t)
            sa, _ = _wobbly_shape(gx, gy, cx, cy, radius, aspect, ang, harm, t, soft)
            if hole:
                ha, _ = _wobbly_shape(gx, gy, cx, cy, radius * hole, aspect, ang, harm[:1], t, soft)
                sa = sa * (1.0 - ha)
            if kind == "holes" and j == 1:
                c, s = math.cos(ang), math.sin(ang)
                for hx, hy, hr in hole_specs:
                    px, py = cx + radius * (c * hx - s * hy), cy + radius * (s * hx + c * hy)
                    dist = np.sqrt((gx - px) ** 2 + (gy - py) ** 2)
                    sa = sa * (1.0 - np.clip(0.5 + (hr - dist) / (1.2 * k), 0.0, 1.0))
            a = 1.0 - (1.0 - a) * (1.0 - sa)
        if kind == "strands":
            cx, cy, _ = shapes[0][0](t)
            a = np.maximum(a, _strands(h, w, cx, cy, shapes[0][1], t, strand_params, k))
        ox, oy = int(round(margin + pan[0] * t)), int(round(margin + pan[1] * t))
        bg = bg_plate[oy:oy + h, ox:ox + w]
        cx, cy, _ = shapes[0][0](t)
        fx = int(np.clip(round(margin + (cx - shapes[0][0](0)[0])), 0, 2 * margin))
        fy = int(np.clip(round(margin + (cy - shapes[0][0](0)[1])), 0, 2 * margin))
        fg = fg_plate[fy:fy + h, fx:fx + w]
        img = a[..., None] * fg + (1.0 - a[..., None]) * bg + rng.normal(0.0, 1.5, (h, w, 3)).astype(np.float32)
        frames[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        alpha[t] = a
    return MatteClip(f"{kind}/{seed}", frames, alpha)


# ---------------------------------------------------------------------------
# oracle segmenter
# ---------------------------------------------------------------------------
def _frame_key(chw: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(chw).tobytes(), digest_size=16).digest()


class MatteOracle:
    """A :class:`streammask.pipeline.Segmenter` that plays CLIPSeg from the true alpha.

    For each frame: the alpha is area-averaged to the ``size x size`` square the model sees,
    blurred (Gaussian, ``blur`` model pixels), turned into logits (``logit(p)`` clipped to
    ``[-clip, clip]``) and given fresh low-frequency noise (std ``noise`` logits, correlated over
    ``cell`` model pixels) plus a per-frame bias (std ``bias`` logits, moving every edge a little
    in or out). Frames are recognized by their bytes, so the answer does not depend on batching.
    """

    def __init__(self, clips: MatteClip | Sequence[MatteClip], *, size: int = 352, blur: float = 2.0,
                 noise: float = 0.6, cell: float = 40.0, bias: float = 0.3, clip: float = 7.0, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.clips = [clips] if isinstance(clips, MatteClip) else list(clips)
        self.size, self.blur, self.noise, self.cell, self.bias, self.clip = size, blur, noise, cell, bias, clip
        self.seed = seed
        self.device = torch.device(device)
        self._index: dict[bytes, tuple[int, int]] = {}
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        for c, clip_ in enumerate(self.clips):
            for t in range(len(clip_)):
                self._index[_frame_key(clip_.frames[t].transpose(2, 0, 1))] = (c, t)

    def logits_for(self, clip: int, t: int) -> np.ndarray:
        """``(S, S)`` float32 logits of one frame (deterministic, cached)."""
        key = (clip, t)
        if key not in self._cache:
            s = self.size
            a = cv2.resize(self.clips[clip].alpha[t], (s, s), interpolation=cv2.INTER_AREA)
            p = cv2.GaussianBlur(a, (0, 0), self.blur, borderType=cv2.BORDER_REFLECT) if self.blur > 0 else a
            lo = 1.0 / (1.0 + math.exp(self.clip))
            x = np.log(np.clip(p, lo, 1 - lo) / np.clip(1 - p, lo, 1 - lo))
            rng = np.random.default_rng([self.seed, clip, t])
            n = max(2, int(round(s / self.cell)))
            field = cv2.resize(rng.standard_normal((n, n)).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
            field /= field.std() + 1e-6
            x = x + self.noise * field + rng.normal(0.0, self.bias)
            self._cache[key] = x.astype(np.float32)
        return self._cache[key]

    def segment(self, frames: torch.Tensor, prompts: Sequence[str], *, preprocess: str = "pil",
                size: int | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 frames of known clips -> ``(B, P, S, S)`` float32 logits (the same map per prompt)."""
        if size not in (None, self.size):
            raise ValueError(f"the oracle answers at size {self.size}, got size={size}")
        arr = frames.detach().cpu().numpy()
        out = np.empty((len(arr), len(prompts), self.size, self.size), np.float32)
        for i, f in enumerate(arr):
            key = _frame_key(f)
            if key not in self._index:
                raise KeyError(f"frame {i} of the batch is not a frame of the oracle's clips")
            out[i, :] = self.logits_for(*self._index[key])
        return torch.from_numpy(out).to(self.device)


# ---------------------------------------------------------------------------
# metrics (RobustVideoMatting's evaluation, alpha in [0, 1])
# ---------------------------------------------------------------------------
def mad(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute difference x 1e3."""
    return float(np.abs(pred - true).mean() * 1e3)


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean squared error x 1e3."""
    return float(((pred - true) ** 2).mean() * 1e3)


def _gauss_filter(sigma: float, epsilon: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * epsilon))))
    size = 2 * half + 1
    x = np.arange(size, dtype=np.float64) - half
    g = np.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * np.sqrt(2 * np.pi))
    dg = -x * g / sigma ** 2
    fx = np.outer(g, dg)  # filter_x[i, j] = gaussian(i - half) * dgaussian(j - half)
    fx /= np.sqrt((fx ** 2).sum())
    return fx, fx.T.copy()


_GRAD_FILTERS = _gauss_filter(1.4)


def _gauss_gradient(img: np.ndarray) -> np.ndarray:
    fx, fy = _GRAD_FILTERS
    gx = cv2.filter2D(img, -1, fx, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(img, -1, fy, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx ** 2 + gy ** 2)


def grad_error(pred: np.ndarray, true: np.ndarray) -> float:
    """Gradient error (sigma 1.4), one ``(H, W)`` frame: both min-max normalized, then the
    squared difference of their Gaussian-derivative gradient magnitudes, summed, / 1e3."""
    p = cv2.normalize(pred.astype(np.float32), None, 1.0, 0.0, cv2.NORM_MINMAX)
    t = cv2.normalize(true.astype(np.float32), None, 1.0, 0.0, cv2.NORM_MINMAX)
    return float(((_gauss_gradient(t) - _gauss_gradient(p)) ** 2).sum() / 1e3)


def dtssd(pred_t: np.ndarray, pred_tm1: np.ndarray, true_t: np.ndarray, true_tm1: np.ndarray) -> float:
    """Temporal coherence x 1e2: ``sqrt(sum(((p_t - p_t-1) - (g_t - g_t-1))^2) / N)``."""
    d = (pred_t - pred_tm1) - (true_t - true_tm1)
    return float(np.sqrt((d ** 2).sum() / true_t.size) * 1e2)


def clip_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Mean MAD, MSE, Grad over the frames and dtSSD over consecutive pairs of ``(T, H, W)`` alphas."""
    pred = pred.astype(np.float32)
    true = true.astype(np.float32)
    out = {"mad": np.mean([mad(p, g) for p, g in zip(pred, true)]),
           "mse": np.mean([mse(p, g) for p, g in zip(pred, true)]),
           "grad": np.mean([grad_error(p, g) for p, g in zip(pred, true)])}
    out["dtssd"] = np.mean([dtssd(pred[t], pred[t - 1], true[t], true[t - 1]) for t in range(1, len(pred))]) \
        if len(pred) > 1 else float("nan")
    return {k: float(v) for k, v in out.items()}


def write_lossless(frames: np.ndarray, path: Path) -> Path:
    """FFV1 RGB: decoded back to the same bytes, so the oracle recognizes every frame."""
    with av.open(str(path), "w") as c:
        st = c.add_stream("ffv1", rate=Fraction(30000, 1001))
        st.height, st.width = frames.shape[1:3]
        st.pix_fmt = "bgr0"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for p in st.encode(vf):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    return path
