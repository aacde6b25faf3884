"""Operator commands against a real Anvil and the real contracts, through `frameledger …` argv:
who may do what (the contract's named reverts reach the operator as exit 1 and one line), what
the tables and JSON say, and that bad input is one line and exit 2, never a traceback."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from offchain.cli import main
from offchain.core.block import genesis_hash
from offchain.node.config import NodeConfig

pytestmark = pytest.mark.slow

PASS = "walk-the-plank"
ROLES = {"authority": 0, "bank": 1, "customer": 2, "auditor": 6, "outsider": 7}


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, str]:
    """Keystores of dev accounts in the format `account dev` writes, with a light scrypt (2^12
    instead of 2^18) so that the hundred commands below do not spend minutes deriving keys."""
    d = tmp_path_factory.mktemp("keys")
    for name, index in ROLES.items():
        (d / f"{name}.json").write_text(json.dumps(Account.encrypt(_dev_key(index), PASS, iterations=2**12)))
    return {name: str(d / f"{name}.json") for name in ROLES}


def test_account_commands_write_encrypted_keystores(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FRAMELEDGER_KEYSTORE_PASSPHRASE", PASS)
    rc, out, _ = run(capsys, "account", "dev", "--index", "3", "--keystore", str(tmp_path / "dev3.json"))
    assert rc == 0 and out.strip() == Account.from_key(_dev_key(3)).address
    assert _dev_key(3).removeprefix("0x") not in (tmp_path / "dev3.json").read_text()
    assert stat.S_IMODE((tmp_path / "dev3.json").stat().st_mode) == 0o600
    new = run_json(capsys, "account", "new", "--keystore", str(tmp_path / "new.json"))
    assert run_json(capsys, "account", "show", "--keystore", str(tmp_path / "new.json"))["address"] == new["address"]
    rc, _, err = run(capsys, "account", "new", "--keystore", str(tmp_path / "new.json"))
    assert rc == 2 and "exists" in err
    monkeypatch.delenv("FRAMELEDGER_KEYSTORE_PASSPHRASE")
    rc, _, err = run(capsys, "account", "new", "--keystore", str(tmp_path / "other.json"))
    assert rc == 2 and "no password" in err and not (tmp_path / "other.json").exists()


@pytest.fixture
def site(devchain, w3, chain_env, keys, tmp_path, monkeypatch, capsys):
    """A fresh deployment by the founder's keystore, on a chain reverted after the test."""
    monkeypatch.setenv("FRAMELEDGER_KEYSTORE_PASSPHRASE", PASS)
    monkeypatch.setenv("FRAMELEDGER_RPC", devchain.rpc_url)
    assert main(["deploy", "--keystore", keys["authority"], "--out", str(tmp_path / "dep"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("FRAMELEDGER_DEPLOYMENT", record["recordPath"])
    return record


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def run_json(capsys, *argv: str):
    rc, out, err = run(capsys, *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


def refused(capsys, error: str, *argv: str) -> None:
    rc, out, err = run(capsys, *argv)
    assert rc == 1, (out, err)
    assert error in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_deploy_writes_the_record_and_founds_the_consortium(site, capsys, keys):
    assert Path(site["recordPath"]).name == "31337.json" and json.loads(Path(site["recordPath"]).read_text())["chainId"] == 31337
    listed = run_json(capsys, "member", "list")
    assert [m["role"] for m in listed["members"]] == ["authority"] and listed["threshold"] == 1
    assert run_json(capsys, "quorum", "show") == {"quorum": 1, "nodes": 0}


def test_multi_level_admission_takes_its_confirmations(site, capsys, keys):
    k = keys
    refused(capsys, "InvalidParent", "member", "apply", "--role", "viewer", "--parent", k["authority"], "--name", "V",
            "--keystore", k["auditor"])
    for member in ("bank", "customer"):
        app = run_json(capsys, "member", "apply", "--role", "operator", "--parent", k["authority"], "--name", member,
                       "--keystore", k[member])
        assert app["open"] and app["confirmations"] == 0 and not app["admitted"]
        refused(capsys, "NotEligibleToConfirm", "member", "confirm", k[member], "--keystore", k["outsider"])
        assert run_json(capsys, "member", "confirm", k[member], "--keystore", k["authority"])["admitted"]
    refused(capsys, "AccessControlUnauthorizedAccount", "member", "threshold", "2", "--keystore", k["bank"])
    assert run_json(capsys, "member", "threshold", "2", "--keystore", k["authority"]) == {"threshold": 2}
    run_json(capsys, "member", "apply", "--role", "viewer", "--parent", k["bank"], "--name", "Auditor", "--keystore", k["auditor"])
    first = run_json(capsys, "member", "confirm", k["auditor"], "--keystore", k["bank"])
    assert first["open"] and first["confirmations"] == 1 and first["parentConfirmed"] and not first["admitted"]
    pending = run_json(capsys, "member", "list")["applications"]
    assert [(a["name"], a["confirmations"], a["threshold"]) for a in pending] == [("Auditor", 1, 2)]
    refused(capsys, "AlreadyConfirmed", "member", "confirm", k["auditor"], "--keystore", k["bank"])
    second = run_json(capsys, "member", "confirm", k["auditor"], "--keystore", k["customer"])
    assert second["admitted"] and not second["open"] and second["confirmations"] == 2
    listed = run_json(capsys, "member", "list")
    assert {m["name"]: m["role"] for m in listed["members"]}["Auditor"] == "viewer" and listed["applications"] == []


def _admit_bank(capsys, k):
    run_json(capsys, "member", "apply", "--role", "operator", "--parent", k["authority"], "--name", "Bank", "--keystore", k["bank"])
    run_json(capsys, "member", "confirm", k["bank"], "--keystore", k["authority"])


def test_nodes_and_quorum(site, capsys, keys):
    k = keys
    _admit_bank(capsys, k)
    nodes = [Account.create().address for _ in range(3)]
    refused(capsys, "AccessControlUnauthorizedAccount", "node", "add", nodes[0], "--operator", k["bank"], "--keystore", k["bank"])
    refused(capsys, "NotActiveMember", "node", "add", nodes[0], "--operator", k["outsider"], "--keystore", k["authority"])
    for n in nodes:
        rows = run_json(capsys, "node", "add", n, "--operator", k["bank"], "--keystore", k["authority"])
    assert [r["address"] for r in rows] == nodes and {r["operator"] for r in rows} == {"Bank"}
    refused(capsys, "NodeAlreadyRegistered", "node", "add", nodes[0], "--operator", k["bank"], "--keystore", k["authority"])
    refused(capsys, "InvalidQuorum", "quorum", "set", "4", "--keystore", k["authority"])
    assert run_json(capsys, "quorum", "set", "3", "--keystore", k["authority"]) == {"quorum": 3, "nodes": 3}
    refused(capsys, "InvalidQuorum", "node", "remove", nodes[2], "--keystore", k["authority"])
    run_json(capsys, "quorum", "set", "2", "--keystore", k["authority"])
    assert [r["address"] for r in run_json(capsys, "node", "remove", nodes[2], "--keystore", k["authority"])] == nodes[:2]
    refused(capsys, "NotANode", "node", "remove", nodes[2], "--keystore", k["authority"])
    rc, out, _ = run(capsys, "node", "list")
    assert rc == 0 and "2 registered node(s)" in out and nodes[1] in out


def test_cameras_and_genesis(site, capsys, keys, w3):
    k = keys
    _admit_bank(capsys, k)
    pub, pub2 = "11" * 32, "22" * 32
    refused(capsys, "NotAllowedToRegisterCameras", "camera", "register", "--ip", "10.0.0.9", "--pubkey", pub,
            "--keystore", k["outsider"])
    cam = run_json(capsys, "camera", "register", "--ip", "10.0.0.9", "--pubkey", pub, "--group", "lobby", "--keystore", k["bank"])
    assert cam["owner"] == Account.from_key(_dev_key(1)).address and cam["group"] == "lobby" and cam["active"]
    refused(capsys, "CameraAlreadyRegistered", "camera", "register", "--ip", "10.0.0.9", "--pubkey", pub, "--keystore", k["bank"])
    refused(capsys, "NotCameraOwner", "camera", "rotate-key", "10.0.0.9", "--pubkey", pub2, "--keystore", k["authority"])
    assert run_json(capsys, "camera", "rotate-key", "10.0.0.9", "--pubkey", pub2, "--keystore", k["bank"])["devicePublicKey"] == pub2
    assert not run_json(capsys, "genesis", "show")["sealed"]
    refused(capsys, "AccessControlUnauthorizedAccount", "genesis", "seal", "--keystore", k["bank"])
    sealed = run_json(capsys, "genesis", "seal", "--keystore", k["authority"])
    assert sealed["sealed"] and sealed["cameras"] == ["10.0.0.9"]
    assert sealed["hash"] == "0x" + genesis_hash(["10.0.0.9"], sealed["timestamp"]).hex()
    assert run_json(capsys, "genesis", "show", "--as", k["bank"])["hash"] == sealed["hash"]
    assert run_json(capsys, "genesis", "show").get("hidden") is True
    rc, _, err = run(capsys, "genesis", "show", "--as", k["outsider"])
    assert rc == 2 and "neither a member nor a node" in err
    refused(capsys, "GenesisAlreadySealed", "genesis", "seal", "--keystore", k["authority"])
    refused(capsys, "NotCameraOwner", "camera", "revoke", "10.0.0.9", "--keystore", k["outsider"])
    assert run_json(capsys, "camera", "revoke", "10.0.0.9", "--keystore", k["authority"])["active"] is False
    listed = run_json(capsys, "camera", "list")
    assert [(c["ip"], c["active"], c["headTimestamp"] == sealed["timestamp"]) for c in listed] == [("10.0.0.9", False, True)]


def test_status_names_what_is_wrong(site, capsys, keys, tmp_path):
    k = keys
    _admit_bank(capsys, k)
    node = Account.create().address
    run_json(capsys, "node", "add", node, "--operator", k["bank"], "--keystore", k["authority"])
    silent = f"http://127.0.0.1:{_free_port()}"
    rc, out, _ = run(capsys, "status", "--api", silent)
    assert rc == 1 and "does not answer" in out and "fewer nodes up than the quorum" in out
    rc, out, _ = run(capsys, "status")  # nothing asked of the nodes: only the chain's view
    assert rc == 0 and "healthy" in out


def test_node_init_writes_config_and_encrypted_key(site, capsys, tmp_path, monkeypatch):
    d = tmp_path / "n1"
    info = run_json(capsys, "node", "init", "--name", "n1", "--dir", str(d), "--ingest-port", "17001", "--api-port", "18001",
                    "--peer", "http://127.0.0.1:18002", "--window-ms", "10000")
    key_file = d / "node-key.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    config = NodeConfig.load(d / "node.toml", env={})
    assert (config.window_ms, config.peers, config.private_key, config.private_key_file) == (10000, ["http://127.0.0.1:18002"], "", "")
    key = config.key()
    assert Account.from_key(key).address == info["address"]
    secret = key.removeprefix("0x")
    assert secret not in (d / "node.toml").read_text() and secret not in key_file.read_text() and secret not in json.dumps(info)
    rc, _, err = run(capsys, "node", "init", "--name", "n1", "--dir", str(d), "--ingest-port", "17001", "--api-port", "18001")
    assert rc == 2 and "exists" in err
    monkeypatch.setenv("FRAMELEDGER_KEYSTORE_PASSPHRASE", "not-the-password")
    with pytest.raises(Exception, match="wrong password"):
        NodeConfig.load(d / "node.toml", env={}).key()


def _dev_key(i: int) -> str:
    from offchain.chain.devchain import dev_private_keys

    return dev_private_keys(i + 1)[i]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv, says", [
    (["member", "list", "--rpc", "http://127.0.0.1:1"], "no JSON-RPC answer"),
    (["member", "list", "--rpc", "ftp://x"], "expected an http(s)://"),
    (["member", "list", "--deployment", "/nonexistent/31337.json"], "no deployment record"),
    (["member", "apply", "--role", "emperor", "--name", "x", "--keystore", "{authority}"], "unknown role"),
    (["member", "apply", "--role", "viewer", "--name", "x", "--keystore", "{authority}"], "applies under a parent"),
    (["member", "confirm", "0x1234", "--keystore", "{authority}"], "neither a 0x address nor a keystore"),
    (["member", "confirm", "{bank}", "--keystore", "/nonexistent.json"], "no keystore at"),
    (["member", "confirm", "{bank}", "--keystore", "{authority}", "--password-env", "FL_TEST_WRONG"], "wrong password"),
    (["member", "confirm", "{bank}", "--keystore", "{authority}", "--password-file", "{empty}"], "is empty"),
    (["camera", "register", "--ip", "1.2.3.4", "--pubkey", "zz", "--keystore", "{bank}"], "must be hex"),
    (["camera", "register", "--ip", "1.2.3.4", "--pubkey", "ab" * 31, "--keystore", "{bank}"], "32-byte"),
    (["camera", "register", "--ip", "1.2.3.4", "--pubkey", "ab" * 32, "--group", "g" * 33, "--keystore", "{bank}"], "at most 32"),
    (["camera", "revoke", "0x12", "--keystore", "{bank}"], "UnknownCamera"),
    (["node", "--config", "/nonexistent/node.toml"], "cannot read node config"),
    (["node"], "runs a node with --config"),
    (["deploy", "--plan", "{empty}", "--keystore", "{authority}"], "cannot read the plan"),
    (["node", "init", "--name", "a/b", "--dir", "{tmp}/x", "--ingest-port", "1", "--api-port", "2"], "--name must be"),
    (["deploy", "--plan", "/nonexistent/plan.json", "--keystore", "{authority}"], "cannot read the plan"),
    (["chain", "fund", "{bank}", "--eth", "-1"], "--eth must be"),
])
def test_bad_input_is_one_line(site, capsys, keys, tmp_path, monkeypatch, argv, says):
    empty = tmp_path / "empty"
    empty.write_text("")
    monkeypatch.setenv("FL_TEST_WRONG", "nope")
    argv = [a.format(**keys, empty=empty, tmp=tmp_path) for a in argv]
    rc, out, err = run(capsys, *argv)
    assert rc in (1, 2) and says in err, (rc, out, err)
    assert err.count("\n") == 1 and err.startswith("error:") and "Traceback" not in err


def test_chain_up_answers_and_stops_on_sigterm(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run([sys.executable, "-m", "offchain.cli", "chain", "up", "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert busy.returncode == 2 and busy.stderr.startswith("error:") and "Traceback" not in busy.stderr
    state = tmp_path / "state.json"
    chain = subprocess.Popen([sys.executable, "-m", "offchain.cli", "chain", "up", "--port", str(_free_port()),
                              "--state", str(state), "--json"], stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(chain.stdout.readline())
        assert ready["rpc"].startswith("http://127.0.0.1:") and ready["chainId"] == 31337
    finally:
        chain.terminate()
        assert chain.wait(timeout=30) == 0
    assert state.is_file() and json.loads(state.read_text())


def test_deploy_with_dev_accounts_carries_out_the_whole_plan(chain_env, devchain, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FRAMELEDGER_RPC", devchain.rpc_url)
    rec = run_json(capsys, "deploy", "--dev-accounts", "--out", str(tmp_path))
    assert (len(rec["members"]), len(rec["nodes"]), rec["quorum"]) == (3, 3, 2)
    monkeypatch.setenv("FRAMELEDGER_DEPLOYMENT", rec["recordPath"])
    assert run_json(capsys, "quorum", "show") == {"quorum": 2, "nodes": 3}
    assert [m["name"] for m in run_json(capsys, "member", "list")["members"]] == ["Consortium authority", "Bank", "Customer"]


def test_node_with_a_bad_config_is_one_line(tmp_path, capsys):
    config = tmp_path / "node.toml"
    config.write_text('name = "n"\nbogus = 1\n')
    rc, _, err = run(capsys, "node", "--config", str(config))
    assert rc == 2 and "unknown node config keys: bogus" in err and err.count("\n") == 1
    config.write_text('name = "n"\ndata_dir = "d"\nrpc_url = "http://127.0.0.1:1"\ndeployment = "x.json"\nwindow_ms = "soon"\n')
    rc, _, err = run(capsys, "node", "--config", str(config))
    assert rc == 2 and "window_ms" in err and "Traceback" not in err
