"""The listener's bookkeeping on a real SQLite state: acknowledgement ranges read back after a
restart, stream states, coalesced alarms, and what the producer gets for a manifest."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from offchain.core.block import FrameRef, camera_id
from offchain.node.config import NodeConfig
from offchain.node.ingest import IngestServer, StreamState
from offchain.node.node import Node
from offchain.node.state import Alarm, NodeState

CAM = camera_id("10.0.0.9")


def _server(tmp_path) -> IngestServer:
    config = NodeConfig(name="n", data_dir=tmp_path, rpc_url="http://127.0.0.1:1", deployment=tmp_path / "d.json")
    node = SimpleNamespace(config=config, name="n", state=NodeState(tmp_path / "node.sqlite"))
    return IngestServer(node)  # type: ignore[arg-type]


def _hold(state: NodeState, *seqs: int) -> None:
    for s in seqs:
        state.add_frame(CAM, FrameRef.of_bytes(s, 1000 + 40 * s, bytes([s % 256]) * 8, s == 0), b"\0" * 64, "camera")


def test_acknowledgement_state_is_read_back_from_sqlite(tmp_path):
    server = _server(tmp_path)
    _hold(server.node.state, 0, 1, 2, 3, 7, 8, 10)
    held = server.tracker(CAM)  # as after a restart: nothing in memory yet
    assert held.upto == 3 and held.head(10) == [[7, 8], [10, 10]]
    server.note_held(CAM, 4)
    assert server.tracker(CAM).upto == 4
    assert server.node.state.held_run_end(CAM, 5) == 4  # seq 5 not held: the run is empty
    assert server.node.state.seqs_from(CAM, 4, 2) == [7, 8]


def test_stream_states_and_manifest_extras(tmp_path):
    server = _server(tmp_path)
    state = server.node.state
    _hold(state, 0, 1, 2)
    assert server.stream_state(CAM) is None
    server._note_stream(CAM, StreamState.UNENDED, 2)
    record = server.stream_state(CAM)
    assert (record.state, record.last_seq) == (StreamState.UNENDED, 2)
    proof = {"signedJson": '{"type":"hello"}', "signature": "00" * 64, "domain": "frameledger.control.v2"}
    state.set_meta(f"hello:{CAM.hex()}", json.dumps({**proof, "at": 1.0}))
    node = SimpleNamespace(state=state, stream_state=server.stream_state,
                           signed_hello=lambda cam: Node.signed_hello(SimpleNamespace(state=state), cam))
    # the newest frame (ts 1080) is in [1000, 2000): that window declares the unended stream
    assert Node.manifest_extras(node, CAM, 1000, 2000) == {"codec_proof": proof, "stream_end": "unended"}
    assert Node.manifest_extras(node, CAM, 0, 1000) == {"codec_proof": proof}
    server._note_stream(CAM, StreamState.ENDED, 2)
    assert "stream_end" not in Node.manifest_extras(node, CAM, 1000, 2000)


def test_coalesced_alarms_are_one_row_with_a_count(tmp_path):
    server = _server(tmp_path)
    state = server.node.state
    def alarm(detail: str) -> Alarm:
        return Alarm("n:security:anonymous:camera@10.1.1.1", None, None, "security", None, None, None, None, False,
                     time.time(), None, None, detail)

    for i in range(5000):
        server.alarm(alarm(f"garbage {i}"))
        server.count("*", "rejected_security")
    assert len(state.alarms()) == 1 and state.alarm_count(alarm("").id)[0] == 1  # first written at once
    server.flush()
    (row,) = state.alarms()
    assert state.alarm_count(row.id)[0] == 5000 and "garbage 4999" in row.detail and "x5000" in row.detail
    assert state.counters()["*"]["rejected_security"] == 5000
    server.flush()  # nothing new: nothing changes
    assert state.alarm_count(row.id)[0] == 5000
