"""Signing-session routes (C5, S3, S4): propose, respond, read, agree, sign, cancel.

Every write carries the acting party's EIP-712 signature; the API checks that it is the signed-in
caller's (403 `wrong-signer` otherwise) and relays it; the contract checks it again and refuses
anything else with a custom error, which comes back as a problem document (api/problems.py).
"""

# no `from __future__ import annotations`: FastAPI resolves the routes' local Annotated aliases at runtime

from typing import Annotated, Any, Callable, Mapping

from eth_utils import to_checksum_address
from fastapi import Depends, FastAPI, Path

from offchain.chain.sessions import EvidenceIncomplete, SessionInfo, SessionMembers, session_evidence, session_to_json
from offchain.core import agreement
from offchain.core.agreement import EvidenceError, Proposal

from .context import Context
from .models import CancelBody, ProposalBody, ProposeBody, RespondBody, SignBody
from .problems import Problem

SessionId = Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$", description="the session id (bytes32 hex)",
                                examples=["0x" + "5e" * 32])]


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

    def __init__(self, ctx: Context):
        self.ctx = ctx

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
        try:
            leaves = session_evidence(self.ctx.ledger, members.cameras, info.start_ms, info.end_ms)
            root = agreement.evidence_root(leaves)
        except EvidenceIncomplete as exc:
            raise Problem(409, "evidence-incomplete", str(exc)) from None
        except EvidenceError as exc:
            raise Problem(409, "evidence-empty", str(exc)) from None
        data = agreement.agreement_data(self.ctx.session_client().domain, sid, info.document_hash, root)
        return {"sessionId": "0x" + sid.hex(), "evidenceRoot": "0x" + root.hex(), "leafEncoding": list(agreement.EVIDENCE_LEAF_ENCODING),
                "leaves": [_json(leaf.as_values()) for leaf in leaves], "typedData": _json(data)}


def install(app: FastAPI, ctx: Context, caller: Callable[..., str]) -> None:  # noqa: C901 - route table
    Caller = Annotated[str, Depends(caller)]
    s = _Sessions(ctx)

    @app.get("/v1/sessions/domain", tags=["sessions"], summary="The EIP-712 domain and types sessions are signed under")
    def domain(_: Caller) -> dict[str, Any]:
        return {"domain": ctx.session_client().domain.as_json(), "types": agreement.TYPES}

    @app.post("/v1/sessions/typed-data", tags=["sessions"], summary="The Proposal typed data to sign, and the session id")
    def proposal_typed_data(body: ProposalBody, _: Caller) -> dict[str, Any]:
        proposal, dom = to_proposal(body), ctx.session_client().domain
        return {"sessionId": "0x" + agreement.session_id(dom, proposal).hex(),
                "typedData": _json(agreement.proposal_data(dom, proposal))}

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
