"""The instance sidecar: a JSON file of the tracked objects' ids, scores and boxes in every frame, written as it goes.

One JSON document, streamed: the header (source, size, exact frame rate and time base, what the fields
mean), then ``"frames"`` with one entry per written frame, appended as the frames are written (nothing is
held back, so memory stays flat on any length), and at the end ``"ids"``: per object id its prompt, first
and last frame and the number of frames it is visible in. Written under a hidden temporary name and
renamed when complete, like every output.

Example of a frame entry::

    {"frame": 12, "pts": 12012, "seconds": 0.4004,
     "objects": [{"id": 3, "prompt": "person", "score": 0.93, "tracker_score": 0.88, "box": [41, 10, 97, 143]}]}
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

from ..errors import OutputError
from .writers import partial_path

__all__ = ["InstanceSidecar"]


class InstanceSidecar:
    """Stream per-frame instance records into one JSON file (``write_frame`` ... ``close``).

    Args:
        path: the final path (``.json``).
        header: extra top-level fields written first (``source``, ``model``, ``prompts``, ...).
        width, height: the frame size the boxes refer to.
        frame_rate, time_base: exact (written as ``"30000/1001"`` strings).
    """

    def __init__(self, path: Path, *, width: int, height: int, frame_rate: Fraction | None,
                 time_base: Fraction | None, header: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.tmp = partial_path(self.path)
        self.time_base = time_base
        self.frames_written = 0
        self.ids: dict[int, dict[str, Any]] = {}
        try:
            self._file = open(self.tmp, "w", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc}") from exc
        head = dict(header or {})
        head.update(width=int(width), height=int(height),
                    frame_rate=None if frame_rate is None else str(Fraction(frame_rate)),
                    time_base=None if time_base is None else str(Fraction(time_base)),
                    box="x0, y0, x1, y1: inclusive pixel bounds of the object's mask at the frame size (logit > 0)",
                    score="the detection score the object was first found with",
                    tracker_score="the tracker's probability that the object is present in this frame")
        self._write("{" + json.dumps(head)[1:-1] + ', "frames": [')

    def _write(self, text: str) -> None:
        try:
            self._file.write(text)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc}") from exc

    def write_frame(self, frame: int, pts: int, objects: Sequence[dict[str, Any]]) -> None:
        """Append one frame's record: ``objects`` are ``{"id", "prompt", "score", "tracker_score", "box"}``."""
        seconds = None if self.time_base is None else round(float(pts * self.time_base), 6)
        entry = {"frame": int(frame), "pts": int(pts), "seconds": seconds, "objects": list(objects)}
        self._write(("," if self.frames_written else "") + "\n" + json.dumps(entry))
        self.frames_written += 1
        for obj in objects:
            known = self.ids.setdefault(int(obj["id"]), {"prompt": obj.get("prompt"), "first_frame": int(frame),
                                                        "last_frame": int(frame), "frames_visible": 0})
            known["last_frame"] = int(frame)
            known["frames_visible"] += 1

    def close(self) -> Path:
        """Write the per-id summary, close and rename; returns the final path."""
        ids = {str(k): v for k, v in sorted(self.ids.items())}
        self._write('\n], "ids": ' + json.dumps(ids) + "}\n")
        try:
            self._file.close()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc}") from exc
        return self.path

    def abort(self) -> None:
        """Remove the temporary file."""
        try:
            self._file.close()
        except OSError:
            pass
        self.tmp.unlink(missing_ok=True)
