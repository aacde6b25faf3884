"""Gas of the ledger's transactions on Anvil, against references measured in the same run, and
gas per camera-minute by anchoring mode at 1, 10, 100, 200 and 1,000 cameras (3 nodes, 60 s windows).

References: a plain value transfer measured in the same run (the floor of any transaction), and
the computed cost of writing the header's nine words into fresh storage slots (21,000 + 9 x 22,100,
the EIP-2929/3529 price of a cold zero-to-nonzero SSTORE), so the ratios say what the chain rules
(link, height, time, quorum, events) add on top of bare storage.

Modes, per camera-minute (one 60 s window; 25 fps = 1,500 frames):
- per frame: one transaction per frame carrying its 32-byte hash, measured (the floor of any
  per-frame anchoring: no contract, no storage) x 1,500;
- per header: VideoLedger.anchor + the attest reaching quorum + the third node's attest, measured
  per camera on 10 cameras, for the current (lean) storage layout and for the one before it
  (bench/reference/, same ABI, deployed on the same Consortium in the same run); beyond 10 cameras
  computed as N x the per-camera median (each camera's transactions touch only that camera's
  storage, so the cost is linear);
- batch: BatchLedger.anchorBatch with all 3 nodes' signatures (and with the quorum's 2), measured at
  every camera count (headers stay off chain, so the calldata does not grow), divided by N.
Capacity: a Besu QBFT network with chain/besu/genesis.json's 30,000,000 gas per block and 2 s
block period (blockperiodseconds) offers 900,000,000 gas a minute; cameras carried = that / gas
per camera-minute.

    python -m bench gas            # writes bench/results/gas.json
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

from offchain.chain.client import Signer, connect
from offchain.chain.deployer import Deployment, deploy
from offchain.chain.devchain import DevChain
from offchain.chain.ledger import BatchLedgerClient, ConsortiumClient, VideoLedgerClient
from offchain.core.batch import Batch, BatchManifest, order_signatures, sign_batch
from offchain.core.block import BlockHeader, FrameRef, build_block, camera_id
from offchain.tables import render_table

RESULTS = Path(__file__).resolve().parent / "results" / "gas.json"
REFERENCE_LEDGER = Path(__file__).resolve().parent / "reference" / "VideoLedger_before_lean.json"
WINDOW = 60_000
FRAMES_PER_MINUTE = 1_500  # 25 fps
CAMERA_COUNTS = (1, 10, 100, 200, 1_000)
BATCHES_PER_COUNT = 5
PER_HEADER_CAMERAS = 10
TARGET = 1_000  # gas per camera-minute at 200 cameras (issue 9)
BESU_BLOCK_GAS = 30_000_000   # chain/besu/genesis.json gasLimit 0x1c9c380
BESU_BLOCK_SECONDS = 2        # chain/besu/genesis.json qbft.blockperiodseconds
BESU_GAS_PER_MINUTE = BESU_BLOCK_GAS * 60 // BESU_BLOCK_SECONDS
T_BASE = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW  # in the past: the ledgers refuse future windows


def _median(xs: list[int]) -> int:
    return sorted(xs)[len(xs) // 2]


def _header_minute(m: dict[str, list[int]]) -> int:
    """One camera-minute in per-header mode: the anchor and both other nodes' attestations."""
    return _median(m["anchor"]) + _median(m["attest_final"]) + _median(m["attest_open"])


def _frames(start: int, n: int, seq0: int) -> list[FrameRef]:
    return [FrameRef.of_bytes(seq0 + i, start + i * 40, hashlib.sha256(b"%d" % (seq0 + i)).digest(), i % 50 == 0)
            for i in range(n)]


def _raw_tx(w3: Any, sender: Signer, to: str, data: bytes) -> int:
    tx = {"to": to, "value": 1, "from": sender.address, "nonce": w3.eth.get_transaction_count(sender.address),
          "chainId": w3.eth.chain_id, "gas": 100_000, "maxFeePerGas": w3.eth.gas_price * 2, "maxPriorityFeePerGas": 1,
          "data": data}
    raw = sender.account.sign_transaction(tx).raw_transaction
    return int(w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw))["gasUsed"])


def _register_cameras(w3: Any, keys: list[str], dep: Deployment) -> list[str]:
    owner = ConsortiumClient(Signer(w3, keys[1]), dep.consortium)
    ips = [f"10.0.0.{i}" for i in range(1, PER_HEADER_CAMERAS + 1)]
    for ip in ips:
        owner.register_camera(ip, b"\x11" * 32, b"\x01" * 32)
    ConsortiumClient(Signer(w3, keys[0]), dep.consortium).seal_genesis()
    return ips


def _deploy_reference_ledger(w3: Any, keys: list[str], dep: Deployment) -> str:
    """The VideoLedger of before the lean storage layout (bench/reference/), on the same Consortium."""
    art = json.loads(REFERENCE_LEDGER.read_text())
    founder = Signer(w3, keys[0])
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    return str(founder.transact(factory.constructor(dep.consortium, 600_000, 3_600_000)).receipt["contractAddress"])


def _per_header(w3: Any, keys: list[str], dep: Deployment, ledger: str, ips: list[str]) -> dict[str, list[int]]:
    """Per-header mode on PER_HEADER_CAMERAS cameras, three windows each (1,500-frame blocks)."""
    gov = ConsortiumClient(Signer(w3, keys[0]), dep.consortium)
    nodes = [VideoLedgerClient(Signer(w3, keys[i]), ledger) for i in (3, 4, 5)]
    out: dict[str, list[int]] = {"anchor_first": [], "anchor": [], "attest_final": [], "attest_open": []}
    for c, ip in enumerate(ips):
        prev = gov.head_block(camera_id(ip))[0]
        for h in range(1, 4):
            start = T_BASE + (h - 1) * WINDOW
            proposer = nodes[(c + h) % 3]
            blk = build_block(camera_ip=ip, height=h, prev_hash=prev, window_start_ms=start, window_end_ms=start + WINDOW,
                              frames=_frames(start, FRAMES_PER_MINUTE, (h - 1) * FRAMES_PER_MINUTE),
                              proposer=proposer.signer.address)
            out["anchor_first" if h == 1 else "anchor"].append(proposer.anchor(blk.header).gas_used)
            others = [n for n in nodes if n is not proposer]
            out["attest_final"].append(others[0].attest(blk.hash).gas_used)  # reaches quorum 2
            out["attest_open"].append(others[1].attest(blk.hash).gas_used)   # beyond quorum
            prev = blk.hash
    return out


def _random_headers(rng: random.Random, n: int, start: int, proposer: str) -> list[BlockHeader]:
    """N camera headers of one window. Their content does not reach the chain (only the root does),
    so random well-formed fields measure the same gas as real blocks."""
    return [BlockHeader(camera_id=rng.randbytes(32), height=rng.randrange(1, 10**6), prev_hash=rng.randbytes(32),
                        window_start_ms=start, window_end_ms=start + WINDOW, frame_count=FRAMES_PER_MINUTE,
                        frames_root=rng.randbytes(32), manifest_digest=rng.randbytes(32), proposer=proposer)
            for _ in range(n)]


def _batch_mode(w3: Any, keys: list[str], dep: Deployment) -> dict[int, dict[str, Any]]:
    """anchorBatch gas at each camera count: BATCHES_PER_COUNT windows with 3 signatures, one with 2."""
    ledger = BatchLedgerClient(Signer(w3, keys[3]), dep.batch_ledger or "")
    domain = ledger.domain
    rng = random.Random(9)
    start, prev_root = T_BASE + 100 * WINDOW, b"\x00" * 32
    out: dict[int, dict[str, Any]] = {}
    for n in CAMERA_COUNTS:
        three, two, calldata = [], [], 0
        for k in range(BATCHES_PER_COUNT + 1):
            manifest = BatchManifest.of(window_start_ms=start, window_end_ms=start + WINDOW, prev_batch_root=prev_root,
                                        headers=_random_headers(rng, n, start, ledger.signer.address))
            batch = Batch.of_manifest(manifest)
            signers = (3, 4, 5) if k < BATCHES_PER_COUNT else (3, 4)
            sigs = order_signatures(domain, batch, [sign_batch(keys[i], domain, batch) for i in signers])
            anchored = ledger.anchor_batch(batch, sigs)
            (three if len(signers) == 3 else two).append(anchored.tx.gas_used)
            calldata = len(w3.eth.get_transaction(anchored.tx.tx_hash)["input"])
            start, prev_root = start + WINDOW, batch.batch_root
        out[n] = {"first": three[0], "median_3_signatures": _median(three[1:]), "quorum_2_signatures": two[0],
                  "calldata_bytes": calldata, "manifest_bytes": len(manifest.to_bytes())}
    return out


def _mode_rows(per_frame_tx: int, header_minute: int, before_minute: int,
               batch: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for n in CAMERA_COUNTS:
        b = batch[n]["median_3_signatures"]
        rows.append({
            "cameras": n,
            "per_frame": per_frame_tx * FRAMES_PER_MINUTE,
            "per_header_before_lean": before_minute,
            "per_header": header_minute,
            "per_header_basis": "measured" if n <= PER_HEADER_CAMERAS else f"computed: N x {PER_HEADER_CAMERAS}-camera median",
            "batch": round(b / n, 1),
            "batch_tx_gas": b,
            "batch_tx_gas_quorum_2": batch[n]["quorum_2_signatures"],
            "batch_calldata_bytes": batch[n]["calldata_bytes"],
            "batch_manifest_bytes": batch[n]["manifest_bytes"],
        })
    return rows


def _print(rows: list[dict[str, Any]], transfer: int, raw_storage: int, legacy: list[tuple[str, int]]) -> None:
    table = [[name, f"{g:,}", f"{g / transfer:.1f}x", f"{g / raw_storage:.2f}x"] for name, g in legacy]
    print(render_table(["transaction", "gas", "vs transfer", "vs 9 fresh SSTOREs (computed)"], table,
                       title=f"Gas on Anvil (1,500-frame blocks; transfer = {transfer:,} gas, raw header storage = {raw_storage:,} gas)"))
    print()
    cells = [[f"{r['cameras']:,}", f"{r['per_frame']:,}", f"{r['per_header_before_lean']:,}", f"{r['per_header']:,}",
              f"{r['batch']:,.1f}",
              f"{r['batch_tx_gas']:,}", f"{r['per_header'] / r['batch']:,.0f}x", f"{r['batch'] / TARGET:.3f}x"]
             for r in rows]
    print(render_table(["cameras", "per frame", "per header (before)", "per header (lean)", "batch", "batch tx",
                        "header/batch", "batch/target"], cells,
                       title="Gas per camera-minute (3 nodes, 60 s windows, 25 fps; target 1,000 at 200 cameras)"))
    print()
    cap = [[f"{r['cameras']:,}", f"{BESU_GAS_PER_MINUTE // r['per_frame']:,}", f"{BESU_GAS_PER_MINUTE // r['per_header']:,}",
            f"{int(BESU_GAS_PER_MINUTE // r['batch']):,}"] for r in rows]
    print(render_table(["at cameras", "per frame", "per header", "batch"], cap,
                       title=f"Cameras one Besu QBFT network carries by gas ({BESU_BLOCK_GAS:,} gas/block every "
                             f"{BESU_BLOCK_SECONDS} s = {BESU_GAS_PER_MINUTE:,} gas/min, chain/besu/genesis.json)"))


def main(argv: list[str] | None = None) -> int:
    with DevChain(accounts=12) as chain:
        w3 = connect(chain.rpc_url)
        keys = chain.private_keys
        dep = deploy(w3, keys, out_dir=None)
        sender, receiver = Signer(w3, keys[6]), Signer(w3, keys[7])
        transfer = _raw_tx(w3, sender, receiver.address, b"")
        per_frame_tx = _raw_tx(w3, sender, receiver.address, hashlib.sha256(b"frame").digest())
        ips = _register_cameras(w3, keys, dep)
        header = _per_header(w3, keys, dep, dep.video_ledger, ips)
        header_before = _per_header(w3, keys, dep, _deploy_reference_ledger(w3, keys, dep), ips)
        batch = _batch_mode(w3, keys, dep)

    raw_storage = 21_000 + 9 * 22_100  # computed, not measured: 9 header words into fresh slots + the floor
    header_minute = _header_minute(header)
    before_minute = _header_minute(header_before)
    legacy = [
        ("anchor, before the lean layout (median)", _median(header_before["anchor"])),
        ("attest reaching quorum, before the lean layout", _median(header_before["attest_final"])),
        ("anchor (first block of a camera)", _median(header["anchor_first"])),
        ("anchor (next blocks, median)", _median(header["anchor"])),
        ("attest reaching quorum (finalises)", _median(header["attest_final"])),
        ("attest beyond quorum", _median(header["attest_open"])),
        ("deploy Consortium", dep.record["gas"]["deploy Consortium"]),
        ("deploy VideoLedger", dep.record["gas"]["deploy VideoLedger"]),
        ("deploy BatchLedger", dep.record["gas"]["deploy BatchLedger"]),
        ("anchorBatch, 200 cameras, 3 signatures (median)", batch[200]["median_3_signatures"]),
        ("anchorBatch, 200 cameras, 2 signatures (quorum)", batch[200]["quorum_2_signatures"]),
        ("anchorBatch, first batch of the ledger (1 camera)", batch[1]["first"]),
        ("one transaction with a 32-byte frame hash", per_frame_tx),
    ]
    rows = _mode_rows(per_frame_tx, header_minute, before_minute, batch)
    _print(rows, transfer, raw_storage, legacy)
    at_200 = next(r for r in rows if r["cameras"] == 200)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "transfer": transfer, "raw_header_storage": raw_storage, **{name: g for name, g in legacy},
        "per_camera_minute": rows,
        "target_per_camera_minute_at_200": TARGET,
        "batch_vs_target_at_200": round(at_200["batch"] / TARGET, 4),
        "per_header_vs_batch_at_200": round(at_200["per_header"] / at_200["batch"], 1),
        "per_header_lean_vs_before": round(header_minute / before_minute, 3),
        "besu": {"block_gas_limit": BESU_BLOCK_GAS, "block_period_s": BESU_BLOCK_SECONDS,
                 "gas_per_minute": BESU_GAS_PER_MINUTE, "source": "chain/besu/genesis.json (gasLimit, qbft.blockperiodseconds)",
                 "cameras_carried": {r["cameras"]: {"per_frame": BESU_GAS_PER_MINUTE // r["per_frame"],
                                                    "per_header": BESU_GAS_PER_MINUTE // r["per_header"],
                                                    "batch": int(BESU_GAS_PER_MINUTE // r["batch"])} for r in rows}},
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
