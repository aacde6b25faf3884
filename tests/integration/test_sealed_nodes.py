"""S5 with real node processes (Anvil, contracts, three nodes with ``seal_sessions = true``): a
session formed while the nodes run; a camera streams a real recording through it; the frames of the
session's range rest sealed in every node's store (no plaintext byte on disk; also the ones a
node got by repair from its peers' sealed stores), the others plain;
the blocks are anchored and attested as ever. A party extracts with its own account key: the clip
is byte for byte the one extracted from plaintext frames, and the bundle verifies in Python and
in JavaScript, unchanged. An outsider's key opens nothing: `CannotUnseal`, and an extraction
without the frames."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from offchain.camera.agent import CameraAgent
from offchain.camera.samples import sample_path
from offchain.camera.sources import FileSource
from offchain.chain.client import Signer
from offchain.chain.ledger import VideoLedgerClient
from offchain.chain.sessions import SigningSessionClient
from offchain.core import agreement
from offchain.core.agreement import Proposal
from offchain.core.block import camera_id
from offchain.core.cid import cid_for_bytes, cid_from_digest
from offchain.evidence.bundle import verify_bundle
from offchain.evidence.extract import extract
from offchain.node.cluster import Cluster
from offchain.paths import REPO_ROOT
from offchain.store.local import LocalStore
from offchain.store.sealed import INDEX_NAME, CannotUnseal, open_party_store

pytestmark = pytest.mark.slow

IP = "10.0.55.1"
BANK, CUSTOMER, OUTSIDER = 1, 2, 8
REPAIRER = "node-customer"
WINDOW = 5_000
SESSION = (5_000, 15_000)  # of the stream's 20 s, relative to t0
SETTINGS = {"seal_sessions": True, "window_ms": WINDOW, "missing_wait_ms": 500, "repair_deadline_ms": 2000,
            "idle_close_ms": 1500, "proposer_timeout_ms": 2000, "store_fsync": "none"}


def _form_session(cluster: Cluster, t0: int) -> bytes:
    address = cluster.deployment.signing_session
    bank = SigningSessionClient(Signer(cluster.w3, cluster.keys[BANK]), address)
    now = cluster.w3.eth.get_block("latest")["timestamp"]
    parties = (bank.signer.address, Signer(cluster.w3, cluster.keys[CUSTOMER]).address)
    p = Proposal(initiator=parties[0], parties=parties, cameras=(camera_id(IP),), camera_party=(0,),
                 document_hash=hashlib.sha256(b"contract").digest(), start_ms=t0 + SESSION[0],
                 end_ms=t0 + SESSION[1], expires_at=now + 3600, salt=os.urandom(32))
    bank.propose(p)
    sid = agreement.session_id(bank.domain, p)
    SigningSessionClient(Signer(cluster.w3, cluster.keys[CUSTOMER]), address).respond(sid, True)
    return sid


def _wait(what, predicate, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _final_blocks(ledger: VideoLedgerClient, cam: bytes, end_ms: int):
    recs = [ledger.block_at(cam, h) for h in range(1, ledger.chain_length(cam) + 1)]
    if recs and recs[-1].header.window_end_ms >= end_ms and all(r.finalized for r in recs):
        return recs
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("sealed")
    cluster = Cluster(work, settings=SETTINGS)
    try:
        cluster.start_chain()
        key = cluster.register_camera(IP, BANK, b"g")
        cluster.seal_genesis()
        cluster.configure_nodes()
        cluster.start_nodes()
        now = int(time.time() * 1000)
        t0 = now - now % WINDOW - 60_000
        sid = _form_session(cluster, t0)  # while the nodes run: each learns it from the chain
        _wait("every node's session key", lambda: all(
            cluster.api(n, "/api/v1/status")["sealing"]["sessions"] == 1 for n in cluster.nodes), 60)
        source = FileSource(sample_path("vtest"), start_ms=t0)  # the agent sends its codec in the hello
        frames = [f for f in FileSource(sample_path("vtest"), start_ms=t0) if f.timestamp_ms < t0 + 20_000]
        # node-customer never gets seq 70-79 (7-8 s, inside the session) from the camera: it repairs
        # them from peers, which read them out of their sealed stores
        stats = asyncio.run(CameraAgent(IP, key, source, {n.name: n.ingest for n in cluster.nodes}, speed=0,
                                        max_frames=len(frames), faults=f"{REPAIRER}:drop=seq:70-79",
                                        end_timeout=30).run())
        assert stats[REPAIRER].dropped_by_fault == 10
        ledger = cluster.ledger(6)
        blocks = _wait("final blocks", lambda: _final_blocks(ledger, camera_id(IP), frames[-1].timestamp_ms), 150)
        cluster.t0, cluster.sid, cluster.frames, cluster.blocks = t0, sid, frames, blocks
        yield cluster
    finally:
        cluster.stop()


def _store_dir(node) -> Path:
    return node.config.data_dir / "store"


def _in_session(run, f) -> bool:
    return run.t0 + SESSION[0] <= f.timestamp_ms < run.t0 + SESSION[1]


def test_session_frames_rest_sealed_in_every_node_store(run):
    sealed = [f for f in run.frames if _in_session(run, f)]
    plain = [f for f in run.frames if not _in_session(run, f)]
    assert sealed and plain
    for node in run.nodes:
        d = _store_dir(node)
        raw = b"".join(p.read_bytes() for p in (d / "packs").glob("*.pack"))
        raw += b"".join(p.read_bytes() for p in (d / "blocks").rglob("*") if p.is_file())
        inner = LocalStore(d, fsync="none")
        for f in sealed:
            probe = f.data[len(f.data) // 2:][:48]  # 48 bytes from inside the frame
            assert probe not in raw, (node.name, f.seq)
            assert not inner.has(cid_for_bytes(f.data))
        assert all(inner.get(cid_for_bytes(f.data)) == f.data for f in plain)  # outside the session: as before
        if node.name == REPAIRER:  # what came by repair rests sealed too
            assert run.api(node, "/api/v1/status")["counters"][IP].get("repaired", 0) >= 10
        status = run.api(node, "/api/v1/status")["sealing"]
        assert status["framesSealed"] >= len(sealed) and status["failures"] == 0
        assert status["cameras"] == ["0x" + camera_id(IP).hex()]


def _extract(run, stores, out: Path):
    a, b = run.t0 + SESSION[0], run.t0 + SESSION[1]
    reader = VideoLedgerClient(Signer(run.w3, run.keys[6]), run.deployment.video_ledger)
    return extract(IP, a, b, reader, stores, out)


def _plain_reference(run, tmp: Path) -> LocalStore:
    """The recording's frames and the anchored manifests in a plain store: what a clip is compared to."""
    ref = LocalStore(tmp / "plain", fsync="none")
    for f in run.frames:
        ref.put(f.data)
    node_store = LocalStore(_store_dir(run.nodes[0]), fsync="none")
    for r in run.blocks:
        ref.put(node_store.get(cid_from_digest(r.header.manifest_digest)))  # manifests rest plain
    return ref


def _js(bundle: Path, rpc: str, ledger: str) -> dict:
    p = subprocess.run(["node", str(REPO_ROOT / "scripts" / "verify_bundle.js"), str(bundle), "--rpc", rpc, "--json",
                        "--ledger", ledger], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert p.stdout, p.stderr
    return json.loads(p.stdout)


def test_party_extraction_is_byte_exact_and_verifies_unchanged(run, tmp_path):
    node = run.node(REPAIRER)  # its copies of seq 70-79 came from its peers
    d = _store_dir(node)
    party = open_party_store(LocalStore(d, fsync="none"), d / INDEX_NAME, bytes.fromhex(run.keys[CUSTOMER].removeprefix("0x")))
    sealed_res = _extract(run, [party], tmp_path / "sealed")
    assert sealed_res.verdict == "verified", sealed_res.report.render_text()
    plain_res = _extract(run, [_plain_reference(run, tmp_path)], tmp_path / "plain-out")
    assert plain_res.verdict == "verified", plain_res.report.render_text()
    assert sealed_res.clips and [c.read_bytes() for c in sealed_res.clips] == [c.read_bytes() for c in plain_res.clips]
    py = verify_bundle(sealed_res.bundle_path, run.chain.rpc_url, ledger_address=run.deployment.video_ledger)
    assert py.verdict == "verified"
    assert _js(sealed_res.bundle_path, run.chain.rpc_url, run.deployment.video_ledger)["verdict"] == "verified"


def test_without_a_recipient_key_nothing_sealed_opens(run, tmp_path):
    d = _store_dir(run.nodes[0])
    outsider = open_party_store(LocalStore(d, fsync="none"), d / INDEX_NAME, bytes.fromhex(run.keys[OUTSIDER].removeprefix("0x")))
    frame = next(f for f in run.frames if _in_session(run, f))
    with pytest.raises(CannotUnseal) as exc:
        outsider.get(cid_for_bytes(frame.data))
    assert type(exc.value.error).__name__ == "WrongRecipient"
    res = _extract(run, [outsider], tmp_path / "outsider")
    assert res.verdict == "failed" and res.report.has("frame.missing"), res.report.render_text()


def test_cli_extract_with_a_party_keystore(run, tmp_path, capsys):
    from offchain.chain.keyfile import PasswordSource, write_keystore
    from offchain.cli import main

    pw = tmp_path / "pw"
    pw.write_text("party password\n")
    keystore = tmp_path / "bank.json"
    write_keystore(keystore, run.keys[BANK], PasswordSource(file=str(pw), prompt=False))
    store = str(_store_dir(run.nodes[2]))
    common = ["--camera", IP, "--from", str(run.t0 + SESSION[0]), "--to", str(run.t0 + SESSION[1]), "--store", store,
              "--rpc", run.chain.rpc_url, "--deployment", str(run.deployment_path), "--json"]
    assert main(["extract", *common, "--out", str(tmp_path / "party"), "--keystore", str(keystore),
                 "--password-file", str(pw)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "verified" and doc["outputs"]["clips"]
    # without the keystore: the sealed frames are named as such, and nothing verifies
    assert main(["extract", *common, "--out", str(tmp_path / "nokey")]) != 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "failed" and "cannot be opened here" in json.dumps(doc)
