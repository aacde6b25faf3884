"""Signing sessions, pure: the EIP-712 messages a party signs and the session's evidence root.

Everything a party signs for `SigningSession.sol` is EIP-712 typed data under the domain
(name "FrameLedger SigningSession", version "1", chainId, verifyingContract):

    Proposal(address initiator,address[] parties,bytes32[] cameras,uint8[] cameraParty,
             bytes32 documentHash,uint64 startMs,uint64 endMs,uint64 expiresAt,bytes32 salt)
    Response(bytes32 sessionId,bool accept)
    Cancel(bytes32 sessionId)
    Agreement(bytes32 sessionId,bytes32 documentHash,bytes32 evidenceRoot)

The session id is the EIP-712 digest of the Proposal, so it is known before anything is sent.

The evidence root commits the anchored blocks of the session's cameras over its time range: an
OpenZeppelin StandardMerkleTree over leaves (bytes32 cameraId, uint64 height, bytes32 blockHash),
one per anchored block of a session camera whose window [windowStartMs, windowEndMs) overlaps
[startMs, endMs) — exactly the heights `VideoLedger.blocksInRange` reports. Each block hash in turn
commits the block's frames root and manifest (gaps and fills on record), so one root names every
frame the parties saw. No I/O here; `offchain/chain/sessions.py` reads the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from .block import BlockHeader
from .merkle import StandardMerkleTree

DOMAIN_NAME = "FrameLedger SigningSession"
DOMAIN_VERSION = "1"
EVIDENCE_LEAF_ENCODING: tuple[str, ...] = ("bytes32", "uint64", "bytes32")
ZERO32 = b"\x00" * 32

_EIP712_DOMAIN = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
TYPES: dict[str, list[dict[str, str]]] = {
    "Proposal": [
        {"name": "initiator", "type": "address"},
        {"name": "parties", "type": "address[]"},
        {"name": "cameras", "type": "bytes32[]"},
        {"name": "cameraParty", "type": "uint8[]"},
        {"name": "documentHash", "type": "bytes32"},
        {"name": "startMs", "type": "uint64"},
        {"name": "endMs", "type": "uint64"},
        {"name": "expiresAt", "type": "uint64"},
        {"name": "salt", "type": "bytes32"},
    ],
    "Response": [{"name": "sessionId", "type": "bytes32"}, {"name": "accept", "type": "bool"}],
    "Cancel": [{"name": "sessionId", "type": "bytes32"}],
    "Agreement": [
        {"name": "sessionId", "type": "bytes32"},
        {"name": "documentHash", "type": "bytes32"},
        {"name": "evidenceRoot", "type": "bytes32"},
    ],
}


class EvidenceError(ValueError):
    """The blocks offered cannot make an evidence root (none at all, or not the camera's)."""


@dataclass(frozen=True)
class Domain:
    """The EIP-712 domain of one SigningSession deployment."""

    chain_id: int
    verifying_contract: str

    def as_json(self) -> dict[str, Any]:
        return {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": self.chain_id,
                "verifyingContract": to_checksum_address(self.verifying_contract)}


@dataclass(frozen=True)
class Proposal:
    """A session proposal; `cameras[i]` belongs to `parties[camera_party[i]]`."""

    initiator: str
    parties: tuple[str, ...]
    cameras: tuple[bytes, ...]
    camera_party: tuple[int, ...]
    document_hash: bytes
    start_ms: int
    end_ms: int
    expires_at: int
    salt: bytes

    def as_tuple(self) -> tuple[Any, ...]:
        """The ABI tuple of `ISigningSession.Proposal`."""
        return (to_checksum_address(self.initiator), [to_checksum_address(p) for p in self.parties],
                list(self.cameras), list(self.camera_party), self.document_hash, self.start_ms, self.end_ms,
                self.expires_at, self.salt)

    def as_message(self) -> dict[str, Any]:
        return dict(zip([f["name"] for f in TYPES["Proposal"]], self.as_tuple()))


def typed_data(domain: Domain, primary_type: str, message: Mapping[str, Any]) -> dict[str, Any]:
    """A full EIP-712 document (eth_signTypedData_v4 / ethers `signTypedData` input)."""
    if primary_type not in TYPES:
        raise ValueError(f"unknown primary type {primary_type!r}")
    return {"types": {"EIP712Domain": _EIP712_DOMAIN, primary_type: TYPES[primary_type]},
            "primaryType": primary_type, "domain": domain.as_json(), "message": dict(message)}


def proposal_data(domain: Domain, proposal: Proposal) -> dict[str, Any]:
    return typed_data(domain, "Proposal", proposal.as_message())


def response_data(domain: Domain, session_id: bytes, accept: bool) -> dict[str, Any]:
    return typed_data(domain, "Response", {"sessionId": session_id, "accept": accept})


def cancel_data(domain: Domain, session_id: bytes) -> dict[str, Any]:
    return typed_data(domain, "Cancel", {"sessionId": session_id})


def agreement_data(domain: Domain, session_id: bytes, document_hash: bytes, evidence_root: bytes) -> dict[str, Any]:
    return typed_data(domain, "Agreement", {"sessionId": session_id, "documentHash": document_hash,
                                            "evidenceRoot": evidence_root})


def digest(data: Mapping[str, Any]) -> bytes:
    """The 32-byte EIP-712 digest keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(message))."""
    signable = encode_typed_data(full_message=dict(data))  # version 0x01, header = domain separator
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def session_id(domain: Domain, proposal: Proposal) -> bytes:
    """The id `SigningSession.propose` gives the session: the Proposal's EIP-712 digest."""
    return digest(proposal_data(domain, proposal))


# ------------------------------------------------------------------ evidence root


@dataclass(frozen=True)
class EvidenceLeaf:
    camera_id: bytes
    height: int
    block_hash: bytes

    def as_values(self) -> list[Any]:
        return [self.camera_id, self.height, self.block_hash]


def overlaps(header: BlockHeader, start_ms: int, end_ms: int) -> bool:
    """Whether a block's window [windowStartMs, windowEndMs) meets [start_ms, end_ms)."""
    return header.window_start_ms < end_ms and header.window_end_ms > start_ms


def evidence_leaves(cameras: Sequence[bytes], start_ms: int, end_ms: int,
                    blocks: Mapping[bytes, Iterable[BlockHeader]]) -> list[EvidenceLeaf]:
    """The leaves of the session's evidence: every offered block of a session camera that
    overlaps the range, in camera order then height. Blocks of other cameras are an error (a
    caller mixing chains up), blocks outside the range are left out."""
    leaves: list[EvidenceLeaf] = []
    for cam in cameras:
        for header in sorted(blocks.get(cam, ()), key=lambda h: h.height):
            if header.camera_id != cam:
                raise EvidenceError(f"block at height {header.height} is not camera 0x{cam.hex()}'s")
            if overlaps(header, start_ms, end_ms):
                leaves.append(EvidenceLeaf(cam, header.height, header.hash))
    return leaves


def evidence_tree(leaves: Sequence[EvidenceLeaf]) -> StandardMerkleTree:
    if not leaves:
        raise EvidenceError("no anchored block of the session's cameras overlaps its time range")
    return StandardMerkleTree.of([leaf.as_values() for leaf in leaves], list(EVIDENCE_LEAF_ENCODING))


def evidence_root(leaves: Sequence[EvidenceLeaf]) -> bytes:
    """The StandardMerkleTree root over (cameraId, height, blockHash) leaves."""
    return bytes(evidence_tree(leaves).root)


def sign_typed(private_key: str | bytes, data: Mapping[str, Any]) -> bytes:
    """A 65-byte (r ‖ s ‖ v) signature of typed data, as a wallet's eth_signTypedData_v4 makes it."""
    from eth_account import Account  # local: the account machinery is only needed to sign

    return bytes(Account.sign_typed_data(private_key, full_message=dict(data)).signature)


def recover_typed(data: Mapping[str, Any], signature: bytes) -> str:
    """The address that signed typed data (raises ValueError for a malformed signature)."""
    from eth_account import Account

    try:
        return str(Account.recover_message(encode_typed_data(full_message=dict(data)), signature=signature))
    except Exception as exc:  # eth-keys raises several types for bad r/s/v
        raise ValueError(f"not a valid signature: {exc}") from None
