"""Declared outages (issue 10): the signed message, its bounds and the manifest proof check."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from offchain.core import outages, wire
from offchain.core.block import FrameRef, Manifest, build_block

IP = "10.0.0.7"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
OTHER = Ed25519PrivateKey.from_private_bytes(b"\x08" * 32)
OTHER_PUB = OTHER.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
WINDOW = (60_000, 120_000)


def _declaration(key: Ed25519PrivateKey = KEY, **kw) -> outages.OutageDeclaration:
    args = {"after_seq": 41, "from_ms": 59_000, "to_ms": 63_500, "reason": "the stream broke", "ts_ms": 63_600}
    args.update(kw)
    body = wire.outage_message(key, IP, **args)
    return outages.declaration_of(wire.parse_signed_control(body))


def test_message_round_trips_and_verifies_under_the_device_key():
    d = _declaration()
    assert (d.camera_ip, d.after_seq, d.from_ms, d.to_ms, d.reason) == (IP, 41, 59_000, 63_500, "the stream broke")
    assert d.control().verify(PUB) and not d.control().verify(OTHER_PUB)
    assert "nonce" not in json.loads(d.signed_json)  # identical bytes for every node
    check = outages.verify_proof(d.proof(), camera_ip=IP, window=WINDOW, keys=[OTHER_PUB, PUB])
    assert check.problem is None and check.declaration == d


def test_reason_is_cut_by_the_camera_and_bounded_by_the_parser():
    assert len(_declaration(reason="x" * 5000).reason) == wire.MAX_OUTAGE_REASON
    msg = {"type": "outage", "camera": IP, "afterSeq": 1, "fromMs": 1, "toMs": 2, "reason": "x" * 201, "ts": 3}
    with pytest.raises(outages.OutageError, match="reason"):
        outages.declaration_of(wire.parse_signed_control(wire.signed_control(KEY, msg)))


@pytest.mark.parametrize("change, match", [
    ({"fromMs": 5, "toMs": 5}, "not before"),
    ({"fromMs": 0, "toMs": outages.MAX_OUTAGE_MS + 1}, "exceeds"),
    ({"afterSeq": -1}, "afterSeq"),
    ({"toMs": True}, "toMs"),
    ({"type": "end"}, "not an outage"),
])
def test_malformed_declarations_are_refused(change, match):
    msg = {"type": "outage", "camera": IP, "afterSeq": 1, "fromMs": 1, "toMs": 2, "reason": "", "ts": 3, **change}
    with pytest.raises(outages.OutageError, match=match):
        outages.declaration_of(wire.parse_signed_control(wire.signed_control(KEY, msg)))


def test_node_bounds():
    d = _declaration()
    assert outages.check_bounds(d, now_ms=63_600, held_after_ts=59_000, in_window=0) is None
    assert outages.check_bounds(d, now_ms=63_600, held_after_ts=None, in_window=0) is None
    assert "after the node's clock" in outages.check_bounds(d, now_ms=63_500 - outages.MAX_FUTURE_MS - 1, held_after_ts=None,
                                                                  in_window=0)
    assert "captured at" in outages.check_bounds(d, now_ms=63_600, held_after_ts=58_960, in_window=0)
    assert "limit" in outages.check_bounds(d, now_ms=63_600, held_after_ts=None,
                                           in_window=outages.MAX_OUTAGES_PER_WINDOW)


def test_proof_checks_name_what_is_wrong():
    d = _declaration()
    forged = dict(d.proof(), signature=_declaration(OTHER).signature.hex())
    assert outages.verify_proof(forged, camera_ip=IP, window=WINDOW, keys=[PUB]).problem == outages.ProofProblem.SIGNATURE
    edited = dict(d.proof(), signedJson=d.proof()["signedJson"].replace("63500", "64500"))
    assert outages.verify_proof(edited, camera_ip=IP, window=WINDOW, keys=[PUB]).problem == outages.ProofProblem.SIGNATURE
    assert outages.verify_proof(d.proof(), camera_ip=IP, window=WINDOW, keys=[]).problem == outages.ProofProblem.SIGNATURE
    for bad in ({}, {"domain": "x"}, dict(d.proof(), signature="zz"), dict(d.proof(), signedJson="[1]")):
        assert outages.verify_proof(bad, camera_ip=IP, window=WINDOW, keys=[PUB]).problem == outages.ProofProblem.INVALID
    assert outages.verify_proof(d.proof(), camera_ip="10.0.0.8", window=WINDOW, keys=[PUB]).problem == "invalid"
    assert outages.verify_proof(d.proof(), camera_ip=IP, window=(0, 60_000), keys=[PUB]).problem == "invalid"


def test_manifest_carries_declarations_only_when_there_are_some():
    frames = [FrameRef.of_bytes(1, 61_000, b"a", True)]
    plain = build_block(camera_ip=IP, height=1, prev_hash=b"\x00" * 32, window_start_ms=60_000, window_end_ms=120_000,
                        frames=frames, proposer="0x" + "11" * 20)
    assert b"declaredOutages" not in plain.manifest_bytes  # old manifests keep their bytes
    d = _declaration()
    block = build_block(camera_ip=IP, height=1, prev_hash=b"\x00" * 32, window_start_ms=60_000, window_end_ms=120_000,
                        frames=frames, proposer="0x" + "11" * 20, declared_outages=[d.proof()])
    assert block.header.manifest_digest != plain.header.manifest_digest  # anchored with the manifest
    back = Manifest.from_bytes(block.manifest_bytes)
    assert back.declared_outages == (d.proof(),) and back.to_bytes() == block.manifest_bytes
    assert Manifest.from_bytes(plain.manifest_bytes).declared_outages == ()
