"""Typed wrappers over the Consortium, VideoLedger and BatchLedger contracts.

Each wrapper is bound to one signer (the account that sends) and speaks in core types
(`BlockHeader`, bytes ids), so callers never touch ABI tuples.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable

from web3 import Web3

from ..core.batch import Batch, BatchDomain, BatchManifest
from ..core.block import BlockHeader
from .client import Signer, TxResult, bind, call, events


class Role(IntEnum):
    NONE = 0
    AUTHORITY = 1
    OPERATOR = 2
    VIEWER = 3

    @classmethod
    def parse(cls, name: str | int) -> "Role":
        if isinstance(name, int):
            return cls(name)
        return cls[name.upper()]


@dataclass(frozen=True)
class CameraInfo:
    camera_id: bytes
    ip: str
    device_public_key: bytes
    owner: str
    group: bytes
    registered_at: int
    active: bool
    head_timestamp: int
    head_block: bytes


@dataclass(frozen=True)
class BlockRecord:
    header: BlockHeader
    anchored_at: int
    attestations: int
    disputes: int
    finalized: bool

    @classmethod
    def from_tuple(cls, t: Any) -> "BlockRecord":
        return cls(BlockHeader.from_tuple(t[0]), int(t[1]), int(t[2]), int(t[3]), bool(t[4]))


class ConsortiumClient:
    def __init__(self, signer: Signer, address: str):
        self.signer = signer
        self.contract = bind(signer.w3, "Consortium", address)
        self.address = self.contract.address

    def as_signer(self, signer: Signer) -> "ConsortiumClient":
        return ConsortiumClient(signer, self.address)

    # membership ---------------------------------------------------------------
    def apply(self, role: Role, parent: str | None, name: str) -> TxResult:
        parent = parent or "0x" + "00" * 20
        return self.signer.transact(self.contract.functions.applyForMembership(int(role), parent, name))

    def confirm(self, applicant: str) -> TxResult:
        return self.signer.transact(self.contract.functions.confirm(applicant))

    def withdraw_application(self) -> TxResult:
        return self.signer.transact(self.contract.functions.withdrawApplication())

    def remove_member(self, account: str) -> TxResult:
        return self.signer.transact(self.contract.functions.removeMember(account))

    def set_admission_threshold(self, n: int) -> TxResult:
        return self.signer.transact(self.contract.functions.setAdmissionThreshold(n))

    def member(self, account: str) -> dict[str, Any]:
        role, active, parent, admitted_at, name = call(self.contract.functions.member(account))
        return {"role": Role(role), "active": active, "parent": parent, "admittedAt": admitted_at, "name": name}

    def is_member(self, account: str) -> bool:
        return bool(call(self.contract.functions.isMember(account)))

    def members(self) -> list[str]:
        return list(call(self.contract.functions.members()))

    def application(self, applicant: str) -> dict[str, Any]:
        role, is_open, parent_confirmed, confirmations, parent, applied_at, round_, name = call(
            self.contract.functions.application(applicant))
        return {"role": Role(role), "open": is_open, "parentConfirmed": parent_confirmed, "confirmations": confirmations,
                "parent": parent, "appliedAt": applied_at, "round": round_, "name": name}

    def applicants(self, from_block: int = 0) -> list[str]:
        """Everyone who ever applied (MemberApplied logs), first application first."""
        seen: dict[str, None] = {}
        for entry in self.contract.events.MemberApplied().get_logs(from_block=from_block):
            seen.setdefault(entry["args"]["applicant"], None)
        return list(seen)

    def admission_threshold(self) -> int:
        return int(call(self.contract.functions.admissionThreshold()))

    # nodes --------------------------------------------------------------------
    def add_node(self, node: str, operated_by: str) -> TxResult:
        return self.signer.transact(self.contract.functions.addNode(node, operated_by))

    def remove_node(self, node: str) -> TxResult:
        return self.signer.transact(self.contract.functions.removeNode(Web3.to_checksum_address(node)))

    def node_operator(self, node: str) -> str:
        return str(call(self.contract.functions.nodeOperator(node)))

    def set_quorum(self, quorum: int) -> TxResult:
        return self.signer.transact(self.contract.functions.setQuorum(quorum))

    def nodes(self) -> list[str]:
        return list(call(self.contract.functions.nodes()))

    def quorum(self) -> int:
        return int(call(self.contract.functions.quorum()))

    # cameras ------------------------------------------------------------------
    def register_camera(self, ip: str, device_public_key: bytes, group: bytes) -> TxResult:
        return self.signer.transact(self.contract.functions.registerCamera(ip, device_public_key, group))

    def revoke_camera(self, camera_id: bytes) -> TxResult:
        return self.signer.transact(self.contract.functions.revokeCamera(camera_id))

    def rotate_camera_key(self, camera_id: bytes, key: bytes) -> TxResult:
        return self.signer.transact(self.contract.functions.rotateCameraKey(camera_id, key))

    def camera(self, camera_id: bytes) -> CameraInfo:
        t = call(self.contract.functions.camera(camera_id))
        return CameraInfo(camera_id, t[0], bytes(t[1]), t[2], bytes(t[3]), t[4], t[5], t[6], bytes(t[7]))

    def camera_ids(self) -> list[bytes]:
        return [bytes(c) for c in call(self.contract.functions.cameraIds())]

    def seal_genesis(self) -> TxResult:
        return self.signer.transact(self.contract.functions.sealGenesis())

    def genesis_sealed(self) -> bool:
        return bool(call(self.contract.functions.genesisSealed()))

    def genesis_hash(self) -> tuple[bytes, int]:
        """Members only: the call is made from this client's signer address."""
        h, ts = call(self.contract.functions.genesisHash(), sender=self.signer.address)
        return bytes(h), ts

    def head_block(self, camera_id: bytes) -> tuple[bytes, int]:
        h, ts = call(self.contract.functions.headBlock(camera_id))
        return bytes(h), ts


class VideoLedgerClient:
    def __init__(self, signer: Signer, address: str):
        self.signer = signer
        self.contract = bind(signer.w3, "VideoLedger", address)
        self.address = self.contract.address

    def as_signer(self, signer: Signer) -> "VideoLedgerClient":
        return VideoLedgerClient(signer, self.address)

    def anchor(self, header: BlockHeader) -> TxResult:
        return self.signer.transact(self.contract.functions.anchor(header.as_tuple()), context=f"anchor height {header.height}")

    def attest(self, block_hash: bytes) -> TxResult:
        return self.signer.transact(self.contract.functions.attest(block_hash), context=f"attest 0x{block_hash.hex()[:12]}")

    def dispute(self, block_hash: bytes, reason: str) -> TxResult:
        return self.signer.transact(self.contract.functions.dispute(block_hash, reason))

    def set_window_limits(self, max_future_ms: int, max_window_ms: int) -> TxResult:
        return self.signer.transact(self.contract.functions.setWindowLimits(max_future_ms, max_window_ms))

    def window_limits(self) -> tuple[int, int]:
        """(maxFutureMs, maxWindowMs): how far ahead of the chain's time a window may end, and how long it may be."""
        return call(self.contract.functions.maxFutureMs()), call(self.contract.functions.maxWindowMs())

    def hash_header(self, header: BlockHeader) -> bytes:
        return bytes(call(self.contract.functions.hashHeader(header.as_tuple())))

    def frame_leaf(self, camera_id: bytes, seq: int, ts: int, sha: bytes) -> bytes:
        return bytes(call(self.contract.functions.frameLeaf(camera_id, seq, ts, sha)))

    def verify_frame(self, block_hash: bytes, proof: list[bytes], seq: int, ts: int, sha: bytes) -> bool:
        return bool(call(self.contract.functions.verifyFrame(block_hash, proof, seq, ts, sha)))

    def verify_frames(self, block_hash: bytes, proof: list[bytes], flags: list[bool], leaves: list[bytes]) -> bool:
        return bool(call(self.contract.functions.verifyFrames(block_hash, proof, flags, leaves)))

    def get_block(self, block_hash: bytes) -> BlockRecord:
        return BlockRecord.from_tuple(call(self.contract.functions.getBlock(block_hash)))

    def block_at(self, camera_id: bytes, height: int) -> BlockRecord:
        return BlockRecord.from_tuple(call(self.contract.functions.blockAt(camera_id, height)))

    def block_hash_at(self, camera_id: bytes, height: int) -> bytes:
        return bytes(call(self.contract.functions.blockHashAt(camera_id, height)))

    def chain_length(self, camera_id: bytes) -> int:
        return int(call(self.contract.functions.chainLength(camera_id)))

    def tip(self, camera_id: bytes) -> tuple[bytes, int, int]:
        prev, height, end = call(self.contract.functions.tip(camera_id))
        return bytes(prev), height, end

    def blocks_in_range(self, camera_id: bytes, from_ms: int, to_ms: int) -> range:
        first, last = call(self.contract.functions.blocksInRange(camera_id, from_ms, to_ms))
        return range(first, last + 1)

    def raise_risk(self, camera_id: bytes, reason: str, since_ms: int) -> TxResult:
        return self.signer.transact(self.contract.functions.raiseRisk(camera_id, reason, since_ms))

    def clear_risk(self, camera_id: bytes) -> TxResult:
        return self.signer.transact(self.contract.functions.clearRisk(camera_id))

    def risk(self, camera_id: bytes) -> dict[str, Any]:
        active, raised_at, since_ms, by, reason = call(self.contract.functions.risk(camera_id))
        return {"active": active, "raisedAt": raised_at, "sinceMs": since_ms, "raisedBy": by, "reason": reason}

    def has_attested(self, block_hash: bytes, node: str) -> bool:
        return bool(call(self.contract.functions.hasAttested(block_hash, Web3.to_checksum_address(node))))

    def has_disputed(self, block_hash: bytes, node: str) -> bool:
        return bool(call(self.contract.functions.hasDisputed(block_hash, Web3.to_checksum_address(node))))


@dataclass(frozen=True)
class BatchRecord:
    """An anchored batch as `BatchLedger.batchAt` returns it (final on inclusion)."""

    index: int
    window_start_ms: int
    window_end_ms: int
    anchored_at: int
    block_count: int
    batch_root: bytes
    manifest_digest: bytes

    @classmethod
    def from_tuple(cls, index: int, t: Any) -> "BatchRecord":
        return cls(index, int(t[0]), int(t[1]), int(t[2]), int(t[3]), bytes(t[4]), bytes(t[5]))


@dataclass(frozen=True)
class AnchoredBatch:
    """What `anchor_batch` did: the index, the signers the contract verified, the transaction."""

    index: int
    signers: tuple[str, ...]
    tx: TxResult


class BatchLedgerClient:
    """BatchLedger (batch mode): one quorum-signed root per window for every camera.

    Reads go through the contract's views only, so extraction needs nothing but the chain and the
    content store: `batch_for_time` → `batch_at` → the record's manifest digest names the batch
    manifest (its CID is `cid_from_digest(manifest_digest)`), which names every header of the window.
    Reverts surface as the contract's named errors (`offchain.chain.reverts`)."""

    PAGE = 256  # BatchLedger.MAX_PAGE

    def __init__(self, signer: Signer, address: str):
        self.signer = signer
        self.contract = bind(signer.w3, "BatchLedger", address)
        self.address = self.contract.address

    def as_signer(self, signer: Signer) -> "BatchLedgerClient":
        return BatchLedgerClient(signer, self.address)

    @property
    def domain(self) -> BatchDomain:
        """The EIP-712 domain nodes sign batches under for this deployment."""
        return BatchDomain(chain_id=self.signer.chain_id, verifying_contract=self.address)

    # writes -------------------------------------------------------------------
    def anchor_batch(self, batch: Batch, signatures: list[bytes]) -> AnchoredBatch:
        """Anchor a batch with the quorum's signatures, ascending by signer
        (`offchain.core.batch.order_signatures`)."""
        tx = self.signer.transact(self.contract.functions.anchorBatch(batch.as_tuple(), list(signatures)),
                                  context=f"anchorBatch window {batch.window_start_ms}")
        ev = events(self.contract, "BatchAnchored", tx.receipt)[0]
        return AnchoredBatch(int(ev.args.index), tuple(ev.args.signers), tx)

    def set_window_limits(self, max_future_ms: int, max_window_ms: int) -> TxResult:
        return self.signer.transact(self.contract.functions.setWindowLimits(max_future_ms, max_window_ms))

    def dispute_batch(self, index: int, reason: str) -> TxResult:
        """Put this node's objection to an anchored batch on record (verifiers then refuse it)."""
        return self.signer.transact(self.contract.functions.disputeBatch(index, reason[:200]),
                                    context=f"disputeBatch {index}")

    # views --------------------------------------------------------------------
    def disputes_of(self, index: int) -> int:
        """How many nodes disputed the batch: any dispute means "not final" to a verifier."""
        return int(call(self.contract.functions.disputesOf(index)))

    def has_disputed(self, index: int, node: str) -> bool:
        return bool(call(self.contract.functions.hasDisputedBatch(index, node)))

    def window_limits(self) -> tuple[int, int]:
        return call(self.contract.functions.maxFutureMs()), call(self.contract.functions.maxWindowMs())

    def consortium(self) -> str:
        return str(call(self.contract.functions.consortium()))

    def batch_count(self) -> int:
        return int(call(self.contract.functions.batchCount()))

    def batch_at(self, index: int) -> BatchRecord:
        return BatchRecord.from_tuple(index, call(self.contract.functions.batchAt(index)))

    def last_root(self) -> bytes:
        """The root the next batch's prevBatchRoot must name (zero before the first)."""
        n = self.batch_count()
        return self.batch_at(n - 1).batch_root if n else b"\x00" * 32

    def batch_for_time(self, time_ms: int) -> BatchRecord:
        """The batch whose window holds `time_ms` (raises reverts.NoBatchAt)."""
        return self.batch_at(int(call(self.contract.functions.batchForTime(time_ms))))

    def batches_in_range(self, from_ms: int, to_ms: int, limit: int = 10_000) -> list[BatchRecord]:
        """The batches whose windows overlap [from_ms, to_ms), read in pages of `PAGE`; at most
        `limit` (ValueError beyond: a caller asking for more than a week of minutes is a bug)."""
        first, end = call(self.contract.functions.batchesInRange(from_ms, to_ms))
        if end - first > limit:
            raise ValueError(f"{end - first} batches overlap [{from_ms}, {to_ms}); the limit is {limit}")
        out: list[BatchRecord] = []
        for start in range(first, end, self.PAGE):
            count = min(self.PAGE, end - start)
            rows = call(self.contract.functions.batchesAt(start, count))
            out.extend(BatchRecord.from_tuple(start + i, r) for i, r in enumerate(rows))
        return out

    def hash_batch(self, batch: Batch) -> bytes:
        return bytes(call(self.contract.functions.hashBatch(batch.as_tuple())))

    def hash_header(self, header: BlockHeader) -> bytes:
        return bytes(call(self.contract.functions.hashHeader(header.as_tuple())))

    def verify_block(self, index: int, block_hash: bytes, proof: list[bytes]) -> bool:
        return bool(call(self.contract.functions.verifyBlockInBatch(index, block_hash, proof)))

    def verify_frame(self, index: int, header: BlockHeader, batch_proof: list[bytes], seq: int, ts: int, sha: bytes,
                     frame_proof: list[bytes]) -> bool:
        """Frame → block root → batch root, on chain."""
        return bool(call(self.contract.functions.verifyFrameInBatch(
            index, header.as_tuple(), batch_proof, seq, ts, sha, frame_proof)))

    def camera_blocks(self, camera_id: bytes, from_ms: int, to_ms: int,
                      fetch: Callable[[bytes], bytes]) -> list[tuple[BatchRecord, BlockHeader]]:
        """Batch mode's per-camera read: the camera's blocks whose windows overlap [from_ms, to_ms),
        oldest first, each with the batch that anchored it (final on inclusion). `fetch` returns
        the bytes of a batch manifest by its SHA-256 (a content store's get of
        `cid_from_digest`); they are re-hashed here, so an untrusted store cannot substitute one."""
        out: list[tuple[BatchRecord, BlockHeader]] = []
        for rec in self.batches_in_range(from_ms, to_ms):
            raw = fetch(rec.manifest_digest)
            if hashlib.sha256(raw).digest() != rec.manifest_digest:
                raise ValueError(f"batch {rec.index}: manifest bytes do not match the anchored digest")
            manifest = BatchManifest.from_bytes(raw)
            out.extend((rec, h) for h in manifest.headers if h.camera_id == camera_id)
        return out

    def camera_tip(self, camera_id: bytes, fetch: Callable[[bytes], bytes], max_batches: int = 10_000) -> BlockHeader | None:
        """The camera's newest batched block (None: none in the last `max_batches` batches)."""
        n = self.batch_count()
        for index in range(n - 1, max(-1, n - 1 - max_batches), -1):
            rec = self.batch_at(index)
            raw = fetch(rec.manifest_digest)
            if hashlib.sha256(raw).digest() != rec.manifest_digest:
                raise ValueError(f"batch {index}: manifest bytes do not match the anchored digest")
            for h in BatchManifest.from_bytes(raw).headers:
                if h.camera_id == camera_id:
                    return h
        return None

    def signers_of(self, index: int, from_block: int = 0) -> tuple[str, ...]:
        """The nodes whose signatures the contract verified for a batch (its BatchAnchored log)."""
        logs = self.contract.events.BatchAnchored().get_logs(from_block=from_block, argument_filters={"index": index})
        return tuple(logs[0]["args"]["signers"]) if logs else ()
