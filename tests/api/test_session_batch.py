"""Sessions over a batch-mode deployment, and the caller's session listing, through HTTP only.

* Batch mode (tests/integration/batch_fixtures.py: two cameras anchored by quorum-signed
  BatchLedger batches, no VideoLedger block): `/agreement` serves the evidence root computed from
  the batch manifests in the API's stores, both parties sign it, the session completes; the
  camera listing counts the batch-mode blocks; an API without the stores says which manifest it
  lacks (503 `batch-manifest-unavailable`) instead of a wrong or empty root.
* `GET /v1/sessions`: a party and the initiator see their sessions, newest first, page by page
  (cursor); a member who is no party sees none of them.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

from api_fixtures import BANK, CUSTOMER, FOUNDER, make_api
from offchain.core import agreement
from offchain.core.block import camera_id
from test_api import problem

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

pytestmark = pytest.mark.slow


@pytest.fixture
def batch_world(chain_env, devchain, tmp_path):
    from batch_fixtures import build_batch_history
    from offchain.camera.samples import sample_path

    hist = build_batch_history(chain_env.w3, chain_env.keys, chain_env.deployment, tmp_path / "bstore",
                               vtest=sample_path("vtest"), rpc_url=devchain.rpc_url)
    record = copy.deepcopy(chain_env.deployment.record)
    record["contracts"]["BatchLedger"] = {"address": hist.batch_ledger}
    return chain_env, hist, record


def _batch_session(api, hist) -> str:
    from batch_fixtures import BCAM_A, BCAM_B

    bank = api.token(BANK)
    sid, r = api.propose(bank, cameras=["0x" + camera_id(ip).hex() for ip in (BCAM_A, BCAM_B)], cameraParty=[0, 0],
                         startMs=hist.ms(0), endMs=hist.ms(80_000))
    assert r.status_code == 201, r.text
    assert api.respond(sid, api.token(CUSTOMER), CUSTOMER).json()["status"] == "formed"
    return sid


def test_batch_mode_session_agreement_is_the_root_over_the_batch_headers(batch_world, devchain, tmp_path):
    from batch_fixtures import BCAM_A, BCAM_B

    env, hist, record = batch_world
    api = make_api(env, devchain, tmp_path, record=record, stores=[hist.store()])
    sid = _batch_session(api, hist)
    cams = (camera_id(BCAM_A), camera_id(BCAM_B))
    expected = agreement.evidence_root(agreement.evidence_leaves(
        cams, hist.ms(0), hist.ms(80_000), {camera_id(ip): [s.header for s in hist.blocks[ip]] for ip in (BCAM_A, BCAM_B)}))
    doc = api.http.get(f"/v1/sessions/{sid}/agreement", headers=api.token(BANK))
    assert doc.status_code == 200, doc.text
    assert doc.json()["evidenceRoot"] == "0x" + expected.hex()
    assert len(doc.json()["leaves"]) == 8 and set(doc.json()["anchoring"].values()) == {"batch"}
    for party in (BANK, CUSTOMER):
        r, _ = api.sign(sid, api.token(party), party)
        assert r.status_code == 200, r.text
    final = api.http.get(f"/v1/sessions/{sid}", headers=api.token(CUSTOMER)).json()
    assert final["status"] == "completed" and final["evidenceRoot"] == "0x" + expected.hex()
    listed = {c["ip"]: c for c in api.http.get("/v1/cameras", headers=api.token(BANK)).json()}
    assert listed[BCAM_A]["blocks"] == 4 and listed[BCAM_A]["anchoring"] == "batch"
    assert listed[BCAM_B]["blocks"] == 4


def test_batch_mode_agreement_without_the_manifests_is_a_named_503(batch_world, devchain, tmp_path):
    from batch_fixtures import BCAM_A

    env, hist, record = batch_world
    api = make_api(env, devchain, tmp_path, record=record)  # no content stores
    sid = _batch_session(api, hist)
    r = api.http.get(f"/v1/sessions/{sid}/agreement", headers=api.token(BANK))
    body = problem(r, 503, "batch-manifest-unavailable")
    assert "FRAMELEDGER_STORES" in body["detail"]
    listed = {c["ip"]: c for c in api.http.get("/v1/cameras", headers=api.token(BANK)).json()}
    assert listed[BCAM_A]["blocks"] is None and listed[BCAM_A]["anchoring"] == "batch"


def test_listing_shows_the_callers_sessions_only_page_by_page(api):
    bank, customer, founder = api.token(BANK), api.token(CUSTOMER), api.token(FOUNDER)
    ids = []
    for salt in ("0x" + "a1" * 32, "0x" + "a2" * 32, "0x" + "a3" * 32):
        sid, r = api.propose(bank, salt=salt)
        assert r.status_code == 201, r.text
        ids.append(sid)
    api.respond(ids[1], customer, CUSTOMER)
    got = api.http.get("/v1/sessions", headers=customer).json()
    assert [s["sessionId"] for s in got["sessions"]] == ids[::-1]  # newest first
    assert {s["role"] for s in got["sessions"]} == {"party"} and got["next"] is None
    assert [s["status"] for s in got["sessions"]] == ["proposed", "formed", "proposed"]
    assert {s["role"] for s in api.http.get("/v1/sessions", headers=bank).json()["sessions"]} == {"initiator"}
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.http.get("/v1/sessions", params=params, headers=bank).json()
        assert len(page["sessions"]) <= 2
        seen += [s["sessionId"] for s in page["sessions"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # every session once, in order, across pages
    assert api.http.get("/v1/sessions", headers=founder).json() == {"sessions": [], "next": None}
    problem(api.http.get("/v1/sessions"), 401, "token-missing")
    problem(api.http.get("/v1/sessions", params={"limit": 101}, headers=bank), 422, "invalid-request")
    problem(api.http.get("/v1/sessions", params={"cursor": "x"}, headers=bank), 422, "invalid-request")
