"""The `frameledger` command. Subcommands are imported where they are registered or run, so
one command does not load every other's dependencies (web3, PyAV, the node)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from .logs import setup_logging


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="frameledger-demo-"))
    print(f"work dir   : {work}")
    summary = run_demo(work, window_ms=args.window * 1000, speed=args.speed, anchoring=args.anchoring)
    ok = bool(summary["passed"])
    print("\nDEMO " + ("PASSED: every window anchored and final, every block verified, no dispute, nothing missing that "
                       "a node held, every frame acknowledged but those the faults withheld; the intruder left nothing; "
                       "the evidence verified; the signing session completed"
                       if ok else "FAILED: " + "; ".join(summary["failed_checks"])
                       + f" (the Checks table above; node logs in {work})"))
    return 0 if ok else 1


def cmd_node(args: argparse.Namespace) -> int:
    """Run a node; bad configuration or an unusable environment is one line, not a traceback."""
    from .chain.reverts import ContractRevert
    from .node.config import ConfigError, NodeConfig
    from .node.main import run

    if not args.config:
        print("error: `frameledger node` runs a node with --config FILE, or use add|remove|list|init (see --help)",
              file=sys.stderr)
        return 2
    try:
        NodeConfig.load(args.config)  # the usual mistakes, before any port or thread exists
        return run(args.config)
    except (ConfigError, ContractRevert, ConnectionError) as exc:
        print(f"error: node: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"error: node: {exc.strerror or exc}{' (' + str(exc.filename) + ')' if exc.filename else ''}",
              file=sys.stderr)
    except (KeyError, ValueError) as exc:
        print(f"error: node: unusable deployment record or configuration ({type(exc).__name__}: {exc})", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="frameledger", description="Tamper-evident video evidence on a consortium chain")
    p.add_argument("--log-level", default=None, help="debug, info, warning (default: warning; env FRAMELEDGER_LOG_LEVEL)")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole pipeline on the embedded defaults")
    demo.add_argument("--work-dir", help="where node stores and logs go (default: a new temp dir)")
    demo.add_argument("--window", type=int, default=60, help="block window in seconds (default 60)")
    demo.add_argument("--speed", type=float, default=8.0, help="camera replay speed (default 8x real time)")
    demo.add_argument("--anchoring", choices=("batch", "header"), default="batch",
                      help="batch: one BatchLedger batch per window (default); header: VideoLedger per camera")
    demo.set_defaults(func=cmd_demo)

    from .camera.cli import add_camera_commands

    add_camera_commands(sub)

    from .evidence.cli import add_evidence_commands

    add_evidence_commands(sub)

    from .monitor.cli import add_monitor_commands

    add_monitor_commands(sub)

    node = sub.add_parser("node", help="run one consortium node (--config FILE); add, remove, list, init nodes")
    node.add_argument("--config", help="run the node configured in this TOML file (see offchain/node/config.py)")
    node.set_defaults(func=cmd_node)

    from .ops.cli import add_ops_commands

    add_ops_commands(sub, node_parser=node, camera_parser=sub.choices["camera"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
