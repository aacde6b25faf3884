"""The node's one HTTP client to its peers, and the narrow callables the producer and the
repairer are given instead of the whole `Node`.

Every request goes through one `httpx.AsyncClient` whose auth (`peer_http.PeerSigning`) signs it
with the node account's key and verifies the signed response; it is opened by `Node.start`, once
the consortium's node list is known. Methods return None (or False) for an unreachable peer or
an unusable answer: a dead peer is expected, the caller asks the next one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Protocol, Sequence

import httpx

from ..core.cid import digest_from_cid

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BatchHoldings:
    """A peer's batch-mode holdings answer: per camera, the seqs it holds that the asker lacks;
    ``complete`` False when the peer cut its list short (MAX_HOLDINGS_FRAMES)."""

    seqs: dict[bytes, list[int]]
    complete: bool


class PacketSink(Protocol):
    """Accepts one signed packet from a peer through every check a camera's packet passes
    (`Node.accept_packet`); returns the outcome ("accepted", "duplicate", "security", ...)."""

    def __call__(self, raw: bytes, source: str, expect_camera: bytes | None = None,
                 origin: str | None = None) -> Awaitable[str]: ...


class PeerClient:
    def __init__(self, name: str, peers: Sequence[str], me: str, timeout_s: float = 5.0):
        self.name = name  # this node's, for the logs
        self.peers = list(peers)  # configured peer API URLs, in configuration order
        self.me = me.rstrip("/")
        self.timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None

    def open(self, auth: httpx.Auth) -> None:
        self._http = httpx.AsyncClient(timeout=self.timeout_s, auth=auth)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("peer client not opened (Node.start opens it)")
        return self._http

    # ------------------------------------------------------------------ reads
    async def holdings(self, peer: str, cam: bytes, start_ms: int, end_ms: int) -> list[Any] | None:
        """What `peer` holds of the camera's window: its [seq, sha256 hex] entries, unchecked.
        None when the peer gave no answer (unreachable, timed out, refused, or malformed)."""
        try:
            r = await self.http.get(f"{peer.rstrip('/')}/peer/v1/holdings/0x{cam.hex()}",
                                    params={"from_ms": start_ms, "to_ms": end_ms})
            listed = r.json().get("frames") if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return listed if isinstance(listed, list) else None

    async def frame(self, peer: str, cam: bytes, seq: int) -> tuple[bytes, str] | None:
        """One original signed packet from `peer` and the node name it gives; not yet verified."""
        try:
            r = await self.http.get(f"{peer.rstrip('/')}/peer/v1/frames/0x{cam.hex()}/{seq}")
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        return r.content, r.headers.get("X-FrameLedger-Node-Name", peer)

    async def block(self, cid: str) -> bytes | None:
        """A stored block (a manifest) from the first peer that has it, digest-checked."""
        for peer in self.peers:
            try:
                r = await self.http.get(f"{peer.rstrip('/')}/peer/v1/blocks/{cid}")
            except httpx.HTTPError:
                continue
            if r.status_code == 200 and hashlib.sha256(r.content).digest() == digest_from_cid(cid):
                return r.content
        return None

    async def open_missing_alarms(self, url: str) -> list[dict[str, Any]] | None:
        """A node's open missing alarms (`GET /api/v1/alarms`), for the alarm centre."""
        try:
            r = await self.http.get(url.rstrip("/") + "/api/v1/alarms", params={"open": "true", "kind": "missing"})
            r.raise_for_status()
            return list(r.json())
        except httpx.HTTPError:
            return None

    async def batch_holdings(self, peer: str, start_ms: int, end_ms: int,
                             have: dict[bytes, list[tuple[int, int]]]) -> BatchHoldings | None:
        """Batch mode, one request for every camera of window [start, end): the seqs `peer` holds
        that `have` (this node's seq ranges per camera) lacks, per camera, including cameras not
        in `have`. None when unreachable or the answer is unusable."""
        body = {"windowStartMs": start_ms, "windowEndMs": end_ms,
                "cameras": [{"cameraId": "0x" + cam.hex(), "have": [list(r) for r in ranges]}
                            for cam, ranges in sorted(have.items())]}
        try:
            r = await self.http.post(f"{peer.rstrip('/')}/peer/v1/batches/holdings", json=body, timeout=30.0)
            doc = r.json() if r.status_code == 200 else None
            if not isinstance(doc, dict):  # a refusal, or an answer that is not an object: none
                return None
            out: dict[bytes, list[int]] = {}
            for entry in doc.get("cameras", []):
                seqs = [int(s) for s in entry["seqs"] if isinstance(s, int)]
                out[bytes.fromhex(str(entry["cameraId"]).removeprefix("0x"))] = seqs
        except (httpx.HTTPError, ValueError, AttributeError, KeyError, TypeError) as exc:
            log.info("holdings unusable", extra={"node": self.name, "peer": peer, "error": type(exc).__name__})
            return None
        return BatchHoldings(seqs=out, complete=doc.get("complete") is not False)

    async def batch_frames(self, peer: str, wanted: dict[bytes, list[int]]) -> tuple[str, list[tuple[bytes, int, bytes]]] | None:
        """Batch mode, one request for a window's lacking frames of every camera: the node name
        `peer` gives and its (camera, seq, packet) answers, not yet verified (only those asked
        for). None when unreachable or the answer is unusable."""
        body = {"frames": [{"cameraId": "0x" + cam.hex(), "seqs": seqs} for cam, seqs in sorted(wanted.items())]}
        try:
            r = await self.http.post(f"{peer.rstrip('/')}/peer/v1/batches/frames", json=body, timeout=30.0)
            doc = r.json() if r.status_code == 200 else None
            if doc is None:
                return None
            out = []
            for entry in doc.get("packets", []):
                cam, seq = bytes.fromhex(str(entry["cameraId"]).removeprefix("0x")), int(entry["seq"])
                if seq in wanted.get(cam, ()):
                    out.append((cam, seq, base64.b64decode(str(entry["packet"]), validate=True)))
        except (httpx.HTTPError, ValueError, AttributeError, KeyError, TypeError) as exc:
            log.info("frames unusable", extra={"node": self.name, "peer": peer, "error": type(exc).__name__})
            return None
        return str(doc.get("node") or peer)[:128], out

    async def sign_batch(self, peer: str, manifest_cid: str, attempt: int, manifest: bytes | None = None,
                         blocks: Sequence[bytes] = ()) -> dict[str, Any] | None:
        """Ask `peer` to sign a batch (batch mode): {"signature", "signer"}, or the problem
        document of its refusal, or None when it cannot be reached. `manifest` and `blocks` (the
        batch manifest, block manifests) travel inline, base64, so the peer needs no round trip
        per camera to fetch them."""
        body: dict[str, Any] = {"manifestCid": manifest_cid, "attempt": attempt}
        if manifest is not None:
            body["manifest"] = base64.b64encode(manifest).decode()
        if blocks:
            body["blocks"] = [base64.b64encode(b).decode() for b in blocks]
        try:
            r = await self.http.post(f"{peer.rstrip('/')}/peer/v1/batches/sign", json=body, timeout=30.0)
            doc = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.info("peer unreachable", extra={"node": self.name, "peer": peer, "error": type(exc).__name__})
            return None
        return doc if isinstance(doc, dict) else None

    # ----------------------------------------------------------------- writes
    async def post(self, url: str, body: dict[str, Any]) -> httpx.Response:
        """One signed POST; raises httpx.HTTPError like httpx does."""
        return await self.http.post(url, json=body)

    async def broadcast(self, path: str, message: dict[str, Any], exclude: set[str]) -> None:
        """`message` (with `via` = this node) to every peer but this node and `exclude`, at once."""
        targets = [p for p in self.peers if p.rstrip("/") not in exclude and p.rstrip("/") != self.me]
        message = {**message, "via": self.me}

        async def send(peer: str) -> None:
            try:
                await self.http.post(peer.rstrip("/") + path, json=message)
            except httpx.HTTPError as exc:
                # A dead peer is expected: the others still hear the alarm.
                log.info("peer unreachable", extra={"node": self.name, "peer": peer, "error": type(exc).__name__})

        await asyncio.gather(*(send(p) for p in targets))
