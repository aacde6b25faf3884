"""A one-pass clip's packets copied into the bundle in a worker thread while the proofs and the
self-check run (issue 9: extraction at remux speed).

The self-check does not need a remuxed clip's bytes: what it checks of the clip (each sample's
SHA-256 and time, `ClipSamples`) follows from the manifests the clip's index was computed from;
the bytes only have to arrive, each frame hashed equal to its anchored digest. So the clip's index
is written first (`video.copied_mp4_layout`), its member reserved in the bundle
(`BundleWriter.reserve_stored`), and its packets are copied in by a worker thread: the store
finds their records by their headers (`LocalStore.located`, one native call per run of records
lying back to back in a pack), then one native call (`offchain.core.gather.copy_frames`) reads
each frame in the clip's decode order, hashes it, carries the CRC-32 on and writes it, with the
GIL released from the first frame to the last. That one release is what makes the overlap work: a stream that
gives the GIL up per window waits a switch interval for it each time beside busy Python (docs/
EVIDENCE.md, "the GIL convoy": a threaded stream went 0.3 s → 37-61 s).

The copy is speculative, and only the outcome of the careful stream is ever reported. A frame the
packs do not deliver intact is fetched the careful way (`careful`: every store in order); if no
store has it intact, or one held a corrupt copy (which the report must say), the copy fails with
`ClipCopyFailed` when it is joined, and extraction starts again without copies in the background
(`extract.extract`), so the report describes what the careful stream finds. Only for a plain
LocalStore whose frames are small and lie in long runs (`suits`): a node's batches of many cameras
interleave a camera's frames, and a run of two frames is not worth a native call; for large frames
the copy on one core is slower than the careful stream's two threads (measured, `MAX_MEAN_FRAME_BYTES`).
"""

from __future__ import annotations

import os
import threading
import zlib
from array import array
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..core.block import FrameRef
from ..core.gather import copy_frames
from ..core.native import GATHER
from ..store.local import LocalStore
from .bundle import BundleWriter, ReservedMember

__all__ = ["ClipCopies", "ClipCopyFailed", "MAX_MEAN_FRAME_BYTES", "MIN_FRAMES_PER_RUN"]

# A clip is copied in the background only where its frames lie at least this many to a run of
# back-to-back records (measured on the first PROBE_FRAMES): below it the index is asked every few
# frames from the worker thread, each answer a wait for the GIL beside the busy self-check.
MIN_FRAMES_PER_RUN = 32
PROBE_FRAMES = 256
# ... and only where its frames are small, on average over the same frames. The copy runs on one
# core beside the main thread's per-frame Python, the bundle's deflate and the chain's answers; on
# this project's 2-core machine it is the faster way for ~2 kB frames (640x272: extraction 0.95 →
# 0.81 s) and the slower for ~10 kB frames (720p: 1.07 → 1.26 s, where the careful stream's reader
# and writer threads move the 300 MB on both cores), docs/EVIDENCE.md, "Round of 2026-12-04".
MAX_MEAN_FRAME_BYTES = 4096

Careful = Callable[[bytes], "bytes | None"]  # a frame's bytes fetched the careful way, or None: not clean


class ClipCopyFailed(Exception):
    """A clip copied in the background met a frame that the careful stream would report on (no
    store delivered it intact, or a store held a corrupt copy): extraction starts again without."""


@dataclass(frozen=True)
class _Copied:
    frames: int  # copied by the native runs (the careful fetch counts the others itself)
    bytes: int
    crc32: int


class _Copy:
    """One clip's packets, copied into its reserved member by a worker thread. ``frames``: the
    clip's frames in its (decode) order; they are looked for in the packs in the order they were
    stored (their sequence numbers)."""

    def __init__(self, store: LocalStore, careful: Careful, member: ReservedMember, head: bytes,
                 frames: Sequence[FrameRef]) -> None:
        self.member = member
        self._store, self._careful = store, careful
        self._head = head
        seqs = [f.seq for f in frames]
        stored = sorted(range(len(frames)), key=seqs.__getitem__)  # stored[i]: the clip position of the i-th stored
        self._digests = b"".join([frames[k].sha256 for k in stored])
        self._sizes = array("I", [frames[k].size for k in stored])
        order = np.empty(len(frames), dtype=np.uint32)  # order[k]: the stored index of the clip's k-th frame
        order[np.asarray(stored, dtype=np.intp)] = np.arange(len(frames), dtype=np.uint32)
        self._order = array("I", order.tobytes())
        self._stop = threading.Event()
        self._outcome: _Copied | BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"clip-copy {member.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._outcome = self._copy()
        except BaseException as exc:  # noqa: BLE001 - handed to the joining thread
            self._outcome = exc

    def _copy(self) -> _Copied:
        fd, base = self.member.fd, self.member.data_offset
        _pwrite_all(fd, self._head, base)
        written, crc = len(self._head), zlib.crc32(self._head)
        count, k, careful = len(self._sizes), 0, 0
        with self._store.located(self._digests, self._sizes) as where:
            while k < count and not self._stop.is_set():
                run = copy_frames(where.fds, where.offsets, self._sizes, self._digests, self._order, k, fd,
                                  base + written, crc)
                k, written, crc = run.next, written + run.written, run.crc32
                if k == count:
                    break
                data = self._careful_frame(self._order[k])  # a loose file, another store
                _pwrite_all(fd, data, base + written)
                written, crc, k, careful = written + len(data), zlib.crc32(data, crc), k + 1, careful + 1
        if k < count:
            raise ClipCopyFailed(f"{self.member.name}: stopped after {k} of {count} frames")
        if written != self.member.size:
            raise ClipCopyFailed(f"{self.member.name}: {written} bytes written, {self.member.size} reserved")
        return _Copied(frames=count - careful, bytes=written - len(self._head), crc32=crc)  # the careful way counts its own

    def _careful_frame(self, i: int) -> bytes:
        data = self._careful(self._digests[32 * i:32 * i + 32])
        if data is None or len(data) != self._sizes[i]:
            raise ClipCopyFailed(f"{self.member.name}: a frame is not delivered intact by the packs, and the careful "
                                 "way has something to report")
        return data

    def join(self) -> _Copied:
        self._thread.join()
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        assert self._outcome is not None
        return self._outcome

    def stop(self) -> None:
        """Stop between runs (a native run cannot be interrupted) and wait for the thread."""
        self._stop.set()
        self._thread.join()


class ClipCopies:
    """The clips of one extraction copied in the background: `start` one per remuxed clip that
    `suits`, `finish` once the self-check is done (the CRCs go into the bundle), `stop` on the
    way out whatever happened. ``store``: the first store (a plain LocalStore); ``careful``: the
    careful fetch for a frame its packs do not deliver intact."""

    def __init__(self, store: LocalStore, careful: Careful) -> None:
        self._store, self._careful = store, careful
        self._copies: list[_Copy] = []
        self.frames = 0
        self.bytes = 0

    @staticmethod
    def available(store: object) -> bool:
        """Whether copies in the background can run over this store: the native copy is built,
        the store is a plain LocalStore and its packs may be read by their record headers."""
        return GATHER and type(store) is LocalStore and store.copies_intact()

    def suits(self, frames: Sequence[FrameRef]) -> bool:
        """Whether a clip of these frames is worth copying in the background: its first
        `PROBE_FRAMES` frames are `MAX_MEAN_FRAME_BYTES` or less on average and, in the order they
        were stored, lie `MIN_FRAMES_PER_RUN` to a run."""
        first = sorted(frames[:PROBE_FRAMES], key=lambda f: f.seq)
        if not first or sum(f.size for f in first) > MAX_MEAN_FRAME_BYTES * len(first):
            return False
        return self._store.frames_per_run([f.sha256 for f in first]) >= MIN_FRAMES_PER_RUN

    def start(self, writer: BundleWriter, name: str, head: bytes, frames: Sequence[FrameRef]) -> None:
        """Reserve ``name`` (its head, then the packets of ``frames``, in this order, back to back)
        in the bundle and begin copying into it."""
        member = writer.reserve_stored(name, len(head) + sum(f.size for f in frames))
        self._copies.append(_Copy(self._store, self._careful, member, head, frames))

    def finish(self, writer: BundleWriter) -> None:
        """Wait for every copy and put its CRC-32 into the bundle. Raises ClipCopyFailed (or the
        copy's own error) for a copy that did not deliver every frame intact."""
        for copy in self._copies:
            done = copy.join()
            writer.finish_reserved(copy.member, done.crc32)
            self.frames += done.frames
            self.bytes += done.bytes
        self._copies.clear()

    def stop(self) -> None:
        for copy in self._copies:
            copy.stop()
        self._copies.clear()


def _pwrite_all(fd: int, data: bytes, at: int) -> None:
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], at + done)
