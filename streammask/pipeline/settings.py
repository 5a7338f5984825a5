"""Run settings, declared once: :data:`RUN_PARAMS` and pipeline files (TOML).

Every run setting is a :class:`~streammask.params.Param` in :data:`RUN_PARAMS`: the
keyword of :func:`~streammask.process_video`, the ``streammask run`` flag and the
pipeline-file key come from that one declaration.

A pipeline file holds the same settings as ``streammask run``'s flags and
:func:`~streammask.process_video`'s keyword arguments; each variant's
parameters sit in a table named after it::

    prompt = "person"
    variants = ["mixlab"]
    outputs = ["mask", "heatmap", "matte"]

    [mixlab]
    blur = 3.0
    threshold = 0.3
    dilation_factor = 4

Unknown keys are an error naming the key and the file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping

from .. import ops
from ..errors import ParameterError, PipelineFileError, SourceNotFoundError
from ..io.writers import FORMATS, OUTPUT_PARAMS
from ..model.clipseg import DEFAULT_MODEL
from ..model.options import DTYPES, MODEL_SPEED_PARAMS
from ..model.sam3 import SAM3_PARAMS
from ..params import Param, ParamSet
from ..refine import REFINE_PARAMS
from ..temporal.keyframes import REDUCE_PARAMS
from ..temporal.smoothers import TEMPORAL_PARAMS
from ..variants import VARIANTS, get_variant
from .instances import INSTANCE_MODES
from .preflight import DEFAULT_OUTPUT_TEMPLATE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["RUN_PARAMS", "OUTPUT_KINDS", "normalize_variants", "with_threshold", "load_pipeline"]

OUTPUT_KINDS = ("mask", "heatmap", "matte")


RUN_PARAMS = ParamSet((
    Param("prompt", "str", "", "text prompt; several prompts separated by '|' (e.g. 'sky|trees')"),
    Param("out_dir", "str", "streammask-out", "output folder", cli_aliases=("-o",)),
    Param("variants", "list", ("soft",), "post-processing variants to run in one pass", choices=tuple(VARIANTS),
          cli_aliases=("--variant",)),
    Param("outputs", "list", OUTPUT_KINDS, "outputs to write per variant", choices=OUTPUT_KINDS),
    Param("model", "str", DEFAULT_MODEL, "Hugging Face model id or local directory of CLIPSeg or SAM 3 weights "
          "(safetensors; SAM 3: facebook/sam3, chosen by the model's config)"),
    Param("revision", "str", None, "model revision (branch, tag or commit) to pin", nullable=True),
    Param("device", "str", "auto", "auto | cpu | cuda | cuda:N"),
    Param("dtype", "choice", "auto", "model precision (auto: float16 on CUDA, float32 on CPU; int8: CPU only, "
          "~2x faster there, within a stated tolerance of float32)", choices=DTYPES),
    Param("batch_size", "int", None, "frames per model batch; none/auto: from free GPU memory on CUDA, 1 on a CPU "
          "(the fastest there)", min=1, max=1024, nullable=True),
    Param("mask_format", "choice", "mp4", "mask file format", choices=tuple(FORMATS["mask"])),
    Param("heatmap_format", "choice", "mp4", "heatmap file format", choices=tuple(FORMATS["heatmap"])),
    Param("matte_format", "choice", "prores", "matte file format", choices=tuple(FORMATS["matte"])),
    Param("heatmap_alpha", "float", 0.5, "opacity of the colormap over the frame (variants without their own heatmap)",
          min=0.0, max=1.0),
    Param("colormap", "choice", "jet", "colormap of the heatmap (variants without their own heatmap)",
          choices=ops.COLORMAPS),
    Param("max_frames", "int", None, "stop after this many frames", min=1, nullable=True),
    Param("queue_size", "int", 4, "batches buffered between stages", min=1, max=64),
    Param("progress", "bool", True, "show a progress bar on stderr"),
    Param("strict", "bool", False, "stop with an error at the first damaged packet (default: skip it, count it, go on)"),
    Param("keep_partial", "bool", False,
          "on an error or interruption, finalize the outputs written so far (playable) instead of deleting them"),
    *TEMPORAL_PARAMS,
    *REFINE_PARAMS,
    *OUTPUT_PARAMS,
    Param("overwrite", "bool", False, "replace existing outputs (default: refuse to start when one exists)"),
    Param("output_template", "str", DEFAULT_OUTPUT_TEMPLATE,
          "output name without its suffix; fields {stem}, {variant}, {kind}; must stay a plain name in out_dir"),
    Param("max_batch_mb", "float", 256.0, "most MB of decoded frames per batch and per queue: batch_size and queue "
          "sizes are reduced for large frames (8K: 2 frames per batch)", min=1.0),
    Param("threshold", "float", None, "the threshold of every selected variant (masquerade: its precision); a "
          "variant's own flag (--mixlab-threshold) or table key wins", min=0.0, max=1.0, nullable=True),
    *MODEL_SPEED_PARAMS,
    Param("threads", "int", None, "CPU threads of the model; none/auto: measured while the clip runs (1, half or all "
          "the cores, the fastest kept and measured again every minute), so a busy machine is not oversubscribed",
          min=1, max=1024, nullable=True),
    *REDUCE_PARAMS,
    Param("instances", "choice", "union", "SAM 3's instances: union (one mask per variant: every prompt's instances "
          "together) or separate (a mask / matte track per tracked object id, a colour-per-id heatmap overlay, and "
          "a JSON sidecar of ids, scores and boxes per frame)", choices=INSTANCE_MODES),
    *SAM3_PARAMS,
))


def normalize_variants(variants: Any) -> dict[str, dict[str, Any]]:
    """``"mixlab"`` / ``["soft", "mixlab"]`` / ``{"mixlab": {"blur": 2}}`` -> validated ``{name: params}``."""
    if isinstance(variants, str):
        variants = [v for v in variants.split(",") if v.strip()]
    if isinstance(variants, Mapping):
        items = list(variants.items())
    else:
        items = [(v, {}) for v in variants]
    if not items:
        raise ParameterError("variants", variants, "at least one of " + ", ".join(VARIANTS))
    out: dict[str, dict[str, Any]] = {}
    for name, params in items:
        name = name.strip()
        out[name] = get_variant(name).validate(params or {})
    return out


def load_pipeline(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a pipeline file.

    Returns:
        ``{run_param: value, ..., "variants": {name: params}}`` holding only the
        keys present in the file (run parameters validated, variant parameters
        validated and completed with their defaults).

    Raises:
        SourceNotFoundError: the file does not exist.
        PipelineFileError: it is not valid TOML, or holds an unknown key or a bad value.
    """
    p = Path(path)
    if not p.is_file():
        raise SourceNotFoundError(f"pipeline file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PipelineFileError(f"{p}: not a valid TOML file: {exc}") from None
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    plain = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for key in tables:
        if key not in VARIANTS:
            raise PipelineFileError(f"{p}: unknown table [{key}]; variant tables are " + ", ".join(f"[{n}]" for n in VARIANTS))
    try:
        settings = RUN_PARAMS.validate(plain, where=str(p), partial=True)
        names = list(settings.get("variants") or tables or ["soft"])
        for key in tables:
            if key not in names:
                raise PipelineFileError(f"{p}: table [{key}] is given but {key!r} is not in variants = {names}")
        settings["variants"] = {n: VARIANTS[n].validate(tables.get(n, {}), where=str(p)) for n in names}
    except ParameterError as exc:
        raise PipelineFileError(f"{p}: {exc}") from None
    return settings


def with_threshold(variants: Any, threshold: float | None) -> Any:
    """``variants`` with ``threshold`` as each one's threshold parameter (``Variant.threshold_param``), where the
    variant's own parameters do not already set it; ``variants`` unchanged when ``threshold`` is ``None``."""
    if threshold is None:
        return variants
    if isinstance(variants, str):
        variants = [v for v in variants.split(",") if v.strip()]
    items = variants.items() if isinstance(variants, Mapping) else [(v, {}) for v in variants]
    out = {}
    for name, params in items:
        name = name.strip()
        key = get_variant(name).threshold_param
        out[name] = {key: threshold, **dict(params or {})}
    return out
