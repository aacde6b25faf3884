"""The seam between the evidence code and the chain: how blocks of a camera were anchored.

Extraction (`offchain.evidence.extract`) and bundle verification (`offchain.evidence.bundle`)
read the chain only through `AnchorSource`. Today's one implementation is
`offchain.evidence.bundle.ChainReader`, the per-header mode: every block header is anchored by
its own `VideoLedger.anchor` transaction and attested per block. Batch anchoring (one Merkle root
per window over every camera's block hash, signed by the quorum: issue 9) is a second
implementation of this interface: it answers the same questions (which blocks of camera C cover
[from, to), what header and finality each has, which transactions anchored it, does a multiproof
verify against the anchored root), and everything above it, including every evidence-trust rule,
stays as it is. The bundle's ``format`` and each block's facts say which mode was read.
"""

from __future__ import annotations

from typing import Iterable, Protocol

from ..core.merkle import MultiProof
from .verify import ChainBlock

__all__ = ["AnchorSource"]


class AnchorSource(Protocol):
    """Read-only anchoring facts of one ledger deployment."""

    address: str  # the VideoLedger (the deployment a trust decision names)

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
