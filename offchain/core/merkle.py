"""Byte-exact Python port of OpenZeppelin's ``StandardMerkleTree``.

FrameLedger anchors Merkle roots on chain and verifies them with OpenZeppelin's
``MerkleProof.sol``; auditors and partner tooling rebuild the same trees with the
JavaScript library ``@openzeppelin/merkle-tree`` (v1.0.8) or load our dumps with
it. A root or proof that differs by a single byte is worthless, so this module
copies that library's observable behaviour rather than what might look more
natural in Python:

* leaf = ``keccak256(bytes.concat(keccak256(abi.encode(values...))))`` (double
  hashing, so a leaf can never be confused with an internal node);
* internal node = ``keccak256`` of the two children in ascending byte order
  (commutative, which is what ``MerkleProof.sol`` expects);
* leaves sorted by hash by default, the tree stored as a flat array with the
  leaves at the end in reverse order, proofs listed leaf-to-root, multiproofs in
  the ``{leaves, proof, proofFlags}`` shape, dumps in format ``standard-v1``;
* the same lenient value parsing as ``@metamask/abi-utils`` (hex strings, byte
  strings, decimal strings, ...), so any leaf JS accepts hashes identically here.

Everything is pure computation; nothing here touches files, the network or a
node process.
"""

from __future__ import annotations

import operator
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping

from eth_abi.abi import encode as _abi_encode

# The tree's node loop in C where it was built (offchain/core/native.py says when; the same nodes
# as `_make_tree_py`, tests/unit/test_native_merkle.py).
from .native import native as _native

_keccak: Callable[[bytes], bytes]
try:
    # safe-pysha3's C Keccak-256 takes ~1 us a call where eth_hash's default backend
    # (pycryptodome through cffi) takes ~6 us; a block's tree is 3 hashes per frame.
    from sha3 import keccak_256 as _keccak_256  # type: ignore[import-not-found,unused-ignore]

    def _keccak(data: bytes) -> bytes:
        return _keccak_256(data).digest()  # type: ignore[no-any-return,unused-ignore]

    def _hash_pair(a: bytes, b: bytes) -> bytes:
        # Unchecked twin of hash_pair for loops whose inputs are already validated (one call, not two).
        return _keccak_256(a + b if a <= b else b + a).digest()  # type: ignore[no-any-return,unused-ignore]
except ImportError:  # pragma: no cover - the same function, slower
    from eth_hash.auto import keccak as _keccak

    def _hash_pair(a: bytes, b: bytes) -> bytes:
        return _keccak(a + b if a <= b else b + a)

keccak256: Callable[[bytes], bytes] = _keccak  # the fastest binding present (above)

__all__ = [
    "DUMP_FORMAT",
    "keccak256",
    "InvalidMerkleInput",
    "InvalidMerkleTree",
    "InvalidMultiproof",
    "LeafNotInTree",
    "MultiProof",
    "StandardMerkleTree",
    "hash_pair",
    "leaf_hash",
    "process_multiproof",
    "process_proof",
    "verify_multiproof",
    "verify_proof",
]

DUMP_FORMAT = "standard-v1"

# Integers beyond this lose precision once JavaScript parses them as JSON numbers,
# so dump() writes them as decimal strings, which abi-utils accepts just as well.
_JS_MAX_SAFE_INTEGER = 2**53 - 1

# Note on hashing: ``eth_utils.keccak`` is a thin argument-coercing wrapper around
# ``eth_hash.auto.keccak``. Building a 100k-leaf tree takes ~300k hashes, and the
# wrapper's coercion alone costs roughly a third of a second there, so we call the
# engine directly. The digest is the same function either way.


# --------------------------------------------------------------------------- errors


class InvalidMerkleInput(ValueError):
    """Raised for anything the JS library would reject with an error.

    One base class lets callers handle "bad tree input" uniformly, while the
    subclasses below separate the cases a caller may want to treat differently.
    """


class LeafNotInTree(InvalidMerkleInput):
    """A value was used to address a leaf, but no leaf hashes to it.

    Kept distinct because "not in this tree" is an expected, recoverable answer
    for lookups, unlike malformed input.
    """


class InvalidMultiproof(InvalidMerkleInput):
    """The multiproof's shape is inconsistent (MerkleProof.sol would revert)."""


class InvalidMerkleTree(InvalidMerkleInput):
    """A tree (usually from a dump) whose hashes do not add up.

    Separate from bad arguments because it signals corrupted or forged data.
    """


# ------------------------------------------------------------------ node hashing


def hash_pair(a: bytes | str, b: bytes | str) -> bytes:
    """Hash two nodes commutatively, as ``Hashes.commutativeKeccak256`` does.

    Sorting the pair means a proof needs no left/right flags: the verifier
    gets the same parent whichever side each sibling was on.
    """
    return _hash_pair(_node(a), _node(b))


def _node(value: Any, what: str = "Merkle tree node") -> bytes:
    """Accept a node the way the JS library's ``toBytes`` does, then insist on 32 bytes.

    JS takes nodes as ``Uint8Array`` or hex strings with an optional ``0x``;
    callers often hold proofs straight from JSON, so we accept both.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    elif isinstance(value, str):
        parsed = _lenient_hex(value)
        if parsed is None:
            raise InvalidMerkleInput(f"{what} must be bytes or a hex string, got {value!r}")
        raw = parsed
    else:
        raise InvalidMerkleInput(f"{what} must be bytes or a hex string, got {type(value).__name__}")
    if len(raw) != 32:
        raise InvalidMerkleInput("Merkle tree nodes must be Uint8Array of length 32")
    return raw


_LENIENT_HEX_RE = re.compile(r"(?:0[xX])?([0-9a-fA-F]+)")


def _lenient_hex(text: str) -> bytes | None:
    """Mirror ``@metamask/utils.hexToBytes``: optional prefix, odd length left-padded."""
    if text in ("0x", "0X"):
        return b""
    m = _LENIENT_HEX_RE.fullmatch(text)
    if m is None:
        return None
    digits = m.group(1)
    if len(digits) % 2:
        digits = "0" + digits
    return bytes.fromhex(digits)


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


# ------------------------------------------------------------ value normalisation
#
# abi-utils is much more forgiving than eth_abi (hex strings for bytes32, decimal
# strings for uints, short byte strings that get padded, ...). Each ABI type is
# compiled once into a normaliser that turns JS-acceptable input into the strict
# Python value eth_abi wants, and, for one-word static types, a direct 32-byte
# encoder so large trees of simple leaves skip eth_abi's per-call overhead.

# JavaScript's String.prototype.trim / StringToBigInt whitespace set.
_JS_WHITESPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_STRICT_HEX_RE = re.compile(r"0[xX][0-9a-fA-F]+")
_BIGINT_DEC_RE = re.compile(r"[+-]?[0-9]+")
_BIGINT_PREFIXED_RE = re.compile(r"0(?:[xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)")


def _bytes_value(value: Any) -> bytes:
    """``createBytes``: a byte string, or a *0x-prefixed* hex string (odd length padded)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        if value in ("0x", "0X"):
            return b""
        if _STRICT_HEX_RE.fullmatch(value):
            digits = value[2:]
            if len(digits) % 2:
                digits = "0" + digits
            return bytes.fromhex(digits)
        raise InvalidMerkleInput(f"Expected a bytes-like value, got {value!r}")
    raise InvalidMerkleInput(f"Expected a bytes-like value, got {type(value).__name__}")


def _int_value(value: Any) -> int:
    """``createBigInt``: ints, integral floats, and strings the way ``BigInt()`` parses them."""
    if isinstance(value, bool):
        raise InvalidMerkleInput(f"Invalid number. Expected a valid number value, but received {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip(_JS_WHITESPACE)
        if text == "":
            return 0  # BigInt("") === 0n; odd, but JS accepts it
        if _BIGINT_DEC_RE.fullmatch(text):
            return int(text, 10)
        if _BIGINT_PREFIXED_RE.fullmatch(text):
            return int(text, 0)
        raise InvalidMerkleInput(f"Invalid number. Expected a valid number value, but received {value!r}")
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise InvalidMerkleInput(f"Invalid number. Expected a valid number value, but received {value!r}")
    index = getattr(type(value), "__index__", None)  # numpy integers and friends
    if index is not None:
        return operator.index(value)
    raise InvalidMerkleInput(f"Invalid number. Expected a valid number value, but received {type(value).__name__}")


def _bool_value(value: Any) -> bool:
    if value is True or (isinstance(value, str) and value == "true"):
        return True
    if value is False or (isinstance(value, str) and value == "false"):
        return False
    raise InvalidMerkleInput(
        f'Invalid boolean value. Expected a boolean literal, or the string "true" or "false", but received {value!r}'
    )


def _string_value(value: Any) -> str:
    """UTF-8 text as ``TextEncoder`` produces it.

    Python strings may carry surrogate code points (e.g. from ``json.loads`` of a
    lone ``\\ud800``) that strict UTF-8 refuses; JS would encode a valid pair as
    one character and a lone half as U+FFFD, so we do the same.
    """
    if not isinstance(value, str):
        raise InvalidMerkleInput(f"Value must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _sequence_value(value: Any, what: str) -> Sequence[Any]:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray, memoryview)):
        return value
    raise InvalidMerkleInput(f"Expected a list or tuple for {what}, got {type(value).__name__}")


@dataclass(frozen=True)
class _AbiType:
    canonical: str  # the type name eth_abi understands
    normalize: Callable[[Any], Any]  # JS-lenient value -> strict eth_abi value
    word: Callable[[Any], bytes] | None  # direct encoder for one-word static types


_ARRAY_RE = re.compile(r"(.*)\[([0-9]*)\]")
_FIXED_BYTES_RE = re.compile(r"bytes([0-9]{1,2})")
_NUMBER_RE = re.compile(r"(u?)int([0-9]*)")
_TUPLE_RE = re.compile(r"\((.+)\)")


def _split_tuple(inner: str) -> list[str]:
    """``getTupleElements``: split on top-level commas, trim, drop a trailing empty part."""
    parts: list[str] = []
    current = ""
    depth = 0
    for char in inner:
        if char == "," and depth == 0:
            parts.append(current.strip(_JS_WHITESPACE))
            current = ""
            continue
        current += char
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
    if current.strip(_JS_WHITESPACE):
        parts.append(current.strip(_JS_WHITESPACE))
    return parts


def _uint_type(bits: int) -> _AbiType:
    limit = 1 << bits

    def normalize(value: Any) -> int:
        n = _int_value(value)
        if not 0 <= n < limit:
            raise InvalidMerkleInput(f'Number "{n}" is out of range for type "uint{bits}"')
        return n

    return _AbiType(f"uint{bits}", normalize, lambda v: normalize(v).to_bytes(32, "big"))


def _int_type(bits: int) -> _AbiType:
    low, high = -(1 << (bits - 1)), 1 << (bits - 1)

    def normalize(value: Any) -> int:
        n = _int_value(value)
        if not low <= n < high:
            raise InvalidMerkleInput(f'Number "{n}" is out of range for type "int{bits}"')
        return n

    return _AbiType(f"int{bits}", normalize, lambda v: normalize(v).to_bytes(32, "big", signed=True))


def _fixed_bytes_type(size: int) -> _AbiType:
    def normalize(value: Any) -> bytes:
        raw = _bytes_value(value)
        if len(raw) > size:
            raise InvalidMerkleInput(f"Expected a value of length {size}, but received a value of length {len(raw)}")
        return raw.ljust(size, b"\0")  # abi-utils right-pads short values

    return _AbiType(f"bytes{size}", normalize, lambda v: normalize(v).ljust(32, b"\0"))


def _address_normalize(value: Any) -> bytes:
    raw = _bytes_value(value)
    if len(raw) > 20:
        raise InvalidMerkleInput(
            f"Invalid address value. Expected address to be 20 bytes long, but received {len(raw)} bytes"
        )
    return raw.rjust(20, b"\0")  # unlike bytesN, short addresses are left-padded


def _function_normalize(value: Any) -> bytes:
    """``SolidityFunction``: 24 raw bytes, or ``{address, selector}`` hex strings."""
    if isinstance(value, Mapping):
        if set(value) != {"address", "selector"} or not all(
            isinstance(value[k], str) and _STRICT_HEX_RE.fullmatch(value[k]) for k in ("address", "selector")
        ):
            raise InvalidMerkleInput(f"Invalid Solidity function {value!r}")
        raw = _bytes_value(value["address"]) + _bytes_value(value["selector"])
        if len(raw) > 24:
            raise InvalidMerkleInput(f"Expected a value of length 24, but received a value of length {len(raw)}")
        return raw.ljust(24, b"\0")
    if isinstance(value, str) and not _STRICT_HEX_RE.fullmatch(value):
        raise InvalidMerkleInput(f"Invalid Solidity function {value!r}")
    raw = _bytes_value(value)
    if len(raw) != 24:
        raise InvalidMerkleInput(
            f"Invalid Solidity function. Expected function to be 24 bytes long, but received {len(raw)} bytes"
        )
    return raw


def _array_type(inner: _AbiType, length: int | None) -> _AbiType:
    suffix = "" if length is None else str(length)

    def normalize(value: Any) -> list[Any]:
        seq = _sequence_value(value, f"{inner.canonical}[{suffix}]")
        if length is not None and len(seq) != length:
            raise InvalidMerkleInput(
                f"Array length does not match type length. Expected a length of {length}, but received {len(seq)}"
            )
        return [inner.normalize(v) for v in seq]

    return _AbiType(f"{inner.canonical}[{suffix}]", normalize, None)


def _tuple_type(elements: list[_AbiType]) -> _AbiType:
    canonical = "(" + ",".join(e.canonical for e in elements) + ")"

    def normalize(value: Any) -> tuple[Any, ...]:
        seq = _sequence_value(value, canonical)
        if len(seq) != len(elements):
            raise InvalidMerkleInput(
                f"The number of types ({len(elements)}) does not match the number of values ({len(seq)})"
            )
        return tuple(e.normalize(v) for e, v in zip(elements, seq))

    return _AbiType(canonical, normalize, None)


@lru_cache(maxsize=256)
def _parse_type(name: str) -> _AbiType:
    """Resolve a type name in the same precedence order as abi-utils' ``getParser``."""
    if name == "address":
        return _AbiType("address", _address_normalize, lambda v: _address_normalize(v).rjust(32, b"\0"))
    m = _ARRAY_RE.fullmatch(name)
    if m and m.group(1):
        length = int(m.group(2)) if m.group(2) else None
        if length == 0:
            # Deliberate divergence: abi-utils lays "T[0]" out as a hybrid of static and
            # dynamic arrays that no ABI decoder (or Solidity, which forbids T[0]) reads.
            raise InvalidMerkleInput(f'Zero-length array type "{name}" is not a valid ABI type')
        return _array_type(_parse_type(m.group(1)), length)
    if name == "bool":
        return _AbiType("bool", _bool_value, lambda v: b"\0" * 31 + (b"\1" if _bool_value(v) else b"\0"))
    if name == "bytes":
        return _AbiType("bytes", _bytes_value, None)
    m = _FIXED_BYTES_RE.fullmatch(name)
    if m:
        size = int(m.group(1))
        if not 1 <= size <= 32:
            raise InvalidMerkleInput(f'Invalid byte length. Expected a number between 1 and 32, but received "{name}"')
        return _fixed_bytes_type(size)
    if name == "function":
        return _AbiType("function", _function_normalize, lambda v: _function_normalize(v).ljust(32, b"\0"))
    m = _NUMBER_RE.fullmatch(name)
    if m:
        bits = int(m.group(2)) if m.group(2) else 256
        if not 8 <= bits <= 256 or bits % 8:
            raise InvalidMerkleInput(f'Invalid number length in "{name}": expected a multiple of 8 from 8 to 256')
        return _uint_type(bits) if m.group(1) else _int_type(bits)
    if name == "string":
        return _AbiType("string", _string_value, None)
    m = _TUPLE_RE.fullmatch(name)
    if m:
        return _tuple_type([_parse_type(part) for part in _split_tuple(m.group(1))])
    raise InvalidMerkleInput(f'The type "{name}" is not supported')


class _LeafCodec:
    """A compiled leaf encoding: hashing a leaf is the hot loop of tree building."""

    __slots__ = ("types", "_parsed", "_canonical", "_words")

    def __init__(self, types: tuple[str, ...]):
        self.types = types
        self._parsed = [_parse_type(t) for t in types]
        self._canonical = [p.canonical for p in self._parsed]
        words = [p.word for p in self._parsed]
        # When every field is a single static word, abi.encode is plain concatenation.
        self._words = words if all(w is not None for w in words) else None

    def encode(self, value: Any) -> bytes:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise InvalidMerkleInput("Leaf values cannot be numbers")
        seq = _sequence_value(value, "a leaf value")
        if len(seq) != len(self._parsed):
            raise InvalidMerkleInput(
                f"The number of types ({len(self._parsed)}) does not match the number of values ({len(seq)})"
            )
        words = self._words
        if words is not None:
            return b"".join([w(v) for w, v in zip(words, seq)])  # type: ignore[misc]
        normalized = [p.normalize(v) for p, v in zip(self._parsed, seq)]
        try:
            return _abi_encode(self._canonical, normalized)
        except Exception as exc:  # eth_abi has no single base exception for encoding errors
            raise InvalidMerkleInput(f"Unable to encode value: {exc}") from exc

    def leaf_hash(self, value: Any) -> bytes:
        return _keccak(_keccak(self.encode(value)))


@lru_cache(maxsize=64)
def _codec(types: tuple[str, ...]) -> _LeafCodec:
    return _LeafCodec(types)


def _codec_for(leaf_encoding: Sequence[str]) -> _LeafCodec:
    if isinstance(leaf_encoding, str) or not isinstance(leaf_encoding, Iterable):
        raise InvalidMerkleInput("Expected leaf encoding as a list of ABI type names")
    types = tuple(leaf_encoding)
    if not all(isinstance(t, str) for t in types):
        raise InvalidMerkleInput(f"ABI type names must be strings, got {list(types)!r}")
    return _codec(types)


def leaf_hash(leaf_encoding: Sequence[str], values: Sequence[Any]) -> bytes:
    """Hash one leaf exactly as ``standardLeafHash`` / an on-chain verifier does.

    The inner hash makes the preimage 32 bytes, so a 64-byte leaf encoding can
    never be passed off as a pair of internal nodes (second-preimage attack).
    """
    return _codec_for(leaf_encoding).leaf_hash(values)


# ------------------------------------------------------------- proof processing


def process_proof(leaf: bytes | str, proof: Iterable[bytes | str]) -> bytes:
    """Root implied by ``leaf`` and ``proof``, as ``MerkleProof.processProof`` computes it."""
    node = _node(leaf)
    for sibling in [_node(p) for p in proof]:
        node = _hash_pair(node, sibling)
    return node


def verify_proof(root: bytes | str, leaf: bytes | str, proof: Iterable[bytes | str]) -> bool:
    """``MerkleProof.verify``: malformed nodes raise rather than return False,
    because they are a caller bug, not a failed proof."""
    return _node(root, "Merkle root") == process_proof(leaf, proof)


def process_multiproof(
    leaves: Sequence[bytes | str], proof: Sequence[bytes | str], proof_flags: Sequence[bool]
) -> bytes:
    """Root implied by a multiproof, with ``MerkleProof.processMultiProof`` semantics.

    Every input on which Solidity reverts (length mismatch, proof items left
    over or missing) raises ``InvalidMultiproof`` here, so a proof we accept is
    one the contract accepts.
    """
    leaf_nodes = [_node(x, "Multiproof leaf") for x in leaves]
    proof_nodes = [_node(x, "Multiproof node") for x in proof]
    flags = list(proof_flags)
    if not all(isinstance(f, bool) for f in flags):
        raise InvalidMultiproof("Multiproof flags must be booleans")
    if len(proof_nodes) < flags.count(False):
        raise InvalidMultiproof("Invalid multiproof format")
    if len(leaf_nodes) + len(proof_nodes) != len(flags) + 1:
        raise InvalidMultiproof("Provided leaves and multiproof are not compatible")
    queue = deque(leaf_nodes)
    popleft, append, pair = queue.popleft, queue.append, _hash_pair  # bound once: ~30,000 steps a block
    next_proof = 0
    for flag in flags:
        if flag:
            if len(queue) < 2:
                raise InvalidMultiproof("Invalid multiproof: ran out of nodes to combine")
            append(pair(popleft(), popleft()))
        else:
            if not queue:
                raise InvalidMultiproof("Invalid multiproof: ran out of nodes to combine")
            append(pair(popleft(), proof_nodes[next_proof]))
            next_proof += 1
    if len(queue) + len(proof_nodes) - next_proof != 1:
        raise InvalidMultiproof("Invalid multiproof: proof nodes left unused")
    return queue.pop() if queue else proof_nodes[next_proof]


def verify_multiproof(
    root: bytes | str,
    leaves: Sequence[bytes | str],
    proof: Sequence[bytes | str],
    proof_flags: Sequence[bool],
) -> bool:
    """``MerkleProof.multiProofVerify``; structurally invalid proofs raise (Solidity reverts)."""
    return _node(root, "Merkle root") == process_multiproof(leaves, proof, proof_flags)


# ----------------------------------------------------------- array tree layout
#
# The tree is a complete binary tree in an array: node i has children 2i+1 and
# 2i+2, leaves fill the tail in reverse order. Proof shape and dump contents
# both depend on this layout, so it is reproduced exactly.


def _sibling(i: int) -> int:
    return i + 1 if i % 2 else i - 1


def _is_leaf_node(tree: list[bytes], i: int) -> bool:
    return 0 <= i < len(tree) and 2 * i + 1 >= len(tree)


def _make_tree(leaves: list[bytes]) -> list[bytes]:
    if not leaves:
        raise InvalidMerkleInput("Expected non-zero number of leaves")
    if _native is not None:
        tree: list[bytes] | None = _native.make_tree(leaves)  # None: a leaf is not 32 bytes
        if tree is not None:
            return tree
    return _make_tree_py(leaves)


def _make_tree_py(leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    size = 2 * n - 1
    tree: list[bytes] = [b""] * (size - n) + leaves[::-1]
    pair = _hash_pair
    for i in range(size - n - 1, -1, -1):
        tree[i] = pair(tree[2 * i + 1], tree[2 * i + 2])
    return tree


def _tree_proof(tree: list[bytes], index: int) -> list[bytes]:
    if not _is_leaf_node(tree, index):
        raise InvalidMerkleInput("Index is not a leaf")
    proof = []
    while index > 0:
        proof.append(tree[_sibling(index)])
        index = (index - 1) // 2
    return proof


def _tree_multiproof(tree: list[bytes], indices: list[int]) -> tuple[list[bytes], list[bytes], list[bool]]:
    for i in indices:
        if not _is_leaf_node(tree, i):
            raise InvalidMerkleInput("Index is not a leaf")
    # Deepest-first order is what lets the verifier consume its queue front to back.
    indices = sorted(indices, reverse=True)
    if any(indices[k] == indices[k - 1] for k in range(1, len(indices))):
        raise InvalidMerkleInput("Cannot prove duplicated index")
    stack = deque(indices)
    proof: list[bytes] = []
    flags: list[bool] = []
    while stack and stack[0] > 0:
        j = stack.popleft()
        s = _sibling(j)
        if stack and stack[0] == s:
            flags.append(True)
            stack.popleft()
        else:
            flags.append(False)
            proof.append(tree[s])
        stack.append((j - 1) // 2)
    if not indices:
        proof.append(tree[0])
    return [tree[i] for i in indices], proof, flags


def _is_valid_tree(tree: list[bytes]) -> bool:
    size = len(tree)
    for i, node in enumerate(tree):
        left, right = 2 * i + 1, 2 * i + 2
        if right >= size:
            if left < size:
                return False
        elif node != _hash_pair(tree[left], tree[right]):
            return False
    return size > 0


# ----------------------------------------------------------------- public tree


def _jsonable(value: Any) -> Any:
    """A JSON-ready stand-in for a leaf value that abi-utils encodes identically.

    Lets ``json.dumps(tree.dump())`` always work and lets node load the result
    without losing precision; strings and small ints pass through untouched, so
    dumps of JSON-born values round-trip byte for byte.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex()
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return value if -_JS_MAX_SAFE_INTEGER <= value <= _JS_MAX_SAFE_INTEGER else str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_jsonable(v) for v in value]
    index = getattr(type(value), "__index__", None)
    if index is not None:
        return _jsonable(operator.index(value))
    return value


def _as_index(x: Any) -> int | None:
    """An integer (numpy ones included) is an index; bools and sequences are not."""
    if isinstance(x, bool) or isinstance(x, Sequence):
        return None
    if isinstance(x, int):
        return x
    return operator.index(x) if hasattr(type(x), "__index__") else None


@dataclass(frozen=True)
class MultiProof:
    """Proof for several leaves at once, in the JS ``{leaves, proof, proofFlags}`` shape.

    ``leaves`` holds leaf *values* (not hashes) in the order the verifier must
    consume them, which is generally not the order they were requested in.
    """

    leaves: list[Any]
    proof: list[bytes]
    proof_flags: list[bool]

    def to_json(self) -> dict[str, Any]:
        """The exact object the JS library returns, ready for ``json.dumps``."""
        return {
            "leaves": [_jsonable(v) for v in self.leaves],
            "proof": [_hex(p) for p in self.proof],
            "proofFlags": list(self.proof_flags),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "MultiProof":
        try:
            return cls(list(data["leaves"]), [_node(p) for p in data["proof"]], list(data["proofFlags"]))
        except (KeyError, TypeError) as exc:
            raise InvalidMultiproof(f"Malformed multiproof: {exc}") from None


class StandardMerkleTree:
    """OpenZeppelin's standard tree over ABI-encoded leaves.

    Build with :meth:`of` or :meth:`load`; the constructor is internal because an
    instance must always satisfy the tree invariants those two establish.

    Leaves are addressed either by *index* (position in :attr:`values`, i.e. the
    caller's original order, as in JS) or by *value* (looked up by hash).
    """

    __slots__ = ("_tree", "_values", "_tree_indices", "_leaf_encoding", "_codec", "_lookup")

    def __init__(
        self,
        tree: list[bytes],
        values: Sequence[Any],
        tree_indices: list[int],
        leaf_encoding: Sequence[str],
    ) -> None:
        self._tree = tree
        self._values = tuple(values)
        self._tree_indices = tree_indices
        self._leaf_encoding = tuple(leaf_encoding)
        self._codec = _codec_for(self._leaf_encoding)
        # Later duplicates win, exactly like the JS Object.fromEntries lookup.
        self._lookup = {tree[t]: i for i, t in enumerate(tree_indices)}

    # ---- construction

    @classmethod
    def of(
        cls, values: Iterable[Sequence[Any]], leaf_encoding: Sequence[str], sort_leaves: bool = True
    ) -> "StandardMerkleTree":
        """Build a tree from leaf values.

        ``sort_leaves`` (on by default, as in JS) orders leaves by hash. The JS
        library recommends it because it makes a multiproof's leaf order simply
        ascending hash order, which a contract can check without knowing tree
        positions; turn it off only when leaf positions themselves carry meaning.
        """
        codec = _codec_for(leaf_encoding)
        values = tuple(values)
        if not values:
            raise InvalidMerkleInput("Expected non-zero number of leaves")
        hashes: list[bytes] = []
        append = hashes.append
        leaf_hash_of = codec.leaf_hash
        try:
            for value in values:
                append(leaf_hash_of(value))
        except InvalidMerkleInput as exc:  # the failing value is the one after the hashed ones
            raise type(exc)(f"values[{len(hashes)}]: {exc}") from exc
        return cls.from_leaf_hashes(hashes, values, leaf_encoding, sort_leaves)

    @classmethod
    def from_leaf_hashes(
        cls, hashes: list[bytes], values: Sequence[Sequence[Any]], leaf_encoding: Sequence[str], sort_leaves: bool = True
    ) -> "StandardMerkleTree":
        """The tree `of` builds, from leaf hashes the caller already computed (``hashes[i]`` must be
        ``leaf_hash`` of ``values[i]`` under ``leaf_encoding``): for callers that encode a known
        fixed layout faster than the generic codec (``core.block.frames_tree``)."""
        n = len(values)
        if n != len(hashes):
            raise InvalidMerkleInput(f"{len(hashes)} leaf hashes for {n} values")
        if sort_leaves and n and _native is not None:
            # The sort, the tree and the indices below in one call (None: a hash off 32 bytes).
            built: tuple[list[bytes], list[int]] | None = _native.sorted_tree(hashes)
            if built is not None:
                return cls(built[0], tuple(values), built[1], leaf_encoding)
        # A stable sort, like V8's Array.prototype.sort, so equal leaves keep input order.
        order = sorted(range(n), key=hashes.__getitem__) if sort_leaves else range(n)
        tree = _make_tree([hashes[i] for i in order])
        last = len(tree) - 1
        tree_indices = [0] * n
        for leaf_index, value_index in enumerate(order):
            tree_indices[value_index] = last - leaf_index
        return cls(tree, tuple(values), tree_indices, leaf_encoding)

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> "StandardMerkleTree":
        """Rebuild a tree from a ``standard-v1`` dump (ours or the JS library's).

        Every hash is rechecked, since a dump is untrusted input and a forged one
        would otherwise yield proofs for a root nobody committed to.
        """
        if not isinstance(data, Mapping):
            raise InvalidMerkleInput("Expected a dump object")
        fmt = data.get("format")
        if fmt != DUMP_FORMAT:
            raise InvalidMerkleInput(f"Unknown format '{fmt}'")
        leaf_encoding = data.get("leafEncoding")
        if leaf_encoding is None:
            raise InvalidMerkleInput("Expected leaf encoding")
        try:
            tree = [_node(node) for node in data["tree"]]
            entries = list(data["values"])
            values = [entry["value"] for entry in entries]
            tree_indices = [entry["treeIndex"] for entry in entries]
        except (KeyError, TypeError) as exc:
            raise InvalidMerkleInput(f"Malformed dump: {exc}") from None
        for t in tree_indices:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < len(tree):
                raise InvalidMerkleTree(f"Invalid treeIndex {t!r}")
        self = cls(tree, values, tree_indices, leaf_encoding)
        for i in range(len(values)):
            self._validate_value_at(i)
        if not _is_valid_tree(tree):
            raise InvalidMerkleTree("Merkle tree is invalid")
        return self

    def dump(self) -> dict[str, Any]:
        """A ``standard-v1`` object that ``StandardMerkleTree.load`` accepts in JS and here."""
        return {
            "format": DUMP_FORMAT,
            "leafEncoding": list(self._leaf_encoding),
            "tree": [_hex(node) for node in self._tree],
            "values": [
                {"value": _jsonable(value), "treeIndex": t} for value, t in zip(self._values, self._tree_indices)
            ],
        }

    # ---- accessors

    @property
    def root(self) -> bytes:
        return self._tree[0]

    @property
    def root_hex(self) -> str:
        return _hex(self._tree[0])

    @property
    def leaf_encoding(self) -> tuple[str, ...]:
        return self._leaf_encoding

    @property
    def values(self) -> tuple[Any, ...]:
        """Leaf values in the order they were given, independent of leaf sorting."""
        return self._values

    def __len__(self) -> int:
        return len(self._values)

    def whole_tree_root(self, leaf_hashes: Sequence[bytes], proof: Sequence[bytes], proof_flags: Sequence[bool]) -> bytes | None:
        """The root a multiproof of *every* leaf implies, without hashing, when it is exactly this
        tree's own (`get_multiproof` of all indices: the leaves in the tree's order, no proof
        nodes, every flag set): processing it recombines the very pairs this tree was built from,
        so the result is this root. None for any other multiproof: process it
        (`process_multiproof`). A verifier holding the verified tree of a block whose frames are
        all presented spares one hash per frame (tests/unit/test_merkle.py checks the identity)."""
        n = len(self._values)
        if proof or len(leaf_hashes) != n or len(proof_flags) != n - 1 or not all(f is True for f in proof_flags):
            return None
        if list(leaf_hashes) != self._leaves_deepest_first():
            return None
        return self._tree[0]

    def _leaves_deepest_first(self) -> list[bytes]:
        """The leaf hashes in the order a multiproof of every leaf lists them: the tree's leaf
        slots from the end of the array (`_tree_multiproof` visits indices deepest first)."""
        return self._tree[:-len(self._values) - 1:-1]

    def leaf_hash(self, index_or_value: Any) -> bytes:
        """The leaf hash an on-chain verifier would receive for this value."""
        return self._leaf_hash(index_or_value)

    def index_of(self, value: Sequence[Any]) -> int:
        """Position in :attr:`values` of the leaf whose hash matches ``value``.

        Matching is by hash, so ``"0x01"`` and ``1`` find the same uint leaf.
        With duplicate leaves the last occurrence wins, as in JS.
        """
        try:
            return self._lookup[self._codec.leaf_hash(value)]
        except KeyError:
            raise LeafNotInTree("Leaf is not in tree") from None

    # ---- proofs

    def get_proof(self, index_or_value: Any) -> list[bytes]:
        """Sibling hashes from the leaf up to (excluding) the root."""
        value_index = self._resolve(index_or_value)
        self._validate_value_at(value_index)
        tree_index = self._tree_indices[value_index]
        proof = _tree_proof(self._tree, tree_index)
        if process_proof(self._tree[tree_index], proof) != self.root:  # cheap guard against corruption
            raise InvalidMerkleTree("Unable to prove value")
        return proof

    def get_multiproof(self, indices_or_values: Iterable[Any]) -> MultiProof:
        """One proof for several leaves; cheaper on chain than separate proofs."""
        value_indices = [self._resolve(x) for x in indices_or_values]
        for i in value_indices:
            self._validate_value_at(i)
        leaves, proof, flags = _tree_multiproof(self._tree, [self._tree_indices[i] for i in value_indices])
        if process_multiproof(leaves, proof, flags) != self.root:
            raise InvalidMerkleTree("Unable to prove values")
        return MultiProof([self._values[self._lookup[h]] for h in leaves], proof, flags)

    def whole_multiproof(self) -> tuple[MultiProof, list[bytes]]:
        """`get_multiproof` of every leaf, and the leaves' hashes in the proof's order, read off
        the tree: the leaves deepest first (the tree's leaf slots from the end), no proof nodes,
        every flag set. What a block whose frames are all presented needs, without walking the
        proof out of the tree or looking each leaf up by hash (tests/unit/test_merkle.py keeps it
        equal to `get_multiproof`)."""
        n = len(self._values)
        last = len(self._tree) - 1
        in_proof_order: list[Any] = [None] * n
        for value_index, tree_index in enumerate(self._tree_indices):
            in_proof_order[last - tree_index] = self._values[value_index]
        return MultiProof(in_proof_order, [], [True] * (n - 1)), self._leaves_deepest_first()

    def verify(self, index_or_value: Any, proof: Iterable[bytes | str]) -> bool:
        return process_proof(self._leaf_hash(index_or_value), proof) == self.root

    def verify_multiproof(self, multiproof: MultiProof) -> bool:
        """Check a multiproof whose ``leaves`` are values or indices into this tree."""
        hashes = [self._leaf_hash(x) for x in multiproof.leaves]
        return process_multiproof(hashes, multiproof.proof, multiproof.proof_flags) == self.root

    @staticmethod
    def verify_with_root(
        root: bytes | str, leaf_encoding: Sequence[str], value: Sequence[Any], proof: Iterable[bytes | str]
    ) -> bool:
        """Verify without the tree, as a third party holding only the root would."""
        return verify_proof(root, leaf_hash(leaf_encoding, value), proof)

    @staticmethod
    def verify_multiproof_with_root(root: bytes | str, leaf_encoding: Sequence[str], multiproof: MultiProof) -> bool:
        codec = _codec_for(leaf_encoding)
        hashes = [codec.leaf_hash(v) for v in multiproof.leaves]
        return verify_multiproof(root, hashes, multiproof.proof, multiproof.proof_flags)

    # ---- internals

    def _resolve(self, index_or_value: Any) -> int:
        """JS treats a number as an index and anything else as a value; so do we."""
        index = _as_index(index_or_value)
        return self.index_of(index_or_value) if index is None else index

    def _validate_value_at(self, index: int) -> None:
        if not 0 <= index < len(self._values):
            raise InvalidMerkleInput("Index out of bounds")
        if self._tree[self._tree_indices[index]] != self._codec.leaf_hash(self._values[index]):
            raise InvalidMerkleTree("Merkle tree does not contain the expected value")

    def _leaf_hash(self, index_or_value: Any) -> bytes:
        index = _as_index(index_or_value)
        if index is None:
            return self._codec.leaf_hash(index_or_value)
        if not 0 <= index < len(self._values):
            raise InvalidMerkleInput("Index out of bounds")
        return self._tree[self._tree_indices[index]]

    def __repr__(self) -> str:
        encoding = list(self._leaf_encoding)
        return f"StandardMerkleTree(root={self.root_hex}, leaves={len(self)}, leaf_encoding={encoding})"
