"""Finding lost frames in a camera's sequence numbers (I5), pure.

A camera numbers its frames; a hole in the numbers is a lost frame. Whether the hole swallowed a
keyframe matters, because every frame up to the next keyframe is then undecodable: the GOP is
estimated from the keyframes seen, and a hole is flagged when a keyframe was due inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Sequence

Seen = tuple[int, int, bool]  # (seq, timestamp_ms, keyframe)


@dataclass(frozen=True)
class Hole:
    from_seq: int
    to_seq: int  # inclusive
    before: Seen | None
    after: Seen | None

    @property
    def seqs(self) -> range:
        return range(self.from_seq, self.to_seq + 1)


def find_holes(after_seq: int, seen: Sequence[Seen], last_seq: int | None = None) -> list[Hole]:
    """Holes in `seen` (ascending by seq, all > after_seq), starting right after `after_seq`;
    with `last_seq` (the camera announced its stream ended there) also the lost tail."""
    holes: list[Hole] = []
    expected = after_seq + 1
    before: Seen | None = None
    for item in seen:
        seq = item[0]
        if seq > expected:
            holes.append(Hole(expected, seq - 1, before, item))
        expected = max(expected, seq + 1)
        before = item
    if last_seq is not None and last_seq >= expected:
        holes.append(Hole(expected, last_seq, before, None))
    return holes


def estimate_gop(keyframe_seqs: Sequence[int]) -> int | None:
    """Typical distance between keyframes, or None with fewer than two keyframes seen."""
    diffs = [b - a for a, b in zip(keyframe_seqs, keyframe_seqs[1:]) if b > a]
    return int(median(diffs)) if diffs else None


def keyframe_lost(hole: Hole, last_keyframe_before: int | None, gop: int | None) -> bool:
    """True when a keyframe was due inside the hole (by the GOP), or when the frame after the
    hole is not a keyframe although a full GOP has passed since the last one."""
    if gop is None or last_keyframe_before is None:
        return hole.after is not None and not hole.after[2] and last_keyframe_before is None
    due = last_keyframe_before + gop
    while due < hole.from_seq:
        due += gop
    if due <= hole.to_seq:
        return True
    return hole.after is not None and not hole.after[2] and hole.after[0] - last_keyframe_before >= gop
