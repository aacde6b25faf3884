"""Grouping repair traffic into bounded requests (core/repair_batches.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offchain.core.repair_batches import ReplyPacker, pack, split_seqs


def test_pack_respects_item_and_weight_bounds_in_order():
    items = [("a", 3), ("b", 3), ("c", 3), ("d", 1), ("e", 1), ("f", 1)]
    groups = pack(items, weight=lambda i: i[1], max_items=4, max_weight=6)
    assert groups == [[("a", 3), ("b", 3)], [("c", 3), ("d", 1), ("e", 1), ("f", 1)]]
    assert pack(items, weight=lambda i: 1, max_items=2, max_weight=100) == [items[0:2], items[2:4], items[4:6]]


def test_pack_lets_an_overweight_item_travel_alone():
    assert pack([5, 50, 5], weight=lambda w: w, max_items=10, max_weight=10) == [[5], [50], [5]]
    assert pack([], weight=lambda w: w, max_items=1, max_weight=1) == []
    with pytest.raises(ValueError):
        pack([1], weight=lambda w: w, max_items=0, max_weight=1)


@given(st.lists(st.integers(min_value=0, max_value=20), max_size=60), st.integers(1, 8), st.integers(20, 60))
def test_pack_keeps_every_item_once_and_every_group_bounded(weights, max_items, max_weight):
    items = list(enumerate(weights))
    groups = pack(items, weight=lambda i: i[1], max_items=max_items, max_weight=max_weight)
    assert [i for g in groups for i in g] == items
    assert all(1 <= len(g) <= max_items and sum(w for _, w in g) <= max_weight for g in groups)


def test_split_seqs_cuts_a_hole_into_bounded_pieces():
    assert split_seqs(10, 19, 4) == [range(10, 14), range(14, 18), range(18, 20)]
    assert split_seqs(7, 7, 500) == [range(7, 8)]
    assert sum(len(r) for r in split_seqs(0, 9_999, 4_096)) == 10_000


def body_size(part) -> int:
    return len(json.dumps({"alarmIds": list(part.alarm_ids), "packets": list(part.packets)}))


def test_reply_packer_fills_posts_up_to_the_budget_and_counts_per_alarm():
    packer = ReplyPacker(budget=100, max_packets=10)
    parts = [p for p in (packer.add(f"a{i % 3}", "x" * 20) for i in range(9)) if p is not None]
    last = packer.finish()
    assert last is not None and packer.finish() is None
    parts.append(last)
    assert sum(len(p.packets) for p in parts) == 9 and len(parts) > 1
    for p in parts:
        assert sum(p.counts) == len(p.packets) and len(p.alarm_ids) == len(set(p.alarm_ids))
        assert body_size(p) <= 100 + len('{"alarmIds": [], "packets": []}')


def test_reply_packer_bounds_packets_and_alarm_ids_per_post():
    packer = ReplyPacker(budget=10_000, max_packets=3, max_alarm_ids=2)
    out = [packer.add(aid, "p") for aid in ["a", "a", "a", "a", "b", "c"]]
    first, second = [p for p in out if p is not None]
    assert first.packets == ("p",) * 3 and first.alarm_ids == ("a",)
    assert second.alarm_ids == ("a", "b") and second.counts == (1, 1)
    assert packer.finish().alarm_ids == ("c",)


def test_reply_packer_refuses_a_packet_that_fits_no_post():
    packer = ReplyPacker(budget=50, max_packets=10)
    assert packer.add("a", "x" * 10) is None
    with pytest.raises(ValueError):
        packer.add("a", "x" * 100)
    assert packer.finish().packets == ("x" * 10,)  # what was gathered is kept
