"""The REST API's chain side: what a signing app or an auditor reads before it trusts a clip.

Read-only for now: the consortium, the camera whitelist, a camera's anchored blocks and its risk
state, all straight from the contracts (no node needs to be trusted for these answers). Signing
sessions (C5, S3, S4) build on this in later work.

    uvicorn --factory api.app:create_app_from_env   (FRAMELEDGER_RPC_URL, FRAMELEDGER_DEPLOYMENT)
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, HTTPException

from offchain.chain import reverts
from offchain.chain.client import connect
from offchain.chain.deployer import Deployment
from offchain.chain.ledger import ConsortiumClient, VideoLedgerClient
from offchain.core.block import camera_ref


class _ReadOnlySigner:
    """Views need a `from` only for members-only getters, which this API does not call."""

    def __init__(self, w3):
        self.w3 = w3
        self.address = None


def _camera(ref: str) -> bytes:
    try:
        return camera_ref(ref)
    except ValueError as exc:
        raise HTTPException(400, "camera id is not hex") from exc


def create_app(rpc_url: str, deployment_path: str) -> FastAPI:
    w3 = connect(rpc_url)
    deployment = Deployment.load(deployment_path)
    signer = _ReadOnlySigner(w3)
    consortium = ConsortiumClient(signer, deployment.consortium)  # type: ignore[arg-type]
    ledger = VideoLedgerClient(signer, deployment.video_ledger)  # type: ignore[arg-type]
    app = FastAPI(title="FrameLedger API", version="1")

    @app.get("/v1/consortium")
    def get_consortium() -> dict[str, Any]:
        return {"chainId": deployment.chain_id, "consortium": deployment.consortium,
                "videoLedger": deployment.video_ledger, "nodes": consortium.nodes(), "quorum": consortium.quorum()}

    @app.get("/v1/cameras")
    def cameras() -> list[dict[str, Any]]:
        out = []
        for cid in consortium.camera_ids():
            c = consortium.camera(cid)
            out.append({"cameraId": "0x" + cid.hex(), "ip": c.ip, "owner": c.owner, "group": "0x" + c.group.hex(),
                        "active": c.active, "headBlock": "0x" + c.head_block.hex(), "blocks": ledger.chain_length(cid),
                        "risk": ledger.risk(cid)["active"]})
        return out

    @app.get("/v1/cameras/{camera}/blocks")
    def blocks(camera: str, from_ms: int = 0, to_ms: int = 2**63 - 1) -> list[dict[str, Any]]:
        cid = _camera(camera)
        try:
            heights = ledger.blocks_in_range(cid, from_ms, to_ms)
            return [{**(rec := ledger.block_at(cid, h)).header.to_json(), "hash": "0x" + rec.header.hash.hex(),
                     "attestations": rec.attestations, "disputes": rec.disputes, "final": rec.finalized}
                    for h in heights]
        except reverts.ContractRevert as exc:
            raise HTTPException(404, str(exc)) from exc

    @app.get("/v1/cameras/{camera}/risk")
    def risk(camera: str) -> dict[str, Any]:
        return ledger.risk(_camera(camera))

    return app


def create_app_from_env() -> FastAPI:
    return create_app(os.environ["FRAMELEDGER_RPC_URL"], os.environ["FRAMELEDGER_DEPLOYMENT"])
