"""The frame tree's C loops (offchain/core/_native.c) compute exactly what the Python loops do,
and give way to them (None) for every value off their fixed layout. The module is built by
`pip install -e .` (optional: a machine without a C compiler runs the Python loops); on this
project's machines a compiler is present, so a missing module is a build failure to see here (the
tests skip only on a machine without one)."""

import json
import random
import shutil

import pytest
from sha3 import keccak_256

from offchain.core import merkle
from offchain.core import native as core_native
from offchain.core.block import FRAME_LEAF_ENCODING, FrameRef, frames_tree
from offchain.core.merkle import StandardMerkleTree, _make_tree_py, leaf_hash

if merkle._native is None and shutil.which("cc") is None and shutil.which("gcc") is None:
    pytest.skip("no C compiler on this machine: the Python loops run (the module is optional)", allow_module_level=True)
# With a compiler the module must have been built: an ImportError here is a build failure to see.
from offchain.core import _native as native  # noqa: E402

CAM = bytes(range(32))


def test_the_module_is_built_and_used():
    assert core_native.NATIVE and core_native.native is native and merkle._native is native


@pytest.mark.parametrize("length", [0, 1, 31, 32, 63, 64, 128, 135, 136, 137, 271, 272, 273, 1000])
def test_keccak256_is_ethereums_at_every_padding_boundary(length):
    data = random.Random(length).randbytes(length)
    assert native.keccak256(data) == keccak_256(data).digest()
    assert native.keccak256(memoryview(data)) == keccak_256(data).digest()


def test_keccak256_of_nothing_is_the_known_constant():
    assert native.keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 9, 1500, 1501])
def test_make_tree_is_the_python_tree(n):
    rng = random.Random(n)
    leaves = [rng.randbytes(32) for _ in range(n)]
    leaves[n // 2] = leaves[0]  # equal leaves: the sorted pair of two equal hashes
    assert native.make_tree(leaves) == _make_tree_py(leaves)


def test_make_tree_gives_way_for_a_leaf_that_is_not_32_bytes_and_refuses_none():
    assert native.make_tree([bytes(32), bytes(31)]) is None
    assert native.make_tree([bytes(32), bytearray(32)]) is None
    with pytest.raises(ValueError):
        native.make_tree([])
    with pytest.raises(TypeError):
        native.make_tree((bytes(32),))


def _python_sorted_tree(hashes: list[bytes]) -> tuple[list[bytes], list[int]]:
    order = sorted(range(len(hashes)), key=hashes.__getitem__)
    tree = _make_tree_py([hashes[i] for i in order])
    indices = [0] * len(hashes)
    for leaf_index, value_index in enumerate(order):
        indices[value_index] = len(tree) - 1 - leaf_index
    return tree, indices


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1500, 1501])
def test_sorted_tree_is_the_stable_sort_tree_and_indices_of_python(n):
    rng = random.Random(n)
    hashes = [rng.randbytes(32) for _ in range(n)]
    if n > 2:  # equal hashes keep their input order (stable), as sorted() and V8 keep them
        hashes[n - 1] = hashes[1] = hashes[n // 2]
    tree, indices = native.sorted_tree(hashes)
    assert (tree, indices) == _python_sorted_tree(hashes)
    values = [(i,) for i in range(n)]
    with_c = StandardMerkleTree.from_leaf_hashes(hashes, values, ["uint256"])
    assert with_c._tree_indices == indices and with_c._tree == tree


def test_sorted_tree_gives_way_for_a_hash_that_is_not_32_bytes_and_refuses_none():
    assert native.sorted_tree([bytes(32), bytes(33)]) is None
    assert native.sorted_tree([bytearray(32)]) is None
    with pytest.raises(ValueError):
        native.sorted_tree([])
    with pytest.raises(TypeError):
        native.sorted_tree((bytes(32),))


def _frames(n: int) -> list[FrameRef]:
    return [FrameRef.of_bytes(i if i % 5 else (1 << 48) | i, 1_700_000_000_000 + 40 * i, b"f %d" % (i % 7), i % 25 == 0)
            for i in range(n)]


def test_leaf_hashes_are_the_libraries_leaf_hashes():
    frames = _frames(300) + [FrameRef(seq=2**64 - 1, timestamp_ms=2**64 - 1, sha256=b"\xff" * 32)]
    got = native.frame_leaf_hashes(CAM, frames)
    assert got == [leaf_hash(list(FRAME_LEAF_ENCODING), f.leaf_values(CAM)) for f in frames]


@pytest.mark.parametrize("bad", [
    FrameRef(seq=-1, timestamp_ms=0, sha256=bytes(32)),
    FrameRef(seq=2**64, timestamp_ms=0, sha256=bytes(32)),
    FrameRef(seq=True, timestamp_ms=0, sha256=bytes(32)),
    FrameRef(seq=0, timestamp_ms=1.0, sha256=bytes(32)),  # type: ignore[arg-type]
    FrameRef(seq=0, timestamp_ms=0, sha256=bytes(31)),
    FrameRef(seq=0, timestamp_ms=0, sha256=bytearray(32)),  # type: ignore[arg-type]
])
def test_leaf_hashes_give_way_for_values_off_the_fixed_layout(bad):
    assert native.frame_leaf_hashes(CAM, _frames(3) + [bad]) is None
    assert native.frame_leaf_hashes(CAM[:31], _frames(3)) is None


def test_frames_tree_with_the_module_is_the_generic_codecs_tree():
    frames = _frames(700)
    fast = frames_tree(CAM, frames)
    ref = StandardMerkleTree.of([f.leaf_values(CAM) for f in frames], list(FRAME_LEAF_ENCODING))
    assert fast is not None
    assert (fast.root, fast._tree, fast._tree_indices) == (ref.root, ref._tree, ref._tree_indices)


def test_leaf_hashes_survive_a_frame_that_empties_the_list_it_came_from():
    frames = _frames(5)

    class Meddler:  # an attribute read runs Python code: the C loop must not read freed items
        seq, timestamp_ms, sha256 = 7, 8, bytes(32)

        def __getattribute__(self, name):
            frames.clear()
            return object.__getattribute__(self, name)

    given = frames + [Meddler()] + _frames(3)
    expected = [leaf_hash(list(FRAME_LEAF_ENCODING), (CAM, f.seq, f.timestamp_ms, f.sha256)) for f in given]
    frames[:] = given
    assert native.frame_leaf_hashes(CAM, frames) == expected
    assert frames == []  # the meddler ran



def _spelled(values):
    return [["0x" + CAM.hex(), v[1], v[2], "0x" + v[3].hex()] for v in values]


def _forgeries(values):
    """Spellings of ``values`` that differ in one way each (what a forger might hand in)."""
    good = _spelled(values)
    yield "a leaf swapped", [good[1], good[0], *good[2:]]
    yield "seq as true", [good[0], [good[1][0], True, *good[1][2:]], *good[2:]]  # values[1] has seq 1
    yield "seq as a float", [[good[0][0], float(good[0][1]), *good[0][2:]], *good[1:]]
    yield "time as a string", [[*good[0][:2], str(good[0][2]), good[0][3]], *good[1:]]
    yield "camera upper case", [["0x" + CAM.hex().upper(), *good[0][1:]], *good[1:]]
    yield "digest upper case", [[*good[0][:3], "0x" + good[0][3][2:].upper()], *good[1:]]
    yield "digest without 0x", [[*good[0][:3], good[0][3][2:] + "00"], *good[1:]]
    yield "digest one digit off", [[*good[0][:3], good[0][3][:-1] + ("0" if good[0][3][-1] != "0" else "1")], *good[1:]]
    yield "a leaf short", good[:-1]
    yield "a leaf a tuple", [tuple(good[0]), *good[1:]]
    yield "a leaf of five", [[*good[0], 0], *good[1:]]
    yield "a huge seq", [[good[0][0], 2**80, *good[0][2:]], *good[1:]]


def test_spelled_leaves_equal_is_the_python_comparison():
    """`spelled_leaves_equal` answers as `KnownLeaves._spell`'s Python comparison does, for the
    extractor's own spelling and for each one-way forgery of it; None for values off its layout."""
    from offchain.evidence.verify import KnownLeaves
    frames = [FrameRef.of_bytes(i, 1_700_000_000_000 + 40 * i, b"f%d" % i, i == 0, None) for i in range(30)]
    values = [f.leaf_values(CAM) for f in frames]
    python = KnownLeaves(CAM, frames, None)
    saved = core_native.native
    import offchain.evidence.verify as verify_module
    try:
        verify_module.native = None
        assert python._spell(_spelled(values), values) is True
        expected = {name: python._spell(leaves, values) for name, leaves in _forgeries(values)}
    finally:
        verify_module.native = saved
    assert native.spelled_leaves_equal(_spelled(values), "0x" + CAM.hex(), values) is True
    got = {name: native.spelled_leaves_equal(leaves, "0x" + CAM.hex(), values) for name, leaves in _forgeries(values)}
    assert got == expected and not any(got.values()) and len(got) == 12
    assert native.spelled_leaves_equal(_spelled(values), "0x" + CAM.hex(), [*values[:-1], ["not", "a", "tuple", 0]]) is None
    assert native.spelled_leaves_equal(_spelled(values), "0x" + CAM.hex(), [*values[:-1], (CAM, 1, 2, b"short")]) is None


def _avx512f() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            return " avx512f" in fh.read()
    except OSError:
        return False


@pytest.fixture
def both_ways():
    """Each test runs its body with the eight-way AVX-512 Keccak and with one at a time."""
    was = native.use_simd(True)
    try:
        yield
    finally:
        native.use_simd(was)


def test_eight_way_keccak_is_on_where_the_cpu_has_avx512f():
    was = native.use_simd(True)
    try:
        assert native.use_simd(was) is _avx512f()  # off where the CPU cannot, whatever is asked
    finally:
        native.use_simd(was)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 64, 1500, 1501])
def test_eight_way_leaves_and_trees_equal_one_at_a_time_and_the_library(both_ways, n):
    rng = random.Random(1000 + n)
    frames = [FrameRef(timestamp_ms=rng.randrange(1 << 63), seq=rng.randrange(1 << 63), sha256=rng.randbytes(32))
              for _ in range(n)]
    hashes = [rng.randbytes(32) for _ in range(n)]
    out = {}
    for on in (True, False):
        native.use_simd(on)
        out[on] = (native.frame_leaf_hashes(CAM, frames), native.make_tree(hashes), native.sorted_tree(hashes))
    assert out[True] == out[False]
    assert out[True][0] == [leaf_hash(list(FRAME_LEAF_ENCODING), f.leaf_values(CAM)) for f in frames]
    assert out[True][1] == _make_tree_py(hashes)


def _rows(n: int) -> list[list]:
    rng = random.Random(n)
    return [[i, 1_700_000_000_000 + 40 * i, rng.randbytes(32).hex(), int(i % 25 == 0), rng.randrange(1 << 20),
             None if i % 3 else 1_700_000_000_000 + 40 * i - 80] for i in range(n)]


@pytest.mark.parametrize("n", [0, 1, 1500])
def test_frame_refs_are_from_row_records(n):
    rows = _rows(n)
    got = native.frame_refs(FrameRef, rows)
    want = tuple(FrameRef.from_row(r) for r in rows)
    assert got == want
    assert [f.__dict__ for f in got] == [f.__dict__ for f in want]  # the same fields, the same types
    assert all(type(f.keyframe) is bool and type(f.sha256) is bytes for f in got)


@pytest.mark.parametrize("change", [
    lambda r: r.__setitem__(0, True),            # a bool seq: from_row's int() decides
    lambda r: r.__setitem__(1, 1.5),             # a float time
    lambda r: r.__setitem__(2, r[2][:62]),       # a short digest
    lambda r: r.__setitem__(2, "zz" + r[2][2:]),  # not hex
    lambda r: r.__setitem__(2, " " + r[2][1:]),  # fromhex's whitespace
    lambda r: r.__setitem__(4, "7"),             # a size spelled as a string
    lambda r: r.__setitem__(5, 3.0),             # a float decode time
    lambda r: r.append(0),                       # a seventh field
])
def test_frame_refs_give_way_for_rows_off_the_manifest_layout(change):
    rows = _rows(5)
    change(rows[3])
    assert native.frame_refs(FrameRef, rows) is None
    assert native.frame_refs(FrameRef, [tuple(r) for r in _rows(2)]) is None  # rows are JSON lists


def test_frame_refs_take_uppercase_hex_as_fromhex_does():
    rows = _rows(3)
    rows[1][2] = rows[1][2].upper()
    assert native.frame_refs(FrameRef, rows) == tuple(FrameRef.from_row(r) for r in rows)


def test_spelled_leaves_are_the_extractors_spelling():
    rng = random.Random(7)
    values = [(CAM, rng.randrange(1 << 53), rng.randrange(1 << 53), rng.randbytes(32)) for _ in range(1500)]
    cam_hex = "0x" + CAM.hex()
    assert native.spelled_leaves(CAM, cam_hex, values) == [[cam_hex, v[1], v[2], "0x" + v[3].hex()] for v in values]
    assert native.spelled_leaves(CAM, cam_hex, []) == []


@pytest.mark.parametrize("spell", ["spelled_leaves", "leaves_json"])
@pytest.mark.parametrize("bad", [
    (bytes(32), 1, 2, bytes(32)),       # another camera
    (CAM, 1 << 53, 2, bytes(32)),       # past JSON's exact integers
    (CAM, -1, 2, bytes(32)),
    (CAM, True, 2, bytes(32)),
    (CAM, 1, 2, bytes(31)),
    [CAM, 1, 2, bytes(32)],             # not a tuple
])
def test_spelling_gives_way_for_values_off_the_layout(spell, bad):
    """Both C spellings of a proof's leaves (the list, and its JSON) refuse the same values."""
    assert getattr(native, spell)(CAM, "0x" + CAM.hex(), [(CAM, 1, 2, bytes(32)), bad]) is None


def test_leaves_json_is_the_compact_json_of_the_spelling():
    """`leaves_json` writes the bytes json.dumps writes for the spelled leaves, ints at both
    ends of their range included."""
    rng = random.Random(11)
    values = [(CAM, rng.randrange(1 << 53), rng.randrange(1 << 53), rng.randbytes(32)) for _ in range(1500)]
    values += [(CAM, 0, 0, bytes(32)), (CAM, (1 << 53) - 1, 9, b"\xff" * 32), (CAM, 10, 100, bytes(range(32)))]
    cam_hex = "0x" + CAM.hex()
    compact = json.dumps(native.spelled_leaves(CAM, cam_hex, values), separators=(",", ":")).encode()
    assert native.leaves_json(CAM, cam_hex, values) == compact
    assert native.leaves_json(CAM, cam_hex, []) == b"[]"


@pytest.mark.parametrize("camera_hex", ['0x"', "0x\\", "0x\n", "0x\x7f", "0xé"])
def test_leaves_json_gives_way_for_a_camera_spelling_json_escapes(camera_hex):
    assert native.leaves_json(CAM, camera_hex, [(CAM, 1, 2, bytes(32))]) is None
