"""Follow every event of the FrameLedger contracts: checkpointed, confirmed, reorg-safe.

The pattern is web3.py's EventScanner: scan `eth_getLogs` in bounded block ranges up to
`head - confirmations`, remember the hashes of the last `window` processed blocks and the events
emitted from them, and before every step compare the newest remembered hash with the chain's. On
a change (a reorg deeper than the confirmation depth), walk back to the newest block whose hash
still matches, emit every event of the dropped blocks again with `"removed": true` (newest first),
and rescan from there. A reorg deeper than the window is an error the operator must see.

Exactly once across kills: events go to a JSON-lines file and the checkpoint records the file's
length together with the scan position, written atomically after the lines are flushed and
synced. On start the file is cut back to the recorded length, so lines written after the last
checkpoint (the scan that was interrupted) are written again exactly once, never skipped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, IO

from eth_utils import event_abi_to_log_topic
from web3 import Web3
from web3._utils.events import get_event_data
from web3.exceptions import BlockNotFound

from ..chain.client import load_artifact
from .reactions import ChainMoved, Reactor

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "frameledger.monitor/1"


class ReorgTooDeep(RuntimeError):
    """No remembered block is on the chain any more: the reorg is deeper than the window."""


@dataclass
class Checkpoint:
    chain_id: int
    next_block: int
    out_offset: int = 0
    recent: list[list[Any]] = field(default_factory=list)  # [[number, hash], ...], oldest first
    emitted: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # str(number) → events

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        doc = {"format": CHECKPOINT_FORMAT, "chainId": self.chain_id, "nextBlock": self.next_block,
               "outOffset": self.out_offset, "recent": self.recent, "emitted": self.emitted}
        with open(tmp, "w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "Checkpoint":
        doc = json.loads(path.read_text())
        if doc.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a monitor checkpoint")
        return cls(doc["chainId"], doc["nextBlock"], doc["outOffset"], doc["recent"], doc["emitted"])


def _jsonable(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return "0x" + bytes(v).hex()
    if hasattr(v, "items"):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


class EventDecoder:
    """topic0 → (contract name, event ABI) over the deployed contracts' committed ABIs."""

    def __init__(self, w3: Web3, contracts: dict[str, str]):
        self.w3 = w3
        self.names = {Web3.to_checksum_address(a): n for n, a in contracts.items()}
        self._events: dict[bytes, tuple[str, dict[str, Any]]] = {}
        for name in contracts:
            for item in load_artifact(name)["abi"]:
                if item["type"] == "event":
                    self._events[bytes(event_abi_to_log_topic(item))] = (name, item)

    def decode(self, raw: Any) -> dict[str, Any] | None:
        topics = raw["topics"]
        entry = self._events.get(bytes(topics[0])) if topics else None
        if entry is None:
            return None
        name, abi = entry
        ev = get_event_data(self.w3.codec, abi, raw)
        return {"event": ev["event"], "contract": self.names.get(Web3.to_checksum_address(raw["address"]), name),
                "address": Web3.to_checksum_address(raw["address"]), "blockNumber": raw["blockNumber"],
                "blockHash": "0x" + bytes(raw["blockHash"]).hex(),
                "transactionHash": "0x" + bytes(raw["transactionHash"]).hex(), "logIndex": raw["logIndex"],
                "args": _jsonable(dict(ev["args"])), "removed": False}


@dataclass
class MonitorSettings:
    confirmations: int = 2
    max_blocks: int = 1000  # per eth_getLogs request
    window: int = 64  # block hashes (and their events) remembered for reorg handling


class Monitor:
    def __init__(self, w3: Web3, contracts: dict[str, str], checkpoint_path: Path, out: IO[str],
                 start_block: int, settings: MonitorSettings | None = None, resumable: bool = True,
                 deliver: Callable[[list[dict[str, Any]]], None] | None = None, reactions: bool = False):
        """`out` is the JSON-lines file, opened for reading and appending; with `resumable` False
        (a pipe or a terminal) it is never cut back and delivery is at least once. With
        `reactions`, each dispute, risk warning and revocation is followed by a notification line
        per session it concerns (monitor/reactions.py)."""
        self.w3 = w3
        self.resumable = resumable and out.seekable()
        self.deliver = deliver  # e.g. Webhooks.deliver; runs before the checkpoint moves
        self.settings = settings or MonitorSettings()
        self.decoder = EventDecoder(w3, contracts)
        self.addresses = list(self.decoder.names)
        self.reactor = (Reactor(w3, contracts, start_block, self.decoder.decode, window=self.settings.window,
                                max_blocks=self.settings.max_blocks) if reactions else None)
        self.checkpoint_path = Path(checkpoint_path)
        self.out = out
        chain_id = w3.eth.chain_id
        if self.checkpoint_path.exists():
            self.state = Checkpoint.load(self.checkpoint_path)
            if self.state.chain_id != chain_id:
                raise ValueError(f"checkpoint is for chain {self.state.chain_id}, the RPC serves {chain_id}")
        else:
            self.state = Checkpoint(chain_id, start_block)
        self._resume_output()

    def _resume_output(self) -> None:
        """Cut the output back to what the checkpoint covers (lines after it will be re-emitted)."""
        if self.resumable:
            self.out.seek(0, os.SEEK_END)
            if self.out.tell() > self.state.out_offset:
                self.out.truncate(self.state.out_offset)
            self.out.seek(self.state.out_offset)

    def _write(self, events: list[dict[str, Any]]) -> None:
        if self.deliver is not None and events:
            self.deliver(events)
        for e in events:
            self.out.write(json.dumps(e, sort_keys=True) + "\n")
        self.out.flush()
        if self.resumable:
            os.fsync(self.out.fileno())

    def _commit(self) -> None:
        self.state.out_offset = self.out.tell() if self.resumable else 0
        self.state.save(self.checkpoint_path)

    def _handle_reorg(self) -> int:
        """Undo the events of dropped blocks; return how many blocks were dropped."""
        recent = self.state.recent
        dropped = 0
        while recent:
            number, known = recent[-1]
            try:
                current = "0x" + bytes(self.w3.eth.get_block(number)["hash"]).hex()
            except BlockNotFound:  # the new chain is shorter
                current = None
            if current == known:
                break
            undone = [{**e, "removed": True} for e in reversed(self.state.emitted.pop(str(number), []))]
            self._write(undone)
            recent.pop()
            dropped += 1
            self.state.next_block = number
        if dropped and not recent:
            raise ReorgTooDeep(f"no block of the last {self.settings.window} processed is on the chain any more")
        if dropped:
            log.warning("reorg: dropped %d blocks, rescanning from %d", dropped, self.state.next_block)
            self._commit()
        return dropped

    def step(self) -> int:
        """Process at most `max_blocks` confirmed blocks; return how many (0: caught up)."""
        self._handle_reorg()
        safe = self.w3.eth.block_number - self.settings.confirmations
        start = self.state.next_block
        if safe < start:
            return 0
        end = min(safe, start + self.settings.max_blocks - 1)
        raw = self.w3.eth.get_logs({"fromBlock": start, "toBlock": end, "address": self.addresses})
        hashes = {n: "0x" + bytes(self.w3.eth.get_block(n)["hash"]).hex()
                  for n in range(max(start, end - self.settings.window + 1), end + 1)}
        events = [e for e in (self.decoder.decode(r) for r in raw) if e is not None]
        if any(e["blockNumber"] in hashes and hashes[e["blockNumber"]] != e["blockHash"] for e in events):
            return self.step()  # the chain moved between the two reads: read again
        events.sort(key=lambda e: (e["blockNumber"], e["logIndex"]))
        if self.reactor is not None:
            try:
                events = self.reactor.react(events, hashes)
            except ChainMoved:
                return self.step()
        self._write(events)
        for e in events:
            if e["blockNumber"] in hashes:
                self.state.emitted.setdefault(str(e["blockNumber"]), []).append(e)
        self.state.recent.extend([n, h] for n, h in sorted(hashes.items()))
        self._trim()
        self.state.next_block = end + 1
        self._commit()
        return end - start + 1

    def _trim(self) -> None:
        keep = self.state.recent[-self.settings.window:]
        oldest = keep[0][0] if keep else 0
        self.state.recent = keep
        self.state.emitted = {k: v for k, v in self.state.emitted.items() if int(k) >= oldest}

    def run(self, poll_s: float = 1.0, once: bool = False, should_stop: Callable[[], bool] = lambda: False,
            wake: Callable[[float], bool] | None = None, safety_s: float = 30.0) -> None:
        """Step until caught up, then wait: `poll_s` (polling), or, with `wake` (monitor/ws.py's
        Subscription.wait: True when there is news), until the next notification, looking
        anyway every `safety_s` in case one was missed. `should_stop` is asked every `poll_s`."""
        while not should_stop():
            if self.step() == 0:
                if once:
                    return
                if wake is None:
                    time.sleep(poll_s)
                    continue
                quiet_since = time.monotonic()
                while not should_stop() and not wake(poll_s) and time.monotonic() - quiet_since < safety_s:
                    pass


def _held(lines: list[dict[str, Any]]) -> dict[tuple[str, int, str, str], dict[str, Any]]:
    held: dict[tuple[str, int, str, str], dict[str, Any]] = {}
    for e in lines:
        key = (e["transactionHash"], e["logIndex"], e["blockHash"], e.get("sessionId", ""))
        if e["removed"]:
            held.pop(key, None)
        else:
            held[key] = e
    return held


def fold(lines: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """The events a consumer holds after applying every line (adds and `removed` undos), as
    (transactionHash, logIndex) in emission order. Notification lines are not events: see
    `fold_notifications`."""
    return [(t, i) for (t, i, _, _), e in _held(lines).items() if "notification" not in e]


def fold_notifications(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The notifications a consumer holds after applying every line, in emission order."""
    return [e for e in _held(lines).values() if "notification" in e]
