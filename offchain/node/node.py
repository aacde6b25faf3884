"""One consortium node: ingest, pools, gap detection, and the wiring of repair, production,
attestation, the alarm centre and the HTTP API.

Concurrency model: one asyncio event loop owns the SQLite state; chain calls (blocking web3
HTTP) run in worker threads through `asyncio.to_thread`, so a slow RPC never stalls ingest.
Frames are checked in worker processes and written in group commits from a thread with their
own SQLite connection (`offchain.node.pipeline`, issue 9). Each camera connection is its own task: a bad packet or a misbehaving camera
affects only that connection.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import deque
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from ..chain.client import Signer, connect
from ..chain.deployer import Deployment
from ..chain.ledger import ConsortiumClient, VideoLedgerClient
from ..core import packet as pk
from ..core.block import cached_camera_id, camera_id, track_bounds, track_of
from ..core.cid import cid_from_digest
from ..core.gaps import Arrival, CameraAnomaly, classify_arrival, codec_tracks, Hole, SeqRanges, check_step, estimate_gop, find_holes, keyframe_lost, plausible_lost, track_step_ms
from ..store.base import ContentStore, StoreError
from ..store.kubo import KuboStore
from ..store.local import LocalStore
from ..store.sealed import Keyring, SealedStore, SealIndex, SessionSealer, index_path_for
from ..chain.session_keys import SessionReader
from ..core.peer_auth import ChainBinding
from ..chain.health import ChainHealth
from .alarm_centre import AlarmCentre
from .config import ConfigError, NodeConfig
from . import outages
from .ingest import IngestServer, StreamRecord
from .ingest_procs import IngestProcs
from .peer_client import PeerClient
from .peer_http import NodeRoster, PeerIdentity, PeerSigning
from .pipeline import Budget, GroupCommitter, Pending, Verdict, Verifier, default_workers, verify_one
from .batcher import Batcher
from .producer import Producer
from .registry import CameraRegistry
from .repair import Repairer
from .storage_guard import StorageGuard
from .state import Alarm, FrameWriter, NodeState, named_alarm

log = logging.getLogger(__name__)

MAX_ALARM_SEQS = 500  # one missing alarm asks for at most this many frames (one repair round)
MAX_NEW_ALARMS_PER_TICK = 4  # per camera and tick
MAX_OPEN_MISSING = 32  # open missing alarms per camera; further holes wait for these to settle
MAX_SCAN_FRAMES = 20_000  # frames above the watermark read per camera and tick
MAX_LEAD_SEQS = 15_000  # numbers asked for before a camera's first held frame (10 min at 25 fps)


def open_store(config: NodeConfig) -> ContentStore:
    if config.store == "local":
        return LocalStore(config.data_dir / "store", fsync=config.store_fsync)  # type: ignore[arg-type]
    if config.store == "kubo":
        return KuboStore(config.store_url)
    raise ValueError(f"unknown store kind {config.store!r} (local or kubo)")


@dataclass
class CameraTrack:
    """In-memory gap-scan state of one camera, rebuilt from SQLite on start. Sets of numbers are
    ranges (`SeqRanges`), so a hole of 3,000,000 numbers costs one entry, not 3,000,000."""

    watermark: int  # every seq <= watermark is held or declared lost
    noticed: dict[int, float] = field(default_factory=dict)  # hole start seq -> when first seen
    alarmed: SeqRanges = field(default_factory=SeqRanges)  # seqs under an alarm of ours, or skipped by a jump
    keyframes: deque[int] = field(default_factory=lambda: deque(maxlen=50))
    checked: int = -1  # highest seq whose step from the frame before it was judged (check_step)


class Node:
    def __init__(self, config: NodeConfig):
        self.config = config
        self.name = config.name
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.state = NodeState(config.data_dir / "node.sqlite")
        self.store = open_store(config)
        self.storage = StorageGuard(self.name)
        self.w3 = connect(config.rpc_url)
        self.signer = Signer(self.w3, config.key())
        self.address = self.signer.address
        self.deployment = Deployment.load(config.deployment)
        self.consortium = ConsortiumClient(self.signer, self.deployment.consortium)
        self.ledger = VideoLedgerClient(self.signer, self.deployment.video_ledger)
        self.sealer: Any = None  # S5: session frames rest sealed (config seal_sessions, docs/ENCRYPTION.md)
        if config.seal_sessions:
            self._seal_store()
        # Peer HTTP is signed with the node account's key, for this deployment only (peer_http.py).
        self.peer_identity = PeerIdentity(config.key(), self.address, ChainBinding(self.signer.chain_id, self.deployment.consortium))
        self.registry = CameraRegistry(self.consortium, from_block=self.deployment.record["contracts"]["Consortium"]["blockNumber"])
        self.tracks: dict[tuple[bytes, int], CameraTrack] = {}  # per (camera, track): video 0, audio 1
        self.ingest_server: asyncio.AbstractServer | None = None
        self.started_at = time.time()
        self.stopping = asyncio.Event()
        # The parts below get what they use, not the Node (node -> producer -> repair, one way).
        self.peer_client = PeerClient(config.name, config.peers, config.api_url)
        contracts = {"Consortium": self.deployment.consortium, "VideoLedger": self.deployment.video_ledger}
        if config.anchoring == "batch":
            self.batch_ledger = self.deployment.batch_client(self.signer)
            contracts["BatchLedger"] = self.batch_ledger.address
        self.health = ChainHealth(self.w3, self.address, contracts, self.deployment.chain_id)
        self.repairer = Repairer(config=config, state=self.state, store=self.store, registry=self.registry,
                                 peers=self.peer_client, accept=self.accept_packet)
        self.ingest = IngestServer(self)
        self.producer: Producer | None = None  # built by start(), once the node list is read
        self.batcher: Batcher | None = None  # batch mode only (config anchoring = "batch")
        self.alarm_centre: AlarmCentre | None = None
        self._init_pipeline()

    def _seal_store(self) -> None:
        """Wrap the store so frames of formed sessions' cameras rest sealed (`store/sealed.py`)."""
        if not self.deployment.signing_session:
            raise ConfigError(f"{self.name}: seal_sessions needs a deployment with SigningSession")
        key = bytes.fromhex(self.config.key().removeprefix("0x"))
        index = SealIndex(index_path_for(self.store, self.config.data_dir))
        keyring = Keyring(key)
        self.sealer = SessionSealer(
            store=self.store, index=index, keyring=keyring, private_key=key,
            sessions=SessionReader(self.w3, self.deployment.signing_session), chain_id=self.deployment.chain_id,
            from_block=int(self.deployment.record["contracts"]["SigningSession"]["blockNumber"]),
            latest_block=lambda: int(self.w3.eth.block_number))
        self.store = SealedStore(self.store, index, keyring, self.sealer.key_for)
        self._seal_checked = 0.0

    async def refresh_seals(self) -> None:
        """New formed sessions get this node's data key (at most once a second; chain reads)."""
        if self.sealer is None or time.monotonic() - self._seal_checked < 1.0:
            return
        self._seal_checked = time.monotonic()
        await asyncio.to_thread(self.sealer.refresh)

    def _init_pipeline(self) -> None:
        """The ingest pipeline (`offchain.node.pipeline`); worker processes start on first use."""
        cfg = self.config
        workers = cfg.ingest_verify_workers if cfg.ingest_verify_workers >= 0 else default_workers()
        if cfg.ingest_process_count():
            workers = 0  # cameras stream in the ingest processes; a peer's repairs are checked inline here
        self.ingest_procs: IngestProcs | None = None  # built by start() when ingest_processes > 0
        self.verifier = Verifier(workers)
        self.committer = GroupCommitter(self._commit_batch, self._durable, self._commit_failed,
                                        max_frames=cfg.ingest_commit_max_frames, linger_s=cfg.ingest_commit_linger_ms / 1000)
        self.budget = Budget(cfg.ingest_queue_frames, cfg.ingest_queue_bytes)
        self._pending: dict[tuple[bytes, int], asyncio.Future[bool]] = {}
        self._max_ts: dict[bytes, int | None] = {}
        self._max_seq: dict[tuple[bytes, int], int] = {}  # highest seq held per (camera, track) (an upper bound: never below)
        self._codecs: dict[str, Any] = {}  # a camera row's codec text -> parsed (scan_gaps)
        self._writer: FrameWriter | None = None

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        await asyncio.to_thread(self.registry.refresh, True)
        self.nodes = await asyncio.to_thread(self.consortium.nodes)
        if self.address not in self.nodes:
            raise RuntimeError(f"{self.name}: account {self.address} is not a registered node of {self.deployment.consortium}")
        self.roster = NodeRoster(self.consortium.nodes, initial=self.nodes)
        self.peer_client.open(PeerSigning(self.peer_identity, self.roster, self.config.peer_auth_window_ms))
        self.producer = Producer(
            config=self.config, address=self.address, nodes=self.nodes, state=self.state, store=self.store,
            registry=self.registry, ledger=self.ledger, health=self.health, peers=self.peer_client,
            accept=self.accept_packet, repairer=self.repairer, manifest_extras=self.manifest_extras,
            started_at=self.started_at, latest_block=lambda: int(self.w3.eth.block_number),
            log_from_block=int(self.deployment.record["contracts"]["VideoLedger"]["blockNumber"]))
        if self.config.anchoring == "batch":
            self.batcher = Batcher(config=self.config, address=self.address, private_key=self.config.key(),
                                   nodes=self.nodes, state=self.state, store=self.store, registry=self.registry,
                                   batches=self.batch_ledger, health=self.health, peers=self.peer_client,
                                   producer=self.producer, quorum=self.consortium.quorum)
        if self.config.alarm_centre:
            self.alarm_centre = AlarmCentre(config=self.config, state=self.state, registry=self.registry,
                                            ledger=self.ledger, peers=self.peer_client)
        if self.sealer is not None:  # keys before frames: a session's first frame is sealed already
            await asyncio.to_thread(self.sealer.load)
            await asyncio.to_thread(self.sealer.refresh)
        await self.verifier.warm()  # before the listener opens: the first frames find their workers
        if self.config.ingest_process_count():
            self.ingest_procs = IngestProcs(config=self.config, ingest=self.ingest, count=self.config.ingest_process_count(),
                                            on_batch=self.note_ingest_batch)
            await self.ingest_procs.start()
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
            if self.ingest_procs is not None:
                await self.ingest_procs.stop()  # their last counters, before the flush
            self.ingest.flush()
        if self.producer is not None:
            await self.producer.close()
        await self.committer.drain()
        self.committer.close()
        self.verifier.close()
        await self.peer_client.close()
        if self._writer is not None:
            self._writer.close()
        self.state.close()

    async def tick_forever(self) -> None:
        """The periodic work: gap scan and repair, then sealing, in one loop; in per-header mode
        sealing and attestation each in a loop of their own, so a receipt awaited in one never
        delays an anchor or an attestation of the other. (Batch mode keeps one loop: its seal
        pass paces the gap scan, which at 200 cameras is a seventh of the event loop; run every
        tick beside the batch work it slowed the repair replies peers wait for, bench latency.)"""
        upkeep = (self.watch_whitelist, self.refresh_seals, self.scan_gaps, self.repairer.resend_open_alarms)
        if self.batcher is not None:
            await self._every_tick((*upkeep, self.batcher.tick))
            return
        await asyncio.gather(self._every_tick(upkeep), self._every_tick((self.producer.tick_background,)),
                             self._every_tick((self.producer.scan_anchored,)))

    async def _every_tick(self, steps: tuple[Callable[[], Awaitable[None]], ...]) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            for step in steps:
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
        declared = outages.manifest_entries(self.state, cam, start_ms, end_ms)
        if declared:
            extras["declared_outages"] = declared
        return extras

    def signed_hello(self, cam: bytes) -> dict[str, Any] | None:
        """The signed hello whose codec this node recorded: the JSON the camera signed, its
        signature (hex) and the signing domain, so anyone can check the codec a manifest commits."""
        raw = self.state.get_meta(f"hello:{cam.hex()}")
        return json.loads(raw) if raw else None

    async def accept_packet(self, raw: bytes, source: str, expect_camera: bytes | None = None,
                            origin: str | None = None) -> str:
        """Check one packet and keep it. Returns accepted, duplicate, conflict, integrity, security or
        storage (this node cannot write: a full disk or a read-only data directory).
        ``origin`` (e.g. ``camera@10.0.0.5``) keys the coalesced alarm of a refusal; default ``source``.

        Returns only once the frame is durable (its batch's fsyncs done, `offchain.node.pipeline`):
        the cheap checks run here, SHA-256 and the device signature in a worker process."""
        origin = origin or source
        pre = self.precheck(raw, source, expect_camera, origin)
        if isinstance(pre, str):
            return pre
        if pre is None:  # not (or no longer) on the whitelist as this node knows it: read it again
            if await asyncio.to_thread(self.registry.refresh):
                pre = self.precheck(raw, source, expect_camera, origin)
                if isinstance(pre, str):
                    return pre
            if pre is None:
                ip = pk.decode_packet(raw, check_digest=False).camera_ip
                self._alarm_rejected(ip, "security", f"camera {ip} is not on the whitelist (or revoked)", source, origin)
                return "security"
        return await self.accept_checked(pre, raw, source, origin)

    def precheck(self, raw: bytes, source: str, expect_camera: bytes | None,
                 origin: str) -> str | pk.FramePacket | None:
        """The checks that cost no I/O, done at once (so a flood of garbage is judged in order,
        before anything else is read): the refusal, the parsed packet, or None when its camera is
        not on the whitelist this node holds (the caller re-reads it before refusing)."""
        try:
            packet = pk.decode_packet(raw, check_digest=False)
        except pk.PacketError as exc:
            # Only a whitelisted camera's name goes into the pool; anything else stays anonymous.
            ip = exc.camera_ip if exc.camera_ip and self.registry.active_key(exc.camera_ip) else None
            self._alarm_rejected(ip, "integrity", str(exc), source, origin)
            return "integrity"
        ip = packet.camera_ip
        if expect_camera is not None and cached_camera_id(ip) != expect_camera:
            self._alarm_rejected(ip, "security", f"packet for another camera from {source}", source, origin)
            return "security"
        return packet if self.registry.active_key(ip) is not None else None

    async def accept_checked(self, packet: pk.FramePacket, raw: bytes, source: str, origin: str,
                             refusals: list[tuple[str | None, str, str, str, str]] | None = None) -> str:
        """`accept_packet` after `precheck` passed: digest and signature, then keep it. With
        ``refusals`` a failed check's alarm is handed back instead of raised: a connection raises
        them in arrival order, and none for frames judged after it closed (its bound on invalid
        messages stays exact although frames are checked concurrently)."""
        ip = packet.camera_ip
        cam = cached_camera_id(ip)
        verdict = await self._verify(cam, raw, packet)
        if verdict is Verdict.OK:
            return await self._keep(cam, packet, source, origin)
        kind, outcome, reason = (("integrity", "integrity", f"{ip} seq {packet.seq}: payload does not match its SHA-256")
                                 if verdict is Verdict.DIGEST else
                                 ("security", "security", f"{ip} seq {packet.seq}: device signature does not verify"))
        if refusals is None:
            self._alarm_rejected(ip, kind, reason, source, origin)
        else:
            refusals.append((ip, kind, reason, source, origin))
        return outcome

    async def _keep(self, cam: bytes, packet: pk.FramePacket, source: str, origin: str) -> str:
        """A verified packet: duplicate, conflict, beyond the horizon, or into the next batch."""
        ip, key = packet.camera_ip, (cam, packet.seq)
        in_flight = self._pending.get(key)
        if in_flight is not None:  # the same seq is in a batch now: judge against it once durable
            try:
                await asyncio.shield(in_flight)
            except Exception:  # noqa: BLE001 - that batch failed: this copy is judged on its own below
                pass
        # A seq above every one held cannot be held: no SQLite read on the loop for the common
        # case, a camera streaming forward (issue 9 profile: ~35 µs a frame). Anything else is
        # looked up; a race with another copy is caught by the batch's INSERT OR IGNORE anyway.
        track = (cam, track_of(packet.seq))
        top = self._max_seq[track] if track in self._max_seq else self._load_max_seq(*track)
        held = self.state.frame(cam, packet.seq) if packet.seq <= top else None
        if held is not None:
            return self._same_or_conflict(held, packet, ip, source, origin)
        horizon = max(self._newest_ts(cam) or 0, int(time.time() * 1000)) + 10 * self.config.window_ms
        if packet.timestamp_ms > horizon:
            # A clock far ahead would close every real window at once and walk the producer
            # through empty windows; such a frame is refused, not stored.
            self._alarm_rejected(ip, "integrity", f"seq {packet.seq} stamped {packet.timestamp_ms}, beyond {horizon}", source, origin)
            return "integrity"
        if self.storage.blocked():
            return "storage"
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            added = await self.committer.submit(Pending(
                cam=cam, ip=ip, ref=packet.frame_ref(), signature=packet.signature, source=source,
                payload=packet.payload, keyframe=packet.keyframe, future=fut))
        except (StoreError, sqlite3.Error, OSError):
            # A full disk or a read-only data directory: nothing is recorded (the frame is not
            # acknowledged, so the camera keeps it), ingest pauses and says why (status, alarm).
            return "storage"
        finally:
            if self._pending.get(key) is fut:
                del self._pending[key]
        if added:
            return "accepted"
        # Another copy landed while the bytes were being stored: same frame, or equivocation.
        return self._same_or_conflict(self.state.frame(cam, packet.seq), packet, ip, source, origin)

    async def _verify(self, cam: bytes, raw: bytes, packet: pk.FramePacket) -> Verdict:
        """Digest and signature under a key valid at the frame's capture time; after a signature
        failure the camera is re-read once (its key may have just been rotated, C6)."""
        verdict = await self.verifier.verify(cam, raw, self.registry.keys_for(cam, packet.timestamp_ms), packet)
        if verdict is Verdict.SIGNATURE:
            before = self.registry.keys_for(cam, packet.timestamp_ms)
            await asyncio.to_thread(self.registry.refresh_camera, cam)
            after = self.registry.keys_for(cam, packet.timestamp_ms)
            if after and after != before:
                verdict = verify_one(raw, after)
        return verdict

    def note_ingest_batch(self, cam: bytes, newest_ms: int, tops: dict[int, int], keyframes: list[int]) -> None:
        """An ingest process's durable batch (`ingest_procs`): the in-memory upper bounds this
        process's own repair path relies on, raised (never lowered), and the gap scan's keyframes."""
        if cam in self._max_ts and (self._max_ts[cam] is None or newest_ms > self._max_ts[cam]):
            self._max_ts[cam] = newest_ms
        for track, seq in tops.items():
            if (cam, track) in self._max_seq and seq > self._max_seq[(cam, track)]:
                self._max_seq[(cam, track)] = seq
        for seq in keyframes:
            kept = self.tracks.get((cam, track_of(seq)))
            if kept is not None:
                kept.keyframes.append(seq)

    def _load_max_seq(self, cam: bytes, track: int) -> int:
        """The highest seq held of `cam` (read from SQLite once, then kept by `_durable`)."""
        top = self.state.max_seq(cam, track)  # per track: audio numbers never hide the video's
        self._max_seq[(cam, track)] = -1 if top is None else top
        return self._max_seq[(cam, track)]

    def _newest_ts(self, cam: bytes) -> int | None:
        """Capture time of the newest frame held (kept in memory: read from SQLite once)."""
        if cam not in self._max_ts:
            self._max_ts[cam] = self.state.max_ts(cam)
        return self._max_ts[cam]

    def _commit_batch(self, batch: list[Pending]) -> list[bool]:
        """In the committer's thread: payloads (one fsync), then rows (one transaction, one fsync)."""
        if self.sealer is not None:
            self.store.put_frames([(p.cam, p.ref.timestamp_ms, p.payload, p.ref.sha256) for p in batch])
        else:
            # Every payload's SHA-256 was checked against its packet's before it got here: the
            # store files it under that digest instead of hashing it again (~4 % of ingest).
            self.store.put_many([p.payload for p in batch], digests=[p.ref.sha256 for p in batch])
        if self._writer is None:
            self._writer = self.state.writer()
        return self._writer.write([(p.cam, p.ip, p.ref, p.signature, p.source) for p in batch])

    def _durable(self, batch: list[Pending], added: list[bool]) -> None:
        """On the loop after a batch's commit: what acknowledgements and counters see."""
        self.storage.ok()
        for p, new in zip(batch, added):
            if not new:
                continue
            self.ingest.count(p.ip, "received" if p.source == "camera" else "repaired")
            newest = self._max_ts.get(p.cam)
            if p.cam in self._max_ts and (newest is None or p.ref.timestamp_ms > newest):
                self._max_ts[p.cam] = p.ref.timestamp_ms
            if p.ref.seq > self._max_seq.get((p.cam, p.ref.track), p.ref.seq):
                self._max_seq[(p.cam, p.ref.track)] = p.ref.seq
            track = self.tracks.get((p.cam, track_of(p.ref.seq)))
            if track and p.keyframe:
                track.keyframes.append(p.ref.seq)
            self.ingest.note_held(p.cam, p.ref.seq)

    def _commit_failed(self, exc: BaseException) -> None:
        if isinstance(exc, (StoreError, sqlite3.Error, OSError)):
            self.storage.failed(exc, self.state)
        else:
            log.error("frame batch failed", extra={"node": self.name, "error": repr(exc)})

    def _same_or_conflict(self, held, packet: pk.FramePacket, ip: str, source: str, origin: str) -> str:
        cam = cached_camera_id(ip)
        arrival = classify_arrival((held.ref.timestamp_ms, held.ref.sha256), packet.timestamp_ms, packet.sha256,
                                   self._newest_ts(cam))
        if arrival is Arrival.DUPLICATE:
            self.ingest.count(ip, "duplicates")
            self.ingest.note_held(cam, packet.seq)
            return "duplicate"
        if arrival is Arrival.RESTART:
            # A reboot numbers from 0 again while its clock goes on (core.gaps.classify_arrival):
            # a named alarm, not an attack. The frames table is keyed by seq, so the restarted
            # stream's frames are refused by name until its numbers pass the old ones.
            self.state.raise_alarm(named_alarm(
                f"{self.name}:{packet.camera_id.hex()}:restart", "camera.restart", packet.camera_id, ip,
                f"seq {packet.seq} captured at {packet.timestamp_ms}, after every frame held: the camera restarted "
                "its numbering", seq_from=packet.seq, ts_from=packet.timestamp_ms))
            self.state.bump(ip, "restart_refused")
            return "restart"
        # Two validly signed frames with one seq: the camera itself equivocates.
        self._alarm_rejected(ip, "security", f"seq {packet.seq} signed twice with different content", source, origin)
        return "conflict"

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
        """Key rotations and revocations take effect within a tick, not at the next miss. While
        the chain is unusable (the producer's health check backs off) it waits too, instead of
        logging one failure per tick."""
        chain = self.health.status
        if chain.checked_at is not None and not chain.reachable:
            return
        start = int(self.state.get_meta("whitelist_checkpoint") or self.deployment.record["contracts"]["Consortium"]["blockNumber"])
        self.state.set_meta("whitelist_checkpoint", str(await asyncio.to_thread(self.registry.watch, start)))
        self.drop_revoked()

    def drop_revoked(self) -> None:
        """I2: a camera revoked on chain leaves no unanchored data here. Its pooled frames (never
        to be anchored: the chain refuses a revoked camera's blocks) leave the pool and the store,
        its open alarms are settled so no peer is asked to repair it. Anchored frames stay: they
        are evidence already. Checked every tick from the registry, so a node that was down when
        the revocation came, or a frame whose commit raced it, is cleaned up at the next tick."""
        for info in self.registry.all():
            if not info.active and self.state.pool_span(info.camera_id) is not None:
                self._drop_unanchored(info.camera_id, info.ip)

    def _drop_unanchored(self, cam: bytes, ip: str) -> None:
        db = self.state.db
        with self.state.transaction():
            db.execute("CREATE TEMP TABLE IF NOT EXISTS revoked_drop (sha256 BLOB PRIMARY KEY)")
            db.execute("DELETE FROM revoked_drop")
            db.execute("INSERT OR IGNORE INTO revoked_drop SELECT sha256 FROM frames WHERE camera_id=? AND anchored=0", (cam,))
            frames = db.execute("DELETE FROM frames WHERE camera_id=? AND anchored=0", (cam,)).rowcount
            alarms = [a.id for a in self.state.alarms(open_only=True, camera=cam)]
            for alarm_id in alarms:
                self.state.clear_alarm(alarm_id, "camera revoked")
            # Content addressing: bytes another held frame still names (same clip, another
            # camera) must stay. One pass over the frames, each probing the dropped set's key.
            dropped = {bytes(r[0]) for r in db.execute("SELECT sha256 FROM revoked_drop")}
            kept = {bytes(r[0]) for r in db.execute(
                "SELECT DISTINCT d.sha256 FROM frames f CROSS JOIN revoked_drop d WHERE d.sha256 = f.sha256")}
            orphans = sorted(dropped - kept)
        delete = getattr(self.store, "delete", None)  # not every ContentStore can delete
        removed = sum(1 for sha in orphans if delete is not None and delete(cid_from_digest(sha)))
        self.state.bump(ip, "revoked_frames_dropped", frames)
        self.tracks.pop(cam, None)
        log.warning("camera revoked: unanchored frames dropped", extra={
            "node": self.name, "camera": ip, "frames": frames, "bytes_deleted": removed, "alarms_settled": len(alarms)})

    # --------------------------------------------------------------- gap scan
    def track(self, cam: bytes, number: int = 0) -> CameraTrack:
        """The gap-scan state of one track of a camera (0 video, 1 audio: `core.block.track_of`);
        each track's numbers are their own sequence."""
        track = self.tracks.get((cam, number))
        if track is None:
            lo, hi = track_bounds(number)
            row = self.state.camera_row(cam)
            # A stream's numbering starts at 0 unless the camera's hello said otherwise
            # ("firstSeq", e.g. a camera that keeps counting across restarts); audio at its base.
            first = (row[3] if row and row[3] is not None else 0) if number == 0 else lo
            track = CameraTrack(watermark=first - 1, checked=first)
            track.keyframes.extend(self.state.recent_keyframes(cam, track=number))
            for kind in ("missing", CameraAnomaly.SEQ_JUMP.value):
                for alarm in self.state.alarms(camera=cam, kind=kind):
                    if alarm.seq_from is not None and alarm.seq_to is not None and lo <= alarm.seq_from <= hi:
                        track.alarmed.add(alarm.seq_from, min(alarm.seq_to, hi))
            self.tracks[(cam, number)] = track
        return track

    async def scan_gaps(self) -> None:
        """I5: a hole in a camera's sequence numbers that stays open for `missing_wait_ms` is
        declared missing: an alarm goes into the pool and to the peers (I6).

        Work per camera and tick is bounded by the frames held: at most MAX_SCAN_FRAMES are read,
        holes are ranges, at most MAX_NEW_ALARMS_PER_TICK alarms of at most MAX_ALARM_SEQS frames
        are raised, and no more than MAX_OPEN_MISSING stay open. A counter that jumps further than
        the time between two frames could explain is a `camera.seq_jump`: only the plausible part
        is asked of the peers, the rest is on record as skipped."""
        now = time.time()
        wait = self.config.missing_wait_ms / 1000
        # The camera rows as the tick begins (one query): a signed end's last seq recorded
        # during the pass is seen at the next tick.
        for cam, (ip, codec_json, last_seq, _) in self.state.camera_rows().items():
            await asyncio.sleep(0)  # one camera's scan never holds the loop for all of them
            info = self.registry.get(cam)
            if info is None or not info.active:  # revoked: nothing to repair (drop_revoked)
                continue
            codec = self._parsed_codec(codec_json)
            for number in codec_tracks(codec):
                await self._scan_track(cam, ip, number, track_step_ms(codec, number), now, wait,
                                       video_last_seq=last_seq)

    def _parsed_codec(self, codec_json: str | None) -> dict[str, Any] | None:
        """A camera row's codec, parsed once per distinct text (not per camera and tick)."""
        if not codec_json:
            return None
        if codec_json not in self._codecs:
            if len(self._codecs) > 4096:
                self._codecs.clear()
            self._codecs[codec_json] = json.loads(codec_json)
        return self._codecs[codec_json]

    async def _scan_track(self, cam: bytes, ip: str, number: int, step_ms: float, now: float, wait: float, *,
                          video_last_seq: int | None) -> None:
        """`scan_gaps` for one track of one camera (its own numbers, watermark and GOP);
        ``video_last_seq`` is the camera row's last seq (track 0's, from a signed end)."""
        track = self.track(cam, number)
        seen = self.state.seqs_after(cam, track.watermark, MAX_SCAN_FRAMES, track_bounds(number)[1])
        complete = len(seen) < MAX_SCAN_FRAMES
        last_seq = None
        if complete:
            last_seq = video_last_seq if number == 0 else self.state.track_last_seq(cam, number)
        # the frame at the watermark, if held, is the "before" of the first hole
        at = self.state.frame(cam, track.watermark) if seen else None
        base = [(track.watermark, at.ref.timestamp_ms, at.ref.keyframe)] if at else []
        holes = find_holes(track.watermark - len(base), base + seen, last_seq)
        # Anything named is named with the codec as it stands now, not as the tick's snapshot had
        # it (a hello that changed the frame rate mid-pass would misjudge a gap): re-read when
        # there are holes, or (`_judge_steps`) at the first step that looks odd.
        def current_step() -> float:
            row = self.state.camera_row(cam)
            return track_step_ms(self._parsed_codec(row[1] if row else None), number)

        if holes:
            self._judge_steps(cam, ip, track, base + seen, holes, current_step(), restep=None)
        else:
            self._judge_steps(cam, ip, track, base + seen, holes, step_ms, restep=current_step)
        # advance the watermark over everything held or already alarmed
        blocking = [h for h in holes if not track.alarmed.covers(h.from_seq, h.to_seq)]
        if blocking:
            track.watermark = blocking[0].from_seq - 1
        elif seen:
            track.watermark = max(seen[-1][0], last_seq if last_seq is not None else -1)
        # forget what lies below the watermark: those holes are settled one way or another
        track.alarmed.drop_below(track.watermark + 1)
        starts = {h.from_seq for h in blocking}
        track.noticed = {k: v for k, v in track.noticed.items() if k in starts or k > track.watermark}
        if not blocking:
            return  # nothing to raise: no count of open alarms read (200 cameras x every tick)
        budget = min(MAX_NEW_ALARMS_PER_TICK, MAX_OPEN_MISSING - self.state.open_alarm_count(cam, "missing"))
        gop = estimate_gop(list(track.keyframes)[-10:])
        for hole in blocking:
            while budget > 0 and (fresh := track.alarmed.first_gap(hole.from_seq, hole.to_seq)) is not None:
                seq_from, seq_to = fresh[0], min(fresh[1], fresh[0] + MAX_ALARM_SEQS - 1)
                if now - track.noticed.setdefault(seq_from, now) < wait:
                    break
                last_key = max((k for k in track.keyframes if k < hole.from_seq), default=None)
                # every audio packet decodes on its own: only a video hole can lose a keyframe
                key_lost = keyframe_lost(hole, last_key, gop) if number == 0 else False
                await self.repairer.raise_missing(cam, ip, seq_from, seq_to, hole, key_lost)
                track.alarmed.add(seq_from, seq_to)
                track.noticed.pop(seq_from, None)
                budget -= 1

    def _judge_steps(self, cam: bytes, ip: str, track: CameraTrack, seen: list, holes: list[Hole], step_ms: float,
                     *, restep: Callable[[], float] | None) -> None:
        """Name what a camera's numbers and clock do between consecutive held frames not judged
        yet: `camera.seq_jump` (the implausible part of the hole is marked skipped, so it is
        neither asked for nor blocking) and `camera.clock_jump` (forward or backwards).
        ``restep``: the current frame step, asked once at the first odd step when ``step_ms``
        may be stale (the step is judged again with it)."""
        holes_after = {h.before[0]: h for h in holes if h.before}
        lead = holes[0] if holes and holes[0].before is None and holes[0].after is not None else None
        slack = MAX_LEAD_SEQS
        if lead is not None and lead.after[0] > track.checked and len(lead.seqs) > slack:
            # The first frame held comes far above the numbering start (a camera that joined
            # mid-count without `firstSeq`, a counter set to 10^9): only the last `slack` numbers
            # before it are asked for (a node that came up late still repairs its first minutes),
            # the rest is on record as skipped.
            skip_to = lead.to_seq - slack
            track.alarmed.add(lead.from_seq, skip_to)
            alarm = named_alarm(f"{self.name}:{CameraAnomaly.SEQ_JUMP.value}:{cam.hex()[:16]}:start-{lead.after[0]}",
                                CameraAnomaly.SEQ_JUMP.value, cam, ip,
                                f"first frame held is seq {lead.after[0]}; seqs {lead.from_seq}-{skip_to} not asked for",
                                lead.from_seq, skip_to, None, lead.after[1])
            if self.state.raise_alarm(alarm):
                self.state.bump(ip, "seq_jumps")
        prev = None
        for cur in seen:
            if prev is not None and cur[0] > track.checked:
                anomaly = check_step(prev, cur, step_ms)
                if anomaly is not None and restep is not None:
                    step_ms, restep = restep(), None
                    anomaly = check_step(prev, cur, step_ms)
                if anomaly is not None:
                    detail = f"seq {prev[0]} at {prev[1]} ms, then seq {cur[0]} at {cur[1]} ms"
                    skip_from = skip_to = None
                    if anomaly is CameraAnomaly.SEQ_JUMP and prev[0] in holes_after:
                        skip_from = prev[0] + 1 + plausible_lost(prev, cur, step_ms)
                        skip_to = cur[0] - 1
                        track.alarmed.add(skip_from, skip_to)
                        detail += f"; seqs {skip_from}-{skip_to} not asked for"
                    alarm = named_alarm(f"{self.name}:{anomaly.value}:{cam.hex()[:16]}:{prev[0]}-{cur[0]}", anomaly.value,
                                        cam, ip, detail, skip_from, skip_to, prev[1], cur[1])
                    if self.state.raise_alarm(alarm):
                        self.state.bump(ip, anomaly.value.split(".", 1)[1] + "s")
                        log.warning("camera anomaly", extra={"node": self.name, "camera": ip, "alarm": anomaly.value,
                                                             "detail": detail})
            prev = cur
        if seen:
            track.checked = max(track.checked, seen[-1][0])

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        counters = self.state.counters()
        for (camera, name), n in self.ingest.counts.items():  # bumps not flushed yet (ingest.flush)
            counters.setdefault(camera, {})[name] = counters.get(camera, {}).get(name, 0) + n
        return {
            "node": self.name,
            "address": self.address,
            "uptimeS": round(time.time() - self.started_at, 1),
            "ingestPort": self.config.ingest_port,
            "counters": counters,
            "openAlarms": self.state.open_alarm_count(),
            "cameras": {ip: "0x" + cid.hex() for cid, ip in self.state.cameras()},
            "chain": self.health.snapshot(),  # cached by the producer's checks: no RPC here
            "storage": (self.ingest_procs.storage(self.storage.snapshot()) if self.ingest_procs is not None
                        else self.storage.snapshot()),
            "ingest": self.ingest.snapshot(),
            "anchoring": self.config.anchoring,
            **({"batch": self.batcher.status()} if self.batcher is not None else {}),
            **({"sealing": {**self.sealer.snapshot(), "framesSealed": self.store.sealed_frames}}
               if self.sealer is not None else {}),
        }

