"""The live alarm stream (`GET /v1/alarms/stream`, server-sent events) from a real uvicorn server
through a real HTTP client: the snapshot, a risk warning raised and cleared on chain, heartbeats,
the bound on open streams, the token requirement, and the end of a removed member's stream."""

from __future__ import annotations

import json
import queue
import threading
import time

import httpx
import pytest

from api.app import create_app
from api.context import Settings
from api.streams import StreamSettings, diff
from api_fixtures import BANK, CAMS, CUSTOMER, DOMAIN, FOUNDER, NODE, Api, Clock, serve
from test_api import problem

pytestmark = pytest.mark.slow


def read_events(client: httpx.Client, headers: dict, out: queue.Queue, stop_on: str = "risk-cleared") -> None:
    """Parse the stream into (event, data) tuples ("heartbeat" for comments) until ``stop_on`` or
    `end`; leaving the `with` closes the connection."""
    with client.stream("GET", "/v1/alarms/stream", headers=headers, timeout=60) as r:
        out.put(("status", (r.status_code, r.headers.get("content-type"))))
        event, data = None, []
        for line in r.iter_lines():
            if line.startswith(":"):
                out.put(("heartbeat", line))
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and event:
                out.put((event, json.loads("\n".join(data))))
                if event in (stop_on, "end"):
                    return
                event, data = None, []


def next_event(q: queue.Queue, name: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout  # a wait for the event, not a timing assertion
    while time.monotonic() < deadline:
        try:
            event, data = q.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if event == name:
            return data
    raise AssertionError(f"no {name} event")


@pytest.fixture
def stream_server(chain_env, devchain, tmp_path, api):
    path = tmp_path / "stream-deployment.json"
    path.write_text(json.dumps(chain_env.deployment.record))
    app = create_app(devchain.rpc_url, str(path), settings=Settings(siwe_domain=DOMAIN),
                     stream=StreamSettings(max_streams=1, poll_s=0.1, heartbeat_s=0.3))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        yield Api(http=client, chain=chain_env, clock=Clock()), client, app


def test_the_stream_follows_risk_warnings_with_heartbeats_and_bounds(stream_server):
    remote, client, app = stream_server
    problem(client.get("/v1/alarms/stream"), 401, "token-missing")
    bank = remote.token(BANK)
    q: queue.Queue = queue.Queue()
    reader = threading.Thread(target=read_events, args=(client, bank, q), daemon=True)
    reader.start()
    status, ctype = next_event(q, "status")
    assert status == 200 and ctype.startswith("text/event-stream")
    assert next_event(q, "snapshot") == {"active": []}
    assert next_event(q, "heartbeat") == ": heartbeat"

    # one stream is the limit here: a second one is refused while the first is open
    problem(client.get("/v1/alarms/stream", headers=remote.token(CUSTOMER)), 429, "too-many-streams")

    remote.chain.ledger(NODE).raise_risk(CAMS[0], "stream unhealthy at every node", 60_000)
    raised = next_event(q, "risk-raised")
    assert raised["cameraId"] == "0x" + CAMS[0].hex() and raised["reason"] == "stream unhealthy at every node"
    assert [a["cameraId"] for a in client.get("/v1/alarms", headers=bank).json()] == [raised["cameraId"]]
    remote.chain.ledger(NODE).clear_risk(CAMS[0])
    cleared = next_event(q, "risk-cleared")
    assert cleared["cameraId"] == raised["cameraId"] and cleared["previous"]["reason"] == raised["reason"]
    reader.join(timeout=30)
    assert not reader.is_alive()

    # the closed stream gave its slot back; a member removed meanwhile is told and let go
    deadline = time.monotonic() + 60
    while app.state.alarm_streams.open and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.alarm_streams.open == 0
    customer = remote.token(CUSTOMER)
    q2: queue.Queue = queue.Queue()
    second = threading.Thread(target=read_events, args=(client, customer, q2), daemon=True)
    second.start()
    assert next_event(q2, "snapshot") == {"active": []}
    remote.chain.consortium(FOUNDER).remove_member(remote.addr(CUSTOMER))
    assert next_event(q2, "end") == {"reason": "not-a-member"}
    second.join(timeout=30)
    assert not second.is_alive()


def test_diff_names_raised_changed_and_cleared_warnings():
    w = {"cameraId": "0xa", "active": True, "raisedAt": 1, "sinceMs": 10, "raisedBy": "0xn", "reason": "r"}
    assert diff({}, {"0xa": w}) == [("risk-raised", w)]
    assert diff({"0xa": w}, {"0xa": dict(w)}) == []
    again = {**w, "raisedAt": 2, "sinceMs": 20}
    assert diff({"0xa": w}, {"0xa": again}) == [("risk-raised", again)]
    assert diff({"0xa": w}, {}) == [("risk-cleared", {"cameraId": "0xa", "previous": w})]
