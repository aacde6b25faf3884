"""Peer repair (I6) and repair feedback (I8), as seed 001 (4) and (6) describe.

1. A node that declares frames missing puts an alarm in its pool and sends it to its neighbours.
2. A neighbour that holds some of the frames sends them straight to the requester, as the
   original signed packets. A neighbour that holds the same alarm (it lost them too) does not
   forward. Any other neighbour forwards the alarm to its own neighbours, once per alarm id
   (de-duplication) and only while hops remain.
3. The requester re-verifies every reply under the camera's device key, exactly as if the
   camera had sent it. A reply that fails, or contradicts a frame already held, is rejected and
   the peer is reported; identical replies from further peers count as confirmations.
4. When every frame of the alarm is held, the alarm is cleared and the neighbours are told.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import Any

import httpx

from ..core import packet as pk
from ..core.cid import cid_from_digest
from ..core.gaps import Hole
from ..store.base import ContentStore, StoreError
from .api import AlarmClearMessage, AlarmMessage, RepairMessage
from .config import NodeConfig
from .peer_client import PacketSink, PeerClient
from .peer_http import MAX_ALARM_SEQS, MAX_REPAIR_PACKETS
from .registry import CameraRegistry
from .state import Alarm, NodeState

log = logging.getLogger(__name__)


class Repairer:
    """Both sides of repair. Given the parts it uses: the node's configuration (name, URL, peers,
    timing, body limit, webhooks), its state and store, the whitelist, the peer client, and the
    sink that checks and keeps a packet a peer sent."""

    def __init__(self, *, config: NodeConfig, state: NodeState, store: ContentStore, registry: CameraRegistry,
                 peers: PeerClient, accept: PacketSink):
        self.config = config
        self.name = config.name
        self.state = state
        self.store = store
        self.registry = registry
        self.peers = peers
        self.accept = accept
        self.seen_alarms: dict[str, float] = {}
        self.sent_rounds: dict[str, tuple[int, float]] = {}
        self.tasks: set[asyncio.Task] = set()
        self.replying = asyncio.Semaphore(4)  # concurrent repair replies, each up to a few MB

    # ------------------------------------------------------------- requester side
    async def raise_missing(self, cam: bytes, ip: str, seq_from: int, seq_to: int, hole: Hole, key_lost: bool) -> None:
        alarm_id = f"{self.name}:missing:{cam.hex()[:16]}:{seq_from}-{seq_to}"
        ts_from = hole.before[1] if hole.before else None
        ts_to = hole.after[1] if hole.after else None
        alarm = Alarm(alarm_id, cam, ip, "missing", seq_from, seq_to, ts_from, ts_to, key_lost, time.time(), None, None,
                      f"{seq_to - seq_from + 1} frame(s) missing" + (", keyframe lost" if key_lost else ""))
        if not self.state.raise_alarm(alarm):
            return
        self.state.bump(ip, "alarms_raised")
        self.seen_alarms[alarm_id] = time.time()
        log.info("frames missing", extra={"node": self.name, "camera": ip, "seqs": f"{seq_from}-{seq_to}", "keyframe_lost": key_lost})
        self.send_alarm(alarm, round_no=0)

    def send_alarm(self, alarm: Alarm, round_no: int) -> None:
        """Broadcast (in the background) one round of an alarm. Each round has its own id, so a
        peer that had nothing the first time (its own copy was still on the way) answers again.
        A hole of more than MAX_ALARM_SEQS frames goes out as several messages (peers refuse
        larger ones), each with its own id."""
        seqs = range(alarm.seq_from, alarm.seq_to + 1)
        pieces = [seqs[i:i + MAX_ALARM_SEQS] for i in range(0, len(seqs), MAX_ALARM_SEQS)]
        self.sent_rounds[alarm.id] = (round_no, time.time())
        for k, piece in enumerate(pieces):
            message = {"alarmId": f"{alarm.id}#{round_no}" + (f".{k}" if len(pieces) > 1 else ""),
                       "origin": self.config.api_url, "originName": self.name, "camera": alarm.camera_ip or "",
                       "cameraId": "0x" + alarm.camera_id.hex(), "seqs": list(piece), "hops": self.config.hop_limit}
            self.spawn(self._broadcast("/peer/v1/alarm", message, exclude=set()))

    async def resend_open_alarms(self) -> None:
        now = time.time()
        every = self.config.missing_wait_ms / 1000
        for alarm in self.state.alarms(open_only=True, kind="missing"):
            round_no, at = self.sent_rounds.get(alarm.id, (0, alarm.raised_at))
            if now - at >= every and now - alarm.raised_at < self.config.repair_deadline_ms / 1000:
                self.send_alarm(alarm, round_no + 1)
        # forget de-duplication entries older than any alarm can live
        horizon = now - 10 * max(self.config.repair_deadline_ms / 1000, 60)
        self.seen_alarms = {k: v for k, v in self.seen_alarms.items() if v > horizon}

    def spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)  # keep a reference until done, or the task may vanish mid-flight
        task.add_done_callback(self.tasks.discard)

    async def on_repair(self, msg: RepairMessage, signer: str) -> dict[str, Any]:
        """Replies from peers: re-verify each packet under the camera's key before keeping it.
        A bad reply is reported against the node account that signed it (`signer`), never
        against the name the message claims; repairs are credited to the claimed name (feedback)."""
        peer = msg.sender or signer
        alarm = self.state.alarm(msg.alarmId.split("#")[0])
        expect = alarm.camera_id if alarm else None
        accepted = rejected = confirmed = 0
        for encoded in msg.packets:
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (ValueError, TypeError):
                rejected += 1
                self.state.report_peer(signer, expect, None, "undecodable repair payload")
                continue
            outcome = await self.accept(raw, source=f"repair:{peer}", expect_camera=expect)
            if outcome == "accepted":
                accepted += 1
                p = pk.decode_packet(raw)
                self.state.record_repair(p.camera_id, p.camera_ip, p.seq, peer, alarm.id if alarm else None)
            elif outcome == "duplicate":
                confirmed += 1
                p = pk.decode_packet(raw)
                self.state.confirm_repair(p.camera_id, p.seq)
            else:
                rejected += 1
                self.state.report_peer(signer, expect, None, f"repair reply rejected ({outcome}; claimed to be from {peer!r})"[:300])
                self.state.bump(alarm.camera_ip if alarm else "*", "peer_reports")
        if accepted:
            await self.clear_satisfied_alarms()
        return {"accepted": accepted, "confirmed": confirmed, "rejected": rejected}

    async def clear_satisfied_alarms(self, resolution: str = "repaired") -> None:
        for alarm in self.state.alarms(open_only=True, kind="missing"):
            if all(self.state.frame(alarm.camera_id, s) for s in range(alarm.seq_from, alarm.seq_to + 1)):
                await self.clear(alarm, resolution)

    async def clear(self, alarm: Alarm, resolution: str) -> None:
        if not self.state.clear_alarm(alarm.id, resolution):
            return
        self.state.bump(alarm.camera_ip or "*", "alarms_cleared")
        log.info("alarm cleared", extra={"node": self.name, "alarm": alarm.id, "resolution": resolution})
        self.sent_rounds.pop(alarm.id, None)
        self.spawn(self._broadcast("/peer/v1/alarm/clear", {"alarmId": alarm.id, "camera": alarm.camera_ip,
                                                             "seqFrom": alarm.seq_from, "seqTo": alarm.seq_to,
                                                             "resolution": resolution, "from": self.name}, exclude=set()))
        await self.feedback({"type": "repair", "node": self.name, "camera": alarm.camera_ip, "seqFrom": alarm.seq_from,
                             "seqTo": alarm.seq_to, "resolution": resolution, "keyframeLost": alarm.keyframe_lost})

    async def feedback(self, event: dict[str, Any]) -> None:
        """I8: repair outcomes go to the camera's owner and third parties: they can read them from
        GET /api/v1/repairs and /api/v1/alarms, and configured webhooks receive each one."""
        for url in self.config.feedback_webhooks:
            try:
                await self.peers.post(url, event)
            except httpx.HTTPError as exc:
                log.warning("feedback webhook failed", extra={"url": url, "error": str(exc)})

    # --------------------------------------------------------------- peer side
    async def on_alarm(self, msg: AlarmMessage, signer: str) -> dict[str, Any]:
        """An alarm from an authenticated consortium node (`signer`); the API has already capped
        its seqs (MAX_ALARM_SEQS) and hops (the hop limit)."""
        if msg.alarmId in self.seen_alarms:
            return {"status": "duplicate"}
        origin = msg.origin.rstrip("/")
        if origin not in {p.rstrip("/") for p in self.config.peers}:
            # Frames go only to consortium peers: an alarm must not turn a node into a sender of
            # evidence to any URL someone names.
            return {"status": "refused", "reason": "origin is not a peer of this node"}
        cam = bytes.fromhex(msg.cameraId[2:])
        info = self.registry.get(cam)
        if info is None:
            return {"status": "refused", "reason": "unknown camera"}
        self.seen_alarms[msg.alarmId] = time.time()
        seqs = list(dict.fromkeys(msg.seqs))
        held = [self.state.frame(cam, s) for s in seqs]
        have = [(s, f) for s, f in zip(seqs, held) if f is not None]
        lacking = [s for s, f in zip(seqs, held) if f is None]
        if have:
            self.spawn(self._reply({"alarmId": msg.alarmId, "camera": info.ip, "origin": origin}, cam, have))
        same_alarm = bool(lacking) and any(
            a.seq_from <= s <= a.seq_to for a in self.state.alarms(open_only=True, camera=cam, kind="missing") for s in lacking
        )
        forwarded = False
        if lacking and not same_alarm and msg.hops > 0:
            forward = msg.model_dump() | {"seqs": lacking, "hops": msg.hops - 1}
            self.spawn(self._broadcast("/peer/v1/alarm", forward, exclude={origin, msg.via.rstrip("/")}))
            forwarded = True
        self.state.bump(info.ip, "alarms_answered" if have else "alarms_heard")
        log.debug("alarm heard", extra={"node": self.name, "from": signer, "alarm": msg.alarmId, "have": len(have)})
        return {"status": "ok", "have": len(have), "sameAlarm": same_alarm, "forwarded": forwarded}

    async def on_alarm_clear(self, msg: AlarmClearMessage) -> dict[str, Any]:
        """A neighbour's alarm is settled: nothing to keep but a counter (for whitelisted cameras)."""
        ip = msg.camera
        self.state.bump(ip if self.registry.by_ip(ip) else "*", "neighbour_alarms_cleared")
        return {"status": "ok"}

    async def _reply(self, msg: dict[str, Any], cam: bytes, have: list) -> None:
        async with self.replying:
            await self._send_reply(msg, cam, have)

    async def _send_reply(self, msg: dict[str, Any], cam: bytes, have: list) -> None:
        """The held frames as original signed packets, in as many POSTs as the peers' body limit
        needs (every node runs with the same `http_max_body_bytes` unless told otherwise)."""
        # The POST body: {"alarmId": ..., "from": ..., "packets": ["<base64>", ...]}
        budget = self.config.http_max_body_bytes - 64 - len(json.dumps(msg["alarmId"])) - len(json.dumps(self.name))
        batch: list[str] = []
        size = 0
        for seq, frame in have:
            try:
                payload = await asyncio.to_thread(self.store.get, cid_from_digest(frame.ref.sha256))
            except StoreError:
                continue
            encoded = base64.b64encode(self.packet_bytes(msg["camera"], frame, payload)).decode()
            cost = len(encoded) + 4  # quotes, comma, space
            if cost > budget:
                log.warning("frame too large for a repair reply", extra={"node": self.name, "seq": seq, "bytes": len(encoded)})
                continue
            if batch and (size + cost > budget or len(batch) >= MAX_REPAIR_PACKETS):
                await self._post_reply(msg, batch)
                batch, size = [], 0
            batch.append(encoded)
            size += cost
        if batch:
            await self._post_reply(msg, batch)

    async def _post_reply(self, msg: dict[str, Any], packets: list[str]) -> None:
        try:
            r = await self.peers.post(msg["origin"] + "/peer/v1/repair",
                                      {"alarmId": msg["alarmId"], "from": self.name, "packets": packets})
            if r.status_code == 200:
                self.state.bump(str(msg["camera"]), "frames_served", len(packets))
            else:
                log.warning("repair reply refused", extra={"node": self.name, "to": msg["origin"], "status": r.status_code})
        except httpx.HTTPError as exc:
            log.warning("repair reply failed", extra={"node": self.name, "to": msg["origin"], "error": str(exc)})

    @staticmethod
    def packet_bytes(camera_ip: str, frame, payload: bytes) -> bytes:
        r = frame.ref
        return pk.assemble_packet(camera_ip, r.seq, r.timestamp_ms, r.keyframe, payload, r.sha256, frame.signature, r.dts_ms)

    async def _broadcast(self, path: str, message: dict[str, Any], exclude: set[str]) -> None:
        # Signed by the peer client's PeerSigning auth; the responses are verified the same way.
        await self.peers.broadcast(path, message, exclude)
