"""The embedded dev chain: an Anvil process the project starts itself on a free loopback port.

Anvil ships inside the npm package `@foundry-rs/anvil-linux-amd64` (installed by `npm ci`), so no
toolchain download is needed. The process is ours: we keep its PID and stop exactly that.
"""

from __future__ import annotations

import logging
import os
import signal
import random
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from eth_account import Account

from ..paths import ANVIL_BIN

log = logging.getLogger(__name__)

# Anvil's well-known development mnemonic. These keys are public; they exist only on dev chains.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_CHAIN_ID = 31337


class DevChainError(RuntimeError):
    """Anvil could not be started or did not answer."""


# Ports handed out, from below the kernel's ephemeral range: a port the kernel picks for `bind(0)`
# comes from that range, which also supplies every outgoing connection's source port, so between
# the pick and the daemon's own bind another process's connection could take it (a node failed to
# start with EADDRINUSE that way under a loaded test run). Ports below it are taken only by an
# explicit bind; the test bind here skips those in use, `_HANDED_OUT` those this process gave out.
def _below_ephemeral() -> tuple[int, int] | None:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return (max(10000, low - 12768), low) if low > 11000 else None


_PORT_RANGE = _below_ephemeral()
_HANDED_OUT: set[int] = set()


def free_loopback_port() -> int:
    """A loopback TCP port nothing listens on, outside the ephemeral range (see above)."""
    for _ in range(200 if _PORT_RANGE else 0):
        port = random.randrange(*_PORT_RANGE)  # type: ignore[misc]
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # the range is crowded: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dev_private_keys(count: int, mnemonic: str = DEV_MNEMONIC) -> list[str]:
    """The private keys Anvil funds for `mnemonic`, derived locally (m/44'/60'/0'/0/i)."""
    Account.enable_unaudited_hdwallet_features()
    return [
        Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}").key.hex()
        for i in range(count)
    ]


@dataclass
class DevChain:
    """A running Anvil. Use as a context manager, or call start()/stop()."""

    accounts: int = 12
    port: int = 0
    block_time: float | None = None
    anvil_bin: Path = ANVIL_BIN
    log_path: Path | None = None
    # Keep the chain across restarts: Anvil loads this file on start (when it exists), dumps to
    # it on exit and every `state_interval` seconds, so even a SIGKILL loses at most that much.
    state_path: Path | None = None
    state_interval: int = 5
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def private_keys(self) -> list[str]:
        return dev_private_keys(self.accounts)

    def start(self, timeout: float = 20.0) -> "DevChain":
        if not self.anvil_bin.exists():
            raise DevChainError(f"{self.anvil_bin} not found: run `npm ci` (make deps) first")
        self.port = self.port or free_loopback_port()
        cmd = [
            str(self.anvil_bin),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--chain-id", str(DEV_CHAIN_ID),
            "--accounts", str(self.accounts),
            "--mnemonic", DEV_MNEMONIC,
            "--no-request-size-limit",
        ]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        if self.state_path:
            cmd += ["--state", str(self.state_path), "--state-interval", str(self.state_interval)]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DevChainError(f"anvil exited with {self.process.returncode}: {' '.join(cmd)}")
            try:
                r = httpx.post(self.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1)
                if r.status_code == 200 and "result" in r.json():
                    log.info("dev chain up", extra={"rpc": self.rpc_url, "pid": self.process.pid})
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise DevChainError(f"anvil did not answer on {self.rpc_url} within {timeout}s")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)  # our own child, by PID
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> "DevChain":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
