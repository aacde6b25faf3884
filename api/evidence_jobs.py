"""Bounded evidence-extraction jobs: a queue of `offchain.evidence.extract` runs in worker threads.

A job extracts every camera it names over one time range, one camera after another, into its own
directory; `progress` (0..1) and `phase` move as `extract` reports its phases. Admission is
bounded: at most `max_running` jobs run at once and `max_queued` wait; beyond that `submit`
refuses (the routes answer 429). Finished jobs are kept (newest `max_kept`, their files with
them) so clients can fetch clips, reports and bundles; older finished jobs are evicted with their
files. A job that fails records a problem (status, code, detail) instead of raising, so a route
reading it never turns a chain outage into a 500.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Hashable

import requests
from web3.exceptions import Web3Exception

from offchain.evidence.extract import PHASES, EvidenceError, ExtractResult

log = logging.getLogger(__name__)

# The phases a job's progress counts (extraction through the API never probes: a browser decodes).
JOB_PHASES = tuple(p for p in PHASES if p != "probe")


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class JobsFull(Exception):
    """Too many jobs running and waiting: retry later."""


@dataclass
class CameraTask:
    camera: bytes
    ip: str | None
    from_ms: int
    to_ms: int
    result: ExtractResult | None = None


@dataclass
class Job:
    job_id: str
    session_id: bytes
    tasks: list[CameraTask]
    created_at: float
    state: JobState = JobState.QUEUED
    phase: str = "queued"
    camera_index: int = 0  # the camera being extracted; the ones before it are done
    done_phases: int = 0  # of the current camera's JOB_PHASES
    error: dict[str, Any] | None = None  # a problem: {"status", "code", "detail"}
    finished_at: float | None = None
    out_dir: Path = field(default=Path("."))

    @property
    def progress(self) -> float:
        if self.state is JobState.DONE:
            return 1.0
        if not self.tasks:
            return 0.0
        return (self.camera_index + min(1.0, self.done_phases / len(JOB_PHASES))) / len(self.tasks)

    @property
    def active(self) -> bool:
        return self.state in (JobState.QUEUED, JobState.RUNNING)


# Runs one camera task: (task, its output directory, a phase callback) -> the extraction result.
Runner = Callable[[CameraTask, Path, Callable[[str], None]], ExtractResult]


def failure_problem(exc: BaseException) -> dict[str, Any]:
    """What a failed job says: the chain and stores are 502/503 like the synchronous routes."""
    if isinstance(exc, requests.exceptions.RequestException):
        return {"status": 503, "code": "chain-unavailable", "detail": "the chain's JSON-RPC endpoint did not answer"}
    if isinstance(exc, Web3Exception):
        return {"status": 502, "code": "chain-error", "detail": "the chain answered with an error"}
    if isinstance(exc, EvidenceError):
        return {"status": 422, "code": "invalid-evidence-request", "detail": str(exc)}
    return {"status": 502, "code": "extraction-failed", "detail": f"{type(exc).__name__}: {exc}"}


class EvidenceJobs:
    """The job table and its worker pool (dependencies by constructor: the runner does the I/O)."""

    def __init__(self, runner: Runner, work_dir: Path, *, clock: Callable[[], float], max_running: int = 2,
                 max_queued: int = 4, max_kept: int = 32):
        self._runner = runner
        self._work_dir = Path(work_dir)
        self._clock = clock
        self._max_active = max_running + max_queued
        self._max_kept = max(max_kept, self._max_active)
        self._pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix="evidence-job")
        self._jobs: dict[str, Job] = {}
        self._by_key: dict[Hashable, str] = {}
        self._lock = threading.Lock()

    def submit(self, key: Hashable, session_id: bytes, tasks: list[CameraTask]) -> tuple[Job, bool]:
        """The job for ``key`` if one is kept and has not failed (reused: False), else a new one
        (True). Raises JobsFull when the queue is at its limit."""
        with self._lock:
            known = self._jobs.get(self._by_key.get(key, ""))
            if known is not None and known.state is not JobState.FAILED:
                return known, False
            if sum(j.active for j in self._jobs.values()) >= self._max_active:
                raise JobsFull(f"{self._max_active} evidence jobs are running or queued; retry shortly")
            job = Job(job_id=secrets.token_hex(16), session_id=session_id, tasks=tasks, created_at=self._clock())
            job.out_dir = self._work_dir / job.job_id
            self._jobs[job.job_id] = job
            self._by_key[key] = job.job_id
            evicted = self._evict()
        for old in evicted:
            shutil.rmtree(old.out_dir, ignore_errors=True)
        self._pool.submit(self._run, job)
        log.info("evidence job queued", extra={"job": job.job_id, "cameras": len(tasks)})
        return job, True

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _evict(self) -> list[Job]:
        """Drop the oldest finished jobs beyond `max_kept` (called under the lock)."""
        finished = sorted((j for j in self._jobs.values() if not j.active), key=lambda j: j.finished_at or 0)
        out = []
        while len(self._jobs) > self._max_kept and finished:
            old = finished.pop(0)
            del self._jobs[old.job_id]
            self._by_key = {k: v for k, v in self._by_key.items() if v != old.job_id}
            out.append(old)
        return out

    def _run(self, job: Job) -> None:
        job.state = JobState.RUNNING
        try:
            for i, task in enumerate(job.tasks):
                job.camera_index, job.done_phases, job.phase = i, 0, JOB_PHASES[0]
                task.result = self._runner(task, job.out_dir / task.camera.hex(), lambda name: self._step(job, name))
            job.state = JobState.DONE
            job.phase = "done"
        except Exception as exc:  # noqa: BLE001 - the job records the problem; the worker lives on
            log.warning("evidence job failed", extra={"job": job.job_id, "error": repr(exc)})
            job.error = failure_problem(exc)
            job.state = JobState.FAILED
            job.phase = "failed"
        finally:
            job.finished_at = self._clock()

    @staticmethod
    def _step(job: Job, name: str) -> None:
        if name not in JOB_PHASES:
            return
        job.done_phases += 1
        following = JOB_PHASES.index(name) + 1
        job.phase = JOB_PHASES[following] if following < len(JOB_PHASES) else "finishing"

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
