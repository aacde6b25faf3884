"""Batch mode's `AnchorSource`: a camera's blocks as anchored by `BatchLedger` (docs/BATCH.md).

In batch mode one transaction anchors one root over every camera's block hash of a window. The
chain holds only batch records (window, root, manifest digest, block count); the headers are in
the batch manifests (`frameledger.batch/1`) kept in the content store (extraction) or carried in
the evidence bundle (verification). `BatchReader` answers the AnchorSource questions from both:

* blocks of camera C in [from, to) = the batches overlapping the range (`batchesInRange` /
  `batchesAt`), each batch's manifest (digest-checked against the anchored ``manifestDigest`` and
  its tree rebuilt and compared with the anchored ``batchRoot``), the camera's header in each;
* finality = the batch is anchored (the contract verified a quorum of node signatures on
  inclusion); the facts kept per block are the batch index, root, manifest digest, signers and tx;
* frame proofs verify against the header's ``framesRoot`` and the header's hash against the
  anchored batch root on chain (`BatchLedger.verifyBlockInBatch`).

The contract does not enforce the per-camera hash chain in batch mode, so `chain_rule_notes` is
that rule for the verifier (`offchain.core.batch.check_batch` per header): consecutive blocks link
(prevHash, height + 1, continuous time), the first block links to the camera's previous block (or
its head block), and no batch holds a second header for the camera. Every manifest the reader
needed is kept (`loaded`) so extraction can carry them in the bundle.

Hostile input is bounded: a manifest is parsed only under `MAX_BATCH_MANIFEST_BYTES`; the range
reads at most `MAX_BATCHES` records; walking back before the range (context blocks, the previous
block of the chain rule) reads at most `MAX_WALK_BACK_BATCHES` batches.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterable, Mapping

from eth_abi import decode as abi_decode
from eth_utils import keccak
from web3 import Web3

from ..chain.client import call, load_artifact
from ..chain.ledger import BatchRecord
from ..chain.reverts import ContractRevert
from ..core.batch import (
    MAX_BATCH_MANIFEST_BYTES,
    BatchFormatError,
    BatchManifest,
    BatchProblem,
    Tip,
    batch_tree,
    block_proof,
    check_batch,
)
from ..core.block import BlockHeader
from ..core.merkle import MultiProof, process_multiproof
from .anchors import ask_concurrently
from .verify import ChainBlock, Note

__all__ = ["ANCHORING_BATCH", "ANCHORING_HEADER", "MAX_BATCHES", "MAX_WALK_BACK_BATCHES", "BatchReader", "LoadedBatch"]

log = logging.getLogger(__name__)

ANCHORING_HEADER = "header"
ANCHORING_BATCH = "batch"
# An hour of 1-minute windows is 60 batches; 10,000 is a week of minutes (BatchLedgerClient's limit).
MAX_BATCHES = 10_000
# How far before the range the reader walks for context blocks and the chain rule's previous block.
MAX_WALK_BACK_BATCHES = 1_000
_PAGE = 256  # BatchLedger.MAX_PAGE

_CHAIN_PROBLEMS = {BatchProblem.BROKEN_LINK, BatchProblem.WRONG_HEIGHT, BatchProblem.TIME_NOT_CONTINUOUS}
_HEADER_PROBLEMS = {BatchProblem.BAD_HEADER_WINDOW, BatchProblem.OUTSIDE_BATCH_WINDOW, BatchProblem.BAD_FRAMES_ROOT}

ManifestBytes = Callable[[BatchRecord], "bytes | None"]


@dataclass
class LoadedBatch:
    """One batch record and what its manifest said (``manifest`` None: missing or not the anchored one)."""

    record: BatchRecord
    data: bytes | None = None
    manifest: BatchManifest | None = None
    problems: list[Note] = field(default_factory=list)
    tree: Any = None


class BatchReader:
    """Read-only view of one deployment in batch mode (the AnchorSource of docs/BATCH.md)."""

    anchoring = ANCHORING_BATCH

    def __init__(self, w3: Web3, batch_ledger: str, video_ledger: str, manifest_bytes: ManifestBytes, *,
                 max_walk_back: int = MAX_WALK_BACK_BATCHES, keep_bytes: bool = False):
        self.w3 = w3
        self.contract = w3.eth.contract(address=Web3.to_checksum_address(batch_ledger),
                                        abi=load_artifact("BatchLedger")["abi"])
        self.batch_ledger = self.contract.address
        self.address = Web3.to_checksum_address(video_ledger)  # the deployment a trust decision names
        self._manifest_bytes = manifest_bytes
        self._max_walk_back = max_walk_back
        self._keep_bytes = keep_bytes  # extraction keeps the manifests to carry them in the bundle
        self._consortium: Any = None
        self.loaded: dict[int, LoadedBatch] = {}
        self._by_height: dict[tuple[bytes, int], tuple[int, BlockHeader]] = {}
        self._txs: dict[int, tuple[str | None, tuple[str, ...]]] = {}
        self._disputes: dict[int, int] = {}
        self.range_indices: list[int] = []

    # ------------------------------------------------------------------ deployment facts
    @property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    def has_code(self) -> bool:
        return len(self.w3.eth.get_code(self.batch_ledger)) > 0

    @property
    def consortium(self) -> Any:
        if self._consortium is None:
            addr = self.contract.functions.consortium().call()
            self._consortium = self.w3.eth.contract(address=addr, abi=load_artifact("Consortium")["abi"])
        return self._consortium

    @property
    def consortium_address(self) -> str:
        return str(self.consortium.address)

    def camera_ip(self, camera: bytes) -> str | None:
        try:
            return str(call(self.consortium.functions.camera(camera))[0])
        except ContractRevert:  # UnknownCamera
            return None

    def head_block(self, camera: bytes) -> bytes:
        return bytes(call(self.consortium.functions.headBlock(camera))[0])

    # ------------------------------------------------------------------ batches
    def batch_count(self) -> int:
        return int(self.contract.functions.batchCount().call())

    def records_in_range(self, from_ms: int, to_ms: int) -> list[BatchRecord]:
        """The batch records overlapping [from_ms, to_ms), in pages; at most MAX_BATCHES."""
        if from_ms >= to_ms:
            return []
        first, end = self.contract.functions.batchesInRange(max(0, from_ms), max(0, to_ms)).call()
        if end - first > MAX_BATCHES:
            raise ValueError(f"{end - first} batches overlap the range; the limit is {MAX_BATCHES}")
        out: list[BatchRecord] = []
        for start in range(int(first), int(end), _PAGE):
            rows = self.contract.functions.batchesAt(start, min(_PAGE, int(end) - start)).call()
            out.extend(BatchRecord.from_tuple(start + i, r) for i, r in enumerate(rows))
        return out

    def load(self, record: BatchRecord) -> LoadedBatch:
        """The batch's manifest, checked: under the size limit, canonical, its SHA-256 the anchored
        digest and its tree the anchored root. A failed check leaves ``manifest`` None."""
        if record.index in self.loaded:
            return self.loaded[record.index]
        lb = LoadedBatch(record)
        self.loaded[record.index] = lb
        data = self._manifest_bytes(record)
        where = f"batch {record.index}"
        if data is None:
            lb.problems.append(Note("batch.manifest.missing", f"{where}: its manifest is not available"))
            return lb
        lb.data = bytes(data[:MAX_BATCH_MANIFEST_BYTES + 1])
        try:
            m = BatchManifest.from_bytes(lb.data)
        except BatchFormatError as exc:
            lb.problems.append(Note("batch.manifest.invalid", f"{where}: {exc}"))
            return lb
        tree = batch_tree(m.block_hashes) if m.headers else None
        if tree is None or tree.root != record.batch_root:
            lb.problems.append(Note("batch.root.mismatch", f"{where}: the manifest's headers do not rebuild the "
                                                           f"anchored batch root"))
            return lb
        if hashlib.sha256(lb.data).digest() != record.manifest_digest or len(m.headers) != record.block_count:
            lb.problems.append(Note("batch.manifest.mismatch", f"{where}: the manifest is not the anchored one "
                                                               f"(digest or block count)"))
            return lb
        lb.manifest, lb.tree = m, tree
        if not self._keep_bytes:
            lb.data = None
        for h in m.headers:
            self._by_height.setdefault((h.camera_id, h.height), (record.index, h))
        return lb

    def _record(self, index: int) -> BatchRecord:
        return BatchRecord.from_tuple(index, self.contract.functions.batchAt(index).call())

    # ------------------------------------------------------------------ AnchorSource
    def heights_in_range(self, camera: bytes, from_ms: int, to_ms: int) -> list[int]:
        heights: set[int] = set()
        records = self.records_in_range(from_ms, to_ms)
        self.range_indices = [r.index for r in records]
        for rec in records:
            lb = self.load(rec)
            for h in (lb.manifest.headers if lb.manifest else ()):
                if h.camera_id == camera and h.window_start_ms < to_ms and h.window_end_ms > from_ms:
                    heights.add(h.height)
        return sorted(heights)

    def blocks_in_range(self, camera: bytes, from_ms: int, to_ms: int) -> tuple[list[int], dict[int, ChainBlock | None]]:
        heights = self.heights_in_range(camera, from_ms, to_ms)
        return heights, self.blocks(camera, heights)

    def blocks(self, camera: bytes, heights: Iterable[int]) -> dict[int, ChainBlock | None]:
        wanted = sorted(set(int(h) for h in heights if h >= 1))
        for h in wanted:
            if (camera, h) not in self._by_height:
                self._walk_back_to(camera, h)
        found = {h: self._by_height[(camera, h)] for h in wanted if (camera, h) in self._by_height}
        self._load_txs({i for i, _ in found.values()})
        out: dict[int, ChainBlock | None] = {h: None for h in wanted}
        for h, (index, header) in found.items():
            rec = self.loaded[index].record
            tx, signers = self._txs.get(index, (None, ()))
            disputes = self.disputes_of(index)
            # Final = anchored with a quorum's signatures AND no node objected on record
            # (BatchLedger.disputeBatch): a quorum cannot hide one honest node's objection.
            out[h] = ChainBlock(h, header.hash, header, anchored_at=rec.anchored_at, attestations=len(signers),
                                disputes=disputes, finalized=disputes == 0, anchor_tx=tx, attest_txs=())
        return out

    def disputes_of(self, index: int) -> int:
        """How many nodes disputed the batch (`BatchLedger.disputesOf`), read once per batch."""
        if index not in self._disputes:
            self._disputes[index] = int(self.contract.functions.disputesOf(index).call())
        return self._disputes[index]

    def _walk_back_to(self, camera: bytes, height: int) -> None:
        """Load batches before the earliest loaded one until the camera's block at ``height`` (or
        a lower one) is found, the first batch is reached, or the walk limit."""
        known = [h for (c, h) in self._by_height if c == camera]
        if known and min(known) < height:
            return  # lower heights are known: this one is not anchored (or after the range)
        start = min(self.loaded) - 1 if self.loaded else self.batch_count() - 1
        for index in range(start, max(-1, start - self._max_walk_back), -1):
            lb = self.load(self._record(index))
            if lb.manifest and any(h.camera_id == camera and h.height <= height for h in lb.manifest.headers):
                return

    def _load_txs(self, indices: set[int]) -> None:
        todo = sorted(i for i in indices if i not in self._txs)
        if not todo:
            return
        logs = self.contract.events.BatchAnchored.get_logs(argument_filters={"index": todo}, from_block=0)
        for lg in logs:
            self._txs[int(lg["args"]["index"])] = (lg["transactionHash"].to_0x_hex(), tuple(lg["args"]["signers"]))

    def tx_of(self, index: int) -> tuple[str | None, tuple[str, ...]]:
        """The anchoring transaction and the signers the contract verified, of a batch read."""
        self._load_txs({index})
        return self._txs.get(index, (None, ()))

    def block_proof(self, camera: bytes, height: int) -> tuple[int | None, list[bytes]]:
        """The batch holding the camera's block and the block hash's proof in its tree."""
        got = self._by_height.get((camera, height))
        lb = self.loaded.get(got[0]) if got else None
        if got is None or lb is None or lb.tree is None:
            return None, []
        return got[0], block_proof(lb.tree, got[1].hash)

    def batch_index_of(self, camera: bytes, height: int) -> int | None:
        got = self._by_height.get((camera, height))
        return got[0] if got else None

    def verify_frames(self, block_hash: bytes, proof: MultiProof, leaf_hashes: list[bytes]) -> bool:
        """The multiproof against the header's framesRoot, and the header in its anchored batch
        on chain (`verifyBlockInBatch`)."""
        hit = next(((i, h) for i, h in self._by_height.values() if h.hash == block_hash), None)
        if hit is None:
            return False
        index, header = hit
        try:
            root = process_multiproof(list(leaf_hashes), list(proof.proof), list(proof.proof_flags))
        except Exception:  # noqa: BLE001 - a malformed multiproof is a "no"
            return False
        return root == header.frames_root and self.verify_block(index, block_hash)

    def verify_block(self, index: int, block_hash: bytes) -> bool:
        lb = self.loaded.get(index)
        if lb is None or lb.tree is None:
            return False
        data = _VERIFY_BLOCK + _encode_verify_block(index, block_hash, block_proof(lb.tree, block_hash))
        out = self.w3.eth.call({"to": self.batch_ledger, "data": "0x" + data.hex()})
        return bool(abi_decode(["bool"], bytes(out))[0])

    def proofs_on_chain(self, blocks: Mapping[int, ChainBlock | None], proofs: Mapping[int, Mapping[str, Any] | None],
                        known: Mapping[int, Mapping[tuple, bytes]] | None = None) -> dict[int, bool | None]:
        """Per block with a proof: the on-chain part of the proof, the header's hash in its
        anchored batch root (`verifyBlockInBatch`). The frames' multiproof against that header's
        framesRoot is checked locally by the rules (`verify_evidence`), which every caller runs;
        BatchLedger has no multiproof view, so computing it here too only doubled the work
        (half of a batch bundle's verification time, profiled)."""
        asks = ((h, partial(self._header_in_batch, cb, h)) for h, doc in proofs.items()
                if (cb := blocks.get(h)) is not None and doc is not None)
        return dict(ask_concurrently(asks))

    def _header_in_batch(self, cb: ChainBlock, height: int) -> bool:
        """`verifyBlockInBatch` of the block's header in the batch that holds it (False: none does)."""
        index = self.batch_index_of(cb.header.camera_id, height)
        return index is not None and self.verify_block(index, cb.block_hash)

    # ------------------------------------------------------------------ the per-camera chain rule
    def chain_rule_notes(self, camera: bytes, heights: Iterable[int]) -> list[Note]:
        """Every problem of the batches read for this camera's range, and the camera's hash chain
        across them (the rule the contract does not enforce in batch mode)."""
        notes: list[Note] = []
        ordered = sorted(set(heights))
        tip = self._tip_before(camera, ordered[0], notes) if ordered else None  # may walk back: before the problems
        notes[:0] = [n for lb in self.loaded.values() for n in lb.problems]
        for lb in self.loaded.values():
            if lb.manifest is not None and sum(h.camera_id == camera for h in lb.manifest.headers) > 1:
                notes.append(Note("batch.camera.duplicate", f"batch {lb.record.index} holds more than one header "
                                                            f"of the camera"))
        if not ordered:
            return notes
        for index in sorted(self.loaded):
            lb = self.loaded[index]
            mine = [h for h in (lb.manifest.headers if lb.manifest else ()) if h.camera_id == camera]
            if not mine or mine[0].height < ordered[0] or mine[0].height > ordered[-1]:
                continue
            header = mine[0]
            if tip is not None:
                notes.extend(_header_notes(lb.manifest, header, tip))  # type: ignore[arg-type]
            tip = Tip(block_hash=header.hash, height=header.height, window_end_ms=header.window_end_ms)
        return notes

    def _tip_before(self, camera: bytes, first: int, notes: list[Note]) -> Tip | None:
        if first == 1:
            return Tip(block_hash=self.head_block(camera), height=0, window_end_ms=0)
        prev = self.blocks(camera, [first - 1]).get(first - 1)
        if prev is None:
            notes.append(Note("batch.chain.broken", f"the camera's block {first - 1}, which block {first} must link "
                                                    f"to, is in no batch read", height=first))
            return None
        return Tip(block_hash=prev.block_hash, height=prev.height, window_end_ms=prev.header.window_end_ms)

    def members(self) -> list[tuple[int, bytes]]:
        """(batch index, manifest bytes) of every batch read whose manifest is the anchored one."""
        return [(i, lb.data) for i, lb in sorted(self.loaded.items()) if lb.manifest is not None and lb.data]


def _header_notes(manifest: BatchManifest, header: BlockHeader, tip: Tip) -> list[Note]:
    one = BatchManifest(window_start_ms=manifest.window_start_ms, window_end_ms=manifest.window_end_ms,
                        prev_batch_root=manifest.prev_batch_root, headers=(header,))
    out: list[Note] = []
    for f in check_batch(one, {header.camera_id: tip}):
        if f.problem in _CHAIN_PROBLEMS:
            out.append(Note("batch.chain.broken", f"block {header.height}: {f.problem.value} {f.detail}".strip(),
                            height=header.height))
        elif f.problem in _HEADER_PROBLEMS:
            out.append(Note("batch.header.invalid", f"block {header.height}: {f.problem.value} {f.detail}".strip(),
                            height=header.height))
    return out


_VERIFY_BLOCK = keccak(b"verifyBlockInBatch(uint256,bytes32,bytes32[])")[:4]


def _encode_verify_block(index: int, block_hash: bytes, proof: list[bytes]) -> bytes:
    """abi.encode(uint256, bytes32, bytes32[]): one word each, the array after the head."""
    return b"".join([index.to_bytes(32, "big"), bytes(block_hash), (3 * 32).to_bytes(32, "big"),
                     len(proof).to_bytes(32, "big"), *map(bytes, proof)])
