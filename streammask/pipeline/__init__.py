"""The pipeline: decode -> segment -> variants -> temporal -> render -> outputs, streaming.

* :mod:`.settings` — the run settings declared once (:data:`RUN_PARAMS`) and pipeline files;
* :mod:`.core` — :class:`MaskPipeline`, frames in, variant outputs out, batch by batch;
* :mod:`.render` — a variant's device output to the host images each output writes;
* :mod:`.run` — :func:`process_video`: a whole file through it, in bounded memory;
* :mod:`.outputs` — the output files of a run (:class:`~.outputs.OutputSet`);
* :mod:`.preflight` — output names, existing files and memory budgets, checked before any work;
* :mod:`.ranges` — frame ranges (segments of a clip), warmed up, with source timestamps;
* :mod:`.threads` — the decode and encoder threads, bounded queues, stage timers;
* :mod:`.transfer` — host <-> device copies that overlap compute on CUDA.
"""

from .core import MaskPipeline, Segmenter
from .run import RunSummary, process_video
from .settings import OUTPUT_KINDS, RUN_PARAMS, load_pipeline, normalize_variants

__all__ = ["Segmenter", "MaskPipeline", "RunSummary", "process_video", "RUN_PARAMS", "OUTPUT_KINDS",
           "normalize_variants", "load_pipeline"]
