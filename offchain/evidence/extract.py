"""Extraction (S1): a camera and a time range in, verified video and an evidence bundle out.

Seed 001 (10) and seed 000 S104: "input the camera IP and the time range, traverse the blocks,
match each block's timestamps, take the video data of that period from each block and restore it
in time order". Here that becomes:

1. find the anchored blocks that cover the range (``VideoLedger.blocksInRange``) and read each
   one's record, anchoring transaction and attestations from the chain;
2. fetch each manifest by the CID of its anchored digest, and the frames it lists, from the first
   content store that has an intact copy (every byte is re-hashed here; no store is trusted);
3. verify everything with the rules of :mod:`offchain.evidence.verify`;
4. restore the video in time order: the camera's own frames are *remuxed*, packet for packet, into
   a browser-playable MP4 (H.264, ``+faststart``), so every sample in the file is an anchored frame;
   a span filled from another camera (I7) is re-encoded alone into its own clip and marked;
5. write the clips, the report (JSON and text) and the bundle (S6) to ``out_dir``.

A clip must start on a keyframe, so it starts at the keyframe before the range (in the previous
block if needed) and, for streams with B-frames, ends where every frame of the range can be
decoded; those extra frames are verified like the others and reported (``clip.preroll``). After a
gap, frames up to the next keyframe cannot be decoded: they are verified and kept as raw bytes
in the bundle (``frame.not_playable``), never silently dropped.

The functions at the top (planning) are pure; `extract` is the imperative shell around them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..camera.sources import CodecConfig, EncodedFrame
from ..chain.ledger import VideoLedgerClient
from ..core.block import FrameRef, Manifest, ManifestFormatError, camera_id
from ..core.cid import cid_from_digest
from ..store.base import BlockNotFound, ContentStore, CorruptBlock, StoreError
from .bundle import ChainReader, bundle_index, read_clip_samples, write_bundle
from .report import Report
from .verify import (
    PRIMARY,
    SUBSTITUTED,
    BlockClaim,
    ChainFacts,
    ClipClaim,
    EvidenceClaim,
    RawClaim,
    check_manifest,
    classify_digest,
    clip_entries,
    decode_key,
    h0x,
    known_leaves,
    manifest_tree,
    verify_evidence,
)

__all__ = ["EvidenceError", "ExtractResult", "extract", "parse_camera", "parse_time", "plan_stream"]

log = logging.getLogger(__name__)

FETCH_WORKERS = 8


class EvidenceError(ValueError):
    """Input a person can fix: a camera that is neither an IP nor a 0x id, an unreadable time."""


# --------------------------------------------------------------------------- input parsing


def parse_camera(text: str | bytes) -> tuple[bytes, str | None]:
    """An IP (v4/v6, or any registered string that is not a 0x id) → (keccak id, ip); a 0x-prefixed
    32-byte hex id → (id, None)."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) != 32:
            raise EvidenceError(f"a camera id is 32 bytes, got {len(text)}")
        return bytes(text), None
    s = str(text).strip()
    if not s:
        raise EvidenceError("empty camera")
    if s.lower().startswith("0x"):
        try:
            b = bytes.fromhex(s[2:])
        except ValueError:
            raise EvidenceError(f"camera id {s!r} is not hex") from None
        if len(b) != 32:
            raise EvidenceError(f"camera id {s!r} is not 32 bytes")
        return b, None
    try:
        ipaddress.ip_address(s)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9._:\-\[\]]+", s):
            raise EvidenceError(f"camera {s!r} is neither an IP address nor a 0x-prefixed camera id") from None
    return camera_id(s), s


def parse_time(text: str | int) -> int:
    """Epoch milliseconds from an int, a digit string (epoch ms) or ISO 8601 (``Z``/offset; a
    time without offset is UTC, because evidence times must not depend on the viewer's zone)."""
    if isinstance(text, int):
        return text
    s = str(text).strip()
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise EvidenceError(f"time {s!r} is neither epoch milliseconds nor ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return round(dt.timestamp() * 1000)


# --------------------------------------------------------------------------- pure planning

Item = tuple[int, FrameRef]  # (block height, frame)


def plan_stream(
    items: Sequence[Item],
    from_ms: int,
    to_ms: int,
    unavailable: set[int] | frozenset[int] = frozenset(),
    group_of: Callable[[int], Any] = lambda h: None,
) -> tuple[list[list[Item]], list[Item]]:
    """Which frames of one camera's stream to present, and how.

    Returns (segments, raw): each segment is a decodable run in decode order (it starts on a
    keyframe and holds every frame the range's frames need), raw are frames of the range that no
    segment can carry (no keyframe before them since the last break). A break is a sequence hole
    (a gap, or a frame no store could deliver) or a change of codec configuration (``group_of``).
    """
    ordered = sorted(items, key=lambda it: it[1].seq)
    runs: list[list[Item]] = []
    cur: list[Item] = []
    for h, f in ordered:
        if f.seq in unavailable:
            if cur:
                runs.append(cur)
            cur = []
            continue
        if cur and (f.seq != cur[-1][1].seq + 1 or group_of(h) != group_of(cur[-1][0])):
            runs.append(cur)
            cur = []
        cur.append((h, f))
    if cur:
        runs.append(cur)

    segments: list[list[Item]] = []
    raw: list[Item] = []
    for run in runs:
        needed = [it for it in run if from_ms <= it[1].timestamp_ms < to_ms]
        if not needed:
            continue
        first = needed[0][1]
        keys = [it[1] for it in run if it[1].keyframe]
        before = [k for k in keys if k.seq <= first.seq]
        key = before[-1] if before else next((k for k in keys if k.seq > first.seq), None)
        if key is None:
            raw.extend(needed)
            continue
        dec = sorted(run, key=lambda it: decode_key(it[1]))
        pos = {it[1].seq: i for i, it in enumerate(dec)}
        start = pos[key.seq]
        playable = [it for it in needed if it[1].seq >= key.seq and pos[it[1].seq] >= start]
        raw.extend(it for it in needed if not (it[1].seq >= key.seq and pos[it[1].seq] >= start))
        if not playable:
            continue
        end = max(pos[it[1].seq] for it in playable)
        # Leading pictures of an open GOP (decoded after the keyframe, shown before it) reference
        # the previous GOP: not decodable from here, so left out.
        segments.append([it for it in dec[start : end + 1] if it[1].seq >= key.seq])
    return segments, raw


def needs_previous_block(items: Sequence[Item], from_ms: int, to_ms: int) -> bool:
    """Whether the keyframe the range's first frame depends on lies before the loaded frames."""
    ordered = sorted(items, key=lambda it: it[1].seq)
    idx = next((i for i, it in enumerate(ordered) if from_ms <= it[1].timestamp_ms < to_ms), None)
    if idx is None:
        return False
    i = idx
    while True:
        if ordered[i][1].keyframe:
            return False
        if i == 0 or ordered[i - 1][1].seq != ordered[i][1].seq - 1:
            return i == 0  # reached the first loaded frame without a keyframe
        i -= 1


# --------------------------------------------------------------------------- fetching


@dataclass
class Fetched:
    data: bytes | None
    corrupt: list[bytes | None] = field(default_factory=list)  # actual digests of corrupt copies seen
    errors: list[str] = field(default_factory=list)


class Fetcher:
    """Fetch by digest from the first store holding an intact copy. Every byte is re-hashed here:
    a store is a convenience, never a witness."""

    def __init__(self, stores: Sequence[ContentStore]):
        self.stores = list(stores)
        self.frames = 0
        self.bytes = 0

    def get(self, digest: bytes) -> Fetched:
        cid = cid_from_digest(digest)
        out = Fetched(None)
        for store in self.stores:
            try:
                data = store.get(cid)
            except BlockNotFound:
                continue
            except CorruptBlock as exc:
                out.corrupt.append(exc.actual_digest)
                continue
            except StoreError as exc:
                out.errors.append(f"{store!r}: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - a broken backend must not stop an extraction
                out.errors.append(f"{store!r}: {exc!r}")
                continue
            actual = hashlib.sha256(data).digest()
            if actual != digest:
                out.corrupt.append(actual)
                continue
            out.data = data
            self.frames += 1
            self.bytes += len(data)
            return out
        return out

    def get_many(self, digests: Iterable[bytes]) -> dict[bytes, Fetched]:
        todo = list(dict.fromkeys(digests))
        if len(todo) < 4 or len(self.stores) == 0:
            return {d: self.get(d) for d in todo}
        with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
            return dict(zip(todo, pool.map(self.get, todo)))


# --------------------------------------------------------------------------- result


@dataclass
class ExtractResult:
    report: Report
    out_dir: Path
    bundle_path: Path | None
    report_json: Path
    report_txt: Path
    clips: list[Path]
    timings: dict[str, float]  # seconds per phase
    fetched: int = 0           # blocks (frames and manifests) fetched from the stores and re-hashed
    fetched_bytes: int = 0

    @property
    def verdict(self) -> str:
        return self.report.verdict


class _Timer:
    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.t[name] += now - self._last
        self._last = now


# --------------------------------------------------------------------------- the shell


def extract(
    camera: str | bytes,
    from_ms: int | str,
    to_ms: int | str,
    ledger: VideoLedgerClient | ChainReader,
    stores: Sequence[ContentStore],
    out_dir: str | os.PathLike[str],
    *,
    probe: bool = False,
    bundle: bool = True,
    produced_by: str = "frameledger extract",
) -> ExtractResult:
    """Extract, verify and restore ``camera``'s video for [from_ms, to_ms). See the module docstring.

    Raises :class:`EvidenceError` only for unusable input (camera or time spelling, empty range);
    every problem with the chain, the stores or the data is a status code in the report."""
    timer = _Timer()
    cam, ip = parse_camera(camera)
    from_ms, to_ms = parse_time(from_ms), parse_time(to_ms)
    if from_ms >= to_ms:
        raise EvidenceError(f"empty range: from {from_ms} is not before to {to_ms}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reader = ledger if isinstance(ledger, ChainReader) else ChainReader(ledger.contract.w3, ledger.address)
    fetcher = Fetcher(stores)

    prefindings: list[tuple[str, str, int | None, int | None, bytes | None]] = []
    skip: set[tuple] = set()
    claim = EvidenceClaim(camera_id=cam, from_ms=from_ms, to_ms=to_ms, chain_id=reader.chain_id,
                          ledger=reader.address, consortium=reader.consortium_address, camera_ip=ip)

    registered_ip = reader.camera_ip(cam)
    if registered_ip is None:
        report = Report(camera_id=h0x(cam), camera_ip=ip, from_ms=from_ms, to_ms=to_ms, chain_id=claim.chain_id,
                        ledger=claim.ledger, consortium=claim.consortium, produced_by=produced_by)
        report.add("camera.unknown", f"camera {ip or h0x(cam)} is not registered on this ledger")
        return _finish(report, out, None, [], timer, fetcher)
    claim.camera_ip = registered_ip

    # 1. blocks covering the range, from the chain
    in_range = reader.heights_in_range(cam, from_ms, to_ms)
    chain_blocks = reader.blocks(cam, in_range)
    timer.lap("chain")

    # 2. manifests
    def load_manifests(heights: Iterable[int]) -> dict[int, bytes | None]:
        got = {}
        for h in heights:
            cb = chain_blocks.get(h)
            if cb is None:
                got[h] = None
                continue
            f = fetcher.get(cb.header.manifest_digest)
            if f.data is None:
                skip.add(("manifest", h))
                digests = {b.header.manifest_digest: hh for hh, b in chain_blocks.items() if b is not None}
                actual = next((d for d in f.corrupt if d is not None), None)
                if f.corrupt:
                    other = digests.get(actual) if actual is not None else None
                    if other is not None and other != h:
                        prefindings.append(("manifest.order.invalid", f"store holds block {other}'s manifest "
                                                                      f"under this block's CID", h, None, None))
                    else:
                        prefindings.append(("manifest.digest.mismatch", "store copy of the manifest is corrupt "
                                                                        "or forged", h, None, None))
                else:
                    prefindings.append(("manifest.missing", "no store has the manifest "
                                        f"{cid_from_digest(cb.header.manifest_digest)}"
                                        + (f" ({'; '.join(f.errors)})" if f.errors else ""), h, None, None))
            elif f.corrupt:
                prefindings.append(("store.block.corrupt", "a store held a corrupt copy of the manifest", h, None, None))
            got[h] = f.data
        return got

    manifest_bytes = load_manifests(in_range)
    trusted: dict[int, Manifest] = {}

    def trust(heights: Iterable[int]) -> None:
        digests = {b.header.manifest_digest: hh for hh, b in chain_blocks.items() if b is not None}
        for h in heights:
            cb = chain_blocks.get(h)
            if cb is None or manifest_bytes.get(h) is None:
                continue
            mc = check_manifest(manifest_bytes[h], cb.header, digests)
            if mc.trusted and mc.manifest is not None:
                trusted[h] = mc.manifest

    trust(in_range)

    def primary_items() -> list[Item]:
        return [(h, f) for h, m in sorted(trusted.items()) for f in m.frames]

    # A clip must open on a keyframe; if the range's first GOP began in the previous block, that
    # block is loaded too, verified like the others and marked as context.
    context: int | None = None
    if in_range and in_range[0] > 1 and in_range[0] in trusted and needs_previous_block(primary_items(), from_ms, to_ms):
        h = in_range[0] - 1
        chain_blocks.update(reader.blocks(cam, [h]))
        cb = chain_blocks.get(h)
        if cb is not None and cb.finalized:
            before = (len(prefindings), set(skip))
            manifest_bytes.update(load_manifests([h]))
            trust([h])
            if h in trusted:
                context = h
            else:  # an unusable context block is not evidence of the range: forget it quietly
                del prefindings[before[0]:]
                skip.intersection_update(before[1])
                manifest_bytes.pop(h, None)
                chain_blocks.pop(h, None)
        else:
            chain_blocks.pop(h, None)
    timer.lap("manifests")

    codecs: dict[int, CodecConfig | None] = {}
    for h, m in trusted.items():
        try:
            codecs[h] = CodecConfig.from_json(m.codec) if m.codec else None
        except (KeyError, ValueError, TypeError):
            codecs[h] = None

    fingerprints = {h: (c.fingerprint if c is not None else None) for h, c in codecs.items()}

    def group_of(h: int) -> Any:
        return fingerprints.get(h)

    # 3. plan with everything available, fetch, then plan again around what could not be fetched
    items = primary_items()
    segments, raw = plan_stream(items, from_ms, to_ms, group_of=group_of)
    wanted: dict[tuple[int, bytes, int], FrameRef] = {}
    for h, f in [it for seg in segments for it in seg] + raw:
        wanted[(h, cam, f.seq)] = f
    # frames of the range whose fetch fails must still be reported: want them all
    for h, f in items:
        if from_ms <= f.timestamp_ms < to_ms:
            wanted[(h, cam, f.seq)] = f
    sub_entries: list[tuple[int, bytes, list[FrameRef]]] = []
    for h, m in sorted(trusted.items()):
        for sub_cam, sub_frames in m.substitutions:
            sel = [f for f in sub_frames if from_ms <= f.timestamp_ms < to_ms]
            if not sel:
                continue
            sub_entries.append((h, sub_cam, list(sub_frames)))
            s_segments, s_raw = plan_stream([(h, f) for f in sub_frames], from_ms, to_ms)
            for hh, f in [it for seg in s_segments for it in seg] + s_raw:
                wanted[(hh, sub_cam, f.seq)] = f
    timer.lap("plan")
    fetched = fetcher.get_many(f.sha256 for f in wanted.values())
    timer.lap("fetch")

    all_anchored = {f.sha256 for m in trusted.values() for f in m.frames} | {
        f.sha256 for m in trusted.values() for _, fs in m.substitutions for f in fs}
    data: dict[bytes, bytes] = {}
    unavailable: dict[bytes, set[int]] = defaultdict(set)  # camera -> seqs
    for (h, c, seq), f in wanted.items():
        got = fetched[f.sha256]
        if got.data is not None:
            data[f.sha256] = got.data
            if got.corrupt:
                prefindings.append(("store.block.corrupt", "a store held a corrupt copy of this frame", h, seq, c))
            continue
        unavailable[c].add(seq)
        skip.add(("frame", h, c, seq))
        actual = next((d for d in got.corrupt if d is not None), None)
        if got.corrupt:
            code = classify_digest(actual, f.sha256, all_anchored) or "frame.digest.mismatch"
            what = "another anchored frame's bytes" if code == "frame.order.invalid" else "bytes that hash differently"
            prefindings.append((code, f"the stores hold {what} under this frame's CID", h, seq, c))
        else:
            prefindings.append(("frame.missing", "no store has this frame" + (f" ({'; '.join(got.errors[:2])})"
                                                                            if got.errors else ""), h, seq, c))

    segments, raw = plan_stream(items, from_ms, to_ms, unavailable[cam], group_of=group_of)
    timer.lap("plan")

    # 4. restore: original segments remuxed (merged unless a substitution or codec change sits
    # between them), substituted spans re-encoded one clip each
    pieces: list[tuple[int, str, Any]] = []
    for seg in segments:
        pieces.append((min(f.timestamp_ms for _, f in seg), PRIMARY, seg))
    target = next((codecs[h] for h in sorted(trusted) if codecs.get(h) is not None), None)
    raw_claims: dict[tuple[int, bytes, int], RawClaim] = {}

    def add_raw(h: int, c: bytes, f: FrameRef) -> None:
        if f.sha256 in data:
            raw_claims[(h, c, f.seq)] = RawClaim(h, c, f.seq, f"frames/{f.sha256.hex()}")

    for h, f in raw:
        add_raw(h, cam, f)
    for h, sub_cam, sub_frames in sub_entries:
        s_segments, s_raw = plan_stream([(h, f) for f in sub_frames], from_ms, to_ms, unavailable[sub_cam])
        for hh, f in [it for seg in s_segments for it in seg] + s_raw:
            add_raw(hh, sub_cam, f)  # a substitute's original bytes always travel raw
        if s_segments:
            pieces.append((min(f.timestamp_ms for seg in s_segments for _, f in seg), SUBSTITUTED, (h, sub_cam, s_segments)))
    pieces.sort(key=lambda p: (p[0], p[1]))

    groups: list[tuple[str, Any]] = []
    for _, kind, payload in pieces:
        if kind == PRIMARY and groups and groups[-1][0] == PRIMARY and \
                group_of(groups[-1][1][-1][-1][0]) == group_of(payload[0][0]):
            groups[-1][1].append(payload)
        else:
            groups.append((kind, [payload] if kind == PRIMARY else payload))

    clip_paths: list[Path] = []
    clips_claim: list[ClipClaim] = []
    clip_files: dict[str, Path] = {}
    extra_findings: list[tuple[str, str, int | None, int | None, bytes | None]] = []
    sub_codec_cache: dict[bytes, CodecConfig | None] = {}
    for kind, payload in groups:
        index = len(clips_claim)
        if kind == PRIMARY:
            frames = [it for seg in payload for it in seg]
            codec = codecs.get(frames[0][0])
            name = f"clip-{index:03d}.mp4"
            if codec is None:
                extra_findings.append(("frame.not_playable", "the manifest records no codec configuration; "
                                       "frames kept as raw bytes", frames[0][0], None, None))
                for h, f in frames:
                    add_raw(h, cam, f)
                continue
            try:
                if codec.codec == "h264" and codec.extradata[:1] == b"\x01":
                    from .video import remux_to_mp4

                    remux_to_mp4(codec, [_encoded(f, data) for _, f in frames], out / name)
                    reencoded = False
                else:  # not copyable into a browser MP4: re-encode, keep the original bytes raw
                    from .video import reencode_span_to_mp4

                    reencode_span_to_mp4(codec, [_encoded(f, data) for _, f in frames], out / name, target=codec)
                    reencoded = True
                    for h, f in frames:
                        add_raw(h, cam, f)
            except Exception as exc:  # noqa: BLE001 - bad bitstreams surface as many exception types
                log.warning("clip could not be written", extra={"clip": name, "error": str(exc)})
                extra_findings.append(("frame.not_playable", f"{name} could not be written ({exc}); frames kept "
                                       "as raw bytes", frames[0][0], None, None))
                for h, f in frames:
                    add_raw(h, cam, f)
                continue
            listing = [(h, f.seq) for h, f in frames]
            clips_claim.append(ClipClaim(f"clips/{name}", PRIMARY, cam, listing, reencoded))
        else:
            h, sub_cam, s_segments = payload
            name = f"clip-{index:03d}-substituted.mp4"
            span = [f for seg in s_segments for _, f in seg]
            if sub_cam not in sub_codec_cache:
                sub_codec_cache[sub_cam] = _substitute_codec(reader, fetcher, sub_cam, span)
            sub_codec = sub_codec_cache[sub_cam]
            try:
                if sub_codec is None:
                    raise ValueError("the substitute camera's codec configuration is not available from its own blocks")
                listing = _reencode_substitute(sub_codec, target or sub_codec, s_segments, data, out / name)
            except Exception as exc:  # noqa: BLE001
                log.warning("substituted span not re-encoded", extra={"clip": name, "error": str(exc)})
                extra_findings.append(("clip.reencode.failed", f"{name}: {exc}", h, None, sub_cam))
                continue
            clips_claim.append(ClipClaim(f"clips/{name}", SUBSTITUTED, sub_cam, listing, True))
        clip_files[clips_claim[-1].path] = out / name
        clip_paths.append(out / name)
    timer.lap("restore")

    # 5. multiproofs of the presented frames, per block; then the same verification as `verify`
    seq_index = {h: {f.seq: i for i, f in enumerate(m.frames)} for h, m in trusted.items()}
    presented: dict[int, set[int]] = defaultdict(set)  # height -> indices into the manifest's frames
    for c in clips_claim:
        if c.camera == cam:
            for h, seq in c.frames:
                presented[h].add(seq_index[h][seq])
    for (h, c, seq) in raw_claims:
        if c == cam:
            presented[h].add(seq_index[h][seq])
    proofs: dict[int, dict[str, Any]] = {}
    proofs_on_chain: dict[int, bool | None] = {}
    for h, idx in presented.items():
        # The tree's values are the manifest's frames in manifest order, so indices address them.
        tree = manifest_tree(cam, chain_blocks[h].header.manifest_digest, trusted[h].frames)
        if tree is None:
            continue
        mp = tree.get_multiproof(sorted(idx))
        proofs[h] = {"blockHash": h0x(chain_blocks[h].block_hash), "root": tree.root_hex,
                     "leafEncoding": list(tree.leaf_encoding), **mp.to_json()}
        known = known_leaves(cam, trusted[h].frames, tree)  # leaf hashes straight from the tree
        hashes = [known[("0x" + cam.hex(), v[1], v[2], v[3])] for v in mp.leaves]  # values are the tree's own
        proofs_on_chain[h] = reader.verify_frames(chain_blocks[h].block_hash, mp, hashes)
    timer.lap("proofs")

    heights = sorted(set(in_range) | ({context} if context else set()))
    for h in heights:
        cb = chain_blocks.get(h)
        claim.blocks.append(BlockClaim(
            height=h, header=cb.header if cb else None, block_hash=h0x(cb.block_hash) if cb else None,
            anchor_tx=cb.anchor_tx if cb else None, attest_txs=list(cb.attest_txs) if cb else [],
            manifest=manifest_bytes.get(h), proof=proofs.get(h), context_only=(h == context),
        ))
    claim.clips = clips_claim
    claim.raw = sorted(raw_claims.values(), key=lambda r: (r.height, r.camera, r.seq))
    facts = ChainFacts(chain_id=claim.chain_id, ledger=claim.ledger, consortium=claim.consortium,
                       heights_in_range=in_range, blocks={h: chain_blocks.get(h) for h in heights},
                       proofs_on_chain=proofs_on_chain)
    timer.lap("chain")
    samples = {p: read_clip_samples(f) for p, f in clip_files.items()}
    raw_digests = {r.path: bytes.fromhex(r.path.split("/")[-1]) for r in claim.raw}
    timer.lap("self-check")
    report = verify_evidence(claim, facts, samples, raw_digests, produced_by=produced_by,
                             prefindings=prefindings + extra_findings, skip=skip)
    report.clips = clip_entries(claim, trusted)
    for entry, c in zip(report.clips, clips_claim):
        entry.path = Path(c.path).name
    timer.lap("verify")
    if probe:
        from .video import probe_mp4

        for entry in report.clips:
            try:
                p = probe_mp4(out / entry.path)
                entry.decoded_frames = p.frames
                if p.frames != entry.frames:
                    report.add("clip.undecodable", f"{entry.path}: {p.frames} of {entry.frames} frames decode")
            except Exception as exc:  # noqa: BLE001
                report.add("clip.undecodable", f"{entry.path}: {exc}")
        timer.lap("probe")

    bundle_path = None
    if bundle:
        bundle_path = out / _bundle_name(claim)
        manifest_paths = {b.height: f"manifests/{b.height:06d}.json" for b in claim.blocks if b.manifest is not None}
        proof_paths = {h: f"proofs/{h:06d}.json" for h in proofs}
        index = bundle_index(claim=claim, manifest_paths=manifest_paths, proof_paths=proof_paths, produced_by=produced_by)
        members: list[tuple[str, bytes | Path]] = []
        members += [(manifest_paths[b.height], b.manifest) for b in claim.blocks if b.manifest is not None]
        members += [(proof_paths[h], json.dumps(proofs[h], indent=1).encode()) for h in sorted(proofs)]
        members += [(p, f) for p, f in clip_files.items()]
        # frames with identical bytes (a static scene can produce them) share one raw file
        members += [(p, data[bytes.fromhex(p.split("/")[-1])]) for p in dict.fromkeys(r.path for r in claim.raw)]
        members += [("report.json", report.dumps().encode()), ("report.txt", report.render_text().encode())]
        write_bundle(bundle_path, index, members)
        timer.lap("bundle")
    return _finish(report, out, bundle_path, clip_paths, timer, fetcher)


def _finish(report: Report, out: Path, bundle_path: Path | None, clips: list[Path], timer: _Timer,
            fetcher: Fetcher) -> ExtractResult:
    rj, rt = out / "report.json", out / "report.txt"
    rj.write_text(report.dumps())
    rt.write_text(report.render_text())
    timer.lap("report")
    return ExtractResult(report, out, bundle_path, rj, rt, clips, dict(timer.t), fetcher.frames, fetcher.bytes)


def _bundle_name(claim: EvidenceClaim) -> str:
    who = (claim.camera_ip or h0x(claim.camera_id)[:12]).replace(":", "_").replace("/", "_")
    return f"evidence-{who}-{claim.from_ms}-{claim.to_ms}.zip"


def _encoded(f: FrameRef, data: dict[bytes, bytes]) -> EncodedFrame:
    return EncodedFrame(seq=f.seq, timestamp_ms=f.timestamp_ms, keyframe=f.keyframe, data=data[f.sha256],
                        dts_ms=f.dts_ms)


def _substitute_codec(reader: ChainReader, fetcher: Fetcher, sub_cam: bytes, span: list[FrameRef]) -> CodecConfig | None:
    """The substitute camera's codec configuration, from the manifest of its own anchored block
    for that time (checked against the anchored digest): manifests of the gap's camera record only
    their own codec."""
    if not span:
        return None
    t0 = min(f.timestamp_ms for f in span)
    heights = reader.heights_in_range(sub_cam, t0, t0 + 1)
    if not heights:
        return None
    cb = reader.blocks(sub_cam, heights[:1]).get(heights[0])
    if cb is None:
        return None
    got = fetcher.get(cb.header.manifest_digest)
    if got.data is None:
        return None
    try:
        m = Manifest.from_bytes(got.data)
        return CodecConfig.from_json(m.codec) if m.codec else None
    except (ManifestFormatError, KeyError, ValueError, TypeError):
        return None


def _reencode_substitute(codec: CodecConfig, target: CodecConfig, segments: list[list[Item]],
                         data: dict[bytes, bytes], path: Path) -> list[tuple[int, int]]:
    """Decode another camera's segments and encode them alone, at the target camera's picture size
    and the substitute's capture times. Returns the (height, seq) of the frames whose pictures the
    clip holds, in order (a decoder may refuse a broken frame: that frame then travels raw only)."""
    from .video import decode_frames, encode_frames_to_mp4

    by_ts: dict[int, Item] = {}
    pictures = []
    for seg in segments:
        wanted = {f.timestamp_ms: (h, f) for h, f in seg}
        for ts, picture in decode_frames(codec, [_encoded(f, data) for _, f in seg]):
            if ts in wanted and ts not in by_ts:
                by_ts[ts] = wanted[ts]
                pictures.append((ts, picture))
    if not pictures:
        raise ValueError("the substituted span decoded to no pictures")
    pictures.sort(key=lambda p: p[0])
    encode_frames_to_mp4((p for _, p in pictures), path, fps=codec.fps, width=target.width, height=target.height,
                         timestamps_ms=[ts for ts, _ in pictures], crf=20)
    return [(by_ts[ts][0], by_ts[ts][1].seq) for ts, _ in pictures]
