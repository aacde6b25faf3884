"""Shared fixtures: one real Anvil per test session, one deployment, and a clean chain state per
test through Anvil's evm_snapshot/evm_revert (fresh signers each time, so no stale nonces)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pytest

from offchain.chain.client import Signer, connect
from offchain.chain.deployer import Deployment, deploy
from offchain.chain.devchain import DevChain
from offchain.chain.ledger import ConsortiumClient, VideoLedgerClient

logging.getLogger("web3").setLevel(logging.WARNING)


@pytest.fixture(scope="session", autouse=True)
def no_default_trust(tmp_path_factory):
    """Evidence verifiers trust chain/deployments/<chainId>.json by default; a file left there by
    a demo run must not decide a test. Tests name what they trust (an empty default directory)."""
    empty = tmp_path_factory.mktemp("deployments")
    old = os.environ.get("FRAMELEDGER_DEPLOYMENTS_DIR")
    os.environ["FRAMELEDGER_DEPLOYMENTS_DIR"] = str(empty)
    yield empty
    if old is None:
        os.environ.pop("FRAMELEDGER_DEPLOYMENTS_DIR", None)
    else:
        os.environ["FRAMELEDGER_DEPLOYMENTS_DIR"] = old


@pytest.fixture(scope="session")
def devchain():
    with DevChain(accounts=12) as chain:
        yield chain


@pytest.fixture(scope="session")
def w3(devchain):
    return connect(devchain.rpc_url)


@pytest.fixture(scope="session")
def base_deployment(devchain, w3):
    return deploy(w3, devchain.private_keys, out_dir=None)


@dataclass
class ChainEnv:
    w3: object
    keys: list[str]
    deployment: Deployment

    def signer(self, i: int) -> Signer:
        return Signer(self.w3, self.keys[i])

    def consortium(self, i: int = 0) -> ConsortiumClient:
        return ConsortiumClient(self.signer(i), self.deployment.consortium)

    def ledger(self, i: int) -> VideoLedgerClient:
        return VideoLedgerClient(self.signer(i), self.deployment.video_ledger)


@pytest.fixture
def chain_env(devchain, w3, base_deployment):
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield ChainEnv(w3, devchain.private_keys, base_deployment)
    finally:
        w3.provider.make_request("evm_revert", [snapshot])
