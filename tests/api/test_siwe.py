"""EIP-4361 parsing and checks, nonces and tokens: pure, no chain."""

from __future__ import annotations

import pytest
from eth_account import Account

from api import siwe
from api.auth import AuthError, NonceStore, TokenIssuer

KEY = "0x" + "42" * 32
ADDRESS = Account.from_key(KEY).address
NOW = 1_764_579_600.0  # 2025-12-01T09:00:00Z


def message(**kw) -> siwe.SiweMessage:
    fields = dict(domain="app.example:8443", address=ADDRESS, uri="https://app.example:8443/login", chain_id=31337,
                  nonce="abcdef0123456789", issued_at="2025-12-01T09:00:00Z", statement="Sign in to FrameLedger")
    fields.update(kw)
    return siwe.SiweMessage(**fields)


def test_round_trip_with_and_without_optional_fields():
    full = message(scheme="https", expiration_time="2025-12-01T09:10:00.000Z", not_before="2025-12-01T08:59:00+00:00",
                   request_id="req-1", resources=("ipfs://bafy", "https://example.com/doc"))
    assert siwe.parse(full.text()) == full
    bare = message(statement=None)
    assert "\n\n\nURI: " in bare.text() and siwe.parse(bare.text()) == bare


@pytest.mark.parametrize("mangle", [
    lambda t: t.replace("\n", "\r\n"),
    lambda t: t.replace(ADDRESS, ADDRESS.lower()),  # not EIP-55
    lambda t: t.replace("Version: 1", "Version: 2"),
    lambda t: t.replace("\nVersion: 1", ""),
    lambda t: t.replace("Nonce: abcdef0123456789", "Nonce: short"),
    lambda t: t.replace("Nonce: abcdef0123456789", "Nonce: has space 1234"),
    lambda t: t + "\nTrailing: line",
    lambda t: t.replace("Sign in to FrameLedger", "two\nlines"),
    lambda t: t.replace("2025-12-01T09:00:00Z", "yesterday"),
    lambda t: t.replace("2025-12-01T09:00:00Z", "2025-13-01T09:00:00Z"),
    lambda t: t.replace("Chain ID: 31337", "Chain ID: 0x7a69"),
    lambda t: t.replace(" wants you to sign in", " would like you to sign in"),
    lambda t: t + "\nResources:\n" + "\n".join(f"- https://r.example/{i}" for i in range(17)),
    lambda t: t + "\nResources:\n- not a uri",
    lambda t: t.replace("URI: ", "URI: " + "a" * 5000),
    lambda t: "",
])
def test_malformed_messages_are_refused(mangle):
    with pytest.raises(siwe.SiweError) as info:
        siwe.parse(mangle(message().text()))
    assert info.value.code == "siwe-malformed"


def test_optional_fields_out_of_order_are_refused():
    text = message(expiration_time="2025-12-01T09:10:00Z", not_before="2025-12-01T08:59:00Z").text()
    swapped = text.replace("Expiration Time: 2025-12-01T09:10:00Z\nNot Before: 2025-12-01T08:59:00Z",
                           "Not Before: 2025-12-01T08:59:00Z\nExpiration Time: 2025-12-01T09:10:00Z")
    with pytest.raises(siwe.SiweError):
        siwe.parse(swapped)


@pytest.mark.parametrize("msg, code", [
    (message(domain="evil.example"), "siwe-domain"),
    (message(chain_id=1), "siwe-chain"),
    (message(issued_at="2025-12-01T09:05:00Z"), "siwe-not-yet-valid"),
    (message(issued_at="2025-12-01T08:00:00Z"), "siwe-expired"),
    (message(expiration_time="2025-12-01T09:00:00Z"), "siwe-expired"),
    (message(not_before="2025-12-01T09:30:00Z"), "siwe-not-yet-valid"),
])
def test_checks(msg, code):
    with pytest.raises(siwe.SiweError) as info:
        siwe.check(msg, domain="app.example:8443", chain_id=31337, now=NOW)
    assert info.value.code == code


def test_a_good_message_passes_and_recovers_its_signer():
    msg = message(expiration_time="2025-12-01T09:10:00Z")
    siwe.check(siwe.parse(msg.text()), domain="app.example:8443", chain_id=31337, now=NOW)
    assert siwe.recover(msg.text(), siwe.sign(msg.text(), KEY)) == ADDRESS
    assert siwe.recover(msg.text() + " ", siwe.sign(msg.text(), KEY)) != ADDRESS
    with pytest.raises(siwe.SiweError):
        siwe.recover(msg.text(), b"\x01" * 64 + b"\x11")  # v = 17


def test_nonces_are_single_use_expire_and_are_bounded():
    now = [NOW]
    store = NonceStore(lambda: now[0], ttl_s=300, max_outstanding=2)
    a, _ = store.issue()
    store.consume(a)
    with pytest.raises(AuthError, match="already used"):
        store.consume(a)
    b, _ = store.issue()
    store.issue()
    with pytest.raises(AuthError) as info:
        store.issue()
    assert (info.value.code, info.value.status) == ("too-many-nonces", 429)
    now[0] += 301
    with pytest.raises(AuthError) as info:
        store.consume(b)
    assert info.value.code == "nonce-expired"
    store.issue()  # the expired ones were evicted


def test_tokens_are_authenticated_and_expire():
    now = [NOW]
    issuer = TokenIssuer(lambda: now[0], ttl_s=900)
    token, expires = issuer.issue(ADDRESS)
    assert issuer.verify(token).address == ADDRESS and expires == NOW + 900
    body, mac = token.split(".")
    for forged in (body[:-2] + "xx." + mac, body + "." + mac[:-2] + "AA", "a.b.c", "",
                   TokenIssuer(lambda: now[0]).issue(ADDRESS)[0]):
        with pytest.raises(AuthError) as info:
            issuer.verify(forged)
        assert info.value.code == "token-invalid"
    now[0] += 900
    with pytest.raises(AuthError) as info:
        issuer.verify(token)
    assert info.value.code == "token-expired"
