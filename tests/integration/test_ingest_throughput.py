"""The ingest pipeline rebuilt for throughput (issue 9), through a real node process: group commit
(acknowledged only once durable), backpressure (bounded pipeline, nothing accepted dropped),
verification in a worker process (same refusals as before), counters kept in memory and flushed.
Speed is measured by bench/ingest_bench.py, never asserted here."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path

import pytest

from offchain.core import packet as pk
from offchain.core import wire
from offchain.core.block import camera_id
from offchain.core.cid import cid_from_digest
from offchain.node.cluster import Cluster
from offchain.store.local import LocalStore

from ingest_client import IngestClient, node_db

CAMS = [f"10.0.9.{i}" for i in range(1, 27)]
QUEUE_FRAMES = 64  # the node's pipeline bound in this module (ingest_queue_frames)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    settings = {"window_ms": 3_600_000, "store_fsync": "file", "ingest_queue_frames": QUEUE_FRAMES,
                "ingest_inflight_per_connection": 8, "ingest_verify_workers": 1}
    c = Cluster(tmp_path_factory.mktemp("throughput"), settings=settings)
    try:
        c.start_chain()
        c.keys_by_ip = {ip: c.register_camera(ip, 1, b"g") for ip in CAMS}
        c.seal_genesis()
        c.configure_nodes()
        c.start_node(c.nodes[0])  # one node: the others stay down (nothing here needs them)
        yield c
    finally:
        c.stop()


def _frames(key, ip: str, first: int, count: int, size: int = 6000) -> list[bytes]:
    t0 = int(time.time() * 1000) - 60_000
    return [pk.encode_packet(key, ip, s, t0 + 40 * s, s % 25 == 0, hashlib.sha256(f"{ip}/{s}".encode()).digest() * (size // 32))
            for s in range(first, first + count)]


class _Camera(threading.Thread):
    """Sends its frames as fast as the node reads them, and keeps the highest acknowledgement."""

    def __init__(self, node, key, ip: str, frames: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.client = IngestClient(node.ingest)
        self.client.hello(key, ip)
        self.frames = frames
        self.acked = -1
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for raw in self.frames:
                self.client.send(raw)
                self._drain()
            deadline = time.monotonic() + 60
            last = pk.decode_packet(self.frames[-1]).seq
            while self.acked < last and time.monotonic() < deadline:
                msg = self.client.recv(timeout=max(0.01, deadline - time.monotonic()))
                if msg is None:
                    return
                if msg["type"] == "ack":
                    self.acked = max(self.acked, msg["upTo"])
        except (OSError, AssertionError) as exc:  # the node was killed: the acknowledgements so far stand
            self.error = exc

    def _drain(self) -> None:
        sock = self.client.sock
        sock.setblocking(False)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                for body in self.client.msgs.feed(chunk):
                    msg = wire.parse_node_message(body)
                    if msg["type"] == "ack":
                        self.acked = max(self.acked, msg["upTo"])
        except (BlockingIOError, socket.timeout):
            pass
        finally:
            sock.setblocking(True)


def _held(data_dir: Path, ip: str) -> dict[int, bytes]:
    with node_db(data_dir) as db:
        return {r[0]: bytes(r[1]) for r in db.execute("SELECT seq, sha256 FROM frames WHERE camera_id=?", (camera_id(ip),))}


def _status(cluster) -> dict:
    return cluster.api(cluster.nodes[0], "/api/v1/status")


def test_a_flood_from_many_cameras_is_slowed_not_dropped_and_the_pipeline_stays_bounded(cluster):
    node = cluster.nodes[0]
    cams = CAMS[:16]
    per_camera = 150
    threads = [_Camera(node, cluster.keys_by_ip[ip], ip, _frames(cluster.keys_by_ip[ip], ip, 0, per_camera)) for ip in cams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    pipeline = _status(cluster)["ingest"]["pipeline"]
    print(f"\nflood: {len(cams)} cameras x {per_camera} frames; pipeline {pipeline}")
    assert [t.acked for t in threads] == [per_camera - 1] * len(cams)  # every frame acknowledged
    for ip in cams:
        assert set(_held(node.config.data_dir, ip)) == set(range(per_camera))  # and held: nothing dropped
    assert pipeline["highWater"] <= QUEUE_FRAMES and pipeline["frames"] == 0  # bounded, and drained


def test_verification_in_a_worker_process_refuses_as_before(cluster):
    node = cluster.nodes[0]
    ip = CAMS[16]
    key = cluster.keys_by_ip[ip]
    before = _status(cluster)["counters"].get(ip, {})
    c = IngestClient(node.ingest)
    c.hello(key, ip)
    good = _frames(key, ip, 0, 3)
    c.send(good[0])
    # a payload that does not match its digest: counted as integrity, the connection stays open
    bad_digest = bytearray(good[1])
    bad_digest[-1] ^= 0xFF
    c.send(bytes(bad_digest))
    c.send(good[2])
    assert c.wait_ack(0)["upTo"] == 0
    deadline = time.monotonic() + 10
    while 2 not in _held(node.config.data_dir, ip) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(_held(node.config.data_dir, ip)) == {0, 2}
    workers = [p for p in Path(f"/proc/{node.process.pid}/task").glob("*/children")
               for c in p.read_text().split() if "multiprocessing" in Path(f"/proc/{c}/cmdline").read_text()]
    assert workers, "the node verifies in a worker process (ingest_verify_workers = 1)"
    # a frame whose device signature does not verify: refused by name, connection closed
    forged = bytearray(good[1])
    sig_at = 6 + len(ip) + 8 + 8 + 4 + 32
    forged[sig_at] ^= 0x01
    c.send(bytes(forged))
    msgs = c.until_closed()
    assert msgs[-1]["type"] == "reject" and msgs[-1]["reason"] == "bad-signature" and msgs[-1]["seq"] == 1, msgs
    assert 1 not in _held(node.config.data_dir, ip)
    counters = _status(cluster)["counters"][ip]
    assert counters.get("rejected_integrity", 0) - before.get("rejected_integrity", 0) == 1
    assert counters.get("rejected_security", 0) - before.get("rejected_security", 0) == 1


def test_counters_are_right_after_the_flush_of_a_clean_stop(cluster):
    node = cluster.nodes[0]
    ip = CAMS[17]
    key = cluster.keys_by_ip[ip]
    frames = _frames(key, ip, 0, 40)
    c = IngestClient(node.ingest)
    c.hello(key, ip)
    for raw in frames + frames[:5]:  # 40 frames, then 5 of them again
        c.send(raw)
    c.wait_ack(39)
    deadline = time.monotonic() + 10
    while _status(cluster)["counters"].get(ip, {}).get("duplicates", 0) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    c.close()
    cluster.kill_node(node, hard=False)  # SIGTERM: the node flushes what it counted in memory
    with node_db(node.config.data_dir) as db:
        counters = dict(db.execute("SELECT name, value FROM counters WHERE camera=?", (ip,)))
    cluster.start_node(node)
    assert counters.get("received") == 40 and counters.get("duplicates") == 5, counters
    assert _status(cluster)["counters"][ip]["received"] == 40


def test_kill_9_under_load_loses_no_acknowledged_frame_nor_its_bytes(cluster):
    """Group commit: an acknowledgement covers only frames whose batch was fsynced (bytes, then
    row). Killed while eight cameras flood it, the node holds, after the kill and again after its
    restart, every frame it ever acknowledged, each with its bytes in the store."""
    node = cluster.nodes[0]
    cams = CAMS[18:26]
    first = 0
    threads = [_Camera(node, cluster.keys_by_ip[ip], ip, _frames(cluster.keys_by_ip[ip], ip, first, 2000)) for ip in cams]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while sum(max(0, t.acked - first + 1) for t in threads) < 400 and time.monotonic() < deadline:
        time.sleep(0.01)
    cluster.kill_node(node, hard=True)  # SIGKILL while frames are in flight
    for t in threads:
        t.join(30)
    acked = {ip: t.acked for ip, t in zip(cams, threads)}
    assert sum(max(0, a - first + 1) for a in acked.values()) >= 400
    assert any(t.acked < first + 1999 for t in threads)  # killed mid-flood, not after it

    def check() -> None:
        store = LocalStore(node.config.data_dir / "store", fsync="none")
        try:
            for ip, upto in acked.items():
                held = _held(node.config.data_dir, ip)
                assert set(range(first, upto + 1)) <= set(held), f"{ip} lost acknowledged frames"
                for seq in range(first, upto + 1):
                    assert hashlib.sha256(store.get(cid_from_digest(held[seq]))).digest() == held[seq]
        finally:
            store.close()

    check()
    cluster.start_node(node)
    check()
