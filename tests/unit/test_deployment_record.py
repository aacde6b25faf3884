"""Deployment records and trust lists with and without BatchLedger: records written before
BatchLedger (or SigningSession) existed still load; newer ones name it."""

from __future__ import annotations

import json

import pytest

from offchain.chain.deployer import Deployment
from offchain.evidence.trust import TrustError, deployment_from_record, load_trust

A = {name: "0x" + digit * 40 for name, digit in
     (("Consortium", "1"), ("VideoLedger", "2"), ("SigningSession", "3"), ("BatchLedger", "4"))}


def record(*names: str) -> dict:
    return {"chainId": 31337, "contracts": {n: {"address": A[n]} for n in names}}


def test_an_old_record_loads_without_batch_ledger(tmp_path):
    path = tmp_path / "31337.json"
    path.write_text(json.dumps(record("Consortium", "VideoLedger")))
    dep = Deployment.load(path)
    assert (dep.video_ledger, dep.signing_session, dep.batch_ledger) == (A["VideoLedger"], None, None)
    with pytest.raises(LookupError, match="no BatchLedger"):
        dep.batch_client(None)  # type: ignore[arg-type]
    trusted = deployment_from_record(record("Consortium", "VideoLedger"), "old")
    assert trusted.batch_ledger is None and trusted.video_ledger.lower() == A["VideoLedger"]


def test_a_new_record_names_the_batch_ledger(tmp_path):
    rec = record("Consortium", "VideoLedger", "SigningSession", "BatchLedger")
    dep = Deployment.from_record(rec)
    assert dep.batch_ledger == A["BatchLedger"] and dep.signing_session == A["SigningSession"]
    trusted = deployment_from_record(rec, "new")
    assert trusted.batch_ledger is not None and trusted.batch_ledger.lower() == A["BatchLedger"]
    bad = record("Consortium", "VideoLedger")
    bad["contracts"]["BatchLedger"] = {"address": "nope"}
    with pytest.raises(TrustError, match="BatchLedger"):
        deployment_from_record(bad, "bad")


def test_a_trust_file_may_name_the_batch_ledger(tmp_path):
    path = tmp_path / "trust.json"
    path.write_text(json.dumps({"format": "frameledger.trust/1", "deployments": [
        {"chainId": 31337, "VideoLedger": A["VideoLedger"], "BatchLedger": A["BatchLedger"]},
        {"chainId": 31337, "VideoLedger": A["VideoLedger"]},
    ]}))
    first, second = load_trust(31337, trust_file=path).deployments
    assert first.batch_ledger is not None and first.batch_ledger.lower() == A["BatchLedger"]
    assert second.batch_ledger is None
