"""`frameledger node init`: a node's directory with its configuration (``node.toml``) and its
signing key in an encrypted keystore (``node-key.json``), so the node starts with
``frameledger node --config DIR/node.toml`` and the key never sits in the config in the clear."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..chain.keyfile import PasswordSource, keystore_address, new_keystore
from ..node.config import ConfigError, NodeConfig
from .errors import OpsError

MAX_PEERS = 64


@dataclass(frozen=True)
class NodeInitRequest:
    name: str
    directory: Path
    rpc_url: str
    deployment: Path
    ingest_port: int
    api_port: int
    host: str = "127.0.0.1"
    peers: list[str] = field(default_factory=list)
    window_ms: int = 60_000
    alarm_centre: bool = False
    existing_keystore: Path | None = None
    password_file: Path | None = None


def _check(req: NodeInitRequest) -> None:
    if not req.name or len(req.name) > 64 or not all(c.isalnum() or c in "-_." for c in req.name):
        raise OpsError("--name must be 1-64 letters, digits, '-', '_' or '.'")
    for label, port in (("--ingest-port", req.ingest_port), ("--api-port", req.api_port)):
        if not 0 < port < 65536:
            raise OpsError(f"{label} {port}: expected 1-65535")
    if req.ingest_port == req.api_port:
        raise OpsError("--ingest-port and --api-port must differ")
    if len(req.peers) > MAX_PEERS:
        raise OpsError(f"at most {MAX_PEERS} --peer URLs")
    for peer in req.peers:
        if not peer.startswith(("http://", "https://")):
            raise OpsError(f"--peer {peer!r}: expected a node API URL such as http://127.0.0.1:8002")
    if not 1_000 <= req.window_ms <= 3_600_000:
        raise OpsError("--window-ms must be 1000-3600000")
    if not req.deployment.is_file():
        raise OpsError(f"no deployment record at {req.deployment}: run `frameledger deploy` first")


def init_node(req: NodeInitRequest, password: PasswordSource) -> dict[str, Any]:
    _check(req)
    directory = req.directory.resolve()
    config_path = directory / "node.toml"
    key_path = directory / "node-key.json"
    if config_path.exists():
        raise OpsError(f"{config_path} exists; remove it deliberately to re-initialise the node")
    directory.mkdir(parents=True, exist_ok=True)
    if req.existing_keystore:
        address = keystore_address(req.existing_keystore)
        if req.existing_keystore.resolve() != key_path:
            shutil.copyfile(req.existing_keystore, key_path)
            key_path.chmod(0o600)
    else:
        address = new_keystore(key_path, password)
    try:
        config = NodeConfig.from_dict({
            "name": req.name, "data_dir": str(directory / "data"), "rpc_url": req.rpc_url,
            "deployment": str(req.deployment.resolve()), "keystore_file": str(key_path),
            "keystore_password_file": str(req.password_file.resolve()) if req.password_file else "",
            "ingest_host": req.host, "ingest_port": req.ingest_port, "api_host": req.host, "api_port": req.api_port,
            "public_url": f"http://{req.host}:{req.api_port}", "peers": list(req.peers),
            "window_ms": req.window_ms, "alarm_centre": req.alarm_centre,
        }, env={})
    except ConfigError as exc:
        raise OpsError(str(exc)) from None
    config_path.write_text(config.to_toml())
    return {"name": req.name, "address": address, "config": str(config_path), "keystore": str(key_path),
            "ingest": f"{req.host}:{req.ingest_port}", "api": config.api_url, "peers": list(req.peers)}
