"""The README's "Run your own consortium" block, run literally in bash, so the walkthrough cannot
drift from the commands. Only FL_DIR (a temp dir) and the ports (FL_RPC_PORT, FL_PORT) are chosen
here, through the variables the walkthrough itself reads."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offchain.camera.samples import sample_path
from offchain.paths import REPO_ROOT

pytestmark = pytest.mark.slow

BEGIN, END = "<!-- walkthrough:begin -->", "<!-- walkthrough:end -->"


def walkthrough_block() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index(BEGIN) + len(BEGIN): readme.index(END)]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the walkthrough section has no ```sh block"
    return match.group(1)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_base(span: int) -> int:
    """A base P with P+1 .. P+span all free on loopback."""
    for base in range(21000 + os.getpid() % 500 * 40, 60000, 97):
        if all(_free(base + i) for i in range(1, span + 1)):
            return base
    raise RuntimeError("no free port range")


def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    sample_path("vtest")  # fetched into the media cache before the clock of the walkthrough starts
    site = tmp_path / "site"
    base = free_port_base(14)
    rpc_port = base + 14
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMELEDGER_")}
    env.update(FL_DIR=str(site), FL_RPC_PORT=str(rpc_port), FL_PORT=str(base),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    script = tmp_path / "walkthrough.sh"
    script.write_text(walkthrough_block())
    proc = subprocess.Popen(["bash", "-e", "-o", "pipefail", str(script)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=420)
    finally:
        _stop_group(proc)
    assert proc.returncode == 0, f"walkthrough failed ({proc.returncode}):\n{out[-6000:]}"
    assert re.search(r"Auditor\s+viewer\s+\S+\s+2/2\s+admitted", out), out[-3000:]
    assert re.search(r"Auditor\s+viewer\s+\S+\s+1/2\s+open", out), "the first confirmation should leave it open"
    assert "quorum 2 of 3 node(s)" in out
    assert out.count("healthy") >= 2, out[-3000:]
    assert out.count("VERDICT: VERIFIED") == 2, out[-3000:]
    assert (site / "chain-state.json").is_file()
    _chain_keeps_state(site, rpc_port, env)


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop what the walkthrough left running: its own process group (it started in a new session)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _chain_keeps_state(site: Path, rpc_port: int, env: dict[str, str]) -> None:
    """`chain up --state` again: the camera and its blocks are still there."""
    chain = subprocess.Popen(["frameledger", "chain", "up", "--port", str(rpc_port), "--state", "chain-state.json", "--json"],
                             cwd=site, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        ready = json.loads(chain.stdout.readline())
        listed = subprocess.run(["frameledger", "camera", "list", "--json", "--rpc", ready["rpc"],
                                 "--deployment", str(site / "deployments" / "31337.json")],
                                env=env, capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        cameras = json.loads(listed.stdout)
        assert [c["ip"] for c in cameras] == ["10.0.0.1"] and cameras[0]["blocks"] >= 3
    finally:
        chain.send_signal(signal.SIGTERM)
        chain.wait(timeout=20)
