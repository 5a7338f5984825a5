"""The local engine: many clips, one model load, one after another, a JSONL report, resume.

:func:`run_batch` expands its inputs (video files, folders searched recursively
by extension, CSV / JSONL manifests with per-clip overrides) into a plan of
clips (:mod:`.jobs`), loads the model once and streams every clip through
:func:`~streammask.process_video` with it. Each clip is written to its own
subfolder of ``out_dir``; a failing clip is reported and the batch goes on.
With ``engine="ray"`` the same jobs run on Ray actors (:mod:`.ray`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..model.clipseg import DEFAULT_MODEL, load_from_settings
from ..pipeline.run import process_video
from .jobs import (BATCH_PARAMS, REPORT_NAME, BatchItem, BatchReport, ClipJob, ClipResult, ModelLoadFailed, claim,
                   clip_spec, prepare_jobs, record_done, run_kwargs)
from .plan import plan_work
from .ray import import_ray, run_ray
from .segments import process_segments

__all__ = ["run_batch"]

log = logging.getLogger("streammask.batch")


def _process_local(job: ClipJob, segmenter: Any, progress: bool, segment_seconds: float | None,
                   overlap_frames: int) -> None:
    kwargs = run_kwargs(job.settings)
    if segment_seconds is not None:
        spec, _ = clip_spec(job.item.source, str(job.item.source), job.settings.get("max_frames"))
        plan = plan_work([spec], 1, segment_seconds=segment_seconds, overlap=overlap_frames,
                         align=int(job.settings.get("batch_size") or 1))
        if len(plan.tasks) > 1:
            summary = process_segments(job.item.source, [(t.start, t.end) for t in plan.tasks], out_dir=job.clip_dir,
                                       overlap=overlap_frames, handover=True, progress=progress, segmenter=segmenter,
                                       **{**kwargs, "overwrite": True})  # the batch owns its clip folders
            record_done(job, summary.frames, summary.outputs)
            return
    summary = process_video(job.item.source, out_dir=job.clip_dir, progress=progress, segmenter=segmenter,
                            **{**kwargs, "overwrite": True})  # the batch owns its clip folders
    note = f"ended early: {summary.frames} of {summary.header_frames} header frames" if summary.ended_early else None
    record_done(job, summary.frames, summary.outputs, note=note)


def run_batch(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    force: bool = False,
    report: str | os.PathLike | None = None,
    segmenter: Any = None,
    model: str | os.PathLike = DEFAULT_MODEL,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
    actors: int | None = None,
    gpus_per_actor: float = 0.0,
    segment_seconds: float | None = None,
    overlap_frames: int = 8,
    max_retries: int = 2,
    **run_settings: Any,
) -> BatchReport:
    """Mask many clips with one model load per worker; isolate failures; skip clips already done.

    Args:
        inputs: video files, folders (searched recursively for :data:`VIDEO_EXTENSIONS`) and
            manifests (``.csv`` with a header, or ``.jsonl``): a ``path`` per row, resolved against
            the manifest's folder, and optional per-clip overrides of the run settings
            (``prompt``, ``variants``, ``outputs``, ``temporal``, ... and ``out_dir``, the clip's
            subfolder). ``model``, ``revision``, ``device`` and ``dtype`` are per batch.
        out_dir: output folder; each clip is written to its own subfolder (see :func:`plan_batch`).
        force: re-process clips that have a matching completion record.
        report: the JSONL report that one row per clip is appended to
            (default ``out_dir/streammask-report.jsonl``).
        segmenter: an already loaded model (local engine); by default ``model`` is loaded once,
            when the first clip needs processing.
        progress: a bar over clips, and each clip's frame bar below it.
        engine: ``local`` or ``ray`` (see :func:`streammask.batch.ray.run_ray`); ``address``,
            ``actors``, ``gpus_per_actor`` and ``max_retries`` are the Ray engine's.
        segment_seconds: split clips longer than this into segments of at most this length
            (frame ranges with ``overlap_frames`` warm-up frames), joined losslessly; the local
            engine runs them one after another and hands the temporal state over.
        run_settings: :func:`~streammask.process_video` keywords applied to every clip.

    Returns:
        A :class:`BatchReport`; its ``exit_code`` is 1 when any clip failed.

    Raises:
        StreamMaskError: before any clip runs, for a bad setting, input or manifest; or when the
            model cannot be loaded. Errors of a single clip are reported, not raised.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    opts = BATCH_PARAMS.validate(dict(engine=engine, address=address, actors=actors, gpus_per_actor=gpus_per_actor,
                                      segment_seconds=segment_seconds, overlap_frames=overlap_frames,
                                      max_retries=max_retries), where="run_batch")
    if opts["engine"] == "ray":
        import_ray()  # a clear error before anything is written
    base, plans = prepare_jobs(inputs, model, run_settings)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report_path = Path(report) if report is not None else out / REPORT_NAME
    report_path.parent.mkdir(parents=True, exist_ok=True)
    batch_started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    owners: dict[Path, BatchItem] = {}
    results: list[ClipResult] = []
    with open(report_path, "a", encoding="utf-8") as rep:
        def record(result: ClipResult) -> None:
            rep.write(json.dumps({**result.row(), "batch_started": batch_started}) + "\n")
            rep.flush()

        if opts["engine"] == "ray":
            jobs: list[ClipJob | ClipResult] = []
            for item, settings in plans:
                try:
                    job = claim(item, settings, out, owners, force)
                    jobs.append(job.result if job.result.status == "skipped" else job)
                except Exception as exc:
                    jobs.append(ClipResult(path=str(item.source), status="failed", out_dir=str(out / item.subdir),
                                           error=f"{type(exc).__name__}: {exc}"))
            results = run_ray(jobs, base=base, record=record, progress=progress, options=opts)
            return BatchReport(results=results, report_path=report_path, seconds=time.perf_counter() - t_start)

        bar = tqdm(total=len(plans), unit="clip", desc="batch", position=0, disable=not progress, file=sys.stderr,
                   dynamic_ncols=True, leave=True)
        try:
            for item, settings in plans:
                result = ClipResult(path=str(item.source), status="failed", out_dir=str(out / item.subdir))
                t0 = time.perf_counter()
                try:
                    job = claim(item, settings, out, owners, force)
                    result = job.result
                    if result.status != "skipped":
                        if segmenter is None:
                            try:
                                segmenter = load_from_settings(base)
                            except Exception as exc:  # the model is the batch's, not the clip's: stop
                                raise ModelLoadFailed(exc) from exc
                        _process_local(job, segmenter, progress, opts["segment_seconds"], opts["overlap_frames"])
                except ModelLoadFailed as exc:
                    raise exc.error from None
                except Exception as exc:  # isolate the clip: report it and go on
                    log.debug("clip %s failed", item.source, exc_info=True)
                    result.status = "failed"
                    result.error = f"{type(exc).__name__}: {exc}"
                result.seconds = time.perf_counter() - t0
                results.append(result)
                record(result)
                bar.update(1)
                if result.status == "failed" and progress:
                    bar.write(f"streammask: clip failed: {result.path}: {result.error}", file=sys.stderr)
        finally:
            bar.close()
    return BatchReport(results=results, report_path=report_path, seconds=time.perf_counter() - t_start)
