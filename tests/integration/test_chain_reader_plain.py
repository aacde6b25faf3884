"""The chain reads extraction and verification share (`ChainReader`), asked of the provider
itself where web3's formatters were a measured cost: block records in one raw JSON-RPC batch and
`verifyFrames` as a raw eth_call. Against a real Anvil and a real ledger: the raw answers are
the ones web3 gives, and anything but a plain answer (a revert) goes the careful way and keeps
its meaning."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from web3 import HTTPProvider, WebSocketProvider

from offchain.chain.deployer import deploy
from offchain.chain.rawrpc import RawEthCall
from offchain.core.block import camera_id
from offchain.core.cid import cid_from_digest
from offchain.evidence.bundle import ChainReader
from offchain.evidence.extract import _multiproof
from offchain.evidence.verify import manifest_tree, parsed_manifest
from offchain.store.local import LocalStore

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))
from bench.extract_bench import anchor_camera  # noqa: E402


@pytest.fixture(scope="module")
def anchored(devchain, w3, tmp_path_factory):
    dep = deploy(w3, devchain.private_keys, out_dir=None)
    store = LocalStore(tmp_path_factory.mktemp("plain-reads") / "store", fsync="none")
    cam = anchor_camera(w3, devchain.private_keys, dep, store, "bikes", 41, 2.0, 30_000, layout="packs")
    return ChainReader(w3, dep.video_ledger), camera_id(cam["ip"]), store


def test_block_records_read_raw_are_web3s(anchored, monkeypatch):
    reader, cam, _ = anchored
    heights = reader.heights_in_range(cam, 0, 2**63)
    assert len(heights) >= 2
    raw = reader.blocks(cam, heights)
    monkeypatch.setattr(ChainReader, "_plain_batch", lambda self, requests: None)  # web3's batch only
    assert reader.blocks(cam, heights) == raw
    assert all(b is not None and b.header.height == h for h, b in raw.items())


def test_a_batch_with_a_reverting_call_goes_the_careful_way(anchored):
    reader, cam, _ = anchored
    fn = reader.contract.get_function_by_name("blockHashAt")
    ok = {"to": reader.address, "data": fn(cam, 1)._encode_transaction_data()}
    past_the_tip = {"to": reader.address, "data": fn(cam, 10**6)._encode_transaction_data()}  # UnknownHeight
    assert reader._plain_batch([ok, ok]) is not None
    assert reader._plain_batch([ok, past_the_tip]) is None


def test_verify_frames_raw_is_true_false_and_a_revert_is_false(anchored):
    reader, cam, store = anchored
    block = reader.blocks(cam, [1])[1]
    manifest = parsed_manifest(block.header.manifest_digest, store.get(cid_from_digest(block.header.manifest_digest)))
    tree = manifest_tree(cam, block.header.manifest_digest, manifest.frames)
    proof, hashes = _multiproof(tree, list(range(len(manifest.frames))))
    assert reader.verify_frames(block.block_hash, proof, hashes) is True
    assert reader.verify_frames(block.block_hash, proof, [bytes(32)] + hashes[1:]) is False  # a plain "no"
    broken = type(proof)(proof.leaves, proof.proof, proof.proof_flags[:-1])  # the library reverts on it
    assert reader.verify_frames(block.block_hash, broken, hashes) is False
    assert reader._raw_call is not None  # the project's own HTTP provider: asked over HTTP directly


def test_verify_frames_answer_the_same_without_the_direct_http_path(anchored, monkeypatch):
    reader, cam, store = anchored
    block = reader.blocks(cam, [1])[1]
    manifest = parsed_manifest(block.header.manifest_digest, store.get(cid_from_digest(block.header.manifest_digest)))
    tree = manifest_tree(cam, block.header.manifest_digest, manifest.frames)
    proof, hashes = _multiproof(tree, list(range(len(manifest.frames))))
    broken = type(proof)(proof.leaves, proof.proof, proof.proof_flags[:-1])
    direct = [reader.verify_frames(block.block_hash, proof, hashes), reader.verify_frames(block.block_hash, broken, hashes)]
    monkeypatch.setattr(reader, "_raw_call", None)
    assert [reader.verify_frames(block.block_hash, proof, hashes),
            reader.verify_frames(block.block_hash, broken, hashes)] == direct == [True, False]


def test_the_direct_http_call_is_web3s_answer_and_none_when_it_cannot_be_asked(anchored, w3):
    reader, cam, _ = anchored
    data = reader.contract.get_function_by_name("blockHashAt")(cam, 1)._encode_transaction_data()
    raw = RawEthCall.of(w3.provider)
    answer = raw.call(reader.address, data)
    assert answer["result"] == "0x" + bytes(w3.eth.call({"to": reader.address, "data": data})).hex()
    assert "error" in raw.call(reader.address, data[:10])  # a revert: an answer with its error
    raw.close()
    assert raw.call(reader.address, data)["result"] == answer["result"]  # connects again
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert RawEthCall("127.0.0.1", port, "/", 2.0).call(reader.address, "0x00") is None
    raw.close()


@pytest.mark.parametrize("provider", [
    HTTPProvider("https://127.0.0.1:8545"),
    HTTPProvider("http://127.0.0.1:8545", request_kwargs={"headers": {"Authorization": "Bearer x"}}),
    HTTPProvider("http://user:pw@127.0.0.1:8545"),
    HTTPProvider("http://127.0.0.1:notaport"),
    WebSocketProvider("ws://127.0.0.1:8546"),
])
def test_only_a_plain_http_provider_is_asked_directly(provider):
    assert RawEthCall.of(provider) is None
