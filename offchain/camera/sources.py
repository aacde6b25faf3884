"""Encoded-frame sources: the camera side of FrameLedger.

A ledger frame is one access unit exactly as the camera produced it.  Anything
that decodes and re-encodes would change the bytes whose hashes get anchored,
so sources here only ever *demux*: they hand out the compressed packets and the
codec configuration needed to make sense of them later.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ..core.block import AUDIO_TRACK, track_of, track_seq

__all__ = ["AudioConfig", "CodecConfig", "EncodedFrame", "FileSource", "SourceError"]


class SourceError(RuntimeError):
    """A recording cannot be served as encoded frames (no video, no timestamps...)."""


def _fraction(value: Any) -> Fraction | None:
    if value is None:
        return None
    if isinstance(value, Fraction):
        return value
    if isinstance(value, str):
        return Fraction(value)
    if isinstance(value, float):
        # Floats such as 29.97 come from people, not from containers: keep the
        # ratio human-sized rather than exposing binary noise.
        return Fraction(value).limit_denominator(1001 * 1000)
    return Fraction(value)


def _ticks_to_ms(ticks: int, time_base: Fraction) -> int:
    return round(ticks * time_base * 1000)


@dataclass(frozen=True)
class AudioConfig:
    """The camera's audio track (issue 10): what a player needs beside its packets.

    ``extradata`` is the decoder configuration (AAC's AudioSpecificConfig, Opus's header; empty
    for G.711), ``time_base`` the source's, ``frame_size`` samples per packet (0: varies), and
    ``fps`` the packet rate (packets per second), which the gap scan uses like a frame rate.
    """

    codec: str
    sample_rate: int
    channels: int
    time_base: Fraction
    extradata: bytes = b""
    frame_size: int = 0
    layout: str | None = None
    fps: Fraction = Fraction(50)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fps", _fraction(self.fps))
        object.__setattr__(self, "time_base", _fraction(self.time_base))
        object.__setattr__(self, "extradata", bytes(self.extradata or b""))

    def to_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "layout": self.layout,
            "time_base": f"{self.time_base.numerator}/{self.time_base.denominator}",
            "extradata": base64.b64encode(self.extradata).decode("ascii"),
            "frame_size": self.frame_size,
            "fps": f"{self.fps.numerator}/{self.fps.denominator}",
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> AudioConfig:
        return cls(codec=str(obj["codec"]), sample_rate=int(obj["sample_rate"]), channels=int(obj["channels"]),
                   time_base=obj["time_base"], extradata=base64.b64decode(obj.get("extradata") or ""),
                   frame_size=int(obj.get("frame_size") or 0), layout=obj.get("layout"), fps=obj.get("fps") or 50)


@dataclass(frozen=True)
class CodecConfig:
    """Everything needed to turn a camera's packets back into pictures.

    It is recorded once per camera instead of once per frame: the packets of an
    AVC/MP4 stream are length-prefixed slices that only decode together with
    the SPS/PPS carried in ``extradata`` (the avcC record).

    ``reorder_depth`` is kept because a stream with B-frames cannot be remuxed
    from presentation order alone: whoever rebuilds a file must know that decode
    timestamps (``EncodedFrame.dts_ms``) are required.
    """

    codec: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    extradata: bytes = b""
    pix_fmt: str | None = None
    reorder_depth: int = 0
    profile: str | None = None
    # The camera's audio track, when it has one (its packets are numbered in the audio track:
    # `core.block.track_seq`). Serialised only when set: a camera without audio keeps its bytes.
    audio: AudioConfig | None = None

    def __post_init__(self) -> None:
        # Accept "25", 25, 25.0 or "30000/1001" so configs read back from JSON
        # or typed by hand compare equal to the ones demuxed from files.
        object.__setattr__(self, "fps", _fraction(self.fps))
        object.__setattr__(self, "time_base", _fraction(self.time_base))
        object.__setattr__(self, "extradata", bytes(self.extradata or b""))

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "fps": f"{self.fps.numerator}/{self.fps.denominator}",
            "time_base": f"{self.time_base.numerator}/{self.time_base.denominator}",
            "extradata": base64.b64encode(self.extradata).decode("ascii"),
            "pix_fmt": self.pix_fmt,
            "reorder_depth": self.reorder_depth,
            "profile": self.profile,
            **({"audio": self.audio.to_dict()} if self.audio is not None else {}),
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace), so the same configuration
        always hashes the same when it is anchored or compared across nodes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> CodecConfig:
        obj = json.loads(data) if isinstance(data, (str, bytes, bytearray)) else dict(data)
        return cls(
            codec=obj["codec"],
            width=int(obj["width"]),
            height=int(obj["height"]),
            fps=obj["fps"],
            time_base=obj["time_base"],
            extradata=base64.b64decode(obj.get("extradata") or ""),
            pix_fmt=obj.get("pix_fmt"),
            reorder_depth=int(obj.get("reorder_depth") or 0),
            profile=obj.get("profile"),
            audio=AudioConfig.from_json(obj["audio"]) if isinstance(obj.get("audio"), dict) else None,
        )

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON: a short handle for "same camera setup"."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @property
    def frame_duration_ms(self) -> float:
        return 1000.0 / float(self.fps) if self.fps else 0.0

    @property
    def mime_codec(self) -> str | None:
        """RFC 6381 codec string (``avc1.PPCCLL``) for ``<video>``/MSE type checks."""
        if self.codec == "h264" and len(self.extradata) >= 4 and self.extradata[0] == 1:
            return "avc1." + self.extradata[1:4].hex()
        return None

    def splice_compatible(self, other: CodecConfig) -> bool:
        """True when packets of both configurations can share one MP4 track:
        an MP4 sample entry carries exactly one avcC, so the parameter sets
        must be byte-identical, not merely similar."""
        return (
            self.codec == other.codec
            and self.width == other.width
            and self.height == other.height
            and self.extradata == other.extradata
        )


@dataclass(frozen=True)
class EncodedFrame:
    """One access unit as the camera sent it.

    ``timestamp_ms`` is the capture (presentation) time.  ``dts_ms`` is only set
    for streams whose decode order differs from presentation order (B-frames);
    it lets a remux rebuild decode order without parsing the bitstream.
    """

    seq: int
    timestamp_ms: int
    keyframe: bool
    data: bytes = field(repr=False)
    duration_ms: int = 0
    dts_ms: int | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def track(self) -> int:
        """0 for a video frame, 1 for an audio packet (`core.block.track_of`)."""
        return track_of(self.seq)

    @property
    def size(self) -> int:
        return len(self.data)


class FileSource:
    """Replays a recording as if a camera were sending it, packet by packet.

    Packets are demuxed, never decoded: demuxing is cheap (thousands of frames
    a second) and, above all, leaves the bytes exactly as recorded.

    Frames come out in presentation order, because ``seq`` and ``timestamp_ms``
    describe capture order, which is what evidence is searched and anchored by.
    For streams with B-frames the decode timestamp is kept in ``dts_ms``.

    ``start_ms`` shifts all timestamps, so a file can stand in for a camera whose
    clock is wall time.  With ``loop`` the file repeats forever, the timeline
    (and ``seq``) continuing across repetitions as a real camera's would.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        start_ms: int = 0,
        loop: bool = False,
        stream_index: int | None = None,
        audio: bool = True,
    ) -> None:
        self.path = Path(path)
        self.audio = audio  # the file's first audio track, if any, as the camera's audio (issue 10)
        if not self.path.is_file():
            raise FileNotFoundError(self.path)
        self.start_ms = int(start_ms)
        self.loop = loop
        self._stream_index = stream_index
        self._codec: CodecConfig | None = None

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r}, start_ms={self.start_ms}, loop={self.loop})"

    def _open(self) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
        try:
            container = av.open(str(self.path))
        except av.FFmpegError as exc:
            raise SourceError(f"cannot open {self.path}: {exc}") from exc
        videos = container.streams.video
        if not videos:
            container.close()
            raise SourceError(f"{self.path} has no video stream")
        if self._stream_index is None:
            stream = videos[0]
        else:
            matches = [s for s in videos if s.index == self._stream_index]
            if not matches:
                container.close()
                raise SourceError(f"{self.path} has no video stream #{self._stream_index}")
            stream = matches[0]
        return container, stream

    @property
    def codec(self) -> CodecConfig:
        if self._codec is None:
            container, stream = self._open()
            try:
                self._codec = _codec_config(stream, audio=self.audio)
            finally:
                container.close()
        return self._codec

    def __iter__(self) -> Iterator[EncodedFrame]:
        return self.frames()

    def frames(self) -> Iterator[EncodedFrame]:
        run = PassState()
        offset_ticks = 0
        while True:
            container, stream = self._open()
            try:
                yield from encoded_frames(container, stream, self.start_ms, offset_ticks, run, audio=self.audio)
            finally:
                container.close()
            if not self.loop or run.first_ticks is None or run.end_ticks is None:
                return
            # The next repetition starts where this one's last frame ends, so
            # timestamps keep increasing as a live camera's would.
            offset_ticks += run.end_ticks - run.first_ticks


@dataclass
class PassState:
    """Where a source stands across repetitions: the next seq, and the span of the last pass."""

    seq: int = 0
    audio_seq: int = 0  # the next audio packet's number within the audio track
    first_ticks: int | None = None
    end_ticks: int | None = None


def audio_stream(container: Any) -> Any:
    """The container's first audio stream, or None."""
    streams = getattr(getattr(container, "streams", None), "audio", None)
    return streams[0] if streams else None


def encoded_frames(container: Any, stream: Any, start_ms: int, offset_ticks: int, run: PassState,
                   rebase: bool = False, audio: bool = True) -> Iterator[EncodedFrame]:
    """One pass over an opened container: packets in presentation order as `EncodedFrame`s,
    numbered on from ``run.seq``. With ``rebase`` the first packet's time becomes ``start_ms``
    (live streams, whose clocks start anywhere); otherwise the file's own timeline is kept.

    With ``audio`` the container's first audio stream comes too, interleaved as it is demuxed:
    packets numbered in the audio track (`core.block.track_seq`, from ``run.audio_seq``), timed on
    the video's clock (both tracks share the container's timeline)."""
    time_base = Fraction(stream.time_base)
    default_duration = _default_duration_ticks(stream, time_base)
    reorders = bool(stream.codec_context.reorder_depth)
    run.first_ticks = run.end_ticks = None
    sound = audio_stream(container) if audio else None
    base: int | None = None if rebase else _file_base(stream, sound, time_base)
    for item in _presentation_order(container, stream, default_duration, fill_missing=rebase, audio=sound):
        if isinstance(item, AudioPacket):
            if base is None:  # a live stream whose first packet is audio: it sets the origin
                base = int(item.seconds / time_base)
            ms = start_ms + round((item.seconds - (base - offset_ticks) * time_base) * 1000)
            yield EncodedFrame(seq=track_seq(AUDIO_TRACK, run.audio_seq), timestamp_ms=max(start_ms, ms), keyframe=True,
                               data=item.data, duration_ms=round(item.duration_s * 1000))
            run.audio_seq += 1
            continue
        pts, dts, duration, keyframe, data = item
        if base is None:
            # Presentation order starts at the smallest pts, which is >= the first decode
            # time: no timestamp ever falls before start_ms.
            base = min(dts, pts)
        if run.first_ticks is None:
            run.first_ticks = pts
        if run.end_ticks is None or pts + duration > run.end_ticks:
            run.end_ticks = pts + duration
        yield EncodedFrame(
            seq=run.seq,
            timestamp_ms=start_ms + _ticks_to_ms(pts - base + offset_ticks, time_base),
            keyframe=keyframe,
            data=data,
            duration_ms=_ticks_to_ms(duration, time_base),
            dts_ms=(start_ms + _ticks_to_ms(dts - base + offset_ticks, time_base) if reorders or dts != pts else None),
        )
        run.seq += 1


def _file_base(stream: Any, sound: Any, time_base: Fraction) -> int:
    """A file keeps its own timeline (origin 0), unless its audio starts before 0 (AAC's encoder
    delay is often written as a negative start): then the origin moves back so that no packet
    is stamped before the source's start."""
    start = getattr(sound, "start_time", None) if sound is not None else None
    if start is None or start >= 0:
        return 0
    return math.floor(Fraction(start) * Fraction(sound.time_base) / time_base)


def _audio_config(sound: Any) -> AudioConfig:
    ctx = sound.codec_context
    rate = int(ctx.sample_rate or 0)
    frame_size = int(ctx.frame_size or 0)
    layout = getattr(ctx, "layout", None)
    channels = int(getattr(layout, "nb_channels", 0) or getattr(ctx, "channels", 0) or 1)
    return AudioConfig(codec=ctx.name, sample_rate=rate, channels=channels, time_base=Fraction(sound.time_base),
                       extradata=bytes(ctx.extradata or b""), frame_size=frame_size,
                       layout=getattr(layout, "name", None),
                       fps=Fraction(rate, frame_size) if rate and frame_size else Fraction(50))


def _codec_config(stream: av.video.stream.VideoStream, audio: bool = True) -> CodecConfig:
    sound = audio_stream(getattr(stream, "container", None)) if audio else None
    ctx = stream.codec_context
    fps = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not fps:
        raise SourceError(f"stream #{stream.index} has no frame rate")
    return CodecConfig(
        codec=ctx.name,
        width=ctx.width,
        height=ctx.height,
        fps=Fraction(fps),
        time_base=Fraction(stream.time_base),
        extradata=ctx.extradata or b"",
        pix_fmt=ctx.pix_fmt,
        reorder_depth=int(ctx.reorder_depth or 0),
        profile=ctx.profile,
        audio=_audio_config(sound) if sound is not None else None,
    )


def _default_duration_ticks(stream: av.video.stream.VideoStream, time_base: Fraction) -> int:
    fps = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not fps:
        return 0
    return max(1, round(1 / (Fraction(fps) * time_base)))


MAX_UNTIMED_LEAD = 64  # packets without timestamps held before the first timed one (live streams)


@dataclass(frozen=True)
class AudioPacket:
    """An audio packet as demuxed: its presentation time and duration in seconds (exact
    fractions of its stream's time base) and its bytes."""

    seconds: Fraction
    duration_s: Fraction
    data: bytes


class _AudioTimer:
    """Times a track's audio packets; a packet without timestamps (a live stream's first ones)
    follows the one before it by its duration, or, before the first timed one, is held (at most
    MAX_UNTIMED_LEAD) and timed backwards from it."""

    def __init__(self, sound: Any, fill_missing: bool) -> None:
        self.time_base = Fraction(sound.time_base)
        ctx = sound.codec_context
        rate, size = int(ctx.sample_rate or 0), int(ctx.frame_size or 0)
        self.default = (Fraction(size, rate) / self.time_base) if rate and size else Fraction(1, 50) / self.time_base
        self.fill_missing = fill_missing
        self.next_ticks: Fraction | None = None
        self.lead: list[tuple[Fraction, bytes]] = []

    def timed(self, packet: Any, index: int) -> list[AudioPacket]:
        duration = Fraction(packet.duration) if packet.duration else self.default
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is None:
            if not self.fill_missing:
                raise SourceError(f"audio packet #{index} has no timestamps, and this source is not live")
            if self.next_ticks is None:
                if len(self.lead) >= MAX_UNTIMED_LEAD:
                    raise SourceError(f"the first {MAX_UNTIMED_LEAD} audio packets of the live stream have no timestamps")
                self.lead.append((duration, bytes(packet)))
                return []
            ticks = self.next_ticks
        else:
            ticks = Fraction(pts)
        out = []
        if self.lead:
            back = ticks - sum(d for d, _ in self.lead)
            for lead_duration, data in self.lead:
                out.append(AudioPacket(back * self.time_base, lead_duration * self.time_base, data))
                back += lead_duration
            self.lead.clear()
        out.append(AudioPacket(ticks * self.time_base, duration * self.time_base, bytes(packet)))
        self.next_ticks = ticks + duration
        return out


def _presentation_order(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    default_duration: int,
    fill_missing: bool = False,
    audio: Any = None,
) -> Iterator[tuple[int, int, int, bool, bytes] | AudioPacket]:
    """Yield (pts, dts, duration, keyframe, data) sorted by pts, streaming.

    Packets arrive in decode order with non-decreasing dts and pts >= dts, so
    once a packet with dts D has been read no later packet can present before
    D: everything buffered with pts <= D is final.  This keeps the buffer to the
    stream's reorder depth instead of a whole GOP or file.

    With ``fill_missing`` (live streams) a packet without timestamps is kept and timed by
    interpolation at the stream's frame rate: one frame after the packet before it, or, before
    the first timed packet (RTSP's first packet often has none), one frame before the packet
    after it. Without it (files), such a packet is an error.

    With ``audio`` (a stream of the same container) its packets are demuxed in the same pass and
    yielded as `AudioPacket`s as they come (audio has no reordering), between the video tuples.
    """
    heap: list[tuple[int, int, int, int, bool, bytes]] = []
    untimed_lead: list[tuple[int, bool, bytes]] = []
    order = 0
    last_dts: int | None = None
    step = max(1, default_duration)
    timer = _AudioTimer(audio, fill_missing) if audio is not None else None
    for index, packet in enumerate(container.demux(stream, audio) if audio is not None else container.demux(stream)):
        if packet.size == 0:  # flush/EOF marker, not a frame
            continue
        if timer is not None and packet.stream.index == audio.index:
            yield from timer.timed(packet, index)
            continue
        pts, dts = packet.pts, packet.dts
        if pts is None:
            pts = dts
        if pts is None:
            if not fill_missing:
                raise SourceError(f"packet #{index} has no timestamps (pts and dts unset), and this source is not "
                                  "live: a raw elementary stream needs a container")
            if last_dts is None:
                if len(untimed_lead) >= MAX_UNTIMED_LEAD:
                    raise SourceError(f"the first {MAX_UNTIMED_LEAD} packets of the live stream have no timestamps")
                untimed_lead.append((packet.duration or default_duration, bool(packet.is_keyframe), bytes(packet)))
                continue
            pts = dts = last_dts + step
        if dts is None:
            dts = pts
        if untimed_lead:
            for k, (lead_duration, lead_key, lead_data) in enumerate(untimed_lead):
                lead_ts = dts - (len(untimed_lead) - k) * step
                heapq.heappush(heap, (lead_ts, order, lead_ts, lead_duration, lead_key, lead_data))
                order += 1
            untimed_lead.clear()
        last_dts = dts
        duration = packet.duration or default_duration
        while heap and heap[0][0] <= dts:
            item = heapq.heappop(heap)
            yield item[0], item[2], item[3], item[4], item[5]
        # ``order`` breaks pts ties so bytes are never compared.
        heapq.heappush(heap, (pts, order, dts, duration, bool(packet.is_keyframe), bytes(packet)))
        order += 1
    if untimed_lead:
        raise SourceError("the stream ended before any packet carried a timestamp")
    while heap:
        item = heapq.heappop(heap)
        yield item[0], item[2], item[3], item[4], item[5]
