"""Chain health as one node sees it (issue 8, item 7).

`ChainHealth.check()` reads, in one pass: whether the JSON-RPC endpoint answers, its chain id
(against the deployment's), whether both contracts have code, the node account's balance, its
pending transactions (pending nonce - mined nonce) and the gas price; the node's last anchor is
noted by the producer. `snapshot()` is what `/api/v1/status` shows under "chain"; it never calls
the chain, so a dead RPC endpoint cannot stall the API.

While the chain is unusable (unreachable, another chain, contracts missing, no funds), callers
stop calling it and `Backoff` spaces the checks exponentially (0.5 s, 1 s, 2 s, ... 30 s), with
one log line per failed check: a chain restarted empty costs a handful of lines a minute, not
hundreds. A chain call that fails for a chain reason (`is_chain_fault`) is reported with
`failed()`, which starts the same backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import requests
from web3 import Web3
from web3.exceptions import BadFunctionCallOutput, TimeExhausted, Web3RPCError

log = logging.getLogger(__name__)

LOW_FUNDS_ANCHORS = 20  # funds are low below the price of this many anchors
GAS_PER_ANCHOR = 320_000  # an anchor costs 285-297k gas on Anvil (bench/results/gas.json); rounded up
CHECK_EVERY_S = 5.0  # how often a healthy chain is re-read


@dataclass
class Backoff:
    """Exponential backoff: after n consecutive failures the next try waits base * 2^(n-1), capped."""

    base_s: float = 0.5
    max_s: float = 30.0
    failures: int = 0
    next_at: float = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.next_at

    def failed(self, now: float) -> float:
        self.failures += 1
        delay = float(min(self.max_s, self.base_s * 2 ** min(self.failures - 1, 30)))
        self.next_at = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.next_at = 0.0


def is_chain_fault(exc: BaseException) -> bool:
    """Whether a failed chain call says the chain (not this call's input) is the trouble: no
    connection, a timeout, contracts without code (a chain restarted empty), or no funds."""
    if isinstance(exc, (ConnectionError, TimeoutError, requests.exceptions.ConnectionError,
                        requests.exceptions.Timeout, TimeExhausted, BadFunctionCallOutput)):
        return True
    return isinstance(exc, Web3RPCError) and "insufficient funds" in str(exc).lower()


@dataclass
class ChainStatus:
    reachable: bool = False
    chain_id: int | None = None
    expected_chain_id: int | None = None
    contracts_present: bool = False
    balance_wei: int | None = None
    gas_price_wei: int | None = None
    pending_transactions: int | None = None
    block_number: int | None = None
    low_funds: bool = False  # less than LOW_FUNDS_ANCHORS anchors' worth: an alarm, still usable
    broke: bool = False  # not even one anchor's worth: unusable until refunded
    error: str | None = None
    checked_at: float | None = None

    @property
    def usable(self) -> bool:
        return self.reachable and self.chain_id == self.expected_chain_id and self.contracts_present and not self.broke


@dataclass
class ChainHealth:
    w3: Web3
    address: str
    contracts: dict[str, str]  # name -> address
    expected_chain_id: int
    clock: Callable[[], float] = time.monotonic
    backoff: Backoff = field(default_factory=Backoff)
    status: ChainStatus = field(default_factory=ChainStatus)
    last_anchor: dict[str, Any] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_check: float = float("-inf")

    def ready(self) -> bool:
        """Whether the chain may be called now: usable at the last check and not backing off."""
        return self.backoff.ready(self.clock()) and self.status.usable

    def due(self) -> bool:
        now = self.clock()
        if not self.backoff.ready(now):
            return False
        return not self.status.usable or now - self._last_check >= CHECK_EVERY_S

    def check(self) -> ChainStatus:
        """Read the chain once (blocking: run it in a worker thread). Never raises."""
        with self._lock:
            now = self.clock()
            self._last_check = now
            status = ChainStatus(expected_chain_id=self.expected_chain_id, checked_at=time.time())
            try:
                status.chain_id = self.w3.eth.chain_id
                status.reachable = True
                status.block_number = self.w3.eth.block_number
                status.contracts_present = all(len(self.w3.eth.get_code(Web3.to_checksum_address(a))) > 0
                                               for a in self.contracts.values())
                account = Web3.to_checksum_address(self.address)
                status.balance_wei = self.w3.eth.get_balance(account)
                status.gas_price_wei = self.w3.eth.gas_price
                pending = self.w3.eth.get_transaction_count(account, "pending")
                status.pending_transactions = pending - self.w3.eth.get_transaction_count(account, "latest")
                one_anchor = status.gas_price_wei * GAS_PER_ANCHOR  # 0 on a free-gas network: never low
                status.low_funds = status.balance_wei < one_anchor * LOW_FUNDS_ANCHORS
                status.broke = status.balance_wei < one_anchor
            except Exception as exc:  # noqa: BLE001 - the status says what failed
                status.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            if status.usable and status.error is None:
                if self.backoff.failures:
                    log.info("chain usable again", extra={"after_failures": self.backoff.failures})
                self.backoff.succeeded()
            else:
                reason = status.error or ("another chain" if status.chain_id != self.expected_chain_id
                                          else "no funds" if status.broke else "contracts missing")
                delay = self.backoff.failed(now)
                log.warning("chain not usable; next check in %.1f s", delay, extra={"reason": reason})
            self.status = status
            return status

    def failed(self, exc: BaseException) -> None:
        """A chain call failed for a chain reason: stop calling until the next check."""
        with self._lock:
            self.status = ChainStatus(**{**self.status.__dict__, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            if "insufficient funds" in str(exc).lower():
                self.status.low_funds = self.status.broke = True
            else:
                self.status.reachable = False
            delay = self.backoff.failed(self.clock())
            log.warning("chain call failed; next check in %.1f s", delay, extra={"reason": self.status.error})

    def note_anchor(self, block_hash: bytes, camera_ip: str, height: int, tx_hash: str, block_number: int) -> None:
        self.last_anchor = {"block": "0x" + block_hash.hex(), "camera": camera_ip, "height": height, "tx": tx_hash,
                            "chainBlock": block_number, "at": round(time.time(), 3)}

    def snapshot(self) -> dict[str, Any]:
        s = self.status
        return {
            "reachable": s.reachable, "chainId": s.chain_id, "expectedChainId": s.expected_chain_id,
            "contractsPresent": s.contracts_present, "usable": s.usable, "blockNumber": s.block_number,
            "balanceWei": str(s.balance_wei) if s.balance_wei is not None else None,
            "gasPriceWei": s.gas_price_wei, "lowFunds": s.low_funds, "noFunds": s.broke,
            "pendingTransactions": s.pending_transactions, "lastAnchor": self.last_anchor,
            "error": s.error, "checkedAt": s.checked_at,
            "backoff": {"failures": self.backoff.failures,
                        "retryInS": round(max(0.0, self.backoff.next_at - self.clock()), 1)},
        }
