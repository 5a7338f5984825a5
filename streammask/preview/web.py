"""The preview's web page: a stdlib HTTP server with the live canvas as MJPEG."""

from __future__ import annotations

import html
import ipaddress
import json
import re
import threading
from typing import Any

import numpy as np

from ..errors import ParameterError

__all__ = ["parse_serve", "MjpegServer"]


# ---------------------------------------------------------------------------------------------------------------------
# web page: MJPEG over HTTP
# ---------------------------------------------------------------------------------------------------------------------
def parse_serve(value: str, *, allow_remote: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` / ``PORT`` / ``[::1]:PORT`` -> ``(host, port)``; loopback only unless ``allow_remote``."""
    text = str(value).strip()
    m = re.fullmatch(r"(?:\[([^\]]+)\]|([^:]*)):(\d+)|(\d+)", text)
    if not m:
        raise ParameterError("serve", value, "HOST:PORT such as 127.0.0.1:8765 (or just a port)")
    host = m.group(1) or m.group(2) or "127.0.0.1"
    port = int(m.group(3) or m.group(4))
    if port > 65535:
        raise ParameterError("serve", value, "a port in [0, 65535]")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise ParameterError("serve", value, "a loopback address such as 127.0.0.1:8765 (watch from another "
                                             "machine through an SSH tunnel, or add --allow-remote)")
    return host, port


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>streammask preview</title>
<style>body{{background:#202020;color:#ddd;font:14px sans-serif;margin:8px}} img{{display:block}}</style></head>
<body><img id="view" src="/stream" alt="live preview">
<div id="stats">{title}</div>
<script>
async function poll() {{
  try {{
    const r = await fetch('/stats.json', {{cache: 'no-store'}});
    const s = await r.json();
    document.getElementById('stats').textContent =
      `prompt: ${{s.prompt}} | ${{s.fps.toFixed(1)}} fps | latency ${{Math.round(s.latency_ms)}} ms | dropped ${{s.dropped}}`;
  }} catch (e) {{}}
  setTimeout(poll, 500);
}}
poll();
</script></body></html>
"""


class MjpegServer:
    """A small HTTP server (stdlib ``ThreadingHTTPServer`` in a thread) for the preview canvas.

    ``/`` an HTML page showing the stream, ``/stream`` the live canvas as multipart MJPEG,
    ``/snapshot.jpg`` the newest canvas, ``/stats.json`` the readout values.

    Args:
        host, port: where to listen (port 0: any free port; see :attr:`address`).
        quality: JPEG quality.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, *, quality: int = 80, title: str = "") -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.quality = int(quality)
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self._stopping = False
        self.stats: dict[str, Any] = {"prompt": "", "fps": 0.0, "latency_ms": 0.0, "dropped": 0}
        self.frames_sent = 0
        server = self
        page = _PAGE.format(title=html.escape(title)).encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, body: bytes, ctype: str, status: int = 200) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                try:
                    if path in ("/", "/index.html"):
                        self._send(page, "text/html; charset=utf-8")
                    elif path == "/stream":
                        self._stream()
                    elif path == "/snapshot.jpg":
                        jpeg = server.wait_frame(-1, timeout=5.0)[1]
                        if jpeg is None:
                            self._send(b"no frame yet\n", "text/plain", 503)
                        else:
                            self._send(jpeg, "image/jpeg")
                    elif path == "/stats.json":
                        self._send(json.dumps(server.stats).encode(), "application/json")
                    else:
                        self._send(b"not found\n", "text/plain", 404)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _stream(self) -> None:
                self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                seq = -1
                while True:
                    seq, jpeg = server.wait_frame(seq, timeout=1.0)
                    if server._stopping:
                        return
                    if jpeg is None:
                        continue
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                    self.wfile.flush()
                    server.frames_sent += 1

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        try:
            self._httpd = Server((host, int(port)), Handler)
        except OSError as exc:
            raise ParameterError("serve", f"{host}:{port}",
                                 f"an address this machine can listen on ({exc.strerror or exc})") from None
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="streammask-serve", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self._httpd.server_address[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def publish(self, canvas_rgb: np.ndarray) -> None:
        """Make ``canvas_rgb`` the newest frame (JPEG-encoded once, for every client)."""
        import cv2

        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(canvas_rgb[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:  # pragma: no cover
            return
        with self._cond:
            self._jpeg = buf.tobytes()
            self._seq += 1
            self._cond.notify_all()

    def wait_frame(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        """The newest frame once its sequence number is above ``after`` (or after ``timeout``)."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self._stopping, timeout=timeout)
            return self._seq, (self._jpeg if self._seq > after else None)

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
