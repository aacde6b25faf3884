"""The node's camera listener: handshake, limits, signed control and acknowledgements (issue 8).

One connection, in order (the wire format is in ``offchain.core.wire``, the limits and their
defaults in docs/TRANSPORT.md):

1. **Admission.** Over ``ingest_max_connections`` open connections, or
   ``ingest_max_per_address`` from the connecting address, the connection is closed at once.
2. **Handshake.** The node writes a challenge (a fresh random nonce) and waits at most
   ``ingest_handshake_timeout_ms`` for the first message, which must be a hello signed by a
   whitelisted camera's device key over that nonce; before it, a message may be at most
   ``wire.MAX_CONTROL_BYTES`` (64 KiB), so an anonymous connection holds almost no memory.
   Anything else gets a reject message, a (coalesced) security alarm, and the connection closes.
   The hello binds the connection to that camera; the codec it carries is recorded together with
   the signed bytes (`Node.signed_hello`), so the codec a manifest commits is one the camera signed.
3. **Stream.** Frames of that camera only, at most ``ingest_max_message_bytes`` each, read in
   chunks of what completes the current message + 64 KiB. Frames are pipelined (issue 9,
   `offchain.node.pipeline`): up to ``ingest_inflight_per_connection`` per connection under the
   node-wide `Budget`; when either is full the socket is not read (TCP backpressure). Answers are
   handled in arrival order by a second task. Nothing for ``ingest_idle_timeout_ms``: closed. Invalid messages (integrity failures, unsigned or badly
   signed control messages) are counted; above ``ingest_max_invalid`` + 1/10 of the valid ones
   the connection is closed. A frame with a bad device signature (I2) closes it at once.
4. **Acknowledgements.** Every ``ingest_ack_interval_ms`` at most, when something changed, the
   node writes the camera's cumulative acknowledgement (one ticker task for every connection):
   every seq durable here (its group commit's fsyncs done),
   whatever brought it (this camera, a reconnect, a peer's repair). After a signed end it writes
   one at once. A camera that does not read its acknowledgements (write buffer above 1 MiB) is
   closed.
5. **End.** A signed end records the camera's last seq (stream state ``ended``); a connection
   that closes without one leaves the stream ``unended`` (`Node.stream_state`), which the
   producer can declare.

With ``ingest_processes`` > 0 (`offchain.node.ingest_procs`) steps 1-2 stay in the node's main
process (``handoff`` passes the proven connection on) and steps 3-5 run in the ingest process that
owns the camera (`IngestServer.adopt`).
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import logging
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NoReturn

from ..chain.ledger import VideoLedgerClient
from ..core import packet as pk
from ..core import wire
from ..core.acks import SeqRanges
from ..core.block import MAX_TRACKS, cached_camera_id, track_bounds
from . import outages
from .state import Alarm

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger(__name__)

_MAX_WRITE_BUFFER = 1024 * 1024  # node -> camera bytes not yet taken by the camera
_CHUNK = 256 * 1024
_READ_AHEAD = 64 * 1024  # read beyond the message under way (whole frames per read, bounded)
_RANGES_LOADED = 20_000          # held seqs above the contiguous run read back after a restart
MAX_TAIL_SEQS = 10_000           # the most frames an end message may declare lost after the last held one


class StreamState(StrEnum):
    STREAMING = "streaming"  # a camera connection with a valid hello is (or was last) open
    ENDED = "ended"          # the camera sent a signed end
    UNENDED = "unended"      # its last connection closed without a signed end


@dataclass(frozen=True)
class StreamRecord:
    state: StreamState
    at: float
    last_seq: int | None = None  # from the signed end (ENDED), else the highest seq held


_Inflight = tuple[bytes, "asyncio.Future[str]", list[tuple[str | None, str, str, str, str]]]


class _Close(Exception):
    """End this connection (after an optional reject message)."""


@dataclass
class _Conn:
    host: str
    nonce: str
    writer: asyncio.StreamWriter
    msgs: wire.MessageReader
    ready: deque[bytes] = field(default_factory=deque)
    camera: bytes | None = None
    ip: str | None = None
    valid: int = 0
    invalid: int = 0
    ended: bool = False
    superseded: bool = False
    released: bool = False  # its slot in the connection counts was already given back
    handed: bool = False    # handed to an ingest process after its hello (`ingest_procs`)
    acked_version: int = -1
    last_rx: float = field(default_factory=time.monotonic)
    reader: asyncio.StreamReader | None = None
    waiting_since: float | None = None         # awaiting its socket since (None: not reading now)
    inflight: int = 0                          # its frames in the pipeline now
    room: asyncio.Future[None] | None = None   # set when one of them is answered

    @property
    def origin(self) -> str:
        return f"camera@{self.host}"


class IngestServer:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config
        self.open_total = 0
        self.per_address: Counter[str] = Counter()
        self.held: dict[bytes, SeqRanges] = {}
        self.counts: Counter[tuple[str, str]] = Counter()  # (camera or "*", counter) not yet in SQLite
        self.alarms: dict[str, tuple[Alarm, int]] = {}      # coalesced alarms not yet in SQLite
        self.unproven: dict[int, _Conn] = {}     # connections still in their handshake, oldest first
        self.unproven_per_address: Counter[str] = Counter()
        self.by_camera: dict[bytes, _Conn] = {}  # the one stream connection of each camera
        self.dirty: set[bytes] = set()  # cameras whose held ranges changed since their last ack
        self._ticker: asyncio.Task[None] | None = None
        # Several ingest processes (`offchain.node.ingest_procs`): in the main process `handoff`
        # passes a proven connection to its camera's process, `on_held` tells that process of
        # frames made durable here (a peer's repair); None: this process streams its cameras.
        self.handoff: Callable[[_Conn, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]] | None = None
        self.on_held: Callable[[bytes, int], None] | None = None
        self.procs: Any = None  # the main process's `IngestProcs` (for the status page)

    def snapshot(self) -> dict[str, Any]:
        """Open connections now and the pipeline's fill (for a status page)."""
        if self.procs is not None:
            return self.procs.snapshot(self)
        return {"openConnections": self.open_total, "inHandshake": len(self.unproven), "cameras": len(self.by_camera),
                "addresses": len(self.per_address), "pipeline": self.node.budget.snapshot(),
                "commits": {"batches": self.node.committer.batches, "frames": self.node.committer.frames}}

    # ------------------------------------------------------------------ counters and alarms
    def count(self, camera: str, name: str) -> None:
        """A counter bump, written with the next `flush` (a flood costs no SQLite write per event)."""
        self.counts[(camera, name)] += 1

    def alarm(self, alarm: Alarm) -> None:
        """A coalesced alarm (its id names source and kind): the first occurrence of an id is
        written at once, later ones are counted and written with the next `flush`."""
        held = self.alarms.get(alarm.id)
        if held is None and self.node.state.alarm_count(alarm.id) is None:
            self.node.state.raise_coalesced_alarm(alarm)
            self.alarms[alarm.id] = (alarm, 0)
        else:
            self.alarms[alarm.id] = (alarm, (held[1] if held else 0) + 1)

    def flush(self) -> None:
        counts, self.counts = self.counts, Counter()
        alarms, self.alarms = self.alarms, {}
        state = self.node.state
        with state.transaction():
            for (camera, name), n in counts.items():
                state.bump(camera, name, n)
        for alarm, n in alarms.values():
            if n:
                state.raise_coalesced_alarm(alarm, by=n)

    async def flush_forever(self, every_s: float = 0.5) -> None:
        profile = _Profile.from_env()
        while True:
            await asyncio.sleep(every_s)
            if profile is not None:
                profile.maybe_dump()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a failed flush is retried with the next one
                log.exception("ingest counter flush failed", extra={"node": self.node.name})

    # ------------------------------------------------------------------ connection
    def protocol(self) -> asyncio.Protocol:
        """Protocol factory for ``loop.create_server``: a connection over a cap is aborted in
        ``connection_made``, before any task or buffer exists, so refusing a flood is cheap."""
        return _GateProtocol(self)

    def would_admit(self, host: str) -> bool:
        cfg = self.config
        return (self.per_address[host] < cfg.ingest_max_per_address
                and self.unproven_per_address[host] < cfg.ingest_max_unproven_per_address
                and (self.open_total < cfg.ingest_max_connections or bool(self.unproven)))

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._admit(host):
            self.count("*", "refused_connections")
            writer.transport.abort()
            return
        self.open_total += 1
        self.per_address[host] += 1
        conn = _Conn(host, os.urandom(16).hex(), writer, wire.MessageReader(wire.MAX_CONTROL_BYTES), reader=reader)
        self._unproven_add(conn)
        try:
            writer.write(wire.frame_message(wire.challenge_message(conn.nonce, self.node.name)))
            await self._handshake(conn, reader)
            self._unproven_drop(conn)
            if self.handoff is not None:
                # Several ingest processes (`ingest_procs`): the camera's owner streams it from
                # here on; its slot in the caps is given back when that process reports the close.
                conn.handed = await self.handoff(conn, reader, writer)
                return
            await self._bound(conn, reader)
        except _Close:
            pass
        except asyncio.TimeoutError:
            self.count("*", "closed_timeout")
        except wire.WireError as exc:
            self.count("*", "rejected_wire")
            log.warning("camera connection dropped", extra={"node": self.node.name, "peer": host, "reason": str(exc)})
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self._unproven_drop(conn)
            if not conn.handed:
                self._closed(conn)
            writer.close()

    async def _bound(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        """A connection whose hello was accepted: bound to its camera, acknowledged, streamed."""
        self._bind(conn)
        self._ack(conn, force=True)  # what is held already (a camera that reconnects learns it at once)
        self._ensure_ticker()
        await self._stream(conn, reader)

    def _closed(self, conn: _Conn) -> None:
        if conn.camera is not None and self.by_camera.get(conn.camera) is conn:
            del self.by_camera[conn.camera]
        self._release(conn)
        if conn.camera is not None and not conn.ended and not conn.superseded:
            self._note_stream(conn.camera, StreamState.UNENDED, self.node.state.max_seq(conn.camera, 0))

    async def adopt(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, nonce: str,
                    ip: str) -> None:
        """In an ingest process (`ingest_procs`): a connection whose handshake the node's main
        process did (admission, signed hello over `nonce`, hello recorded) streams here. The
        caps are the main process's; this process counts its own connections only."""
        self.open_total += 1
        self.per_address[host] += 1
        conn = _Conn(host, nonce, writer, wire.MessageReader(max(wire.MAX_CONTROL_BYTES, self.config.ingest_max_message_bytes)),
                     reader=reader, camera=cached_camera_id(ip), ip=ip)
        try:
            await self._bound(conn, reader)
        except _Close:
            pass
        except wire.WireError as exc:
            self.count("*", "rejected_wire")
            log.warning("camera connection dropped", extra={"node": self.node.name, "peer": host, "reason": str(exc)})
        except asyncio.TimeoutError:
            self.count("*", "closed_timeout")  # idle: the ticker's timeout, as in `serve`
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self._closed(conn)
            writer.close()

    def _admit(self, host: str) -> bool:
        """Per-address cap: refused. Total cap: the oldest connection still in its handshake is
        closed to make room (so half-open floods from many addresses cannot lock cameras out);
        only when every open connection is a proven camera is the new one refused."""
        cfg = self.config
        if self.per_address[host] >= cfg.ingest_max_per_address \
                or self.unproven_per_address[host] >= cfg.ingest_max_unproven_per_address:
            return False
        if self.open_total >= cfg.ingest_max_connections:
            if not self.unproven:
                return False
            oldest = self.unproven[next(iter(self.unproven))]
            self._unproven_drop(oldest)
            self._release(oldest)
            oldest.writer.transport.abort()
            self.count("*", "evicted_handshakes")
        return True

    def _unproven_add(self, conn: _Conn) -> None:
        self.unproven[id(conn)] = conn
        self.unproven_per_address[conn.host] += 1

    def _unproven_drop(self, conn: _Conn) -> None:
        if self.unproven.pop(id(conn), None) is not None:
            self.unproven_per_address[conn.host] -= 1
            if not self.unproven_per_address[conn.host]:
                del self.unproven_per_address[conn.host]

    def _release(self, conn: _Conn) -> None:
        if conn.released:
            return
        conn.released = True
        self.open_total -= 1
        self.per_address[conn.host] -= 1
        if not self.per_address[conn.host]:
            del self.per_address[conn.host]

    def _bind(self, conn: _Conn) -> None:
        """One stream connection per camera: a new proven one replaces the old (a camera that
        reconnects; and no camera can hold more than one unfinished message's memory)."""
        assert conn.camera is not None
        old = self.by_camera.get(conn.camera)
        if old is not None and old is not conn:
            old.superseded = True
            old.writer.transport.abort()
        self.by_camera[conn.camera] = conn

    async def _next(self, conn: _Conn, reader: asyncio.StreamReader, deadline: float | None) -> bytes | None:
        """The next complete body. Reads at most what completes the message under way plus
        ``_READ_AHEAD`` (so a read usually brings whole frames, not a length prefix and then a
        body): an unfinished message holds at most its declared size + 64 KiB. With a deadline
        (the handshake) the read is timed; on a bound stream the idle timeout is the ticker's."""
        while not conn.ready:
            # In the handshake exactly what completes the message: what follows the hello must
            # not be parsed under the handshake's 64 KiB message limit.
            n = min(max(conn.msgs.wanted(), _READ_AHEAD) if deadline is None else conn.msgs.wanted(), _CHUNK)
            if deadline is None:
                conn.waiting_since = time.monotonic()
                try:
                    chunk = await reader.read(n)
                finally:
                    conn.waiting_since = None
            else:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise asyncio.TimeoutError
                chunk = await asyncio.wait_for(reader.read(n), timeout)
            if not chunk:
                conn.msgs.finish()
                return None
            conn.last_rx = time.monotonic()
            conn.ready.extend(conn.msgs.feed(chunk))
        return conn.ready.popleft()

    async def _handshake(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        body = await self._next(conn, reader, time.monotonic() + self.config.ingest_handshake_timeout_ms / 1000)
        if body is None:
            raise _Close
        if not wire.is_signed_control(body):
            reason = wire.RejectReason.UNSIGNED_CONTROL if wire.is_control(body) else wire.RejectReason.BAD_HELLO
            self._refuse(conn, reason, "the first message must be a hello signed by the camera's device key", None)
        try:
            hello = wire.parse_signed_control(body)
        except wire.ControlError as exc:
            self._refuse(conn, wire.RejectReason.BAD_HELLO, str(exc), None)
        ip = hello.camera_ip
        if hello.type != "hello" or hello.nonce != conn.nonce:
            self._refuse(conn, wire.RejectReason.BAD_HELLO, "not a hello for this connection's challenge", ip)
        key = await self._active_key(ip)
        if key is None:
            self._refuse(conn, wire.RejectReason.NOT_REGISTERED, f"camera {ip} is not on the whitelist (or revoked)", ip)
        if not await self._control_ok(hello, ip):
            self._refuse(conn, wire.RejectReason.BAD_SIGNATURE, f"{ip}: hello signature does not verify", ip)
        conn.camera, conn.ip = cached_camera_id(ip), ip
        conn.msgs.max_size = max(wire.MAX_CONTROL_BYTES, self.config.ingest_max_message_bytes)
        self._record_hello(conn.camera, ip, hello)

    async def _stream(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        """Frames go into the pipeline without waiting for each one's answer (at most
        ``ingest_inflight_per_connection`` of this connection, and what the node-wide `Budget`
        admits: when either is full this loop stops reading, and TCP slows the camera). A second
        task handles the answers in arrival order; a control message waits until every frame
        before it is answered."""
        limit = max(1, self.config.ingest_inflight_per_connection)
        budget = self.node.budget
        inflight: asyncio.Queue[_Inflight] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def done(n: int) -> None:
            budget.release(n)
            conn.inflight -= 1
            if conn.room is not None and not conn.room.done():
                conn.room.set_result(None)

        answers = asyncio.ensure_future(self._answers(conn, inflight))
        try:
            while (body := await self._next(conn, reader, None)) is not None:
                if answers.done():
                    break  # the answers closed this connection
                if wire.is_control(body):
                    await self._settled(inflight, answers)
                    await self._control(conn, body)
                    continue
                pre = self.node.precheck(body, "camera", conn.camera, conn.origin)
                if isinstance(pre, str):
                    await self._answer(conn, body, pre)  # refused at once, counted in order
                    continue
                while conn.inflight >= limit:
                    conn.room = loop.create_future()
                    await conn.room
                await budget.acquire(len(body))
                refusals: list[tuple[str | None, str, str, str, str]] = []
                task = asyncio.ensure_future(
                    self.node.accept_checked(pre, body, "camera", conn.origin, refusals) if pre is not None else
                    self.node.accept_packet(body, source="camera", expect_camera=conn.camera, origin=conn.origin))
                conn.inflight += 1
                task.add_done_callback(lambda _t, n=len(body): done(n))
                inflight.put_nowait((body, task, refusals))
            await self._settled(inflight, answers)
        finally:
            answers.cancel()
            while not inflight.empty():
                inflight.get_nowait()[1].cancel()  # not acknowledged: the camera sends these again
        if answers.done() and not answers.cancelled() and answers.exception() is not None:
            raise answers.exception()  # type: ignore[misc]

    @staticmethod
    async def _settled(inflight: asyncio.Queue[_Inflight], answers: asyncio.Task[None]) -> None:
        """Until every frame read so far is answered (or the answers ended the connection)."""
        join = asyncio.ensure_future(inflight.join())
        await asyncio.wait([join, answers], return_when=asyncio.FIRST_COMPLETED)
        join.cancel()
        if answers.done():
            raise _Close

    async def _answers(self, conn: _Conn, inflight: asyncio.Queue[_Inflight]) -> None:
        try:
            while True:
                body, task, refusals = await inflight.get()
                try:
                    outcome = await task
                    for refusal in refusals:
                        self.node._alarm_rejected(*refusal)
                    await self._answer(conn, body, outcome)
                finally:
                    inflight.task_done()
        except _Close:
            while not inflight.empty():  # judged after the close: not answered, not counted
                inflight.get_nowait()[1].cancel()
                inflight.task_done()
            conn.writer.close()  # after what was written (the reject) is sent

    async def _answer(self, conn: _Conn, body: bytes, outcome: str) -> None:
        if outcome in ("accepted", "duplicate"):
            conn.valid += 1
        elif outcome == "restart":
            seq, _ = _seq_and_camera(body)
            self._send(conn, wire.reject_message(wire.RejectReason.CAMERA_RESTART,
                                                 "seq already taken by a frame from before the restart", seq))
        elif outcome == "storage":
            # Not the camera's fault: no seq in the refusal, so it keeps the frame unacknowledged
            # and sends it again after reconnecting (offchain/node/storage_guard.py).
            self._send(conn, wire.reject_message(wire.RejectReason.STORAGE_UNAVAILABLE,
                                                 f"node cannot store frames ({self.node.storage.fault})"))
            raise _Close
        elif outcome == "security":
            # I2: a forged or foreign frame loses the connection (the camera is told why).
            seq, cam = _seq_and_camera(body)
            reason = wire.RejectReason.WRONG_CAMERA if cam != conn.camera else wire.RejectReason.BAD_SIGNATURE
            self._send(conn, wire.reject_message(reason, "frame refused; connection closed", seq))
            raise _Close
        else:
            self._invalid(conn)

    def _invalid(self, conn: _Conn) -> None:
        conn.invalid += 1
        if conn.invalid > self.config.ingest_max_invalid + conn.valid // 10:
            self.count(conn.ip or "*", "closed_invalid")
            self._send(conn, wire.reject_message(wire.RejectReason.TOO_MANY_INVALID,
                                                 f"{conn.invalid} invalid messages on this connection"))
            raise _Close

    async def _control(self, conn: _Conn, body: bytes) -> None:
        """A control message after the hello: only a signed end for this connection counts."""
        assert conn.camera is not None and conn.ip is not None
        try:
            msg = wire.parse_signed_control(body) if wire.is_signed_control(body) else None
        except wire.ControlError:
            msg = None
        if msg is not None and msg.type == wire.OUTAGE:  # issue 10: a declared outage (node/outages.py)
            await outages.on_declaration(self, conn, msg)
            return
        if msg is None or msg.camera_ip != conn.ip or msg.nonce != conn.nonce or not await self._control_ok(msg, conn.ip):
            kind = "unsigned" if not wire.is_signed_control(body) else "badly signed or foreign"
            self.node._alarm_rejected(conn.ip, "security", f"{kind} control message refused", "camera", conn.origin)
            self._invalid(conn)
            return
        if msg.type != "end":
            return  # a second hello changes nothing
        last = msg.message.get("lastSeq")
        held = self.node.state.max_seq(conn.camera, 0)
        # An end far beyond what was ever held is not believed: it would declare a huge tail lost.
        if _believable_end(last, held, 0) and self._track_ends_ok(conn.camera, msg.message.get("trackLastSeqs")):
            if last >= 0:
                self.node.state.note_last_seq(conn.camera, last)
            for number, seq in _track_ends(msg.message.get("trackLastSeqs")).items():
                self.node.state.note_track_last_seq(conn.camera, number, seq)
            conn.ended = True
            self._note_stream(conn.camera, StreamState.ENDED, last)
            self._ack(conn, force=True)
        else:
            self.node._alarm_rejected(conn.ip, "integrity", f"end with lastSeq {last!r} not believed (held {held})",
                                      "camera", conn.origin)
            self._invalid(conn)

    def _track_ends_ok(self, cam: bytes, ends: Any) -> bool:
        """The end's other tracks (audio): each last seq believable like the video's."""
        if ends is None:
            return True
        parsed = _track_ends(ends)
        if not isinstance(ends, dict) or len(parsed) != len(ends):
            return False
        return all(_believable_end(seq, self.node.state.max_seq(cam, number), number) for number, seq in parsed.items())

    def _refuse(self, conn: _Conn, reason: wire.RejectReason, detail: str, ip: str | None) -> NoReturn:
        known = ip if ip and self.node.registry.by_ip(ip) else None
        self.node._alarm_rejected(known, "security", f"handshake refused ({reason.value}): {detail}", "camera",
                                  conn.origin)
        self._send(conn, wire.reject_message(reason, detail))
        raise _Close

    def _send(self, conn: _Conn, body: bytes) -> None:
        transport = conn.writer.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > _MAX_WRITE_BUFFER:
            raise _Close  # the camera does not read what we send
        conn.writer.write(wire.frame_message(body))

    # ------------------------------------------------------------------ keys and records
    async def _active_key(self, ip: str) -> bytes | None:
        registry = self.node.registry
        key = registry.active_key(ip)
        if key is None and await asyncio.to_thread(registry.refresh):
            key = registry.active_key(ip)
        return key

    async def _control_ok(self, msg: wire.SignedControl, ip: str) -> bool:
        """Under the camera's current key; after a failure the camera is re-read once (its key
        may just have been rotated)."""
        cam = cached_camera_id(ip)
        for attempt in range(2):
            key = self.node.registry.active_key(ip)
            if key is not None and msg.verify(key):
                return True
            if attempt == 0:
                await asyncio.to_thread(self.node.registry.refresh_camera, cam)
        return False

    def _record_hello(self, cam: bytes, ip: str, hello: wire.SignedControl) -> None:
        state = self.node.state
        codec = hello.message.get("codec")
        state.note_camera(cam, ip, json.dumps(codec, sort_keys=True) if isinstance(codec, dict) else None)
        if isinstance(codec, dict):
            state.set_meta(f"hello:{cam.hex()}", json.dumps({**wire.codec_proof(hello), "at": time.time()}))
        first = hello.message.get("firstSeq")
        if isinstance(first, int) and not isinstance(first, bool) and 0 <= first < 2**62:
            state.note_first_seq(cam, first)
        self._note_stream(cam, StreamState.STREAMING, None)

    def _note_stream(self, cam: bytes, state: StreamState, last_seq: int | None) -> None:
        self.node.state.set_meta(f"stream:{cam.hex()}", json.dumps(
            {"state": state.value, "at": time.time(), "lastSeq": last_seq}))

    def stream_state(self, cam: bytes) -> StreamRecord | None:
        raw = self.node.state.get_meta(f"stream:{cam.hex()}")
        if raw is None:
            return None
        doc = json.loads(raw)
        return StreamRecord(StreamState(doc["state"]), float(doc["at"]), doc.get("lastSeq"))

    # ------------------------------------------------------------------ acknowledgements
    def tracker(self, cam: bytes) -> SeqRanges:
        """What this node holds of the camera, as ranges (read back from SQLite once per process)."""
        held = self.held.get(cam)
        if held is None:
            row = self.node.state.camera_row(cam)
            start = row[3] if row and row[3] is not None else 0
            held = SeqRanges(start)
            held.upto = self.node.state.held_run_end(cam, start)
            held.add_many(self.node.state.seqs_from(cam, held.upto + 1, _RANGES_LOADED))
            self.held[cam] = held
        return held

    def note_held(self, cam: bytes, seq: int) -> None:
        """A frame of `cam` is durable here (called once its batch is committed)."""
        if self.on_held is not None:
            self.on_held(cam, seq)  # the camera's connection lives in its ingest process
            return
        if self.tracker(cam).add(seq):
            self.dirty.add(cam)

    def _ack(self, conn: _Conn, force: bool = False) -> None:
        assert conn.camera is not None and conn.ip is not None
        held = self.tracker(conn.camera)
        if force or held.version != conn.acked_version:
            conn.acked_version = held.version
            self._send(conn, wire.ack_message(conn.ip, held.upto, held.head(wire.MAX_ACK_RANGES)))

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._tick_acks())

    async def _tick_acks(self) -> None:
        """One task for every connection (not one per camera): every ``ingest_ack_interval_ms``
        the cameras whose held ranges changed get their acknowledgement; once a second, bound
        connections silent for ``ingest_idle_timeout_ms`` are closed."""
        interval = max(0.005, self.config.ingest_ack_interval_ms / 1000)
        idle = self.config.ingest_idle_timeout_ms / 1000
        next_idle_check = time.monotonic() + 1.0
        while True:
            await asyncio.sleep(interval)
            dirty, self.dirty = self.dirty, set()
            for cam in dirty:
                conn = self.by_camera.get(cam)
                if conn is not None:
                    try:
                        self._ack(conn)
                    except _Close:
                        conn.writer.transport.abort()  # it does not read what we send
            now = time.monotonic()
            if now >= next_idle_check:
                next_idle_check = now + 1.0
                # idle = silent while this node waits for it; not while backpressure (a full
                # pipeline) keeps this node from reading it
                for conn in [c for c in self.by_camera.values()
                             if c.waiting_since is not None and now - max(c.waiting_since, c.last_rx) > idle]:
                    # through its reader, so the connection ends as a timeout does: its stream
                    # state recorded before the camera sees the close
                    if conn.reader is not None and conn.reader.exception() is None:
                        conn.reader.set_exception(asyncio.TimeoutError())

class _Profile:
    """``FRAMELEDGER_PROFILE_INGEST=FILE``: cProfile of the node's event-loop thread (where the
    per-frame Python runs), dumped to FILE every 5 s (so a node stopped by SIGKILL leaves one too).
    For `bench/ingest_bench.py --profile`; off by default (cProfile costs a lot per call)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.prof = cProfile.Profile()
        self.prof.enable()
        self.next = time.monotonic() + 5.0
        self.tip = [0, 0.0, 0.0]  # ledger.tip calls, their thread CPU s, wall s (cProfile sees one thread)
        self._time_tip()

    def _time_tip(self) -> None:
        """`VideoLedgerClient.tip` runs in worker threads (the producer's per-camera poll), which
        cProfile does not see: its CPU (GIL time, mostly web3's Python) is counted here."""
        inner, tally = VideoLedgerClient.tip, self.tip

        def tip(ledger: VideoLedgerClient, camera_id: bytes) -> tuple[bytes, int, int]:
            cpu, wall = time.thread_time(), time.monotonic()
            try:
                return inner(ledger, camera_id)
            finally:
                tally[0] += 1
                tally[1] += time.thread_time() - cpu
                tally[2] += time.monotonic() - wall

        VideoLedgerClient.tip = tip  # type: ignore[method-assign]

    @classmethod
    def from_env(cls, suffix: str = "") -> _Profile | None:
        path = os.environ.get("FRAMELEDGER_PROFILE_INGEST")
        return cls(path + suffix) if path else None

    def maybe_dump(self) -> None:
        if time.monotonic() >= self.next:
            self.next = time.monotonic() + 5.0
            self.prof.dump_stats(self.path)  # which disables the profiler: on again
            self.prof.enable()
            with open(self.path + ".tip.json", "w") as f:
                json.dump({"calls": self.tip[0], "thread_cpu_s": round(self.tip[1], 3),
                           "wall_s": round(self.tip[2], 3), "process_cpu_s": round(time.process_time(), 3)}, f)


class _GateProtocol(asyncio.StreamReaderProtocol):
    def __init__(self, server: IngestServer) -> None:
        self._gate = server
        self._refused = False
        # The reader stops taking from the socket at 2 x limit buffered: a camera's bytes wait in
        # its TCP window, not in this process (flow control; 128 KiB per connection here).
        super().__init__(asyncio.StreamReader(limit=_READ_AHEAD), server.serve)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._gate.would_admit(host):
            self._refused = True
            self._gate.count("*", "refused_connections")
            transport.abort()  # type: ignore[attr-defined]
            return
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._refused:
            super().connection_lost(exc)


def _seq_and_camera(body: bytes) -> tuple[int | None, bytes | None]:
    try:
        packet = pk.decode_packet(body, check_digest=False)
    except pk.PacketError:
        return None, None
    return packet.seq, cached_camera_id(packet.camera_ip)


def _believable_end(last: Any, held: int | None, track: int) -> bool:
    """A signed end's last seq of one track (-1 or the track's base - 1: nothing produced) is
    believed when it is at or above what is held of the track and at most MAX_TAIL_SEQS beyond."""
    base = track_bounds(track)[0]
    if not isinstance(last, int) or isinstance(last, bool) or not base - 1 <= last <= track_bounds(track)[1]:
        return False
    if held is None:
        return last < base + MAX_TAIL_SEQS
    return held <= last <= held + MAX_TAIL_SEQS


def _track_ends(ends: Any) -> dict[int, int]:
    """``trackLastSeqs`` of a signed end ({"1": seq}) as {track: seq}; malformed entries left out."""
    out: dict[int, int] = {}
    if isinstance(ends, dict):
        for key, seq in list(ends.items())[:MAX_TRACKS]:
            if isinstance(key, str) and key.isdigit() and 0 < int(key) < MAX_TRACKS and isinstance(seq, int) \
                    and not isinstance(seq, bool) and seq >= track_bounds(int(key))[0]:
                out[int(key)] = seq
    return out
