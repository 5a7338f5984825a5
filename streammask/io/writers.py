"""Output writers: one protocol (``write(frames, pts)``, ``close()``, ``abort()``,
context manager) for video files and image sequences.

Every writer writes under a temporary hidden name in the destination folder and
renames to the final name only when ``close()`` has flushed the encoder and
closed the container: a failed or interrupted run never leaves a half-written
file that looks finished.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import OutputError, ParameterError
from ..params import Param, ParamSet
from .audio import AudioCopier
from .matte import MATTE_HAS_ALPHA, MATTE_STYLE_CHOICES, Background, MatteBatch, parse_color, resolve_matte_style

__all__ = ["Writer", "VideoWriter", "ImageSequenceWriter", "FORMATS", "OutputFormat", "make_writer", "partial_path",
           "OUTPUT_PARAMS", "AUDIO_KINDS", "X264_PRESETS", "VP9_DEADLINES", "container_options"]

# outputs that carry the source's audio (when ``audio`` is on and the format is a video file)
AUDIO_KINDS = ("heatmap", "matte")

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
"""x264/x265 speed presets, fastest first (``encoder_preset``)."""

VP9_DEADLINES = ("realtime", "good", "best")
"""libvpx's quality/speed modes, fastest first (``vp9_deadline``)."""

OUTPUT_PARAMS = ParamSet((
    Param("encoder_preset", "choice", "fast", "x264/x265 speed preset of the H.264/H.265 mask and heatmap videos: "
          "faster presets encode several times faster at the same crf for somewhat larger files (veryfast ~3x "
          "fast at 720p); ProRes, FFV1, VP9 and image sequences are not affected", choices=X264_PRESETS),
    Param("vp9_deadline", "choice", "realtime", "libvpx mode of the VP9 (WebM) matte: realtime (fast: ~4x 'good' "
          "at 720p for similar alpha, larger files), good, best (slowest)", choices=VP9_DEADLINES),
    Param("vp9_cpu_used", "int", 6, "libvpx speed of the VP9 (WebM) matte: 0 (slowest, smallest) to 8 (fastest)",
          min=0, max=8),
    Param("audio", "bool", True, "copy the source's audio streams into the heatmap and matte videos "
          "(remuxed; transcoded only where the container cannot hold the codec); --no-audio drops them"),
    Param("matte_style", "choice", "auto", "what the matte holds: straight (RGB + mask alpha), premultiplied, "
          "solid (foreground over --matte-color, no alpha), background (foreground over --background), "
          "alpha (the mask as a gray luma matte); auto: premultiplied for exr, straight for the other formats",
          choices=MATTE_STYLE_CHOICES),
    Param("matte_color", "str", "#00ff00", "colour behind the foreground for matte_style=solid ('#rrggbb' or 'r,g,b')"),
    Param("background", "str", None, "image or video behind the foreground for matte_style=background "
          "(resized to the frame size; a video loops)", nullable=True),
))


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
    bits: int = 8  # bits per channel of the pixels the writer takes (8: uint8, 16: uint16)
    codec_tag: str | None = None

    @property
    def is_yuv(self) -> bool:
        return self.pix_fmt.startswith("yuv")

    @property
    def has_alpha(self) -> bool:
        return self.channels == 4

    @property
    def is_float(self) -> bool:
        """Float samples (OpenEXR): the writer takes uint8/uint16 code values or float compositions."""
        return self.pix_fmt.endswith("f32le")

    def without_alpha(self, channels: int = 3) -> "OutputFormat":
        """The same format for opaque pixels: ``channels`` 3 (RGB) or 1 (gray)."""
        if channels == self.channels:
            return self
        if self.is_float:
            pix = "grayf32le" if channels == 1 else "gbrpf32le"
        elif self.is_yuv:
            pix = self.pix_fmt.replace("yuva", "yuv")
        elif channels == 1:
            pix = "gray16be" if self.bits == 16 else "gray"
        else:
            pix = "rgb48be" if self.bits == 16 else "rgb24"
        return replace(self, pix_fmt=pix, channels=channels)


_H265 = (("crf", "14"), ("preset", "fast"), ("x265-params", "log-level=error"))


# kind -> format name -> OutputFormat
FORMATS: dict[str, dict[str, OutputFormat]] = {
    "mask": {
        "mp4": OutputFormat("mp4", ".mp4", "libx264", "yuv420p", (("crf", "12"), ("preset", "fast")), 1,
                            "H.264 yuv420p, plays in browsers and editors (lossy, near-lossless crf 12)"),
        "ffv1": OutputFormat("ffv1", ".mkv", "ffv1", "gray", (("level", "3"),), 1, "FFV1 8-bit gray in Matroska, lossless"),
        "png": OutputFormat("png", "", "png", "gray", (), 1, "8-bit grayscale PNG sequence, lossless"),
        "png16": OutputFormat("png16", "", "png", "gray16be", (), 1, "16-bit grayscale PNG sequence, lossless", 16),
        "tiff16": OutputFormat("tiff16", "", "tiff", "gray16le", (), 1, "16-bit grayscale TIFF sequence, lossless", 16),
        "h265": OutputFormat("h265", ".mp4", "libx265", "yuv420p", _H265, 1,
                             "H.265 yuv420p ('hvc1' tag for Apple players), smaller previews", codec_tag="hvc1"),
    },
    "heatmap": {
        "mp4": OutputFormat("mp4", ".mp4", "libx264", "yuv420p", (("crf", "18"), ("preset", "fast")), 3,
                            "H.264 yuv420p"),
        "h265": OutputFormat("h265", ".mp4", "libx265", "yuv420p", _H265, 3, "H.265 yuv420p ('hvc1')",
                             codec_tag="hvc1"),
    },
    "matte": {
        "prores": OutputFormat("prores", ".mov", "prores_ks", "yuva444p10le",
                               (("profile", "4444"), ("vendor", "apl0"), ("alpha_bits", "16")), 4,
                               "ProRes 4444 with alpha in QuickTime (Resolve, Nuke, After Effects, Premiere)", 16),
        "png": OutputFormat("png", "", "png", "rgba", (), 4, "8-bit RGBA PNG sequence (straight alpha)"),
        "png16": OutputFormat("png16", "", "png", "rgba64be", (), 4, "16-bit RGBA PNG sequence", 16),
        "tiff16": OutputFormat("tiff16", "", "tiff", "rgba64le", (), 4, "16-bit RGBA TIFF sequence", 16),
        "webm": OutputFormat("webm", ".webm", "libvpx-vp9", "yuva420p", (("crf", "20"), ("b", "0"), ("row-mt", "1")), 4,
                             "VP9 with alpha in WebM (browsers)"),
        "exr": OutputFormat("exr", "", "exr", "gbrapf32le", (("format", "half"), ("compression", "zip16")), 4,
                            "OpenEXR sequence, half-float RGBA (ZIP, lossless), premultiplied unless "
                            "--matte-style straight (Nuke, Resolve/Fusion, After Effects)", 16),
    },
}


def partial_path(final: Path) -> Path:
    """The temporary name a writer uses until it completes (hidden, same folder and suffix)."""
    return final.with_name(f".{final.stem}.partial{final.suffix}")


_MAX_REORDER_FRAMES = 256
"""A pts - dts gap of more frames than any encoder reorders (x264/x265 at most 16 B-frames plus look-ahead)
means an uninitialised dts."""


def container_options(suffix: str, time_base: Fraction) -> dict[str, str]:
    """The muxer options of a video file with the extension ``suffix`` whose stream has ``time_base``.

    MP4 / QuickTime: ``+faststart`` (the index first, so players start before the download ends), and the movie
    timescale set to the stream's: the muxer writes the start offset of a clip whose first frame is not at 0 as an
    edit list in the movie timescale, 1/1000 s by default, which moved a frame at 7007/30000 s to 6990/30000 s.
    """
    if suffix not in (".mp4", ".mov"):
        return {}
    opts = {"movflags": "+faststart"}
    tb = Fraction(time_base)
    if tb.numerator == 1 and 0 < tb.denominator < 2 ** 31:
        opts["movie_timescale"] = str(tb.denominator)
    return opts


class Writer(ABC):
    """Base of every writer; use as a context manager (``abort()`` on error)."""

    path: Path

    @abstractmethod
    def write(self, frames: np.ndarray, pts: Sequence[int]) -> None:
        """Write ``(B, H, W, C)`` uint8 (or uint16) frames, or a :class:`~streammask.io.matte.MatteBatch`,
        with their source timestamps."""

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


def _even_pad(img: np.ndarray) -> np.ndarray:
    """Pad one (H, W, C) frame to even H and W by repeating the last row/column (4:2:0 needs even sizes)."""
    h, w = img.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return img
    return np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _frames(frames) -> Iterable[np.ndarray]:
    """The ``(H, W, C)`` frames of a batch: an array, or a :class:`~streammask.io.matte.MatteBatch` composed one by one."""
    compose = getattr(frames, "frames", None)
    return compose() if callable(compose) else frames


def _depth(img: np.ndarray, bits: int) -> np.ndarray:
    return img.astype(np.uint16) * np.uint16(257) if bits == 16 and img.dtype == np.uint8 else img


_IN_FORMATS = {(1, 8): "gray", (3, 8): "rgb24", (4, 8): "rgba", (1, 16): "gray16le", (3, 16): "rgb48le", (4, 16): "rgba64le"}


class VideoWriter(Writer):
    """Encode frames into a video file with PyAV, keeping the source timestamps.

    YUV formats are converted from RGB with the BT.709 matrix into limited ("TV") range and
    tagged so (matrix, primaries, transfer, range), so players and editors that honour the
    tags show the source colours.

    Args:
        path: final file name.
        fmt: the :class:`OutputFormat`.
        width, height: frame size.
        rate: nominal frame rate (exact fraction).
        time_base: time base of the given ``pts`` (the source stream's).
        audio_source: copy this file's audio streams into the output (see :class:`~streammask.io.audio.AudioCopier`).
        audio_to_video_end: cut the audio at the end of the last video frame (when the video
            stops early, e.g. ``max_frames``); otherwise all the source's audio is kept.
    """

    def __init__(self, path: str | os.PathLike, fmt: OutputFormat, *, width: int, height: int, rate: Fraction | None,
                 time_base: Fraction, audio_source: str | os.PathLike | None = None,
                 audio_to_video_end: bool = False) -> None:
        import av

        self.path = Path(path)
        self.fmt = fmt
        self._tmp = partial_path(self.path)
        self._closed = False
        self.frames_written = 0
        self.audio = None
        self.audio_to_video_end = audio_to_video_end
        self._rate = rate
        self._last_pts: int | None = None
        self._last_dts: int | None = None
        self._max_gap = math.ceil(_MAX_REORDER_FRAMES / ((rate or Fraction(25)) * Fraction(time_base)))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._container = av.open(str(self._tmp), mode="w", options=container_options(fmt.suffix, time_base))
            pad = fmt.pix_fmt.startswith(("yuv420", "yuva420"))
            self._pad = pad and (width % 2 or height % 2)
            w, h = (width + width % 2, height + height % 2) if self._pad else (width, height)
            stream = self._container.add_stream(fmt.codec, rate=rate or Fraction(25))
            stream.width, stream.height = w, h
            stream.pix_fmt = fmt.pix_fmt
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
            stream.options = dict(fmt.options)
            if fmt.codec_tag:
                stream.codec_context.codec_tag = fmt.codec_tag
            if fmt.is_yuv:
                cc = stream.codec_context
                cc.color_range = 1  # MPEG (limited) range, as players expect
                for attr, val in (("colorspace", 1), ("color_primaries", 1), ("color_trc", 1)):  # BT.709
                    try:
                        setattr(cc, attr, val)
                    except (AttributeError, ValueError, TypeError):
                        pass
            self._stream = stream
            if audio_source is not None:
                self.audio = AudioCopier(self._container, str(audio_source), suffix=fmt.suffix, name=self.path.name)
        except Exception as exc:
            container = getattr(self, "_container", None)
            if container is not None:
                try:
                    container.close()
                except Exception:
                    pass
            self._cleanup()
            raise OutputError(f"cannot open {self.path} for writing with {fmt.codec}: {exc}") from exc
        self._in_fmt = _IN_FORMATS[(fmt.channels, fmt.bits)]
        self._time_base = time_base

    def write(self, frames: np.ndarray, pts: Sequence[int]) -> None:
        """Encode ``(B, H, W, C)`` frames (uint8, or uint16 for 16-bit formats) with their source ``pts``."""
        import av
        from av.video.reformatter import ColorRange, Colorspace, Interpolation

        for img, p in zip(_frames(frames), pts):
            img = _depth(_even_pad(img) if self._pad else img, self.fmt.bits)
            arr = img[..., 0] if img.shape[-1] == 1 else img
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format=self._in_fmt)
            if self.fmt.is_yuv:
                frame = frame.reformat(format=self.fmt.pix_fmt, dst_colorspace=Colorspace.ITU709,
                                       dst_color_range=ColorRange.MPEG, dst_color_trc=1, dst_color_primaries=1,
                                       interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND)
            frame.pts = int(p)
            frame.time_base = self._time_base
            try:
                for packet in self._stream.encode(frame):
                    self._mux(packet)
            except av.error.FFmpegError as exc:
                raise OutputError(f"cannot write frame {self.frames_written} (pts {int(p)}) to {self.path}: {exc}") from exc
            self.frames_written += 1
            self._last_pts = int(p)
        if self.audio is not None and self._last_pts is not None:
            self.audio.mux_until(float(self._last_pts * self._time_base))

    def _mux(self, packet) -> None:
        """Mux one video packet. libx265 leaves the decode timestamp of a stream shorter than its look-ahead
        uninitialised (1-2 frames: ~40 % of the time a value near -1.2e18, which the MP4 muxer refuses with "Not
        yet implemented"); such a stream has no reordering, so that dts is taken from the pts."""
        if packet.dts is not None and packet.pts is not None and not 0 <= packet.pts - packet.dts <= self._max_gap:
            last = self._last_dts
            packet.dts = packet.pts if last is None or packet.pts > last else last + 1
        if packet.dts is not None:
            self._last_dts = packet.dts
        self._container.mux(packet)

    def _video_end(self) -> float | None:
        if self._last_pts is None:
            return None
        frame = 1 / self._rate if self._rate else 0
        return float(self._last_pts * self._time_base + frame)

    def close(self) -> Path:
        """Flush the encoder (and the audio), close the file and give it its final name."""
        if self._closed:
            return self.path
        try:
            for packet in self._stream.encode(None):
                self._mux(packet)
            if self.audio is not None:
                self.audio.finish(self._video_end() if self.audio_to_video_end else None)
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
        if self.audio is not None:
            self.audio.close()
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
    """Write numbered PNG, TIFF or OpenEXR files into a folder, plus ``frames.csv`` (index, pts,
    seconds) and ``sequence.json`` (exact rate and time base) so the timing is not lost.

    8-bit formats take uint8 frames, 16-bit ones (``png16``, ``tiff16``) uint16 (uint8 is scaled
    by 257). 1 channel is written as gray, 3 as RGB, 4 as RGBA.

    OpenEXR (``exr``, FFmpeg's encoder through PyAV) holds half floats (channels ``R G B A``, ``Y``
    for gray), ZIP-compressed (lossless): a :class:`~streammask.io.matte.MatteBatch` is composed in
    float (:meth:`~streammask.io.matte.MatteBatch.frames_float`: colour ``code / 255`` or
    ``/ 65535``, premultiplied by the alpha for ``premultiplied``), uint8/uint16 arrays are scaled to
    ``[0, 1]``, and each value is rounded once, to the nearest half (numpy's ``float16``), so the file
    holds exactly ``numpy.float16`` of the composition. Code values are written as they are (no
    transfer function is removed: set the reader's colour space to the source's, e.g. sRGB / Rec.709).

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
        self._ext = {"tiff": "tif", "exr": "exr"}.get(fmt.codec, "png")
        self._exr = None  # the OpenEXR encoder (one codec context for every frame)
        self._alpha_mode: str | None = None
        self._size = (width, height)
        self._rate = rate
        self._time_base = time_base
        if self._tmp.exists():
            shutil.rmtree(self._tmp)
        self._tmp.mkdir(parents=True)
        self._csv = open(self._tmp / "frames.csv", "w", encoding="utf-8")
        self._csv.write("index,file,pts,seconds\n")

    def _encode_exr(self, img: np.ndarray) -> bytes:
        """One frame, ``(H, W, C)`` float (or uint8/uint16 code values), as the bytes of a half-float EXR file."""
        import av

        if img.dtype != np.float32:
            img = img.astype(np.float32) / np.float32(255 if img.dtype == np.uint8 else 65535)
        half = img.astype(np.float16).astype(np.float32)  # what the file holds; FFmpeg's float -> half is then exact
        pix = {1: "grayf32le", 3: "gbrpf32le", 4: "gbrapf32le"}[half.shape[-1]]
        if self._exr is None:
            from fractions import Fraction

            cc = av.CodecContext.create("exr", "w")
            cc.width, cc.height = self._size
            cc.pix_fmt = pix
            cc.time_base = Fraction(1, 1)
            cc.thread_count = 1  # one packet per frame, no frame-thread delay
            cc.options = dict(self.fmt.options)
            self._exr = cc
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(half[..., 0] if half.shape[-1] == 1 else half),
                                           format=pix)
        packets = self._exr.encode(frame)
        if len(packets) != 1:
            raise OutputError(f"the OpenEXR encoder returned {len(packets)} packets for frame {self.frames_written} "
                              f"of {self.path}")
        return bytes(packets[0])

    def _encode(self, img: np.ndarray, params: list[int]) -> bytes:
        import cv2

        img = _depth(img, self.fmt.bits)
        if img.shape[-1] == 1:
            out = img[..., 0]
        elif img.shape[-1] == 4:
            out = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
        else:
            out = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(f".{self._ext}", np.ascontiguousarray(out), params)
        if not ok:
            raise OutputError(f"cannot encode frame {self.frames_written} of {self.path} as {self._ext.upper()}")
        return data.tobytes()

    def write(self, frames: np.ndarray, pts: Sequence[int]) -> None:
        import cv2

        params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if self._ext == "png" else []
        exr = self._ext == "exr"
        if exr and isinstance(frames, MatteBatch):
            self._alpha_mode = frames.style
            images: Iterable[np.ndarray] = frames.frames_float()  # composed in float, rounded once, to half
        else:
            images = _frames(frames)
        for img, p in zip(images, pts):
            name = f"{self.path.name}_{self.frames_written:0{self._digits}d}.{self._ext}"
            data = self._encode_exr(img) if exr else self._encode(img, params)
            try:  # written by Python, so a full disk is an OSError with its reason, not a libpng message
                (self._tmp / name).write_bytes(data)
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
            "pattern": f"{self.path.name}_%0{self._digits}d.{self._ext}",
            "channels": self.fmt.channels,
            "bits": self.fmt.bits,
        }
        if self._ext == "exr":
            meta.update(sample_format="half", compression=dict(self.fmt.options)["compression"],
                        alpha=self._alpha_mode if self._alpha_mode in ("straight", "premultiplied") else None)
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
                time_base: Fraction, channels: int | None = None, audio_source: str | os.PathLike | None = None,
                audio_to_video_end: bool = False, preset: str | None = None,
                vp9_deadline: str = OUTPUT_PARAMS["vp9_deadline"].default,
                vp9_cpu_used: int = OUTPUT_PARAMS["vp9_cpu_used"].default) -> Writer:
    """Create the writer for output ``kind`` (mask/heatmap/matte) in format ``fmt_name``.

    Args:
        channels: the pixels' channels when they differ from the format's (a matte style
            without alpha: 3 = RGB, 1 = gray); the format then drops its alpha.
        audio_source: copy this file's audio into the output (video files of
            :data:`AUDIO_KINDS` only; ignored for image sequences and other kinds).
        audio_to_video_end: cut the audio where the video ends.
        preset: x264/x265 speed preset (one of :data:`X264_PRESETS`) replacing the
            format's own (``fast``); ignored by the other codecs.
        vp9_deadline, vp9_cpu_used: libvpx's mode and speed for VP9 (row-based multithreading on,
            one encoder thread per core up to 8); ignored by the other codecs.
    """
    try:
        fmt = FORMATS[kind][fmt_name]
    except KeyError:
        allowed = ", ".join(repr(n) for n in FORMATS.get(kind, {}))
        raise ParameterError(f"{kind}_format", fmt_name, f"one of {allowed}") from None
    if preset is not None and fmt.codec in ("libx264", "libx265"):
        if preset not in X264_PRESETS:
            raise ParameterError("encoder_preset", preset, "one of " + ", ".join(X264_PRESETS))
        fmt = replace(fmt, options=tuple((k, preset if k == "preset" else v) for k, v in fmt.options))
    if fmt.codec == "libvpx-vp9":
        deadline = OUTPUT_PARAMS["vp9_deadline"].validate(vp9_deadline)
        cpu_used = OUTPUT_PARAMS["vp9_cpu_used"].validate(vp9_cpu_used)
        threads = str(max(1, min(8, os.cpu_count() or 1)))
        fmt = replace(fmt, options=fmt.options + (("deadline", deadline), ("cpu-used", str(cpu_used)),
                                                  ("threads", threads)))
    if channels is not None:
        fmt = fmt.without_alpha(channels)
    path = path_stem.with_name(path_stem.name + fmt.suffix)
    if fmt.suffix == "":
        return ImageSequenceWriter(path, fmt, width=width, height=height, rate=rate, time_base=time_base)
    audio = audio_source if kind in AUDIO_KINDS else None
    return VideoWriter(path, fmt, width=width, height=height, rate=rate, time_base=time_base, audio_source=audio,
                       audio_to_video_end=audio_to_video_end)


def output_look(settings: dict, info, kinds: Sequence[str]) -> dict:
    """What the validated run ``settings`` (:data:`OUTPUT_PARAMS` and the formats) mean for the writers.

    Returns:
        ``{"channels": {kind: 3 or 1} for a matte style without alpha, "bits": {kind: 8 or 16},
        "color": (r, g, b), "background": a Background or None}``.
    """
    style = resolve_matte_style(settings["matte_style"], settings["matte_format"])
    channels: dict[str, int] = {}
    if "matte" in kinds and not MATTE_HAS_ALPHA[style]:
        channels["matte"] = 1 if style == "alpha" else 3
    bits = {k: FORMATS[k][settings[f"{k}_format"]].bits for k in kinds}
    color = parse_color(settings["matte_color"])
    background = None
    if style == "background" and "matte" in kinds:
        if not settings.get("background"):
            raise ParameterError("background", settings.get("background"),
                                 "an image or video file when matte_style='background'")
        background = Background(settings["background"], width=info.width, height=info.height)
    return {"channels": channels, "bits": bits, "color": color, "background": background}
