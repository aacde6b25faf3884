"""A node's HTTP API: the peer protocol (/peer/v1) and the read side for owners, third parties
and the alarm centre (/api/v1). Served by uvicorn on loopback in the node's own event loop, so
handlers touch the node's state directly without locks.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from ..core.block import camera_ref
from ..store.base import StoreError
from ..core.cid import InvalidCid, cid_from_digest

if TYPE_CHECKING:
    from .node import Node


def _camera(ref: str) -> bytes:
    """A camera named by its IP or its 0x id; a malformed id is the caller's error."""
    try:
        return camera_ref(ref)
    except ValueError as exc:
        raise HTTPException(400, "camera id is not hex") from exc


def build_app(node: "Node") -> FastAPI:
    app = FastAPI(title=f"FrameLedger node {node.name}", version="1")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "node": node.name}

    # ------------------------------------------------------------- read side
    @app.get("/api/v1/status")
    async def status() -> dict[str, Any]:
        return node.status()

    @app.get("/api/v1/alarms")
    async def alarms(open: bool = False, kind: str | None = None, camera: str | None = None) -> list[dict[str, Any]]:
        cam = _camera(camera) if camera else None
        return [a.to_json() for a in node.state.alarms(open_only=open, camera=cam, kind=kind)]

    @app.get("/api/v1/repairs")
    async def repairs(camera: str | None = None) -> list[dict[str, Any]]:
        """I8: what was repaired, from which peer, with how many confirmations."""
        return node.state.repairs(_camera(camera) if camera else None)

    @app.get("/api/v1/peer-reports")
    async def peer_reports() -> list[dict[str, Any]]:
        return node.state.peer_reports()

    @app.get("/api/v1/frames/{camera}")
    async def frames(camera: str, from_ms: int = 0, to_ms: int = 2**63 - 1) -> list[dict[str, Any]]:
        if not (0 <= from_ms < 2**63 and 0 <= to_ms < 2**63):
            raise HTTPException(400, "times are epoch milliseconds")
        rows = node.state.frames_in(_camera(camera), from_ms, to_ms)
        return [{"seq": f.ref.seq, "timestampMs": f.ref.timestamp_ms, "sha256": f.ref.sha256.hex(),
                 "keyframe": f.ref.keyframe, "size": f.ref.size, "source": f.source, "anchored": f.anchored} for f in rows]

    # ---------------------------------------------------------- peer protocol
    @app.post("/peer/v1/alarm")
    async def peer_alarm(request: Request) -> dict[str, Any]:
        msg = await request.json()
        if not isinstance(msg, dict) or not {"alarmId", "cameraId", "seqs", "origin"} <= set(msg):
            raise HTTPException(400, "alarm needs alarmId, cameraId, seqs and origin")
        return await node.repairer.on_alarm(msg, request.headers.get("X-FrameLedger-Node", ""))

    @app.post("/peer/v1/alarm/clear")
    async def peer_alarm_clear(request: Request) -> dict[str, Any]:
        msg = await request.json()
        if not isinstance(msg, dict):
            raise HTTPException(400, "a clear message is a JSON object")
        return await node.repairer.on_alarm_clear(msg)

    @app.post("/peer/v1/repair")
    async def peer_repair(request: Request) -> dict[str, Any]:
        msg = await request.json()
        if not isinstance(msg, dict) or not isinstance(msg.get("packets"), list):
            raise HTTPException(400, "repair needs a list of packets")
        return await node.repairer.on_repair(msg)

    @app.get("/peer/v1/frames/{camera}/{seq}")
    async def peer_frame(camera: str, seq: int) -> Response:
        """The original signed packet of one frame, so the asker can verify the camera's
        signature itself."""
        cam = _camera(camera)
        if not 0 <= seq < 2**63:
            raise HTTPException(400, "seq out of range")
        frame = node.state.frame(cam, seq)
        info = node.registry.get(cam)
        if frame is None or info is None:
            raise HTTPException(404, "frame not held")
        try:
            payload = await asyncio.to_thread(node.store.get, cid_from_digest(frame.ref.sha256))
        except StoreError as exc:
            raise HTTPException(404, f"frame bytes unavailable: {exc}") from exc
        return Response(node.repairer.packet_bytes(info.ip, frame, payload), media_type="application/octet-stream",
                        headers={"X-FrameLedger-Node-Name": node.name})

    @app.get("/peer/v1/blocks/{cid}")
    async def peer_block(cid: str) -> Response:
        """Raw content-store blocks (manifests, frames) by CID; the asker re-checks the digest."""
        try:
            data = await asyncio.to_thread(node.store.get, cid)
        except InvalidCid as exc:
            raise HTTPException(400, str(exc)) from exc
        except StoreError as exc:
            raise HTTPException(404, "not held") from exc
        return Response(data, media_type="application/octet-stream")

    return app

