"""Exceptions raised by streammask.

Every error derives from :class:`StreamMaskError` *and* from the builtin that
describes it, so callers can catch either ``StreamMaskError`` or the builtin
(``ValueError``, ``FileNotFoundError``, ...).
"""

from __future__ import annotations

__all__ = [
    "StreamMaskError",
    "ParameterError",
    "PipelineFileError",
    "SourceNotFoundError",
    "InvalidVideoError",
    "ModelLoadError",
    "OutputError",
    "OutputExistsError",
]


class StreamMaskError(Exception):
    """Root of every error streammask raises on purpose."""


class ParameterError(StreamMaskError, ValueError):
    """A parameter has a value outside what is allowed.

    The message names the parameter, the value given and what is allowed.
    """

    def __init__(self, name: str, value: object, allowed: str) -> None:
        self.name = name
        self.value = value
        self.allowed = allowed
        super().__init__(f"{name}={value!r} is not allowed: expected {allowed}")


class PipelineFileError(StreamMaskError, ValueError):
    """A pipeline file cannot be read or holds a key or value that is not allowed."""


class SourceNotFoundError(StreamMaskError, FileNotFoundError):
    """The input video (or model directory) does not exist."""


class InvalidVideoError(StreamMaskError, ValueError):
    """The input exists but cannot be decoded as a video."""


class ModelLoadError(StreamMaskError, OSError):
    """The CLIPSeg weights or processor cannot be loaded."""


class OutputError(StreamMaskError, OSError):
    """An output file cannot be written."""


class OutputExistsError(OutputError, FileExistsError):
    """An output already exists and ``overwrite`` is off (or it is of the other kind: a folder where a file goes)."""
