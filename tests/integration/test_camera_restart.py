"""A camera that reboots numbers its frames from 0 again while its clock goes on (issue 8,
item 1): a named alarm and a refusal by name, not an equivocation that closes the connection;
a replay of old frames stays a harmless duplicate."""

from __future__ import annotations

import time

import pytest
from cluster_fixtures import one_camera_cluster
from ingest_client import IngestClient

from offchain.core import packet as pk

pytestmark = pytest.mark.slow

IP = "10.9.5.1"


def test_a_reboot_is_named_and_refused_by_name_a_replay_is_a_duplicate(tmp_path):
    with one_camera_cluster(tmp_path, IP, owner=1, settings={"store_fsync": "none"}, start=("node-bank",)) as (cluster, key):
        bank = cluster.node("node-bank")
        t0 = int(time.time() * 1000) - 30_000
        before = [pk.encode_packet(key, IP, seq, t0 + 100 * seq, seq == 0, b"before %d" % seq) for seq in range(10)]
        c = IngestClient(bank.ingest)
        c.hello(key, IP)
        for p in before:
            c.send(p)
        c.wait_ack(9)
        for p in before[:3]:  # a replay: the same signed frames again
            c.send(p)
        # the camera reboots: numbers from 0 again, captured after everything held
        after = [pk.encode_packet(key, IP, seq, t0 + 5_000 + 100 * seq, seq == 0, b"after %d" % seq) for seq in range(3)]
        for p in after:
            c.send(p)
        got = [c.recv(timeout=10) for _ in range(3)]
        rejects = [m for m in c.received if m and m.get("type") == "reject"]
        assert [(m["reason"], m["seq"]) for m in rejects][:3] == [("camera-restart", 0), ("camera-restart", 1),
                                                                  ("camera-restart", 2)], got
        # the connection is not treated as an attacker's: it stays open and goes on working
        c.send(pk.encode_packet(key, IP, 10, t0 + 5_400, False, b"after 10"))
        c.wait_ack(10)
        c.close()
        alarms = cluster.api(bank, "/api/v1/alarms")
        assert [a["kind"] for a in alarms if a["kind"] == "camera.restart"] == ["camera.restart"]
        assert not [a for a in alarms if "signed twice" in (a.get("detail") or "")]
        held = {f["seq"]: f for f in cluster.api(bank, f"/api/v1/frames/{IP}")}
        assert sorted(held) == list(range(11))  # the replay changed nothing; nothing before the reboot was lost
