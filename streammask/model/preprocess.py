"""Resampling that matches the libraries the seed nodes used, on any device.

:func:`pil_resize_bilinear` reproduces Pillow's ``Image.resize(..., BILINEAR)``
on ``uint8`` images bit for bit (Pillow's fixed-point, antialiased two-pass
algorithm from ``libImaging/Resample.c``), so frames reach the model exactly as
``CLIPSegProcessor``'s PIL path would send them, but batched and on the GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..errors import ModelLoadError

__all__ = ["pil_resize_bilinear", "pil_bilinear_weights", "ImageConfig", "image_config", "pil_resize_cpu",
           "IMAGENET_MEAN", "IMAGENET_STD"]

_PRECISION_BITS = 32 - 8 - 2


@lru_cache(maxsize=64)
def pil_bilinear_weights(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's fixed-point bilinear coefficients for one axis.

    Returns:
        ``(index, weight)``, both ``(out_size, ksize)`` int64: output pixel ``i``
        is ``sum_k in[index[i, k]] * weight[i, k]`` in units of ``2**22``.
    """
    support = 1.0
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = support * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    index = torch.zeros(out_size, ksize, dtype=torch.int64)
    weight = torch.zeros(out_size, ksize, dtype=torch.int64)
    ss = 1.0 / filterscale
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        ws = []
        for x in range(xmax):
            t = abs((x + xmin - center + 0.5) * ss)
            ws.append(1.0 - t if t < 1.0 else 0.0)
        total = sum(ws)
        for x, w in enumerate(ws):
            if total != 0.0:
                w = w / total
            q = w * (1 << _PRECISION_BITS)
            weight[xx, x] = int(q - 0.5) if w < 0 else int(q + 0.5)
            index[xx, x] = x + xmin
        for x in range(xmax, ksize):
            index[xx, x] = xmin  # weight 0
    return index, weight


@lru_cache(maxsize=64)
def _weights_on(in_size: int, out_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pil_bilinear_weights` on ``device``, copied there once (a copy per batch from
    pageable memory would make the host wait for the GPU's queued work every time)."""
    index, weight = pil_bilinear_weights(in_size, out_size)
    return index.to(device), weight.to(device)


def _pass(images: torch.Tensor, out_size: int, dim: int) -> torch.Tensor:
    in_size = images.shape[dim]
    index, weight = _weights_on(in_size, out_size, images.device)
    src = images.to(torch.int64)
    shape = [1] * images.dim()
    shape[dim] = out_size
    acc = None
    for k in range(index.shape[1]):
        term = src.index_select(dim, index[:, k]) * weight[:, k].view(shape)
        acc = term if acc is None else acc + term
    acc = acc + (1 << (_PRECISION_BITS - 1))
    return (acc >> _PRECISION_BITS).clamp_(0, 255).to(torch.uint8)


def pil_resize_bilinear(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``uint8`` images exactly as Pillow's bilinear ``Image.resize`` does.

    Args:
        images: ``(B, C, H, W)`` uint8 tensor on any device.
        size: ``(height, width)`` of the output.

    Returns:
        ``(B, C, height, width)`` uint8 tensor, identical to resizing each image
        with ``PIL.Image.resize((width, height), Image.BILINEAR)``.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(f"images must be a (B, C, H, W) uint8 tensor, got {images.dtype} {tuple(images.shape)}")
    out_h, out_w = size
    x = images
    # Pillow resamples in two passes through a uint8 image, so the order of the passes changes the result; which
    # pass comes first depends on the Pillow version and the shapes (Pillow 13 runs the vertical pass first for
    # many reductions, older versions always the horizontal one): asked of the installed Pillow once per shape.
    for dim in ((2, 3) if _pillow_vertical_first(x.shape[2], x.shape[3], out_h, out_w) else (3, 2)):
        if dim == 3 and out_w != x.shape[3]:
            x = _pass(x, out_w, 3)
        if dim == 2 and out_h != x.shape[2]:
            x = _pass(x, out_h, 2)
    return x


@lru_cache(maxsize=256)
def _pillow_vertical_first(in_h: int, in_w: int, out_h: int, out_w: int) -> bool:
    """Whether the installed Pillow's bilinear ``resize`` from ``in_h x in_w`` to ``out_h x out_w`` runs its
    vertical pass first: Pillow resizes a fixed random RGB image of that shape once, on the CPU, and the result
    is compared with both orders of :func:`_pass` (they differ by one level on ~20 % of values, so exactly one
    matches)."""
    if in_h == out_h or in_w == out_w:
        return False  # one pass only
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (in_h, in_w, 3), dtype=np.uint8)
    ref = torch.from_numpy(np.asarray(Image.fromarray(img).resize((out_w, out_h), Image.BILINEAR)).copy())
    x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0)
    horizontal_first = _pass(_pass(x, out_w, 3), out_h, 2)[0].permute(1, 2, 0)
    if torch.equal(horizontal_first, ref):
        return False
    vertical_first = _pass(_pass(x, out_h, 2), out_w, 3)[0].permute(1, 2, 0)
    if torch.equal(vertical_first, ref):
        return True
    raise RuntimeError(f"this Pillow's bilinear resize {in_w}x{in_h} -> {out_w}x{out_h} matches neither pass order "
                       "of streammask's emulation: run the preprocessing on the CPU (--device cpu) and report it")


# The ImageNet statistics the masquerade node hard-codes (it ignores the processor config).
IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageConfig:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float
    resample: int


def image_config(processor) -> ImageConfig:
    size = getattr(processor, "size", None) or {"height": 352, "width": 352}
    if isinstance(size, (int, float)):
        h = w = int(size)
    else:
        get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
        h = get("height") or get("shortest_edge")
        w = get("width") or get("shortest_edge") or h
    if h != w:
        raise ModelLoadError(f"CLIPSeg needs a square input, but the processor config asks for {h}x{w}")
    return ImageConfig(
        size=int(h),
        mean=tuple(float(v) for v in processor.image_mean),
        std=tuple(float(v) for v in processor.image_std),
        rescale=float(getattr(processor, "rescale_factor", 1 / 255) or 1 / 255),
        resample=int(getattr(processor, "resample", 2) or 2),
    )


def pil_resize_cpu(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Pillow itself on the CPU: exact, and faster there than the tensor emulation."""
    from PIL import Image

    arr = frames.permute(0, 2, 3, 1).contiguous().numpy()
    out = np.empty((arr.shape[0], size, size, 3), dtype=np.uint8)
    for i, frame in enumerate(arr):
        out[i] = np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR))
    return torch.from_numpy(out).permute(0, 3, 1, 2)