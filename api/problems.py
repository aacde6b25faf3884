"""RFC 9457 problem details: every error the API returns, with a stable `type`.

`type` is `urn:frameledger:problem:<code>`; clients branch on the code, never on `detail`. A
contract revert keeps its custom error name in `error` and its decoded arguments in `args`. A
revert is a 4xx, an unreachable or failing chain a 502/503: never a 500.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from web3.exceptions import TimeExhausted, Web3Exception

from offchain.chain.reverts import ContractRevert

from .auth import AuthError
from .siwe import SiweError

log = logging.getLogger(__name__)

TYPE_PREFIX = "urn:frameledger:problem:"
MEDIA_TYPE = "application/problem+json"

# custom error → (status, code); SessionNot* are refined by the status they report (see below)
_REVERTS: dict[str, tuple[int, str]] = {
    "UnknownSession": (404, "session-not-found"),
    "NotAParty": (403, "not-a-party"),
    "NotInitiator": (403, "not-initiator"),
    "WrongSigner": (403, "wrong-signer"),
    "InvalidSignature": (400, "invalid-signature"),
    "SessionExists": (409, "session-exists"),
    "AlreadyResponded": (409, "already-responded"),
    "AlreadySigned": (409, "already-signed"),
    "RiskActive": (409, "risk-active"),
    "RecordingNotOver": (409, "recording-not-over"),
    "EvidenceMismatch": (409, "evidence-mismatch"),
    "EmptyEvidenceRoot": (422, "invalid-evidence-root"),
    "UnknownCamera": (404, "camera-not-found"),
    "UnknownHeight": (404, "block-not-found"),
    "UnknownBlock": (404, "block-not-found"),
}
_PROPOSAL_ERRORS = {"NotAMember", "InitiatorNotAParty", "InvalidPartyCount", "InvalidCameraCount",
                    "CameraPartyMismatch", "InvalidCameraParty", "DuplicateParty", "DuplicateCamera",
                    "CameraNotActive", "EmptyDocumentHash", "InvalidTimeRange", "ExpiryNotInFuture"}
# SigningSession.Status names by value, for SessionNotProposed/NotFormed/NotOpen
_STATUS = ("none", "proposed", "formed", "completed", "declined", "cancelled", "expired")
_STATUS_CODES = {"expired": (410, "session-expired"), "declined": (409, "session-declined"),
                 "cancelled": (409, "session-cancelled"), "completed": (409, "session-completed"),
                 "proposed": (409, "session-not-formed"), "formed": (409, "session-already-formed")}


class Problem(Exception):
    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers  # e.g. Retry-After, Content-Range of a 416
        self.extra = extra


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def from_revert(exc: ContractRevert) -> Problem:
    name = exc.name
    args = {k: _jsonable(v) for k, v in exc.args_by_name.items()}
    if name in {"SessionNotProposed", "SessionNotFormed", "SessionNotOpen"}:
        status_name = _STATUS[args.get("status", 0)] if isinstance(args.get("status"), int) else "none"
        status, code = _STATUS_CODES.get(status_name, (409, "session-state"))
        return Problem(status, code, f"the session is {status_name}", error=name, args=args)
    if name in _PROPOSAL_ERRORS:
        return Problem(422, "invalid-proposal", str(exc), error=name, args=args)
    status, code = _REVERTS.get(name, (422, "contract-revert"))
    return Problem(status, code, str(exc), error=name, args=args)


def response(status: int, code: str, detail: str, instance: str, headers: dict[str, str] | None = None,
             **extra: Any) -> JSONResponse:
    body = {"type": TYPE_PREFIX + code, "title": code.replace("-", " "), "status": status, "detail": detail,
            "instance": instance, **extra}
    headers = {**({"WWW-Authenticate": "Bearer"} if status == 401 else {}), **(headers or {})} or None
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into a problem document."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return response(exc.status, exc.code, exc.detail, request.url.path, exc.headers, **exc.extra)

    @app.exception_handler(ContractRevert)
    async def _revert(request: Request, exc: ContractRevert) -> JSONResponse:
        p = from_revert(exc)
        return response(p.status, p.code, p.detail, request.url.path, **p.extra)

    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> JSONResponse:
        return response(exc.status, exc.code, exc.detail, request.url.path)

    @app.exception_handler(SiweError)
    async def _siwe(request: Request, exc: SiweError) -> JSONResponse:
        return response(401 if exc.code != "siwe-malformed" else 400, exc.code, exc.detail, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()][:20]
        return response(422, "invalid-request", "the request does not match the API schema", request.url.path,
                        errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return response(exc.status_code, code, str(exc.detail), request.url.path)

    @app.exception_handler(requests.exceptions.RequestException)
    async def _unreachable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("chain unreachable: %s", exc)
        return response(503, "chain-unavailable", "the chain's JSON-RPC endpoint did not answer", request.url.path)

    @app.exception_handler(TimeExhausted)
    async def _timeout(request: Request, exc: Exception) -> JSONResponse:
        return response(504, "chain-timeout", "the transaction was not mined in time", request.url.path)

    @app.exception_handler(Web3Exception)
    async def _web3(request: Request, exc: Exception) -> JSONResponse:
        log.warning("chain error: %s", exc)
        return response(502, "chain-error", "the chain answered with an error", request.url.path)
