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
import json
import logging
import os
import shutil
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import av
from web3 import Web3

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak

from ..chain.client import as_revert, call, connect, load_artifact
from ..chain.reverts import ContractRevert
from ..core.block import FRAME_LEAF_ENCODING, BlockHeader, Manifest, ManifestFormatError
from ..core.merkle import MultiProof
from .report import Report
from .verify import (
    BlockClaim,
    ChainBlock,
    ChainFacts,
    ClipClaim,
    ClipSamples,
    EvidenceClaim,
    RawClaim,
    clip_entries,
    h0x,
    known_leaves,
    manifest_tree,
    parse_multiproof,
    verify_evidence,
)

__all__ = [
    "BUNDLE_FORMAT",
    "BundleError",
    "BundleReader",
    "ChainReader",
    "bundle_index",
    "parse_index",
    "read_clip_samples",
    "verify_bundle",
    "write_bundle",
]

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "frameledger.evidence-bundle/1"
INDEX = "bundle.json"
# A bundle member larger than this is refused rather than read into memory (zip bombs, mistakes).
MAX_MEMBER_BYTES = 8 << 30
_STORED_SUFFIXES = (".mp4",)
_VERIFY_FRAMES = keccak(b"verifyFrames(bytes32,bytes32[],bool[],bytes32[])")[:4]


class BundleError(ValueError):
    """The bundle cannot be read: not a zip, no index, malformed index, member missing or too big."""


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
        self._consortium: Any = None

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

    def blocks(self, camera: bytes, heights: Iterable[int]) -> dict[int, ChainBlock | None]:
        """Block records at these heights, with their anchoring and attesting transactions."""
        heights = sorted(set(int(h) for h in heights if h >= 1))
        length = self.chain_length(camera) if heights else 0
        out: dict[int, ChainBlock | None] = {}
        records = {}
        for h in heights:
            if h > length:
                out[h] = None
                continue
            block_hash = bytes(self.contract.functions.blockHashAt(camera, h).call())
            rec = self.contract.functions.getBlock(block_hash).call()
            records[h] = (block_hash, rec)
        anchors = self._anchor_txs(camera, list(records))
        attests = self._attest_txs([bh for bh, _ in records.values()])
        for h, (block_hash, rec) in records.items():
            header = BlockHeader.from_tuple(rec[0])
            out[h] = ChainBlock(h, block_hash, header, int(rec[1]), int(rec[2]), int(rec[3]), bool(rec[4]),
                                anchors.get(h), tuple(attests.get(block_hash, ())))
        return out

    def _anchor_txs(self, camera: bytes, heights: list[int]) -> dict[int, str]:
        if not heights:
            return {}
        logs = self.contract.events.BlockAnchored.get_logs(
            argument_filters={"cameraId": camera, "height": heights}, from_block=0)
        return {int(lg["args"]["height"]): lg["transactionHash"].to_0x_hex() for lg in logs}

    def _attest_txs(self, hashes: list[bytes]) -> dict[bytes, list[str]]:
        if not hashes:
            return {}
        out: dict[bytes, list[str]] = {}
        logs = self.contract.events.BlockAttested.get_logs(argument_filters={"blockHash": hashes}, from_block=0)
        for lg in logs:
            out.setdefault(bytes(lg["args"]["blockHash"]), []).append(lg["transactionHash"].to_0x_hex())
        return out

    def verify_frames(self, block_hash: bytes, proof: MultiProof, leaf_hashes: list[bytes]) -> bool:
        """`VideoLedger.verifyFrames` (OpenZeppelin MerkleProof.multiProofVerify against the
        anchored root). A malformed proof reverts in the library; that is a `False` here."""
        # Encoded with eth_abi directly: web3's generic argument normaliser walks every element
        # of the three arrays in Python and costs ~0.3 s per 1,500-frame block.
        data = _VERIFY_FRAMES + abi_encode(["bytes32", "bytes32[]", "bool[]", "bytes32[]"],
                                           [block_hash, list(proof.proof), list(proof.proof_flags), list(leaf_hashes)])
        try:
            out = self.w3.eth.call({"to": self.address, "data": "0x" + data.hex()})
        except Exception as exc:  # noqa: BLE001 - a revert (malformed multiproof) is a "no"
            if as_revert(exc, "verifyFrames") is not None:
                return False
            raise
        return bool(abi_decode(["bool"], bytes(out))[0])

    def proofs_on_chain(self, blocks: Mapping[int, ChainBlock | None], proofs: Mapping[int, Mapping[str, Any] | None],
                        known: Mapping[int, Mapping[tuple, bytes]] | None = None) -> dict[int, bool | None]:
        """`verifyFrames` for each block's multiproof. ``known`` (per height) spares re-hashing
        leaves already hashed into a verified manifest's tree."""
        out: dict[int, bool | None] = {}
        for h, doc in proofs.items():
            cb = blocks.get(h)
            if cb is None or doc is None:
                continue
            try:
                mp, hashes, _ = parse_multiproof(doc, (known or {}).get(h))
            except ValueError:
                continue
            if hashes:
                out[h] = self.verify_frames(cb.block_hash, mp, hashes)
        return out


# --------------------------------------------------------------------------- clips


def read_clip_samples(path: str | os.PathLike[str]) -> ClipSamples:
    """Demux (never decode) a clip: each sample's SHA-256 and presentation time in ms, in file order.

    Demuxing is enough to prove the bytes are the anchored frames; decoding proves only that a
    decoder accepts them, which `probe_mp4` does where asked."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return ClipSamples(None, "no video stream")
            stream = container.streams.video[0]
            tb = stream.time_base
            out = []
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                pts = packet.pts if packet.pts is not None else packet.dts
                if pts is None:
                    return ClipSamples(None, "packet without timestamps")
                out.append((hashlib.sha256(bytes(packet)).digest(), round(pts * tb * 1000)))
            return ClipSamples(out)
    except (av.FFmpegError, OSError, ValueError) as exc:
        return ClipSamples(None, f"cannot demux: {exc}")


# --------------------------------------------------------------------------- writing


def bundle_index(
    *,
    claim: EvidenceClaim,
    manifest_paths: Mapping[int, str],
    proof_paths: Mapping[int, str],
    produced_by: str,
) -> dict[str, Any]:
    """The bundle.json document for a claim."""
    return {
        "format": BUNDLE_FORMAT,
        "createdAt": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "producedBy": produced_by,
        "chainId": claim.chain_id,
        "contracts": {"VideoLedger": claim.ledger, "Consortium": claim.consortium},
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
            {"path": c.path, "kind": c.kind, "camera": h0x(c.camera), "reencoded": c.reencoded,
             "frames": [[h, s] for h, s in c.frames]}
            for c in claim.clips
        ],
        "rawFrames": [{"height": r.height, "camera": h0x(r.camera), "seq": r.seq, "path": r.path} for r in claim.raw],
        "report": "report.json",
    }


def write_bundle(path: str | os.PathLike[str], index: Mapping[str, Any],
                 members: Iterable[tuple[str, bytes | Path]]) -> Path:
    """Write the zip atomically. Video and raw frames are stored (already compressed), JSON deflated."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            zf.writestr(_info(INDEX, zipfile.ZIP_DEFLATED), json.dumps(index, indent=1) + "\n")
            for name, data in members:
                stored = name.endswith(_STORED_SUFFIXES) or name.startswith("frames/")
                method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                if isinstance(data, Path):
                    zf.write(data, name, compress_type=method)
                else:
                    zf.writestr(_info(name, method), data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _info(name: str, method: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=datetime.now(timezone.utc).timetuple()[:6])
    info.compress_type = method
    info.external_attr = 0o644 << 16
    return info


# --------------------------------------------------------------------------- reading


class BundleReader:
    """A bundle as a zip file or as the directory it was unzipped into."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        if self.path.is_dir():
            return
        if not self.path.is_file():
            raise BundleError(f"{self.path}: no such file or directory")
        try:
            self._zip = zipfile.ZipFile(self.path)
            self._names = {i.filename: i for i in self._zip.infolist()}
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise BundleError(f"{self.path} is not a readable zip: {exc}") from exc

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _safe(self, name: str) -> str:
        if not isinstance(name, str) or not name or name.startswith(("/", "\\")) or ".." in Path(name).parts:
            raise BundleError(f"unsafe member name {name!r}")
        return name

    def has(self, name: str) -> bool:
        name = self._safe(name)
        if self._zip is not None:
            return name in self._names
        return (self.path / name).is_file()

    def read(self, name: str) -> bytes:
        name = self._safe(name)
        try:
            if self._zip is not None:
                info = self._names.get(name)
                if info is None:
                    raise BundleError(f"{name} is not in the bundle")
                if info.file_size > MAX_MEMBER_BYTES:
                    raise BundleError(f"{name} is {info.file_size} bytes, over the {MAX_MEMBER_BYTES} limit")
                return self._zip.read(info)
            p = self.path / name
            if not p.is_file():
                raise BundleError(f"{name} is not in the bundle")
            return p.read_bytes()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:  # CRC errors, truncation
            if isinstance(exc, BundleError):
                raise
            raise BundleError(f"cannot read {name}: {exc}") from exc

    def read_or_none(self, name: str | None) -> bytes | None:
        if not name:
            return None
        try:
            return self.read(name)
        except BundleError:
            return None

    def file_path(self, name: str) -> Path:
        """A path on disk for a member (PyAV wants one); zip members go to a private temp dir."""
        name = self._safe(name)
        if self._zip is None:
            p = self.path / name
            if not p.is_file():
                raise BundleError(f"{name} is not in the bundle")
            return p
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="frameledger-bundle-")
        info = self._names.get(name)
        if info is None:
            raise BundleError(f"{name} is not in the bundle")
        if info.file_size > MAX_MEMBER_BYTES:
            raise BundleError(f"{name} is too large")
        out = Path(self._tmp.name) / hashlib.sha256(name.encode()).hexdigest()[:16]
        try:
            with self._zip.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise BundleError(f"cannot read {name}: {exc}") from exc
        return out


def _hexbytes(s: Any, n: int | None = None) -> bytes:
    if not isinstance(s, str):
        raise ValueError(f"expected a hex string, got {type(s).__name__}")
    b = bytes.fromhex(s.removeprefix("0x"))
    if n is not None and len(b) != n:
        raise ValueError(f"expected {n} bytes, got {len(b)}")
    return b


def parse_index(doc: Any) -> tuple[EvidenceClaim, dict[int, str | None], dict[int, str | None]]:
    """bundle.json → the claim, and where each block's manifest and proof are. Raises BundleError."""
    try:
        if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"not a {BUNDLE_FORMAT} index")
        if list(doc.get("leafEncoding", FRAME_LEAF_ENCODING)) != list(FRAME_LEAF_ENCODING):
            raise ValueError("unexpected leafEncoding")
        cam = _hexbytes(doc["camera"]["id"], 32)
        claim = EvidenceClaim(
            camera_id=cam,
            camera_ip=doc["camera"].get("ip"),
            from_ms=int(doc["range"]["fromMs"]),
            to_ms=int(doc["range"]["toMs"]),
            chain_id=int(doc["chainId"]),
            ledger=Web3.to_checksum_address(doc["contracts"]["VideoLedger"]),
            consortium=doc["contracts"].get("Consortium"),
        )
        manifests: dict[int, str | None] = {}
        proofs: dict[int, str | None] = {}
        for b in doc["blocks"]:
            h = int(b["height"])
            header = None
            if isinstance(b.get("header"), dict):
                try:
                    header = BlockHeader.from_json(b["header"])
                except (KeyError, ValueError, TypeError):
                    header = None
            claim.blocks.append(BlockClaim(
                height=h, header=header, block_hash=b.get("blockHash"), anchor_tx=b.get("anchorTx"),
                attest_txs=[str(t) for t in b.get("attestTxs") or []], context_only=bool(b.get("contextOnly", False)),
            ))
            manifests[h] = b.get("manifest")
            proofs[h] = b.get("proof")
        for c in doc.get("clips", []):
            claim.clips.append(ClipClaim(
                path=str(c["path"]), kind=str(c.get("kind", "original")), camera=_hexbytes(c["camera"], 32),
                frames=[(int(h), int(s)) for h, s in c["frames"]], reencoded=bool(c.get("reencoded", False)),
            ))
        for r in doc.get("rawFrames", []):
            claim.raw.append(RawClaim(int(r["height"]), _hexbytes(r["camera"], 32), int(r["seq"]), str(r["path"])))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"malformed {INDEX}: {exc!r}") from exc
    return claim, manifests, proofs


# --------------------------------------------------------------------------- verifying


def _failed(code: str, message: str, produced_by: str) -> Report:
    r = Report(produced_by=produced_by)
    r.add(code, message)
    return r


def verify_bundle(path: str | os.PathLike[str], rpc_url: str, *, ledger_address: str | None = None,
                  timeout: float = 30.0, w3: Web3 | None = None) -> Report:
    """Re-check a bundle against the chain at ``rpc_url`` and nothing else.

    ``ledger_address`` pins the VideoLedger the verifier trusts (e.g. from the consortium's
    deployment record); without it the bundle's own claim is used and the report says so
    (``bundle.contract.unpinned``), because a forger could otherwise point at a ledger of their own.
    Never raises on bad input: an unreadable bundle or chain is a failed report."""
    produced_by = "frameledger verify"
    try:
        reader = BundleReader(path)
    except BundleError as exc:
        return _failed("bundle.invalid", str(exc), produced_by)
    with reader:
        try:
            claim, manifest_paths, proof_paths = parse_index(json.loads(reader.read(INDEX)))
        except (BundleError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _failed("bundle.invalid", str(exc), produced_by)

        prefindings = []
        address = claim.ledger
        if ledger_address is not None:
            pinned = Web3.to_checksum_address(ledger_address)
            if pinned != claim.ledger:
                prefindings.append(("bundle.contract.mismatch", f"bundle names {claim.ledger}, trusted ledger is {pinned}",
                                    None, None, None))
            address = pinned

        manifests = {h: reader.read_or_none(p) for h, p in manifest_paths.items()}
        proofs: dict[int, Any] = {}
        for h, p in proof_paths.items():
            raw = reader.read_or_none(p)
            try:
                proofs[h] = json.loads(raw) if raw is not None else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                proofs[h] = {"malformed": True}
        for bc in claim.blocks:
            bc.manifest = manifests.get(bc.height)
            bc.proof = proofs.get(bc.height)

        try:
            w3 = w3 or connect(rpc_url, timeout=timeout)
            chain_reader = ChainReader(w3, address)
            if not chain_reader.has_code():
                r = _failed("bundle.contract.mismatch", f"no contract at {address} on this chain", produced_by)
                r.chain_id = chain_reader.chain_id
                return r
            in_range = chain_reader.heights_in_range(claim.camera_id, claim.from_ms, claim.to_ms) \
                if claim.from_ms < claim.to_ms else []
            heights = set(in_range) | {b.height for b in claim.blocks}
            blocks = chain_reader.blocks(claim.camera_id, heights)
            trusted, known = _anchored_manifests(claim.camera_id, manifests, blocks)
            facts = ChainFacts(chain_id=chain_reader.chain_id, ledger=chain_reader.address,
                               consortium=chain_reader.consortium_address, heights_in_range=in_range, blocks=blocks,
                               proofs_on_chain=chain_reader.proofs_on_chain(blocks, proofs, known))
        except Exception as exc:  # noqa: BLE001 - connection refused, timeouts, odd node answers
            log.debug("chain query failed", exc_info=True)
            return _failed("chain.unavailable", f"{rpc_url}: {exc}", produced_by)

        clips = {}
        for c in claim.clips:
            try:
                clips[c.path] = read_clip_samples(reader.file_path(c.path))
            except BundleError as exc:
                clips[c.path] = ClipSamples(None, str(exc))
        raw_digests: dict[str, bytes | None] = {}
        for r in claim.raw:
            data = reader.read_or_none(r.path)
            raw_digests[r.path] = hashlib.sha256(data).digest() if data is not None else None

        report = verify_evidence(claim, facts, clips, raw_digests, produced_by=produced_by,
                                 pinned=ledger_address is not None, prefindings=prefindings)
        report.clips = clip_entries(claim, trusted)
        return report


def _anchored_manifests(camera: bytes, manifests: Mapping[int, bytes | None], blocks: Mapping[int, ChainBlock | None],
                        ) -> tuple[dict[int, Manifest], dict[int, dict[tuple, bytes]]]:
    """Manifests whose bytes are the anchored ones (for the report's clip rows), and their trees'
    leaf hashes (so the on-chain proof check does not hash every leaf a second time). Judging
    them is verify_evidence's job; this only prepares."""
    trusted: dict[int, Manifest] = {}
    known: dict[int, dict[tuple, bytes]] = {}
    for h, data in manifests.items():
        cb = blocks.get(h)
        if data is None or cb is None:
            continue
        digest = hashlib.sha256(data).digest()
        if digest != cb.header.manifest_digest:
            continue
        try:
            m = Manifest.from_bytes(data)
        except ManifestFormatError:
            continue
        trusted[h] = m
        known[h] = known_leaves(camera, m.frames, manifest_tree(camera, digest, m.frames))
    return trusted, known
