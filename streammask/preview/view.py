"""The pure parts of the preview: key handling (a state machine), the composed canvas, statistics."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import ParameterError
from ..variants import VARIANTS

__all__ = ["PreviewState", "VIEW_MODES", "VIEWS", "THRESHOLD_PARAM", "READOUT_HEIGHT", "panel_boxes", "compose",
           "matte_over", "LatencyStats", "PreviewSummary"]

VIEW_MODES = ("all", "source", "heatmap", "matte")
VIEWS = ("source", "heatmap", "matte")
# the parameter the up/down keys change, per variant
THRESHOLD_PARAM = {name: v.threshold_param for name, v in VARIANTS.items()}
"""Each variant's threshold parameter (what the up/down keys change)."""
READOUT_HEIGHT = 40


# ---------------------------------------------------------------------------------------------------------------------
# key handling: a pure state machine
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class PreviewState:
    """What the user controls, changed by keys (:meth:`handle`); no I/O.

    Keys (canonical names, as the window backends deliver them): ``up``/``down`` threshold of
    the shown variant by ``step``; ``v`` next view mode (:data:`VIEW_MODES`); ``c`` next
    variant; ``space`` pause; ``s`` snapshot; ``p`` or ``enter`` type a new prompt (then
    printable keys edit it, ``backspace`` deletes, ``enter`` applies, ``escape`` cancels);
    ``q`` or ``escape`` quit.
    """

    prompt: str
    variants: tuple[str, ...]
    thresholds: dict[str, float]
    step: float = 0.05
    variant_index: int = 0
    view_index: int = 0
    paused: bool = False
    editing: str | None = None
    quit: bool = False
    snapshots_requested: int = 0

    @property
    def variant(self) -> str:
        return self.variants[self.variant_index]

    @property
    def view_mode(self) -> str:
        return VIEW_MODES[self.view_index]

    @property
    def threshold(self) -> float:
        return self.thresholds[self.variant]

    def handle(self, key: str) -> set[str]:
        """Apply one key; returns what changed: a subset of ``{"prompt", "threshold", "variant", "view",
        "pause", "snapshot", "quit", "edit"}``."""
        if self.editing is not None:
            if key == "enter":
                text = self.editing.strip()
                self.editing = None
                if text and text != self.prompt:
                    self.prompt = text
                    return {"prompt", "edit"}
                return {"edit"}
            if key == "escape":
                self.editing = None
                return {"edit"}
            if key == "backspace":
                self.editing = self.editing[:-1]
                return {"edit"}
            if key == "space":
                self.editing += " "
                return {"edit"}
            if len(key) == 1 and key.isprintable():
                self.editing += key
                return {"edit"}
            return set()
        if key in ("q", "escape"):
            self.quit = True
            return {"quit"}
        if key in ("up", "down"):
            sign = 1 if key == "up" else -1
            new = min(1.0, max(0.0, round(self.threshold + sign * self.step, 6)))
            if new == self.threshold:
                return set()
            self.thresholds[self.variant] = new
            return {"threshold"}
        if key == "v":
            self.view_index = (self.view_index + 1) % len(VIEW_MODES)
            return {"view"}
        if key == "c":
            if len(self.variants) < 2:
                return set()
            self.variant_index = (self.variant_index + 1) % len(self.variants)
            return {"variant"}
        if key == "space":
            self.paused = not self.paused
            return {"pause"}
        if key == "s":
            self.snapshots_requested += 1
            return {"snapshot"}
        if key in ("p", "enter"):
            self.editing = ""
            return {"edit"}
        return set()

    def readout(self, *, fps: float, latency_ms: float, dropped: int, captured: int) -> list[str]:
        """The two lines shown under the views."""
        if self.editing is not None:
            first = f"new prompt: {self.editing}_   (Enter: apply, Esc: cancel)"
        else:
            name = THRESHOLD_PARAM[self.variant]
            first = f"prompt: {self.prompt}   variant: {self.variant}   {name}: {self.threshold:.2f}"
        pct = 100.0 * dropped / captured if captured else 0.0
        second = (f"{fps:5.1f} fps   latency {latency_ms:4.0f} ms   dropped {dropped} ({pct:.0f}%)"
                  + ("   PAUSED" if self.paused else "") + "   [up/down v c space s p q]")
        return [first, second]


# ---------------------------------------------------------------------------------------------------------------------
# composing the views (pure)
# ---------------------------------------------------------------------------------------------------------------------
def _checker(h: int, w: int, cell: int = 12) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    light = ((yy // cell + xx // cell) % 2 == 0)
    out = np.where(light[..., None], np.uint8(0x99), np.uint8(0x66)).astype(np.uint8)
    return np.repeat(out, 3, axis=-1)


def matte_over(rgba: np.ndarray, background: str = "checker") -> np.ndarray:
    """Composite an ``(H, W, 4)`` uint8 straight-alpha matte over a checkerboard or green: ``(H, W, 3)`` uint8."""
    h, w = rgba.shape[:2]
    if background == "green":
        bg = np.empty((h, w, 3), np.uint8)
        bg[:] = (0, 177, 64)
    elif background == "checker":
        bg = _checker(h, w)
    else:
        raise ParameterError("matte_background", background, "'checker' or 'green'")
    a = rgba[..., 3:4].astype(np.uint16)
    out = (rgba[..., :3].astype(np.uint16) * a + bg.astype(np.uint16) * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def panel_boxes(width: int, height: int, *, view_height: int,
                mode: str = "all") -> list[tuple[str, int, int, int, int]]:
    """Where each view sits in the canvas: ``[(name, x, y, w, h)]``.

    Each view is scaled to ``view_height`` (aspect kept); ``all`` puts source | heatmap |
    matte side by side, the other modes show one view. The readout bar
    (:data:`READOUT_HEIGHT` pixels) is below the views.
    """
    if mode not in VIEW_MODES:
        raise ParameterError("view mode", mode, "one of " + ", ".join(VIEW_MODES))
    pw = max(1, int(round(width * view_height / height)))
    names = VIEWS if mode == "all" else (mode,)
    return [(name, i * pw, 0, pw, view_height) for i, name in enumerate(names)]


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.42, outline: bool = True) -> None:
    import cv2

    if outline:  # readable over any picture
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def compose(views: Mapping[str, np.ndarray], *, view_height: int, mode: str = "all",
            lines: Sequence[str] = (), labels: bool = True, min_width: int = 480) -> np.ndarray:
    """The preview canvas: views side by side (or one) over a readout bar.

    Args:
        views: ``{"source", "heatmap", "matte"}`` -> ``(H, W, 3)`` uint8 RGB, all the same size.
        view_height: height of each view in the canvas.
        mode: one of :data:`VIEW_MODES`.
        lines: readout text lines (two fit).
        labels: write each view's name in its top-left corner.
        min_width: the canvas is at least this wide (room for the readout).

    Returns:
        ``(view_height + READOUT_HEIGHT, W, 3)`` uint8 RGB.
    """
    import cv2

    h, w = next(iter(views.values())).shape[:2]
    boxes = panel_boxes(w, h, view_height=view_height, mode=mode)
    width = max(min_width, boxes[-1][1] + boxes[-1][3])
    canvas = np.zeros((view_height + READOUT_HEIGHT, width, 3), np.uint8)
    canvas[view_height:] = 32
    for name, x, y, pw, ph in boxes:
        img = views[name]
        interp = cv2.INTER_AREA if ph < h else cv2.INTER_LINEAR
        canvas[y:y + ph, x:x + pw] = cv2.resize(img, (pw, ph), interpolation=interp) if (pw, ph) != (w, h) else img
        if labels:
            _text(canvas, name, (x + 5, y + 14), 0.4)
    for i, line in enumerate(lines[:2]):
        _text(canvas, line, (6, view_height + 16 + 17 * i), 0.42, outline=False)
    return canvas


# ---------------------------------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------------------------------
class LatencyStats:
    """Capture-to-display latency and display rate."""

    def __init__(self, window: int = 4096) -> None:
        self.latencies: collections.deque = collections.deque(maxlen=window)
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self._shown_at: collections.deque = collections.deque(maxlen=64)

    def shown(self, captured_at: Sequence[float], now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        for t in captured_at:
            lat = now - t
            self.latencies.append(lat)
            self.count += 1
            self.total += lat
            self.max = max(self.max, lat)
        self._shown_at.append(now)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")

    @property
    def last(self) -> float:
        return self.latencies[-1] if self.latencies else float("nan")

    def percentile(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies), q)) if self.latencies else float("nan")

    @property
    def fps(self) -> float:
        """Views shown per second over the last ~2 s."""
        if len(self._shown_at) < 2:
            return 0.0
        now = self._shown_at[-1]
        recent = [t for t in self._shown_at if now - t <= 2.0]
        if len(recent) < 2 or recent[-1] - recent[0] < 0.25:  # too few samples for a rate
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0]) if recent[-1] > recent[0] else 0.0


@dataclass
class PreviewSummary:
    """What a preview session did."""

    source: str
    captured: int
    processed: int
    dropped: int
    seconds: float
    latency_mean: float
    latency_p95: float
    latency_max: float
    reconnects: int
    stop_reason: str
    damaged_packets: int = 0
    not_recorded: int = 0
    recordings: dict[str, Path] = field(default_factory=dict)
    snapshots: list[Path] = field(default_factory=list)
    prompt: str = ""
    thresholds: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("nan")

    def describe(self) -> str:
        pct = 100.0 * self.dropped / self.captured if self.captured else 0.0
        lines = [
            f"preview of {self.source}: {self.processed} frames shown in {self.seconds:.2f} s "
            f"({self.fps:.2f} frames/s); stopped: {self.stop_reason}",
            f"  latency capture->display: mean {1000 * self.latency_mean:.0f} ms, "
            f"p95 {1000 * self.latency_p95:.0f} ms, max {1000 * self.latency_max:.0f} ms",
            f"  dropped {self.dropped} of {self.captured} captured frames ({pct:.1f} %)"
            + (f"; {self.reconnects} reconnection(s)" if self.reconnects else "")
            + (f"; skipped {self.damaged_packets} damaged packet(s)" if self.damaged_packets else ""),
            f"  last prompt {self.prompt!r}, " + ", ".join(f"{v} {THRESHOLD_PARAM[v]} {t:.2f}"
                                                           for v, t in self.thresholds.items()),
        ]
        for key, path in self.recordings.items():
            lines.append(f"  recorded {key:<20} {path}")
        if self.not_recorded:
            lines.append(f"  {self.not_recorded} frame(s) not recorded: the source changed its frame size")
        if self.snapshots:
            lines.append(f"  {len(self.snapshots)} snapshot file(s) in {self.snapshots[0].parent}")
        return "\n".join(lines)
