"""Peer authentication rules (pure): what a node signs for a peer request or response, how the
headers carrying it are read, and the time-window and nonce (replay) rules.

Scheme: EIP-191 ``personal_sign`` (version 0x45) over a canonical text, signed with the node's
on-chain account key. Chosen over EIP-712 because the signer is always a node process, never a
wallet showing typed fields to a person; a line-per-field text is simpler to reproduce in any
language and to read in a log, and domain separation comes from the first lines (scheme, kind,
chain id and Consortium address), so a peer signature is never valid as a transaction, as a
signature for another deployment, or a request signature as a response one.

Request text (lines joined by ``\\n``)::

    FrameLedger-peer-v1
    request
    <chain id>:<Consortium address, lower case>
    <METHOD>
    <path>[?<query>]
    <SHA-256 of the body, hex>
    <time, epoch ms>
    <nonce, 32 hex digits>

A response text has ``response`` as its kind, then the same chain line, the status code, the
request's method and path, the SHA-256 of the response body, the response time and the *request's*
nonce: a response is bound to the one request it answers, so an old response cannot be replayed.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from eth_account import Account
from eth_account.messages import encode_defunct

SCHEME = "FrameLedger-peer-v1"
HEADER_NODE = "x-frameledger-node"
HEADER_TIME = "x-frameledger-time"
HEADER_NONCE = "x-frameledger-nonce"
HEADER_SIGNATURE = "x-frameledger-signature"
DEFAULT_WINDOW_MS = 30_000
DEFAULT_NONCE_CAPACITY = 100_000

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_NONCE = re.compile(r"[0-9a-f]{32}")
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")
_TIME = re.compile(r"[0-9]{1,15}")


class AuthFailure(Enum):
    """Why a signed peer message is not believed; the value is the problem type's suffix."""

    MISSING = "peer-auth-missing"
    MALFORMED = "peer-auth-malformed"
    STALE = "peer-auth-stale"
    BAD_SIGNATURE = "peer-auth-signature"
    REPLAYED = "peer-auth-replayed"
    NOT_A_NODE = "peer-not-a-node"
    REPLAY_CACHE_FULL = "peer-auth-busy"


class PeerAuthError(Exception):
    def __init__(self, failure: AuthFailure, detail: str):
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


class HeaderLookup(Protocol):
    """Anything with a case-insensitive ``get`` (httpx and starlette headers)."""

    def get(self, key: str) -> str | None: ...


@dataclass(frozen=True)
class ChainBinding:
    """Which deployment a signature belongs to."""

    chain_id: int
    consortium: str

    def line(self) -> str:
        return f"{self.chain_id}:{self.consortium.lower()}"


@dataclass(frozen=True)
class SignedHeaders:
    node: str  # the claimed signer, checksummed as sent
    time_ms: int
    nonce: str
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {HEADER_NODE: self.node, HEADER_TIME: str(self.time_ms), HEADER_NONCE: self.nonce,
                HEADER_SIGNATURE: self.signature}


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def request_text(binding: ChainBinding, method: str, target: str, digest: str, time_ms: int, nonce: str) -> str:
    return "\n".join([SCHEME, "request", binding.line(), method.upper(), target, digest, str(time_ms), nonce])


def response_text(binding: ChainBinding, status: int, method: str, target: str, digest: str, time_ms: int,
                  request_nonce: str) -> str:
    return "\n".join([SCHEME, "response", binding.line(), str(status), f"{method.upper()} {target}", digest,
                      str(time_ms), request_nonce])


def sign_text(private_key: str, text: str) -> str:
    signed = Account.sign_message(encode_defunct(text=text), private_key=private_key)
    return "0x" + bytes(signed.signature).hex()


def sign_headers(private_key: str, address: str, text: str, time_ms: int, nonce: str) -> SignedHeaders:
    return SignedHeaders(address, time_ms, nonce, sign_text(private_key, text))


def parse_headers(headers: HeaderLookup) -> SignedHeaders:
    """The four authentication headers, checked for shape only (no signature check yet)."""
    values = {h: headers.get(h) for h in (HEADER_NODE, HEADER_TIME, HEADER_NONCE, HEADER_SIGNATURE)}
    absent = [h for h, v in values.items() if not v]
    if absent:
        raise PeerAuthError(AuthFailure.MISSING, f"missing header(s): {', '.join(absent)}")
    node, time_s, nonce, signature = (str(values[h]).strip() for h in values)
    if not _ADDRESS.fullmatch(node):
        raise PeerAuthError(AuthFailure.MALFORMED, f"{HEADER_NODE} is not a 0x address")
    if not _TIME.fullmatch(time_s):
        raise PeerAuthError(AuthFailure.MALFORMED, f"{HEADER_TIME} is not epoch milliseconds")
    if not _NONCE.fullmatch(nonce):
        raise PeerAuthError(AuthFailure.MALFORMED, f"{HEADER_NONCE} is not 32 lower-case hex digits")
    if not _SIGNATURE.fullmatch(signature):
        raise PeerAuthError(AuthFailure.MALFORMED, f"{HEADER_SIGNATURE} is not a 65-byte 0x signature")
    return SignedHeaders(node, int(time_s), nonce, signature)


def check_time(time_ms: int, now_ms: int, window_ms: int) -> None:
    if abs(time_ms - now_ms) > window_ms:
        raise PeerAuthError(AuthFailure.STALE, f"signed at {time_ms}, now {now_ms}: outside the ±{window_ms} ms window")


def recover_signer(text: str, signature: str) -> str:
    """The checksummed address that signed `text`; a signature that recovers nothing raises."""
    try:
        return str(Account.recover_message(encode_defunct(text=text), signature=signature))
    except Exception as exc:  # noqa: BLE001 - eth-keys raises several types for a bad signature
        raise PeerAuthError(AuthFailure.BAD_SIGNATURE, "signature does not recover an address") from exc


def verify(text: str, headers: SignedHeaders) -> str:
    """The signer, which must be the claimed node; else BAD_SIGNATURE."""
    signer = recover_signer(text, headers.signature)
    if signer.lower() != headers.node.lower():
        raise PeerAuthError(AuthFailure.BAD_SIGNATURE, "signature is not by the node named in the headers")
    return signer


class ReplayGuard:
    """Nonces seen within the time window, bounded: an entry expires `window_ms` after the
    message's time plus the window (after which the time check refuses the message anyway).
    When full of unexpired nonces, new messages are refused (REPLAY_CACHE_FULL) rather than the
    oldest forgotten, so a replay can never slip in through eviction."""

    def __init__(self, window_ms: int = DEFAULT_WINDOW_MS, capacity: int = DEFAULT_NONCE_CAPACITY):
        self.window_ms = window_ms
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()  # (signer, nonce) -> forget after (ms)

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now_ms: int) -> None:
        # Entries are appended in arrival order; expiry times are arrival-ordered within 2 windows,
        # so scanning from the front until the first live one is enough to stay bounded.
        while self._seen:
            key, until = next(iter(self._seen.items()))
            if until > now_ms:
                break
            self._seen.popitem(last=False)

    def admit(self, signer: str, nonce: str, time_ms: int, now_ms: int) -> None:
        self._expire(now_ms)
        key = (signer.lower(), nonce)
        if key in self._seen:
            raise PeerAuthError(AuthFailure.REPLAYED, "nonce already used within the window")
        if len(self._seen) >= self.capacity:
            raise PeerAuthError(AuthFailure.REPLAY_CACHE_FULL, "too many signed requests within the window")
        self._seen[key] = max(time_ms, now_ms) + self.window_ms
