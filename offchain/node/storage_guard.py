"""What a node does when its disk is full or its data directory turns read-only (issue 8, item 9).

Ingest pauses rather than half-writes: a frame whose bytes or row could not be written is not
recorded and not acknowledged (the camera keeps it in its buffer and sends it again), the
connection is refused with `storage-unavailable`, and for ``RETRY_S`` every further frame is
refused at once without touching the disk. Then one frame is tried again, so the node resumes by
itself once space is freed or the directory is writable again. The fault shows in
`/api/v1/status` (``storage``) and as a named alarm (``node.storage_full``,
``node.storage_readonly`` or ``node.storage_unavailable``) when the alarm itself can be written.
SQLite rolls a failed write back and the store writes through a temporary file and a rename, so
nothing accepted before the fault is damaged (tests/integration/test_storage_faults.py).
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from ..store.base import StoreFull
from .state import NodeState, named_alarm

log = logging.getLogger(__name__)

RETRY_S = 5.0


class StorageFault(str, Enum):
    FULL = "full"
    READ_ONLY = "read-only"
    UNAVAILABLE = "unavailable"


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def classify(exc: BaseException) -> StorageFault:
    """By errno where there is one (the store's errors chain the OSError), else by the wording
    SQLite and the OS use; never by the rest of the message (paths can contain any word)."""
    cause: BaseException | None = exc
    while cause is not None:
        code = getattr(cause, "errno", None)
        if code in _FULL_ERRNOS:
            return StorageFault.FULL
        if code in _READ_ONLY_ERRNOS:
            return StorageFault.READ_ONLY
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, StoreFull):
        return StorageFault.FULL
    text = str(exc).lower()
    if "no space left on device" in text or "database or disk is full" in text:
        return StorageFault.FULL
    if "read-only file system" in text or "readonly database" in text:
        return StorageFault.READ_ONLY
    return StorageFault.UNAVAILABLE


@dataclass
class StorageGuard:
    node: str
    clock: Callable[[], float] = time.monotonic
    fault: StorageFault | None = None
    detail: str | None = None
    since: float | None = None
    refused: int = 0
    _retry_at: float = field(default=0.0, repr=False)

    def blocked(self) -> bool:
        """True while a fault is fresh: refuse without touching the disk."""
        if self.fault is not None and self.clock() < self._retry_at:
            self.refused += 1
            return True
        return False

    def failed(self, exc: BaseException, state: NodeState) -> None:
        fault = classify(exc)
        if self.fault is None:
            log.error("storage fault: ingest paused", extra={"node": self.node, "fault": fault.value, "error": str(exc),
                                                             "sqlite": getattr(exc, "sqlite_errorname", None)})
            self.since = time.time()
        self.fault, self.detail = fault, str(exc)
        self._retry_at = self.clock() + RETRY_S
        try:  # on a full disk the alarm row itself may not fit: status still shows the fault
            state.raise_alarm(named_alarm(f"{self.node}:storage", f"node.storage_{fault.value.replace('-', '')}",
                                          None, None, f"ingest paused: {exc}"))
        except (sqlite3.Error, OSError):
            pass

    def ok(self) -> None:
        if self.fault is not None:
            log.info("storage recovered: ingest resumed", extra={"node": self.node, "fault": self.fault.value})
            self.fault = self.detail = self.since = None

    def snapshot(self) -> dict[str, Any]:
        return {"ok": self.fault is None, "fault": self.fault.value if self.fault else None, "detail": self.detail,
                "since": self.since, "refused": self.refused}
