"""A signing session over real anchored video, for the evidence-route and signing-page tests.

The evidence ledger of the extraction tests (tests/integration/evidence_fixtures.py: camera A
replays vtest with a declared gap at 25.0-26.9 s, camera B replays bikes from 38.52 s; frames
and manifests in a LocalStore, blocks anchored and attested on Anvil), and a session of the bank
(camera A) and the customer (camera B) over 24-44 s of it: camera A's part holds the declared
gap, camera B's starts at 38.52 s.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from evidence_fixtures import CAM_A, CAM_B, GAP_SEQS, T0, EvidenceLedger, build_evidence_ledger  # noqa: E402

from api_fixtures import BANK, CUSTOMER, Api  # noqa: E402
from offchain.camera.samples import sample_path  # noqa: E402

SESSION_FROM, SESSION_TO = T0 + 24_000, T0 + 44_000

__all__ = ["CAM_A", "CAM_B", "GAP_SEQS", "SESSION_FROM", "SESSION_TO", "T0", "build_ledger", "evidence_session"]


def build_ledger(w3, keys, deployment, store_dir: Path, rpc_url: str) -> EvidenceLedger:
    return build_evidence_ledger(w3, keys, deployment, store_dir, vtest=sample_path("vtest"),
                                 bikes=sample_path("bikes"), rpc_url=rpc_url)


def evidence_session(api: Api, ev: EvidenceLedger, salt: str = "0x" + "e7" * 32, form: bool = True) -> str:
    """Propose (and with ``form``, accept) the session over both evidence cameras; its id."""
    bank, customer = api.token(BANK), api.token(CUSTOMER)
    sid, r = api.propose(bank, cameras=["0x" + ev.cam_a.hex(), "0x" + ev.cam_b.hex()], startMs=SESSION_FROM,
                         endMs=SESSION_TO, salt=salt)
    assert r.status_code == 201, r.text
    if form:
        r = api.respond(sid, customer, CUSTOMER)
        assert r.status_code == 200 and r.json()["status"] == "formed", r.text
    return sid
