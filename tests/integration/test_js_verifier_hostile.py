"""scripts/verify_bundle.js against hostile bundles, on a real chain (issue 7, EVIDENCE_SPEC).

Real bundles extracted from the evidence ledger of evidence_fixtures.py, then tampered with the
way a forger would: a ledger the forger deployed (pinned and unpinned), no trusted deployment at
all, member names that escape the bundle, duplicate members and index entries, members over their
limit (one inflating to 1 GiB, also behind a lying zip header: peak memory measured), malformed
fields, a swapped avcC, a substitute's codec source, a camera's own clip relabelled as a
re-encode. Each must get its exact code and exit code from the JavaScript verifier.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import warnings
import zipfile
from pathlib import Path

import pytest

from evidence_fixtures import CAM_A, CAM_B, build_evidence_ledger
from offchain.camera.samples import sample_path
from offchain.chain.deployer import deploy
from offchain.core.block import camera_id
from offchain.paths import REPO_ROOT

pytestmark = pytest.mark.slow

JS_VERIFIER = REPO_ROOT / "scripts" / "verify_bundle.js"
EXIT = {"verified": 0, "failed": 1, "verified_with_declared_gaps": 3, "untrusted": 4, "partially_verified": 5}
GIB = 1 << 30
RSS_BOUND_KIB = 256 * 1024


# --------------------------------------------------------------------------- fixtures and helpers


def _extract(ledger, cam: str, a: int, b: int, out: Path) -> Path:
    from offchain.evidence.extract import extract
    res = extract(cam, ledger.ms(a), ledger.ms(b), ledger.reader, [ledger.store()], out)
    assert res.bundle_path is not None, res.report.render_text()
    return res.bundle_path


@pytest.fixture(scope="module")
def gap_bundle(ev, tmp_path_factory) -> Path:
    """Camera A, 23.3-55.5 s: a declared gap and a span substituted (re-encoded) from camera B."""
    return _extract(ev, CAM_A, 23_300, 55_500, tmp_path_factory.mktemp("gap"))


@pytest.fixture(scope="module")
def b_bundle(ev, tmp_path_factory) -> Path:
    """Camera B, 41-43 s: one remuxed clip, two blocks, nothing declared lost."""
    return _extract(ev, CAM_B, 41_000, 43_000, tmp_path_factory.mktemp("b"))


@pytest.fixture(scope="module")
def empty_deployments(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("no-deployments")


def run_js(bundle: Path, ev, *flags: str, deployments: Path | None = None, env: dict | None = None):
    """(exit code, JSON report or None, stderr, peak RSS of the node process in KiB)."""
    cmd = ["node", str(JS_VERIFIER), str(bundle), "--rpc", ev.rpc_url, "--json", *flags]
    full_env = dict(os.environ, FRAMELEDGER_VERIFY_PEAK_RSS="1", **(env or {}))
    if deployments is not None:
        full_env["FRAMELEDGER_DEPLOYMENTS_DIR"] = str(deployments)
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, env=full_env, timeout=300)
    assert "Traceback" not in p.stderr and "    at " not in p.stderr, p.stderr
    peak = re.search(r"^peak RSS (\d+) KiB$", p.stderr, re.M)
    stderr = re.sub(r"^peak RSS \d+ KiB\n", "", p.stderr, flags=re.M)
    return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else None), stderr, int(peak.group(1)) if peak else None


def failures(doc: dict) -> set[str]:
    return {f["code"] for f in doc["findings"] if f["severity"] == "failure"}


def index_of(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("bundle.json"))


def rewrite(src: Path, dst: Path, replace: dict[str, bytes] | None = None, extra: list[tuple[str, bytes]] = (),
            drop: set[str] = frozenset()) -> Path:
    """A copy of the zip with members replaced, dropped or added (extra names may repeat)."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", allowZip64=True) as zout:
        for info in zin.infolist():
            if info.filename not in drop:
                zout.writestr(info, replace.get(info.filename, zin.read(info)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Duplicate name": the point of some tests
            for name, data in extra:
                zout.writestr(zipfile.ZipInfo(name), data)
    return dst


def with_index(src: Path, dst: Path, change, replace: dict[str, bytes] | None = None,
               extra: list[tuple[str, bytes]] = ()) -> Path:
    index = index_of(src)
    change(index)
    return rewrite(src, dst, {"bundle.json": json.dumps(index).encode(), **(replace or {})}, extra)


def trust_file(path: Path, *deployments: dict) -> Path:
    path.write_text(json.dumps({"format": "frameledger.trust/1", "deployments": list(deployments)}))
    return path


def deployment_record(path: Path, chain_id: int, ledger: str, consortium: str) -> Path:
    path.write_text(json.dumps({"chainId": chain_id, "contracts": {"Consortium": {"address": consortium},
                                                                   "VideoLedger": {"address": ledger}}}))
    return path


# --------------------------------------------------------------------------- trust


def test_code_table_has_the_spec_codes():
    p = subprocess.run(["node", str(JS_VERIFIER), "--codes"], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    codes = json.loads(p.stdout)
    assert "bundle.contract.unpinned" not in codes
    assert {k: codes[k] for k in (
        "bundle.contract.untrusted", "bundle.contract.mismatch", "bundle.member.unsafe", "bundle.member.duplicate",
        "bundle.member.oversize", "bundle.entry.duplicate", "clip.codec.mismatch", "clip.pictures.mismatch",
        "clip.pictures.match", "clip.pictures.unchecked", "clip.decoder.limited")} == {
        "bundle.contract.untrusted": "untrusted", "bundle.contract.mismatch": "failure", "bundle.member.unsafe": "failure",
        "bundle.member.duplicate": "failure", "bundle.member.oversize": "failure", "bundle.entry.duplicate": "failure",
        "clip.codec.mismatch": "failure", "clip.pictures.mismatch": "failure", "clip.pictures.match": "success",
        "clip.pictures.unchecked": "unchecked", "clip.decoder.limited": "warning"}


def test_every_way_of_naming_the_trusted_deployment_verifies(ev, b_bundle, empty_deployments, tmp_path):
    dep = deployment_record(tmp_path / "dep.json", ev.chain_id, ev.ledger_address, ev.consortium_address)
    trust = trust_file(tmp_path / "trust.json", {"name": "other chain", "chainId": 1, "VideoLedger": "0x" + "11" * 20},
                       {"name": "dev", "chainId": ev.chain_id, "VideoLedger": ev.ledger_address,
                        "Consortium": ev.consortium_address})
    default_dir = tmp_path / "deployments"
    default_dir.mkdir()
    shutil.copy(dep, default_dir / f"{ev.chain_id}.json")
    for flags, deployments in (
        (["--ledger", ev.ledger_address], empty_deployments),
        (["--deployment", str(dep)], empty_deployments),
        (["--trust", str(trust)], empty_deployments),
        ([], default_dir),
    ):
        rc, doc, _, _ = run_js(b_bundle, ev, *flags, deployments=deployments)
        assert (rc, doc["verdict"]) == (0, "verified"), (flags, doc["findings"])
        assert doc["ledger"].lower() == ev.ledger_address.lower()


def test_no_trusted_deployment_is_never_verified(ev, b_bundle, empty_deployments, tmp_path):
    rc, doc, _, _ = run_js(b_bundle, ev, deployments=empty_deployments)
    assert (rc, doc["verdict"]) == (4, "untrusted")
    assert {f["code"] for f in doc["findings"] if f["severity"] not in ("success", "info")} == {"bundle.contract.untrusted"}
    # a trust file that knows other chains only: the same
    trust = trust_file(tmp_path / "t.json", {"chainId": ev.chain_id + 1, "VideoLedger": ev.ledger_address})
    rc, doc, _, _ = run_js(b_bundle, ev, "--trust", str(trust), deployments=empty_deployments)
    assert (rc, doc["verdict"]) == (4, "untrusted")


@pytest.mark.parametrize("content", ["{}", "not json", '{"format": "frameledger.trust/1", "deployments": [{"chainId": "x"}]}'])
def test_unusable_trust_configuration_is_a_usage_error(ev, b_bundle, empty_deployments, tmp_path, content):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    for flags in (["--trust", str(bad)], ["--deployment", str(bad)], ["--trust", str(tmp_path / "absent.json")],
                  ["--ledger", "0x1234"], ["--ledger"], ["--no-such-flag"]):
        rc, doc, err, _ = run_js(b_bundle, ev, *flags, deployments=empty_deployments)
        assert rc == 2 and doc is None and err.startswith("verify_bundle.js: ") and len(err.strip().splitlines()) == 1, (flags, err)
    # a malformed default record is the same kind of error, not a silent fall back to untrusted
    (tmp_path / f"{ev.chain_id}.json").write_text(content)
    rc, doc, err, _ = run_js(b_bundle, ev, deployments=tmp_path)
    assert rc == 2 and doc is None and "default deployment" in err


@pytest.fixture(scope="module")
def forged(devchain, w3, ev, tmp_path_factory):
    """A Consortium + VideoLedger an outsider deployed from the committed artifacts on the same
    chain, the same cameras registered, the same video anchored: a self-consistent bundle that
    names the forger's ledger."""
    dep = deploy(w3, devchain.private_keys, out_dir=None)
    fake = build_evidence_ledger(w3, devchain.private_keys, dep, tmp_path_factory.mktemp("forger") / "store",
                                 vtest=sample_path("vtest"), bikes=sample_path("bikes"), rpc_url=devchain.rpc_url)
    bundle = _extract(fake, CAM_B, 41_000, 43_000, tmp_path_factory.mktemp("forged"))
    assert index_of(bundle)["contracts"]["VideoLedger"].lower() == dep.video_ledger.lower() != ev.ledger_address.lower()
    return dep, bundle


def test_a_forgers_ledger_fails_when_pinned_and_is_untrusted_unpinned(ev, forged, empty_deployments, tmp_path):
    dep, bundle = forged
    rc, doc, _, _ = run_js(bundle, ev, deployments=empty_deployments)
    assert (rc, doc["verdict"]) == (4, "untrusted") and "bundle.contract.untrusted" in {f["code"] for f in doc["findings"]}
    genuine = deployment_record(tmp_path / "genuine.json", ev.chain_id, ev.ledger_address, ev.consortium_address)
    default_dir = tmp_path / "deployments"
    default_dir.mkdir()
    shutil.copy(genuine, default_dir / f"{ev.chain_id}.json")
    for flags, deployments in ((["--ledger", ev.ledger_address], empty_deployments),
                               (["--deployment", str(genuine)], empty_deployments), ([], default_dir)):
        rc, doc, _, _ = run_js(bundle, ev, *flags, deployments=deployments)
        assert (rc, doc["verdict"]) == (1, "failed") and "bundle.contract.mismatch" in failures(doc), flags
    # trusting the forger's ledger under the genuine consortium: VideoLedger.consortium() gives it away
    trust = trust_file(tmp_path / "t.json", {"chainId": ev.chain_id, "VideoLedger": dep.video_ledger,
                                             "Consortium": ev.consortium_address})
    rc, doc, _, _ = run_js(bundle, ev, "--trust", str(trust), deployments=empty_deployments)
    assert (rc, failures(doc)) == (1, {"bundle.contract.mismatch"})
    assert any("belongs to consortium" in f["message"] for f in doc["findings"])


# --------------------------------------------------------------------------- hostile zips


def test_member_names_that_escape_the_bundle(ev, b_bundle, tmp_path):
    bad = rewrite(b_bundle, tmp_path / "unsafe.zip", extra=[("../../x", b"x"), ("/abs", b"y"), ("a\\b", b"z"), ("C:evil", b"w")])
    rc, doc, _, _ = run_js(bad, ev, "--ledger", ev.ledger_address)
    assert (rc, failures(doc)) == (1, {"bundle.member.unsafe"})
    assert len([f for f in doc["findings"] if f["code"] == "bundle.member.unsafe"]) == 4


def test_index_paths_that_escape_are_refused_in_zips_and_directories(ev, gap_bundle, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    index = index_of(gap_bundle)
    raw = index["rawFrames"][0]
    with zipfile.ZipFile(gap_bundle) as zf:
        (outside / "frame").write_bytes(zf.read(raw["path"]))

    def escape(ix):
        ix["rawFrames"][0]["path"] = "../outside/frame"
    bad = with_index(gap_bundle, tmp_path / "escape.zip", escape)
    rc, doc, _, _ = run_js(bad, ev, "--ledger", ev.ledger_address)
    assert (rc, failures(doc)) == (1, {"bundle.member.unsafe", "frame.missing"})
    # the same bundle unzipped into tmp_path/dir: ../outside/frame exists there, and is still refused
    with zipfile.ZipFile(bad) as zf:
        zf.extractall(tmp_path / "d")
    rc, doc, _, _ = run_js(tmp_path / "d", ev, "--ledger", ev.ledger_address)
    assert (rc, failures(doc)) == (1, {"bundle.member.unsafe", "frame.missing"})
    # a symlink inside the directory that points outside it
    good = tmp_path / "good"
    with zipfile.ZipFile(gap_bundle) as zf:
        zf.extractall(good)
    rc, doc, _, _ = run_js(good, ev, "--ledger", ev.ledger_address)
    assert rc == 3 and not failures(doc)  # the gap bundle: verified with declared gaps
    (good / raw["path"]).unlink()
    (good / raw["path"]).symlink_to(outside / "frame")
    rc, doc, _, _ = run_js(good, ev, "--ledger", ev.ledger_address)
    assert (rc, failures(doc)) == (1, {"bundle.member.unsafe", "frame.missing"})
    assert any("escapes the bundle" in f["message"] for f in doc["findings"])


def test_duplicate_member_names(ev, b_bundle, tmp_path):
    index = index_of(b_bundle)
    bad = rewrite(b_bundle, tmp_path / "dup.zip", extra=[("bundle.json", json.dumps(index).encode())])
    rc, doc, _, _ = run_js(bad, ev, "--ledger", ev.ledger_address)
    assert (rc, failures(doc)) == (1, {"bundle.member.duplicate"})


def test_too_many_members(ev, b_bundle, tmp_path):
    bad = rewrite(b_bundle, tmp_path / "many.zip", extra=[(f"pad/{i}", b"") for i in range(100_000)])
    rc, doc, _, _ = run_js(bad, ev, "--ledger", ev.ledger_address)
    assert (rc, doc["codes"]) == (1, ["bundle.invalid"]) and "limit of 100000" in doc["findings"][0]["message"]


def _zip_with_zeros(src: Path, dst: Path, name: str, size: int, lie_size: int | None = None) -> Path:
    """`src` with member `name` replaced by `size` zero bytes, deflated (about 1 MB per GiB), written
    in chunks; with `lie_size`, the zip's headers claim that size instead."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", allowZip64=True) as zout:
        for info in zin.infolist():
            if info.filename != name:
                zout.writestr(info, zin.read(info))
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        with zout.open(info, "w", force_zip64=size >= (1 << 31)) as w:
            chunk = bytes(1 << 24)
            for _ in range(size // len(chunk)):
                w.write(chunk)
    if lie_size is None:
        return dst
    data = bytearray(dst.read_bytes())
    for sig, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = 0
        while (at := data.find(sig, at)) >= 0:
            name_at = at + (30 if sig == b"PK\x03\x04" else 46)
            n = struct.unpack_from("<H", data, at + (26 if sig == b"PK\x03\x04" else 28))[0]
            if data[name_at:name_at + n] == name.encode():
                struct.pack_into("<I", data, at + size_at, lie_size)
            at += 4
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def js_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("js-tmpdir")


def test_a_member_inflating_to_1_gib_is_bounded(ev, gap_bundle, tmp_path, js_tmp):
    """Peak RSS of the verifier stays under 256 MB: a raw frame of 1 GiB (declared: refused unread;
    behind a lying header: inflation stops at the limit), a clip of 1 GiB (streamed to a temp file
    that is removed afterwards)."""
    index = index_of(gap_bundle)
    frame = index["rawFrames"][0]["path"]
    clip = index["clips"][0]["path"]
    cases = {
        "declared": (_zip_with_zeros(gap_bundle, tmp_path / "declared.zip", frame, GIB), {"bundle.member.oversize", "frame.missing"}),
        "lying": (_zip_with_zeros(gap_bundle, tmp_path / "lying.zip", frame, GIB, lie_size=6000),
                  {"bundle.member.oversize", "frame.missing"}),
        "clip": (_zip_with_zeros(gap_bundle, tmp_path / "clip.zip", clip, GIB), {"clip.invalid"}),
    }
    peaks = {}
    for kind, (bad, expected) in cases.items():
        rc, doc, _, rss = run_js(bad, ev, "--ledger", ev.ledger_address, env={"TMPDIR": str(js_tmp)})
        peaks[kind] = rss
        assert rc == 1 and failures(doc) == expected, (kind, failures(doc))
        assert rss < RSS_BOUND_KIB, f"{kind}: peak RSS {rss} KiB"
        assert list(js_tmp.glob("frameledger-verify-*")) == []
    print(f"verify_bundle.js peak RSS (KiB) with a 1 GiB member: {peaks}")
    lying = [f["message"] for f in run_js(cases["lying"][0], ev, "--ledger", ev.ledger_address)[1]["findings"]
             if f["code"] == "bundle.member.oversize"]
    assert lying and "inflates past" in lying[0]


def test_members_over_their_kind_limit(ev, b_bundle, tmp_path):
    index = index_of(b_bundle)
    manifest = index["blocks"][0]["manifest"]
    bad = _zip_with_zeros(b_bundle, tmp_path / "manifest.zip", manifest, 1 << 25)  # 32 MiB > 16 MiB
    rc, doc, _, _ = run_js(bad, ev, "--ledger", ev.ledger_address)
    assert (rc, failures(doc)) == (1, {"bundle.member.oversize", "manifest.missing"})
    # the index pointing a manifest at a clip (4 GiB limit) is still read against the manifest limit
    clip = index["clips"][0]["path"]
    big_clip = _zip_with_zeros(b_bundle, tmp_path / "bigclip.zip", clip, 1 << 25)

    def as_manifest(ix):
        ix["blocks"][0]["manifest"] = clip
    bad = with_index(big_clip, tmp_path / "role.zip", as_manifest)
    rc, doc, _, _ = run_js(bad, ev, "--ledger", ev.ledger_address)
    assert rc == 1 and "bundle.member.oversize" in failures(doc)


# --------------------------------------------------------------------------- index entries


def _dup_raw(ix):
    ix["rawFrames"].append(dict(ix["rawFrames"][0]))


def _dup_block(ix):
    ix["blocks"].append(dict(ix["blocks"][0]))


def _dup_clip(ix):
    ix["clips"].append(dict(ix["clips"][0]))


def _dup_clip_frame(ix):
    ix["clips"][0]["frames"].insert(1, ix["clips"][0]["frames"][0])


@pytest.mark.parametrize("change", [_dup_raw, _dup_block, _dup_clip, _dup_clip_frame])
def test_duplicate_index_entries(ev, gap_bundle, tmp_path, change):
    bad = with_index(gap_bundle, tmp_path / "dup.zip", change)
    rc, doc, _, _ = run_js(bad, ev, "--ledger", ev.ledger_address)
    assert rc == 1 and "bundle.entry.duplicate" in failures(doc)
    if change is not _dup_clip_frame:  # a repeated listing also puts the clip's samples out of step
        assert failures(doc) == {"bundle.entry.duplicate"}


def _header_as_string(ix):
    ix["blocks"][0]["header"] = "x"


def _header_field_as_string(ix):
    ix["blocks"][0]["header"]["height"] = str(ix["blocks"][0]["header"]["height"])


def _chain_id_as_string(ix):
    ix["chainId"] = str(ix["chainId"])


def _reencoded_as_string(ix):
    ix["clips"][0]["reencoded"] = "no"


def _seq_as_float(ix):
    ix["rawFrames"][0]["seq"] = ix["rawFrames"][0]["seq"] + 0.5


def _blocks_as_object(ix):
    ix["blocks"] = {"0": ix["blocks"][0]}


def _clip_frame_triple(ix):
    ix["clips"][0]["frames"][0] = ix["clips"][0]["frames"][0] + [1]


def _too_many_blocks(ix):
    ix["blocks"] = [ix["blocks"][0]] * 10_001


def _codec_source_without_header(ix):
    ix["codecSources"] = [{"camera": ix["camera"]["id"], "height": 1, "blockHash": "0x" + "00" * 32, "manifest": "m"}]


@pytest.mark.parametrize("change", [_header_as_string, _header_field_as_string, _chain_id_as_string, _reencoded_as_string,
                                    _seq_as_float, _blocks_as_object, _clip_frame_triple, _codec_source_without_header,
                                    _too_many_blocks])
def test_malformed_fields_are_bundle_invalid(ev, gap_bundle, tmp_path, change):
    bad = with_index(gap_bundle, tmp_path / "bad.zip", change)
    rc, doc, _, _ = run_js(bad, ev, "--ledger", ev.ledger_address)
    assert (rc, doc["codes"]) == (1, ["bundle.invalid"])


# --------------------------------------------------------------------------- clips


def _manifest_extradata(zf: zipfile.ZipFile, index: dict, height: int) -> bytes:
    m = json.loads(zf.read(next(b["manifest"] for b in index["blocks"] if b["height"] == height)))
    return base64.b64decode(m["codec"]["extradata"])


def test_a_swapped_avcc_is_a_codec_mismatch(ev, b_bundle, tmp_path):
    index = index_of(b_bundle)
    clip = index["clips"][0]
    with zipfile.ZipFile(b_bundle) as zf:
        extradata = _manifest_extradata(zf, index, clip["frames"][0][0])
        data = bytearray(zf.read(clip["path"]))
    at = data.index(extradata)  # faststart: the moov (and its avcC) comes before the samples
    sps_len = struct.unpack_from(">H", extradata, 6)[0]
    assert sps_len > 4
    data[at + 8 + 3] ^= 0x01  # level_idc of the SPS: same length, another parameter set
    bad = rewrite(b_bundle, tmp_path / "avcc.zip", {clip["path"]: bytes(data)})
    rc, doc, _, _ = run_js(bad, ev, "--ledger", ev.ledger_address)
    assert (rc, failures(doc)) == (1, {"clip.codec.mismatch"})
    assert [c["codec"] for c in doc["clips"]] == ["mismatch"]


def test_reencoded_clips_are_never_verified_by_js(ev, gap_bundle, tmp_path):
    """The substituted clip relabelled as a re-encode (its packets riding along raw): JS cannot
    decode, so it says `clip.pictures.unchecked` and never `verified`."""
    index = index_of(gap_bundle)
    i = next(i for i, c in enumerate(index["clips"]) if c["kind"] == "substituted")
    clip = index["clips"][i]
    raw, extra = [], []
    for h, seq in clip["frames"]:
        data = ev.frames[CAM_B][seq].data
        name = "frames/" + hashlib.sha256(data).hexdigest()
        raw.append({"height": h, "camera": clip["camera"], "seq": seq, "path": name})
        extra.append((name, data))

    def why(ix):
        ix["clips"][i].update(reencoded=True, why="codec h264 substitute re-encoded for the test")
        ix["rawFrames"] += raw
    bundle = with_index(gap_bundle, tmp_path / "why.zip", why, extra=list(dict(extra).items()))
    rc, doc, _, _ = run_js(bundle, ev, "--ledger", ev.ledger_address)
    reencoded = [c for c in index_of(bundle)["clips"] if c["reencoded"]]
    assert (rc, doc["verdict"]) == (5, "partially_verified") and not failures(doc)
    unchecked = [f for f in doc["findings"] if f["code"] == "clip.pictures.unchecked"]
    assert len(unchecked) == len(reencoded) == 1 and reencoded[0]["path"] in unchecked[0]["message"]
    assert [c["why"] for c in doc["clips"]] == [c["why"] for c in index_of(bundle)["clips"]]
    assert [c["codec"] for c in doc["clips"]] == [None if c["reencoded"] else "match" for c in index_of(bundle)["clips"]]


def test_own_clip_relabelled_as_a_reencode_is_not_verified(ev, b_bundle, tmp_path):
    """The issue's first forgery, as far as JS can see it: the camera's own clip marked re-encoded,
    the genuine packets riding along as raw frames. JS cannot bind the pictures: exit 5, never 0."""
    index = index_of(b_bundle)
    clip = index["clips"][0]
    raw = []
    extra = []
    for h, seq in clip["frames"]:
        data = ev.frames[CAM_B][seq].data
        name = "frames/" + hashlib.sha256(data).hexdigest()
        raw.append({"height": h, "camera": clip["camera"], "seq": seq, "path": name})
        extra.append((name, data))

    def relabel(ix):
        ix["clips"][0].update(kind="substituted", reencoded=True, why="codec h264 cannot be copied into a browser MP4")
        ix["rawFrames"] = raw
    rc, doc, _, _ = run_js(with_index(b_bundle, tmp_path / "relabel.zip", relabel, extra=extra), ev, "--ledger", ev.ledger_address)
    assert (rc, doc["verdict"]) == (5, "partially_verified") and not failures(doc)
    assert "frame.not_playable" not in doc["codes"]  # frames of a re-encoded clip play
    # without the original bytes the frames it stands for are missing
    def relabel_only(ix):
        ix["clips"][0].update(kind="substituted", reencoded=True)
    rc, doc, _, _ = run_js(with_index(b_bundle, tmp_path / "bare.zip", relabel_only), ev, "--ledger", ev.ledger_address)
    assert rc == 1 and failures(doc) == {"frame.missing"}


@pytest.fixture(scope="module")
def remuxed_substitute(ev, gap_bundle) -> tuple[Path, dict]:
    """The gap bundle: the extractor remuxes its substituted span from camera B's anchored
    packets (not re-encoded) and carries camera B's block as the codec source."""
    index = index_of(gap_bundle)
    assert not next(c for c in index["clips"] if c["kind"] == "substituted")["reencoded"]
    return gap_bundle, index["codecSources"][0]


def test_a_substitute_remux_is_checked_against_its_codec_source(ev, remuxed_substitute, tmp_path):
    bundle, source = remuxed_substitute
    rc, doc, _, _ = run_js(bundle, ev, "--ledger", ev.ledger_address)
    assert (rc, doc["verdict"]) == (3, "verified_with_declared_gaps"), [f for f in doc["findings"] if f["severity"] == "failure"]
    assert "clip.pictures.unchecked" not in doc["codes"] and [c["codec"] for c in doc["clips"]] == ["match"] * 3


def _bad_source(kind: str, source: dict):
    def change(ix):
        s = ix["codecSources"][0]
        if kind == "header":
            s["header"]["frameCount"] += 1
        elif kind == "height":
            s["height"] = 999
        elif kind == "manifest":
            s["manifest"] = "manifests/absent.json"
        elif kind == "none":
            ix["codecSources"] = []
        elif kind == "duplicate":
            ix["codecSources"].append(dict(s))
    return change


@pytest.mark.parametrize("kind,expected", [
    ("header", {"block.header.mismatch", "clip.codec.mismatch"}),
    ("height", {"block.root.unanchored", "clip.codec.mismatch"}),
    ("manifest", {"manifest.missing", "clip.codec.mismatch"}),
    ("none", {"clip.codec.mismatch"}),
    ("duplicate", {"bundle.entry.duplicate"}),
])
def test_a_failing_codec_source(ev, remuxed_substitute, tmp_path, kind, expected):
    bundle, source = remuxed_substitute
    bad = with_index(bundle, tmp_path / f"{kind}.zip", _bad_source(kind, source))
    rc, doc, _, _ = run_js(bad, ev, "--ledger", ev.ledger_address)
    assert (rc, failures(doc)) == (1, expected)
    sub = "0x" + camera_id(CAM_B).hex()
    for f in doc["findings"]:
        if f["code"] in ("block.header.mismatch", "block.root.unanchored", "manifest.missing"):
            assert f["camera"] == sub


def test_a_forged_codec_source_manifest(ev, remuxed_substitute, tmp_path):
    bundle, source = remuxed_substitute
    with zipfile.ZipFile(bundle) as zf:
        m = json.loads(zf.read(source["manifest"]))
    m["codec"]["extradata"] = base64.b64encode(b"\x01forged").decode()
    bad = rewrite(bundle, tmp_path / "forged.zip", {source["manifest"]: json.dumps(m).encode()})
    rc, doc, _, _ = run_js(bad, ev, "--ledger", ev.ledger_address)
    assert (rc, failures(doc)) == (1, {"manifest.digest.mismatch", "clip.codec.mismatch"})


def test_zlib_crc_catches_a_stored_member_changed_in_place(ev, b_bundle, tmp_path):
    """A manifest edited inside the zip without fixing the CRC: read as corrupt, so missing."""
    index = index_of(b_bundle)
    name = index["blocks"][0]["manifest"]
    data = bytearray(b_bundle.read_bytes())
    with zipfile.ZipFile(b_bundle) as zf:
        info = zf.getinfo(name)
        raw = zf.read(name)
    assert info.compress_type == zipfile.ZIP_STORED and raw  # as extract writes every member
    at = info.header_offset + 30 + len(name) + len(info.extra) + 2
    data[at] ^= 0xFF
    (tmp_path / "crc.zip").write_bytes(bytes(data))
    rc, doc, _, _ = run_js(tmp_path / "crc.zip", ev, "--ledger", ev.ledger_address)
    assert rc == 1 and failures(doc) == {"manifest.missing"}


def test_js_unit_tests_pass():
    """tests/js/verify_bundle.test.js: index strictness, names, trust files, directory bundles."""
    p = subprocess.run(["node", "--test", str(REPO_ROOT / "tests" / "js" / "verify_bundle.test.js")],
                       capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "# fail 0" in p.stdout


# --------------------------------------------------------------------------- fuzzing (seeded, deterministic)


def _leaves(doc, path=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:3]):
            yield from _leaves(v, path + (i,))
    yield path


def _assert_clean_answer(rc: int, doc: dict | None, err: str) -> None:
    assert "internal error" not in err, err
    assert rc in (0, 1, 3, 4, 5) and doc is not None and doc["verdict"] in EXIT, (rc, err)
    assert EXIT[doc["verdict"]] == rc


def test_fuzzed_index_fields_never_crash(ev, b_bundle, tmp_path):
    import random
    rng = random.Random(7)
    index = index_of(b_bundle)
    paths = [p for p in _leaves(index) if p]
    values = ["x", "", -1, 1.5, 2**70, None, True, [], {}, [[1]], {"a": 1}, "0x" + "zz" * 32]
    for i in range(25):
        doc = json.loads(json.dumps(index))
        path = rng.choice(paths)
        at = doc
        for k in path[:-1]:
            at = at[k]
        at[path[-1]] = rng.choice(values)
        bad = rewrite(b_bundle, tmp_path / f"f{i}.zip", {"bundle.json": json.dumps(doc).encode()})
        rc, out, err, _ = run_js(bad, ev, "--ledger", ev.ledger_address)
        _assert_clean_answer(rc, out, err)


def test_fuzzed_zip_bytes_never_crash(ev, b_bundle, tmp_path):
    import random
    rng = random.Random(11)
    data = b_bundle.read_bytes()
    cd = data.rfind(b"PK\x01\x02", 0, len(data) - 22)
    for i in range(25):
        mutated = bytearray(data)
        region = (max(0, cd - 4096), len(mutated)) if i % 2 else (0, len(mutated))  # the directory, or anywhere
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(*region)] = rng.randrange(256)
        bad = tmp_path / f"z{i}.zip"
        bad.write_bytes(bytes(mutated))
        rc, out, err, _ = run_js(bad, ev, "--ledger", ev.ledger_address)
        _assert_clean_answer(rc, out, err)
