"""The API's chain reads of anchored blocks that are not a single camera range: a session's
evidence root and each camera's chain length, in per-header and batch mode alike.

Both go through the evidence layer's AnchorSource (`extract.anchor_source`, the seam the blocks
listing and the evidence routes use): per camera, the chain says which mode anchored it. In
batch mode the headers live in the batch manifests, which the API reads from its content stores
(`create_app(stores=...)`, FRAMELEDGER_STORES), each re-hashed against the anchored digest and
root; so a batch-mode answer needs the stores, and says so when it cannot be given:

* a batch whose manifest no store holds: 503 `batch-manifest-unavailable`;
* a manifest that is not the anchored one (digest, root, count, format): 502 `batch-manifest-invalid`;
* more batches overlapping the range than a reader takes: 413 `range-too-large`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from offchain.chain.ledger import BatchRecord
from offchain.evidence.batch_anchors import BatchReader
from offchain.evidence.extract import Fetcher, anchor_source
from offchain.store.base import ContentStore

from .context import Context
from .problems import Problem

# How many of the newest batches `/v1/cameras` reads to find a batch-mode camera's newest header
# (one `batchesAt` page; each is one manifest read from the stores).
TIP_BATCHES = 256


class CheckedSource:
    """A camera's AnchorSource whose batch-manifest problems are errors, not silent omissions:
    a root made without a batch's headers would be a different root."""

    def __init__(self, ctx: Context, stores: Sequence[ContentStore], cam: bytes, from_ms: int, to_ms: int):
        dep = ctx.deployment
        self.reader: Any = anchor_source(ctx.ledger.contract.w3, dep.video_ledger, dep.batch_ledger, cam,
                                         from_ms, to_ms, stores)
        self.anchoring = getattr(self.reader, "anchoring", "header")
        self.has_stores = bool(stores)

    def blocks_in_range(self, camera: bytes, from_ms: int, to_ms: int) -> tuple[list[int], Mapping[int, Any]]:
        try:
            heights, blocks = self.reader.blocks_in_range(camera, from_ms, to_ms)
        except ValueError as exc:  # batch mode: more batches overlap the range than a reader takes
            raise Problem(413, "range-too-large", str(exc)) from None
        manifest_problems(self.reader, self.has_stores)
        return heights, blocks


def manifest_problems(reader: Any, has_stores: bool) -> None:
    """Raise the problem of the first batch (of those read) whose manifest could not be used."""
    for lb in sorted(getattr(reader, "loaded", {}).values(), key=lambda x: x.record.index):
        for note in lb.problems:
            if note.code == "batch.manifest.missing":
                hint = "" if has_stores else " (this API has no content stores: set FRAMELEDGER_STORES)"
                raise Problem(503, "batch-manifest-unavailable", note.message + hint, batch=lb.record.index)
            raise Problem(502, "batch-manifest-invalid", note.message, batch=lb.record.index)


def camera_lengths(ctx: Context, stores: Sequence[ContentStore], cameras: Sequence[bytes]) -> dict[bytes, tuple[int | None, str]]:
    """Each camera's chain length and anchoring mode: the VideoLedger's length when it holds the
    camera's blocks; else, in a deployment with a BatchLedger, the height of the camera's newest
    header in the newest `TIP_BATCHES` batches (0 when every batch was read and none holds it,
    None when older batches exist or a manifest is unavailable: not known from what was read)."""
    out: dict[bytes, tuple[int | None, str]] = {}
    rest = []
    for cid in cameras:
        n = ctx.ledger.chain_length(cid)
        if n > 0 or not ctx.deployment.batch_ledger:
            out[cid] = (n, "header")
        else:
            rest.append(cid)
    if rest:
        out.update(_batch_tips(ctx, stores, rest))
    return out


def _batch_tips(ctx: Context, stores: Sequence[ContentStore], cameras: list[bytes]) -> dict[bytes, tuple[int | None, str]]:
    dep = ctx.deployment
    fetcher = Fetcher(stores)
    reader = BatchReader(ctx.ledger.contract.w3, str(dep.batch_ledger), dep.video_ledger,
                         lambda rec: fetcher.get(rec.manifest_digest).data)
    count = reader.batch_count()
    first = max(0, count - TIP_BATCHES)
    rows = reader.contract.functions.batchesAt(first, count - first).call() if count > first else []
    found: dict[bytes, int | None] = {}
    unreadable = False  # a newer manifest could not be read: an older header may not be the newest
    wanted = set(cameras)
    for i in range(len(rows) - 1, -1, -1):  # newest first: the first header of a camera is its tip
        lb = reader.load(BatchRecord.from_tuple(first + i, rows[i]))
        if lb.manifest is None:
            unreadable = True
            continue
        for h in lb.manifest.headers:
            if h.camera_id in wanted and h.camera_id not in found:
                found[h.camera_id] = None if unreadable else h.height
        if wanted <= set(found):
            break
    complete = first == 0 and not unreadable  # every batch read: a camera in none has no block
    return {c: (found[c] if c in found else (0 if complete else None), "batch") for c in cameras}
