"""Declarative pipeline files (TOML).

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
from typing import Any

from .errors import ParameterError, PipelineFileError, SourceNotFoundError
from .pipeline import RUN_PARAMS
from .variants import VARIANTS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["load_pipeline"]


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
