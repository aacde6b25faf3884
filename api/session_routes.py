"""Signing-session routes (C5, S3, S4): propose, respond, read, agree, sign, cancel.

Every write carries the acting party's EIP-712 signature; the API checks that it is the signed-in
caller's (403 `wrong-signer` otherwise) and relays it; the contract checks it again and refuses
anything else with a custom error, which comes back as a problem document (api/problems.py).
"""

# no `from __future__ import annotations`: FastAPI resolves the routes' local Annotated aliases at runtime

from typing import Annotated, Any, Callable, Mapping, Sequence

from eth_utils import to_checksum_address
from fastapi import Depends, FastAPI, Path, Query

from offchain.chain.sessions import (EvidenceIncomplete, ProposedSession, SessionInfo, SessionMembers,
                                     evidence_from_sources, session_to_json)
from offchain.core import agreement
from offchain.core.agreement import EvidenceError, Proposal
from offchain.store.base import ContentStore

from .anchoring import CheckedSource
from .context import Context
from .models import CancelBody, ProposalBody, ProposeBody, RespondBody, SignBody
from .problems import Problem

# GET /v1/sessions: at most this many sessions a page; the SessionProposed logs are read in spans
# of LOG_SPAN_BLOCKS blocks, at most MAX_SCAN_BLOCKS blocks a request (then a cursor continues).
MAX_SESSIONS_PAGE = 100
LOG_SPAN_BLOCKS = 10_000
MAX_SCAN_BLOCKS = 100_000

SessionId = Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$", description="the session id (bytes32 hex)",
                                examples=["0x" + "5e" * 32])]


_LIST_EXAMPLE = {"sessions": [{
    "sessionId": "0x" + "5e" * 32, "status": "formed", "initiator": "0x" + "B0" * 20,
    "parties": ["0x" + "B0" * 20, "0x" + "C0" * 20], "cameras": ["0x" + "ca" * 32], "role": "party",
    "startMs": 1764547200000, "endMs": 1764547500000, "expiresAt": 1764550800, "proposedInBlock": 1234}],
    "next": "1234.0"}


def _b(hex_str: str) -> bytes:
    return bytes.fromhex(hex_str[2:])


def _json(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


def to_proposal(body: ProposalBody) -> Proposal:
    return Proposal(initiator=to_checksum_address(body.initiator), parties=tuple(to_checksum_address(p) for p in body.parties),
                    cameras=tuple(_b(c) for c in body.cameras), camera_party=tuple(body.cameraParty),
                    document_hash=_b(body.documentHash), start_ms=body.startMs, end_ms=body.endMs,
                    expires_at=body.expiresAt, salt=_b(body.salt))


def _require_signed_by(data: Mapping[str, Any], signature_hex: str, caller: str) -> bytes:
    signature = _b(signature_hex)
    try:
        signer = agreement.recover_typed(data, signature)
    except ValueError as exc:
        raise Problem(400, "invalid-signature", str(exc)) from None
    if signer != caller:
        raise Problem(403, "wrong-signer", f"the signature is {signer}'s, the signed-in caller is {caller}")
    return signature


class _Sessions:
    """The route bodies, bound to one Context."""

    def __init__(self, ctx: Context, stores: Sequence[ContentStore]):
        self.ctx, self.stores = ctx, list(stores)

    def read(self, sid: bytes, caller: str) -> tuple[SessionInfo, SessionMembers]:
        client = self.ctx.session_client()
        members = client.members(sid)  # UnknownSession → 404
        if caller not in members.parties:
            raise Problem(403, "not-a-party", "only the session's parties may read or act on it")
        return client.session(sid), members

    def status(self, sid: bytes, caller: str) -> dict[str, Any]:
        info, members = self.read(sid, caller)
        client = self.ctx.session_client()
        states = [client.party_state(sid, p) for p in members.parties]
        risky, camera = client.risk_of(sid)
        return {**session_to_json(info, members),
                "partyStates": [{"address": p, "response": s.response.name.lower(), "signed": s.signed}
                                for p, s in zip(members.parties, states)],
                "risk": {"active": risky, "cameraId": "0x" + camera.hex() if risky else None}}

    def evidence(self, sid: bytes, caller: str) -> dict[str, Any]:
        info, members = self.read(sid, caller)
        modes: dict[bytes, str] = {}

        def source_for(cam: bytes) -> CheckedSource:  # per camera: the mode the chain anchored it in
            src = CheckedSource(self.ctx, self.stores, cam, info.start_ms, info.end_ms)
            modes[cam] = src.anchoring
            return src

        try:
            leaves = evidence_from_sources(source_for, members.cameras, info.start_ms, info.end_ms)
            root = agreement.evidence_root(leaves)
        except EvidenceIncomplete as exc:
            raise Problem(409, "evidence-incomplete", str(exc)) from None
        except EvidenceError as exc:
            raise Problem(409, "evidence-empty", str(exc)) from None
        data = agreement.agreement_data(self.ctx.session_client().domain, sid, info.document_hash, root)
        return {"sessionId": "0x" + sid.hex(), "evidenceRoot": "0x" + root.hex(), "leafEncoding": list(agreement.EVIDENCE_LEAF_ENCODING),
                "leaves": [_json(leaf.as_values()) for leaf in leaves], "typedData": _json(data),
                "anchoring": {"0x" + c.hex(): m for c, m in modes.items()}}

    def listing(self, caller: str, limit: int, cursor: str | None) -> dict[str, Any]:
        """The caller's sessions (party or initiator), newest first, from the SessionProposed
        events below ``cursor`` ("block.logIndex"); a page ends at ``limit`` sessions or after
        MAX_SCAN_BLOCKS blocks, and ``next`` then continues it."""
        client = self.ctx.session_client()
        floor = int(self.ctx.deployment.record["contracts"].get("SigningSession", {}).get("blockNumber", 0))
        latest = int(client.contract.w3.eth.block_number)
        before = (latest + 1, 0) if cursor is None else tuple(int(x) for x in cursor.split("."))
        high = min(before[0], latest)  # the highest block that may hold an entry
        mine: list[ProposedSession] = []
        stop = max(floor, high - MAX_SCAN_BLOCKS + 1)  # this request's scan budget
        while high >= stop and len(mine) < limit:
            low = max(stop, high - LOG_SPAN_BLOCKS + 1)
            span = [p for p in client.proposed(low, high) if (p.block_number, p.log_index) < before
                    and (p.initiator == caller or caller in p.parties)]
            mine.extend(sorted(span, key=lambda p: (p.block_number, p.log_index), reverse=True))
            high = low - 1
        page = mine[:limit]
        if len(mine) >= limit:  # a full page: the next one starts below its last entry (it may be empty)
            nxt: str | None = f"{page[-1].block_number}.{page[-1].log_index}"
        else:  # the budget ran out first, or the SigningSession's deployment block was reached
            nxt = f"{high + 1}.0" if high >= floor else None
        return {"sessions": [self._entry(p, caller) for p in page], "next": nxt}

    def _entry(self, p: ProposedSession, caller: str) -> dict[str, Any]:
        info = self.ctx.session_client().session(p.session_id)
        return {"sessionId": "0x" + p.session_id.hex(), "status": info.status.name.lower(), "initiator": p.initiator,
                "parties": list(p.parties), "cameras": ["0x" + c.hex() for c in p.cameras],
                "role": "initiator" if p.initiator == caller else "party", "startMs": p.start_ms, "endMs": p.end_ms,
                "expiresAt": p.expires_at, "proposedInBlock": p.block_number}


def install(app: FastAPI, ctx: Context, caller: Callable[..., str],  # noqa: C901 - route table
            stores: Sequence[ContentStore] = ()) -> None:
    Caller = Annotated[str, Depends(caller)]
    s = _Sessions(ctx, stores)

    @app.get("/v1/sessions/domain", tags=["sessions"], summary="The EIP-712 domain and types sessions are signed under")
    def domain(_: Caller) -> dict[str, Any]:
        return {"domain": ctx.session_client().domain.as_json(), "types": agreement.TYPES}

    @app.post("/v1/sessions/typed-data", tags=["sessions"], summary="The Proposal typed data to sign, and the session id")
    def proposal_typed_data(body: ProposalBody, _: Caller) -> dict[str, Any]:
        proposal, dom = to_proposal(body), ctx.session_client().domain
        return {"sessionId": "0x" + agreement.session_id(dom, proposal).hex(),
                "typedData": _json(agreement.proposal_data(dom, proposal))}

    @app.get("/v1/sessions", tags=["sessions"], summary="The caller's sessions (party or initiator), newest first",
             responses={200: {"content": {"application/json": {"example": _LIST_EXAMPLE}}}})
    def listing(who: Caller, limit: Annotated[int, Query(ge=1, le=MAX_SESSIONS_PAGE)] = 20,
                cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,19}\.[0-9]{1,9}$", examples=["1234.0"],
                                                    description="the `next` of the previous page")] = None
                ) -> dict[str, Any]:
        return s.listing(who, limit, cursor)

    @app.post("/v1/sessions", tags=["sessions"], status_code=201, summary="Propose a session (the initiator signs it)")
    def propose(body: ProposeBody, who: Caller) -> dict[str, Any]:
        proposal = to_proposal(body.proposal)
        if proposal.initiator != who:
            raise Problem(403, "not-initiator", "the signed-in caller must be the proposal's initiator")
        dom = ctx.session_client().domain
        signature = _require_signed_by(agreement.proposal_data(dom, proposal), body.signature, who)
        ctx.relaying_sessions().propose_with_signature(proposal, signature)
        return s.status(agreement.session_id(dom, proposal), who)

    @app.get("/v1/sessions/{session_id}", tags=["sessions"], summary="A session's status, parties and risk")
    def status(session_id: SessionId, who: Caller) -> dict[str, Any]:
        return s.status(_b(session_id), who)

    @app.get("/v1/sessions/{session_id}/agreement", tags=["sessions"],
             summary="The evidence root over the session's anchored blocks and the Agreement to sign")
    def evidence(session_id: SessionId, who: Caller) -> dict[str, Any]:
        return s.evidence(_b(session_id), who)

    @app.post("/v1/sessions/{session_id}/responses", tags=["sessions"], summary="Accept or decline (C5)")
    def respond(session_id: SessionId, body: RespondBody, who: Caller) -> dict[str, Any]:
        sid = _b(session_id)
        s.read(sid, who)
        data = agreement.response_data(ctx.session_client().domain, sid, body.accept)
        ctx.relaying_sessions().respond_with_signature(sid, body.accept, _require_signed_by(data, body.signature, who))
        return s.status(sid, who)

    @app.post("/v1/sessions/{session_id}/signatures", tags=["sessions"],
              summary="Record the caller's signed Agreement (S3); refused while a risk warning is active (S4)")
    def sign(session_id: SessionId, body: SignBody, who: Caller) -> dict[str, Any]:
        sid = _b(session_id)
        info, _members = s.read(sid, who)
        root = _b(body.evidenceRoot)
        data = agreement.agreement_data(ctx.session_client().domain, sid, info.document_hash, root)
        signature = _require_signed_by(data, body.signature, who)
        ctx.relaying_sessions().sign(sid, root, signature)
        return s.status(sid, who)

    @app.post("/v1/sessions/{session_id}/cancel", tags=["sessions"], summary="Withdraw the session (initiator only)")
    def cancel(session_id: SessionId, body: CancelBody, who: Caller) -> dict[str, Any]:
        sid = _b(session_id)
        info, _members = s.read(sid, who)
        if info.initiator != who:
            raise Problem(403, "not-initiator", "only the initiator may cancel the session")
        data = agreement.cancel_data(ctx.session_client().domain, sid)
        ctx.relaying_sessions().cancel_with_signature(sid, _require_signed_by(data, body.signature, who))
        return s.status(sid, who)
