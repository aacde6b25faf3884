"""Static checks on the Besu QBFT dev network in chain/besu/.

Besu cannot be installed or run on this machine, so these tests check what can be checked
without it, from first principles: the validators named in the genesis extraData and the peers
in the node allowlist are re-derived from the node key files with eth_keys; the RLP encoder is
checked against the extraData examples in Besu's own QBFT documentation; the forks the genesis
enables are compared with the evmVersion the contract artifacts were compiled for; every host
a node binds or advertises must be loopback; every funded account must be allowed to send.

Each check is a function over a network directory. The tests run them on the committed files
and, to show that they can fail, on copies with one thing broken.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import rlp
from eth_keys import keys

REPO = Path(__file__).resolve().parents[2]
BESU = REPO / "chain" / "besu"
ARTIFACTS = REPO / "contracts" / "artifacts"
PLAN = REPO / "chain" / "consortium.json"

LOOPBACK = "127.0.0.1"
RPC_APIS = {"ETH", "NET", "QBFT", "WEB3", "TXPOOL"}
ENODE = re.compile(r"^enode://([0-9a-f]{128})@([^:@/?]+):(\d+)$")
EIP170_CODE_LIMIT = 24576

# solc evmVersion names, oldest first, with the genesis key that activates each in Besu.
# Besu's fork definitions are cumulative: activating one activates everything before it.
# "paris" has no key in a QBFT genesis; its EVM changes come with shanghai.
EVM_FORKS = [
    ("homestead", "homesteadBlock"),
    ("tangerineWhistle", "eip150Block"),
    ("spuriousDragon", "eip158Block"),
    ("byzantium", "byzantiumBlock"),
    ("constantinople", "constantinopleBlock"),
    ("petersburg", "petersburgBlock"),
    ("istanbul", "istanbulBlock"),
    ("berlin", "berlinBlock"),
    ("london", "londonBlock"),
    ("paris", None),
    ("shanghai", "shanghaiTime"),
    ("cancun", "cancunTime"),
    ("prague", "pragueTime"),
    ("osaka", "osakaTime"),
]


def _load_generator():
    """chain/besu/make_genesis.py as a module (it is a script, not part of a package)."""
    name = "frameledger_besu_make_genesis"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BESU / "make_genesis.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


@dataclass
class Network:
    root: Path
    genesis: dict
    permissions: dict
    configs: dict[str, dict]  # node name -> parsed config.toml
    node_keys: dict[str, keys.PrivateKey]  # node name -> key read from its key file

    @classmethod
    def load(cls, root: Path) -> "Network":
        node_dirs = sorted((root / "nodes").glob("node-*"), key=lambda p: int(p.name.split("-")[1]))
        configs, node_keys = {}, {}
        for d in node_dirs:
            configs[d.name] = tomllib.loads((d / "config.toml").read_text())
            node_keys[d.name] = _read_key(d / "key")
        return cls(
            root=root,
            genesis=json.loads((root / "genesis.json").read_text()),
            permissions=tomllib.loads((root / "permissions_config.toml").read_text()),
            configs=configs,
            node_keys=node_keys,
        )

    def path(self, value: str) -> Path:
        """A path from a config file; nodes are started from chain/besu/, so relative to it."""
        return (self.root / value).resolve()

    def enode_of(self, name: str) -> str:
        pub = self.node_keys[name].public_key.to_bytes().hex()
        return f"enode://{pub}@{LOOPBACK}:{self.configs[name]['p2p-port']}"


def _read_key(path: Path) -> keys.PrivateKey:
    text = path.read_text().strip()
    assert re.fullmatch(r"(0x)?[0-9a-f]{64}", text), f"{path}: not a 32-byte hex key"
    return keys.PrivateKey(bytes.fromhex(text.removeprefix("0x")))


def _parse_enode(url: str) -> tuple[str, str, int]:
    m = ENODE.match(url)
    assert m, f"not an enode URL: {url}"
    return m.group(1), m.group(2), int(m.group(3))


# ------------------------------------------------------------------------------------- checks


def check_nodes(net: Network) -> None:
    assert list(net.configs) == ["node-1", "node-2", "node-3", "node-4"], f"nodes: {list(net.configs)}"
    assert len({k.to_bytes() for k in net.node_keys.values()}) == 4, "node keys must differ"


def check_extra_data(net: Network) -> None:
    raw = bytes.fromhex(net.genesis["extraData"].removeprefix("0x"))
    decoded = rlp.decode(raw)
    assert rlp.encode(decoded) == raw, "extraData is not canonical RLP"
    assert isinstance(decoded, list) and len(decoded) == 5, "QBFT extraData is [vanity, validators, vote, round, seals]"
    vanity, validators, vote, round_, seals = decoded
    assert vanity == b"\x00" * 32, "vanity must be 32 zero bytes"
    assert vote == [] and round_ == b"" and seals == [], "a genesis has no vote, round 0 and no seals"
    expected = [bytes.fromhex(net.node_keys[n].public_key.to_address()[2:]) for n in net.configs]
    assert validators == expected, "extraData validators must be exactly the node-1..node-4 key addresses"


def check_nodes_allowlist(net: Network) -> None:
    listed = net.permissions["nodes-allowlist"]
    assert len(listed) == len(set(listed)) == 4, f"nodes-allowlist: {len(listed)} entries, want 4 distinct"
    by_pubkey = {}
    for url in listed:
        pub, host, port = _parse_enode(url)
        assert host == LOOPBACK, f"nodes-allowlist: {url}"
        by_pubkey[pub] = port
    for name, key in net.node_keys.items():
        pub = key.public_key.to_bytes().hex()
        assert pub in by_pubkey, f"{name}'s public key is not in nodes-allowlist"
        assert by_pubkey[pub] == net.configs[name]["p2p-port"], f"{name}'s enode has the wrong port"
    assert len(by_pubkey) == len(net.node_keys), "nodes-allowlist lists a key that no node has"


def check_loopback_only(net: Network) -> None:
    for name, cfg in net.configs.items():
        for option, value in cfg.items():
            if option.endswith(("-host", "-interface")):
                assert value == LOOPBACK, f"{name}: {option}={value!r}"
        # Besu's defaults: RPC on 127.0.0.1, but P2P listening on 0.0.0.0 - so all three are required.
        assert cfg.get("rpc-http-host") == LOOPBACK, f"{name}: rpc-http-host"
        assert cfg.get("p2p-host") == LOOPBACK, f"{name}: p2p-host (the host its enode advertises)"
        assert cfg.get("p2p-interface") == LOOPBACK, f"{name}: P2P would listen on every interface"
        assert set(cfg.get("host-allowlist", [])) <= {"localhost", LOOPBACK}, f"{name}: host-allowlist"
        for url in cfg["bootnodes"]:
            assert _parse_enode(url)[1] == LOOPBACK, f"{name}: bootnode {url}"
        for service in ("rpc-ws-enabled", "graphql-http-enabled", "metrics-enabled", "engine-rpc-enabled"):
            assert cfg.get(service, False) is False, f"{name}: {service} opens another listener"
        assert set(cfg["rpc-http-api"]) == RPC_APIS, f"{name}: rpc-http-api={cfg['rpc-http-api']}"


def check_ports_and_paths(net: Network) -> None:
    p2p = [c["p2p-port"] for c in net.configs.values()]
    rpc = [c["rpc-http-port"] for c in net.configs.values()]
    assert len(set(p2p)) == len(set(rpc)) == 4 and not set(p2p) & set(rpc), "ports must all differ"
    assert net.configs["node-1"]["rpc-http-port"] == 8545, "FrameLedger's default --rpc is node-1 on 8545"
    data = [net.path(c["data-path"]) for c in net.configs.values()]
    assert len(set(data)) == 4, "each node needs its own data-path"
    for name, cfg in net.configs.items():
        assert net.path(cfg["node-private-key-file"]) == (net.root / "nodes" / name / "key").resolve(), name
        assert net.path(cfg["genesis-file"]) == (net.root / "genesis.json").resolve(), name
        assert cfg.get("min-gas-price") == 0, f"{name}: min-gas-price must be 0 on a zero-fee chain"
        for kind in ("nodes", "accounts"):
            assert cfg[f"permissions-{kind}-config-file-enabled"] is True, f"{name}: {kind} permissioning off"
            assert net.path(cfg[f"permissions-{kind}-config-file"]) == (net.root / "permissions_config.toml").resolve(), name


def check_bootnodes(net: Network) -> None:
    node1 = net.enode_of("node-1")
    for name, cfg in net.configs.items():
        assert cfg["bootnodes"] == [node1], f"{name} must boot from node-1"
    assert node1 in net.permissions["nodes-allowlist"], "Besu will not start if a bootnode is not allowlisted"


def enabled_evm_versions(genesis: dict) -> list[str]:
    config = genesis["config"]
    names = [n for n, _ in EVM_FORKS]
    newest = -1
    for i, (_, key) in enumerate(EVM_FORKS):
        if key is not None and config.get(key) == 0:
            newest = i
    return names[: newest + 1]


def check_forks(net: Network, artifacts: Path = ARTIFACTS) -> None:
    config = net.genesis["config"]
    for key in ("berlinBlock", "londonBlock", "shanghaiTime", "cancunTime"):
        assert config.get(key) == 0, f"{key} must be 0"
    enabled = enabled_evm_versions(net.genesis)
    found = 0
    for path in sorted(artifacts.glob("*.json")):
        evm = json.loads(path.read_text())["compiler"]["settings"]["evmVersion"]
        assert evm in enabled, f"{path.name} is compiled for {evm}; the genesis enables {enabled[-1]} and older"
        found += 1
    assert found, "no contract artifacts"
    # Prague and later are left out on purpose (scripts/compile.js): they need a newer Besu.
    assert enabled[-1] == "cancun", f"genesis goes to {enabled[-1]}"
    for key in ("pragueTime", "osakaTime"):
        assert key not in config, f"{key} would schedule a fork the contracts and docs do not target"


def check_chain_params(net: Network, artifacts: Path = ARTIFACTS) -> None:
    g, config = net.genesis, net.genesis["config"]
    assert config["chainId"] == 1337, "private chain id 1337 (README, deployments/1337.json)"
    assert config["qbft"] == {"blockperiodseconds": 2, "epochlength": 30000, "requesttimeoutseconds": 4}, config["qbft"]
    assert config.get("zeroBaseFee") is True, "zeroBaseFee"
    assert int(g["gasLimit"], 16) >= 30_000_000, f"gasLimit {int(g['gasLimit'], 16)} < 30M"
    limit = config.get("contractSizeLimit", EIP170_CODE_LIMIT)
    for path in artifacts.glob("*.json"):
        size = len(json.loads(path.read_text())["deployedBytecode"].removeprefix("0x")) // 2
        assert size <= limit, f"{path.name}: {size} bytes of code exceeds the {limit}-byte limit"


def check_alloc_allowlisted(net: Network) -> None:
    allowed = {a.lower() for a in net.permissions["accounts-allowlist"]}
    assert all(re.fullmatch(r"0x[0-9a-f]{40}", a) for a in allowed)
    funded = {"0x" + a.lower().removeprefix("0x") for a in net.genesis["alloc"]}
    assert funded, "no alloc"
    missing = funded - allowed
    assert not missing, f"funded but not allowed to send: {sorted(missing)}"
    plan = json.loads(PLAN.read_text())
    used = {0} | {m["account"] for m in plan.get("members", [])} | {n["account"] for n in plan.get("nodes", [])}
    assert len(funded) == max(used) + 1, "one funded account per plan account index"


ALL_CHECKS = [
    check_nodes,
    check_extra_data,
    check_nodes_allowlist,
    check_loopback_only,
    check_ports_and_paths,
    check_bootnodes,
    check_forks,
    check_chain_params,
    check_alloc_allowlisted,
]


# -------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def net() -> Network:
    return Network.load(BESU)


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda f: f.__name__)
def test_committed_network(net, check):
    check(net)


def test_generated_files_are_current():
    """Hand edits to generated files, or a script change without a rerun, show up here."""
    r = subprocess.run(
        [sys.executable, str(BESU / "make_genesis.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr


def test_extra_data_encoder_matches_besu_docs():
    """The two QBFT genesis extraData values in Besu's 'Configure QBFT consensus' page."""
    gen = _load_generator()
    docs_validators = [
        "0x64a702e6263b7297a96638cac6ae65e6541f4169",
        "0x3923390ad55e90c237593b3b0e401f3b08a03185",
        "0xaefdb9a738c9f433e5b6b212a6d62f6370c2f692",
        "0xc7eeb9a4e00ce683cf93039b212648e01c6c6b78",
    ]
    assert gen.qbft_extra_data(docs_validators) == (
        "0xf87aa00000000000000000000000000000000000000000000000000000000000000000f85494"
        "64a702e6263b7297a96638cac6ae65e6541f4169943923390ad55e90c237593b3b0e401f3b08a0"
        "318594aefdb9a738c9f433e5b6b212a6d62f6370c2f69294c7eeb9a4e00ce683cf93039b212648"
        "e01c6c6b78c080c0"
    )
    # Contract validator selection: no validators in the header.
    assert gen.qbft_extra_data([]) == "0xe5a00000000000000000000000000000000000000000000000000000000000000000c0c080c0"


def test_other_seed_gives_another_consistent_network(tmp_path):
    gen = _load_generator()
    gen.write_files(gen.render("some other seed", PLAN), tmp_path)
    other = Network.load(tmp_path)
    for check in ALL_CHECKS:
        check(other)
    committed = Network.load(BESU)
    assert other.genesis["extraData"] != committed.genesis["extraData"]
    assert set(other.permissions["accounts-allowlist"]).isdisjoint(committed.permissions["accounts-allowlist"])


def test_keystore_export_round_trip(tmp_path):
    from eth_account import Account

    gen = _load_generator()
    paths = gen.export_keystores(tmp_path, "test password", kdf="pbkdf2", iterations=2)
    allowed = Network.load(BESU).permissions["accounts-allowlist"]
    assert [p.name for p in paths] == [f"account-{i}.json" for i in range(len(allowed))]
    for path, address in zip(paths, allowed):
        key = Account.decrypt(json.loads(path.read_text()), "test password")
        assert Account.from_key(key).address.lower() == address


# Each check must be able to fail: break one thing in a copy and expect that check to catch it.


def _broken_copy(tmp_path: Path, edit) -> Network:
    root = tmp_path / "besu"
    shutil.copytree(BESU, root, ignore=shutil.ignore_patterns("data", "keystore", "__pycache__"))
    edit(root)
    return Network.load(root)


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _sub(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _swap_validator(root: Path) -> None:
    gen = _load_generator()
    net = Network.load(root)
    addrs = [net.node_keys[n].public_key.to_checksum_address() for n in net.configs]
    addrs[3] = "0x" + "11" * 20
    _edit_json(root / "genesis.json", lambda g: g.update(extraData=gen.qbft_extra_data(addrs)))


def _replace_node_key(root: Path) -> None:
    (root / "nodes" / "node-3" / "key").write_text("0x" + "22" * 32)


def _drop_enode(root: Path) -> None:
    net = Network.load(root)
    _sub(root / "permissions_config.toml", f'"{net.enode_of("node-2")}",', "")


def _wrong_enode_port(root: Path) -> None:
    _sub(root / "permissions_config.toml", "@127.0.0.1:30306", "@127.0.0.1:30399")


BROKEN = {
    "validator not from a node key": (_swap_validator, check_extra_data),
    "node key changed, genesis not": (_replace_node_key, check_extra_data),
    "extraData with a round": (
        lambda r: _edit_json(
            r / "genesis.json",
            lambda g: g.update(
                extraData="0x"
                + rlp.encode(
                    rlp.decode(bytes.fromhex(g["extraData"][2:]))[:3] + [1, []]
                ).hex()
            ),
        ),
        check_extra_data,
    ),
    "enode missing": (_drop_enode, check_nodes_allowlist),
    "enode with wrong port": (_wrong_enode_port, check_nodes_allowlist),
    "key changed, allowlist not": (_replace_node_key, check_nodes_allowlist),
    "RPC on all interfaces": (
        lambda r: _sub(r / "nodes" / "node-2" / "config.toml", 'rpc-http-host="127.0.0.1"', 'rpc-http-host="0.0.0.0"'),
        check_loopback_only,
    ),
    "P2P interface unset": (
        lambda r: _sub(r / "nodes" / "node-4" / "config.toml", 'p2p-interface="127.0.0.1"\n', ""),
        check_loopback_only,
    ),
    "ADMIN API exposed": (
        lambda r: _sub(r / "nodes" / "node-1" / "config.toml", '"TXPOOL"]', '"TXPOOL", "ADMIN"]'),
        check_loopback_only,
    ),
    "two nodes on one port": (
        lambda r: _sub(r / "nodes" / "node-3" / "config.toml", "p2p-port=30305", "p2p-port=30304"),
        check_ports_and_paths,
    ),
    "account permissioning off": (
        lambda r: _sub(
            r / "nodes" / "node-2" / "config.toml",
            "permissions-accounts-config-file-enabled=true",
            "permissions-accounts-config-file-enabled=false",
        ),
        check_ports_and_paths,
    ),
    "bootnode not node-1": (
        lambda r: _sub(r / "nodes" / "node-3" / "config.toml", "@127.0.0.1:30303", "@127.0.0.1:30304"),
        check_bootnodes,
    ),
    "no cancunTime": (
        lambda r: _edit_json(r / "genesis.json", lambda g: g["config"].pop("cancunTime")),
        check_forks,
    ),
    "cancun scheduled later": (
        lambda r: _edit_json(r / "genesis.json", lambda g: g["config"].update(cancunTime=1_900_000_000)),
        check_forks,
    ),
    "prague scheduled": (
        lambda r: _edit_json(r / "genesis.json", lambda g: g["config"].update(pragueTime=0)),
        check_forks,
    ),
    "gas limit too low": (
        lambda r: _edit_json(r / "genesis.json", lambda g: g.update(gasLimit=hex(8_000_000))),
        check_chain_params,
    ),
    "funded account not allowlisted": (
        lambda r: _edit_json(r / "genesis.json", lambda g: g["alloc"].update({"33" * 20: {"balance": "0x1"}})),
        check_alloc_allowlisted,
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_checks_catch_a_broken_copy(tmp_path, case):
    edit, check = BROKEN[case]
    broken = _broken_copy(tmp_path, edit)
    with pytest.raises(AssertionError):
        check(broken)


def test_evm_version_check_rejects_an_artifact_newer_than_the_genesis(tmp_path):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    for src in ARTIFACTS.glob("*.json"):
        art = json.loads(src.read_text())
        art["compiler"]["settings"]["evmVersion"] = "prague"
        (artifacts / src.name).write_text(json.dumps(art))
    with pytest.raises(AssertionError, match="compiled for prague"):
        check_forks(Network.load(BESU), artifacts)
