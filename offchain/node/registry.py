"""The camera whitelist as this node knows it: a cache of the Consortium contract's cameras.

Refreshed from chain at start and on demand, at most once per `min_refresh_s`, so a flood of
packets from an unknown camera costs one RPC call per interval, not one per packet.
"""

from __future__ import annotations

import logging
import threading
import time

from ..chain.ledger import CameraInfo, ConsortiumClient
from ..core.block import camera_id

log = logging.getLogger(__name__)


class CameraRegistry:
    def __init__(self, consortium: ConsortiumClient, min_refresh_s: float = 2.0):
        self.consortium = consortium
        self.min_refresh_s = min_refresh_s
        self._cameras: dict[bytes, CameraInfo] = {}
        self._last_refresh = 0.0
        self._lock = threading.Lock()

    def refresh(self, force: bool = False) -> bool:
        with self._lock:
            if not force and time.monotonic() - self._last_refresh < self.min_refresh_s:
                return False
            self._last_refresh = time.monotonic()
        cams = {cid: self.consortium.camera(cid) for cid in self.consortium.camera_ids()}
        self._cameras = cams
        log.debug("whitelist refreshed", extra={"cameras": len(cams)})
        return True

    def get(self, camera: bytes) -> CameraInfo | None:
        return self._cameras.get(camera)

    def by_ip(self, ip: str) -> CameraInfo | None:
        return self._cameras.get(camera_id(ip))

    def active_key(self, ip: str) -> bytes | None:
        info = self.by_ip(ip)
        return info.device_public_key if info and info.active else None

    def group_siblings(self, camera: bytes) -> list[CameraInfo]:
        """Other active cameras of the same group (same user), for adjacent-camera fill (I7)."""
        me = self._cameras.get(camera)
        if me is None or me.group == b"\x00" * 32:
            return []
        return [c for cid, c in sorted(self._cameras.items()) if cid != camera and c.group == me.group and c.active]

    def all(self) -> list[CameraInfo]:
        return list(self._cameras.values())
