"""Block production (B1-B5): seal closed windows, anchor when it is this node's turn, verify
and attest what the others anchor. The shell around `offchain/core/windows.py`, which decides:

* A camera window [start, end) is *closed* once the camera has sent a frame at or past `end`,
  or its stream ended and it has been idle for `idle_close_ms`, or it has been silent as long as
  the rest of the window (`windows.is_closed`).
* It is *ready* when nothing in it is missing, or when the repair deadline has passed since it
  closed; what is still missing is then declared as a gap, and long gaps are filled from a
  camera of the same group (I7), marked as substituted (`windows.readiness`, `window_gaps`).
* The proposer of slot k is `proposer_for(camera, start, nodes, k)`. Slots are counted from facts
  every node shares: the window's end, when the block before it was anchored (chain time),
  `repair_deadline_ms` and `proposer_timeout_ms`; nobody sends within `clock_skew_ms` of a
  slot's edge, and a takeover re-reads the tip right before sending (`windows.turn_at`, B3).
* Windows are anchored in order; a later window waits while an earlier one is unanchored (the
  block orphan pool, B5).
* Every other node fetches the manifest, checks it against its own pool (and fetches signed
  frames it lacks from peers), then attests, or disputes with a reason (B4). Anchored frames leave
  the pool; their bytes stay in the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, replace
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

from ..chain import reverts
from ..chain.client import TxResult
from ..chain.health import ChainHealth, is_chain_fault
from ..chain.ledger import CameraInfo, VideoLedgerClient
from ..core import wire
from ..core.batch_checks import judge_block
from ..core.block import BlockHeader, FrameRef, Gap, Manifest, ManifestFormatError, build_block, track_bounds, window_of
from ..core.cid import cid_from_digest
from ..core.gaps import codec_tracks, frame_step_ms, track_step_ms
from ..core.windows import (Neighbours, Readiness, StreamView, is_closed, may_anchor, next_after_anchored,
                            next_after_empty, overlaps, readiness, settled_late, stream_newest_ms, track_window_gaps,
                            turn_at, waits_for_silent_peers, window_gaps)
from ..store.base import ContentStore, StoreError
from . import outages
from .config import NodeConfig
from .peer_client import PacketSink, PeerClient
from .registry import CameraRegistry
from .repair import Repairer
from .state import Alarm, CameraRow, NodeState, named_alarm

log = logging.getLogger(__name__)
T = TypeVar("T")

# Reverts that mean "another node anchored this height first": not an error, attest instead.
_LOST_RACE = ("ConflictingBlock", "BlockAlreadyAnchored", "UnexpectedHeight")
# A lost race only when the chain's tip moved since this node read it; otherwise an alarm.
_LINK_OR_TIME = {"BrokenChainLink": "chain.link_broken", "TimeNotContinuous": "chain.time_discontinuity"}
# The contract refused the window itself (its time bounds): an alarm, the window waits.
_WINDOW_REFUSED = {"WindowInFuture": "camera.clock_ahead", "WindowTooLong": "chain.window_refused",
                   "InvalidWindow": "chain.window_refused"}
MAX_WINDOWS_PER_TICK = 256  # windows one camera's sealing pass visits per tick (each holds frames or alarms)
MAX_PULL_PER_WINDOW = 20_000  # frames a proposer fetches from one peer before sealing one window
TX_THREADS = 32  # transactions awaited at once (anchors in flight, one per camera, and attestations)
MAX_SETTLE_AT_ONCE = 32  # anchored blocks of one scan checked and attested at once
# How long an anchored block's manifest may go unserved before the block is disputed as unavailable:
# its proposer may have been killed right after anchoring and needs a restart to serve it (three
# scans, ~1.5 s, disputed a sound block under load in the kill -9 test; a dispute holds finality).
MANIFEST_PATIENCE_S = 60.0


class ManifestUnavailable(Exception):
    """An anchored block's manifest is in no store reachable now: retried by the next scan."""

# The camera's manifest extras for a window [start, end): `Node.manifest_extras`.
ManifestExtras = Callable[[bytes, int, int], dict[str, Any]]


def raise_once(state: NodeState, node: str, alarm: Alarm, message: str) -> bool:
    """Raise `alarm` once per id (a window retried every tick is one alarm), count it under its
    camera (or "*") by kind, and log `message` once: the producer's and the batcher's alarms."""
    if not state.raise_alarm(alarm):
        return False
    state.bump(alarm.camera_ip or "*", alarm.kind.replace(".", "_"))
    log.warning(message, extra={"node": node, "camera": alarm.camera_ip, "alarm": alarm.kind,
                                "detail": (alarm.detail or "")[:300]})
    return True


@dataclass(frozen=True, kw_only=True)
class _Slot:
    """The window this node is about to anchor, and the chain facts its turn was judged on."""

    start: int
    end: int
    height: int  # the tip's height (the block is height + 1)
    prev_hash: bytes
    tip_anchored_ms: int


@dataclass(frozen=True, kw_only=True)
class _Proposal:
    """What a sealing pass decided to anchor for one camera: the slot and the frames held."""

    info: CameraInfo
    slot: _Slot
    frames: list[FrameRef]


@dataclass(frozen=True, kw_only=True)
class _Pulled:
    """A window's frames after asking the peers what they hold of it."""

    frames: list[FrameRef]
    complete: bool  # every peer answered, and this node now holds every frame a peer listed


@dataclass(frozen=True, kw_only=True)
class _Sent:
    attempt: int
    result: TxResult | None  # None: not sent (the turn passed, or the tip moved)
    reason: str


class Producer:
    """Seals, anchors and attests. Given the parts it uses: configuration (timing, substitution),
    this node's account, the consortium's node list (the rotation's order), state, store,
    whitelist, ledger and chain health, the peer client, the packet sink for frames fetched from
    peers, the repairer (whose alarms a sealed window settles), the camera's manifest extras
    (signed hello, unended stream), when this process started, and where event scanning starts."""

    def __init__(self, *, config: NodeConfig, address: str, nodes: Sequence[str], state: NodeState,
                 store: ContentStore, registry: CameraRegistry, ledger: VideoLedgerClient, health: ChainHealth,
                 peers: PeerClient, accept: PacketSink, repairer: Repairer, manifest_extras: ManifestExtras,
                 started_at: float, latest_block: Callable[[], int], log_from_block: int):
        self.config = config
        self.name = config.name
        self.address = address
        self.nodes = list(nodes)
        self.state = state
        self.store = store
        self.registry = registry
        self.ledger = ledger
        self.health = health
        self.peers = peers
        self.accept = accept
        self.repairer = repairer
        self.manifest_extras = manifest_extras
        self.started_at = started_at
        self.latest_block = latest_block
        self.log_from_block = log_from_block
        self.rules = config.window_rules()
        self.closed_at: dict[tuple[bytes, int], float] = {}
        # Each camera's chain tip as last read: re-read only when its oldest pooled window is
        # closed (there may be something to seal or settle) or a BlockAnchored of the camera was
        # seen. Reading it for every camera every tick was a third of a loaded node's CPU (bench
        # ingest, docs/TRANSPORT.md).
        self._tips: dict[bytes, tuple[bytes, int, int]] = {}
        self.waiting: dict[bytes, int] = {}  # camera -> windows waiting for an earlier block (B5)
        self.failures: dict[bytes, int] = {}  # anchored block -> failed attempts to settle it
        self.manifest_missing_since: dict[bytes, float] = {}  # anchored block -> when its manifest was first not found
        self._tip_anchored: dict[bytes, tuple[bytes, int]] = {}  # camera -> (tip hash, its anchoredAt in ms)
        self._proposing: dict[bytes, asyncio.Task[None]] = {}  # camera -> its anchor in flight
        self._tx_pool = ThreadPoolExecutor(max_workers=TX_THREADS, thread_name_prefix=f"{self.name}-tx")
        if (last := state.last_proposed()) is not None:  # across restarts: from the blocks table
            self.health.last_anchor = {"block": "0x" + last[0].hex(), "cameraId": "0x" + last[1].hex(),
                                       "height": last[2], "at": round(last[3], 3)}

    # ------------------------------------------------------------ chain health
    async def chain_ready(self) -> bool:
        """Whether sealing and attesting may call the chain now. While it is unreachable, empty,
        another chain or out of funds, they wait (backing off) and resume where they stopped."""
        if self.health.due():
            await asyncio.to_thread(self.health.check)
            self._chain_alarms()
        return self.health.ready()

    def _chain_failed(self, exc: BaseException) -> None:
        self.health.failed(exc)
        self._chain_alarms()

    def _chain_alarms(self) -> None:
        """One open alarm per chain condition while it lasts; cleared ("recovered") when it ends."""
        s = self.health.status
        conditions = {"chain.unreachable": not s.reachable or s.chain_id != s.expected_chain_id,
                      "chain.contracts_missing": s.reachable and not s.contracts_present,
                      "chain.low_funds": s.low_funds}
        for kind, on in conditions.items():
            open_alarms = self.state.alarms(open_only=True, kind=kind)
            if on and not open_alarms:
                self.state.raise_alarm(named_alarm(f"{self.name}:{kind}:{time.time_ns()}", kind, None, None,
                                                   s.error or f"balance {s.balance_wei} wei"))
                self.state.bump("*", kind.replace(".", "_"))
            elif not on:
                for alarm in open_alarms:
                    self.state.clear_alarm(alarm.id, "recovered")

    # ------------------------------------------------------------------ sealing
    async def tick(self) -> None:
        """One sealing pass that returns once every anchor it sent is included (tests, benches)."""
        await self.tick_background()
        await self.drain()

    async def tick_background(self) -> None:
        """One sealing pass over every camera; each anchor it decides on is sent in a task of its
        own, so the pass never waits for a receipt (one block, 1 s or more): ten cameras' anchors
        awaited one after the other kept a node tens of seconds behind (bench latency, header
        mode). A camera with an anchor in flight is skipped: its next window needs the new tip."""
        if not await self.chain_ready():
            return
        rows = self.state.camera_rows()  # one query for the pass, not one per camera
        for cam in self.state.pool_cameras():
            if cam in self._proposing:
                continue
            try:
                proposal = await self._tick_camera(cam, rows.get(cam))
            except Exception as exc:  # noqa: BLE001 - one camera's trouble must not stop the others
                if is_chain_fault(exc):
                    self._chain_failed(exc)  # the chain's trouble, not the camera's: wait for it
                    return
                log.exception("sealing failed", extra={"node": self.name, "camera": "0x" + cam.hex()})
                continue
            if proposal is not None:
                self._proposing[cam] = asyncio.create_task(self._send_proposal(cam, proposal),
                                                           name=f"propose-{cam.hex()[:12]}")

    async def drain(self) -> None:
        """Wait for every anchor in flight (its bookkeeping done, or its failure logged)."""
        while self._proposing:
            await asyncio.gather(*list(self._proposing.values()), return_exceptions=True)

    async def close(self) -> None:
        """Stop: anchors in flight are cancelled (a sent one is found by `scan_anchored` after a
        restart, "ours, but not recorded"), the transaction threads are let go."""
        for task in list(self._proposing.values()):
            task.cancel()
        await asyncio.gather(*list(self._proposing.values()), return_exceptions=True)
        self._tx_pool.shutdown(wait=False, cancel_futures=True)

    async def _send_proposal(self, cam: bytes, proposal: "_Proposal") -> None:
        try:
            slot = proposal.slot
            pulled = await self._pull_from_peers(cam, proposal.info.ip, slot.start, slot.end, proposal.frames)
            now = time.time()
            turn = turn_at(int(now * 1000), window_end_ms=slot.end, prev_anchored_ms=slot.tip_anchored_ms, rules=self.rules)
            if not pulled.complete and waits_for_silent_peers(
                    closed_for_ms=(now - self.closed_at.get((cam, slot.start), now)) * 1000, now_ms=int(now * 1000),
                    turn=turn, rules=self.rules):
                # A peer that did not answer (restarting, overloaded) may hold the window's tail:
                # asked again next tick (`core.windows.waits_for_silent_peers` says how long).
                log.info("peer holdings incomplete, sealing waits", extra={"node": self.name, "camera": proposal.info.ip,
                                                                           "window": slot.start})
                self.state.bump(proposal.info.ip, "seal_waits")
                return
            await self._propose(cam, proposal.info, slot, pulled.frames)
        except Exception as exc:  # noqa: BLE001 - one camera's trouble must not stop the others
            if is_chain_fault(exc):
                self._chain_failed(exc)
            else:
                log.exception("sealing failed", extra={"node": self.name, "camera": "0x" + cam.hex()})
        finally:
            self._proposing.pop(cam, None)

    async def _on_chain(self, fn: Callable[..., T], *args: Any) -> T:
        """A call that sends a transaction and awaits its receipt, in the transaction threads:
        a dozen receipts awaited at once must not take every thread of asyncio's default pool
        (store reads and writes, chain views run there)."""
        return await asyncio.get_running_loop().run_in_executor(self._tx_pool, lambda: fn(*args))

    def _stream_view(self, cam: bytes, newest_ms: int, now: float, row: CameraRow | None = None) -> StreamView:
        """How the camera's stream stands for `core.windows.is_closed`; ``row``: its camera row,
        when the caller has read it already (else read here)."""
        row = self.state.camera_row(cam) if row is None else row
        ended = row is not None and row[2] is not None and (self.state.max_seq(cam, 0) or -1) >= row[2]
        # Silence counts from this process's start too: a node just restarted has heard nothing
        # yet, which says nothing about the camera.
        heard = max(self.state.max_received_at(cam) or now, self.started_at)
        tracks = codec_tracks(json.loads(row[1]) if row and row[1] else None)
        if len(tracks) > 1:  # a camera with sound: closed when every track has reached the end
            newest_ms = stream_newest_ms([self.state.track_newest_ts(cam, t) for t in tracks],
                                         self.config.idle_close_ms) or newest_ms
        return StreamView(newest_ms=newest_ms, ended=ended, silent_ms=(now - heard) * 1000)

    async def _tick_camera(self, cam: bytes, row: CameraRow | None = None) -> "_Proposal | None":
        """Visit the camera's windows in order, from its oldest pooled frame: settle those the
        chain moved past, stop at the first one that is open, repairing or not this node's turn,
        and return the one to anchor, if any (the caller sends it). The decisions are `core.windows`'."""
        now = time.time()
        window_ms = self.config.window_ms
        info = self.registry.get(cam)
        if info is None or not info.active or info.head_block == b"\x00" * 32:
            return None  # revoked, or before the genesis: the chain would refuse any block
        span = self.state.pool_span(cam)
        last = self.state.last_frame(cam)
        if span is None or last is None:
            return None
        start = window_of(span[0], window_ms)[0]
        stream = self._stream_view(cam, last[1], now, row)
        cached = self._tips.get(cam)
        if cached is None or is_closed(start + window_ms, stream, self.rules):
            cached = self._tips[cam] = await asyncio.to_thread(self.ledger.tip, cam)
        prev_hash, height, tip_end = cached
        self._check_tip(cam, info.ip, height, tip_end, now)
        pending = 0
        visits = 0
        while start <= last[1] and visits < MAX_WINDOWS_PER_TICK:
            visits += 1
            await asyncio.sleep(0)  # a long pass never holds the event loop (API, ingest, other cameras)
            end = start + window_ms
            if tip_end > start:
                start = await self._past_tip(cam, info.ip, start, end, tip_end, now)
                continue
            if not is_closed(end, stream, self.rules):
                break
            closed_at = self.closed_at.setdefault((cam, start), now)
            frames = [f.ref for f in self.state.frames_in(cam, start, end)]
            # Holes count whether or not their alarm is out yet: a window is not sealed while
            # repair can still fill it, unless the repair deadline has passed.
            holes = bool(self._gap_spans(cam, start, end, frames, None) or self._open_alarms_in(cam, start, end))
            ready = readiness(has_frames=bool(frames), has_holes=holes, closed_for_ms=(now - closed_at) * 1000,
                              rules=self.rules)
            if ready is Readiness.REPAIRING:
                pending += 1
                break
            if ready is Readiness.EMPTY:
                nxt = self.state.frame_from_time(cam, end)
                self.closed_at.pop((cam, start), None)
                start = next_after_empty(end, nxt[1] if nxt else None, window_ms)
                continue
            tip_at = await self._tip_anchored_ms(cam, info, height, prev_hash)
            turn = turn_at(int(time.time() * 1000), window_end_ms=end, prev_anchored_ms=tip_at, rules=self.rules)
            if not may_anchor(self.address, turn, window_start_ms=start, nodes=self.nodes, camera=cam):
                pending += 1
                break  # another node's slot (or the edge of ours); later windows wait in the orphan pool
            self.waiting[cam] = pending
            # One block per camera at a time: the next needs the new tip.
            return _Proposal(info=info, slot=_Slot(start=start, end=end, height=height, prev_hash=prev_hash,
                                                   tip_anchored_ms=tip_at), frames=frames)
        self.waiting[cam] = pending
        return None

    async def _past_tip(self, cam: bytes, ip: str, start: int, end: int, tip_end: int, now: float) -> int:
        """A window the chain has anchored already (or moved past). Once this node has settled that
        block (attested or proposed it), frames still pooled in the window arrived too late for it;
        so did frames of a window the chain moved past without a block. Alarms there are settled
        too. Returns the next window to visit."""
        seen_since = self.closed_at.setdefault((cam, start), now)
        if self.state.block_for_window(cam, start) is not None or settled_late((now - seen_since) * 1000, self.rules):
            late = self.state.mark_anchored(cam, start, end)
            if late:
                self.state.bump(ip, "late_frames", late)
            for alarm in self._open_alarms_in(cam, start, end):
                if alarm.ts_to is not None and alarm.ts_to <= end:
                    await self.repairer.clear(alarm, "declared")
            self.closed_at.pop((cam, start), None)
        alarm_ends = [a.ts_to for a in self.state.alarms(open_only=True, camera=cam, kind="missing") if a.ts_to is not None]
        return next_after_anchored(end, tip_end, self.state.next_pool_ts(cam, end), alarm_ends, self.config.window_ms)

    async def _tip_anchored_ms(self, cam: bytes, info: CameraInfo, height: int, tip_hash: bytes) -> int:
        """When the block before the next window was anchored (chain time, ms): a fact every node
        reads alike, from which the turn is counted. For the first block, the camera's head.
        Read once per tip (keyed by its hash, so a chain restarted empty is not mistaken)."""
        if height == 0:
            return int(info.head_timestamp) * 1000
        known = self._tip_anchored.get(cam)
        if known is None or known[0] != tip_hash:
            record = await asyncio.to_thread(self.ledger.block_at, cam, height)
            known = (tip_hash, int(record.anchored_at) * 1000)
            self._tip_anchored[cam] = known
        return known[1]

    def _check_tip(self, cam: bytes, ip: str, height: int, tip_end: int, now: float) -> None:
        """A tip whose window ends far beyond this node's clock (a block anchored before the
        contract bounded windows) would make every real frame "late": say so, once per tip."""
        if tip_end > now * 1000 + 10 * self.config.window_ms:
            self._alarm(cam, ip, "chain.tip_in_future", f"tip:{height}",
                        f"block {height} ends at {tip_end} ms, beyond this node's clock; later frames cannot be anchored")

    def _alarm(self, cam: bytes, ip: str, kind: str, key: str, detail: str, start: int | None = None,
               end: int | None = None) -> None:
        raise_once(self.state, self.name, named_alarm(f"{self.name}:{kind}:{cam.hex()[:16]}:{key}", kind, cam, ip,
                                                      detail, ts_from=start, ts_to=end), "block production alarm")

    def _open_alarms_in(self, cam: bytes, start: int, end: int) -> list[Alarm]:
        """Open missing alarms whose lost span (between the frames around the hole) overlaps the window."""
        return [a for a in self.state.alarms(open_only=True, camera=cam, kind="missing")
                if overlaps(a.ts_from, a.ts_to, start, end)]

    def _gap_spans(self, cam: bytes, start: int, end: int, frames: list[FrameRef], codec: dict[str, Any] | None) -> list[Gap]:
        """The window's lost sequence numbers (`core.windows.window_gaps`), from the pool's facts."""
        row = self.state.camera_row(cam)
        signed = json.loads(row[1]) if row and row[1] else codec
        tracks = codec_tracks(signed)
        if tracks == [0] and all(f.seq <= track_bounds(0)[1] for f in frames):  # a camera without audio, as before
            around = Neighbours(before=self.state.frame_before_time(cam, start), after=self.state.frame_from_time(cam, end),
                                first_seq=row[3] if row and row[3] is not None else 0, last_seq=row[2] if row else None)
            return window_gaps(start, end, frames, around, frame_step_ms(codec))
        # Each track's numbers are their own sequence (core.block.track_of): holes per track.
        arounds = {t: Neighbours(before=self.state.frame_before_time(cam, start, t),
                                 after=self.state.frame_from_time(cam, end, t),
                                 first_seq=(row[3] if row and row[3] is not None else 0) if t == 0 else track_bounds(t)[0],
                                 last_seq=self.state.track_last_seq(cam, t)) for t in tracks}
        return track_window_gaps(start, end, frames, arounds, {t: track_step_ms(signed, t) for t in tracks})

    def _gaps(self, cam: bytes, start: int, end: int, frames: list[FrameRef], codec: dict[str, Any] | None) -> list[Gap]:
        """The gaps to declare: the spans, each with whether a keyframe was lost in it."""
        return [replace(g, keyframe_lost=self.state.keyframe_lost_between(cam, g.from_seq, g.to_seq))
                for g in self._gap_spans(cam, start, end, frames, codec)]

    async def _pull_from_peers(self, cam: bytes, ip: str, start: int, end: int, frames: list[FrameRef]) -> _Pulled:
        """Before sealing, learn what the peers hold of this window and fetch what this node lacks
        (re-verified like any repair), so no block omits a frame a peer holds: a lost tail has no
        later frame to reveal it as a hole. Bounded by one window's frames and the HTTP timeout.
        `complete` is False when a peer gave no answer or a frame it listed could not be fetched."""
        mine = {f.seq for f in frames}
        pulled, changed, complete = 0, False, True
        for peer in self.peers.peers:
            listed = await self.peers.holdings(peer, cam, start, end)
            complete = complete and listed is not None
            seqs = [e[0] for e in (listed or [])[:MAX_PULL_PER_WINDOW]
                    if isinstance(e, list) and len(e) == 2 and isinstance(e[0], int)]
            held_before = len(mine)
            pulled += await self.pull_seqs(peer, cam, ip, seqs, mine)
            changed = changed or len(mine) > held_before
            complete = complete and all(s in mine for s in seqs)
        if pulled:
            log.info("pulled frames from peers before sealing", extra={"node": self.name, "camera": ip,
                                                                        "window": start, "frames": pulled})
        held = [f.ref for f in self.state.frames_in(cam, start, end)] if changed else frames
        return _Pulled(frames=held, complete=complete)

    async def pull_seqs(self, peer: str, cam: bytes, ip: str, seqs: Sequence[int], mine: set[int]) -> int:
        """Fetch from `peer` the frames `seqs` that are not in `mine` (re-verified like any repair,
        on record; accepted or meanwhile held seqs are added to `mine`); at most MAX_PULL_PER_WINDOW.
        Returns how many were accepted."""
        pulled = 0
        for seq in seqs[:MAX_PULL_PER_WINDOW]:
            if seq in mine:
                continue
            got = await self.peers.frame(peer, cam, seq)
            outcome = await self.accept(got[0], source=f"repair:{got[1]}", expect_camera=cam) if got else None
            if outcome == "accepted":
                self.state.record_repair(cam, ip, seq, got[1], None)  # I8: on record like any repair
                pulled += 1
            if outcome in ("accepted", "duplicate"):  # a duplicate reached this node meanwhile: held now
                mine.add(seq)
        return pulled

    async def build_window_block(self, cam: bytes, info: CameraInfo, start: int, end: int, height: int,
                                 prev_hash: bytes, frames: list[FrameRef], store: bool = True) -> Any:
        """The camera's block of window [start, end) on the tip (prev_hash, height), with its
        gaps and substitutions, its manifest stored (`store` False: the caller stores a whole
        batch's at once): the same in per-header and batch mode."""
        row = self.state.camera_row(cam)
        codec = json.loads(row[1]) if row and row[1] else {}
        gaps = self._gaps(cam, start, end, frames, codec)
        gaps, substitutions = self._substitute(cam, gaps)
        # The camera's signed hello behind the codec, and an unended stream declared, not hidden.
        block = build_block(camera_ip=info.ip, height=height + 1, prev_hash=prev_hash, window_start_ms=start,
                            window_end_ms=end, frames=frames, proposer=self.address, codec=codec, gaps=gaps,
                            substitutions=substitutions, **self.manifest_extras(cam, start, end))
        if store:
            await asyncio.to_thread(self.store.put, block.manifest_bytes)
        return block, gaps, substitutions

    async def _propose(self, cam: bytes, info: CameraInfo, slot: _Slot, frames: list[FrameRef]) -> None:
        start, end, height, prev_hash = slot.start, slot.end, slot.height, slot.prev_hash
        self._tips.pop(cam, None)  # whatever happens next, the tip may move
        block, gaps, substitutions = await self.build_window_block(cam, info, start, end, height, prev_hash, frames)
        try:
            sent = await self._on_chain(self._anchor_in_turn, cam, block.header, slot)
        except reverts.ContractRevert as exc:
            await self._anchor_refused(cam, info.ip, start, end, height, prev_hash, exc)
            return
        if sent.result is None:
            # Building took this node past its slot, or the slot's predecessor anchored meanwhile:
            # nothing sent, so nothing lost; the window is looked at again next tick.
            log.info("turn passed before the anchor was sent", extra={"node": self.name, "camera": info.ip,
                                                                       "window": start, "reason": sent.reason})
            self.state.bump(info.ip, "turns_passed")
            return
        result = sent.result
        self.state.note_block(block.hash, cam, block.header.height, start, end, "proposed")
        self.health.note_anchor(block.hash, info.ip, block.header.height, result.tx_hash, result.block_number)
        self.state.bump(info.ip, "blocks_anchored")
        self.state.bump(info.ip, "anchor_gas", result.gas_used)
        if sent.attempt > 0:
            self.state.bump(info.ip, "takeovers")
        substituted = sum(len(fs) for _, fs in substitutions)
        if substituted:
            self.state.bump(info.ip, "substituted", substituted)
        log.info("block anchored", extra={"node": self.name, "camera": info.ip, "height": block.header.height,
                                          "frames": len(frames), "gaps": len(gaps), "gas": result.gas_used,
                                          "attempt": sent.attempt})
        await self._settle(cam, info.ip, start, end, gaps, [f.seq for f in frames])

    def _anchor_in_turn(self, cam: bytes, header: BlockHeader, slot: _Slot) -> _Sent:
        """Runs in a worker thread, right before the transaction: the turn is judged again on the
        clock of this moment (building and pulling may have taken a while), and a takeover first
        re-reads the tip, since the node of the slot before may have anchored meanwhile."""
        turn = turn_at(int(time.time() * 1000), window_end_ms=slot.end, prev_anchored_ms=slot.tip_anchored_ms,
                       rules=self.rules)
        if turn.attempt > 0 and self.ledger.tip(cam)[:2] != (slot.prev_hash, slot.height):
            return _Sent(attempt=turn.attempt, result=None, reason="tip moved")
        turn = turn_at(int(time.time() * 1000), window_end_ms=slot.end, prev_anchored_ms=slot.tip_anchored_ms,
                       rules=self.rules)
        if not may_anchor(self.address, turn, window_start_ms=slot.start, nodes=self.nodes, camera=cam):
            return _Sent(attempt=turn.attempt, result=None, reason="slot over")
        return _Sent(attempt=turn.attempt, result=self.ledger.anchor(header), reason="")

    async def _anchor_refused(self, cam: bytes, ip: str, start: int, end: int, height: int, prev_hash: bytes,
                              exc: reverts.ContractRevert) -> None:
        """Another node anchored first (attest instead, next tick; counted as a lost race: the
        rotation should make it rare), or the chain is not what this node expected, or the
        contract refused the window: the last two are alarms, and the window's frames stay in the
        pool (they are not filed as late)."""
        if exc.name in _LOST_RACE:
            self._lost_race(ip, exc.name)
            return
        if exc.name in _LINK_OR_TIME:
            now_prev, now_height, _ = await asyncio.to_thread(self.ledger.tip, cam)
            if (now_prev, now_height) != (prev_hash, height):
                self._lost_race(ip, exc.name)
                return
            self._alarm(cam, ip, _LINK_OR_TIME[exc.name], f"{height + 1}:{start}", str(exc), start, end)
            return
        if exc.name in _WINDOW_REFUSED:
            self._alarm(cam, ip, _WINDOW_REFUSED[exc.name], str(start), str(exc), start, end)
            return
        raise exc

    def _lost_race(self, ip: str, reason: str) -> None:
        self.state.bump(ip, "lost_races")
        log.info("another node anchored first", extra={"node": self.name, "camera": ip, "reason": reason})

    def _substitute(self, cam: bytes, gaps: list[Gap]) -> tuple[list[Gap], list[tuple[bytes, list[FrameRef]]]]:
        """I7: a long gap is filled from another camera of the same group, for playback only."""
        out_gaps, subs = [], []
        if not gaps:
            return out_gaps, subs  # the siblings are not even listed (200 cameras of one group: 40,000 a batch)
        siblings = self.registry.group_siblings(cam)
        for g in gaps:
            # Pictures stand in for pictures only: an audio gap is declared, never filled (I7).
            if g.to_ms - g.from_ms < self.config.substitute_min_ms or not siblings or g.from_seq > track_bounds(0)[1]:
                out_gaps.append(g)
                continue
            filled = False
            for sib in siblings:
                sib_frames = [s.ref for s in self.state.frames_in(sib.camera_id, g.from_ms, g.to_ms)
                              if s.ref.seq <= track_bounds(0)[1]]
                if sib_frames:
                    out_gaps.append(Gap(g.from_seq, g.to_seq, g.from_ms, g.to_ms, g.keyframe_lost, sib.camera_id))
                    subs.append((sib.camera_id, sib_frames))
                    filled = True
                    break
            if not filled:
                out_gaps.append(g)
        return out_gaps, subs

    async def _settle(self, cam: bytes, ip: str, start: int, end: int, gaps: list[Gap], seqs: list[int],
                      clear_satisfied: bool = True) -> None:
        """After a window's block is anchored: the frames it lists leave the pool (anything else
        in the window arrived too late for it and is counted as such by the next tick) and its
        alarms clear, as repaired, declared or substituted (`clear_satisfied` False: the caller
        cleared the repaired ones already, once for a whole batch)."""
        self.state.mark_anchored_seqs(cam, seqs)
        if clear_satisfied:
            await self.repairer.clear_satisfied_alarms()
        by_seq = {g.from_seq: g for g in gaps}
        for alarm in self._open_alarms_in(cam, start, end):
            gap = next((g for g in gaps if g.from_seq <= alarm.seq_from <= g.to_seq), by_seq.get(alarm.seq_from))
            resolution = "substituted" if gap and gap.substitute_camera else "declared"
            await self.repairer.clear(alarm, resolution)

    # -------------------------------------------------------------- attesting
    async def scan_anchored(self) -> None:
        if not await self.chain_ready():
            return  # the checkpoint stays: blocks anchored meanwhile are attested once the chain is back
        start_block = int(self.state.get_meta("log_checkpoint") or self.log_from_block)
        try:
            latest = await asyncio.to_thread(self.latest_block)
            if start_block > latest:
                return
            to_block = min(latest, start_block + 2000)
            event = self.ledger.contract.events.BlockAnchored()
            logs = await asyncio.to_thread(event.get_logs, from_block=start_block, to_block=to_block)
        except Exception as exc:
            if is_chain_fault(exc):  # the chain went away since the last check: back off, say it once
                self._chain_failed(exc)
                return
            raise
        # The blocks of one scan are checked and attested at once: their attestations are then
        # included together, in the next chain block, instead of one block after the other.
        results: list[BaseException | None] = []
        for i in range(0, len(logs), MAX_SETTLE_AT_ONCE):
            results += await asyncio.gather(*(self._on_anchored(e) for e in logs[i:i + MAX_SETTLE_AT_ONCE]),
                                            return_exceptions=True)
        for entry, failure in zip(logs, results):
            if failure is None:
                continue
            if not isinstance(failure, Exception):
                raise failure  # cancelled: the node is stopping
            if is_chain_fault(failure):
                self._chain_failed(failure)  # no funds, no connection: not the block's fault, never skipped
                return
            # Recorded; this block is retried a few ticks (those after it that settled are not
            # settled twice: their role is on record), then skipped.
            key = bytes(entry.args.blockHash)
            if isinstance(failure, ManifestUnavailable):  # waited for by time (MANIFEST_PATIENCE_S), never skipped
                log.info("manifest not served yet", extra={"node": self.name, "block": "0x" + key.hex()})
                return
            self.failures[key] = self.failures.get(key, 0) + 1
            log.error("could not settle an anchored block", exc_info=failure,
                      extra={"node": self.name, "block": "0x" + key.hex()})
            if self.failures[key] < 5:
                return  # keep the checkpoint here and retry next tick
            self.state.bump("*", "blocks_skipped")
        self.state.set_meta("log_checkpoint", str(to_block + 1))

    async def _on_anchored(self, entry) -> None:
        header = BlockHeader.from_tuple(entry.args.header)
        self._tips.pop(header.camera_id, None)
        block_hash = bytes(entry.args.blockHash)
        in_flight = self._proposing.get(header.camera_id)
        if header.proposer == self.address and in_flight is not None:
            # Ours, seen before its receipt was read: its own task records and settles it.
            await asyncio.wait([in_flight])
        if self.state.block_role(block_hash) is not None:
            return
        if header.proposer == self.address:
            # Ours, but not recorded: the process stopped between the anchor and its bookkeeping.
            self.state.note_block(block_hash, header.camera_id, header.height, header.window_start_ms,
                                  header.window_end_ms, "proposed")
            raw = await self.fetch_block(cid_from_digest(header.manifest_digest))
            manifest = Manifest.from_bytes(raw) if raw else None
            info = self.registry.get(header.camera_id)
            await self._settle(header.camera_id, info.ip if info else "*", header.window_start_ms, header.window_end_ms,
                               list(manifest.gaps) if manifest else [], [f.seq for f in manifest.frames] if manifest else [])
            return
        await self._verify_and_attest(header, block_hash)

    async def _verify_and_attest(self, header: BlockHeader, block_hash: bytes) -> None:
        info = self.registry.get(header.camera_id)
        ip = info.ip if info else "0x" + header.camera_id.hex()
        problem, manifest = await self._check(header, info)
        if problem == "manifest unavailable":
            since = self.manifest_missing_since.setdefault(block_hash, time.monotonic())
            if time.monotonic() - since < MANIFEST_PATIENCE_S:
                # Not yet a dispute: the proposer may be restarting, or a peer busy with the same
                # scan's other fetches (32 at once) may not answer this time; the scan keeps its
                # checkpoint here and asks again next tick.
                raise ManifestUnavailable(f"manifest of block 0x{block_hash.hex()} not served yet")
        self.manifest_missing_since.pop(block_hash, None)
        if problem is None:
            try:
                result = await self._on_chain(self.ledger.attest, block_hash)
                self.state.bump(ip, "blocks_attested")
                self.state.bump(ip, "attest_gas", result.gas_used)
            except reverts.ContractRevert as exc:
                if exc.name != "AlreadyAttested":
                    raise
            self.state.note_block(block_hash, header.camera_id, header.height, header.window_start_ms, header.window_end_ms, "attested")
            await self._settle(header.camera_id, ip, header.window_start_ms, header.window_end_ms, list(manifest.gaps),
                               [f.seq for f in manifest.frames])
        else:
            log.warning("block disputed", extra={"node": self.name, "camera": ip, "height": header.height, "reason": problem})
            try:
                await self._on_chain(self.ledger.dispute, block_hash, problem[:200])
            except reverts.ContractRevert as exc:
                if exc.name != "AlreadyDisputed":  # a restart between the dispute and its bookkeeping
                    raise
            self.state.bump(ip, "disputes")
            self.state.note_block(block_hash, header.camera_id, header.height, header.window_start_ms, header.window_end_ms, "disputed")
            self.state.mark_anchored(header.camera_id, header.window_start_ms, header.window_end_ms)

    async def check_block(self, header: BlockHeader, info, raw: bytes | None = None) -> tuple[str | None, Manifest | None]:
        """B4 (`_check`), for batch mode's signing: one rule for both modes. `raw`: the manifest
        as the sign request carried it (digest-checked and stored by the caller)."""
        return await self._check(header, info, raw)

    async def _check(self, header: BlockHeader, info, raw: bytes | None = None) -> tuple[str | None, Manifest | None]:
        """B4: the anchored header against this node's own pool (`core.batch_checks.judge_block`),
        then what needs the whitelist: the codec proof and substitutions. Returns (problem, manifest)."""
        if info is None:
            return "camera unknown to this node", None
        fetched = raw is None
        raw = raw if raw is not None else await self.fetch_block(cid_from_digest(header.manifest_digest))
        if raw is None:
            return "manifest unavailable", None
        try:
            manifest = Manifest.from_bytes(raw)
        except ManifestFormatError as exc:
            return f"manifest malformed: {type(exc).__name__}", None
        held = {f.ref.seq: f.ref for f in self.state.frames_in(header.camera_id, header.window_start_ms,
                                                                header.window_end_ms)}
        verdict = judge_block(header, manifest, held)
        if verdict.problem is not None:
            return verdict.problem, manifest
        if manifest.codec_proof is not None and not any(
                wire.verify_codec_proof(manifest.codec_proof, manifest.codec, key)
                for key in self.registry.keys_for(header.camera_id, header.window_start_ms)):
            return "the manifest's codec is not one the camera signed", manifest
        if manifest.declared_outages and (problem := outages.check_manifest(
                manifest, self.registry.keys_for(header.camera_id, header.window_start_ms))) is not None:
            return problem, manifest
        if fetched:
            await asyncio.to_thread(self.store.put, raw)  # manifests stay in every node's store
        listed = {f.seq: f for f in manifest.frames}
        for seq in verdict.lacking:
            if not await self._hold(header.camera_id, info.ip, listed[seq]):
                return f"frame {seq} cannot be verified by this node", manifest
        for sub_cam, sub_frames in manifest.substitutions:
            sub_info = self.registry.get(sub_cam)
            if sub_info is None or sub_info.group != info.group:
                return "substitution from a camera outside the group", manifest
            for f in sub_frames:
                if not await self._hold(sub_cam, sub_info.ip, f):
                    return f"substituted frame {f.seq} cannot be verified", manifest
        return None, manifest

    async def _hold(self, cam: bytes, ip: str, ref: FrameRef) -> bool:
        """True when this node holds the frame with the manifest's digest, fetching the signed
        packet from a peer when it lacks it (a late repair, re-verified as usual)."""
        def matches() -> bool | None:
            held = self.state.frame(cam, ref.seq)
            if held is None:
                return None
            # What the camera signed must be what the manifest says, field by field.
            return (held.ref.sha256, held.ref.timestamp_ms, held.ref.keyframe, held.ref.dts_ms, held.ref.size) == (
                ref.sha256, ref.timestamp_ms, ref.keyframe, ref.dts_ms, ref.size)

        if (verdict := matches()) is not None:
            return verdict
        for peer in self.peers.peers:
            got = await self.peers.frame(peer, cam, ref.seq)
            if got is None:
                continue
            if await self.accept(got[0], source=f"repair:{got[1]}", expect_camera=cam) == "accepted":
                self.state.record_repair(cam, ip, ref.seq, got[1], None)
            if (verdict := matches()) is not None:
                return verdict
        return False

    async def fetch_block(self, cid: str) -> bytes | None:
        """A manifest (or any stored block) from our store, else from a peer's, digest-checked."""
        try:
            return await asyncio.to_thread(self.store.get, cid)
        except StoreError:
            pass
        return await self.peers.block(cid)
