"""Several ingest processes behind one node (issue 9, config ``ingest_processes``).

    camera ──TCP──▶ main process: admission caps, challenge, signed hello (whitelist, key),
                    hello recorded ──(the socket's fd + the bytes read past the hello, over a
                    Unix SOCK_SEQPACKET pair: ``socket.send_fds``)──▶ the camera's ingest process
    ingest process k (cameras whose id % N == k): frames read, parsed, SHA-256 + Ed25519 inline
                    (no per-frame IPC), duplicate / equivocation / horizon checks, group commit
                    into its own pack segment + its own SQLite connection (one fsync each per
                    batch), held ranges, acknowledgements after the fsyncs, signed end, idle close
    ingest process ──(per batch: highest seq, newest time and keyframes per camera; counters)──▶ main
    main ──(seqs made durable by a peer's repair)──▶ the camera's ingest process (its acks)

Why a hand-off after the hello, not ``SO_REUSEPORT``: the kernel spreads connections by
4-tuple, so a camera that reconnects would land on another process, and the per-camera state
(held ranges, the in-flight duplicate check, "one stream connection per camera") would have two
owners. Routing by camera id after the hello gives every camera one owner for the node's
lifetime; the handshake (a few messages per connection) stays in the main process with the caps.

Crash safety: an ingest process acknowledges only after its batch's pack fdatasync and SQLite
commit, like the single-process path; SQLite arbitrates between processes (``INSERT OR IGNORE``
on (camera, seq), WAL, busy timeouts) and every pack segment has one writer. A killed ingest
process loses its connections (the cameras resend what was not acknowledged); the main process
sees its end of the pair close, gives back the connections' slots, logs an error and starts it
again (backing off when it dies young); each restart is counted in ``/api/v1/status``. A killed
main process takes its ingest processes with it (PR_SET_PDEATHSIG, and a parent watch).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from collections.abc import Callable
from typing import Any

from .config import NodeConfig
from .ingest import _READ_AHEAD, IngestServer, _Conn, _Profile
from .pipeline import Budget, GroupCommitter, Pending
from .registry import CameraRegistry
from .storage_guard import StorageGuard

log = logging.getLogger(__name__)

_MAX_MSG = 1 << 20            # one message on the pair (SEQPACKET keeps the boundaries)
_BUF_PIECE = 60 * 1024        # bytes read past a hello travel in pieces this size
_HELD_PIECE = 2_000           # seqs per "held" message
_READY_TIMEOUT_S = 120.0      # an ingest process imports web3 and reads the whitelist first
_STOP_TIMEOUT_S = 15.0
_YOUNG_S = 10.0               # a process that dies younger than this is restarted after a back-off
_ROOT = Path(__file__).resolve().parents[2]


def owner(cam: bytes, n: int) -> int:
    """The ingest process of a camera: fixed by its id, so a reconnect lands on the same one."""
    return int.from_bytes(cam[:4], "big") % n


def _encode(head: dict[str, Any], data: bytes = b"") -> bytes:
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + data


def _decode(raw: bytes) -> tuple[dict[str, Any], bytes]:
    head, _, data = raw.partition(b"\n")
    return json.loads(head), data


class _Link:
    """One end of the SEQPACKET pair on an event loop: messages (and fds) out through a bounded
    outbox, in through a reader callback."""

    def __init__(self, sock: socket.socket, on_message: Any, on_eof: Any) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.outbox: deque[tuple[bytes, int | None]] = deque()
        self._on_message = on_message
        self._on_eof = on_eof
        self._loop = asyncio.get_running_loop()
        self._writing = False
        self.closed = False
        self._loop.add_reader(sock.fileno(), self._readable)

    def send(self, head: dict[str, Any], data: bytes = b"", fd: int | None = None) -> None:
        if self.closed:
            if fd is not None:
                os.close(fd)
            return
        self.outbox.append((_encode(head, data), fd))
        self._flush()

    def _flush(self) -> None:
        while self.outbox and not self.closed:
            msg, fd = self.outbox[0]
            try:
                if fd is None:
                    self.sock.send(msg)
                else:
                    socket.send_fds(self.sock, [msg], [fd])
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    self._loop.add_writer(self.sock.fileno(), self._writable)
                return
            except OSError:
                self.close()
                self._on_eof()
                return
            self.outbox.popleft()
            if fd is not None:
                os.close(fd)  # the receiver holds its own copy now

    def _writable(self) -> None:
        self._loop.remove_writer(self.sock.fileno())
        self._writing = False
        self._flush()

    def _readable(self) -> None:
        while not self.closed:
            try:
                raw, fds, _, _ = socket.recv_fds(self.sock, _MAX_MSG, 1)
            except BlockingIOError:
                return
            except OSError:
                raw, fds = b"", []
            if not raw:
                for fd in fds:
                    os.close(fd)
                self.close()
                self._on_eof()
                return
            head, data = _decode(raw)
            self._on_message(head, data, fds[0] if fds else None)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self.sock.fileno())
        if self._writing:
            self._loop.remove_writer(self.sock.fileno())
        while self.outbox:
            _, fd = self.outbox.popleft()
            if fd is not None:
                os.close(fd)
        self.sock.close()


def config_dict(config: NodeConfig) -> dict[str, Any]:
    """The config as plain values (Paths as strings), to rebuild it in an ingest process."""
    return {f.name: str(v) if isinstance(v, Path) else v for f in fields(config) if (v := getattr(config, f.name)) is not None}


def child_config(config: NodeConfig, n: int) -> dict[str, Any]:
    """An ingest process's config: checks inline (it is the worker), a share of the node-wide
    pipeline bounds (so the node as a whole stays within them), no processes of its own."""
    raw = config_dict(config)
    raw.update(ingest_processes=0, ingest_verify_workers=0,
               ingest_queue_frames=max(1, config.ingest_queue_frames // n),
               ingest_queue_bytes=max(1, config.ingest_queue_bytes // n))
    return raw


# ================================================================================== main side
@dataclass
class _Child:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    link: _Link | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    conns: dict[int, _Conn] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    restarts: int = 0
    backoff_s: float = 0.5
    gone: asyncio.Event = field(default_factory=asyncio.Event)


class IngestProcs:
    """The node main process's side: starts, feeds, watches and restarts the ingest processes."""

    def __init__(self, *, config: NodeConfig, ingest: IngestServer, count: int,
                 on_batch: Callable[[bytes, int, dict[int, int], list[int]], None]) -> None:
        """`ingest`: the main process's server (handshakes, slots, counters); `on_batch(camera,
        newest_ms, top_seq_per_track, keyframes)`: what the node keeps of an ingest process's
        durable batch (its in-memory upper bounds and the gap scan's keyframes)."""
        self.config = config
        self.name = config.name
        self.ingest = ingest
        self.on_batch = on_batch
        self.count = count
        self.children = [_Child(i) for i in range(count)]
        self._next_id = 0
        self._held: dict[int, dict[bytes, list[int]]] = {}
        self._held_scheduled = False
        self._stopping = False

    async def start(self) -> None:
        for child in self.children:
            self._spawn(child)
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in self.children)), _READY_TIMEOUT_S)
        ingest = self.ingest
        ingest.handoff = self.hand_off
        ingest.on_held = self.note_held
        ingest.procs = self

    def _spawn(self, child: _Child) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "offchain.node.ingest_child", "--fd", str(theirs.fileno()), "--index", str(child.index),
             "--parent", str(os.getpid())], pass_fds=(theirs.fileno(),), env=env)
        theirs.close()
        child.ready.clear()
        child.gone.clear()
        child.started = time.monotonic()
        child.link = _Link(mine, lambda h, d, fd, c=child: self._message(c, h, d, fd), lambda c=child: self._died(c))
        child.link.send({"t": "config", "config": child_config(self.config, self.count), "index": child.index,
                         "of": self.count})
        log.info("ingest process started", extra={"node": self.name, "index": child.index, "pid": child.proc.pid})

    # ---------------------------------------------------------------- connections
    async def hand_off(self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Pass a proven connection to its camera's process: the socket's fd and every byte this
        process read past the hello. False (the connection is closed; the camera reconnects)
        when that process is not up within the handshake timeout."""
        assert conn.camera is not None and conn.ip is not None
        child = self.children[owner(conn.camera, self.count)]
        if not child.ready.is_set():
            try:
                await asyncio.wait_for(child.ready.wait(), self.config.ingest_handshake_timeout_ms / 1000)
            except asyncio.TimeoutError:
                return False
        link, transport = child.link, writer.transport
        if link is None or link.closed or transport.is_closing():
            return False
        transport.pause_reading()
        buffer = reader._buffer  # noqa: SLF001 - what the stream read past the hello travels with the fd
        left, buffer[:] = bytes(buffer), b""
        sock = transport.get_extra_info("socket")
        self._next_id += 1
        cid = self._next_id
        for i in range(0, len(left), _BUF_PIECE):
            link.send({"t": "buf", "id": cid}, left[i:i + _BUF_PIECE])
        child.conns[cid] = conn
        link.send({"t": "conn", "id": cid, "host": conn.host, "nonce": conn.nonce, "ip": conn.ip,
                   "eof": reader.at_eof()}, fd=os.dup(sock.fileno()))
        return True

    def note_held(self, cam: bytes, seq: int) -> None:
        """A frame made durable here (a peer's repair): its camera's process acknowledges it."""
        per = self._held.setdefault(owner(cam, self.count), {})
        per.setdefault(cam, []).append(seq)
        if not self._held_scheduled:
            self._held_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_held)

    def _send_held(self) -> None:
        self._held_scheduled = False
        held, self._held = self._held, {}
        for index, cams in held.items():
            link = self.children[index].link
            if link is None or link.closed:
                continue  # a restarted process reads the held ranges from SQLite
            for cam, seqs in cams.items():
                for i in range(0, len(seqs), _HELD_PIECE):
                    link.send({"t": "held", "cam": cam.hex(), "seqs": seqs[i:i + _HELD_PIECE]})

    # ---------------------------------------------------------------- messages
    def _message(self, child: _Child, head: dict[str, Any], data: bytes, fd: int | None) -> None:
        if fd is not None:
            os.close(fd)
        kind = head.get("t")
        if kind == "ready":
            child.ready.set()
        elif kind == "durable":
            self._durable(head)
        elif kind == "closed":
            conn = child.conns.pop(head["id"], None)
            if conn is not None:
                self.ingest._release(conn)
        if "counts" in head:
            counts = self.ingest.counts
            for camera, name, n in head["counts"]:
                counts[(camera, name)] += n
        if "stats" in head:
            child.stats = head["stats"]

    def _durable(self, head: dict[str, Any]) -> None:
        """What the main process keeps of an ingest process's batch: the highest seq and newest
        time per camera (upper bounds its own repair path uses) and keyframes (the gap scan's GOP)."""
        for cam_hex, (ts, tops, keyframes) in head["cams"].items():
            self.on_batch(bytes.fromhex(cam_hex), ts, {int(t): seq for t, seq in tops.items()}, list(keyframes))

    def _died(self, child: _Child) -> None:
        """An ingest process ended (its end of the pair closed): its connections are gone."""
        for conn in child.conns.values():
            self.ingest._release(conn)
        child.conns.clear()
        child.ready.clear()
        child.gone.set()
        proc = child.proc
        code = proc.poll() if proc is not None else None
        if self._stopping:
            return
        child.restarts += 1
        self.ingest.count("*", "ingest_process_restarts")
        young = time.monotonic() - child.started < _YOUNG_S
        delay = child.backoff_s if young else 0.0
        child.backoff_s = min(10.0, child.backoff_s * 2) if young else 0.5
        log.error("ingest process ended; restarting it", extra={
            "node": self.name, "index": child.index, "pid": proc.pid if proc else None, "code": code,
            "restarts": child.restarts, "after_s": delay})
        asyncio.get_running_loop().call_later(delay, self._respawn, child)

    def _respawn(self, child: _Child) -> None:
        if self._stopping:
            return
        if child.proc is not None and child.proc.poll() is None:
            child.proc.kill()  # its pair closed but it lingers: end it before a new one takes its cameras
        if child.proc is not None:
            child.proc.wait()
        self._spawn(child)

    # ---------------------------------------------------------------- stop and status
    async def stop(self) -> None:
        """Each process stops reading, commits what it holds, reports its counters, ends."""
        self._stopping = True
        for child in self.children:
            if child.link is not None and not child.link.closed:
                child.link.send({"t": "stop"})
        try:
            await asyncio.wait_for(asyncio.gather(*(c.gone.wait() for c in self.children if c.link is not None)),
                                   _STOP_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.error("ingest processes did not stop in time", extra={"node": self.name})
        for child in self.children:
            if child.link is not None:
                child.link.close()
            if child.proc is not None:
                if child.proc.poll() is None:
                    child.proc.kill()
                child.proc.wait()

    def storage(self, main: dict[str, Any]) -> dict[str, Any]:
        """The node's storage state: the main process's, unless an ingest process (which writes
        the cameras' frames) reported a fault in its last report."""
        if not main.get("ok", True):
            return main
        for child in self.children:
            state = child.stats.get("storage")
            if isinstance(state, dict) and not state.get("ok", True):
                return {**state, "process": child.index}
        return main

    def snapshot(self, ingest: Any) -> dict[str, Any]:
        stats = [c.stats for c in self.children]

        def total(part: str, key: str) -> int:
            return sum(int(s.get(part, {}).get(key, 0)) for s in stats)

        pipeline = {k: total("pipeline", k) for k in ("frames", "bytes", "maxFrames", "maxBytes", "highWater", "waited")}
        return {"openConnections": ingest.open_total, "inHandshake": len(ingest.unproven),
                "cameras": sum(int(s.get("cameras", 0)) for s in stats), "addresses": len(ingest.per_address),
                "pipeline": pipeline, "commits": {"batches": total("commits", "batches"), "frames": total("commits", "frames")},
                "processes": [{"index": c.index, "pid": c.proc.pid if c.proc else None, "up": c.ready.is_set(),
                               "restarts": c.restarts, "connections": len(c.conns), "storage": c.stats.get("storage")}
                              for c in self.children]}


# ================================================================================ process side
class _Worker:
    """One ingest process: a `Node` built from the same config (state, store, registry, the
    pipeline with checks inline), whose `IngestServer` streams the connections handed to it."""

    def __init__(self, *, name: str, ingest: IngestServer, registry: CameraRegistry, committer: GroupCommitter,
                 budget: Budget, storage: StorageGuard, sock: socket.socket) -> None:
        """The parts of this process's `Node` it serves connections with (`ingest_child` builds it)."""
        self.name, self.ingest, self.registry, self.committer = name, ingest, registry, committer
        self.budget, self.storage = budget, storage
        self.done = asyncio.Event()
        self.link = _Link(sock, self._message, self.done.set)
        self._bufs: dict[int, bytearray] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        committer.after_durable.append(self._durable)
        self._idle_report = False
        release = budget.release

        def released(size: int) -> None:
            release(size)
            if budget.frames == 0 and not self._idle_report:
                # the pipeline just drained: the main process's status sees it (not 0.5 s later)
                self._idle_report = True
                asyncio.get_running_loop().call_soon(self._report_idle)

        budget.release = released  # type: ignore[method-assign]

    def _report_idle(self) -> None:
        self._idle_report = False
        self.link.send({"t": "report", **self._report()})

    def _message(self, head: dict[str, Any], data: bytes, fd: int | None) -> None:
        kind = head.get("t")
        if kind == "buf":
            self._bufs.setdefault(head["id"], bytearray()).extend(data)
        elif kind == "conn" and fd is not None:
            task = asyncio.ensure_future(self._adopt(head, fd, bytes(self._bufs.pop(head["id"], b""))))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "held":
            cam = bytes.fromhex(head["cam"])
            for seq in head["seqs"]:
                self.ingest.note_held(cam, seq)
        elif kind == "stop":
            self.done.set()
        elif fd is not None:
            os.close(fd)

    async def _adopt(self, head: dict[str, Any], fd: int, left: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            reader = asyncio.StreamReader(limit=_READ_AHEAD)
            if left:
                reader.feed_data(left)
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
            if head.get("eof"):
                reader.feed_eof()
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self.ingest.adopt(reader, writer, head["host"], head["nonce"], head["ip"])
        except OSError:
            pass
        finally:
            self.link.send({"t": "closed", "id": head["id"], **self._report()})

    def _durable(self, batch: list[Pending], added: list[bool]) -> None:
        cams: dict[str, list[Any]] = {}
        for p, new in zip(batch, added):
            if not new:
                continue
            entry = cams.setdefault(p.cam.hex(), [p.ref.timestamp_ms, {}, []])
            entry[0] = max(entry[0], p.ref.timestamp_ms)
            track = str(p.ref.track)
            entry[1][track] = max(entry[1].get(track, p.ref.seq), p.ref.seq)
            if p.keyframe:
                entry[2].append(p.ref.seq)
        self.link.send({"t": "durable", "cams": cams, **self._report()})

    def _report(self) -> dict[str, Any]:
        ingest = self.ingest
        counts, ingest.counts = ingest.counts, Counter()
        return {"counts": [[camera, name, n] for (camera, name), n in counts.items()],
                "stats": {"cameras": len(ingest.by_camera), "open": ingest.open_total,
                          "pipeline": self.budget.snapshot(), "storage": self.storage.snapshot(),
                          "commits": {"batches": self.committer.batches, "frames": self.committer.frames}}}

    async def flush_forever(self, index: int, every_s: float = 0.5) -> None:
        """Counters go to the main process (which writes them); coalesced alarms to SQLite."""
        profile = _Profile.from_env(f".{index}")
        while True:
            await asyncio.sleep(every_s)
            if profile is not None:
                profile.maybe_dump()
            self.link.send({"t": "report", **self._report()})
            try:
                self.ingest.flush()
            except Exception:  # noqa: BLE001 - retried with the next one
                log.exception("ingest alarm flush failed", extra={"node": self.name})

    async def watch_forever(self, every_s: float = 1.0) -> None:
        """Key rotations and revocations reach this process's registry within a second."""
        registry = self.registry
        checkpoint = await asyncio.to_thread(lambda: int(registry.consortium.signer.w3.eth.block_number))
        while True:
            await asyncio.sleep(every_s)
            try:
                checkpoint = await asyncio.to_thread(registry.watch, checkpoint)
            except Exception:  # noqa: BLE001 - the chain may be away for a while; tried again
                log.warning("ingest process: whitelist watch failed", extra={"node": self.name})

    async def stop(self) -> None:
        """Stop reading every camera, commit what was taken, report, and end."""
        for conn in list(self.ingest.by_camera.values()):
            conn.writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.committer.drain()
        self.committer.close()
        try:
            self.ingest.flush()
        except Exception:  # noqa: BLE001
            log.exception("ingest alarm flush failed", extra={"node": self.name})
        self.link.send({"t": "report", **self._report()})
