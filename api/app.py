"""The REST API for signing apps (D3): consortium and cameras, risk warnings, signing sessions.

Every answer comes straight from the contracts (no node needs to be trusted for it). Callers sign
in with Ethereum (EIP-4361) and get a short-lived bearer token; every route but `/v1/health` and
the sign-in routes requires one, and session routes require the caller to be a party. Transactions
are sent by the API's relayer account, but every session action carries the acting party's own
EIP-712 signature, which the contract checks: the relayer cannot act for anyone. Errors are RFC
9457 problem documents (`api/problems.py`). Routes, limits and flows: docs/SIGNING.md.

    uvicorn --factory api.app:create_app_from_env
      FRAMELEDGER_RPC_URL, FRAMELEDGER_DEPLOYMENT, optional FRAMELEDGER_RELAYER_KEY,
      FRAMELEDGER_API_DOMAIN (the SIWE domain, default 127.0.0.1:8000); evidence: FRAMELEDGER_STORES,
      FRAMELEDGER_IPFS, FRAMELEDGER_EVIDENCE_DIR, FRAMELEDGER_KEYSTORE(+_PASSWORD_FILE) (docs/API.md)
"""

# no `from __future__ import annotations`: FastAPI resolves the routes' local Annotated aliases at runtime

import os
import time
from typing import Annotated, Any, Callable, Sequence

from pathlib import Path as FilePath

from fastapi import Depends, FastAPI, Path, Query, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from offchain.chain.client import Signer, connect
from offchain.chain.deployer import Deployment
from offchain.chain.ledger import ConsortiumClient, VideoLedgerClient
from offchain.chain.sessions import SigningSessionClient
from offchain.core.block import camera_ref

from offchain.store.base import ContentStore

from . import anchoring, evidence_routes, problems, session_routes, siwe, streams
from .auth import AuthError, NonceStore, TokenIssuer
from .context import Context, Settings, caller_dependency
from .evidence_routes import EvidenceSettings
from .streams import StreamSettings
from .models import U64_MAX, SiweBody
from .problems import Problem

WEB_DIR = FilePath(__file__).resolve().parent / "web"
CameraRef = Annotated[str, Path(min_length=1, max_length=128, description="0x-prefixed camera id or camera IP",
                                examples=["10.7.0.1"])]


class _ReadOnlySigner:
    """Views need a `from` only for members-only getters, which this API does not call."""

    def __init__(self, w3):
        self.w3 = w3
        self.address = None
        self.chain_id = w3.eth.chain_id


def _camera(ref: str) -> bytes:
    try:
        return camera_ref(ref)
    except ValueError as exc:
        raise Problem(400, "invalid-camera", "camera id is not hex") from exc


def _risk_json(camera: bytes, risk: dict[str, Any]) -> dict[str, Any]:
    return {"cameraId": "0x" + camera.hex(), **risk}


def _auth_routes(app: FastAPI, ctx: Context) -> None:
    @app.get("/v1/auth/nonce", tags=["auth"], summary="A single-use nonce for an EIP-4361 message")
    def nonce() -> dict[str, Any]:
        value, expires = ctx.nonces.issue()
        return {"nonce": value, "expiresAt": expires, "domain": ctx.settings.siwe_domain,
                "chainId": ctx.deployment.chain_id}

    @app.post("/v1/auth/siwe", tags=["auth"], summary="Sign in with Ethereum; returns a bearer token")
    def sign_in(body: SiweBody) -> dict[str, Any]:
        msg = siwe.parse(body.message)
        ctx.nonces.consume(msg.nonce)  # used up even if a check below fails
        siwe.check(msg, domain=ctx.settings.siwe_domain, chain_id=ctx.deployment.chain_id, now=ctx.clock(),
                   max_age_s=ctx.settings.siwe_max_age_s)
        signer = siwe.recover(body.message, bytes.fromhex(body.signature[2:]))
        if signer != msg.address:
            raise AuthError("wrong-signer", "the signature is not the message's address's")
        if not ctx.consortium.is_member(signer):
            raise AuthError("not-a-member", f"{signer} is not a consortium member", 403)
        token, expires = ctx.tokens.issue(signer)
        return {"token": token, "tokenType": "Bearer", "address": signer, "expiresAt": expires}


def _chain_routes(app: FastAPI, ctx: Context, caller: Callable[..., str], stores: Sequence[ContentStore]) -> None:
    deployment, consortium, ledger = ctx.deployment, ctx.consortium, ctx.ledger
    Caller = Annotated[str, Depends(caller)]

    @app.get("/v1/consortium", tags=["consortium"])
    def get_consortium(_: Caller) -> dict[str, Any]:
        return {"chainId": deployment.chain_id, "consortium": deployment.consortium,
                "videoLedger": deployment.video_ledger, "signingSession": deployment.signing_session,
                "nodes": consortium.nodes(), "quorum": consortium.quorum()}

    @app.get("/v1/cameras", tags=["cameras"])
    def cameras(_: Caller) -> list[dict[str, Any]]:
        out = []
        ids = consortium.camera_ids()
        lengths = anchoring.camera_lengths(ctx, stores, ids)  # per-header or batch mode, per camera
        for cid in ids:
            c = consortium.camera(cid)
            out.append({"cameraId": "0x" + cid.hex(), "ip": c.ip, "owner": c.owner, "group": "0x" + c.group.hex(),
                        "active": c.active, "headBlock": "0x" + c.head_block.hex(), "blocks": lengths[cid][0],
                        "anchoring": lengths[cid][1], "risk": ledger.risk(cid)["active"]})
        return out

    @app.get("/v1/cameras/{camera}/blocks", tags=["cameras"],
             summary="Anchored blocks whose windows overlap [from_ms, to_ms), oldest first")
    def blocks(_: Caller, response: Response, camera: CameraRef, from_ms: Annotated[int, Query(ge=0, le=U64_MAX)] = 0,
               to_ms: Annotated[int, Query(ge=0, le=U64_MAX)] = U64_MAX,
               limit: Annotated[int, Query(ge=1, le=ctx.settings.max_blocks_per_page)] = 100) -> list[dict[str, Any]]:
        # per-header or batch mode, whichever the chain records for the range (the AnchorSource seam)
        out, matched = evidence_routes.camera_blocks(ctx, stores, _camera(camera), from_ms, to_ms, limit)
        if matched > limit:
            response.headers["X-FrameLedger-Truncated"] = f"{matched} blocks match; first {limit} returned"
        return out

    @app.get("/v1/cameras/{camera}/risk", tags=["alarms"])
    def risk(_: Caller, camera: CameraRef) -> dict[str, Any]:
        cid = _camera(camera)
        return _risk_json(cid, ledger.risk(cid))

    @app.get("/v1/alarms", tags=["alarms"], summary="Active risk warnings of all whitelisted cameras (S4)")
    def alarms(_: Caller) -> list[dict[str, Any]]:
        return streams.read_alarms(consortium, ledger)  # the one reading the live stream polls too


def create_app(rpc_url: str, deployment_path: str, *, relayer_key: str | None = None,
               settings: Settings | None = None, clock: Callable[[], float] = time.time,
               stores: Sequence[ContentStore] = (), evidence: EvidenceSettings | None = None,
               stream: StreamSettings | None = None) -> FastAPI:
    w3 = connect(rpc_url, timeout=15)
    deployment = Deployment.load(deployment_path)
    settings = settings or Settings()
    reader = _ReadOnlySigner(w3)
    relayer = Signer(w3, relayer_key) if relayer_key else None
    sessions = SigningSessionClient(reader, deployment.signing_session) if deployment.signing_session else None  # type: ignore[arg-type]
    ctx = Context(
        deployment=deployment, consortium=ConsortiumClient(reader, deployment.consortium),  # type: ignore[arg-type]
        ledger=VideoLedgerClient(reader, deployment.video_ledger), sessions=sessions,  # type: ignore[arg-type]
        relayer=relayer, nonces=NonceStore(clock, settings.nonce_ttl_s, settings.max_nonces),
        tokens=TokenIssuer(clock, settings.token_ttl_s), settings=settings, clock=clock)
    app = FastAPI(title="FrameLedger API", version="1",
                  description="Consortium, cameras, risk warnings and signing sessions. See docs/SIGNING.md.")
    app.state.ctx = ctx
    problems.install(app)

    @app.get("/v1/health", tags=["health"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "chainId": deployment.chain_id, "block": w3.eth.block_number}

    @app.get("/sign", include_in_schema=False)
    def signing_page() -> FileResponse:
        """The signing page (static; it holds no data, everything it shows needs a token)."""
        return FileResponse(WEB_DIR / "sign.html", media_type="text/html")

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
    caller = caller_dependency(ctx)
    _auth_routes(app, ctx)
    _chain_routes(app, ctx, caller, stores)
    session_routes.install(app, ctx, caller, stores)
    app.state.evidence_jobs = evidence_routes.install(app, ctx, caller, stores, evidence or EvidenceSettings())
    app.state.alarm_streams = streams.install(app, ctx, caller, stream or StreamSettings())
    return app


def node_stores(dirs: Sequence[str], private_key: bytes | None = None) -> list[ContentStore]:
    """Read-only LocalStores over node store directories (for `create_app(stores=...)`). A store
    holding a seal index (S5, docs/ENCRYPTION.md) is read through it, opened with ``private_key``:
    the node's own account key opens every session key that node made (it wraps each to itself),
    so the API run by that node's operator serves the session's frames, to the session's parties
    only (the evidence routes' rule). Without the key, or with a key that is no recipient, a sealed
    frame is not available: extraction reports it `frame.missing`, a proof `bytesVerified: null`."""
    from offchain.store import LocalStore
    from offchain.store.sealed import INDEX_NAME, open_party_store

    out: list[ContentStore] = []
    for d in dirs:
        store = LocalStore(d, fsync="none")
        index = FilePath(d) / INDEX_NAME
        out.append(open_party_store(store, index, private_key) if index.is_file() else store)
    return out


def _keystore_key_from_env() -> bytes | None:
    """FRAMELEDGER_KEYSTORE (a node's keystore) with FRAMELEDGER_KEYSTORE_PASSWORD_FILE: the key
    that opens the node's sealed store; kept in this process only, never logged."""
    from offchain.chain.keyfile import PasswordSource, load_private_key

    path = os.environ.get("FRAMELEDGER_KEYSTORE")
    if not path:
        return None
    password = PasswordSource(file=os.environ.get("FRAMELEDGER_KEYSTORE_PASSWORD_FILE"), prompt=False)
    return bytes.fromhex(load_private_key(path, password).removeprefix("0x"))


def _stores_from_env() -> list[ContentStore]:
    """FRAMELEDGER_STORES (LocalStore directories, os.pathsep-separated; sealed ones opened with
    the FRAMELEDGER_KEYSTORE key, `node_stores`) and FRAMELEDGER_IPFS (Kubo RPC URLs,
    comma-separated): where the evidence routes fetch frames, tried in order."""
    from offchain.store import KuboStore

    dirs = [d for d in os.environ.get("FRAMELEDGER_STORES", "").split(os.pathsep) if d]
    urls = [u for u in os.environ.get("FRAMELEDGER_IPFS", "").split(",") if u]
    key = _keystore_key_from_env() if dirs else None
    return node_stores(dirs, key) + [KuboStore(u) for u in urls]


def create_app_from_env() -> FastAPI:
    return create_app(os.environ["FRAMELEDGER_RPC_URL"], os.environ["FRAMELEDGER_DEPLOYMENT"],
                      relayer_key=os.environ.get("FRAMELEDGER_RELAYER_KEY"),
                      settings=Settings(siwe_domain=os.environ.get("FRAMELEDGER_API_DOMAIN", "127.0.0.1:8000")),
                      stores=_stores_from_env(),
                      evidence=EvidenceSettings(work_dir=os.environ.get("FRAMELEDGER_EVIDENCE_DIR")))
