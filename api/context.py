"""What the routes share: the chain clients, the relayer, the auth stores and the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Callable

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from offchain.chain.client import Signer
from offchain.chain.deployer import Deployment
from offchain.chain.ledger import ConsortiumClient, VideoLedgerClient
from offchain.chain.sessions import SigningSessionClient

from .auth import AuthError, NonceStore, TokenIssuer
from .problems import Problem


@dataclass(frozen=True)
class Settings:
    siwe_domain: str = "127.0.0.1:8000"
    token_ttl_s: float = 900
    nonce_ttl_s: float = 300
    siwe_max_age_s: float = 600
    max_nonces: int = 10_000
    max_blocks_per_page: int = 1000


@dataclass
class Context:
    deployment: Deployment
    consortium: ConsortiumClient
    ledger: VideoLedgerClient
    sessions: SigningSessionClient | None  # None: this deployment has no SigningSession
    relayer: Signer | None  # None: read-only API, write routes answer 503
    nonces: NonceStore
    tokens: TokenIssuer
    settings: Settings
    clock: Callable[[], float]

    def session_client(self) -> SigningSessionClient:
        if self.sessions is None:
            raise Problem(503, "sessions-unavailable", "this deployment has no SigningSession contract")
        return self.sessions

    def relaying_sessions(self) -> SigningSessionClient:
        client = self.session_client()
        if self.relayer is None:
            raise Problem(503, "relayer-unavailable", "this API has no relayer account to send transactions")
        return client.as_signer(self.relayer)


_bearer = HTTPBearer(auto_error=False, description="a token from POST /v1/auth/siwe")


def caller_dependency(ctx: Context):
    """A dependency that yields the signed-in member's address, or answers 401/403."""

    def caller(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise AuthError("token-missing", "sign in first: Authorization: Bearer <token>")
        token = ctx.tokens.verify(credentials.credentials)
        if not ctx.consortium.is_member(token.address):  # membership is re-read: removal takes effect at once
            raise AuthError("not-a-member", f"{token.address} is no longer a consortium member", 403)
        return token.address

    return caller
