"""The content-store interface: one Protocol, one error hierarchy, for every backend.

Why one interface: frames and manifests are addressed by the CID of their SHA-256 (see
:mod:`offchain.core.cid`), so the rest of FrameLedger only needs "put bytes, get bytes back by
address". A local sharded directory (tests, a single box, a cache) and an IPFS node speaking the
Kubo RPC API (Kubo, js-ipfs, IPFS Cluster's proxy) then become interchangeable, and one test suite
runs against all of them.

Contract every backend keeps:

* ``put(data)`` returns the canonical CID (v1, raw, sha2-256, base32 ``bafkrei...``) and is
  idempotent: putting the same bytes twice is cheap and returns the same CID.
* ``get(cid)`` returns bytes whose SHA-256 equals the CID's digest, or raises. A backend never
  hands back unverified bytes: mismatch raises :class:`CorruptBlock`.
* CIDs are accepted in any spelling :func:`~offchain.core.cid.digest_from_cid` understands and
  compared by digest, never by string.
* Failures are typed so callers can decide: retry later (:class:`StoreUnavailable`), alert an
  operator (:class:`StoreFull`, :class:`CorruptBlock`), or treat as absent
  (:class:`BlockNotFound`). Malformed CIDs raise :class:`~offchain.core.cid.InvalidCid`
  (a ``ValueError``) before any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence, runtime_checkable

from ..core.cid import InvalidCid

__all__ = [
    "StoreError",
    "BlockNotFound",
    "StoreUnavailable",
    "StoreFull",
    "CorruptBlock",
    "BlockTooLarge",
    "InvalidCid",
    "BlockStat",
    "ContentStore",
    "StoreHelpers",
]


class StoreError(Exception):
    """Base of every store failure, so ``except StoreError`` catches them all."""


class BlockNotFound(StoreError, KeyError):
    """The store does not hold a block with that digest. Also a ``KeyError`` because a store is a
    mapping from address to bytes. ``cid`` is the CID as the caller gave it."""

    def __init__(self, cid: str, detail: str = ""):
        self.cid = cid
        super().__init__(cid)
        self._msg = f"block not found: {cid}" + (f" ({detail})" if detail else "")

    def __str__(self) -> str:  # KeyError would print repr(cid) otherwise
        return self._msg


class StoreUnavailable(StoreError):
    """The backend cannot be reached or answered nonsense (daemon down, connection refused,
    timeout on a request that should be fast, unreadable root). Transient as far as the caller
    knows: retrying later may succeed."""


class StoreFull(StoreError):
    """The backend is out of space (ENOSPC/EDQUOT locally, or the node says so). Not transient:
    retrying without operator action will fail again, and no partial block is left behind."""


class CorruptBlock(StoreError):
    """Bytes read for a CID do not hash to its digest (bit rot, a truncated write from outside
    this code, a misbehaving node). The bytes are never returned to the caller."""

    def __init__(self, cid: str, actual_digest: bytes | None = None, detail: str = ""):
        self.cid = cid
        self.actual_digest = actual_digest
        msg = f"corrupt block {cid}"
        if actual_digest is not None:
            msg += f": content hashes to {actual_digest.hex()}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class BlockTooLarge(StoreError, ValueError):
    """The backend refuses a block this large (Kubo's soft limit is 1 MiB per block, js-ipfs
    rejects an HTTP body over 1 MiB). Callers split such payloads before storing them."""

    def __init__(self, size: int, limit: int | None, detail: str = ""):
        self.size = size
        self.limit = limit
        msg = f"block of {size} bytes is too large"
        if limit is not None:
            msg += f" (limit {limit})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


@dataclass(frozen=True)
class BlockStat:
    """What a store can tell about one block without returning it."""

    cid: str  # canonical form
    size: int


@runtime_checkable
class ContentStore(Protocol):
    """A content-addressed block store. See the module docstring for the contract."""

    def put(self, data: bytes) -> str:
        """Store ``data`` as a raw block; return its canonical CID. Idempotent."""
        ...

    def get(self, cid: str) -> bytes:
        """Return the verified bytes addressed by ``cid``; raise :class:`BlockNotFound` if absent."""
        ...

    def has(self, cid: str) -> bool:
        """Whether the block is present (not verified: use ``get`` for that)."""
        ...

    def stat(self, cid: str) -> BlockStat:
        """Size of a present block; raise :class:`BlockNotFound` if absent."""
        ...

    def put_many(self, blocks: Iterable[bytes], digests: Sequence[bytes] | None = None) -> list[str]:
        """``[put(b) for b in blocks]``; a backend may batch or parallelise it. ``digests``, when
        given, are the blocks' SHA-256 as the caller has just computed them over these very
        bytes; a backend may file the blocks under them instead of hashing again (reads still
        re-hash: a wrong digest shows as a corrupt block, never as another block's bytes)."""
        ...

    def get_many(self, cids: Iterable[str]) -> list[bytes]:
        """``[get(c) for c in cids]`` in order; a backend may batch or parallelise it."""
        ...

    def close(self) -> None:
        """Release connections or handles. Safe to call twice."""
        ...


class StoreHelpers:
    """Default ``put_many``/``get_many``/context-manager plumbing for backends, so each one only
    writes the four primitives and overrides a helper when it can do better."""

    def put_many(self, blocks: Iterable[bytes], digests: Sequence[bytes] | None = None) -> list[str]:
        return [self.put(b) for b in blocks]  # type: ignore[attr-defined]

    def get_many(self, cids: Iterable[str]) -> list[bytes]:
        return [self.get(c) for c in cids]  # type: ignore[attr-defined]

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
