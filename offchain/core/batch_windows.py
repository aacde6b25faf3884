"""Batch-mode window decisions, pure (docs/NODES.md, "Batch mode"): whether an aligned window
W is ready to be anchored as one batch over every camera, and whether a node may sign a batch
a peer asks it to sign. The per-camera rules stay those of `core.windows`; this only combines
them. No I/O and no clock: the shell (`offchain/node/batcher.py`) passes the facts in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Sequence

from .windows import Readiness, WindowRules, turn_at


@dataclass(frozen=True, kw_only=True)
class CameraWindow:
    """One camera's state in window W, as `core.windows` judges it."""

    camera_id: bytes
    closed: bool
    readiness: Readiness  # meaningful only when closed


class BatchState(Enum):
    READY = "ready"  # every camera with frames or holes in W is ready
    OPEN = "open"  # some camera's W is still open
    REPAIRING = "repairing"  # some camera's W is closed but still repairing
    EMPTY = "empty"  # no camera has anything in W


@dataclass(frozen=True, kw_only=True)
class BatchReadiness:
    state: BatchState
    cameras: tuple[bytes, ...]  # READY: the cameras whose blocks the batch holds, ascending
    waiting_on: bytes | None = None  # OPEN / REPAIRING: the first camera that holds W back


def batch_readiness(cameras: Sequence[CameraWindow]) -> BatchReadiness:
    """W is ready when every camera that has anything in it is closed and ready (a camera whose
    W is EMPTY is left out of the batch); one open or repairing camera holds the whole batch."""
    included: list[bytes] = []
    for cam in sorted(cameras, key=lambda c: c.camera_id):
        if not cam.closed:
            return BatchReadiness(state=BatchState.OPEN, cameras=(), waiting_on=cam.camera_id)
        if cam.readiness is Readiness.REPAIRING:
            return BatchReadiness(state=BatchState.REPAIRING, cameras=(), waiting_on=cam.camera_id)
        if cam.readiness is Readiness.READY:
            included.append(cam.camera_id)
    if not included:
        return BatchReadiness(state=BatchState.EMPTY, cameras=())
    return BatchReadiness(state=BatchState.READY, cameras=tuple(included))


def slot_live(attempt: int, now_ms: int, *, window_end_ms: int, prev_anchored_ms: int, rules: WindowRules) -> bool:
    """Whether a node may still sign for slot `attempt` now: its own slot or the next, give or
    take `clock_skew_ms` (a batch of slot k lives through slot k+1: `may_send_signed`)."""
    return any(slot_plausible(a, now_ms, window_end_ms=window_end_ms, prev_anchored_ms=prev_anchored_ms, rules=rules)
               for a in (attempt, attempt + 1))


def slot_plausible(attempt: int, now_ms: int, *, window_end_ms: int, prev_anchored_ms: int, rules: WindowRules) -> bool:
    """Whether a proposer's claimed slot `attempt` is the slot this node's clock reads now, give
    or take `clock_skew_ms` (the proposer judged it a moment ago on its own clock)."""
    skew = rules.clock_skew_ms
    seen = {turn_at(t, window_end_ms=window_end_ms, prev_anchored_ms=prev_anchored_ms, rules=rules).attempt
            for t in (now_ms - skew, now_ms, now_ms + skew)}
    return attempt in seen


class SignDecision(Enum):
    SIGN = "sign"  # nothing signed for this window and slot yet
    SAME_AGAIN = "same-again"  # this very batch was signed before: the same signature again
    EQUIVOCATION = "already-signed"  # another batch was signed for this window and slot: refuse
    PROMISED = "promised-previous-slot"  # another batch of this window was signed in the slot before: refuse
    SUPERSEDED = "signed-next-slot"  # another batch of this window was signed in the slot after: refuse


def sign_decision(signed_before: bytes | None, digest: bytes, signed_previous_slot: bytes | None = None,
                  signed_next_slot: bytes | None = None) -> SignDecision:
    """A node signs at most one batch per (window, slot): `signed_before` is the digest of the
    batch it signed for them (None: none), `digest` the one asked for now. And at most one batch
    of a window in any two consecutive slots: none for slot k+1 if it signed another in slot k
    (`signed_previous_slot`: a promise that no other quorum forms while that proposer may still
    send, `may_send_signed`), none for slot k, asked late, if it signed another in slot k+1
    (`signed_next_slot`). Any two quorums share a node, so two batches of consecutive slots
    never both gather one."""
    if signed_before is None:
        if signed_previous_slot is not None and signed_previous_slot != digest:
            return SignDecision.PROMISED
        if signed_next_slot is not None and signed_next_slot != digest:
            return SignDecision.SUPERSEDED
        return SignDecision.SIGN
    return SignDecision.SAME_AGAIN if signed_before == digest else SignDecision.EQUIVOCATION


def may_send_signed(claimed_attempt: int, now_ms: int, *, window_end_ms: int, prev_anchored_ms: int,
                    rules: WindowRules) -> bool:
    """Whether a batch whose signatures were asked for in slot `claimed_attempt` may be sent now:
    in that slot from `clock_skew_ms` after its start, and on through the next slot until
    `clock_skew_ms` before its end. Every signer refuses to sign another batch of the window in the next slot
    (`SignDecision.PROMISED`), so no second quorum can form meanwhile; without this grace a
    proposer whose build and collection outlast one slot on a loaded machine never sends, and
    neither does any node after it (bench latency, 200 cameras: every takeover passed)."""
    turn = turn_at(now_ms, window_end_ms=window_end_ms, prev_anchored_ms=prev_anchored_ms, rules=rules)
    if turn.attempt == claimed_attempt:  # its end edge included: the next slot's signers promised
        return turn.start_ms is None or now_ms >= turn.start_ms + rules.clock_skew_ms
    return turn.attempt == claimed_attempt + 1 and now_ms < turn.end_ms - rules.clock_skew_ms


class Refusal(Exception):
    """A sign request refused: `reason` is the problem's name (a `BatchProblem` value or one of
    the node's own: manifest-unavailable, malformed, inline-mismatch, chain-unavailable,
    not-caught-up, wrong-prev-batch-root, not-this-slot, not-the-proposer, block-check,
    omits-camera, already-signed)."""

    def __init__(self, reason: str, detail: str, camera: bytes | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.camera = camera
