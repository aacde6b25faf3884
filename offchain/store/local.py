"""A content store in a local directory: the reference backend.

Layout::

    ROOT/
      frameledger-store.json     layout marker (version, sharding), written once
      blocks/ab/cd/abcd...ef     one file per block, named by the hex SHA-256 digest
      tmp/                       in-flight writes, renamed into blocks/ when complete

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
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Literal

from ..core.cid import cid_from_digest, digest_from_cid
from .base import BlockNotFound, BlockStat, CorruptBlock, StoreFull, StoreHelpers, StoreUnavailable

__all__ = ["LocalStore"]

FsyncPolicy = Literal["full", "file", "none"]
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_MARKER = "frameledger-store.json"
_LAYOUT = {"format": "frameledger.localstore/1", "hash": "sha2-256", "shard": "hex[0:2]/hex[2:4]"}
_STALE_TMP_SECONDS = 24 * 3600


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
        try:
            self._blocks.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(exist_ok=True)
            self._check_marker()
        except OSError as e:
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
            tmp = self._tmp / f"marker.{secrets.token_hex(8)}"
            tmp.write_text(json.dumps(_LAYOUT, indent=2) + "\n")
            os.replace(tmp, marker)
            return
        except ValueError as e:
            raise StoreUnavailable(f"{marker} is not valid JSON: {e}") from e
        if found != _LAYOUT:
            raise StoreUnavailable(f"{self.root} holds a store of another layout: {found}")

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
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
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

    def get(self, cid: str) -> bytes:
        digest = digest_from_cid(cid)
        path = self._path(digest)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise BlockNotFound(cid) from None
        except OSError as e:
            raise self._map_oserror(e, f"cannot read block {cid}") from e
        actual = hashlib.sha256(data).digest()
        if actual != digest:
            raise CorruptBlock(cid, actual, detail=str(path))
        return data

    def has(self, cid: str) -> bool:
        return self._path(digest_from_cid(cid)).is_file()

    def stat(self, cid: str) -> BlockStat:
        digest = digest_from_cid(cid)
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
        try:
            os.unlink(self._path(digest_from_cid(cid)))
            return True
        except FileNotFoundError:
            return False
