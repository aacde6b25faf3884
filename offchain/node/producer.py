"""Block production (B1-B5): seal closed windows, anchor when it is this node's turn, verify
and attest what the others anchor.

* A camera window [start, end) is *closed* once the camera has sent a frame at or past `end`,
  or has been silent for `idle_close_ms`.
* It is *ready* when no missing-frame alarm of this node is open for it, or when the repair
  deadline has passed since it closed; what is still missing is then declared as a gap, and long
  gaps are filled from a camera of the same group (I7), marked as substituted.
* The proposer is `proposer_for(camera, start, nodes, attempt)`; the attempt grows by one every
  `proposer_timeout_ms` after the window became ready, so the next node takes over from a
  proposer that does not anchor (B3).
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
from typing import TYPE_CHECKING

import httpx

from ..chain import reverts
from ..chain.client import load_artifact
from ..chain.health import ChainHealth, is_chain_fault
from ..core.block import BlockHeader, FrameRef, Gap, Manifest, ManifestFormatError, build_block, proposer_for, window_of
from ..core import wire
from ..core.cid import cid_from_digest
from ..core.gaps import Hole, find_holes, frame_step_ms
from ..core.block import frames_tree
from ..store.base import StoreError
from .state import named_alarm

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger(__name__)

# Reverts that mean "another node anchored this height first": not an error, attest instead.
_LOST_RACE = ("ConflictingBlock", "BlockAlreadyAnchored", "UnexpectedHeight")
# A lost race only when the chain's tip moved since this node read it; otherwise an alarm.
_LINK_OR_TIME = {"BrokenChainLink": "chain.link_broken", "TimeNotContinuous": "chain.time_discontinuity"}
# The contract refused the window itself (its time bounds): an alarm, the window waits.
_WINDOW_REFUSED = {"WindowInFuture": "camera.clock_ahead", "WindowTooLong": "chain.window_refused",
                   "InvalidWindow": "chain.window_refused"}
MAX_WINDOWS_PER_TICK = 256  # windows one camera's sealing pass visits per tick (each holds frames or alarms)


class Producer:
    def __init__(self, node: "Node"):
        self.node = node
        self.closed_at: dict[tuple[bytes, int], float] = {}
        self.waiting: dict[bytes, int] = {}  # camera -> windows waiting for an earlier block (B5)
        self.failures: dict[bytes, int] = {}  # anchored block -> failed attempts to settle it
        self._event_abi = next(e for e in load_artifact("VideoLedger")["abi"] if e.get("name") == "BlockAnchored")
        self.health = ChainHealth(node.w3, node.address, {"Consortium": node.deployment.consortium,
                                                          "VideoLedger": node.deployment.video_ledger},
                                  node.deployment.chain_id)
        if (last := node.state.last_proposed()) is not None:  # across restarts: from the blocks table
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
        node, s = self.node, self.health.status
        conditions = {"chain.unreachable": not s.reachable or s.chain_id != s.expected_chain_id,
                      "chain.contracts_missing": s.reachable and not s.contracts_present,
                      "chain.low_funds": s.low_funds}
        for kind, on in conditions.items():
            open_alarms = node.state.alarms(open_only=True, kind=kind)
            if on and not open_alarms:
                node.state.raise_alarm(named_alarm(f"{node.name}:{kind}:{time.time_ns()}", kind, None, None,
                                                   s.error or f"balance {s.balance_wei} wei"))
                node.state.bump("*", kind.replace(".", "_"))
            elif not on:
                for alarm in open_alarms:
                    node.state.clear_alarm(alarm.id, "recovered")

    # ------------------------------------------------------------------ sealing
    async def tick(self) -> None:
        if not await self.chain_ready():
            return
        for cam in self.node.state.pool_cameras():
            try:
                await self._tick_camera(cam)
            except Exception as exc:  # noqa: BLE001 - one camera's trouble must not stop the others
                if is_chain_fault(exc):
                    self._chain_failed(exc)  # the chain's trouble, not the camera's: wait for it
                    return
                log.exception("sealing failed", extra={"node": self.node.name, "camera": "0x" + cam.hex()})

    async def _tick_camera(self, cam: bytes) -> None:
        node = self.node
        now = time.time()
        window_ms = node.config.window_ms
        info = node.registry.get(cam)
        if info is None or not info.active or info.head_block == b"\x00" * 32:
            return  # revoked, or before the genesis: the chain would refuse any block
        span = node.state.pool_span(cam)
        last = node.state.last_frame(cam)
        if span is None or last is None:
            return
        start = window_of(span[0], window_ms)[0]
        row = node.state.camera_row(cam)
        ended = row is not None and row[2] is not None and (node.state.max_seq(cam) or -1) >= row[2]
        # Silence counts from this process's start too: a node just restarted has heard nothing
        # yet, which says nothing about the camera. Without the camera's end message, silence
        # closes a window only once it has lasted as long as the rest of that window, so a camera
        # cut off mid-window is waited for instead of sealed short.
        heard = max(node.state.max_received_at(cam) or now, node.started_at)
        silent_s = now - heard
        prev_hash, height, tip_end = await asyncio.to_thread(node.ledger.tip, cam)
        self._check_tip(cam, info.ip, height, tip_end, now)
        pending = 0
        visits = 0
        while start <= last[1] and visits < MAX_WINDOWS_PER_TICK:
            visits += 1
            await asyncio.sleep(0)  # a long pass never holds the event loop (API, ingest, other cameras)
            end = start + window_ms
            if tip_end > start:
                # Anchored already. Once this node has settled that block (attested or proposed
                # it), frames still pooled in the window arrived too late for it; so did frames of
                # a window the chain moved past without a block. Alarms there are settled too.
                seen_since = self.closed_at.setdefault((cam, start), now)
                stale = now - seen_since > 2 * node.config.repair_deadline_ms / 1000
                if node.state.block_for_window(cam, start) is not None or stale:
                    late = node.state.mark_anchored(cam, start, end)
                    if late:
                        node.state.bump(info.ip, "late_frames", late)
                    for alarm in self._open_alarms_in(cam, start, end):
                        if alarm.ts_to is not None and alarm.ts_to <= end:
                            await node.repairer.clear(alarm, "declared")
                    self.closed_at.pop((cam, start), None)
                start = self._after_anchored(cam, end, tip_end)
                continue
            rest_s = max(node.config.idle_close_ms / 1000, (end - last[1]) / 1000)
            closed = last[1] >= end or (ended and silent_s > node.config.idle_close_ms / 1000) or silent_s > rest_s
            if not closed:
                break
            closed_at = self.closed_at.setdefault((cam, start), now)
            frames = [f.ref for f in node.state.frames_in(cam, start, end)]
            # Holes count whether or not their alarm is out yet: a window is not sealed while
            # repair can still fill it, unless the repair deadline has passed.
            holes = self._gaps(cam, start, end, frames, None) or self._open_alarms_in(cam, start, end)
            deadline = node.config.repair_deadline_ms / 1000
            if holes and now - closed_at < deadline:
                pending += 1
                break
            if not frames and not holes:
                # Nothing here: jump to the window of the next frame instead of walking every
                # empty window in between.
                nxt = node.state.frame_from_time(cam, end)
                self.closed_at.pop((cam, start), None)
                start = window_of(nxt[1], window_ms)[0] if nxt else end
                continue
            ready_at = closed_at + (deadline if holes else 0)
            attempt = max(0, int((now - ready_at) / (node.config.proposer_timeout_ms / 1000)))
            proposer = proposer_for(cam, start, node.nodes, attempt)
            if proposer != node.address:
                pending += 1
                break  # the proposer's turn; later windows wait in the orphan pool
            await self._propose(cam, info, start, end, height, prev_hash, frames)
            break  # one block per camera per tick: the next needs the new tip
        self.waiting[cam] = pending

    def _after_anchored(self, cam: bytes, end: int, tip_end: int) -> int:
        """Where to look after a window the chain has moved past: the next window that holds
        pooled frames or the end of an open alarm, but never beyond the first window after the
        tip (windows there may hold parts of holes). So a frame stamped decades back costs one
        visit, not one per window between it and the tip."""
        window_ms = self.node.config.window_ms
        targets = [window_of(tip_end - 1, window_ms)[0] + window_ms]
        nxt = self.node.state.next_pool_ts(cam, end)
        if nxt is not None:
            targets.append(window_of(nxt, window_ms)[0])
        for a in self.node.state.alarms(open_only=True, camera=cam, kind="missing"):
            if a.ts_to is not None and a.ts_to - 1 >= end:
                targets.append(window_of(a.ts_to - 1, window_ms)[0])
        return max(end, min(targets))

    def _check_tip(self, cam: bytes, ip: str, height: int, tip_end: int, now: float) -> None:
        """A tip whose window ends far beyond this node's clock (a block anchored before the
        contract bounded windows) would make every real frame "late": say so, once per tip."""
        if tip_end > now * 1000 + 10 * self.node.config.window_ms:
            self._alarm(cam, ip, "chain.tip_in_future", f"tip:{height}",
                        f"block {height} ends at {tip_end} ms, beyond this node's clock; later frames cannot be anchored")

    def _alarm(self, cam: bytes, ip: str, kind: str, key: str, detail: str, start: int | None = None,
               end: int | None = None) -> None:
        node = self.node
        alarm = named_alarm(f"{node.name}:{kind}:{cam.hex()[:16]}:{key}", kind, cam, ip, detail, ts_from=start, ts_to=end)
        if node.state.raise_alarm(alarm):  # once per id: a window retried every tick is one alarm
            node.state.bump(ip, kind.replace(".", "_"))
            log.warning("block production alarm", extra={"node": node.name, "camera": ip, "alarm": kind, "detail": detail})

    def _open_alarms_in(self, cam: bytes, start: int, end: int) -> list:
        """Open missing alarms whose lost span (between the frames around the hole) overlaps the window."""
        out = []
        for a in self.node.state.alarms(open_only=True, camera=cam, kind="missing"):
            lo = a.ts_from if a.ts_from is not None else -1
            hi = a.ts_to if a.ts_to is not None else 2**63
            if lo < end and hi > start:
                out.append(a)
        return out

    def _gaps(self, cam: bytes, start: int, end: int, frames: list[FrameRef], codec: dict | None) -> list[Gap]:
        """Every lost sequence number whose capture time falls in [start, end), as ranges.

        Holes are found among this window's frames and the nearest frames on either side. The
        capture time of a lost frame is interpolated between its neighbours (or extrapolated at
        the frame rate before the first and after the last), so a hole that spans a window
        boundary is split between the two windows instead of being charged to one of them. The
        part in the window is found by binary search (`Hole.seqs_in_window`): a hole of millions
        of numbers costs no more than one of three."""
        node = self.node
        row = node.state.camera_row(cam)
        last_seq = row[2] if row else None
        first_seq = row[3] if row and row[3] is not None else 0
        step_ms = frame_step_ms(codec)
        before = node.state.frame_before_time(cam, start)
        after = node.state.frame_from_time(cam, end)
        floor = before[0] if before else first_seq - 1
        seen = sorted({(f.seq, f.timestamp_ms, f.keyframe) for f in frames} | ({after} if after else set()))
        holes = find_holes(floor, [x for x in seen if x[0] > floor], None if after else last_seq)
        if before:
            holes = [Hole(h.from_seq, h.to_seq, h.before or before, h.after) for h in holes]
        gaps = []
        for h in holes:
            mine = h.seqs_in_window(start, end, step_ms)
            if not mine:
                continue
            first_ms = int(h.time_of(mine[0], step_ms))
            if h.after or mine[-1] < h.to_seq:
                to_ms = int(h.time_of(mine[-1] + 1, step_ms))
            else:
                to_ms = int(h.time_of(mine[-1], step_ms) + step_ms)
            lost_key = node.state.keyframe_lost_between(cam, mine[0], mine[-1])
            gaps.append(Gap(mine[0], mine[-1], first_ms, max(min(to_ms, end), first_ms + 1), lost_key))
        return gaps

    async def _propose(self, cam: bytes, info, start: int, end: int, height: int, prev_hash: bytes,
                       frames: list[FrameRef]) -> None:
        node = self.node
        row = node.state.camera_row(cam)
        codec = json.loads(row[1]) if row and row[1] else {}
        gaps = self._gaps(cam, start, end, frames, codec)
        gaps, substitutions = self._substitute(cam, gaps)
        # The camera's signed hello behind the codec, and an unended stream declared, not hidden.
        block = build_block(camera_ip=info.ip, height=height + 1, prev_hash=prev_hash, window_start_ms=start,
                            window_end_ms=end, frames=frames, proposer=node.address, codec=codec, gaps=gaps,
                            substitutions=substitutions, **node.manifest_extras(cam, start, end))
        await asyncio.to_thread(node.store.put, block.manifest_bytes)
        try:
            result = await asyncio.to_thread(node.ledger.anchor, block.header)
        except reverts.ContractRevert as exc:
            await self._anchor_refused(cam, info.ip, start, end, height, prev_hash, exc)
            return
        node.state.note_block(block.hash, cam, block.header.height, start, end, "proposed")
        self.health.note_anchor(block.hash, info.ip, block.header.height, result.tx_hash, result.block_number)
        node.state.bump(info.ip, "blocks_anchored")
        node.state.bump(info.ip, "anchor_gas", result.gas_used)
        substituted = sum(len(fs) for _, fs in substitutions)
        if substituted:
            node.state.bump(info.ip, "substituted", substituted)
        log.info("block anchored", extra={"node": node.name, "camera": info.ip, "height": block.header.height,
                                          "frames": len(frames), "gaps": len(gaps), "gas": result.gas_used})
        await self._settle(cam, info.ip, start, end, gaps, [f.seq for f in frames])

    async def _anchor_refused(self, cam: bytes, ip: str, start: int, end: int, height: int, prev_hash: bytes,
                              exc: reverts.ContractRevert) -> None:
        """Another node anchored first (attest instead, next tick), or the chain is not what this
        node expected, or the contract refused the window: the last two are alarms, and the
        window's frames stay in the pool (they are not filed as late)."""
        node = self.node
        if exc.name in _LOST_RACE:
            log.info("another node anchored first", extra={"node": node.name, "camera": ip, "reason": exc.name})
            return
        if exc.name in _LINK_OR_TIME:
            now_prev, now_height, _ = await asyncio.to_thread(node.ledger.tip, cam)
            if (now_prev, now_height) != (prev_hash, height):
                log.info("another node anchored first", extra={"node": node.name, "camera": ip, "reason": exc.name})
                return
            self._alarm(cam, ip, _LINK_OR_TIME[exc.name], f"{height + 1}:{start}", str(exc), start, end)
            return
        if exc.name in _WINDOW_REFUSED:
            self._alarm(cam, ip, _WINDOW_REFUSED[exc.name], str(start), str(exc), start, end)
            return
        raise exc

    def _substitute(self, cam: bytes, gaps: list[Gap]) -> tuple[list[Gap], list[tuple[bytes, list[FrameRef]]]]:
        """I7: a long gap is filled from another camera of the same group, for playback only."""
        node = self.node
        out_gaps, subs = [], []
        siblings = node.registry.group_siblings(cam)
        for g in gaps:
            if g.to_ms - g.from_ms < node.config.substitute_min_ms or not siblings:
                out_gaps.append(g)
                continue
            filled = False
            for sib in siblings:
                sib_frames = [s.ref for s in node.state.frames_in(sib.camera_id, g.from_ms, g.to_ms)]
                if sib_frames:
                    out_gaps.append(Gap(g.from_seq, g.to_seq, g.from_ms, g.to_ms, g.keyframe_lost, sib.camera_id))
                    subs.append((sib.camera_id, sib_frames))
                    filled = True
                    break
            if not filled:
                out_gaps.append(g)
        return out_gaps, subs

    async def _settle(self, cam: bytes, ip: str, start: int, end: int, gaps: list[Gap], seqs: list[int]) -> None:
        """After a window's block is anchored: the frames it lists leave the pool (anything else
        in the window arrived too late for it and is counted as such by the next tick) and its
        alarms clear, as repaired, declared or substituted."""
        node = self.node
        node.state.mark_anchored_seqs(cam, seqs)
        await node.repairer.clear_satisfied_alarms()
        by_seq = {g.from_seq: g for g in gaps}
        for alarm in self._open_alarms_in(cam, start, end):
            gap = next((g for g in gaps if g.from_seq <= alarm.seq_from <= g.to_seq), by_seq.get(alarm.seq_from))
            resolution = "substituted" if gap and gap.substitute_camera else "declared"
            await node.repairer.clear(alarm, resolution)

    # -------------------------------------------------------------- attesting
    async def scan_anchored(self) -> None:
        node = self.node
        if not await self.chain_ready():
            return  # the checkpoint stays: blocks anchored meanwhile are attested once the chain is back
        latest = await asyncio.to_thread(lambda: node.w3.eth.block_number)
        start_block = int(node.state.get_meta("log_checkpoint") or node.deployment.record["contracts"]["VideoLedger"]["blockNumber"])
        if start_block > latest:
            return
        to_block = min(latest, start_block + 2000)
        event = node.ledger.contract.events.BlockAnchored()
        logs = await asyncio.to_thread(event.get_logs, from_block=start_block, to_block=to_block)
        for entry in logs:
            try:
                await self._on_anchored(entry)
            except Exception as exc:  # noqa: BLE001 - recorded; this block is retried a few ticks, then skipped
                if is_chain_fault(exc):
                    self._chain_failed(exc)  # no funds, no connection: not the block's fault, never skipped
                    return
                key = bytes(entry.args.blockHash)
                self.failures[key] = self.failures.get(key, 0) + 1
                log.exception("could not settle an anchored block", extra={"node": node.name, "block": "0x" + key.hex()})
                if self.failures[key] < 5:
                    return  # keep the checkpoint here and retry next tick
                node.state.bump("*", "blocks_skipped")
        node.state.set_meta("log_checkpoint", str(to_block + 1))

    async def _on_anchored(self, entry) -> None:
        node = self.node
        header = BlockHeader.from_tuple(entry.args.header)
        block_hash = bytes(entry.args.blockHash)
        if node.state.block_role(block_hash) is not None:
            return
        if header.proposer == node.address:
            # Ours, but not recorded: the process stopped between the anchor and its bookkeeping.
            node.state.note_block(block_hash, header.camera_id, header.height, header.window_start_ms,
                                  header.window_end_ms, "proposed")
            raw = await self.fetch_block(cid_from_digest(header.manifest_digest))
            manifest = Manifest.from_bytes(raw) if raw else None
            info = node.registry.get(header.camera_id)
            await self._settle(header.camera_id, info.ip if info else "*", header.window_start_ms, header.window_end_ms,
                               list(manifest.gaps) if manifest else [], [f.seq for f in manifest.frames] if manifest else [])
            return
        await self._verify_and_attest(header, block_hash)

    async def _verify_and_attest(self, header: BlockHeader, block_hash: bytes) -> None:
        node = self.node
        info = node.registry.get(header.camera_id)
        ip = info.ip if info else "0x" + header.camera_id.hex()
        problem, manifest = await self._check(header, info)
        if problem is None:
            try:
                result = await asyncio.to_thread(node.ledger.attest, block_hash)
                node.state.bump(ip, "blocks_attested")
                node.state.bump(ip, "attest_gas", result.gas_used)
            except reverts.ContractRevert as exc:
                if exc.name != "AlreadyAttested":
                    raise
            node.state.note_block(block_hash, header.camera_id, header.height, header.window_start_ms, header.window_end_ms, "attested")
            await self._settle(header.camera_id, ip, header.window_start_ms, header.window_end_ms, list(manifest.gaps),
                               [f.seq for f in manifest.frames])
        else:
            log.warning("block disputed", extra={"node": node.name, "camera": ip, "height": header.height, "reason": problem})
            try:
                await asyncio.to_thread(node.ledger.dispute, block_hash, problem[:200])
            except reverts.ContractRevert as exc:
                if exc.name != "AlreadyDisputed":  # a restart between the dispute and its bookkeeping
                    raise
            node.state.bump(ip, "disputes")
            node.state.note_block(block_hash, header.camera_id, header.height, header.window_start_ms, header.window_end_ms, "disputed")
            node.state.mark_anchored(header.camera_id, header.window_start_ms, header.window_end_ms)

    async def _check(self, header: BlockHeader, info) -> tuple[str | None, Manifest | None]:
        """B4: the anchored header against this node's own pool. Returns (problem, manifest)."""
        node = self.node
        if info is None:
            return "camera unknown to this node", None
        raw = await self.fetch_block(cid_from_digest(header.manifest_digest))
        if raw is None:
            return "manifest unavailable", None
        try:
            manifest = Manifest.from_bytes(raw)
            tree = frames_tree(header.camera_id, manifest.frames)
        except (ManifestFormatError, ValueError, TypeError, OverflowError) as exc:  # InvalidMerkleInput is a ValueError
            return f"manifest malformed: {type(exc).__name__}", None
        if (manifest.camera_id, manifest.height, manifest.window_start_ms, manifest.window_end_ms) != (
                header.camera_id, header.height, header.window_start_ms, header.window_end_ms):
            return "manifest does not describe this header", manifest
        root = tree.root if tree else b"\x00" * 32
        if root != header.frames_root or len(manifest.frames) != header.frame_count:
            return "frames root or count differs from the manifest", manifest
        listed = {f.seq: f for f in manifest.frames}
        if len(listed) != len(manifest.frames):
            return "manifest lists a sequence number twice", manifest
        if any(not header.window_start_ms <= f.timestamp_ms < header.window_end_ms for f in manifest.frames):
            return "manifest lists a frame outside the window", manifest
        if manifest.codec_proof is not None and not any(
                wire.verify_codec_proof(manifest.codec_proof, manifest.codec, key)
                for key in node.registry.keys_for(header.camera_id, header.window_start_ms)):
            return "the manifest's codec is not one the camera signed", manifest
        await asyncio.to_thread(node.store.put, raw)  # manifests stay in every node's store
        for f in manifest.frames:
            if not await self._hold(header.camera_id, info.ip, f):
                return f"frame {f.seq} cannot be verified by this node", manifest
        for sub_cam, sub_frames in manifest.substitutions:
            sub_info = node.registry.get(sub_cam)
            if sub_info is None or sub_info.group != info.group:
                return "substitution from a camera outside the group", manifest
            for f in sub_frames:
                if not await self._hold(sub_cam, sub_info.ip, f):
                    return f"substituted frame {f.seq} cannot be verified", manifest
        for held in node.state.frames_in(header.camera_id, header.window_start_ms, header.window_end_ms):
            if held.ref.seq not in listed:
                return f"manifest omits frame {held.ref.seq} held by this node", manifest
        return None, manifest

    async def _hold(self, cam: bytes, ip: str, ref: FrameRef) -> bool:
        """True when this node holds the frame with the manifest's digest, fetching the signed
        packet from a peer when it lacks it (a late repair, re-verified as usual)."""
        node = self.node
        def matches() -> bool | None:
            held = node.state.frame(cam, ref.seq)
            if held is None:
                return None
            # What the camera signed must be what the manifest says, field by field.
            return (held.ref.sha256, held.ref.timestamp_ms, held.ref.keyframe, held.ref.dts_ms, held.ref.size) == (
                ref.sha256, ref.timestamp_ms, ref.keyframe, ref.dts_ms, ref.size)

        if (verdict := matches()) is not None:
            return verdict
        for peer in node.config.peers:
            try:
                r = await node.http.get(f"{peer.rstrip('/')}/peer/v1/frames/0x{cam.hex()}/{ref.seq}")
            except httpx.HTTPError:
                continue
            if r.status_code != 200:
                continue
            name = r.headers.get("X-FrameLedger-Node-Name", peer)
            if await node.accept_packet(r.content, source=f"repair:{name}", expect_camera=cam) == "accepted":
                node.state.record_repair(cam, ip, ref.seq, name, None)
            if (verdict := matches()) is not None:
                return verdict
        return False

    async def fetch_block(self, cid: str) -> bytes | None:
        """A manifest (or any stored block) from our store, else from a peer's, digest-checked."""
        node = self.node
        try:
            return await asyncio.to_thread(node.store.get, cid)
        except StoreError:
            pass
        from ..core.cid import digest_from_cid
        import hashlib

        for peer in node.config.peers:
            try:
                r = await node.http.get(f"{peer.rstrip('/')}/peer/v1/blocks/{cid}")
            except httpx.HTTPError:
                continue
            if r.status_code == 200 and hashlib.sha256(r.content).digest() == digest_from_cid(cid):
                return r.content
        return None
