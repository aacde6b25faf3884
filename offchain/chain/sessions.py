"""Typed client of `SigningSession.sol`, and the chain reads behind a session's evidence root.

Bound to one signer (the account that sends; with the `...WithSignature` calls it is only a
relayer, the party is whoever signed). Speaks in core types: `agreement.Proposal`, bytes ids.

The evidence root is read through a `BlockSource`, the part of the evidence layer's AnchorSource
(`offchain/evidence/anchors.py`) it needs: per-header mode (VideoLedger) and batch mode
(BatchLedger with its manifests) answer the same question, so one rule makes the root in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable, Iterable, Mapping, Protocol

from ..core import agreement
from ..core.agreement import Domain, EvidenceLeaf, Proposal
from ..core.block import BlockHeader
from .client import Signer, TxResult, bind, call
from .ledger import VideoLedgerClient


class SessionStatus(IntEnum):
    NONE = 0
    PROPOSED = 1
    FORMED = 2
    COMPLETED = 3
    DECLINED = 4
    CANCELLED = 5
    EXPIRED = 6


class PartyResponse(IntEnum):
    NONE = 0
    ACCEPTED = 1
    DECLINED = 2


@dataclass(frozen=True)
class SessionInfo:
    session_id: bytes
    initiator: str
    status: SessionStatus
    party_count: int
    accepted: int
    signed_count: int
    start_ms: int
    end_ms: int
    expires_at: int
    document_hash: bytes
    evidence_root: bytes


@dataclass(frozen=True)
class SessionMembers:
    parties: tuple[str, ...]
    cameras: tuple[bytes, ...]
    camera_party: tuple[int, ...]


@dataclass(frozen=True)
class PartyState:
    is_party: bool
    response: PartyResponse
    signed: bool


class EvidenceIncomplete(Exception):
    """A session camera's chain does not reach the end of the session's range yet."""


@dataclass(frozen=True)
class ProposedSession:
    """One `SessionProposed` event: who proposed, to whom, and where on chain."""

    session_id: bytes
    initiator: str
    parties: tuple[str, ...]
    cameras: tuple[bytes, ...]
    start_ms: int
    end_ms: int
    expires_at: int
    block_number: int
    log_index: int


class AnchoredBlock(Protocol):
    """What the evidence root needs of an anchored block (`evidence.verify.ChainBlock` has it)."""

    @property
    def header(self) -> BlockHeader: ...


class BlockSource(Protocol):
    """The AnchorSource question the evidence root asks: a camera's anchored blocks whose windows
    meet [from_ms, to_ms), by height (None: not anchored)."""

    def blocks_in_range(self, camera: bytes, from_ms: int, to_ms: int) -> tuple[list[int], Mapping[int, Any]]: ...


@dataclass(frozen=True)
class _LedgerBlock:
    header: BlockHeader


class LedgerBlockSource:
    """A `BlockSource` over a `VideoLedgerClient` (per-header mode; contract tests use it)."""

    def __init__(self, ledger: VideoLedgerClient):
        self.ledger = ledger

    def blocks_in_range(self, camera: bytes, from_ms: int, to_ms: int) -> tuple[list[int], Mapping[int, Any]]:
        heights = list(self.ledger.blocks_in_range(camera, from_ms, to_ms))
        return heights, {h: _LedgerBlock(self.ledger.block_at(camera, h).header) for h in heights}


class SigningSessionClient:
    def __init__(self, signer: Signer, address: str):
        self.signer = signer
        self.contract = bind(signer.w3, "SigningSession", address)
        self.address = self.contract.address
        self.domain = Domain(chain_id=signer.chain_id, verifying_contract=self.address)

    def as_signer(self, signer: Signer) -> "SigningSessionClient":
        return SigningSessionClient(signer, self.address)

    # writes -------------------------------------------------------------------
    def propose(self, proposal: Proposal) -> TxResult:
        return self.signer.transact(self.contract.functions.propose(proposal.as_tuple()))

    def propose_with_signature(self, proposal: Proposal, signature: bytes) -> TxResult:
        return self.signer.transact(self.contract.functions.proposeWithSignature(proposal.as_tuple(), signature))

    def respond(self, session_id: bytes, accept: bool) -> TxResult:
        return self.signer.transact(self.contract.functions.respond(session_id, accept))

    def respond_with_signature(self, session_id: bytes, accept: bool, signature: bytes) -> TxResult:
        return self.signer.transact(self.contract.functions.respondWithSignature(session_id, accept, signature))

    def cancel(self, session_id: bytes) -> TxResult:
        return self.signer.transact(self.contract.functions.cancel(session_id))

    def cancel_with_signature(self, session_id: bytes, signature: bytes) -> TxResult:
        return self.signer.transact(self.contract.functions.cancelWithSignature(session_id, signature))

    def sign(self, session_id: bytes, evidence_root: bytes, signature: bytes) -> TxResult:
        return self.signer.transact(self.contract.functions.sign(session_id, evidence_root, signature))

    # views --------------------------------------------------------------------
    def session(self, session_id: bytes) -> SessionInfo:
        t = call(self.contract.functions.session(session_id))
        return SessionInfo(session_id=session_id, initiator=t[0], status=SessionStatus(t[1]), party_count=t[2],
                           accepted=t[3], signed_count=t[4], start_ms=t[5], end_ms=t[6], expires_at=t[7],
                           document_hash=bytes(t[8]), evidence_root=bytes(t[9]))

    def members(self, session_id: bytes) -> SessionMembers:
        parties, cameras, owners = call(self.contract.functions.membersOf(session_id))
        return SessionMembers(parties=tuple(parties), cameras=tuple(bytes(c) for c in cameras),
                              camera_party=tuple(int(i) for i in owners))

    def party_state(self, session_id: bytes, account: str) -> PartyState:
        is_party, response, signed = call(self.contract.functions.partyState(session_id, account))
        return PartyState(is_party=is_party, response=PartyResponse(response), signed=signed)

    def signature_of(self, session_id: bytes, party: str) -> bytes:
        return bytes(call(self.contract.functions.signatureOf(session_id, party)))

    def risk_of(self, session_id: bytes) -> tuple[bool, bytes]:
        active, camera = call(self.contract.functions.riskOf(session_id))
        return active, bytes(camera)

    def proposal_id(self, proposal: Proposal) -> bytes:
        return bytes(call(self.contract.functions.proposalId(proposal.as_tuple())))

    def agreement_digest(self, session_id: bytes, evidence_root: bytes) -> bytes:
        return bytes(call(self.contract.functions.agreementDigest(session_id, evidence_root)))

    def proposed(self, from_block: int, to_block: int) -> list[ProposedSession]:
        """The `SessionProposed` events of blocks [from_block, to_block], oldest first. Parties
        are not indexed, so the caller filters; the block span bounds the read."""
        logs = self.contract.events.SessionProposed().get_logs(from_block=from_block, to_block=to_block)
        out = []
        for lg in logs:
            a = lg["args"]
            out.append(ProposedSession(session_id=bytes(a["sessionId"]), initiator=str(a["initiator"]),
                                       parties=tuple(str(p) for p in a["parties"]),
                                       cameras=tuple(bytes(c) for c in a["cameras"]), start_ms=int(a["startMs"]),
                                       end_ms=int(a["endMs"]), expires_at=int(a["expiresAt"]),
                                       block_number=int(lg["blockNumber"]), log_index=int(lg["logIndex"])))
        return out

    def limits(self) -> tuple[int, int]:
        return call(self.contract.functions.maxParties()), call(self.contract.functions.maxCameras())


def session_evidence(ledger: VideoLedgerClient, cameras: tuple[bytes, ...], start_ms: int, end_ms: int,
                     require_complete: bool = True) -> list[EvidenceLeaf]:
    """`evidence_from_sources` over the VideoLedger alone (per-header mode)."""
    source = LedgerBlockSource(ledger)
    return evidence_from_sources(lambda _cam: source, cameras, start_ms, end_ms, require_complete)


def evidence_from_sources(source_for: Callable[[bytes], BlockSource], cameras: Iterable[bytes], start_ms: int,
                          end_ms: int, require_complete: bool = True) -> list[EvidenceLeaf]:
    """Read the anchored blocks of `cameras` over [start_ms, end_ms), each through the source the
    chain says it was anchored with (``source_for(camera)``), and return the evidence leaves
    (`agreement.evidence_leaves`). With `require_complete`, a camera whose anchored blocks in the
    range end before `end_ms` raises EvidenceIncomplete: its last windows are not anchored yet (or
    the camera stopped), and a root made now would leave them out."""
    cams = tuple(cameras)
    blocks: dict[bytes, list[BlockHeader]] = {}
    for cam in cams:
        _heights, found = source_for(cam).blocks_in_range(cam, start_ms, end_ms)
        headers = [cb.header for cb in found.values() if cb is not None]
        reach = max((h.window_end_ms for h in headers), default=0)
        if require_complete and reach < end_ms:
            raise EvidenceIncomplete(f"camera 0x{cam.hex()} is anchored up to {reach} ms, before {end_ms} ms")
        blocks[cam] = headers
    return agreement.evidence_leaves(cams, start_ms, end_ms, blocks)


def session_to_json(info: SessionInfo, members: SessionMembers) -> dict[str, Any]:
    return {
        "sessionId": "0x" + info.session_id.hex(), "initiator": info.initiator, "status": info.status.name.lower(),
        "parties": list(members.parties), "cameras": ["0x" + c.hex() for c in members.cameras],
        "cameraParty": list(members.camera_party), "accepted": info.accepted, "signed": info.signed_count,
        "startMs": info.start_ms, "endMs": info.end_ms, "expiresAt": info.expires_at,
        "documentHash": "0x" + info.document_hash.hex(), "evidenceRoot": "0x" + info.evidence_root.hex(),
    }
