"""The alarm centre (I9): inspects every node's alarm pool periodically. When every node has held
a missing-frame alarm covering the same frames of a camera for `alarm_hold_ms`, the stream is
unhealthy everywhere (a network or camera fault, not one node's loss): it raises a risk warning on
chain for that camera, and clears it once the nodes no longer share such an alarm (one of them got
the frames back, or the gap was declared in an anchored block and the alarms were settled).

It runs inside one node (config `alarm_centre = true`) and sends transactions from that node's
account. A node that does not answer is not assumed healthy or unhealthy: nothing changes until
every node can be asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from ..chain.ledger import VideoLedgerClient
from .config import NodeConfig
from .peer_client import PeerClient
from .registry import CameraRegistry
from .state import NodeState

log = logging.getLogger(__name__)


class AlarmCentre:
    """Given the parts it uses: configuration (its own URL, the peers, hold and poll times), the
    node's state (counters), the whitelist, the ledger it sends risk transactions with, and the
    peer client it reads every node's alarm pool through."""

    def __init__(self, *, config: NodeConfig, state: NodeState, registry: CameraRegistry, ledger: VideoLedgerClient,
                 peers: PeerClient):
        self.config = config
        self.state = state
        self.registry = registry
        self.ledger = ledger
        self.peers = peers
        self.common_since: dict[bytes, float] = {}
        self.active: dict[bytes, bool] = {}
        self.loaded = False

    async def _open_missing(self, url: str) -> dict[bytes, tuple[set[int], int | None]] | None:
        alarms = await self.peers.open_missing_alarms(url)
        if alarms is None:
            return None
        out: dict[bytes, tuple[set[int], int | None]] = {}
        for a in alarms:
            cam = bytes.fromhex(a["cameraId"][2:])
            seqs, since = out.get(cam, (set(), None))
            seqs.update(range(a["seqFrom"], a["seqTo"] + 1))
            ts = a.get("tsFrom")
            out[cam] = (seqs, ts if since is None or (ts is not None and ts < since) else since)
        return out

    async def inspect(self) -> None:
        if not self.loaded:
            # After a restart, risks raised earlier are known from the chain, so they still clear.
            for info in self.registry.all():
                self.active[info.camera_id] = (await asyncio.to_thread(self.ledger.risk, info.camera_id))["active"]
            self.loaded = True
        urls = [self.config.api_url] + [p for p in self.config.peers if p != self.config.api_url]
        pools = await asyncio.gather(*(self._open_missing(u) for u in urls))
        if any(p is None for p in pools):
            return
        now = time.time()
        cameras = set().union(*(p.keys() for p in pools)) | {c for c, on in self.active.items() if on}
        for cam in cameras:
            common = set.intersection(*(p.get(cam, (set(), None))[0] for p in pools))
            if common:
                first = self.common_since.setdefault(cam, now)
                if now - first >= self.config.alarm_hold_ms / 1000 and not self.active.get(cam):
                    since = min((p[cam][1] for p in pools if p.get(cam) and p[cam][1] is not None), default=0)
                    reason = f"{len(common)} frame(s) missing at all {len(pools)} nodes"
                    await self._set(cam, True, reason, since)
            else:
                self.common_since.pop(cam, None)
                if self.active.get(cam):
                    await self._set(cam, False)

    async def _set(self, cam: bytes, raise_it: bool, reason: str = "", since_ms: int = 0) -> None:
        info = self.registry.get(cam)
        ip = info.ip if info else cam.hex()
        current = (await asyncio.to_thread(self.ledger.risk, cam))["active"]
        if raise_it and not current:
            await asyncio.to_thread(self.ledger.raise_risk, cam, reason, since_ms)
            self.state.bump(ip, "risks_raised")
            log.warning("risk warning raised on chain", extra={"camera": ip, "reason": reason})
        elif not raise_it and current:
            await asyncio.to_thread(self.ledger.clear_risk, cam)
            self.state.bump(ip, "risks_cleared")
            log.info("risk warning cleared on chain", extra={"camera": ip})
        self.active[cam] = raise_it

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.inspect()
            except Exception:  # noqa: BLE001 - keep inspecting
                log.exception("alarm centre inspection failed")
            await asyncio.sleep(self.config.alarm_poll_ms / 1000)
