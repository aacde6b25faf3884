"""Three real node processes over HTTP on loopback, a real Anvil, real clips, injected faults.

The scenario (offchain/node/scenario.py) is the demo's, shortened: 20 s windows, 40 s of capture.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from cluster_fixtures import one_camera_cluster

from offchain.camera.agent import CameraAgent
from offchain.camera.samples import sample_path
from offchain.camera.sources import FileSource
from offchain.core.block import FRAME_LEAF_ENCODING, Manifest, camera_id
from offchain.core.cid import cid_from_digest
from offchain.core.merkle import StandardMerkleTree
from offchain.node.scenario import Scenario, ScenarioRun
from offchain.store.local import LocalStore

WINDOW = 20_000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    scenario = Scenario(tmp_path_factory.mktemp("scenario"), window_ms=WINDOW, seconds=40, speed=10.0,
                        cut_ms=(8_000, 11_000), node_settings={"repair_deadline_ms": 5000, "store_fsync": "none"})
    r = ScenarioRun(scenario, out=lambda *_: None)
    try:
        r.setup()
        r.stream()
        r.blocks = r.wait_final(timeout=120)
        r.frames = {
            n.name: {cam.ip: r.cluster.api(n, f"/api/v1/frames/{cam.ip}") for cam in scenario.cameras}
            for n in r.cluster.nodes
        }
        r.alarms = {n.name: r.cluster.api(n, "/api/v1/alarms") for n in r.cluster.nodes}
        r.status = r.node_status()
        yield r
    finally:
        r.cluster.stop()


def whitelisted(run):
    return [c for c in run.s.cameras if c.owner_account is not None]


def test_every_window_anchored_final_and_risk_free(run):
    for cam in whitelisted(run):
        recs = run.blocks[cam.ip]
        assert len(recs) == 2, cam.ip
        assert all(r.finalized and r.attestations == 3 and r.disputes == 0 for r in recs), cam.ip
        assert [r.header.height for r in recs] == [1, 2]


def test_every_node_holds_every_frame_any_node_received_intact(run):
    for cam in whitelisted(run):
        union = set()
        for node in run.frames:
            union |= {(f["seq"], f["sha256"]) for f in run.frames[node][cam.ip]}
        for node in run.frames:
            held = {(f["seq"], f["sha256"]) for f in run.frames[node][cam.ip]}
            assert held == union, f"{node} lacks {sorted(union - held)[:5]} of {cam.ip}"
    # the faults really happened and were repaired
    assert run.status["node-bank"]["counters"]["10.0.1.11"]["repaired"] > 0
    assert run.status["node-customer"]["counters"]["10.0.2.21"]["rejected_integrity"] > 0
    assert run.status["node-customer"]["counters"]["10.0.2.21"]["repaired"] > 0


def test_each_anchored_root_equals_each_nodes_own(run):
    for cam in whitelisted(run):
        cid = camera_id(cam.ip)
        for rec in run.blocks[cam.ip]:
            h = rec.header
            for node, frames in run.frames.items():
                mine = [(cid, f["seq"], f["timestampMs"], bytes.fromhex(f["sha256"])) for f in frames[cam.ip]
                        if h.window_start_ms <= f["timestampMs"] < h.window_end_ms]
                assert len(mine) == h.frame_count, (node, cam.ip, h.height)
                assert StandardMerkleTree.of(mine, list(FRAME_LEAF_ENCODING)).root == h.frames_root, (node, cam.ip)


def test_unknown_camera_left_nothing_behind(run):
    intruder = next(c for c in run.s.cameras if c.owner_account is None)
    # its frames as the camera sent them: none may be in any node's table or store
    digests = [f.sha256 for f in FileSource(run.clip(intruder.sample), start_ms=run.t0)]
    assert len(digests) == 40
    for node in run.cluster.nodes:
        assert run.frames[node.name][intruder.ip] == []
        store = LocalStore(node.config.data_dir / "store")
        assert not any(store.has(cid_from_digest(bytes.fromhex(d))) for d in digests)
        security = [a for a in run.alarms[node.name] if a["kind"] == "security"]
        assert security and all(a["camera"] is None or a["camera"] == intruder.ip for a in security)


def test_cut_span_declared_and_substituted_in_manifest(run):
    cut_cam, sibling = "10.0.1.12", "10.0.1.11"
    store = LocalStore(run.cluster.nodes[0].config.data_dir / "store")
    first = run.blocks[cut_cam][0].header
    manifest = Manifest.from_bytes(store.get(cid_from_digest(first.manifest_digest)))
    gaps = [g for g in manifest.gaps if g.substitute_camera is not None]
    assert len(gaps) == 1
    gap = gaps[0]
    assert gap.substitute_camera == camera_id(sibling)
    a, b = run.s.cut_ms
    assert run.t0 + a - 100 <= gap.from_ms and gap.to_ms <= run.t0 + b + 100
    (sub_cam, sub_frames), = manifest.substitutions
    assert sub_cam == camera_id(sibling) and sub_frames
    assert all(gap.from_ms <= f.timestamp_ms < gap.to_ms for f in sub_frames)
    own = {f.seq for f in manifest.frames}
    assert not own & set(range(gap.from_seq, gap.to_seq + 1))  # never passed off as the camera's own


def test_alarm_centre_raised_and_cleared_risk_for_the_cut_camera(run):
    events = [(ip, name) for ip, name, _ in run.risk_events()]
    assert ("10.0.1.12", "RiskRaised") in events
    assert events.index(("10.0.1.12", "RiskCleared")) > events.index(("10.0.1.12", "RiskRaised"))
    assert not any(ip != "10.0.1.12" for ip, _ in events)


def test_node_killed_mid_stream_resumes_without_losing_accepted_frames(tmp_path):
    ip = "10.0.5.1"
    settings = {"window_ms": 10_000, "missing_wait_ms": 800, "repair_deadline_ms": 4000, "idle_close_ms": 2000,
                "proposer_timeout_ms": 4000, "store_fsync": "file"}
    with one_camera_cluster(tmp_path, ip, owner=1, settings=settings) as (cluster, key):
        victim = cluster.node("node-customer")
        now = int(time.time() * 1000)
        t0 = now - now % 10_000 - 60_000
        accepted_before: list = []

        async def stream_and_kill():
            agent = CameraAgent(ip, key, FileSource(sample_path("bikes"), start_ms=t0, loop=True),
                                {n.name: n.ingest for n in cluster.nodes}, speed=5.0, max_duration_ms=30_000)
            task = asyncio.create_task(agent.run())
            await asyncio.sleep(2.0)
            accepted_before.extend(await asyncio.to_thread(cluster.api, victim, f"/api/v1/frames/{ip}"))
            await asyncio.to_thread(cluster.kill_node, victim, True)  # SIGKILL: no clean shutdown
            await asyncio.sleep(1.0)
            await asyncio.to_thread(cluster.start_node, victim)
            await task

        asyncio.run(stream_and_kill())
        assert len(accepted_before) > 50
        deadline = time.monotonic() + 90
        ledger = cluster.ledger(0)
        cid = camera_id(ip)
        while time.monotonic() < deadline:
            n = ledger.chain_length(cid)
            recs = [ledger.block_at(cid, h) for h in range(1, n + 1)]
            # final needs a quorum of 2; wait for the restarted node's own verdict too
            if n >= 3 and all(r.finalized and r.attestations == 3 for r in recs):
                break
            time.sleep(0.5)
        after = {(f["seq"], f["sha256"]) for f in cluster.api(victim, f"/api/v1/frames/{ip}")}
        assert {(f["seq"], f["sha256"]) for f in accepted_before} <= after  # nothing accepted was lost
        others = {(f["seq"], f["sha256"]) for f in cluster.api(cluster.node("node-bank"), f"/api/v1/frames/{ip}")}
        assert after == others  # and the downtime was repaired from peers
        assert len(after) == 750
        store = LocalStore(victim.config.data_dir / "store")
        assert all(store.has(cid_from_digest(bytes.fromhex(d))) for _, d in list(after)[:100])
        assert ledger.chain_length(cid) == 3
        recs = [ledger.block_at(cid, h) for h in (1, 2, 3)]
        assert all(r.attestations == 3 and r.disputes == 0 for r in recs), [(r.attestations, r.disputes) for r in recs]  # the restarted node agreed
        assert [r.header.frame_count for r in recs] == [250, 250, 250]


def test_repair_feedback_names_the_peers(run):
    repairs = run.cluster.api(run.cluster.node("node-bank"), "/api/v1/repairs", camera="10.0.1.11")
    assert repairs and {r["peer"] for r in repairs} <= {"node-authority", "node-customer"}
    assert all(r["camera"] == "10.0.1.11" for r in repairs)
    cleared = [a for a in run.alarms["node-bank"] if a["kind"] == "missing" and a["camera"] == "10.0.1.11"]
    assert cleared and all(a["resolution"] == "repaired" for a in cleared)


def test_lying_peer_is_rejected_and_reported(run):
    """A consortium node (signing with its own key) that sends forged or conflicting frames is
    refused and reported under its address, whatever name it claims."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from eth_account import Account
    from peer_clients import signing_client

    from offchain.core import packet as pk

    bank = run.cluster.node("node-bank")
    held = run.frames["node-bank"]["10.0.1.11"][5]
    forged_key = pk.encode_packet(Ed25519PrivateKey.generate(), "10.0.1.11", 10_000, held["timestampMs"], False, b"fake")
    # validly signed by the camera, but contradicting a frame the node already holds
    conflicting = pk.encode_packet(run.keys["10.0.1.11"], "10.0.1.11", held["seq"], held["timestampMs"], False, b"other")
    body = {"alarmId": "none", "from": "mallory", "packets": [base64.b64encode(p).decode() for p in (forged_key, conflicting)]}
    liar_account = 5  # node-customer (chain/consortium.json)
    with signing_client(run.cluster, liar_account) as liar:
        answer = liar.post(bank.config.api_url + "/peer/v1/repair", json=body).json()
    assert answer == {"accepted": 0, "confirmed": 0, "rejected": 2}
    reports = run.cluster.api(bank, "/api/v1/peer-reports")
    assert [r["peer"] for r in reports].count(Account.from_key(run.cluster.keys[liar_account]).address) == 2
    assert "mallory" not in {r["peer"] for r in reports}
    still = run.cluster.api(bank, "/api/v1/frames/10.0.1.11")
    assert {(f["seq"], f["sha256"]) for f in still} >= {(held["seq"], held["sha256"])}
    assert all(f["seq"] != 10_000 for f in still)


def slot_rules(settings):
    from offchain.core.windows import WindowRules

    return WindowRules(window_ms=settings["window_ms"], idle_close_ms=settings["idle_close_ms"],
                       repair_deadline_ms=settings["repair_deadline_ms"],
                       proposer_timeout_ms=settings["proposer_timeout_ms"], clock_skew_ms=settings.get("clock_skew_ms", 500))


def test_next_node_takes_over_from_a_dead_proposer(tmp_path):
    from offchain.core.block import proposer_for
    from offchain.core.windows import turn_at

    ip = "10.0.6.1"
    settings = {"window_ms": 5_000, "missing_wait_ms": 500, "repair_deadline_ms": 2000, "idle_close_ms": 1500,
                "proposer_timeout_ms": 2000, "store_fsync": "none"}
    with one_camera_cluster(tmp_path, ip, owner=2, settings=settings) as (cluster, key):
        dead = cluster.node("node-customer")
        cluster.kill_node(dead)  # it never comes back: its turns must be taken by the others
        nodes = cluster.consortium().nodes()
        dead_address = cluster.deployment.record["nodes"][2]["address"]
        now = int(time.time() * 1000)
        t0 = now - now % 5_000 - 60_000
        # start where the rotation gives the dead node the first window, so a takeover must happen
        while proposer_for(camera_id(ip), t0, nodes) != dead_address:
            t0 -= 5_000
        alive = {n.name: n.ingest for n in cluster.nodes if n is not dead}
        asyncio.run(CameraAgent(ip, key, FileSource(sample_path("bikes"), start_ms=t0, loop=True), alive,
                                speed=0, max_duration_ms=30_000).run())
        ledger, cid = cluster.ledger(0), camera_id(ip)
        deadline = time.monotonic() + 90
        recs: list = []
        while time.monotonic() < deadline:
            recs = [ledger.block_at(cid, h) for h in range(1, ledger.chain_length(cid) + 1)]
            if len(recs) == 6 and all(r.finalized for r in recs):
                break
            time.sleep(0.5)
        assert len(recs) == 6 and all(r.finalized for r in recs)  # quorum 2 of the 2 live nodes
        taken_over = [r for r in recs if proposer_for(cid, r.header.window_start_ms, nodes) == dead_address]
        assert taken_over and taken_over[0].header.window_start_ms == t0
        rules = slot_rules(settings)
        for r in taken_over:
            # Anchored in its own slot, as every node counts slots: from the window's end and the
            # chain time of the block before (anchoredAt is whole seconds: any instant of it).
            before = ledger.block_at(cid, r.header.height - 1).anchored_at if r.header.height > 1 else \
                cluster.consortium().camera(cid).head_timestamp
            owners = {proposer_for(cid, r.header.window_start_ms, nodes, turn_at(
                r.anchored_at * 1000 + ms, window_end_ms=r.header.window_end_ms, prev_anchored_ms=before * 1000,
                rules=rules).attempt) for ms in range(0, 1000, 10)}
            assert r.header.proposer in owners and r.header.proposer != dead_address
        # the rotation was followed: no node lost an anchoring race to another
        for node in cluster.nodes:
            if node is not dead:
                counters = cluster.api(node, "/api/v1/status")["counters"]
                assert sum(c.get("lost_races", 0) for c in counters.values()) == 0, node.name
                assert sum(c.get("takeovers", 0) for c in counters.values()) <= len(taken_over)


def test_rotated_device_key_is_picked_up_from_chain(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    ip = "10.0.7.1"
    with one_camera_cluster(tmp_path, ip, owner=1, settings={"store_fsync": "none"}) as (cluster, old_key):
        frames = [f for _, f in zip(range(100), FileSource(sample_path("bikes"), start_ms=1_700_000_000_000))]
        ingest = {n.name: n.ingest for n in cluster.nodes}
        asyncio.run(CameraAgent(ip, old_key, frames[:50], ingest, speed=0).run())
        new_key = Ed25519PrivateKey.generate()
        cluster.consortium(1).rotate_camera_key(camera_id(ip), new_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        asyncio.run(CameraAgent(ip, new_key, frames[50:], ingest, speed=0).run())
        for node in cluster.nodes:  # the rotation reaches a node within a tick; let every node see it
            deadline = time.monotonic() + 20
            while len(cluster.api(node, f"/api/v1/frames/{ip}")) < 100 and time.monotonic() < deadline:
                time.sleep(0.2)
        # the retired key is refused for frames captured after the rotation
        from offchain.camera.sources import EncodedFrame

        # Anvil's block clock runs ahead of the wall clock when blocks come fast: use chain time.
        now = cluster.w3.eth.get_block("latest")["timestamp"] * 1000 + 5_000
        late = [EncodedFrame(100 + i, now + 40 * i, f.keyframe, f.data) for i, f in enumerate(frames[:10])]
        asyncio.run(CameraAgent(ip, old_key, late, ingest, speed=0).run())
        for node in cluster.nodes:
            deadline = time.monotonic() + 20
            while len(held := cluster.api(node, f"/api/v1/frames/{ip}")) < 100 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert [f["seq"] for f in held] == list(range(100)), node.name
            security = [a for a in cluster.api(node, "/api/v1/alarms") if a["kind"] == "security"]
            assert len(security) >= 1 and all(a["camera"] == ip for a in security)


def test_unsigned_control_messages_and_future_frames_are_not_believed(run):
    from ingest_client import IngestClient

    from offchain.core import packet as pk
    from offchain.core import wire

    node = run.cluster.node("node-authority")
    ip, key = "10.0.1.11", run.keys["10.0.1.11"]
    before = run.cluster.api(node, "/api/v1/status")["counters"].get(ip, {})
    far = int(time.time() * 1000) + 365 * 86_400_000
    # an unsigned "end" claiming a billion lost frames: refused, the connection closed
    c = IngestClient(node.ingest)
    c.send(wire.control_message({"type": "end", "camera": ip, "lastSeq": 10**9}))
    assert c.until_closed()[-1]["reason"] == "unsigned-control"
    c.close()
    # on a proven connection: the same end signed, far beyond anything held, and a validly
    # signed frame from a clock a year ahead
    c = IngestClient(node.ingest)
    c.hello(key, ip, None)
    c.end(key, ip, 10**9)
    c.send(pk.encode_packet(key, ip, 10**6, far, True, b"x"))
    time.sleep(2.0)  # a few ticks
    c.close()
    after = run.cluster.api(node, "/api/v1/status")["counters"][ip]
    assert after.get("rejected_integrity", 0) == before.get("rejected_integrity", 0) + 2
    alarms = run.cluster.api(node, "/api/v1/alarms", camera=ip, kind="missing")
    assert all(a["seqTo"] < 10_000 for a in alarms)
    assert all(f["seq"] < 10_000 for f in run.cluster.api(node, "/api/v1/frames/10.0.1.11"))
