"""Declared camera outages (issue 10): the camera's own signed word that it was away.

A live source (RTSP, MJPEG) that loses its camera reconnects; sequence numbers go on and the outage
shows only as a jump in capture time. The camera agent then signs an ``outage`` control message
(``wire.outage_message``: after frame ``afterSeq``, from ``fromMs`` to ``toMs``, a reason) and sends
the same bytes to every node. A node checks it (`check_bounds`, and its own rules: whitelist,
signature, per-window count), keeps it, and the block of the window holding ``toMs`` carries it in
its manifest's ``declaredOutages`` as a *proof* — the signed JSON, the signature and the signing
domain, like ``codecProof`` — so it is anchored with the manifest's digest and anyone with the
camera's device key from the chain can check it (`verify_proof`).

Why the window of ``toMs`` (the capture time of the first frame after the outage): the declaration
can only be made once the camera is back, and that frame's window is then still open, so the
declaration is in time for its block however long the outage lasted.

Pure code: no I/O, no clock (callers pass ``now_ms``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Iterable

from .wire import CONTROL_SIGNING_DOMAIN, MAX_OUTAGE_REASON, OUTAGE, ControlError, SignedControl

__all__ = ["MAX_OUTAGE_MS", "MAX_OUTAGES_PER_WINDOW", "MAX_FUTURE_MS", "OutageDeclaration", "OutageError",
           "ProofCheck", "ProofProblem", "check_bounds", "declaration_of", "from_proof", "verify_proof"]

MAX_OUTAGE_MS = 7 * 24 * 3600 * 1000   # one declaration spans at most a week
MAX_OUTAGES_PER_WINDOW = 16            # a node keeps at most this many per camera and block window
MAX_FUTURE_MS = 5 * 60 * 1000          # toMs at most this far after the node's clock
_MAX_SEQ = 2**62
_HEX = frozenset("0123456789abcdefABCDEF")


class OutageError(ValueError):
    """Not a well-formed outage declaration within the bounds (the message says which)."""


@dataclass(frozen=True)
class OutageDeclaration:
    """A parsed outage declaration with the exact bytes the camera signed."""

    camera_ip: str
    after_seq: int
    from_ms: int
    to_ms: int
    reason: str
    signed_json: bytes
    signature: bytes

    @property
    def digest(self) -> bytes:
        """SHA-256 of the signed JSON: the declaration's identity (a replay has the same)."""
        return hashlib.sha256(self.signed_json).digest()

    def proof(self) -> dict[str, str]:
        """What a manifest's ``declaredOutages`` carries for it."""
        return {"signedJson": self.signed_json.decode("utf-8"), "signature": self.signature.hex(),
                "domain": CONTROL_SIGNING_DOMAIN.decode()}

    def to_json(self) -> dict[str, Any]:
        return {"afterSeq": self.after_seq, "fromMs": self.from_ms, "toMs": self.to_ms, "reason": self.reason}

    def control(self) -> SignedControl:
        return SignedControl(json.loads(self.signed_json), self.signed_json, self.signature)


def _int(msg: dict[str, Any], key: str, hi: int) -> int:
    v = msg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < hi:
        raise OutageError(f"outage {key} {v!r} is not an integer in [0, {hi})")
    return v


def declaration_of(msg: SignedControl) -> OutageDeclaration:
    """The declaration a signed control message carries (signature not checked here)."""
    m = msg.message
    if m.get("type") != OUTAGE:
        raise OutageError(f"not an outage declaration (type {m.get('type')!r})")
    camera = m.get("camera")
    reason = m.get("reason", "")
    if not isinstance(camera, str) or not camera:
        raise OutageError("outage declaration without a camera")
    if not isinstance(reason, str) or len(reason) > MAX_OUTAGE_REASON:
        raise OutageError(f"outage reason is not a string of at most {MAX_OUTAGE_REASON} characters")
    after, from_ms, to_ms = _int(m, "afterSeq", _MAX_SEQ), _int(m, "fromMs", 2**53), _int(m, "toMs", 2**53)
    if not from_ms < to_ms:
        raise OutageError(f"outage from {from_ms} is not before to {to_ms}")
    if to_ms - from_ms > MAX_OUTAGE_MS:
        raise OutageError(f"outage of {to_ms - from_ms} ms exceeds {MAX_OUTAGE_MS} ms")
    return OutageDeclaration(camera_ip=camera, after_seq=after, from_ms=from_ms, to_ms=to_ms, reason=reason,
                             signed_json=msg.signed_json, signature=msg.signature)


def check_bounds(d: OutageDeclaration, *, now_ms: int, held_after_ts: int | None, in_window: int) -> str | None:
    """A node's rules beyond the format: None when it may keep the declaration, else why not.
    ``held_after_ts``: the capture time of frame ``afterSeq`` if the node holds it (the outage must
    start there); ``in_window``: declarations it already keeps for the camera in toMs's window."""
    if d.to_ms > now_ms + MAX_FUTURE_MS:
        return f"outage ends at {d.to_ms}, after the node's clock ({now_ms}) + {MAX_FUTURE_MS} ms"
    if held_after_ts is not None and held_after_ts != d.from_ms:
        return f"outage from {d.from_ms}, but frame {d.after_seq} was captured at {held_after_ts}"
    if in_window >= MAX_OUTAGES_PER_WINDOW:
        return f"already {in_window} outages declared in this window (limit {MAX_OUTAGES_PER_WINDOW})"
    return None


def from_proof(proof: Any) -> OutageDeclaration:
    """The declaration a manifest's proof entry carries; `OutageError` when it is malformed."""
    if not isinstance(proof, dict) or proof.get("domain") != CONTROL_SIGNING_DOMAIN.decode():
        raise OutageError("outage proof is not an object with the control signing domain")
    try:
        signed = str(proof["signedJson"]).encode("utf-8")
        sig_hex = str(proof["signature"])
        message = json.loads(signed)
    except (KeyError, ValueError, RecursionError) as exc:
        raise OutageError(f"outage proof is malformed: {exc}") from exc
    # exactly 128 hex digits (no spaces, no 0x), as scripts/verify_bundle.js reads it
    if len(sig_hex) != 128 or any(c not in _HEX for c in sig_hex) or not isinstance(message, dict):
        raise OutageError("outage proof has no 64-byte hex signature or no JSON object")
    signature = bytes.fromhex(sig_hex)
    try:
        return declaration_of(SignedControl(message, signed, signature))
    except ControlError as exc:  # pragma: no cover - SignedControl does not raise it; kept for safety
        raise OutageError(str(exc)) from exc


class ProofProblem(StrEnum):
    INVALID = "invalid"        # malformed, another camera's, or outside its block's window
    SIGNATURE = "signature"    # no device key of the camera verifies it


@dataclass(frozen=True)
class ProofCheck:
    declaration: OutageDeclaration | None
    problem: ProofProblem | None = None
    detail: str = ""


def verify_proof(proof: Any, *, camera_ip: str, window: tuple[int, int], keys: Iterable[bytes]) -> ProofCheck:
    """One ``declaredOutages`` entry of a manifest: well formed, the manifest's camera, ``toMs``
    in the block's window [start, end), and signed by one of the camera's device keys."""
    try:
        d = from_proof(proof)
    except OutageError as exc:
        return ProofCheck(None, ProofProblem.INVALID, str(exc))
    if d.camera_ip != camera_ip:
        return ProofCheck(d, ProofProblem.INVALID, f"declared by camera {d.camera_ip[:64]!r}, block of {camera_ip!r}")
    if not window[0] <= d.to_ms < window[1]:
        return ProofCheck(d, ProofProblem.INVALID, f"outage ends at {d.to_ms}, outside the block's window {window}")
    control = d.control()
    if not any(control.verify(k) for k in keys):
        return ProofCheck(d, ProofProblem.SIGNATURE, f"outage after seq {d.after_seq}: no device key of the camera "
                                                     "verifies its signature")
    return ProofCheck(d)
