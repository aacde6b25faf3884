"""HTTP clients that speak to a running node as a consortium peer would (signed with a node
account's key), or as anyone else; and a raw-socket POST for bodies httpx would buffer."""

from __future__ import annotations

import socket
import threading

import httpx
from eth_account import Account

from offchain.core import peer_auth as pa
from offchain.node.cluster import Cluster
from offchain.node.peer_http import NodeRoster, PeerIdentity, PeerSigning, new_nonce, now_ms


def binding(cluster: Cluster) -> pa.ChainBinding:
    return pa.ChainBinding(cluster.w3.eth.chain_id, cluster.deployment.consortium)


def signing_client(cluster: Cluster, account: int) -> httpx.Client:
    """Signs as the given Anvil account; believes responses signed by any registered node."""
    key = cluster.keys[account]
    address = Account.from_key(key).address
    nodes = cluster.consortium().nodes()
    auth = PeerSigning(PeerIdentity(key, address, binding(cluster)), NodeRoster(lambda: nodes, initial=nodes))
    return httpx.Client(auth=auth, timeout=30)


def signed_headers(cluster: Cluster, account: int, method: str, target: str, body: bytes, nonce: str | None = None,
                   time_ms: int | None = None) -> dict[str, str]:
    key = cluster.keys[account]
    nonce = nonce or new_nonce()
    t = now_ms() if time_ms is None else time_ms
    text = pa.request_text(binding(cluster), method, target, pa.body_digest(body), t, nonce)
    return pa.sign_headers(key, Account.from_key(key).address, text, t, nonce).as_dict()


def raw_post(host: str, port: int, path: str, headers: dict[str, str], total: int, chunk: int = 1 << 20,
             chunked: bool = True, send_body: bool = True) -> tuple[int, bytes, int]:
    """POST `total` bytes of zeros without ever holding them; returns (status, response, bytes sent).
    The response is read by a second thread while sending, since the server may answer (and
    close) long before the body is complete."""
    sock = socket.create_connection((host, port), timeout=60)
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
    head += ["Transfer-Encoding: chunked"] if chunked else [f"Content-Length: {total}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    received = bytearray()

    def complete() -> bool:
        head_end = received.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        length = next((int(line.split(b":", 1)[1]) for line in received[:head_end].split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        return len(received) >= head_end + 4 + length

    def read() -> None:
        try:
            while not complete() and (data := sock.recv(65536)):
                received.extend(data)
        except OSError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent = 0
    block = b"0" * chunk
    try:
        while send_body and sent < total and not received:
            piece = block[: min(chunk, total - sent)]
            sock.sendall((f"{len(piece):x}\r\n".encode() + piece + b"\r\n") if chunked else piece)
            sent += len(piece)
        if send_body and chunked and sent >= total:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server closed on us: its answer is what counts
    reader.join(timeout=30)
    sock.close()
    status = int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/1.1 ") else 0
    return status, bytes(received), sent
