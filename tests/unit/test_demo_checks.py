"""The demo's verdict (issue 10): every check named, and each one able to fail on its own."""

from __future__ import annotations

from dataclasses import replace

from offchain.demo_checks import EXPECTED_EVIDENCE, Delivery, DemoFacts, deliveries, demo_checks, failed


def stats(**over) -> dict:
    base = {"frames": 800, "sent": 800, "acked": 800, "rejected": 0, "unacked": 0, "dropped_by_fault": 0,
            "dropped_cut": 0, "corrupted": 0, "truncated": 0, "retransmitted": 0, "end_sent": True,
            "rejected_reason": None}
    return {**base, **over}


def honest_facts(rows: list[Delivery]) -> DemoFacts:
    return DemoFacts(windows=2, expected_windows=2, blocks=8, expected_blocks=8, verified=8, final=8,
                     held_frames_missing=0, disputes=0, deliveries=tuple(rows),
                     whitelisted=frozenset({"10.0.1.11", "10.0.1.12"}), intruder_frames_stored=0,
                     evidence=EXPECTED_EVIDENCE, session_completed=True)


def honest_rows() -> list[Delivery]:
    return deliveries({
        "10.0.1.11": {"node-a": stats(), "node-b": stats(sent=768, acked=768, unacked=32, dropped_by_fault=32)},
        "10.0.1.12": {"node-a": stats(sent=700, acked=700, unacked=100, dropped_cut=100),
                      "node-b": stats(acked=745, rejected=55, corrupted=55)},
        "10.0.9.99": {"node-a": stats(acked=0, rejected=800, rejected_reason="not-registered", end_sent=False)},
    })


def test_an_honest_run_passes_every_check_and_faults_explain_what_was_not_acknowledged():
    rows = honest_rows()
    checks = demo_checks(honest_facts(rows))
    assert failed(checks) == []
    assert len(checks) == 11 and all(c.passed for c in checks)
    assert [d.unexplained for d in rows] == [0, 0, 0, 0, 0]  # the intruder is refused, not unexplained


def test_each_check_fails_alone_and_is_named():
    facts = honest_facts(honest_rows())
    cases = {
        "every window anchored": replace(facts, windows=1),
        "every block anchored": replace(facts, blocks=7, final=7, verified=7),
        "every block final": replace(facts, final=7),
        "every block verified from a node's store": replace(facts, verified=7),
        "no dispute on chain": replace(facts, disputes=1),
        "no frame a node holds missing from its block (tails included)": replace(facts, held_frames_missing=2),
        "the intruder left nothing": replace(facts, intruder_frames_stored=3),
        "extract, verify and the JS verifier agree on the evidence": replace(facts, evidence="disagree: a/b/c"),
        "signing session complete": replace(facts, session_completed=False),
    }
    for name, bad in cases.items():
        assert name in failed(demo_checks(bad)), name
    assert failed(demo_checks(replace(facts, blocks=7, final=7, verified=7))) == [
        "every block anchored", "every block final", "every block verified from a node's store"]


def test_a_frame_a_node_never_acknowledged_fails_the_run_and_says_where():
    rows = honest_rows()
    lossy = deliveries({"10.0.1.11": {"node-a": stats(acked=797, unacked=3)}})[0]
    facts = honest_facts(rows + [replace(lossy, node="node-c")])
    checks = {c.name: c for c in demo_checks(facts)}
    check = checks["every frame acknowledged but those the faults withheld"]
    assert not check.passed and check.measured == "3 unacknowledged (10.0.1.11→node-c: 3)"
    # More unacknowledged than the faults withheld: only the excess is the node's.
    over = deliveries({"10.0.1.11": {"node-b": stats(acked=760, unacked=40, dropped_by_fault=32)}})[0]
    assert over.unexplained == 8


def test_a_stream_without_its_end_message_fails():
    rows = honest_rows()
    rows[0] = replace(rows[0], end_sent=False)
    checks = {c.name: c for c in demo_checks(honest_facts(rows))}
    assert not checks["every stream ended with an end message"].passed
    assert checks["every stream ended with an end message"].measured == "missing: 10.0.1.11→node-a"
