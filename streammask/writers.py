"""Output writers: one protocol (``write(frames, pts)``, ``close()``, ``abort()``,
context manager) for video files and image sequences.

Every writer writes under a temporary hidden name in the destination folder and
renames to the final name only when ``close()`` has flushed the encoder and
closed the container: a failed or interrupted run never leaves a half-written
file that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import OutputError, ParameterError

__all__ = ["Writer", "VideoWriter", "ImageSequenceWriter", "FORMATS", "OutputFormat", "make_writer", "partial_path"]


@dataclass(frozen=True)
class OutputFormat:
    """How one kind of output is encoded."""

    name: str
    suffix: str  # "" for an image-sequence folder
    codec: str
    pix_fmt: str
    options: tuple[tuple[str, str], ...] = ()
    channels: int = 3  # 1 gray, 3 rgb, 4 rgba
    description: str = ""


# kind -> format name -> OutputFormat
FORMATS: dict[str, dict[str, OutputFormat]] = {
    "mask": {
        "mp4": OutputFormat("mp4", ".mp4", "libx264", "yuv420p", (("crf", "12"), ("preset", "fast")), 1,
                            "H.264 yuv420p, plays in browsers and editors (lossy, near-lossless crf 12)"),
        "ffv1": OutputFormat("ffv1", ".mkv", "ffv1", "gray", (("level", "3"),), 1, "FFV1 8-bit gray in Matroska, lossless"),
        "png": OutputFormat("png", "", "png", "gray", (), 1, "8-bit grayscale PNG sequence, lossless"),
    },
    "heatmap": {
        "mp4": OutputFormat("mp4", ".mp4", "libx264", "yuv420p", (("crf", "18"), ("preset", "fast")), 3,
                            "H.264 yuv420p"),
    },
    "matte": {
        "prores": OutputFormat("prores", ".mov", "prores_ks", "yuva444p10le",
                               (("profile", "4444"), ("vendor", "apl0"), ("alpha_bits", "16")), 4,
                               "ProRes 4444 with alpha in QuickTime (Resolve, Nuke, After Effects, Premiere)"),
        "png": OutputFormat("png", "", "png", "rgba", (), 4, "8-bit RGBA PNG sequence (straight alpha)"),
        "webm": OutputFormat("webm", ".webm", "libvpx-vp9", "yuva420p", (("crf", "20"), ("b", "0"), ("row-mt", "1")), 4,
                             "VP9 with alpha in WebM (browsers)"),
    },
}


def partial_path(final: Path) -> Path:
    """The temporary name a writer uses until it completes (hidden, same folder and suffix)."""
    return final.with_name(f".{final.stem}.partial{final.suffix}")


class Writer(ABC):
    """Base of every writer; use as a context manager (``abort()`` on error)."""

    path: Path

    @abstractmethod
    def write(self, frames: np.ndarray, pts: Sequence[int]) -> None:
        """Write ``(B, H, W, C)`` uint8 frames with their source timestamps."""

    @abstractmethod
    def close(self) -> Path:
        """Finish the file and give it its final name; returns that name."""

    @abstractmethod
    def abort(self) -> None:
        """Stop and remove everything written so far."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _even_pad(frames: np.ndarray) -> np.ndarray:
    """Pad (B, H, W, C) to even H and W by repeating the last row/column (4:2:0 needs even sizes)."""
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class VideoWriter(Writer):
    """Encode frames into a video file with PyAV, keeping the source timestamps.

    Args:
        path: final file name.
        fmt: the :class:`OutputFormat`.
        width, height: frame size.
        rate: nominal frame rate (exact fraction).
        time_base: time base of the given ``pts`` (the source stream's).
    """

    def __init__(self, path: str | os.PathLike, fmt: OutputFormat, *, width: int, height: int, rate: Fraction | None,
                 time_base: Fraction) -> None:
        import av

        self.path = Path(path)
        self.fmt = fmt
        self._tmp = partial_path(self.path)
        self._closed = False
        self.frames_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            opts = {"movflags": "+faststart"} if fmt.suffix in (".mp4", ".mov") else {}
            self._container = av.open(str(self._tmp), mode="w", options=opts)
            pad = fmt.pix_fmt.startswith(("yuv420", "yuva420"))
            self._pad = pad and (width % 2 or height % 2)
            w, h = (width + width % 2, height + height % 2) if self._pad else (width, height)
            stream = self._container.add_stream(fmt.codec, rate=rate or Fraction(25))
            stream.width, stream.height = w, h
            stream.pix_fmt = fmt.pix_fmt
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
            stream.options = dict(fmt.options)
            if fmt.codec in ("libx264", "libvpx-vp9"):
                stream.codec_context.color_range = 1  # MPEG (limited) range, as players expect
                for attr, val in (("colorspace", 1), ("color_primaries", 1), ("color_trc", 1)):  # BT.709
                    try:
                        setattr(stream.codec_context, attr, val)
                    except (AttributeError, ValueError, TypeError):
                        pass
            self._stream = stream
        except Exception as exc:
            self._cleanup()
            raise OutputError(f"cannot open {self.path} for writing with {fmt.codec}: {exc}") from exc
        self._in_fmt = {1: "gray", 3: "rgb24", 4: "rgba"}[fmt.channels]
        self._time_base = time_base

    def write(self, frames: np.ndarray, pts: Sequence[int]) -> None:
        """Encode ``(B, H, W, C)`` uint8 frames with their source ``pts``."""
        import av

        if self._pad:
            frames = _even_pad(frames)
        for img, p in zip(frames, pts):
            arr = img[..., 0] if self._in_fmt == "gray" else img
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format=self._in_fmt)
            frame.pts = int(p)
            frame.time_base = self._time_base
            try:
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
            except av.error.FFmpegError as exc:
                raise OutputError(f"cannot write frame {self.frames_written} (pts {int(p)}) to {self.path}: {exc}") from exc
            self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, close the file and give it its final name."""
        if self._closed:
            return self.path
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except Exception as exc:
            self.abort()
            raise OutputError(f"cannot finish {self.path}: {exc}") from exc
        self._closed = True
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Stop and delete the temporary file; the final name is never created."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except Exception:
            pass
        self._cleanup()

    def _cleanup(self) -> None:
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass


class ImageSequenceWriter(Writer):
    """Write numbered PNG files into a folder, plus ``frames.csv`` (index, pts, seconds)
    and ``sequence.json`` (exact rate and time base) so the timing is not lost.

    The folder is built under a hidden temporary name and renamed when complete.
    """

    def __init__(self, path: str | os.PathLike, fmt: OutputFormat, *, width: int, height: int, rate: Fraction | None,
                 time_base: Fraction, digits: int = 6) -> None:
        self.path = Path(path)
        self.fmt = fmt
        self._tmp = partial_path(self.path)
        self._closed = False
        self.frames_written = 0
        self._digits = digits
        self._rate = rate
        self._time_base = time_base
        if self._tmp.exists():
            shutil.rmtree(self._tmp)
        self._tmp.mkdir(parents=True)
        self._csv = open(self._tmp / "frames.csv", "w", encoding="utf-8")
        self._csv.write("index,file,pts,seconds\n")

    def write(self, frames: np.ndarray, pts: Sequence[int]) -> None:
        import cv2

        for img, p in zip(frames, pts):
            name = f"{self.path.name}_{self.frames_written:0{self._digits}d}.png"
            if img.shape[-1] == 1:
                out = img[..., 0]
            elif img.shape[-1] == 4:
                out = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
            else:
                out = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            ok, png = cv2.imencode(".png", out, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            if not ok:
                raise OutputError(f"cannot encode frame {self.frames_written} of {self.path} as PNG")
            try:  # written by Python, so a full disk is an OSError with its reason, not a libpng message
                (self._tmp / name).write_bytes(png.tobytes())
                self._csv.write(f"{self.frames_written},{name},{int(p)},{float(int(p) * self._time_base):.9f}\n")
            except OSError as exc:
                raise OutputError(f"cannot write frame {self.frames_written} of {self.path}: {exc}") from exc
            self.frames_written += 1

    def close(self) -> Path:
        if self._closed:
            return self.path
        try:
            self._finish()
        except OSError as exc:  # e.g. the disk filled up: no half-written sequence under the final name
            self.abort()
            raise OutputError(f"cannot finish {self.path}: {exc}") from exc
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self._tmp, self.path)
        self._closed = True
        return self.path

    def _finish(self) -> None:
        self._csv.close()
        meta = {
            "frames": self.frames_written,
            "frame_rate": str(self._rate) if self._rate else None,
            "time_base": str(self._time_base),
            "pattern": f"{self.path.name}_%0{self._digits}d.png",
            "channels": self.fmt.channels,
        }
        (self._tmp / "sequence.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._csv.close()
        except OSError:  # the buffered rows cannot be flushed (disk full): the folder goes anyway
            pass
        shutil.rmtree(self._tmp, ignore_errors=True)


def make_writer(kind: str, fmt_name: str, path_stem: Path, *, width: int, height: int, rate: Fraction | None,
                time_base: Fraction) -> Writer:
    """Create the writer for output ``kind`` (mask/heatmap/matte) in format ``fmt_name``."""
    try:
        fmt = FORMATS[kind][fmt_name]
    except KeyError:
        allowed = ", ".join(repr(n) for n in FORMATS.get(kind, {}))
        raise ParameterError(f"{kind}_format", fmt_name, f"one of {allowed}") from None
    cls = ImageSequenceWriter if fmt.suffix == "" else VideoWriter
    path = path_stem.with_name(path_stem.name + fmt.suffix)
    return cls(path, fmt, width=width, height=height, rate=rate, time_base=time_base)
