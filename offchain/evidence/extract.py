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
   a span filled from another camera (I7) gets its own clip, remuxed from that camera's anchored
   packets (re-encoded only when they are not H.264) and marked; a camera whose codec a browser
   cannot play is re-encoded, and every re-encoded picture is compared with the decoded original;
5. write the clips, the report (JSON and text) and the bundle (S6) to ``out_dir``.

A clip must start on a keyframe, so it starts at the keyframe before the range (walking back
across as many earlier blocks as that takes, up to ``MAX_CONTEXT_BLOCKS``) and, for streams with B-frames, ends where every frame of the range can be
decoded; those extra frames are verified like the others and reported (``clip.preroll``). After a
gap, frames up to the next keyframe cannot be decoded: they are verified and kept as raw bytes
in the bundle (``frame.not_playable``), never silently dropped.

The functions at the top (planning) are pure; `extract` is the imperative shell around them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
import logging
import operator
import os
import re
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .gcpause import collections_paused
from ..camera.sources import CodecConfig, EncodedFrame
from ..chain.ledger import VideoLedgerClient
from ..core.block import AUDIO_TRACK, FrameRef, Manifest, ManifestFormatError, camera_id, track_bounds, track_of
from ..core.cid import cid_from_digest
from ..core.gather import Place, gather_sha256
from ..core.merkle import MultiProof, _tree_multiproof
from ..core.native import native as _native
from ..store.base import BlockNotFound, ContentStore, CorruptBlock, StoreError
from ..store.local import LocalStore
from .anchors import ON_CHAIN_WORKERS, AnchorSource, PendingAnswers
from .batch_anchors import ANCHORING_BATCH, ANCHORING_HEADER, BatchReader
from .ahead import ahead
from .clip_copy import ClipCopies, ClipCopyFailed
from .bundle import (BundleWriter, ChainReader, WrittenFile, batch_member, bundle_index, copy_range, note_decoded,
                     probe_remuxed_clips, read_clip_samples)
from .report import Report
from .outage_keys import carries_declarations, device_keys
from .verify import (
    PRIMARY,
    SUBSTITUTED,
    BatchClaim,
    BlockClaim,
    ChainBlock,
    ChainFacts,
    ClipClaim,
    ClipSamples,
    CodecSourceClaim,
    EvidenceClaim,
    Note,
    RawClaim,
    check_manifest,
    classify_digest,
    clip_entries,
    decode_key,
    decode_keys,
    h0x,
    manifest_tree,
    remember_multiproof,
    verify_evidence,
)
from .video import (REENCODE_CRF, LayoutTooLarge, MuxResult, SampleSizeMismatch, audio_copyable, compare_pictures,
                    copied_mp4_layout, copied_mux_result, decode_frames, decode_order,
                    encode_frames_to_mp4, reencode_span_to_mp4, remux_to_mp4, write_copied_mp4, JoinedFrames)

__all__ = ["EvidenceError", "ExtractResult", "extract", "parse_camera", "parse_time", "plan_stream"]

log = logging.getLogger(__name__)

FETCH_WORKERS = 8
_VIDEO_MAX = track_bounds(0)[1]
# How many blocks before the range extraction walks back for the keyframe the range's first frame
# depends on (60 blocks of 60 s: an hour-long GOP). Documented in docs/EVIDENCE.md.
MAX_CONTEXT_BLOCKS = 60


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
    groups = {h: group_of(h) for h in dict.fromkeys(h for h, _ in ordered)}  # per block, not per frame
    runs: list[list[Item]] = []
    cur: list[Item] = []
    last_h, last_seq = None, 0
    for it in ordered:
        h, f = it
        seq = f.seq
        if seq in unavailable:
            if cur:
                runs.append(cur)
            cur = []
            continue
        if cur and (seq != last_seq + 1 or (h != last_h and groups[h] != groups[last_h])):
            runs.append(cur)
            cur = []
        cur.append(it)
        last_h, last_seq = h, seq
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
        by_decode = decode_keys(it[1] for it in run)
        dec = [run[i] for i in sorted(range(len(run)), key=by_decode.__getitem__)]
        pos = {it[1].seq: i for i, it in enumerate(dec)}
        start = pos[key.seq]
        playable, unplayable = [], []
        for it in needed:
            (playable if it[1].seq >= key.seq and pos[it[1].seq] >= start else unplayable).append(it)
        raw.extend(unplayable)
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
        # Plain LocalStores are read without their own re-hash (see `_read`).
        self._locals = [s if type(s) is LocalStore else None for s in self.stores]
        self.frames = 0
        self.bytes = 0

    def get(self, digest: bytes) -> Fetched:
        out = Fetched(None)
        for store, local in zip(self.stores, self._locals):
            try:
                data = self._read(store, local, digest)
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

    @staticmethod
    def _read(store: ContentStore, local: LocalStore | None, digest: bytes) -> bytes:
        """The store's bytes for a digest. A plain LocalStore is read without its own hashing
        (`read_unverified`: packs or files): its `get` would spell the CID in base32, parse it
        back and hash the bytes, which are hashed here anyway; that was 3/4 of an extraction's
        time per frame (docs/EVIDENCE.md, Performance). Subclasses and other stores go through `get`."""
        if local is not None:
            return local.read_unverified(digest)
        return store.get(cid_from_digest(digest))

    def stream(self, digests: Iterable[bytes]) -> Iterator[bytes | Fetched]:
        """`get` for each digest, lazily and in order: the bytes themselves where the bulk read
        delivered them intact (the common case, without a Fetched record per frame), `get`'s
        Fetched otherwise. When the first store is a plain LocalStore its bytes are read in bulk
        (`LocalStore.read_many_unverified`: one index query per 500 frames, one read per run of
        records written together) and hashed here; a digest it cannot deliver intact goes the
        careful way (`get`: every store in order, corrupt copies noted), so the outcome is `get`'s."""
        local = self._locals[0] if self._locals else None
        if local is None:
            yield from map(self.get, digests)
            return
        todo = list(digests)
        sha256 = hashlib.sha256
        frames = size = 0
        try:
            for digest, data in zip(todo, local.read_many_unverified(todo)):
                if data is not None and sha256(data).digest() == digest:
                    frames += 1
                    size += len(data)
                    yield data
                else:
                    yield self.get(digest)
        finally:
            self.frames += frames
            self.bytes += size

    def stream_joined(self, digests: Sequence[bytes]) -> Iterator[JoinedFrames | Fetched]:
        """`stream` in bulk, for a writer that takes many frames at once: the frames in order, as
        JoinedFrames (intact frames back to back, read by `LocalStore.read_many_places` and hashed
        and copied a window at a time by `gather_sha256`, in C without the GIL where it is built)
        when the first store is a plain LocalStore, and `get`'s Fetched (one frame, the careful
        way: every store in order, corrupt copies noted) for each frame it cannot deliver intact."""
        local = self._locals[0] if self._locals else None
        if local is None:
            yield from map(self.get, digests)
            return
        for part, places, joined, bad in ahead(self._gathered(local, digests), name="extract-read-ahead"):
            if not bad:
                self.frames += len(part)
                self.bytes += len(joined)
                yield JoinedFrames(count=len(part), data=joined)
                continue
            yield from self._around_bad(joined, bad, part, places)

    @staticmethod
    def _gathered(local: LocalStore, digests: Sequence[bytes],
                  ) -> Iterator[tuple[Sequence[bytes], Sequence[Place], bytes, list[int]]]:
        """Each window of `LocalStore.read_many_places` gathered (its intact frames copied out of
        the reused read buffer, so the next window may reuse it), with the window's digests,
        places and the indices of frames not delivered intact. Run `ahead` of the writer: reads
        and SHA-256 in this thread, writes and CRC-32 in the writer's, both without the GIL."""
        done = 0
        for window in local.read_many_places(digests):
            part = digests[done:done + len(window.places)]
            done += len(part)
            joined, bad = gather_sha256(window.buffers, window.places, b"".join(part))
            yield part, window.places, joined, bad

    def _around_bad(self, joined: bytes, bad: list[int], part: Sequence[bytes],
                    places: Sequence[Place]) -> Iterator[JoinedFrames | Fetched]:
        """A window with frames not delivered intact: the intact runs between them joined, each
        of them `get` the careful way."""
        at, first = 0, 0  # bytes of ``joined`` used; the first frame of the run not yet yielded
        for i in [*bad, len(part)]:
            size = sum(p[2] for p in places[first:i] if p is not None)
            if i > first:
                self.frames += i - first
                self.bytes += size
                yield JoinedFrames(count=i - first, data=joined[at:at + size])
            at += size
            if i < len(part):
                yield self.get(part[i])
            first = i + 1

    def get_many(self, digests: Iterable[bytes]) -> dict[bytes, Fetched]:
        todo = list(dict.fromkeys(digests))
        if len(todo) < 4 or len(self.stores) == 0:
            return {d: self.get(d) for d in todo}
        with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
            return dict(zip(todo, pool.map(self.get, todo)))


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class ClipFile:
    """Where a restored clip's bytes are: ``size`` bytes of ``path`` from ``offset``. A one-pass
    clip lives only in the bundle (``member``, stored: its bytes are the MP4 as it is; `write_to`
    makes a file of it); others are files of their own (offset 0, no member)."""

    path: Path
    offset: int
    size: int
    member: str | None = None

    def read_bytes(self) -> bytes:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            return fh.read(self.size)

    def write_to(self, dest: Path) -> Path:
        """The clip as a file of its own at ``dest`` (copied by the kernel where it can)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "rb") as src, open(dest, "wb") as dst:
            copy_range(src, dst, self.offset, self.size)
        return dest

    def __str__(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)


@dataclass
class ExtractResult:
    report: Report
    out_dir: Path
    bundle_path: Path | None
    report_json: Path
    report_txt: Path
    clips: list[ClipFile]      # each clip's bytes: its own file, or a member of the bundle
    timings: dict[str, float]  # seconds per phase
    fetched: int = 0           # blocks (frames and manifests) fetched from the stores and re-hashed
    fetched_bytes: int = 0

    @property
    def verdict(self) -> str:
        return self.report.verdict


# The phases `extract` reports to its ``progress`` callback, in order (probe only with --probe).
PHASES = ("manifests", "plan", "fetch", "restore", "proofs", "verify", "probe", "bundle", "report")


class _Timer:
    def __init__(self, on_lap: Callable[[str], None] | None = None) -> None:
        self.t: dict[str, float] = defaultdict(float)
        self._last = time.perf_counter()
        self._on_lap = on_lap

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.t[name] += now - self._last
        self._last = now
        if self._on_lap is not None:
            self._on_lap(name)


# --------------------------------------------------------------------------- the steps' values


@dataclass
class ManifestLoad:
    """What the chain and the stores gave for the blocks: records, manifest bytes, the manifests
    whose frames can be trusted, and what went wrong on the way."""

    in_range: list[int]
    chain_blocks: dict[int, ChainBlock | None]
    manifest_bytes: dict[int, bytes | None] = field(default_factory=dict)
    trusted: dict[int, Manifest] = field(default_factory=dict)
    context: list[int] = field(default_factory=list)  # blocks before the range, for the keyframe
    notes: list[Note] = field(default_factory=list)
    skip: set[tuple] = field(default_factory=set)

    def primary_items(self) -> list[Item]:
        """The camera's video frames (track 0), which the clips are planned from."""
        return [(h, f) for h, m in sorted(self.trusted.items())
                for f in (m.frames if m.video_only else [f for f in m.frames if f.seq <= _VIDEO_MAX])]

    def audio_items(self) -> list[Item]:
        """The camera's audio packets (track 1, issue 10), by capture time."""
        return sorted(((h, f) for h, m in self.trusted.items() if not m.video_only
                       for f in m.frames if track_of(f.seq) == AUDIO_TRACK),
                      key=lambda it: (it[1].timestamp_ms, it[1].seq))

    @property
    def heights(self) -> list[int]:
        return sorted(set(self.in_range) | set(self.context))


@dataclass
class FramePlan:
    """Which frames to fetch, and the codec configuration of each trusted block."""

    camera: bytes
    from_ms: int
    to_ms: int
    items: list[Item]
    codecs: dict[int, CodecConfig | None]
    substitutions: list[tuple[int, bytes, list[FrameRef]]]  # (height, substitute camera, its frames)
    audio: list[Item] = field(default_factory=list)  # the range's audio packets: raw, and in the clips
    segments: list[list[Item]] = field(default_factory=list)  # own decodable runs, all frames assumed fetchable
    raw: list[Item] = field(default_factory=list)  # and the range's own frames no segment can carry
    _groups: dict[int, Any] = field(default_factory=dict)
    _wanted: dict[tuple[int, bytes, int], FrameRef] | None = None

    @property
    def wanted(self) -> dict[tuple[int, bytes, int], FrameRef]:
        """Every frame to fetch, keyed (height, camera, seq): the segments' and the raw frames,
        every frame of the range (even one no clip can carry, so a fetch failure is reported), the
        range's audio and the substituted spans' frames. Made when first asked for (`all_streamed`
        spares it on the common path)."""
        if self._wanted is None:
            cam, lo, hi = self.camera, self.from_ms, self.to_ms
            wanted = {(h, cam, f.seq): f for h, f in [it for seg in self.segments for it in seg] + self.raw}
            wanted.update(((h, cam, f.seq), f) for h, f in self.items if lo <= f.timestamp_ms < hi)
            wanted.update(((h, cam, f.seq), f) for h, f in self.audio)
            for h, sub_cam, sub_frames in self.substitutions:
                s_segments, s_raw = plan_stream([(h, f) for f in sub_frames], lo, hi)
                wanted.update(((hh, sub_cam, f.seq), f) for hh, f in [it for seg in s_segments for it in seg] + s_raw)
            self._wanted = wanted
        return self._wanted

    def all_streamed(self) -> bool:
        """Whether every wanted frame is one `streamable` defers: no raw frame (so every frame of
        the range is in a segment, as `plan_stream` plans), no audio, no substitution, and every
        block's codec remuxable. Then nothing is fetched before the clips are written."""
        return not self.raw and not self.audio and not self.substitutions and \
            all(_copyable(c) for c in self.codecs.values())

    def group_of(self, h: int) -> Any:
        # Called for every frame while planning: the fingerprint (a JSON dump) once per block.
        if h not in self._groups:
            c = self.codecs.get(h)
            self._groups[h] = c.fingerprint if c is not None else None
        return self._groups[h]

    def streamable(self, cam: bytes) -> set[tuple[int, bytes, int]]:
        """Own frames that will be remuxed: fetched while the clip is written, not before."""
        copyable = {h: _copyable(c) for h, c in self.codecs.items()}  # per block, not per frame
        return {(h, cam, f.seq) for seg in self.segments for h, f in seg if copyable.get(h, False)}


@dataclass
class FetchResult:
    data: dict[bytes, bytes]
    unavailable: dict[bytes, set[int]]   # camera -> seqs no store could deliver intact
    notes: list[Note] = field(default_factory=list)


@dataclass
class CodecSource:
    """A substitute camera's own anchored block, whose manifest gives its codec configuration."""

    camera: bytes
    height: int
    block: ChainBlock
    manifest: bytes
    codec: CodecConfig | None


@dataclass
class Restoration:
    """The clips written, what each carries, and the frames that travel raw."""

    clips: list[ClipClaim] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    raw: dict[tuple[int, bytes, int], RawClaim] = field(default_factory=dict)
    codec_sources: dict[bytes, CodecSource | None] = field(default_factory=dict)
    originals: dict[str, tuple[CodecConfig, list[EncodedFrame]]] = field(default_factory=dict)  # re-encoded clips
    audio: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # clip -> (height, seq) of its audio packets
    samples: dict[str, ClipSamples] = field(default_factory=dict)  # remuxed clips, hashed while written
    crc32s: dict[str, int] = field(default_factory=dict)  # clips whose CRC-32 was computed as they were written
    in_bundle: set[str] = field(default_factory=set)  # clips written straight into the bundle (not in `files`)
    notes: list[Note] = field(default_factory=list)

    def members(self) -> dict[str, Path | WrittenFile]:
        """The clips as bundle members (with their CRC-32 where the writer computed it)."""
        return {name: WrittenFile(path=p, crc32=self.crc32s[name]) if name in self.crc32s else p
                for name, p in self.files.items()}

    def add_raw(self, h: int, camera: bytes, f: FrameRef, data: Mapping[bytes, bytes]) -> None:
        if f.sha256 in data:
            self.raw[(h, camera, f.seq)] = RawClaim(h, camera, f.seq, f"frames/{f.sha256.hex()}")


# --------------------------------------------------------------------------- the shell


@collections_paused
def extract(
    camera: str | bytes,
    from_ms: int | str,
    to_ms: int | str,
    ledger: VideoLedgerClient | AnchorSource,
    stores: Sequence[ContentStore],
    out_dir: str | os.PathLike[str],
    *,
    probe: bool = False,
    bundle: bool = True,
    produced_by: str = "frameledger extract",
    max_context_blocks: int = MAX_CONTEXT_BLOCKS,
    notes: Iterable[Note] = (),
    progress: Callable[[str], None] | None = None,
) -> ExtractResult:
    """Extract, verify and restore ``camera``'s video for [from_ms, to_ms). See the module docstring.

    ``notes`` are findings the caller made (the trust decision); ``progress`` is told each phase
    of `PHASES` as it ends (the CLI shows a bar). Raises :class:`EvidenceError`
    only for unusable input (camera or time spelling, empty range); every problem with the
    chain, the stores or the data is a status code in the report."""
    notes = list(notes)
    once = partial(_extract_once, camera, from_ms, to_ms, ledger, stores, out_dir, probe=probe, bundle=bundle,
                   produced_by=produced_by, max_context_blocks=max_context_blocks, notes=notes, progress=progress)
    try:
        return once(copies_allowed=True)
    except ClipCopyFailed as exc:  # the careful stream has something to report: its outcome is the one reported
        log.info("a clip copied in the background met a frame to report on; extracting again the careful way",
                 extra={"error": str(exc)})
        return once(copies_allowed=False)


def _extract_once(camera: str | bytes, from_ms: int | str, to_ms: int | str, ledger: VideoLedgerClient | AnchorSource,
                  stores: Sequence[ContentStore], out_dir: str | os.PathLike[str], *, probe: bool, bundle: bool,
                  produced_by: str, max_context_blocks: int, notes: list[Note],
                  progress: Callable[[str], None] | None, copies_allowed: bool) -> ExtractResult:
    """`extract`, with the remuxed clips copied into the bundle in the background where
    ``copies_allowed`` and the store suits (offchain.evidence.clip_copy)."""
    timer = _Timer(progress)
    cam, ip = parse_camera(camera)
    from_ms, to_ms = parse_time(from_ms), parse_time(to_ms)
    if from_ms >= to_ms:
        raise EvidenceError(f"empty range: from {from_ms} is not before to {to_ms}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Every chain read goes through the AnchorSource seam (per-header mode: ChainReader).
    reader = ChainReader(ledger.contract.w3, ledger.address) if isinstance(ledger, VideoLedgerClient) else ledger
    fetcher = Fetcher(stores)
    claim = EvidenceClaim(camera_id=cam, from_ms=from_ms, to_ms=to_ms, chain_id=reader.chain_id,
                          ledger=reader.address, consortium=reader.consortium_address, camera_ip=ip)
    registered_ip = reader.camera_ip(cam)
    if registered_ip is None:
        return _finish(_unknown_camera(claim, notes, produced_by), out, None, [], timer, fetcher)
    claim.camera_ip = registered_ip

    loaded = load_blocks(reader, fetcher, cam, from_ms, to_ms, max_context_blocks)
    if isinstance(reader, BatchReader):  # the per-camera chain rule the contract leaves to verifiers
        loaded.notes.extend(reader.chain_rule_notes(cam, loaded.in_range))
    timer.lap("manifests")
    plan = plan_frames(loaded, cam, from_ms, to_ms)
    timer.lap("plan")
    # One-pass clips go straight into the bundle (written once); with --probe they are files, which
    # the decoder reads before the bundle is closed.
    writer = BundleWriter(out / _bundle_name(claim)) if bundle else None
    copies = ClipCopies(stores[0], partial(_clean_fetch, fetcher)) \
        if copies_allowed and writer is not None and not probe and stores and ClipCopies.available(stores[0]) else None
    with _aborted_on_error(writer), _stopped(copies):
        fetched, restored = _fetch_and_restore(fetcher, plan, loaded, cam, from_ms, to_ms, reader, out, timer,
                                               None if probe else writer, copies)
        return _prove_check_and_bundle(claim, loaded, restored, fetched, reader, fetcher, cam, writer, copies, timer,
                                       notes=notes, probe=probe, produced_by=produced_by, out=out)


def _prove_check_and_bundle(claim: EvidenceClaim, loaded: ManifestLoad, restored: Restoration, fetched: FetchResult,
                            reader: AnchorSource, fetcher: Fetcher, cam: bytes, writer: BundleWriter | None,
                            copies: ClipCopies | None, timer: _Timer, *, notes: list[Note], probe: bool,
                            produced_by: str, out: Path) -> ExtractResult:
    """The proofs, the self-check and the bundle, while the clips copied in the background
    (``copies``) arrive; their CRCs go in before the bundle is closed."""
    bundle = writer is not None
    with _BundleInBackground(writer, restored.members()) as writing, \
            ThreadPoolExecutor(max_workers=ON_CHAIN_WORKERS, thread_name_prefix="verify-frames") as asking:
        proofs, spelled, asked = prove_presented(restored, loaded, reader, cam, asking)
        _fill_claim(claim, loaded, restored, proofs)
        if isinstance(reader, BatchReader):
            _fill_batches(claim, reader)
        # The members already final go into the bundle in the background (their deflate releases
        # the GIL beside the self-check); the index and report follow it. The chain's answers are
        # awaited by the self-check's proof rule, after it has checked the clips.
        if bundle:  # without a bundle these members are not spelled at all
            writing.queue(_evidence_members(claim, spelled, fetched.data))
        timer.lap("proofs")
        facts = _chain_facts(claim, loaded, restored, reader, cam, PendingAnswers(asked))
        report = _self_check(claim, facts, restored, list(notes) + loaded.notes + fetched.notes + restored.notes,
                             loaded, produced_by)
        timer.lap("verify")
        if probe:
            probe_remuxed_clips(report, claim, lambda p: restored.files[p])
            timer.lap("probe")
        done = writing.writer()
        if copies is not None and done is not None:
            copies.finish(done)
            fetcher.frames += copies.frames
            fetcher.bytes += copies.bytes
        bundle_path = _close_bundle(done, claim, proofs, report) if done else None
        timer.lap("bundle")
    return _finish(report, out, bundle_path, _clip_files(claim, restored, writer, bundle_path), timer, fetcher)


def _unknown_camera(claim: EvidenceClaim, notes: Iterable[Note], produced_by: str) -> Report:
    report = Report(camera_id=h0x(claim.camera_id), camera_ip=claim.camera_ip, from_ms=claim.from_ms, to_ms=claim.to_ms,
                    chain_id=claim.chain_id, ledger=claim.ledger, consortium=claim.consortium, produced_by=produced_by)
    for n in notes:
        report.add(n.code, n.message)
    report.add("camera.unknown", f"camera {claim.camera_ip or h0x(claim.camera_id)} is not registered on this ledger")
    return report


@contextmanager
def _aborted_on_error(writer: BundleWriter | None) -> Iterator[None]:
    """Remove the unfinished bundle if the block raises (before `_BundleInBackground` owns it)."""
    try:
        yield
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


# --------------------------------------------------------------------------- 1-2. blocks and manifests


@contextmanager
def _stopped(copies: ClipCopies | None) -> Iterator[None]:
    """No copy thread outlives the extraction, whatever happened."""
    try:
        yield
    finally:
        if copies is not None:
            copies.stop()


def _clean_fetch(fetcher: Fetcher, digest: bytes) -> bytes | None:
    """A frame's bytes fetched the careful way, when that finds nothing to report (ClipCopies)."""
    got = fetcher.get(digest)
    return got.data if got.data is not None and not got.corrupt else None


def load_blocks(reader: AnchorSource, fetcher: Fetcher, cam: bytes, from_ms: int, to_ms: int,
                max_context_blocks: int = MAX_CONTEXT_BLOCKS) -> ManifestLoad:
    """The blocks covering the range from the chain, their manifests from the stores, and as many
    blocks before the range as the keyframe of its first frame needs (at most
    ``max_context_blocks``: a long-GOP camera's keyframe can be minutes back)."""
    in_range, chain_blocks = reader.blocks_in_range(cam, from_ms, to_ms)
    loaded = ManifestLoad(in_range=in_range, chain_blocks=chain_blocks)
    for h in in_range:
        _load_manifest(loaded, fetcher, h)
    if not in_range or in_range[0] not in loaded.trusted:
        return loaded
    h = in_range[0] - 1
    while h >= 1 and len(loaded.context) < max_context_blocks and \
            needs_previous_block(loaded.primary_items(), from_ms, to_ms):
        loaded.chain_blocks.update(reader.blocks(cam, [h]))
        if not _load_context_block(loaded, fetcher, h):
            break
        h -= 1
    return loaded


def _load_context_block(loaded: ManifestLoad, fetcher: Fetcher, h: int) -> bool:
    """Load block h as context; an unusable one (not final, not trusted) is forgotten quietly:
    it is not evidence of the range."""
    cb = loaded.chain_blocks.get(h)
    if cb is not None and cb.finalized:
        before = (len(loaded.notes), set(loaded.skip))
        _load_manifest(loaded, fetcher, h)
        if h in loaded.trusted:
            loaded.context.append(h)
            return True
        del loaded.notes[before[0]:]
        loaded.skip.intersection_update(before[1])
        loaded.manifest_bytes.pop(h, None)
    loaded.chain_blocks.pop(h, None)
    return False


def _load_manifest(loaded: ManifestLoad, fetcher: Fetcher, h: int) -> None:
    cb = loaded.chain_blocks.get(h)
    if cb is None:
        loaded.manifest_bytes[h] = None
        return
    digests = {b.header.manifest_digest: hh for hh, b in loaded.chain_blocks.items() if b is not None}
    got = fetcher.get(cb.header.manifest_digest)
    loaded.manifest_bytes[h] = got.data
    if got.data is None:
        loaded.skip.add(("manifest", h))
        loaded.notes.append(_manifest_fetch_note(got, cb, digests, h))
        return
    if got.corrupt:
        loaded.notes.append(Note("store.block.corrupt", "a store held a corrupt copy of the manifest", height=h))
    mc = check_manifest(got.data, cb.header, digests)
    if mc.trusted and mc.manifest is not None:
        loaded.trusted[h] = mc.manifest


def _manifest_fetch_note(got: Fetched, cb: ChainBlock, digests: Mapping[bytes, int], h: int) -> Note:
    actual = next((d for d in got.corrupt if d is not None), None)
    if got.corrupt:
        other = digests.get(actual) if actual is not None else None
        if other is not None and other != h:
            return Note("manifest.order.invalid", f"store holds block {other}'s manifest under this block's CID", height=h)
        return Note("manifest.digest.mismatch", "store copy of the manifest is corrupt or forged", height=h)
    return Note("manifest.missing", f"no store has the manifest {cid_from_digest(cb.header.manifest_digest)}"
                + (f" ({'; '.join(got.errors)})" if got.errors else ""), height=h)


# --------------------------------------------------------------------------- 3. plan and fetch


def plan_frames(loaded: ManifestLoad, cam: bytes, from_ms: int, to_ms: int) -> FramePlan:
    """Plan with everything the trusted manifests list: the camera's segments and raw frames, the
    range's audio and the substituted spans (`FramePlan.wanted` lists every frame to fetch)."""
    codecs: dict[int, CodecConfig | None] = {}
    for h, m in loaded.trusted.items():
        try:
            codecs[h] = CodecConfig.from_json(m.codec) if m.codec else None
        except (KeyError, ValueError, TypeError):
            codecs[h] = None
    plan = FramePlan(camera=cam, from_ms=from_ms, to_ms=to_ms, items=loaded.primary_items(), codecs=codecs,
                     substitutions=[])
    plan.segments, plan.raw = plan_stream(plan.items, from_ms, to_ms, group_of=plan.group_of)
    plan.audio = [(h, f) for h, f in loaded.audio_items() if from_ms <= f.timestamp_ms < to_ms]
    for h, m in sorted(loaded.trusted.items()):
        for sub_cam, sub_frames in m.substitutions:
            if any(from_ms <= f.timestamp_ms < to_ms for f in sub_frames):
                plan.substitutions.append((h, sub_cam, list(sub_frames)))
    return plan


def fetch_frames(fetcher: Fetcher, plan: FramePlan, loaded: ManifestLoad, cam: bytes,
                 defer: set[tuple[int, bytes, int]] | frozenset = frozenset()) -> FetchResult:
    """Fetch and re-hash every wanted frame but the deferred ones (fetched while their clip is
    written); what no store holds intact is noted and skipped."""
    wanted = {k: f for k, f in plan.wanted.items() if k not in defer}
    got = fetcher.get_many(f.sha256 for f in wanted.values())
    anchored: set[bytes] | None = None  # every anchored digest, made only if a corrupt copy needs naming
    result = FetchResult(data={}, unavailable=defaultdict(set))
    for (h, c, seq), f in wanted.items():
        g = got[f.sha256]
        if g.data is not None:
            result.data[f.sha256] = g.data
            if g.corrupt:
                result.notes.append(Note("store.block.corrupt", "a store held a corrupt copy of this frame", height=h, seq=seq, camera=c))
            continue
        result.unavailable[c].add(seq)
        loaded.skip.add(("frame", h, c, seq))
        actual = next((d for d in g.corrupt if d is not None), None)
        if g.corrupt:
            if anchored is None:
                anchored = {f.sha256 for m in loaded.trusted.values() for f in m.frames} | {
                    f.sha256 for m in loaded.trusted.values() for _, fs in m.substitutions for f in fs}
            code = classify_digest(actual, f.sha256, anchored) or "frame.digest.mismatch"
            what = "another anchored frame's bytes" if code == "frame.order.invalid" else "bytes that hash differently"
            result.notes.append(Note(code, f"the stores hold {what} under this frame's CID", height=h, seq=seq, camera=c))
        else:
            result.notes.append(Note("frame.missing", "no store has this frame" + (
                f" ({'; '.join(g.errors[:2])})" if g.errors else ""), height=h, seq=seq, camera=c))
    return result


# --------------------------------------------------------------------------- 4. restore


def _copyable(codec: CodecConfig | None) -> bool:
    """Whether packets of this configuration can be copied into a browser-playable MP4."""
    return codec is not None and codec.codec == "h264" and codec.extradata[:1] == b"\x01"


class _StreamFailed(Exception):
    """A frame fetched while its clip was being written was not delivered intact."""


def _fetch_and_restore(fetcher: Fetcher, plan: FramePlan, loaded: ManifestLoad, cam: bytes, from_ms: int, to_ms: int,
                       reader: AnchorSource, out: Path, timer: _Timer,
                       into: BundleWriter | None, copies: ClipCopies | None = None) -> tuple[FetchResult, Restoration]:
    """Fetch, then write the clips (one-pass clips straight ``into`` the bundle when one is
    given). The frames of remuxed clips are fetched (and re-hashed) while the clip is written, a
    chunk ahead of the muxer, so memory does not grow with the range. If one of them turns out
    unavailable (the plan assumed it was not), everything is done again the careful way: fetch
    every frame first, then plan around what is missing. With ``copies``, a remuxed clip's frames
    are copied into the bundle in the background instead (offchain.evidence.clip_copy), and
    whatever they meet is found when the copies are finished."""
    mark = into.mark() if into is not None else None
    for careful in (False, True):
        if not careful and plan.all_streamed():  # every wanted frame is fetched while its clip is written
            fetched = FetchResult(data={}, unavailable=defaultdict(set))
        else:
            fetched = fetch_frames(fetcher, plan, loaded, cam, set() if careful else plan.streamable(cam))
        timer.lap("fetch")
        segments, raw = (plan.segments, plan.raw) if not fetched.unavailable[cam] else \
            plan_stream(plan.items, from_ms, to_ms, fetched.unavailable[cam], group_of=plan.group_of)
        restored = Restoration()
        try:
            restore(restored, segments, raw, plan, fetched, loaded, cam, from_ms, to_ms, reader, fetcher, out, into,
                    copies)
        except _StreamFailed as exc:
            log.info("streamed fetch failed; fetching every frame first", extra={"error": str(exc)})
            if copies is not None:
                copies.stop()  # before their members are rolled back
            for p in restored.files.values():
                p.unlink(missing_ok=True)
            if into is not None and mark is not None:
                into.rollback_to(mark)
            continue
        finally:
            timer.lap("restore")
        return fetched, restored
    raise AssertionError("unreachable: without deferred frames nothing is fetched while writing")


def _stream_frames(frames: Sequence[Item], data: Mapping[bytes, bytes], fetcher: Fetcher,
                   notes: list[Note], cam: bytes) -> Iterator[EncodedFrame]:
    """`_stream_payloads` as EncodedFrames (for PyAV's muxer)."""
    for (_, f), payload in zip(frames, _stream_payloads(frames, data, fetcher, notes, cam)):
        yield EncodedFrame(seq=f.seq, timestamp_ms=f.timestamp_ms, keyframe=f.keyframe, data=payload, dts_ms=f.dts_ms)


def _stream_payloads(frames: Sequence[Item], data: Mapping[bytes, bytes], fetcher: Fetcher,
                     notes: list[Note], cam: bytes) -> Iterator[bytes]:
    """The frames' packets in the order given, each fetched (and re-hashed) as the writer asks for
    it unless ``data`` holds it, and dropped once written. Fetched in this thread, in bulk from a
    LocalStore (`Fetcher.stream`): on this 2-core machine worker threads reading ahead
    measured slower (GIL hand-offs), see docs/EVIDENCE.md. Raises _StreamFailed for a frame no
    store delivers intact."""
    got = fetcher.stream(f.sha256 for _, f in frames if f.sha256 not in data)
    for h, f in frames:
        held = data.get(f.sha256)
        if held is not None:
            yield held
            continue
        g = next(got)
        if type(g) is bytes:
            yield g
            continue
        assert isinstance(g, Fetched)
        if g.data is None:
            raise _StreamFailed(f"frame seq={f.seq} of block {h}: no store delivered it intact")
        if g.corrupt:
            notes.append(Note("store.block.corrupt", "a store held a corrupt copy of this frame", height=h,
                              seq=f.seq, camera=cam))
        yield g.data


def _stream_chunks(frames: Sequence[Item], data: Mapping[bytes, bytes], fetcher: Fetcher,
                   notes: list[Note], cam: bytes) -> Iterator[bytes | JoinedFrames]:
    """`_stream_payloads` for the one-pass writer, which takes many frames at once: runs of
    frames as JoinedFrames (`Fetcher.stream_joined`), a frame ``data`` holds as its bytes. Raises
    _StreamFailed for a frame no store delivers intact."""
    run: list[Item] = []  # the frames to fetch next, in order
    for item in [*frames, None]:
        held = data.get(item[1].sha256) if item is not None else None
        if item is not None and held is None:
            run.append(item)
            continue
        yield from _fetch_run(run, fetcher, notes, cam)
        run = []
        if held is not None:
            yield held


def _fetch_run(run: Sequence[Item], fetcher: Fetcher, notes: list[Note], cam: bytes) -> Iterator[bytes | JoinedFrames]:
    at = 0  # frames of ``run`` delivered
    for got in fetcher.stream_joined([f.sha256 for _, f in run]):
        if isinstance(got, JoinedFrames):
            at += got.count
            yield got
            continue
        h, f = run[at]
        if got.data is None:
            raise _StreamFailed(f"frame seq={f.seq} of block {h}: no store delivered it intact")
        if got.corrupt:
            notes.append(Note("store.block.corrupt", "a store held a corrupt copy of this frame", height=h,
                              seq=f.seq, camera=cam))
        at += 1
        yield got.data


def restore(restored: Restoration, segments: list[list[Item]], raw: list[Item], plan: FramePlan, fetched: FetchResult,
            loaded: ManifestLoad, cam: bytes, from_ms: int, to_ms: int, reader: AnchorSource, fetcher: Fetcher,
            out: Path, into: BundleWriter | None = None, copies: ClipCopies | None = None) -> Restoration:
    """Write the clips in time order into ``restored``. The camera's own runs are remuxed (merged
    into one file unless a substitution or codec change sits between them); each substituted span
    gets its own clip, remuxed from the substitute's anchored packets when they are H.264, else
    re-encoded. Whatever no clip carries byte for byte travels raw."""
    for h, f in raw:
        restored.add_raw(h, cam, f, fetched.data)
    # Audio packets always travel raw (each proved against its block's root like any frame), and
    # are also muxed into the clips they fall in, when the codec fits an MP4.
    for h, f in plan.audio:
        restored.add_raw(h, cam, f, fetched.data)
    pieces: list[tuple[int, str, Any]] = [(min(f.timestamp_ms for _, f in seg), PRIMARY, seg) for seg in segments]
    for h, sub_cam, sub_frames in plan.substitutions:
        s_segments, s_raw = plan_stream([(h, f) for f in sub_frames], from_ms, to_ms, fetched.unavailable[sub_cam])
        for hh, f in s_raw:
            restored.add_raw(hh, sub_cam, f, fetched.data)
        if s_segments:
            pieces.append((min(f.timestamp_ms for seg in s_segments for _, f in seg), SUBSTITUTED,
                           (h, sub_cam, s_segments)))
    pieces.sort(key=lambda p: (p[0], p[1]))
    for kind, payload in _group_pieces(pieces, plan):
        name = f"clip-{len(restored.clips):03d}{'-substituted' if kind == SUBSTITUTED else ''}.mp4"
        if kind == PRIMARY:
            _restore_own(restored, [it for seg in payload for it in seg], plan, fetched, fetcher, cam, out / name, into,
                         copies)
        else:
            _restore_substitute(restored, payload, plan, fetched.data, reader, fetcher, out / name)
    return restored


def _group_pieces(pieces: list[tuple[int, str, Any]], plan: FramePlan) -> list[tuple[str, Any]]:
    groups: list[tuple[str, Any]] = []
    for _, kind, payload in pieces:
        if kind == PRIMARY and groups and groups[-1][0] == PRIMARY and \
                plan.group_of(groups[-1][1][-1][-1][0]) == plan.group_of(payload[0][0]):
            groups[-1][1].append(payload)
        else:
            groups.append((kind, [payload] if kind == PRIMARY else payload))
    return groups


def _restore_own(restored: Restoration, frames: list[Item], plan: FramePlan, fetched: FetchResult, fetcher: Fetcher,
                 cam: bytes, path: Path, into: BundleWriter | None = None, copies: ClipCopies | None = None) -> None:
    codec = plan.codecs.get(frames[0][0])
    data = fetched.data
    if codec is None:
        restored.notes.append(Note("frame.not_playable", "the manifest records no codec configuration; frames kept as "
                                   "raw bytes", height=frames[0][0]))
        for h, f in frames:
            restored.add_raw(h, cam, f, data)
        return
    try:
        if _copyable(codec):
            refs = [f for _, f in frames]
            ordered = decode_order(codec, refs)  # as remux_to_mp4 would
            if not all(map(operator.is_, ordered, refs)):  # planned in decode order already, as a rule
                by_seq = {f.seq: (h, f) for h, f in frames}
                frames = [by_seq[f.seq] for f in ordered]
            origin = min(f.timestamp_ms for _, f in frames)
            sound = _clip_audio(plan, codec, frames, data, origin)
            mux = _remux_own(codec, frames, sound, fetched, fetcher, cam, path, origin, into, copies)
            restored.samples[f"clips/{path.name}"] = ClipSamples(mux.samples, extradata=codec.extradata,
                                                                  audio=mux.audio_samples)
            restored.audio[f"clips/{path.name}"] = [(h, f.seq) for h, f in sound]
            if mux.crc32 is not None:
                restored.crc32s[f"clips/{path.name}"] = mux.crc32
            why, reencoded = "remux", False
        else:  # not copyable into a browser MP4: re-encode, keep the original bytes raw
            encoded = [_encoded(f, data) for _, f in frames]
            sound = _clip_audio(plan, codec, frames, data, min(f.timestamp_ms for _, f in frames))
            mux = reencode_span_to_mp4(codec, encoded, path, target=codec, audio=(
                codec.audio, [_encoded(f, data) for _, f in sound]) if sound and codec.audio is not None else None)
            # the audio is copied, not re-encoded: its packets are checked byte for byte like a remux's
            restored.audio[f"clips/{path.name}"] = [(h, f.seq) for h, f in sound if f.timestamp_ms >= mux.first_timestamp_ms]
            why, reencoded = f"codec {codec.codec} cannot be copied into a browser MP4", True
            restored.originals[f"clips/{path.name}"] = (codec, encoded)
            for h, f in frames:
                restored.add_raw(h, cam, f, data)
    except _StreamFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - bad bitstreams surface as many exception types
        log.warning("clip could not be written", extra={"clip": path.name, "error": str(exc)})
        restored.notes.append(Note("frame.not_playable", f"{path.name} could not be written ({exc}); frames kept as raw "
                                   "bytes", height=frames[0][0]))
        _fetch_missing(fetched, fetcher, frames)
        for h, f in frames:
            restored.add_raw(h, cam, f, data)
        return
    restored.clips.append(ClipClaim(f"clips/{path.name}", PRIMARY, cam, [(h, f.seq) for h, f in frames], reencoded, why,
                                    audio=restored.audio.get(f"clips/{path.name}", [])))
    if into is not None and f"clips/{path.name}" in into.stored_at:
        restored.in_bundle.add(f"clips/{path.name}")
    else:
        restored.files[f"clips/{path.name}"] = path


def _remux_own(codec: CodecConfig, frames: list[Item], sound: list[Item], fetched: FetchResult, fetcher: Fetcher,
               cam: bytes, path: Path, origin: int, into: BundleWriter | None = None,
               copies: ClipCopies | None = None) -> MuxResult:
    """The camera's frames (decode order) copied into ``path`` as they are fetched. The streamed
    bytes are the ones the fetcher hashed and found equal to f.sha256 (raw ones were checked when
    fetched), so nothing hashes them again. Video only: the one-pass writer (index first, from the
    manifest's sizes and times); with audio, when a packet is not the size its manifest records,
    or for times past 32-bit boxes (a clip spanning ~13 h), PyAV's muxer. The one-pass writer
    writes ``into`` the bundle when one is given: the clip is written once, never copied; with
    ``copies``, where they suit the clip, its packets are copied in by a worker thread while the
    proofs and the self-check run (`_copied_in_background`)."""
    data = fetched.data
    if not sound:
        try:
            if copies is not None and into is not None and copies.suits([f for _, f in frames]):
                return _copied_in_background(codec, [f for _, f in frames], copies, into, path, origin)
            return write_copied_mp4(codec, [f for _, f in frames],
                                    _stream_chunks(frames, data, fetcher, fetched.notes, cam), path, origin_ms=origin,
                                    sink=partial(into.stored_member, f"clips/{path.name}") if into is not None else None)
        except (SampleSizeMismatch, LayoutTooLarge) as exc:
            log.warning("one-pass writer cannot write this clip; remuxing with PyAV", extra={"clip": path.name,
                                                                                            "error": str(exc)})
    return remux_to_mp4(codec, _stream_frames(frames, data, fetcher, fetched.notes, cam), path, origin_ms=origin,
                        audio=(codec.audio, [_encoded(f, data) for _, f in sound])
                        if sound and codec.audio is not None else None, sha256s=[f.sha256 for _, f in frames])


def _copied_in_background(codec: CodecConfig, refs: list[FrameRef], copies: ClipCopies, into: BundleWriter, path: Path,
                          origin: int) -> MuxResult:
    """The one-pass clip's index computed and its member reserved in the bundle, its packets
    copied in the background (`ClipCopies.start`); what the clip holds, as `write_copied_mp4` says it."""
    head, table = copied_mp4_layout(codec, refs, origin_ms=origin)
    copies.start(into, f"clips/{path.name}", head, refs)
    return copied_mux_result(path, refs, table, origin_ms=origin)


def _clip_audio(plan: FramePlan, codec: CodecConfig, frames: Sequence[Item], data: Mapping[bytes, bytes],
                origin: int) -> list[Item]:
    """The audio packets a clip carries: those of the range presented from the clip's first
    picture to the end of its last, all fetched intact, when an MP4 can carry the codec."""
    if not audio_copyable(codec.audio) or not plan.audio:
        return []
    end = max(f.timestamp_ms for _, f in frames) + max(1, round(codec.frame_duration_ms))
    return [(h, f) for h, f in plan.audio if origin <= f.timestamp_ms < end and f.sha256 in data]


def _fetch_missing(fetched: FetchResult, fetcher: Fetcher, frames: Sequence[Item]) -> None:
    """A clip that could not be written travels raw: fetch the frames it was streaming."""
    for h, f in frames:
        if f.sha256 not in fetched.data:
            g = fetcher.get(f.sha256)
            if g.data is None:
                raise _StreamFailed(f"frame seq={f.seq} of block {h}: no store delivered it intact")
            fetched.data[f.sha256] = g.data


def _restore_substitute(restored: Restoration, payload: tuple[int, bytes, list[list[Item]]], plan: FramePlan,
                        data: Mapping[bytes, bytes], reader: AnchorSource, fetcher: Fetcher, path: Path) -> None:
    h, sub_cam, s_segments = payload
    span = [f for seg in s_segments for _, f in seg]
    if sub_cam not in restored.codec_sources:
        restored.codec_sources[sub_cam] = _substitute_codec_source(reader, fetcher, sub_cam, span)
    source = restored.codec_sources[sub_cam]
    sub_codec = source.codec if source is not None else None
    frames = [it for seg in s_segments for it in seg]
    try:
        if sub_codec is None:
            raise ValueError("the substitute camera's codec configuration is not available from its own blocks")
        if _copyable(sub_codec):
            remux_to_mp4(sub_codec, [_encoded(f, data) for _, f in frames], path)
            listing, reencoded, why = [(hh, f.seq) for hh, f in frames], False, "remux"
        else:
            target = next((c for c in plan.codecs.values() if c is not None), None) or sub_codec
            listing = _reencode_substitute(sub_codec, target, s_segments, data, path)
            reencoded, why = True, f"codec {sub_codec.codec} cannot be copied into a browser MP4"
            keep = set(listing)
            restored.originals[f"clips/{path.name}"] = (
                sub_codec, [_encoded(f, data) for hh, f in sorted(frames, key=lambda it: decode_key(it[1]))
                            if (hh, f.seq) in keep])
            for hh, f in frames:
                restored.add_raw(hh, sub_cam, f, data)
    except Exception as exc:  # noqa: BLE001
        log.warning("substituted span not restored", extra={"clip": path.name, "error": str(exc)})
        restored.notes.append(Note("clip.reencode.failed", f"{path.name}: {exc}", height=h, camera=sub_cam))
        for hh, f in frames:
            restored.add_raw(hh, sub_cam, f, data)
        return
    restored.clips.append(ClipClaim(f"clips/{path.name}", SUBSTITUTED, sub_cam, listing, reencoded, why))
    restored.files[f"clips/{path.name}"] = path


# --------------------------------------------------------------------------- 5. proofs, self-check, outputs


def prove_presented(restored: Restoration, loaded: ManifestLoad, reader: AnchorSource, cam: bytes,
                    asking: ThreadPoolExecutor,
                    ) -> tuple[dict[int, dict[str, Any]], dict[int, bytes], dict[int, Future[bool]]]:
    """A multiproof document per block of the camera's frames presented, its bundle member's
    bytes (the compact JSON), and the chain's verifyFrames of each, asked in ``asking`` as soon
    as its proof exists (the answers are awaited by the caller, which meanwhile goes on)."""
    presented = _presented_positions(restored, loaded, cam)
    proofs: dict[int, dict[str, Any]] = {}
    spelled: dict[int, bytes] = {}

    def asks() -> Iterator[tuple[int, Callable[[], bool]]]:
        # Each block's verifyFrames is asked as soon as its proof exists, while the next is built:
        # the node answers on its own cores (a 1,500-frame proof is ~10 ms of eth_call), not in turn.
        for h, idx in presented.items():
            cb = loaded.chain_blocks[h]
            assert cb is not None  # a trusted manifest has an anchored block
            # The tree's values are the manifest's frames in manifest order, so indices address them.
            tree = manifest_tree(cam, cb.header.manifest_digest, loaded.trusted[h].frames)
            if tree is None:
                continue
            mp, hashes = _multiproof(tree, idx)
            proofs[h] = {"blockHash": h0x(cb.block_hash), "root": tree.root_hex,
                         "leafEncoding": list(tree.leaf_encoding), **_multiproof_json(mp, cam)}
            spelled[h] = _proof_member(proofs[h], mp, cam)
            remember_multiproof(proofs[h], mp, hashes)
            yield h, partial(reader.verify_frames, cb.block_hash, mp, hashes)

    asked = {h: asking.submit(question) for h, question in asks()}
    return proofs, spelled, asked


def _presented_positions(restored: Restoration, loaded: ManifestLoad, cam: bytes) -> dict[int, list[int]]:
    """Per height, the positions in its manifest of the camera's frames the evidence presents,
    ascending. A block presented whole (the common case) is told by its seqs at once, without a
    lookup per frame."""
    shown: dict[int, list[int]] = defaultdict(list)
    for c in restored.clips:
        if c.camera == cam:
            for h, run in itertools.groupby(c.frames, key=operator.itemgetter(0)):
                shown[h] += [seq for _, seq in run]
    for (h, c, seq) in restored.raw:
        if c == cam:
            shown[h].append(seq)
    out: dict[int, list[int]] = {}
    for h, seqs in shown.items():
        frames = loaded.trusted[h].frames
        listed = [f.seq for f in frames]
        if len(seqs) == len(listed) and len(set(listed)) == len(listed) and sorted(seqs) == sorted(listed):
            out[h] = list(range(len(listed)))  # every frame once
        else:
            at = {seq: i for i, seq in enumerate(listed)}
            out[h] = sorted({at[seq] for seq in seqs})
    return out


def _multiproof(tree: Any, indices: list[int]) -> tuple[MultiProof, list[bytes]]:
    """`StandardMerkleTree.get_multiproof` without its guard of re-hashing every requested leaf
    and processing the proof: the tree was built here from these very values
    (`manifest_tree`), the self-check processes the proof against the anchored root, and
    `verifyFrames` checks it on chain. For a full block the guard was twice the tree's work.
    Returns the proof and its leaves' hashes, in the proof's order."""
    if len(indices) == len(tree):  # every frame of the block: the proof is read off the tree
        return tree.whole_multiproof()
    leaves, proof, flags = _tree_multiproof(tree._tree, [tree._tree_indices[i] for i in indices])
    return MultiProof([tree._values[tree._lookup[h]] for h in leaves], proof, flags), leaves  # leaves: their hashes


def _multiproof_json(mp: MultiProof, cam: bytes) -> dict[str, Any]:
    """`MultiProof.to_json` for frame leaves (camera, seq, ts, sha256), which are bytes and ints
    of JSON-safe size: the same document without the generic per-value conversion."""
    cam_hex = "0x" + cam.hex()
    leaves = _native.spelled_leaves(cam, cam_hex, mp.leaves) if _native is not None and type(mp.leaves) is list else None
    if leaves is None:  # not built, or a value the C side does not spell: the same check in Python
        for v in mp.leaves:
            if v[0] != cam or not (0 <= v[1] < 2**53 and 0 <= v[2] < 2**53):
                return mp.to_json()
        leaves = [[cam_hex, v[1], v[2], "0x" + v[3].hex()] for v in mp.leaves]
    return {"leaves": leaves, "proof": ["0x" + p.hex() for p in mp.proof], "proofFlags": list(mp.proof_flags)}


def _proof_member(doc: dict[str, Any], mp: MultiProof, cam: bytes) -> bytes:
    """``json.dumps(doc, separators=(",", ":")).encode()`` for a document `_multiproof_json`
    spelled from ``mp``, its leaves written in C from the values (`_native.leaves_json`, the
    same bytes: tests/unit/test_native_merkle.py, test_evidence_streaming_unit.py); the
    generic encoder where not built or a value is off the layout. The generic encoder's work
    on a block's ~1,500 leaves was a sixth of an extraction's samples (issue 9)."""
    compact = partial(json.dumps, separators=(",", ":"))
    leaves = _native.leaves_json(cam, "0x" + cam.hex(), mp.leaves) \
        if _native is not None and type(mp.leaves) is list and "leaves" in doc else None
    if leaves is None:
        return compact(doc).encode()
    parts = [(compact(k) + ":").encode() + (leaves if k == "leaves" else compact(v).encode()) for k, v in doc.items()]
    return b"{" + b",".join(parts) + b"}"


def _fill_claim(claim: EvidenceClaim, loaded: ManifestLoad, restored: Restoration, proofs: Mapping[int, Any]) -> None:
    for h in loaded.heights:
        cb = loaded.chain_blocks.get(h)
        claim.blocks.append(BlockClaim(
            height=h, header=cb.header if cb else None, block_hash=h0x(cb.block_hash) if cb else None,
            anchor_tx=cb.anchor_tx if cb else None, attest_txs=list(cb.attest_txs) if cb else [],
            manifest=loaded.manifest_bytes.get(h), proof=proofs.get(h), context_only=h in loaded.context,
        ))
    claim.clips = restored.clips
    claim.raw = sorted(restored.raw.values(), key=lambda r: (r.height, r.camera, r.seq))
    claim.codec_sources = [CodecSourceClaim(camera=s.camera, height=s.height, header=s.block.header,
                                            block_hash=h0x(s.block.block_hash), manifest=s.manifest)
                           for s in restored.codec_sources.values() if s is not None]


def _fill_batches(claim: EvidenceClaim, reader: BatchReader) -> None:
    """Batch mode: every batch manifest the reader needed (the range, the blocks before it), so
    the verifier can rebuild each root and check the camera's chain and one header per batch."""
    claim.anchoring, claim.batch_ledger = ANCHORING_BATCH, reader.batch_ledger
    claim.batches = [BatchClaim(index=i, manifest=data, batch_root=h0x(reader.loaded[i].record.batch_root),
                                manifest_digest=h0x(reader.loaded[i].record.manifest_digest),
                                anchor_tx=reader.tx_of(i)[0], signers=list(reader.tx_of(i)[1]))
                     for i, data in reader.members()]


def anchor_source(w3: Any, video_ledger: str, batch_ledger: str | None, camera: bytes, from_ms: int, to_ms: int,
                  stores: Sequence[ContentStore], anchoring: str | None = None) -> AnchorSource:
    """The AnchorSource the chain says this camera's range was anchored with: batch mode when the
    trusted BatchLedger holds the camera's blocks in the range and the VideoLedger none, per
    header otherwise (``anchoring`` forces one). Only records are read to decide. Batch manifests come from the stores, re-hashed."""
    header = ChainReader(w3, video_ledger)
    if anchoring == ANCHORING_HEADER or (anchoring is None and (
            not batch_ledger or header.heights_in_range(camera, from_ms, to_ms))):
        return header
    if not batch_ledger:
        raise EvidenceError("batch mode asked, but the trusted deployment names no BatchLedger")
    fetcher = Fetcher(stores)
    batch = BatchReader(w3, batch_ledger, video_ledger, lambda rec: fetcher.get(rec.manifest_digest).data,
                        keep_bytes=True)
    # Batches overlap the range and the VideoLedger holds none of the camera's blocks there: batch
    # mode, even if a manifest turns out unavailable (that is then reported, not hidden as "empty").
    if anchoring == ANCHORING_BATCH or batch.records_in_range(from_ms, to_ms):
        return batch
    return header


def _chain_facts(claim: EvidenceClaim, loaded: ManifestLoad, restored: Restoration, reader: AnchorSource, cam: bytes,
                 on_chain: Mapping[int, bool]) -> ChainFacts:
    """What the chain says about the evidence, as the self-check reads it (``on_chain``: the
    verifyFrames answers, possibly still pending)."""
    return ChainFacts(chain_id=claim.chain_id or 0, ledger=claim.ledger or "", consortium=claim.consortium,
                      heights_in_range=loaded.in_range, blocks={h: loaded.chain_blocks.get(h) for h in loaded.heights},
                      proofs_on_chain=on_chain,
                      codec_blocks={(s.camera, s.height): s.block for s in restored.codec_sources.values() if s},
                      camera_keys=device_keys(reader.consortium, cam)  # issue 10: declared outages
                      if carries_declarations(loaded.trusted.values()) else ())


def _self_check(claim: EvidenceClaim, facts: ChainFacts, restored: Restoration, notes: list[Note], loaded: ManifestLoad,
                produced_by: str) -> Report:
    """Verify the files on disk with the same rules `verify` applies (so the report describes
    what was written, not what was meant)."""
    samples = {p: restored.samples[p] if p in restored.samples else read_clip_samples(f)
               for p, f in restored.files.items()} | {p: restored.samples[p] for p in restored.in_bundle}
    raw_digests = {r.path: bytes.fromhex(r.path.split("/")[-1]) for r in claim.raw}
    pictures = {p: compare_pictures(restored.files[p], codec, frames, len(next(c for c in claim.clips if c.path == p).frames))
                for p, (codec, frames) in restored.originals.items()}
    report = verify_evidence(claim, facts, samples, raw_digests, pictures=pictures, produced_by=produced_by,
                             notes=notes, skip=loaded.skip)
    report.clips = clip_entries(claim, loaded.trusted)
    note_decoded(report, claim, pictures)
    for entry, c in zip(report.clips, claim.clips):
        entry.path = Path(c.path).name
    return report


class _BundleInBackground:
    """The clips that are files (PyAV's muxes, re-encodes, --probe) copied into the bundle (an
    hour's clip is hundreds of MB) in a worker thread while the proofs and the self-check are
    computed: the copy's reads, CRC and writes release the GIL. More members (`queue`: the
    manifests, proofs and raw frames, deflated there) follow in the same thread, in order.
    `writer` waits for all of them and hands the bundle over for the index and the report;
    leaving the block unfinished removes it. ``writer`` None: no bundle."""

    def __init__(self, writer: BundleWriter | None, clips: Mapping[str, Path | WrittenFile]) -> None:
        self._writer = writer
        self._pool: ThreadPoolExecutor | None = None  # no bundle, no thread
        self._adds: list[Future[None]] = []
        if writer is not None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="bundle-members")
            self.queue(list(clips.items()))

    def queue(self, members: list[tuple[str, bytes | Path | WrittenFile]]) -> None:
        """More members, added in the worker after those queued before (nothing without a bundle)."""
        if self._pool is not None and self._writer is not None:
            self._adds.append(self._pool.submit(self._writer.add, members))

    def writer(self) -> BundleWriter | None:
        """The bundle, once everything queued is in it (an error of an add is raised here)."""
        for added in self._adds:
            added.result()
        return self._writer

    def __enter__(self) -> "_BundleInBackground":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # the copy finishes (it cannot be interrupted) before its file goes
        if self._writer is not None:
            self._writer.abort()


def _member_paths(claim: EvidenceClaim, proofs: Mapping[int, Any]) -> tuple[dict[int, str], dict[int, str],
                                                                            dict[tuple[bytes, int], str]]:
    """Where the bundle holds each block's manifest, each proof and each codec source's manifest."""
    return ({b.height: f"manifests/{b.height:06d}.json" for b in claim.blocks if b.manifest is not None},
            {h: f"proofs/{h:06d}.json" for h in proofs},
            {(s.camera, s.height): f"manifests/{s.camera.hex()[:8]}-{s.height:06d}.json" for s in claim.codec_sources})


def _evidence_members(claim: EvidenceClaim, proofs: Mapping[int, bytes], data: Mapping[bytes, bytes],
                      ) -> list[tuple[str, bytes | Path]]:
    """The members that do not depend on the verdict: manifests, proofs (``proofs``: each
    block's document, spelled), batch manifests, raw frames."""
    manifest_paths, proof_paths, source_paths = _member_paths(claim, proofs)
    members: list[tuple[str, bytes | Path]] = []
    members += [(manifest_paths[b.height], b.manifest) for b in claim.blocks if b.manifest is not None]
    members += [(source_paths[(s.camera, s.height)], s.manifest) for s in claim.codec_sources if s.manifest is not None]
    members += [(proof_paths[h], proofs[h]) for h in sorted(proofs)]
    members += [(batch_member(b.index), b.manifest) for b in claim.batches if b.manifest is not None]
    # frames with identical bytes (a static scene can produce them) share one raw file
    members += [(p, data[bytes.fromhex(p.split("/")[-1])]) for p in dict.fromkeys(r.path for r in claim.raw)]
    return members


def _close_bundle(writer: BundleWriter, claim: EvidenceClaim, proofs: Mapping[int, Any], report: Report) -> Path:
    """The index and the report (`_BundleInBackground` wrote the clips and `_evidence_members`),
    then the bundle is closed."""
    manifest_paths, proof_paths, source_paths = _member_paths(claim, proofs)
    writer.add_index(bundle_index(claim=claim, manifest_paths=manifest_paths, proof_paths=proof_paths,
                                  produced_by=report.produced_by, codec_source_paths=source_paths))
    writer.add([("report.json", report.dumps().encode()), ("report.txt", report.render_text().encode())])
    return writer.close()


def _clip_files(claim: EvidenceClaim, restored: Restoration, writer: BundleWriter | None,
                bundle_path: Path | None) -> list[ClipFile]:
    """Where each clip's bytes are: its own file, or a stored member of the closed bundle."""
    out: list[ClipFile] = []
    for c in claim.clips:
        if c.path in restored.in_bundle and writer is not None and bundle_path is not None:
            offset, size = writer.stored_at[c.path]
            out.append(ClipFile(path=bundle_path, offset=offset, size=size, member=c.path))
        else:
            f = restored.files[c.path]
            out.append(ClipFile(path=f, offset=0, size=f.stat().st_size))
    return out


def _finish(report: Report, out: Path, bundle_path: Path | None, clips: list[ClipFile], timer: _Timer,
            fetcher: Fetcher) -> ExtractResult:
    rj, rt = out / "report.json", out / "report.txt"
    rj.write_text(report.dumps())
    rt.write_text(report.render_text())
    timer.lap("report")
    return ExtractResult(report, out, bundle_path, rj, rt, clips, dict(timer.t), fetcher.frames, fetcher.bytes)


def _bundle_name(claim: EvidenceClaim) -> str:
    who = (claim.camera_ip or h0x(claim.camera_id)[:12]).replace(":", "_").replace("/", "_")
    return f"evidence-{who}-{claim.from_ms}-{claim.to_ms}.zip"


def _encoded(f: FrameRef, data: Mapping[bytes, bytes]) -> EncodedFrame:
    return EncodedFrame(seq=f.seq, timestamp_ms=f.timestamp_ms, keyframe=f.keyframe, data=data[f.sha256],
                        dts_ms=f.dts_ms)


def _substitute_codec_source(reader: AnchorSource, fetcher: Fetcher, sub_cam: bytes, span: list[FrameRef]) -> CodecSource | None:
    """The substitute camera's own anchored block for that time, whose manifest (checked against
    the anchored digest) holds its codec configuration: manifests of the gap's camera record only
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
        codec = CodecConfig.from_json(m.codec) if m.codec else None
    except (ManifestFormatError, KeyError, ValueError, TypeError):
        return None
    return CodecSource(camera=sub_cam, height=heights[0], block=cb, manifest=got.data, codec=codec)


def _reencode_substitute(codec: CodecConfig, target: CodecConfig, segments: list[list[Item]],
                         data: Mapping[bytes, bytes], path: Path) -> list[tuple[int, int]]:
    """Decode another camera's segments and encode them alone, at the target camera's picture size
    and the substitute's capture times. Returns the (height, seq) of the frames whose pictures the
    clip holds, in order (a decoder may refuse a broken frame: that frame then travels raw only)."""
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
                         timestamps_ms=[ts for ts, _ in pictures], crf=REENCODE_CRF)
    return [(by_ts[ts][0], by_ts[ts][1].seq) for ts, _ in pictures]
