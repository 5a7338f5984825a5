"""Live sources: what ``SOURCE`` names, a capture thread, and the drop-oldest hand-over buffer."""

from __future__ import annotations

import collections
import os
import platform
import re
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ..errors import InvalidVideoError, ParameterError, SourceNotFoundError, StreamMaskError
from ..io.video import probe, read_batches, rotate

__all__ = ["SourceSpec", "parse_source", "parse_input_options", "StreamDroppedError", "CapturedFrame",
           "LatestFrames", "LiveCapture", "URL_SCHEMES"]

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "rtp", "tcp", "srt", "hls")




class StreamDroppedError(StreamMaskError, ConnectionError):
    """A live source stopped delivering frames and the retries are spent."""


# ---------------------------------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceSpec:
    """What ``SOURCE`` names and how PyAV opens it.

    Attributes:
        kind: ``camera``, ``url`` or ``file``.
        url: what is passed to ``av.open``.
        format: the input format (``v4l2``, ``avfoundation``, ``dshow``) or ``None``.
        name: a short name for output files (``camera0``, the file's stem, ...).
    """

    kind: str
    url: str
    format: str | None = None
    name: str = "preview"

    @property
    def live(self) -> bool:
        return self.kind in ("camera", "url")


def parse_source(source: str | os.PathLike, *, system: str | None = None) -> SourceSpec:
    """Interpret a ``SOURCE`` argument.

    * ``0``, ``1``, ...: a camera index: ``/dev/videoN`` (v4l2) on Linux, ``N`` (avfoundation) on macOS;
      on Windows name the DirectShow device: ``dshow:video=NAME``.
    * ``/dev/videoN``: a v4l2 camera; ``avfoundation:N``, ``dshow:video=NAME``, ``v4l2:/dev/videoN``: explicit.
    * ``rtsp://``, ``http(s)://``, ``udp://``, ``rtmp://``, ``srt://``, ...: a network stream.
    * anything else: a video file.

    Raises:
        SourceNotFoundError: a file or camera device that does not exist.
        ParameterError: a camera index on Windows (DirectShow needs a device name).
    """
    text = os.fspath(source)
    system = system or platform.system()
    m = re.fullmatch(r"(v4l2|avfoundation|dshow):(.+)", text)
    if m:
        fmt, url = m.groups()
        if fmt == "v4l2" and not Path(url).exists():
            raise SourceNotFoundError(f"camera {url!r} does not exist (no such video device)")
        return SourceSpec("camera", url, fmt, "camera" + re.sub(r"\W+", "", url.rsplit("/", 1)[-1])[:24])
    if text.isdigit():
        if system == "Linux":
            dev = f"/dev/video{int(text)}"
            if not Path(dev).exists():
                raise SourceNotFoundError(f"camera {text} ({dev}) does not exist: no camera is connected, or it is "
                                          f"another /dev/videoN")
            return SourceSpec("camera", dev, "v4l2", f"camera{int(text)}")
        if system == "Darwin":
            return SourceSpec("camera", text, "avfoundation", f"camera{int(text)}")
        raise ParameterError("SOURCE", text, "on Windows a DirectShow device name: dshow:video=NAME "
                                             "(ffmpeg -list_devices true -f dshow -i dummy lists them)")
    if text.startswith("/dev/video"):
        if not Path(text).exists():
            raise SourceNotFoundError(f"camera {text!r} does not exist (no such video device)")
        return SourceSpec("camera", text, "v4l2", "camera" + text[len("/dev/video"):])
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme:
        if scheme not in URL_SCHEMES:
            raise ParameterError("SOURCE", text, "a file, a camera (0, /dev/video0) or a stream URL with one of "
                                                 + ", ".join(s + "://" for s in URL_SCHEMES))
        return SourceSpec("url", text, None, "stream")
    path = Path(text)
    if not path.exists():
        raise SourceNotFoundError(f"input {text!r} does not exist")
    if path.is_dir():
        raise InvalidVideoError(f"input {text!r} is a directory, not a video file")
    return SourceSpec("file", str(path), None, path.stem)


def parse_input_options(value: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"video_size=1280x720,framerate=30"`` (or a mapping) -> ``{"video_size": "1280x720", "framerate": "30"}``."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    out = {}
    for item in str(value).split(","):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError("input_options", value, "comma-separated NAME=VALUE pairs of FFmpeg input options, "
                                                         "e.g. video_size=1280x720,framerate=30,input_format=mjpeg")
        out[key.strip()] = val.strip()
    return out


def _open_container(spec: SourceSpec, timeout: float, input_options: Mapping[str, str] | None = None):
    import av

    options = dict(input_options or {})
    if spec.kind == "url" and spec.url.lower().startswith(("rtsp", "rtsps")):
        options.setdefault("rtsp_transport", "tcp")
    try:
        container = av.open(spec.url, format=spec.format, options=options, timeout=(timeout, timeout),
                            metadata_errors="replace")
    except av.error.FFmpegError as exc:
        what = {"camera": "camera", "url": "stream", "file": "input"}[spec.kind]
        raise InvalidVideoError(f"cannot open {what} {spec.url!r}: {exc.strerror or exc}") from None
    except (ValueError, OSError) as exc:
        raise InvalidVideoError(f"cannot open {spec.url!r}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise InvalidVideoError(f"{spec.url!r} has no video stream")
    return container


@dataclass
class CapturedFrame:
    """One captured frame.

    Attributes:
        rgb: ``(H, W, 3)`` uint8.
        pts: presentation timestamp in ``time_base`` units (always increasing, also across loops and reconnects).
        time_base: the source stream's time base.
        rate: the source's nominal frame rate, or ``None``.
        index: capture order (0, 1, 2, ... including frames dropped later).
        captured_at: ``time.perf_counter()`` when the frame was decoded (latency origin).
    """

    rgb: np.ndarray
    pts: int
    time_base: Fraction
    rate: Fraction | None
    index: int
    captured_at: float


class LatestFrames:
    """A drop-oldest hand-over buffer between the capture thread and the model.

    ``put`` never blocks in ``drop`` mode: when the buffer is full the oldest frame is
    dropped and counted in :attr:`dropped`. With ``drop=False`` (a file played as fast as
    the model allows) ``put`` waits for room instead.

    Args:
        capacity: frames kept (1 or 2).
        drop: drop the oldest frame when full (live sources) instead of waiting.
    """

    def __init__(self, capacity: int = 1, *, drop: bool = True) -> None:
        self.capacity = int(capacity)
        self.drop = drop
        self.dropped = 0
        self.put_count = 0
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._ended = False
        self._error: BaseException | None = None
        self._stop = threading.Event()

    def put(self, item: Any) -> bool:
        """Add ``item``; returns False when the buffer was closed by the consumer."""
        with self._cond:
            while not self.drop and len(self._items) >= self.capacity and not self._stop.is_set():
                self._cond.wait(0.05)
            if self._stop.is_set():
                return False
            while len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.put_count += 1
            self._cond.notify_all()
            return True

    def end(self, error: BaseException | None = None) -> None:
        """The producer is done (``error``: it failed; the consumer gets it after the last frames)."""
        with self._cond:
            self._ended = True
            self._error = error
            self._cond.notify_all()

    def close(self) -> None:
        """The consumer stops: wake and stop the producer."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def wait_closed(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns True (at once) when the consumer closed the buffer."""
        return self._stop.wait(seconds)

    def get(self, max_items: int = 1, timeout: float = 0.05) -> list | None:
        """Up to ``max_items`` frames, oldest first; ``[]`` after ``timeout`` without one; ``None`` at the end.

        Raises:
            the producer's error, once every frame before it was taken.
        """
        with self._cond:
            if not self._items and not self._ended:
                self._cond.wait(timeout)
            if self._items:
                out = [self._items.popleft() for _ in range(min(max_items, len(self._items)))]
                self._cond.notify_all()
                return out
            if self._ended:
                if self._error is not None:
                    raise self._error
                return None
            return []


class LiveCapture:
    """Decode a source on its own thread into a :class:`LatestFrames` buffer.

    Files are decoded as fast as the consumer takes them (no drops) unless ``realtime``:
    then each frame is released at its own timestamp (like a camera) and dropped when
    the consumer is busy. A live source (camera, URL) that ends or fails mid-way is
    reopened at most ``retries`` times in the session; after that the consumer receives a
    :class:`StreamDroppedError`. Timestamps stay increasing across loops and reconnects.

    Args:
        spec: the source.
        buffer: frames kept (1-2).
        realtime: pace a file at its frame rate (live sources are paced by themselves).
        loop: restart a file at its end.
        retries: reconnections allowed for a live source.
        timeout: seconds for opening / reading a live source.
        opener: ``opener(spec) -> iterator of (rgb, pts, time_base, rate)``; defaults to PyAV
            (tests inject failing sources here).
    """

    def __init__(self, spec: SourceSpec, *, buffer: int = 1, realtime: bool = False, loop: bool = False,
                 retries: int = 3, timeout: float = 10.0, input_options: Mapping[str, str] | None = None,
                 opener: Callable[[SourceSpec], Iterator[tuple]] | None = None) -> None:
        self.spec = spec
        self.realtime = realtime or spec.live
        self.loop = loop and not spec.live
        self.retries = int(retries)
        self.timeout = float(timeout)
        self.input_options = dict(input_options or {})
        self.damaged_packets = 0
        self.frames = LatestFrames(buffer, drop=self.realtime)
        self.reconnects = 0
        self.captured = 0
        self.drop_reasons: list[str] = []
        self._opener = opener or self._pyav_frames
        self._first: Iterator[tuple] | None = None
        self._thread: threading.Thread | None = None

    # -- the default opener ---------------------------------------------------------------------------------------
    def _pyav_frames(self, spec: SourceSpec) -> Iterator[tuple]:
        """Open ``spec`` (raising at once when it cannot be opened) and return its frame iterator."""
        if spec.kind == "file":
            return self._file_frames(spec.url)
        return self._live_frames(_open_container(spec, self.timeout, self.input_options))

    def _file_frames(self, path: str) -> Iterator[tuple]:
        # the same reader as `streammask run`: damaged packets skipped and counted, timestamps kept

        rate = probe(path).frame_rate  # raises now for a file that is not a video
        stats: dict = {}

        def frames():
            try:
                for batch in read_batches(path, batch_size=1, stats=stats):
                    yield batch.frames[0], batch.pts[0], batch.time_base, rate
            finally:
                self.damaged_packets += stats.get("damaged_packets", 0)

        return frames()

    def _live_frames(self, container) -> Iterator[tuple]:
        import av

        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1000)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            rate = Fraction(rate) if rate else None
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    return
                except (av.error.FFmpegError, OSError) as exc:  # the connection or device failed
                    raise ConnectionError(getattr(exc, "strerror", None) or str(exc)) from None
                try:
                    decoded = stream.decode(packet)
                except av.error.FFmpegError:  # one damaged packet (lost data): skip it, keep the connection
                    self.damaged_packets += 1
                    continue
                for frame in decoded:
                    rgb = frame.to_ndarray(format="rgb24")
                    rot = int(round(getattr(frame, "rotation", 0) or 0)) % 360
                    if rot:
                        rgb = rotate(rgb, rot)
                    yield rgb, frame.pts, tb, rate
        finally:
            container.close()

    # -- thread ------------------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the source now (errors reach the caller at once), then start the capture thread."""
        self._first = self._opener(self.spec)
        self._thread = threading.Thread(target=self._run, name="streammask-capture", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop capturing and release the source (joins the thread)."""
        self.frames.close()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.timeout + 1))

    def _run(self) -> None:
        it = self._first
        offset = 0
        last: int | None = None
        step = 1
        t_wall0: float | None = None
        t_media0: float | None = None
        try:
            while not self.frames.closed:
                reason = None
                try:
                    if it is None:
                        it = self._opener(self.spec)
                    for rgb, pts, tb, rate in it:
                        if self.frames.closed:
                            break
                        if rate:
                            step = max(1, int(round((1 / rate) / tb)))
                        p = (pts if pts is not None else (last - offset + step if last is not None else 0)) + offset
                        if last is not None and p <= last:
                            offset += last + step - p
                            p = last + step
                        if self.realtime and self.spec.kind == "file":
                            media = float(p * tb)
                            if t_wall0 is None:
                                t_wall0, t_media0 = time.perf_counter(), media
                            delay = t_wall0 + (media - t_media0) - time.perf_counter()
                            if delay > 0 and self.frames.wait_closed(delay):
                                break
                        last = p
                        item = CapturedFrame(rgb, p, tb, rate, self.captured, time.perf_counter())
                        self.captured += 1
                        if not self.frames.put(item):
                            break
                    else:
                        reason = "the stream ended"
                except (ConnectionError, OSError, InvalidVideoError) as exc:
                    if self.spec.kind == "file":
                        raise  # a file is not retried
                    reason = str(exc) or type(exc).__name__
                finally:
                    close = getattr(it, "close", None)
                    if close is not None:
                        close()
                    it = None
                if self.frames.closed:
                    break
                if reason is None:
                    break
                if self.spec.kind == "file" and reason == "the stream ended":
                    if self.loop:
                        continue
                    break
                # a live source (or a file read error) dropped
                self.drop_reasons.append(reason)
                if self.reconnects >= self.retries:
                    raise StreamDroppedError(
                        f"source {self.spec.url!r} dropped ({reason}); gave up after {self.reconnects} "
                        f"reconnection(s) (--retries {self.retries})")
                self.reconnects += 1
                self.frames.wait_closed(min(0.1 * 2 ** (self.reconnects - 1), 2.0))
            self.frames.end()
        except BaseException as exc:
            self.frames.end(exc)
