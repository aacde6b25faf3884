"""A content store in a local directory: the reference backend.

Layout::

    ROOT/
      frameledger-store.json     layout marker (version, sharding), written once
      blocks/ab/cd/abcd...ef     one file per block, named by the hex SHA-256 digest
      tmp/                       in-flight writes, renamed into blocks/ when complete
      packs/<pid>-<rand>.pack    append-only segments written by ``put_many`` (group commit)
      packs.sqlite               index of the packs: digest -> (pack, offset, length)

Why this shape:

* **Sharded by digest** (two levels of two hex characters, 65,536 directories) so directories stay
  small at tens of millions of frames, and named by digest rather than CID string so every CID
  spelling of a block maps to one file.
* **Atomic writes**: bytes go to a temp file in ``ROOT/tmp`` (same filesystem), are flushed, then
  ``os.replace``-d into place. A reader sees either no file or the complete block, never a torn
  one, even if the process dies mid-write.
* **fsync policy** is explicit because it is the whole cost/safety trade-off: ``"full"`` (default)
  fsyncs the file before the rename and the shard directory after it, so an acknowledged put
  survives power loss; ``"file"`` skips the directory fsync; ``"none"`` leaves it to the OS page
  cache (fine for tests and caches, not for evidence).
* **Verify on read**: every ``get`` rehashes the bytes, so bit rot or a file edited from outside
  surfaces as :class:`CorruptBlock` instead of silently wrong evidence.
* **Idempotent put**: an existing, intact file is left alone; an existing *corrupt* file is
  replaced, so re-putting the original bytes repairs a damaged block.
* **Packs for throughput** (issue 9): ``put_many`` appends every block of a batch to this
  writer's pack segment in one write and makes it durable with **one** fsync for the whole batch
  (a file per frame cost a create, a rename and an fsync each: 54% of a node's ingest CPU). Each
  record is self-describing (``FLB1 | digest 32 | length u32 | bytes``); the index row is written
  only after the fsync, so an indexed block is always durable. A writer killed between the two
  leaves an unindexed tail, which the next open re-indexes after checking each record's digest
  (a torn last record is ignored). ``get`` looks in the index, then in ``blocks/``; both verify.
  A segment is closed at ``PACK_MAX_BYTES`` and a new one begun; one writer process never appends
  to another's segment, so several processes may share the store.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import sqlite3
import struct
import threading
import time
from array import array
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Literal, Sequence

from ..core.cid import cid_from_digest, digest_from_cid
from ..core.gather import locate_records
from .base import BlockNotFound, BlockStat, CorruptBlock, StoreFull, StoreHelpers, StoreUnavailable

__all__ = ["LocalStore", "LocatedFrames", "PlacedWindow"]

FsyncPolicy = Literal["full", "file", "none"]
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_MARKER = "frameledger-store.json"
_LAYOUT = {"format": "frameledger.localstore/2", "hash": "sha2-256", "shard": "hex[0:2]/hex[2:4]",
           "packs": "packs/*.pack + packs.sqlite"}
_LAYOUT_V1 = {"format": "frameledger.localstore/1", "hash": "sha2-256", "shard": "hex[0:2]/hex[2:4]"}
_RECORD = struct.Struct(">4s32sI")  # magic, digest, length; then the bytes
_RECORD_MAGIC = b"FLB1"
PACK_MAX_BYTES = 1 << 30  # a segment is closed (a new one begun) past this size
_INDEX_SCHEMA = ("CREATE TABLE IF NOT EXISTS packed (digest BLOB PRIMARY KEY, pack TEXT NOT NULL, "
                 "offset INTEGER NOT NULL, length INTEGER NOT NULL) WITHOUT ROWID")
# Packed blocks `delete` took out of the index (their bytes stay in the segment): while any is
# listed, bulk reads find records by the index only, never by chasing record headers.
_FORGOTTEN_SCHEMA = "CREATE TABLE IF NOT EXISTS forgotten (digest BLOB PRIMARY KEY) WITHOUT ROWID"
_STALE_TMP_SECONDS = 24 * 3600
_INDEX_MMAP_BYTES = 256 << 20  # the read-only index connection's memory map (SQLite caps it at the file size)
_INDEX_CACHE_KIB = 32 << 10  # and its page cache
_SQLITE_READONLY_ROLLBACK = 776  # sqlite3.h: SQLITE_READONLY | (3 << 8)


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a write may be partial)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class LocalStore(StoreHelpers):
    """Content store in ``root_dir`` (created if missing). Safe for concurrent writers in one or
    several processes: two writers of the same block both rename a complete file into place."""

    def __init__(self, root_dir: str | os.PathLike, fsync: FsyncPolicy = "full"):
        if fsync not in ("full", "file", "none"):
            raise ValueError(f"fsync must be 'full', 'file' or 'none', not {fsync!r}")
        self.root = Path(root_dir)
        self.fsync = fsync
        self._blocks = self.root / "blocks"
        self._tmp = self.root / "tmp"
        self._packs = self.root / "packs"
        self._lock = threading.Lock()  # the index connection and this writer's segment
        self._pack_name = ""  # this writer's current segment ("" until its first batch)
        self._pack_size = 0
        try:
            self._blocks.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(exist_ok=True)
            self._packs.mkdir(exist_ok=True)
            self._check_marker()
            self._index_path = self.root / "packs.sqlite"
            self._reader: sqlite3.Connection | None = None
            try:
                self._recover()
            except sqlite3.DatabaseError:
                # the index is only a cache of the packs: a damaged one is rebuilt from them
                os.replace(self._index_path, self._index_path.with_suffix(f".damaged-{int(time.time())}"))
                self._recover()
        except (OSError, sqlite3.Error) as e:
            if isinstance(e, sqlite3.Error):
                raise StoreUnavailable(f"cannot open the pack index of {self.root}: {e}") from e
            raise self._map_oserror(e, f"cannot open store at {self.root}") from e
        self._sweep_stale_tmp()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r}, fsync={self.fsync!r})"

    # ------------------------------------------------------------------ paths and helpers

    def _check_marker(self) -> None:
        """Write the layout marker on first use; refuse a directory laid out differently, so a
        future layout change can never be misread as 'every block is missing'."""
        marker = self.root / _MARKER
        try:
            found = json.loads(marker.read_text())
        except FileNotFoundError:
            found = _LAYOUT_V1  # a fresh store: written below
        except ValueError as e:
            raise StoreUnavailable(f"{marker} is not valid JSON: {e}") from e
        if found == _LAYOUT_V1:
            # Version 1 is version 2 without packs: upgraded in place, so code that knows only
            # version 1 refuses the store instead of missing every packed block.
            tmp = self._tmp / f"marker.{secrets.token_hex(8)}"
            tmp.write_text(json.dumps(_LAYOUT, indent=2) + "\n")
            os.replace(tmp, marker)
            return
        if found != _LAYOUT:
            raise StoreUnavailable(f"{self.root} holds a store of another layout: {found}")

    def _open_writer(self) -> sqlite3.Connection:
        """The index, opened for one write and closed after it. Nothing in the store stays open
        for writing between batches (so its filesystem can be remounted read-only, as an
        operator may, and as tests/integration/test_storage_faults.py does). Rollback journal,
        no fsync: the packs are the truth, and `_recover` rebuilds what the index lost."""
        db = sqlite3.connect(self._index_path, isolation_level=None, check_same_thread=False, timeout=30.0)
        try:
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA synchronous=OFF")
            db.execute(_INDEX_SCHEMA)
            db.execute(_FORGOTTEN_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _read(self, sql: str, args: tuple | list) -> list[tuple]:
        """A query on the read-only index connection (opened O_RDONLY; kept).

        A writer in another process killed inside its index transaction leaves a hot journal,
        which a read-only connection cannot roll back (SQLITE_READONLY_ROLLBACK, worded
        "attempt to write a readonly database"): mistaken for a read-only disk, it would pause
        ingest for good. A writer connection rolls the journal back, then the read is retried.
        """
        if self._reader is None:
            self._reader = sqlite3.connect(f"file:{self._index_path}?mode=ro", uri=True, isolation_level=None,
                                           check_same_thread=False, timeout=30.0)
            # Bulk reads look up thousands of random digests: index pages through a memory map
            # and a larger page cache, not a pread per page (measured: a third of the lookups' time).
            self._reader.execute(f"PRAGMA mmap_size={_INDEX_MMAP_BYTES}")
            self._reader.execute(f"PRAGMA cache_size=-{_INDEX_CACHE_KIB}")
        try:
            return self._reader.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if getattr(e, "sqlite_errorcode", None) != _SQLITE_READONLY_ROLLBACK:
                raise
        self._roll_back_hot_journal()
        return self._reader.execute(sql, args).fetchall()

    def _roll_back_hot_journal(self) -> None:
        """Any read through a writable connection rolls a hot journal back (SQLite's rule)."""
        db = self._open_writer()
        try:
            db.execute("SELECT 1 FROM packed LIMIT 1").fetchall()
        finally:
            db.close()

    def _recover(self) -> None:
        """Index what a writer appended and fsynced but was killed before indexing: each pack is
        read from the end of its indexed records on; a record counts only if complete and its
        bytes hash to its digest (a torn tail from a crash is skipped, never indexed)."""
        db = self._open_writer()
        try:
            self._recover_into(db)
        finally:
            db.close()

    def _recover_into(self, db: sqlite3.Connection) -> None:
        ends = dict(db.execute("SELECT pack, MAX(offset + length) FROM packed GROUP BY pack"))
        for entry in os.scandir(self._packs):
            if not entry.name.endswith(".pack"):
                continue
            pos = ends.get(entry.name, 0)
            rows = []
            with open(entry.path, "rb") as f:
                f.seek(pos)
                while True:
                    head = f.read(_RECORD.size)
                    if len(head) < _RECORD.size:
                        break
                    magic, digest, length = _RECORD.unpack(head)
                    data = f.read(length)
                    if magic != _RECORD_MAGIC or len(data) < length or hashlib.sha256(data).digest() != digest:
                        break
                    rows.append((digest, entry.name, pos + _RECORD.size, length))
                    pos += _RECORD.size + length
            if rows:
                db.execute("BEGIN")
                db.executemany("INSERT OR IGNORE INTO packed VALUES (?,?,?,?)", rows)
                db.execute("COMMIT")

    def _sweep_stale_tmp(self) -> None:
        """Remove temp files left by writers that died a day ago or more. Younger ones may belong
        to a live writer in another process, so they are left alone."""
        cutoff = time.time() - _STALE_TMP_SECONDS
        try:
            for entry in os.scandir(self._tmp):
                try:
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                except OSError:
                    pass
        except OSError:
            pass

    def _path(self, digest: bytes) -> Path:
        h = digest.hex()
        return self._blocks / h[0:2] / h[2:4] / h

    def _loose_path(self, digest: bytes) -> str:
        """`_path` as a string, without pathlib per frame (bulk reads and `_read_raw`)."""
        h = digest.hex()
        return f"{self._blocks}/{h[0:2]}/{h[2:4]}/{h}"

    def path_for(self, cid: str) -> Path:
        """Where the block for ``cid`` lives (or would live). For tooling and tests."""
        return self._path(digest_from_cid(cid))

    @staticmethod
    def _map_oserror(e: OSError, what: str) -> Exception:
        if e.errno in _FULL_ERRNOS:
            return StoreFull(f"{what}: {e.strerror}")
        return StoreUnavailable(f"{what}: {e}")

    def _fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ ContentStore

    def put(self, data: bytes) -> str:
        data = bytes(data) if not isinstance(data, bytes) else data
        digest = hashlib.sha256(data).digest()
        cid = cid_from_digest(digest)
        final = self._path(digest)

        # Idempotent fast path: an intact copy is already there.
        try:
            with open(final, "rb") as f:
                if hashlib.sha256(f.read()).digest() == digest:
                    return cid
            # else: corrupt copy on disk; fall through and replace it with the good bytes.
        except FileNotFoundError:
            pass
        except OSError as e:
            raise self._map_oserror(e, f"cannot read {final}") from e

        tmp = self._tmp / f"{digest.hex()[:16]}.{os.getpid()}.{secrets.token_hex(6)}"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                _write_all(fd, data)
                if self.fsync != "none":
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            if self.fsync == "full":
                self._fsync_dir(final.parent)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise self._map_oserror(e, f"cannot store block {cid}") from e
        return cid

    def put_many(self, blocks: Iterable[bytes], digests: Sequence[bytes] | None = None) -> list[str]:
        """Every block of the batch appended to this writer's pack, one fsync for the batch (per
        the fsync policy), then indexed in one transaction: when this returns, every block is
        durable. Blocks already packed (or repeated in the batch) are not written again; one held
        only as a loose file is packed too (reads prefer the packed copy). ``digests``: see
        `ContentStore.put_many` (the node's ingest passes the digests it has just checked)."""
        datas = [bytes(b) if not isinstance(b, bytes) else b for b in blocks]
        if digests is None:
            digests = [hashlib.sha256(d).digest() for d in datas]
        elif len(digests) != len(datas) or any(len(d) != 32 for d in digests):
            raise ValueError("put_many: one 32-byte SHA-256 digest per block")
        digests = list(digests)
        cids = [cid_from_digest(d) for d in digests]
        with self._lock:
            held = self._packed_many(digests)
            todo: dict[bytes, bytes] = {}
            for digest, data in zip(digests, datas):
                if digest not in held and digest not in todo:
                    todo[digest] = data
            if todo:
                self._append(todo)
        return cids

    def _packed_many(self, digests: list[bytes]) -> set[bytes]:
        found: set[bytes] = set()
        for i in range(0, len(digests), 500):
            part = digests[i : i + 500]
            found.update(r[0] for r in self._read(
                f"SELECT digest FROM packed WHERE digest IN ({','.join('?' * len(part))})", part))
        return found

    def _append(self, todo: dict[bytes, bytes]) -> None:
        if not self._pack_name or self._pack_size >= PACK_MAX_BYTES:
            self._new_segment()
        path = self._packs / self._pack_name
        parts: list[bytes] = []
        rows = []
        pos = self._pack_size
        for digest, data in todo.items():
            parts.append(_RECORD.pack(_RECORD_MAGIC, digest, len(data)))
            parts.append(data)
            rows.append((digest, self._pack_name, pos + _RECORD.size, len(data)))
            pos += _RECORD.size + len(data)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                _write_all(fd, b"".join(parts))
                if self.fsync != "none":
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            if self.fsync == "full" and self._pack_size == 0:
                self._fsync_dir(self._packs)
        except OSError as e:
            # The segment may now end in a partial record: the next batch begins a fresh one, so
            # the indexed prefix of every segment stays contiguous (torn bytes are never indexed).
            self._pack_name = ""
            raise self._map_oserror(e, f"cannot append {len(todo)} blocks") from e
        self._pack_size = pos
        try:
            db = self._open_writer()
            try:
                db.execute("BEGIN")
                db.executemany("INSERT OR IGNORE INTO packed VALUES (?,?,?,?)", rows)
                db.execute("COMMIT")
            finally:
                db.close()
        except sqlite3.Error as e:
            self._pack_name = ""  # these records stay unindexed until the next open re-reads them
            if "full" in str(e).lower():
                raise StoreFull(f"cannot index {len(rows)} packed blocks: {e}") from e
            raise StoreUnavailable(f"cannot index {len(rows)} packed blocks: {e}") from e

    def _new_segment(self) -> None:
        self._pack_name = f"{os.getpid()}-{secrets.token_hex(6)}.pack"
        self._pack_size = 0

    def _packed(self, digest: bytes) -> tuple[str, int, int] | None:
        with self._lock:
            rows = self._read("SELECT pack, offset, length FROM packed WHERE digest=?", (digest,))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def get(self, cid: str) -> bytes:
        digest = digest_from_cid(cid)
        data, location = self._read_raw(digest, cid)
        actual = hashlib.sha256(data).digest()
        if actual != digest:
            raise CorruptBlock(cid, actual, detail=location)
        return data

    def read_unverified(self, digest: bytes) -> bytes:
        """The stored bytes for a SHA-256 digest, from a pack or a file, WITHOUT hashing them:
        for a reader that re-hashes every byte itself anyway (evidence extraction's Fetcher), so
        the work is not done twice. Raises BlockNotFound / StoreError like `get`."""
        return self._read_raw(digest, digest.hex())[0]

    def read_many_unverified(self, digests: Iterable[bytes], chunk: int = 500) -> Iterator[bytes | None]:
        """`read_unverified` for many digests, lazily and in order: the bytes held for each, or
        None where this store has no readable copy (the caller then asks the careful way, `get`).
        The records are found and read as `read_many_places` does (a camera's frames chased
        through the pack's record headers, the index asked only where the chase stops; one read
        per window), and each is copied out of the reused window buffer: evidence extraction
        streams a clip's frames through this (docs/EVIDENCE.md, Performance)."""
        todo = digests if isinstance(digests, Sequence) else list(digests)
        for window in self.read_many_places(todo, chunk):
            buffers = window.buffers
            for place in window.places:
                if place is None:
                    yield None
                else:
                    b, offset, length = place
                    yield bytes(buffers[b][offset:offset + length])

    def _pack_places(self, digests: Sequence[bytes]) -> dict[bytes, tuple[str, int, int]]:
        """(pack, offset, length) of each digest the index places, in one query (the bulk reads'
        chunks). An index that cannot be read places nothing: each block then reads as None and
        the caller's careful way (`get`) reports the index's error."""
        try:
            with self._lock:
                rows = self._read(f"SELECT digest, pack, offset, length FROM packed WHERE digest IN "
                                  f"({','.join('?' * len(digests))})", list(digests))
        except sqlite3.Error:
            return {}
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def read_many_places(self, digests: Sequence[bytes], chunk: int = 500) -> Iterator[PlacedWindow]:
        """`read_many_unverified` for a reader that hashes and copies in bulk itself (evidence
        extraction's native gather, `offchain.core.native.gather`): the requests in windows, in
        order, each window the buffers read for it and every request's place in them (None where
        this store has no readable copy). One buffer is reused from window to window (buffer 0: a
        window's views are valid until the next window is asked for); it holds at most
        `_WINDOW_BYTES` of packed records (or one record over that size); each loose file is a
        buffer of its own.

        Records are found two ways. A group commit writes a camera's frames back to back, so
        after a placed record the next request is usually the very next record of that pack:
        `_chased_window` reads the pack onward from there and walks the records' own headers
        (magic, digest, length) while each names the next digest requested, with no index query
        (the index's lookups were half of this reader's time, issue 9). Where the chase stops (a
        record of another digest, another pack, a loose file), the index places the next
        ``chunk`` requests, one query, read as runs of adjacent records (`_read_window`). Either
        way the caller hashes every record's bytes against the digest it asked for, so a header
        that lies costs a fall back to the careful way, never a wrong frame; a record not yet
        indexed (a batch between its write and its index rows) is read like an indexed one. A
        store some packed block was deleted from is read by the index only (`_may_chase`)."""
        packs: dict[str, BinaryIO] = {}
        buf = bytearray(_WINDOW_BUFFER_BYTES)
        chase = self._may_chase()
        at = 0
        next_record: tuple[str, int] | None = None  # (pack, offset of a record header) to chase from
        try:
            while at < len(digests):
                chased = self._chased_window(packs, buf, digests, at, next_record) if next_record else None
                if chased is not None:
                    window, next_record = chased
                    at += len(window.places)
                    yield window
                    continue
                part = digests[at:at + chunk]
                where = self._pack_places(part)
                places = [where.get(d) for d in part]
                for a, b in _byte_windows([p[2] if p else 0 for p in places], _WINDOW_BYTES):
                    window_places = places[a:b]
                    need = sum(p[2] + _RECORD.size for p in window_places if p)
                    if len(buf) < need:  # replaced, never resized: the last window's views may be alive
                        buf = bytearray(max(need, _WINDOW_BUFFER_BYTES))
                    yield self._read_window(packs, buf, part[a:b], window_places)
                at += len(part)
                last = places[-1]
                next_record = (last[0], last[1] + last[2]) if last is not None and chase else None
        finally:
            for fh in packs.values():
                fh.close()

    @contextmanager
    def located(self, digests: bytes, sizes: "array[int]") -> Iterator[LocatedFrames]:
        """Where the frames asked for (``digests``: 32 bytes each, in the order they were stored;
        ``sizes``: array('I') of each one's recorded size) lie in the pack segments, for a reader
        that reads, hashes and copies them itself (`offchain.core.gather.copy_frames`): the index
        places the first frame and every frame where a run of records stops, and the records that
        follow are taken by their headers (`offchain.core.gather.locate_records`, one native call
        per run) while each names the next frame with its size. A frame not found that way (a
        loose file, a record whose header does not match) has fd -1: the caller takes it the
        careful way. The packs stay open until the block ends. Only where `copies_intact`; worth
        it where `frames_per_run` is high (each stop is an index query)."""
        count = len(digests) // 32
        fds, offsets = array("i", [-1]) * count, array("q", [0]) * count
        opened: dict[str, int] = {}
        try:
            at = 0
            with memoryview(digests) as asked, memoryview(sizes) as recorded, memoryview(offsets) as found:
                while at < count:
                    place = self._packed(bytes(asked[32 * at:32 * at + 32]))
                    fd = self._pack_fd(opened, place[0]) if place is not None else None
                    run = locate_records(fd, place[1] - _RECORD.size, asked[32 * at:], recorded[at:], found[at:]) \
                        if fd is not None and place is not None else 0
                    fds[at:at + run] = array("i", [fd or 0]) * run
                    at += max(run, 1)
            yield LocatedFrames(fds=fds, offsets=offsets)
        finally:
            for fd in opened.values():
                os.close(fd)

    def _pack_fd(self, fds: dict[str, int], pack: str) -> int | None:
        if pack not in fds:
            try:
                fds[pack] = os.open(self._packs / pack, os.O_RDONLY)
            except OSError:
                return None
        return fds[pack]

    def copies_intact(self) -> bool:
        """Whether `located` may find records by their headers here (`_may_chase`)."""
        return self._may_chase()

    def frames_per_run(self, digests: Sequence[bytes]) -> float:
        """How many of these frames lie back to back in a pack per run, on average (0.0 where the
        index places none): a camera's frames written by one group commit per camera lie in long
        runs; a node's batches of many cameras interleave them. One index query."""
        where = self._pack_places(list(digests)) if digests else {}
        places = [where.get(d) for d in digests]
        runs, previous = 0, None
        for p in places:
            if p is None:
                previous = None
                continue
            if previous is None or p[0] != previous[0] or p[1] != previous[1] + previous[2] + _RECORD.size:
                runs += 1
            previous = p
        placed = sum(p is not None for p in places)
        return placed / runs if runs else 0.0

    def _may_chase(self) -> bool:
        """Whether bulk reads may find records by their headers: not where `delete` took a packed
        block out of the index (its bytes are still in the segment, where a chase would find
        them), nor where the index cannot say (an older index without the table)."""
        try:
            with self._lock:
                return not self._read("SELECT 1 FROM forgotten LIMIT 1", ())
        except sqlite3.Error:
            return False

    def _chased_window(self, packs: dict[str, BinaryIO], buf: bytearray, digests: Sequence[bytes], at: int,
                       start: tuple[str, int]) -> tuple[PlacedWindow, tuple[str, int]] | None:
        """The requests from ``at`` on that lie back to back in one pack from ``start`` (pack,
        offset of a record header): up to `_WINDOW_BYTES` of the pack read into ``buf`` at once,
        and its records taken while each header is well formed, whole in what was read and names
        the next digest asked for. Returns the window and where the record after its last one
        begins, or None when the first record there is not the next request's."""
        pack, offset = start
        with memoryview(buf) as view:
            got = self._read_span(packs, _PackRun(pack=pack, records=(), start=offset, end=offset + _WINDOW_BYTES),
                                  view[:_WINDOW_BYTES])
        places: list[tuple[int, int, int] | None] = []
        pos, header, unpack, i = 0, _RECORD.size, _RECORD.unpack_from, at
        while i < len(digests) and pos + header <= got:
            magic, digest, length = unpack(buf, pos)
            if magic != _RECORD_MAGIC or digest != digests[i] or pos + header + length > got:
                break
            places.append((0, pos + header, length))
            pos += header + length
            i += 1
        if not places:
            return None
        return PlacedWindow(buffers=[memoryview(buf)[:pos]], places=places), (pack, offset + pos)

    def _read_window(self, packs: dict[str, BinaryIO], buf: bytearray, digests: Sequence[bytes],
                     places: list[tuple[str, int, int] | None]) -> PlacedWindow:
        """One window of `read_many_places`: its pack runs read back to back into ``buf`` (buffer
        0), each loose file whole (a buffer of its own)."""
        found: list[tuple[int, int, int] | None] = [None] * len(places)
        loose: list[bytes] = []
        used = 0
        with memoryview(buf) as view:
            for run in _pack_runs(places):
                if run.pack is None:
                    (i, _, _), = run.records
                    data = self._loose_or_none(digests[i])
                    if data is not None:
                        loose.append(data)
                        found[i] = (len(loose), 0, len(data))
                    continue
                got = self._read_span(packs, run, view[used:used + run.end - run.start])
                for i, offset, length in run.records:
                    a = offset - run.start
                    if a + length <= got:
                        found[i] = (0, used + a, length)
                used += got
        return PlacedWindow(buffers=[memoryview(buf)[:used], *loose], places=found)

    def _read_span(self, packs: dict[str, BinaryIO], run: _PackRun, into: memoryview) -> int:
        """A run's bytes into ``into`` (its length): how many were read (0 if the pack cannot be)."""
        name = run.pack or ""
        got = 0
        try:
            fh = packs.get(name)
            if fh is None:
                fh = packs[name] = open(self._packs / name, "rb", buffering=0)
            fh.seek(run.start)
            while got < len(into):
                n = fh.readinto(into[got:])
                if not n:
                    break
                got += n
        except OSError:
            got = 0
        return got

    def _loose_or_none(self, digest: bytes) -> bytes | None:
        try:
            with open(self._loose_path(digest), "rb") as f:
                return f.read()
        except OSError:
            return None

    def _read_raw(self, digest: bytes, name: str) -> tuple[bytes, str]:
        """The bytes held for a digest and where they were read (for a CorruptBlock's detail);
        `name` labels errors. A packed copy wins over a loose file."""
        where = self._packed(digest)
        if where is not None:
            pack, offset, length = where
            path = self._packs / pack
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    return f.read(length), f"{path}@{offset}"
            except OSError as e:
                raise self._map_oserror(e, f"cannot read block {name} from {pack}") from e
        path_s = self._loose_path(digest)
        try:
            with open(path_s, "rb") as f:
                return f.read(), path_s
        except FileNotFoundError:
            raise BlockNotFound(name) from None
        except OSError as e:
            raise self._map_oserror(e, f"cannot read block {name}") from e

    def has(self, cid: str) -> bool:
        digest = digest_from_cid(cid)
        return self._packed(digest) is not None or self._path(digest).is_file()

    def stat(self, cid: str) -> BlockStat:
        digest = digest_from_cid(cid)
        where = self._packed(digest)
        if where is not None:
            return BlockStat(cid=cid_from_digest(digest), size=where[2])
        try:
            st = os.stat(self._path(digest))
        except FileNotFoundError:
            raise BlockNotFound(cid) from None
        except OSError as e:
            raise self._map_oserror(e, f"cannot stat block {cid}") from e
        return BlockStat(cid=cid_from_digest(digest), size=st.st_size)

    def delete(self, cid: str) -> bool:
        """Remove a block (not part of the Protocol: evidence is normally never deleted; this is
        for retention tooling and tests). Returns whether a block was removed."""
        digest = digest_from_cid(cid)
        with self._lock:  # a packed block leaves the index; its bytes stay in the segment
            db = self._open_writer()
            try:
                unpacked = db.execute("DELETE FROM packed WHERE digest=?", (digest,)).rowcount == 1
                if unpacked:  # its record is still in the segment: no bulk read may chase to it
                    db.execute("INSERT OR IGNORE INTO forgotten (digest) VALUES (?)", (digest,))
            finally:
                db.close()
        try:
            os.unlink(self._path(digest))
            return True
        except FileNotFoundError:
            return unpacked


_SPAN_BYTES = 4 << 20  # one read per run of adjacent pack records, at most this long
# `read_many_places` hands its reader windows of at most this many bytes of records (fewer
# copies in flight than a whole chunk; one index query still serves 500 requests).
_WINDOW_BYTES = 1 << 20
_WINDOW_BUFFER_BYTES = _WINDOW_BYTES + 64 * _RECORD.size  # a window's records and some of their headers


@dataclass(frozen=True)
class LocatedFrames:
    """`LocalStore.located`: each frame's pack (an open descriptor, -1: not found in a pack as
    asked) and its bytes' offset there, in the order asked."""
    fds: "array[int]"
    offsets: "array[int]"


@dataclass(frozen=True)
class PlacedWindow:
    """Some requests of `LocalStore.read_many_places`, in order: the bytes read for them
    (``buffers``) and each request's (buffer index, offset, length) in them, or None."""
    buffers: list[memoryview | bytes]
    places: list[tuple[int, int, int] | None]


def _byte_windows(lengths: list[int], limit: int) -> Iterator[tuple[int, int]]:
    """[a, b) index ranges, in order, each summing to at most ``limit`` (one item may exceed it). Pure."""
    a, total = 0, 0
    for i, n in enumerate(lengths):
        if i > a and total + n > limit:
            yield a, i
            a, total = i, 0
        total += n
    if a < len(lengths):
        yield a, len(lengths)


@dataclass(frozen=True)
class _PackRun:
    """Requested records lying back to back in one pack, each (index in the request, offset,
    length); ``pack`` None: one request the index does not place in a pack (offset, length 0)."""
    pack: str | None
    records: tuple[tuple[int, int, int], ...]
    start: int = 0
    end: int = 0


def _pack_runs(places: list[tuple[str, int, int] | None]) -> Iterator[_PackRun]:
    """Group index places (pack, offset, length), in the order of the pack's bytes, into runs: the
    next record starts right after the previous one's bytes and record header, in the same pack,
    and the run stays under `_SPAN_BYTES`. Pure; records keep their request index."""
    placed = sorted((w[0], w[1], w[2], i) for i, w in enumerate(places) if w is not None)
    for i, w in enumerate(places):
        if w is None:
            yield _PackRun(pack=None, records=((i, 0, 0),))
    k = 0
    while k < len(placed):
        pack, start, length, i = placed[k]
        end, records, k = start + length, [(i, start, length)], k + 1
        while k < len(placed):
            p2, off, n, j = placed[k]
            if p2 != pack or off != end + _RECORD.size or off + n - start > _SPAN_BYTES:
                break
            records.append((j, off, n))
            end = off + n
            k += 1
        yield _PackRun(pack=pack, records=tuple(records), start=start, end=end)
