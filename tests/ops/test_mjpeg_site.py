"""An MJPEG-over-HTTP camera end to end with the CLI only: a real HTTP camera on loopback
(tests/mjpeg_server.py, JPEGs from FFmpeg's encoder) in a `frameledger up` site, blocks final at
quorum, then `frameledger extract` of a range: VERIFIED against the chain, the clip re-encoded to
H.264 for browsers (MJPEG cannot be remuxed into a playable MP4) with every picture bound to the
anchored JPEG it stands for, and the original JPEGs in the bundle byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import zipfile

import pytest

from mjpeg_server import MjpegCamera, make_jpegs

pytestmark = pytest.mark.slow


def test_mjpeg_camera_in_a_site_is_anchored_and_its_evidence_verifies(tmp_path):
    jpegs = make_jpegs(20)
    with MjpegCamera(jpegs) as cam:
        site = tmp_path / "site.toml"
        site.write_text(f'dir = "site"\nrpc_port = 0\nwindow_ms = 5000\nstatus_every_s = 2\n\n'
                        f'[[cameras]]\nip = "10.0.0.8"\nsource = "{cam.url("/cam")}"\nmax_frames = 120\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMELEDGER_")}
        up = subprocess.Popen([sys.executable, "-m", "offchain.cli", "up", str(site), "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
        try:
            info, camera = None, None
            for line in up.stdout:
                msg = json.loads(line) if line.startswith("{") else {}
                info = msg.get("up", info)
                cams = (msg.get("status") or {}).get("cameras") or [{}]
                if (cams[0].get("lastBlock") or {}).get("finalized") and cams[0]["blocks"] >= 3:
                    camera = cams[0]
                    break
            assert camera, "no final blocks from the MJPEG camera"
            store = tmp_path / "site" / "nodes" / "node-bank" / "data" / "store"
            first = camera["lastBlock"]["windowStartMs"] - 10_000
            out = subprocess.run([sys.executable, "-m", "offchain.cli", "extract", "--camera", "10.0.0.8", "--from",
                                  str(first), "--to", str(camera["lastBlock"]["windowEndMs"]), "--out",
                                  str(tmp_path / "ev"), "--store", str(store), "--rpc", info["rpc"], "--deployment",
                                  info["deployment"], "--json"], capture_output=True, text=True, env=env, timeout=600)
            report = json.loads(out.stdout)
            assert out.returncode == 0 and report["verdict"] == "verified", out.stdout[-3000:] + out.stderr[-2000:]
        finally:
            os.kill(up.pid, signal.SIGTERM)  # ours, by PID
            up.wait(timeout=60)
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
