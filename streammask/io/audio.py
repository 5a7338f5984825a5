"""Audio for the video outputs: the source's audio streams copied into an output container.

:class:`AudioCopier` opens a second demuxer on the source, adds one output stream per
source audio stream and muxes the audio packets while the video is being written
(:meth:`AudioCopier.mux_until` after each batch of video frames, the rest on
:meth:`AudioCopier.finish`), so the output is interleaved and memory stays bounded.

Packets are **remuxed** (not re-encoded) when the output container can hold the
codec; otherwise they are transcoded (Opus for WebM, AAC for MP4/MOV) and the
copier says so in :attr:`AudioCopier.notes` (and logs a warning).
"""

from __future__ import annotations

import logging
from fractions import Fraction

__all__ = ["AudioCopier", "CONTAINER_AUDIO_CODECS"]

log = logging.getLogger("streammask")

_PCM = {f"pcm_{f}" for f in ("s16le", "s16be", "s24le", "s24be", "s32le", "s32be", "f32le", "f32be", "f64le", "f64be", "u8")}
# output suffix -> audio codecs the container holds (copied as they are); None = any
CONTAINER_AUDIO_CODECS: dict[str, set[str] | None] = {
    ".webm": {"opus", "vorbis"},
    ".mp4": {"aac", "mp3", "alac", "opus", "flac", "ac3", "eac3"},
    ".mov": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"} | _PCM,
    ".mkv": None,
}
# output suffix -> (encoder, sample rate or None = the source's) used when the codec cannot be copied
_TRANSCODE = {".webm": ("libopus", 48000), ".mp4": ("aac", None), ".mov": ("aac", None), ".mkv": ("libopus", 48000)}


def _seconds(packet) -> float | None:
    t = packet.pts if packet.pts is not None else packet.dts
    return None if t is None else float(t * packet.time_base)


class _Transcoder:
    """Decode one source audio stream and re-encode it into ``out``."""

    def __init__(self, container, src, codec: str, rate: int | None) -> None:
        import av

        rate = rate or src.codec_context.sample_rate or 48000
        layout = src.codec_context.layout.name if src.codec_context.layout else "stereo"
        if codec == "libopus" and src.codec_context.channels > 2:
            layout = "stereo"  # libopus in FFmpeg encodes surround only with a mapping family; keep it simple
        self.out = container.add_stream(codec, rate=rate, layout=layout)
        self.out.time_base = Fraction(1, rate)
        fmt = self.out.codec.audio_formats[0].name if self.out.codec.audio_formats else "fltp"
        self.out.format = fmt
        self.rate = rate
        self.resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        self.fifo = av.AudioFifo()
        self.decoder = src.codec_context
        self.next_pts: int | None = None
        self.flushed = False

    def _encode(self, frame) -> list:
        return list(self.out.encode(frame))

    def feed(self, packet) -> list:
        """Decode ``packet`` (``None`` flushes) and return the encoded packets ready to mux."""
        out: list = []
        if self.flushed:
            return out
        frames = self.decoder.decode(packet) if packet is not None else self.decoder.decode(None)
        if packet is None:
            self.flushed = True
            frames = list(frames) + [None]
        for frame in frames:
            if frame is not None and self.next_pts is None and frame.pts is not None:
                self.next_pts = int(round(float(frame.pts * frame.time_base) * self.rate))
            for rf in self.resampler.resample(frame):
                rf.pts = None
                self.fifo.write(rf)
            size = self.out.codec_context.frame_size or 1024
            while self.fifo.samples >= size or (frame is None and self.fifo.samples):
                chunk = self.fifo.read(min(size, self.fifo.samples) if frame is None else size)
                chunk.pts = self.next_pts or 0
                chunk.time_base = Fraction(1, self.rate)
                self.next_pts = (self.next_pts or 0) + chunk.samples
                out.extend(self._encode(chunk))
        if packet is None:
            out.extend(self._encode(None))
        return out


class AudioCopier:
    """Copy (or, where the container cannot hold the codec, transcode) a source's audio
    streams into an output container that a video is being written to.

    Create it right after adding the video stream (before anything is muxed).

    Args:
        container: the output container (PyAV, opened for writing).
        source: the source file.
        suffix: the output's suffix (``.mp4``, ``.mov``, ``.webm``, ``.mkv``), to know what it can hold.
        name: the output's name, for messages.
    """

    def __init__(self, container, source: str, *, suffix: str, name: str = "output") -> None:
        import av

        self.notes: list[str] = []
        self.packets_written = 0
        self.name = name
        self.last_seconds: float | None = None
        self._container = container
        self._in = av.open(str(source), metadata_errors="replace")
        streams = list(self._in.streams.audio)
        self._out: dict[int, object] = {}
        self._transcoders: dict[int, _Transcoder] = {}
        allowed = CONTAINER_AUDIO_CODECS.get(suffix)
        for s in streams:
            codec = s.codec_context.name
            if allowed is None or codec in allowed:
                self._out[s.index] = container.add_stream_from_template(s)
            else:
                enc, rate = _TRANSCODE.get(suffix, ("aac", None))
                t = _Transcoder(container, s, enc, rate)
                self._transcoders[s.index] = t
                self._out[s.index] = t.out
                note = f"{name}: audio stream {s.index} ({codec}) cannot be stored in {suffix}; transcoded to {enc}"
                self.notes.append(note)
                log.warning(note)
        self._packets = self._in.demux(*streams) if streams else iter(())
        self._pending = None
        self._done = not streams

    @property
    def streams(self) -> int:
        return len(self._out)

    def _mux(self, packet) -> None:
        t = self._transcoders.get(packet.stream.index)
        if t is not None:
            for p in t.feed(packet if packet.size else None):
                self._container.mux(p)
                self.packets_written += 1
            return
        if packet.dts is None or not packet.size:  # the demuxer's end-of-stream marker
            return
        packet.stream = self._out[packet.stream.index]
        self._container.mux(packet)
        self.packets_written += 1

    def mux_until(self, seconds: float | None) -> None:
        """Mux the source's audio packets that start before ``seconds`` (``None``: all of them)."""
        import av
        while not self._done:
            packet = self._pending
            self._pending = None
            if packet is None:
                try:
                    packet = next(self._packets)
                except StopIteration:
                    self._done = True
                    break
                except (av.error.FFmpegError, ValueError, OSError) as exc:  # damaged audio: keep what we have
                    note = f"{self.name}: the source's audio could not be read past {self.last_seconds}: {exc}"
                    self.notes.append(note)
                    log.warning(note)
                    self._done = True
                    break
            t = _seconds(packet)
            if seconds is not None and t is not None and t >= seconds:
                self._pending = packet
                return
            self._mux(packet)
            if t is not None:
                self.last_seconds = t

    def finish(self, seconds: float | None = None) -> None:
        """Mux what is left (up to ``seconds`` if given), flush transcoders, close the source."""
        try:
            self.mux_until(seconds)
            for t in self._transcoders.values():
                for p in t.feed(None):
                    self._container.mux(p)
                    self.packets_written += 1
        finally:
            self.close()

    def close(self) -> None:
        self._done = True
        try:
            self._in.close()
        except Exception:
            pass
