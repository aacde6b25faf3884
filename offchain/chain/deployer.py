"""Deploy and configure the contracts from a deployment plan (chain/consortium.json).

The brownie script (scripts/deploy.py) follows the same plan and writes the same record, so a
deployment made either way is read the same way by nodes and the API.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from web3 import Web3

from ..paths import DEFAULT_PLAN, DEPLOYMENTS_DIR
from .client import Signer, load_artifact
from .ledger import BatchLedgerClient, ConsortiumClient, Role, VideoLedgerClient

log = logging.getLogger(__name__)

# SigningSession limits when the plan has no "signingSession" entry (the contract caps them at 32/64).
SIGNING_DEFAULTS = {"maxParties": 8, "maxCameras": 16}


@dataclass
class Deployment:
    """Where the contracts are, as recorded in chain/deployments/<chainId>.json."""

    chain_id: int
    consortium: str
    video_ledger: str
    record: dict[str, Any]
    signing_session: str | None = None  # absent from records made before SigningSession existed
    batch_ledger: str | None = None     # absent from records made before BatchLedger existed

    @classmethod
    def load(cls, path: Path) -> "Deployment":
        return cls.from_record(json.loads(Path(path).read_text()))

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "Deployment":
        c = rec["contracts"]
        return cls(rec["chainId"], c["Consortium"]["address"], c["VideoLedger"]["address"], rec,
                   c.get("SigningSession", {}).get("address"), c.get("BatchLedger", {}).get("address"))

    def clients(self, signer: Signer) -> tuple[ConsortiumClient, VideoLedgerClient]:
        return ConsortiumClient(signer, self.consortium), VideoLedgerClient(signer, self.video_ledger)

    def batch_client(self, signer: Signer) -> BatchLedgerClient:
        """The BatchLedger of this deployment (LookupError for a record made before it existed)."""
        if self.batch_ledger is None:
            raise LookupError(f"deployment on chain {self.chain_id} has no BatchLedger; redeploy to use batch mode")
        return BatchLedgerClient(signer, self.batch_ledger)


# VideoLedger's time bounds when a plan names none: a window may end at most 10 minutes after the
# anchoring block's time (clock skew between cameras, nodes and chain, and a window still being
# filled) and last at most an hour (the node's default window is a minute).
DEFAULT_MAX_FUTURE_MS = 600_000
DEFAULT_MAX_WINDOW_MS = 3_600_000


def load_plan(path: Path | None = None) -> dict[str, Any]:
    plan: dict[str, Any] = json.loads(Path(path or DEFAULT_PLAN).read_text())
    return plan


def window_limits(plan: dict[str, Any]) -> tuple[int, int]:
    """(maxFutureMs, maxWindowMs) for VideoLedger's constructor, from the plan or the defaults."""
    return (int(plan.get("maxFutureMs", DEFAULT_MAX_FUTURE_MS)), int(plan.get("maxWindowMs", DEFAULT_MAX_WINDOW_MS)))


def deploy_contracts(
    w3: Web3,
    founder_key: str,
    plan: dict[str, Any] | None = None,
    out_dir: Path | None = DEPLOYMENTS_DIR,
    plan_name: str = "chain/consortium.json",
) -> Deployment:
    """Deploy the contracts with the founder's key alone and set the plan's admission threshold:
    what one party can do by itself. Members, nodes and the quorum then follow with the members'
    own keys (`frameledger member`, `node add`, `quorum set`)."""
    plan = plan or load_plan()
    founder = Signer(w3, founder_key)
    contracts, gas, extra = _deploy_contracts(founder, plan)
    threshold = int(plan.get("admissionThreshold", 1))
    if threshold != 1:
        ConsortiumClient(founder, contracts["Consortium"]["address"]).set_admission_threshold(threshold)
    members = [{"address": founder.address, "role": "Authority", "name": plan["founderName"]}]
    return _write(_record(w3, founder, contracts, plan_name, members, [], 1, gas, extra), out_dir)


def _deploy_contracts(founder: Signer, plan: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int], dict[str, Any]]:
    """Consortium, VideoLedger and BatchLedger (with the plan's window limits) and SigningSession, by the founder."""
    consortium_contract, tx_c = founder.deploy("Consortium", founder.address, plan["founderName"])
    max_future_ms, max_window_ms = window_limits(plan)
    ledger_contract, tx_l = founder.deploy("VideoLedger", consortium_contract.address, max_future_ms, max_window_ms)
    batch_contract, tx_b = founder.deploy("BatchLedger", consortium_contract.address, max_future_ms, max_window_ms)
    limits = {**SIGNING_DEFAULTS, **plan.get("signingSession", {})}
    session_contract, tx_s = founder.deploy(
        "SigningSession", ledger_contract.address, int(limits["maxParties"]), int(limits["maxCameras"]))
    gas = {"deploy Consortium": tx_c.gas_used, "deploy VideoLedger": tx_l.gas_used, "deploy SigningSession": tx_s.gas_used,
           "deploy BatchLedger": tx_b.gas_used}
    contracts = {
        "Consortium": {"address": consortium_contract.address, "txHash": tx_c.tx_hash, "blockNumber": tx_c.block_number},
        "VideoLedger": {"address": ledger_contract.address, "txHash": tx_l.tx_hash, "blockNumber": tx_l.block_number},
        "SigningSession": {"address": session_contract.address, "txHash": tx_s.tx_hash,
                           "blockNumber": tx_s.block_number, "maxParties": int(limits["maxParties"]),
                           "maxCameras": int(limits["maxCameras"])},
        "BatchLedger": {"address": batch_contract.address, "txHash": tx_b.tx_hash, "blockNumber": tx_b.block_number},
    }
    return contracts, gas, {"windowLimits": {"maxFutureMs": max_future_ms, "maxWindowMs": max_window_ms}}


def _record(w3: Web3, founder: Signer, contracts: dict[str, Any], plan_name: str, members: list[dict[str, Any]],
            nodes: list[dict[str, Any]], quorum: int, gas: dict[str, int], extra: dict[str, Any]) -> dict[str, Any]:
    art = load_artifact("Consortium")
    return {
        "chainId": w3.eth.chain_id,
        "deployer": founder.address,
        "deployedAt": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool": "frameledger",
        "contracts": contracts,
        "compiler": {"version": art["compiler"]["version"], "evmVersion": art["compiler"]["settings"]["evmVersion"]},
        "plan": plan_name,
        "members": members,
        "nodes": nodes,
        "quorum": quorum,
        **extra,
        "gas": gas,
    }


def _write(record: dict[str, Any], out_dir: Path | None) -> Deployment:
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{record['chainId']}.json").write_text(json.dumps(record, indent=2) + "\n")
    c = record["contracts"]
    log.info("deployed", extra={"consortium": c["Consortium"]["address"], "ledger": c["VideoLedger"]["address"],
                                "batchLedger": c["BatchLedger"]["address"]})
    return Deployment.from_record(record)


def deploy(
    w3: Web3,
    private_keys: list[str],
    plan: dict[str, Any] | None = None,
    out_dir: Path | None = DEPLOYMENTS_DIR,
    plan_name: str = "chain/consortium.json",
) -> Deployment:
    """Deploy Consortium, VideoLedger, BatchLedger and SigningSession, admit the plan's members, register its nodes and set
    the quorum. `private_keys[i]` is the plan's account i; account 0 deploys and governs."""
    plan = plan or load_plan()
    signers = [Signer(w3, k) for k in private_keys]
    founder = signers[0]
    contracts, gas, extra = _deploy_contracts(founder, plan)
    consortium = ConsortiumClient(founder, contracts["Consortium"]["address"])

    threshold = int(plan.get("admissionThreshold", 1))
    if threshold != 1:
        consortium.set_admission_threshold(threshold)
    members = [{"address": founder.address, "role": "Authority", "name": plan["founderName"]}]
    for m in plan.get("members", []):
        applicant = signers[m["account"]]
        parent = signers[m["parent"]]
        consortium.as_signer(applicant).apply(Role.parse(m["role"]), parent.address, m["name"])
        consortium.as_signer(parent).confirm(applicant.address)
        members.append({"address": applicant.address, "role": m["role"], "name": m["name"]})

    nodes = []
    for n in plan.get("nodes", []):
        node, operator = signers[n["account"]], signers[n["operatedBy"]]
        consortium.add_node(node.address, operator.address)
        nodes.append({"address": node.address, "operatedBy": operator.address, "name": n["name"]})
    quorum = int(plan.get("quorum", 1))
    if quorum != 1:
        consortium.set_quorum(quorum)

    return _write(_record(w3, founder, contracts, plan_name, members, nodes, quorum, gas, extra), out_dir)
