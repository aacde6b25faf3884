"""Batch mode and the chain's faults (issue 9): a batch node follows the batches through the
chain's views; when the chain goes away its tick neither raises nor floods, a sign request is a
refusal (not a 500), /api/v1/status says so under batch.follow and chain; a chain restarted
under it (redeployed at the same addresses, holding fewer batches than the node followed) is an
alarm and the node stops sealing on a root the chain no longer has.

One node in-process against its own Anvil, as tests/integration/test_chain_health.py; the batch
the node follows is signed with the plan's three node keys and sent by hand."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from test_chain_health import setup_chain

from offchain.chain.client import Signer
from offchain.chain.deployer import deploy
from offchain.chain.devchain import DevChain
from offchain.chain.ledger import ConsortiumClient
from offchain.core.batch import Batch, BatchManifest, order_signatures, sign_batch
from offchain.core.batch_windows import Refusal
from offchain.core.block import ZERO32, build_block, camera_id, window_of
from offchain.node.config import NodeConfig
from offchain.node.node import Node

W = 5_000
SETTINGS = {"window_ms": W, "missing_wait_ms": 0, "repair_deadline_ms": 300, "idle_close_ms": 500,
            "proposer_timeout_ms": 600_000, "store_fsync": "none", "anchoring": "batch"}


def make_node(rpc_url: str, key: str, record: Path, data: Path) -> Node:
    return Node(NodeConfig.from_dict({"name": "node-authority", "data_dir": str(data), "rpc_url": rpc_url,
                                      "deployment": str(record), "private_key": key, **SETTINGS}, env={}))


def anchor_one_batch(w3, keys: list[str], dep, node: Node, ip: str) -> BatchManifest:
    """One camera's first block in one batch, its manifests in the node's store, signed by the
    three node accounts (3, 4, 5) and sent by one of them."""
    cam = camera_id(ip)
    nodes = ConsortiumClient(Signer(w3, keys[0]), dep.consortium).nodes()
    by_address = {Signer(w3, k).address: k for k in keys}
    start = window_of(int(time.time() * 1000), W)[0] - 4 * W
    block = build_block(camera_ip=ip, height=1, prev_hash=node.registry.get(cam).head_block, window_start_ms=start,
                        window_end_ms=start + W, frames=[], proposer=nodes[0], codec={})
    manifest = BatchManifest.of(window_start_ms=start, window_end_ms=start + W, prev_batch_root=ZERO32,
                                headers=[block.header])
    node.store.put(block.manifest_bytes)
    node.store.put(manifest.to_bytes())
    ledger = dep.batch_client(Signer(w3, by_address[nodes[0]]))
    batch = Batch.of_manifest(manifest)
    ledger.anchor_batch(batch, order_signatures(ledger.domain, batch,
                                                [sign_batch(by_address[n], ledger.domain, batch) for n in nodes[:3]]))
    return manifest


async def ticks(node: Node, n: int) -> None:
    for _ in range(n):
        await node.batcher.tick()  # never raises for the chain's trouble
        await asyncio.sleep(0.1)


def test_a_batch_node_survives_the_chain_going_away_and_a_chain_restarted_under_it(tmp_path):
    ip = "10.9.0.3"
    chain = DevChain(accounts=12, log_path=tmp_path / "anvil.log").start()
    try:
        keys = chain.private_keys
        w3, dep, record, _ = setup_chain(chain.rpc_url, keys, tmp_path / "dep", ip)
        node = make_node(chain.rpc_url, keys[3], record, tmp_path / "node")

        async def scenario():
            await node.start()
            try:
                manifest = anchor_one_batch(w3, keys, dep, node, ip)
                await ticks(node, 3)
                batch = node.status()["batch"]
                assert batch["batchesFollowed"] == 1 and batch["follow"]["state"] == "following", batch
                assert batch["follow"]["chainBatches"] == 1

                chain.stop()  # the chain goes away (our own Anvil, by PID)
                node.producer.health.backoff.next_at = 0
                await ticks(node, 10)
                status = node.status()
                assert status["batch"]["follow"]["state"] == "chain-unavailable", status["batch"]
                assert not status["chain"]["reachable"]
                assert len(node.state.alarms(open_only=True, kind="chain.unreachable")) == 1
                with pytest.raises(Refusal) as refused:
                    await node.batcher.on_sign_request(manifest.cid, 0, dep.record["nodes"][1]["address"])
                assert refused.value.reason == "chain-unavailable"

                chain.start()  # the same port, an empty chain; the same deployment again
                deploy(w3, keys, out_dir=tmp_path / "dep2")
                node.producer.health.backoff.next_at = 0
                await ticks(node, 10)
                batch = node.status()["batch"]
                assert batch["follow"]["state"] == "chain-rewound", batch
                assert batch["follow"]["chainBatches"] == 0 and batch["batchesFollowed"] == 1
                assert len(node.state.alarms(open_only=True, kind="chain.batches_rewound")) == 1
                assert node.state.alarms(open_only=True, kind="chain.unreachable") == []
                with pytest.raises(Refusal) as refused:
                    await node.batcher.on_sign_request(manifest.cid, 0, dep.record["nodes"][1]["address"])
                assert refused.value.reason == "not-caught-up"
            finally:
                await node.stop()

        asyncio.run(scenario())
    finally:
        chain.stop()
