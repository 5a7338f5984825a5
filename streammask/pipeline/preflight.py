"""Preflight: the output and memory checks :func:`~streammask.process_video` runs before any work starts.

* :func:`plan_outputs` renders every output's final name from the output template
  (``{stem}.{variant}.{kind}``), refusing names that would leave the output folder.
* :func:`check_outputs` refuses an output that would replace the input (the same file, a
  link to it, or a PNG-sequence folder holding it) and, unless ``overwrite``, any output
  that already exists.
* :func:`ensure_output_dir` creates the output folder and proves it is writable.
* :func:`preflight_outputs`: both, for a run's variants, kinds and formats.
* :func:`fit_batch_to_memory` / :func:`queue_slots` cap the decoded frames held per batch and
  per queue by a byte budget, so 8K input runs in bounded memory.

Paths are taken literally everywhere: no shell, no ``~`` or ``$VAR`` expansion.
"""

from __future__ import annotations

import logging
import os
import string
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import OutputError, OutputExistsError, ParameterError
from ..io.writers import FORMATS, partial_path

__all__ = [
    "DEFAULT_OUTPUT_TEMPLATE", "TEMPLATE_FIELDS", "render_output_name", "plan_outputs", "check_outputs",
    "ensure_output_dir", "missing_folders", "remove_empty_folders", "preflight_outputs", "fit_batch_to_memory", "queue_slots",
]

log = logging.getLogger("streammask")

DEFAULT_OUTPUT_TEMPLATE = "{stem}.{variant}.{kind}"
TEMPLATE_FIELDS = ("stem", "variant", "kind")
_SEPARATORS = tuple(s for s in {"/", "\\", os.sep, os.altsep} if s)


# -- output names ---------------------------------------------------------------------------------------------------

def _template_fields(template: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ParameterError("output_template", template, f"a format string with fields {{stem}}, {{variant}}, "
                             f"{{kind}} ({exc})") from None
    fields = []
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or spec or conv:
            raise ParameterError("output_template", template, "a format string whose only fields are "
                                 + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS) + f" (got {{{name}}})")
        fields.append(name)
    return fields


def render_output_name(template: str, *, stem: str, variant: str, kind: str) -> str:
    """Render one output's base name (the format's suffix is added by the writer).

    The result must be a plain file name: no path separator, not empty, ``.`` or ``..``,
    no NUL byte; so the output cannot land outside the output folder.

    Raises:
        ParameterError: naming ``output_template``, the template and what is allowed.
    """
    _template_fields(template)
    name = template.format(stem=stem, variant=variant, kind=kind)
    bad = None
    if name in ("", ".", ".."):
        bad = f"it renders to {name!r}"
    elif any(s in name for s in _SEPARATORS):
        bad = f"it renders to {name!r}, which holds a path separator"
    elif "\x00" in name:
        bad = "it renders to a name holding a NUL byte"
    if bad:
        raise ParameterError("output_template", template,
                             f"a template that renders a plain file name inside the output folder ({bad})")
    return name


def plan_outputs(source: str | os.PathLike, out_dir: str | os.PathLike, *, variants: Iterable[str],
                 kinds: Sequence[str], formats: Mapping[str, str],
                 template: str = DEFAULT_OUTPUT_TEMPLATE) -> dict[tuple[str, str], Path]:
    """The final path of every output: ``{(variant, kind): out_dir / (name + suffix)}``.

    Args:
        source: the input video (its stem fills ``{stem}``).
        out_dir: the output folder, taken literally.
        variants: variant names.
        kinds: output kinds (``mask``, ``heatmap``, ``matte``).
        formats: ``{kind: format name}`` (see :data:`streammask.io.writers.FORMATS`).
        template: the output name template.

    Raises:
        ParameterError: the template escapes the folder, or two outputs get the same name.
    """
    out = Path(out_dir)
    stem = Path(source).stem
    planned: dict[tuple[str, str], Path] = {}
    seen: dict[Path, tuple[str, str]] = {}
    for variant in variants:
        for kind in kinds:
            fmt = FORMATS[kind][formats[kind]]
            path = out / (render_output_name(template, stem=stem, variant=variant, kind=kind) + fmt.suffix)
            # belt and braces: the name is a single component, so the parent is the folder itself
            if (os.path.dirname(os.path.normpath(path)) or ".") != os.path.normpath(out):
                raise ParameterError("output_template", template,
                                     "a template whose names stay inside the output folder")
            if path in seen:
                other = seen[path]
                raise ParameterError("output_template", template,
                                     f"a template giving every output its own name ({other[0]}.{other[1]} and "
                                     f"{variant}.{kind} would both be {path.name!r}: use {{variant}} and {{kind}})")
            seen[path] = (variant, kind)
            planned[(variant, kind)] = path
    return planned


def _is_within(child: str, folder: str) -> bool:
    try:
        return os.path.commonpath([child, folder]) == folder
    except ValueError:  # different drives
        return False


def check_outputs(source: str | os.PathLike, planned: Mapping[Any, Path], *, folders: Iterable[Path] = (),
                  overwrite: bool = False) -> None:
    """Refuse outputs that would destroy the input or existing files.

    Args:
        source: the input file.
        planned: final output paths.
        folders: those of ``planned`` that are image-sequence folders (the others are files).
        overwrite: allow replacing existing outputs (never the input itself).

    Raises:
        OutputError: an output would be the input (or a link to it), or a sequence folder holds the input.
        OutputExistsError: without ``overwrite``, the first output that already exists
            (or, with it, an existing output of the other kind: a folder where a file goes).
    """
    src = os.path.realpath(source)
    folders = {Path(f) for f in folders}
    for path in planned.values():
        for candidate in (path, partial_path(path)):
            real = os.path.realpath(candidate)
            same = real == src
            if not same and os.path.exists(candidate):
                try:
                    same = os.path.samefile(candidate, source)  # hard links
                except OSError:
                    pass
            if same:
                raise OutputError(f"output {str(candidate)!r} would replace the input {str(source)!r}: choose another "
                                  "output folder (-o/--out-dir) or --output-template")
            if path in folders and _is_within(src, real):
                raise OutputError(f"output folder {str(candidate)!r} (an image sequence) holds the input "
                                  f"{str(source)!r} and would be replaced: choose another output folder (-o/--out-dir)")
    existing = [p for p in planned.values() if os.path.lexists(p)]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExistsError(f"output {str(existing[0])!r} already exists{more}: pass --overwrite "
                                "(overwrite=True) to replace existing outputs")
    for p in existing:
        sequence = p in folders
        if sequence and not p.is_dir() or not sequence and p.is_dir():
            what = "a file" if sequence else "a folder"
            raise OutputExistsError(f"output {str(p)!r} exists as {what}, where this run writes "
                                    f"{'an image-sequence folder' if sequence else 'a video file'}: remove it first")


def ensure_output_dir(out_dir: str | os.PathLike) -> Path:
    """Create the output folder (and parents) and prove that files can be created in it.

    Raises:
        OutputError: one line naming the folder and why (not a folder, permission, read-only, ...).
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"output folder {str(out)!r} cannot be created: a file of that name exists") from None
    except NotADirectoryError:
        raise OutputError(f"output folder {str(out)!r} cannot be created: part of its path is a file") from None
    except OSError as exc:
        raise OutputError(f"output folder {str(out)!r} cannot be created: {exc.strerror or exc}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".streammask-write-test-", dir=out)
    except OSError as exc:
        raise OutputError(f"output folder {str(out)!r} is not writable: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)
    return out


def missing_folders(out_dir: str | os.PathLike) -> list[Path]:
    """The folders of ``out_dir``'s path that do not exist yet (deepest first): what
    :func:`ensure_output_dir` will create, and what a failed run removes again when empty."""
    missing = []
    path = Path(out_dir)
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def remove_empty_folders(folders: Iterable[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that exists and is empty; never anything else."""
    for folder in folders:
        try:
            folder.rmdir()  # fails on a folder that holds anything: kept
        except OSError:
            break


# -- both -----------------------------------------------------------------------------------------------------------

def preflight_outputs(source: str | os.PathLike, out_dir: str | os.PathLike, *, variants: Iterable[str],
                      kinds: Sequence[str], formats: Mapping[str, str], template: str = DEFAULT_OUTPUT_TEMPLATE,
                      overwrite: bool = False) -> dict[tuple[str, str], Path]:
    """:func:`plan_outputs`, then :func:`check_outputs` on the plan (image-sequence formats are folders).

    Returns:
        ``{(variant, kind): final path}``.

    Raises:
        ParameterError, OutputError, OutputExistsError: as the two checks.
    """
    planned = plan_outputs(source, out_dir, variants=variants, kinds=kinds, formats=formats, template=template)
    check_outputs(source, planned, overwrite=overwrite,
                  folders=[p for (_, k), p in planned.items() if FORMATS[k][formats[k]].suffix == ""])
    return planned


# -- memory ---------------------------------------------------------------------------------------------------------

def fit_batch_to_memory(batch_size: int, *, width: int, height: int, max_batch_mb: float) -> int:
    """The batch size to use: ``batch_size`` reduced so one batch of decoded RGB frames
    (``B * H * W * 3`` bytes) fits in ``max_batch_mb`` (at least 1 frame).

    A reduction is logged (``streammask`` logger, warning level, so the CLI shows it).
    """
    frame_bytes = max(1, width * height * 3)
    fit = max(1, int(max_batch_mb * 2**20 // frame_bytes))
    if fit >= batch_size:
        return batch_size
    log.warning("batch size %d reduced to %d: %dx%d frames are %.1f MB each and a batch may hold %s MB "
                "(--max-batch-mb)", batch_size, fit, width, height, frame_bytes / 2**20, _fmt_mb(max_batch_mb))
    return fit


def queue_slots(queue_size: int, item_bytes: int, *, max_batch_mb: float) -> int:
    """Slots of a queue whose items are ``item_bytes`` each: ``queue_size``, reduced so the
    queue holds at most ``max_batch_mb`` (at least one item)."""
    fit = max(1, int(max_batch_mb * 2**20 // max(1, item_bytes)))
    return max(1, min(queue_size, fit))


def _fmt_mb(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
