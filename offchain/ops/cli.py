"""The argparse layer of the operator commands: parse, call `admin` / `chainctl` / `nodeinit` /
`status`, print a table (or JSON with ``--json``). Every expected failure is one line on stderr
and a non-zero exit, never a traceback:

    0  done
    1  the chain refused (a contract revert, named) or the consortium is unhealthy (status)
    2  bad input or an unusable environment (no chain, no deployment record, wrong password, ...)

Each command imports what it runs inside its function: `frameledger --help` and a typo's error
must not pay for web3, PyAV and the node (no import circle is hidden that way: `offchain.ops`
imports nothing that imports it).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..tables import render_table
from .errors import OpsError

EXIT_REFUSED = 1
EXIT_INPUT = 2


# ------------------------------------------------------------------ plumbing
def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Map every expected failure to one line and an exit code."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from web3.exceptions import TimeExhausted, Web3Exception

        from ..camera.keystore import KeystoreError
        from ..chain.keyfile import KeyfileError
        from ..chain.reverts import ContractRevert
        from ..node.config import ConfigError

        try:
            return fn(args)
        except ContractRevert as exc:
            print(f"error: the chain refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except (OpsError, KeyfileError, KeystoreError, ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
        except (ConnectionError, TimeExhausted) as exc:
            print(f"error: chain: {exc}", file=sys.stderr)
        except Web3Exception as exc:
            print(f"error: chain: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
        except OSError as exc:
            print(f"error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}", file=sys.stderr)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
        return EXIT_INPUT

    return run


def emit(args: argparse.Namespace, data: Any, table: Callable[[Any], str]) -> int:
    print(json.dumps(data, indent=2, default=str) if getattr(args, "json", False) else table(data))
    return 0


def _short(addr: str | None) -> str:
    return "" if not addr else addr


def _password(args: argparse.Namespace):
    from ..chain.keyfile import PASSWORD_ENV, PasswordSource

    return PasswordSource(file=getattr(args, "password_file", None), env=getattr(args, "password_env", None) or PASSWORD_ENV)


def _signing_session(args: argparse.Namespace):
    from ..chain.keyfile import load_private_key
    from .session import open_session

    if not args.keystore:
        raise OpsError("this command signs a transaction: pass --keystore FILE (see `frameledger account --help`)")
    key = load_private_key(args.keystore, _password(args))
    return open_session(args.rpc, args.deployment, key)


def _reading_session(args: argparse.Namespace):
    from .session import open_session

    return open_session(args.rpc, args.deployment)


def _address(text: str) -> str:
    from ..chain.keyfile import resolve_address

    return resolve_address(text)


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}-{high}")
        return value

    return parse


def add_chain_args(p: argparse.ArgumentParser, deployment: bool = True) -> None:
    from .session import default_rpc

    p.add_argument("--rpc", default=default_rpc(), metavar="URL",
                   help="JSON-RPC URL: the dev chain or a Besu node (default $FRAMELEDGER_RPC or http://127.0.0.1:8545)")
    if deployment:
        p.add_argument("--deployment", metavar="FILE",
                       help="deployment record (default $FRAMELEDGER_DEPLOYMENT, else chain/deployments/<chainId>.json)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_key_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--keystore", required=required, metavar="FILE",
                   help="encrypted account keystore (V3 JSON) of the account that signs")
    add_password_args(p)


def add_password_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password-file", metavar="FILE", help="read the keystore password from this file's first line")
    p.add_argument("--password-env", metavar="NAME",
                   help="read the keystore password from this variable (default FRAMELEDGER_KEYSTORE_PASSPHRASE); "
                        "without either, a terminal prompts")


# ------------------------------------------------------------------ account
@guarded
def cmd_account_new(args: argparse.Namespace) -> int:
    from ..chain.keyfile import new_keystore

    address = new_keystore(args.keystore, _password(args))
    return emit(args, {"address": address, "keystore": args.keystore}, lambda d: d["address"])


@guarded
def cmd_account_dev(args: argparse.Namespace) -> int:
    from ..chain.devchain import dev_private_keys
    from ..chain.keyfile import write_keystore

    key = dev_private_keys(args.index + 1)[args.index]
    address = write_keystore(args.keystore, key, _password(args))
    return emit(args, {"address": address, "keystore": args.keystore, "devIndex": args.index}, lambda d: d["address"])


@guarded
def cmd_account_show(args: argparse.Namespace) -> int:
    from ..chain.keyfile import keystore_address

    address = keystore_address(args.keystore)
    return emit(args, {"address": address, "keystore": args.keystore}, lambda d: d["address"])


def add_account_commands(sub: Any) -> None:
    acc = sub.add_parser("account", help="signing accounts in encrypted keystores (members, nodes)",
                         description="Accounts that sign consortium transactions live in encrypted V3 JSON keystores; "
                                     "their private keys never appear on a command line or in a log.")
    asub = acc.add_subparsers(dest="account_command", required=True)
    new = asub.add_parser("new", help="create a random account in a new keystore; prints its address")
    new.add_argument("--keystore", required=True, metavar="FILE")
    add_password_args(new)
    new.add_argument("--json", action="store_true", help="print JSON")
    new.set_defaults(func=cmd_account_new)
    dev = asub.add_parser("dev", help="put a dev-chain account (Anvil's public test mnemonic) in a keystore; "
                                      "dev chains only: these keys are public")
    dev.add_argument("--index", required=True, type=_bounded_int(0, 999), help="account index (0 = the founder in the plan)")
    dev.add_argument("--keystore", required=True, metavar="FILE")
    add_password_args(dev)
    dev.add_argument("--json", action="store_true", help="print JSON")
    dev.set_defaults(func=cmd_account_dev)
    show = asub.add_parser("show", help="print a keystore's address (no password needed)")
    show.add_argument("--keystore", required=True, metavar="FILE")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_account_show)


# -------------------------------------------------------------------- chain
@guarded
def cmd_chain_up(args: argparse.Namespace) -> int:
    from ..chain.devchain import DEV_CHAIN_ID
    from .chainctl import run_chain

    def ready(chain: Any) -> None:
        info = {"rpc": chain.rpc_url, "chainId": DEV_CHAIN_ID, "pid": chain.process.pid,
                "state": str(args.state) if args.state else None, "accounts": args.accounts}
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            print(f"dev chain {DEV_CHAIN_ID} on {chain.rpc_url}" + (f", state kept in {args.state}" if args.state else
                  " (state lost on exit: use --state FILE to keep it)"), flush=True)
            print(f"{args.accounts} funded dev accounts: `frameledger account dev --index N --keystore FILE` "
                  "puts one in a keystore. Ctrl-C stops the chain.", flush=True)

    return run_chain(args.port, Path(args.state) if args.state else None, args.accounts,
                     Path(args.log) if args.log else None, ready)


@guarded
def cmd_chain_wait(args: argparse.Namespace) -> int:
    from .chainctl import wait_for_rpc

    chain_id = wait_for_rpc(args.rpc, args.timeout)
    return emit(args, {"rpc": args.rpc, "chainId": chain_id}, lambda d: f"chain {d['chainId']} answers on {d['rpc']}")


@guarded
def cmd_chain_fund(args: argparse.Namespace) -> int:
    from .chainctl import fund
    from .session import open_chain

    address = _address(args.account)
    balance = fund(open_chain(args.rpc), address, args.eth)
    return emit(args, {"address": address, "balanceEth": balance}, lambda d: f"{d['address']} now holds {d['balanceEth']:g} ETH")


def add_chain_commands(sub: Any) -> None:
    ch = sub.add_parser("chain", help="the dev chain: up, wait, fund (Besu: see chain/besu/README.md, then --rpc URL)")
    csub = ch.add_subparsers(dest="chain_command", required=True)
    up = csub.add_parser("up", help="run the dev chain (Anvil from npm) on loopback in the foreground until Ctrl-C/SIGTERM")
    up.add_argument("--port", type=_bounded_int(1, 65535), default=8545, help="loopback port (default 8545)")
    up.add_argument("--state", metavar="FILE", help="keep the chain in FILE: loaded on start, written on exit and every 5 s")
    up.add_argument("--accounts", type=_bounded_int(1, 1000), default=12, help="funded dev accounts (default 12)")
    up.add_argument("--log", metavar="FILE", help="Anvil's own output goes here (default: discarded)")
    up.add_argument("--json", action="store_true", help="print the ready line as JSON")
    up.set_defaults(func=cmd_chain_up)
    wait = csub.add_parser("wait", help="wait until a chain answers on --rpc")
    add_chain_args(wait, deployment=False)
    wait.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    wait.set_defaults(func=cmd_chain_wait)
    fund = csub.add_parser("fund", help="set an account's balance on the dev chain (anvil_setBalance)")
    fund.add_argument("account", metavar="ADDRESS|KEYSTORE")
    fund.add_argument("--eth", type=float, default=100.0, help="balance in ETH (default 100)")
    add_chain_args(fund, deployment=False)
    fund.set_defaults(func=cmd_chain_fund)


# ------------------------------------------------------------------- deploy
@guarded
def cmd_deploy(args: argparse.Namespace) -> int:
    from ..chain.deployer import deploy, deploy_contracts, load_plan
    from ..chain.devchain import DEV_CHAIN_ID, dev_private_keys
    from ..chain.keyfile import load_private_key
    from ..paths import DEPLOYMENTS_DIR
    from .session import open_chain

    try:
        plan = load_plan(Path(args.plan) if args.plan else None)
        if not isinstance(plan, dict) or not isinstance(plan.get("founderName"), str):
            raise ValueError("it needs a founderName")
    except (OSError, ValueError) as exc:
        raise OpsError(f"cannot read the plan {args.plan or 'chain/consortium.json'}: {exc}") from None
    w3 = open_chain(args.rpc)
    out_dir = Path(args.out) if args.out else DEPLOYMENTS_DIR
    if args.dev_accounts:
        if w3.eth.chain_id != DEV_CHAIN_ID:
            raise OpsError("--dev-accounts uses the public dev mnemonic: dev chain only")
        try:
            accounts = 1 + max([0] + [int(m[k]) for m in plan.get("members", []) for k in ("account", "parent")]
                               + [int(n[k]) for n in plan.get("nodes", []) for k in ("account", "operatedBy")])
        except (KeyError, TypeError, ValueError) as exc:
            raise OpsError(f"plan: members need account and parent, nodes account and operatedBy ({exc})") from None
        if accounts > 1000:
            raise OpsError("plan: account indices must stay below 1000")
        dep = deploy(w3, dev_private_keys(accounts), plan, out_dir=out_dir)
    else:
        if not args.keystore:
            raise OpsError("pass --keystore FILE (the founder's account), or --dev-accounts on a dev chain")
        dep = deploy_contracts(w3, load_private_key(args.keystore, _password(args)), plan, out_dir=out_dir)
    rec = dict(dep.record, recordPath=str(out_dir / f"{dep.chain_id}.json"))
    return emit(args, rec, _deploy_table)


def _deploy_table(rec: dict[str, Any]) -> str:
    rows = [[name, c["address"], c["blockNumber"], rec["gas"].get(f"deploy {name}", "")] for name, c in rec["contracts"].items()]
    out = render_table(["contract", "address", "block", "gas"], rows, title=f"deployed on chain {rec['chainId']}")
    members = render_table(["member", "role", "address"], [[m["name"], m["role"], m["address"]] for m in rec["members"]])
    tail = f"\nquorum {rec['quorum']}, {len(rec['nodes'])} nodes; record written to {rec['recordPath']}"
    return out + "\n\n" + members + tail


def add_deploy_command(sub: Any) -> None:
    dp = sub.add_parser("deploy", help="deploy Consortium + VideoLedger from the plan; writes chain/deployments/<chainId>.json",
                        description="With --keystore: the founder deploys both contracts and sets the plan's admission "
                                    "threshold; members, nodes and the quorum then follow with `member`, `node add` and "
                                    "`quorum set`. With --dev-accounts (dev chain only): the whole plan, with the plan's "
                                    "account indices taken as dev accounts.")
    add_chain_args(dp, deployment=False)
    add_key_args(dp, required=False)
    dp.add_argument("--plan", metavar="FILE", help="deployment plan (default chain/consortium.json)")
    dp.add_argument("--out", metavar="DIR", help="where the record goes (default chain/deployments/)")
    dp.add_argument("--dev-accounts", action="store_true", help="carry out the whole plan with dev accounts (dev chain)")
    dp.set_defaults(func=cmd_deploy)


# ------------------------------------------------------------------ members
def _application_table(a: dict[str, Any]) -> str:
    state = "admitted" if a["admitted"] else ("open" if a["open"] else "closed")
    need = [] if a["admitted"] else [f"needs {max(0, a['threshold'] - a['confirmations'])} more confirmation(s)"
                                     + ("" if a["parentConfirmed"] else ", the parent's among them")]
    return render_table(["applicant", "name", "role", "parent", "confirmations", "state"],
                        [[a["applicant"], a["name"], a["role"], _short(a["parent"]),
                          f"{a['confirmations']}/{a['threshold']}", state]]) + ("\n" + need[0] if need else "")


@guarded
def cmd_member_apply(args: argparse.Namespace) -> int:
    from .admin import member_apply, parse_role

    s = _signing_session(args)
    return emit(args, member_apply(s, parse_role(args.role), _address(args.parent) if args.parent else None, args.name),
                _application_table)


@guarded
def cmd_member_confirm(args: argparse.Namespace) -> int:
    from .admin import member_confirm

    return emit(args, member_confirm(_signing_session(args), _address(args.applicant)), _application_table)


@guarded
def cmd_member_threshold(args: argparse.Namespace) -> int:
    from .admin import set_threshold

    return emit(args, {"threshold": set_threshold(_signing_session(args), args.n)},
                lambda d: f"admission threshold {d['threshold']}")


@guarded
def cmd_member_list(args: argparse.Namespace) -> int:
    from .admin import member_list

    def table(d: dict[str, Any]) -> str:
        out = render_table(["address", "name", "role", "parent", "active"],
                           [[m["address"], m["name"], m["role"], _short(m["parent"]), "yes" if m["active"] else "no"]
                            for m in d["members"]], title=f"members (admission threshold {d['threshold']})")
        if d["applications"]:
            out += "\n\n" + render_table(["applicant", "name", "role", "parent", "confirmations", "parent confirmed"],
                                         [[a["applicant"], a["name"], a["role"], _short(a["parent"]),
                                           f"{a['confirmations']}/{a['threshold']}", "yes" if a["parentConfirmed"] else "no"]
                                          for a in d["applications"]], title="open applications")
        return out

    return emit(args, member_list(_reading_session(args)), table)


def add_member_commands(sub: Any) -> None:
    mem = sub.add_parser("member", help="members: apply, confirm, list (C1 multi-level admission)",
                         description="An applicant applies under a parent (an authority for operators, an operator for "
                                     "viewers, none for authorities). It is admitted once its parent has confirmed and "
                                     "the confirmations reach the admission threshold; eligible confirmers are members "
                                     "of the parent's rank or above.")
    msub = mem.add_subparsers(dest="member_command", required=True)
    ap = msub.add_parser("apply", help="apply for membership with the --keystore account")
    ap.add_argument("--role", required=True, help="authority, operator or viewer")
    ap.add_argument("--parent", metavar="ADDRESS|KEYSTORE", help="the member applied under (not for authorities)")
    ap.add_argument("--name", required=True, help="the applicant's name, shown to everyone (at most 128 bytes)")
    add_key_args(ap)
    add_chain_args(ap)
    ap.set_defaults(func=cmd_member_apply)
    co = msub.add_parser("confirm", help="confirm an open application with the --keystore account")
    co.add_argument("applicant", metavar="ADDRESS|KEYSTORE")
    add_key_args(co)
    add_chain_args(co)
    co.set_defaults(func=cmd_member_confirm)
    th = msub.add_parser("threshold", help="set how many confirmations admit an applicant (governor)")
    th.add_argument("n", type=_bounded_int(1, 65535))
    add_key_args(th)
    add_chain_args(th)
    th.set_defaults(func=cmd_member_threshold)
    ls = msub.add_parser("list", help="members and open applications")
    add_chain_args(ls)
    ls.set_defaults(func=cmd_member_list)


# -------------------------------------------------------------- nodes, quorum
def _nodes_table(rows: list[dict[str, Any]]) -> str:
    return render_table(["node", "operated by", "operator", "balance ETH"],
                        [[r["address"], r["operatedBy"], r["operator"], r["balanceEth"]] for r in rows],
                        title=f"{len(rows)} registered node(s)")


@guarded
def cmd_node_add(args: argparse.Namespace) -> int:
    from .admin import node_add

    return emit(args, node_add(_signing_session(args), _address(args.node), _address(args.operator)), _nodes_table)


@guarded
def cmd_node_remove(args: argparse.Namespace) -> int:
    from .admin import node_remove

    return emit(args, node_remove(_signing_session(args), _address(args.node)), _nodes_table)


@guarded
def cmd_node_list(args: argparse.Namespace) -> int:
    from .admin import node_list

    return emit(args, node_list(_reading_session(args)), _nodes_table)


@guarded
def cmd_node_init(args: argparse.Namespace) -> int:
    from .nodeinit import NodeInitRequest, init_node
    from .session import deployment_path, open_chain

    deployment = Path(args.deployment) if args.deployment else deployment_path(open_chain(args.rpc), None)
    req = NodeInitRequest(
        name=args.name, directory=Path(args.dir), rpc_url=args.rpc, deployment=deployment,
        ingest_port=args.ingest_port, api_port=args.api_port, peers=args.peer or [], window_ms=args.window_ms,
        alarm_centre=args.alarm_centre, existing_keystore=Path(args.import_keystore) if args.import_keystore else None,
        password_file=Path(args.password_file) if args.password_file else None,
    )
    info = init_node(req, _password(args))
    return emit(args, info, lambda d: render_table(["node", "address", "ingest", "api", "config"],
                                                   [[d["name"], d["address"], d["ingest"], d["api"], d["config"]]])
                + f"\nkeystore {d['keystore']} (encrypted). Next: `frameledger node add {d['address']} --operator …`, "
                  f"then `frameledger node --config {d['config']}`")


def _quorum_table(d: dict[str, Any]) -> str:
    return f"quorum {d['quorum']} of {d['nodes']} node(s)"


@guarded
def cmd_quorum_show(args: argparse.Namespace) -> int:
    from .admin import quorum_show

    return emit(args, quorum_show(_reading_session(args)), _quorum_table)


@guarded
def cmd_quorum_set(args: argparse.Namespace) -> int:
    from .admin import quorum_set

    return emit(args, quorum_set(_signing_session(args), args.n), _quorum_table)


def add_node_commands(node: argparse.ArgumentParser) -> None:
    """`node add|remove|list|init` beside the existing `node --config FILE` (which runs a node)."""
    nsub = node.add_subparsers(dest="node_command", metavar="{add,remove,list,init}")
    add = nsub.add_parser("add", help="register a node account, operated by a member (governor)")
    add.add_argument("node", metavar="ADDRESS|KEYSTORE")
    add.add_argument("--operator", required=True, metavar="ADDRESS|KEYSTORE", help="the member that operates it")
    add_key_args(add)
    add_chain_args(add)
    add.set_defaults(func=cmd_node_add)
    rm = nsub.add_parser("remove", help="retire a node account (governor; the quorum must stay reachable)")
    rm.add_argument("node", metavar="ADDRESS|KEYSTORE")
    add_key_args(rm)
    add_chain_args(rm)
    rm.set_defaults(func=cmd_node_remove)
    ls = nsub.add_parser("list", help="registered nodes")
    add_chain_args(ls)
    ls.set_defaults(func=cmd_node_list)
    init = nsub.add_parser("init", help="write a node's directory: node.toml and an encrypted keystore")
    init.add_argument("--name", required=True)
    init.add_argument("--dir", required=True, metavar="DIR", help="the node's directory (config, keystore, data/)")
    init.add_argument("--ingest-port", required=True, type=_bounded_int(1, 65535), help="camera ingest (TCP)")
    init.add_argument("--api-port", required=True, type=_bounded_int(1, 65535), help="HTTP API (peers, status)")
    init.add_argument("--peer", action="append", metavar="URL", help="another node's API URL (repeat)")
    init.add_argument("--window-ms", type=int, default=60_000, help="block window (default 60000)")
    init.add_argument("--alarm-centre", action="store_true", help="this node runs the alarm centre (one per consortium)")
    init.add_argument("--import-keystore", metavar="FILE", help="use this account keystore instead of a new key")
    add_password_args(init)
    add_chain_args(init)
    init.set_defaults(func=cmd_node_init)


def add_quorum_commands(sub: Any) -> None:
    q = sub.add_parser("quorum", help="attestations that make a video block final: show, set")
    qsub = q.add_subparsers(dest="quorum_command", required=True)
    show = qsub.add_parser("show", help="the quorum and the node count")
    add_chain_args(show)
    show.set_defaults(func=cmd_quorum_show)
    st = qsub.add_parser("set", help="set the quorum (governor; at most the node count)")
    st.add_argument("n", type=_bounded_int(1, 65535))
    add_key_args(st)
    add_chain_args(st)
    st.set_defaults(func=cmd_quorum_set)


# ------------------------------------------------------------------ cameras
def _ms(ms: int | None) -> str:
    if not ms:
        return ""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _cameras_table(rows: list[dict[str, Any]]) -> str:
    return render_table(
        ["ip", "camera id", "owner", "group", "active", "device key", "blocks", "last block end", "risk"],
        [[r["ip"], r["cameraId"][:14] + "…", r["owner"], r["group"], "yes" if r["active"] else "revoked",
          r["devicePublicKey"][:16] + "…", r["blocks"], _ms(r["lastBlockEndMs"]), r["risk"] or ""] for r in rows],
        title=f"{len(rows)} camera(s)")


@guarded
def cmd_camera_register(args: argparse.Namespace) -> int:
    from .admin import camera_register, parse_group, parse_public_key

    row = camera_register(_signing_session(args), args.ip, parse_public_key(args.pubkey), parse_group(args.group))
    return emit(args, row, lambda r: _cameras_table([r]))


@guarded
def cmd_camera_revoke(args: argparse.Namespace) -> int:
    from .admin import camera_revoke

    return emit(args, camera_revoke(_signing_session(args), args.camera), lambda r: _cameras_table([r]))


@guarded
def cmd_camera_rotate(args: argparse.Namespace) -> int:
    from .admin import camera_rotate, parse_public_key

    return emit(args, camera_rotate(_signing_session(args), args.camera, parse_public_key(args.pubkey)),
                lambda r: _cameras_table([r]))


@guarded
def cmd_camera_list(args: argparse.Namespace) -> int:
    from .admin import camera_list

    return emit(args, camera_list(_reading_session(args)), _cameras_table)


def add_camera_admin_commands(camera_sub: Any) -> None:
    """`camera register|revoke|rotate-key|list` beside `camera run|keygen|pubkey` (offchain/camera/cli.py)."""
    reg = camera_sub.add_parser("register", help="whitelist a camera on chain (C2): IP, device public key, group; "
                                                 "the --keystore account (operator or authority) owns it")
    reg.add_argument("--ip", required=True, help="the camera's identity (camera id = keccak256(ip))")
    reg.add_argument("--pubkey", required=True, metavar="HEX", help="device public key, as `camera keygen` prints it")
    reg.add_argument("--group", default="", help="cameras of one user share a group (at most 32 bytes)")
    add_key_args(reg)
    add_chain_args(reg)
    reg.set_defaults(func=cmd_camera_register)
    rev = camera_sub.add_parser("revoke", help="take a camera off the whitelist for good (owner or authority)")
    rev.add_argument("camera", metavar="IP|0xID")
    add_key_args(rev)
    add_chain_args(rev)
    rev.set_defaults(func=cmd_camera_revoke)
    rot = camera_sub.add_parser("rotate-key", help="put a camera's new device key on chain (C6; owner only). "
                                                   "Make it first with `camera keygen --rotate`")
    rot.add_argument("camera", metavar="IP|0xID")
    rot.add_argument("--pubkey", required=True, metavar="HEX", help="the new device public key")
    add_key_args(rot)
    add_chain_args(rot)
    rot.set_defaults(func=cmd_camera_rotate)
    ls = camera_sub.add_parser("list", help="whitelisted cameras, their blocks and risks")
    add_chain_args(ls)
    ls.set_defaults(func=cmd_camera_list)


# ------------------------------------------------------------------ genesis
def _genesis_table(d: dict[str, Any]) -> str:
    if not d["sealed"]:
        return f"genesis not sealed; {len(d['cameras'])} camera(s) registered: {', '.join(d['cameras']) or '-'}"
    if d.get("hidden"):
        return "genesis sealed; its hash is shown to members and nodes only: pass --as ADDRESS|KEYSTORE"
    return render_table(["genesis hash", "sealed at", "cameras"], [[d["hash"], _ms(d["timestamp"] * 1000), len(d["cameras"])]])


@guarded
def cmd_genesis_seal(args: argparse.Namespace) -> int:
    from .admin import genesis_seal

    return emit(args, genesis_seal(_signing_session(args)), _genesis_table)


@guarded
def cmd_genesis_show(args: argparse.Namespace) -> int:
    from .admin import genesis_show
    from .session import open_session

    s = open_session(args.rpc, args.deployment)
    viewer = _address(args.as_) if args.as_ else None
    return emit(args, genesis_show(s, viewer), _genesis_table)


def add_genesis_commands(sub: Any) -> None:
    g = sub.add_parser("genesis", help="the genesis hash over the registered cameras (C3) and their head blocks (C4)")
    gsub = g.add_subparsers(dest="genesis_command", required=True)
    seal = gsub.add_parser("seal", help="seal the genesis once (governor); cameras registered later get heads on registration")
    add_key_args(seal)
    add_chain_args(seal)
    seal.set_defaults(func=cmd_genesis_seal)
    show = gsub.add_parser("show", help="whether the genesis is sealed; its hash for members and nodes")
    show.add_argument("--as", dest="as_", metavar="ADDRESS|KEYSTORE",
                      help="read the hash as this member or node (the contract shows it to them only)")
    add_chain_args(show)
    show.set_defaults(func=cmd_genesis_show)


# ------------------------------------------------------------------- status
def _status_table(d: dict[str, Any]) -> str:
    head = (f"chain {d['chainId']} · consortium {d['consortium']} · quorum {d['quorum']} · genesis "
            + ("sealed" if d["genesisSealed"] else "NOT sealed"))
    if d.get("anchoring"):
        head += " · anchoring " + "/".join(d["anchoring"])
    if d.get("lastBatch"):
        b = d["lastBatch"]
        head += f" · last batch #{b['index']} ({b['blocks']} blocks, ends {_ms(b['windowEndMs'])[11:]}, gas {b['gas']})"
    rows = [["node", n["name"] or n["address"], "up" if n["up"] else ("down" if n["api"] or d["unmatchedApis"] else "?"),
             f"frames {n['frames']} rejected {n['rejected']}" if n["up"] else "", n["openAlarms"] if n["up"] else "",
             f"operator {n['operator']}"] for n in d["nodes"]]
    for c in d["cameras"]:
        lb = c["lastBlock"]
        block = "" if not lb else (f"#{lb['height']} batched, final, ends {_ms(lb['windowEndMs'])}") if lb.get("batched") else (
            "" if not lb else (f"#{lb['height']} {_ms(lb['windowStartMs'])}–{_ms(lb['windowEndMs'])[11:]} "
                                   f"{lb['frames']} frames, {lb['attestations']}/{d['quorum']} att"
                                   + (" final" if lb["finalized"] else "") + (f", {lb['disputes']} disputes" if lb["disputes"] else "")))
        rows.append(["camera", c["ip"], "active" if c["active"] else "revoked", block, "", c["risk"] or ""])
    table = render_table(["kind", "name", "state", "detail", "open alarms", "risk / note"], rows, title=head)
    verdict = "healthy" if d["healthy"] else "PROBLEMS:\n  " + "\n  ".join(d["problems"])
    return table + "\n\n" + verdict


@guarded
def cmd_status(args: argparse.Namespace) -> int:
    from .status import gather, wait_for_apis

    apis = list(args.api or [])
    if args.wait:
        wait_for_apis(apis, args.wait)
    data = gather(_reading_session(args), apis)
    emit(args, data, _status_table)
    return 0 if data["healthy"] else EXIT_REFUSED


def add_status_command(sub: Any) -> None:
    st = sub.add_parser("status", help="the consortium's health in one table: nodes, cameras, last blocks, alarms, risks",
                        description="Reads the chain, and each node's API given with --api. Exits 1 when something "
                                    "needs attention (a node down, fewer nodes up than the quorum, open alarms, risks, "
                                    "disputes), 0 when healthy.")
    st.add_argument("--api", action="append", metavar="URL", help="a node's API URL, e.g. http://127.0.0.1:8001 (repeat)")
    st.add_argument("--wait", type=float, metavar="S", help="first wait up to S seconds for every --api to answer")
    add_chain_args(st)
    st.set_defaults(func=cmd_status)


# ------------------------------------------------------------- registration
def add_ops_commands(sub: Any, node_parser: argparse.ArgumentParser, camera_parser: argparse.ArgumentParser) -> None:
    add_account_commands(sub)
    add_chain_commands(sub)
    add_deploy_command(sub)
    add_member_commands(sub)
    add_node_commands(node_parser)
    add_quorum_commands(sub)
    add_camera_admin_commands(_subparsers_of(camera_parser))
    add_camera_wait_command(_subparsers_of(camera_parser))
    add_genesis_commands(sub)
    add_status_command(sub)
    add_up_command(sub)


def _subparsers_of(parser: argparse.ArgumentParser) -> Any:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001


@guarded
def cmd_camera_wait(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .status import wait_final

    started = time.monotonic()
    with tqdm(total=round(args.timeout), desc=f"camera {args.camera}: waiting for a final block", unit="s",
              leave=False, disable=args.json, bar_format="{desc} {n}/{total} s [{postfix}]") as bar:
        def shown(state: str) -> None:
            bar.set_postfix_str(state, refresh=False)
            bar.update(min(round(time.monotonic() - started), bar.total) - bar.n)

        block = wait_final(_reading_session(args), args.camera, args.until, args.timeout, _wait_stores(args), shown)
    return emit(args, block, lambda b: f"camera {args.camera}: block #{b['height']} final "
                                       f"({b['attestations']} {'signatures' if b['anchoring'] == 'batch' else 'attestations'}), "
                                       f"window ends {_ms(b['windowEndMs'])}")


def _wait_stores(args: argparse.Namespace) -> list[Any]:
    """Where batch mode's manifests are read from: node stores (read only) and IPFS nodes."""
    from ..store import KuboStore, LocalStore

    for d in args.store:
        if not Path(d).is_dir():
            raise OpsError(f"store directory {d} does not exist")
    return [LocalStore(d, fsync="none") for d in args.store] + [KuboStore(u) for u in args.ipfs]


def add_camera_wait_command(camera_sub: Any) -> None:
    wt = camera_sub.add_parser("wait", help="wait until a camera's blocks are final up to a capture time")
    wt.add_argument("camera", metavar="IP|0xID")
    wt.add_argument("--until", required=True, type=int, metavar="MS", help="capture time, epoch ms")
    wt.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    wt.add_argument("--store", action="append", default=[], metavar="DIR",
                    help="batch mode: a node's content store directory, for the batch manifests (repeatable)")
    wt.add_argument("--ipfs", action="append", default=[], metavar="URL",
                    help="batch mode: an IPFS node's Kubo RPC API holding the batch manifests (repeatable)")
    add_chain_args(wt)
    wt.set_defaults(func=cmd_camera_wait)


# ----------------------------------------------------------------------- up
@guarded
def cmd_up(args: argparse.Namespace) -> int:
    from .session import open_session
    from .site import load_site, run_site
    from .status import gather

    site = load_site(Path(args.site))

    def say(line: str) -> None:
        print(line, flush=True)

    def report(info: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps({"up": info}), flush=True)
            return
        print(render_table(["node", "api", "camera ingest"], [[n["name"], n["api"], n["ingest"]] for n in info["nodes"]],
                           title=f"consortium up: chain {info['rpc']}, deployment {info['deployment']}"), flush=True)
        print(f"cameras: {', '.join(c['ip'] + ' <- ' + c['source'] for c in info['cameras']) or 'none'}; "
              "Ctrl-C stops everything", flush=True)

    def status(info: dict[str, Any]) -> None:
        data = gather(open_session(info["rpc"], info["deployment"]), [n["api"] for n in info["nodes"]])
        print(json.dumps({"status": data}, default=str) if args.json else "\n" + _status_table(data), flush=True)

    return run_site(site, say, report, status)


def add_up_command(sub: Any) -> None:
    up = sub.add_parser("up", help="a whole local consortium from one SITE.toml: chain, deployment, nodes, cameras",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Runs in the foreground until Ctrl-C / SIGTERM; again on the same directory it "
                                    "resumes. SITE.toml:\n\n" + _site_doc())
    up.add_argument("site", metavar="SITE.toml")
    up.add_argument("--json", action="store_true", help="print the ready line and status as JSON lines")
    up.set_defaults(func=cmd_up)


def _site_doc() -> str:
    from . import site

    doc = site.__doc__ or ""
    return doc[doc.index("    dir ="):] if "    dir =" in doc else doc
