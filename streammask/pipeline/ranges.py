"""Frame ranges: run the pipeline on frames ``[start, end)`` of a clip, warmed up, with source timestamps.

A segment of a long clip is a :class:`FrameRange`: :func:`~streammask.process_video` with
``frame_range=`` seeks with PyAV to the keyframe at or before the first frame it needs,
runs the warm-up frames ``[warmup_start, start)`` through the model and the temporal
smoother without writing them, and writes frames ``[start, end)`` with their source
``pts``. A smoother with look-ahead also reads its ``delay`` frames after ``end``.
How segments are split, run and joined is :mod:`streammask.batch.segments`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from ..errors import InvalidVideoError
from ..io.video import FrameBatch, frame_pts, read_batches

__all__ = ["FrameRange", "range_batches"]


@dataclass
class FrameRange:
    """Frames ``[start, end)`` of a clip to write; ``[warmup_start, start)`` only warm up state.

    Attributes:
        start, end: the frames written (indices in decode order of the whole clip).
        warmup_start: first frame decoded and run through the pipeline (``<= start``).
        state: a :meth:`~streammask.MaskPipeline.stream_state` to continue from (hand-over
            from the previous segment), or ``None``.
        state_out: filled by :func:`~streammask.process_video`: the stream state after the
            last frame read (before the end-of-stream flush).
        index: the clip's frame ``pts`` in order (:func:`frame_pts`); computed when ``None``.
        exact: read exactly ``[warmup_start, end)``: no batch alignment and no look-ahead
            frames, so that ``state_out`` is the state right after frame ``end - 1`` (for a
            hand-over to the next segment). By default the frames read are widened to the
            batch grid of one pass (multiples of ``batch_size`` from frame 0), so every model
            batch holds the same frames as in one pass and the logits are bit-identical.
    """

    start: int
    end: int
    warmup_start: int | None = None
    state: dict | None = None
    exact: bool = False
    state_out: dict | None = field(default=None, repr=False)
    index: Sequence[int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.warmup_start is None:
            self.warmup_start = self.start
        if not 0 <= self.warmup_start <= self.start < self.end:
            raise ValueError(f"bad frame range: warm-up {self.warmup_start}, [{self.start}, {self.end})")


def range_batches(source: str | os.PathLike, frame_range: FrameRange, *, delay: int = 0, batch_size: int = 8,
                  strict: bool = False, stats: dict | None = None, deep: bool = False) -> Iterator[FrameBatch]:
    """Batches of frames ``[warmup_start, end + delay)``, widened to multiples of ``batch_size``
    (unless ``frame_range.exact``); each batch's ``start`` is its first frame's index in the clip.

    ``delay`` is the look-ahead of the pipeline's temporal smoother (:attr:`MaskPipeline.delay
    <streammask.MaskPipeline.delay>`).
    """
    index = frame_range.index if frame_range.index is not None else frame_pts(source)
    frame_range.index = index
    first, stop = frame_range.warmup_start, frame_range.end
    if not frame_range.exact:
        first = (first // batch_size) * batch_size
        stop = -(-(stop + delay) // batch_size) * batch_size
    stop = min(stop, len(index))
    if first >= len(index):
        raise InvalidVideoError(f"input {str(source)!r} has {len(index)} frames; frame {first} does not exist")
    reader = read_batches(source, batch_size=batch_size, max_frames=stop - first, strict=strict, stats=stats,
                          start_pts=index[first] if first > 0 else None, deep=deep)
    expected = first
    for batch in reader:
        if batch.start == 0 and batch.pts[0] != index[first]:
            raise InvalidVideoError(f"input {str(source)!r}: seeking to frame {first} (pts {index[first]}) gave pts "
                                    f"{batch.pts[0]}: the clip's timestamps do not allow splitting it")
        yield FrameBatch(batch.frames, batch.pts, first + batch.start, batch.time_base, batch.frames16)
        expected = first + batch.start + len(batch)
    if expected < frame_range.end:
        raise InvalidVideoError(f"input {str(source)!r}: only frames up to {expected} decode, the segment needs "
                                f"[{frame_range.start}, {frame_range.end})")
