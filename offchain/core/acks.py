"""Sets of sequence numbers kept as ranges: what a node holds of a camera (to acknowledge it) and
what a camera has had acknowledged by a node. Pure, bounded.

A `SeqRanges` keeps ``upto`` (every seq from ``start`` to ``upto`` is in the set) and a sorted
list of disjoint inclusive ranges above ``upto + 1``. A permanent hole costs one range, not one
entry per later frame; the number of ranges is capped (`max_ranges`): a seq that would open a
range beyond the cap is not recorded (the caller loses only precision: a node then does not
acknowledge that frame yet, and the camera keeps it buffered).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

__all__ = ["MAX_RANGES", "SeqRanges", "missing", "overlap"]

MAX_RANGES = 4096


class SeqRanges:
    def __init__(self, start: int = 0, max_ranges: int = MAX_RANGES) -> None:
        self.start = start
        self.upto = start - 1          # start..upto all held
        self.ranges: list[list[int]] = []  # disjoint, sorted, each [a, b] with a > upto + 1
        self.max_ranges = max_ranges
        self.version = 0               # bumped on every change (ack senders compare it)

    def __contains__(self, seq: int) -> bool:
        if self.start <= seq <= self.upto:
            return True
        i = bisect_right(self.ranges, [seq, float("inf")]) - 1
        return i >= 0 and self.ranges[i][0] <= seq <= self.ranges[i][1]

    def __len__(self) -> int:
        return max(0, self.upto - self.start + 1) + sum(b - a + 1 for a, b in self.ranges)

    def add(self, seq: int) -> bool:
        """Record one seq; True if it was new."""
        if seq < self.start or seq in self:
            return False
        if seq == self.upto + 1:
            self.upto = seq
            while self.ranges and self.ranges[0][0] <= self.upto + 1:
                self.upto = max(self.upto, self.ranges.pop(0)[1])
            self.version += 1
            return True
        i = bisect_right(self.ranges, [seq, float("inf")])
        left = self.ranges[i - 1] if i > 0 else None
        right = self.ranges[i] if i < len(self.ranges) else None
        if left is not None and left[1] == seq - 1:
            left[1] = seq
            if right is not None and right[0] == seq + 1:
                left[1] = right[1]
                del self.ranges[i]
        elif right is not None and right[0] == seq + 1:
            right[0] = seq
        elif len(self.ranges) < self.max_ranges:
            self.ranges.insert(i, [seq, seq])
        else:
            return False
        self.version += 1
        return True

    def add_many(self, seqs: Iterable[int]) -> None:
        for s in seqs:
            self.add(s)

    def add_range(self, a: int, b: int) -> None:
        """Record a..b inclusive (an acknowledgement's range), in O(ranges), not O(b - a)."""
        if b < a:
            return
        a = max(a, self.start)
        if a <= self.upto + 1:
            if b > self.upto:
                self.upto = b
                while self.ranges and self.ranges[0][0] <= self.upto + 1:
                    self.upto = max(self.upto, self.ranges.pop(0)[1])
                self.version += 1
            return
        merged = [a, b]
        keep: list[list[int]] = []
        for r in self.ranges:
            if r[1] < merged[0] - 1 or r[0] > merged[1] + 1:
                keep.append(r)
            else:
                merged = [min(merged[0], r[0]), max(merged[1], r[1])]
        if len(keep) >= self.max_ranges:
            return
        keep.append(merged)
        keep.sort()
        self.ranges = keep
        self.version += 1

    def head(self, limit: int) -> list[list[int]]:
        """The lowest `limit` ranges above ``upto`` (what an acknowledgement carries)."""
        return [list(r) for r in self.ranges[:limit]]

    def intervals(self) -> list[tuple[int, int]]:
        """Every member as disjoint inclusive intervals, ascending."""
        head = [(self.start, self.upto)] if self.upto >= self.start else []
        return head + [(a, b) for a, b in self.ranges]


def overlap(a: SeqRanges, b: SeqRanges) -> int:
    """How many seqs are in both sets (O(ranges))."""
    x, y = a.intervals(), b.intervals()
    i = j = total = 0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if lo <= hi:
            total += hi - lo + 1
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return total


def missing(a: SeqRanges, minus: list[SeqRanges], limit: int = 10) -> list[tuple[int, int]]:
    """The first `limit` intervals of seqs in `a` but in none of `minus` (what a node did not
    acknowledge), ascending."""
    out: list[tuple[int, int]] = []
    holes = sorted(iv for m in minus for iv in m.intervals())
    for lo, hi in a.intervals():
        cur = lo
        for h_lo, h_hi in holes:
            if h_hi < cur or h_lo > hi:
                continue
            if h_lo > cur:
                out.append((cur, h_lo - 1))
                if len(out) >= limit:
                    return out
            cur = max(cur, h_hi + 1)
            if cur > hi:
                break
        if cur <= hi:
            out.append((cur, hi))
            if len(out) >= limit:
                return out
    return out
