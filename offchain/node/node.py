"""One consortium node: ingest, pools, gap detection, and the wiring of repair, production,
attestation, the alarm centre and the HTTP API.

Concurrency model: one asyncio event loop owns the SQLite state; chain calls (blocking web3
HTTP) and store writes run in worker threads through `asyncio.to_thread`, so a slow RPC never
stalls ingest. Each camera connection is its own task: a bad packet or a misbehaving camera
affects only that connection.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..chain.client import Signer, connect
from ..chain.deployer import Deployment
from ..chain.ledger import ConsortiumClient, VideoLedgerClient
from ..core import packet as pk
from ..core.block import camera_id
from ..core.gaps import estimate_gop, find_holes, keyframe_lost
from ..store.base import ContentStore, StoreError
from ..core.peer_auth import ChainBinding
from .config import NodeConfig
from .ingest import IngestServer, StreamRecord
from .peer_http import NodeRoster, PeerIdentity, PeerSigning
from .registry import CameraRegistry
from .state import Alarm, NodeState

log = logging.getLogger(__name__)

MAX_HOLE_SEQS = 100_000  # larger holes are alarmed in pieces, so no alarm holds an unbounded range


def open_store(config: NodeConfig) -> ContentStore:
    if config.store == "local":
        from ..store.local import LocalStore

        return LocalStore(config.data_dir / "store", fsync=config.store_fsync)  # type: ignore[arg-type]
    if config.store == "kubo":
        from ..store.kubo import KuboStore

        return KuboStore(config.store_url)
    raise ValueError(f"unknown store kind {config.store!r} (local or kubo)")


@dataclass
class CameraTrack:
    """In-memory gap-scan state of one camera, rebuilt from SQLite on start."""

    watermark: int  # every seq <= watermark is held or declared lost
    noticed: dict[int, float] = field(default_factory=dict)  # hole start seq -> when first seen
    alarmed: set[int] = field(default_factory=set)  # seqs under an alarm of ours
    keyframes: deque[int] = field(default_factory=lambda: deque(maxlen=50))


class Node:
    def __init__(self, config: NodeConfig):
        self.config = config
        self.name = config.name
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.state = NodeState(config.data_dir / "node.sqlite")
        self.store = open_store(config)
        self.w3 = connect(config.rpc_url)
        self.signer = Signer(self.w3, config.key())
        self.address = self.signer.address
        self.deployment = Deployment.load(config.deployment)
        self.consortium = ConsortiumClient(self.signer, self.deployment.consortium)
        self.ledger = VideoLedgerClient(self.signer, self.deployment.video_ledger)
        # Peer HTTP is signed with the node account's key, for this deployment only (peer_http.py).
        self.peer_identity = PeerIdentity(config.key(), self.address, ChainBinding(self.signer.chain_id, self.deployment.consortium))
        self.registry = CameraRegistry(self.consortium, from_block=self.deployment.record["contracts"]["Consortium"]["blockNumber"])
        self.tracks: dict[bytes, CameraTrack] = {}
        self.http: httpx.AsyncClient | None = None
        self.ingest_server: asyncio.AbstractServer | None = None
        self.started_at = time.time()
        self.stopping = asyncio.Event()
        # imported here to keep the modules' dependency one-way (they take a Node)
        from .producer import Producer
        from .repair import Repairer

        self.repairer = Repairer(self)
        self.producer = Producer(self)
        self.ingest = IngestServer(self)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        await asyncio.to_thread(self.registry.refresh, True)
        self.nodes = await asyncio.to_thread(self.consortium.nodes)
        if self.address not in self.nodes:
            raise RuntimeError(f"{self.name}: account {self.address} is not a registered node of {self.deployment.consortium}")
        self.roster = NodeRoster(self.consortium.nodes, initial=self.nodes)
        self.http = httpx.AsyncClient(timeout=5.0, auth=PeerSigning(self.peer_identity, self.roster, self.config.peer_auth_window_ms))
        self.ingest_server = await asyncio.get_running_loop().create_server(
            self.ingest.protocol, self.config.ingest_host, self.config.ingest_port, backlog=1024)
        self.config.ingest_port = self.ingest_server.sockets[0].getsockname()[1]
        self._ingest_flush = asyncio.ensure_future(self.ingest.flush_forever())
        log.info("node started", extra={"node": self.name, "address": self.address, "ingest_port": self.config.ingest_port})

    async def stop(self) -> None:
        self.stopping.set()
        if self.ingest_server:
            self.ingest_server.close()
            self._ingest_flush.cancel()
            self.ingest.flush()
        if self.http:
            await self.http.aclose()
        self.state.close()

    async def tick_forever(self) -> None:
        """The periodic work: gap scan, repair, sealing, attestation."""
        while not self.stopping.is_set():
            started = time.monotonic()
            for step in (self.watch_whitelist, self.scan_gaps, self.repairer.resend_open_alarms, self.producer.tick,
                         self.producer.scan_anchored):
                try:
                    await step()
                except Exception:  # noqa: BLE001 - one failing step must not stop the node
                    log.exception("tick step failed", extra={"node": self.name, "step": step.__name__})
            await asyncio.sleep(max(0.0, self.config.tick_ms / 1000 - (time.monotonic() - started)))

    # ------------------------------------------------------------------- ingest
    async def _serve_camera(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One camera connection: handshake, limits, signed control, acknowledgements
        (`offchain.node.ingest`)."""
        await self.ingest.serve(reader, writer)

    def stream_state(self, cam: bytes) -> StreamRecord | None:
        """How the camera's stream last stood here: streaming, ended (signed end) or unended
        (its connection closed without a signed end), for the producer to declare."""
        return self.ingest.stream_state(cam)

    def manifest_extras(self, cam: bytes, start_ms: int, end_ms: int) -> dict[str, Any]:
        """Keyword arguments for `core.block.build_block` of the camera's window [start, end):
        ``codec_proof`` (the signed hello behind the recorded codec) and ``stream_end="unended"``
        when the camera's last connection closed without a signed end and its newest frame falls
        in this window (its tail may be missing: declared, not hidden)."""
        extras: dict[str, Any] = {}
        hello = self.signed_hello(cam)
        if hello is not None:
            extras["codec_proof"] = {k: hello[k] for k in ("signedJson", "signature", "domain")}
        stream = self.stream_state(cam)
        newest = self.state.max_ts(cam)
        if stream is not None and stream.state == "unended" and newest is not None and start_ms <= newest < end_ms:
            extras["stream_end"] = "unended"
        return extras

    def signed_hello(self, cam: bytes) -> dict[str, Any] | None:
        """The signed hello whose codec this node recorded: the JSON the camera signed, its
        signature (hex) and the signing domain, so anyone can check the codec a manifest commits."""
        raw = self.state.get_meta(f"hello:{cam.hex()}")
        return json.loads(raw) if raw else None

    async def accept_packet(self, raw: bytes, source: str, expect_camera: bytes | None = None,
                            origin: str | None = None) -> str:
        """Check one packet and keep it. Returns accepted, duplicate, conflict, integrity or security.
        ``origin`` (e.g. ``camera@10.0.0.5``) keys the coalesced alarm of a refusal; default ``source``."""
        origin = origin or source
        try:
            packet = pk.decode_packet(raw)
        except pk.PacketError as exc:
            # Only a whitelisted camera's name goes into the pool; anything else stays anonymous.
            ip = exc.camera_ip if exc.camera_ip and self.registry.active_key(exc.camera_ip) else None
            self._alarm_rejected(ip, "integrity", str(exc), source, origin)
            return "integrity"
        ip = packet.camera_ip
        if expect_camera is not None and packet.camera_id != expect_camera:
            self._alarm_rejected(ip, "security", f"packet for another camera from {source}", source, origin)
            return "security"
        key = self.registry.active_key(ip)
        if key is None and await asyncio.to_thread(self.registry.refresh):
            key = self.registry.active_key(ip)
        if key is None:
            self._alarm_rejected(ip, "security", f"camera {ip} is not on the whitelist (or revoked)", source, origin)
            return "security"
        if not await self._signature_ok(packet):
            self._alarm_rejected(ip, "security", f"{ip} seq {packet.seq}: device signature does not verify", source, origin)
            return "security"
        cam = packet.camera_id
        held = self.state.frame(cam, packet.seq)
        if held is not None:
            return self._same_or_conflict(held, packet, ip, source, origin)
        horizon = max(self.state.max_ts(cam) or 0, int(time.time() * 1000)) + 10 * self.config.window_ms
        if packet.timestamp_ms > horizon:
            # A clock far ahead would close every real window at once and walk the producer
            # through empty windows; such a frame is refused, not stored.
            self._alarm_rejected(ip, "integrity", f"seq {packet.seq} stamped {packet.timestamp_ms}, beyond {horizon}", source, origin)
            return "integrity"
        try:
            await asyncio.to_thread(self.store.put, packet.payload)
        except StoreError as exc:
            # Nothing is recorded for a frame whose bytes could not be kept; peers can repair it.
            self.state.bump(ip, "store_errors")
            log.error("store put failed", extra={"node": self.name, "camera": ip, "seq": packet.seq, "error": str(exc)})
            return "integrity"
        self.state.note_camera(cam, ip)
        if self.state.add_frame(cam, packet.frame_ref(), packet.signature, source):
            self.state.bump(ip, "received" if source == "camera" else "repaired")
            track = self.tracks.get(cam)
            if track and packet.keyframe:
                track.keyframes.append(packet.seq)
            self.ingest.note_held(cam, packet.seq)
            return "accepted"
        # Another copy landed while the bytes were being stored: same frame, or equivocation.
        return self._same_or_conflict(self.state.frame(cam, packet.seq), packet, ip, source, origin)

    def _same_or_conflict(self, held, packet: pk.FramePacket, ip: str, source: str, origin: str) -> str:
        if held.ref.sha256 == packet.sha256 and held.ref.timestamp_ms == packet.timestamp_ms:
            self.state.bump(ip, "duplicates")
            self.ingest.note_held(packet.camera_id, packet.seq)
            return "duplicate"
        # Two validly signed frames with one seq: the camera itself equivocates.
        self._alarm_rejected(ip, "security", f"seq {packet.seq} signed twice with different content", source, origin)
        return "conflict"

    async def _signature_ok(self, packet: pk.FramePacket) -> bool:
        """Under a key valid at the frame's capture time; after a failure the camera is re-read
        once (its key may have just been rotated, C6) before the packet is refused."""
        for attempt in range(2):
            for key in self.registry.keys_for(packet.camera_id, packet.timestamp_ms):
                try:
                    pk.verify_signature(packet, key)
                    return True
                except pk.BadSignature:
                    continue
            if attempt == 0:
                await asyncio.to_thread(self.registry.refresh_camera, packet.camera_id)
        return False

    def _alarm_rejected(self, ip: str | None, kind: str, reason: str, source: str, origin: str | None = None) -> None:
        # Counters are keyed by whitelisted cameras only: an intruder cannot create rows at will.
        # Alarms are coalesced: one durable row per (kind, camera or anonymous, origin), counted
        # (`IngestServer.alarm`); a flood costs memory for one entry, not a SQLite write per packet.
        ip = ip if ip and self.registry.by_ip(ip) else None
        self.ingest.count(ip or "*", f"rejected_{kind}")
        alarm_id = f"{self.name}:{kind}:{ip or 'anonymous'}:{(origin or source)[:100]}"
        first = alarm_id not in self.ingest.alarms
        self.ingest.alarm(Alarm(alarm_id, camera_id(ip) if ip else None, ip, kind, None, None, None, None, False,
                                time.time(), None, None, f"{reason} (via {source})"))
        if first:
            log.warning("packet rejected", extra={"node": self.name, "alarm": kind, "camera": ip, "reason": reason})

    async def watch_whitelist(self) -> None:
        """Key rotations and revocations take effect within a tick, not at the next miss."""
        start = int(self.state.get_meta("whitelist_checkpoint") or self.deployment.record["contracts"]["Consortium"]["blockNumber"])
        self.state.set_meta("whitelist_checkpoint", str(await asyncio.to_thread(self.registry.watch, start)))

    # --------------------------------------------------------------- gap scan
    def track(self, cam: bytes) -> CameraTrack:
        track = self.tracks.get(cam)
        if track is None:
            row = self.state.camera_row(cam)
            # A stream's numbering starts at 0 unless the camera's hello said otherwise
            # ("firstSeq", e.g. a camera that keeps counting across restarts).
            first = row[3] if row and row[3] is not None else 0
            track = CameraTrack(watermark=first - 1)
            track.keyframes.extend(self.state.recent_keyframes(cam))
            for alarm in self.state.alarms(camera=cam, kind="missing"):
                track.alarmed.update(range(alarm.seq_from, alarm.seq_to + 1))
            self.tracks[cam] = track
        return track

    async def scan_gaps(self) -> None:
        """I5: a hole in a camera's sequence numbers that stays open for `missing_wait_ms` is
        declared missing: an alarm goes into the pool and to the peers (I6)."""
        now = time.time()
        wait = self.config.missing_wait_ms / 1000
        for cam, ip in self.state.cameras():
            if self.registry.get(cam) is None:
                continue
            track = self.track(cam)
            row = self.state.camera_row(cam)
            last_seq = row[2] if row else None
            seen = self.state.seqs_after(cam, track.watermark)
            holes = find_holes(track.watermark, seen, last_seq)
            gop = estimate_gop(list(track.keyframes)[-10:])
            # advance the watermark over everything held or already alarmed
            blocking = [h for h in holes if not all(s in track.alarmed for s in h.seqs)]
            if blocking:
                track.watermark = blocking[0].from_seq - 1
            elif seen:
                track.watermark = max(seen[-1][0], last_seq or -1)
            # forget what lies below the watermark: those holes are settled one way or another
            track.alarmed = {s for s in track.alarmed if s > track.watermark}
            starts = {h.from_seq for h in blocking}
            track.noticed = {k: v for k, v in track.noticed.items() if k in starts or k > track.watermark}
            for hole in blocking:
                fresh = [s for s in hole.seqs if s not in track.alarmed][:MAX_HOLE_SEQS]
                first_noticed = track.noticed.setdefault(fresh[0], now)
                if now - first_noticed < wait:
                    continue
                last_key = max((k for k in track.keyframes if k < hole.from_seq), default=None)
                await self.repairer.raise_missing(cam, ip, fresh[0], fresh[-1], hole, keyframe_lost(hole, last_key, gop))
                track.alarmed.update(fresh)
                track.noticed.pop(fresh[0], None)

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        counters = self.state.counters()
        return {
            "node": self.name,
            "address": self.address,
            "uptimeS": round(time.time() - self.started_at, 1),
            "ingestPort": self.config.ingest_port,
            "counters": counters,
            "openAlarms": self.state.open_alarm_count(),
            "cameras": {ip: "0x" + cid.hex() for cid, ip in self.state.cameras()},
        }

