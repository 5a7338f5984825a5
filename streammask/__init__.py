"""streammask: text-prompted video masking with CLIPSeg.

Stream a video through CLIPSeg in batches (on the GPU when there is one) and
write mask, heatmap-overlay and alpha-matte videos, in bounded memory.

>>> import streammask  # doctest: +SKIP
>>> streammask.process_video("clip.mp4", prompt="person", out_dir="out")  # doctest: +SKIP

Layout: :mod:`.io` (video in and out), :mod:`.model` (CLIPSeg), :mod:`.ops` (mask operators),
:mod:`.variants` (post-processing semantics), :mod:`.temporal` (smoothing, motion),
:mod:`.pipeline` (the streaming pipeline and ``process_video``), :mod:`.batch` (many clips,
Ray, segments), :mod:`.preview` (live), :mod:`.comfy` (ComfyUI nodes), :mod:`.cli`.
"""

from .errors import (
    InvalidVideoError,
    ModelLoadError,
    OutputError,
    ParameterError,
    PipelineFileError,
    SourceNotFoundError,
    StreamMaskError,
)
from .io.video import FrameBatch, VideoInfo, probe, read_batches
from .model import DEFAULT_MODEL, ClipSeg, load_clipseg
from .pipeline import RUN_PARAMS, MaskPipeline, RunSummary, Segmenter, process_video
from .variants import VARIANTS, get_variant

__version__ = "0.1.0"

__all__ = [
    "process_video", "MaskPipeline", "RunSummary", "Segmenter", "RUN_PARAMS",
    "load_clipseg", "ClipSeg", "DEFAULT_MODEL",
    "probe", "read_batches", "VideoInfo", "FrameBatch",
    "VARIANTS", "get_variant", "run_batch", "BatchReport", "run_preview", "PreviewSummary",
    "StreamMaskError", "ParameterError", "PipelineFileError", "SourceNotFoundError", "InvalidVideoError",
    "ModelLoadError", "OutputError",
]

_LAZY = {"run_batch": "batch", "BatchReport": "batch", "run_preview": "preview", "PreviewSummary": "preview"}


def __getattr__(name: str):
    """Batch jobs and the live preview are imported on first use, so ``import streammask`` stays light."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
