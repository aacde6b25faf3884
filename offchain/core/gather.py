"""The verified frame copy evidence extraction streams a clip's media through: each frame's bytes
checked against the SHA-256 its manifest records, the intact ones joined in order. One call per
window of frames, in C (`_gather.c`, without the GIL) where it was built, else the Python loop
here; both give the same answer (tests/unit/test_native_gather.py). `sha256_each` is the
verifier's side: the digest of each of many consecutive samples read at once."""

from __future__ import annotations

import hashlib
from typing import Sequence

from .native import gather as _gather

__all__ = ["Place", "gather_sha256", "gather_sha256_py", "sha256_each", "sha256_each_py"]

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
