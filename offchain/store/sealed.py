"""Session data encrypted at rest (S5, B7): a content store whose session frames rest sealed.

`SealedStore` wraps any `ContentStore` (LocalStore, KuboStore) and keeps its interface: ``get``
of a frame's plaintext CID returns the plaintext, verified against the CID as before. What
differs is what rests in the inner store:

* a frame of a camera of a formed session, captured inside the session's time range, is stored
  as an **envelope** (`offchain.core.envelope`: AES-256-GCM under the node's data key of that
  session), itself an ordinary block whose CID is the hash of the envelope. An IPFS node can
  only address what it stores, so the plaintext CID -> envelope CID mapping lives in a small
  SQLite **index** (``sealed.sqlite``: for a LocalStore in its root, next to ``packs.sqlite``);
* the **key document** (who can unwrap the data key; nothing secret) is a block of the inner
  store too, so the data travels with what opens it;
* everything else (other cameras' frames, frames outside a session's range, manifests) is stored
  as before, in plaintext, through the same ``put_many``: the hot path of a camera in no session
  costs one dictionary lookup per frame.

Who seals: `SessionSealer` (the node's part) learns formed sessions from the chain (a
``SessionSource``, `offchain.chain.session_keys.SessionReader`), makes one data key per session
(``os.urandom``), wraps it to every party (public keys recovered from their on-chain signatures)
and to this node's own account, stores the key document and seals the session's frames from then
on. Who opens: any `Keyring` holding a recipient's private key: the node (its repair and peer
routes read plaintext through this wrapper) or a party extracting evidence
(`open_party_store`). docs/ENCRYPTION.md has the why.

Failures are `StoreError`s: `CannotUnseal` (this keyring is no recipient, or holds no key), and
`CorruptBlock` for an envelope that fails its checks (altered, truncated, moved to another CID).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

from ..core import envelope as env
from ..core.cid import cid_from_digest, digest_from_cid
from .base import BlockNotFound, BlockStat, ContentStore, CorruptBlock, StoreError, StoreHelpers, StoreUnavailable

__all__ = ["SealedStore", "SealIndex", "Keyring", "SessionSealer", "CannotUnseal", "SessionPlan", "open_party_store",
           "INDEX_NAME", "index_path_for"]

log = logging.getLogger(__name__)

INDEX_NAME = "sealed.sqlite"
LOG_SPAN = 10_000  # blocks per eth_getLogs of SessionFormed (Besu and others cap the range)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS sealed (digest BLOB PRIMARY KEY, envelope BLOB NOT NULL, key_id BLOB NOT NULL,"
    " size INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS keys (key_id BLOB PRIMARY KEY, session BLOB NOT NULL, creator TEXT NOT NULL)"
    " WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID",
)


class CannotUnseal(StoreError):
    """The block rests sealed and this keyring cannot open it: no private key, or its account is
    no recipient of the block's key document. ``error`` is the envelope error behind it."""

    def __init__(self, cid: str, error: Exception):
        self.cid = cid
        self.error = error
        super().__init__(f"block {cid} is sealed and cannot be opened here: {type(error).__name__}: {error}")


class SealIndex:
    """plaintext digest -> (envelope digest, key id, plaintext size); the key documents this
    writer made; a checkpoint. One connection, shared by threads under a lock; commits are
    durable (``synchronous=FULL``) before a frame is acknowledged."""

    def __init__(self, path: Path, read_only: bool = False):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if read_only:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                           check_same_thread=False, timeout=30.0)
            else:
                self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                for stmt in _SCHEMA:
                    self._db.execute(stmt)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the seal index {self.path}: {exc}") from exc

    def lookup(self, digest: bytes) -> tuple[bytes, bytes, int] | None:
        with self._lock:
            row = self._db.execute("SELECT envelope, key_id, size FROM sealed WHERE digest=?", (digest,)).fetchone()
        return (bytes(row[0]), bytes(row[1]), int(row[2])) if row else None

    def record(self, rows: Sequence[tuple[bytes, bytes, bytes, int]]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO sealed VALUES (?,?,?,?)", rows)
            self._db.execute("COMMIT")

    def add_key(self, key_id: bytes, session: bytes, creator: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO keys VALUES (?,?,?)", (key_id, session, creator))

    def keys_of(self, creator: str) -> list[tuple[bytes, bytes]]:
        with self._lock:
            rows = self._db.execute("SELECT key_id, session FROM keys WHERE creator=?", (creator,)).fetchall()
        return [(bytes(r[0]), bytes(r[1])) for r in rows]

    def get_meta(self, k: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, k: str, v: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (k, v))

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM sealed").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Keyring:
    """Opens key documents with one account's private key (or none: then nothing sealed opens),
    keeping the data keys it unwrapped in memory, never on disk."""

    def __init__(self, private_key: bytes | None):
        self._private = private_key
        self._keys: dict[bytes, env.DataKey] = {}
        self._lock = threading.Lock()
        self.address = env.address_of(env.public_key_of(private_key)) if private_key else None

    def key(self, key_id: bytes, inner: ContentStore) -> env.DataKey:
        """The data key of key document ``key_id`` (read from ``inner``, digest-checked there)."""
        with self._lock:
            held = self._keys.get(key_id)
        if held is not None:
            return held
        if self._private is None:
            raise env.WrongRecipient("this keyring holds no private key")
        doc = env.KeyDoc.decode(inner.get(cid_from_digest(key_id)))
        key = env.open_key_doc(doc, self._private)
        with self._lock:
            self._keys[key_id] = key
        return key

    def hold(self, key: env.DataKey) -> None:
        with self._lock:
            self._keys[key.key_id] = key


@dataclass(frozen=True)
class SessionPlan:
    """Frames of ``camera`` captured in [start_ms, end_ms) are sealed under ``key``."""

    camera: bytes
    start_ms: int
    end_ms: int
    key: env.DataKey


class SealedStore(StoreHelpers):
    """A `ContentStore` over ``inner`` whose session frames rest sealed (module docstring)."""

    def __init__(self, inner: ContentStore, index: SealIndex, keyring: Keyring,
                 plan: Callable[[bytes, int], env.DataKey | None] | None = None):
        self.inner = inner
        self.index = index
        self.keyring = keyring
        self._plan = plan or (lambda cam, ts: None)
        self.sealed_frames = 0

    def __repr__(self) -> str:
        return f"SealedStore({self.inner!r})"

    # writes -------------------------------------------------------------------
    def put(self, data: bytes) -> str:
        return self.inner.put(data)

    def put_many(self, blocks: Iterable[bytes], digests: Sequence[bytes] | None = None) -> list[str]:
        return self.inner.put_many(blocks, digests)

    def put_frames(self, frames: Sequence[tuple[bytes, int, bytes, bytes | None]]) -> list[str]:
        """Store ``(camera, capture ms, payload, its SHA-256 or None)`` frames: sealed when a
        session plan covers them, plain otherwise, in one ``put_many`` of the inner store; the
        index rows of the sealed ones are committed before this returns. Returns the plaintext CIDs."""
        blocks: list[bytes] = []
        sealed_at: list[tuple[int, bytes, bytes, int]] = []  # position, plaintext digest, key id, size
        for cam, ts, payload, digest in frames:
            key = self._plan(cam, ts)
            if key is None:
                blocks.append(payload)
                continue
            digest = digest or hashlib.sha256(payload).digest()
            sealed_at.append((len(blocks), digest, key.key_id, len(payload)))
            blocks.append(env.seal_frame(key, payload, digest))
        cids = self.inner.put_many(blocks)  # an envelope's CID is the hash of the envelope
        if not sealed_at:
            return cids
        rows = [(digest, digest_from_cid(cids[i]), key_id, size) for i, digest, key_id, size in sealed_at]
        try:
            self.index.record(rows)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot record {len(rows)} sealed frames: {exc}") from exc
        self.sealed_frames += len(rows)
        for i, digest, _, _ in sealed_at:
            cids[i] = cid_from_digest(digest)
        return cids

    # reads --------------------------------------------------------------------
    def get(self, cid: str) -> bytes:
        digest = digest_from_cid(cid)
        where = self.index.lookup(digest)
        if where is None:
            return self.inner.get(cid)
        envelope_digest, key_id, _ = where
        try:
            sealed = self.inner.get(cid_from_digest(envelope_digest))
        except BlockNotFound:
            raise BlockNotFound(cid, f"its envelope {cid_from_digest(envelope_digest)} is not in the store") from None
        try:
            key = self.keyring.key(key_id, self.inner)
        except (env.WrongRecipient, env.UnwrapFailed) as exc:
            raise CannotUnseal(cid, exc) from None
        except env.KeyDocMalformed as exc:
            raise CorruptBlock(cid_from_digest(key_id), detail=f"key document: {exc}") from None
        try:
            return env.open_frame(sealed, key, digest)
        except env.SealError as exc:
            raise CorruptBlock(cid, detail=f"{type(exc).__name__}: {exc}") from None

    def has(self, cid: str) -> bool:
        digest = digest_from_cid(cid)
        where = self.index.lookup(digest)
        if where is None:
            return self.inner.has(cid)
        return self.inner.has(cid_from_digest(where[0]))

    def stat(self, cid: str) -> BlockStat:
        digest = digest_from_cid(cid)
        where = self.index.lookup(digest)
        if where is None:
            return self.inner.stat(cid)
        if not self.inner.has(cid_from_digest(where[0])):
            raise BlockNotFound(cid, "its envelope is not in the store")
        return BlockStat(cid=cid_from_digest(digest), size=where[2])

    def close(self) -> None:
        self.inner.close()
        self.index.close()


def open_party_store(inner: ContentStore, index_path: Path, private_key: bytes | None) -> SealedStore:
    """A read-only view of a node's store for a party (or an auditor) holding ``private_key``:
    sealed frames open if that account is a recipient, else `CannotUnseal`."""
    return SealedStore(inner, SealIndex(index_path, read_only=True), Keyring(private_key))


# ------------------------------------------------------------------------ the node's part

class FormedSessionLike(Protocol):
    session_id: bytes
    parties: tuple[str, ...]
    cameras: tuple[bytes, ...]
    start_ms: int
    end_ms: int
    formed_block: int


class SessionSource(Protocol):
    """What the sealer reads from the chain (`offchain.chain.session_keys.SessionReader`)."""

    address: str

    def formed_since(self, from_block: int, to_block: int) -> Sequence[FormedSessionLike]: ...

    def party_keys(self, session_id: bytes, from_block: int = 0) -> dict[str, bytes]: ...


class SessionSealer:
    """Makes and keeps this node's data key of every formed session, and answers, per frame,
    which key (if any) seals it. ``refresh`` runs in a worker thread (chain reads); ``key_for``
    in the group committer's thread, on an immutable snapshot swapped in by ``refresh``."""

    def __init__(self, *, store: ContentStore, index: SealIndex, keyring: Keyring, private_key: bytes,
                 sessions: SessionSource, chain_id: int, from_block: int, latest_block: Callable[[], int],
                 random: Callable[[int], bytes] = os.urandom):
        self.store = store
        self.index = index
        self.keyring = keyring
        self._private = private_key
        self._public = env.public_key_of(private_key)
        self.address = env.address_of(self._public)
        self.sessions = sessions
        self.chain_id = chain_id
        self.from_block = from_block
        self.latest_block = latest_block
        self.random = random
        self._plans: dict[bytes, tuple[SessionPlan, ...]] = {}
        self.failures = 0

    def key_for(self, camera: bytes, ts_ms: int) -> env.DataKey | None:
        for p in self._plans.get(camera, ()):
            if p.start_ms <= ts_ms < p.end_ms:
                return p.key
        return None

    def load(self) -> None:
        """The key documents this node made before a restart, opened with its own key again."""
        for key_id, session in self.index.keys_of(self.address):
            try:
                doc = env.KeyDoc.decode(self.store.get(cid_from_digest(key_id)))
                self._add(doc, env.open_key_doc(doc, self._private))
            except (StoreError, env.SealError) as exc:
                self.failures += 1
                log.error("session key not loaded", extra={"session": "0x" + session.hex(), "error": repr(exc)})

    def refresh(self) -> int:
        """Read sessions formed since the checkpoint; make a key for each new one. Returns how many."""
        start = int(self.index.get_meta("checkpoint") or self.from_block)
        latest = self.latest_block()
        made = 0
        while start <= latest:  # in spans a JSON-RPC node's log-range limit allows
            end = min(latest, start + LOG_SPAN - 1)
            n, checkpoint = self._refresh_span(start, end)
            made += n
            if checkpoint <= end:  # a key not made: read again from its block at the next refresh
                break
            start = end + 1
        return made

    def _refresh_span(self, start: int, end: int) -> tuple[int, int]:
        made = 0
        mine = {s for _, s in self.index.keys_of(self.address)}
        checkpoint = end + 1
        for session in self.sessions.formed_since(start, end):
            if session.session_id in mine:
                continue
            try:
                self._make(session)
                made += 1
            except (StoreError, env.SealError, ValueError) as exc:
                # read again next time from this session's block on; its frames stay plain meanwhile
                self.failures += 1
                checkpoint = min(checkpoint, session.formed_block)
                log.error("session key not made", extra={"session": "0x" + session.session_id.hex(), "error": repr(exc)})
        self.index.set_meta("checkpoint", str(checkpoint))
        return made, checkpoint

    def _make(self, session: FormedSessionLike) -> None:
        recipients = dict(self.sessions.party_keys(session.session_id, self.from_block))
        missing = set(session.parties) - set(recipients)
        if missing:  # a formed session has every acceptance on chain: this is a chain read gone wrong
            raise StoreError(f"session 0x{session.session_id.hex()}: no public key for {sorted(missing)}")
        recipients[self.address] = self._public
        secret = self.random(32)
        doc = env.make_key_doc(secret, recipients, [self._ephemeral() for _ in recipients], chain_id=self.chain_id,
                               contract=self.sessions.address, session_id=session.session_id, creator=self.address,
                               cameras=session.cameras, start_ms=session.start_ms, end_ms=session.end_ms)
        self.store.put(doc.encode())  # durable before the index names it
        self.index.add_key(doc.key_id, session.session_id, self.address)
        self._add(doc, env.DataKey(key_id=doc.key_id, secret=secret))
        log.info("session key made", extra={"session": "0x" + session.session_id.hex(), "key": doc.key_id.hex(),
                                             "recipients": list(doc.recipients), "cameras": len(session.cameras)})

    def _ephemeral(self) -> bytes:
        while True:  # a scalar in [1, n): 32 random bytes are, but for a 2^-128 chance
            k = self.random(32)
            if 0 < int.from_bytes(k, "big") < 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141:
                return k

    def _add(self, doc: env.KeyDoc, key: env.DataKey) -> None:
        self.keyring.hold(key)
        plans = {cam: list(ps) for cam, ps in self._plans.items()}
        for cam in doc.cameras:
            if not any(p.key.key_id == key.key_id for p in plans.get(cam, [])):
                plans.setdefault(cam, []).append(SessionPlan(cam, doc.start_ms, doc.end_ms, key))
        # the earliest session first: a frame in two overlapping sessions is sealed to the first
        self._plans = {cam: tuple(sorted(ps, key=lambda p: (p.start_ms, p.key.key_id))) for cam, ps in plans.items()}

    def snapshot(self) -> dict[str, object]:
        return {"sessions": len(self.index.keys_of(self.address)),
                "cameras": sorted("0x" + c.hex() for c in self._plans), "failures": self.failures}


def index_path_for(store: ContentStore, data_dir: Path) -> Path:
    """Where a node keeps its seal index: in a LocalStore's root (so a copy of the store directory
    is complete), else in the node's data directory."""
    root = getattr(store, "root", None)
    return Path(root) / INDEX_NAME if isinstance(root, Path) else Path(data_dir) / INDEX_NAME
