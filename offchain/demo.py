"""`frameledger demo`: the whole ledger core end to end on the embedded defaults.

Starts Anvil, deploys and configures the contracts from chain/consortium.json (3 nodes, quorum 2),
whitelists two cameras with Ed25519 device keys and seals the genesis, then replays two real
recordings (vtest: a fixed camera over a walkway; bikes) as signed frame packets. Every node
checks every packet (whitelist, device signature, length, digest) and keeps the frame in its own
content store; per camera and 60-second window the rotating proposer seals and anchors a block,
the other nodes rebuild the block from their own copies and attest it; finally every block is
verified back from the chain: manifest digest, every frame's bytes, the Merkle root, finality.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .camera.samples import sample_path
from .camera.sources import FileSource
from .chain.client import Signer, connect
from .chain.deployer import deploy
from .chain.devchain import DevChain
from .chain.ledger import ConsortiumClient, VideoLedgerClient
from .core import packet as pk
from .core.block import FrameRef, build_block, camera_id, proposer_for, window_of
from .core.cid import cid_from_digest
from .core.merkle import StandardMerkleTree
from .core.block import FRAME_LEAF_ENCODING
from .store.local import LocalStore
from .tables import render_table

log = logging.getLogger(__name__)

WINDOW_MS = 60_000


@dataclass(frozen=True)
class DemoCamera:
    ip: str
    sample: str
    owner_account: int  # plan account index of the owning operator
    group: bytes


CAMERAS = (
    DemoCamera("10.0.1.11", "vtest", 1, b"bank".ljust(32, b"\x00")),
    DemoCamera("10.0.2.21", "bikes", 2, b"customer".ljust(32, b"\x00")),
)


@dataclass
class DemoNode:
    """The ingest side of one consortium node, reduced to what the ledger core needs."""

    name: str
    signer: Signer
    store: LocalStore
    ledger: VideoLedgerClient
    pool: dict[bytes, list[FrameRef]] = field(default_factory=lambda: defaultdict(list))
    rejected: int = 0

    def ingest(self, raw: bytes, device_keys: dict[str, bytes]) -> None:
        try:
            p = pk.decode_packet(raw)
            key = device_keys.get(p.camera_ip)
            if key is None:
                raise pk.BadSignature(f"{p.camera_ip} is not on the whitelist")
            pk.verify_signature(p, key)
        except pk.PacketError as exc:
            self.rejected += 1
            log.warning("packet rejected", extra={"node": self.name, "alarm": exc.alarm, "reason": str(exc)})
            return
        self.store.put(p.payload)
        self.pool[p.camera_id].append(p.frame_ref())


@dataclass
class BlockRow:
    camera: str
    height: int
    window: str
    frames: int
    proposer: str
    anchor_gas: int
    attest_gas: list[int]
    final: bool = False
    verified: str = "-"


def _fmt_window(start_ms: int, end_ms: int, t0: int) -> str:
    return f"{(start_ms - t0) // 1000:>4}s-{(end_ms - t0) // 1000}s"


def run_demo(work_dir: Path, window_ms: int = WINDOW_MS, out=print) -> dict:
    started = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    with DevChain(accounts=12, log_path=work_dir / "anvil.log") as chain:
        w3 = connect(chain.rpc_url)
        keys = chain.private_keys
        out(f"dev chain  : Anvil on {chain.rpc_url} (chain id {w3.eth.chain_id})")
        deployment = deploy(w3, keys, out_dir=work_dir / "deployments")
        out(f"contracts  : Consortium {deployment.consortium}, VideoLedger {deployment.video_ledger}")

        governor = ConsortiumClient(Signer(w3, keys[0]), deployment.consortium)
        device_keys: dict[str, bytes] = {}
        signing_keys: dict[str, Ed25519PrivateKey] = {}
        for cam in CAMERAS:
            sk = Ed25519PrivateKey.generate()
            pub = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            governor.as_signer(Signer(w3, keys[cam.owner_account])).register_camera(cam.ip, pub, cam.group)
            signing_keys[cam.ip] = sk
        governor.seal_genesis()
        # Nodes learn device keys from the whitelist on chain, not from the cameras.
        for cam in CAMERAS:
            device_keys[cam.ip] = governor.camera(camera_id(cam.ip)).device_public_key

        node_addresses = governor.nodes()
        node_keys = {Signer(w3, k).address: k for k in keys}
        names = {n["address"]: n["name"] for n in deployment.record["nodes"]}
        nodes = {}
        for addr in node_addresses:
            signer = Signer(w3, node_keys[addr])
            nodes[addr] = DemoNode(names[addr], signer, LocalStore(work_dir / "nodes" / names[addr] / "store"),
                                   VideoLedgerClient(signer, deployment.video_ledger))
        out(f"consortium : {len(deployment.record['members'])} members, {len(nodes)} nodes, quorum {governor.quorum()}, "
            f"{len(CAMERAS)} cameras, genesis sealed")

        # Capture time: the recordings are replayed as if they started at a window boundary a few
        # minutes ago, so every window is complete when it is sealed.
        now_ms = int(time.time() * 1000)
        t0 = now_ms - now_ms % window_ms - 5 * window_ms
        codecs, frame_count, byte_count = {}, 0, 0
        ingest_started = time.monotonic()
        for cam in CAMERAS:
            source = FileSource(sample_path(cam.sample), start_ms=t0)
            codecs[cam.ip] = source.codec.to_dict()
            for frame in source:
                raw = pk.encode_packet(signing_keys[cam.ip], cam.ip, frame.seq, frame.timestamp_ms, frame.keyframe, frame.data,
                                       frame.dts_ms)
                for node in nodes.values():
                    node.ingest(raw, device_keys)
                frame_count += 1
                byte_count += len(frame.data)
        ingest_s = time.monotonic() - ingest_started
        out(f"ingest     : {frame_count} frames ({byte_count / 1e6:.1f} MB) x {len(nodes)} nodes in {ingest_s:.1f}s")

        rows: list[BlockRow] = []
        for cam in CAMERAS:
            cid = camera_id(cam.ip)
            windows: dict[int, list[FrameRef]] = defaultdict(list)
            for node_addr in node_addresses[:1]:
                for f in nodes[node_addr].pool[cid]:
                    windows[window_of(f.timestamp_ms, window_ms)[0]].append(f)
            for start in sorted(windows):
                proposer_addr = proposer_for(cid, start, node_addresses)
                proposer = nodes[proposer_addr]
                prev, height, _ = proposer.ledger.tip(cid)

                def seal(node: DemoNode):
                    mine = [f for f in node.pool[cid] if start <= f.timestamp_ms < start + window_ms]
                    return build_block(camera_ip=cam.ip, height=height + 1, prev_hash=prev, window_start_ms=start,
                                       window_end_ms=start + window_ms, frames=mine, proposer=proposer_addr,
                                       codec=codecs[cam.ip])

                block = seal(proposer)
                proposer.store.put(block.manifest_bytes)
                anchored = proposer.ledger.anchor(block.header)
                row = BlockRow(cam.ip, block.header.height, _fmt_window(start, start + window_ms, t0),
                               block.header.frame_count, proposer.name, anchored.gas_used, [])
                for addr, node in nodes.items():
                    if addr == proposer_addr:
                        continue
                    own = seal(node)  # each node checks the header against its own pool
                    if own.hash == block.hash:
                        node.store.put(own.manifest_bytes)
                        row.attest_gas.append(node.ledger.attest(block.hash).gas_used)
                    else:
                        node.ledger.dispute(block.hash, "header differs from this node's pool")
                rows.append(row)

        # Verify every anchored block back from the chain, through one node's store.
        reader = next(iter(nodes.values()))
        verified_blocks = 0
        for row in rows:
            cid = camera_id(row.camera)
            rec = reader.ledger.block_at(cid, row.height)
            problems = verify_block_from_store(rec.header, reader.store)
            row.final = rec.finalized
            row.verified = "ok" if not problems else "; ".join(problems)
            verified_blocks += not problems

        elapsed = time.monotonic() - started
        anchor_gas = [r.anchor_gas for r in rows]
        attest_gas = [g for r in rows for g in r.attest_gas]
        out("")
        out(render_table(
            ["camera", "height", "window", "frames", "proposer", "anchor gas", "attestations", "final", "verified"],
            [[r.camera, r.height, r.window, r.frames, r.proposer, f"{r.anchor_gas:,}", 1 + len(r.attest_gas),
              "yes" if r.final else "no", r.verified] for r in rows],
            title="Video blocks anchored on chain",
        ))
        out("")
        summary = {
            "blocks": len(rows),
            "frames": sum(r.frames for r in rows),
            "verified": verified_blocks,
            "final": sum(r.final for r in rows),
            "anchor_gas_avg": sum(anchor_gas) // max(len(anchor_gas), 1),
            "attest_gas_avg": sum(attest_gas) // max(len(attest_gas), 1),
            "seconds": round(elapsed, 1),
            "rejected": sum(n.rejected for n in nodes.values()),
        }
        out(render_table(["blocks", "frames", "final", "verified", "avg anchor gas", "avg attest gas", "rejected packets", "time (s)"],
                         [[summary["blocks"], summary["frames"], summary["final"], summary["verified"],
                           f"{summary['anchor_gas_avg']:,}", f"{summary['attest_gas_avg']:,}", summary["rejected"], summary["seconds"]]],
                         title="Summary"))
        return summary


def verify_block_from_store(header, store) -> list[str]:
    """Re-derive an anchored header from stored bytes only; return what does not match."""
    from .core.block import Manifest

    problems = []
    manifest_bytes = store.get(cid_from_digest(header.manifest_digest))
    manifest = Manifest.from_bytes(manifest_bytes)
    for f in manifest.frames:
        data = store.get(cid_from_digest(f.sha256))  # the store re-checks SHA-256 on read
        if len(data) != f.size:
            problems.append(f"frame {f.seq} size")
    values = [f.leaf_values(header.camera_id) for f in manifest.frames]
    root = StandardMerkleTree.of(values, list(FRAME_LEAF_ENCODING)).root if values else b"\x00" * 32
    if root != header.frames_root:
        problems.append("frames root")
    if len(manifest.frames) != header.frame_count:
        problems.append("frame count")
    return problems
