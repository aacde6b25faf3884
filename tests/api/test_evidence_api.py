"""The evidence routes against real anchored video on Anvil, through HTTP only: an extraction job
with progress, its clips (with byte ranges), report and bundle, single-frame proofs, the blocks
listing in batch mode, and every refusal (no token, non-party, over-limit range, unknown job, bad
Range header, unreachable chain)."""

from __future__ import annotations

import hashlib
import io
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from api.evidence_jobs import CameraTask, EvidenceJobs, JobsFull, JobState
from api.evidence_routes import EvidenceSettings, byte_range
from api.problems import Problem
from api_fixtures import BANK, CUSTOMER, FOUNDER, make_api
from evidence_session import CAM_A, GAP_SEQS, SESSION_FROM, SESSION_TO, T0, build_ledger, evidence_session
from offchain.chain.client import Signer
from offchain.chain.ledger import ConsortiumClient, VideoLedgerClient
from offchain.evidence.bundle import verify_bundle
from offchain.evidence.video import probe_mp4
from test_api import problem

pytestmark = pytest.mark.slow


@dataclass
class Env:  # the shape of tests/conftest.py's ChainEnv, at module scope
    w3: object
    keys: list[str]
    deployment: object

    def signer(self, i: int) -> Signer:
        return Signer(self.w3, self.keys[i])

    def consortium(self, i: int = 0) -> ConsortiumClient:
        return ConsortiumClient(self.signer(i), self.deployment.consortium)

    def ledger(self, i: int) -> VideoLedgerClient:
        return VideoLedgerClient(self.signer(i), self.deployment.video_ledger)


@pytest.fixture(scope="module")
def world(devchain, w3, base_deployment, tmp_path_factory):
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        env = Env(w3, devchain.private_keys, base_deployment)
        ev = build_ledger(w3, devchain.private_keys, base_deployment, tmp_path_factory.mktemp("ev") / "store",
                          devchain.rpc_url)
        yield env, ev
    finally:
        w3.provider.make_request("evm_revert", [snapshot])


def app_for(world, devchain, tmp: Path, **evidence):
    env, ev = world
    tmp.mkdir(parents=True, exist_ok=True)
    return make_api(env, devchain, tmp, stores=[ev.store()], evidence=EvidenceSettings(work_dir=str(tmp / "jobs"),
                                                                                      **evidence))


@pytest.fixture(scope="module")
def eapi(world, devchain, tmp_path_factory):
    return app_for(world, devchain, tmp_path_factory.mktemp("eapi"))


@pytest.fixture(scope="module")
def sid(eapi, world):
    return evidence_session(eapi, world[1])


def wait_job(api, job_id: str, headers: dict, seen: list[float] | None = None) -> dict:
    deadline = time.monotonic() + 600  # a wait, not a timing assertion: the box is shared
    while time.monotonic() < deadline:
        doc = api.http.get(f"/v1/evidence/jobs/{job_id}", headers=headers)
        assert doc.status_code == 200, doc.text
        body = doc.json()
        if seen is not None:
            seen.append(body["progress"])
        if body["state"] in ("done", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture(scope="module")
def job(eapi, sid):
    bank = eapi.token(BANK)
    r = eapi.http.post(f"/v1/sessions/{sid}/evidence", headers=bank)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/evidence/jobs/{r.json()['jobId']}"
    progress: list[float] = []
    doc = wait_job(eapi, r.json()["jobId"], bank, progress)
    assert doc["state"] == "done", doc
    return doc, progress


def cam_doc(doc: dict, cam: bytes) -> dict:
    return next(c for c in doc["cameras"] if c["cameraId"] == "0x" + cam.hex())


# ---------------------------------------------------------------- the happy path


def test_extraction_job_reports_progress_and_each_cameras_verdict_and_gaps(eapi, world, sid, job):
    _, ev = world
    doc, progress = job
    assert progress == sorted(progress) and progress[-1] == 1.0 and doc["phase"] == "done"
    assert [c["cameraId"] for c in doc["cameras"]] == ["0x" + ev.cam_a.hex(), "0x" + ev.cam_b.hex()]
    a, b = cam_doc(doc, ev.cam_a), cam_doc(doc, ev.cam_b)
    assert (a["fromMs"], a["toMs"], a["ip"]) == (SESSION_FROM, SESSION_TO, CAM_A)
    assert a["verdict"] == "verified_with_declared_gaps"
    assert [(g["kind"], g["from_seq"], g["to_seq"]) for g in a["gaps"]] == [("declared", *GAP_SEQS)]
    assert b["verdict"] == "verified" and b["gaps"] == []
    starts = [c["start_ms"] for c in a["clips"]]
    assert a["clips"] and starts == sorted(starts)  # time order
    # the same request again reuses the job
    again = eapi.http.post(f"/v1/sessions/{sid}/evidence", headers=eapi.token(CUSTOMER))
    assert again.status_code == 200 and again.json()["jobId"] == doc["jobId"]


def test_clip_plays_and_serves_byte_ranges(eapi, world, job, tmp_path):
    _, ev = world
    clip = cam_doc(job[0], ev.cam_a)["clips"][0]
    bank = eapi.token(BANK)
    full = eapi.http.get(clip["url"].split("?")[0], headers=bank)
    assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
    assert full.headers["accept-ranges"] == "bytes"
    path = tmp_path / "clip.mp4"
    path.write_bytes(full.content)
    probe = probe_mp4(path)
    assert probe.codec == "h264" and probe.frames == clip["frames"]
    size = len(full.content)
    # a <video> element sends no Authorization header: the URL's access token stands in for it
    part = eapi.http.get(clip["url"], headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == full.content[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{size}"
    tail = eapi.http.get(clip["url"], headers={"Range": "bytes=-64"})
    assert tail.status_code == 206 and tail.content == full.content[-64:]
    opened = eapi.http.get(clip["url"], headers={"Range": f"bytes={size - 10}-"})
    assert opened.content == full.content[-10:]
    clamped = eapi.http.get(clip["url"], headers={"Range": f"bytes=0-{size * 2}"})
    assert clamped.status_code == 206 and clamped.content == full.content


def test_report_and_bundle_verify_against_the_chain(eapi, world, job, tmp_path):
    _, ev = world
    a = cam_doc(job[0], ev.cam_a)
    report = eapi.http.get(a["reportUrl"])
    assert report.status_code == 200 and report.json()["verdict"] == a["verdict"]
    assert report.json()["range"] == {"fromMs": SESSION_FROM, "toMs": SESSION_TO}
    bundle = eapi.http.get(a["bundleUrl"])
    assert bundle.status_code == 200 and bundle.headers["content-type"] == "application/zip"
    assert "bundle.json" in zipfile.ZipFile(io.BytesIO(bundle.content)).namelist()
    path = tmp_path / "bundle.zip"
    path.write_bytes(bundle.content)
    assert verify_bundle(path, ev.rpc_url, ledger_address=ev.ledger_address).verdict == a["verdict"]


def test_single_frame_proof_by_instant_and_by_seq(eapi, world, sid):
    _, ev = world
    bank = eapi.token(BANK)
    at = T0 + 30_050
    by_at = eapi.http.get(f"/v1/sessions/{sid}/evidence/proof", params={"camera": CAM_A, "at": at}, headers=bank)
    assert by_at.status_code == 200, by_at.text
    p = by_at.json()
    assert p["ok"] and p["verifiedOnChain"] and p["verifiedLocally"] and p["bytesVerified"]
    frame = max((f for f in ev.frames[CAM_A].values() if f.timestamp_ms <= at), key=lambda f: f.timestamp_ms)
    assert p["frame"]["seq"] == frame.seq and p["frame"]["sha256"] == "0x" + hashlib.sha256(frame.data).hexdigest()
    block = next(b for b in ev.blocks[CAM_A] if b.sealed.header.window_start_ms <= at < b.sealed.header.window_end_ms)
    assert p["block"]["blockHash"] == "0x" + block.sealed.hash.hex() and p["block"]["anchorTx"] == block.anchor_tx
    by_seq = eapi.http.get(f"/v1/sessions/{sid}/evidence/proof", params={"camera": "0x" + ev.cam_a.hex(),
                                                                          "seq": frame.seq}, headers=bank)
    assert by_seq.status_code == 200 and by_seq.json()["proof"] == p["proof"]
    url = f"/v1/sessions/{sid}/evidence/proof"
    problem(eapi.http.get(url, params={"camera": CAM_A, "at": T0 + 25_500}, headers=bank), 404, "frame-not-found")
    problem(eapi.http.get(url, params={"camera": CAM_A, "seq": GAP_SEQS[0] + 5}, headers=bank), 404, "frame-not-found")
    problem(eapi.http.get(url, params={"camera": CAM_A, "at": T0}, headers=bank), 422, "outside-session")
    problem(eapi.http.get(url, params={"camera": CAM_A}, headers=bank), 422, "invalid-request")
    problem(eapi.http.get(url, params={"camera": "10.9.9.9", "at": at}, headers=bank), 422, "camera-not-in-session")


# ---------------------------------------------------------------- refusals


def test_every_evidence_route_needs_a_token_and_a_party(eapi, world, sid, job):
    _, ev = world
    doc = job[0]
    clip = cam_doc(doc, ev.cam_a)["clips"][0]["url"].split("?")[0]
    base = f"/v1/evidence/jobs/{doc['jobId']}/cameras/0x{ev.cam_a.hex()}"
    gets = [f"/v1/evidence/jobs/{doc['jobId']}", clip, f"{base}/report", f"{base}/bundle",
            f"/v1/sessions/{sid}/evidence/proof?camera={CAM_A}&at={T0 + 30_000}"]
    for path in gets:
        problem(eapi.http.get(path), 401, "token-missing")
    problem(eapi.http.post(f"/v1/sessions/{sid}/evidence"), 401, "token-missing")
    founder = eapi.token(FOUNDER)  # a consortium member, not a party of the session
    for path in gets:
        problem(eapi.http.get(path, headers=founder), 403, "not-a-party")
    problem(eapi.http.post(f"/v1/sessions/{sid}/evidence", headers=founder), 403, "not-a-party")
    # a media token names its job: it opens nothing else
    access = doc["mediaAccess"]["token"]
    problem(eapi.http.get(f"/v1/evidence/jobs/{'0' * 32}/cameras/0x{ev.cam_a.hex()}/report?access={access}"),
            401, "token-invalid")
    problem(eapi.http.get(f"{base}/report?access=forged.1.abc"), 401, "token-invalid")


def test_unknown_jobs_cameras_clips_and_bad_ranges(eapi, world, sid, job):
    _, ev = world
    doc, bank = job[0], eapi.token(BANK)
    problem(eapi.http.get(f"/v1/evidence/jobs/{'ab' * 16}", headers=bank), 404, "job-not-found")
    problem(eapi.http.get("/v1/evidence/jobs/not-a-job", headers=bank), 422, "invalid-request")
    base = f"/v1/evidence/jobs/{doc['jobId']}/cameras"
    problem(eapi.http.get(f"{base}/0x{'11' * 32}/report", headers=bank), 404, "camera-not-in-job")
    problem(eapi.http.get(f"{base}/0x{ev.cam_a.hex()}/clips/999", headers=bank), 404, "clip-not-found")
    url = cam_doc(doc, ev.cam_a)["clips"][0]["url"]
    for bad in ("bytes=abc", "bytes=5-1", "bytes=99999999999-", "bytes=0-1,5-6", "items=0-1", "bytes=-0", "bytes=-"):
        body = problem(eapi.http.get(url, headers={"Range": bad}), 416, "range-not-satisfiable")
        assert body["status"] == 416
    r = eapi.http.get(url, headers={"Range": "bytes=5-1"})
    assert r.headers["content-range"].startswith("bytes */")
    problem(eapi.http.post(f"/v1/sessions/{sid}/evidence", json={"cameras": ["10.9.9.9"]}, headers=bank),
            422, "camera-not-in-session")
    problem(eapi.http.post(f"/v1/sessions/{sid}/evidence", json={"fromMs": T0, "toMs": T0 + 1000}, headers=bank),
            422, "outside-session")
    problem(eapi.http.post(f"/v1/sessions/0x{'00' * 32}/evidence", headers=bank), 404, "session-not-found")
    problem(eapi.http.post(f"/v1/sessions/{sid}/evidence", json={"bogus": 1}, headers=bank), 422, "invalid-request")


def test_over_limit_ranges_and_frame_counts_are_413(world, devchain, tmp_path):
    api = app_for(world, devchain, tmp_path, max_range_ms=5_000, max_frames=50)
    sid = evidence_session(api, world[1], salt="0x" + "e8" * 32, form=False)
    bank = api.token(BANK)
    url = f"/v1/sessions/{sid}/evidence"
    body = problem(api.http.post(url, headers=bank), 413, "range-too-large")
    assert body["limitMs"] == 5_000
    problem(api.http.post(url, json={"fromMs": SESSION_FROM, "toMs": SESSION_FROM + 5_000}, headers=bank),
            413, "too-many-frames")  # two cameras' blocks over 5 s hold far more than 50 frames
    # media tokens expire like bearer tokens
    api2 = app_for(world, devchain, tmp_path / "b")
    sid2 = evidence_session(api2, world[1], salt="0x" + "e9" * 32, form=False)
    r = api2.http.post(f"/v1/sessions/{sid2}/evidence", json={"cameras": [CAM_A], "fromMs": SESSION_FROM,
                                                                "toMs": SESSION_FROM + 2_000}, headers=api2.token(BANK))
    assert r.status_code == 202, r.text
    doc = wait_job(api2, r.json()["jobId"], api2.token(BANK))
    api2.clock.now += 901
    problem(api2.http.get(doc["cameras"][0]["reportUrl"]), 401, "token-expired")


def test_unreachable_chain_is_503_never_500(world, devchain, tmp_path):
    from web3 import HTTPProvider

    api = app_for(world, devchain, tmp_path)
    sid = evidence_session(api, world[1], salt="0x" + "ea" * 32, form=False)
    bank = api.token(BANK)
    api.http.app.state.ctx.ledger.contract.w3.provider = HTTPProvider("http://127.0.0.1:9", request_kwargs={"timeout": 2})
    problem(api.http.post(f"/v1/sessions/{sid}/evidence", headers=bank), 503, "chain-unavailable")
    problem(api.http.get(f"/v1/sessions/{sid}/evidence/proof", params={"camera": CAM_A, "at": T0 + 30_000},
                         headers=bank), 503, "chain-unavailable")
    problem(api.http.get(f"/v1/cameras/{CAM_A}/blocks", headers=bank), 503, "chain-unavailable")


def test_an_api_without_stores_says_evidence_unavailable(world, devchain, tmp_path):
    env, ev = world
    api = make_api(env, devchain, tmp_path)
    sid = evidence_session(api, ev, salt="0x" + "eb" * 32, form=False)
    problem(api.http.post(f"/v1/sessions/{sid}/evidence", headers=api.token(BANK)), 503, "evidence-unavailable")


# ---------------------------------------------------------------- the job table and the Range parser


def test_job_table_bounds_admission_and_records_failures(tmp_path):
    gate = threading.Event()

    def runner(task, out, progress):
        if task.camera == b"\xee" * 32:
            raise requests.exceptions.ConnectionError("the chain went away")
        progress("manifests")
        gate.wait(60)
        return None

    jobs = EvidenceJobs(runner, tmp_path, clock=time.time, max_running=1, max_queued=1, max_kept=4)
    task = lambda c: [CameraTask(camera=c, ip=None, from_ms=0, to_ms=1)]  # noqa: E731
    first, created = jobs.submit("a", b"s", task(b"\x01" * 32))
    assert created and jobs.submit("a", b"s", task(b"\x01" * 32)) == (first, False)
    until(lambda: first.phase == "plan")  # running, one phase of six done
    assert first.state is JobState.RUNNING and 0 < first.progress < 1
    second, _ = jobs.submit("b", b"s", task(b"\x02" * 32))  # waits behind the first
    with pytest.raises(JobsFull):
        jobs.submit("c", b"s", task(b"\x03" * 32))
    gate.set()
    until(lambda: not first.active and not second.active)
    assert first.state is JobState.DONE and first.progress == 1.0
    failed, _ = jobs.submit("d", b"s", task(b"\xee" * 32))
    until(lambda: not failed.active)
    assert failed.state is JobState.FAILED and failed.error["status"] == 503
    assert failed.error["code"] == "chain-unavailable"
    retried, created = jobs.submit("d", b"s", task(b"\xee" * 32))
    assert created and retried.job_id != failed.job_id  # a failed job is not reused
    until(lambda: not retried.active)
    (first.out_dir / "x").mkdir(parents=True)
    for k in "ef":  # more jobs than kept (4): the oldest finished are evicted, files and all
        j, _ = jobs.submit(k, b"s", task(b"\x04" * 32))
        until(lambda j=j: not j.active)
    assert jobs.get(first.job_id) is None and jobs.get(second.job_id) is None and not first.out_dir.exists()
    assert jobs.get(retried.job_id) is not None and jobs.get(failed.job_id) is not None
    jobs.shutdown()


def until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout  # a wait, not a timing assertion
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.mark.parametrize("header,expected", [
    (None, None), ("bytes=0-9", (0, 9)), ("bytes=10-", (10, 99)), ("bytes=-5", (95, 99)), ("bytes=0-500", (0, 99)),
    ("bytes=-500", (0, 99)), (" bytes=99-99 ", (99, 99))])
def test_byte_range_parser(header, expected):
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=9-1", "bytes=0-1,3-4", "bytes=x-1", "pages=1-2", "bytes=-0",
                                    "bytes=" + "1" * 30 + "-", "bytes=0-" + " " * 300])
def test_byte_range_parser_refuses(header):
    with pytest.raises(Problem) as exc:
        byte_range(header, 100)
    assert exc.value.status == 416 and exc.value.headers == {"Content-Range": "bytes */100"}


# ---------------------------------------------------------------- the blocks listing in batch mode


def test_blocks_listing_reads_batch_mode_deployments_too(world, devchain, tmp_path):
    import copy

    from batch_fixtures import BCAM_A, build_batch_history
    from offchain.camera.samples import sample_path

    env, _ = world
    hist = build_batch_history(env.w3, env.keys, env.deployment, tmp_path / "bstore", vtest=sample_path("vtest"),
                               rpc_url=devchain.rpc_url)
    record = copy.deepcopy(env.deployment.record)
    record["contracts"]["BatchLedger"] = {"address": hist.batch_ledger}
    api = make_api(env, devchain, tmp_path, record=record, stores=[hist.store()])
    h = api.token(BANK)
    blocks = api.http.get(f"/v1/cameras/{BCAM_A}/blocks", headers=h).json()
    expected = hist.blocks[BCAM_A]
    assert [b["height"] for b in blocks] == [s.header.height for s in expected]
    assert [b["hash"] for b in blocks] == ["0x" + s.hash.hex() for s in expected]
    assert {b["anchoring"] for b in blocks} == {"batch"} and all(b["final"] for b in blocks)
    page = api.http.get(f"/v1/cameras/{BCAM_A}/blocks", params={"from_ms": hist.ms(25_000), "to_ms": hist.ms(45_000),
                                                                "limit": 1}, headers=h)
    assert [b["height"] for b in page.json()] == [2] and "2 blocks match" in page.headers["X-FrameLedger-Truncated"]
    # the per-header cameras of the same deployment still list from the VideoLedger
    header_mode = api.http.get(f"/v1/cameras/{CAM_A}/blocks", headers=h).json()
    assert {b["anchoring"] for b in header_mode} == {"header"} and len(header_mode) == 4


# ---------------------------------------------------------------- Schemathesis on the evidence routes


def test_evidence_operations_never_answer_a_server_error(eapi, world, sid, job):
    """The evidence operations with the real session, job and camera in their paths (random ids
    stop at 404, which tests/api/test_api_schema.py covers), everything else generated, valid
    and invalid: no 5xx."""
    from collections import Counter

    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_asgi("/openapi.json", eapi.http.app)
    ids = {"session_id": sid, "job_id": job[0]["jobId"], "camera": "0x" + world[1].cam_a.hex()}
    operations = [op for op in (r.ok() for r in schema.get_all_operations()) if "evidence" in op.path]
    assert len(operations) == 6
    headers = eapi.token(BANK)
    statuses: Counter[int] = Counter()
    def runner(operation, positive: bool):
        @given(case=operation.as_strategy(GenerationMode.POSITIVE if positive else GenerationMode.NEGATIVE))
        @settings(max_examples=10, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            for name in list(case.path_parameters or {}):
                if name in ids and positive:
                    case.path_parameters[name] = ids[name]
            statuses[case.call_and_validate(headers=headers, checks=[not_a_server_error]).status_code] += 1

        return run

    for operation in operations:
        for positive in (True, False):
            runner(operation, positive)()
    assert statuses[200] > 0 and max(statuses) < 500, statuses
