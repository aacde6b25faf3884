"""Crash safety at scale (issue 8, item 9): seeded kill -9 of node processes at random moments
while a camera streams (ingest, repair) and after it stops (sealing, anchoring, attestation).

After every restart and at the end: nothing a node had accepted is lost, every node holds the
same frames, every window is anchored exactly once and attested by every node without dispute,
and no node account is left with a stuck transaction (pending nonce = mined nonce).

`make test` runs the short form (one seed, a few kills); `make soak` runs the long form
(FRAMELEDGER_SOAK_KILLS, default 50, over several seeds).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from eth_account import Account

from offchain.camera.agent import CameraAgent
from offchain.camera.samples import sample_path
from offchain.camera.sources import FileSource
from offchain.core.block import camera_id
from offchain.node.cluster import Cluster

pytestmark = pytest.mark.slow

WINDOW = 10_000
SETTINGS = {"window_ms": WINDOW, "missing_wait_ms": 800, "repair_deadline_ms": 4000, "idle_close_ms": 2000,
            "proposer_timeout_ms": 4000, "store_fsync": "file"}


@contextmanager
def cluster_with_camera(tmp_path, ip: str):
    cluster = Cluster(tmp_path, settings=SETTINGS)
    try:
        cluster.start_chain()
        key = cluster.register_camera(ip, 1, b"crash")
        cluster.seal_genesis()
        cluster.configure_nodes()
        cluster.start_nodes()
        yield cluster, key
    finally:
        cluster.stop()


def frames_of(cluster, node, ip) -> set[tuple[int, str]]:
    return {(f["seq"], f["sha256"]) for f in cluster.api(node, f"/api/v1/frames/{ip}")}


async def kill_and_restart(cluster, rng: random.Random, ip: str, accepted: dict[str, set], log: list) -> None:
    victim = rng.choice(cluster.nodes)
    accepted[victim.name] |= await asyncio.to_thread(frames_of, cluster, victim, ip)
    await asyncio.to_thread(cluster.kill_node, victim, True)  # SIGKILL: no clean shutdown
    log.append((round(time.monotonic(), 2), victim.name))
    await asyncio.sleep(rng.uniform(0.1, 1.0))
    await asyncio.to_thread(cluster.start_node, victim)
    after = await asyncio.to_thread(frames_of, cluster, victim, ip)
    assert accepted[victim.name] <= after, f"{victim.name} lost accepted frames after restart"


def wait_all_final(cluster, ip: str, windows: int, timeout: float) -> list:
    ledger = cluster.ledger(0)
    cid = camera_id(ip)
    deadline = time.monotonic() + timeout
    recs: list = []
    while time.monotonic() < deadline:
        n = ledger.chain_length(cid)
        recs = [ledger.block_at(cid, h) for h in range(1, n + 1)]
        if n >= windows and all(r.finalized and r.attestations == len(cluster.nodes) for r in recs):
            return recs
        time.sleep(0.5)
    raise AssertionError(f"not every window final and attested by every node in {timeout}s: "
                         f"{[(r.header.height, r.attestations, r.disputes) for r in recs]}")


def run_seeded_kills(tmp_path, seed: int, kills_streaming: int, kills_after: int, seconds: int) -> None:
    rng = random.Random(seed)
    ip = f"10.0.7.{seed % 250 + 1}"
    with cluster_with_camera(tmp_path, ip) as (cluster, key):
        now = int(time.time() * 1000)
        t0 = now - now % WINDOW - 120_000
        accepted = {n.name: set() for n in cluster.nodes}
        log: list = []

        async def scenario():
            agent = CameraAgent(ip, key, FileSource(sample_path("bikes"), start_ms=t0, loop=True),
                                {n.name: n.ingest for n in cluster.nodes}, speed=4.0, max_duration_ms=seconds * 1000)
            task = asyncio.create_task(agent.run())
            for _ in range(kills_streaming):  # during ingest and repair
                await asyncio.sleep(rng.uniform(0.3, 2.0))
                if task.done():
                    break
                await kill_and_restart(cluster, rng, ip, accepted, log)
            await task
            for _ in range(kills_after):  # during sealing, anchoring and attestation
                await asyncio.sleep(rng.uniform(0.2, 2.5))
                await kill_and_restart(cluster, rng, ip, accepted, log)

        asyncio.run(scenario())
        windows = seconds * 1000 // WINDOW
        recs = wait_all_final(cluster, ip, windows, timeout=180)
        holdings = {n.name: frames_of(cluster, n, ip) for n in cluster.nodes}
        for name, before in accepted.items():
            assert before <= holdings[name], f"{name} lost frames it had accepted"
        assert len({frozenset(h) for h in holdings.values()}) == 1, "nodes hold different frames"
        assert all(r.disputes == 0 for r in recs), [(r.header.height, r.disputes) for r in recs]
        # every window anchored exactly once, windows contiguous and in order
        windows_seen = [(r.header.window_start_ms, r.header.window_end_ms) for r in recs]
        assert len(set(windows_seen)) == len(windows_seen)
        assert all(a[1] <= b[0] for a, b in zip(windows_seen, windows_seen[1:]))
        assert sum(r.header.frame_count for r in recs) == len(next(iter(holdings.values())))
        # no stuck transaction: every node account's pending nonce is its mined nonce
        for n in cluster.nodes:
            addr = Account.from_key(Path(n.config.private_key_file).read_text().strip()).address
            assert cluster.w3.eth.get_transaction_count(addr, "pending") == cluster.w3.eth.get_transaction_count(addr)
        assert len(log) >= 1


def test_seeded_kill_9_loses_nothing_and_anchors_once(tmp_path):
    run_seeded_kills(tmp_path, seed=7, kills_streaming=3, kills_after=2, seconds=40)


@pytest.mark.soak
def test_soak_50_seeded_kill_9(tmp_path):
    total = int(os.environ.get("FRAMELEDGER_SOAK_KILLS", "50"))
    done, seed = 0, 100
    while done < total:
        streaming, after = min(6, total - done), min(3, max(0, total - done - 6))
        run_seeded_kills(tmp_path / f"seed-{seed}", seed=seed, kills_streaming=streaming, kills_after=after, seconds=60)
        done += streaming + after
        seed += 1
