"""Batch mode's peer requests, one per peer per window, and the checks that answer them, pure
(docs/BATCH.md "One request per peer per window"). No I/O: the shell
(`offchain/node/batcher.py`, the routes in `offchain/node/api.py`) reads the pool and the store
and passes the facts in.

* **Holdings** (`POST /peer/v1/batches/holdings`): before sealing window W the proposer sends each
  peer, for every camera, the sequence numbers it holds in W as ranges (`seq_ranges`); the peer
  answers with the frames it holds that the ranges miss (`not_covered`), every camera in one
  answer, including cameras the proposer did not list. The proposer fetches those frames (a
  repair) so no block omits what a peer holds.
* **Signing** (`POST /peer/v1/batches/sign`): the request carries the batch manifest and the
  block manifests inline, as many as fit the body limit (`inline_count`); the peer matches them
  to the headers by digest (`match_inline`) and judges every block against its own pool in one
  pass (`judge_block`, B4: the same rule per-header mode applies to an anchored block).
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from .block import BlockHeader, FrameRef, Manifest, frames_tree

MAX_RANGES_PER_CAMERA = 4_096  # seq ranges one camera's entry of a holdings request lists
MAX_HOLDINGS_FRAMES = 100_000  # frames one holdings answer lists, all cameras together
MAX_PULL_FRAMES = 4_096  # frames one frames request asks for (a window's lost frames, all cameras)
MAX_PULL_BYTES = 6 * 1024 * 1024  # packet bytes one frames answer carries (then `complete` is false)
BASE64_OVERHEAD = 4 / 3
INLINE_SHARE = 0.9  # of the body limit, for the inline manifests (the rest: JSON, the CID, slack)


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sequence numbers as ascending inclusive ranges, adjacent numbers merged: a window's frames
    are nearly contiguous, so 125 frames are one range, not 125 numbers."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def valid_ranges(ranges: Sequence[Sequence[int]]) -> bool:
    """Ranges as `seq_ranges` makes them: pairs lo <= hi, ascending, disjoint, at most
    MAX_RANGES_PER_CAMERA (the route refuses anything else, so `not_covered` may bisect)."""
    if len(ranges) > MAX_RANGES_PER_CAMERA:
        return False
    last = -1
    for r in ranges:
        if len(r) != 2 or not last < r[0] <= r[1]:
            return False
        last = r[1]
    return True


def not_covered(held: Sequence[FrameRef], ranges: Sequence[Sequence[int]], limit: int) -> list[FrameRef]:
    """The frames of `held` whose seq none of `ranges` covers (what the asker lacks), at most `limit`."""
    starts = [r[0] for r in ranges]
    out: list[FrameRef] = []
    for f in held:
        i = bisect.bisect_right(starts, f.seq) - 1
        if i < 0 or not ranges[i][0] <= f.seq <= ranges[i][1]:
            out.append(f)
            if len(out) >= limit:
                break
    return out


def assign_pulls(answers: Sequence[Mapping[bytes, Sequence[int]] | None],
                 mine: Mapping[bytes, set[int]]) -> list[dict[bytes, list[int]]]:
    """Which frames to fetch from which peer, one request each: every seq some peer listed and
    this node lacks (`mine`), from the first peer (in order) that listed it, never twice, at
    most MAX_PULL_FRAMES in all. `answers[i]` is peer i's holdings answer (None: none)."""
    taken: set[tuple[bytes, int]] = set()
    out: list[dict[bytes, list[int]]] = []
    budget = MAX_PULL_FRAMES
    for answer in answers:
        ask: dict[bytes, list[int]] = {}
        for cam, seqs in sorted((answer or {}).items()):
            for seq in sorted(set(seqs)):
                if budget > 0 and seq not in mine.get(cam, set()) and (cam, seq) not in taken:
                    taken.add((cam, seq))
                    ask.setdefault(cam, []).append(seq)
                    budget -= 1
        out.append(ask)
    return out


def pull_settled(answers: Sequence[Mapping[bytes, Sequence[int]] | None], truncated: Sequence[bool],
                 asks: Sequence[Mapping[bytes, Sequence[int]]],
                 delivered: Sequence[set[tuple[bytes, int]] | None],
                 held: Mapping[bytes, set[int]]) -> bool:
    """Whether a window's pull learned all the peers hold: every peer answered (``answers[i]``
    not None) with its whole list (not ``truncated[i]``), and every seq any peer listed is held
    here now (``held``) or was delivered by the peer it was asked of (``asks[i]``,
    ``delivered[i]``: None when that frames request failed). A delivered packet this node
    refused (a conflict, a revoked camera) is settled, not missing: waiting would not change it."""
    if any(a is None for a in answers) or any(truncated):
        return False
    got = {key for d in delivered if d for key in d}
    for answer in answers:
        for cam, seqs in (answer or {}).items():
            mine = held.get(cam, set())
            if any(seq not in mine and (cam, seq) not in got for seq in seqs):
                return False
    asked = [(i, cam, seq) for i, ask in enumerate(asks) for cam, seqs in ask.items() for seq in seqs]
    return all(delivered[i] is not None for i, _, _ in asked)


def inline_count(sizes: Sequence[int], body_limit: int, fixed: int = 0) -> int:
    """How many of the block manifests (`sizes` in bytes, in header order) one sign request can
    carry, base64-encoded, under `body_limit` with `fixed` bytes already used (the batch
    manifest): the peer fetches the rest by CID."""
    budget = body_limit * INLINE_SHARE - fixed * BASE64_OVERHEAD
    n = 0
    for size in sizes:
        budget -= size * BASE64_OVERHEAD + 4  # the quotes and the comma
        if budget < 0:
            break
        n += 1
    return n


class InlineError(ValueError):
    """An inline block manifest that no header of the batch names, or one sent twice."""


def match_inline(headers: Sequence[BlockHeader], raws: Iterable[bytes]) -> dict[bytes, bytes]:
    """The inline block manifests by their SHA-256, each the `manifestDigest` of a header of
    the batch; anything else is refused (a request carries this batch's manifests, nothing else)."""
    wanted = {h.manifest_digest for h in headers}
    out: dict[bytes, bytes] = {}
    for raw in raws:
        digest = hashlib.sha256(raw).digest()
        if digest not in wanted:
            raise InlineError(f"inline manifest {digest.hex()[:16]} is no block of this batch")
        if digest in out:
            raise InlineError(f"inline manifest {digest.hex()[:16]} sent twice")
        out[digest] = raw
    return out


@dataclass(frozen=True, kw_only=True)
class BlockVerdict:
    """B4 of one block against this node's pool: `problem` (None: it passes, once the `lacking`
    frames are fetched from a peer and match), and the listed seqs this node does not hold."""

    problem: str | None
    lacking: tuple[int, ...] = ()


def _same(held: FrameRef, listed: FrameRef) -> bool:
    # What the camera signed must be what the manifest says, field by field.
    return (held.sha256, held.timestamp_ms, held.keyframe, held.dts_ms, held.size) == (
        listed.sha256, listed.timestamp_ms, listed.keyframe, listed.dts_ms, listed.size)


def judge_block(header: BlockHeader, manifest: Manifest, held: Mapping[int, FrameRef]) -> BlockVerdict:
    """B4 (SPEC.md) of a header and its manifest against the frames this node holds of the
    camera's window (`held`, by seq): the manifest describes the header, its frames make the
    header's root and count, no seq twice, all inside the window, every listed frame this node
    holds is the one listed, and none it holds is left out. The codec proof and substitutions
    need the whitelist and other cameras' frames: the shell checks those."""
    if (manifest.camera_id, manifest.height, manifest.window_start_ms, manifest.window_end_ms) != (
            header.camera_id, header.height, header.window_start_ms, header.window_end_ms):
        return BlockVerdict(problem="manifest does not describe this header")
    try:
        tree = frames_tree(header.camera_id, manifest.frames)
    except (ValueError, TypeError, OverflowError) as exc:  # InvalidMerkleInput is a ValueError
        return BlockVerdict(problem=f"manifest malformed: {type(exc).__name__}")
    root = tree.root if tree else b"\x00" * 32
    if root != header.frames_root or len(manifest.frames) != header.frame_count:
        return BlockVerdict(problem="frames root or count differs from the manifest")
    listed = {f.seq: f for f in manifest.frames}
    if len(listed) != len(manifest.frames):
        return BlockVerdict(problem="manifest lists a sequence number twice")
    if any(not header.window_start_ms <= f.timestamp_ms < header.window_end_ms for f in manifest.frames):
        return BlockVerdict(problem="manifest lists a frame outside the window")
    lacking = []
    for f in manifest.frames:
        mine = held.get(f.seq)
        if mine is None:
            lacking.append(f.seq)
        elif not _same(mine, f):
            return BlockVerdict(problem=f"frame {f.seq} cannot be verified by this node")
    for seq in sorted(held):
        if seq not in listed:
            return BlockVerdict(problem=f"manifest omits frame {seq} held by this node")
    return BlockVerdict(problem=None, lacking=tuple(lacking))
