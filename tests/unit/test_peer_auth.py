"""Peer authentication rules (core.peer_auth) and the HTTP shell (node.peer_http) on a small
in-process ASGI app: signed requests in, signed responses out, every refusal a problem document."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from eth_account import Account
from fastapi import FastAPI, Request

from offchain.core import peer_auth as pa
from offchain.node.peer_http import (BodyLimit, CrashGuard, NodeRoster, PeerGate, PeerIdentity, PeerResponseRejected,
                                     PeerSigning)

BINDING = pa.ChainBinding(1337, "0x" + "ab" * 20)
NODE_A = Account.create()
NODE_B = Account.create()
OUTSIDER = Account.create()


def identity(acct) -> PeerIdentity:
    return PeerIdentity("0x" + bytes(acct.key).hex(), acct.address, BINDING)


def roster() -> NodeRoster:
    return NodeRoster(lambda: [NODE_A.address, NODE_B.address], initial=[NODE_A.address, NODE_B.address])


# ------------------------------------------------------------------------ pure rules
def test_request_text_binds_every_field():
    base = dict(binding=BINDING, method="POST", target="/peer/v1/repair", digest=pa.body_digest(b"{}"), time_ms=1, nonce="0" * 32)
    text = pa.request_text(**base)
    for field, other in [("method", "GET"), ("target", "/peer/v1/alarm"), ("digest", pa.body_digest(b"[]")),
                         ("time_ms", 2), ("nonce", "1" * 32), ("binding", pa.ChainBinding(1, BINDING.consortium))]:
        assert pa.request_text(**{**base, field: other}) != text, field
    assert "response" not in text.splitlines()[1]


def test_signature_recovers_the_signer_and_only_for_the_same_text():
    text = pa.request_text(BINDING, "POST", "/peer/v1/alarm", pa.body_digest(b"x"), 5, "a" * 32)
    headers = pa.sign_headers(identity(NODE_A).private_key, NODE_A.address, text, 5, "a" * 32)
    assert pa.verify(text, headers) == NODE_A.address
    with pytest.raises(pa.PeerAuthError) as err:
        pa.verify(text.replace("/alarm", "/repair"), headers)
    assert err.value.failure is pa.AuthFailure.BAD_SIGNATURE
    claimed_other = pa.SignedHeaders(NODE_B.address, 5, "a" * 32, headers.signature)
    with pytest.raises(pa.PeerAuthError):
        pa.verify(text, claimed_other)


@pytest.mark.parametrize("headers, failure", [
    ({}, pa.AuthFailure.MISSING),
    ({pa.HEADER_NODE: "bob", pa.HEADER_TIME: "1", pa.HEADER_NONCE: "a" * 32, pa.HEADER_SIGNATURE: "0x" + "1" * 130}, pa.AuthFailure.MALFORMED),
    ({pa.HEADER_NODE: NODE_A.address, pa.HEADER_TIME: "-1", pa.HEADER_NONCE: "a" * 32, pa.HEADER_SIGNATURE: "0x" + "1" * 130}, pa.AuthFailure.MALFORMED),
    ({pa.HEADER_NODE: NODE_A.address, pa.HEADER_TIME: "1", pa.HEADER_NONCE: "xyz", pa.HEADER_SIGNATURE: "0x" + "1" * 130}, pa.AuthFailure.MALFORMED),
    ({pa.HEADER_NODE: NODE_A.address, pa.HEADER_TIME: "1", pa.HEADER_NONCE: "a" * 32, pa.HEADER_SIGNATURE: "0x12"}, pa.AuthFailure.MALFORMED),
])
def test_header_shape(headers, failure):
    with pytest.raises(pa.PeerAuthError) as err:
        pa.parse_headers(headers)
    assert err.value.failure is failure


def test_garbage_signature_is_a_bad_signature_not_a_crash():
    text = "anything"
    headers = pa.SignedHeaders(NODE_A.address, 1, "a" * 32, "0x" + "00" * 65)
    with pytest.raises(pa.PeerAuthError) as err:
        pa.verify(text, headers)
    assert err.value.failure is pa.AuthFailure.BAD_SIGNATURE


def test_time_window_both_ways():
    pa.check_time(1_000_000, 1_030_000, 30_000)
    pa.check_time(1_030_000, 1_000_000, 30_000)
    for t in (969_999, 1_060_001):
        with pytest.raises(pa.PeerAuthError):
            pa.check_time(t, 1_000_000 + (30_000 if t > 1_000_000 else 0), 30_000)


def test_replay_guard_refuses_a_reused_nonce_within_the_window_and_stays_bounded():
    guard = pa.ReplayGuard(window_ms=1_000, capacity=3)
    guard.admit("0xA", "n1", 0, 0)
    with pytest.raises(pa.PeerAuthError) as err:
        guard.admit("0xa", "n1", 0, 500)
    assert err.value.failure is pa.AuthFailure.REPLAYED
    guard.admit("0xB", "n1", 0, 500)  # another signer's nonce is its own
    guard.admit("0xA", "n2", 0, 600)
    with pytest.raises(pa.PeerAuthError) as err:
        guard.admit("0xA", "n3", 0, 700)
    assert err.value.failure is pa.AuthFailure.REPLAY_CACHE_FULL
    guard.admit("0xA", "n3", 0, 1_601)  # the first ones have expired
    assert len(guard) <= 3


# ---------------------------------------------------------------- the HTTP shell
def peer_app(limit: int = 1024):
    app = FastAPI()

    @app.post("/peer/v1/echo")
    async def echo(request: Request):
        return {"peer": request.state.peer, "body": (await request.body()).decode()}

    @app.get("/peer/v1/crash")
    async def crash():
        raise RuntimeError("secret internals")

    @app.post("/open")
    async def open_route(request: Request):
        return {"size": len(await request.body())}

    @app.exception_handler(Exception)
    async def on_crash(_, exc):
        from offchain.node.problems import ProblemType, problem_body
        from fastapi.responses import Response
        return Response(problem_body(ProblemType.INTERNAL, "internal"), 500, media_type="application/problem+json")

    gate = PeerGate(app, identity(NODE_B), roster())
    return CrashGuard(BodyLimit(gate, limit)), gate


def client(app, acct=NODE_A, **kw) -> httpx.AsyncClient:
    auth = PeerSigning(identity(acct), roster(), **kw)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node", auth=auth)


def run(coro):
    return asyncio.run(coro)


def test_signed_request_reaches_the_app_with_its_signer_and_the_signed_response_is_believed():
    app, _ = peer_app()

    async def go():
        async with client(app) as c:
            r = await c.post("/peer/v1/echo?x=1", content=b"hello")
        return r

    r = run(go())
    assert r.status_code == 200
    assert r.json() == {"peer": NODE_A.address, "body": "hello"}
    assert r.headers[pa.HEADER_NODE] == NODE_B.address


def test_unsigned_request_is_401_problem_and_the_app_never_runs():
    app, _ = peer_app()

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as c:
            return await c.post("/peer/v1/echo", content=b"x")

    r = run(go())
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "https://frameledger.dev/problems/peer-auth-missing"


def test_valid_signature_of_a_non_node_is_403():
    app, _ = peer_app()

    async def go():
        async with client(app, acct=OUTSIDER) as c:
            return await c.post("/peer/v1/echo", content=b"x")

    with pytest.raises(PeerResponseRejected):
        # the 403 itself is unsigned, so the signing client refuses to believe it ...
        run(go())

    async def raw():
        # ... and a plain look at it shows the problem document
        text = pa.request_text(BINDING, "POST", "/peer/v1/echo", pa.body_digest(b"x"), pa_now(), "c" * 32)
        h = pa.sign_headers(identity(OUTSIDER).private_key, OUTSIDER.address, text, pa_now(), "c" * 32)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as c:
            return await c.post("/peer/v1/echo", content=b"x", headers=h.as_dict())

    r = run(raw())
    assert r.status_code == 403 and r.json()["type"].endswith("/peer-not-a-node")


def pa_now() -> int:
    from offchain.node.peer_http import now_ms

    return now_ms()


def signed_headers(body: bytes, path: str = "/peer/v1/echo", t: int | None = None, nonce: str = "d" * 32, acct=NODE_A):
    t = pa_now() if t is None else t
    text = pa.request_text(BINDING, "POST", path, pa.body_digest(body), t, nonce)
    return pa.sign_headers(identity(acct).private_key, acct.address, text, t, nonce).as_dict()


def post_raw(app, path: str, body: bytes, headers: dict):
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as c:
            return await c.post(path, content=body, headers=headers)

    return run(go())


def test_replayed_stale_and_tampered_requests_are_401():
    app, _ = peer_app()
    h = signed_headers(b"once")
    assert post_raw(app, "/peer/v1/echo", b"once", h).status_code == 200
    replay = post_raw(app, "/peer/v1/echo", b"once", h)
    assert replay.status_code == 401 and replay.json()["type"].endswith("/peer-auth-replayed")
    stale = post_raw(app, "/peer/v1/echo", b"old", signed_headers(b"old", t=pa_now() - 120_000, nonce="e" * 32))
    assert stale.status_code == 401 and stale.json()["type"].endswith("/peer-auth-stale")
    tampered = post_raw(app, "/peer/v1/echo", b"changed", signed_headers(b"orig", nonce="f" * 32))
    assert tampered.status_code == 401 and tampered.json()["type"].endswith("/peer-auth-signature")
    other_path = post_raw(app, "/peer/v1/echo", b"p", signed_headers(b"p", path="/peer/v1/other", nonce="9" * 32))
    assert other_path.status_code == 401


def test_forged_response_is_rejected_by_the_client():
    """A server that is not a consortium node (or alters the body) is not believed."""
    async def impostor(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"accepted": 99}'})

    async def go(app):
        async with client(app) as c:
            return await c.post("/peer/v1/repair", json={})

    with pytest.raises(PeerResponseRejected):
        run(go(impostor))

    # a real node's signed response with its body altered on the way
    app, _ = peer_app()

    async def altering(scope, receive, send):
        async def send_altered(m):
            if m["type"] == "http.response.body":
                m = {**m, "body": m["body"].replace(b"hello", b"HELLO")}
            await send(m)
        await app(scope, receive, send_altered)

    async def go2():
        async with client(altering) as c:
            return await c.post("/peer/v1/echo", content=b"hello")

    with pytest.raises(PeerResponseRejected):
        run(go2())


def test_non_peer_routes_are_not_signed_or_checked():
    app, _ = peer_app()

    async def go():
        async with client(app) as c:
            return await c.post("/open", content=b"abc")

    r = run(go())
    assert r.status_code == 200 and r.json() == {"size": 3} and pa.HEADER_SIGNATURE not in r.headers


def test_body_over_the_limit_is_413_declared_or_streamed():
    app, _ = peer_app(limit=1024)
    assert post_raw(app, "/open", b"x" * 1024, {}).json() == {"size": 1024}
    declared = post_raw(app, "/open", b"x" * 1025, {})
    assert declared.status_code == 413 and declared.json()["type"].endswith("/body-too-large")

    async def chunks():
        for _ in range(100):
            yield b"y" * 500

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as c:
            return await c.post("/open", content=chunks())

    streamed = run(go())
    assert streamed.status_code == 413
    assert streamed.headers["content-type"] == "application/problem+json"


def test_unexpected_exception_is_a_500_problem_without_traceback(caplog):
    app, _ = peer_app()

    async def go():
        async with client(app) as c:
            return await c.get("/peer/v1/crash")

    with caplog.at_level("ERROR", logger="offchain.node.peer_http"):
        r = run(go())
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/internal")
    assert "secret internals" not in r.text and "Traceback" not in r.text
    logged = [rec for rec in caplog.records if rec.getMessage() == "unhandled API error"]
    assert logged and logged[0].error == "RuntimeError" and logged[0].exc_info


def test_requests_beyond_the_inflight_limit_get_503_busy():
    from offchain.node.peer_http import InflightLimit

    release = asyncio.Event()

    async def slow(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = InflightLimit(slow, limit=2)

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as c:
            held = [asyncio.create_task(c.get("/x")) for _ in range(2)]
            while app.inflight < 2:
                await asyncio.sleep(0)
            extra = await c.get("/x")
            release.set()
            return extra, await asyncio.gather(*held)

    extra, held = run(go())
    assert extra.status_code == 503 and extra.json()["type"].endswith("/busy")
    assert [r.status_code for r in held] == [200, 200] and app.inflight == 0


def test_roster_rereads_the_chain_on_a_miss_at_most_once_per_interval_and_survives_a_dead_chain():
    calls = []
    answers = [[NODE_A.address, NODE_B.address], RuntimeError("chain down")]

    def fetch():
        calls.append(1)
        answer = answers[min(len(calls) - 1, len(answers) - 1)]
        if isinstance(answer, Exception):
            raise answer
        return answer

    r = NodeRoster(fetch, initial=[NODE_A.address], min_refresh_s=0.0, max_age_s=3600)
    assert run(r.is_node(NODE_A.address)) and calls == []  # a hit costs nothing
    assert run(r.is_node(NODE_B.address)) and len(calls) == 1  # newly registered: one re-read
    assert not run(r.is_node(OUTSIDER.address)) and len(calls) == 2  # the chain is down ...
    assert run(r.is_node(NODE_B.address))  # ... and the last list is kept
    r.min_refresh_s = 3600
    for _ in range(5):
        assert not run(r.is_node(OUTSIDER.address))
    assert len(calls) == 2  # misses within the interval do not reach the chain
