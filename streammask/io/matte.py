"""Matte styles: how the source frame and the mask become the ``matte`` output.

=================  =======================================================  ==========
style              pixels                                                    alpha
=================  =======================================================  ==========
``straight``       source RGB                                                the mask
``premultiplied``  source RGB x mask                                         the mask
``solid``          source RGB over ``matte_color`` (green screen)            none
``background``     source RGB over ``background`` (an image or a video)      none
``alpha``          the mask as gray (luma matte)                              none
=================  =======================================================  ==========

``auto`` (the default of ``matte_style``) is ``premultiplied`` for OpenEXR mattes (what EXR
readers expect) and ``straight`` for every other format (:func:`resolve_matte_style`).

Compositing is ``out = fg * a + bg * (1 - a)`` in the file's code values (no
linearisation, as editors' "normal" blend mode on video does), rounded to the
output's bit depth; half-float OpenEXR mattes are composed in float
(:func:`compose_matte_float`) and rounded once, to half.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import ParameterError
from .video import frame_pts, probe, read_batches

__all__ = ["MATTE_STYLES", "MATTE_STYLE_CHOICES", "MATTE_HAS_ALPHA", "parse_color", "resolve_matte_style",
           "compose_matte", "compose_matte_float", "MatteBatch", "Background"]

MATTE_STYLES = ("straight", "premultiplied", "solid", "background", "alpha")
MATTE_STYLE_CHOICES = ("auto", *MATTE_STYLES)
"""The ``matte_style`` setting's values: ``auto`` and the styles."""
PREMULTIPLIED_FORMATS = ("exr",)
"""Matte formats whose readers expect premultiplied colour (``auto`` picks it there)."""
# styles whose file keeps an alpha channel
MATTE_HAS_ALPHA = {"straight": True, "premultiplied": True, "solid": False, "background": False, "alpha": False}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".exr"}


def parse_color(text: str, *, name: str = "matte_color") -> tuple[int, int, int]:
    """``"#00ff00"``, ``"00ff00"`` or ``"0,255,0"`` -> ``(0, 255, 0)``."""
    s = str(text).strip()
    try:
        if "," in s:
            rgb = tuple(int(v) for v in s.split(","))
            if len(rgb) == 3 and all(0 <= v <= 255 for v in rgb):
                return rgb  # type: ignore[return-value]
        else:
            h = s[1:] if s.startswith("#") else s
            if len(h) == 6:
                return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
    except ValueError:
        pass
    raise ParameterError(name, text, "a colour '#rrggbb' or 'r,g,b' (0-255)")


def resolve_matte_style(style: str, matte_format: str) -> str:
    """The style a matte is written in: ``auto`` is ``premultiplied`` for the formats of
    :data:`PREMULTIPLIED_FORMATS` (OpenEXR) and ``straight`` for the others; a style is itself."""
    if style == "auto":
        return "premultiplied" if matte_format in PREMULTIPLIED_FORMATS else "straight"
    if style not in MATTE_STYLES:
        raise ParameterError("matte_style", style, "one of " + ", ".join(repr(s) for s in MATTE_STYLE_CHOICES))
    return style


def _scale(rgb: np.ndarray, dtype) -> np.ndarray:
    """uint8 (or uint16) RGB -> ``dtype`` (uint8 -> uint16: x257, so 255 -> 65535)."""
    if rgb.dtype == dtype:
        return rgb
    if dtype == np.uint8:  # a deep frame into an 8-bit output
        return np.rint(rgb / 257).astype(np.uint8)
    return rgb.astype(np.uint16) * np.uint16(257)


def compose_matte(rgb: np.ndarray, mask: np.ndarray, *, style: str = "straight",
                  color: tuple[int, int, int] = (0, 255, 0), background: np.ndarray | None = None) -> np.ndarray:
    """Build the matte pixels for one batch.

    Args:
        rgb: ``(B, H, W, 3)`` uint8 source frames (or uint16 ones of a deep source).
        mask: ``(B, H, W, 1)`` uint8 or uint16 mask (its dtype is the output's).
        style: one of :data:`MATTE_STYLES`.
        color: the solid colour (``solid``), 0-255.
        background: ``(B, H, W, 3)`` uint8 background frames (``background``).

    Returns:
        ``(B, H, W, 4)`` for ``straight``/``premultiplied``, ``(B, H, W, 3)`` for
        ``solid``/``background``, ``(B, H, W, 1)`` for ``alpha``; the mask's dtype.
    """
    dtype = mask.dtype
    top = 255 if dtype == np.uint8 else 65535
    if style == "alpha":
        return mask
    fg = _scale(rgb, dtype)
    if style == "straight":
        return np.concatenate([fg, mask], axis=-1)
    a = mask.astype(np.float32) / top
    if style == "premultiplied":
        return np.concatenate([np.rint(fg * a).astype(dtype), mask], axis=-1)
    if style == "solid":
        bg = np.asarray(color, np.float32) * (top / 255)
    elif style == "background":
        if background is None:
            raise ParameterError("background", None, "an image or video file when matte_style='background'")
        bg = _scale(background, dtype).astype(np.float32)
    else:
        raise ParameterError("matte_style", style, "one of " + ", ".join(repr(s) for s in MATTE_STYLES))
    return np.rint(fg * a + bg * (1 - a)).clip(0, top).astype(dtype)


def _unit(x: np.ndarray) -> np.ndarray:
    """uint8 / uint16 code values -> float32 in ``[0, 1]`` (/255, /65535)."""
    return x.astype(np.float32) / np.float32(255 if x.dtype == np.uint8 else 65535)


def compose_matte_float(rgb: np.ndarray, mask: np.ndarray, *, style: str = "straight",
                        color: tuple[int, int, int] = (0, 255, 0), background: np.ndarray | None = None) -> np.ndarray:
    """:func:`compose_matte` in float32, values in ``[0, 1]``, without rounding (float outputs: OpenEXR).

    The colour is ``rgb / 255`` (``/ 65535`` for a uint16 deep frame), the alpha ``mask / 255`` or
    ``mask / 65535``; ``premultiplied`` multiplies the colour by the alpha, ``solid`` and
    ``background`` compose ``fg * a + bg * (1 - a)``.

    Returns:
        ``(B, H, W, C)`` float32: C = 4 (``straight``, ``premultiplied``), 3 (``solid``, ``background``)
        or 1 (``alpha``).
    """
    a = _unit(mask)
    if style == "alpha":
        return a
    fg = _unit(rgb)
    if style == "straight":
        return np.concatenate([fg, a], axis=-1)
    if style == "premultiplied":
        return np.concatenate([fg * a, a], axis=-1)
    if style == "solid":
        bg = np.asarray(color, np.float32) / np.float32(255)
    elif style == "background":
        if background is None:
            raise ParameterError("background", None, "an image or video file when matte_style='background'")
        bg = _unit(background)
    else:
        raise ParameterError("matte_style", style, "one of " + ", ".join(repr(s) for s in MATTE_STYLES))
    return fg * a + bg * (1 - a)


class MatteBatch:
    """A batch's matte, not yet composed: the writer composes it frame by frame on its own
    thread (:meth:`frames`), so the queue to the encoder holds the 8-bit frames and the mask
    instead of finished (16-bit) RGBA, and the compositing runs beside the model.

    Args:
        rgb: ``(B, H, W, 3)`` uint8 (or uint16) source frames.
        mask: ``(B, H, W, 1)`` uint8 or uint16 mask.
        style, color, background: see :func:`compose_matte`.
    """

    def __init__(self, rgb: np.ndarray, mask: np.ndarray, *, style: str = "straight",
                 color: tuple[int, int, int] = (0, 255, 0), background: np.ndarray | None = None) -> None:
        self.rgb, self.mask, self.style, self.color, self.background = rgb, mask, style, color, background

    def __len__(self) -> int:
        return len(self.mask)

    def frames(self) -> Iterator[np.ndarray]:
        """The composed frames, ``(H, W, C)`` each."""
        for i in range(len(self)):
            bg = None if self.background is None else self.background[i:i + 1]
            yield compose_matte(self.rgb[i:i + 1], self.mask[i:i + 1], style=self.style, color=self.color,
                                background=bg)[0]

    def compose(self) -> np.ndarray:
        """The whole batch, ``(B, H, W, C)``."""
        return compose_matte(self.rgb, self.mask, style=self.style, color=self.color, background=self.background)

    def frames_float(self) -> Iterator[np.ndarray]:
        """The composed frames in float32 (:func:`compose_matte_float`), ``(H, W, C)`` each."""
        for i in range(len(self)):
            bg = None if self.background is None else self.background[i:i + 1]
            yield compose_matte_float(self.rgb[i:i + 1], self.mask[i:i + 1], style=self.style, color=self.color,
                                      background=bg)[0]


class Background:
    """Background frames for ``matte_style='background'``, resized to the output size.

    An image gives the same frame every time; a video gives its frames in order and
    starts again from its first frame when it ends (a short loop behind a long shot).
    :meth:`take` with ``indices`` addresses the video by the clip's frame index (frame
    ``i`` of the clip gets background frame ``i mod length``), so a segment of a clip
    gets the background frames one pass gives it.

    Args:
        path: image or video file.
        width, height: output frame size (the background is resized to it, aspect not kept).
    """

    def __init__(self, path: str | os.PathLike, *, width: int, height: int) -> None:
        import cv2

        p = Path(path)
        if not p.is_file():
            raise ParameterError("background", str(path), "an existing image or video file")
        self.path, self.width, self.height = p, width, height
        self._image: np.ndarray | None = None
        self._frames: Iterator[np.ndarray] | None = None
        self._next = 0  # index (in the background video) of the frame self._frames yields next
        self._index: list[int] | None = None  # the background video's frame pts, read when first seeking
        if p.suffix.lower() in IMAGE_SUFFIXES:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise ParameterError("background", str(path), "an image OpenCV can read, or a video")
            self._image = self._fit(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        else:
            probe(p)  # a clear error now if it is not a video
            self._frames = self._video()

    def _fit(self, img: np.ndarray) -> np.ndarray:
        import cv2

        if img.shape[:2] == (self.height, self.width):
            return img
        interp = cv2.INTER_AREA if img.shape[0] * img.shape[1] > self.width * self.height else cv2.INTER_LINEAR
        return cv2.resize(img, (self.width, self.height), interpolation=interp)

    def _video(self, start: int = 0) -> Iterator[np.ndarray]:
        first = self._index[start] if start and self._index else None
        while True:
            for batch in read_batches(self.path, batch_size=1, start_pts=first):
                img = self._fit(batch.frames[0])
                self._next += 1
                yield img
            if self._index is None:
                self._index = list(range(self._next))  # its length, learnt by playing it once
            self._next, first = 0, None

    def _seek(self, i: int) -> None:
        """Make frame ``i`` of the clip (background frame ``i mod length``) the next one."""
        if self._index is None:
            self._index = frame_pts(self.path)
        i %= len(self._index)
        if i != self._next % len(self._index):
            self._next = i
            self._frames = self._video(i)

    def take(self, n: int, *, indices: Sequence[int] | None = None) -> np.ndarray:
        """The next ``n`` background frames, ``(n, H, W, 3)`` uint8; or, with ``indices`` (the
        clip's frame indices, ``n`` of them), the frames that belong to those clip frames."""
        if self._image is not None:
            return np.broadcast_to(self._image, (n, *self._image.shape))
        if indices is None:
            return np.stack([next(self._frames) for _ in range(n)])
        out = []
        for i in indices:
            self._seek(int(i))
            out.append(next(self._frames))
        return np.stack(out)
