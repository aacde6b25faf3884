"""Content-addressed storage for frames and manifests, behind one interface.

``ContentStore`` is the Protocol; ``LocalStore`` (a sharded directory) and ``KuboStore`` (an IPFS
node's Kubo RPC API: Kubo, js-ipfs or IPFS Cluster) implement it, and ``open_store`` picks one
from a URL-ish string so configuration stays a single setting. ``DevIpfsDaemon`` (in
``offchain.store.devipfs``) is deliberately not imported here: it shells out to npm and is only
for tests and demos.
"""

from __future__ import annotations

import os

from ..core.cid import InvalidCid, cid_for_bytes, cid_from_digest, digest_from_cid
from .base import (
    BlockNotFound,
    BlockStat,
    BlockTooLarge,
    ContentStore,
    CorruptBlock,
    StoreError,
    StoreFull,
    StoreUnavailable,
)
from .kubo import KuboStore
from .local import LocalStore

__all__ = [
    "ContentStore",
    "LocalStore",
    "KuboStore",
    "open_store",
    "BlockStat",
    "StoreError",
    "BlockNotFound",
    "StoreUnavailable",
    "StoreFull",
    "CorruptBlock",
    "BlockTooLarge",
    "InvalidCid",
    "cid_for_bytes",
    "cid_from_digest",
    "digest_from_cid",
]


def open_store(spec: str | os.PathLike, **kwargs) -> ContentStore:
    """``http(s)://host:port`` or a multiaddr ``/ip4/.../tcp/...`` -> :class:`KuboStore`;
    ``file:///path`` or a plain path -> :class:`LocalStore`. Keyword arguments go to the backend."""
    s = os.fspath(spec)
    if s.startswith(("http://", "https://", "/ip4/", "/ip6/", "/dns/", "/dns4/", "/dns6/")):
        return KuboStore(s, **kwargs)
    if s.startswith("file://"):
        s = s[len("file://"):]
    return LocalStore(s, **kwargs)
