"""A full disk and a read-only data directory (issue 8, item 9): a real node process whose data
directory is a small tmpfs the test mounts, a real camera handshake, acknowledgements.

The node must say so clearly (the camera is refused with `storage-unavailable`, `/api/v1/status`
shows the fault), stop taking frames without half-writing any, keep every frame it acknowledged,
and resume by itself once the disk has room or is writable again.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from cluster_fixtures import one_camera_cluster
from ingest_client import IngestClient

from offchain.core import packet as pk
from offchain.node.storage_guard import RETRY_S

pytestmark = pytest.mark.slow

CAMERA = "10.9.3.1"
FRAME_BYTES = 60_000


def _mount(where: Path, *options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=3m", *options)), "tmpfs", str(where)],
                   check=True, capture_output=True)


def _remount(where: Path, option: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{option}", str(where)], check=True, capture_output=True)


@pytest.fixture
def small_disk_node(tmp_path):
    """node-bank alone, its data directory on a 3 MiB tmpfs, its frame store on a tmpfs of its own
    (a mount with files open for writing, like the SQLite database, cannot be remounted read-only;
    the store's writes are transient, so its mount can)."""
    data = tmp_path / "nodes" / "node-bank"
    data.mkdir(parents=True)
    try:
        _mount(data)
        (data / "store").mkdir()
        _mount(data / "store")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)
        pytest.skip(f"mounting a small tmpfs needs CAP_SYS_ADMIN here: {exc}")
    try:
        with one_camera_cluster(tmp_path, CAMERA, owner=1, settings={"store_fsync": "file"},
                                start=("node-bank",)) as (cluster, key):
            yield cluster, cluster.node("node-bank"), key, data
    finally:
        subprocess.run(["umount", "-l", str(data / "store")], capture_output=True)
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def _stream(bank, key, seqs, t0) -> tuple[int | None, list[dict]]:
    """Send frames; return the highest contiguous acknowledged seq and every node message."""
    c = IngestClient(bank.ingest)
    c.hello(key, CAMERA)
    for seq in seqs:
        try:
            c.send(pk.encode_packet(key, CAMERA, seq, t0 + 40 * seq, seq == 0, bytes([seq % 251]) * FRAME_BYTES))
        except (BrokenPipeError, ConnectionResetError):
            break
    try:
        c.until_closed(timeout=20)  # every message lands in c.received
    except TimeoutError:
        pass
    c.close()
    acked = [m["upTo"] for m in c.received if m.get("type") == "ack" and isinstance(m.get("upTo"), int)]
    return (max(acked) if acked else None), c.received


def _held(cluster, bank) -> list[int]:
    return sorted(f["seq"] for f in cluster.api(bank, f"/api/v1/frames/{CAMERA}"))


def test_full_disk_and_read_only_directory_pause_ingest_and_keep_what_was_acknowledged(small_disk_node):
    cluster, bank, key, data = small_disk_node
    t0 = int(time.time() * 1000) - 60_000
    # 1. fill the disk: the node refuses with a reason, keeps running, holds what it acknowledged
    acked, msgs = _stream(bank, key, range(0, 120), t0)
    rejects = [m for m in msgs if m.get("type") == "reject"]
    assert rejects and rejects[-1]["reason"] == "storage-unavailable", msgs[-3:]
    assert acked is not None and acked < 119
    assert bank.process.poll() is None and cluster.api(bank, "/health")["ok"]
    status = cluster.api(bank, "/api/v1/status")["storage"]
    assert not status["ok"] and status["fault"] == "full", status
    held = _held(cluster, bank)
    assert set(range(acked + 1)) <= set(held)  # nothing acknowledged is lost

    # 2. room again (the disk grows): after the pause the node resumes by itself
    _remount(data, "size=64m")
    _remount(data / "store", "size=64m")
    time.sleep(RETRY_S + 0.5)
    # (frames made durable while the refusal was on its way are held: start after the last one)
    nxt = max(held) + 1
    acked2, _ = _stream(bank, key, range(acked + 1, nxt + 10), t0)
    assert acked2 == nxt + 9
    assert cluster.api(bank, "/api/v1/status")["storage"]["ok"], cluster.api(bank, "/api/v1/status")["storage"]

    # 3. the frame store turns read-only: refused again, named as such
    _remount(data / "store", "ro")
    acked3, msgs = _stream(bank, key, range(acked2 + 1, acked2 + 6), t0)
    assert [m["reason"] for m in msgs if m.get("type") == "reject"][-1:] == ["storage-unavailable"]
    assert acked3 in (None, acked2)
    status = cluster.api(bank, "/api/v1/status")["storage"]
    assert status["fault"] in ("read-only", "unavailable") and not status["ok"], status

    # 4. writable again, node restarted: the state is intact and holds every acknowledged frame
    _remount(data / "store", "rw")
    cluster.kill_node(bank, hard=False)
    with sqlite3.connect(data / "node.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cluster.start_node(bank)
    assert set(range(acked2 + 1)) <= set(_held(cluster, bank))


def test_faults_are_told_apart_by_errno_not_by_words_in_paths():
    import errno

    from offchain.node.storage_guard import StorageFault, classify
    from offchain.store.base import StoreFull, StoreUnavailable

    def chained(outer: Exception, code: int) -> Exception:
        try:
            try:
                raise OSError(code, os_strerror(code), "/data/test_full_disk/readonly/x")
            except OSError as e:
                raise outer from e
        except Exception as exc:  # noqa: BLE001
            return exc

    def os_strerror(code: int) -> str:
        import os
        return os.strerror(code)

    assert classify(chained(StoreUnavailable("cannot store block at /x/test_full_disk"), errno.EROFS)) is StorageFault.READ_ONLY
    assert classify(chained(StoreUnavailable("cannot store /readonly/x"), errno.ENOSPC)) is StorageFault.FULL
    assert classify(StoreFull("cannot store block: No space left on device")) is StorageFault.FULL
    assert classify(sqlite3.OperationalError("database or disk is full")) is StorageFault.FULL
    assert classify(sqlite3.OperationalError("attempt to write a readonly database")) is StorageFault.READ_ONLY
    assert classify(sqlite3.OperationalError("disk I/O error at /full/readonly")) is StorageFault.UNAVAILABLE
