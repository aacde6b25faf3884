"""What peer authentication costs: one signed request and its signed response, against the same
request unsigned, through the node API's real ASGI stack (CrashGuard, InflightLimit, BodyLimit,
PeerGate) in one process, no network.

    python -m bench peer_auth [-- --requests 2000]      # writes bench/results/peer_auth.json

Also times the two primitives: an EIP-191 signature and an address recovery (eth-account with
coincurve).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import httpx
from eth_account import Account
from fastapi import FastAPI, Request

from offchain.core import peer_auth as pa
from offchain.node.peer_http import BodyLimit, CrashGuard, InflightLimit, NodeRoster, PeerGate, PeerIdentity, PeerSigning

RESULTS = Path(__file__).resolve().parent / "results" / "peer_auth.json"


def _stack(server: PeerIdentity, roster: NodeRoster):
    app = FastAPI()

    @app.post("/peer/v1/echo")
    async def echo(request: Request):
        return {"n": len(await request.body())}

    @app.post("/open/echo")
    async def open_echo(request: Request):
        return {"n": len(await request.body())}

    return CrashGuard(InflightLimit(BodyLimit(PeerGate(app, server, roster), 8 << 20), 64))


async def _time(app, auth, path: str, n: int, body: bytes) -> float:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node", auth=auth) as c:
        start = time.perf_counter()
        for _ in range(n):
            r = await c.post(path, content=body)
            assert r.status_code == 200
        return (time.perf_counter() - start) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    opts = parser.parse_args(argv)
    binding = pa.ChainBinding(1337, "0x" + "ab" * 20)
    a, b = Account.create(), Account.create()
    ident = {x.address: PeerIdentity("0x" + bytes(x.key).hex(), x.address, binding) for x in (a, b)}
    roster = NodeRoster(lambda: [a.address, b.address], initial=[a.address, b.address])
    app = _stack(ident[b.address], roster)
    body = b"x" * 1024
    signed = asyncio.run(_time(app, PeerSigning(ident[a.address], roster), "/peer/v1/echo", opts.requests, body))
    plain = asyncio.run(_time(app, None, "/open/echo", opts.requests, body))
    text = pa.request_text(binding, "POST", "/peer/v1/echo", pa.body_digest(body), 1, "0" * 32)
    t = time.perf_counter()
    for _ in range(opts.requests):
        sig = pa.sign_text(ident[a.address].private_key, text)
    sign_ms = (time.perf_counter() - t) / opts.requests * 1000
    t = time.perf_counter()
    for _ in range(opts.requests):
        pa.recover_signer(text, sig)
    recover_ms = (time.perf_counter() - t) / opts.requests * 1000
    result = {"requests": opts.requests, "body_bytes": len(body), "signed_round_trip_ms": round(signed * 1000, 3),
              "unsigned_round_trip_ms": round(plain * 1000, 3), "sign_ms": round(sign_ms, 3), "recover_ms": round(recover_ms, 3)}
    print("peer auth (in-process ASGI, 1 KiB body)")
    for k, v in result.items():
        print(f"  {k:<24} {v}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
