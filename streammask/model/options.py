"""Model options declared once: precision, attention kernel and the other model-load speed options."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ParameterError
from ..params import Param, ParamSet

__all__ = ["DTYPES", "TORCH_DTYPES", "ATTN_IMPLEMENTATIONS", "MODEL_SPEED_PARAMS", "model_speed_options",
           "dtype_choices_text", "resolve_device", "resolve_dtype"]

ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager")
"""``attn_implementation`` choices: ``auto`` is transformers' default (SDPA where the model supports it)."""


TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


DTYPES = ("auto", "float32", "float16", "bfloat16", "int8")
"""``dtype`` choices. ``int8`` (CPU only): the vision tower's linear layers dynamically quantized to int8."""


dtype_choices_text = "one of " + ", ".join(repr(d) for d in DTYPES) + " (int8: CPU only)"

MODEL_SPEED_PARAMS = ParamSet((
    Param("attn_implementation", "choice", "auto",
          "attention kernel: auto (transformers' default, SDPA for CLIPSeg), sdpa (falls back to the default where "
          "unsupported), eager", choices=ATTN_IMPLEMENTATIONS),
    Param("channels_last", "bool", False, "channels_last memory format for the model's convolutions and input "
          "(no gain on a CPU; GPU effect not measured)"),
    Param("compile", "bool", False, "torch.compile the vision encoder and decoder (first batch of each shape compiles: "
          "slow start)"),
))
"""Model-load speed options, declared once (CLI flags, pipeline-file keys, API keywords)."""


def model_speed_options(settings: dict[str, Any]) -> dict[str, Any]:
    """The :data:`MODEL_SPEED_PARAMS` keys of a validated settings mapping (defaults where missing)."""
    return {p.name: settings.get(p.name, p.default) for p in MODEL_SPEED_PARAMS}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; validates ``cuda:N``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ParameterError("device", device, "'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type not in ("cpu", "cuda"):
        raise ParameterError("device", device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError("device", device, "'cpu' or 'auto' (no CUDA device is available on this machine)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ParameterError("device", device, f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return dev


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto`` -> float16 on CUDA, float32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype == "int8":  # weights and activations between the quantized layers stay float32
        if device.type != "cpu":
            raise ParameterError("dtype", dtype, "'auto', 'float16', 'bfloat16' or 'float32' on CUDA "
                                 "(int8 dynamic quantization runs on the CPU only)")
        return torch.float32
    if dtype not in TORCH_DTYPES:
        raise ParameterError("dtype", dtype, dtype_choices_text)
    return TORCH_DTYPES[dtype]
