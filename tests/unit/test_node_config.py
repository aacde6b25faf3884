from pathlib import Path

import pytest

from offchain.node.config import ConfigError, NodeConfig

TOML = """
name = "node-a"
data_dir = "/tmp/a"
rpc_url = "http://127.0.0.1:8545"
deployment = "chain/deployments/31337.json"
peers = ["http://127.0.0.1:8002"]
window_ms = 30000
"""


def test_file_then_environment_overrides(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text(TOML)
    cfg = NodeConfig.load(path, env={"FRAMELEDGER_NODE_WINDOW_MS": "10000",
                                     "FRAMELEDGER_NODE_PEERS": "http://127.0.0.1:1, http://127.0.0.1:2",
                                     "FRAMELEDGER_NODE_ALARM_CENTRE": "true"})
    assert cfg.window_ms == 10000 and cfg.alarm_centre is True
    assert cfg.peers == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert cfg.data_dir == Path("/tmp/a")
    again = NodeConfig.from_dict(__import__("tomllib").loads(cfg.to_toml()), env={})
    assert again == cfg


def test_bad_config_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown node config keys: colour"):
        NodeConfig.from_dict({"name": "a", "data_dir": "/x", "rpc_url": "u", "deployment": "d", "colour": 1}, env={})
    with pytest.raises(ConfigError, match="window_ms"):
        NodeConfig.from_dict({"name": "a", "data_dir": "/x", "rpc_url": "u", "deployment": "d"},
                             env={"FRAMELEDGER_NODE_WINDOW_MS": "soon"})
    with pytest.raises(ConfigError, match="needs 'rpc_url'"):
        NodeConfig.from_dict({"name": "a", "data_dir": "/x", "deployment": "d"}, env={})
    with pytest.raises(ConfigError, match="cannot read"):
        NodeConfig.load(tmp_path / "missing.toml")


def test_a_proposer_timeout_without_room_to_send_is_refused():
    base = {"name": "n", "data_dir": "/tmp/n", "rpc_url": "http://127.0.0.1:1", "deployment": "d.json"}
    assert NodeConfig.from_dict(base, env={}).window_rules().clock_skew_ms == 500
    with pytest.raises(ConfigError, match="clock_skew_ms"):
        NodeConfig.from_dict({**base, "proposer_timeout_ms": 1000, "clock_skew_ms": 500}, env={})
