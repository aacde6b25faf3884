"""Evidence that cannot be forged past the verifiers (issue 7): real bundles, tampered with as a
hostile party would, refused by `verify` (Python), by the JavaScript verifier and, where it
applies, by `extract` — each with its own code and a non-zero exit; untampered ones verify.

Cameras here beyond the shared ledger (evidence_fixtures): vtest.avi as a real MPEG-4 part 2
camera (re-encoded for browsers), a synthetic MJPEG camera, a long-GOP H.264 camera (one IDR in
60 s) and an H.264 High 4:4:4 camera.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from dataclasses import replace

import av
import numpy as np
import pytest

from evidence_fixtures import CAM_A, T0, anchor_recording, build_evidence_ledger, evidence_ledger
from offchain.camera.samples import sample_path, synthetic_stream
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from offchain.camera.sources import FileSource
from offchain.core import outages, wire
from offchain.chain.deployer import deploy
from offchain.evidence.bundle import parse_index, verify_bundle
from offchain.evidence.bundle_reader import BundleError, BundleReader
from offchain.evidence.extract import extract
from offchain.evidence.report import EXIT_CODES
from offchain.evidence.trust import TRUST_FORMAT, TrustList, TrustedDeployment
from offchain.evidence.video import encode_frames_to_mp4
from offchain.paths import REPO_ROOT

pytestmark = pytest.mark.slow

JS_VERIFIER = REPO_ROOT / "scripts" / "verify_bundle.js"
CAM_AVI, CAM_MJPEG, CAM_LONG, CAM_444, CAM_UNENDED = "10.9.1.1", "10.9.1.2", "10.9.1.3", "10.9.1.4", "10.9.1.5"
CAM_OUTAGE = "10.9.1.6"
CAM_VP9, CAM_HEVC = "10.9.1.7", "10.9.1.8"
OUTAGE_KEY = Ed25519PrivateKey.from_private_bytes(b"\x16" * 32)
FORGER_KEY = Ed25519PrivateKey.from_private_bytes(b"\x17" * 32)
OUTAGE_AFTER = 49  # the camera is lost after frame 49 (4.9 s) and back 3 s later (frame 50 at 8.0 s)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ev(devchain, w3, base_deployment, tmp_path_factory):
    """The shared evidence ledger plus the cameras of this module (see the module docstring)."""
    with evidence_ledger(devchain, w3, base_deployment, tmp_path_factory) as ledger:
        store = ledger.store()
        media = tmp_path_factory.mktemp("media")
        sources = {
            CAM_AVI: (sample_path("vtest_avi"), 200),
            CAM_MJPEG: (synthetic_stream(media / "mjpeg.avi", "mjpeg", frames=100, fps=10, pix_fmt="yuvj420p"), 100),
            CAM_LONG: (synthetic_stream(media / "long.mp4", "libx264", frames=600, fps=10, gop=10_000), 600),
            CAM_444: (synthetic_stream(media / "h444.mp4", "libx264", frames=200, fps=10, pix_fmt="yuv444p", gop=40), 200),
            CAM_UNENDED: (synthetic_stream(media / "unended.mp4", "libx264", frames=250, fps=10, gop=20), 250),
            CAM_VP9: (synthetic_stream(media / "vp9.webm", "libvpx-vp9", frames=100, fps=10), 100),
            CAM_HEVC: (synthetic_stream(media / "hevc.mp4", "libx265", frames=100, fps=10), 100),
        }
        for ip, (path, n) in sources.items():
            src = FileSource(path, start_ms=T0)
            frames = [f for _, f in zip(range(n), src.frames())]
            anchor_recording(w3, devchain.private_keys, base_deployment, store, ip, frames, src.codec,
                             unended=ip == CAM_UNENDED)
        _anchor_outage_camera(w3, devchain.private_keys, base_deployment, store, media)
        store.close()
        yield ledger


def _anchor_outage_camera(w3, keys, deployment, store, media: Path) -> None:
    """CAM_OUTAGE (issue 10): 250 frames with a 3 s outage after frame OUTAGE_AFTER, declared and
    signed by the camera's own key (block 1); block 2 carries a declaration signed by another key,
    as a proposer forging the camera's word would have it."""
    src = FileSource(synthetic_stream(media / "outage.mp4", "libx264", frames=250, fps=10, gop=20), start_ms=T0)
    frames = [replace(f, timestamp_ms=f.timestamp_ms + 3_000) if f.seq > OUTAGE_AFTER else f for f in src.frames()]
    t1, t2 = frames[OUTAGE_AFTER].timestamp_ms, frames[OUTAGE_AFTER + 1].timestamp_ms
    real = outages.declaration_of(wire.parse_signed_control(
        wire.outage_message(OUTAGE_KEY, CAM_OUTAGE, OUTAGE_AFTER, t1, t2, "the stream broke", t2)))
    forged = outages.declaration_of(wire.parse_signed_control(
        wire.outage_message(FORGER_KEY, CAM_OUTAGE, 200, T0 + 22_000, T0 + 22_500, "made up", T0 + 23_000)))
    key = OUTAGE_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    anchor_recording(w3, keys, deployment, store, CAM_OUTAGE, frames, src.codec, device_key=key,
                     outages=[real.proof(), forged.proof()])


def run_extract(ev, out: Path, cam: str, a: int, b: int, **kw):
    return extract(cam, ev.ms(a), ev.ms(b), ev.reader, [ev.store()], out, **kw)


@pytest.fixture(scope="module")
def own_bundle(ev, tmp_path_factory):
    """Camera A (H.264) 23.3-37 s: one remuxed clip, verified with a declared gap."""
    return run_extract(ev, tmp_path_factory.mktemp("own"), CAM_A, 23_300, 37_000)


@pytest.fixture(scope="module")
def sub_bundle(ev, tmp_path_factory):
    """Camera A 44-52 s: the span substituted from camera B, remuxed from B's packets."""
    return run_extract(ev, tmp_path_factory.mktemp("sub"), CAM_A, 44_000, 52_000)


@pytest.fixture(scope="module")
def avi_bundle(ev, tmp_path_factory):
    """The MPEG-4 part 2 camera 2-12 s: re-encoded for browsers, pictures bound to its frames."""
    return run_extract(ev, tmp_path_factory.mktemp("avi"), CAM_AVI, 2_000, 12_000, probe=True)


def run_js(bundle: Path, rpc: str, *args: str) -> tuple[int, dict]:
    p = subprocess.run(["node", str(JS_VERIFIER), str(bundle), "--rpc", rpc, "--json", *args],
                       capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert p.stdout, p.stderr
    return p.returncode, json.loads(p.stdout)


def both(bundle: Path, ev, *js_args: str, **py_kw):
    """The Python report and the JavaScript (exit code, report), trusting ev's ledger unless told."""
    if not js_args and not py_kw:
        js_args, py_kw = ("--ledger", ev.ledger_address), {"ledger_address": ev.ledger_address}
    return verify_bundle(bundle, ev.rpc_url, **py_kw), run_js(bundle, ev.rpc_url, *js_args)


def failures(codes) -> set[str]:
    return {f.code for f in codes.by_severity("failure")} if hasattr(codes, "by_severity") else \
        {f["code"] for f in codes["findings"] if f["severity"] == "failure"}


def index_of(bundle: Path) -> dict:
    with zipfile.ZipFile(bundle) as zf:
        return json.loads(zf.read("bundle.json"))


def rewrite(src: Path, dst: Path, *, replace: dict[str, bytes] | None = None, index: dict | None = None,
            add: list[tuple[str, bytes]] = (), compress: int = zipfile.ZIP_STORED) -> Path:
    """A copy of a bundle with members replaced or added (names are written as given, unchecked)."""
    replace = dict(replace or {})
    if index is not None:
        replace["bundle.json"] = json.dumps(index).encode()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", allowZip64=True) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, replace.get(info.filename, zin.read(info)), compress_type=zipfile.ZIP_DEFLATED)
        for name, data in add:
            zout.writestr(zipfile.ZipInfo(name), data, compress_type=compress)
    return dst


def edited_reencode(clip: Path, out: Path, edit) -> Path:
    """The clip's pictures, edited, re-encoded with the same count and presentation times."""
    with av.open(str(clip)) as c:
        stream = c.streams.video[0]
        pics = [(round(f.pts * f.time_base * 1000), f.to_ndarray(format="bgr24")) for f in c.decode(stream)]
    edited = [edit(i, len(pics), p) for i, (_, p) in enumerate(pics)]
    encode_frames_to_mp4(iter(edited), out, fps=25, timestamps_ms=[t for t, _ in pics], crf=20)
    return out


def inverted(i: int, n: int, p: np.ndarray) -> np.ndarray:
    return 255 - p


def blacked(i: int, n: int, p: np.ndarray) -> np.ndarray:
    return np.zeros_like(p) if n // 3 <= i < 2 * n // 3 else p


def patched(i: int, n: int, p: np.ndarray) -> np.ndarray:
    """A 64x64 patch from the top-left corner pasted over the middle, where people walk."""
    q = p.copy()
    h, w = q.shape[:2]
    q[h // 2:h // 2 + 64, w // 2:w // 2 + 64] = p[:64, :64]
    return q


def as_reencoded_with_raw_frames(bundle: Path, clip_no: int, new_clip: Path, dst: Path) -> Path:
    """The forgery of issue 7: a clip swapped for an edited re-encode, relabelled `reencoded`,
    the genuine packets riding along as raw frames."""
    index = index_of(bundle)
    clip = index["clips"][clip_no]
    clip["reencoded"], clip["why"] = True, "codec cannot be copied into a browser MP4"
    adds = []
    with av.open(str(_member_file(bundle, clip["path"], dst.parent))) as c:
        packets = [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]
    have = {(r["height"], r["camera"], r["seq"]) for r in index["rawFrames"]}
    for (h, seq), data in zip(clip["frames"], packets):
        name = f"frames/{hashlib.sha256(data).hexdigest()}"
        if (h, clip["camera"], seq) not in have:
            index["rawFrames"].append({"height": h, "camera": clip["camera"], "seq": seq, "path": name})
            adds.append((name, data))
    return rewrite(bundle, dst, replace={clip["path"]: new_clip.read_bytes()}, index=index,
                   add=list(dict(adds).items()))


def _member_file(bundle: Path, name: str, where: Path) -> Path:
    out = where / ("member-" + Path(name).name)
    with zipfile.ZipFile(bundle) as zf:
        out.write_bytes(zf.read(name))
    return out


# --------------------------------------------------------------------------- trust that fails closed


@pytest.fixture(scope="module")
def forgery(ev, devchain, w3, tmp_path_factory):
    """An outsider's Consortium + VideoLedger from the committed artifacts on the same chain, the
    same camera IPs registered, genesis sealed, every time shifted by an hour; its bundle."""
    d = deploy(w3, devchain.private_keys, out_dir=None)
    forged = build_evidence_ledger(w3, devchain.private_keys, d, tmp_path_factory.mktemp("forger") / "store",
                                   vtest=sample_path("vtest"), bikes=sample_path("bikes"), rpc_url=devchain.rpc_url,
                                   t0=T0 + 3_600_000)
    out = tmp_path_factory.mktemp("forged-out")
    return forged, extract(CAM_A, forged.ms(1_000), forged.ms(15_000), forged.reader, [forged.store()], out)


def test_a_forgers_ledger_is_refused_pinned_unpinned_and_by_default(ev, forgery, tmp_path, monkeypatch):
    forged, result = forgery
    assert result.report.verdict == "verified"  # against its own ledger it is consistent
    bundle = result.bundle_path
    # pinned to the consortium's ledger: the bundle names another one
    py, (rc, js) = both(bundle, ev)
    assert py.verdict == js["verdict"] == "failed" and rc == 1
    assert "bundle.contract.mismatch" in failures(py) and "bundle.contract.mismatch" in failures(js)
    # nothing trusted at all (no flag, no default record): untrusted, never verified
    py, (rc, js) = verify_bundle(bundle, ev.rpc_url), run_js(bundle, ev.rpc_url)
    assert py.verdict == js["verdict"] == "untrusted" and rc == EXIT_CODES["untrusted"] == 4
    assert py.exit_code == 4 and py.has("bundle.contract.untrusted")
    # the documented default: chain/deployments/<chainId>.json names the consortium's ledger
    defaults = tmp_path / "deployments"
    defaults.mkdir()
    (defaults / f"{ev.chain_id}.json").write_text(json.dumps({"chainId": ev.chain_id, "contracts": {
        "Consortium": {"address": ev.consortium_address}, "VideoLedger": {"address": ev.ledger_address}}}))
    monkeypatch.setenv("FRAMELEDGER_DEPLOYMENTS_DIR", str(defaults))
    py, (rc, js) = verify_bundle(bundle, ev.rpc_url), run_js(bundle, ev.rpc_url)
    assert "bundle.contract.mismatch" in failures(py) and "bundle.contract.mismatch" in failures(js) and rc == 1
    # a trust list: the consortium's deployment only → refused; the forger's listed → its own answer
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps({"format": TRUST_FORMAT, "deployments": [
        {"name": "acme", "chainId": ev.chain_id, "VideoLedger": ev.ledger_address, "Consortium": ev.consortium_address}]}))
    rc, js = run_js(bundle, ev.rpc_url, "--trust", str(trust))
    assert rc == 1 and "bundle.contract.mismatch" in failures(js)
    assert _cli(["verify", str(bundle), "--rpc", ev.rpc_url, "--trust", str(trust)]) == 1
    honest = TrustList((TrustedDeployment(video_ledger=ev.ledger_address, chain_id=ev.chain_id,
                                          consortium=forged.consortium_address),))
    # the trusted ledger, but a trust entry naming another consortium: the ledger is not that consortium's
    r = verify_bundle(run_extract(ev, tmp_path / "own", CAM_A, 1_000, 5_000).bundle_path, ev.rpc_url, trust=honest)
    assert "bundle.contract.mismatch" in failures(r)


def test_unreadable_trust_sources_are_usage_errors(ev, own_bundle, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for args in (["--trust", str(bad)], ["--deployment", str(tmp_path / "missing.json")], ["--ledger", "0x1234"]):
        assert _cli(["verify", str(own_bundle.bundle_path), "--rpc", ev.rpc_url, *args]) == 2
        p = subprocess.run(["node", str(JS_VERIFIER), str(own_bundle.bundle_path), "--rpc", ev.rpc_url, *args],
                           capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
        assert p.returncode == 2, (args, p.stdout, p.stderr)


def _cli(argv: list[str]) -> int:
    p = subprocess.run([sys.executable, "-m", "offchain.cli", *argv], capture_output=True, text=True, cwd=REPO_ROOT,
                       timeout=300)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode


# --------------------------------------------------------------------------- pictures bound to anchored bytes


def test_a_reencoded_camera_clip_is_bound_picture_by_picture(ev, avi_bundle):
    r = avi_bundle.report
    assert r.verdict == "verified", r.render_text()
    [clip] = r.clips
    # from the keyframe before 2 s (the recording's GOP) to 12 s at 10 fps
    assert clip.reencoded and "msmpeg4" in clip.why and clip.decoded_frames == clip.frames == 120
    assert r.has("clip.pictures.match") and not r.has("frame.not_playable")
    py, (rc, js) = both(avi_bundle.bundle_path, ev)
    assert py.verdict == "verified" and py.has("clip.pictures.match")
    # the JavaScript verifier cannot decode: it says so and never says verified
    assert js["verdict"] == "partially_verified" and rc == 5 and "clip.pictures.unchecked" in js["codes"]
    assert {"frame.digest.match", "frame.proof.valid", "block.header.match"} <= set(js["codes"])


@pytest.mark.parametrize("edit", [inverted, blacked, patched], ids=["inverted", "black-span", "patch-64"])
def test_edited_pictures_in_a_reencoded_clip_are_refused(ev, avi_bundle, tmp_path, edit):
    bundle = avi_bundle.bundle_path
    clip = index_of(bundle)["clips"][0]["path"]
    forged_clip = edited_reencode(_member_file(bundle, clip, tmp_path), tmp_path / "edited.mp4", edit)
    forged = rewrite(bundle, tmp_path / "forged.zip", replace={clip: forged_clip.read_bytes()})
    py, (rc, js) = both(forged, ev)
    assert failures(py) == {"clip.pictures.mismatch"}, py.render_text()
    assert py.exit_code == 1
    assert js["verdict"] != "verified" and rc != 0


def test_own_h264_clip_swapped_for_an_edited_reencode_is_refused(ev, own_bundle, tmp_path):
    bundle = own_bundle.bundle_path
    clip = index_of(bundle)["clips"][0]["path"]
    edited = edited_reencode(_member_file(bundle, clip, tmp_path), tmp_path / "inv.mp4", inverted)
    forged = as_reencoded_with_raw_frames(bundle, 0, edited, tmp_path / "forged.zip")
    py, (rc, js) = both(forged, ev)
    assert "clip.pictures.mismatch" in failures(py), py.render_text()
    assert js["verdict"] != "verified" and rc != 0


def test_a_substitutes_pictures_replaced_by_black_are_refused(ev, sub_bundle, tmp_path):
    bundle = sub_bundle.bundle_path
    index = index_of(bundle)
    no = next(i for i, c in enumerate(index["clips"]) if c["kind"] == "substituted")
    assert not index["clips"][no]["reencoded"]  # an H.264 substitute is remuxed from its own packets
    black = edited_reencode(_member_file(bundle, index["clips"][no]["path"], tmp_path), tmp_path / "black.mp4",
                            lambda i, n, p: np.zeros_like(p))
    forged = as_reencoded_with_raw_frames(bundle, no, black, tmp_path / "forged.zip")
    py, (rc, js) = both(forged, ev)
    assert "clip.pictures.mismatch" in failures(py), py.render_text()
    assert js["verdict"] != "verified" and rc != 0


def test_parameter_sets_of_a_remuxed_clip_are_bound(ev, own_bundle, tmp_path):
    """Cropping, size and colour live in the SPS: a remux under other parameter sets shows other
    pictures from the same packets."""
    bundle = own_bundle.bundle_path
    clip = index_of(bundle)["clips"][0]["path"]
    data = bytearray(_member_file(bundle, clip, tmp_path).read_bytes())
    at = data.find(b"avcC") + 4
    assert at > 4
    data[at + 10] ^= 0x01  # a bit inside the SPS, same length
    forged = rewrite(bundle, tmp_path / "forged.zip", replace={clip: bytes(data)})
    py, (rc, js) = both(forged, ev)
    assert "clip.codec.mismatch" in failures(py) and "clip.codec.mismatch" in failures(js) and rc == 1


# --------------------------------------------------------------------------- hostile bundles


HOSTILE = {
    "escaping-name": (dict(add=[("../../x", b"x")]), "bundle.member.unsafe"),
    "absolute-name": (dict(add=[("/etc/x", b"x")]), "bundle.member.unsafe"),
    "backslash-name": (dict(add=[("clips\\..\\x", b"x")]), "bundle.member.unsafe"),
    "duplicate-name": (dict(add=[("bundle.json", b"{}")]), "bundle.member.duplicate"),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_members_are_refused_with_their_code(ev, own_bundle, tmp_path, kind):
    kw, code = HOSTILE[kind]
    bad = rewrite(own_bundle.bundle_path, tmp_path / f"{kind}.zip", **kw)
    py, (rc, js) = both(bad, ev)
    assert code in failures(py) and code in failures(js), (py.render_text(), js["codes"])
    assert py.exit_code == rc == 1


def test_duplicate_entries_and_malformed_fields(ev, own_bundle, tmp_path):
    index = index_of(own_bundle.bundle_path)
    raw = index["rawFrames"][0]
    index["rawFrames"].append(dict(raw))
    py, (rc, js) = both(rewrite(own_bundle.bundle_path, tmp_path / "dup.zip", index=index), ev)
    assert "bundle.entry.duplicate" in failures(py) and "bundle.entry.duplicate" in failures(js) and rc == 1
    index = index_of(own_bundle.bundle_path)
    index["blocks"][0]["header"] = "not a header"
    py, (rc, js) = both(rewrite(own_bundle.bundle_path, tmp_path / "str.zip", index=index), ev)
    assert failures(py) == failures(js) == {"bundle.invalid"} and rc == 1


def test_an_oversized_raw_frame_is_not_read(ev, own_bundle, tmp_path):
    index = index_of(own_bundle.bundle_path)
    path = index["rawFrames"][0]["path"]
    bad = rewrite(own_bundle.bundle_path, tmp_path / "big.zip", replace={path: bytes(40 << 20)})
    py, (rc, js) = both(bad, ev)
    assert "bundle.member.oversize" in failures(py) and "bundle.member.oversize" in failures(js) and rc == 1


def _peak_rss_mb(cmd: list[str]) -> tuple[int, float]:
    """Exit code and peak RSS (MB) of a command, measured by a fresh wrapper process whose only
    child it is (RUSAGE_CHILDREN of this test process would include every earlier child)."""
    wrapper = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], capture_output=True).returncode; "
               "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, cwd=REPO_ROOT,
                         timeout=600, check=True).stdout.split()
    return int(out[0]), int(out[1]) / 1024


def test_a_member_that_inflates_to_1_gib_stays_under_the_memory_bound(ev, own_bundle, tmp_path):
    """Peak memory of both verifiers on a bundle whose clip inflates to 1 GiB: under 256 MB
    (docs/EVIDENCE.md). The clip is streamed to a temporary file, not held in memory."""
    index = index_of(own_bundle.bundle_path)
    clip = index["clips"][0]["path"]
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(own_bundle.bundle_path) as zin, zipfile.ZipFile(bomb, "w", allowZip64=True) as zout:
        for info in zin.infolist():
            if info.filename != clip:
                zout.writestr(info.filename, zin.read(info), compress_type=zipfile.ZIP_DEFLATED)
        info = zipfile.ZipInfo(clip)
        info.compress_type = zipfile.ZIP_DEFLATED
        with zout.open(info, "w", force_zip64=True) as dst:
            zero = bytes(1 << 20)
            for _ in range(1024):
                dst.write(zero)
    assert bomb.stat().st_size < 16 << 20
    py_rc, py_mb = _peak_rss_mb([sys.executable, "-m", "offchain.cli", "verify", str(bomb), "--rpc", ev.rpc_url,
                                 "--ledger", ev.ledger_address])
    js_rc, js_mb = _peak_rss_mb(["node", str(JS_VERIFIER), str(bomb), "--rpc", ev.rpc_url, "--ledger", ev.ledger_address])
    print(f"peak RSS on a 1 GiB member: Python {py_mb:.0f} MB, JavaScript {js_mb:.0f} MB")
    assert py_rc == js_rc == 1
    assert py_mb < 256 and js_mb < 256


# --------------------------------------------------------------------------- real footage


def test_a_range_deep_inside_a_long_gop_walks_back_to_its_keyframe(ev, tmp_path):
    r = run_extract(ev, tmp_path, CAM_LONG, 45_000, 50_000, probe=True)
    rep = r.report
    assert rep.verdict == "verified", rep.render_text()
    assert [(b.height, b.context_only) for b in rep.blocks] == [(1, True), (2, True), (3, False)]
    [clip] = rep.clips
    assert clip.frames == 500 and clip.decoded_frames == 500 and clip.start_ms == ev.ms(0)
    assert not rep.has("frame.not_playable")
    py, (rc, js) = both(r.bundle_path, ev)
    assert py.verdict == js["verdict"] == "verified" and rc == 0
    # a bound on the walk: one block back is not enough, so the frames travel raw, still verified
    short = run_extract(ev, tmp_path / "short", CAM_LONG, 45_000, 50_000, max_context_blocks=1)
    assert short.report.verdict == "verified" and short.report.has("frame.not_playable") and not short.report.clips


def test_high_444_footage_from_a_later_keyframe_plays(ev, tmp_path):
    r = run_extract(ev, tmp_path, CAM_444, 10_000, 15_000, probe=True)
    rep = r.report
    assert rep.verdict == "verified", rep.render_text()
    [clip] = rep.clips
    assert not clip.reencoded and clip.decoded_frames == clip.frames
    assert not rep.has("clip.undecodable")
    py = verify_bundle(r.bundle_path, ev.rpc_url, ledger_address=ev.ledger_address, probe=True)
    assert py.verdict == "verified" and not py.has("clip.undecodable")


@pytest.mark.parametrize("cam, codec", [(CAM_MJPEG, "mjpeg"), (CAM_VP9, "vp9"), (CAM_HEVC, "hevc")])
def test_a_non_h264_camera_is_reencoded_playable_and_bound(ev, tmp_path, cam, codec):
    """MJPEG, VP9 and HEVC cameras (issue 7: "cannot be decoded" beside a clip that plays): the
    clip is re-encoded for browsers, every picture compared with the anchored frames, no frame
    reported unplayable; Python's verifier agrees, JavaScript's cannot compare pictures."""
    r = run_extract(ev, tmp_path, cam, 0, 10_000, probe=True)
    rep = r.report
    assert rep.verdict == "verified", rep.render_text()
    [clip] = rep.clips
    assert clip.reencoded and codec in clip.why and clip.decoded_frames == clip.frames == 100
    assert rep.has("clip.pictures.match") and not rep.has("frame.not_playable")
    py, (rc, js) = both(r.bundle_path, ev)
    assert py.verdict == "verified" and py.has("clip.pictures.match")
    assert js["verdict"] == "partially_verified" and rc == 5 and "clip.pictures.unchecked" in js["codes"]


def test_a_stream_that_stopped_without_a_signed_end_is_declared(ev, tmp_path):
    """The proposer marks the block where a camera's connection closed without a signed end
    (acknowledged delivery); the evidence says so instead of passing a short tail as complete."""
    early = run_extract(ev, tmp_path / "a", CAM_UNENDED, 2_000, 8_000)
    assert early.report.verdict == "verified" and not early.report.has("stream.unended")
    r = run_extract(ev, tmp_path / "b", CAM_UNENDED, 15_000, 25_000)
    assert r.report.verdict == "verified_with_declared_gaps" and r.report.has("stream.unended")
    py, (rc, js) = both(r.bundle_path, ev)
    assert py.verdict == js["verdict"] == "verified_with_declared_gaps" and rc == 3
    assert "stream.unended" in js["codes"] and py.has("stream.unended")


def test_a_declared_outage_is_verified_and_a_forged_one_fails(ev, tmp_path):
    """Issue 10: an outage the camera declared, anchored in its block's manifest, is a gap on
    record in extract and both verifiers (exit 3, `camera.outage.declared`, listed in the report's
    gaps); a declaration whose signature is not the camera's is a named failure in all three."""
    r = run_extract(ev, tmp_path / "a", CAM_OUTAGE, 2_000, 12_000)
    assert r.report.verdict == "verified_with_declared_gaps", r.report.render_text()
    assert {f.code for f in r.report.by_severity("gap")} == {"camera.outage.declared"}
    [gap] = [g for g in r.report.gaps if g.kind == "outage"]
    assert (gap.after_seq, gap.to_ms - gap.from_ms, gap.reason) == (OUTAGE_AFTER, 3_100, "the stream broke")
    py, (rc, js) = both(r.bundle_path, ev)
    assert py.verdict == js["verdict"] == "verified_with_declared_gaps" and rc == 3
    assert py.has("camera.outage.declared") and "camera.outage.declared" in js["codes"]
    assert py.code_keys() == {(f["code"], f.get("height")) for f in js["findings"]}
    bad = run_extract(ev, tmp_path / "b", CAM_OUTAGE, 21_000, 25_000)
    assert bad.report.verdict == "failed" and failures(bad.report) == {"camera.outage.signature.invalid"}
    py, (rc, js) = both(bad.bundle_path, ev)
    assert py.verdict == js["verdict"] == "failed" and rc == 1
    assert failures(py) == failures(js) == {"camera.outage.signature.invalid"}


# --------------------------------------------------------------------------- fuzzing the reader


def test_the_bundle_reader_survives_random_input(own_bundle, tmp_path):
    """Hypothesis: random zips and random index documents give BundleError or a parse, never
    another exception."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    good = index_of(own_bundle.bundle_path)
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                               lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                               max_leaves=12)
    paths = st.sampled_from(["format", "chainId", "camera", "range", "contracts", "blocks", "clips", "rawFrames",
                             "codecSources", "leafEncoding"])

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(key=paths, value=json_values)
    def index_fields(key, value):
        doc = json.loads(json.dumps(good))
        doc[key] = value
        try:
            parse_index(doc)
        except BundleError:
            pass

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=st.binary(max_size=4096))
    def zip_bytes(data):
        p = tmp_path / "fuzz.zip"
        p.write_bytes(b"PK\x03\x04" + data)
        try:
            with BundleReader(p) as r:
                r.read("bundle.json")
        except BundleError:
            pass

    index_fields()
    zip_bytes()


def test_reader_rules_are_pure_and_documented():
    from offchain.evidence.bundle_reader import LIMITS, member_limit, unsafe_name

    assert unsafe_name("clips/clip-000.mp4") is None
    assert unsafe_name("../x") and unsafe_name("/x") and unsafe_name("a\\b") and unsafe_name("C:x")
    assert unsafe_name("a/../../b") and unsafe_name("x\x00")
    assert member_limit("frames/ab") == LIMITS["frames/"] and member_limit("clips/c.mp4") == LIMITS["clips/"]
    docs = (REPO_ROOT / "docs" / "EVIDENCE.md").read_text()
    for name in ("bundle.member.unsafe", "bundle.member.oversize", "clip.pictures.mismatch", "bundle.contract.untrusted"):
        assert f"`{name}`" in docs
