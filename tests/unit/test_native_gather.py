"""The verified frame copy (offchain/core/_gather.c, offchain/core/gather.py) answers exactly as
its Python twin: intact frames joined in order, the others' indices, bounds refused. The module is
optional (built where a C compiler and OpenSSL's headers are; both are on this project's
machines, so a missing module is a build failure to see here: the C tests skip only without a
compiler). Then the bulk read it serves: `LocalStore.read_many_places` and
`Fetcher.stream_joined` deliver what `get` would, a window at a time."""

import hashlib
import random
import shutil

import pytest

from offchain.core import native as core_native
from offchain.core.gather import gather_sha256, gather_sha256_py, sha256_each, sha256_each_py
from offchain.evidence.extract import Fetched, Fetcher
from offchain.evidence.video import JoinedFrames
from offchain.store import local as local_mod
from offchain.store.local import LocalStore

HAVE_CC = shutil.which("cc") is not None or shutil.which("gcc") is not None
needs_c = pytest.mark.skipif(not HAVE_CC, reason="no C compiler: the Python loop runs (the module is optional)")


def _frames(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(0, 3000)) for _ in range(n)]


def _layout(frames: list[bytes]) -> tuple[list[bytes], list, bytes]:
    """Two buffers, frames alternating between them with gaps, and their digests."""
    bufs = [bytearray(), bytearray()]
    places = []
    for i, f in enumerate(frames):
        b = bufs[i % 2]
        b += b"gap"
        places.append((i % 2, len(b), len(f)))
        b += f
    return [bytes(b) for b in bufs], places, b"".join(hashlib.sha256(f).digest() for f in frames)


@needs_c
def test_the_module_is_built_and_used():
    assert core_native.GATHER and core_native.gather is not None


@needs_c
@pytest.mark.parametrize("n", [0, 1, 2, 57, 500])
def test_c_and_python_join_the_intact_frames_alike(n):
    frames = _frames(n, n)
    bufs, places, digests = _layout(frames)
    assert core_native.gather.gather_sha256(bufs, places, digests) == gather_sha256_py(bufs, places, digests) \
        == (b"".join(frames), [])
    # a wrong digest and a frame not held: left out, their indices named, the rest still joined
    if n >= 3:
        wrong = bytearray(digests)
        wrong[32 + 5] ^= 1
        places[2] = None
        want = (b"".join(f for i, f in enumerate(frames) if i not in (1, 2)), [1, 2])
        assert core_native.gather.gather_sha256(bufs, places, bytes(wrong)) == want
        assert gather_sha256_py(bufs, places, bytes(wrong)) == want
        assert core_native.gather.gather_sha256([memoryview(b) for b in bufs], places, bytes(wrong)) == want


@needs_c
@pytest.mark.parametrize("place", [(2, 0, 1), (-1, 0, 1), (0, -1, 1), (0, 0, -1), (0, 3, 2), (0, 5, 0)])
def test_a_place_outside_its_buffer_is_refused_by_both(place):
    for fn in (core_native.gather.gather_sha256, gather_sha256_py):
        with pytest.raises(ValueError):
            fn([b"abcd", b"ef"], [place], bytes(32))
    for fn in (core_native.gather.gather_sha256, gather_sha256_py):
        with pytest.raises(ValueError, match="digest bytes"):
            fn([b"abcd"], [(0, 0, 1)], bytes(31))
    with pytest.raises(TypeError):
        core_native.gather.gather_sha256([b"abcd"], [[0, 0, 1]], bytes(32))


def test_gather_is_the_python_loop_where_the_module_is_absent(monkeypatch):
    from offchain.core import gather as gather_mod
    monkeypatch.setattr(gather_mod, "_gather", None)
    frames = _frames(20)
    bufs, places, digests = _layout(frames)
    assert gather_sha256(bufs, places, digests) == (b"".join(frames), [])


def _stored(tmp_path):
    first, second = LocalStore(tmp_path / "a", fsync="none"), LocalStore(tmp_path / "b", fsync="none")
    packed = [b"packed %d" % i + bytes(i % 50) for i in range(1200)]  # more than one index query's chunk
    first.put_many(packed)
    first.put(b"loose one")
    second.put(b"corrupt here")
    first.path_for(first.put(b"corrupt here")).write_bytes(b"tampered")
    return first, second, packed


def test_read_many_places_places_every_record_in_windows_of_bounded_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(local_mod, "_WINDOW_BYTES", 4096)
    first, _, packed = _stored(tmp_path)
    order = packed[::-1][:300] + [b"loose one"] + packed[:900] + [b"absent"]
    digests = [hashlib.sha256(b).digest() for b in order]
    got: list[bytes | None] = []
    for window in first.read_many_places(digests, chunk=256):
        packed_bytes = sum(p[2] for p in window.places if p and p[0] == 0)  # loose files: sizes unknown till read
        assert packed_bytes <= 4096 or len(window.places) == 1
        got += [bytes(window.buffers[p[0]][p[1]:p[1] + p[2]]) if p else None for p in window.places]
    assert got == order[:-1] + [None]


def _counting_index_queries(monkeypatch) -> list[int]:
    """How many digests each index query of the bulk read asked for, in order."""
    asked: list[int] = []
    places = LocalStore._pack_places

    def counted(self, digests):
        asked.append(len(digests))
        return places(self, digests)

    monkeypatch.setattr(LocalStore, "_pack_places", counted)
    return asked


def test_a_group_committed_run_is_chased_through_record_headers_with_one_index_query(tmp_path, monkeypatch):
    """Frames a group commit wrote back to back, asked in that order, are found by walking the
    pack's record headers from the first one the index places: one query for 1,200 frames (the
    index way asked one per 500), windows still bounded, the bytes those `get` gives."""
    monkeypatch.setattr(local_mod, "_WINDOW_BYTES", 4096)
    first, _, packed = _stored(tmp_path)
    asked = _counting_index_queries(monkeypatch)
    digests = [hashlib.sha256(b).digest() for b in packed]
    got: list[bytes | None] = []
    windows = 0
    for window in first.read_many_places(digests, chunk=256):
        windows += 1
        assert sum(p[2] for p in window.places if p) <= 4096 or len(window.places) == 1
        got += [bytes(window.buffers[p[0]][p[1]:p[1] + p[2]]) if p else None for p in window.places]
    assert got == packed and asked == [256] and windows > 1200 * 60 // 4096
    assert list(first.read_many_unverified(iter(digests))) == packed  # the copying reader, from an iterator


def test_the_chase_stops_where_a_header_names_another_digest_and_the_index_takes_over(tmp_path, monkeypatch):
    """A request that is not the next record (skipped frames, another batch, a loose file, a
    repeat, B-frame order) ends the chase; the index places the next chunk and the chase goes
    on after it. A record whose bytes were altered in place keeps its header: the chase hands
    over the altered bytes, which the caller's hash refuses (`Fetcher.stream_joined` then goes
    the careful way and notes the corrupt copy), as it would have from the index's place."""
    first, second, packed = _stored(tmp_path)
    asked = _counting_index_queries(monkeypatch)
    order = (packed[:300] + packed[310:400] + [b"loose one"] + packed[400:410] + packed[405:408]
             + [packed[501], packed[500], packed[503], packed[502]] + packed[504:])
    digests = [hashlib.sha256(b).digest() for b in order]
    assert list(first.read_many_unverified(digests, chunk=64)) == order
    assert 1 < len(asked) < len(order) // 64  # the index asked where the chase stopped, not per chunk
    pack = next((tmp_path / "a").rglob("*.pack"))
    data = pack.read_bytes()
    at = data.index(packed[700])
    pack.write_bytes(data[:at] + b"X" + data[at + 1:])  # one frame's bytes altered, its header intact
    fetched = list(Fetcher([first, second]).stream_joined([hashlib.sha256(b).digest() for b in packed]))
    bad = [g for g in fetched if isinstance(g, Fetched)]
    assert len(bad) == 1 and bad[0].data is None and bad[0].corrupt  # no intact copy anywhere: noted, not used
    joined = b"".join(g.data for g in fetched if isinstance(g, JoinedFrames))
    assert joined == b"".join(packed[:700] + packed[701:])


def test_a_store_a_packed_block_was_deleted_from_is_read_by_the_index_only(tmp_path, monkeypatch):
    """`delete` takes a packed block out of the index and leaves its record in the segment; the
    chase would find it there. Once one is deleted, bulk reads ask the index for every chunk and
    the deleted block reads as missing, as `get` says (also for a new LocalStore on the same
    directory)."""
    first, _, packed = _stored(tmp_path)
    gone = first.put(packed[100])  # already stored: its CID
    assert first.delete(gone)
    digests = [hashlib.sha256(b).digest() for b in packed]
    for store in (first, LocalStore(tmp_path / "a", fsync="none")):
        asked = _counting_index_queries(monkeypatch)
        got = list(store.read_many_unverified(digests, chunk=256))
        assert got == packed[:100] + [None] + packed[101:] and asked == [256] * 4 + [1200 - 1024]
        with pytest.raises(local_mod.BlockNotFound):
            store.get(gone)


def test_stream_joined_delivers_what_get_delivers(tmp_path, monkeypatch):
    """Intact frames come joined (in order), a corrupt copy and a missing frame as `get`'s
    Fetched (the next store's intact copy with the corruption noted, or nothing), in place."""
    monkeypatch.setattr(local_mod, "_WINDOW_BYTES", 2048)
    first, second, packed = _stored(tmp_path)
    order = packed[:700] + [b"corrupt here"] + packed[700:] + [b"loose one", b"absent"] + packed[:5]
    digests = [hashlib.sha256(b).digest() for b in order]
    fetcher = Fetcher([first, second])
    items = list(fetcher.stream_joined(digests))
    assert all(isinstance(i, (JoinedFrames, Fetched)) for i in items)
    frames: list[bytes | None] = []
    for item in items:
        if isinstance(item, JoinedFrames):
            assert item.count >= 1
            frames += [item.data] if item.count == 1 else [None] * item.count  # checked whole below
        else:
            frames.append(item.data)
    joined = b"".join(i.data if isinstance(i, JoinedFrames) else (i.data or b"") for i in items)
    assert len(frames) == len(order) and joined == b"".join(b for b in order if b != b"absent")
    bad = [i for i in items if isinstance(i, Fetched)]
    assert [b.data for b in bad] == [b"corrupt here", None]
    assert bad[0].corrupt == [hashlib.sha256(b"tampered").digest()] and bad[1].corrupt == []
    assert fetcher.frames == len(order) - 1
    # without a plain LocalStore first, every frame goes the careful way
    assert [g.data for g in Fetcher([second]).stream_joined(digests[700:701])] == [b"corrupt here"]


@needs_c
def test_sha256_each_is_its_python_twin_and_refuses_spans_past_the_buffer() -> None:
    """The verifier's side: the digest of each consecutive sample of one read, in C without the
    GIL, equal to hashlib's; spans that do not fit the buffer are a ValueError both ways."""
    assert core_native.GATHER
    frames = _frames(300, seed=7)
    buffer = b"".join(frames) + b"tail"
    sizes = [len(f) for f in frames]
    want = b"".join(hashlib.sha256(f).digest() for f in frames)
    assert sha256_each(buffer, sizes) == sha256_each_py(buffer, sizes) == want
    assert sha256_each(memoryview(buffer)[:0], []) == b""
    for bad in ([len(buffer) + 1], [len(buffer) - 2, 3], [-1]):
        with pytest.raises(ValueError, match="does not fit"):
            sha256_each(buffer, bad)
        with pytest.raises(ValueError, match="does not fit"):
            sha256_each_py(buffer, bad)
