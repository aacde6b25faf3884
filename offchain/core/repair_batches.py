"""Repair traffic in bounded batches, pure (docs/NODES.md, "Repair in batches").

A node that loses one frame of each of 200 cameras in the same second raises ~200 missing alarms
at once. Sent one signed HTTP request per hole per peer (and one repair reply and one clear back
per hole), that is ~1,000 requests that keep every node's event loop busy for tens of seconds.
Instead the repairer gathers what it sends to a peer within a short coalescing delay and sends
it as few requests as the bounds here allow:

* alarms: at most `MAX_ALARMS_PER_REQUEST` holes and `MAX_SEQS_PER_REQUEST` seqs in one
  request, each hole still at most `peer_http.MAX_ALARM_SEQS` seqs (`pack`);
* repair replies: one reply per request heard, split into as many POSTs as the receiver's body
  limit and `MAX_REPAIR_PACKETS` need, each naming at most `MAX_ALARM_IDS_PER_REPAIR` alarms
  (`ReplyPacker`, which keeps no more than one POST's worth of packets);
* clears: at most `MAX_CLEARS_PER_REQUEST` in one request (`pack`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

MAX_ALARMS_PER_REQUEST = 256  # holes in one batched alarm request
MAX_SEQS_PER_REQUEST = 16_384  # seqs over all holes of one batched alarm request
MAX_CLEARS_PER_REQUEST = 1_024  # settled alarms in one batched clear request
MAX_ALARM_IDS_PER_REPAIR = 1_024  # alarms one repair POST answers
DEFAULT_COALESCE_MS = 20  # how long the repairer gathers messages for a peer before sending

T = TypeVar("T")


def pack(items: Sequence[T], weight: Callable[[T], int], max_items: int, max_weight: int) -> list[list[T]]:
    """`items` in order, cut into consecutive groups of at most `max_items` items whose weights sum
    to at most `max_weight`. An item heavier than `max_weight` travels alone (the caller bounds
    single items, e.g. an alarm's seqs by MAX_ALARM_SEQS, which is below MAX_SEQS_PER_REQUEST)."""
    if max_items < 1 or max_weight < 1:
        raise ValueError("bounds must be positive")
    groups: list[list[T]] = []
    current: list[T] = []
    total = 0
    for item in items:
        w = max(weight(item), 0)
        if current and (len(current) >= max_items or total + w > max_weight):
            groups.append(current)
            current, total = [], 0
        current.append(item)
        total += w
    if current:
        groups.append(current)
    return groups


def split_seqs(seq_from: int, seq_to: int, max_seqs: int) -> list[range]:
    """The seqs [seq_from, seq_to] in pieces of at most `max_seqs` (a large hole is several alarms)."""
    if max_seqs < 1:
        raise ValueError("max_seqs must be positive")
    seqs = range(seq_from, seq_to + 1)
    return [seqs[i:i + max_seqs] for i in range(0, len(seqs), max_seqs)]


@dataclass(frozen=True, kw_only=True)
class ReplyPart:
    """One repair POST: the alarms it answers (with how many packets each) and the packets."""

    alarm_ids: tuple[str, ...]
    counts: tuple[int, ...]  # packets per alarm id, same order
    packets: tuple[str, ...]


@dataclass(kw_only=True)
class ReplyPacker:
    """Cuts a stream of (alarm id, base64 packet) into repair POSTs that fit the receiver.

    `budget` is the bytes available in one POST body for the alarm ids and packets (the body
    limit minus the fixed part of the message). `add` returns the finished part when the new
    packet does not fit the current one (the packet then starts the next part); `finish` returns
    the last. A packet that cannot fit even an empty part is refused (`add` raises ValueError),
    so the caller can log it and go on: the peer can still pull it by GET."""

    budget: int
    max_packets: int
    max_alarm_ids: int = MAX_ALARM_IDS_PER_REPAIR
    _ids: dict[str, int] = field(default_factory=dict)
    _packets: list[str] = field(default_factory=list)
    _size: int = 0

    @staticmethod
    def id_cost(alarm_id: str) -> int:
        return len(json.dumps(alarm_id)) + 2  # quotes escaped as JSON, comma, space

    @staticmethod
    def packet_cost(packet: str) -> int:
        return len(packet) + 4  # quotes, comma, space

    def add(self, alarm_id: str, packet: str) -> ReplyPart | None:
        alone = self.id_cost(alarm_id) + self.packet_cost(packet)
        if alone > self.budget:
            raise ValueError(f"a packet of {len(packet)} base64 bytes does not fit a repair POST")
        cost = self.packet_cost(packet) + (0 if alarm_id in self._ids else self.id_cost(alarm_id))
        new_id = alarm_id not in self._ids
        done: ReplyPart | None = None
        if self._packets and (self._size + cost > self.budget or len(self._packets) >= self.max_packets
                              or (new_id and len(self._ids) >= self.max_alarm_ids)):
            done = self.finish()
            cost = alone
        self._ids[alarm_id] = self._ids.get(alarm_id, 0) + 1
        self._packets.append(packet)
        self._size += cost
        return done

    def finish(self) -> ReplyPart | None:
        """The part gathered so far (None if empty), and start afresh."""
        if not self._packets:
            return None
        part = ReplyPart(alarm_ids=tuple(self._ids), counts=tuple(self._ids.values()), packets=tuple(self._packets))
        self._ids, self._packets, self._size = {}, [], 0
        return part
