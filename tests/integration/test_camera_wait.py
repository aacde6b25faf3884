"""`frameledger camera wait` (offchain/ops/status.wait_final) in both anchoring modes, through
the evidence AnchorSource seam: per header on the shared evidence ledger (VideoLedger, some
blocks final, some not), in batch mode on a batch-anchored history (BatchLedger, the batch
manifests read from the store and re-hashed). Real Anvil, no node processes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from batch_fixtures import BCAM_A, build_batch_history
from evidence_fixtures import CAM_A

from offchain.camera.samples import sample_path
from offchain.chain.client import Signer
from offchain.ops.errors import OpsError
from offchain.ops.session import Session
from offchain.ops.status import wait_final

pytestmark = pytest.mark.slow


def session(w3, deployment) -> Session:
    return Session(w3=w3, deployment=deployment, deployment_path=Path("unused.json"), signer=Signer(w3, "0x" + "11" * 32))


def test_camera_wait_per_header_returns_the_block_reaching_the_time_once_final(ev, w3, base_deployment):
    s = session(w3, dataclasses.replace(base_deployment, video_ledger=ev.ledger_address,
                                        consortium=ev.consortium_address))
    blocks = ev.blocks[CAM_A]
    assert any(b.final for b in blocks) and not all(b.final for b in blocks)  # the fixture has both
    for b in blocks:
        header = b.sealed.header
        if b.final:
            got = wait_final(s, CAM_A, header.window_start_ms + 1, timeout=1)
            assert (got["height"], got["finalized"], got["anchoring"]) == (header.height, True, "header")
            assert got["windowEndMs"] == header.window_end_ms
        else:
            with pytest.raises(OpsError, match=f"block #{header.height} .*not final"):
                wait_final(s, CAM_A, header.window_start_ms + 1, timeout=0.2)


@pytest.fixture(scope="module")
def hist(devchain, w3, base_deployment, tmp_path_factory):
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield build_batch_history(w3, devchain.private_keys, base_deployment, tmp_path_factory.mktemp("wait") / "store",
                                  vtest=sample_path("vtest"), rpc_url=devchain.rpc_url)
    finally:
        w3.provider.make_request("evm_revert", [snapshot])


def test_camera_wait_in_batch_mode_reads_the_batches_and_their_manifests(hist, w3, base_deployment):
    s = session(w3, dataclasses.replace(base_deployment, batch_ledger=hist.batch_ledger))
    store = hist.store()
    blocks = hist.blocks[BCAM_A]
    for sealed in blocks:
        got = wait_final(s, BCAM_A, sealed.header.window_start_ms + 1, timeout=1, stores=[store])
        assert (got["height"], got["finalized"], got["anchoring"]) == (sealed.header.height, True, "batch")
        assert got["attestations"] == 3  # the batch's signers
    with pytest.raises(OpsError, match="--store"):
        wait_final(s, BCAM_A, blocks[0].header.window_start_ms + 1, timeout=1)
    with pytest.raises(OpsError, match="no block yet"):
        wait_final(s, BCAM_A, blocks[-1].header.window_end_ms + 1, timeout=0.2, stores=[store])
