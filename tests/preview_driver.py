"""Test helpers for the live preview: a brightness oracle segmenter, and a driver that runs the Tk window.

``python tests/preview_driver.py CLIP OUTDIR`` (with ``DISPLAY`` set to an X server the test
started) runs two preview sessions with a Tk window and writes what the test checks:

* ``keys``: after 3 frames a screenshot (``first.png``, ffmpeg x11grab) and the canvas / views
  shown at that moment (``first.npz``); then Up, Up, v are sent with xdotool; once the single
  view shows, ``second.png`` / ``second.npz``; then q.
* ``close``: with ``--record``, the window's close request (what the window manager sends for
  the title bar's x) after 5 frames.

``result.json`` holds both summaries. The window runs in its own process because Tk keeps its X
connection open after its window is destroyed, and exits the process when that X server goes away.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


class BrightnessOracle:
    """A :class:`~streammask.pipeline.Segmenter` for ``write_synthetic_clip`` clips: the bright square is the
    object (logits from the frame's brightness), optionally slow (``delay`` seconds per frame, like a model
    that cannot keep up with the source)."""

    device = torch.device("cpu")
    size = 64

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0
        self.prompts_seen: list[tuple[str, ...]] = []

    def segment(self, frames, prompts, *, preprocess="pil", size=None):
        self.calls += 1
        self.prompts_seen.append(tuple(prompts))
        if self.delay:
            time.sleep(self.delay * len(frames))
        s = size or self.size
        x = torch.nn.functional.interpolate(frames.float().mean(1, keepdim=True), size=(s, s), mode="area")
        return ((x / 255 - 0.6) * 12).repeat(1, len(prompts), 1, 1)


def grab(display: str, path: Path) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "x11grab", "-draw_mouse", "0", "-video_size",
                    "1024x400", "-i", display, "-frames:v", "1", str(path)], check=True, timeout=30)


def xdotool(*args: str) -> None:
    subprocess.run(["xdotool", *args], check=True, timeout=10, capture_output=True)


def main(clip: str, out: str) -> None:
    import os

    from streammask.preview import PreviewSession

    out_dir = Path(out)
    display = os.environ["DISPLAY"]
    result = {}
    steps: dict = {}

    def on_frame(s) -> None:
        w = s.window
        if "first" not in steps and s.processed >= 3:
            steps["wid"] = str(w.window_id())
            grab(display, out_dir / "first.png")
            np.savez(out_dir / "first.npz", canvas=w.last_canvas, **s.last_views)
            steps["first"] = True
            # no window manager: keyboard focus follows the pointer, so put it over the window
            xdotool("mousemove", "5", "5", "windowfocus", "--sync", steps["wid"], "key", "Up", "Up", "v")
        elif "first" in steps and "second" not in steps and s.state.view_mode == "source":
            grab(display, out_dir / "second.png")
            np.savez(out_dir / "second.npz", canvas=w.last_canvas)
            steps["second"] = True
            xdotool("mousemove", "5", "5", "windowfocus", "--sync", steps["wid"], "key", "q")

    summary = PreviewSession(clip, prompt="square", segmenter=BrightnessOracle(), backend="tk", realtime=True,
                             loop=True, max_seconds=30, on_frame=on_frame).run()
    result["keys"] = {"stop_reason": summary.stop_reason, "thresholds": summary.thresholds,
                      "processed": summary.processed}

    def close_request(s) -> None:
        if s.processed == 5:
            root = s.window._root
            root.tk.eval(root.wm_protocol("WM_DELETE_WINDOW"))

    summary = PreviewSession(clip, prompt="square", segmenter=BrightnessOracle(), backend="tk", realtime=True,
                             loop=True, max_seconds=30, on_frame=close_request, record=str(out_dir / "rec"),
                             outputs=["mask"]).run()
    result["close"] = {"stop_reason": summary.stop_reason, "processed": summary.processed,
                       "recordings": {k: str(v) for k, v in summary.recordings.items()}}
    (out_dir / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
