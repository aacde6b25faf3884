"""A throw-away js-ipfs daemon on loopback, for tests and local demos.

Why js-ipfs: it is the only IPFS node serving the Kubo RPC API that installs and runs on these
machines (npm registry only; Kubo's Go binary cannot be downloaded here). It lives in its own npm
project, ``chain/ipfs``, because it needs overrides that must not leak into the contracts
toolchain: ``ipfs`` 0.66.1 on Node 20 only starts with ``@libp2p/tcp`` 6.1.2,
``@libp2p/websockets`` 5.0.5, ``mortice`` 3.0.4 and ``@multiformats/mafmt@^11`` 11.0.4 pinned.

What :class:`DevIpfsDaemon` does, and why:

1. ``npm ci --omit=optional`` in ``chain/ipfs`` unless ``node_modules/.installed`` is newer
   than ``package.json`` and ``package-lock.json`` (the Makefile's convention), under a file lock
   so parallel test processes don't install on top of each other. Optional packages are omitted
   because the only ones in the tree (wrtc, electron-webrtc) serve the disabled webRTCStar
   transport and their install scripts try to download binaries from outside the npm registry.
2. ``jsipfs init --profile=test --empty-repo`` in a fresh temp repo (``IPFS_PATH``), so no state
   leaks between runs and nothing touches ``~/.jsipfs``.
3. Rewrites the config so the node can only talk to itself: every address (Swarm, API, Gateway,
   RPC) on 127.0.0.1 port 0 (the kernel picks free ports, so there is no port race), no
   Bootstrap peers, no Delegates, MDNS, webRTCStar and NAT port mapping off, Routing ``none``.
4. ``jsipfs daemon --offline --enable-preload=false`` with ``NODE_ENV=test`` and
   ``NO_UPDATE_NOTIFIER=1`` (otherwise the ``ipfs`` CLI phones the npm registry for updates), then
   waits until ``/api/v0/version`` answers on the address the daemon wrote to ``$IPFS_PATH/api``.
5. On exit, SIGTERM to the daemon's own PID (SIGKILL after a grace period) and removes the repo.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ..paths import CHAIN_DIR
from .kubo import KuboStore, api_url_from_multiaddr

__all__ = ["DevIpfsDaemon", "IPFS_PROJECT_DIR", "ensure_installed", "DevIpfsError"]

IPFS_PROJECT_DIR = CHAIN_DIR / "ipfs"


class DevIpfsError(RuntimeError):
    """The dev daemon could not be installed or started; the message carries the log tail."""


def _installed_marker(project_dir: Path) -> Path:
    return project_dir / "node_modules" / ".installed"


def _is_current(project_dir: Path) -> bool:
    marker = _installed_marker(project_dir)
    if not marker.exists() or not (project_dir / "node_modules" / ".bin" / "jsipfs").exists():
        return False
    m = marker.stat().st_mtime
    return all(m >= (project_dir / f).stat().st_mtime for f in ("package.json", "package-lock.json"))


def ensure_installed(project_dir: Path = IPFS_PROJECT_DIR, *, timeout: float = 900.0) -> Path:
    """Run ``npm ci`` in ``project_dir`` if its install is missing or stale; return the ``jsipfs``
    executable. A no-op (two stat calls) when already installed."""
    project_dir = Path(project_dir)
    jsipfs = project_dir / "node_modules" / ".bin" / "jsipfs"
    if _is_current(project_dir):
        return jsipfs
    if shutil.which("npm") is None:
        raise DevIpfsError("npm is not on PATH: the dev IPFS daemon needs Node 20 and npm")
    # The lock lives outside node_modules, which npm ci deletes and recreates.
    key = hashlib.sha256(str(project_dir.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"frameledger-npm-ci-{key}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_current(project_dir):  # another process installed while we waited
            return jsipfs
        env = dict(os.environ, NO_UPDATE_NOTIFIER="1")
        proc = subprocess.run(
            ["npm", "ci", "--omit=optional", "--no-audit", "--no-fund", "--no-update-notifier",
             "--loglevel=error"],
            cwd=project_dir, env=env, capture_output=True, text=True, timeout=timeout,
        )
        if proc.returncode != 0:
            raise DevIpfsError(f"npm ci in {project_dir} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        _installed_marker(project_dir).touch()
    return jsipfs


def _loopback_config(config: dict[str, Any]) -> dict[str, Any]:
    """Make the freshly initialised node unable to reach anything but loopback."""
    addrs = config.setdefault("Addresses", {})
    addrs.update({
        "Swarm": ["/ip4/127.0.0.1/tcp/0"],
        "Announce": [],
        "NoAnnounce": [],
        "API": "/ip4/127.0.0.1/tcp/0",
        "Gateway": "/ip4/127.0.0.1/tcp/0",
        "RPC": "/ip4/127.0.0.1/tcp/0",
        "Delegates": [],
    })
    config["Bootstrap"] = []
    discovery = config.setdefault("Discovery", {})
    discovery.setdefault("MDNS", {})["Enabled"] = False
    discovery.setdefault("webRTCStar", {})["Enabled"] = False
    config.setdefault("Swarm", {})["DisableNatPortMap"] = True
    config["Routing"] = {"Type": "none"}
    return config


class DevIpfsDaemon:
    """``with DevIpfsDaemon() as node: store = node.store()`` — a private js-ipfs node.

    Attributes once started: ``api_url`` (``http://127.0.0.1:PORT``), ``repo`` (the temp
    ``IPFS_PATH``), ``pid``, ``log_path`` and ``start_seconds`` (init + daemon start, measured).
    """

    def __init__(self, *, project_dir: Path = IPFS_PROJECT_DIR, start_timeout: float = 90.0,
                 keep_repo: bool = False):
        self.project_dir = Path(project_dir)
        self.start_timeout = start_timeout
        self.keep_repo = keep_repo
        self.api_url: str | None = None
        self.repo: Path | None = None
        self.log_path: Path | None = None
        self.pid: int | None = None
        self.start_seconds: float | None = None
        self._tmp: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._log = None

    # ------------------------------------------------------------------ lifecycle

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(IPFS_PATH=str(self.repo), NODE_ENV="test", NO_UPDATE_NOTIFIER="1")
        env.pop("DEBUG", None)  # libp2p's debug logging would flood the log file
        return env

    def start(self) -> "DevIpfsDaemon":
        if self._proc is not None:
            return self
        jsipfs = ensure_installed(self.project_dir)
        t0 = time.monotonic()
        self._tmp = Path(tempfile.mkdtemp(prefix="frameledger-ipfs-"))
        self.repo = self._tmp / "repo"
        self.log_path = self._tmp / "daemon.log"
        env = self._env()
        try:
            init = subprocess.run(
                [str(jsipfs), "init", "--profile=test", "--empty-repo"],
                env=env, capture_output=True, text=True, timeout=60,
            )
            if init.returncode != 0:
                raise DevIpfsError(f"jsipfs init failed ({init.returncode}):\n{init.stdout}{init.stderr}")
            cfg_path = self.repo / "config"
            cfg_path.write_text(json.dumps(_loopback_config(json.loads(cfg_path.read_text())), indent=2))

            self._log = open(self.log_path, "wb")
            self._proc = subprocess.Popen(
                [str(jsipfs), "daemon", "--offline", "--enable-preload=false"],
                env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal goes to pytest, not the node
            )
            self.pid = self._proc.pid
            atexit.register(self.stop)
            self.api_url = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _wait_ready(self) -> str:
        """Poll until the daemon has written ``$IPFS_PATH/api`` and answers ``version`` there."""
        deadline = time.monotonic() + self.start_timeout
        api_file = self.repo / "api"
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise DevIpfsError(f"js-ipfs daemon exited with {self._proc.returncode}:\n{self.log_tail()}")
                if api_file.exists():
                    try:
                        url = api_url_from_multiaddr(api_file.read_text())
                        if client.post(url + "/api/v0/version").status_code == 200:
                            return url
                    except (ValueError, httpx.HTTPError):
                        pass
                time.sleep(0.1)
        raise DevIpfsError(f"js-ipfs API not ready after {self.start_timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except (OSError, AttributeError):
            return ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the daemon by PID, SIGKILL after ``grace`` seconds, then delete the repo."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
                except ProcessLookupError:
                    pass
            atexit.unregister(self.stop)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None and not self.keep_repo:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def store(self, **kwargs: Any) -> KuboStore:
        """A :class:`KuboStore` on this daemon (keyword arguments go to its constructor)."""
        if self.api_url is None:
            raise DevIpfsError("daemon not started")
        return KuboStore(self.api_url, **kwargs)

    def __enter__(self) -> "DevIpfsDaemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    """``python -m offchain.store.devipfs``: run a dev node in the foreground until Ctrl-C."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean stop on kill PID too
    with DevIpfsDaemon() as node:
        print(f"js-ipfs API {node.api_url}  repo {node.repo}  pid {node.pid}  "
              f"(started in {node.start_seconds:.1f}s); Ctrl-C to stop", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
