"""A real RTSP camera for the tests, and the checks that what came out of the ledger is what the
camera sent: GStreamer's RTSP server (scripts/rtsp_server.py) started on loopback, serving a clip
with its own H.264 packets (and, with ``audio``, its audio packets); the clip's packets read with
PyAV to compare with. Shared by tests/ops/test_rtsp.py, tests/integration/test_audio.py and the
README walkthrough test (tests/ops/test_walkthrough.py).

The server runs under the system Python, which has GStreamer's bindings; `make rtsp-deps`
installs them (Debian packages) on first use, as the project fetches its other parts on first use.
A failed install fails the test with make's output (CI runs `make test` on a clean machine, with
root: the RTSP tests must run there, not skip)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av

from offchain.paths import REPO_ROOT

SYSTEM_PYTHON = "/usr/bin/python3"
HAVE_GST = [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"]


def ensure_gstreamer() -> None:
    """GStreamer's RTSP server for the system Python, installed by `make rtsp-deps` if missing."""
    if subprocess.run(HAVE_GST, capture_output=True).returncode != 0:
        make = subprocess.run(["make", "-C", str(REPO_ROOT), "rtsp-deps"], capture_output=True, text=True, timeout=900)
        assert make.returncode == 0, f"make rtsp-deps failed:\n{make.stdout[-2000:]}\n{make.stderr[-2000:]}"


@contextmanager
def rtsp_server(clip: Path, audio: str | None = None, port: int = 0) -> Iterator[str]:
    """GStreamer's RTSP server on 127.0.0.1 serving the clip's H.264 (and its audio track in the
    codec ``audio``: aac, opus, pcm_mulaw, pcm_alaw); yields its rtsp:// URL. Each client gets its
    own session from the start of the clip, at the clip's pace. The server is ours, stopped by PID."""
    ensure_gstreamer()
    argv = [SYSTEM_PYTHON, str(REPO_ROOT / "scripts" / "rtsp_server.py"), "--file", str(clip), "--port", str(port)]
    server = subprocess.Popen(argv + (["--audio", audio] if audio else []), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("READY "), \
            f"rtsp server: {line!r} {server.stderr.read() if server.poll() is not None and server.stderr else ''}"
        yield line.split()[1]
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGTERM)  # ours, by PID
        server.wait(timeout=10)


def packets(path: Path, kind: str) -> list[bytes]:
    """The file's packets of its first ``kind`` ("audio" or "video") track, in file order."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0] if kind == "audio" else c.streams.video[0]
        return [bytes(p) for p in c.demux(stream) if p.size]


def decoded(path: Path) -> tuple[int, int]:
    """(pictures, audio samples) decoded end to end."""
    pictures = samples = 0
    with av.open(str(path)) as c:
        for frame in c.decode(*c.streams):
            if isinstance(frame, av.AudioFrame):
                samples += frame.samples
            else:
                pictures += 1
    return pictures, samples


def run_of(got: list[bytes], source: list[bytes]) -> bool:
    """Whether `got` is a contiguous run of `source`'s packets (a live stream joins mid-file, and
    a demuxer may drop the encoder-delay packet an edit list hides). A steady tone repeats its
    packets, so every place the first one occurs is tried, not only the first."""
    starts = [i for i, p in enumerate(source) if p == got[0]] if got else []
    return any(got == source[i:i + len(got)] for i in starts)


def vcl_nals(data: bytes, annex_b: bool) -> list[bytes]:
    """The coded-slice NAL units (types 1-5) of one H.264 access unit, in order: what an RTSP
    camera's Annex B frame and the file's length-prefixed (avcC) packet have in common byte for
    byte (the framing and the in-band parameter sets differ)."""
    nals: list[bytes] = []
    if annex_b:
        parts = data.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
        nals = [p.rstrip(b"\x00") if i < len(parts) - 1 else p for i, p in enumerate(parts) if p]
    else:
        i = 0
        while i + 4 <= len(data):
            n = int.from_bytes(data[i:i + 4], "big")
            nals.append(data[i + 4:i + 4 + n])
            i += 4 + n
    return [n for n in nals if n and 1 <= (n[0] & 0x1F) <= 5]
