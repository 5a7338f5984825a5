"""The segmentation model: CLIPSeg loaded once, prompts encoded once, frames batched on the device.

* :mod:`.clipseg` — :func:`load_clipseg` and :class:`ClipSeg` (frames in, logits out);
* :mod:`.hub` — where weights come from (hub id or local directory, safetensors only, offline policy);
* :mod:`.preprocess` — resizing and normalisation exactly as the seeds' ``CLIPSegProcessor`` does it;
* :mod:`.prompts` — prompt counting and CLIP's token limit;
* :mod:`.options` — precision and speed options, declared once;
* :mod:`.batch_size` — the automatic batch size from free device memory.
"""

from .clipseg import DEFAULT_MODEL, ClipSeg, Preprocess, attention_implementation, drop_unused_vision_layers, load_clipseg, load_from_settings, resolve_device, resolve_dtype
from .options import ATTN_IMPLEMENTATIONS, DTYPES, MODEL_SPEED_PARAMS, model_speed_options

__all__ = ["DEFAULT_MODEL", "ClipSeg", "load_clipseg", "resolve_device", "resolve_dtype", "Preprocess",
           "ATTN_IMPLEMENTATIONS", "DTYPES", "MODEL_SPEED_PARAMS", "model_speed_options", "attention_implementation",
           "drop_unused_vision_layers", "load_from_settings"]
