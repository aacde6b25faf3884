"""Evidence in batch mode (issue 9, docs/EVIDENCE.md "Batch mode"): a camera whose blocks were
anchored by BatchLedger is extracted, verified (Python and JavaScript) and proven like a per-header
one, and every evidence-trust rule holds: forged batch manifests, broken per-camera chains, a second
header for the camera, omitted blocks, an untrusted BatchLedger and edited frames each fail with
their named code and a non-zero exit in both verifiers.

The history is built without node processes (batch_fixtures), on real Anvil."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from batch_fixtures import BCAM_A, build_batch_history, deploy_batch_ledger
from offchain.camera.samples import sample_path
from offchain.core.batch import BatchManifest
from offchain.evidence.batch_anchors import BatchReader
from offchain.evidence.bundle import ChainReader, verify_bundle
from offchain.evidence.extract import anchor_source, extract
from offchain.evidence.report import EXIT_CODES
from offchain.paths import REPO_ROOT

pytestmark = pytest.mark.slow

JS_VERIFIER = REPO_ROOT / "scripts" / "verify_bundle.js"
RANGE = (25_000, 65_000)  # blocks 2-4; block 1 (batch 0) is what block 2 must link to


@pytest.fixture(scope="module")
def chain(devchain, w3):
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    yield
    w3.provider.make_request("evm_revert", [snapshot])


def _history(devchain, w3, base_deployment, tmp: Path, **kw):
    return build_batch_history(w3, devchain.private_keys, base_deployment, tmp / "store", vtest=sample_path("vtest"),
                               rpc_url=devchain.rpc_url, **kw)


def _extract(hist, w3, out: Path, rng=RANGE, **kw):
    cam = hist.cam_a
    a, b = hist.ms(rng[0]), hist.ms(rng[1])
    store = hist.store()
    reader = anchor_source(w3, hist.video_ledger, kw.pop("batch_ledger", hist.batch_ledger), cam, a, b, [store])
    return extract(BCAM_A, a, b, reader, [store], out, **kw)


@pytest.fixture(scope="module")
def hist(chain, devchain, w3, base_deployment, tmp_path_factory):
    return _history(devchain, w3, base_deployment, tmp_path_factory.mktemp("batch"))


@pytest.fixture(scope="module")
def genuine(hist, w3, tmp_path_factory):
    res = _extract(hist, w3, tmp_path_factory.mktemp("genuine"))
    assert res.report.verdict == "verified", res.report.render_text()
    return res.bundle_path


def run_js(bundle: Path, hist, tmp: Path, trust_batch: str | None = None) -> tuple[int, dict]:
    trust = tmp / "trust.json"
    hist.trust_file(trust)
    if trust_batch:
        doc = json.loads(trust.read_text())
        doc["deployments"][0]["BatchLedger"] = trust_batch
        trust.write_text(json.dumps(doc))
    p = subprocess.run(["node", str(JS_VERIFIER), str(bundle), "--rpc", hist.rpc_url, "--json", "--trust", str(trust)],
                       capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert p.stdout, p.stderr
    return p.returncode, json.loads(p.stdout)


def failures(report) -> set[str]:
    if isinstance(report, dict):
        return {f["code"] for f in report["findings"] if f["severity"] == "failure"}
    return {f.code for f in report.by_severity("failure")}


def both_fail(bundle: Path, hist, tmp: Path, code: str, trust=None):
    py = verify_bundle(bundle, hist.rpc_url, trust=trust or hist.trust())
    rc, js = run_js(bundle, hist, tmp)
    assert py.verdict == "failed" and code in failures(py), py.render_text()
    assert py.exit_code == EXIT_CODES["failed"]
    assert js["verdict"] == "failed" and code in failures(js), js["findings"]
    assert rc == EXIT_CODES["failed"]
    assert failures(js) == failures(py), (failures(js), failures(py))  # the same codes in both
    return py, js


def index_of(bundle: Path) -> dict:
    with zipfile.ZipFile(bundle) as zf:
        return json.loads(zf.read("bundle.json"))


def rewrite(src: Path, dst: Path, replace: dict[str, bytes | None]) -> Path:
    """A copy of a bundle with members replaced (None: left out)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = replace.get(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    return dst


# --------------------------------------------------------------------------- genuine


def test_extract_chooses_batch_mode_from_the_chain(hist, w3):
    a, b = hist.ms(RANGE[0]), hist.ms(RANGE[1])
    assert isinstance(anchor_source(w3, hist.video_ledger, hist.batch_ledger, hist.cam_a, a, b, []), BatchReader)
    # without a BatchLedger in the trusted deployment, or a camera with per-header blocks: per header
    assert isinstance(anchor_source(w3, hist.video_ledger, None, hist.cam_a, a, b, []), ChainReader)


def test_batch_bundle_says_batch_and_carries_the_manifests(hist, genuine):
    index = index_of(genuine)
    assert index["anchoring"] == "batch" and index["contracts"]["BatchLedger"] == hist.batch_ledger
    # batches 1-3 hold the range; batch 0 holds block 1, which block 2 must link to
    assert [b["index"] for b in index["batches"]] == [0, 1, 2, 3]
    with zipfile.ZipFile(genuine) as zf:
        for b in index["batches"]:
            m = BatchManifest.from_bytes(zf.read(b["manifest"]))
            assert m.digest == hist.manifests[b["index"]].digest
            assert b["anchorTx"] == hist.anchored[b["index"]].tx.tx_hash
            assert len(b["signers"]) == 3
    assert [b["height"] for b in index["blocks"] if not b["contextOnly"]] == [2, 3, 4]
    assert all(b["anchorTx"] == hist.anchored[b["height"] - 1].tx.tx_hash for b in index["blocks"])


def test_batch_bundle_verifies_in_python_and_javascript(hist, genuine, tmp_path):
    py = verify_bundle(genuine, hist.rpc_url, trust=hist.trust())
    assert py.verdict == "verified" and py.exit_code == 0, py.render_text()
    assert py.has("frame.proof.valid") and py.has("block.final")
    rc, js = run_js(genuine, hist, tmp_path)
    assert js["verdict"] == "verified" and rc == 0, [f for f in js["findings"] if f["severity"] == "failure"]
    assert set(js["codes"]) == {f.code for f in py.findings}, set(js["codes"]) ^ {f.code for f in py.findings}


def test_frame_proof_verifies_on_chain_through_the_batch(hist, w3):
    reader = BatchReader(w3, hist.batch_ledger, hist.video_ledger, lambda rec: hist.manifests[rec.index].to_bytes())
    heights = reader.heights_in_range(hist.cam_a, hist.ms(0), hist.ms(20_000))
    assert heights == [1]
    sealed = hist.blocks[BCAM_A][0]
    index = reader.batch_index_of(hist.cam_a, 1)
    f = sealed.manifest.frames[3]
    proof = sealed.tree.get_proof((hist.cam_a, f.seq, f.timestamp_ms, f.sha256))
    from offchain.core.batch import batch_tree, block_proof
    tree = batch_tree(hist.manifests[index].block_hashes)
    from offchain.chain.client import Signer
    from offchain.chain.ledger import BatchLedgerClient
    client = BatchLedgerClient(Signer(w3, "0x" + "11" * 32), hist.batch_ledger)
    assert client.verify_frame(index, sealed.header, block_proof(tree, sealed.hash), f.seq, f.timestamp_ms, f.sha256,
                               proof)
    assert not client.verify_frame(index, sealed.header, block_proof(tree, sealed.hash), f.seq, f.timestamp_ms + 1,
                                   f.sha256, proof)


# --------------------------------------------------------------------------- forged bundles


def test_edited_batch_manifest_fails_with_root_mismatch(hist, genuine, tmp_path):
    index = index_of(genuine)
    member = next(b["manifest"] for b in index["batches"] if b["index"] == 2)
    with zipfile.ZipFile(genuine) as zf:
        doc = json.loads(zf.read(member))
    doc["blocks"][0]["frameCount"] += 1
    edited = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    forged = rewrite(genuine, tmp_path / "edited-batch.zip", {member: edited})
    both_fail(forged, hist, tmp_path, "batch.root.mismatch")


def test_missing_batch_manifest_fails(hist, genuine, tmp_path):
    member = next(b["manifest"] for b in index_of(genuine)["batches"] if b["index"] == 0)
    forged = rewrite(genuine, tmp_path / "no-batch.zip", {member: None})
    both_fail(forged, hist, tmp_path, "batch.manifest.missing")


def test_block_omitted_from_the_middle_fails(hist, genuine, tmp_path):
    index = index_of(genuine)
    dropped = next(b for b in index["blocks"] if b["height"] == 3)
    index["blocks"] = [b for b in index["blocks"] if b["height"] != 3]
    forged = rewrite(genuine, tmp_path / "omitted.zip", {"bundle.json": json.dumps(index).encode(),
                                                        dropped["manifest"]: None, dropped["proof"]: None})
    both_fail(forged, hist, tmp_path, "block.missing")


def test_edited_frame_fails(hist, genuine, tmp_path):
    index = index_of(genuine)
    clip = index["clips"][0]
    seq = clip["frames"][len(clip["frames"]) // 2][1]
    frame = hist.frames[seq].data
    with zipfile.ZipFile(genuine) as zf:
        data = bytearray(zf.read(clip["path"]))
    at = bytes(data).index(frame) + len(frame) // 2
    data[at] ^= 0x10
    forged = rewrite(genuine, tmp_path / "frame.zip", {clip["path"]: bytes(data)})
    both_fail(forged, hist, tmp_path, "frame.digest.mismatch")


def test_mode_other_than_the_chains_fails(hist, genuine, tmp_path):
    """A batch bundle relabelled per-header: the trusted chain says batch."""
    index = index_of(genuine)
    index["anchoring"] = "header"
    del index["batches"]
    del index["contracts"]["BatchLedger"]
    forged = rewrite(genuine, tmp_path / "relabelled.zip", {"bundle.json": json.dumps(index).encode()})
    both_fail(forged, hist, tmp_path, "bundle.anchoring.mismatch")


# --------------------------------------------------------------------------- forged histories


@pytest.fixture
def forged_chain(chain, w3):
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    yield
    w3.provider.make_request("evm_revert", [snapshot])


@pytest.mark.parametrize("forge, code", [("broken_link", "batch.chain.broken"), ("duplicate", "batch.camera.duplicate")])
def test_anchored_history_breaking_the_camera_chain_fails(forged_chain, hist, devchain, w3, base_deployment, tmp_path,
                                                          forge, code):
    """What a colluding quorum could anchor (the contract does not check each camera's chain in
    batch mode): extraction and both verifiers refuse it."""
    bad = _history(devchain, w3, base_deployment, tmp_path, forge=forge)
    res = _extract(bad, w3, tmp_path / "out")
    assert res.report.verdict == "failed" and res.report.has(code), res.report.render_text()
    both_fail(res.bundle_path, bad, tmp_path, code)


def test_bundle_naming_an_untrusted_batch_ledger_fails(forged_chain, hist, devchain, w3, base_deployment, tmp_path):
    """The same history anchored on a BatchLedger the verifier does not trust (same consortium,
    same nodes' keys): the trusted deployment's BatchLedger is the only one that counts."""
    other = deploy_batch_ledger(w3, devchain.private_keys, base_deployment.consortium)
    copy = _history(devchain, w3, base_deployment, tmp_path, batch_ledger=other)
    res = _extract(copy, w3, tmp_path / "out", batch_ledger=other)
    assert index_of(res.bundle_path)["contracts"]["BatchLedger"] == other
    py = verify_bundle(res.bundle_path, hist.rpc_url, trust=hist.trust())
    assert py.verdict == "failed" and "bundle.contract.mismatch" in failures(py), py.render_text()
    rc, js = run_js(res.bundle_path, hist, tmp_path)
    assert js["verdict"] == "failed" and "bundle.contract.mismatch" in failures(js) and rc == 1
    # trusting nothing at all: never verified
    dep_less = verify_bundle(res.bundle_path, hist.rpc_url, trust=type(hist.trust())())
    assert dep_less.verdict == "untrusted" and dep_less.exit_code == EXIT_CODES["untrusted"]


def test_cli_extract_and_verify_in_batch_mode(hist, w3, tmp_path):
    from offchain.cli import main

    trust = hist.trust_file(tmp_path / "trust.json")
    out = tmp_path / "cli"
    rc = main(["extract", "--camera", BCAM_A, "--from", str(hist.ms(RANGE[0])), "--to", str(hist.ms(RANGE[1])),
               "--rpc", hist.rpc_url, "--trust", str(trust), "--store", str(hist.store_dir), "--out", str(out)])
    assert rc == 0
    bundle = next(out.glob("*.zip"))
    assert index_of(bundle)["anchoring"] == "batch"
    assert main(["verify", str(bundle), "--rpc", hist.rpc_url, "--trust", str(trust)]) == 0


def test_prove_a_single_frame_in_batch_mode(hist, w3, tmp_path):
    from offchain.cli import main
    from offchain.evidence.prove import prove

    at = hist.ms(30_050)
    store = hist.store()
    reader = anchor_source(w3, hist.video_ledger, hist.batch_ledger, hist.cam_a, at, at + 1, [store])
    proof = prove(BCAM_A, at, reader, [store])
    assert proof.ok and proof.anchoring == "batch" and proof.batch_index == 1 and proof.bytes_verified
    assert proof.frame.timestamp_ms <= at and proof.height == 2
    trust = hist.trust_file(tmp_path / "trust.json")
    assert main(["prove", "--camera", BCAM_A, "--at", str(at), "--rpc", hist.rpc_url, "--trust", str(trust),
                 "--store", str(hist.store_dir), "--out", str(tmp_path / "p")]) == 0
    assert json.loads((tmp_path / "p" / "proof.json").read_text())["batch"]["index"] == 1


def test_edited_frame_proof_fails(hist, genuine, tmp_path):
    """The frames' multiproof is checked against the header the batch root anchors (locally; the
    header's place in the batch on chain)."""
    index = index_of(genuine)
    member = next(b["proof"] for b in index["blocks"] if b["height"] == 4)  # a partial block: a real proof
    with zipfile.ZipFile(genuine) as zf:
        doc = json.loads(zf.read(member))
    doc["proof"][0] = "0x" + "ab" * 32
    forged = rewrite(genuine, tmp_path / "proof.zip", {member: json.dumps(doc).encode()})
    both_fail(forged, hist, tmp_path, "frame.proof.invalid")


def test_a_batch_a_node_disputed_on_record_is_not_final_to_either_verifier(forged_chain, hist, genuine, w3, devchain,
                                                                          tmp_path):
    """Final on inclusion means a quorum signed; a node that did not sign puts its objection on
    record (BatchLedger.disputeBatch) and both verifiers then refuse the batch's block: a quorum
    cannot hide one honest node's objection (docs/CONTRACTS.md)."""
    from offchain.chain.client import Signer
    from offchain.chain.ledger import BatchLedgerClient

    index = index_of(genuine)["batches"][-1]["index"]  # the last batch of the range
    BatchLedgerClient(Signer(w3, devchain.private_keys[5]), hist.batch_ledger).dispute_batch(index, "omits frame 7")
    py, js = both_fail(genuine, hist, tmp_path, "block.not_final")
    assert any("disputed" in f.message for f in py.by_severity("failure") if f.code == "block.not_final")
