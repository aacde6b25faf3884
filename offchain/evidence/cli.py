"""`frameledger extract | verify | prove`: the evidence commands.

Registered on the main parser by ``add_evidence_commands(subparsers)`` (offchain/cli.py). Each
command prints a readable table (or JSON with ``--json``) and exits with a code a script can test
(`offchain.evidence.report.EXIT_CODES`, the same in `scripts/verify_bundle.js`):

    0  verified                       (prove: the proof holds on chain)
    3  verified with declared gaps
    1  failed                         (prove: no proof, or it does not hold)
    4  untrusted: no trusted consortium deployment for the chain (never "verified")
    5  partially verified: some picture shown could not be bound by this verifier
    2  unusable input: camera or time spelling, missing store directory, unreachable chain,
       an unreadable trust source, no trusted deployment to extract from (argparse uses 2 for
       usage errors too)

The trusted deployment comes from ``--ledger``, ``--deployment``, ``--trust`` or the default
``chain/deployments/<chainId>.json`` (``$FRAMELEDGER_DEPLOYMENTS_DIR``): `offchain.evidence.trust`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXIT_INPUT = 2
DEFAULT_RPC = "http://127.0.0.1:8545"


class _InputError(Exception):
    pass


def add_evidence_commands(subparsers: Any) -> None:
    """Add `extract`, `verify` and `prove` to a `parser.add_subparsers()` object."""
    ex = subparsers.add_parser(
        "extract", help="extract a camera's time range, verify every frame against the chain, write clips + bundle",
        description="Find the anchored blocks covering the range, fetch manifests and frames from the stores, verify "
                    "them against the chain, restore the video (MP4, original packets) and write a report and an "
                    "evidence bundle.")
    _camera_args(ex)
    ex.add_argument("--from", dest="from_", required=True, metavar="TIME", help="start (ISO 8601 or epoch ms), inclusive")
    ex.add_argument("--to", required=True, metavar="TIME", help="end (ISO 8601 or epoch ms), exclusive")
    ex.add_argument("--out", metavar="DIR", help="output directory (default: ./evidence-<camera>-<from>)")
    ex.add_argument("--probe", action="store_true", help="also decode every clip end to end")
    ex.add_argument("--no-bundle", action="store_true", help="write clips and report only")
    ex.add_argument("--bundle-only", action="store_true",
                    help="leave the clips inside the bundle (by default a playable copy of each is also written)")
    ex.add_argument("--anchoring", choices=("header", "batch"), default=None,
                    help="read the chain in this mode (default: the one the chain records for the range)")
    _chain_args(ex)
    _store_args(ex)
    ex.set_defaults(func=cmd_extract)

    ve = subparsers.add_parser(
        "verify", help="re-check an evidence bundle with nothing but chain access",
        description="Verify an evidence bundle (zip or unzipped directory) against the chain: headers, manifests, "
                    "multiproofs (also on chain), clip packets and raw frames. No node, no store.")
    ve.add_argument("bundle", help="evidence bundle (.zip) or the directory it was unzipped into")
    ve.add_argument("--rpc", default=os.environ.get("FRAMELEDGER_RPC", DEFAULT_RPC), help="JSON-RPC URL")
    _trust_args(ve)
    ve.add_argument("--probe", action="store_true", help="also decode every byte-exact clip end to end")
    ve.add_argument("--json", action="store_true", help="print the report as JSON")
    ve.set_defaults(func=cmd_verify)

    pr = subparsers.add_parser(
        "prove", help="prove one frame: its block, Merkle proof and anchored root; checked with verifyFrame on chain")
    _camera_args(pr)
    pr.add_argument("--at", required=True, metavar="TIME", help="instant (ISO 8601 or epoch ms)")
    pr.add_argument("--out", metavar="DIR", help="write proof.json and the frame's bytes here")
    _chain_args(pr)
    _store_args(pr)
    pr.set_defaults(func=cmd_prove)


def _camera_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--camera", required=True, help="camera IP as registered, or its 0x camera id")


def _trust_args(p: argparse.ArgumentParser) -> None:
    pin = p.add_mutually_exclusive_group()
    pin.add_argument("--ledger", metavar="ADDRESS", help="the VideoLedger address to trust")
    pin.add_argument("--deployment", metavar="FILE", help="a deployment record whose contracts to trust")
    pin.add_argument("--trust", metavar="FILE", help="a trust list (frameledger.trust/1) of deployments per chain id")
    p.epilog = ("Without --ledger/--deployment/--trust the trusted deployment is chain/deployments/<chainId>.json "
                "($FRAMELEDGER_DEPLOYMENTS_DIR); with none, the verdict is 'untrusted' (exit 4).")


def _chain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rpc", default=os.environ.get("FRAMELEDGER_RPC", DEFAULT_RPC), help="JSON-RPC URL")
    _trust_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _store_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--store", action="append", default=[], metavar="DIR",
                   help="a node's local content store directory (repeatable; tried in order)")
    p.add_argument("--ipfs", action="append", default=[], metavar="URL",
                   help="an IPFS node's Kubo RPC API, e.g. http://127.0.0.1:5001 (repeatable)")
    p.add_argument("--keystore", metavar="FILE", help="a party's account keystore: session frames a node stored "
                   "sealed open with it (docs/ENCRYPTION.md); password from --password-file or the environment")
    p.add_argument("--password-file", metavar="FILE", help="the keystore's password (first line)")
    p.add_argument("--seal-index", metavar="FILE", help="for --ipfs stores: the node's sealed.sqlite (plaintext "
                   "CID -> envelope); a --store DIR holding one uses its own")
    p.set_defaults(stores_required=required)


# --------------------------------------------------------------------------- plumbing


def _connect(rpc: str):
    from ..chain.client import connect

    try:
        return connect(rpc)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, bad URL, timeouts
        raise _InputError(f"cannot reach the chain at {rpc}: {exc}") from exc


def _trust_list(args: argparse.Namespace, chain_id: int):
    from .trust import TrustError, load_trust

    try:
        return load_trust(chain_id, ledger=args.ledger, deployment=args.deployment, trust_file=args.trust)
    except TrustError as exc:
        raise _InputError(str(exc)) from None


def _ledger_address(args: argparse.Namespace, w3) -> str:
    """The ledger to extract from or prove against: the first trusted one for this chain."""
    return _trusted_deployment(args, w3).video_ledger


def _trusted_deployment(args: argparse.Namespace, w3):
    from .trust import default_deployment_path

    chain_id = int(w3.eth.chain_id)
    trusted = _trust_list(args, chain_id).for_chain(chain_id)
    if not trusted:
        raise _InputError(f"no trusted deployment for chain {chain_id} (no {default_deployment_path(chain_id)}); "
                          "pass --ledger, --deployment or --trust")
    return trusted[0]


def _party_key(args: argparse.Namespace) -> bytes | None:
    """The private key of ``--keystore`` (for sealed session frames), or None."""
    if not getattr(args, "keystore", None):
        return None
    from ..chain.keyfile import KeyfileError, PasswordSource, load_private_key

    try:
        key = load_private_key(args.keystore, PasswordSource(file=args.password_file, prompt=not getattr(args, "json", False)))
    except KeyfileError as exc:
        raise _InputError(str(exc)) from None
    return bytes.fromhex(key.removeprefix("0x"))


def _stores(args: argparse.Namespace) -> list:
    from ..store import KuboStore, LocalStore

    from ..store.sealed import INDEX_NAME, open_party_store

    key = _party_key(args)
    stores: list = []
    for d in args.store:
        if not Path(d).is_dir():
            raise _InputError(f"store directory {d} does not exist")
        try:
            store = LocalStore(d, fsync="none")  # read-only use: fsync policy is irrelevant
            # a node's store with sealed session frames (S5): read through its index, opened with the party's key
            stores.append(open_party_store(store, Path(d) / INDEX_NAME, key) if (Path(d) / INDEX_NAME).is_file()
                          else store)
        except Exception as exc:  # noqa: BLE001 - StoreUnavailable (foreign layout, unreadable)
            raise _InputError(f"cannot open store {d}: {exc}") from exc
    for url in args.ipfs:
        kubo = KuboStore(url)
        stores.append(open_party_store(kubo, Path(args.seal_index), key) if getattr(args, "seal_index", None) else kubo)
    if not stores and args.stores_required:
        raise _InputError("give at least one --store DIR or --ipfs URL to fetch frames from")
    return stores


def _run(fn, args: argparse.Namespace) -> int:
    from .extract import EvidenceError
    from .prove import ProofError

    try:
        return fn(args)
    except ProofError as exc:  # a well-formed question with no provable answer
        print(f"no proof: {exc}", file=sys.stderr)
        return 1
    except (_InputError, EvidenceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 - e.g. the chain going away mid-command: say so, no traceback
        log.debug("command failed", exc_info=True)
        print(f"error: {type(exc).__name__}: {exc} (run with --log-level debug for details)", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------- commands


def cmd_extract(args: argparse.Namespace) -> int:
    return _run(_extract, args)


def _extract(args: argparse.Namespace) -> int:
    from .extract import anchor_source, extract, parse_camera, parse_time

    cam, ip = parse_camera(args.camera)
    from_ms, to_ms = parse_time(args.from_), parse_time(args.to)
    out = Path(args.out) if args.out else Path.cwd() / f"evidence-{(ip or cam.hex()[:12]).replace(':', '_')}-{from_ms}"
    stores = _stores(args)
    w3 = _connect(args.rpc)
    dep = _trusted_deployment(args, w3)
    reader = anchor_source(w3, dep.video_ledger, dep.batch_ledger, cam, from_ms, to_ms, stores,
                           getattr(args, "anchoring", None))
    from tqdm import tqdm

    from .extract import PHASES

    phases = [p for p in PHASES if args.probe or p != "probe"]
    with tqdm(total=len(phases), desc="extract", unit="phase", leave=False, disable=args.json) as bar:
        def step(name: str) -> None:
            bar.set_postfix_str(f"{name} done")
            bar.update(1)

        try:
            result = extract(cam, from_ms, to_ms, reader, stores, out, probe=args.probe, bundle=not args.no_bundle,
                             progress=step)
        finally:
            for s in stores:
                s.close()
    # extract writes a one-pass clip once, into the bundle; the playable copy beside it is this command's
    clips = [str(c) if args.bundle_only or c.member is None else str(c.write_to(result.out_dir / Path(c.member).name))
             for c in result.clips]
    if args.json:
        doc = result.report.to_json()
        doc["outputs"] = {"dir": str(result.out_dir), "bundle": str(result.bundle_path) if result.bundle_path else None,
                          "clips": clips, "report": str(result.report_json)}
        print(json.dumps(doc, indent=2))
    else:
        print(result.report.render_text())
        print(f"clips    : {', '.join(clips) or '-'}")
        print(f"bundle   : {result.bundle_path or '-'}")
        print(f"report   : {result.report_json}  {result.report_txt}")
    return result.report.exit_code


def cmd_verify(args: argparse.Namespace) -> int:
    return _run(_verify, args)


def _verify(args: argparse.Namespace) -> int:
    from .bundle import verify_bundle
    from .trust import TrustError

    trust = None
    if args.ledger or args.deployment or args.trust:
        trust = _trust_list(args, 0)  # named sources: chain id is only needed for the default
    try:
        report = verify_bundle(args.bundle, args.rpc, trust=trust, probe=args.probe)
    except TrustError as exc:
        raise _InputError(str(exc)) from None
    if args.json:
        print(report.dumps())
    else:
        print(report.render_text())
    return report.exit_code


def cmd_prove(args: argparse.Namespace) -> int:
    return _run(_prove, args)


def _prove(args: argparse.Namespace) -> int:
    from .extract import anchor_source, parse_camera, parse_time
    from .prove import prove

    stores = _stores(args)
    w3 = _connect(args.rpc)
    dep = _trusted_deployment(args, w3)
    cam, _ = parse_camera(args.camera)
    at = parse_time(args.at)
    reader = anchor_source(w3, dep.video_ledger, dep.batch_ledger, cam, at, at + 1, stores)
    try:
        proof = prove(args.camera, args.at, reader, stores)
    finally:
        for s in stores:
            s.close()
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "proof.json").write_text(proof.dumps())
        if proof.data is not None:
            (out / f"frame-{proof.frame.seq}.h264").write_bytes(proof.data)
    print(proof.dumps() if args.json else proof.render_text())
    return 0 if proof.ok else 1
