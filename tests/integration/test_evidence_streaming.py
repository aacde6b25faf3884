"""Extraction streams: peak memory does not grow with the length of the range.

A camera whose frames are made large (a user-data SEI of 20 kB in each, as the extraction bench
makes its frames unique) is extracted over 20 s and over 3 minutes, each in a fresh process whose
peak RSS is read afterwards. Holding the frames of the range (as extraction did before it
streamed) would add their ~90 MB; streaming adds only the per-frame bookkeeping. Every bundle
still verifies, with both verifiers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from offchain.chain.deployer import deploy
from offchain.evidence.bundle import verify_bundle
from offchain.store.local import LocalStore

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))
from bench.extract_bench import anchor_camera  # noqa: E402

pytestmark = pytest.mark.slow
PAD = 20_000
CHILD = """
import json, resource, sys
from offchain.chain.client import connect
from offchain.evidence.bundle import ChainReader
from offchain.evidence.extract import extract
from offchain.store.local import LocalStore
rpc, ledger, store, ip, lo, hi, out = sys.argv[1:]
res = extract(ip, int(lo), int(hi), ChainReader(connect(rpc), ledger), [LocalStore(store, fsync="none")], out)
print(json.dumps({"verdict": res.report.verdict, "bundle": str(res.bundle_path), "fetched_bytes": res.fetched_bytes,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _extract_in_child(dep, rpc: str, store_dir: Path, cam: dict, to_ms: int, out: Path) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, rpc, dep.video_ledger, str(store_dir), cam["ip"],
                        str(cam["from_ms"]), str(to_ms), str(out)], capture_output=True, text=True, cwd=REPO_ROOT,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_the_range(devchain, w3, tmp_path):
    dep = deploy(w3, devchain.private_keys, out_dir=None)
    store_dir = tmp_path / "store"
    cam = anchor_camera(w3, devchain.private_keys, dep, LocalStore(store_dir, fsync="none"), "bikes", 200, 3.0,
                        60_000, pad=PAD)
    frame_mb = cam["bytes"] / 1e6
    assert frame_mb > 80  # the frames of the long range are far more than the bound below
    short = _extract_in_child(dep, devchain.rpc_url, store_dir, cam, cam["from_ms"] + 20_000, tmp_path / "short")
    long = _extract_in_child(dep, devchain.rpc_url, store_dir, cam, cam["to_ms"], tmp_path / "long")
    assert short["verdict"] == long["verdict"] == "verified"
    assert long["fetched_bytes"] >= cam["bytes"]  # every frame was read (and re-hashed) from the store
    grew = long["rss_mb"] - short["rss_mb"]
    print(f"peak RSS: 20 s {short['rss_mb']:.0f} MB, 3 min {long['rss_mb']:.0f} MB (+{grew:.0f} MB for "
          f"{frame_mb:.0f} MB more frames)")
    assert grew < frame_mb / 3, f"peak RSS grew {grew:.0f} MB over {frame_mb:.0f} MB of frames"
    report = verify_bundle(long["bundle"], devchain.rpc_url, ledger_address=dep.video_ledger)
    assert report.verdict == "verified"
    js = subprocess.run(["node", str(REPO_ROOT / "scripts" / "verify_bundle.js"), long["bundle"], "--rpc",
                         devchain.rpc_url, "--ledger", dep.video_ledger, "--json"], capture_output=True, text=True,
                        cwd=REPO_ROOT, timeout=600)
    assert js.returncode == 0 and json.loads(js.stdout)["verdict"] == "verified", js.stdout[-500:] + js.stderr[-500:]
