"""`frameledger status`: the consortium's health at a glance, from the chain and from the nodes'
own APIs: every node (registered on chain, answering, frames stored, open alarms) and every
camera (active, blocks anchored, the last block's window and finality, risk warnings)."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import httpx

from .admin import camera_list, node_list
from .errors import OpsError
from .session import Session

MAX_APIS = 64
API_TIMEOUT_S = 3.0


def node_api(url: str) -> dict[str, Any] | None:
    """A node's /api/v1/status, or None when it does not answer."""
    try:
        r = httpx.get(url.rstrip("/") + "/api/v1/status", timeout=API_TIMEOUT_S)
        if r.status_code == 200 and len(r.content) <= 1024 * 1024:
            return r.json()
    except (httpx.HTTPError, ValueError):
        pass
    return None


def wait_for_apis(urls: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    missing = list(urls)
    while missing:
        missing = [u for u in missing if node_api(u) is None]
        if missing and time.monotonic() > deadline:
            raise OpsError(f"no node API answered within {timeout:g} s at: {', '.join(missing)}")
        if missing:
            time.sleep(0.25)


def _totals(counters: dict[str, dict[str, int]]) -> dict[str, int]:
    """Per-camera counters of a node summed: frames kept (received + repaired), frames rejected."""
    frames = rejected = 0
    for per_camera in counters.values():
        for name, value in per_camera.items():
            if name in ("received", "repaired"):
                frames += int(value)
            elif name.startswith("rejected_"):
                rejected += int(value)
    return {"frames": frames, "rejected": rejected}


def _last_block(s: Session, cid: bytes, length: int) -> dict[str, Any] | None:
    if not length:
        return None
    rec = s.ledger.block_at(cid, length)
    return {"height": rec.header.height, "windowStartMs": rec.header.window_start_ms,
            "windowEndMs": rec.header.window_end_ms, "frames": rec.header.frame_count,
            "attestations": rec.attestations, "disputes": rec.disputes, "finalized": rec.finalized}


def _batch_tips(answers: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """Batch mode: per camera ip, the highest tip any answering node reports (nodes follow the
    same batches; one that lags reports an older tip)."""
    out: dict[str, dict[str, Any]] = {}
    for a in answers.values():
        for ip, tip in ((a or {}).get("batch") or {}).get("tips", {}).items():
            if ip not in out or tip.get("height", 0) > out[ip].get("height", 0):
                out[ip] = tip
    return out


def gather(s: Session, api_urls: list[str]) -> dict[str, Any]:
    if len(api_urls) > MAX_APIS:
        raise OpsError(f"at most {MAX_APIS} --api URLs")
    answers = {url: node_api(url) for url in api_urls}
    by_address = {a["address"]: (url, a) for url, a in answers.items() if a and "address" in a}
    nodes = []
    for row in node_list(s):
        url, answer = by_address.get(row["address"], (None, None))
        counters = (answer or {}).get("counters", {})
        totals = _totals(counters)
        nodes.append({**row, "name": (answer or {}).get("node"), "api": url, "up": answer is not None,
                      "frames": totals["frames"] if answer else None, "rejected": totals["rejected"] if answer else None,
                      "openAlarms": (answer or {}).get("openAlarms")})
    unknown = [url for url, a in answers.items() if a is None or a.get("address") not in {n["address"] for n in nodes}]
    tips = _batch_tips(answers)
    cameras = []
    for cam in camera_list(s):
        cid = bytes.fromhex(cam["cameraId"][2:])
        last = _last_block(s, cid, cam["blocks"])
        if last is None and cam["ip"] in tips:  # batch mode: the camera's tip as the nodes follow the batches
            tip = tips[cam["ip"]]
            last = {"height": tip["height"], "windowEndMs": tip["windowEndMs"], "attestations": None, "disputes": 0,
                    "finalized": True, "batched": True}
            cam = {**cam, "blocks": tip["height"]}
        cameras.append({**cam, "lastBlock": last})
    quorum = s.consortium.quorum()
    problems = _problems(nodes, cameras, unknown, quorum, bool(api_urls))
    modes = sorted({a.get("anchoring", "header") for a in answers.values() if a})
    batch = next((a["batch"] for a in answers.values() if a and a.get("batch")), None)
    return {"chainId": s.deployment.chain_id, "consortium": s.deployment.consortium, "quorum": quorum,
            "anchoring": modes, "lastBatch": batch["lastBatch"] if batch else None,
            "genesisSealed": s.consortium.genesis_sealed(), "nodes": nodes, "cameras": cameras,
            "unmatchedApis": unknown, "problems": problems, "healthy": not problems}


def _problems(nodes: list[dict], cameras: list[dict], unknown: list[str], quorum: int, asked: bool) -> list[str]:
    out = []
    if asked:
        out += [f"node {n['address']} does not answer" for n in nodes if not n["up"]]
        out += [f"{u} is not a registered node's API (or does not answer)" for u in unknown]
        if sum(1 for n in nodes if n["up"]) < quorum:
            out.append(f"fewer nodes up than the quorum ({quorum}): blocks cannot become final")
        out += [f"node {n['name'] or n['address']} has {n['openAlarms']} open alarms" for n in nodes if n.get("openAlarms")]
    out += [f"camera {c['ip']} at risk: {c['risk']}" for c in cameras if c["risk"]]
    out += [f"camera {c['ip']} block {c['lastBlock']['height']} has disputes" for c in cameras
            if c["lastBlock"] and c["lastBlock"]["disputes"]]
    return out


WAIT_SPAN_MS = 3_600_000  # how far past --until `camera wait` looks for the block reaching it (one longest window)
UINT64_MAX = 2**64 - 1


def wait_final(s: Session, camera_ref_text: str, until_ms: int, timeout: float,
               stores: Sequence[Any] = (), progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Poll until the camera's first block reaching ``until_ms`` (its window ends after it) is
    final: every block up to it is then final too (the chain takes them in order). Either
    anchoring mode, read the one way evidence reads the chain, through its AnchorSource
    (`evidence.extract.anchor_source`: per header the VideoLedger; in batch mode the BatchLedger,
    with the batch manifests from ``stores``, re-hashed), chosen again at each poll: until
    something is anchored there, neither ledger says which mode the consortium uses.
    ``progress`` is told the state after every poll (the CLI shows it beside a bar)."""
    from .admin import camera_id

    if not 0 < timeout <= 3600:
        raise OpsError("--timeout must be in (0, 3600] seconds")
    if not 0 < until_ms < UINT64_MAX - WAIT_SPAN_MS:
        raise OpsError("--until must be a capture time in epoch ms")
    cid = camera_id(camera_ref_text)
    deadline = time.monotonic() + timeout
    while True:
        block = _first_block_reaching(s, cid, until_ms, stores)
        if block and block["finalized"]:
            return block
        state = "no block yet" if not block else (f"block #{block['height']} ends {block['windowEndMs']}, not final")
        if progress is not None:
            progress(state)
        if time.monotonic() > deadline:
            raise OpsError(f"camera {camera_ref_text}: no final block reaching {until_ms} within {timeout:g} s ({state})")
        time.sleep(0.5)


def _first_block_reaching(s: Session, cid: bytes, until_ms: int, stores: Sequence[Any]) -> dict[str, Any] | None:
    from ..evidence.extract import anchor_source

    lo, hi = until_ms - 1, until_ms - 1 + WAIT_SPAN_MS
    source = anchor_source(s.w3, s.deployment.video_ledger, s.deployment.batch_ledger, cid, lo, hi, stores)
    mode = getattr(source, "anchoring", "header")
    if mode == "batch" and not stores:
        raise OpsError("this camera is anchored in batch mode: give --store DIR or --ipfs URL to read the batch manifests")
    heights, blocks = source.blocks_in_range(cid, lo, hi)
    first = blocks.get(heights[0]) if heights else None
    if first is None:
        return None
    h = first.header
    return {"height": first.height, "windowStartMs": h.window_start_ms, "windowEndMs": h.window_end_ms,
            "frames": h.frame_count, "attestations": first.attestations, "disputes": first.disputes,
            "finalized": first.finalized, "anchoring": mode}
