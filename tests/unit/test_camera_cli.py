"""`frameledger camera run` output: progress bars on a terminal only, JSON with --json, streaming a
real MJPEG camera on loopback to a node address where nothing listens (so the run also fails, as it must)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading

import pytest

from mjpeg_server import MjpegCamera


@pytest.fixture(scope="module")
def cam():
    with MjpegCamera() as camera:
        yield camera


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FRAMELEDGER_")}


def _argv(url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "offchain.cli", "camera", "run", "--ip", "10.0.0.9", "--source", url,
            "--node", "n=127.0.0.1:9", "--speed", "0", "--ack-timeout", "0.5", "--max-frames", "30", *extra]


def test_progress_bars_are_drawn_on_a_terminal(cam):
    """stderr is a pseudo-terminal: a bar per node, named and counting, ends up on it."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # a terminal has a width
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        out = subprocess.run(_argv(cam.url("/cam")), stdout=subprocess.PIPE, stderr=follower, text=True, env=_env(),
                             timeout=120)
    finally:
        os.close(follower)
        reader.join(timeout=5)
        os.close(leader)
    terminal = b"".join(chunks).decode(errors="replace")
    assert "n acked" in terminal and "sent 0 rejected 0 unacked" in terminal, terminal[-2000:]
    assert "frame" in terminal
    assert "n acked" not in out.stdout and "node" in out.stdout  # the table on stdout, bars never


def test_json_output_and_no_bars_when_stderr_is_not_a_terminal(cam):
    out = subprocess.run(_argv(cam.url("/cam"), "--json"), capture_output=True, text=True, env=_env(), timeout=120)
    doc = json.loads(out.stdout)
    assert doc["frames"] == 30 and doc["nodes"]["n"]["frames"] == 30 and doc["outages"] == []
    assert doc["nodes"]["n"]["acked"] == 0 and out.returncode == 1  # the node is down: said, and not 0
    assert "acked" not in out.stderr.replace("acknowledge", "")  # no progress bar in a pipe
    plain = subprocess.run(_argv(cam.url("/cam")), capture_output=True, text=True, env=_env(), timeout=120)
    assert "n acked" not in plain.stderr and plain.stdout.lstrip().startswith("camera 10.0.0.9: 30 frames")


def test_duration_bounds_the_run_and_the_range_of_what_was_streamed_is_written(tmp_path):
    """`--duration` stops after that much capture time; `--range-out` and the JSON give the capture
    times of the first and last video frame streamed (not of frames the agent had read ahead)."""
    from offchain.camera.samples import synthetic_av_clip

    clip = synthetic_av_clip(tmp_path / "cam.mp4", seconds=4, fps=10, audio="aac")
    out = subprocess.run([sys.executable, "-m", "offchain.cli", "camera", "run", "--ip", "10.0.0.9", "--source", str(clip),
                          "--node", "n=127.0.0.1:9", "--speed", "0", "--ack-timeout", "0.5", "--start-ms", "1000000",
                          "--duration", "1", "--range-out", str(tmp_path / "range.txt"), "--json"],
                         capture_output=True, text=True, env=_env(), timeout=120)
    doc = json.loads(out.stdout)
    assert out.returncode == 1  # nothing listens at the node: said, and not 0
    assert doc["firstMs"] == 1_000_000 and doc["lastMs"] == 1_000_000 + 100 * doc["lastSeq"]
    assert 8 <= doc["lastSeq"] <= 10  # 1 s at 10 fps (the first audio packet may start the clock a little early)
    assert doc["frames"] > doc["lastSeq"] + 1  # the audio packets came along
    assert (tmp_path / "range.txt").read_text() == f"{doc['firstMs']} {doc['lastMs']}\n"
    both = subprocess.run([sys.executable, "-m", "offchain.cli", "camera", "run", "--ip", "10.0.0.9", "--source",
                           str(clip), "--node", "n=127.0.0.1:9", "--duration", "1", "--loop-seconds", "1"],
                          capture_output=True, text=True, env=_env(), timeout=60)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
