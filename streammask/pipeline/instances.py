"""``instances="separate"``: one mask / matte track per tracked object id, an instance overlay, a JSON sidecar.

With SAM 3 (:class:`~streammask.model.sam3.Sam3Segmenter`) every instance has an id that stays the same for
as long as the object is tracked. ``instances="union"`` (the default) gives each variant one mask: the union
of every prompt's instances. ``instances="separate"`` instead writes, per variant:

* ``mask`` and ``matte``: one track per object id, named by rendering the output template with
  ``{variant}`` = ``VARIANT.idN`` (``clip.soft.id3.mask.mp4``). A track is opened when its id first appears
  and starts at the run's first frame (the frames before the id appeared are written empty: mask 0,
  matte transparent, or the plain matte colour / background for the styles without alpha), so every track
  lines up frame for frame with the clip; any frame the id is not listed in is written empty the same way,
  whatever batch it is in; it ends with the frame after which the object is retired (``sam3_forget_after``
  frames after it was last seen; the frames since are empty) or at the clip's end. A segment of a split clip
  (a frame range) writes the tracks open in it, see :class:`InstanceOutputs`;
* ``heatmap``: one video, the frame with each object's mask tinted in its id's colour;
* ``{stem}.sam3.instances.json`` (the template with ``{variant}`` = ``sam3``, ``{kind}`` = ``instances``):
  the ids, prompts, scores and boxes of every frame (:class:`~streammask.io.instances.InstanceSidecar`).

The variant's post-processing (``soft``: threshold, binary, blur, dilate, invert) applies to each object's
mask on its own. Temporal smoothing and ``stride`` / ``skip_static`` work on the union only and are refused
with ``separate``.
"""

from __future__ import annotations

import glob
import os
import shutil
from array import array
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import OutputExistsError, ParameterError
from ..io.instances import InstanceSidecar
from ..io.video import frame_pts
from ..io.matte import MatteBatch
from ..io.writers import FORMATS
from ..model.sam3 import is_sam3_model
from ..variants import VariantOutput, get_variant
from .outputs import OutputSet
from .preflight import queue_slots, render_output_name
from .ranges import FrameRange

__all__ = ["INSTANCE_MODES", "check_instances", "instance_names", "InstanceOutputs", "TRACK_KINDS"]

INSTANCE_MODES = ("union", "separate")
TRACK_KINDS = ("mask", "matte")  # per object id; the heatmap is one overlay of every object
SIDECAR_VARIANT, SIDECAR_KIND = "sam3", "instances"

# tab10: the id's colour in the overlay (id modulo 10)
_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
_NO_OBJECT = -20.0


def check_instances(settings: Mapping[str, Any], segmenter: Any = None, *,
                    variants: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Refuse ``instances="separate"`` where it cannot work (before any output is opened).

    Args:
        settings: the run settings.
        segmenter: the loaded model; ``None``: judged from ``settings["model"]`` (its config).
        variants: the validated ``{variant: params}`` (``invert`` is refused with separate tracks).

    Raises:
        ParameterError: the model has no instances (CLIPSeg), or a setting works on the union only.
    """
    if settings.get("instances", "union") != "separate":
        return
    has_instances = (is_sam3_model(settings.get("model"), settings.get("revision")) if segmenter is None else
                     getattr(segmenter, "stateful", False) and hasattr(segmenter, "open_stream"))
    if not has_instances:
        raise ParameterError("instances", "separate", "'union' with this model (CLIPSeg gives one probability map "
                             "per prompt, no instances); separate instances need SAM 3 (--model facebook/sam3)")
    if settings.get("temporal", "none") != "none":
        raise ParameterError("temporal", settings["temporal"], "'none' with instances='separate' (SAM 3 tracks "
                             "each object itself; the smoothers work on the union mask)")
    for name, params in (variants or {}).items():
        if params.get("invert"):
            raise ParameterError(f"{name}.invert", True, "False with instances='separate' (an object's track is "
                                 "empty where the object is absent, which inverted would be the whole picture: "
                                 "invert the track in the compositor, or use instances='union')")
    if int(settings.get("stride") or 1) > 1 or settings.get("skip_static"):
        raise ParameterError("stride" if int(settings.get("stride") or 1) > 1 else "skip_static",
                             settings.get("stride") if int(settings.get("stride") or 1) > 1 else True,
                             "1 / off with instances='separate' (frames between key frames carry the union mask, "
                             "not the objects')")


def instance_names(template: str, *, stem: str, variant: str, obj_id: int | str, kind: str) -> str:
    """The base name of object ``obj_id``'s track (the format's suffix is added by the writer)."""
    return render_output_name(template, stem=stem, variant=f"{variant}.id{obj_id}", kind=kind)


def sidecar_path(out_dir: str | os.PathLike, template: str, stem: str) -> Path:
    return Path(out_dir) / (render_output_name(template, stem=stem, variant=SIDECAR_VARIANT, kind=SIDECAR_KIND)
                            + ".json")


def existing_tracks(out_dir: str | os.PathLike, template: str, *, stem: str, variants: Sequence[str],
                    kinds: Sequence[str], formats: Mapping[str, str]) -> list[Path]:
    """Files in ``out_dir`` that look like per-object tracks of these variants and kinds (an earlier run's)."""
    found: list[Path] = []
    for variant in variants:
        for kind in kinds:
            if kind not in TRACK_KINDS:
                continue
            suffix = FORMATS[kind][formats[kind]].suffix
            pattern = glob.escape(instance_names(template, stem=stem, variant=variant, obj_id="@", kind=kind))
            pattern = pattern.replace("@", "[0-9]*") + glob.escape(suffix)
            found += sorted(Path(p) for p in glob.glob(os.path.join(glob.escape(os.fspath(out_dir)), pattern)))
    return found


def preflight_instances(source: str | os.PathLike, settings: Mapping[str, Any], variants: Sequence[str]) -> None:
    """Before any work: without ``overwrite``, refuse when the sidecar or a per-object track exists already."""
    if settings["overwrite"]:
        return
    stem = Path(source).stem
    template = settings["output_template"]
    side = sidecar_path(settings["out_dir"], template, stem)
    formats = {k: settings[f"{k}_format"] for k in ("mask", "heatmap", "matte")}
    found = ([side] if side.exists() else []) + existing_tracks(settings["out_dir"], template, stem=stem,
                                                                variants=variants, kinds=settings["outputs"],
                                                                formats=formats)
    if found:
        raise OutputExistsError(f"output {str(found[0])!r} exists (from an earlier run with instances='separate'); "
                                "pass --overwrite to replace it")


def _tint(frames: torch.Tensor, masks: Sequence[torch.Tensor], ids: Sequence[int], alpha: float) -> torch.Tensor:
    """``(B, 3, H, W)`` uint8: each object's ``(B, 1, H, W)`` mask laid over the frames in its id's colour."""
    out = frames.float()
    for obj_id, mask in zip(ids, masks):
        colour = torch.tensor(_PALETTE[obj_id % len(_PALETTE)], dtype=torch.float32, device=out.device).view(1, 3, 1, 1)
        a = mask.clamp(0, 1) * alpha
        out = out * (1 - a) + colour * a
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _runs(flags: Sequence[bool]) -> list[tuple[int, int, bool]]:
    """``[(start, end, flag), ...]``: the runs of equal consecutive ``flags``."""
    runs: list[tuple[int, int, bool]] = []
    for i, flag in enumerate(flags):
        if runs and runs[-1][2] == flag:
            runs[-1] = (runs[-1][0], i + 1, flag)
        else:
            runs.append((i, i + 1, flag))
    return runs


class InstanceOutputs:
    """The per-object tracks, the overlay and the sidecar of one run (``instances="separate"``).

    :func:`~streammask.process_video` hands it each batch (:meth:`emit`) instead of rendering the union.

    Args:
        pipe: the run's :class:`~streammask.pipeline.MaskPipeline` (its stream holds the instances).
        outputs: the run's :class:`~streammask.pipeline.outputs.OutputSet` (the overlay is opened there
            already, as ``(variant, "heatmap")``; tracks are added as ids appear).
        settings: the validated run settings.
        info: the clip's :class:`~streammask.io.video.VideoInfo`.
        look: :func:`~streammask.io.writers.output_look` of the run.
        source: the input (its stem names the outputs).
        batch_size: frames per batch (the queues and the empty frames written at a track's start).
        frame_range: a segment of a split clip (:class:`~streammask.pipeline.ranges.FrameRange`, read exactly,
            without warm-up frames): its tracks and sidecar cover frames ``[start, end)``, except that a track
            opened in it (its id first appears here) starts at the clip's first frame, as in one pass (the
            empty frames before the segment are written here too, with their source ``pts`` from the range's
            ``index``). The ids whose tracks are open at the segment's start come from the previous segment
            (``frame_range.state["instances"]``, see :meth:`handover_state`): their tracks go on, without
            empty frames before them. Joining the segments' tracks (:func:`~streammask.batch.segments.process_segments`)
            then gives the one-pass tracks.
    """

    def __init__(self, pipe, outputs: OutputSet, settings: Mapping[str, Any], info, look: Mapping[str, Any], *,
                 source: str | os.PathLike, batch_size: int, frame_range: FrameRange | None = None) -> None:
        self.pipe, self.outputs, self.settings, self.info, self.look = pipe, outputs, settings, info, look
        self.stem = Path(source).stem
        self.kinds = [k for k in settings["outputs"] if k in TRACK_KINDS]
        self.overlay = "heatmap" in settings["outputs"]
        self.batch_size = batch_size
        self.open_ids: set[int] = set()
        self.closed: dict[str, Path] = {}
        self.pts = array("q")  # pts of every frame written so far (8 bytes a frame): a new track's empty start
        self.first_index: int | None = None
        self.blocked = 0.0  # seconds spent waiting for full encoder queues
        out_dir = Path(settings["out_dir"])
        self.sidecar = InstanceSidecar(sidecar_path(out_dir, settings["output_template"], self.stem),
                                       width=info.width, height=info.height, frame_rate=info.frame_rate,
                                       time_base=info.time_base,
                                       header={"source": os.fspath(source), "model": getattr(pipe.segmenter, "name", ""),
                                               "prompt": pipe.prompt, "variants": list(pipe.variants)})
        if frame_range is not None:
            self._continue(frame_range, source)

    def _continue(self, frame_range: FrameRange, source: str | os.PathLike) -> None:
        """A segment: the clip's frames before it (a new track's empty start) and the tracks still open."""
        previous = (frame_range.state or {}).get("instances")
        first = frame_range.start if previous is None else int(previous["first_frame"])
        index = frame_range.index if frame_range.index is not None else frame_pts(source)
        frame_range.index = index
        self.first_index = first
        self.pts = array("q", (int(p) for p in index[first:frame_range.start]))
        for obj_id in (previous or {}).get("open_ids", ()):
            self._open(int(obj_id), empty_start=False)

    def handover_state(self) -> dict[str, Any]:
        """What the next segment of a split clip needs (after the last frame): the clip's first frame (where a
        track opened later starts) and the ids whose tracks are open (not retired)."""
        return {"first_frame": self.first_index, "open_ids": sorted(self.open_ids)}

    # -- tracks -----------------------------------------------------------------------------------------------------
    def _key(self, variant: str, obj_id: int) -> str:
        return f"{variant}.id{obj_id}"

    def _open(self, obj_id: int, *, empty_start: bool = True) -> None:
        settings, info = self.settings, self.info
        pixels = self.batch_size * info.width * info.height
        for variant in self.pipe.variants:
            for kind in self.kinds:
                fmt = settings[f"{kind}_format"]
                name = instance_names(settings["output_template"], stem=self.stem, variant=variant, obj_id=obj_id,
                                      kind=kind)
                path = Path(settings["out_dir"]) / (name + FORMATS[kind][fmt].suffix)
                self.outputs.open((self._key(variant, obj_id), kind), kind, fmt, path, width=info.width,
                                  height=info.height, rate=info.frame_rate, time_base=info.time_base,
                                  channels=self.look["channels"].get(kind),
                                  slots=queue_slots(settings["queue_size"], pixels * FORMATS[kind][fmt].channels,
                                                    max_batch_mb=settings["max_batch_mb"]),
                                  preset=settings["encoder_preset"], vp9_deadline=settings["vp9_deadline"],
                                  vp9_cpu_used=settings["vp9_cpu_used"])
        self.open_ids.add(obj_id)
        if not empty_start:  # a track continued from the previous segment
            return
        # the frames before the object appeared: empty, so the track lines up with the clip from its first frame
        for start in range(0, len(self.pts), self.batch_size):
            pts = list(self.pts[start:start + self.batch_size])
            indices = [self.first_index + start + i for i in range(len(pts))]
            self._put_empty(obj_id, pts, indices)

    def _empty(self, kind: str, n: int, indices: Sequence[int]):
        h, w = self.info.height, self.info.width
        depth = np.uint16 if self.look["bits"].get(kind, 8) == 16 else np.uint8
        mask = np.zeros((n, h, w, 1), depth)
        if kind == "mask":
            return mask
        bg = None
        if self.look["background"] is not None:
            bg = self.look["background"].take(n, indices=list(indices))
        return MatteBatch(np.zeros((n, h, w, 3), np.uint8), mask, style=self.settings["matte_style"],
                          color=self.look["color"], background=bg)

    def _put_empty(self, obj_id: int, pts: list[int], indices: Sequence[int]) -> None:
        for variant in self.pipe.variants:
            for kind in self.kinds:
                self._put((self._key(variant, obj_id), kind), (self._empty(kind, len(pts), indices), pts))

    # -- batches ----------------------------------------------------------------------------------------------------
    def emit(self, x: torch.Tensor, payload: Sequence[tuple]) -> float:
        """Write one batch: ``x`` the ``(N, 3, H, W)`` device frames, ``payload`` their ``(pts, host frame, host
        16-bit frame, clip index)`` items, in the order the stream's ``last_instances`` holds them.

        Returns:
            The seconds spent waiting for full encoder queues.
        """
        blocked = self.blocked
        frames = self.pipe.stream.last_instances
        if len(frames) != len(payload):
            raise RuntimeError(f"{len(payload)} frames to write but {len(frames)} frames of instances")
        pts = [int(item[0]) for item in payload]
        indices = [int(item[3]) for item in payload]
        h, w = self.info.height, self.info.width
        for inst, p in zip(frames, pts):
            boxes = inst.boxes(h, w).tolist() if inst.ids else []
            self.sidecar.write_frame(inst.frame, p, [
                {"id": i, "prompt": t, "score": round(s, 4), "tracker_score": round(ts, 4), "box": [int(v) for v in b]}
                for i, t, s, ts, b in zip(inst.ids, inst.prompts, inst.scores, inst.tracker_scores, boxes)])
        visible = sorted({i for inst in frames for i in inst.ids})
        for obj_id in visible:
            if obj_id not in self.open_ids:
                self._open(obj_id)
        host = np.stack([item[1] for item in payload]) if "matte" in self.kinds else None
        host16 = np.stack([item[2] for item in payload]) if payload[0][2] is not None else None
        bg = None
        if self.look["background"] is not None and "matte" in self.kinds:
            bg = self.look["background"].take(len(pts), indices=indices)
        side = self.pipe.segmenter.size
        stops: dict[int, int] = {}  # a track ends with the frame its object is retired after, mid-batch too
        for b, inst in enumerate(frames):
            for obj_id in inst.retired:
                stops.setdefault(int(obj_id), b + 1)
        for variant, params in self.pipe.variants.items():
            v = get_variant(variant)
            masks, ids = [], []
            for obj_id in sorted(self.open_ids):
                stop = stops.get(obj_id, len(frames))
                if obj_id not in visible:
                    self._put_empty_variant(variant, obj_id, pts[:stop], indices[:stop])
                    continue
                logits = torch.full((len(frames), 1, side, side), _NO_OBJECT, dtype=torch.float32, device=x.device)
                for b, inst in enumerate(frames):
                    if obj_id in inst.ids:
                        logits[b, 0] = inst.logits[inst.ids.index(obj_id)].to(x.device)
                result = v.postprocess(logits, x, self.pipe.prompt, params, None)
                # frames of this batch the object is not listed in are written empty (and not tinted), as in a
                # batch without it: the outputs do not depend on how frames are batched (nor where segments start)
                listed = [obj_id in inst.ids for inst in frames]
                shown = torch.tensor(listed, dtype=result.mask.dtype, device=result.mask.device).view(-1, 1, 1, 1)
                masks.append(result.mask if all(listed) else result.mask * shown)
                ids.append(obj_id)
                if not self.kinds:
                    continue
                for lo, hi, listed_run in _runs(listed[:stop]):
                    if not listed_run:
                        self._put_empty_variant(variant, obj_id, pts[lo:hi], indices[lo:hi])
                        continue
                    whole = lo == 0 and hi == len(frames)
                    sel = slice(lo, hi)
                    rendered = self.pipe.render(
                        x if whole else x[sel], VariantOutput(mask=result.mask if whole else result.mask[sel]),
                        self.kinds, host_frames=None if host is None else host[sel], bits=self.look["bits"],
                        background=None if bg is None else bg[sel],
                        host_frames16=None if host16 is None else host16[sel], defer_matte=True,
                        matte_style=self.settings["matte_style"], matte_color=self.look["color"])
                    for kind, arr in rendered.items():
                        self._put((self._key(variant, obj_id), kind), (arr, pts[lo:hi]))
            if self.overlay:
                tinted = _tint(x, masks, ids, self.pipe.heatmap_alpha)
                self._put((variant, "heatmap"), (tinted.permute(0, 2, 3, 1).cpu().numpy(), pts))
        if self.first_index is None:
            self.first_index = indices[0]
        self.pts.extend(pts)
        for obj_id in sorted({i for inst in frames for i in inst.retired} & self.open_ids):
            for variant in self.pipe.variants:
                for kind in self.kinds:
                    key = (self._key(variant, obj_id), kind)
                    self.closed[f"{key[0]}.{kind}"] = self.outputs.close_key(key)
            self.open_ids.discard(obj_id)
        return self.blocked - blocked

    def _put(self, key, item) -> None:
        self.blocked += self.outputs.put(key, item)

    def _put_empty_variant(self, variant: str, obj_id: int, pts: list[int], indices: Sequence[int]) -> None:
        for kind in self.kinds:
            self._put((self._key(variant, obj_id), kind), (self._empty(kind, len(pts), indices), pts))

    # -- end --------------------------------------------------------------------------------------------------------
    def close(self) -> dict[str, Path]:
        """Close the sidecar (the other files close with the run's OutputSet); with ``overwrite``, remove tracks
        an earlier run left that this run did not write. Returns ``{"instances": sidecar path, "VARIANT.idN.KIND":
        path}`` of the tracks closed early (retired objects)."""
        paths = {"instances": self.sidecar.close(), **self.closed}
        return paths

    def remove_stale(self, written: Sequence[Path]) -> None:
        """With ``overwrite``: remove per-object tracks of an earlier run that this run did not write."""
        keep = {Path(p).resolve() for p in written}
        formats = {k: self.settings[f"{k}_format"] for k in ("mask", "heatmap", "matte")}
        for path in existing_tracks(self.settings["out_dir"], self.settings["output_template"], stem=self.stem,
                                    variants=list(self.pipe.variants), kinds=self.kinds, formats=formats):
            if path.resolve() not in keep:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def abort(self) -> None:
        """A failed run: remove the sidecar's temporary file and the tracks already finished (retired objects'),
        so that nothing that looks complete is left."""
        self.sidecar.abort()
        for path in self.closed.values():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.closed = {}
