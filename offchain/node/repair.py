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

All of it travels in batches (docs/NODES.md, "Repair in batches"): alarms and clears raised
within `repair_coalesce_ms` go to each peer as one signed request (`/peer/v1/alarms`,
`/peer/v1/alarms/clear`, bounded by `core.repair_batches`), and a peer answers one such request
with one repair reply for all its holes. The single-alarm routes are still served.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import Counter
from typing import Any, Awaitable, Callable, Hashable, Sequence, TypeVar

import httpx

from ..core import packet as pk
from ..core.cid import cid_from_digest
from ..core.gaps import Hole
from ..core.repair_batches import (MAX_ALARMS_PER_REQUEST, MAX_CLEARS_PER_REQUEST, MAX_SEQS_PER_REQUEST, ReplyPacker,
                                   ReplyPart, pack, split_seqs)
from ..store.base import ContentStore, StoreError
from .api import AlarmBatchMessage, AlarmClearBatchMessage, AlarmClearMessage, AlarmItem, AlarmMessage, RepairMessage
from .config import NodeConfig
from .peer_client import PacketSink, PeerClient
from .peer_http import MAX_ALARM_SEQS, MAX_REPAIR_PACKETS
from .registry import CameraRegistry
from .state import Alarm, NodeState

log = logging.getLogger(__name__)

T = TypeVar("T")
ACCEPT_CONCURRENCY = 64  # packets of one repair reply checked and written at once (group commit)
READ_CHUNK = 64  # frames a repair reply reads from the store per thread hop (bounded memory per hop)
Reply = tuple[str, str, bytes, list]  # (alarm id as heard, camera ip, camera id, [(seq, frame)] held)


class Coalescer:
    """Gathers items per key for `delay_s` after the first one, then hands each key's items to
    `flush` in one call: what the gap scan raises in one tick (and its clears) leaves together."""

    def __init__(self, delay_s: float, flush: Callable[[Any, list[Any]], Awaitable[None]],
                 spawn: Callable[[Awaitable[None]], None]):
        self.delay_s = delay_s
        self.flush = flush
        self.spawn = spawn
        self.pending: dict[Hashable, list[Any]] = {}
        self.scheduled = False

    def add(self, key: Hashable, item: Any) -> None:
        self.pending.setdefault(key, []).append(item)
        if not self.scheduled:
            self.scheduled = True
            self.spawn(self._run())

    async def _run(self) -> None:
        await asyncio.sleep(self.delay_s)
        pending, self.pending, self.scheduled = self.pending, {}, False
        for key, items in pending.items():
            await self.flush(key, items)


async def bounded(coros: Sequence[Awaitable[T]], limit: int) -> list[T]:
    """The results of `coros` in order, at most `limit` running at once."""
    gate = asyncio.Semaphore(limit)

    async def one(c: Awaitable[T]) -> T:
        async with gate:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


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
        delay = max(config.repair_coalesce_ms, 0) / 1000
        self.alarm_out = Coalescer(delay, self._flush_alarms, self.spawn)
        self.clear_out = Coalescer(delay, self._flush_clears, self.spawn)

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
        """Queue one round of an alarm for every peer (sent with the others of this tick). Each
        round has its own id, so a peer that had nothing the first time (its own copy was still on
        the way) answers again. A hole of more than MAX_ALARM_SEQS frames goes out as several
        holes (peers refuse larger ones), each with its own id."""
        pieces = split_seqs(alarm.seq_from, alarm.seq_to, MAX_ALARM_SEQS)
        self.sent_rounds[alarm.id] = (round_no, time.time())
        key = (self.config.api_url, self.name, self.config.hop_limit, frozenset[str]())
        for k, piece in enumerate(pieces):
            self.alarm_out.add(key, {"alarmId": f"{alarm.id}#{round_no}" + (f".{k}" if len(pieces) > 1 else ""),
                                     "camera": alarm.camera_ip or "", "cameraId": "0x" + alarm.camera_id.hex(),
                                     "seqs": list(piece)})

    async def _flush_alarms(self, key: tuple[str, str, int, frozenset[str]], items: list[dict[str, Any]]) -> None:
        origin, origin_name, hops, exclude = key
        for group in pack(items, lambda i: len(i["seqs"]), MAX_ALARMS_PER_REQUEST, MAX_SEQS_PER_REQUEST):
            message = {"origin": origin, "originName": origin_name, "hops": hops, "alarms": group}
            self.spawn(self._broadcast("/peer/v1/alarms", message, exclude=set(exclude)))

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

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)  # keep a reference until done, or the task may vanish mid-flight
        task.add_done_callback(self.tasks.discard)

    async def on_repair(self, msg: RepairMessage, signer: str) -> dict[str, Any]:
        """Replies from peers: re-verify each packet under the camera's key before keeping it.
        A reply answers one alarm (`alarmId`) or several (`alarmIds`); each packet must belong to
        the camera of one of them. A bad reply is reported against the node account that signed
        it (`signer`), never against the name the message claims; repairs are credited to the
        claimed name (feedback)."""
        self.state.bump("*", "peer_repair_requests")
        peer = msg.sender or signer
        ids = dict.fromkeys(i.split("#")[0] for i in (msg.alarmIds or [msg.alarmId]) if i)
        alarms = [a for a in (self.state.alarm(i) for i in ids) if a is not None]
        results = await bounded([self._take_repair(encoded, alarms, peer, signer) for encoded in msg.packets],
                                ACCEPT_CONCURRENCY)
        tally = Counter(results)
        if tally["accepted"]:
            await self.clear_satisfied_alarms()
        return {"accepted": tally["accepted"], "confirmed": tally["confirmed"], "rejected": tally["rejected"]}

    @staticmethod
    def _alarm_for(raw: bytes, alarms: list[Alarm]) -> Alarm | None:
        """The alarm a repaired packet answers: of its camera, covering its seq if one does;
        else the first alarm (so a packet of another camera is checked against it and refused)."""
        try:
            p = pk.decode_packet(raw, check_digest=False)
        except Exception:  # noqa: BLE001 - malformed: `accept` names the failure
            return alarms[0] if alarms else None
        cam = p.camera_id
        mine = [a for a in alarms if a.camera_id == cam]
        covering = [a for a in mine if a.seq_from is not None and a.seq_to is not None and a.seq_from <= p.seq <= a.seq_to]
        return (covering or mine or alarms or [None])[0]

    async def _take_repair(self, encoded: str, alarms: list[Alarm], peer: str, signer: str) -> str:
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (ValueError, TypeError):
            self.state.report_peer(signer, alarms[0].camera_id if alarms else None, None, "undecodable repair payload")
            return "rejected"
        alarm = self._alarm_for(raw, alarms)
        expect = alarm.camera_id if alarm else None
        outcome = await self.accept(raw, source=f"repair:{peer}", expect_camera=expect)
        if outcome == "accepted":
            p = pk.decode_packet(raw, check_digest=False)
            self.state.record_repair(p.camera_id, p.camera_ip, p.seq, peer, alarm.id if alarm else None)
            return "accepted"
        if outcome == "duplicate":
            p = pk.decode_packet(raw, check_digest=False)
            self.state.confirm_repair(p.camera_id, p.seq)
            return "confirmed"
        self.state.report_peer(signer, expect, None, f"repair reply rejected ({outcome}; claimed to be from {peer!r})"[:300])
        self.state.bump(alarm.camera_ip if alarm and alarm.camera_ip else "*", "peer_reports")
        return "rejected"

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
        self.clear_out.add((), {"alarmId": alarm.id, "camera": alarm.camera_ip or "", "seqFrom": alarm.seq_from,
                                "seqTo": alarm.seq_to, "resolution": resolution})
        await self.feedback({"type": "repair", "node": self.name, "camera": alarm.camera_ip, "seqFrom": alarm.seq_from,
                             "seqTo": alarm.seq_to, "resolution": resolution, "keyframeLost": alarm.keyframe_lost})

    async def _flush_clears(self, key: tuple[()], items: list[dict[str, Any]]) -> None:
        for group in pack(items, lambda _: 1, MAX_CLEARS_PER_REQUEST, MAX_CLEARS_PER_REQUEST):
            self.spawn(self._broadcast("/peer/v1/alarms/clear", {"from": self.name, "clears": group}, exclude=set()))

    async def feedback(self, event: dict[str, Any]) -> None:
        """I8: repair outcomes go to the camera's owner and third parties: they can read them from
        GET /api/v1/repairs and /api/v1/alarms, and configured webhooks receive each one."""
        for url in self.config.feedback_webhooks:
            try:
                await self.peers.post(url, event)
            except httpx.HTTPError as exc:
                log.warning("feedback webhook failed", extra={"url": url, "error": str(exc)})

    # --------------------------------------------------------------- peer side
    def _origin_refused(self, origin: str) -> dict[str, Any] | None:
        if origin not in {p.rstrip("/") for p in self.config.peers}:
            # Frames go only to consortium peers: an alarm must not turn a node into a sender of
            # evidence to any URL someone names.
            return {"status": "refused", "reason": "origin is not a peer of this node"}
        return None

    async def on_alarm(self, msg: AlarmMessage, signer: str) -> dict[str, Any]:
        """One alarm from an authenticated consortium node (`signer`); the API has already capped
        its seqs (MAX_ALARM_SEQS) and hops (the hop limit)."""
        self.state.bump("*", "peer_alarm_requests")
        if msg.alarmId in self.seen_alarms:
            return {"status": "duplicate"}
        origin = msg.origin.rstrip("/")
        if (refused := self._origin_refused(origin)) is not None:
            return refused
        result = self._hear_all([msg], origin, msg.originName, msg.hops, msg.via, signer)[0]
        result.pop("alarmId", None)
        return result

    async def on_alarms(self, msg: AlarmBatchMessage, signer: str) -> dict[str, Any]:
        """Many alarms in one request (the API has capped seqs per alarm and in all, and hops):
        answered per alarm, with one repair reply for all the frames held."""
        self.state.bump("*", "peer_alarm_requests")
        origin = msg.origin.rstrip("/")
        if (refused := self._origin_refused(origin)) is not None:
            return refused
        return {"status": "ok", "alarms": self._hear_all(msg.alarms, origin, msg.originName, msg.hops, msg.via, signer)}

    def _hear_all(self, items: Sequence[AlarmItem | AlarmMessage], origin: str, origin_name: str, hops: int, via: str,
                  signer: str) -> list[dict[str, Any]]:
        replies: list[Reply] = []
        results = []
        forward_key = (origin, origin_name, hops - 1, frozenset({origin, via.rstrip("/")}))
        for item in items:
            result, reply, lacking = self._hear(item, hops, signer)
            results.append(result)
            if reply is not None:
                replies.append(reply)
            if lacking:
                self.alarm_out.add(forward_key, {"alarmId": item.alarmId, "camera": item.camera,
                                                 "cameraId": item.cameraId, "seqs": lacking})
        if replies:
            self.spawn(self._reply(origin, replies))
        return results

    def _hear(self, item: AlarmItem | AlarmMessage, hops: int, signer: str) -> tuple[dict[str, Any], Reply | None, list[int]]:
        """One alarm: what this node holds of it (to send back), and the seqs to forward."""
        if item.alarmId in self.seen_alarms:
            return {"alarmId": item.alarmId, "status": "duplicate"}, None, []
        cam = bytes.fromhex(item.cameraId[2:])
        info = self.registry.get(cam)
        if info is None:
            return {"alarmId": item.alarmId, "status": "refused", "reason": "unknown camera"}, None, []
        self.seen_alarms[item.alarmId] = time.time()
        seqs = list(dict.fromkeys(item.seqs))
        held = [self.state.frame(cam, s) for s in seqs]
        have = [(s, f) for s, f in zip(seqs, held) if f is not None]
        lacking = [s for s, f in zip(seqs, held) if f is None]
        same_alarm = bool(lacking) and any(
            a.seq_from <= s <= a.seq_to for a in self.state.alarms(open_only=True, camera=cam, kind="missing") for s in lacking
        )
        forward = lacking if lacking and not same_alarm and hops > 0 else []
        self.state.bump(info.ip, "alarms_answered" if have else "alarms_heard")
        log.debug("alarm heard", extra={"node": self.name, "from": signer, "alarm": item.alarmId, "have": len(have)})
        result = {"alarmId": item.alarmId, "status": "ok", "have": len(have), "sameAlarm": same_alarm,
                  "forwarded": bool(forward)}
        return result, ((item.alarmId, info.ip, cam, have) if have else None), forward

    async def on_alarm_clear(self, msg: AlarmClearMessage) -> dict[str, Any]:
        """A neighbour's alarm is settled: nothing to keep but a counter (for whitelisted cameras)."""
        self.state.bump("*", "peer_clear_requests")
        ip = msg.camera
        self.state.bump(ip if self.registry.by_ip(ip) else "*", "neighbour_alarms_cleared")
        return {"status": "ok"}

    async def on_alarms_clear(self, msg: AlarmClearBatchMessage) -> dict[str, Any]:
        """Many of a neighbour's alarms are settled: one counter bump per camera."""
        self.state.bump("*", "peer_clear_requests")
        per_camera = Counter(c.camera if self.registry.by_ip(c.camera) else "*" for c in msg.clears)
        for ip, n in per_camera.items():
            self.state.bump(ip, "neighbour_alarms_cleared", n)
        return {"status": "ok", "cleared": len(msg.clears)}

    async def _reply(self, origin: str, replies: list[Reply]) -> None:
        async with self.replying:
            await self._send_reply(origin, replies)

    async def _send_reply(self, origin: str, replies: list[Reply]) -> None:
        """The held frames of every alarm heard in one request, as original signed packets, in as
        few POSTs as the peers' body limit allows (every node runs with the same
        `http_max_body_bytes` unless told otherwise)."""
        # The POST body: {"alarmId": <first>, "alarmIds": [...], "from": ..., "packets": ["<base64>", ...]}
        longest_id = max(len(json.dumps(r[0])) for r in replies)
        budget = self.config.http_max_body_bytes - 96 - longest_id - len(json.dumps(self.name))
        packer = ReplyPacker(budget=budget, max_packets=MAX_REPAIR_PACKETS)
        cameras = {alarm_id: ip for alarm_id, ip, _, _ in replies}
        todo = [(alarm_id, ip, seq, frame) for alarm_id, ip, _, have in replies for seq, frame in have]
        for i in range(0, len(todo), READ_CHUNK):
            chunk = todo[i:i + READ_CHUNK]
            # One thread hop per chunk, not one per frame: on a node busy ingesting 200 cameras
            # each hop waits its turn of the event loop (67 of them were most of a repair).
            payloads = await asyncio.to_thread(self._payloads, [f.ref.sha256 for _, _, _, f in chunk])
            for (alarm_id, ip, seq, frame), payload in zip(chunk, payloads):
                if payload is None:
                    continue
                encoded = base64.b64encode(self.packet_bytes(ip, frame, payload)).decode()
                try:
                    part = packer.add(alarm_id, encoded)
                except ValueError:
                    log.warning("frame too large for a repair reply", extra={"node": self.name, "seq": seq, "bytes": len(encoded)})
                    continue
                if part is not None:
                    await self._post_reply(origin, part, cameras)
        if (last := packer.finish()) is not None:
            await self._post_reply(origin, last, cameras)

    def _payloads(self, digests: list[bytes]) -> list[bytes | None]:
        """Worker thread: the stored payloads of frames (None: not in the store any more)."""
        out: list[bytes | None] = []
        for digest in digests:
            try:
                out.append(self.store.get(cid_from_digest(digest)))
            except StoreError:
                out.append(None)
        return out

    async def _post_reply(self, origin: str, part: ReplyPart, cameras: dict[str, str]) -> None:
        try:
            r = await self.peers.post(origin + "/peer/v1/repair", {"alarmId": part.alarm_ids[0], "alarmIds": list(part.alarm_ids),
                                                                   "from": self.name, "packets": list(part.packets)})
            if r.status_code == 200:
                served = Counter[str]()
                for alarm_id, n in zip(part.alarm_ids, part.counts):
                    served[cameras.get(alarm_id, "*")] += n
                for ip, n in served.items():
                    self.state.bump(ip, "frames_served", n)
            else:
                log.warning("repair reply refused", extra={"node": self.name, "to": origin, "status": r.status_code})
        except httpx.HTTPError as exc:
            log.warning("repair reply failed", extra={"node": self.name, "to": origin, "error": str(exc)})

    @staticmethod
    def packet_bytes(camera_ip: str, frame: Any, payload: bytes) -> bytes:
        r = frame.ref
        return pk.assemble_packet(camera_ip, r.seq, r.timestamp_ms, r.keyframe, payload, r.sha256, frame.signature, r.dts_ms)

    async def _broadcast(self, path: str, message: dict[str, Any], exclude: set[str]) -> None:
        # Signed by the peer client's PeerSigning auth; the responses are verified the same way.
        await self.peers.broadcast(path, message, exclude)
