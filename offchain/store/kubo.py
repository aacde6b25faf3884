"""A content store backed by an IPFS node through the Kubo RPC API (``/api/v0``).

Why plain HTTP with httpx instead of a client library: ``ipfshttpclient`` refuses any daemon
version it does not know (it rejects both js-ipfs 0.18 and current Kubo), and ``aioipfs`` cannot
put raw blocks. The four endpoints used here are small and stable, and speaking them directly
keeps this store working against Kubo, js-ipfs and IPFS Cluster's Kubo-compatible proxy alike.

Endpoints and the reasons for each parameter:

* ``block/put?cid-codec=raw&mhtype=sha2-256&format=raw&pin=true`` (multipart ``file``). Kubo
  reads ``cid-codec``; js-ipfs ignores it and needs the legacy ``format=raw`` (without it, it
  parses the bytes as dag-pb and fails). Kubo accepts both together. ``pin=true`` keeps the block
  safe from the node's garbage collector: evidence must not vanish.
* ``block/get?arg=CID&timeout=...`` and ``block/stat?arg=CID&timeout=...``. Without a timeout a
  missing block makes the node search forever (js-ipfs hangs even when started ``--offline``),
  so every lookup carries ``timeout`` and an expiry is reported as :class:`BlockNotFound`.
  ``offline=true`` (on by default) tells Kubo to answer from its own blockstore only, which turns
  a miss into an immediate "not found"; js-ipfs accepts and ignores it, so there a miss costs
  ``lookup_timeout``.
* Nodes answer CIDs in whatever base they like (js-ipfs ``block/stat`` says ``zb2...``), so
  returned CIDs are compared by decoded digest, and every byte string returned by ``get`` is
  re-hashed before it reaches the caller.

The HTTP client ignores proxy environment variables (``trust_env=False``): the node is on
loopback or a private network, and a corporate ``HTTP_PROXY`` must never see evidence traffic.
"""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Sequence

import httpx

from ..core.cid import cid_from_digest, digest_from_cid
from .base import (
    BlockNotFound,
    BlockStat,
    BlockTooLarge,
    CorruptBlock,
    StoreError,
    StoreFull,
    StoreHelpers,
    StoreUnavailable,
)

__all__ = ["KuboStore", "api_url_from_multiaddr", "KUBO_SOFT_BLOCK_LIMIT"]

KUBO_SOFT_BLOCK_LIMIT = 1024 * 1024
"""Kubo refuses blocks over 1 MiB (they could not be exchanged over bitswap); js-ipfs refuses an
HTTP body over 1 MiB, i.e. a block a few hundred bytes smaller. Larger payloads must be split."""

_NOT_FOUND = re.compile(r"not found|could not find|timed out|deadline exceeded|no such block", re.I)
_FULL = re.compile(r"no space left|disk full|quota exceeded|ENOSPC|EDQUOT", re.I)


def api_url_from_multiaddr(addr: str) -> str:
    """``/ip4/127.0.0.1/tcp/5001[/http]`` (what a node writes to ``$IPFS_PATH/api``) -> URL."""
    parts = addr.strip().strip("/").split("/")
    if len(parts) >= 4 and parts[0] in ("ip4", "ip6", "dns", "dns4", "dns6") and parts[2] == "tcp":
        host = f"[{parts[1]}]" if parts[0] == "ip6" else parts[1]
        scheme = "https" if "https" in parts[4:] else "http"
        return f"{scheme}://{host}:{parts[3]}"
    raise ValueError(f"not a TCP multiaddr: {addr!r}")


def _normalize_api_url(api_url: str) -> str:
    if api_url.startswith("/"):
        api_url = api_url_from_multiaddr(api_url)
    api_url = api_url.rstrip("/")
    if api_url.endswith("/api/v0"):
        api_url = api_url[: -len("/api/v0")]
    return api_url


def _ms(seconds: float) -> str:
    """A duration both Go's time.ParseDuration (Kubo) and parse-duration (js-ipfs) accept."""
    return f"{max(1, int(seconds * 1000))}ms"


class KuboStore(StoreHelpers):
    """Content store on an IPFS node's RPC API.

    ``api_url``: ``http://127.0.0.1:5001`` (a trailing ``/api/v0`` or a multiaddr also work).
    ``timeout``: seconds an HTTP request may take (connect, write a block, read the answer);
    exceeding it means the node is unwell -> :class:`StoreUnavailable`.
    ``lookup_timeout``: seconds the *node* may look for a block before the answer is "not found";
    kept short because blocks of this store are local to the node, and a miss on js-ipfs always
    costs this long.
    ``offline``: ask Kubo not to search the network for misses (see module docstring).
    ``concurrency``: parallel requests used by ``put_many``/``get_many``.
    ``max_block_size``: refuse larger blocks before sending (Kubo's 1 MiB); ``None`` disables.
    ``transport``: an ``httpx`` transport, for tests that fake the node.
    """

    def __init__(
        self,
        api_url: str = "http://127.0.0.1:5001",
        timeout: float = 30.0,
        *,
        lookup_timeout: float = 2.0,
        offline: bool = True,
        pin: bool = True,
        concurrency: int = 4,
        max_block_size: int | None = KUBO_SOFT_BLOCK_LIMIT,
        transport: httpx.BaseTransport | None = None,
        trust_env: bool = False,
    ):
        if lookup_timeout <= 0 or timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.api_url = _normalize_api_url(api_url)
        self.timeout = timeout
        self.lookup_timeout = lookup_timeout
        self.offline = offline
        self.pin = pin
        self.concurrency = max(1, concurrency)
        self.max_block_size = max_block_size
        # The node answers a lookup within lookup_timeout by contract; give that HTTP read a
        # margin over it so a slow "not found" is not misreported as an unavailable node.
        self._lookup_http_timeout = httpx.Timeout(timeout, read=max(timeout, lookup_timeout + 2.0))
        self._client = httpx.Client(
            base_url=self.api_url + "/api/v0/",
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=self.concurrency + 2, max_keepalive_connections=self.concurrency + 2),
            transport=transport,
            trust_env=trust_env,
        )

    def __repr__(self) -> str:
        return f"KuboStore({self.api_url!r})"

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ HTTP plumbing

    def _post(self, endpoint: str, params: dict[str, Any], *, cid: str | None = None,
              files: Any = None, size: int | None = None) -> httpx.Response:
        """POST one RPC call and turn every failure into the store's error types. ``cid`` marks a
        lookup: its "not found" answers become :class:`BlockNotFound`."""
        timeout = self._lookup_http_timeout if cid is not None else httpx.USE_CLIENT_DEFAULT
        try:
            r = self._client.post(endpoint, params=params, files=files, timeout=timeout)
        except httpx.TimeoutException as e:
            raise StoreUnavailable(f"{self.api_url}: {endpoint} timed out ({type(e).__name__})") from e
        except httpx.TransportError as e:  # connect refused/reset, DNS, protocol errors
            raise StoreUnavailable(f"{self.api_url}: {endpoint}: {type(e).__name__}: {e}") from e
        if r.status_code == 200:
            return r

        message = _error_message(r)
        if r.status_code == 413:
            raise BlockTooLarge(size or 0, self.max_block_size, message)
        if _FULL.search(message):
            raise StoreFull(f"{self.api_url}: {message}")
        if r.status_code == 500 and cid is not None and _NOT_FOUND.search(message):
            raise BlockNotFound(cid, message)
        if r.status_code in (404, 405):
            raise StoreUnavailable(f"{self.api_url} does not serve the Kubo RPC API ({r.status_code} on {endpoint})")
        if r.status_code in (403, 502, 503, 504) or r.status_code >= 500 and not message:
            raise StoreUnavailable(f"{self.api_url}: {endpoint}: HTTP {r.status_code} {message}")
        raise StoreError(f"{self.api_url}: {endpoint}: HTTP {r.status_code}: {message}")

    def _lookup_params(self, canonical: str) -> dict[str, Any]:
        params: dict[str, Any] = {"arg": canonical, "timeout": _ms(self.lookup_timeout)}
        if self.offline:
            params["offline"] = "true"
        return params

    def version(self) -> dict[str, Any]:
        """The node's ``/api/v0/version`` answer; a cheap liveness probe."""
        return self._post("version", {}).json()

    # ------------------------------------------------------------------ ContentStore

    def put(self, data: bytes) -> str:
        data = bytes(data) if not isinstance(data, bytes) else data
        if self.max_block_size is not None and len(data) > self.max_block_size:
            raise BlockTooLarge(len(data), self.max_block_size)
        digest = hashlib.sha256(data).digest()
        cid = cid_from_digest(digest)
        params = {
            "cid-codec": "raw",
            "mhtype": "sha2-256",
            "format": "raw",
            "pin": "true" if self.pin else "false",
        }
        r = self._post(
            "block/put", params,
            files={"file": ("block", data, "application/octet-stream")},
            size=len(data),
        )
        key = _json(r).get("Key")
        if not isinstance(key, str):
            raise StoreError(f"{self.api_url}: block/put answered without a Key: {r.text[:200]}")
        answered = digest_from_cid(key)
        if answered != digest:
            # The node addressed our bytes differently: wrong codec/hash handling or a bad node.
            raise CorruptBlock(cid, answered, detail=f"node stored it as {key}")
        return cid

    def get(self, cid: str) -> bytes:
        digest = digest_from_cid(cid)
        r = self._post("block/get", self._lookup_params(cid_from_digest(digest)), cid=cid)
        data = r.content
        actual = hashlib.sha256(data).digest()
        if actual != digest:
            raise CorruptBlock(cid, actual, detail=f"returned by {self.api_url}")
        return data

    def stat(self, cid: str) -> BlockStat:
        digest = digest_from_cid(cid)
        r = self._post("block/stat", self._lookup_params(cid_from_digest(digest)), cid=cid)
        body = _json(r)
        key, size = body.get("Key"), body.get("Size")
        if not isinstance(key, str) or digest_from_cid(key) != digest or not isinstance(size, int):
            raise StoreError(f"{self.api_url}: unexpected block/stat answer for {cid}: {body}")
        return BlockStat(cid=cid_from_digest(digest), size=size)

    def has(self, cid: str) -> bool:
        try:
            self.stat(cid)
            return True
        except BlockNotFound:
            return False

    def put_many(self, blocks: Iterable[bytes], digests: Sequence[bytes] | None = None) -> list[str]:
        """Parallel puts (``concurrency`` at a time): each put is one HTTP round trip, so
        latency, not bandwidth, bounds a sequential loop of small frames. (``digests`` unused:
        the daemon hashes what it receives.)"""
        blocks = list(blocks)
        if self.concurrency == 1 or len(blocks) < 2:
            return [self.put(b) for b in blocks]
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="kubo-put") as pool:
            return list(pool.map(self.put, blocks))

    def get_many(self, cids: Iterable[str]) -> list[bytes]:
        """Parallel gets, results in input order; the first failure (in order) is raised."""
        cids = list(cids)
        if self.concurrency == 1 or len(cids) < 2:
            return [self.get(c) for c in cids]
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="kubo-get") as pool:
            return list(pool.map(self.get, cids))


def _error_message(r: httpx.Response) -> str:
    """Kubo and js-ipfs both answer errors as ``{"Message": ..., "Code": ..., "Type": "error"}``;
    proxies may answer plain text."""
    try:
        body = r.json()
        if isinstance(body, dict) and isinstance(body.get("Message"), str):
            return body["Message"]
    except (ValueError, json.JSONDecodeError):
        pass
    return r.text.strip()[:500]


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError as e:
        raise StoreError(f"node answered non-JSON: {r.text[:200]!r}") from e
    if not isinstance(body, dict):
        raise StoreError(f"node answered unexpected JSON: {body!r:.200}")
    return body
