"""Single-frame proof: "this picture is what camera X showed at time t", checkable by anyone.

Given a camera and an instant, find the anchored block whose window holds it, the frame on screen
at that instant (the last frame captured at or before it), the frame's Merkle proof against the
block's anchored root, and check the proof twice: locally and with ``VideoLedger.verifyFrame`` on
chain (OpenZeppelin ``MerkleProof.verify``). The output is small enough to paste into a message:
block hash, root, leaf values, proof; with it and chain access, ``verifyFrame`` answers ``true``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Sequence

from ..chain.ledger import VideoLedgerClient
from ..core.block import FRAME_LEAF_ENCODING, FrameRef, Manifest, ManifestFormatError, frames_tree
from ..core.cid import cid_from_digest
from ..core.merkle import StandardMerkleTree
from ..store.base import ContentStore
from ..tables import render_table
from .batch_anchors import ANCHORING_BATCH, ANCHORING_HEADER, BatchReader
from .bundle import ChainReader
from .extract import EvidenceError, Fetcher, parse_camera, parse_time
from .verify import h0x

__all__ = ["FrameProof", "ProofError", "prove"]


class ProofError(EvidenceError):
    """No provable frame at that instant: no anchored block, a declared gap, an unavailable or
    unanchored manifest. The message says which."""


@dataclass
class FrameProof:
    camera_id: bytes
    camera_ip: str | None
    at_ms: int
    chain_id: int
    ledger: str
    height: int
    block_hash: bytes
    frames_root: bytes
    finalized: bool
    attestations: int
    anchor_tx: str | None
    frame: FrameRef
    proof: list[bytes]
    leaf: bytes
    verified_locally: bool
    verified_on_chain: bool
    bytes_verified: bool | None  # None: the frame's bytes were not found in any store
    data: bytes | None = None
    # batch mode: the block's hash proven in the anchored batch root (BatchLedger.verifyFrameInBatch)
    anchoring: str = ANCHORING_HEADER
    batch_ledger: str | None = None
    batch_index: int | None = None
    batch_proof: list[bytes] | None = None

    @property
    def ok(self) -> bool:
        return self.verified_locally and self.verified_on_chain

    def to_json(self) -> dict[str, Any]:
        f = self.frame
        return {
            "format": "frameledger.frame-proof/1",
            "camera": {"id": h0x(self.camera_id), "ip": self.camera_ip},
            "atMs": self.at_ms,
            "chain": {"chainId": self.chain_id, "videoLedger": self.ledger},
            "block": {"height": self.height, "blockHash": h0x(self.block_hash), "framesRoot": h0x(self.frames_root),
                      "finalized": self.finalized, "attestations": self.attestations, "anchorTx": self.anchor_tx},
            "frame": {"seq": f.seq, "timestampMs": f.timestamp_ms, "sha256": h0x(f.sha256), "cid": cid_from_digest(f.sha256),
                      "keyframe": f.keyframe, "size": f.size},
            "leafEncoding": list(FRAME_LEAF_ENCODING),
            "leafValues": [h0x(self.camera_id), f.seq, f.timestamp_ms, h0x(f.sha256)],
            "leaf": h0x(self.leaf),
            "proof": [h0x(p) for p in self.proof],
            "verifiedLocally": self.verified_locally,
            "verifiedOnChain": self.verified_on_chain,
            "bytesVerified": self.bytes_verified,
            "anchoring": self.anchoring,
            "onChainCall": f"VideoLedger({self.ledger}).verifyFrame({h0x(self.block_hash)}, proof, {f.seq}, "
                           f"{f.timestamp_ms}, {h0x(f.sha256)})" if self.anchoring == ANCHORING_HEADER else
                           f"BatchLedger({self.batch_ledger}).verifyFrameInBatch({self.batch_index}, header, batchProof, "
                           f"{f.seq}, {f.timestamp_ms}, {h0x(f.sha256)}, proof)",
            **({"batch": {"batchLedger": self.batch_ledger, "index": self.batch_index,
                          "batchProof": [h0x(p) for p in self.batch_proof or []]}}
               if self.anchoring == ANCHORING_BATCH else {}),
        }

    def render_text(self) -> str:
        f = self.frame
        rows = [
            ["camera", f"{self.camera_ip or '?'} ({h0x(self.camera_id)[:18]}…)"],
            ["instant (ms)", self.at_ms],
            ["block", f"height {self.height}, {h0x(self.block_hash)}"],
            ["anchored root", h0x(self.frames_root)],
            ["final", f"{'yes' if self.finalized else 'NO'} ({self.attestations} attestations)"],
            ["anchor tx", self.anchor_tx or "-"],
            ["frame", f"seq {f.seq} captured at {f.timestamp_ms} ({self.at_ms - f.timestamp_ms} ms before the instant)"],
            ["sha256 / cid", f"{f.sha256.hex()} / {cid_from_digest(f.sha256)}"],
            ["proof", f"{len(self.proof)} sibling hashes"],
            ["local check", "valid" if self.verified_locally else "INVALID"],
            ["VideoLedger.verifyFrame", "true" if self.verified_on_chain else "FALSE"],
            ["frame bytes", {True: "found, SHA-256 matches", False: "found, SHA-256 DIFFERS", None: "not in the stores"}[self.bytes_verified]],
        ]
        return render_table(["what", "value"], rows, title="Single-frame proof") + "\n"

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"


def prove(camera: str | bytes, at: int | str, ledger: VideoLedgerClient | ChainReader | BatchReader,
          stores: Sequence[ContentStore] = ()) -> FrameProof:
    cam, ip = parse_camera(camera)
    at_ms = parse_time(at)
    reader: ChainReader | BatchReader = ledger if isinstance(ledger, (ChainReader, BatchReader)) else \
        ChainReader(ledger.contract.w3, ledger.address)
    registered = reader.camera_ip(cam)
    if registered is None:
        raise ProofError(f"camera {ip or h0x(cam)} is not registered on this ledger")
    heights = reader.heights_in_range(cam, at_ms, at_ms + 1)
    if not heights:
        raise ProofError(f"no anchored block of camera {registered} covers {at_ms}")
    fetcher = Fetcher(stores)

    def load(height: int) -> tuple[Any, Manifest]:
        cb = reader.blocks(cam, [height]).get(height)
        if cb is None:
            raise ProofError(f"no block anchored at height {height}")
        got = fetcher.get(cb.header.manifest_digest)
        if got.data is None:
            raise ProofError(f"manifest {cid_from_digest(cb.header.manifest_digest)} of block {height} is not in any store"
                             + (" (only corrupt copies)" if got.corrupt else ""))
        try:
            return cb, Manifest.from_bytes(got.data)
        except ManifestFormatError as exc:
            raise ProofError(f"manifest of block {height} is malformed: {exc}") from exc

    cb, manifest = load(heights[0])
    for g in manifest.gaps:
        if g.from_ms <= at_ms <= g.to_ms:
            raise ProofError(f"{at_ms} falls in a declared gap (seq {g.from_seq}-{g.to_seq}) of block {cb.height}: "
                             "the camera has no frame there" + (", it was substituted" if g.substitute_camera else ""))
    before = [f for f in manifest.frames if f.timestamp_ms <= at_ms]
    if not before and cb.height > 1:  # the picture on screen was captured in the previous window
        cb, manifest = load(cb.height - 1)
        before = list(manifest.frames)
    if not before:
        raise ProofError(f"no frame of camera {registered} was captured at or before {at_ms}")
    frame = before[-1]
    tree = frames_tree(cam, manifest.frames)
    assert tree is not None
    index = list(manifest.frames).index(frame)
    proof = tree.get_proof(index)
    values = frame.leaf_values(cam)
    local = StandardMerkleTree.verify_with_root(cb.header.frames_root, FRAME_LEAF_ENCODING, values, proof)
    batch: dict[str, Any] = {}
    if isinstance(reader, BatchReader):
        index_, batch_proof = reader.block_proof(cam, cb.height)
        on_chain = index_ is not None and bool(reader.contract.functions.verifyFrameInBatch(
            index_, cb.header.as_tuple(), batch_proof, frame.seq, frame.timestamp_ms, frame.sha256, proof).call())
        batch = {"anchoring": ANCHORING_BATCH, "batch_ledger": reader.batch_ledger, "batch_index": index_,
                 "batch_proof": batch_proof}
    else:
        on_chain = bool(reader.contract.functions.verifyFrame(cb.block_hash, proof, frame.seq, frame.timestamp_ms,
                                                              frame.sha256).call())
    got = fetcher.get(frame.sha256) if stores else None
    bytes_ok = None if got is None or got.data is None else hashlib.sha256(got.data).digest() == frame.sha256
    return FrameProof(
        camera_id=cam, camera_ip=registered, at_ms=at_ms, chain_id=reader.chain_id, ledger=reader.address,
        height=cb.height, block_hash=cb.block_hash, frames_root=cb.header.frames_root, finalized=cb.finalized,
        attestations=cb.attestations, anchor_tx=cb.anchor_tx, frame=frame, proof=proof, leaf=tree.leaf_hash(index),
        verified_locally=local, verified_on_chain=on_chain, bytes_verified=bytes_ok, data=got.data if got else None,
        **batch,
    )
