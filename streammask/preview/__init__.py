"""Live preview: a camera, a network stream or a file at real-time pace, masked live.

``streammask preview SOURCE --prompt TEXT`` shows the source, the heatmap overlay
and the matte side by side in a window (and/or on a local web page with
``--serve``), with an on-screen readout of the prompt, threshold, frames/s,
capture-to-display latency and dropped frames.

A live source must never fall behind, so the pipeline is latency-bounded:

* capture runs on its own thread (:class:`LiveCapture`) and hands frames over
  through :class:`LatestFrames`, a drop-oldest buffer of 1-2 frames: when the
  model is slower than the source, stale frames are dropped (and counted),
  never queued;
* each frame is timestamped at capture; the latency is measured when its
  composed view has been handed to the window / web page;
* batch size 1 by default.

The pure parts are separate from the window backends so that they are tested
without a display: :func:`compose` (the canvas and its readout),
:func:`panel_boxes` (where each view sits), :class:`PreviewState` (key handling
as a state machine). The window is a Tk window (``tkinter``, part of the
standard library; the core dependency ``opencv-python-headless`` has no GUI),
or an OpenCV window when the installed ``cv2`` has a GUI backend (``--backend opencv``).

Modules: :mod:`.sources` (sources, capture thread, drop-oldest buffer), :mod:`.view`
(key state machine, canvas, statistics), :mod:`.web` (MJPEG server), :mod:`.window`
(Tk / OpenCV windows), :mod:`.session` (the session; the ``preview`` command is :mod:`streammask.cli.preview`).
"""

from .session import PREVIEW_PARAMS, PreviewSession, run_preview
from .sources import URL_SCHEMES, CapturedFrame, LatestFrames, LiveCapture, SourceSpec, StreamDroppedError, parse_input_options, parse_source
from .view import READOUT_HEIGHT, THRESHOLD_PARAM, VIEW_MODES, VIEWS, LatencyStats, PreviewState, PreviewSummary, compose, matte_over, panel_boxes
from .web import MjpegServer, parse_serve
from .window import OpenCVWindow, TkWindow, WindowError, open_window, opencv_has_gui

__all__ = [
    "PREVIEW_PARAMS", "SourceSpec", "parse_source", "StreamDroppedError", "WindowError", "CapturedFrame",
    "parse_input_options", "LatestFrames", "LiveCapture", "PreviewState", "THRESHOLD_PARAM", "VIEW_MODES", "VIEWS",
    "READOUT_HEIGHT", "URL_SCHEMES", "panel_boxes", "compose", "matte_over", "LatencyStats", "PreviewSummary",
    "MjpegServer", "parse_serve", "TkWindow", "OpenCVWindow", "open_window", "opencv_has_gui", "PreviewSession",
    "run_preview",
]
