"""Scale: many clips with one model load (:mod:`.local`), on Ray actors (:mod:`.ray`), long clips in segments.

* :mod:`.jobs` — the clips of a batch, their settings, completion records (resume) and report;
* :mod:`.plan` — clips and segments spread over workers;
* :mod:`.segments` — a clip processed segment by segment and joined losslessly;
* :mod:`.local` — :func:`run_batch`, the local engine (and the entry to the Ray engine);
* :mod:`.ray` — the Ray engine.
"""

from .jobs import DONE_NAME, REPORT_NAME, BatchReport, ClipResult, plan_batch, plan_batch_work
from .local import run_batch

__all__ = ["run_batch", "BatchReport", "ClipResult", "plan_batch", "plan_batch_work", "DONE_NAME", "REPORT_NAME"]
