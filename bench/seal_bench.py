"""What sealing session frames costs at rest (S5): a node's group-commit write (`put_frames`) of
frames of a session camera, sealed, against the same frames of a camera in no session (plain),
through the same SealedStore over a LocalStore; and reading them back (`get`: open + re-hash
against plain `get`); and the envelope alone (AES-256-GCM + the nonce's HMAC) against one SHA-256
of the same frame, the hash every frame costs anyway. No chain: the data key is made here.

    python -m bench seal [-- --frames 2000 --size 20000 --batch 200]   # writes bench/results/seal.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from offchain.core import envelope as env
from offchain.core.cid import cid_for_bytes
from offchain.store.local import LocalStore
from offchain.store.sealed import Keyring, SealedStore, SealIndex

RESULTS = Path(__file__).resolve().parent / "results" / "seal.json"
SESSION_CAM, OTHER_CAM = b"\x01" * 32, b"\x02" * 32


def _store(root: Path, key: env.DataKey) -> SealedStore:
    node_key = os.urandom(32)
    keyring = Keyring(node_key)
    keyring.hold(key)
    return SealedStore(LocalStore(root, fsync="none"), SealIndex(root / "sealed.sqlite"), keyring,
                       lambda cam, ts: key if cam == SESSION_CAM else None)


def _write(store: SealedStore, cam: bytes, frames: list[bytes], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(frames), batch):
        store.put_frames([(cam, i + j, f, hashlib.sha256(f).digest()) for j, f in enumerate(frames[i:i + batch])])
    return time.perf_counter() - start


def _read(store: SealedStore, frames: list[bytes]) -> float:
    cids = [cid_for_bytes(f) for f in frames]
    start = time.perf_counter()
    for c in cids:
        store.get(c)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=200)
    opts = parser.parse_args(argv)
    key = env.DataKey(key_id=os.urandom(32), secret=os.urandom(32))
    plain_frames = [os.urandom(opts.size) for _ in range(opts.frames)]
    sealed_frames = [os.urandom(opts.size) for _ in range(opts.frames)]
    with tempfile.TemporaryDirectory(prefix="seal-bench-") as tmp:
        store = _store(Path(tmp), key)
        # interleaved rounds, so load from elsewhere on the machine hits both alike
        w_plain = w_sealed = r_plain = r_sealed = 0.0
        half = opts.frames // 2
        for part in (slice(0, half), slice(half, opts.frames)):
            w_plain += _write(store, OTHER_CAM, plain_frames[part], opts.batch)
            w_sealed += _write(store, SESSION_CAM, sealed_frames[part], opts.batch)
            r_plain += _read(store, plain_frames[part])
            r_sealed += _read(store, sealed_frames[part])
        store.close()
    t = time.perf_counter()
    for f in sealed_frames:
        env.seal_frame(key, f, b"\x00" * 32)
    seal_s = time.perf_counter() - t
    t = time.perf_counter()
    for f in sealed_frames:
        hashlib.sha256(f).digest()
    sha_s = time.perf_counter() - t
    n, mb = opts.frames, opts.frames * opts.size / 1e6
    result = {
        "frames": n, "frame_bytes": opts.size, "batch": opts.batch, "store": "LocalStore fsync=none",
        "write_plain_fps": round(n / w_plain), "write_sealed_fps": round(n / w_sealed),
        "write_sealed_mb_s": round(mb / w_sealed, 1), "write_ratio_sealed_to_plain": round(w_sealed / w_plain, 2),
        "read_plain_fps": round(n / r_plain), "read_sealed_fps": round(n / r_sealed),
        "read_ratio_sealed_to_plain": round(r_sealed / r_plain, 2),
        "seal_us_per_frame": round(seal_s / n * 1e6, 1), "sha256_us_per_frame": round(sha_s / n * 1e6, 1),
        "seal_ratio_to_sha256": round(seal_s / sha_s, 2),
    }
    print(f"sealing at rest ({n} x {opts.size} B frames, batches of {opts.batch}, LocalStore fsync=none)")
    for k, v in result.items():
        print(f"  {k:<30} {v}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0
