"""Ed25519 signature checks: the one place a device's (or a camera's control) signature is verified.

Through libsodium (PyNaCl) rather than `cryptography`'s OpenSSL binding: on this machine a verify
takes ~77 µs there against ~137 µs (docs/TRANSPORT.md, "Fifth round"), and the node verifies
every frame, so it was the largest single cost of ingest (22 % of a 200-camera node's samples).
Keys and signing stay with `cryptography` (the camera keystore); only the check moved.

libsodium is the stricter of the two: it refuses non-canonical signatures (S ≥ L) as OpenSSL
does, and also small-order public keys and R points, which no honest device produces. A frame
this accepts, OpenSSL (the JavaScript verifier's Node.js crypto) accepts too.
"""

from __future__ import annotations

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError, CryptoError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``; False for
    a wrong signature and for a key or signature of the wrong length (never raises for them)."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        crypto_sign_open(bytes(signature) + bytes(message), bytes(public_key))
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True
