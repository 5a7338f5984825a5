"""Model options declared once: precision, attention kernel and the other model-load speed options."""

from __future__ import annotations

from typing import Any

import torch

from ..params import Param, ParamSet

__all__ = ["DTYPES", "TORCH_DTYPES", "ATTN_IMPLEMENTATIONS", "MODEL_SPEED_PARAMS", "model_speed_options",
           "dtype_choices_text"]

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
