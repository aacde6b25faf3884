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
