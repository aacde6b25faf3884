"""Session data at rest (S5, B7): the key document and the frame envelope, pure.

Scheme (docs/ENCRYPTION.md says why):

* A **data key** (32 random bytes, made by the shell) per (session, node). It is wrapped to each
  recipient's secp256k1 public key, the key of its Ethereum account, by **ECIES**: an ephemeral
  secp256k1 key pair (its private half made by the shell), ECDH with the recipient's key, HKDF-SHA256
  over the shared x coordinate (salt: both public keys; info: the wrap context), AES-256-GCM of the
  data key under that key-encryption key (a fresh key per wrap, so the zero nonce is used once).
  The context binds a wrap to its session, creator and recipient, so it cannot be lifted into
  another document.
* The **key document** lists the wraps with what they are for (chain, contract, session, creator
  node, cameras, time range), canonical JSON; its SHA-256 is the **key id**. It holds nothing
  secret and is stored as an ordinary block, so it travels with the data it opens.
* A **frame envelope**: ``FLE1 | key id (32) | plaintext SHA-256 (32) | nonce (12) | AES-256-GCM
  ciphertext + tag``, with the 80-byte header as associated data: an envelope cannot be moved to
  another frame's CID nor re-labelled with another key, and anything altered fails the tag. The
  nonce is HMAC-SHA256(nonce key, plaintext digest)[:12] (both keys HKDF-derived from the data
  key), so sealing is deterministic: the same frame gives the same envelope (idempotent puts, no
  randomness in the core), and two different frames share a nonce only if their SHA-256 digests
  collide in those 96 bits (birthday bound 2^48 frames per data key).

Digests, CIDs, manifests and proofs stay over the plaintext: a reader opens the envelope and
re-hashes what it got against the digest asked for. Every failure is its own `SealError`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

__all__ = [
    "SealError", "NotAnEnvelope", "TruncatedEnvelope", "MovedCiphertext", "WrongKey", "EnvelopeTampered",
    "PlaintextMismatch", "WrongRecipient", "UnwrapFailed", "KeyDocMalformed", "RecipientKeyMismatch",
    "KeyDoc", "DataKey", "EnvelopeHeader", "public_key_of", "address_of", "wrap_key", "unwrap_key",
    "make_key_doc", "open_key_doc", "seal_frame", "open_frame", "read_header", "is_envelope",
    "MAGIC", "HEADER_BYTES", "TAG_BYTES", "KEY_DOC_FORMAT", "MAX_KEY_DOC_BYTES", "MAX_RECIPIENTS",
]

MAGIC = b"FLE1"
_HEADER = struct.Struct(">4s32s32s12s")  # magic, key id, plaintext digest, nonce
HEADER_BYTES = _HEADER.size  # 80
AAD_BYTES = 4 + 32 + 32  # magic, key id, digest: the nonce follows from the key and the digest
TAG_BYTES = 16
KEY_DOC_FORMAT = "frameledger.sealkey/1"
MAX_KEY_DOC_BYTES = 64 * 1024  # a document is refused beyond this (hostile store input)
MAX_RECIPIENTS = 128  # parties (<= 32 on chain) plus the consortium's nodes
_WRAP_BYTES = 65 + 32 + TAG_BYTES  # ephemeral public key, data key, tag
_CURVE = ec.SECP256K1()


class SealError(ValueError):
    """Base of every failure to seal or open session data."""


class NotAnEnvelope(SealError):
    """The bytes do not start with the envelope magic (a plaintext block, or another format)."""


class TruncatedEnvelope(SealError):
    """Shorter than a header and a tag: cut off in storage or in transit."""


class MovedCiphertext(SealError):
    """The envelope is for another plaintext digest than the CID it was read for."""


class WrongKey(SealError):
    """The envelope was sealed under another data key (key id) than the one given."""


class EnvelopeTampered(SealError):
    """The AES-GCM tag does not verify: ciphertext, header or key altered."""


class PlaintextMismatch(SealError):
    """The opened bytes do not hash to the digest in the header (a faulty writer)."""


class WrongRecipient(SealError):
    """The key document has no wrap for this account: its key cannot open this data."""


class UnwrapFailed(SealError):
    """A wrap for this account exists but does not open with this private key (altered wrap)."""


class KeyDocMalformed(SealError):
    """A key document that is not valid JSON of the expected shape, or too large."""


class RecipientKeyMismatch(SealError):
    """A public key given for a recipient does not belong to its address."""


# ------------------------------------------------------------------------------ keys

def public_key_of(private_key: bytes) -> bytes:
    """The 64-byte uncompressed public key (x || y) of a 32-byte secp256k1 private key."""
    priv = ec.derive_private_key(int.from_bytes(private_key, "big"), _CURVE)
    nums = priv.public_key().public_numbers()
    return nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")


def address_of(public_key: bytes) -> str:
    """The Ethereum address (checksummed) of a 64-byte public key."""
    if len(public_key) != 64:
        raise RecipientKeyMismatch(f"a public key is 64 bytes, not {len(public_key)}")
    return to_checksum_address(keccak(public_key)[12:])


def _point(public_key: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, b"\x04" + public_key)


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _wrap_context(session_id: bytes, creator: str, recipient: str) -> bytes:
    return b"FrameLedger-seal-v1 wrap|" + session_id + bytes.fromhex(creator[2:]) + bytes.fromhex(recipient[2:])


def wrap_key(data_key: bytes, recipient_public: bytes, ephemeral_private: bytes, context: bytes) -> bytes:
    """ECIES: ``ephemeral public (65) | AES-256-GCM(kek, data key) (48)``."""
    eph = ec.derive_private_key(int.from_bytes(ephemeral_private, "big"), _CURVE)
    eph_pub = b"\x04" + public_key_of(ephemeral_private)
    try:
        shared = eph.exchange(ec.ECDH(), _point(recipient_public))
    except ValueError as exc:
        raise RecipientKeyMismatch(f"not a secp256k1 public key: {exc}") from None
    kek = _hkdf(shared, eph_pub + b"\x04" + recipient_public, context)
    return eph_pub + AESGCM(kek).encrypt(bytes(12), data_key, context)


def unwrap_key(wrapped: bytes, private_key: bytes, context: bytes) -> bytes:
    """The data key inside ``wrapped``; UnwrapFailed if it does not open with ``private_key``."""
    if len(wrapped) != _WRAP_BYTES or wrapped[0] != 4:
        raise UnwrapFailed(f"a wrap is {_WRAP_BYTES} bytes starting 0x04, not {len(wrapped)} bytes")
    priv = ec.derive_private_key(int.from_bytes(private_key, "big"), _CURVE)
    try:
        shared = priv.exchange(ec.ECDH(), _point(wrapped[1:65]))
    except ValueError:
        raise UnwrapFailed("the wrap's ephemeral key is not on the curve") from None
    kek = _hkdf(shared, wrapped[:65] + b"\x04" + public_key_of(private_key), context)
    try:
        return AESGCM(kek).decrypt(bytes(12), wrapped[65:], context)
    except InvalidTag:
        raise UnwrapFailed("the wrap does not open with this key") from None


# ------------------------------------------------------------------------ key document

@dataclass(frozen=True)
class KeyDoc:
    """Who can open one node's copies of one session's frames. Nothing in it is secret."""

    chain_id: int
    contract: str  # SigningSession address
    session_id: bytes
    creator: str  # the node account that made the data key
    cameras: tuple[bytes, ...]
    start_ms: int
    end_ms: int
    wraps: tuple[tuple[str, bytes], ...]  # (recipient address, wrap), sorted by address

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "format": KEY_DOC_FORMAT, "chainId": self.chain_id, "contract": self.contract,
            "session": "0x" + self.session_id.hex(), "creator": self.creator,
            "cameras": ["0x" + c.hex() for c in self.cameras], "startMs": self.start_ms, "endMs": self.end_ms,
            "recipients": [{"address": a, "wrap": "0x" + w.hex()} for a, w in self.wraps],
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @property
    def recipients(self) -> tuple[str, ...]:
        return tuple(a for a, _ in self.wraps)

    @classmethod
    def decode(cls, raw: bytes) -> "KeyDoc":
        if len(raw) > MAX_KEY_DOC_BYTES:
            raise KeyDocMalformed(f"key document of {len(raw)} bytes (limit {MAX_KEY_DOC_BYTES})")
        try:
            d = json.loads(raw)
            if d["format"] != KEY_DOC_FORMAT:
                raise KeyDocMalformed(f"format {d['format']!r}, expected {KEY_DOC_FORMAT}")
            recipients = d["recipients"]
            if not isinstance(recipients, list) or len(recipients) > MAX_RECIPIENTS:
                raise KeyDocMalformed(f"recipients must be a list of at most {MAX_RECIPIENTS}")
            doc = cls(chain_id=int(d["chainId"]), contract=to_checksum_address(d["contract"]),
                      session_id=_hex32(d["session"]), creator=to_checksum_address(d["creator"]),
                      cameras=tuple(_hex32(c) for c in d["cameras"]), start_ms=int(d["startMs"]),
                      end_ms=int(d["endMs"]),
                      wraps=tuple((to_checksum_address(r["address"]), bytes.fromhex(r["wrap"][2:])) for r in recipients))
        except KeyDocMalformed:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyDocMalformed(f"not a key document: {exc!r}") from None
        if doc.encode() != raw:  # one spelling per document, so its key id is unambiguous
            raise KeyDocMalformed("key document is not in canonical form")
        return doc


def _hex32(text: Any) -> bytes:
    b = bytes.fromhex(str(text)[2:]) if str(text).startswith("0x") else b""
    if len(b) != 32:
        raise KeyDocMalformed(f"expected 0x + 32 bytes hex, got {str(text)[:80]!r}")
    return b


def make_key_doc(data_key: bytes, recipients: Mapping[str, bytes], ephemerals: Sequence[bytes], *, chain_id: int,
                 contract: str, session_id: bytes, creator: str, cameras: Sequence[bytes], start_ms: int,
                 end_ms: int) -> KeyDoc:
    """The key document wrapping ``data_key`` to every recipient (address -> 64-byte public key,
    each checked against its address); one ephemeral private key per recipient, from the shell."""
    if len(data_key) != 32:
        raise SealError("a data key is 32 bytes")
    if not 0 < len(recipients) <= MAX_RECIPIENTS or len(ephemerals) < len(recipients):
        raise SealError(f"1..{MAX_RECIPIENTS} recipients, one ephemeral key each")
    creator = to_checksum_address(creator)
    wraps = []
    for (address, pub), eph in zip(sorted((to_checksum_address(a), p) for a, p in recipients.items()), ephemerals):
        if address_of(pub) != address:
            raise RecipientKeyMismatch(f"the public key given for {address} is {address_of(pub)}'s")
        wraps.append((address, wrap_key(data_key, pub, eph, _wrap_context(session_id, creator, address))))
    return KeyDoc(chain_id=chain_id, contract=to_checksum_address(contract), session_id=session_id, creator=creator,
                  cameras=tuple(cameras), start_ms=start_ms, end_ms=end_ms, wraps=tuple(wraps))


def open_key_doc(doc: KeyDoc, private_key: bytes) -> "DataKey":
    """The data key of ``doc`` for the holder of ``private_key``."""
    me = address_of(public_key_of(private_key))
    wrap = dict(doc.wraps).get(me)
    if wrap is None:
        raise WrongRecipient(f"{me} is not a recipient of key {doc.key_id.hex()[:16]} (session 0x{doc.session_id.hex()})")
    secret = unwrap_key(wrap, private_key, _wrap_context(doc.session_id, doc.creator, me))
    return DataKey(key_id=doc.key_id, secret=secret)


# ------------------------------------------------------------------------------ frames

@dataclass(frozen=True)
class DataKey:
    key_id: bytes  # SHA-256 of the key document
    secret: bytes = b""
    # derived once (two HKDFs and an AES key schedule per frame would double the cost of small frames)
    _aead: AESGCM = field(init=False, repr=False, compare=False)
    _nonce_key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise SealError("a data key is 32 bytes")
        object.__setattr__(self, "_aead", AESGCM(_hkdf(self.secret, self.key_id, b"FrameLedger-seal-v1 frame")))
        object.__setattr__(self, "_nonce_key", _hkdf(self.secret, self.key_id, b"FrameLedger-seal-v1 nonce"))

    def __repr__(self) -> str:  # never print the secret
        return f"DataKey(key_id={self.key_id.hex()[:16]}...)"


@dataclass(frozen=True)
class EnvelopeHeader:
    key_id: bytes
    digest: bytes  # SHA-256 of the plaintext: the frame's CID
    nonce: bytes


def is_envelope(data: bytes) -> bool:
    return data[:4] == MAGIC


def read_header(envelope: bytes) -> EnvelopeHeader:
    if len(envelope) >= 4 and envelope[:4] != MAGIC:
        raise NotAnEnvelope(f"magic {envelope[:4]!r}, expected {MAGIC!r}")
    if len(envelope) < HEADER_BYTES + TAG_BYTES:
        raise TruncatedEnvelope(f"envelope of {len(envelope)} bytes, shorter than header + tag")
    _, key_id, digest, nonce = _HEADER.unpack_from(envelope)
    return EnvelopeHeader(key_id=key_id, digest=digest, nonce=nonce)


def seal_frame(key: DataKey, plaintext: bytes, digest: bytes | None = None) -> bytes:
    """The envelope of ``plaintext``. ``digest``: its SHA-256 when the caller has it already (the
    node checked it against the camera's signature); a wrong one is caught on every read."""
    digest = hashlib.sha256(plaintext).digest() if digest is None else digest
    nonce = hmac.new(key._nonce_key, digest, hashlib.sha256).digest()[:12]
    header = _HEADER.pack(MAGIC, key.key_id, digest, nonce)
    return header + key._aead.encrypt(nonce, plaintext, header[:AAD_BYTES])


def open_frame(envelope: bytes, key: DataKey, expected_digest: bytes) -> bytes:
    """The plaintext of ``envelope``, checked to be the frame whose SHA-256 is ``expected_digest``."""
    head = read_header(envelope)
    if head.digest != expected_digest:
        raise MovedCiphertext(f"envelope holds frame {head.digest.hex()[:16]}, read for {expected_digest.hex()[:16]}")
    if head.key_id != key.key_id:
        raise WrongKey(f"sealed under key {head.key_id.hex()[:16]}, not {key.key_id.hex()[:16]}")
    try:
        plain = key._aead.decrypt(head.nonce, envelope[HEADER_BYTES:], envelope[:AAD_BYTES])
    except InvalidTag:
        raise EnvelopeTampered(f"envelope of frame {head.digest.hex()[:16]} fails its tag") from None
    if hashlib.sha256(plain).digest() != expected_digest:
        raise PlaintextMismatch(f"opened bytes do not hash to {expected_digest.hex()[:16]}")
    return plain
