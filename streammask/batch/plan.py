"""Work planning for batch jobs: split long clips into segments, balance work over workers.

Pure functions, no Ray and no video I/O: :func:`plan_work` takes clips with
their frame counts and rates (:class:`ClipSpec`) and returns a :class:`WorkPlan`:

* a clip longer than ``segment_seconds`` is split into near-equal segments,
  each a frame range ``[start, end)``; every segment but a clip's first also
  decodes ``overlap`` warm-up frames before ``start`` (run through the pipeline
  so temporal state is warm, not written);
* tasks (whole clips or segments) are assigned longest-first to the least
  loaded worker (LPT list scheduling, makespan at most ``4/3 - 1/(3m)`` times
  the optimum), cost = frames decoded and run through the model (warm-up included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

from ..errors import ParameterError

__all__ = ["ClipSpec", "Task", "WorkPlan", "plan_work", "segment_ranges"]


@dataclass(frozen=True)
class ClipSpec:
    """A clip to plan: ``frames`` (exact count) at ``rate`` frames/s."""

    name: str
    frames: int
    rate: Fraction | float | None = None

    @property
    def seconds(self) -> float | None:
        return self.frames / float(self.rate) if self.rate else None


@dataclass(frozen=True)
class Task:
    """One unit of work: frames ``[start, end)`` of clip ``clip`` (an index into the plan's clips).

    ``warmup_start <= start`` is the first frame decoded and run through the pipeline;
    frames ``[warmup_start, start)`` only warm up temporal state. ``segment`` is the
    segment's number within its clip and ``segments`` how many the clip has (1: whole clip).
    """

    clip: int
    segment: int
    segments: int
    start: int
    end: int
    warmup_start: int

    @property
    def frames(self) -> int:
        """Frames written."""
        return self.end - self.start

    @property
    def cost(self) -> int:
        """Frames decoded and run through the model (warm-up included)."""
        return self.end - self.warmup_start

    @property
    def warmup(self) -> int:
        return self.start - self.warmup_start


@dataclass
class WorkPlan:
    """Tasks, and their assignment to workers (``assignments[w]`` = task indices, longest first)."""

    clips: list[ClipSpec]
    tasks: list[Task]
    assignments: list[list[int]]
    segment_frames: int | None = None
    overlap: int = 0
    loads: list[int] = field(default_factory=list)

    @property
    def workers(self) -> int:
        return len(self.assignments)

    @property
    def makespan(self) -> int:
        """The largest worker load (frames)."""
        return max(self.loads, default=0)

    @property
    def lower_bound(self) -> float:
        """No schedule beats ``max(total / workers, largest task)``."""
        total = sum(t.cost for t in self.tasks)
        return max(total / max(self.workers, 1), max((t.cost for t in self.tasks), default=0))

    def describe(self) -> str:
        lines = [f"plan: {len(self.clips)} clips, {len(self.tasks)} tasks on {self.workers} worker(s)"
                 + (f", segments of {self.segment_frames} frames with {self.overlap} warm-up frames"
                    if self.segment_frames else ", no segment splitting")]
        for i, clip in enumerate(self.clips):
            tasks = [t for t in self.tasks if t.clip == i]
            secs = f" ({clip.seconds:.2f} s)" if clip.seconds is not None else ""
            lines.append(f"  clip {clip.name}: {clip.frames} frames{secs}, {len(tasks)} task(s)")
            if len(tasks) > 1:
                for t in tasks:
                    lines.append(f"    segment {t.segment}: frames [{t.start}, {t.end}) + {t.warmup} warm-up")
        total = sum(t.cost for t in self.tasks)
        for w, idx in enumerate(self.assignments):
            share = 100 * self.loads[w] / total if total else 0.0
            lines.append(f"  worker {w}: {len(idx)} task(s), {self.loads[w]} frames ({share:.0f} %)")
        if self.tasks:
            lines.append(f"  makespan {self.makespan} frames, lower bound {self.lower_bound:.0f} "
                         f"({self.makespan / self.lower_bound:.3f} x)" if self.lower_bound else "")
        return "\n".join(line for line in lines if line)


def segment_ranges(frames: int, segment_frames: int | None, *, align: int = 1) -> list[tuple[int, int]]:
    """``[start, end)`` ranges covering ``frames``: one range when the clip is no longer than
    ``segment_frames``, else ``ceil(frames / segment_frames)`` near-equal ranges whose inner
    boundaries are multiples of ``align`` (the batch size: segments then batch exactly as one pass)."""
    if frames <= 0:
        return []
    if not segment_frames or frames <= segment_frames:
        return [(0, frames)]
    n = math.ceil(frames / segment_frames)
    bounds = [0] + [(2 * i * frames + n * align) // (2 * n * align) * align for i in range(1, n)] + [frames]
    bounds = sorted(set(b for b in bounds if 0 <= b <= frames))
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def plan_work(
    clips: Sequence[ClipSpec],
    workers: int,
    *,
    segment_seconds: float | None = None,
    overlap: int = 8,
    align: int = 1,
) -> WorkPlan:
    """Split long clips into segments and assign the tasks to workers, longest first.

    Args:
        clips: the clips, with exact frame counts and rates (a clip without a rate is never split).
        workers: number of workers (>= 1).
        segment_seconds: split clips longer than this into near-equal segments of at most
            this length (``None``: one task per clip).
        overlap: warm-up frames decoded before each segment's start (except a clip's first).
        align: segment boundaries are multiples of this (pass the batch size).

    Returns:
        A :class:`WorkPlan`; tasks are listed clip by clip, segment by segment.

    Raises:
        ParameterError: ``workers < 1``, ``segment_seconds <= 0`` or ``overlap < 0``.
    """
    if int(workers) != workers or workers < 1:
        raise ParameterError("workers", workers, "an integer >= 1")
    if segment_seconds is not None and not segment_seconds > 0:
        raise ParameterError("segment_seconds", segment_seconds, "a number of seconds > 0, or none")
    if int(overlap) != overlap or overlap < 0:
        raise ParameterError("overlap_frames", overlap, "an integer >= 0")
    tasks: list[Task] = []
    seg_frames_any: int | None = None
    for ci, clip in enumerate(clips):
        seg_frames = None
        if segment_seconds is not None and clip.rate:
            seg_frames = max(1, int(round(Fraction(segment_seconds).limit_denominator(10**6) * Fraction(clip.rate))))
            seg_frames_any = seg_frames_any or seg_frames
        ranges = segment_ranges(int(clip.frames), seg_frames, align=max(1, int(align)))
        for si, (start, end) in enumerate(ranges):
            warm = start if si == 0 else max(0, start - int(overlap))
            tasks.append(Task(clip=ci, segment=si, segments=len(ranges), start=start, end=end, warmup_start=warm))
    order = sorted(range(len(tasks)), key=lambda i: (-tasks[i].cost, i))
    loads = [0] * int(workers)
    assignments: list[list[int]] = [[] for _ in range(int(workers))]
    for i in order:
        w = min(range(int(workers)), key=lambda k: (loads[k], k))
        assignments[w].append(i)
        loads[w] += tasks[i].cost
    return WorkPlan(clips=list(clips), tasks=tasks, assignments=assignments, segment_frames=seg_frames_any,
                    overlap=int(overlap), loads=loads)
