"""SAM 3 as a second segmenter: text prompts, tracked instances with stable ids, streamed in bounded memory.

SAM 3 (Meta, Nov 2025; transformers' ``Sam3VideoModel``) detects every instance of a noun phrase and
tracks each one with a memory across frames. It is stateful: each frame depends on the memory the
previous frames left, so frames go through one at a time, in order, within a *stream*
(:class:`Sam3Stream`, one per video). :class:`Sam3Segmenter` is the loaded model; its
:meth:`~Sam3Segmenter.open_stream` gives a stream that speaks the pipeline's
:class:`~streammask.pipeline.Segmenter` interface: ``segment(frames, prompts)`` returns per prompt
the union of that prompt's instances as ``(B, P, S, S)`` logits (S = 288 for ``facebook/sam3``),
and :attr:`Sam3Stream.last_instances` holds each frame's instances (id, prompt, scores, logits).

**Bounded memory.** transformers' streaming session keeps every processed frame (~12 MB each at
1008x1008 in float32), every frame's per-object outputs (~5 MB per object, mostly the high-resolution
mask), per-frame bookkeeping that it deep-copies at every frame, and every object it ever saw. After
each frame :func:`prune_session` keeps only what the next frame reads:

* the newest pixel frame only (the session still counts the frames seen);
* per object, the non-conditioning outputs of the memory window (``num_maskmem - 1`` frames) with
  their memory features, and the object pointers of the pointer window
  (``max_object_pointers_in_encoder - 1`` frames), without any mask;
* conditioning outputs (an object's first frame, and each re-conditioning) reduced to their object
  pointer once the memory attention no longer selects them; *capped* (``cap_pointers``) to the newest
  ``max_cond_frame_num`` (4), which is the set the memory attention selects, where stock transformers
  attends to the pointers of every conditioning frame since the start (the original SAM 3 code uses
  the selected few);
* the frame-indexed bookkeeping of the current frame only;

and :class:`Sam3Stream` retires an object not seen for ``forget_after`` frames (its state and
bookkeeping go; if it comes back it gets a new id), while ``max_objects`` caps the objects tracked
at once (the model's own ``max_num_objects``: further new detections are dropped, highest scores
kept). Everything except the pointer cap and the retirement leaves the outputs bit-identical to the
stock session (tested on the tiny random model); these touch transformers' session internals, so
loading checks the transformers version against :data:`TESTED_TRANSFORMERS`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..errors import ModelLoadError, ParameterError
from ..params import Param, ParamSet
from .hub import from_pretrained, loading, model_source
from .options import ATTN_IMPLEMENTATIONS, resolve_device, resolve_dtype
from .prompts import check_prompt_tokens

__all__ = ["SAM3_MODEL", "SAM3_PARAMS", "SAM3_GATED", "TESTED_TRANSFORMERS", "Sam3Segmenter", "Sam3Stream",
           "FrameInstances", "load_sam3", "check_sam3_load_options", "is_sam3_model", "prune_session",
           "session_tensor_bytes", "sam3_preprocess", "sam3_options", "NO_OBJECT_LOGIT"]

log = logging.getLogger("streammask.model")

SAM3_MODEL = "facebook/sam3"
TESTED_TRANSFORMERS = ((5, 25), (5, 26))
"""transformers versions ``[low, high)`` whose SAM 3 session internals :func:`prune_session` was tested with."""

NO_OBJECT_LOGIT = -20.0
"""The logit of "no instance here" (a prompt without instances in a frame; sigmoid ~ 2e-9)."""

_SUPPRESSED_LOGIT = -10.0  # SAM 3's own value for pixels an overlapping, higher-scoring instance claims

SAM3_PARAMS = ParamSet((
    Param("sam3_max_objects", "int", 16, "SAM 3: most objects tracked at once (the tracker's cost grows with "
          "each; new detections beyond the cap are dropped, highest scores kept)", min=1, max=1000),
    Param("sam3_forget_after", "int", 300, "SAM 3: retire an object not seen for this many frames (its memory is "
          "freed; if it returns it gets a new id)", min=1, max=10_000_000),
))
"""SAM 3's model options, declared once (flags, pipeline-file keys, API keywords; per batch, like ``model``)."""

SAM3_GATED = "facebook/sam3 is gated: accept Meta's SAM License on https://huggingface.co/facebook/sam3 while logged in"
"""Why ``facebook/sam3`` may not download, and what to do first (the start of every gated-model message)."""

_LICENSE_HINT = (f"{SAM3_GATED}, then run `hf auth login` and `hf download facebook/sam3` once where there is "
                 "network, or pass --model PATH pointing at a local copy")


def sam3_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`SAM3_PARAMS` keys of a settings mapping (defaults where missing or ``None``)."""
    return {p.name: settings.get(p.name) if settings.get(p.name) is not None else p.default for p in SAM3_PARAMS}


# -- which model ----------------------------------------------------------------------------------------------------

def _config_path(name: str, revision: str | None) -> Path | None:
    local = Path(name)
    if local.is_dir():
        found = local / "config.json"
        return found if found.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json", revision=revision)
        return Path(found) if isinstance(found, str) else None
    except Exception:
        return None


def is_sam3_model(model: str | os.PathLike | None, revision: str | None = None) -> bool:
    """Whether ``model`` (hub id or local directory) is a SAM 3 video model: its ``config.json`` says
    ``model_type = "sam3_video"``. Nothing is downloaded: a hub id that is not in the local cache is
    judged by its name (``facebook/sam3`` and other ids whose name holds ``sam3``)."""
    if model is None:
        return False
    name = os.fspath(model)
    path = _config_path(name, revision)
    if path is not None:
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("model_type") == "sam3_video"
        except (OSError, ValueError):
            return False
    return not Path(name).exists() and "sam3" in name.rsplit("/", 1)[-1].lower()


# -- preprocessing --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sam3ImageConfig:
    """The image processor's settings (``preprocessor_config.json``): input size, mean, std, rescale factor."""

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float


def _read_image_config(name: str, revision: str | None, offline: bool) -> Sam3ImageConfig:
    from transformers.utils import cached_file

    data = None
    for filename in ("preprocessor_config.json", "processor_config.json"):
        try:
            path = cached_file(name, filename, revision=revision, local_files_only=offline,
                               _raise_exceptions_for_missing_entries=False)
        except OSError:
            path = None
        if path:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            data = raw.get("image_processor", raw) if filename == "processor_config.json" else raw
            if "image_mean" in data:
                break
            data = None
    if data is None:
        raise ModelLoadError(f"--model {name!r} is not a complete SAM 3 model: it has no image processor config "
                             "(preprocessor_config.json with size, image_mean and image_std)")
    size = data.get("size") or {}
    h = int(size.get("height") or size.get("shortest_edge"))
    w = int(size.get("width") or size.get("shortest_edge") or h)
    mean = tuple(float(v) for v in data["image_mean"])
    std = tuple(float(v) for v in data["image_std"])
    rescale = float(data.get("rescale_factor", 1 / 255)) if data.get("do_rescale", True) else 1.0
    if not data.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return Sam3ImageConfig(h, w, mean, std, rescale)  # type: ignore[arg-type]


def _native_uint8_bilinear(device: torch.device) -> bool:
    """Whether torchvision resizes uint8 frames natively (no float round trip) here: on CPUs with AVX2 /
    AVX512 or ARM (``torchvision.transforms.v2.functional._geometry._do_native_uint8_resize_on_cpu``)."""
    if device.type != "cpu":
        return False
    import platform

    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64",
                                                                                                  "arm64")


def sam3_preprocess(frames: torch.Tensor, config: Sam3ImageConfig, *, device: torch.device,
                    dtype: torch.dtype) -> torch.Tensor:
    """uint8 RGB frames to SAM 3 pixel values, as ``Sam3ImageProcessor`` (torchvision backend) makes them.

    Bilinear, antialiased resize to ``config``'s size (uint8 in, uint8 out: natively on a CPU with
    AVX2 / AVX512 / ARM, otherwise through float32 and rounding, as torchvision does), then
    ``(x - mean / rescale) / (std / rescale)`` in float32 (the processor's fused rescale + normalise).
    Checked against the real processor in ``tests/test_references_torchvision.py``.

    Args:
        frames: ``(B, 3, H, W)`` uint8 on any device.
        config: the processor's settings.

    Returns:
        ``(B, 3, height, width)`` in ``dtype`` on ``device``.
    """
    x = frames.to(device)
    size = (config.height, config.width)
    if tuple(x.shape[-2:]) != size:
        if _native_uint8_bilinear(x.device):
            x = F.interpolate(x.contiguous(), size=size, mode="bilinear", align_corners=False, antialias=True)
        else:
            x = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
            x = x.round_().clamp_(0, 255)
    # the processor's fused form, rounding included: float32 mean and std times the float 1 / rescale
    mean = torch.tensor(config.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1) * (1.0 / config.rescale)
    std = torch.tensor(config.std, dtype=torch.float32, device=device).view(1, 3, 1, 1) * (1.0 / config.rescale)
    return ((x.float() - mean) / std).to(dtype)


# -- session pruning ------------------------------------------------------------------------------------------------

class _SeenFrames(dict):
    """The session's ``processed_frames``, holding the frame being processed only: ``len()`` stays the number
    of frames seen (transformers reads it as the video's length)."""

    def __init__(self, seen: int = 0) -> None:
        super().__init__()
        self.seen = seen

    def __setitem__(self, key: int, value: Any) -> None:
        super().clear()
        super().__setitem__(key, value)
        self.seen = max(self.seen, int(key) + 1)

    def __len__(self) -> int:
        return self.seen

    def __reduce__(self):
        return (_SeenFrames, (self.seen,), None, None, iter(dict.items(self)))


_MASK_KEYS = ("high_res_masks", "pred_masks")


def prune_session(session: Any, frame_idx: int, *, num_maskmem: int, max_pointers: int, max_cond: int,
                  cap_pointers: bool = True, unmatch_keep: int = 8, dup_keep: int = 8) -> None:
    """Drop what no later frame reads from a transformers SAM 3 streaming session, after frame ``frame_idx``.

    Exact (the next frames' outputs are bit-identical) except ``cap_pointers``, which also drops the
    object pointers of conditioning frames older than the newest ``max_cond`` outside the memory window.

    Args:
        session: a ``Sam3VideoInferenceSession`` that has just processed ``frame_idx`` (frames in order).
        num_maskmem: the tracker's memory frames (``tracker_config.num_maskmem``: the frame and
            ``num_maskmem - 1`` earlier ones).
        max_pointers: ``tracker_config.max_object_pointers_in_encoder``.
        max_cond: ``tracker_config.max_cond_frame_num``: conditioning frames the memory attention selects.
        cap_pointers: keep conditioning pointers of the newest ``max_cond`` frames (and of the memory window) only.
        unmatch_keep, dup_keep: entries kept in the hot-start lists (which streaming never reads back).
    """
    frames = session.processed_frames
    seen = len(frames) if frames is not None else 0
    session.processed_frames = _SeenFrames(max(seen, frame_idx + 1))
    window = num_maskmem - 1  # non-conditioning frames whose memory features the next frame reads
    pointer_window = max_pointers - 1  # frames whose object pointers the next frame reads
    for per_obj in session.output_dict_per_obj.values():
        non_cond = per_obj["non_cond_frame_outputs"]
        for t in list(non_cond):
            age = frame_idx - t  # the next frame reads offsets 1 .. window, i.e. age 0 .. window - 1
            if age >= pointer_window:
                del non_cond[t]
            elif age >= window:
                non_cond[t] = {"object_pointer": non_cond[t]["object_pointer"]}
            else:
                for key in _MASK_KEYS:
                    non_cond[t].pop(key, None)
        cond = per_obj["cond_frame_outputs"]
        newest = set(sorted(cond)[-max_cond:]) if max_cond > 0 else set()
        for t in list(cond):
            for key in _MASK_KEYS:
                cond[t].pop(key, None)
            if t in newest or frame_idx - t < window:
                continue  # selected by the memory attention, or a memory frame of the window
            if cap_pointers:
                del cond[t]
            else:
                cond[t] = {"object_pointer": cond[t]["object_pointer"]}
    for per_obj in session.frames_tracked_per_obj.values():
        per_obj.clear()
    for store in (session.mask_inputs_per_obj, session.point_inputs_per_obj):
        for per_obj in store.values():
            per_obj.clear()
    scores = session.obj_id_to_tracker_score_frame_wise
    session.obj_id_to_tracker_score_frame_wise = defaultdict(dict, {frame_idx: scores[frame_idx]} if frame_idx in
                                                             scores else {})
    suppressed = session.suppressed_obj_ids
    session.suppressed_obj_ids = defaultdict(set, {frame_idx: suppressed[frame_idx]} if frame_idx in
                                             suppressed else {})
    for obj_id, inds in list(session.unmatched_frame_inds.items()):
        del inds[:-unmatch_keep]
    for pair, inds in list(session.overlap_pair_to_frame_inds.items()):
        del inds[:-dup_keep]


def _forget_object(session: Any, obj_id: int) -> None:
    """Remove an object from the session with every piece of bookkeeping keyed by its id."""
    session.remove_object(obj_id, strict=False)
    session.obj_ids = [o for o in session.obj_ids if o != obj_id]
    for store in (session.obj_id_to_score, session.obj_first_frame_idx, session.trk_keep_alive,
                  session.unmatched_frame_inds, session.obj_id_to_last_occluded, session.obj_id_to_prompt_id):
        store.pop(obj_id, None)
    for pair in [p for p in session.overlap_pair_to_frame_inds if obj_id in p]:
        del session.overlap_pair_to_frame_inds[pair]
    session.removed_obj_ids.discard(obj_id)
    session.hotstart_removed_obj_ids.discard(obj_id)
    for per_frame in session.obj_id_to_tracker_score_frame_wise.values():
        per_frame.pop(obj_id, None)
    for per_frame in session.suppressed_obj_ids.values():
        per_frame.discard(obj_id)


def session_tensor_bytes(session: Any) -> int:
    """Bytes of the distinct tensor storages a session holds (frames, outputs, caches, prompt embeddings)."""
    seen_ids: set[int] = set()
    seen_storages: set[tuple[str, int]] = set()
    total = 0

    def walk(obj: Any) -> None:
        nonlocal total
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            key = (str(obj.device), storage.data_ptr())
            if key not in seen_storages:
                seen_storages.add(key)
                total += storage.nbytes()
            return
        if id(obj) in seen_ids or isinstance(obj, (str, bytes, int, float, bool, type(None))):
            return
        seen_ids.add(id(obj))
        if isinstance(obj, Mapping):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple, set)):
            for v in obj:
                walk(v)
        elif hasattr(obj, "__dict__"):
            walk(vars(obj))

    walk(session)
    return total


# -- the segmenter --------------------------------------------------------------------------------------------------

@dataclass
class FrameInstances:
    """The instances SAM 3 shows in one frame (visible ones: a positive logit somewhere, not suppressed).

    Attributes:
        frame: the frame's index in the stream (0 = the stream's first frame).
        ids: object ids, ascending; stable for as long as the object is tracked.
        prompts: the prompt text that detected each object.
        scores: detection score of each object (the score it was first detected with).
        tracker_scores: the tracker's presence probability in this frame.
        logits: ``(N, S, S)`` float32 low-resolution mask logits (the model's frame, 288x288 for ``facebook/sam3``),
            with SAM 3's non-overlap rule applied among objects of one prompt (where several claim a pixel,
            the one with the highest tracker score keeps it; the others' logits there drop to -10 or below).
        retired: ids retired after this frame (not seen for ``forget_after`` frames).
        raw_logits: ``logits`` before the non-overlap rule (the union of a prompt's instances takes these).
    """

    frame: int
    ids: list[int]
    prompts: list[str]
    scores: list[float]
    tracker_scores: list[float]
    logits: torch.Tensor
    retired: list[int]
    raw_logits: torch.Tensor = field(default=None, repr=False)  # type: ignore[assignment]

    def boxes(self, height: int, width: int) -> torch.Tensor:
        """``(N, 4)`` float32 boxes ``x0, y0, x1, y1`` in frame pixels (inclusive), of each mask (before the
        non-overlap rule) upsampled bilinearly to ``height x width`` and cut at 0, as
        ``Sam3VideoProcessor.postprocess_outputs``; ``-1`` where the mask is empty at that size."""
        source = self.raw_logits if self.raw_logits is not None else self.logits
        out = torch.full((len(self.ids), 4), -1.0)
        for i in range(len(self.ids)):
            m = F.interpolate(source[i][None, None], size=(height, width), mode="bilinear",
                              align_corners=False)[0, 0] > 0
            rows = torch.nonzero(m.any(dim=1)).flatten()
            cols = torch.nonzero(m.any(dim=0)).flatten()
            if len(rows):
                out[i] = torch.tensor([cols[0], rows[0], cols[-1], rows[-1]], dtype=torch.float32)
        return out


def _non_overlap(logits: torch.Tensor, scores: torch.Tensor, groups: list[int]) -> torch.Tensor:
    """SAM 3's object-wise non-overlap rule (``Sam3VideoProcessor._apply_object_wise_non_overlapping_constraints``,
    background 0) within each prompt group, on logits: a pixel stays with the object of the highest tracker
    score among those whose logit there is positive; the others' logits there are capped at -10."""
    out = logits.clone()
    group_t = torch.tensor(groups, device=logits.device)
    for g in group_t.unique():
        idx = torch.nonzero(group_t == g).flatten()
        if len(idx) < 2:
            continue
        sub = logits[idx]
        claim = torch.where(sub > 0, scores[idx].to(sub)[:, None, None], torch.zeros((), dtype=sub.dtype,
                                                                                     device=sub.device))
        winner = claim.argmax(dim=0, keepdim=True)
        keep = (winner == torch.arange(len(idx), device=sub.device)[:, None, None]) & (claim > 0)
        out[idx] = torch.where(keep, sub, sub.clamp(max=_SUPPRESSED_LOGIT))
    return out


class Sam3Stream:
    """One video's SAM 3 tracking state: frames go in one at a time, in order.

    Speaks the pipeline's :class:`~streammask.pipeline.Segmenter` interface (:meth:`segment`); build it
    with :meth:`Sam3Segmenter.open_stream`. Not thread-safe: one stream, one thread.

    Attributes:
        last_instances: the instances of each frame of the last :meth:`segment` call.
        frames_seen: frames processed so far.
    """

    def __init__(self, owner: "Sam3Segmenter", *, cap_pointers: bool = True, prune: bool = True) -> None:
        self.owner = owner
        self.cap_pointers = cap_pointers
        self.prune = prune
        self.session = owner.new_session()
        self.frames_seen = 0
        self.last_seen: dict[int, int] = {}
        self.last_instances: list[FrameInstances] = []

    # the Segmenter interface
    @property
    def device(self) -> torch.device:
        return self.owner.device

    @property
    def size(self) -> int:
        return self.owner.size

    @property
    def dtype(self) -> torch.dtype:
        return self.owner.dtype

    def check_prompts(self, prompts) -> None:
        self.owner.check_prompts(prompts)

    def _prompt_id(self, text: str) -> int:
        session = self.session
        for pid, known in session.prompts.items():
            if known == text:
                return pid
        self.owner.check_prompts([text])
        pid = session.add_prompt(text)
        enc = self.owner.tokenize(text)
        session.prompt_input_ids[pid] = enc["input_ids"].to(self.owner.device)
        session.prompt_attention_masks[pid] = enc["attention_mask"].to(self.owner.device)
        return pid

    @torch.inference_mode()
    def segment(self, frames: torch.Tensor, prompts: Sequence[str], *, preprocess: str = "pil",
                size: int | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 consecutive frames -> ``(B, P, S, S)`` float32 logits: per prompt, the union
        (maximum) of its visible instances' logits, :data:`NO_OBJECT_LOGIT` where it has none.

        A prompt not seen before is added to the session (SAM 3 then also detects it in the frames that
        follow). ``preprocess`` is CLIPSeg's and ignored (SAM 3 has its own, :func:`sam3_preprocess`); ``size``
        other than :attr:`size` resamples the logits bilinearly.
        """
        pids = [self._prompt_id(p) for p in prompts]
        side = self.size
        out = torch.full((frames.shape[0], len(prompts), side, side), NO_OBJECT_LOGIT, dtype=torch.float32,
                         device=self.device)
        self.last_instances = []
        for b in range(frames.shape[0]):
            inst = self._step(frames[b:b + 1])
            self.last_instances.append(inst)
            if inst.ids:
                raw = inst.raw_logits
                texts = inst.prompts
                for j, (text, pid) in enumerate(zip(prompts, pids)):
                    mine = [i for i, t in enumerate(texts) if t == text]
                    if mine:
                        out[b, j] = raw[mine].amax(dim=0)
        if size is not None and size != side:
            out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False)
        return out

    def _step(self, frame: torch.Tensor) -> FrameInstances:
        owner, session = self.owner, self.session
        n = self.frames_seen
        pixels = sam3_preprocess(frame, owner.image, device=owner.device, dtype=owner.dtype)
        with owner.lock:
            owner.model.max_num_objects = owner.max_objects
            out = owner.model(inference_session=session, frame=pixels[0], frame_idx=n)
        self.frames_seen = n + 1
        hidden = set(out.suppressed_obj_ids or ()) | set(session.hotstart_removed_obj_ids)
        ids, logits = [], []
        for obj_id in sorted(out.obj_id_to_mask):
            mask = out.obj_id_to_mask[obj_id][0].float()
            if obj_id in hidden or not bool((mask > 0).any()):
                continue
            ids.append(int(obj_id))
            logits.append(mask)
        for obj_id in out.obj_id_to_mask:
            self.last_seen.setdefault(int(obj_id), n)
        for obj_id in ids:
            self.last_seen[obj_id] = n
        texts = [session.prompts[session.obj_id_to_prompt_id[i]] for i in ids]
        scores = [float(out.obj_id_to_score.get(i, 0.0)) for i in ids]
        trk = [float((out.obj_id_to_tracker_score or {}).get(i, 0.0)) for i in ids]
        if ids:
            raw = torch.stack(logits)
            groups = [session.obj_id_to_prompt_id[i] for i in ids]
            shown = _non_overlap(raw, torch.tensor(trk), groups)
        else:
            raw = shown = torch.zeros((0, self.size, self.size), device=owner.device)
        retired = [i for i in list(session.obj_ids) if n - self.last_seen.get(int(i), n) >= owner.forget_after]
        for obj_id in retired:
            _forget_object(session, obj_id)
            self.last_seen.pop(int(obj_id), None)
        if self.prune:
            config = owner.tracker_config
            prune_session(session, n, num_maskmem=config.num_maskmem,
                          max_pointers=config.max_object_pointers_in_encoder, max_cond=config.max_cond_frame_num,
                          cap_pointers=self.cap_pointers, unmatch_keep=owner.model.hotstart_unmatch_thresh,
                          dup_keep=owner.model.hotstart_dup_thresh)
        return FrameInstances(frame=n, ids=ids, prompts=texts, scores=scores, tracker_scores=trk, logits=shown,
                              retired=[int(i) for i in retired], raw_logits=raw)

    # state hand-over
    def state_dict(self) -> dict[str, Any]:
        """A copy of the stream's state (the pruned session, frame count, last-seen frames): hand it to
        :meth:`load_state_dict` of a stream of the same model to go on with the same ids."""
        with torch.inference_mode():
            return {"session": copy.deepcopy(self.session), "frames_seen": self.frames_seen,
                    "last_seen": dict(self.last_seen)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with torch.inference_mode():
            self.session = copy.deepcopy(state["session"])
        self.frames_seen = int(state["frames_seen"])
        self.last_seen = dict(state["last_seen"])
        self.last_instances = []

    def held_bytes(self) -> int:
        """Bytes of tensors the stream's session holds (see :func:`session_tensor_bytes`)."""
        return session_tensor_bytes(self.session)


class Sam3Segmenter:
    """A loaded SAM 3 video model. Build it with :func:`load_sam3`.

    It is *stateful*: :meth:`open_stream` gives each video its own :class:`Sam3Stream`
    (:class:`~streammask.pipeline.MaskPipeline` does that). :meth:`segment` runs a default stream,
    for direct use on consecutive frames.

    Attributes:
        size: side of the logits the streams return (``low_res_mask_size``, 288 for ``facebook/sam3``).
        input_size: side of the model's input (1008 for ``facebook/sam3``).
        max_objects, forget_after: see :data:`SAM3_PARAMS`.
    """

    stateful = True
    supported_variants = ("soft",)
    variants_note = ("mixlab, essentials and masquerade reproduce ComfyUI CLIPSeg nodes (thresholds, blurs and "
                     "normalisations tuned to CLIPSeg's 352x352 probability maps); with SAM 3 use 'soft' (its "
                     "threshold, binary, blur, dilate and invert apply to SAM 3's masks)")
    preferred_batch_size = 4  # frames go through SAM 3 one at a time; a batch only groups decode and encode work

    def __init__(self, model, tokenizer, image: Sam3ImageConfig, *, device: torch.device, dtype: torch.dtype,
                 name: str = "", max_objects: int = 16, forget_after: int = 300) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image = image
        self.device = device
        self.dtype = dtype
        self.name = name
        self.max_objects = int(max_objects)
        self.forget_after = int(forget_after)
        self.size = int(model.config.low_res_mask_size)
        self.input_size = int(image.height)
        self.tracker_config = model.config.tracker_config
        self.lock = threading.Lock()
        self.prompt_tokens = _prompt_limit(model)
        self._default: Sam3Stream | None = None

    def __repr__(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        return (f"Sam3Segmenter(name={self.name!r}, device={self.device}, dtype={dtype}, input={self.input_size}, "
                f"size={self.size}, max_objects={self.max_objects})")

    def new_session(self):
        """A fresh transformers streaming session on this model's device and dtype."""
        from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

        # dtype as a torch dtype: the session's string default breaks add_new_frame
        return Sam3VideoInferenceSession(inference_device=self.device, inference_state_device=self.device,
                                         video_storage_device=self.device, dtype=self.dtype,
                                         max_vision_features_cache_size=1)

    def open_stream(self, **options: Any) -> Sam3Stream:
        """A new stream (one video's tracking state)."""
        return Sam3Stream(self, **options)

    def tokenize(self, text: str):
        # as Sam3VideoProcessor.add_text_prompt: padded to the text encoder's 32 positions
        return self.tokenizer(text, return_tensors="pt", padding="max_length", max_length=self.prompt_tokens)

    @property
    def max_prompt_tokens(self) -> int:
        return self.prompt_tokens

    def check_prompts(self, prompts) -> None:
        """Refuse prompts longer than the text encoder's positions (32 for SAM 3): never truncated."""
        pairs = [p if isinstance(p, tuple) else ("prompt", p) for p in prompts]
        check_prompt_tokens(self.tokenizer, pairs, limit=self.prompt_tokens)

    def segment(self, frames: torch.Tensor, prompts: Sequence[str], *, preprocess: str = "pil",
                size: int | None = None) -> torch.Tensor:
        """:meth:`Sam3Stream.segment` on the default stream (consecutive frames of one video)."""
        if self._default is None:
            self._default = self.open_stream()
        return self._default.segment(frames, prompts, preprocess=preprocess, size=size)

    def reset(self) -> None:
        """Forget the default stream (start a new video)."""
        self._default = None

    def with_options(self, *, sam3_max_objects: int | None = None, sam3_forget_after: int | None = None
                     ) -> "Sam3Segmenter":
        """This model with other :data:`SAM3_PARAMS` (``None``: this one's): a view that shares the weights,
        the tokenizer and the lock (each stream applies its owner's cap under the lock), with no default
        stream of its own; ``self`` when nothing changes. Validated like :func:`load_sam3`'s arguments.

        Example:
            >>> few = sam3.with_options(sam3_max_objects=2)  # doctest: +SKIP
            >>> few.model is sam3.model  # doctest: +SKIP
            True
        """
        given = {"sam3_max_objects": self.max_objects if sam3_max_objects is None else sam3_max_objects,
                 "sam3_forget_after": self.forget_after if sam3_forget_after is None else sam3_forget_after}
        opts = SAM3_PARAMS.validate(given)
        if (opts["sam3_max_objects"], opts["sam3_forget_after"]) == (self.max_objects, self.forget_after):
            return self
        view = copy.copy(self)
        view.max_objects, view.forget_after = opts["sam3_max_objects"], opts["sam3_forget_after"]
        view._default = None
        return view


def _prompt_limit(model) -> int:
    text = model.config.detector_config.text_config
    return int(getattr(text, "max_position_embeddings", 32) or 32)


# -- loading --------------------------------------------------------------------------------------------------------

def _check_transformers() -> None:
    import transformers

    parts = tuple(int(p) for p in transformers.__version__.split(".")[:2] if p.isdigit())
    low, high = TESTED_TRANSFORMERS
    if not low <= parts < high:
        raise ModelLoadError(
            f"SAM 3 needs transformers {low[0]}.{low[1]}.x (streammask prunes its streaming session's internals to "
            f"keep memory flat, tested with that release), but {transformers.__version__} is installed: "
            f"pip install 'transformers>={low[0]}.{low[1]},<{high[0]}.{high[1]}' (or 'streammask[sam3]')")


def _offline_message(name: str, detail: str = "") -> str:
    hint = _LICENSE_HINT if name == SAM3_MODEL else (
        f"run `hf download {name}` once where there is network (for a gated model, after accepting its license on "
        "the hub and `hf auth login`), or pass --model PATH pointing at a local copy")
    if detail and any(w in detail.lower() for w in ("gated", "401", "403", "restricted", "awaiting")):
        return f"Cannot download the SAM 3 weights {name!r}: access is gated; {hint}."
    if detail and not any(w in detail.lower() for w in ("offline", "connect", "resolve")):
        return f"Cannot load the SAM 3 weights {name!r}: {detail.splitlines()[0]}"
    return (f"Cannot download the SAM 3 weights {name!r} (the Hugging Face hub is unreachable and there is no "
            f"cached copy): {hint}.")


class _CapWarningFilter(logging.Filter):
    """Drops transformers' per-frame "hitting self.max_num_objects" warning: the cap is ``sam3_max_objects``,
    chosen by the user, and the warning would repeat at every frame with a new detection."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "max_num_objects" not in record.getMessage()


def _quiet_cap_warning() -> None:
    logger = logging.getLogger("transformers.models.sam3_video.modeling_sam3_video")
    if not any(isinstance(f, _CapWarningFilter) for f in logger.filters):
        logger.addFilter(_CapWarningFilter())


def check_sam3_load_options(*, dtype: str | torch.dtype = "auto", channels_last: bool = False,
                            compile: bool = False) -> None:
    """Refuse CLIPSeg's load options that SAM 3 does not implement (``int8``, ``channels_last``, ``compile``), in
    one sentence each, before anything is loaded or built.

    Raises:
        ParameterError: one of them is set.
    """
    if dtype == "int8":
        raise ParameterError("dtype", dtype, "'auto', 'float32', 'float16' or 'bfloat16' with SAM 3 (int8 "
                             "quantization is implemented for CLIPSeg only)")
    for flag, value in (("channels_last", channels_last), ("compile", compile)):
        if value:
            raise ParameterError(flag, value, "False with SAM 3 (implemented for CLIPSeg only)")


def load_sam3(
    model: str | os.PathLike = SAM3_MODEL,
    *,
    revision: str | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    local_files_only: bool | None = None,
    attn_implementation: str = "auto",
    channels_last: bool = False,
    compile: bool = False,
    sam3_max_objects: int = 16,
    sam3_forget_after: int = 300,
) -> Sam3Segmenter:
    """Load a SAM 3 video model (``facebook/sam3``, gated: accept Meta's SAM License on the hub) once.

    Args:
        model: hub id or local directory with ``config.json`` (``model_type = "sam3_video"``),
            ``*.safetensors``, the tokenizer files and ``preprocessor_config.json``.
        revision, device, local_files_only, attn_implementation: as :func:`~streammask.load_clipseg`.
        dtype: ``auto`` (float16 on CUDA, float32 on CPU), ``float32``, ``float16``, ``bfloat16``
            (``int8`` is CLIPSeg's only).
        channels_last, compile: CLIPSeg's options; refused (not implemented for SAM 3).
        sam3_max_objects, sam3_forget_after: see :data:`SAM3_PARAMS`.

    Raises:
        SourceNotFoundError: ``model`` is a path that does not exist.
        ModelLoadError: the weights cannot be fetched (offline, gated), are not safetensors, or the
            installed transformers is not one this was tested with.
    """
    check_sam3_load_options(dtype=dtype, channels_last=channels_last, compile=compile)
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ParameterError("attn_implementation", attn_implementation,
                             "one of " + ", ".join(repr(a) for a in ATTN_IMPLEMENTATIONS))
    opts = SAM3_PARAMS.validate({"sam3_max_objects": sam3_max_objects, "sam3_forget_after": sam3_forget_after})
    _check_transformers()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    src = model_source(model, revision, local_files_only=local_files_only, unreachable=_offline_message)
    name = src.name
    from transformers import AutoTokenizer, Sam3VideoModel
    from transformers.models.sam3_video import modeling_sam3_video

    from .sam3_kernels import install_local_kernels

    kwargs = dict(revision=revision, local_files_only=src.offline)
    with loading(src, revision, what="SAM 3", unreachable=_offline_message):
        net = from_pretrained(Sam3VideoModel, name, attn_implementation, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        image = _read_image_config(name, revision, src.offline)
    if net.config.model_type != "sam3_video":
        raise ModelLoadError(f"--model {name!r} is a {net.config.model_type!r} model, not a SAM 3 video model")
    install_local_kernels(modeling_sam3_video)  # NMS and hole filling here, never a kernel fetched from the hub
    _quiet_cap_warning()
    net = net.to(device=dev, dtype=dt).eval()
    return Sam3Segmenter(net, tokenizer, image, device=dev, dtype=dt, name=name,
                         max_objects=opts["sam3_max_objects"], forget_after=opts["sam3_forget_after"])
