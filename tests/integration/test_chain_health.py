"""Issue 8, item 7: the node's view of the chain in /api/v1/status, an alarm on low funds,
catching up after empty funds (the blocks anchored meanwhile are attested, not skipped), and a
backoff instead of a flood of log lines while the chain is down or restarted empty.

One node in-process against a real Anvil; the other nodes' anchors are made from their accounts
directly. Time is real but bounded: every wait is a loop with a deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from offchain.chain.client import Signer, connect
from offchain.chain.deployer import deploy
from offchain.chain.devchain import DevChain
from offchain.chain.ledger import ConsortiumClient, VideoLedgerClient
from offchain.core import packet as pk
from offchain.core.block import build_block, camera_id, proposer_for, window_of
from offchain.node.config import NodeConfig
from offchain.node.node import Node

W = 60_000
SETTINGS = {"window_ms": W, "missing_wait_ms": 0, "repair_deadline_ms": 300, "idle_close_ms": 500,
            "proposer_timeout_ms": 600_000, "store_fsync": "none"}


def setup_chain(rpc_url: str, keys: list[str], out: Path, ip: str):
    w3 = connect(rpc_url)
    dep = deploy(w3, keys, out_dir=out)  # the default plan: nodes are accounts 3, 4, 5; quorum 2
    cam_key = Ed25519PrivateKey.generate()
    ConsortiumClient(Signer(w3, keys[1]), dep.consortium).register_camera(
        ip, cam_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), b"\x00" * 32)
    ConsortiumClient(Signer(w3, keys[0]), dep.consortium).seal_genesis()
    return w3, dep, out / f"{dep.chain_id}.json", cam_key


def make_node(rpc_url: str, key: str, record: Path, data: Path) -> Node:
    return Node(NodeConfig.from_dict({"name": "node-authority", "data_dir": str(data), "rpc_url": rpc_url,
                                      "deployment": str(record), "private_key": key, **SETTINGS}, env={}))


async def send(node: Node, key, ip: str, frames: list[tuple[int, int]]) -> None:
    for seq, ts in frames:
        raw = pk.encode_packet(key, ip, seq, ts, seq % 25 == 0, b"frame %d" % seq)
        assert await node.accept_packet(raw, source="camera") == "accepted"


async def steps(node: Node) -> None:
    """The node's own tick steps that touch the chain, each guarded the way tick_forever guards them."""
    for step in (node.scan_gaps, node.producer.tick, node.producer.scan_anchored):
        try:
            await step()
        except Exception:  # noqa: BLE001 - as tick_forever: logged, the next step runs
            logging.getLogger("offchain.node.node").exception("tick step failed")


def test_empty_funds_raise_an_alarm_and_the_node_attests_what_it_skipped(devchain, tmp_path):
    ip = "10.9.0.1"
    keys = devchain.private_keys
    w3, dep, record, cam_key = setup_chain(devchain.rpc_url, keys, tmp_path / "dep", ip)
    node = make_node(devchain.rpc_url, keys[3], record, tmp_path / "node")
    other = VideoLedgerClient(Signer(w3, keys[4]), dep.video_ledger)
    cam = camera_id(ip)
    me = node.address
    original = w3.eth.get_balance(me)

    async def scenario():
        await node.start()
        try:
            await steps(node)
            status = node.status()["chain"]
            assert status["reachable"] and status["usable"] and status["contractsPresent"]
            assert status["chainId"] == w3.eth.chain_id and int(status["balanceWei"]) == original
            assert status["pendingTransactions"] == 0 and not status["lowFunds"]

            nodes = node.nodes
            start = window_of(int(time.time() * 1000), W)[0] - 5 * W
            while proposer_for(cam, start, nodes) != dep.record["nodes"][1]["address"]:
                start -= W  # a window node-bank (account 4) proposes
            await send(node, cam_key, ip, [(i, start + i * 2_000) for i in range(30)] + [(30, start + W + 1)])
            w3.provider.make_request("anvil_setBalance", [me, "0x0"])  # this node's gas money is gone
            frames = [f.ref for f in node.state.frames_in(cam, start, start + W)]
            block = build_block(camera_ip=ip, height=1, prev_hash=other.tip(cam)[0], window_start_ms=start,
                                window_end_ms=start + W, frames=frames, proposer=other.signer.address)
            node.store.put(block.manifest_bytes)  # as fetched from the proposer
            other.anchor(block.header)
            for _ in range(12):  # more than the five tries after which a failing block used to be skipped
                await steps(node)
                await asyncio.sleep(0.05)
            assert not other.has_attested(block.hash, me)
            low = node.state.alarms(open_only=True, kind="chain.low_funds")
            assert len(low) == 1
            assert node.status()["chain"]["lowFunds"] and not node.status()["chain"]["usable"]
            assert "blocks_skipped" not in node.state.counters().get("*", {})

            w3.provider.make_request("anvil_setBalance", [me, hex(original)])  # refunded
            deadline = time.monotonic() + 60
            while not other.has_attested(block.hash, me) and time.monotonic() < deadline:
                await steps(node)
                await asyncio.sleep(0.2)
            assert other.has_attested(block.hash, me)  # caught up: the block it skipped is attested
            assert other.get_block(block.hash).finalized
            assert node.state.alarms(open_only=True, kind="chain.low_funds") == []
            assert node.state.alarm(low[0].id).resolution == "recovered"
        finally:
            w3.provider.make_request("anvil_setBalance", [me, hex(original)])
            await node.stop()

    asyncio.run(scenario())


def test_chain_down_then_restarted_empty_backs_off_instead_of_flooding_the_log(tmp_path, caplog):
    ip = "10.9.0.2"
    chain = DevChain(accounts=12, log_path=tmp_path / "anvil.log").start()
    try:
        keys = chain.private_keys
        w3, dep, record, cam_key = setup_chain(chain.rpc_url, keys, tmp_path / "dep", ip)
        node = make_node(chain.rpc_url, keys[3], record, tmp_path / "node")

        async def run_for(seconds: float) -> int:
            """Tick every 100 ms (faster than a node does) for `seconds`; return warning lines logged."""
            caplog.clear()
            end = time.monotonic() + seconds
            ticks = 0
            while time.monotonic() < end:
                await steps(node)
                ticks += 1
                await asyncio.sleep(0.1)
            assert ticks >= 20
            return sum(1 for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("offchain"))

        async def scenario():
            await node.start()
            try:
                start = window_of(int(time.time() * 1000), W)[0] - 5 * W
                await send(node, cam_key, ip, [(i, start + i * 2_000) for i in range(30)])
                await steps(node)
                assert node.status()["chain"]["usable"]
                chain.stop()  # the chain goes away (our own Anvil, by PID)
                with caplog.at_level(logging.WARNING):
                    lines_down = await run_for(4.0)
                assert lines_down <= 8, lines_down  # 0.5 s, 1 s, 2 s ... apart, not one per call
                status = node.status()["chain"]
                assert not status["reachable"] and status["backoff"]["failures"] >= 2
                assert len(node.state.alarms(open_only=True, kind="chain.unreachable")) == 1

                chain.start()  # the same port, an empty chain: no contracts
                node.producer.health.backoff.next_at = 0  # do not wait out the current backoff
                with caplog.at_level(logging.WARNING):
                    lines_empty = await run_for(4.0)
                assert lines_empty <= 8, lines_empty
                status = node.status()["chain"]
                assert status["reachable"] and not status["contractsPresent"] and not status["usable"]
                assert len(node.state.alarms(open_only=True, kind="chain.contracts_missing")) == 1
                assert node.state.alarms(open_only=True, kind="chain.unreachable") == []
            finally:
                await node.stop()

        asyncio.run(scenario())
    finally:
        chain.stop()
