"""Gas of the ledger's transactions on Anvil, against references measured in the same run.

References: a plain value transfer measured in the same run (the floor of any transaction), and
the computed cost of writing the header's nine words into fresh storage slots (21,000 + 9 x 22,100,
the EIP-2929/3529 price of a cold zero-to-nonzero SSTORE), so the ratios say what the chain rules
(link, height, time, quorum, events) add on top of bare storage.

    python -m bench gas            # writes bench/results/gas.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from offchain.chain.client import Signer, connect
from offchain.chain.deployer import deploy
from offchain.chain.devchain import DevChain
from offchain.chain.ledger import ConsortiumClient, VideoLedgerClient
from offchain.core.block import FrameRef, build_block, camera_id
from offchain.tables import render_table

RESULTS = Path(__file__).resolve().parent / "results" / "gas.json"
WINDOW = 60_000


def _frames(start: int, n: int, seq0: int) -> list[FrameRef]:
    return [FrameRef.of_bytes(seq0 + i, start + i * 40, hashlib.sha256(b"%d" % (seq0 + i)).digest(), i % 50 == 0)
            for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    with DevChain(accounts=12) as chain:
        w3 = connect(chain.rpc_url)
        keys = chain.private_keys
        dep = deploy(w3, keys, out_dir=None)
        gov = ConsortiumClient(Signer(w3, keys[0]), dep.consortium)
        ConsortiumClient(Signer(w3, keys[1]), dep.consortium).register_camera("10.0.0.1", b"\x11" * 32, b"\x01" * 32)
        gov.seal_genesis()
        nodes = [VideoLedgerClient(Signer(w3, keys[i]), dep.video_ledger) for i in (3, 4, 5)]
        cam = camera_id("10.0.0.1")

        sender = Signer(w3, keys[6])
        tx = {"to": Signer(w3, keys[7]).address, "value": 1, "from": sender.address, "nonce": w3.eth.get_transaction_count(sender.address),
              "chainId": w3.eth.chain_id, "gas": 21_000, "maxFeePerGas": w3.eth.gas_price * 2, "maxPriorityFeePerGas": 1}
        transfer = w3.eth.wait_for_transaction_receipt(
            w3.eth.send_raw_transaction(sender.account.sign_transaction(tx).raw_transaction))["gasUsed"]

        anchor, attest_open, attest_final = [], [], []
        prev = gov.head_block(cam)[0]
        for h in range(1, 11):
            start = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW + (h - 1) * WINDOW  # in the past: anchor refuses future windows
            blk = build_block(camera_ip="10.0.0.1", height=h, prev_hash=prev, window_start_ms=start, window_end_ms=start + WINDOW,
                              frames=_frames(start, 1500, (h - 1) * 1500), proposer=nodes[h % 3].signer.address)
            anchor.append(nodes[h % 3].anchor(blk.header).gas_used)
            others = [n for i, n in enumerate(nodes) if i != h % 3]
            attest_final.append(others[0].attest(blk.hash).gas_used)  # reaches quorum 2
            attest_open.append(others[1].attest(blk.hash).gas_used)   # beyond quorum
            prev = blk.hash

    # Computed, not measured: 9 header words into fresh slots + the transaction floor.
    raw_storage = 21_000 + 9 * 22_100
    rows = [
        ["anchor (first block of a camera)", anchor[0]],
        ["anchor (next blocks, median)", sorted(anchor[1:])[len(anchor[1:]) // 2]],
        ["attest reaching quorum (finalises)", sorted(attest_final)[len(attest_final) // 2]],
        ["attest beyond quorum", sorted(attest_open)[len(attest_open) // 2]],
        ["deploy Consortium", dep.record["gas"]["deploy Consortium"]],
        ["deploy VideoLedger", dep.record["gas"]["deploy VideoLedger"]],
    ]
    table = [[name, f"{g:,}", f"{g / transfer:.1f}x", f"{g / raw_storage:.2f}x"] for name, g in rows]
    print(render_table(["transaction", "gas", "vs transfer", "vs 9 fresh SSTOREs (computed)"], table,
                       title=f"Gas on Anvil (1,500-frame blocks; transfer = {transfer:,} gas, raw header storage = {raw_storage:,} gas)"))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"transfer": transfer, "raw_header_storage": raw_storage,
                                   **{name: g for name, g in rows}}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
