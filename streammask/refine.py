"""Matte refinement and edge controls: pure operators on ``(B, C, H, W)`` tensors.

A segmenter that sees a 352-pixel square gives, stretched to the frame, a matte whose edges are
ramps on the model's grid. :func:`refine_alpha` makes them follow the picture: an edge-aware
guided filter (He et al., "Guided Image Filtering", and its subsampled fast form, "Fast Guided
Filter") of the soft map with the full-resolution frame as the guide, then a re-sharpening of the
transition band. :func:`choke`, :func:`feather` and :func:`clip_levels` are the edge controls
compositors expect, in pixels of the output.

Every operator runs on its tensor's device and keeps the result there. On CUDA (or any non-CPU
device) the work is torch (separable box means, batched); on the CPU, float32 box means, resizes,
morphology and Gaussian blurs go through OpenCV (several times faster there than convolutions) and
the full-frame arithmetic through numpy, in place on the tensor's memory: torch's multi-threaded
element-wise kernels lose most of their time to waiting when the cores are shared (measured on a
loaded 2-core machine: 4-8x slower than one thread, see ``benchmarks/RESULTS.md``). The results
are the same to float rounding (tested against each other and against ``kornia.filters.guided_blur``).

Functions do the work; :class:`GuidedFilter` and :class:`AlphaRefiner` are thin ``nn.Module``
wrappers that store the arguments.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ParameterError
from .ops import check_bchw, gaussian_blur_scipy, reflect101_index
from .params import Param, ParamSet

__all__ = [
    "REFINE_METHODS",
    "box_mean",
    "guided_filter",
    "sharpen_alpha",
    "choke",
    "feather",
    "clip_levels",
    "auto_subsample",
    "refine_alpha",
    "edge_controls",
    "REFINE_PARAMS",
    "GuidedFilter",
    "MatteRefiner",
]

REFINE_METHODS = ("none", "guided")
RefineMethod = Literal["none", "guided"]

# defaults of refine="guided", chosen by benchmarks/matte_quality.py (benchmarks/RESULTS.md)
DEFAULT_RADIUS = 6.0  # model pixels
DEFAULT_EPS = 1e-5
DEFAULT_SHARPEN = 2.0


def _on_host(x: torch.Tensor) -> bool:
    """Whether ``x`` takes the OpenCV path: a float32 CPU tensor that needs no gradient."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad


def _np(x: torch.Tensor):
    """The numpy view of a CPU tensor (shared memory: in-place numpy ops change the tensor)."""
    return x.detach().numpy()


def _check_float(x: torch.Tensor, name: str) -> None:
    check_bchw(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _box_mean_torch(x: torch.Tensor, radius: int) -> torch.Tensor:
    b, c, h, w = x.shape
    k = 2 * radius + 1
    y = x.reshape(b * c, 1, h, w)
    if radius < h and radius < w:
        y = F.pad(y, [radius] * 4, mode="reflect")
    else:
        y = y.index_select(2, reflect101_index(h, radius, x.device)).index_select(3, reflect101_index(w, radius, x.device))
    y = F.avg_pool2d(y, (k, 1), stride=1)
    y = F.avg_pool2d(y, (1, k), stride=1)
    return y.reshape(b, c, h, w)


def _box_mean_cv2(x: torch.Tensor, radius: int) -> torch.Tensor:
    import cv2

    k = 2 * radius + 1
    src = x.detach().contiguous()
    out = torch.empty_like(src)
    planes_in = src.reshape(-1, *src.shape[-2:]).numpy()
    planes_out = out.reshape(-1, *src.shape[-2:]).numpy()
    for i in range(planes_in.shape[0]):
        cv2.boxFilter(planes_in[i], -1, (k, k), dst=planes_out[i], normalize=True, borderType=cv2.BORDER_REFLECT_101)
    return out


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    r"""Mean over the ``(2r + 1) x (2r + 1)`` window around each pixel.

    Borders are reflected without repeating the edge pixel (``c b | a b c``: torch's
    ``reflect``, OpenCV's ``BORDER_REFLECT_101``, kornia's ``box_blur(..., "reflect")``).

    Args:
        x: ``(B, C, H, W)`` float tensor.
        radius: window radius ``r >= 0`` in pixels (0 returns ``x``).

    Returns:
        ``(B, C, H, W)`` tensor, same dtype and device.

    Example:
        >>> x = torch.arange(25.0).view(1, 1, 5, 5)
        >>> box_mean(x, 1)[0, 0, 2, 2].item()
        12.0
    """
    _check_float(x, "input")
    if radius < 0 or int(radius) != radius:
        raise ValueError(f"radius must be an integer >= 0, got {radius}")
    radius = int(radius)
    if radius == 0:
        return x
    if _on_host(x) and radius < x.shape[-2] and radius < x.shape[-1]:  # OpenCV reflects at most the image's size
        return _box_mean_cv2(x, radius)
    return _box_mean_torch(x, radius)


def _subsample_indices(size: int, subsample: int, device: torch.device) -> torch.Tensor:
    """kornia's ``_subsample_indices``: the ``max(size // s, 1)`` pixels kept on an axis, aligned with
    the bilinear (``align_corners=False``) upsample that puts the result back."""
    rows = max(size // subsample, 1)
    i = torch.arange(rows, device=device)
    return ((2 * i + 1) * size + rows * (1 - subsample)).div(2 * rows, rounding_mode="floor").clamp(0, size - 1)


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if _on_host(x):
        import cv2

        src = x.detach().contiguous()
        b, c, h, w = src.shape
        out = torch.empty((b, c, *size), dtype=src.dtype)
        pin, pout = src.reshape(-1, h, w).numpy(), out.reshape(-1, *size).numpy()
        for i in range(pin.shape[0]):
            cv2.resize(pin[i], (size[1], size[0]), dst=pout[i], interpolation=cv2.INTER_LINEAR)
        return out
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _guide_plane(guide: torch.Tensor, i: int) -> np.ndarray:
    """Channel ``i`` of a CPU guide as a float32 ``(B, 1, H, W)`` numpy array (uint8 converted, not scaled)."""
    return _np(guide[:, i:i + 1]).astype(np.float32)


def _inverse3(m: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Per-pixel inverse of a symmetric 3x3 matrix given as nested lists of planes (adjugate / det)."""
    a, b, c = m[0][0], m[0][1], m[0][2]
    d, e, f = m[1][1], m[1][2], m[2][2]
    i00 = d * f - e * e
    i01 = c * e - b * f
    i02 = b * e - c * d
    i11 = a * f - c * c
    i12 = b * c - a * e
    i22 = a * d - b * b
    det = a * i00 + b * i01 + c * i02
    inv = 1.0 / det
    return [[i00 * inv, i01 * inv, i02 * inv], [i01 * inv, i11 * inv, i12 * inv], [i02 * inv, i12 * inv, i22 * inv]]


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float, *,
                  subsample: int = 1) -> torch.Tensor:
    r"""Edge-preserving filter of ``src`` guided by ``guide`` (He et al. 2010; fast form 2015).

    In every ``(2r + 1)``-square window the output is a linear function of the guide,
    ``q = a^T I + b``, fitted to ``src`` by least squares with ridge ``eps`` on ``a``; the
    coefficients are averaged over the windows covering a pixel. A 1-channel guide gives the
    grey filter; a 3-channel guide solves a 3x3 system per pixel (the colour filter). With
    ``subsample = s > 1`` the coefficients are computed on every ``s``-th pixel (kornia's
    grid) with radius ``max(round(r / s), 1)`` and upsampled bilinearly before ``a^T I + b``
    is evaluated at full resolution, so edges still come from the full-resolution guide.

    The same as ``kornia.filters.guided_blur(guide, src, 2 * r + 1, eps, subsample=s)``
    (``border_type="reflect"``) where ``r`` is a multiple of ``s``, to float rounding.

    Args:
        guide: ``(B, 1, H, W)`` or ``(B, 3, H, W)`` float tensor, or uint8 (taken as ``guide / 255``,
            without a float copy of the whole frame: the frame itself can be the guide).
        src: ``(B, C, H, W)`` float tensor to filter (e.g. the soft matte).
        radius: window radius in pixels of ``src``, ``>= 1``.
        eps: regularization ``> 0`` in squared guide units (of ``[0, 1]`` for a uint8 guide):
            smaller follows the guide's edges more closely.
        subsample: ``>= 1``; 4 to 8 for HD and 4K frames.

    Returns:
        ``(B, C, H, W)`` tensor, ``src``'s dtype and device.

    Example:
        >>> guide = torch.rand(2, 3, 32, 32)
        >>> guided_filter(guide, torch.rand(2, 1, 32, 32), 4, 1e-3).shape
        torch.Size([2, 1, 32, 32])
    """
    check_bchw(guide, "guide")
    _check_float(src, "src")
    if guide.dtype != torch.uint8 and not guide.is_floating_point():
        raise TypeError(f"guide must be a floating-point or uint8 tensor, got {guide.dtype}")
    if guide.shape[1] not in (1, 3):
        raise ValueError(f"guide must have 1 or 3 channels, got shape {tuple(guide.shape)}")
    if guide.shape[0] != src.shape[0] or guide.shape[-2:] != src.shape[-2:]:
        raise ValueError(f"guide {tuple(guide.shape)} and src {tuple(src.shape)} must have the same batch and size")
    if guide.device != src.device:
        raise ValueError(f"guide ({guide.device}) and src ({src.device}) must be on the same device")
    if isinstance(radius, bool) or int(radius) != radius or radius < 1:
        raise ValueError(f"radius must be an integer >= 1, got {radius}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if isinstance(subsample, bool) or int(subsample) != subsample or subsample < 1:
        raise ValueError(f"subsample must be an integer >= 1, got {subsample}")
    radius, subsample = int(radius), int(subsample)
    full = tuple(guide.shape[-2:])
    scale = 1.0 / 255.0 if guide.dtype == torch.uint8 else 1.0
    r = max(int(round(radius / subsample)), 1) if subsample > 1 else radius
    # the same arithmetic on numpy arrays (CPU: one thread, OpenCV box means) or on tensors
    host = _on_host(src)
    if host:
        g, p = _np(guide), _np(src)
        if subsample > 1:
            rows = _subsample_indices(full[0], subsample, torch.device("cpu")).numpy()
            cols = _subsample_indices(full[1], subsample, torch.device("cpu")).numpy()
            g, p = np.ascontiguousarray(g[:, :, rows][..., cols]), np.ascontiguousarray(p[:, :, rows][..., cols])
        g = g.astype(np.float32) * np.float32(scale) if scale != 1.0 else g.astype(np.float32)

        def cat(xs):
            return np.ascontiguousarray(np.concatenate(xs, axis=1))

        def box(x):
            return _np(box_mean(torch.from_numpy(x), r))
    else:
        g, p = guide, src
        if subsample > 1:
            rows = _subsample_indices(full[0], subsample, guide.device)
            cols = _subsample_indices(full[1], subsample, guide.device)
            g = g.index_select(-2, rows).index_select(-1, cols)
            p = p.index_select(-2, rows).index_select(-1, cols)
        g = g.to(src.dtype) * scale if scale != 1.0 else g.to(src.dtype)

        def cat(xs):
            return torch.cat(xs, dim=1)

        def box(x):
            return box_mean(x, r)
    c = p.shape[1]
    if g.shape[1] == 1:
        stats = box(cat([g, g * g, p, g * p]))
        mean_i, corr_i = stats[:, :1], stats[:, 1:2]
        mean_p, corr_ip = stats[:, 2:2 + c], stats[:, 2 + c:]
        var_i = corr_i - mean_i * mean_i
        a = [(corr_ip - mean_i * mean_p) / (var_i + eps)]
        b = mean_p - a[0] * mean_i
    else:
        gi = [g[:, i:i + 1] for i in range(3)]
        pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
        stats = box(cat(gi + [gi[i] * gi[j] for i, j in pairs] + [p] + [gi[i] * p for i in range(3)]))
        mean_i = [stats[:, i:i + 1] for i in range(3)]
        corr = {pair: stats[:, 3 + k:4 + k] for k, pair in enumerate(pairs)}
        mean_p = stats[:, 9:9 + c]
        cov_ip = [stats[:, 9 + c * (1 + i):9 + c * (2 + i)] - mean_i[i] * mean_p for i in range(3)]

        def sigma(i: int, j: int):
            v = corr[(min(i, j), max(i, j))] - mean_i[i] * mean_i[j]
            return v + eps if i == j else v

        inv = _inverse3([[sigma(i, j) for j in range(3)] for i in range(3)])
        a = [inv[i][0] * cov_ip[0] + inv[i][1] * cov_ip[1] + inv[i][2] * cov_ip[2] for i in range(3)]
        b = mean_p - a[0] * mean_i[0] - a[1] * mean_i[1] - a[2] * mean_i[2]
    # averaged coefficients, a scaled to the guide's own units, back at full resolution, then q = a^T I + b
    k = len(a) * c
    coef = box(cat([*a, b]))
    if host:
        if scale != 1.0:
            coef[:, :k] *= np.float32(scale)
        coef = _np(_upsample(torch.from_numpy(coef), full))
        out = coef[:, k:]
        for i in range(len(a)):
            out += coef[:, i * c:(i + 1) * c] * _guide_plane(guide, i)
        return torch.from_numpy(out)
    if scale != 1.0:
        coef[:, :k].mul_(scale)
    coef = _upsample(coef, full)
    out = coef[:, k:]
    for i in range(len(a)):
        out.addcmul_(coef[:, i * c:(i + 1) * c], guide[:, i:i + 1])  # a uint8 guide is promoted on the fly
    return out


def sharpen_alpha(alpha: torch.Tensor, gain: float) -> torch.Tensor:
    r"""Steepen an alpha's transitions around 0.5: ``clamp((alpha - 0.5) * gain + 0.5, 0, 1)``.

    ``gain = 1`` only clamps to ``[0, 1]``; larger values make every ramp ``gain`` times
    narrower about its middle, keeping where it crosses 0.5.

    Args:
        alpha: ``(B, C, H, W)`` float tensor.
        gain: ``>= 1``.

    Returns:
        ``(B, C, H, W)`` tensor in ``[0, 1]``.

    Example:
        >>> [round(v, 4) for v in sharpen_alpha(torch.tensor([0.3, 0.5, 0.6]).view(1, 1, 1, 3), 2.0).flatten().tolist()]
        [0.1, 0.5, 0.7]
    """
    _check_float(alpha, "alpha")
    if not gain >= 1:
        raise ValueError(f"gain must be >= 1, got {gain}")
    if _on_host(alpha):
        out = np.multiply(_np(alpha), np.float32(gain))
        out += np.float32(0.5 - 0.5 * gain)
        return torch.from_numpy(np.clip(out, 0.0, 1.0, out=out))
    return ((alpha - 0.5) * gain + 0.5).clamp_(0.0, 1.0)


def _morph_step(x: torch.Tensor, grow: bool, square: bool) -> torch.Tensor:
    """One 3x3 dilation (``grow``) or erosion; a square or a cross footprint. Borders: the edge repeats."""
    y = x if grow else -x
    if square:
        y = F.max_pool2d(F.pad(y, [1, 1, 1, 1], mode="replicate"), 3, stride=1)
    else:
        p = F.pad(y, [1, 1, 1, 1], mode="replicate")
        y = torch.maximum(torch.maximum(p[..., 1:-1, 1:-1], p[..., :-2, 1:-1]),
                          torch.maximum(torch.maximum(p[..., 2:, 1:-1], p[..., 1:-1, :-2]), p[..., 1:-1, 2:]))
    return y if grow else -y


def _morph_cv2(x: torch.Tensor, steps: int, grow: bool) -> list[torch.Tensor]:
    import cv2
    import numpy as np

    square = np.ones((3, 3), np.uint8)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    op = cv2.dilate if grow else cv2.erode
    src = x.detach().contiguous()
    b, c, h, w = src.shape
    planes = src.reshape(-1, h, w).numpy()
    outs = []
    cur = [planes[i] for i in range(planes.shape[0])]
    for s in range(steps):
        k = cross if s % 2 == 0 else square
        cur = [op(pl, k, borderType=cv2.BORDER_REPLICATE) for pl in cur]
        outs.append(torch.from_numpy(np.stack(cur)).reshape(b, c, h, w))
    return outs


def choke(alpha: torch.Tensor, pixels: float) -> torch.Tensor:
    r"""Shrink (``pixels > 0``) or grow (``< 0``) a matte's edges by ``|pixels|`` pixels.

    Grey erosion (dilation) by an octagon of radius ``n = floor(|pixels|)`` (alternating 3x3
    cross and square steps, a close approximation of a disc), blended linearly with radius
    ``n + 1`` for the fraction, so the edge moves continuously with ``pixels``. Pixels outside
    the frame repeat the edge.

    Args:
        alpha: ``(B, C, H, W)`` float tensor.
        pixels: signed distance in pixels of ``alpha``: positive chokes, negative spreads.

    Returns:
        ``(B, C, H, W)`` tensor.

    Example:
        >>> a = torch.zeros(1, 1, 9, 9); a[..., 2:7, 2:7] = 1
        >>> int(choke(a, 1).sum()), int(choke(a, -1).sum())
        (9, 45)
    """
    _check_float(alpha, "alpha")
    if not math.isfinite(pixels):
        raise ValueError(f"pixels must be finite, got {pixels}")
    if pixels == 0:
        return alpha
    grow = pixels < 0
    dist = abs(float(pixels))
    n = int(math.floor(dist))
    frac = dist - n
    steps = n + (1 if frac > 0 else 0)
    if _on_host(alpha):
        levels = [alpha] + _morph_cv2(alpha, steps, grow)
    else:
        levels = [alpha]
        for s in range(steps):
            levels.append(_morph_step(levels[-1], grow, square=s % 2 == 1))
    if frac == 0:
        return levels[n]
    if _on_host(alpha):
        lo, hi = _np(levels[n]), _np(levels[n + 1])
        return torch.from_numpy(lo + (hi - lo) * np.float32(frac))
    return torch.lerp(levels[n], levels[n + 1], frac)


def feather(alpha: torch.Tensor, sigma: float) -> torch.Tensor:
    r"""Soften a matte's edges: a Gaussian blur of standard deviation ``sigma`` pixels.

    scipy ``gaussian_filter`` semantics (radius ``int(4 sigma + 0.5)``, ``reflect`` borders,
    :func:`~streammask.ops.gaussian_blur_scipy`); on the CPU through OpenCV's ``GaussianBlur``
    with the same kernel and border.

    Args:
        alpha: ``(B, C, H, W)`` float tensor.
        sigma: ``>= 0`` pixels (0 returns ``alpha``).

    Returns:
        ``(B, C, H, W)`` tensor.
    """
    _check_float(alpha, "alpha")
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return alpha
    radius = int(4.0 * float(sigma) + 0.5)
    h, w = alpha.shape[-2:]
    if _on_host(alpha) and radius < h and radius < w:
        import cv2

        src = alpha.detach().contiguous()
        out = torch.empty_like(src)
        pin, pout = src.reshape(-1, h, w).numpy(), out.reshape(-1, h, w).numpy()
        k = 2 * radius + 1
        for i in range(pin.shape[0]):
            cv2.GaussianBlur(pin[i], (k, k), float(sigma), dst=pout[i], sigmaY=float(sigma),
                             borderType=cv2.BORDER_REFLECT)
        return out
    return gaussian_blur_scipy(alpha, float(sigma))


def clip_levels(alpha: torch.Tensor, black: float = 0.0, white: float = 1.0) -> torch.Tensor:
    r"""Black and white clip points: ``clamp((alpha - black) / (white - black), 0, 1)``.

    Values at or below ``black`` become 0, at or above ``white`` 1, linear in between: what a
    keyer's "clip black" / "clip white" do to the noise in a matte's solid areas.

    Args:
        alpha: ``(B, C, H, W)`` float tensor.
        black, white: ``0 <= black < white <= 1``.

    Returns:
        ``(B, C, H, W)`` tensor in ``[0, 1]``.

    Example:
        >>> clip_levels(torch.tensor([0.05, 0.5, 0.95]).view(1, 1, 1, 3), 0.1, 0.9).flatten().tolist()
        [0.0, 0.5, 1.0]
    """
    _check_float(alpha, "alpha")
    if not (0.0 <= black < white <= 1.0):
        raise ValueError(f"need 0 <= black < white <= 1, got black={black}, white={white}")
    if _on_host(alpha):
        out = np.subtract(_np(alpha), np.float32(black))
        out *= np.float32(1.0 / (white - black))
        return torch.from_numpy(np.clip(out, 0.0, 1.0, out=out))
    return ((alpha - black) / (white - black)).clamp_(0.0, 1.0)


def auto_subsample(radius: int) -> int:
    """The fast guided filter's subsampling for a window ``radius`` (pixels): the coefficients are
    computed on a grid about ``radius / 4`` times coarser (radius 3-4 there), at most 16."""
    return int(min(16, max(1, round(radius / 4))))


def refine_alpha(frames: torch.Tensor, alpha: torch.Tensor, *, radius: float = DEFAULT_RADIUS,
                 eps: float = DEFAULT_EPS, sharpen: float = DEFAULT_SHARPEN, subsample: int | None = None,
                 model_side: int = 352) -> torch.Tensor:
    r"""Make a soft matte's edges follow the picture: ``refine="guided"``.

    1. A colour guided filter (:func:`guided_filter`) of ``alpha`` with the frame as the guide,
       window radius ``radius`` model pixels (``radius * max(H, W) / model_side`` pixels of the
       frame, so a setting means the same at any resolution), subsampled by
       :func:`auto_subsample` unless ``subsample`` is given. Each window fits alpha as a linear
       function of the frame's colour, so a ramp on the model's grid becomes an edge where the
       picture has one, and a strand the frame shows keeps the alpha its colour implies.
    2. The transition band re-sharpened about 0.5 (:func:`sharpen_alpha` with gain ``sharpen``):
       the filter keeps the low-resolution map's overall softness; the gain removes it.

    Defaults are those that ``benchmarks/matte_quality.py`` measured best (see
    ``benchmarks/RESULTS.md``). Stateless and per frame: a batch gives what its frames give
    one by one (chunk- and segment-invariant).

    Args:
        frames: ``(B, 3, H, W)`` uint8 (or float in ``[0, 1]``) RGB frames, the guide.
        alpha: ``(B, 1, H, W)`` float soft matte (clamped to ``[0, 1]`` first).
        radius: window radius in model pixels, ``> 0``.
        eps: the filter's regularization (squared ``[0, 1]`` colour units), ``> 0``.
        sharpen: gain of the re-sharpening, ``>= 1`` (1: none).
        subsample: the fast filter's factor (default: :func:`auto_subsample` of the radius in
            frame pixels).
        model_side: the side of the square the segmenter saw.

    Returns:
        ``(B, 1, H, W)`` float tensor in ``[0, 1]``, on ``alpha``'s device.

    Example:
        >>> frames = torch.randint(0, 256, (2, 3, 72, 128), dtype=torch.uint8)
        >>> refine_alpha(frames, torch.rand(2, 1, 72, 128)).shape
        torch.Size([2, 1, 72, 128])
    """
    check_bchw(frames, "frames")
    _check_float(alpha, "alpha")
    if frames.shape[1] != 3 or alpha.shape[1] != 1:
        raise ValueError(f"frames must be (B, 3, H, W) and alpha (B, 1, H, W), got {tuple(frames.shape)} and "
                         f"{tuple(alpha.shape)}")
    if frames.shape[0] != alpha.shape[0] or frames.shape[-2:] != alpha.shape[-2:]:
        raise ValueError(f"frames {tuple(frames.shape)} and alpha {tuple(alpha.shape)} must have the same batch and "
                         "size")
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    h, w = alpha.shape[-2:]
    r = max(1, int(round(radius * max(h, w) / model_side)))
    s = auto_subsample(r) if subsample is None else subsample
    guide = frames if frames.dtype == torch.uint8 else frames.to(alpha.dtype)
    if _on_host(alpha):
        clamped = torch.from_numpy(np.clip(_np(alpha), 0.0, 1.0))
    else:
        clamped = alpha.clamp(0.0, 1.0)
    q = guided_filter(guide, clamped, r, eps, subsample=s)
    return sharpen_alpha(q, sharpen)


def edge_controls(alpha: torch.Tensor, *, choke_px: float = 0.0, feather_px: float = 0.0, black: float = 0.0,
                  white: float = 1.0) -> torch.Tensor:
    r"""The compositor's edge controls, in this order: clip levels, choke, feather.

    Args:
        alpha: ``(B, C, H, W)`` float matte.
        choke_px: :func:`choke` distance (pixels; > 0 shrinks, < 0 grows).
        feather_px: :func:`feather` sigma (pixels).
        black, white: :func:`clip_levels` points.

    Returns:
        ``(B, C, H, W)``; ``alpha`` itself when every control is neutral.
    """
    _check_float(alpha, "alpha")
    if (black, white) != (0.0, 1.0):
        alpha = clip_levels(alpha, black, white)
    if choke_px:
        alpha = choke(alpha, choke_px)
    if feather_px:
        alpha = feather(alpha, feather_px)
    return alpha


REFINE_PARAMS = ParamSet((
    Param("refine", "choice", "none", "matte refinement with the full-resolution frame as the guide: none (the "
          "model's upsampled map, exactly), guided (edge-aware guided filter + re-sharpening; applies to the soft "
          "variant's outputs and to every variant's matte alpha)", choices=REFINE_METHODS),
    Param("refine_radius", "float", DEFAULT_RADIUS, "refine=guided: the guided filter's window radius in model "
          "pixels (352 across the frame's long side)", min=0.25, max=64.0, step=0.25),
    Param("refine_eps", "float", DEFAULT_EPS, "refine=guided: the guided filter's regularization (smaller follows "
          "the picture's edges more closely)", min=1e-8, max=1.0, step=1e-6),
    Param("refine_sharpen", "float", DEFAULT_SHARPEN, "refine=guided: gain that re-sharpens the transition band "
          "about 0.5 (1: none)", min=1.0, max=16.0, step=0.1),
    Param("choke", "float", 0.0, "shrink (> 0) or grow (< 0) the matte's edges by this many output pixels",
          min=-100.0, max=100.0, step=0.5),
    Param("feather", "float", 0.0, "soften the matte's edges: Gaussian blur sigma in output pixels", min=0.0,
          max=100.0, step=0.5),
    Param("clip_black", "float", 0.0, "alpha at or below this becomes 0 (levels)", min=0.0, max=1.0, step=0.01),
    Param("clip_white", "float", 1.0, "alpha at or above this becomes 1 (levels); above clip_black", min=0.0, max=1.0,
          step=0.01),
))
"""The refinement and edge-control run settings (spliced into ``RUN_PARAMS``)."""


class GuidedFilter(nn.Module):
    """Module form of :func:`guided_filter` (stores ``radius``, ``eps``, ``subsample``).

    Example:
        >>> GuidedFilter(4, 1e-3)(torch.rand(1, 3, 16, 16), torch.rand(1, 1, 16, 16)).shape
        torch.Size([1, 1, 16, 16])
    """

    def __init__(self, radius: int, eps: float, *, subsample: int = 1) -> None:
        super().__init__()
        self.radius, self.eps, self.subsample = radius, eps, subsample

    def extra_repr(self) -> str:
        return f"radius={self.radius}, eps={self.eps}, subsample={self.subsample}"

    def forward(self, guide: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        return guided_filter(guide, src, self.radius, self.eps, subsample=self.subsample)


class MatteRefiner(nn.Module):
    """The refinement and the edge controls of one run: :func:`refine_alpha` (``refine="guided"``),
    then :func:`edge_controls`. Arguments as :data:`REFINE_PARAMS` (validated there).

    Raises:
        ParameterError: a value out of range, or ``clip_black >= clip_white`` (naming ``clip_white``).

    Example:
        >>> m = MatteRefiner(refine="guided", choke=1.0)
        >>> m(torch.zeros(1, 3, 36, 64, dtype=torch.uint8), torch.rand(1, 1, 36, 64)).shape
        torch.Size([1, 1, 36, 64])
        >>> MatteRefiner().active
        False
    """

    def __init__(self, **settings) -> None:
        super().__init__()
        p = REFINE_PARAMS.validate(settings)
        if p["clip_black"] >= p["clip_white"]:
            raise ParameterError("clip_white", p["clip_white"], f"a number above clip_black ({p['clip_black']})")
        self.settings = p

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "MatteRefiner":
        """From a run's settings (the :data:`REFINE_PARAMS` keys are taken, the rest ignored)."""
        return cls(**{k: settings[k] for k in REFINE_PARAMS.names() if k in settings})

    @property
    def active(self) -> bool:
        """Whether it changes anything (otherwise the pipeline skips it)."""
        p = self.settings
        return p["refine"] != "none" or bool(p["choke"]) or bool(p["feather"]) or (
            p["clip_black"], p["clip_white"]) != (0.0, 1.0)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.settings.items())

    def forward(self, frames: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` frames and ``(B, 1, H, W)`` alpha -> the refined ``(B, 1, H, W)`` alpha."""
        p = self.settings
        if p["refine"] == "guided":
            alpha = refine_alpha(frames, alpha, radius=p["refine_radius"], eps=p["refine_eps"],
                                 sharpen=p["refine_sharpen"])
        return edge_controls(alpha, choke_px=p["choke"], feather_px=p["feather"], black=p["clip_black"],
                             white=p["clip_white"])
