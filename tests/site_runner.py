"""Cameras in a `frameledger up` site, run with the CLI only until its blocks are final, and
`frameledger extract` of a range of it: the shared path of the live-camera site tests (RTSP,
MJPEG, audio). The site process is the test's own, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, kw_only=True)
class SiteCamera:
    ip: str
    source: str
    extra: str = ""  # more TOML lines of its [[cameras]] table


@dataclass(frozen=True, kw_only=True)
class RunningSite:
    info: dict[str, Any]                # the `up` line: rpc, deployment, …
    cameras: dict[str, dict[str, Any]]  # each camera's status row (by IP) once `min_blocks` are final
    env: dict[str, str]                 # the environment the CLI runs in (no FRAMELEDGER_* of the caller)
    store: Path                         # node-bank's store, where the extracts read frames

    @property
    def camera(self) -> dict[str, Any]:
        """The status row of a one-camera site."""
        (row,) = self.cameras.values()
        return row


def _site_toml(cameras: Sequence[SiteCamera], window_ms: int) -> str:
    tables = "".join(f'\n[[cameras]]\nip = "{c.ip}"\nsource = "{c.source}"\n{c.extra}' for c in cameras)
    return f'dir = "site"\nrpc_port = 0\nwindow_ms = {window_ms}\nstatus_every_s = 2\n{tables}'


def _all_final(cams: Sequence[dict[str, Any]], ips: set[str], min_blocks: int) -> dict[str, dict[str, Any]] | None:
    rows = {c.get("ip"): c for c in cams}
    if all((rows.get(ip, {}).get("lastBlock") or {}).get("finalized") and rows[ip]["blocks"] >= min_blocks
           for ip in ips):
        return {ip: rows[ip] for ip in ips}
    return None


@contextmanager
def running_site(tmp_path: Path, *, cameras: Sequence[SiteCamera], min_blocks: int, window_ms: int = 5000,
                 what: str = "the camera") -> Iterator[RunningSite]:
    """`frameledger up` with `cameras` until every camera has `min_blocks` final blocks; the site
    stops when the block ends."""
    site = tmp_path / "site.toml"
    site.write_text(_site_toml(cameras, window_ms))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMELEDGER_")}
    up = subprocess.Popen([sys.executable, "-m", "offchain.cli", "up", str(site), "--json"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    try:
        info, rows = None, None
        assert up.stdout is not None
        for line in up.stdout:
            msg = json.loads(line) if line.startswith("{") else {}
            info = msg.get("up", info)
            rows = _all_final((msg.get("status") or {}).get("cameras") or [], {c.ip for c in cameras}, min_blocks)
            if rows:
                break
        assert rows and info, f"no final blocks from {what}"
        yield RunningSite(info=info, cameras=rows, env=env,
                          store=tmp_path / "site" / "nodes" / "node-bank" / "data" / "store")
    finally:
        os.kill(up.pid, signal.SIGTERM)  # ours, by PID
        up.wait(timeout=60)


def extract(site: RunningSite, *, ip: str, from_ms: int, out: Path,
            timeout: float) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`frameledger extract --json` of `ip` from `from_ms` to the end of its last final block."""
    done = subprocess.run([sys.executable, "-m", "offchain.cli", "extract", "--camera", ip, "--from", str(from_ms),
                           "--to", str(site.cameras[ip]["lastBlock"]["windowEndMs"]), "--out", str(out),
                           "--store", str(site.store), "--rpc", site.info["rpc"],
                           "--deployment", site.info["deployment"], "--json"],
                          capture_output=True, text=True, env=site.env, timeout=timeout)
    return done, json.loads(done.stdout)
