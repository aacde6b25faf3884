"""A node's HTTP API: the peer protocol (/peer/v1) and the read side for owners, third parties
and the alarm centre (/api/v1). Served by uvicorn on loopback in the node's own event loop, so
handlers touch the node's state directly without locks.

Every refusal is an RFC 9457 problem document (`problems.py`, table in docs/NODES.md); peer
routes are reachable only through `PeerGate` (signed by a consortium node, see `peer_http.py`);
every body is capped by `BodyLimit`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.block import camera_ref
from ..core.cid import InvalidCid, cid_from_digest
from ..store.base import StoreError
from ..core.batch import MAX_BATCH_MANIFEST_BYTES, MAX_BLOCKS_PER_BATCH
from ..core.batch_checks import MAX_PULL_BYTES, MAX_PULL_FRAMES, MAX_RANGES_PER_CAMERA, valid_ranges
from ..core.batch_windows import Refusal
from ..core.repair_batches import MAX_ALARM_IDS_PER_REPAIR, MAX_ALARMS_PER_REQUEST, MAX_CLEARS_PER_REQUEST, MAX_SEQS_PER_REQUEST
from .peer_http import MAX_ALARM_SEQS, MAX_REPAIR_PACKETS, BodyLimit, CrashGuard, InflightLimit, PeerGate
from .problems import PROBLEM_MEDIA_TYPE, PROBLEM_RESPONSES, ProblemError, ProblemType, problem_body

if TYPE_CHECKING:
    from .node import Node

MAX_SEQ = 2**62
MAX_MS = 2**63
MAX_SIGN_ATTEMPT = 10_000  # slots: a takeover of slot k waits k proposer timeouts
MAX_B64_MANIFEST = (MAX_BATCH_MANIFEST_BYTES * 4) // 3 + 4  # an inline batch manifest, base64
MAX_HOLDINGS = 100_000  # frames listed by one holdings answer (a 60 s window at 25 fps is 1,500)
Seq = Annotated[int, Field(ge=0, lt=MAX_SEQ)]
OCTETS = {200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


class AlarmMessage(BaseModel):
    """`POST /peer/v1/alarm`: frames missing at `origin` (I6)."""

    model_config = ConfigDict(strict=True, extra="ignore")
    alarmId: str = Field(min_length=1, max_length=256)
    origin: str = Field(min_length=1, max_length=512)
    originName: str = Field("", max_length=128)
    camera: str = Field("", max_length=100)
    cameraId: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
    seqs: list[Seq] = Field(min_length=1)
    hops: int = Field(0, ge=0)
    via: str = Field("", max_length=512)  # the node that sent (or forwarded) this copy


class AlarmClearMessage(BaseModel):
    """`POST /peer/v1/alarm/clear`: a neighbour's alarm is settled."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)
    alarmId: str = Field(min_length=1, max_length=256)
    camera: str = Field("", max_length=100)
    seqFrom: Seq | None = None
    seqTo: Seq | None = None
    resolution: str = Field("", max_length=64)
    sender: str = Field("", max_length=128, alias="from")


class AlarmItem(BaseModel):
    """One hole of a batched alarm request."""

    model_config = ConfigDict(strict=True, extra="ignore")
    alarmId: str = Field(min_length=1, max_length=256)
    camera: str = Field("", max_length=100)
    cameraId: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
    seqs: list[Seq] = Field(min_length=1)


class AlarmBatchMessage(BaseModel):
    """`POST /peer/v1/alarms`: many holes missing at `origin`, one request (docs/NODES.md,
    "Repair in batches"); `hops` and `via` are the request's, as in `AlarmMessage`."""

    model_config = ConfigDict(strict=True, extra="ignore")
    origin: str = Field(min_length=1, max_length=512)
    originName: str = Field("", max_length=128)
    hops: int = Field(0, ge=0)
    via: str = Field("", max_length=512)
    alarms: list[AlarmItem] = Field(min_length=1, max_length=MAX_ALARMS_PER_REQUEST)


class AlarmClearBatchMessage(BaseModel):
    """`POST /peer/v1/alarms/clear`: many of a neighbour's alarms are settled."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)
    sender: str = Field("", max_length=128, alias="from")
    clears: list[AlarmClearMessage] = Field(min_length=1, max_length=MAX_CLEARS_PER_REQUEST)


class RepairMessage(BaseModel):
    """`POST /peer/v1/repair`: original signed packets for our alarms (base64): one alarm
    (`alarmId`) or, batched, several (`alarmIds`; then `alarmId` is the first of them)."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)
    alarmId: str = Field("", max_length=256)
    alarmIds: list[Annotated[str, Field(max_length=256)]] = Field(default_factory=list, max_length=MAX_ALARM_IDS_PER_REPAIR)
    sender: str = Field("", max_length=128, alias="from")
    packets: list[Annotated[str, Field(max_length=24 * 1024 * 1024)]] = Field(max_length=MAX_REPAIR_PACKETS)


class BatchSignRequest(BaseModel):
    """`POST /peer/v1/batches/sign` (batch mode): sign the batch whose manifest has this CID, for
    slot `attempt`. `manifest` and `blocks` carry it and its block manifests inline (base64), so
    the peer fetches none of them per camera; blocks left out are fetched by CID."""

    model_config = ConfigDict(strict=True, extra="ignore")
    manifestCid: str = Field(min_length=1, max_length=200)
    attempt: int = Field(ge=0, le=MAX_SIGN_ATTEMPT)
    manifest: str | None = Field(None, max_length=MAX_B64_MANIFEST)
    blocks: list[str] = Field(default_factory=list, max_length=MAX_BLOCKS_PER_BATCH)


class CameraHave(BaseModel):
    """One camera of a holdings request: the seq ranges [lo, hi] the asker holds in the window."""

    model_config = ConfigDict(strict=True, extra="ignore")
    cameraId: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
    have: list[Annotated[list[Seq], Field(min_length=2, max_length=2)]] = Field(
        default_factory=list, max_length=MAX_RANGES_PER_CAMERA)


class BatchHoldingsRequest(BaseModel):
    """`POST /peer/v1/batches/holdings` (batch mode): what this node holds of window
    [windowStartMs, windowEndMs) that the asker's ranges miss, every camera in one answer."""

    model_config = ConfigDict(strict=True, extra="ignore")
    windowStartMs: int = Field(ge=0, lt=MAX_MS)
    windowEndMs: int = Field(ge=0, lt=MAX_MS)
    cameras: list[CameraHave] = Field(default_factory=list, max_length=MAX_BLOCKS_PER_BATCH)


class CameraSeqs(BaseModel):
    """One camera of a frames request: the seqs asked for."""

    model_config = ConfigDict(strict=True, extra="ignore")
    cameraId: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
    seqs: list[Seq] = Field(min_length=1, max_length=MAX_PULL_FRAMES)


class BatchFramesRequest(BaseModel):
    """`POST /peer/v1/batches/frames` (batch mode): the original signed packets of these frames,
    every camera of a window in one request (at most MAX_PULL_FRAMES frames)."""

    model_config = ConfigDict(strict=True, extra="ignore")
    frames: list[CameraSeqs] = Field(max_length=MAX_BLOCKS_PER_BATCH)


def _read_within(store: Any, cids: list[str], budget: int) -> list[bytes | None]:
    """Worker thread: the blocks in order (None: not held), stopping once `budget` bytes are read."""
    out: list[bytes | None] = []
    for cid in cids:
        if budget <= 0:
            break
        try:
            data = store.get(cid)
        except StoreError:
            data = None
        budget -= len(data or b"")
        out.append(data)
    return out


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProblemError(ProblemType.BODY_INVALID, f"{what}: not base64") from exc


def _camera(ref: str) -> bytes:
    """A camera named by its IP or its 0x id; a malformed id is the caller's error."""
    try:
        return camera_ref(ref)
    except ValueError as exc:
        raise ProblemError(ProblemType.CAMERA_INVALID, "camera id is not 0x + 64 hex digits") from exc


def _problem(kind: ProblemType, detail: str, status: int | None = None) -> Response:
    return Response(problem_body(kind, detail, status), status_code=status or kind.status, media_type=PROBLEM_MEDIA_TYPE)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def on_problem(_: Request, exc: ProblemError) -> Response:
        return _problem(exc.kind, exc.detail, exc.status)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _problem(ProblemType.BODY_NOT_JSON, "body is not valid UTF-8 JSON")
        first = errors[0] if errors else {}
        loc = tuple(first.get("loc") or ("",))
        where = ".".join(str(p) for p in loc)
        kind = ProblemType.BODY_INVALID if loc[0] == "body" else ProblemType.PARAMS_INVALID
        body = {"type": kind.uri, "title": kind.title, "status": kind.status, "detail": f"{where}: {first.get('msg', 'invalid')}"[:500],
                "errors": jsonable_encoder([{"loc": e.get("loc"), "msg": e.get("msg"), "type": e.get("type")} for e in errors[:20]])}
        return JSONResponse(body, status_code=kind.status, media_type=PROBLEM_MEDIA_TYPE)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: ProblemType.NOT_FOUND, 405: ProblemType.METHOD_NOT_ALLOWED}.get(exc.status_code)
        if kind is None:
            # FastAPI answers an unreadable body (not UTF-8, cut off) with a bare 400.
            kind = ProblemType.BODY_NOT_JSON if exc.status_code == 400 else ProblemType.HTTP_ERROR
        return _problem(kind, str(exc.detail), exc.status_code)

    @app.exception_handler(Exception)
    async def on_crash(_: Request, exc: Exception) -> Response:
        # Starlette's outermost layer calls this, then re-raises for CrashGuard to log.
        return _problem(ProblemType.INTERNAL, "internal error; see the node log")


def build_app(node: "Node") -> Any:
    """The node API as an ASGI app: FastAPI routes inside PeerGate, BodyLimit, InflightLimit and CrashGuard."""
    app = FastAPI(title=f"FrameLedger node {node.name}", version="1", responses=PROBLEM_RESPONSES)
    _install_error_handlers(app)
    _read_routes(app, node)
    _peer_routes(app, node)
    _batch_routes(app, node)
    config = node.config
    gate = PeerGate(app, node.peer_identity, node.roster, window_ms=config.peer_auth_window_ms,
                    nonce_capacity=config.peer_nonce_capacity)
    guarded = CrashGuard(InflightLimit(BodyLimit(gate, config.http_max_body_bytes), config.http_max_inflight), node.name)
    guarded.fastapi = app  # type: ignore[attr-defined]  # for tests and the OpenAPI document
    return guarded


def _read_routes(app: FastAPI, node: "Node") -> None:
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "node": node.name}

    @app.get("/api/v1/status")
    async def status() -> dict[str, Any]:
        return node.status()

    @app.get("/api/v1/alarms")
    async def alarms(open: bool = False, kind: Annotated[str | None, Query(max_length=32)] = None,
                     camera: Annotated[str | None, Query(max_length=100)] = None) -> list[dict[str, Any]]:
        cam = _camera(camera) if camera else None
        return [a.to_json() for a in node.state.alarms(open_only=open, camera=cam, kind=kind)]

    @app.get("/api/v1/repairs")
    async def repairs(camera: Annotated[str | None, Query(max_length=100)] = None) -> list[dict[str, Any]]:
        """I8: what was repaired, from which peer, with how many confirmations."""
        return node.state.repairs(_camera(camera) if camera else None)

    @app.get("/api/v1/peer-reports")
    async def peer_reports() -> list[dict[str, Any]]:
        return node.state.peer_reports()

    @app.get("/api/v1/frames/{camera}")
    async def frames(camera: Annotated[str, Path(max_length=100)],
                     from_ms: Annotated[int, Query(ge=0, lt=MAX_MS)] = 0,
                     to_ms: Annotated[int, Query(ge=0, lt=MAX_MS)] = MAX_MS - 1) -> list[dict[str, Any]]:
        rows = node.state.frames_in(_camera(camera), from_ms, to_ms)
        return [{"seq": f.ref.seq, "timestampMs": f.ref.timestamp_ms, "sha256": f.ref.sha256.hex(),
                 "keyframe": f.ref.keyframe, "size": f.ref.size, "source": f.source, "anchored": f.anchored} for f in rows]


def _peer(request: Request) -> str:
    """The consortium node that signed this request (set by PeerGate)."""
    return str(request.state.peer)


def _peer_routes(app: FastAPI, node: "Node") -> None:
    @app.post("/peer/v1/alarm")
    async def peer_alarm(msg: AlarmMessage, request: Request) -> dict[str, Any]:
        if msg.hops > node.config.hop_limit:
            raise ProblemError(ProblemType.HOPS_OVER_LIMIT, f"hops {msg.hops} > hop limit {node.config.hop_limit}")
        if len(msg.seqs) > MAX_ALARM_SEQS:
            raise ProblemError(ProblemType.TOO_MANY_SEQS, f"{len(msg.seqs)} seqs; at most {MAX_ALARM_SEQS} per alarm")
        return await node.repairer.on_alarm(msg, _peer(request))

    @app.post("/peer/v1/alarms")
    async def peer_alarms(msg: AlarmBatchMessage, request: Request) -> dict[str, Any]:
        """Many holes in one request: each bounded as a single alarm, and all together by
        MAX_SEQS_PER_REQUEST; answered per hole, in order."""
        if msg.hops > node.config.hop_limit:
            raise ProblemError(ProblemType.HOPS_OVER_LIMIT, f"hops {msg.hops} > hop limit {node.config.hop_limit}")
        longest = max(len(a.seqs) for a in msg.alarms)
        total = sum(len(a.seqs) for a in msg.alarms)
        if longest > MAX_ALARM_SEQS or total > MAX_SEQS_PER_REQUEST:
            raise ProblemError(ProblemType.TOO_MANY_SEQS, f"{longest} seqs in one alarm, {total} in all; at most "
                                                          f"{MAX_ALARM_SEQS} per alarm, {MAX_SEQS_PER_REQUEST} per request")
        return await node.repairer.on_alarms(msg, _peer(request))

    @app.post("/peer/v1/alarm/clear")
    async def peer_alarm_clear(msg: AlarmClearMessage, request: Request) -> dict[str, Any]:
        return await node.repairer.on_alarm_clear(msg)

    @app.post("/peer/v1/alarms/clear")
    async def peer_alarms_clear(msg: AlarmClearBatchMessage, request: Request) -> dict[str, Any]:
        return await node.repairer.on_alarms_clear(msg)

    @app.post("/peer/v1/repair")
    async def peer_repair(msg: RepairMessage, request: Request) -> dict[str, Any]:
        return await node.repairer.on_repair(msg, _peer(request))

    @app.get("/peer/v1/frames/{camera}/{seq}", response_class=Response, responses=OCTETS)
    async def peer_frame(camera: Annotated[str, Path(max_length=100)], seq: Annotated[int, Path(ge=0, lt=MAX_SEQ)]) -> Response:
        """The original signed packet of one frame, so the asker can verify the camera's
        signature itself."""
        cam = _camera(camera)
        frame = node.state.frame(cam, seq)
        info = node.registry.get(cam)
        if frame is None or info is None:
            raise ProblemError(ProblemType.FRAME_NOT_HELD, "frame not held")
        try:
            payload = await asyncio.to_thread(node.store.get, cid_from_digest(frame.ref.sha256))
        except StoreError as exc:
            raise ProblemError(ProblemType.FRAME_NOT_HELD, f"frame bytes unavailable: {type(exc).__name__}") from exc
        return Response(node.repairer.packet_bytes(info.ip, frame, payload), media_type="application/octet-stream",
                        headers={"X-FrameLedger-Node-Name": node.name})

    @app.get("/peer/v1/holdings/{camera}")
    async def peer_holdings(camera: Annotated[str, Path(max_length=100)],
                            from_ms: Annotated[int, Query(ge=0, lt=MAX_MS)],
                            to_ms: Annotated[int, Query(ge=0, lt=MAX_MS)]) -> dict[str, Any]:
        """What this node holds of a camera's window [from_ms, to_ms): (seq, sha256) pairs, so a
        proposer can fetch what it lacks before sealing (at most one window's worth)."""
        if to_ms - from_ms > node.config.window_ms or to_ms < from_ms:
            raise ProblemError(ProblemType.PARAMS_INVALID, f"a holdings query spans at most one window ({node.config.window_ms} ms)")
        rows = node.state.frames_in(_camera(camera), from_ms, to_ms)[:MAX_HOLDINGS]
        return {"frames": [[f.ref.seq, f.ref.sha256.hex()] for f in rows]}

    @app.get("/peer/v1/blocks/{cid}", response_class=Response, responses=OCTETS)
    async def peer_block(cid: Annotated[str, Path(max_length=200)]) -> Response:
        """Raw content-store blocks (manifests, frames) by CID; the asker re-checks the digest."""
        try:
            data = await asyncio.to_thread(node.store.get, cid)
        except InvalidCid as exc:
            raise ProblemError(ProblemType.PARAMS_INVALID, f"cid: {exc}"[:200]) from exc
        except StoreError as exc:
            raise ProblemError(ProblemType.BLOCK_NOT_HELD, "not held") from exc
        return Response(data, media_type="application/octet-stream")


def _batch_routes(app: FastAPI, node: "Node") -> None:
    """Batch mode's three peer requests, one of each per peer and window (docs/BATCH.md)."""

    @app.post("/peer/v1/batches/sign")
    async def peer_batch_sign(msg: BatchSignRequest, request: Request) -> dict[str, Any]:
        """Batch mode: this node's EIP-712 signature of the batch, after B4 of every block and the
        chain rule (`core.batch.check_batch`); a refusal is `batch-refused`, its detail starting
        with the reason's name (docs/NODES.md, "Batch mode")."""
        if node.batcher is None:
            raise ProblemError(ProblemType.BATCH_MODE_OFF, f"{node.name} anchors per header")
        manifest = _b64(msg.manifest, "manifest") if msg.manifest is not None else None
        blocks = [_b64(b, f"blocks.{i}") for i, b in enumerate(msg.blocks)]
        try:
            return await node.batcher.on_sign_request(msg.manifestCid, msg.attempt, _peer(request),
                                                      manifest=manifest, blocks=blocks)
        except Refusal as exc:
            raise ProblemError(ProblemType.BATCH_REFUSED, str(exc)) from None

    @app.post("/peer/v1/batches/holdings")
    async def peer_batch_holdings(msg: BatchHoldingsRequest, request: Request) -> dict[str, Any]:
        """Batch mode, one request per window for every camera: the seqs this node holds in the
        window that the asker's ranges miss (`core.batch_checks`), cameras it did not list too;
        at most one window, MAX_HOLDINGS_FRAMES seqs (then `complete` is false)."""
        if node.batcher is None:
            raise ProblemError(ProblemType.BATCH_MODE_OFF, f"{node.name} anchors per header")
        if not 0 <= msg.windowEndMs - msg.windowStartMs <= node.config.window_ms:
            raise ProblemError(ProblemType.BODY_INVALID, f"a holdings request spans at most one window ({node.config.window_ms} ms)")
        have: dict[bytes, list[tuple[int, int]]] = {}
        for i, cam in enumerate(msg.cameras):
            if not valid_ranges(cam.have):
                raise ProblemError(ProblemType.BODY_INVALID, f"cameras.{i}.have: ranges must be ascending, disjoint [lo, hi]")
            have[bytes.fromhex(cam.cameraId[2:])] = [(r[0], r[1]) for r in cam.have]
        return await node.batcher.on_holdings(msg.windowStartMs, msg.windowEndMs, have)

    @app.post("/peer/v1/batches/frames")
    async def peer_batch_frames(msg: BatchFramesRequest, request: Request) -> dict[str, Any]:
        """Batch mode: the original signed packets of the frames a proposer lacks, one request for
        every camera of a window (the asker verifies each as a repair); frames not held are left
        out; at most MAX_PULL_BYTES of packets (then `complete` is false)."""
        if node.batcher is None:
            raise ProblemError(ProblemType.BATCH_MODE_OFF, f"{node.name} anchors per header")
        if sum(len(c.seqs) for c in msg.frames) > MAX_PULL_FRAMES:
            raise ProblemError(ProblemType.TOO_MANY_SEQS, f"at most {MAX_PULL_FRAMES} frames per request")
        found = []
        for c in msg.frames:
            cam = bytes.fromhex(c.cameraId[2:])
            info = node.registry.get(cam)
            for seq in c.seqs if info is not None else []:
                if (frame := node.state.frame(cam, seq)) is not None:
                    found.append((c.cameraId, info.ip, frame))
        payloads = await asyncio.to_thread(_read_within, node.store, [cid_from_digest(f.ref.sha256) for _, _, f in found],
                                           MAX_PULL_BYTES)
        packets = [{"cameraId": cam, "seq": f.ref.seq,
                    "packet": base64.b64encode(node.repairer.packet_bytes(ip, f, data)).decode()}
                   for (cam, ip, f), data in zip(found, payloads) if data is not None]
        return {"node": node.name, "packets": packets, "complete": len(payloads) == len(found)}
