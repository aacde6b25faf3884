"""The reaction rules (core/reactions.py): which sessions a dispute, a risk warning or a
revocation concerns, from the session events before it."""

from __future__ import annotations

from offchain.core.reactions import Cause, Phase, Reason, affected, fold_sessions

A, B, C = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32


def proposed(sid: int, cameras: list[bytes], start: int, end: int, expires: int = 1000) -> dict:
    return {"event": "SessionProposed", "args": {"sessionId": "0x" + bytes([sid]).hex() * 32, "parties": ["0x1", "0x2"],
                                                 "cameras": ["0x" + c.hex() for c in cameras], "startMs": start,
                                                 "endMs": end, "expiresAt": expires}}


def phase(sid: int, event: str) -> dict:
    return {"event": event, "args": {"sessionId": "0x" + bytes([sid]).hex() * 32}}


def ids(sessions) -> set[int]:
    return {s.session_id[0] for s in sessions}


EVENTS = [proposed(1, [A, B], 0, 100), proposed(2, [A], 200, 300), proposed(3, [B], 0, 100),
          proposed(4, [A], 0, 100), proposed(5, [A], 0, 100), phase(4, "SessionDeclined"), phase(5, "SessionFormed"),
          phase(5, "SessionCompleted"), phase(9, "SessionFormed"), {"event": "Other", "args": {}}]


def test_fold_follows_the_phases_and_ignores_unknown_sessions():
    s = fold_sessions(EVENTS)
    assert sorted(x[0] for x in s) == [1, 2, 3, 4, 5]
    assert s[bytes([4]) * 32].phase is Phase.DECLINED and s[bytes([5]) * 32].phase is Phase.COMPLETED
    assert s[bytes([1]) * 32].cameras == (A, B) and s[bytes([1]) * 32].parties == ("0x1", "0x2")


def test_a_block_dispute_concerns_live_sessions_of_its_camera_overlapping_its_window():
    sessions = fold_sessions(EVENTS).values()
    dispute = Cause(reason=Reason.DISPUTE, at_s=10, cameras=frozenset({A}), window=(50, 150))
    assert ids(affected(dispute, sessions)) == {1, 5}  # 2: later range, 3: other camera, 4: declined
    assert ids(affected(Cause(reason=Reason.DISPUTE, at_s=10, cameras=frozenset({A}), window=(100, 200)), sessions)) == set()


def test_a_batch_dispute_concerns_every_camera():
    sessions = fold_sessions(EVENTS).values()
    assert ids(affected(Cause(reason=Reason.DISPUTE, at_s=10, cameras=None, window=(0, 50)), sessions)) == {1, 3, 5}


def test_risk_and_revocation_concern_open_sessions_of_the_camera_whatever_their_range():
    sessions = fold_sessions(EVENTS).values()
    for reason in (Reason.RISK_RAISED, Reason.RISK_CLEARED, Reason.CAMERA_REVOKED):
        assert ids(affected(Cause(reason=reason, at_s=10, cameras=frozenset({A})), sessions)) == {1, 2}  # 5: completed
        assert ids(affected(Cause(reason=reason, at_s=10, cameras=frozenset({C})), sessions)) == set()
    # after the deadline, a session nobody formed has expired
    assert ids(affected(Cause(reason=Reason.RISK_RAISED, at_s=1000, cameras=frozenset({A})), sessions)) == set()
