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
* ``stride`` / ``skip_static`` (:class:`~streammask.temporal.keyframes.WorkReducer`): its state (key frame,
  stride phase, scene cuts) is part of the stream state: identical with ``handover=True``;
  approximated when segments run in parallel (the first warm-up frame is a key frame).
* masquerade ``normalize_scope="batch"`` depends on where batches start: not identical.
* audio: segments are written without it; :func:`concat_outputs` copies the source's audio
  into the joined heatmap / matte videos once. A ``background`` video is addressed by the
  clip's frame index, so every segment gets the frames one pass gives it.
* SAM 3 (``handover=True`` only): the tracker goes from segment to segment, ids included.
  With ``instances="separate"`` the ids whose tracks are open go with it; a segment writes
  the tracks open in it (one whose id first appears there starts at the clip's first frame,
  the empty frames before the segment included), and :func:`join_instances` joins each id's
  parts (consecutive segments) and the segments' sidecars: the files one pass writes.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

from ..errors import OutputError, ParameterError
from ..io.video import probe
from ..model.sam3 import is_sam3_model
from ..io.writers import AUDIO_KINDS
from ..pipeline.instances import TRACK_KINDS, existing_tracks, preflight_instances
from ..pipeline.preflight import DEFAULT_OUTPUT_TEMPLATE, preflight_outputs
from ..pipeline.run import RunSummary, process_video
from ..pipeline.settings import RUN_PARAMS, normalize_variants
from ..temporal.smoothers import TEMPORAL_PARAMS, smoother_for
from ..io.concat import concat_outputs, concat_sequence, concat_video
from ..io.instances import join_sidecars
from ..io.video import frame_pts
from ..pipeline.ranges import FrameRange

__all__ = ["segment_dir", "process_segments", "SEGMENTS_DIR", "audio_names", "start_times", "check_joined_outputs",
           "check_segments_for_tracker", "join_instances"]

SEGMENTS_DIR = ".segments"
SIDECAR_KEY = "instances"  # instances="separate": the sidecar's key among a run's outputs
_TRACK_KEY = re.compile(r"^.+\.id\d+\.(?:" + "|".join(TRACK_KINDS) + r")$")  # "soft.id3.mask": a per-object track


def audio_names(outputs: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The file names among a segment's ``outputs`` (``{"variant.kind": path}``) that get the source's
    audio when joined: the video files of :data:`~streammask.io.writers.AUDIO_KINDS`, unless ``audio`` is off."""
    if not settings.get("audio", True):
        return []
    return [Path(p).name for key, p in outputs.items()
            if key.rsplit(".", 1)[-1] in AUDIO_KINDS and Path(p).suffix != ""]


def _stateful_model(settings: dict | None) -> bool:
    """Whether the model itself carries state from frame to frame (SAM 3's tracker: memory and object ids)."""
    if not settings:
        return False
    segmenter = settings.get("segmenter")
    if segmenter is not None:
        return bool(getattr(segmenter, "stateful", False))
    return is_sam3_model(settings.get("model"), settings.get("revision"))


def _stateful(temporal: str, variants: Any, settings: dict | None = None) -> bool:
    """Whether a stream carries state from frame to frame (a smoother, masquerade's running normalisation,
    ``--stride`` / ``--skip-static``: the key frame the following frames get their masks from, SAM 3's tracker)."""
    if temporal != "none" or _stateful_model(settings):
        return True
    if settings and (int(settings.get("stride") or 1) > 1 or settings.get("skip_static")):
        return True
    masq = normalize_variants(variants).get("masquerade")
    return bool(masq and masq.get("normalize") == "yes" and masq.get("normalize_scope") == "running")


def start_times(source: str | os.PathLike, index: Sequence[int], starts: Sequence[int]) -> list[Fraction]:
    """Exact seconds of the frames ``starts`` (the segments' first frames)."""
    tb = probe(source).time_base
    return [index[s] * tb for s in starts]


def segment_dir(clip_dir: Path, stem: str, number: int) -> Path:
    """Where segment ``number`` of a clip writes its outputs (hidden, inside the clip's folder)."""
    return Path(clip_dir) / SEGMENTS_DIR / f"{stem}.{number:04d}"


def check_segments_for_tracker(settings: dict[str, Any], temporal: dict[str, Any], *, handover: bool) -> None:
    """Refuse splitting a clip into segments where a tracking model (SAM 3) could not keep its ids.

    The tracker's state (memory, object ids) is handed from each segment to the next, which needs the segments
    to run one after another (``handover``) and a causal smoother (a look-ahead smoother restarts each segment
    from warm-up frames, which the tracker would see twice). Per-object tracks (``instances='separate'``) work:
    the ids whose tracks are open are handed over with the tracker, a track opened in a later segment starts
    at the clip's first frame there, and :func:`join_instances` joins each id's parts and the sidecars into
    what one pass writes.

    Raises:
        ParameterError: naming the setting and why.
    """
    if not handover:
        raise ParameterError("segment_seconds", settings.get("segment_seconds", "set"),
                             "none with SAM 3 when segments run in parallel (the Ray engine): each segment would "
                             "start a new tracker, so object ids would not carry over; run the clip whole, or "
                             "with the local engine (segments one after another, the tracker handed over)")
    if not smoother_for(temporal).causal:
        raise ParameterError("temporal", temporal["temporal"], "a causal method (or window_align='trailing') with "
                             "SAM 3 and segments: a look-ahead window re-reads warm-up frames, which the tracker "
                             "would see twice")


# -- sequential processing with state hand-over -----------------------------------------------------------------------

def check_joined_outputs(source: str | os.PathLike, out_dir: str | os.PathLike, settings: dict[str, Any]) -> None:
    """What :func:`~streammask.process_video` checks before any work, for the joined outputs of a
    segment-split run: no output replaces the input, and (unless ``overwrite``) none exists yet.
    (The segments themselves go to streammask's own hidden folders, always replaced.)

    Raises:
        OutputExistsError, OutputError, ParameterError: as :func:`~streammask.pipeline.preflight.check_outputs`.
    """
    joined = _joined_settings(out_dir, settings)
    variants = list(normalize_variants(settings.get("variants", ("soft",))))
    kinds = joined["outputs"]
    if joined["instances"] == "separate":  # the per-object tracks and the sidecar, as process_video checks them
        preflight_instances(source, joined, variants)
        kinds = [k for k in kinds if k not in TRACK_KINDS]
    preflight_outputs(source, out_dir, variants=variants, kinds=kinds,
                      formats={k: joined[f"{k}_format"] for k in ("mask", "heatmap", "matte")},
                      template=joined["output_template"], overwrite=joined["overwrite"])


def _joined_settings(out_dir: str | os.PathLike, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that name the joined outputs, validated, defaults filled in."""
    def get(name: str) -> Any:
        value = settings.get(name, RUN_PARAMS[name].default)
        return RUN_PARAMS[name].validate(value)

    joined = {f"{k}_format": get(f"{k}_format") for k in ("mask", "heatmap", "matte")}
    joined.update(outputs=get("outputs"), instances=get("instances"), out_dir=os.fspath(out_dir),
                  output_template=settings.get("output_template") or DEFAULT_OUTPUT_TEMPLATE,
                  overwrite=bool(settings.get("overwrite", False)))
    return joined


def join_instances(segment_outputs: Sequence[dict[str, Any]], out_dir: Path, *,
                   start_times: Sequence[Fraction]) -> dict[str, Path]:
    """Join the per-object tracks and the sidecars of a clip's segments (``instances="separate"``).

    Each segment wrote tracks for the ids open in it (see :class:`~streammask.pipeline.instances.InstanceOutputs`
    with a frame range): a track whose id first appeared in segment ``k`` starts at the clip's first frame there
    (the empty frames before it included) and goes on in the segments after ``k`` until the object is retired.
    So a track's parts are consecutive segments, joined in order: the first part starts at the clip's first
    frame (``start_times[0]``), each further part at its segment's start. The sidecars are joined by
    :func:`~streammask.io.instances.join_sidecars`.

    Args:
        segment_outputs: per segment, in order, its run's outputs (``{"VARIANT.idN.KIND": path, "instances":
            path, ...}``: :attr:`~streammask.RunSummary.outputs`); keys other than tracks and the sidecar are
            left out.
        out_dir: the folder of the joined outputs.
        start_times: exact seconds of each segment's first frame.

    Returns:
        ``{key: joined path}`` for the sidecar and every track.

    Raises:
        OutputError: a track's parts are not consecutive segments, or a part cannot be joined.
    """
    out_dir = Path(out_dir)
    tracks: dict[str, list[tuple[int, Path]]] = {}
    for number, seg in enumerate(segment_outputs):
        for key, path in seg.items():
            if _TRACK_KEY.match(key):
                tracks.setdefault(key, []).append((number, Path(path)))
    for key, parts in tracks.items():
        numbers = [n for n, _ in parts]
        if numbers != list(range(numbers[0], numbers[-1] + 1)):
            raise OutputError(f"cannot join the track {key}: it is missing from segment(s) "
                              f"{sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))} between its first "
                              "and its last (a track ends only when its object is retired)")
    side = [Path(seg[SIDECAR_KEY]) for seg in segment_outputs]
    joined: dict[str, Path] = {}
    try:
        joined[SIDECAR_KEY] = join_sidecars(side, out_dir / side[0].name)
        for key, parts in tracks.items():
            paths = [p for _, p in parts]
            final = out_dir / paths[0].name
            if paths[0].is_dir():
                joined[key] = concat_sequence(paths, final)
            else:
                times = [start_times[0]] + [start_times[n] for n, _ in parts[1:]]
                joined[key] = concat_video(paths, final, start_times=times)
    except BaseException:  # nothing that looks finished is left
        _remove(joined.values())
        raise
    return joined


def _remove(paths) -> None:
    for path in paths:
        path = Path(path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _remove_stale_tracks(out_dir: Path, stem: str, settings: dict[str, Any], written: Sequence[Path]) -> None:
    """With ``overwrite``: remove per-object tracks of an earlier run in ``out_dir`` that this run did not write."""
    joined = _joined_settings(out_dir, settings)
    keep = {Path(p).resolve() for p in written}
    for path in existing_tracks(out_dir, joined["output_template"], stem=stem,
                                variants=list(normalize_variants(settings.get("variants", ("soft",)))),
                                kinds=joined["outputs"],
                                formats={k: joined[f"{k}_format"] for k in ("mask", "heatmap", "matte")}):
        if path.resolve() not in keep:
            _remove([path])


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
            :func:`~streammask.batch.plan.segment_ranges`, for bit-identical model batches).
            Smoothers with look-ahead always use the warm-up instead.
        process_kwargs: :func:`~streammask.process_video` keywords.

    Returns:
        A :class:`~streammask.RunSummary` of the whole clip (outputs: the joined files).
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    stem = Path(source).stem
    temporal = TEMPORAL_PARAMS.validate({k: v for k, v in process_kwargs.items() if k in TEMPORAL_PARAMS})
    causal = smoother_for(temporal).causal
    if _stateful_model(process_kwargs):  # SAM 3: its tracker's memory and ids go from segment to segment
        check_segments_for_tracker(process_kwargs, temporal, handover=handover)
    handover = handover and _stateful(temporal["temporal"], process_kwargs.get("variants", ("soft",)), process_kwargs)
    check_joined_outputs(source, out, process_kwargs)  # like `run`: before any work
    separate = process_kwargs.get("instances", "union") == "separate"
    index = frame_pts(source)
    state = None
    dirs, frames, stages, damaged, keys, seg_outputs = [], 0, {}, 0, None, []
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
            seg_outputs.append(summary.outputs)
            batch_size = summary.batch_size
            if process_kwargs.get("batch_size") is None:  # automatic: chosen once, by the first segment
                process_kwargs = {**process_kwargs, "batch_size": batch_size}
            if summary.model_frames is not None:  # --stride / --skip-static (warm-up frames included)
                model_frames = (model_frames or 0) + summary.model_frames
        starts = start_times(source, index, [s for s, _ in ranges])
        if separate:  # the overlay is in every segment; the tracks and the sidecar are joined apart
            keys = {k: p for k, p in keys.items() if k != SIDECAR_KEY and not _TRACK_KEY.match(k)}
        names = [Path(p).name for p in keys.values()]
        joined = concat_outputs(dirs, out, names, start_times=starts,
                                audio_source=source, audio_names=audio_names(keys, process_kwargs),
                                audio_to_video_end=process_kwargs.get("max_frames") is not None)
        outputs = {k: joined[Path(p).name] for k, p in keys.items()}
        if separate:
            try:
                outputs.update(join_instances(seg_outputs, out, start_times=starts))
            except BaseException:  # the overlay goes too: a failed join leaves nothing that looks finished
                _remove(outputs.values())
                raise
            if process_kwargs.get("overwrite"):
                _remove_stale_tracks(out, stem, process_kwargs, list(outputs.values()))
    finally:  # joined or failed: the segments go (a failed run leaves nothing that looks finished)
        shutil.rmtree(out / SEGMENTS_DIR, ignore_errors=True)
    return RunSummary(source=str(source), frames=frames, seconds=time.perf_counter() - t0, outputs=outputs,
                      stage_seconds=stages, damaged_packets=damaged, batch_size=batch_size, model_frames=model_frames)
