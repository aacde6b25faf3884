"""A clip's packets copied out of the store's packs in the background (offchain/evidence/clip_copy.py):
the native locate and copy (offchain/core/_gather.c) answer as their Python twins, every record
that is not what was asked for stops them, and a copy writes into its reserved bundle member
exactly the bytes the careful stream would, in the clip's order, with the zip's CRC."""

import hashlib
import os
import random
import zipfile
import zlib
from array import array

import pytest

from offchain.core import native as core_native
from offchain.core.block import FrameRef
from offchain.core.gather import copy_frames_py, locate_records_py
from offchain.evidence.bundle import BundleWriter
from offchain.evidence.clip_copy import MAX_MEAN_FRAME_BYTES, MIN_FRAMES_PER_RUN, ClipCopies, ClipCopyFailed
from offchain.store.local import LocalStore

needs_gather = pytest.mark.skipif(not core_native.GATHER, reason="the C module is not built (it is optional)")


def _store(tmp_path, n: int, seed: int = 1) -> tuple[LocalStore, list[bytes]]:
    rng = random.Random(seed)
    frames = [rng.randbytes(rng.randrange(1, 5000)) + i.to_bytes(4, "big") for i in range(n)]
    store = LocalStore(tmp_path / "store", fsync="none")
    for i in range(0, n, 100):  # group commits, as a node writes a camera's frames
        store.put_many(frames[i:i + 100])
    return store, frames


def _columns(frames: list[bytes]) -> tuple[bytes, array]:
    return b"".join(hashlib.sha256(f).digest() for f in frames), array("I", [len(f) for f in frames])


def _pack(store: LocalStore, digest: bytes) -> tuple[int, int]:
    pack, offset, _ = store._packed(digest)  # noqa: SLF001 - the test places the first record itself
    return os.open(store._packs / pack, os.O_RDONLY), offset - 40  # noqa: SLF001


@needs_gather
def test_locate_and_copy_are_their_python_twins(tmp_path):
    store, frames = _store(tmp_path, 300)
    digests, sizes = _columns(frames)
    fd, offset = _pack(store, digests[:32])
    try:
        c_offsets, py_offsets = array("q", [0]) * 300, array("q", [0]) * 300
        assert core_native.gather.locate_records(fd, offset, digests, sizes, c_offsets) == 300
        assert locate_records_py(fd, offset, digests, sizes, py_offsets) == 300
        assert c_offsets == py_offsets
        order = array("I", random.Random(2).sample(range(300), 300))  # any order, as decode order is
        fds = array("i", [fd]) * 300
        out = {}
        for name, fn in (("c", core_native.gather.copy_frames), ("py", copy_frames_py)):
            with open(tmp_path / name, "wb") as fh:
                fh.write(b"x" * 7)
                fh.flush()
                got = fn(fds, c_offsets, sizes, digests, order, 0, fh.fileno(), 7, 12345)
            out[name] = (tuple(got) if isinstance(got, tuple) else (got.next, got.written, got.crc32),
                         (tmp_path / name).read_bytes())
        want = b"".join(frames[i] for i in order)
        assert out["c"] == out["py"] == ((300, len(want), zlib.crc32(want, 12345)), b"x" * 7 + want)
    finally:
        os.close(fd)


@needs_gather
@pytest.mark.parametrize("forgery", ["magic", "named digest", "length", "payload", "truncated"])
def test_a_record_that_is_not_the_frame_asked_for_stops_both_at_that_frame(tmp_path, forgery):
    store, frames = _store(tmp_path, 50)
    digests, sizes = _columns(frames)
    fd, offset = _pack(store, digests[:32])
    os.close(fd)
    pack = store._packs / store._packed(digests[:32])[0]  # noqa: SLF001
    raw = bytearray(pack.read_bytes())
    at = store._packed(digests[20 * 32:21 * 32])[1]  # noqa: SLF001 - frame 20's bytes; its header before them
    if forgery == "magic":
        raw[at - 40] ^= 1
    elif forgery == "named digest":
        raw[at - 40 + 4] ^= 1
    elif forgery == "length":
        raw[at - 1] ^= 1
    elif forgery == "payload":
        raw[at + len(frames[20]) // 2] ^= 1
    else:
        del raw[at + 3:]
    pack.write_bytes(bytes(raw))
    fd = os.open(pack, os.O_RDONLY)
    try:
        c_offsets, py_offsets = array("q", [0]) * 50, array("q", [0]) * 50
        located = 20 if forgery in ("magic", "named digest", "length", "truncated") else 50
        assert core_native.gather.locate_records(fd, offset, digests, sizes, c_offsets) == located
        assert locate_records_py(fd, offset, digests, sizes, py_offsets) == located
        fds = array("i", [fd] * located + [-1] * (50 - located))
        order = array("I", range(50))
        with open(tmp_path / "out", "wb") as fh:
            got = core_native.gather.copy_frames(fds, c_offsets, sizes, digests, order, 0, fh.fileno(), 0, 0)
            twin = copy_frames_py(fds, c_offsets, sizes, digests, order, 0, fh.fileno(), 0, 0)
        want = b"".join(frames[:20])
        assert got == (20, len(want), zlib.crc32(want)) == (twin.next, twin.written, twin.crc32)
    finally:
        os.close(fd)


@needs_gather
def test_arguments_that_do_not_fit_are_refused():
    with pytest.raises(ValueError):
        core_native.gather.locate_records(0, 0, b"x" * 31, array("I"), array("q"))
    with pytest.raises(ValueError):
        core_native.gather.copy_frames(array("i", [0]), array("q", [0]), array("I", [1]), b"d" * 32, array("I", [0]),
                                       2, 1, 0, 0)


def _refs(frames: list[bytes]) -> list[FrameRef]:
    return [FrameRef.of_bytes(i, 1_000 + 40 * i, f, i == 0) for i, f in enumerate(frames)]


def _copy_into_bundle(tmp_path, store: LocalStore, frames: list[bytes], clip_order: list[int], careful) -> bytes:
    copies = ClipCopies(store, careful)
    writer = BundleWriter(tmp_path / "bundle.zip")
    refs = _refs(frames)
    copies.start(writer, "clips/clip-000.mp4", b"HEAD", [refs[i] for i in clip_order])
    writer.add([("after.json", b"{}")])  # members after the reserved one, while the copy runs
    try:
        copies.finish(writer)
    finally:
        copies.stop()
    with zipfile.ZipFile(writer.close()) as zf:  # CRCs checked on read
        assert zf.read("after.json") == b"{}"
        return zf.read("clips/clip-000.mp4")


@needs_gather
def test_a_copy_writes_the_clip_in_its_order_into_its_reserved_member(tmp_path):
    store, frames = _store(tmp_path, 400)
    assert ClipCopies.available(store)
    assert ClipCopies(store, lambda d: None).suits(_refs(frames)) and MIN_FRAMES_PER_RUN <= 100
    order = [0, 3, 1, 2, *range(4, 400)]  # a B-frame's reorder: decode order is not the store's
    assert _copy_into_bundle(tmp_path, store, frames, order, lambda d: None) == b"HEAD" + b"".join(frames[i] for i in order)


@needs_gather
def test_a_frame_the_packs_do_not_deliver_is_taken_the_careful_way_or_fails_the_copy(tmp_path):
    store, frames = _store(tmp_path, 200)
    pack = store._packs / store._packed(hashlib.sha256(frames[0]).digest())[0]  # noqa: SLF001
    raw = bytearray(pack.read_bytes())
    at = store._packed(hashlib.sha256(frames[150]).digest())[1]  # noqa: SLF001
    raw[at] ^= 1  # frame 150's record is corrupt
    pack.write_bytes(bytes(raw))
    want = hashlib.sha256(frames[150]).digest()
    asked = []

    def careful(digest: bytes) -> bytes | None:  # another store holds it intact, nothing to report
        asked.append(digest)
        return frames[150] if digest == want else None

    order = list(range(200))
    assert _copy_into_bundle(tmp_path, store, frames, order, careful) == b"HEAD" + b"".join(frames)
    assert asked == [want]
    with pytest.raises(ClipCopyFailed):  # the careful way has something to report: the copy does not hide it
        _copy_into_bundle(tmp_path / "again", store, frames, order, lambda d: None)


@needs_gather
def test_interleaved_frames_are_not_copied_in_the_background(tmp_path):
    store = LocalStore(tmp_path / "store", fsync="none")
    a, b = [os.urandom(300) for _ in range(300)], [os.urandom(300) for _ in range(300)]
    store.put_many([f for pair in zip(a, b) for f in pair])  # two cameras in one batch
    assert store.frames_per_run([hashlib.sha256(f).digest() for f in a]) == 1.0
    assert not ClipCopies(store, lambda d: None).suits(_refs(a))


@needs_gather
def test_large_frames_are_not_copied_in_the_background(tmp_path):
    store = LocalStore(tmp_path / "store", fsync="none")
    small, large = [os.urandom(MAX_MEAN_FRAME_BYTES // 2) for _ in range(100)], \
        [os.urandom(MAX_MEAN_FRAME_BYTES + 1) for _ in range(100)]
    store.put_many(small)
    store.put_many(large)
    copies = ClipCopies(store, lambda d: None)
    assert copies.suits(_refs(small)) and not copies.suits(_refs(large))
