"""Threads and bounded queues around generators, added from outside.

:func:`prefetch` runs an iterator in a producer thread; :class:`SinkThread`
runs a consumer function in its own thread. Both use bounded queues (memory
stays bounded), forward a worker's exception to the caller with its original
type and message, and stop the other side through a shared event.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterable, Iterator, TypeVar

__all__ = ["prefetch", "SinkThread", "StageTimer"]

T = TypeVar("T")
_DONE = object()


class StageTimer:
    """Seconds per named stage, thread-safe: ``seconds`` working, ``waits`` blocked on a neighbour.

    A stage that waits for its input (an empty queue) or its output (a full queue) is not the
    bottleneck: the slowest stage is the one with the most work time.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.waits: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        """Work time of stage ``name``."""
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def wait(self, name: str, seconds: float) -> None:
        """Time stage ``name`` was blocked on another stage (nothing to do, or no room for its result)."""
        with self._lock:
            self.waits[name] = self.waits.get(name, 0.0) + seconds


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(iterable: Iterable[T], *, maxsize: int = 2, name: str = "producer", timer: StageTimer | None = None,
             stop: threading.Event | None = None) -> Iterator[T]:
    """Iterate ``iterable`` in a background thread, at most ``maxsize`` items ahead.

    An exception raised by the producer is re-raised here, in the consumer, as soon as
    the consumer asks for its next item (it does not wait behind the items already
    queued, so a failed stage stops the run at once). If the consumer stops early
    (``break``, exception, ``close()``), the producer is told to stop and is joined.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
    stop = stop or threading.Event()
    failed: list[BaseException] = []  # the producer's exception, seen before the queued items

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        it = iter(iterable)
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                ok = put(item)
                if timer is not None:
                    timer.add(name, t1 - t0)
                    timer.wait(name, time.perf_counter() - t1)  # the queue was full: the consumer is slower
                if not ok:
                    break
            put(_DONE)
        except BaseException as exc:  # forwarded to the consumer
            failed.append(exc)
            put(_Failure(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass

    thread = threading.Thread(target=run, name=f"streammask-{name}", daemon=True)
    thread.start()
    try:
        while True:
            if failed:
                raise failed[0]
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                if not thread.is_alive() and q.empty():
                    raise RuntimeError(f"{name} thread ended without a result")
                continue
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)


class SinkThread:
    """Feed items to ``fn`` in a worker thread through a bounded queue.

    ``put`` blocks while the queue is full and re-raises the worker's exception
    as soon as one happened; ``close`` waits for the queue to drain, then raises
    the worker's exception if any.
    """

    def __init__(self, fn: Callable[[object], None], *, maxsize: int = 4, name: str = "sink",
                 timer: StageTimer | None = None) -> None:
        self._fn = fn
        self._q: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._name = name
        self._timer = timer
        self._thread = threading.Thread(target=self._run, name=f"streammask-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            t_idle = time.perf_counter()
            item = self._q.get()
            if self._timer is not None and item is not _DONE:
                self._timer.wait(self._name, time.perf_counter() - t_idle)  # nothing to do: the producer is slower
            if item is _DONE:
                return
            if self._error is not None or self._stop.is_set():
                continue  # drain without work after a failure / abort
            t0 = time.perf_counter()
            try:
                self._fn(item)
            except BaseException as exc:
                self._error = exc
            if self._timer is not None:
                self._timer.add(self._name, time.perf_counter() - t0)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item) -> float:
        """Queue ``item``; blocks while the queue is full. Returns the seconds it was blocked."""
        t0 = time.perf_counter()
        while True:
            self._raise()
            try:
                self._q.put(item, timeout=0.05)
                return time.perf_counter() - t0
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait until every item is processed; re-raise the worker's error."""
        self._q.put(_DONE)
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Drop pending items and stop the worker."""
        self._stop.set()
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._q.put(_DONE)
        self._thread.join(timeout=10)
