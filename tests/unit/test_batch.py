"""offchain/core/batch.py: the batch tree against @openzeppelin/merkle-tree, the manifest's strict
canonical format, signatures, and every problem `check_batch` names."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from eth_account import Account

from offchain.core.batch import (
    MAX_BATCH_MANIFEST_BYTES,
    MAX_BLOCKS_PER_BATCH,
    Batch,
    BatchDomain,
    BatchFormatError,
    BatchManifest,
    BatchProblem,
    Tip,
    advance_tips,
    batch_digest,
    batch_tree,
    block_proof,
    check_batch,
    order_signatures,
    recover_batch_signer,
    sign_batch,
)
from offchain.core.block import BlockHeader, build_block, camera_id
from offchain.core.cid import cid_for_bytes
from offchain.core.merkle import verify_proof

REPO_ROOT = Path(__file__).resolve().parents[2]
JS_REFERENCE = REPO_ROOT / "tests" / "js" / "merkle_reference.js"
W = 60_000
T0 = 1_700_000_020_000 - 1_700_000_020_000 % W
PROPOSER = "0x" + "ab" * 20
DOMAIN = BatchDomain(chain_id=31337, verifying_contract="0x" + "cd" * 20)


def js_trees(jobs: list[dict]) -> list[dict]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    proc = subprocess.run([node, str(JS_REFERENCE)], input=json.dumps(jobs), capture_output=True, text=True,
                          cwd=REPO_ROOT, env={**os.environ, "NODE_PATH": str(REPO_ROOT / "node_modules")}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_batch_tree_equals_the_js_library():
    rng = random.Random(9)
    sizes = [1, 2, 3, 5, 17, 200, 1000]
    hashes = {n: [rng.randbytes(32) for _ in range(n)] for n in sizes}
    jobs = [{"leafEncoding": ["bytes32"], "values": [["0x" + h.hex()] for h in hashes[n]],
             "proofIndices": sorted({0, n // 2, n - 1})} for n in sizes]
    for n, answer in zip(sizes, js_trees(jobs)):
        tree = batch_tree(hashes[n])
        assert tree.root_hex == answer["root"], n
        for i, js_proof in zip(sorted({0, n // 2, n - 1}), answer["proofs"]):
            proof = block_proof(tree, hashes[n][i])
            assert ["0x" + p.hex() for p in proof] == js_proof
            assert verify_proof(tree.root, tree.leaf_hash((hashes[n][i],)), proof)
    with pytest.raises(ValueError):
        batch_tree([])


def headers(n: int = 3, start: int = T0, height: int = 1, prev: bytes | None = None) -> list[BlockHeader]:
    return [build_block(camera_ip=f"10.3.0.{i}", height=height, prev_hash=prev or bytes([i]) * 32,
                        window_start_ms=start, window_end_ms=start + W, frames=[], proposer=PROPOSER).header
            for i in range(1, n + 1)]


def first_tips(hs: list[BlockHeader]) -> dict[bytes, Tip]:
    return {h.camera_id: Tip(block_hash=h.prev_hash, height=h.height - 1, window_end_ms=0) for h in hs}


def manifest_of(hs: list[BlockHeader], start: int = T0, prev_root: bytes = b"\x00" * 32) -> BatchManifest:
    return BatchManifest.of(window_start_ms=start, window_end_ms=start + W, prev_batch_root=prev_root, headers=hs)


def test_manifest_is_canonical_and_round_trips():
    hs = headers(4)
    m = manifest_of(list(reversed(hs)))
    assert [h.camera_id for h in m.headers] == sorted(h.camera_id for h in hs)
    data = m.to_bytes()
    assert BatchManifest.from_bytes(data) == m
    assert m.cid == cid_for_bytes(data) and len(m.digest) == 32
    batch = Batch.of_manifest(m)
    assert batch.block_count == 4 and batch.batch_root == batch_tree([h.hash for h in m.headers]).root
    assert batch.manifest_digest == m.digest


@pytest.mark.parametrize("mutate", [
    lambda d: d.replace(b'"format":"frameledger.batch/1"', b'"format":"frameledger.batch/2"'),
    lambda d: d.replace(b"{", b"{ ", 1),                                # whitespace: not canonical
    lambda d: d[:-1] + b',"extra":1}',                                  # unknown key
    lambda d: d.replace(b'"windowStartMs":', b'"windowStartMs":-', 1),  # negative time
    lambda d: d.replace(b'"height":1', b'"height":"1"', 1),             # wrong type
    lambda d: d[: len(d) // 2],                                         # truncated
    lambda d: b"\xff" + d,                                              # not UTF-8
])
def test_manifest_parsing_is_strict(mutate):
    data = manifest_of(headers(2)).to_bytes()
    with pytest.raises(BatchFormatError):
        BatchManifest.from_bytes(mutate(data))


def test_manifest_parsing_refuses_unsorted_and_oversized_input():
    m = manifest_of(headers(3))
    doc = json.loads(m.to_bytes())
    doc["blocks"].reverse()
    with pytest.raises(BatchFormatError, match="canonical"):
        BatchManifest.from_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    with pytest.raises(BatchFormatError, match="exceeds"):
        BatchManifest.from_bytes(b" " * (MAX_BATCH_MANIFEST_BYTES + 1))
    doc["blocks"] = [doc["blocks"][0]] * (MAX_BLOCKS_PER_BATCH + 1)
    with pytest.raises(BatchFormatError, match="at most"):
        BatchManifest.from_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


def test_signatures_recover_and_are_ordered_for_the_contract():
    keys = [Account.create().key for _ in range(3)]
    batch = Batch.of_manifest(manifest_of(headers(2)))
    signed = [sign_batch(k, DOMAIN, batch) for k in keys]
    addresses = [Account.from_key(k).address for k in keys]
    assert [recover_batch_signer(DOMAIN, batch, s) for s in signed] == addresses
    ordered = order_signatures(DOMAIN, batch, signed + [signed[0]])  # a repeat is dropped
    assert [recover_batch_signer(DOMAIN, batch, s) for s in ordered] == sorted(addresses, key=lambda a: int(a, 16))
    other = replace(batch, block_count=3)
    assert recover_batch_signer(DOMAIN, other, signed[0]) != addresses[0]
    assert batch_digest(DOMAIN, batch) != batch_digest(replace(DOMAIN, chain_id=1), batch)
    with pytest.raises(ValueError):
        recover_batch_signer(DOMAIN, batch, b"\x00" * 10)


def problems(manifest, tips, batch=None) -> set[BatchProblem]:
    return {f.problem for f in check_batch(manifest, tips, batch)}


def test_a_good_batch_has_no_problem_and_the_tips_advance():
    hs = headers(3)
    m = manifest_of(hs)
    tips = first_tips(hs)
    assert check_batch(m, tips, Batch.of_manifest(m)) == []
    after = advance_tips(tips, m)
    nxt = [replace(h, height=2, prev_hash=h.hash, window_start_ms=T0 + W, window_end_ms=T0 + 2 * W) for h in m.headers]
    m2 = manifest_of(nxt, T0 + W, Batch.of_manifest(m).batch_root)
    assert check_batch(m2, after) == []
    assert problems(m2, tips) == {BatchProblem.BROKEN_LINK, BatchProblem.WRONG_HEIGHT}


def test_check_batch_names_each_chain_problem():
    hs = headers(3)
    tips = first_tips(hs)
    cam = hs[0].camera_id
    cases = {
        BatchProblem.BROKEN_LINK: [replace(hs[0], prev_hash=b"\x99" * 32)] + hs[1:],
        BatchProblem.WRONG_HEIGHT: [replace(hs[0], height=2)] + hs[1:],
        BatchProblem.DUPLICATE_CAMERA: hs + [replace(hs[0], frame_count=0)],
        BatchProblem.BAD_HEADER_WINDOW: [replace(hs[0], window_end_ms=T0)] + hs[1:],
        BatchProblem.OUTSIDE_BATCH_WINDOW: [replace(hs[0], window_end_ms=T0 + W + 1)] + hs[1:],
        BatchProblem.BAD_FRAMES_ROOT: [replace(hs[0], frame_count=5)] + hs[1:],
    }
    for expected, bad in cases.items():
        found = check_batch(manifest_of(bad), tips)
        assert expected in {f.problem for f in found}, expected
        assert any(f.camera_id == cam for f in found if f.problem == expected)
    assert problems(manifest_of(hs), {k: v for k, v in tips.items() if k != cam}) == {BatchProblem.UNKNOWN_CAMERA}


def test_time_continuity_follows_the_previous_window():
    hs = headers(2, height=2)
    tips = {h.camera_id: Tip(block_hash=h.prev_hash, height=1, window_end_ms=T0 + 1) for h in hs}
    assert problems(manifest_of(hs), tips) == {BatchProblem.TIME_NOT_CONTINUOUS}


def test_check_batch_against_the_signed_batch():
    hs = headers(3)
    m = manifest_of(hs)
    batch = Batch.of_manifest(m)
    tips = first_tips(hs)
    assert problems(m, tips, replace(batch, batch_root=b"\x01" * 32)) == {BatchProblem.ROOT_MISMATCH}
    assert problems(m, tips, replace(batch, block_count=2)) == {BatchProblem.COUNT_MISMATCH}
    assert problems(m, tips, replace(batch, manifest_digest=b"\x01" * 32)) == {BatchProblem.DIGEST_MISMATCH}
    assert problems(m, tips, replace(batch, prev_batch_root=b"\x01" * 32)) == {BatchProblem.BATCH_MISMATCH}
    empty = manifest_of([])
    assert problems(empty, tips) == {BatchProblem.EMPTY}
    reversed_order = BatchManifest(window_start_ms=T0, window_end_ms=T0 + W, prev_batch_root=b"\x00" * 32,
                                   headers=tuple(reversed(m.headers)))
    assert problems(reversed_order, tips) == {BatchProblem.NOT_CANONICAL}
    assert problems(replace(m, window_end_ms=T0), tips) >= {BatchProblem.BAD_WINDOW}
    assert camera_id("10.3.0.1") in tips
