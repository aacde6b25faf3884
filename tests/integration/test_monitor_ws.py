"""The monitor woken by WebSocket `eth_subscribe` on Anvil (which serves WebSocket on its HTTP
port): with polling effectively off, notifications alone drive it; a reorg forced meanwhile is
undone; the CLI with --ws killed mid-stream and restarted neither skips nor repeats an event; an
endpoint without WebSocket leaves it polling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from offchain.chain.client import connect
from offchain.monitor import scanner
from offchain.monitor.scanner import Monitor, MonitorSettings
from offchain.monitor.ws import Subscription

pytestmark = pytest.mark.slow


def contracts_of(env) -> dict[str, str]:
    return {name: c["address"] for name, c in env.deployment.record["contracts"].items()}


def start_block(env) -> int:
    return min(c["blockNumber"] for c in env.deployment.record["contracts"].values())


def chain_logs(env) -> list[tuple[str, int]]:
    raw = env.w3.eth.get_logs({"fromBlock": start_block(env), "toBlock": env.w3.eth.block_number,
                               "address": list(contracts_of(env).values())})
    return [("0x" + bytes(r["transactionHash"]).hex(), r["logIndex"]) for r in raw]


def complete_lines(path: Path) -> list[dict]:
    """The lines written so far (a line being written by the monitor's thread is left out)."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1]]


def wait_until(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.05)


def register(env, n: int, prefix: str) -> None:
    for i in range(n):
        env.consortium(1).register_camera(f"{prefix}.{i}", b"\x01" * 32, b"\x02" * 32)


def test_notifications_alone_drive_the_monitor_and_a_reorg_is_undone(chain_env, devchain, tmp_path):
    register(chain_env, 2, "10.70.0")
    snapshot = chain_env.w3.provider.make_request("evm_snapshot", [])["result"]
    register(chain_env, 3, "10.70.1")  # these blocks will be dropped
    out_path = tmp_path / "events.jsonl"
    out = open(out_path, "a+")
    m = Monitor(connect(devchain.rpc_url), contracts_of(chain_env), tmp_path / "cp.json", out, start_block(chain_env),
                MonitorSettings(confirmations=0, max_blocks=2))
    sub = Subscription(devchain.rpc_url.replace("http://", "ws://"), m.addresses)
    assert sub.open() and sub.connected
    stop = threading.Event()
    # safety_s of an hour: after catching up, only a notification makes the monitor look again
    worker = threading.Thread(target=m.run, kwargs=dict(poll_s=0.1, should_stop=stop.is_set, wake=sub.wait,
                                                        safety_s=3600), daemon=True)
    worker.start()
    try:
        wait_until(lambda: scanner.fold(complete_lines(out_path)) == chain_logs(chain_env), "the initial catch-up")
        before = sub.notifications
        dropped = chain_logs(chain_env)
        chain_env.w3.provider.make_request("evm_revert", [snapshot])
        chain_env.w3.provider.make_request("anvil_mine", [1])  # a different block at the first dropped height
        register(chain_env, 4, "10.70.2")  # another history, one block longer
        wait_until(lambda: scanner.fold(complete_lines(out_path)) == chain_logs(chain_env), "the reorg handled")
    finally:
        stop.set()
        worker.join(timeout=30)
        sub.close()
        out.close()
    got = complete_lines(out_path)
    removed = [(e["transactionHash"], e["logIndex"]) for e in got if e["removed"]]
    assert removed and set(removed) <= set(dropped)
    assert sub.notifications > before  # it was woken by what the socket pushed
    assert {e["args"]["ip"] for e in got if e["event"] == "CameraRegistered" and not e["removed"]} >= {"10.70.2.3"}


def _cli(tmp_path, rpc_url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "offchain.cli", "--log-level", "info", "monitor", "--rpc", rpc_url,
            "--deployment", str(tmp_path / "deployment.json"), "--checkpoint", str(tmp_path / "cp.json"),
            "--out", str(tmp_path / "cli.jsonl"), "--confirmations", "0", "--max-blocks", "1", "--poll", "0.1", *extra]


def test_cli_with_ws_killed_mid_stream_resumes_exactly_once(chain_env, devchain, tmp_path):
    (tmp_path / "deployment.json").write_text(json.dumps(chain_env.deployment.record))
    ws = devchain.rpc_url.replace("http://", "ws://")
    out = tmp_path / "cli.jsonl"
    proc = subprocess.Popen(_cli(tmp_path, devchain.rpc_url, "--ws", ws), stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "first.log", "w"))
    try:
        register(chain_env, 10, "10.71.0")
        wait_until(lambda: out.exists() and out.stat().st_size > 0, "the first lines")
        os.kill(proc.pid, signal.SIGKILL)  # our own child, by PID, mid-stream
        proc.wait(timeout=10)
        at_kill, on_chain_at_kill = len(complete_lines(out)), len(chain_logs(chain_env))
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    register(chain_env, 4, "10.71.1")  # the chain moves on while the monitor is down
    proc = subprocess.Popen(_cli(tmp_path, devchain.rpc_url, "--ws", ws), stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "second.log", "w"))
    try:
        wait_until(lambda: [(e["transactionHash"], e["logIndex"]) for e in complete_lines(out)] == chain_logs(chain_env),
                   "the restarted monitor to catch up")
        register(chain_env, 2, "10.71.2")  # and on, while it listens
        wait_until(lambda: [(e["transactionHash"], e["logIndex"]) for e in complete_lines(out)] == chain_logs(chain_env),
                   "the new events")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert 0 < at_kill < on_chain_at_kill  # it was killed mid-stream
    assert [(e["transactionHash"], e["logIndex"]) for e in complete_lines(out)] == chain_logs(chain_env)
    assert "subscribed over websocket" in (tmp_path / "second.log").read_text()


def test_no_websocket_endpoint_leaves_it_polling(chain_env, devchain, tmp_path):
    (tmp_path / "deployment.json").write_text(json.dumps(chain_env.deployment.record))
    register(chain_env, 2, "10.72.0")
    proc = subprocess.Popen(_cli(tmp_path, devchain.rpc_url, "--ws", "ws://127.0.0.1:9"), stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "poll.log", "w"))
    try:
        out = tmp_path / "cli.jsonl"
        wait_until(lambda: [(e["transactionHash"], e["logIndex"]) for e in complete_lines(out)] == chain_logs(chain_env),
                   "the polling monitor to catch up")
        register(chain_env, 1, "10.72.1")
        wait_until(lambda: [(e["transactionHash"], e["logIndex"]) for e in complete_lines(out)] == chain_logs(chain_env),
                   "the new event, by polling")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "websocket unavailable, polling" in (tmp_path / "poll.log").read_text()
