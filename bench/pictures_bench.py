"""Where the picture-similarity threshold for re-encoded clips comes from (docs/EVIDENCE.md).

For each sample clip (real recordings and synthetic clips in the codecs a camera may send), the
first N frames are re-encoded exactly as extraction re-encodes a span (`reencode_span_to_mp4`,
H.264 crf 20, at the clip's own size and, for a substitute, at another camera's size), then
compared with the decoded originals by `compare_pictures` (worst 32x32-tile luma PSNR). The same
comparison runs against three forgeries of the same count and times: colours inverted, a
blacked-out span, and a 64x64 patch pasted over the moving region (the picture's area with the
most change from the previous frame). The reference in the same run is the honest re-encode.

    python -m bench pictures [-- --frames 60]

Writes bench/results/pictures.json. The threshold (`PICTURE_THRESHOLD_DB`) must sit below every
honest minimum and above every forged maximum; the bench exits 1 if it does not.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


from offchain.camera.samples import sample_path, synthetic_stream  # noqa: E402
from offchain.camera.sources import CodecConfig, EncodedFrame, FileSource  # noqa: E402
from offchain.evidence.video import (  # noqa: E402
    PICTURE_THRESHOLD_DB,
    compare_pictures,
    decode_frames,
    encode_frames_to_mp4,
    reencode_span_to_mp4,
)
from offchain.tables import render_table  # noqa: E402

RESULTS = HERE / "results" / "pictures.json"


def _first(path: Path, n: int) -> tuple[CodecConfig, list[EncodedFrame]]:
    src = FileSource(path)
    out = []
    for f in src.frames():
        out.append(f)
        if len(out) >= n:
            break
    return src.codec, out


def _moving_patch_origin(prev: np.ndarray, cur: np.ndarray, size: int = 64) -> tuple[int, int]:
    diff = np.abs(cur.astype(np.int32) - prev.astype(np.int32)).sum(axis=2)
    h, w = diff.shape
    best, at = -1, (0, 0)
    for y in range(0, max(1, h - size), size // 2):
        for x in range(0, max(1, w - size), size // 2):
            s = int(diff[y:y + size, x:x + size].sum())
            if s > best:
                best, at = s, (y, x)
    return at


def _forged(codec: CodecConfig, frames: list[EncodedFrame], kind: str, out: Path) -> Path:
    decoded = list(decode_frames(codec, frames))
    pictures = [p.to_ndarray(format="bgr24") for _, p in decoded]
    times = [ts for ts, _ in decoded]
    forged: list[np.ndarray] = []
    for i, pic in enumerate(pictures):
        if kind == "inverted":
            forged.append(255 - pic)
        elif kind == "black":
            forged.append(np.zeros_like(pic) if len(pictures) // 3 <= i < 2 * len(pictures) // 3 else pic)
        else:  # 64x64 patch from elsewhere in the picture, pasted over the moving region
            y, x = _moving_patch_origin(pictures[i - 1] if i else pic, pic)
            p = pic.copy()
            p[y:y + 64, x:x + 64] = pic[-64:, :64] if (y, x) != (pic.shape[0] - 64, 0) else pic[:64, -64:]
            forged.append(p)
    encode_frames_to_mp4(iter(forged), out, fps=codec.fps, timestamps_ms=times, crf=20)
    return out


def _measure(name: str, codec: CodecConfig, frames: list[EncodedFrame], work: Path,
             target: tuple[int, int] | None = None) -> dict:
    honest = work / f"{name}-honest.mp4"
    tgt = CodecConfig(codec="h264", width=target[0], height=target[1], fps=codec.fps, time_base=codec.time_base) \
        if target else None
    reencode_span_to_mp4(codec, frames, honest, target=tgt)
    row = {"clip": name, "codec": codec.codec, "size": f"{codec.width}x{codec.height}",
           "target": f"{target[0]}x{target[1]}" if target else "same"}
    n = sum(1 for _ in decode_frames(codec, frames))
    in_decode_order = sorted(frames, key=lambda f: (f.dts_ms if f.dts_ms is not None else f.timestamp_ms, f.seq))
    cmp = compare_pictures(honest, codec, in_decode_order, n)
    row["honest_min_db"] = cmp.worst_db
    row["honest_ok"] = cmp.matches
    if target is None:
        for kind in ("inverted", "black", "patch64"):
            forged = _forged(codec, frames, kind, work / f"{name}-{kind}.mp4")
            c = compare_pictures(forged, codec, in_decode_order, n)
            row[f"{kind}_min_db"] = c.worst_db
            row[f"{kind}_caught"] = not c.matches
    return row


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench pictures")
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fl-pictures-") as tmp:
        work = Path(tmp)
        sources: list[tuple[str, Callable[[], Path]]] = [
            ("vtest (MPEG-4 part 2, real)", lambda: sample_path("vtest_avi")),
            ("vtest (H.264, real)", lambda: sample_path("vtest")),
            ("bikes (H.264 B-frames, real)", lambda: sample_path("bikes")),
            ("synthetic VP9", lambda: synthetic_stream(work / "vp9.webm", "libvpx-vp9", frames=args.frames)),
            ("synthetic MJPEG", lambda: synthetic_stream(work / "mjpeg.avi", "mjpeg", frames=args.frames, pix_fmt="yuvj420p")),
            ("synthetic HEVC", lambda: synthetic_stream(work / "hevc.mp4", "libx265", frames=args.frames)),
            ("synthetic H.264 High 4:4:4", lambda: synthetic_stream(work / "h444.mp4", "libx264", frames=args.frames, pix_fmt="yuv444p", gop=250)),
        ]
        for name, make in sources:
            codec, frames = _first(make(), args.frames)
            rows.append(_measure(name, codec, frames, work))
        codec, frames = _first(sample_path("bikes"), args.frames)
        rows.append(_measure("bikes as a substitute, scaled to 768x576", codec, frames, work, target=(768, 576)))
    honest = [r["honest_min_db"] for r in rows]
    forged = [r[k] for r in rows for k in ("inverted_min_db", "black_min_db", "patch64_min_db") if k in r]
    ok = min(honest) > PICTURE_THRESHOLD_DB > max(forged)
    print(render_table(["clip", "codec", "size", "honest worst tile dB", "inverted", "black span", "64x64 patch"],
                       [[r["clip"], r["codec"], r["size"] if r["target"] == "same" else f"{r['size']}→{r['target']}",
                         r["honest_min_db"], r.get("inverted_min_db", "-"), r.get("black_min_db", "-"),
                         r.get("patch64_min_db", "-")] for r in rows],
                       title=f"worst 32x32-tile luma PSNR over {args.frames} frames (threshold {PICTURE_THRESHOLD_DB} dB)"))
    print(f"honest minimum {min(honest):.2f} dB, forged maximum {max(forged):.2f} dB, threshold "
          f"{PICTURE_THRESHOLD_DB} dB: {'separates them' if ok else 'DOES NOT separate them'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"frames": args.frames, "threshold_db": PICTURE_THRESHOLD_DB, "rows": rows,
                                   "honest_min_db": min(honest), "forged_max_db": max(forged), "separates": ok},
                                  indent=2) + "\n")
    return 0 if ok else 1
