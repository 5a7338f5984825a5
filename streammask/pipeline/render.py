"""Rendering: a variant's device output to the host images each output kind writes.

Only uint8 / uint16 data crosses from the device to the host: masks are quantized on
the device, the heatmap is blended there, and the matte is assembled on the host from
the decoded frames (:class:`~streammask.io.matte.MatteBatch`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from .. import ops
from ..io.matte import MatteBatch
from ..variants import VariantOutput
from .transfer import HostCopy, PendingHost

__all__ = ["render", "MATTE_ALPHA"]

MATTE_ALPHA = "matte_alpha"
"""Key of :attr:`VariantOutput.extra` holding the matte's alpha where it differs from the mask (a
refined matte of a variant whose own mask stays exact); the mask is the alpha otherwise."""


def render(frames: torch.Tensor, result: VariantOutput, kinds: Sequence[str],
           host_frames: np.ndarray | None = None, *, colormap: str = "jet", heatmap_alpha: float = 0.5, bits: Mapping[str, int] | None = None,
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
        matte_style, matte_color, background: see :func:`~streammask.io.matte.compose_matte`
            (``background``: ``(B, H, W, 3)`` uint8 frames).
        host_frames16: ``(B, H, W, 3)`` uint16 frames of a deep (10-bit+) source: the RGB of a
            16-bit matte, instead of ``host_frames`` (no 8-bit banding).
        defer_matte: give the matte as a :class:`~streammask.io.matte.MatteBatch` that the writer
            composes on its thread (what :func:`process_video` does), not as an array.
        defer_copy: return at once, with the device -> host copies still running (on CUDA: a
            side stream into pinned buffers, :class:`~streammask.pipeline.transfer.HostCopy`), as a
            :class:`~streammask.pipeline.transfer.PendingHost` whose ``result()`` is the dict below.

    Returns:
        ``{kind: (B, H, W, C) numpy}`` with C = 1 (mask), 3 (heatmap), 4 (matte; 3 or 1 for
        the styles without alpha). The matte's alpha is ``result.extra[MATTE_ALPHA]`` where
        present (a refined matte), else the mask.
    """
    bits = bits or {}
    fetch = HostCopy(frames.device)
    mask_slots: dict[tuple[str, int], int] = {}  # (source, depth) -> index in fetch
    sources = {"mask": result.mask, "alpha": result.extra.get(MATTE_ALPHA, result.mask)}
    clamped: dict[str, torch.Tensor] = {}

    def mask_slot(depth: int, source: str = "mask") -> int:
        if source == "alpha" and MATTE_ALPHA not in result.extra:
            source = "mask"  # the same tensor: quantized and copied once
        if (source, depth) not in mask_slots:
            if source not in clamped:
                clamped[source] = sources[source].clamp(0, 1)
            if depth == 16:
                # quantized on the device; 2 bytes a pixel cross to the host as int16 offset by
                # 32768 (int16 works on every device, uint16 has few CUDA kernels), then flip the top bit
                q = ((clamped[source] * 65535 + 0.5).to(torch.int32) - 32768).to(torch.int16)
            else:
                q = ops.to_uint8(clamped[source])
            mask_slots[(source, depth)] = fetch.add(q.permute(0, 2, 3, 1))
        return mask_slots[(source, depth)]

    slots: dict[str, int] = {}
    if "mask" in kinds:
        slots["mask"] = mask_slot(bits.get("mask", 8))
    if "heatmap" in kinds:
        heat = result.heatmap
        if heat is None:
            colour = ops.apply_colormap(result.mask.clamp(0, 1), colormap)
            heat = ops.blend(frames, colour, heatmap_alpha)
        slots["heatmap"] = fetch.add(heat.permute(0, 2, 3, 1))
    if "matte" in kinds:
        slots["matte"] = mask_slot(bits.get("matte", 8), "alpha")
        if host_frames is None:
            slots["rgb"] = fetch.add(frames.permute(0, 2, 3, 1))

    def finish() -> dict[str, np.ndarray]:
        arrays = fetch.wait()
        for (_, depth), i in mask_slots.items():
            if depth == 16:
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
