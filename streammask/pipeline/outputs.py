"""The output files of one run: a writer per output, each behind its own encoder thread.

An :class:`OutputSet` opens every writer under its temporary name, hands each batch to the
writer's encoder thread (a bounded queue), and ends in one of three ways: :meth:`close`
(flush, rename, return the final paths), :meth:`abort` (remove every partial file) or
:meth:`finalize_partial` (``keep_partial``: close what was written so far, playable).
Used by :func:`~streammask.process_video` and the live preview's recordings.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Hashable

from ..io.writers import FORMATS, make_writer
from .threads import SinkThread, StageTimer

__all__ = ["OutputSet"]


class OutputSet:
    """Writers keyed by ``(variant, kind)``, each fed by a :class:`~streammask.pipeline.threads.SinkThread`.

    Example:
        >>> outputs = OutputSet()  # doctest: +SKIP
        >>> outputs.open(("soft", "mask"), "mask", "mp4", Path("out/clip.soft.mask.mp4"), width=640, height=360,
        ...              rate=Fraction(25), time_base=Fraction(1, 25), slots=4)  # doctest: +SKIP
        >>> outputs.put(("soft", "mask"), (mask_batch, pts))  # doctest: +SKIP
        >>> paths = outputs.close()  # {"soft.mask": Path(...)}  # doctest: +SKIP
    """

    def __init__(self, *, timer: StageTimer | None = None, thread_label: str = "encode") -> None:
        self.writers: dict[Hashable, Any] = {}
        self.sinks: dict[Hashable, SinkThread] = {}
        self._timer = timer
        self._label = thread_label

    def open(self, key: tuple[str, str], kind: str, fmt: str, path: Path, *, width: int, height: int,
             rate: Fraction | None, time_base: Fraction | None, slots: int, **writer_options: Any) -> None:
        """Open the writer of ``key`` (``(variant, kind)``) for the final ``path`` (the format's suffix
        included) and start its encoder thread with a queue of ``slots`` batches.

        ``writer_options``: :func:`~streammask.io.writers.make_writer`'s keywords (``channels``,
        ``audio_source``, ``audio_to_video_end``, ``preset``).
        """
        suffix = FORMATS[kind][fmt].suffix
        stem = path.with_name(path.name[:len(path.name) - len(suffix)])  # make_writer adds the suffix
        writer = make_writer(kind, fmt, stem, width=width, height=height, rate=rate, time_base=time_base,
                             **writer_options)
        self.writers[key] = writer
        self.sinks[key] = SinkThread(lambda item, w=writer: w.write(*item), maxsize=slots,
                                     name=f"{self._label} {key[0]}.{key[1]}", timer=self._timer)

    def put(self, key: Hashable, item: Any) -> float:
        """Queue ``item`` (``(frames, pts)``) for the writer of ``key``; blocks while its queue is full.
        Returns the seconds it was blocked (the encoder is slower than its producer)."""
        return self.sinks[key].put(item)

    def __bool__(self) -> bool:
        return bool(self.writers)

    def close(self) -> dict[str, Path]:
        """Let every encoder thread finish, close (flush, rename) every writer.

        Returns:
            ``{"variant.kind": final path}``.
        """
        for sink in self.sinks.values():
            sink.close()
        return {f"{n}.{k}": w.close() for (n, k), w in self.writers.items()}

    def close_key(self, key: Hashable) -> Path:
        """Finish one writer before the others (its encoder thread drains, the file is flushed and renamed)
        and forget it; returns its final path. (SAM 3's per-object tracks end when the object is retired.)"""
        sink, writer = self.sinks.pop(key), self.writers.pop(key)
        try:
            sink.close()
        except BaseException:
            writer.abort()
            raise
        return writer.close()

    def abort(self) -> None:
        """Stop the encoder threads and remove every partial file."""
        for sink in self.sinks.values():
            sink.abort()
        for w in self.writers.values():
            w.abort()

    def finalize_partial(self) -> None:
        """``keep_partial``: let the encoder threads finish what they hold, then close (flush,
        rename) every writer; a writer that cannot be finalized, or holds no frame, is removed."""
        for sink in self.sinks.values():
            try:
                sink.close()
            except BaseException:
                sink.abort()
        for w in self.writers.values():
            if hasattr(w, "audio_to_video_end"):
                w.audio_to_video_end = True  # the kept video is cut short: so is its audio
            try:
                if getattr(w, "frames_written", 1) > 0:
                    w.close()
                else:
                    w.abort()
            except BaseException:
                w.abort()
