"""VideoLedger rules on a real Anvil: who may anchor and attest, the per-camera hash chain, time
continuity, finality at quorum, and that Python computes the same hashes, leaves and proofs."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from offchain.chain import reverts
from offchain.chain.client import events
from offchain.core.block import FRAME_LEAF_ENCODING, FrameRef, build_block, camera_id, frames_tree
from offchain.core.merkle import leaf_hash

IP = "10.1.0.1"
CAM = camera_id(IP)
W = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % W


def frames_for(window_start: int, n: int = 30, seq0: int = 0) -> list[FrameRef]:
    return [
        FrameRef.of_bytes(seq0 + i, window_start + i * 2000, hashlib.sha256(b"%d-%d" % (window_start, i)).digest() * 10, i % 10 == 0)
        for i in range(n)
    ]


@pytest.fixture
def ledger_env(chain_env):
    chain_env.consortium(1).register_camera(IP, b"\x11" * 32, b"\x01" * 32)
    chain_env.consortium(0).seal_genesis()
    return chain_env


def make_block(env, height: int, prev: bytes, start: int, proposer_idx: int = 3, **kw):
    return build_block(
        camera_ip=IP, height=height, prev_hash=prev, window_start_ms=start, window_end_ms=start + W,
        frames=kw.pop("frames", frames_for(start, seq0=(height - 1) * 30)), proposer=env.signer(proposer_idx).address, **kw,
    )


def head(env) -> bytes:
    return env.consortium().head_block(CAM)[0]


def test_anchor_chain_attest_and_finality(ledger_env):
    env = ledger_env
    b1 = make_block(env, 1, head(env), T0)
    res = env.ledger(3).anchor(b1.header)
    anchored = events(env.ledger(3).contract, "BlockAnchored", res.receipt)[0]
    assert bytes(anchored.args.blockHash) == b1.hash == env.ledger(3).hash_header(b1.header)
    rec = env.ledger(3).get_block(b1.hash)
    assert rec.header == b1.header and rec.attestations == 1 and not rec.finalized
    res = env.ledger(4).attest(b1.hash)
    assert [e.args.blockHash for e in events(env.ledger(4).contract, "BlockFinalized", res.receipt)] == [b1.hash]
    assert env.ledger(3).get_block(b1.hash).finalized
    env.ledger(5).attest(b1.hash)  # attestations beyond quorum are still recorded
    assert env.ledger(3).get_block(b1.hash).attestations == 3

    b2 = make_block(env, 2, b1.hash, T0 + W, proposer_idx=4)
    env.ledger(4).anchor(b2.header)
    assert env.ledger(3).tip(CAM) == (b2.hash, 2, T0 + 2 * W)
    assert env.ledger(3).block_at(CAM, 2).header == b2.header
    assert env.ledger(3).chain_length(CAM) == 2


def test_anchor_rejects_wrong_callers(ledger_env):
    env = ledger_env
    b1 = make_block(env, 1, head(env), T0, proposer_idx=3)
    with pytest.raises(reverts.NotANode):
        env.ledger(1).anchor(replace(b1.header, proposer=env.signer(1).address))  # a member, not a node
    with pytest.raises(reverts.ProposerMismatch):
        env.ledger(4).anchor(b1.header)  # a node anchoring someone else's proposal
    env.ledger(3).anchor(b1.header)
    with pytest.raises(reverts.NotANode):
        env.ledger(6).attest(b1.hash)
    with pytest.raises(reverts.AlreadyAttested):
        env.ledger(3).attest(b1.hash)  # the proposer's anchor is its attestation
    with pytest.raises(reverts.UnknownBlock):
        env.ledger(4).attest(b"\x42" * 32)
    with pytest.raises(reverts.NotANode):
        env.ledger(6).dispute(b1.hash, "frame 3 differs")
    env.ledger(5).dispute(b1.hash, "frame 3 differs")
    with pytest.raises(reverts.AlreadyDisputed):
        env.ledger(5).dispute(b1.hash, "again")
    assert env.ledger(3).get_block(b1.hash).disputes == 1


def test_chain_link_height_and_duplicates(ledger_env):
    env = ledger_env
    b1 = make_block(env, 1, head(env), T0)
    with pytest.raises(reverts.BrokenChainLink) as info:
        env.ledger(3).anchor(make_block(env, 1, b"\x99" * 32, T0).header)
    assert info.value.args_by_name["expectedPrev"] == head(env)
    with pytest.raises(reverts.UnexpectedHeight):
        env.ledger(3).anchor(make_block(env, 2, head(env), T0).header)
    env.ledger(3).anchor(b1.header)
    with pytest.raises(reverts.BlockAlreadyAnchored):
        env.ledger(3).anchor(b1.header)
    conflicting = make_block(env, 1, head(env), T0, frames=frames_for(T0, n=29))
    with pytest.raises(reverts.ConflictingBlock) as info:
        env.ledger(3).anchor(conflicting.header)
    assert info.value.args_by_name["anchoredHash"] == b1.hash
    with pytest.raises(reverts.BrokenChainLink):
        env.ledger(3).anchor(make_block(env, 2, head(env), T0 + W).header)  # skips block 1


def test_time_continuity_and_window_rules(ledger_env):
    env = ledger_env
    b1 = make_block(env, 1, head(env), T0)
    env.ledger(3).anchor(b1.header)
    overlapping = make_block(env, 2, b1.hash, T0 + W // 2, frames=frames_for(T0 + W // 2, n=5, seq0=30))
    with pytest.raises(reverts.TimeNotContinuous):
        env.ledger(3).anchor(overlapping.header)
    bad_window = replace(make_block(env, 2, b1.hash, T0 + W).header, window_end_ms=T0 + W)
    with pytest.raises(reverts.InvalidWindow):
        env.ledger(3).anchor(bad_window)
    no_root = replace(make_block(env, 2, b1.hash, T0 + W).header, frames_root=b"\x00" * 32)
    with pytest.raises(reverts.InvalidFramesRoot):
        env.ledger(3).anchor(no_root)
    # an empty window is anchored too (everything lost everywhere stays on record)
    empty = make_block(env, 2, b1.hash, T0 + 2 * W, frames=[])
    env.ledger(3).anchor(empty.header)
    assert env.ledger(3).get_block(empty.hash).header.frame_count == 0


def test_unknown_unsealed_and_revoked_cameras(chain_env):
    env = chain_env
    b = build_block(camera_ip=IP, height=1, prev_hash=b"\x00" * 32, window_start_ms=T0, window_end_ms=T0 + W,
                    frames=frames_for(T0), proposer=env.signer(3).address)
    with pytest.raises(reverts.CameraNotActive):
        env.ledger(3).anchor(b.header)  # not on the whitelist
    env.consortium(1).register_camera(IP, b"\x11" * 32, b"\x01" * 32)
    with pytest.raises(reverts.CameraHasNoHead):
        env.ledger(3).anchor(b.header)  # genesis not sealed yet
    env.consortium(0).seal_genesis()
    env.consortium(1).revoke_camera(CAM)
    with pytest.raises(reverts.CameraNotActive):
        env.ledger(3).anchor(replace(b.header, prev_hash=env.consortium().head_block(CAM)[0]))


def test_frame_leaf_and_proofs_verify_on_chain(ledger_env):
    env = ledger_env
    b1 = make_block(env, 1, head(env), T0)
    env.ledger(3).anchor(b1.header)
    led = env.ledger(3)
    tree = frames_tree(CAM, b1.manifest.frames)
    for f in b1.manifest.frames[:5]:
        assert led.frame_leaf(CAM, f.seq, f.timestamp_ms, f.sha256) == leaf_hash(FRAME_LEAF_ENCODING, f.leaf_values(CAM))
        proof = tree.get_proof(f.leaf_values(CAM))
        assert led.verify_frame(b1.hash, proof, f.seq, f.timestamp_ms, f.sha256)
        assert not led.verify_frame(b1.hash, proof, f.seq, f.timestamp_ms + 1, f.sha256)
    mp = tree.get_multiproof([f.leaf_values(CAM) for f in b1.manifest.frames[3:9]])
    leaves = [leaf_hash(FRAME_LEAF_ENCODING, v) for v in mp.leaves]
    assert led.verify_frames(b1.hash, mp.proof, mp.proof_flags, leaves)
    leaves[0] = b"\x00" * 32
    assert not led.verify_frames(b1.hash, mp.proof, mp.proof_flags, leaves)


def test_blocks_in_range_by_time(ledger_env):
    env = ledger_env
    prev = head(env)
    starts = [T0, T0 + W, T0 + 3 * W]  # a hole between the second and third window
    for h, s in enumerate(starts, start=1):
        blk = make_block(env, h, prev, s)
        env.ledger(3).anchor(blk.header)
        prev = blk.hash
    led = env.ledger(3)
    assert list(led.blocks_in_range(CAM, T0 + 10, T0 + 20)) == [1]
    assert list(led.blocks_in_range(CAM, T0 + W - 1, T0 + W + 1)) == [1, 2]
    assert list(led.blocks_in_range(CAM, T0, T0 + 10 * W)) == [1, 2, 3]
    assert list(led.blocks_in_range(CAM, T0 + 2 * W, T0 + 3 * W)) == []  # the hole
    assert list(led.blocks_in_range(CAM, T0 + 2 * W + 5, T0 + 3 * W + 5)) == [3]
    assert list(led.blocks_in_range(CAM, T0 - 5 * W, T0)) == []
    with pytest.raises(reverts.UnknownHeight):
        led.block_hash_at(CAM, 4)


def test_risk_warning_raise_and_clear(ledger_env):
    env = ledger_env
    with pytest.raises(reverts.NotANode):
        env.ledger(1).raise_risk(CAM, "missing frames at every node", T0)
    with pytest.raises(reverts.UnknownCamera):
        env.ledger(3).raise_risk(camera_id("10.9.9.9"), "x", T0)
    with pytest.raises(reverts.NoActiveRisk):
        env.ledger(3).clear_risk(CAM)
    res = env.ledger(3).raise_risk(CAM, "missing frames at every node", T0)
    ev = events(env.ledger(3).contract, "RiskRaised", res.receipt)[0]
    assert bytes(ev.args.cameraId) == CAM and ev.args.sinceMs == T0
    risk = env.ledger(4).risk(CAM)
    assert risk["active"] and risk["raisedBy"] == env.signer(3).address
    with pytest.raises(reverts.RiskAlreadyActive):
        env.ledger(4).raise_risk(CAM, "again", T0)
    with pytest.raises(reverts.NotANode):
        env.ledger(6).clear_risk(CAM)
    env.ledger(4).clear_risk(CAM)
    assert not env.ledger(3).risk(CAM)["active"]


def test_a_view_costs_one_json_rpc_request(chain_env, devchain, monkeypatch):
    """A node polls views for every camera every tick: web3's default validation middleware
    doubled that traffic with an eth_chainId per eth_call (offchain/chain/client.py:connect)."""
    from web3 import HTTPProvider

    from offchain.chain.client import Signer, connect
    from offchain.chain.ledger import VideoLedgerClient

    sent: list[str] = []
    real = HTTPProvider.make_request
    monkeypatch.setattr(HTTPProvider, "make_request", lambda self, method, params: sent.append(method) or real(self, method, params))
    w3 = connect(devchain.rpc_url)  # web3 binds the provider's request function when it is built
    led = VideoLedgerClient(Signer(w3, chain_env.keys[3]), chain_env.deployment.video_ledger)
    sent.clear()
    for _ in range(3):
        led.tip(b"\x01" * 32)
    assert sent == ["eth_call"] * 3
