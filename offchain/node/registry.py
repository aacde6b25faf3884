"""The camera whitelist as this node knows it: a cache of the Consortium contract's cameras.

Refreshed from chain at start, whenever the Consortium emits a camera event (registration, key
rotation, revocation: `watch`), and on demand, at most once per `min_refresh_s` (per camera for a
failed signature), so a flood of forged packets costs one RPC call per interval, not one per packet.

Key history (C6): a rotated device key stays valid for frames captured before the rotation's block
time, so frames signed just before a rotation, and peers' repairs of older frames, still verify;
a frame stamped after the rotation must carry the new key's signature.
"""

from __future__ import annotations

import logging
import threading
import time

from ..chain.ledger import CameraInfo, ConsortiumClient
from ..chain.reverts import ContractRevert
from ..core.block import cached_camera_id

log = logging.getLogger(__name__)


class CameraRegistry:
    def __init__(self, consortium: ConsortiumClient, min_refresh_s: float = 2.0, from_block: int = 0):
        self.consortium = consortium
        self.from_block = from_block
        self._retired: dict[bytes, list[tuple[bytes, int]]] = {}  # camera -> [(old key, retired at ms)]
        self.min_refresh_s = min_refresh_s
        self._cameras: dict[bytes, CameraInfo] = {}
        self._last_refresh = 0.0
        self._camera_checked: dict[bytes, float] = {}
        self._lock = threading.RLock()

    def refresh(self, force: bool = False) -> bool:
        """Re-read the whole whitelist. Returns False when skipped: within `min_refresh_s` of
        the last one (unless forced), or while another thread is already refreshing, so a burst
        of unknown packets never queues refreshes behind each other."""
        if not self._lock.acquire(blocking=force):
            return False
        try:
            if not force and time.monotonic() - self._last_refresh < self.min_refresh_s:
                return False
            # Under the lock: a slow full read that began before a key rotation must not
            # overwrite the newer answer of a per-camera read that finished meanwhile.
            self._last_refresh = time.monotonic()
            cams = {cid: self.consortium.camera(cid) for cid in self.consortium.camera_ids()}
            retired = self._key_history()
            self._cameras, self._retired = cams, retired
        finally:
            self._lock.release()
        log.debug("whitelist refreshed", extra={"cameras": len(cams)})
        return True

    def refresh_camera(self, camera: bytes, min_interval_s: float = 1.0) -> CameraInfo | None:
        """Re-read one camera (after a signature failed: its key may have been rotated), at most
        once per `min_interval_s` per camera, so forged packets cannot turn into an RPC flood."""
        now = time.monotonic()
        if now - self._camera_checked.get(camera, 0.0) < min_interval_s:
            return self._cameras.get(camera)
        self._camera_checked[camera] = now
        with self._lock:
            try:
                info = self.consortium.camera(camera)
            except ContractRevert:
                return None
            known = self._cameras.get(camera)
            if known is not None and known.device_public_key != info.device_public_key:
                self._retired = self._key_history()
            self._cameras = {**self._cameras, camera: info}
        return info

    def _key_history(self) -> dict[bytes, list[tuple[bytes, int]]]:
        w3 = self.consortium.signer.w3
        events = self.consortium.contract.events
        logs = sorted(
            [(e.blockNumber, e.logIndex, bytes(e.args.cameraId), bytes(e.args.devicePublicKey))
             for name in ("CameraRegistered", "CameraKeyRotated")
             for e in getattr(events, name)().get_logs(from_block=self.from_block)],
        )
        current: dict[bytes, bytes] = {}
        retired: dict[bytes, list[tuple[bytes, int]]] = {}
        for block, _, cam, key in logs:
            if cam in current:
                at_ms = int(w3.eth.get_block(block)["timestamp"]) * 1000
                retired.setdefault(cam, []).append((current[cam], at_ms))
            current[cam] = key
        return retired

    def keys_for(self, camera: bytes, timestamp_ms: int) -> list[bytes]:
        """The keys a frame of `camera` captured at `timestamp_ms` may be signed with, newest first."""
        info = self._cameras.get(camera)
        if info is None or not info.active:
            return []
        older = [k for k, retired_at in reversed(self._retired.get(camera, [])) if timestamp_ms < retired_at]
        return [info.device_public_key] + older

    def get(self, camera: bytes) -> CameraInfo | None:
        return self._cameras.get(camera)

    def by_ip(self, ip: str) -> CameraInfo | None:
        return self._cameras.get(cached_camera_id(ip))

    def active_key(self, ip: str) -> bytes | None:
        info = self.by_ip(ip)
        return info.device_public_key if info and info.active else None

    def group_siblings(self, camera: bytes) -> list[CameraInfo]:
        """Other active cameras of the same group (same user), for adjacent-camera fill (I7)."""
        me = self._cameras.get(camera)
        if me is None or me.group == b"\x00" * 32:
            return []
        return [c for cid, c in sorted(self._cameras.items()) if cid != camera and c.group == me.group and c.active]

    def watch(self, from_block: int) -> int:
        """Refresh if any camera event was emitted since `from_block`; returns the next block to
        look from."""
        w3 = self.consortium.signer.w3
        latest = w3.eth.block_number
        if from_block > latest:
            return from_block
        logs = w3.eth.get_logs({"address": self.consortium.address, "fromBlock": from_block, "toBlock": latest,
                                "topics": [[self._topic(n) for n in ("CameraRegistered", "CameraKeyRotated", "CameraRevoked", "HeadBlockSet")]]})
        if logs:
            self.refresh(force=True)
        return latest + 1

    def _topic(self, name: str) -> str:
        topic = getattr(self.consortium.contract.events, name).topic
        return topic if isinstance(topic, str) else "0x" + bytes(topic).hex()

    def all(self) -> list[CameraInfo]:
        return list(self._cameras.values())
