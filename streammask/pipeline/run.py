"""``process_video``: a whole file through the pipeline, streaming, in bounded memory.

validate -> preflight (names, existing files, the output folder) -> load the model -> size
the batches -> open the outputs (:class:`~streammask.pipeline.outputs.OutputSet`) -> the loop:
a decode thread (and, on CUDA, the upload) ahead of the caller's thread, which runs the model
and the post-processing, then one encoder thread per output file; all connected by bounded
queues, with a progress bar and a :class:`RunSummary` at the end.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..io.video import probe, read_batches
from ..io.matte import resolve_matte_style
from ..io.writers import FORMATS, output_look
from ..model.batch_size import choose_batch_size
from ..model.clipseg import load_from_settings
from ..model.prompts import count_prompts
from ..model.threads import ThreadTuner
from ..refine import MatteRefiner
from ..temporal.keyframes import REDUCE_PARAMS
from ..temporal.smoothers import TEMPORAL_PARAMS
from ..variants import VariantOutput, check_prompt
from ..errors import ParameterError
from .core import MaskPipeline, Segmenter
from .instances import TRACK_KINDS, InstanceOutputs, check_instances, preflight_instances
from .outputs import OutputSet
from .preflight import (ensure_output_dir, fit_batch_to_memory, missing_folders, preflight_outputs, queue_slots,
                        remove_empty_folders)
from .ranges import FrameRange, range_batches
from .settings import RUN_PARAMS, normalize_variants, with_threshold
from .threads import StageTimer, prefetch
from .transfer import upload_batches

__all__ = ["RunSummary", "process_video", "ONE_OFF_STAGES"]

log = logging.getLogger("streammask")

ONE_OFF_STAGES = ("load model",)
SEGMENT_STAGE = "segment + post-process"
"""Stages that run once per run, not per frame: the summary gives them no rate."""


@dataclass
class RunSummary:
    """What :func:`process_video` did."""

    source: str
    frames: int
    seconds: float
    outputs: dict[str, Path]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    text_encodes: int | None = None
    damaged_packets: int = 0
    batch_size: int | None = None  # the batch size used (chosen automatically unless given)
    model_frames: int | None = None  # frames the model ran on, with --stride / --skip-static (None: every frame)
    wait_seconds: dict[str, float] = field(default_factory=dict)  # per stage: blocked on a neighbouring stage
    model_threads: str | None = None  # on a CPU: the model's thread count, fixed or tuned
    header_frames: int | None = None  # the frame count the container's header announces (an estimate)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    @property
    def ended_early(self) -> bool:
        """Whether the clip ended well short (more than 5 %, at least 2 frames) of its header's frame count
        (a header that lies, or a file cut short)."""
        return (self.header_frames is not None and self.frames < self.header_frames
                and self.header_frames - self.frames >= max(2, 0.05 * self.header_frames))

    @property
    def slowest_stage(self) -> str | None:
        """The per-frame stage with the most work time: what bounds the run (one-off steps left out)."""
        per_frame = {k: v for k, v in self.stage_seconds.items() if k not in ONE_OFF_STAGES}
        return max(per_frame, key=per_frame.get) if per_frame else None

    def describe(self) -> str:
        lines = [f"{self.frames} frames in {self.seconds:.2f} s ({self.fps:.2f} frames/s end to end)"]
        if self.ended_early:
            lines.append(f"  ended early: {self.frames} of {self.header_frames} frames the header announces")
        if self.stage_seconds:
            lines.append(f"  {'stage':<28} {'work':>10}  {'frames/s':>9}  {'waiting':>10}")
        slowest = self.slowest_stage
        for stage, sec in sorted(self.stage_seconds.items()):
            if stage in ONE_OFF_STAGES:
                lines.append(f"  {stage:<28} {sec:8.2f} s  {'(once)':>9}")
                continue
            rate = f"{self.frames / sec:9.1f}" if sec > 0 else f"{'-':>9}"
            wait = self.wait_seconds.get(stage)
            waited = f"{wait:8.2f} s" if wait is not None else ""
            mark = "  <- slowest" if stage == slowest and len(self.stage_seconds) > 1 else ""
            lines.append(f"  {stage:<28} {sec:8.2f} s  {rate}  {waited:>10}{mark}")
        if self.model_frames is not None:
            lines.append(f"  model ran on {self.model_frames} of {self.frames} frames (--stride / --skip-static)")
        if self.damaged_packets:
            lines.append(f"  skipped {self.damaged_packets} damaged packet(s) in the input (--strict makes this an error)")
        if self.model_threads:
            lines.append(f"  {self.model_threads}")
        for key, path in self.outputs.items():
            lines.append(f"  wrote {key:<22} {path}")
        return "\n".join(lines)


def _copy_ahead(device: torch.device) -> int:
    """Rendered batches :func:`process_video` keeps in flight before handing them to the
    encoders: 1 on CUDA (their device -> host copies overlap the next batch's compute), 0
    elsewhere (the copies are synchronous: holding a batch back would only delay it)."""
    return 1 if torch.device(device).type == "cuda" else 0


def _stack_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """``(N, H, W, C)`` from N ``(H, W, C)`` frames: a view, not a copy, when they are
    consecutive rows of one array (a decoded batch without look-ahead, the usual case)."""
    base = rows[0].base
    if isinstance(base, np.ndarray) and base.ndim == rows[0].ndim + 1 and base.flags.c_contiguous \
            and base.shape[1:] == rows[0].shape:
        step = base.strides[0]
        offset = rows[0].ctypes.data - base.ctypes.data
        start = offset // step
        if offset % step == 0 and start + len(rows) <= len(base) and all(
                r.base is base and r.ctypes.data == base.ctypes.data + (start + k) * step for k, r in enumerate(rows)):
            return base[start:start + len(rows)]
    return np.stack(rows)


def _select(result: VariantOutput, keep: list[int]) -> VariantOutput:
    """The frames ``keep`` of a batch's variant output."""
    return VariantOutput(mask=result.mask[keep], heatmap=None if result.heatmap is None else result.heatmap[keep],
                         extra={k: v[keep] for k, v in result.extra.items()})


def _progress(total: int | None, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="frame", desc=desc, disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.25, smoothing=0.1)


def _validate(source: str | os.PathLike, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The run settings (every :data:`RUN_PARAMS` key, defaults filled in) and the validated variants."""
    threshold = RUN_PARAMS["threshold"].validate(settings.get("threshold"))
    variant_params = normalize_variants(with_threshold(settings.pop("variants", RUN_PARAMS["variants"].default),
                                                       threshold))
    for key in ("out_dir", "model", "background"):
        if settings.get(key) is not None:
            settings[key] = os.fspath(settings[key])
    settings = RUN_PARAMS.validate(dict(settings, variants=tuple(variant_params)))
    settings["matte_style"] = resolve_matte_style(settings["matte_style"], settings["matte_format"])  # auto
    check_prompt(settings["prompt"])
    return settings, variant_params


def _batch_sizes(settings: dict[str, Any], segmenter: Segmenter, info, variant_params) -> tuple[int, int]:
    """The batch size (given, or automatic for the device, then fitted to ``max_batch_mb``) and
    the decode queue's slots."""
    chosen = choose_batch_size(
        settings["batch_size"] if settings["batch_size"] is not None else getattr(segmenter, "preferred_batch_size",
                                                                                  None),
        device=segmenter.device, frame_hw=(info.height, info.width),
        dtype=getattr(segmenter, "dtype", torch.float32), model_side=getattr(segmenter, "size", 352),
        prompts=count_prompts(settings["prompt"]), variants=len(variant_params))
    # large frames: fewer per batch and per queue, so memory stays within max_batch_mb
    batch_size = fit_batch_to_memory(chosen, width=info.width, height=info.height,
                                     max_batch_mb=settings["max_batch_mb"])
    decode_slots = queue_slots(settings["queue_size"], batch_size * info.width * info.height * 3,
                               max_batch_mb=settings["max_batch_mb"])
    return batch_size, decode_slots


def _open_outputs(outputs: OutputSet, planned, settings: dict[str, Any], info, look, *, source, batch_size: int,
                  streamed_audio: bool) -> None:
    pixels = batch_size * info.width * info.height
    for (name, kind), path in planned.items():
        fmt = settings[f"{kind}_format"]
        outputs.open((name, kind), kind, fmt, path, width=info.width, height=info.height, rate=info.frame_rate,
                     time_base=info.time_base, channels=look["channels"].get(kind),
                     slots=queue_slots(settings["queue_size"], pixels * FORMATS[kind][fmt].channels,
                                       max_batch_mb=settings["max_batch_mb"]),
                     # a segment has no audio: the join copies the source's audio once
                     audio_source=source if settings["audio"] and streamed_audio else None,
                     audio_to_video_end=settings["max_frames"] is not None, preset=settings["encoder_preset"],
                     vp9_deadline=settings["vp9_deadline"], vp9_cpu_used=settings["vp9_cpu_used"])


class _Handover:
    """Rendered batches on their way to the encoders.

    Each batch the pipeline returns is rendered (only the frames a frame range writes: warm-up and
    look-ahead frames are not) and queued; on CUDA its device -> host copies may still run, so it is
    handed to the encoders ``ahead`` batches later and the host does not wait for the GPU while it
    has queued work.
    """

    def __init__(self, pipe: MaskPipeline, outputs: OutputSet, settings: dict[str, Any], look: dict[str, Any],
                 kinds: Sequence[str], *, frame_range: FrameRange | None, timer: StageTimer, ahead: int,
                 instances: InstanceOutputs | None = None) -> None:
        self.pipe, self.outputs, self.settings, self.look, self.kinds = pipe, outputs, settings, look, kinds
        self.frame_range, self.timer, self.ahead = frame_range, timer, ahead
        self.instances = instances  # instances="separate": per-object tracks instead of the union
        self.in_flight: deque = deque()
        self.blocked = 0.0  # seconds handing batches over waited for full encoder queues

    def emit(self, results, x, payload) -> None:
        """Render a batch of ``(pts, host frame, host 16-bit frame, frame index)`` payload items and queue it."""
        if not payload:
            return
        keep = None
        rng = self.frame_range
        if rng is not None:  # warm-up and look-ahead frames are not written
            keep = [i for i, item in enumerate(payload) if rng.start <= item[3] < rng.end]
            if not keep:
                return
            payload = [payload[i] for i in keep]
        if self.instances is not None:  # a frame range with separate instances has no warm-up: every frame is kept
            if keep is not None and len(keep) != len(self.pipe.stream.last_instances):
                raise RuntimeError(f"{len(keep)} frames to write but {len(self.pipe.stream.last_instances)} frames "
                                   "of instances")
            self.blocked += self.instances.emit(x, payload)
            return
        pts = [item[0] for item in payload]
        host = _stack_rows([item[1] for item in payload]) if "matte" in self.kinds else None
        host16 = np.stack([item[2] for item in payload]) if payload[0][2] is not None else None
        bg = None
        if self.look["background"] is not None:  # by the clip's frame index: a segment's frames as in one pass
            bg = self.look["background"].take(len(pts), indices=[item[3] for item in payload])
        rendered = {name: self.pipe.render(x if keep is None else x[keep], res if keep is None else _select(res, keep),
                                           self.kinds, host_frames=host, bits=self.look["bits"], background=bg,
                                           host_frames16=host16, defer_matte=True, defer_copy=True,
                                           matte_style=self.settings["matte_style"], matte_color=self.look["color"])
                    for name, res in results.items()}
        self.in_flight.append((rendered, pts))
        self._hand_over(self.ahead)

    def drain(self) -> None:
        """Hand every queued batch to the encoders."""
        self._hand_over(0)

    def discard(self) -> None:
        self.in_flight.clear()

    def _hand_over(self, keep: int) -> None:
        while len(self.in_flight) > keep:
            rendered, pts = self.in_flight.popleft()
            t0 = time.perf_counter()
            done = {name: pending.result() for name, pending in rendered.items()}
            if self.ahead:  # time the host still waited for copies that ran behind the next batch's compute
                self.timer.add("device -> host wait", time.perf_counter() - t0)
            for name, per_kind in done.items():
                for kind, arr in per_kind.items():
                    self.blocked += self.outputs.put((name, kind), (arr, pts))


def _thread_tuner(settings: dict[str, Any], device) -> ThreadTuner | None:
    """On a CPU the model's threads are fixed (``threads``) or tuned while the clip runs; elsewhere untouched."""
    if torch.device(device).type != "cpu":
        return None
    return ThreadTuner(settings["threads"])


def _reader(source, settings: dict[str, Any], *, frame_range: FrameRange | None, delay: int, batch_size: int,
            stats: dict[str, int], deep: bool):
    """The decoded batches: the whole clip (at most ``max_frames``), or a frame range with its warm-up."""
    if frame_range is None:
        return read_batches(source, batch_size=batch_size, max_frames=settings["max_frames"],
                            strict=settings["strict"], stats=stats, deep=deep)
    return range_batches(source, frame_range, delay=delay, batch_size=batch_size, strict=settings["strict"],
                         stats=stats, deep=deep)


def process_video(
    source: str | os.PathLike,
    *,
    segmenter: Segmenter | None = None,
    on_batch: Callable[[int, int | None], None] | None = None,
    frame_range: FrameRange | None = None,
    **settings: Any,
) -> RunSummary:
    """Mask a whole video with a text prompt, streaming, in bounded memory.

    One decode and one model call per batch feed every requested variant's
    outputs. Each output is written under a temporary name and renamed when
    complete; on any error (or ``KeyboardInterrupt``) every partial file is
    removed, unless ``keep_partial``: then the outputs written so far are
    finalized under their final names (playable). The original exception
    reaches the caller either way. Damaged packets in the input are skipped
    and counted (:attr:`RunSummary.damaged_packets`) unless ``strict``.

    Args:
        source: input video file.
        segmenter: an already loaded model (or a test oracle); ``model`` is then ignored.
        on_batch: called as ``on_batch(frames_done, total_or_None)`` after each batch (GUI
            progress); an exception it raises stops the run like any other error (cancel).
        frame_range: a :class:`~streammask.pipeline.ranges.FrameRange`: write only frames
            ``[start, end)`` (source pts kept), after seeking and warming up temporal state
            (see :mod:`streammask.batch.segments`); ``max_frames`` is then ignored. With
            ``instances="separate"`` the range must be read exactly, without warm-up frames (the
            tracker's state comes from ``state``); the tracks still open at its end and the clip's
            first frame go to ``state_out["instances"]`` for the next segment.
        settings: the run settings, each declared once in :data:`~streammask.RUN_PARAMS` (the
            signature lists them with their defaults; each is a ``streammask run`` flag and a
            pipeline-file key): ``prompt`` (required; ``|`` separates several), ``out_dir``
            (files are named ``{stem}.{variant}.{kind}.{ext}``), ``variants`` (names or
            ``{name: params}``, see :data:`~streammask.variants.VARIANTS`), ``outputs``
            (``mask``, ``heatmap``, ``matte``), ``model`` / ``revision`` / ``device`` / ``dtype``
            (see :func:`~streammask.load_clipseg`), ``batch_size`` (``None``: automatic,
            :func:`~streammask.model.batch_size.choose_batch_size`), ``temporal`` and its
            parameters (``ema_alpha``, ``window``, ``flow_strength``, ...), the model speed
            options (``attn_implementation``, ``channels_last``, ``compile``), the reduced-work
            options (``stride``, ``skip_static``, ``static_psnr``), the output formats, and SAM 3's
            ``instances`` (``union`` / ``separate``: per-object tracks and a JSON sidecar, see
            :mod:`streammask.pipeline.instances`), ``sam3_max_objects`` and ``sam3_forget_after``.

    Returns:
        A :class:`RunSummary`.
    """
    settings, variant_params = _validate(source, settings)
    refiner = MatteRefiner.from_settings(settings)  # checks clip_black < clip_white before any work
    separate = settings["instances"] == "separate"
    if separate:
        check_instances(settings, segmenter, variants=variant_params)  # before the model loads: CLIPSeg has no instances
        if frame_range is not None and (frame_range.warmup_start != frame_range.start or not frame_range.exact):
            # a segment's tracker sees exactly the frames it writes (handed over from the previous segment)
            rng = frame_range
            raise ParameterError("frame_range", f"[{rng.start}, {rng.end}) warm-up from {rng.warmup_start}, "
                                 f"exact={rng.exact}", "a range read exactly (exact=True) and without warm-up "
                                 "frames with instances='separate': every frame the tracker sees is written "
                                 "(split clips with process_segments(handover=True))")
    info = probe(source)
    kinds = settings["outputs"]
    look = output_look(settings, info, kinds)
    # before any work: names stay in out_dir, nothing replaces the input or (without overwrite) an existing file
    if separate:  # the per-object tracks are named as ids appear; the heatmap is one overlay per variant
        preflight_instances(source, settings, list(variant_params))
    planned = preflight_outputs(source, settings["out_dir"], variants=variant_params,
                                kinds=[k for k in kinds if k not in TRACK_KINDS] if separate else kinds,
                                formats={k: settings[f"{k}_format"] for k in ("mask", "heatmap", "matte")},
                                template=settings["output_template"], overwrite=settings["overwrite"])
    created = missing_folders(settings["out_dir"])
    try:
        ensure_output_dir(settings["out_dir"])
        return _stream(source, settings, variant_params, info, look, planned, refiner, segmenter=segmenter,
                       on_batch=on_batch, frame_range=frame_range)
    except BaseException:
        remove_empty_folders(created)  # a refused or failed run leaves no empty output folder behind
        raise


def _stream(source, settings: dict[str, Any], variant_params: dict[str, dict[str, Any]], info, look,
            planned: dict[tuple[str, str], Path], refiner: MatteRefiner | None, *, segmenter: Segmenter | None,
            on_batch: Callable[[int, int | None], None] | None, frame_range: FrameRange | None) -> RunSummary:
    """Load the model (unless given), size the batches, open the outputs, stream the clip through."""
    kinds = settings["outputs"]
    t_start = time.perf_counter()
    timer = StageTimer()
    if segmenter is None:
        t0 = time.perf_counter()
        segmenter = load_from_settings(settings)
        timer.add("load model", time.perf_counter() - t0)
    pipe = MaskPipeline(segmenter, prompt=settings["prompt"], variants=variant_params,
                        heatmap_alpha=settings["heatmap_alpha"], colormap=settings["colormap"],
                        refiner=refiner, refine_mattes="matte" in kinds,
                        **{p.name: settings[p.name] for p in (*TEMPORAL_PARAMS, *REDUCE_PARAMS)})
    check_instances(settings, segmenter, variants=variant_params)
    batch_size, decode_slots = _batch_sizes(settings, segmenter, info, variant_params)
    settings["batch_size"] = batch_size
    max_frames = settings["max_frames"]

    stem = Path(source).stem
    outputs = OutputSet(timer=timer)
    stop = threading.Event()
    # the header's count is an estimate (containers lie): the bar starts from it and ends at the frames there were
    header_total = info.num_frames if max_frames is None or info.num_frames is None else min(info.num_frames,
                                                                                             max_frames)
    total = header_total
    if frame_range is not None:
        total = frame_range.end - frame_range.start
        header_total = None
        if frame_range.state:
            pipe.load_stream_state(frame_range.state)
    bar = _progress(total, settings["progress"], f"{stem} [{','.join(variant_params)}]")
    instances = None
    handover = _Handover(pipe, outputs, settings, look, kinds, frame_range=frame_range, timer=timer,
                         ahead=_copy_ahead(segmenter.device))

    tuner = _thread_tuner(settings, segmenter.device)
    frames_done = 0
    read_stats: dict[str, int] = {}
    try:
        _open_outputs(outputs, planned, settings, info, look, source=source, batch_size=batch_size,
                      streamed_audio=frame_range is None)
        if settings["instances"] == "separate":
            instances = handover.instances = InstanceOutputs(pipe, outputs, settings, info, look, source=source,
                                                             batch_size=batch_size, frame_range=frame_range)
        deep = "matte" in kinds and look["bits"].get("matte") == 16 and settings["matte_style"] != "alpha"
        reader = _reader(source, settings, frame_range=frame_range, delay=pipe.delay, batch_size=batch_size,
                         stats=read_stats, deep=deep)
        # on CUDA the decode thread also copies each batch to the device (its own stream), ahead of the model
        batches = prefetch(upload_batches(reader, segmenter.device), maxsize=decode_slots, name="decode",
                           timer=timer, stop=stop)
        waited_for_decode = time.perf_counter()
        for batch, on_device in batches:
            t0 = time.perf_counter()
            timer.wait(SEGMENT_STAGE, t0 - waited_for_decode)  # nothing to do: decoding is slower
            blocked = handover.blocked
            if tuner is not None:
                tuner.before_batch()
            frames = batch.frames if on_device is None else on_device.get()
            deep16 = batch.frames16 if batch.frames16 is not None else [None] * len(batch)
            handover.emit(*pipe.process_stream(frames, list(zip(batch.pts, batch.frames, deep16,
                                                                range(batch.start, batch.start + len(batch))))))
            blocked = handover.blocked - blocked  # no room for the results: an encoder is slower
            work = time.perf_counter() - t0 - blocked
            timer.add(SEGMENT_STAGE, work)
            if tuner is not None:
                tuner.after_batch(work, frames=len(batch))
            timer.wait(SEGMENT_STAGE, blocked)
            n_written = len(batch) if frame_range is None else sum(
                frame_range.start <= i < frame_range.end for i in range(batch.start, batch.start + len(batch)))
            frames_done += n_written
            bar.update(n_written)
            if on_batch is not None:
                on_batch(frames_done, total)
            waited_for_decode = time.perf_counter()
        if frame_range is not None:
            frame_range.state_out = pipe.stream_state()
        handover.emit(*pipe.flush_stream())
        handover.drain()
        if bar.total != frames_done:  # the header's count was wrong: end the bar at what was there
            bar.total = frames_done
            bar.refresh()
        paths = outputs.close()
        if instances is not None:
            paths.update(instances.close())
            if settings["overwrite"]:
                instances.remove_stale(list(paths.values()))
            if frame_range is not None:  # the next segment goes on with the tracks still open
                frame_range.state_out["instances"] = instances.handover_state()
    except BaseException:
        stop.set()
        if settings["keep_partial"]:
            try:  # the batches already rendered are part of what was written so far
                handover.drain()
            except Exception:
                handover.discard()
            outputs.finalize_partial()
            if instances is not None:
                try:
                    instances.close()
                except Exception:
                    instances.abort()
        else:
            outputs.abort()
            if instances is not None:
                instances.abort()
        raise
    finally:
        bar.close()
        if tuner is not None:
            tuner.restore()
    summary = RunSummary(source=str(source), frames=frames_done, seconds=time.perf_counter() - t_start,
                         outputs=paths, stage_seconds=dict(timer.seconds),
                         text_encodes=getattr(segmenter, "text_encode_calls", None),
                         damaged_packets=read_stats.get("damaged_packets", 0), batch_size=batch_size,
                         model_frames=pipe.reducer.counts["model"] if pipe.reducer.enabled else None,
                         wait_seconds=dict(timer.waits), header_frames=header_total,
                         model_threads=tuner.describe() if tuner is not None else None)
    if summary.ended_early:
        log.warning("%s ended after %d of the %d frames its header announces (the header is wrong, or the file "
                    "is cut short); every decodable frame was processed", source, frames_done, header_total)
    return summary


def _signature() -> inspect.Signature:
    """``process_video``'s signature with every run setting and its default, from :data:`RUN_PARAMS`
    (declared once there: ``help(process_video)`` and editors show them)."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("source", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params.append(inspect.Parameter("prompt", kw))
    params += [inspect.Parameter(p.name, kw, default=p.default) for p in RUN_PARAMS if p.name != "prompt"]
    params += [inspect.Parameter(name, kw, default=None) for name in ("segmenter", "on_batch", "frame_range")]
    return inspect.Signature(params, return_annotation=RunSummary)


process_video.__signature__ = _signature()
