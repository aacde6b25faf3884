"""offchain/evidence/gcpause.py and offchain/node/gctune.py: the collector is paused inside, restored after, counted across
nested and concurrent calls, and left off if it was off before."""

from __future__ import annotations

import gc
import threading

import pytest

from offchain.evidence.gcpause import collections_paused
from offchain.node.gctune import FIRST_GENERATION_THRESHOLD, tune_for_a_long_running_node


@collections_paused
def _state(inner=None) -> list[bool]:
    seen = [gc.isenabled()]
    if inner is not None:
        seen += inner()
        seen.append(gc.isenabled())  # still paused after the nested call returned
    return seen


def test_paused_inside_restored_after_even_nested_or_raising():
    gc.enable()
    assert _state(lambda: _state()) == [False, False, False]
    assert gc.isenabled()

    @collections_paused
    def fails():
        raise ValueError("x")

    with pytest.raises(ValueError):
        fails()
    assert gc.isenabled()


def test_left_off_when_it_was_off_before():
    gc.disable()
    try:
        assert _state() == [False]
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_concurrent_calls_reenable_once_when_the_last_returns():
    gc.enable()
    entered = {"a": threading.Event(), "b": threading.Event()}
    release = {"a": threading.Event(), "b": threading.Event()}
    seen: dict[str, bool] = {}

    @collections_paused
    def job(name: str) -> None:
        entered[name].set()
        release[name].wait(10)
        seen[name] = gc.isenabled()

    threads = {n: threading.Thread(target=job, args=(n,)) for n in ("a", "b")}
    for n in ("a", "b"):
        threads[n].start()
        assert entered[n].wait(10)
    release["a"].set()
    threads["a"].join(10)
    assert not gc.isenabled()  # b still runs
    release["b"].set()
    threads["b"].join(10)
    assert seen == {"a": False, "b": False} and gc.isenabled()


def test_a_started_node_freezes_its_heap_and_collects_less_often():
    before = gc.get_threshold()
    try:
        tune_for_a_long_running_node()
        assert gc.get_threshold()[0] == FIRST_GENERATION_THRESHOLD > before[0]
        assert gc.get_freeze_count() > 0 and gc.isenabled()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
