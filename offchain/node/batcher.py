"""Batch mode (`anchoring = "batch"`, docs/NODES.md "Batch mode"): one quorum-signed BatchLedger
batch per aligned window over every camera's block, final on inclusion.

* The window W is ready when every camera with pooled frames or open missing alarms in W is
  ready by the per-header rules (`core.windows`, combined in `core.batch_windows`).
* W's proposer (`core.windows` turn with camera None, slots counted from W's end and the previous
  batch's anchoredAt) builds each camera's block as per-header mode does (`Producer.build_window_block`,
  after pulling what the peers hold), on the camera's batch-mode tip; stores the block manifests and
  the batch manifest; signs the Batch and asks each peer for its signature (POST /peer/v1/batches/sign).
* A peer signs only after B4 (`Producer.check_block`) of every block, the check that no camera
  it holds frames of in W is left out, and `check_batch` against its own tips; never two batches
  for one (window, slot) (SQLite `batch_signed`).
* With the quorum the proposer anchors; every node follows the batches through the contract's
  views (`BatchLedgerClient`), advances its per-camera tips (SQLite `batch_tips`) and settles
  each camera's window exactly as an attested block.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from ..chain import reverts
from ..chain.health import ChainHealth, is_chain_fault
from ..chain.ledger import BatchLedgerClient
from ..core.batch import (Batch, BatchFormatError, BatchManifest, Tip, advance_tips, check_batch, order_signatures,
                          recover_batch_signer, sign_batch)
from ..core.batch_checks import (MAX_HOLDINGS_FRAMES, MAX_PULL_FRAMES, InlineError, assign_pulls, inline_count,
                                 match_inline, not_covered, pull_settled, seq_ranges)
from ..core.batch_windows import BatchState as Ready
from ..core.batch_windows import (CameraWindow, Refusal, SignDecision, batch_readiness, may_send_signed, sign_decision,
                                  slot_live)
from ..core.block import ZERO32, BlockHeader, Manifest, ManifestFormatError, proposer_for, window_of
from ..core.cid import InvalidCid, cid_from_digest, digest_from_cid
from ..core.windows import Readiness, Turn, is_closed, may_anchor, readiness, turn_at, waits_for_silent_peers
from ..store.base import ContentStore, StoreError
from .config import NodeConfig
from .peer_client import PeerClient
from .producer import Producer, raise_once
from .registry import CameraRegistry
from .state import BatchState, NodeState, named_alarm

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_FOLLOW_PER_TICK = 32  # batches followed per tick (a node far behind catches up over ticks)
CONCURRENCY = 16  # blocks checked at once (a block not carried inline, or a frame lacking, is a fetch)
# Reverts that mean another node's batch of this window (or a later one) was anchored first.
_LOST_RACE = ("WrongPrevBatchRoot", "WindowOutOfOrder")


class Following(Enum):
    """How this node follows the batches on chain (/api/v1/status batch.follow)."""

    FOLLOWING = "following"  # caught up, or catching up
    CHAIN_UNAVAILABLE = "chain-unavailable"  # unreachable, empty, another chain, no funds (chain health)
    REWOUND = "chain-rewound"  # fewer batches than this node followed: the chain was restarted or replaced
    DIVERGED = "chain-diverged"  # the next batch does not link to the last one followed
    STUCK = "stuck"  # the next batch cannot be settled yet (a manifest unavailable, an error): retried


_FAULT_ALARMS = {Following.REWOUND: "chain.batches_rewound", Following.DIVERGED: "chain.batches_diverged"}


@dataclass(frozen=True, kw_only=True)
class FollowHealth:
    state: Following
    detail: str
    since: float


@dataclass(frozen=True, kw_only=True)
class _Built:
    """A batch this node built: its manifest and bytes, every block manifest in header order,
    and the frames substituted per camera (counted once this node anchors it)."""

    manifest: BatchManifest
    raw: bytes
    blocks: list[bytes]
    substituted: dict[str, int]


async def _nothing() -> None:
    """The frames answer of a peer nothing was asked of."""
    return None


@dataclass(frozen=True, kw_only=True)
class _WindowPull:
    """What asking the peers before sealing a window gave."""

    cameras: set[bytes]  # the cameras frames were pulled (and accepted) for
    complete: bool  # every peer answered, and this node now holds every frame a peer listed


@dataclass(frozen=True, kw_only=True)
class _Prev:
    """The last batch this node followed: what the next must link to and when it was anchored."""

    root: bytes
    end_ms: int  # 0 before the first batch
    anchored_ms: int  # 0 before the first batch (slots then count from the window's end)
    index: int  # the next batch's index


class Batcher:
    """Seals, signs, anchors and follows batches. Given the configuration, this node's account and
    key, the node list, state and store, the whitelist, the BatchLedger client, chain health, the
    peer client, the producer (whose per-camera block building, B4 check and settling it reuses),
    and the quorum's reader."""

    def __init__(self, *, config: NodeConfig, address: str, private_key: str, nodes: Sequence[str], state: NodeState,
                 store: ContentStore, registry: CameraRegistry, batches: BatchLedgerClient, health: ChainHealth,
                 peers: PeerClient, producer: Producer, quorum: Callable[[], int]):
        self.config = config
        self.name = config.name
        self.address = address
        self.private_key = private_key
        self.nodes = list(nodes)
        self.state = state
        self.bstate = BatchState(state)
        self.store = store
        self.registry = registry
        self.batches = batches
        self.domain = batches.domain
        self.health = health
        self.peers = peers
        self.producer = producer
        self.quorum = quorum
        self.rules = config.window_rules()
        self.lock = asyncio.Lock()  # following and signing read and move the same tips
        self.following = FollowHealth(state=Following.FOLLOWING, detail="", since=time.time())
        self.chain_batches: int | None = None  # batchCount as last read
        self._ready: set[tuple[bytes, int]] = set()  # (camera, window start) judged ready
        self._swept_to = -1  # the last batch end whose late frames seal filed
        self._pulled_early: set[tuple[int, int]] = set()  # (window start, slot) whose holes were asked for

    # ------------------------------------------------------------------ facts
    def prev(self) -> _Prev:
        last = self.bstate.last()
        if last is None:
            return _Prev(root=ZERO32, end_ms=0, anchored_ms=0, index=0)
        return _Prev(root=bytes.fromhex(last["root"][2:]), end_ms=last["windowEndMs"],
                     anchored_ms=last["anchoredAt"] * 1000, index=last["index"] + 1)

    def tips(self) -> dict[bytes, Tip]:
        """Every whitelisted camera's tip in batch mode: its last batched block, else its head."""
        stored = self.bstate.tips()
        out: dict[bytes, Tip] = {}
        for info in self.registry.all():
            if not info.active or info.head_block == ZERO32:
                continue
            h, height, end = stored.get(info.camera_id, (info.head_block, 0, 0))
            out[info.camera_id] = Tip(block_hash=h, height=height, window_end_ms=end)
        return out

    def status(self) -> dict[str, Any]:
        """For /api/v1/status: the last batch followed, gas, and every camera's batch-mode tip
        (what `frameledger status` shows per camera in batch mode)."""
        tips = {}
        for cam, (h, height, end) in self.bstate.tips().items():
            info = self.registry.get(cam)
            tips[info.ip if info else "0x" + cam.hex()] = {"block": "0x" + h.hex(), "height": height, "windowEndMs": end}
        f = self.following
        return {"lastBatch": self.bstate.last(), "batchGas": self.bstate.total_gas(),
                "batchesFollowed": self.bstate.next_index(), "tips": tips,
                "follow": {"state": f.state.value, "detail": f.detail, "since": round(f.since, 3),
                           "chainBatches": self.chain_batches}}

    # ------------------------------------------------------------------- tick
    async def tick(self) -> None:
        """Follow the chain, then seal, only once caught up: a batch built on a stale last root
        would only be refused. The chain's faults wait (backing off, as the producer's do)."""
        if not await self.producer.chain_ready():
            self._note(Following.CHAIN_UNAVAILABLE, self.health.status.error or "chain not usable")
            return
        try:
            if await self.follow():
                await self.seal()
        except Exception as exc:  # noqa: BLE001 - the chain's trouble waits; anything else is logged
            if is_chain_fault(exc):
                self.producer._chain_failed(exc)
                self._note(Following.CHAIN_UNAVAILABLE, f"{type(exc).__name__}: {exc}")
                return
            raise

    def _note(self, state: "Following", detail: str = "") -> None:
        """What /api/v1/status shows under batch.follow. A chain that rewound or diverged from
        what this node followed (restarted, replaced) is an alarm while it lasts, cleared
        ("recovered") once the node follows again; each change is logged once, not per tick."""
        changed = state is not self.following.state
        if changed or (state is not Following.FOLLOWING and detail[:300] != self.following.detail):
            level = logging.INFO if state is Following.FOLLOWING else logging.WARNING
            log.log(level, "batch following: %s", state.value, extra={"node": self.name, "detail": detail[:300]})
            self.following = FollowHealth(state=state, detail=detail[:300], since=time.time())
        if state in _FAULT_ALARMS:
            self._alarm(None, _FAULT_ALARMS[state], str(self.prev().index), detail)
        elif changed and state is Following.FOLLOWING:
            for kind in _FAULT_ALARMS.values():
                for alarm in self.state.alarms(open_only=True, kind=kind):
                    self.state.clear_alarm(alarm.id, "recovered")

    # -------------------------------------------------------------- following
    async def follow(self) -> bool:
        """Settle every batch anchored since the last one followed, in order (at most
        MAX_FOLLOW_PER_TICK). Returns whether this node is caught up with the chain. A chain
        fault propagates (the caller backs off); anything else leaves the node `STUCK` on that
        batch, retried next tick, as Producer.scan_anchored keeps its checkpoint."""
        async with self.lock:
            count = await asyncio.to_thread(self.batches.batch_count)
            self.chain_batches = count
            if count < self.prev().index:
                self._note(Following.REWOUND, f"the chain holds {count} batches; this node followed {self.prev().index}")
                return False
            for _ in range(MAX_FOLLOW_PER_TICK):
                prev = self.prev()
                if prev.index >= count:
                    self._note(Following.FOLLOWING)
                    return True
                try:
                    if not await self._follow_one(prev):
                        return False  # retried next tick
                    self._note(Following.FOLLOWING)  # catching up counts: a past fault is over
                except Exception as exc:  # noqa: BLE001 - on record in the status; retried next tick
                    if is_chain_fault(exc):
                        raise
                    if self.following.state is not Following.STUCK:
                        log.exception("could not follow a batch", extra={"node": self.name, "batch": prev.index})
                    self._note(Following.STUCK, f"batch {prev.index}: {type(exc).__name__}: {exc}")
                    return False
            return False

    async def _follow_one(self, prev: _Prev) -> bool:
        index = prev.index
        rec = await asyncio.to_thread(self.batches.batch_at, index)
        raw = await self.producer.fetch_block(cid_from_digest(rec.manifest_digest))
        if raw is None:
            self._note(Following.STUCK, f"batch {index}: manifest unavailable")
            return False
        try:
            manifest = BatchManifest.from_bytes(raw)
        except BatchFormatError as exc:
            self._alarm(None, "batch.manifest_malformed", str(index), f"batch {index}: {exc}")
            self._note(Following.STUCK, f"batch {index}: manifest malformed")
            return False
        if manifest.prev_batch_root != prev.root:  # the contract links every batch: this chain is not ours
            self._note(Following.DIVERGED, f"batch {index} links to 0x{manifest.prev_batch_root.hex()}, "
                                           f"this node's last batch is 0x{prev.root.hex()}")
            return False
        await asyncio.to_thread(self.store.put, raw)
        tips = self.tips()
        for finding in check_batch(manifest, tips):  # the quorum signed it; on record if it breaks the rule
            self._alarm(finding.camera_id, "batch.chain_rule", f"{index}:{finding.problem.value}",
                        f"batch {index}: {finding.problem.value} {finding.detail}")
        raws = await self._block_manifests(manifest.headers)
        missing = next((h for h, raw in zip(manifest.headers, raws) if raw is None), None)
        if missing is not None:
            self._note(Following.STUCK, f"batch {index}: block manifest of camera 0x{missing.camera_id.hex()[:16]} "
                                        f"height {missing.height} unavailable")
            return False
        # Alarms whose frames all arrived are repaired whatever the block: once per batch, not
        # once per camera (each pass reads every open alarm).
        await self.producer.repairer.clear_satisfied_alarms()
        for i, (header, raw) in enumerate(zip(manifest.headers, [r for r in raws if r is not None])):
            if i % 16 == 0:
                await asyncio.sleep(0)  # 200 cameras' settling never holds the loop at once
            await self._settle_block(header, raw)
        self._late_before(manifest.window_end_ms)
        gas, submitter = await asyncio.to_thread(self._receipt_of, index)
        after = advance_tips(tips, manifest)
        self.bstate.record(index=index, window_start=rec.window_start_ms, window_end=rec.window_end_ms,
                           root=rec.batch_root, digest=rec.manifest_digest, block_count=rec.block_count,
                           anchored_at=rec.anchored_at, gas=gas, proposer=submitter,
                           tips={c: (t.block_hash, t.height, t.window_end_ms) for c, t in after.items()
                                 if c in {h.camera_id for h in manifest.headers}})
        self.state.bump("*", "batches_followed")
        log.info("batch final", extra={"node": self.name, "batch": index, "blocks": len(manifest.headers), "gas": gas,
                                       "window": rec.window_start_ms})
        return True

    async def _block_manifests(self, headers: Sequence[BlockHeader]) -> list[bytes | None]:
        """Every block manifest of a batch: those in this node's store in one read (a signing
        node stored them when it signed), the rest fetched from a peer, digest-checked, stored."""
        cids = [cid_from_digest(h.manifest_digest) for h in headers]

        def local() -> list[bytes | None]:
            out: list[bytes | None] = []
            for cid in cids:
                try:
                    out.append(self.store.get(cid))
                except StoreError:
                    out.append(None)
            return out

        raws = await asyncio.to_thread(local)
        for i, cid in enumerate(cids):
            if raws[i] is None and (raw := await self.peers.block(cid)) is not None:
                await asyncio.to_thread(self.store.put, raw)
                raws[i] = raw
        return raws

    async def _settle_block(self, header: BlockHeader, raw: bytes) -> None:
        """One camera's window of a final batch, settled as an attested block: its frames leave
        the pool and its alarms clear (declared or substituted; repaired ones already are)."""
        try:
            manifest: Manifest | None = Manifest.from_bytes(raw)
        except ManifestFormatError as exc:
            self._alarm(header.camera_id, "batch.manifest_malformed", header.hash.hex()[:16], str(exc))
            manifest = None
        info = self.registry.get(header.camera_id)
        ip = info.ip if info else "0x" + header.camera_id.hex()
        self.state.note_block(header.hash, header.camera_id, header.height, header.window_start_ms,
                              header.window_end_ms, "batch")
        self.state.bump(ip, "blocks_batched")
        await self.producer._settle(header.camera_id, ip, header.window_start_ms, header.window_end_ms,
                                    list(manifest.gaps) if manifest else [],
                                    [f.seq for f in manifest.frames] if manifest else [], clear_satisfied=False)

    def _late_before(self, end_ms: int) -> None:
        """Frames still pooled before the last batch's end arrived too late for it."""
        for cam in self.state.pool_cameras():
            late = self.state.mark_anchored(cam, 0, end_ms)
            if late:
                info = self.registry.get(cam)
                self.state.bump(info.ip if info else "*", "late_frames", late)

    def _receipt_of(self, index: int) -> tuple[int | None, str]:
        """Gas and submitter of a batch, from its BatchAnchored log and receipt (worker thread)."""
        start = int(self.state.get_meta("batch_log_block") or 0)
        logs = self.batches.contract.events.BatchAnchored().get_logs(from_block=start,
                                                                       argument_filters={"index": index})
        if not logs:
            return None, ""
        entry = logs[0]
        receipt = self.batches.signer.w3.eth.get_transaction_receipt(entry.transactionHash)
        self.state.set_meta("batch_log_block", str(entry.blockNumber))
        return int(receipt.gasUsed), str(entry.args.submitter)

    # ---------------------------------------------------------------- sealing
    def _candidates(self) -> list[bytes]:
        """Cameras with pooled frames or open missing alarms, whitelisted and past the genesis."""
        cams = set(self.state.pool_cameras())
        cams |= {a.camera_id for a in self.state.alarms(open_only=True, kind="missing") if a.camera_id}
        out = []
        for cam in sorted(cams):
            info = self.registry.get(cam)
            if info is not None and info.active and info.head_block != ZERO32:
                out.append(cam)
        return out

    def _next_window(self, cams: list[bytes], floor_ms: int) -> int | None:
        """The oldest window at or after the last batch's end holding pooled frames or an open hole."""
        starts = []
        for cam in cams:
            ts = self.state.next_pool_ts(cam, floor_ms)
            if ts is not None:
                starts.append(window_of(ts, self.config.window_ms)[0])
        # Every open alarm in one read, not one read per camera (200 a tick were a twentieth of
        # a node's event loop, bench latency).
        listed = set(cams)
        for a in self.state.alarms(open_only=True, kind="missing"):
            if a.camera_id not in listed:
                continue
            lo = max(a.ts_from if a.ts_from is not None else floor_ms, floor_ms)
            if a.ts_to is None or a.ts_to > floor_ms:
                starts.append(window_of(lo, self.config.window_ms)[0])
        return min(starts) if starts else None

    def _camera_window(self, cam: bytes, start: int, end: int, now: float) -> CameraWindow:
        if (cam, start) in self._ready:
            return CameraWindow(camera_id=cam, closed=True, readiness=Readiness.READY)
        last = self.state.last_frame(cam)
        if last is None:
            return CameraWindow(camera_id=cam, closed=True, readiness=Readiness.EMPTY)
        p = self.producer
        if not is_closed(end, p._stream_view(cam, last[1], now), self.rules):
            return CameraWindow(camera_id=cam, closed=False, readiness=Readiness.REPAIRING)
        closed_at = p.closed_at.setdefault((cam, start), now)
        frames = [f.ref for f in self.state.frames_in(cam, start, end)]
        holes = bool(p._gap_spans(cam, start, end, frames, None) or p._open_alarms_in(cam, start, end))
        ready = readiness(has_frames=bool(frames), has_holes=holes, closed_for_ms=(now - closed_at) * 1000,
                          rules=self.rules)
        if ready is Readiness.READY:
            # Ready stays ready (closed stays closed, the repair deadline only recedes): the
            # cameras still repairing are the only ones judged again each tick. At 200 cameras
            # judging all of them every tick was a seventh of the node's event loop.
            self._ready.add((cam, start))
        return CameraWindow(camera_id=cam, closed=True, readiness=ready)

    async def _views(self, cams: Sequence[bytes], start: int, end: int, now: float) -> list[CameraWindow]:
        views = []
        for i, cam in enumerate(cams):
            if i % 16 == 0:
                await asyncio.sleep(0)  # 200 cameras' pool queries never hold the loop (ingest, API) at once
            views.append(self._camera_window(cam, start, end, now))
            # An open camera holds the batch and the others close about when it does: stop. A
            # repairing one does not stop the visit: every camera's repair deadline must start
            # when its window closes, not when the camera before it is ready (25 cameras with a
            # hole each then waited 25 deadlines one after the other: bench latency, 200 cameras).
            if not views[-1].closed:
                break
        return views

    async def seal(self) -> None:
        """Anchor the next window as one batch when it is ready and this node's slot."""
        prev = self.prev()
        if prev.end_ms != self._swept_to:  # once per batch followed, not every tick (an UPDATE per camera)
            self._late_before(prev.end_ms)
            self._ready = {k for k in self._ready if k[1] >= prev.end_ms}
            self._pulled_early = {k for k in self._pulled_early if k[0] >= prev.end_ms}
            self._swept_to = prev.end_ms
        cams = self._candidates()
        start = self._next_window(cams, prev.end_ms)
        if start is None:
            return
        end = start + self.config.window_ms
        now = time.time()
        views = await self._views(cams, start, end, now)
        ready = batch_readiness(views)
        turn = turn_at(int(now * 1000), window_end_ms=end, prev_anchored_ms=prev.anchored_ms, rules=self.rules)
        mine = may_anchor(self.address, turn, window_start_ms=start, nodes=self.nodes, camera=None)
        every_closed = len(views) == len(cams) and all(v.closed for v in views)
        if ready.state is Ready.REPAIRING and mine and every_closed and (start, turn.attempt) not in self._pulled_early:
            # The slot's proposer asks every peer for the holes at once instead of waiting out
            # the repair deadline: what a peer holds is in the block either way (pulled before
            # sealing); only holes no peer fills still wait for it (the camera may resend).
            self._pulled_early.add((start, turn.attempt))
            if (await self._pull_window(start, end, [v.camera_id for v in views])).cameras:  # (alarms cleared)
                views = await self._views(cams, start, end, time.time())
                ready = batch_readiness(views)
        if ready.state is not Ready.READY or not mine:
            return  # EMPTY cannot last: the next pooled frame's window is the next start
        if self._promised(start, turn.attempt):
            return  # this node signed the slot before's batch: its proposer may still send it
        began = time.monotonic()
        built = await self._build(ready.cameras, start, end, prev, turn)
        if built is None:
            return
        log.info("batch built", extra={"node": self.name, "window": start, "blocks": len(built.manifest.headers),
                                       "build_s": round(time.monotonic() - began, 3), "attempt": turn.attempt,
                                       "since_end_s": round(now - end / 1000, 3)})
        await self._collect_and_anchor(built, prev, turn.attempt)

    def _promised(self, start: int, attempt: int) -> bool:
        """Whether this node signed another proposer's batch of the window in the slot before
        (`SignDecision.PROMISED`): then it builds none of its own in this slot."""
        return (attempt > 0 and proposer_for(None, start, self.nodes, attempt - 1) != self.address
                and self.bstate.signed(start, attempt - 1) is not None)

    async def _build(self, cams: Sequence[bytes], start: int, end: int, prev: _Prev, turn: Turn) -> _Built | None:
        tips = self.tips()
        began = time.monotonic()
        # The peers are asked what they hold while the blocks are built (each waits on the other
        # only for the event loop); the few cameras frames were pulled for are built again.
        pull = asyncio.ensure_future(self._pull_window(start, end, [c for c in cams if c in tips]))
        built: dict[bytes, tuple[BlockHeader, bytes, int]] = {}
        try:
            await self._build_blocks(sorted(set(cams) & set(tips)), start, end, tips, built)
        finally:
            pulled = await pull
        pull_s = time.monotonic() - began
        if not pulled.complete and self._waits_for_silent_peers(cams, start, turn):
            return None
        await self._build_blocks(sorted(pulled.cameras & set(tips)), start, end, tips, built)
        headers = [built[cam][0] for cam in sorted(built)]
        blocks = {h.manifest_digest: built[h.camera_id][1] for h in headers}
        substituted = {info.ip: built[cam][2] for cam in built if (info := self.registry.get(cam)) is not None}
        if not headers:
            return None
        manifest = BatchManifest.of(window_start_ms=start, window_end_ms=end, prev_batch_root=prev.root, headers=headers)
        findings = check_batch(manifest, tips, Batch.of_manifest(manifest))
        if findings:
            log.error("own batch breaks the chain rule", extra={"node": self.name, "window": start,
                                                                 "problem": findings[0].problem.value})
            return None
        raw = manifest.to_bytes()
        await asyncio.to_thread(self.store.put_many, [*blocks.values(), raw])  # one thread hop, not 201
        log.info("batch blocks built", extra={"node": self.name, "window": start, "pull_s": round(pull_s, 3),
                                               "build_s": round(time.monotonic() - began, 3),
                                               "rebuilt": len(pulled.cameras)})
        return _Built(manifest=manifest, raw=raw, blocks=[blocks[h.manifest_digest] for h in manifest.headers],
                      substituted=substituted)

    async def _build_blocks(self, cams: Sequence[bytes], start: int, end: int, tips: dict[bytes, Tip],
                            out: dict[bytes, tuple[BlockHeader, bytes, int]]) -> None:
        """Each camera's block of [start, end) on its tip, from the frames held now, into `out`
        (camera -> header, manifest bytes, frames substituted); not stored yet."""
        for i, cam in enumerate(cams):
            if i % 16 == 0:
                await asyncio.sleep(0)  # 200 cameras' blocks never hold the loop (ingest, API) at once
            info = self.registry.get(cam)
            if info is None:
                continue
            frames = [f.ref for f in self.state.frames_in(cam, start, end)]
            tip = tips[cam]
            block, _, subs = await self.producer.build_window_block(cam, info, start, end, tip.height, tip.block_hash,
                                                                    frames, store=False)
            out[cam] = (block.header, block.manifest_bytes, sum(len(fs) for _, fs in subs))

    def _waits_for_silent_peers(self, cams: Sequence[bytes], start: int, turn: Turn) -> bool:
        """A peer that did not answer (restarting, overloaded) may hold a window's tail: the
        batch waits for the next tick as a header-mode block does (`core.windows.
        waits_for_silent_peers`: before the repair deadline, counted from the first camera seen
        closed, and while enough of the slot is left to build and send)."""
        now = time.time()
        closed = [self.producer.closed_at.get((cam, start), now) for cam in cams]
        if not waits_for_silent_peers(closed_for_ms=(now - min(closed, default=now)) * 1000,
                                      now_ms=int(now * 1000), turn=turn, rules=self.rules):
            return False
        log.info("peer holdings incomplete, batch waits", extra={"node": self.name, "window": start})
        self.state.bump("*", "seal_waits")
        return True

    async def _pull_window(self, start: int, end: int, cams: Sequence[bytes]) -> _WindowPull:
        """Before sealing: ONE holdings request per peer for every camera of the window (this
        node's seq ranges in, the seqs it lacks out), then ONE frames request per peer for what
        this node lacks (`assign_pulls`: each frame from one peer), each packet verified and on
        record as a repair, so no block omits a frame a peer holds (a lost tail has no later
        frame to reveal it as a hole). Says which cameras frames were pulled for, and whether
        every peer answered and every frame a peer listed is now held here."""
        have = {cam: seq_ranges(f.ref.seq for f in self.state.frames_in(cam, start, end)) for cam in cams}
        peers = list(self.peers.peers)
        holdings = await asyncio.gather(*(self.peers.batch_holdings(p, start, end, have) for p in peers))
        answers = [h.seqs if h is not None else None for h in holdings]
        listed = {cam for answer in answers for cam in (answer or {})}
        mine = {cam: {f.ref.seq for f in self.state.frames_in(cam, start, end)} for cam in listed}
        asks = assign_pulls(answers, mine)
        fetched = await asyncio.gather(*(self.peers.batch_frames(p, ask) if ask else _nothing()
                                         for p, ask in zip(peers, asks)))
        pulled = await self._keep_pulled(fetched)  # (None: nothing asked of that peer, or no answer)
        if pulled:
            log.info("pulled frames from peers before sealing", extra={"node": self.name, "window": start,
                                                                        "cameras": len(pulled),
                                                                        "frames": sum(len(a) for a in asks)})
        delivered = [None if f is None else {(cam, seq) for cam, seq, _ in f[1]} for f in fetched]
        held = {cam: {f.ref.seq for f in self.state.frames_in(cam, start, end)} for cam in listed}
        complete = pull_settled(answers, [h is not None and not h.complete for h in holdings], asks, delivered, held)
        return _WindowPull(cameras=pulled, complete=complete)

    async def _keep_pulled(self, answers: Sequence[tuple[str, list[tuple[bytes, int, bytes]]] | None]) -> set[bytes]:
        """Packets peers sent (`PeerClient.batch_frames` answers), each through every check a
        camera's packet passes and on record as a repair (I8); returns the cameras some were
        accepted for. Verified side by side, as cameras' frames are: one after the other, each
        would wait for its own group commit."""
        kept: set[bytes] = set()

        async def keep(name: str, cam: bytes, seq: int, raw: bytes) -> None:
            info = self.registry.get(cam)
            if info is None or not info.active or info.head_block == ZERO32:
                return
            if await self.producer.accept(raw, source=f"repair:{name}", expect_camera=cam) == "accepted":
                self.state.record_repair(cam, info.ip, seq, name, None)
                kept.add(cam)

        await bounded([keep(a[0], cam, seq, raw) for a in answers if a for cam, seq, raw in a[1]], limit=64)
        if kept:
            # A frame pulled here may be the last one an alarm waits for: repaired now, not when
            # the batch is followed seconds later.
            await self.producer.repairer.clear_satisfied_alarms()
        return kept

    async def _collect_and_anchor(self, built: _Built, prev: _Prev, attempt: int) -> None:
        """Ask the peers to sign for slot `attempt` (this node's, judged before building) while
        they still read it as that slot, then send within `may_send_signed`'s grace."""
        manifest = built.manifest
        batch = Batch.of_manifest(manifest)
        if not may_send_signed(attempt, int(time.time() * 1000), window_end_ms=manifest.window_end_ms,
                               prev_anchored_ms=prev.anchored_ms, rules=self.rules):
            self.state.bump("*", "turns_passed")  # building outlasted the slot and its grace
            return
        own = self._sign_own(manifest, batch, attempt)
        if own is None:
            return  # this node signed another batch for this slot (a restart mid-slot): wait for the next
        # ONE request per peer: the batch manifest and as many block manifests as the body limit
        # holds travel inline (`inline_count`); the peer fetches any left over by CID.
        n = inline_count([len(b) for b in built.blocks], self.config.http_max_body_bytes, fixed=len(built.raw))
        asked = time.monotonic()
        answers = await asyncio.gather(*(self.peers.sign_batch(p, manifest.cid, attempt, built.raw, built.blocks[:n])
                                         for p in self.peers.peers))
        signatures = [own]
        for peer, answer in zip(self.peers.peers, answers):
            sig = self._peer_signature(peer, answer, batch)
            if sig is not None:
                signatures.append(sig)
        log.info("batch signatures", extra={"node": self.name, "window": manifest.window_start_ms,
                                            "signatures": len(signatures), "peers": len(self.peers.peers),
                                            "inline": n, "collect_s": round(time.monotonic() - asked, 3)})
        quorum = await asyncio.to_thread(self.quorum)
        if len(signatures) < quorum:
            self.state.bump("*", "batches_short_of_quorum")
            return
        ordered = order_signatures(self.domain, batch, signatures)
        try:
            sent = await asyncio.to_thread(self._anchor_in_turn, batch, ordered, prev, attempt)
        except reverts.ContractRevert as exc:
            if exc.name in _LOST_RACE:
                self.state.bump("*", "lost_races")
                log.info("another node anchored first", extra={"node": self.name, "reason": exc.name})
                return
            self._alarm(None, "chain.batch_refused", f"{manifest.window_start_ms}:{exc.name}", str(exc))
            return
        if sent is None:
            self.state.bump("*", "turns_passed")
            return
        self.state.bump("*", "batches_anchored")
        for ip, subs in built.substituted.items():
            if subs:
                self.state.bump(ip, "substituted", subs)
        self.state.bump("*", "batch_gas", sent.tx.gas_used)
        if attempt > 0:
            self.state.bump("*", "takeovers")
        self.health.note_anchor(batch.batch_root, "*", sent.index, sent.tx.tx_hash, sent.tx.block_number)
        log.info("batch anchored", extra={"node": self.name, "batch": sent.index, "blocks": batch.block_count,
                                          "gas": sent.tx.gas_used, "attempt": attempt})
        await self.follow()

    def _anchor_in_turn(self, batch: Batch, signatures: list[bytes], prev: _Prev, attempt: int) -> Any:
        """Worker thread, right before the transaction: the slot judged again on this moment's
        clock (`may_send_signed`: slot `attempt`, or the grace through the next); a takeover, or
        a send in the grace, first re-reads the batch count (the slot before may have anchored)."""
        end, anchored = batch.window_end_ms, prev.anchored_ms
        now = turn_at(int(time.time() * 1000), window_end_ms=end, prev_anchored_ms=anchored, rules=self.rules)
        if (attempt > 0 or now.attempt > attempt) and self.batches.batch_count() != prev.index:
            return None
        if not may_send_signed(attempt, int(time.time() * 1000), window_end_ms=end, prev_anchored_ms=anchored,
                               rules=self.rules):
            return None
        return self.batches.anchor_batch(batch, signatures)

    def _sign_own(self, manifest: BatchManifest, batch: Batch, attempt: int) -> bytes | None:
        before = self.bstate.signed(manifest.window_start_ms, attempt)
        decision = sign_decision(before[0] if before else None, manifest.digest, self._previous_slot(manifest, attempt),
                                 self._next_slot(manifest, attempt))
        if decision in (SignDecision.EQUIVOCATION, SignDecision.PROMISED, SignDecision.SUPERSEDED):
            return None
        if decision is SignDecision.SAME_AGAIN and before:
            return before[1]
        sig = sign_batch(self.private_key, self.domain, batch)
        return sig if self.bstate.note_signed(manifest.window_start_ms, attempt, manifest.digest, sig) else None

    def _peer_signature(self, peer: str, answer: dict[str, Any] | None, batch: Batch) -> bytes | None:
        if answer is None:
            return None
        if "signature" not in answer:
            log.info("peer refused to sign", extra={"node": self.name, "peer": peer, "detail": str(answer.get("detail"))[:200]})
            self.state.bump("*", "batch_refusals_received")
            return None
        try:
            sig = bytes.fromhex(str(answer["signature"]).removeprefix("0x"))
            signer = recover_batch_signer(self.domain, batch, sig)
        except ValueError:
            return None
        return sig if signer.lower() in {n.lower() for n in self.nodes} else None

    # ---------------------------------------------------------------- signing
    async def on_holdings(self, start: int, end: int, have: dict[bytes, list[tuple[int, int]]]) -> dict[str, Any]:
        """A proposer's holdings request: per camera, the seqs this node holds in [start, end)
        that `have` misses, cameras it did not list included (this node may be the only one
        that heard one), at most MAX_HOLDINGS_FRAMES in all (`complete` false beyond)."""
        cams = list(have) + [c for c in self.state.pool_cameras() if c not in have]
        left = MAX_HOLDINGS_FRAMES
        out = []
        for i, cam in enumerate(cams):
            if i % 64 == 0:
                await asyncio.sleep(0)  # 10,000 cameras' pool queries never hold the loop at once
            missing = not_covered([f.ref for f in self.state.frames_in(cam, start, end)], have.get(cam, []), left)
            if missing:
                out.append({"cameraId": "0x" + cam.hex(), "seqs": [f.seq for f in missing]})
                left -= len(missing)
            if left <= 0:
                break
        return {"cameras": out, "complete": left > 0}

    async def on_sign_request(self, cid: str, attempt: int, requester: str, manifest: bytes | None = None,
                              blocks: Sequence[bytes] = ()) -> dict[str, Any]:
        """A peer asks this node to sign a batch: every check passes, or `Refusal` (with an alarm).
        `manifest` and `blocks`: the batch manifest and block manifests the request carried."""
        if not self.health.ready():
            raise Refusal("chain-unavailable", self.health.status.error or "this node cannot read the chain now")
        try:
            caught_up = await self.follow()  # judge against the tips as the chain leaves them now
        except Exception as exc:  # noqa: BLE001 - the chain's faults are a refusal, not a crash
            if not is_chain_fault(exc):
                raise
            self.producer._chain_failed(exc)
            raise Refusal("chain-unavailable", f"{type(exc).__name__}") from None
        if not caught_up:
            raise Refusal("not-caught-up", f"{self.following.state.value}: {self.following.detail}"[:300])
        async with self.lock:
            try:
                return await self._sign_checked(cid, attempt, requester, manifest, blocks)
            except Refusal as exc:
                self._alarm(exc.camera, "batch.refused", f"{cid[-16:]}:{attempt}:{exc.reason}",
                            f"refused to sign batch {cid} (slot {attempt}) for {requester}: {exc}")
                self.state.bump("*", "batch_refusals")
                raise

    async def _manifest_of(self, cid: str, inline: bytes | None) -> BatchManifest:
        try:
            want = digest_from_cid(cid)
        except InvalidCid as exc:
            raise Refusal("malformed", f"manifestCid: {exc}") from None
        if inline is not None and hashlib.sha256(inline).digest() != want:
            raise Refusal("inline-mismatch", "the inline batch manifest is not the one manifestCid names")
        raw = inline if inline is not None else await self.producer.fetch_block(cid)
        if raw is None:
            raise Refusal("manifest-unavailable", "no node serves this batch manifest")
        try:
            return BatchManifest.from_bytes(raw)
        except BatchFormatError as exc:
            raise Refusal("malformed", str(exc)) from None

    async def _sign_checked(self, cid: str, attempt: int, requester: str, inline: bytes | None,
                            blocks: Sequence[bytes]) -> dict[str, Any]:
        manifest = await self._manifest_of(cid, inline)
        try:
            carried = match_inline(manifest.headers, blocks)
        except InlineError as exc:
            raise Refusal("inline-mismatch", str(exc)) from None
        batch, prev = Batch.of_manifest(manifest), self.prev()
        self._check_slot(manifest, attempt, requester, prev)
        findings = check_batch(manifest, self.tips(), batch)
        if findings:
            raise Refusal(findings[0].problem.value, findings[0].detail or "chain rule", findings[0].camera_id)
        await self._check_blocks(manifest, requester, carried)
        before = self.bstate.signed(manifest.window_start_ms, attempt)
        decision = sign_decision(before[0] if before else None, manifest.digest, self._previous_slot(manifest, attempt),
                                 self._next_slot(manifest, attempt))
        if decision is SignDecision.SUPERSEDED:
            raise Refusal(decision.value, f"another batch of window {manifest.window_start_ms} was signed in slot "
                                          f"{attempt + 1}")
        if decision is SignDecision.EQUIVOCATION:
            raise Refusal(decision.value, f"another batch was signed for window {manifest.window_start_ms}, slot {attempt}")
        if decision is SignDecision.PROMISED:
            raise Refusal(decision.value, f"another batch of window {manifest.window_start_ms} was signed in slot "
                                          f"{attempt - 1}; its proposer may still send it")
        # What this node signs, it keeps: the batch and block manifests are in its store.
        await asyncio.to_thread(self.store.put_many, [manifest.to_bytes(), *carried.values()])
        if decision is SignDecision.SAME_AGAIN and before:
            sig = before[1]
        else:
            sig = sign_batch(self.private_key, self.domain, batch)
            self.bstate.note_signed(manifest.window_start_ms, attempt, manifest.digest, sig)
            self.state.bump("*", "batches_signed")
        return {"signature": "0x" + sig.hex(), "signer": self.address}

    def _previous_slot(self, manifest: BatchManifest, attempt: int) -> bytes | None:
        """The digest this node signed for the window in slot `attempt - 1` (None: none)."""
        before = self.bstate.signed(manifest.window_start_ms, attempt - 1) if attempt > 0 else None
        return before[0] if before else None

    def _next_slot(self, manifest: BatchManifest, attempt: int) -> bytes | None:
        """The digest this node signed for the window in slot `attempt + 1` (None: none)."""
        after = self.bstate.signed(manifest.window_start_ms, attempt + 1)
        return after[0] if after else None

    def _check_slot(self, manifest: BatchManifest, attempt: int, requester: str, prev: _Prev) -> None:
        if manifest.prev_batch_root != prev.root:
            raise Refusal("wrong-prev-batch-root", f"the last batch this node followed has root 0x{prev.root.hex()}")
        if manifest.window_start_ms < prev.end_ms:
            raise Refusal("window-out-of-order", f"the last batch ended at {prev.end_ms}")
        if not slot_live(attempt, int(time.time() * 1000), window_end_ms=manifest.window_end_ms,
                         prev_anchored_ms=prev.anchored_ms, rules=self.rules):
            raise Refusal("not-this-slot", f"slot {attempt} is neither the slot of window {manifest.window_start_ms} "
                                           f"now nor the one before it")
        if proposer_for(None, manifest.window_start_ms, self.nodes, attempt).lower() != requester.lower():
            raise Refusal("not-the-proposer", f"{requester} is not the proposer of slot {attempt}")

    async def _check_blocks(self, manifest: BatchManifest, requester: str, carried: dict[bytes, bytes]) -> None:
        """B4 of every block against this node's pool, in one pass over the manifests the
        request carried (a block not carried is fetched by CID), and no camera it holds frames
        of in W left out."""
        listed = {h.camera_id for h in manifest.headers}
        for header in manifest.headers:
            if header.proposer.lower() != requester.lower():
                raise Refusal("block-check", f"block names proposer {header.proposer}, not {requester}", header.camera_id)
        await self._fetch_lacking(manifest.headers, carried)
        verdicts = await bounded([self.producer.check_block(h, self.registry.get(h.camera_id),
                                                            carried.get(h.manifest_digest))
                                  for h in manifest.headers])
        for header, (problem, _) in zip(manifest.headers, verdicts):
            if problem is not None:
                raise Refusal("block-check", problem, header.camera_id)
        for cam in self.state.pool_cameras():
            if cam not in listed and self.state.frames_in(cam, manifest.window_start_ms, manifest.window_end_ms):
                info = self.registry.get(cam)
                if info is not None and info.active:
                    raise Refusal("omits-camera", f"no block for camera {info.ip}, whose frames this node holds", cam)

    async def _fetch_lacking(self, headers: Sequence[BlockHeader], carried: dict[bytes, bytes]) -> None:
        """The frames the carried blocks list and this node lacks,
        asked of the peers in ONE frames request each (in order, each for what is still
        lacking) and verified as repairs, so B4 then judges every block locally instead of
        fetching frame by frame. A frame no peer serves is left to B4, which refuses."""
        lacking: dict[bytes, list[int]] = {}
        for i, h in enumerate(headers):
            if i % 16 == 0:
                await asyncio.sleep(0)
            raw = carried.get(h.manifest_digest)
            try:
                manifest = Manifest.from_bytes(raw) if raw is not None else None
            except ManifestFormatError:
                continue  # B4 says so
            if manifest is not None:
                # Only what is lacking, not all of B4 (`check_block` judges every block next;
                # running `judge_block` here too built every frames tree twice).
                held = {f.ref.seq for f in self.state.frames_in(h.camera_id, h.window_start_ms, h.window_end_ms)}
                if seqs := [f.seq for f in manifest.frames if f.seq not in held]:
                    lacking[h.camera_id] = seqs[:MAX_PULL_FRAMES]
        for peer in self.peers.peers:
            answer = await self.peers.batch_frames(peer, assign_pulls([lacking], {})[0]) if lacking else None
            if answer is None:
                continue
            await self._keep_pulled([answer])
            for cam, seq, _ in answer[1]:
                if seq in lacking.get(cam, []):
                    lacking[cam].remove(seq)
                    if not lacking[cam]:
                        del lacking[cam]

    def _alarm(self, cam: bytes | None, kind: str, key: str, detail: str) -> None:
        info = self.registry.get(cam) if cam else None
        raise_once(self.state, self.name, named_alarm(f"{self.name}:{kind}:{key}", kind, cam, info.ip if info else None,
                                                      detail), "batch alarm")


async def bounded(coros: Sequence[Awaitable[T]], limit: int = CONCURRENCY) -> list[T]:
    """The results of `coros` in order, at most `limit` running at once."""
    gate = asyncio.Semaphore(limit)

    async def one(c: Awaitable[T]) -> T:
        async with gate:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))
