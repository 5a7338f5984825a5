"""Host <-> device copies that overlap with compute: CUDA streams, pinned buffers, events.

On a CUDA device a whole-video run keeps three things busy at once: the copy of batch
``n + 1`` to the device, the model on batch ``n``, and the copy of batch ``n - 1``'s
outputs back to the host.

* :func:`upload_batches` copies each decoded batch to the device in the thread that
  iterates it (the decode thread, :func:`~streammask.pipeline.threads.prefetch`), from pinned
  host memory, non-blocking, on its own stream; the compute stream waits on the
  batch's event (:meth:`DeviceFrames.get`), not the host.
* :class:`HostCopy` starts a batch's device -> host copies into pinned buffers on a
  second stream, after the compute that made them, and hands the numpy arrays out
  only when :meth:`HostCopy.wait` is called, a batch later: the host never waits for
  the GPU while the GPU still has queued work.

On a CPU both are the plain copies (views, where the tensor is already on the host).
Tensors used on a stream other than the one that allocated them are marked with
``Tensor.record_stream``, so the caching allocator does not hand their memory out
again while a copy or kernel still reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

__all__ = ["DeviceFrames", "upload", "upload_batches", "HostCopy", "PendingHost", "copy_stream"]

def copy_stream(device: torch.device, purpose: str):
    """The side stream for ``purpose`` (``"upload"``, ``"download"``) on a CUDA ``device``,
    created once per device and purpose (``None`` on any other device)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return _cuda_stream(device.index if device.index is not None else torch.cuda.current_device(), purpose)


@lru_cache(maxsize=None)
def _cuda_stream(index: int, purpose: str):
    return torch.cuda.Stream(device=index)


@dataclass(frozen=True)
class DeviceFrames:
    """A batch's frames on the device, and the event that says the copy is done.

    Attributes:
        frames: ``(B, 3, H, W)`` uint8 on the device.
        ready: the CUDA event recorded after the copy on the upload stream
            (``None``: the frames are ready now).
    """

    frames: torch.Tensor
    ready: Any = None

    def get(self) -> torch.Tensor:
        """The frames, for use on the current stream: that stream waits for the copy
        (on the device, the host does not block) and the allocator learns that it
        uses the memory."""
        if self.ready is not None:
            stream = torch.cuda.current_stream(self.frames.device)
            stream.wait_event(self.ready)
            self.frames.record_stream(stream)
        return self.frames


def upload(frames: Any, device: torch.device) -> DeviceFrames:
    """Copy ``(B, H, W, 3)`` uint8 RGB host frames to ``device`` as ``(B, 3, H, W)`` uint8.

    On CUDA the frames go through pinned memory with a non-blocking copy on the upload
    stream (:func:`copy_stream`), and the channel permutation runs there too; the
    returned :class:`DeviceFrames` carries the event to wait on. Elsewhere it is a
    plain copy (``ready`` is ``None``).

    Args:
        frames: ``(B, H, W, 3)`` uint8 numpy array or CPU tensor.
        device: the target device.
    """
    device = torch.device(device)
    t = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if t.dtype != torch.uint8 or t.dim() != 4 or t.shape[-1] != 3:
        raise ValueError(f"frames must be (B, H, W, 3) uint8, got {t.dtype} {tuple(t.shape)}")
    stream = copy_stream(device, "upload") if t.device.type == "cpu" else None
    if stream is None:
        return DeviceFrames(t.to(device).permute(0, 3, 1, 2).contiguous())
    with torch.cuda.stream(stream):
        pinned = t if t.is_pinned() else t.pin_memory()
        x = pinned.to(device, non_blocking=True).permute(0, 3, 1, 2).contiguous()
        ready = torch.cuda.Event()
        ready.record(stream)
    return DeviceFrames(x, ready)


def upload_batches(batches: Iterable[Any], device: torch.device) -> Iterator[tuple[Any, DeviceFrames | None]]:
    """``(batch, DeviceFrames)`` for each :class:`~streammask.io.video.FrameBatch` of ``batches``.

    On a CUDA ``device`` each batch's frames are uploaded (:func:`upload`) as it is
    read, in the iterating thread; run it inside :func:`~streammask.pipeline.threads.prefetch`
    to copy batch ``n + 1`` while the model computes batch ``n``. On any other device
    it yields ``(batch, None)``: the consumer converts ``batch.frames`` itself.
    """
    device = torch.device(device)
    for batch in batches:
        yield batch, (upload(batch.frames, device) if device.type == "cuda" else None)


class HostCopy:
    """Device -> host copies of one batch's outputs, started now, finished by :meth:`wait`.

    On CUDA each :meth:`add` queues a non-blocking copy into a pinned host buffer on
    the download stream (:func:`copy_stream`), after the work already queued on the
    current stream; :meth:`wait` blocks until the copies are done and returns the
    arrays (views of the pinned buffers, which they keep alive). On a CPU ``add``
    takes the array at once.

    Example:
        >>> fetch = HostCopy(torch.device("cpu"))
        >>> i = fetch.add(torch.zeros(2, 4, 4, 1, dtype=torch.uint8))
        >>> fetch.wait()[i].shape
        (2, 4, 4, 1)
    """

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self._stream = copy_stream(self.device, "download")
        self._items: list[Any] = []
        self._done: Any = None
        self._waited = False

    def add(self, tensor: torch.Tensor) -> int:
        """Start copying ``tensor`` (any shape, on the device) to the host; the index of its
        array in :meth:`wait`'s list."""
        if self._waited:
            raise RuntimeError("HostCopy.add after wait: start a new HostCopy for the next batch")
        t = tensor.contiguous()
        if self._stream is None or t.device.type != "cuda":
            self._items.append(t.cpu().numpy())
            return len(self._items) - 1
        self._stream.wait_stream(torch.cuda.current_stream(t.device))
        with torch.cuda.stream(self._stream):
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            host.copy_(t, non_blocking=True)
            t.record_stream(self._stream)
            self._done = torch.cuda.Event()
            self._done.record(self._stream)
        self._items.append(host)
        return len(self._items) - 1

    def wait(self) -> list[np.ndarray]:
        """Block until every copy is on the host; the arrays in :meth:`add` order."""
        if self._done is not None:
            self._done.synchronize()
        self._waited = True
        return [x.numpy() if isinstance(x, torch.Tensor) else x for x in self._items]


class PendingHost:
    """A result whose device -> host copies are still running: :meth:`result` waits for
    them once and gives the finished value (later calls return the same object)."""

    def __init__(self, finish: Callable[[], Any]) -> None:
        self._finish: Callable[[], Any] | None = finish
        self._value: Any = None

    def result(self) -> Any:
        if self._finish is not None:
            self._value, self._finish = self._finish(), None
        return self._value
