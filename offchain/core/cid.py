"""Content identifiers (CIDs) for frames and manifests.

Pure code, no I/O, no dependency beyond the standard library.

Normative: every frame and manifest is stored as a *raw* IPFS block addressed by a CIDv1 with
multicodec ``raw`` (0x55) and multihash ``sha2-256`` (0x12, 32-byte digest). The digest inside the
CID is therefore the plain SHA-256 of the stored bytes, the same value the ledger anchors, so "the
digest" and "the address" can never disagree. The canonical string form is multibase base32
lower-case (prefix ``b``), e.g. ``bafkrei...``, which is what :func:`cid_from_digest` emits.

Parsing is deliberately more liberal than emitting, because IPFS daemons answer in whatever base
they like (js-ipfs prints base58btc ``z...`` from ``block/stat``) and older tooling still shows
CIDv0 ``Qm...``: :func:`digest_from_cid` accepts CIDv1 in base32 (``b``/``B``) or base58btc
(``z``) and CIDv0, and returns the 32-byte SHA-256 digest. Stores key blocks by that digest, so
two spellings of one address always compare equal through it, never through string equality.

Base32 comes from the standard library; base58btc is the twenty lines below (no new dependency).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

__all__ = [
    "CODEC_RAW",
    "CODEC_DAG_PB",
    "MH_SHA2_256",
    "DIGEST_SIZE",
    "InvalidCid",
    "ParsedCid",
    "cid_from_digest",
    "cid_for_bytes",
    "digest_from_cid",
    "parse_cid",
    "normalize_cid",
    "cids_equal",
    "b58encode",
    "b58decode",
]

CODEC_RAW = 0x55
CODEC_DAG_PB = 0x70
MH_SHA2_256 = 0x12
DIGEST_SIZE = 32

# CIDv1, raw, sha2-256, 32 bytes: all four varints are single bytes, so the binary prefix is fixed.
_RAW_SHA256_PREFIX = bytes([0x01, CODEC_RAW, MH_SHA2_256, DIGEST_SIZE])

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


class InvalidCid(ValueError):
    """The string is not a CID this project can address: bad multibase, bad varint, not CIDv0/v1,
    or a multihash other than a 32-byte sha2-256. A ``ValueError`` so generic input validation
    catches it too."""


@dataclass(frozen=True)
class ParsedCid:
    """The parts of a CID that matter here. ``codec`` is informational: stores key blocks by the
    multihash digest alone (as IPFS blockstores do), so a raw CIDv1 and a dag-pb CIDv0 with the same
    digest name the same stored bytes."""

    version: int
    codec: int
    digest: bytes

    @property
    def canonical(self) -> str:
        """The project's canonical spelling: CIDv1 raw, base32 lower-case."""
        return cid_from_digest(self.digest)


# --------------------------------------------------------------------------- base encodings


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 (multibase ``z`` without the prefix). Leading zero bytes become
    leading ``1`` characters, as the format requires."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; raises :class:`InvalidCid` on a character outside the alphabet
    (base58 has no ``0``, ``O``, ``I`` or ``l``)."""
    n = 0
    for ch in text:
        try:
            n = n * 58 + _B58_INDEX[ch]
        except KeyError:
            raise InvalidCid(f"invalid base58btc character {ch!r}") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\x00" * zeros + body


def _b32encode(data: bytes) -> str:
    """RFC 4648 base32, lower-case, no padding: multibase ``b``."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _b32decode(text: str) -> bytes:
    """Strict inverse of :func:`_b32encode` (case-insensitive; the caller checks the case that the
    multibase prefix promises). Rejects padding, stray characters and non-canonical tails, so
    every accepted string round-trips."""
    if "=" in text:
        raise InvalidCid("multibase base32 must not be padded")
    upper = text.upper()
    if len(upper) % 8 in (1, 3, 6):
        raise InvalidCid("base32 text has an impossible length")
    try:
        data = base64.b32decode(upper + "=" * (-len(upper) % 8))
    except (binascii.Error, ValueError):
        raise InvalidCid("invalid base32 character") from None
    if _b32encode(data) != text.lower():
        raise InvalidCid("non-canonical base32 (stray trailing bits)")
    return data


# --------------------------------------------------------------------------- varints


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Unsigned LEB128 as multiformats uses it: at most 9 bytes and minimally encoded."""
    value = 0
    shift = 0
    start = pos
    while True:
        if pos >= len(buf):
            raise InvalidCid("truncated varint")
        if pos - start >= 9:
            raise InvalidCid("varint longer than 9 bytes")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and pos - start > 1:
                raise InvalidCid("varint is not minimally encoded")
            return value, pos
        shift += 7


# --------------------------------------------------------------------------- public API


def _as_digest(sha256_digest: bytes | bytearray | memoryview) -> bytes:
    digest = bytes(sha256_digest)
    if len(digest) != DIGEST_SIZE:
        raise ValueError(f"a sha2-256 digest is {DIGEST_SIZE} bytes, got {len(digest)}")
    return digest


def cid_from_digest(sha256_digest: bytes) -> str:
    """The canonical CID (v1, raw, sha2-256, base32 lower-case) of bytes whose SHA-256 is given.

    Takes the digest rather than the bytes so callers that already hashed (frame capture hashes
    every frame for the Merkle tree anyway) don't hash twice."""
    return "b" + _b32encode(_RAW_SHA256_PREFIX + _as_digest(sha256_digest))


def cid_for_bytes(data: bytes | bytearray | memoryview) -> str:
    """The canonical CID of a block's bytes: ``cid_from_digest(sha256(data))``."""
    return cid_from_digest(hashlib.sha256(data).digest())


def parse_cid(cid: str) -> ParsedCid:
    """Parse a CIDv0 (``Qm...``) or a CIDv1 in base32 (``b``/``B``) or base58btc (``z``).

    Only sha2-256 multihashes with a 32-byte digest are accepted: anything else could not be the
    address of a block in this project, and silently accepting it would turn a typo or a foreign
    CID into a confusing "not found" later."""
    if not isinstance(cid, str):
        raise InvalidCid(f"a CID is a string, got {type(cid).__name__}")
    if not cid:
        raise InvalidCid("empty CID")
    if cid != cid.strip():
        raise InvalidCid("CID has surrounding whitespace")

    if len(cid) == 46 and cid.startswith("Qm"):
        raw = b58decode(cid)
        if len(raw) != 2 + DIGEST_SIZE or raw[0] != MH_SHA2_256 or raw[1] != DIGEST_SIZE:
            raise InvalidCid(f"{cid!r} is not a CIDv0 (base58 sha2-256 multihash)")
        return ParsedCid(version=0, codec=CODEC_DAG_PB, digest=raw[2:])

    prefix, body = cid[0], cid[1:]
    if prefix == "b":
        if body != body.lower():
            raise InvalidCid("multibase 'b' is lower-case base32; got upper-case characters")
        raw = _b32decode(body)
    elif prefix == "B":
        if body != body.upper():
            raise InvalidCid("multibase 'B' is upper-case base32; got lower-case characters")
        raw = _b32decode(body)
    elif prefix == "z":
        raw = b58decode(body)
    else:
        raise InvalidCid(
            f"unsupported multibase prefix {prefix!r} in {cid[:16]!r}: expected CIDv0 'Qm...', "
            "or CIDv1 in base32 'b...' or base58btc 'z...'"
        )

    version, pos = _read_varint(raw, 0)
    if version == 0x12:
        raise InvalidCid("a CIDv0 must not carry a multibase prefix")
    if version != 1:
        raise InvalidCid(f"unsupported CID version {version}")
    codec, pos = _read_varint(raw, pos)
    mh_code, pos = _read_varint(raw, pos)
    if mh_code != MH_SHA2_256:
        raise InvalidCid(f"unsupported multihash 0x{mh_code:x}: only sha2-256 (0x12) addresses blocks here")
    mh_len, pos = _read_varint(raw, pos)
    digest = raw[pos:]
    if mh_len != DIGEST_SIZE or len(digest) != DIGEST_SIZE:
        raise InvalidCid(
            f"sha2-256 digest must be {DIGEST_SIZE} bytes (declared {mh_len}, found {len(digest)})"
        )
    return ParsedCid(version=1, codec=codec, digest=digest)


def digest_from_cid(cid: str) -> bytes:
    """The 32-byte SHA-256 digest a CID addresses. Two CIDs name the same block exactly when
    their digests are equal, whatever base or version they are spelled in."""
    return parse_cid(cid).digest


def normalize_cid(cid: str) -> str:
    """Any accepted spelling -> the canonical ``bafkrei...`` form."""
    return cid_from_digest(digest_from_cid(cid))


def cids_equal(a: str, b: str) -> bool:
    """Compare two CIDs by the digest they address, not by their spelling."""
    return digest_from_cid(a) == digest_from_cid(b)
