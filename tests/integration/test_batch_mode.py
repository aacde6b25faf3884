"""Batch mode in the node (issue 9): three real node processes with `anchoring = "batch"`, two
live cameras. Every window becomes one quorum-signed BatchLedger batch, final on inclusion; each
camera's chain links through the batches; a frame is provable on chain through
`verifyFrameInBatch`; a frame only the peers hold is pulled before sealing; a node refuses to
sign forged batches (through the signing route, with crafted requests); a restarted node keeps
its tips; a stopped proposer is taken over in its slot without lost races."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from ingest_client import IngestClient
from peer_clients import signing_client

from offchain.chain.client import Signer
from offchain.core import packet as pk
from offchain.core.batch import BatchManifest, batch_tree, block_proof
from offchain.core.block import ZERO32, FrameRef, Manifest, build_block, camera_id, frames_tree, proposer_for, window_of
from offchain.core.cid import cid_from_digest
from offchain.node.cluster import Cluster
from offchain.store.local import LocalStore

pytestmark = pytest.mark.slow

IPS = ("10.9.7.1", "10.9.7.2")
WINDOW = 3_000
STEP = 200  # ms between frames
SETTINGS = {"window_ms": WINDOW, "missing_wait_ms": 500, "repair_deadline_ms": 1_500, "idle_close_ms": 1_500,
            "proposer_timeout_ms": 2_500, "clock_skew_ms": 500, "store_fsync": "none", "anchoring": "batch"}


def start_cluster(tmp_path: Path) -> tuple[Cluster, dict]:
    cluster = Cluster(tmp_path, settings=SETTINGS)
    cluster.start_chain()
    keys = {ip: cluster.register_camera(ip, 1, b"g") for ip in IPS}
    cluster.seal_genesis()
    cluster.configure_nodes()
    cluster.start_nodes()
    return cluster, keys


def addresses(cluster: Cluster) -> dict[str, object]:
    return {Account.from_key(Path(n.config.private_key_file).read_text().strip()).address: n for n in cluster.nodes}


def stream(cluster: Cluster, keys: dict, t0: int, windows: int, skip=lambda node, ip, seq, ts: False,
           on_tick=lambda wall: None) -> int:
    """Frames of both cameras in real time from t0 for `windows` windows; returns the last seq."""
    clients = {}
    for node in cluster.nodes:
        for ip in IPS:
            clients[(node.name, ip)] = IngestClient(node.ingest)
            clients[(node.name, ip)].hello(keys[ip], ip)
    frames = [(seq, t0 + seq * STEP) for seq in range(windows * WINDOW // STEP)]
    sent = 0
    while sent < len(frames):
        wall = int(time.time() * 1000)
        on_tick(wall)
        while sent < len(frames) and frames[sent][1] <= wall:
            seq, ts = frames[sent]
            for (name, ip), client in list(clients.items()):
                node = cluster.node(name)
                if node.process is None or node.process.poll() is not None:
                    clients.pop((name, ip)).close()
                    continue
                if not skip(name, ip, seq, ts):
                    client.send(pk.encode_packet(keys[ip], ip, seq, ts, seq % 10 == 0, b"%s live %d" % (ip.encode(), seq)))
            sent += 1
        time.sleep(0.05)
    for client in clients.values():
        client.close()
    return frames[-1][0]


def wait_batches(cluster: Cluster, n: int, timeout: float = 90.0) -> list:
    batches = cluster.deployment.batch_client(Signer(cluster.w3, cluster.keys[0]))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if batches.batch_count() >= n:
            break
        time.sleep(0.5)
    return [batches.batch_at(i) for i in range(batches.batch_count())]


def counter(cluster: Cluster, node, name: str) -> int:
    return sum(c.get(name, 0) for c in cluster.api(node, "/api/v1/status")["counters"].values())


def sign(client: httpx.Client, node, manifest: BatchManifest, attempt: int = 0) -> httpx.Response:
    return client.post(node.config.api_url + "/peer/v1/batches/sign", json={"manifestCid": manifest.cid, "attempt": attempt})


def test_batch_mode_anchors_every_window_once_refuses_forgeries_and_keeps_tips(tmp_path):
    cluster, keys = start_cluster(tmp_path)
    try:
        nodes = cluster.consortium().nodes()
        by_address = addresses(cluster)
        now = int(time.time() * 1000)
        t0 = now - now % WINDOW + WINDOW
        windows = 4
        last_start = t0 + (windows - 1) * WINDOW
        lacking = by_address[proposer_for(None, last_start, nodes)]  # the last window's proposer
        tail = {windows * WINDOW // STEP - 1, windows * WINDOW // STEP - 2}  # a lost tail: no later frame reveals it

        last_seq = stream(cluster, keys, t0, windows,
                          skip=lambda name, ip, seq, ts: name == lacking.name and ip == IPS[0] and seq in tail)
        recs = wait_batches(cluster, windows)
        assert [r.window_start_ms for r in recs[:windows]] == [t0 + k * WINDOW for k in range(windows)]
        store = LocalStore(cluster.nodes[0].config.data_dir / "store")
        batches = cluster.deployment.batch_client(Signer(cluster.w3, cluster.keys[0]))
        prev = {camera_id(ip): cluster.consortium().camera(camera_id(ip)).head_block for ip in IPS}
        heights = {camera_id(ip): 0 for ip in IPS}
        for index, rec in enumerate(recs[:windows]):
            manifest = BatchManifest.from_bytes(store.get(cid_from_digest(rec.manifest_digest)))
            assert rec.block_count == len(IPS) and [h.camera_id for h in manifest.headers] == sorted(prev)
            tree = batch_tree(manifest.block_hashes)
            assert tree.root == rec.batch_root
            for header in manifest.headers:
                assert header.prev_hash == prev[header.camera_id]  # each camera's chain links through the batches
                assert header.height == heights[header.camera_id] + 1
                prev[header.camera_id], heights[header.camera_id] = header.hash, header.height
                block = Manifest.from_bytes(store.get(cid_from_digest(header.manifest_digest)))
                assert header.frame_count == WINDOW // STEP and len(block.frames) == WINDOW // STEP
                f = block.frames[len(block.frames) // 2]
                frame_proof = frames_tree(header.camera_id, block.frames).get_proof(f.leaf_values(header.camera_id))
                assert batches.verify_frame(index, header, block_proof(tree, header.hash), f.seq, f.timestamp_ms,
                                            f.sha256, frame_proof)
                assert not batches.verify_frame(index, header, block_proof(tree, header.hash), f.seq, f.timestamp_ms,
                                                b"\x01" * 32, frame_proof)
        # The tail only the peers held is in the last window's block: pulled before sealing.
        last_manifest = BatchManifest.from_bytes(store.get(cid_from_digest(recs[windows - 1].manifest_digest)))
        cam0 = next(h for h in last_manifest.headers if h.camera_id == camera_id(IPS[0]))
        assert last_seq in {f.seq for f in Manifest.from_bytes(store.get(cid_from_digest(cam0.manifest_digest))).frames}
        for node in cluster.nodes:
            caught_up(cluster, node)  # a node settles a batch after the chain holds it: its status may lag
            status = cluster.api(node, "/api/v1/status")
            assert status["anchoring"] == "batch"
            assert status["batch"]["lastBatch"]["index"] >= windows - 1
            assert counter(cluster, node, "lost_races") == 0
        pulled = {r["seq"] for r in cluster.api(lacking, "/api/v1/repairs", camera=IPS[0])}
        assert tail <= pulled  # on record as repairs (I8)

        forged_requests_are_refused(cluster, keys, nodes, by_address, prev, heights, last_seq)
        restart_keeps_tips(cluster)
    finally:
        cluster.stop()


def forged_requests_are_refused(cluster: Cluster, keys: dict, nodes: list, by_address: dict, prev: dict,
                                heights: dict, last_seq: int) -> None:
    """Crafted requests, each from the slot's real proposer, to a node that must refuse them. The
    probe frames continue the camera's numbering (no hole) three windows ahead, so the real
    window closes only after seconds of silence: no real batch lands meanwhile."""
    last = wait_batches(cluster, 0)[-1]
    now = int(time.time() * 1000)
    start = window_of(now, WINDOW)[0] + 3 * WINDOW
    proposer_addr = proposer_for(None, start, nodes)
    proposer = by_address[proposer_addr]
    target = next(n for n in cluster.nodes if n is not proposer)
    account = next(i for i, k in enumerate(cluster.keys) if Account.from_key(k).address == proposer_addr)
    store = LocalStore(target.config.data_dir / "store")
    cam0, cam1 = camera_id(IPS[0]), camera_id(IPS[1])
    last_root = last.batch_root

    # Frames of camera 0 in this window that the target holds (sent to it only).
    client = IngestClient(target.ingest)
    client.hello(keys[IPS[0]], IPS[0])
    base_seq = last_seq + 1
    refs = []
    for k in range(3):
        ts = start + 10 + k * STEP
        raw = pk.encode_packet(keys[IPS[0]], IPS[0], base_seq + k, ts, k == 0, b"forgery probe %d" % k)
        client.send(raw)
        packet = pk.decode_packet(raw)
        refs.append(packet.frame_ref())
    client.wait_ack(base_seq + 2)
    client.close()

    def batch_of(headers) -> BatchManifest:
        m = BatchManifest.of(window_start_ms=start, window_end_ms=start + WINDOW, prev_batch_root=last_root, headers=headers)
        store.put(m.to_bytes())
        return m

    def block(cam_ip: str, frames: list[FrameRef], prev_hash: bytes, height: int):
        b = build_block(camera_ip=cam_ip, height=height, prev_hash=prev_hash, window_start_ms=start,
                        window_end_ms=start + WINDOW, frames=frames, proposer=proposer_addr, codec={}, gaps=[],
                        substitutions=[])
        store.put(b.manifest_bytes)
        return b.header

    with signing_client(cluster, account) as peer:
        # 1. A block that omits a frame the target holds.
        omitting = batch_of([block(IPS[0], refs[:2], prev[cam0], heights[cam0] + 1)])
        r = sign(peer, target, omitting)
        assert r.status_code == 409 and r.json()["type"].endswith("/batch-refused"), r.text
        assert r.json()["detail"].startswith("block-check: manifest omits frame"), r.text
        # 2. A broken prevHash (camera 1's block does not link to its last batched block).
        broken = batch_of([block(IPS[0], refs, prev[cam0], heights[cam0] + 1),
                           block(IPS[1], [], b"\x07" * 32, heights[cam1] + 1)])
        r = sign(peer, target, broken)
        assert r.status_code == 409 and r.json()["detail"].startswith("broken-link"), r.text
        # 3. A batch that does not link to the last batch root.
        m = BatchManifest.of(window_start_ms=start, window_end_ms=start + WINDOW, prev_batch_root=ZERO32,
                             headers=[block(IPS[0], refs, prev[cam0], heights[cam0] + 1)])
        store.put(m.to_bytes())
        r = sign(peer, target, m)
        assert r.status_code == 409 and r.json()["detail"].startswith("wrong-prev-batch-root"), r.text
        one_request_per_window_is_bounded(peer, target, omitting, broken, start, cam0, base_seq)
    # The same request from a node that is not the slot's proposer is refused too.
    other = next(i for i, k in enumerate(cluster.keys[:len(cluster.keys)])
                 if Account.from_key(k).address in nodes and Account.from_key(k).address != proposer_addr)
    with signing_client(cluster, other) as peer:
        r = sign(peer, target, omitting)
        assert r.status_code == 409 and r.json()["detail"].startswith("not-the-proposer"), r.text
    alarms = cluster.api(target, "/api/v1/alarms", kind="batch.refused")
    assert len(alarms) >= 3


def one_request_per_window_is_bounded(peer: httpx.Client, target, omitting: BatchManifest, broken: BatchManifest,
                                      start: int, cam0: bytes, base_seq: int) -> None:
    """The window's two requests (holdings, signing with the manifests inline): what they
    answer, and refusals of what they must not carry, as problem documents."""
    url = target.config.api_url + "/peer/v1/batches/"
    cam = "0x" + cam0.hex()
    held = peer.post(url + "holdings", json={"windowStartMs": start, "windowEndMs": start + WINDOW,
                                              "cameras": [{"cameraId": cam, "have": [[base_seq, base_seq]]}]})
    assert held.status_code == 200, held.text
    assert held.json()["cameras"] == [{"cameraId": cam, "seqs": [base_seq + 1, base_seq + 2]}]
    unlisted = peer.post(url + "holdings", json={"windowStartMs": start, "windowEndMs": start + WINDOW, "cameras": []})
    assert {"cameraId": cam, "seqs": [base_seq, base_seq + 1, base_seq + 2]} in unlisted.json()["cameras"]
    for body in ({"windowStartMs": start, "windowEndMs": start + 2 * WINDOW, "cameras": []},
                 {"windowStartMs": start, "windowEndMs": start + WINDOW, "cameras": [{"cameraId": cam, "have": [[5, 2]]}]},
                 {"windowStartMs": start, "windowEndMs": start + WINDOW, "cameras": [{"cameraId": "0x12", "have": []}]}):
        r = peer.post(url + "holdings", json=body)
        assert r.status_code == 422 and r.json()["type"].endswith("/body-invalid"), r.text
    frames = peer.post(url + "frames", json={"frames": [{"cameraId": cam, "seqs": [base_seq, base_seq + 2, 10**9]}]})
    assert frames.status_code == 200 and frames.json()["complete"], frames.text
    got = {p["seq"]: pk.decode_packet(base64.b64decode(p["packet"])) for p in frames.json()["packets"]}
    assert sorted(got) == [base_seq, base_seq + 2] and all(p.camera_ip == IPS[0] for p in got.values())
    assert got[base_seq].payload == b"forgery probe 0"  # the original signed packet, as the camera sent it
    split = [{"cameraId": cam, "seqs": list(range(2_049))}, {"cameraId": "0x" + "ab" * 32, "seqs": list(range(2_049))}]
    r = peer.post(url + "frames", json={"frames": split})
    assert r.status_code == 422 and r.json()["type"].endswith("/too-many-seqs"), r.text
    other_block = base64.b64encode(LocalStore(target.config.data_dir / "store").get(
        cid_from_digest(broken.headers[1].manifest_digest))).decode()
    r = peer.post(url + "sign", json={"manifestCid": omitting.cid, "attempt": 0,
                                      "manifest": base64.b64encode(omitting.to_bytes()).decode(), "blocks": [other_block]})
    assert r.status_code == 409 and r.json()["detail"].startswith("inline-mismatch"), r.text
    r = peer.post(url + "sign", json={"manifestCid": omitting.cid, "attempt": 0,
                                      "manifest": base64.b64encode(broken.to_bytes()).decode()})
    assert r.status_code == 409 and r.json()["detail"].startswith("inline-mismatch"), r.text
    r = peer.post(url + "sign", json={"manifestCid": omitting.cid, "attempt": 0, "manifest": "not base64!"})
    assert r.status_code == 422 and r.json()["type"].endswith("/body-invalid"), r.text


def caught_up(cluster: Cluster, node, timeout: float = 30.0) -> int:
    """Waits until the node has followed every batch on chain; returns how many it followed."""
    batches = cluster.deployment.batch_client(Signer(cluster.w3, cluster.keys[0]))
    deadline = time.monotonic() + timeout
    while True:
        followed = cluster.api(node, "/api/v1/status")["batch"]["batchesFollowed"]
        if followed == batches.batch_count() or time.monotonic() > deadline:
            return followed
        time.sleep(0.3)


def restart_keeps_tips(cluster: Cluster) -> None:
    """A killed node resumes after the last batch it followed: none is followed twice."""
    node = cluster.nodes[1]
    n_before = caught_up(cluster, node)
    counted = counter(cluster, node, "batches_followed")
    assert counted == n_before
    cluster.kill_node(node)
    cluster.start_node(node)
    n_after = caught_up(cluster, node)
    assert counter(cluster, node, "batches_followed") == counted + (n_after - n_before)


def test_a_stopped_batch_proposer_is_taken_over_in_its_slot(tmp_path):
    cluster, keys = start_cluster(tmp_path)
    try:
        nodes = cluster.consortium().nodes()
        by_address = addresses(cluster)
        now = int(time.time() * 1000)
        t0 = now - now % WINDOW + WINDOW
        windows = 4
        victim_start = t0 + 2 * WINDOW
        victim = by_address[proposer_for(None, victim_start, nodes)]
        stop_at = victim_start + WINDOW - 800  # late in its window, before it closes
        stopped = []

        def maybe_stop(wall: int) -> None:
            if not stopped and wall >= stop_at:
                stopped.append(counter(cluster, victim, "lost_races"))
                cluster.kill_node(victim)

        stream(cluster, keys, t0, windows, on_tick=maybe_stop)
        recs = wait_batches(cluster, windows, timeout=120)
        assert [r.window_start_ms for r in recs[:windows]] == [t0 + k * WINDOW for k in range(windows)]
        assert all(r.block_count == len(IPS) for r in recs[:windows])
        batches = cluster.deployment.batch_client(Signer(cluster.w3, cluster.keys[0]))
        dead = next(a for a, n in by_address.items() if n is victim)
        submitters = {}
        for i in range(windows):
            logs = batches.contract.events.BatchAnchored().get_logs(from_block=0, argument_filters={"index": i})
            submitters[recs[i].window_start_ms] = logs[0]["args"]["submitter"]
        assert submitters[victim_start] != dead  # taken over
        for start, who in submitters.items():
            if start < victim_start or proposer_for(None, start, nodes) != dead:
                assert who == proposer_for(None, start, nodes), (start, who)  # a live primary keeps its windows
        assert stopped == [0]
        for node in cluster.nodes:
            if node is not victim:
                assert counter(cluster, node, "lost_races") == 0, node.name
    finally:
        cluster.stop()
