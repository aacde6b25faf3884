"""Chain access: one JSON-RPC connection, locally signed transactions, decoded reverts.

Transactions are signed here with eth-account keys and sent raw, because production nodes
(Besu) hold no unlocked accounts. Each call is simulated first (gas estimation), so a revert is
raised as the named custom error before anything is sent; a transaction that still fails on chain
is replayed with eth_call at its block to recover the reason.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError, Web3RPCError

from ..paths import ARTIFACTS_DIR
from .reverts import ContractRevert, decode_revert

log = logging.getLogger(__name__)


@lru_cache(maxsize=None)
def load_artifact(name: str) -> dict[str, Any]:
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no artifact {path}: run `make artifacts`")
    artifact: dict[str, Any] = json.loads(path.read_text())
    return artifact


def connect(rpc_url: str, timeout: float = 30.0) -> Web3:
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    # web3's "validation" middleware asks eth_chainId before every eth_call / estimateGas to check
    # a chainId field we never send (transactions are signed locally with `Signer.chain_id`): one
    # extra round trip per view, which profiled as a large share of a node's chain polling. No ENS
    # exists on a consortium chain, so its name-resolving middleware goes too.
    for name in ("validation", "ens_name_to_address"):
        w3.middleware_onion.remove(name)
    if not w3.is_connected():
        raise ConnectionError(f"no JSON-RPC answer from {rpc_url}")
    return w3


def _revert_data(exc: Exception) -> bytes | None:
    data = getattr(exc, "data", None)
    if isinstance(data, dict):  # some nodes nest it
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    return None


def as_revert(exc: Exception, context: str) -> ContractRevert | None:
    """Map web3's revert exceptions to our named ones; None if `exc` is not a revert."""
    if isinstance(exc, (ContractCustomError, ContractLogicError, ContractPanicError)):
        return decode_revert(_revert_data(exc), context)
    if isinstance(exc, Web3RPCError) and "revert" in str(exc).lower():
        return decode_revert(_revert_data(exc), context)
    return None


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int
    receipt: Any


class Signer:
    """An account that sends transactions, with a local nonce so that one process can send
    several transactions per block without waiting for each to be mined."""

    def __init__(self, w3: Web3, private_key: str):
        self.w3 = w3
        self.account: LocalAccount = Account.from_key(private_key)
        self._lock = threading.Lock()
        self._nonce: int | None = None
        self.chain_id = w3.eth.chain_id

    @property
    def address(self) -> str:
        return self.account.address

    def _next_nonce(self) -> int:
        if self._nonce is None:
            self._nonce = self.w3.eth.get_transaction_count(Web3.to_checksum_address(self.address), "pending")
        n = self._nonce
        self._nonce += 1
        return n

    def transact(self, fn: Any, context: str = "", gas_margin: float = 1.2, wait: bool = True) -> TxResult:
        """Simulate, sign, send and (by default) wait for a contract function call."""
        ctx = context or getattr(fn, "fn_name", "transaction")
        with self._lock:
            try:
                gas = fn.estimate_gas({"from": self.address})
            except Exception as exc:  # noqa: BLE001 - mapped below or re-raised
                revert = as_revert(exc, ctx)
                if revert is not None:
                    raise revert from None
                raise
            tx = fn.build_transaction(
                {"from": self.address, "nonce": self._next_nonce(), "chainId": self.chain_id, "gas": int(gas * gas_margin) + 10_000}
            )
            signed = self.account.sign_transaction(tx)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception:
                self._nonce = None  # resync from the node on the next send
                raise
        if not wait:
            return TxResult(tx_hash.to_0x_hex(), -1, 0, None)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
        if receipt["status"] != 1:
            raise self._replay_failure(tx, receipt, ctx)
        return TxResult(tx_hash.to_0x_hex(), receipt["blockNumber"], receipt["gasUsed"], receipt)

    def deploy(self, name: str, *args: Any) -> tuple[Contract, TxResult]:
        art = load_artifact(name)
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        result = self.transact(factory.constructor(*args), context=f"deploy {name}")
        address = result.receipt["contractAddress"]
        return self.w3.eth.contract(address=address, abi=art["abi"]), result

    def _replay_failure(self, tx: dict[str, Any], receipt: Any, ctx: str) -> Exception:
        call = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:
            self.w3.eth.call(call, receipt["blockNumber"] - 1)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001
            revert = as_revert(exc, ctx)
            if revert is not None:
                return revert
            return exc
        return ContractRevert("RevertedOnChain", {"tx": receipt["transactionHash"].to_0x_hex()}, b"", ctx)


def bind(w3: Web3, name: str, address: str) -> Contract:
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name)["abi"])


def events(contract: Contract, event_name: str, receipt: Any) -> list[Any]:
    """The decoded `event_name` logs of a receipt; other events in it are skipped quietly."""
    return list(getattr(contract.events, event_name)().process_receipt(receipt, errors=DISCARD))


def call(fn: Any, context: str = "", sender: str | None = None) -> Any:
    """A view call whose revert surfaces as the named custom error."""
    try:
        return fn.call({"from": sender} if sender else {})
    except Exception as exc:  # noqa: BLE001
        revert = as_revert(exc, context or getattr(fn, "fn_name", "call"))
        if revert is not None:
            raise revert from None
        raise
