"""The one Ed25519 check (offchain/core/ed25519.py, libsodium) agrees with `cryptography`'s
signer on every signature it makes and refuses what must be refused, without raising."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from offchain.core import ed25519


def _pair() -> tuple[Ed25519PrivateKey, bytes]:
    key = Ed25519PrivateKey.generate()
    return key, key.public_key().public_bytes_raw()


def test_a_signature_made_by_cryptography_verifies():
    for _ in range(50):
        key, pub = _pair()
        message = os.urandom(int.from_bytes(os.urandom(1), "big"))
        assert ed25519.verify(pub, key.sign(message), message)


def test_a_changed_message_signature_or_key_is_refused():
    key, pub = _pair()
    message = b"frame 7"
    sig = key.sign(message)
    assert not ed25519.verify(pub, sig, b"frame 8")
    assert not ed25519.verify(pub, bytes([sig[0] ^ 1]) + sig[1:], message)
    assert not ed25519.verify(_pair()[1], sig, message)


@pytest.mark.parametrize("pub_len,sig_len", [(31, 64), (33, 64), (32, 63), (32, 65), (0, 0)])
def test_wrong_lengths_are_refused_not_raised(pub_len, sig_len):
    assert not ed25519.verify(b"\x01" * pub_len, b"\x02" * sig_len, b"m")


def test_a_non_canonical_signature_and_a_small_order_key_are_refused():
    key, pub = _pair()
    sig = key.sign(b"m")
    order = 2**252 + 27742317777372353535851937790883648493
    s = int.from_bytes(sig[32:], "little") + order  # the same S mod L, not canonical (S < L < 2^253)
    assert not ed25519.verify(pub, sig[:32] + s.to_bytes(32, "little"), b"m")
    identity = (1).to_bytes(32, "little")  # the neutral point: small order
    assert not ed25519.verify(identity, b"\x01" + b"\x00" * 63, b"m")
