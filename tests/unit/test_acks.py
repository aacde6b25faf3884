"""Sequence-number ranges behind acknowledgements: what a node holds, what a camera had acked."""

from __future__ import annotations

import random

from offchain.core.acks import SeqRanges, missing, overlap


def test_contiguous_run_and_ranges_above_it():
    r = SeqRanges(0)
    assert r.upto == -1 and len(r) == 0 and 0 not in r
    for s in (0, 1, 2, 5, 6, 9):
        assert r.add(s)
    assert not r.add(5) and not r.add(-1)
    assert r.upto == 2 and r.head(10) == [[5, 6], [9, 9]] and len(r) == 6
    r.add(4)
    assert r.head(10) == [[4, 6], [9, 9]]
    r.add(3)  # closes the hole: the run swallows the ranges it now touches
    assert r.upto == 6 and r.head(10) == [[9, 9]]
    r.add(8)
    r.add(7)
    assert r.upto == 9 and r.ranges == []


def test_matches_a_plain_set_in_any_order():
    rng = random.Random(4)
    for start in (0, 100):
        seqs = [start + s for s in rng.sample(range(2000), 1500)]
        r = SeqRanges(start)
        for s in seqs:
            r.add(s)
        truth = set(seqs)
        assert len(r) == len(truth)
        assert all((s in r) == (s in truth) for s in range(start - 5, start + 2005))
        run = start - 1
        while run + 1 in truth:
            run += 1
        assert r.upto == run


def test_ranges_are_capped_and_add_range_is_not_linear_in_its_span():
    r = SeqRanges(0, max_ranges=3)
    for s in (10, 20, 30):
        assert r.add(s)
    assert not r.add(40)  # a 4th range would exceed the cap: not recorded
    assert r.add(31)      # extending an existing range still works
    big = SeqRanges(0)
    big.add_range(0, 10**12)
    big.add_range(5 * 10**12, 6 * 10**12)
    assert big.upto == 10**12 and big.head(5) == [[5 * 10**12, 6 * 10**12]]
    big.add_range(10**12 + 1, 5 * 10**12 - 1)
    assert big.upto == 6 * 10**12 and big.ranges == []


def test_overlap_counts_common_members():
    a, b = SeqRanges(0), SeqRanges(0)
    a.add_range(0, 99)
    b.add_range(50, 60)
    b.add_range(95, 200)
    assert overlap(a, b) == 11 + 5 == overlap(b, a)
    assert overlap(a, SeqRanges(0)) == 0


def test_missing_lists_what_neither_set_holds():
    produced, acked, rejected = SeqRanges(0), SeqRanges(0), SeqRanges(0)
    produced.add_range(0, 99)
    acked.add_range(0, 9)
    acked.add_range(20, 29)
    rejected.add(50)
    assert missing(produced, [acked, rejected]) == [(10, 19), (30, 49), (51, 99)]
    assert missing(produced, [acked, rejected], limit=2) == [(10, 19), (30, 49)]
    assert missing(acked, [produced]) == []
