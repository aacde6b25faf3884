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
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger(__name__)


class AlarmCentre:
    def __init__(self, node: "Node"):
        self.node = node
        self.common_since: dict[bytes, float] = {}
        self.active: dict[bytes, bool] = {}
        self.loaded = False

    async def _open_missing(self, url: str) -> dict[bytes, tuple[set[int], int | None]] | None:
        try:
            r = await self.node.http.get(url.rstrip("/") + "/api/v1/alarms", params={"open": "true", "kind": "missing"})
            r.raise_for_status()
        except httpx.HTTPError:
            return None
        out: dict[bytes, tuple[set[int], int | None]] = {}
        for a in r.json():
            cam = bytes.fromhex(a["cameraId"][2:])
            seqs, since = out.get(cam, (set(), None))
            seqs.update(range(a["seqFrom"], a["seqTo"] + 1))
            ts = a.get("tsFrom")
            out[cam] = (seqs, ts if since is None or (ts is not None and ts < since) else since)
        return out

    async def inspect(self) -> None:
        node = self.node
        if not self.loaded:
            # After a restart, risks raised earlier are known from the chain, so they still clear.
            for info in node.registry.all():
                self.active[info.camera_id] = (await asyncio.to_thread(node.ledger.risk, info.camera_id))["active"]
            self.loaded = True
        urls = [node.config.api_url] + [p for p in node.config.peers if p != node.config.api_url]
        pools = await asyncio.gather(*(self._open_missing(u) for u in urls))
        if any(p is None for p in pools):
            return
        now = time.time()
        cameras = set().union(*(p.keys() for p in pools)) | {c for c, on in self.active.items() if on}
        for cam in cameras:
            common = set.intersection(*(p.get(cam, (set(), None))[0] for p in pools))
            if common:
                first = self.common_since.setdefault(cam, now)
                if now - first >= node.config.alarm_hold_ms / 1000 and not self.active.get(cam):
                    since = min((p[cam][1] for p in pools if p.get(cam) and p[cam][1] is not None), default=0)
                    reason = f"{len(common)} frame(s) missing at all {len(pools)} nodes"
                    await self._set(cam, True, reason, since)
            else:
                self.common_since.pop(cam, None)
                if self.active.get(cam):
                    await self._set(cam, False)

    async def _set(self, cam: bytes, raise_it: bool, reason: str = "", since_ms: int = 0) -> None:
        node = self.node
        info = node.registry.get(cam)
        ip = info.ip if info else cam.hex()
        current = (await asyncio.to_thread(node.ledger.risk, cam))["active"]
        if raise_it and not current:
            await asyncio.to_thread(node.ledger.raise_risk, cam, reason, since_ms)
            node.state.bump(ip, "risks_raised")
            log.warning("risk warning raised on chain", extra={"camera": ip, "reason": reason})
        elif not raise_it and current:
            await asyncio.to_thread(node.ledger.clear_risk, cam)
            node.state.bump(ip, "risks_cleared")
            log.info("risk warning cleared on chain", extra={"camera": ip})
        self.active[cam] = raise_it

    async def run(self) -> None:
        while not self.node.stopping.is_set():
            try:
                await self.inspect()
            except Exception:  # noqa: BLE001 - keep inspecting
                log.exception("alarm centre inspection failed")
            await asyncio.sleep(self.node.config.alarm_poll_ms / 1000)
