"""Pieces of streamed extraction that need no chain: the clip's samples hashed while writing are
what a demux of the written file reads; a presorted stream is consumed lazily and refused out
of order; the hand-written verifyFrames calldata is eth_abi's."""

from __future__ import annotations

import json
import os
import random

import pytest
from eth_abi import encode

from offchain.camera.samples import sample_path
from offchain.camera.sources import FileSource
from offchain.evidence.bundle import _encode_verify_frames, read_clip_samples
from offchain.evidence.video import decode_order, remux_to_mp4


def _frames(n: int):
    src = FileSource(sample_path("bikes"), start_ms=1_000, loop=False)
    return src.codec, [f for _, f in zip(range(n), src)]


def test_samples_hashed_while_writing_are_what_the_file_holds(tmp_path):
    codec, frames = _frames(120)  # bikes has B-frames: file order is decode order, not capture order
    ordered = decode_order(codec, frames)
    assert [f.seq for f in ordered] != [f.seq for f in frames]
    consumed = []

    def lazily():
        for f in ordered:
            consumed.append(f.seq)
            yield f

    gen = lazily()
    mux = remux_to_mp4(codec, gen, tmp_path / "a.mp4", origin_ms=min(f.timestamp_ms for f in frames))
    assert consumed == [f.seq for f in ordered]
    read = read_clip_samples(tmp_path / "a.mp4")
    assert read.error is None
    assert [s for s, _ in mux.samples] == [s for s, _ in read.samples]
    rel = [t - read.samples[0][1] for _, t in read.samples]
    assert [t - mux.samples[0][1] for _, t in mux.samples] == rel
    assert read.extradata == codec.extradata
    # the unsorted path gives the same file content
    other = remux_to_mp4(codec, frames, tmp_path / "b.mp4")
    assert other.samples == mux.samples


def test_a_presorted_stream_out_of_decode_order_is_refused(tmp_path):
    codec, frames = _frames(60)
    ordered = decode_order(codec, frames)
    swapped = ordered[:10] + [ordered[11], ordered[10]] + ordered[12:]
    with pytest.raises(ValueError, match="decode order"):
        remux_to_mp4(codec, iter(swapped), tmp_path / "x.mp4", origin_ms=min(f.timestamp_ms for f in frames))
    assert not (tmp_path / "x.mp4").exists()
    with pytest.raises(ValueError, match="keyframe"):
        remux_to_mp4(codec, iter(ordered[1:]), tmp_path / "y.mp4", origin_ms=min(f.timestamp_ms for f in frames))


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1500])
def test_verify_frames_calldata_is_abi_encode(n):
    rng = random.Random(n)
    bh = os.urandom(32)
    proof = [os.urandom(32) for _ in range(n // 3)]
    flags = [rng.random() < 0.5 for _ in range(n)]
    leaves = [os.urandom(32) for _ in range(n)]
    assert _encode_verify_frames(bh, proof, flags, leaves) == encode(
        ["bytes32", "bytes32[]", "bool[]", "bytes32[]"], [bh, proof, flags, leaves])
    with pytest.raises(ValueError):
        _encode_verify_frames(bh[:31], proof, flags, leaves)


def test_integer_times_round_like_fractions():
    from fractions import Fraction

    from offchain.evidence.bundle import _ms
    for tb in (Fraction(1, 90_000), Fraction(1, 12_800), Fraction(1001, 30_000), Fraction(1, 3)):
        for pts in [0, 1, 44, 45, 46, 89, 90, 135, 12_345_678, 2**40 + 7, 1_000_000_001]:
            assert _ms(pts, 1000 * tb.numerator, tb.denominator) == round(pts * tb * 1000), (pts, tb)


def test_proof_documents_are_the_librarys():
    from offchain.core.block import FrameRef, frames_tree
    from offchain.evidence.extract import _multiproof, _multiproof_json, _proof_member
    cam = bytes(range(32))
    frames = [FrameRef.of_bytes(i, 1_700_000_000_000 + 40 * i, b"frame %d" % i, i % 25 == 0, None) for i in range(50)]
    tree = frames_tree(cam, frames)
    for idx in ([0], [3, 7, 49], list(range(50))):
        mp, hashes = _multiproof(tree, idx)
        ref = tree.get_multiproof(idx)
        assert mp.to_json() == ref.to_json()
        assert _multiproof_json(mp, cam) == ref.to_json()
        assert hashes == [tree.leaf_hash(v) for v in ref.leaves]
        doc = {"blockHash": "0x" + "ab" * 32, "root": tree.root_hex, "leafEncoding": list(tree.leaf_encoding),
               **_multiproof_json(mp, cam)}
        assert _proof_member(doc, mp, cam) == json.dumps(doc, separators=(",", ":")).encode()  # the member's bytes
    from offchain.evidence.verify import known_leaves
    known = known_leaves(cam, frames, tree)
    for i, f in enumerate(frames):
        assert known.get(("0x" + cam.hex(), f.seq, f.timestamp_ms, "0x" + f.sha256.hex())) == \
            (tree.leaf_hash(i), (f.seq, f.timestamp_ms, f.sha256))
    assert known.get(("0x" + cam.hex(), 0, 0, "0x" + bytes(32).hex())) is None


def test_a_whole_block_proof_is_read_at_once_and_only_when_it_is_the_trees_own():
    """`KnownLeaves.whole` takes the proof of every leaf the extractor writes, with the tree's
    hashes and keys (what leaf-by-leaf parsing gives); a document that differs in any way (a
    leaf swapped, seq as true or 1.0, a flag off, a proof node, another camera spelling, one
    leaf short) is not taken and goes the leaf-by-leaf way."""
    import copy

    from offchain.core.block import FRAME_LEAF_ENCODING, FrameRef, frames_tree
    from offchain.core.merkle import leaf_hash
    from offchain.evidence.extract import _multiproof, _multiproof_json
    from offchain.evidence.verify import _parse_multiproof, known_leaves
    cam = bytes(range(32))
    frames = [FrameRef.of_bytes(i, 1_700_000_000_000 + 40 * i, b"frame %d" % i, i % 25 == 0, None) for i in range(41)]
    tree = frames_tree(cam, frames)
    known = known_leaves(cam, frames, tree)
    mp, hashes = _multiproof(tree, list(range(len(frames))))
    doc = {"leafEncoding": list(FRAME_LEAF_ENCODING), **_multiproof_json(mp, cam)}
    whole = known.whole(doc)
    assert whole is not None
    _, got, keys = whole
    _, slow_hashes, slow_keys = _parse_multiproof(copy.deepcopy(doc), None)  # no tree: every leaf hashed
    assert got == hashes == slow_hashes == [leaf_hash(FRAME_LEAF_ENCODING, v) for v in doc["leaves"]]
    assert keys == slow_keys

    def changed(edit):
        d = copy.deepcopy(doc)
        edit(d)
        return d
    swapped = changed(lambda d: d["leaves"].__setitem__(slice(0, 2), d["leaves"][1::-1]))
    seq_one = next(i for i, v in enumerate(doc["leaves"]) if v[1] == 1)
    as_true = changed(lambda d: d["leaves"][seq_one].__setitem__(1, True))
    as_float = changed(lambda d: d["leaves"][3].__setitem__(2, float(d["leaves"][3][2])))
    flag_off = changed(lambda d: d["proofFlags"].__setitem__(0, False))
    flag_one = changed(lambda d: d["proofFlags"].__setitem__(0, 1))
    with_node = changed(lambda d: d["proof"].append("0x" + "11" * 32))
    upper_cam = changed(lambda d: d["leaves"][5].__setitem__(0, "0x" + cam.hex().upper()))
    short = changed(lambda d: (d["leaves"].pop(), d["proofFlags"].pop()))
    for d in (swapped, as_true, as_float, flag_off, flag_one, with_node, upper_cam, short):
        assert known.whole(d) is None
    # and those fall back to leaf-by-leaf parsing, whose hashes are the library's
    _, h, _ = _parse_multiproof(upper_cam, known)
    assert h == hashes
    _, h, _ = _parse_multiproof(swapped, known)
    assert h != hashes and sorted(h) == sorted(hashes)


def test_parse_multiproof_reads_leaves_like_the_library():
    """Leaves found in the verified tree take its hashes, any other spelling is parsed and hashed
    as the library would: the same hashes and keys either way, and a bad leaf is a ValueError."""
    import pytest

    from offchain.core.block import FRAME_LEAF_ENCODING, FrameRef, frames_tree
    from offchain.core.merkle import leaf_hash
    from offchain.evidence.extract import _multiproof, _multiproof_json
    from offchain.evidence.verify import known_leaves, parse_multiproof
    cam = bytes(range(32))
    frames = [FrameRef.of_bytes(i, 1_700_000_000_000 + 40 * i, b"frame %d" % i, i % 25 == 0, None) for i in range(40)]
    tree = frames_tree(cam, frames)
    mp, hashes = _multiproof(tree, [1, 5, 6, 30])
    doc = {"leafEncoding": list(FRAME_LEAF_ENCODING), **_multiproof_json(mp, cam)}
    known = known_leaves(cam, frames, tree)
    odd = {**doc, "leaves": [[v[0].upper().replace("0X", "0x"), str(v[1]), v[2], v[3]] for v in doc["leaves"]]}
    for d, k in ((doc, known), (dict(doc), None), (odd, known)):
        _, got, keys = parse_multiproof(d, k)
        assert got == hashes == [leaf_hash(FRAME_LEAF_ENCODING, v) for v in doc["leaves"]]
        assert keys == [(v[1], v[2], v[3]) for v in mp.leaves]
    assert parse_multiproof(doc, known) is parse_multiproof(doc, None)  # once per document
    with pytest.raises(ValueError):
        parse_multiproof({**doc, "leaves": [[doc["leaves"][0][0], -1, 0, doc["leaves"][0][3]]]}, known)


def test_bulk_reads_deliver_what_get_delivers(tmp_path):
    """`LocalStore.read_many_unverified` gives, in order, the bytes of loose files and packed
    blocks and None for what the store lacks; `Fetcher.stream` over it yields what `get` would:
    intact bytes, and for a corrupt or missing copy the careful path's outcome (the next store's
    intact copy with the corruption noted, or nothing)."""
    import hashlib

    from offchain.evidence.extract import Fetched, Fetcher
    from offchain.store.local import LocalStore

    first, second = LocalStore(tmp_path / "a", fsync="none"), LocalStore(tmp_path / "b", fsync="none")
    loose = [b"loose %d" % i for i in range(3)]
    packed = [b"packed %d" % i for i in range(700)]  # more than one index query's chunk
    for b in loose:
        first.put(b)
    first.put_many(packed)
    second.put(b"corrupt here")
    first.put(b"corrupt here")
    d = [hashlib.sha256(b).digest() for b in (b"corrupt here", b"absent")]
    path = first.path_for(first.put(b"corrupt here"))
    path.write_bytes(b"tampered")
    order = [hashlib.sha256(b).digest() for b in packed[::-1] + loose] + d
    got = list(first.read_many_unverified(order))
    assert got == packed[::-1] + loose + [b"tampered", None]
    def fetched_of(fetcher, digests):  # intact bytes come as they are, the rest as `get`'s Fetched
        return [g if isinstance(g, Fetched) else Fetched(g) for g in fetcher.stream(digests)]

    fetched = fetched_of(Fetcher([first, second]), order)
    assert all(type(g) is bytes for g in Fetcher([first, second]).stream(order[:-2]))
    assert [f.data for f in fetched] == packed[::-1] + loose + [b"corrupt here", None]
    assert fetched[-2].corrupt == [hashlib.sha256(b"tampered").digest()] and fetched[-1].corrupt == []
    assert [f.data for f in fetched_of(Fetcher([second]), d)] == [b"corrupt here", None]


def test_bulk_reads_of_adjacent_records_in_one_span(tmp_path):
    """Records a group commit wrote back to back are read as one span and sliced: forward order,
    runs broken by a loose file, a repeated digest, another batch and the span limit all yield
    the same bytes as single reads; a pack cut short yields None for the records it lost only."""
    import hashlib

    from offchain.store import local as local_mod
    from offchain.store.local import LocalStore

    store = LocalStore(tmp_path / "s", fsync="none")
    batch_a = [b"a%04d" % i + bytes(i % 7) for i in range(900)]
    batch_b = [b"b%04d" % i for i in range(50)]
    store.put_many(batch_a)
    store.put(b"loose one")
    store.put_many(batch_b)
    swapped = [x for k in range(0, 900, 3) for x in (batch_a[k + 1], batch_a[k], batch_a[k + 2])]  # B-frame order
    order = batch_a[:400] + [b"loose one"] + batch_a[400:] + batch_a[10:12] + batch_b + swapped
    digests = [hashlib.sha256(b).digest() for b in order]
    assert list(store.read_many_unverified(digests)) == order
    old = local_mod._SPAN_BYTES
    local_mod._SPAN_BYTES = 200  # many short runs
    try:
        assert list(store.read_many_unverified(digests, chunk=37)) == order
    finally:
        local_mod._SPAN_BYTES = old
    pack = next((tmp_path / "s").rglob("*.pack"))
    with open(pack, "r+b") as fh:  # cut the pack inside batch_b's last record
        fh.truncate(pack.stat().st_size - 2)
    got = list(store.read_many_unverified(digests))
    lost = order.index(batch_b[-1])
    assert got[:lost] == order[:lost] and got[lost] is None and got[lost + 1:] == order[lost + 1:]


def test_pack_runs_group_back_to_back_records_only():
    """Runs follow the pack's byte order whatever the request order (decode order differs from
    the capture order a writer stored in), break where a record does not follow the previous
    one, and keep each record's request index; an unplaced request is a run of its own."""
    from offchain.store.local import _RECORD, _pack_runs

    h = _RECORD.size
    places = [("p1", 2 * h + 10, 5), ("p1", h, 10), None, ("p1", 3 * h + 15, 1), ("p2", 3 * h + 16, 1),
              ("p2", 4 * h + 17, 3), ("p2", 0, 3)]
    runs = list(_pack_runs(places))
    assert [(r.pack, [i for i, _, _ in r.records]) for r in runs] == [
        (None, [2]), ("p1", [1, 0, 3]), ("p2", [6]), ("p2", [4, 5])]
    assert runs[1].start == h and runs[1].end == 3 * h + 16


def test_raw_log_topics_are_the_artifacts_events():
    """ChainReader reads BlockAnchored / BlockAttested by raw topics: they are the committed
    artifact's event signatures (a changed event would otherwise match no log at all)."""
    from web3._utils.events import event_abi_to_log_topic

    from offchain.chain.client import load_artifact
    from offchain.evidence import bundle

    events = {f["name"]: f for f in load_artifact("VideoLedger")["abi"] if f.get("type") == "event"}
    assert "0x" + event_abi_to_log_topic(events["BlockAnchored"]).hex() == bundle._BLOCK_ANCHORED
    assert "0x" + event_abi_to_log_topic(events["BlockAttested"]).hex() == bundle._BLOCK_ATTESTED


def _presented_by_lookup(restored, loaded, cam):
    """The per-frame spelling `_presented_positions` replaced: each frame's position looked up."""
    from collections import defaultdict
    at = {h: {f.seq: i for i, f in enumerate(m.frames)} for h, m in loaded.trusted.items()}
    out = defaultdict(set)
    for c in restored.clips:
        if c.camera == cam:
            for h, seq in c.frames:
                out[h].add(at[h][seq])
    for (h, c, seq) in restored.raw:
        if c == cam:
            out[h].add(at[h][seq])
    return {h: sorted(v) for h, v in out.items()}


def test_presented_positions_are_the_per_frame_lookups():
    """A block shown whole in decode order, one shown in part, frames listed twice, raw frames,
    another camera's clip and a manifest listing a seq twice: the positions are the lookups'."""
    from types import SimpleNamespace as NS

    from offchain.core.block import FrameRef
    from offchain.evidence.extract import _presented_positions
    cam, other = b"\x01" * 32, b"\x02" * 32
    refs = lambda seqs: [FrameRef.of_bytes(s, 1_000 + 40 * k, b"%d" % s, k == 0) for k, s in enumerate(seqs)]  # noqa: E731
    loaded = NS(trusted={1: NS(frames=refs(range(0, 10))), 2: NS(frames=refs(range(10, 20))),
                         3: NS(frames=refs([20, 21, 21, 22]))})
    shuffled = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9]
    cases = [
        [NS(camera=cam, frames=[(1, s) for s in shuffled] + [(2, s) for s in range(10, 20)])],
        [NS(camera=cam, frames=[(1, s) for s in (0, 1, 2)] + [(2, 12), (2, 12)])],
        [NS(camera=cam, frames=[(1, s) for s in range(9)] + [(1, 0)])],   # nine frames, one twice: not whole
        [NS(camera=cam, frames=[(3, s) for s in (20, 21, 21, 22)])],     # the manifest lists 21 twice
        [NS(camera=other, frames=[(1, 0)]), NS(camera=cam, frames=[(2, 15)])],
    ]
    for clips in cases:
        for raw in ({}, {(1, cam, 9): None, (2, other, 11): None}):
            restored = NS(clips=clips, raw=raw)
            assert _presented_positions(restored, loaded, cam) == _presented_by_lookup(restored, loaded, cam)
