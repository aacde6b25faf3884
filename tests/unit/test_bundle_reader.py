"""A bundle's clip read in place (BundleReader.open_member): a stored zip member is a bounded,
seekable window of the zip file with its CRC-32 checked beside the reader; any other member is a
private copy on disk. Real zips written by BundleWriter and by Python's zipfile."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from offchain.evidence.bundle import BundleWriter
from offchain.evidence.bundle_reader import LIMITS, BundleReader, MemberError


def _bundle(tmp_path: Path, data: bytes) -> Path:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(data)
    writer = BundleWriter(tmp_path / "b.zip")
    writer.add([("proofs/000001.json", b'{"a":1}'), ("clips/clip-000.mp4", clip)])
    writer.add_index({"format": "x"})
    return writer.close()


@pytest.mark.parametrize("size", [0, 1, (5 << 20) + 3])
def test_a_stored_clip_is_read_in_place_with_seeks(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    with BundleReader(_bundle(tmp_path, data)) as reader, reader.open_member("clips/clip-000.mp4") as fh:
        assert not isinstance(fh, Path)  # a window of the zip, not a copy
        assert fh.read() == data
        assert fh.seek(0) == 0 and fh.read(7) == data[:7]
        assert fh.seek(-min(size, 1), os.SEEK_END) == max(size - 1, 0) and fh.read() == data[-1:]
    assert not list(tmp_path.glob("frameledger-bundle-*"))


def test_a_stored_clip_whose_bytes_do_not_match_its_crc_is_refused(tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    path = _bundle(tmp_path, data)
    raw = bytearray(path.read_bytes())
    raw[raw.index(data[1000:1032]) + 5] ^= 0xFF  # one byte of the clip, its CRC left as it was
    path.write_bytes(bytes(raw))
    with BundleReader(path) as reader:
        with pytest.raises(MemberError, match="Bad CRC-32"):
            with reader.open_member("clips/clip-000.mp4") as fh:
                assert len(fh.read()) == len(data)


def test_a_deflated_clip_goes_through_a_private_copy_and_the_limit_holds(tmp_path: Path, monkeypatch) -> None:
    data = os.urandom(3000) * 10
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("clips/clip-000.mp4", data)
        zf.writestr("clips/clip-001.mp4", data, compress_type=zipfile.ZIP_STORED)
    with BundleReader(path) as reader:
        with reader.open_member("clips/clip-000.mp4") as fh:
            assert isinstance(fh, Path) and fh.read_bytes() == data
        monkeypatch.setitem(LIMITS, "clips/", 1000)
        with pytest.raises(MemberError, match="over the 1000-byte limit") as err:
            with reader.open_member("clips/clip-001.mp4"):
                pass
        assert err.value.code == "bundle.member.oversize"
        with pytest.raises(MemberError, match="not in the bundle"):
            with reader.open_member("clips/none.mp4"):
                pass
