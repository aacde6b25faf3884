"""The REST API against a real chain: answers come from the contracts."""

import json

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from offchain.core.block import FrameRef, build_block, camera_id


@pytest.fixture
def client(chain_env, devchain, tmp_path):
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(chain_env.deployment.record))
    return TestClient(create_app(devchain.rpc_url, str(path)))


def test_consortium_cameras_blocks_and_risk(chain_env, client):
    chain_env.consortium(1).register_camera("10.7.0.1", b"\x01" * 32, b"\x02" * 32)
    chain_env.consortium(0).seal_genesis()
    cam = camera_id("10.7.0.1")
    head = chain_env.consortium().head_block(cam)[0]
    blk = build_block(camera_ip="10.7.0.1", height=1, prev_hash=head, window_start_ms=60_000, window_end_ms=120_000,
                      frames=[FrameRef.of_bytes(0, 60_000, b"x", True)], proposer=chain_env.signer(3).address)
    chain_env.ledger(3).anchor(blk.header)
    assert client.get("/v1/consortium").json()["quorum"] == 2
    cams = client.get("/v1/cameras").json()
    assert [(c["ip"], c["blocks"], c["risk"]) for c in cams] == [("10.7.0.1", 1, False)]
    blocks = client.get("/v1/cameras/10.7.0.1/blocks", params={"from_ms": 59_000, "to_ms": 61_000}).json()
    assert [b["hash"] for b in blocks] == ["0x" + blk.hash.hex()] and blocks[0]["final"] is False
    assert client.get("/v1/cameras/10.7.0.1/blocks", params={"from_ms": 0, "to_ms": 1000}).json() == []
    chain_env.ledger(4).raise_risk(cam, "test", 60_000)
    assert client.get("/v1/cameras/10.7.0.1/risk").json()["active"] is True
