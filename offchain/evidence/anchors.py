"""The seam between the evidence code and the chain: how blocks of a camera were anchored.

Extraction (`offchain.evidence.extract`) and bundle verification (`offchain.evidence.bundle`)
read the chain only through `AnchorSource`. Two implementations:

* `offchain.evidence.bundle.ChainReader`, the per-header mode: every block header is anchored by
  its own `VideoLedger.anchor` transaction and attested per block;
* `offchain.evidence.batch_anchors.BatchReader`, batch mode (issue 9, docs/BATCH.md): one Merkle
  root per window over every camera's block hash, signed by the quorum; the headers come from the
  batch manifests (content store or bundle), each checked against the anchored root and digest,
  and the per-camera hash chain the contract does not enforce is checked by the reader
  (`chain_rule_notes`).

Both answer the same questions (which blocks of camera C cover [from, to), what header and
finality each has, which transactions anchored it, does a multiproof verify against the anchored
root), and everything above them, including every evidence-trust rule, is shared. The bundle's
``anchoring`` field ("header" or "batch") says which mode was read; `extract.anchor_source`
chooses it from the trusted deployment's chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Protocol

from ..core.merkle import MultiProof
from .verify import ChainBlock

__all__ = ["AnchorSource", "ON_CHAIN_WORKERS", "PendingAnswers", "ask_concurrently"]

# verifyFrames / verifyBlockInBatch calls in flight at once (extraction and verification): the
# node answers them on its own cores instead of one after another.
ON_CHAIN_WORKERS = 4


def ask_concurrently(asks: Iterable[tuple[int, Callable[[], bool]]]) -> dict[int, bool]:
    """Each (height, on-chain question) answered in a pool of `ON_CHAIN_WORKERS` threads, every
    question sent as soon as ``asks`` yields it (a caller still building the next proof keeps
    the node busy meanwhile); the answers by height, in the order asked. An exception of a
    question is raised here."""
    with ThreadPoolExecutor(max_workers=ON_CHAIN_WORKERS) as pool:
        asked = {h: pool.submit(question) for h, question in asks}
        return {h: f.result() for h, f in asked.items()}


class PendingAnswers(Mapping[int, bool]):
    """On-chain answers by height, still being computed: each is awaited when it is first read
    (an exception of its question is raised there), so the reader does other work meanwhile.
    Extraction's self-check reads them at its proof rule, after the clips are checked."""

    def __init__(self, asked: Mapping[int, "Future[bool]"]) -> None:
        self._asked = dict(asked)

    def __getitem__(self, height: int) -> bool:
        return self._asked[height].result()

    def __iter__(self) -> Iterator[int]:
        return iter(self._asked)

    def __len__(self) -> int:
        return len(self._asked)


class AnchorSource(Protocol):
    """Read-only anchoring facts of one ledger deployment."""

    address: str  # the VideoLedger (the deployment a trust decision names; batch mode too)

    @property
    def chain_id(self) -> int: ...

    @property
    def consortium_address(self) -> str: ...

    def camera_ip(self, camera: bytes) -> str | None:
        """The registered IP, None when the camera is not registered."""

    def heights_in_range(self, camera: bytes, from_ms: int, to_ms: int) -> list[int]:
        """Heights of the camera's anchored blocks whose windows meet [from_ms, to_ms)."""

    def blocks(self, camera: bytes, heights: Iterable[int]) -> dict[int, ChainBlock | None]:
        """Each height's anchored header, finality and anchoring/attesting transactions (None:
        not anchored), read in as few round trips as the mode allows."""

    def blocks_in_range(self, camera: bytes, from_ms: int, to_ms: int) -> tuple[list[int], dict[int, ChainBlock | None]]:
        """`heights_in_range` and `blocks` of them: "blocks of camera C in [from, to) with their
        anchoring facts"."""

    def verify_frames(self, block_hash: bytes, proof: MultiProof, leaf_hashes: list[bytes]) -> bool:
        """Whether the multiproof of these leaves verifies against the block's anchored root, as
        the chain itself computes it."""
