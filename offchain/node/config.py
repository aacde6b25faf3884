"""Node configuration: one TOML file per node, every key overridable from the environment.

    name = "node-bank"
    data_dir = "/var/lib/frameledger/node-bank"
    keystore_file = "node-key.json"  # encrypted V3 keystore (`frameledger node init` writes one);
    keystore_password_file = ""      # its password: this file, else FRAMELEDGER_KEYSTORE_PASSPHRASE
    # (or, for dev chains only: private_key = "0x..." / private_key_file = "..." hex, mode 0600)
    rpc_url = "http://127.0.0.1:8545"
    deployment = "chain/deployments/1337.json"
    ingest_host = "127.0.0.1"
    ingest_port = 7001
    api_host = "127.0.0.1"
    api_port = 8001
    public_url = "http://127.0.0.1:8001"   # how peers reach this node's API
    peers = ["http://127.0.0.1:8002", "http://127.0.0.1:8003"]
    store = "local"                 # or "kubo" with store_url = "http://127.0.0.1:5001"
    window_ms = 60000               # block window (B1)
    missing_wait_ms = 1500          # a seq hole older than this is declared missing (I5)
    repair_deadline_ms = 6000       # a window with open alarms is sealed anyway after this
    idle_close_ms = 4000            # a camera silent this long closes its current window
    proposer_timeout_ms = 5000      # the next node in the rotation takes over after this (B3)
    clock_skew_ms = 500             # tolerated clock difference + anchor inclusion time (docs/NODES.md)
    hop_limit = 2                   # how far a repair alarm travels (I6)
    repair_coalesce_ms = 20         # repair messages to a peer gathered this long, then sent as one request
    substitute_min_ms = 1000        # gaps at least this long are filled from a group camera (I7)
    alarm_centre = false            # this node runs the alarm centre (I9)
    alarm_hold_ms = 3000            # same alarm at every node this long -> risk warning on chain
    feedback_webhooks = []          # repair feedback is also POSTed here (I8)
    http_max_body_bytes = 8388608   # any HTTP request body over this is refused with 413
    http_max_inflight = 64          # HTTP requests handled at once; more get 503
    peer_auth_window_ms = 30000     # a peer signature's time may differ from ours by this much
    peer_nonce_capacity = 100000    # nonces remembered per window; beyond, signed requests get 503
    # camera ingest limits (docs/TRANSPORT.md, "Limits"):
    ingest_max_connections = 512    # open camera connections; one more is closed at once
    ingest_max_per_address = 32     # open camera connections from one IP address
    ingest_max_unproven_per_address = 4  # of those, still in their handshake (no valid hello yet)
    ingest_handshake_timeout_ms = 5000   # no valid signed hello this long after connecting -> closed
    ingest_idle_timeout_ms = 60000  # nothing received this long -> closed
    ingest_max_message_bytes = 16781312  # largest message after the hello (16 MiB + 4 KiB; 64 KiB before)
    ingest_max_invalid = 100        # closed once invalid messages exceed this + 1/10 of the valid ones
    ingest_ack_interval_ms = 50     # acknowledgements are sent at most this often per connection
    # ingest throughput (docs/TRANSPORT.md, "Throughput"):
    ingest_verify_workers = -1      # processes checking SHA-256 + signatures; -1: cores - 1 (>= 1), 0: inline
    ingest_processes = 0            # ingest processes each streaming its cameras end to end (ingest_procs.py);
                                    # -1: one per core, 0: none (one event loop + the verify workers)
    ingest_queue_frames = 4096      # frames read and not yet answered, node-wide; full = sockets not read
    ingest_queue_bytes = 268435456  # the same in bytes (256 MiB)
    ingest_inflight_per_connection = 64  # frames of one connection in the pipeline at once
    ingest_commit_max_frames = 1024 # frames per group commit (one fsync of the store, one of SQLite)
    ingest_commit_linger_ms = 5     # a batch waits this long for more frames before it is committed
    anchoring = "header"            # "header": VideoLedger.anchor + attest per camera window;
                                    # "batch": one quorum-signed BatchLedger batch per window (docs/NODES.md)
    seal_sessions = false           # frames of formed sessions' cameras rest encrypted (S5, docs/ENCRYPTION.md)

Environment: FRAMELEDGER_NODE_<KEY> (upper case) overrides <key>; lists are comma-separated.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..chain.keyfile import KeyfileError, PasswordSource, load_private_key
from ..core.windows import WindowRules


ANCHORING_MODES = ("header", "batch")


class ConfigError(ValueError):
    """The node configuration is missing something or has a value of the wrong kind."""


@dataclass
class NodeConfig:
    name: str
    data_dir: Path
    rpc_url: str
    deployment: Path
    private_key: str = ""
    private_key_file: str = ""
    keystore_file: str = ""
    keystore_password_file: str = ""
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 0
    api_host: str = "127.0.0.1"
    api_port: int = 0
    public_url: str = ""
    peers: list[str] = field(default_factory=list)
    store: str = "local"
    store_url: str = ""
    store_fsync: str = "file"
    window_ms: int = 60_000
    missing_wait_ms: int = 1_500
    repair_deadline_ms: int = 6_000
    idle_close_ms: int = 4_000
    proposer_timeout_ms: int = 5_000
    clock_skew_ms: int = 500
    hop_limit: int = 2
    repair_coalesce_ms: int = 20
    substitute_min_ms: int = 1_000
    alarm_centre: bool = False
    alarm_hold_ms: int = 3_000
    alarm_poll_ms: int = 1_000
    feedback_webhooks: list[str] = field(default_factory=list)
    tick_ms: int = 250
    http_max_body_bytes: int = 8 * 1024 * 1024
    http_max_inflight: int = 64
    peer_auth_window_ms: int = 30_000
    peer_nonce_capacity: int = 100_000
    ingest_max_connections: int = 512
    ingest_max_per_address: int = 32
    ingest_max_unproven_per_address: int = 4
    ingest_handshake_timeout_ms: int = 5_000
    ingest_idle_timeout_ms: int = 60_000
    ingest_max_message_bytes: int = 16 * 1024 * 1024 + 4 * 1024
    ingest_max_invalid: int = 100
    ingest_ack_interval_ms: int = 50
    ingest_verify_workers: int = -1
    ingest_processes: int = 0
    ingest_queue_frames: int = 4096
    ingest_queue_bytes: int = 256 * 1024 * 1024
    ingest_inflight_per_connection: int = 64
    ingest_commit_max_frames: int = 1024
    ingest_commit_linger_ms: int = 5
    anchoring: str = "header"
    seal_sessions: bool = False

    def key(self) -> str:
        if self.private_key:
            return self.private_key
        if self.private_key_file:
            return Path(self.private_key_file).read_text().strip()
        if self.keystore_file:
            try:
                return load_private_key(self.keystore_file, PasswordSource(file=self.keystore_password_file or None,
                                                                           prompt=False))
            except KeyfileError as exc:
                raise ConfigError(f"{self.name}: {exc}") from None
        raise ConfigError(f"{self.name}: set keystore_file (or, on a dev chain, private_key or private_key_file)")

    @property
    def api_url(self) -> str:
        return self.public_url or f"http://{self.api_host}:{self.api_port}"

    @classmethod
    def load(cls, path: Path | str, env: dict[str, str] | None = None) -> "NodeConfig":
        path = Path(path)
        try:
            raw: dict[str, Any] = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read node config {path}: {exc}") from exc
        return cls.from_dict(raw, env)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], env: dict[str, str] | None = None) -> "NodeConfig":
        env = os.environ if env is None else env
        values: dict[str, Any] = dict(raw)
        for f in fields(cls):
            override = env.get(f"FRAMELEDGER_NODE_{f.name.upper()}")
            if override is not None:
                values[f.name] = override
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown node config keys: {', '.join(sorted(unknown))}")
        out: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in values:
                continue
            out[f.name] = _coerce(f.name, f.type, values[f.name])
        for required in ("name", "data_dir", "rpc_url", "deployment"):
            if required not in out:
                raise ConfigError(f"node config needs '{required}'")
        config = cls(**out)
        if config.anchoring not in ANCHORING_MODES:
            raise ConfigError(f"node config 'anchoring': {config.anchoring!r} is not one of {', '.join(ANCHORING_MODES)}")
        try:
            config.window_rules()
        except ValueError as exc:
            raise ConfigError(f"node config: {exc}") from None
        return config

    def ingest_process_count(self) -> int:
        """How many ingest processes stream the cameras (0: the main process does, with its
        verify workers). Sealed sessions need the session keys the main process holds: 0."""
        if self.seal_sessions or self.ingest_processes == 0:
            return 0
        return self.ingest_processes if self.ingest_processes > 0 else max(1, min(16, os.cpu_count() or 1))

    def window_rules(self) -> WindowRules:
        """The protocol timing the window decisions use (`core.windows`); raises ValueError when
        it leaves a proposer no room to send (docs/NODES.md, "Proposer rotation")."""
        return WindowRules(window_ms=self.window_ms, idle_close_ms=self.idle_close_ms,
                           repair_deadline_ms=self.repair_deadline_ms, proposer_timeout_ms=self.proposer_timeout_ms,
                           clock_skew_ms=self.clock_skew_ms)

    def to_toml(self) -> str:
        lines = []
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool):
                lines.append(f"{f.name} = {'true' if v else 'false'}")
            elif isinstance(v, int):
                lines.append(f"{f.name} = {v}")
            elif isinstance(v, list):
                lines.append(f"{f.name} = [{', '.join(_q(x) for x in v)}]")
            else:
                lines.append(f"{f.name} = {_q(str(v))}")
        return "\n".join(lines) + "\n"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _coerce(name: str, typ: Any, value: Any) -> Any:
    typ = str(typ)
    try:
        if typ == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if typ == "int":
            return int(value)
        if typ == "Path":
            return Path(value)
        if typ.startswith("list"):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return [str(v) for v in value]
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"node config '{name}': {value!r} is not a valid {typ}") from exc
