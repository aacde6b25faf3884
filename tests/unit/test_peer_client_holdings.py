"""A batch-mode holdings answer a proposer cannot use is no answer (None), so the proposer waits
for that peer instead of sealing as if it held nothing (`Batcher._pull_window`); a truncated one
says so. Served by a real HTTP server on loopback, one canned body per test."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from offchain.node.peer_client import BatchHoldings, PeerClient

CAM = b"\x0c" * 32


def _ask(status: int, body: bytes) -> BatchHoldings | None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def ask() -> BatchHoldings | None:
        client = PeerClient("test", [], "http://127.0.0.1:1")
        client.open(httpx.Auth())
        try:
            return await client.batch_holdings(f"http://127.0.0.1:{server.server_port}", 0, 10_000, {CAM: [(0, 5)]})
        finally:
            await client.close()

    try:
        return asyncio.run(ask())
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("body", [b"[]", b"0", b"false", b'""', b"null", b"{not json", b'{"cameras": 5}',
                                  b'{"cameras": [{"seqs": [1]}]}'])
def test_an_answer_that_is_not_a_holdings_object_is_none(body):
    assert _ask(200, body) is None


def test_a_refusal_is_none():
    assert _ask(403, b'{"title": "forbidden"}') is None


def test_a_whole_answer_and_a_truncated_one():
    entry = {"cameraId": "0x" + CAM.hex(), "seqs": [6, 7, "8"]}
    whole = _ask(200, json.dumps({"cameras": [entry], "complete": True}).encode())
    assert whole == BatchHoldings(seqs={CAM: [6, 7]}, complete=True)
    cut = _ask(200, json.dumps({"cameras": [entry], "complete": False}).encode())
    assert cut == BatchHoldings(seqs={CAM: [6, 7]}, complete=False)
