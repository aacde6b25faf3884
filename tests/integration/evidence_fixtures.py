"""A small but real evidence ledger for the extraction tests and the extraction benchmark.

Two cameras of one group, both replaying real recordings, sealed into 20-second blocks anchored and
attested on Anvil, their frames and manifests in a LocalStore:

* camera A (10.9.0.1) replays vtest (768x576, 10 fps, GOP 20, no B-frames) from T0: 4 blocks.
  - block 2 declares a gap, seq 250-269 (25.0-26.9 s), which lost the keyframe at seq 260, so
    seq 270-279 cannot be decoded until the keyframe at 280;
  - block 3 declares a gap, seq 460-481 (46.0-48.1 s, keyframes 460 and 480 lost), filled from
    camera B (I7): B's frames captured in [46.0 s, 48.2 s) are listed as the block's substitution;
  - block 4 is anchored but attested by its proposer only: not final.
* camera B (10.9.0.2) replays bikes (640x272, 25 fps, B-frames) from T0 + 38.52 s, so that its
  keyframe at 7.48 s of the clip lands on 46.0 s and its blocks straddle the 40 s boundary.

Importable without pytest (the benchmark builds a longer ledger with the same code).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from offchain.camera.samples import sample_path
from offchain.camera.sources import CodecConfig, EncodedFrame, FileSource
from offchain.chain.client import Signer
from offchain.chain.ledger import ConsortiumClient, VideoLedgerClient
from offchain.chain.reverts import ContractRevert
from offchain.core.block import FrameRef, Gap, SealedBlock, build_block, camera_id, proposer_for
from offchain.store.local import LocalStore

T0 = 1_700_000_000_000  # a multiple of every window used here
WINDOW_MS = 20_000
CAM_A = "10.9.0.1"
CAM_B = "10.9.0.2"
GROUP = b"evidence-test-group".ljust(32, b"\x00")
GAP_SEQS = (250, 269)
SUB_SEQS = (460, 481)
B_OFFSET_MS = 38_520
SUB_FROM_MS, SUB_TO_MS = 46_000, 48_200  # relative to T0


@dataclass
class AnchoredBlock:
    sealed: SealedBlock
    anchor_tx: str
    attest_txs: list[str]
    final: bool


@dataclass
class EvidenceLedger:
    rpc_url: str
    chain_id: int
    ledger_address: str
    consortium_address: str
    store_dir: Path
    reader: VideoLedgerClient
    t0: int
    frames: dict[str, dict[int, EncodedFrame]]           # camera ip -> seq -> frame
    codecs: dict[str, CodecConfig]
    blocks: dict[str, list[AnchoredBlock]] = field(default_factory=dict)

    @property
    def cam_a(self) -> bytes:
        return camera_id(CAM_A)

    @property
    def cam_b(self) -> bytes:
        return camera_id(CAM_B)

    def store(self) -> LocalStore:
        return LocalStore(self.store_dir, fsync="none")

    def block(self, ip: str, height: int) -> SealedBlock:
        return self.blocks[ip][height - 1].sealed

    def ms(self, rel_ms: int) -> int:
        return self.t0 + rel_ms


def _register(w3, keys: Sequence[str], consortium: str, cameras: Sequence[str], device_key: bytes | None = None) -> None:
    governor = ConsortiumClient(Signer(w3, keys[0]), consortium)
    operator = governor.as_signer(Signer(w3, keys[1]))
    for ip in cameras:
        operator.register_camera(ip, device_key or os.urandom(32), GROUP)
    try:
        governor.seal_genesis()
    except ContractRevert as exc:  # sealed earlier in this chain: cameras got their head on registration
        if exc.name != "GenesisAlreadySealed":
            raise


def _anchor_chain(w3, keys: Sequence[str], ledger_address: str, node_addresses: list[str], ip: str,
                  blocks_spec: list[dict], codec: CodecConfig, final: Sequence[bool]) -> list[AnchoredBlock]:
    node_keys = {Signer(w3, k).address: k for k in keys}
    signers = {addr: Signer(w3, node_keys[addr]) for addr in node_addresses}
    cam = camera_id(ip)
    out = []
    reader = VideoLedgerClient(signers[node_addresses[0]], ledger_address)
    for spec, is_final in zip(blocks_spec, final):
        prev, height, _ = reader.tip(cam)
        proposer = proposer_for(cam, spec["start"], node_addresses)
        sealed = build_block(camera_ip=ip, height=height + 1, prev_hash=prev, window_start_ms=spec["start"],
                             window_end_ms=spec["end"], frames=spec["frames"], proposer=proposer, codec=codec.to_dict(),
                             gaps=spec.get("gaps", ()), substitutions=spec.get("substitutions", ()),
                             stream_end=spec.get("stream_end"), declared_outages=spec.get("declared_outages", ()))
        anchored = VideoLedgerClient(signers[proposer], ledger_address).anchor(sealed.header)
        attests = []
        if is_final:
            other = next(a for a in node_addresses if a != proposer)
            attests.append(VideoLedgerClient(signers[other], ledger_address).attest(sealed.hash).tx_hash)
        out.append(AnchoredBlock(sealed, anchored.tx_hash, [anchored.tx_hash] + attests, is_final))
    return out


def build_evidence_ledger(w3, keys: Sequence[str], deployment, store_dir: Path, *, vtest: Path, bikes: Path,
                          t0: int = T0, window_ms: int = WINDOW_MS, rpc_url: str = "") -> EvidenceLedger:
    _register(w3, keys, deployment.consortium, [CAM_A, CAM_B])
    store = LocalStore(store_dir, fsync="none")
    src_a = FileSource(vtest, start_ms=t0)
    src_b = FileSource(bikes, start_ms=t0 + B_OFFSET_MS)
    frames_a = {f.seq: f for f in src_a}
    frames_b = {f.seq: f for f in src_b}
    cam_b = camera_id(CAM_B)

    lost = set(range(GAP_SEQS[0], GAP_SEQS[1] + 1)) | set(range(SUB_SEQS[0], SUB_SEQS[1] + 1))
    for seq, f in frames_a.items():
        if seq not in lost:  # lost frames are, by definition, in no store
            store.put(f.data)
    for f in frames_b.values():
        store.put(f.data)

    def ref(f: EncodedFrame) -> FrameRef:
        return FrameRef.of_bytes(f.seq, f.timestamp_ms, f.data, f.keyframe, f.dts_ms)

    def ts(seq: int) -> int:
        return frames_a[seq].timestamp_ms

    substitution = [ref(f) for f in frames_b.values() if t0 + SUB_FROM_MS <= f.timestamp_ms < t0 + SUB_TO_MS]
    gaps = [
        Gap(GAP_SEQS[0], GAP_SEQS[1], ts(GAP_SEQS[0]), ts(GAP_SEQS[1]), keyframe_lost=True),
        Gap(SUB_SEQS[0], SUB_SEQS[1], ts(SUB_SEQS[0]), ts(SUB_SEQS[1]), keyframe_lost=True, substitute_camera=cam_b),
    ]
    last_a = max(f.timestamp_ms for f in frames_a.values())
    specs_a = []
    start = t0
    while start <= last_a:
        end = start + window_ms
        spec = {"start": start, "end": end,
                "frames": [ref(f) for s, f in frames_a.items() if start <= f.timestamp_ms < end and s not in lost],
                "gaps": [g for g in gaps if start <= g.from_ms < end]}
        if any(g.substitute_camera for g in spec["gaps"]):
            spec["substitutions"] = [(cam_b, substitution)]
        specs_a.append(spec)
        start = end
    first_b = min(f.timestamp_ms for f in frames_b.values())
    last_b = max(f.timestamp_ms for f in frames_b.values())
    specs_b = []
    start = first_b - (first_b - t0) % window_ms
    while start <= last_b:
        end = start + window_ms
        specs_b.append({"start": start, "end": end,
                        "frames": [ref(f) for f in frames_b.values() if start <= f.timestamp_ms < end]})
        start = end

    nodes = ConsortiumClient(Signer(w3, keys[0]), deployment.consortium).nodes()
    codec_a, codec_b = src_a.codec, src_b.codec
    finals_a = [True] * (len(specs_a) - 1) + [False]
    blocks_a = _anchor_chain(w3, keys, deployment.video_ledger, nodes, CAM_A, specs_a, codec_a, finals_a)
    blocks_b = _anchor_chain(w3, keys, deployment.video_ledger, nodes, CAM_B, specs_b, codec_b, [True] * len(specs_b))
    for b in blocks_a + blocks_b:
        store.put(b.sealed.manifest_bytes)
    reader = VideoLedgerClient(Signer(w3, keys[6]), deployment.video_ledger)
    return EvidenceLedger(
        rpc_url=rpc_url, chain_id=w3.eth.chain_id, ledger_address=deployment.video_ledger,
        consortium_address=deployment.consortium, store_dir=Path(store_dir), reader=reader, t0=t0,
        frames={CAM_A: frames_a, CAM_B: frames_b}, codecs={CAM_A: codec_a, CAM_B: codec_b},
        blocks={CAM_A: blocks_a, CAM_B: blocks_b},
    )


def anchor_recording(w3, keys: Sequence[str], deployment, store: LocalStore, ip: str, frames: Sequence[EncodedFrame],
                     codec: CodecConfig, *, t0: int = T0, window_ms: int = WINDOW_MS,
                     unended: bool = False, device_key: bytes | None = None,
                     outages: Sequence[dict] = ()) -> list[AnchoredBlock]:
    """Register camera ``ip`` (with ``device_key``, else a random one) and anchor its frames
    (already stamped with capture times from ``t0``) in final blocks of ``window_ms``, every frame
    and manifest in ``store``; with ``unended`` the last block declares that the stream stopped
    without a signed end; ``outages``: declaration proofs (`core.outages`), each in the block of its toMs."""
    _register(w3, keys, deployment.consortium, [ip], device_key)
    for f in frames:
        store.put(f.data)
    refs = [FrameRef.of_bytes(f.seq, f.timestamp_ms, f.data, f.keyframe, f.dts_ms) for f in frames]
    last = max(r.timestamp_ms for r in refs)
    specs = []
    start = t0
    while start <= last:
        specs.append({"start": start, "end": start + window_ms,
                      "frames": [r for r in refs if start <= r.timestamp_ms < start + window_ms],
                      "declared_outages": [o for o in outages
                                           if start <= json.loads(o["signedJson"])["toMs"] < start + window_ms]})
        start += window_ms
    if unended:
        specs[-1]["stream_end"] = "unended"
    nodes = ConsortiumClient(Signer(w3, keys[0]), deployment.consortium).nodes()
    blocks = _anchor_chain(w3, keys, deployment.video_ledger, nodes, ip, specs, codec, [True] * len(specs))
    for b in blocks:
        store.put(b.sealed.manifest_bytes)
    return blocks


@contextmanager
def evidence_ledger(devchain, w3, base_deployment, tmp_path_factory) -> Iterator[EvidenceLedger]:
    """The shared evidence ledger (evidence_fixtures), reverted from the chain on exit."""
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield build_evidence_ledger(w3, devchain.private_keys, base_deployment, tmp_path_factory.mktemp("ev") / "store",
                                    vtest=sample_path("vtest"), bikes=sample_path("bikes"), rpc_url=devchain.rpc_url)
    finally:
        w3.provider.make_request("evm_revert", [snapshot])
