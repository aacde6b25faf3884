"""Consortium administration over the typed clients: members (C1), nodes, quorum, cameras (C2,
C6) and the genesis (C3, C4). Each function takes a `Session` and plain values and returns plain
data (dicts a table or JSON can show); the contract enforces who may do what, and its named
reverts reach the operator as one line."""

from __future__ import annotations

from typing import Any

from web3 import Web3

from ..chain.client import call
from ..chain.ledger import Role
from ..core.block import camera_ref
from .errors import OpsError
from .session import Session

MAX_NAME_BYTES = 128
MAX_IP_BYTES = 255
GROUP_BYTES = 32
ED25519_KEY_BYTES = 32


def parse_role(text: str) -> Role:
    try:
        role = Role.parse(text)
    except KeyError:
        raise OpsError(f"unknown role {text!r}: authority, operator or viewer") from None
    if role is Role.NONE:
        raise OpsError("role none cannot be applied for")
    return role


def _check_name(name: str) -> str:
    if not name or len(name.encode()) > MAX_NAME_BYTES:
        raise OpsError(f"name must be 1-{MAX_NAME_BYTES} bytes")
    return name


# ------------------------------------------------------------------ members
def member_row(s: Session, address: str) -> dict[str, Any]:
    m = s.consortium.member(address)
    return {"address": address, "name": m["name"], "role": m["role"].name.lower(), "active": m["active"],
            "parent": m["parent"] if int(m["parent"], 16) else None, "admittedAt": m["admittedAt"]}


def application_row(s: Session, applicant: str) -> dict[str, Any]:
    a = s.consortium.application(applicant)
    return {"applicant": applicant, "name": a["name"], "role": a["role"].name.lower(), "open": a["open"],
            "parent": a["parent"] if int(a["parent"], 16) else None, "parentConfirmed": a["parentConfirmed"],
            "confirmations": a["confirmations"], "threshold": s.consortium.admission_threshold(),
            "admitted": s.consortium.is_member(applicant)}


def member_apply(s: Session, role: Role, parent: str | None, name: str) -> dict[str, Any]:
    if role is not Role.AUTHORITY and not parent:
        raise OpsError(f"a {role.name.lower()} applies under a parent: pass --parent ADDRESS|KEYSTORE")
    if role is Role.AUTHORITY and parent:
        raise OpsError("an authority applies without a parent (existing authorities confirm it)")
    s.consortium.apply(role, parent, _check_name(name))
    return application_row(s, s.signer.address)


def member_confirm(s: Session, applicant: str) -> dict[str, Any]:
    s.consortium.confirm(applicant)
    return application_row(s, applicant)


def member_list(s: Session) -> dict[str, list[dict[str, Any]]]:
    members = [member_row(s, a) for a in s.consortium.members()]
    pending = [application_row(s, a) for a in s.consortium.applicants()]
    return {"members": members, "applications": [p for p in pending if p["open"]],
            "threshold": s.consortium.admission_threshold()}


def set_threshold(s: Session, n: int) -> int:
    if not 1 <= n <= 65535:
        raise OpsError("admission threshold must be 1-65535")
    s.consortium.set_admission_threshold(n)
    return s.consortium.admission_threshold()


# -------------------------------------------------------------------- nodes
def node_list(s: Session) -> list[dict[str, Any]]:
    rows = []
    for node in s.consortium.nodes():
        operator = s.consortium.node_operator(node)
        rows.append({"address": node, "operatedBy": operator, "operator": s.consortium.member(operator)["name"],
                     "balanceEth": round(float(Web3.from_wei(s.w3.eth.get_balance(node), "ether")), 4)})
    return rows


def node_add(s: Session, node: str, operated_by: str) -> list[dict[str, Any]]:
    s.consortium.add_node(node, operated_by)
    return node_list(s)


def node_remove(s: Session, node: str) -> list[dict[str, Any]]:
    s.consortium.remove_node(node)
    return node_list(s)


def quorum_show(s: Session) -> dict[str, Any]:
    return {"quorum": s.consortium.quorum(), "nodes": len(s.consortium.nodes())}


def quorum_set(s: Session, n: int) -> dict[str, Any]:
    if not 1 <= n <= 65535:
        raise OpsError("quorum must be 1-65535")
    s.consortium.set_quorum(n)
    return quorum_show(s)


# ------------------------------------------------------------------ cameras
def parse_public_key(text: str) -> bytes:
    raw = text.strip().removeprefix("0x")
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        raise OpsError("--pubkey must be hex (what `frameledger camera keygen` prints)") from None
    if len(key) != ED25519_KEY_BYTES:
        raise OpsError(f"--pubkey must be a {ED25519_KEY_BYTES}-byte Ed25519 public key, got {len(key)} bytes")
    return key


def parse_group(text: str) -> bytes:
    raw = text.encode()
    if text.startswith("0x") and len(text) == 66:
        return bytes.fromhex(text[2:])
    if len(raw) > GROUP_BYTES:
        raise OpsError(f"--group must be at most {GROUP_BYTES} bytes (or a 0x 32-byte hex id)")
    return raw.ljust(GROUP_BYTES, b"\x00")


def _group_text(group: bytes) -> str:
    stripped = group.rstrip(b"\x00")
    try:
        text = stripped.decode()
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    return "0x" + group.hex()


def camera_id(ref: str) -> bytes:
    try:
        return camera_ref(ref)
    except (ValueError, TypeError) as exc:
        raise OpsError(f"camera {ref!r}: {exc}") from None


def camera_row(s: Session, cid: bytes) -> dict[str, Any]:
    c = s.consortium.camera(cid)
    length = s.ledger.chain_length(cid)
    last_end = s.ledger.tip(cid)[2] if length else None
    risk = s.ledger.risk(cid)
    return {"ip": c.ip, "cameraId": "0x" + cid.hex(), "owner": c.owner, "group": _group_text(c.group),
            "active": c.active, "devicePublicKey": c.device_public_key.hex(), "headTimestamp": c.head_timestamp,
            "blocks": length, "lastBlockEndMs": last_end, "risk": risk["reason"] if risk["active"] else None}


def camera_list(s: Session) -> list[dict[str, Any]]:
    return [camera_row(s, cid) for cid in s.consortium.camera_ids()]


def camera_register(s: Session, ip: str, public_key: bytes, group: bytes) -> dict[str, Any]:
    if not ip or len(ip.encode()) > MAX_IP_BYTES:
        raise OpsError(f"--ip must be 1-{MAX_IP_BYTES} bytes")
    s.consortium.register_camera(ip, public_key, group)
    return camera_row(s, camera_id(ip))


def camera_revoke(s: Session, ref: str) -> dict[str, Any]:
    cid = camera_id(ref)
    s.consortium.revoke_camera(cid)
    return camera_row(s, cid)


def camera_rotate(s: Session, ref: str, public_key: bytes) -> dict[str, Any]:
    cid = camera_id(ref)
    s.consortium.rotate_camera_key(cid, public_key)
    return camera_row(s, cid)


# ------------------------------------------------------------------ genesis
def genesis_show(s: Session, viewer: str | None = None) -> dict[str, Any]:
    """The hash is a members-and-nodes-only view: read as ``viewer`` (else the session's signer);
    for anyone else only whether it is sealed is shown."""
    cameras = [s.consortium.camera(cid).ip for cid in s.consortium.camera_ids()]
    out: dict[str, Any] = {"sealed": s.consortium.genesis_sealed(), "cameras": cameras, "hash": None, "timestamp": None}
    if out["sealed"]:
        reader = viewer or s.signer.address
        if not (s.consortium.is_member(reader) or reader in s.consortium.nodes()):
            if viewer is None:
                return {**out, "hidden": True}
            raise OpsError(f"{reader} is neither a member nor a node: the genesis hash is shown to them only (--as)")
        h, ts = call(s.consortium.contract.functions.genesisHash(), sender=reader)
        out.update(hash="0x" + bytes(h).hex(), timestamp=ts)
    return out


def genesis_seal(s: Session) -> dict[str, Any]:
    s.consortium.seal_genesis()
    return genesis_show(s)
