"""The pure window rules of block production (offchain/core/windows.py): closing, readiness, the
proposer's slots, the next window to visit and gap interpolation."""

from __future__ import annotations

import pytest

from offchain.core.block import FrameRef, Gap, proposer_for
from offchain.core.windows import (Neighbours, Readiness, StreamView, Turn, WindowRules, is_closed, may_anchor,
                                   next_after_anchored, next_after_empty, overlaps, proposer_of, readiness,
                                   settled_late, slots_from_ms, turn_at, waits_for_silent_peers, window_gaps)

W = 60_000
RULES = WindowRules(window_ms=W, idle_close_ms=4_000, repair_deadline_ms=6_000, proposer_timeout_ms=5_000,
                    clock_skew_ms=500)
NODES = ["0xA", "0xB", "0xC"]
CAM = b"\x07" * 32


def frames(*pairs: tuple[int, int]) -> list[FrameRef]:
    return [FrameRef.of_bytes(seq, ts, b"f%d" % seq, seq % 10 == 0) for seq, ts in pairs]


# ---------------------------------------------------------------------------- closing
def test_a_frame_at_or_after_the_end_closes_the_window():
    assert is_closed(W, StreamView(newest_ms=W, ended=False, silent_ms=0), RULES)
    assert not is_closed(W, StreamView(newest_ms=W - 1, ended=False, silent_ms=0), RULES)


def test_an_ended_stream_closes_after_idle_close():
    assert not is_closed(W, StreamView(newest_ms=10_000, ended=True, silent_ms=4_000), RULES)
    assert is_closed(W, StreamView(newest_ms=10_000, ended=True, silent_ms=4_001), RULES)


def test_a_camera_cut_off_mid_window_is_waited_for_as_long_as_the_rest_of_the_window():
    cut = StreamView(newest_ms=10_000, ended=False, silent_ms=30_000)  # idle far beyond idle_close
    assert not is_closed(W, cut, RULES)  # 50 s of the window were still to come
    assert is_closed(W, StreamView(newest_ms=10_000, ended=False, silent_ms=50_001), RULES)
    # near the end of the window, idle_close is the least it waits
    assert not is_closed(W, StreamView(newest_ms=W - 100, ended=False, silent_ms=3_000), RULES)
    assert is_closed(W, StreamView(newest_ms=W - 100, ended=False, silent_ms=4_001), RULES)


# -------------------------------------------------------------------------- readiness
def test_readiness_waits_for_repair_until_the_deadline():
    assert readiness(has_frames=True, has_holes=True, closed_for_ms=5_999, rules=RULES) is Readiness.REPAIRING
    assert readiness(has_frames=True, has_holes=True, closed_for_ms=6_000, rules=RULES) is Readiness.READY
    assert readiness(has_frames=True, has_holes=False, closed_for_ms=0, rules=RULES) is Readiness.READY
    # nothing held, but something known missing: still a block (of gaps) after the deadline
    assert readiness(has_frames=False, has_holes=True, closed_for_ms=6_000, rules=RULES) is Readiness.READY
    assert readiness(has_frames=False, has_holes=False, closed_for_ms=0, rules=RULES) is Readiness.EMPTY


def test_settled_late_after_twice_the_deadline():
    assert not settled_late(12_000, RULES) and settled_late(12_001, RULES)


def test_overlaps_with_open_bounds():
    assert overlaps(None, None, 0, W)
    assert overlaps(None, 1, 0, W) and not overlaps(None, 0, 0, W)
    assert overlaps(W - 1, None, 0, W) and not overlaps(W, None, 0, W)


# --------------------------------------------------------------------------- the turn
def test_rules_refuse_a_timeout_with_no_room_to_send():
    with pytest.raises(ValueError, match="twice"):
        WindowRules(window_ms=W, idle_close_ms=0, repair_deadline_ms=0, proposer_timeout_ms=1_000, clock_skew_ms=500)
    with pytest.raises(ValueError):
        WindowRules(window_ms=0, idle_close_ms=0, repair_deadline_ms=0, proposer_timeout_ms=1_000, clock_skew_ms=0)


def test_slots_count_from_the_later_of_window_end_and_the_previous_anchor():
    assert slots_from_ms(W, 0, RULES) == W + 6_000 + 5_000
    assert slots_from_ms(W, W + 30_000, RULES) == W + 30_000 + 11_000  # replayed history: the previous anchor


def test_slot_zero_then_one_slot_per_timeout():
    first = slots_from_ms(W, 0, RULES)
    t = turn_at(W + 1, window_end_ms=W, prev_anchored_ms=0, rules=RULES)
    assert t == Turn(attempt=0, start_ms=None, end_ms=first, may_send=True)
    assert not turn_at(first - 500, window_end_ms=W, prev_anchored_ms=0, rules=RULES).may_send  # edge of slot 0
    assert turn_at(first - 501, window_end_ms=W, prev_anchored_ms=0, rules=RULES).may_send
    one = turn_at(first, window_end_ms=W, prev_anchored_ms=0, rules=RULES)
    assert (one.attempt, one.start_ms, one.end_ms, one.may_send) == (1, first, first + 5_000, False)
    assert turn_at(first + 500, window_end_ms=W, prev_anchored_ms=0, rules=RULES).may_send
    assert not turn_at(first + 4_500, window_end_ms=W, prev_anchored_ms=0, rules=RULES).may_send
    assert turn_at(first + 5_000 * 7 + 1_000, window_end_ms=W, prev_anchored_ms=0, rules=RULES).attempt == 8


def test_a_lone_node_may_anchor_at_the_edges_of_its_slots():
    first = slots_from_ms(W, 0, RULES)
    for now in (first - 500, first, first + 4_999, first + 5_000):  # edges: within clock_skew_ms of a slot's end or start
        turn = turn_at(now, window_end_ms=W, prev_anchored_ms=0, rules=RULES)
        assert not turn.may_send
        assert may_anchor("solo", turn, window_start_ms=0, nodes=["solo"], camera=CAM)
        assert not any(may_anchor(n, turn, window_start_ms=0, nodes=NODES, camera=CAM) for n in NODES)


def test_each_attempt_moves_to_the_next_node_and_wraps():
    first = slots_from_ms(W, 0, RULES)
    picks = [proposer_of(turn_at(first + k * 5_000 + 1_000, window_end_ms=W, prev_anchored_ms=0, rules=RULES),
                         window_start_ms=0, nodes=NODES, camera=CAM) for k in range(7)]
    start = NODES.index(proposer_for(CAM, 0, NODES, 0))
    assert picks[0] == proposer_for(CAM, 0, NODES, 1)
    assert picks == [NODES[(start + 1 + k) % 3] for k in range(7)]


def test_at_any_instant_at_most_one_node_may_anchor_and_a_down_proposer_is_taken_over_by_one():
    first = slots_from_ms(W, 0, RULES)
    senders_per_ms = []
    for now in range(W - 1_000, first + 4 * 5_000, 50):
        turn = turn_at(now, window_end_ms=W, prev_anchored_ms=0, rules=RULES)
        senders_per_ms.append([n for n in NODES if may_anchor(n, turn, window_start_ms=0, nodes=NODES, camera=CAM)])
    assert all(len(s) <= 1 for s in senders_per_ms)
    down = proposer_for(CAM, 0, NODES, 0)
    takeover = [s[0] for s, now in zip(senders_per_ms, range(W - 1_000, first + 4 * 5_000, 50))
                if s and first <= now < first + 5_000]
    assert takeover and set(takeover) == {proposer_for(CAM, 0, NODES, 1)} and down not in takeover


def test_clocks_within_the_tolerance_never_both_send():
    """Two nodes whose clocks differ by up to clock_skew_ms: whenever one may send, the other's
    reading of the same instant is in the same slot; sends of different slots are at least
    2 x clock_skew_ms apart on one clock (room for the other's clock and for inclusion)."""
    first = slots_from_ms(W, 0, RULES)
    for now in range(first - 6_000, first + 3 * 5_000, 37):
        mine = turn_at(now, window_end_ms=W, prev_anchored_ms=0, rules=RULES)
        if not mine.may_send:
            continue
        for offset in range(-500, 501, 25):
            theirs = turn_at(now + offset, window_end_ms=W, prev_anchored_ms=0, rules=RULES)
            assert theirs.attempt == mine.attempt, (now, offset)
    sends = [(now, turn_at(now, window_end_ms=W, prev_anchored_ms=0, rules=RULES)) for now in range(first - 6_000, first + 15_000, 10)]
    sends = [(now, t.attempt) for now, t in sends if t.may_send]
    for (a, ka), (b, kb) in zip(sends, sends[1:]):
        if ka != kb:
            assert b - a >= 2 * RULES.clock_skew_ms


def test_the_turn_of_a_window_without_a_camera():
    """Batch anchoring: one proposer for a window of every camera, deterministic and rotating."""
    picks = [proposer_for(None, w * W, NODES) for w in range(30)]
    assert picks == [proposer_for(None, w * W, NODES) for w in range(30)] and set(picks) == set(NODES)
    t = turn_at(W + 1, window_end_ms=W, prev_anchored_ms=0, rules=RULES)
    assert proposer_of(t, window_start_ms=0, nodes=NODES) == proposer_for(None, 0, NODES, 0)
    assert proposer_for(None, 0, NODES, 1) == NODES[(NODES.index(proposer_for(None, 0, NODES)) + 1) % 3]


# ------------------------------------------------------------------ the next window
def test_a_frame_decades_back_costs_one_visit():
    tip_end = 50 * 365 * 86_400_000  # the chain is far ahead of the late frame
    # after the late frame's window, the next pooled frame lies at the tip: jump straight there
    assert next_after_anchored(W, tip_end, next_pool_ms=tip_end + 5, open_alarm_ends_ms=[], window_ms=W) == tip_end
    # nothing pooled: the first window after the tip
    assert next_after_anchored(W, tip_end, next_pool_ms=None, open_alarm_ends_ms=[], window_ms=W) == tip_end


def test_next_after_anchored_stops_at_pooled_frames_and_alarm_ends():
    tip_end = 100 * W
    assert next_after_anchored(W, tip_end, next_pool_ms=7 * W + 3, open_alarm_ends_ms=[], window_ms=W) == 7 * W
    assert next_after_anchored(W, tip_end, next_pool_ms=None, open_alarm_ends_ms=[4 * W + 1, 0], window_ms=W) == 4 * W
    assert next_after_anchored(W, tip_end, next_pool_ms=0, open_alarm_ends_ms=[], window_ms=W) == W  # never backwards


def test_next_after_empty_jumps_to_the_next_frame():
    assert next_after_empty(W, 9 * W + 17, W) == 9 * W
    assert next_after_empty(W, None, W) == W


# ------------------------------------------------------------------ gap interpolation
def test_a_hole_across_a_window_boundary_is_split_between_the_windows():
    before_window = frames(*[(s, s * 100) for s in range(8)])  # seqs 0-7 at 0-700 ms
    after_boundary = frames(*[(s, s * 100) for s in range(13, 20)])  # seqs 13-19 at 1300-1900 ms
    first = window_gaps(0, 1_000, before_window, Neighbours(before=None, after=(13, 1_300, False), first_seq=0,
                                                             last_seq=None), 100)
    second = window_gaps(1_000, 2_000, after_boundary, Neighbours(before=(7, 700, False), after=None, first_seq=0,
                                                                  last_seq=None), 100)
    assert first == [Gap(8, 9, 800, 1_000)]
    assert second == [Gap(10, 12, 1_000, 1_300)]


def test_a_lost_tail_is_extrapolated_at_the_frame_rate_and_a_leading_hole_from_first_seq():
    got = window_gaps(0, 1_000, frames((2, 200), (3, 300)), Neighbours(before=None, after=None, first_seq=0, last_seq=6), 100)
    assert got == [Gap(0, 1, 0, 200), Gap(4, 6, 400, 700)]
    assert window_gaps(0, 1_000, frames((5, 500)), Neighbours(before=None, after=None, first_seq=5, last_seq=None), 100) == []


def test_a_hole_of_millions_is_split_by_time_not_walked():
    around = Neighbours(before=(0, 0, True), after=(3_000_001, 3_000_000_000, False), first_seq=0, last_seq=None)
    got = window_gaps(W, 2 * W, [], around, 40)
    assert len(got) == 1 and got[0].from_ms >= W and got[0].to_ms <= 2 * W
    assert got[0].to_seq - got[0].from_seq + 1 == 60  # 60 s of a hole spread over 3,000,000 s


# ------------------------------------------------------------------ a peer gave no answer
def test_a_silent_peer_is_waited_for_until_the_repair_deadline_or_half_a_timeout_before_the_slot_ends():
    end = 10 * W
    slot0 = turn_at(end + 100, window_end_ms=end, prev_anchored_ms=0, rules=RULES)
    assert slot0.end_ms == end + 6_000 + 5_000
    wait = lambda closed_for, now: waits_for_silent_peers(closed_for_ms=closed_for, now_ms=now, turn=slot0, rules=RULES)
    assert wait(0, end + 100)
    assert not wait(6_000, end + 100)  # the repair deadline has passed: seal, the rest declared
    # slot 0 ends at end + 11,000; 500 ms of skew and 2,500 ms (half a timeout) kept to build and send
    assert wait(1_000, end + 7_999) and not wait(1_000, end + 8_000)
    # a takeover slot is bounded the same way by its own end
    slot1 = turn_at(end + 11_000, window_end_ms=end, prev_anchored_ms=0, rules=RULES)
    assert slot1.attempt == 1
    assert waits_for_silent_peers(closed_for_ms=0, now_ms=end + 12_999, turn=slot1, rules=RULES)
    assert not waits_for_silent_peers(closed_for_ms=0, now_ms=end + 13_000, turn=slot1, rules=RULES)
