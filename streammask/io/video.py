"""Video input: metadata (:class:`VideoInfo`), batches (:class:`FrameBatch`) and
a streaming PyAV reader (:func:`read_batches`).

Timing stays exact: rates and time bases are :class:`fractions.Fraction`, and
every frame keeps its source ``pts``.
"""

from __future__ import annotations

from contextlib import closing

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import InvalidVideoError, ParameterError, SourceNotFoundError

__all__ = ["VideoInfo", "FrameBatch", "probe", "read_batches", "open_video", "PROBE_MAX_DAMAGED_PACKETS",
           "PROBE_RATE_PACKETS", "frame_pts", "demux_packets", "video_packets", "rotate"]

# probe() skips at most this many damaged packets before the first frame that decodes
PROBE_MAX_DAMAGED_PACKETS = 64
# probe() reads (demuxes, never decodes) at most this many packets to tell a variable frame rate
PROBE_RATE_PACKETS = 240

# FFmpeg's names (``av_color_*_name``, what ffprobe prints) of the AVCOL_* codes; 0 / 2 = unspecified
COLOR_MATRICES = {0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "ycgco",
                  9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc", 13: "chroma-derived-c",
                  14: "ictcp", 15: "ipt-c2", 16: "ycgco-re", 17: "ycgco-ro"}
COLOR_PRIMARIES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film", 9: "bt2020",
                   10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213"}
COLOR_TRANSFERS = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "linear", 9: "log100",
                   10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1", 14: "bt2020-10",
                   15: "bt2020-12", 16: "smpte2084", 17: "smpte428", 18: "arib-std-b67"}
COLOR_RANGES = {1: "limited", 2: "full"}


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a video's first video stream.

    ``width``/``height`` are the displayed size (after the display-matrix
    rotation, which streammask applies to every frame). Header values that a
    container may omit are ``None``.

    Colour and timing facts (``None`` where the source does not say):

    * ``colorspace``: the YUV matrix, FFmpeg's name (``bt709``, ``smpte170m`` = BT.601, ``bt470bg``,
      ``bt2020nc``, ...), as tagged in the first decoded frame or the stream header.
    * ``color_range``: ``"limited"`` (TV, 16-235) or ``"full"`` (PC, 0-255); ``yuvj*`` pixel formats are full.
    * ``color_primaries``, ``color_transfer``: FFmpeg's names (``bt709``, ``bt2020``, ``smpte2084`` = PQ,
      ``arib-std-b67`` = HLG, ...). streammask does no gamut or transfer conversion.
    * ``bits_per_component``: bits of the first component of the decoded pixel format (8, 10, 12, ...).
    * ``variable_frame_rate``: whether the intervals between the timestamps of the first
      :data:`PROBE_RATE_PACKETS` packets (demuxed, not decoded) differ by more than one time-base tick;
      ``None`` when fewer than three packets carry a timestamp.
    """

    path: str
    width: int
    height: int
    coded_width: int
    coded_height: int
    frame_rate: Fraction | None
    time_base: Fraction
    num_frames: int | None
    duration: float | None
    start_pts: int | None
    codec: str
    pix_fmt: str | None
    rotation: int
    has_audio: bool
    container: str
    colorspace: str | None = None
    color_range: str | None = None
    color_primaries: str | None = None
    color_transfer: str | None = None
    bits_per_component: int | None = None
    variable_frame_rate: bool | None = None
    num_frames_counted: int | None = None

    @property
    def frame_count(self) -> tuple[int | None, str]:
        """The best frame count known and where it comes from: ``(n, "counted")`` (packets in the file)
        or ``(n, "header")`` (the container's claim, an estimate: headers lie), ``(None, "unknown")``."""
        if self.num_frames_counted is not None:
            return self.num_frames_counted, "counted"
        if self.num_frames is not None:
            return self.num_frames, "header"
        return None, "unknown"

    def describe(self) -> str:
        rate = f"{self.frame_rate} ({float(self.frame_rate):.3f} fps)" if self.frame_rate else "unknown"
        lines = [
            f"path:        {self.path}",
            f"container:   {self.container}",
            f"codec:       {self.codec} ({self.pix_fmt})",
            f"size:        {self.width}x{self.height}" + (f" (coded {self.coded_width}x{self.coded_height}, rotation {self.rotation})" if self.rotation else ""),
            f"frame rate:  {rate}",
            f"time base:   {self.time_base}",
            f"frames:      {self._frames_text()}",
            f"duration:    {f'{self.duration:.3f} s' if self.duration is not None else 'unknown'}",
            f"start pts:   {self.start_pts}",
            f"audio:       {'yes' if self.has_audio else 'no'}",
            f"timing:      {_timing(self.variable_frame_rate)}",
            f"bit depth:   {f'{self.bits_per_component} bits per component' if self.bits_per_component else 'unknown'}",
            f"matrix:      {self.colorspace or self._assumed_matrix()}",
            f"range:       {self.color_range or self._assumed_range()}",
            f"primaries:   {self.color_primaries or 'unspecified'}",
            f"transfer:    {self.color_transfer or 'unspecified'}",
        ]
        return "\n".join(lines)

    def _frames_text(self) -> str:
        header = "unknown" if self.num_frames is None else str(self.num_frames)
        if self.num_frames_counted is None:
            return f"{header} (from the header, not counted)" if self.num_frames is not None else "unknown"
        if self.num_frames == self.num_frames_counted:
            return f"{header} (header and packets agree)"
        return f"{self.num_frames_counted} packets in the file (the header says {header})"

    def _yuv(self) -> bool:
        return bool(self.pix_fmt and self.pix_fmt.startswith("yuv"))

    def _assumed_matrix(self) -> str:
        # what _to_rgb decodes an untagged YUV frame as
        if not self._yuv():
            return "unspecified"
        hd = self.coded_width >= 1280 or self.coded_height >= 720
        return f"unspecified (decoded as {'bt709' if hd else 'bt601'})"

    def _assumed_range(self) -> str:
        return "unspecified (decoded as limited)" if self._yuv() else "unspecified"


def _timing(variable: bool | None) -> str:
    if variable is None:
        return "unknown (too few timestamps)"
    return (f"{'variable' if variable else 'constant'} frame rate "
            f"(timestamps of the first {PROBE_RATE_PACKETS} packets)")


@dataclass(frozen=True)
class FrameBatch:
    """A batch of consecutive frames.

    Attributes:
        frames: ``(B, H, W, 3)`` uint8 RGB (numpy array or torch tensor).
        pts: source presentation timestamps, one per frame, in ``time_base`` units.
        start: index of the first frame in the video.
        time_base: the stream's time base.
        frames16: ``(B, H, W, 3)`` uint16 RGB (0-65535) of a source with more than 8 bits per
            component, when :func:`read_batches` was asked for it (``deep=True``); else ``None``.
    """

    frames: object
    pts: tuple[int, ...]
    start: int
    time_base: Fraction
    frames16: object = None

    def __post_init__(self) -> None:
        shape = tuple(self.frames.shape)
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"frames must have shape (B, H, W, 3), got {shape}")
        if len(self.pts) != shape[0]:
            raise ValueError(f"{len(self.pts)} pts for {shape[0]} frames")

    def __len__(self) -> int:
        return len(self.pts)

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.frames.shape)
        return f"FrameBatch(frames={shape} {getattr(self.frames, 'dtype', '')}, start={self.start}, pts={self.pts[0]}..{self.pts[-1]}, time_base={self.time_base})"


def _check_path(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"input {str(path)!r} does not exist")
    if p.is_dir():
        raise InvalidVideoError(f"input {str(path)!r} is a directory, not a video file")
    if p.stat().st_size == 0:
        raise InvalidVideoError(f"input {str(path)!r} is empty (0 bytes)")
    return str(p)


def open_video(path: str | os.PathLike):
    """Open ``path`` with PyAV and return ``(container, video_stream)``."""
    import av

    spath = _check_path(path)
    try:
        # damaged metadata must not make a decodable file unreadable
        container = av.open(spath, metadata_errors="replace")
    except av.error.EOFError:
        raise InvalidVideoError(f"input {spath!r} is not a readable video: the file ends before its first frame "
                                "(no video frames, or cut short)") from None
    except av.error.FFmpegError as exc:
        raise InvalidVideoError(f"input {spath!r} is not a readable video: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a header PyAV cannot parse
        raise InvalidVideoError(f"input {spath!r} is not a readable video: {exc}") from None
    fmt = container.format.name or ""
    if fmt == "image2" or fmt.endswith("_pipe"):
        container.close()
        raise InvalidVideoError(f"input {spath!r} is a still image ({fmt}), not a video")
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        detail = f" (it holds {', '.join(kinds)} only)" if kinds else ""
        raise InvalidVideoError(f"input {spath!r} has no video stream{detail}")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # no decoder for this codec (or a damaged codec id)
        name = getattr(getattr(stream, "codec", None), "name", None) or "unknown"
        container.close()
        raise InvalidVideoError(f"input {spath!r} has a video stream in a codec that cannot be decoded ({name})")
    return container, stream


def demux_packets(container, stream, on_damage: Callable[[str, Exception], None]) -> Iterator[Any]:
    """The packets of ``stream``, damage-tolerant: a demux error (a file cut mid-stream, garbage in the
    container) is handed to ``on_damage("demuxing", exc)`` and ends the stream with one ``None``, the
    signal to flush the decoder. ``on_damage`` may raise to make the damage fatal."""
    import av

    it = container.demux(stream)
    while True:
        try:
            packet = next(it)
        except StopIteration:
            return
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            on_damage("demuxing", exc)
            yield None
            return
        yield packet


def video_packets(path: str | os.PathLike) -> Iterator[Any]:
    """The non-empty packets of ``path``'s video stream in decode order, demuxed (never decoded) from an open
    of the file of their own, which is closed when the iteration ends or the generator is closed (use
    :func:`contextlib.closing` when stopping early). Behind :func:`frame_pts` and :func:`probe`'s frame-rate
    check and frame count.

    Raises:
        InvalidVideoError: as :func:`open_video`. PyAV's demux errors propagate: what a damaged file means is
        the caller's to decide.
    """
    container, stream = open_video(path)
    try:
        for packet in container.demux(stream):
            if packet.size:  # not the demuxer's final empty packet
                yield packet
    finally:
        container.close()


def _first_frame(container, stream, path: str | os.PathLike, *, max_damaged: int = PROBE_MAX_DAMAGED_PACKETS):
    """Decode the first frame, skipping up to ``max_damaged`` damaged packets (as :func:`read_batches` does)."""
    import av

    damaged = 0
    last_error = ""

    def skip(what: str, exc: Exception) -> None:
        nonlocal damaged, last_error
        damaged += 1
        last_error = getattr(exc, "strerror", None) or str(exc)
        if damaged > max_damaged:
            raise InvalidVideoError(f"input {str(path)!r} cannot be decoded: the first {damaged} packets are damaged "
                                    f"({last_error})") from None

    for packet in demux_packets(container, stream, skip):
        if packet is None:
            break
        try:
            for frame in stream.decode(packet):
                return frame
        except (av.error.FFmpegError, ValueError) as exc:
            skip("decoding", exc)
    try:  # end of the stream: flush the decoder
        for frame in stream.codec_context.decode(None):
            return frame
    except (av.error.FFmpegError, ValueError) as exc:
        last_error = getattr(exc, "strerror", None) or str(exc)
    extra = f" ({damaged} damaged packets: {last_error})" if damaged else ""
    raise InvalidVideoError(f"input {str(path)!r} has no decodable video frames{extra}")


def _colour_tags(frame, cc) -> dict:
    """The colour tags of the first decoded frame, or of the stream header where the frame has none."""
    def tag(name: str, names: dict) -> str | None:
        for obj in (frame, cc):
            code = getattr(obj, name, None)
            if code is not None and int(code) in names:
                return names[int(code)]
        return None

    fmt = frame.format if frame.format is not None else cc.format
    color_range = tag("color_range", COLOR_RANGES)
    if color_range is None and fmt is not None and fmt.name.startswith("yuvj"):
        color_range = "full"  # the JPEG pixel formats are full range by definition
    bits = fmt.components[0].bits if fmt is not None and fmt.components else None
    return dict(colorspace=tag("colorspace", COLOR_MATRICES), color_range=color_range,
                color_primaries=tag("color_primaries", COLOR_PRIMARIES),
                color_transfer=tag("color_trc", COLOR_TRANSFERS), bits_per_component=bits)


def _variable_frame_rate(path: str, *, max_packets: int = PROBE_RATE_PACKETS) -> bool | None:
    """Whether the first ``max_packets`` video packets' timestamps are unevenly spaced.

    Demuxes only (no decoding), from a separate open of the file so :func:`probe`'s first frame is
    untouched. Intervals within one time-base tick of each other count as even (Matroska's
    milliseconds store 29.97 fps as 33/34 ms). ``None`` when fewer than three packets carry a
    timestamp or the file cannot be demuxed.
    """
    import av

    stamps: list[int] = []
    try:
        with closing(video_packets(path)) as packets:
            for packet in packets:
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is not None:
                    stamps.append(int(ts))
                if len(stamps) >= max_packets:
                    break
    except (av.error.FFmpegError, ValueError, OSError, IndexError, InvalidVideoError):
        pass
    stamps = sorted(set(stamps))  # decode order -> presentation order
    if len(stamps) < 3:
        return None
    steps = np.diff(stamps)
    return bool(steps.max() - steps.min() > 1)


def _count_packets(path: str) -> int | None:
    """Video packets in the file (demux only); ``None`` when it cannot be demuxed to the end."""
    import av

    n = 0
    try:
        with closing(video_packets(path)) as packets:
            for _ in packets:
                n += 1
    except (av.error.FFmpegError, ValueError, OSError, IndexError, InvalidVideoError):
        return n or None
    return n


def probe(path: str | os.PathLike, *, count_frames: bool = False) -> VideoInfo:
    """Read a video's metadata (decodes the first frame to learn its rotation and colour tags;
    demuxes, without decoding, the first :data:`PROBE_RATE_PACKETS` packets to tell a variable frame rate).

    ``num_frames`` is the container header's claim, an estimate. With ``count_frames`` the packets
    of the whole file are counted too (demux only, no decoding: ``num_frames_counted``), the
    number of frames there are, less any that fail to decode.

    Damaged packets before the first frame that decodes are skipped (at most
    :data:`PROBE_MAX_DAMAGED_PACKETS`), so a file that :func:`read_batches` can read is not refused.

    Raises:
        SourceNotFoundError: the file does not exist.
        InvalidVideoError: it is not a decodable video.
    """
    container, stream = open_video(path)
    try:
        rotation = 0
        first_pts = None
        frame = _first_frame(container, stream, path)
        rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
        first_pts = frame.pts
        cc = stream.codec_context
        w, h = cc.width, cc.height
        dw, dh = (h, w) if rotation in (90, 270) else (w, h)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        return VideoInfo(
            path=str(path),
            width=dw,
            height=dh,
            coded_width=w,
            coded_height=h,
            frame_rate=Fraction(rate) if rate else None,
            time_base=Fraction(stream.time_base) if stream.time_base else Fraction(1, 1000),
            num_frames=stream.frames or None,
            duration=duration,
            start_pts=stream.start_time if stream.start_time is not None else first_pts,
            codec=cc.name,
            pix_fmt=cc.format.name if cc.format else None,
            rotation=rotation,
            has_audio=bool(container.streams.audio),
            container=container.format.name,
            variable_frame_rate=_variable_frame_rate(str(path)),
            num_frames_counted=_count_packets(str(path)) if count_frames else None,
            **_colour_tags(frame, cc),
        )
    finally:
        container.close()


def _to_rgb(frame, fmt: str = "rgb24") -> np.ndarray:
    """A decoded frame as RGB, honouring its matrix and range tags.

    Tagged frames are converted with their tags (swscale does this). An untagged YUV
    frame of HD size (1280 wide or 720 high and more) is converted as BT.709, as players
    and editors assume; smaller untagged frames as BT.601 (FFmpeg's default).
    """
    from av.video.reformatter import ColorRange, Colorspace

    if frame.colorspace == 2 and frame.format.name.startswith("yuv") and (frame.width >= 1280 or frame.height >= 720):
        rng = frame.color_range or (ColorRange.JPEG if frame.format.name.startswith("yuvj") else ColorRange.MPEG)
        return frame.reformat(format=fmt, src_colorspace=Colorspace.ITU709, src_color_range=rng).to_ndarray()
    return frame.to_ndarray(format=fmt)


def rotate(rgb: np.ndarray, rotation: int) -> np.ndarray:
    # PyAV's rotation is the counter-clockwise angle that displays the frame upright.
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=k)) if k else rgb


def _deep(frames16: list, frames: list):
    return np.stack(frames16) if frames16 and len(frames16) == len(frames) else None


def _seek(container, stream, pts: int) -> bool:
    """Seek to the keyframe at or before ``pts``; False when the first frame decoded there is later
    (a container whose index cannot seek exactly): the caller then decodes from the start."""
    import av

    try:
        container.seek(pts, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is None or frame.pts > pts:
                return False
            break
        container.seek(pts, stream=stream, backward=True, any_frame=False)
        return True
    except (av.error.FFmpegError, ValueError, OSError):
        return False


def read_batches(
    path: str | os.PathLike,
    *,
    batch_size: int = 8,
    max_frames: int | None = None,
    strict: bool = False,
    stats: dict | None = None,
    deep: bool = False,
    start_pts: int | None = None,
) -> Iterator[FrameBatch]:
    """Stream a video as :class:`FrameBatch` es of RGB uint8 frames.

    Frames are decoded with PyAV's default (multi-threaded where the codec
    allows) decoder, rotated upright, and carry their source ``pts``; frames
    without a ``pts`` get one extrapolated from the previous frame and the rate.
    Only one batch is held at a time.

    Packets are demuxed and decoded one at a time: a packet the decoder rejects
    (damaged data) is skipped and counted, and decoding goes on with the next
    one; the frames that do decode keep their source ``pts``. A file cut
    mid-stream ends with the frames decoded so far.

    Args:
        path: video file.
        batch_size: frames per batch (the last batch may be shorter).
        max_frames: stop after this many frames.
        strict: make damage fatal: the first packet that fails to demux or decode
            raises :class:`InvalidVideoError` naming the file, the packet and the frame.
        stats: if given, a dict updated while reading: ``damaged_packets`` (packets
            skipped because they failed to decode or demux), ``frames`` (frames yielded) and
            ``bad_timestamps`` (frames whose ``pts`` did not increase, e.g. in spliced or damaged
            input: they get the previous ``pts`` plus one frame duration so that timestamps
            always increase).
        deep: for a source with more than 8 bits per component (10-bit HEVC, ProRes, ...), also
            give every frame as 16-bit RGB (:attr:`FrameBatch.frames16`), for outputs that keep
            the extra precision (the 16-bit mattes); 8-bit sources give ``None``.
        start_pts: seek to the keyframe at or before this ``pts`` and drop the frames before
            it (``max_frames`` and the batches' ``start`` then count from that frame); when the
            seek lands after it, decoding starts from the beginning instead.

    Raises:
        InvalidVideoError: no frame decodes, or (``strict``) a packet is damaged.
    """
    import av

    if int(batch_size) < 1:
        raise ParameterError("batch_size", batch_size, "an integer >= 1")
    if stats is None:
        stats = {}
    stats.setdefault("damaged_packets", 0)
    stats.setdefault("frames", 0)
    stats.setdefault("bad_timestamps", 0)
    container, stream = open_video(path)
    try:
        tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1000)
        rate = stream.average_rate or stream.guessed_rate
        step = int(round((1 / Fraction(rate)) / tb)) if rate else 1
        frames: list[np.ndarray] = []
        frames16: list[np.ndarray] = []
        pts: list[int] = []
        index = 0
        packet_no = 0
        last_pts: int | None = None
        shape: tuple[int, ...] | None = None
        start = 0
        if start_pts is not None and not _seek(container, stream, int(start_pts)):
            container.close()
            container, stream = open_video(path)

        def damaged(what: str, exc: Exception) -> None:
            stats["damaged_packets"] += 1
            if strict:
                raise InvalidVideoError(
                    f"input {str(path)!r} is damaged: {what} packet {packet_no} (after frame {index}) "
                    f"failed: {getattr(exc, 'strerror', None) or exc} (strict=True makes damage fatal)") from None

        done = False
        for packet in demux_packets(container, stream, damaged):
            if packet is not None:
                packet_no += 1
            try:
                decoded = stream.decode(packet) if packet is not None else stream.codec_context.decode(None)
            except (av.error.FFmpegError, ValueError) as exc:
                damaged("decoding", exc)
                continue
            for frame in decoded:
                p = frame.pts if frame.pts is not None else (last_pts + step if last_pts is not None else 0)
                if last_pts is not None and p <= last_pts:
                    # damaged or spliced input: timestamps must increase for the encoders
                    stats["bad_timestamps"] += 1
                    p = last_pts + max(step, 1)
                last_pts = p
                if start_pts is not None and p < start_pts:
                    continue
                rgb = _to_rgb(frame)
                rgb16 = None
                if deep and frame.format.components and frame.format.components[0].bits > 8:
                    rgb16 = _to_rgb(frame, "rgb48le")
                rot = int(round(getattr(frame, "rotation", 0) or 0)) % 360
                if rot:
                    rgb = rotate(rgb, rot)
                    rgb16 = rotate(rgb16, rot) if rgb16 is not None else None
                if shape is None:
                    shape = rgb.shape
                elif rgb.shape != shape:
                    # a damaged header changed the frame size mid-stream: drop that frame
                    damaged(f"decoding (frame size {rgb.shape[1]}x{rgb.shape[0]}, not {shape[1]}x{shape[0]})",
                            ValueError("frame size changed"))
                    continue
                frames.append(rgb)
                if rgb16 is not None:
                    frames16.append(rgb16)
                pts.append(p)
                index += 1
                stats["frames"] = index
                if len(frames) == batch_size:
                    batch = FrameBatch(np.stack(frames), tuple(pts), start, tb, _deep(frames16, frames))
                    frames, pts, frames16 = [], [], []  # drop the per-frame arrays before yielding: one copy of a batch
                    start = index
                    yield batch
                if max_frames is not None and index >= max_frames:
                    done = True
                    break
            if done:
                break
        if frames:
            yield FrameBatch(np.stack(frames), tuple(pts), start, tb, _deep(frames16, frames))
        elif index == 0:
            extra = f" ({stats['damaged_packets']} damaged packets)" if stats["damaged_packets"] else ""
            raise InvalidVideoError(f"input {str(path)!r} has no decodable video frames{extra}")
    finally:
        container.close()


def frame_pts(path: str | os.PathLike) -> list[int]:
    """Every frame's ``pts`` in presentation order, from the packets (demux only, no decoding).

    Raises:
        InvalidVideoError: a packet has no ``pts`` (the clip cannot be split by timestamps).
    """
    pts = []
    with closing(video_packets(path)) as packets:
        for packet in packets:
            if packet.pts is None:
                raise InvalidVideoError(f"input {str(path)!r} has packets without timestamps: cannot split it")
            pts.append(int(packet.pts))
    return sorted(pts)