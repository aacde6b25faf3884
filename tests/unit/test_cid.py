"""CID encoding/decoding: the address of every frame must equal its SHA-256, in every spelling.

Known answers come from IPFS itself (js-ipfs 0.66 answered ``bafkrei...`` from block/put and
``zb2rh...`` from block/stat for the same bytes) and from well-known CIDs of the IPFS docs.
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from offchain.core.cid import (
    CODEC_DAG_PB,
    CODEC_RAW,
    InvalidCid,
    b58decode,
    b58encode,
    cid_for_bytes,
    cid_from_digest,
    cids_equal,
    digest_from_cid,
    normalize_cid,
    parse_cid,
)

HELLO_SHA = hashlib.sha256(b"hello").digest()
HELLO_B32 = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"  # js-ipfs block/put
HELLO_B58 = "zb2rhZfjRh2FHHB2RkHVEvL2vJnCTcu7kwRqgVsf9gpkLgteo"  # js-ipfs block/stat
HELLO_V0 = "QmRN6wdp1S2A5EtjW9A3M1vKSBuQQGcgvuhoMUoEz4iiT5"  # same multihash as CIDv0
EMPTY_RAW = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # raw CID of b""
EMPTY_DIR_V0 = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"  # empty UnixFS directory
EMPTY_DIR_V1 = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"


def _b32(raw: bytes) -> str:
    return "b" + base64.b32encode(raw).decode().rstrip("=").lower()


def _b58(raw: bytes) -> str:
    return "z" + b58encode(raw)


# ----------------------------------------------------------------------------- known answers


def test_known_answers():
    assert cid_for_bytes(b"hello") == HELLO_B32
    assert cid_from_digest(HELLO_SHA) == HELLO_B32
    assert cid_for_bytes(b"") == EMPTY_RAW
    assert digest_from_cid(EMPTY_RAW) == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("spelling", [HELLO_B32, HELLO_B58, HELLO_V0, HELLO_B32.upper()])
def test_every_spelling_decodes_to_the_same_digest(spelling):
    assert digest_from_cid(spelling) == HELLO_SHA
    assert normalize_cid(spelling) == HELLO_B32
    assert cids_equal(spelling, HELLO_B32)


def test_parse_reports_version_and_codec():
    assert parse_cid(HELLO_B32).version == 1 and parse_cid(HELLO_B32).codec == CODEC_RAW
    v0 = parse_cid(EMPTY_DIR_V0)
    assert (v0.version, v0.codec) == (0, CODEC_DAG_PB)
    v1 = parse_cid(EMPTY_DIR_V1)
    assert (v1.version, v1.codec) == (1, CODEC_DAG_PB)
    assert v0.digest == v1.digest  # same block, two spellings
    assert v0.canonical.startswith("bafkrei")


def test_cid_string_shape():
    c = cid_for_bytes(os.urandom(100))
    assert c.startswith("bafkrei") and len(c) == 59 and c == c.lower()


def test_accepts_bytes_like():
    data = b"frame bytes"
    assert cid_for_bytes(bytearray(data)) == cid_for_bytes(memoryview(data)) == cid_for_bytes(data)


def test_round_trip_random_digests():
    for _ in range(200):
        d = os.urandom(32)
        c = cid_from_digest(d)
        assert digest_from_cid(c) == d
        assert digest_from_cid(_b58(base64.b32decode(c[1:].upper() + "=" * (-len(c[1:]) % 8)))) == d


def test_digest_with_leading_zero_bytes():
    d = b"\x00" * 5 + os.urandom(27)
    assert digest_from_cid(cid_from_digest(d)) == d
    v0 = b58encode(bytes([0x12, 0x20]) + d)
    assert digest_from_cid(v0) == d


# ----------------------------------------------------------------------------- base58


def test_base58_vectors():
    assert b58encode(b"hello world") == "StV1DL6CwTryKyV"
    assert b58decode("StV1DL6CwTryKyV") == b"hello world"
    assert b58encode(b"\x00\x00\x01") == "112"
    assert b58decode("112") == b"\x00\x00\x01"
    assert b58encode(b"") == "" and b58decode("") == b""


# ----------------------------------------------------------------------------- rejections

RAW_PREFIX = bytes([0x01, 0x55, 0x12, 0x20])


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("", "empty"),
        (" " + HELLO_B32, "whitespace"),
        (HELLO_B32 + "\n", "whitespace"),
        ("f01551220" + HELLO_SHA.hex(), "multibase prefix"),  # base16: valid multibase, unsupported
        ("m" + "AVUSI", "multibase prefix"),
        ("bafkreiBm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq", "lower-case"),
        ("B" + HELLO_B32[1:], "upper-case"),
        (HELLO_B32 + "====", "padded"),
        (HELLO_B32[:-1] + "1", "base32"),  # '1' is not in the base32 alphabet
        (HELLO_B32[:-1] + "r", "non-canonical"),  # stray bits in the last character
        ("zb2rhZfjRh2FHHB2RkHVEvL2vJnCTcu7kwRqgVsf9gpkLgte0", "base58"),  # '0' not in alphabet
        ("Qm" + "0" * 44, "base58"),
        ("z" + HELLO_V0, "CIDv0 must not carry"),
        (_b32(RAW_PREFIX + HELLO_SHA[:-1]), "32 bytes"),  # truncated digest
        (_b32(RAW_PREFIX + HELLO_SHA + b"\x00"), "32 bytes"),  # trailing garbage
        (_b32(bytes([0x01, 0x55, 0x13, 0x40]) + hashlib.sha512(b"x").digest()), "sha2-256"),
        (_b32(bytes([0x01, 0x55, 0x1E, 0x20]) + HELLO_SHA), "sha2-256"),  # blake3
        (_b32(bytes([0x01, 0x55, 0x12, 0x10]) + HELLO_SHA[:16]), "32 bytes"),
        (_b32(bytes([0x02, 0x55, 0x12, 0x20]) + HELLO_SHA), "version"),
        (_b32(bytes([0x01, 0xD5, 0x00, 0x12, 0x20]) + HELLO_SHA), "minimally"),  # 0x55 as 2 bytes
        (_b32(bytes([0x01, 0x55])), "truncated"),
        (_b32(bytes([0x01] + [0x80] * 10)), "varint"),
        ("QmRN6wdp1S2A5EtjW9A3M1vKSBuQQGcgvuhoMUoEz4iiT", "multibase prefix"),  # 45 chars: not v0
    ],
)
def test_invalid_cids_raise_clear_errors(bad, fragment):
    with pytest.raises(InvalidCid) as exc:
        digest_from_cid(bad)
    assert fragment.lower() in str(exc.value).lower()


def test_invalid_cid_is_a_value_error():
    with pytest.raises(ValueError):
        digest_from_cid("nope")


@pytest.mark.parametrize("not_a_string", [None, b"bafkrei", 42])
def test_non_strings_rejected(not_a_string):
    with pytest.raises(InvalidCid):
        digest_from_cid(not_a_string)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_cid_from_digest_requires_32_bytes(size):
    with pytest.raises(ValueError):
        cid_from_digest(b"\x01" * size)
