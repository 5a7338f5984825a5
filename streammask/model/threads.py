"""CPU threads of the model: a fixed count, or tuned while the clip runs.

On a CPU the model's intra-op threads (PyTorch's OpenMP pool, one per core by default) share the
cores with the decode and encoder threads, and with whatever else the machine runs. On a busy
machine that default oversubscribes the cores: OpenMP threads spin while they wait for each other,
and a run can be several times slower than with one thread. On a quiet machine more threads are
faster. No fixed count is best in both cases, and the load changes while a long clip runs.

:class:`ThreadTuner` measures instead: it runs the model with each candidate count for a few batches,
keeps the fastest (seconds of model work per frame, the median of its batches), and measures the
candidates again every ``revisit`` seconds, so a machine that gets busy (or quiet) mid-clip is
followed. With a fixed count it sets that count once and never changes it.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from typing import Callable, Iterator, Sequence

import torch

__all__ = ["available_cores", "torch_threads", "ThreadTuner"]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        return max(1, os.cpu_count() or 1)


class ThreadTuner:
    """Choose the model's intra-op thread count by measuring it, batch by batch.

    Args:
        threads: a fixed count, or ``None`` to tune among ``candidates``.
        candidates: the counts to try (default: 1, half the cores, all the cores).
        trials: batches measured per candidate in each round (the candidates take turns, so a change of
            load during the round hits each alike).
        warmup: batches run first with one thread and not measured (the first batch also encodes the
            prompts and warms caches up).
        drop: after each pass over the candidates, a candidate slower than ``drop`` times the fastest is
            not measured again in this round (a count that oversubscribes a busy machine costs one batch,
            not ``trials``).
        revisit: seconds between two rounds of measurements.
        set_threads: how a count is applied (``torch.set_num_threads``; tests pass a recorder).
        clock: the time source of ``revisit``.

    Example:
        >>> tuner = ThreadTuner(threads=None, candidates=(1, 2), trials=1, warmup=0, set_threads=lambda n: None)
        >>> for seconds in (0.9, 0.5, 0.5):  # 1 thread: 0.9 s a frame, 2 threads: 0.5 s
        ...     n = tuner.before_batch()
        ...     tuner.after_batch(seconds, frames=1)
        >>> tuner.threads, tuner.chosen
        (2, 2)
    """

    def __init__(self, threads: int | None = None, *, candidates: Sequence[int] | None = None, trials: int = 3,
                 warmup: int = 1, drop: float = 1.3, revisit: float = 60.0, set_threads: Callable[[int], None] = torch.set_num_threads,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._set = set_threads
        self._clock = clock
        self.fixed = threads is not None
        cores = available_cores()
        if candidates is None:
            candidates = sorted({1, max(1, cores // 2), cores})
        self.candidates = tuple(int(c) for c in candidates)
        self.trials = max(1, int(trials))
        self.revisit = float(revisit)
        self._warmup = max(0, int(warmup))
        self.drop = float(drop)
        self.threads: int | None = None  # the count in force
        self.chosen: int | None = int(threads) if self.fixed else None  # the best measured so far
        self.history: list[tuple[int, float]] = []  # (threads, seconds per frame) of every measured batch
        self._plan: list[int] = []  # the counts still to measure in this round
        self._round: dict[int, list[float]] = {}
        self._next_round = 0.0
        self._initial = torch.get_num_threads()
        if self.fixed:
            self._apply(int(threads))

    def _apply(self, n: int) -> None:
        if n != self.threads:
            self._set(n)
            self.threads = n

    def before_batch(self) -> int:
        """Set the thread count for the next batch and return it."""
        if self.fixed:
            return self.threads
        if self._warmup:
            self._apply(min(self.candidates))
            return self.threads
        if not self._plan and self._clock() >= self._next_round:
            self._plan = [c for _ in range(self.trials) for c in self.candidates]
            self._round = {}
        self._apply(self._plan[0] if self._plan else self.chosen)
        return self.threads

    def after_batch(self, seconds: float, *, frames: int) -> None:
        """Record the model work of the batch just run (``seconds`` for ``frames`` frames)."""
        if frames <= 0 or self.threads is None:
            return
        per_frame = seconds / frames
        self.history.append((self.threads, per_frame))
        if not self.fixed and self._warmup:
            self._warmup -= 1
            return
        if self.fixed or not self._plan:
            return
        self._round.setdefault(self._plan.pop(0), []).append(per_frame)
        counts = {len(v) for v in self._round.values()}
        if self._plan and len(self._round) == len(self.candidates) and len(counts) == 1:
            # a pass over the candidates is complete: stop measuring the clearly slower ones
            medians = {n: statistics.median(v) for n, v in self._round.items()}
            best = min(medians.values())
            slow = {n for n, m in medians.items() if m > self.drop * best}
            self._plan = [n for n in self._plan if n not in slow]
        if not self._plan:  # the round is complete: keep the fastest
            medians = {n: statistics.median(v) for n, v in self._round.items()}
            self.chosen = min(medians, key=lambda n: (medians[n], n))
            self._next_round = self._clock() + self.revisit
            self._apply(self.chosen)

    def restore(self) -> None:
        """Put back the thread count that was in force before (the caller's process keeps its setting)."""
        if self.threads is not None and self.threads != self._initial:
            self._set(self._initial)
            self.threads = None

    def describe(self) -> str:
        """One line for a run's summary."""
        if self.fixed:
            return f"model threads: {self.chosen} (fixed)"
        if self.chosen is None:
            return f"model threads: not tuned (too few batches to measure {list(self.candidates)})"
        return f"model threads: {self.chosen} (the fastest of {list(self.candidates)}, measured while running)"
