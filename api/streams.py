"""The live alarm stream (S4): `GET /v1/alarms/stream`, server-sent events of risk warnings.

One way to read warnings: `read_alarms` (the same function `GET /v1/alarms` answers with), the
risk register of every whitelisted camera. The stream polls it every `poll_s` and sends

    event: snapshot       data: {"active": [warning, ...]}           first, the warnings active now
    event: risk-raised    data: warning                              a camera's warning became active
    event: risk-cleared   data: {"cameraId": ..., "previous": warning}
    event: end            data: {"reason": "token-expired" | "not-a-member"}, then the stream closes
    event: error          data: {"type": "urn:frameledger:problem:chain-unavailable", ...}  (keeps polling)
    : heartbeat           a comment every `heartbeat_s` when nothing else was sent (keeps proxies open)

Reading state rather than following `RiskRaised` logs makes a missed poll harmless and a reorg
invisible: the next poll says what the chain says now (the monitor, `frameledger monitor`, is the
place for every event with a checkpoint). A warning raised again with a new `sinceMs` or reason
while active is a new `risk-raised`. At most `max_streams` streams are open at once (429
`too-many-streams`); each ends when its token expires or its caller stops being a member.
"""

# no `from __future__ import annotations`: FastAPI resolves the routes' local Annotated aliases at runtime

import asyncio
import json
import logging
import threading
from dataclasses import dataclass
from typing import Annotated, Any, AsyncIterator, Callable

import requests
from fastapi import Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from web3.exceptions import Web3Exception

from offchain.chain.ledger import ConsortiumClient, VideoLedgerClient

from .context import Context
from .problems import TYPE_PREFIX, Problem

log = logging.getLogger(__name__)


def read_alarms(consortium: ConsortiumClient, ledger: VideoLedgerClient) -> list[dict[str, Any]]:
    """The active risk warnings of every whitelisted camera, in whitelist order."""
    out = []
    for cid in consortium.camera_ids():
        r = ledger.risk(cid)
        if r["active"]:
            out.append({"cameraId": "0x" + cid.hex(), **r})
    return out


@dataclass(frozen=True)
class StreamSettings:
    max_streams: int = 16      # open alarm streams at once (each polls the chain)
    poll_s: float = 1.0        # how often the risk register is read
    heartbeat_s: float = 15.0  # a comment when nothing was sent for this long


class StreamSlots:
    """A bounded count of open streams."""

    def __init__(self, limit: int):
        self._limit, self._open, self._lock = limit, 0, threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            if self._open >= self._limit:
                raise Problem(429, "too-many-streams", f"{self._limit} alarm streams are open; retry later",
                              headers={"Retry-After": "10"})
            self._open += 1

    def release(self) -> None:
        with self._lock:
            self._open -= 1

    @property
    def open(self) -> int:
        return self._open


def sse(event: str | None, data: Any, event_id: int | None = None) -> str:
    lines = ([f"id: {event_id}"] if event_id is not None else []) + ([f"event: {event}"] if event else [])
    return "\n".join(lines + [f"data: {json.dumps(data, separators=(',', ':'))}"]) + "\n\n"


def diff(before: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The events that take the stream from one reading to the next (pure)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for cam, warning in now.items():
        old = before.get(cam)
        if old is None or (old["sinceMs"], old["reason"], old["raisedAt"]) != (
                warning["sinceMs"], warning["reason"], warning["raisedAt"]):
            out.append(("risk-raised", warning))
    out += [("risk-cleared", {"cameraId": cam, "previous": old}) for cam, old in before.items() if cam not in now]
    return out


class _AlarmStream:
    """One client's stream: poll, diff, send; end on disconnect, token expiry or lost membership."""

    def __init__(self, ctx: Context, settings: StreamSettings, request: Request, address: str, expires_at: float):
        self.ctx, self.settings, self.request = ctx, settings, request
        self.address, self.expires_at = address, expires_at
        self.next_id = 0

    def _event(self, event: str, data: Any) -> str:
        self.next_id += 1
        return sse(event, data, self.next_id)

    def _read(self) -> tuple[bool, list[dict[str, Any]]]:
        return self.ctx.consortium.is_member(self.address), read_alarms(self.ctx.consortium, self.ctx.ledger)

    async def events(self, release: Callable[[], None]) -> AsyncIterator[str]:
        known: dict[str, dict[str, Any]] | None = None
        quiet = 0.0
        try:
            yield "retry: 2000\n\n"
            while not await self.request.is_disconnected():
                if self.ctx.clock() >= self.expires_at:
                    yield self._event("end", {"reason": "token-expired"})
                    return
                try:
                    member, alarms = await run_in_threadpool(self._read)
                except (requests.exceptions.RequestException, Web3Exception) as exc:
                    log.warning("alarm stream: chain read failed: %s", exc)
                    yield self._event("error", {"type": TYPE_PREFIX + "chain-unavailable", "status": 503,
                                                "detail": "the chain did not answer; retrying"})
                    member, alarms = True, None
                if not member:
                    yield self._event("end", {"reason": "not-a-member"})
                    return
                if alarms is not None:
                    now = {a["cameraId"]: a for a in alarms}
                    out = [("snapshot", {"active": alarms})] if known is None else diff(known, now)
                    known = now
                    for event, data in out:
                        yield self._event(event, data)
                    quiet = 0.0 if out else quiet
                if quiet >= self.settings.heartbeat_s:
                    yield ": heartbeat\n\n"
                    quiet = 0.0
                await asyncio.sleep(self.settings.poll_s)
                quiet += self.settings.poll_s
        finally:
            release()


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    done = threading.Event()
    lock = threading.Lock()

    def call() -> None:
        with lock:
            if done.is_set():
                return
            done.set()
        fn()

    return call


def install(app: FastAPI, ctx: Context, caller: Callable[..., str], settings: StreamSettings) -> StreamSlots:
    slots = StreamSlots(settings.max_streams)
    bearer = HTTPBearer(auto_error=False, description="a token from POST /v1/auth/siwe")

    def signed_in(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> tuple[str, float]:
        address = caller(credentials)  # 401/403 as every route
        assert credentials is not None
        return address, ctx.tokens.verify(credentials.credentials).expires_at

    @app.get("/v1/alarms/stream", tags=["alarms"], response_class=StreamingResponse,
             summary="Risk warnings raised and cleared, live (server-sent events)",
             responses={200: {"content": {"text/event-stream": {"example":
                        "event: snapshot\ndata: {\"active\":[]}\n\nevent: risk-raised\ndata: {\"cameraId\":\"0x…\","
                        "\"active\":true,\"raisedAt\":1764576000,\"sinceMs\":1764575990000,\"raisedBy\":\"0x…\","
                        "\"reason\":\"stream unhealthy at every node\"}\n\n: heartbeat\n\n"}},
                        "description": "an event stream; see docs/API.md"},
                        429: {"description": "too-many-streams"}})
    async def stream(request: Request, who: Annotated[tuple[str, float], Depends(signed_in)]) -> StreamingResponse:
        slots.acquire()
        release = _once(slots.release)  # by the stream's end, or after the response if it never started
        s = _AlarmStream(ctx, settings, request, *who)
        return StreamingResponse(s.events(release), media_type="text/event-stream", background=BackgroundTask(release),
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return slots
