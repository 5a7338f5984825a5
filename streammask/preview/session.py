"""The preview session (capture -> segment -> views -> window / web page / recordings) and its command."""

from __future__ import annotations

import os
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import OutputError, ParameterError
from ..params import Param, ParamSet
from ..pipeline.core import MaskPipeline
from ..pipeline.outputs import OutputSet
from ..pipeline.preflight import DEFAULT_OUTPUT_TEMPLATE, preflight_outputs
from ..pipeline.settings import RUN_PARAMS, normalize_variants, with_threshold
from ..temporal.smoothers import TEMPORAL_PARAMS, smoother_for
from .sources import CapturedFrame, LiveCapture, SourceSpec, parse_input_options, parse_source
from .view import THRESHOLD_PARAM, LatencyStats, PreviewState, PreviewSummary, compose, matte_over
from .web import MjpegServer, parse_serve
from .window import open_window
from ..variants import check_prompt
from ..model.options import MODEL_SPEED_PARAMS
from ..model.clipseg import load_from_settings

__all__ = ["PREVIEW_PARAMS", "PreviewSession", "run_preview"]

PREVIEW_PARAMS = ParamSet((
    Param("realtime", "bool", False, "play a file at its own frame rate (paced by its timestamps), dropping "
                                     "frames the model cannot keep up with, like a live source"),
    Param("loop", "bool", False, "play a file source again from the start when it ends"),
    Param("no_window", "bool", False, "run without any window (servers, tests; watch with --serve)"),
    Param("backend", "choice", "auto", "window toolkit (auto: Tk when Python has tkinter, else OpenCV when "
                                       "its cv2 has a GUI)",
          choices=("auto", "tk", "opencv")),
    Param("serve", "str", None, "serve the views on a local web page at http://HOST:PORT/ (MJPEG at /stream)",
          nullable=True),
    Param("allow_remote", "bool", False, "allow --serve on an address other than loopback (anyone who can reach "
                                         "it sees the stream)"),
    Param("record", "str", None, "write the outputs of `streammask run` (mask/heatmap/matte per variant) to this "
                                 "folder while previewing", nullable=True),
    Param("retries", "int", 3, "reconnect a live stream that drops at most this many times", min=0, max=1000),
    Param("timeout", "float", 10.0, "seconds to wait when opening or reading a camera or stream", min=0.1,
          max=3600.0),
    Param("input_options", "str", None, "FFmpeg options for opening the camera or stream, comma separated, e.g. "
                                        "video_size=1280x720,framerate=30,input_format=mjpeg", nullable=True),
    Param("buffer", "int", 1, "newest frames kept between capture and the model (older ones are dropped)",
          min=1, max=2),
    Param("view_height", "int", 240, "height of each view in the preview (pixels)", min=32, max=2160),
    Param("matte_background", "choice", "checker", "what shows through the matte's transparent parts",
          choices=("checker", "green")),
    Param("threshold_step", "float", 0.05, "threshold change per up/down key", min=0.001, max=0.5),
    Param("snapshot_dir", "str", "streammask-snapshots", "folder for the snapshot PNGs (key s)"),
    Param("max_seconds", "float", None, "stop after this many seconds", min=0.0, nullable=True),
))


# ---------------------------------------------------------------------------------------------------------------------
# the session
# ---------------------------------------------------------------------------------------------------------------------
def check_causal(temporal: Mapping[str, Any]) -> None:
    smoother = smoother_for(temporal)
    if not smoother.causal:
        detail = f"{temporal['temporal']} (window_align={temporal.get('window_align')!r})"
        raise ParameterError("temporal", detail, "a causal method in a live preview (it cannot look ahead): none, "
                                                 "ema, hysteresis, flow, or median/mean with --window-align trailing")


class PreviewSession:
    """A live preview: capture -> segment -> views -> window / web page / recordings.

    Build it, then :meth:`run` it on the main thread (window toolkits need that; with
    ``no_window=True`` any thread will do); :meth:`stop` may be called from any thread.
    The model is the given ``segmenter``: a prompt or threshold change builds a new
    :class:`~streammask.pipeline.MaskPipeline` over it (the new prompt's text embedding is
    computed once, the model is never reloaded).

    Args:
        source: as :func:`parse_source`.
        prompt: the first prompt.
        segmenter: a loaded :class:`~streammask.model.ClipSeg` (or any Segmenter).
        variants, outputs, batch_size, mask_format, heatmap_format, matte_format, heatmap_alpha, colormap,
            temporal: as :func:`~streammask.process_video` (``outputs`` and formats: what ``record`` writes;
            temporal smoothing must be causal).
        display: a window object to use instead of opening one (``show(canvas)``, ``poll() -> keys``,
            ``closed``, ``close()``).
        key_source: called once per loop, returns extra key names (scripts, tests).
        on_frame: called after each shown frame with the session.
        opener: ``opener(spec) -> iterator of (rgb, pts, time_base, rate)`` replacing PyAV (tests).
        prompt_lines: a queue of new prompts (lines typed in the terminal).
        announce: a text stream where the server's address is printed when it starts.
        options: :data:`PREVIEW_PARAMS` and temporal parameters (``ema_alpha``, ``window_align``, ...).
    """

    def __init__(self, source: str | os.PathLike, *, prompt: str, segmenter: Any, variants: Any = ("soft",),
                 outputs: Sequence[str] | str = ("mask", "heatmap", "matte"), batch_size: int = 1,
                 mask_format: str = "mp4", heatmap_format: str = "mp4", matte_format: str = "prores",
                 heatmap_alpha: float = 0.5, colormap: str = "jet", temporal: str = "none",
                 threshold: float | None = None,
                 overwrite: bool = False, output_template: str | None = None, encoder_preset: str = "fast",
                 display: Any = None, key_source: Callable[[], Sequence[str]] | None = None,
                 on_frame: Callable[["PreviewSession"], None] | None = None,
                 opener: Callable[[SourceSpec], Iterator[tuple]] | None = None,
                 prompt_lines: "queue.Queue[str] | None" = None, announce: Any = None, **options: Any) -> None:
        temporal_opts = {k: options.pop(k) for k in list(options) if k in TEMPORAL_PARAMS}
        self.settings = PREVIEW_PARAMS.validate(options)
        self.temporal = dict(TEMPORAL_PARAMS.validate(dict(temporal_opts, temporal=temporal)))
        check_causal(self.temporal)
        check_prompt(prompt)
        self.batch_size = RUN_PARAMS["batch_size"].validate(batch_size)
        self.outputs = RUN_PARAMS["outputs"].validate(outputs)
        self.formats = {"mask": RUN_PARAMS["mask_format"].validate(mask_format),
                        "heatmap": RUN_PARAMS["heatmap_format"].validate(heatmap_format),
                        "matte": RUN_PARAMS["matte_format"].validate(matte_format)}
        self.heatmap_alpha = RUN_PARAMS["heatmap_alpha"].validate(heatmap_alpha)
        self.colormap = RUN_PARAMS["colormap"].validate(colormap)
        self.variant_params = normalize_variants(with_threshold(variants, RUN_PARAMS["threshold"].validate(threshold)))
        self.serve_address = (parse_serve(self.settings["serve"], allow_remote=self.settings["allow_remote"])
                              if self.settings["serve"] else None)
        self.spec = parse_source(source)
        self.overwrite = RUN_PARAMS["overwrite"].validate(overwrite)
        self.encoder_preset = RUN_PARAMS["encoder_preset"].validate(encoder_preset)
        self.output_template = RUN_PARAMS["output_template"].validate(
            output_template if output_template is not None else RUN_PARAMS["output_template"].default)
        # like `run`, before any work: the recordings' names, no input replaced, no existing file unless overwrite
        self.record_paths = (recording_paths(self.spec, self.settings["record"], variants=tuple(self.variant_params),
                                             outputs=self.outputs, formats=self.formats,
                                             template=self.output_template, overwrite=self.overwrite)
                             if self.settings["record"] else {})
        self.segmenter = segmenter
        self._MaskPipeline = MaskPipeline
        names = tuple(self.variant_params)
        self.state = PreviewState(
            prompt=prompt, variants=names, step=self.settings["threshold_step"],
            thresholds={n: float(self.variant_params[n][THRESHOLD_PARAM[n]]) for n in names})
        self.pipe = self._build_pipeline()
        self._display_arg = display
        self.window = None
        self.server: MjpegServer | None = None
        self.key_source = key_source
        self.on_frame = on_frame
        self.prompt_lines = prompt_lines
        self.announce = announce
        self.capture = LiveCapture(self.spec, buffer=self.settings["buffer"], realtime=self.settings["realtime"],
                                   loop=self.settings["loop"], retries=self.settings["retries"],
                                   timeout=self.settings["timeout"],
                                   input_options=parse_input_options(self.settings["input_options"]), opener=opener)
        self.stats = LatencyStats()
        self.processed = 0
        self.last_views: dict[str, np.ndarray] | None = None
        self.last_canvas: np.ndarray | None = None
        self.snapshots: list[Path] = []
        self.pipelines_built = 1
        self.not_recorded = 0
        self._record_shape: tuple[int, ...] | None = None
        self._recording = OutputSet(thread_label="record")  # --record's writers, opened at the first frame
        self._stop = threading.Event()
        self.stop_reason = ""
        self.recordings: dict[str, Path] = {}  # the finalized recordings, once run() has ended

    # -- pipeline ------------------------------------------------------------------------------------------------
    def _build_pipeline(self, previous=None):
        params = {n: {**p, THRESHOLD_PARAM[n]: self.state.thresholds[n]} for n, p in self.variant_params.items()}
        pipe = self._MaskPipeline(self.segmenter, prompt=self.state.prompt, variants=params,
                                  heatmap_alpha=self.heatmap_alpha, colormap=self.colormap, **self.temporal)
        if previous is not None:  # same prompt, same logits: keep the temporal history and running statistics
            pipe.continue_stream(previous)
        return pipe

    def stop(self, reason: str = "stopped") -> None:
        """Ask :meth:`run` to finish (thread-safe)."""
        if not self.stop_reason:
            self.stop_reason = reason
        self._stop.set()

    # -- recording ---------------------------------------------------------------------------------------------------
    def _open_recording(self, first: CapturedFrame) -> None:
        out = Path(self.settings["record"])
        out.mkdir(parents=True, exist_ok=True)
        h, w = first.rgb.shape[:2]
        for name in self.variant_params:
            for kind in self.outputs:
                self._recording.open((name, kind), kind, self.formats[kind], self.record_paths[(name, kind)],
                                     width=w, height=h, rate=first.rate or Fraction(30), time_base=first.time_base,
                                     slots=4, preset=self.encoder_preset)

    def _finish_recording(self) -> dict[str, Path]:
        if not self._recording:
            return {}
        self._recording.finalize_partial()
        paths = {f"{n}.{k}": w.path for (n, k), w in self._recording.writers.items() if w.path.exists()}
        self._recording = OutputSet(thread_label="record")
        return paths

    # -- snapshots ---------------------------------------------------------------------------------------------------
    def _snapshot(self, rendered: Mapping[str, np.ndarray]) -> None:
        import cv2

        out = Path(self.settings["snapshot_dir"])
        out.mkdir(parents=True, exist_ok=True)
        n = len(list(out.glob("snapshot-*.source.png"))) + 1
        while (out / f"snapshot-{n:04d}.source.png").exists():
            n += 1
        for kind, img in rendered.items():
            path = out / f"snapshot-{n:04d}.{kind}.png"
            if img.shape[-1] == 4:
                bgr = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
            elif img.shape[-1] == 3:
                bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            else:
                bgr = img[..., 0]
            if not cv2.imwrite(str(path), bgr):
                raise OutputError(f"cannot write snapshot {path}")
            self.snapshots.append(path)

    # -- display -----------------------------------------------------------------------------------------------------
    def _readout(self) -> list[str]:
        return self.state.readout(fps=self.stats.fps, latency_ms=1000 * (self.stats.last if self.stats.count else 0.0),
                                  dropped=self.capture.frames.dropped, captured=self.capture.captured)

    def _present(self) -> None:
        if self.last_views is None:
            return
        canvas = compose(self.last_views, view_height=self.settings["view_height"], mode=self.state.view_mode,
                         lines=self._readout())
        self.last_canvas = canvas
        if self.window is not None:
            self.window.show(canvas)
        if self.server is not None:
            self.server.publish(canvas)
            self.server.stats = {"prompt": self.state.prompt, "fps": self.stats.fps,
                                 "latency_ms": 1000 * (self.stats.last if self.stats.count else 0.0),
                                 "dropped": self.capture.frames.dropped, "frames": self.processed}

    def _keys(self) -> list[str]:
        keys: list[str] = []
        if self.window is not None:
            keys += self.window.poll()
        if self.key_source is not None:
            keys += list(self.key_source())
        return keys

    def _apply_keys(self, keys: Sequence[str], rendered_last: Mapping[str, np.ndarray] | None) -> bool:
        """Returns True when the view must be redrawn."""
        redraw = False
        rebuild = False
        for key in keys:
            changed = self.state.handle(key)
            if "quit" in changed:
                self.stop("quit key")
            if changed & {"prompt", "threshold"}:
                rebuild = True
            if "snapshot" in changed and rendered_last is not None:
                self._snapshot(rendered_last)
            redraw = redraw or bool(changed)
        if self.prompt_lines is not None:
            while True:
                try:
                    line = self.prompt_lines.get_nowait().strip()
                except queue.Empty:
                    break
                if line and line != self.state.prompt:
                    self.state.prompt = line
                    rebuild = redraw = True
        if rebuild:
            self.pipe = self._build_pipeline(self.pipe)
            self.pipelines_built += 1
        return redraw

    # -- main loop ---------------------------------------------------------------------------------------------------
    def run(self) -> PreviewSummary:
        """Preview until the source ends, a quit key, the window is closed, :meth:`stop` or ``max_seconds``.

        Ctrl-C (``KeyboardInterrupt``) and other errors stop it too: the source is released and
        the recordings are finalized (playable) before the exception reaches the caller.
        """
        t_start = time.perf_counter()
        max_seconds = self.settings["max_seconds"]
        rendered_last: dict[str, np.ndarray] | None = None
        recordings: dict[str, Path] = {}
        try:
            self.capture.open()
            if self._display_arg is not None:
                self.window = self._display_arg
            elif not self.settings["no_window"]:
                self.window = open_window(self.settings["backend"])
            if self.serve_address is not None:
                self.server = MjpegServer(*self.serve_address, title=f"streammask preview of {self.spec.url}")
                if self.announce is not None:
                    print(f"streammask: serving the preview on {self.server.url} (MJPEG at /stream)",
                          file=self.announce, flush=True)
            while not self._stop.is_set():
                if max_seconds is not None and time.perf_counter() - t_start >= max_seconds:
                    self.stop("max_seconds")
                    break
                redraw = self._apply_keys(self._keys(), rendered_last)
                if redraw and (self.state.paused or self.state.editing is not None):  # no new frame will redraw
                    self._present()
                if self._stop.is_set():
                    break
                if self.window is not None and self.window.closed:
                    self.stop("window closed")
                    break
                if self.state.paused:
                    time.sleep(0.02)
                    continue
                items = self.capture.frames.get(self.batch_size, timeout=0.03)
                if items is None:
                    self.stop("end of the source")
                    break
                if not items:
                    continue
                rendered_last = self._process(items)
                if self.on_frame is not None:
                    self.on_frame(self)
        finally:
            self.capture.close()
            recordings = self.recordings = self._finish_recording()
            if self.server is not None:
                self.server.close()
            if self.window is not None and self._display_arg is None:
                self.window.close()
        return PreviewSummary(
            source=self.spec.url, captured=self.capture.captured, processed=self.processed,
            dropped=self.capture.frames.dropped, seconds=time.perf_counter() - t_start,
            latency_mean=self.stats.mean, latency_p95=self.stats.percentile(95), latency_max=self.stats.max,
            reconnects=self.capture.reconnects, damaged_packets=self.capture.damaged_packets,
            stop_reason=self.stop_reason or "stopped", recordings=recordings, not_recorded=self.not_recorded,
            snapshots=list(self.snapshots), prompt=self.state.prompt, thresholds=dict(self.state.thresholds),
            latencies=list(self.stats.latencies))

    def _process(self, items: list[CapturedFrame]) -> dict[str, np.ndarray] | None:
        frames = np.stack([it.rgb for it in items])
        results, x, payload = self.pipe.process_stream(frames, items)
        if results is None or not payload:
            return None
        host = np.stack([it.rgb for it in payload])
        kinds = ("mask", "heatmap", "matte")
        rendered = {name: self.pipe.render(x, res, kinds, host_frames=host) for name, res in results.items()}
        if self.settings["record"]:
            if not self._recording:
                self._open_recording(payload[0])
                self._record_shape = host.shape[1:]
            if host.shape[1:] == self._record_shape:
                pts = [it.pts for it in payload]
                for name, per_kind in rendered.items():
                    for kind in self.outputs:
                        self._recording.put((name, kind), (per_kind[kind], pts))
            else:  # a stream that came back at another size: the files keep the first size
                self.not_recorded += len(payload)
        shown = rendered[self.state.variant]
        last = {"source": host[-1], "heatmap": shown["heatmap"][-1],
                "matte": matte_over(shown["matte"][-1], self.settings["matte_background"])}
        self.last_views = last
        self._present()
        self.stats.shown([it.captured_at for it in payload])
        self.processed += len(payload)
        return {"source": host[-1], "heatmap": shown["heatmap"][-1], "matte": shown["matte"][-1],
                "mask": shown["mask"][-1]}


def recording_paths(spec: SourceSpec, record: str | os.PathLike, *, variants: Sequence[str], outputs: Sequence[str],
                    formats: Mapping[str, str], template: str | None = None,
                    overwrite: bool = False) -> dict[tuple[str, str], Path]:
    """The final paths of ``--record``'s outputs (``{(variant, kind): path}``), checked as `run` checks
    its outputs: names from ``template`` stay in ``record``, none replaces a file source, and none
    exists already unless ``overwrite``.

    Raises:
        OutputExistsError: an output exists and not ``overwrite`` (the message names it and ``--overwrite``).
        ParameterError, OutputError: a bad template, an output that would replace the source.
    """
    # outputs are named after the source's stem: a camera or stream is named by spec.name
    source = Path(spec.url) if spec.kind == "file" else Path(f"{spec.name}.live")
    if Path(source).stem != spec.name:
        source = Path(f"{spec.name}.live")
    planned = preflight_outputs(source, record, variants=variants, kinds=outputs, formats=formats,
                                template=template or DEFAULT_OUTPUT_TEMPLATE, overwrite=overwrite)
    return planned


def run_preview(source: str | os.PathLike, *, prompt: str, model: str | os.PathLike | None = None,
            revision: str | None = None, device: str = "auto", dtype: str = "auto", segmenter: Any = None,
            **options: Any) -> PreviewSummary:
    """Preview ``source`` live with a text prompt (see the module docstring and ``streammask preview --help``).

    Args:
        source: camera (``0``, ``/dev/video0``, ``avfoundation:0``, ``dshow:video=NAME``), stream URL or file.
        prompt: text prompt (``a|b`` for several).
        model, revision, device, dtype: as :func:`~streammask.model.load_clipseg` (loaded once);
            or ``segmenter``: an already loaded model / test oracle.
        options: run settings of :data:`~streammask.pipeline.RUN_PARAMS` that apply (``variants``,
            ``outputs``, formats, ``batch_size`` (default 1), ``heatmap_alpha``, ``colormap``, temporal
            smoothing: causal methods only) and :data:`PREVIEW_PARAMS` (``realtime``, ``window``,
            ``serve``, ``record``, ``retries``, ...).

    Returns:
        A :class:`PreviewSummary` (frames shown and dropped, latency, recordings).
    """
    speed = {p.name: options.pop(p.name) for p in MODEL_SPEED_PARAMS if p.name in options}
    if segmenter is None:
        segmenter = load_from_settings(dict(speed, model=model, revision=revision, device=device, dtype=dtype))
    return PreviewSession(source, prompt=prompt, segmenter=segmenter, **options).run()
