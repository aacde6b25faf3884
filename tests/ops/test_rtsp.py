"""A real RTSP camera: GStreamer's RTSP server, started here on loopback, streams a sample clip
(the file's own H.264 packets over RTP/TCP); `UrlSource` takes it frame by frame. RTSP's first
packet reaches PyAV without timestamps; it must still come out first, as a keyframe, timed one
frame before the next, and every frame must carry exactly the file's coded slices.

The server needs Debian packages; `make rtsp-deps` installs them on first use (as the project
fetches its other parts on first use; tests/live_camera.py)."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import socket
import threading
import time
from pathlib import Path
import subprocess

import av
import pytest

from offchain.camera.samples import sample_path
from offchain.camera.sources import SourceError, _presentation_order
from offchain.camera.url_source import UrlSource
from offchain.paths import REPO_ROOT
from live_camera import SYSTEM_PYTHON, rtsp_server, vcl_nals as _vcl_nals
from site_runner import SiteCamera, extract, running_site

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rtsp_url():
    clip = sample_path("vtest")  # H.264 in MP4
    with rtsp_server(clip) as url:
        yield url, clip


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_camera_frames_are_the_files_slices(rtsp_url, transport):
    url, clip = rtsp_url
    source = UrlSource(url, start_ms=1_000_000, options={"rtsp_transport": transport}, timing="agent")
    frames = []
    for frame in source.frames():
        frames.append(frame)
        if len(frames) == 40:
            break
    source.close()
    assert source.codec.codec == "h264"
    assert [f.seq for f in frames] == list(range(40))
    assert frames[0].keyframe and frames[0].timestamp_ms == 1_000_000  # the untimed first packet, first
    steps = {b.timestamp_ms - a.timestamp_ms for a, b in zip(frames, frames[1:])}
    assert steps == {100}, steps  # 10 fps: RTP's 90 kHz clock, and one interpolated frame before it
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        originals = [bytes(p) for p, _ in zip((p for p in container.demux(stream) if p.size), range(40))]
    assert len(originals) == 40 and all(_vcl_nals(o, annex_b=False) for o in originals)
    for frame, original in zip(frames, originals):
        assert _vcl_nals(frame.data, annex_b=True) == _vcl_nals(original, annex_b=False), f"frame {frame.seq}"


def test_rtsp_capture_time_is_the_cameras_rtcp_clock(rtsp_url):
    """GStreamer sends RTCP sender reports stamped with its wall clock; FFmpeg maps them to the
    wall time of pts 0 (`start_time_realtime`): frames are timed by the camera, not by start_ms."""
    url, _ = rtsp_url
    before = time.time() * 1000
    source = UrlSource(url, start_ms=1_000_000)
    frames = [f for f, _ in zip(source.frames(), range(30))]
    source.close()
    after = time.time() * 1000
    assert source.session_timing == ["rtcp"]
    assert before - 1_000 <= frames[0].timestamp_ms <= after, (before, frames[0].timestamp_ms, after)
    assert {b.timestamp_ms - a.timestamp_ms for a, b in zip(frames, frames[1:])} == {100}
    wrong_clock = UrlSource(url, start_ms=1_000_000, max_skew_ms=0)  # any skew is too much: the agent's clock
    frames = [f for f, _ in zip(wrong_clock.frames(), range(3))]
    wrong_clock.close()
    assert wrong_clock.session_timing == ["agent"] and frames[0].timestamp_ms == 1_000_000


class _Packet:
    def __init__(self, pts, dts, data=b"x", key=False):
        self.pts, self.dts, self.duration, self.is_keyframe, self._data = pts, dts, 0, key, data
        self.size = len(data)

    def __bytes__(self) -> bytes:
        return self._data


class _Container:
    def __init__(self, packets):
        self.packets = packets

    def demux(self, stream):
        return iter(self.packets)


def test_untimed_packets_are_interpolated_on_live_streams_and_refused_in_files():
    packets = [_Packet(None, None, b"a", True), _Packet(None, None, b"b"), _Packet(30, 30, b"c"),
               _Packet(None, None, b"d"), _Packet(50, 50, b"e")]
    out = list(_presentation_order(_Container(packets), None, default_duration=10, fill_missing=True))
    assert [(pts, dts, data) for pts, dts, _, _, data in out] == [
        (10, 10, b"a"), (20, 20, b"b"), (30, 30, b"c"), (40, 40, b"d"), (50, 50, b"e")]
    assert out[0][3] is True
    with pytest.raises(SourceError, match="not live"):
        list(_presentation_order(_Container(packets), None, default_duration=10))
    with pytest.raises(SourceError, match="before any packet carried a timestamp"):
        list(_presentation_order(_Container([_Packet(None, None)]), None, default_duration=10, fill_missing=True))


def test_http_mp4_with_its_index_at_the_end_is_named(tmp_path):
    """Python's http.server ignores range requests, as many simple servers do."""
    with av.open(str(sample_path("vtest"))) as src:
        stream = src.streams.video[0]
        with av.open(str(tmp_path / "moov-last.mp4"), "w") as out:  # the muxer's default: index last
            track = out.add_stream_from_template(stream)
            for packet, _ in zip((p for p in src.demux(stream) if p.size), range(50)):
                packet.stream = track
                out.mux(packet)
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(SourceError, match="index .moov box. comes after its media") as err:
            list(UrlSource(f"http://127.0.0.1:{server.server_port}/moov-last.mp4").frames())
        assert "faststart" in str(err.value) and "range requests" in str(err.value)
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _serve(clip: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen([SYSTEM_PYTHON, str(REPO_ROOT / "scripts" / "rtsp_server.py"), "--file", str(clip),
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              start_new_session=True)
    assert server.stdout.readline().startswith("READY")
    return server


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.kill(server.pid, signal.SIGTERM)  # ours, by PID
        server.wait(timeout=10)


def test_rtsp_reconnect_declares_the_outage_as_a_time_gap(rtsp_url):
    """The camera goes away for ~3 s and comes back: the agent reconnects, numbering goes on, and
    capture time jumps by the outage instead of pretending the stream never stopped."""
    _, clip = rtsp_url
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = _serve(clip, port)
    frames = []
    restarted: list[subprocess.Popen] = []
    try:
        source = UrlSource(f"rtsp://127.0.0.1:{port}/cam", start_ms=5_000_000, loop=True, reconnect_s=30, timeout=5)
        for frame in source.frames():
            frames.append(frame)
            if len(frames) == 20:
                _stop(server)
                threading.Timer(3.0, lambda: restarted.append(_serve(clip, port))).start()
            if len(frames) == 40:
                break
    finally:
        _stop(server)
        for s in restarted:
            _stop(s)
    assert [f.seq for f in frames] == list(range(40))
    steps = [b.timestamp_ms - a.timestamp_ms for a, b in zip(frames, frames[1:])]
    jumps = [s for s in steps if s != 100]
    assert len(jumps) == 1 and jumps[0] >= 100 + 2_000, steps  # the outage, at least 2 s of the 3
    assert frames[[i for i, st in enumerate(steps) if st != 100][0] + 1].keyframe  # a new session starts at a keyframe
    assert source.session_timing == ["rtcp", "rtcp"]  # each session timed by the camera's clock
    (outage,) = source.outages
    k = outage.after_seq  # frames PyAV had read ahead still came after the server stopped
    assert 19 <= k < 39 and (outage.from_ms, outage.to_ms) == (frames[k].timestamp_ms, frames[k + 1].timestamp_ms)
    assert frames[k + 1].timestamp_ms - frames[k].timestamp_ms == jumps[0]



@pytest.mark.soak
def test_rtsp_camera_in_a_site_is_anchored_and_its_evidence_verifies(rtsp_url, tmp_path):
    """The live path end to end with the CLI only: `frameledger up` with an rtsp:// camera, blocks
    final at quorum, then `frameledger extract` of a range, VERIFIED against the chain. In `make
    soak` only: `make test` runs an RTSP camera through a consortium in the README walkthrough
    (tests/ops/test_walkthrough.py), and `frameledger up` with a file camera (test_site_up.py)."""
    url, _ = rtsp_url
    with running_site(tmp_path, cameras=[SiteCamera(ip="10.0.0.7", source=url, extra="max_frames = 120\n")],
                      min_blocks=3, what="the RTSP camera") as site:
        first = site.camera["lastBlock"]["windowStartMs"] - 10_000
        out, report = extract(site, ip="10.0.0.7", from_ms=first, out=tmp_path / "ev", timeout=300)
        assert out.returncode == 0 and report["verdict"] == "verified", out.stdout[-3000:] + out.stderr[-2000:]
