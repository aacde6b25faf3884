"""The ingest pipeline behind `Node.accept_packet` (issue 9): verification in worker processes,
group commit, and the bounded budget that turns overload into TCP backpressure.

    camera sockets --(Budget: bounded frames/bytes; full = stop reading)--> accept_packet
        header parse, whitelist, duplicate and horizon checks      (event loop, cheap)
        SHA-256 + Ed25519 of the packet               (Verifier: worker processes, by camera)
        bytes + row                      (GroupCommitter: one fsync + one transaction per batch)
        -> held ranges updated -> acknowledgement (only ever after the batch's fsync)

Why this shape: the profile of the per-frame design (issue 9) was 54% fsync per frame, the rest
Python overhead per frame on the one event loop. A batch pays the fsyncs and the transaction once;
hashing and signature checks, the only per-byte work, run beside the loop on the other cores.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import multiprocessing
import os
import signal
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


from ..core import ed25519
from ..core import packet as pk
from ..core.block import FrameRef, cached_camera_id

log = logging.getLogger(__name__)

_SIGNED_TAIL = struct.Struct(">QQBIi")  # as core.packet.signing_message
_VERIFY_BATCH = 256  # packets per call into a worker: the IPC cost is paid per call, not per frame


class Verdict(IntEnum):
    OK = 0
    DIGEST = 1      # SHA-256 of the payload is not the declared one (integrity)
    SIGNATURE = 2   # no listed key verifies the device signature (security)


def default_workers() -> int:
    """One worker per core beyond the event loop's, at least one (a 2-core machine: 1)."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def verify_one(raw: bytes, keys: list[bytes]) -> Verdict:
    """The per-byte checks of one packet: its digest, then its signature under any of `keys`."""
    try:
        packet = pk.decode_packet(raw)
    except pk.PacketError:
        return Verdict.DIGEST  # the length was checked before; what remains is the digest
    return _signed(packet, keys)


def verify_parsed(packet: pk.FramePacket, keys: list[bytes]) -> Verdict:
    """`verify_one` of a packet already parsed on this side (inline checks: no second parse, and
    the camera id in the signed message from the per-IP cache: its keccak was ~9% of an ingest
    process's loop in the issue-9 profile)."""
    if hashlib.sha256(packet.payload).digest() != packet.sha256:
        return Verdict.DIGEST
    return _signed(packet, keys, signing_message_cached(packet))


def signing_message_cached(packet: pk.FramePacket) -> bytes:
    """`FramePacket.signing_message()` with `cached_camera_id` (tests/unit/test_ingest_pipeline.py
    checks both give the same bytes)."""
    delta = 0 if packet.dts_ms is None else packet.timestamp_ms - packet.dts_ms
    flags = (pk.FLAG_KEYFRAME if packet.keyframe else 0) | (pk.FLAG_DTS if packet.dts_ms is not None else 0)
    return (pk.SIGNING_DOMAIN + cached_camera_id(packet.camera_ip)
            + _SIGNED_TAIL.pack(packet.seq, packet.timestamp_ms, flags, packet.declared_length, delta) + packet.sha256)


def _signed(packet: pk.FramePacket, keys: list[bytes], message: bytes | None = None) -> Verdict:
    message = packet.signing_message() if message is None else message
    if any(ed25519.verify(key, packet.signature, message) for key in keys):
        return Verdict.OK
    return Verdict.SIGNATURE


def _watch_parent(parent: int) -> None:
    """Worker initializer: the worker ends when the node does, even after a kill -9 (the pool's
    pipes alone do not tell it: the worker holds both ends of its call queue)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def verify_batch(jobs: list[tuple[bytes, list[bytes]]]) -> list[int]:
    """Runs in a worker process: one verdict per (packet, keys)."""
    return [int(verify_one(raw, keys)) for raw, keys in jobs]


@dataclass
class _Shard:
    pool: ProcessPoolExecutor
    queue: deque[tuple[bytes, list[bytes], asyncio.Future[Verdict]]] = field(default_factory=deque)
    busy: bool = False


class Verifier:
    """SHA-256 + Ed25519 off the event loop, in ``workers`` processes (0: inline, on the loop).
    A camera always goes to the same worker (shard by camera id); what queues up for a worker
    while it is busy goes in its next call, so a loaded node makes fewer, larger calls."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._shards: list[_Shard] = []

    def _start(self) -> None:
        # spawn, not fork: the node has threads (web3, to_thread) that a fork would copy mid-lock
        ctx = multiprocessing.get_context("spawn")
        self._shards = [_Shard(ProcessPoolExecutor(1, mp_context=ctx, initializer=_watch_parent, initargs=(os.getpid(),)))
                        for _ in range(self.workers)]

    async def warm(self) -> None:
        """Start the worker processes now (a spawned worker takes a second or more to import),
        so the first frames do not wait for them."""
        if self.workers <= 0:
            return
        if not self._shards:
            self._start()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(s.pool, verify_batch, []) for s in self._shards))

    async def verify(self, cam: bytes, raw: bytes, keys: list[bytes], packet: pk.FramePacket | None = None) -> Verdict:
        if self.workers <= 0:
            return verify_parsed(packet, keys) if packet is not None else verify_one(raw, keys)
        if not self._shards:
            self._start()
        shard = self._shards[int.from_bytes(cam[:4], "big") % len(self._shards)]
        fut: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        shard.queue.append((raw, keys, fut))
        if not shard.busy:
            shard.busy = True
            asyncio.ensure_future(self._drain(shard))
        return await fut

    async def _drain(self, shard: _Shard) -> None:
        loop = asyncio.get_running_loop()
        try:
            while shard.queue:
                n = min(len(shard.queue), _VERIFY_BATCH)
                batch = [shard.queue.popleft() for _ in range(n)]
                try:
                    verdicts = await loop.run_in_executor(shard.pool, verify_batch, [(r, k) for r, k, _ in batch])
                except Exception as exc:  # noqa: BLE001 - a dead worker fails its batch, not the node
                    log.exception("verify worker failed")
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, _, fut), v in zip(batch, verdicts):
                    if not fut.done():
                        fut.set_result(Verdict(v))
        finally:
            shard.busy = False

    def close(self) -> None:
        for shard in self._shards:
            shard.pool.shutdown(wait=False, cancel_futures=True)
        self._shards = []


@dataclass
class Pending:
    """One verified frame waiting for its batch (``ref.sha256`` checked against ``payload``)."""

    cam: bytes
    ip: str
    ref: FrameRef
    signature: bytes
    source: str
    payload: bytes
    keyframe: bool
    future: asyncio.Future[bool]


class GroupCommitter:
    """Frames are written in batches: every payload of a batch with one ``put_many`` (one fsync),
    then every row in one SQLite transaction (one fsync), then `on_durable` runs (held ranges,
    counters) and each frame's future gets whether its row was new. A batch closes when
    ``max_frames`` are queued, or ``linger_s`` after its first frame, or, while a commit is
    running, when that commit ends (so the batch grows with the load)."""

    def __init__(self, commit: Callable[[list[Pending]], list[bool]],
                 on_durable: Callable[[list[Pending], list[bool]], None],
                 on_failed: Callable[[BaseException], None],
                 max_frames: int = 1024, linger_s: float = 0.005) -> None:
        self._commit = commit
        self._on_durable = on_durable
        self._on_failed = on_failed
        self.max_frames = max_frames
        self.linger_s = linger_s
        self.queue: list[Pending] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.frames = 0
        self._committing = False
        self.after_durable: list[Callable[[list[Pending], list[bool]], None]] = []  # e.g. an ingest process's report

    def submit(self, item: Pending) -> asyncio.Future[bool]:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.ensure_future(self._run())
        self.queue.append(item)
        assert self._wake is not None
        self._wake.set()
        return item.future

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            if len(self.queue) < self.max_frames and self.linger_s > 0:
                await asyncio.sleep(self.linger_s)
            self._wake.clear()
            batch, self.queue = self.queue[: self.max_frames], self.queue[self.max_frames :]
            if self.queue:
                self._wake.set()
            if not batch:
                continue
            self._committing = True
            try:
                added = await asyncio.to_thread(self._commit, batch)
            except Exception as exc:  # noqa: BLE001 - storage faults are the caller's to classify
                self._committing = False
                self._on_failed(exc)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self._committing = False
            self.batches += 1
            self.frames += len(batch)
            self._on_durable(batch, added)
            for hook in self.after_durable:
                hook(batch, added)
            for item, new in zip(batch, added):
                if not item.future.done():
                    item.future.set_result(new)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait (bounded) until every queued frame is committed or failed, so a clean stop
        neither closes the database under a running commit nor leaves a frame half-answered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (self.queue or self._committing) and loop.time() < deadline:
            await asyncio.sleep(0.01)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


class Budget:
    """Frames (and bytes) admitted to the pipeline and not yet answered. A camera connection
    waits here before it reads its next message, so a node that cannot keep up stops reading
    its sockets and TCP slows the cameras down; memory stays bounded by the limits."""

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.frames = 0
        self.bytes = 0
        self.high_water = 0  # most frames ever in the pipeline at once (status, tests)
        self.waited = 0      # how often a connection had to wait (backpressure applied)
        self._waiters: deque[asyncio.Future[None]] = deque()

    def _fits(self, size: int) -> bool:
        return self.frames == 0 or (self.frames < self.max_frames and self.bytes + size <= self.max_bytes)

    async def acquire(self, size: int) -> None:
        if not self._waiters and self._fits(size):
            self._take(size)
            return
        self.waited += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            while True:
                await fut
                if self._fits(size):
                    break
                fut = asyncio.get_running_loop().create_future()
                self._waiters.appendleft(fut)
        except BaseException:
            if fut in self._waiters:
                self._waiters.remove(fut)
            self._wake_next()
            raise
        self._take(size)
        self._wake_next()

    def _take(self, size: int) -> None:
        self.frames += 1
        self.bytes += size
        self.high_water = max(self.high_water, self.frames)

    def release(self, size: int) -> None:
        self.frames -= 1
        self.bytes -= size
        self._wake_next()

    def _wake_next(self) -> None:
        while self._waiters:
            fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            fut.set_result(None)
            self._waiters.popleft()
            return

    def snapshot(self) -> dict[str, Any]:
        return {"frames": self.frames, "bytes": self.bytes, "maxFrames": self.max_frames, "maxBytes": self.max_bytes,
                "highWater": self.high_water, "waited": self.waited}
