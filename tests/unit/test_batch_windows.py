"""Batch-mode window decisions (`core.batch_windows`)."""

from __future__ import annotations

import pytest

from offchain.core.batch_windows import (BatchState, CameraWindow, SignDecision, batch_readiness, may_send_signed,
                                         sign_decision, slot_live, slot_plausible)
from offchain.core.windows import Readiness, WindowRules, slots_from_ms
from offchain.node.config import ConfigError, NodeConfig

RULES = WindowRules(window_ms=3_000, idle_close_ms=1_500, repair_deadline_ms=1_500, proposer_timeout_ms=2_000,
                    clock_skew_ms=500)
A, B, C = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def cw(cam: bytes, closed: bool = True, ready: Readiness = Readiness.READY) -> CameraWindow:
    return CameraWindow(camera_id=cam, closed=closed, readiness=ready)


def test_a_window_is_ready_only_when_every_camera_with_something_in_it_is():
    assert batch_readiness([cw(B), cw(A)]) .cameras == (A, B)
    held = batch_readiness([cw(A), cw(B, closed=False)])
    assert held.state is BatchState.OPEN and held.waiting_on == B and held.cameras == ()
    repairing = batch_readiness([cw(A), cw(C, ready=Readiness.REPAIRING)])
    assert repairing.state is BatchState.REPAIRING and repairing.waiting_on == C


def test_empty_cameras_are_left_out_and_an_all_empty_window_is_empty():
    ready = batch_readiness([cw(A, ready=Readiness.EMPTY), cw(B)])
    assert ready.state is BatchState.READY and ready.cameras == (B,)
    assert batch_readiness([cw(A, ready=Readiness.EMPTY)]).state is BatchState.EMPTY
    assert batch_readiness([]).state is BatchState.EMPTY


def test_a_claimed_slot_must_be_the_one_this_clock_reads_give_or_take_the_skew():
    end, prev = 30_000, 0
    first = slots_from_ms(end, prev, RULES)  # slot 1 starts here
    kw = {"window_end_ms": end, "prev_anchored_ms": prev, "rules": RULES}
    assert slot_plausible(0, first - 2_000, **kw)
    assert not slot_plausible(1, first - 2_000, **kw)
    assert slot_plausible(1, first - 200, **kw) and slot_plausible(0, first + 200, **kw)  # within the skew
    assert slot_plausible(2, first + 2_100, **kw) and not slot_plausible(0, first + 2_100, **kw)


def test_a_node_signs_one_batch_per_window_and_slot():
    assert sign_decision(None, b"d") is SignDecision.SIGN
    assert sign_decision(b"d", b"d") is SignDecision.SAME_AGAIN
    assert sign_decision(b"d", b"e") is SignDecision.EQUIVOCATION


def test_a_signature_of_slot_k_is_a_promise_not_to_sign_another_batch_of_the_window_in_slot_k_plus_1():
    assert sign_decision(None, b"e", signed_previous_slot=b"d") is SignDecision.PROMISED
    assert sign_decision(None, b"d", signed_previous_slot=b"d") is SignDecision.SIGN  # the same batch again
    assert sign_decision(b"e", b"e", signed_previous_slot=b"d") is SignDecision.SAME_AGAIN
    assert sign_decision(b"e", b"f", signed_previous_slot=None) is SignDecision.EQUIVOCATION
    # Asked late for slot k after signing another batch in slot k+1: refused the other way round.
    assert sign_decision(None, b"d", signed_next_slot=b"e") is SignDecision.SUPERSEDED
    assert sign_decision(None, b"e", signed_next_slot=b"e") is SignDecision.SIGN


def test_a_node_may_sign_for_slot_k_during_slot_k_or_k_plus_1_give_or_take_the_skew():
    end, prev = 30_000, 0
    first = slots_from_ms(end, prev, RULES)
    kw = {"window_end_ms": end, "prev_anchored_ms": prev, "rules": RULES}
    assert slot_live(0, first - 2_000, **kw) and slot_live(0, first + 1_900, **kw)
    assert slot_live(0, first + 2_400, **kw) and not slot_live(0, first + 2_600, **kw)  # slot 2, past the skew
    assert not slot_live(2, first + 100, **kw) and slot_live(2, first + 1_600, **kw)  # slot 2 not yet (skew)


def test_a_batch_signed_in_slot_k_may_be_sent_until_the_skew_before_the_end_of_slot_k_plus_1():
    end, prev = 30_000, 0
    first = slots_from_ms(end, prev, RULES)  # slot 1 starts here; slots last 2,000 ms, skew 500
    kw = {"window_end_ms": end, "prev_anchored_ms": prev, "rules": RULES}
    assert may_send_signed(0, first - 2_000, **kw)
    assert may_send_signed(0, first - 100, **kw)  # slot 0's edge: the next slot's signers promised
    assert may_send_signed(0, first + 1_400, **kw) and not may_send_signed(0, first + 1_500, **kw)
    assert not may_send_signed(0, first + 2_100, **kw)  # slot 2: its proposer may gather a quorum
    assert not may_send_signed(1, first - 100, **kw)  # before its slot (its edge, on another clock)
    assert not may_send_signed(1, first + 100, **kw) and may_send_signed(1, first + 600, **kw)
    assert may_send_signed(1, first + 3_400, **kw) and not may_send_signed(1, first + 3_600, **kw)


def test_anchoring_mode_is_a_checked_config_key_with_an_env_override():
    base = {"name": "n", "data_dir": "/tmp/n", "rpc_url": "http://127.0.0.1:1", "deployment": "d.json"}
    assert NodeConfig.from_dict(base, env={}).anchoring == "header"
    assert NodeConfig.from_dict(base, env={"FRAMELEDGER_NODE_ANCHORING": "batch"}).anchoring == "batch"
    with pytest.raises(ConfigError, match="anchoring"):
        NodeConfig.from_dict({**base, "anchoring": "both"}, env={})
