"""The one-pass MP4 writer (offchain/core/mp4.py, video.write_copied_mp4) against FFmpeg's muxer
(PyAV's `remux_to_mp4`) on real H.264: the same boxes, the same packets and times on demux."""

from __future__ import annotations

import hashlib
import struct

import av
import pytest

from offchain.camera.samples import sample_path
from offchain.camera.sources import FileSource
from offchain.core.block import FrameRef
from offchain.core.mp4 import LayoutTooLarge, Mp4Video, SampleTable, head_length, mp4_head, plan_samples, read_written_head
from offchain.evidence.bundle import _demuxed_clip_samples, _written_clip_samples, read_clip_samples
from offchain.evidence.video import (JoinedFrames, SampleSizeMismatch, decode_order, probe_mp4, remux_to_mp4,
                                    write_copied_mp4)

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"edts"}
# What FFmpeg adds that a player does not need: a bitrate box, its encoder tag, padding.
_FFMPEG_ONLY = {b"btrt", b"udta", b"free"}


def _boxes(buf: bytes, start: int = 0, end: int | None = None, path: str = "") -> dict[str, bytes]:
    """Every box by path, with its payload (sizes and chunk offsets left out: they depend on the
    boxes FFmpeg adds)."""
    end = len(buf) if end is None else end
    out: dict[str, bytes] = {}
    p = start
    while p + 8 <= end:
        size, kind = struct.unpack(">I4s", buf[p:p + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", buf[p + 8:p + 16])[0], 16
        name = f"{path}/{kind.decode('latin1')}"
        body = buf[p + header:p + size]
        if kind in _CONTAINERS:
            out.update(_boxes(buf, p + header, p + size, name))
        elif kind == b"stsd":  # the avc1 entry's fields and its avcC, without FFmpeg's btrt
            entry = body[8:]
            out[name + "/avc1"] = entry[8:8 + 78]
            inner = _boxes(entry, 8 + 78, len(entry), name + "/avc1")
            out.update({k: v for k, v in inner.items() if not k.endswith("btrt")})
        elif kind not in _FFMPEG_ONLY and kind not in (b"mdat", b"stco", b"co64"):
            out[name] = body
        elif kind in (b"stco", b"co64"):
            out[name + "#entries"] = body[4:8]
        p += size
    return out


def _packets(path) -> list[tuple[str, int, int, bool]]:
    with av.open(str(path)) as c:
        return [(hashlib.sha256(bytes(x)).hexdigest(), x.pts, x.dts, x.is_keyframe)
                for x in c.demux(c.streams.video[0]) if x.size]


@pytest.mark.parametrize("sample,count", [("bikes", 1200), ("vtest", 500)])
def test_one_pass_writer_matches_ffmpeg(tmp_path, sample, count):
    """bikes has B-frames (ctts, an edit list shifting decode times), vtest none (GOP 20): the
    writer's boxes equal FFmpeg's but for the three FFmpeg adds, its packets demux byte for byte
    with the same times, and it is faststart."""
    source = FileSource(sample_path(sample), start_ms=1_700_000_000_000, loop=True)
    frames = [f for f, _ in zip(source, range(count))]
    ffmpeg, ours = tmp_path / "ffmpeg.mp4", tmp_path / "ours.mp4"
    remux_to_mp4(source.codec, frames, ffmpeg)
    ordered = decode_order(source.codec, frames)
    refs = [FrameRef.of_bytes(f.seq, f.timestamp_ms, f.data, f.keyframe, f.dts_ms) for f in ordered]
    origin = min(f.timestamp_ms for f in frames)
    mux = write_copied_mp4(source.codec, refs, (f.data for f in ordered), ours, origin_ms=origin)
    want, got = _boxes(ffmpeg.read_bytes()), _boxes(ours.read_bytes())
    assert got == want
    assert (b"/moov/trak/mdia/minf/stbl/ctts" in {k.encode() for k in got}) == (sample == "bikes")
    assert _packets(ours) == _packets(ffmpeg)
    assert mux.samples == [(r.sha256, r.timestamp_ms - origin) for r in refs]
    assert mux.frames == count and mux.first_timestamp_ms == origin
    probe = probe_mp4(ours)
    assert probe.faststart and probe.codec == "h264"


def test_payloads_joined_by_runs_write_the_same_file(tmp_path):
    """A bulk reader hands runs of frames at once (JoinedFrames, mixed with single frames): the
    file is the one written frame by frame; a run whose bytes are not its frames' recorded sizes,
    or more frames than the index holds, leaves no file."""
    source = FileSource(sample_path("vtest"), start_ms=0, loop=False)
    frames = [f for f, _ in zip(source, range(30))]
    refs = [FrameRef.of_bytes(f.seq, f.timestamp_ms, f.data, f.keyframe, f.dts_ms) for f in frames]
    data = [f.data for f in frames]
    mixed = [JoinedFrames(count=7, data=b"".join(data[:7])), data[7], JoinedFrames(count=1, data=data[8]),
             JoinedFrames(count=21, data=b"".join(data[9:]))]
    write_copied_mp4(source.codec, refs, iter(data), tmp_path / "one.mp4", origin_ms=0)
    write_copied_mp4(source.codec, refs, iter(mixed), tmp_path / "runs.mp4", origin_ms=0)
    assert (tmp_path / "one.mp4").read_bytes() == (tmp_path / "runs.mp4").read_bytes()
    short = [JoinedFrames(count=7, data=b"".join(data[:7])[:-1]), *mixed[1:]]
    with pytest.raises(SampleSizeMismatch, match="frames 0..6"):
        write_copied_mp4(source.codec, refs, iter(short), tmp_path / "x.mp4", origin_ms=0)
    with pytest.raises(ValueError, match="more than the 30"):
        write_copied_mp4(source.codec, refs, iter([*mixed, data[0]]), tmp_path / "x.mp4", origin_ms=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.mp4", "runs.mp4"]


def test_a_payload_not_of_its_recorded_size_leaves_no_file(tmp_path):
    source = FileSource(sample_path("vtest"), start_ms=0, loop=False)
    frames = [f for f, _ in zip(source, range(30))]
    refs = [FrameRef.of_bytes(f.seq, f.timestamp_ms, f.data, f.keyframe, f.dts_ms) for f in frames]
    payloads = [f.data for f in frames]
    payloads[7] = payloads[7] + b"\x00"
    with pytest.raises(SampleSizeMismatch):
        write_copied_mp4(source.codec, refs, iter(payloads), tmp_path / "x.mp4", origin_ms=0)
    with pytest.raises(ValueError, match="29 of 30"):
        write_copied_mp4(source.codec, refs, iter([f.data for f in frames][:29]), tmp_path / "x.mp4", origin_ms=0)
    assert list(tmp_path.iterdir()) == []


def test_timestamp_rules():
    ok = [(0, None, True, 10), (40, None, False, 10)]
    assert plan_samples(ok, 0, 3600).pts == [0, 3600]
    with pytest.raises(ValueError, match="keyframe"):
        plan_samples([(0, None, False, 10)], 0, 3600)
    with pytest.raises(ValueError, match="before the span"):
        plan_samples([(0, None, True, 10)], 1, 3600)
    with pytest.raises(ValueError, match="decode order"):
        plan_samples([(40, 30, True, 10), (80, 20, False, 10)], 0, 3600)
    with pytest.raises(ValueError, match="decodes after"):
        plan_samples([(0, 1, True, 10)], 0, 3600)
    with pytest.raises(ValueError, match="no frames"):
        plan_samples([], 0, 3600)
    tie = plan_samples([(0, 0, True, 1), (1, 0, False, 1)], 0, 90)  # equal decode times: one tick apart
    assert tie.dts == [0, 1]


def test_chunk_offsets_widen_past_four_gibibytes():
    """stco while every chunk starts below 4 GiB, co64 (and a 64-bit mdat size) past it."""
    video = Mp4Video(width=16, height=16, avcc=b"\x01\x42\x00\x1e\xff\xe0\x00")

    def table(sizes: list[int]) -> SampleTable:
        n = len(sizes)
        return SampleTable(sizes=sizes, dts=[i * 3600 for i in range(n)], pts=[i * 3600 for i in range(n)],
                           durations=[3600] * n, keyframes=[True] * n)

    small = mp4_head(video, table([1000] * 10))
    assert b"stco" in small and b"co64" not in small
    assert struct.unpack(">I", small[-8:-4])[0] == 8 + 10_000
    with pytest.raises(LayoutTooLarge):
        mp4_head(Mp4Video(width=70_000, height=16, avcc=video.avcc), table([10]))
    big = mp4_head(video, table([0xFFFF_0000] * 3))
    assert b"co64" in big and big[-16:-8] == struct.pack(">I4s", 1, b"mdat")
    assert struct.unpack(">Q", big[-8:])[0] == 16 + 3 * 0xFFFF_0000
    at = big.index(b"co64") + 8
    count = struct.unpack(">I", big[at:at + 4])[0]
    offsets = struct.unpack(f">{count}Q", big[at + 4:at + 4 + 8 * count])
    assert offsets[0] == len(big) and offsets[-1] == len(big) + 2 * 0xFFFF_0000


def test_times_past_32_bit_boxes_are_refused_before_any_payload(tmp_path):
    """A clip whose media spans more than 2^32 ticks (~13 h at 90 kHz: a sparse camera over a
    day) is refused before a payload is taken (the caller then lets PyAV's muxer write it)."""
    source = FileSource(sample_path("vtest"), start_ms=0, loop=False)
    frames = [f for f, _ in zip(source, range(3))]
    refs = [FrameRef.of_bytes(f.seq, i * 7 * 3_600_000, f.data, True) for i, f in enumerate(frames)]  # 7 h apart
    taken = []

    def payloads():
        for f in frames:
            taken.append(f)
            yield f.data

    with pytest.raises(LayoutTooLarge):
        write_copied_mp4(source.codec, refs, payloads(), tmp_path / "x.mp4", origin_ms=0)
    assert taken == [] and list(tmp_path.iterdir()) == []
    mux = remux_to_mp4(source.codec, [f.__class__(seq=f.seq, timestamp_ms=r.timestamp_ms, keyframe=True, data=f.data)
                                      for f, r in zip(frames, refs)], tmp_path / "y.mp4")
    assert mux.frames == 3


@pytest.mark.parametrize("sample,count", [("bikes", 1200), ("vtest", 500)])
def test_a_written_clip_reads_back_as_pyav_demuxes_it(tmp_path, sample, count):
    """The verifier's reader of the writer's own layout (`read_written_head`, no demuxer) gives the
    samples, times and avcC that PyAV's demux gives, B-frames (ctts, edit list) or not; a file
    FFmpeg muxed (its boxes differ) is left to PyAV and reads the same."""
    source = FileSource(sample_path(sample), start_ms=1_700_000_000_000, loop=True)
    frames = [f for f, _ in zip(source, range(count))]
    ordered = decode_order(source.codec, frames)
    refs = [FrameRef.of_bytes(f.seq, f.timestamp_ms, f.data, f.keyframe, f.dts_ms) for f in ordered]
    ours, ffmpeg = tmp_path / "ours.mp4", tmp_path / "ffmpeg.mp4"
    write_copied_mp4(source.codec, refs, (f.data for f in ordered), ours, origin_ms=min(f.timestamp_ms for f in frames))
    remux_to_mp4(source.codec, frames, ffmpeg)
    with open(ours, "rb") as fh:
        fast = _written_clip_samples(fh)
    assert fast is not None and fast.samples is not None and len(fast.samples) == count
    assert (fast.samples, fast.extradata, fast.audio) == _as_tuple(_demuxed_clip_samples(str(ours)))
    assert read_clip_samples(ours) == fast
    with open(ffmpeg, "rb") as fh:
        assert _written_clip_samples(fh) is None
    assert read_clip_samples(ffmpeg) == _demuxed_clip_samples(str(ffmpeg))


def _as_tuple(samples):
    return samples.samples, samples.extradata, samples.audio


def test_a_written_head_that_differs_by_one_byte_is_not_read_as_written(tmp_path):
    """`read_written_head` trusts nothing it parsed: a sample size changed in stsz, a byte more
    after the samples, a box appended inside moov, or a time shifted in stts make the head
    rewritten from the parsed table differ, and the file goes to the demuxer instead."""
    source = FileSource(sample_path("bikes"), start_ms=0, loop=False)
    frames = [f for f, _ in zip(source, range(60))]
    ordered = decode_order(source.codec, frames)
    refs = [FrameRef.of_bytes(f.seq, f.timestamp_ms, f.data, f.keyframe, f.dts_ms) for f in ordered]
    path = tmp_path / "c.mp4"
    write_copied_mp4(source.codec, refs, (f.data for f in ordered), path, origin_ms=min(f.timestamp_ms for f in frames))
    data = path.read_bytes()
    n = head_length(data[:40])
    assert n is not None
    layout = read_written_head(data[:n], len(data))
    assert layout is not None and layout.table.sizes == [r.size for r in refs]
    assert read_written_head(data[:n], len(data) + 1) is None
    stsz = data.index(b"stsz")
    bumped = bytearray(data)
    bumped[stsz + 16 + 3] ^= 1  # the first sample's size
    assert read_written_head(bytes(bumped[:n]), len(data)) is None
    stts = data.index(b"stts")
    shifted = bytearray(data)
    shifted[stts + 16 + 3] ^= 1  # the first run's time step
    assert read_written_head(bytes(shifted[:n]), len(data)) is None
    moov = data.index(b"moov") - 4
    size = struct.unpack(">I", data[moov:moov + 4])[0]
    extra = struct.pack(">I4s", 12, b"free") + b"abcd"
    grown = data[:moov] + struct.pack(">I", size + 12) + data[moov + 4:moov + size] + extra + data[moov + size:]
    m = head_length(grown[:40])
    assert m is not None and read_written_head(grown[:m], len(grown)) is None
    assert head_length(b"\x00" * 40) is None and head_length(data[:10]) is None
    # a run-length row claiming 2^32 - 1 samples is refused before it is expanded (bounded work)
    huge = bytearray(data)
    huge[stts + 12:stts + 16] = (0xFFFF_FFFF).to_bytes(4, "big")
    assert read_written_head(bytes(huge[:n]), len(data)) is None


def _table_by_the_loop(rows, origin, duration):
    """plan_samples with its array passes declined (`_planned_in_columns` answering None)."""
    from offchain.core import mp4
    saved = mp4._planned_in_columns
    mp4._planned_in_columns = lambda *a: None
    try:
        return mp4.plan_samples(rows, origin, duration)
    finally:
        mp4._planned_in_columns = saved


def _outcome(fn):
    try:
        table = fn()
        return table.sizes, table.dts, table.pts, table.durations, table.keyframes
    except ValueError as exc:
        return str(exc)


@pytest.mark.parametrize("seed", range(40))
def test_the_sample_tables_array_passes_are_the_loop(seed):
    import random
    rng = random.Random(seed)
    n, t0 = rng.choice([1, 2, 30, 400]), 1_700_000_000_000
    b_frames = rng.random() < 0.5
    rows = []
    for i in range(n):
        ts = t0 + 40 * i + (rng.choice([0, 0, 0, -40, 40, -100]) if rng.random() < 0.1 else 0)
        dts = (t0 + 40 * i - 80 + (rng.choice([0, 0, -40, 40]) if rng.random() < 0.05 else 0)) if b_frames else None
        if b_frames and rng.random() < 0.02:
            dts = None  # decode times for some frames only: the loop's case
        size = rng.choice([0, 1, 5_000, 1 << 20, -1 if rng.random() < 0.02 else 7])
        rows.append((ts, dts, i == 0 or rng.random() < 0.04, size))
    if rng.random() < 0.1:
        rows[0] = (rows[0][0], rows[0][1], False, rows[0][3])
    origin = min(r[0] for r in rows) - (rng.choice([0, 0, 40]) if rng.random() < 0.9 else -40)
    assert _outcome(lambda: plan_samples(rows, origin, 3600)) == _outcome(lambda: _table_by_the_loop(rows, origin, 3600))


def test_chunks_by_bisection_are_the_greedy_walk():
    import random
    from offchain.core.mp4 import CHUNK_BYTES, _chunks

    def walk(sizes):  # the step-per-sample loop it replaced
        counts, starts, first, size, pos = [], [], 0, 0, 0
        for i, n in enumerate(sizes):
            if i > first and size + n > CHUNK_BYTES:
                counts.append(i - first)
                starts.append(pos - size)
                first, size = i, 0
            size += n
            pos += n
        counts.append(len(sizes) - first)
        starts.append(pos - size)
        return counts, starts

    rng = random.Random(3)
    for _ in range(300):
        sizes = [rng.choice([0, 1, 1000, 300_000, CHUNK_BYTES, CHUNK_BYTES + 1, 2 * CHUNK_BYTES])
                 for _ in range(rng.choice([0, 1, 2, 5, 200]))]
        assert _chunks(sizes) == walk(sizes)


@pytest.mark.parametrize("rows", [
    [(1000, 960, True, 5), (1040, 960, False, 6), (1080, 1040, False, 7)],   # a decode-time tie: bumped a tick
    [(1000, 960, True, 5), (1040, None, False, 6)],                           # decode times for some frames only
    [(1000, None, True, 5), (1040, None, False, 6), (1080, None, False, 7)],  # none: decode = capture order
    [(1000, None, True, 2**40), (1040, None, False, 6)],                      # a sample past 32 bits
])
def test_tables_the_array_passes_leave_to_the_loop_come_out_the_same(rows):
    from offchain.core import mp4
    assert _outcome(lambda: plan_samples(rows, 1000, 3600)) == _outcome(lambda: _table_by_the_loop(rows, 1000, 3600))
    if rows[0][1] == 960:  # the tie and the mixed case are the loop's: the array passes decline them
        assert mp4._planned_in_columns(rows, 1000, 3600) is None


def test_a_sample_larger_than_a_read_run_is_hashed_as_it_is_read(tmp_path, monkeypatch):
    """A written clip whose index gives one sample more bytes than a run (a hostile index could
    give one of gigabytes): read and hashed a run at a time, each sample's digest the same."""
    from offchain.evidence import bundle
    monkeypatch.setattr(bundle, "_RUN_BYTES", 1 << 16)
    payloads = [b"a" * 10, bytes(range(256)) * 1000, b"c" * 70_000, b"d" * 3]  # 256 kB and 70 kB: past a run
    rows = [(1000 + 40 * i, None, i == 0, len(p)) for i, p in enumerate(payloads)]
    table = plan_samples(rows, 1000, 3600)
    clip = tmp_path / "big.mp4"
    clip.write_bytes(mp4_head(Mp4Video(width=64, height=64, avcc=b"\x01\x64\x00\x1f\xff\xe0\x00"), table) + b"".join(payloads))
    with open(clip, "rb") as fh:
        got = _written_clip_samples(fh)
    assert got is not None and [d for d, _ in got.samples] == [hashlib.sha256(p).digest() for p in payloads]
    clip.write_bytes(clip.read_bytes()[:-100])  # cut short: the head no longer describes the file
    with open(clip, "rb") as fh:
        assert _written_clip_samples(fh) is None
