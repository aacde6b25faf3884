"""`frameledger demo` end to end in both anchoring modes (issue 10): the verdict passes only when
every named check does, and the run shows each camera's delivery to each node."""

from __future__ import annotations

import pytest

from offchain.demo import run_demo

pytestmark = pytest.mark.slow

NODES = ("node-authority", "node-bank", "node-customer")
CAMERAS = ("10.0.1.11", "10.0.1.12", "10.0.2.21", "10.0.2.22")


@pytest.mark.parametrize("anchoring", ["batch", "header"])
def test_the_demo_passes_every_check_and_shows_delivery_per_camera_and_node(tmp_path, anchoring):
    lines: list[str] = []
    summary = run_demo(tmp_path, out=lambda *a: lines.append(" ".join(str(x) for x in a)), anchoring=anchoring)
    text = "\n".join(lines)
    assert summary["failed_checks"] == [], text
    assert summary["passed"] is True
    assert summary["disputes"] == 0 and summary["held_frames_missing"] == 0
    assert summary["blocks"] == summary["expected_blocks"] == summary["verified"] == summary["final"] == 8
    checks = text.split("Checks: the demo's verdict", 1)[1]
    assert "no dispute on chain" in checks and " NO " not in checks
    delivery = text.split("Delivery: what each camera produced", 1)[1].split("Checks:", 1)[0]
    rows = [line.split() for line in delivery.splitlines() if line.startswith("10.0.")]
    assert {(r[0], r[1]) for r in rows} >= {(c, n) for c in CAMERAS for n in NODES}
    # The intruder is refused by every node, by name.
    assert {r[1] for r in rows if r[0] == "10.0.9.99" and r[-1] == "not-registered"} == set(NODES)
