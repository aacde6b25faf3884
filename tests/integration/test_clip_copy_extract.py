"""Extraction with the clip copied in the background (offchain/evidence/clip_copy.py), against a
real chain and a store written as a node writes it: the bundle holds byte for byte the clip the
careful stream writes, both verifiers agree, and a corrupt record in the packs sends the
extraction back to the careful stream, whose report names the corrupt copy."""

from __future__ import annotations

import hashlib
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from offchain.chain.deployer import deploy
from offchain.evidence import clip_copy
from offchain.evidence.bundle import ChainReader, verify_bundle
from offchain.evidence.clip_copy import ClipCopies
from offchain.evidence.extract import extract
from offchain.store.local import LocalStore

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))
from bench.extract_bench import anchor_camera  # noqa: E402

pytestmark = pytest.mark.skipif(not clip_copy.GATHER, reason="the C module is not built (it is optional)")


@pytest.fixture(scope="module")
def camera(devchain, w3, tmp_path_factory):
    dep = deploy(w3, devchain.private_keys, out_dir=None)
    store_dir = tmp_path_factory.mktemp("clip-copy") / "store"
    cam = anchor_camera(w3, devchain.private_keys, dep, LocalStore(store_dir, fsync="none"), "bikes", 40, 1.0,
                        30_000, layout="packs")
    return dep, store_dir, cam


def _extract(w3, dep, stores, cam, out: Path):
    return extract(cam["ip"], cam["from_ms"], cam["to_ms"], ChainReader(w3, dep.video_ledger), stores, out)


def _clips(bundle: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(bundle) as zf:
        assert zf.testzip() is None  # every member's CRC, the reserved clip's included
        return {n: zf.read(n) for n in zf.namelist() if n.startswith("clips/")}


def test_the_background_copy_writes_the_careful_streams_clip(devchain, w3, camera, tmp_path, monkeypatch):
    dep, store_dir, cam = camera
    started: list[str] = []
    start = ClipCopies.start
    monkeypatch.setattr(ClipCopies, "start", lambda self, w, name, *a: (started.append(name), start(self, w, name, *a)))
    fast = _extract(w3, dep, [LocalStore(store_dir, fsync="none")], cam, tmp_path / "fast")
    assert started == ["clips/clip-000.mp4"]
    monkeypatch.setattr(ClipCopies, "available", staticmethod(lambda store: False))
    careful = _extract(w3, dep, [LocalStore(store_dir, fsync="none")], cam, tmp_path / "careful")
    assert fast.report.verdict == careful.report.verdict == "verified"
    assert _clips(fast.bundle_path) == _clips(careful.bundle_path) != {}
    assert fast.fetched == careful.fetched and fast.fetched_bytes == careful.fetched_bytes >= cam["bytes"]
    assert verify_bundle(fast.bundle_path, devchain.rpc_url, ledger_address=dep.video_ledger).verdict == "verified"


def test_a_corrupt_record_sends_the_extraction_back_to_the_careful_stream(w3, camera, tmp_path, caplog):
    caplog.set_level("INFO", logger="offchain.evidence.extract")
    dep, store_dir, cam = camera
    shutil.copytree(store_dir, tmp_path / "bad")
    bad = LocalStore(tmp_path / "bad", fsync="none")
    victim = cam["frames"][700]
    pack, offset, length = bad._packed(victim.sha256)  # noqa: SLF001 - the test corrupts one record's bytes
    path = bad._packs / pack  # noqa: SLF001
    raw = bytearray(path.read_bytes())
    raw[offset + length // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    assert hashlib.sha256(raw[offset:offset + length]).digest() != victim.sha256
    res = _extract(w3, dep, [bad, LocalStore(store_dir, fsync="none")], cam, tmp_path / "out")
    assert "extracting again the careful way" in caplog.text
    assert res.report.verdict == "verified"
    assert [(f.seq, f.code) for f in res.report.findings if f.code == "store.block.corrupt"] == [(victim.seq, "store.block.corrupt")]
    clean = _extract(w3, dep, [LocalStore(store_dir, fsync="none")], cam, tmp_path / "clean")
    assert _clips(res.bundle_path) == _clips(clean.bundle_path)
