"""An iterator run a few items ahead in a worker thread: for a producer whose work releases the
GIL (file reads, SHA-256 in C) beside a consumer whose work does too (file writes, CRC-32), so
the two use both cores. Extraction's one-pass clip writer reads and hashes the next window of
frames (`Fetcher.stream_joined`) while it writes the last one.

The producer's exception is raised in the consumer, at the item where it happened; a consumer
that stops early (an exception, `close`) stops the producer before the generator returns, so no
thread outlives the iteration and nothing the producer holds (open packs) is left open.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

__all__ = ["ahead"]

T = TypeVar("T")
_DONE = object()


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def ahead(items: Iterable[T], depth: int = 2, name: str = "read-ahead") -> Iterator[T]:
    """``items`` in order, produced in a thread at most ``depth`` items ahead of the consumer."""
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not _put(slots, item, stop):
                    return
            _put(slots, _DONE, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            _put(slots, _Raised(exc), stop)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a generator's finally blocks run here, in its own thread

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            got = slots.get()
            if got is _DONE:
                return
            if isinstance(got, _Raised):
                raise got.exc
            yield got  # type: ignore[misc]
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting for a free slot
            try:
                slots.get(timeout=0.01)
            except queue.Empty:
                pass
        worker.join()


def _put(slots: "queue.Queue[object]", item: object, stop: threading.Event) -> bool:
    """Put unless the consumer has stopped (then False)."""
    while not stop.is_set():
        try:
            slots.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False
