"""`frameledger monitor`: print every contract event as JSON lines (see monitor/scanner.py)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path


def cmd_monitor(args: argparse.Namespace) -> int:
    import requests
    from web3.exceptions import Web3Exception

    from ..chain.client import connect
    from ..chain.reverts import ContractRevert
    from .scanner import Monitor, MonitorSettings, ReorgTooDeep
    from .webhooks import DeliveryFailed, Webhooks
    from .ws import Subscription

    try:
        record = json.loads(Path(args.deployment).read_text())
        contracts = {name: c["address"] for name, c in record["contracts"].items()}
        start = args.from_block if args.from_block is not None else min(c["blockNumber"] for c in record["contracts"].values())
        w3 = connect(args.rpc)
    except (OSError, ValueError, KeyError, ConnectionError) as exc:
        print(f"frameledger monitor: {exc}", file=sys.stderr)
        return 2
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    if args.webhook and not os.environ.get("FRAMELEDGER_WEBHOOK_SECRET"):
        print("frameledger monitor: --webhook needs FRAMELEDGER_WEBHOOK_SECRET (the HMAC key)", file=sys.stderr)
        return 2
    hooks = Webhooks(args.webhook, os.environ["FRAMELEDGER_WEBHOOK_SECRET"].encode()) if args.webhook else None
    out = open(args.out, "a+") if args.out != "-" else sys.stdout
    try:
        settings = MonitorSettings(confirmations=args.confirmations, max_blocks=args.max_blocks, window=args.window)
        monitor = Monitor(w3, contracts, Path(args.checkpoint), out, start, settings, resumable=out is not sys.stdout,
                          deliver=hooks.deliver if hooks else None, reactions=not args.no_reactions)
        sub = Subscription(args.ws, monitor.addresses) if args.ws else None
        try:
            if sub is not None and not args.once:
                sub.open()  # when it fails, Subscription.wait polls and tries again
            monitor.run(poll_s=args.poll, once=args.once, should_stop=lambda: stop["now"],
                        wake=sub.wait if sub is not None else None)
        finally:
            if sub is not None:
                sub.close()
    except (ReorgTooDeep, DeliveryFailed, ValueError, OSError, requests.exceptions.RequestException, Web3Exception,
            ContractRevert) as exc:  # ContractRevert: a reaction's read (getBlock, batchAt) refused
        print(f"frameledger monitor: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if out is not sys.stdout:
            out.close()
        if hooks:
            hooks.close()
    return 0


def add_monitor_commands(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("monitor", help="follow every contract event (JSON lines, checkpointed, reorg-safe)")
    m.add_argument("--rpc", required=True, help="JSON-RPC URL of a chain node")
    m.add_argument("--deployment", required=True, help="deployment record (chain/deployments/<chainId>.json)")
    m.add_argument("--checkpoint", required=True, help="checkpoint file (created on first run)")
    m.add_argument("--out", default="-", help="JSON-lines file (exactly once across restarts) or - for stdout")
    m.add_argument("--confirmations", type=int, default=2, help="blocks behind the head to wait (default 2)")
    m.add_argument("--max-blocks", type=int, default=1000, help="blocks per eth_getLogs request (default 1000)")
    m.add_argument("--window", type=int, default=64, help="block hashes kept for reorg handling (default 64)")
    m.add_argument("--poll", type=float, default=1.0, help="seconds between polls when caught up")
    m.add_argument("--from-block", type=int, default=None, help="first block (default: the deployment's)")
    m.add_argument("--once", action="store_true", help="scan up to the confirmed head, then exit")
    m.add_argument("--webhook", action="append", default=[],
                   help="POST every event here, HMAC-signed with $FRAMELEDGER_WEBHOOK_SECRET (repeatable)")
    m.add_argument("--ws", default=None, metavar="URL",
                   help="also subscribe (eth_subscribe newHeads/logs) at this WebSocket URL and step on each "
                        "notification; polling stays the fallback (Besu: ws://host:8546, Anvil: the HTTP port)")
    m.add_argument("--no-reactions", action="store_true",
                   help="events only: no notification lines for disputes, risk warnings, revocations")
    m.set_defaults(func=cmd_monitor)
