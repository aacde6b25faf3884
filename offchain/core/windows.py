"""Window decisions of block production (B1-B5), pure: whether a window is closed, whether it is
ready to seal, whose turn it is to anchor it, which window to visit next, and which lost sequence
numbers fall in it. No I/O and no clock: the node's shell (`offchain/node/producer.py`) reads the
pool, the chain and the time, and passes the values in.

The turn (B3) is a function of facts every node shares, so the nodes agree on it without
talking: the window's end (capture clock), when the block before it was anchored (chain time),
the configured `repair_deadline_ms` and `proposer_timeout_ms`, and the consortium's node list.
Nothing a node observed on its own (when it noticed the window close) enters it, so a node that
lags behind computes the same slots as the others (docs/NODES.md, "Proposer rotation").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Mapping, Sequence

from .block import FrameRef, Gap, proposer_for, track_bounds, track_of, window_of
from .gaps import Hole, Seen, find_holes

NO_BLOCK_BEFORE_MS = 0  # "the block before this window was anchored at": none known (use the window end)


@dataclass(frozen=True, kw_only=True)
class WindowRules:
    """The protocol timing every node of a consortium must share (config keys of the same names)."""

    window_ms: int
    idle_close_ms: int
    repair_deadline_ms: int
    proposer_timeout_ms: int
    clock_skew_ms: int

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.proposer_timeout_ms <= 0:
            raise ValueError("window_ms and proposer_timeout_ms must be positive")
        if min(self.idle_close_ms, self.repair_deadline_ms, self.clock_skew_ms) < 0:
            raise ValueError("idle_close_ms, repair_deadline_ms and clock_skew_ms must not be negative")
        if self.proposer_timeout_ms <= 2 * self.clock_skew_ms:
            # Each slot keeps clock_skew_ms free at both ends; nothing would be left to send in.
            raise ValueError(f"proposer_timeout_ms ({self.proposer_timeout_ms}) must exceed twice "
                             f"clock_skew_ms ({self.clock_skew_ms})")


# ------------------------------------------------------------------ closed and ready
@dataclass(frozen=True, kw_only=True)
class StreamView:
    """What the shell knows of a camera's stream right now."""

    newest_ms: int  # capture time of the newest frame held
    ended: bool  # the camera said its stream ended, and every frame up to its last seq is held
    silent_ms: float  # since the last frame arrived here (or since this process started, if later)


class Pending(Enum):
    """Why a window is not sealed (yet)."""

    OPEN = "open"  # not closed: the camera may still send frames of it
    REPAIRING = "repairing"  # closed, with holes repair may still fill before the deadline
    NOT_OUR_TURN = "not_our_turn"  # ready, but another node's slot (or the edge of ours)


class Readiness(Enum):
    READY = "ready"
    REPAIRING = "repairing"
    EMPTY = "empty"  # nothing held and nothing missing: skip to the window of the next frame


def is_closed(end_ms: int, stream: StreamView, rules: WindowRules) -> bool:
    """A window [start, end) is closed once the camera has sent a frame at or after its end; or
    its stream ended and it has been silent for `idle_close_ms`; or, without an end message,
    once the silence has lasted as long as the rest of the window (at least `idle_close_ms`), so
    a camera cut off mid-window is waited for instead of sealed short."""
    if stream.newest_ms >= end_ms:
        return True
    if stream.ended and stream.silent_ms > rules.idle_close_ms:
        return True
    return stream.silent_ms > max(rules.idle_close_ms, end_ms - stream.newest_ms)


def stream_newest_ms(newest_by_track: Sequence[int | None], lag_ms: int) -> int | None:
    """The `StreamView.newest_ms` of a camera with several tracks (video, audio): the newest
    capture time *every* track has reached, so a window is not closed by one track's packets
    while another's (RTSP video lags its audio by a frame or more) are still on their way. A
    track more than `lag_ms` behind the newest has stopped sending (a camera whose microphone
    went quiet) and holds no window open; a track with nothing held yet is not waited for."""
    known = [t for t in newest_by_track if t is not None]
    if not known:
        return None
    top = max(known)
    return min(t for t in known if t >= top - lag_ms)


def readiness(*, has_frames: bool, has_holes: bool, closed_for_ms: float, rules: WindowRules) -> Readiness:
    """A closed window is ready when nothing in it is missing, or when `repair_deadline_ms` has
    passed since this node saw it closed (what is still missing is then declared as gaps)."""
    if not has_frames and not has_holes:
        return Readiness.EMPTY
    if has_holes and closed_for_ms < rules.repair_deadline_ms:
        return Readiness.REPAIRING
    return Readiness.READY


def settled_late(seen_since_ms: float, rules: WindowRules) -> bool:
    """A window the chain moved past without a block of this node's: after twice the repair
    deadline its pooled frames are filed as late (nothing can anchor them any more)."""
    return seen_since_ms > 2 * rules.repair_deadline_ms


def overlaps(lo_ms: int | None, hi_ms: int | None, start_ms: int, end_ms: int) -> bool:
    """Whether a span (open ended where a bound is None) overlaps the window [start, end)."""
    lo = lo_ms if lo_ms is not None else -1
    hi = hi_ms if hi_ms is not None else 2**63
    return lo < end_ms and hi > start_ms


# ------------------------------------------------------------------------- the turn
@dataclass(frozen=True, kw_only=True)
class Turn:
    """Slot `attempt` of a window: [start_ms, end_ms) on the nodes' clocks (slot 0 has no start:
    the chosen proposer may anchor as soon as the window is ready). `may_send` is False within
    `clock_skew_ms` of either edge, where another node's clock may already or still read a
    different slot."""

    attempt: int
    start_ms: int | None
    end_ms: int
    may_send: bool


def slots_from_ms(window_end_ms: int, prev_anchored_ms: int, rules: WindowRules) -> int:
    """When slot 1 (the first takeover) of a window begins: one proposer timeout after the repair
    deadline, counted from when the window was both over (capture clock) and next in line (the
    block before it anchored; for the first block, the camera's head on chain)."""
    opened = max(window_end_ms, prev_anchored_ms)
    return opened + rules.repair_deadline_ms + rules.proposer_timeout_ms


def turn_at(now_ms: int, *, window_end_ms: int, prev_anchored_ms: int, rules: WindowRules) -> Turn:
    """The slot `now_ms` falls in. Slot 0 runs until `slots_from_ms`; slot k >= 1 lasts
    `proposer_timeout_ms` from there. Within `clock_skew_ms` of an edge nobody sends: two nodes
    whose clocks differ by less than that never both think the same instant is theirs."""
    first = slots_from_ms(window_end_ms, prev_anchored_ms, rules)
    skew, timeout = rules.clock_skew_ms, rules.proposer_timeout_ms
    if now_ms < first:
        return Turn(attempt=0, start_ms=None, end_ms=first, may_send=now_ms < first - skew)
    attempt = 1 + (now_ms - first) // timeout
    start = first + (attempt - 1) * timeout
    end = start + timeout
    return Turn(attempt=attempt, start_ms=start, end_ms=end, may_send=start + skew <= now_ms < end - skew)


def proposer_of(turn: Turn, *, window_start_ms: int, nodes: Sequence[str], camera: bytes | None = None) -> str:
    """The node whose slot `turn` is: `proposer_for` of the camera's window, or of the window
    alone (camera None: one turn for all cameras of a window, batch anchoring)."""
    return proposer_for(camera, window_start_ms, nodes, turn.attempt)


def may_anchor(me: str, turn: Turn, *, window_start_ms: int, nodes: Sequence[str], camera: bytes | None = None) -> bool:
    """Whether `me` may send the window's anchor now: its own slot, away from the slot's edges.
    The edges keep two nodes with skewed clocks from both sending; a consortium of one node has
    every slot to itself, so it sends at any instant (an edge once cost such a node a tick,
    and a test that sealed in one tick failed whenever it ran within `clock_skew_ms` of one)."""
    return (turn.may_send or len(nodes) == 1) and \
        proposer_of(turn, window_start_ms=window_start_ms, nodes=nodes, camera=camera) == me


def waits_for_silent_peers(*, closed_for_ms: float, now_ms: int, turn: Turn, rules: WindowRules) -> bool:
    """Whether a proposer that could not learn everything its peers hold of a ready window (a
    peer gave no answer, or a frame a peer listed could not be fetched) asks again next tick
    instead of sealing now. A block sealed without a restarting peer's tail is disputed by that
    peer, so it waits, but only before the repair deadline, and only while at least half a
    proposer timeout of its slot is left (to build and send the block): a dead peer must not
    cost the live proposer its slot."""
    return (closed_for_ms < rules.repair_deadline_ms
            and now_ms < turn.end_ms - rules.clock_skew_ms - rules.proposer_timeout_ms // 2)


# -------------------------------------------------------------- the next window to visit
def next_after_anchored(end_ms: int, tip_end_ms: int, next_pool_ms: int | None, open_alarm_ends_ms: Sequence[int],
                        window_ms: int) -> int:
    """Where to look after a window the chain has moved past: the next window that holds pooled
    frames (`next_pool_ms`: the capture time of the first at or after `end_ms`) or the end of an
    open missing alarm (`open_alarm_ends_ms`: their `ts_to`), but never beyond the first window
    after the tip (windows there may hold parts of holes). So a frame stamped decades back costs
    one visit, not one per window between it and the tip."""
    targets = [window_of(tip_end_ms - 1, window_ms)[0] + window_ms]
    if next_pool_ms is not None:
        targets.append(window_of(next_pool_ms, window_ms)[0])
    for ts_to in open_alarm_ends_ms:
        if ts_to - 1 >= end_ms:
            targets.append(window_of(ts_to - 1, window_ms)[0])
    return max(end_ms, min(targets))


def next_after_empty(end_ms: int, next_frame_ms: int | None, window_ms: int) -> int:
    """After an empty window: the window of the next frame (`next_frame_ms`, the first at or after
    `end_ms`), not every empty window in between."""
    return window_of(next_frame_ms, window_ms)[0] if next_frame_ms is not None else end_ms


# ------------------------------------------------------------------ gap interpolation
@dataclass(frozen=True, kw_only=True)
class Neighbours:
    """The pool facts `window_gaps` needs besides the window's own frames."""

    before: Seen | None  # the newest frame captured before the window
    after: Seen | None  # the oldest frame captured at or after the window's end
    first_seq: int  # the stream's first seq (0, or the hello's firstSeq)
    last_seq: int | None  # the stream's last seq, when the camera said it ended


def window_gaps(start_ms: int, end_ms: int, frames: Sequence[FrameRef], around: Neighbours, step_ms: float) -> list[Gap]:
    """Every lost sequence number whose capture time falls in [start, end), as ranges.

    Holes are found among the window's frames and the nearest frames on either side. The capture
    time of a lost frame is interpolated between its neighbours (or extrapolated at the frame rate
    before the first and after the last), so a hole that spans a window boundary is split between
    the two windows instead of being charged to one of them. The part in the window is found by
    binary search (`Hole.seqs_in_window`): a hole of millions of numbers costs no more than one of
    three. `keyframe_lost` is left False: whether a keyframe fell in a gap is the shell's to read."""
    before, after = around.before, around.after
    floor = before[0] if before else around.first_seq - 1
    seen = sorted({(f.seq, f.timestamp_ms, f.keyframe) for f in frames} | ({after} if after else set()))
    holes = find_holes(floor, [x for x in seen if x[0] > floor], None if after else around.last_seq)
    if before:
        holes = [Hole(h.from_seq, h.to_seq, h.before or before, h.after) for h in holes]
    gaps = []
    for h in holes:
        mine = h.seqs_in_window(start_ms, end_ms, step_ms)
        if not mine:
            continue
        first_ms = int(h.time_of(mine[0], step_ms))
        if h.after or mine[-1] < h.to_seq:
            to_ms = int(h.time_of(mine[-1] + 1, step_ms))
        else:
            to_ms = int(h.time_of(mine[-1], step_ms) + step_ms)
        gaps.append(Gap(mine[0], mine[-1], first_ms, max(min(to_ms, end_ms), first_ms + 1)))
    return gaps


def track_window_gaps(start_ms: int, end_ms: int, frames: Sequence[FrameRef], around: Mapping[int, Neighbours],
                      step_ms: Mapping[int, float]) -> list[Gap]:
    """`window_gaps` for a camera with several tracks (video, audio: `core.block.track_of`): each
    track's numbers are their own sequence, so holes are found per track, with that track's
    neighbours and packet rate, and never across two tracks' namespaces. Tracks are those in
    `around` plus any a frame of the window belongs to."""
    by_track: dict[int, list[FrameRef]] = {t: [] for t in around}
    for f in frames:
        by_track.setdefault(track_of(f.seq), []).append(f)
    gaps: list[Gap] = []
    for track in sorted(by_track):
        lo, _ = track_bounds(track)
        nb = around.get(track) or Neighbours(before=None, after=None, first_seq=lo, last_seq=None)
        gaps.extend(window_gaps(start_ms, end_ms, by_track[track], nb, step_ms.get(track, 40.0)))
    return sorted(gaps, key=lambda g: (g.from_ms, g.from_seq))
