"""Proposer rotation under a live camera (issue 9, item 3): three real node processes, frames
stamped and sent in real time; the proposer of a later window is stopped while the camera
streams. Its windows are taken over in their slots by the next node, no node loses an anchoring
race (`lost_races` stays 0), and every block becomes final with the two nodes left."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cluster_fixtures import one_camera_cluster
from eth_account import Account
from ingest_client import IngestClient

from offchain.core import packet as pk
from offchain.core.block import camera_id, proposer_for

pytestmark = pytest.mark.slow

IP = "10.9.5.1"
WINDOW = 4_000
WINDOWS = 5
STEP = 200  # ms between frames
SETTINGS = {"window_ms": WINDOW, "missing_wait_ms": 500, "repair_deadline_ms": 1_500, "idle_close_ms": 1_500,
            "proposer_timeout_ms": 2_000, "clock_skew_ms": 500, "store_fsync": "none"}


def lost_races(cluster, node) -> int:
    counters = cluster.api(node, "/api/v1/status")["counters"]
    return sum(c.get("lost_races", 0) for c in counters.values())


def test_a_stopped_proposer_is_taken_over_in_its_slot_without_lost_races(tmp_path):
    with one_camera_cluster(tmp_path, IP, owner=1, settings=SETTINGS) as (cluster, key):
        cid = camera_id(IP)
        nodes = cluster.consortium().nodes()
        by_address = {Account.from_key(Path(n.config.private_key_file).read_text().strip()).address: n
                      for n in cluster.nodes}
        now = int(time.time() * 1000)
        t0 = now - now % WINDOW + WINDOW
        victim = by_address[proposer_for(cid, t0 + 2 * WINDOW, nodes)]  # the primary of window 2
        stop_at = t0 + 3 * WINDOW - 1_000  # late in its window, before it closes
        frames = [(seq, t0 + seq * STEP) for seq in range(WINDOWS * WINDOW // STEP)]
        clients = {}
        for node in cluster.nodes:
            clients[node.name] = IngestClient(node.ingest)
            clients[node.name].hello(key, IP)
        sent = 0
        before_stop = None
        while sent < len(frames):
            wall = int(time.time() * 1000)
            if before_stop is None and wall >= stop_at:
                before_stop = lost_races(cluster, victim)
                clients.pop(victim.name).close()
                cluster.kill_node(victim)
            while sent < len(frames) and frames[sent][1] <= wall:
                seq, ts = frames[sent]
                packet = pk.encode_packet(key, IP, seq, ts, seq % 10 == 0, b"live %d" % seq)
                for client in clients.values():
                    client.send(packet)
                sent += 1
            time.sleep(0.05)
        for client in clients.values():
            client.wait_ack(frames[-1][0])
            client.close()
        ledger, deadline = cluster.ledger(0), time.monotonic() + 90
        recs: list = []
        while time.monotonic() < deadline:
            recs = [ledger.block_at(cid, h) for h in range(1, ledger.chain_length(cid) + 1)]
            if len(recs) >= WINDOWS and all(r.finalized for r in recs[:WINDOWS]):
                break
            time.sleep(0.5)
        assert [r.header.window_start_ms for r in recs[:WINDOWS]] == [t0 + k * WINDOW for k in range(WINDOWS)]
        assert all(r.finalized and r.disputes == 0 for r in recs[:WINDOWS])
        assert all(r.header.frame_count == WINDOW // STEP for r in recs[:WINDOWS])
        dead = next(a for a, n in by_address.items() if n is victim)
        taken_over = [r for r in recs[:WINDOWS] if r.header.window_start_ms >= t0 + 2 * WINDOW
                      and proposer_for(cid, r.header.window_start_ms, nodes) == dead]
        assert taken_over and taken_over[0].header.window_start_ms == t0 + 2 * WINDOW
        story = [(r.header.window_start_ms - t0, r.header.proposer[:6], proposer_for(cid, r.header.window_start_ms, nodes)[:6],
                  r.anchored_at * 1000 - r.header.window_end_ms) for r in recs[:WINDOWS]]
        for r in recs[:WINDOWS]:
            primary = proposer_for(cid, r.header.window_start_ms, nodes)
            if r in taken_over:
                assert r.header.proposer != dead
            else:
                assert r.header.proposer == primary, (dead[:6], story)  # a live primary is never taken over
        assert before_stop == 0
        for node in cluster.nodes:
            if node is not victim:
                assert lost_races(cluster, node) == 0, node.name
