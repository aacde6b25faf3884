"""StandardMerkleTree port vs the real ``@openzeppelin/merkle-tree`` 1.0.8.

The port is only useful if it is byte-identical to the JS library (roots go on
chain, dumps are exchanged with JS tooling), so most assertions here compare
against the library itself, driven through ``tests/js/merkle_reference.js``.
All JS work is batched into one node run per CPU, started once per module and
overlapped with the Python side, to keep the suite to a few seconds.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak

from offchain.core.merkle import (
    InvalidMerkleInput,
    InvalidMerkleTree,
    InvalidMultiproof,
    LeafNotInTree,
    MultiProof,
    StandardMerkleTree,
    hash_pair,
    leaf_hash,
    process_multiproof,
    process_proof,
    verify_multiproof,
    verify_proof,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO_ROOT / "node_modules"
JS_REFERENCE = REPO_ROOT / "tests" / "js" / "merkle_reference.js"

WIDE = ["bytes32", "uint64", "uint64", "bytes32"]
NARROW = ["bytes32"]
SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33, 100, 257, 1000, 2000]
ALL_PROOFS_UP_TO = 33  # beyond this, proofs are sampled


def run_js(jobs: list[dict]) -> list[dict]:
    """Answer all jobs with the JS library, spread over a few concurrent node processes.

    The JS library is far slower than the port (~0.1 ms per leaf, mostly ABI
    encoding), so on bigger machines the jobs are balanced by leaf count over
    several node processes.
    """
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    if not (NODE_MODULES / "@openzeppelin" / "merkle-tree" / "package.json").exists():
        pytest.skip("node_modules/@openzeppelin/merkle-tree missing; run `make js-deps`")
    workers = max(1, min(4, os.cpu_count() or 1, len(jobs)))
    buckets: list[list[int]] = [[] for _ in range(workers)]
    load = [0] * workers
    cost = lambda job: len(job.get("values") or job.get("load", {}).get("values", [])) + 20  # noqa: E731
    for i in sorted(range(len(jobs)), key=lambda i: -cost(jobs[i])):
        w = load.index(min(load))
        buckets[w].append(i)
        load[w] += cost(jobs[i])

    def answer(bucket: list[int]) -> list[dict]:
        proc = subprocess.run(
            [node, str(JS_REFERENCE)],
            input=json.dumps([jobs[i] for i in bucket]),
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    results: list[dict | None] = [None] * len(jobs)
    with ThreadPoolExecutor(workers) as pool:
        for bucket, answers in zip(buckets, pool.map(answer, buckets)):
            assert len(answers) == len(bucket)
            for i, result in zip(bucket, answers):
                results[i] = result
    return results


def run_py(job: dict) -> dict:
    """Python twin of runJob() in merkle_reference.js, producing the same JSON shape."""
    try:
        if "load" in job:
            tree = StandardMerkleTree.load(job["load"])
        else:
            tree = StandardMerkleTree.of(job["values"], job["leafEncoding"], sort_leaves=job.get("sortLeaves", True))
        hexes = lambda proof: ["0x" + p.hex() for p in proof]  # noqa: E731
        return {
            "root": tree.root_hex,
            "proofs": [hexes(tree.get_proof(i)) for i in job.get("proofIndices", [])],
            "proofsByValue": [hexes(tree.get_proof(tree.values[i])) for i in job.get("proofValues", [])],
            "multiproofs": [tree.get_multiproof(ix).to_json() for ix in job.get("multiproofIndices", [])],
            "multiproofsByValue": [
                tree.get_multiproof([tree.values[i] for i in ix]).to_json() for ix in job.get("multiproofValues", [])
            ],
            "dump": tree.dump(),
        }
    except InvalidMerkleInput as exc:
        return {"error": {"name": type(exc).__name__, "message": str(exc)}}


# ------------------------------------------------------------------ test data
#
# Values are JSON (what both sides can read) in deliberately mixed spellings, so
# the comparison also covers abi-utils' lenient parsing: numbers, decimal and
# hex strings, 0X prefixes, odd-length and short hex that gets padded.


def _b32(rng: random.Random) -> str:
    raw = rng.randbytes(32)
    style = rng.randrange(8)
    if style == 0:
        return "0X" + raw.hex().upper()
    if style == 1:
        return "0x" + raw[: rng.randrange(1, 32)].hex()  # short: right-padded
    if style == 2:
        return "0x" + raw.hex()[1:]  # odd length: left nibble-padded, then right-padded
    return "0x" + raw.hex()


def _u64(rng: random.Random):
    n = rng.choice([0, 1, 2**64 - 1, 2**53 - 1, rng.getrandbits(64), rng.getrandbits(16), rng.getrandbits(64)])
    style = rng.randrange(4)
    if style == 0 and n <= 2**53 - 1:
        return n
    if style == 1:
        return hex(n)
    if style == 2:
        return "0X" + format(n, "X")
    return str(n)


def make_values(encoding: list[str], n: int, seed: int) -> list[list]:
    rng = random.Random(seed)
    if encoding == WIDE:
        values = [[_b32(rng), _u64(rng), _u64(rng), _b32(rng)] for _ in range(n)]
    else:
        values = [[_b32(rng)] for _ in range(n)]
    if n >= 5:
        # Same leaf hash, different spelling: exercises stable sorting of equal
        # hashes and the "last duplicate wins" value lookup.
        values[n - 2] = [
            "0x" + _lenient(v).ljust(32, b"\0").hex().upper() if typ == "bytes32" else str(_as_int(v))
            for typ, v in zip(encoding, values[1])
        ]
    return values


def _as_int(v) -> int:
    return v if isinstance(v, int) else int(v, 0)


def _lenient(text: str) -> bytes:
    digits = text[2:]
    return bytes.fromhex(digits if len(digits) % 2 == 0 else "0" + digits)


def to_native(encoding: list[str], values: list[list]) -> list[tuple]:
    """The same leaves as Python-native bytes/ints (tuples, not lists)."""
    out = []
    for value in values:
        row = []
        for typ, v in zip(encoding, value):
            if typ.startswith("bytes"):
                row.append(_lenient(v))
            else:
                row.append(_as_int(v))
        out.append(tuple(row))
    return out


def tree_job(encoding: list[str], n: int, sort: bool, seed: int) -> dict:
    rng = random.Random(seed + 1)
    values = make_values(encoding, n, seed)
    if n <= ALL_PROOFS_UP_TO:
        proof_indices = list(range(n))
    else:
        proof_indices = sorted({0, n - 1, *rng.sample(range(n), 25)})
    multi = [[], [0], [n - 1]]
    if n <= ALL_PROOFS_UP_TO:
        multi.append(list(range(n)))
    # Whole-tree multiproofs cost the JS side seconds on big trees; 50 leaves
    # already give proofs with long runs of both flag values.
    for k in sorted({2, 3, 5, max(1, n // 3), n}) if n <= 257 else (2, 3, 5, 50):
        if k <= n:
            multi.append(rng.sample(range(n), k))  # random order on purpose
    by_value = [i for i in (0, 1, n - 2, n - 1) if 0 <= i < n]
    # Values 1 and n-2 are the same leaf, so only one of them may join a multiproof.
    distinct = [i for i in range(n) if i != 1 or n < 5]
    return {
        "leafEncoding": encoding,
        "values": values,
        "sortLeaves": sort,
        "proofIndices": proof_indices,
        "proofValues": by_value,
        "multiproofIndices": multi,
        "multiproofValues": [sorted({0, n - 1}), rng.sample(distinct, min(len(distinct), 4))],
    }


def tree_cases():
    seed = 0
    for encoding in (WIDE, NARROW):
        for sort in (True, False):
            for n in SIZES:
                seed += 1
                name = f"{'wide' if encoding == WIDE else 'narrow'}-{'sorted' if sort else 'unsorted'}-{n}"
                yield name, tree_job(encoding, n, sort, seed)


EXOTIC_ENCODING = [
    "address",
    "bool",
    "string",
    "bytes",
    "int256",
    "uint8[]",
    "(uint256,string)",
    "bytes4",
    "uint",
    "int8[2]",
    "function",
    "(bytes32,uint64)[]",
    "string[]",
]
EXOTIC_VALUES = [
    [
        "0x1111111111111111111111111111111111111111",
        True,
        "hello",
        "0xdeadbeef",
        "-5",
        [1, "2", "0x3"],
        ["7", "seven"],
        "0x12",
        "0x1f",
        [-1, "127"],
        "0x" + "ab" * 24,
        [["0x01", 5], ["0x02", "6"]],
        ["a", "\u00fc\u20ac\U0001f600", "x\ud800y"],
    ],
    [
        "0x01",
        "false",
        "",
        "0x",
        str(-(2**255)),
        [],
        [0, ""],
        "0x12345678",
        0,
        ["-128", 0],
        {"address": "0x" + "11" * 20, "selector": "0x12345678"},
        [],
        [],
    ],
    [
        "0x" + "ff" * 20,
        False,
        "a longer string that needs more than one thirty-two byte word of ABI encoding",
        "0x" + "00" * 33,
        str(2**255 - 1),
        [255] * 40,
        [str(2**256 - 1), "z"],
        "0X1",
        " 42 ",
        [127, -128],
        "0x" + "cd" * 24,
        [["0x" + "ee" * 32, str(2**64 - 1)]],
        ["", ""],
    ],
]

LENIENT_CASES = {
    # name: (leaf encoding, [leaf values]) -- accepted by JS, must hash identically
    "uint-empty-string-is-zero": (["uint64"], [[""]]),
    "uint-whitespace": (["uint64"], [[" \t42\n"]]),
    "uint-binary-octal": (["uint64", "uint64"], [["0b101", "0o17"]]),
    "uint-plus-sign": (["uint64"], [["+7"]]),
    "int-negative-forms": (["int64", "int64"], [["-5", -5]]),
    "bytes32-empty": (["bytes32"], [["0x"]]),
    "bytes32-uppercase-prefix": (["bytes32"], [["0XAB"]]),
    "address-short-left-padded": (["address"], [["0x01"]]),
    "bool-strings": (["bool", "bool"], [["true", "false"]]),
    "tuple-with-spaces": (["(uint8, bool)"], [[[1, True]]]),
    "no-fields": ([], [[]]),
    "duplicate-leaves": (["uint8"], [[1], ["1"], ["0x1"]]),
}

REJECTED_CASES = {
    # name: (leaf encoding, [leaf values]) -- JS throws, so must we
    "empty-tree": (WIDE, []),
    "uint-overflow": (["uint64"], [[str(2**64)]]),
    "uint-negative": (["uint64"], [["-1"]]),
    "uint-fraction": (["uint64"], [["1.5"]]),
    "uint-exponent": (["uint64"], [["1e3"]]),
    "uint-separator": (["uint64"], [["1_000"]]),
    "uint-bool": (["uint64"], [[True]]),
    "uint-signed-hex": (["uint64"], [["-0x1"]]),
    "int-overflow": (["int8"], [[128]]),
    "bytes32-too-long": (["bytes32"], [["0x" + "00" * 33]]),
    "bytes32-not-hex": (["bytes32"], [["hello"]]),
    "bytes32-no-prefix": (["bytes32"], [["1234"]]),
    "bytes32-number": (["bytes32"], [[5]]),
    "address-too-long": (["address"], [["0x" + "11" * 21]]),
    "bool-word": (["bool"], [["yes"]]),
    "bool-int": (["bool"], [[1]]),
    "string-number": (["string"], [[5]]),
    "wrong-arity": (WIDE, [["0x01", 1]]),
    "leaf-is-number": (["uint8"], [5]),
    "fixed-array-length": (["uint8[2]"], [[[1]]]),
    "function-wrong-length": (["function"], [["0x" + "00" * 23]]),
    "unknown-type": (["foo"], [[1]]),
    "bad-uint-width": (["uint7"], [[1]]),
    "bad-bytes-width": (["bytes33"], [["0x01"]]),
}


def bad_op_jobs() -> dict[str, dict]:
    values = make_values(WIDE, 9, 99)
    base = {"leafEncoding": WIDE, "values": values}
    return {
        "proof-index-out-of-range": {**base, "proofIndices": [9]},
        "proof-negative-index": {**base, "proofIndices": [-1]},
        "multiproof-duplicate-index": {**base, "multiproofIndices": [[3, 3]]},
        "multiproof-out-of-range": {**base, "multiproofIndices": [[0, 9]]},
    }


@dataclass
class Case:
    job: dict  # what JS was asked (JSON values)
    js: dict  # the JS library's answer
    py: dict  # run_py on the same JSON values
    native: dict | None  # run_py on Python-native bytes/ints, for tree cases


def build_jobs() -> dict[str, dict]:
    jobs: dict[str, dict] = {}
    for name, job in tree_cases():
        jobs[f"tree:{name}"] = job
    for i, values in enumerate(EXOTIC_VALUES):
        jobs[f"exotic:{i}"] = {"leafEncoding": EXOTIC_ENCODING, "values": [values], "proofIndices": [0]}
    jobs["exotic:all"] = {
        "leafEncoding": EXOTIC_ENCODING,
        "values": EXOTIC_VALUES,
        "proofIndices": [0, 1, 2],
        "multiproofIndices": [[2, 0]],
    }
    for name, (encoding, values) in {**LENIENT_CASES, **REJECTED_CASES}.items():
        jobs[f"values:{name}"] = {"leafEncoding": encoding, "values": values, "proofIndices": list(range(len(values)))}
    for name, job in bad_op_jobs().items():
        jobs[f"op:{name}"] = job
    # Dumps written by Python (from native values) must load in JS unchanged.
    for n in (1, 2, 17, 257):
        for encoding in (WIDE, NARROW):
            native = to_native(encoding, make_values(encoding, n, 1000 + n))
            dump = StandardMerkleTree.of(native, encoding).dump()
            jobs[f"load-py:{len(encoding)}:{n}"] = {"load": json.loads(json.dumps(dump)), "proofIndices": [0, n - 1]}
    return jobs


@pytest.fixture(scope="module")
def reference() -> dict[str, Case]:
    """Every question this module asks, answered by JS and by the port.

    The JS library is the slow side, so the port's answers are computed while
    the node processes run rather than afterwards.
    """
    jobs = build_jobs()
    with ThreadPoolExecutor(1) as pool:
        js_future = pool.submit(run_js, list(jobs.values()))
        py = {name: run_py(json.loads(json.dumps(job))) for name, job in jobs.items()}
        native = {
            name: run_py({**job, "values": to_native(job["leafEncoding"], job["values"])})
            for name, job in jobs.items()
            if name.startswith("tree:")
        }
        js = js_future.result()
    return {name: Case(job, answer, py[name], native.get(name)) for (name, job), answer in zip(jobs.items(), js)}


def _cases(reference: dict[str, Case], prefix: str) -> list[tuple[str, Case]]:
    return [(name, case) for name, case in reference.items() if name.startswith(prefix)]


# ----------------------------------------------------------- JS comparisons


@pytest.mark.slow
def test_trees_match_js_exactly(reference):
    """Root, every (or sampled) proof, multiproofs and the full dump, byte for byte."""
    cases = _cases(reference, "tree:")
    assert len(cases) == 2 * 2 * len(SIZES)
    for name, case in cases:
        assert "error" not in case.js, (name, case.js)
        assert case.py == case.js, name


@pytest.mark.slow
def test_native_python_values_give_identical_trees(reference):
    """bytes/int inputs must produce the same tree as the JSON spellings JS got."""
    for name, case in _cases(reference, "tree:"):
        js, native, encoding = case.js, case.native, case.job["leafEncoding"]
        assert "error" not in native, (name, native)
        for key in ("root", "proofs", "proofsByValue"):
            assert native[key] == js[key], (name, key)
        assert native["dump"]["tree"] == js["dump"]["tree"], name
        tree_indices = lambda dump: [v["treeIndex"] for v in dump["values"]]  # noqa: E731
        assert tree_indices(native["dump"]) == tree_indices(js["dump"]), name
        for key in ("multiproofs", "multiproofsByValue"):
            for got, want in zip(native[key], js[key], strict=True):
                assert (got["proof"], got["proofFlags"]) == (want["proof"], want["proofFlags"]), (name, key)
                # leaves come back in each side's own spelling; they must be the same leaves
                hashes = lambda leaves, enc=encoding: [leaf_hash(enc, v) for v in leaves]  # noqa: E731
                assert hashes(got["leaves"]) == hashes(want["leaves"]), (name, key)


@pytest.mark.slow
def test_js_dumps_load_in_python(reference):
    for name, case in _cases(reference, "tree:"):
        tree = StandardMerkleTree.load(case.js["dump"])
        assert tree.root_hex == case.js["root"], name
        assert tree.dump() == case.js["dump"], name
        assert ["0x" + p.hex() for p in tree.get_proof(case.job["proofIndices"][-1])] == case.js["proofs"][-1]
        assert tree.verify_multiproof(MultiProof.from_json(case.js["multiproofs"][-1]))


@pytest.mark.slow
def test_python_dumps_load_in_js(reference):
    cases = _cases(reference, "load-py:")
    assert cases
    for name, case in cases:
        assert "error" not in case.js, (name, case.js)
        assert case.js["dump"] == case.job["load"], name  # JS re-dumps exactly what we wrote
        assert case.py == case.js, name


@pytest.mark.slow
def test_lenient_and_exotic_values_hash_like_js(reference):
    cases = _cases(reference, "exotic:") + [c for c in _cases(reference, "values:") if c[0][7:] in LENIENT_CASES]
    assert len(cases) == len(EXOTIC_VALUES) + 1 + len(LENIENT_CASES)
    for name, case in cases:
        assert "error" not in case.js, (name, case.js)  # these are inputs JS accepts
        assert case.py == case.js, name


@pytest.mark.slow
def test_inputs_js_rejects_are_rejected(reference):
    cases = [c for c in _cases(reference, "values:") if c[0][7:] in REJECTED_CASES] + _cases(reference, "op:")
    assert len(cases) == len(REJECTED_CASES) + len(bad_op_jobs())
    for name, case in cases:
        assert "error" in case.js, (name, case.js)  # guard: the case really is invalid for JS
        assert "error" in case.py, (name, case.py)


# ---------------------------------------------------- Python-only properties


def test_readme_example_root():
    """The worked example from the library's README, as a no-node sanity check."""
    values = [
        ["0x1111111111111111111111111111111111111111", "5000000000000000000"],
        ["0x2222222222222222222222222222222222222222", "2500000000000000000"],
    ]
    tree = StandardMerkleTree.of(values, ["address", "uint256"])
    assert tree.root_hex == "0xd4dee0beab2d53f2cc83e567171bd2820e49898130a22622b10ead383e90bd77"
    assert tree.values == tuple(values)
    assert tree.leaf_encoding == ("address", "uint256")


def test_leaf_hash_matches_eth_abi_for_static_fast_path():
    """One-word types skip eth_abi for speed; check them against eth_abi itself."""
    rng = random.Random(7)
    types = ["bytes32", "uint64", "int256", "address", "bool", "bytes4", "int8", "uint256", "function"]
    for _ in range(300):
        native = [
            rng.randbytes(32),
            rng.getrandbits(64),
            rng.randrange(-(2**255), 2**255),
            rng.randbytes(20),
            rng.random() < 0.5,
            rng.randbytes(rng.randrange(0, 5)),
            rng.randrange(-128, 128),
            rng.getrandbits(256),
            rng.randbytes(24),
        ]
        expected = keccak(keccak(abi_encode(types, native)))
        assert leaf_hash(types, native) == expected
        spelled = ["0x" + v.hex() if isinstance(v, bytes) else v for v in native]
        assert leaf_hash(types, spelled) == expected


def test_leaf_hash_definition():
    value = ["0x" + "ab" * 32, 5]
    inner = keccak(abi_encode(["bytes32", "uint64"], [bytes.fromhex("ab" * 32), 5]))
    assert leaf_hash(["bytes32", "uint64"], value) == keccak(inner)


def test_strings_encode_like_text_encoder():
    # A surrogate pair given as two code points is one character to JS; a lone
    # surrogate becomes U+FFFD.
    assert leaf_hash(["string"], ["\ud83d\ude00"]) == leaf_hash(["string"], ["\U0001f600"])
    assert leaf_hash(["string"], ["x\ud800y"]) == leaf_hash(["string"], ["x\ufffdy"])


def test_hash_pair_is_commutative_keccak_of_sorted_pair():
    a, b = keccak(b"a"), keccak(b"b")
    lo, hi = sorted([a, b])
    assert hash_pair(a, b) == hash_pair(b, a) == keccak(lo + hi)
    assert hash_pair("0x" + a.hex(), b.hex()) == hash_pair(a, b)
    with pytest.raises(InvalidMerkleInput):
        hash_pair(a[:31], b)


def test_layout_and_proof_order_small_tree():
    """Pin the array layout directly: leaves at the tail in reverse, parents at (i-1)//2."""
    values = [[i] for i in range(5)]
    tree = StandardMerkleTree.of(values, ["uint256"], sort_leaves=False)
    nodes = [bytes.fromhex(h[2:]) for h in tree.dump()["tree"]]
    assert len(nodes) == 9
    leaves = [leaf_hash(["uint256"], v) for v in values]
    assert nodes[4:] == leaves[::-1]
    for i in range(4):
        assert nodes[i] == hash_pair(nodes[2 * i + 1], nodes[2 * i + 2])
    # value 0 sits at tree index 8: siblings 7, then parent 3's sibling 4, then parent 1's sibling 2
    assert tree.get_proof(0) == [nodes[7], nodes[4], nodes[2]]
    assert [v["treeIndex"] for v in tree.dump()["values"]] == [8, 7, 6, 5, 4]


def test_sorted_tree_orders_leaves_by_hash_but_keeps_values_in_input_order():
    values = [[i] for i in range(20)]
    tree = StandardMerkleTree.of(values, ["uint256"])
    nodes = tree.dump()["tree"]
    tail = [bytes.fromhex(h[2:]) for h in nodes[len(nodes) - 20 :]][::-1]
    assert tail == sorted(tail)
    assert tree.values == tuple(values)
    assert all(tree.index_of(v) == i for i, v in enumerate(values))
    assert tree.index_of(["0x7"]) == 7  # lookup is by hash, not by spelling
    # ...which makes a multiproof's leaves come out in ascending hash order
    multi = tree.get_multiproof([13, 2, 19, 7, 0])
    hashes = [leaf_hash(["uint256"], v) for v in multi.leaves]
    assert hashes == sorted(hashes)


def test_proofs_by_value_and_index_agree_and_verify():
    values = to_native(WIDE, make_values(WIDE, 50, 5))
    tree = StandardMerkleTree.of(values, WIDE)
    for i in range(0, 50, 7):
        if tree.index_of(values[i]) != i:
            continue  # duplicate leaf: value lookup resolves to the last copy
        proof = tree.get_proof(i)
        assert proof == tree.get_proof(values[i])
        assert tree.verify(i, proof) and tree.verify(values[i], proof)
        assert verify_proof(tree.root, tree.leaf_hash(i), proof)
        assert StandardMerkleTree.verify_with_root(tree.root_hex, WIDE, values[i], ["0x" + p.hex() for p in proof])


def _flip(node: bytes, bit: int = 0) -> bytes:
    return bytes([node[0] ^ (1 << bit)]) + node[1:]


def test_tampered_proofs_fail():
    values = to_native(WIDE, make_values(WIDE, 33, 11))
    tree = StandardMerkleTree.of(values, WIDE)
    other = StandardMerkleTree.of(values[:-1], WIDE)
    for i in range(len(values)):
        proof = tree.get_proof(i)
        leaf = tree.leaf_hash(i)
        assert verify_proof(tree.root, leaf, proof)
        for k in range(len(proof)):
            bad = list(proof)
            bad[k] = _flip(bad[k], k % 8)
            assert not tree.verify(i, bad)
        assert not verify_proof(tree.root, _flip(leaf), proof)
        assert not verify_proof(_flip(tree.root), leaf, proof)
        assert not verify_proof(tree.root, leaf, proof[:-1])
        assert not verify_proof(tree.root, leaf, proof + [proof[-1]])
        if len(set(proof)) > 1:
            assert not verify_proof(tree.root, leaf, proof[::-1])
        assert not verify_proof(other.root, leaf, proof)
        changed = list(values[i])
        changed[1] = (changed[1] + 1) % 2**64
        assert not tree.verify(tuple(changed), proof)
        assert not StandardMerkleTree.verify_with_root(tree.root, WIDE, changed, proof)


def test_tampered_multiproofs_fail_or_raise():
    values = to_native(WIDE, make_values(WIDE, 40, 12))
    tree = StandardMerkleTree.of(values, WIDE)
    multi = tree.get_multiproof([3, 17, 18, 30, 39])
    assert tree.verify_multiproof(multi)
    assert StandardMerkleTree.verify_multiproof_with_root(tree.root, WIDE, multi)
    hashes = [leaf_hash(WIDE, v) for v in multi.leaves]
    assert verify_multiproof(tree.root, hashes, multi.proof, multi.proof_flags)
    for k in range(len(multi.proof)):
        proof = list(multi.proof)
        proof[k] = _flip(proof[k])
        assert not verify_multiproof(tree.root, hashes, proof, multi.proof_flags)
    for k in range(len(hashes)):
        leaves = list(hashes)
        leaves[k] = _flip(leaves[k])
        assert not verify_multiproof(tree.root, leaves, multi.proof, multi.proof_flags)
    for k in range(len(multi.proof_flags)):
        flags = list(multi.proof_flags)
        flags[k] = not flags[k]
        try:
            assert not verify_multiproof(tree.root, hashes, multi.proof, flags)
        except InvalidMultiproof:
            pass
    with pytest.raises(InvalidMultiproof):
        verify_multiproof(tree.root, hashes, multi.proof[:-1], multi.proof_flags)
    with pytest.raises(InvalidMultiproof):
        verify_multiproof(tree.root, hashes, multi.proof + [tree.root], multi.proof_flags)
    with pytest.raises(InvalidMultiproof):
        verify_multiproof(tree.root, hashes[1:], multi.proof, multi.proof_flags)
    forged = MultiProof(multi.leaves[:-1] + [values[0]], multi.proof, multi.proof_flags)
    assert not tree.verify_multiproof(forged)


def _solidity_process_multiproof(leaves, proof, flags):
    """Line-by-line transliteration of MerkleProof.processMultiProof (OZ 5.x); None = revert."""
    if len(leaves) + len(proof) != len(flags) + 1:
        return None
    if flags:
        hashes = [b"\0" * 32] * len(flags)  # memory is zero-initialised
        leaf_pos = hash_pos = proof_pos = 0

        def next_from_queue():
            nonlocal leaf_pos, hash_pos
            if leaf_pos < len(leaves):
                leaf_pos += 1
                return leaves[leaf_pos - 1]
            if hash_pos >= len(hashes):
                raise IndexError  # out-of-bounds panic
            hash_pos += 1
            return hashes[hash_pos - 1]

        try:
            for i, flag in enumerate(flags):
                a = next_from_queue()
                if flag:
                    b = next_from_queue()
                else:
                    if proof_pos >= len(proof):
                        raise IndexError
                    b = proof[proof_pos]
                    proof_pos += 1
                hashes[i] = keccak(min(a, b) + max(a, b))
        except IndexError:
            return None
        if proof_pos != len(proof):
            return None
        return hashes[-1]
    return leaves[0] if leaves else proof[0]


def test_process_multiproof_reverts_exactly_when_solidity_does():
    rng = random.Random(3)
    nodes = [keccak(bytes([i])) for i in range(12)]
    accepted = 0
    for _ in range(3000):
        leaves = rng.sample(nodes, rng.randrange(0, 5))
        proof = rng.sample(nodes, rng.randrange(0, 5))
        flags = [rng.random() < 0.5 for _ in range(rng.randrange(0, 8))]
        expected = _solidity_process_multiproof(leaves, proof, flags)
        if expected is None:
            with pytest.raises(InvalidMultiproof):
                process_multiproof(leaves, proof, flags)
        else:
            accepted += 1
            assert process_multiproof(leaves, proof, flags) == expected
    assert accepted > 100


def test_empty_multiproof_is_the_root():
    tree = StandardMerkleTree.of([[1], [2], [3]], ["uint8"])
    multi = tree.get_multiproof([])
    assert multi == MultiProof([], [tree.root], [])
    assert tree.verify_multiproof(multi)
    assert process_proof(tree.root, []) == tree.root


def test_bad_input_raises_named_errors():
    tree = StandardMerkleTree.of([[1], [2], [3]], ["uint8"])
    with pytest.raises(InvalidMerkleInput, match="non-zero number of leaves"):
        StandardMerkleTree.of([], ["uint8"])
    for index in (3, -1, 10**9):
        with pytest.raises(InvalidMerkleInput, match="out of bounds"):
            tree.get_proof(index)
        with pytest.raises(InvalidMerkleInput):
            tree.verify(index, [])
    with pytest.raises(LeafNotInTree):
        tree.get_proof([4])
    with pytest.raises(LeafNotInTree):
        tree.index_of([4])
    with pytest.raises(InvalidMerkleInput, match="duplicated index"):
        tree.get_multiproof([1, 1])
    with pytest.raises(InvalidMerkleInput):
        tree.get_multiproof([0, 5])
    with pytest.raises(InvalidMerkleInput, match=r"values\[1\].*out of range"):
        StandardMerkleTree.of([[1], [256]], ["uint8"])
    with pytest.raises(InvalidMerkleInput, match="not supported"):
        StandardMerkleTree.of([[1]], ["uint8x"])
    with pytest.raises(InvalidMerkleInput):
        process_proof(b"\0" * 31, [])
    with pytest.raises(InvalidMerkleInput):
        verify_proof(tree.root, tree.leaf_hash(0), ["0x1234"])
    with pytest.raises(InvalidMultiproof):
        process_multiproof([], [], [])
    for exc in (InvalidMerkleInput, LeafNotInTree, InvalidMultiproof, InvalidMerkleTree):
        assert issubclass(exc, ValueError)


def test_zero_length_array_type_is_rejected():
    # abi-utils 2.0.4 accepts "T[0]" but encodes it as neither a static nor a
    # dynamic array; we refuse it rather than copy a layout nothing can decode.
    with pytest.raises(InvalidMerkleInput, match="Zero-length"):
        leaf_hash(["uint256[0]"], [[]])


def test_load_rejects_corrupted_dumps():
    dump = StandardMerkleTree.of([[i] for i in range(6)], ["uint8"]).dump()
    assert StandardMerkleTree.load(dump).root_hex == dump["tree"][0]

    with pytest.raises(InvalidMerkleInput, match="Unknown format"):
        StandardMerkleTree.load({**dump, "format": "simple-v1"})
    with pytest.raises(InvalidMerkleInput, match="leaf encoding"):
        StandardMerkleTree.load({k: v for k, v in dump.items() if k != "leafEncoding"})

    forged_root = json.loads(json.dumps(dump))
    forged_root["tree"][0] = "0x" + "00" * 32
    with pytest.raises(InvalidMerkleTree):
        StandardMerkleTree.load(forged_root)

    forged_value = json.loads(json.dumps(dump))
    forged_value["values"][2]["value"] = [99]
    with pytest.raises(InvalidMerkleTree):
        StandardMerkleTree.load(forged_value)

    bad_index = json.loads(json.dumps(dump))
    bad_index["values"][0]["treeIndex"] = 99
    with pytest.raises(InvalidMerkleTree):
        StandardMerkleTree.load(bad_index)


def test_dump_is_json_safe_for_native_values():
    big = 2**64 - 1
    tree = StandardMerkleTree.of([(b"\x01" * 32, big, 7, b"\x02")], WIDE)
    dump = json.loads(json.dumps(tree.dump()))
    assert dump["values"][0]["value"] == ["0x" + "01" * 32, str(big), 7, "0x02"]
    assert StandardMerkleTree.load(dump).root == tree.root


def test_multiproof_json_round_trip():
    tree = StandardMerkleTree.of([[i, str(i)] for i in range(10)], ["uint8", "string"])
    multi = tree.get_multiproof([7, 2, 5])
    again = MultiProof.from_json(json.loads(json.dumps(multi.to_json())))
    assert again == multi
    assert tree.verify_multiproof(again)


def test_large_tree_proofs_verify():
    """100k leaves of the evidence-frame shape (an hour of 25 fps video is 90k frames): every
    sampled proof verifies and the index lookup finds each value. Speed is measured in bench/."""
    rng = random.Random(42)
    values = [(rng.randbytes(32), rng.getrandbits(64), rng.getrandbits(64), rng.randbytes(32)) for _ in range(100_000)]
    tree = StandardMerkleTree.of(values, WIDE)
    for i in range(0, 100_000, 1000):
        assert tree.index_of(values[i]) == i
        assert tree.verify(values[i], tree.get_proof(values[i]))
    forged = (values[0][0], values[0][1] + 1, values[0][2], values[0][3])
    assert not tree.verify(forged, tree.get_proof(values[0]))


def test_whole_tree_root_is_what_processing_the_tree_own_full_multiproof_gives():
    """`whole_tree_root` (the verifiers' shortcut for a block whose frames are all presented)
    returns exactly `process_multiproof`'s root for the tree's own all-leaves proof, for every
    tree size, and None for anything else: a subset, other leaf order, a cleared flag, a proof
    node, another tree's leaves."""
    from offchain.core.merkle import StandardMerkleTree, process_multiproof

    rng = random.Random(7)
    for n in range(1, 41):
        values = [[rng.randrange(2**64), "0x" + rng.randbytes(32).hex()] for _ in range(n)]
        tree = StandardMerkleTree.of(values, ["uint64", "bytes32"])
        mp = tree.get_multiproof(range(n))
        hashes = [tree.leaf_hash(v) for v in mp.leaves]
        want = process_multiproof(hashes, mp.proof, mp.proof_flags)
        assert want == tree.root
        assert tree.whole_tree_root(hashes, mp.proof, mp.proof_flags) == want
        if n > 1:
            assert tree.whole_tree_root(hashes[1:] + hashes[:1], mp.proof, mp.proof_flags) is None
            assert tree.whole_tree_root(hashes[:-1], mp.proof, mp.proof_flags[:-1]) is None
            assert tree.whole_tree_root(hashes, mp.proof, [False, *mp.proof_flags[1:]]) is None
        assert tree.whole_tree_root(hashes, [tree.root], mp.proof_flags) is None
        other = StandardMerkleTree.of([[v[0] + 1, v[1]] for v in values], ["uint64", "bytes32"])
        assert other.whole_tree_root(hashes, mp.proof, mp.proof_flags) is None


def test_whole_multiproof_is_get_multiproof_of_every_leaf():
    from offchain.core.merkle import StandardMerkleTree

    rng = random.Random(11)
    for n in range(1, 41):
        values = [[rng.randrange(2**64), "0x" + rng.randbytes(32).hex()] for _ in range(n)]
        tree = StandardMerkleTree.of(values, ["uint64", "bytes32"])
        want = tree.get_multiproof(range(n))
        got, hashes = tree.whole_multiproof()
        assert (got.leaves, got.proof, got.proof_flags) == (list(want.leaves), list(want.proof), list(want.proof_flags))
        assert hashes == [tree.leaf_hash(v) for v in want.leaves]
        assert tree.whole_tree_root(hashes, got.proof, got.proof_flags) == tree.root
