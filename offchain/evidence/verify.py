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

import hashlib
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..core.block import FRAME_LEAF_ENCODING, ZERO32, BlockHeader, FrameRef, Manifest, ManifestFormatError, camera_id, frames_tree
from ..core.cid import cid_from_digest
from ..core.merkle import InvalidMerkleInput, MultiProof, leaf_hash, process_multiproof
from .report import ClipEntry, GapEntry, Report, merge_findings

__all__ = [
    "ChainBlock",
    "ChainFacts",
    "BlockClaim",
    "ClipClaim",
    "ClipSamples",
    "EvidenceClaim",
    "RawClaim",
    "ManifestCheck",
    "check_manifest",
    "known_leaves",
    "manifest_tree",
    "classify_digest",
    "decode_key",
    "parse_multiproof",
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
    proofs_on_chain: dict[int, bool | None] = field(default_factory=dict)  # None: not asked


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


@dataclass
class ClipSamples:
    """What a clip file holds: its samples in file (decode) order as (sha256, pts in ms)."""

    samples: list[tuple[bytes, int]] | None = None
    error: str | None = None


# --------------------------------------------------------------------------- small pure rules


def classify_digest(actual: bytes | None, expected: bytes, anchored: set[bytes] | Mapping[bytes, Any]) -> str | None:
    """None if the bytes are right; ``frame.order.invalid`` if they are another anchored frame's
    bytes (swapped or reordered); else ``frame.digest.mismatch``."""
    if actual == expected:
        return None
    if actual is not None and actual in anchored:
        return "frame.order.invalid"
    return "frame.digest.mismatch"


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
    codes = [("manifest.digest.match", "")]
    try:
        m = Manifest.from_bytes(data)
    except ManifestFormatError as exc:
        return ManifestCheck(None, False, codes + [("manifest.invalid", str(exc))])
    bad = []
    if m.camera_id != header.camera_id:
        bad.append("camera")
    if m.height != header.height:
        bad.append("height")
    if (m.window_start_ms, m.window_end_ms) != (header.window_start_ms, header.window_end_ms):
        bad.append("window")
    if any(not header.window_start_ms <= f.timestamp_ms < header.window_end_ms for f in m.frames):
        bad.append("frame outside window")
    if bad:
        codes.append(("manifest.header.mismatch", "manifest disagrees with header on " + ", ".join(bad)))
    order_ok = all(b.seq > a.seq and b.timestamp_ms >= a.timestamp_ms for a, b in zip(m.frames, m.frames[1:]))
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


def parse_multiproof(doc: Mapping[str, Any] | None, known: Mapping[tuple, bytes] | None = None,
                     ) -> tuple[MultiProof, list[bytes], list[tuple[int, int, bytes]]]:
    """A stored multiproof → (proof, leaf hashes, (seq, ts, sha) per leaf). Raises ValueError.

    ``known`` maps (camera, seq, ts, sha) of a verified tree's leaves to their hashes, so honest
    proofs are not hashed again; any other leaf value is hashed as the library would."""
    if not isinstance(doc, Mapping):
        raise ValueError("no multiproof")
    if list(doc.get("leafEncoding", FRAME_LEAF_ENCODING)) != list(FRAME_LEAF_ENCODING):
        raise ValueError(f"unexpected leafEncoding {doc.get('leafEncoding')}")
    try:
        mp = MultiProof.from_json(doc)
        hashes, keys = [], []
        for v in mp.leaves:
            key = (int(v[1]), int(v[2]), bytes.fromhex(str(v[3]).removeprefix("0x")))
            cam = str(v[0]).lower()
            h = known.get((cam, *key)) if known is not None and len(v) == 4 else None
            hashes.append(h if h is not None else leaf_hash(FRAME_LEAF_ENCODING, v))
            keys.append(key)
    except (InvalidMerkleInput, TypeError, ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"malformed multiproof: {exc}") from exc
    return mp, hashes, keys


def known_leaves(camera: bytes, frames: Sequence[FrameRef], tree) -> dict[tuple, bytes]:
    """(camera hex, seq, ts, sha) -> leaf hash, read from a built tree (no hashing)."""
    if tree is None:
        return {}
    cam = "0x" + camera.hex()
    return {(cam, f.seq, f.timestamp_ms, f.sha256): tree.leaf_hash(i) for i, f in enumerate(frames)}


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


def gap_overlaps(gap_from: int, gap_to: int, from_ms: int, to_ms: int) -> bool:
    # Gap bounds are capture times of the span; treat them as inclusive, so a gap is reported when
    # any instant of it touches the range.
    return gap_from < to_ms and gap_to >= from_ms


# --------------------------------------------------------------------------- the verifier


@dataclass
class _Frame:
    """A frame as the trusted manifest lists it, with where it was presented."""

    height: int
    camera: bytes
    ref: FrameRef
    primary: bool
    in_clip: bool = False      # listed in a clip that carries its bytes (not re-encoded)
    in_raw: bool = False       # carried as raw bytes
    listed: bool = False       # listed in any clip
    flagged: bool = False      # a failure was already reported about it


def verify_evidence(
    claim: EvidenceClaim,
    chain: ChainFacts,
    clips: Mapping[str, ClipSamples],
    raw_digests: Mapping[str, bytes | None],
    *,
    produced_by: str = "frameledger verify",
    pinned: bool = True,
    prefindings: Iterable[tuple[str, str, int | None, int | None, bytes | None]] = (),
    skip: set[tuple] | frozenset = frozenset(),
) -> Report:
    """Apply every rule; see the module docstring. ``prefindings`` are (code, message, height,
    seq, camera) found before this call (e.g. by extraction while fetching); ``skip`` holds the
    keys ``("manifest", h)`` / ``("frame", h, camera, seq)`` they already cover, so nothing is
    reported twice."""
    cam = claim.camera_id
    cam_hex = h0x(cam)
    report = Report(camera_id=cam_hex, camera_ip=claim.camera_ip, from_ms=claim.from_ms, to_ms=claim.to_ms,
                    chain_id=chain.chain_id, ledger=chain.ledger, consortium=chain.consortium, produced_by=produced_by)
    for code, msg, height, seq, camera in prefindings:
        report.add(code, msg, height=height, seq=seq, camera=h0x(camera) if camera and camera != cam else None)
    if not pinned:
        report.add("bundle.contract.unpinned", f"trusting the ledger address in the evidence: {claim.ledger}")
    if claim.chain_id is not None and claim.chain_id != chain.chain_id:
        report.add("chain.id.mismatch", f"evidence anchored on chain {claim.chain_id}, RPC answers for {chain.chain_id}")
        return report
    if claim.camera_ip is not None and camera_id(claim.camera_ip) != cam:
        report.add("bundle.invalid", f"camera ip {claim.camera_ip} does not hash to camera id {cam_hex}")
    if claim.from_ms >= claim.to_ms:
        report.add("range.invalid", f"empty range [{claim.from_ms}, {claim.to_ms})")
        return report

    # ---- range coverage, from the chain alone
    in_range = list(chain.heights_in_range)
    if not in_range:
        report.add("range.empty", "no block of this camera is anchored for any part of the range")
    windows = [(b.header.window_start_ms, b.header.window_end_ms) for h in in_range
               if (b := chain.blocks.get(h)) is not None]
    if in_range:
        for a, b in uncovered_spans(claim.from_ms, claim.to_ms, windows):
            report.gaps.append(GapEntry("uncovered", a, b))
            report.add("range.uncovered", f"no anchored block covers {a}..{b}")

    claimed = {}
    for bc in claim.blocks:
        if bc.height in claimed:
            report.add("bundle.invalid", f"block {bc.height} presented twice", height=bc.height)
        claimed[bc.height] = bc
    for h in in_range:
        if h not in claimed:
            report.block(h)
            report.add("block.missing", f"block {h} covers part of the range but is not in the evidence", height=h)

    # Every anchored manifest digest this verifier knows, to recognise a manifest filed under the
    # wrong block.
    manifest_digests = {b.header.manifest_digest: h for h, b in chain.blocks.items() if b is not None}

    trusted: dict[int, Manifest] = {}
    for h in sorted(claimed):
        bc = claimed[h]
        entry = report.block(h)
        entry.context_only = h not in in_range
        cb = chain.blocks.get(h)
        if cb is None:
            report.add("block.root.unanchored", f"no block of this camera is anchored at height {h}", height=h)
            continue
        hdr = cb.header
        entry.block_hash = h0x(cb.block_hash)
        entry.window_start_ms, entry.window_end_ms = hdr.window_start_ms, hdr.window_end_ms
        entry.frame_count, entry.frames_root = hdr.frame_count, h0x(hdr.frames_root)
        entry.manifest_cid = cid_from_digest(hdr.manifest_digest)
        entry.anchor_tx, entry.attest_txs = cb.anchor_tx, list(cb.attest_txs)
        entry.attestations, entry.disputes, entry.finalized = cb.attestations, cb.disputes, cb.finalized

        # The authoritative header is one that hashes to the anchored block hash: the chain's own
        # record if it does (an honest RPC), else the presented one if it does (a hash preimage is
        # as good as the record), else none and the block's contents cannot be checked.
        claimed_hash = bc.header.hash if bc.header is not None else None
        chain_ok = hdr.hash == cb.block_hash
        authority = hdr if chain_ok else (bc.header if claimed_hash == cb.block_hash else None)
        if (claimed_hash != cb.block_hash or not chain_ok or hdr.camera_id != cam
                or (bc.block_hash is not None and bc.block_hash.lower() != h0x(cb.block_hash))):
            why = "malformed header" if bc.header is None else (
                f"header hashes to {claimed_hash.hex()[:16]}…, anchored {cb.block_hash.hex()[:16]}…"
                if claimed_hash != cb.block_hash else "the chain's header record does not hash to its block hash")
            report.add("block.header.mismatch", why, height=h)
        else:
            report.add("block.header.match", height=h)
        if cb.finalized:
            report.add("block.final", height=h)
        else:
            report.add("block.not_final", f"{cb.attestations} attestation(s), below quorum", height=h)
        if cb.disputes:
            report.add("block.disputed", f"{cb.disputes} node(s) disputed this block", height=h)
        if bc.anchor_tx is not None and cb.anchor_tx is not None and bc.anchor_tx.lower() != cb.anchor_tx.lower():
            report.add("tx.anchor.mismatch", f"named {bc.anchor_tx[:18]}…, anchored by {cb.anchor_tx[:18]}…", height=h)
        if bc.attest_txs and {t.lower() for t in bc.attest_txs} != {t.lower() for t in cb.attest_txs}:
            report.add("tx.attest.mismatch", "attestation transactions differ from the chain's", height=h)
        prev = chain.blocks.get(h - 1)
        if prev is not None and h - 1 in claimed and hdr.prev_hash != prev.block_hash:
            report.add("block.chain.broken", f"block {h} does not link to block {h - 1}", height=h)

        if ("manifest", h) in skip or authority is None:
            continue
        mc = check_manifest(bc.manifest, authority, manifest_digests)
        for code, msg in mc.codes:
            report.add(code, msg, height=h)
        if mc.trusted and mc.manifest is not None:
            trusted[h] = mc.manifest

    # ---- index every frame of the trusted manifests
    frames: dict[tuple[int, bytes, int], _Frame] = {}
    anchored_digests: set[bytes] = set()
    for h, m in trusted.items():
        for f in m.frames:
            frames[(h, cam, f.seq)] = _Frame(h, cam, f, True)
            anchored_digests.add(f.sha256)
        for sub_cam, sub_frames in m.substitutions:
            for f in sub_frames:
                frames[(h, sub_cam, f.seq)] = _Frame(h, sub_cam, f, False)
                anchored_digests.add(f.sha256)
    for key in skip:
        if key[0] == "frame" and key[1:] in frames:
            frames[key[1:]].flagged = True
    untrusted_heights = set(claimed) - set(trusted)

    def fail_frame(code: str, fr: _Frame | None, msg: str, height: int | None = None, seq: int | None = None,
                   camera: bytes | None = None) -> None:
        if fr is not None:
            if fr.flagged:
                return
            fr.flagged = True
            height, seq, camera = fr.height, fr.ref.seq, fr.camera
        report.add(code, msg, height=height, seq=seq, camera=h0x(camera) if camera is not None and camera != cam else None)

    matched_bytes = 0

    # ---- clips
    for clip in claim.clips:
        listed: list[_Frame | None] = []
        involves_untrusted = False
        for h, seq in clip.frames:
            fr = frames.get((h, clip.camera, seq))
            if fr is None:
                if h in untrusted_heights or h not in claimed:
                    involves_untrusted = True
                else:
                    report.add("frame.unknown", f"clip {clip.path} lists a frame its manifest does not", height=h, seq=seq)
            else:
                fr.listed = True
                if not clip.reencoded:
                    fr.in_clip = True
            listed.append(fr)
        cs = clips.get(clip.path)
        if cs is None or cs.samples is None:
            report.add("clip.invalid", f"{clip.path}: {cs.error if cs else 'not in the evidence'}")
            for fr in listed:
                if fr is not None:
                    fr.flagged = True
            continue
        samples = cs.samples
        known = [fr for fr in listed if fr is not None]
        clip_ok = True
        if clip.reencoded:
            report.add("clip.reencoded", f"{clip.path} was re-encoded; original bytes are carried as raw frames")
            exp_ts = sorted(fr.ref.timestamp_ms for fr in known)
            got_ts = sorted(p for _, p in samples)
            if len(samples) != len(listed) or (known and _relative(exp_ts) != _relative(got_ts)):
                report.add("clip.timing.mismatch", f"{clip.path}: {len(samples)} pictures at times that differ from "
                                                    f"the {len(listed)} anchored frames it stands for")
            continue
        # decode order of the listing itself
        keys = [decode_key(fr.ref) for fr in known]
        if any(b <= a for a, b in zip(keys, keys[1:])):
            report.add("frame.order.invalid", f"{clip.path} lists frames out of decode order")
            clip_ok = False
        pairs: list[tuple[_Frame, int]] = []
        if len(samples) == len(listed):
            for i, fr in enumerate(listed):
                if fr is None:
                    continue
                actual = samples[i][0]
                code = classify_digest(actual, fr.ref.sha256, anchored_digests)
                if code is None:
                    pairs.append((fr, i))
                else:
                    clip_ok = False
                    fail_frame(code, fr, f"{clip.path} sample {i} hashes to {actual.hex()[:16]}…")
        else:
            clip_ok = False
            pool: dict[bytes, list[int]] = defaultdict(list)
            for i, (sha, _) in enumerate(samples):
                pool[sha].append(i)
            for fr in known:
                idx = pool.get(fr.ref.sha256)
                if idx:
                    pairs.append((fr, idx.pop(0)))
                else:
                    fail_frame("frame.missing", fr, f"{clip.path} lacks this frame's packet")
            if not involves_untrusted:
                for sha, idx in pool.items():
                    for i in idx:
                        report.add("frame.digest.mismatch", f"{clip.path} sample {i} is no anchored frame")
            order = [i for _, i in pairs]
            if any(b < a for a, b in zip(order, order[1:])):
                report.add("frame.order.invalid", f"{clip.path} carries frames out of order")
        if pairs:
            exp = _relative([fr.ref.timestamp_ms for fr, _ in pairs])
            got = _relative([samples[i][1] for _, i in pairs])
            if exp != got:
                clip_ok = False
                bad = sum(1 for a, b in zip(exp, got) if a != b)
                report.add("clip.timing.mismatch", f"{clip.path}: {bad} packet(s) presented at times other than captured")
        matched_bytes += len(pairs)
        if clip_ok and not involves_untrusted:
            report.add("clip.packets.match", f"{clip.path}: {len(pairs)} packets")

    # ---- raw frames
    for rc in claim.raw:
        fr = frames.get((rc.height, rc.camera, rc.seq))
        if fr is None:
            if rc.height in trusted:
                report.add("frame.unknown", f"raw frame {rc.path} is not in its manifest", height=rc.height, seq=rc.seq)
            continue
        fr.in_raw = True
        actual = raw_digests.get(rc.path)
        if actual is None:
            fail_frame("frame.missing", fr, f"raw frame {rc.path} is not in the evidence")
            continue
        code = classify_digest(actual, fr.ref.sha256, anchored_digests)
        if code is None:
            matched_bytes += 1
        else:
            fail_frame(code, fr, f"raw frame {rc.path} hashes to {actual.hex()[:16]}…")

    # ---- multiproofs: every primary frame presented must be proven against the anchored root
    by_height: dict[int, list[_Frame]] = defaultdict(list)
    for fr in frames.values():
        if fr.primary:
            by_height[fr.height].append(fr)
    for h in sorted(trusted):
        bc, cb = claimed[h], chain.blocks[h]
        root_anchored = cb.header.frames_root if cb.header.hash == cb.block_hash else bc.header.frames_root
        presented = {(fr.ref.seq, fr.ref.timestamp_ms, fr.ref.sha256) for fr in by_height[h] if fr.listed or fr.in_raw}
        if not presented and bc.proof is None:
            continue
        tree = manifest_tree(cam, hashlib.sha256(bc.manifest).digest(), trusted[h].frames) if bc.manifest else None
        try:
            mp, hashes, keys = parse_multiproof(bc.proof, known_leaves(cam, trusted[h].frames, tree))
            root = process_multiproof(hashes, mp.proof, mp.proof_flags) if hashes else None
        except (ValueError, InvalidMerkleInput) as exc:
            report.add("frame.proof.invalid", str(exc), height=h)
            continue
        on_chain = chain.proofs_on_chain.get(h)
        if root != root_anchored or on_chain is False:
            report.add("frame.proof.invalid", "multiproof does not verify against the anchored root", height=h)
        elif not presented <= set(keys):
            report.add("frame.proof.invalid", f"{len(presented - set(keys))} presented frame(s) not covered by the proof", height=h)
        else:
            report.add("frame.proof.valid", f"{len(keys)} frames" + (", verifyFrames on chain" if on_chain else ""), height=h)

    # ---- completeness: every anchored frame of the range must be presented
    for fr in frames.values():
        in_range = claim.from_ms <= fr.ref.timestamp_ms < claim.to_ms
        if fr.primary:
            if in_range and not (fr.in_clip or fr.in_raw):
                fail_frame("frame.missing", fr, "anchored frame of the range is not presented")
        else:
            if (in_range or fr.listed) and not fr.in_raw:
                fail_frame("frame.missing", fr, "substituted frame's original bytes are not presented")
    if matched_bytes:
        report.add("frame.digest.match", f"{matched_bytes} frame(s) hash to their anchored digests", count=matched_bytes)

    not_playable: dict[int, int] = defaultdict(int)
    preroll = 0
    for fr in frames.values():
        if fr.primary and fr.in_raw and not fr.in_clip:
            not_playable[fr.height] += 1
        if fr.primary and fr.in_clip and not claim.from_ms <= fr.ref.timestamp_ms < claim.to_ms:
            preroll += 1
    for h, n in sorted(not_playable.items()):
        report.add("frame.not_playable", f"{n} verified frame(s) cannot be decoded and are kept as raw bytes", height=h, count=n)
    if preroll:
        report.add("clip.preroll", f"{preroll} frame(s) outside the range make the clip decodable", count=preroll)

    # ---- gaps: declared ones, and holes nobody declared
    declared = sorted((g.from_seq, g.to_seq) for m in trusted.values() for g in m.gaps)
    raw_only = sorted(fr.ref.seq for fr in frames.values() if fr.primary and fr.in_raw and not fr.in_clip)
    for h in sorted(trusted):
        for g in trusted[h].gaps:
            if not gap_overlaps(g.from_ms, g.to_ms, claim.from_ms, claim.to_ms):
                continue
            subs = 0
            if g.substitute_camera is not None:
                subs = sum(len(fs) for c, fs in trusted[h].substitutions if c == g.substitute_camera)
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
    primaries = sorted((fr for fr in frames.values() if fr.primary), key=lambda fr: fr.ref.seq)
    for a, b in zip(primaries, primaries[1:]):
        if b.ref.seq == a.ref.seq + 1 or b.height - a.height > 1:
            continue
        if not (a.ref.timestamp_ms < claim.to_ms and b.ref.timestamp_ms > claim.from_ms):
            continue
        missing = range(a.ref.seq + 1, b.ref.seq)
        if not all(any(lo <= s <= hi for lo, hi in declared) for s in missing):
            report.add("gap.undeclared", f"seq {missing.start}-{missing.stop - 1} missing without a declared gap",
                       height=b.height)
    report.gaps.sort(key=lambda g: (g.from_ms, g.to_ms))

    for h, entry in ((h, report.block(h)) for h in trusted):
        entry.frames_presented = sum(1 for fr in by_height[h] if fr.in_clip or fr.in_raw)
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
        out.append(ClipEntry(c.path, c.kind, h0x(c.camera), len(c.frames), min(ts) if ts else None,
                             max(ts) if ts else None, c.reencoded))
    return out
