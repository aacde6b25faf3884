"""The REST API against a real chain: sign-in, reads, problem documents, and the whole signing
session lifecycle driven through HTTP only, with every refusal."""

from __future__ import annotations

import pytest

from api.problems import TYPE_PREFIX

from api_fixtures import BANK, CAMS, CUSTOMER, FOUNDER, NODE, OUTSIDER, W, iso, make_api


def problem(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == TYPE_PREFIX + code and body["status"] == status, body
    return body


# ---------------------------------------------------------------- sign-in and tokens


def test_every_route_but_health_and_sign_in_needs_a_token(api):
    assert api.http.get("/v1/health").json()["chainId"] == 31337
    assert api.http.get("/v1/auth/nonce").status_code == 200
    for path in ("/v1/consortium", "/v1/cameras", "/v1/alarms", "/v1/cameras/10.7.0.1/blocks",
                 "/v1/cameras/10.7.0.1/risk", "/v1/sessions/domain", "/v1/sessions/0x" + "00" * 32):
        problem(api.http.get(path), 401, "token-missing")
    problem(api.http.get("/v1/consortium", headers={"Authorization": "Bearer abc.def"}), 401, "token-invalid")
    problem(api.http.get("/v1/consortium", headers={"Authorization": "Bearer " + "x" * 600}), 401, "token-invalid")


def test_sign_in_with_ethereum_and_its_refusals(api):
    ok = api.sign_in(BANK)
    assert ok.status_code == 200 and ok.json()["address"] == api.addr(BANK)
    headers = {"Authorization": f"Bearer {ok.json()['token']}"}
    assert api.http.get("/v1/consortium", headers=headers).json()["quorum"] == 2

    message = api.siwe_message(CUSTOMER)
    from api import siwe
    body = {"message": message, "signature": "0x" + siwe.sign(message, api.key(CUSTOMER)).hex()}
    assert api.http.post("/v1/auth/siwe", json=body).status_code == 200
    problem(api.http.post("/v1/auth/siwe", json=body), 401, "nonce-unknown")  # a replayed nonce

    problem(api.sign_in(BANK, signer=CUSTOMER), 401, "wrong-signer")
    problem(api.sign_in(OUTSIDER), 403, "not-a-member")
    problem(api.sign_in(BANK, domain="evil.example"), 401, "siwe-domain")
    problem(api.sign_in(BANK, chain_id=1), 401, "siwe-chain")
    problem(api.sign_in(BANK, issued_at=iso(api.clock() - 3600)), 401, "siwe-expired")
    problem(api.sign_in(BANK, expiration_time=iso(api.clock() - 1)), 401, "siwe-expired")
    problem(api.sign_in(BANK, nonce="neverissued1"), 401, "nonce-unknown")
    garbled = {"message": "hello\nworld", "signature": "0x" + "11" * 65}
    problem(api.http.post("/v1/auth/siwe", json=garbled), 400, "siwe-malformed")

    api.clock.now += 301  # the nonce outlives its five minutes
    stale = api.siwe_message(BANK)
    api.clock.now += 301
    sig = siwe.sign(stale, api.key(BANK))
    problem(api.http.post("/v1/auth/siwe", json={"message": stale, "signature": "0x" + sig.hex()}), 401, "nonce-expired")


def test_tokens_expire_and_removed_members_lose_access(api):
    headers = api.token(CUSTOMER)
    api.clock.now += 901
    problem(api.http.get("/v1/consortium", headers=headers), 401, "token-expired")
    headers = api.token(CUSTOMER)
    api.chain.consortium(FOUNDER).remove_member(api.addr(CUSTOMER))
    problem(api.http.get("/v1/consortium", headers=headers), 403, "not-a-member")


# ---------------------------------------------------------------- reads


def test_consortium_cameras_blocks_risk_and_alarms(api):
    h = api.token(BANK)
    assert api.http.get("/v1/consortium", headers=h).json()["signingSession"] == api.chain.deployment.signing_session
    cams = api.http.get("/v1/cameras", headers=h).json()
    assert [(c["ip"], c["blocks"], c["risk"]) for c in cams] == [("10.7.0.1", 2, False), ("10.7.0.2", 2, False)]
    blocks = api.http.get("/v1/cameras/10.7.0.1/blocks", params={"from_ms": W + 1, "to_ms": W + 2}, headers=h).json()
    assert [b["height"] for b in blocks] == [1]
    assert api.http.get("/v1/cameras/10.7.0.1/blocks", params={"from_ms": 0, "to_ms": 1000}, headers=h).json() == []
    page = api.http.get("/v1/cameras/10.7.0.1/blocks", params={"limit": 1}, headers=h)
    assert len(page.json()) == 1 and "2 blocks match" in page.headers["X-FrameLedger-Truncated"]
    problem(api.http.get("/v1/cameras/10.7.0.1/blocks", params={"from_ms": -1}, headers=h), 422, "invalid-request")
    problem(api.http.get("/v1/cameras/0x" + "zz" * 32 + "/risk", headers=h), 400, "invalid-camera")
    assert api.http.get("/v1/alarms", headers=h).json() == []
    api.chain.ledger(NODE).raise_risk(CAMS[0], "test", W)
    assert api.http.get("/v1/cameras/10.7.0.1/risk", headers=h).json()["active"] is True
    assert [a["cameraId"] for a in api.http.get("/v1/alarms", headers=h).json()] == ["0x" + CAMS[0].hex()]


def test_unreachable_chain_is_a_503_not_a_500(chain_env, devchain, tmp_path):
    from web3 import HTTPProvider

    api = make_api(chain_env, devchain, tmp_path)
    headers = api.token(BANK)
    # the chain node goes away: the API's connection now points at a closed loopback port
    api.http.app.state.ctx.consortium.contract.w3.provider = HTTPProvider("http://127.0.0.1:9", request_kwargs={"timeout": 2})
    problem(api.http.get("/v1/consortium", headers=headers), 503, "chain-unavailable")
    problem(api.http.get("/v1/health"), 503, "chain-unavailable")


def test_without_a_relayer_writes_are_503(chain_env, devchain, tmp_path):
    api = make_api(chain_env, devchain, tmp_path, relayer=False)
    chain_env.consortium(BANK).register_camera("10.7.0.1", b"\x01" * 32, b"\x02" * 32)
    chain_env.consortium(CUSTOMER).register_camera("10.7.0.2", b"\x03" * 32, b"\x04" * 32)
    _, r = api.propose(api.token(BANK))
    problem(r, 503, "relayer-unavailable")


# ---------------------------------------------------------------- sessions


def test_session_lifecycle_through_the_rest_api(api):
    bank, customer, founder = api.token(BANK), api.token(CUSTOMER), api.token(FOUNDER)
    sid, r = api.propose(bank)
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["sessionId"] == sid and s["status"] == "proposed" and s["accepted"] == 1
    assert [p["response"] for p in s["partyStates"]] == ["accepted", "none"]

    problem(api.http.get(f"/v1/sessions/{sid}", headers=founder), 403, "not-a-party")  # a member, not a party
    problem(api.http.get(f"/v1/sessions/{sid}/agreement", headers=founder), 403, "not-a-party")
    assert api.http.get(f"/v1/sessions/{sid}", headers=customer).json()["status"] == "proposed"

    r = api.respond(sid, customer, CUSTOMER)
    assert r.status_code == 200 and r.json()["status"] == "formed", r.text

    doc = api.http.get(f"/v1/sessions/{sid}/agreement", headers=bank).json()
    assert len(doc["leaves"]) == 4 and doc["typedData"]["primaryType"] == "Agreement"
    r, body = api.sign(sid, bank, BANK)
    assert r.status_code == 200 and r.json()["signed"] == 1, r.text
    problem(api.http.post(f"/v1/sessions/{sid}/signatures", json=body, headers=bank), 409, "already-signed")
    r, _ = api.sign(sid, customer, CUSTOMER)
    done = r.json()
    assert done["status"] == "completed" and done["evidenceRoot"] == body["evidenceRoot"]
    assert all(p["signed"] for p in done["partyStates"])
    from offchain.core import agreement
    cancel = agreement.sign_typed(api.key(BANK), agreement.cancel_data(api.domain(bank), bytes.fromhex(sid[2:])))
    problem(api.http.post(f"/v1/sessions/{sid}/cancel", json={"signature": "0x" + cancel.hex()}, headers=bank),
            409, "session-completed")


def test_refusals_wrong_signer_non_party_and_replays(api):
    bank, customer, founder = api.token(BANK), api.token(CUSTOMER), api.token(FOUNDER)
    _, r = api.propose(bank, signer=CUSTOMER)  # the bank posts a proposal the customer signed
    problem(r, 403, "wrong-signer")
    _, r = api.propose(customer, signer=CUSTOMER)  # the customer posts the bank's proposal
    problem(r, 403, "not-initiator")
    expires = api.chain_now() + 3600
    sid, r = api.propose(bank, expiresAt=expires)
    assert r.status_code == 201
    _, r = api.propose(bank, expiresAt=expires)  # the same proposal again
    problem(r, 409, "session-exists")
    problem(api.respond(sid, founder, FOUNDER), 403, "not-a-party")
    problem(api.respond(sid, customer, BANK), 403, "wrong-signer")  # the customer relays the bank's answer
    problem(api.respond(sid, bank, BANK), 409, "already-responded")
    r = api.respond(sid, customer, CUSTOMER)
    assert r.json()["status"] == "formed"
    problem(api.respond(sid, customer, CUSTOMER), 409, "session-already-formed")  # replayed response

    r, body = api.sign(sid, customer, BANK)  # the customer posts an agreement the bank signed
    problem(r, 403, "wrong-signer")
    problem(api.http.post(f"/v1/sessions/{sid}/signatures", json={**body, "signature": "0x" + "00" * 65},
                          headers=customer), 400, "invalid-signature")
    problem(api.http.get("/v1/sessions/0x" + "77" * 32, headers=bank), 404, "session-not-found")
    problem(api.http.get("/v1/sessions/0x1234", headers=bank), 422, "invalid-request")


def test_refusals_declined_expired_and_cancelled(api):
    bank, customer = api.token(BANK), api.token(CUSTOMER)
    sid, _ = api.propose(bank, salt="0x" + "02" * 32)
    assert api.respond(sid, customer, CUSTOMER, accept=False).json()["status"] == "declined"
    r, _ = api.sign(sid, bank, BANK)
    problem(r, 409, "session-declined")

    sid, _ = api.propose(bank, salt="0x" + "03" * 32, expiresAt=api.chain_now() + 60)
    api.advance_chain(120)
    assert api.http.get(f"/v1/sessions/{sid}", headers=bank).json()["status"] == "expired"
    problem(api.respond(sid, customer, CUSTOMER), 410, "session-expired")

    _, r = api.propose(bank, salt="0x" + "04" * 32, expiresAt=api.chain_now() - 1)
    problem(r, 422, "invalid-proposal")

    sid, _ = api.propose(bank, salt="0x" + "05" * 32)
    from offchain.core import agreement
    cancel = agreement.cancel_data(api.domain(bank), bytes.fromhex(sid[2:]))
    by_customer = {"signature": "0x" + agreement.sign_typed(api.key(CUSTOMER), cancel).hex()}
    problem(api.http.post(f"/v1/sessions/{sid}/cancel", json=by_customer, headers=customer), 403, "not-initiator")
    by_bank = {"signature": "0x" + agreement.sign_typed(api.key(BANK), cancel).hex()}
    assert api.http.post(f"/v1/sessions/{sid}/cancel", json=by_bank, headers=bank).json()["status"] == "cancelled"
    problem(api.http.post(f"/v1/sessions/{sid}/cancel", json=by_bank, headers=bank), 409, "session-cancelled")


def test_risk_warning_blocks_signing_until_it_clears(api):
    bank, customer = api.token(BANK), api.token(CUSTOMER)
    sid, _ = api.propose(bank)
    api.respond(sid, customer, CUSTOMER)
    api.chain.ledger(NODE).raise_risk(CAMS[1], "stream unhealthy at every node", 2 * W)
    assert api.http.get(f"/v1/sessions/{sid}", headers=bank).json()["risk"] == {"active": True,
                                                                                 "cameraId": "0x" + CAMS[1].hex()}
    r, _ = api.sign(sid, bank, BANK)
    body = problem(r, 409, "risk-active")
    assert body["error"] == "RiskActive" and body["args"]["cameraId"] == "0x" + CAMS[1].hex()
    api.chain.ledger(NODE).clear_risk(CAMS[1])
    r, _ = api.sign(sid, bank, BANK)
    assert r.status_code == 200 and r.json()["signed"] == 1


def test_agreement_refused_while_evidence_is_incomplete(api):
    bank, customer = api.token(BANK), api.token(CUSTOMER)
    sid, _ = api.propose(bank, endMs=5 * W)  # blocks are anchored up to 3W only
    api.respond(sid, customer, CUSTOMER)
    problem(api.http.get(f"/v1/sessions/{sid}/agreement", headers=bank), 409, "evidence-incomplete")


@pytest.mark.parametrize("bad", [{"parties": []}, {"cameras": ["0x12"]}, {"startMs": -1}, {"extra": 1}])
def test_malformed_proposals_are_422(api, bad):
    problem(api.http.post("/v1/sessions/typed-data", json=api.proposal_json(**bad), headers=api.token(BANK)),
            422, "invalid-request")
