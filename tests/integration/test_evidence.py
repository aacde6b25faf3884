"""Evidence extraction, bundles, the JavaScript verifier and single-frame proofs, on a real chain.

One ledger per module (see evidence_fixtures.py): camera A replays vtest in four 20-second blocks
with a declared gap (keyframe lost), a span substituted from camera B and a last block that is not
final; camera B replays bikes (B-frames) across a block boundary. Everything is anchored and
attested on the session's Anvil, inside a snapshot reverted when the module ends.

Tamper tests change one thing (a stored frame, a manifest, a header, a clip packet) and require
the specific status code from `extract`, from `verify` and from scripts/verify_bundle.js.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from evidence_fixtures import CAM_A, CAM_B, GAP_SEQS, SUB_SEQS
from offchain.core.block import FrameRef, build_block, camera_id
from offchain.core.cid import cid_from_digest
from offchain.evidence.bundle import ChainReader, verify_bundle
from offchain.evidence.cli import add_evidence_commands
from offchain.evidence.extract import EvidenceError, extract, parse_camera, parse_time, plan_stream
from offchain.evidence.prove import ProofError, prove
from offchain.evidence.report import CODES, EXIT_CODES
from offchain.evidence.verify import uncovered_spans
from offchain.evidence.video import probe_mp4, remux_to_mp4
from offchain.paths import REPO_ROOT
from offchain.store.local import LocalStore

pytestmark = pytest.mark.slow

JS_VERIFIER = REPO_ROOT / "scripts" / "verify_bundle.js"


# --------------------------------------------------------------------------- fixtures and helpers


def run_extract(ev, out: Path, cam: str, a: int, b: int, stores=None, ledger=None, **kw):
    return extract(cam, ev.ms(a), ev.ms(b), ledger or ev.reader, stores if stores is not None else [ev.store()], out, **kw)


@pytest.fixture(scope="module")
def gap_extraction(ev, tmp_path_factory):
    """23.3 s - 55.5 s of camera A: blocks 2 and 3, the declared gap and the substituted span."""
    return run_extract(ev, tmp_path_factory.mktemp("r3"), CAM_A, 23_300, 55_500, probe=True)


def failures(report) -> set[str]:
    return {f.code for f in report.by_severity("failure")}


def run_js(bundle: Path, rpc: str, ledger: str | None) -> tuple[int, dict]:
    cmd = ["node", str(JS_VERIFIER), str(bundle), "--rpc", rpc, "--json"] + (["--ledger", ledger] if ledger else [])
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert p.stdout, p.stderr
    return p.returncode, json.loads(p.stdout)


def js_keys(doc: dict) -> set[tuple[str, int | None]]:
    return {(f["code"], f["height"]) for f in doc["findings"]}


def assert_same_verdict_everywhere(bundle: Path, ev, expected_failures: set[str] | None = None, extract_report=None):
    """verify (Python) and verify_bundle.js agree code for code; optionally with extraction too."""
    py = verify_bundle(bundle, ev.rpc_url, ledger_address=ev.ledger_address)
    rc, js = run_js(bundle, ev.rpc_url, ev.ledger_address)
    assert js["verdict"] == py.verdict, [f for f in js["findings"] if f["severity"] == "failure"]
    assert js_keys(js) == py.code_keys(), sorted(js_keys(js) ^ py.code_keys(), key=str)
    assert rc == EXIT_CODES[py.verdict]
    if expected_failures is not None:
        assert failures(py) == expected_failures, py.render_text()
    if extract_report is not None:
        assert py.verdict == extract_report.verdict
        assert py.code_keys() == extract_report.code_keys()
    return py, js


def bundle_index(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("bundle.json"))


def rewrite_bundle(src: Path, dst: Path, replace: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, replace.get(info.filename, zin.read(info)))
    return dst


def clip_listing(ev, index: dict, clip_no: int) -> list:
    c = index["clips"][clip_no]
    cam = CAM_A if c["camera"] == "0x" + camera_id(CAM_A).hex() else CAM_B
    return [ev.frames[cam][seq] for _, seq in c["frames"]]


def assert_clip_plays_and_matches_manifest(ev, result) -> None:
    """Each clip decodes end to end; frame count and capture times are the manifest's; the
    original clips' packets are the anchored frames in decode order."""
    index = bundle_index(result.bundle_path)
    files = {Path(f.member or f.path.name).name: f for f in result.clips}
    for i, c in enumerate(index["clips"]):
        clip = files[Path(c["path"]).name]  # a one-pass clip lives only in the bundle: played from a copy of it
        probe = probe_mp4(clip.write_to(result.out_dir / "played" / Path(c["path"]).name) if clip.member else clip.path)
        frames = clip_listing(ev, index, i)
        assert probe.frames == len(frames)
        times = sorted(f.timestamp_ms for f in frames)
        assert probe.timestamps_ms == [t - times[0] + probe.timestamps_ms[0] for t in times]
        assert probe.faststart and probe.codec == "h264"
        if not c["reencoded"]:
            assert probe.packet_sha256 == [f.sha256 for f in frames]
        else:
            assert (probe.width, probe.height) == (ev.codecs[CAM_A].width, ev.codecs[CAM_A].height)


# --------------------------------------------------------------------------- pure planning rules


def _ref(seq: int, ts: int, key: bool = False, dts: int | None = None) -> FrameRef:
    return FrameRef(timestamp_ms=ts, seq=seq, sha256=seq.to_bytes(32, "big"), keyframe=key, dts_ms=dts)


def test_plan_starts_on_a_keyframe_and_keeps_undecodable_frames_raw():
    frames = [(1, _ref(s, s * 100, key=s % 10 == 0)) for s in range(40)]
    segments, raw = plan_stream(frames, 1_250, 3_050)
    assert [[f.seq for _, f in seg] for seg in segments] == [list(range(10, 31))]  # from keyframe 10
    assert raw == []
    # seq 15 unavailable: 16-19 cannot decode (raw), decoding resumes at keyframe 20
    segments, raw = plan_stream(frames, 1_250, 3_050, unavailable={15})
    assert [[f.seq for _, f in seg] for seg in segments] == [list(range(10, 15)), list(range(20, 31))]
    assert [f.seq for _, f in raw] == [16, 17, 18, 19]


def test_plan_closes_b_frame_streams_in_decode_order():
    # I0 P3 B1 B2 P6 B4 B5 I9 ... : presentation order by seq, decode order by dts
    dts = {0: 0, 3: 1, 1: 2, 2: 3, 6: 4, 4: 5, 5: 6, 9: 7, 7: 8, 8: 9}
    frames = [(1, _ref(s, s * 40 + 1000, key=s in (0, 9), dts=dts[s] * 40 + 960)) for s in range(10)]
    segments, raw = plan_stream(frames, 1000 + 40, 1000 + 5 * 40)  # seq 1..4 wanted
    # B-frame 4 needs P6 (decoded before it); the clip opens on I0 and lists decode order
    assert [f.seq for _, f in segments[0]] == [0, 3, 1, 2, 6, 4] and raw == []


def test_uncovered_spans():
    assert uncovered_spans(0, 100, [(10, 20), (20, 50), (60, 200)]) == [(0, 10), (50, 60)]
    assert uncovered_spans(0, 100, []) == [(0, 100)]
    assert uncovered_spans(30, 40, [(0, 100)]) == []


# --------------------------------------------------------------------------- extraction


def test_range_inside_one_block(ev, tmp_path):
    res = run_extract(ev, tmp_path, CAM_A, 5_300, 18_700)
    assert res.report.verdict == "verified", res.report.render_text()
    assert [b.height for b in res.report.blocks] == [1]
    assert len(res.clips) == 1 and res.report.clips[0].kind == "original"
    # the clip opens on the keyframe at 4.0 s (GOP 20 at 10 fps) and ends with the range
    assert res.report.clips[0].start_ms == ev.ms(4_000) and res.report.clips[0].end_ms == ev.ms(18_600)
    assert res.report.has("clip.preroll") and res.report.has("clip.packets.match")
    assert_clip_plays_and_matches_manifest(ev, res)
    assert json.loads(res.report_json.read_text())["verdict"] == "verified"
    assert "VERDICT: VERIFIED" in res.report_txt.read_text()


def test_without_a_bundle_the_clips_and_report_are_written_and_verified(ev, tmp_path):
    res = run_extract(ev, tmp_path, CAM_A, 5_300, 18_700, bundle=False)
    assert res.bundle_path is None and not list(tmp_path.glob("*.zip")) and not list(tmp_path.glob(".*.partial"))
    assert res.report.verdict == "verified", res.report.render_text()
    assert res.report.has("frame.proof.valid") and res.report.has("clip.packets.match")
    assert len(res.clips) == 1 and res.clips[0].path.is_file() and res.clips[0].member is None


def test_range_spanning_blocks_is_one_continuous_clip(ev, tmp_path):
    res = run_extract(ev, tmp_path, CAM_A, 12_500, 24_500, probe=True)
    assert res.report.verdict == "verified", res.report.render_text()
    assert [b.height for b in res.report.blocks] == [1, 2]
    assert all(b.finalized and b.anchor_tx and len(b.attest_txs) == 2 for b in res.report.blocks)
    assert len(res.report.clips) == 1 and res.report.clips[0].decoded_frames == res.report.clips[0].frames == 125
    assert_clip_plays_and_matches_manifest(ev, res)


def test_range_across_declared_gap_and_substituted_span(ev, gap_extraction):
    res = gap_extraction
    r = res.report
    assert r.verdict == "verified_with_declared_gaps", r.render_text()
    assert {"gap.declared", "gap.keyframe_lost", "gap.substituted", "frame.not_playable", "clip.packets.match"} <= r.codes
    assert "clip.reencoded" not in r.codes  # the substitute is H.264: remuxed from its own packets
    assert not failures(r)
    kinds = [(g.kind, g.from_seq, g.to_seq, g.keyframe_lost) for g in r.gaps]
    assert kinds == [("declared", *GAP_SEQS, True), ("substituted", *SUB_SEQS, True)]
    # after each gap, frames up to the next keyframe are verified but cannot be decoded
    assert [g.not_playable_frames for g in r.gaps] == [10, 18]
    assert r.gaps[1].substitute_camera == "0x" + camera_id(CAM_B).hex() and r.gaps[1].substitute_frames == 55
    assert [c.kind for c in r.clips] == ["original", "substituted", "original"]
    assert [c.reencoded for c in r.clips] == [False, False, False]
    assert [c.why for c in r.clips] == ["remux"] * 3
    assert all(c.decoded_frames == c.frames for c in r.clips)
    assert r.clips[1].frames == 55 and r.clips[1].start_ms == ev.ms(46_000)
    # the substituted clip carries camera B's anchored packets byte for byte, under B's own
    # anchored codec configuration, whose block travels in the bundle as a codec source
    index = bundle_index(res.bundle_path)
    assert not [x for x in index["rawFrames"] if x["camera"] == "0x" + camera_id(CAM_B).hex()]
    [source] = index["codecSources"]
    assert source["camera"] == "0x" + camera_id(CAM_B).hex() and source["manifest"].startswith("manifests/")
    with zipfile.ZipFile(res.bundle_path) as zf:
        sub_manifest = json.loads(zf.read(source["manifest"]))
    assert base64.b64decode(sub_manifest["codec"]["extradata"]) == ev.codecs[CAM_B].extradata
    assert_clip_plays_and_matches_manifest(ev, res)


def test_b_frame_stream_takes_its_keyframe_from_the_previous_block(ev, tmp_path):
    res = run_extract(ev, tmp_path, CAM_B, 41_000, 43_000, probe=True)
    r = res.report
    assert r.verdict == "verified", r.render_text()
    assert [(b.height, b.context_only) for b in r.blocks] == [(1, True), (2, False)]
    assert r.clips[0].start_ms == ev.ms(38_520 + 1_200)  # bikes' keyframe at 1.2 s
    assert r.clips[0].decoded_frames == r.clips[0].frames
    assert_clip_plays_and_matches_manifest(ev, res)


def test_non_final_block_uncovered_range_and_empty_range_fail(ev, tmp_path):
    r = run_extract(ev, tmp_path / "a", CAM_A, 65_000, 70_000).report
    assert r.verdict == "failed" and failures(r) == {"block.not_final"}
    r = run_extract(ev, tmp_path / "b", CAM_A, 75_000, 95_000).report
    assert failures(r) == {"block.not_final"} and r.has("range.uncovered")
    assert [g.kind for g in r.gaps] == ["uncovered"] and r.gaps[0].from_ms == ev.ms(80_000)
    r = run_extract(ev, tmp_path / "c", CAM_A, -100_000, -50_000).report
    assert failures(r) == {"range.empty"}


def test_bad_input_is_reported_not_crashed(ev, tmp_path):
    r = run_extract(ev, tmp_path / "u", "10.9.9.9", 0, 10_000)
    assert r.report.verdict == "failed" and failures(r.report) == {"camera.unknown"} and r.bundle_path is None
    assert r.report_json.is_file()
    with pytest.raises(EvidenceError):
        run_extract(ev, tmp_path, CAM_A, 10_000, 10_000)
    with pytest.raises(EvidenceError):
        parse_camera("not a camera!")
    with pytest.raises(EvidenceError):
        parse_time("yesterday")
    assert parse_time("2023-11-14T22:13:20Z") == parse_time("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
    assert parse_camera("0x" + camera_id(CAM_A).hex()) == (camera_id(CAM_A), None)
    # a store that lacks the blocks: every frame and manifest is missing, nothing crashes
    empty = LocalStore(tmp_path / "empty", fsync="none")
    r = run_extract(ev, tmp_path / "e", CAM_A, 5_000, 6_000, stores=[empty]).report
    assert failures(r) == {"manifest.missing"}


def test_extract_from_ipfs_falls_back_to_a_node_store(ev, tmp_path):
    """Frames from an IPFS node (Kubo RPC API, here js-ipfs on loopback), what it lacks from a
    node's local store; the evidence is the same either way."""
    from offchain.store.devipfs import DevIpfsDaemon

    block = ev.block(CAM_A, 1)
    with DevIpfsDaemon() as daemon:
        ipfs = daemon.store(lookup_timeout=0.3, timeout=30.0)
        try:
            ipfs.put(block.manifest_bytes)
            for f in block.manifest.frames[:100]:  # IPFS holds 0-9.9 s of block 1 only
                ipfs.put(ev.frames[CAM_A][f.seq].data)
            only_ipfs = run_extract(ev, tmp_path / "a", CAM_A, 5_300, 8_000, stores=[ipfs])
            both = run_extract(ev, tmp_path / "b", CAM_A, 5_300, 12_000, stores=[ipfs, ev.store()])
        finally:
            ipfs.close()
    assert only_ipfs.report.verdict == both.report.verdict == "verified"
    assert both.report.clips[0].frames == 80  # keyframe at 4.0 s to 11.9 s, half of it from the local store


# --------------------------------------------------------------------------- bundles: Python and JavaScript


def test_bundles_verify_the_same_in_python_and_javascript(ev, gap_extraction, tmp_path):
    assert_same_verdict_everywhere(gap_extraction.bundle_path, ev, set(), gap_extraction.report)
    b = run_extract(ev, tmp_path, CAM_B, 41_000, 43_000)
    assert_same_verdict_everywhere(b.bundle_path, ev, set(), b.report)
    # an unzipped bundle verifies the same
    unzipped = tmp_path / "unzipped"
    with zipfile.ZipFile(b.bundle_path) as zf:
        zf.extractall(unzipped)
    py, _ = assert_same_verdict_everywhere(unzipped, ev, set())
    assert py.verdict == "verified"
    # without any trusted deployment the answer is "untrusted", never "verified" (fail closed)
    unpinned = verify_bundle(b.bundle_path, ev.rpc_url)
    rc, js = run_js(b.bundle_path, ev.rpc_url, None)
    assert unpinned.verdict == js["verdict"] == "untrusted" and rc == 4
    assert unpinned.has("bundle.contract.untrusted") and "bundle.contract.untrusted" in js["codes"]


def test_js_and_python_share_one_status_code_table():
    p = subprocess.run(["node", str(JS_VERIFIER), "--codes"], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert json.loads(p.stdout) == {code: sev for code, (sev, _) in CODES.items()}


def test_corrupt_or_foreign_bundles_fail_cleanly(ev, gap_extraction, tmp_path):
    data = gap_extraction.bundle_path.read_bytes()
    cut = tmp_path / "truncated.zip"
    cut.write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    for bad in (cut, tmp_path / "junk.zip", tmp_path / "absent.zip"):
        py = verify_bundle(bad, ev.rpc_url, ledger_address=ev.ledger_address)
        _, js = run_js(bad, ev.rpc_url, ev.ledger_address)
        assert failures(py) == {"bundle.invalid"} and js["codes"] == ["bundle.invalid"]
    # a chain nobody answers on
    py = verify_bundle(gap_extraction.bundle_path, "http://127.0.0.1:9", ledger_address=ev.ledger_address)
    assert failures(py) == {"chain.unavailable"}


# --------------------------------------------------------------------------- tampering: stores → extract


TAMPER_RANGE = (21_000, 58_000)  # blocks 2 and 3
P1, P2 = 303, 307  # two P-frames of block 2


def _frame_path(store: LocalStore, ev, seq: int) -> Path:
    return store.path_for(cid_from_digest(hashlib.sha256(ev.frames[CAM_A][seq].data).digest()))


def _manifest_path(store: LocalStore, ev, height: int) -> Path:
    return store.path_for(cid_from_digest(ev.block(CAM_A, height).header.manifest_digest))


def _forged_manifest(ev, height: int) -> bytes:
    """A self-consistent forgery of block `height`'s manifest: frames 500-504 removed, everything
    else (tree, count, window) recomputed so the document agrees with itself."""
    real = ev.block(CAM_A, height)
    keep = [f for f in real.manifest.frames if not 500 <= f.seq <= 504]
    forged = build_block(camera_ip=CAM_A, height=height, prev_hash=real.header.prev_hash,
                         window_start_ms=real.header.window_start_ms, window_end_ms=real.header.window_end_ms,
                         frames=keep, proposer=real.header.proposer, codec=real.manifest.codec,
                         gaps=real.manifest.gaps, substitutions=real.manifest.substitutions)
    return forged.manifest_bytes


class LyingChain(ChainReader):
    """An RPC that reports camera A's block 2 header with one field changed."""

    def blocks(self, camera, heights):
        out = super().blocks(camera, heights)
        if camera == camera_id(CAM_A) and out.get(2) is not None:
            b = out[2]
            out[2] = dataclasses.replace(b, header=dataclasses.replace(b.header, window_end_ms=b.header.window_end_ms + 1))
        return out


def tamper_store(kind: str, store: LocalStore, ev) -> None:
    if kind == "bitflip":
        p = _frame_path(store, ev, P1)
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0x10
        p.write_bytes(bytes(data))
    elif kind == "swap":
        a, b = _frame_path(store, ev, P1), _frame_path(store, ev, P2)
        da, db = a.read_bytes(), b.read_bytes()
        a.write_bytes(db)
        b.write_bytes(da)
    elif kind == "drop":
        _frame_path(store, ev, P1).unlink()
    elif kind == "reorder_manifests":
        a, b = _manifest_path(store, ev, 2), _manifest_path(store, ev, 3)
        da, db = a.read_bytes(), b.read_bytes()
        a.write_bytes(db)
        b.write_bytes(da)
    elif kind == "forged_manifest":
        _manifest_path(store, ev, 3).write_bytes(_forged_manifest(ev, 3))


STORE_TAMPERS = {
    "bitflip": ({"frame.digest.mismatch"}, {("frame.digest.mismatch", 2, P1)}),
    "swap": ({"frame.order.invalid"}, {("frame.order.invalid", 2, P1), ("frame.order.invalid", 2, P2)}),
    "drop": ({"frame.missing"}, {("frame.missing", 2, P1)}),
    "reorder_manifests": ({"manifest.order.invalid"}, {("manifest.order.invalid", 2, None), ("manifest.order.invalid", 3, None)}),
    "forged_manifest": ({"manifest.digest.mismatch"}, {("manifest.digest.mismatch", 3, None)}),
    "header_field": ({"block.header.mismatch"}, {("block.header.mismatch", 2, None)}),
}


@pytest.mark.parametrize("kind", list(STORE_TAMPERS))
def test_extract_detects_tampering(ev, tmp_path, kind, caplog):
    caplog.set_level("INFO", logger="offchain.evidence.extract")
    codes, located = STORE_TAMPERS[kind]
    shutil.copytree(ev.store_dir, tmp_path / "store")
    store = LocalStore(tmp_path / "store", fsync="none")
    ledger = None
    if kind == "header_field":
        ledger = LyingChain(ev.reader.contract.w3, ev.ledger_address)
    else:
        tamper_store(kind, store, ev)
    res = run_extract(ev, tmp_path / "out", CAM_A, *TAMPER_RANGE, stores=[store], ledger=ledger)
    r = res.report
    assert r.verdict == "failed"
    assert failures(r) == codes, r.render_text()
    assert {(f.code, f.height, f.seq) for f in r.by_severity("failure")} == located
    # a frame that fails while its clip streams into the bundle restarts the clips the careful way:
    # the half-written member is cut out, the bundle holds each clip once, and every member reads back
    with zipfile.ZipFile(res.bundle_path) as zf:
        names = [i.filename for i in zf.infolist()]
        assert zf.testzip() is None and len(names) == len(set(names))
        assert sorted(n for n in names if n.startswith("clips/")) == sorted(c["path"] for c in bundle_index(res.bundle_path)["clips"])
        assert all(zf.read(c.member) == c.read_bytes() for c in res.clips if c.member)
    restarted = "streamed fetch failed" in caplog.text
    assert restarted == (kind in ("bitflip", "swap", "drop")) and (any(c.member for c in res.clips) or not restarted)


def test_an_intact_copy_in_another_store_repairs_the_extraction(ev, tmp_path):
    shutil.copytree(ev.store_dir, tmp_path / "bad")
    bad = LocalStore(tmp_path / "bad", fsync="none")
    tamper_store("bitflip", bad, ev)
    r = run_extract(ev, tmp_path / "out", CAM_A, *TAMPER_RANGE, stores=[bad, ev.store()]).report
    assert r.verdict == "verified_with_declared_gaps" and not failures(r)
    assert [(f.height, f.seq) for f in r.findings if f.code == "store.block.corrupt"] == [(2, P1)]


# --------------------------------------------------------------------------- tampering: bundle → verify, JS


def _remuxed_clip(ev, index: dict, tmp: Path, change) -> bytes:
    frames = change(clip_listing(ev, index, 0))
    out = remux_to_mp4(ev.codecs[CAM_A], frames, tmp / "forged.mp4")
    return out.path.read_bytes()


def tamper_bundle(kind: str, ev, src: Path, tmp: Path) -> Path:
    index = bundle_index(src)
    clip = index["clips"][0]["path"]
    with zipfile.ZipFile(src) as zf:
        clip_bytes = zf.read(clip)
        m2, m3 = zf.read("manifests/000002.json"), zf.read("manifests/000003.json")
    if kind == "bitflip":
        frame = ev.frames[CAM_A][P1].data
        at = clip_bytes.index(frame) + len(frame) // 2
        flipped = bytearray(clip_bytes)
        flipped[at] ^= 0x10
        changes = {clip: bytes(flipped)}
    elif kind == "swap":
        def swap(fs):
            i, j = next(k for k, f in enumerate(fs) if f.seq == P1), next(k for k, f in enumerate(fs) if f.seq == P2)
            fs = list(fs)
            fs[i], fs[j] = dataclasses.replace(fs[i], data=fs[j].data), dataclasses.replace(fs[j], data=fs[i].data)
            return fs
        changes = {clip: _remuxed_clip(ev, index, tmp, swap)}
    elif kind == "drop":
        changes = {clip: _remuxed_clip(ev, index, tmp, lambda fs: [f for f in fs if f.seq != P1])}
    elif kind == "reorder_manifests":
        changes = {"manifests/000002.json": m3, "manifests/000003.json": m2}
    elif kind == "forged_manifest":
        changes = {"manifests/000003.json": _forged_manifest(ev, 3)}
    elif kind == "header_field":
        index["blocks"][0]["header"]["windowEndMs"] += 1
        changes = {"bundle.json": json.dumps(index).encode()}
    return rewrite_bundle(src, tmp / f"{kind}.zip", changes)


BUNDLE_TAMPERS = {
    "bitflip": {"frame.digest.mismatch"},
    "swap": {"frame.order.invalid"},
    "drop": {"frame.missing"},
    "reorder_manifests": {"manifest.order.invalid"},
    "forged_manifest": {"manifest.digest.mismatch"},
    "header_field": {"block.header.mismatch"},
}


@pytest.fixture(scope="module")
def tamper_source(ev, tmp_path_factory):
    res = run_extract(ev, tmp_path_factory.mktemp("tamper-src"), CAM_A, *TAMPER_RANGE)
    assert res.report.verdict == "verified_with_declared_gaps"
    return res.bundle_path


@pytest.mark.parametrize("kind", list(BUNDLE_TAMPERS))
def test_verify_and_js_detect_bundle_tampering(ev, tamper_source, tmp_path, kind):
    forged = tamper_bundle(kind, ev, tamper_source, tmp_path)
    py, js = assert_same_verdict_everywhere(forged, ev, BUNDLE_TAMPERS[kind])
    assert py.verdict == js["verdict"] == "failed"
    if kind in ("bitflip", "drop"):
        assert [(f.height, f.seq) for f in py.by_severity("failure")] == [(2, P1)]
    if kind == "swap":
        assert sorted(f.seq for f in py.by_severity("failure")) == [P1, P2]


# --------------------------------------------------------------------------- single-frame proof


def test_single_frame_proof_verifies_on_chain(ev):
    p = prove(CAM_A, ev.ms(33_333), ev.reader, [ev.store()])
    assert (p.height, p.frame.seq, p.frame.timestamp_ms) == (2, 333, ev.ms(33_300))
    assert p.ok and p.verified_on_chain and p.verified_locally and p.bytes_verified and p.finalized
    # the proof stands on its own: VideoLedger.verifyFrame through the node's client, from the JSON
    doc = json.loads(p.dumps())
    proof = [bytes.fromhex(x[2:]) for x in doc["proof"]]
    assert ev.reader.verify_frame(p.block_hash, proof, 333, ev.ms(33_300), p.frame.sha256)
    assert not ev.reader.verify_frame(p.block_hash, proof, 334, ev.ms(33_300), p.frame.sha256)
    # a B-frame stream: the picture on screen is the last one captured at or before the instant
    q = prove(CAM_B, ev.ms(40_030), ev.reader, [ev.store()])
    assert q.ok and q.height == 2 and q.bytes_verified and q.frame.timestamp_ms == ev.ms(40_000)
    with pytest.raises(ProofError, match="declared gap"):
        prove(CAM_A, ev.ms(25_500), ev.reader, [ev.store()])
    with pytest.raises(ProofError, match="no anchored block"):
        prove(CAM_A, ev.ms(500_000), ev.reader, [ev.store()])


# --------------------------------------------------------------------------- command line


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="frameledger")
    add_evidence_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_extract_verify_prove(ev, tmp_path, capsys):
    dep = tmp_path / "deployment.json"
    dep.write_text(json.dumps({"chainId": ev.chain_id, "contracts": {
        "Consortium": {"address": ev.consortium_address}, "VideoLedger": {"address": ev.ledger_address}}}))
    common = ["--rpc", ev.rpc_url, "--deployment", str(dep)]
    out = tmp_path / "out"
    code = _cli(["extract", "--camera", CAM_A, "--from", str(ev.ms(23_300)), "--to", "2023-11-14T22:14:15.5Z",
                 "--out", str(out), "--store", str(ev.store_dir), *common])
    text = capsys.readouterr().out
    assert code == 3 and "VERDICT: VERIFIED WITH DECLARED GAPS" in text and "clip-001-substituted.mp4" in text
    bundle = next(out.glob("evidence-*.zip"))
    assert _cli(["verify", str(bundle), "--rpc", ev.rpc_url, "--ledger", ev.ledger_address, "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["verdict"] == "verified_with_declared_gaps"
    assert _cli(["prove", "--camera", "0x" + camera_id(CAM_A).hex(), "--at", str(ev.ms(33_333)), "--json",
                 "--store", str(ev.store_dir), "--out", str(tmp_path / "proof"), *common]) == 0
    assert json.loads(capsys.readouterr().out)["verifiedOnChain"] is True
    assert (tmp_path / "proof" / "frame-333.h264").read_bytes() == ev.frames[CAM_A][333].data
    # input errors: exit 2 with a message, no traceback
    assert _cli(["extract", "--camera", CAM_A, "--from", "soon", "--to", "later", "--store", str(ev.store_dir), *common]) == 2
    assert _cli(["extract", "--camera", CAM_A, "--from", "0", "--to", "1", "--store", str(tmp_path / "nope"), *common]) == 2
    assert _cli(["prove", "--camera", CAM_A, "--at", str(ev.ms(25_500)), "--store", str(ev.store_dir), *common]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "declared gap" in err and "Traceback" not in err


def test_cli_extract_and_prove_without_a_trusted_deployment_refuse(ev, tmp_path, capsys, monkeypatch):
    """Fail closed at the command line too (issue 7): no --ledger, --deployment or --trust and no
    default record for this chain id is a usage error (exit 2) before anything is extracted."""
    monkeypatch.setenv("FRAMELEDGER_DEPLOYMENTS_DIR", str(tmp_path / "no-deployments"))
    out = tmp_path / "out"
    assert _cli(["extract", "--camera", CAM_A, "--from", str(ev.ms(23_300)), "--to", str(ev.ms(30_000)),
                 "--out", str(out), "--store", str(ev.store_dir), "--rpc", ev.rpc_url]) == 2
    assert _cli(["prove", "--camera", CAM_A, "--at", str(ev.ms(25_000)), "--store", str(ev.store_dir),
                 "--rpc", ev.rpc_url]) == 2
    err = capsys.readouterr().err
    assert err.count(f"no trusted deployment for chain {ev.chain_id}") == 2 and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())
