"""BatchLedger on a real Anvil: a quorum of EIP-712 node signatures makes a batch final in one
transaction; every refusal names its custom error; frames are provable frame → block → batch; and
Python's tree, typed-data digest and header hash equal the contract's."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_utils import keccak

from offchain.chain import reverts
from offchain.chain.client import call, events
from offchain.chain.ledger import BatchLedgerClient
from offchain.core.batch import (
    BATCH_TYPE,
    Batch,
    BatchManifest,
    batch_digest,
    batch_tree,
    block_proof,
    order_signatures,
    sign_batch,
)
from offchain.core.block import FrameRef, build_block, camera_id

W = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % W
IPS = [f"10.2.0.{i}" for i in range(1, 6)]
NODES = (3, 4, 5)  # chain/consortium.json: accounts 3-5 are nodes, quorum 2
ZERO = b"\x00" * 32


def frames_for(start: int, n: int = 12, seq0: int = 0) -> list[FrameRef]:
    return [FrameRef.of_bytes(seq0 + i, start + i * 4000, b"frame-%d-%d" % (start, i), i == 0) for i in range(n)]


@pytest.fixture
def batch_env(chain_env):
    for ip in IPS:
        chain_env.consortium(1).register_camera(ip, b"\x11" * 32, b"\x01" * 32)
    chain_env.consortium(0).seal_genesis()
    return chain_env


def ledger(env, i: int) -> BatchLedgerClient:
    return env.deployment.batch_client(env.signer(i))


def window_blocks(env, start: int, prevs: dict[bytes, tuple[bytes, int]]):
    """One sealed block per camera for [start, start + W), linked to `prevs` (camera → (hash, height))."""
    out = []
    for ip in IPS:
        cam = camera_id(ip)
        prev, height = prevs.get(cam) or (env.consortium().head_block(cam)[0], 0)
        out.append(build_block(camera_ip=ip, height=height + 1, prev_hash=prev, window_start_ms=start,
                               window_end_ms=start + W, frames=frames_for(start, seq0=height * 12),
                               proposer=env.signer(3).address))
    return out


def make_batch(env, start: int, prev_root: bytes = ZERO, prevs=None):
    blocks = window_blocks(env, start, prevs or {})
    manifest = BatchManifest.of(window_start_ms=start, window_end_ms=start + W, prev_batch_root=prev_root,
                                headers=[b.header for b in blocks])
    return blocks, manifest, Batch.of_manifest(manifest)


def sigs(env, batch: Batch, signers=NODES) -> list[bytes]:
    domain = ledger(env, 3).domain
    return order_signatures(domain, batch, [sign_batch(env.keys[i], domain, batch) for i in signers])


def test_quorum_signatures_anchor_a_final_batch_and_every_frame_is_provable(batch_env):
    env = batch_env
    blocks, manifest, batch = make_batch(env, T0)
    led = ledger(env, 4)
    assert led.hash_batch(batch) == batch_digest(led.domain, batch)
    assert all(led.hash_header(b.header) == b.hash for b in blocks)

    anchored = led.anchor_batch(batch, sigs(env, batch, (3, 5)))  # quorum 2, sent by a third node
    expected_signers = sorted((env.signer(3).address, env.signer(5).address), key=lambda a: int(a, 16))
    assert anchored.index == 0 and list(anchored.signers) == expected_signers
    ev = events(led.contract, "BatchAnchored", anchored.tx.receipt)[0].args
    assert (bytes(ev.batchRoot), bytes(ev.manifestDigest), ev.blockCount, ev.submitter) == (
        batch.batch_root, manifest.digest, len(IPS), env.signer(4).address)

    rec = led.batch_at(0)
    assert (rec.window_start_ms, rec.window_end_ms, rec.block_count, rec.batch_root, rec.manifest_digest) == (
        T0, T0 + W, len(IPS), batch.batch_root, manifest.digest)
    assert led.batch_count() == 1 and led.last_root() == batch.batch_root
    assert led.batch_for_time(T0 + W - 1).index == 0
    assert led.signers_of(0) == tuple(expected_signers)

    tree = batch_tree(manifest.block_hashes)
    for blk in blocks:
        proof = block_proof(tree, blk.hash)
        assert led.verify_block(0, blk.hash, proof)
        frame = blk.manifest.frames[3]
        frame_proof = blk.tree.get_proof(frame.leaf_values(blk.header.camera_id))
        assert led.verify_frame(0, blk.header, proof, frame.seq, frame.timestamp_ms, frame.sha256, frame_proof)
        # a changed frame or a header not in the batch fails
        assert not led.verify_frame(0, blk.header, proof, frame.seq, frame.timestamp_ms, b"\x01" * 32, frame_proof)
        assert not led.verify_frame(0, replace(blk.header, frame_count=1), proof, frame.seq, frame.timestamp_ms,
                                    frame.sha256, frame_proof)
    assert not led.verify_block(0, b"\x42" * 32, block_proof(tree, blocks[0].hash))


def test_batches_chain_in_order_and_range_views(batch_env):
    env = batch_env
    led = ledger(env, 3)
    prev_root, prevs = ZERO, {}
    starts = [T0, T0 + W, T0 + 3 * W]  # a window without a batch between the 2nd and 3rd
    for start in starts:
        blocks, _, batch = make_batch(env, start, prev_root, prevs)
        led.anchor_batch(batch, sigs(env, batch))
        prev_root = batch.batch_root
        prevs = {b.header.camera_id: (b.hash, b.header.height) for b in blocks}
    assert [r.window_start_ms for r in led.batches_in_range(T0, T0 + 10 * W)] == starts
    assert [r.index for r in led.batches_in_range(T0 + W, T0 + W + 1)] == [1]
    assert [r.index for r in led.batches_in_range(T0 + W - 1, T0 + 3 * W + 1)] == [0, 1, 2]
    assert led.batches_in_range(T0 + 2 * W, T0 + 3 * W) == []
    assert led.batch_for_time(T0 + 3 * W).index == 2
    for t in (T0 - 1, T0 + 2 * W + 5, T0 + 4 * W):
        with pytest.raises(reverts.NoBatchAt):
            led.batch_for_time(t)
    with pytest.raises(reverts.UnknownBatch):
        led.batch_at(3)
    with pytest.raises(reverts.PageTooLarge):
        call(led.contract.functions.batchesAt(0, 257))
    assert len(led.contract.functions.batchesAt(1, 256).call()) == 2


def test_signature_refusals_name_their_error(batch_env):
    env = batch_env
    _, _, batch = make_batch(env, T0)
    led = ledger(env, 3)
    domain = led.domain
    with pytest.raises(reverts.BelowQuorum):
        led.anchor_batch(batch, sigs(env, batch, (4,)))
    with pytest.raises(reverts.BelowQuorum):
        led.anchor_batch(batch, [])
    outsider = order_signatures(domain, batch, [sign_batch(env.keys[i], domain, batch) for i in (3, 6)])
    with pytest.raises(reverts.SignerNotANode) as info:
        led.anchor_batch(batch, outsider)
    assert info.value.args_by_name["signer"] == env.signer(6).address
    one = sign_batch(env.keys[4], domain, batch)
    with pytest.raises(reverts.SignersNotAscending):
        led.anchor_batch(batch, [one, one])  # the same node twice
    with pytest.raises(reverts.SignersNotAscending):
        led.anchor_batch(batch, list(reversed(sigs(env, batch))))
    other = replace(batch, block_count=batch.block_count + 1)
    with pytest.raises(reverts.SignerNotANode):  # signed other data: recovers to a stranger
        led.anchor_batch(batch, sigs(env, other))
    with pytest.raises(reverts.MalformedSignature):
        led.anchor_batch(batch, [b"\x01" * 64] + sigs(env, batch))
    assert led.batch_count() == 0


def test_batch_rule_refusals_name_their_error(batch_env):
    env = batch_env
    led = ledger(env, 3)
    blocks, _, first = make_batch(env, T0 + W)
    cases = [
        (replace(first, block_count=0), reverts.EmptyBatch),
        (replace(first, batch_root=ZERO), reverts.ZeroBatchRoot),
        (replace(first, window_end_ms=first.window_start_ms), reverts.InvalidWindow),
        (replace(first, window_start_ms=first.window_end_ms - 3_600_001), reverts.WindowTooLong),
        (replace(first, window_start_ms=2**62, window_end_ms=2**62 + W), reverts.WindowInFuture),
        (replace(first, prev_batch_root=b"\x07" * 32), reverts.WrongPrevBatchRoot),
    ]
    for bad, error in cases:
        with pytest.raises(error):
            led.anchor_batch(bad, sigs(env, bad))
    led.anchor_batch(first, sigs(env, first))
    prevs = {b.header.camera_id: (b.hash, b.header.height) for b in blocks}
    _, _, earlier = make_batch(env, T0, first.batch_root, prevs)
    with pytest.raises(reverts.WindowOutOfOrder):
        led.anchor_batch(earlier, sigs(env, earlier))
    _, _, unlinked = make_batch(env, T0 + 2 * W, ZERO, prevs)
    with pytest.raises(reverts.WrongPrevBatchRoot) as info:
        led.anchor_batch(unlinked, sigs(env, unlinked))
    assert info.value.args_by_name["expected"] == first.batch_root


def test_every_mutating_function_refuses_the_wrong_caller(batch_env):
    env = batch_env
    _, _, batch = make_batch(env, T0)
    good = sigs(env, batch)
    for who in (0, 1, 6):  # the governor, an operator, an outsider: none is a node
        with pytest.raises(reverts.NotANode):
            ledger(env, who).anchor_batch(batch, good)
    for who in (0, 1, 6):
        with pytest.raises(reverts.NotANode):
            ledger(env, who).dispute_batch(0, "not a node")
    for who in (1, 3, 6):  # an operator, a node, an outsider
        with pytest.raises(reverts.NotGovernor):
            ledger(env, who).set_window_limits(1_000, 1_000)
    res = ledger(env, 0).set_window_limits(1_000, 30_000)
    assert events(ledger(env, 0).contract, "WindowLimitsChanged", res.receipt)[0].args.maxWindowMs == 30_000
    assert ledger(env, 3).window_limits() == (1_000, 30_000)
    with pytest.raises(reverts.WindowTooLong):  # the new limit applies at once
        ledger(env, 3).anchor_batch(batch, good)
    with pytest.raises(reverts.InvalidWindowLimits):
        ledger(env, 0).set_window_limits(0, 1_000)


def test_the_batch_ledger_reads_its_consortium(batch_env):
    env = batch_env
    led = ledger(env, 3)
    assert led.consortium() == env.deployment.consortium
    assert env.deployment.record["contracts"]["BatchLedger"]["address"] == led.address
    type_string = "Batch(" + ",".join(f"{f['type']} {f['name']}" for f in BATCH_TYPE) + ")"
    assert led.contract.functions.BATCH_TYPEHASH().call() == keccak(type_string.encode())


def test_a_node_puts_its_objection_to_a_final_batch_on_record(batch_env):
    env = batch_env
    _, _, batch = make_batch(env, T0)
    ledger(env, 3).anchor_batch(batch, sigs(env, batch, (3, 4)))  # quorum 2: node 5 did not sign
    objector = ledger(env, 5)
    with pytest.raises(reverts.UnknownBatch):
        objector.dispute_batch(1, "no such batch")
    assert objector.disputes_of(0) == 0
    res = objector.dispute_batch(0, "manifest omits frame 7 held by this node")
    ev = events(objector.contract, "BatchDisputed", res.receipt)[0].args
    assert (ev.index, ev.node, ev.disputes) == (0, env.signer(5).address, 1)
    assert objector.disputes_of(0) == 1 and objector.has_disputed(0, env.signer(5).address)
    assert not objector.has_disputed(0, env.signer(4).address)
    with pytest.raises(reverts.AlreadyDisputedBatch):
        objector.dispute_batch(0, "again")
    with pytest.raises(reverts.ReasonTooLong):  # the client trims; the contract bounds what others send
        objector.signer.transact(objector.contract.functions.disputeBatch(0, "x" * 201))
    ledger(env, 4).dispute_batch(0, "second thoughts")
    assert objector.disputes_of(0) == 2
