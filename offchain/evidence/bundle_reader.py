"""Reading a bundle that may have been made by an attacker: bounded, streamed, names checked.

A bundle is a zip (or the directory it was unzipped into) from someone the verifier does not
trust. Before anything is read, the member directory is checked: a name that is absolute, has a
``..`` component, a backslash, a drive letter or a NUL (``bundle.member.unsafe``), and a name
that appears twice (``bundle.member.duplicate``), are findings that fail the bundle. Every member
kind has a size limit (``bundle.member.oversize``); JSON members are read whole only under it, raw
frames are hashed in chunks, clips stored as they are (as `BundleWriter` stores them) are read in
place (`open_member`: a bounded window of the zip file, its CRC-32 checked beside the demuxer),
any other clip is copied to a private temporary file in chunks, so peak memory does not depend on
what the zip claims or inflates to. The limits (docs/EVIDENCE.md) are
the same in the JavaScript verifier.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import stat
import struct
import tempfile
import threading
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

__all__ = [
    "BundleError",
    "BundleReader",
    "MemberError",
    "MemberProblem",
    "member_limit",
    "unsafe_name",
    "LIMITS",
    "MAX_MEMBERS",
]

MiB = 1 << 20
# Limits per member kind (by name prefix). Honest sizes: a 60 s manifest at 25 fps is ~200 KB, a
# multiproof of it ~100 KB, a frame rarely above 1 MB.
LIMITS: dict[str, int] = {
    "bundle.json": 16 * MiB,
    "manifests/": 16 * MiB,
    "batches/": 8 * MiB,   # offchain.core.batch.MAX_BATCH_MANIFEST_BYTES
    "proofs/": 64 * MiB,
    "frames/": 32 * MiB,
    "clips/": 4 << 30,
}
DEFAULT_LIMIT = 16 * MiB
MAX_MEMBERS = 100_000
_CHUNK = 1 * MiB


class BundleError(ValueError):
    """The bundle cannot be read at all: not a zip, not a directory, too many members."""


class MemberError(BundleError):
    """One member cannot be used; ``code`` is the status code to report, or None when it is
    simply absent or unreadable (the caller's own code then applies: manifest.missing, …)."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class MemberProblem:
    code: str
    message: str


def member_limit(name: str) -> int:
    for prefix, limit in LIMITS.items():
        if name == prefix or (prefix.endswith("/") and name.startswith(prefix)):
            return limit
    return DEFAULT_LIMIT


def unsafe_name(name: str) -> str | None:
    """Why a member name could escape the bundle, or None when it is a plain relative path."""
    if not name:
        return "empty name"
    if "\x00" in name:
        return "NUL in name"
    if "\\" in name:
        return "backslash in name"
    if name.startswith("/"):
        return "absolute path"
    if len(name) >= 2 and name[1] == ":":
        return "drive letter"
    if any(part == ".." for part in PurePosixPath(name).parts):
        return "'..' component"
    return None


class BundleReader:
    """A bundle as a zip file or as the directory it was unzipped into."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._names: dict[str, zipfile.ZipInfo] = {}
        self.problems: list[MemberProblem] = []
        if self.path.is_dir():
            self._root = self.path.resolve()
            return
        if not self.path.is_file():
            raise BundleError(f"{self.path}: no such file or directory")
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise BundleError(f"{self.path} is not a readable zip: {exc}") from exc
        if len(infos) > MAX_MEMBERS:
            raise BundleError(f"{self.path} has {len(infos)} members, over the limit of {MAX_MEMBERS}")
        self._scan(infos)

    def _scan(self, infos: list[zipfile.ZipInfo]) -> None:
        for info in infos:
            why = unsafe_name(info.filename)
            if why is not None:
                self.problems.append(MemberProblem("bundle.member.unsafe", f"member {info.filename!r}: {why}"))
                continue
            if info.filename in self._names:
                self.problems.append(MemberProblem("bundle.member.duplicate", f"member {info.filename!r} appears twice"))
                continue
            self._names[info.filename] = info

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ lookup
    def _check_name(self, name: object) -> str:
        if not isinstance(name, str):
            raise MemberError(f"member name {name!r} is not a string", "bundle.invalid")
        why = unsafe_name(name)
        if why is not None:
            raise MemberError(f"member {name!r}: {why}", "bundle.member.unsafe")
        return name

    def _dir_file(self, name: str) -> Path:
        p = (self.path / name)
        try:
            resolved = p.resolve(strict=True)
        except (FileNotFoundError, OSError):
            raise MemberError(f"{name} is not in the bundle") from None
        if self._root not in resolved.parents:
            raise MemberError(f"member {name!r} resolves outside the bundle", "bundle.member.unsafe")
        if not stat.S_ISREG(resolved.stat().st_mode):
            raise MemberError(f"{name} is not a regular file")
        return resolved

    def size(self, name: str) -> int:
        name = self._check_name(name)
        if self._zip is None:
            return self._dir_file(name).stat().st_size
        info = self._names.get(name)
        if info is None:
            raise MemberError(f"{name} is not in the bundle")
        return info.file_size

    def _open(self, name: str, limit: int | None):
        """An open binary stream of the member, after the size check."""
        limit = member_limit(name) if limit is None else limit
        size = self.size(name)
        if size > limit:
            raise MemberError(f"{name} is {size} bytes, over the {limit}-byte limit for its kind", "bundle.member.oversize")
        if self._zip is None:
            return open(self._dir_file(name), "rb")
        return self._zip.open(self._names[name])

    def _chunks(self, name: str, limit: int | None):
        """The member's bytes in chunks; never more than the limit, whatever the zip claims."""
        cap = member_limit(name) if limit is None else limit
        total = 0
        try:
            with self._open(name, limit) as src:
                while chunk := src.read(_CHUNK):
                    total += len(chunk)
                    if total > cap:
                        raise MemberError(f"{name} inflates past the {cap}-byte limit", "bundle.member.oversize")
                    yield chunk
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:  # CRC, truncation, encryption
            if isinstance(exc, MemberError):
                raise
            raise MemberError(f"cannot read {name}: {exc}") from exc

    # ------------------------------------------------------------------ reading
    def read(self, name: str, limit: int | None = None) -> bytes:
        """A small member whole (JSON), under its limit."""
        name = self._check_name(name)
        return b"".join(self._chunks(name, limit))

    def sha256(self, name: str, limit: int | None = None) -> bytes:
        """The member's SHA-256, hashed in chunks."""
        name = self._check_name(name)
        h = hashlib.sha256()
        for chunk in self._chunks(name, limit):
            h.update(chunk)
        return h.digest()

    @contextmanager
    def open_member(self, name: str) -> Iterator[BinaryIO | Path]:
        """A member for a demuxer without a copy: a zip member stored as it is (no compression,
        no encryption) as a seekable window of the zip file, under its kind's limit; its CRC-32
        is computed over the same bytes in a thread while the caller reads (zlib releases the
        GIL), and a mismatch raises `MemberError` when the block ends. Any other member: a path
        (`file_path`)."""
        name = self._check_name(name)
        info = self._names.get(name) if self._zip is not None else None
        if info is None or info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            yield self.file_path(name)
            return
        if info.file_size > member_limit(name):
            raise MemberError(f"{name} is {info.file_size} bytes, over the {member_limit(name)}-byte limit for its kind",
                              "bundle.member.oversize")
        with open(self.path, "rb", buffering=0) as fh:
            start = _stored_data_offset(fh, info, name)
            with _CrcBeside(fh, start, info.file_size) as crc:
                yield io.BufferedReader(_Window(fh.fileno(), start, info.file_size), buffer_size=_CHUNK)  # type: ignore[arg-type]
            if crc.value != info.CRC:
                raise MemberError(f"cannot read {name}: Bad CRC-32 (the zip records {info.CRC:08x}, its bytes "
                                  f"give {crc.value:08x})")

    def file_path(self, name: str) -> Path:
        """A path on disk for a member (PyAV wants one); zip members go to a private temp dir."""
        name = self._check_name(name)
        if self._zip is None:
            if self.size(name) > member_limit(name):
                raise MemberError(f"{name} is over the limit for its kind", "bundle.member.oversize")
            return self._dir_file(name)
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="frameledger-bundle-")
        out = Path(self._tmp.name) / hashlib.sha256(name.encode()).hexdigest()[:16]
        if out.exists():
            return out
        try:
            with open(out, "wb") as dst:
                for chunk in self._chunks(name, None):
                    dst.write(chunk)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        return out



def _stored_data_offset(fh: BinaryIO, info: zipfile.ZipInfo, name: str) -> int:
    """Where a stored member's bytes begin: after its local header, whose name and extra field
    may differ in length from the central directory's (as `zipfile.ZipFile.open` reads it)."""
    fh.seek(info.header_offset)
    header = fh.read(zipfile.sizeFileHeader)
    if len(header) != zipfile.sizeFileHeader or header[:4] != zipfile.stringFileHeader:
        raise MemberError(f"cannot read {name}: bad local file header")
    fields = struct.unpack(zipfile.structFileHeader, header)
    start = info.header_offset + zipfile.sizeFileHeader + fields[zipfile._FH_FILENAME_LENGTH] \
        + fields[zipfile._FH_EXTRA_FIELD_LENGTH]  # noqa: SLF001 - the zip format's own field positions
    if start + info.file_size > os.fstat(fh.fileno()).st_size:
        raise MemberError(f"cannot read {name}: the zip ends inside it")
    return start


class _Window(io.RawIOBase):
    """Bytes [start, start + size) of a file descriptor as a seekable read-only file (`os.preadv`
    into the caller's buffer: no shared file position, no copy through Python objects)."""

    def __init__(self, fd: int, start: int, size: int) -> None:
        super().__init__()
        self._fd, self._start, self._size, self._pos = fd, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = max(0, min(len(buffer), self._size - self._pos))
        if n == 0:
            return 0
        got = os.preadv(self._fd, [memoryview(buffer)[:n]], self._start + self._pos)
        self._pos += got
        return got


class _CrcBeside:
    """The CRC-32 of a file's byte range, computed in a thread over a read-only mapping (the
    pages the demuxer reads anyway) while the block runs; `value` once the block has ended."""

    def __init__(self, fh: BinaryIO, start: int, size: int) -> None:
        self._fh, self._start, self._size = fh, start, size
        self.value: int | None = None
        self._thread = threading.Thread(target=self._run, name="bundle-crc", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            if self._size == 0:
                self.value = 0
                return
            aligned = self._start - self._start % mmap.ALLOCATIONGRANULARITY
            with mmap.mmap(self._fh.fileno(), self._start + self._size - aligned, access=mmap.ACCESS_READ,
                           offset=aligned) as mapped, memoryview(mapped) as view:
                crc, first = 0, self._start - aligned
                for at in range(first, len(view), _CRC_CHUNK):
                    with view[at:at + _CRC_CHUNK] as part:
                        crc = zlib.crc32(part, crc)
                    # the pages leave this process's mapping once summed (they stay in the page
                    # cache): its resident size stays one chunk, not the clip's size
                    done = min(at + _CRC_CHUNK, len(view))
                    mapped.madvise(mmap.MADV_DONTNEED, at - at % mmap.PAGESIZE, done - (at - at % mmap.PAGESIZE))
                self.value = crc
        except BaseException as exc:  # noqa: BLE001 - reported to the reader when its block ends
            self._error = exc

    def __enter__(self) -> "_CrcBeside":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise MemberError(f"cannot check the CRC-32: {self._error}")


_CRC_CHUNK = 8 * MiB  # zlib releases the GIL within a chunk; a chunk is what the thread keeps mapped
