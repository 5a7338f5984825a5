"""Synthetic clips with known truth, an oracle segmenter and the temporal quality metrics.

Test helper (``from oracle import ...`` in tests; ``benchmarks/temporal_quality.py``
puts ``tests/`` on ``sys.path``). Everything is numpy in memory and seeded, so
a clip and the oracle's noise are the same on every machine.

* :func:`make_clip` renders textured objects over a textured background:
  ``moving`` (two objects on curved paths), ``turning`` (a rotating bar and an
  orbiting disc), ``entering`` (objects coming in and leaving through the frame
  edges), ``cut`` (a hard cut between two shots) and ``pan`` (the camera pans
  while an object moves), with the true mask of every frame.
* :class:`OracleSegmenter` has the :class:`streammask.pipeline.Segmenter`
  interface and returns the true mask as logits, degraded like a per-frame
  segmenter: independent noise, blotches, edge jitter and occasional dropouts,
  drawn independently for every frame (it recognizes frames by their bytes).
* :func:`score` measures IoU, flicker and lag of a predicted mask sequence.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np
import torch

__all__ = [
    "CLIP_KINDS", "SyntheticClip", "make_clip", "benchmark_clips", "OracleNoise", "OracleSegmenter",
    "run_smoother", "Scores", "score", "iou", "flicker", "edge_lag",
]

CLIP_KINDS = ("moving", "turning", "entering", "cut", "pan")


# ---------------------------------------------------------------------------
# clips
# ---------------------------------------------------------------------------
@dataclass
class SyntheticClip:
    """A rendered clip and its truth.

    Attributes:
        name: the clip kind.
        frames: ``(T, H, W, 3)`` uint8 RGB.
        truth: ``(T, H, W)`` bool, the object mask of each frame.
        cuts: ``(T,)`` bool, True where a frame starts a new shot (frame 0 is not a cut).
        ids: ``(T, H, W)`` int16 object id per pixel (0 = background), when asked for.
        flow: ``(T, H, W, 2)`` float32 true backward flow (``frame_t(x) ~ frame_{t-1}(x + flow)``
            where nothing is occluded), when asked for.
    """

    name: str
    frames: np.ndarray
    truth: np.ndarray
    cuts: np.ndarray
    ids: np.ndarray | None = None
    flow: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return f"SyntheticClip({self.name!r}, frames={self.frames.shape}, cuts={np.flatnonzero(self.cuts).tolist()})"

    def frames_bchw(self) -> torch.Tensor:
        """``(T, 3, H, W)`` uint8 tensor."""
        return torch.from_numpy(self.frames).permute(0, 3, 1, 2).contiguous()

    def truth_at(self, size: int) -> np.ndarray:
        """``(T, size, size)`` bool truth at the model's square resolution (area coverage >= 1/2)."""
        out = np.empty((len(self), size, size), bool)
        for t, m in enumerate(self.truth):
            out[t] = cv2.resize(m.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) >= 0.5
        return out


def _texture(rng: np.random.Generator, h: int, w: int, *, mean: Sequence[float], contrast: float) -> np.ndarray:
    """Smooth multi-scale colour noise, ``(h, w, 3)`` float32 around ``mean`` (0-255)."""
    tex = np.zeros((h, w, 3), np.float32)
    for cell, gain in ((3, 0.5), (9, 0.8), (27, 1.0)):
        gh, gw = max(2, h // cell), max(2, w // cell)
        n = rng.standard_normal((gh, gw, 3)).astype(np.float32)
        tex += gain * cv2.resize(n, (w, h), interpolation=cv2.INTER_CUBIC)
    tex /= tex.std() + 1e-6
    return np.asarray(mean, np.float32) + contrast * tex


@dataclass(eq=False)
class _Object:
    shape: str  # ellipse | rect
    a: float  # half extents (pixels)
    b: float
    texture: np.ndarray  # (th, tw, 3) float32, indexed by object coordinates + its centre
    path: Any  # t -> (cx, cy, angle) in screen pixels / radians
    uid: int = 0


def _make_object(rng, shape, a, b, mean, path) -> _Object:
    side = int(2 * math.hypot(a, b)) + 8
    return _Object(shape, a, b, _texture(rng, side, side, mean=mean, contrast=38.0), path)


def _render(bg: np.ndarray, cams: list, objects: list[_Object], t: int, h: int, w: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frame ``t``: image, truth, object ids (0 = background, else ``id(object)``-based index) and
    the true backward flow (``frame_t(x) = frame_{t-1}(x + flow(x))`` where nothing is occluded)."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    cam, cam0 = cams[t], cams[max(t - 1, 0)]
    img = cv2.remap(bg, gx + cam[0], gy + cam[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mask = np.zeros((h, w), bool)
    ids = np.zeros((h, w), np.int16)
    flow = np.stack([np.full((h, w), cam[0] - cam0[0], np.float32), np.full((h, w), cam[1] - cam0[1], np.float32)], -1)
    for ob in objects:
        cx, cy, ang = ob.path(t)
        c, s = math.cos(ang), math.sin(ang)
        u = c * (gx - cx) + s * (gy - cy)  # object coordinates
        v = -s * (gx - cx) + c * (gy - cy)
        if ob.shape == "ellipse":
            inside = (u / ob.a) ** 2 + (v / ob.b) ** 2 <= 1.0
        else:
            inside = (np.abs(u) <= ob.a) & (np.abs(v) <= ob.b)
        th, tw = ob.texture.shape[:2]
        tex = cv2.remap(ob.texture, u + tw / 2, v + th / 2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        img[inside] = tex[inside]
        mask |= inside
        ids[inside] = ob.uid
        px, py, pa = ob.path(t - 1)  # where this object point was one frame earlier
        pc, ps = math.cos(pa), math.sin(pa)
        flow[..., 0] = np.where(inside, px + pc * u - ps * v - gx, flow[..., 0])
        flow[..., 1] = np.where(inside, py + ps * u + pc * v - gy, flow[..., 1])
    img = img + rng.normal(0.0, 2.0, img.shape).astype(np.float32)  # sensor noise: every frame unique
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask, ids, flow


def make_clip(kind: str, *, length: int = 60, size: tuple[int, int] = (240, 320), seed: int = 0,
              motion: bool = False) -> SyntheticClip:
    """Render one synthetic clip.

    Args:
        kind: one of :data:`CLIP_KINDS`.
        length: frames.
        size: ``(H, W)``.
        seed: texture, path and sensor-noise seed.
        motion: also return the object ids and the true flow of every frame.

    Motion is given in fractions of the frame width per frame, so a clip looks the
    same at any size (about 0.5-2 % of the width per frame, 1.5-6 px at 320).
    """
    if kind not in CLIP_KINDS:
        raise ValueError(f"kind={kind!r} is not one of {CLIP_KINDS}")
    h, w = size
    rng = np.random.default_rng([seed, CLIP_KINDS.index(kind)])
    u = w / 100.0  # one unit = 1 % of the width
    T = length
    cams = [(0.0, 0.0)] * T
    cuts = np.zeros(T, bool)
    bg = _texture(rng, h + 8, w + 8, mean=(110, 120, 100), contrast=30.0)
    bgs = [bg] * T
    scenes: list[list[_Object]] = [[]] * T

    if kind == "moving":
        o1 = _make_object(rng, "ellipse", 11 * u, 8 * u, (200, 90, 80),
                          lambda t: (20 * u + 1.6 * u * t, h / 2 + 12 * u * math.sin(t / 9), 0.0))
        o2 = _make_object(rng, "rect", 8 * u, 6 * u, (60, 80, 190),
                          lambda t: (75 * u - 0.9 * u * t, h / 3 + 0.5 * u * t, 0.02 * t))
        scenes = [[o2, o1]] * T
    elif kind == "turning":
        o1 = _make_object(rng, "rect", 20 * u, 4.5 * u, (210, 180, 60),
                          lambda t: (w / 2, h / 2, 0.09 * t))
        o2 = _make_object(rng, "ellipse", 6 * u, 6 * u, (70, 170, 200),
                          lambda t: (w / 2 + 30 * u * math.cos(t / 8), h / 2 + 22 * u * math.sin(t / 8), -0.1 * t))
        scenes = [[o1, o2]] * T
    elif kind == "entering":
        o1 = _make_object(rng, "ellipse", 10 * u, 7 * u, (220, 120, 90),
                          lambda t: (-12 * u + 2.2 * u * t, h * 0.35, 0.0))
        o2 = _make_object(rng, "rect", 7 * u, 9 * u, (80, 60, 170),
                          lambda t: (w * 0.7, h + 12 * u - 2.0 * u * t, 0.01 * t))
        scenes = [[o1, o2]] * T
    elif kind == "cut":
        bg2 = _texture(rng, h + 8, w + 8, mean=(60, 70, 150), contrast=30.0)
        o1 = _make_object(rng, "ellipse", 12 * u, 9 * u, (210, 200, 90),
                          lambda t: (25 * u + 1.2 * u * t, h / 2, 0.0))
        o2 = _make_object(rng, "rect", 9 * u, 11 * u, (200, 70, 60),
                          lambda t: (w - 20 * u - 1.0 * u * (t - T // 2), h * 0.55 + 0.4 * u * (t - T // 2), -0.03 * t))
        half = T // 2
        cuts[half] = True
        bgs = [bg] * half + [bg2] * (T - half)
        scenes = [[o1]] * half + [[o2]] * (T - half)
    elif kind == "pan":
        bg = _texture(rng, h + 8, w + int(3 * u * T) + 16, mean=(110, 120, 100), contrast=30.0)
        bgs = [bg] * T
        cams = [(1.5 * u * t, 0.3 * u * math.sin(t / 6)) for t in range(T)]
        o1 = _make_object(rng, "ellipse", 10 * u, 12 * u, (200, 100, 150),
                          lambda t: (30 * u + 0.8 * u * t, h / 2 + 5 * u * math.sin(t / 7), 0.0))
        scenes = [[o1]] * T

    for uid, ob in enumerate(dict.fromkeys(ob for scene in scenes for ob in scene), start=1):
        ob.uid = uid
    frames = np.empty((T, h, w, 3), np.uint8)
    truth = np.empty((T, h, w), bool)
    ids = np.empty((T, h, w), np.int16) if motion else None
    flow = np.empty((T, h, w, 2), np.float32) if motion else None
    for t in range(T):
        frames[t], truth[t], i, f = _render(bgs[t], cams, scenes[t], t, h, w, rng)
        if motion:
            ids[t], flow[t] = i, f
    return SyntheticClip(kind, frames, truth, cuts, ids, flow)


def benchmark_clips(*, length: int = 60, size: tuple[int, int] = (240, 320), seed: int = 0,
                    motion: bool = False) -> list[SyntheticClip]:
    """One clip of each kind in :data:`CLIP_KINDS`."""
    return [make_clip(k, length=length, size=size, seed=seed, motion=motion) for k in CLIP_KINDS]


def add_benchmark_arguments(parser) -> None:
    """The oracle benchmarks' shared flags (``benchmarks/temporal_quality.py``, ``benchmarks/reduce_quality.py``):
    ``--length``, ``--size H W`` (for :func:`benchmark_clips`), ``--side`` (the oracle's model side), ``--seeds``
    and ``--batch-size``."""
    parser.add_argument("--length", type=int, default=60, help="frames per clip")
    parser.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    parser.add_argument("--side", type=int, default=352, help="model side S of the oracle's logits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--batch-size", type=int, default=8)


# ---------------------------------------------------------------------------
# oracle segmenter
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class OracleNoise:
    """How the oracle degrades the truth. Lengths are in pixels at a 352 model side
    (scaled with the side); logit values as CLIPSeg's (object ~ +4, background ~ -6).

    Attributes:
        fg, bg: logit inside / far outside the object.
        slope: logits per pixel across an edge (soft, as CLIPSeg's upsampled output).
        pixel_std: std of independent, spatially correlated logit noise (cell: correlation length).
        edge_jitter: std of a per-frame shift of the whole edge in or out (pixels).
        edge_wobble: std of a smooth, per-frame varying displacement along the edge (pixels).
        blotches: mean number of blotches per frame (Poisson), each a Gaussian bump of
            ``blotch_amp`` logits (random sign) with radius ``blotch_radius`` (pixels).
        dropout: probability that a frame loses all or half of the object (minus ``dropout_amp`` logits).
    """

    fg: float = 4.0
    bg: float = -6.0
    slope: float = 0.6
    pixel_std: float = 1.0
    cell: float = 8.0
    edge_jitter: float = 1.5
    edge_wobble: float = 1.5
    blotches: float = 0.8
    blotch_amp: tuple[float, float] = (4.0, 8.0)
    blotch_radius: tuple[float, float] = (10.0, 30.0)
    dropout: float = 0.04
    dropout_amp: tuple[float, float] = (5.0, 9.0)


def _smooth_field(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
    """Unit-std noise correlated over ``cell`` pixels, ``(size, size)`` float32."""
    n = max(2, int(round(size / max(cell, 1.0))))
    f = cv2.resize(rng.standard_normal((n, n)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    return f / (f.std() + 1e-6)


def _frame_key(chw: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(chw).tobytes(), digest_size=16).digest()


class OracleSegmenter:
    """A :class:`streammask.pipeline.Segmenter` that knows the truth and adds realistic per-frame noise.

    Frames are recognized by their bytes (every synthetic frame is unique), so the
    answer for a frame does not depend on the order or batching of calls; the
    noise is seeded by ``(seed, clip, frame, prompt)``.

    Args:
        clips: the clips whose frames it will be asked about.
        size: model side ``S``.
        noise: the degradation model.
        seed: noise seed.
        device: where the logits are returned.
        cache: keep every frame's logits once computed (benchmarks running many methods).
    """

    def __init__(self, clips: SyntheticClip | Sequence[SyntheticClip], *, size: int = 352,
                 noise: OracleNoise = OracleNoise(), seed: int = 0, device: str | torch.device = "cpu",
                 cache: bool = False) -> None:
        self.clips = [clips] if isinstance(clips, SyntheticClip) else list(clips)
        self.size = size
        self.noise = noise
        self.seed = seed
        self.device = torch.device(device)
        self.calls = 0
        self._cache: dict[tuple[int, int, int], np.ndarray] | None = {} if cache else None
        self._index: dict[bytes, tuple[int, int]] = {}
        self._truth: dict[int, np.ndarray] = {}
        for c, clip in enumerate(self.clips):
            for t in range(len(clip)):
                self._index[_frame_key(clip.frames[t].transpose(2, 0, 1))] = (c, t)

    def truth(self, clip: int) -> np.ndarray:
        """``(T, S, S)`` bool truth of clip number ``clip`` at the model side."""
        if clip not in self._truth:
            self._truth[clip] = self.clips[clip].truth_at(self.size)
        return self._truth[clip]

    def logits_for(self, clip: int, t: int, prompt: int = 0) -> np.ndarray:
        """``(S, S)`` float32 noisy logits of one frame (deterministic)."""
        if self._cache is not None:
            key = (clip, t, prompt)
            if key not in self._cache:
                self._cache[key] = self._logits(clip, t, prompt)
            return self._cache[key]
        return self._logits(clip, t, prompt)

    def _logits(self, clip: int, t: int, prompt: int) -> np.ndarray:
        nz, s = self.noise, self.size
        k = s / 352.0
        gt = self.truth(clip)[t].astype(np.uint8)
        rng = np.random.default_rng([self.seed, clip, t, prompt])
        if gt.any():
            inside = cv2.distanceTransform(gt, cv2.DIST_L2, 5)
            outside = cv2.distanceTransform(1 - gt, cv2.DIST_L2, 5) if not gt.all() else np.zeros_like(inside)
            sd = inside - outside  # signed distance, > 0 inside
        else:
            sd = np.full((s, s), -1e3, np.float32)
        shift = rng.normal(0.0, nz.edge_jitter * k) + nz.edge_wobble * k * _smooth_field(rng, s, s / 4)
        x = np.clip(nz.slope / k * (sd + shift), nz.bg, nz.fg)
        x = x + nz.pixel_std * _smooth_field(rng, s, nz.cell * k)
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        for _ in range(rng.poisson(nz.blotches)):
            cy, cx = rng.uniform(0, s, 2)
            r = rng.uniform(*nz.blotch_radius) * k
            amp = rng.uniform(*nz.blotch_amp) * rng.choice((-1.0, 1.0))
            x = x + amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        if rng.random() < nz.dropout:
            amp = rng.uniform(*nz.dropout_amp)
            if rng.random() < 0.5:
                region = np.ones((s, s), np.float32)
            else:  # one side of a random line through the object
                ang = rng.uniform(0, 2 * math.pi)
                ys, xs = np.nonzero(gt) if gt.any() else (np.array([s / 2]), np.array([s / 2]))
                region = ((xx - xs.mean()) * math.cos(ang) + (yy - ys.mean()) * math.sin(ang) > 0).astype(np.float32)
            x = x - amp * region * (sd > -3 * k)
        return x.astype(np.float32)

    def segment(self, frames: torch.Tensor, prompts: Sequence[str], *, preprocess: str = "pil",
                size: int | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 frames of known clips -> ``(B, P, S, S)`` float32 logits."""
        if size not in (None, self.size):
            raise ValueError(f"the oracle answers at size {self.size}, got size={size}")
        arr = frames.detach().cpu().numpy()
        out = np.empty((len(arr), len(prompts), self.size, self.size), np.float32)
        for i, f in enumerate(arr):
            key = _frame_key(f)
            if key not in self._index:
                raise KeyError(f"frame {i} of the batch is not a frame of the oracle's clips")
            c, t = self._index[key]
            for p in range(len(prompts)):
                out[i, p] = self.logits_for(c, t, p)
        self.calls += 1
        return torch.from_numpy(out).to(self.device)


def run_smoother(smoother, segmenter: OracleSegmenter, clip: SyntheticClip, *, batch_size: int = 8,
                 prompts: Sequence[str] = ("object",), device: str | torch.device = "cpu") -> torch.Tensor:
    """Stream a clip through the oracle and a smoother; ``(T, P, S, S)`` output logits on the host.

    Checks that every frame comes back once, in order, with its own frame and payload.
    """
    frames = clip.frames_bchw().to(device)
    outs, got = [], []

    def take(res):
        lg, fr, pl = res
        for j, (idx, _pts) in enumerate(pl):
            if not torch.equal(fr[j], frames[idx]):
                raise AssertionError(f"frame {idx} came back with another frame's pixels")
        outs.append(lg.cpu())
        got.extend(idx for idx, _ in pl)

    for s in range(0, len(clip), batch_size):
        fb = frames[s:s + batch_size]
        lg = segmenter.segment(fb, prompts).to(device)
        take(smoother.update(lg, fb, [(s + j, (s + j) * 1001) for j in range(len(fb))]))
    take(smoother.flush())
    if got != list(range(len(clip))):
        raise AssertionError(f"frames came back as {got}")
    return torch.cat(outs)


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------
@dataclass
class Scores:
    """Quality of a mask sequence against the truth.

    Attributes:
        iou: mean per-frame IoU (%) over frames whose truth is not empty.
        flicker: mean fraction (%) of pixels whose binary value changes between consecutive
            frames, among the pixels whose truth does not change (pairs across a cut skipped).
        lag: mean frames a moving edge trails the truth (see :func:`edge_lag`; < 0 = leads).
        transitions: how many pixel transitions the lag is averaged over.
    """

    iou: float
    flicker: float
    lag: float
    transitions: int = 0
    per_clip: dict = field(default_factory=dict)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean per-frame IoU (%) over the frames whose truth is not empty; ``(T, S, S)`` bool inputs."""
    vals = [np.logical_and(p, g).sum() / np.logical_or(p, g).sum() for p, g in zip(pred, truth) if g.any()]
    return 100.0 * float(np.mean(vals)) if vals else float("nan")


def flicker(pred: np.ndarray, truth: np.ndarray, cuts: np.ndarray) -> float:
    """Mean fraction (%) of truth-stable pixels whose predicted value changes from one frame to the next."""
    vals = []
    for t in range(1, len(pred)):
        if cuts[t]:
            continue
        stable = truth[t] == truth[t - 1]
        vals.append((pred[t] != pred[t - 1])[stable].mean())
    return 100.0 * float(np.mean(vals)) if vals else float("nan")


def edge_lag(pred: np.ndarray, truth: np.ndarray, cuts: np.ndarray, *, k: int = 5) -> tuple[float, int]:
    """How many frames the predicted mask trails the truth where an edge passes.

    Estimator: every pixel whose truth switches at frame ``t`` (an edge moving over it)
    and stays constant for ``k`` frames before and after (window ``[t-k, t+k)`` inside
    one shot) is a transition. The prediction of that pixel over the window is fit with
    a step (old value before frame ``t + d``, new value from it on) by least mismatches,
    ties averaged, ``d`` in ``[-k, k]``; the transition's lag is ``d``. Transitions
    where the prediction is wrong at either end of the window are left out (a missed
    pixel is an IoU error, not lag). The result is the mean ``d`` over transitions:
    0 = on time, 1 = the edge arrives one frame late, negative = early. Per-frame noise
    that is as likely to turn a pixel on as off averages to 0.

    Returns:
        ``(mean lag in frames, number of transitions)``.
    """
    scene = np.cumsum(cuts)
    lags = []
    steps = np.arange(2 * k + 1, dtype=np.float64)[:, None]
    for t in range(k, len(pred) - k + 1):
        if scene[t - k] != scene[t + k - 1]:
            continue
        g = truth[t - k:t + k]
        sel = (g[:k] == g[k - 1]).all(0) & (g[k:] == g[k]).all(0) & (g[k - 1] != g[k])
        p = pred[t - k:t + k]
        sel &= (p[0] == g[0]) & (p[-1] == g[-1])
        if not sel.any():
            continue
        new = g[k][sel]
        match = (p[:, sel] == new).astype(np.int32)  # (2k, n): frame shows the new value
        c = np.concatenate([np.zeros((1, match.shape[1]), np.int32), np.cumsum(match, 0)])  # new-values before step
        mism = c + (2 * k - steps) - (c[-1] - c)  # old expected before the step, new from it on
        ties = mism == mism.min(0)
        lags.append((ties * steps).sum(0) / ties.sum(0) - k)
    if not lags:
        return float("nan"), 0
    allv = np.concatenate(lags)
    return float(allv.mean()), int(allv.size)


def score(pred: np.ndarray, truth: np.ndarray, cuts: np.ndarray, *, k: int = 5) -> Scores:
    """:class:`Scores` of a ``(T, S, S)`` bool prediction."""
    lag, n = edge_lag(pred, truth, cuts, k=k)
    return Scores(iou(pred, truth), flicker(pred, truth, cuts), lag, n)
