"""Issue 8, item 1: every per-packet and per-tick cost is bounded by the frames held, never by a
time span or a sequence gap. One node in-process (its real SQLite, store and producer) against a
real Anvil and real contracts; a one-node consortium (quorum 1), so the node proposes every window.

Each attack is a validly signed frame from a whitelisted camera (the device key is the camera's):
- a frame stamped 400,000 windows in the past, after the camera's chain has blocks;
- a sequence number that jumps from 9 to 3,000,000;
- a camera clock reset to epoch 0.
The walk over windows is counted: a counter that is exceeded raises a BaseException, which the
producer's per-camera `except Exception` cannot swallow, so today's code fails fast instead of
walking for minutes."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from offchain.chain.client import Signer
from offchain.chain.deployer import deploy
from offchain.chain.ledger import ConsortiumClient, VideoLedgerClient
from offchain.core import packet as pk
from offchain.core.block import Manifest, camera_id, window_of
from offchain.core.cid import cid_from_digest
from offchain.core.gaps import find_holes
from offchain.node.config import NodeConfig
from offchain.node.node import MAX_ALARM_SEQS, MAX_LEAD_SEQS, Node

W = 60_000
NODE_ACCOUNT = 3
SETTINGS = {"window_ms": W, "missing_wait_ms": 0, "repair_deadline_ms": 300, "idle_close_ms": 500,
            "proposer_timeout_ms": 60_000, "store_fsync": "none"}


class Walked(BaseException):
    """A bounded pass did more than its bound (not an Exception: the producer must not swallow it)."""


@pytest.fixture(scope="module")
def one_node_chain(devchain, w3, tmp_path_factory):
    plan = {"founderName": "Authority", "admissionThreshold": 1,
            "members": [{"account": 1, "role": "Operator", "parent": 0, "name": "Bank"}],
            "nodes": [{"account": NODE_ACCOUNT, "operatedBy": 0, "name": "node-solo"}], "quorum": 1}
    out = tmp_path_factory.mktemp("deployment")
    dep = deploy(w3, devchain.private_keys, plan=plan, out_dir=out)
    owner = ConsortiumClient(Signer(w3, devchain.private_keys[1]), dep.consortium)
    owner.register_camera("10.8.0.0", b"\x11" * 32, b"\x00" * 32)
    ConsortiumClient(Signer(w3, devchain.private_keys[0]), dep.consortium).seal_genesis()
    return devchain, dep, out / f"{dep.chain_id}.json", owner


def new_camera(owner: ConsortiumClient, ip: str) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    owner.register_camera(ip, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), b"\x00" * 32)
    return key


def make_node(one_node_chain, tmp_path: Path) -> Node:
    devchain, _, record_path, _ = one_node_chain
    config = NodeConfig.from_dict({"name": "node-solo", "data_dir": str(tmp_path / "node"), "rpc_url": devchain.rpc_url,
                                   "deployment": str(record_path), "private_key": devchain.private_keys[NODE_ACCOUNT],
                                   **SETTINGS}, env={})
    return Node(config)


async def send(node: Node, key, ip: str, frames: list[tuple[int, int]]) -> None:
    for seq, ts in frames:
        raw = pk.encode_packet(key, ip, seq, ts, seq % 25 == 0, b"frame %d" % seq)
        assert await node.accept_packet(raw, source="camera") == "accepted", (ip, seq, ts)


async def tick(node: Node) -> None:
    await node.scan_gaps()
    await node.producer.tick()


def count_calls(obj, name: str, limit: int) -> list[int]:
    calls = [0]
    real = getattr(obj, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        if calls[0] > limit:
            raise Walked(f"{name} called more than {limit} times in one pass")
        return real(*args, **kwargs)

    setattr(obj, name, counted)
    return calls


def recent_window(now_ms: int, back: int = 5) -> int:
    return window_of(now_ms, W)[0] - back * W


async def anchored_history(node: Node, key, ip: str, start: int) -> int:
    """Seq 0..59 over two windows; the first is sealed and anchored. Returns the next seq."""
    await send(node, key, ip, [(i, start + i * 2_000) for i in range(30)] + [(30 + i, start + W + i * 40) for i in range(30)])
    await tick(node)
    assert node.ledger.chain_length(camera_id(ip)) == 1
    last = node.status()["chain"]["lastAnchor"]
    assert last["block"] == "0x" + node.ledger.block_hash_at(camera_id(ip), 1).hex() and last["height"] == 1
    return 60


def test_far_past_frame_costs_one_visit_not_one_per_window(one_node_chain, tmp_path):
    ip = "10.8.0.1"
    key = new_camera(one_node_chain[3], ip)
    node = make_node(one_node_chain, tmp_path)

    async def scenario():
        await node.start()
        try:
            start = recent_window(int(time.time() * 1000))
            seq = await anchored_history(node, key, ip, start)
            far = start - 400_000 * W + 1_234  # ~ 9 months back, after the chain has blocks
            await send(node, key, ip, [(seq, far)])
            windows = count_calls(node.state, "block_for_window", limit=50)
            tips = count_calls(node.ledger, "tip", limit=50)
            beats = 0

            async def heartbeat():  # the event loop (API, ingest) keeps running during the pass
                nonlocal beats
                while True:
                    beats += 1
                    await asyncio.sleep(0)

            hb = asyncio.create_task(heartbeat())
            for _ in range(6):
                await tick(node)
                await asyncio.sleep(0.25)  # past 2 x repair_deadline: the far frame is settled as late
            hb.cancel()
            assert windows[0] <= 20 and tips[0] <= 12, (windows, tips)  # 400,000 windows are not visited
            assert beats > 4
            held = node.state.frame(camera_id(ip), seq)
            assert held is not None and held.anchored  # left the pool as late, no block for it
            assert node.state.counters()[ip]["late_frames"] == 1
            assert node.ledger.chain_length(camera_id(ip)) == 1
        finally:
            await node.stop()

    asyncio.run(scenario())


def test_seq_jump_to_three_million_is_one_range_a_capped_alarm_and_bounded_memory(one_node_chain, tmp_path):
    ip = "10.8.0.2"
    key = new_camera(one_node_chain[3], ip)
    node = make_node(one_node_chain, tmp_path)
    cam = camera_id(ip)

    async def scenario():
        await node.start()
        try:
            start = recent_window(int(time.time() * 1000))
            frames = [(i, start + i * 40) for i in range(10)] + [(3_000_000 + i, start + 400 + i * 40) for i in range(10)]
            await send(node, key, ip, frames + [(3_000_010, start + W + 5)])
            tracemalloc.start()
            for _ in range(3):
                await tick(node)
            await asyncio.sleep(0.4)  # past the repair deadline: the window is sealed with its gap
            await tick(node)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert peak < 8_000_000, f"peak {peak} bytes"  # a list of the hole's numbers is > 100 MB

            holes = find_holes(-1, node.state.seqs_after(cam, -1))
            assert [(h.from_seq, h.to_seq) for h in holes] == [(10, 2_999_999)]
            assert node.tracks[(cam, 0)].alarmed.range_count <= 2 or node.tracks[(cam, 0)].watermark > 2_999_999
            missing = node.state.alarms(camera=cam, kind="missing")
            assert missing and all(a.seq_to - a.seq_from + 1 <= MAX_ALARM_SEQS for a in missing)
            assert sum(a.seq_to - a.seq_from + 1 for a in missing) < 1_000  # only the plausible part is asked for
            jumps = node.state.alarms(camera=cam, kind="camera.seq_jump")
            assert len(jumps) == 1 and jumps[0].seq_to == 2_999_999 and jumps[0].cleared_at is None

            assert node.ledger.chain_length(cam) == 1
            rec = node.ledger.block_at(cam, 1)
            manifest = Manifest.from_bytes(node.store.get(cid_from_digest(rec.header.manifest_digest)))
            assert [(g.from_seq, g.to_seq) for g in manifest.gaps] == [(10, 2_999_999)]  # declared, as one range
            assert len(manifest.frames) == 20
        finally:
            await node.stop()

    asyncio.run(scenario())


def test_a_first_frame_numbered_a_billion_asks_for_the_plausible_part_only(one_node_chain, tmp_path):
    ip = "10.8.0.7"
    key = new_camera(one_node_chain[3], ip)
    node = make_node(one_node_chain, tmp_path)
    cam = camera_id(ip)

    async def scenario():
        await node.start()
        try:
            start = recent_window(int(time.time() * 1000))
            await send(node, key, ip, [(10**9 + i, start + i * 40) for i in range(10)])
            for _ in range(5):
                await node.scan_gaps()
            missing = node.state.alarms(camera=cam, kind="missing")
            assert 0 < sum(a.seq_to - a.seq_from + 1 for a in missing) <= MAX_LEAD_SEQS
            assert all(a.seq_to < 10**9 and a.seq_from >= 10**9 - MAX_LEAD_SEQS for a in missing)
            assert len(missing) <= 5 * 4  # four new alarms per tick
            jumps = node.state.alarms(camera=cam, kind="camera.seq_jump")
            assert len(jumps) == 1 and (jumps[0].seq_from, jumps[0].seq_to) == (0, 10**9 - MAX_LEAD_SEQS - 1)
            assert node.tracks[(cam, 0)].alarmed.range_count <= 2
        finally:
            await node.stop()

    asyncio.run(scenario())


def test_clock_reset_to_epoch_zero_is_named_and_other_cameras_keep_their_blocks(one_node_chain, tmp_path):
    ip, other_ip = "10.8.0.3", "10.8.0.4"
    key = new_camera(one_node_chain[3], ip)
    other_key = new_camera(one_node_chain[3], other_ip)
    node = make_node(one_node_chain, tmp_path)

    async def scenario():
        await node.start()
        try:
            start = recent_window(int(time.time() * 1000))
            seq = await anchored_history(node, key, ip, start)
            await send(node, key, ip, [(seq + i, i * 40) for i in range(10)])  # the clock restarts at 1970
            # the honest camera streams two windows meanwhile
            await send(node, other_key, other_ip, [(i, start + i * 100) for i in range(20)] + [(20, start + W + 1)])
            windows = count_calls(node.state, "block_for_window", limit=50)
            for _ in range(6):
                await tick(node)
                await asyncio.sleep(0.25)
            assert windows[0] <= 20, windows  # 29 million windows since 1970 are not visited
            clock = node.state.alarms(camera=camera_id(ip), kind="camera.clock_jump")
            assert len(clock) == 1 and "seq 59" in clock[0].detail
            assert node.ledger.chain_length(camera_id(ip)) == 1  # nothing anchored for 1970: behind the tip
            assert node.ledger.chain_length(camera_id(other_ip)) == 1  # the honest camera's window was sealed
            assert node.state.counters()[ip]["late_frames"] == 10
        finally:
            await node.stop()

    asyncio.run(scenario())


# --------------------------------------------------------- item 8: the producer's chain alarms

def test_broken_link_with_an_unmoved_tip_is_an_alarm_not_a_lost_race(one_node_chain, tmp_path):
    """The chain answers a tip whose hash is not what the contract links to (a node behind a
    broken RPC, a fork): the anchor reverts BrokenChainLink, the tip has not moved, so this is not
    a race another node won. Today's code files the window's frames as late; now an alarm is
    raised and the frames stay in the pool."""
    ip = "10.8.0.5"
    key = new_camera(one_node_chain[3], ip)
    node = make_node(one_node_chain, tmp_path)
    cam = camera_id(ip)

    async def scenario():
        await node.start()
        try:
            real_tip = node.ledger.tip
            node.ledger.tip = lambda c: (b"\x66" * 32, *real_tip(c)[1:])  # a wrong previous hash, always
            start = recent_window(int(time.time() * 1000))
            await send(node, key, ip, [(i, start + i * 2_000) for i in range(30)] + [(30, start + W + 1)])
            for _ in range(3):
                await tick(node)
                await asyncio.sleep(0.25)
            alarms = node.state.alarms(camera=cam, kind="chain.link_broken")
            assert len(alarms) == 1 and "BrokenChainLink" in alarms[0].detail
            assert node.ledger.chain_length(cam) == 0
            assert not any(f.anchored for f in node.state.frames_in(cam, start, start + W))  # not filed as late
            assert "late_frames" not in node.state.counters().get(ip, {})
            node.ledger.tip = real_tip  # the chain is readable again: the window is anchored
            await tick(node)
            assert node.ledger.chain_length(cam) == 1
        finally:
            await node.stop()

    asyncio.run(scenario())


def test_window_beyond_the_contracts_slack_is_an_alarm_and_waits(one_node_chain, tmp_path):
    devchain, dep, _, _ = one_node_chain
    governor = VideoLedgerClient(Signer(node_w3 := connect_w3(devchain), devchain.private_keys[0]), dep.video_ledger)
    ip = "10.8.0.6"
    key = new_camera(one_node_chain[3], ip)
    node = make_node(one_node_chain, tmp_path)
    cam = camera_id(ip)

    async def scenario():
        await node.start()
        try:
            chain_now = node_w3.eth.get_block("latest")["timestamp"] * 1000
            start = window_of(chain_now, W)[0] + 2 * W  # a camera clock two windows ahead of the chain
            await send(node, key, ip, [(i, start + i * 2_000) for i in range(30)] + [(30, start + W + 1)])
            governor.set_window_limits(1_000, 3_600_000)  # the consortium allows 1 s of clock skew
            for _ in range(3):
                await tick(node)
            alarms = node.state.alarms(camera=cam, kind="camera.clock_ahead")
            assert len(alarms) == 1 and "WindowInFuture" in alarms[0].detail
            assert node.ledger.chain_length(cam) == 0
            assert not any(f.anchored for f in node.state.frames_in(cam, start, start + W))
        finally:
            governor.set_window_limits(600_000, 3_600_000)
            await node.stop()

    asyncio.run(scenario())


def connect_w3(devchain):
    from offchain.chain.client import connect

    return connect(devchain.rpc_url)
