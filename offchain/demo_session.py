"""The demo's signing session (seed 000's product), driven through the REST API over loopback HTTP.

The API (`api/`, FastAPI) runs in-process under uvicorn on a free loopback port with its own
relayer account. Before the recording the bank proposes a session over every whitelisted camera
and the recording's capture range, signed in with Ethereum (EIP-4361); the customer accepts, and
the session forms (C5). After the recording and the evidence stage, a node raises a risk warning
on one of the session's cameras: the bank's signature is refused (409 `risk-active`, S4); the
warning clears, both parties sign the EIP-712 Agreement (S3), the session completes. The event
monitor (offchain/monitor, reactions on) then reads the whole chain and shows the notifications the
session's parties received. Every step is checked; any failure fails the demo.

The API is given the nodes' content stores (`create_app(stores=...)`, read-only LocalStores over
their store directories; the nodes do not seal the demo's session, so the frames are plain), so
its evidence routes work: the printed signing page plays the verified video, the `/agreement`
route reads the batch manifests in batch mode (the evidence root comes from that route in both
modes, through the evidence layer's AnchorSource), and one frame's proof through the API is
checked (one block read, not a second extraction: the demo's evidence stage extracted already).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import httpx
from eth_utils.crypto import keccak

from .chain.client import Signer
from .chain.devchain import free_loopback_port
from .core import agreement
from .core.block import camera_id
from .node.scenario import ScenarioRun
from .tables import render_table

log = logging.getLogger(__name__)

BANK, CUSTOMER, RISK_NODE, RELAYER = 1, 2, 4, 9  # accounts: the two parties, node-bank, the API's relayer
DOCUMENT = b"Loan agreement, 1 Dec 2026 (the document itself stays off chain)"


@dataclass
class Step:
    name: str
    ok: bool
    detail: str


@dataclass
class SessionDemo:
    """Given the scenario run (chain, deployment, cameras) and the demo's printer."""

    run: ScenarioRun
    out: Callable[[str], None]
    steps: list[Step] = field(default_factory=list)
    session_id: str = ""
    start_ms: int = 0
    end_ms: int = 0
    base_url: str = ""
    seconds: float = 0.0  # wall time the session's steps added to the demo
    _tokens: dict[int, str] = field(default_factory=dict)
    _server: Any = None
    _thread: threading.Thread | None = None
    _http: httpx.Client | None = None

    # ------------------------------------------------------------------ plumbing
    def start_api(self) -> None:
        import uvicorn

        from api.app import create_app
        from api.context import Settings
        from api.evidence_routes import EvidenceSettings

        from .store import LocalStore

        c = self.run.cluster
        port = free_loopback_port()
        # the nodes' stores, read only: the evidence routes (signing page playback, proofs, batch manifests)
        stores = [LocalStore(n.config.data_dir / "store", fsync="none") for n in c.nodes]
        app = create_app(c.chain.rpc_url, str(c.deployment_path), relayer_key=c.keys[RELAYER],
                         settings=Settings(siwe_domain=f"127.0.0.1:{port}"), stores=stores,
                         evidence=EvidenceSettings(work_dir=str(c.work_dir / "api-evidence")))
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, name="demo-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self._server.started:
            raise RuntimeError("the REST API did not start")
        self.base_url = f"http://127.0.0.1:{port}"
        self._http = httpx.Client(base_url=self.base_url, timeout=30)
        self.out(f"REST API   : {self.base_url} (uvicorn, in-process; OpenAPI at /openapi.json)")

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _key(self, account: int) -> str:
        return str(self.run.cluster.keys[account])

    def _addr(self, account: int) -> str:
        return Signer(self.run.cluster.w3, self._key(account)).address

    def _request(self, method: str, path: str, party: int | None = None, **kw: Any) -> httpx.Response:
        assert self._http is not None
        headers = {"Authorization": f"Bearer {self._token(party)}"} if party is not None else {}
        return self._http.request(method, path, headers=headers, **kw)

    def _token(self, party: int) -> str:
        """Sign-In with Ethereum: a nonce, the EIP-4361 message signed with personal_sign, a token."""
        from api import siwe

        if party not in self._tokens:
            nonce = self._request("GET", "/v1/auth/nonce").json()["nonce"]
            message = siwe.SiweMessage(domain=self.base_url.removeprefix("http://"), address=self._addr(party),
                                       uri=self.base_url, chain_id=self.run.cluster.deployment.chain_id, nonce=nonce,
                                       issued_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                       statement="Sign in to FrameLedger").text()
            body = {"message": message, "signature": "0x" + siwe.sign(message, self._key(party)).hex()}
            r = self._request("POST", "/v1/auth/siwe", json=body)
            if r.status_code != 200:
                raise RuntimeError(f"sign-in of account {party} refused: {r.status_code} {r.text[:200]}")
            self._tokens[party] = r.json()["token"]
        return self._tokens[party]

    def _step(self, name: str, ok: bool, detail: str) -> bool:
        self.steps.append(Step(name, ok, detail))
        if not ok:
            log.error("session step failed", extra={"step": name, "detail": detail})
        return ok

    def _domain(self, party: int) -> agreement.Domain:
        d = self._request("GET", "/v1/sessions/domain", party).json()["domain"]
        return agreement.Domain(chain_id=d["chainId"], verifying_contract=d["verifyingContract"])

    def _status(self, party: int) -> dict[str, Any]:
        r = self._request("GET", f"/v1/sessions/{self.session_id}", party)
        return r.json() if r.status_code == 200 else {"status": f"HTTP {r.status_code}"}

    # ------------------------------------------------------------------ before the recording
    def propose_and_accept(self, start_ms: int, end_ms: int) -> None:
        """The bank proposes (every whitelisted camera, the capture range), the customer accepts."""
        self.start_ms, self.end_ms = start_ms, end_ms
        cams = [x for x in self.run.s.cameras if x.owner_account in (BANK, CUSTOMER)]
        chain_now = int(self.run.cluster.w3.eth.get_block("latest")["timestamp"])
        proposal = {"initiator": self._addr(BANK), "parties": [self._addr(BANK), self._addr(CUSTOMER)],
                    "cameras": ["0x" + camera_id(x.ip).hex() for x in cams],
                    "cameraParty": [0 if x.owner_account == BANK else 1 for x in cams],
                    "documentHash": "0x" + keccak(DOCUMENT).hex(), "startMs": start_ms, "endMs": end_ms,
                    "expiresAt": chain_now + 3600, "salt": "0x" + "00" * 31 + "01"}
        prepared = self._request("POST", "/v1/sessions/typed-data", BANK, json=proposal)
        if not self._step("proposal typed data", prepared.status_code == 200, f"typed data: HTTP {prepared.status_code}"):
            return
        self.session_id = prepared.json()["sessionId"]
        sig = agreement.sign_typed(self._key(BANK), prepared.json()["typedData"])
        r = self._request("POST", "/v1/sessions", BANK, json={"proposal": proposal, "signature": "0x" + sig.hex()})
        self._step("propose", r.status_code == 201 and r.json()["status"] == "proposed",
                   f"bank: HTTP {r.status_code}, {len(cams)} cameras, capture {start_ms}-{end_ms} ms")
        data = agreement.response_data(self._domain(CUSTOMER), bytes.fromhex(self.session_id[2:]), True)
        sig = agreement.sign_typed(self._key(CUSTOMER), data)
        r = self._request("POST", f"/v1/sessions/{self.session_id}/responses", CUSTOMER,
                          json={"accept": True, "signature": "0x" + sig.hex()})
        formed = r.status_code == 200 and r.json()["status"] == "formed"
        self._step("every party accepts", formed, f"customer: HTTP {r.status_code}, session {self._status(BANK)['status']}")
        self.out(f"session    : {self.session_id} proposed by the bank, accepted by the customer: "
                 f"{'formed' if formed else 'NOT formed'}")

    # ------------------------------------------------------------------ after the recording
    def evidence_root(self) -> str | None:
        """The session's evidence root, from the API's `/agreement` route (either anchoring mode)."""
        r = self._request("GET", f"/v1/sessions/{self.session_id}/agreement", BANK)
        ok = r.status_code == 200
        doc = r.json() if ok else {}
        modes = ",".join(sorted(set(doc.get("anchoring", {}).values()))) or "-"
        ok = self._step("evidence root", ok, f"API /agreement: HTTP {r.status_code}, {len(doc.get('leaves', []))} "
                                             f"blocks ({modes} anchoring)")
        return doc["evidenceRoot"] if ok else None

    def frame_proof(self) -> None:
        """One frame's proof through the API's evidence route: the stores are wired in."""
        cams = [x for x in self.run.s.cameras if x.owner_account == BANK]
        cam = next((x for x in cams if not x.faults), cams[0])
        r = self._request("GET", f"/v1/sessions/{self.session_id}/evidence/proof", BANK,
                          params={"camera": cam.ip, "at": self.start_ms + 1000})
        doc = r.json() if r.status_code == 200 else {}
        self._step("frame proof through the API", r.status_code == 200 and doc.get("ok") is True,
                   f"{cam.ip}: HTTP {r.status_code}, frame {doc.get('frame', {}).get('seq')} proven on chain")

    def _sign(self, party: int, root: str) -> httpx.Response:
        info = self._status(party)
        data = agreement.agreement_data(self._domain(party), bytes.fromhex(self.session_id[2:]),
                                        bytes.fromhex(info["documentHash"][2:]), bytes.fromhex(root[2:]))
        sig = agreement.sign_typed(self._key(party), data)
        return self._request("POST", f"/v1/sessions/{self.session_id}/signatures", party,
                             json={"evidenceRoot": root, "signature": "0x" + sig.hex()})

    def risk_then_sign(self) -> None:
        """A risk warning blocks signing (shown), clears, then both parties sign: complete."""
        if not self.session_id:
            return
        root = self.evidence_root()
        if root is None:
            return
        c = self.run.cluster
        cut = next(x for x in self.run.s.cameras if x.faults.startswith("*:cut"))
        risky = c.ledger(RISK_NODE)
        risky.raise_risk(camera_id(cut.ip), "operator: camera housing opened (demo)", self.start_ms)
        r = self._sign(BANK, root)
        code = r.json().get("type", "").rsplit(":", 1)[-1] if r.headers.get("content-type", "").startswith("application/problem") else ""
        self._step("signing refused while a risk warning is active", r.status_code == 409 and code == "risk-active",
                   f"bank: HTTP {r.status_code} {code} (risk on {cut.ip})")
        risky.clear_risk(camera_id(cut.ip))
        for party, name in ((BANK, "bank"), (CUSTOMER, "customer")):
            r = self._sign(party, root)
            self._step(f"{name} signs", r.status_code == 200, f"HTTP {r.status_code}, {r.json().get('signed')} signed")
        status = self._status(CUSTOMER)
        self._step("session complete", status.get("status") == "completed" and status.get("evidenceRoot") == root,
                   f"status {status.get('status')}, evidence root {root[:18]}...")

    def notifications(self, work_dir: Path) -> list[dict[str, Any]]:
        """Run the event monitor (reactions on) over the chain once; the session's notifications."""
        from .monitor.scanner import Monitor, MonitorSettings, fold_notifications

        c = self.run.cluster
        contracts = {name: x["address"] for name, x in c.deployment.record["contracts"].items()}
        start = min(x["blockNumber"] for x in c.deployment.record["contracts"].values())
        work_dir.mkdir(parents=True, exist_ok=True)
        with open(work_dir / "events.jsonl", "a+") as out:
            m = Monitor(c.w3, contracts, work_dir / "checkpoint.json", out, start,
                        MonitorSettings(confirmations=0), reactions=True)
            while m.step():
                pass
            out.seek(0)
            lines = [json.loads(line) for line in out.read().splitlines()]
        notes = [n for n in fold_notifications(lines) if n["sessionId"] == self.session_id]
        parties = {self._addr(BANK), self._addr(CUSTOMER)}
        kinds = {n["notification"] for n in notes if set(n["parties"]) == parties}
        self._step("parties notified by the monitor", {"risk_raised", "risk_cleared"} <= kinds,
                   f"{len(notes)} notifications ({', '.join(sorted(kinds)) or 'none'}), {work_dir / 'events.jsonl'}")
        return notes

    def signing_page(self) -> str:
        url = f"{self.base_url}/sign?session={self.session_id}"
        r = self._request("GET", f"/sign?session={self.session_id}")
        self._step("signing page served", r.status_code == 200 and "<html" in r.text.lower(), f"HTTP {r.status_code}")
        return url

    def report(self, notes: list[dict[str, Any]], url: str) -> bool:
        ips = {"0x" + camera_id(x.ip).hex(): x.ip for x in self.run.s.cameras}
        names = {self._addr(BANK): "bank", self._addr(CUSTOMER): "customer"}
        self.out("")
        self.out(render_table(["step", "ok", "detail"], [[s.name, "yes" if s.ok else "NO", s.detail] for s in self.steps],
                              title=f"Signing session through the REST API (SIWE, EIP-712, relayed on chain; "
                                    f"{self.seconds:.1f} s of the demo)"))
        self.out("")
        rows = [[n["notification"], n["cause"]["event"], ",".join(ips.get(x, x[:10]) for x in n["cameras"]),
                 n["blockNumber"], ", ".join(names.get(p, p[:10]) for p in n["parties"])] for n in notes]
        self.out(render_table(["notification", "cause", "camera", "block", "to"], rows or [["-", "none", "-", "-", "-"]],
                              title="Monitor: the session's parties notified (risk warnings, disputes, revocations)"))
        self.out("")
        self.out(f"signing page: {url}  (served while the demo runs)")
        return bool(self.steps) and all(s.ok for s in self.steps)
