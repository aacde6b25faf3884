"""One connection to a consortium: the chain (any JSON-RPC URL: the dev chain or Besu), its
deployment record, and optionally the account that signs.

The deployment record is ``--deployment FILE``, else ``$FRAMELEDGER_DEPLOYMENT``, else
``chain/deployments/<chainId>.json`` for the chain the RPC URL answers for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from web3 import Web3

from ..chain.client import Signer, connect
from ..chain.deployer import Deployment
from ..chain.ledger import ConsortiumClient, VideoLedgerClient
from ..paths import DEPLOYMENTS_DIR
from .errors import OpsError

DEFAULT_RPC = "http://127.0.0.1:8545"
RPC_ENV = "FRAMELEDGER_RPC"
DEPLOYMENT_ENV = "FRAMELEDGER_DEPLOYMENT"
MAX_RECORD_BYTES = 1024 * 1024


def default_rpc() -> str:
    return os.environ.get(RPC_ENV) or DEFAULT_RPC


def open_chain(rpc_url: str, timeout: float = 30.0) -> Web3:
    if not rpc_url.startswith(("http://", "https://")):
        raise OpsError(f"--rpc {rpc_url!r}: expected an http(s):// JSON-RPC URL")
    try:
        return connect(rpc_url, timeout=timeout)
    except ConnectionError:
        raise OpsError(f"no JSON-RPC answer from {rpc_url} (start a dev chain with `frameledger chain up`)") from None


def deployment_path(w3: Web3, explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get(DEPLOYMENT_ENV):
        return Path(os.environ[DEPLOYMENT_ENV])
    return DEPLOYMENTS_DIR / f"{w3.eth.chain_id}.json"


def load_deployment(w3: Web3, path: Path) -> Deployment:
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise OpsError(f"{path} is larger than {MAX_RECORD_BYTES} bytes: not a deployment record")
        deployment = Deployment.load(path)
    except FileNotFoundError:
        raise OpsError(f"no deployment record at {path}: run `frameledger deploy` (or pass --deployment FILE)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OpsError(f"{path} is not a deployment record ({type(exc).__name__}: {exc})") from None
    if deployment.chain_id != w3.eth.chain_id:
        raise OpsError(f"{path} is for chain {deployment.chain_id}, but the RPC serves chain {w3.eth.chain_id}")
    if w3.eth.get_code(Web3.to_checksum_address(deployment.consortium)) in (b"", None):
        raise OpsError(f"{path} names Consortium {deployment.consortium}, which has no code on this chain "
                       "(a dev chain restarted without --state?)")
    return deployment


@dataclass
class Session:
    w3: Web3
    deployment: Deployment
    deployment_path: Path
    signer: Signer

    @property
    def consortium(self) -> ConsortiumClient:
        return ConsortiumClient(self.signer, self.deployment.consortium)

    @property
    def ledger(self) -> VideoLedgerClient:
        return VideoLedgerClient(self.signer, self.deployment.video_ledger)


def open_session(rpc_url: str, deployment: str | None = None, private_key: str | None = None) -> Session:
    """A session; without ``private_key`` it can only read (calls come from a throwaway address)."""
    w3 = open_chain(rpc_url)
    path = deployment_path(w3, deployment)
    record = load_deployment(w3, path)
    key = private_key or "0x" + Account.create().key.hex().removeprefix("0x")
    return Session(w3=w3, deployment=record, deployment_path=path, signer=Signer(w3, key))
