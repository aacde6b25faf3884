"""The node's HTTP surface against a real node process (real Anvil, contracts, SQLite, store):
peer authentication (signed by a registered node or refused), bad input answered by problem
documents, bodies capped, and schemathesis over the whole API."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
from eth_account import Account
import pytest
from ingest_client import IngestClient

from offchain.core import packet as pk
from offchain.core.block import camera_id
from offchain.core.cid import cid_from_digest
from offchain.node.cluster import Cluster
from offchain.node.peer_http import PeerResponseRejected

from peer_clients import raw_post, signed_headers, signing_client

CAMERA = "10.9.0.1"
AUTHORITY, BANK, CUSTOMER, OUTSIDER = 3, 4, 5, 9  # Anvil accounts: three nodes (chain/consortium.json), a stranger
PROBLEMS = "https://frameledger.dev/problems/"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """node-bank running alone, holding frames 0-4 of one whitelisted camera."""
    cluster = Cluster(tmp_path_factory.mktemp("nodehttp"), settings={"store_fsync": "none"})
    try:
        cluster.start_chain()
        key = cluster.register_camera(CAMERA, 1, b"g")
        cluster.seal_genesis()
        cluster.configure_nodes()
        bank = cluster.node("node-bank")
        cluster.start_node(bank)
        t0 = int(time.time() * 1000) - 5_000
        packets = [pk.encode_packet(key, CAMERA, seq, t0 + 40 * seq, seq == 0, f"frame {seq}".encode() * 50) for seq in range(5)]
        camera = IngestClient(bank.ingest)  # the signed handshake, then the frames, acknowledged
        camera.hello(key, CAMERA)
        for p in packets:
            camera.send(p)
        camera.wait_ack(4)
        camera.close()
        deadline = time.monotonic() + 20
        while len(cluster.api(bank, f"/api/v1/frames/{CAMERA}")) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield cluster, bank, packets, key
    finally:
        cluster.stop()


def url(node, path: str) -> str:
    return node.config.api_url + path


def is_problem(r: httpx.Response, status: int, code: str) -> bool:
    body = r.json()
    return (r.status_code == status and r.headers["content-type"] == "application/problem+json"
            and body["type"] == PROBLEMS + code and body["status"] == status and {"title", "detail"} <= set(body))


PEER_POSTS = ["/peer/v1/alarm", "/peer/v1/alarm/clear", "/peer/v1/repair", "/peer/v1/alarms", "/peer/v1/alarms/clear"]


def alarm(node, seqs, hops=1, **extra):
    peers = node.config.peers
    return {"alarmId": f"t-{time.time_ns()}", "origin": peers[0], "originName": "node-authority", "camera": CAMERA,
            "cameraId": "0x" + camera_id(CAMERA).hex(),
            "seqs": seqs, "hops": hops, **extra}


# ----------------------------------------------------------------- authentication
@pytest.mark.parametrize("path", PEER_POSTS)
def test_unsigned_peer_post_is_401_and_changes_nothing(live, path):
    cluster, bank, _, _ = live
    before = cluster.api(bank, "/api/v1/status")["counters"]
    r = httpx.post(url(bank, path), json={"alarmId": "x", "from": "mallory", "packets": []}, timeout=10)
    assert is_problem(r, 401, "peer-auth-missing")
    assert cluster.api(bank, "/api/v1/status")["counters"] == before
    assert "mallory" not in {rep["peer"] for rep in cluster.api(bank, "/api/v1/peer-reports")}


def test_raw_frames_and_blocks_only_for_consortium_nodes(live):
    cluster, bank, packets, _ = live
    frame_path = f"/peer/v1/frames/{CAMERA}/2"
    cid = cid_from_digest(pk.decode_packet(packets[2]).sha256)
    for path in (frame_path, f"/peer/v1/blocks/{cid}"):
        assert is_problem(httpx.get(url(bank, path), timeout=10), 401, "peer-auth-missing")
        stranger = httpx.get(url(bank, path), headers=signed_headers(cluster, OUTSIDER, "GET", path, b""), timeout=10)
        assert is_problem(stranger, 403, "peer-not-a-node")
    with signing_client(cluster, AUTHORITY) as peer:
        frame = peer.get(url(bank, frame_path))
        block = peer.get(url(bank, f"/peer/v1/blocks/{cid}"))
    assert frame.status_code == 200 and frame.content == packets[2]
    assert block.status_code == 200 and block.content == pk.decode_packet(packets[2]).payload


def test_replayed_stale_and_tampered_signatures_are_401(live):
    cluster, bank, _, _ = live
    path = f"/peer/v1/frames/{CAMERA}/1"
    h = signed_headers(cluster, AUTHORITY, "GET", path, b"")
    assert httpx.get(url(bank, path), headers=h, timeout=10).status_code == 200
    assert is_problem(httpx.get(url(bank, path), headers=h, timeout=10), 401, "peer-auth-replayed")
    stale = signed_headers(cluster, AUTHORITY, "GET", path, b"", time_ms=int(time.time() * 1000) - 120_000)
    assert is_problem(httpx.get(url(bank, path), headers=stale, timeout=10), 401, "peer-auth-stale")
    body = json.dumps(alarm(bank, [1])).encode()
    h = signed_headers(cluster, AUTHORITY, "POST", "/peer/v1/alarm", body)
    tampered = body.replace(b'"hops": 1', b'"hops": 0')
    r = httpx.post(url(bank, "/peer/v1/alarm"), content=tampered, headers=h, timeout=10)
    assert is_problem(r, 401, "peer-auth-signature")
    # signed for another node's address
    forged = dict(signed_headers(cluster, OUTSIDER, "GET", path, b""))
    forged["x-frameledger-node"] = cluster.consortium().nodes()[0]
    assert is_problem(httpx.get(url(bank, path), headers=forged, timeout=10), 401, "peer-auth-signature")


def test_signed_alarm_is_answered_and_its_response_is_signed(live):
    cluster, bank, _, _ = live
    with signing_client(cluster, AUTHORITY) as peer:
        r = peer.post(url(bank, "/peer/v1/alarm"), json=alarm(bank, [1, 2, 99]))
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["have"] == 2
    assert r.headers["x-frameledger-node"] == Account.from_key(cluster.keys[BANK]).address
    assert r.headers["x-frameledger-signature"].startswith("0x")


def test_hops_and_seq_lists_are_capped(live):
    cluster, bank, _, _ = live
    with signing_client(cluster, AUTHORITY) as peer:
        over_hops = peer.post(url(bank, "/peer/v1/alarm"), json=alarm(bank, [1], hops=50))
        many = peer.post(url(bank, "/peer/v1/alarm"), json=alarm(bank, list(range(10_000))))
        at_cap = peer.post(url(bank, "/peer/v1/alarm"), json=alarm(bank, list(range(4096)), hops=2))
    assert is_problem(over_hops, 422, "hops-over-limit")
    assert is_problem(many, 422, "too-many-seqs")
    assert at_cap.status_code == 200 and at_cap.json()["have"] == 5


def batch(node, holes, hops=1):
    """A batched alarm request (`/peer/v1/alarms`) of `holes` (lists of seqs) of the test camera."""
    one = alarm(node, [0], hops)
    items = [{"alarmId": f"{one['alarmId']}.{k}", "camera": CAMERA, "cameraId": one["cameraId"], "seqs": seqs}
             for k, seqs in enumerate(holes)]
    return {"origin": one["origin"], "originName": one["originName"], "hops": hops, "alarms": items}


def test_batched_alarms_are_answered_per_hole_and_capped(live):
    cluster, bank, _, _ = live
    with signing_client(cluster, AUTHORITY) as peer:
        ok = peer.post(url(bank, "/peer/v1/alarms"), json=batch(bank, [[1, 2], [3, 99], [98]]))
        over_hops = peer.post(url(bank, "/peer/v1/alarms"), json=batch(bank, [[1]], hops=50))
        long_hole = peer.post(url(bank, "/peer/v1/alarms"), json=batch(bank, [list(range(4097))]))
        too_many_seqs = peer.post(url(bank, "/peer/v1/alarms"), json=batch(bank, [list(range(4096))] * 5))
        too_many_holes = peer.post(url(bank, "/peer/v1/alarms"), json=batch(bank, [[1]] * 257))
        clears = peer.post(url(bank, "/peer/v1/alarms/clear"),
                           json={"from": "node-authority", "clears": [{"alarmId": "x", "camera": CAMERA}] * 3})
    assert ok.status_code == 200, ok.text
    assert [(a["status"], a["have"]) for a in ok.json()["alarms"]] == [("ok", 2), ("ok", 1), ("ok", 0)]
    assert is_problem(over_hops, 422, "hops-over-limit")
    assert is_problem(long_hole, 422, "too-many-seqs") and is_problem(too_many_seqs, 422, "too-many-seqs")
    assert is_problem(too_many_holes, 422, "body-invalid")
    assert clears.status_code == 200 and clears.json()["cleared"] == 3


def test_lying_peer_is_reported_under_its_own_key_not_the_name_it_claims(live):
    """A consortium node that sends bad repairs claiming to be another is blamed by address."""
    cluster, bank, packets, key = live
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from eth_account import Account

    held = pk.decode_packet(packets[3])
    forged = pk.encode_packet(Ed25519PrivateKey.generate(), CAMERA, 50_000, held.timestamp_ms, False, b"fake")
    conflicting = pk.encode_packet(key, CAMERA, held.seq, held.timestamp_ms, False, b"other")
    body = {"alarmId": "none", "from": "node-authority", "packets": [base64.b64encode(p).decode() for p in (forged, conflicting)]}
    with signing_client(cluster, CUSTOMER) as liar:
        answer = liar.post(url(bank, "/peer/v1/repair"), json=body).json()
    assert answer == {"accepted": 0, "confirmed": 0, "rejected": 2}
    reports = cluster.api(bank, "/api/v1/peer-reports")
    customer = Account.from_key(cluster.keys[CUSTOMER]).address
    assert [r["peer"] for r in reports].count(customer) == 2
    assert all(r["peer"] != "node-authority" for r in reports)
    still = cluster.api(bank, f"/api/v1/frames/{CAMERA}")
    assert (held.seq, held.sha256.hex()) in {(f["seq"], f["sha256"]) for f in still}


def test_client_refuses_a_response_not_signed_by_a_node(live, tmp_path):
    """node.http's PeerSigning: an answer from something that is not a consortium node is an
    httpx.HTTPError, so callers treat it like an unreachable peer."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Impostor(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"not a frame"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cluster = live[0]
    try:
        with signing_client(cluster, AUTHORITY) as peer, pytest.raises(PeerResponseRejected):
            peer.get(f"http://127.0.0.1:{server.server_port}/peer/v1/frames/{CAMERA}/1")
    finally:
        server.shutdown()


# ------------------------------------------------------------ errors, not crashes
BAD_BODIES = [b"{", b"", b"\xff\xfe\x00garbage", b"[]", b"null", b'"x"',
              b'{"alarmId":"a","origin":"o","cameraId":"0x' + b"00" * 32 + b'","seqs":[1],"hops":"x"}',
              b'{"alarmId":"a","origin":"o","cameraId":"0x' + b"00" * 32 + b'","seqs":[1],"hops":1e999}',
              b'{"alarmId":"a","origin":"o","cameraId":"0x' + b"00" * 32 + b'","seqs":[-1],"hops":1}',
              b'{"alarmId":"a","origin":"o","cameraId":"nothex","seqs":[1],"hops":1}',
              b'{"alarmId":"a","origin":"o","cameraId":"0x' + b"00" * 32 + b'","seqs":[1],"hops":true}',
              b'{"alarmId":5,"packets":"abc","seqFrom":"x"}', b'{"packets":[1,2]}']


@pytest.mark.parametrize("path", PEER_POSTS)
@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_signed_bodies_get_4xx_problems(live, path, body):
    cluster, bank, _, _ = live
    h = signed_headers(cluster, AUTHORITY, "POST", path, body) | {"content-type": "application/json"}
    r = httpx.post(url(bank, path), content=body, headers=h, timeout=10)
    if r.status_code == 200:
        # a clear message with only an alarm id is valid; nothing else above is
        assert path == "/peer/v1/alarm/clear" and b"alarmId" in body
        return
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] in {PROBLEMS + c for c in ("body-invalid", "body-not-json")}
    assert "Traceback" not in r.text


@pytest.mark.parametrize("path, code", [
    ("/api/v1/frames/10.9.0.1?from_ms=-1", "params-invalid"),
    ("/api/v1/frames/10.9.0.1?to_ms=abc", "params-invalid"),
    ("/api/v1/frames/0x" + "zz" * 32, "camera-invalid"),
    ("/api/v1/alarms?open=maybe", "params-invalid"),
    ("/api/v1/alarms?camera=0x" + "g" * 64, "camera-invalid"),
    ("/api/v1/nothing", "not-found"),
])
def test_bad_reads_get_4xx_problems(live, path, code):
    cluster, bank, _, _ = live
    r = httpx.get(url(bank, path), timeout=10)
    assert 400 <= r.status_code < 500 and r.json()["type"] == PROBLEMS + code, r.text
    assert r.headers["content-type"] == "application/problem+json"


def test_signed_bad_peer_paths_get_4xx_problems(live):
    cluster, bank, _, _ = live
    with signing_client(cluster, AUTHORITY) as peer:
        assert is_problem(peer.get(url(bank, "/peer/v1/frames/10.9.0.1/-3")), 422, "params-invalid")
        assert is_problem(peer.get(url(bank, "/peer/v1/frames/10.9.0.1/77")), 404, "frame-not-held")
        assert is_problem(peer.get(url(bank, "/peer/v1/blocks/notacid")), 422, "params-invalid")
        assert is_problem(peer.get(url(bank, "/peer/v1/blocks/" + cid_from_digest(b"\x01" * 32))), 404, "block-not-held")


# ------------------------------------------------------------------ bounded bodies
def rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":")
            fields[name] = int(value.split()[0])
    return fields


def test_200_mib_repair_post_is_refused_with_413_and_memory_stays_flat(live, record_property):
    cluster, bank, _, _ = live
    limit = bank.config.http_max_body_bytes
    total = 200 * 1024 * 1024
    host, port = bank.config.api_host, bank.config.api_port
    pid = bank.process.pid
    before = rss_kib(pid)
    # 1. declared up front: refused before any body is read
    declared_status, declared, _ = raw_post(host, port, "/peer/v1/repair", {}, total, chunked=False, send_body=False)
    after_declared = rss_kib(pid)
    # 2. streamed (chunked) by someone naming a real node, with a plausible signature: the node
    #    reads up to the limit, then answers 413 and stops reading
    h = signed_headers(cluster, AUTHORITY, "POST", "/peer/v1/repair", b"not the body")
    streamed_status, streamed, sent = raw_post(host, port, "/peer/v1/repair", h, total, chunked=True)
    after_streamed = rss_kib(pid)
    assert declared_status == 413 and b"body-too-large" in declared
    assert streamed_status == 413 and b"body-too-large" in streamed
    assert sent < total  # the node stopped reading long before the end
    growth_declared = after_declared["VmHWM"] - before["VmHWM"]
    growth_streamed = after_streamed["VmHWM"] - before["VmHWM"]
    record_property("rss_kib", {"before": before, "after_declared": after_declared, "after_streamed": after_streamed,
                                "sent_bytes": sent, "limit": limit})
    print(f"\nRSS KiB before={before} after_declared={after_declared} after_streamed={after_streamed} "
          f"sent={sent} limit={limit}")
    assert growth_declared < 4 * 1024
    # at most the limit buffered, plus slack for the interpreter (was +480 MiB before the cap)
    assert growth_streamed < (limit // 1024) * 2 + 8 * 1024
    assert httpx.get(url(bank, "/health"), timeout=10).status_code == 200


# --------------------------------------------------------------------- schemathesis
def schemathesis_failures(bank, session=None, only_peer: bool = False) -> tuple[list[str], int, dict[int, int]]:
    """Every operation (or only the peer ones), positive and negative inputs, 25 examples each:
    no 5xx, documented status codes and content types, responses matching their schemas."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    schema = schemathesis.openapi.from_url(url(bank, "/openapi.json"))
    c = schemathesis.checks
    checks = [c.not_a_server_error, c.status_code_conformance, c.content_type_conformance, c.response_schema_conformance]
    failures: list[str] = []
    runs = 0
    statuses: dict[int, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if only_peer and not operation.path.startswith("/peer/"):
            continue
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                nonlocal runs
                runs += 1
                response = case.call(base_url=bank.config.api_url, session=session, timeout=10)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                try:
                    case.validate_response(response, checks=checks)
                except Exception as exc:  # noqa: BLE001 - collect every failure with its input
                    failures.append(f"{case.method} {case.formatted_path} {case.query}: {str(exc)[:400]}")

            try:
                run()
            except Unsatisfiable:
                assert mode is schemathesis.GenerationMode.NEGATIVE  # nothing to get wrong without parameters
    print(f"\nschemathesis: {runs} requests, statuses {sorted(statuses.items())}")
    return failures, runs, statuses


def test_schemathesis_finds_no_server_error(live):
    """The whole API as anyone sees it: peer routes unsigned, so all 401 there."""
    failures, runs, statuses = schemathesis_failures(live[1])
    assert runs > 100 and failures == []
    assert statuses.get(401, 0) > 0


def test_schemathesis_signed_as_a_node_finds_no_server_error(live):
    """The peer routes with every generated request signed by a consortium node's key, so the
    generated bodies reach validation and the handlers."""
    import requests

    cluster, bank, _, _ = live

    class SignAsNode(requests.auth.AuthBase):
        def __call__(self, r):
            body = r.body or b""
            body = body.encode() if isinstance(body, str) else body
            r.headers.update(signed_headers(cluster, AUTHORITY, r.method, r.path_url, body))
            return r

    session = requests.Session()
    session.auth = SignAsNode()
    failures, runs, statuses = schemathesis_failures(bank, session=session, only_peer=True)
    assert runs > 50 and failures == []
    assert 401 not in statuses and statuses.get(200, 0) > 0  # the generated requests got past the gate


def test_repair_reply_is_signed_and_split_to_fit_the_peers_body_limit(tmp_path):
    """node-bank, with a 4 KiB body limit, answers a signed alarm for ten ~1 KiB frames: the
    frames reach the origin in several signed POSTs, each within the limit."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from offchain.core import peer_auth as pa

    limit = 4096
    cluster = Cluster(tmp_path, settings={"store_fsync": "none", "http_max_body_bytes": limit})
    try:
        cluster.start_chain()
        key = cluster.register_camera(CAMERA, 1, b"g")
        cluster.seal_genesis()
        cluster.configure_nodes()
        bank, authority = cluster.node("node-bank"), cluster.node("node-authority")
        cluster.start_node(bank)
        t0 = int(time.time() * 1000) - 5_000
        camera = IngestClient(bank.ingest)
        camera.hello(key, CAMERA)
        for seq in range(10):
            camera.send(pk.encode_packet(key, CAMERA, seq, t0 + 40 * seq, seq == 0, bytes([seq]) * 1000))
        camera.wait_ack(9)
        camera.close()
        deadline = time.monotonic() + 20
        while len(cluster.api(bank, f"/api/v1/frames/{CAMERA}")) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        posts: list[tuple[str, int, list[str]]] = []  # (signer, body size, packets)
        chain = pa.ChainBinding(cluster.w3.eth.chain_id, cluster.deployment.consortium)

        class Origin(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                h = pa.parse_headers({k.lower(): v for k, v in self.headers.items()})
                text = pa.request_text(chain, "POST", self.path, pa.body_digest(body), h.time_ms, h.nonce)
                posts.append((pa.verify(text, h), len(body), json.loads(body)["packets"]))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", authority.config.api_port), Origin)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with signing_client(cluster, AUTHORITY) as peer:
                r = peer.post(url(bank, "/peer/v1/alarm"), json={**alarm(bank, list(range(10))), "origin": authority.config.api_url})
            assert r.status_code == 200 and r.json()["have"] == 10
            deadline = time.monotonic() + 20
            while sum(len(p) for _, _, p in posts) < 10 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            server.shutdown()
        assert sum(len(p) for _, _, p in posts) == 10 and len(posts) > 1
        assert all(size <= limit for _, size, _ in posts)
        assert {signer for signer, _, _ in posts} == {Account.from_key(cluster.keys[BANK]).address}
    finally:
        cluster.stop()
