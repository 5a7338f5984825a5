"""Join outputs written in pieces, without re-encoding.

:func:`concat_outputs` joins the segments' outputs in order: video files by remuxing
their packets with PyAV (every segment's encoder starts with a keyframe, and the packets
keep the source timestamps, so the result is one continuous stream), image sequences by
moving the images into one folder with continuous numbers, one ``frames.csv`` and one
``sequence.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av

from ..errors import OutputError
from .audio import AudioCopier
from .writers import container_options, partial_path

__all__ = ["concat_video", "concat_sequence", "concat_outputs"]


def _first_pts(path: Path) -> tuple[int | None, Fraction]:
    with av.open(str(path), metadata_errors="replace") as c:
        stream = c.streams.video[0]
        pts = [p.pts for p in c.demux(stream) if p.size and p.pts is not None]
        return (min(pts) if pts else None), Fraction(stream.time_base)


def _follow(packet, last_dts: Fraction, part: Path) -> Fraction:
    """Give ``packet`` the first decode time after ``last_dts`` (and return it, in seconds).

    An encoder that reorders frames starts a part's decode times a few frames before its first frame (x264's
    B-frame delay), while a part too short for B-frames (1-2 frames) decodes at its frames' times: after such a
    part the next one's first decode times fall behind. Only decode times move, by single ticks, keeping their
    order: presentation times and the packets are untouched.

    Raises:
        OutputError: the decode time would have to pass the packet's presentation time.
    """
    tb = Fraction(packet.time_base)
    dts = math.floor(last_dts / tb) + 1
    if packet.pts is not None and dts > packet.pts:
        raise OutputError(f"cannot join {part}: decode time {packet.dts * tb} does not follow {last_dts}")
    packet.dts = dts
    return dts * tb


def concat_video(parts: Sequence[Path], final: Path, *, start_times: Sequence[Fraction] | None = None,
                 audio_source: str | os.PathLike | None = None, audio_to_video_end: bool = False) -> Path:
    """Remux the video packets of ``parts`` (same codec and settings, in order) into ``final``, no re-encoding.

    ``audio_source``: copy that file's audio streams into ``final`` once, interleaved with the video
    (:class:`~streammask.io.audio.AudioCopier`, as a one-pass run does; segments are written without
    audio), cut at the end of the last video frame when ``audio_to_video_end``.

    Timestamps are kept (segments written by streammask keep the source ``pts``). ``start_times``
    (exact seconds of each part's first frame) restores them where a part's container rounded
    its start (MP4/MOV store a part's start offset in an edit list in milliseconds): each part's
    packets are shifted so that its first frame is at its start time. Decode timestamps must
    increase across the joins, else :class:`OutputError`. Written under
    :func:`~streammask.io.writers.partial_path` and renamed when complete.
    """

    shifts = [0] * len(parts)
    if start_times is not None:
        for i, (part, t) in enumerate(zip(parts, start_times)):
            first, tb = _first_pts(part)
            if first is not None:
                shifts[i] = math.floor(Fraction(t) / tb + Fraction(1, 2)) - first

    final = Path(final)
    tmp = partial_path(final)
    try:
        with av.open(str(parts[0]), metadata_errors="replace") as first:
            template = first.streams.video[0]
            out = av.open(str(tmp), mode="w", options=container_options(final.suffix, template.time_base))
            try:
                ostream = out.add_stream_from_template(template)
                ostream.time_base = template.time_base
                ostream.codec_context.codec_tag = template.codec_context.codec_tag  # ProRes: ap4h (4444), not apch
                for key, value in template.metadata.items():  # e.g. alpha_mode of VP9 with alpha in WebM
                    ostream.metadata[key] = value
                extradata = template.codec_context.extradata
                audio = None
                if audio_source is not None:
                    audio = AudioCopier(out, str(audio_source), suffix=final.suffix, name=final.name)
                last_dts, video_end = None, None
                for part, shift in zip(parts, shifts):
                    with av.open(str(part), metadata_errors="replace") as src:
                        stream = src.streams.video[0]
                        if (stream.codec_context.name, stream.width, stream.height, stream.codec_context.extradata) != (
                                template.codec_context.name, template.width, template.height, extradata):
                            raise OutputError(f"cannot join {part} to {parts[0]}: different codec settings")
                        for packet in src.demux(stream):
                            if packet.size == 0:
                                continue
                            if shift:
                                packet.pts = None if packet.pts is None else packet.pts + shift
                                packet.dts = None if packet.dts is None else packet.dts + shift
                            dts = packet.dts if packet.dts is not None else packet.pts
                            t = dts * packet.time_base if dts is not None else None
                            if t is not None and last_dts is not None and t <= last_dts:
                                t = _follow(packet, last_dts, part)
                            last_dts = t if t is not None else last_dts
                            if packet.pts is not None:
                                end = (packet.pts + (packet.duration or 0)) * packet.time_base
                                video_end = end if video_end is None else max(video_end, end)
                                if audio is not None:
                                    audio.mux_until(float(packet.pts * packet.time_base))
                            packet.stream = ostream
                            out.mux(packet)
                if audio is not None:
                    audio.finish(float(video_end) if audio_to_video_end and video_end is not None else None)
                out.close()
            except BaseException:
                if audio is not None:
                    audio.close()
                out.close()
                raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
    return final


def concat_sequence(parts: Sequence[Path], final: Path) -> Path:
    """Join PNG / TIFF / OpenEXR sequence folders (written by :class:`~streammask.io.writers.ImageSequenceWriter`) into
    ``final``: continuous numbering, one ``frames.csv``, one ``sequence.json``. The parts are consumed."""
    final = Path(final)
    tmp = partial_path(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        meta = json.loads((Path(parts[0]) / "sequence.json").read_text(encoding="utf-8"))
        digits = int(meta["pattern"].rsplit("%0", 1)[1].split("d", 1)[0])
        ext = meta["pattern"].rsplit(".", 1)[1]  # png, tif, exr
        rows = ["index,file,pts,seconds"]
        n = 0
        for part in parts:
            part = Path(part)
            lines = (part / "frames.csv").read_text(encoding="utf-8").splitlines()[1:]
            for line in lines:
                _, name, pts, seconds = line.split(",")
                new = f"{final.name}_{n:0{digits}d}.{ext}"
                os.replace(part / name, tmp / new)
                rows.append(f"{n},{new},{pts},{seconds}")
                n += 1
        (tmp / "frames.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        meta.update(frames=n, pattern=f"{final.name}_%0{digits}d.{ext}")
        (tmp / "sequence.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def concat_outputs(segment_dirs: Sequence[Path], out_dir: Path, names: Sequence[str], *,
                   start_times: Sequence[Fraction] | None = None, audio_source: str | os.PathLike | None = None,
                   audio_names: Sequence[str] = (), audio_to_video_end: bool = False) -> dict[str, Path]:
    """Join the outputs ``names`` (file or folder names, the same in every segment folder) into ``out_dir``.

    ``start_times``: exact seconds of each segment's first frame (see :func:`concat_video`).
    ``audio_source``: the clip whose audio the joined videos ``audio_names`` get, once (see
    :func:`concat_video` and :func:`audio_names`).
    """
    out_dir = Path(out_dir)
    result = {}
    for name in names:
        parts = [Path(d) / name for d in segment_dirs]
        missing = [p for p in parts if not p.exists()]
        if missing:
            raise OutputError(f"cannot join {name}: segment output {missing[0]} is missing")
        if parts[0].is_dir():
            result[name] = concat_sequence(parts, out_dir / name)
        else:
            result[name] = concat_video(parts, out_dir / name, start_times=start_times,
                                        audio_source=audio_source if name in audio_names else None,
                                        audio_to_video_end=audio_to_video_end)
    return result
