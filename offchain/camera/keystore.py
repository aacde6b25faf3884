"""Device keys of cameras, in an encrypted keystore directory (C6).

Layout: one file per camera, ``<dir>/<camera-ip>.key``: the Ed25519 private key as PKCS#8 PEM,
encrypted with ``BestAvailableEncryption`` under the keystore passphrase, file mode 0600 (the
directory is created 0700). Rotation keeps each replaced key as ``<camera-ip>.key.<n>``
(n = 1, 2, ...), so frames signed before the rotation can still be checked and the old key can
be migrated or destroyed deliberately.

The passphrase comes from the ``passphrase`` argument or, when that is None, from the
environment variable ``FRAMELEDGER_KEYSTORE_PASSPHRASE``. A wrong passphrase raises
`WrongPassphrase`; every error here is a `KeystoreError`.

The public half that goes on chain (the camera's device key in the whitelist) is the raw
32-byte Ed25519 key: `public_key_bytes`.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

log = logging.getLogger(__name__)

__all__ = [
    "PASSPHRASE_ENV",
    "KeyExists",
    "KeyNotFound",
    "KeystoreError",
    "NoPassphrase",
    "WrongPassphrase",
    "archived_keys",
    "create_key",
    "key_path",
    "list_cameras",
    "load_archived",
    "load_key",
    "public_key_bytes",
    "rotate_key",
]

PASSPHRASE_ENV = "FRAMELEDGER_KEYSTORE_PASSPHRASE"
_SUFFIX = ".key"
# Camera "IPs" become file names: IPv4, IPv6 (colons) or a host-like name, nothing path-like.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_:%-][A-Za-z0-9._:%-]{0,254}$")


class KeystoreError(RuntimeError):
    """Base for every keystore problem."""


class NoPassphrase(KeystoreError):
    pass


class WrongPassphrase(KeystoreError):
    pass


class KeyNotFound(KeystoreError):
    pass


class KeyExists(KeystoreError):
    pass


def _passphrase(passphrase: str | bytes | None) -> bytes:
    if passphrase is None:
        passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None or passphrase == "" or passphrase == b"":
        raise NoPassphrase(f"no keystore passphrase: pass one or set {PASSPHRASE_ENV}")
    return passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)


def key_path(directory: str | os.PathLike[str], camera_ip: str) -> Path:
    if not _SAFE_NAME.match(camera_ip) or ".." in camera_ip:
        raise KeystoreError(f"camera ip {camera_ip!r} cannot name a keystore file")
    return Path(directory) / f"{camera_ip}{_SUFFIX}"


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """Raw 32-byte Ed25519 public key: what the camera whitelist holds on chain."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _pem(key: Ed25519PrivateKey, passphrase: bytes) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(passphrase))


def _write_private(path: Path, data: bytes) -> None:
    """Write with mode 0600 from the start (never world-readable, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)  # in case the umask was stricter than needed or the fs ignores modes


def _ensure_dir(directory: str | os.PathLike[str]) -> Path:
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def create_key(directory: str | os.PathLike[str], camera_ip: str, passphrase: str | bytes | None = None,
               *, overwrite: bool = False) -> Ed25519PrivateKey:
    """Generate a new device key for ``camera_ip`` and store it encrypted. Refuses to replace an
    existing key (`KeyExists`) unless ``overwrite``; use `rotate_key` to keep the old one."""
    secret = _passphrase(passphrase)
    _ensure_dir(directory)
    path = key_path(directory, camera_ip)
    if path.exists() and not overwrite:
        raise KeyExists(f"{path} exists; rotate it instead (rotate_key, or `camera keygen --rotate`)")
    key = Ed25519PrivateKey.generate()
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    _write_private(tmp, _pem(key, secret))
    os.replace(tmp, path)
    log.info("camera key created", extra={"camera": camera_ip, "path": str(path)})
    return key


def _load_file(path: Path, secret: bytes, camera_ip: str) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyNotFound(f"no key for camera {camera_ip} at {path}") from exc
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("keystore file readable by others", extra={"path": str(path), "mode": oct(mode)})
    if b"ENCRYPTED PRIVATE KEY" not in data:
        raise KeystoreError(f"{path} is not an encrypted PKCS#8 key")
    try:
        key = load_pem_private_key(data, password=secret)
    except ValueError as exc:
        raise WrongPassphrase(f"wrong keystore passphrase for {path} (or the file is damaged)") from exc
    except TypeError as exc:
        raise KeystoreError(f"{path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeystoreError(f"{path} holds a {type(key).__name__}, not an Ed25519 device key")
    return key


def load_key(directory: str | os.PathLike[str], camera_ip: str,
             passphrase: str | bytes | None = None) -> Ed25519PrivateKey:
    """The current device key of ``camera_ip``."""
    return _load_file(key_path(directory, camera_ip), _passphrase(passphrase), camera_ip)


def archived_keys(directory: str | os.PathLike[str], camera_ip: str) -> list[Path]:
    """Replaced keys of ``camera_ip``, oldest first (``<ip>.key.1``, ``<ip>.key.2``, ...)."""
    base = key_path(directory, camera_ip)
    found = []
    for p in base.parent.glob(base.name + ".*"):
        suffix = p.name[len(base.name) + 1 :]
        if suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found)]


def load_archived(directory: str | os.PathLike[str], camera_ip: str, n: int,
                  passphrase: str | bytes | None = None) -> Ed25519PrivateKey:
    path = key_path(directory, camera_ip).with_name(f"{camera_ip}{_SUFFIX}.{int(n)}")
    return _load_file(path, _passphrase(passphrase), camera_ip)


def rotate_key(directory: str | os.PathLike[str], camera_ip: str, passphrase: str | bytes | None = None,
               *, new_passphrase: str | bytes | None = None) -> Ed25519PrivateKey:
    """Replace the device key of ``camera_ip`` with a new one, keeping the old file as
    ``<ip>.key.<n>``. The current key is decrypted first, so a wrong passphrase changes nothing.
    ``new_passphrase`` re-encrypts the new key under another passphrase (migration); the old
    file keeps its own. The new public key must then be registered on chain."""
    secret = _passphrase(passphrase)
    new_secret = _passphrase(new_passphrase) if new_passphrase is not None else secret
    path = key_path(directory, camera_ip)
    _load_file(path, secret, camera_ip)  # proves the passphrase and that a key exists
    existing = archived_keys(directory, camera_ip)
    n = 1 + max((int(p.name.rsplit(".", 1)[1]) for p in existing), default=0)
    archived = path.with_name(f"{path.name}.{n}")
    key = Ed25519PrivateKey.generate()
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    _write_private(tmp, _pem(key, new_secret))
    # Hard-link the old key to its archive name first: the current name never goes missing.
    try:
        os.link(path, archived)
    except OSError:
        import shutil

        shutil.copy2(path, archived)
        os.chmod(archived, 0o600)
    os.replace(tmp, path)
    log.info("camera key rotated", extra={"camera": camera_ip, "archived": str(archived)})
    return key


def list_cameras(directory: str | os.PathLike[str]) -> list[str]:
    """Camera IPs with a current key in the keystore."""
    path = Path(directory)
    if not path.is_dir():
        return []
    return sorted(p.name[: -len(_SUFFIX)] for p in path.glob("*" + _SUFFIX) if p.is_file())
