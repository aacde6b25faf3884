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
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from ..chain import reverts
from ..chain.health import ChainHealth, is_chain_fault
from ..chain.ledger import BatchLedgerClient
from ..core.batch import (Batch, BatchFormatError, BatchManifest, Tip, advance_tips, check_batch, order_signatures,
                          recover_batch_signer, sign_batch)
from ..core.batch_windows import BatchState as Ready
from ..core.batch_windows import CameraWindow, Refusal, SignDecision, batch_readiness, sign_decision, slot_plausible
from ..core.block import ZERO32, BlockHeader, Manifest, ManifestFormatError, proposer_for, window_of
from ..core.cid import cid_from_digest
from ..core.windows import Readiness, is_closed, may_anchor, readiness, turn_at
from ..store.base import ContentStore
from .config import NodeConfig
from .peer_client import PeerClient
from .producer import Producer
from .registry import CameraRegistry
from .state import BatchState, NodeState, named_alarm

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_FOLLOW_PER_TICK = 32
CONCURRENCY = 16  # cameras whose peer round trips (holdings, B4 fetches) run at once  # batches followed per tick (a node far behind catches up over ticks)
# Reverts that mean another node's batch of this window (or a later one) was anchored first.
_LOST_RACE = ("WrongPrevBatchRoot", "WindowOutOfOrder")


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
        return {"lastBatch": self.bstate.last(), "batchGas": self.bstate.total_gas(),
                "batchesFollowed": self.bstate.next_index(), "tips": tips}

    # ------------------------------------------------------------------- tick
    async def tick(self) -> None:
        if not await self.producer.chain_ready():
            return
        try:
            await self.follow()
            await self.seal()
        except Exception as exc:  # noqa: BLE001 - the chain's trouble waits; anything else is logged
            if is_chain_fault(exc):
                self.producer._chain_failed(exc)
                return
            raise

    # -------------------------------------------------------------- following
    async def follow(self) -> None:
        """Settle every batch anchored since the last one followed, in order."""
        async with self.lock:
            count = await asyncio.to_thread(self.batches.batch_count)
            for _ in range(MAX_FOLLOW_PER_TICK):
                prev = self.prev()
                if prev.index >= count:
                    return
                if not await self._follow_one(prev.index):
                    return  # retried next tick

    async def _follow_one(self, index: int) -> bool:
        rec = await asyncio.to_thread(self.batches.batch_at, index)
        raw = await self.producer.fetch_block(cid_from_digest(rec.manifest_digest))
        if raw is None:
            log.warning("batch manifest unavailable", extra={"node": self.name, "batch": index})
            return False
        try:
            manifest = BatchManifest.from_bytes(raw)
        except BatchFormatError as exc:
            self._alarm(None, "batch.manifest_malformed", str(index), f"batch {index}: {exc}")
            return False
        await asyncio.to_thread(self.store.put, raw)
        tips = self.tips()
        for finding in check_batch(manifest, tips):  # the quorum signed it; on record if it breaks the rule
            self._alarm(finding.camera_id, "batch.chain_rule", f"{index}:{finding.problem.value}",
                        f"batch {index}: {finding.problem.value} {finding.detail}")
        for header in manifest.headers:
            if not await self._settle_block(header):
                return False
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

    async def _settle_block(self, header: BlockHeader) -> bool:
        """One camera's window of a final batch, settled as an attested block: its frames leave
        the pool and its alarms clear (repaired, declared or substituted)."""
        raw = await self.producer.fetch_block(cid_from_digest(header.manifest_digest))
        if raw is None:
            log.warning("block manifest unavailable", extra={"node": self.name, "height": header.height})
            return False
        try:
            manifest = Manifest.from_bytes(raw)
        except ManifestFormatError as exc:
            self._alarm(header.camera_id, "batch.manifest_malformed", header.hash.hex()[:16], str(exc))
            manifest = None
        await asyncio.to_thread(self.store.put, raw)
        info = self.registry.get(header.camera_id)
        ip = info.ip if info else "0x" + header.camera_id.hex()
        self.state.note_block(header.hash, header.camera_id, header.height, header.window_start_ms,
                              header.window_end_ms, "batch")
        self.state.bump(ip, "blocks_batched")
        await self.producer._settle(header.camera_id, ip, header.window_start_ms, header.window_end_ms,
                                    list(manifest.gaps) if manifest else [],
                                    [f.seq for f in manifest.frames] if manifest else [])
        return True

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
            for a in self.state.alarms(open_only=True, camera=cam, kind="missing"):
                lo = max(a.ts_from if a.ts_from is not None else floor_ms, floor_ms)
                if a.ts_to is None or a.ts_to > floor_ms:
                    starts.append(window_of(lo, self.config.window_ms)[0])
        return min(starts) if starts else None

    def _camera_window(self, cam: bytes, start: int, end: int, now: float) -> CameraWindow:
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
        return CameraWindow(camera_id=cam, closed=True, readiness=ready)

    async def seal(self) -> None:
        """Anchor the next window as one batch when it is ready and this node's slot."""
        prev = self.prev()
        self._late_before(prev.end_ms)
        cams = self._candidates()
        start = self._next_window(cams, prev.end_ms)
        if start is None:
            return
        end = start + self.config.window_ms
        now = time.time()
        views = []
        for cam in cams:  # in camera order; the first open or repairing camera decides, so stop there
            await asyncio.sleep(0)  # 200 cameras' pool queries never hold the loop (ingest, API) at once
            views.append(self._camera_window(cam, start, end, now))
            if not views[-1].closed or views[-1].readiness is Readiness.REPAIRING:
                break
        ready = batch_readiness(views)
        if ready.state is not Ready.READY:
            return  # EMPTY cannot last: the next pooled frame's window is the next start
        turn = turn_at(int(now * 1000), window_end_ms=end, prev_anchored_ms=prev.anchored_ms, rules=self.rules)
        if not may_anchor(self.address, turn, window_start_ms=start, nodes=self.nodes, camera=None):
            return
        began = time.monotonic()
        manifest = await self._build(ready.cameras, start, end, prev)
        if manifest is None:
            return
        built = time.monotonic()
        log.info("batch built", extra={"node": self.name, "window": start, "blocks": len(manifest.headers),
                                       "build_s": round(built - began, 3), "attempt": turn.attempt,
                                       "since_end_s": round(now - end / 1000, 3)})
        await self._collect_and_anchor(manifest, prev)

    async def _build(self, cams: Sequence[bytes], start: int, end: int, prev: _Prev) -> BatchManifest | None:
        tips = self.tips()
        headers = []
        substituted: dict[str, int] = {}
        todo = [(cam, info) for cam in cams if (info := self.registry.get(cam)) is not None and cam in tips]

        async def pulled(cam: bytes, ip: str) -> list[Any]:
            frames = [f.ref for f in self.state.frames_in(cam, start, end)]
            await self.producer._pull_from_peers(cam, ip, start, end, frames)
            # Read again: a repair that landed while the pull ran is held, though not "pulled".
            return [f.ref for f in self.state.frames_in(cam, start, end)]

        # The peers' holdings of every camera, asked CONCURRENCY cameras at a time: one camera
        # after the other, 200 cameras' round trips outlast a proposer slot.
        frame_lists = await bounded([pulled(cam, info.ip) for cam, info in todo])
        for (cam, info), frames in zip(todo, frame_lists):
            tip = tips[cam]
            block, _, subs = await self.producer.build_window_block(cam, info, start, end, tip.height, tip.block_hash,
                                                                    frames)
            headers.append(block.header)
            substituted[info.ip] = sum(len(fs) for _, fs in subs)
        if not headers:
            return None
        manifest = BatchManifest.of(window_start_ms=start, window_end_ms=end, prev_batch_root=prev.root, headers=headers)
        findings = check_batch(manifest, tips, Batch.of_manifest(manifest))
        if findings:
            log.error("own batch breaks the chain rule", extra={"node": self.name, "window": start,
                                                                 "problem": findings[0].problem.value})
            return None
        await asyncio.to_thread(self.store.put, manifest.to_bytes())
        self.built_substitutions = substituted  # counted once the batch is anchored by this node
        return manifest

    async def _collect_and_anchor(self, manifest: BatchManifest, prev: _Prev) -> None:
        batch = Batch.of_manifest(manifest)
        turn = turn_at(int(time.time() * 1000), window_end_ms=manifest.window_end_ms, prev_anchored_ms=prev.anchored_ms,
                       rules=self.rules)
        if not may_anchor(self.address, turn, window_start_ms=manifest.window_start_ms, nodes=self.nodes, camera=None):
            self.state.bump("*", "turns_passed")  # building outlasted the slot: the next node's turn
            return
        own = self._sign_own(manifest, batch, turn.attempt)
        if own is None:
            return  # this node signed another batch for this slot (a restart mid-slot): wait for the next
        answers = await asyncio.gather(*(self.peers.sign_batch(p, manifest.cid, turn.attempt) for p in self.peers.peers))
        signatures = [own]
        for peer, answer in zip(self.peers.peers, answers):
            sig = self._peer_signature(peer, answer, batch)
            if sig is not None:
                signatures.append(sig)
        log.info("batch signatures", extra={"node": self.name, "window": manifest.window_start_ms,
                                            "signatures": len(signatures), "peers": len(self.peers.peers)})
        quorum = await asyncio.to_thread(self.quorum)
        if len(signatures) < quorum:
            self.state.bump("*", "batches_short_of_quorum")
            return
        ordered = order_signatures(self.domain, batch, signatures)
        try:
            sent = await asyncio.to_thread(self._anchor_in_turn, batch, ordered, prev)
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
        for ip, n in getattr(self, "built_substitutions", {}).items():
            if n:
                self.state.bump(ip, "substituted", n)
        self.state.bump("*", "batch_gas", sent.tx.gas_used)
        if turn.attempt > 0:
            self.state.bump("*", "takeovers")
        self.health.note_anchor(batch.batch_root, "*", sent.index, sent.tx.tx_hash, sent.tx.block_number)
        log.info("batch anchored", extra={"node": self.name, "batch": sent.index, "blocks": batch.block_count,
                                          "gas": sent.tx.gas_used, "attempt": turn.attempt})
        await self.follow()

    def _anchor_in_turn(self, batch: Batch, signatures: list[bytes], prev: _Prev) -> Any:
        """Worker thread, right before the transaction: the slot judged again on this moment's
        clock; a takeover first re-reads the batch count (the slot before may have anchored)."""
        turn = turn_at(int(time.time() * 1000), window_end_ms=batch.window_end_ms, prev_anchored_ms=prev.anchored_ms,
                       rules=self.rules)
        if turn.attempt > 0 and self.batches.batch_count() != prev.index:
            return None
        turn = turn_at(int(time.time() * 1000), window_end_ms=batch.window_end_ms, prev_anchored_ms=prev.anchored_ms,
                       rules=self.rules)
        if not may_anchor(self.address, turn, window_start_ms=batch.window_start_ms, nodes=self.nodes, camera=None):
            return None
        return self.batches.anchor_batch(batch, signatures)

    def _sign_own(self, manifest: BatchManifest, batch: Batch, attempt: int) -> bytes | None:
        before = self.bstate.signed(manifest.window_start_ms, attempt)
        decision = sign_decision(before[0] if before else None, manifest.digest)
        if decision is SignDecision.EQUIVOCATION:
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
    async def on_sign_request(self, cid: str, attempt: int, requester: str) -> dict[str, Any]:
        """A peer asks this node to sign a batch: every check passes, or `Refusal` (with an alarm)."""
        await self.follow()  # judge against the tips as the chain leaves them now
        async with self.lock:
            try:
                return await self._sign_checked(cid, attempt, requester)
            except Refusal as exc:
                self._alarm(exc.camera, "batch.refused", f"{cid[-16:]}:{attempt}:{exc.reason}",
                            f"refused to sign batch {cid} (slot {attempt}) for {requester}: {exc}")
                self.state.bump("*", "batch_refusals")
                raise

    async def _sign_checked(self, cid: str, attempt: int, requester: str) -> dict[str, Any]:
        raw = await self.producer.fetch_block(cid)
        if raw is None:
            raise Refusal("manifest-unavailable", "no node serves this batch manifest")
        try:
            manifest = BatchManifest.from_bytes(raw)
        except BatchFormatError as exc:
            raise Refusal("malformed", str(exc)) from None
        batch, prev = Batch.of_manifest(manifest), self.prev()
        self._check_slot(manifest, attempt, requester, prev)
        findings = check_batch(manifest, self.tips(), batch)
        if findings:
            raise Refusal(findings[0].problem.value, findings[0].detail or "chain rule", findings[0].camera_id)
        await self._check_blocks(manifest, requester)
        before = self.bstate.signed(manifest.window_start_ms, attempt)
        decision = sign_decision(before[0] if before else None, manifest.digest)
        if decision is SignDecision.EQUIVOCATION:
            raise Refusal(decision.value, f"another batch was signed for window {manifest.window_start_ms}, slot {attempt}")
        if decision is SignDecision.SAME_AGAIN and before:
            sig = before[1]
        else:
            sig = sign_batch(self.private_key, self.domain, batch)
            self.bstate.note_signed(manifest.window_start_ms, attempt, manifest.digest, sig)
            self.state.bump("*", "batches_signed")
        return {"signature": "0x" + sig.hex(), "signer": self.address}

    def _check_slot(self, manifest: BatchManifest, attempt: int, requester: str, prev: _Prev) -> None:
        if manifest.prev_batch_root != prev.root:
            raise Refusal("wrong-prev-batch-root", f"the last batch this node followed has root 0x{prev.root.hex()}")
        if manifest.window_start_ms < prev.end_ms:
            raise Refusal("window-out-of-order", f"the last batch ended at {prev.end_ms}")
        if not slot_plausible(attempt, int(time.time() * 1000), window_end_ms=manifest.window_end_ms,
                              prev_anchored_ms=prev.anchored_ms, rules=self.rules):
            raise Refusal("not-this-slot", f"slot {attempt} is not the slot of window {manifest.window_start_ms} now")
        if proposer_for(None, manifest.window_start_ms, self.nodes, attempt).lower() != requester.lower():
            raise Refusal("not-the-proposer", f"{requester} is not the proposer of slot {attempt}")

    async def _check_blocks(self, manifest: BatchManifest, requester: str) -> None:
        """B4 of every block against this node's pool, and no camera it holds frames of in W left out."""
        listed = {h.camera_id for h in manifest.headers}
        for header in manifest.headers:
            if header.proposer.lower() != requester.lower():
                raise Refusal("block-check", f"block names proposer {header.proposer}, not {requester}", header.camera_id)
        verdicts = await bounded([self.producer.check_block(h, self.registry.get(h.camera_id)) for h in manifest.headers])
        for header, (problem, _) in zip(manifest.headers, verdicts):
            if problem is not None:
                raise Refusal("block-check", problem, header.camera_id)
        for cam in self.state.pool_cameras():
            if cam not in listed and self.state.frames_in(cam, manifest.window_start_ms, manifest.window_end_ms):
                info = self.registry.get(cam)
                if info is not None and info.active:
                    raise Refusal("omits-camera", f"no block for camera {info.ip}, whose frames this node holds", cam)

    def _alarm(self, cam: bytes | None, kind: str, key: str, detail: str) -> None:
        info = self.registry.get(cam) if cam else None
        alarm = named_alarm(f"{self.name}:{kind}:{key}", kind, cam, info.ip if info else None, detail)
        if self.state.raise_alarm(alarm):
            self.state.bump(info.ip if info else "*", kind.replace(".", "_"))
            log.warning("batch alarm", extra={"node": self.name, "alarm": kind, "detail": detail[:300]})


async def bounded(coros: Sequence[Awaitable[T]], limit: int = CONCURRENCY) -> list[T]:
    """The results of `coros` in order, at most `limit` running at once."""
    gate = asyncio.Semaphore(limit)

    async def one(c: Awaitable[T]) -> T:
        async with gate:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))
