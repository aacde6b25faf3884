import random
import tracemalloc

from offchain.core.gaps import Arrival, CameraAnomaly, SeqRanges, check_step, classify_arrival
from offchain.core.gaps import Hole, estimate_gop, find_holes, keyframe_lost


def seen(*seqs, gop=10):
    return [(s, s * 40, s % gop == 0) for s in seqs]


def test_find_holes_inside_and_tail():
    holes = find_holes(-1, seen(0, 1, 2, 5, 6, 9), last_seq=12)
    assert [(h.from_seq, h.to_seq) for h in holes] == [(3, 4), (7, 8), (10, 12)]
    assert holes[0].before[0] == 2 and holes[0].after[0] == 5
    assert holes[-1].after is None
    assert find_holes(4, seen(5, 6, 7)) == []
    assert [(h.from_seq, h.to_seq) for h in find_holes(-1, seen(2, 3))] == [(0, 1)]


def test_keyframe_loss_by_gop():
    assert estimate_gop([0, 10, 20, 30]) == 10
    assert estimate_gop([5]) is None
    lost = Hole(19, 21, (18, 720, False), (22, 880, False))
    assert keyframe_lost(lost, last_keyframe_before=10, gop=10)  # keyframe 20 was due
    kept = Hole(13, 14, (12, 480, False), (15, 600, False))
    assert not keyframe_lost(kept, last_keyframe_before=10, gop=10)


# ------------------------------------------------------------ bounded work (issue 8, item 1)


def test_a_three_million_hole_is_one_range_and_its_window_part_is_found_without_listing_it():
    holes = find_holes(-1, [(0, 1_000, True), (3_000_000, 1_040, False)])
    assert [(h.from_seq, h.to_seq) for h in holes] == [(1, 2_999_999)]
    tracemalloc.start()
    part = holes[0].seqs_in_window(1_000, 1_020, 40.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(part, range) and part.start == 1 and part.stop == 1_500_000
    assert peak < 1_000_000  # a list of the hole's numbers would take > 20 MB


def test_window_part_matches_a_brute_force_count_seeded():
    rng = random.Random(8)
    for _ in range(300):
        a_seq, a_ts = rng.randrange(0, 50), rng.randrange(0, 10_000)
        b_seq = a_seq + rng.randrange(2, 400)
        b_ts = a_ts + rng.randrange(-3_000, 20_000)  # clocks that run backwards too
        hole = Hole(a_seq + 1, b_seq - 1, (a_seq, a_ts, False), (b_seq, b_ts, False))
        start = rng.randrange(-2_000, 20_000)
        end = start + rng.randrange(1, 5_000)
        brute = [s for s in hole.seqs if start <= hole.time_of(s, 40.0) < end]
        part = hole.seqs_in_window(start, end, 40.0)
        assert list(part) == brute, (hole, start, end)
    tail = Hole(5, 104, (4, 0, False), None)  # extrapolated at the frame rate
    assert list(tail.seqs_in_window(0, 400, 40.0)) == list(range(5, 14))  # times 40 .. 360


def test_seq_ranges_merge_find_gaps_and_forget_seeded():
    rng = random.Random(1)
    ranges, plain = SeqRanges(), set()
    for _ in range(400):
        lo = rng.randrange(0, 2_000)
        hi = lo + rng.randrange(0, 40)
        ranges.add(lo, hi)
        plain.update(range(lo, hi + 1))
        q_lo = rng.randrange(0, 2_000)
        q_hi = q_lo + rng.randrange(0, 80)
        missing = [s for s in range(q_lo, q_hi + 1) if s not in plain]
        gap = ranges.first_gap(q_lo, q_hi)
        if not missing:
            assert gap is None and ranges.covers(q_lo, q_hi)
        else:
            run_end = missing[0]
            while run_end + 1 <= q_hi and run_end + 1 not in plain:
                run_end += 1
            assert gap == (missing[0], run_end)
        probe = rng.randrange(0, 2_100)
        assert (probe in ranges) == (probe in plain)
    starts = [lo for lo, _ in ranges]
    assert starts == sorted(starts) and all(b + 1 < a for (_, b), (a, _) in zip(list(ranges), list(ranges)[1:]))
    ranges.drop_below(1_000)
    assert all(lo >= 1_000 for lo, _ in ranges) and 999 not in ranges
    huge = SeqRanges([(1, 2_999_999)])
    assert huge.range_count == 1 and huge.covers(1, 2_999_999) and huge.first_gap(0, 3_000_000) == (0, 0)


def test_camera_steps_name_jumps_and_backwards_clocks():
    step = 40.0
    assert check_step((10, 1_000, False), (11, 1_040, False), step) is None
    assert check_step((10, 1_000, False), (85, 4_000, False), step) is None  # 3 s cut: real loss
    assert check_step((0, 1_000, False), (3_000_000, 1_040, False), step) is CameraAnomaly.SEQ_JUMP
    assert check_step((10, 1_700_000_000_000, False), (11, 0, False), step) is CameraAnomaly.CLOCK_JUMP  # reset to epoch 0
    assert check_step((10, 1_000, False), (11, 86_401_000, False), step) is CameraAnomaly.CLOCK_JUMP  # a day ahead


def test_restart_is_told_apart_from_replay_and_equivocation():
    sha, other = b"\x01" * 32, b"\x02" * 32
    assert classify_arrival(None, 5_000, sha, 9_000) is Arrival.NEW
    assert classify_arrival((5_000, sha), 5_000, sha, 9_000) is Arrival.DUPLICATE  # a replayed packet
    assert classify_arrival((5_000, sha), 9_040, other, 9_000) is Arrival.RESTART  # seq 0 again, time goes on
    assert classify_arrival((5_000, sha), 6_000, other, 9_000) is Arrival.EQUIVOCATION  # inside the held time
    assert classify_arrival((5_000, sha), 5_000, other, 9_000) is Arrival.EQUIVOCATION
