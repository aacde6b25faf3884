"""No block omits a frame a peer holds (issue 8, item 4): the proposer of a window lacks its tail
(the camera's last frames reached the other nodes only). A lost tail has no later frame to show
it as a hole, so only asking the peers before sealing can find it; without that the block is
sealed short and the peers dispute it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cluster_fixtures import one_camera_cluster
from eth_account import Account
from ingest_client import IngestClient

from offchain.chain.client import Signer
from offchain.core import packet as pk
from offchain.core.batch import BatchManifest
from offchain.core.block import camera_id, proposer_for
from offchain.core.cid import cid_from_digest
from offchain.store import LocalStore

pytestmark = pytest.mark.slow

IP = "10.9.4.1"
WINDOW = 10_000
SETTINGS = {"window_ms": WINDOW, "missing_wait_ms": 800, "repair_deadline_ms": 3000, "idle_close_ms": 2000,
            "proposer_timeout_ms": 30_000, "store_fsync": "none"}


def _send(node, key, packets) -> None:
    c = IngestClient(node.ingest)
    c.hello(key, IP)
    for p in packets:
        c.send(p)
    c.wait_ack(max(pk.decode_packet(p).seq for p in packets))
    c.close()


def _window(key) -> tuple[int, list[bytes]]:
    """One closed window a minute back: its start and 100 frames, 100 ms apart."""
    now = int(time.time() * 1000)
    t0 = now - now % WINDOW - 60_000
    return t0, [pk.encode_packet(key, IP, seq, t0 + 100 * seq, seq % 10 == 0, bytes([seq]) * 500) for seq in range(100)]


def _proposer(cluster, t0: int):
    """The node whose slot 0 the window is."""
    address = {Account.from_key(Path(n.config.private_key_file).read_text().strip()).address: n for n in cluster.nodes}
    return address[proposer_for(camera_id(IP), t0, cluster.consortium().nodes(), 0)]


def _first_block_settled(cluster):
    """Block 1 once every node attested it or one disputed it (or after 90 s, as it stands)."""
    ledger, deadline = cluster.ledger(0), time.monotonic() + 90
    while time.monotonic() < deadline:
        if ledger.chain_length(camera_id(IP)) >= 1:
            rec = ledger.block_at(camera_id(IP), 1)
            if rec.attestations == 3 or rec.disputes:
                break
        time.sleep(0.5)
    return ledger.block_at(camera_id(IP), 1)


def test_the_proposer_fetches_the_tail_its_peers_hold_before_sealing(tmp_path):
    with one_camera_cluster(tmp_path, IP, owner=1, settings=SETTINGS) as (cluster, key):
        t0, packets = _window(key)
        proposer = _proposer(cluster, t0)
        for node in cluster.nodes:
            _send(node, key, packets if node is not proposer else packets[:60])  # the proposer lacks 60-99
        rec = _first_block_settled(cluster)
        assert rec.header.frame_count == 100, f"sealed {rec.header.frame_count} of 100 frames"
        assert (rec.attestations, rec.disputes, rec.finalized) == (3, 0, True)
        held = {f["seq"] for f in cluster.api(proposer, f"/api/v1/frames/{IP}")}
        assert held == set(range(100))
        assert {r["seq"] for r in cluster.api(proposer, "/api/v1/repairs")} >= set(range(60, 100))


def test_a_peer_that_does_not_answer_makes_the_proposer_wait_not_seal_short(tmp_path):
    """The only peer holding the tail is down when the window is ready: the proposer must not
    seal without it (that peer would dispute on its return); it asks again each tick and, the
    peer back before the repair deadline, seals every frame."""
    settings = dict(SETTINGS, repair_deadline_ms=40_000)
    with one_camera_cluster(tmp_path, IP, owner=1, settings=settings) as (cluster, key):
        t0, packets = _window(key)
        proposer = _proposer(cluster, t0)
        holder, other = [n for n in cluster.nodes if n is not proposer]
        _send(holder, key, packets)
        cluster.kill_node(holder, True)
        _send(other, key, packets[:60])
        _send(proposer, key, packets[:60])  # nobody reachable holds 60-99
        waits_deadline = time.monotonic() + 30
        while cluster.api(proposer, "/api/v1/status")["counters"].get(IP, {}).get("seal_waits", 0) < 2:
            assert time.monotonic() < waits_deadline, "the proposer never waited for the silent peer"
            assert cluster.ledger(0).chain_length(camera_id(IP)) == 0, "sealed while a peer was silent"
            time.sleep(0.5)
        cluster.start_node(holder)
        rec = _first_block_settled(cluster)
        assert rec.header.frame_count == 100, f"sealed {rec.header.frame_count} of 100 frames"
        assert (rec.attestations, rec.disputes, rec.finalized) == (3, 0, True)


def test_in_batch_mode_a_peer_that_does_not_answer_makes_the_batch_wait_not_seal_short(tmp_path):
    """The same rule for a window's batch: its proposer (one per window, every camera) does not
    sign a batch whose block lacks a tail the silent peer holds; the peer back, the batch holds
    every frame."""
    settings = dict(SETTINGS, repair_deadline_ms=40_000, anchoring="batch", proposer_timeout_ms=30_000)
    with one_camera_cluster(tmp_path, IP, owner=1, settings=settings) as (cluster, key):
        # A window that ended 10-20 s ago: a batch's slots count from the window's end (not from a camera's
        # head on chain), and the proposer stops waiting with half a proposer timeout left.
        now = int(time.time() * 1000)
        t0 = now - now % WINDOW - 2 * WINDOW
        packets = [pk.encode_packet(key, IP, seq, t0 + 100 * seq, seq % 10 == 0, bytes([seq]) * 500)
                   for seq in range(100)]
        address = {Account.from_key(Path(n.config.private_key_file).read_text().strip()).address: n
                   for n in cluster.nodes}
        proposer = address[proposer_for(None, t0, cluster.consortium().nodes(), 0)]
        holder, other = [n for n in cluster.nodes if n is not proposer]
        _send(holder, key, packets)
        cluster.kill_node(holder, True)
        _send(other, key, packets[:60])
        _send(proposer, key, packets[:60])
        batches = cluster.deployment.batch_client(Signer(cluster.w3, cluster.keys[0]))
        waits_deadline = time.monotonic() + 30
        while cluster.api(proposer, "/api/v1/status")["counters"].get("*", {}).get("seal_waits", 0) < 2:
            assert time.monotonic() < waits_deadline, "the batch's proposer never waited for the silent peer"
            assert batches.batch_count() == 0, "a batch was anchored while a peer was silent"
            time.sleep(0.5)
        cluster.start_node(holder)
        deadline = time.monotonic() + 90
        while batches.batch_count() == 0:
            assert time.monotonic() < deadline, "no batch after the silent peer came back"
            time.sleep(0.5)
        rec = batches.batch_at(0)
        store = LocalStore(proposer.config.data_dir / "store")
        manifest = BatchManifest.from_bytes(store.get(cid_from_digest(rec.manifest_digest)))
        assert [h.frame_count for h in manifest.headers] == [100], "the batch's block was sealed short"
