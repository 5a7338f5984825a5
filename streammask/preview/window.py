"""Preview windows: Tk (standard library) or OpenCV (when the installed ``cv2`` has a GUI)."""

from __future__ import annotations

import re

import numpy as np

from ..errors import ParameterError, StreamMaskError

__all__ = ["WindowError", "TkWindow", "OpenCVWindow", "open_window", "opencv_has_gui"]




class WindowError(StreamMaskError, RuntimeError):
    """No window can be opened (no display, no GUI toolkit)."""


# ---------------------------------------------------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------------------------------------------------
_TK_KEYS = {"Up": "up", "Down": "down", "Return": "enter", "KP_Enter": "enter", "Escape": "escape",
            "BackSpace": "backspace", "space": "space"}


class TkWindow:
    """A Tk window showing RGB canvases; keys are collected as canonical names (see :class:`PreviewState`).

    The canvas is handed to Tk as a PPM image (no Pillow ImageTk needed). Must be used from the
    thread that created it (the main thread).
    """

    def __init__(self, title: str = "streammask preview") -> None:
        try:
            import tkinter as tk
        except ImportError as exc:
            raise WindowError(f"cannot open a Tk window: this Python has no tkinter ({exc}); use --no-window "
                              f"(with --serve to watch in a browser)") from None
        try:
            self._root = tk.Tk()
        except tk.TclError as exc:
            raise WindowError(f"cannot open a window: {exc} (is DISPLAY set?); use --no-window --serve "
                              f"127.0.0.1:8765 to watch in a browser") from None
        self._tk = tk
        self._root.title(title)
        self._root.geometry("+0+0")
        self._label = tk.Label(self._root, borderwidth=0, highlightthickness=0, background="black")
        self._label.pack()
        self._root.bind("<Key>", self._on_key)
        self._root.protocol("WM_DELETE_WINDOW", self._on_close)
        self._keys: list[str] = []
        self._image = None
        self.closed = False
        self.shown = 0
        self.last_canvas: np.ndarray | None = None

    def _on_key(self, event) -> None:
        name = _TK_KEYS.get(event.keysym)
        if name is None and event.char and len(event.char) == 1 and event.char.isprintable():
            name = event.char
        if name:
            self._keys.append(name)

    def _on_close(self) -> None:
        self.closed = True

    def window_id(self) -> int:
        """The X11 window id of the toplevel (for tests that send keys with xdotool)."""
        self._root.update()
        return int(self._root.wm_frame(), 16)

    def show(self, canvas_rgb: np.ndarray) -> None:
        if self.closed:
            return
        h, w = canvas_rgb.shape[:2]
        ppm = b"P6 %d %d 255\n" % (w, h) + np.ascontiguousarray(canvas_rgb).tobytes()
        self._image = self._tk.PhotoImage(data=ppm, format="PPM")
        self._label.configure(image=self._image)
        self.last_canvas = canvas_rgb
        self.shown += 1
        self.poll()

    def poll(self) -> list[str]:
        """Process window events; return the keys pressed since the last call."""
        if not self.closed:
            try:
                self._root.update()
            except self._tk.TclError:
                self.closed = True
        keys, self._keys = self._keys, []
        return keys

    def close(self) -> None:
        self.closed = True
        try:
            self._root.destroy()
        except Exception:
            pass


def opencv_has_gui() -> bool:
    """Whether the installed ``cv2`` was built with a GUI backend (``opencv-python-headless`` is not)."""
    try:
        import cv2
    except ImportError:  # pragma: no cover
        return False
    m = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    return bool(m) and m.group(1).upper() != "NONE"


# cv2.waitKeyEx codes: GTK/Qt on Linux, Windows, macOS
_CV_KEYS = {65362: "up", 65364: "down", 2490368: "up", 2621440: "down", 63232: "up", 63233: "down",
            13: "enter", 10: "enter", 27: "escape", 8: "backspace", 32: "space"}


class OpenCVWindow:
    """A ``cv2.imshow`` window (needs an OpenCV build with a GUI, e.g. ``opencv-python``; not tested in CI,
    whose ``opencv-python-headless`` has none; checked by hand with opencv-python 5.0.0.93 (Qt5) under Xvfb).

    ``cv2.waitKeyEx`` returns one key per call and the Qt backend keeps only the last key pressed
    between two calls, so keys typed faster than the frame rate are lost (prefer :class:`TkWindow`).
    """

    def __init__(self, title: str = "streammask preview") -> None:
        import cv2

        if not opencv_has_gui():
            raise WindowError("the installed OpenCV has no GUI (opencv-python-headless); use the Tk window "
                              "(--backend tk) or --no-window --serve")
        self._cv2 = cv2
        self._title = title
        cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE | getattr(cv2, "WINDOW_GUI_NORMAL", 0))  # no Qt toolbar
        self.closed = False
        self.shown = 0
        self.last_canvas: np.ndarray | None = None
        self._keys: list[str] = []

    def show(self, canvas_rgb: np.ndarray) -> None:
        if self.closed:
            return
        self._cv2.imshow(self._title, np.ascontiguousarray(canvas_rgb[..., ::-1]))
        self.last_canvas = canvas_rgb
        self.shown += 1
        self._pump()

    def _pump(self) -> None:
        code = self._cv2.waitKeyEx(1)
        if code != -1:
            name = _CV_KEYS.get(code) or (chr(code & 0xFF) if 32 < (code & 0xFF) < 127 and code < 256 else None)
            if name:
                self._keys.append(name)
        try:
            if self._cv2.getWindowProperty(self._title, self._cv2.WND_PROP_VISIBLE) < 1:
                self.closed = True
        except self._cv2.error:
            self.closed = True

    def poll(self) -> list[str]:
        if not self.closed:
            self._pump()
        keys, self._keys = self._keys, []
        return keys

    def close(self) -> None:
        self.closed = True
        try:
            self._cv2.destroyWindow(self._title)
        except Exception:
            pass


def _has_tkinter() -> bool:
    try:
        import tkinter  # noqa: F401
    except ImportError:
        return False
    return True


def open_window(backend: str = "auto", *, title: str = "streammask preview"):
    """The window for ``backend``: ``tk``, ``opencv``, or ``auto``: Tk when this Python has ``tkinter``,
    else OpenCV when its ``cv2`` has a GUI.

    Tk comes first because it queues every key; OpenCV's ``waitKey`` keeps only the last key
    pressed between two frames (two quick Up presses give one threshold step).
    """
    if backend == "tk" or (backend == "auto" and (_has_tkinter() or not opencv_has_gui())):
        return TkWindow(title)
    if backend in ("auto", "opencv"):
        return OpenCVWindow(title)
    raise ParameterError("backend", backend, "'auto', 'tk' or 'opencv'")
