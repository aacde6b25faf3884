"""An honest camera's throughput at one node while hostile cameras attack it (issue 8, item 1).

One node in-process (real SQLite, local store, producer, gap scan ticking every 250 ms) on its own
Anvil with a one-node consortium. An honest camera sends validly signed frames as fast as the node
takes them; phase by phase, other whitelisted cameras add: a frame stamped 400,000 windows in the
past (after their chain has a block), a sequence jump from 9 to 3,000,000, a clock reset to epoch 0.
Each phase reports the honest camera's accepted frames/s and the node's ticks/s against the
baseline phase of the same run, and the process's resident memory.

    python -m bench bounded                  # writes bench/results/bounded.json
    python -m bench bounded -- --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from offchain.chain.client import Signer, connect
from offchain.chain.deployer import deploy
from offchain.chain.devchain import DevChain
from offchain.chain.ledger import ConsortiumClient
from offchain.core import packet as pk
from offchain.core.block import window_of
from offchain.node.config import NodeConfig
from offchain.node.node import Node
from offchain.tables import render_table

RESULTS = Path(__file__).resolve().parent / "results" / "bounded.json"
W = 60_000


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Camera:
    def __init__(self, owner: ConsortiumClient, ip: str):
        self.ip = ip
        self.key = Ed25519PrivateKey.generate()
        owner.register_camera(ip, self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), b"\x00" * 32)

    def packet(self, seq: int, ts: int) -> bytes:
        return pk.encode_packet(self.key, self.ip, seq, ts, seq % 25 == 0, b"frame %d of %s" % (seq, self.ip.encode()))


async def send(node: Node, cam: Camera, frames: list[tuple[int, int]]) -> None:
    for seq, ts in frames:
        await node.accept_packet(cam.packet(seq, ts), source="camera")


async def ticker(node: Node, counter: list[int]) -> None:
    while True:
        for step in (node.scan_gaps, node.producer.tick, node.producer.scan_anchored):
            await step()
        counter[0] += 1
        await asyncio.sleep(0.25)


async def attacks(node: Node, cams: list[Camera], start: int):
    """Each attack: a camera with one anchored window of history, then the hostile frames."""
    for cam in cams:
        await send(node, cam, [(i, start + i * 2_000) for i in range(30)] + [(30 + i, start + W + i * 40) for i in range(30)])
    far, jump, epoch = cams
    for _ in range(3):  # let their first windows be anchored
        await node.producer.tick()
    yield "frame 400,000 windows in the past", lambda: send(node, far, [(60, start - 400_000 * W + 7)])
    yield "seq jump 9 -> 3,000,000", lambda: send(node, jump, [(60 + i, start + W + 1_300 + i * 40) for i in range(5)]
                                                 + [(3_000_000 + i, start + W + 1_500 + i * 40) for i in range(5)])
    yield "clock reset to epoch 0", lambda: send(node, epoch, [(60 + i, i * 40) for i in range(10)])


async def measure(node: Node, honest: Camera, state: dict, seconds: float, ticks: list[int]) -> tuple[float, float]:
    t0, n0, k0 = time.monotonic(), state["seq"], ticks[0]
    while time.monotonic() - t0 < seconds:
        seq = state["seq"]
        await node.accept_packet(honest.packet(seq, state["ts0"] + seq), source="camera")  # 1 ms apart
        state["seq"] += 1
        if seq % 20 == 0:
            await asyncio.sleep(0)  # a camera connection yields between reads
    dt = time.monotonic() - t0
    return (state["seq"] - n0) / dt, (ticks[0] - k0) / dt


async def run(rpc_url: str, keys: list[str], seconds: float, work: Path, n_attacks: int = 3) -> list[dict]:
    plan = {"founderName": "A", "members": [{"account": 1, "role": "Operator", "parent": 0, "name": "Bank"}],
            "nodes": [{"account": 3, "operatedBy": 0, "name": "n"}], "quorum": 1}
    w3 = connect(rpc_url)
    dep = deploy(w3, keys, plan=plan, out_dir=work)
    owner = ConsortiumClient(Signer(w3, keys[1]), dep.consortium)
    honest = Camera(owner, "10.66.1.1")
    hostile = [Camera(owner, ip) for ip in ("10.66.0.1", "10.66.0.2", "10.66.0.3")]  # whitelisted before the node starts
    ConsortiumClient(Signer(w3, keys[0]), dep.consortium).seal_genesis()
    node = Node(NodeConfig.from_dict({"name": "n", "data_dir": str(work / "node"), "rpc_url": rpc_url,
                                      "deployment": str(work / f"{dep.chain_id}.json"), "private_key": keys[3],
                                      "window_ms": W, "missing_wait_ms": 0, "repair_deadline_ms": 300,
                                      "store_fsync": "none"}, env={}))
    await node.start()
    ticks = [0]
    tick_task = asyncio.create_task(ticker(node, ticks))
    rows = []
    try:
        now = int(time.time() * 1000)
        start = window_of(now, W)[0] - 5 * W
        state = {"seq": 0, "ts0": now - 120_000}
        rate, tick_rate = await measure(node, honest, state, seconds, ticks)
        rows.append({"phase": "baseline", "honest_fps": rate, "ticks_per_s": tick_rate, "rss_mib": rss_mib()})
        async for name, attack in attacks(node, hostile, start):
            if len(rows) > n_attacks:
                break
            await attack()
            rate, tick_rate = await measure(node, honest, state, seconds, ticks)
            rows.append({"phase": name, "honest_fps": rate, "ticks_per_s": tick_rate, "rss_mib": rss_mib()})
        # control: no new attack, a larger pool. What drops here is drift (machine load, pool size).
        rate, tick_rate = await measure(node, honest, state, seconds, ticks)
        rows.append({"phase": "control: nothing new", "honest_fps": rate, "ticks_per_s": tick_rate, "rss_mib": rss_mib()})
        rows[-1]["counters"] = node.state.counters()
    finally:
        tick_task.cancel()
        await asyncio.gather(tick_task, return_exceptions=True)
        await node.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench bounded")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--attacks", type=int, default=3, help="run only the first N attacks")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv or [])
    with DevChain(accounts=12) as chain, tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(run(chain.rpc_url, chain.private_keys, args.seconds, Path(tmp), args.attacks))
    base = rows[0]["honest_fps"]
    print(render_table(["phase", "honest frames/s", "vs baseline", "node ticks/s", "RSS MiB"],
                       [[r["phase"], f"{r['honest_fps']:,.0f}", f"{r['honest_fps'] / base:.2f}x",
                         f"{r['ticks_per_s']:.1f}", f"{r['rss_mib']:.0f}"] for r in rows],
                       title=f"An honest camera at one node under attack ({args.seconds:g} s per phase, same run)"))
    args.out.write_text(json.dumps({"seconds_per_phase": args.seconds, "phases": rows}, indent=2) + "\n")
    return 0
