"""Evidence routes (S1, S6) for a session's parties: extraction jobs, clips, reports, bundles, proofs.

    POST /v1/sessions/{id}/evidence                      start (or reuse) the job: cameras x range
    GET  /v1/evidence/jobs/{job}                         state, progress, verdicts, gaps, clip URLs
    GET  /v1/evidence/jobs/{job}/cameras/{cam}/clips/{n} the n-th clip (MP4; HTTP Range for seeking)
    GET  /v1/evidence/jobs/{job}/cameras/{cam}/report    the verification report (JSON)
    GET  /v1/evidence/jobs/{job}/cameras/{cam}/bundle    the self-contained evidence bundle (zip)
    GET  /v1/sessions/{id}/evidence/proof?camera=&at=|seq=   one frame's Merkle proof and anchored root

Extraction is `offchain.evidence.extract` itself, reading the chain through the AnchorSource
the chain records for the range (`extract.anchor_source`: per header or batch mode) and the
API's content stores; the trusted deployment is the API's own. Only the session's parties may
start, read or fetch anything (403 `not-a-party`), re-checked on every request. A `<video>`
element cannot send an Authorization header, so the job document's media URLs carry `access`, a
short-lived HMAC token scoped to that job and the signed-in caller (who must still be a member
and a party when it is used). Limits and problem codes: docs/API.md.
"""

# no `from __future__ import annotations`: FastAPI resolves the routes' local Annotated aliases at runtime

import base64
import hashlib
import hmac
import json
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Annotated, Any, Callable, Iterator, Sequence

from fastapi import Body, Depends, FastAPI, Header, Path, Query, Response
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from offchain.core.block import Manifest, ManifestFormatError, camera_ref
from offchain.evidence.extract import ClipFile, EvidenceError, ExtractResult, Fetcher, anchor_source, extract
from offchain.evidence.prove import ProofError, prove
from offchain.store.base import ContentStore

from .auth import AuthError
from .context import Context
from .evidence_jobs import CameraTask, EvidenceJobs, Job, JobsFull
from .models import U64_MAX, EvidenceJobBody
from .problems import Problem

SessionId = Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$", description="the session id (bytes32 hex)",
                                examples=["0x" + "5e" * 32])]
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="an evidence job id",
                            examples=["5f1c0e2a9b7d4c3e8f6a1b2c3d4e5f60"])]
CameraId = Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$", description="the camera id (bytes32 hex)",
                               examples=["0x" + "0a" * 32])]
MAX_RANGE_HEADER = 200
MAX_SEQ_SCAN_BLOCKS = 1000  # manifests read to find a frame by sequence number
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


@dataclass(frozen=True)
class EvidenceSettings:
    """Bounds of the evidence routes (docs/API.md, limits)."""

    work_dir: str | None = None      # where jobs write; None: a fresh temporary directory
    max_running: int = 2             # jobs extracting at once (each is CPU-bound: remux, hashing)
    max_queued: int = 4              # jobs waiting; beyond: 429 too-many-jobs
    max_kept: int = 32               # finished jobs kept with their files (oldest evicted)
    max_range_ms: int = 3_600_000    # one job's time range: an hour
    max_frames: int = 400_000        # frames anchored in the range over the job's cameras
    media_ttl_s: float = 900         # lifetime of a media `access` token


class MediaTokens:
    """`access` tokens for media URLs: HMAC-SHA256 over (job, address, expiry), per-process secret."""

    def __init__(self, clock: Callable[[], float], ttl_s: float):
        self._clock, self._ttl_s, self._secret = clock, ttl_s, secrets.token_bytes(32)

    def _mac(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._secret, payload, hashlib.sha256).digest()).rstrip(b"=").decode()

    def issue(self, job_id: str, address: str) -> tuple[str, float]:
        expires = int(self._clock() + self._ttl_s)
        payload = f"{job_id}.{address}.{expires}"
        return f"{address}.{expires}.{self._mac(payload.encode())}", expires

    def verify(self, token: str, job_id: str) -> str:
        parts = token.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            raise AuthError("token-invalid", "the media access token is malformed")
        address, expires, mac = parts
        if not hmac.compare_digest(self._mac(f"{job_id}.{address}.{expires}".encode()), mac):
            raise AuthError("token-invalid", "the media access token was not issued for this job by this server")
        if int(expires) <= self._clock():
            raise AuthError("token-expired", "the media access token has expired; read the job again")
        return address


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one `bytes=` range of a Range header, inclusive, clamped to the file; None: no header.
    Anything else (several ranges, other units, beyond the end) is 416."""
    if header is None:
        return None
    m = _RANGE.fullmatch(header.strip()) if len(header) <= MAX_RANGE_HEADER else None
    unsatisfiable = Problem(416, "range-not-satisfiable", f"serves one 'bytes=first-last' range within {size} bytes",
                            headers={"Content-Range": f"bytes */{size}"})
    if m is None or (m[1] == "" and m[2] == ""):
        raise unsatisfiable
    if m[1] == "":  # a suffix: the last n bytes
        n = int(m[2])
        if n == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - n), size - 1
    start = int(m[1])
    end = min(int(m[2]), size - 1) if m[2] else size - 1
    if start >= size or start > end:
        raise unsatisfiable
    return start, end


def file_response(path: FilePath, media_type: str, range_header: str | None, filename: str | None = None) -> Response:
    size = path.stat().st_size
    rng = byte_range(range_header, size)
    if rng is None:
        return FileResponse(path, media_type=media_type, headers=_FILE_HEADERS, filename=filename)
    return _region(path, 0, size, media_type, rng)


def clip_response(clip: ClipFile, range_header: str | None) -> Response:
    """A clip: its own file, or its stored member's bytes inside the bundle (one-pass clips live
    only there), served as a file of their own, with single byte ranges."""
    if clip.member is None:
        return file_response(clip.path, "video/mp4", range_header)
    return _region(clip.path, clip.offset, clip.size, "video/mp4", byte_range(range_header, clip.size))


_FILE_HEADERS = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=300"}


def _region(path: FilePath, offset: int, size: int, media_type: str, rng: tuple[int, int] | None) -> Response:
    """``size`` bytes of ``path`` from ``offset`` as a whole file (200, ``rng`` None) or the
    inclusive range ``rng`` of it (206)."""
    start, end = rng if rng is not None else (0, size - 1)

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as f:
            f.seek(offset + start)
            left = end - start + 1
            while left > 0 and (data := f.read(min(1 << 16, left))):
                left -= len(data)
                yield data

    headers = {**_FILE_HEADERS, "Content-Length": str(end - start + 1)}
    if rng is None:
        return StreamingResponse(chunks(), status_code=200, media_type=media_type, headers=headers)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(chunks(), status_code=206, media_type=media_type, headers=headers)


def _b(hex_str: str) -> bytes:
    return bytes.fromhex(hex_str[2:])


def _camera(ref: str) -> bytes:
    try:
        return camera_ref(ref)
    except ValueError as exc:
        raise Problem(400, "invalid-camera", "camera id is not hex") from exc


def anchor_reader(ctx: Context, stores: Sequence[ContentStore], cam: bytes, from_ms: int, to_ms: int) -> Any:
    """The AnchorSource the chain records for this camera and range (per header or batch mode):
    the one way the API reads anchored blocks (the blocks listing and the evidence routes)."""
    dep = ctx.deployment
    return anchor_source(ctx.ledger.contract.w3, dep.video_ledger, dep.batch_ledger, cam, from_ms, to_ms, stores)


def camera_blocks(ctx: Context, stores: Sequence[ContentStore], cam: bytes, from_ms: int, to_ms: int,
                  limit: int) -> tuple[list[dict[str, Any]], int]:
    """`GET /v1/cameras/{camera}/blocks`: the first ``limit`` blocks overlapping the range, oldest
    first, and how many matched."""
    reader = anchor_reader(ctx, stores, cam, from_ms, to_ms)
    try:
        heights = reader.heights_in_range(cam, from_ms, to_ms)
    except ValueError as exc:  # batch mode: more batches overlap the range than a reader takes
        raise Problem(413, "range-too-large", str(exc)) from None
    records = reader.blocks(cam, heights[:limit])
    mode = getattr(reader, "anchoring", "header")
    out = [{**cb.header.to_json(), "hash": "0x" + cb.block_hash.hex(), "attestations": cb.attestations,
            "disputes": cb.disputes, "final": cb.finalized, "anchoring": mode}
           for h in heights[:limit] if (cb := records.get(h)) is not None]
    return out, len(heights)


class _Evidence:
    """The route bodies, bound to one Context, the API's stores and the job table."""

    def __init__(self, ctx: Context, stores: Sequence[ContentStore], settings: EvidenceSettings):
        self.ctx, self.stores, self.settings = ctx, list(stores), settings
        work = FilePath(settings.work_dir) if settings.work_dir else FilePath(tempfile.mkdtemp(prefix="frameledger-api-"))
        self.jobs = EvidenceJobs(self._run, work, clock=ctx.clock, max_running=settings.max_running,
                                 max_queued=settings.max_queued, max_kept=settings.max_kept)
        self.media = MediaTokens(ctx.clock, settings.media_ttl_s)

    # ------------------------------------------------------------------ chain reads
    def _reader(self, cam: bytes, from_ms: int, to_ms: int) -> Any:
        return anchor_reader(self.ctx, self.stores, cam, from_ms, to_ms)

    def _run(self, task: CameraTask, out: FilePath, progress: Callable[[str], None]) -> ExtractResult:
        reader = self._reader(task.camera, task.from_ms, task.to_ms)
        return extract(task.camera, task.from_ms, task.to_ms, reader, self.stores, out, produced_by="frameledger api",
                       progress=progress)

    def require_party(self, sid: bytes, caller: str) -> Any:
        """The session's members, once the caller is known to be a party (re-read every request)."""
        members = self.ctx.session_client().members(sid)  # UnknownSession → 404
        if caller not in members.parties:
            raise Problem(403, "not-a-party", "only the session's parties may read its evidence")
        return members

    def party_session(self, sid: bytes, caller: str) -> tuple[Any, Any]:
        members = self.require_party(sid, caller)
        return self.ctx.session_client().session(sid), members

    def _frames_in_range(self, cam: bytes, from_ms: int, to_ms: int) -> int:
        _heights, blocks = self._reader(cam, from_ms, to_ms).blocks_in_range(cam, from_ms, to_ms)
        return sum(cb.header.frame_count for cb in blocks.values() if cb is not None)

    # ------------------------------------------------------------------ jobs
    def start(self, sid: bytes, body: EvidenceJobBody | None, caller: str) -> tuple[Job, bool]:
        info, members = self.party_session(sid, caller)
        if not self.stores:
            raise Problem(503, "evidence-unavailable", "this API has no content store to read frames from")
        body = body or EvidenceJobBody()
        cams = [_camera(c) for c in body.cameras] if body.cameras else list(members.cameras)
        if any(c not in members.cameras for c in cams) or len(set(cams)) != len(cams):
            raise Problem(422, "camera-not-in-session", "every camera must be one of the session's, once")
        from_ms = info.start_ms if body.fromMs is None else body.fromMs
        to_ms = info.end_ms if body.toMs is None else body.toMs
        if not info.start_ms <= from_ms < to_ms <= info.end_ms:
            raise Problem(422, "outside-session", f"the range must lie within the session's [{info.start_ms}, "
                                                  f"{info.end_ms}) and not be empty")
        if to_ms - from_ms > self.settings.max_range_ms:
            raise Problem(413, "range-too-large", f"a job covers at most {self.settings.max_range_ms} ms; "
                                                  "split the range", limitMs=self.settings.max_range_ms)
        frames = sum(self._frames_in_range(c, from_ms, to_ms) for c in cams)
        if frames > self.settings.max_frames:
            raise Problem(413, "too-many-frames", f"{frames} anchored frames in the range; a job takes at most "
                                                  f"{self.settings.max_frames}", limitFrames=self.settings.max_frames)
        ips = {c: self.ctx.consortium.camera(c).ip for c in cams}
        tasks = [CameraTask(camera=c, ip=ips[c], from_ms=from_ms, to_ms=to_ms) for c in cams]
        try:
            return self.jobs.submit((sid, tuple(cams), from_ms, to_ms), sid, tasks)
        except JobsFull as exc:
            raise Problem(429, "too-many-jobs", str(exc), headers={"Retry-After": "5"}) from None

    def job_for(self, job_id: str, caller: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise Problem(404, "job-not-found", "no such evidence job (finished jobs are kept for a while only)")
        self.require_party(job.session_id, caller)
        return job

    def finished_task(self, job: Job, camera: str) -> tuple[CameraTask, ExtractResult]:
        task = next((t for t in job.tasks if t.camera == _b(camera)), None)
        if task is None:
            raise Problem(404, "camera-not-in-job", "the job does not extract this camera")
        if job.error is not None:
            raise Problem(409, "job-failed", "the extraction failed; start a new job", error=job.error)
        if task.result is None:
            raise Problem(409, "job-not-ready", f"the job is {job.state.value} ({job.phase}); poll it",
                          headers={"Retry-After": "1"})
        return task, task.result

    def job_json(self, job: Job, caller: str) -> dict[str, Any]:
        access, expires = self.media.issue(job.job_id, caller)
        base = f"/v1/evidence/jobs/{job.job_id}"
        return {"jobId": job.job_id, "sessionId": "0x" + job.session_id.hex(), "state": job.state.value,
                "progress": round(job.progress, 4), "phase": job.phase, "cameraIndex": job.camera_index,
                "createdAt": job.created_at, "finishedAt": job.finished_at, "error": job.error,
                "mediaAccess": {"token": access, "expiresAt": expires},
                "cameras": [self._task_json(t, f"{base}/cameras/0x{t.camera.hex()}", access) for t in job.tasks]}

    @staticmethod
    def _task_json(task: CameraTask, base: str, access: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cameraId": "0x" + task.camera.hex(), "ip": task.ip, "fromMs": task.from_ms,
                               "toMs": task.to_ms, "done": task.result is not None}
        if task.result is None:
            return out
        report = task.result.report
        clips = [{**c.to_json(), "index": i, "url": f"{base}/clips/{i}?access={access}"}
                 for i, c in enumerate(report.clips)]
        return {**out, "verdict": report.verdict, "reasons": report.reasons, "gaps": [g.to_json() for g in report.gaps],
                "clips": sorted(clips, key=lambda c: (c["start_ms"] is None, c["start_ms"] or 0, c["index"])),
                "reportUrl": f"{base}/report?access={access}",
                "bundleUrl": f"{base}/bundle?access={access}" if task.result.bundle_path else None}

    # ------------------------------------------------------------------ proofs
    def proof(self, sid: bytes, caller: str, camera: str, at: int | None, seq: int | None) -> dict[str, Any]:
        info, members = self.party_session(sid, caller)
        cam = _camera(camera)
        if cam not in members.cameras:
            raise Problem(422, "camera-not-in-session", "the camera is not one of the session's")
        if (at is None) == (seq is None):
            raise Problem(422, "invalid-request", "give exactly one of `at` (epoch ms) and `seq`")
        if at is not None and not info.start_ms <= at < info.end_ms:
            raise Problem(422, "outside-session", f"the instant must lie within [{info.start_ms}, {info.end_ms})")
        instant = at if at is not None else self._timestamp_of(cam, seq, info.start_ms, info.end_ms)  # type: ignore[arg-type]
        try:
            fp = prove(cam, instant, self._reader(cam, instant, instant + 1), self.stores)
        except ProofError as exc:
            raise Problem(404, "frame-not-found", str(exc)) from None
        except EvidenceError as exc:
            raise Problem(422, "invalid-evidence-request", str(exc)) from None
        if seq is not None and fp.frame.seq != seq:
            raise Problem(404, "frame-not-found", f"frame {seq} is not the frame shown at its capture time")
        return {"sessionId": "0x" + sid.hex(), "ok": fp.ok, **fp.to_json()}

    def _timestamp_of(self, cam: bytes, seq: int, from_ms: int, to_ms: int) -> int:
        """Capture time of the session frame `seq`, from the anchored manifests of the range."""
        heights, blocks = self._reader(cam, from_ms, to_ms).blocks_in_range(cam, from_ms, to_ms)
        if len(heights) > MAX_SEQ_SCAN_BLOCKS:
            raise Problem(413, "range-too-large", f"finding a frame by seq reads at most {MAX_SEQ_SCAN_BLOCKS} "
                                                  "blocks; ask by `at` instead")
        fetcher = Fetcher(self.stores)
        for h in heights:
            cb = blocks.get(h)
            got = fetcher.get(cb.header.manifest_digest) if cb is not None else None
            if got is None or got.data is None:
                continue
            try:
                frame = next((f for f in Manifest.from_bytes(got.data).frames if f.seq == seq), None)
            except ManifestFormatError:
                continue
            if frame is not None and from_ms <= frame.timestamp_ms < to_ms:
                return frame.timestamp_ms
        raise Problem(404, "frame-not-found", f"no anchored frame {seq} of the camera in the session's range")


_PROBLEM = {"application/problem+json": {"schema": {"type": "object"}}}
_CAM = "0x" + "0a" * 32
_JOB = "5f1c0e2a9b7d4c3e8f6a1b2c3d4e5f60"
_MEDIA = f"/v1/evidence/jobs/{_JOB}/cameras/{_CAM}"
_JOB_EXAMPLE = {
    "jobId": _JOB, "sessionId": "0x" + "5e" * 32, "state": "done", "progress": 1.0, "phase": "done", "cameraIndex": 0,
    "createdAt": 1764576000.1, "finishedAt": 1764576004.7, "error": None,
    "mediaAccess": {"token": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8.1764576900.q3Zx", "expiresAt": 1764576900},
    "cameras": [{"cameraId": _CAM, "ip": "10.9.0.1", "fromMs": 1764576000000, "toMs": 1764576060000, "done": True,
                 "verdict": "verified_with_declared_gaps", "reasons": ["gap.declared x1: a gap declared in the manifest"],
                 "gaps": [{"kind": "declared", "from_ms": 1764576025000, "to_ms": 1764576026900, "height": 2,
                           "from_seq": 250, "to_seq": 269, "keyframe_lost": True, "substitute_camera": None,
                           "substitute_frames": 0, "not_playable_frames": 10}],
                 "clips": [{"index": 0, "path": "clip-000.mp4", "kind": "original", "camera": _CAM, "frames": 580,
                            "start_ms": 1764576000000, "end_ms": 1764576059900, "reencoded": False, "why": "remux",
                            "decoded_frames": None, "url": f"{_MEDIA}/clips/0?access=…"}],
                 "reportUrl": f"{_MEDIA}/report?access=…", "bundleUrl": f"{_MEDIA}/bundle?access=…"}]}
_JOB_RESPONSE = {"content": {"application/json": {"example": _JOB_EXAMPLE}}}


def _media_caller(ev: _Evidence, caller: Callable[..., str]) -> Callable[..., str]:
    bearer = HTTPBearer(auto_error=False, description="a token from POST /v1/auth/siwe")

    def media_caller(job_id: JobId, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                     access: Annotated[str | None, Query(max_length=512, description="the job document's media token "
                                                         "(for <video> elements, which send no header)")] = None) -> str:
        if credentials is not None or not access:
            return caller(credentials)
        address = ev.media.verify(access, job_id)
        if not ev.ctx.consortium.is_member(address):
            raise AuthError("not-a-member", f"{address} is no longer a consortium member", 403)
        return address

    return media_caller


def install(app: FastAPI, ctx: Context, caller: Callable[..., str], stores: Sequence[ContentStore],
            settings: EvidenceSettings) -> EvidenceJobs:  # noqa: C901 - route table
    ev = _Evidence(ctx, stores, settings)
    Caller = Annotated[str, Depends(caller)]
    MediaCaller = Annotated[str, Depends(_media_caller(ev, caller))]
    RangeHeader = Annotated[str | None, Header(alias="Range", max_length=MAX_RANGE_HEADER)]

    @app.post("/v1/sessions/{session_id}/evidence", tags=["evidence"], status_code=202,
              summary="Start (or reuse) the extraction job for the session's cameras over its range",
              responses={202: {"description": "a new job", **_JOB_RESPONSE},
                         200: {"description": "an identical job exists: it is reused", **_JOB_RESPONSE},
                         413: {"content": _PROBLEM, "description": "range-too-large, too-many-frames"},
                         429: {"content": _PROBLEM, "description": "too-many-jobs"}})
    def start(session_id: SessionId, who: Caller, response: Response,
              body: Annotated[EvidenceJobBody | None, Body()] = None) -> dict[str, Any]:
        job, created = ev.start(_b(session_id), body, who)
        response.status_code = 202 if created else 200
        response.headers["Location"] = f"/v1/evidence/jobs/{job.job_id}"
        return ev.job_json(job, who)

    @app.get("/v1/evidence/jobs/{job_id}", tags=["evidence"],
             summary="A job's state and progress; when done, each camera's verdict, gaps and clip URLs",
             responses={200: _JOB_RESPONSE})
    def job(job_id: JobId, who: Caller) -> dict[str, Any]:
        return ev.job_json(ev.job_for(job_id, who), who)

    @app.get("/v1/evidence/jobs/{job_id}/cameras/{camera}/clips/{index}", tags=["evidence"],
             summary="A restored clip (MP4, H.264); single byte ranges (206) for seeking",
             response_class=Response, responses={200: {"content": {"video/mp4": {}}}, 206: {"content": {"video/mp4": {}}},
                                                 416: {"content": _PROBLEM, "description": "range-not-satisfiable"}})
    def clip(job_id: JobId, camera: CameraId, index: Annotated[int, Path(ge=0, le=10_000)], who: MediaCaller,
             range_header: RangeHeader = None) -> Response:
        _task, result = ev.finished_task(ev.job_for(job_id, who), camera)
        if index >= len(result.clips):
            raise Problem(404, "clip-not-found", f"the camera has {len(result.clips)} clips")
        return clip_response(result.clips[index], range_header)

    @app.get("/v1/evidence/jobs/{job_id}/cameras/{camera}/report", tags=["evidence"],
             summary="The verification report of one camera's extraction (frameledger.evidence-report)")
    def report(job_id: JobId, camera: CameraId, who: MediaCaller) -> dict[str, Any]:
        _task, result = ev.finished_task(ev.job_for(job_id, who), camera)
        return json.loads(result.report_json.read_text())

    @app.get("/v1/evidence/jobs/{job_id}/cameras/{camera}/bundle", tags=["evidence"],
             summary="The self-contained evidence bundle (zip; verify it with `frameledger verify`)",
             response_class=Response, responses={200: {"content": {"application/zip": {}}}})
    def bundle(job_id: JobId, camera: CameraId, who: MediaCaller, range_header: RangeHeader = None) -> Response:
        _task, result = ev.finished_task(ev.job_for(job_id, who), camera)
        if result.bundle_path is None:
            raise Problem(404, "bundle-not-found", "this extraction wrote no bundle")
        return file_response(result.bundle_path, "application/zip", range_header, filename=result.bundle_path.name)

    @app.get("/v1/sessions/{session_id}/evidence/proof", tags=["evidence"],
             summary="One frame's Merkle proof against its block's anchored root, checked on chain")
    def proof(session_id: SessionId, who: Caller,
              camera: Annotated[str, Query(min_length=1, max_length=128, description="camera id or IP")],
              at: Annotated[int | None, Query(ge=0, le=U64_MAX, description="instant, epoch ms")] = None,
              seq: Annotated[int | None, Query(ge=0, le=U64_MAX, description="frame sequence number")] = None,
              ) -> dict[str, Any]:
        return ev.proof(_b(session_id), who, camera, at, seq)

    return ev.jobs
