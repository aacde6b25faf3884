"""The session-data envelope and key document (offchain/core/envelope.py): round trips, and every
tamper case fails with its own named error."""

from __future__ import annotations

import hashlib
import os

import pytest

from offchain.core import envelope as env

SESSION = hashlib.sha256(b"session").digest()
CONTRACT = "0x" + "11" * 20
CAMERAS = (hashlib.sha256(b"cam").digest(),)


def _account() -> tuple[bytes, bytes, str]:
    priv = os.urandom(32)
    pub = env.public_key_of(priv)
    return priv, pub, env.address_of(pub)


@pytest.fixture
def world():
    node, alice, bob, eve = (_account() for _ in range(4))
    data_key = os.urandom(32)
    recipients = {a[2]: a[1] for a in (node, alice, bob)}
    doc = env.make_key_doc(data_key, recipients, [os.urandom(32) for _ in recipients], chain_id=31337,
                           contract=CONTRACT, session_id=SESSION, creator=node[2], cameras=CAMERAS,
                           start_ms=1000, end_ms=2000)
    return {"node": node, "alice": alice, "bob": bob, "eve": eve, "doc": doc, "secret": data_key}


def test_address_matches_eth_account():
    from eth_account import Account

    acct = Account.create()
    assert env.address_of(env.public_key_of(bytes(acct.key))) == acct.address


def test_every_recipient_unwraps_the_same_key_and_opens_the_frame(world):
    doc = world["doc"]
    keys = [env.open_key_doc(doc, world[who][0]) for who in ("node", "alice", "bob")]
    assert {k.secret for k in keys} == {world["secret"]}
    frame = os.urandom(5000)
    sealed = env.seal_frame(keys[0], frame)
    assert frame not in sealed and len(sealed) == len(frame) + env.HEADER_BYTES + env.TAG_BYTES
    assert env.seal_frame(keys[1], frame) == sealed  # deterministic: idempotent puts
    assert env.open_frame(sealed, keys[2], hashlib.sha256(frame).digest()) == frame
    assert "secret" not in repr(keys[0]) and world["secret"].hex() not in repr(keys[0])


def test_key_doc_round_trips_canonically_and_refuses_other_spellings(world):
    raw = world["doc"].encode()
    assert env.KeyDoc.decode(raw) == world["doc"]
    assert env.KeyDoc.decode(raw).key_id == hashlib.sha256(raw).digest()
    with pytest.raises(env.KeyDocMalformed):
        env.KeyDoc.decode(raw.replace(b'","', b'", "', 1))
    with pytest.raises(env.KeyDocMalformed):
        env.KeyDoc.decode(b"{not json")
    with pytest.raises(env.KeyDocMalformed):
        env.KeyDoc.decode(b" " * (env.MAX_KEY_DOC_BYTES + 1))


def test_wrong_recipient_is_named(world):
    with pytest.raises(env.WrongRecipient):
        env.open_key_doc(world["doc"], world["eve"][0])


def test_altered_wrap_fails_to_unwrap(world):
    doc = world["doc"]
    addr, wrap = doc.wraps[0]
    bad = wrap[:-1] + bytes([wrap[-1] ^ 1])
    forged = env.KeyDoc(**{**doc.__dict__, "wraps": ((addr, bad),) + doc.wraps[1:]})
    who = next(k for k in ("node", "alice", "bob") if world[k][2] == addr)
    with pytest.raises(env.UnwrapFailed):
        env.open_key_doc(forged, world[who][0])
    # a wrap lifted into another session's document does not open either (context-bound)
    lifted = env.KeyDoc(**{**doc.__dict__, "session_id": hashlib.sha256(b"other").digest()})
    with pytest.raises(env.UnwrapFailed):
        env.open_key_doc(lifted, world[who][0])


def test_public_key_must_belong_to_its_address(world):
    alice, bob = world["alice"], world["bob"]
    with pytest.raises(env.RecipientKeyMismatch):
        env.make_key_doc(os.urandom(32), {alice[2]: bob[1]}, [os.urandom(32)], chain_id=1, contract=CONTRACT,
                         session_id=SESSION, creator=alice[2], cameras=CAMERAS, start_ms=0, end_ms=1)


def _sealed(world, frame: bytes) -> tuple[env.DataKey, bytes]:
    key = env.open_key_doc(world["doc"], world["alice"][0])
    return key, env.seal_frame(key, frame)


def test_wrong_key_is_named(world):
    frame = b"frame" * 100
    _, sealed = _sealed(world, frame)
    other = env.DataKey(key_id=hashlib.sha256(b"another doc").digest(), secret=os.urandom(32))
    with pytest.raises(env.WrongKey):
        env.open_frame(sealed, other, hashlib.sha256(frame).digest())
    # the right key id with another secret: the tag fails
    forged = env.DataKey(key_id=world["doc"].key_id, secret=os.urandom(32))
    with pytest.raises(env.EnvelopeTampered):
        env.open_frame(sealed, forged, hashlib.sha256(frame).digest())


def test_moved_ciphertext_is_named(world):
    key, sealed = _sealed(world, b"frame one")
    with pytest.raises(env.MovedCiphertext):
        env.open_frame(sealed, key, hashlib.sha256(b"frame two").digest())
    # re-labelling the header with the other digest breaks the tag (the header is associated data)
    relabelled = sealed[:36] + hashlib.sha256(b"frame two").digest() + sealed[68:]
    with pytest.raises(env.EnvelopeTampered):
        env.open_frame(relabelled, key, hashlib.sha256(b"frame two").digest())


def test_truncated_and_foreign_bytes_are_named(world):
    frame = b"x" * 300
    key, sealed = _sealed(world, frame)
    digest = hashlib.sha256(frame).digest()
    with pytest.raises(env.TruncatedEnvelope):
        env.open_frame(sealed[:50], key, digest)
    with pytest.raises(env.EnvelopeTampered):  # long enough for a header, but cut: the tag fails
        env.open_frame(sealed[:-1], key, digest)
    with pytest.raises(env.NotAnEnvelope):
        env.open_frame(frame, key, digest)
    with pytest.raises(env.TruncatedEnvelope):
        env.read_header(b"FL")  # too short to tell: cut off
    with pytest.raises(env.NotAnEnvelope):
        env.read_header(b"\x00\x00\x00\x01 a short plaintext")
    flipped = bytearray(sealed)
    flipped[env.HEADER_BYTES + 3] ^= 0x80
    with pytest.raises(env.EnvelopeTampered):
        env.open_frame(bytes(flipped), key, digest)


def test_errors_are_value_errors_under_one_base():
    for name in ("NotAnEnvelope", "TruncatedEnvelope", "MovedCiphertext", "WrongKey", "EnvelopeTampered",
                 "PlaintextMismatch", "WrongRecipient", "UnwrapFailed", "KeyDocMalformed", "RecipientKeyMismatch"):
        cls = getattr(env, name)
        assert issubclass(cls, env.SealError) and issubclass(cls, ValueError)
