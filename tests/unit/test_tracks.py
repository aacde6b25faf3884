"""Tracks (issue 10): a camera's audio is numbered in its own namespace of the one u64 seq, so
leaves, blocks and contracts stay as they are while gaps are found per track."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from offchain.core import wire
from offchain.core.block import (AUDIO_TRACK, FrameRef, build_block, track_bounds, track_name, track_of, track_seq)
from offchain.core.gaps import codec_tracks, track_step_ms
from offchain.core.windows import Neighbours, track_window_gaps, window_gaps
from offchain.node.ingest import _believable_end, _track_ends

A = track_bounds(AUDIO_TRACK)[0]


def test_track_numbers():
    assert track_seq(0, 5) == 5 and track_of(5) == 0
    assert track_seq(AUDIO_TRACK, 0) == 2**48 == A and track_of(A + 7) == 1
    assert track_bounds(0) == (0, 2**48 - 1) and track_name(1) == "audio"
    assert track_bounds(31)[1] < 2**53  # every seq is exact as a JSON number in JavaScript
    with pytest.raises(ValueError):
        track_seq(32, 0)
    with pytest.raises(ValueError):
        track_seq(1, 2**48)


def test_a_block_holds_both_tracks_in_capture_order_with_normative_leaves():
    video = [FrameRef.of_bytes(i, 1000 + 40 * i, b"v%d" % i, i == 0) for i in range(5)]
    audio = [FrameRef.of_bytes(A + i, 1000 + 21 * i, b"a%d" % i, True) for i in range(9)]
    block = build_block(camera_ip="10.0.0.1", height=1, prev_hash=b"\0" * 32, window_start_ms=1000,
                        window_end_ms=2000, frames=audio + video, proposer="0x" + "11" * 20)
    frames = block.manifest.frames
    assert [(f.timestamp_ms, f.seq) for f in frames] == sorted((f.timestamp_ms, f.seq) for f in frames)
    assert block.header.frame_count == 14 and {f.track for f in frames} == {0, 1}
    assert block.tree is not None and len(block.tree.leaf_encoding) == 4  # (cameraId, seq, ts, sha256)


def _codec(audio: bool) -> dict:
    codec = {"codec": "h264", "fps": "25/1"}
    if audio:
        codec["audio"] = {"codec": "aac", "fps": "375/8"}
    return codec


def test_codec_tracks_and_packet_rates():
    assert codec_tracks(_codec(False)) == [0] and codec_tracks(None) == [0]
    assert codec_tracks(_codec(True)) == [0, 1]
    assert track_step_ms(_codec(True), 0) == 40.0
    assert track_step_ms(_codec(True), 1) == pytest.approx(1000 / 46.875)


def test_window_gaps_are_found_per_track_never_between_tracks():
    video = [FrameRef.of_bytes(i, 40 * i, b"v", i == 0) for i in range(25) if i not in (10, 11)]
    audio = [FrameRef.of_bytes(A + i, round(21.333 * i), b"a", True) for i in range(46) if i != 30]
    around = {0: Neighbours(before=None, after=None, first_seq=0, last_seq=24),
              1: Neighbours(before=None, after=None, first_seq=A, last_seq=A + 45)}
    gaps = track_window_gaps(0, 1000, video + audio, around, {0: 40.0, 1: 21.333})
    assert [(g.from_seq, g.to_seq) for g in gaps] == [(10, 11), (A + 30, A + 30)]
    # the single-track function over both tracks would have declared the namespace between them
    mixed = window_gaps(0, 1000, video + audio, around[0], 40.0)
    assert any(g.from_seq <= 25 and g.to_seq >= A - 1 for g in mixed)


def test_a_camera_without_audio_keeps_its_end_and_hello_bytes():
    key = Ed25519PrivateKey.generate()
    end = wire.parse_signed_control(wire.end_message(key, "10.0.0.1", 99, "ab", 5))
    assert "trackLastSeqs" not in end.message
    with_audio = wire.parse_signed_control(wire.end_message(key, "10.0.0.1", 99, "ab", 5, {1: A + 40}))
    assert with_audio.message["trackLastSeqs"] == {"1": A + 40}
    assert with_audio.verify(key.public_key().public_bytes_raw())


def test_an_end_is_believed_per_track_within_bounds():
    assert _believable_end(99, 99, 0) and _believable_end(-1, None, 0) and not _believable_end(98, 99, 0)
    assert _believable_end(A + 40, A + 40, 1) and _believable_end(A + 40, None, 1)
    assert not _believable_end(A + 10**6, A + 40, 1)  # would declare a huge tail lost
    assert not _believable_end(40, None, 1)  # not a number of the audio track
    assert _track_ends({"1": A + 3, "x": 5, "0": 4, "1000": A}) == {1: A + 3}
    assert _track_ends(json.loads('{"1": true}')) == {}


def test_a_window_closes_when_every_track_reached_its_end():
    from offchain.core.windows import stream_newest_ms

    # audio already past the end, video not yet: the window waits for the video
    assert stream_newest_ms([69_990, 70_100], lag_ms=4000) == 69_990
    # a track that stopped long ago (a microphone gone quiet) holds nothing open
    assert stream_newest_ms([90_000, 70_000], lag_ms=4000) == 90_000
    assert stream_newest_ms([None, 70_000], lag_ms=4000) == 70_000 and stream_newest_ms([None], 4000) is None
