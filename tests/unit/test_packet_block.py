"""Pure core: frame packets and their checks, manifests, block building."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from offchain.core import packet as pk
from offchain.core.block import (
    BlockBuildError, FrameRef, Gap, Manifest, ManifestFormatError, build_block, camera_id, proposer_for, window_of,
)

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_packet_round_trip_and_signature():
    raw = pk.encode_packet(KEY, "10.0.0.1", 7, 1_700_000_000_123, True, b"frame-bytes" * 100)
    p = pk.decode_packet(raw)
    assert (p.camera_ip, p.seq, p.timestamp_ms, p.keyframe, p.payload) == ("10.0.0.1", 7, 1_700_000_000_123, True, b"frame-bytes" * 100)
    assert p.sha256 == hashlib.sha256(p.payload).digest()
    pk.verify_signature(p, PUB)
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    with pytest.raises(pk.BadSignature) as info:
        pk.verify_signature(p, other)
    assert info.value.alarm == "security"


def test_packet_carries_decode_time_for_b_frames():
    raw = pk.encode_packet(KEY, "10.0.0.1", 3, 1000, False, b"b-frame", dts_ms=920)
    p = pk.decode_packet(raw)
    assert p.dts_ms == 920 and p.frame_ref().dts_ms == 920
    pk.verify_signature(p, PUB)
    forged = bytearray(raw)
    forged[6 + len("10.0.0.1") + 8 + 8 + 4 + 32 + 64 + 3] ^= 1  # the dts delta is signed too
    with pytest.raises(pk.BadSignature):
        pk.verify_signature(pk.decode_packet(bytes(forged)), PUB)


def test_packet_integrity_failures_are_named():
    raw = pk.encode_packet(KEY, "10.0.0.1", 1, 5, False, b"x" * 1000)
    with pytest.raises(pk.LengthMismatch):
        pk.decode_packet(raw[:-10])  # truncated payload
    flipped = bytearray(raw)
    flipped[-1] ^= 1
    with pytest.raises(pk.DigestMismatch):
        pk.decode_packet(bytes(flipped))
    with pytest.raises(pk.MalformedPacket):
        pk.decode_packet(b"JUNK" + raw[4:])
    with pytest.raises(pk.MalformedPacket):
        pk.decode_packet(raw[:20])
    # a forged header field breaks the signature, not the digest
    tampered = bytearray(raw)
    tampered[6 + len("10.0.0.1") + 7] ^= 1  # lowest byte of seq
    p = pk.decode_packet(bytes(tampered))
    with pytest.raises(pk.BadSignature):
        pk.verify_signature(p, PUB)


def frames(n, start=0, seq0=0):
    return [FrameRef.of_bytes(seq0 + i, start + 40 * i, bytes([i % 256]) * 50, i % 25 == 0) for i in range(n)]


def test_manifest_round_trip_is_canonical():
    blk = build_block(camera_ip="cam", height=1, prev_hash=b"\x01" * 32, window_start_ms=0, window_end_ms=60_000,
                      frames=list(reversed(frames(100))), proposer="0x" + "ab" * 20, codec={"name": "h264"},
                      gaps=[Gap(100, 104, 4000, 4200, True)], substitutions=[(camera_id("cam2"), frames(3, 4000, 900))])
    assert [f.seq for f in blk.manifest.frames] == list(range(100))  # ordered whatever the input order
    again = Manifest.from_bytes(blk.manifest_bytes)
    assert again == blk.manifest and again.to_bytes() == blk.manifest_bytes
    assert blk.header.manifest_digest == hashlib.sha256(blk.manifest_bytes).digest()
    assert blk.header.frame_count == 100 and blk.tree.root == blk.header.frames_root
    with pytest.raises(ManifestFormatError):
        Manifest.from_bytes(b"{not json")
    with pytest.raises(ManifestFormatError):
        Manifest.from_bytes(b'{"format":"other"}')


def test_optional_stream_end_and_codec_proof_leave_older_manifests_unchanged():
    args = dict(camera_ip="cam", height=1, prev_hash=b"\x01" * 32, window_start_ms=0, window_end_ms=60_000,
                frames=frames(5), proposer="0x" + "ab" * 20, codec={"name": "h264"})
    plain = build_block(**args)
    assert b"streamEnd" not in plain.manifest_bytes and b"codecProof" not in plain.manifest_bytes
    proof = {"signedJson": '{"type":"hello"}', "signature": "00" * 64, "domain": "frameledger.control.v2"}
    marked = build_block(**args, stream_end="unended", codec_proof=proof)
    again = Manifest.from_bytes(marked.manifest_bytes)
    assert (again.stream_end, again.codec_proof) == ("unended", proof) and again.to_bytes() == marked.manifest_bytes
    assert marked.header.manifest_digest != plain.header.manifest_digest
    assert Manifest.from_bytes(plain.manifest_bytes).stream_end is None
    with pytest.raises(ManifestFormatError):
        Manifest.from_bytes(plain.manifest_bytes.replace(b'"windowEndMs"', b'"streamEnd":7,"windowEndMs"'))


def test_block_rejects_frames_outside_window_and_duplicates():
    with pytest.raises(BlockBuildError):
        build_block(camera_ip="c", height=1, prev_hash=b"\x00" * 32, window_start_ms=0, window_end_ms=1000,
                    frames=frames(30), proposer="0x" + "00" * 20)
    dup = frames(3) + frames(1)
    with pytest.raises(BlockBuildError):
        build_block(camera_ip="c", height=1, prev_hash=b"\x00" * 32, window_start_ms=0, window_end_ms=60_000,
                    frames=dup, proposer="0x" + "00" * 20)


def test_any_frame_change_changes_root_and_hash():
    base = build_block(camera_ip="c", height=1, prev_hash=b"\x00" * 32, window_start_ms=0, window_end_ms=60_000,
                       frames=frames(10), proposer="0x" + "00" * 20)
    changed = frames(10)
    changed[4] = FrameRef(changed[4].timestamp_ms, 4, b"\x00" * 32, False, 50)
    other = build_block(camera_ip="c", height=1, prev_hash=b"\x00" * 32, window_start_ms=0, window_end_ms=60_000,
                        frames=changed, proposer="0x" + "00" * 20)
    assert other.header.frames_root != base.header.frames_root and other.hash != base.hash


def test_windows_and_proposer_rotation():
    assert window_of(125_000, 60_000) == (120_000, 180_000)
    nodes = ["a", "b", "c"]
    cam = camera_id("10.0.0.1")
    picks = [proposer_for(cam, w * 60_000, nodes) for w in range(60)]
    assert set(picks) == set(nodes)  # every node takes turns
    assert picks == [proposer_for(cam, w * 60_000, nodes) for w in range(60)]  # deterministic
    assert proposer_for(cam, 0, nodes, attempt=1) == nodes[(nodes.index(picks[0]) + 1) % 3]


def test_camera_ref_reads_ids_and_ips():
    from offchain.core.block import camera_ref

    cam = camera_id("10.0.0.1")
    assert camera_ref("0x" + cam.hex()) == cam == camera_ref("10.0.0.1")
    with pytest.raises(ValueError):
        camera_ref("0x" + "zz" * 32)


def test_header_hash_is_keccak_of_eth_abis_encoding_and_refuses_what_it_refuses():
    """BlockHeader.hash spells the nine static words itself (eth_abi took ~1 ms a header): the
    same bytes as eth_abi for every value of the types, and eth_abi's refusal for one off them."""
    import random

    from eth_abi.abi import encode
    from eth_abi.exceptions import EncodingError
    from eth_utils.crypto import keccak

    from offchain.core.block import HEADER_ABI_TYPE, BlockHeader

    rng = random.Random(7)
    for i in range(100):
        edge = i % 4 == 0
        h = BlockHeader(rng.randbytes(32), 2**64 - 1 if edge else rng.randrange(2**64), rng.randbytes(32),
                        0 if edge else rng.randrange(2**64), rng.randrange(2**64), 2**32 - 1 if edge else rng.randrange(2**32),
                        rng.randbytes(32), rng.randbytes(32), "0x" + rng.randbytes(20).hex())
        assert h.hash == keccak(encode([HEADER_ABI_TYPE], [h.as_tuple()]))
    ok = dict(camera_id=bytes(32), height=1, prev_hash=bytes(32), window_start_ms=0, window_end_ms=1, frame_count=1,
              frames_root=bytes(32), manifest_digest=bytes(32), proposer="0x" + "11" * 20)
    for bad in (dict(frame_count=2**32), dict(height=-1), dict(proposer="0x" + "11" * 19), dict(proposer="0x" + "zz" * 20)):
        with pytest.raises((EncodingError, ValueError)):  # eth_abi's own refusal
            _ = BlockHeader(**{**ok, **bad}).hash
    short = BlockHeader(**{**ok, "camera_id": bytes(31)})  # eth_abi pads a short bytes32: so does the hash
    assert short.hash == keccak(encode([HEADER_ABI_TYPE], [short.as_tuple()]))
