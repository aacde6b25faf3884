"""The bundle zip writer: stored members copied by the kernel with a CRC computed up front must
read back as any zip reader expects (CRC checked on read), also where copy_file_range fails."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from offchain.evidence import bundle
from offchain.evidence.bundle import BundleWriter
from offchain.evidence.extract import ClipFile


def _copy_file_range_failing_after_one_mib(monkeypatch) -> list[int]:
    """os.copy_file_range that copies 1 MiB, then fails as across file systems; the counts asked."""
    real = os.copy_file_range
    calls: list[int] = []

    def one_mib_then_fail(src: int, dst: int, count: int, offset_src: int | None = None, *rest: object) -> int:
        calls.append(count)
        if len(calls) > 1:
            raise OSError(18, "Invalid cross-device link")
        return real(src, dst, min(count, 1 << 20), offset_src)

    monkeypatch.setattr(bundle.os, "copy_file_range", one_mib_then_fail)
    return calls


@pytest.mark.parametrize("size", [0, 1, 3 << 20])
def test_stored_clips_and_json_read_back_with_valid_crcs(tmp_path: Path, size: int) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(os.urandom(size))
    writer = BundleWriter(tmp_path / "out" / "b.zip")
    writer.add([("clips/clip-000.mp4", clip), ("proofs/000001.json", b'{"a":1}'), ("clips/clip-001.mp4", clip)])
    writer.add_index({"format": "x"})
    path = writer.close()
    assert not list(path.parent.glob(".*partial"))
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        assert [i.filename for i in zf.infolist()] == ["clips/clip-000.mp4", "proofs/000001.json",
                                                       "clips/clip-001.mp4", "bundle.json"]
        assert zf.getinfo("clips/clip-000.mp4").compress_type == zipfile.ZIP_STORED
        assert zf.getinfo("proofs/000001.json").compress_type == zipfile.ZIP_STORED
        assert zf.read("clips/clip-000.mp4") == zf.read("clips/clip-001.mp4") == clip.read_bytes()


def test_a_copy_file_range_failure_midway_is_finished_by_plain_writes(tmp_path: Path, monkeypatch) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(os.urandom(5 << 20))
    calls = _copy_file_range_failing_after_one_mib(monkeypatch)
    writer = BundleWriter(tmp_path / "b.zip")
    writer.add([("clips/clip-000.mp4", clip), ("report.json", b"{}")])
    with zipfile.ZipFile(writer.close()) as zf:
        assert zf.testzip() is None and zf.read("clips/clip-000.mp4") == clip.read_bytes()
    assert len(calls) == 2


def test_an_aborted_bundle_leaves_nothing(tmp_path: Path) -> None:
    writer = BundleWriter(tmp_path / "b.zip")
    writer.add([("report.json", b"{}")])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_a_member_written_straight_into_the_zip_reads_back_and_a_failed_one_leaves_nothing(tmp_path: Path) -> None:
    """`stored_member`: the one-pass clip written into the zip as it is produced (CRC patched in at
    the end); a block that raises, or writes other than the announced size, is cut out of the
    zip; `rollback_to` removes members written since a mark. Every zip reads back with valid CRCs."""
    data = os.urandom((2 << 20) + 7)
    writer = BundleWriter(tmp_path / "b.zip")
    writer.add([("proofs/000001.json", b'{"a":1}')])
    with pytest.raises(RuntimeError, match="stream failed"):
        with writer.stored_member("clips/clip-000.mp4", len(data)) as member:
            member.write(data[:1000])
            raise RuntimeError("stream failed")
    with pytest.raises(ValueError, match="1000 bytes written"):
        with writer.stored_member("clips/clip-000.mp4", len(data)) as member:
            member.write(data[:1000])
    mark = writer.mark()
    with writer.stored_member("clips/clip-000.mp4", len(data)) as member:
        for at in range(0, len(data), 1 << 20):
            member.write(data[at:at + (1 << 20)])
    offset, size = writer.stored_at["clips/clip-000.mp4"]
    writer.rollback_to(mark)
    assert "clips/clip-000.mp4" not in writer.stored_at
    with writer.stored_member("clips/clip-000.mp4", len(data)) as member:
        member.write(data)
    offset, size = writer.stored_at["clips/clip-000.mp4"]
    writer.add([("report.json", b"{}")])
    writer.add_index({"format": "x"})
    path = writer.close()
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        assert [i.filename for i in zf.infolist()] == ["proofs/000001.json", "clips/clip-000.mp4", "report.json",
                                                       "bundle.json"]
        assert zf.read("clips/clip-000.mp4") == data
    assert size == len(data) and path.read_bytes()[offset:offset + size] == data


def test_a_clip_copied_out_of_the_bundle_from_its_offset_survives_copy_file_range_failing_midway(
        tmp_path: Path, monkeypatch) -> None:
    """`ClipFile.write_to` (`copy_range` from a member's offset into a buffered file): the plain
    reads and writes that finish a copy the kernel began continue at the descriptor's offset, so
    the copy is the member's bytes exactly."""
    data = os.urandom((3 << 20) + 11)
    writer = BundleWriter(tmp_path / "b.zip")
    writer.add([("report.json", b"{}")])
    with writer.stored_member("clips/clip-000.mp4", len(data)) as member:
        member.write(data)
    offset, size = writer.stored_at["clips/clip-000.mp4"]
    path = writer.close()
    calls = _copy_file_range_failing_after_one_mib(monkeypatch)
    clip = ClipFile(path=path, offset=offset, size=size, member="clips/clip-000.mp4")
    assert clip.write_to(tmp_path / "out" / "clip-000.mp4").read_bytes() == data == clip.read_bytes()
    assert len(calls) == 2
