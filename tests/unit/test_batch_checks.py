"""Batch mode's one-request-per-peer checks (`core.batch_checks`): holdings ranges, inline
manifests, and B4 of one block against the pool (the rule both modes apply)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offchain.core.batch_checks import (MAX_PULL_FRAMES, MAX_RANGES_PER_CAMERA, InlineError, assign_pulls, inline_count,
                                        judge_block, match_inline, not_covered, pull_settled, seq_ranges,
                                        valid_ranges)
from offchain.core.block import FrameRef, build_block, frames_tree

W = 5_000
T0 = 1_700_000_000_000
PROPOSER = "0x" + "ab" * 20


def ref(seq: int, ts: int | None = None, data: bytes | None = None) -> FrameRef:
    return FrameRef.of_bytes(seq, T0 + seq * 100 if ts is None else ts, data or b"frame %d" % seq, seq % 10 == 0)


def block(frames: list[FrameRef], ip: str = "10.0.0.1"):
    return build_block(camera_ip=ip, height=1, prev_hash=b"\x11" * 32, window_start_ms=T0, window_end_ms=T0 + W,
                       frames=frames, proposer=PROPOSER, codec={})


@given(st.sets(st.integers(min_value=0, max_value=500), max_size=80))
def test_ranges_cover_exactly_the_seqs_and_are_valid(seqs):
    ranges = seq_ranges(seqs)
    assert valid_ranges([list(r) for r in ranges])
    assert {s for lo, hi in ranges for s in range(lo, hi + 1)} == seqs
    assert all(b[0] > a[1] + 1 for a, b in zip(ranges, ranges[1:]))  # adjacent numbers merged
    held = [ref(s) for s in range(0, 501, 7)]
    assert {f.seq for f in not_covered(held, ranges, 10_000)} == {f.seq for f in held} - seqs


def test_a_contiguous_window_is_one_range():
    assert seq_ranges(range(1000, 1125)) == [(1000, 1124)]
    assert seq_ranges([5, 3, 4, 9]) == [(3, 5), (9, 9)]
    assert seq_ranges([]) == []


@pytest.mark.parametrize("ranges", [[[3, 2]], [[1, 4], [4, 6]], [[5, 6], [1, 2]], [[1]], [[-1, 2]],
                                    [[2 * i, 2 * i] for i in range(MAX_RANGES_PER_CAMERA + 1)]])
def test_malformed_ranges_are_refused(ranges):
    assert not valid_ranges(ranges)


def test_not_covered_stops_at_the_limit():
    held = [ref(s) for s in range(50)]
    assert [f.seq for f in not_covered(held, [(10, 19)], 5)] == [0, 1, 2, 3, 4]
    assert [f.seq for f in not_covered(held, [(0, 49)], 5)] == []


def test_inline_count_fits_the_body_limit_base64_encoded():
    sizes = [1000] * 100
    n = inline_count(sizes, body_limit=100_000, fixed=10_000)
    assert 0 < n < 100
    assert n * 1000 * 4 / 3 + 10_000 * 4 / 3 <= 100_000  # what is sent fits
    assert inline_count(sizes, body_limit=10_000_000) == 100
    assert inline_count(sizes, body_limit=1_000, fixed=1_000) == 0


def test_inline_manifests_must_each_be_a_block_of_the_batch_once():
    a, b = block([ref(1)]), block([ref(2)], ip="10.0.0.2")
    carried = match_inline([a.header, b.header], [b.manifest_bytes, a.manifest_bytes])
    assert carried == {a.header.manifest_digest: a.manifest_bytes, b.header.manifest_digest: b.manifest_bytes}
    assert match_inline([a.header], []) == {}
    with pytest.raises(InlineError, match="no block of this batch"):
        match_inline([a.header], [b.manifest_bytes])
    with pytest.raises(InlineError, match="twice"):
        match_inline([a.header], [a.manifest_bytes, a.manifest_bytes])


def test_a_block_matching_the_pool_passes_and_lists_what_this_node_lacks():
    frames = [ref(s) for s in range(10)]
    b = block(frames)
    verdict = judge_block(b.header, b.manifest, {f.seq: f for f in frames})
    assert verdict.problem is None and verdict.lacking == ()
    verdict = judge_block(b.header, b.manifest, {f.seq: f for f in frames[:7]})
    assert verdict.problem is None and verdict.lacking == (7, 8, 9)


def test_b4_names_each_problem():
    frames = [ref(s) for s in range(5)]
    b = block(frames)
    held = {f.seq: f for f in frames}

    def problem(header=b.header, manifest=b.manifest, pool=held) -> str | None:
        return judge_block(header, manifest, pool).problem

    assert problem(pool={**held, 9: ref(9)}) == "manifest omits frame 9 held by this node"
    assert problem(pool={**held, 2: ref(2, data=b"other bytes")}) == "frame 2 cannot be verified by this node"
    assert problem(header=dataclasses.replace(b.header, height=2)) == "manifest does not describe this header"
    assert problem(header=dataclasses.replace(b.header, frame_count=4)) == "frames root or count differs from the manifest"
    assert problem(header=dataclasses.replace(b.header, frames_root=hashlib.sha256(b"x").digest())) == \
        "frames root or count differs from the manifest"
    twice = dataclasses.replace(b.manifest, frames=b.manifest.frames + (frames[0],))
    twice_header = dataclasses.replace(b.header, frame_count=6, frames_root=frames_tree(b.header.camera_id, twice.frames).root)
    assert problem(header=twice_header, manifest=twice) == "manifest lists a sequence number twice"
    outside = [ref(0), ref(1, ts=T0 + W + 1)]
    header = dataclasses.replace(block([ref(0)]).header)
    manifest = dataclasses.replace(block([ref(0)]).manifest, frames=tuple(outside))
    header = dataclasses.replace(header, frame_count=2, frames_root=frames_tree(header.camera_id, outside).root)
    assert problem(header=header, manifest=manifest, pool={}) == "manifest lists a frame outside the window"


def test_an_empty_window_block_passes_only_when_this_node_holds_nothing_of_it():
    b = block([])
    assert judge_block(b.header, b.manifest, {}).problem is None
    assert judge_block(b.header, b.manifest, {3: ref(3)}).problem == "manifest omits frame 3 held by this node"


def test_each_lacking_frame_is_pulled_once_from_the_first_peer_that_lists_it():
    a, b = b"\x01" * 32, b"\x02" * 32
    asks = assign_pulls([{a: [3, 4, 5], b: [9]}, None, {a: [5, 6], b: [9, 10]}], mine={a: {4}})
    assert asks == [{a: [3, 5], b: [9]}, {}, {a: [6], b: [10]}]
    assert assign_pulls([{a: [1]}], mine={a: {1}}) == [{}]
    many = assign_pulls([{a: list(range(MAX_PULL_FRAMES + 10))}], mine={})
    assert len(many[0][a]) == MAX_PULL_FRAMES


def test_a_pull_is_settled_only_when_every_peer_answered_whole_and_every_listed_frame_is_here_or_delivered():
    a, b = b"\x0a" * 32, b"\x0b" * 32
    answers = [{a: [60, 61]}, {a: [60]}]
    asks = [{a: [60, 61]}, {}]
    both = {(a, 60), (a, 61)}
    assert pull_settled(answers, [False, False], asks, [both, None], held={a: {60, 61}})
    # a delivered packet this node refused (not held) is settled: waiting would not change it
    assert pull_settled(answers, [False, False], asks, [both, None], held={a: set()})
    # a peer silent, or its list cut short
    assert not pull_settled([answers[0], None], [False, False], asks, [both, None], held={a: {60, 61}})
    assert not pull_settled(answers, [True, False], asks, [both, None], held={a: {60, 61}})
    # the frames request failed, or came back without a listed frame (two peers listing the same
    # camera: the union of their lists counts, not the last one's)
    assert not pull_settled(answers, [False, False], asks, [None, None], held={a: set()})
    assert not pull_settled(answers, [False, False], asks, [{(a, 60)}, None], held={a: {60}})
    # listed but never asked (the pull's frame budget ran out) and not held: not settled
    assert not pull_settled([{a: [1, 2], b: [5]}], [False], [{a: [1, 2]}], [{(a, 1), (a, 2)}], held={a: {1, 2}})
