"""streammask: text-prompted video masking with CLIPSeg.

Stream a video through CLIPSeg in batches (on the GPU when there is one) and
write mask, heatmap-overlay and alpha-matte videos, in bounded memory.

>>> import streammask  # doctest: +SKIP
>>> streammask.process_video("clip.mp4", prompt="person", out_dir="out")  # doctest: +SKIP
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
from .model import DEFAULT_MODEL, ClipSeg, load_clipseg
from .pipeline import RUN_PARAMS, MaskPipeline, RunSummary, Segmenter, process_video
from .variants import VARIANTS, get_variant
from .batch import BatchReport, run_batch
from .preview import PreviewSummary, run_preview
from .video import FrameBatch, VideoInfo, probe, read_batches

__version__ = "0.1.0"

__all__ = [
    "process_video", "MaskPipeline", "RunSummary", "Segmenter", "RUN_PARAMS",
    "load_clipseg", "ClipSeg", "DEFAULT_MODEL",
    "probe", "read_batches", "VideoInfo", "FrameBatch",
    "VARIANTS", "get_variant", "run_batch", "BatchReport", "run_preview", "PreviewSummary",
    "StreamMaskError", "ParameterError", "PipelineFileError", "SourceNotFoundError", "InvalidVideoError",
    "ModelLoadError", "OutputError",
]
