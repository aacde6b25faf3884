"""Built-in reactions: a dispute, a risk warning or a revoked camera notifies the parties of every
session it concerns (the rules: offchain/core/reactions.py).

A notification is one more line of the monitor's output, written right after its cause:

    {"notification": "risk_raised", "sessionId": "0x…", "parties": ["0x…", …], "cameras": ["0x…"],
     "cause": {"event": "RiskRaised", "contract": "VideoLedger", "args": {…}},
     "blockNumber": 812, "blockHash": "0x…", "transactionHash": "0x…", "logIndex": 3, "removed": false}

It carries its cause's position (block, transaction, log index), so it travels with the cause:
written and checkpointed in the same step (exactly once across kills into a file, at least once
to webhooks, like the events), and undone with `"removed": true` when a reorg drops the cause's
block. The sessions are read from the chain's SigningSession events up to the cause, so a rescan
decides the same way; events older than the reorg window are kept in memory, newer ones read
again at each step that has a cause (`eth_getLogs` in ranges of at most `max_blocks`).

A revoked camera's unanchored frames are dropped by the nodes themselves (they follow the
Consortium's camera events: offchain/node/node.py); the monitor only reports the revocation to the
open sessions that include the camera.
"""

from __future__ import annotations

import logging
from typing import Any

from web3 import Web3

from ..chain.client import bind, call
from ..core.block import BlockHeader
from ..core.reactions import SESSION_EVENTS, Cause, Reason, SessionRecord, affected, fold_sessions

log = logging.getLogger(__name__)

REACTIVE: dict[tuple[str, str], Reason] = {
    ("VideoLedger", "BlockDisputed"): Reason.DISPUTE,
    ("BatchLedger", "BatchDisputed"): Reason.DISPUTE,
    ("VideoLedger", "RiskRaised"): Reason.RISK_RAISED,
    ("VideoLedger", "RiskCleared"): Reason.RISK_CLEARED,
    ("Consortium", "CameraRevoked"): Reason.CAMERA_REVOKED,
}


class ChainMoved(RuntimeError):
    """The session events read disagree with the block hashes of the step: read the step again."""


def _hex32(b: bytes) -> str:
    return "0x" + b.hex()


class Reactor:
    """Given the chain, the deployed contracts (name → address) and the monitor's event decoder."""

    def __init__(self, w3: Web3, contracts: dict[str, str], from_block: int, decode: Any, *, window: int = 64,
                 max_blocks: int = 1000):
        """`window` is the monitor's reorg window: session events of blocks older than that
        below a step are final (a deeper reorg stops the monitor) and are kept in memory, so each
        step reads only the newer ones; `max_blocks` bounds each `eth_getLogs` range."""
        self.w3 = w3
        self.contracts = contracts
        self.from_block = from_block
        self.decode = decode
        self.window = window
        self.max_blocks = max_blocks
        self._final: list[dict[str, Any]] = []  # decoded session events of blocks < self._final_to
        self._final_to = from_block
        self._topics = None
        if "SigningSession" in contracts:
            session = bind(w3, "SigningSession", contracts["SigningSession"])
            self._topics = [[self._topic(getattr(session.events, n)) for n in SESSION_EVENTS]]

    @staticmethod
    def _topic(event: Any) -> str:
        topic = event.topic
        return topic if isinstance(topic, str) else "0x" + bytes(topic).hex()

    def react(self, events: list[dict[str, Any]], hashes: dict[int, str]) -> list[dict[str, Any]]:
        """`events` (decoded, in chain order) with each cause followed by its notifications.
        `hashes` are the step's block hashes (number → hash) the session events must match."""
        causes = [e for e in events if (e["contract"], e["event"]) in REACTIVE]
        if not causes:
            return events
        session_events = self._session_events(max(e["blockNumber"] for e in causes), hashes)
        out: list[dict[str, Any]] = []
        for e in events:
            out.append(e)
            reason = REACTIVE.get((e["contract"], e["event"]))
            if reason is None:
                continue
            here = (e["blockNumber"], e["logIndex"])
            sessions = fold_sessions(s for s in session_events if (s["blockNumber"], s["logIndex"]) < here)
            cause = self._cause(reason, e)
            for s in affected(cause, sessions.values()):
                out.append(self._notification(e, cause, s))
        return out

    def _session_events(self, to_block: int, hashes: dict[int, str]) -> list[dict[str, Any]]:
        if self._topics is None:
            return []
        final_to = max(self._final_to, to_block - self.window)  # exclusive
        self._final.extend(self._read(self._final_to, final_to - 1))
        self._final_to = final_to
        recent = self._read(final_to, to_block)
        if any(hashes.get(d["blockNumber"], d["blockHash"]) != d["blockHash"] for d in recent):
            raise ChainMoved("session events from another chain history than the step's")
        return self._final + recent

    def _read(self, first: int, last: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for start in range(first, last + 1, self.max_blocks):
            raw = self.w3.eth.get_logs({"fromBlock": start, "toBlock": min(last, start + self.max_blocks - 1),
                                        "address": self.contracts["SigningSession"], "topics": self._topics})
            out.extend(d for d in (self.decode(r) for r in raw) if d is not None)
        return sorted(out, key=lambda d: (d["blockNumber"], d["logIndex"]))

    def _cause(self, reason: Reason, e: dict[str, Any]) -> Cause:
        at_s = int(self.w3.eth.get_block(e["blockNumber"])["timestamp"])
        args = e["args"]
        if e["event"] == "BlockDisputed":
            ledger = bind(self.w3, "VideoLedger", self.contracts["VideoLedger"])
            header = BlockHeader.from_tuple(call(ledger.functions.getBlock(bytes.fromhex(args["blockHash"][2:])))[0])
            return Cause(reason=reason, at_s=at_s, cameras=frozenset({header.camera_id}),
                         window=(header.window_start_ms, header.window_end_ms),
                         detail={"reason": args["reason"], "node": args["node"], "height": header.height})
        if e["event"] == "BatchDisputed":
            batches = bind(self.w3, "BatchLedger", self.contracts["BatchLedger"])
            rec = call(batches.functions.batchAt(int(args["index"])))
            return Cause(reason=reason, at_s=at_s, cameras=None, window=(int(rec[0]), int(rec[1])),
                         detail={"reason": args["reason"], "node": args["node"], "batch": int(args["index"])})
        return Cause(reason=reason, at_s=at_s, cameras=frozenset({bytes.fromhex(args["cameraId"][2:])}),
                     detail={k: v for k, v in args.items() if k != "cameraId"})

    def _notification(self, e: dict[str, Any], cause: Cause, s: SessionRecord) -> dict[str, Any]:
        cams = [c for c in s.cameras if cause.cameras is None or c in cause.cameras]
        note = {"notification": cause.reason.value, "sessionId": _hex32(s.session_id), "parties": list(s.parties),
                "cameras": [_hex32(c) for c in cams], "window": list(cause.window) if cause.window else None,
                "cause": {"event": e["event"], "contract": e["contract"], "args": e["args"]},
                "blockNumber": e["blockNumber"], "blockHash": e["blockHash"],
                "transactionHash": e["transactionHash"], "logIndex": e["logIndex"], "removed": False}
        log.info("session parties notified", extra={"notification": cause.reason.value, "session": note["sessionId"],
                                                     "parties": ",".join(s.parties), "cause": e["event"],
                                                     "block": e["blockNumber"]})
        return note
