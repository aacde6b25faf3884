"""Single-use sign-in nonces and short-lived bearer tokens.

A nonce is issued by `GET /v1/auth/nonce`, lives `nonce_ttl_s` and is consumed by the first
sign-in that names it, whether that sign-in succeeds or not: a captured message can never be
replayed. Tokens are `base64url(payload).base64url(HMAC-SHA256(secret, payload))` with the
address and the expiry in the payload; the secret is per process unless configured, so a restart
signs everyone out. Both stores are bounded (see docs/SIGNING.md, limits).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass
from typing import Callable

Clock = Callable[[], float]


class AuthError(Exception):
    def __init__(self, code: str, detail: str, status: int = 401):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status


class NonceStore:
    def __init__(self, clock: Clock, ttl_s: float = 300, max_outstanding: int = 10_000):
        self._clock = clock
        self._ttl_s = ttl_s
        self._max = max_outstanding
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self) -> tuple[str, float]:
        now = self._clock()
        with self._lock:
            if len(self._nonces) >= self._max:
                self._nonces = {n: exp for n, exp in self._nonces.items() if exp > now}
            if len(self._nonces) >= self._max:
                raise AuthError("too-many-nonces", "too many sign-ins in progress; retry shortly", 429)
            nonce = secrets.token_hex(16)
            self._nonces[nonce] = now + self._ttl_s
        return nonce, now + self._ttl_s

    def consume(self, nonce: str) -> None:
        """Use a nonce up; raise AuthError if it was never issued, is used, or has expired."""
        with self._lock:
            expires = self._nonces.pop(nonce, None)
        if expires is None:
            raise AuthError("nonce-unknown", "the nonce was not issued by this server or is already used")
        if expires <= self._clock():
            raise AuthError("nonce-expired", "the nonce has expired; ask for a new one")


@dataclass(frozen=True)
class Token:
    address: str
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    MAX_TOKEN_CHARS = 512

    def __init__(self, clock: Clock, ttl_s: float = 900, secret: bytes | None = None):
        self._clock = clock
        self.ttl_s = ttl_s
        self._secret = secret or secrets.token_bytes(32)

    def issue(self, address: str) -> tuple[str, float]:
        expires = self._clock() + self.ttl_s
        payload = json.dumps({"sub": address, "exp": expires, "jti": secrets.token_hex(8)}, separators=(",", ":")).encode()
        mac = hmac.new(self._secret, payload, hashlib.sha256).digest()
        return f"{_b64(payload)}.{_b64(mac)}", expires

    def verify(self, token: str) -> Token:
        if len(token) > self.MAX_TOKEN_CHARS or token.count(".") != 1:
            raise AuthError("token-invalid", "the bearer token is malformed")
        body, mac = token.split(".")
        try:
            payload, given = _unb64(body), _unb64(mac)
        except (ValueError, TypeError):
            raise AuthError("token-invalid", "the bearer token is malformed") from None
        if not hmac.compare_digest(hmac.new(self._secret, payload, hashlib.sha256).digest(), given):
            raise AuthError("token-invalid", "the bearer token was not issued by this server")
        claims = json.loads(payload)
        if claims["exp"] <= self._clock():
            raise AuthError("token-expired", "the bearer token has expired; sign in again")
        return Token(address=claims["sub"], expires_at=claims["exp"])
