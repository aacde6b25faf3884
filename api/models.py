"""Request bodies of the REST API: every field bounded, hex strings by pattern, with examples."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from .siwe import MAX_MESSAGE_BYTES

U64_MAX = 2**64 - 1
Hex32 = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$", examples=["0x" + "ab" * 32])]
Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$", examples=["0x70997970C51812dc3A010C7d01b50e0d17dc79C8"])]
Signature = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{130}$", description="65-byte r‖s‖v signature, hex")]
U64 = Annotated[int, Field(ge=0, le=U64_MAX)]

_BANK = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
_CUSTOMER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
_SIG = "0x" + "11" * 65


class ProposalBody(BaseModel):
    """An ISigningSession.Proposal; `cameras[i]` belongs to `parties[cameraParty[i]]`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "initiator": _BANK, "parties": [_BANK, _CUSTOMER], "cameras": ["0x" + "0a" * 32, "0x" + "0b" * 32],
        "cameraParty": [0, 1], "documentHash": "0x" + "d0" * 32, "startMs": 1764576000000,
        "endMs": 1764576600000, "expiresAt": 1764579600, "salt": "0x" + "01" * 32}]})

    initiator: Address
    parties: list[Address] = Field(min_length=1, max_length=32)
    cameras: list[Hex32] = Field(min_length=1, max_length=64)
    cameraParty: list[Annotated[int, Field(ge=0, le=255)]] = Field(min_length=1, max_length=64)
    documentHash: Hex32
    startMs: U64
    endMs: U64
    expiresAt: U64 = Field(description="unix seconds: the deadline for every party's answer")
    salt: Hex32


class ProposeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "proposal": ProposalBody.model_config["json_schema_extra"]["examples"][0], "signature": _SIG}]})

    proposal: ProposalBody
    signature: Signature = Field(description="the initiator's EIP-712 signature of the Proposal")


class RespondBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"accept": True, "signature": _SIG}]})

    accept: bool
    signature: Signature = Field(description="EIP-712 signature of Response(sessionId, accept)")


class SignBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"evidenceRoot": "0x" + "e1" * 32, "signature": _SIG}]})

    evidenceRoot: Hex32
    signature: Signature = Field(description="EIP-712 signature of Agreement(sessionId, documentHash, evidenceRoot)")


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"signature": _SIG}]})

    signature: Signature = Field(description="the initiator's EIP-712 signature of Cancel(sessionId)")


class SiweBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "message": "127.0.0.1:8000 wants you to sign in with your Ethereum account:\n" + _BANK
                   + "\n\nSign in to FrameLedger\n\nURI: http://127.0.0.1:8000\nVersion: 1\nChain ID: 31337\n"
                   "Nonce: 5f1c0e2a9b7d4c3e8f6a1b2c3d4e5f60\nIssued At: 2026-12-01T09:00:00Z",
        "signature": _SIG}]})

    message: str = Field(max_length=MAX_MESSAGE_BYTES, description="an EIP-4361 message")
    signature: Signature = Field(description="personal_sign (EIP-191) signature of the message")


CameraRefText = Annotated[str, Field(min_length=1, max_length=128, description="0x camera id or registered IP",
                                     examples=["0x" + "0a" * 32])]


class EvidenceJobBody(BaseModel):
    """Which part of the session's evidence to extract; every field optional (default: the
    session's cameras over its whole range)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {}, {"cameras": ["0x" + "0a" * 32], "fromMs": 1764576000000, "toMs": 1764576060000}]})

    cameras: list[CameraRefText] | None = Field(default=None, min_length=1, max_length=64)
    fromMs: U64 | None = Field(default=None, description="inclusive, epoch ms (default: the session's start)")
    toMs: U64 | None = Field(default=None, description="exclusive, epoch ms (default: the session's end)")
