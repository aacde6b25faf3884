"""A local consortium for the demo and the integration tests: Anvil, the contracts, and one
`frameledger node` process per node account, each with its own key, data directory, SQLite and
content store, talking to the others over real HTTP on loopback.

Only processes started here are stopped here, by PID.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..chain.client import Signer, connect
from ..chain.deployer import Deployment, deploy, load_plan
from ..chain.devchain import DevChain, free_loopback_port
from ..chain.ledger import ConsortiumClient, VideoLedgerClient
from .config import NodeConfig

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """A node process did not come up or an API call failed."""


@dataclass
class NodeProcess:
    config: NodeConfig
    config_path: Path
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def ingest(self) -> tuple[str, int]:
        return (self.config.ingest_host, self.config.ingest_port)


@dataclass
class Cluster:
    work_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)  # NodeConfig overrides for every node
    alarm_centre_node: int = 0
    chain: DevChain | None = None
    deployment: Deployment | None = None
    nodes: list[NodeProcess] = field(default_factory=list)
    camera_keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    deployment_plan: dict[str, Any] | None = None  # the consortium to deploy; None: chain/consortium.json

    # --------------------------------------------------------------- chain side
    def start_chain(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.chain = DevChain(accounts=12, log_path=self.work_dir / "anvil.log").start()
        self.w3 = connect(self.chain.rpc_url)
        self.keys = self.chain.private_keys
        self.plan = self.deployment_plan or load_plan()
        self.deployment = deploy(self.w3, self.keys, plan=self.plan, out_dir=self.work_dir / "deployments")
        self.deployment_path = self.work_dir / "deployments" / f"{self.deployment.chain_id}.json"

    def consortium(self, account: int = 0) -> ConsortiumClient:
        return ConsortiumClient(Signer(self.w3, self.keys[account]), self.deployment.consortium)

    def ledger(self, account: int = 0) -> VideoLedgerClient:
        return VideoLedgerClient(Signer(self.w3, self.keys[account]), self.deployment.video_ledger)

    def register_camera(self, ip: str, owner_account: int, group: bytes) -> Ed25519PrivateKey:
        key = Ed25519PrivateKey.generate()
        pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.consortium(owner_account).register_camera(ip, pub, group.ljust(32, b"\x00"))
        self.camera_keys[ip] = key
        return key

    def seal_genesis(self) -> None:
        self.consortium(0).seal_genesis()

    # ---------------------------------------------------------------- nodes
    def configure_nodes(self) -> None:
        plan_nodes = self.plan["nodes"]
        api_ports = [free_loopback_port() for _ in plan_nodes]
        urls = [f"http://127.0.0.1:{p}" for p in api_ports]
        for i, n in enumerate(plan_nodes):
            data_dir = self.work_dir / "nodes" / n["name"]
            key_file = data_dir / "node.key"
            data_dir.mkdir(parents=True, exist_ok=True)
            key_file.write_text(self.keys[n["account"]])
            key_file.chmod(0o600)
            config = NodeConfig.from_dict({
                "name": n["name"], "data_dir": str(data_dir), "rpc_url": self.chain.rpc_url,
                "deployment": str(self.deployment_path), "private_key_file": str(key_file),
                "ingest_port": free_loopback_port(), "api_port": api_ports[i], "public_url": urls[i],
                "peers": [u for u in urls if u != urls[i]], "alarm_centre": i == self.alarm_centre_node,
                **self.settings,
            }, env={})
            path = data_dir / "node.toml"
            path.write_text(config.to_toml())
            self.nodes.append(NodeProcess(config, path, data_dir / "node.log"))

    def start_node(self, node: NodeProcess, timeout: float = 30.0) -> None:
        env = dict(os.environ, FRAMELEDGER_LOG_LEVEL=os.environ.get("FRAMELEDGER_NODE_LOG_LEVEL", "INFO"))
        log_file = open(node.log_path, "ab")
        node.process = subprocess.Popen(
            [sys.executable, "-m", "offchain.cli", "node", "--config", str(node.config_path)],
            stdout=subprocess.PIPE, stderr=log_file, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = node.process.stdout.readline().decode()
            if line.startswith("READY"):
                self._wait_http(node, deadline)
                return
            if node.process.poll() is not None:
                raise ClusterError(f"{node.name} exited with {node.process.returncode}; see {node.log_path}")
        raise ClusterError(f"{node.name} did not start within {timeout}s; see {node.log_path}")

    def _wait_http(self, node: NodeProcess, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                if httpx.get(node.config.api_url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise ClusterError(f"{node.name} API did not answer")

    def start_nodes(self) -> None:
        for node in self.nodes:
            self.start_node(node)

    def kill_node(self, node: NodeProcess, hard: bool = True) -> None:
        proc = node.process
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGKILL if hard else signal.SIGTERM)
        proc.wait(timeout=15)

    def node(self, name: str) -> NodeProcess:
        return next(n for n in self.nodes if n.name == name)

    def api(self, node: NodeProcess, path: str, **params: Any) -> Any:
        try:
            r = httpx.get(node.config.api_url + path, params=params, timeout=30)
        except httpx.TimeoutException:
            if node.process and node.process.poll() is None:
                os.kill(node.process.pid, signal.SIGUSR1)  # the node dumps its threads' stacks to its log
            raise ClusterError(f"{node.name} {path}: no answer in 30 s; stacks dumped to {node.log_path}") from None
        if r.status_code != 200:
            raise ClusterError(f"{node.name} {path}: HTTP {r.status_code} {r.text[:200]}")
        return r.json()

    def stop(self) -> None:
        for node in self.nodes:
            try:
                self.kill_node(node, hard=False)
            except subprocess.TimeoutExpired:
                self.kill_node(node, hard=True)
        if self.chain:
            self.chain.stop()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def describe(self) -> str:
        return json.dumps({n.name: {"api": n.config.api_url, "ingest": n.ingest} for n in self.nodes})
