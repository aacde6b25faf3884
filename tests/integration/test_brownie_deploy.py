"""The Brownie deployment script (scripts/deploy.py) against a real Anvil, end to end.

Self-contained: a temporary HOME holds Brownie's data folder (~/.brownie, with one network added
for this test) and py-solc-x's ~/.solcx (the solc-js shim), so nothing in the developer's home is
read or changed. The test starts its own Anvil on a free loopback port; Brownie's development
network for that port *attaches* to it instead of launching its own, so the chain outlives the
Brownie process and the deployed state can be read here with the project's web3. Brownie runs
from its own venv (.venv-brownie: `make brownie-env`), in a subprocess, with HTTP(S)_PROXY pointed
at a closed loopback port so that any attempt to download a compiler fails fast instead of
leaving the machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from web3 import Web3

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BROWNIE_VENV = REPO / ".venv-brownie"
BROWNIE = BROWNIE_VENV / "bin" / "brownie"
NODE_BIN = REPO / "node_modules" / ".bin"
ANVIL = NODE_BIN / "anvil"
ARTIFACTS = REPO / "contracts" / "artifacts"
PLAN = REPO / "chain" / "consortium.json"
NETWORK_ID = "frameledger-test-anvil"
ROLES = ("None", "Authority", "Operator", "Viewer")
STALE_HINT = (
    " (Brownie recompiles only when a contract's own source or the solc version/optimizer changes:"
    " after an @openzeppelin upgrade or an evm_version/remapping change, `rm -rf build`; also check"
    " `make artifacts` is current)"
)
CLOSED_PROXY = "http://127.0.0.1:9"  # discard port: nothing listens, so a download fails at once


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{_tail(proc.stdout)}\n"
        f"--- stderr\n{_tail(proc.stderr)}"
    )
    return proc


@pytest.fixture
def anvil(tmp_path):
    """An Anvil on a free loopback port, set up like Brownie's own development Anvil (base fee 0,
    so Brownie's gas price 0 is accepted). Yields (rpc_url, web3). Stopped by its PID."""
    if not ANVIL.exists():
        pytest.fail(f"{ANVIL} not found: run `make deps` (npm ci installs Anvil)")
    log = (tmp_path / "anvil.log").open("w")
    proc = None
    try:
        for _attempt in range(3):
            port = _free_port()
            proc = subprocess.Popen(
                [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--chain-id", "31337",
                 "--accounts", "10", "--block-base-fee-per-gas", "0"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
            url = f"http://127.0.0.1:{port}"
            w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 10, "proxies": {}}))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if w3.eth.chain_id == 31337:
                        break
                except Exception:
                    time.sleep(0.1)
            if proc.poll() is None and w3.is_connected():
                break
            proc.kill()
            proc.wait()
            proc = None  # port taken in between, or a slow start: try another port
        if proc is None:
            pytest.fail(f"Anvil did not start; log:\n{(tmp_path / 'anvil.log').read_text()[-2000:]}")
        yield url, w3
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _brownie_env(home: Path, deployments: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SOLCX_BINARY_PATH"}
           and k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}}
    env.update(
        HOME=str(home),
        PATH=os.pathsep.join([str(NODE_BIN), str(BROWNIE_VENV / "bin"), env.get("PATH", "/usr/bin:/bin")]),
        HTTP_PROXY=CLOSED_PROXY, HTTPS_PROXY=CLOSED_PROXY, http_proxy=CLOSED_PROXY, https_proxy=CLOSED_PROXY,
        NO_PROXY="127.0.0.1,localhost,::1", no_proxy="127.0.0.1,localhost,::1",
        FRAMELEDGER_DEPLOYMENTS_DIR=str(deployments),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _mask_word(code: bytes, word: bytes) -> tuple[bytes, int]:
    """Zero every occurrence of the 32-byte `word` in `code` (an immutable's value), counting them."""
    out, count, i = bytearray(code), 0, code.find(word)
    while i != -1:
        out[i:i + 32] = bytes(32)
        count += 1
        i = code.find(word, i + 32)
    return bytes(out), count


@pytest.fixture
def brownie() -> Path:
    """Brownie's own venv. Missing is a failure, not a skip: `make test` builds it first."""
    if not BROWNIE.exists():
        pytest.fail(
            f"{BROWNIE} not found: Brownie lives in its own venv; run `make brownie-env` "
            "(`make test` builds it first)"
        )
    return BROWNIE


def test_brownie_deploy_matches_plan_and_artifacts(tmp_path, brownie, anvil):
    rpc_url, w3 = anvil
    port = rpc_url.rsplit(":", 1)[1]
    home = tmp_path / "home"
    home.mkdir()
    deployments = tmp_path / "deployments"
    env = _brownie_env(home, deployments)
    created_by_brownie = [REPO / "interfaces", REPO / "reports"]
    existed_before = {p: p.exists() for p in created_by_brownie}

    # 1. the solc-js shim into $HOME/.solcx, Brownie's network for our Anvil into $HOME/.brownie
    _run([sys.executable, "scripts/solc_shim.py", "install"], env, timeout=60)
    assert (home / ".solcx" / "solc-v0.8.28").exists()
    _run([str(brownie), "networks", "add", "Development", NETWORK_ID,
          "host=http://127.0.0.1", "cmd=anvil", f"port={port}"], env, timeout=120)

    # 2. the deployment itself
    t0 = datetime.now(timezone.utc).replace(microsecond=0)
    proc = _run([str(brownie), "run", "scripts/deploy.py", "--network", NETWORK_ID], env, timeout=400)
    out = proc.stdout + proc.stderr
    assert "Attached to local RPC client" in out, _tail(out)  # used our Anvil, did not launch one
    for p, existed in existed_before.items():
        if not existed:
            assert not p.exists(), f"brownie created {p}: check project_structure in brownie-config.yaml"

    # 3. the record
    chain_id = w3.eth.chain_id
    record_path = deployments / f"{chain_id}.json"
    assert record_path.exists(), f"no record in {deployments}: {sorted(deployments.glob('*'))}\n{_tail(out)}"
    rec = json.loads(record_path.read_text())
    plan = json.loads(PLAN.read_text())
    acct = w3.eth.accounts
    founder = acct[0]

    assert {"chainId", "deployer", "deployedAt", "tool", "contracts", "compiler", "plan",
            "members", "nodes", "quorum"} <= set(rec)
    assert rec["chainId"] == chain_id == 31337
    assert rec["tool"] == "brownie"
    assert rec["deployer"] == founder
    deployed_at = datetime.fromisoformat(rec["deployedAt"])
    assert deployed_at.utcoffset() == timedelta(0)
    assert t0 - timedelta(seconds=5) <= deployed_at <= datetime.now(timezone.utc) + timedelta(seconds=5)
    assert rec["plan"] == "chain/consortium.json"
    assert rec["compiler"]["version"].startswith("0.8.28+commit.")
    assert rec["compiler"]["evmVersion"] == "cancun"
    assert rec["quorum"] == plan["quorum"]
    assert rec["members"] == [{"address": founder, "role": "Authority", "name": plan["founderName"]}] + [
        {"address": acct[m["account"]], "role": m["role"], "name": m["name"]} for m in plan["members"]
    ]
    assert rec["nodes"] == [
        {"address": acct[n["account"]], "operatedBy": acct[n["operatedBy"]], "name": n["name"]}
        for n in plan["nodes"]
    ]
    for name in ("Consortium", "VideoLedger", "BatchLedger"):
        c = rec["contracts"][name]
        assert Web3.is_checksum_address(c["address"])
        receipt = w3.eth.get_transaction_receipt(c["txHash"])
        assert receipt["status"] == 1
        assert receipt["contractAddress"] == c["address"]
        assert receipt["blockNumber"] == c["blockNumber"]
        assert receipt["from"] == founder

    # 4. the deployed state, read over JSON-RPC
    artifacts = {n: json.loads((ARTIFACTS / f"{n}.json").read_text()) for n in ("Consortium", "VideoLedger", "BatchLedger")}
    consortium = w3.eth.contract(rec["contracts"]["Consortium"]["address"], abi=artifacts["Consortium"]["abi"])
    ledger = w3.eth.contract(rec["contracts"]["VideoLedger"]["address"], abi=artifacts["VideoLedger"]["abi"])
    batch_ledger = w3.eth.contract(rec["contracts"]["BatchLedger"]["address"], abi=artifacts["BatchLedger"]["abi"])

    assert ledger.functions.consortium().call() == consortium.address
    assert batch_ledger.functions.consortium().call() == consortium.address
    assert (batch_ledger.functions.maxFutureMs().call(), batch_ledger.functions.maxWindowMs().call()) == (
        plan["maxFutureMs"], plan["maxWindowMs"])
    governor = consortium.functions.GOVERNOR_ROLE().call()
    assert consortium.functions.hasRole(governor, founder).call()
    assert consortium.functions.admissionThreshold().call() == plan["admissionThreshold"]
    assert consortium.functions.quorum().call() == plan["quorum"]

    founder_m = consortium.functions.member(founder).call()
    assert (ROLES[founder_m[0]], founder_m[1], founder_m[4]) == ("Authority", True, plan["founderName"])
    for m in plan["members"]:
        addr = acct[m["account"]]
        role, active, parent, admitted_at, name = consortium.functions.member(addr).call()
        assert (ROLES[role], active, parent, name) == (m["role"], True, acct[m["parent"]], m["name"]), m
        assert admitted_at > 0
        assert consortium.functions.isMember(addr).call()
        assert consortium.functions.application(addr).call()[1] is False  # closed: admitted
    assert set(consortium.functions.members().call()) == {founder} | {acct[m["account"]] for m in plan["members"]}

    assert consortium.functions.nodes().call() == [acct[n["account"]] for n in plan["nodes"]]
    for n in plan["nodes"]:
        assert consortium.functions.isNode(acct[n["account"]]).call()
        assert consortium.functions.nodeOperator(acct[n["account"]]).call() == acct[n["operatedBy"]]

    # 5. Brownie compiled exactly what scripts/compile.js did (metadata hash included)
    consortium_code = bytes(w3.eth.get_code(consortium.address))
    assert consortium_code == bytes.fromhex(artifacts["Consortium"]["deployedBytecode"][2:]), (
        "Consortium runtime bytecode differs from contracts/artifacts/Consortium.json" + STALE_HINT
    )
    ledger_code = bytes(w3.eth.get_code(ledger.address))
    expected = bytes.fromhex(artifacts["VideoLedger"]["deployedBytecode"][2:])
    masked, slots = _mask_word(ledger_code, bytes(12) + bytes.fromhex(consortium.address[2:]))
    assert slots >= 1, "the immutable `consortium` address was not found in VideoLedger's code"
    assert len(ledger_code) == len(expected)
    assert masked == expected, (
        "VideoLedger runtime bytecode differs from contracts/artifacts/VideoLedger.json "
        "beyond the immutable consortium address" + STALE_HINT
    )
