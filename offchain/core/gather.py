"""The verified frame copy evidence extraction streams a clip's media through: each frame's bytes
checked against the SHA-256 its manifest records, the intact ones joined in order. One call per
window of frames, in C (`_gather.c`, without the GIL) where it was built, else the Python loop
here; both give the same answer (tests/unit/test_native_gather.py). `sha256_each` is the
verifier's side: the digest of each of many consecutive samples read at once. `locate_records`
and `copy_frames` are a clip's whole stream out of a store's pack segments in two calls (find the
records by their headers; then read, hash, CRC-32 and write each frame in the clip's order), which
the C twins run without the GIL from the first frame to the last."""

from __future__ import annotations

import hashlib
import os
from array import array
import struct
import zlib
from dataclasses import dataclass
from typing import Sequence

from .native import gather as _gather

__all__ = ["CopiedFrames", "Place", "copy_frames", "copy_frames_py", "gather_sha256", "gather_sha256_py",
           "locate_records", "locate_records_py", "sha256_each", "sha256_each_py"]

Place = tuple[int, int, int] | None  # (buffer index, offset, length) of one frame, or None: not held


def gather_sha256_py(buffers: Sequence[bytes | bytearray | memoryview], places: Sequence[Place],
                     digests: bytes) -> tuple[bytes, list[int]]:
    """(the bytes of every frame whose SHA-256 is its digest, joined in order; the indices of the
    others). ``digests``: 32 bytes per place, back to back. Raises ValueError for a place outside
    its buffer or digests of the wrong length, as the C twin does."""
    if len(digests) != 32 * len(places):
        raise ValueError(f"{len(places)} places need {32 * len(places)} digest bytes, got {len(digests)}")
    views = [memoryview(b) for b in buffers]
    for i, p in enumerate(places):
        if p is not None and not (0 <= p[0] < len(views) and p[1] >= 0 and p[2] >= 0 and p[1] + p[2] <= len(views[p[0]])):
            raise ValueError(f"place {i} {p} lies outside its buffer")
    out, bad = [], []
    sha256 = hashlib.sha256
    for i, p in enumerate(places):
        piece = views[p[0]][p[1]:p[1] + p[2]] if p is not None else None
        if piece is None or sha256(piece).digest() != digests[32 * i:32 * i + 32]:
            bad.append(i)
        else:
            out.append(piece)
    return b"".join(out), bad


def gather_sha256(buffers: Sequence[bytes | bytearray | memoryview], places: Sequence[Place],
                  digests: bytes) -> tuple[bytes, list[int]]:
    """`gather_sha256_py`, in C where the module was built."""
    if _gather is not None:
        return _gather.gather_sha256(buffers, places, digests)  # type: ignore[no-any-return]
    return gather_sha256_py(buffers, places, digests)


def sha256_each_py(buffer: bytes | bytearray | memoryview, sizes: Sequence[int]) -> bytes:
    """The SHA-256 of each consecutive span of ``buffer`` (``sizes`` bytes each, in order), 32
    bytes each, back to back. Raises ValueError for spans past the buffer, as the C twin does."""
    view = memoryview(buffer)
    out, at = [], 0
    for i, n in enumerate(sizes):
        if n < 0 or at + n > len(view):
            raise ValueError(f"span {i} ({n} bytes) does not fit the {len(view)}-byte buffer")
        out.append(hashlib.sha256(view[at:at + n]).digest())
        at += n
    return b"".join(out)


def sha256_each(buffer: bytes | bytearray | memoryview, sizes: Sequence[int]) -> bytes:
    """`sha256_each_py`, in C (without the GIL) where the module was built."""
    if _gather is not None:
        return _gather.sha256_each(buffer, sizes)  # type: ignore[no-any-return]
    return sha256_each_py(buffer, sizes)


_RECORD = struct.Struct(">4s32sI")  # a pack segment's record header (offchain.store.local): magic, digest, length
_RECORD_MAGIC = b"FLB1"
COPY_MAX_RECORD = 64 << 20  # a larger record is left to the careful way (as in _gather.c)


@dataclass(frozen=True)
class CopiedFrames:
    """What one `copy_frames` call did: ``next``, the first position of the order not written
    (all of them: its length); the bytes written; the CRC-32 carried on over them."""
    next: int
    written: int
    crc32: int


def locate_records_py(pack_fd: int, offset: int, digests: bytes | memoryview, sizes: Sequence[int],
                      offsets: "array[int] | memoryview") -> int:
    """How many of the frames asked for (``digests``: 32 bytes each; ``sizes``: each one's recorded
    size) have their records one after another in the pack from ``offset`` (a record header):
    each record whole, carrying the magic and naming the frame's digest with its size. Each one's
    bytes' offset in the pack goes into ``offsets``. Nothing is hashed here (`copy_frames` hashes
    what it copies); a read that fails ends the run."""
    if len(digests) % 32 or len(sizes) != len(digests) // 32 or len(offsets) < len(sizes) or offset < 0:
        raise ValueError(f"locate_records: {len(digests)} digest bytes for {len(sizes)} sizes, offset {offset}")
    pos = offset
    for i, size in enumerate(sizes):
        try:
            head = os.pread(pack_fd, _RECORD.size, pos) if size <= COPY_MAX_RECORD else b""
        except OSError:
            return i
        if len(head) < _RECORD.size or _RECORD.unpack(head) != (_RECORD_MAGIC, bytes(digests[32 * i:32 * i + 32]), size) \
                or os.fstat(pack_fd).st_size < pos + _RECORD.size + size:
            return i
        offsets[i] = pos + _RECORD.size
        pos += _RECORD.size + size
    return len(sizes)


def copy_frames_py(fds: Sequence[int], offsets: Sequence[int], sizes: Sequence[int], digests: bytes | memoryview,
                   order: Sequence[int], start: int, out_fd: int, out_offset: int, crc: int) -> CopiedFrames:
    """Frames ``order[start]``, ``order[start + 1]``, ... (each described, in the store's order, by
    its pack ``fds[i]`` (-1: not located), ``offsets[i]``, ``sizes[i]`` and its digest) read, hashed
    against their digests, carried into the CRC-32 ``crc`` and written to ``out_fd`` from
    ``out_offset`` on, until one is not located, cannot be read whole or does not hash to its
    digest. A write that fails raises OSError."""
    n = len(digests) // 32
    if len(digests) % 32 or not len(fds) == len(offsets) == len(sizes) == len(order) == n or not 0 <= start <= n:
        raise ValueError(f"copy_frames: {n} frames by their digests, start {start}")
    written, k = 0, start
    for k in range(start, n):
        i = order[k]
        if not 0 <= i < n or fds[i] < 0:
            break
        try:
            data = os.pread(fds[i], sizes[i], offsets[i])
        except OSError:
            break
        if len(data) != sizes[i] or hashlib.sha256(data).digest() != bytes(digests[32 * i:32 * i + 32]):
            break
        with memoryview(data) as view:
            at = 0
            while at < len(view):
                at += os.pwrite(out_fd, view[at:], out_offset + written + at)
        written += len(data)
        crc = zlib.crc32(data, crc)
    else:
        k = n
    return CopiedFrames(next=k, written=written, crc32=crc)


def locate_records(pack_fd: int, offset: int, digests: bytes | memoryview, sizes: "array[int] | memoryview",
                   offsets: "array[int] | memoryview") -> int:
    """`locate_records_py`, in C (without the GIL) where the module was built: ``sizes`` uint32
    (array('I')), ``offsets`` int64 (array('q'))."""
    if _gather is None:
        return locate_records_py(pack_fd, offset, digests, sizes, offsets)
    return int(_gather.locate_records(pack_fd, offset, digests, sizes, offsets))


def copy_frames(fds: "array[int]", offsets: "array[int]", sizes: "array[int]", digests: bytes | memoryview,
                order: "array[int]", start: int, out_fd: int, out_offset: int, crc: int) -> CopiedFrames:
    """`copy_frames_py`, in C (without the GIL from the first frame to the last) where the module
    was built: ``fds`` int32 (array('i')), ``offsets`` int64 ('q'), ``sizes`` and ``order`` uint32 ('I')."""
    if _gather is None:
        return copy_frames_py(fds, offsets, sizes, digests, order, start, out_fd, out_offset, crc)
    nxt, written, crc = _gather.copy_frames(fds, offsets, sizes, digests, order, start, out_fd, out_offset, crc)
    return CopiedFrames(next=nxt, written=written, crc32=crc)
