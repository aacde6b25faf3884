"""An honest camera's acknowledged frames/s at a real node process during floods (issue 8), each
attack against the baseline of the same run, with the node's memory and CPU during each flood.

    python -m bench flood                        # writes bench/results/flood.json (~2 min)
    python -m bench flood -- --seconds 3         # shorter phases
    python -m bench flood -- --only garbage-proven,http-small    # baseline, these, baseline again
    python -m bench flood -- --attacker-nice 10  # attackers at lower priority (the node's own cost)

What runs: Anvil, the contracts, a one-node consortium (quorum 1, so the node anchors alone and
never waits on absent peers) and one `frameledger node` process (`offchain.node.cluster`), with
SQLite, the local store and `store_fsync = "none"` (the store's fsync is disk noise, not what a
flood costs); every other node setting is its default (docs/TRANSPORT.md, "Limits"). Each phase
gets a fresh whitelisted honest camera (`CameraAgent`, the `bikes` sample, unpaced, waiting for
its acknowledgements) that streams for `--seconds` while one attack runs in its own process (so
the attacker's Python is not the honest camera's), from its own loopback addresses:

  baseline            no attack
  garbage-proven      a whitelisted camera says a valid signed hello, then sends garbage packets
                      (a packet header that fails its digest check, as tests/integration/
                      test_ingest.py); reconnects and repeats whenever the node closes it
  garbage-anon        16 anonymous connections at once, each sending 1,000 garbage packets
                      without a hello, re-opened as soon as the node closes them
  unfinished          rounds of 8 anonymous + 8 proven connections (one camera), each sending
                      15 MiB of one message that never ends; held 0.5 s, closed, repeated
  half-open           tests/integration/ingest_flood.py: 1,100 connections from 55 addresses that
                      never say hello, re-opened as soon as closed
  http-large          unsigned POSTs to /peer/v1/alarm and /peer/v1/repair announcing 200 MiB
                      (Content-Length), streaming 200 MiB (chunked), and streaming 200 MiB under
                      headers that name the node (a signature by some other key: the body is read
                      before the signature can be checked)
  http-small          64 keep-alive connections sending small unsigned POSTs as fast as they can
  baseline again      no attack (drift of the machine and of the node over the run)

Per phase: the honest camera's acknowledged frames/s (acked / time from connect to its last ack)
and its ratio to the first baseline; acked / sent, and the frames the camera dropped unsent
("unsent": its writer could hand nothing to the node's socket for `--stall-timeout`, the agent's
rule for a stuck node); node RSS (VmRSS of the node's main process: start, peak sampled every
50 ms, end); node CPU seconds during the honest stream (main process + its verify workers); the
node's /api/v1/status polled once a second (answered within 2 s / polls); what the node did
(counter deltas, coalesced alarm counts, most connections open) and what the attacker saw.
Attack phases run `--warmup` seconds of flood before the honest camera starts. Exit 1 if any
honest frame sent went unacknowledged in any phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import queue
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account

from bench.procstat import cpu_seconds, process_tree, rss_mib
from offchain.camera.agent import CameraAgent
from offchain.camera.samples import sample_path
from offchain.camera.sources import FileSource
from offchain.core import peer_auth as pa
from offchain.core import wire
from offchain.node.cluster import Cluster, NodeProcess
from offchain.node.peer_http import new_nonce, now_ms
from offchain.tables import render_table

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "flood.json"
HALF_OPEN_SCRIPT = REPO / "tests" / "integration" / "ingest_flood.py"
MIB = 1 << 20
WINDOW_MS = 60_000
ONE_NODE_PLAN = {"founderName": "Authority",
                 "members": [{"account": 1, "role": "Operator", "parent": 0, "name": "Bank"}],
                 "nodes": [{"account": 3, "operatedBy": 0, "name": "node-flood"}], "quorum": 1}
HONEST_NET = "10.0.8."  # the honest cameras' IPs: 10.0.8.1, 10.0.8.2, ...
SETTINGS = {"store_fsync": "none"}  # everything else: the defaults a deployed node runs with

# name, attack kind (None = no attack): the order of the run
PHASES = [("baseline", None), ("garbage, 1 proven conn", "garbage-proven"),
          ("garbage, anonymous conns", "garbage-anon"),
          ("unfinished 15 MiB msgs", "unfinished"), ("half-open flood", "half-open"),
          ("peer HTTP 200 MiB bodies", "http-large"), ("peer HTTP small POSTs", "http-small"),
          ("baseline again", None)]
ATTACKS = [kind for _, kind in PHASES if kind]


# ----------------------------------------------------------------------- the node process
def node_cpu_s(pid: int) -> float:
    """CPU seconds of the node's main process and its descendants (the verify workers and ingest
    processes check the honest camera's frames, so they belong to what the node spends)."""
    return cpu_seconds(process_tree(pid))


class RssSampler(threading.Thread):
    """Peak RSS of one process, sampled every 50 ms until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self._done = pid, rss_mib([pid]), threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.05):
            self.peak = max(self.peak, rss_mib([self.pid]))

    def stop(self) -> float:
        self._done.set()
        self.join(timeout=2)
        return max(self.peak, rss_mib([self.pid]))


class StatusSampler(threading.Thread):
    """Polls the node's /api/v1/status once a second during a phase: the most connections open
    and in their handshake it reports, and how many polls it answered within 2 s (the API shares
    the node's event loop with ingest)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self._done = url + "/api/v1/status", threading.Event()
        self.polls = self.answered = self.max_open = self.max_handshake = 0
        self.slowest_ms = 0

    def run(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self._done.wait(1.0):
                self.polls += 1
                started = time.monotonic()
                try:
                    r = client.get(self.url)
                except httpx.HTTPError:
                    continue
                self.slowest_ms = max(self.slowest_ms, int(1000 * (time.monotonic() - started)))
                if r.status_code == 200:
                    self.answered += 1
                    ingest = r.json().get("ingest", {})
                    self.max_open = max(self.max_open, ingest.get("openConnections", 0))
                    self.max_handshake = max(self.max_handshake, ingest.get("inHandshake", 0))

    def stop(self) -> dict[str, int]:
        self._done.set()
        self.join(timeout=5)
        return {"polls": self.polls, "answered": self.answered, "slowest_ms": self.slowest_ms,
                "max_open_connections": self.max_open, "max_in_handshake": self.max_handshake}


def node_counters(cluster: Cluster, node: NodeProcess) -> dict[str, int]:
    """The node's counters, flattened to "name" (node-wide) or "camera:name"."""
    for _ in range(5):  # right after an HTTP flood the API may still answer 503 busy
        try:
            counters = cluster.api(node, "/api/v1/status")["counters"]
            break
        except Exception:  # noqa: BLE001 - retried, then reported empty
            time.sleep(0.5)
    else:
        return {}
    return {(name if cam == "*" else f"{cam}:{name}"): n
            for cam, names in counters.items() for name, n in names.items()}


def alarm_counts(node: NodeProcess) -> dict[str, int]:
    """Coalesced alarm occurrences (one row per kind and source, its count): read-only SQLite."""
    with sqlite3.connect(f"file:{node.config.data_dir / 'node.sqlite'}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT id, count FROM alarm_counts"))


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v != before.get(k, 0)}


# ----------------------------------------------------------------------- the honest camera
@dataclass
class HonestRun:
    frames: int
    acked: int
    unacked: int
    rejected: int
    elapsed_s: float
    stats: dict[str, Any] = field(default_factory=dict)  # the agent's NodeStats, all of it

    @property
    def fps(self) -> float:
        return self.acked / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def sent(self) -> int:
        return int(self.stats.get("sent", 0))

    @property
    def dropped(self) -> int:
        """Frames the camera never sent: its queue to the node stayed full while its writer could
        hand the socket nothing for `stall_timeout` (the agent's "stuck node" rule, judged by
        writes, not acks), so `offer` dropped them."""
        return int(self.stats.get("dropped_queue_full", 0))

    @property
    def all_acked(self) -> bool:
        """Every frame sent was acknowledged (and none refused); frames the camera dropped
        unsent are reported apart (`dropped`)."""
        return (self.sent > 0 and self.acked == self.sent and self.rejected == 0
                and self.unacked == self.frames - self.sent)


def run_honest(node: NodeProcess, ip: str, key: Ed25519PrivateKey, seconds: float, stall_timeout: float) -> HonestRun:
    """Stream unpaced for `seconds`, then the signed end and a wait for every acknowledgement."""
    now = int(time.time() * 1000)
    source = FileSource(sample_path("bikes"), start_ms=now - now % WINDOW_MS - WINDOW_MS, loop=True)

    async def go() -> tuple[Any, float]:
        agent = CameraAgent(ip, key, source, {node.name: node.ingest}, speed=0, end_timeout=30,
                            stall_timeout=stall_timeout)
        asyncio.get_running_loop().call_later(seconds, agent.stop)
        started = time.monotonic()
        stats = await agent.run()
        return stats[node.name], time.monotonic() - started

    s, elapsed = asyncio.run(go())
    return HonestRun(s.frames, s.acked, s.unacked, s.rejected, round(elapsed, 3), s.as_dict())


# ----------------------------------------------------------------------- attackers (own process)
def garbage_packet(ip: str, i: int) -> bytes:
    """Parses as a frame packet header of `ip`, fails the digest check (as in test_ingest.py)."""
    raw = ip.encode()
    return b"FLP1" + bytes([0, len(raw)]) + raw + struct.pack(">QQI32s64s", i, 0, 4, b"\0" * 32, b"\0" * 64) + b"junk"


class Link:
    """One camera-protocol connection, the attacker's side."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.msgs = wire.MessageReader(wire.MAX_CONTROL_BYTES)
        self.ready: list[bytes] = []
        self.nonce = ""

    @classmethod
    async def open(cls, addr: tuple[str, int], src: str) -> "Link":
        r, w = await asyncio.open_connection(*addr, local_addr=(src, 0))
        link = cls(r, w)
        first = await link.recv(5)
        if first is None or first.get("type") != "challenge":
            link.close()
            raise ConnectionError("no challenge")
        link.nonce = first["nonce"]
        return link

    async def recv(self, timeout: float) -> dict[str, Any] | None:
        """The next node message; None at EOF, reset or timeout."""
        try:
            while not self.ready:
                chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not chunk:
                    return None
                self.ready.extend(self.msgs.feed(chunk))
            return wire.parse_node_message(self.ready.pop(0))
        except (OSError, asyncio.TimeoutError, wire.WireError):
            return None

    async def until_closed(self, timeout: float) -> list[dict[str, Any]]:
        got = []
        while (msg := await self.recv(timeout)) is not None:
            got.append(msg)
        return got

    async def hello(self, key: Ed25519PrivateKey, ip: str) -> bool:
        self.writer.write(wire.frame_message(wire.hello_message(key, ip, None, self.nonce, int(time.time() * 1000))))
        msg = await self.recv(5)
        return msg is not None and msg.get("type") == "ack"

    async def write(self, data: bytes, timeout: float = 5.0) -> bool:
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), timeout)
            return True
        except (OSError, asyncio.TimeoutError):
            return False

    async def still_open(self) -> bool:
        """Whether the node has not closed (or reset) this connection; reads what is pending."""
        while True:
            try:
                if not await asyncio.wait_for(self.reader.read(65536), 0.02):
                    return False
            except asyncio.TimeoutError:
                return True
            except OSError:
                return False

    def close(self) -> None:
        self.writer.transport.abort()


async def garbage_proven(p: dict[str, Any], stop: asyncio.Event, rep: Counter) -> None:
    key = Ed25519PrivateKey.from_private_bytes(p["key"])
    batch = b"".join(wire.frame_message(garbage_packet(p["ip"], i)) for i in range(200))
    while not stop.is_set():
        try:
            link = await Link.open(p["addr"], p["src"][0])
        except OSError:
            rep["connect_failed"] += 1
            await asyncio.sleep(0.05)
            continue
        if not await link.hello(key, p["ip"]):
            rep["hello_refused"] += 1
            link.close()
            continue
        rep["connections"] += 1
        closed = asyncio.ensure_future(link.until_closed(10))
        while not closed.done() and not stop.is_set() and await link.write(batch):
            rep["packets_written"] += 200
        for msg in await closed if not stop.is_set() else []:
            rep[f"node_{msg['type']}_{msg.get('reason', '')}".rstrip("_")] += 1
        closed.cancel()
        link.close()


async def garbage_anon(p: dict[str, Any], stop: asyncio.Event, rep: Counter) -> None:
    blob = b"".join(wire.frame_message(garbage_packet(p["ip"], i)) for i in range(1000))

    async def one(src: str) -> None:
        while not stop.is_set():
            try:
                link = await Link.open(p["addr"], src)
            except OSError:
                rep["connect_failed"] += 1  # refused in connection_made: closed before the challenge
                await asyncio.sleep(0.01)
                continue
            rep["connections"] += 1
            await link.write(blob)
            for msg in await link.until_closed(10):
                rep[f"node_{msg['type']}_{msg.get('reason', '')}".rstrip("_")] += 1
            link.close()

    # at most 4 per source address: the node's cap on connections still in their handshake per address
    await asyncio.gather(*(one(p["src"][i % len(p["src"])]) for i in range(p.get("connections", 16))))


async def _unfinished_one(p: dict[str, Any], src: str, key: Ed25519PrivateKey | None, rep: Counter) -> Link | None:
    try:
        link = await Link.open(p["addr"], src)
    except OSError:
        rep["connect_failed"] += 1
        return None
    if key is not None and not await link.hello(key, p["ip"]):
        rep["hello_refused"] += 1
    chunk = b"\xa5" * MIB
    size = 15 * MIB
    sent = 4 if await link.write(struct.pack(">I", size)) else 0
    while sent and sent < size - MIB and await link.write(chunk):  # one MiB short of the end: never finished
        sent += MIB
    rep["bytes_written"] += sent
    return link


async def unfinished(p: dict[str, Any], stop: asyncio.Event, rep: Counter) -> None:
    key = Ed25519PrivateKey.from_private_bytes(p["key"])
    while not stop.is_set():
        links = []
        for i in range(8):  # anonymous: 2 per address, under the per-address handshake cap
            links.append(await _unfinished_one(p, p["src"][i // 2], None, rep))
        for _ in range(8):  # proven, one camera: each new hello replaces the previous connection
            links.append(await _unfinished_one(p, p["src"][4], key, rep))
        await asyncio.sleep(0.5)
        alive = 0
        for link in links:
            if link is not None:
                alive += await link.still_open()
                link.close()
        rep["rounds"] += 1
        rep["still_open_after_round"] += alive


async def _http_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers.get("connection", "").lower() != "close"


async def _http_post(p: dict[str, Any], path: str, mode: str) -> tuple[int, int]:
    """One large POST; returns (status or 0, body bytes written). `declared`: Content-Length of
    200 MiB, no body; `streamed`: chunked, unsigned; `node-named`: chunked, headers naming the node."""
    total = 200 * MIB
    r, w = await asyncio.open_connection(*p["api"], local_addr=(p["src"][0], 0))
    head = [f"POST {path} HTTP/1.1", f"Host: {p['api'][0]}", "Content-Type: application/json"]
    head += [f"Content-Length: {total}"] if mode == "declared" else ["Transfer-Encoding: chunked"]
    head += [f"{k}: {v}" for k, v in p["named_headers"].items()] if mode == "node-named" else []
    w.write(("\r\n".join(head) + "\r\n\r\n").encode())
    answer = asyncio.ensure_future(_http_response(r))
    sent, chunk = 0, b"0" * MIB
    try:
        while mode != "declared" and sent < total and not answer.done():
            w.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await asyncio.wait_for(w.drain(), 5)
            sent += len(chunk)
        status = (await asyncio.wait_for(answer, 10))[0]
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        status = answer.result()[0] if answer.done() and not answer.exception() else 0
    finally:
        answer.cancel()
        w.transport.abort()
    return status, sent


async def http_large(p: dict[str, Any], stop: asyncio.Event, rep: Counter) -> None:
    variants = [(path, mode) for mode in ("declared", "streamed", "node-named")
                for path in ("/peer/v1/alarm", "/peer/v1/repair")]

    async def one(offset: int) -> None:
        i = offset
        while not stop.is_set():
            path, mode = variants[i % len(variants)]
            i += 1
            started = time.monotonic()
            try:
                status, sent = await _http_post(p, path, mode)
            except OSError:
                rep["connect_failed"] += 1
                await asyncio.sleep(0.05)
                continue
            rep[f"{mode} {path.rsplit('/', 1)[1]} -> {status}"] += 1
            rep[f"{mode}_mib_written"] += sent // MIB
            rep[f"{mode}_max_ms"] = max(rep[f"{mode}_max_ms"], int(1000 * (time.monotonic() - started)))

    await asyncio.gather(*(one(i) for i in range(4)))


async def http_small(p: dict[str, Any], stop: asyncio.Event, rep: Counter) -> None:
    body = json.dumps({"alarmId": "x", "from": "mallory", "camera": "10.0.0.1", "seqs": [1, 2, 3]}).encode()

    async def one(i: int) -> None:
        path = ("/peer/v1/alarm", "/peer/v1/repair")[i % 2]
        req = (f"POST {path} HTTP/1.1\r\nHost: {p['api'][0]}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        while not stop.is_set():
            try:
                r, w = await asyncio.open_connection(*p["api"], local_addr=(p["src"][i % len(p["src"])], 0))
            except OSError:
                rep["connect_failed"] += 1
                await asyncio.sleep(0.05)
                continue
            try:
                keep = True
                while keep and not stop.is_set():
                    w.write(req)
                    status, keep = await asyncio.wait_for(_http_response(r), 10)
                    rep[f"-> {status}"] += 1
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                rep["connection_lost"] += 1
            finally:
                w.transport.abort()

    await asyncio.gather(*(one(i) for i in range(p.get("connections", 64))))


ATTACKERS: dict[str, Callable[[dict[str, Any], asyncio.Event, Counter], Any]] = {
    "garbage-proven": garbage_proven, "garbage-anon": garbage_anon, "unfinished": unfinished,
    "http-large": http_large, "http-small": http_small}


def attacker_main(kind: str, params: dict[str, Any], stop: Any, out: Any, nice: int) -> None:
    """Entry point of an attacker process: runs until `stop` is set, then puts its report."""
    if nice:
        os.nice(nice)

    async def go() -> Counter:
        rep: Counter = Counter()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, stop.wait).add_done_callback(lambda _: loop.call_soon_threadsafe(done.set))
        task = asyncio.ensure_future(ATTACKERS[kind](params, done, rep))
        out.put({"ready": True})
        await done.wait()
        try:
            await asyncio.wait_for(task, 15)  # each loop checks `done` between connections
        except asyncio.TimeoutError:
            rep["stopped_by_timeout"] += 1
        except Exception as exc:  # noqa: BLE001 - reported, so a broken attack is not read as a harmless one
            rep[f"error: {exc!r}"[:200]] += 1
        return rep

    out.put(dict(asyncio.run(go())))


class Attacker:
    """An attack in its own process: `start` returns once it runs, `stop` returns its report."""

    def __init__(self, kind: str, params: dict[str, Any], nice: int) -> None:
        self.kind, self.params, self.nice = kind, params, nice
        self.held: list[int] = []  # half-open: the script's "HOLDING n" lines

    def start(self) -> None:
        if self.kind == "half-open":
            host, port = self.params["addr"]
            self.proc = subprocess.Popen([sys.executable, str(HALF_OPEN_SCRIPT), host, str(port), "1100", "55"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                         preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None)
            self.held.append(int(self.proc.stdout.readline().split()[1]))
            threading.Thread(target=self._read_held, daemon=True).start()
            return
        ctx = mp.get_context("spawn")  # a fresh interpreter: no threads or sockets of ours inherited
        self.stop_event, self.out = ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=attacker_main, daemon=True,
                                args=(self.kind, self.params, self.stop_event, self.out, self.nice))
        self.proc.start()
        deadline = time.monotonic() + 60
        while True:  # the attacker reports once it runs; a crash at start is an error, not a harmless attack
            try:
                if self.out.get(timeout=1) == {"ready": True}:
                    return
            except queue.Empty:
                pass
            if not self.proc.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"attacker {self.kind} did not start (exit code {self.proc.exitcode})")

    def _read_held(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("HOLDING"):
                self.held.append(int(line.split()[1]))

    def stop(self) -> dict[str, Any]:
        if self.kind == "half-open":
            self.proc.stdin.close()  # the script's signal to stop
            self.proc.wait(30)
            return {"connections_held_max": max(self.held, default=0), "held_samples": self.held}
        self.stop_event.set()
        try:
            report = self.out.get(timeout=30)
        finally:
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()  # our own child, by its handle
        return report


# ----------------------------------------------------------------------- phases
@dataclass
class PhaseResult:
    name: str
    attack: str | None
    honest: HonestRun
    rss_start_mib: float
    rss_peak_mib: float
    rss_end_mib: float
    node_cpu_s: float                 # during the honest stream: main process + verify workers (rounded)
    node_did: dict[str, int]          # counter deltas over the phase
    alarm_counts: dict[str, int]      # coalesced alarm occurrences over the phase
    alarm_rows: int                   # new durable alarm rows (one per kind and source)
    api: dict[str, int]               # the status polls during the phase (StatusSampler)
    attacker: dict[str, Any] = field(default_factory=dict)
    load_1m: float = 0.0


def setup(work: Path, phases: int, settings: dict[str, Any]) -> tuple[Cluster, NodeProcess, list[tuple[str, Ed25519PrivateKey]], dict]:
    """Chain, contracts, one node; a fresh honest camera per phase (its seqs start at 0, and a
    camera re-sending seqs the node holds would be acknowledged without work) and the attackers'
    cameras, all whitelisted before the node starts."""
    cluster = Cluster(work, settings=settings, deployment_plan=ONE_NODE_PLAN)  # the node under attack is the whole quorum
    cluster.start_chain()
    honest = [(HONEST_NET + str(i + 1), cluster.register_camera(HONEST_NET + str(i + 1), 1, b"honest"))
              for i in range(phases)]
    hostile = {ip: cluster.register_camera(ip, 1, b"hostile") for ip in ("10.0.9.1", "10.0.9.2")}
    cluster.seal_genesis()
    cluster.configure_nodes()
    cluster.start_nodes()
    return cluster, cluster.nodes[0], honest, hostile


def node_named_headers(cluster: Cluster) -> dict[str, str]:
    """Peer headers that name the node (its address is public) with a well-formed signature by a
    key of nobody: the gate can check the signature only once it has the body."""
    path, nonce, t = "/peer/v1/repair", new_nonce(), now_ms()
    text = pa.request_text(pa.ChainBinding(cluster.w3.eth.chain_id, cluster.deployment.consortium), "POST", path,
                           pa.body_digest(b"not the body"), t, nonce)
    node_address = Account.from_key(cluster.keys[ONE_NODE_PLAN["nodes"][0]["account"]]).address
    return pa.sign_headers(Account.create().key, node_address, text, t, nonce).as_dict()


def attack_params(cluster: Cluster, node: NodeProcess, kind: str, hostile: dict) -> dict[str, Any]:
    """What each attacker needs; each uses loopback addresses of its own (127.0.1.x ...), so the
    node's per-address caps fall on the attacker, never on the honest camera (127.0.0.1)."""
    base = {"addr": node.ingest, "api": (node.config.api_host, node.config.api_port)}

    def cam(ip: str) -> dict[str, Any]:
        return {"ip": ip, "key": hostile[ip].private_bytes_raw()}

    srcs = {attack: [f"127.0.{n}.{i}" for i in range(1, 6)] for n, attack in enumerate(ATTACKS, start=1)}
    extra: dict[str, dict[str, Any]] = {
        "garbage-proven": cam("10.0.9.1"), "garbage-anon": {"ip": "10.0.9.1", "connections": 16},
        "unfinished": cam("10.0.9.2"), "half-open": {},
        "http-large": {"named_headers": node_named_headers(cluster)}, "http-small": {"connections": 64}}
    return {**base, "src": srcs[kind], **extra[kind]}


def run_phase(cluster: Cluster, node: NodeProcess, name: str, kind: str | None, camera: tuple[str, Ed25519PrivateKey],
              hostile: dict, args: argparse.Namespace) -> PhaseResult:
    pid = node.process.pid
    counters0, alarms0, rss0 = node_counters(cluster, node), alarm_counts(node), rss_mib([pid])
    sampler, status = RssSampler(pid), StatusSampler(node.config.api_url)
    sampler.start()
    status.start()
    attacker = Attacker(kind, attack_params(cluster, node, kind, hostile), args.attacker_nice) if kind else None
    report: dict[str, Any] = {}
    try:
        if attacker:
            attacker.start()
            time.sleep(args.warmup)  # let the flood build up before the honest camera connects
        cpu0 = node_cpu_s(pid)
        honest = run_honest(node, *camera, args.seconds, args.stall_timeout)
        cpu = round(node_cpu_s(pid) - cpu0, 2)
    finally:
        if attacker:
            report = attacker.stop()
        peak, api = sampler.stop(), status.stop()
    time.sleep(0.6)  # counters and alarm counts reach SQLite with the node's next flush (every 0.5 s)
    # the honest cameras' own counters (frames, anchors of earlier phases' windows) are not the attack's
    did = {k: v for k, v in delta(node_counters(cluster, node), counters0).items() if not k.startswith(HONEST_NET)}
    alarms = alarm_counts(node)
    return PhaseResult(name, kind, honest, round(rss0, 1), round(peak, 1), round(rss_mib([pid]), 1), cpu, did,
                       delta(alarms, alarms0), len(set(alarms) - set(alarms0)), api, report,
                       round(os.getloadavg()[0], 2))


def node_settings(args: argparse.Namespace) -> dict[str, Any]:
    """SETTINGS plus the ingest layout asked for (0: the single-process node, the config's default;
    -1: an ingest process per core, docs/TRANSPORT.md's setting for a node of 100+ cameras)."""
    return {**SETTINGS, "ingest_processes": args.ingest_processes}


def run(args: argparse.Namespace, phases: list[tuple[str, str | None]]) -> list[PhaseResult]:
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        cluster, node, honest, hostile = setup(Path(tmp), len(phases), node_settings(args))
        try:
            results = []
            for (name, kind), camera in zip(phases, honest):
                print(f"  phase: {name} ...", flush=True)
                results.append(run_phase(cluster, node, name, kind, camera, hostile, args))
            return results
        except BaseException:
            print(f"node log tail ({node.log_path}):\n" + "\n".join(node.log_path.read_text().splitlines()[-30:]),
                  file=sys.stderr)
            raise
        finally:
            cluster.stop()


# ----------------------------------------------------------------------- report
NODE_DID = [("refused_connections", "refused"), ("evicted_handshakes", "evicted"), ("closed_timeout", "timed out"),
            ("rejected_wire", "wire errors"), ("closed_invalid", "closed invalid")]


def node_summary(r: PhaseResult) -> str:
    parts = []
    for key, label in NODE_DID:
        n = sum(v for k, v in r.node_did.items() if k == key or k.endswith(":" + key))
        if n:
            parts.append(f"{label} {n:,}")
    if r.alarm_counts:
        parts.append(f"alarm count +{sum(r.alarm_counts.values()):,} in {r.alarm_rows} new rows")
    if r.api.get("answered"):
        parts.append(f"<= {r.api['max_open_connections']} open ({r.api['max_in_handshake']} in handshake)")
    return ", ".join(parts) or "-"


def attacker_summary(r: PhaseResult) -> str:
    rep = r.attacker
    if r.attack == "half-open":
        return f"up to {rep.get('connections_held_max', 0):,} connected and not yet seen closed"
    if r.attack in ("http-large", "http-small"):
        return ", ".join(f"{k} x{v:,}" for k, v in sorted(rep.items()) if "->" in k) or "-"
    parts = [f"{rep[k]:,} {label}" for k, label in (("connections", "conns"), ("packets_written", "pkts written"),
                                                      ("rounds", "rounds"), ("still_open_after_round", "left open"),
                                                      ("connect_failed", "refused at connect")) if rep.get(k)]
    if rep.get("bytes_written"):
        parts.append(f"{rep['bytes_written'] / MIB:,.0f} MiB")
    parts += [f"{k} x{v}" for k, v in rep.items() if k.startswith(("node_reject", "error"))]
    return ", ".join(parts) or "-"


def tables(results: list[PhaseResult], seconds: float) -> str:
    base = results[0].honest.fps or 1.0
    rows = [[r.name, f"{r.honest.fps:,.0f}", f"{r.honest.fps / base:.2f}x", f"{r.honest.acked:,}/{r.honest.sent:,}",
             r.honest.dropped, f"{r.rss_start_mib:.0f}", f"{r.rss_peak_mib:.0f}", f"{r.rss_end_mib:.0f}",
             f"{r.node_cpu_s:.1f}", f"{r.api.get('answered', 0)}/{r.api.get('polls', 0)}", f"{r.load_1m:.1f}"]
            for r in results]
    main = render_table(["phase", "honest fr/s", "vs baseline", "acked/sent", "unsent", "RSS start", "RSS peak",
                         "RSS end", "node CPU s", "status ok", "load 1m"], rows,
                        title=f"Honest camera at one node process under floods ({seconds:g} s per phase, same run; "
                              "RSS in MiB)")
    sides = render_table(["phase", "the node did", "the attacker saw"],
                         [[r.name, node_summary(r), attacker_summary(r)] for r in results if r.attack],
                         title="What each attack met")
    return main + "\n\n" + sides


def write(out: Path, args: argparse.Namespace, results: list[PhaseResult], load_before: tuple) -> None:
    base = results[0].honest.fps or 1.0
    phases = [{**asdict(r), "honest_fps": round(r.honest.fps, 1), "vs_baseline": round(r.honest.fps / base, 3),
               "all_acked": r.honest.all_acked} for r in results]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        # The machine is shared: load average (1, 5, 15 min) before and after the run.
        "load_avg": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "seconds_per_phase": args.seconds, "warmup_s": args.warmup, "attacker_nice": args.attacker_nice,
        "node": {"consortium": "one node, quorum 1", "settings": node_settings(args), "window_ms": WINDOW_MS,
                 "honest_camera": "CameraAgent, sample bikes, unpaced, fresh camera per phase",
                 "rss": "VmRSS of the node's main process", "cpu": "main process + verify workers"},
        "all_acked": all(r.honest.all_acked for r in results), "phases": phases}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench flood")
    parser.add_argument("--seconds", type=float, default=5.0, help="honest streaming time of each phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of attack before the honest camera starts")
    parser.add_argument("--only", default="", help=f"comma-separated attacks (default all: {','.join(ATTACKS)})")
    parser.add_argument("--stall-timeout", type=float, default=1.0,
                        help="the honest agent drops a frame when its writer made no progress this long (default 1 s)")
    parser.add_argument("--attacker-nice", type=int, default=0, help="niceness of the attacker processes")
    parser.add_argument("--ingest-processes", type=int, default=0,
                        help="the node's ingest_processes (default 0, the config's default; -1: one per core)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv or [])
    only = [a for a in args.only.split(",") if a]
    unknown = set(only) - set(ATTACKS)
    if unknown:
        parser.error(f"unknown attack(s) {', '.join(sorted(unknown))}; known: {', '.join(ATTACKS)}")
    phases = [(n, k) for n, k in PHASES if k is None or not only or k in only]
    load_before = os.getloadavg()
    results = run(args, phases)
    print(tables(results, args.seconds))
    write(args.out, args, results, load_before)
    for r in results:
        if r.honest.dropped:
            print(f"note: in '{r.name}' the honest camera dropped {r.honest.dropped} frame(s) unsent: its writer "
                  f"could hand the node's socket nothing for {args.stall_timeout:g} s (the agent's stall rule, "
                  "--stall-timeout)")
    failed = [r.name for r in results if not r.honest.all_acked]
    if failed:
        print(f"FAIL: honest frames not all acknowledged in: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"every honest frame acknowledged in every phase; load average {os.getloadavg()[0]:.2f} "
          f"(before {load_before[0]:.2f}); results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
