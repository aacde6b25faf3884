"""Signing accounts (nodes, members) in encrypted keystore files (the Ethereum V3 JSON keystore format, scrypt),
so private keys never appear on command lines, in environment dumps or in logs.

The password comes, in this order, from ``--password-file FILE`` (first line), from the
environment variable named by ``--password-env`` (default ``FRAMELEDGER_KEYSTORE_PASSPHRASE``,
the one camera keystores use too), or from a prompt when stdin is a terminal.

Limits: a keystore file is at most 64 KiB; a password file at most 4 KiB.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_typing import HexStr
from web3 import Web3


PASSWORD_ENV = "FRAMELEDGER_KEYSTORE_PASSPHRASE"


class KeyfileError(ValueError):
    """A keystore or password problem the operator can fix; the message is one line."""

MAX_KEYSTORE_BYTES = 64 * 1024
MAX_PASSWORD_FILE_BYTES = 4 * 1024


@dataclass(frozen=True)
class PasswordSource:
    """Where a keystore password comes from; resolved only when a key is actually needed."""

    file: str | None = None
    env: str = PASSWORD_ENV
    prompt: bool = True

    def resolve(self, purpose: str) -> str:
        if self.file:
            path = Path(self.file)
            try:
                if path.stat().st_size > MAX_PASSWORD_FILE_BYTES:
                    raise KeyfileError(f"password file {path} is larger than {MAX_PASSWORD_FILE_BYTES} bytes")
                text = path.read_text().splitlines()
            except OSError as exc:
                raise KeyfileError(f"cannot read password file {path}: {exc.strerror or exc}") from None
            if not text or not text[0]:
                raise KeyfileError(f"password file {path} is empty")
            return text[0]
        value = os.environ.get(self.env)
        if value:
            return value
        if self.prompt and sys.stdin.isatty():
            value = getpass.getpass(f"password for {purpose}: ")
            if value:
                return value
        raise KeyfileError(f"no password for {purpose}: use --password-file FILE, set {self.env}, or run in a terminal")


def _read_keystore(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_KEYSTORE_BYTES:
            raise KeyfileError(f"{path} is larger than {MAX_KEYSTORE_BYTES} bytes: not a keystore")
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeyfileError(f"no keystore at {path}: create one with `frameledger account new --keystore {path}`") from None
    except OSError as exc:
        raise KeyfileError(f"cannot read keystore {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KeyfileError(f"{path} is not a JSON keystore") from None
    if not isinstance(data, dict) or "crypto" not in data and "Crypto" not in data:
        raise KeyfileError(f"{path} is not an Ethereum V3 keystore (no crypto section)")
    return data


def keystore_address(path: str | os.PathLike[str]) -> str:
    """The checksummed address a keystore holds, read without its password."""
    data = _read_keystore(Path(path))
    address = data.get("address")
    if not isinstance(address, str) or not Web3.is_address("0x" + address.removeprefix("0x")):
        raise KeyfileError(f"{path} does not record its address")
    return Web3.to_checksum_address("0x" + address.removeprefix("0x"))


def load_private_key(path: str | os.PathLike[str], password: PasswordSource) -> str:
    """Decrypt a keystore; the key is returned to the caller only, never printed or logged."""
    path = Path(path)
    data = _read_keystore(path)
    secret = password.resolve(str(path))
    try:
        return "0x" + bytes(Account.decrypt(data, secret)).hex()
    except ValueError:
        raise KeyfileError(f"wrong password for {path} (or the keystore is damaged)") from None


def write_keystore(path: str | os.PathLike[str], private_key: str, password: PasswordSource,
                   *, overwrite: bool = False) -> str:
    """Encrypt ``private_key`` into ``path`` (mode 0600, never readable by others); its address."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise KeyfileError(f"{path} exists; refusing to replace a key (remove it deliberately first)")
    secret = password.resolve(f"new keystore {path}")
    data = Account.encrypt(HexStr(private_key), secret)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, json.dumps(data).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return str(Account.from_key(private_key).address)


def new_keystore(path: str | os.PathLike[str], password: PasswordSource) -> str:
    """A fresh random account in a new keystore; its address."""
    return write_keystore(path, "0x" + Account.create().key.hex().removeprefix("0x"), password)


def resolve_address(text: str) -> str:
    """An account given as a 0x address or as the path of a keystore file holding it."""
    text = text.strip()
    if text.startswith("0x") and len(text) == 42:
        if not Web3.is_address(text):
            raise KeyfileError(f"{text} is not a valid address (bad checksum?)")
        return Web3.to_checksum_address(text)
    if len(text) > 4096:
        raise KeyfileError("account argument too long")
    path = Path(text)
    if path.is_file():
        return keystore_address(path)
    raise KeyfileError(f"{text!r} is neither a 0x address nor a keystore file")
