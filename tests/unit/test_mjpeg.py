"""MJPEG over HTTP: the multipart parser byte by byte, and `MjpegSource` against a real HTTP camera
on 127.0.0.1 (tests/mjpeg_server.py: JPEGs from FFmpeg's encoder), well-formed and hostile."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mjpeg_server import MjpegCamera, jpeg_array, make_jpegs
from offchain.camera.mjpeg import (MjpegSource, MultipartError, MultipartParser, boundary_of, jpeg_size,
                                   parse_x_timestamp)
from offchain.camera.sources import SourceError


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return make_jpegs(20)


@pytest.fixture(scope="module")
def cam(jpegs):
    with MjpegCamera(jpegs) as camera:
        yield camera


def _stream(parts: list[bytes], length: bool = True, boundary: str = "b") -> bytes:
    out = b"preamble to ignore\r\n"
    for body in parts:
        out += f"--{boundary}\r\nContent-Type: image/jpeg\r\n".encode()
        if length:
            out += f"Content-Length: {len(body)}\r\n".encode()
        out += b"\r\n" + body + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize("length", [True, False])
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_parser_gives_every_part_exactly_whatever_the_chunking(jpegs, length, chunk):
    data = _stream(jpegs[:5], length=length)
    parser = MultipartParser(b"b")
    parts = []
    for i in range(0, len(data), chunk):
        parts += parser.feed(data[i:i + chunk])
    parts += parser.finish()
    assert [p.body for p in parts] == jpegs[:5]
    assert [p.index for p in parts] == [1, 2, 3, 4, 5] and parser.done
    assert parts[0].headers["content-type"] == "image/jpeg"


def test_parser_limits_and_malformed_streams_are_named(jpegs):
    with pytest.raises(MultipartError, match="no boundary '--b' in the first 100 bytes"):
        MultipartParser(b"b", max_header_bytes=100).feed(b"x" * 200)
    with pytest.raises(MultipartError, match="over the limit of 1000 bytes .its Content-Length is 5000"):
        MultipartParser(b"b", max_part_bytes=1000).feed(b"--b\r\nContent-Length: 5000\r\n\r\n")
    with pytest.raises(MultipartError, match="over the limit of 1000 bytes .no boundary"):
        MultipartParser(b"b", max_part_bytes=1000).feed(b"--b\r\n\r\n\xff\xd8" + b"z" * 2000)
    with pytest.raises(MultipartError, match="headers of part 1 exceed 64 bytes"):
        MultipartParser(b"b", max_header_bytes=64).feed(b"--b\r\nX-A: " + b"a" * 100)
    with pytest.raises(MultipartError, match="more than 64 headers"):
        MultipartParser(b"b").feed(b"--b\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(70)))
    with pytest.raises(MultipartError, match="Content-Length '12x' is not a number"):
        MultipartParser(b"b").feed(b"--b\r\nContent-Length: 12x\r\n\r\n")
    with pytest.raises(MultipartError, match="part 1: its Content-Length .3. is not followed by the boundary"):
        MultipartParser(b"b").feed(b"--b\r\nContent-Length: 3\r\n\r\nabcdefgh-not-a-boundary")
    truncated = MultipartParser(b"b")
    truncated.feed(b"--b\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(MultipartError, match="ended inside part 1: 3 of its 10 bytes"):
        truncated.finish()
    with pytest.raises(MultipartError, match="ended before its first boundary"):
        MultipartParser(b"b").finish()


def test_content_type_boundaries_and_camera_quirks(jpegs):
    assert boundary_of("multipart/x-mixed-replace; boundary=myboundary") == b"myboundary"
    assert boundary_of('multipart/x-mixed-replace;boundary="--quoted one"') == b"--quoted one"
    for bad in ("image/jpeg", "multipart/x-mixed-replace", "multipart/x-mixed-replace; boundary="):
        with pytest.raises(MultipartError):
            boundary_of(bad)
    # boundary parameter "--q" used literally, bare LF, no CRLF before the next boundary, no close
    data = b"".join(b"--q\nContent-Type: image/jpeg\n\n" + j for j in jpegs[:3])
    parser = MultipartParser(b"--q")
    assert [p.body for p in parser.feed(data) + parser.finish()] == jpegs[:3]


def test_jpeg_size_and_x_timestamp(jpegs):
    assert jpeg_size(jpegs[0]) == (320, 240)
    assert jpeg_size(b"\xff\xd8\xff\xda") is None and jpeg_size(b"GIF89a") is None and jpeg_size(b"") is None
    assert parse_x_timestamp("1700000000.125") == 1_700_000_000_125
    assert parse_x_timestamp("1700000000125") == 1_700_000_000_125
    assert parse_x_timestamp("nan") is None and parse_x_timestamp("-5") is None and parse_x_timestamp("1e9") is None


@pytest.mark.parametrize("path", ["/cam", "/nolength", "/quirky"])
def test_mjpeg_camera_frames_are_its_jpegs_timed_by_the_agents_clock(cam, jpegs, path):
    before = time.time() * 1000
    source = MjpegSource(cam.url(f"{path}?frames=25"))
    frames = list(source.frames())
    after = time.time() * 1000
    codec = source.codec
    assert (codec.codec, codec.width, codec.height, codec.pix_fmt, codec.fps) == ("mjpeg", 320, 240, "yuvj420p", 10)
    assert [f.seq for f in frames] == list(range(25))
    assert [f.data for f in frames] == [jpegs[i % 20] for i in range(25)]  # byte for byte, as served
    assert all(f.keyframe for f in frames)
    times = [f.timestamp_ms for f in frames]
    assert before <= times[0] and times[-1] <= after and times == sorted(set(times))
    assert times[-1] - times[0] >= 24 * 100 * 0.8  # paced by arrival (10 fps), not by reading speed
    assert jpeg_array(frames[3].data).shape == (240, 320)


def test_x_timestamp_is_the_capture_time_when_the_camera_sends_it(cam):
    source = MjpegSource(cam.url("/xts?frames=12"))
    frames = list(source.frames())
    # the server stamps each part with its clock at 3 decimals: capture times are those, exactly
    assert all(f.timestamp_ms % 1 == 0 for f in frames) and len(frames) == 12
    agent = list(MjpegSource(cam.url("/xts?frames=12"), timing="agent", start_ms=5_000).frames())
    assert 5_000 <= agent[0].timestamp_ms < 15_000  # agent timing ignores the header
    camera_times = [f.timestamp_ms for f in frames]
    assert abs(camera_times[0] - time.time() * 1000) < 60_000
    assert camera_times == sorted(set(camera_times))


@pytest.mark.parametrize("path, message", [
    ("/noboundary", "no usable boundary parameter"),
    ("/wrongboundary", "no boundary '--frameledgerboundary' in the first 8192 bytes"),
    ("/huge", "part 1 is over the limit of 8388608 bytes .its Content-Length is 67108864"),
    ("/hugescan", "part 1 is over the limit of 8388608 bytes .no boundary within them"),
    ("/truncated", "ended inside part 4: .* of its .* bytes .Content-Length. arrived"),
    ("/slow", "part 2 not complete after 1 s"),
    ("/stall", "nothing received for 1 s"),
    ("/silent", "cannot open .*: no answer within 1 s"),
    ("/notjpeg", "part 1 is 'text/plain', not image/jpeg"),
    ("/resize", "part 3 is 160x120, the stream began at 320x240"),
])
def test_hostile_cameras_fail_with_one_clear_error(cam, path, message):
    with pytest.raises(SourceError, match=message):
        for _ in MjpegSource(cam.url(path), timeout=1, part_timeout=1).frames():
            pass


def test_reconnect_declares_the_outage(cam, jpegs):
    """/truncated breaks after 3 frames each time: the source reconnects, numbering goes on, the
    frames of the next connection come after the outage, and each outage is recorded."""
    source = MjpegSource(cam.url("/truncated"), loop=True, reconnect_s=5)
    frames = []
    for frame in source.frames():
        frames.append(frame)
        if len(frames) == 9:
            break
    assert [f.seq for f in frames] == list(range(9))
    assert [f.data for f in frames] == jpegs[:3] * 3
    assert len(source.outages) >= 2 and "ended inside part 4" in source.outages[0].reason
    first = source.outages[0]
    assert first.after_seq == 2 and first.to_ms == frames[3].timestamp_ms > first.from_ms >= frames[2].timestamp_ms


def test_a_camera_that_stays_away_ends_the_source_with_a_reason(jpegs):
    with MjpegCamera(jpegs) as camera:
        source = MjpegSource(camera.url("/cam?frames=5"), loop=True, reconnect_s=1.5)
        url = camera.url("/")
        frames = []
        for frame in source.frames():
            frames.append(frame)
            if len(frames) == 5:
                camera.server.shutdown()
                camera.server.server_close()
    assert len(frames) == 5 and url
    assert source.failure and "unreachable for 1.5 s" in source.failure
    assert source.outages[-1].to_ms is None


@pytest.mark.parametrize("path, message", [("/truncated", "ended inside part 4"),
                                           ("/wrongboundary", "no boundary '--frameledgerboundary'")])
def test_camera_run_against_a_hostile_camera_is_one_error_line(cam, path, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMELEDGER_")}
    out = subprocess.run([sys.executable, "-m", "offchain.cli", "camera", "run", "--ip", "10.0.0.9", "--source",
                          cam.url(path), "--node", "n=127.0.0.1:9", "--speed", "0", "--ack-timeout", "0.5",
                          "--no-reconnect"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert [e for e in errors if message in e], out.stderr
    assert all(e.startswith("error: node n ") for e in errors if message not in e), out.stderr  # node 9 is dead


def test_a_boundary_mid_line_in_the_preamble_is_not_taken(jpegs):
    parser = MultipartParser(b"b")
    data = b"say --b here\r\n--b\r\nContent-Type: image/jpeg\r\n\r\n" + jpegs[0] + b"\r\n--b--\r\n"
    parts = parser.feed(data)
    assert [p.body for p in parts] == [jpegs[0]]
