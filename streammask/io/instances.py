"""The instance sidecar: a JSON file of the tracked objects' ids, scores and boxes in every frame, written as it goes.

One JSON document, streamed: the header (source, size, exact frame rate and time base, what the fields
mean), then ``"frames"`` with one entry per written frame, appended as the frames are written (nothing is
held back, so memory stays flat on any length), and at the end ``"ids"``: per object id its prompt, first
and last frame and the number of frames it is visible in. Written under a hidden temporary name and
renamed when complete, like every output.

The sidecars of a split clip's segments (each: its frames, the ids seen in them) are joined into the one a single
pass writes by :func:`join_sidecars`.

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

__all__ = ["InstanceSidecar", "join_sidecars"]


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


_FRAMES_OPEN = ', "frames": ['
_FRAMES_CLOSE = '], "ids": '


def _read_sidecar(path: Path):
    """``(header, frame entries)`` of a sidecar :class:`InstanceSidecar` wrote: the header line, then one frame
    entry per line (read one at a time, so a long part is not held in memory), then the ``ids`` line."""
    with open(path, encoding="utf-8") as f:
        first = f.readline().rstrip("\n")
        if not first.endswith(_FRAMES_OPEN):
            raise OutputError(f"cannot join {path}: not a sidecar written by streammask (no frames list on line 1)")
        header = json.loads(first[:-len(_FRAMES_OPEN)] + "}")
        yield header
        for line in f:
            line = line.rstrip("\n")
            if line.startswith(_FRAMES_CLOSE):
                return
            try:
                entry = json.loads(line[:-1] if line.endswith(",") else line)
            except json.JSONDecodeError as exc:
                raise OutputError(f"cannot join {path}: a frame entry does not parse ({exc})") from exc
            yield entry
        raise OutputError(f"cannot join {path}: it ends before its ids table (an unfinished sidecar)")


def join_sidecars(parts: Sequence[Path], final: Path) -> Path:
    """Join the sidecars of consecutive segments of one clip into ``final``, as one pass writes it.

    The header is the first part's (the parts share it); the frame entries follow in order (their ``frame``
    indices must increase); the ``ids`` table is computed again over every frame (first and last frame, the
    visible frames summed), so the document equals the one-pass sidecar. Written under
    :func:`~streammask.io.writers.partial_path` and renamed when complete; the parts are kept.

    Raises:
        OutputError: a part is not a complete sidecar, its header differs from the first part's, or its frames
            do not follow the previous part's.
    """
    sidecar, head, last = None, None, None
    try:
        for part in parts:
            entries = _read_sidecar(Path(part))
            header = next(entries)
            if sidecar is None:
                head = header
                sidecar = InstanceSidecar(
                    final, width=header["width"], height=header["height"],
                    frame_rate=None if header.get("frame_rate") is None else Fraction(header["frame_rate"]),
                    time_base=None if header.get("time_base") is None else Fraction(header["time_base"]),
                    header=header)
            elif header != head:
                raise OutputError(f"cannot join {part} to {parts[0]}: different headers (another clip or settings)")
            for entry in entries:
                if last is not None and entry["frame"] <= last:
                    raise OutputError(f"cannot join {part}: frame {entry['frame']} does not follow frame {last}")
                last = entry["frame"]
                sidecar.write_frame(entry["frame"], entry["pts"], entry["objects"])
    except BaseException:
        if sidecar is not None:
            sidecar.abort()
        raise
    if sidecar is None:
        raise OutputError(f"cannot join sidecars into {final}: no parts")
    return sidecar.close()
