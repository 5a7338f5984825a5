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
    opts = BATCH_PARAMS.validate(dict(options or {}), where="run_ray")
    segment_seconds = opts["segment_seconds"]
    if segment_seconds is not None and is_sam3_model(base.get("model"), base.get("revision")):
        # parallel segments would each start a new tracker: the ids would not carry over
        check_segments_for_tracker({**base, "segment_seconds": segment_seconds}, {"temporal": "none"}, handover=False)
    ray = import_ray()
    t_start = time.perf_counter()
    todo = [j for j in jobs if isinstance(j, ClipJob)]
    for j in jobs:
        if isinstance(j, ClipResult):
            record(j)
    if todo:
        specs, index = _clip_specs(todo, segment_seconds)
        owned = False
        if not ray.is_initialized():
            ray.init(address=opts["address"] or os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
            owned = True
        try:
            actors, gpus_per_actor = opts["actors"], opts["gpus_per_actor"]
            if actors is None:
                gpus = ray.cluster_resources().get("GPU", 0)
                actors = max(1, int(gpus // gpus_per_actor)) if gpus_per_actor > 0 else 1
            plan = plan_work(specs, actors, segment_seconds=segment_seconds, overlap=opts["overlap_frames"],
                             align=int(base.get("batch_size", 1) or 1))
            _RayBatch(ray, todo, plan, index, base, actors=actors, gpus_per_actor=gpus_per_actor, record=record,
                      progress=progress, max_retries=opts["max_retries"], t_start=t_start).run()
        finally:
            if owned:
                ray.shutdown()
    return [j if isinstance(j, ClipResult) else j.result for j in jobs]


def _clip_specs(todo: Sequence[ClipJob], segment_seconds: float | None) -> tuple[list[ClipSpec], dict[int, list[int]]]:
    """What the planner needs per clip: exact frame counts (and the frame index, for seeking) when segments are
    wanted, else the header's count (it only orders the clips, longest first). A clip that cannot be probed gets
    its error recorded and no frames."""
    specs, index = [], {}
    for i, job in enumerate(todo):
        cap = job.settings.get("max_frames")
        try:
            if segment_seconds is not None:
                index[i] = frame_pts(job.item.source)
                frames, rate = len(index[i]), probe(job.item.source).frame_rate
            else:
                info = probe(job.item.source)
                frames, rate = info.num_frames or 1, None
            spec = ClipSpec(str(job.item.source), frames if cap is None else min(frames, int(cap)), rate)
        except Exception as exc:
            job.result.error = f"{type(exc).__name__}: {exc}"
            spec = ClipSpec(str(job.item.source), 0, None)
        specs.append(spec)
    return specs, index


class _RayBatch:
    """One :func:`run_ray` call's scheduling: the actors, the tasks waiting (longest first) and in flight, each
    clip's finished parts, retries, and the clips' completion (joining segments, recording results)."""

    def __init__(self, ray, todo: Sequence[ClipJob], plan, index: Mapping[int, list[int]], base: Mapping[str, Any], *,
                 actors: int, gpus_per_actor: float, record: Callable[[Any], None], progress: bool,
                 max_retries: int, t_start: float) -> None:
        self.ray, self.todo, self.plan, self.index, self.base = ray, todo, plan, index, base
        self.record, self.progress, self.max_retries, self.t_start = record, progress, max_retries, t_start
        self.device = "cuda" if gpus_per_actor > 0 and base["device"] == "auto" else base["device"]
        # no automatic restarts: a dead actor is replaced here (a restarting one would fail the tasks sent to it)
        self.actor_cls = ray.remote(num_cpus=1, num_gpus=gpus_per_actor, max_restarts=0)(MaskWorker)
        self.pool = [self.new_actor() for _ in range(actors)]
        self.free = list(self.pool)
        clips = range(len(todo))
        # tasks longest first (LPT, as the plan); a clip whose probe failed has no tasks and fails at once
        self.order = deque(sorted((t for t, task in enumerate(plan.tasks) if todo[task.clip].result.error is None),
                                  key=lambda t: (-plan.tasks[t].cost, t)))
        self.n_segments = {c: sum(1 for t in plan.tasks if t.clip == c) for c in clips}
        self.remaining = dict(self.n_segments)
        self.outputs: dict[int, dict[int, dict]] = {c: {} for c in clips}
        self.attempts: dict[int, int] = {}
        self.failed: dict[int, str] = {c: todo[c].result.error for c in clips if todo[c].result.error}
        self.t_clip: dict[int, float] = {}
        self.inflight: dict[Any, tuple[int, Any]] = {}
        self.finished: set[int] = set()
        self.bar = None

    def new_actor(self):
        b = self.base
        return self.actor_cls.remote(b["model"], b["revision"], self.device, b["dtype"],
                                     {**model_speed_options(b), **sam3_options(b)})

    def run(self) -> None:
        from tqdm.auto import tqdm

        total = sum(t.frames for t in self.plan.tasks)
        self.bar = tqdm(total=total or None, unit="frame", desc=f"ray x{len(self.pool)}", disable=not self.progress,
                        file=sys.stderr, dynamic_ncols=True)
        try:
            for c in list(self.failed):
                self.finish(c)
            while self.order or self.inflight:
                self.submit()
                if not self.inflight:
                    break
                self.collect()
        finally:
            self.bar.close()
            for a in self.pool:
                try:
                    self.ray.kill(a)
                except Exception:
                    pass

    def submit(self) -> None:
        """Hand waiting tasks to the free actors."""
        while self.order and self.free:
            t = self.order.popleft()
            task = self.plan.tasks[t]
            job = self.todo[task.clip]
            self.t_clip.setdefault(task.clip, time.perf_counter())
            actor = self.free.pop()
            if task.segments == 1:
                ref = actor.run.remote(str(job.item.source), str(job.clip_dir), run_kwargs(job.settings))
            else:
                d = segment_dir(job.clip_dir, Path(job.item.source).stem, task.segment)
                ref = actor.run.remote(str(job.item.source), str(d), run_kwargs(job.settings),
                                       (task.start, task.end, task.warmup_start), self.index[task.clip])
            self.inflight[ref] = (t, actor)

    def collect(self) -> None:
        """Wait for one task to end, and take its result or its failure."""
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1)
        t, actor = self.inflight.pop(ready[0])
        c = self.plan.tasks[t].clip
        try:
            res = self.ray.get(ready[0])
        except Exception as exc:
            self._task_failed(t, actor, exc)
            return
        self.free.append(actor)
        self.bar.update(res["frames"])
        self.outputs[c][self.plan.tasks[t].segment] = res
        self.remaining[c] -= 1
        if (self.remaining[c] == 0 or c in self.failed) and not self._busy(c):
            self.finish(c)

    def _task_failed(self, t: int, actor, exc: Exception) -> None:
        """Replace a dead actor, resubmit a retryable task while attempts are left, else fail its clip."""
        task = self.plan.tasks[t]
        c = task.clip
        text = _error_text(exc)
        if _lost_actor(self.ray, exc):  # never reuse it: replace it with a new actor
            text = f"worker process died while running the task ({text})"
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:
                pass
            replacement = self.new_actor()
            self.pool[self.pool.index(actor)] = replacement
            actor = replacement
        self.free.append(actor)
        self.attempts[t] = self.attempts.get(t, 0) + 1
        retryable = is_retryable(exc)
        if retryable and self.attempts[t] <= self.max_retries:
            log.warning("task %d of %s failed (%s); retry %d of %d", task.segment, self.todo[c].item.source, text,
                        self.attempts[t], self.max_retries)
            self.order.appendleft(t)
            return
        if retryable:
            n = self.attempts[t]
            text += f"; gave up after {n} attempt{'s' if n > 1 else ''} (max_retries={self.max_retries})"
        self.failed.setdefault(c, text)
        for x in [x for x in self.order if self.plan.tasks[x].clip == c]:  # the clip's other segments: moot
            self.order.remove(x)
        if not self._busy(c):
            self.finish(c)

    def _busy(self, c: int) -> bool:
        return any(self.plan.tasks[x].clip == c for x, _ in self.inflight.values())

    def finish(self, c: int) -> None:
        """A clip's tasks are all over: join its segments and record it done, or record it failed."""
        if c in self.finished:
            return
        self.finished.add(c)
        job = self.todo[c]
        job.result.seconds = time.perf_counter() - self.t_clip.get(c, self.t_start)
        parts = self.outputs[c]
        try:
            if c in self.failed:
                raise _TaskFailed(self.failed[c])
            if self.n_segments[c] == 1:
                record_done(job, parts[0]["frames"], parts[0]["outputs"])
            else:
                first = parts[0]["outputs"]
                names = [Path(p).name for p in first.values()]
                starts = [t.start for t in self.plan.tasks if t.clip == c]
                dirs = [segment_dir(job.clip_dir, Path(job.item.source).stem, s) for s in range(len(starts))]
                joined = concat_outputs(dirs, job.clip_dir, names,
                                        start_times=start_times(job.item.source, self.index[c], starts),
                                        audio_source=job.item.source, audio_names=audio_names(first, job.settings),
                                        audio_to_video_end=job.settings.get("max_frames") is not None)
                record_done(job, sum(p["frames"] for p in parts.values()),
                            {k: joined[Path(p).name] for k, p in first.items()})
        except Exception as exc:
            job.result.status = "failed"
            job.result.error = str(exc) if isinstance(exc, _TaskFailed) else f"{type(exc).__name__}: {exc}"
            _remove_partials(job.clip_dir)  # a worker that died left its temporaries
            if self.progress:
                self.bar.write(f"streammask: clip failed: {job.result.path}: {job.result.error}", file=sys.stderr)
        shutil.rmtree(job.clip_dir / SEGMENTS_DIR, ignore_errors=True)
        self.record(job.result)
