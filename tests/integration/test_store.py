"""One content-store test suite, run against every backend.

``store`` is parametrised over ``LocalStore`` (a temp directory) and ``KuboStore`` talking to a
real js-ipfs daemon (one per module, started by ``DevIpfsDaemon`` on loopback from the npm project
in ``chain/ipfs``), so both backends are held to the same contract. Backend-specific behaviour
(corruption on disk, a full disk, a dead or hanging daemon, the node's error answers) follows in
its own sections. Data is random per test, so tests sharing the one daemon cannot interfere.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from offchain.core.cid import b58encode, cid_for_bytes, cid_from_digest, digest_from_cid
from offchain.store import (
    BlockNotFound,
    BlockTooLarge,
    ContentStore,
    CorruptBlock,
    InvalidCid,
    KuboStore,
    LocalStore,
    StoreError,
    StoreFull,
    StoreUnavailable,
    open_store,
)
from offchain.store.devipfs import DevIpfsDaemon

REPO_ROOT = Path(__file__).resolve().parents[2]
IPFS_PROJECT = REPO_ROOT / "chain" / "ipfs"
LOOKUP_TIMEOUT = 0.5  # how long js-ipfs may look for a missing block; bounds every miss


def _random_cid() -> str:
    return cid_from_digest(os.urandom(32))


def _v0(cid: str) -> str:
    return b58encode(bytes([0x12, 0x20]) + digest_from_cid(cid))


def _z(cid: str) -> str:
    return "z" + b58encode(bytes([0x01, 0x55, 0x12, 0x20]) + digest_from_cid(cid))


@pytest.fixture(scope="module")
def ipfs_daemon():
    with DevIpfsDaemon(project_dir=IPFS_PROJECT) as daemon:
        yield daemon


@pytest.fixture(params=["local", pytest.param("kubo", marks=pytest.mark.slow)])
def store(request, tmp_path):
    if request.param == "local":
        s = LocalStore(tmp_path / "store", fsync="file")
    else:
        daemon = request.getfixturevalue("ipfs_daemon")
        s = daemon.store(lookup_timeout=LOOKUP_TIMEOUT, timeout=30.0)
    yield s
    s.close()


# ============================================================================ shared contract


def test_implements_protocol(store):
    assert isinstance(store, ContentStore)


def test_put_returns_canonical_cid_and_get_returns_bytes(store):
    data = os.urandom(20_000)
    cid = store.put(data)
    assert cid == cid_for_bytes(data)
    assert cid.startswith("bafkrei")
    assert digest_from_cid(cid) == hashlib.sha256(data).digest()
    assert store.get(cid) == data


def test_put_is_idempotent(store):
    data = os.urandom(5_000)
    first = store.put(data)
    second = store.put(data)
    assert first == second
    assert store.get(first) == data
    assert store.stat(first).size == len(data)


def test_any_cid_spelling_addresses_the_same_block(store):
    data = os.urandom(3_000)
    cid = store.put(data)
    for spelling in (cid, cid.upper(), _z(cid), _v0(cid)):
        assert store.get(spelling) == data
        assert store.has(spelling)
        assert store.stat(spelling).cid == cid


def test_has_and_stat(store):
    data = os.urandom(1234)
    cid = cid_for_bytes(data)
    assert not store.has(cid)
    store.put(data)
    assert store.has(cid)
    st = store.stat(cid)
    assert (st.cid, st.size) == (cid, 1234)


def test_missing_block_raises_block_not_found_quickly(store):
    missing = _random_cid()
    t0 = time.monotonic()
    with pytest.raises(BlockNotFound) as exc:
        store.get(missing)
    assert time.monotonic() - t0 < LOOKUP_TIMEOUT + 2.0
    assert exc.value.cid == missing
    assert isinstance(exc.value, KeyError) and isinstance(exc.value, StoreError)
    with pytest.raises(BlockNotFound):
        store.stat(missing)
    assert store.has(missing) is False


@pytest.mark.parametrize("bad", ["", "not-a-cid", "QmShort", "bafkreiaaaa"])
def test_invalid_cid_rejected_before_io(store, bad):
    with pytest.raises(InvalidCid):
        store.get(bad)
    with pytest.raises(InvalidCid):
        store.has(bad)


def test_empty_block(store):
    cid = store.put(b"")
    assert cid == cid_for_bytes(b"")
    assert store.get(cid) == b""


def test_one_megabyte_block(store):
    data = os.urandom(1_000_000)
    cid = store.put(data)
    assert store.get(cid) == data
    assert store.stat(cid).size == 1_000_000


def test_many_small_blocks(store):
    blocks = [os.urandom(100 + i % 4000) for i in range(500)]
    blocks.append(blocks[7])  # a duplicate inside one batch is fine
    cids = store.put_many(blocks)
    assert cids == [cid_for_bytes(b) for b in blocks]
    assert store.get_many(reversed(cids)) == list(reversed(blocks))
    assert all(store.has(c) for c in cids[::50])


def test_get_many_raises_for_a_missing_member(store):
    cids = store.put_many([os.urandom(50) for _ in range(3)])
    with pytest.raises(BlockNotFound):
        store.get_many(cids + [_random_cid()])


def test_bytes_like_input(store):
    data = os.urandom(999)
    assert store.put(bytearray(data)) == store.put(memoryview(data)) == cid_for_bytes(data)


# ============================================================================ LocalStore only


@pytest.fixture
def local(tmp_path):
    return LocalStore(tmp_path / "store")


def test_local_layout_is_sharded_by_digest(local):
    data = b"frame"
    cid = local.put(data)
    h = hashlib.sha256(data).hexdigest()
    path = local.root / "blocks" / h[:2] / h[2:4] / h
    assert path.read_bytes() == data
    assert local.path_for(cid) == path == local.path_for(_v0(cid))
    assert list((local.root / "tmp").iterdir()) == []  # temp file renamed away
    assert json.loads((local.root / "frameledger-store.json").read_text())["hash"] == "sha2-256"


def test_local_detects_corruption_on_disk_and_put_repairs_it(local):
    data = os.urandom(4096)
    cid = local.put(data)
    path = local.path_for(cid)
    damaged = bytearray(data)
    damaged[100] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptBlock) as exc:
        local.get(cid)
    assert exc.value.actual_digest == hashlib.sha256(damaged).digest()
    assert local.put(data) == cid  # re-putting the original bytes replaces the bad copy
    assert local.get(cid) == data


def test_local_detects_truncated_block(local):
    cid = local.put(os.urandom(10_000))
    path = local.path_for(cid)
    path.write_bytes(path.read_bytes()[:5_000])
    with pytest.raises(CorruptBlock):
        local.get(cid)


def test_local_disk_full_raises_store_full_and_leaves_nothing(local, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    data = os.urandom(100)
    with pytest.raises(StoreFull):
        local.put(data)
    monkeypatch.undo()
    assert not local.has(cid_for_bytes(data))
    assert list((local.root / "tmp").iterdir()) == []


def test_local_other_os_errors_are_unavailable(local, monkeypatch):
    def broken(fd, data):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "write", broken)
    with pytest.raises(StoreUnavailable):
        local.put(b"x")


@pytest.mark.parametrize("policy", ["full", "file", "none"])
def test_local_fsync_policies(tmp_path, policy):
    s = LocalStore(tmp_path / policy, fsync=policy)
    cid = s.put(b"durable?")
    assert LocalStore(tmp_path / policy).get(cid) == b"durable?"


def test_local_rejects_unknown_fsync_policy(tmp_path):
    with pytest.raises(ValueError):
        LocalStore(tmp_path, fsync="sometimes")  # type: ignore[arg-type]


def test_local_refuses_a_foreign_layout(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "frameledger-store.json").write_text('{"format": "other/9"}')
    with pytest.raises(StoreUnavailable):
        LocalStore(tmp_path / "s")


def test_local_concurrent_writers_of_the_same_block(local):
    data = os.urandom(50_000)
    errors: list[BaseException] = []

    def writer():
        try:
            for _ in range(20):
                local.put(data)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert local.get(cid_for_bytes(data)) == data


def test_open_store_picks_backend(tmp_path):
    assert isinstance(open_store(tmp_path / "a"), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}/b"), LocalStore)
    k = open_store("/ip4/127.0.0.1/tcp/5001/http")
    assert isinstance(k, KuboStore) and k.api_url == "http://127.0.0.1:5001"
    k.close()
    k = open_store("http://127.0.0.1:5001/api/v0/")
    assert k.api_url == "http://127.0.0.1:5001"
    k.close()


# ============================================================================ KuboStore only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kubo_dead_daemon_is_store_unavailable():
    store = KuboStore(f"http://127.0.0.1:{_free_port()}", timeout=2.0)
    t0 = time.monotonic()
    for op in (lambda: store.put(b"x"), lambda: store.get(_random_cid()), lambda: store.has(_random_cid()),
               lambda: store.stat(_random_cid()), store.version):
        with pytest.raises(StoreUnavailable):
            op()
    assert time.monotonic() - t0 < 5
    store.close()


def test_kubo_hanging_daemon_is_store_unavailable():
    """A node that accepts connections but never answers must not hang the caller."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        store = KuboStore(f"http://127.0.0.1:{port}", timeout=0.5, lookup_timeout=0.1)
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.put(b"x")
        assert time.monotonic() - t0 < 2
        with pytest.raises(StoreUnavailable):  # lookups wait lookup_timeout + 2 s at most
            store.get(_random_cid())
        assert time.monotonic() - t0 < 5
        store.close()


class _TcpRelay:
    """A loopback TCP relay in front of the daemon, so a test can make "the node" vanish under a
    live store (established keep-alive connections included) without killing the shared daemon."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket):
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        try:  # wakes the thread blocked in accept(); close() alone leaves the port listening
            self.server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.server.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


@pytest.mark.slow
def test_kubo_daemon_gone_mid_session(ipfs_daemon):
    """Same store object, node gone between calls: StoreUnavailable quickly, not a hang."""
    relay = _TcpRelay(int(ipfs_daemon.api_url.rsplit(":", 1)[1]))
    store = KuboStore(f"http://127.0.0.1:{relay.port}", timeout=5.0, lookup_timeout=LOOKUP_TIMEOUT)
    try:
        cid = store.put(b"before the node went away " + os.urandom(8))
        assert store.has(cid)
        relay.close()
        t0 = time.monotonic()
        for op in (lambda: store.get(cid), lambda: store.put(b"after"), lambda: store.has(cid)):
            with pytest.raises(StoreUnavailable):
                op()
        assert time.monotonic() - t0 < 5
    finally:
        relay.close()
        store.close()


@pytest.mark.slow
def test_kubo_rejects_oversized_blocks(ipfs_daemon):
    store = ipfs_daemon.store()
    with pytest.raises(BlockTooLarge):  # refused client-side: Kubo's 1 MiB limit
        store.put(b"\0" * (1024 * 1024 + 1))
    store.close()
    store = ipfs_daemon.store(max_block_size=None)
    with pytest.raises(BlockTooLarge):  # refused by js-ipfs: HTTP body over 1 MiB -> 413
        store.put(os.urandom(1024 * 1024))
    store.close()


@pytest.mark.slow
def test_kubo_blocks_are_pinned(ipfs_daemon):
    store = ipfs_daemon.store()
    cid = store.put(os.urandom(64))
    r = httpx.post(f"{ipfs_daemon.api_url}/api/v0/pin/ls", params={"arg": cid, "type": "recursive"}, trust_env=False)
    assert r.status_code == 200
    keys = r.json()["Keys"]
    assert [digest_from_cid(k) for k in keys] == [digest_from_cid(cid)]  # js-ipfs answers zb2...
    store.close()


@pytest.mark.slow
def test_daemon_listens_on_loopback_only(ipfs_daemon):
    assert ipfs_daemon.api_url.startswith("http://127.0.0.1:")
    config = json.loads((ipfs_daemon.repo / "config").read_text())
    addrs = config["Addresses"]
    for a in addrs["Swarm"] + [addrs["API"], addrs["Gateway"], addrs["RPC"]]:
        assert a.startswith("/ip4/127.0.0.1/")
    assert config["Bootstrap"] == [] and addrs["Delegates"] == []
    assert config["Routing"]["Type"] == "none"
    assert ipfs_daemon.running and ipfs_daemon.pid


# ---------------------------------------------------------------------------- faked node answers
# What Kubo or a misbehaving node may answer, which the js-ipfs daemon cannot be made to produce.


class FakeNode:
    def __init__(self):
        self.blocks: dict[bytes, bytes] = {}
        self.requests: list[httpx.Request] = []
        self.override = None  # callable(request) -> Response | None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.override is not None and (resp := self.override(request)) is not None:
            return resp
        path = request.url.path
        q = request.url.params
        if path == "/api/v0/block/put":
            body = request.read()
            data = body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
            d = hashlib.sha256(data).digest()
            self.blocks[d] = data
            # base58btc answer, as js-ipfs gives for some calls: must compare equal by digest
            return httpx.Response(200, json={"Key": "z" + b58encode(bytes([1, 0x55, 0x12, 0x20]) + d), "Size": len(data)})
        if path in ("/api/v0/block/get", "/api/v0/block/stat"):
            d = digest_from_cid(q["arg"])
            if d not in self.blocks:
                msg = "block was not found locally (offline): ipld: could not find " + q["arg"]
                return httpx.Response(500, json={"Message": msg, "Code": 0, "Type": "error"})
            if path.endswith("get"):
                return httpx.Response(200, content=self.blocks[d])
            return httpx.Response(200, json={"Key": _v0(q["arg"]), "Size": len(self.blocks[d])})
        return httpx.Response(404, text="404 page not found")


@pytest.fixture
def fake():
    node = FakeNode()
    store = KuboStore("http://127.0.0.1:5999", transport=httpx.MockTransport(node), lookup_timeout=0.25)
    yield node, store
    store.close()


def test_fake_kubo_request_shapes(fake):
    node, store = fake
    cid = store.put(b"frame")
    assert store.get(cid) == b"frame" and store.stat(cid).size == 5
    put, get, stat = node.requests
    assert put.method == get.method == stat.method == "POST"  # Kubo refuses GET on /api/v0
    p = put.url.params
    assert (p["cid-codec"], p["mhtype"], p["format"], p["pin"]) == ("raw", "sha2-256", "raw", "true")
    assert b'name="file"' in put.read()
    for r in (get, stat):
        assert r.url.params["arg"] == cid
        assert r.url.params["timeout"] == "250ms"  # never a lookup without a timeout
        assert r.url.params["offline"] == "true"


def test_fake_kubo_not_found_message(fake):
    _, store = fake
    with pytest.raises(BlockNotFound):
        store.get(_random_cid())
    assert not store.has(_random_cid())


def test_fake_kubo_returns_wrong_bytes_is_corrupt(fake):
    node, store = fake
    cid = store.put(b"real")
    node.blocks[digest_from_cid(cid)] = b"fake"
    with pytest.raises(CorruptBlock):
        store.get(cid)


def test_fake_kubo_addresses_block_differently_is_corrupt(fake):
    node, store = fake
    node.override = lambda r: httpx.Response(200, json={"Key": _random_cid(), "Size": 4}) if r.url.path.endswith("put") else None
    with pytest.raises(CorruptBlock):
        store.put(b"data")


@pytest.mark.parametrize(
    "status, body, error",
    [
        (500, {"Message": "write /repo/blocks/x: no space left on device", "Code": 0, "Type": "error"}, StoreFull),
        (413, {"Message": "Payload content length greater than maximum allowed: 1048576"}, BlockTooLarge),
        (404, "404 page not found", StoreUnavailable),  # pointed at a gateway, not the RPC API
        (403, "403 - Forbidden", StoreUnavailable),
        (502, "Bad Gateway", StoreUnavailable),
        (500, {"Message": "something odd", "Code": 0, "Type": "error"}, StoreError),
    ],
)
def test_fake_kubo_error_mapping(fake, status, body, error):
    node, store = fake
    make = (lambda r: httpx.Response(status, json=body)) if isinstance(body, dict) else (lambda r: httpx.Response(status, text=body))
    node.override = make
    with pytest.raises(error):
        store.put(b"payload")


# ============================================================================ packs (issue 9)

def test_local_put_many_packs_a_batch_and_reads_it_back(local):
    blocks = [os.urandom(1000 + i) for i in range(50)]
    cids = local.put_many(blocks + blocks[:5])  # repeats inside a batch are written once
    assert cids[:50] == [cid_for_bytes(b) for b in blocks]
    assert not any(local.path_for(c).exists() for c in cids)  # in a segment, not a file each
    packs = list((local.root / "packs").glob("*.pack"))
    assert len(packs) == 1 and packs[0].stat().st_size == sum(40 + len(b) for b in blocks)
    reopened = LocalStore(local.root)
    assert reopened.get_many(cids) == blocks + blocks[:5]
    assert reopened.stat(cids[3]).size == len(blocks[3]) and reopened.has(cids[3])
    assert local.put_many(blocks[:3]) == cids[:3] and packs[0].stat().st_size == sum(40 + len(b) for b in blocks)


def test_local_pack_records_written_but_not_indexed_are_recovered_and_a_torn_tail_is_not(local):
    kept = [os.urandom(3000) for _ in range(4)]
    cids = local.put_many(kept)
    pack = next((local.root / "packs").glob("*.pack"))
    # a writer killed after its fsync but before its index commit: the index lost the last two
    with sqlite3.connect(local.root / "packs.sqlite") as db:
        db.execute("DELETE FROM packed WHERE digest IN (?, ?)", (hashlib.sha256(kept[2]).digest(),
                                                                  hashlib.sha256(kept[3]).digest()))
    # ... and a torn record after them (killed mid-write)
    torn = os.urandom(3000)
    with open(pack, "ab") as f:
        f.write(b"FLB1" + hashlib.sha256(torn).digest() + len(torn).to_bytes(4, "big") + torn[:1000])
    reopened = LocalStore(local.root)
    assert reopened.get_many(cids) == kept
    assert not reopened.has(cid_for_bytes(torn))


def test_local_packed_block_damaged_on_disk_is_corrupt(local):
    data = os.urandom(2000)
    cid = local.put_many([data])[0]
    pack = next((local.root / "packs").glob("*.pack"))
    raw = bytearray(pack.read_bytes())
    raw[100] ^= 0x01
    pack.write_bytes(bytes(raw))
    with pytest.raises(CorruptBlock):
        LocalStore(local.root).get(cid)


def test_evidence_fetcher_reads_packed_and_loose_blocks_and_rehashes_them(local):
    """Extraction reads a plain LocalStore without its own re-hash (`read_unverified`): frames
    the node's ingest wrote into packs must be found, and damage must still show as corrupt."""
    from offchain.evidence.extract import Fetcher

    packed, loose = os.urandom(2000), os.urandom(1500)
    local.put_many([packed])
    local.put(loose)
    fetcher = Fetcher([local])
    assert fetcher.get(hashlib.sha256(packed).digest()).data == packed
    assert fetcher.get(hashlib.sha256(loose).digest()).data == loose
    assert fetcher.get(hashlib.sha256(b"absent").digest()).data is None
    pack = next((local.root / "packs").glob("*.pack"))
    raw = bytearray(pack.read_bytes())
    raw[100] ^= 0x01
    pack.write_bytes(bytes(raw))
    damaged = Fetcher([local]).get(hashlib.sha256(packed).digest())
    assert damaged.data is None and damaged.corrupt


_KILLED_INSIDE_AN_INDEX_TRANSACTION = """
import os, signal, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size=1")  # spill to the file at once, so a hot journal is left behind
db.execute("BEGIN")
db.executemany("INSERT INTO packed VALUES (?, 'x.pack', 0, 1)", [(os.urandom(32),) for _ in range(20000)])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_local_reads_on_after_a_sibling_writer_is_killed_inside_its_index_transaction(local):
    """Seen in CI: an ingest process SIGKILLed mid-index-write left a hot journal; its siblings'
    read-only index connections then failed with SQLITE_READONLY_ROLLBACK ("attempt to write a
    readonly database"), taken for a read-only disk, and ingest paused for good."""
    kept = os.urandom(2000)
    cid = local.put_many([kept])[0]
    assert local.get(cid) == kept  # the kept read-only connection is open
    index = local.root / "packs.sqlite"
    subprocess.run([sys.executable, "-c", _KILLED_INSIDE_AN_INDEX_TRANSACTION, str(index)], check=False)
    assert index.with_name("packs.sqlite-journal").exists(), "the child did not leave a hot journal"
    assert local.get(cid) == kept
    assert not index.with_name("packs.sqlite-journal").exists()
    more = os.urandom(1000)
    assert local.get(local.put_many([more])[0]) == more


def test_local_put_many_files_blocks_under_the_callers_digests_and_reads_still_check_them(local):
    """The node passes the digests its ingest has just checked (no second SHA-256 per frame);
    a wrong one files the bytes under another address, where a read finds them corrupt."""
    a, b = os.urandom(900), os.urandom(700)
    cids = local.put_many([a, b], digests=[hashlib.sha256(a).digest(), hashlib.sha256(b).digest()])
    assert cids == [cid_for_bytes(a), cid_for_bytes(b)] and local.get_many(cids) == [a, b]
    with pytest.raises(ValueError):
        local.put_many([a, b], digests=[hashlib.sha256(a).digest()])
    with pytest.raises(ValueError):
        local.put_many([a], digests=[b"\x00" * 31])
    lie = hashlib.sha256(b"another block").digest()
    wrong = local.put_many([b"not that block"], digests=[lie])[0]
    with pytest.raises(CorruptBlock):
        local.get(wrong)
