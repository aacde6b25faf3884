"""A batch-anchored history on Anvil without node processes (docs/BATCH.md), for the evidence tests.

What a consortium's nodes would do in batch mode, done by hand like bench/gas_bench.py: register
cameras (genesis sealed), build every camera's block of each window, put frames, block manifests
and batch manifests in a LocalStore, sign each window's Batch with the three node keys
(`sign_batch`, `order_signatures`) and send it with `BatchLedgerClient.anchor_batch`.

* camera A (10.9.7.1) replays vtest (H.264, 10 fps) from T0 in 20-second windows: 4 blocks;
* camera B (10.9.7.2) sends synthetic frames in the same windows, so every batch holds 2 headers.

Each history gets its own BatchLedger (deployed on the shared Consortium), so batch windows never
collide with another test's. ``forge`` anchors a bad history on purpose, as a colluding quorum
could (the contract does not check each camera's chain in batch mode):

* ``"broken_link"``: camera A's block 3 names a wrong prevHash (block 4 links to the forged 3);
* ``"duplicate"``: the batch of block 3 holds a second header of camera A.

Importable without pytest (a benchmark can build the same history).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from evidence_fixtures import GROUP
from offchain.camera.sources import CodecConfig, EncodedFrame, FileSource
from offchain.chain.client import Signer
from offchain.chain.ledger import AnchoredBatch, BatchLedgerClient, ConsortiumClient
from offchain.chain.reverts import ContractRevert
from offchain.core.batch import Batch, BatchManifest, order_signatures, sign_batch
from offchain.core.block import BlockHeader, FrameRef, SealedBlock, build_block, camera_id
from offchain.evidence.trust import TrustList, TrustedDeployment
from offchain.store.local import LocalStore

T0 = 1_700_000_000_000
WINDOW_MS = 20_000
BCAM_A = "10.9.7.1"
BCAM_B = "10.9.7.2"
MAX_FUTURE_MS, MAX_WINDOW_MS = 600_000, 3_600_000


@dataclass
class BatchHistory:
    rpc_url: str
    chain_id: int
    video_ledger: str
    consortium: str
    batch_ledger: str
    store_dir: Path
    t0: int
    frames: dict[int, EncodedFrame]                   # camera A: seq -> frame
    codec: CodecConfig
    blocks: dict[str, list[SealedBlock]] = field(default_factory=dict)   # per camera ip, by height
    manifests: list[BatchManifest] = field(default_factory=list)          # by batch index
    anchored: list[AnchoredBatch] = field(default_factory=list)

    @property
    def cam_a(self) -> bytes:
        return camera_id(BCAM_A)

    def ms(self, rel_ms: int) -> int:
        return self.t0 + rel_ms

    def store(self) -> LocalStore:
        return LocalStore(self.store_dir, fsync="none")

    def trust(self, batch_ledger: str | None = None) -> TrustList:
        """The deployment a verifier trusts: this VideoLedger, Consortium and BatchLedger."""
        return TrustList((TrustedDeployment(video_ledger=self.video_ledger, chain_id=self.chain_id,
                                            consortium=self.consortium, batch_ledger=batch_ledger or self.batch_ledger,
                                            name="batch-test"),))

    def trust_file(self, path: Path) -> Path:
        import json

        path.write_text(json.dumps({"format": "frameledger.trust/1", "deployments": [
            {"name": "batch-test", "chainId": self.chain_id, "VideoLedger": self.video_ledger,
             "Consortium": self.consortium, "BatchLedger": self.batch_ledger}]}))
        return path


def register(w3, keys: Sequence[str], consortium: str, cameras: Sequence[str]) -> None:
    """Register the cameras (those registered already stay) and seal genesis if not sealed."""
    governor = ConsortiumClient(Signer(w3, keys[0]), consortium)
    operator = governor.as_signer(Signer(w3, keys[1]))
    for ip in cameras:
        try:
            operator.register_camera(ip, os.urandom(32), GROUP)
        except ContractRevert as exc:
            if exc.name != "CameraAlreadyRegistered":
                raise
    try:
        governor.seal_genesis()
    except ContractRevert as exc:
        if exc.name != "GenesisAlreadySealed":
            raise


def deploy_batch_ledger(w3, keys: Sequence[str], consortium: str) -> str:
    """A fresh BatchLedger on the consortium (its own batch sequence)."""
    contract, _ = Signer(w3, keys[0]).deploy("BatchLedger", consortium, MAX_FUTURE_MS, MAX_WINDOW_MS)
    return str(contract.address)


def _synthetic(seq: int, t: int) -> EncodedFrame:
    return EncodedFrame(seq=seq, timestamp_ms=t, keyframe=seq % 25 == 0, data=hashlib.sha256(b"B%d" % seq).digest() * 8)


def _ref(f: EncodedFrame) -> FrameRef:
    return FrameRef.of_bytes(f.seq, f.timestamp_ms, f.data, f.keyframe, f.dts_ms)


def build_batch_history(w3, keys: Sequence[str], deployment, store_dir: Path, *, vtest: Path, t0: int = T0,
                        window_ms: int = WINDOW_MS, forge: str | None = None, rpc_url: str = "",
                        batch_ledger: str | None = None) -> BatchHistory:
    """Anchor both cameras' windows in batches on a fresh (or the given) BatchLedger."""
    register(w3, keys, deployment.consortium, [BCAM_A, BCAM_B])
    store = LocalStore(store_dir, fsync="none")
    src = FileSource(vtest, start_ms=t0)
    frames_a = {f.seq: f for f in src}
    last = max(f.timestamp_ms for f in frames_a.values())
    windows = [(s, s + window_ms) for s in range(t0, last + 1, window_ms)]
    frames_b = [_synthetic(i, t0 + i * 40) for i in range((windows[-1][1] - t0) // 40)]
    for f in list(frames_a.values()) + frames_b:
        store.put(f.data)
    gov = ConsortiumClient(Signer(w3, keys[0]), deployment.consortium)
    nodes = gov.nodes()
    node_keys = {Signer(w3, k).address: k for k in keys}
    address = batch_ledger or deploy_batch_ledger(w3, keys, deployment.consortium)
    ledger = BatchLedgerClient(Signer(w3, node_keys[nodes[0]]), address)
    history = BatchHistory(rpc_url=rpc_url, chain_id=w3.eth.chain_id, video_ledger=deployment.video_ledger,
                           consortium=deployment.consortium, batch_ledger=ledger.address, store_dir=Path(store_dir),
                           t0=t0, frames=frames_a, codec=src.codec, blocks={BCAM_A: [], BCAM_B: []})
    prev = {ip: gov.head_block(camera_id(ip))[0] for ip in (BCAM_A, BCAM_B)}
    prev_root = ledger.last_root()
    for height, (start, end) in enumerate(windows, start=1):
        headers: list[BlockHeader] = []
        for ip, fs, codec in ((BCAM_A, list(frames_a.values()), src.codec), (BCAM_B, frames_b, None)):
            sealed = build_block(camera_ip=ip, height=height, prev_hash=prev[ip], window_start_ms=start,
                                 window_end_ms=end, frames=[_ref(f) for f in fs if start <= f.timestamp_ms < end],
                                 proposer=nodes[height % len(nodes)], codec=codec.to_dict() if codec else None)
            header = sealed.header
            if forge == "broken_link" and ip == BCAM_A and height == 3:
                header = replace(header, prev_hash=os.urandom(32))
                sealed = replace(sealed, header=header)
            store.put(sealed.manifest_bytes)
            history.blocks[ip].append(sealed)
            headers.append(header)
            if forge == "duplicate" and ip == BCAM_A and height == 3:
                headers.append(replace(header, frame_count=header.frame_count - 1))
            prev[ip] = header.hash
        manifest = BatchManifest.of(window_start_ms=start, window_end_ms=end, prev_batch_root=prev_root, headers=headers)
        store.put(manifest.to_bytes())
        batch = Batch.of_manifest(manifest)
        domain = ledger.domain
        sigs = order_signatures(domain, batch, [sign_batch(node_keys[n], domain, batch) for n in nodes[:3]])
        history.anchored.append(ledger.anchor_batch(batch, sigs))
        history.manifests.append(manifest)
        prev_root = batch.batch_root
    store.close()
    return history
