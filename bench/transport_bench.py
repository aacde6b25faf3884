"""Camera → node transport on loopback: frames/s and CPU for ~20 KB frame packets.

    python -m bench.transport_bench [--seconds 3] [--rounds 2] [--size 20000]

One sender (this process) streams real, signed FLP1 packets to one receiver (a separate process,
so CPU is measured per side) over:

  a  raw TCP, u32 length prefix (offchain.core.wire), asyncio streams   ← the decided transport
  b  WebSocket (websockets), binary messages, compression off
  b' WebSocket with the library default (permessage-deflate on)
  c  HTTP/1.1 POST per frame, httpx keep-alive client → uvicorn + FastAPI
  c' the same, 8 requests in flight (8 connections; frame order no longer guaranteed)
  c" HTTP/1.1 POST per frame, httpx → a minimal asyncio HTTP server (best case for HTTP)

Each run is time-boxed (--seconds); the receiver counts what arrived and reports its own CPU
time; the sender's rate is frames acknowledged / wall time. Ratios are against (a) measured in
the same run. Results: a table on stdout and bench/results/transport.json. Everything stays on
127.0.0.1 (no proxies are consulted).
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` class in the
# handler signatures defined inside _receiver().
import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from offchain.core.wire import MessageReader, control_message, frame_message, parse_control  # noqa: E402

HOST = "127.0.0.1"
RESULTS = REPO / "bench" / "results" / "transport.json"
MAX_BODY = 32 * 1024 * 1024


# ============================================================================================
# receiver (child process)
# ============================================================================================

class _Count:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.bytes = 0
        self.cpu0 = time.process_time()

    def result(self) -> dict[str, Any]:
        return {"n": self.n, "bytes": self.bytes, "cpu": time.process_time() - self.cpu0}


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


async def _receiver() -> None:
    import uvicorn
    import websockets
    from fastapi import FastAPI, Request, Response
    from websockets.asyncio.server import serve

    count = _Count()

    # (a) length-prefixed TCP: exactly what a node's ingest does before decode_packet.
    async def tcp_handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        reader = MessageReader()
        while chunk := await r.read(256 * 1024):
            for body in reader.feed(chunk):
                if body[:4] == b"FLC1":
                    msg = parse_control(body)
                    if msg["type"] == "bench-start":
                        count.reset()
                    elif msg["type"] == "bench-end":
                        w.write(json.dumps(count.result()).encode() + b"\n")
                        await w.drain()
                    continue
                count.n += 1
                count.bytes += len(body)
        w.close()

    tcp = await asyncio.start_server(tcp_handle, sock=_listen())

    # (b) WebSocket
    async def ws_handle(ws: Any) -> None:
        async for msg in ws:
            if isinstance(msg, str):
                if msg == "start":
                    count.reset()
                else:
                    await ws.send(json.dumps(count.result()))
                continue
            count.n += 1
            count.bytes += len(msg)

    ws_plain = await serve(ws_handle, HOST, 0, compression=None, max_size=MAX_BODY)
    ws_deflate = await serve(ws_handle, HOST, 0, max_size=MAX_BODY)  # library default: deflate

    # (c) HTTP: uvicorn + FastAPI
    app = FastAPI()

    @app.post("/start")
    async def start() -> Response:
        count.reset()
        return Response(status_code=204)

    @app.post("/frame")
    async def frame(request: Request) -> Response:
        body = await request.body()
        count.n += 1
        count.bytes += len(body)
        return Response(status_code=204)

    @app.get("/result")
    async def result() -> dict[str, Any]:
        return count.result()

    http_sock = _listen()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    uvicorn_task = asyncio.ensure_future(server.serve(sockets=[http_sock]))

    # (c") minimal HTTP/1.1 keep-alive server on asyncio streams
    async def mini_http(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                length = 0
                for line in lines:
                    if line[:15].lower() == "content-length:":
                        length = int(line[15:])
                body = await r.readexactly(length) if length else b""
                if path == "/frame":
                    count.n += 1
                    count.bytes += len(body)
                    w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                elif path == "/start":
                    count.reset()
                    w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                else:
                    data = json.dumps(count.result()).encode()
                    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                            + str(len(data)).encode() + b"\r\n\r\n" + data)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        w.close()

    mini = await asyncio.start_server(mini_http, sock=_listen())

    while not server.started:
        await asyncio.sleep(0.01)
    ports = {
        "tcp": tcp.sockets[0].getsockname()[1],
        "ws": ws_plain.sockets[0].getsockname()[1],
        "ws_deflate": ws_deflate.sockets[0].getsockname()[1],
        "http_uvicorn": http_sock.getsockname()[1],
        "http_mini": mini.sockets[0].getsockname()[1],
        "versions": {"websockets": websockets.__version__, "uvicorn": uvicorn.__version__},
    }
    print(json.dumps(ports), flush=True)
    # Run until the parent closes our stdin.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    server.should_exit = True
    await uvicorn_task


# ============================================================================================
# sender (this process)
# ============================================================================================

def _packets(size: int, count: int = 64) -> list[bytes]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from offchain.core.packet import encode_packet

    key = Ed25519PrivateKey.generate()
    return [encode_packet(key, "10.0.0.1", i, 1_700_000_000_000 + 40 * i, i % 25 == 0, os.urandom(size))
            for i in range(count)]


async def _run_tcp(port: int, packets: list[bytes], seconds: float) -> tuple[int, dict[str, Any]]:
    r, w = await asyncio.open_connection(HOST, port)
    w.write(frame_message(control_message({"type": "bench-start"})))
    deadline = time.perf_counter() + seconds
    n, i, k = 0, 0, len(packets)
    while True:
        for _ in range(32):  # check the clock every 32 frames
            w.write(frame_message(packets[i]))
            await w.drain()
            i = (i + 1) % k
        n += 32
        if time.perf_counter() >= deadline:
            break
    w.write(frame_message(control_message({"type": "bench-end"})))
    await w.drain()
    result = json.loads(await r.readline())
    w.close()
    return n, result


async def _run_ws(port: int, packets: list[bytes], seconds: float, compression: str | None) -> tuple[int, dict[str, Any]]:
    from websockets.asyncio.client import connect

    async with connect(f"ws://{HOST}:{port}/", compression=compression, max_size=MAX_BODY, proxy=None) as ws:
        await ws.send("start")
        deadline = time.perf_counter() + seconds
        n, i, k = 0, 0, len(packets)
        while True:
            for _ in range(32):
                await ws.send(packets[i])
                i = (i + 1) % k
            n += 32
            if time.perf_counter() >= deadline:
                break
        await ws.send("end")
        result = json.loads(await ws.recv())
    return n, result


async def _run_http(port: int, packets: list[bytes], seconds: float, inflight: int) -> tuple[int, dict[str, Any]]:
    import httpx

    base = f"http://{HOST}:{port}"
    limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30, trust_env=False) as client:
        (await client.post("/start")).raise_for_status()
        deadline = time.perf_counter() + seconds
        headers = {"content-type": "application/octet-stream"}
        sent = 0

        async def worker(offset: int) -> None:
            nonlocal sent
            i = offset
            while time.perf_counter() < deadline:
                resp = await client.post("/frame", content=packets[i % len(packets)], headers=headers)
                if resp.status_code != 204:
                    raise RuntimeError(f"POST /frame -> {resp.status_code}")
                sent += 1
                i += 1

        await asyncio.gather(*(worker(j) for j in range(inflight)))
        result = (await client.get("/result")).json()
    return sent, result


VARIANTS: list[tuple[str, str, str]] = [
    ("a", "raw TCP, u32 length prefix (asyncio streams)", "tcp"),
    ("b", "WebSocket, binary, compression off", "ws"),
    ("b'", "WebSocket, library default (permessage-deflate)", "ws_deflate"),
    ("c", "HTTP/1.1 POST per frame, httpx -> uvicorn+FastAPI", "http_uvicorn"),
    ("c'", "  same, 8 in flight (order not kept)", "http_uvicorn_8"),
    ('c"', "HTTP/1.1 POST per frame, httpx -> minimal asyncio server", "http_mini"),
]


async def _measure(key: str, ports: dict[str, Any], packets: list[bytes], seconds: float) -> dict[str, Any]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    if key == "tcp":
        n, res = await _run_tcp(ports["tcp"], packets, seconds)
    elif key == "ws":
        n, res = await _run_ws(ports["ws"], packets, seconds, None)
    elif key == "ws_deflate":
        n, res = await _run_ws(ports["ws_deflate"], packets, seconds, "deflate")
    elif key == "http_uvicorn":
        n, res = await _run_http(ports["http_uvicorn"], packets, seconds, 1)
    elif key == "http_uvicorn_8":
        n, res = await _run_http(ports["http_uvicorn"], packets, seconds, 8)
    elif key == "http_mini":
        n, res = await _run_http(ports["http_mini"], packets, seconds, 1)
    else:
        raise KeyError(key)
    wall = time.perf_counter() - t0
    sender_cpu = time.process_time() - cpu0
    if res["n"] != n:
        raise RuntimeError(f"{key}: sent {n} frames but the receiver counted {res['n']}")
    return {"frames": n, "bytes": res["bytes"], "wall_s": wall, "fps": n / wall, "mb_s": res["bytes"] / wall / 1e6,
            "sender_cpu_s": sender_cpu, "receiver_cpu_s": res["cpu"],
            "sender_us_per_frame": sender_cpu / n * 1e6, "receiver_us_per_frame": res["cpu"] / n * 1e6,
            "cpu_us_per_frame": (sender_cpu + res["cpu"]) / n * 1e6}


def _packet_costs(packets: list[bytes], size: int) -> dict[str, float]:
    """What signing and checking a packet costs, to put the transport numbers in proportion."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from offchain.camera.keystore import public_key_bytes
    from offchain.core.packet import decode_packet, encode_packet, verify_signature

    key = Ed25519PrivateKey.generate()
    pub = public_key_bytes(key)
    payload = os.urandom(size)
    n = 2000
    t = time.process_time()
    raws = [encode_packet(key, "10.0.0.1", i, i, False, payload) for i in range(n)]
    encode_us = (time.process_time() - t) / n * 1e6
    t = time.process_time()
    for raw in raws:
        verify_signature(decode_packet(raw), pub)
    verify_us = (time.process_time() - t) / n * 1e6
    return {"encode_sign_us": encode_us, "decode_verify_us": verify_us}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transport_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each timed run (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all variants (default 2)")
    parser.add_argument("--size", type=int, default=20_000, help="frame payload bytes (default 20000)")
    parser.add_argument("--out", default=str(RESULTS), help=f"JSON results (default {RESULTS.relative_to(REPO)})")
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        asyncio.run(_receiver())
        return 0

    from offchain.tables import render_table

    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--receiver"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            raise RuntimeError("receiver process failed to start")
        ports = json.loads(line)
        packets = _packets(args.size)
        runs: dict[str, list[dict[str, Any]]] = {key: [] for _, _, key in VARIANTS}
        for rnd in range(args.rounds):
            for label, _, key in VARIANTS:
                runs[key].append(asyncio.run(_measure(key, ports, packets, args.seconds)))
                r = runs[key][-1]
                print(f"  round {rnd + 1} {label:<3} {key:<15} {r['fps']:9.0f} frames/s  "
                      f"{r['cpu_us_per_frame']:7.1f} µs CPU/frame", file=sys.stderr, flush=True)
    finally:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def mean(key: str, field: str) -> float:
        return statistics.fmean(r[field] for r in runs[key])

    base_fps, base_cpu = mean("tcp", "fps"), mean("tcp", "cpu_us_per_frame")
    summary = {}
    rows = []
    for label, name, key in VARIANTS:
        s = {f: mean(key, f) for f in ("fps", "mb_s", "sender_us_per_frame", "receiver_us_per_frame",
                                       "cpu_us_per_frame")}
        s["fps_vs_tcp"] = s["fps"] / base_fps
        s["cpu_vs_tcp"] = s["cpu_us_per_frame"] / base_cpu
        s["fps_spread"] = [round(r["fps"]) for r in runs[key]]
        summary[key] = s
        rows.append([label, name, f"{s['fps']:,.0f}", f"{s['mb_s']:.0f}", f"{s['sender_us_per_frame']:.1f}",
                     f"{s['receiver_us_per_frame']:.1f}", f"{s['cpu_us_per_frame']:.1f}",
                     f"{s['fps_vs_tcp']:.3g}", f"{s['cpu_vs_tcp']:.3g}"])
    costs = _packet_costs(packets, args.size)
    packet_bytes = len(packets[0])
    print(render_table(
        ["", "transport", "frames/s", "MB/s", "send µs/f", "recv µs/f", "CPU µs/f", "fps ×(a)", "CPU ×(a)"],
        rows, title=f"camera → node transport, {packet_bytes:,}-byte packets, loopback, "
                    f"{args.rounds}×{args.seconds:g} s per transport ({os.cpu_count()} CPUs)"))
    print(f"\nfor scale: encode+sign a packet {costs['encode_sign_us']:.0f} µs, decode+verify "
          f"{costs['decode_verify_us']:.0f} µs; a 25 fps camera sends 25 frames/s per node.")
    out = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "packet_bytes": packet_bytes,
        "payload_bytes": args.size,
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), **ports.get("versions", {})},
        "baseline": "tcp",
        "variants": {key: {"label": label, "name": name.strip()} for label, name, key in VARIANTS},
        "summary": summary,
        "packet_costs_us": costs,
        "runs": runs,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path} ({out['bench_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
