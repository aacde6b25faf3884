"""What the REST API's evidence path costs over calling extraction directly, measured in one run.

    python -m bench api_evidence [-- --rounds 3]

Setup (not timed): the evidence ledger of the extraction tests (tests/integration/evidence_fixtures:
vtest and bikes anchored in 20-second blocks on a private Anvil, frames in a LocalStore), the API
served by uvicorn on loopback, a two-camera session over the first minute of it, proposed and
accepted through the API.

Measured, per round (median of ``--rounds``):

  direct    `extract()` of both cameras over the range, one after the other (what a job runs)
  api job   POST /v1/sessions/{id}/evidence, then GET the job every 20 ms until done, over HTTP
            (each round a range 1 ms different, so no round reuses another's job)
  file read reading the first clip's bytes from disk
  clip GET  GET of the same clip through the API (media token, no Range), over HTTP
  ranges    the same clip fetched in 64 KiB `Range` requests, as a seeking <video> does

Ratios: api job / direct (1.0 = no overhead), clip GET and ranges throughput / file read.
Results: a table and bench/results/api_evidence.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "tests" / "api", REPO / "tests" / "integration"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import httpx  # noqa: E402

from offchain.chain.deployer import deploy  # noqa: E402
from offchain.chain.devchain import DevChain  # noqa: E402
from offchain.tables import render_table  # noqa: E402

RESULTS = REPO / "bench" / "results" / "api_evidence.json"
RANGE_MS = (0, 60_000)  # relative to the ledger's T0: camera A's blocks 1-3, camera B's first two


@dataclass
class _Env:  # what tests/api/api_fixtures.Api needs of a chain
    w3: Any
    keys: list[str]

    def signer(self, i: int) -> Any:
        from offchain.chain.client import Signer

        return Signer(self.w3, self.keys[i])


def _setup(chain: DevChain, work: Path) -> tuple[Any, Any, _Env]:
    from api.app import create_app
    from api.context import Settings
    from api.evidence_routes import EvidenceSettings
    from api_fixtures import DOMAIN, RELAYER
    from evidence_session import build_ledger
    from offchain.chain.client import connect

    w3 = connect(chain.rpc_url)
    dep = deploy(w3, chain.private_keys, out_dir=None)
    ev = build_ledger(w3, chain.private_keys, dep, work / "store", chain.rpc_url)
    path = work / "deployment.json"
    path.write_text(json.dumps(dep.record))
    app = create_app(chain.rpc_url, str(path), relayer_key=chain.private_keys[RELAYER],
                     settings=Settings(siwe_domain=DOMAIN), stores=[ev.store()],
                     evidence=EvidenceSettings(work_dir=str(work / "jobs"), max_kept=64))
    return app, ev, _Env(w3, chain.private_keys)


def _session(api: Any, ev: Any, bank: dict, customer: dict, customer_index: int) -> str:
    a, b = ev.ms(RANGE_MS[0]), ev.ms(RANGE_MS[1])
    sid, r = api.propose(bank, cameras=["0x" + ev.cam_a.hex(), "0x" + ev.cam_b.hex()], startMs=a, endMs=b,
                         salt="0x" + "b3" * 32)
    assert r.status_code == 201, r.text
    assert api.respond(sid, customer, customer_index).status_code == 200
    return sid


def _direct(ev: Any, out: Path, from_ms: int, to_ms: int) -> float:
    from offchain.evidence.extract import anchor_source, extract

    store = ev.store()
    started = time.perf_counter()
    for cam in (ev.cam_a, ev.cam_b):
        reader = anchor_source(ev.reader.contract.w3, ev.ledger_address, None, cam, from_ms, to_ms, [store])
        extract(cam, from_ms, to_ms, reader, [store], out / cam.hex())
    return time.perf_counter() - started


def _job(client: httpx.Client, sid: str, headers: dict, from_ms: int, to_ms: int) -> tuple[float, dict]:
    started = time.perf_counter()
    r = client.post(f"/v1/sessions/{sid}/evidence", json={"fromMs": from_ms, "toMs": to_ms}, headers=headers)
    assert r.status_code == 202, r.text
    doc = r.json()
    while doc["state"] in ("queued", "running"):
        time.sleep(0.02)
        doc = client.get(f"/v1/evidence/jobs/{doc['jobId']}", headers=headers).json()
    assert doc["state"] == "done", doc
    return time.perf_counter() - started, doc


def _clip_reads(client: httpx.Client, url: str, path: Path) -> tuple[float, float, float, int]:
    t0 = time.perf_counter()
    data = path.read_bytes()
    t1 = time.perf_counter()
    full = client.get(url).content
    t2 = time.perf_counter()
    parts, pos = [], 0
    while pos < len(data):
        parts.append(client.get(url, headers={"Range": f"bytes={pos}-{pos + 65535}"}).content)
        pos += 65536
    t3 = time.perf_counter()
    assert full == data == b"".join(parts)
    return t1 - t0, t2 - t1, t3 - t2, len(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench api_evidence")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv or [])
    rows: dict[str, list[float]] = {"direct": [], "job": [], "read": [], "get": [], "ranges": []}
    with tempfile.TemporaryDirectory(prefix="frameledger-bench-api-") as tmp, DevChain(accounts=12) as chain:
        work = Path(tmp)
        from api_fixtures import BANK, CUSTOMER, Api, Clock, serve

        app, ev, env = _setup(chain, work)
        with serve(app) as base, httpx.Client(base_url=base, timeout=120) as client:
            api = Api(http=client, chain=env, clock=Clock())
            bank, customer = api.token(BANK), api.token(CUSTOMER)
            sid = _session(api, ev, bank, customer, CUSTOMER)
            for r in range(args.rounds):
                a, b = ev.ms(RANGE_MS[0]) + r, ev.ms(RANGE_MS[1])
                rows["direct"].append(_direct(ev, work / f"direct-{r}", a, b))
                took, doc = _job(client, sid, bank, a, b)
                rows["job"].append(took)
            clip = doc["cameras"][0]["clips"][0]
            clip_path = next((work / "jobs" / doc["jobId"]).rglob(clip["path"]))
            size = 0
            for _ in range(args.rounds):
                read, get, ranges, size = _clip_reads(client, base + clip["url"], clip_path)
                rows["read"].append(read)
                rows["get"].append(get)
                rows["ranges"].append(ranges)
    med = {k: statistics.median(v) for k, v in rows.items()}
    mb = size / 1e6
    table = [["direct extract() (2 cameras, 60 s)", f"{med['direct']:.3f}", "1.00x"],
             ["API job (POST + poll, HTTP)", f"{med['job']:.3f}", f"{med['job'] / med['direct']:.2f}x of direct"],
             [f"clip file read ({mb:.2f} MB)", f"{med['read']:.4f}", "1.00x"],
             ["clip GET (HTTP)", f"{med['get']:.4f}", f"{med['read'] / med['get']:.3f}x of file read throughput"],
             ["clip in 64 KiB ranges (HTTP)", f"{med['ranges']:.4f}", f"{med['read'] / med['ranges']:.3f}x of file read"]]
    print(render_table(["step", "s (median)", "ratio"], table, title=f"API evidence path, {args.rounds} rounds"))
    doc_out = {"bench": "api_evidence", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()},
               "rounds": args.rounds, "range_ms": RANGE_MS, "clip_bytes": size, "seconds": rows, "median_s": med,
               "ratios": {"job_over_direct": med["job"] / med["direct"],
                          "clip_get_throughput_vs_file_read": med["read"] / med["get"],
                          "clip_ranges_throughput_vs_file_read": med["read"] / med["ranges"]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc_out, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0
