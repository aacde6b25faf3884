"""What a camera's audio track costs (issue 10): packets and bytes per second it adds, and the
time to demux, sign and remux a clip with its audio against the same clip without it.

    python -m bench audio [-- --seconds 30 --codec aac]

The clip is synthesised (640x360 H.264 at 25 fps, GOP 2 s, plus a 440 Hz tone: AAC 48 kHz mono,
Opus or G.711) so the run needs nothing fetched. The reference, in the same run, is the same
work on the video track alone (FileSource(audio=False)): every ratio is with-audio / video-only.
Writes bench/results/audio.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from offchain.camera.samples import synthetic_av_clip  # noqa: E402
from offchain.camera.sources import FileSource  # noqa: E402
from offchain.core.packet import encode_packet  # noqa: E402
from offchain.evidence.video import audio_copyable, remux_to_mp4  # noqa: E402
from offchain.tables import render_table  # noqa: E402

RESULTS = HERE / "results" / "audio.json"


def _best(fn: Callable[[], Any], rounds: int) -> float:
    """The fastest of `rounds` runs, in seconds (the least disturbed by a shared machine)."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench audio", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--codec", default="aac", choices=["aac", "opus", "pcm_mulaw"])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    ext = {"aac": "mp4", "opus": "mkv", "pcm_mulaw": "mov"}[args.codec]
    with tempfile.TemporaryDirectory() as tmp:
        clip = synthetic_av_clip(Path(tmp) / f"bench.{ext}", seconds=args.seconds, width=640, height=360,
                                 audio=args.codec)
        with_audio, video_only = FileSource(clip), FileSource(clip, audio=False)
        frames = list(with_audio.frames())
        video = [f for f in frames if f.track == 0]
        audio = [f for f in frames if f.track == 1]
        key = Ed25519PrivateKey.generate()

        def sign(fs: list) -> None:
            for f in fs:
                encode_packet(key, "10.0.0.1", f.seq, f.timestamp_ms, f.keyframe, f.data, f.dts_ms)

        codec = with_audio.codec
        out = Path(tmp) / "out.mp4"
        timings = {
            "demux": (_best(lambda: sum(1 for _ in with_audio.frames()), args.rounds),
                      _best(lambda: sum(1 for _ in video_only.frames()), args.rounds)),
            "sign": (_best(lambda: sign(frames), args.rounds), _best(lambda: sign(video), args.rounds)),
        }
        if audio_copyable(codec.audio):
            timings["remux"] = (_best(lambda: remux_to_mp4(codec, video, out, audio=(codec.audio, audio)), args.rounds),
                                _best(lambda: remux_to_mp4(codec, video, out), args.rounds))
    seconds = args.seconds
    result = {
        "clip": {"seconds": seconds, "video": "h264 640x360 25 fps", "audio": codec.audio.to_dict() if codec.audio else None},
        "packets_per_s": {"video": round(len(video) / seconds, 2), "audio": round(len(audio) / seconds, 2)},
        "bytes_per_s": {"video": round(sum(f.size for f in video) / seconds),
                        "audio": round(sum(f.size for f in audio) / seconds)},
        "packets_ratio": round(len(frames) / len(video), 3),
        "timings_s": {k: {"with_audio": round(a, 4), "video_only": round(v, 4), "ratio": round(a / v, 3)}
                      for k, (a, v) in timings.items()},
        "rounds": args.rounds,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(render_table(["", "packets/s", "bytes/s"],
                       [[t, result["packets_per_s"][t], result["bytes_per_s"][t]] for t in ("video", "audio")],
                       title=f"{args.codec} camera, {seconds:g} s"))
    print(render_table(["step", "with audio s", "video only s", "ratio (reference: video only)"],
                       [[k, v["with_audio"], v["video_only"], v["ratio"]] for k, v in result["timings_s"].items()]))
    print(f"packets per camera x{result['packets_ratio']} with audio; wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
