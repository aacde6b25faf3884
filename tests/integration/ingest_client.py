"""A blocking test client for a node's camera listener: the camera's side of the handshake by hand,
so tests can send exactly the (hostile) bytes they want."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections import deque
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from offchain.core import wire


class IngestClient:
    def __init__(self, addr: tuple[str, int], source: str | None = None, timeout: float = 10.0,
                 read_challenge: bool = True) -> None:
        self.sock = socket.create_connection(addr, timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.msgs = wire.MessageReader(wire.MAX_CONTROL_BYTES)
        self.ready: deque[bytes] = deque()
        self.received: list[dict[str, Any]] = []
        self.nonce = ""
        if read_challenge:
            challenge = self.recv()
            assert challenge is not None and challenge["type"] == "challenge", challenge
            self.nonce = challenge["nonce"]

    def send(self, body: bytes) -> None:
        self.sock.sendall(wire.frame_message(body))

    def hello(self, key: Ed25519PrivateKey, ip: str, codec: dict | None = None, nonce: str | None = None) -> bytes:
        body = wire.hello_message(key, ip, codec, self.nonce if nonce is None else nonce, int(time.time() * 1000))
        self.send(body)
        return body

    def end(self, key: Ed25519PrivateKey, ip: str, last_seq: int) -> None:
        self.send(wire.end_message(key, ip, last_seq, self.nonce, int(time.time() * 1000)))

    def recv(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """The next node message; None at EOF or reset."""
        self.sock.settimeout(timeout)
        while not self.ready:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return None
            if not chunk:
                return None
            self.ready.extend(self.msgs.feed(chunk))
        msg = wire.parse_node_message(self.ready.popleft())
        self.received.append(msg)
        return msg

    def until_closed(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every node message until the node closes the connection (TimeoutError if it does not)."""
        got = []
        deadline = time.monotonic() + timeout
        while (msg := self.recv(max(0.01, deadline - time.monotonic()))) is not None:
            got.append(msg)
        return got

    def wait_ack(self, seq: int, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            assert msg is not None, "connection closed before the acknowledgement"
            if msg["type"] == "ack" and msg["upTo"] >= seq:
                return msg

    def close(self) -> None:
        self.sock.close()


def node_db(data_dir: Path) -> sqlite3.Connection:
    """The node's SQLite state, read-only (WAL allows reading beside the running node)."""
    return sqlite3.connect(f"file:{data_dir / 'node.sqlite'}?mode=ro", uri=True)


def alarm_rows(data_dir: Path) -> int:
    with node_db(data_dir) as db:
        return db.execute("SELECT COUNT(*) FROM alarms WHERE kind IN ('integrity','security')").fetchone()[0]


def meta(data_dir: Path, key: str) -> str | None:
    with node_db(data_dir) as db:
        row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return row[0] if row else None


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
