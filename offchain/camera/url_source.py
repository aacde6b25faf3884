"""Encoded frames from a URL: a real IP camera (rtsp://) or a recording served over HTTP(S).

Same interface as `FileSource` (``codec``, ``frames()``, iteration, ``start_ms``, ``loop``):
the packets are demuxed with PyAV (``av.open(url)``), never decoded, so the bytes are the
camera's own.

Capture timestamps are ``start_ms + pts``. A live stream's pts do not start at zero (RTSP
derives them from RTP clocks), so for live schemes (rtsp, rtsps, rtmp, udp, rtp, srt) the
stream is *rebased*: the first packet's decode time becomes 0. For http(s) recordings the pts
are kept as they are, exactly like `FileSource` on the same file. ``rebase`` overrides this.

Capture time on live streams: with ``timing="auto"`` (default) an RTSP camera's own clock, from its
RTCP sender reports, when FFmpeg has one (a session without one yet holds its first frames, up to
``rtcp_wait_s`` = 5 s or 256 frames, until one arrives, rather than switching clocks mid-session):
FFmpeg maps the RTP timestamps through
the first sender report's NTP time and exposes the wall time of pts 0 as the format context's
``start_time_realtime`` (PyAV: ``container.start_time_realtime``, microseconds since the epoch), so a
frame's capture time is ``start_time_realtime + pts``. It is used when it lies within ``max_skew_ms``
(5 minutes) of the agent's clock and after the previous frame (cameras without NTP send 1970 or
1900); otherwise, and for streams without sender reports or with ``timing="agent"``, the agent's
clock: ``start_ms`` (default: when the agent starts) is the first packet's time and the stream's
own clock (RTP's 90 kHz for RTSP) spaces the rest. Which one each session used is in
``session_timing``. A packet without timestamps (RTSP's first packet reaches PyAV with pts = dts =
None) is kept and timed by interpolation at the frame rate (see `sources._presentation_order`).

An HTTP recording that cannot be streamed because its MP4 index comes last and the server ignores
range requests is named as such (`_http_mp4_hint`).

When a live stream ends or breaks, iteration ends; with ``loop=True`` (for a live camera:
"reconnect", what `camera run` does by default) the URL is re-opened with backoff (0.5 s doubling to
8 s, for up to ``reconnect_s``), the timeline and the sequence numbers go on, the outage shows as a
gap in capture time and is recorded in ``outages`` (`mjpeg.Outage`), which the agent declares to
the nodes, signed, once the camera is back (issue 10) and `camera run` reports. A
camera that does not come back within ``reconnect_s`` ends the iteration and sets ``failure``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any
from urllib.parse import urlsplit

import av

from .mjpeg import Outage, backoff_delays
from ..core.block import AUDIO_TRACK, track_seq
from .sources import (AudioPacket, CodecConfig, EncodedFrame, PassState, SourceError, _codec_config, _default_duration_ticks,
                      audio_stream,
                      _presentation_order, _ticks_to_ms, encoded_frames)

log = logging.getLogger(__name__)

__all__ = ["LIVE_SCHEMES", "URL_SCHEMES", "UrlSource", "is_url"]

URL_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "rtp", "srt")
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "udp", "rtp", "srt")


def is_url(text: str) -> bool:
    return urlsplit(str(text)).scheme.lower() in URL_SCHEMES


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


HTTP_PROBE_BYTES = 64 * 1024
MAX_RTCP_HELD = 256  # frames held at a session's start while waiting for its first RTCP sender report
RECONNECT_GAP_MS = 1000  # shorter outages are kept contiguous: indistinguishable from network jitter


def _top_level_atoms(head: bytes) -> list[str]:
    """The names of the MP4 top-level boxes that start within ``head``."""
    names, offset = [], 0
    while offset + 8 <= len(head):
        size = int.from_bytes(head[offset:offset + 4], "big")
        names.append(head[offset + 4:offset + 8].decode("latin-1"))
        if size == 1 and offset + 16 <= len(head):
            size = int.from_bytes(head[offset + 8:offset + 16], "big")
        if size < 8:
            break
        offset += size
    return names


def _http_mp4_hint(url: str) -> str | None:
    """Why an HTTP recording could not be streamed, when the reason is the usual one: an MP4 whose
    index (the moov box) comes after the media (mdat) from a server that ignores range requests,
    so the demuxer cannot jump to the index. Reads at most the first 64 KiB."""
    import httpx

    try:
        with httpx.stream("GET", url, headers={"Range": f"bytes=0-{HTTP_PROBE_BYTES - 1}"}, timeout=5) as r:
            ranged = r.status_code == 206
            head = b""
            for chunk in r.iter_bytes():
                head += chunk
                if len(head) >= HTTP_PROBE_BYTES:
                    break
    except httpx.HTTPError:
        return None
    atoms = _top_level_atoms(head[:HTTP_PROBE_BYTES])
    if "mdat" in atoms and "moov" not in atoms[: atoms.index("mdat")]:
        return ("the MP4's index (moov box) comes after its media (mdat)"
                + ("" if ranged else " and the server does not answer range requests")
                + ", so it cannot be streamed: serve it with HTTP range support, or move the index to the front "
                  "(ffmpeg -i in.mp4 -c copy -movflags +faststart out.mp4)")
    return None


class UrlSource:
    """Streams a camera or a served recording as `EncodedFrame`s, like `FileSource`."""

    def __init__(
        self,
        url: str,
        *,
        start_ms: int = 0,
        loop: bool = False,
        rebase: bool | None = None,
        options: dict[str, str] | None = None,
        timeout: float | tuple[float, float] | None = 10.0,
        stream_index: int | None = None,
        reconnect_s: float = 30.0,
        timing: str = "auto",
        max_skew_ms: int = 300_000,
        rtcp_wait_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if timing not in ("auto", "agent"):
            raise ValueError("timing is 'auto' (the camera's RTCP clock when sane) or 'agent'")
        scheme = urlsplit(url).scheme.lower()
        if scheme not in URL_SCHEMES:
            raise SourceError(f"unsupported URL scheme {scheme!r} (known: {', '.join(URL_SCHEMES)})")
        self.url = url
        self.start_ms = int(start_ms)
        self.loop = loop
        self.rebase = scheme in LIVE_SCHEMES if rebase is None else rebase
        opts = dict(options or {})
        if scheme in ("rtsp", "rtsps"):
            # Interleaved TCP: no UDP ports to open, no reordering, survives NAT.
            opts.setdefault("rtsp_transport", "tcp")
        self.options = opts
        self.timeout = timeout
        self.reconnect_s = reconnect_s
        self.timing, self.max_skew_ms, self.rtcp_wait_s = timing, max_skew_ms, rtcp_wait_s
        self.clock, self.sleep = clock, sleep
        self.outages: list[Outage] = []
        self.failure: str | None = None      # why a reconnecting source gave up (it then ends)
        self.session_timing: list[str] = []  # per live session: "rtcp" or "agent"
        self._stream_index = stream_index
        self._codec: CodecConfig | None = None
        # A container opened to read the codec is kept for the first iteration, so a live
        # camera is not asked for two sessions.
        self._opened: tuple[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"UrlSource({_redact(self.url)!r}, start_ms={self.start_ms}, loop={self.loop})"

    def _open(self) -> tuple[Any, Any]:
        try:
            container = av.open(self.url, options=self.options, timeout=self.timeout)
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open {_redact(self.url)}: {exc}") from exc
        videos = container.streams.video
        stream = None
        if self._stream_index is None:
            stream = videos[0] if videos else None
        else:
            stream = next((s for s in videos if s.index == self._stream_index), None)
        if stream is None:
            container.close()
            raise SourceError(f"{_redact(self.url)} has no video stream"
                              + (f" #{self._stream_index}" if self._stream_index is not None else ""))
        return container, stream

    @property
    def codec(self) -> CodecConfig:
        if self._codec is None:
            if self._opened is None:
                self._opened = self._open()
            self._codec = _codec_config(self._opened[1])
        return self._codec

    def close(self) -> None:
        if self._opened is not None:
            self._opened[0].close()
            self._opened = None

    def __iter__(self) -> Iterator[EncodedFrame]:
        return self.frames()

    def frames(self) -> Iterator[EncodedFrame]:
        run = PassState()
        offset_ticks = 0
        start_ms = self.start_ms
        left_at: float | None = None
        last: EncodedFrame | None = None
        while True:
            opened = self._reopen(run, last)
            if opened is None:
                return  # the camera did not come back: ``failure`` says why
            container, stream = opened
            if left_at is not None and last is not None and self.rebase:
                # A live camera kept recording while we were away: an outage of a second or more
                # shows as a gap in capture time instead of shifting everything after it.
                gap_ms = int((self.clock() - left_at) * 1000)
                if gap_ms >= RECONNECT_GAP_MS:
                    start_ms, offset_ticks = last.timestamp_ms + max(1, last.duration_ms) + gap_ms, 0
                    log.warning("live source reconnected", extra={"url": _redact(self.url), "gap_ms": gap_ms})
            if self._codec is None:
                self._codec = _codec_config(stream)
            reason = "the camera ended the stream"
            try:
                try:
                    passes = (self._live_frames(container, stream, start_ms, offset_ticks, run, last) if self.rebase
                              else encoded_frames(container, stream, start_ms, offset_ticks, run))
                    for frame in passes:
                        if self.outages and self.outages[-1].to_ms is None:
                            self.outages[-1] = Outage(after_seq=self.outages[-1].after_seq,
                                                      from_ms=self.outages[-1].from_ms, to_ms=frame.timestamp_ms,
                                                      reason=self.outages[-1].reason)
                        last = frame
                        yield frame
                except av.FFmpegError as exc:
                    if not self.loop or run.first_ticks is None:
                        hint = _http_mp4_hint(self.url) if not self.rebase else None
                        raise SourceError(f"{_redact(self.url)}: stream failed: {hint or exc}") from exc
                    reason = f"the stream broke: {exc}"
                    log.warning("url source broke; re-opening", extra={"url": _redact(self.url), "error": str(exc)})
            finally:
                container.close()
            if not self.loop or run.first_ticks is None or run.end_ticks is None:
                return
            if self.rebase and last is not None:
                self.outages.append(Outage(after_seq=last.seq, from_ms=last.timestamp_ms, reason=reason))
            offset_ticks += run.end_ticks - run.first_ticks
            left_at = self.clock()

    def _live_frames(self, container: Any, stream: Any, start_ms: int, offset_ticks: int, run: PassState,
                     last: EncodedFrame | None) -> Iterator[EncodedFrame]:
        """One live session as `EncodedFrame`s: like `sources.encoded_frames` with ``rebase``, but
        timed by the camera's RTCP clock when there is a usable one (see the module docstring)."""
        time_base = Fraction(stream.time_base)
        default_duration = _default_duration_ticks(stream, time_base)
        reorders = bool(stream.codec_context.reorder_depth)
        run.first_ticks = run.end_ticks = None
        to_ms: Callable[[int], int] | None = None
        # The camera's audio comes interleaved, numbered in its own track, on the video's clock.
        items = _presentation_order(container, stream, default_duration, fill_missing=True,
                                    audio=audio_stream(container))
        held: list[Any] = []
        if self.timing == "auto" and getattr(container, "start_time_realtime", None) is None and self.rtcp_wait_s > 0:
            # No sender report yet: hold the session's first frames until one arrives (bounded),
            # rather than switching clocks mid-session.
            waiting_since = time.monotonic()
            for item in items:
                held.append(item)
                if (getattr(container, "start_time_realtime", None) is not None or len(held) >= MAX_RTCP_HELD
                        or time.monotonic() - waiting_since >= self.rtcp_wait_s):
                    break
        floor_ms = 0
        for item in itertools.chain(held, items):
            if isinstance(item, AudioPacket):
                ticks = int(item.seconds / time_base)
                if to_ms is None:  # a session whose first packet is audio: it sets the origin
                    to_ms = self._session_clock(container, time_base, ticks, start_ms, offset_ticks, last)
                    floor_ms = to_ms(ticks)
                yield EncodedFrame(seq=track_seq(AUDIO_TRACK, run.audio_seq), timestamp_ms=max(floor_ms, to_ms(ticks)),
                                   keyframe=True, data=item.data, duration_ms=round(item.duration_s * 1000))
                run.audio_seq += 1
                continue
            pts, dts, duration, keyframe, data = item
            if to_ms is None:
                to_ms = self._session_clock(container, time_base, min(dts, pts), start_ms, offset_ticks, last)
                floor_ms = to_ms(min(dts, pts))
            if run.first_ticks is None:
                run.first_ticks = pts
            if run.end_ticks is None or pts + duration > run.end_ticks:
                run.end_ticks = pts + duration
            yield EncodedFrame(seq=run.seq, timestamp_ms=to_ms(pts), keyframe=keyframe, data=data,
                               duration_ms=_ticks_to_ms(duration, time_base),
                               dts_ms=to_ms(dts) if reorders or dts != pts else None)
            run.seq += 1

    def _session_clock(self, container: Any, time_base: Fraction, base: int, start_ms: int, offset_ticks: int,
                       last: EncodedFrame | None) -> Callable[[int], int]:
        """ticks -> capture ms for one session: RTCP's wall clock of pts 0 when usable, else the
        agent's clock (``start_ms`` at the session's first decode time)."""
        realtime_us = getattr(container, "start_time_realtime", None) if self.timing == "auto" else None
        if realtime_us is not None:
            zero_ms = Fraction(int(realtime_us), 1000)
            first_ms = round(zero_ms + base * time_base * 1000)
            skew = first_ms - int(self.clock() * 1000)
            if abs(skew) <= self.max_skew_ms and (last is None or first_ms > last.timestamp_ms):
                self.session_timing.append("rtcp")
                return lambda ticks: round(zero_ms + ticks * time_base * 1000)
            log.warning("RTCP clock not used: too far from the agent's clock or not after the last frame",
                        extra={"url": _redact(self.url), "skew_ms": skew})
        self.session_timing.append("agent")
        return lambda ticks: start_ms + _ticks_to_ms(ticks - base + offset_ticks, time_base)

    def _reopen(self, run: PassState, last: EncodedFrame | None) -> tuple[Any, Any] | None:
        """The container for the next pass. A live source that has streamed before retries with
        backoff (0.5 s doubling to 8 s) for up to ``reconnect_s`` before giving up (None, and
        ``failure`` says why): cameras reboot, links flap."""
        if self._opened is not None:
            opened, self._opened = self._opened, None
            return opened
        if not (self.rebase and run.seq):
            return self._open()
        deadline = time.monotonic() + self.reconnect_s
        for delay in backoff_delays():
            try:
                return self._open()
            except SourceError as exc:
                if time.monotonic() + delay > deadline:
                    self.failure = (f"camera lost after frame {last.seq if last else run.seq - 1} and unreachable "
                                    f"for {self.reconnect_s:g} s: {exc}")
                    log.error("live source gone", extra={"url": _redact(self.url), "error": str(exc)})
                    return None
                self.sleep(delay)
        return None  # pragma: no cover (backoff_delays is endless)
