"""Repair in batches (issue 9): three real node processes in batch mode; one frame of each of many
cameras is withheld from one node at the same moment. The node raises one missing alarm per
camera, but its peers hear them in a few batched alarm requests, answer with a few repair
replies carrying every camera's frame, and hear the clears the same way: requests are counted on
the receiving nodes (`peer_*_requests` in `/api/v1/status`)."""

from __future__ import annotations

import time

import pytest
from ingest_client import IngestClient

from offchain.core import packet as pk
from offchain.node.cluster import Cluster

pytestmark = pytest.mark.slow

CAMERAS = 24
IPS = tuple(f"10.9.8.{i + 1}" for i in range(CAMERAS))
WINDOW = 3_000
STEP = 200  # ms between frames
LOST = 3  # the seq withheld from the victim, for every camera at once
SETTINGS = {"window_ms": WINDOW, "missing_wait_ms": 300, "repair_deadline_ms": 1_500, "idle_close_ms": 1_500,
            "proposer_timeout_ms": 2_500, "clock_skew_ms": 500, "store_fsync": "none", "anchoring": "batch"}


def stream(cluster: Cluster, keys: dict, t0: int, frames: int, victim: str) -> None:
    """`frames` frames of every camera in real time from t0 to every node; seq LOST never reaches
    `victim`."""
    clients = {}
    for node in cluster.nodes:  # one by one: a node admits only a few unproven connections per address
        for ip in IPS:
            clients[(node.name, ip)] = IngestClient(node.ingest)
            clients[(node.name, ip)].hello(keys[ip], ip)
    for seq in range(frames):
        ts = t0 + seq * STEP
        time.sleep(max(0.0, ts / 1000 - time.time()))
        for (name, ip), client in clients.items():
            if not (name == victim and seq == LOST):
                client.send(pk.encode_packet(keys[ip], ip, seq, ts, seq % 10 == 0, b"%s cam %d" % (ip.encode(), seq)))
    for client in clients.values():
        client.close()


def node_counters(cluster: Cluster, node) -> dict[str, int]:
    """Every counter of the node, summed over cameras (and the node-wide "*" row)."""
    out: dict[str, int] = {}
    for row in cluster.api(node, "/api/v1/status")["counters"].values():
        for name, n in row.items():
            out[name] = out.get(name, 0) + n
    return out


def test_many_cameras_holes_are_repaired_through_one_request_per_peer(tmp_path):
    cluster = Cluster(tmp_path, settings=SETTINGS)
    try:
        cluster.start_chain()
        keys = {ip: cluster.register_camera(ip, 1, b"g") for ip in IPS}
        cluster.seal_genesis()
        cluster.configure_nodes()
        cluster.start_nodes()
        victim, peers = cluster.nodes[0], cluster.nodes[1:]
        now = int(time.time() * 1000)
        stream(cluster, keys, now - now % WINDOW + WINDOW, 2 * WINDOW // STEP, victim.name)

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            alarms = [a for a in cluster.api(victim, "/api/v1/alarms", kind="missing")]
            if len(alarms) >= CAMERAS and all(a["resolution"] for a in alarms):
                break
            time.sleep(0.5)
        assert len(alarms) == CAMERAS and {a["camera"] for a in alarms} == set(IPS)
        assert all(a["resolution"] == "repaired" for a in alarms), alarms
        repairs = cluster.api(victim, "/api/v1/repairs")
        assert {r["camera"] for r in repairs if r["seq"] == LOST} == set(IPS)
        assert {r["peer"] for r in repairs} <= {p.name for p in peers}

        mine = node_counters(cluster, victim)
        theirs = [node_counters(cluster, p) for p in peers]
        # Frames went back through the alarm protocol (not only the batch path's pull) ...
        assert sum(c.get("frames_served", 0) for c in theirs) >= CAMERAS
        assert sum(c.get("alarms_answered", 0) for c in theirs) >= CAMERAS
        # ... in far fewer requests than holes: one alarm request per peer per tick (plus a
        # resend round or a split tick on a loaded machine), one repair reply per request heard,
        # and batched clears. One request per hole would be >= CAMERAS on every line.
        assert mine.get("peer_repair_requests", 0) >= 1
        assert mine["peer_repair_requests"] < CAMERAS // 2, mine
        for c in theirs:
            assert 1 <= c.get("peer_alarm_requests", 0) < CAMERAS // 2, c
            assert 1 <= c.get("peer_clear_requests", 0) < CAMERAS // 2, c
    finally:
        cluster.stop()
