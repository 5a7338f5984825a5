"""The automatic batch size.

* :func:`auto_batch_size`: a pure function from free device memory, frame size and
  dtype to a batch size; :func:`choose_batch_size` applies it to a device
  (``torch.cuda.mem_get_info`` on CUDA; 1 on a CPU, the fastest measured there).

The per-frame memory estimate (:func:`frame_memory_bytes`) counts, for one frame
in flight on the device:

* the vision tower at the model side ``S`` (352): ``(S/16)^2 + 1`` tokens of width
  768, the 13 hidden states kept for the decoder, one layer's attention scores
  (12 heads, tokens^2, the math kernel's worst case: SDPA's fused kernels need less)
  and its MLP (width 3072), in the model's dtype;
* the decoder per prompt: ``S^2`` pixels x 64 channels x 2 (the transposed
  convolutions' input and output), in the model's dtype, and float32 logits plus
  their sigmoid (``S^2`` x 4 bytes x 3);
* per variant at the frame's size ``H x W``: the uint8 RGB frame, ~10 float32 planes
  (mask, resized probabilities, blur/dilation temporaries, the heatmap's three
  channels) and the uint8 heatmap and mask,

then multiplies by a safety factor (1.5) for allocator fragmentation and kernels'
workspaces. It is an estimate, not a measurement: the figures it gives on a real
GPU have not been checked (no GPU was available, see ``benchmarks/RESULTS.md``), so
``max_batch`` caps it and ``headroom`` keeps part of the free memory unused.
"""

from __future__ import annotations

import logging

import torch

from .options import TORCH_DTYPES


__all__ = ["auto_batch_size", "frame_memory_bytes", "choose_batch_size", "CPU_BATCH_SIZE", "MAX_AUTO_BATCH"]

log = logging.getLogger(__name__)

CPU_BATCH_SIZE = 1
"""Batch size chosen on a CPU: batch 1 ran the model ~17 % faster per frame than 8 (``benchmarks/RESULTS.md``)."""

MAX_AUTO_BATCH = 64
"""Largest automatic batch: larger batches do not raise GPU throughput further and delay the first output."""

# ViT-B/16 vision tower of CLIPSeg rd64 (clip-vit-base-patch16)
_PATCH = 16
_WIDTH = 768
_MLP = 3072
_HEADS = 12
_LAYERS = 12
_REDUCE_DIM = 64
_FRAME_FLOAT_PLANES = 10
_SAFETY = 1.5


def _dtype_bytes(dtype: torch.dtype | str) -> int:
    if isinstance(dtype, str):
        dtype = TORCH_DTYPES[dtype]
    return torch.empty((), dtype=dtype).element_size()


def frame_memory_bytes(frame_hw: tuple[int, int], dtype: torch.dtype | str, *, model_side: int = 352, prompts: int = 1,
                       variants: int = 1) -> int:
    """Estimated device bytes one frame in flight needs (see the module docstring).

    Args:
        frame_hw: ``(H, W)`` of the decoded frames.
        dtype: the model's dtype (``torch.float16`` or ``"float16"``, ...).
        model_side: the model's square input side ``S``.
        prompts: prompts per frame (``a|b`` = 2).
        variants: post-processing variants run on each frame.

    Returns:
        bytes, including the safety factor.

    Example:
        >>> frame_memory_bytes((1080, 1920), "float16") // 2**20
        225
    """
    e = _dtype_bytes(dtype)
    h, w = frame_hw
    tokens = (model_side // _PATCH) ** 2 + 1
    vision = e * (tokens * _WIDTH * (_LAYERS + 1) + 2 * _HEADS * tokens * tokens + 2 * tokens * _MLP)
    decoder = prompts * (e * model_side * model_side * _REDUCE_DIM * 2 + 4 * model_side * model_side * 3)
    post = variants * h * w * (3 + 4 * _FRAME_FLOAT_PLANES + 3 + 1)
    return int(_SAFETY * (vision + decoder + post))


def auto_batch_size(free_bytes: int, frame_hw: tuple[int, int], dtype: torch.dtype | str, *, model_side: int = 352,
                    prompts: int = 1, variants: int = 1, headroom: float = 0.5, max_batch: int = MAX_AUTO_BATCH) -> int:
    """Largest batch whose estimated memory fits in ``headroom`` x ``free_bytes``.

    Pure function: give it the numbers, it does not look at any device.

    Args:
        free_bytes: free device memory (after the model is loaded).
        frame_hw: ``(H, W)`` of the frames.
        dtype: the model's dtype.
        model_side, prompts, variants: see :func:`frame_memory_bytes`.
        headroom: fraction of ``free_bytes`` the batch may use, in ``(0, 1]``.
        max_batch: upper bound.

    Returns:
        an integer in ``[1, max_batch]`` (1 when not even one frame fits: the run
        may then fail with an out-of-memory error, as any batch would).

    Example:
        >>> auto_batch_size(40 * 2**30, (1080, 1920), "float16")
        64
        >>> auto_batch_size(2 * 2**30, (1080, 1920), "float16")
        4
    """
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    per_frame = frame_memory_bytes(frame_hw, dtype, model_side=model_side, prompts=prompts, variants=variants)
    fits = int(max(0, free_bytes) * headroom // per_frame)
    return max(1, min(max_batch, fits))


def choose_batch_size(batch_size: int | None, *, device: torch.device | str, frame_hw: tuple[int, int],
                      dtype: torch.dtype | str, model_side: int = 352, prompts: int = 1, variants: int = 1) -> int:
    """``batch_size`` when given; otherwise automatic for ``device``.

    On CUDA: :func:`auto_batch_size` of ``torch.cuda.mem_get_info(device)``'s free
    bytes; on any other device :data:`CPU_BATCH_SIZE`.
    """
    if batch_size is not None:
        return int(batch_size)
    dev = torch.device(device)
    if dev.type != "cuda":
        return CPU_BATCH_SIZE
    free, total = torch.cuda.mem_get_info(dev)
    chosen = auto_batch_size(free, frame_hw, dtype, model_side=model_side, prompts=prompts, variants=variants)
    log.info("automatic batch size %d (%.1f GiB free of %.1f GiB on %s, frames %dx%d, %s)", chosen, free / 2**30,
             total / 2**30, dev, frame_hw[1], frame_hw[0], dtype)
    return chosen


