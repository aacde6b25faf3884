"""Issue 9, per-header mode's latency: a node sends its transactions without waiting for each
other's receipts. One sealing pass sends every camera's anchor, one scan every attestation it
owes, and they are all pending on the chain at the same moment (then included in one block),
instead of one per block, one after the other (which kept ten cameras 20-60 s from final).

One node in-process against its own Anvil with mining paused (`evm_setAutomine` off, no
interval): a transaction stays pending until the test mines, so "all pending at once" is a fact
read from the chain, not a timing. Every wait is a loop with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from offchain.chain.client import Signer, connect
from offchain.chain.deployer import deploy
from offchain.chain.devchain import DevChain
from offchain.chain.ledger import ConsortiumClient, VideoLedgerClient
from offchain.core import packet as pk
from offchain.core.block import build_block, camera_id, window_of
from offchain.node.config import NodeConfig
from offchain.node.node import Node

W = 60_000
CAMERAS = 4
SETTINGS = {"window_ms": W, "missing_wait_ms": 0, "repair_deadline_ms": 300, "idle_close_ms": 500,
            "proposer_timeout_ms": 600_000, "store_fsync": "none"}
SOLO = {"founderName": "Authority", "admissionThreshold": 1,
        "members": [{"account": 1, "role": "Operator", "parent": 0, "name": "Bank"}],
        "nodes": [{"account": 3, "operatedBy": 0, "name": "node-solo"}], "quorum": 1}


def setup(chain: DevChain, out: Path, plan: dict | None) -> tuple:
    w3 = connect(chain.rpc_url)
    keys = chain.private_keys
    dep = deploy(w3, keys, plan=plan, out_dir=out) if plan else deploy(w3, keys, out_dir=out)
    owner = ConsortiumClient(Signer(w3, keys[1]), dep.consortium)
    cams = []
    for i in range(CAMERAS):
        key = Ed25519PrivateKey.generate()
        ip = f"10.19.0.{i + 1}"
        owner.register_camera(ip, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), b"\x00" * 32)
        cams.append((ip, key))
    ConsortiumClient(Signer(w3, keys[0]), dep.consortium).seal_genesis()
    node = Node(NodeConfig.from_dict({"name": "node-authority", "data_dir": str(out / "node"), "rpc_url": chain.rpc_url,
                                      "deployment": str(out / f"{dep.chain_id}.json"), "private_key": keys[3],
                                      **SETTINGS}, env={}))
    return w3, dep, node, cams


@contextmanager
def node_on_chain(tmp_path: Path, plan: dict | None) -> Iterator[tuple]:
    """An Anvil of the test's own, the contracts, the cameras and one node (not started)."""
    chain = DevChain(accounts=12, log_path=tmp_path / "anvil.log").start()
    try:
        yield (chain, *setup(chain, tmp_path / "dep", plan))
    finally:
        chain.stop()


@asynccontextmanager
async def started(node: Node, w3) -> AsyncIterator[None]:
    """The node running; on the way out mining is automatic again (a test pauses it) and the node stopped."""
    await node.start()
    try:
        yield
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
        await node.stop()


async def send_window(node: Node, cams, start: int) -> None:
    """30 frames of each camera in [start, start + W) and one after it: every window closed."""
    for ip, key in cams:
        for seq, ts in [(i, start + i * 2_000) for i in range(30)] + [(30, start + W + 1)]:
            raw = pk.encode_packet(key, ip, seq, ts, seq % 25 == 0, b"frame %d" % seq)
            assert await node.accept_packet(raw, source="camera") == "accepted"


def pending_of(w3, address: str) -> int:
    return w3.eth.get_transaction_count(address, "pending") - w3.eth.get_transaction_count(address, "latest")


async def until(predicate, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.05)


def test_one_sealing_pass_sends_every_cameras_anchor_before_any_receipt(tmp_path):
    with node_on_chain(tmp_path, SOLO) as (chain, w3, dep, node, cams):
        async def scenario():
            async with started(node, w3):
                start = window_of(int(time.time() * 1000), W)[0] - 3 * W
                await send_window(node, cams, start)
                await asyncio.sleep(0.4)  # past the repair deadline (nothing is missing anyway)
                w3.provider.make_request("evm_setAutomine", [False])
                await node.producer.tick_background()  # returns without waiting for any receipt
                await until(lambda: pending_of(w3, node.address) == CAMERAS, "every camera's anchor pending")
                assert all(node.ledger.chain_length(camera_id(ip)) == 0 for ip, _ in cams)  # none mined yet
                w3.provider.make_request("evm_mine", [])
                await node.producer.drain()
                for ip, _ in cams:
                    assert node.ledger.chain_length(camera_id(ip)) == 1
                    rec = node.ledger.block_at(camera_id(ip), 1)
                    assert rec.finalized and rec.header.window_start_ms == start
                    assert node.state.block_for_window(camera_id(ip), start) is not None  # bookkeeping done
                assert node.state.counters()[cams[0][0]]["blocks_anchored"] == 1
                logs = node.ledger.contract.events.BlockAnchored().get_logs(from_block=0)
                assert len(logs) == CAMERAS and len({e.blockNumber for e in logs}) == 1  # included together

        asyncio.run(scenario())


def test_one_scan_sends_every_attestation_it_owes_at_once(tmp_path):
    with node_on_chain(tmp_path, None) as (chain, w3, dep, node, cams):  # the default plan: 3 nodes, quorum 2
        other = VideoLedgerClient(Signer(w3, chain.private_keys[4]), dep.video_ledger)

        async def scenario():
            async with started(node, w3):
                start = window_of(int(time.time() * 1000), W)[0] - 3 * W
                await send_window(node, cams, start)
                hashes = []
                for ip, _ in cams:  # node-bank (account 4) anchors every camera's window
                    cam = camera_id(ip)
                    frames = [f.ref for f in node.state.frames_in(cam, start, start + W)]
                    block = build_block(camera_ip=ip, height=1, prev_hash=other.tip(cam)[0], window_start_ms=start,
                                        window_end_ms=start + W, frames=frames, proposer=other.signer.address)
                    node.store.put(block.manifest_bytes)  # as fetched from the proposer
                    other.anchor(block.header)
                    hashes.append(block.hash)
                w3.provider.make_request("evm_setAutomine", [False])
                scan = asyncio.create_task(node.producer.scan_anchored())
                await until(lambda: pending_of(w3, node.address) == CAMERAS, "every attestation pending")
                assert not scan.done()  # waiting for the receipts, all four sent
                w3.provider.make_request("evm_mine", [])
                await asyncio.wait_for(scan, 60)
                for h in hashes:
                    assert other.has_attested(h, node.address)
                    assert other.get_block(h).finalized  # the anchor and this attestation: quorum 2

        asyncio.run(scenario())
