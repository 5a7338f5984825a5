"""Segments of long clips: process a frame range, concatenate the outputs without re-encoding.

A segment is the frame range ``[start, end)`` of a clip (a :class:`FrameRange`).
:func:`~streammask.process_video` with ``frame_range=`` seeks with PyAV to the
keyframe at or before the first frame it needs, drops the frames before it, runs
the warm-up frames ``[warmup_start, start)`` through the model and the temporal
smoother without writing them, and writes frames ``[start, end)`` with their
source ``pts``. A smoother with look-ahead (centered windows) also reads its
``delay`` frames after ``end``, so the segment's last frames see the same window
as in one pass.

:func:`concat_outputs` joins the segments' outputs in order: video files by
remuxing their packets with PyAV (every segment's encoder starts with a keyframe,
and the packets keep the source timestamps, so the result is one continuous
stream), PNG sequences by moving the images into one folder with continuous
numbers, one ``frames.csv`` and one ``sequence.json``.

How exact segment-split results are (versus one pass over the clip):

* ``temporal="none"``: identical masks, frame count and timestamps.
* windowed smoothers (``median`` / ``mean``): identical when the warm-up covers the
  window's past (``overlap >= window // 2`` centered, ``window - 1`` trailing).
* recurrent smoothers (``ema``, ``hysteresis``, ``flow``) and masquerade's
  ``running`` normalisation carry state from the first frame on: identical when the
  segments run one after another and the state is handed over
  (:func:`process_segments`, ``handover=True``, what the local engine does);
  approximated by the warm-up when segments run in parallel (the Ray engine).
* ``stride`` / ``skip_static`` (:class:`~streammask.reduce.WorkReducer`): its state (key frame,
  stride phase, scene cuts) is part of the stream state: identical with ``handover=True``;
  approximated when segments run in parallel (the first warm-up frame is a key frame).
* masquerade ``normalize_scope="batch"`` depends on where batches start: not identical.
* audio: segments are written without it; :func:`concat_outputs` copies the source's audio
  into the joined heatmap / matte videos once. A ``background`` video is addressed by the
  clip's frame index, so every segment gets the frames one pass gives it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import InvalidVideoError, OutputError
from .video import FrameBatch, open_video, read_batches
from .writers import partial_path

__all__ = ["FrameRange", "frame_pts", "range_batches", "concat_video", "concat_sequence", "concat_outputs",
           "segment_dir", "process_segments", "SEGMENTS_DIR", "audio_names",
           "check_joined_outputs"]

SEGMENTS_DIR = ".segments"


@dataclass
class FrameRange:
    """Frames ``[start, end)`` of a clip to write; ``[warmup_start, start)`` only warm up state.

    Attributes:
        start, end: the frames written (indices in decode order of the whole clip).
        warmup_start: first frame decoded and run through the pipeline (``<= start``).
        state: a :meth:`~streammask.MaskPipeline.stream_state` to continue from (hand-over
            from the previous segment), or ``None``.
        state_out: filled by :func:`~streammask.process_video`: the stream state after the
            last frame read (before the end-of-stream flush).
        index: the clip's frame ``pts`` in order (:func:`frame_pts`); computed when ``None``.
        exact: read exactly ``[warmup_start, end)``: no batch alignment and no look-ahead
            frames, so that ``state_out`` is the state right after frame ``end - 1`` (for a
            hand-over to the next segment). By default the frames read are widened to the
            batch grid of one pass (multiples of ``batch_size`` from frame 0), so every model
            batch holds the same frames as in one pass and the logits are bit-identical.
    """

    start: int
    end: int
    warmup_start: int | None = None
    state: dict | None = None
    exact: bool = False
    state_out: dict | None = field(default=None, repr=False)
    index: Sequence[int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.warmup_start is None:
            self.warmup_start = self.start
        if not 0 <= self.warmup_start <= self.start < self.end:
            raise ValueError(f"bad frame range: warm-up {self.warmup_start}, [{self.start}, {self.end})")


def frame_pts(path: str | os.PathLike) -> list[int]:
    """Every frame's ``pts`` in presentation order, from the packets (demux only, no decoding).

    Raises:
        InvalidVideoError: a packet has no ``pts`` (the clip cannot be split by timestamps).
    """
    container, stream = open_video(path)
    try:
        pts = []
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's final empty packet
                continue
            if packet.pts is None:
                raise InvalidVideoError(f"input {str(path)!r} has packets without timestamps: cannot split it")
            pts.append(int(packet.pts))
    finally:
        container.close()
    return sorted(pts)


def range_batches(source: str | os.PathLike, frame_range: FrameRange, pipe: Any = None, *, batch_size: int = 8,
                  strict: bool = False, stats: dict | None = None, deep: bool = False) -> Iterator[FrameBatch]:
    """Batches of frames ``[warmup_start, end + delay)``, widened to multiples of ``batch_size``
    (unless ``frame_range.exact``); each batch's ``start`` is its first frame's index in the clip.

    ``delay`` is the look-ahead of ``pipe``'s temporal smoother (0 when ``pipe`` is ``None``).
    """
    from .temporal import make_temporal

    index = frame_range.index if frame_range.index is not None else frame_pts(source)
    frame_range.index = index
    delay = 0
    if pipe is not None:
        delay = make_temporal(**{"name": pipe.temporal["temporal"], **pipe.temporal}).delay
    first, stop = frame_range.warmup_start, frame_range.end
    if not frame_range.exact:
        first = (first // batch_size) * batch_size
        stop = -(-(stop + delay) // batch_size) * batch_size
    stop = min(stop, len(index))
    if first >= len(index):
        raise InvalidVideoError(f"input {str(source)!r} has {len(index)} frames; frame {first} does not exist")
    reader = read_batches(source, batch_size=batch_size, max_frames=stop - first, strict=strict, stats=stats,
                          start_pts=index[first] if first > 0 else None, deep=deep)
    expected = first
    for batch in reader:
        if batch.start == 0 and batch.pts[0] != index[first]:
            raise InvalidVideoError(f"input {str(source)!r}: seeking to frame {first} (pts {index[first]}) gave pts "
                                    f"{batch.pts[0]}: the clip's timestamps do not allow splitting it")
        yield FrameBatch(batch.frames, batch.pts, first + batch.start, batch.time_base, batch.frames16)
        expected = first + batch.start + len(batch)
    if expected < frame_range.end:
        raise InvalidVideoError(f"input {str(source)!r}: only frames up to {expected} decode, the segment needs "
                                f"[{frame_range.start}, {frame_range.end})")


# -- concatenation ----------------------------------------------------------------------------------------------------

def _first_pts(path: Path) -> tuple[int | None, Fraction]:
    import av

    with av.open(str(path), metadata_errors="replace") as c:
        stream = c.streams.video[0]
        pts = [p.pts for p in c.demux(stream) if p.size and p.pts is not None]
        return (min(pts) if pts else None), Fraction(stream.time_base)


def concat_video(parts: Sequence[Path], final: Path, *, start_times: Sequence[Fraction] | None = None,
                 audio_source: str | os.PathLike | None = None, audio_to_video_end: bool = False) -> Path:
    """Remux the video packets of ``parts`` (same codec and settings, in order) into ``final``, no re-encoding.

    ``audio_source``: copy that file's audio streams into ``final`` once, interleaved with the video
    (:class:`~streammask.audio.AudioCopier`, as a one-pass run does; segments are written without
    audio), cut at the end of the last video frame when ``audio_to_video_end``.

    Timestamps are kept (segments written by streammask keep the source ``pts``). ``start_times``
    (exact seconds of each part's first frame) restores them where a part's container rounded
    its start (MP4/MOV store a part's start offset in an edit list in milliseconds): each part's
    packets are shifted so that its first frame is at its start time. Decode timestamps must
    increase across the joins, else :class:`OutputError`. Written under
    :func:`~streammask.writers.partial_path` and renamed when complete.
    """
    import av

    shifts = [0] * len(parts)
    if start_times is not None:
        for i, (part, t) in enumerate(zip(parts, start_times)):
            first, tb = _first_pts(part)
            if first is not None:
                shifts[i] = math.floor(Fraction(t) / tb + Fraction(1, 2)) - first

    final = Path(final)
    tmp = partial_path(final)
    opts = {"movflags": "+faststart"} if final.suffix in (".mp4", ".mov") else {}
    try:
        with av.open(str(parts[0]), metadata_errors="replace") as first:
            template = first.streams.video[0]
            out = av.open(str(tmp), mode="w", options=opts)
            try:
                ostream = out.add_stream_from_template(template)
                ostream.time_base = template.time_base
                ostream.codec_context.codec_tag = template.codec_context.codec_tag  # ProRes: ap4h (4444), not apch
                for key, value in template.metadata.items():  # e.g. alpha_mode of VP9 with alpha in WebM
                    ostream.metadata[key] = value
                extradata = template.codec_context.extradata
                audio = None
                if audio_source is not None:
                    from .audio import AudioCopier

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
                                raise OutputError(f"cannot join {part}: decode time {t} does not follow {last_dts}")
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
    """Join PNG sequence folders (written by :class:`~streammask.writers.ImageSequenceWriter`) into
    ``final``: continuous numbering, one ``frames.csv``, one ``sequence.json``. The parts are consumed."""
    final = Path(final)
    tmp = partial_path(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        meta = json.loads((Path(parts[0]) / "sequence.json").read_text(encoding="utf-8"))
        digits = int(meta["pattern"].rsplit("%0", 1)[1].split("d", 1)[0])
        rows = ["index,file,pts,seconds"]
        n = 0
        for part in parts:
            part = Path(part)
            lines = (part / "frames.csv").read_text(encoding="utf-8").splitlines()[1:]
            for line in lines:
                _, name, pts, seconds = line.split(",")
                new = f"{final.name}_{n:0{digits}d}.png"
                os.replace(part / name, tmp / new)
                rows.append(f"{n},{new},{pts},{seconds}")
                n += 1
        (tmp / "frames.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        meta.update(frames=n, pattern=f"{final.name}_%0{digits}d.png")
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


def audio_names(outputs: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The file names among a segment's ``outputs`` (``{"variant.kind": path}``) that get the source's
    audio when joined: the video files of :data:`~streammask.writers.AUDIO_KINDS`, unless ``audio`` is off."""
    from .writers import AUDIO_KINDS

    if not settings.get("audio", True):
        return []
    return [Path(p).name for key, p in outputs.items()
            if key.rsplit(".", 1)[-1] in AUDIO_KINDS and Path(p).suffix != ""]


def _stateful(temporal: str, variants: Any, settings: dict | None = None) -> bool:
    """Whether a stream carries state from frame to frame (a smoother, masquerade's running normalisation,
    ``--stride`` / ``--skip-static``: the key frame the following frames get their masks from)."""
    from .pipeline import normalize_variants

    if temporal != "none":
        return True
    if settings and (int(settings.get("stride") or 1) > 1 or settings.get("skip_static")):
        return True
    masq = normalize_variants(variants).get("masquerade")
    return bool(masq and masq.get("normalize") == "yes" and masq.get("normalize_scope") == "running")


def start_times(source: str | os.PathLike, index: Sequence[int], starts: Sequence[int]) -> list[Fraction]:
    """Exact seconds of the frames ``starts`` (the segments' first frames)."""
    from .video import probe

    tb = probe(source).time_base
    return [index[s] * tb for s in starts]


def segment_dir(clip_dir: Path, stem: str, number: int) -> Path:
    """Where segment ``number`` of a clip writes its outputs (hidden, inside the clip's folder)."""
    return Path(clip_dir) / SEGMENTS_DIR / f"{stem}.{number:04d}"


# -- sequential processing with state hand-over -----------------------------------------------------------------------

def check_joined_outputs(source: str | os.PathLike, out_dir: str | os.PathLike, settings: dict[str, Any]) -> None:
    """What :func:`~streammask.process_video` checks before any work, for the joined outputs of a
    segment-split run: no output replaces the input, and (unless ``overwrite``) none exists yet.
    (The segments themselves go to streammask's own hidden folders, always replaced.)

    Raises:
        OutputExistsError, OutputError, ParameterError: as :func:`~streammask.safety.check_outputs`.
    """
    from .pipeline import RUN_PARAMS, normalize_variants
    from .safety import DEFAULT_OUTPUT_TEMPLATE, check_outputs, plan_outputs
    from .writers import FORMATS

    def get(name: str) -> Any:
        value = settings.get(name, RUN_PARAMS[name].default)
        return RUN_PARAMS[name].validate(value)

    kinds = get("outputs")
    formats = {k: get(f"{k}_format") for k in ("mask", "heatmap", "matte")}
    planned = plan_outputs(source, out_dir, variants=list(normalize_variants(settings.get("variants", ("soft",)))),
                           kinds=kinds, formats=formats,
                           template=settings.get("output_template") or DEFAULT_OUTPUT_TEMPLATE)
    check_outputs(source, planned, overwrite=bool(settings.get("overwrite", False)),
                  folders=[p for (_, k), p in planned.items() if FORMATS[k][formats[k]].suffix == ""])


def process_segments(source: str | os.PathLike, ranges: Sequence[tuple[int, int]], *, out_dir: str | os.PathLike,
                     overlap: int = 8, handover: bool = True, **process_kwargs: Any):
    """Process a clip segment by segment, one after another, then join the outputs.

    Args:
        source: the clip.
        ranges: ``[(start, end), ...]`` frame ranges covering the clip, in order.
        out_dir: folder of the joined outputs (segments are written below ``out_dir/.segments``
            and removed when joined).
        overlap: warm-up frames before each segment but the first (when the state is not handed over).
        handover: hand the stream state (temporal smoother, running statistics) from each
            segment to the next; then every causal smoother gives the one-pass result exactly
            (segment boundaries should then be multiples of ``batch_size``, see
            :func:`~streammask.plan.segment_ranges`, for bit-identical model batches).
            Smoothers with look-ahead always use the warm-up instead.
        process_kwargs: :func:`~streammask.process_video` keywords.

    Returns:
        A :class:`~streammask.RunSummary` of the whole clip (outputs: the joined files).
    """
    from .pipeline import RunSummary, process_video
    from .temporal import TEMPORAL_PARAMS, make_temporal

    t0 = time.perf_counter()
    out = Path(out_dir)
    stem = Path(source).stem
    temporal = TEMPORAL_PARAMS.validate({k: v for k, v in process_kwargs.items() if k in TEMPORAL_PARAMS})
    causal = make_temporal(**{"name": temporal["temporal"], **temporal}).causal
    handover = handover and _stateful(temporal["temporal"], process_kwargs.get("variants", ("soft",)), process_kwargs)
    check_joined_outputs(source, out, process_kwargs)  # like `run`: before any work
    index = frame_pts(source)
    state = None
    dirs, frames, stages, damaged, keys = [], 0, {}, 0, None
    model_frames, batch_size = None, None
    try:
        for number, (start, end) in enumerate(ranges):
            carry = handover and causal and state is not None
            rng = FrameRange(start, end, warmup_start=start if carry or number == 0 else max(0, start - overlap),
                             state=state if carry else None, index=index, exact=handover and causal)
            d = segment_dir(out, stem, number)
            summary = process_video(source, out_dir=d, frame_range=rng,
                                    **{**process_kwargs, "overwrite": True})  # segment folders are streammask's own
            state = rng.state_out
            dirs.append(d)
            frames += summary.frames
            damaged += summary.damaged_packets
            for k, v in summary.stage_seconds.items():
                stages[k] = stages.get(k, 0.0) + v
            keys = summary.outputs
            batch_size = summary.batch_size
            if process_kwargs.get("batch_size") is None:  # automatic: chosen once, by the first segment
                process_kwargs = {**process_kwargs, "batch_size": batch_size}
            if summary.model_frames is not None:  # --stride / --skip-static (warm-up frames included)
                model_frames = (model_frames or 0) + summary.model_frames
        names = [Path(p).name for p in keys.values()]
        joined = concat_outputs(dirs, out, names, start_times=start_times(source, index, [s for s, _ in ranges]),
                                audio_source=source, audio_names=audio_names(keys, process_kwargs),
                                audio_to_video_end=process_kwargs.get("max_frames") is not None)
    finally:  # joined or failed: the segments go (a failed run leaves nothing that looks finished)
        shutil.rmtree(out / SEGMENTS_DIR, ignore_errors=True)
    outputs = {k: joined[Path(p).name] for k, p in keys.items()}
    return RunSummary(source=str(source), frames=frames, seconds=time.perf_counter() - t0, outputs=outputs,
                      stage_seconds=stages, damaged_packets=damaged, batch_size=batch_size, model_frames=model_frames)
