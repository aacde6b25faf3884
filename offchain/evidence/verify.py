"""The verification rules: what makes presented video the camera's anchored video.

Pure code, no I/O. The callers gather facts and hand them in:

* ``ChainFacts``: what the chain says (block hashes, headers, attestations, finality, the anchoring
  and attesting transactions, the on-chain result of ``verifyFrames`` for each multiproof);
* ``EvidenceClaim``: what the evidence presents (headers, manifests, multiproofs, which frames each
  clip carries in which order, which frames are carried as raw bytes);
* ``ClipSamples`` and raw digests: what the clip files and raw frame files actually contain.

``verify_evidence`` turns those into a :class:`~offchain.evidence.report.Report`. Extraction runs it
on what it fetched and wrote; ``verify_bundle`` runs it on a bundle; the JavaScript verifier
(`scripts/verify_bundle.js`) implements the same rules step for step, so the three agree on codes
and verdict. Where a rule has a choice (which code wins, when to stop), the choice is written here
once and mirrored there.

Trust flows one way: the chain is the authority. A header presented in the evidence is only
compared with the chain's; everything after that is checked against the chain's header. A manifest
is trusted only if its SHA-256 is the anchored digest; frames of a block whose manifest is not
trusted are not checked further (the block has already failed, and guessing would only add noise).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import operator
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np

from ..core.block import (FRAME_LEAF_ENCODING, ZERO32, BlockHeader, FrameRef, Manifest, ManifestFormatError, camera_id,
                          frames_tree, track_bounds, track_name, track_of)
from ..core.cid import cid_from_digest
from ..core.merkle import InvalidMerkleInput, MultiProof, leaf_hash, process_multiproof
from ..core.native import native
from ..core.outages import ProofProblem, verify_proof
from .report import ClipEntry, GapEntry, Report, merge_findings

__all__ = [
    "BatchClaim",
    "ChainBlock",
    "ChainFacts",
    "BlockClaim",
    "ClipClaim",
    "ClipSamples",
    "CodecSourceClaim",
    "EvidenceClaim",
    "Note",
    "PictureCheck",
    "RawClaim",
    "ManifestCheck",
    "check_manifest",
    "KnownLeaves",
    "known_leaves",
    "manifest_tree",
    "check_codec_source",
    "classify_digest",
    "manifest_extradata",
    "decode_key",
    "decode_keys",
    "parse_multiproof",
    "parsed_manifest",
    "remember_multiproof",
    "uncovered_spans",
    "verify_evidence",
]

PRIMARY = "original"
SUBSTITUTED = "substituted"


def h0x(b: bytes | None) -> str | None:
    return None if b is None else "0x" + b.hex()


def decode_key(f: FrameRef) -> tuple[int, int]:
    """Decode order: by decode time where the stream has B-frames, else by capture time."""
    return (f.dts_ms if f.dts_ms is not None else f.timestamp_ms, f.seq)


def decode_keys(frames: Iterable[FrameRef]) -> list[tuple[int, int]]:
    """`decode_key` of each frame, in one comprehension (a call per frame was a measured cost in
    planning and in the remux rule)."""
    return [(f.dts_ms if f.dts_ms is not None else f.timestamp_ms, f.seq) for f in frames]


# --------------------------------------------------------------------------- facts and claims


@dataclass(frozen=True)
class ChainBlock:
    """The chain's record of one block, read with eth_call / eth_getLogs."""

    height: int
    block_hash: bytes
    header: BlockHeader
    anchored_at: int = 0
    attestations: int = 0
    disputes: int = 0
    finalized: bool = False
    anchor_tx: str | None = None
    attest_txs: tuple[str, ...] = ()


@dataclass
class ChainFacts:
    chain_id: int
    ledger: str
    consortium: str | None = None
    heights_in_range: list[int] = field(default_factory=list)
    blocks: dict[int, ChainBlock | None] = field(default_factory=dict)  # None: nothing anchored there
    proofs_on_chain: Mapping[int, bool | None] = field(default_factory=dict)  # None: not asked
    # blocks of substitute cameras whose manifests carry the codec of a remuxed substituted clip
    codec_blocks: dict[tuple[bytes, int], ChainBlock | None] = field(default_factory=dict)
    # the camera's device keys on chain (`outage_keys.device_keys`), to check declared outages;
    # read only when a manifest carries one
    camera_keys: tuple[bytes, ...] = ()


@dataclass
class BlockClaim:
    height: int
    header: BlockHeader | None
    block_hash: str | None = None
    anchor_tx: str | None = None
    attest_txs: list[str] = field(default_factory=list)
    manifest: bytes | None = None
    proof: Mapping[str, Any] | None = None
    context_only: bool = False


@dataclass
class ClipClaim:
    path: str
    kind: str  # "original" | "substituted"
    camera: bytes
    frames: list[tuple[int, int]]  # (height, seq) in sample (file) order
    reencoded: bool = False
    why: str = "remux"  # or why it had to be re-encoded (informational: the rules decide)
    audio: list[tuple[int, int]] = field(default_factory=list)  # (height, seq) of its audio track's packets, in order


@dataclass
class CodecSourceClaim:
    """A substitute camera's own block, presented for its manifest's codec configuration: a
    remuxed substituted clip must carry exactly that configuration."""

    camera: bytes
    height: int
    header: BlockHeader | None
    block_hash: str | None = None
    manifest: bytes | None = None


@dataclass
class RawClaim:
    height: int
    camera: bytes
    seq: int
    path: str


@dataclass
class EvidenceClaim:
    camera_id: bytes
    from_ms: int
    to_ms: int
    chain_id: int | None = None
    ledger: str | None = None
    consortium: str | None = None
    camera_ip: str | None = None
    blocks: list[BlockClaim] = field(default_factory=list)
    clips: list[ClipClaim] = field(default_factory=list)
    raw: list[RawClaim] = field(default_factory=list)
    codec_sources: list[CodecSourceClaim] = field(default_factory=list)
    # "header" (VideoLedger, one anchor per block) or "batch" (BatchLedger, docs/BATCH.md)
    anchoring: str = "header"
    batch_ledger: str | None = None
    batches: list["BatchClaim"] = field(default_factory=list)


@dataclass
class BatchClaim:
    """A batch manifest the evidence carries (batch mode): the batch index and the manifest's bytes."""

    index: int
    manifest: bytes | None = None
    batch_root: str | None = None
    manifest_digest: str | None = None
    anchor_tx: str | None = None
    signers: list[str] = field(default_factory=list)


@dataclass
class ClipSamples:
    """What a clip file holds: its samples in file (decode) order as (sha256, pts in ms), and
    its codec configuration record (the avcC box for H.264)."""

    samples: list[tuple[bytes, int]] | None = None
    error: str | None = None
    extradata: bytes | None = None
    audio: list[tuple[bytes, int]] | None = None  # the audio track's samples, when the clip has one


class PictureCheck(Protocol):
    """What comparing a re-encoded clip with the decoded anchored frames found
    (`offchain.evidence.video.PictureComparison`)."""

    compared: int
    worst_db: float | None
    worst_index: int | None
    below: int
    clip_error: str | None
    original_error: str | None
    threshold_db: float


@dataclass(frozen=True)
class Note:
    """A finding made before the rules run (by extraction while fetching, by the bundle reader,
    by the trust decision): code, message and where it applies."""

    code: str
    message: str = ""
    height: int | None = None
    seq: int | None = None
    camera: bytes | None = None


# --------------------------------------------------------------------------- small pure rules


def classify_digest(actual: bytes | None, expected: bytes, anchored: set[bytes] | Mapping[bytes, Any]) -> str | None:
    """None if the bytes are right; ``frame.order.invalid`` if they are another anchored frame's
    bytes (swapped or reordered); else ``frame.digest.mismatch``."""
    if actual == expected:
        return None
    if actual is not None and actual in anchored:
        return "frame.order.invalid"
    return "frame.digest.mismatch"


_VIDEO_MAX = track_bounds(0)[1]
_TREES: "OrderedDict[tuple[bytes, bytes], Any]" = OrderedDict()
_TREE_CACHE_SIZE = 128


def manifest_tree(camera: bytes, manifest_digest: bytes, frames: Sequence[FrameRef]):
    """The frames' Merkle tree, cached by (camera, manifest digest): a manifest's bytes fix its
    frames, so extraction, its self-check and proof building share one tree per block instead of
    hashing every leaf three times. None for an empty block."""
    key = (camera, manifest_digest)
    if key in _TREES:
        _TREES.move_to_end(key)
        return _TREES[key]
    tree = frames_tree(camera, frames)
    _TREES[key] = tree
    if len(_TREES) > _TREE_CACHE_SIZE:
        _TREES.popitem(last=False)
    return tree


@dataclass
class ManifestCheck:
    """Outcome of checking a manifest against the chain's header: the manifest (when its digest
    is the anchored one and it parses), whether its frames can be trusted, and the codes."""

    manifest: Manifest | None
    trusted: bool
    codes: list[tuple[str, str]]  # (code, message)


_MANIFESTS: "OrderedDict[bytes, Manifest]" = OrderedDict()


def parsed_manifest(digest: bytes, data: bytes) -> Manifest:
    """Manifest.from_bytes of ``data`` whose SHA-256 is ``digest``, cached by it (as `manifest_tree`):
    extraction and its self-check, and a bundle's verification (`bundle._anchored_manifests`, then
    the manifest rule), read each manifest twice, and a Manifest is immutable. Raises
    ManifestFormatError."""
    if digest in _MANIFESTS:
        _MANIFESTS.move_to_end(digest)
        return _MANIFESTS[digest]
    m = Manifest.from_bytes(data)
    _MANIFESTS[digest] = m
    if len(_MANIFESTS) > _TREE_CACHE_SIZE:
        _MANIFESTS.popitem(last=False)
    return m


def _capture_ordered(frames: Sequence[FrameRef]) -> bool:
    """Frames in capture order: by (time, seq), and each track's numbers rising (a camera with
    sound interleaves its video and audio tracks, each numbered on its own: `core.block.track_of`).
    With one track this is the rule it always was: seqs rising, times never falling."""
    seqs = [f.seq for f in frames]
    times = [f.timestamp_ms for f in frames]
    if all(map(operator.lt, seqs, seqs[1:])) and all(map(operator.le, times, times[1:])):
        return True  # seqs rising and times never falling: (time, seq) rises, and so does each track
    last: dict[int, int] = {}
    for i, f in enumerate(frames):
        if i and (f.timestamp_ms, f.seq) <= (frames[i - 1].timestamp_ms, frames[i - 1].seq):
            return False
        t = track_of(f.seq)
        if t in last and f.seq <= last[t]:
            return False
        last[t] = f.seq
    return True


def check_manifest(data: bytes | None, header: BlockHeader, other_digests: Mapping[bytes, int]) -> ManifestCheck:
    """The manifest rules: digest = anchored digest (or it is another block's manifest), it parses,
    it agrees with the header, its frames are ordered and rebuild the anchored root and count."""
    if data is None:
        return ManifestCheck(None, False, [("manifest.missing", "no manifest for this block")])
    digest = hashlib.sha256(data).digest()
    if digest != header.manifest_digest:
        other = other_digests.get(digest)
        if other is not None and other != header.height:
            return ManifestCheck(None, False, [("manifest.order.invalid", f"the manifest presented is block {other}'s")])
        return ManifestCheck(None, False, [("manifest.digest.mismatch", f"manifest hashes to {digest.hex()[:16]}…, "
                                                                       f"anchored {header.manifest_digest.hex()[:16]}…")])
    known = _CHECKED.get((digest, header))
    if known is not None:  # the same rules on the same bytes and header: extraction's self-check asks again
        return ManifestCheck(known.manifest, known.trusted, list(known.codes))
    mc = _check_anchored_manifest(data, digest, header)
    _CHECKED[(digest, header)] = ManifestCheck(mc.manifest, mc.trusted, list(mc.codes))
    if len(_CHECKED) > _TREE_CACHE_SIZE:
        _CHECKED.popitem(last=False)
    return mc


# check_manifest's outcomes for manifests whose digest is their header's: a pure function of the
# (immutable) bytes and header, so kept for the next question about the same pair.
_CHECKED: "OrderedDict[tuple[bytes, BlockHeader], ManifestCheck]" = OrderedDict()  # bounded: _TREE_CACHE_SIZE


def _check_anchored_manifest(data: bytes, digest: bytes, header: BlockHeader) -> ManifestCheck:
    """check_manifest's rules after the digest matched."""
    codes = [("manifest.digest.match", "")]
    try:
        m = parsed_manifest(digest, data)
    except ManifestFormatError as exc:
        return ManifestCheck(None, False, codes + [("manifest.invalid", str(exc))])
    bad = []
    if m.camera_id != header.camera_id:
        bad.append("camera")
    if m.height != header.height:
        bad.append("height")
    if (m.window_start_ms, m.window_end_ms) != (header.window_start_ms, header.window_end_ms):
        bad.append("window")
    times = [f.timestamp_ms for f in m.frames]
    if times and not (header.window_start_ms <= min(times) and max(times) < header.window_end_ms):
        bad.append("frame outside window")
    if bad:
        codes.append(("manifest.header.mismatch", "manifest disagrees with header on " + ", ".join(bad)))
    order_ok = _capture_ordered(m.frames)
    if not order_ok:
        codes.append(("frame.order.invalid", "manifest frames are not in capture order"))
    tree = manifest_tree(header.camera_id, digest, m.frames)
    root = tree.root if tree else ZERO32
    if root != header.frames_root or len(m.frames) != header.frame_count:
        codes.append(("block.root.mismatch", f"manifest frames rebuild root {root.hex()[:16]}… over {len(m.frames)} "
                                             f"frames, anchored {header.frames_root.hex()[:16]}… over {header.frame_count}"))
        return ManifestCheck(m, False, codes)
    codes.append(("block.root.match", ""))
    return ManifestCheck(m, not bad and order_ok, codes)


_PARSED: "OrderedDict[int, tuple[Any, Any]]" = OrderedDict()  # id(doc) -> (doc, parse result)


def parse_multiproof(doc: Mapping[str, Any] | None, known: "KnownLeaves | None" = None,
                     ) -> tuple[MultiProof, list[bytes], list[tuple[int, int, bytes]]]:
    """A stored multiproof → (proof, leaf hashes, (seq, ts, sha) per leaf). Raises ValueError.

    ``known`` (`known_leaves`) holds a verified tree's leaves and their hashes, so honest proofs
    are not hashed again; any other leaf value is hashed as the library would. The result
    depends on the document alone, so each document is parsed once (kept with the document it
    came from: the chain check and the proof rule of one verification share it)."""
    hit = _parsed_already(doc)
    if hit is not None:
        return hit
    result = _parse_multiproof(doc, known)
    _PARSED[id(doc)] = (doc, result)
    if len(_PARSED) > _TREE_CACHE_SIZE:
        _PARSED.popitem(last=False)
    return result


def remember_multiproof(doc: Mapping[str, Any], proof: MultiProof, leaf_hashes: list[bytes]) -> None:
    """Record what a proof document parses to, for a document built here from ``proof`` (cut
    from a tree whose root was checked against the chain; `_multiproof_json` spells it): its
    self-check then processes the proof against the anchored root without reading its leaves
    back from hex (the multiproof is verified once per block, not parsed back first)."""
    keys = [(v[1], v[2], v[3]) for v in proof.leaves]
    _PARSED[id(doc)] = (doc, (proof, leaf_hashes, keys))
    if len(_PARSED) > _TREE_CACHE_SIZE:
        _PARSED.popitem(last=False)


def _parsed_already(doc: Any) -> tuple[MultiProof, list[bytes], list[tuple[int, int, bytes]]] | None:
    hit = _PARSED.get(id(doc))
    return hit[1] if hit is not None and hit[0] is doc else None  # type: ignore[no-any-return]


def _parse_multiproof(doc: Mapping[str, Any] | None, known: "KnownLeaves | None",
                      ) -> tuple[MultiProof, list[bytes], list[tuple[int, int, bytes]]]:
    if not isinstance(doc, Mapping):
        raise ValueError("no multiproof")
    if list(doc.get("leafEncoding", FRAME_LEAF_ENCODING)) != list(FRAME_LEAF_ENCODING):
        raise ValueError(f"unexpected leafEncoding {doc.get('leafEncoding')}")
    whole = known.whole(doc) if known is not None else None
    if whole is not None:
        return whole
    try:
        mp = MultiProof.from_json(doc)
        hashes, keys = [], []
        for v in mp.leaves:
            # A leaf as the extractor writes it ([cam hex, seq, ts, sha hex]) is looked up as is;
            # anything else is parsed and, if still unknown, hashed.
            hit = known.get(tuple(v)) if known is not None and type(v) is list and len(v) == 4 else None
            if hit is not None and type(v[1]) is int and type(v[2]) is int:
                hashes.append(hit[0])
                keys.append(hit[1])
                continue
            key = (int(v[1]), int(v[2]), bytes.fromhex(str(v[3]).removeprefix("0x")))
            cam = str(v[0]).lower()
            hk = known.get((cam, key[0], key[1], "0x" + key[2].hex())) if known is not None and len(v) == 4 else None
            hashes.append(hk[0] if hk is not None else leaf_hash(FRAME_LEAF_ENCODING, v))
            keys.append(key)
    except (InvalidMerkleInput, TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
        raise ValueError(f"malformed multiproof: {exc}") from exc
    return mp, hashes, keys


class KnownLeaves:
    """A verified tree's leaves (its values are ``frames``, in order), so that a proof of them is
    parsed without hashing an honest leaf again. Two ways, cheapest first:

    * `whole`: the proof of every leaf exactly as `StandardMerkleTree.whole_multiproof` cuts it
      and the extractor spells it (a block whose frames are all presented, the common case) is
      recognised by comparing its leaves with that spelling as one list (issue 9: looking each
      of 1,500 leaves up by its tuple of strings was a quarter of a bundle's verification);
    * `get`: any other leaf, looked up by its spelling ``(camera hex, seq, ts, "0x" sha hex)``
      (the table is built on first use)."""

    def __init__(self, camera: bytes, frames: Sequence[FrameRef], tree: Any) -> None:
        self._camera_hex = "0x" + camera.hex()
        self._frames = frames
        self._tree = tree
        self._table: dict[tuple, tuple[bytes, tuple[int, int, bytes]]] | None = None

    def get(self, spelled: tuple) -> tuple[bytes, tuple[int, int, bytes]] | None:
        """(leaf hash, (seq, ts, sha)) of a leaf spelled as the extractor writes it, or None."""
        if self._table is None:
            self._table = self._spelled_table()
        return self._table.get(spelled)

    def _spelled_table(self) -> dict[tuple, tuple[bytes, tuple[int, int, bytes]]]:
        if self._tree is None:
            return {}
        cam = self._camera_hex
        nodes, at = self._tree._tree, self._tree._tree_indices  # tree.leaf_hash(i) spent its time on type checks
        return {(cam, f.seq, f.timestamp_ms, "0x" + f.sha256.hex()): (nodes[at[i]], (f.seq, f.timestamp_ms, f.sha256))
                for i, f in enumerate(self._frames)}

    def whole(self, doc: Mapping[str, Any]) -> tuple[MultiProof, list[bytes], list[tuple[int, int, bytes]]] | None:
        """The parse of ``doc`` when it is this tree's proof of every leaf in the extractor's
        spelling (no proof nodes, every flag ``true``, leaves in the proof's order with integer
        seq and time); None for any other document, which the caller parses leaf by leaf."""
        tree = self._tree
        leaves, flags = doc.get("leaves"), doc.get("proofFlags")
        if tree is None or doc.get("proof") != [] or type(leaves) is not list or len(leaves) != len(tree) \
                or type(flags) is not list or len(flags) != len(tree) - 1 or not all(f is True for f in flags):
            return None
        mp, hashes = tree.whole_multiproof()
        if not self._spell(leaves, mp.leaves):
            return None
        return mp, hashes, [(v[1], v[2], v[3]) for v in mp.leaves]

    def _spell(self, leaves: list[Any], values: list[Any]) -> bool:
        """Whether ``leaves`` are ``values`` in the extractor's spelling, in C where built
        (`_native.spelled_leaves_equal`, the same answer: tests/unit/test_native_merkle.py)."""
        cam = self._camera_hex
        same = native.spelled_leaves_equal(leaves, cam, values) if native is not None else None
        if same is not None:
            return bool(same)
        # List equality holds 1 == True == 1.0; the type pass after it keeps JSON's true and 1.0 out.
        return leaves == [[cam, v[1], v[2], "0x" + v[3].hex()] for v in values] \
            and all(type(v[1]) is int and type(v[2]) is int for v in leaves)


_KNOWN: "OrderedDict[int, tuple[Any, KnownLeaves]]" = OrderedDict()  # id(tree) -> (tree, its KnownLeaves)


def known_leaves(camera: bytes, frames: Sequence[FrameRef], tree: Any) -> KnownLeaves:
    """The `KnownLeaves` of a built tree over ``frames``, once per tree."""
    hit = _KNOWN.get(id(tree))
    if tree is not None and hit is not None and hit[0] is tree:
        return hit[1]
    known = KnownLeaves(camera, frames, tree)
    if tree is not None:
        _KNOWN[id(tree)] = (tree, known)
        if len(_KNOWN) > _TREE_CACHE_SIZE:
            _KNOWN.popitem(last=False)
    return known


def uncovered_spans(from_ms: int, to_ms: int, windows: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Parts of [from, to) that no window covers."""
    out = []
    cursor = from_ms
    for start, end in sorted(windows):
        if end <= cursor:
            continue
        if start > cursor:
            out.append((cursor, min(start, to_ms)))
        cursor = max(cursor, end)
        if cursor >= to_ms:
            break
    if cursor < to_ms:
        out.append((cursor, to_ms))
    return [(a, b) for a, b in out if a < b]


def manifest_extradata(m: Manifest) -> bytes | None:
    """The codec configuration record a manifest commits (base64 in its codec object)."""
    codec = m.codec if isinstance(m.codec, dict) else {}
    value = codec.get("extradata")
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class CodecSourceCheck:
    manifest: Manifest | None
    codes: list[tuple[str, str]]


def check_codec_source(src: CodecSourceClaim, cb: ChainBlock | None) -> CodecSourceCheck:
    """A substitute camera's block: anchored at its height, its header the anchored one, its
    manifest the anchored bytes. Only then is its codec configuration the camera's."""
    where = f"camera {h0x(src.camera)[:12]}… block {src.height}"
    if cb is None:
        return CodecSourceCheck(None, [("block.root.unanchored", f"codec source: nothing anchored at {where}")])
    authority = cb.header if cb.header.hash == cb.block_hash else (
        src.header if src.header is not None and src.header.hash == cb.block_hash else None)
    if authority is None or authority.camera_id != src.camera or (
            src.header is not None and src.header.hash != cb.block_hash):
        return CodecSourceCheck(None, [("block.header.mismatch", f"codec source: header of {where} is not the anchored one")])
    if src.manifest is None:
        return CodecSourceCheck(None, [("manifest.missing", f"codec source: no manifest for {where}")])
    if hashlib.sha256(src.manifest).digest() != authority.manifest_digest:
        return CodecSourceCheck(None, [("manifest.digest.mismatch", f"codec source: manifest of {where} is not the anchored one")])
    try:
        m = Manifest.from_bytes(src.manifest)
    except ManifestFormatError as exc:
        return CodecSourceCheck(None, [("manifest.invalid", f"codec source {where}: {exc}")])
    if m.camera_id != src.camera or m.height != src.height:
        return CodecSourceCheck(None, [("manifest.header.mismatch", f"codec source: manifest of {where} names another block")])
    return CodecSourceCheck(m, [])


def gap_overlaps(gap_from: int, gap_to: int, from_ms: int, to_ms: int) -> bool:
    # Gap bounds are capture times of the span; treat them as inclusive, so a gap is reported when
    # any instant of it touches the range.
    return gap_from < to_ms and gap_to >= from_ms


# --------------------------------------------------------------------------- the verifier
#
# `verify_evidence` is a sequence of named steps. Each takes what it needs and returns what the
# next steps use; the report is the one accumulator (the findings list) they all write to.


class _Group:
    """The frames one trusted manifest lists for one camera (the block's own, or a substitution),
    in manifest order, with where the evidence presents each as columns: one flag array per mark
    instead of an object per frame (issue 9: building and walking 30,000 frame objects was a
    fifth of a verification)."""

    __slots__ = ("height", "camera", "primary", "refs", "in_clip", "in_raw", "listed", "flagged", "_positions", "_range")

    def __init__(self, height: int, camera: bytes, primary: bool, refs: Sequence[FrameRef]) -> None:
        self.height, self.camera, self.primary, self.refs = height, camera, primary, refs
        n = len(refs)
        self.in_clip = np.zeros(n, dtype=bool)   # carried byte-exact by a remuxed clip
        self.in_raw = np.zeros(n, dtype=bool)    # carried as raw bytes
        self.listed = np.zeros(n, dtype=bool)    # listed in any clip (remuxed or re-encoded): shown to a person
        self.flagged = np.zeros(n, dtype=bool)   # a failure was already reported about it
        self._positions: dict[int, int] | None = None
        self._range: tuple[int, int, np.ndarray] | None = None

    def positions(self) -> dict[int, int]:
        """seq -> position (built on first use; the index keeps one frame per seq)."""
        if self._positions is None:
            self._positions = dict(zip(map(_SEQ, self.refs), range(len(self.refs))))
        return self._positions

    def in_range(self, from_ms: int, to_ms: int) -> np.ndarray:
        """Which frames were captured in [from_ms, to_ms) (kept for the last range asked: the
        completeness and playability rules ask for the claim's)."""
        if self._range is None or self._range[:2] != (from_ms, to_ms):
            inside = np.fromiter((from_ms <= r.timestamp_ms < to_ms for r in self.refs), dtype=bool, count=len(self.refs))
            self._range = (from_ms, to_ms, inside)
        return self._range[2]


_SEQ = operator.attrgetter("seq")


class _Frame(tuple):
    """One frame of the index, (group, position): a view whose marks live in the group's columns.
    A tuple, so that a clip's listing makes its views in C (`map(_Frame, zip(...))`)."""

    __slots__ = ()

    @property
    def height(self) -> int:
        return self[0].height  # type: ignore[no-any-return]

    @property
    def camera(self) -> bytes:
        return self[0].camera  # type: ignore[no-any-return]

    @property
    def primary(self) -> bool:
        return self[0].primary  # type: ignore[no-any-return]

    @property
    def ref(self) -> FrameRef:
        return self[0].refs[self[1]]  # type: ignore[no-any-return]

    def _mark(name: str) -> property:  # type: ignore[misc]  # noqa: N805 - a property factory, run in the class body
        def read(self: "_Frame") -> bool:
            return bool(getattr(self[0], name)[self[1]])

        def write(self: "_Frame", value: bool) -> None:
            getattr(self[0], name)[self[1]] = value
        return property(read, write)

    in_clip = _mark("in_clip")
    in_raw = _mark("in_raw")
    listed = _mark("listed")
    flagged = _mark("flagged")
    del _mark


@dataclass
class _FrameIndex:
    """Every frame of the trusted manifests, by (height, camera, seq), in groups."""

    camera: bytes
    groups: list[_Group]           # in the order the manifests list them: each block's own, then its substitutions
    by_key: dict[tuple[int, bytes], list[_Group]]
    anchored: set[bytes]           # every anchored digest: tells "another frame's bytes" from "no frame's"
    untrusted_heights: set[int]    # presented blocks whose manifests are not trusted
    claimed_heights: set[int]

    def get(self, height: int, camera: bytes, seq: int) -> _Frame | None:
        for g in self.by_key.get((height, camera), ()):
            i = g.positions().get(seq)
            if i is not None:
                return _Frame((g, i))
        return None

    def primaries(self) -> list[_Group]:
        return [g for g in self.groups if g.primary]

    def fail(self, report: Report, code: str, fr: _Frame, msg: str) -> None:
        """One failure per frame: the first reason is the one reported."""
        g, i = fr
        if g.flagged[i]:
            return
        g.flagged[i] = True
        report.add(code, msg, height=g.height, seq=g.refs[i].seq, camera=h0x(g.camera) if g.camera != self.camera else None)


def verify_evidence(
    claim: EvidenceClaim,
    chain: ChainFacts,
    clips: Mapping[str, ClipSamples],
    raw_digests: Mapping[str, bytes | None],
    *,
    pictures: Mapping[str, PictureCheck | None] | None = None,
    produced_by: str = "frameledger verify",
    notes: Iterable[Note] = (),
    skip: set[tuple] | frozenset = frozenset(),
) -> Report:
    """Apply every rule; see the module docstring. ``pictures`` holds, per re-encoded clip, the
    comparison of its pictures with the decoded anchored frames (absent: this verifier cannot
    decode, so those pictures are unchecked). ``notes`` are findings made before this call;
    ``skip`` holds the keys ``("manifest", h)`` / ``("frame", h, camera, seq)`` they already
    cover, so nothing is reported twice."""
    report = _new_report(claim, chain, produced_by)
    for n in notes:
        report.add(n.code, n.message, height=n.height, seq=n.seq,
                   camera=h0x(n.camera) if n.camera and n.camera != claim.camera_id else None)
    if not _check_preconditions(claim, chain, report):
        return _finish(report, {}, None)
    in_range = _check_range(claim, chain, report)
    claimed = _claimed_blocks(claim, in_range, report)
    trusted = _check_blocks(claim, chain, claimed, in_range, skip, report)
    extradata = _anchored_extradata(claim, chain, trusted, report)
    index = _index_frames(claim.camera_id, trusted, set(claimed), skip)
    matched = _check_clips(claim, index, clips, pictures or {}, extradata, report)
    matched += _check_raw(claim, index, raw_digests, trusted, report)
    _check_proofs(claim, chain, claimed, trusted, index, report)
    _check_completeness(claim, index, matched, report)
    _check_playability(claim, index, report)
    _check_gaps(claim, trusted, index, report)
    _check_declared_outages(claim, trusted, chain.camera_keys, report)
    return _finish(report, trusted, index)


def _new_report(claim: EvidenceClaim, chain: ChainFacts, produced_by: str) -> Report:
    return Report(camera_id=h0x(claim.camera_id), camera_ip=claim.camera_ip, from_ms=claim.from_ms, to_ms=claim.to_ms,
                  chain_id=chain.chain_id, ledger=chain.ledger, consortium=chain.consortium, produced_by=produced_by)


def _check_preconditions(claim: EvidenceClaim, chain: ChainFacts, report: Report) -> bool:
    if claim.chain_id is not None and claim.chain_id != chain.chain_id:
        report.add("chain.id.mismatch", f"evidence anchored on chain {claim.chain_id}, RPC answers for {chain.chain_id}")
        return False
    if claim.camera_ip is not None and camera_id(claim.camera_ip) != claim.camera_id:
        report.add("bundle.invalid", f"camera ip {claim.camera_ip} does not hash to camera id {h0x(claim.camera_id)}")
    if claim.from_ms >= claim.to_ms:
        report.add("range.invalid", f"empty range [{claim.from_ms}, {claim.to_ms})")
        return False
    return True


def _check_range(claim: EvidenceClaim, chain: ChainFacts, report: Report) -> list[int]:
    """The heights the chain says cover the range; parts no anchored window covers are gaps."""
    in_range = list(chain.heights_in_range)
    if not in_range:
        report.add("range.empty", "no block of this camera is anchored for any part of the range")
        return in_range
    windows = [(b.header.window_start_ms, b.header.window_end_ms) for h in in_range
               if (b := chain.blocks.get(h)) is not None]
    for a, b in uncovered_spans(claim.from_ms, claim.to_ms, windows):
        report.gaps.append(GapEntry("uncovered", a, b))
        report.add("range.uncovered", f"no anchored block covers {a}..{b}")
    return in_range


def _claimed_blocks(claim: EvidenceClaim, in_range: list[int], report: Report) -> dict[int, BlockClaim]:
    claimed: dict[int, BlockClaim] = {}
    for bc in claim.blocks:
        if bc.height in claimed:
            report.add("bundle.entry.duplicate", f"block {bc.height} presented twice", height=bc.height)
            continue
        claimed[bc.height] = bc
    for h in in_range:
        if h not in claimed:
            report.block(h)
            report.add("block.missing", f"block {h} covers part of the range but is not in the evidence", height=h)
    return claimed


def _check_blocks(claim: EvidenceClaim, chain: ChainFacts, claimed: dict[int, BlockClaim], in_range: list[int],
                  skip: set[tuple] | frozenset, report: Report) -> dict[int, Manifest]:
    """Header, finality, transactions and link of every presented block; the manifests whose
    frames can be trusted."""
    # Every anchored manifest digest, to recognise a manifest filed under the wrong block.
    manifest_digests = {b.header.manifest_digest: h for h, b in chain.blocks.items() if b is not None}
    trusted: dict[int, Manifest] = {}
    for h in sorted(claimed):
        authority = _check_block(claim.camera_id, claimed[h], chain, h not in in_range, claimed, report)
        if authority is None or ("manifest", h) in skip:
            continue
        mc = check_manifest(claimed[h].manifest, authority, manifest_digests)
        for code, msg in mc.codes:
            report.add(code, msg, height=h)
        if mc.trusted and mc.manifest is not None:
            trusted[h] = mc.manifest
    return trusted


def _check_block(cam: bytes, bc: BlockClaim, chain: ChainFacts, context_only: bool, claimed: Mapping[int, BlockClaim],
                 report: Report) -> BlockHeader | None:
    """One block against the chain; returns the authoritative header, or None when the block's
    contents cannot be checked."""
    h = bc.height
    entry = report.block(h)
    entry.context_only = context_only
    cb = chain.blocks.get(h)
    if cb is None:
        report.add("block.root.unanchored", f"no block of this camera is anchored at height {h}", height=h)
        return None
    hdr = cb.header
    entry.block_hash = h0x(cb.block_hash)
    entry.window_start_ms, entry.window_end_ms = hdr.window_start_ms, hdr.window_end_ms
    entry.frame_count, entry.frames_root = hdr.frame_count, h0x(hdr.frames_root)
    entry.manifest_cid = cid_from_digest(hdr.manifest_digest)
    entry.anchor_tx, entry.attest_txs = cb.anchor_tx, list(cb.attest_txs)
    entry.attestations, entry.disputes, entry.finalized = cb.attestations, cb.disputes, cb.finalized

    # The authoritative header hashes to the anchored block hash: the chain's own record if it
    # does (an honest RPC), else the presented one if it does (a hash preimage is as good as the
    # record), else none and the block's contents cannot be checked.
    claimed_hash = bc.header.hash if bc.header is not None else None
    chain_ok = hdr.hash == cb.block_hash
    authority = hdr if chain_ok else (bc.header if claimed_hash == cb.block_hash else None)
    if (claimed_hash != cb.block_hash or not chain_ok or hdr.camera_id != cam
            or (bc.block_hash is not None and bc.block_hash.lower() != h0x(cb.block_hash))):
        why = "malformed header" if bc.header is None else (
            f"header hashes to {claimed_hash.hex()[:16]}…, anchored {cb.block_hash.hex()[:16]}…"
            if claimed_hash is not None and claimed_hash != cb.block_hash
            else "the chain's header record does not hash to its block hash")
        report.add("block.header.mismatch", why, height=h)
    else:
        report.add("block.header.match", height=h)
    if cb.finalized:
        report.add("block.final", height=h)
    else:
        why = (f"{cb.disputes} node(s) disputed it on record" if cb.disputes
               else f"{cb.attestations} attestation(s), below quorum")
        report.add("block.not_final", why, height=h)
    if cb.disputes:
        report.add("block.disputed", f"{cb.disputes} node(s) disputed this block", height=h)
    if bc.anchor_tx is not None and cb.anchor_tx is not None and bc.anchor_tx.lower() != cb.anchor_tx.lower():
        report.add("tx.anchor.mismatch", f"named {bc.anchor_tx[:18]}…, anchored by {cb.anchor_tx[:18]}…", height=h)
    if bc.attest_txs and {t.lower() for t in bc.attest_txs} != {t.lower() for t in cb.attest_txs}:
        report.add("tx.attest.mismatch", "attestation transactions differ from the chain's", height=h)
    prev = chain.blocks.get(h - 1)
    if prev is not None and h - 1 in claimed and hdr.prev_hash != prev.block_hash:
        report.add("block.chain.broken", f"block {h} does not link to block {h - 1}", height=h)
    return authority


@dataclass(frozen=True)
class _AnchoredCodecs:
    """Codec configuration records committed by anchored manifests: the camera's own per block,
    and each verified codec source's per substitute camera (with the window it covers)."""

    own: dict[int, bytes | None]
    substitutes: dict[bytes, list[tuple[int, int, bytes | None]]]

    def for_clip(self, clip: ClipClaim, index: "_FrameIndex") -> tuple[bool, bool, bytes | None]:
        """(applies, known, extradata) for the clip's first frame. The rule does not apply when
        that frame is not in a trusted manifest (already a failure: no second code); known is
        False when no anchored manifest vouches for any configuration."""
        if not clip.frames:
            return False, False, None
        h, seq = clip.frames[0]
        fr = index.get(h, clip.camera, seq)
        if fr is None:
            return False, False, None
        if clip.camera == index.camera:
            return True, h in self.own, self.own.get(h)
        for start, end, data in self.substitutes.get(clip.camera, []):
            if start <= fr.ref.timestamp_ms < end:
                return True, True, data
        return True, False, None


def _anchored_extradata(claim: EvidenceClaim, chain: ChainFacts, trusted: Mapping[int, Manifest],
                        report: Report) -> _AnchoredCodecs:
    own = {h: manifest_extradata(m) for h, m in trusted.items()}
    subs: dict[bytes, list[tuple[int, int, bytes | None]]] = defaultdict(list)
    seen: set[tuple[bytes, int]] = set()
    for src in claim.codec_sources:
        if (src.camera, src.height) in seen:
            report.add("bundle.entry.duplicate", f"codec source {h0x(src.camera)[:12]}… block {src.height} listed twice",
                       camera=h0x(src.camera))
            continue
        seen.add((src.camera, src.height))
        result = check_codec_source(src, chain.codec_blocks.get((src.camera, src.height)))
        for code, msg in result.codes:
            report.add(code, msg, camera=h0x(src.camera))
        if result.manifest is not None:
            m = result.manifest
            subs[src.camera].append((m.window_start_ms, m.window_end_ms, manifest_extradata(m)))
    return _AnchoredCodecs(own, dict(subs))


def _index_frames(cam: bytes, trusted: Mapping[int, Manifest], claimed: set[int], skip: set[tuple] | frozenset) -> _FrameIndex:
    groups = []
    for h, m in trusted.items():
        groups.append(_Group(h, cam, True, m.frames))
        groups += [_Group(h, sub_cam, False, sub_frames) for sub_cam, sub_frames in m.substitutions]
    by_key = _keyed(groups)
    if any(len(gs) > 1 for gs in by_key.values()) or any(len(g.positions()) != len(g.refs) for g in groups):
        groups = _without_shadowed(groups)
        by_key = _keyed(groups)
    anchored = {r.sha256 for g in groups for r in g.refs}
    index = _FrameIndex(cam, groups, by_key, anchored, claimed - set(trusted), claimed)
    for key in skip:
        if key[0] == "frame" and (fr := index.get(*key[1:])) is not None:
            fr.flagged = True
    return index


def _keyed(groups: list[_Group]) -> dict[tuple[int, bytes], list[_Group]]:
    """The groups by (height, camera), in their order."""
    by_key: dict[tuple[int, bytes], list[_Group]] = defaultdict(list)
    for g in groups:
        by_key[(g.height, g.camera)].append(g)
    return dict(by_key)


def _without_shadowed(groups: list[_Group]) -> list[_Group]:
    """A manifest listing one (camera, seq) twice, or a substitution under the block's own camera
    (only a hostile quorum anchors one): one frame per (height, camera, seq), the last listed, as
    the rules have always read it."""
    last: dict[tuple[int, bytes, int], tuple[bool, FrameRef]] = {}
    for g in groups:
        for r in g.refs:
            last[(g.height, g.camera, r.seq)] = (g.primary, r)
    regrouped: dict[tuple[int, bytes, bool], list[FrameRef]] = defaultdict(list)
    for (h, camera, _), (primary, r) in last.items():
        regrouped[(h, camera, primary)].append(r)
    return [_Group(h, camera, primary, refs) for (h, camera, primary), refs in regrouped.items()]


# ---- clips


def _check_clips(claim: EvidenceClaim, index: _FrameIndex, clips: Mapping[str, ClipSamples],
                 pictures: Mapping[str, PictureCheck | None], codecs: _AnchoredCodecs, report: Report) -> int:
    """Every clip; returns how many frames were matched byte for byte."""
    matched = 0
    seen_paths: set[str] = set()
    for clip in claim.clips:
        if clip.path in seen_paths:
            report.add("bundle.entry.duplicate", f"clip {clip.path} listed twice")
            continue
        seen_paths.add(clip.path)
        listed, involves_untrusted = _clip_listing(clip, index, report)
        cs = clips.get(clip.path)
        if cs is None or cs.samples is None:
            report.add("clip.invalid", f"{clip.path}: {cs.error if cs else 'not in the evidence'}")
            for fr in listed:
                if fr is not None:
                    fr.flagged = True
            continue
        if clip.reencoded:
            _check_reencoded_clip(clip, listed, cs.samples, pictures.get(clip.path), report)
        else:
            matched += _check_remuxed_clip(clip, listed, cs, involves_untrusted, codecs, index, report)
        if clip.audio:
            _check_clip_audio(clip, cs, index, report)
    return matched


def _check_clip_audio(clip: ClipClaim, cs: ClipSamples, index: _FrameIndex, report: Report) -> None:
    """A clip's audio track must hold exactly the anchored audio packets it lists, byte for byte,
    in order (they are also carried raw: this binds what a player plays to them)."""
    expected = [fr.ref.sha256 if (fr := index.get(h, clip.camera, seq)) is not None else None for h, seq in clip.audio]
    got = [d for d, _ in cs.audio or []]
    if None in expected or got != expected:
        report.add("clip.audio.mismatch", f"{clip.path}: its audio track holds {len(got)} packet(s), "
                   f"not the {len(expected)} anchored audio packet(s) it lists")


def _clip_listing(clip: ClipClaim, index: _FrameIndex, report: Report) -> tuple[list[_Frame | None], bool]:
    """The frames a clip says it carries, marked as shown; whether any lies in an untrusted block."""
    listed: list[_Frame | None] = []
    involves_untrusted = False
    if len(set(clip.frames)) != len(clip.frames):  # the common case tested at once, not frame by frame
        seen: set[tuple[int, int]] = set()
        for h, seq in clip.frames:
            if (h, seq) in seen:
                report.add("bundle.entry.duplicate", f"clip {clip.path} lists frame {h}/{seq} twice", height=h, seq=seq)
            seen.add((h, seq))
    # A block's frames at a time: one group's seqs looked up together, its views made in C.
    for h, run in itertools.groupby(clip.frames, key=operator.itemgetter(0)):
        seqs = [seq for _, seq in run]
        groups = index.by_key.get((h, clip.camera), ())
        if len(groups) == 1:
            g = groups[0]
            at = list(map(g.positions().get, seqs))
            if None not in at:
                g.listed[at] = True
                if not clip.reencoded:
                    g.in_clip[at] = True
                listed += map(_Frame, zip(itertools.repeat(g), at))
                continue
        for seq in seqs:
            fr = index.get(h, clip.camera, seq)
            if fr is None:
                if h in index.untrusted_heights or h not in index.claimed_heights:
                    involves_untrusted = True
                else:
                    report.add("frame.unknown", f"clip {clip.path} lists a frame its manifest does not", height=h, seq=seq)
            else:
                fr.listed = True
                if not clip.reencoded:
                    fr.in_clip = True
            listed.append(fr)
    return listed, involves_untrusted


def _check_reencoded_clip(clip: ClipClaim, listed: list[_Frame | None], samples: list[tuple[bytes, int]],
                          pictures: PictureCheck | None, report: Report) -> None:
    """A re-encoded clip: its count and times, and its pictures against the decoded originals.
    Its frames' bytes must travel raw (completeness checks that)."""
    known = [fr for fr in listed if fr is not None]
    report.add("clip.reencoded", f"{clip.path} was re-encoded ({clip.why}); original bytes are carried as raw frames")
    exp_ts = sorted(fr.ref.timestamp_ms for fr in known)
    got_ts = sorted(p for _, p in samples)
    if len(samples) != len(listed) or (known and _relative(exp_ts) != _relative(got_ts)):
        report.add("clip.timing.mismatch", f"{clip.path}: {len(samples)} pictures at times that differ from "
                                           f"the {len(listed)} anchored frames it stands for")
        return
    if pictures is None:
        report.add("clip.pictures.unchecked", f"{clip.path}: pictures not compared with the anchored frames")
    elif pictures.clip_error is not None:
        report.add("clip.undecodable", f"{clip.path}: {pictures.clip_error}")
    elif pictures.original_error is not None:
        report.add("clip.pictures.unchecked", f"{clip.path}: {pictures.original_error}")
    elif pictures.below or not pictures.compared:
        report.add("clip.pictures.mismatch", f"{clip.path}: {pictures.below} of {pictures.compared} picture(s) below "
                                             f"{pictures.threshold_db} dB (worst {pictures.worst_db} dB at picture "
                                             f"{pictures.worst_index})")
    else:
        report.add("clip.pictures.match", f"{clip.path}: {pictures.compared} pictures, worst tile {pictures.worst_db} dB "
                                          f"(threshold {pictures.threshold_db} dB)")


def _check_remuxed_clip(clip: ClipClaim, listed: list[_Frame | None], cs: ClipSamples, involves_untrusted: bool,
                        codecs: _AnchoredCodecs, index: _FrameIndex, report: Report) -> int:
    """A remux: sample i is the anchored frame listed at i, on time, in decode order, under the
    anchored codec configuration. Returns the frames matched."""
    samples = cs.samples or []
    known = [fr for fr in listed if fr is not None]
    known_refs = [g.refs[i] for g, i in known]
    clip_ok = _codec_matches(clip, cs, codecs, index, report)
    keys = decode_keys(known_refs)
    if any(map(operator.le, keys[1:], keys)):  # a key not above the one before it
        report.add("frame.order.invalid", f"{clip.path} lists frames out of decode order")
        clip_ok = False
    if len(samples) == len(listed):
        pairs, ok = _pair_in_order(clip, listed, known_refs, samples, index, report)
    else:
        pairs, ok = _pair_by_digest(clip, known, samples, involves_untrusted, index, report)
    clip_ok = clip_ok and ok
    if pairs:
        # In-order pairing takes samples in order, so with none left out sample k is listed frame k.
        every = len(samples) == len(listed) == len(pairs)
        exp = _relative([r.timestamp_ms for r in known_refs] if every else [g.refs[p].timestamp_ms for (g, p), _ in pairs])
        got = _relative([t for _, t in samples] if every else [samples[i][1] for _, i in pairs])
        if exp != got:
            clip_ok = False
            bad = sum(1 for a, b in zip(exp, got) if a != b)
            report.add("clip.timing.mismatch", f"{clip.path}: {bad} packet(s) presented at times other than captured")
    if clip_ok and not involves_untrusted:
        report.add("clip.packets.match", f"{clip.path}: {len(pairs)} packets")
    return len(pairs)


def _codec_matches(clip: ClipClaim, cs: ClipSamples, codecs: _AnchoredCodecs, index: _FrameIndex,
                   report: Report) -> bool:
    """The parameter sets decide what the packets show (size, cropping, colour): a remux must
    carry the anchored ones."""
    applies, known, expected = codecs.for_clip(clip, index)
    if not applies:
        return True
    if not known:
        report.add("clip.codec.mismatch", f"{clip.path}: no anchored manifest of camera {h0x(clip.camera)[:12]}… "
                                          "vouches for its codec configuration")
        return False
    if expected is None or cs.extradata != expected:
        report.add("clip.codec.mismatch", f"{clip.path}: codec configuration differs from the anchored manifest's")
        return False
    return True


def _pair_in_order(clip: ClipClaim, listed: list[_Frame | None], known_refs: list[FrameRef],
                   samples: list[tuple[bytes, int]], index: _FrameIndex, report: Report,
                   ) -> tuple[list[tuple[_Frame, int]], bool]:
    if len(known_refs) == len(listed) and [r.sha256 for r in known_refs] == [sha for sha, _ in samples]:
        # every sample is its listed frame: the loop's outcome
        return list(zip(listed, range(len(listed)))), True  # type: ignore[arg-type]  # no None among them
    pairs: list[tuple[_Frame, int]] = []
    ok = True
    for i, fr in enumerate(listed):
        if fr is None:
            continue
        actual = samples[i][0]
        if actual == fr.ref.sha256:  # classify_digest's None, without a call per frame
            pairs.append((fr, i))
            continue
        code = classify_digest(actual, fr.ref.sha256, index.anchored)
        if code is None:
            pairs.append((fr, i))
        else:
            ok = False
            index.fail(report, code, fr, f"{clip.path} sample {i} hashes to {actual.hex()[:16]}…")
    return pairs, ok


def _pair_by_digest(clip: ClipClaim, known: list[_Frame], samples: list[tuple[bytes, int]], involves_untrusted: bool,
                    index: _FrameIndex, report: Report) -> tuple[list[tuple[_Frame, int]], bool]:
    """Sample count differs from the listing: find each listed frame's packet by digest."""
    pool: dict[bytes, list[int]] = defaultdict(list)
    for i, (sha, _) in enumerate(samples):
        pool[sha].append(i)
    pairs: list[tuple[_Frame, int]] = []
    for fr in known:
        idx = pool.get(fr.ref.sha256)
        if idx:
            pairs.append((fr, idx.pop(0)))
        else:
            index.fail(report, "frame.missing", fr, f"{clip.path} lacks this frame's packet")
    if not involves_untrusted:
        for idx in pool.values():
            for i in idx:
                report.add("frame.digest.mismatch", f"{clip.path} sample {i} is no anchored frame")
    order = [i for _, i in pairs]
    if any(b < a for a, b in zip(order, order[1:])):
        report.add("frame.order.invalid", f"{clip.path} carries frames out of order")
    return pairs, False


# ---- raw frames, proofs, completeness, playability, gaps


def _check_raw(claim: EvidenceClaim, index: _FrameIndex, raw_digests: Mapping[str, bytes | None],
               trusted: Mapping[int, Manifest], report: Report) -> int:
    matched = 0
    seen: set[tuple[int, bytes, int]] = set()
    for rc in claim.raw:
        key = (rc.height, rc.camera, rc.seq)
        if key in seen:
            report.add("bundle.entry.duplicate", f"raw frame {rc.height}/{rc.seq} listed twice", height=rc.height, seq=rc.seq)
            continue
        seen.add(key)
        fr = index.get(*key)
        if fr is None:
            if rc.height in trusted:
                report.add("frame.unknown", f"raw frame {rc.path} is not in its manifest", height=rc.height, seq=rc.seq)
            continue
        fr.in_raw = True
        actual = raw_digests.get(rc.path)
        if actual is None:
            index.fail(report, "frame.missing", fr, f"raw frame {rc.path} is not in the evidence")
            continue
        code = classify_digest(actual, fr.ref.sha256, index.anchored)
        if code is None:
            matched += 1
        else:
            index.fail(report, code, fr, f"raw frame {rc.path} hashes to {actual.hex()[:16]}…")
    return matched


def _check_proofs(claim: EvidenceClaim, chain: ChainFacts, claimed: Mapping[int, BlockClaim],
                  trusted: Mapping[int, Manifest], index: _FrameIndex, report: Report) -> None:
    """Every primary frame presented must be proven against the anchored root (locally and, where
    asked, with `verifyFrames` on chain)."""
    cam = claim.camera_id
    by_height: dict[int, list[_Group]] = defaultdict(list)
    for g in index.primaries():
        by_height[g.height].append(g)
    for h in sorted(trusted):
        bc, cb = claimed[h], chain.blocks[h]
        if cb is None:
            continue
        root_anchored = cb.header.frames_root if cb.header.hash == cb.block_hash or bc.header is None \
            else bc.header.frames_root
        shown = [(g, np.flatnonzero(g.listed | g.in_raw)) for g in by_height[h]]
        if not any(len(at) for _, at in shown) and bc.proof is None:
            continue
        tree = manifest_tree(cam, hashlib.sha256(bc.manifest).digest(), trusted[h].frames) if bc.manifest else None
        try:
            mp, hashes, keys = _parsed_already(bc.proof) or parse_multiproof(bc.proof, known_leaves(cam, trusted[h].frames, tree))
            whole = tree.whole_tree_root(hashes, mp.proof, mp.proof_flags) if tree is not None and hashes else None
            root = whole or (process_multiproof(hashes, mp.proof, mp.proof_flags) if hashes else None)
        except (ValueError, InvalidMerkleInput) as exc:
            report.add("frame.proof.invalid", str(exc), height=h)
            continue
        on_chain = chain.proofs_on_chain.get(h)
        # A proof of the whole tree covers every frame of the manifest, so each one shown; any
        # other proof is checked frame by frame.
        presented = set() if whole else {(r.seq, r.timestamp_ms, r.sha256) for g, at in shown for r in map(g.refs.__getitem__, at)}
        if root != root_anchored or on_chain is False:
            report.add("frame.proof.invalid", "multiproof does not verify against the anchored root", height=h)
        elif not presented <= set(keys):
            report.add("frame.proof.invalid", f"{len(presented - set(keys))} presented frame(s) not covered by the proof",
                       height=h)
        else:
            report.add("frame.proof.valid", f"{len(keys)} frames" + (", verifyFrames on chain" if on_chain else ""), height=h)


def _check_completeness(claim: EvidenceClaim, index: _FrameIndex, matched: int, report: Report) -> None:
    """Every anchored frame of the range, and every substituted frame shown, must be presented
    as bytes (in a remux or raw)."""
    for g in index.groups:
        in_range = g.in_range(claim.from_ms, claim.to_ms)
        for i in np.flatnonzero(~(g.in_clip | g.in_raw) & (in_range | g.listed)).tolist():  # frames not carried
            if g.primary and in_range[i]:
                index.fail(report, "frame.missing", _Frame((g, i)), "anchored frame of the range is not presented")
            elif g.primary:  # shown only re-encoded: its picture needs its bytes
                index.fail(report, "frame.missing", _Frame((g, i)), "re-encoded frame's original bytes are not presented")
            else:
                index.fail(report, "frame.missing", _Frame((g, i)), "substituted frame's original bytes are not presented")
    if matched:
        report.add("frame.digest.match", f"{matched} frame(s) hash to their anchored digests", count=matched)


def _check_playability(claim: EvidenceClaim, index: _FrameIndex, report: Report) -> None:
    """Frames carried only raw (in no clip) cannot be watched; frames before the range that
    make a clip decodable are reported as preroll."""
    not_playable: dict[int, int] = defaultdict(int)
    preroll = 0
    for g in index.primaries():
        raw_only = np.flatnonzero(g.in_raw & ~g.listed).tolist()
        n = sum(1 for i in raw_only if g.refs[i].seq <= _VIDEO_MAX)  # audio always travels raw
        if n:
            not_playable[g.height] += n
        if g.listed.any():
            preroll += int(np.count_nonzero(g.listed & ~g.in_range(claim.from_ms, claim.to_ms)))
    for h, n in sorted(not_playable.items()):
        report.add("frame.not_playable", f"{n} verified frame(s) are in no clip (no keyframe since a gap); kept as raw bytes",
                   height=h, count=n)
    if preroll:
        report.add("clip.preroll", f"{preroll} frame(s) outside the range make the clip decodable", count=preroll)


def _check_gaps(claim: EvidenceClaim, trusted: Mapping[int, Manifest], index: _FrameIndex, report: Report) -> None:
    """Declared gaps that touch the range, and holes in the sequence nobody declared."""
    declared = sorted((g.from_seq, g.to_seq) for m in trusted.values() for g in m.gaps)
    raw_only = sorted(g.refs[i].seq for g in index.primaries() for i in np.flatnonzero(g.in_raw & ~g.listed).tolist())
    for h in sorted(trusted):
        for g in trusted[h].gaps:
            if gap_overlaps(g.from_ms, g.to_ms, claim.from_ms, claim.to_ms):
                _report_gap(h, g, trusted[h], declared, raw_only, report)
        m = trusted[h]
        if m.stream_end == "unended" and m.window_start_ms < claim.to_ms and m.window_end_ms > claim.from_ms:
            report.add("stream.unended", "the camera's stream stopped in this block without a signed end", height=h)
    seqs = sorted(r.seq for g in index.primaries() for r in g.refs)
    if not all(map(operator.eq, map(operator.sub, seqs[1:], seqs), itertools.repeat(1))):  # else no hole to look at
        _report_undeclared_holes(claim, index.primaries(), declared, report)
    report.gaps.sort(key=lambda g: (g.from_ms, g.to_ms))


def _report_undeclared_holes(claim: EvidenceClaim, primaries: list[_Group], declared: list[tuple[int, int]],
                             report: Report) -> None:
    """Holes between consecutive frames of a track that touch the range and no declared gap covers."""
    frames = sorted(((r.seq, g.height, r.timestamp_ms) for g in primaries for r in g.refs), key=operator.itemgetter(0))
    for (a_seq, a_height, a_ts), (b_seq, b_height, b_ts) in zip(frames, frames[1:]):
        # each track numbers its own packets (core.block.track_of): no hole between two tracks
        if b_seq == a_seq + 1 or b_height - a_height > 1 or track_of(a_seq) != track_of(b_seq):
            continue
        if not (a_ts < claim.to_ms and b_ts > claim.from_ms):
            continue
        lo, hi = a_seq + 1, b_seq - 1
        if not _covered(lo, hi, declared):
            report.add("gap.undeclared", f"seq {lo}-{hi} missing without a declared gap", height=b_height)


def _check_declared_outages(claim: EvidenceClaim, trusted: Mapping[int, Manifest], keys: Sequence[bytes],
                            report: Report) -> None:
    """Issue 10: each outage the camera declared (signed) in a trusted manifest is checked under
    the camera's device keys from the chain; one touching the range is a gap on record."""
    for h in sorted(trusted):
        m = trusted[h]
        for proof in m.declared_outages:
            check = verify_proof(proof, camera_ip=m.camera_ip, window=(m.window_start_ms, m.window_end_ms), keys=keys)
            d = check.declaration
            if check.problem is ProofProblem.SIGNATURE:
                report.add("camera.outage.signature.invalid", check.detail, height=h)
            elif check.problem is not None or d is None:
                report.add("camera.outage.invalid", check.detail, height=h)
            elif d.from_ms < claim.to_ms and d.to_ms > claim.from_ms:
                report.gaps.append(GapEntry("outage", d.from_ms, d.to_ms, h, after_seq=d.after_seq, reason=d.reason))
                report.add("camera.outage.declared", f"the camera declared an outage after seq {d.after_seq}, "
                                                     f"{d.from_ms}..{d.to_ms}: {d.reason}", height=h)
    report.gaps.sort(key=lambda g: (g.from_ms, g.to_ms))


def _covered(lo: int, hi: int, spans: Sequence[tuple[int, int]]) -> bool:
    """Whether the declared spans (sorted) cover every seq of [lo, hi]: O(spans), not O(hole)."""
    cursor = lo
    for a, b in spans:
        if b < cursor:
            continue
        if a > cursor:
            return False
        cursor = b + 1
        if cursor > hi:
            return True
    return cursor > hi


def _report_gap(h: int, g: Any, m: Manifest, declared: list[tuple[int, int]], raw_only: list[int], report: Report) -> None:
    subs = sum(len(fs) for c, fs in m.substitutions if c == g.substitute_camera) if g.substitute_camera else 0
    # frames after the gap that could not be decoded (until the next gap)
    next_gap = min((a for a, _ in declared if a > g.to_seq), default=None)
    after = sum(1 for s in raw_only if s > g.to_seq and (next_gap is None or s < next_gap))
    report.gaps.append(GapEntry("substituted" if g.substitute_camera else "declared", g.from_ms, g.to_ms, h,
                                g.from_seq, g.to_seq, g.keyframe_lost, h0x(g.substitute_camera), subs, after))
    report.add("gap.declared", f"seq {g.from_seq}-{g.to_seq} declared lost", height=h)
    if g.keyframe_lost:
        report.add("gap.keyframe_lost", f"seq {g.from_seq}-{g.to_seq} included a keyframe", height=h)
    if g.substitute_camera is not None:
        report.add("gap.substituted", f"seq {g.from_seq}-{g.to_seq} shown from camera {h0x(g.substitute_camera)[:12]}…",
                   height=h)


def _count_presented(index: _FrameIndex, trusted: Mapping[int, Manifest], report: Report) -> None:
    """In one pass over the index: per trusted block, the camera's frames presented
    (``frames_presented``); per track, those of them not flagged (report.tracks); audio also as a
    finding. (Once a pass per block: quadratic, 0.1 s of an hour's 60 blocks × 90,000 frames.)"""
    per_height: dict[int, int] = defaultdict(int)
    per_track: dict[int, int] = defaultdict(int)
    for g in index.primaries():
        carried = g.in_clip | g.in_raw
        n = int(np.count_nonzero(carried))
        if not n:
            continue
        per_height[g.height] += n
        counted = np.flatnonzero(carried & ~g.flagged)
        if not len(counted):
            continue
        if max(map(_SEQ, g.refs)) > _VIDEO_MAX:  # a block with sound: each frame's track
            for i in counted.tolist():
                per_track[track_of(g.refs[i].seq)] += 1
        else:
            per_track[0] += len(counted)
    counts: dict[str, int] = defaultdict(int)
    for track, n in per_track.items():
        counts[track_name(track)] += n
    report.tracks = dict(sorted(counts.items()))
    if counts.get("audio"):
        report.add("track.audio", f"{counts['audio']} audio packet(s) verified against the anchored roots",
                   count=counts["audio"])
    for h in trusted:
        report.block(h).frames_presented = per_height.get(h, 0)


def _finish(report: Report, trusted: Mapping[int, Manifest], index: _FrameIndex | None) -> Report:
    if index is not None:
        _count_presented(index, trusted, report)
    report.findings = merge_findings(report.findings)
    for f in report.findings:  # per-block status column, including findings made before the entry existed
        if f.height is not None:
            entry = report.block(f.height)
            if f.code not in entry.codes:
                entry.codes.append(f.code)
    return report


def _relative(values: Sequence[int]) -> list[int]:
    if not values:
        return []
    base = min(values)
    return [v - base for v in values]


def clip_entries(claim: EvidenceClaim, manifests: Mapping[int, Manifest]) -> list[ClipEntry]:
    """Report rows for the clips: frame count and capture-time span, from the trusted manifests."""
    out = []
    index: dict[tuple[int, bytes, int], int] = {}
    for h, m in manifests.items():
        index.update(((h, claim.camera_id, f.seq), f.timestamp_ms) for f in m.frames)
        for sc, fs in m.substitutions:
            index.update(((h, sc, f.seq), f.timestamp_ms) for f in fs)
    for c in claim.clips:
        ts = [index[(h, c.camera, seq)] for h, seq in c.frames if (h, c.camera, seq) in index]
        out.append(ClipEntry(path=c.path, kind=c.kind, camera=h0x(c.camera) or "", frames=len(c.frames),
                             start_ms=min(ts) if ts else None, end_ms=max(ts) if ts else None,
                             reencoded=c.reencoded, why=c.why))
    return out
