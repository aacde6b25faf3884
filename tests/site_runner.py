"""One camera in a `frameledger up` site, run with the CLI only until its blocks are final, and
`frameledger extract` of a range of it: the shared path of the live-camera site tests (RTSP,
MJPEG, audio). The site process is the test's own, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunningSite:
    info: dict[str, Any]    # the `up` line: rpc, deployment, …
    camera: dict[str, Any]  # the camera's status row once `min_blocks` are final
    env: dict[str, str]     # the environment the CLI runs in (no FRAMELEDGER_* of the caller)
    store: Path             # node-bank's store, where the extracts read frames


@contextmanager
def running_site(tmp_path: Path, *, ip: str, source: str, min_blocks: int, extra: str = "",
                 window_ms: int = 5000, what: str = "the camera") -> Iterator[RunningSite]:
    """`frameledger up` with one camera (`extra`: more TOML lines of its table) until the camera
    has `min_blocks` final blocks; the site stops when the block ends."""
    site = tmp_path / "site.toml"
    site.write_text(f'dir = "site"\nrpc_port = 0\nwindow_ms = {window_ms}\nstatus_every_s = 2\n\n'
                    f'[[cameras]]\nip = "{ip}"\nsource = "{source}"\n{extra}')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMELEDGER_")}
    up = subprocess.Popen([sys.executable, "-m", "offchain.cli", "up", str(site), "--json"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    try:
        info, camera = None, None
        assert up.stdout is not None
        for line in up.stdout:
            msg = json.loads(line) if line.startswith("{") else {}
            info = msg.get("up", info)
            cams = (msg.get("status") or {}).get("cameras") or [{}]
            if (cams[0].get("lastBlock") or {}).get("finalized") and cams[0]["blocks"] >= min_blocks:
                camera = cams[0]
                break
        assert camera and info, f"no final blocks from {what}"
        yield RunningSite(info=info, camera=camera, env=env,
                          store=tmp_path / "site" / "nodes" / "node-bank" / "data" / "store")
    finally:
        os.kill(up.pid, signal.SIGTERM)  # ours, by PID
        up.wait(timeout=60)


def extract(site: RunningSite, *, ip: str, from_ms: int, out: Path,
            timeout: float) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`frameledger extract --json` of `ip` from `from_ms` to the end of its last final block."""
    done = subprocess.run([sys.executable, "-m", "offchain.cli", "extract", "--camera", ip, "--from", str(from_ms),
                           "--to", str(site.camera["lastBlock"]["windowEndMs"]), "--out", str(out),
                           "--store", str(site.store), "--rpc", site.info["rpc"],
                           "--deployment", site.info["deployment"], "--json"],
                          capture_output=True, text=True, env=site.env, timeout=timeout)
    return done, json.loads(done.stdout)
