"""MJPEG over HTTP: the ``multipart/x-mixed-replace`` stream cheap IP cameras serve.

The response's ``Content-Type: multipart/x-mixed-replace; boundary=B`` announces a body of parts,
each ``--B`` CRLF, headers, a blank line, one JPEG, CRLF; one part is one frame, signed exactly as
received (``codec mjpeg``, every frame a keyframe). Parsing (`MultipartParser`) is pure and
incremental; `MjpegSource` is the shell around it: one HTTP connection (httpx), timeouts,
reconnects, capture times.

A part ends at its ``Content-Length`` when it carries one, otherwise at the next boundary (the
CRLF before a boundary belongs to the boundary, RFC 2046). Known camera quirks are taken: a boundary
parameter that already starts with ``--`` and is used as is, quoted boundaries, bare LF line ends,
no CRLF before a boundary.

Limits (hostile or broken cameras; each is one `SourceError` naming it): the preamble before the
first boundary and each part's headers at most ``max_header_bytes`` (8 KiB), at most 64 headers a
part, a part at most ``max_part_bytes`` (8 MiB: the node takes messages up to 16 MiB), a part must
be a JPEG (starts with FF D8) of the stream's first size, each read waits at most ``timeout``
(10 s) and each part is whole within ``part_timeout`` (10 s) however slowly its bytes trickle.

Capture time: the agent's clock (wall time at connection plus a monotonic clock, so an NTP step
never makes time run backwards) when a part's headers are complete, at least 1 ms after the
previous frame. With ``timing="auto"`` a stream whose first part carries ``X-Timestamp`` (seconds
since the epoch, fractional, or milliseconds) within ``max_skew_ms`` of the agent's clock is
timed by the camera instead; every later part of that connection must then carry one, strictly
increasing. The frame rate is measured over the first parts (``probe_frames``, at most
``probe_s``) unless given.

With ``loop`` (reconnect) a broken or ended stream is re-opened with backoff (0.5 s doubling to 8 s,
for up to ``reconnect_s``); numbering goes on, the outage shows as a gap in capture time and is
recorded in ``outages``; once the camera is back the agent declares each to the nodes, signed
(`CameraAgent`, issue 10), and `camera run` prints and reports them.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from typing import Any

from .sources import CodecConfig, EncodedFrame, PassState, SourceError

log = logging.getLogger(__name__)

__all__ = ["MAX_HEADER_BYTES", "MAX_PART_BYTES", "MjpegSource", "MultipartError", "MultipartParser", "Outage",
           "Part", "boundary_of", "jpeg_size", "parse_x_timestamp"]

MAX_HEADER_BYTES = 8 * 1024
MAX_PART_BYTES = 8 * 1024 * 1024
MAX_HEADERS = 64
SOI = b"\xff\xd8"


class MultipartError(ValueError):
    """The multipart stream is malformed or over a limit (the message says which)."""


@dataclass(frozen=True)
class Part:
    index: int                      # 1-based, in the connection
    headers: dict[str, str]         # names lower-cased
    body: bytes


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/*`` Content-Type; `MultipartError` when there is none."""
    kind, _, params = content_type.partition(";")
    if not kind.strip().lower().startswith("multipart/"):
        raise MultipartError(f"Content-Type {content_type[:100]!r} is not multipart (not an MJPEG stream)")
    match = re.search(r'(?i)(?:^|;)\s*boundary\s*=\s*("([^"]*)"|[^;\s]+)', params)
    boundary = (match.group(2) if match and match.group(2) is not None else match.group(1) if match else "") or ""
    if not boundary or len(boundary) > 200:
        raise MultipartError(f"Content-Type {content_type[:100]!r} has no usable boundary parameter")
    return boundary.encode("latin-1", "replace")


class _State(Enum):
    PREAMBLE = "preamble"   # before the first boundary
    BETWEEN = "between"     # after a part: only line ends may come before the next boundary
    DELIMITER = "delimiter"  # a boundary seen: the rest of its line
    HEADERS = "headers"
    BODY = "body"
    DONE = "done"           # closing boundary seen


class MultipartParser:
    """Incremental, bounded parser of a multipart body: `feed` bytes, get whole `Part`s."""

    def __init__(self, boundary: bytes, *, max_part_bytes: int = MAX_PART_BYTES,
                 max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self._candidates = [b"--" + boundary] + ([boundary] if boundary.startswith(b"--") else [])
        self._delim = self._candidates[0]
        self.max_part_bytes, self.max_header_bytes = max_part_bytes, max_header_bytes
        self._buf = bytearray()
        self._state = _State.PREAMBLE
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._length: int | None = None
        self._scan_from = 0
        self.parts = 0              # parts completed
        self.consumed = 0           # bytes fed so far
        self._steps: dict[_State, Callable[[], Part | bool | None]] = {
            _State.PREAMBLE: self._preamble, _State.BETWEEN: self._between, _State.DELIMITER: self._delimiter,
            _State.HEADERS: self._read_headers, _State.BODY: self._body}

    @property
    def in_part(self) -> bool:
        """True between a part's boundary and its end (what a part timeout measures)."""
        return self._state in (_State.DELIMITER, _State.HEADERS, _State.BODY)

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished part (or of the preamble) are held."""
        if self._state is _State.BETWEEN:
            return self._blank_prefix() < len(self._buf)
        return self._state is not _State.DONE

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    def feed(self, data: bytes) -> list[Part]:
        self.consumed += len(data)
        if self._state is _State.DONE:
            return []
        self._buf += data
        out: list[Part] = []
        while True:
            part = self._steps[self._state]()
            if part is None:
                return out
            if isinstance(part, Part):
                out.append(part)

    def finish(self) -> list[Part]:
        """The stream ended: an error when it ended inside a part (truncated) or before any. A
        part without Content-Length that the server closed after a whole JPEG (EOI marker), with no
        boundary after it, is the last part."""
        if self._state is _State.BODY and self._length is None:
            body = bytes(self._buf).rstrip(b"\r\n")
            if body.endswith(b"\xff\xd9"):
                self._buf.clear()
                return [self._emit(body)]
        if self._state is _State.BODY and self._length is not None:
            raise MultipartError(f"the stream ended inside part {self.parts + 1}: {len(self._buf)} of its "
                                 f"{self._length} bytes (Content-Length) arrived")
        if self._state is _State.BODY:
            raise MultipartError(f"the stream ended inside part {self.parts + 1} ({len(self._buf)} bytes, "
                                 "no boundary after them): truncated")
        if self._state in (_State.DELIMITER, _State.HEADERS):
            raise MultipartError(f"the stream ended inside the headers of part {self.parts + 1}")
        if self._state is _State.PREAMBLE:
            raise MultipartError(f"the stream ended before its first boundary {self._delim.decode('latin-1')!r}")
        return []

    # -- states: each returns a Part, True (state changed, go on) or None (needs more bytes) --
    def _preamble(self) -> bool | None:
        hits = [(i, c) for c in self._candidates if (i := self._line_start_find(c)) >= 0]
        if not hits:
            if len(self._buf) > self.max_header_bytes:
                raise MultipartError(f"no boundary {self._delim.decode('latin-1')!r} in the first "
                                     f"{self.max_header_bytes} bytes of the stream")
            return None
        at, self._delim = min(hits)
        del self._buf[:at + len(self._delim)]
        self._state = _State.DELIMITER
        return True

    def _blank_prefix(self) -> int:
        """How many line-end / blank bytes the buffer starts with (without copying it)."""
        n, size = 0, len(self._buf)
        while n < size and self._buf[n] in b"\r\n \t":
            n += 1
        return n

    def _line_start_find(self, needle: bytes) -> int:
        """The first occurrence of ``needle`` at the start of a line of the buffer, or -1."""
        at = self._buf.find(needle)
        while at > 0 and self._buf[at - 1] != 0x0A:
            at = self._buf.find(needle, at + 1)
        return at

    def _between(self) -> bool | None:
        blank = self._blank_prefix()
        if blank > self.max_header_bytes:
            raise MultipartError(f"more than {self.max_header_bytes} bytes of blank lines after part {self.parts}")
        head = bytes(self._buf[blank:blank + len(self._delim)])
        if len(head) < len(self._delim):
            if head and not self._delim.startswith(head):
                raise self._not_boundary()
            return None
        if head != self._delim:
            raise self._not_boundary()
        del self._buf[:blank + len(self._delim)]
        self._state = _State.DELIMITER
        return True

    def _not_boundary(self) -> MultipartError:
        why = (f"its Content-Length ({self._length}) is not followed by the boundary" if self._length is not None
               else "it is not followed by the boundary")
        return MultipartError(f"part {self.parts}: {why}")

    def _delimiter(self) -> bool | None:
        if len(self._buf) < 2:
            return None
        if self._buf[:2] == b"--":
            self._state = _State.DONE
            self._buf.clear()
            return None
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > self.max_header_bytes:
                raise MultipartError(f"the boundary line of part {self.parts + 1} is longer than "
                                     f"{self.max_header_bytes} bytes")
            return None
        if self._buf[:end].strip(b" \t\r"):
            raise MultipartError(f"part {self.parts + 1}: text after the boundary on its line "
                                 f"({bytes(self._buf[:min(end, 40)])!r})")
        del self._buf[:end + 1]
        self._headers, self._header_bytes, self._length = {}, 0, None
        self._state = _State.HEADERS
        return True

    def _read_headers(self) -> bool | None:
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if self._header_bytes + len(self._buf) > self.max_header_bytes:
                    raise self._headers_too_long()
                return None
            line = bytes(self._buf[:end]).rstrip(b"\r")
            del self._buf[:end + 1]
            self._header_bytes += end + 1
            if self._header_bytes > self.max_header_bytes:
                raise self._headers_too_long()
            if not line:
                return self._start_body()
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not name.strip():
                raise MultipartError(f"part {self.parts + 1}: malformed header line {line[:60]!r}")
            if len(self._headers) >= MAX_HEADERS:
                raise MultipartError(f"part {self.parts + 1} has more than {MAX_HEADERS} headers")
            self._headers[name.strip().lower()] = value.strip()

    def _headers_too_long(self) -> MultipartError:
        return MultipartError(f"the headers of part {self.parts + 1} exceed {self.max_header_bytes} bytes")

    def _start_body(self) -> bool:
        length = self._headers.get("content-length")
        if length is not None:
            if not length.isdigit() or len(length) > 12:
                raise MultipartError(f"part {self.parts + 1}: Content-Length {length[:20]!r} is not a number")
            if int(length) > self.max_part_bytes:
                raise self._too_large(f"its Content-Length is {int(length)}")
            self._length = int(length)
        self._scan_from = 0
        self._state = _State.BODY
        return True

    def _too_large(self, what: str) -> MultipartError:
        return MultipartError(f"part {self.parts + 1} is over the limit of {self.max_part_bytes} bytes ({what})")

    def _body(self) -> Part | None:
        if self._length is not None:
            if len(self._buf) < self._length:
                return None
            body = bytes(self._buf[:self._length])
            del self._buf[:self._length]
            return self._emit(body)
        at = self._buf.find(self._delim, self._scan_from)
        while at > 0 and self._buf[at - 1] != 0x0A and at + len(self._delim) <= len(self._buf):
            # Cameras that write no CRLF before the boundary exist, but a boundary mid-line is more
            # likely JPEG data that happens to match: take it only when the JPEG has ended there.
            if self._buf[at - 2:at] == b"\xff\xd9":
                break
            at = self._buf.find(self._delim, at + 1)
        if at < 0:
            if len(self._buf) > self.max_part_bytes:
                raise self._too_large("no boundary within them")
            self._scan_from = max(0, len(self._buf) - len(self._delim))
            return None
        end = at
        if end >= 1 and self._buf[end - 1] == 0x0A:
            end -= 2 if end >= 2 and self._buf[end - 2] == 0x0D else 1
        if end > self.max_part_bytes:
            raise self._too_large(f"{end} bytes before the boundary")
        body = bytes(self._buf[:end])
        del self._buf[:at]
        return self._emit(body)

    def _emit(self, body: bytes) -> Part:
        self.parts += 1
        self._state = _State.BETWEEN
        return Part(index=self.parts, headers=self._headers, body=body)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame marker, or None. Reads markers only (bounded by
    the data), never the entropy-coded picture."""
    if not data.startswith(SOI):
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if length < 2:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(data):
                return None
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + length
    return None


def parse_x_timestamp(value: str) -> int | None:
    """``X-Timestamp`` as epoch milliseconds: seconds (``1700000000.125``) or milliseconds
    (13 digits and more). None when it is not a plain finite number."""
    text = value.strip()
    if not re.fullmatch(r"\d{1,16}(\.\d{1,9})?", text):
        return None
    number = Fraction(text)
    return int(number) if number >= 10**11 else int(number * 1000)


@dataclass(frozen=True)
class Outage:
    """A live source lost its camera: from the capture time of frame ``after_seq`` to that of the next."""

    after_seq: int
    from_ms: int
    to_ms: int | None = None        # None: the camera never came back
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"afterSeq": self.after_seq, "fromMs": self.from_ms, "toMs": self.to_ms, "reason": self.reason}


@dataclass
class _Connection:
    """One HTTP response being parsed, with the parts read ahead (codec probe)."""

    client: Any
    response: Any
    chunks: Iterator[bytes]
    parser: MultipartParser
    wall0_ms: int
    mono0: float
    ahead: deque[tuple[Part, float]] = field(default_factory=deque)
    pending_since: float | None = None   # first bytes of the part under way arrived then
    broken: SourceError | None = None    # how the connection failed while the codec was probed
    camera_timed: bool | None = None

    def close(self) -> None:
        try:
            self.response.close()
        finally:
            self.client.close()


def backoff_delays(first: float = 0.5, cap: float = 8.0) -> Iterator[float]:
    """0.5, 1, 2, 4, 8, 8, ... seconds: reconnect attempts to a lost camera."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


def http_content_type(url: str, timeout: float = 10.0) -> str | None:
    """The Content-Type a URL answers a GET with (the body is not read), None when it cannot be
    asked: how `camera run` tells an MJPEG camera from a recording served over HTTP."""
    import httpx

    try:
        with httpx.stream("GET", url, timeout=timeout, headers={"Accept": "*/*"}) as response:
            return str(response.headers.get("content-type", "")) if response.status_code < 400 else None
    except httpx.HTTPError:
        return None


def is_multipart(content_type: str | None) -> bool:
    return bool(content_type) and str(content_type).split(";")[0].strip().lower().startswith("multipart/")


class MjpegSource:
    """Streams an MJPEG-over-HTTP camera as `EncodedFrame`s, like `FileSource` (see the module
    docstring for parsing, limits and timing)."""

    def __init__(
        self,
        url: str,
        *,
        start_ms: int | None = None,
        loop: bool = False,
        fps: float | Fraction | None = None,
        timing: str = "auto",
        timeout: float = 10.0,
        part_timeout: float = 10.0,
        max_part_bytes: int = MAX_PART_BYTES,
        max_header_bytes: int = MAX_HEADER_BYTES,
        reconnect_s: float = 30.0,
        probe_frames: int = 10,
        probe_s: float = 2.0,
        max_skew_ms: int = 300_000,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if timing not in ("auto", "agent"):
            raise ValueError("timing is 'auto' (the camera's X-Timestamp when sane) or 'agent'")
        self.url, self.start_ms, self.loop, self.timing = url, start_ms, loop, timing
        self.fps = Fraction(fps).limit_denominator(1001000) if fps else None
        self.timeout, self.part_timeout, self.reconnect_s = timeout, part_timeout, reconnect_s
        self.max_part_bytes, self.max_header_bytes = max_part_bytes, max_header_bytes
        self.probe_frames, self.probe_s, self.max_skew_ms = max(1, probe_frames), probe_s, max_skew_ms
        self.clock, self.monotonic, self.sleep = clock, monotonic, sleep
        self.outages: list[Outage] = []
        self.failure: str | None = None   # why a reconnecting source gave up (it then ends)
        self._codec: CodecConfig | None = None
        self._size: tuple[int, int] | None = None
        self._conn: _Connection | None = None
        self._anchor: tuple[int, float] | None = None   # (wall ms, monotonic s): the agent's clock
        self._last: EncodedFrame | None = None

    def __repr__(self) -> str:
        from .url_source import _redact

        return f"MjpegSource({_redact(self.url)!r}, loop={self.loop})"

    @property
    def _name(self) -> str:
        from .url_source import _redact

        return _redact(self.url)

    # -- connection --------------------------------------------------------------------------
    def _connect(self) -> _Connection:
        import httpx

        client = httpx.Client(timeout=httpx.Timeout(self.timeout), follow_redirects=False)
        try:
            request = client.build_request("GET", self.url, headers={"Accept": "multipart/x-mixed-replace, */*"})
            response = client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            client.close()
            raise SourceError(f"cannot open {self._name}: no answer within {self.timeout:g} s") from exc
        except httpx.HTTPError as exc:
            client.close()
            raise SourceError(f"cannot open {self._name}: {exc}") from exc
        try:
            if response.status_code != 200:
                raise SourceError(f"cannot open {self._name}: HTTP {response.status_code}")
            boundary = boundary_of(response.headers.get("content-type", ""))
        except (SourceError, MultipartError) as exc:
            response.close()
            client.close()
            raise SourceError(f"{self._name}: {exc}") if isinstance(exc, MultipartError) else exc from None
        now = self.monotonic()
        if self._anchor is None:
            self._anchor = (int(self.clock() * 1000) if self.start_ms is None else self.start_ms, now)
        parser = MultipartParser(boundary, max_part_bytes=self.max_part_bytes, max_header_bytes=self.max_header_bytes)
        return _Connection(client, response, response.iter_raw(), parser, self._anchor[0], self._anchor[1])

    def _parts(self, conn: _Connection) -> Generator[tuple[Part, float], None, None]:
        """The connection's parts with the monotonic time their first bytes arrived. Parts parsed
        but not yet taken stay in ``conn.ahead``, so closing this generator loses nothing."""
        import httpx

        try:
            while True:
                while conn.ahead:
                    yield conn.ahead.popleft()
                if conn.broken is not None:
                    raise conn.broken
                if conn.parser.done:
                    return
                chunk = next(conn.chunks, None)
                if chunk is None:
                    conn.ahead.extend((part, conn.pending_since or self.monotonic()) for part in conn.parser.finish())
                    conn.chunks = iter(())
                    if not conn.ahead:
                        return
                    continue
                now = self.monotonic()
                if conn.pending_since is None:
                    conn.pending_since = now
                parts = conn.parser.feed(chunk)
                conn.ahead.extend((part, conn.pending_since if i == 0 else now) for i, part in enumerate(parts))
                if parts:
                    conn.pending_since = now if conn.parser.pending else None
                elif now - conn.pending_since > self.part_timeout:
                    raise SourceError(f"{self._name}: part {conn.parser.parts + 1} not complete after "
                                      f"{self.part_timeout:g} s (the camera sends too slowly)")
        except MultipartError as exc:
            raise SourceError(f"{self._name}: {exc}") from None
        except httpx.TimeoutException:
            raise SourceError(f"{self._name}: nothing received for {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise SourceError(f"{self._name}: the stream broke: {exc}") from None

    # -- codec -------------------------------------------------------------------------------
    @property
    def codec(self) -> CodecConfig:
        """Read from the first parts of a first connection, which frames() then continues."""
        if self._codec is None:
            conn = self._conn = self._conn or self._connect()
            started = self.monotonic()
            parts = self._parts(conn)
            probe: list[tuple[Part, float]] = []
            try:
                for item in parts:
                    probe.append(item)
                    if len(probe) >= self.probe_frames or self.monotonic() - started >= self.probe_s:
                        break
                parts.close()
            except SourceError as exc:
                conn.broken = exc  # raised once the frames read before it have been taken
            if not probe:
                conn.close()
                self._conn = None
                raise conn.broken or SourceError(f"{self._name}: the stream ended before its first JPEG")
            conn.ahead.extendleft(reversed(probe))
            self._codec = self._codec_from(probe)
        return self._codec

    def _codec_from(self, probe: list[tuple[Part, float]]) -> CodecConfig:
        import av

        first = probe[0][0]
        self._check_jpeg(first)
        try:
            ctx = av.CodecContext.create("mjpeg", "r")
            pictures = ctx.decode(av.Packet(first.body)) + ctx.decode(None)
        except (av.FFmpegError, ValueError) as exc:
            raise SourceError(f"{self._name}: part 1 is not a decodable JPEG ({exc})") from None
        if not pictures:
            raise SourceError(f"{self._name}: part 1 is not a decodable JPEG")
        picture = pictures[0]
        return CodecConfig(codec="mjpeg", width=picture.width, height=picture.height, fps=self.fps or self._measured_fps(probe),
                           time_base=Fraction(1, 1000), pix_fmt=picture.format.name)

    def _measured_fps(self, probe: list[tuple[Part, float]]) -> Fraction:
        stamps = [parse_x_timestamp(p.headers.get("x-timestamp", "")) for p, _ in probe]
        if all(s is not None for s in stamps) and len(stamps) > 1 and stamps[-1] > stamps[0]:  # type: ignore[operator]
            span = (stamps[-1] - stamps[0]) / 1000  # type: ignore[operator]
        else:
            span = probe[-1][1] - probe[0][1]
        if len(probe) < 2 or span <= 0:
            return Fraction(1)
        fps = (len(probe) - 1) / span
        return Fraction(max(1, round(fps))) if fps >= 1 else Fraction(fps).limit_denominator(100)

    def _check_jpeg(self, part: Part) -> None:
        kind = part.headers.get("content-type", "image/jpeg").split(";")[0].strip().lower()
        if kind not in ("image/jpeg", "image/jpg", "image/pjpeg"):
            raise SourceError(f"{self._name}: part {part.index} is {kind[:60]!r}, not image/jpeg")
        size = jpeg_size(part.body)
        if size is None:
            raise SourceError(f"{self._name}: part {part.index} is not a JPEG ({len(part.body)} bytes, "
                              f"starting {part.body[:4].hex() or 'empty'})")
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise SourceError(f"{self._name}: part {part.index} is {size[0]}x{size[1]}, the stream began at "
                              f"{self._size[0]}x{self._size[1]} (a new size needs a new camera configuration)")

    # -- frames ------------------------------------------------------------------------------
    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __iter__(self) -> Iterator[EncodedFrame]:
        return self.frames()

    def frames(self) -> Iterator[EncodedFrame]:
        codec = self.codec
        run = PassState()
        while True:
            conn, self._conn = self._conn or self._connect(), None
            reason = "the camera ended the stream"
            try:
                for part, arrived in self._parts(conn):
                    self._check_jpeg(part)
                    frame = self._frame(conn, part, arrived, run.seq, codec)
                    self._last = frame
                    if self.outages and self.outages[-1].to_ms is None:
                        self.outages[-1] = _replace_to(self.outages[-1], frame.timestamp_ms)
                    run.seq += 1
                    yield frame
            except SourceError as exc:
                if not self.loop or self._last is None:
                    raise
                reason = str(exc)
            finally:
                conn.close()
            if not self.loop or self._last is None:
                return
            self._conn = self._reconnect(reason)
            if self._conn is None:
                return

    def _reconnect(self, reason: str) -> _Connection | None:
        last = self._last
        assert last is not None
        log.warning("mjpeg camera lost; reconnecting", extra={"url": self._name, "reason": reason, "after_seq": last.seq})
        self.outages.append(Outage(after_seq=last.seq, from_ms=last.timestamp_ms, reason=reason))
        deadline = self.monotonic() + self.reconnect_s
        for delay in backoff_delays():
            try:
                return self._connect()
            except SourceError as exc:
                if self.monotonic() + delay > deadline:
                    self.failure = f"camera lost after frame {last.seq} and unreachable for {self.reconnect_s:g} s: {exc}"
                    log.error("mjpeg camera gone", extra={"url": self._name, "error": str(exc)})
                    return None
                self.sleep(delay)
        return None  # pragma: no cover (backoff_delays is endless)

    def _frame(self, conn: _Connection, part: Part, arrived: float, seq: int, codec: CodecConfig) -> EncodedFrame:
        agent_ms = conn.wall0_ms + round((arrived - conn.mono0) * 1000)
        last_ms = self._last.timestamp_ms if self._last is not None else None
        camera_ms = parse_x_timestamp(part.headers.get("x-timestamp", "")) if self.timing == "auto" else None
        if conn.camera_timed is None:
            conn.camera_timed = camera_ms is not None and abs(camera_ms - agent_ms) <= self.max_skew_ms \
                and (last_ms is None or camera_ms > last_ms)
            if camera_ms is not None and not conn.camera_timed:
                log.warning("mjpeg X-Timestamp not used: too far from the agent's clock or not after the last frame",
                            extra={"url": self._name, "camera_ms": camera_ms, "agent_ms": agent_ms})
        if conn.camera_timed:
            if camera_ms is None or (last_ms is not None and camera_ms <= last_ms):
                raise SourceError(f"{self._name}: part {part.index}: X-Timestamp "
                                  f"{part.headers.get('x-timestamp', 'missing')[:40]!r} is missing or not after the "
                                  "previous frame's (the stream began with camera timestamps)")
            ts = camera_ms
        else:
            ts = agent_ms if last_ms is None else max(agent_ms, last_ms + 1)
        return EncodedFrame(seq=seq, timestamp_ms=ts, keyframe=True, data=part.body,
                            duration_ms=max(1, round(1000 / codec.fps)))


def _replace_to(outage: Outage, to_ms: int) -> Outage:
    return Outage(after_seq=outage.after_seq, from_ms=outage.from_ms, to_ms=to_ms, reason=outage.reason)
