"""The monitor's built-in reactions on a real Anvil with the real contracts: a dispute, a risk
warning and a revocation notify the parties of exactly the sessions they concern; the
notifications survive a crash between output and checkpoint exactly once, and a reorg that drops
their cause undoes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offchain.chain.sessions import SigningSessionClient
from offchain.core.agreement import Proposal
from offchain.core.block import FrameRef, build_block, camera_id
from offchain.monitor import scanner
from offchain.monitor.scanner import Monitor, MonitorSettings

pytestmark = pytest.mark.slow

FOUNDER, BANK, CUSTOMER, NODE, OTHER_NODE = 0, 1, 2, 3, 4
W = 60_000
CAM_A, CAM_B, CAM_C = "10.60.0.1", "10.60.0.2", "10.60.0.3"  # A: bank's, B: customer's, C: bank's, in no session


def contracts_of(env) -> dict[str, str]:
    return {name: c["address"] for name, c in env.deployment.record["contracts"].items()}


def start_block(env) -> int:
    return min(c["blockNumber"] for c in env.deployment.record["contracts"].values())


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def open_monitor(env, tmp_path, window: int = 32) -> tuple[Monitor, object]:
    out = open(tmp_path / "events.jsonl", "a+")
    m = Monitor(env.w3, contracts_of(env), tmp_path / "checkpoint.json", out, start_block(env),
                MonitorSettings(confirmations=0, max_blocks=4, window=window), reactions=True)
    return m, out


def drain(m: Monitor) -> None:
    while m.step():
        pass


def anchor(env, ip: str, height: int, start: int) -> bytes:
    ledger = env.ledger(NODE)
    prev = ledger.tip(camera_id(ip))[0]
    blk = build_block(camera_ip=ip, height=height, prev_hash=prev, window_start_ms=start, window_end_ms=start + W,
                      frames=[FrameRef.of_bytes(height, start, b"f%d" % height, True)], proposer=env.signer(NODE).address)
    ledger.anchor(blk.header)
    return blk.header.hash


def propose(env, cameras: list[str], start_ms: int, end_ms: int, salt: int) -> bytes:
    sessions = SigningSessionClient(env.signer(BANK), env.deployment.signing_session)
    owner = {CAM_A: 0, CAM_B: 1, CAM_C: 0}
    now = env.w3.eth.get_block("latest")["timestamp"]
    proposal = Proposal(initiator=env.signer(BANK).address, parties=(env.signer(BANK).address, env.signer(CUSTOMER).address),
                        cameras=tuple(camera_id(c) for c in cameras), camera_party=tuple(owner[c] for c in cameras),
                        document_hash=b"\xd0" * 32, start_ms=start_ms, end_ms=end_ms, expires_at=now + 3600,
                        salt=salt.to_bytes(32, "big"))
    sid = sessions.proposal_id(proposal)
    sessions.propose(proposal)
    return sid


@pytest.fixture
def world(chain_env):
    env = chain_env
    env.consortium(BANK).register_camera(CAM_A, b"\x01" * 32, b"\x02" * 32)
    env.consortium(CUSTOMER).register_camera(CAM_B, b"\x03" * 32, b"\x04" * 32)
    env.consortium(BANK).register_camera(CAM_C, b"\x05" * 32, b"\x02" * 32)
    env.consortium(FOUNDER).seal_genesis()
    blocks = [anchor(env, CAM_A, 1, W), anchor(env, CAM_A, 2, 2 * W)]
    early = propose(env, [CAM_A, CAM_B], W, 2 * W, salt=1)  # covers block 1 of A only
    late = propose(env, [CAM_A], 5 * W, 6 * W, salt=2)  # A too, a later range
    return env, blocks, early, late


def notes(got: list[dict]) -> set[tuple[str, str, str]]:
    return {(n["notification"], n["cause"]["event"], n["sessionId"]) for n in scanner.fold_notifications(got)}


def test_disputes_risks_and_revocations_notify_the_sessions_they_concern(world, tmp_path):
    env, blocks, early, late = world
    e, la = "0x" + early.hex(), "0x" + late.hex()
    ledger = env.ledger(OTHER_NODE)
    ledger.dispute(blocks[0], "pool contradicts frame 1")  # window [W, 2W): only `early`
    ledger.dispute(blocks[1], "pool contradicts frame 2")  # window [2W, 3W): no session covers it
    ledger.raise_risk(camera_id(CAM_A), "frames missing at every node", W)  # A: both sessions
    ledger.raise_risk(camera_id(CAM_C), "frames missing at every node", W)  # C: none
    ledger.clear_risk(camera_id(CAM_A))
    env.consortium(CUSTOMER).revoke_camera(camera_id(CAM_B))  # B: `early` only
    m, out = open_monitor(env, tmp_path, window=2)  # the proposals are older than the window: kept in memory
    drain(m)
    out.close()
    got = lines(tmp_path / "events.jsonl")
    assert notes(got) == {("dispute", "BlockDisputed", e), ("risk_raised", "RiskRaised", e),
                          ("risk_raised", "RiskRaised", la), ("risk_cleared", "RiskCleared", e),
                          ("risk_cleared", "RiskCleared", la), ("camera_revoked", "CameraRevoked", e)}
    parties = {env.signer(BANK).address, env.signer(CUSTOMER).address}
    for n in scanner.fold_notifications(got):
        assert set(n["parties"]) == parties
    dispute = next(n for n in got if n.get("notification") == "dispute")
    assert dispute["cameras"] == ["0x" + camera_id(CAM_A).hex()] and dispute["window"] == [W, 2 * W]
    # each notification follows its cause, which is an event line of the same position
    for i, line in enumerate(got):
        if "notification" in line:
            cause = next(x for x in reversed(got[:i]) if "notification" not in x)
            assert (cause["transactionHash"], cause["logIndex"]) == (line["transactionHash"], line["logIndex"])


def test_notifications_exactly_once_across_a_crash_and_undone_by_a_reorg(world, tmp_path, monkeypatch):
    env, _, early, late = world
    ledger = env.ledger(OTHER_NODE)
    ledger.raise_risk(camera_id(CAM_A), "frames missing", W)
    m, out = open_monitor(env, tmp_path)
    drain(m)
    snapshot = env.w3.provider.make_request("evm_snapshot", [])["result"]
    ledger.clear_risk(camera_id(CAM_A))  # this block will be dropped
    monkeypatch.setattr(scanner.Checkpoint, "save", lambda self, path: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):  # the notification lines are out, the checkpoint never written
        m.step()
    out.close()
    monkeypatch.undo()
    assert any(x.get("notification") == "risk_cleared" for x in lines(tmp_path / "events.jsonl"))
    m, out = open_monitor(env, tmp_path)  # restart: cuts the uncommitted lines, rescans them once
    drain(m)
    got = lines(tmp_path / "events.jsonl")
    cleared = [x for x in got if x.get("notification") == "risk_cleared"]
    assert len(cleared) == 2 and {x["sessionId"] for x in cleared} == {"0x" + early.hex(), "0x" + late.hex()}

    env.w3.provider.make_request("evm_revert", [snapshot])  # the RiskCleared block goes
    env.w3.provider.make_request("anvil_mine", [1])
    env.consortium(BANK).revoke_camera(camera_id(CAM_C))  # another, longer history: no session has C
    env.consortium(BANK).register_camera("10.60.0.9", b"\x06" * 32, b"\x02" * 32)
    drain(m)
    out.close()
    got = lines(tmp_path / "events.jsonl")
    undone = [x for x in got if x.get("notification") == "risk_cleared" and x["removed"]]
    assert len(undone) == 2  # both notifications of the dropped cause are undone
    assert notes(got) == {("risk_raised", "RiskRaised", "0x" + early.hex()),
                          ("risk_raised", "RiskRaised", "0x" + late.hex())}
    assert env.ledger(NODE).risk(camera_id(CAM_A))["active"]  # the chain agrees: the warning stands


def test_a_declined_or_expired_session_is_not_notified(world, tmp_path):
    env, _, early, late = world
    SigningSessionClient(env.signer(CUSTOMER), env.deployment.signing_session).respond(early, False)
    env.w3.provider.make_request("evm_increaseTime", [7200])  # `late` was never answered: expired
    env.w3.provider.make_request("evm_mine", [])
    env.ledger(OTHER_NODE).raise_risk(camera_id(CAM_A), "frames missing", W)
    m, out = open_monitor(env, tmp_path)
    drain(m)
    out.close()
    got = lines(tmp_path / "events.jsonl")
    assert any(x.get("event") == "RiskRaised" for x in got) and scanner.fold_notifications(got) == []


def test_notifications_go_to_the_webhooks_signed_with_their_own_event_id(world, tmp_path):
    import hmac
    import http.server
    import threading

    from offchain.monitor.webhooks import Webhooks, event_id, signature

    env, _, early, late = world
    env.ledger(OTHER_NODE).raise_risk(camera_id(CAM_A), "frames missing", W)
    received: list[tuple[dict, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            received.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = b"webhook secret"
    hooks = Webhooks([f"http://127.0.0.1:{server.server_address[1]}/hook"], secret, sleep=lambda s: None)
    try:
        out = open(tmp_path / "events.jsonl", "a+")
        m = Monitor(env.w3, contracts_of(env), tmp_path / "checkpoint.json", out, start_block(env),
                    MonitorSettings(confirmations=0), deliver=hooks.deliver, reactions=True)
        drain(m)
        out.close()
    finally:
        hooks.close()
        server.shutdown()
        server.server_close()
    got = lines(tmp_path / "events.jsonl")
    assert [json.loads(body) for _, body in received] == got  # every line, notifications included, in order
    sent = [(h, json.loads(b), b) for h, b in received if "notification" in json.loads(b)]
    assert {n["sessionId"] for _, n, _ in sent} == {"0x" + early.hex(), "0x" + late.hex()}
    ids = {h["X-FrameLedger-Event-Id"] for h, _, _ in sent}
    assert len(ids) == 2 and all(":notify:0x" in i for i in ids)  # one id per session, not the cause's
    for headers, note, body in sent:
        assert headers["X-FrameLedger-Event-Id"] == event_id(note)
        assert hmac.compare_digest(headers["X-FrameLedger-Signature"], signature(secret, body))


def test_a_batch_dispute_notifies_the_sessions_overlapping_its_window(world, tmp_path):
    from offchain.core.batch import Batch, BatchManifest, order_signatures, sign_batch

    env, _, early, late = world
    blk = build_block(camera_ip=CAM_B, height=1, prev_hash=env.consortium().head_block(camera_id(CAM_B))[0],
                      window_start_ms=W, window_end_ms=2 * W, frames=[FrameRef.of_bytes(0, W, b"b0", True)],
                      proposer=env.signer(NODE).address)
    manifest = BatchManifest.of(window_start_ms=W, window_end_ms=2 * W, prev_batch_root=b"\x00" * 32,
                                headers=[blk.header])
    batch = Batch.of_manifest(manifest)
    batches = env.deployment.batch_client(env.signer(NODE))
    sigs = order_signatures(batches.domain, batch, [sign_batch(env.keys[i], batches.domain, batch) for i in (3, 4)])
    index = batches.anchor_batch(batch, sigs).index
    env.deployment.batch_client(env.signer(5)).dispute_batch(index, "manifest omits a frame this node holds")
    m, out = open_monitor(env, tmp_path)
    drain(m)
    out.close()
    got = lines(tmp_path / "events.jsonl")
    disputes = [n for n in scanner.fold_notifications(got) if n["notification"] == "dispute"]
    assert [(n["cause"]["event"], n["sessionId"]) for n in disputes] == [("BatchDisputed", "0x" + early.hex())]
    assert disputes[0]["window"] == [W, 2 * W] and len(disputes[0]["cameras"]) == 2  # every camera of the session
