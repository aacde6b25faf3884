"""A real MJPEG-over-HTTP camera for tests: a threading HTTP server on 127.0.0.1 serving
``multipart/x-mixed-replace`` streams of JPEGs encoded with PyAV (FFmpeg's mjpeg encoder), the way
cheap IP cameras serve them, plus the broken and hostile forms the source must survive.

Paths (query ``?frames=N`` bounds a stream, default endless; ``fps`` default 10):
  /cam          Content-Length per part, CRLF line ends
  /nolength     no Content-Length: the parser must scan for the boundary
  /quirky       boundary parameter quoted and starting with "--", used as is, bare LF, no CRLF before it
  /xts          every part carries X-Timestamp (epoch seconds, fractional) of the server's clock
  /noboundary   multipart Content-Type without a boundary parameter
  /wrongboundary  the parts use another boundary than the one declared
  /huge         a part whose Content-Length is 64 MiB (nothing that large is sent)
  /hugescan     a part without Content-Length that never ends (16 MiB of bytes, no boundary)
  /truncated    3 whole parts, then half of the 4th, then the connection closes
  /slow         1 part, then the next one trickled 100 bytes every 0.2 s
  /stall        1 part, then nothing while the connection stays open
  /silent       no answer at all (not even the response headers)
  /notjpeg      a text/plain part
  /resize       2 parts, then a part of another picture size
  /outage       a camera that goes away: the first connection streams ``frames`` parts (as /cam) and
                closes, every connection for the next ``pause`` seconds (default 3) gets HTTP 503,
                later ones stream endlessly
"""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import av
import numpy as np

BOUNDARY = "frameledgerboundary"


def make_jpegs(count: int, width: int = 320, height: int = 240) -> list[bytes]:
    """``count`` distinct JPEGs (a moving gradient with the frame number burnt in)."""
    from offchain.camera.samples import _synthetic_picture

    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuvj420p"
    ctx.time_base = Fraction(1, 10)
    out: list[bytes] = []
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(_synthetic_picture(i, 10.0, width, height), format="bgr24")
        frame = frame.reformat(format="yuvj420p")
        frame.pts = i
        out.extend(bytes(p) for p in ctx.encode(frame))
    return out


class MjpegCamera:
    """``with MjpegCamera() as cam: cam.url("/cam")``. ``jpegs`` are served in a loop."""

    def __init__(self, jpegs: list[bytes] | None = None) -> None:
        self.jpegs = jpegs or make_jpegs(20)
        self.other_size = make_jpegs(1, 160, 120)[0]
        self.connections = 0
        self.back_at: float | None = None  # /outage: monotonic time the camera is back
        camera = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                camera.connections += 1
                try:
                    camera.serve(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> MjpegCamera:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    # -- the streams ---------------------------------------------------------------------------
    def serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        frames = int(query.get("frames", "0")) or None
        fps = float(query.get("fps", "10"))
        path = parts.path
        if path == "/outage" and self.back_at is not None and time.monotonic() < self.back_at:
            h.send_response(503)
            h.end_headers()
            return
        if path == "/silent":  # accepts the connection, never answers
            time.sleep(30)
            return
        if path == "/noboundary":
            self._start(h, "multipart/x-mixed-replace")
            h.wfile.write(b"--x\r\nContent-Type: image/jpeg\r\n\r\n" + self.jpegs[0])
            return
        if path == "/quirky":
            self._start(h, 'multipart/x-mixed-replace; boundary="--quirk"')
        else:
            self._start(h, f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        w = h.wfile
        if path in ("/cam", "/nolength", "/xts", "/quirky"):
            self._stream(w, path, frames, fps)
        elif path == "/outage":
            first = self.back_at is None
            self._stream(w, "/cam", frames if first else None, fps)
            if first:
                self.back_at = time.monotonic() + float(query.get("pause", "3"))
        elif path == "/wrongboundary":
            w.write(self._part(self.jpegs[0], boundary="somethingelse") * 2)
        elif path == "/huge":
            w.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {64 << 20}\r\n\r\n".encode())
            w.write(self.jpegs[0])
        elif path == "/hugescan":
            w.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\n".encode() + b"\xff\xd8")
            block = bytes(range(256)) * 4096
            for _ in range(16):
                w.write(block)
        elif path == "/truncated":
            for jpeg in self.jpegs[:3]:
                w.write(self._part(jpeg))
            whole = self._part(self.jpegs[3])
            w.write(whole[:len(whole) // 2])
        elif path in ("/slow", "/stall"):
            w.write(self._part(self.jpegs[0]))
            w.flush()
            if path == "/stall":
                time.sleep(30)
                return
            rest = self._part(self.jpegs[1])
            for i in range(0, len(rest), 100):
                w.write(rest[i:i + 100])
                w.flush()
                time.sleep(0.2)
        elif path == "/notjpeg":
            w.write(self._part(b"hello, not a picture", content_type="text/plain"))
        elif path == "/resize":
            w.write(self._part(self.jpegs[0]) + self._part(self.jpegs[1]) + self._part(self.other_size))

    def _start(self, h: BaseHTTPRequestHandler, content_type: str) -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Cache-Control", "no-cache")
        h.end_headers()

    def _part(self, jpeg: bytes, *, length: bool = True, boundary: str = BOUNDARY,
              content_type: str = "image/jpeg", extra: str = "") -> bytes:
        head = f"--{boundary}\r\nContent-Type: {content_type}\r\n"
        if length:
            head += f"Content-Length: {len(jpeg)}\r\n"
        return (head + extra + "\r\n").encode() + jpeg + b"\r\n"

    def _stream(self, w: object, path: str, frames: int | None, fps: float) -> None:
        started = time.monotonic()
        i = 0
        while frames is None or i < frames:
            jpeg = self.jpegs[i % len(self.jpegs)]
            if path == "/quirky":
                data = b"--quirk\nContent-Type: image/jpeg\n\n" + jpeg
            elif path == "/xts":
                data = self._part(jpeg, extra=f"X-Timestamp: {time.time():.3f}\r\n")
            else:
                data = self._part(jpeg, length=path != "/nolength")
            w.write(data)  # type: ignore[attr-defined]
            w.flush()  # type: ignore[attr-defined]
            i += 1
            time.sleep(max(0.0, started + i / fps - time.monotonic()))
        if path == "/nolength":
            w.write(f"--{BOUNDARY}--\r\n".encode())  # type: ignore[attr-defined]


def jpeg_array(data: bytes) -> np.ndarray:
    ctx = av.CodecContext.create("mjpeg", "r")
    (frame,) = ctx.decode(av.Packet(data))
    return frame.to_ndarray(format="gray")
