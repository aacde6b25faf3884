"""What parsing an MJPEG camera's multipart stream costs the agent, against what it must do anyway.

    python -m bench mjpeg                 # writes bench/results/mjpeg.json
    python -m bench mjpeg -- --parts 3000

A stream of real JPEGs (320x240 and 1280x720, FFmpeg's mjpeg encoder) framed as a camera frames them
is fed to `MultipartParser` in 64 KiB chunks (what a socket read gives), with and without
Content-Length (without it the parser scans every byte for the boundary). Reference, in the same
run over the same bytes: SHA-256 of every part, which the agent computes for every frame it signs.
The ratio is parse time / SHA-256 time: below 1, parsing costs less than hashing the frames.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from offchain.camera.mjpeg import MultipartParser  # noqa: E402

CHUNK = 64 * 1024
BOUNDARY = b"benchboundary"


def _jpegs(count: int, width: int, height: int) -> list[bytes]:
    import av

    from offchain.camera.samples import _synthetic_picture

    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = width, height, "yuvj420p", Fraction(1, 25)
    out: list[bytes] = []
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(_synthetic_picture(i, 25.0, width, height), format="bgr24")
        frame = frame.reformat(format="yuvj420p")
        frame.pts = i
        out.extend(bytes(p) for p in ctx.encode(frame))
    return out


def _stream(jpegs: list[bytes], parts: int, length: bool) -> bytes:
    chunks = []
    for i in range(parts):
        body = jpegs[i % len(jpegs)]
        head = b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
        if length:
            head += b"Content-Length: %d\r\n" % len(body)
        chunks.append(head + b"\r\n" + body + b"\r\n")
    return b"".join(chunks)


def _best(fn, rounds: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(width: int, height: int, parts: int, rounds: int) -> list[dict[str, object]]:
    jpegs = _jpegs(25, width, height)
    rows = []
    for length in (True, False):
        data = _stream(jpegs, parts, length)
        bodies = [jpegs[i % len(jpegs)] for i in range(parts)]

        def parse(data: bytes = data) -> None:
            parser = MultipartParser(BOUNDARY)
            n = 0
            for i in range(0, len(data), CHUNK):
                n += len(parser.feed(data[i:i + CHUNK]))
            n += len(parser.finish())
            assert n == parts, n

        def digest(bodies: list[bytes] = bodies) -> None:
            for body in bodies:
                hashlib.sha256(body).digest()

        t_parse, t_ref = _best(parse, rounds), _best(digest, rounds)
        rows.append({
            "picture": f"{width}x{height}", "content_length": length, "parts": parts,
            "mean_part_bytes": round(len(data) / parts), "parse_s": round(t_parse, 4), "sha256_s": round(t_ref, 4),
            "parse_us_per_part": round(t_parse / parts * 1e6, 1), "parse_mb_per_s": round(len(data) / t_parse / 1e6, 1),
            "sha256_us_per_part": round(t_ref / parts * 1e6, 1), "ratio_parse_to_sha256": round(t_parse / t_ref, 3),
        })
    return rows


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench mjpeg", description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "results" / "mjpeg.json"))
    args = p.parse_args(argv)
    rows = measure(320, 240, args.parts, args.rounds) + measure(1280, 720, max(1, args.parts // 4), args.rounds)
    for r in rows:
        print(f"{r['picture']:>9} {'Content-Length' if r['content_length'] else 'boundary scan':>14}: "
              f"{r['parse_us_per_part']:>7} us/part ({r['parse_mb_per_s']} MB/s), SHA-256 {r['sha256_us_per_part']} "
              f"us/part, ratio {r['ratio_parse_to_sha256']}")
    Path(args.out).write_text(json.dumps({"bench": "mjpeg", "chunk_bytes": CHUNK, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
