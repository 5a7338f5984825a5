"""Mask operations: pure tensor functions on ``(B, C, H, W)`` tensors (float unless noted).

Every function runs on the tensor's device (CPU or CUDA) and keeps it there.
The filters reproduce the semantics of the libraries the seed nodes used
(scipy ``gaussian_filter``, OpenCV ``dilate`` and fixed-point ``resize``,
torchvision v2 ``gaussian_blur``, scipy ``grey_dilation``) so that the variants
can be faithful to them.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = [
    "check_bchw",
    "gaussian_blur_scipy",
    "gaussian_blur_torchvision",
    "reflect101_index",
    "gaussian_kernel1d_torchvision",
    "gaussian_kernel_size_sigma",
    "box_dilate",
    "cross_dilate",
    "threshold_keep",
    "minmax_normalize",
    "apply_colormap",
    "blend",
    "to_uint8",
    "resize",
    "resize_cv2_linear",
    "colormap_lut",
    "COLORMAPS",
]

COLORMAPS = ("viridis", "greys_r", "turbo", "inferno", "magma", "jet")


def check_bchw(x: torch.Tensor, name: str = "input") -> None:
    """Raise ``TypeError``/``ValueError`` unless ``x`` is a ``(B, C, H, W)`` tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}")


def _reflect_index(n: int, radius: int, device) -> torch.Tensor:
    """Indices of a signal of length ``n`` padded by ``radius`` with scipy's
    ``reflect`` mode (``d c b a | a b c d | d c b a``), repeating as needed."""
    idx = torch.arange(-radius, n + radius, device=device)
    period = 2 * n
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - 1 - idx, idx)


def gaussian_blur_scipy(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    r"""Gaussian blur with ``scipy.ndimage.gaussian_filter`` semantics.

    Separable kernel of radius ``int(truncate * sigma + 0.5)``, weights
    ``exp(-x^2 / (2 sigma^2))`` normalised to sum 1, border mode ``reflect``
    (the edge pixel is repeated: ``c b a | a b c``). ``sigma == 0`` returns the
    input unchanged.

    Args:
        x: ``(B, C, H, W)`` float tensor.
        sigma: standard deviation in pixels, ``>= 0``.
        truncate: kernel radius in standard deviations.

    Returns:
        ``(B, C, H, W)`` tensor, same dtype and device.

    Example:
        >>> x = torch.zeros(1, 1, 9, 9); x[..., 4, 4] = 1
        >>> gaussian_blur_scipy(x, 1.0).sum().item()  # doctest: +ELLIPSIS
        1.0...
    """
    check_bchw(x)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x
    radius = int(truncate * float(sigma) + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    k = torch.exp(-0.5 / (float(sigma) ** 2) * t * t)
    k = (k / k.sum()).to(x.dtype)
    b, c, h, w = x.shape
    y = x.reshape(b * c, 1, h, w)
    y = y.index_select(2, _reflect_index(h, radius, x.device))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    y = y.index_select(3, _reflect_index(w, radius, x.device))
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return y.reshape(b, c, h, w)


def gaussian_kernel_size_sigma(kernel_size: int) -> float:
    """torchvision's default sigma for a kernel size: ``k * 0.15 + 0.35`` (v2's expression, to the last bit)."""
    return kernel_size * 0.15 + 0.35


def gaussian_kernel1d_torchvision(kernel_size: int, sigma: float, *, dtype: torch.dtype = torch.float32,
                                  device: torch.device | str | None = None) -> torch.Tensor:
    r"""torchvision v2's 1-D Gaussian kernel (``transforms/v2/functional/_misc.py``, ``_get_gaussian_kernel1d``).

    ``softmax(-(x / sigma)^2)`` over ``x = linspace(-lim, lim, k)``, ``lim = (k - 1) / (2 sqrt 2)``:
    ``exp(-t^2 / (2 sigma^2))`` on the integer taps ``t``, normalised to sum 1, computed the way
    torchvision computes it so that the float32 weights are the same to the last bit.

    Args:
        kernel_size: number of taps ``k``, odd and positive.
        sigma: standard deviation in pixels, ``> 0``.
        dtype: dtype of the weights (torchvision: the image's for float images, else float32).
        device: where to make them.

    Returns:
        ``(k,)`` tensor summing to 1.

    Example:
        >>> gaussian_kernel1d_torchvision(3, 0.8)
        tensor([0.2390, 0.5220, 0.2390])
    """
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    t = torch.linspace(-lim, lim, steps=kernel_size, dtype=dtype, device=device)
    return torch.softmax(t.div(sigma).pow(2).neg(), dim=0)


def gaussian_blur_torchvision(x: torch.Tensor, kernel_size: int, sigma: float | None = None) -> torch.Tensor:
    r"""Gaussian blur with ``torchvision.transforms.v2.functional.gaussian_blur`` semantics.

    The essentials node imports ``torchvision.transforms.v2 as T`` and calls
    ``T.functional.gaussian_blur``; this is that function (torchvision 0.29,
    ``gaussian_blur_image``) for tensors:

    * kernel: :func:`gaussian_kernel1d_torchvision` on both axes, sigma
      defaulting to ``k * 0.15 + 0.35``, applied as their outer product;
    * border: ``reflect`` without repeating the edge pixel (``c b | a b c``);
    * a floating-point input is blurred in its own dtype and returned as it is;
    * any other dtype (``bool``, ``uint8``, ...) is blurred in float32, then
      **rounded** (``round_()``, half to even) and cast back. On a ``bool``
      mask that makes the blur a majority-type filter: a pixel is ``True`` when
      its Gaussian-weighted share of ``True`` neighbours is above 0.5 (exactly
      0.5 rounds to 0). It does not dilate: isolated pixels vanish, holes fill.
      (The v1 ``torchvision.transforms.functional.gaussian_blur`` casts a
      ``bool`` back without rounding, any non-zero becoming ``True``: a
      ``k x k`` dilation. That is not what the node runs.)

    On the CPU it runs torchvision's own float computation (2-D kernel,
    ``conv2d``), bit-identical to torchvision there. On CUDA it runs the same
    filter separably in float64 and casts the result to the float32 (or
    float input) dtype: cuDNN's default TF32 convolutions would move values
    by ~1e-3 and flip the rounding of pixels near 0.5; float64 leaves the
    ~1e-7 differences of float32 summation order, which flip one pixel in a
    million or so. Unlike torchvision it also accepts a kernel radius of
    ``H`` or ``W`` and more (the reflection repeats).

    Args:
        x: ``(B, C, H, W)`` tensor of any dtype (``bool`` for a mask).
        kernel_size: odd, positive.
        sigma: standard deviation, ``> 0`` (default: torchvision's from the size).

    Returns:
        ``(B, C, H, W)`` tensor of the input's dtype, on its device.

    Example:
        >>> m = torch.zeros(1, 1, 7, 7, dtype=torch.bool); m[..., 3, 3] = True
        >>> gaussian_blur_torchvision(m, 3).any().item()  # a lone pixel is voted away
        False
        >>> m[..., 2:5, 2:5] = True; m[..., 3, 3] = False
        >>> gaussian_blur_torchvision(m, 3)[0, 0, 3, 3].item()  # a hole is filled
        True
    """
    check_bchw(x)
    if kernel_size <= 0 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    sigma = gaussian_kernel_size_sigma(kernel_size) if sigma is None else float(sigma)
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if x.numel() == 0:
        return x
    fp = x.is_floating_point()
    work = x.dtype if fp else torch.float32
    b, c, h, w = x.shape
    y = x.reshape(b * c, 1, h, w)
    r = kernel_size // 2
    if x.device.type == "cuda":
        k1 = gaussian_kernel1d_torchvision(kernel_size, sigma, dtype=torch.float64, device=x.device)
        y = _torch_reflect_pad(y.to(torch.float64), r)
        y = F.conv2d(F.conv2d(y, k1.view(1, 1, -1, 1)), k1.view(1, 1, 1, -1)).to(work)
    else:
        k1 = gaussian_kernel1d_torchvision(kernel_size, sigma, dtype=work, device=x.device)
        k2 = k1.unsqueeze(-1) * k1
        y = F.conv2d(_torch_reflect_pad(y.to(work), r), k2.view(1, 1, kernel_size, kernel_size))
    y = y.reshape(b, c, h, w)
    if not fp:
        y = y.round_().to(x.dtype)
    return y


def _torch_reflect_pad(y: torch.Tensor, r: int) -> torch.Tensor:
    """``F.pad(y, [r] * 4, mode="reflect")`` (edge not repeated), also where ``r >= H or W``
    (torch refuses those; the reflection is then repeated)."""
    h, w = y.shape[-2:]
    if r >= h or r >= w:
        return y.index_select(2, reflect101_index(h, r, y.device)).index_select(3, reflect101_index(w, r, y.device))
    return F.pad(y, [r, r, r, r], mode="reflect")


def reflect101_index(n: int, radius: int, device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded by ``radius`` on each side, reflected without repeating the edge
    (``c b | a b c d | c b``: torch's ``reflect``, OpenCV's ``BORDER_REFLECT_101``), repeating the reflection
    where ``radius >= n``.

    Example:
        >>> reflect101_index(4, 2, "cpu").tolist()
        [2, 1, 0, 1, 2, 3, 2, 1]
    """
    if n == 1:
        return torch.zeros(n + 2 * radius, dtype=torch.long, device=device)
    idx = torch.arange(-radius, n + radius, device=device)
    period = 2 * (n - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


def box_dilate(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    r"""Grey dilation with a square ``kernel_size`` x ``kernel_size`` window.

    Same as ``cv2.dilate(x, np.ones((k, k)))`` (pixels outside the image are
    ignored). ``kernel_size == 1`` returns the input.

    Args:
        x: ``(B, C, H, W)`` float tensor.
        kernel_size: odd, positive.

    Returns:
        ``(B, C, H, W)`` tensor.
    """
    check_bchw(x)
    if kernel_size <= 0 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    if kernel_size == 1:
        return x
    return F.max_pool2d(x, kernel_size, stride=1, padding=kernel_size // 2)


def cross_dilate(x: torch.Tensor, iterations: int) -> torch.Tensor:
    r"""Repeated grey dilation (``iterations > 0``) or erosion (``< 0``) with a
    3x3 cross (tapered corners), as ``scipy.ndimage.grey_dilation`` /
    ``grey_erosion`` with that footprint and ``mode="reflect"``.

    ``|iterations|`` passes grow or shrink the mask by a diamond of that radius.

    Args:
        x: ``(B, C, H, W)`` float tensor.
        iterations: signed number of passes.

    Returns:
        ``(B, C, H, W)`` tensor.
    """
    check_bchw(x)
    if iterations == 0:
        return x
    sign = 1.0 if iterations > 0 else -1.0
    y = x * sign
    for _ in range(abs(int(iterations))):
        p = F.pad(y, [1, 1, 1, 1], mode="replicate")
        y = torch.stack(
            [p[..., 1:-1, 1:-1], p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]]
        ).amax(dim=0)
    return y * sign


def threshold_keep(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep values ``> threshold``, zero the rest (a soft cut, not a binarisation)."""
    return torch.where(x > threshold, x, torch.zeros((), dtype=x.dtype, device=x.device))


def minmax_normalize(x: torch.Tensor, *, nan_to_zero: bool = True) -> torch.Tensor:
    r"""Rescale each ``(C, H, W)`` item to ``[0, 1]`` by its own min and max.

    An item whose max equals its min would divide by zero (the mixlab seed then
    produces NaN); with ``nan_to_zero`` such an item becomes all zero.

    Args:
        x: ``(B, C, H, W)`` tensor.

    Returns:
        ``(B, C, H, W)`` tensor in ``[0, 1]``.
    """
    check_bchw(x)
    flat = x.flatten(1)
    lo = flat.amin(dim=1).view(-1, 1, 1, 1)
    hi = flat.amax(dim=1).view(-1, 1, 1, 1)
    y = (x - lo) / (hi - lo)
    if nan_to_zero:
        y = torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    return y


_LUT_CACHE: dict[tuple[str, str], torch.Tensor] = {}


def colormap_lut(name: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(256, 3)`` uint8 colour table equal to matplotlib's ``(cmap(i / 255)[:3] * 255).astype(uint8)``."""
    key = (name, str(device))
    if key not in _LUT_CACHE:
        import numpy as np
        from importlib.resources import files

        if name not in COLORMAPS:
            raise ValueError(f"colormap {name!r} is not one of {COLORMAPS}")
        with files("streammask").joinpath("colormaps.npz").open("rb") as fh:
            table = np.load(fh)[name]
        _LUT_CACHE[key] = torch.from_numpy(table).to(device)
    return _LUT_CACHE[key]


def apply_colormap(x: torch.Tensor, name: str = "viridis") -> torch.Tensor:
    r"""Map values in ``[0, 1]`` through a matplotlib colormap.

    Index ``floor(x * 256)`` clamped to ``[0, 255]`` (matplotlib's rule for float
    input, computed in float32 as it does), NaN mapped to black as matplotlib's
    "bad" colour is.

    Args:
        x: ``(B, 1, H, W)`` float tensor.
        name: one of :data:`COLORMAPS`.

    Returns:
        ``(B, 3, H, W)`` uint8 tensor.
    """
    check_bchw(x)
    lut = colormap_lut(name, x.device)
    xf = x[:, 0].float()
    nan = torch.isnan(xf)
    idx = torch.nan_to_num(xf * 256.0, nan=0.0).floor_().clamp_(0, 255).long()
    rgb = lut[idx]  # (B, H, W, 3)
    # on the CPU skip the full-frame select when there is no NaN (the check is free there; on CUDA it would sync)
    if x.device.type != "cpu" or bool(nan.any()):
        rgb = torch.where(nan[..., None], torch.zeros((), dtype=torch.uint8, device=x.device), rgb)
    return rgb.permute(0, 3, 1, 2).contiguous()


def to_uint8(x: torch.Tensor, scale: float = 255.0) -> torch.Tensor:
    """``round(x * scale)`` clamped to ``[0, 255]`` as uint8 (never truncation)."""
    return (x.float() * scale).round_().clamp_(0, 255).to(torch.uint8)


def blend(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """``round((1 - alpha) * a + alpha * b)`` on uint8 images, as ``cv2.addWeighted``."""
    # the same float32 operations in the same order as ``to_uint8(a * (1 - alpha) + b * alpha, 1)``, in place
    # (bit-identical, ~1.8x faster on a CPU at 720p: fewer full-frame temporaries)
    out = a.to(torch.float32, copy=True).mul_(1.0 - alpha)  # copies: never changes the caller's tensors
    out.add_(b.to(torch.float32, copy=True).mul_(alpha))
    return out.round_().clamp_(0, 255).to(torch.uint8)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize ``(B, C, H, W)`` to ``size = (H, W)``; ``bilinear``/``bicubic`` use
    ``align_corners=False`` without antialiasing (OpenCV ``INTER_LINEAR`` / torch defaults)."""
    check_bchw(x)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


@lru_cache(maxsize=64)
def _cv2_linear_coeffs(n_in: int, n_out: int, clamp_weights: bool) -> tuple[torch.Tensor, ...]:
    """OpenCV's ``INTER_LINEAR`` taps for one axis: ``(index0, index1, weight0, weight1)``,
    weights in units of ``2**-11`` (``INTER_RESIZE_COEF_SCALE``), from ``resize.cpp``:
    ``f = (float)((d + 0.5) * scale - 0.5)``, ``s = floor(f)``, ``f -= s``, weights
    ``saturate_cast<short>((1 - f) * 2048)`` and ``saturate_cast<short>(f * 2048)``.
    Columns outside the image take the edge pixel with weight 1 (``clamp_weights``);
    rows keep their weights and read clamped row indices."""
    import numpy as np

    scale = 1.0 / (n_out / n_in)  # cv2: scale_x = 1. / inv_scale_x, inv_scale_x = (double)dst / src
    i0, i1, w0, w1 = ([0] * n_out for _ in range(4))
    for d in range(n_out):
        f = np.float32((d + 0.5) * scale - 0.5)
        s = math.floor(f)
        f = np.float32(f - np.float32(s))
        if clamp_weights and s < 0:
            f, s = np.float32(0), 0
        if clamp_weights and s >= n_in - 1:
            f, s = np.float32(0), n_in - 1
        w0[d] = int(np.rint(np.float32(np.float32(1) - f) * np.float32(2048)))
        w1[d] = int(np.rint(f * np.float32(2048)))
        i0[d] = min(max(s, 0), n_in - 1)
        i1[d] = min(max(s + 1, 0), n_in - 1)
    return tuple(torch.tensor(v, dtype=torch.int64 if k < 2 else torch.int32) for k, v in enumerate((i0, i1, w0, w1)))


@lru_cache(maxsize=64)
def _cv2_linear_coeffs_on(n_in: int, n_out: int, clamp_weights: bool, device: torch.device) -> tuple[torch.Tensor, ...]:
    """:func:`_cv2_linear_coeffs` on ``device``, copied there once, not per batch."""
    return tuple(t.to(device) for t in _cv2_linear_coeffs(n_in, n_out, clamp_weights))


def resize_cv2_linear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    r"""``cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR)`` on uint8 images, bit for bit.

    OpenCV resizes 8-bit images in fixed point: a horizontal pass with 11-bit
    weights into ``int``, then ``((b0 * (h0 >> 4)) >> 16) + ((b1 * (h1 >> 4)) >> 16) + 2) >> 2``
    vertically (``VResizeLinear``); an exact 2x downscale on both axes switches
    to its ``INTER_AREA`` fast path (``(a + b + c + d + 2) >> 2``). Bilinear in
    float followed by rounding differs from it by 1 on about a tenth of the
    pixels. Checked against OpenCV 4.10 and 5.0.

    Args:
        x: ``(B, C, H, W)`` uint8 tensor.
        size: ``(H, W)`` of the output.

    Returns:
        ``(B, C, H', W')`` uint8 tensor on the same device.
    """
    check_bchw(x)
    if x.dtype != torch.uint8:
        raise TypeError(f"resize_cv2_linear takes uint8 images, got {x.dtype}")
    h_in, w_in = x.shape[-2:]
    h_out, w_out = int(size[0]), int(size[1])
    if (h_in, w_in) == (h_out, w_out):
        return x
    s = x.to(torch.int32)
    if w_in == 2 * w_out and h_in == 2 * h_out:
        t = s[..., 0::2, 0::2] + s[..., 0::2, 1::2] + s[..., 1::2, 0::2] + s[..., 1::2, 1::2]
        return ((t + 2) >> 2).to(torch.uint8)
    ix0, ix1, a0, a1 = _cv2_linear_coeffs_on(w_in, w_out, True, x.device)
    iy0, iy1, b0, b1 = _cv2_linear_coeffs_on(h_in, h_out, False, x.device)
    rows = s.index_select(3, ix0) * a0 + s.index_select(3, ix1) * a1  # (B, C, H, W') in 2**-11
    r0 = rows.index_select(2, iy0) >> 4
    r1 = rows.index_select(2, iy1) >> 4
    out = ((b0.view(-1, 1) * r0) >> 16) + ((b1.view(-1, 1) * r1) >> 16)
    return ((out + 2) >> 2).clamp_(0, 255).to(torch.uint8)
