"""S5 without node processes: a session formed on a real Anvil (one party through a relayed
EIP-712 proposal, the other by its own transaction), the parties' public keys recovered from
those signatures, a data key made and wrapped, and frames resting sealed in a real LocalStore.
Reads with a party's key give the plaintext; an outsider's key, no key, or a moved or altered
envelope each fail with their named error."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest

from offchain.chain.session_keys import SessionReader, transaction_public_key
from offchain.chain.sessions import SigningSessionClient
from offchain.core import agreement
from offchain.core import envelope as env
from offchain.core.agreement import Proposal
from offchain.core.block import camera_id
from offchain.core.cid import cid_for_bytes, cid_from_digest
from offchain.store.base import CorruptBlock
from offchain.store.local import LocalStore
from offchain.store.sealed import INDEX_NAME, CannotUnseal, Keyring, SealedStore, SealIndex, SessionSealer, \
    open_party_store

IPS = ("10.9.5.1", "10.9.5.2")
CAMS = tuple(camera_id(ip) for ip in IPS)
BANK, CUSTOMER, NODE, OUTSIDER, RELAYER = 1, 2, 3, 8, 9
START, END = 1_000_000, 2_000_000


def _key(chain_env, i: int) -> bytes:
    return bytes.fromhex(chain_env.keys[i].removeprefix("0x"))


@pytest.fixture
def formed(chain_env):
    chain_env.consortium(BANK).register_camera(IPS[0], b"\x11" * 32, b"\x01" * 32)
    chain_env.consortium(CUSTOMER).register_camera(IPS[1], b"\x12" * 32, b"\x02" * 32)
    address = chain_env.deployment.signing_session
    relayer = SigningSessionClient(chain_env.signer(RELAYER), address)
    now = chain_env.w3.eth.get_block("latest")["timestamp"]
    bank, customer = chain_env.signer(BANK).address, chain_env.signer(CUSTOMER).address
    p = Proposal(initiator=bank, parties=(bank, customer), cameras=(CAMS[0],), camera_party=(0,),
                 document_hash=hashlib.sha256(b"doc").digest(), start_ms=START, end_ms=END, expires_at=now + 3600,
                 salt=os.urandom(32))
    sid = agreement.session_id(relayer.domain, p)
    relayer.propose_with_signature(p, agreement.sign_typed(chain_env.keys[BANK], agreement.proposal_data(relayer.domain, p)))
    SigningSessionClient(chain_env.signer(CUSTOMER), address).respond(sid, True)
    return chain_env, sid


def _sealer(chain_env, root, inner=None, **kw) -> tuple[SessionSealer, SealedStore]:
    inner = inner if inner is not None else LocalStore(root, fsync="none")
    index = SealIndex(root / INDEX_NAME)
    key = _key(chain_env, NODE)
    keyring = Keyring(key)
    w3 = chain_env.w3
    sealer = SessionSealer(store=inner, index=index, keyring=keyring, private_key=key,
                           sessions=SessionReader(w3, chain_env.deployment.signing_session), chain_id=w3.eth.chain_id,
                           from_block=0, latest_block=lambda: int(w3.eth.block_number), **kw)
    return sealer, SealedStore(inner, index, keyring, sealer.key_for)


def test_party_keys_are_recovered_from_their_own_signatures(formed):
    chain_env, sid = formed
    keys = SessionReader(chain_env.w3, chain_env.deployment.signing_session).party_keys(sid)
    assert keys == {chain_env.signer(i).address: env.public_key_of(_key(chain_env, i)) for i in (BANK, CUSTOMER)}


def test_transaction_public_key_of_a_raw_transaction(chain_env):
    from eth_account import Account

    acct = Account.from_key(chain_env.keys[OUTSIDER])
    raw = acct.sign_transaction({"to": acct.address, "value": 0, "gas": 21000, "nonce": 0, "chainId": 1,
                                 "maxFeePerGas": 10, "maxPriorityFeePerGas": 1}).raw_transaction
    assert env.address_of(transaction_public_key(bytes(raw))) == acct.address
    legacy = acct.sign_transaction({"to": acct.address, "value": 0, "gas": 21000, "nonce": 0, "chainId": 1,
                                    "gasPrice": 10}).raw_transaction
    assert env.address_of(transaction_public_key(bytes(legacy))) == acct.address


def test_session_frames_rest_sealed_and_open_for_parties_only(formed, tmp_path, monkeypatch):
    import offchain.store.sealed as sealed_module

    chain_env, sid = formed
    monkeypatch.setattr(sealed_module, "LOG_SPAN", 3)  # the chain is read in many short spans
    sealer, store = _sealer(chain_env, tmp_path)
    assert sealer.refresh() == 1 and sealer.refresh() == 0
    assert int(store.index.get_meta("checkpoint")) == chain_env.w3.eth.block_number + 1
    inside = [os.urandom(3000) + b"PLAINTEXT-MARK" for _ in range(5)]
    outside, other_cam = b"before the session" * 50, b"another camera" * 50
    frames = [(CAMS[0], START + i, f, None) for i, f in enumerate(inside)]
    frames += [(CAMS[0], START - 1, outside, None), (CAMS[1], START + 1, other_cam, None)]
    cids = store.put_frames(frames)
    assert cids == [cid_for_bytes(f) for _, _, f, _ in frames]
    inner = store.inner
    # at rest: no sealed frame under its plaintext CID, and no plaintext byte in any pack
    packs = b"".join(p.read_bytes() for p in (tmp_path / "packs").glob("*.pack"))
    assert b"PLAINTEXT-MARK" not in packs and not any(inner.has(c) for c in cids[:5])
    assert inner.get(cids[5]) == outside and inner.get(cids[6]) == other_cam  # not session data: plain
    assert [store.get(c) for c in cids] == [f for _, _, f, _ in frames]
    # a party opens them with its own account key; an outsider and a keyless reader cannot
    for who in (BANK, CUSTOMER):
        party = open_party_store(LocalStore(tmp_path, fsync="none"), tmp_path / INDEX_NAME, _key(chain_env, who))
        assert party.get(cids[0]) == inside[0] and party.get(cids[6]) == other_cam
    for key in (_key(chain_env, OUTSIDER), None):
        stranger = open_party_store(LocalStore(tmp_path, fsync="none"), tmp_path / INDEX_NAME, key)
        with pytest.raises(CannotUnseal) as exc:
            stranger.get(cids[0])
        assert isinstance(exc.value.error, env.WrongRecipient)
        assert stranger.get(cids[5]) == outside  # what is not sealed reads as before


def test_moved_or_altered_envelope_is_a_corrupt_block(formed, tmp_path):
    chain_env, sid = formed
    sealer, store = _sealer(chain_env, tmp_path)
    sealer.refresh()
    a, b = b"frame A" * 100, b"frame B" * 100
    cid_a, cid_b = store.put_frames([(CAMS[0], START, a, None), (CAMS[0], START + 1, b, hashlib.sha256(b).digest())])
    db = sqlite3.connect(tmp_path / INDEX_NAME)
    env_b = db.execute("SELECT envelope FROM sealed WHERE digest=?", (hashlib.sha256(b).digest(),)).fetchone()[0]
    db.execute("UPDATE sealed SET envelope=? WHERE digest=?", (env_b, hashlib.sha256(a).digest()))
    db.commit()
    with pytest.raises(CorruptBlock, match="MovedCiphertext"):
        store.get(cid_a)
    assert store.get(cid_b) == b


def test_a_restarted_sealer_keeps_its_key_and_makes_no_second_one(formed, tmp_path):
    chain_env, sid = formed
    sealer, store = _sealer(chain_env, tmp_path)
    sealer.refresh()
    cid = store.put_frames([(CAMS[0], START, b"first life", None)])[0]
    store.index.close()
    again, store2 = _sealer(chain_env, tmp_path)
    again.load()
    assert again.key_for(CAMS[0], START) is not None and again.refresh() == 0
    cid2 = store2.put_frames([(CAMS[0], START + 5, b"second life", None)])[0]
    assert store2.get(cid) == b"first life" and store2.get(cid2) == b"second life"
    assert store2.index.count() == 2


@pytest.mark.slow
def test_over_ipfs_envelopes_are_ordinary_blocks_and_the_index_maps_them(formed, tmp_path):
    """An IPFS node addresses a block by the hash of what it stores: the envelope gets its own CID,
    the plaintext CID is found through the index; the key document is a block there too."""
    from offchain.paths import REPO_ROOT
    from offchain.store.devipfs import DevIpfsDaemon

    chain_env, sid = formed
    with DevIpfsDaemon(project_dir=REPO_ROOT / "chain" / "ipfs") as daemon:
        kubo = daemon.store(lookup_timeout=0.5, timeout=30.0)
        sealer, store = _sealer(chain_env, tmp_path, inner=kubo)
        assert sealer.refresh() == 1
        frame = os.urandom(2000) + b"PLAINTEXT-MARK"
        cid = store.put_frames([(CAMS[0], START, frame, None)])[0]
        assert cid == cid_for_bytes(frame) and not kubo.has(cid)
        envelope_digest = store.index.lookup(hashlib.sha256(frame).digest())[0]
        at_rest = kubo.get(cid_from_digest(envelope_digest))
        assert env.is_envelope(at_rest) and b"PLAINTEXT-MARK" not in at_rest
        assert store.get(cid) == frame
        party = open_party_store(kubo, tmp_path / INDEX_NAME, _key(chain_env, CUSTOMER))
        assert party.get(cid) == frame
        kubo.close()
