"""The verifier's frame index keeps its marks in columns per manifest group (issue 9); these
pin what the rules read from it: one frame per (height, camera, seq), the last listed when a
hostile manifest lists one twice or substitutes under the block's own camera, and marks that
views and columns share."""

from types import SimpleNamespace as NS

from offchain.core.block import FrameRef
from offchain.evidence.verify import _Frame, _index_frames

CAM, SUB = b"\x01" * 32, b"\x02" * 32


def _refs(seqs, base=1_000):
    return tuple(FrameRef.of_bytes(s, base + 40 * k, b"%d/%d" % (base, s), k == 0) for k, s in enumerate(seqs))


def test_each_frame_is_found_in_its_group_and_marks_are_shared():
    trusted = {4: NS(frames=_refs(range(5)), substitutions=((SUB, _refs(range(100, 103), 9_000)),))}
    index = _index_frames(CAM, trusted, {4, 5}, frozenset({("frame", 4, CAM, 3)}))
    assert [(g.height, g.camera, g.primary, len(g.refs)) for g in index.groups] == [(4, CAM, True, 5), (4, SUB, False, 3)]
    assert index.untrusted_heights == {5}
    fr = index.get(4, CAM, 2)
    assert isinstance(fr, _Frame) and fr.ref.seq == 2 and fr.primary and fr.height == 4
    assert index.get(4, SUB, 101).ref.timestamp_ms == 9_040 and not index.get(4, SUB, 101).primary
    assert index.get(4, CAM, 100) is None and index.get(5, CAM, 0) is None
    assert index.get(4, CAM, 3).flagged  # the skip list's frame
    fr.in_raw = True
    assert index.groups[0].in_raw.tolist() == [False, False, True, False, False] and index.get(4, CAM, 2).in_raw
    assert index.anchored == {r.sha256 for g in index.groups for r in g.refs}


def test_a_frame_listed_twice_is_the_last_listing_once():
    frames = _refs([0, 1, 1, 2])
    substituted = _refs([2, 7], 5_000)  # a substitution under the block's own camera shadows seq 2
    trusted = {1: NS(frames=frames, substitutions=((CAM, substituted),))}
    index = _index_frames(CAM, trusted, {1}, frozenset())
    keyed = [(g.primary, r.seq, r.timestamp_ms) for g in index.groups for r in g.refs]
    assert sorted(keyed) == sorted([(True, 0, 1_000), (True, 1, 1_080), (False, 2, 5_000), (False, 7, 5_040)])
    assert index.get(1, CAM, 1).ref is frames[2] and index.get(1, CAM, 2).ref is substituted[0]
    assert not index.get(1, CAM, 2).primary
