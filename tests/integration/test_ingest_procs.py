"""Several ingest processes behind one node (issue 9, ``ingest_processes = 2``), through a real
node process: the main process does the handshake and hands each camera's connection (its fd)
to the process that owns the camera; that process verifies, group-commits and acknowledges.
Checked here: every frame acknowledged and held, the same refusals and counters as the
single-process path, a reconnecting camera keeps its acknowledgements, and an ingest process
killed with SIGKILL mid-flood loses no acknowledged frame and is started again.
Speed is measured by bench/ingest_bench.py (``--ingest-processes``), never asserted here."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import pytest

from offchain.core.block import camera_id
from offchain.core.cid import cid_from_digest
from offchain.node.cluster import Cluster
from offchain.node.ingest_procs import owner
from offchain.store.local import LocalStore

from ingest_client import IngestClient, node_db
from test_ingest_throughput import _Camera, _frames, _held, _status

CAMS = [f"10.0.11.{i}" for i in range(1, 25)]
QUEUE_FRAMES = 64
PROCS = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    settings = {"window_ms": 3_600_000, "store_fsync": "file", "ingest_queue_frames": QUEUE_FRAMES,
                "ingest_inflight_per_connection": 8, "ingest_processes": PROCS}
    c = Cluster(tmp_path_factory.mktemp("ingest-procs"), settings=settings)
    try:
        c.start_chain()
        c.keys_by_ip = {ip: c.register_camera(ip, 1, b"g") for ip in CAMS}
        c.seal_genesis()
        c.configure_nodes()
        c.start_node(c.nodes[0], timeout=120)  # its ingest processes read the whitelist first
        yield c
    finally:
        c.stop()


def _ingest_pids(node) -> list[int]:
    out = []
    for children in Path(f"/proc/{node.process.pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                if b"offchain.node.ingest_child" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    out.append(int(pid))
            except FileNotFoundError:
                pass
    return sorted(out)


def _wait(cond, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    return cond()


def test_a_flood_over_both_processes_is_acknowledged_held_and_bounded(cluster):
    node = cluster.nodes[0]
    cams = CAMS[:8]
    assert {owner(camera_id(ip), PROCS) for ip in cams} == set(range(PROCS))  # both processes get cameras
    assert len(_ingest_pids(node)) == PROCS
    per_camera = 150
    threads = [_Camera(node, cluster.keys_by_ip[ip], ip, _frames(cluster.keys_by_ip[ip], ip, 0, per_camera)) for ip in cams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [t.acked for t in threads] == [per_camera - 1] * len(cams)
    for ip in cams:
        assert set(_held(node.config.data_dir, ip)) == set(range(per_camera))
    assert _wait(lambda: _status(cluster)["ingest"]["pipeline"]["frames"] == 0, 10)
    status = _status(cluster)
    ingest = status["ingest"]
    assert ingest["pipeline"]["highWater"] <= QUEUE_FRAMES  # the node-wide bound, shared out
    assert [p["up"] for p in ingest["processes"]] == [True] * PROCS
    assert _wait(lambda: all(_status(cluster)["counters"].get(ip, {}).get("received") == per_camera for ip in cams), 10)
    assert _status(cluster)["ingest"]["openConnections"] == len(cams)
    for t in threads:
        t.client.close()
    # the connections were given back to the main process's caps when they closed
    assert _wait(lambda: _status(cluster)["ingest"]["openConnections"] == 0, 10)


def test_refusals_and_counters_are_those_of_one_process(cluster):
    node = cluster.nodes[0]
    ip = CAMS[8]
    key = cluster.keys_by_ip[ip]
    c = IngestClient(node.ingest)
    c.hello(key, ip)
    good = _frames(key, ip, 0, 3)
    c.send(good[0])
    bad_digest = bytearray(good[1])
    bad_digest[-1] ^= 0xFF
    c.send(bytes(bad_digest))  # integrity: counted, the connection stays
    c.send(good[2])
    assert c.wait_ack(0)["upTo"] == 0
    assert _wait(lambda: 2 in _held(node.config.data_dir, ip), 10)
    forged = bytearray(good[1])
    forged[6 + len(ip) + 8 + 8 + 4 + 32] ^= 0x01  # the device signature
    c.send(bytes(forged))
    msgs = c.until_closed()
    assert msgs[-1]["type"] == "reject" and msgs[-1]["reason"] == "bad-signature" and msgs[-1]["seq"] == 1, msgs
    assert set(_held(node.config.data_dir, ip)) == {0, 2}

    def counted() -> bool:
        n = _status(cluster)["counters"].get(ip, {})
        return n.get("rejected_integrity") == 1 and n.get("rejected_security") == 1 and n.get("received") == 2
    assert _wait(counted, 10), _status(cluster)["counters"].get(ip)


def test_a_reconnecting_camera_learns_what_is_held_and_its_resent_frames_are_duplicates(cluster):
    node = cluster.nodes[0]
    ip = CAMS[9]
    key = cluster.keys_by_ip[ip]
    frames = _frames(key, ip, 0, 30)
    c = IngestClient(node.ingest)
    c.hello(key, ip)
    for raw in frames[:20]:
        c.send(raw)
    c.wait_ack(19)
    c.close()
    again = IngestClient(node.ingest)
    again.hello(key, ip)
    first = again.recv()
    assert first is not None and first["type"] == "ack" and first["upTo"] == 19, first  # at once, from the owner
    for raw in frames[15:]:  # five it holds, ten new
        again.send(raw)
    again.wait_ack(29)
    assert set(_held(node.config.data_dir, ip)) == set(range(30))
    assert _wait(lambda: _status(cluster)["counters"].get(ip, {}).get("duplicates") == 5, 10)
    assert "rejected_security" not in _status(cluster)["counters"].get(ip, {})  # not taken for equivocation
    again.close()


def test_an_ingest_process_killed_mid_flood_loses_no_acknowledged_frame_and_is_restarted(cluster):
    node = cluster.nodes[0]
    cams = CAMS[10:18]
    victim_index = owner(camera_id(cams[0]), PROCS)
    victims = [ip for ip in cams if owner(camera_id(ip), PROCS) == victim_index]
    threads = {ip: _Camera(node, cluster.keys_by_ip[ip], ip, _frames(cluster.keys_by_ip[ip], ip, 0, 2000)) for ip in cams}
    for t in threads.values():
        t.start()
    assert _wait(lambda: sum(max(0, threads[ip].acked + 1) for ip in victims) >= 200, 60)
    before = _status(cluster)["ingest"]["processes"]
    os.kill(before[victim_index]["pid"], signal.SIGKILL)
    for ip in victims:
        threads[ip].join(60)
    acked = {ip: threads[ip].acked for ip in victims}
    assert any(a < 1999 for a in acked.values())  # killed mid-flood
    store = LocalStore(node.config.data_dir / "store", fsync="none")
    try:
        for ip, upto in acked.items():
            held = _held(node.config.data_dir, ip)
            assert set(range(upto + 1)) <= set(held), f"{ip} lost acknowledged frames"
            for seq in range(upto + 1):
                assert hashlib.sha256(store.get(cid_from_digest(held[seq]))).digest() == held[seq]
    finally:
        store.close()

    def restarted() -> bool:
        procs = _status(cluster)["ingest"]["processes"]
        return procs[victim_index]["up"] and procs[victim_index]["restarts"] == before[victim_index]["restarts"] + 1 \
            and procs[victim_index]["pid"] != before[victim_index]["pid"]
    assert _wait(restarted, 120), _status(cluster)["ingest"]["processes"]
    # the other process's cameras were not disturbed: they finish their streams
    for ip in cams:
        if ip not in victims:
            threads[ip].join(120)
            assert threads[ip].acked == 1999, ip
    # a victim camera reconnects (to the new process) and sends the rest: all held, nothing twice
    ip = victims[0]
    key = cluster.keys_by_ip[ip]
    c = IngestClient(node.ingest)
    c.hello(key, ip)
    first = c.recv()
    assert first is not None and first["type"] == "ack" and first["upTo"] >= acked[ip], first
    for raw in _frames(key, ip, 0, 2000)[first["upTo"] + 1:]:
        c.send(raw)
    c.wait_ack(1999, timeout=120)
    c.close()
    with node_db(node.config.data_dir) as db:
        n = db.execute("SELECT COUNT(*) FROM frames WHERE camera_id=?", (camera_id(ip),)).fetchone()[0]
    assert n == 2000


def test_a_clean_stop_keeps_the_counters_of_the_ingest_processes(cluster):
    node = cluster.nodes[0]
    ip = CAMS[20]
    key = cluster.keys_by_ip[ip]
    frames = _frames(key, ip, 0, 40)
    c = IngestClient(node.ingest)
    c.hello(key, ip)
    for raw in frames + frames[:5]:
        c.send(raw)
    c.wait_ack(39)
    assert _wait(lambda: _status(cluster)["counters"].get(ip, {}).get("duplicates", 0) == 5, 10)
    c.close()
    pids = _ingest_pids(node)
    cluster.kill_node(node, hard=False)  # SIGTERM: the ingest processes report, the main process flushes
    with node_db(node.config.data_dir) as db:
        counters = dict(db.execute("SELECT name, value FROM counters WHERE camera=?", (ip,)))
    assert counters.get("received") == 40 and counters.get("duplicates") == 5, counters
    assert not [p for p in pids if Path(f"/proc/{p}").exists() and b"ingest_child" in Path(f"/proc/{p}/cmdline").read_bytes()]
    cluster.start_node(node, timeout=120)
    assert _status(cluster)["counters"][ip]["received"] == 40
