"""`frameledger up SITE.toml`: one file brings up a chain, the deployment, three nodes and a
camera whose blocks become final; SIGTERM stops all of it; a second `up` resumes the same
consortium. And a malformed site file is one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from offchain.camera.samples import sample_path

pytestmark = pytest.mark.slow

SITE = """
dir = "site"
rpc_port = 0
window_ms = 5000
status_every_s = 2

[[cameras]]
ip = "10.0.0.1"
source = "sample:vtest"
speed = 1
max_frames = 60
group = "lobby"
"""


def _up(site: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMELEDGER_")}
    return subprocess.Popen([sys.executable, "-m", "offchain.cli", "up", str(site), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _until_final(proc: subprocess.Popen, blocks: int, timeout: float) -> tuple[dict, dict]:
    deadline = time.monotonic() + timeout
    up = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if not line.startswith("{"):
            continue
        msg = json.loads(line)
        up = msg.get("up", up)
        status = msg.get("status")
        if status and status["cameras"] and (status["cameras"][0]["lastBlock"] or {}).get("height", 0) >= blocks \
                and status["cameras"][0]["lastBlock"]["finalized"]:
            return up, status
    raise AssertionError(f"no final block {blocks} in time; stderr: {proc.stderr.read() if proc.poll() is not None else ''}")


def _stop(proc: subprocess.Popen) -> int:
    os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def test_up_runs_a_consortium_and_resumes_it(tmp_path):
    sample_path("vtest")
    site = tmp_path / "site.toml"
    site.write_text(SITE)
    proc = _up(site)
    try:
        up, status = _until_final(proc, 2, timeout=240)
    finally:
        rc = _stop(proc)
    assert rc == 0
    assert [n["name"] for n in up["nodes"]] == ["node-authority", "node-bank", "node-customer"]
    assert status["healthy"] and all(n["up"] for n in status["nodes"]) and status["genesisSealed"]
    for node in up["nodes"]:  # stopped with it
        with pytest.raises(httpx.HTTPError):
            httpx.get(node["api"] + "/health", timeout=2)
    assert "BEGIN" not in (tmp_path / "site" / "nodes" / "node-bank" / "node-key.json").read_text()
    assert (tmp_path / "site" / "chain-state.json").is_file()

    again = _up(site)
    try:
        up2, status2 = _until_final(again, 1, timeout=120)
    finally:
        assert _stop(again) == 0
    assert up2["deployment"] == up["deployment"] and status2["consortium"] == status["consortium"]
    assert status2["cameras"][0]["blocks"] >= 2  # the first run's blocks are still on the chain


def test_a_bad_site_file_is_one_line(tmp_path):
    site = tmp_path / "bad.toml"
    site.write_text('dir = "x"\nwindow = 5\n')
    out = subprocess.run([sys.executable, "-m", "offchain.cli", "up", str(site)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error:") and "unknown keys window" in out.stderr
    assert out.stderr.count("\n") == 1
    site.write_text('[[cameras]]\nip = "../etc"\nsource = "x"\n')
    out = subprocess.run([sys.executable, "-m", "offchain.cli", "up", str(site)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "cannot name a keystore file" in out.stderr and "Traceback" not in out.stderr
