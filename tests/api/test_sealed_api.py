"""The API over a node's sealed store (S5): with the node's key (create_app option through
`node_stores`, or FRAMELEDGER_KEYSTORE + FRAMELEDGER_KEYSTORE_PASSWORD_FILE) a party's frame proof
carries the frame's verified bytes; without it the sealed frame is not available
(`bytesVerified: null`; extraction's verdict for it is `frame.missing`,
tests/integration/test_sealed_nodes.py), and nothing sealed is readable at rest."""

from __future__ import annotations

import hashlib

import pytest

from api.app import _stores_from_env, node_stores
from api_fixtures import BANK, CAMS, CUSTOMER, IPS, NODE, W, make_api
from offchain.chain.keyfile import PasswordSource, write_keystore
from offchain.chain.session_keys import SessionReader
from offchain.core.block import FrameRef, build_block
from offchain.core.cid import cid_for_bytes
from offchain.store.local import LocalStore
from offchain.store.sealed import INDEX_NAME, CannotUnseal, Keyring, SealedStore, SealIndex, SessionSealer

pytestmark = pytest.mark.slow


def _node_key(api) -> bytes:
    return bytes.fromhex(api.key(NODE).removeprefix("0x"))


def _seal_node_store(api, root) -> list[bytes]:
    """What node NODE's store holds for the fixture's blocks once the session formed: manifests
    plain, the session's frames sealed. The blocks are rebuilt as the fixture anchored them."""
    w3, key = api.chain.w3, _node_key(api)
    inner, index = LocalStore(root, fsync="none"), SealIndex(root / INDEX_NAME)
    keyring = Keyring(key)
    sealer = SessionSealer(store=inner, index=index, keyring=keyring, private_key=key,
                           sessions=SessionReader(w3, api.chain.deployment.signing_session), chain_id=w3.eth.chain_id,
                           from_block=0, latest_block=lambda: int(w3.eth.block_number))
    store = SealedStore(inner, index, keyring, sealer.key_for)
    assert sealer.refresh() == 1
    frames = []
    for cam in (0, 1):
        prev = api.chain.consortium().camera(CAMS[cam]).head_block
        for height in (1, 2):
            data = b"f%d" % height
            blk = build_block(camera_ip=IPS[cam], height=height, prev_hash=prev, window_start_ms=height * W,
                              window_end_ms=(height + 1) * W, frames=[FrameRef.of_bytes(height, height * W, data, True)],
                              proposer=api.addr(NODE))
            assert blk.header.hash == api.chain.ledger(0).block_hash_at(CAMS[cam], height)  # the anchored block
            store.put(blk.manifest_bytes)
            store.put_frames([(CAMS[cam], height * W, data, None)])
            frames.append(data)
            prev = blk.header.hash
    store.close()
    return frames


def _proof(api, sid: str) -> dict:
    r = api.http.get(f"/v1/sessions/{sid}/evidence/proof", params={"camera": IPS[0], "at": W + 10},
                     headers=api.token(CUSTOMER))
    assert r.status_code == 200, r.text
    return r.json()


def test_the_nodes_key_opens_its_sealed_store_for_the_parties(api, chain_env, devchain, tmp_path, monkeypatch):
    bank = api.token(BANK)
    sid, r = api.propose(bank)
    assert r.status_code == 201, r.text
    assert api.respond(sid, api.token(CUSTOMER), CUSTOMER).json()["status"] == "formed"
    root = tmp_path / "node-store"
    frames = _seal_node_store(api, root)
    assert not LocalStore(root, fsync="none").has(cid_for_bytes(frames[0]))  # at rest: sealed
    for sub in ("with-key", "keyless"):
        (tmp_path / sub).mkdir()
    opened = make_api(chain_env, devchain, tmp_path / "with-key", stores=node_stores([str(root)], _node_key(api)))
    doc = _proof(opened, sid)
    assert doc["ok"] and doc["bytesVerified"] is True
    assert doc["frame"]["sha256"] == "0x" + hashlib.sha256(frames[0]).hexdigest()
    for stores in (node_stores([str(root)]), [LocalStore(root, fsync="none")]):  # no key / the index not used
        keyless = make_api(chain_env, devchain, tmp_path / "keyless", stores=stores)
        doc = _proof(keyless, sid)
        assert doc["ok"] and doc["bytesVerified"] is None  # the proof stands, the bytes are not available
    with pytest.raises(CannotUnseal):
        node_stores([str(root)])[0].get(cid_for_bytes(frames[0]))
    # the same from the environment: the node's keystore and its password file
    pw = tmp_path / "pw"
    pw.write_text("node password\n")
    write_keystore(tmp_path / "node.json", api.key(NODE), PasswordSource(file=str(pw), prompt=False))
    monkeypatch.setenv("FRAMELEDGER_STORES", str(root))
    monkeypatch.setenv("FRAMELEDGER_KEYSTORE", str(tmp_path / "node.json"))
    monkeypatch.setenv("FRAMELEDGER_KEYSTORE_PASSWORD_FILE", str(pw))
    assert [s.get(cid_for_bytes(f)) for s in _stores_from_env() for f in frames[:1]] == frames[:1]
