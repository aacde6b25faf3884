"""Brownie deployment of FrameLedger: the same contracts, plan and record as the Python deployer.

    brownie run scripts/deploy.py --network <net>      (or: scripts/brownie_run.sh --network <net>)

Deploys contracts/Consortium.sol and contracts/VideoLedger.sol (compiled by Brownie with the
settings of scripts/compile.js, see brownie-config.yaml), then configures them from the plan
chain/consortium.json exactly like offchain/chain/deployer.py: the founder (account 0) deploys
and governs; the admission threshold is set if the plan's differs from the default 1; each member
applies with `applyForMembership(role, parent, name)` from its own account and its parent
confirms with `confirm(applicant)`; nodes are registered with `addNode(node, operatedBy)`; the
quorum is set if it is not 1. VideoLedger gets the plan's `maxFutureMs`/`maxWindowMs` (defaults
600000 and 3600000, as in the Python deployer); BatchLedger (batch mode) gets the same limits. The record goes to chain/deployments/<chainId>.json (or
$FRAMELEDGER_DEPLOYMENTS_DIR/<chainId>.json) with "tool": "brownie".

Accounts are the plan's indices into Brownie's `accounts`: the node's unlocked accounts on a dev
chain (Anvil). For a chain without unlocked accounts, set FRAMELEDGER_PRIVATE_KEYS to a
comma-separated list of private keys (index 0 first); they are added with `accounts.add`.
Environment: FRAMELEDGER_PLAN (another plan file), FRAMELEDGER_DEPLOYMENTS_DIR (output folder).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from brownie import BatchLedger, Consortium, VideoLedger, accounts, network, web3

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PLAN = REPO_ROOT / "chain" / "consortium.json"
DEFAULT_DEPLOYMENTS_DIR = REPO_ROOT / "chain" / "deployments"

# Consortium.Role, in declaration order (None is "not a member").
ROLES = ("None", "Authority", "Operator", "Viewer")


def role_index(name: str) -> int:
    for i, r in enumerate(ROLES):
        if r.lower() == str(name).strip().lower() and i > 0:
            return i
    raise ValueError(f"unknown role {name!r}; expected one of {ROLES[1:]}")


def plan_path() -> Path:
    return Path(os.environ.get("FRAMELEDGER_PLAN") or DEFAULT_PLAN).resolve()


def deployments_dir() -> Path:
    return Path(os.environ.get("FRAMELEDGER_DEPLOYMENTS_DIR") or DEFAULT_DEPLOYMENTS_DIR)


def plan_label(path: Path) -> str:
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def signers(count: int) -> list:
    keys = [k.strip() for k in os.environ.get("FRAMELEDGER_PRIVATE_KEYS", "").split(",") if k.strip()]
    if keys:
        return [accounts.add(k) for k in keys]
    if len(accounts) < count:
        raise SystemExit(
            f"the plan uses {count} accounts but network {network.show_active()!r} has "
            f"{len(accounts)} unlocked; set FRAMELEDGER_PRIVATE_KEYS"
        )
    return list(accounts)


def _ok(tx, what: str):
    if tx.status != 1:
        raise SystemExit(f"{what} failed: {tx.txid}")
    return tx


def main() -> dict:
    path = plan_path()
    plan = json.loads(path.read_text())
    used = [0]
    used += [m["account"] for m in plan.get("members", [])] + [m["parent"] for m in plan.get("members", [])]
    used += [n["account"] for n in plan.get("nodes", [])] + [n["operatedBy"] for n in plan.get("nodes", [])]
    acct = signers(max(used) + 1)
    founder = acct[0]
    gas: dict[str, int] = {}

    consortium = Consortium.deploy(founder.address, plan["founderName"], {"from": founder})
    tx_c = _ok(consortium.tx, "deploy Consortium")
    gas["deploy Consortium"] = tx_c.gas_used
    # VideoLedger's time bounds, with the same defaults as offchain/chain/deployer.py
    max_future_ms = int(plan.get("maxFutureMs", 600_000))
    max_window_ms = int(plan.get("maxWindowMs", 3_600_000))
    ledger = VideoLedger.deploy(consortium.address, max_future_ms, max_window_ms, {"from": founder})
    tx_l = _ok(ledger.tx, "deploy VideoLedger")
    gas["deploy VideoLedger"] = tx_l.gas_used
    batch = BatchLedger.deploy(consortium.address, max_future_ms, max_window_ms, {"from": founder})
    tx_b = _ok(batch.tx, "deploy BatchLedger")
    gas["deploy BatchLedger"] = tx_b.gas_used

    threshold = int(plan.get("admissionThreshold", 1))
    if threshold != 1:
        _ok(consortium.setAdmissionThreshold(threshold, {"from": founder}), "setAdmissionThreshold")

    members = [{"address": founder.address, "role": "Authority", "name": plan["founderName"]}]
    for m in plan.get("members", []):
        applicant, parent = acct[m["account"]], acct[m["parent"]]
        _ok(
            consortium.applyForMembership(role_index(m["role"]), parent.address, m["name"], {"from": applicant}),
            f"applyForMembership {m['name']}",
        )
        _ok(consortium.confirm(applicant.address, {"from": parent}), f"confirm {m['name']}")
        if not consortium.isMember(applicant.address):
            raise SystemExit(f"{m['name']} ({applicant.address}) was not admitted")
        members.append({"address": applicant.address, "role": m["role"], "name": m["name"]})

    nodes = []
    for n in plan.get("nodes", []):
        node, operator = acct[n["account"]], acct[n["operatedBy"]]
        _ok(consortium.addNode(node.address, operator.address, {"from": founder}), f"addNode {n['name']}")
        nodes.append({"address": node.address, "operatedBy": operator.address, "name": n["name"]})

    quorum = int(plan.get("quorum", 1))
    if quorum != 1:
        _ok(consortium.setQuorum(quorum, {"from": founder}), "setQuorum")

    compiler = Consortium._build["compiler"]
    record = {
        "chainId": web3.eth.chain_id,
        "deployer": founder.address,
        "deployedAt": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool": "brownie",
        "contracts": {
            "Consortium": {"address": consortium.address, "txHash": tx_c.txid, "blockNumber": tx_c.block_number},
            "VideoLedger": {"address": ledger.address, "txHash": tx_l.txid, "blockNumber": tx_l.block_number},
            "BatchLedger": {"address": batch.address, "txHash": tx_b.txid, "blockNumber": tx_b.block_number},
        },
        "compiler": {"version": str(compiler["version"]), "evmVersion": compiler["evm_version"]},
        "plan": plan_label(path),
        "members": members,
        "nodes": nodes,
        "quorum": quorum,
        "windowLimits": {"maxFutureMs": max_future_ms, "maxWindowMs": max_window_ms},
        "gas": gas,
    }
    out_dir = deployments_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{record['chainId']}.json"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"FrameLedger deployed on chain {record['chainId']}: Consortium {consortium.address}, "
          f"VideoLedger {ledger.address}, BatchLedger {batch.address}; record {out}")
    return record
