"""offchain.evidence.ahead: items in order from a worker thread, the producer's exception at its
place, and a consumer that stops early stops the producer (its finally runs, no thread is left)."""

from __future__ import annotations

import threading
import time

import pytest

from offchain.evidence.ahead import ahead


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_items_arrive_in_order_and_at_most_depth_ahead() -> None:
    produced: list[int] = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    it = ahead(source(), depth=2, name="t-order")
    assert next(it) == 0
    time.sleep(0.2)
    assert len(produced) <= 1 + 2 + 1  # the one consumed, two queued, one waiting for a slot
    assert list(it) == list(range(1, 50))
    assert "t-order" not in _threads()


def test_the_producers_exception_is_raised_where_it_happened() -> None:
    def source():
        yield 1
        yield 2
        raise OSError("pack unreadable")

    got = []
    with pytest.raises(OSError, match="pack unreadable"):
        for x in ahead(source(), name="t-raise"):
            got.append(x)
    assert got == [1, 2] and "t-raise" not in _threads()


def test_a_consumer_that_stops_early_stops_the_producer() -> None:
    closed = threading.Event()

    def source():
        try:
            for i in range(10**9):
                yield i
        finally:
            closed.set()  # e.g. the store's open packs closed

    it = ahead(source(), depth=1, name="t-close")
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert closed.is_set() and "t-close" not in _threads()
