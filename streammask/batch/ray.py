"""The Ray engine of :func:`~streammask.run_batch`: actors that load the model once, one task per clip or segment.

``pip install streammask[ray]``; Ray is imported only when the engine runs.

* :class:`MaskWorker` is the actor: it loads CLIPSeg once (``num_gpus`` per actor,
  or a CPU actor) and runs :func:`~streammask.process_video` on a whole clip or on
  a frame range (:class:`~streammask.pipeline.ranges.FrameRange`).
* :func:`run_ray` is the driver: it plans the tasks (:func:`~streammask.batch.plan.plan_work`:
  long clips split into segments with warm-up frames), hands them to free actors
  longest first, resubmits tasks that failed for a reason other than their input
  (a crashed actor, an out-of-memory error, ...) up to ``max_retries`` times (an actor
  whose process died is replaced by a new one, which loads the model again), joins a
  clip's segments losslessly when all are done, writes the completion record (the same
  as the local engine's: resume works across engines) and a report row per clip.

Outputs are written straight to the shared output folder by the actors, so on a
multi-node cluster ``out_dir`` (and the inputs) must be a path every node sees.
Segments of one clip run in parallel: the temporal state is warmed up by
``overlap_frames`` (exact for ``temporal="none"`` and windowed smoothers whose window
fits the overlap; an approximation for ``ema``/``hysteresis``/``flow``, see
:mod:`streammask.batch.segments`).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import StreamMaskError
from ..io.concat import concat_outputs
from ..io.video import frame_pts, probe
from ..model.clipseg import load_from_settings
from ..model.sam3 import is_sam3_model, sam3_options
from ..model.options import model_speed_options
from ..pipeline.ranges import FrameRange
from ..pipeline.run import process_video
from .jobs import BATCH_PARAMS, ClipJob, ClipResult, record_done, run_kwargs
from .plan import ClipSpec, plan_work
from .segments import SEGMENTS_DIR, audio_names, check_segments_for_tracker, segment_dir, start_times

__all__ = ["MaskWorker", "run_ray", "import_ray", "is_retryable"]

log = logging.getLogger(__name__)


class RayNotInstalledError(StreamMaskError, ImportError):
    """``engine="ray"`` without Ray installed."""


def import_ray():
    """Import Ray, or raise a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayNotInstalledError("engine='ray' needs Ray: pip install 'streammask[ray]' (or pip install 'ray>=2.9')") \
            from None
    return ray


class MaskWorker:
    """The actor: one loaded model, many clips or segments.

    Args:
        model, revision, device, dtype: see :func:`~streammask.load_clipseg`; ``device="auto"``
            picks the GPU Ray assigned to the actor, if any.
        speed: the batch's model speed options (``attn_implementation``, ``channels_last``,
            ``compile``) and SAM 3's options (``sam3_max_objects``, ``sam3_forget_after``), passed on to
            :func:`~streammask.model.load_from_settings` (CLIPSeg or SAM 3, by the model's config).
    """

    def __init__(self, model: str, revision: str | None = None, device: str = "auto", dtype: str = "auto",
                 speed: dict[str, Any] | None = None) -> None:
        self.segmenter = load_from_settings(dict(speed or {}, model=model, revision=revision, device=device,
                                                 dtype=dtype))
        self.tasks_done = 0

    def run(self, source: str, out_dir: str, kwargs: dict[str, Any], frame_range: tuple[int, int, int] | None = None,
            index: Sequence[int] | None = None) -> dict[str, Any]:
        """Process a clip (or frames ``[start, end)`` after warm-up from ``warmup_start``) into ``out_dir``.

        Returns:
            ``{"frames", "outputs" ({key: path}), "seconds", "damaged_packets", "pid"}``.
        """
        t0 = time.perf_counter()
        rng = None
        if frame_range is not None:
            start, end, warm = frame_range
            rng = FrameRange(start, end, warmup_start=warm, index=list(index) if index is not None else None)
        summary = process_video(source, out_dir=out_dir, progress=False, segmenter=self.segmenter, frame_range=rng,
                                **{**kwargs, "overwrite": True})  # the batch owns its clip folders
        self.tasks_done += 1
        return {"frames": summary.frames, "outputs": {k: str(p) for k, p in summary.outputs.items()},
                "seconds": time.perf_counter() - t0, "damaged_packets": summary.damaged_packets, "pid": os.getpid()}

    def ping(self) -> int:
        return os.getpid()


class _TaskFailed(Exception):
    pass


def is_retryable(error: BaseException) -> bool:
    """Whether a failed task is worth resubmitting: not when its input or settings are at fault
    (a :class:`~streammask.StreamMaskError`, e.g. a corrupt clip: it would fail again)."""
    cause = getattr(error, "cause", None)  # ray.exceptions.RayTaskError wraps the task's exception
    if isinstance(cause, BaseException):
        error = cause
    return not isinstance(error, StreamMaskError)


def _error_text(error: BaseException) -> str:
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"


def _remove_partials(folder: Path) -> None:
    """Remove the hidden temporaries (``.NAME.partial[.EXT]``, files or sequence folders) in ``folder``."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if name.startswith(".") and (".partial." in name or name.endswith(".partial")):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _lost_actor(ray, error: BaseException) -> bool:
    """Whether ``error`` says the actor itself is gone (its process died: a crash, the OOM killer, a lost node)."""
    return isinstance(error, ray.exceptions.RayActorError)


def run_ray(
    jobs: Sequence[Any],
    *,
    base: dict[str, Any],
    record: Callable[[Any], None],
    progress: bool = True,
    options: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Run a batch's clip jobs on Ray (called by :func:`~streammask.run_batch` with ``engine="ray"``).

    Args:
        jobs: per clip in plan order, a :class:`~streammask.batch.ClipJob` to run, or an already
            final :class:`~streammask.batch.ClipResult` (skipped, or failed before it could run).
        base: the batch's settings (``model``, ``revision``, ``device``, ``dtype``).
        record: called with each clip's result as soon as it is final (the report row).
        options: the batch's engine settings (:data:`~streammask.batch.jobs.BATCH_PARAMS`, validated; missing
            keys take their defaults):
        address: the cluster (default: ``RAY_ADDRESS``, else a local Ray started here and shut
            down at the end); when Ray is already initialised it is used as it is.
        actors: number of actors (default: one per ``gpus_per_actor`` of the cluster's GPUs, else 1).
        gpus_per_actor: GPUs each actor reserves (``0``: CPU actors).
        segment_seconds, overlap_frames: split long clips (see :func:`~streammask.batch.plan.plan_work`).
        max_retries: resubmissions of a task that failed for a reason other than its input
            (a dead actor, a CUDA error, ...). An actor whose process died is replaced at once, so
            a crash costs the task one attempt and never the tasks after it.

    Returns:
        The clips' results, in plan order.
    """
    from tqdm.auto import tqdm

    opts = BATCH_PARAMS.validate(dict(options or {}), where="run_ray")
    address, actors, gpus_per_actor = opts["address"], opts["actors"], opts["gpus_per_actor"]
    segment_seconds, overlap_frames, max_retries = opts["segment_seconds"], opts["overlap_frames"], opts["max_retries"]
    if segment_seconds is not None and is_sam3_model(base.get("model"), base.get("revision")):
        # parallel segments would each start a new tracker: the ids would not carry over
        check_segments_for_tracker({**base, "segment_seconds": segment_seconds}, {"temporal": "none"}, handover=False)
    ray = import_ray()
    t_start = time.perf_counter()
    todo = [j for j in jobs if isinstance(j, ClipJob)]
    for j in jobs:
        if isinstance(j, ClipResult):
            record(j)
    if not todo:
        return [j if isinstance(j, ClipResult) else j.result for j in jobs]

    # plan: exact frame counts (and the frame index, for seeking) when segments are wanted
    specs, index = [], {}
    for i, job in enumerate(todo):
        cap = job.settings.get("max_frames")
        try:
            if segment_seconds is not None:
                index[i] = frame_pts(job.item.source)
                frames, rate = len(index[i]), probe(job.item.source).frame_rate
            else:  # one task per clip: the header's frame count orders them (longest first)
                info = probe(job.item.source)
                frames, rate = info.num_frames or 1, None
            spec = ClipSpec(str(job.item.source), frames if cap is None else min(frames, int(cap)), rate)
        except Exception as exc:
            job.result.error = f"{type(exc).__name__}: {exc}"
            spec = ClipSpec(str(job.item.source), 0, None)
        specs.append(spec)

    owned = False
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        owned = True
    try:
        if actors is None:
            gpus = ray.cluster_resources().get("GPU", 0)
            actors = max(1, int(gpus // gpus_per_actor)) if gpus_per_actor > 0 else 1
        batch_size = int(base.get("batch_size", 1) or 1)
        plan = plan_work(specs, actors, segment_seconds=segment_seconds, overlap=overlap_frames, align=batch_size)
        device = base["device"]
        if gpus_per_actor > 0 and device == "auto":
            device = "cuda"
        # no automatic restarts: a dead actor is replaced here (a restarting one would fail the tasks sent to it)
        actor_cls = ray.remote(num_cpus=1, num_gpus=gpus_per_actor, max_restarts=0)(MaskWorker)

        def new_actor():
            return actor_cls.remote(base["model"], base["revision"], device, base["dtype"],
                                    {**model_speed_options(base), **sam3_options(base)})

        pool = [new_actor() for _ in range(actors)]

        # tasks longest first (LPT, as the plan); a clip whose probe failed has no tasks and fails below
        order = deque(sorted((t for t in range(len(plan.tasks)) if todo[plan.tasks[t].clip].result.error is None),
                             key=lambda t: (-plan.tasks[t].cost, t)))
        n_segments = {c: sum(1 for t in plan.tasks if t.clip == c) for c in range(len(todo))}
        remaining = dict(n_segments)
        outputs: dict[int, dict[int, dict]] = {c: {} for c in range(len(todo))}
        attempts: dict[int, int] = {}
        failed: dict[int, str] = {c: todo[c].result.error for c in range(len(todo)) if todo[c].result.error}
        t_clip: dict[int, float] = {}
        inflight: dict[Any, tuple[int, Any]] = {}
        free = list(pool)
        total_frames = sum(t.frames for t in plan.tasks)
        bar = tqdm(total=total_frames or None, unit="frame", desc=f"ray x{actors}", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)

        finished: set[int] = set()

        def busy(c: int) -> bool:
            return any(plan.tasks[x].clip == c for x, _ in inflight.values())

        def finish(c: int) -> None:
            if c in finished:
                return
            finished.add(c)
            job = todo[c]
            job.result.seconds = time.perf_counter() - t_clip.get(c, t_start)
            parts = outputs[c]
            try:
                if c in failed:
                    raise _TaskFailed(failed[c])
                if n_segments[c] == 1:
                    record_done(job, parts[0]["frames"], parts[0]["outputs"])
                else:
                    stem = Path(job.item.source).stem
                    first = parts[0]["outputs"]
                    names = [Path(p).name for p in first.values()]
                    starts = [t.start for t in plan.tasks if t.clip == c]
                    dirs = [segment_dir(job.clip_dir, stem, s) for s in range(len(starts))]
                    joined = concat_outputs(dirs, job.clip_dir, names,
                                            start_times=start_times(job.item.source, index[c], starts),
                                            audio_source=job.item.source, audio_names=audio_names(first, job.settings),
                                            audio_to_video_end=job.settings.get("max_frames") is not None)
                    record_done(job, sum(p["frames"] for p in parts.values()),
                                 {k: joined[Path(p).name] for k, p in first.items()})
            except Exception as exc:
                job.result.status = "failed"
                job.result.error = str(exc) if isinstance(exc, _TaskFailed) else f"{type(exc).__name__}: {exc}"
                _remove_partials(job.clip_dir)  # a worker that died left its temporaries
                if progress:
                    bar.write(f"streammask: clip failed: {job.result.path}: {job.result.error}", file=sys.stderr)
            shutil.rmtree(job.clip_dir / SEGMENTS_DIR, ignore_errors=True)
            record(job.result)

        for c in list(failed):
            finish(c)

        try:
            while order or inflight:
                while order and free:
                    t = order.popleft()
                    task = plan.tasks[t]
                    job = todo[task.clip]
                    t_clip.setdefault(task.clip, time.perf_counter())
                    actor = free.pop()
                    if task.segments == 1:
                        ref = actor.run.remote(str(job.item.source), str(job.clip_dir), run_kwargs(job.settings))
                    else:
                        d = segment_dir(job.clip_dir, Path(job.item.source).stem, task.segment)
                        ref = actor.run.remote(str(job.item.source), str(d), run_kwargs(job.settings),
                                               (task.start, task.end, task.warmup_start), index[task.clip])
                    inflight[ref] = (t, actor)
                if not inflight:
                    break
                ready, _ = ray.wait(list(inflight), num_returns=1)
                t, actor = inflight.pop(ready[0])
                task = plan.tasks[t]
                c = task.clip
                try:
                    res = ray.get(ready[0])
                except Exception as exc:
                    text = _error_text(exc)
                    if _lost_actor(ray, exc):  # never reuse it: replace it with a new actor
                        text = f"worker process died while running the task ({text})"
                        try:
                            ray.kill(actor, no_restart=True)
                        except Exception:
                            pass
                        replacement = new_actor()
                        pool[pool.index(actor)] = replacement
                        actor = replacement
                    free.append(actor)
                    attempts[t] = attempts.get(t, 0) + 1
                    retryable = is_retryable(exc)
                    if retryable and attempts[t] <= max_retries:
                        log.warning("task %d of %s failed (%s); retry %d of %d", task.segment, todo[c].item.source,
                                    text, attempts[t], max_retries)
                        order.appendleft(t)
                        continue
                    if retryable:
                        n = attempts[t]
                        text += f"; gave up after {n} attempt{'s' if n > 1 else ''} (max_retries={max_retries})"
                    failed.setdefault(c, text)
                    for x in [x for x in order if plan.tasks[x].clip == c]:  # the clip's other segments: moot
                        order.remove(x)
                    if not busy(c):
                        finish(c)
                    continue
                free.append(actor)
                bar.update(res["frames"])
                outputs[c][task.segment] = res
                remaining[c] -= 1
                if (remaining[c] == 0 or c in failed) and not busy(c):
                    finish(c)
        finally:
            bar.close()
            for a in pool:
                try:
                    ray.kill(a)
                except Exception:
                    pass
    finally:
        if owned:
            ray.shutdown()
    return [j if isinstance(j, ClipResult) else j.result for j in jobs]
