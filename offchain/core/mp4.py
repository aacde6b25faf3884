"""An MP4 (ISO BMFF) file for one H.264 video track of packets copied byte for byte: the boxes, as
pure functions of the samples' sizes and times.

Extraction knows every sample before it reads one (the anchored manifest records each frame's
size, times and keyframe flag), so the whole index (``moov``) is computed first and the file is
written in one pass: ``ftyp``, ``moov``, then the ``mdat`` header and the packets as they are
fetched. That is "faststart" (the index before the media, so a browser plays while the rest
arrives) without the second pass a muxer makes to move its index to the front, and without
handing each packet through a muxer (docs/EVIDENCE.md, Performance).

The layout follows what FFmpeg's mov muxer writes for the same packets (tests compare the two
box by box): timestamps in 90 kHz ticks; the decode times shifted to start at 0 and an edit list
whose media time is that shift, so the first picture is presented at 0; ``ctts`` only when some
picture is presented after it is decoded; ``stss`` only when not every sample is a keyframe.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import operator
import struct
from array import array
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = ["FTYP", "TRACK_TIMESCALE", "LayoutTooLarge", "Mp4Video", "SampleTable", "WrittenLayout", "head_length", "mp4_head", "plan_samples",
           "read_written_head", "MAX_HEAD_BYTES", "MOVIE_TIMESCALE", "TICKS_PER_MS"]

TICKS_PER_MS = 90  # the track's clock: 90 kHz, every millisecond exact
TRACK_TIMESCALE = 1000 * TICKS_PER_MS
MOVIE_TIMESCALE = 1000  # mvhd / tkhd / elst durations, in ms as FFmpeg writes them
CHUNK_BYTES = 1 << 20  # samples per chunk (one stco entry) up to this many bytes
_U32 = 0xFFFF_FFFF
_I32 = 0x7FFF_FFFF


class LayoutTooLarge(ValueError):
    """The clip does not fit this writer's boxes: its media lasts more than 2^32 ticks of 90 kHz
    (~13 h), a decode step or reordering is that long, or its picture size is past 16 bits. A
    muxer that writes 64-bit boxes (or refuses the size) is needed."""
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


@dataclass(frozen=True)
class SampleTable:
    """The video samples, in decode (file) order, as columns; times in 90 kHz ticks from the
    clip's origin."""

    sizes: list[int]
    dts: list[int]
    pts: list[int]
    durations: list[int]
    keyframes: list[bool]

    def __len__(self) -> int:
        return len(self.sizes)

    @functools.cached_property
    def end(self) -> int:
        """The tick after the last picture's presentation ends (computed once: four users)."""
        end: int = max(map(operator.add, self.pts, self.durations))
        return end

    @functools.cached_property
    def times(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(dts, pts) as 64-bit arrays, for the boxes' array passes; None when a time does not
        fit 64 bits (the boxes then take the times one by one)."""
        try:
            return np.asarray(self.dts, dtype=np.int64), np.asarray(self.pts, dtype=np.int64)
        except (OverflowError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Mp4Video:
    """The track's picture size and its avcC record (the camera's own, from the manifest)."""

    width: int
    height: int
    avcc: bytes


def plan_samples(frames: Iterable[tuple[int, int | None, bool, int]], origin_ms: int,
                 default_duration: int) -> SampleTable:
    """The sample table of frames in decode order, each (timestamp_ms, dts_ms or None, keyframe,
    size), with the timestamp rules of a remux (`video.remux_to_mp4`): the first frame is a
    keyframe, nothing is presented before the origin or decoded after it is presented, decode
    times only grow (ties from ms rounding become one tick apart). Every sample lasts
    ``default_duration`` ticks (a frame interval). Raises ValueError."""
    rows = list(frames)
    columns = _planned_in_columns(rows, origin_ms, default_duration)
    if columns is not None:
        return columns
    sizes: list[int] = []
    dts_col: list[int] = []
    pts_col: list[int] = []
    keys: list[bool] = []
    last_dts = -(1 << 62)
    for ts, dts_ms, key, size in rows:
        if not sizes and not key:
            raise ValueError("span does not start at a keyframe")
        if ts < origin_ms:
            raise ValueError(f"frame at {ts} ms is presented before the span's origin")
        pts = (ts - origin_ms) * TICKS_PER_MS
        dts = pts if dts_ms is None else (dts_ms - origin_ms) * TICKS_PER_MS
        if dts <= last_dts:
            if dts < last_dts:
                raise ValueError(f"frame at {ts} ms is not in decode order")
            dts = last_dts + 1
        if dts > pts:
            raise ValueError(f"frame at {ts} ms decodes after it is presented")
        if not 0 <= size <= _U32:
            raise ValueError(f"sample of {size} bytes")
        sizes.append(size)
        dts_col.append(dts)
        pts_col.append(pts)
        keys.append(bool(key))
        last_dts = dts
    if not sizes:
        raise ValueError("no frames to write")
    return SampleTable(sizes=sizes, dts=dts_col, pts=pts_col, durations=[default_duration] * len(sizes), keyframes=keys)


def _planned_in_columns(rows: list[tuple[int, int | None, bool, int]], origin_ms: int,
                        default_duration: int) -> SampleTable | None:
    """`plan_samples` for the common stream, as array operations: every time an int of 64 bits,
    decode times all given or all absent and strictly rising, nothing the loop would refuse or
    bump. None for anything else: the loop then decides (and words any refusal) as ever."""
    if not rows or not rows[0][2]:
        return None
    ts, dts_ms, keys, sizes = zip(*rows)
    absent = dts_ms.count(None)
    if absent not in (0, len(rows)):
        return None  # decode times given for some frames only
    t, d, z = np.asarray(ts), np.asarray(ts if absent else dts_ms), np.asarray(sizes)
    if not all(a.dtype == np.int64 and a.ndim == 1 for a in (t, d, z)):
        return None  # another type, or a value past 64 bits
    pts, dts = (t - origin_ms), (d - origin_ms)
    if (len(pts) and (pts.min() < 0 or max(pts.max(), dts.max()) > _MAX_TICKS_MS or dts.min() < -_MAX_TICKS_MS)):
        return None
    pts, dts = pts * TICKS_PER_MS, dts * TICKS_PER_MS
    if not (np.diff(dts) > 0).all() or (dts > pts).any() or z.min() < 0 or z.max() > _U32:
        return None
    table = SampleTable(sizes=z.tolist(), dts=dts.tolist(), pts=pts.tolist(), durations=[default_duration] * len(rows),
                        keyframes=[bool(k) for k in keys])
    table.__dict__["times"] = (dts, pts)  # the cached property, already at hand
    return table


_MAX_TICKS_MS = (1 << 62) // TICKS_PER_MS  # times (ms from the origin) whose ticks stay far inside int64


def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def _runs(values: Sequence[int] | np.ndarray) -> list[tuple[int, int]]:
    """Run-length encoding: (count, value) pairs."""
    v = values if isinstance(values, np.ndarray) else np.asarray(values)
    if v.dtype != np.int64 or v.ndim != 1 or not len(v):
        return _runs_py(values)
    starts = np.flatnonzero(np.diff(v)) + 1
    counts = np.diff(np.concatenate(([0], starts, [len(v)])))
    return list(zip(counts.tolist(), v[np.concatenate(([0], starts))].tolist()))


def _runs_py(values: Sequence[int] | np.ndarray) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in values:
        if out and out[-1][1] == v:
            out[-1] = (out[-1][0] + 1, v)
        else:
            out.append((1, v))
    return out


def _table(kind: bytes, rows: Sequence[tuple[int, int]]) -> bytes:
    words = array("I", [x for row in rows for x in row])
    if struct.pack("=I", 1) != struct.pack(">I", 1):
        words.byteswap()
    return _full(kind, 0, 0, struct.pack(">I", len(rows)), words.tobytes())


def _words(kind: bytes, prefix: bytes, values: Sequence[int], wide: bool = False) -> bytes:
    words = array("Q" if wide else "I", values)
    if struct.pack("=I", 1) != struct.pack(">I", 1):
        words.byteswap()
    return _full(kind, 0, 0, prefix, words.tobytes())


def _chunks(sizes: Sequence[int]) -> tuple[list[int], list[int]]:
    """Each chunk's sample count and byte offset in the media: consecutive samples up to
    CHUNK_BYTES (FFmpeg's chunking of a video-only file), at least one each; each chunk's end
    found by bisecting the running byte count instead of a step per sample."""
    ends = list(itertools.accumulate(sizes))  # ends[i]: the bytes of samples 0..i
    counts: list[int] = []
    starts: list[int] = []
    first = 0
    while first < len(sizes):
        start = ends[first - 1] if first else 0
        stop = max(bisect.bisect_right(ends, start + CHUNK_BYTES, lo=first), first + 1)
        counts.append(stop - first)
        starts.append(start)
        first = stop
    if not sizes:
        counts.append(0)
        starts.append(0)
    return counts, starts


def _stsc(counts: Sequence[int]) -> bytes:
    rows: list[tuple[int, int, int]] = []
    for number, count in enumerate(counts, start=1):
        if not rows or rows[-1][1] != count:
            rows.append((number, count, 1))
    return _words(b"stsc", struct.pack(">I", len(rows)), [x for row in rows for x in row])


def _sample_entry(video: Mp4Video) -> bytes:
    avc1 = _box(b"avc1", bytes(6), struct.pack(">H", 1), bytes(16),
                struct.pack(">HHIIIH", video.width, video.height, 0x480000, 0x480000, 0, 1),
                bytes(32), struct.pack(">Hh", 0x18, -1), _box(b"avcC", video.avcc))
    return _full(b"stsd", 0, 0, struct.pack(">I", 1), avc1)


def _sample_boxes(video: Mp4Video, table: SampleTable, counts: Sequence[int]) -> list[bytes]:
    """Every box of ``stbl`` but the chunk offsets (which depend on the index's own size)."""
    dts, times = table.dts, table.times
    if times is not None:
        d, p = times
        deltas: Sequence[int] | np.ndarray = np.append(np.diff(d), table.durations[-1])
        offsets: Sequence[int] | np.ndarray = p - d
    else:
        deltas = [b - a for a, b in zip(dts, dts[1:])] + [table.durations[-1]]
        offsets = [p - d for p, d in zip(table.pts, dts)]
    parts = [_sample_entry(video), _table(b"stts", _runs(deltas))]
    if not all(table.keyframes):
        keys = [i + 1 for i, k in enumerate(table.keyframes) if k]
        parts.append(_words(b"stss", struct.pack(">I", len(keys)), keys))
    if table.pts != dts:
        parts.append(_table(b"ctts", _runs(offsets)))
    parts.append(_stsc(counts))
    parts.append(_words(b"stsz", struct.pack(">II", 0, len(table)), table.sizes))
    return parts


def _moov(video: Mp4Video, table: SampleTable, stbl_parts: Sequence[bytes]) -> bytes:
    shift = -table.dts[0]  # decode times start at 0 in the file; the edit list presents from `shift`
    end = table.end
    movie_ms = end // TICKS_PER_MS
    mvhd = _full(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, MOVIE_TIMESCALE, movie_ms),
                 struct.pack(">IH", 0x10000, 0x100), bytes(10), _MATRIX, bytes(24), struct.pack(">I", 2))
    tkhd = _full(b"tkhd", 0, 3, struct.pack(">IIII", 0, 0, 1, 0), struct.pack(">I", movie_ms), bytes(8),
                 struct.pack(">hhhH", 0, 0, 0, 0), _MATRIX, struct.pack(">II", video.width << 16, video.height << 16))
    edts = _box(b"edts", _full(b"elst", 0, 0, struct.pack(">IIiI", 1, movie_ms, shift, 0x10000)))
    mdhd = _full(b"mdhd", 0, 0, struct.pack(">IIII", 0, 0, TRACK_TIMESCALE, end), struct.pack(">HH", 0x55C4, 0))
    hdlr = _full(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"VideoHandler\x00")
    minf = _box(b"minf", _full(b"vmhd", 0, 1, bytes(8)),
                _box(b"dinf", _full(b"dref", 0, 0, struct.pack(">I", 1), _full(b"url ", 0, 1))),
                _box(b"stbl", *stbl_parts))
    trak = _box(b"trak", tkhd, edts, _box(b"mdia", mdhd, hdlr, minf))
    return _box(b"moov", mvhd, trak)


FTYP = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")


def _check_fits(video: Mp4Video, table: SampleTable) -> None:
    if not (0 <= video.width <= 0xFFFF and 0 <= video.height <= 0xFFFF):
        raise LayoutTooLarge(f"a {video.width}x{video.height} picture does not fit the sample entry's 16-bit size")
    dts = table.dts
    times = table.times  # as arrays where the times are 64-bit ints (always, from plan_samples)
    if times is not None:
        d, p = times
        too_long = bool(len(d) > 1 and np.diff(d).max() > _U32) or bool((p - d).max() > _I32)
    else:
        too_long = any(b - a > _U32 for a, b in zip(dts, dts[1:])) or any(p - d > _I32 for p, d in zip(table.pts, dts))
    if table.end > _U32 or too_long or -dts[0] > _I32:
        raise LayoutTooLarge(f"{len(table)} samples over {table.end} ticks do not fit 32-bit MP4 boxes")


def mp4_head(video: Mp4Video, table: SampleTable) -> bytes:
    """``ftyp``, ``moov`` and the ``mdat`` header: the file is these bytes followed by the samples'
    bytes in table order, nothing after them. Raises LayoutTooLarge for times past 32-bit boxes."""
    _check_fits(video, table)
    payload = sum(table.sizes)
    counts, starts = _chunks(table.sizes)
    mdat_header = struct.pack(">I4sQ", 1, b"mdat", payload + 16) if payload + 8 > _U32 else \
        struct.pack(">I4s", payload + 8, b"mdat")
    parts = _sample_boxes(video, table, counts)
    probe = _moov(video, table, [*parts, _words(b"stco", struct.pack(">I", len(starts)), [0] * len(starts))])
    base = len(FTYP) + len(probe) + len(mdat_header)
    wide = base + starts[-1] > _U32  # 8-byte chunk offsets only when a chunk starts past 4 GiB
    if wide:
        base += 4 * len(starts)  # co64 entries are 4 bytes longer than stco's
    offsets = _words(b"co64" if wide else b"stco", struct.pack(">I", len(starts)), [base + x for x in starts], wide=wide)
    return FTYP + _moov(video, table, [*parts, offsets]) + mdat_header


# --------------------------------------------------------------------------- reading back

MAX_HEAD_BYTES = 64 << 20  # an index this module writes for a 4 GiB clip of ~300,000 samples is ~5 MB


@dataclass(frozen=True)
class WrittenLayout:
    """A file `mp4_head` laid out: its track, sample table, and where the samples begin (each
    sample's bytes follow the previous one's; nothing follows the last)."""

    video: Mp4Video
    table: SampleTable
    head_bytes: int


def head_length(start: bytes) -> int | None:
    """How many bytes the head (``ftyp``, ``moov``, ``mdat`` header) of a file this module wrote
    spans, from its first ``len(FTYP) + 8`` bytes; None when it does not start as one does."""
    if len(start) < len(FTYP) + 8 or start[:len(FTYP)] != FTYP:
        return None
    size: int = struct.unpack_from(">I", start, len(FTYP))[0]
    if start[len(FTYP) + 4:len(FTYP) + 8] != b"moov" or size < 8 or len(FTYP) + size + 16 > MAX_HEAD_BYTES:
        return None
    return len(FTYP) + size + 16  # the mdat header's 16 bytes at most: read them with it


def read_written_head(head: bytes, file_size: int) -> WrittenLayout | None:
    """The layout of a file of ``file_size`` bytes that begins with ``head`` (at least
    `head_length` bytes), when the file is exactly what `mp4_head` writes for its own sample
    table followed by the samples: the table is read from the boxes and the head written again
    from it, and only byte equality (and the size) counts. Anything else (another muxer's file,
    audio, a box more or less, a tampered index) is None: such a file is left to a demuxer."""
    try:
        video, table = _parse_moov(head)
        again = mp4_head(video, table)
    except (ValueError, struct.error, IndexError, LayoutTooLarge):
        return None
    if head[:len(again)] != again or len(again) + sum(table.sizes) != file_size:
        return None
    return WrittenLayout(video=video, table=table, head_bytes=len(again))


def _children(data: bytes, start: int, end: int) -> dict[bytes, tuple[int, int]]:
    """The boxes in data[start:end]: kind -> (body start, body end); a repeated kind or a box
    overrunning its parent is a ValueError (the rewrite comparison would refuse it anyway)."""
    out: dict[bytes, tuple[int, int]] = {}
    at = start
    while at < end:
        size, kind = struct.unpack_from(">I4s", data, at)
        if size < 8 or at + size > end or kind in out:
            raise ValueError("not this module's box layout")
        out[kind] = (at + 8, at + size)
        at += size
    return out


def _u32s(data: bytes, start: int, count: int) -> list[int]:
    if count < 0 or start + 4 * count > len(data):
        raise ValueError("table overruns its box")
    words = array("I", data[start:start + 4 * count])
    if struct.pack("=I", 1) != struct.pack(">I", 1):
        words.byteswap()
    return words.tolist()


def _parse_moov(head: bytes) -> tuple[Mp4Video, SampleTable]:
    moov = _children(head, len(FTYP), len(FTYP) + struct.unpack_from(">I", head, len(FTYP))[0])[b"moov"]
    trak = _children(head, *_children(head, *moov)[b"trak"])
    elst = _children(head, *trak[b"edts"])[b"elst"]
    shift = struct.unpack_from(">i", head, elst[0] + 12)[0]
    stbl = _children(head, *_children(head, *_children(head, *trak[b"mdia"])[b"minf"])[b"stbl"])
    avc1 = _children(head, stbl[b"stsd"][0] + 8, stbl[b"stsd"][1])[b"avc1"]
    width, height = struct.unpack_from(">HH", head, avc1[0] + 24)
    avcc = _children(head, avc1[0] + 78, avc1[1])[b"avcC"]
    count = struct.unpack_from(">I", head, stbl[b"stsz"][0] + 8)[0]
    sizes = _u32s(head, stbl[b"stsz"][0] + 12, count)
    if count == 0:
        raise ValueError("no samples")
    deltas = _expanded(_pairs(head, stbl[b"stts"]), count)
    offsets = _expanded(_pairs(head, stbl[b"ctts"]), count) if b"ctts" in stbl else [0] * count
    keyframes = [True] * count
    if b"stss" in stbl:
        keyframes = [False] * count
        for k in _u32s(head, stbl[b"stss"][0] + 8, struct.unpack_from(">I", head, stbl[b"stss"][0] + 4)[0]):
            keyframes[k - 1] = True
    dts = list(itertools.accumulate(deltas[:-1], initial=-shift))
    table = SampleTable(sizes=sizes, dts=dts, pts=[d + o for d, o in zip(dts, offsets)],
                        durations=[deltas[-1]] * count, keyframes=keyframes)
    return Mp4Video(width=width, height=height, avcc=head[avcc[0]:avcc[1]]), table


def _expanded(rows: list[tuple[int, int]], count: int) -> list[int]:
    """A run-length table (count, value) as one value per sample, refused unless its counts add
    up to the ``count`` samples stsz lists (checked before expanding: a forged row of 2^32 samples
    in a few bytes would otherwise be a list of 2^32 values)."""
    if sum(n for n, _ in rows) != count:
        raise ValueError("tables of different lengths")
    return [v for n, v in rows for _ in range(n)]


def _pairs(head: bytes, box: tuple[int, int]) -> list[tuple[int, int]]:
    rows = struct.unpack_from(">I", head, box[0] + 4)[0]
    if rows > (box[1] - box[0]) // 8:
        raise ValueError("table overruns its box")
    words = _u32s(head, box[0] + 8, 2 * rows)
    return list(zip(words[::2], words[1::2]))
