"""Ingest throughput of ONE real `frameledger node` process over TCP (issue 9).

    python -m bench ingest                               # N = 50, 100, 200, 400; a few minutes
    python -m bench ingest -- --cameras 200 --seconds 20
    python -m bench ingest -- --memory-minutes 10        # also: 200 cameras paced for 10 minutes, RSS over time

What runs: Anvil, the contracts, N whitelisted cameras, and one node (the first of the plan; by
default with one ingest process per core behind it, `ingest_processes = -1`, as docs/TRANSPORT.md
sets a node of 200 cameras; `--ingest-processes 0` measures the single-process node; its peers are
configured but not started, the producer's window is one hour so no block is sealed during a run:
what is measured is ingest, end to end: TCP, handshake, whitelist, length, SHA-256, the device's
Ed25519 signature, the content store (LocalStore, fsync on) and the SQLite row, and the
acknowledgement sent back only after both are durable).

Load: real H.264 packets, 1280x720 25 fps (the `bikes` recording scaled to 720p and encoded with
libx264 at 2 Mbit/s, GOP 50, cached beside the samples), the last 8 bytes of each packet replaced
by (camera, seq) so no two frames share a digest (the store deduplicates equal bytes). Every frame
is signed by its camera's device key. Headers are pre-signed by a pool of processes before the
clock starts; sender processes (one per 100 cameras, at most 2) only write bytes; their CPU is
reported (`generator`).

Phases per N:
  paced     every camera at 25 fps for --seconds: does the node keep up (acked/offered), CPU µs per
            frame of the node (main process + its ingest processes or verify workers), lag of the
            last ack;
  saturate  every camera as fast as the node takes it (TCP backpressure) for --seconds: sustained
            frames/s = frames acknowledged / time.
Reference (same run, same frames): one process, a tight loop of SHA-256 + Ed25519 verify +
append-write (one file, fdatasync every 256 frames), through the node's own Ed25519 check
(libsodium). Ratio = node frames/s / reference.

The 10-minute memory run is NOT part of the default (the default stays at a few minutes, the memory
run alone takes 10): pass --memory-minutes 10. Results: bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import selectors
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat  # noqa: E402

from bench.procstat import cpu_by_pid, cpu_seconds, process_tree, rss_mib  # noqa: E402
from offchain.core import ed25519  # noqa: E402
from offchain.core import packet as pk  # noqa: E402
from offchain.core import wire  # noqa: E402

RESULTS = REPO / "bench" / "results" / "ingest.json"
FPS = 25
STEP_MS = 1000 // FPS
CAMS_PER_SENDER = 100
WINDOW = 100  # frames a camera sends ahead of the node's acknowledgement (4 s at 25 fps)
TAIL_IDLE_S = 20.0  # after sending, wait for acknowledgements until none came for this long


# ============================================================================================ clip
def recording_720p() -> Path:
    """10 s of real footage as 720p 25 fps H.264 at 2 Mbit/s, GOP 50: the ``bikes`` sample scaled
    and encoded once, cached beside the samples (also bench/extract_bench.py's ``--sample 720p``)."""
    import av

    from offchain.camera.samples import cache_dir, sample_path

    out = cache_dir() / "bikes-720p25-h264-2mbit.mp4"
    if not out.exists():
        src = av.open(str(sample_path("bikes")))
        tmp = out.with_suffix(".tmp.mp4")
        dst = av.open(str(tmp), "w")
        stream = dst.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.bit_rate = 2_000_000
        stream.options = {"g": "50", "bf": "0", "preset": "veryfast"}
        for frame in src.decode(video=0):
            for p in stream.encode(frame.reformat(1280, 720, "yuv420p")):
                dst.mux(p)
        for p in stream.encode():
            dst.mux(p)
        dst.close()
        src.close()
        os.replace(tmp, out)
    return out


def clip_720p() -> list[tuple[bytes, bool]]:
    """(packet bytes, keyframe) of `recording_720p`."""
    from offchain.camera.sources import FileSource

    return [(f.data, f.keyframe) for f in FileSource(recording_720p()).frames()]


# ============================================================================================ frames
def _unique(payload: bytes, cam: int, seq: int) -> bytes:
    return payload[:-8] + struct.pack(">II", cam, seq) if len(payload) > 16 else payload + struct.pack(">II", cam, seq)


_CLIP: list[tuple[bytes, bool]] = []


def _pool_init(clip: list[tuple[bytes, bool]]) -> None:
    _CLIP[:] = clip


def _sign(key: Ed25519PrivateKey, ip: str, cam: int, seq: int, t0: int, clip: list) -> tuple[bytes, bytes]:
    """(sha256, signature) of frame `seq` of camera number `cam`."""
    payload, keyframe = clip[seq % len(clip)]
    data = _unique(payload, cam, seq)
    digest = hashlib.sha256(data).digest()
    sig = key.sign(pk.signing_message(ip, seq, t0 + seq * STEP_MS, keyframe, len(data), digest))
    return digest, sig


def _presign(args: tuple[bytes, str, int, int, int, int]) -> list[tuple[bytes, bytes]]:
    """Pool worker: (digest, signature) of seqs first.. of one camera. Only these 96 bytes per frame
    are kept: the sender puts each packet together from the clip when it writes it."""
    raw_key, ip, cam, first, count, t0 = args
    key = Ed25519PrivateKey.from_private_bytes(raw_key)
    return [_sign(key, ip, cam, seq, t0, _CLIP) for seq in range(first, first + count)]


def _packet(ip: str, cam: int, seq: int, t0: int, clip: list, digest: bytes, sig: bytes) -> bytes:
    payload, keyframe = clip[seq % len(clip)]
    return wire.frame_message(pk.assemble_packet(ip, seq, t0 + seq * STEP_MS, keyframe, _unique(payload, cam, seq),
                                                 digest, sig))


# ============================================================================================ sender
def _sender(cams: list[tuple[str, bytes, int]], addr: tuple[str, int], plan: dict[str, Any], conn: Any) -> None:
    """Child process: handshakes, then writes the pre-signed packets paced or as fast as the node
    reads them (with ``live``, signing each itself: the memory run is too long to pre-sign);
    drains acknowledgements; reports per camera the highest seq acknowledged."""
    keys = {ip: Ed25519PrivateKey.from_private_bytes(k) for ip, k, _ in cams}
    number = {ip: n for ip, _, n in cams}
    clip, t0, count = plan["clip"], plan["t0"], plan["count"]
    signed: dict[str, list[tuple[bytes, bytes]]] = conn.recv()  # ip -> (digest, sig) per seq, or {} (live)
    socks: dict[str, socket.socket] = {}
    readers: dict[str, wire.MessageReader] = {}
    for ip, _, _ in cams:
        s = socket.create_connection(addr)
        r = wire.MessageReader(wire.MAX_CONTROL_BYTES)
        msgs: list[bytes] = []
        while not msgs:
            msgs = list(r.feed(s.recv(65536)))
        nonce = wire.parse_node_message(msgs[0])["nonce"]
        s.sendall(wire.frame_message(wire.hello_message(keys[ip], ip, None, nonce, int(time.time() * 1000))))
        s.setblocking(False)
        socks[ip], readers[ip] = s, r
    conn.send("ready")
    start_at = conn.recv()
    while time.time() < start_at:
        time.sleep(0.001)
    cpu0 = time.process_time()
    firsts: dict[str, int] = plan["firsts"]
    acked = {ip: firsts[ip] - 1 for ip in socks}
    sent = {ip: 0 for ip in socks}
    pos = {ip: 0 for ip in socks}  # bytes of the current packet already written
    sel = selectors.DefaultSelector()
    for ip, s in socks.items():
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, ip)
    end = start_at + plan["seconds"]
    paced = plan["paced"]
    current: dict[str, bytes] = {}

    def frame_of(ip: str) -> bytes:
        if ip not in current:
            seq = firsts[ip] + sent[ip]
            digest, sig = signed[ip][sent[ip]] if signed else _sign(keys[ip], ip, number[ip], seq, t0, clip)
            current[ip] = _packet(ip, number[ip], seq, t0, clip, digest, sig)
        return current[ip]

    while time.time() < end:
        now = time.time()
        due = (int((now - start_at) * FPS) + 1) if paced else None
        for key, events in sel.select(timeout=0.005):
            ip = key.data
            if events & selectors.EVENT_READ:
                _drain(socks[ip], readers[ip], acked, ip)
            if events & selectors.EVENT_WRITE:
                # at most WINDOW frames unacknowledged, as a camera's buffer would allow
                while sent[ip] < count and (due is None or sent[ip] < due) and \
                        sent[ip] - (acked[ip] - firsts[ip] + 1) < WINDOW:
                    frame = frame_of(ip)
                    try:
                        n = socks[ip].send(memoryview(frame)[pos[ip]:])
                    except BlockingIOError:
                        break
                    pos[ip] += n
                    if pos[ip] < len(frame):
                        break
                    pos[ip] = 0
                    sent[ip] += 1
                    del current[ip]
        if paced:
            time.sleep(0.002)
    cpu_send = time.process_time() - cpu0
    # The tail: wait for the acknowledgements of everything written (the node may still be
    # working through what its pipeline and the sockets hold), until no progress for TAIL_IDLE_S.
    last_ack_at = time.time()
    for ip, s in socks.items():
        sel.modify(s, selectors.EVENT_READ, ip)
    while any(acked[ip] < firsts[ip] + sent[ip] - 1 for ip in socks) and time.time() - last_ack_at < TAIL_IDLE_S:
        for key, _ in sel.select(timeout=0.5):
            ip = key.data
            before = acked[ip]
            try:
                _drain(socks[ip], readers[ip], acked, ip)
            except OSError:
                sel.unregister(socks[ip])
            if acked[ip] != before:
                last_ack_at = time.time()
    sel.close()
    for s in socks.values():
        s.setblocking(True)
    # A graceful close (FIN, then read until the node closes): closing a socket with unread acks
    # in it would reset the connection and destroy frames still queued at the node.
    for s in socks.values():
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    close_by = time.time() + 5
    for s in socks.values():
        try:
            s.settimeout(max(0.01, close_by - time.time()))
            while s.recv(65536):
                pass
        except OSError:
            pass
        s.close()
    conn.send({"acked": sum(acked[ip] - firsts[ip] + 1 for ip in socks), "sent": sent,
               "cpu_s": time.process_time() - cpu0, "cpu_send_s": cpu_send, "last_ack_at": last_ack_at})


def _drain(s: socket.socket, reader: wire.MessageReader, acked: dict[str, int], ip: str) -> None:
    while True:
        try:
            chunk = s.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        if not chunk:
            return
        msgs = list(reader.feed(chunk))
        for body in reversed(msgs):  # acknowledgements are cumulative: the newest one is enough
            msg = wire.parse_node_message(body)
            if msg.get("type") == "ack":
                acked[ip] = max(acked[ip], int(msg["upTo"]))
                break
        if len(chunk) < 262144:
            return


# ============================================================================================ node
def _cpu_since(pid: int, before: dict[int, float]) -> float:
    """CPU of the node and its children (verify workers start with the first frame) since `before`."""
    return sum(v - before.get(k, 0.0) for k, v in cpu_by_pid(process_tree(pid)).items())


def run_phase(node: Any, cams: list[tuple[str, bytes]], clip: list, paced: bool, seconds: float,
              firsts: dict[str, int], per_cam: int, pool: Any, t0: int, live: bool = False) -> dict[str, Any]:
    """One phase; advances `firsts` (each camera's next seq) by what was sent."""
    signed_at = time.monotonic()
    pool_procs = [p.pid for p in pool._pool]
    cpu_pool0 = cpu_seconds(pool_procs)
    numbered = [(ip, k, i) for i, (ip, k) in enumerate(cams)]
    signed: dict[str, list] = {}
    if not live:
        jobs = [(k, ip, i, firsts[ip], per_cam, t0) for ip, k, i in numbered]
        signed = dict(zip([ip for ip, _ in cams], pool.map(_presign, jobs, chunksize=4)))
    presign = {"seconds": round(time.monotonic() - signed_at, 2), "frames": 0 if live else per_cam * len(cams)}
    groups = [numbered[i : i + CAMS_PER_SENDER] for i in range(0, len(numbered), CAMS_PER_SENDER)]
    ctx = mp.get_context("spawn")
    senders = []
    plan = {"paced": paced, "seconds": seconds, "firsts": {ip: firsts[ip] for ip, _ in cams}, "clip": clip,
            "t0": t0, "count": per_cam}
    for g in groups:
        a, b = ctx.Pipe()
        p = ctx.Process(target=_sender, args=(g, node.ingest, plan, b), daemon=True)
        p.start()
        a.send({ip: signed[ip] for ip, _, _ in g} if signed else {})
        senders.append((p, a))
    del signed
    for p, a in senders:
        if not a.poll(600) or a.recv() != "ready":  # presigned frames travel first (minutes when loaded)
            raise RuntimeError(f"sender {p.pid} did not get ready (exit code {p.exitcode})")
    start_at = time.time() + 0.5
    for _, a in senders:
        a.send(start_at)
    while time.time() < start_at:
        time.sleep(0.01)
    cpu0 = cpu_by_pid(process_tree(node.process.pid))
    rss = []
    while time.time() < start_at + seconds:
        rss.append(round(rss_mib(process_tree(node.process.pid)), 1))
        time.sleep(1.0)
    cpu_at_end = _cpu_since(node.process.pid, cpu0)
    main_cpu = cpu_by_pid([node.process.pid]).get(node.process.pid, 0.0) - cpu0.get(node.process.pid, 0.0)
    reports = []
    for p, a in senders:
        if not a.poll(seconds + 600):
            raise RuntimeError(f"sender {p.pid} sent no report (exit code {p.exitcode})")
        reports.append(a.recv())
    node_cpu = _cpu_since(node.process.pid, cpu0)
    procs = process_tree(node.process.pid)
    for p, _ in senders:
        p.join(10)
    acked = sum(r["acked"] for r in reports)
    sent = 0
    for r in reports:
        for ip, n in r["sent"].items():
            firsts[ip] += n
            sent += n
    last_ack = max(r["last_ack_at"] for r in reports)
    span = max(seconds, last_ack - start_at)
    return {
        "mode": "paced" if paced else "saturate", "cameras": len(cams), "seconds": seconds,
        "offered_fps": len(cams) * FPS if paced else None, "sent": sent, "acked": acked,
        "unacked_at_end": sent - acked, "frames_per_s": round(acked / span, 1),
        "lag_of_last_ack_s": round(max(0.0, last_ack - (start_at + seconds)), 2),
        "node_cpu_us_per_frame": round(1e6 * node_cpu / max(1, acked), 1),
        "node_cpu_cores": round(node_cpu / span, 2),
        "node_main_process_cpu_us_per_frame_while_sending": round(1e6 * main_cpu / max(1, acked), 1), "node_cpu_cores_while_sending": round(cpu_at_end / seconds, 2),
        "node_processes": len(procs), "rss_mib": rss,
        "generator": {"senders": len(senders), "cpu_s": round(sum(r["cpu_s"] for r in reports), 2),
                      "cpu_us_per_frame": round(1e6 * sum(r["cpu_s"] for r in reports) / max(1, sent), 1),
                      "presign": presign, "presign_pool_cpu_s": round(cpu_seconds(pool_procs) - cpu_pool0, 1)},
    }


# ============================================================================================ reference
def reference(clip: list, seconds: float = 3.0) -> dict[str, Any]:
    """SHA-256 + Ed25519 verify + append-write of the same kind of frames, one process, tight loop."""
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes_raw()
    frames = [pk.encode_packet(key, "10.9.0.1", s, 1000 + s * STEP_MS, kf, _unique(p, 1, s))
              for s, (p, kf) in enumerate(clip * 2)]
    with tempfile.TemporaryDirectory() as d:
        fd = os.open(Path(d) / "append.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        n, t_end = 0, time.monotonic() + seconds
        cpu0, t0 = time.process_time(), time.monotonic()
        while time.monotonic() < t_end:
            for raw in frames:
                p = pk.decode_packet(raw, check_digest=False)
                assert hashlib.sha256(p.payload).digest() == p.sha256
                if not ed25519.verify(pub, p.signature, p.signing_message()):  # the node's own check
                    raise RuntimeError("reference: a frame's signature does not verify")
                os.write(fd, raw)
                n += 1
                if n % 256 == 0:
                    os.fdatasync(fd)
        os.fdatasync(fd)
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        os.close(fd)
    return {"frames": n, "frames_per_s": round(n / wall, 1), "cpu_us_per_frame": round(1e6 * cpu / n, 1),
            "avg_packet_bytes": round(sum(map(len, frames)) / len(frames))}


# ============================================================================================ main
def _write(out: Path, ref: dict, runs: list, memory: dict | None, status: dict | None, drops: dict | None,
           settings: dict) -> None:
    doc = {"bench": "ingest", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                       "load_avg_at_start": _RUN.get("load_avg_at_start"), "load_avg_at_end": os.getloadavg(),
                       "note": "2 cores shared with other sessions' test suites: compare the same-run ratio"},
           "argv": _RUN.get("argv"),
           "clip": "bikes scaled to 1280x720, libx264 2 Mbit/s GOP 50, 25 fps", "reference": ref, "runs": runs,
           "memory": memory, "node_ingest_status": (status or {}).get("ingest"), "drops": drops,
           "node_settings": settings, "target": {"frames_per_s_at_200": 5000, "ratio": 0.5}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")


def _dropped(node: Any, sent: int, wait_s: float = 120.0) -> dict[str, int]:
    """Frames held by the node (its SQLite, read-only) against every frame written to it, once
    the count stops growing (what was still in its pipeline or socket buffers lands first)."""
    import sqlite3

    held, deadline = -1, time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{node.config.data_dir / 'node.sqlite'}?mode=ro", uri=True) as db:
            now = db.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
        if now >= sent or now == held:
            held = now
            break
        held = now
        time.sleep(3.0)
    return {"sent": sent, "held": held, "dropped": sent - held}


def _cluster(tmp: Path, cameras: int, settings: dict[str, Any]) -> tuple[Any, list[tuple[str, bytes]]]:
    from offchain.node.cluster import Cluster

    cluster = Cluster(tmp, settings=settings)
    try:
        cluster.start_chain()
        cams = []
        for i in range(cameras):
            ip = f"10.{20 + i // 250}.{i % 250}.1"
            key = cluster.register_camera(ip, 1, b"bench")
            cams.append((ip, key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())))
        cluster.seal_genesis()
        cluster.configure_nodes()
        cluster.start_node(cluster.nodes[0], timeout=120)  # ingest processes read the whitelist first
    except BaseException:
        cluster.stop()
        raise
    return cluster, cams


_RUN: dict[str, Any] = {}  # how this run was started (written with the results)


def main(argv: list[str]) -> int:
    _RUN.update(load_avg_at_start=os.getloadavg(), argv=list(argv))
    ap = argparse.ArgumentParser(prog="python -m bench ingest", description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, nargs="+", default=[50, 100, 200, 400])
    ap.add_argument("--seconds", type=float, default=12.0, help="length of each phase")
    ap.add_argument("--memory-minutes", type=float, default=0.0, help="also run 200 cameras paced this long")
    ap.add_argument("--verify-workers", type=int, default=-1, help="the node's ingest_verify_workers")
    ap.add_argument("--ingest-processes", type=int, default=-1,
                    help="the node's ingest_processes (default -1: one per core, the setting docs/TRANSPORT.md "
                         "gives a node of 200 cameras; 0: the single-process node, the config's default)")
    ap.add_argument("--tick-ms", type=int, default=250, help="the node's tick_ms (producer and gap-scan period)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--profile", type=Path, default=None,
                    help="cProfile the node's event loop into this file (slows the node: not for figures)")
    args = ap.parse_args(argv)
    if args.profile is not None:
        os.environ["FRAMELEDGER_PROFILE_INGEST"] = str(args.profile.resolve())  # the node inherits it
    clip = clip_720p()
    ref = reference(clip)
    print(f"reference (SHA-256 + Ed25519 verify + append-write, 1 process): {ref['frames_per_s']:.0f} frames/s, "
          f"{ref['cpu_us_per_frame']:.0f} µs/frame, packets {ref['avg_packet_bytes']} B on average", flush=True)
    settings = {"window_ms": 3_600_000, "store_fsync": "file", "ingest_verify_workers": args.verify_workers,
                "tick_ms": args.tick_ms,
                "ingest_max_per_address": 1024, "ingest_max_connections": 1024}
    if args.ingest_processes is not None:
        settings["ingest_processes"] = args.ingest_processes
    most = max(args.cameras + ([200] if args.memory_minutes else []))
    runs: list[dict[str, Any]] = []
    memory: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        cluster, cams = _cluster(Path(tmp), most, settings)
        node = cluster.nodes[0]
        pool = mp.get_context("spawn").Pool(max(1, (os.cpu_count() or 2)), initializer=_pool_init, initargs=(clip,))
        firsts = {ip: 0 for ip, _ in cams}
        t0 = int(time.time() * 1000)  # one timeline per camera across phases: seq s at t0 + 40 s ms
        try:
            for n in args.cameras:
                for paced in (True, False):
                    per_cam = int(args.seconds * FPS) + FPS if paced else \
                        int(math.ceil(2.2 * ref["frames_per_s"] * args.seconds / n)) + FPS
                    # the machine may be shared: a reference right before each phase too, so the
                    # ratio compares the node with the same work under the same load
                    near = reference(clip, 2.0)
                    r = run_phase(node, cams[:n], clip, paced, args.seconds, firsts, per_cam, pool, t0)
                    r["ratio_to_reference"] = round(r["frames_per_s"] / ref["frames_per_s"], 3)
                    r["reference_before_phase"] = near
                    r["ratio_to_reference_before_phase"] = round(r["frames_per_s"] / near["frames_per_s"], 3)
                    runs.append(r)
                    _write(args.out, ref, runs, None, None, None, settings)  # kept even if a later phase fails
                    print(f"{n:4d} cameras {r['mode']:8s}: {r['frames_per_s']:7.0f} frames/s acked "
                          f"({r['acked']}/{r['sent']} sent), node CPU {r['node_cpu_us_per_frame']:5.0f} µs/frame "
                          f"({r['node_cpu_cores']} cores), last ack +{r['lag_of_last_ack_s']} s, "
                          f"RSS {r['rss_mib'][0] if r['rss_mib'] else '?'}->{r['rss_mib'][-1] if r['rss_mib'] else '?'} MiB, "
                          f"ratio {r['ratio_to_reference']:.2f} ({r['ratio_to_reference_before_phase']:.2f} to the "
                          f"reference just before: {near['frames_per_s']:.0f} f/s); generator {r['generator']['cpu_us_per_frame']} µs/frame "
                          f"sending + {r['generator']['presign_pool_cpu_s']} s presign", flush=True)
            if args.memory_minutes:
                seconds = args.memory_minutes * 60
                r = run_phase(node, cams[:200], clip, True, seconds, firsts, int(seconds * FPS) + FPS, pool, t0, live=True)
                rss = r["rss_mib"]
                tenth = max(1, len(rss) // 10)
                memory = {**r, "rss_first_tenth_mib": round(sum(rss[:tenth]) / tenth, 1),
                          "rss_last_tenth_mib": round(sum(rss[-tenth:]) / tenth, 1)}
                print(f"memory: 200 cameras paced {args.memory_minutes} min, RSS {memory['rss_first_tenth_mib']} -> "
                      f"{memory['rss_last_tenth_mib']} MiB (first/last tenth), {r['frames_per_s']:.0f} frames/s", flush=True)
            status = cluster.api(node, "/api/v1/status")
            drops = _dropped(node, sum(firsts.values()))
            print(f"nothing dropped by the node: {drops['held']} frames held of {drops['sent']} sent "
                  f"({drops['dropped']} missing after the drain)", flush=True)
        finally:
            pool.terminate()
            cluster.stop()
    _write(args.out, ref, runs, memory, status, drops, settings)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
