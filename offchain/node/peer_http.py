"""The HTTP shell around the peer-authentication rules of `core.peer_auth`, and the node API's
outer guards:

* `BodyLimit` caps every request body (Content-Length up front, streamed bytes as they arrive);
* `PeerGate` authenticates every `/peer/v1/*` request (signed by a registered consortium node,
  fresh, nonce unused) and signs every response it lets through;
* `CrashGuard` turns anything unexpected into a 500 problem document, logged, never a traceback
  in a body;
* `InflightLimit` answers 503 once too many requests are in flight;
* `PeerSigning` (an httpx auth) signs this node's peer requests and verifies the responses.

Order, outermost first: CrashGuard, InflightLimit, BodyLimit, PeerGate, the FastAPI app.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, AsyncGenerator, Awaitable, Callable, Generator

import httpx

from ..core import peer_auth as pa
from .problems import ProblemType, problem_asgi_messages

log = logging.getLogger(__name__)

PEER_PREFIX = "/peer/v1/"
MAX_ALARM_SEQS = 4_096  # seqs per alarm message (a larger hole is sent as several messages)
MAX_REPAIR_PACKETS = 4_096  # packets per repair message

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_FAILURE_PROBLEM = {f: ProblemType.by_code(f.value) for f in pa.AuthFailure}


def now_ms() -> int:
    return int(time.time() * 1000)


def new_nonce() -> str:
    return secrets.token_hex(16)


class NodeRoster:
    """Which addresses are consortium nodes: the node's own reading of `Consortium.nodes()`,
    cached; re-read on a miss (at most every `min_refresh_s`, so unknown signers cannot cause an
    RPC flood) and when older than `max_age_s` (so a removed node loses access)."""

    def __init__(self, fetch: Callable[[], list[str]], initial: list[str] | None = None,
                 min_refresh_s: float = 2.0, max_age_s: float = 60.0):
        self.fetch = fetch
        self.min_refresh_s = min_refresh_s
        self.max_age_s = max_age_s
        self._nodes = {a.lower() for a in initial or []}
        self._read_at = time.monotonic() if initial is not None else 0.0
        self._lock = asyncio.Lock()

    def knows(self, address: str) -> bool:
        return address.lower() in self._nodes

    async def is_node(self, address: str) -> bool:
        age = time.monotonic() - self._read_at
        if age > self.max_age_s or (not self.knows(address) and age >= self.min_refresh_s):
            await self._refresh()
        return self.knows(address)

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at < self.min_refresh_s:
                return  # another request refreshed meanwhile
            self._read_at = time.monotonic()
            try:
                self._nodes = {a.lower() for a in await asyncio.to_thread(self.fetch)}
            except Exception as exc:  # noqa: BLE001 - chain down: keep the last known list
                log.warning("node list refresh failed", extra={"error": type(exc).__name__})


@dataclass
class PeerIdentity:
    """This node's signing identity and the deployment its signatures belong to."""

    private_key: str
    address: str
    binding: pa.ChainBinding


def _target(scope: Scope) -> str:
    raw = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string") or b""
    return (raw + (b"?" + query if query else b"")).decode("latin-1")


async def _send_all(send: Send, messages: list[Message]) -> None:
    for m in messages:
        await send(m)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuses a request body over `limit` bytes with 413: a declared Content-Length at once,
    a streamed body as soon as the count passes the limit (the app then sees a disconnect), so
    no more than `limit` bytes (plus one chunk) are ever held for a request."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _send_all(send, problem_asgi_messages(
                ProblemType.BODY_TOO_LARGE, f"declared body of {declared.decode('latin-1')[:20]} bytes; limit {self.limit}"))
        received = 0
        answered = False

        async def counting_receive() -> Message:
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    answered = True
                    await _send_all(send, problem_asgi_messages(
                        ProblemType.BODY_TOO_LARGE, f"body over the {self.limit}-byte limit"))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not answered:  # after our 413, whatever the app answers is dropped
                await send(message)

        await self.app(scope, counting_receive, guarded_send)


class InflightLimit:
    """At most `limit` requests handled at once; one more is answered 503 `busy` at once, so the
    memory held for request bodies is bounded by `limit` x the body limit."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.inflight >= self.limit:
            return await _send_all(send, problem_asgi_messages(ProblemType.BUSY, f"more than {self.limit} requests in flight"))
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1


class CrashGuard:
    """Anything the app raises becomes a 500 problem document (if nothing was sent yet) and one
    structured log line with the traceback; the client never sees a traceback."""

    def __init__(self, app: ASGIApp, node_name: str = ""):
        self.app = app
        self.node_name = node_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last line of defence of the API
            log.error("unhandled API error", exc_info=True, extra={
                "node": self.node_name, "method": scope.get("method"), "path": scope.get("path"),
                "error": type(exc).__name__})
            if not started:
                await _send_all(send, problem_asgi_messages(ProblemType.INTERNAL, "internal error; see the node log"))


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client went away (or BodyLimit refused it)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class PeerGate:
    """Every `/peer/v1/*` request must be signed by a registered consortium node, within the time
    window, with an unused nonce; else 401 (no or bad signature) or 403 (valid signature, not a
    node; also, before the body is read, a request that names a non-node), and the app never
    sees it. Admitted requests reach the app with the signer in
    `scope["state"]["peer"]`; their responses are signed by this node."""

    def __init__(self, app: ASGIApp, identity: PeerIdentity, roster: NodeRoster, window_ms: int = pa.DEFAULT_WINDOW_MS,
                 nonce_capacity: int = pa.DEFAULT_NONCE_CAPACITY, clock: Callable[[], int] = now_ms):
        self.app = app
        self.identity = identity
        self.roster = roster
        self.window_ms = window_ms
        self.replay = pa.ReplayGuard(window_ms, nonce_capacity)
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PEER_PREFIX):
            return await self.app(scope, receive, send)
        try:
            headers = pa.parse_headers(_Headers(scope))
            pa.check_time(headers.time_ms, self.clock(), self.window_ms)
            if not await self.roster.is_node(headers.node):
                # Refused before a byte of the body is read: an anonymous client cannot make
                # the node buffer a body by naming an address that is not a node.
                raise pa.PeerAuthError(pa.AuthFailure.NOT_A_NODE, f"{headers.node} is not a registered consortium node")
        except pa.PeerAuthError as exc:
            return await self._refuse(send, exc)
        body = await _read_body(receive)
        if body is None:
            return  # BodyLimit answered already, or the client left
        try:
            signer = await self._authenticate(scope, headers, body)
        except pa.PeerAuthError as exc:
            return await self._refuse(send, exc)
        scope.setdefault("state", {})["peer"] = signer
        await self.app(scope, _replay(body), self._signing_send(scope, send, headers.nonce))

    async def _authenticate(self, scope: Scope, headers: pa.SignedHeaders, body: bytes) -> str:
        text = pa.request_text(self.identity.binding, scope["method"], _target(scope), pa.body_digest(body),
                               headers.time_ms, headers.nonce)
        signer = pa.verify(text, headers)
        if not await self.roster.is_node(signer):
            raise pa.PeerAuthError(pa.AuthFailure.NOT_A_NODE, f"{signer} is not a registered consortium node")
        self.replay.admit(signer, headers.nonce, headers.time_ms, self.clock())
        return signer

    async def _refuse(self, send: Send, exc: pa.PeerAuthError) -> None:
        await _send_all(send, problem_asgi_messages(_FAILURE_PROBLEM[exc.failure], exc.detail))

    def _signing_send(self, scope: Scope, send: Send, request_nonce: str) -> Send:
        """Holds the response until its body is complete, then sends it with signature headers."""
        start: Message | None = None
        chunks: list[bytes] = []

        async def signing_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            t = self.clock()
            text = pa.response_text(self.identity.binding, start["status"], scope["method"], _target(scope),
                                    pa.body_digest(body), t, request_nonce)
            signed = pa.sign_headers(self.identity.private_key, self.identity.address, text, t, request_nonce)
            extra = [(k.encode(), v.encode()) for k, v in signed.as_dict().items()]
            kept = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": kept + extra + [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        return signing_send


class _Headers:
    """Case-insensitive lookup over ASGI scope headers (latin-1, as HTTP headers are)."""

    def __init__(self, scope: Scope):
        self._h = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}

    def get(self, key: str) -> str | None:
        return self._h.get(key.lower())


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # like a real connection: nothing more until it closes
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class PeerResponseRejected(httpx.HTTPError):
    """A peer's response was not signed by a consortium node for this very request."""


class PeerSigning(httpx.Auth):
    """httpx auth for this node's HTTP client: a request to a `/peer/v1/*` path is signed, and its
    response is believed only when signed by a registered consortium node, fresh, and bound to
    this request's nonce (else `PeerResponseRejected`, an `httpx.HTTPError`). Other requests
    (webhooks, the alarm centre's reads) go out untouched."""

    requires_request_body = True
    requires_response_body = True

    def __init__(self, identity: PeerIdentity, roster: NodeRoster, window_ms: int = pa.DEFAULT_WINDOW_MS,
                 clock: Callable[[], int] = now_ms):
        self.identity = identity
        self.roster = roster
        self.window_ms = window_ms
        self.clock = clock

    def _sign(self, request: httpx.Request) -> str:
        nonce, t = new_nonce(), self.clock()
        target = request.url.raw_path.decode("latin-1")
        text = pa.request_text(self.identity.binding, request.method, target, pa.body_digest(request.content), t, nonce)
        request.headers.update(pa.sign_headers(self.identity.private_key, self.identity.address, text, t, nonce).as_dict())
        return nonce

    def _check(self, request: httpx.Request, response: httpx.Response, nonce: str) -> str:
        """The response's signer (to be checked against the roster); raises if the signature fails."""
        try:
            headers = pa.parse_headers(response.headers)
            pa.check_time(headers.time_ms, self.clock(), self.window_ms)
            if headers.nonce != nonce:
                raise pa.PeerAuthError(pa.AuthFailure.BAD_SIGNATURE, "response answers another request")
            text = pa.response_text(self.identity.binding, response.status_code, request.method,
                                    request.url.raw_path.decode("latin-1"), pa.body_digest(response.content),
                                    headers.time_ms, nonce)
            return pa.verify(text, headers)
        except pa.PeerAuthError as exc:
            raise PeerResponseRejected(f"{request.url}: {exc.failure.value}: {exc.detail}") from None

    def _not_a_node(self, request: httpx.Request, signer: str) -> PeerResponseRejected:
        return PeerResponseRejected(f"{request.url}: response signed by {signer}, not a consortium node")

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not request.url.path.startswith(PEER_PREFIX):
            yield request
            return
        nonce = self._sign(request)
        response = yield request
        response.read()
        signer = self._check(request, response, nonce)
        if not self.roster.knows(signer):
            raise self._not_a_node(request, signer)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not request.url.path.startswith(PEER_PREFIX):
            yield request
            return
        nonce = self._sign(request)
        response = yield request
        await response.aread()
        signer = self._check(request, response, nonce)
        if not await self.roster.is_node(signer):
            raise self._not_a_node(request, signer)
