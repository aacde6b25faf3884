"""The event monitor on a real Anvil: confirmation depth, a crash between output and checkpoint,
a forced reorg (evm_snapshot/evm_revert), and the CLI killed with SIGKILL mid-stream and restarted.
In every case the events a consumer holds after the last line equal the chain's logs, each once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offchain.monitor import scanner
from offchain.monitor.scanner import Monitor, MonitorSettings

pytestmark = pytest.mark.slow


def contracts_of(env) -> dict[str, str]:
    return {name: c["address"] for name, c in env.deployment.record["contracts"].items()}


def start_block(env) -> int:
    return min(c["blockNumber"] for c in env.deployment.record["contracts"].values())


def chain_logs(env, confirmations: int = 0) -> list[tuple[str, int]]:
    safe = env.w3.eth.block_number - confirmations
    raw = env.w3.eth.get_logs({"fromBlock": start_block(env), "toBlock": safe, "address": list(contracts_of(env).values())})
    return [("0x" + bytes(r["transactionHash"]).hex(), r["logIndex"]) for r in raw]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def register(env, n: int, prefix: str) -> None:
    for i in range(n):
        env.consortium(1).register_camera(f"{prefix}.{i}", b"\x01" * 32, b"\x02" * 32)


def monitor(env, tmp_path, confirmations: int) -> tuple[Monitor, object]:
    out = open(tmp_path / "events.jsonl", "a+")
    m = Monitor(env.w3, contracts_of(env), tmp_path / "checkpoint.json", out, start_block(env),
                MonitorSettings(confirmations=confirmations, max_blocks=3, window=32))
    return m, out


def drain(m: Monitor) -> None:
    while m.step():
        pass


def test_confirmations_and_a_crash_between_output_and_checkpoint(chain_env, tmp_path, monkeypatch):
    register(chain_env, 4, "10.50.0")
    m, out = monitor(chain_env, tmp_path, confirmations=2)
    drain(m)
    held = scanner.fold(lines(tmp_path / "events.jsonl"))
    assert held == chain_logs(chain_env, confirmations=2) and held != chain_logs(chain_env)
    assert {e["event"] for e in lines(tmp_path / "events.jsonl")} >= {"MemberAdmitted", "NodeAdded", "CameraRegistered"}

    register(chain_env, 3, "10.50.1")
    monkeypatch.setattr(scanner.Checkpoint, "save", lambda self, path: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):  # the lines are out, the checkpoint never written
        m.step()
    out.close()
    monkeypatch.undo()
    written = len(lines(tmp_path / "events.jsonl"))
    m, out = monitor(chain_env, tmp_path, confirmations=2)  # restart: cuts the uncommitted lines, rescans
    assert len(lines(tmp_path / "events.jsonl")) < written
    chain_env.w3.provider.make_request("anvil_mine", [2])
    drain(m)
    out.close()
    got = lines(tmp_path / "events.jsonl")
    assert scanner.fold(got) == chain_logs(chain_env, confirmations=2) == chain_logs(chain_env)
    assert len(got) == len(chain_logs(chain_env)) and not any(e["removed"] for e in got)  # each once


def test_a_reorg_undoes_the_dropped_events_and_rescans(chain_env, tmp_path):
    register(chain_env, 2, "10.51.0")
    snapshot = chain_env.w3.provider.make_request("evm_snapshot", [])["result"]
    register(chain_env, 3, "10.51.1")  # these blocks will be dropped
    m, out = monitor(chain_env, tmp_path, confirmations=0)
    drain(m)
    dropped = chain_logs(chain_env)
    assert scanner.fold(lines(tmp_path / "events.jsonl")) == dropped

    chain_env.w3.provider.make_request("evm_revert", [snapshot])
    chain_env.w3.provider.make_request("anvil_mine", [1])  # a different block at the first dropped height
    register(chain_env, 4, "10.51.2")  # another history replaces them, one block longer
    drain(m)
    out.close()
    got = lines(tmp_path / "events.jsonl")
    removed = [(e["transactionHash"], e["logIndex"]) for e in got if e["removed"]]
    assert removed and set(removed) <= set(dropped)
    assert scanner.fold(got) == chain_logs(chain_env)
    assert {e["args"]["ip"] for e in got if e["event"] == "CameraRegistered" and not e["removed"]} >= {"10.51.2.3"}


def _run_cli(tmp_path, rpc_url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "offchain.cli", "monitor", "--rpc", rpc_url,
            "--deployment", str(tmp_path / "deployment.json"), "--checkpoint", str(tmp_path / "cp.json"),
            "--out", str(tmp_path / "cli.jsonl"), "--confirmations", "0", "--max-blocks", "1", "--poll", "0.05", *extra]


def test_cli_killed_mid_stream_resumes_without_skipping_or_repeating(chain_env, devchain, tmp_path):
    (tmp_path / "deployment.json").write_text(json.dumps(chain_env.deployment.record))
    proc = subprocess.Popen(_run_cli(tmp_path, devchain.rpc_url), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for i in range(12):
            chain_env.consortium(1).register_camera(f"10.52.0.{i}", b"\x01" * 32, b"\x02" * 32)
        deadline = time.monotonic() + 60
        out = tmp_path / "cli.jsonl"
        while (not out.exists() or out.stat().st_size == 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # our own child, by PID, mid-stream
        proc.wait(timeout=10)
        at_kill, on_chain_at_kill = len(lines(out)), len(chain_logs(chain_env))
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    for i in range(5):  # the chain moves on while the monitor is down
        chain_env.consortium(1).register_camera(f"10.52.1.{i}", b"\x01" * 32, b"\x02" * 32)
    done = subprocess.run(_run_cli(tmp_path, devchain.rpc_url, "--once"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = lines(tmp_path / "cli.jsonl")
    keys = [(e["transactionHash"], e["logIndex"]) for e in got]
    assert 0 < at_kill < on_chain_at_kill  # it was killed mid-stream
    assert keys == chain_logs(chain_env)  # every event, in chain order, exactly once
    bad = subprocess.run([sys.executable, "-m", "offchain.cli", "monitor", "--rpc", devchain.rpc_url, "--deployment",
                          str(tmp_path / "missing.json"), "--checkpoint", str(tmp_path / "x.json")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    down = subprocess.run(_run_cli(tmp_path, "http://127.0.0.1:9", "--once"), capture_output=True, text=True, timeout=60)
    assert down.returncode == 2 and "Traceback" not in down.stderr and len(down.stderr.strip().splitlines()) == 1


class _Receiver:
    """A loopback webhook receiver that refuses the first `fail_first` deliveries with a 500."""

    def __init__(self, fail_first: int):
        import http.server
        import threading

        self.fail_first, self.received, self.refused = fail_first, [], 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.refused < receiver.fail_first:
                    receiver.refused += 1
                    self.send_response(500)
                else:
                    receiver.received.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_webhooks_get_every_event_signed_with_retries_and_none_is_lost(chain_env, tmp_path):
    import hmac

    from offchain.monitor.webhooks import DeliveryFailed, Webhooks, event_id, signature

    register(chain_env, 3, "10.53.0")
    secret = b"webhook secret"
    down = Webhooks(["http://127.0.0.1:9/hook"], secret, attempts=3, sleep=lambda s: None, timeout_s=1)
    out = open(tmp_path / "events.jsonl", "a+")
    m = Monitor(chain_env.w3, contracts_of(chain_env), tmp_path / "checkpoint.json", out, start_block(chain_env),
                MonitorSettings(confirmations=0, max_blocks=1000), deliver=down.deliver)
    with pytest.raises(DeliveryFailed):
        m.step()
    out.close()
    assert not (tmp_path / "checkpoint.json").exists() and (tmp_path / "events.jsonl").read_text() == ""

    receiver = _Receiver(fail_first=2)
    try:
        hooks = Webhooks([receiver.url], secret, sleep=lambda s: None)
        out = open(tmp_path / "events.jsonl", "a+")
        m = Monitor(chain_env.w3, contracts_of(chain_env), tmp_path / "checkpoint.json", out, start_block(chain_env),
                    MonitorSettings(confirmations=0, max_blocks=1000), deliver=hooks.deliver)
        drain(m)
        out.close()
    finally:
        receiver.close()
    written = lines(tmp_path / "events.jsonl")
    assert receiver.refused == 2 and len(receiver.received) == len(written) == len(chain_logs(chain_env))
    for (headers, body), line in zip(receiver.received, written):
        assert json.loads(body) == line
        assert hmac.compare_digest(headers["X-FrameLedger-Signature"], signature(secret, body))
        assert headers["X-FrameLedger-Event-Id"] == event_id(line)
