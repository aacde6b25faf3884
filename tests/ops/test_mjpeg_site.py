"""An MJPEG-over-HTTP camera end to end with the CLI only: a real HTTP camera on loopback
(tests/mjpeg_server.py, JPEGs from FFmpeg's encoder) in a `frameledger up` site, blocks final at
quorum, then `frameledger extract` of a range: VERIFIED against the chain, the clip re-encoded to
H.264 for browsers (MJPEG cannot be remuxed into a playable MP4) with every picture bound to the
anchored JPEG it stands for, and the original JPEGs in the bundle byte for byte."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from mjpeg_server import MjpegCamera, make_jpegs
from site_runner import extract, running_site

pytestmark = pytest.mark.slow


def test_mjpeg_camera_in_a_site_is_anchored_and_its_evidence_verifies(tmp_path):
    jpegs = make_jpegs(20)
    with MjpegCamera(jpegs) as cam:
        with running_site(tmp_path, ip="10.0.0.8", source=cam.url("/cam"), min_blocks=3, extra="max_frames = 120\n",
                          what="the MJPEG camera") as site:
            first = site.camera["lastBlock"]["windowStartMs"] - 10_000
            out, report = extract(site, ip="10.0.0.8", from_ms=first, out=tmp_path / "ev", timeout=600)
            assert out.returncode == 0 and report["verdict"] == "verified", out.stdout[-3000:] + out.stderr[-2000:]
    log = (tmp_path / "site" / "camera-10.0.0.8.log").read_text()
    assert "MjpegSource(" in log, log[-2000:]
    codes = {f["code"] for f in report["findings"]}
    assert {"clip.reencoded", "clip.pictures.match"} <= codes, sorted(codes)
    assert report["clips"] and all(c["reencoded"] and "mjpeg" in c["why"] for c in report["clips"]), report["clips"]
    served = {hashlib.sha256(j).hexdigest() for j in jpegs}
    with zipfile.ZipFile(report["outputs"]["bundle"]) as bundle:
        raw = [n for n in bundle.namelist() if n.startswith("frames/")]
        assert raw, bundle.namelist()[:20]
        assert {hashlib.sha256(bundle.read(n)).hexdigest() for n in raw} <= served  # the camera's own JPEGs
