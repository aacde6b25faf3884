"""The dev chain as an operator runs it: `frameledger chain up` (Anvil from npm, loopback only,
optionally keeping its state in a file across restarts), waiting for a chain to answer, and
funding an account on a dev chain.

A Besu network is not started here (see chain/besu/README.md); every other command reaches it
with ``--rpc URL``.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Callable

import httpx
from web3 import Web3

from ..chain.devchain import DEV_CHAIN_ID, DevChain, DevChainError
from .errors import OpsError

MAX_FUND_ETH = 10**9


def run_chain(port: int, state: Path | None, accounts: int, log_path: Path | None,
              on_ready: Callable[[DevChain], None]) -> int:
    """Start Anvil, call ``on_ready``, then block until SIGINT or SIGTERM and stop it (by PID),
    which makes Anvil write its state file. Returns 0, or 1 if Anvil died on its own."""
    if not 0 < port < 65536:
        raise OpsError(f"--port {port}: expected 1-65535")
    if not 1 <= accounts <= 1000:
        raise OpsError("--accounts must be 1-1000")
    if state is not None:
        state = state.resolve()
        state.parent.mkdir(parents=True, exist_ok=True)
    chain = DevChain(accounts=accounts, port=port, log_path=log_path, state_path=state)
    try:
        chain.start()
    except DevChainError as exc:
        raise OpsError(f"{exc} (is port {port} already taken?)") from None
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        on_ready(chain)
        while not stop.wait(0.5):
            if chain.process is None or chain.process.poll() is not None:
                return 1
        return 0
    finally:
        chain.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_for_rpc(rpc_url: str, timeout: float) -> int:
    """Poll until ``rpc_url`` answers eth_chainId; the chain id."""
    if not 0 < timeout <= 3600:
        raise OpsError("--timeout must be in (0, 3600] seconds")
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = httpx.post(rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=2)
            if r.status_code == 200 and "result" in r.json():
                return int(r.json()["result"], 16)
        except (httpx.HTTPError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise OpsError(f"no JSON-RPC answer from {rpc_url} within {timeout:g} s")
        time.sleep(0.2)


def fund(w3: Web3, address: str, eth: float) -> float:
    """Set ``address``'s balance on a dev chain (anvil_setBalance). Refused on other chains, where
    accounts are funded in the genesis (Besu: `alloc`, with zero gas prices)."""
    if w3.eth.chain_id != DEV_CHAIN_ID:
        raise OpsError(f"chain {w3.eth.chain_id} is not the dev chain ({DEV_CHAIN_ID}): fund accounts in its genesis")
    if not 0 < eth <= MAX_FUND_ETH:
        raise OpsError(f"--eth must be in (0, {MAX_FUND_ETH}]")
    w3.provider.make_request("anvil_setBalance", [address, hex(Web3.to_wei(eth, "ether"))])
    return float(Web3.from_wei(w3.eth.get_balance(address), "ether"))
