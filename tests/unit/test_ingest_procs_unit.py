"""The parts of the several-ingest-processes design (offchain/node/ingest_procs.py) that need no
node: which process owns a camera, the config an ingest process gets, and the message link that
carries a connection's fd (SCM_RIGHTS over a SEQPACKET pair) with the bytes read past its hello."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from offchain.core.block import camera_id
from offchain.node.config import NodeConfig
from offchain.node.ingest_procs import _Link, child_config, owner


def _config(**kw) -> NodeConfig:
    return NodeConfig.from_dict({"name": "n", "data_dir": "/tmp/x", "rpc_url": "http://127.0.0.1:1",
                                 "deployment": "d.json", **kw}, env={})


def test_a_camera_has_one_owner_and_the_cameras_spread():
    cams = [camera_id(f"10.0.{i // 250}.{i % 250}") for i in range(400)]
    assert all(owner(c, 3) == owner(c, 3) for c in cams)
    counts = [sum(1 for c in cams if owner(c, 3) == k) for k in range(3)]
    assert min(counts) > 80, counts  # roughly even: no process gets most cameras


def test_an_ingest_process_checks_inline_and_takes_its_share_of_the_bounds():
    cfg = _config(ingest_processes=2, ingest_queue_frames=4096, ingest_queue_bytes=1 << 28, private_key="0x01")
    raw = child_config(cfg, 2)
    child = NodeConfig.from_dict(raw, env={})
    assert child.ingest_processes == 0 and child.ingest_verify_workers == 0
    assert child.ingest_queue_frames == 2048 and child.ingest_queue_bytes == 1 << 27
    assert child.data_dir == Path("/tmp/x") and child.private_key == "0x01"


def test_the_process_count_follows_the_config_and_sealing_turns_it_off():
    assert _config().ingest_process_count() == 0
    assert _config(ingest_processes=3).ingest_process_count() == 3
    assert _config(ingest_processes=-1).ingest_process_count() == max(1, min(16, os.cpu_count() or 1))
    assert _config(ingest_processes=2, seal_sessions=True).ingest_process_count() == 0


def test_the_link_carries_messages_and_a_live_socket_in_order():
    async def run() -> tuple[list, bytes]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        got: list = []
        done = asyncio.Event()
        fds: list[int] = []

        def on_message(head, data, fd):
            got.append((head, data))
            if fd is not None:
                fds.append(fd)
                done.set()

        sender = _Link(a, lambda *_: None, lambda: None)
        receiver = _Link(b, on_message, done.set)
        tcp_a, tcp_b = socket.socketpair()
        sender.send({"t": "buf", "id": 1}, b"x" * 100_000)  # larger than one recv of the peer: still whole
        sender.send({"t": "conn", "id": 1}, fd=os.dup(tcp_b.fileno()))
        tcp_b.close()  # the receiver's copy keeps the connection open
        await asyncio.wait_for(done.wait(), 5)
        passed = socket.socket(fileno=fds[0])
        tcp_a.sendall(b"still connected")
        data = passed.recv(100)
        for s in (passed, tcp_a):
            s.close()
        sender.close()
        receiver.close()
        return got, data

    got, data = asyncio.run(run())
    assert [h["t"] for h, _ in got] == ["buf", "conn"] and got[0][1] == b"x" * 100_000
    assert data == b"still connected"
