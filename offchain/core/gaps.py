"""Finding lost frames in a camera's sequence numbers (I5), pure.

A camera numbers its frames; a hole in the numbers is a lost frame. Whether the hole swallowed a
keyframe matters, because every frame up to the next keyframe is then undecodable: the GOP is
estimated from the keyframes seen, and a hole is flagged when a keyframe was due inside it.

Everything here costs work in proportion to the frames held, never to the size of a hole or of a
time span: a hole is a range (one object for 3,000,000 lost numbers), sets of numbers are
`SeqRanges`, and the part of a hole that falls in a window is found by binary search.

A camera's numbering and clock are also checked here (`check_step`, `classify_arrival`): a
counter that jumps, a clock that jumps or runs backwards, and a restart are told apart from loss
and from replay (docs/RELIABILITY.md).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from enum import Enum
from statistics import median
from typing import Any, Callable, Iterator, Sequence

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

    def time_of(self, seq: int, step_ms: float) -> float:
        """Capture time of a lost frame: interpolated between the frames around the hole, or
        extrapolated at the frame rate (`step_ms` apart) from the one there is."""
        if self.before and self.after:
            span = self.after[0] - self.before[0]
            return self.before[1] + (seq - self.before[0]) * (self.after[1] - self.before[1]) / span
        if self.before:
            return self.before[1] + (seq - self.before[0]) * step_ms
        if self.after:
            return self.after[1] - (self.after[0] - seq) * step_ms
        return 0.0

    def seqs_in_window(self, start_ms: int, end_ms: int, step_ms: float) -> range:
        """The lost numbers whose capture time falls in [start_ms, end_ms), in O(log n): time is
        monotonic along a hole (interpolated or extrapolated linearly), so two binary searches
        find the part, whatever the hole's size."""
        lo, hi = self.from_seq, self.to_seq
        rising = self.time_of(hi, step_ms) >= self.time_of(lo, step_ms)

        def first(pred: Callable[[float], bool]) -> int:  # first seq in [lo, hi + 1) for which pred holds (pred monotone)
            a, b = lo, hi + 1
            while a < b:
                mid = (a + b) // 2
                if pred(self.time_of(mid, step_ms)):
                    b = mid
                else:
                    a = mid + 1
            return a

        if rising:
            return range(first(lambda t: t >= start_ms), first(lambda t: t >= end_ms))
        # a clock that ran backwards across the hole: times fall as numbers rise
        return range(first(lambda t: t < end_ms), first(lambda t: t < start_ms))


class SeqRanges:
    """A set of sequence numbers kept as sorted, disjoint, inclusive ranges: memory and work grow
    with the number of ranges, not with how many numbers they cover."""

    def __init__(self, ranges: Sequence[tuple[int, int]] = ()):
        self._starts: list[int] = []
        self._ends: list[int] = []
        for lo, hi in ranges:
            self.add(lo, hi)

    @property
    def range_count(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends))

    def __contains__(self, seq: object) -> bool:
        if not isinstance(seq, int):
            return False
        i = bisect.bisect_right(self._starts, seq) - 1
        return i >= 0 and self._ends[i] >= seq

    def add(self, lo: int, hi: int) -> None:
        """Add [lo, hi], merging with touching or overlapping ranges."""
        if hi < lo:
            return
        i = bisect.bisect_left(self._ends, lo - 1)  # first range that ends at or after lo - 1
        j = bisect.bisect_right(self._starts, hi + 1)  # ranges before j start at or before hi + 1
        if i < j:
            lo, hi = min(lo, self._starts[i]), max(hi, self._ends[j - 1])
        self._starts[i:j] = [lo]
        self._ends[i:j] = [hi]

    def covers(self, lo: int, hi: int) -> bool:
        """Whether every number of [lo, hi] is in the set."""
        return self.first_gap(lo, hi) is None

    def first_gap(self, lo: int, hi: int) -> tuple[int, int] | None:
        """The first maximal stretch of [lo, hi] not in the set, or None."""
        i = bisect.bisect_right(self._starts, lo) - 1
        if i >= 0 and self._ends[i] >= lo:
            lo = self._ends[i] + 1
            i += 1
        else:
            i += 1
        if lo > hi:
            return None
        end = hi if i >= len(self._starts) else min(hi, self._starts[i] - 1)
        return (lo, end)

    def drop_below(self, seq: int) -> None:
        """Forget every number below `seq`."""
        i = bisect.bisect_left(self._ends, seq)
        del self._starts[:i], self._ends[:i]
        if self._starts and self._starts[0] < seq:
            self._starts[0] = seq


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


def frame_step_ms(codec: dict[str, Any] | None) -> float:
    """Milliseconds between frames at the camera's declared rate ("fps": "25/1"), 40 if unknown;
    at least 1 fps is assumed, so a broken declaration cannot make every hole look plausible."""
    try:
        num, den = str((codec or {}).get("fps", "25/1")).split("/")
        return 1000 / max(float(num) / float(den), 1.0)
    except (ValueError, ZeroDivisionError):
        return 40.0


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



# ------------------------------------------------------------------ a camera's numbers and clock

class CameraAnomaly(Enum):
    """Named alarms about a camera's numbering or clock (kinds in the alarm pool)."""

    SEQ_JUMP = "camera.seq_jump"  # far more numbers skipped than the time between could hold
    CLOCK_JUMP = "camera.clock_jump"  # time leapt forward far more than the numbers, or ran backwards
    RESTART = "camera.restart"  # numbering started again (a reboot): seq down, time beyond all seen


@dataclass(frozen=True)
class StepLimits:
    """When consecutive frames (by number) stop being plausible. Defaults in docs/RELIABILITY.md."""

    rate_factor: float = 4.0  # numbers may run this many times faster than the frame rate
    slack_frames: int = 250  # plus this many (10 s at 25 fps): bursts, a slow clock
    backwards_ms: int = 1_000  # time may go back this much along the numbering (reordering)
    forward_ms: int = 60_000  # and leap forward this much beyond what the numbers explain


def plausible_lost(prev: Seen, cur: Seen, step_ms: float, limits: StepLimits = StepLimits()) -> int:
    """How many frames could really have been lost between two held frames, given their times."""
    dt = max(cur[1] - prev[1], 0)
    return int(dt / step_ms * limits.rate_factor) + limits.slack_frames


def check_step(prev: Seen, cur: Seen, step_ms: float, limits: StepLimits = StepLimits()) -> CameraAnomaly | None:
    """Judge two consecutive held frames of a camera (`prev.seq < cur.seq`, nothing held between)."""
    ds, dt = cur[0] - prev[0], cur[1] - prev[1]
    if dt < -limits.backwards_ms:
        return CameraAnomaly.CLOCK_JUMP
    if ds - 1 > plausible_lost(prev, cur, step_ms, limits):
        return CameraAnomaly.SEQ_JUMP
    if dt > ds * step_ms * limits.rate_factor + limits.forward_ms:
        return CameraAnomaly.CLOCK_JUMP
    return None


class Arrival(Enum):
    """What a validly signed frame is, against what the node holds of its camera."""

    NEW = "new"  # not held: keep it
    DUPLICATE = "duplicate"  # the same (seq, time, digest) again: a resend or a replay, harmless
    RESTART = "restart"  # its number is taken, but it was captured after every frame held
    EQUIVOCATION = "equivocation"  # its number is taken by different content within the time held


def classify_arrival(held: tuple[int, bytes] | None, ts: int, sha: bytes, max_ts: int | None) -> Arrival:
    """`held` is (timestamp_ms, sha256) of the frame already held under the packet's number.

    Every packet is signed over (camera, seq, time, digest), so a replay cannot change any of
    them: a replay is an exact copy of a frame held (DUPLICATE) or an old frame whose time lies
    within what is held. A camera that reboots numbers from 0 again, but its clock goes on: a
    taken number with a capture time after every frame held (`max_ts`) is a RESTART, not an
    attack. A taken number with other content inside the held time span is EQUIVOCATION."""
    if held is None:
        return Arrival.NEW
    held_ts, held_sha = held
    if held_ts == ts and held_sha == sha:
        return Arrival.DUPLICATE
    if max_ts is not None and ts > max_ts:
        return Arrival.RESTART
    return Arrival.EQUIVOCATION


def codec_tracks(codec: dict[str, Any] | None) -> list[int]:
    """The tracks a camera's signed codec configuration declares: video (0), and audio (1) when
    it has an "audio" entry (`offchain.camera.sources.AudioConfig`)."""
    return [0, 1] if isinstance((codec or {}).get("audio"), dict) else [0]


def track_step_ms(codec: dict[str, Any] | None, track: int) -> float:
    """Milliseconds between packets of a track: the video frame rate, or the audio packet rate
    (its "fps" entry: packets per second, e.g. "375/8" for AAC at 48 kHz)."""
    if track == 0:
        return frame_step_ms(codec)
    audio = (codec or {}).get("audio")
    return frame_step_ms(audio if isinstance(audio, dict) else None)
