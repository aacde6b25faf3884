"""Batch mode's SQLite tables survive a restart and refuse a second batch per (window, slot)."""

from __future__ import annotations

from offchain.node.state import BatchState, NodeState


def test_tips_and_batches_survive_a_reopen(tmp_path):
    path = tmp_path / "node.sqlite"
    state = NodeState(path)
    b = BatchState(state)
    assert b.next_index() == 0 and b.last() is None and b.tips() == {}
    b.record(index=0, window_start=1000, window_end=2000, root=b"\x01" * 32, digest=b"\x02" * 32, block_count=2,
             anchored_at=5, gas=144_000, proposer="0xabc", tips={b"c" * 32: (b"h" * 32, 1, 2000)})
    state.close()
    again = BatchState(NodeState(path))
    assert again.next_index() == 1
    assert again.tips() == {b"c" * 32: (b"h" * 32, 1, 2000)}
    last = again.last()
    assert last is not None and last["index"] == 0 and last["windowEndMs"] == 2000 and last["gas"] == 144_000
    assert again.total_gas() == 144_000


def test_one_signature_per_window_and_slot(tmp_path):
    b = BatchState(NodeState(tmp_path / "node.sqlite"))
    assert b.note_signed(1000, 0, b"d" * 32, b"s" * 65)
    assert not b.note_signed(1000, 0, b"e" * 32, b"t" * 65)  # another batch, same window and slot
    assert b.signed(1000, 0) == (b"d" * 32, b"s" * 65)
    assert b.note_signed(1000, 1, b"e" * 32, b"t" * 65)  # the next slot is another turn
