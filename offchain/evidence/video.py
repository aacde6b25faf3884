"""Turning anchored frames back into video a browser can play.

Evidence is only as good as the claim that the pixels shown are the pixels
anchored.  So the normal path, ``remux_to_mp4``, copies the original H.264
packets into a fresh MP4 untouched: every sample in the output hashes to a
ledger entry.  Re-encoding is reserved for spans that cannot be copied (another
camera's stream substituted in, a codec browsers cannot play), and every such
span is reported as re-encoded so the UI can say so.

``cv2.VideoWriter`` is deliberately not used: the OpenCV wheels ship without an
H.264 encoder, and PyAV's bundled libx264 plus its muxer give us control over
timestamps and MP4 flags.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import os
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np
from av.video.frame import PictureType

from offchain.camera.sources import AudioConfig, CodecConfig, EncodedFrame
from offchain.core.block import FrameRef
from offchain.core.mp4 import TICKS_PER_MS, LayoutTooLarge, Mp4Video, SampleTable, mp4_head, plan_samples

__all__ = [
    "MuxResult",
    "ProbeResult",
    "RestoreReport",
    "Span",
    "SpanOutput",
    "copied_mp4_layout",
    "copied_mux_result",
    "decode_frames",
    "encode_frames_to_mp4",
    "probe_mp4",
    "reencode_span_to_mp4",
    "remux_to_mp4",
    "restore_spans",
    "LayoutTooLarge",
    "SampleSizeMismatch",
    "write_copied_mp4",
    "JoinedFrames",
]

# 90 kHz is the MPEG system clock: it represents every millisecond exactly,
# so ledger timestamps survive the round trip into the file without rounding.
_MUX_TIME_BASE = Fraction(1, 90_000)
_MS_TICKS = TICKS_PER_MS  # 90, the one-pass writer's clock too (core/mp4.py)

# x264 quality of every re-encode the extractor makes: visually lossless, so that the encoder's
# noise stays far above the picture-similarity threshold (PICTURE_THRESHOLD_DB).
REENCODE_CRF = 16


@dataclass(frozen=True)
class MuxResult:
    path: Path
    frames: int
    first_timestamp_ms: int
    duration_ms: int
    reencoded: bool
    # (SHA-256, pts in ms relative to the first frame) of every sample in file order, hashed from
    # the very bytes handed to the muxer: the self-check reads these instead of the file again.
    samples: list[tuple[bytes, int]] = field(default_factory=list)
    # The same for the audio track's packets, when the clip has one (issue 10).
    audio_samples: list[tuple[bytes, int]] = field(default_factory=list)
    # The file's CRC-32 (zip's), computed as it was written by the one-pass writer: the bundle
    # then stores the clip without reading it back. None: not known (PyAV's muxer wrote it).
    crc32: int | None = None


# Audio codecs whose packets an MP4 carries unchanged (G.711 cannot be muxed into MP4, and a MOV
# regroups its samples: its packets travel raw in the bundle only).
MP4_AUDIO_CODECS = {"aac": "aac", "opus": "libopus", "mp3": "mp3", "flac": "flac", "ac3": "ac3"}


def audio_copyable(audio: AudioConfig | None) -> bool:
    return audio is not None and audio.codec in MP4_AUDIO_CODECS and audio.sample_rate > 0


def _add_audio_stream(container: av.container.OutputContainer, audio: AudioConfig):
    """An output stream for pre-encoded audio packets, with the camera's decoder configuration
    (the same encoder-context trick as `_add_copy_stream`; no sample is ever encoded)."""
    stream = container.add_stream(MP4_AUDIO_CODECS[audio.codec], rate=audio.sample_rate)
    stream.layout = audio.layout or ("mono" if audio.channels == 1 else "stereo")
    ctx = stream.codec_context
    ctx.time_base = stream.time_base = Fraction(1, audio.sample_rate)
    ctx.open()
    ctx.extradata = audio.extradata or None
    return stream


class _AudioMuxer:
    """Interleaves a clip's audio packets (whole, in number order) with its video as it is
    written: every packet presented up to a video frame's time goes in before that frame."""

    def __init__(self, out: Any, audio: AudioConfig, frames: Sequence[EncodedFrame], origin: int) -> None:
        self.stream = _add_audio_stream(out, audio)
        self.out, self.origin, self.rate = out, origin, audio.sample_rate
        self.frames = sorted(frames, key=lambda f: f.seq)
        self.next = 0
        self.last_pts = -1
        self.samples: list[tuple[bytes, int]] = []

    def until(self, ms: int | None) -> None:
        while self.next < len(self.frames) and (ms is None or self.frames[self.next].timestamp_ms <= ms):
            f = self.frames[self.next]
            self.next += 1
            # ms capture times back to samples; MP4 wants strictly increasing times per track
            pts = max(round((f.timestamp_ms - self.origin) * self.rate / 1000), self.last_pts + 1)
            packet = av.Packet(f.data)
            packet.pts = packet.dts = pts
            if f.duration_ms:
                packet.duration = round(f.duration_ms * self.rate / 1000)
            packet.time_base = self.stream.time_base
            packet.stream = self.stream
            self.out.mux(packet)
            self.samples.append((hashlib.sha256(f.data).digest(), f.timestamp_ms - self.origin))
            self.last_pts = pts


@dataclass(frozen=True)
class ProbeResult:
    frames: int
    timestamps_ms: list[int]
    width: int
    height: int
    codec: str
    pix_fmt: str | None
    keyframes: int
    duration_ms: int
    faststart: bool
    packet_sha256: list[str] = field(repr=False, default_factory=list)


def _mp4_options(faststart: bool) -> dict[str, str]:
    # faststart puts the index (moov) first so a browser can start playing
    # before the whole file has arrived.
    return {"movflags": "+faststart"} if faststart else {}


def _tmp_path(out_path: Path) -> Path:
    return out_path.with_name(f".{out_path.name}.{os.getpid()}.partial")


def _decode_order(codec: CodecConfig, frames: Sequence[EncodedFrame]) -> list[EncodedFrame]:
    """Put frames back into the order a decoder must see them.

    Frames are stored in presentation order.  Without B-frames that *is* decode
    order; with them, only the recorded decode timestamps can restore it.
    """
    missing = sum(1 for f in frames if f.dts_ms is None)
    if codec.reorder_depth and missing:
        raise ValueError(
            f"{missing} of {len(frames)} frames lack dts_ms but the stream reorders "
            f"frames (reorder_depth={codec.reorder_depth}); decode order cannot be rebuilt"
        )
    keys = [(f.dts_ms, f.seq) for f in frames] if not missing else [(f.timestamp_ms, f.seq) for f in frames]
    if all(map(operator.lt, keys, keys[1:])):  # already in that order (extraction plans it so)
        return list(frames)
    return [frames[i] for i in sorted(range(len(frames)), key=keys.__getitem__)]


decode_order = _decode_order  # for callers that stream frames to `remux_to_mp4` presorted


def _add_copy_stream(container: av.container.OutputContainer, codec: CodecConfig):
    """An output stream that muxes pre-encoded packets under ``codec``'s avcC.

    PyAV's mux-only streams cannot carry extradata, so we take an encoder
    context for the codec, open it (which makes PyAV skip opening it again at
    header time) and then overwrite the extradata the encoder generated with
    the camera's own.  No frame is ever sent to that encoder.
    """
    stream = container.add_stream(_encoder_name(codec.codec), rate=codec.fps)
    ctx = stream.codec_context
    ctx.width = codec.width
    ctx.height = codec.height
    ctx.pix_fmt = codec.pix_fmt or "yuv420p"
    ctx.time_base = _MUX_TIME_BASE
    stream.time_base = _MUX_TIME_BASE
    ctx.open()
    ctx.extradata = codec.extradata or None
    return stream


def _encoder_name(codec_name: str) -> str:
    return {"h264": "libx264"}.get(codec_name, codec_name)


def _check_copyable(codec: CodecConfig) -> None:
    """Packets of ``codec`` can be copied into a browser MP4 (H.264 with an avcC record), else ValueError."""
    if codec.codec != "h264":
        raise ValueError(f"only H.264 can be copied into browser MP4, not {codec.codec!r}")
    if not codec.extradata or codec.extradata[0] != 1:
        raise ValueError("codec config lacks an avcC record; packets cannot be copied into MP4")


def _default_duration(codec: CodecConfig) -> int:
    """A sample's duration in ticks when its frame records none: one frame interval."""
    return max(1, round(codec.frame_duration_ms * _MS_TICKS)) if codec.fps else _MS_TICKS


def remux_to_mp4(
    codec: CodecConfig,
    frames: Iterable[EncodedFrame],
    out_path: str | os.PathLike[str],
    faststart: bool = True,
    *,
    origin_ms: int | None = None,
    audio: tuple[AudioConfig, Sequence[EncodedFrame]] | None = None,
    sha256s: Iterable[bytes] | None = None,
) -> MuxResult:
    """Write the original packets, byte for byte, into a playable MP4.

    ``sha256s``, when given, are the SHA-256 of the frames' bytes in the same order, already
    computed by the caller from these very bytes (extraction's fetcher hashes every frame it
    reads), so the samples' digests are not computed a second time.

    With ``audio`` (the camera's audio configuration and the packets to carry, none presented
    before the clip's origin) the clip gets a second track with those packets, byte for byte,
    interleaved by capture time (`audio_copyable` says which codecs an MP4 can carry).

    Timestamps are made relative to the first frame (in presentation order), so
    the clip starts at 0 in a player whatever the capture clock was.
    The file appears atomically: a reader never sees a half-written MP4.

    With ``origin_ms`` (the earliest presentation time of the span) the frames are taken to be
    in decode order already and are consumed lazily, one packet at a time, so a caller can
    stream an hour of video through without holding it; out-of-order input is refused.
    """
    _check_copyable(codec)
    if origin_ms is None:
        listed = _decode_order(codec, list(frames))
        if not listed:
            raise ValueError("no frames to remux")
        origin = min(f.timestamp_ms for f in listed)
        ordered: Iterable[EncodedFrame] = listed
    else:
        origin, ordered = origin_ms, frames
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(out_path)
    default_dur = _default_duration(codec)
    last_dts: int | None = None
    end_ticks = 0
    samples: list[tuple[bytes, int]] = []
    sha256 = hashlib.sha256
    known = iter(sha256s) if sha256s is not None else None
    try:
        with av.open(str(tmp), "w", format="mp4", options=_mp4_options(faststart)) as out:
            stream = _add_copy_stream(out, codec)
            sound = _AudioMuxer(out, audio[0], [f for f in audio[1] if f.timestamp_ms >= origin], origin) \
                if audio is not None and audio[1] else None
            for frame in ordered:
                if sound is not None:
                    sound.until(frame.timestamp_ms)
                if not samples and not frame.keyframe:
                    # Everything up to the next keyframe would reference pictures outside
                    # the span: players show garbage or nothing.  Spans are cut at GOPs.
                    raise ValueError(f"span starts at seq={frame.seq}, which is not a keyframe")
                if frame.timestamp_ms < origin:
                    raise ValueError(f"frame seq={frame.seq} is presented before the span's origin")
                pts = (frame.timestamp_ms - origin) * _MS_TICKS
                dts = pts if frame.dts_ms is None else (frame.dts_ms - origin) * _MS_TICKS
                if origin_ms is not None and last_dts is not None and dts < last_dts:
                    raise ValueError(f"frame seq={frame.seq} is not in decode order")
                # MP4 needs strictly increasing decode times; ms rounding of
                # very high frame rates could otherwise produce ties.
                if last_dts is not None and dts <= last_dts:
                    dts = last_dts + 1
                if dts > pts:
                    raise ValueError(f"frame seq={frame.seq} decodes after it is presented")
                duration = frame.duration_ms * _MS_TICKS or default_dur
                packet = av.Packet(frame.data)
                packet.pts = pts
                packet.dts = dts
                packet.duration = duration
                packet.time_base = _MUX_TIME_BASE
                packet.is_keyframe = frame.keyframe
                packet.stream = stream
                out.mux(packet)
                samples.append((next(known) if known is not None else sha256(frame.data).digest(), pts // _MS_TICKS))
                last_dts = dts
                end_ticks = max(end_ticks, pts + duration)
            if not samples:
                raise ValueError("no frames to remux")
            if sound is not None:
                sound.until(None)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return MuxResult(
        path=out_path,
        frames=len(samples),
        first_timestamp_ms=origin,
        duration_ms=end_ticks // _MS_TICKS,
        reencoded=False,
        samples=samples,
        audio_samples=sound.samples if sound is not None else [],
    )


class SampleSizeMismatch(ValueError):
    """A packet handed to `write_copied_mp4` is not the size its manifest recorded (the index,
    already written, would not describe it): the caller remuxes it the muxer's way instead."""


@dataclass(frozen=True)
class JoinedFrames:
    """Several consecutive frames' packets back to back (``count`` of them), as a bulk reader
    delivers them to `write_copied_mp4` (extraction's `Fetcher.stream_joined`)."""
    count: int
    data: bytes


def write_copied_mp4(codec: CodecConfig, refs: Sequence[FrameRef], payloads: Iterable[bytes | JoinedFrames],
                     out_path: str | os.PathLike[str], *, origin_ms: int,
                     sink: Callable[[int], AbstractContextManager[Any]] | None = None) -> MuxResult:
    """`remux_to_mp4` for a video-only clip whose frames are known before their bytes: ``refs``
    (in decode order, each with its recorded size, times and SHA-256) and their ``payloads`` in the
    same order, consumed lazily, one frame's bytes or several frames' (JoinedFrames) at a time. The
    index is computed from ``refs`` and written first (`offchain.core.mp4`), then the packets are
    appended as they arrive: one pass, faststart, no muxer, the same boxes FFmpeg writes (a test
    compares them). Raises ValueError where `remux_to_mp4` would, LayoutTooLarge (before taking any
    payload) for times past its 32-bit boxes, and SampleSizeMismatch (after removing the partial
    file) when a payload's length is not the size its refs record: for the last two,
    `remux_to_mp4` writes the clip. With a ``sink`` (given the file's size, a context yielding
    something to ``write`` to: `BundleWriter.stored_member`), the file is written there instead of
    at ``out_path``, and the sink computes its CRC-32."""
    head, table = copied_mp4_layout(codec, refs, origin_ms=origin_ms)
    out_path = Path(out_path)
    crc: int | None = None
    if sink is not None:
        with sink(len(head) + sum(table.sizes)) as fh:
            fh.write(head)
            written, _ = _write_payloads(fh, table.sizes, payloads, None)
            if written != len(table):
                raise ValueError(f"{written} of {len(table)} frames delivered")
    else:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_path(out_path)
        try:
            with open(tmp, "wb", buffering=1 << 20) as fh:
                fh.write(head)
                written, crc = _write_payloads(fh, table.sizes, payloads, zlib.crc32(head))
            if written != len(table):
                raise ValueError(f"{written} of {len(table)} frames delivered")
            os.replace(tmp, out_path)
        finally:
            tmp.unlink(missing_ok=True)
    return copied_mux_result(out_path, refs, table, origin_ms=origin_ms, crc32=crc)


def copied_mp4_layout(codec: CodecConfig, refs: Sequence[FrameRef], *, origin_ms: int) -> tuple[bytes, SampleTable]:
    """The one-pass clip's head (ftyp and moov, faststart) and sample table, from the frames'
    recorded sizes and times alone (``refs`` in decode order): its packets follow the head back to
    back. Raises as `write_copied_mp4` does before taking any payload."""
    _check_copyable(codec)
    table = plan_samples(((r.timestamp_ms, r.dts_ms, r.keyframe, r.size) for r in refs), origin_ms,
                         _default_duration(codec))
    return mp4_head(Mp4Video(width=codec.width, height=codec.height, avcc=codec.extradata), table), table


def copied_mux_result(path: Path, refs: Sequence[FrameRef], table: SampleTable, *, origin_ms: int,
                      crc32: int | None = None) -> MuxResult:
    """What a one-pass clip of ``refs`` laid out as ``table`` holds."""
    return MuxResult(path=path, frames=len(table), first_timestamp_ms=origin_ms,
                     duration_ms=table.end // _MS_TICKS, reencoded=False,
                     samples=[(r.sha256, pts // _MS_TICKS) for r, pts in zip(refs, table.pts)], audio_samples=[],
                     crc32=crc32)


def _write_payloads(fh: Any, sizes: Sequence[int], payloads: Iterable[bytes | JoinedFrames],
                    crc: int | None) -> tuple[int, int | None]:
    """Append the payloads, each checked against the sizes the index records: how many frames,
    and the CRC-32 of the file (``crc``: its head's; None: not computed, the sink does) as written."""
    ends = [0, *itertools.accumulate(sizes)]  # ends[k]: the bytes of the first k frames
    written = 0
    for item in payloads:
        count, data = (1, item) if type(item) is bytes else (item.count, item.data)  # type: ignore[union-attr]
        if written + count > len(sizes):
            raise ValueError(f"more than the {len(sizes)} frames the index records")
        if len(data) != ends[written + count] - ends[written]:
            raise SampleSizeMismatch(f"frames {written}..{written + count - 1}: {len(data)} bytes, their manifest "
                                     f"records {ends[written + count] - ends[written]}")
        fh.write(data)
        if crc is not None:
            crc = zlib.crc32(data, crc)
        written += count
    return written, crc


# -- encoding ----------------------------------------------------------------

def _as_rate(fps: float | Fraction | str | int) -> Fraction:
    # A float rate such as 29.97 is typed by a person: keep a small exact
    # ratio (2997/100) rather than its binary expansion.
    if isinstance(fps, float):
        return Fraction(fps).limit_denominator(1001000)
    return Fraction(fps)


def _as_video_frame(picture: Any, input_format: str) -> av.VideoFrame:
    if isinstance(picture, av.VideoFrame):
        return picture
    array = np.ascontiguousarray(picture)
    if array.ndim == 2:
        return av.VideoFrame.from_ndarray(array, format="gray")
    return av.VideoFrame.from_ndarray(array, format=input_format)


class _H264Writer:
    """libx264 into MP4 with caller-chosen timestamps and GOP structure.

    B-frames are off by default: decode order then equals presentation order,
    which is what a camera stream fed to the ledger should look like.
    """

    def __init__(
        self,
        out_path: Path,
        *,
        fps: Fraction,
        width: int,
        height: int,
        gop: int | None,
        bframes: int,
        preset: str,
        crf: int,
        faststart: bool,
        time_base: Fraction,
        audio: tuple[AudioConfig, Sequence[EncodedFrame], int] | None = None,
    ) -> None:
        self.out_path = out_path
        self.tmp = _tmp_path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.tmp), "w", format="mp4", options=_mp4_options(faststart))
        gop = gop or max(1, round(float(fps) * 2))
        x264_params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"
        self.stream = self.container.add_stream(
            "libx264",
            rate=fps,
            options={"preset": preset, "crf": str(crf), "x264-params": x264_params},
        )
        ctx = self.stream.codec_context
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = time_base
        ctx.gop_size = gop
        ctx.max_b_frames = bframes
        self.stream.time_base = time_base
        self.time_base = time_base
        # the camera's audio packets, copied beside the re-encoded pictures (config, packets, origin ms)
        self.sound = _AudioMuxer(self.container, audio[0], [f for f in audio[1] if f.timestamp_ms >= audio[2]],
                                 audio[2]) if audio is not None and audio[1] else None
        self.width, self.height = width, height
        self.frames = 0
        self.first_pts: int | None = None
        self.end_pts = 0

    def write(self, frame: av.VideoFrame, pts: int, duration: int) -> None:
        size = (frame.width, frame.height)
        if size != (self.width, self.height) or frame.format.name != "yuv420p":
            # JPEG-range sources (MJPEG's yuvj*) must be compressed to the MPEG range x264 writes,
            # or every re-encoded picture is washed out (measured: -13 dB in bright areas).
            frame = frame.reformat(width=self.width, height=self.height, format="yuv420p",
                                   src_color_range=_color_range(frame), dst_color_range="MPEG")
        frame.pts = pts
        frame.duration = duration
        frame.time_base = self.time_base
        # Decoded pictures remember their old type; x264 would honour an I and
        # break the GOP we asked for.
        frame.pict_type = PictureType.NONE
        if self.sound is not None:
            self.sound.until(self.sound.origin + round(pts * self.time_base * 1000))
        self.container.mux(self.stream.encode(frame))
        self.frames += 1
        if self.first_pts is None:
            self.first_pts = pts
        self.end_pts = max(self.end_pts, pts + duration)

    def close(self) -> None:
        try:
            self.container.mux(self.stream.encode(None))
            if self.sound is not None:
                self.sound.until(None)
            self.container.close()
            os.replace(self.tmp, self.out_path)
        finally:
            self.tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - already failing; keep the first error
            pass
        self.tmp.unlink(missing_ok=True)


def encode_frames_to_mp4(
    pictures: Iterable[Any],
    out_path: str | os.PathLike[str],
    *,
    fps: float | Fraction | str = 25,
    width: int | None = None,
    height: int | None = None,
    timestamps_ms: Iterable[int] | None = None,
    gop: int | None = None,
    bframes: int = 0,
    preset: str = "veryfast",
    crf: int = 23,
    input_format: str = "bgr24",
    faststart: bool = True,
    audio: tuple[AudioConfig, Sequence[EncodedFrame]] | None = None,
) -> MuxResult:
    """Encode pictures (``av.VideoFrame`` or HxWx3 ``uint8`` arrays, BGR like
    OpenCV by default) into an H.264 MP4.

    Without ``timestamps_ms`` frames are spaced evenly at ``fps``; with them,
    each picture keeps its own time (relative to the first), so a re-encoded
    span lines up with the capture clock.  Size defaults to the first picture's.
    With ``audio`` (and ``timestamps_ms``) the audio packets presented from the first picture on
    are copied, byte for byte, into a second track.
    """
    fps_f = _as_rate(fps)
    out_path = Path(out_path)
    ts_iter: Iterator[int] | None = iter(timestamps_ms) if timestamps_ms is not None else None
    time_base = _MUX_TIME_BASE if ts_iter is not None else 1 / fps_f
    frame_ticks = max(1, round(1 / (fps_f * time_base)))
    writer: _H264Writer | None = None
    origin: int | None = None
    try:
        for index, picture in enumerate(pictures):
            frame = _as_video_frame(picture, input_format)
            if ts_iter is not None:
                ts = next(ts_iter, None)
                if ts is None:
                    raise ValueError(f"timestamps_ms ran out at picture {index}")
                origin = ts if origin is None else origin
                pts = (ts - origin) * _MS_TICKS
            else:
                pts = index * frame_ticks
            if writer is None:
                w = width or frame.width
                h = height or frame.height
                # yuv420p needs even dimensions
                writer = _H264Writer(
                    out_path, fps=fps_f, width=w - w % 2, height=h - h % 2, gop=gop,
                    bframes=bframes, preset=preset, crf=crf, faststart=faststart,
                    time_base=time_base, audio=(audio[0], audio[1], origin) if audio and origin is not None else None,
                )
            writer.write(frame, pts, frame_ticks)
        if writer is None:
            raise ValueError("no pictures to encode")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return MuxResult(
        path=out_path,
        frames=writer.frames,
        first_timestamp_ms=origin or 0,
        duration_ms=round((writer.end_pts - (writer.first_pts or 0)) * time_base * 1000),
        reencoded=True,
        audio_samples=writer.sound.samples if writer.sound is not None else [],
    )


def _decoder_for(codec: CodecConfig) -> av.codec.context.CodecContext:
    ctx = av.CodecContext.create(codec.codec, "r")
    if codec.extradata:
        ctx.extradata = codec.extradata
    ctx.width = codec.width
    ctx.height = codec.height
    ctx.open()
    return ctx


def decode_frames(
    codec: CodecConfig, frames: Iterable[EncodedFrame], *, in_decode_order: bool = False
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Decode a camera's packets into ``(timestamp_ms, picture)`` in presentation order.

    The span must open on a keyframe: anything before one references pictures
    that are not in the span and would decode to garbage. With ``in_decode_order``
    the frames are taken lazily as given (the caller ordered them), so a long span
    never sits in memory at once.
    """
    ordered: Iterator[EncodedFrame] = iter(frames) if in_decode_order else iter(_decode_order(codec, list(frames)))
    first = next(ordered, None)
    if first is None:
        return
    if not first.keyframe:
        raise ValueError(f"span starts at seq={first.seq}, which is not a keyframe")
    decoder = _decoder_for(codec)
    tb = Fraction(1, 1000)
    for frame in itertools.chain((first,), ordered):
        packet = av.Packet(frame.data)
        packet.pts = frame.timestamp_ms
        packet.dts = frame.dts_ms if frame.dts_ms is not None else frame.timestamp_ms
        packet.time_base = tb
        packet.is_keyframe = frame.keyframe
        for picture in decoder.decode(packet):
            yield picture.pts, picture
    for picture in decoder.decode(None):
        yield picture.pts, picture


def reencode_span_to_mp4(
    codec: CodecConfig,
    frames: Iterable[EncodedFrame],
    out_path: str | os.PathLike[str],
    *,
    target: CodecConfig | None = None,
    gop: int | None = None,
    preset: str = "veryfast",
    crf: int = REENCODE_CRF,
    faststart: bool = True,
    audio: tuple[AudioConfig, Sequence[EncodedFrame]] | None = None,
) -> MuxResult:
    """Decode another camera's span and encode it alone to H.264.

    Used when a span cannot be copied: its codec is not H.264, or it must match
    a ``target`` camera's geometry.  Capture timestamps (and so the frame rate)
    are preserved, so the re-encoded clip still lines up with the ledger's clock.
    """
    # Geometry follows the target so the evidence reads as one view; timing
    # follows the source, whose capture times are what the ledger anchored.
    width = target.width if target else codec.width
    height = target.height if target else codec.height
    fps = codec.fps
    decoded = list(decode_frames(codec, frames))
    if not decoded:
        raise ValueError("span decoded to no pictures")
    return encode_frames_to_mp4(
        (picture for _, picture in decoded),
        out_path,
        fps=fps,
        width=width,
        height=height,
        timestamps_ms=[ts for ts, _ in decoded],
        gop=gop,
        preset=preset,
        crf=crf,
        faststart=faststart,
        audio=audio,
    )


# -- multi-span restoration --------------------------------------------------

@dataclass(frozen=True)
class Span:
    """A run of frames from one camera; ``label`` names it in reports."""

    codec: CodecConfig
    frames: Sequence[EncodedFrame]
    label: str = ""


@dataclass(frozen=True)
class SpanOutput:
    index: int
    label: str
    path: Path
    reencoded: bool
    frames: int
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class RestoreReport:
    outputs: list[SpanOutput]

    @property
    def reencoded(self) -> list[int]:
        """Indices of the spans whose pixels are *not* the anchored bytes."""
        return [o.index for o in self.outputs if o.reencoded]

    @property
    def paths(self) -> list[Path]:
        return [o.path for o in self.outputs]


def restore_spans(
    spans: Sequence[Span],
    out_dir: str | os.PathLike[str],
    *,
    target: CodecConfig | None = None,
    stem: str = "span",
) -> RestoreReport:
    """Restore evidence made of several spans, one MP4 per span.

    The target camera (default: the first span's) is copied packet for packet.
    A span whose configuration differs — a substituted camera — is re-encoded
    alone to the target's picture size; nothing else is touched.  One file per
    span because an MP4 track carries a single avcC, so foreign parameter sets
    cannot be spliced into the original track without rewriting its bytes.
    """
    if not spans:
        raise ValueError("no spans")
    target = target or spans[0].codec
    out_dir = Path(out_dir)
    outputs: list[SpanOutput] = []
    for index, span in enumerate(spans):
        frames = list(span.frames)
        if not frames:
            raise ValueError(f"span {index} ({span.label or 'unnamed'}) has no frames")
        path = out_dir / f"{stem}-{index:03d}.mp4"
        copyable = span.codec.splice_compatible(target) and span.codec.codec == "h264"
        if copyable:
            result = remux_to_mp4(span.codec, frames, path)
        else:
            result = reencode_span_to_mp4(span.codec, frames, path, target=target)
        start = min(f.timestamp_ms for f in frames)
        end = max(f.timestamp_ms + f.duration_ms for f in frames)
        outputs.append(
            SpanOutput(
                index=index,
                label=span.label,
                path=result.path,
                reencoded=result.reencoded,
                frames=result.frames,
                start_ms=start,
                end_ms=end,
            )
        )
    return RestoreReport(outputs)


# -- probing -----------------------------------------------------------------

def _top_level_boxes(path: Path) -> list[str]:
    boxes: list[str] = []
    with open(path, "rb") as fh:
        size_total = os.fstat(fh.fileno()).st_size
        offset = 0
        while offset + 8 <= size_total:
            fh.seek(offset)
            size, kind = struct.unpack(">I4s", fh.read(8))
            if size == 1:
                size = struct.unpack(">Q", fh.read(8))[0]
            elif size == 0:
                size = size_total - offset
            if size < 8:
                break
            boxes.append(kind.decode("latin-1"))
            offset += size
    return boxes


def probe_mp4(path: str | os.PathLike[str]) -> ProbeResult:
    """Decode the whole file, proving it plays rather than merely parses.

    Decoder errors are made fatal (``err_detect=explode``) so a file with broken
    packets fails here instead of showing artefacts in a browser later.  Packet
    hashes are collected from the same pass, for comparison with the ledger.
    """
    path = Path(path)
    boxes = _top_level_boxes(path)
    faststart = "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat")
    timestamps: list[int] = []
    hashes: list[str] = []
    keyframes = 0
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        ctx.options = {"err_detect": "explode"}
        codec_name = ctx.name
        end_ms = 0
        for packet in container.demux(stream):
            if packet.size:
                hashes.append(hashlib.sha256(bytes(packet)).hexdigest())
            for frame in packet.decode():
                ts = round(frame.pts * frame.time_base * 1000)
                timestamps.append(ts)
                keyframes += bool(frame.key_frame)
                if frame.duration:
                    end = (frame.pts + frame.duration) * frame.time_base
                    end_ms = max(end_ms, round(end * 1000))
                else:
                    end_ms = max(end_ms, ts)
        width, height, pix_fmt = ctx.width, ctx.height, ctx.pix_fmt
    start = timestamps[0] if timestamps else 0
    return ProbeResult(
        frames=len(timestamps),
        timestamps_ms=timestamps,
        width=width,
        height=height,
        codec=codec_name,
        pix_fmt=pix_fmt,
        keyframes=keyframes,
        duration_ms=end_ms - start,
        faststart=faststart,
        packet_sha256=hashes,
    )


# -- binding re-encoded pictures to anchored frames ---------------------------

# A re-encoded clip is accepted only if every picture is close to the decoded anchored frame it
# stands for. The measure is the *worst 32x32 tile* luma PSNR of each picture (both decoded, the
# original scaled to the clip's size): a whole-picture PSNR averages a 64x64 pasted patch away
# (on 768x576 it moves the mean by < 1 %), a tile of it cannot hide. 32 px tiles are half the
# patch the issue names, so any 64x64 patch covers at least one whole tile. The threshold comes
# from `python -m bench pictures` (docs/EVIDENCE.md has the table): the encoder's own noise at
# the extractor's settings stays well above it on every sample clip, and an inverted picture, a
# blacked-out span and a 64x64 patch over a moving region all fall well below.
PICTURE_TILE = 32
PICTURE_THRESHOLD_DB = 20.0


def _color_range(frame: av.VideoFrame) -> str:
    return "JPEG" if frame.format.name.startswith("yuvj") or int(getattr(frame, "color_range", 0) or 0) == 2 else "MPEG"


def _luma(picture: av.VideoFrame, width: int | None = None, height: int | None = None) -> np.ndarray:
    """8-bit full-range luma, at the given size."""
    return picture.reformat(width=width, height=height, format="gray", interpolation="AREA",
                            src_color_range=_color_range(picture), dst_color_range="JPEG").to_ndarray()


def worst_tile_psnr(reference: np.ndarray, candidate: np.ndarray, tile: int = PICTURE_TILE) -> float:
    """The lowest PSNR (dB, 8-bit luma) over the tiles of two equal-sized pictures; edge tiles
    are the partial remainders. Identical tiles count as 99 dB."""
    if reference.shape != candidate.shape:
        raise ValueError(f"picture sizes differ: {reference.shape} vs {candidate.shape}")
    h, w = reference.shape
    diff = (reference.astype(np.int32) - candidate.astype(np.int32)) ** 2
    worst = 99.0
    for y in range(0, h, tile):
        row = diff[y:y + tile]
        # sum per tile column with one reduceat per tile row: O(pixels), no Python loop per tile
        sums = np.add.reduceat(row.sum(axis=0), np.arange(0, w, tile))
        counts = np.minimum(tile, w - np.arange(0, w, tile)) * row.shape[0]
        mse = float((sums / counts).max())
        if mse > 0:
            worst = min(worst, float(10 * np.log10(255.0 * 255.0 / mse)))
    return worst


@dataclass(frozen=True)
class PictureComparison:
    """Outcome of comparing a re-encoded clip with the anchored frames it stands for."""

    compared: int = 0
    worst_db: float | None = None
    worst_index: int | None = None   # picture (presentation order) with the lowest tile PSNR
    below: int = 0                   # pictures under the threshold
    clip_error: str | None = None    # the clip does not decode
    original_error: str | None = None  # the anchored frames do not decode here
    threshold_db: float = PICTURE_THRESHOLD_DB

    @property
    def matches(self) -> bool:
        return self.clip_error is None and self.original_error is None and self.compared > 0 and self.below == 0


def _clip_pictures(path: Path) -> Iterator[av.VideoFrame]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            yield from packet.decode()


def compare_pictures(clip_path: str | os.PathLike[str], codec: CodecConfig, originals: Iterable[EncodedFrame],
                     expected: int, *, threshold_db: float = PICTURE_THRESHOLD_DB) -> PictureComparison:
    """Decode the clip and the anchored originals (given in decode order, read lazily) side by
    side, both in presentation order, and compare picture by picture. Memory: the decoders'
    reference pictures and one picture of each."""
    compared = below = 0
    worst: tuple[float, int] | None = None
    try:
        clip_iter = _clip_pictures(Path(clip_path))
        first = next(clip_iter, None)
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        return PictureComparison(clip_error=f"cannot decode the clip: {exc}", threshold_db=threshold_db)
    if first is None:
        return PictureComparison(clip_error="the clip holds no pictures", threshold_db=threshold_db)
    size = (first.width, first.height)
    pending: av.VideoFrame | None = first
    try:
        original_iter = iter(decode_frames(codec, originals, in_decode_order=True))
        for index in range(expected):
            clip_pic = pending if pending is not None else next(clip_iter, None)
            pending = None
            try:
                orig = next(original_iter, None)
            except (av.FFmpegError, ValueError) as exc:
                return PictureComparison(compared=compared, original_error=f"anchored frames do not decode: {exc}",
                                         threshold_db=threshold_db)
            if clip_pic is None or orig is None:
                why = "the clip" if clip_pic is None else "the anchored frames"
                return PictureComparison(compared=compared, clip_error=f"{why} ran out at picture {index}",
                                         threshold_db=threshold_db)
            db = worst_tile_psnr(_luma(orig[1], *size), _luma(clip_pic))
            compared += 1
            below += int(db < threshold_db)
            if worst is None or db < worst[0]:
                worst = (db, index)
    except (av.FFmpegError, OSError) as exc:
        return PictureComparison(compared=compared, clip_error=f"cannot decode the clip: {exc}", threshold_db=threshold_db)
    return PictureComparison(compared=compared, worst_db=None if worst is None else round(worst[0], 2),
                             worst_index=None if worst is None else worst[1], below=below, threshold_db=threshold_db)
