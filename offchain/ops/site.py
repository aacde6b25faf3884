"""`frameledger up SITE.toml`: a whole local consortium from one file — the dev chain (its state
kept in the site directory), the deployment from the plan with dev accounts, one node process per
plan node (each with an encrypted keystore), the cameras registered, the genesis sealed, and one
`frameledger camera run` per camera streaming a file, a URL or a sample. Runs in the foreground;
Ctrl-C / SIGTERM stops what it started, by PID. Started again on the same directory, it resumes:
the chain, the deployment, the keys, the registrations and the nodes' data are reused.

    dir = "my-site"             # relative to this file (default: the file's name without .toml)
    rpc_port = 8545             # 0 = any free loopback port
    plan = "chain/consortium.json"
    window_ms = 10000
    anchoring = "header"        # or "batch": one BatchLedger batch per window (docs/OPERATIONS.md)
    status_every_s = 30         # print `frameledger status` this often (0 = only once)

    [[cameras]]
    ip = "10.0.0.1"
    source = "sample:vtest"     # a file, an rtsp:// or http(s):// URL, or sample:NAME
    owner = 1                   # plan account index of the member that owns it (default 1)
    group = "lobby"
    speed = 1.0                 # replay pace (files); 0 = as fast as possible
    loop_s = 600                # loop the source for this many seconds of capture time (optional)
    max_frames = 300            # stop after this many frames (optional)
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..camera import keystore as camera_keys
from ..chain.client import Signer
from ..chain.deployer import Deployment, deploy, load_plan
from ..chain.devchain import DevChain, DevChainError, free_loopback_port
from ..chain.keyfile import PASSWORD_ENV, PasswordSource, write_keystore
from ..chain.ledger import ConsortiumClient
from ..core.block import camera_id
from ..node.cluster import Cluster, ClusterError, NodeProcess
from ..node.config import NodeConfig
from .admin import parse_group
from .errors import OpsError
from .session import load_deployment, open_chain

MAX_SITE_BYTES = 64 * 1024
MAX_CAMERAS = 32
_SITE_KEYS = {"dir", "rpc_port", "plan", "window_ms", "anchoring", "status_every_s", "cameras"}
_CAMERA_KEYS = {"ip", "source", "owner", "group", "speed", "loop_s", "max_frames"}


@dataclass(frozen=True)
class CameraSpec:
    ip: str
    source: str
    owner: int = 1
    group: str = ""
    speed: float = 1.0
    loop_s: float | None = None
    max_frames: int | None = None


@dataclass(frozen=True)
class Site:
    directory: Path
    rpc_port: int = 8545
    plan: Path | None = None
    window_ms: int = 10_000
    status_every_s: float = 30.0
    cameras: list[CameraSpec] = field(default_factory=list)
    anchoring: str = "header"


def load_site(path: Path) -> Site:
    try:
        if path.stat().st_size > MAX_SITE_BYTES:
            raise OpsError(f"{path} is larger than {MAX_SITE_BYTES} bytes")
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise OpsError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OpsError(f"{path}: not TOML ({exc})") from None
    unknown = set(raw) - _SITE_KEYS
    if unknown:
        raise OpsError(f"{path}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(_SITE_KEYS))})")
    cams = raw.get("cameras", [])
    if not isinstance(cams, list) or len(cams) > MAX_CAMERAS:
        raise OpsError(f"{path}: cameras must be a list of at most {MAX_CAMERAS} [[cameras]] tables")
    try:
        site = Site(
            directory=(path.parent / str(raw.get("dir", path.stem))).resolve(),
            rpc_port=int(raw.get("rpc_port", 8545)),
            plan=(path.parent / raw["plan"]).resolve() if "plan" in raw else None,
            window_ms=int(raw.get("window_ms", 10_000)),
            status_every_s=float(raw.get("status_every_s", 30)),
            cameras=[_camera(c) for c in cams],
            anchoring=str(raw.get("anchoring", "header")),
        )
    except (TypeError, ValueError) as exc:
        raise OpsError(f"{path}: {exc}") from None
    if not 0 <= site.rpc_port < 65536 or not 1_000 <= site.window_ms <= 3_600_000 or site.status_every_s < 0:
        raise OpsError(f"{path}: rpc_port 0-65535, window_ms 1000-3600000, status_every_s >= 0")
    if site.anchoring not in ("header", "batch"):
        raise OpsError(f"{path}: anchoring is \"header\" or \"batch\", not {site.anchoring!r}")
    if len({c.ip for c in site.cameras}) != len(site.cameras):
        raise OpsError(f"{path}: two cameras with the same ip")
    return site


def _camera(raw: Any) -> CameraSpec:
    if not isinstance(raw, dict) or not {"ip", "source"} <= set(raw) or set(raw) - _CAMERA_KEYS:
        raise ValueError(f"a [[cameras]] table needs ip and source, and knows only {', '.join(sorted(_CAMERA_KEYS))}")
    spec = CameraSpec(ip=str(raw["ip"]), source=str(raw["source"]), owner=int(raw.get("owner", 1)),
                      group=str(raw.get("group", "")), speed=float(raw.get("speed", 1.0)),
                      loop_s=float(raw["loop_s"]) if "loop_s" in raw else None,
                      max_frames=int(raw["max_frames"]) if "max_frames" in raw else None)
    try:
        camera_keys.key_path("/", spec.ip)  # the ip must be able to name a keystore file
    except camera_keys.KeystoreError as exc:
        raise ValueError(str(exc)) from None
    parse_group(spec.group)
    return spec


class SiteRunner:
    """Everything `up` started, so that exactly that is stopped."""

    def __init__(self, site: Site, say: Callable[[str], None]):
        self.site = site
        self.say = say
        self.chain: DevChain | None = None
        self.cluster = Cluster(work_dir=site.directory)
        self.cameras: list[subprocess.Popen] = []
        self.passphrase = self._passphrase()

    def _passphrase(self) -> str:
        """The site's keystore passphrase: $FRAMELEDGER_KEYSTORE_PASSPHRASE, else one made once
        and kept in DIR/secrets/passphrase (mode 0600)."""
        if os.environ.get(PASSWORD_ENV):
            return os.environ[PASSWORD_ENV]
        path = self.site.directory / "secrets" / "passphrase"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24) + "\n")
        return path.read_text().splitlines()[0]

    # ------------------------------------------------------------- bring up
    def start(self) -> dict[str, Any]:
        d = self.site.directory
        d.mkdir(parents=True, exist_ok=True)
        port = self.site.rpc_port or free_loopback_port()
        self.chain = DevChain(accounts=12, port=port, log_path=d / "anvil.log", state_path=d / "chain-state.json")
        try:
            self.chain.start()
        except DevChainError as exc:
            raise OpsError(f"{exc} (is port {port} taken?)") from None
        w3 = open_chain(self.chain.rpc_url)
        plan = load_plan(self.site.plan)
        keys = self.chain.private_keys
        deployment = self._deployment(w3, plan, keys)
        self._register_cameras(w3, deployment, keys)
        self._start_nodes(deployment, plan, keys)
        self._start_cameras()
        return {"rpc": self.chain.rpc_url, "deployment": str(d / "deployments" / f"{deployment.chain_id}.json"),
                "nodes": [{"name": n.name, "api": n.config.api_url, "ingest": f"{n.ingest[0]}:{n.ingest[1]}"}
                          for n in self.cluster.nodes],
                "cameras": [{"ip": c.ip, "source": c.source} for c in self.site.cameras]}

    def _deployment(self, w3: Any, plan: dict[str, Any], keys: list[str]) -> Deployment:
        record = self.site.directory / "deployments" / f"{w3.eth.chain_id}.json"
        if record.exists():
            try:
                found = load_deployment(w3, record)
                self.say(f"resuming the deployment in {record}")
                return found
            except OpsError as exc:
                self.say(f"redeploying: {exc}")
        return deploy(w3, keys, plan, out_dir=record.parent)

    def _register_cameras(self, w3: Any, deployment: Deployment, keys: list[str]) -> None:
        founder = ConsortiumClient(Signer(w3, keys[0]), deployment.consortium)
        known = set(founder.camera_ids())
        store = self.site.directory / "camera-keys"
        for cam in self.site.cameras:
            if camera_id(cam.ip) in known:
                continue
            try:
                key = camera_keys.create_key(store, cam.ip, self.passphrase)
            except camera_keys.KeyExists:
                key = camera_keys.load_key(store, cam.ip, self.passphrase)
            if not 0 <= cam.owner < len(keys):
                raise OpsError(f"camera {cam.ip}: owner {cam.owner} is not a plan account")
            owner = founder.as_signer(Signer(w3, keys[cam.owner]))
            owner.register_camera(cam.ip, camera_keys.public_key_bytes(key), parse_group(cam.group))
        if self.site.cameras and not founder.genesis_sealed():
            founder.seal_genesis()

    def _start_nodes(self, deployment: Deployment, plan: dict[str, Any], keys: list[str]) -> None:
        d = self.site.directory
        plan_nodes = plan.get("nodes", [])
        api_ports = [free_loopback_port() for _ in plan_nodes]
        urls = [f"http://127.0.0.1:{p}" for p in api_ports]
        password_file = d / "secrets" / "passphrase"
        for i, n in enumerate(plan_nodes):
            node_dir = d / "nodes" / n["name"]
            key_file = node_dir / "node-key.json"
            if not key_file.exists():
                write_keystore(key_file, keys[n["account"]], PasswordSource(file=None, prompt=False)
                               if os.environ.get(PASSWORD_ENV) else PasswordSource(file=str(password_file)))
            config = NodeConfig.from_dict({
                "name": n["name"], "data_dir": str(node_dir / "data"), "rpc_url": self.chain.rpc_url,
                "deployment": str(d / "deployments" / f"{deployment.chain_id}.json"), "keystore_file": str(key_file),
                "keystore_password_file": "" if os.environ.get(PASSWORD_ENV) else str(password_file),
                "ingest_port": free_loopback_port(), "api_port": api_ports[i], "public_url": urls[i],
                "peers": [u for u in urls if u != urls[i]], "alarm_centre": i == 0, "window_ms": self.site.window_ms,
                "anchoring": self.site.anchoring,
            }, env={})
            path = node_dir / "node.toml"
            path.write_text(config.to_toml())
            self.cluster.nodes.append(NodeProcess(config, path, node_dir / "node.log"))
        try:
            self.cluster.start_nodes()
        except ClusterError as exc:
            raise OpsError(str(exc)) from None

    def _start_cameras(self) -> None:
        nodes = [arg for n in self.cluster.nodes for arg in ("--node", f"{n.name}={n.ingest[0]}:{n.ingest[1]}")]
        env = dict(os.environ, **{PASSWORD_ENV: self.passphrase})
        for cam in self.site.cameras:
            argv = [sys.executable, "-m", "offchain.cli", "camera", "run", "--ip", cam.ip, "--source", cam.source,
                    "--keystore", str(self.site.directory / "camera-keys"), "--speed", str(cam.speed), *nodes]
            if cam.loop_s is not None:
                argv += ["--loop-seconds", str(cam.loop_s)]
            if cam.max_frames is not None:
                argv += ["--max-frames", str(cam.max_frames)]
            log = open(self.site.directory / f"camera-{cam.ip}.log", "ab")
            self.cameras.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))

    # ------------------------------------------------------------- stop
    def stop(self) -> None:
        for proc in self.cameras:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)  # ours, by PID
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.cluster.stop()
        if self.chain:
            self.chain.stop()


def run_site(site: Site, say: Callable[[str], None], report: Callable[[dict[str, Any]], None],
             status: Callable[[dict[str, Any]], None]) -> int:
    """Bring the site up, report it, print its status every ``status_every_s``, stop on a signal."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    runner = SiteRunner(site, say)
    try:
        info = runner.start()
        report(info)
        status(info)
        while not stop.wait(site.status_every_s or 3600):
            if site.status_every_s:
                status(info)
        return 0
    finally:
        runner.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
