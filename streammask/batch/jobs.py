"""Batch jobs: the clips of a batch, their settings, completion records and report rows.

:func:`run_batch` expands its inputs (video files, folders searched recursively
by extension, CSV / JSONL manifests with per-clip overrides) into a plan of
clips, loads the model once and streams every clip through
:func:`~streammask.process_video` with it. Each clip is written to its own
subfolder of ``out_dir``; a failing clip is reported and the batch goes on.

Resume: when a clip's outputs are complete (every output renamed from its
partial name), a completion record ``.streammask-done.json`` is written into
the clip's subfolder. It holds the input's absolute path, size, ``mtime_ns``
and a hash of the effective settings; a later run skips the clip while all of
these still match and its outputs exist (``force=True`` re-does everything).

Engines: ``local`` (one process, clips one after another) and ``ray``
(:mod:`streammask.batch.ray`: actors that load the model once, one task per
clip or segment, retries). Both write the same layout, completion records and
report, so a batch can be resumed with either. Long clips can be split into
segments (:mod:`streammask.batch.plan`, :mod:`streammask.batch.segments`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Mapping, Sequence

from ..errors import ParameterError, PipelineFileError, SourceNotFoundError
from ..io.video import frame_pts, probe
from ..model.clipseg import DEFAULT_MODEL
from ..params import Param, ParamSet
from ..pipeline.settings import RUN_PARAMS, normalize_variants
from ..variants import VARIANTS
from .plan import ClipSpec, plan_work
from ..variants import check_prompt

__all__ = [
    "VIDEO_EXTENSIONS", "MANIFEST_EXTENSIONS", "REPORT_NAME", "DONE_NAME", "BatchItem", "ClipResult", "BatchReport",
    "plan_batch", "settings_hash", "plan_batch_work", "BATCH_PARAMS", "ClipJob", "prepare_jobs", "claim",
    "record_done", "run_kwargs", "clip_spec", "ModelLoadFailed",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts")
MANIFEST_EXTENSIONS = (".csv", ".jsonl")
REPORT_NAME = "streammask-report.jsonl"
DONE_NAME = ".streammask-done.json"

# run settings a manifest row may not change: the model is loaded once per batch
_FIXED_KEYS = ("model", "revision", "device", "dtype", "progress", "attn_implementation", "channels_last", "compile",
               "sam3_max_objects", "sam3_forget_after")
# run settings that do not change the outputs' content (left out of the settings hash)
_UNHASHED_KEYS = ("out_dir", "progress", "queue_size", "overwrite")


@dataclass
class BatchItem:
    """One planned clip.

    Attributes:
        source: absolute path of the input video.
        subdir: output subfolder, relative to the batch's ``out_dir``.
        overrides: per-clip settings (validated) from a manifest row.
        origin: where the clip came from (the argument, or ``manifest:line``).
    """

    source: Path
    subdir: PurePath
    overrides: dict[str, Any] = field(default_factory=dict)
    origin: str = ""


@dataclass
class ClipResult:
    """One row of the report."""

    path: str
    status: str  # ok | failed | skipped
    error: str | None = None
    frames: int | None = None
    seconds: float | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    out_dir: str | None = None
    note: str | None = None  # e.g. "ended early: 287 of 795 header frames" (a header that lies, a cut file)

    def row(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "error": self.error, "frames": self.frames,
                "seconds": None if self.seconds is None else round(self.seconds, 3), "outputs": self.outputs,
                "out_dir": self.out_dir, "note": self.note}


@dataclass
class BatchReport:
    """What :func:`run_batch` did: one :class:`ClipResult` per clip, in plan order."""

    results: list[ClipResult]
    report_path: Path
    seconds: float

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[ClipResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0 when every clip is ok or skipped, 1 when any failed."""
        return 1 if self.failed else 0

    def describe(self) -> str:
        lines = [f"{len(self.results)} clips in {self.seconds:.2f} s: {self.count('ok')} ok, "
                 f"{self.count('skipped')} skipped (already done), {self.count('failed')} failed"]
        for r in self.failed:
            lines.append(f"  failed {r.path}: {r.error}")
        for r in self.results:
            if r.status == "ok" and r.note:
                lines.append(f"  {r.path}: {r.note}")
        lines.append(f"  report {self.report_path}")
        return "\n".join(lines)


# -- planning -------------------------------------------------------------------------------------------------------

def _override_params():
    return {p.name: p for p in RUN_PARAMS if p.name not in _FIXED_KEYS}


def _validate_overrides(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Manifest row (minus ``path``) -> validated overrides; empty cells mean "not given"."""
    params = _override_params()
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            if key == "variants" and isinstance(value, Mapping):
                out[key] = normalize_variants(value)
            else:
                out[key] = params[key].validate(value, label=key)
        except ParameterError as exc:
            raise PipelineFileError(f"{where}: {exc}") from None
    return out


def _read_manifest(path: Path) -> list[tuple[Path, dict[str, Any], str]]:
    """``[(absolute clip path, overrides, origin)]`` from a CSV (with header) or JSONL manifest."""
    allowed = ["path", *_override_params()]
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineFileError(f"{path}: cannot read the manifest: {exc}") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        columns = reader.fieldnames or []
        for col in columns:
            if col not in allowed:
                raise PipelineFileError(f"{path}: unknown column {col!r}; known columns are {', '.join(allowed)}")
        if "path" not in columns:
            raise PipelineFileError(f"{path}: the header has no 'path' column")
        for i, rec in enumerate(reader, start=2):
            if None in rec:
                raise PipelineFileError(f"{path}:{i}: more cells than columns")
            rows.append((i, dict(rec)))
    else:
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PipelineFileError(f"{path}:{i}: not valid JSON: {exc}") from None
            if not isinstance(rec, dict):
                raise PipelineFileError(f"{path}:{i}: expected a JSON object per line")
            for col in rec:
                if col not in allowed:
                    raise PipelineFileError(f"{path}:{i}: unknown column {col!r}; known columns are {', '.join(allowed)}")
            rows.append((i, rec))
    out = []
    for i, rec in rows:
        where = f"{path}:{i}"
        clip = rec.pop("path", None)
        if not isinstance(clip, str) or not clip.strip():
            raise PipelineFileError(f"{where}: 'path' is missing or empty")
        clip_path = Path(clip.strip()).expanduser()
        if not clip_path.is_absolute():
            clip_path = path.parent / clip_path
        out.append((Path(os.path.abspath(clip_path)), _validate_overrides(rec, where), where))
    return out


def _safe_subdir(text: str | PurePath) -> PurePath:
    """A relative path with no ``..``, root or drive: it cannot leave ``out_dir``."""
    parts = [p for p in PurePath(text).parts if p not in ("", ".", "..") and p != PurePath(text).anchor]
    parts = [p.replace(":", "_") for p in parts]
    return PurePath(*parts) if parts else PurePath("clip")


def plan_batch(inputs: Sequence[str | os.PathLike] | str | os.PathLike) -> list[BatchItem]:
    """Expand files, folders (recursive, by :data:`VIDEO_EXTENSIONS`) and manifests into clips.

    Each clip's output subfolder is its path below the common folder of all inputs (a folder
    argument counts as its own root, a file as its parent, a manifest as its folder), without
    the extension: clips with the same name in different folders get different subfolders.
    The same clip given twice with the same overrides is planned once.

    Raises:
        SourceNotFoundError: an input does not exist.
        PipelineFileError: a manifest cannot be read or holds an unknown column or a bad value.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: list[tuple[Path, Path, dict[str, Any], str]] = []  # (clip, root, overrides, origin)
    for arg in inputs:
        p = Path(os.path.abspath(Path(arg).expanduser()))
        if p.is_dir():
            clips = sorted(c for c in p.rglob("*") if c.suffix.lower() in VIDEO_EXTENSIONS and c.is_file()
                           and not any(part.startswith(".") for part in c.relative_to(p).parts))
            found += [(c, p, {}, str(arg)) for c in clips]
        elif p.is_file() and p.suffix.lower() in MANIFEST_EXTENSIONS:
            for clip, overrides, origin in _read_manifest(p):
                root = p.parent if clip.is_relative_to(p.parent) else clip.parent
                found.append((clip, root, overrides, origin))
        elif p.exists():
            found.append((p, p.parent, {}, str(arg)))
        else:
            raise SourceNotFoundError(f"batch input {str(arg)!r} does not exist")
    if not found:
        return []
    try:
        common = Path(os.path.commonpath([str(root) for _, root, _, _ in found]))
    except ValueError:  # different drives
        common = None
    items: list[BatchItem] = []
    seen: set[tuple[str, str]] = set()
    auto: dict[PurePath, set[Path]] = {}  # automatic subfolder -> the clips that would use it
    for clip, _, overrides, origin in found:
        key = (str(clip), json.dumps(overrides, sort_keys=True, default=list))
        if key in seen:
            continue
        seen.add(key)
        if "out_dir" in overrides:
            subdir = _safe_subdir(overrides.pop("out_dir"))
        else:
            rel = clip.relative_to(common) if common is not None else PurePath(clip.name)
            subdir = _safe_subdir(rel.with_suffix(""))
            auto.setdefault(subdir, set()).add(clip)
        items.append(BatchItem(source=clip, subdir=subdir, overrides=overrides, origin=origin))
    for item in items:  # 'x.mp4' and 'x.mov' in one folder: keep the extension in the name ('x_mp4', 'x_mov')
        if len(auto.get(item.subdir, ())) > 1 and item.source in auto[item.subdir]:
            item.subdir = item.subdir.with_name(item.source.name.replace(".", "_"))
    return items


# -- settings -------------------------------------------------------------------------------------------------------

def _base_settings(model: Any, run_settings: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(run_settings)
    variants = values.pop("variants", ("soft",))
    settings = RUN_PARAMS.validate(dict(values, model=os.fspath(model)), where="run_batch")
    settings["variants"] = normalize_variants(variants)
    return settings


def _clip_settings(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    settings = dict(base)
    for key, value in overrides.items():
        if key == "variants" and not isinstance(value, Mapping):
            value = {n: base["variants"].get(n) or VARIANTS[n].validate({}) for n in value}
        settings[key] = value
    return settings


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x


def settings_hash(settings: Mapping[str, Any]) -> str:
    """Hash of everything that decides a clip's outputs (prompt, variants and their parameters,
    outputs, formats, model, temporal settings, ...); not ``out_dir``, ``progress``, ``queue_size``."""
    data = {k: v for k, v in settings.items() if k not in _UNHASHED_KEYS}
    masq = (data.get("variants") or {}).get("masquerade") if isinstance(data.get("variants"), Mapping) else None
    if not (masq and masq.get("normalize") == "yes" and masq.get("normalize_scope") == "batch"):
        data.pop("batch_size", None)  # only masquerade's per-batch normalisation depends on it
    model = str(data.get("model", ""))
    if model and Path(model).expanduser().is_dir():
        data["model"] = os.path.abspath(Path(model).expanduser())
    text = json.dumps(_jsonable(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _input_key(source: Path) -> dict[str, Any]:
    st = source.stat()
    return {"source": str(source), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _done_record(clip_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((clip_dir / DONE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_done(clip_dir: Path, key: Mapping[str, Any], digest: str) -> dict[str, Any] | None:
    rec = _done_record(clip_dir)
    if not isinstance(rec, dict) or rec.get("settings_hash") != digest:
        return None
    if any(rec.get(k) != v for k, v in key.items()):
        return None
    outputs = rec.get("outputs") or {}
    if not isinstance(outputs, dict) or not all((clip_dir / str(name)).exists() for name in outputs.values()):
        return None
    return rec


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class ModelLoadFailed(Exception):
    """The batch's model failed to load: the batch stops (a clip's own error does not)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


# -- jobs -----------------------------------------------------------------------------------------------------------

BATCH_PARAMS = ParamSet((
    Param("engine", "choice", "local", "where clips run: 'local' (this process, one after another) or 'ray' "
          "(actors on a Ray cluster; pip install streammask[ray])", choices=("local", "ray")),
    Param("address", "str", None, "Ray cluster address (default: the RAY_ADDRESS environment variable, else a "
          "local Ray started for the batch)", nullable=True),
    Param("actors", "int", None, "Ray actors, each loads the model once (default: one per GPU with "
          "--gpus-per-actor, else 1)", min=1, max=4096, nullable=True),
    Param("gpus_per_actor", "float", 0.0, "GPUs each Ray actor reserves (0: CPU actors; 0.5: two per GPU)",
          min=0.0, max=64.0),
    Param("segment_seconds", "float", None, "split clips longer than this into segments (Ray: processed in "
          "parallel; local: one after another with the temporal state handed over), joined losslessly",
          min=0.001, nullable=True),
    Param("overlap_frames", "int", 8, "warm-up frames before each segment (temporal state; parallel segments)",
          min=0, max=100000),
    Param("max_retries", "int", 2, "Ray: resubmit a task that failed for a reason other than its input "
          "(a crashed actor, an out-of-memory error) up to this many times", min=0, max=100),
    Param("dry_run", "bool", False, "print the plan (clips, segments, per-worker load) and write nothing"),
), owner="batch")
"""Settings of a batch that are not run settings (engine, segments, dry run)."""


@dataclass
class ClipJob:
    """A clip that needs processing: where its outputs go and what its completion record holds."""

    item: BatchItem
    settings: dict[str, Any]
    clip_dir: Path
    key: dict[str, Any]
    digest: str
    result: ClipResult


def prepare_jobs(inputs, model, run_settings) -> tuple[dict[str, Any], list[tuple[BatchItem, dict[str, Any]]]]:
    base = _base_settings(model, run_settings)
    plans = []
    for item in plan_batch(inputs):
        settings = _clip_settings(base, item.overrides)
        check_prompt(settings.get("prompt", ""), where=f" for {item.source} (give --prompt, a pipeline file's prompt "
                     "or a manifest 'prompt' column)")
        plans.append((item, settings))
    return base, plans


def claim(item: BatchItem, settings: dict[str, Any], out: Path, owners: dict[Path, BatchItem], force: bool,
           *, clear: bool = True) -> ClipJob:
    """Check a clip (its subfolder is its own, the input exists) and whether it is done already.

    Returns a job whose ``result.status`` is ``skipped`` when done; raises for a clip that cannot run.
    """
    clip_dir = out / item.subdir
    result = ClipResult(path=str(item.source), status="failed", out_dir=str(clip_dir))
    owner = owners.setdefault(clip_dir, item)
    if owner is not item:
        raise ParameterError("out_dir", str(item.subdir),
                             f"a subfolder no other clip uses ({owner.source} from {owner.origin} "
                             "already writes there; give this row its own 'out_dir')")
    if not item.source.is_file():
        raise SourceNotFoundError(f"input video {str(item.source)!r} does not exist")
    key = _input_key(item.source)
    digest = settings_hash(settings)
    done = None if force else _is_done(clip_dir, key, digest)
    if done is not None:
        result.status = "skipped"
        result.frames = done.get("frames")
        result.outputs = {k: str(clip_dir / v) for k, v in (done.get("outputs") or {}).items()}
    elif clear:
        (clip_dir / DONE_NAME).unlink(missing_ok=True)  # never leave a stale claim while re-doing
    return ClipJob(item, settings, clip_dir, key, digest, result)


def record_done(job: ClipJob, frames: int, outputs: Mapping[str, os.PathLike], *, note: str | None = None) -> None:
    """Write the completion record (after every output got its final name) and fill in the result."""
    rel = {k: os.path.relpath(p, job.clip_dir) for k, p in outputs.items()}
    _write_json_atomic(job.clip_dir / DONE_NAME, {
        **job.key, "settings_hash": job.digest, "settings": _jsonable(
            {k: v for k, v in job.settings.items() if k not in _UNHASHED_KEYS}),
        "outputs": rel, "frames": frames,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    job.result.status = "ok"
    job.result.frames = frames
    job.result.note = note
    job.result.outputs = {k: str(p) for k, p in outputs.items()}


def run_kwargs(settings: Mapping[str, Any]) -> dict[str, Any]:
    """process_video keywords of a clip's settings."""
    return {k: v for k, v in settings.items() if k not in ("out_dir", "progress", "model", "revision", "device", "dtype")}


def clip_spec(source: Path, name: str, max_frames: int | None = None):
    """A planner :class:`~streammask.batch.plan.ClipSpec` with the exact frame count (from the packets, at most
    ``max_frames``) and rate."""
    info = probe(source)
    frames = len(frame_pts(source))
    return ClipSpec(name, frames if max_frames is None else min(frames, int(max_frames)), info.frame_rate), info


def plan_batch_work(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    workers: int = 1,
    segment_seconds: float | None = None,
    overlap_frames: int = 8,
    force: bool = False,
    model: str | os.PathLike = DEFAULT_MODEL,
    **run_settings: Any,
):
    """The dry run: which clips would run (not done yet), their segments and the load per worker.

    Reads only the inputs' headers and packets; writes nothing.

    Returns:
        ``(plan, skipped, failed)``: a :class:`~streammask.batch.plan.WorkPlan` of the clips to process
        (``ClipSpec.name`` is the input path), the paths already done, and ``{path: error}`` of
        clips that cannot run.
    """
    base, plans = prepare_jobs(inputs, model, run_settings)
    out = Path(out_dir)
    owners: dict[Path, BatchItem] = {}
    specs, skipped, failed = [], [], {}
    for item, settings in plans:
        try:
            job = claim(item, settings, out, owners, force, clear=False)
            if job.result.status == "skipped":
                skipped.append(str(item.source))
                continue
            specs.append(clip_spec(item.source, str(item.source), settings.get("max_frames"))[0])
        except Exception as exc:
            failed[str(item.source)] = f"{type(exc).__name__}: {exc}"
    align = int(base.get("batch_size") or 1)  # auto batch size: no grid to align to
    return plan_work(specs, workers, segment_seconds=segment_seconds, overlap=overlap_frames, align=align), skipped, failed


# -- command line ---------------------------------------------------------------------------------------------------


