"""Batch anchoring, pure: the batch manifest, the batch tree, the typed data nodes sign, and the
per-camera hash-chain rule every signing node and every verifier applies.

In batch mode one transaction (`BatchLedger.anchorBatch`) anchors every camera's block header of a
time window at once:

* the **batch manifest** lists every block header of the window (canonical JSON below), stored
  in the content store under the CIDv1 (raw, sha2-256) of its bytes; its SHA-256 is the batch's
  ``manifestDigest``;
* the **batch root** is an OpenZeppelin StandardMerkleTree root over leaves ``(bytes32 blockHash)``
  (SPEC.md "batch leaf values"), one per header, block hash = ``BlockHeader.hash``;
* the nodes sign the EIP-712 typed data ``Batch(uint64 windowStartMs,uint64 windowEndMs,
  bytes32 batchRoot,bytes32 manifestDigest,uint32 blockCount,bytes32 prevBatchRoot)`` under the
  domain (name "FrameLedger BatchLedger", version "1", chainId, verifyingContract), and one node
  sends the quorum's signatures, ascending by signer address, with the batch.

The contract checks the batch's own rules (window order and limits, the link to the previous batch
root, quorum of distinct registered signers). It cannot check each camera's hash chain without a
storage write per camera, so `check_batch` is that rule: a node signs only a manifest for which it
returns no problem, and a verifier re-runs it over the anchored manifests. No I/O here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, Iterable, Mapping, Sequence

from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from .block import ZERO32, BlockHeader
from .cid import cid_for_bytes
from .merkle import StandardMerkleTree

BATCH_MANIFEST_FORMAT = "frameledger.batch/1"
BLOCK_LEAF_ENCODING: tuple[str, ...] = ("bytes32",)
DOMAIN_NAME = "FrameLedger BatchLedger"
DOMAIN_VERSION = "1"
# One block per camera per window: 10,000 cameras is ten times the largest consortium the gas
# benchmark measures. A header is ~480 bytes of JSON (bench gas), so 10,000 stay under 5 MB; the
# manifest limit bounds what a parser reads before it knows the count.
MAX_BLOCKS_PER_BATCH = 10_000
MAX_BATCH_MANIFEST_BYTES = 8 * 1024 * 1024
UINT64_MAX = 2**64 - 1

BATCH_TYPE: list[dict[str, str]] = [
    {"name": "windowStartMs", "type": "uint64"},
    {"name": "windowEndMs", "type": "uint64"},
    {"name": "batchRoot", "type": "bytes32"},
    {"name": "manifestDigest", "type": "bytes32"},
    {"name": "blockCount", "type": "uint32"},
    {"name": "prevBatchRoot", "type": "bytes32"},
]
_EIP712_DOMAIN = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_MANIFEST_KEYS = {"format", "windowStartMs", "windowEndMs", "prevBatchRoot", "blocks"}


class BatchFormatError(ValueError):
    """The bytes are not a canonical batch manifest this version understands."""


@dataclass(frozen=True)
class BatchManifest:
    """Every camera block header of one window, in ascending camera id order (one per camera),
    and the root of the batch anchored before it (zero for the first)."""

    window_start_ms: int
    window_end_ms: int
    prev_batch_root: bytes
    headers: tuple[BlockHeader, ...]

    @classmethod
    def of(cls, *, window_start_ms: int, window_end_ms: int, prev_batch_root: bytes,
           headers: Iterable[BlockHeader]) -> "BatchManifest":
        """A manifest with its headers put in canonical (camera id) order."""
        return cls(window_start_ms=window_start_ms, window_end_ms=window_end_ms, prev_batch_root=prev_batch_root,
                   headers=tuple(sorted(headers, key=lambda h: h.camera_id)))

    def to_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, no whitespace, headers as `BlockHeader.to_json`."""
        doc = {
            "format": BATCH_MANIFEST_FORMAT,
            "windowStartMs": self.window_start_ms,
            "windowEndMs": self.window_end_ms,
            "prevBatchRoot": "0x" + self.prev_batch_root.hex(),
            "blocks": [h.to_json() for h in self.headers],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @property
    def digest(self) -> bytes:
        """SHA-256 of the canonical bytes: the batch's manifestDigest."""
        return hashlib.sha256(self.to_bytes()).digest()

    @property
    def cid(self) -> str:
        """Where the content store keeps it: CIDv1 raw sha2-256 of the canonical bytes."""
        return cid_for_bytes(self.to_bytes())

    @property
    def block_hashes(self) -> list[bytes]:
        return [h.hash for h in self.headers]

    @classmethod
    def from_bytes(cls, data: bytes) -> "BatchManifest":
        """Strict: the size and count limits, exact keys, well-typed headers in canonical order,
        and bytes that re-serialise identically (so one batch has one digest)."""
        if len(data) > MAX_BATCH_MANIFEST_BYTES:
            raise BatchFormatError(f"batch manifest of {len(data)} bytes exceeds {MAX_BATCH_MANIFEST_BYTES}")
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BatchFormatError(f"batch manifest is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != BATCH_MANIFEST_FORMAT or set(doc) != _MANIFEST_KEYS:
            raise BatchFormatError(f"not a {BATCH_MANIFEST_FORMAT} document")
        blocks = doc["blocks"]
        if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS_PER_BATCH:
            raise BatchFormatError(f"blocks must be a list of at most {MAX_BLOCKS_PER_BATCH} headers")
        try:
            manifest = cls(
                window_start_ms=_uint64(doc["windowStartMs"]),
                window_end_ms=_uint64(doc["windowEndMs"]),
                prev_batch_root=_hex32(doc["prevBatchRoot"]),
                headers=tuple(BlockHeader.from_json(_dict(b)) for b in blocks),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise BatchFormatError(f"malformed batch manifest: {exc!r}") from None
        ids = [h.camera_id for h in manifest.headers]
        if ids != sorted(ids):
            raise BatchFormatError("batch manifest headers are not in canonical (ascending camera id) order")
        if manifest.to_bytes() != bytes(data):
            raise BatchFormatError("batch manifest is not in canonical form (order, spelling or whitespace)")
        return manifest


def _dict(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ValueError(f"expected a header object, got {type(v).__name__}")
    return v


def _uint64(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= UINT64_MAX:
        raise ValueError(f"expected a uint64, got {v!r}")
    return int(v)


def _hex32(v: Any) -> bytes:
    if not isinstance(v, str) or not v.startswith("0x") or len(v) != 66:
        raise ValueError(f"expected 0x and 64 hex digits, got {v!r}")
    return bytes.fromhex(v[2:])


# ---------------------------------------------------------------- tree and typed data

def batch_tree(block_hashes: Sequence[bytes]) -> StandardMerkleTree:
    """The StandardMerkleTree over leaves (bytes32 blockHash); at least one hash."""
    if not block_hashes:
        raise ValueError("a batch tree needs at least one block hash")
    return StandardMerkleTree.of([(h,) for h in block_hashes], list(BLOCK_LEAF_ENCODING))


def block_proof(tree: StandardMerkleTree, block_hash: bytes) -> list[bytes]:
    """The proof of one block hash in a batch tree (for `BatchLedger.verifyBlockInBatch`)."""
    return tree.get_proof((block_hash,))


@dataclass(frozen=True)
class Batch:
    """Mirror of `IBatchLedger.Batch`; field order is part of the EIP-712 type."""

    window_start_ms: int
    window_end_ms: int
    batch_root: bytes
    manifest_digest: bytes
    block_count: int
    prev_batch_root: bytes

    def as_tuple(self) -> tuple[int, int, bytes, bytes, int, bytes]:
        return (self.window_start_ms, self.window_end_ms, self.batch_root, self.manifest_digest, self.block_count,
                self.prev_batch_root)

    def as_message(self) -> dict[str, Any]:
        return dict(zip([f["name"] for f in BATCH_TYPE], self.as_tuple()))

    @classmethod
    def of_manifest(cls, manifest: BatchManifest) -> "Batch":
        """The batch a manifest makes: its window, tree root, digest, count and previous root."""
        return cls(window_start_ms=manifest.window_start_ms, window_end_ms=manifest.window_end_ms,
                   batch_root=batch_tree(manifest.block_hashes).root, manifest_digest=manifest.digest,
                   block_count=len(manifest.headers), prev_batch_root=manifest.prev_batch_root)


@dataclass(frozen=True)
class BatchDomain:
    """The EIP-712 domain of one BatchLedger deployment."""

    chain_id: int
    verifying_contract: str

    def as_json(self) -> dict[str, Any]:
        return {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": self.chain_id,
                "verifyingContract": to_checksum_address(self.verifying_contract)}


def batch_typed_data(domain: BatchDomain, batch: Batch) -> dict[str, Any]:
    """The full EIP-712 document (eth_signTypedData_v4 input) of a batch."""
    return {"types": {"EIP712Domain": _EIP712_DOMAIN, "Batch": BATCH_TYPE}, "primaryType": "Batch",
            "domain": domain.as_json(), "message": batch.as_message()}


def batch_digest(domain: BatchDomain, batch: Batch) -> bytes:
    """keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(batch)): what `BatchLedger.hashBatch` returns."""
    signable = encode_typed_data(full_message=batch_typed_data(domain, batch))
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign_batch(private_key: str | bytes, domain: BatchDomain, batch: Batch) -> bytes:
    """A node's 65-byte (r ‖ s ‖ v) signature of a batch."""
    from eth_account import Account  # local: only signing needs the account machinery

    return bytes(Account.sign_typed_data(private_key, full_message=batch_typed_data(domain, batch)).signature)


def recover_batch_signer(domain: BatchDomain, batch: Batch, signature: bytes) -> str:
    """The checksum address that signed a batch (ValueError for a malformed signature)."""
    from eth_account import Account

    try:
        signable = encode_typed_data(full_message=batch_typed_data(domain, batch))
        return str(Account.recover_message(signable, signature=signature))
    except Exception as exc:  # eth-keys raises several types for bad r/s/v
        raise ValueError(f"not a valid signature: {exc}") from None


def order_signatures(domain: BatchDomain, batch: Batch, signatures: Iterable[bytes]) -> list[bytes]:
    """The signatures as `anchorBatch` takes them: one per signer, ascending by signer address.
    A second signature by the same signer is dropped; a malformed one raises ValueError."""
    by_signer: dict[int, bytes] = {}
    for sig in signatures:
        by_signer.setdefault(int(recover_batch_signer(domain, batch, sig), 16), sig)
    return [by_signer[k] for k in sorted(by_signer)]


# ---------------------------------------------------------------- the per-camera chain rule

@dataclass(frozen=True)
class Tip:
    """A camera's last anchored block: what its next header must link to. For a camera with no
    block yet: its head block hash, height 0, window end 0 (as `VideoLedger.tip`)."""

    block_hash: bytes
    height: int
    window_end_ms: int


class BatchProblem(Enum):
    EMPTY = "empty"                            # no header at all
    TOO_MANY_BLOCKS = "too-many-blocks"        # more than MAX_BLOCKS_PER_BATCH
    BAD_WINDOW = "bad-window"                  # batch window empty or reversed
    NOT_CANONICAL = "not-canonical"            # headers not in ascending camera id order
    DUPLICATE_CAMERA = "duplicate-camera"      # two headers of one camera
    UNKNOWN_CAMERA = "unknown-camera"          # no tip for the camera (not whitelisted, or revoked)
    BROKEN_LINK = "broken-link"                # prevHash is not the camera's last anchored block
    WRONG_HEIGHT = "wrong-height"              # height is not the previous one + 1
    TIME_NOT_CONTINUOUS = "time-not-continuous"  # starts before the camera's previous window ended
    BAD_HEADER_WINDOW = "bad-header-window"    # header window empty or reversed
    OUTSIDE_BATCH_WINDOW = "outside-batch-window"  # header window not inside the batch window
    BAD_FRAMES_ROOT = "bad-frames-root"        # frameCount 0 with a root, or frames without one
    ROOT_MISMATCH = "root-mismatch"            # batchRoot is not the tree of the headers
    COUNT_MISMATCH = "count-mismatch"          # blockCount is not the number of headers
    DIGEST_MISMATCH = "digest-mismatch"        # manifestDigest is not the manifest's SHA-256
    BATCH_MISMATCH = "batch-mismatch"          # window or prevBatchRoot differ from the manifest's


@dataclass(frozen=True)
class Finding:
    problem: BatchProblem
    camera_id: bytes | None = None
    detail: str = ""


def check_batch(manifest: BatchManifest, tips: Mapping[bytes, Tip], batch: Batch | None = None) -> list[Finding]:
    """Everything wrong with a batch manifest given each camera's tip (empty: sign it). With
    `batch`, also that the signed/anchored batch is the one this manifest makes."""
    found: list[Finding] = []
    if not manifest.headers:
        found.append(Finding(BatchProblem.EMPTY))
    if len(manifest.headers) > MAX_BLOCKS_PER_BATCH:
        found.append(Finding(BatchProblem.TOO_MANY_BLOCKS, detail=f"{len(manifest.headers)} > {MAX_BLOCKS_PER_BATCH}"))
    if manifest.window_end_ms <= manifest.window_start_ms:
        found.append(Finding(BatchProblem.BAD_WINDOW, detail=f"[{manifest.window_start_ms}, {manifest.window_end_ms})"))
    ids = [h.camera_id for h in manifest.headers]
    if ids != sorted(ids):
        found.append(Finding(BatchProblem.NOT_CANONICAL))
    seen: set[bytes] = set()
    for header in manifest.headers:
        if header.camera_id in seen:
            found.append(Finding(BatchProblem.DUPLICATE_CAMERA, header.camera_id))
            continue
        seen.add(header.camera_id)
        found.extend(_check_header(manifest, header, tips.get(header.camera_id)))
    if batch is not None and manifest.headers:
        found.extend(_check_against(manifest, batch))
    return found


def _check_header(manifest: BatchManifest, h: BlockHeader, tip: Tip | None) -> list[Finding]:
    cam = h.camera_id
    out: list[Finding] = []
    if h.window_end_ms <= h.window_start_ms:
        out.append(Finding(BatchProblem.BAD_HEADER_WINDOW, cam, f"[{h.window_start_ms}, {h.window_end_ms})"))
    if h.window_start_ms < manifest.window_start_ms or h.window_end_ms > manifest.window_end_ms:
        out.append(Finding(BatchProblem.OUTSIDE_BATCH_WINDOW, cam, f"[{h.window_start_ms}, {h.window_end_ms})"))
    if (h.frame_count == 0) != (h.frames_root == ZERO32):
        out.append(Finding(BatchProblem.BAD_FRAMES_ROOT, cam, f"frameCount {h.frame_count}"))
    if tip is None:
        out.append(Finding(BatchProblem.UNKNOWN_CAMERA, cam))
        return out
    if h.prev_hash != tip.block_hash:
        out.append(Finding(BatchProblem.BROKEN_LINK, cam, f"expected 0x{tip.block_hash.hex()}"))
    if h.height != tip.height + 1:
        out.append(Finding(BatchProblem.WRONG_HEIGHT, cam, f"expected {tip.height + 1}, got {h.height}"))
    if tip.height > 0 and h.window_start_ms < tip.window_end_ms:
        out.append(Finding(BatchProblem.TIME_NOT_CONTINUOUS, cam, f"previous ended {tip.window_end_ms}"))
    return out


def _check_against(manifest: BatchManifest, batch: Batch) -> list[Finding]:
    out: list[Finding] = []
    if batch.batch_root != batch_tree(manifest.block_hashes).root:
        out.append(Finding(BatchProblem.ROOT_MISMATCH))
    if batch.block_count != len(manifest.headers):
        out.append(Finding(BatchProblem.COUNT_MISMATCH, detail=f"{batch.block_count} != {len(manifest.headers)}"))
    if batch.manifest_digest != manifest.digest:
        out.append(Finding(BatchProblem.DIGEST_MISMATCH))
    if (batch.window_start_ms, batch.window_end_ms, batch.prev_batch_root) != (
            manifest.window_start_ms, manifest.window_end_ms, manifest.prev_batch_root):
        out.append(Finding(BatchProblem.BATCH_MISMATCH))
    return out


def advance_tips(tips: Mapping[bytes, Tip], manifest: BatchManifest) -> dict[bytes, Tip]:
    """The tips after a batch is anchored: each camera of the manifest moves to its header."""
    out = dict(tips)
    for h in manifest.headers:
        out[h.camera_id] = Tip(block_hash=h.hash, height=h.height, window_end_ms=h.window_end_ms)
    return out
