"""Synthesized sources the tests of several subpackages share: an H.264 clip with chosen timestamps, audio
and rotation (:func:`make_source`), a colour chart through the ffmpeg CLI with chosen matrix and range
(:func:`ffmpeg_colour_source`), and the span of a file's audio packets (:func:`audio_span`)."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from conftest import encode_frames

FFMPEG = shutil.which("ffmpeg")
NTSC = Fraction(30000, 1001)


def _images(n, w, h):
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 1] = (xx * 255 // max(w - 1, 1)).astype(np.uint8)
        img[..., 2] = (yy * 255 // max(h - 1, 1)).astype(np.uint8)
        # a soft red disc that moves: the mask
        r = np.hypot(xx - w / 3 - 3 * i, yy - h / 2) / (h / 3)
        img[..., 0] = (np.clip(1.5 - r, 0, 1) * 255).astype(np.uint8)
        yield img


def make_source(path: Path, *, size=(64, 48), pts=None, time_base=Fraction(1, 30000), rate=NTSC, audio=False,
                rotation=0, audio_codec="aac") -> Path:
    """An H.264 source with the given frame ``pts`` (default: 8 frames of 30000/1001 from pts 0),
    and (``audio``) a 440 Hz stereo tone at 44.1 kHz as long as the video in ``audio_codec``."""
    w, h = size
    pts = list(pts) if pts is not None else [i * 1001 for i in range(8)]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p" if w % 2 == h % 2 == 0 else "yuv444p"  # 4:2:0 needs even
        s.time_base = s.codec_context.time_base = time_base
        if rotation:
            s.set_display_rotation(rotation)
        a = None
        if audio:
            a = c.add_stream(audio_codec, rate=44100, layout="stereo")
            sample_fmt = a.format.name
        encode_frames(c, s, _images(len(pts), w, h), pts, time_base)
        if a is not None:  # a 440 Hz tone as long as the video
            seconds = float((pts[-1] - pts[0]) * time_base) + 1 / float(rate)
            total = int(seconds * 44100)
            t = np.arange(total) / 44100
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            start = int(round(float(pts[0] * time_base) * 44100))

            def tone_frames():
                for i in range(0, total, 1024):
                    chunk = np.stack([tone[i:i + 1024]] * 2)
                    if sample_fmt == "s16":  # packed 16-bit PCM
                        chunk = (chunk.T.reshape(1, -1) * 32767).astype(np.int16)
                    f = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=sample_fmt, layout="stereo")
                    f.sample_rate = 44100
                    yield f

            encode_frames(c, a, tone_frames(), range(start, start + total, 1024), Fraction(1, 44100))
    return path


def audio_packets(path: Path):
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None, []
        a = c.streams.audio[0]
        packets = [p for p in c.demux(a) if p.size]
        return a, packets


def audio_span(path: Path) -> tuple[str, float, float, int]:
    """(codec, first packet time, end of the last packet, packets)."""
    a, packets = audio_packets(path)
    assert a is not None, f"{path.name} has no audio stream"
    first = min(float(p.pts * p.time_base) for p in packets)
    end = max(float((p.pts + (p.duration or 0)) * p.time_base) for p in packets)
    return a.codec_context.name, first, end, len(packets)


def ffmpeg_colour_source(path: Path, rng: str, matrix: str, colours: np.ndarray) -> Path:
    """A clip made by the ffmpeg CLI from an RGB picture: converted and tagged with ``matrix`` / ``rng``."""
    import cv2

    img = np.repeat(colours, 16, 0)[None].repeat(32, 0)
    png = path.with_suffix(".png")
    cv2.imwrite(str(png), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    space = {"bt709": "bt709", "bt601": "smpte170m"}[matrix]
    subprocess.run([FFMPEG, "-v", "error", "-y", "-loop", "1", "-i", str(png), "-frames:v", "4", "-r", "30000/1001",
                    "-vf", f"scale=out_color_matrix={matrix}:out_range={rng}", "-c:v", "libx264", "-pix_fmt",
                    "yuv444p", "-color_range", rng, "-colorspace", space, "-color_primaries", space, "-color_trc",
                    space, str(path)], check=True)
    return path


COLOURS = np.array([[200, 30, 40], [20, 180, 60], [50, 60, 220], [128, 128, 128], [235, 235, 20], [16, 16, 16]],
                   np.uint8)
