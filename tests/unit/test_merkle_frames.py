"""`core.block.frames_tree` writes each leaf's ABI encoding directly (issue 9, extraction speed):
it must build exactly the tree the generic StandardMerkleTree codec builds, and refuse what it
refuses."""

import pytest

from offchain.core.block import FRAME_LEAF_ENCODING, FrameRef, frames_tree
from offchain.core.merkle import InvalidMerkleInput, StandardMerkleTree

CAM = bytes(range(32))


def _frames(n: int) -> list[FrameRef]:
    # audio seqs (track 1 << 48) among video ones, repeated payloads: equal digests at other seqs
    return [FrameRef.of_bytes(i if i % 5 else (1 << 48) | i, 1_700_000_000_000 + 40 * i, b"f %d" % (i % 17), i % 25 == 0)
            for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 300])
def test_the_direct_encoding_builds_the_generic_codecs_tree(n):
    frames = _frames(n)
    fast = frames_tree(CAM, frames)
    ref = StandardMerkleTree.of([f.leaf_values(CAM) for f in frames], list(FRAME_LEAF_ENCODING))
    assert fast is not None
    assert (fast.root, fast._tree, fast._tree_indices, fast._values) == (ref.root, ref._tree, ref._tree_indices, ref._values)
    assert fast.dump() == ref.dump()


def test_no_frames_is_no_tree_and_a_bad_value_is_refused_as_the_library_refuses_it():
    assert frames_tree(CAM, []) is None
    bad = _frames(3) + [FrameRef(timestamp_ms=-1, seq=3, sha256=bytes(32))]
    with pytest.raises(InvalidMerkleInput):
        frames_tree(CAM, bad)
    with pytest.raises(InvalidMerkleInput):
        StandardMerkleTree.of([f.leaf_values(CAM) for f in bad], list(FRAME_LEAF_ENCODING))


def test_leaf_hashes_that_do_not_match_the_values_in_number_are_refused():
    with pytest.raises(InvalidMerkleInput):
        StandardMerkleTree.from_leaf_hashes([bytes(32)], [], list(FRAME_LEAF_ENCODING))
