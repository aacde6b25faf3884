"""The camera agent: streams signed frame packets to every node of the consortium (I1).

One `CameraAgent` is one camera. It reads encoded frames from a source (`FileSource`,
`UrlSource`, or any iterable of `EncodedFrame` with an optional ``codec``), signs each as a
frame packet with the device key, and sends it to every node over that node's own persistent
TCP connection, framed as ``offchain.core.wire`` describes: the node's challenge, a hello signed
over its nonce, frames once the node has accepted the hello, the node's acknowledgements back,
and a signed end at the end of the stream (docs/TRANSPORT.md, "The protocol on the connection").

Behaviour that matters for evidence:

* Pacing: frames leave at their capture times divided by ``speed`` (``speed`` 0 or infinity:
  as fast as possible). A source slower than the pace (a live camera) is never waited for twice.
* Isolation: each node has a bounded queue and its own writer task. In real time (any finite
  ``speed``) a slow node fills its queue and then loses frames (``dropped_queue_full``); a node
  that is down or restarting loses the frames produced meanwhile (``dropped_unreachable``).
  Neither ever delays the other nodes: the nodes repair lost frames from each other, which is
  the point of the consortium. Unpaced (``speed`` 0/inf: replays, tests) there is no real time
  to keep, so the camera waits for a full queue of a node that is still taking frames, and only
  a node that has taken nothing for ``stall_timeout`` (stuck) loses frames; it is not waited
  for again until it moves. ``wait_when_full`` overrides this choice.
* Reconnect: a lost connection is retried with exponential backoff (50 ms doubling to 2 s); a
  refused hello (e.g. camera not registered) is retried every 2 s and counts every frame as
  rejected until the node accepts one.
* Acknowledged delivery: per node, frames the node has not acknowledged as durable stay in a
  buffer of ``unacked_frames`` (default 2,048; when full the oldest is dropped, counted as
  ``dropped_unacked``). After every reconnect they are sent again first (``retransmitted``,
  unfaulted). At the end the agent sends the signed end and waits for the acknowledgements of
  every frame some node took intact: at most ``end_timeout`` without progress, ``end_max_timeout``
  in all; then it closes gracefully (FIN, read until the node closes).
* Faults (`offchain.camera.faults`) are applied per node after signing, deterministically per seed.
* Declared outages (issue 10): when a live source (``source.outages``, `mjpeg.Outage`) has the
  camera back, the agent signs one ``outage`` declaration (``wire.outage_message``: after which
  frame, from when to when, why) as the first frame after the outage goes out, and sends the same
  bytes to every node; after every reconnect a node gets every declaration of the run again
  (the last ``MAX_DECLARATIONS``; a node keeps a replay once), so a node that was down learns it
  too. ``declared`` lists them; the nodes put them in the block's manifest.

`run()` returns per-node `NodeStats`: ``acked`` / ``unacked`` / ``rejected`` say what each node did
with the frames produced.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..core.acks import SeqRanges, missing, overlap
from ..core.block import track_of
from ..core.packet import encode_packet
from ..core.wire import (MAX_ACK_RANGES, MAX_CONTROL_BYTES, MessageReader, NodeMessage, WireError, end_message,
                         frame_message, hello_message, outage_message, parse_node_message)
from .faults import FaultInjector, FaultSpec
from .sources import EncodedFrame

log = logging.getLogger(__name__)

__all__ = ["CameraAgent", "NodeStats", "parse_node", "stats_table"]


@dataclass
class NodeStats:
    """What one node was sent. ``frames`` = frames the camera produced during the run; each
    was sent, faulted, cut, or dropped for one of the reasons below."""

    node: str
    address: str
    frames: int = 0
    sent: int = 0                   # frame packets handed to the connection (duplicates included)
    bytes_sent: int = 0
    dropped_by_fault: int = 0       # drop fault
    dropped_cut: int = 0            # cut fault (camera reaches no node)
    dropped_unreachable: int = 0    # node down / connection lost before the packet was written
    dropped_queue_full: int = 0     # node too slow: its queue was full
    corrupted: int = 0
    truncated: int = 0
    duplicated: int = 0
    reordered: int = 0
    delayed: int = 0
    connects: int = 0
    connects_refused: int = 0       # handshakes the node refused (e.g. camera not registered)
    disconnects: int = 0
    end_sent: bool = False
    last_error: str | None = None
    # acknowledged delivery (final after run()): of the frames produced, how many this node
    # acknowledged as durable, explicitly rejected, or neither
    acked: int = 0
    unacked: int = 0
    rejected: int = 0
    rejected_reason: str | None = None  # why the node refused this camera's hello (e.g. not-registered)
    retransmitted: int = 0              # unacknowledged frames sent again after a reconnect
    dropped_unacked: int = 0            # unacknowledged frames evicted from the full buffer (not resendable)
    unacked_seqs: str = ""              # the first unacknowledged seq ranges, e.g. "736-799,1200"
    outages_sent: int = 0               # signed outage declarations written to this node (resends included)

    @property
    def dropped(self) -> int:
        return self.dropped_by_fault + self.dropped_cut + self.dropped_unreachable + self.dropped_queue_full

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_node(text: str) -> tuple[str, tuple[str, int]]:
    """``name=host:port`` → (name, (host, port))."""
    name, eq, addr = text.partition("=")
    host, colon, port = addr.rpartition(":")
    if not eq or not name.strip() or not colon or not host or not port.isdigit():
        raise ValueError(f"node {text!r} is not name=host:port")
    return name.strip(), (host.strip("[]"), int(port))


def stats_table(stats: dict[str, NodeStats], title: str | None = None) -> str:
    from ..tables import render_table

    headers = ["node", "address", "frames", "sent", "acked", "unacked", "rejected", "MB", "drop", "cut", "unreach",
               "qfull", "corrupt", "trunc", "dup", "reord", "delay", "resent", "evicted", "conn", "end"]
    rows = [[s.node, s.address, s.frames, s.sent, s.acked, s.unacked,
             s.rejected if not s.rejected_reason else f"{s.rejected} ({s.rejected_reason})",
             f"{s.bytes_sent / 1e6:.1f}", s.dropped_by_fault, s.dropped_cut,
             s.dropped_unreachable, s.dropped_queue_full, s.corrupted, s.truncated, s.duplicated, s.reordered,
             s.delayed, s.retransmitted, s.dropped_unacked, s.connects, "yes" if s.end_sent else "no"]
            for s in stats.values()]
    return render_table(headers, rows, title=title)


class _Refused(Exception):
    """The node refused our hello (reason in `_NodeLink.refused`)."""


_FRAME = 0
_END = 1
_CONTROL = 2  # a signed control body other than the end (an outage declaration)
MAX_DECLARATIONS = 64  # outage declarations of a run kept for resending after a reconnect
_BATCH = 32  # frames read and signed per trip to the source thread (bounded by 5 ms)


@dataclass
class _Unacked:
    packet: bytes          # the clean signed packet (retransmitted as is)
    written: bool = False  # written unfaulted to this node at least once


class _NodeLink:
    """One node: its connection, reconnect loop, bounded queue, writer, and the frames the node
    has not acknowledged yet (bounded: ``agent.unacked_frames``)."""

    def __init__(self, agent: CameraAgent, name: str, host: str, port: int) -> None:
        self.agent = agent
        self.name = name
        self.host = host
        self.port = port
        self.stats = NodeStats(name, f"{host}:{port}")
        self.queue: asyncio.Queue[tuple[int, int, bytes]] = asyncio.Queue(agent.queue_size)
        self.unacked: OrderedDict[int, _Unacked] = OrderedDict()
        self.acked = SeqRanges(0)
        self.rejected_seqs = SeqRanges(0)
        self.refused: str | None = None  # reason the node gave for refusing our hello, until it accepts one
        self.connected = asyncio.Event()
        self.closing = False
        self.ending = False
        self.end_written = asyncio.Event()
        self.room = asyncio.Event()     # set whenever the writer takes a message off the queue
        self.last_progress = 0.0        # loop time the writer last took a message
        self.task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._nonce = ""
        self.backlog: deque[bytes] = deque(maxlen=MAX_DECLARATIONS)  # declarations that found the queue full

    # -- producer side (never blocks) --------------------------------------------------------
    def keep(self, seq: int, packet: bytes) -> None:
        """Hold the clean packet until the node acknowledges it; the oldest goes when full."""
        if seq in self.unacked or seq in self.acked:
            return
        self.unacked[seq] = _Unacked(packet)
        while len(self.unacked) > self.agent.unacked_frames:
            self.unacked.popitem(last=False)
            self.stats.dropped_unacked += 1

    def offer(self, seq: int, data: bytes) -> None:
        if not self.connected.is_set():
            self.stats.dropped_unreachable += 1
            return
        try:
            self.queue.put_nowait((_FRAME, seq, frame_message(data)))
        except asyncio.QueueFull:
            self.stats.dropped_queue_full += 1

    def declare(self, body: bytes) -> None:
        """An outage declaration for this node now (if it is down, it gets it at the reconnect)."""
        if not self.connected.is_set():
            return
        try:
            self.queue.put_nowait((_CONTROL, -1, frame_message(body)))
        except asyncio.QueueFull:
            self.backlog.append(body)  # written by the pump after its next message

    async def wait_for_room(self, stall_timeout: float) -> None:
        """Unpaced mode: wait while this node's queue is full, unless it has taken nothing for
        ``stall_timeout`` (stuck): then return at once and let `offer` drop."""
        loop = asyncio.get_running_loop()
        while self.connected.is_set() and self.queue.full():
            idle = loop.time() - self.last_progress
            if idle >= stall_timeout:
                return
            self.room.clear()
            try:
                await asyncio.wait_for(self.room.wait(), stall_timeout - idle)
            except asyncio.TimeoutError:
                return

    # -- acknowledgements --------------------------------------------------------------------
    def awaiting(self) -> int:
        """Unacknowledged frames this node can still be expected to acknowledge: ones some node
        took intact (written unfaulted, or acknowledged), so this node has them or can repair them."""
        links = self.agent._links.values()
        return sum(1 for seq in self.unacked
                   if any(link.acked.__contains__(seq) or (seq in link.unacked and link.unacked[seq].written)
                          for link in links))

    def _on_node_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == NodeMessage.ACK.value:
            self._on_ack(msg)
        elif kind == NodeMessage.REJECT.value:
            reason = str(msg.get("reason", "?"))[:100]
            seq = msg.get("seq")
            self.stats.last_error = f"rejected: {reason}: {str(msg.get('detail', ''))[:200]}"
            if isinstance(seq, int) and not isinstance(seq, bool):
                if self.rejected_seqs.add(seq):
                    self.unacked.pop(seq, None)
            else:
                self.refused = reason
                self.stats.rejected_reason = reason

    def _on_ack(self, msg: dict[str, Any]) -> None:
        up_to, ranges = msg.get("upTo"), msg.get("ranges") or []
        if not isinstance(up_to, int) or not isinstance(ranges, list):
            return
        self.refused = None
        self.acked.add_range(0, up_to)
        for r in ranges[:MAX_ACK_RANGES]:
            if isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r):
                self.acked.add_range(r[0], r[1])
        while self.unacked:
            seq = next(iter(self.unacked))
            if seq > up_to:
                break
            self.unacked.popitem(last=False)
        if ranges:
            for seq in [s for s in self.unacked if s in self.acked]:
                del self.unacked[seq]

    # -- connection loop ---------------------------------------------------------------------
    async def _next_message(self, reader: asyncio.StreamReader, msgs: MessageReader, ready: deque[bytes],
                            deadline: float) -> dict[str, Any]:
        while not ready:
            chunk = await asyncio.wait_for(reader.read(4096), max(0.001, deadline - time.monotonic()))
            if not chunk:
                raise ConnectionError("node closed the connection during the handshake")
            ready.extend(msgs.feed(chunk))
        return parse_node_message(ready.popleft())

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, msgs: MessageReader,
                         ready: deque[bytes]) -> None:
        """Challenge, signed hello, verdict: frames go out only once the node has accepted the
        hello (its first acknowledgement), so a camera the node refuses sends it nothing."""
        deadline = time.monotonic() + self.agent.connect_timeout
        msg = await self._next_message(reader, msgs, ready, deadline)
        nonce = msg.get("nonce")
        if msg.get("type") != NodeMessage.CHALLENGE.value or not isinstance(nonce, str) or len(nonce) > 128:
            raise ConnectionError(f"expected the node's challenge, got {msg.get('type')!r}")
        self._nonce = nonce
        writer.write(frame_message(self.agent.hello_body(nonce)))
        verdict = await self._next_message(reader, msgs, ready, deadline)
        self._on_node_message(verdict)
        if verdict.get("type") != NodeMessage.ACK.value:
            raise _Refused(self.refused or f"unexpected {verdict.get('type')!r}")

    async def run(self) -> None:
        delay = self.agent.backoff[0]
        while not self.closing:
            msgs, ready = MessageReader(MAX_CONTROL_BYTES), deque()
            writer: asyncio.StreamWriter | None = None
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                        self.agent.connect_timeout)
                await self._handshake(reader, writer, msgs, ready)
            except _Refused:
                if writer is not None:
                    writer.transport.abort()
                self.stats.connects_refused += 1
                delay = self.agent.backoff[1]  # refused, not broken: retry at the slowest pace
                await asyncio.sleep(delay)
                continue
            except (OSError, asyncio.TimeoutError, WireError) as exc:
                if writer is not None:
                    writer.transport.abort()
                self.stats.last_error = f"connect: {exc!r}"
                log.debug("node unreachable", extra={"node": self.name, "error": repr(exc), "retry_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.agent.backoff[1])
                continue
            delay = self.agent.backoff[0]
            self._writer = writer
            self.last_progress = asyncio.get_running_loop().time()
            self.stats.connects += 1
            resend = list(self.unacked)  # taken with connected set in the same step: nothing slips between
            self.connected.set()
            log.info("connected to node", extra={"node": self.name, "camera": self.agent.camera_ip,
                                                 "connects": self.stats.connects, "resend": len(resend)})
            try:
                await self._session(reader, writer, msgs, ready, resend)
            finally:
                self.connected.clear()
                self._writer = None
                lost = 0
                while not self.queue.empty():
                    kind, _, _ = self.queue.get_nowait()
                    self.queue.task_done()
                    lost += kind == _FRAME
                self.stats.dropped_unreachable += lost
                if self.closing and self.end_written.is_set():
                    # Normal end: FIN after the buffered data.
                    writer.close()
                    try:
                        await asyncio.wait_for(writer.wait_closed(), 1.0)
                    except (OSError, asyncio.TimeoutError):
                        pass
                else:
                    writer.transport.abort()
            if not self.closing:
                self.stats.disconnects += 1
                log.warning("lost node connection", extra={"node": self.name, "camera": self.agent.camera_ip,
                                                           "error": self.stats.last_error})
                await asyncio.sleep(delay)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, msgs: MessageReader,
                       ready: deque[bytes], resend: list[int]) -> None:
        pump = asyncio.ensure_future(self._pump(writer, resend))
        watch = asyncio.ensure_future(self._watch(reader, msgs, ready))
        try:
            done, _ = await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                task.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
        for task in done:
            exc = task.cancelled() or task.exception()
            if isinstance(exc, BaseException):
                self.stats.last_error = repr(exc)

    async def _watch(self, reader: asyncio.StreamReader, msgs: MessageReader, ready: deque[bytes]) -> None:
        """The node's acknowledgements and rejections; EOF (or a reset) means it closed."""
        try:
            while True:
                while ready:
                    self._on_node_message(parse_node_message(ready.popleft()))
                chunk = await reader.read(65536)
                if not chunk:
                    break
                ready.extend(msgs.feed(chunk))
        except (OSError, WireError) as exc:
            self.stats.last_error = f"read: {exc!r}"
            return
        if not self.stats.last_error or not self.stats.last_error.startswith("rejected"):
            self.stats.last_error = "node closed the connection"

    async def _write(self, writer: asyncio.StreamWriter, seq: int, data: bytes) -> None:
        entry = self.unacked.get(seq)
        if entry is not None and not entry.written and len(data) == len(entry.packet) + 4 and data[4:] == entry.packet:
            entry.written = True
        writer.write(data)
        self.stats.sent += 1
        self.stats.bytes_sent += len(data)
        await writer.drain()

    async def _pump(self, writer: asyncio.StreamWriter, resend: list[int]) -> None:
        # After a (re)connect: every frame still unacknowledged, oldest first, unfaulted.
        for seq in resend:
            entry = self.unacked.get(seq)
            if entry is None:
                continue  # acknowledged meanwhile
            if entry.written or self.stats.connects > 1:
                self.stats.retransmitted += 1
            await self._write(writer, seq, frame_message(entry.packet))
        self.backlog.clear()
        for body in list(self.agent.declared_bodies):  # every declaration of the run, again (idempotent)
            await self._write_control(writer, frame_message(body))
        if self.ending:
            await self._write_end(writer)
        loop = asyncio.get_running_loop()
        while True:
            kind, seq, data = await self.queue.get()
            self.last_progress = loop.time()
            self.room.set()
            try:
                if kind == _FRAME:
                    await self._write(writer, seq, data)
                elif kind == _CONTROL:
                    await self._write_control(writer, data)
                else:
                    await self._write_end(writer)
                while self.backlog:
                    await self._write_control(writer, frame_message(self.backlog.popleft()))
            finally:
                self.queue.task_done()

    async def _write_control(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        self.stats.outages_sent += 1
        await writer.drain()

    async def _write_end(self, writer: asyncio.StreamWriter) -> None:
        writer.write(frame_message(self.agent.end_body(self._nonce)))
        await writer.drain()
        self.end_written.set()

    # -- end of stream -----------------------------------------------------------------------
    async def finish(self, timeout: float, max_timeout: float) -> None:
        """Send the signed end, then wait until the node has acknowledged every frame it can be
        expected to hold: at most ``timeout`` without any acknowledgement progress and
        ``max_timeout`` in all. Then close gracefully: FIN, and read until the node has read
        everything and closed too (closing with unread acknowledgements would reset the
        connection and destroy frames still in the node's socket buffer)."""
        started = time.monotonic()
        hard = started + max(timeout, max_timeout)
        progress_at, version = started, self.acked.version
        self.ending = True
        try:
            if self.connected.is_set():
                try:
                    await asyncio.wait_for(self.queue.put((_END, -1, b"")), timeout)
                except asyncio.TimeoutError:
                    pass
            while True:
                now = time.monotonic()
                if self.acked.version != version:
                    progress_at, version = now, self.acked.version
                if self.end_written.is_set() and not self.awaiting():
                    break
                if self.refused is not None and not self.connected.is_set():
                    break  # the node refuses this camera: it will acknowledge nothing
                if now - progress_at > timeout or now > hard:
                    break
                await asyncio.sleep(0.02)
            self.stats.end_sent = self.end_written.is_set()
        finally:
            self.closing = True
            await self.close(graceful=self.end_written.is_set(), timeout=max(1.0, min(timeout, hard - time.monotonic())))

    async def close(self, graceful: bool = False, timeout: float = 1.0) -> None:
        self.closing = True
        if self.task is None or self.task.done():
            return
        if graceful and self._writer is not None and self._writer.can_write_eof():
            try:
                self._writer.write_eof()
                await asyncio.wait_for(asyncio.shield(self.task), timeout)  # until the node closes its side
                return
            except (OSError, RuntimeError, asyncio.TimeoutError):
                pass
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class CameraAgent:
    """Streams one camera to every node. See the module docstring.

    ``nodes``: node name → (host, port) of its ingest address. ``faults``: a `FaultInjector`,
    or a spec (string or dict) made into one with ``seed``. ``max_frames`` (video frames; a camera's
    audio packets come along) / ``max_duration_ms`` (capture time after the first frame) bound an
    endless (looping or live) source.
    """

    def __init__(
        self,
        camera_ip: str,
        key: Ed25519PrivateKey,
        source: Any,
        nodes: dict[str, tuple[str, int]],
        speed: float | None = 1.0,
        faults: FaultInjector | FaultSpec | str | dict[str, Any] | None = None,
        *,
        seed: int | str = 0,
        queue_size: int = 256,
        max_frames: int | None = None,
        max_duration_ms: int | None = None,
        connect_timeout: float = 2.0,
        initial_connect_timeout: float = 2.0,
        backoff: tuple[float, float] = (0.05, 2.0),
        end_timeout: float = 10.0,
        end_max_timeout: float = 120.0,
        stall_timeout: float = 1.0,
        unacked_frames: int = 2048,
        wait_when_full: bool | None = None,
    ) -> None:
        if not nodes:
            raise ValueError("a camera agent needs at least one node")
        if speed is not None and (math.isnan(speed) or speed < 0):
            raise ValueError(f"speed must be >= 0 (0 or inf: as fast as possible), got {speed}")
        self.camera_ip = camera_ip
        self.key = key
        self.source = source
        self.nodes = {name: (str(host), int(port)) for name, (host, port) in nodes.items()}
        self.speed = speed
        self.paced = bool(speed) and not math.isinf(speed)
        if isinstance(faults, FaultInjector):
            self.faults = faults
        else:
            self.faults = FaultInjector(faults, seed=seed)
        self.faults.check_nodes(list(self.nodes))
        self.queue_size = queue_size
        self.max_frames = max_frames
        self.max_duration_ms = max_duration_ms
        self.connect_timeout = connect_timeout
        self.initial_connect_timeout = initial_connect_timeout
        self.backoff = backoff
        self.end_timeout = end_timeout
        self.end_max_timeout = end_max_timeout
        if unacked_frames < 1:
            raise ValueError("unacked_frames must be >= 1")
        self.unacked_frames = unacked_frames
        self.produced: SeqRanges | None = None
        self.codec: dict[str, Any] | None = None
        self.stall_timeout = stall_timeout
        self.wait_when_full = (not self.paced) if wait_when_full is None else wait_when_full
        self.frames_produced = 0  # every packet sent, audio included
        self.video_frames = 0  # what ``max_frames`` counts
        self.last_seq = -1  # of the video track
        self.track_last_seqs: dict[int, int] = {}  # of the other tracks (audio: 1), when there are any
        self.first_timestamp_ms: int | None = None
        self.declared: list[dict[str, Any]] = []  # the outages declared to the nodes (afterSeq, fromMs, toMs, reason)
        self.declared_bodies: deque[bytes] = deque(maxlen=MAX_DECLARATIONS)
        self._outages_seen = 0  # of source.outages
        self._links: dict[str, _NodeLink] = {}
        self._stop = asyncio.Event()
        self._started = False

    # -- public ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Finish after the current frame (end messages are still sent). Thread-unsafe: call it
        from the agent's event loop (or via ``loop.call_soon_threadsafe``)."""
        self._stop.set()

    @property
    def stats(self) -> dict[str, NodeStats]:
        counters = self.faults.counters
        for name, link in self._links.items():
            c = counters.get(name)
            s = link.stats
            s.frames = self.frames_produced
            produced = self.produced
            s.acked = overlap(produced, link.acked) if produced else 0
            s.rejected = overlap(produced, link.rejected_seqs) if produced else 0
            if link.refused is not None:
                s.rejected = s.frames - s.acked  # the node refuses the camera: nothing else will be taken
            s.unacked = max(0, s.frames - s.acked - s.rejected)
            if produced and s.unacked and link.refused is None:
                gaps = missing(produced, [link.acked, link.rejected_seqs], limit=10)
                s.unacked_seqs = ",".join(f"{a}-{b}" if b > a else str(a) for a, b in gaps) + (
                    ",..." if len(gaps) == 10 else "")
            if c is not None:
                s.dropped_by_fault, s.dropped_cut = c.dropped, c.cut
                s.corrupted, s.truncated, s.duplicated = c.corrupted, c.truncated, c.duplicated
                s.reordered, s.delayed = c.reordered, c.delayed
        return {name: link.stats for name, link in self._links.items()}

    async def run(self) -> dict[str, NodeStats]:
        if self._started:
            raise RuntimeError("a CameraAgent runs once")
        self._started = True
        # One thread owns the source (PyAV containers are not shared between threads).
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"camera-{self.camera_ip}")
        loop = asyncio.get_running_loop()
        try:
            # Probing a file or URL for its codec blocks: keep it off the event loop.
            codec = await loop.run_in_executor(executor, lambda: getattr(self.source, "codec", None))
            self.codec = codec.to_dict() if hasattr(codec, "to_dict") else codec
            self._links = {name: _NodeLink(self, name, host, port) for name, (host, port) in self.nodes.items()}
            for link in self._links.values():
                link.task = asyncio.ensure_future(link.run())
            # Give every node a moment to accept before the first frame, so a healthy start does
            # not lose the head of the stream; nodes still down are retried in the background.
            waiters = [asyncio.ensure_future(link.connected.wait()) for link in self._links.values()]
            await asyncio.wait(waiters, timeout=self.initial_connect_timeout)
            for waiter in waiters:
                waiter.cancel()
            try:
                await self._stream(executor)
            finally:
                await self._finish()
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
        return self.stats

    def hello_body(self, nonce: str) -> bytes:
        """The signed hello for one connection (its challenge nonce)."""
        return hello_message(self.key, self.camera_ip, self.codec, nonce, int(time.time() * 1000))

    def end_body(self, nonce: str) -> bytes:
        return end_message(self.key, self.camera_ip, self.last_seq, nonce, int(time.time() * 1000),
                           self.track_last_seqs or None)

    # -- internals ---------------------------------------------------------------------------
    async def _stream(self, executor: concurrent.futures.Executor) -> None:
        loop = asyncio.get_running_loop()
        source = self.source
        frames: Iterator[EncodedFrame] = iter(source.frames() if hasattr(source, "frames") else source)
        key, ip = self.key, self.camera_ip
        done = object()

        def produce() -> list[Any]:
            """Read and sign the next frames in the source's thread. A batch ends after
            _BATCH frames or 5 ms, so a live source (one frame per 40 ms) is never held back
            while a file is read in bulk instead of one thread hop per frame."""
            batch: list[Any] = []
            started = time.perf_counter()
            while len(batch) < _BATCH:
                frame = next(frames, done)
                if frame is done:
                    batch.append(done)
                    break
                batch.append((frame, encode_packet(key, ip, frame.seq, frame.timestamp_ms, frame.keyframe,
                                                   frame.data, frame.dts_ms)))
                if time.perf_counter() - started > 0.005:
                    break
            return batch

        pending: asyncio.Future[list[Any]] | None = loop.run_in_executor(executor, produce)
        delayed: set[asyncio.Future[None]] = set()
        t0_wall = 0.0
        try:
            finished = False
            while not finished and not self._stop.is_set():
                assert pending is not None
                batch = await pending
                pending = None if batch and batch[-1] is done else loop.run_in_executor(executor, produce)
                for item in batch:
                    if item is done or self._stop.is_set():
                        finished = True
                        break
                    frame, packet = item
                    if self.max_frames is not None and self.video_frames >= self.max_frames and not track_of(frame.seq):
                        finished = True
                        break
                    if self.first_timestamp_ms is None:
                        self.first_timestamp_ms = frame.timestamp_ms
                        t0_wall = loop.time()
                    t_rel = frame.timestamp_ms - self.first_timestamp_ms
                    if self.max_duration_ms is not None and t_rel >= self.max_duration_ms:
                        finished = True
                        break
                    if self.paced:
                        wait = t0_wall + t_rel / 1000.0 / self.speed - loop.time()
                        if wait > 0:
                            try:
                                await asyncio.wait_for(self._stop.wait(), wait)
                            except asyncio.TimeoutError:
                                pass
                            if self._stop.is_set():
                                finished = True
                                break
                    if self.wait_when_full:
                        for link in self._links.values():
                            if link.queue.full():
                                await link.wait_for_room(self.stall_timeout)
                    self.frames_produced += 1
                    self.video_frames += not track_of(frame.seq)
                    if track_of(frame.seq):
                        self.track_last_seqs[track_of(frame.seq)] = frame.seq
                    else:
                        self.last_seq = frame.seq
                    if self.produced is None:
                        self.produced = SeqRanges(frame.seq)
                    self.produced.add(frame.seq)
                    self._declare_outages(frame.timestamp_ms)
                    size = len(frame.data)
                    for name, link in self._links.items():
                        link.keep(frame.seq, packet)
                        for d in self.faults.apply(name, frame.seq, t_rel, packet, size):
                            if d.delay_ms:
                                delayed.add(self._later(link, d.seq, d.data, d.delay_ms))
                            else:
                                link.offer(d.seq, d.data)
                    # Let the node writers run after every frame (nothing above yields when
                    # unpaced or behind schedule), so a burst never overflows a healthy node's queue.
                    await asyncio.sleep(0)
                if delayed:
                    delayed = {f for f in delayed if not f.done()}
            for name, link in self._links.items():
                for d in self.faults.flush(name):
                    if d.delay_ms:
                        delayed.add(self._later(link, d.seq, d.data, d.delay_ms))
                    else:
                        link.offer(d.seq, d.data)
            if delayed:
                await asyncio.gather(*delayed, return_exceptions=True)
        finally:
            if pending is not None:
                try:
                    await pending
                except Exception:  # frames read ahead are discarded anyway
                    pass
            close = getattr(frames, "close", None)
            if close is not None:
                await loop.run_in_executor(executor, close)

    def _declare_outages(self, sending_ms: int) -> None:
        """Sign and send each outage of the source that this frame (captured at ``sending_ms``)
        ends: the source reads ahead, so an outage counts once its first frame after goes out."""
        found = getattr(self.source, "outages", None)
        while found and self._outages_seen < len(found):
            o = found[self._outages_seen]
            if o.to_ms is None or o.to_ms > sending_ms:
                return
            self._outages_seen += 1
            if o.to_ms <= o.from_ms:
                continue  # nothing to declare (a clock that did not move)
            body = outage_message(self.key, self.camera_ip, o.after_seq, o.from_ms, o.to_ms, o.reason,
                                  int(time.time() * 1000))
            self.declared.append({"afterSeq": o.after_seq, "fromMs": o.from_ms, "toMs": o.to_ms, "reason": o.reason})
            self.declared_bodies.append(body)
            log.warning("camera outage declared to the nodes", extra={"camera": self.camera_ip, "after_seq": o.after_seq,
                                                                       "from_ms": o.from_ms, "to_ms": o.to_ms})
            for link in self._links.values():
                link.declare(body)

    def _later(self, link: _NodeLink, seq: int, data: bytes, delay_ms: int) -> asyncio.Future[None]:
        async def send_later() -> None:
            await asyncio.sleep(delay_ms / 1000.0)
            link.offer(seq, data)

        return asyncio.ensure_future(send_later())

    async def _finish(self) -> None:
        await asyncio.gather(*(link.finish(self.end_timeout, self.end_max_timeout) for link in self._links.values()),
                             return_exceptions=True)
        for link in self._links.values():
            log.info("camera stream ended for node", extra={"node": link.name, **{
                k: v for k, v in self.stats[link.name].as_dict().items() if isinstance(v, int) and v}})

