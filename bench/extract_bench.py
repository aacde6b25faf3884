"""Evidence extraction speed, against plain sequential reading and SHA-256 of the same frames.

    python -m bench.extract_bench [--minutes 10] [--rounds 3] [--samples vtest,bikes] [--window 60]

For each sample recording, a camera replays it (looped) for ``--minutes`` of capture time; its
frames go into a LocalStore and its 60-second blocks are anchored and attested on a private Anvil
(loopback only). Then, in the same run and on the same warm page cache:

  read      open and read every frame file of the range, in capture order (the floor: I/O only)
  read+sha  the same plus SHA-256 of every frame (what any integrity check must at least do)
  extract   `offchain.evidence.extract.extract` over the whole range: chain queries, manifest and
            frame fetch with re-hashing, manifest/root/multiproof verification (also on chain),
            remux into MP4, self-check of the written clips, bundle zip
  verify    `verify_bundle` on the bundle extract wrote (chain + bundle only), and the
            independent JavaScript verifier on the same bundle (once)

Each measurement is the median of ``--rounds``. Rates are frames/s; "s per hour" is the time the
step takes for one hour of 25 fps video (90,000 frames) at the measured rate — frames of the
sample's size, so compare rows of one sample with each other. Results: a table and
bench/results/extract.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from offchain.camera.samples import sample_path  # noqa: E402
from offchain.camera.sources import FileSource  # noqa: E402
from offchain.chain.client import Signer, connect  # noqa: E402
from offchain.chain.deployer import deploy  # noqa: E402
from offchain.chain.devchain import DevChain  # noqa: E402
from offchain.chain.ledger import ConsortiumClient, VideoLedgerClient  # noqa: E402
from offchain.chain.reverts import ContractRevert  # noqa: E402
from offchain.core.block import FrameRef, build_block, camera_id, proposer_for  # noqa: E402
from offchain.core.cid import cid_from_digest  # noqa: E402
from offchain.evidence.bundle import ChainReader, verify_bundle  # noqa: E402
from offchain.evidence.extract import extract  # noqa: E402
from offchain.store.local import LocalStore  # noqa: E402
from offchain.tables import render_table  # noqa: E402

RESULTS = REPO / "bench" / "results" / "extract.json"
FRAMES_PER_HOUR_25FPS = 25 * 3600
CAMERAS = {"vtest": "10.8.0.1", "bikes": "10.8.0.2"}
T0 = 1_700_000_000_000


def _anchor_recording(w3, keys: list[str], dep, store: LocalStore, sample: str, minutes: float,
                      window_ms: int) -> dict[str, Any]:
    """Register a camera, replay `sample` for `minutes` into the store, anchor final blocks."""
    ip = CAMERAS[sample]
    governor = ConsortiumClient(Signer(w3, keys[0]), dep.consortium)
    governor.as_signer(Signer(w3, keys[1])).register_camera(ip, os.urandom(32), b"bench".ljust(32, b"\x00"))
    try:
        governor.seal_genesis()
    except ContractRevert as exc:
        if exc.name != "GenesisAlreadySealed":
            raise
    source = FileSource(sample_path(sample), start_ms=T0, loop=True)
    end_ms = T0 + int(minutes * 60_000)
    refs: list[FrameRef] = []
    size = 0
    for f in source:
        if f.timestamp_ms >= end_ms:
            break
        store.put(f.data)
        refs.append(FrameRef.of_bytes(f.seq, f.timestamp_ms, f.data, f.keyframe, f.dts_ms))
        size += len(f.data)
    nodes = governor.nodes()
    signers = {Signer(w3, k).address: Signer(w3, k) for k in keys}
    cam = camera_id(ip)
    blocks = 0
    for start in range(T0, end_ms, window_ms):
        frames = [r for r in refs if start <= r.timestamp_ms < start + window_ms]
        ledger = VideoLedgerClient(signers[nodes[0]], dep.video_ledger)
        prev, height, _ = ledger.tip(cam)
        proposer = proposer_for(cam, start, nodes)
        sealed = build_block(camera_ip=ip, height=height + 1, prev_hash=prev, window_start_ms=start,
                             window_end_ms=start + window_ms, frames=frames, proposer=proposer,
                             codec=source.codec.to_dict())
        store.put(sealed.manifest_bytes)
        VideoLedgerClient(signers[proposer], dep.video_ledger).anchor(sealed.header)
        other = next(n for n in nodes if n != proposer)
        VideoLedgerClient(signers[other], dep.video_ledger).attest(sealed.hash)
        blocks += 1
    return {"ip": ip, "frames": refs, "bytes": size, "from_ms": T0, "to_ms": end_ms, "blocks": blocks,
            "fps": float(source.codec.fps), "size": f"{source.codec.width}x{source.codec.height}"}


def _median_time(fn: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    times, last = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        last = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), last


def _rate(n_frames: int, n_bytes: int, seconds: float) -> dict[str, float]:
    fps = n_frames / seconds
    return {"seconds": round(seconds, 4), "frames_per_s": round(fps, 1), "mb_per_s": round(n_bytes / seconds / 1e6, 1),
            "s_per_hour_25fps": round(FRAMES_PER_HOUR_25FPS / fps, 2)}


def bench_sample(chain: DevChain, w3, dep, work: Path, sample: str, minutes: float, rounds: int,
                 window_ms: int) -> dict[str, Any]:
    store = LocalStore(work / f"store-{sample}", fsync="none")
    t = time.perf_counter()
    data = _anchor_recording(w3, chain.private_keys, dep, store, sample, minutes, window_ms)
    build_s = time.perf_counter() - t
    frames: list[FrameRef] = data["frames"]
    paths = [store.path_for(cid_from_digest(f.sha256)) for f in frames]
    n, nbytes = len(frames), data["bytes"]

    def read_all() -> int:
        total = 0
        for p in paths:
            with open(p, "rb") as fh:
                total += len(fh.read())
        return total

    def read_sha_all() -> int:
        bad = 0
        for p, f in zip(paths, frames):
            with open(p, "rb") as fh:
                bad += hashlib.sha256(fh.read()).digest() != f.sha256
        assert bad == 0
        return bad

    read_all()  # warm the page cache for everyone alike
    t_read, _ = _median_time(read_all, rounds)
    t_sha, _ = _median_time(read_sha_all, rounds)

    reader = ChainReader(w3, dep.video_ledger)
    counter = iter(range(10_000))

    def run_extract():
        out = work / f"out-{sample}-{next(counter)}"
        res = extract(data["ip"], data["from_ms"], data["to_ms"], reader, [store], out)
        assert res.report.verdict == "verified", res.report.render_text()
        return res

    t_extract, res = _median_time(run_extract, rounds)
    t_verify, report = _median_time(lambda: verify_bundle(res.bundle_path, chain.rpc_url, ledger_address=dep.video_ledger),
                                    rounds)
    assert report.verdict == "verified"
    t = time.perf_counter()
    js = subprocess.run(["node", str(REPO / "scripts" / "verify_bundle.js"), str(res.bundle_path), "--rpc", chain.rpc_url,
                         "--ledger", dep.video_ledger, "--json"], capture_output=True, text=True, cwd=REPO)
    t_js = time.perf_counter() - t
    js_verdict = json.loads(js.stdout)["verdict"] if js.stdout else f"error: {js.stderr[-300:]}"
    result = {
        "sample": sample, "camera": data["ip"], "size": data["size"], "fps": data["fps"],
        "video_seconds": (data["to_ms"] - data["from_ms"]) / 1000, "frames": n, "bytes": nbytes,
        "avg_frame_bytes": round(nbytes / n), "blocks": data["blocks"], "build_seconds": round(build_s, 2),
        "bundle_bytes": res.bundle_path.stat().st_size,
        "read": _rate(n, nbytes, t_read),
        "read_sha256": _rate(n, nbytes, t_sha),
        "extract": {**_rate(n, nbytes, t_extract), "phases_last_round": {k: round(v, 4) for k, v in res.timings.items()}},
        "verify_bundle_python": _rate(n, nbytes, t_verify),
        "verify_bundle_js": {**_rate(n, nbytes, t_js), "verdict": js_verdict, "rounds": 1},
        "ratios": {
            "extract_vs_read": round(t_extract / t_read, 2),
            "extract_vs_read_sha256": round(t_extract / t_sha, 2),
            "verify_python_vs_read_sha256": round(t_verify / t_sha, 2),
        },
    }
    for p in work.glob(f"out-{sample}-*"):
        shutil.rmtree(p, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.extract_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="capture time per sample (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="repetitions per measurement; the median is kept")
    ap.add_argument("--samples", default="vtest,bikes", help="comma-separated: vtest, bikes")
    ap.add_argument("--window", type=int, default=60, help="block window in seconds (default 60)")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS.relative_to(REPO)})")
    args = ap.parse_args(argv)
    samples = [s for s in args.samples.split(",") if s]
    for s in samples:
        if s not in CAMERAS:
            ap.error(f"unknown sample {s!r}")
    results = []
    with tempfile.TemporaryDirectory(prefix="frameledger-bench-extract-") as tmp, DevChain(accounts=12) as chain:
        w3 = connect(chain.rpc_url)
        dep = deploy(w3, chain.private_keys, out_dir=None)
        for s in samples:
            print(f"[extract bench] {s}: {args.minutes:g} min of capture, {args.rounds} rounds ...", flush=True)
            results.append(bench_sample(chain, w3, dep, Path(tmp), s, args.minutes, args.rounds, args.window * 1000))

    rows = []
    for r in results:
        for step, key in (("read", "read"), ("read + SHA-256", "read_sha256"), ("extract (verify + remux + bundle)", "extract"),
                          ("verify bundle (Python)", "verify_bundle_python"), ("verify bundle (JavaScript, 1 run)", "verify_bundle_js")):
            m = r[key]
            ratio = m["seconds"] / r["read_sha256"]["seconds"]
            rows.append([f"{r['sample']} {r['size']} {r['avg_frame_bytes']} B/frame", step, f"{m['frames_per_s']:,.0f}",
                         m["mb_per_s"], m["s_per_hour_25fps"], f"{ratio:.2f}x"])
    print()
    print(render_table(["sample", "step", "frames/s", "MB/s", "s per hour of 25 fps", "vs read+SHA"], rows,
                       title=f"Evidence extraction, {args.minutes:g} min per sample, median of {args.rounds}"))
    for r in results:
        ph = r["extract"]["phases_last_round"]
        print(f"\n{r['sample']}: {r['frames']} frames, {r['blocks']} blocks, bundle {r['bundle_bytes'] / 1e6:.1f} MB; extract phases (s): "
              + ", ".join(f"{k} {v:.3f}" for k, v in sorted(ph.items(), key=lambda kv: -kv[1])))
    doc = {
        "bench": "extract",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "config": {"minutes": args.minutes, "rounds": args.rounds, "window_s": args.window, "store": "LocalStore, warm page cache",
                   "chain": "Anvil on 127.0.0.1"},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
