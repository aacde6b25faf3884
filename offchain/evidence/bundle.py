"""The self-contained evidence bundle (S6): one zip a third party verifies with chain access only.

Layout (all paths inside the zip; docs/EVIDENCE.md has the details)::

    bundle.json                 the index: chain id, contract addresses, camera, range, blocks
                                (height, block hash, header, anchor/attest transactions, where its
                                manifest and multiproof are), clips (which anchored frames each
                                carries, in sample order), raw frames
    manifests/<height>.json     each block's manifest, the exact anchored bytes
    proofs/<height>.json        per block, a StandardMerkleTree multiproof of the frames presented
    clips/clip-NNN[-substituted].mp4   the restored video
    frames/<sha256 hex>         raw bytes of frames not carried byte-exact by a clip: another
                                camera's substituted frames (their clip is re-encoded) and frames
                                that cannot be decoded after a gap
    report.json, report.txt     what the extractor concluded (informational: never trusted)

`verify_bundle` recomputes everything against the chain (eth_call, eth_getLogs) and trusts nothing
in the zip but bytes it can hash: each header is compared with the one anchored at its height, each
manifest with the anchored digest, each multiproof with the anchored root (locally and through
`VideoLedger.verifyFrames`), each clip packet and raw frame with the manifest's SHA-256. It never
needs a node or a content store. `scripts/verify_bundle.js` does the same in JavaScript.

This module also holds the two pieces of I/O verification needs from the outside world and that
extraction shares: `ChainReader` (what the chain says) and `read_clip_samples` (what a clip holds).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import mmap
import os
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, BinaryIO, Callable, Iterable, Iterator, Mapping, Sequence

import av
from web3 import Web3

from eth_abi import decode as abi_decode, encode as abi_encode
from eth_utils.abi import function_abi_to_4byte_selector, get_abi_input_types, get_abi_output_types
from eth_utils import keccak

from .gcpause import collections_paused
from ..chain.client import as_revert, call, connect, load_artifact
from ..chain.rawrpc import RawEthCall
from ..chain.reverts import ContractRevert
from ..camera.sources import CodecConfig, EncodedFrame
from ..core.block import FRAME_LEAF_ENCODING, BlockHeader, FrameRef, Manifest, ManifestFormatError
from ..core.merkle import MultiProof
from ..core.gather import sha256_each
from ..core.mp4 import FTYP, TRACK_TIMESCALE, head_length, read_written_head
from .ahead import ahead
from .anchors import ask_concurrently
from .batch_anchors import ANCHORING_BATCH, ANCHORING_HEADER, MAX_BATCHES, BatchReader
from .bundle_reader import BundleError, BundleReader, MemberError
from .report import Report
from .trust import TrustDecision, TrustList, TrustOutcome, decide_trust, load_trust
from .outage_keys import carries_declarations, device_keys
from .verify import (
    BlockClaim,
    ChainBlock,
    ChainFacts,
    ClipClaim,
    ClipSamples,
    CodecSourceClaim,
    EvidenceClaim,
    Note,
    RawClaim,
    check_codec_source,
    clip_entries,
    decode_key,
    KnownLeaves,
    h0x,
    known_leaves,
    manifest_tree,
    parse_multiproof,
    parsed_manifest,
    verify_evidence,
)
from .video import PictureComparison, compare_pictures, probe_mp4

__all__ = [
    "WrittenFile",
    "BUNDLE_FORMAT",
    "BundleError",
    "BundleReader",
    "BundleWriter",
    "ChainReader",
    "IndexParse",
    "bundle_index",
    "parse_index",
    "note_decoded",
    "probe_remuxed_clips",
    "read_clip_samples",
    "copy_range",
    "verify_bundle",
]

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "frameledger.evidence-bundle/1"
INDEX = "bundle.json"
# eth_calls per JSON-RPC batch when reading block records (an hour of one camera: 60 blocks).
_BATCH = 200
_BLOCK_ANCHORED = "0x" + keccak(
    b"BlockAnchored(bytes32,uint64,bytes32,(bytes32,uint64,bytes32,uint64,uint64,uint32,bytes32,bytes32,address))").hex()
_BLOCK_ATTESTED = "0x" + keccak(b"BlockAttested(bytes32,address,uint16)").hex()
_VERIFY_FRAMES = keccak(b"verifyFrames(bytes32,bytes32[],bool[],bytes32[])")[:4]
# Index entry limits (docs/EVIDENCE.md); the JavaScript verifier has the same.
MAX_BLOCKS = 10_000
MAX_CLIPS = 10_000
MAX_CLIP_FRAMES = 1_000_000
MAX_RAW_FRAMES = 1_000_000


# --------------------------------------------------------------------------- chain access


class ChainReader:
    """Read-only view of one VideoLedger: eth_call for state, eth_getLogs for transactions.

    Used by extraction (through the node's client) and by bundle verification (through nothing
    but an RPC URL), so both read the chain the same way."""

    def __init__(self, w3: Web3, ledger_address: str):
        self.w3 = w3
        self.contract = w3.eth.contract(address=Web3.to_checksum_address(ledger_address),
                                        abi=load_artifact("VideoLedger")["abi"])
        self.address = self.contract.address
        self._abi_functions = {f["name"]: f for f in self.contract.abi if f.get("type") == "function"}
        self._consortium: Any = None
        self._raw_call = RawEthCall.of(w3.provider)  # verifyFrames' 100 kB calls without web3's Python

    @property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    def has_code(self) -> bool:
        return len(self.w3.eth.get_code(self.address)) > 0

    @property
    def consortium_address(self) -> str:
        return self.consortium.address

    @property
    def consortium(self):
        if self._consortium is None:
            addr = self.contract.functions.consortium().call()
            self._consortium = self.w3.eth.contract(address=addr, abi=load_artifact("Consortium")["abi"])
        return self._consortium

    def camera_ip(self, camera: bytes) -> str | None:
        """The registered IP, or None when the camera is not on the whitelist."""
        try:
            return call(self.consortium.functions.camera(camera))[0]
        except ContractRevert:  # UnknownCamera
            return None

    def heights_in_range(self, camera: bytes, from_ms: int, to_ms: int) -> list[int]:
        first, last = self.contract.functions.blocksInRange(camera, max(0, from_ms), max(0, to_ms)).call()
        return list(range(int(first), int(last) + 1))

    def chain_length(self, camera: bytes) -> int:
        return int(self.contract.functions.chainLength(camera).call())

    def blocks_in_range(self, camera: bytes, from_ms: int, to_ms: int) -> tuple[list[int], dict[int, ChainBlock | None]]:
        heights = self.heights_in_range(camera, from_ms, to_ms)
        return heights, self.blocks(camera, heights)

    def blocks(self, camera: bytes, heights: Iterable[int]) -> dict[int, ChainBlock | None]:
        """Block records at these heights, with their anchoring and attesting transactions: the
        records in JSON-RPC batches (two round trips per `_BATCH` blocks, not two per block),
        the transactions in two log queries."""
        heights = sorted(set(int(h) for h in heights if h >= 1))
        length = self.chain_length(camera) if heights else 0
        out: dict[int, ChainBlock | None] = {h: None for h in heights if h > length}
        present = [h for h in heights if h <= length]
        hashes = [bytes(b) for b in self._batched("blockHashAt", [(camera, h) for h in present])]
        recs = self._batched("getBlock", [(bh,) for bh in hashes])
        records = {h: (bh, rec) for h, bh, rec in zip(present, hashes, recs)}
        anchors = self._anchor_txs(camera, list(records))
        attests = self._attest_txs([bh for bh, _ in records.values()])
        for h, (block_hash, rec) in records.items():
            header = BlockHeader.from_tuple((*rec[0][:8], Web3.to_checksum_address(rec[0][8])))
            out[h] = ChainBlock(h, block_hash, header, int(rec[1]), int(rec[2]), int(rec[3]), bool(rec[4]),
                                anchors.get(h), tuple(attests.get(block_hash, ())))
        return dict(sorted(out.items()))

    def _batched(self, function: str, args: list[tuple[Any, ...]]) -> list[Any]:
        """One view function of the ledger for each argument tuple, as eth_calls in JSON-RPC
        batches of `_BATCH` (one plain call for a single one). Encoded and decoded with eth_abi
        directly: web3's contract layer normalises every argument and result in Python, which
        was a third of reading an hour's 60 block records (profiled). A revert raises, as
        `call` would."""
        fn = self._abi_functions[function]
        selector = function_abi_to_4byte_selector(fn)
        inputs, outputs = get_abi_input_types(fn), get_abi_output_types(fn)
        requests = [{"to": self.address, "data": "0x" + (selector + abi_encode(inputs, list(a))).hex()} for a in args]
        if len(requests) == 1:
            raw: list[Any] = [self.w3.eth.call(requests[0])]
        else:
            raw = []
            for i in range(0, len(requests), _BATCH):
                plain = self._plain_batch(requests[i:i + _BATCH])
                if plain is not None:
                    raw.extend(plain)
                    continue
                with self.w3.batch_requests() as batch:  # anything but plain answers: web3 says what it was
                    for r in requests[i:i + _BATCH]:
                        batch.add(self.w3.eth.call(r))
                    raw.extend(batch.execute())
        out = []
        for data in raw:
            if not isinstance(data, (bytes, bytearray)):
                raise ValueError(f"{function}: the node answered {type(data).__name__}, not return data")
            values = abi_decode(outputs, bytes(data))
            out.append(values[0] if len(values) == 1 else values)
        return out

    def _plain_batch(self, requests: list[dict[str, str]]) -> list[bytes] | None:
        """eth_calls in one JSON-RPC batch asked of the provider itself (web3's batch formats every
        request and answer in Python, half of reading 20 records); their return data when every
        answer is a plain hex result, else None (the caller asks again through web3)."""
        make_batch = getattr(self.w3.provider, "make_batch_request", None)
        if make_batch is None:
            return None
        try:
            answers = make_batch([("eth_call", [r, "latest"]) for r in requests])
        except Exception:  # noqa: BLE001 - the careful way reports it
            return None
        if not isinstance(answers, list) or len(answers) != len(requests):
            return None
        out: list[bytes] = []
        for answer in answers:
            data = _plain_return_data(answer)
            if data is None:
                return None
            out.append(data)
        return out

    # Both events are read by their indexed topics only (a raw eth_getLogs): decoding each log's
    # data through web3's event ABI was half of reading an hour's block records (profiled).
    def _anchor_txs(self, camera: bytes, heights: list[int]) -> dict[int, str]:
        """BlockAnchored(cameraId indexed, height indexed, blockHash indexed, header): the
        anchoring transaction of each height."""
        if not heights:
            return {}
        logs = self.w3.eth.get_logs({"address": self.address, "fromBlock": 0, "topics": [
            _BLOCK_ANCHORED, "0x" + camera.hex(), ["0x" + h.to_bytes(32, "big").hex() for h in heights]]})
        return {int.from_bytes(bytes(lg["topics"][2]), "big"): lg["transactionHash"].to_0x_hex() for lg in logs}

    def _attest_txs(self, hashes: list[bytes]) -> dict[bytes, list[str]]:
        """BlockAttested(blockHash indexed, node indexed, attestations): each block's attesting
        transactions."""
        if not hashes:
            return {}
        out: dict[bytes, list[str]] = {}
        logs = self.w3.eth.get_logs({"address": self.address, "fromBlock": 0, "topics": [
            _BLOCK_ATTESTED, ["0x" + bytes(h).hex() for h in hashes]]})
        for lg in logs:
            out.setdefault(bytes(lg["topics"][1]), []).append(lg["transactionHash"].to_0x_hex())
        return out

    def verify_frames(self, block_hash: bytes, proof: MultiProof, leaf_hashes: list[bytes]) -> bool:
        """`VideoLedger.verifyFrames` (OpenZeppelin MerkleProof.multiProofVerify against the
        anchored root). A malformed proof reverts in the library; that is a `False` here."""
        # Encoded with eth_abi directly: web3's generic argument normaliser walks every element
        # of the three arrays in Python and costs ~0.3 s per 1,500-frame block.
        data = _VERIFY_FRAMES + _encode_verify_frames(block_hash, list(proof.proof), list(proof.proof_flags),
                                                      list(leaf_hashes))
        # Asked over HTTP directly where the provider allows (chain.rawrpc), else of the provider
        # itself: web3's request and result formatters walk the 100 kB of calldata in Python (a
        # third of the call's CPU, beside the rules). Only a plain answer is taken from either;
        # anything else is asked again through web3, whose errors say what it was.
        request = {"to": self.address, "data": "0x" + data.hex()}
        raw = self._raw_call.call(self.address, request["data"]) if self._raw_call is not None else None
        answer = _plain_return_data(raw if raw is not None else self.w3.provider.make_request("eth_call", [request, "latest"]))
        if answer is not None and len(answer) == 32:
            return bool(abi_decode(["bool"], answer)[0])
        try:
            out = self.w3.eth.call(request)
        except Exception as exc:  # noqa: BLE001 - a revert (malformed multiproof) is a "no"
            if as_revert(exc, "verifyFrames") is not None:
                return False
            raise
        return bool(abi_decode(["bool"], bytes(out))[0])

    def proofs_on_chain(self, blocks: Mapping[int, ChainBlock | None], proofs: Mapping[int, Mapping[str, Any] | None],
                        known: Mapping[int, KnownLeaves] | None = None) -> dict[int, bool | None]:
        """`verifyFrames` for each block's multiproof. ``known`` (per height) spares re-hashing
        leaves already hashed into a verified manifest's tree."""
        def asks() -> Iterator[tuple[int, Callable[[], bool]]]:
            for h, doc in proofs.items():
                cb = blocks.get(h)
                if cb is None or doc is None:
                    continue
                try:
                    mp, hashes, _ = parse_multiproof(doc, (known or {}).get(h))
                except ValueError:
                    continue
                if hashes:
                    yield h, partial(self.verify_frames, cb.block_hash, mp, hashes)

        return dict(ask_concurrently(asks()))


def _plain_return_data(answer: Any) -> bytes | None:
    """An eth_call's return data from a raw JSON-RPC answer, when it is a plain hex result (no
    error); None for anything else, which the caller asks again through web3."""
    result = answer.get("result") if isinstance(answer, dict) and "error" not in answer else None
    if not (isinstance(result, str) and result.startswith("0x")):
        return None
    try:
        return bytes.fromhex(result[2:])
    except ValueError:
        return None


def _encode_verify_frames(block_hash: bytes, proof: list[bytes], flags: list[bool], leaves: list[bytes]) -> bytes:
    """abi.encode(bytes32, bytes32[], bool[], bytes32[]) by hand: every element is one word, so
    the encoding is a concatenation (eth_abi's generic encoder took ~10 µs per element). A
    test keeps it equal to eth_abi's."""
    # Checked by C-level passes (a Python loop over every word was a tenth of the call's CPU).
    words = [block_hash, *proof, *leaves]
    if not all(map(isinstance, words, itertools.repeat((bytes, bytearray)))) or set(map(len, words)) - {32}:
        raise ValueError("verifyFrames takes 32-byte words")
    word = 32
    head = 4 * word
    off_proof = head
    off_flags = off_proof + word * (1 + len(proof))
    off_leaves = off_flags + word * (1 + len(flags))
    true, false = (1).to_bytes(32, "big"), bytes(32)
    return b"".join([
        bytes(block_hash), off_proof.to_bytes(32, "big"), off_flags.to_bytes(32, "big"), off_leaves.to_bytes(32, "big"),
        len(proof).to_bytes(32, "big"), *map(bytes, proof),
        len(flags).to_bytes(32, "big"), *[true if f else false for f in flags],
        len(leaves).to_bytes(32, "big"), *map(bytes, leaves),
    ])


# --------------------------------------------------------------------------- clips


def _ms(pts: int, num: int, den: int) -> int:
    """round(pts * num / den) in integers, half to even like round(Fraction) (which cost ~10 µs
    a packet)."""
    q, r = divmod(pts * num, den)
    return q + 1 if 2 * r > den or (2 * r == den and q % 2) else q


def read_clip_samples(path: str | os.PathLike[str] | BinaryIO) -> ClipSamples:
    """Demux (never decode) a clip (a path, or a seekable binary file: `BundleReader.open_member`):
    each sample's SHA-256 and presentation time in ms, in file order, and its codec configuration
    record.

    Demuxing is enough to prove the bytes are the anchored frames; decoding proves only that a
    decoder accepts them, which `probe_mp4` does where asked. A clip that is exactly what
    extraction's one-pass writer lays out (`offchain.core.mp4.read_written_head`: its index read
    and written again, byte for byte) is read without a demuxer (`_written_clip_samples`); any
    other file through PyAV's."""
    named = not hasattr(path, "read")
    try:
        with (open(path, "rb") if named else nullcontext(path)) as fh:  # type: ignore[arg-type]
            written = _written_clip_samples(fh)  # type: ignore[arg-type]
            if written is not None:
                return written
            if not named:
                fh.seek(0)  # type: ignore[union-attr]
                return _demuxed_clip_samples(fh)  # type: ignore[arg-type]
    except OSError as exc:
        return ClipSamples(None, f"cannot demux: {exc}")
    return _demuxed_clip_samples(os.fspath(path))  # type: ignore[arg-type]  # FFmpeg opens a path itself


def _written_clip_samples(fh: BinaryIO) -> ClipSamples | None:
    """The samples of a clip in the one-pass writer's exact layout, read in runs of whole samples
    up to _RUN_BYTES (the next run read in a worker thread while this one is hashed, both without
    the GIL: `sha256_each`); None for any other file. Its index being the one `mp4_head` writes
    for its own table, there is one way to read it: the way PyAV does (tests/unit/test_mp4.py
    compares the two)."""
    size = fh.seek(0, os.SEEK_END)
    fh.seek(0)
    n = head_length(fh.read(len(FTYP) + 8))
    if n is None:
        return None
    fh.seek(0)
    layout = read_written_head(fh.read(min(n, size)), size)
    if layout is None:
        return None
    fh.seek(layout.head_bytes)
    sizes, pts = layout.table.sizes, layout.table.pts

    def runs() -> Iterator[tuple[bytes, Sequence[int] | None]]:
        """(a run's bytes, its samples' sizes) to hash, or (a digest, None) for one sample larger
        than a run, hashed as it is read: memory stays within two runs whatever the index says."""
        i = 0
        while i < len(sizes):
            if sizes[i] > _RUN_BYTES:
                yield _streamed_sha256(fh, sizes[i], i), None
                i += 1
                continue
            j, run = i + 1, sizes[i]
            while j < len(sizes) and run + sizes[j] <= _RUN_BYTES:
                run += sizes[j]
                j += 1
            data = fh.read(run)
            if len(data) != run:
                raise OSError(f"the clip ends inside sample {i}")
            yield data, sizes[i:j]
            i = j

    digests = b"".join(data if run_sizes is None else sha256_each(data, run_sizes)
                       for data, run_sizes in ahead(runs(), name="verify-read-ahead"))
    out = [(digests[32 * k:32 * k + 32], _ms(t, 1000, TRACK_TIMESCALE)) for k, t in enumerate(pts)]
    return ClipSamples(out, extradata=layout.video.avcc, audio=None)


_RUN_BYTES = 16 << 20


def _streamed_sha256(fh: BinaryIO, size: int, index: int) -> bytes:
    """The SHA-256 of the next ``size`` bytes of ``fh``, read a run at a time."""
    h = hashlib.sha256()
    left = size
    while left:
        chunk = fh.read(min(left, _RUN_BYTES))
        if not chunk:
            raise OSError(f"the clip ends inside sample {index}")
        h.update(chunk)
        left -= len(chunk)
    return h.digest()


def _demuxed_clip_samples(fh: BinaryIO | str) -> ClipSamples:
    try:
        with av.open(fh) as container:
            if not container.streams.video:
                return ClipSamples(None, "no video stream")
            stream = container.streams.video[0]
            sound = container.streams.audio[0] if container.streams.audio else None
            extradata = bytes(stream.codec_context.extradata or b"")
            out: list[tuple[bytes, int]] = []
            audio: list[tuple[bytes, int]] = []
            scale = {s.index: (1000 * s.time_base.numerator, s.time_base.denominator) for s in (stream, sound) if s}
            for packet in container.demux(*(s for s in (stream, sound) if s is not None)):
                if packet.size == 0:
                    continue
                pts = packet.pts if packet.pts is not None else packet.dts
                if pts is None:
                    return ClipSamples(None, "packet without timestamps")
                num, den = scale[packet.stream.index]
                (out if packet.stream.index == stream.index else audio).append(
                    (hashlib.sha256(packet).digest(), _ms(pts, num, den)))  # the packet's buffer, not a copy
            return ClipSamples(out, extradata=extradata, audio=audio if sound is not None else None)
    except (av.FFmpegError, OSError, ValueError) as exc:
        return ClipSamples(None, f"cannot demux: {exc}")


# --------------------------------------------------------------------------- writing


def bundle_index(
    *,
    claim: EvidenceClaim,
    manifest_paths: Mapping[int, str],
    proof_paths: Mapping[int, str],
    produced_by: str,
    codec_source_paths: Mapping[tuple[bytes, int], str] | None = None,
) -> dict[str, Any]:
    """The bundle.json document for a claim."""
    return {
        "format": BUNDLE_FORMAT,
        "createdAt": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "producedBy": produced_by,
        "chainId": claim.chain_id,
        "anchoring": claim.anchoring,
        "contracts": {"VideoLedger": claim.ledger, "Consortium": claim.consortium,
                      **({"BatchLedger": claim.batch_ledger} if claim.anchoring == ANCHORING_BATCH else {})},
        "camera": {"id": h0x(claim.camera_id), "ip": claim.camera_ip},
        "range": {"fromMs": claim.from_ms, "toMs": claim.to_ms},
        "leafEncoding": list(FRAME_LEAF_ENCODING),
        "blocks": [
            {
                "height": b.height,
                "blockHash": b.block_hash,
                "header": b.header.to_json() if b.header else None,
                "manifest": manifest_paths.get(b.height),
                "proof": proof_paths.get(b.height),
                "anchorTx": b.anchor_tx,
                "attestTxs": list(b.attest_txs),
                "contextOnly": b.context_only,
            }
            for b in claim.blocks
        ],
        "clips": [
            {"path": c.path, "kind": c.kind, "camera": h0x(c.camera), "reencoded": c.reencoded, "why": c.why,
             "frames": list(map(list, c.frames)), **({"audio": list(map(list, c.audio))} if c.audio else {})}
            for c in claim.clips
        ],
        "rawFrames": [{"height": r.height, "camera": h0x(r.camera), "seq": r.seq, "path": r.path} for r in claim.raw],
        "codecSources": [
            {"camera": h0x(c.camera), "height": c.height, "blockHash": c.block_hash,
             "header": c.header.to_json() if c.header else None,
             "manifest": (codec_source_paths or {}).get((c.camera, c.height))}
            for c in claim.codec_sources
        ],
        "report": "report.json",
        **({"batches": [
            {"index": b.index, "manifest": batch_member(b.index), "batchRoot": b.batch_root,
             "manifestDigest": b.manifest_digest, "anchorTx": b.anchor_tx, "signers": list(b.signers)}
            for b in claim.batches]} if claim.anchoring == ANCHORING_BATCH else {}),
    }


def batch_member(index: int) -> str:
    """Where a bundle keeps the batch manifest of batch ``index``."""
    return f"batches/{index:08d}.json"


class BundleWriter:
    """A bundle zip written member by member into a temporary file beside ``path`` and renamed
    into place by `close` (so a reader never sees half a bundle; `abort` removes it). Every member
    is stored: video and raw frames are compressed already, and deflating the JSON (manifests and
    proofs, 5-8 % of a bundle of small frames) took a tenth of an extraction's time for a third of
    its size (docs/EVIDENCE.md, "Round of 2026-12-06"). Not for two threads at once, but one
    thread may add members (`add`) while another computes what the other members hold (their
    reads, CRC and writes release the GIL). Extraction writes a one-pass clip straight
    into it (`stored_member`); other clips are files first, copied in by the kernel
    (docs/EVIDENCE.md, Performance)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self._zip: zipfile.ZipFile | None = zipfile.ZipFile(self._tmp, "w", allowZip64=True)
        self.stored_at: dict[str, tuple[int, int]] = {}  # each `stored_member`: (where its bytes begin, size)
        self._reserved: dict[str, ReservedMember] = {}  # `reserve_stored` members whose CRC is not in yet

    def add(self, members: Iterable[tuple[str, bytes | Path | WrittenFile]]) -> None:
        zf = self._zip
        assert zf is not None, "bundle already closed"
        for name, data in members:
            if isinstance(data, WrittenFile):
                _copy_stored(zf, data.path, name, crc=data.crc32)
            elif isinstance(data, Path):
                _copy_stored(zf, data, name)
            else:
                zf.writestr(_info(name, zipfile.ZIP_STORED), data)

    @contextmanager
    def stored_member(self, name: str, size: int) -> Iterator["StoredMember"]:
        """A stored member of exactly ``size`` bytes written straight into the zip (extraction's
        one-pass clip writer: the clip is written once, never copied in afterwards): its local
        header first with the size, its CRC-32 computed as the bytes pass and patched into the
        header at the end. If the block raises, or the bytes are not ``size``, the zip is cut
        back to where the member began, as if it had never been started."""
        zf = self._zip
        assert zf is not None, "bundle already closed"
        info = _info(name, zipfile.ZIP_STORED)
        info.file_size = info.compress_size = size
        info.CRC = 0  # until the bytes have passed
        with zf._lock:  # noqa: SLF001 - ZipFile has no API for a member whose CRC is patched in later
            fp, header_bytes = _begin_stored(zf, info)
            member = StoredMember(fp, info.header_offset + header_bytes)
            try:
                yield member
                if member.written != size:
                    raise ValueError(f"{name}: {member.written} bytes written, {size} announced")
            except BaseException:
                fp.seek(info.header_offset)
                fp.truncate()
                raise
            info.CRC = member.crc32
            end = fp.tell()
            fp.seek(info.header_offset)
            fp.write(info.FileHeader(None))  # the same length: only the CRC changed
            _end_stored(zf, info, end)
        self.stored_at[name] = (member.data_offset, size)

    def reserve_stored(self, name: str, size: int) -> "ReservedMember":
        """A stored member of exactly ``size`` bytes that another thread writes at its place
        (`ReservedMember.fd`, positional writes from `data_offset`) while members after it are
        added: extraction's clip copied out of the store in the background (offchain.evidence.
        clip_copy). Its local header is written now with CRC 0 and the zip's next member begins
        after its bytes; `finish_reserved` patches the CRC in, and `close` refuses a bundle with
        a reservation not finished."""
        zf = self._zip
        assert zf is not None, "bundle already closed"
        info = _info(name, zipfile.ZIP_STORED)
        info.file_size = info.compress_size = size
        info.CRC = 0  # until the bytes are in
        with zf._lock:  # noqa: SLF001 - as in stored_member
            fp, header_bytes = _begin_stored(zf, info)
            fp.flush()  # the header on disk: the CRC is patched in through the member's own descriptor
            data_offset = info.header_offset + header_bytes
            _end_stored(zf, info, data_offset + size)
        member = ReservedMember(name=name, info=info, data_offset=data_offset, size=size,
                                fd=os.open(self._tmp, os.O_WRONLY))
        self._reserved[name] = member
        self.stored_at[name] = (data_offset, size)
        return member

    def finish_reserved(self, member: "ReservedMember", crc32: int) -> None:
        """The reserved member's bytes are all written: its CRC-32 into its local header and the
        zip's directory."""
        assert self._reserved.get(member.name) is member, f"{member.name} is not reserved in this bundle"
        member.info.CRC = crc32
        header = member.info.FileHeader(None)  # the same length as the one written: only the CRC changed
        at = 0
        while at < len(header):
            at += os.pwrite(member.fd, header[at:], member.info.header_offset + at)
        del self._reserved[member.name]
        os.close(member.fd)

    def mark(self) -> tuple[int, int]:
        """Where the zip stands now (members, bytes), for `rollback_to`."""
        assert self._zip is not None, "bundle already closed"
        return len(self._zip.filelist), self._zip.start_dir

    def rollback_to(self, mark: tuple[int, int]) -> None:
        """Remove every member written since ``mark`` (extraction starting its clips again)."""
        zf = self._zip
        assert zf is not None and zf.fp is not None, "bundle already closed"
        count, at = mark
        for info in zf.filelist[count:]:
            zf.NameToInfo.pop(info.filename, None)
            self.stored_at.pop(info.filename, None)
            reserved = self._reserved.pop(info.filename, None)
            if reserved is not None:  # its copy was stopped first (ClipCopies.stop)
                os.close(reserved.fd)
        del zf.filelist[count:]
        zf.fp.seek(at)
        zf.fp.truncate()
        zf.start_dir = at

    def add_index(self, index: Mapping[str, Any]) -> None:
        # compact: json's indenting encoder is pure Python, ~1 s an hour
        self.add([(INDEX, (json.dumps(index, separators=(",", ":")) + "\n").encode())])

    def close(self) -> Path:
        """Finish the zip and move it into place; returns its path."""
        assert self._zip is not None, "bundle already closed"
        if self._reserved:
            raise ValueError(f"reserved members not finished: {sorted(self._reserved)}")
        try:
            self._zip.close()
            self._zip = None
            os.replace(self._tmp, self.path)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Drop an unfinished bundle (nothing is left behind); harmless after `close`."""
        for member in self._reserved.values():
            os.close(member.fd)
        self._reserved.clear()
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        self._tmp.unlink(missing_ok=True)


@dataclass
class ReservedMember:
    """A stored member of `BundleWriter.reserve_stored`: its bytes go at ``data_offset`` ..
    ``data_offset + size`` of the bundle's file, through ``fd`` (the writer's own descriptor)."""
    name: str
    info: zipfile.ZipInfo
    data_offset: int
    size: int
    fd: int


class StoredMember:
    """The open member of `BundleWriter.stored_member`: a sink for its bytes, in order."""

    def __init__(self, fp: BinaryIO, data_offset: int) -> None:
        self._fp = fp
        self.data_offset = data_offset
        self.written = 0
        self.crc32 = 0

    def write(self, data: bytes | memoryview) -> int:
        self._fp.write(data)
        self.crc32 = zlib.crc32(data, self.crc32)
        self.written += len(data)
        return len(data)


@dataclass(frozen=True)
class WrittenFile:
    """A file whose CRC-32 its writer computed as it wrote it (extraction's one-pass clip
    writer): `BundleWriter.add` stores it without reading it back."""
    path: Path
    crc32: int


def _copy_stored(zf: zipfile.ZipFile, src: Path, name: str, crc: int | None = None) -> None:
    """A file into the zip as it is. Its CRC is one `zlib.crc32` over the file mapped into memory,
    its bytes one `os.copy_file_range` (the kernel copies; no pass through Python), both with the
    GIL released throughout, so `BundleWriter`'s background copy of an hour's clip (300 MB at
    720p) runs beside busy Python code: copied in 1 MiB chunks, each of its three C calls waited
    for the GIL and the copy barely moved while the self-check ran. The local header is written
    the way `ZipFile.mkdir` writes one. A file system without copy_file_range gets the bytes by
    positional reads and writes (`copy_range`). With ``crc`` known (`WrittenFile`), the file is
    not mapped at all (its pages then never count in this process's memory)."""
    size = src.stat().st_size
    info = _info(name, zipfile.ZIP_STORED)
    info.file_size = info.compress_size = size
    with open(src, "rb", buffering=0) as fh, (_mapped(fh, size) if crc is None else nullcontext(None)) as data:
        info.CRC = zlib.crc32(data) if crc is None else crc
        with zf._lock:  # noqa: SLF001 - ZipFile has no API for a member whose CRC is already known
            fp, header_bytes = _begin_stored(zf, info)
            fp.flush()
            copy_range(fh, fp, 0, size)
            _end_stored(zf, info, info.header_offset + header_bytes + size)


def _begin_stored(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[IO[bytes], int]:
    """A stored member's local header written where the zip's next member begins (as
    `ZipFile.mkdir` writes one; the caller holds ``zf._lock``): the zip's file and the header's
    length. The member's bytes follow it."""
    zf._writecheck(info)  # noqa: SLF001
    fp = zf.fp
    assert fp is not None
    fp.seek(zf.start_dir)
    info.header_offset = fp.tell()
    header = info.FileHeader(None)
    fp.write(header)
    return fp, len(header)


def _end_stored(zf: zipfile.ZipFile, info: zipfile.ZipInfo, end: int) -> None:
    """The member whose bytes end at ``end`` recorded in the zip's directory; the next begins there."""
    fp = zf.fp
    assert fp is not None
    fp.seek(end)
    zf.filelist.append(info)
    zf.NameToInfo[info.filename] = info
    zf.start_dir = end
    zf._didModify = True  # noqa: SLF001


@contextmanager
def _mapped(fh: BinaryIO, size: int) -> Iterator[Any]:
    if size == 0:
        yield b""
        return
    with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        yield data


def copy_range(src: IO[bytes], dst: IO[bytes], offset: int, size: int) -> None:
    """``size`` bytes of ``src`` from ``offset`` to ``dst``'s descriptor at its position (a clip
    into a bundle, or out of one): `os.copy_file_range` (the kernel copies) where the file system
    has it, else positional reads and descriptor writes of 1 MiB, also to finish a copy that
    copy_file_range began. Both move the descriptor's offset, not a Python buffer's: a buffered
    ``dst`` must hold nothing unflushed."""
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src.fileno(), dst.fileno(), size - done, offset + done)
            if n == 0:
                raise OSError(f"source ended after {done} of {size} bytes")
            done += n
    except (OSError, AttributeError):  # no copy_file_range here (another kernel or file system)
        while done < size:
            chunk = os.pread(src.fileno(), min(_COPY_CHUNK, size - done), offset + done)
            if not chunk:
                raise OSError(f"source ended after {done} of {size} bytes") from None
            with memoryview(chunk) as view:
                at = 0
                while at < len(view):
                    at += os.write(dst.fileno(), view[at:])
            done += len(chunk)


_COPY_CHUNK = 1 << 20


def _info(name: str, method: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=datetime.now(timezone.utc).timetuple()[:6])
    info.compress_type = method
    info.external_attr = 0o644 << 16
    return info


# --------------------------------------------------------------------------- reading the index
#
# The index is the forger's own words: every field is checked for type and shape, and one
# malformed field makes the whole bundle `bundle.invalid` (the same in the JavaScript verifier).


def _int(v: Any, what: str, lo: int = 0, hi: int = 2**64 - 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{what} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _str(v: Any, what: str, optional: bool = False) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise ValueError(f"{what} must be a string, got {type(v).__name__}")
    return v


def _hexbytes(s: Any, n: int | None = None, what: str = "value") -> bytes:
    if not isinstance(s, str) or not s.startswith("0x"):
        raise ValueError(f"{what} must be a 0x hex string")
    b = bytes.fromhex(s[2:])
    if n is not None and len(b) != n:
        raise ValueError(f"{what}: expected {n} bytes, got {len(b)}")
    return b


def _list(v: Any, what: str, limit: int, optional: bool = True) -> list:
    if v is None and optional:
        return []
    if not isinstance(v, list):
        raise ValueError(f"{what} must be a list")
    if len(v) > limit:
        raise ValueError(f"{what} has {len(v)} entries, over the limit of {limit}")
    return v


def _header(v: Any, what: str) -> BlockHeader | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise ValueError(f"{what} must be an object")
    try:
        return BlockHeader.from_json(v)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{what} is malformed: {exc!r}") from None


@dataclass
class IndexParse:
    """bundle.json as claims, and where each block's manifest and proof are."""

    claim: EvidenceClaim
    manifests: dict[int, str | None] = field(default_factory=dict)
    proofs: dict[int, str | None] = field(default_factory=dict)
    codec_manifests: dict[tuple[bytes, int], str | None] = field(default_factory=dict)
    batches: dict[int, str] = field(default_factory=dict)  # batch index -> member (batch mode)


def parse_index(doc: Any) -> IndexParse:
    """bundle.json → the claims. Raises BundleError for any malformed field. Duplicate entries
    are kept (the rules report them as `bundle.entry.duplicate`)."""
    try:
        if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"not a {BUNDLE_FORMAT} index")
        if list(_list(doc.get("leafEncoding", list(FRAME_LEAF_ENCODING)), "leafEncoding", 8)) != list(FRAME_LEAF_ENCODING):
            raise ValueError("unexpected leafEncoding")
        camera, rng, contracts = doc.get("camera"), doc.get("range"), doc.get("contracts")
        if not isinstance(camera, dict) or not isinstance(rng, dict) or not isinstance(contracts, dict):
            raise ValueError("camera, range and contracts must be objects")
        ledger = _str(contracts.get("VideoLedger"), "contracts.VideoLedger")
        out = IndexParse(EvidenceClaim(
            camera_id=_hexbytes(camera.get("id"), 32, "camera.id"),
            camera_ip=_str(camera.get("ip"), "camera.ip", optional=True),
            from_ms=_int(rng.get("fromMs"), "range.fromMs"), to_ms=_int(rng.get("toMs"), "range.toMs"),
            chain_id=_int(doc.get("chainId"), "chainId", 1),
            ledger=Web3.to_checksum_address(ledger), consortium=_str(contracts.get("Consortium"), "contracts.Consortium", True)))
        for i, b in enumerate(_list(doc.get("blocks"), "blocks", MAX_BLOCKS, optional=False)):
            _parse_block(out, b, f"blocks[{i}]")
        for i, c in enumerate(_list(doc.get("clips"), "clips", MAX_CLIPS)):
            _parse_clip(out, c, f"clips[{i}]")
        for i, r in enumerate(_list(doc.get("rawFrames"), "rawFrames", MAX_RAW_FRAMES)):
            if not isinstance(r, dict):
                raise ValueError(f"rawFrames[{i}] must be an object")
            out.claim.raw.append(RawClaim(height=_int(r.get("height"), f"rawFrames[{i}].height"),
                                          camera=_hexbytes(r.get("camera"), 32, f"rawFrames[{i}].camera"),
                                          seq=_int(r.get("seq"), f"rawFrames[{i}].seq"),
                                          path=str(_str(r.get("path"), f"rawFrames[{i}].path"))))
        for i, c in enumerate(_list(doc.get("codecSources"), "codecSources", MAX_BLOCKS)):
            _parse_codec_source(out, c, f"codecSources[{i}]")
        _parse_anchoring(out, doc, contracts)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"malformed {INDEX}: {exc}") from exc
    return out


def _parse_anchoring(out: IndexParse, doc: Mapping[str, Any], contracts: Mapping[str, Any]) -> None:
    """``anchoring`` (absent: "header", bundles made before batch mode) and, in batch mode, the
    BatchLedger and where each batch manifest is (at most MAX_BATCHES entries)."""
    mode = _str(doc.get("anchoring", ANCHORING_HEADER), "anchoring")
    if mode not in (ANCHORING_HEADER, ANCHORING_BATCH):
        raise ValueError(f"anchoring must be {ANCHORING_HEADER!r} or {ANCHORING_BATCH!r}, got {mode!r}")
    out.claim.anchoring = str(mode)
    if mode == ANCHORING_HEADER:
        if doc.get("batches") is not None or contracts.get("BatchLedger") is not None:
            raise ValueError("a header-mode index carries no batches or BatchLedger")
        return
    out.claim.batch_ledger = Web3.to_checksum_address(str(_str(contracts.get("BatchLedger"), "contracts.BatchLedger")))
    for i, b in enumerate(_list(doc.get("batches"), "batches", MAX_BATCHES, optional=False)):
        what = f"batches[{i}]"
        if not isinstance(b, dict):
            raise ValueError(f"{what} must be an object")
        index = _int(b.get("index"), f"{what}.index")
        out.batches.setdefault(index, str(_str(b.get("manifest"), f"{what}.manifest")))


def _parse_block(out: IndexParse, b: Any, what: str) -> None:
    if not isinstance(b, dict):
        raise ValueError(f"{what} must be an object")
    h = _int(b.get("height"), f"{what}.height", 1)
    out.claim.blocks.append(BlockClaim(
        height=h, header=_header(b.get("header"), f"{what}.header"),
        block_hash=_str(b.get("blockHash"), f"{what}.blockHash", True),
        anchor_tx=_str(b.get("anchorTx"), f"{what}.anchorTx", True),
        attest_txs=[str(_str(t, f"{what}.attestTxs[]")) for t in _list(b.get("attestTxs"), f"{what}.attestTxs", 1000)],
        context_only=bool(b.get("contextOnly", False))))
    if h not in out.manifests:  # a duplicate block keeps the first one's members
        out.manifests[h] = _str(b.get("manifest"), f"{what}.manifest", True)
        out.proofs[h] = _str(b.get("proof"), f"{what}.proof", True)


def _parse_clip(out: IndexParse, c: Any, what: str) -> None:
    if not isinstance(c, dict):
        raise ValueError(f"{what} must be an object")
    frames = []
    top = 2**64 - 1
    for pair in _list(c.get("frames"), f"{what}.frames", MAX_CLIP_FRAMES, optional=False):
        if type(pair) is list and len(pair) == 2:
            h, seq = pair
            if type(h) is int and type(seq) is int and 0 <= h <= top and 0 <= seq <= top:  # _int's rule, inline
                frames.append((h, seq))
                continue
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError(f"{what}.frames entries are [height, seq]")
        frames.append((_int(pair[0], f"{what}.frames height"), _int(pair[1], f"{what}.frames seq")))
    audio = []
    for pair in _list(c.get("audio"), f"{what}.audio", MAX_CLIP_FRAMES):
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError(f"{what}.audio entries are [height, seq]")
        audio.append((_int(pair[0], f"{what}.audio height"), _int(pair[1], f"{what}.audio seq")))
    reencoded = c.get("reencoded", False)
    if not isinstance(reencoded, bool):
        raise ValueError(f"{what}.reencoded must be true or false")
    out.claim.clips.append(ClipClaim(
        path=str(_str(c.get("path"), f"{what}.path")), kind=str(_str(c.get("kind", "original"), f"{what}.kind")),
        camera=_hexbytes(c.get("camera"), 32, f"{what}.camera"), frames=frames, reencoded=reencoded,
        why=str(_str(c.get("why", "remux"), f"{what}.why")), audio=audio))


def _parse_codec_source(out: IndexParse, c: Any, what: str) -> None:
    if not isinstance(c, dict):
        raise ValueError(f"{what} must be an object")
    cam = _hexbytes(c.get("camera"), 32, f"{what}.camera")
    h = _int(c.get("height"), f"{what}.height", 1)
    out.claim.codec_sources.append(CodecSourceClaim(camera=cam, height=h, header=_header(c.get("header"), f"{what}.header"),
                                                    block_hash=_str(c.get("blockHash"), f"{what}.blockHash", True)))
    out.codec_manifests.setdefault((cam, h), _str(c.get("manifest"), f"{what}.manifest", True))


# --------------------------------------------------------------------------- verifying


def _failed(code: str, message: str, produced_by: str, notes: Iterable[Note] = ()) -> Report:
    r = Report(produced_by=produced_by)
    for n in notes:
        r.add(n.code, n.message)
    r.add(code, message)
    return r


def _member(reader: BundleReader, name: str | None, notes: list[Note], height: int | None = None,
            camera: bytes | None = None) -> bytes | None:
    """A JSON member under its limit, or None; a refused member is a note with its code."""
    if not name:
        return None
    try:
        return reader.read(name)
    except MemberError as exc:
        if exc.code is not None:
            notes.append(Note(exc.code, str(exc), height=height, camera=camera))
        return None


@collections_paused
def verify_bundle(path: str | os.PathLike[str], rpc_url: str, *, ledger_address: str | None = None,
                  trust: TrustList | None = None, probe: bool = False, timeout: float = 30.0,
                  w3: Web3 | None = None) -> Report:
    """Re-check a bundle against the chain at ``rpc_url`` and nothing else.

    The trusted deployment comes from ``ledger_address``, ``trust`` or the default deployment
    record for the RPC's chain (`offchain.evidence.trust`); never from the bundle. Without one
    the verdict is ``untrusted``. Never raises on bad input: an unreadable bundle or chain is a
    failed report. Raises `TrustError` only when the default deployment record is unreadable."""
    produced_by = "frameledger verify"
    try:
        reader = BundleReader(path)
    except BundleError as exc:
        return _failed("bundle.invalid", str(exc), produced_by)
    with reader:
        notes = [Note(p.code, p.message) for p in reader.problems]
        try:
            parsed = parse_index(json.loads(reader.read(INDEX)))
        except MemberError as exc:
            return _failed(exc.code or "bundle.invalid", str(exc), produced_by, notes)
        except (BundleError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            return _failed("bundle.invalid", str(exc), produced_by, notes)
        claim = parsed.claim
        _attach_members(reader, parsed, notes)
        try:
            w3 = w3 or connect(rpc_url, timeout=timeout)
            chain_id = int(w3.eth.chain_id)
        except Exception as exc:  # noqa: BLE001 - connection refused, timeouts, odd node answers
            return _failed("chain.unavailable", f"{rpc_url}: {exc}", produced_by, notes)
        trust = trust if trust is not None else load_trust(chain_id, ledger=ledger_address)
        decision = decide_trust(trust, chain_id, claim.ledger)
        if decision.outcome is TrustOutcome.UNTRUSTED:
            notes.append(Note("bundle.contract.untrusted", decision.message))
        elif decision.outcome is TrustOutcome.MISMATCH:
            notes.append(Note("bundle.contract.mismatch", decision.message))
        # The clips' samples are read and hashed in a worker thread (reads and SHA-256 release
        # the GIL) while the chain is asked and the manifests are parsed and hashed here.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-clips") as clip_reader:
            clips_read = clip_reader.submit(_clip_samples, reader, claim)
            try:
                facts, trusted = _chain_facts(w3, decision, claim, notes,
                                              lambda rec: _member(reader, parsed.batches.get(rec.index), notes))
            except _NoLedger as exc:
                r = _failed("bundle.contract.mismatch", str(exc), produced_by, notes)
                r.chain_id = chain_id
                return r
            except Exception as exc:  # noqa: BLE001
                log.debug("chain query failed", exc_info=True)
                return _failed("chain.unavailable", f"{rpc_url}: {exc}", produced_by, notes)
            clips = clips_read.result()
        raw_digests = _raw_digests(reader, claim, notes)
        pictures = _picture_checks(reader, claim, trusted, facts, raw_digests)
        report = verify_evidence(claim, facts, clips, raw_digests, pictures=pictures, produced_by=produced_by, notes=notes)
        report.clips = clip_entries(claim, trusted)
        note_decoded(report, claim, pictures)
        if probe:
            probe_remuxed_clips(report, claim, reader.file_path)
        return report


class _NoLedger(Exception):
    """The trusted (or named) ledger address holds no contract on this chain."""


def _attach_members(reader: BundleReader, parsed: IndexParse, notes: list[Note]) -> None:
    """Manifests, multiproofs and codec-source manifests, each under its member limit."""
    for bc in parsed.claim.blocks:
        bc.manifest = _member(reader, parsed.manifests.get(bc.height), notes, height=bc.height)
        raw = _member(reader, parsed.proofs.get(bc.height), notes, height=bc.height)
        try:
            bc.proof = json.loads(raw) if raw is not None else None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            bc.proof = {"malformed": True}
    for src in parsed.claim.codec_sources:
        src.manifest = _member(reader, parsed.codec_manifests.get((src.camera, src.height)), notes, camera=src.camera)


def _chain_facts(w3: Web3, decision: TrustDecision, claim: EvidenceClaim, notes: list[Note],
                 batch_bytes: Callable[[Any], bytes | None]) -> tuple[ChainFacts, dict[int, Manifest]]:
    """What the chain says, and the presented manifests whose bytes are the anchored ones. The
    AnchorSource is the bundle's mode: per header (`ChainReader`) or batch (`BatchReader`, its
    batch manifests from the bundle, each checked against the trusted BatchLedger's record)."""
    ledger, consortium = decision.ledger, decision.consortium
    if not ledger:
        raise _NoLedger("the bundle names no ledger and none is trusted")
    header_reader = ChainReader(w3, ledger)
    if not header_reader.has_code():
        raise _NoLedger(f"no contract at {ledger} on this chain")
    chain_reader: ChainReader | BatchReader = header_reader
    batch_ledger = _batch_ledger(decision, claim, notes)
    if claim.anchoring == ANCHORING_BATCH:
        if not batch_ledger:
            raise _NoLedger("a batch-mode bundle that names no BatchLedger, and none is trusted")
        chain_reader = BatchReader(w3, batch_ledger, ledger, batch_bytes)
        if not chain_reader.has_code():
            raise _NoLedger(f"no contract at {batch_ledger} on this chain")
    if consortium is not None and Web3.to_checksum_address(consortium) != chain_reader.consortium_address:
        notes.append(Note("bundle.contract.mismatch", f"the ledger belongs to consortium "
                                                      f"{chain_reader.consortium_address}, trusted is {consortium}"))
    in_range = chain_reader.heights_in_range(claim.camera_id, claim.from_ms, claim.to_ms) if claim.from_ms < claim.to_ms else []
    _check_mode(w3, claim, header_reader, batch_ledger, in_range, notes)
    blocks = chain_reader.blocks(claim.camera_id, set(in_range) | {b.height for b in claim.blocks})
    if isinstance(chain_reader, BatchReader):
        notes.extend(chain_reader.chain_rule_notes(claim.camera_id, in_range))
    codec_blocks: dict[tuple[bytes, int], ChainBlock | None] = {}
    for src in claim.codec_sources:
        if (src.camera, src.height) not in codec_blocks:
            codec_blocks[(src.camera, src.height)] = chain_reader.blocks(src.camera, [src.height]).get(src.height)
    manifests = {b.height: b.manifest for b in claim.blocks}
    proofs = {b.height: b.proof for b in claim.blocks}
    trusted, known = _anchored_manifests(claim.camera_id, manifests, blocks)
    facts = ChainFacts(chain_id=chain_reader.chain_id, ledger=chain_reader.address,
                       consortium=chain_reader.consortium_address, heights_in_range=in_range, blocks=blocks,
                       proofs_on_chain=chain_reader.proofs_on_chain(blocks, proofs, known), codec_blocks=codec_blocks)
    if carries_declarations(trusted.values()):  # issue 10: the keys that check declared outages
        facts.camera_keys = device_keys(chain_reader.consortium, claim.camera_id)
    return facts, trusted


def _batch_ledger(decision: TrustDecision, claim: EvidenceClaim, notes: list[Note]) -> str | None:
    """The BatchLedger to read: the trusted deployment's (a batch bundle naming another one
    fails), the bundle's own only when nothing is trusted (the verdict is then untrusted)."""
    if claim.anchoring != ANCHORING_BATCH:
        return decision.batch_ledger
    named = claim.batch_ledger
    if decision.outcome is TrustOutcome.UNTRUSTED:
        return named
    if decision.batch_ledger is None:
        notes.append(Note("bundle.contract.untrusted", "the trusted deployment names no BatchLedger; checked against "
                                                       f"the BatchLedger the bundle names ({named}) only"))
        return named
    if named is None or Web3.to_checksum_address(named) != decision.batch_ledger:
        notes.append(Note("bundle.contract.mismatch", f"bundle names BatchLedger {named}, trusted is "
                                                      f"{decision.batch_ledger}"))
    return decision.batch_ledger


def _check_mode(w3: Web3, claim: EvidenceClaim, header_reader: ChainReader, batch_ledger: str | None,
                in_range: list[int], notes: list[Note]) -> None:
    """The bundle's anchoring mode must be the one the trusted chain records for this range."""
    if claim.from_ms >= claim.to_ms:
        return
    if claim.anchoring == ANCHORING_BATCH:
        if header_reader.heights_in_range(claim.camera_id, claim.from_ms, claim.to_ms):
            notes.append(Note("bundle.anchoring.mismatch", "batch-mode bundle, but the trusted VideoLedger anchors this "
                                                           "camera's blocks of the range one by one"))
    elif not in_range and batch_ledger:
        probe = BatchReader(w3, batch_ledger, header_reader.address, lambda rec: None)
        if probe.has_code() and probe.records_in_range(claim.from_ms, claim.to_ms):
            notes.append(Note("bundle.anchoring.mismatch", "per-header bundle, but the VideoLedger holds no block of "
                                                           "the range and the trusted BatchLedger anchors batches there"))


def _clip_samples(reader: BundleReader, claim: EvidenceClaim) -> dict[str, ClipSamples]:
    out: dict[str, ClipSamples] = {}
    for c in claim.clips:
        if c.path in out:
            continue
        try:
            with reader.open_member(c.path) as clip:
                out[c.path] = read_clip_samples(clip)
        except BundleError as exc:
            out[c.path] = ClipSamples(None, str(exc))
    return out


def _raw_digests(reader: BundleReader, claim: EvidenceClaim, notes: list[Note]) -> dict[str, bytes | None]:
    """Each raw frame member's SHA-256, hashed in chunks under the frame limit."""
    out: dict[str, bytes | None] = {}
    for r in claim.raw:
        if r.path in out:
            continue
        try:
            out[r.path] = reader.sha256(r.path)
        except MemberError as exc:
            if exc.code is not None:
                notes.append(Note(exc.code, str(exc), height=r.height, seq=r.seq, camera=r.camera))
            out[r.path] = None
    return out


def _picture_checks(reader: BundleReader, claim: EvidenceClaim, trusted: Mapping[int, Manifest], facts: ChainFacts,
                    raw_digests: Mapping[str, bytes | None]) -> dict[str, PictureComparison | None]:
    """Decode every re-encoded clip and the anchored raw frames it stands for, and compare."""
    raw_paths = {(r.height, r.camera, r.seq): r.path for r in claim.raw}
    refs_by_key = {(h, m.camera_id, f.seq): f for h, m in trusted.items() for f in m.frames}
    refs_by_key.update({(h, cam, f.seq): f for h, m in trusted.items() for cam, fs in m.substitutions for f in fs})
    out: dict[str, PictureComparison | None] = {}
    for clip in claim.clips:
        if not clip.reencoded or clip.path in out:
            continue
        codec = _clip_codec(clip, claim, trusted, facts)
        refs = [refs_by_key.get((h, clip.camera, seq)) for h, seq in clip.frames]
        if codec is None or any(r is None for r in refs):
            out[clip.path] = PictureComparison(original_error="no trusted manifest vouches for this clip's frames or codec")
            continue
        keyed = sorted(((h, ref) for (h, _), ref in zip(clip.frames, refs) if ref is not None), key=lambda it: decode_key(it[1]))
        paths = [raw_paths.get((h, clip.camera, ref.seq)) for h, ref in keyed]
        if any(p is None or raw_digests.get(p) != ref.sha256 for p, (_, ref) in zip(paths, keyed)):
            out[clip.path] = PictureComparison(original_error="the anchored bytes of some of its frames are not in the bundle")
            continue
        try:
            out[clip.path] = compare_pictures(reader.file_path(clip.path), codec,
                                              _lazy_frames(reader, keyed, paths), len(clip.frames))
        except BundleError as exc:
            out[clip.path] = PictureComparison(clip_error=str(exc))
    return out


def _lazy_frames(reader: BundleReader, keyed: list[tuple[int, FrameRef]], paths: list[str | None]) -> Iterator[EncodedFrame]:
    for (_, ref), p in zip(keyed, paths):
        yield EncodedFrame(seq=ref.seq, timestamp_ms=ref.timestamp_ms, keyframe=ref.keyframe,
                           data=reader.read(str(p)), dts_ms=ref.dts_ms)


def _clip_codec(clip: ClipClaim, claim: EvidenceClaim, trusted: Mapping[int, Manifest], facts: ChainFacts) -> CodecConfig | None:
    """The anchored codec configuration the clip's originals decode with."""
    if not clip.frames:
        return None
    h = clip.frames[0][0]
    manifest: Manifest | None = trusted.get(h) if clip.camera == claim.camera_id else None
    if clip.camera != claim.camera_id:
        for src in claim.codec_sources:
            if src.camera == clip.camera:
                manifest = check_codec_source(src, facts.codec_blocks.get((src.camera, src.height))).manifest
                if manifest is not None:
                    break
    try:
        return CodecConfig.from_json(manifest.codec) if manifest is not None and manifest.codec else None
    except (KeyError, TypeError, ValueError):
        return None


def note_decoded(report: Report, claim: EvidenceClaim, pictures: Mapping[str, PictureComparison | None]) -> None:
    """Re-encoded clips were decoded end to end by the picture check: say how far."""
    for entry, clip in zip(report.clips, claim.clips):
        p = pictures.get(clip.path)
        if clip.reencoded and p is not None and p.clip_error is None:
            entry.decoded_frames = p.compared


def probe_remuxed_clips(report: Report, claim: EvidenceClaim, path_of: Callable[[str], Path]) -> None:
    """--probe: decode every byte-exact clip end to end. Its packets are already proven to be the
    anchored frames, so a decoder that stops early is this machine's limitation (a warning
    naming the cause), not a failure of the evidence. Re-encoded clips were decoded already."""
    for entry, clip in zip(report.clips, claim.clips):
        if clip.reencoded:
            continue
        try:
            probe = probe_mp4(path_of(clip.path))
            entry.decoded_frames = probe.frames
            if probe.frames != len(clip.frames):
                report.add("clip.decoder.limited", f"{clip.path}: {probe.frames} of {len(clip.frames)} pictures decode here")
        except Exception as exc:  # noqa: BLE001 - decoders fail in many ways
            report.add("clip.decoder.limited", f"{clip.path}: the decoder stopped: {exc}")


def _anchored_manifests(camera: bytes, manifests: Mapping[int, bytes | None], blocks: Mapping[int, ChainBlock | None],
                        ) -> tuple[dict[int, Manifest], dict[int, KnownLeaves]]:
    """Manifests whose bytes are the anchored ones (for the report's clip rows and the picture
    checks), and their trees' leaf hashes (so the on-chain proof check does not hash every leaf a
    second time). Judging them is verify_evidence's job; this only prepares."""
    trusted: dict[int, Manifest] = {}
    known: dict[int, KnownLeaves] = {}
    for h, data in manifests.items():
        cb = blocks.get(h)
        if data is None or cb is None:
            continue
        digest = hashlib.sha256(data).digest()
        if digest != cb.header.manifest_digest:
            continue
        try:
            m = parsed_manifest(digest, data)  # the manifest rule reads the same parse
        except ManifestFormatError:
            continue
        trusted[h] = m
        known[h] = known_leaves(camera, m.frames, manifest_tree(camera, digest, m.frames))
    return trusted, known
