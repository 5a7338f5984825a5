"""Parameter declarations.

Each parameter is declared once, as a :class:`Param`, and the same declaration
generates the CLI flags (:func:`add_arguments`), validates pipeline-file keys
and API keyword arguments (:meth:`ParamSet.validate`) and produces ComfyUI
``INPUT_TYPES`` entries (:meth:`Param.comfy_input`).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .errors import ParameterError

__all__ = ["Param", "ParamSet"]

_KINDS = ("float", "int", "str", "bool", "choice", "list")


@dataclass(frozen=True)
class Param:
    """One user-facing parameter.

    Args:
        name: python / pipeline-file name (``snake_case``).
        kind: one of ``float``, ``int``, ``str``, ``bool``, ``choice``, ``list``
            (a list of choices, given as ``a,b`` on the command line).
        default: the default value.
        help: one line for ``--help`` and the README.
        min, max: inclusive range for numbers.
        step: UI step for ComfyUI sliders.
        choices: allowed values for ``choice`` and ``list``.
        nullable: ``None`` is allowed (meaning "off" / "automatic").
        comfy_name: the name used in a ComfyUI node when it differs.
        multiline: ComfyUI multiline text box.
    """

    name: str
    kind: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    comfy_name: str | None = None
    multiline: bool = False
    cli_aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Param {self.name}: kind {self.kind!r} is not one of {_KINDS}")

    # -- description -------------------------------------------------------
    def allowed(self) -> str:
        """Human description of the allowed values."""
        if self.kind in ("float", "int"):
            lo = "-inf" if self.min is None else _fmt(self.min)
            hi = "inf" if self.max is None else _fmt(self.max)
            text = f"{'an integer' if self.kind == 'int' else 'a number'} in [{lo}, {hi}]"
        elif self.kind == "choice":
            text = "one of " + ", ".join(repr(c) for c in self.choices or ())
        elif self.kind == "list":
            text = "a list of " + ", ".join(repr(c) for c in self.choices or ())
        elif self.kind == "bool":
            text = "true or false"
        else:
            text = "a string"
        return text + (" or none" if self.nullable else "")

    # -- validation --------------------------------------------------------
    def validate(self, value: Any, *, label: str | None = None) -> Any:
        """Coerce ``value`` to this parameter's type or raise :class:`ParameterError`."""
        label = label or self.name
        if self.nullable and self.kind in ("int", "float") and isinstance(value, str) and value.strip().lower() in (
                "none", "auto"):
            value = None  # `--batch-size auto`, `batch_size = "auto"`
        if value is None:
            if self.nullable:
                return None
            raise ParameterError(label, value, self.allowed())
        kind = self.kind
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
                return value.lower() in ("true", "yes", "1", "on")
            raise ParameterError(label, value, self.allowed())
        if kind in ("float", "int"):
            if isinstance(value, bool):
                raise ParameterError(label, value, self.allowed())
            try:
                if kind == "int":
                    if isinstance(value, float) and not value.is_integer():
                        raise ValueError
                    number: float = int(value)
                else:
                    number = float(value)
            except (TypeError, ValueError):
                raise ParameterError(label, value, self.allowed()) from None
            if math.isnan(number) or (self.min is not None and number < self.min) or (
                self.max is not None and number > self.max
            ):
                raise ParameterError(label, value, self.allowed())
            return number
        if kind == "choice":
            if value not in (self.choices or ()):
                raise ParameterError(label, value, self.allowed())
            return value
        if kind == "list":
            items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
            items = [v for v in items if v != ""]
            bad = [v for v in items if v not in (self.choices or ())]
            if bad or (not items and not self.nullable):
                raise ParameterError(label, value, self.allowed())
            return tuple(dict.fromkeys(items))
        if not isinstance(value, str):
            raise ParameterError(label, value, self.allowed())
        return value

    # -- generators --------------------------------------------------------
    def comfy_input(self) -> tuple:
        """The ComfyUI ``INPUT_TYPES`` entry for this parameter."""
        if self.kind == "choice":
            return (list(self.choices or ()), {"default": self.default})
        if self.kind == "bool":
            return ("BOOLEAN", {"default": bool(self.default)})
        if self.kind in ("str", "list"):
            default = ",".join(self.default) if self.kind == "list" else (self.default or "")
            return ("STRING", {"default": default, "multiline": self.multiline})
        opts: dict[str, Any] = {"default": self.default}
        if self.min is not None:
            opts["min"] = self.min
        if self.max is not None:
            opts["max"] = self.max
        if self.step is not None:
            opts["step"] = self.step
        return ("INT" if self.kind == "int" else "FLOAT", opts)

    def add_argument(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, flag: str, dest: str) -> None:
        """Add this parameter as a CLI flag; the default is left as ``None`` (= not given)."""
        default_text = ",".join(self.default) if self.kind == "list" and self.default else self.default
        help_text = f"{self.help} ({self.allowed()}; default {default_text!r})"
        flags = (flag, *self.cli_aliases)
        if self.kind == "bool":
            parser.add_argument(*flags, dest=dest, default=None, action=argparse.BooleanOptionalAction, help=help_text)
            return
        metavar = {"float": "X", "int": "N", "str": "TEXT", "choice": "{" + ",".join(self.choices or ()) + "}", "list": "A,B"}[self.kind]
        if self.kind == "list":  # repeatable and/or comma separated: --outputs mask --outputs matte == --outputs mask,matte
            parser.add_argument(*flags, dest=dest, default=None, metavar=metavar, action="append", help=help_text)
            return
        parser.add_argument(*flags, dest=dest, default=None, metavar=metavar, help=help_text)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class ParamSet:
    """An ordered group of :class:`Param` with validation of whole mappings."""

    params: tuple[Param, ...]
    owner: str = ""
    _index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {p.name: p for p in self.params})

    def __iter__(self) -> Iterable[Param]:
        return iter(self.params)

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def __getitem__(self, name: str) -> Param:
        return self._index[name]

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def validate(self, values: Mapping[str, Any] | None, *, where: str | None = None, partial: bool = False) -> dict[str, Any]:
        """Validate ``values`` and fill in defaults.

        Unknown keys raise :class:`ParameterError` naming the key, ``where`` they
        came from and the allowed names.
        """
        values = dict(values or {})
        unknown = [k for k in values if k not in self._index]
        if unknown:
            place = f" in {where}" if where else ""
            owner = f" for {self.owner}" if self.owner else ""
            raise ParameterError(unknown[0], values[unknown[0]], f"a known key{owner}{place} ({', '.join(self.names())})")
        out = {} if partial else self.defaults()
        prefix = f"{self.owner}." if self.owner else ""
        for key, value in values.items():
            out[key] = self._index[key].validate(value, label=prefix + key)
        return out


def add_arguments(parser: argparse.ArgumentParser, params: Sequence[Param], *, prefix: str = "", title: str | None = None) -> None:
    """Add one flag per parameter: ``--name-with-dashes`` (with ``prefix-``)."""
    group = parser.add_argument_group(title) if title else parser
    for p in params:
        flag = "--" + (f"{prefix}-" if prefix else "") + p.name.replace("_", "-")
        dest = (f"{prefix}__" if prefix else "") + p.name
        p.add_argument(group, flag=flag, dest=dest)
