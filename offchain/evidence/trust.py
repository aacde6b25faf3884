"""Which consortium deployment a verifier trusts (S6): from its own configuration, never the bundle.

A verdict is relative to a trusted deployment (chain id + VideoLedger, optionally its Consortium).
A forger can deploy the committed contracts on the same chain, register the same camera IP and
anchor whatever they like; only the verifier's own list of deployments tells that ledger from the
consortium's. The list comes from, in order of precedence:

1. ``--ledger 0xADDR``: one VideoLedger, on whatever chain the RPC answers for;
2. ``--deployment FILE``: a deployment record (``chain/deployments/<chainId>.json`` format);
3. ``--trust FILE``: a trust list, in the spirit of C2PA's trust lists::

       {"format": "frameledger.trust/1",
        "deployments": [{"name": "acme", "chainId": 31337, "VideoLedger": "0x…", "Consortium": "0x…",
                         "BatchLedger": "0x…"}]}          (BatchLedger optional: batch mode)

4. the default, ``<deployments dir>/<chainId>.json`` for the chain at ``--rpc``, where the
   deployments dir is ``$FRAMELEDGER_DEPLOYMENTS_DIR`` or the repository's ``chain/deployments``.

`decide_trust` is the pure rule; loading files is the thin shell around it. Without any trusted
deployment for the chain the answer is ``untrusted`` (``bundle.contract.untrusted``), never
``verified``. The JavaScript verifier applies the same rules with the same flags.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from eth_utils import is_address, to_checksum_address

from ..paths import DEPLOYMENTS_DIR

__all__ = [
    "TRUST_FORMAT",
    "TrustDecision",
    "TrustError",
    "TrustList",
    "TrustOutcome",
    "TrustedDeployment",
    "decide_trust",
    "default_deployment_path",
    "load_trust",
]

TRUST_FORMAT = "frameledger.trust/1"
MAX_TRUST_FILE_BYTES = 1 << 20
MAX_TRUSTED_DEPLOYMENTS = 1000


class TrustError(ValueError):
    """A trust source the operator named cannot be read: a usage error (exit 2), not a verdict."""


@dataclass(frozen=True)
class TrustedDeployment:
    video_ledger: str                  # checksum address
    chain_id: int | None = None        # None: whatever chain the RPC answers for (--ledger)
    consortium: str | None = None      # when known, VideoLedger.consortium() must equal it
    # The deployment's BatchLedger (batch mode); None for records and trust files made before it
    # existed, which then trust per-header evidence only.
    batch_ledger: str | None = None
    name: str = ""
    source: str = ""                   # where the operator configured it (flag or file)


@dataclass(frozen=True)
class TrustList:
    deployments: tuple[TrustedDeployment, ...] = ()

    def for_chain(self, chain_id: int) -> list[TrustedDeployment]:
        return [d for d in self.deployments if d.chain_id is None or d.chain_id == chain_id]


class TrustOutcome(str, Enum):
    TRUSTED = "trusted"        # the bundle's ledger is a trusted one
    MISMATCH = "mismatch"      # the chain has trusted deployments and the bundle's ledger is none of them
    UNTRUSTED = "untrusted"    # nothing is trusted on this chain


@dataclass(frozen=True)
class TrustDecision:
    outcome: TrustOutcome
    ledger: str                        # the VideoLedger to verify against
    consortium: str | None             # the Consortium it must point at, when known
    message: str
    batch_ledger: str | None = None    # the trusted deployment's BatchLedger (batch mode), when it has one


def decide_trust(trust: TrustList, chain_id: int, bundle_ledger: str | None) -> TrustDecision:
    """The pure rule: the bundle's ledger must be one the verifier trusts for this chain."""
    trusted = trust.for_chain(chain_id)
    named = to_checksum_address(bundle_ledger) if bundle_ledger and is_address(bundle_ledger) else None
    if not trusted:
        return TrustDecision(TrustOutcome.UNTRUSTED, named or "", None,
                             f"no trusted deployment for chain {chain_id}; checked against the ledger the bundle "
                             f"names ({named}) only")
    match = next((d for d in trusted if d.video_ledger == named), None)
    if match is not None:
        return TrustDecision(TrustOutcome.TRUSTED, match.video_ledger, match.consortium,
                             f"trusted ledger {match.video_ledger} ({match.name or match.source})", match.batch_ledger)
    first = trusted[0]
    return TrustDecision(TrustOutcome.MISMATCH, first.video_ledger, first.consortium,
                         f"bundle names {named}, trusted ledger is {first.video_ledger} ({first.name or first.source})",
                         first.batch_ledger)


# --------------------------------------------------------------------------- loading (the shell)


def deployments_dir() -> Path:
    env = os.environ.get("FRAMELEDGER_DEPLOYMENTS_DIR")
    return Path(env) if env else DEPLOYMENTS_DIR


def default_deployment_path(chain_id: int) -> Path:
    return deployments_dir() / f"{int(chain_id)}.json"


def _address(value: Any, what: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise TrustError(f"{what} is not an address: {value!r}")
    return to_checksum_address(value)


def _read_json(path: Path, what: str) -> Any:
    try:
        if path.stat().st_size > MAX_TRUST_FILE_BYTES:
            raise TrustError(f"{what} {path} is larger than {MAX_TRUST_FILE_BYTES} bytes")
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TrustError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrustError(f"{what} {path} cannot be read: {exc}") from None


def deployment_from_record(rec: Any, source: str) -> TrustedDeployment:
    """A deployment record (offchain/chain/deployer.py) as a trusted deployment."""
    try:
        contracts = rec["contracts"]
        return TrustedDeployment(
            video_ledger=_address(contracts["VideoLedger"]["address"], "VideoLedger"),
            consortium=_address(contracts["Consortium"]["address"], "Consortium"),
            batch_ledger=(_address(contracts["BatchLedger"]["address"], "BatchLedger")
                          if "BatchLedger" in contracts else None),
            chain_id=int(rec["chainId"]), name=str(rec.get("name") or ""), source=source)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, TrustError):
            raise
        raise TrustError(f"{source} is not a deployment record: {exc!r}") from None


def _trust_file(path: Path) -> list[TrustedDeployment]:
    doc = _read_json(path, "trust file")
    if not isinstance(doc, dict) or doc.get("format") != TRUST_FORMAT or not isinstance(doc.get("deployments"), list):
        raise TrustError(f"{path} is not a {TRUST_FORMAT} trust list")
    if len(doc["deployments"]) > MAX_TRUSTED_DEPLOYMENTS:
        raise TrustError(f"{path} lists more than {MAX_TRUSTED_DEPLOYMENTS} deployments")
    out = []
    for i, d in enumerate(doc["deployments"]):
        if not isinstance(d, dict) or isinstance(d.get("chainId"), bool) or not isinstance(d.get("chainId"), int):
            raise TrustError(f"{path}: deployment {i} needs an integer chainId")
        out.append(TrustedDeployment(
            video_ledger=_address(d.get("VideoLedger"), f"{path}: deployment {i} VideoLedger"),
            consortium=_address(d["Consortium"], f"{path}: deployment {i} Consortium") if d.get("Consortium") else None,
            batch_ledger=(_address(d["BatchLedger"], f"{path}: deployment {i} BatchLedger")
                          if d.get("BatchLedger") else None),
            chain_id=d["chainId"], name=str(d.get("name") or ""), source=str(path)))
    return out


def load_trust(chain_id: int, *, ledger: str | None = None, deployment: str | os.PathLike[str] | None = None,
               trust_file: str | os.PathLike[str] | None = None) -> TrustList:
    """The trust list the operator configured; the default deployment record when nothing is
    named. Raises TrustError for a named source that cannot be read (a missing *default* record
    is not an error: it means nothing is trusted)."""
    if ledger is not None:
        return TrustList((TrustedDeployment(video_ledger=_address(ledger, "--ledger"), source="--ledger"),))
    if deployment is not None:
        path = Path(deployment)
        return TrustList((deployment_from_record(_read_json(path, "deployment record"), str(path)),))
    if trust_file is not None:
        return TrustList(tuple(_trust_file(Path(trust_file))))
    path = default_deployment_path(chain_id)
    if not path.is_file():
        return TrustList()
    return TrustList((deployment_from_record(_read_json(path, "deployment record"), str(path)),))
