"""The camera agent: streams signed frame packets to every node of the consortium (I1).

One `CameraAgent` is one camera. It reads encoded frames from a source (`FileSource`,
`UrlSource`, or any iterable of `EncodedFrame` with an optional ``codec``), signs each as a
frame packet with the device key, and sends it to every node over that node's own persistent
TCP connection, framed as ``offchain.core.wire`` describes (hello first on every connection,
end at the end of the stream).

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
* Reconnect: a lost connection is retried with exponential backoff (50 ms doubling to 2 s);
  every new connection starts with the hello control message.
* Faults (`offchain.camera.faults`) are applied per node after signing, deterministically per seed.

`run()` returns per-node `NodeStats`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..core.packet import encode_packet
from ..core.wire import end_message, frame_message, hello_message
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
    disconnects: int = 0
    end_sent: bool = False
    last_error: str | None = None

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

    headers = ["node", "address", "frames", "sent", "MB", "drop", "cut", "unreach", "qfull",
               "corrupt", "trunc", "dup", "reord", "delay", "conn", "end"]
    rows = [[s.node, s.address, s.frames, s.sent, f"{s.bytes_sent / 1e6:.1f}", s.dropped_by_fault, s.dropped_cut,
             s.dropped_unreachable, s.dropped_queue_full, s.corrupted, s.truncated, s.duplicated, s.reordered,
             s.delayed, s.connects, "yes" if s.end_sent else "no"] for s in stats.values()]
    return render_table(headers, rows, title=title)


_FRAME = 0
_CONTROL = 1
_BATCH = 32  # frames read and signed per trip to the source thread (bounded by 5 ms)


class _NodeLink:
    """One node: its connection, reconnect loop, bounded queue and writer."""

    def __init__(self, agent: CameraAgent, name: str, host: str, port: int) -> None:
        self.agent = agent
        self.name = name
        self.host = host
        self.port = port
        self.stats = NodeStats(name, f"{host}:{port}")
        self.queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(agent.queue_size)
        self.connected = asyncio.Event()
        self.closing = False
        self.end_written = asyncio.Event()
        self.room = asyncio.Event()     # set whenever the writer takes a message off the queue
        self.last_progress = 0.0        # loop time the writer last took a message
        self.task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    # -- producer side (never blocks) --------------------------------------------------------
    def offer(self, data: bytes) -> None:
        if not self.connected.is_set():
            self.stats.dropped_unreachable += 1
            return
        try:
            self.queue.put_nowait((_FRAME, frame_message(data)))
        except asyncio.QueueFull:
            self.stats.dropped_queue_full += 1

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

    # -- connection loop ---------------------------------------------------------------------
    async def run(self) -> None:
        delay = self.agent.backoff[0]
        while not self.closing:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                        self.agent.connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                self.stats.last_error = f"connect: {exc!r}"
                log.debug("node unreachable", extra={"node": self.name, "error": repr(exc), "retry_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.agent.backoff[1])
                continue
            delay = self.agent.backoff[0]
            self._writer = writer
            self.last_progress = asyncio.get_running_loop().time()
            writer.write(frame_message(self.agent.hello))
            self.stats.connects += 1
            self.connected.set()
            log.info("connected to node", extra={"node": self.name, "camera": self.agent.camera_ip,
                                                 "connects": self.stats.connects})
            try:
                await self._session(reader, writer)
            finally:
                self.connected.clear()
                self._writer = None
                lost = 0
                while not self.queue.empty():
                    kind, _ = self.queue.get_nowait()
                    self.queue.task_done()
                    lost += kind == _FRAME
                self.stats.dropped_unreachable += lost
                if self.end_written.is_set():
                    # Normal end: FIN after the buffered data, so the end message arrives.
                    writer.close()
                    try:
                        await asyncio.wait_for(writer.wait_closed(), 1.0)
                    except (OSError, asyncio.TimeoutError):
                        pass
                else:
                    # Broken or abandoned (a stuck node at shutdown): no point flushing to it.
                    writer.transport.abort()
            if not self.closing:
                self.stats.disconnects += 1
                log.warning("lost node connection", extra={"node": self.name, "camera": self.agent.camera_ip,
                                                           "error": self.stats.last_error})
                await asyncio.sleep(delay)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pump = asyncio.ensure_future(self._pump(writer))
        watch = asyncio.ensure_future(self._watch(reader))
        try:
            done, _ = await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                task.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if exc is not None:
                self.stats.last_error = repr(exc)

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        """The node never writes; EOF (or a reset) means it closed the connection."""
        try:
            while await reader.read(65536):
                pass
        except OSError as exc:
            self.stats.last_error = f"read: {exc!r}"
            return
        self.stats.last_error = "node closed the connection"

    async def _pump(self, writer: asyncio.StreamWriter) -> None:
        stats = self.stats
        loop = asyncio.get_running_loop()
        while True:
            kind, data = await self.queue.get()
            self.last_progress = loop.time()
            self.room.set()
            try:
                writer.write(data)
                if kind == _FRAME:
                    stats.sent += 1
                    stats.bytes_sent += len(data)
                await writer.drain()
            finally:
                self.queue.task_done()
            if kind != _FRAME:
                # End is the last message: the connection is closed (after its buffer is
                # flushed) and not re-opened.
                self.closing = True
                self.end_written.set()
                return

    # -- end of stream -----------------------------------------------------------------------
    async def finish(self, body: bytes, timeout: float) -> None:
        """Deliver the end message (waiting up to ``timeout`` for a connection and for the queue
        to drain), then close."""
        deadline = time.monotonic() + timeout
        try:
            while not self.end_written.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self.connected.wait(), remaining)
                    await asyncio.wait_for(self.queue.put((_CONTROL, frame_message(body))),
                                           max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                # Wait for the end to be written; if the connection drops first, go round again
                # (its queue, end included, was discarded) and re-send on the next connection.
                while (not self.end_written.is_set() and self.connected.is_set()
                       and time.monotonic() < deadline):
                    try:
                        await asyncio.wait_for(self.end_written.wait(),
                                               min(0.05, max(0.0, deadline - time.monotonic())))
                    except asyncio.TimeoutError:
                        pass
            self.stats.end_sent = self.end_written.is_set()
        finally:
            await self.close(graceful=self.end_written.is_set(), timeout=max(0.5, deadline - time.monotonic()))

    async def close(self, graceful: bool = False, timeout: float = 1.0) -> None:
        self.closing = True
        if self.task is None or self.task.done():
            return
        if graceful:
            # The connection loop is closing the socket after the end message: let it finish.
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout)
                return
            except asyncio.TimeoutError:
                pass
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class CameraAgent:
    """Streams one camera to every node. See the module docstring.

    ``nodes``: node name → (host, port) of its ingest address. ``faults``: a `FaultInjector`,
    or a spec (string or dict) made into one with ``seed``. ``max_frames`` / ``max_duration_ms``
    (capture time after the first frame) bound an endless (looping or live) source.
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
        end_timeout: float = 3.0,
        stall_timeout: float = 1.0,
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
        self.stall_timeout = stall_timeout
        self.wait_when_full = (not self.paced) if wait_when_full is None else wait_when_full
        self.frames_produced = 0
        self.last_seq = -1
        self.first_timestamp_ms: int | None = None
        self.hello = b""
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
            self.hello = hello_message(self.camera_ip, codec.to_dict() if hasattr(codec, "to_dict") else codec)
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
                    if self.max_frames is not None and self.frames_produced >= self.max_frames:
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
                    self.last_seq = frame.seq
                    size = len(frame.data)
                    for name, link in self._links.items():
                        for d in self.faults.apply(name, frame.seq, t_rel, packet, size):
                            if d.delay_ms:
                                delayed.add(self._later(link, d.data, d.delay_ms))
                            else:
                                link.offer(d.data)
                    # Let the node writers run after every frame (nothing above yields when
                    # unpaced or behind schedule), so a burst never overflows a healthy node's queue.
                    await asyncio.sleep(0)
                if delayed:
                    delayed = {f for f in delayed if not f.done()}
            for name, link in self._links.items():
                for d in self.faults.flush(name):
                    if d.delay_ms:
                        delayed.add(self._later(link, d.data, d.delay_ms))
                    else:
                        link.offer(d.data)
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

    def _later(self, link: _NodeLink, data: bytes, delay_ms: int) -> asyncio.Future[None]:
        async def send_later() -> None:
            await asyncio.sleep(delay_ms / 1000.0)
            link.offer(data)

        return asyncio.ensure_future(send_later())

    async def _finish(self) -> None:
        body = end_message(self.camera_ip, self.last_seq)
        await asyncio.gather(*(link.finish(body, self.end_timeout) for link in self._links.values()),
                             return_exceptions=True)
        for link in self._links.values():
            log.info("camera stream ended for node", extra={"node": link.name, **{
                k: v for k, v in self.stats[link.name].as_dict().items() if isinstance(v, int) and v}})

