"""Which signing sessions an event concerns: the monitor's built-in reactions, pure.

The monitor (offchain/monitor/reactions.py) turns a dispute, a risk warning or a camera revocation
into one notification per affected session, addressed to that session's parties. What counts as
affected is decided here, from the session events on chain before the cause (so a rescan after a
kill or a reorg decides the same way):

* a **dispute** of a block (VideoLedger `BlockDisputed`: its camera and window) or of a batch
  (BatchLedger `BatchDisputed`: its window, every camera) concerns every session that was not
  declined, cancelled or left to expire, whose cameras include the block's camera and whose
  capture range `[startMs, endMs)` overlaps the window. Completed sessions included: the evidence
  they signed is being disputed.
* a **risk warning** raised or cleared (`RiskRaised`, `RiskCleared`) and a **revoked camera**
  (`CameraRevoked`) concern every open session (proposed or formed, not yet expired) that
  includes the camera, whatever its time range: `SigningSession.sign` refuses while any camera of
  the session has an active warning, so the parties learn why signing stops and when it resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Iterable, Mapping


class Reason(Enum):
    DISPUTE = "dispute"
    RISK_RAISED = "risk_raised"
    RISK_CLEARED = "risk_cleared"
    CAMERA_REVOKED = "camera_revoked"


class Phase(Enum):
    PROPOSED = "proposed"
    FORMED = "formed"
    COMPLETED = "completed"
    DECLINED = "declined"
    CANCELLED = "cancelled"


# The SigningSession events that move a session's phase (SessionProposed creates it).
_PHASE_OF_EVENT = {"SessionFormed": Phase.FORMED, "SessionCompleted": Phase.COMPLETED,
                   "SessionDeclined": Phase.DECLINED, "SessionCancelled": Phase.CANCELLED}
SESSION_EVENTS = ("SessionProposed", *_PHASE_OF_EVENT)


@dataclass(frozen=True, kw_only=True)
class SessionRecord:
    session_id: bytes
    parties: tuple[str, ...]
    cameras: tuple[bytes, ...]
    start_ms: int
    end_ms: int
    expires_at: int  # unix seconds, chain time: answers are due by then
    phase: Phase = Phase.PROPOSED

    def open_at(self, at_s: int) -> bool:
        """Still to be signed: formed, or proposed and not expired."""
        return self.phase is Phase.FORMED or (self.phase is Phase.PROPOSED and at_s < self.expires_at)

    def live_at(self, at_s: int) -> bool:
        """Open, or completed: the sessions whose evidence matters."""
        return self.phase is Phase.COMPLETED or self.open_at(at_s)


@dataclass(frozen=True, kw_only=True)
class Cause:
    """What happened: for which cameras (None: every camera, a batch) and which capture window
    (None: any time), at which chain time (seconds)."""

    reason: Reason
    at_s: int
    cameras: frozenset[bytes] | None = None
    window: tuple[int, int] | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


def _b32(value: Any) -> bytes:
    return value if isinstance(value, bytes) else bytes.fromhex(str(value)[2:])


def fold_sessions(events: Iterable[Mapping[str, Any]]) -> dict[bytes, SessionRecord]:
    """The sessions as the given SigningSession events (decoded monitor lines, in chain order)
    leave them. Unknown events and ones naming an unknown session are ignored."""
    sessions: dict[bytes, SessionRecord] = {}
    for e in events:
        args = e["args"]
        if e["event"] == "SessionProposed":
            sid = _b32(args["sessionId"])
            sessions[sid] = SessionRecord(session_id=sid, parties=tuple(args["parties"]),
                                          cameras=tuple(_b32(c) for c in args["cameras"]),
                                          start_ms=int(args["startMs"]), end_ms=int(args["endMs"]),
                                          expires_at=int(args["expiresAt"]))
        elif e["event"] in _PHASE_OF_EVENT:
            sid = _b32(args["sessionId"])
            if sid in sessions:
                sessions[sid] = replace(sessions[sid], phase=_PHASE_OF_EVENT[e["event"]])
    return sessions


def _overlaps(s: SessionRecord, window: tuple[int, int] | None) -> bool:
    return window is None or (s.start_ms < window[1] and window[0] < s.end_ms)


def affected(cause: Cause, sessions: Iterable[SessionRecord]) -> list[SessionRecord]:
    """The sessions `cause` concerns (rules in the module docstring), in the order given."""
    out = []
    for s in sessions:
        if cause.cameras is not None and not cause.cameras.intersection(s.cameras):
            continue
        if cause.reason is Reason.DISPUTE:
            if s.live_at(cause.at_s) and _overlaps(s, cause.window):
                out.append(s)
        elif s.open_at(cause.at_s):
            out.append(s)
    return out
