"""A node's side of declared outages (issue 10; the message and its bounds: `offchain.core.outages`).

`on_declaration` judges one ``outage`` control message on a camera connection (`IngestServer`
dispatches it here): for this connection's camera, signed by its device key, well formed, within
the bounds; then it is kept in the ``outages`` table (a replay of the same bytes changes nothing).
A forged, foreign or malformed one raises a coalesced alarm and counts as an invalid message of the
connection, like any other (too many close it). `manifest_entries` gives the producer what the block
of a window carries; `check_manifest` is what an attesting node checks of them (B4).
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, Iterable

from ..core import outages as core
from ..core import wire
from ..core.block import Manifest, window_of

if TYPE_CHECKING:
    from .ingest import IngestServer, _Conn
    from .state import NodeState

log = logging.getLogger(__name__)

__all__ = ["check_manifest", "manifest_entries", "on_declaration"]


async def on_declaration(server: IngestServer, conn: _Conn, msg: wire.SignedControl) -> None:
    """Keep the declaration, or alarm and count it invalid (may close the connection)."""
    node, ip, cam = server.node, conn.ip, conn.camera
    assert ip is not None and cam is not None
    if msg.camera_ip != ip or not await server._control_ok(msg, ip):
        node._alarm_rejected(ip, "security", "badly signed or foreign outage declaration refused", "camera", conn.origin)
        server._invalid(conn)
        return
    try:
        decl = core.declaration_of(msg)
        if node.state.has_outage(cam, decl.digest):
            return  # a resend after a reconnect: kept already
        held = node.state.frame(cam, decl.after_seq)
        start, end = window_of(decl.to_ms, node.config.window_ms)
        problem = core.check_bounds(decl, now_ms=int(time.time() * 1000),
                                    held_after_ts=held.ref.timestamp_ms if held else None,
                                    in_window=node.state.outage_count(cam, start, end))
    except core.OutageError as exc:
        problem = str(exc)
    if problem is not None:
        node._alarm_rejected(ip, "integrity", f"outage declaration refused: {problem}", "camera", conn.origin)
        server._invalid(conn)
        return
    if node.state.add_outage(cam, decl.digest, decl.after_seq, decl.from_ms, decl.to_ms, decl.reason,
                             json.dumps(decl.proof(), sort_keys=True)):
        server.count(ip, "outages_declared")
        log.info("camera declared an outage", extra={"node": node.name, "camera": ip, "after_seq": decl.after_seq,
                                                     "from_ms": decl.from_ms, "to_ms": decl.to_ms, "reason": decl.reason})


def manifest_entries(state: NodeState, cam: bytes, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    """The ``declaredOutages`` of the camera's block of [start, end): those ending in it."""
    return [json.loads(p) for p in state.outage_proofs(cam, start_ms, end_ms)][: core.MAX_OUTAGES_PER_WINDOW]


def check_manifest(manifest: Manifest, keys: Iterable[bytes]) -> str | None:
    """B4 of another node's block: every declaration it carries is the camera's, signed and in
    the window (a proposer cannot put words in the camera's mouth). None when all hold."""
    if len(manifest.declared_outages) > core.MAX_OUTAGES_PER_WINDOW:
        return f"the manifest declares more than {core.MAX_OUTAGES_PER_WINDOW} outages"
    keys = list(keys)
    for proof in manifest.declared_outages:
        check = core.verify_proof(proof, camera_ip=manifest.camera_ip,
                                  window=(manifest.window_start_ms, manifest.window_end_ms), keys=keys)
        if check.problem is not None:
            return f"a declared outage is not the camera's: {check.detail}"
    return None
