"""Helpers for the API tests (the fixture is in conftest.py): an API on the session's Anvil: two cameras (the bank's and the customer's) with anchored blocks,
a relayer account, and a clock the tests move (token and sign-in expiry)."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

from fastapi.testclient import TestClient

from api import siwe
from api.app import create_app
from api.context import Settings
from offchain.core import agreement
from offchain.core.block import FrameRef, build_block, camera_id

IPS = ("10.7.0.1", "10.7.0.2")
CAMS = tuple(camera_id(ip) for ip in IPS)
W = 60_000
FOUNDER, BANK, CUSTOMER, NODE, OUTSIDER, RELAYER = 0, 1, 2, 3, 8, 9
DOMAIN = "testserver"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Api:
    http: TestClient
    chain: object
    clock: Clock

    def addr(self, i: int) -> str:
        return self.chain.signer(i).address

    def key(self, i: int) -> str:
        return self.chain.keys[i]

    def chain_now(self) -> int:
        return self.chain.w3.eth.get_block("latest")["timestamp"]

    def siwe_message(self, i: int, **kw) -> str:
        nonce = self.http.get("/v1/auth/nonce").json()["nonce"]
        fields = dict(domain=DOMAIN, address=self.addr(i), uri="http://testserver", chain_id=31337, nonce=nonce,
                      issued_at=iso(self.clock()), statement="Sign in to FrameLedger")
        fields.update(kw)
        return siwe.SiweMessage(**fields).text()

    def sign_in(self, i: int, signer: int | None = None, **kw):
        message = self.siwe_message(i, **kw)
        sig = siwe.sign(message, self.key(i if signer is None else signer))
        return self.http.post("/v1/auth/siwe", json={"message": message, "signature": "0x" + sig.hex()})

    def token(self, i: int) -> dict[str, str]:
        r = self.sign_in(i)
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def anchor(self, cam_index: int, height: int, start: int) -> None:
        ledger = self.chain.ledger(NODE)
        prev = ledger.tip(CAMS[cam_index])[0]
        blk = build_block(camera_ip=IPS[cam_index], height=height, prev_hash=prev, window_start_ms=start,
                          window_end_ms=start + W, frames=[FrameRef.of_bytes(height, start, b"f%d" % height, True)],
                          proposer=self.addr(NODE))
        ledger.anchor(blk.header)

    def advance_chain(self, seconds: int) -> None:
        self.chain.w3.provider.make_request("evm_increaseTime", [seconds])
        self.chain.w3.provider.make_request("evm_mine", [])

    def proposal_json(self, **kw) -> dict:
        body = {"initiator": self.addr(BANK), "parties": [self.addr(BANK), self.addr(CUSTOMER)],
                "cameras": ["0x" + c.hex() for c in CAMS], "cameraParty": [0, 1], "documentHash": "0x" + "d0" * 32,
                "startMs": W, "endMs": 3 * W, "expiresAt": self.chain_now() + 3600, "salt": "0x" + "01" * 32}
        body.update(kw)
        return body

    def propose(self, headers: dict, signer: int = BANK, **kw):
        proposal = self.proposal_json(**kw)
        prepared = self.http.post("/v1/sessions/typed-data", json=proposal, headers=headers)
        assert prepared.status_code == 200, prepared.text
        sig = agreement.sign_typed(self.key(signer), prepared.json()["typedData"])
        r = self.http.post("/v1/sessions", json={"proposal": proposal, "signature": "0x" + sig.hex()}, headers=headers)
        return prepared.json()["sessionId"], r

    def domain(self, headers: dict) -> agreement.Domain:
        d = self.http.get("/v1/sessions/domain", headers=headers).json()["domain"]
        return agreement.Domain(chain_id=d["chainId"], verifying_contract=d["verifyingContract"])

    def respond(self, sid: str, headers: dict, signer: int, accept: bool = True):
        data = agreement.response_data(self.domain(headers), bytes.fromhex(sid[2:]), accept)
        sig = agreement.sign_typed(self.key(signer), data)
        return self.http.post(f"/v1/sessions/{sid}/responses", json={"accept": accept, "signature": "0x" + sig.hex()},
                              headers=headers)

    def sign(self, sid: str, headers: dict, signer: int):
        doc = self.http.get(f"/v1/sessions/{sid}/agreement", headers=headers)
        assert doc.status_code == 200, doc.text
        sig = agreement.sign_typed(self.key(signer), doc.json()["typedData"])
        body = {"evidenceRoot": doc.json()["evidenceRoot"], "signature": "0x" + sig.hex()}
        return self.http.post(f"/v1/sessions/{sid}/signatures", json=body, headers=headers), body


def make_api(chain_env, devchain, tmp_path, relayer: bool = True, record: dict | None = None, **create_kw) -> Api:
    """``record`` replaces the deployment record (e.g. another BatchLedger); ``create_kw`` go to
    create_app (stores, evidence and stream settings)."""
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(record or chain_env.deployment.record))
    clock = Clock()
    app = create_app(devchain.rpc_url, str(path), relayer_key=chain_env.keys[RELAYER] if relayer else None,
                     settings=Settings(siwe_domain=DOMAIN), clock=clock, **create_kw)
    return Api(http=TestClient(app), chain=chain_env, clock=clock)


@contextmanager
def serve(app) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port in a thread; yields its base URL."""
    import threading

    import uvicorn

    from offchain.chain.devchain import free_loopback_port

    port = free_loopback_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
