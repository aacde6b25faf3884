"""The demo's verdict as named checks (pure): what `frameledger demo` counts before it may say
PASSED, and which check failed when it says FAILED (issue 10, "outcomes that lie").

A demo that passes has every window anchored and final, every block verified from a node's
store, no dispute on chain, no frame a node holds left out of its block (a lost tail included),
every frame a whitelisted camera produced acknowledged by every node except those the scenario's
faults kept from it, nothing stored of the intruder, the three verifiers agreeing on the
expected evidence verdict, and the signing session complete. Each camera's delivery to each node
is one `Delivery` row, read from the camera agents' `NodeStats` (the agent's acknowledgement
accounting, docs/TRANSPORT.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EXPECTED_EVIDENCE = "verified_with_declared_gaps"  # the cut camera's range crosses a declared, substituted gap


@dataclass(frozen=True)
class Delivery:
    """One camera's stream to one node, from the agent's side."""

    camera: str
    node: str
    produced: int
    sent: int
    acked: int
    rejected: int
    unacked: int
    withheld: int     # the scenario's drop and cut faults: never sent to this node
    damaged: int      # corrupted or truncated on the way by the scenario's faults
    resent: int
    end_sent: bool
    refused: str | None  # why the node refused the camera's hello (the intruder: not-registered)

    @property
    def unexplained(self) -> int:
        """Frames neither acknowledged nor accounted for by an injected fault: a node that lost or
        never confirmed what it was sent. (A damaged frame is either rejected by the node or, for
        a truncated one, never a whole packet; both are the fault's, not the node's.)"""
        if self.refused is not None:
            return 0
        return max(0, self.unacked - self.withheld - self.damaged)


def deliveries(agent_stats: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[Delivery]:
    """`ScenarioRun.agent_stats` (camera ip -> node name -> `NodeStats.as_dict()`) as rows."""
    rows = []
    for camera, per_node in sorted(agent_stats.items()):
        for node, s in sorted(per_node.items()):
            rows.append(Delivery(camera=camera, node=node, produced=int(s["frames"]), sent=int(s["sent"]),
                                 acked=int(s["acked"]), rejected=int(s["rejected"]), unacked=int(s["unacked"]),
                                 withheld=int(s["dropped_by_fault"]) + int(s["dropped_cut"]),
                                 damaged=int(s["corrupted"]) + int(s["truncated"]), resent=int(s["retransmitted"]),
                                 end_sent=bool(s["end_sent"]), refused=s.get("rejected_reason")))
    return rows


DELIVERY_HEADERS = ["camera", "node", "produced", "sent", "acked", "rejected", "unacked", "withheld by fault",
                    "damaged by fault", "unexplained", "resent", "end sent", "refused"]


def delivery_table_rows(rows: Sequence[Delivery]) -> list[list[Any]]:
    return [[d.camera, d.node, d.produced, d.sent, d.acked, d.rejected, d.unacked, d.withheld, d.damaged,
             d.unexplained, d.resent, "yes" if d.end_sent else "no", d.refused or "-"] for d in rows]


@dataclass(frozen=True)
class DemoCheck:
    name: str
    passed: bool
    measured: str
    expected: str


@dataclass(frozen=True)
class DemoFacts:
    """What the demo measured, by keyword; every field a check reads."""

    windows: int
    expected_windows: int
    blocks: int
    expected_blocks: int
    verified: int
    final: int
    held_frames_missing: int
    disputes: int
    deliveries: tuple[Delivery, ...]
    whitelisted: frozenset[str]
    intruder_frames_stored: int
    evidence: str
    session_completed: bool


def demo_checks(f: DemoFacts) -> list[DemoCheck]:
    """Every check of the demo's verdict, in the order a reader follows the run."""
    honest = [d for d in f.deliveries if d.camera in f.whitelisted]
    unexplained = sum(d.unexplained for d in honest)
    unexplained_at = [f"{d.camera}→{d.node}: {d.unexplained}" for d in honest if d.unexplained]
    no_end = [f"{d.camera}→{d.node}" for d in honest if not d.end_sent]
    return [
        DemoCheck("every window anchored", f.windows == f.expected_windows,
                  f"{f.windows} windows", f"{f.expected_windows}"),
        DemoCheck("every block anchored", f.blocks == f.expected_blocks, f"{f.blocks} blocks", f"{f.expected_blocks}"),
        DemoCheck("every block final", f.final == f.blocks == f.expected_blocks, f"{f.final} final", f"{f.expected_blocks}"),
        DemoCheck("every block verified from a node's store", f.verified == f.blocks == f.expected_blocks,
                  f"{f.verified} verified", f"{f.expected_blocks}"),
        DemoCheck("no dispute on chain", f.disputes == 0, f"{f.disputes} disputes", "0"),
        DemoCheck("no frame a node holds missing from its block (tails included)", f.held_frames_missing == 0,
                  f"{f.held_frames_missing} missing", "0"),
        DemoCheck("every frame acknowledged but those the faults withheld", unexplained == 0,
                  f"{unexplained} unacknowledged" + (f" ({', '.join(unexplained_at)})" if unexplained_at else ""), "0"),
        DemoCheck("every stream ended with an end message", not no_end,
                  "all" if not no_end else "missing: " + ", ".join(no_end), "all"),
        DemoCheck("the intruder left nothing", f.intruder_frames_stored == 0,
                  f"{f.intruder_frames_stored} frames stored", "0"),
        DemoCheck("extract, verify and the JS verifier agree on the evidence", f.evidence == EXPECTED_EVIDENCE,
                  f.evidence, EXPECTED_EVIDENCE),
        DemoCheck("signing session complete", f.session_completed,
                  "completed" if f.session_completed else "not completed", "completed"),
    ]


def failed(checks: Sequence[DemoCheck]) -> list[str]:
    return [c.name for c in checks if not c.passed]


CHECK_HEADERS = ["check", "ok", "measured", "expected"]


def check_table_rows(checks: Sequence[DemoCheck]) -> list[list[str]]:
    return [[c.name, "yes" if c.passed else "NO", c.measured, c.expected] for c in checks]
