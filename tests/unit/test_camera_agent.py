"""Camera agent against real TCP nodes on 127.0.0.1: every packet verifies, faults land exactly as
specified and repeat per seed, reconnects, isolation between nodes, keystore, URL source."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from offchain.camera import keystore as ks
from offchain.camera.agent import CameraAgent, parse_node, stats_table
from offchain.camera.faults import FaultInjector, FaultSpec, FaultSpecError
from offchain.camera.mjpeg import Outage
from offchain.camera.samples import synthetic_clip
from offchain.camera.sources import EncodedFrame, FileSource
from offchain.camera.url_source import UrlSource, is_url
from offchain.core import wire
from offchain.core.acks import SeqRanges
from offchain.core.packet import PacketError, decode_packet, verify_signature
from offchain.core.wire import MessageReader, is_control

CAMERA = "10.0.0.7"
EPOCH = 1_700_000_000_000
FAST = dict(initial_connect_timeout=0.3, connect_timeout=0.3, backoff=(0.02, 0.1), end_timeout=0.5)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """50 frames, 25 fps, 2 s, GOP 1 s."""
    return synthetic_clip(tmp_path_factory.mktemp("clip") / "cam.mp4", seconds=2, fps=25, width=160, height=120,
                          gop=25)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


class Node:
    """A minimal ingest endpoint speaking the node's side of the protocol: a challenge, then
    MessageReader + decode_packet + signature check, recording what arrived per connection, and
    (``ack=True``) a cumulative acknowledgement of every verified frame after each chunk read.
    Control messages are recorded without their nonce and time when their signature verifies
    and the nonce is this connection's (else as ``"bad-control"``)."""

    def __init__(self, public_key: bytes, read: bool | str = True, ack: bool | str = True,
                 reject: str | None = None) -> None:
        # ack="hello": accepts the hello (one acknowledgement), then acknowledges nothing
        # read=False: accepts and never reads; read="hello": accepts the hello, then stops reading
        self.public_key = public_key
        self.read = read
        self.ack = ack
        self.reject = reject
        self.held = SeqRanges(0)
        self.packets: list = []
        self.conns: list[list[tuple[str, object]]] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopped = asyncio.Event()

    async def start(self, port: int = 0) -> Node:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        self._stopped.set()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        events: list[tuple[str, object]] = []
        self.conns.append(events)
        self._writers.add(w)
        reader = MessageReader()
        nonce = os.urandom(8).hex()
        try:
            w.write(wire.frame_message(wire.challenge_message(nonce, "fake")))
            if not self.read:
                await self._stopped.wait()
                return
            if self.reject:
                await r.read(65536)
                w.write(wire.frame_message(wire.reject_message(wire.RejectReason(self.reject), "no")))
                await w.drain()
                return
            while chunk := await r.read(65536):
                for body in reader.feed(chunk):
                    events.append(self._classify(body, nonce))
                if self.ack is True or (self.ack == "hello" and len(events) == 1):
                    w.write(wire.frame_message(wire.ack_message(CAMERA, self.held.upto, self.held.head(64))))
                if self.read == "hello":
                    await self._stopped.wait()
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(w)
            w.close()

    def _classify(self, body: bytes, nonce: str) -> tuple[str, object]:
        if is_control(body):
            msg = wire.parse_signed_control(body) if wire.is_signed_control(body) else None
            # an outage declaration carries no nonce: the same bytes for every node (issue 10)
            if msg is None or not msg.verify(self.public_key) or (msg.nonce != nonce and msg.type != "outage"):
                return "bad-control", None
            return msg.type, {k: v for k, v in msg.message.items() if k not in ("nonce", "ts")}
        try:
            packet = decode_packet(body)
            verify_signature(packet, self.public_key)
            self.held.add(packet.seq)
            self.packets.append(packet)
            return "frame", packet.seq
        except PacketError as exc:
            return type(exc).__name__, None

    @property
    def events(self) -> list[tuple[str, object]]:
        return [e for conn in self.conns for e in conn]

    @property
    def seqs(self) -> list[int]:
        return [v for k, v in self.events if k == "frame"]

    async def wait_end(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(k == "end" for k, _ in self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"no end message; got {self.events[-5:]}")
            await asyncio.sleep(0.01)


def pub(key: Ed25519PrivateKey) -> bytes:
    return ks.public_key_bytes(key)


async def _run(agent: CameraAgent, nodes: list[Node]):
    stats = await agent.run()
    for n in nodes:
        if n.read is True:
            await n.wait_end()
    return stats


def _stream(clip: Path, key, spec, seed=0, nodes=("a", "b")):
    """Run one agent at full speed to fresh nodes; return (stats, {name: events})."""

    async def main():
        servers = {name: await Node(pub(key)).start() for name in nodes}
        agent = CameraAgent(CAMERA, key, FileSource(clip, start_ms=EPOCH), {n: s.addr for n, s in servers.items()},
                            speed=0, faults=spec, seed=seed, **FAST)
        stats = await _run(agent, list(servers.values()))
        for s in servers.values():
            await s.stop()
        return stats, {n: s.events for n, s in servers.items()}

    return asyncio.run(main())


# -- delivery --------------------------------------------------------------------------------

def test_every_node_gets_hello_every_frame_verified_and_end(clip, key):
    stats, events = _stream(clip, key, None, nodes=("bank", "customer", "regulator"))
    codec = FileSource(clip).codec.to_dict()
    for name, ev in events.items():
        assert ev[0] == ("hello", {"type": "hello", "camera": CAMERA, "codec": codec})
        assert [v for k, v in ev[1:-1]] == list(range(50)) and {k for k, _ in ev[1:-1]} == {"frame"}
        assert ev[-1] == ("end", {"type": "end", "camera": CAMERA, "lastSeq": 49})
        s = stats[name]
        assert (s.frames, s.sent, s.dropped, s.connects, s.end_sent) == (50, 50, 0, 1, True)
    assert "regulator" in stats_table(stats)


def test_packets_carry_capture_time_and_keyframes(clip, key):
    frames = list(FileSource(clip, start_ms=EPOCH))

    async def main():
        node = await Node(pub(key)).start()
        agent = CameraAgent(CAMERA, key, FileSource(clip, start_ms=EPOCH), {"n": node.addr}, speed=0, **FAST)
        await _run(agent, [node])
        await node.stop()
        return node.packets

    got = asyncio.run(main())
    assert [(p.seq, p.timestamp_ms, p.keyframe, p.payload) for p in got] == \
        [(f.seq, f.timestamp_ms, f.keyframe, f.data) for f in frames]
    assert got[0].timestamp_ms == EPOCH and got[25].keyframe


def test_pacing_follows_capture_time_divided_by_speed(clip, key):
    async def main():
        node = await Node(pub(key)).start()
        agent = CameraAgent(CAMERA, key, FileSource(clip, start_ms=EPOCH), {"n": node.addr}, speed=4, **FAST)
        t = time.monotonic()
        await agent.run()
        elapsed = time.monotonic() - t
        await node.wait_end()
        await node.stop()
        return elapsed, node.seqs

    elapsed, seqs = asyncio.run(main())
    # 49 frame intervals of 40 ms = 1.96 s of capture time, at 4x ≈ 0.49 s.
    assert 0.45 <= elapsed < 1.5
    assert seqs == list(range(50))


# -- faults ----------------------------------------------------------------------------------

def test_each_fault_lands_exactly_where_specified(clip, key):
    spec = ("a:drop=seq:3-5,corrupt=seq:7,truncate=seq:8,duplicate=seq:9,reorder=seq:10@2,delay=seq:12@150;"
            "b:cut=400-480")
    stats, events = _stream(clip, key, spec)
    a = events["a"]
    assert a[0][0] == "hello" and a[-1][0] == "end"
    body = [v if k == "frame" else k for k, v in a[1:-1]]
    # seq 10 held back 2 positions (11, then 12 which left late); 12 overtaken by what followed it.
    assert [v for v in body if v != 12] == ([0, 1, 2, 6, "DigestMismatch", "LengthMismatch", 9, 9, 11, 10]
                                            + list(range(13, 50)))
    assert body.count(12) == 1 and body.index(12) > body.index(13)
    b = [v for k, v in events["b"] if k == "frame"]
    assert b == [s for s in range(50) if s not in (10, 11)]  # t = 400, 440 ms
    sa, sb = stats["a"], stats["b"]
    assert (sa.dropped_by_fault, sa.corrupted, sa.truncated, sa.duplicated, sa.reordered, sa.delayed) == \
        (3, 1, 1, 1, 1, 1)
    assert sa.sent == 50 - 3 + 1 and sb.dropped_cut == 2 and sb.sent == 48 and sb.dropped_by_fault == 0


def test_cut_on_every_node_and_time_spans_in_seconds(clip, key):
    stats, events = _stream(clip, key, "*:cut=1s-1.2s", nodes=("a", "b", "c"))
    for name in "abc":
        assert [v for k, v in events[name] if k == "frame"] == [s for s in range(50) if not 25 <= s < 30]
        assert stats[name].dropped_cut == 5
        assert events[name][-1] == ("end", {"type": "end", "camera": CAMERA, "lastSeq": 49})


def test_random_faults_repeat_per_seed_and_match_the_pure_decisions(clip, key):
    spec = "a:drop=0.2,corrupt=0.1,duplicate=0.1;b:truncate=0.15"
    stats1, ev1 = _stream(clip, key, spec, seed=42)
    stats2, ev2 = _stream(clip, key, spec, seed=42)
    stats3, ev3 = _stream(clip, key, spec, seed=43)
    def counts(stats):
        return {n: {k: v for k, v in s.as_dict().items() if k != "address"} for n, s in stats.items()}

    assert ev1 == ev2 and counts(stats1) == counts(stats2)
    assert ev1 != ev3
    inj = FaultInjector(spec, seed=42)
    decisions = [inj.decide("a", seq, seq * 40) for seq in range(50)]
    dropped = {s for s, d in enumerate(decisions) if d.drop}
    corrupt = {s for s, d in enumerate(decisions) if d.corrupt}
    dup = {s for s, d in enumerate(decisions) if d.duplicate}
    assert dropped and corrupt and dup  # the seed exercises every fault
    frames = Counter(v for k, v in ev1["a"] if k == "frame")
    assert set(frames) == set(range(50)) - dropped - corrupt
    assert {s for s, c in frames.items() if c == 2} == dup - corrupt
    assert sum(1 for k, _ in ev1["a"] if k == "DigestMismatch") == sum(1 + (s in dup) for s in corrupt)
    assert stats1["a"].dropped_by_fault == len(dropped) and stats1["a"].corrupted == len(corrupt)
    truncated = sum(1 for k, _ in ev1["b"] if k == "LengthMismatch")
    assert truncated == stats1["b"].truncated == sum(inj.decide("b", s, s * 40).truncate for s in range(50)) > 0


def test_fault_spec_forms_and_errors():
    text = "node-bank:drop=0.05;node-customer:corrupt=0.02;*:cut=30000-35000"
    spec = FaultSpec.parse(text)
    assert str(spec) == text
    assert spec == FaultSpec.from_dict({"node-bank": {"drop": 0.05}, "node-customer": {"corrupt": 0.02},
                                        "*": {"cut": [[30000, 35000]]}})
    assert FaultSpec.parse(str(spec)) == spec == FaultSpec.from_dict(spec.to_dict())
    assert FaultSpec.parse('{"n": {"reorder": {"p": 0.1, "k": 5}}}') == FaultSpec.parse("n:reorder=0.1@5")
    assert FaultSpec.parse("n:delay=t:1s-2s@300").rules["n"][0].t == ((1000, 2000),)
    assert FaultSpec.parse("n:drop=seq:4").rules["n"][0].seq == ((4, 4),)
    rules = FaultSpec.parse("*:drop=0.5;x:drop=seq:1-2").for_node("x")
    assert [r.p for r in rules] == [0.5, 0.0]
    for bad in ("n:explode=0.1", "n:drop=1.5", "n:drop=0.1@3", "n:cut=0.2", "n:reorder=0.1@0",
                "nocolon", "n:drop", "n:drop=10-5", "n:delay=abc"):
        with pytest.raises(FaultSpecError):
            FaultSpec.parse(bad)
    with pytest.raises(FaultSpecError, match="unknown node"):
        CameraAgent(CAMERA, Ed25519PrivateKey.generate(), [], {"a": ("127.0.0.1", 1)}, faults="typo:drop=0.1")


def test_injector_is_independent_of_call_order():
    spec = "a:drop=0.3;b:drop=0.3"
    one, two = FaultInjector(spec, seed=5), FaultInjector(spec, seed=5)
    only_a = [one.decide("a", s, 0).drop for s in range(200)]
    for s in range(200):  # interleaving another node's decisions changes nothing for "a"
        two.decide("b", s, 0)
    assert [two.decide("a", s, 0).drop for s in reversed(range(200))][::-1] == only_a
    assert 30 < sum(only_a) < 90


# -- connections -----------------------------------------------------------------------------

def test_reconnects_after_node_restart_resends_hello_and_unacknowledged_frames(clip, key):
    async def main():
        node = await Node(pub(key)).start()
        port = node.port
        source = FileSource(clip, start_ms=EPOCH, loop=True)
        agent = CameraAgent(CAMERA, key, source, {"n": node.addr}, speed=5, max_duration_ms=6000, **FAST)
        task = asyncio.ensure_future(agent.run())
        while not node.seqs or node.seqs[-1] < 20:
            await asyncio.sleep(0.005)
        await node.stop()                       # node process "dies"...
        await asyncio.sleep(0.25)
        restarted = await Node(pub(key)).start(port)  # ...and comes back on the same address
        stats = await task
        await restarted.wait_end()
        await restarted.stop()
        return node, restarted, stats, agent

    before, after, stats, agent = asyncio.run(main())
    s = stats["n"]
    assert agent.frames_produced == 150 and agent.last_seq == 149
    assert s.connects == 2 and s.disconnects == 1 and s.end_sent
    assert s.dropped_unreachable > 0
    assert before.conns[0][0][0] == "hello" and after.conns[0][0][0] == "hello"
    assert after.events[-1] == ("end", {"type": "end", "camera": CAMERA, "lastSeq": 149})
    # Frames produced while the node was down, or written but not yet acknowledged when it died,
    # stayed in the camera's buffer and were sent again on the new connection: nothing is lost.
    assert set(before.seqs) | set(after.seqs) == set(range(150))
    assert s.retransmitted > 0 and after.seqs[0] <= before.seqs[-1] + 1
    assert (s.acked, s.unacked, s.rejected, s.dropped_unacked) == (150, 0, 0, 0)
    assert all(k in ("hello", "frame", "end") for k, _ in before.events + after.events)


class _LiveSource:
    """A live source as `UrlSource` / `MjpegSource` behave: lost after frame 19, back 3 s later,
    numbering going on; the outage is recorded in ``outages`` and closed when frame 20 is yielded."""

    def __init__(self) -> None:
        self.outages: list[Outage] = []

    def frames(self):
        for i in range(40):
            ts = EPOCH + 100 * i + (3_000 if i >= 20 else 0)
            if i == 20:
                self.outages[-1] = Outage(19, self.outages[-1].from_ms, ts, "the stream broke")
            yield EncodedFrame(i, ts, i % 10 == 0, b"frame %d" % i, 100)
            if i == 19:
                self.outages.append(Outage(19, ts, None, "the stream broke"))


def test_a_closed_outage_is_declared_signed_to_every_node_before_the_frame_after_it(key):
    async def main():
        nodes = {n: await Node(pub(key)).start() for n in ("a", "b")}
        agent = CameraAgent(CAMERA, key, _LiveSource(), {n: s.addr for n, s in nodes.items()}, speed=0, **FAST)
        await _run(agent, list(nodes.values()))
        for s in nodes.values():
            await s.stop()
        return agent, {n: s.events for n, s in nodes.items()}

    agent, events = asyncio.run(main())
    declared = {"afterSeq": 19, "fromMs": EPOCH + 1_900, "toMs": EPOCH + 5_000, "reason": "the stream broke"}
    assert agent.declared == [declared]
    for ev in events.values():
        kinds = [k for k, _ in ev]
        assert kinds.count("outage") == 1 and "bad-control" not in kinds, kinds
        i = kinds.index("outage")
        assert ev[i] == ("outage", {"type": "outage", "camera": CAMERA, **declared})  # signed by the device key
        assert ev[i - 1] == ("frame", 19) and ev[i + 1] == ("frame", 20)


def big_frames(n: int, size: int) -> list[EncodedFrame]:
    return [EncodedFrame(i, EPOCH + 40 * i, i % 25 == 0, os.urandom(size), 40) for i in range(n)]


@pytest.mark.parametrize("speed,size", [(0, 256 * 1024), (20, 64 * 1024)], ids=["unpaced", "paced"])
def test_dead_or_stuck_node_never_holds_back_the_others(key, speed, size):
    async def main():
        good = await Node(pub(key)).start()
        stuck = await Node(pub(key), read="hello").start()  # accepts the hello, then never reads
        dead_port = (await Node(pub(key)).start())
        port = dead_port.port
        await dead_port.stop()                             # nothing listens there any more
        frames = big_frames(120, size)                     # far beyond the socket buffers
        agent = CameraAgent(CAMERA, key, frames, {"good": good.addr, "stuck": stuck.addr, "dead": ("127.0.0.1", port)},
                            speed=speed, queue_size=4, stall_timeout=0.3, **FAST)
        t = time.monotonic()
        stats = await agent.run()
        elapsed = time.monotonic() - t
        await good.wait_end()
        await good.stop()
        await stuck.stop()
        return stats, good, elapsed

    stats, good, elapsed = asyncio.run(main())
    assert good.seqs == list(range(120)) and stats["good"].sent == 120 and stats["good"].end_sent
    assert good.events[0] == ("hello", {"type": "hello", "camera": CAMERA, "codec": None})
    assert stats["dead"].dropped_unreachable == 120 and stats["dead"].sent == 0 and not stats["dead"].end_sent
    st = stats["stuck"]
    assert st.dropped_queue_full > 0 and st.sent + st.dropped_queue_full + st.dropped_unreachable == 120
    assert elapsed < 6  # a stuck or dead node costs at most one stall_timeout, not one per frame


def test_stop_ends_the_stream_with_end_message(clip, key):
    async def main():
        node = await Node(pub(key)).start()
        agent = CameraAgent(CAMERA, key, FileSource(clip, start_ms=EPOCH, loop=True), {"n": node.addr},
                            speed=10, **FAST)
        task = asyncio.ensure_future(agent.run())
        while len(node.seqs) < 10:
            await asyncio.sleep(0.005)
        agent.stop()
        await task
        await node.wait_end()
        await node.stop()
        return node, agent

    node, agent = asyncio.run(main())
    assert node.events[-1][1]["lastSeq"] == agent.last_seq == node.seqs[-1]
    assert node.seqs == list(range(agent.frames_produced))


def test_a_node_that_refuses_the_camera_gets_no_frames_and_every_frame_counts_rejected(clip, key):
    async def main():
        node = await Node(pub(key), reject="not-registered").start()
        agent = CameraAgent(CAMERA, key, FileSource(clip, start_ms=EPOCH), {"n": node.addr}, speed=0, **FAST)
        stats = await agent.run()
        await node.stop()
        return stats["n"], node

    s, node = asyncio.run(main())
    assert node.seqs == [] and s.sent == 0 and s.connects == 0 and s.connects_refused >= 1
    assert (s.frames, s.acked, s.unacked, s.rejected, s.rejected_reason) == (50, 0, 0, 50, "not-registered")
    assert "not-registered" in stats_table({"n": s})


def test_unacknowledged_frames_are_kept_in_a_bounded_buffer(clip, key):
    async def main():
        silent = await Node(pub(key), ack="hello").start()  # takes the hello, acknowledges no frame
        good = await Node(pub(key)).start()
        agent = CameraAgent(CAMERA, key, FileSource(clip, start_ms=EPOCH), {"silent": silent.addr, "good": good.addr},
                            speed=0, unacked_frames=10, **FAST)
        stats = await agent.run()
        await silent.stop()
        await good.stop()
        return stats, silent

    stats, silent = asyncio.run(main())
    s = stats["silent"]
    assert silent.seqs == list(range(50))  # it got everything, but never said so
    assert (s.acked, s.unacked, s.dropped_unacked) == (0, 50, 40)  # only the newest 10 could still be resent
    assert s.unacked_seqs == "0-49" and stats["good"].unacked_seqs == ""
    assert (stats["good"].acked, stats["good"].unacked, stats["good"].dropped_unacked) == (50, 0, 0)


def test_parse_node():
    assert parse_node("bank=127.0.0.1:7001") == ("bank", ("127.0.0.1", 7001))
    assert parse_node("v6=[::1]:7001") == ("v6", ("::1", 7001))
    for bad in ("bank", "bank=127.0.0.1", "=h:1", "b=h:x"):
        with pytest.raises(ValueError):
            parse_node(bad)


# -- keystore --------------------------------------------------------------------------------

def test_keystore_round_trip_rotation_and_wrong_passphrase(tmp_path, monkeypatch):
    store = tmp_path / "keys"
    key = ks.create_key(store, CAMERA, "correct horse")
    path = store / f"{CAMERA}.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(store.stat().st_mode) == 0o700
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    loaded = ks.load_key(store, CAMERA, "correct horse")
    assert ks.public_key_bytes(loaded) == ks.public_key_bytes(key) and len(ks.public_key_bytes(key)) == 32
    with pytest.raises(ks.WrongPassphrase, match="wrong keystore passphrase"):
        ks.load_key(store, CAMERA, "battery staple")
    monkeypatch.delenv(ks.PASSPHRASE_ENV, raising=False)
    with pytest.raises(ks.NoPassphrase):
        ks.load_key(store, CAMERA)
    monkeypatch.setenv(ks.PASSPHRASE_ENV, "correct horse")
    assert ks.public_key_bytes(ks.load_key(store, CAMERA)) == ks.public_key_bytes(key)
    with pytest.raises(ks.KeyExists):
        ks.create_key(store, CAMERA)
    with pytest.raises(ks.WrongPassphrase):
        ks.rotate_key(store, CAMERA, "nope")
    assert ks.archived_keys(store, CAMERA) == []
    new = ks.rotate_key(store, CAMERA)
    newer = ks.rotate_key(store, CAMERA)
    assert [p.name for p in ks.archived_keys(store, CAMERA)] == [f"{CAMERA}.key.1", f"{CAMERA}.key.2"]
    assert ks.public_key_bytes(ks.load_archived(store, CAMERA, 1)) == ks.public_key_bytes(key)
    assert ks.public_key_bytes(ks.load_archived(store, CAMERA, 2)) == ks.public_key_bytes(new)
    assert ks.public_key_bytes(ks.load_key(store, CAMERA)) == ks.public_key_bytes(newer)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in store.iterdir())
    assert ks.list_cameras(store) == [CAMERA]
    with pytest.raises(ks.KeyNotFound):
        ks.load_key(store, "10.9.9.9")
    for bad in ("../etc/passwd", "a/b", "..", ""):
        with pytest.raises(ks.KeystoreError):
            ks.key_path(store, bad)


def test_keystore_key_signs_what_nodes_verify(tmp_path, clip):
    key = ks.create_key(tmp_path, CAMERA, "pw")
    loaded = ks.load_key(tmp_path, CAMERA, "pw")
    assert ks.public_key_bytes(loaded) == ks.public_key_bytes(key)
    stats, events = _stream(clip, loaded, None, nodes=("n",))
    assert [v for k, v in events["n"] if k == "frame"] == list(range(50))


# -- URL source ------------------------------------------------------------------------------

class _RangeHandler(BaseHTTPRequestHandler):
    """Serves one file with byte ranges, as a camera's web server or a CDN would."""

    data = b""

    def do_GET(self) -> None:  # noqa: N802
        total = len(self.data)
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start, end = int(a), min(int(b) if b else total - 1, total - 1)
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
            body = self.data[start : end + 1]
        else:
            self.send_response(200)
            body = self.data
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_clip(clip, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # FFmpeg honours these: keep the test on loopback
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    handler = type("H", (_RangeHandler,), {"data": clip.read_bytes()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cam.mp4"
    finally:
        server.shutdown()
        server.server_close()


def test_url_source_over_local_http_matches_the_file(clip, http_clip):
    assert is_url(http_clip) and is_url("rtsp://cam/stream") and not is_url(str(clip))
    src = UrlSource(http_clip, start_ms=EPOCH)
    assert src.codec == FileSource(clip).codec
    via_url = [(f.seq, f.timestamp_ms, f.keyframe, f.data, f.dts_ms) for f in src]
    via_file = [(f.seq, f.timestamp_ms, f.keyframe, f.data, f.dts_ms) for f in FileSource(clip, start_ms=EPOCH)]
    assert via_url == via_file and len(via_url) == 50
    looped = UrlSource(http_clip, start_ms=EPOCH, loop=True, rebase=True)
    first = [f for _, f in zip(range(60), looped)]
    assert [f.seq for f in first] == list(range(60)) and first[0].timestamp_ms == EPOCH
    assert first[50].timestamp_ms == EPOCH + 2000  # the timeline continues across repetitions


def test_agent_streams_from_an_http_url(key, http_clip, clip):
    async def main():
        node = await Node(pub(key)).start()
        agent = CameraAgent(CAMERA, key, UrlSource(http_clip, start_ms=EPOCH), {"n": node.addr}, speed=0, **FAST)
        stats = await agent.run()
        await node.wait_end()
        await node.stop()
        return stats, node

    stats, node = asyncio.run(main())
    assert node.events[0][1]["codec"] == FileSource(clip).codec.to_dict()
    assert node.seqs == list(range(50)) and stats["n"].sent == 50


def test_url_source_errors():
    from offchain.camera.sources import SourceError

    with pytest.raises(SourceError, match="scheme"):
        UrlSource("ftp://127.0.0.1/x.mp4")
    with pytest.raises(SourceError, match="cannot open"):
        list(UrlSource("http://127.0.0.1:1/none.mp4", timeout=2))
