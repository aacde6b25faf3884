"""Video blocks: frame references, the manifest, the Merkle tree of frames and the header.

Pure code. The encodings here are the normative ones of SPEC.md and must equal what
`VideoLedger.sol` computes: the frame leaf is OpenZeppelin's StandardMerkleTree leaf over
``(bytes32 cameraId, uint64 seq, uint64 timestampMs, bytes32 frameSha256)`` and the block hash is
``keccak256(abi.encode(header))`` with the fields in the contract's declared order. Tests compare
both against the contract on a real chain.

A block covers one camera and one time window. Its manifest lists every frame the consortium
holds for that window (sequence, capture time, SHA-256, keyframe flag, size), every gap that could
not be repaired, and every span filled from another camera. The manifest's SHA-256 is anchored in
the header, so gaps and substitutions are on record, never hidden (B2, I7).
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from .merkle import StandardMerkleTree, keccak256
from .native import native as _native

FRAME_LEAF_ENCODING: tuple[str, ...] = ("bytes32", "uint64", "uint64", "bytes32")
HEADER_ABI_TYPE = "(bytes32,uint64,bytes32,uint64,uint64,uint32,bytes32,bytes32,address)"
MANIFEST_FORMAT = "frameledger.manifest/1"
FRAME_FIELDS = ("seq", "timestampMs", "sha256", "keyframe", "size", "dtsMs")
ZERO32 = b"\x00" * 32

# Tracks (issue 10): a camera's audio is a second track of the same camera, numbered in its own
# namespace inside the one u64 seq: seq = track << TRACK_SHIFT | n. Leaves, blocks and contracts
# are unchanged (an audio packet is a frame leaf like any other, under the camera's own id), the
# device signs the seq and so the track, and a camera without audio (track 0 only) keeps its
# numbers and bytes. 48 bits of n (2.8e14 packets) per track, at most 32 tracks, so every seq
# stays below 2**53 and is exact as a JSON number in JavaScript (scripts/verify_bundle.js).
TRACK_SHIFT = 48
MAX_TRACKS = 32
VIDEO_TRACK = 0
AUDIO_TRACK = 1
TRACK_NAMES = {VIDEO_TRACK: "video", AUDIO_TRACK: "audio"}


def track_of(seq: int) -> int:
    """The track a sequence number belongs to (0 = video)."""
    return seq >> TRACK_SHIFT


def track_seq(track: int, n: int) -> int:
    """The sequence number of the `n`-th packet (from 0) of `track`."""
    if not 0 <= track < MAX_TRACKS or not 0 <= n < 1 << TRACK_SHIFT:
        raise ValueError(f"track {track} / number {n} out of range")
    return track << TRACK_SHIFT | n


def track_bounds(track: int) -> tuple[int, int]:
    """The inclusive seq range of a track."""
    return track << TRACK_SHIFT, ((track + 1) << TRACK_SHIFT) - 1


def track_name(track: int) -> str:
    return TRACK_NAMES.get(track, f"track{track}")


def camera_id(camera_ip: str) -> bytes:
    """The on-chain id of a camera: keccak256 of its IP as UTF-8 (Consortium.registerCamera)."""
    return keccak(camera_ip.encode("utf-8"))


@functools.lru_cache(maxsize=8192)
def cached_camera_id(ip: str) -> bytes:
    """`camera_id` (a keccak) once per IP, not several times per packet (issue 9: 4.4% of ingest).
    Bounded: hostile packets naming random IPs only evict entries."""
    return camera_id(ip)


def camera_ref(ref: str) -> bytes:
    """A camera named by its 0x-prefixed 32-byte id or by its IP (→ `camera_id`). A malformed
    0x id raises ValueError rather than being taken for an IP."""
    if ref.startswith("0x") and len(ref) == 66:
        return bytes.fromhex(ref[2:])
    return camera_id(ref)


def head_block_hash(genesis_hash: bytes, camera_ip: str, timestamp: int) -> bytes:
    """C4: the head block every camera chain starts from, as Consortium._setHead computes it."""
    return keccak(abi_encode(["bytes32", "string", "uint64"], [genesis_hash, camera_ip, timestamp]))


def genesis_hash(camera_ips: Sequence[str], timestamp: int) -> bytes:
    """C3: H(IP1 ‖ … ‖ IPN ‖ timestamp), encoded unambiguously as abi.encode(string[], uint64)."""
    return keccak(abi_encode(["string[]", "uint64"], [list(camera_ips), timestamp]))


def window_of(timestamp_ms: int, window_ms: int) -> tuple[int, int]:
    """The aligned window [start, end) that holds a capture time."""
    start = timestamp_ms - timestamp_ms % window_ms
    return start, start + window_ms


_new_object = object.__new__


@dataclass(frozen=True, order=True)
class FrameRef:
    """What a block records of one frame. The bytes themselves live in the content store under
    the CIDv1 of their SHA-256."""

    timestamp_ms: int
    seq: int
    sha256: bytes
    keyframe: bool = False
    size: int = 0
    # Decode time, only for streams with B-frames (decode order ≠ capture order); a remux needs
    # it. Recorded in the manifest (anchored by its digest), not in the Merkle leaf.
    dts_ms: int | None = None

    @property
    def track(self) -> int:
        return track_of(self.seq)

    def leaf_values(self, camera: bytes) -> tuple[bytes, int, int, bytes]:
        return (camera, self.seq, self.timestamp_ms, self.sha256)

    def to_row(self) -> list[Any]:
        return [self.seq, self.timestamp_ms, self.sha256.hex(), 1 if self.keyframe else 0, self.size, self.dts_ms]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> "FrameRef":
        seq, ts, digest, key, size, dts = row
        # The frozen dataclass's __init__ sets each field through object.__setattr__ (half of
        # parsing a 1,500-frame manifest); the same fields go into the instance's dict at once.
        f = _new_object(cls)
        f.__dict__.update(timestamp_ms=int(ts), seq=int(seq), sha256=bytes.fromhex(digest), keyframe=bool(key),
                          size=int(size), dts_ms=None if dts is None else int(dts))
        return f

    @classmethod
    def of_bytes(cls, seq: int, timestamp_ms: int, data: bytes, keyframe: bool, dts_ms: int | None = None) -> "FrameRef":
        return cls(timestamp_ms=timestamp_ms, seq=seq, sha256=hashlib.sha256(data).digest(), keyframe=keyframe,
                   size=len(data), dts_ms=dts_ms)


@dataclass(frozen=True)
class Gap:
    """A span of sequence numbers no node could produce. `substitute_camera` names the camera of
    the same group whose frames fill the span for playback (I7); those frames are listed in the
    manifest's substitutions and are never part of this camera's Merkle tree."""

    from_seq: int
    to_seq: int  # inclusive
    from_ms: int
    to_ms: int
    keyframe_lost: bool = False
    substitute_camera: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "fromSeq": self.from_seq,
            "toSeq": self.to_seq,
            "fromMs": self.from_ms,
            "toMs": self.to_ms,
            "keyframeLost": self.keyframe_lost,
        }
        if self.substitute_camera is not None:
            out["substituteCamera"] = "0x" + self.substitute_camera.hex()
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Gap":
        sub = d.get("substituteCamera")
        return cls(
            from_seq=int(d["fromSeq"]),
            to_seq=int(d["toSeq"]),
            from_ms=int(d["fromMs"]),
            to_ms=int(d["toMs"]),
            keyframe_lost=bool(d.get("keyframeLost", False)),
            substitute_camera=bytes.fromhex(sub[2:]) if sub else None,
        )


def _hex32(v: Any) -> bytes:
    if not isinstance(v, str):
        raise ValueError(f"expected a hex string, got {type(v).__name__}")
    b = bytes.fromhex(v[2:] if v.startswith("0x") else v)
    if len(b) != 32:
        raise ValueError(f"expected 32 bytes, got {len(b)}")
    return b


def _uint(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"expected a non-negative integer, got {v!r}")
    return int(v)


def _address(v: Any) -> str:
    if not isinstance(v, str) or len(v) != 42 or not v.startswith("0x"):
        raise ValueError(f"expected an address, got {v!r}")
    int(v[2:], 16)
    return v


def _static_header_encoding(h: "BlockHeader") -> bytes | None:
    """``abi.encode`` of a header, whose every field is static, as its nine 32-byte words (eth_abi
    took ~1 ms a header); None when a value is off its type (eth_abi then says why)."""
    words = []
    for value, kind in zip(h.as_tuple(), _HEADER_WORDS):
        if kind == "bytes32":
            if type(value) is not bytes or len(value) != 32:
                return None
            words.append(value)
        elif kind == "address":
            if type(value) is not str or len(value) != 42 or value[:2] not in ("0x", "0X"):
                return None
            try:
                words.append(bytes(12) + bytes.fromhex(value[2:]))
            except ValueError:
                return None
        else:
            bits = int(kind[4:])
            if type(value) is not int or not 0 <= value < 1 << bits:
                return None
            words.append(value.to_bytes(32, "big"))
    return b"".join(words)


_HEADER_WORDS = HEADER_ABI_TYPE.strip("()").split(",")


@dataclass(frozen=True)
class BlockHeader:
    """Mirror of `VideoLedger.BlockHeader`; field order is part of the hash."""

    camera_id: bytes
    height: int
    prev_hash: bytes
    window_start_ms: int
    window_end_ms: int
    frame_count: int
    frames_root: bytes
    manifest_digest: bytes
    proposer: str

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.camera_id,
            self.height,
            self.prev_hash,
            self.window_start_ms,
            self.window_end_ms,
            self.frame_count,
            self.frames_root,
            self.manifest_digest,
            self.proposer,
        )

    @functools.cached_property
    def hash(self) -> bytes:
        # Cached: a batch of 200 headers hashes each several times (tree, checks, tips).
        encoded = _static_header_encoding(self)
        if encoded is None:  # a value off the types: eth_abi refuses it as before
            encoded = abi_encode([HEADER_ABI_TYPE], [self.as_tuple()])
        return keccak256(encoded)

    @classmethod
    def from_tuple(cls, t: Sequence[Any] | dict[str, Any]) -> "BlockHeader":
        row: Sequence[Any]
        if isinstance(t, dict) or hasattr(t, "keys"):  # event logs decode structs by field name
            row = [t[k] for k in ("cameraId", "height", "prevHash", "windowStartMs", "windowEndMs",  # type: ignore[call-overload]
                                  "frameCount", "framesRoot", "manifestDigest", "proposer")]
        else:
            row = t
        return cls(bytes(row[0]), int(row[1]), bytes(row[2]), int(row[3]), int(row[4]), int(row[5]), bytes(row[6]),
                   bytes(row[7]), str(row[8]))

    def to_json(self) -> dict[str, Any]:
        return {
            "cameraId": "0x" + self.camera_id.hex(),
            "height": self.height,
            "prevHash": "0x" + self.prev_hash.hex(),
            "windowStartMs": self.window_start_ms,
            "windowEndMs": self.window_end_ms,
            "frameCount": self.frame_count,
            "framesRoot": "0x" + self.frames_root.hex(),
            "manifestDigest": "0x" + self.manifest_digest.hex(),
            "proposer": self.proposer,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "BlockHeader":
        """The header as JSON (`to_json`); a field of the wrong type or length is a ValueError."""
        return cls(
            _hex32(d["cameraId"]), _uint(d["height"]), _hex32(d["prevHash"]), _uint(d["windowStartMs"]),
            _uint(d["windowEndMs"]), _uint(d["frameCount"]), _hex32(d["framesRoot"]), _hex32(d["manifestDigest"]),
            _address(d["proposer"]),
        )


@dataclass(frozen=True)
class Manifest:
    """The off-chain body of a block, stored as canonical JSON in the content store."""

    camera_id: bytes
    camera_ip: str
    height: int
    window_start_ms: int
    window_end_ms: int
    frames: tuple[FrameRef, ...]
    gaps: tuple[Gap, ...] = ()
    substitutions: tuple[tuple[bytes, tuple[FrameRef, ...]], ...] = ()
    # The camera's signed codec configuration (its hello's); with audio it has an "audio" entry
    # (the audio track's codec, sample rate, time base, extradata), committed like the video's.
    codec: dict[str, Any] = field(default_factory=dict)
    # Optional (issue 8), written only when set, so manifests without them keep their bytes:
    # "unended" = the camera's stream stopped in this window without a signed end message (its
    # tail may be missing, and is not hidden); codec_proof = the camera's signed hello that
    # carried `codec` ({"signedJson", "signature" hex, "domain"}; `offchain.core.wire`).
    stream_end: str | None = None
    codec_proof: dict[str, Any] | None = None
    # Optional (issue 10), written only when non-empty: the camera's signed outage declarations
    # whose toMs falls in this window, each {"signedJson", "signature" hex, "domain"}
    # (`offchain.core.outages`), anchored with the manifest.
    declared_outages: tuple[dict[str, Any], ...] = ()

    @functools.cached_property
    def video_only(self) -> bool:
        """Whether every frame is on the video track (no audio packet): derived once per manifest,
        in one C-level pass, for the planners that would otherwise test each frame."""
        return not self.frames or max(map(_SEQ, self.frames)) <= track_bounds(VIDEO_TRACK)[1]

    def to_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, no whitespace, so every node produces identical bytes."""
        doc = {
            "format": MANIFEST_FORMAT,
            "cameraId": "0x" + self.camera_id.hex(),
            "cameraIp": self.camera_ip,
            "height": self.height,
            "windowStartMs": self.window_start_ms,
            "windowEndMs": self.window_end_ms,
            "codec": self.codec,
            "frameFields": list(FRAME_FIELDS),
            "frames": [f.to_row() for f in self.frames],
            "gaps": [g.to_json() for g in self.gaps],
            "substitutions": [
                {"cameraId": "0x" + cam.hex(), "frames": [f.to_row() for f in frames]}
                for cam, frames in self.substitutions
            ],
        }
        if self.stream_end is not None:
            doc["streamEnd"] = self.stream_end
        if self.codec_proof is not None:
            doc["codecProof"] = self.codec_proof
        if self.declared_outages:
            doc["declaredOutages"] = list(self.declared_outages)
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Manifest":
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestFormatError(f"manifest is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise ManifestFormatError(f"not a {MANIFEST_FORMAT} document")
        if tuple(doc.get("frameFields", ())) != FRAME_FIELDS:
            raise ManifestFormatError(f"unexpected frameFields {doc.get('frameFields')}")
        try:
            return cls(
                camera_id=bytes.fromhex(doc["cameraId"][2:]),
                camera_ip=doc["cameraIp"],
                height=int(doc["height"]),
                window_start_ms=int(doc["windowStartMs"]),
                window_end_ms=int(doc["windowEndMs"]),
                frames=_frame_refs(doc["frames"]),
                gaps=tuple(Gap.from_json(g) for g in doc["gaps"]),
                substitutions=tuple(
                    (bytes.fromhex(s["cameraId"][2:]), _frame_refs(s["frames"]))
                    for s in doc["substitutions"]
                ),
                codec=doc.get("codec", {}),
                stream_end=_optional_str(doc.get("streamEnd")),
                codec_proof=doc.get("codecProof") if isinstance(doc.get("codecProof"), dict) else None,
                declared_outages=_declared_outages(doc.get("declaredOutages")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ManifestFormatError(f"malformed manifest: {exc!r}") from exc


def _frame_refs(rows: Any) -> tuple[FrameRef, ...]:
    """`FrameRef.from_row` of every row: in one C call where built and every row is of the
    manifest's own layout (`_native.frame_refs`, the same records; a third of parsing a
    1,500-frame manifest was the loop), else row by row, which accepts or rejects as ever."""
    if _native is not None and type(rows) is list:
        refs: tuple[FrameRef, ...] | None = _native.frame_refs(FrameRef, rows)
        if refs is not None:
            return refs
    return tuple(FrameRef.from_row(r) for r in rows)


def _declared_outages(value: Any) -> tuple[dict[str, Any], ...]:
    """The entries as given (each is checked by `core.outages.verify_proof`, which reports a bad
    one by name instead of rejecting the whole manifest); not a list of objects: malformed."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError("declaredOutages is not a list of objects")
    return tuple(value)


def _optional_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {value!r}")


_SEQ = operator.attrgetter("seq")


class ManifestFormatError(ValueError):
    """The bytes are not a manifest this version understands."""


class BlockBuildError(ValueError):
    """The frames given cannot form a valid block (wrong window, duplicates, disorder)."""


_U64 = 1 << 64


def frames_tree(camera: bytes, frames: Iterable[FrameRef]) -> StandardMerkleTree | None:
    """The block's frame tree (SPEC.md: leaves ``(camera, seq, timestamp, sha256)``), or None for
    no frames. Each leaf's ABI encoding is written directly (four static 32-byte words) instead of
    through the generic per-value codec, which was most of a tree's cost (issue 9, extraction
    profile); a value the direct encoding cannot take goes the generic way, which rejects it as
    the library does. tests/unit/test_merkle_frames.py keeps both ways identical."""
    refs = list(frames)
    if not refs:
        return None
    values = [f.leaf_values(camera) for f in refs]
    k = keccak256
    hashes: list[bytes] = []
    in_c = _native.frame_leaf_hashes(camera, refs) if _native is not None and type(camera) is bytes else None
    if in_c is not None:  # the same hashes as the loop below, in one call (offchain/core/_native.c)
        return StandardMerkleTree.from_leaf_hashes(in_c, values, list(FRAME_LEAF_ENCODING))
    if len(camera) == 32:
        for f in refs:
            s, t, d = f.seq, f.timestamp_ms, f.sha256
            if (type(s) is not int or type(t) is not int or type(d) is not bytes
                    or not (0 <= s < _U64 and 0 <= t < _U64) or len(d) != 32):
                break
            hashes.append(k(k(b"".join((camera, s.to_bytes(32, "big"), t.to_bytes(32, "big"), d)))))
    if len(hashes) != len(refs):
        return StandardMerkleTree.of(values, list(FRAME_LEAF_ENCODING))
    return StandardMerkleTree.from_leaf_hashes(hashes, values, list(FRAME_LEAF_ENCODING))


@dataclass(frozen=True)
class SealedBlock:
    header: BlockHeader
    manifest: Manifest
    manifest_bytes: bytes
    tree: StandardMerkleTree | None

    @property
    def hash(self) -> bytes:
        return self.header.hash


def build_block(
    *,
    camera_ip: str,
    height: int,
    prev_hash: bytes,
    window_start_ms: int,
    window_end_ms: int,
    frames: Iterable[FrameRef],
    proposer: str,
    codec: dict[str, Any] | None = None,
    gaps: Iterable[Gap] = (),
    substitutions: Iterable[tuple[bytes, Iterable[FrameRef]]] = (),
    stream_end: str | None = None,
    codec_proof: dict[str, Any] | None = None,
    declared_outages: Iterable[dict[str, Any]] = (),
) -> SealedBlock:
    """Seal one camera window. Frames are ordered by (timestamp, seq); any frame outside the
    window or a repeated sequence number is a caller bug and raises `BlockBuildError`."""
    if window_end_ms <= window_start_ms:
        raise BlockBuildError(f"empty window [{window_start_ms}, {window_end_ms})")
    ordered = sorted(frames)
    seen: set[int] = set()
    for f in ordered:
        if not window_start_ms <= f.timestamp_ms < window_end_ms:
            raise BlockBuildError(f"frame seq {f.seq} at {f.timestamp_ms} is outside [{window_start_ms}, {window_end_ms})")
        if f.seq in seen:
            raise BlockBuildError(f"duplicate frame seq {f.seq}")
        seen.add(f.seq)
    cam = camera_id(camera_ip)
    manifest = Manifest(
        camera_id=cam,
        camera_ip=camera_ip,
        height=height,
        window_start_ms=window_start_ms,
        window_end_ms=window_end_ms,
        frames=tuple(ordered),
        gaps=tuple(sorted(gaps, key=lambda g: (g.from_ms, g.from_seq))),
        substitutions=tuple((c, tuple(sorted(fs))) for c, fs in substitutions),
        codec=dict(codec or {}),
        stream_end=stream_end,
        codec_proof=codec_proof,
        declared_outages=tuple(declared_outages),
    )
    manifest_bytes = manifest.to_bytes()
    tree = frames_tree(cam, ordered)
    header = BlockHeader(
        camera_id=cam,
        height=height,
        prev_hash=prev_hash,
        window_start_ms=window_start_ms,
        window_end_ms=window_end_ms,
        frame_count=len(ordered),
        frames_root=tree.root if tree else ZERO32,
        manifest_digest=hashlib.sha256(manifest_bytes).digest(),
        proposer=proposer,
    )
    return SealedBlock(header=header, manifest=manifest, manifest_bytes=manifest_bytes, tree=tree)


def proposer_for(camera: bytes | None, window_start_ms: int, nodes: Sequence[str], attempt: int = 0) -> str:
    """B3: the node that proposes a (camera, window) block. Deterministic, so every node agrees
    without talking; spread across cameras and windows by hashing; `attempt` moves to the next
    node when the chosen one did not anchor in its slot (`core.windows.turn_at`). With camera
    None, the proposer of the window itself (one turn for every camera of it: batch anchoring)."""
    if not nodes:
        raise ValueError("no nodes to propose")
    slot = int.from_bytes(keccak((camera or b"") + window_start_ms.to_bytes(8, "big")), "big")
    return list(nodes)[(slot + attempt) % len(nodes)]
