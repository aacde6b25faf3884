"""A node's durable state in SQLite: the frame pool, the alarm pool, repairs, peer reports,
counters and chain bookkeeping.

A frame is *accepted* when its row is committed; its bytes are put in the content store before
the row is written, so every row has its bytes. Frames are written in batches by `FrameWriter`
(its own connection, synchronous=FULL: one WAL fsync per batch, so an acknowledged frame survives
an OS crash too); everything else uses WAL with synchronous=NORMAL, which keeps every committed
row across a killed process and can lose only the last transactions in an OS crash. Frames stay in the table after anchoring (`anchored = 1`): they leave
the *pool* (what blocks are still to be built from) but not the record, so the node can still
serve them to peers and to evidence extraction.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..core.block import FrameRef, track_bounds

_MAX_SEQ = 2**63 - 1  # SQLite INTEGER
CameraRow = tuple[str, str | None, int | None, int | None]  # a camera's row: ip, codec JSON, last seq (signed end), first seq


def _bounds(track: int | None) -> tuple[int, int]:
    """The seq range of one track (every seq with None)."""
    return (0, _MAX_SEQ) if track is None else track_bounds(track)

SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    camera_id BLOB NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, sha256 BLOB NOT NULL,
    keyframe INTEGER NOT NULL, size INTEGER NOT NULL, dts INTEGER, signature BLOB NOT NULL,
    source TEXT NOT NULL, received_at REAL NOT NULL, anchored INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (camera_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS frames_by_time ON frames (camera_id, ts);
CREATE TABLE IF NOT EXISTS cameras (
    camera_id BLOB PRIMARY KEY, ip TEXT NOT NULL, codec TEXT, last_seq INTEGER, first_seq INTEGER
);
CREATE TABLE IF NOT EXISTS alarms (
    id TEXT PRIMARY KEY, camera_id BLOB, camera_ip TEXT, kind TEXT NOT NULL,
    seq_from INTEGER, seq_to INTEGER, ts_from INTEGER, ts_to INTEGER, keyframe_lost INTEGER DEFAULT 0,
    raised_at REAL NOT NULL, cleared_at REAL, resolution TEXT, detail TEXT
);
CREATE INDEX IF NOT EXISTS open_alarms ON alarms (cleared_at, camera_id);
CREATE INDEX IF NOT EXISTS alarms_by_camera ON alarms (camera_id, kind, seq_from);
CREATE INDEX IF NOT EXISTS pool ON frames (camera_id, ts) WHERE anchored = 0;
CREATE INDEX IF NOT EXISTS frames_by_arrival ON frames (camera_id, received_at);
CREATE TABLE IF NOT EXISTS repairs (
    id INTEGER PRIMARY KEY, camera_id BLOB NOT NULL, camera_ip TEXT, seq INTEGER NOT NULL, peer TEXT NOT NULL,
    alarm_id TEXT, at REAL NOT NULL, confirmations INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS peer_reports (
    id INTEGER PRIMARY KEY, peer TEXT NOT NULL, camera_id BLOB, seq INTEGER, reason TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    camera TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (camera, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (
    block_hash BLOB PRIMARY KEY, camera_id BLOB NOT NULL, height INTEGER NOT NULL,
    window_start INTEGER NOT NULL, window_end INTEGER NOT NULL, role TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Ingest hardening (issue 8): how often a coalesced alarm fired, kept beside its one alarm row.
INGEST_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarm_counts (
    id TEXT PRIMARY KEY, count INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL
) WITHOUT ROWID;
"""

# Declared outages (issue 10, `offchain.node.outages`): the camera's signed declarations, kept
# durably until the block of the window holding their to_ms carries them. proof = the manifest
# entry (JSON: signedJson, signature, domain); digest = SHA-256 of the signed JSON (a replay is
# the same row).
OUTAGE_SCHEMA = """
CREATE TABLE IF NOT EXISTS outages (
    camera_id BLOB NOT NULL, digest BLOB NOT NULL, after_seq INTEGER NOT NULL, from_ms INTEGER NOT NULL,
    to_ms INTEGER NOT NULL, reason TEXT NOT NULL, proof TEXT NOT NULL, received_at REAL NOT NULL,
    PRIMARY KEY (camera_id, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outages_by_end ON outages (camera_id, to_ms);
"""


@dataclass(frozen=True)
class StoredFrame:
    ref: FrameRef
    signature: bytes
    source: str
    anchored: bool


@dataclass(frozen=True)
class Alarm:
    id: str
    camera_id: bytes | None
    camera_ip: str | None
    kind: str
    seq_from: int | None
    seq_to: int | None
    ts_from: int | None
    ts_to: int | None
    keyframe_lost: bool
    raised_at: float
    cleared_at: float | None
    resolution: str | None
    detail: str | None

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "camera": self.camera_ip,
            "cameraId": "0x" + self.camera_id.hex() if self.camera_id else None,
            "kind": self.kind,
            "seqFrom": self.seq_from,
            "seqTo": self.seq_to,
            "tsFrom": self.ts_from,
            "tsTo": self.ts_to,
            "keyframeLost": self.keyframe_lost,
            "raisedAt": self.raised_at,
            "clearedAt": self.cleared_at,
            "resolution": self.resolution,
            "detail": self.detail,
        }


def named_alarm(alarm_id: str, kind: str, camera: bytes | None, ip: str | None, detail: str,
                seq_from: int | None = None, seq_to: int | None = None,
                ts_from: int | None = None, ts_to: int | None = None) -> Alarm:
    """An open alarm of a kind other than `missing` (camera.seq_jump, chain.*, ...): on record for
    the operator, never repaired or cleared by the repair path."""
    return Alarm(id=alarm_id, camera_id=camera, camera_ip=ip, kind=kind, seq_from=seq_from, seq_to=seq_to,
                 ts_from=ts_from, ts_to=ts_to, keyframe_lost=False, raised_at=time.time(), cleared_at=None,
                 resolution=None, detail=detail)


class FrameWriter:
    """The group-commit side of the frame pool (issue 9): its own connection, used by one
    thread at a time, writing a whole batch of frames in one transaction with
    ``synchronous=FULL`` (the WAL is fsynced at that commit), so a frame is acknowledged only
    once its row would survive an OS crash too, for one fsync per batch instead of per frame."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self.db.execute("PRAGMA synchronous=FULL")
        self._cameras: set[bytes] = {r[0] for r in self.db.execute("SELECT camera_id FROM cameras")}

    def write(self, rows: list[tuple[bytes, str, FrameRef, bytes, str]]) -> list[bool]:
        """(camera, ip, ref, signature, source) per frame; per frame whether its row is new. A
        camera seen for the first time (a peer's repair before any hello here) gets its row."""
        now = time.time()
        values = [(cam, ref.seq, ref.timestamp_ms, ref.sha256, int(ref.keyframe), ref.size, ref.dts_ms, sig, source, now)
                  for cam, _, ref, sig, source in rows]
        fresh = {cam: ip for cam, ip, *_ in rows if cam not in self._cameras}
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if fresh:
                self.db.executemany("INSERT OR IGNORE INTO cameras (camera_id, ip) VALUES (?,?)", list(fresh.items()))
            cur = self.db.executemany("INSERT OR IGNORE INTO frames VALUES (?,?,?,?,?,?,?,?,?,?,0)", values)
            if cur.rowcount == len(values):
                added = [True] * len(values)
            else:  # some row was already there (rare: the caller dedupes what is in flight)
                added = [self.db.execute("SELECT sha256 FROM frames WHERE camera_id=? AND seq=? AND received_at=?",
                                         (v[0], v[1], now)).fetchone() is not None for v in values]
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        self._cameras.update(fresh)
        return added

    def close(self) -> None:
        self.db.close()


class NodeState:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.db.executescript(INGEST_SCHEMA)
        self.db.executescript(OUTAGE_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def writer(self) -> FrameWriter:
        """A second connection for batched frame writes (`FrameWriter`)."""
        return FrameWriter(self.path)

    # frames ---------------------------------------------------------------------------------
    def add_frame(self, camera: bytes, ref: FrameRef, signature: bytes, source: str) -> bool:
        """Insert one accepted frame; False if (camera, seq) is already held."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO frames VALUES (?,?,?,?,?,?,?,?,?,?,0)",
            (camera, ref.seq, ref.timestamp_ms, ref.sha256, int(ref.keyframe), ref.size, ref.dts_ms, signature,
             source, time.time()),
        )
        return cur.rowcount == 1

    def frame(self, camera: bytes, seq: int) -> StoredFrame | None:
        row = self.db.execute(
            "SELECT seq, ts, sha256, keyframe, size, dts, signature, source, anchored FROM frames WHERE camera_id=? AND seq=?",
            (camera, seq),
        ).fetchone()
        return _stored(row) if row else None

    def frames_in(self, camera: bytes, from_ms: int, to_ms: int) -> list[StoredFrame]:
        rows = self.db.execute(
            "SELECT seq, ts, sha256, keyframe, size, dts, signature, source, anchored FROM frames "
            "WHERE camera_id=? AND ts>=? AND ts<? ORDER BY ts, seq",
            (camera, from_ms, to_ms),
        ).fetchall()
        return [_stored(r) for r in rows]

    def seqs_after(self, camera: bytes, seq: int, limit: int = -1, upto: int = _MAX_SEQ) -> list[tuple[int, int, bool]]:
        """(seq, ts, keyframe) of frames above `seq` (and at most `upto`: one track's numbers),
        ascending, at most `limit` (-1: all): the gap scan's input."""
        return [(s, t, bool(k)) for s, t, k in self.db.execute(
            "SELECT seq, ts, keyframe FROM frames WHERE camera_id=? AND seq>? AND seq<=? ORDER BY seq LIMIT ?",
            (camera, seq, upto, limit))]

    def next_pool_ts(self, camera: bytes, ts: int) -> int | None:
        """Capture time of the earliest frame still in the pool at or after `ts`."""
        return self.db.execute("SELECT MIN(ts) FROM frames WHERE camera_id=? AND ts>=? AND anchored=0",
                               (camera, ts)).fetchone()[0]

    def frame_before_time(self, camera: bytes, ts: int, track: int | None = None) -> tuple[int, int, bool] | None:
        """The newest frame captured before `ts` (of one track, when given: `core.block.track_of`)."""
        lo, hi = _bounds(track)
        row = self.db.execute("SELECT seq, ts, keyframe FROM frames WHERE camera_id=? AND ts<? AND seq BETWEEN ? AND ? "
                              "ORDER BY ts DESC, seq DESC LIMIT 1", (camera, ts, lo, hi)).fetchone()
        return (row[0], row[1], bool(row[2])) if row else None

    def frame_from_time(self, camera: bytes, ts: int, track: int | None = None) -> tuple[int, int, bool] | None:
        lo, hi = _bounds(track)
        row = self.db.execute("SELECT seq, ts, keyframe FROM frames WHERE camera_id=? AND ts>=? AND seq BETWEEN ? AND ? "
                              "ORDER BY ts, seq LIMIT 1", (camera, ts, lo, hi)).fetchone()
        return (row[0], row[1], bool(row[2])) if row else None

    def max_seq(self, camera: bytes, track: int | None = None) -> int | None:
        """The highest seq held of the camera (of one track, when given)."""
        if track is None:
            return self.db.execute("SELECT MAX(seq) FROM frames WHERE camera_id=?", (camera,)).fetchone()[0]
        lo, hi = _bounds(track)
        return self.db.execute("SELECT MAX(seq) FROM frames WHERE camera_id=? AND seq BETWEEN ? AND ?",
                               (camera, lo, hi)).fetchone()[0]

    def track_newest_ts(self, camera: bytes, track: int) -> int | None:
        """Capture time of a track's highest-numbered frame (its newest: numbers follow capture
        order within a track), in one probe of the primary key."""
        lo, hi = _bounds(track)
        row = self.db.execute("SELECT ts FROM frames WHERE camera_id=? AND seq BETWEEN ? AND ? ORDER BY seq DESC LIMIT 1",
                              (camera, lo, hi)).fetchone()
        return row[0] if row else None

    def note_track_last_seq(self, camera: bytes, track: int, seq: int) -> None:
        """The last seq of a track other than video, from the camera's signed end (video's is the
        cameras row's `last_seq`)."""
        self.set_meta(f"lastseq:{camera.hex()}:{track}", str(int(seq)))

    def track_last_seq(self, camera: bytes, track: int) -> int | None:
        if track == 0:
            row = self.camera_row(camera)
            return row[2] if row else None
        raw = self.get_meta(f"lastseq:{camera.hex()}:{track}")
        return int(raw) if raw is not None else None

    def held_run_end(self, camera: bytes, start: int) -> int:
        """The highest s with every seq of start..s held (start - 1 if start is not held): where a
        node's cumulative acknowledgement of the camera stands after a restart."""
        if self.frame(camera, start) is None:
            return start - 1
        row = self.db.execute(
            "SELECT f.seq FROM frames f WHERE f.camera_id=? AND f.seq>=? AND NOT EXISTS "
            "(SELECT 1 FROM frames g WHERE g.camera_id=f.camera_id AND g.seq=f.seq+1) ORDER BY f.seq LIMIT 1",
            (camera, start)).fetchone()
        return row[0]

    def seqs_from(self, camera: bytes, seq: int, limit: int) -> list[int]:
        """Up to `limit` held seqs above `seq`, ascending."""
        return [r[0] for r in self.db.execute(
            "SELECT seq FROM frames WHERE camera_id=? AND seq>? ORDER BY seq LIMIT ?", (camera, seq, limit))]

    def max_ts(self, camera: bytes) -> int | None:
        return self.db.execute("SELECT MAX(ts) FROM frames WHERE camera_id=?", (camera,)).fetchone()[0]

    def open_alarm_count(self, camera: bytes | None = None, kind: str | None = None) -> int:
        q, args = "SELECT COUNT(*) FROM alarms WHERE cleared_at IS NULL", []
        if camera is not None:
            q += " AND camera_id=?"
            args.append(camera)
        if kind is not None:
            q += " AND kind=?"
            args.append(kind)
        return self.db.execute(q, args).fetchone()[0]

    def recent_keyframes(self, camera: bytes, limit: int = 50, track: int | None = None) -> list[int]:
        lo, hi = _bounds(track)
        rows = self.db.execute("SELECT seq FROM frames WHERE camera_id=? AND keyframe=1 AND seq BETWEEN ? AND ? "
                               "ORDER BY seq DESC LIMIT ?", (camera, lo, hi, limit)).fetchall()
        return sorted(r[0] for r in rows)

    def neighbours(self, camera: bytes, seq: int) -> tuple[tuple[int, int, bool] | None, tuple[int, int, bool] | None]:
        before = self.db.execute(
            "SELECT seq, ts, keyframe FROM frames WHERE camera_id=? AND seq<? ORDER BY seq DESC LIMIT 1", (camera, seq)).fetchone()
        after = self.db.execute(
            "SELECT seq, ts, keyframe FROM frames WHERE camera_id=? AND seq>? ORDER BY seq LIMIT 1", (camera, seq)).fetchone()
        return (tuple(before) if before else None, tuple(after) if after else None)  # type: ignore[return-value]

    def mark_anchored(self, camera: bytes, from_ms: int, to_ms: int) -> int:
        return self.db.execute("UPDATE frames SET anchored=1 WHERE camera_id=? AND ts>=? AND ts<? AND anchored=0",
                               (camera, from_ms, to_ms)).rowcount

    def mark_anchored_seqs(self, camera: bytes, seqs: list[int]) -> int:
        return self.db.executemany("UPDATE frames SET anchored=1 WHERE camera_id=? AND seq=?",
                                   [(camera, s) for s in seqs]).rowcount

    def pool_cameras(self) -> list[bytes]:
        # One index probe per camera (every camera with frames has its row: hello or FrameWriter),
        # not a DISTINCT over every pooled frame, which grew with the pool at every tick.
        return [r[0] for r in self.db.execute(
            "SELECT camera_id FROM cameras c WHERE EXISTS "
            "(SELECT 1 FROM frames f WHERE f.camera_id = c.camera_id AND f.anchored = 0)")]

    def pool_span(self, camera: bytes) -> tuple[int, int] | None:
        # Two subqueries, each one probe of the `pool` index: MIN and MAX in one SELECT scan every
        # pooled row of the camera (SQLite's min/max shortcut takes one aggregate only), which
        # the producer paid per camera per tick (issue 9 profile: ~130 µs a call at 500 rows).
        row = self.db.execute("SELECT (SELECT MIN(ts) FROM frames WHERE camera_id=?1 AND anchored=0), "
                              "(SELECT MAX(ts) FROM frames WHERE camera_id=?1 AND anchored=0)", (camera,)).fetchone()
        return None if row[0] is None else (row[0], row[1])

    def last_frame(self, camera: bytes) -> tuple[int, int, float] | None:
        row = self.db.execute(
            "SELECT seq, ts, received_at FROM frames WHERE camera_id=? ORDER BY ts DESC LIMIT 1", (camera,)).fetchone()
        return tuple(row) if row else None  # type: ignore[return-value]

    def max_received_at(self, camera: bytes) -> float | None:
        return self.db.execute("SELECT MAX(received_at) FROM frames WHERE camera_id=?", (camera,)).fetchone()[0]

    # cameras --------------------------------------------------------------------------------
    def note_camera(self, camera: bytes, ip: str, codec: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO cameras (camera_id, ip, codec) VALUES (?,?,?) ON CONFLICT(camera_id) DO UPDATE SET "
            "codec=COALESCE(excluded.codec, cameras.codec)", (camera, ip, codec))

    def note_first_seq(self, camera: bytes, seq: int) -> None:
        self.db.execute("UPDATE cameras SET first_seq = MIN(COALESCE(first_seq, ?), ?) WHERE camera_id=?", (seq, seq, camera))

    def note_last_seq(self, camera: bytes, seq: int) -> None:
        self.db.execute("UPDATE cameras SET last_seq=? WHERE camera_id=?", (seq, camera))

    def camera_row(self, camera: bytes) -> CameraRow | None:
        row = self.db.execute("SELECT ip, codec, last_seq, first_seq FROM cameras WHERE camera_id=?", (camera,)).fetchone()
        return tuple(row) if row else None  # type: ignore[return-value]

    def camera_rows(self) -> dict[bytes, CameraRow]:
        """Every camera's `camera_row` in one query (a tick's pass over 200 cameras read them one
        by one: ~4 % of a node's samples in the issue-9 profile)."""
        return {r[0]: (r[1], r[2], r[3], r[4])
                for r in self.db.execute("SELECT camera_id, ip, codec, last_seq, first_seq FROM cameras")}

    def cameras(self) -> list[tuple[bytes, str]]:
        return [(r[0], r[1]) for r in self.db.execute("SELECT camera_id, ip FROM cameras")]

    # alarms ---------------------------------------------------------------------------------
    def raise_alarm(self, alarm: Alarm) -> bool:
        cur = self.db.execute(
            "INSERT OR IGNORE INTO alarms VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (alarm.id, alarm.camera_id, alarm.camera_ip, alarm.kind, alarm.seq_from, alarm.seq_to, alarm.ts_from,
             alarm.ts_to, int(alarm.keyframe_lost), alarm.raised_at, alarm.cleared_at, alarm.resolution, alarm.detail),
        )
        return cur.rowcount == 1

    def clear_alarm(self, alarm_id: str, resolution: str) -> bool:
        return self.db.execute("UPDATE alarms SET cleared_at=?, resolution=? WHERE id=? AND cleared_at IS NULL",
                               (time.time(), resolution, alarm_id)).rowcount == 1

    def alarms(self, open_only: bool = False, camera: bytes | None = None, kind: str | None = None) -> list[Alarm]:
        q, args = "SELECT * FROM alarms WHERE 1=1", []
        if open_only:
            q += " AND cleared_at IS NULL"
        if camera is not None:
            q += " AND camera_id=?"
            args.append(camera)
        if kind is not None:
            q += " AND kind=?"
            args.append(kind)
        return [_alarm(r) for r in self.db.execute(q + " ORDER BY raised_at", args)]

    def keyframe_lost_between(self, camera: bytes, seq_from: int, seq_to: int) -> bool:
        """Whether a missing alarm of this camera that overlaps [seq_from, seq_to] lost a keyframe."""
        return self.db.execute(
            "SELECT 1 FROM alarms WHERE camera_id=? AND kind='missing' AND keyframe_lost=1 AND seq_from<=? AND seq_to>=? LIMIT 1",
            (camera, seq_to, seq_from)).fetchone() is not None

    def alarm(self, alarm_id: str) -> Alarm | None:
        row = self.db.execute("SELECT * FROM alarms WHERE id=?", (alarm_id,)).fetchone()
        return _alarm(row) if row else None

    def raise_coalesced_alarm(self, alarm: Alarm, by: int = 1) -> int:
        """One durable row per alarm id (the caller makes the id from source and kind): the first
        occurrence inserts the alarm, every later one only bumps its count, last-seen time and
        detail. Returns how often it has fired. Written for ingest rejections (issue 8)."""
        with self.transaction():
            self.raise_alarm(alarm)
            self.db.execute(
                "INSERT INTO alarm_counts VALUES (?,?,?,?) ON CONFLICT(id) DO UPDATE SET count = count + excluded.count, "
                "last_seen = excluded.last_seen", (alarm.id, by, alarm.raised_at, alarm.raised_at))
            count = self.db.execute("SELECT count FROM alarm_counts WHERE id=?", (alarm.id,)).fetchone()[0]
            if count > 1:
                self.db.execute("UPDATE alarms SET detail=?, cleared_at=NULL, resolution=NULL WHERE id=?",
                                (f"{alarm.detail} [x{count}, last at {alarm.raised_at:.3f}]", alarm.id))
        return count

    def alarm_count(self, alarm_id: str) -> tuple[int, float] | None:
        """(count, last seen) of a coalesced alarm."""
        row = self.db.execute("SELECT count, last_seen FROM alarm_counts WHERE id=?", (alarm_id,)).fetchone()
        return (row[0], row[1]) if row else None

    # repairs and reports --------------------------------------------------------------------
    def record_repair(self, camera: bytes, ip: str, seq: int, peer: str, alarm_id: str | None) -> None:
        self.db.execute("INSERT INTO repairs (camera_id, camera_ip, seq, peer, alarm_id, at) VALUES (?,?,?,?,?,?)",
                        (camera, ip, seq, peer, alarm_id, time.time()))

    def confirm_repair(self, camera: bytes, seq: int) -> None:
        self.db.execute("UPDATE repairs SET confirmations = confirmations + 1 WHERE camera_id=? AND seq=?", (camera, seq))

    def repairs(self, camera: bytes | None = None) -> list[dict]:
        q, args = "SELECT camera_ip, seq, peer, alarm_id, at, confirmations FROM repairs", []
        if camera is not None:
            q += " WHERE camera_id=?"
            args.append(camera)
        return [{"camera": r[0], "seq": r[1], "peer": r[2], "alarmId": r[3], "at": r[4], "confirmations": r[5]}
                for r in self.db.execute(q + " ORDER BY id", args)]

    def report_peer(self, peer: str, camera: bytes | None, seq: int | None, reason: str) -> None:
        self.db.execute("INSERT INTO peer_reports (peer, camera_id, seq, reason, at) VALUES (?,?,?,?,?)",
                        (peer, camera, seq, reason, time.time()))

    def peer_reports(self) -> list[dict]:
        return [{"peer": r[0], "seq": r[1], "reason": r[2], "at": r[3]}
                for r in self.db.execute("SELECT peer, seq, reason, at FROM peer_reports ORDER BY id")]

    # counters -------------------------------------------------------------------------------
    def bump(self, camera: str, name: str, by: int = 1) -> None:
        self.db.execute("INSERT INTO counters VALUES (?,?,?) ON CONFLICT(camera, name) DO UPDATE SET value = value + ?",
                        (camera, name, by, by))

    def counters(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for camera, name, value in self.db.execute("SELECT camera, name, value FROM counters"):
            out.setdefault(camera, {})[name] = value
        return out

    # blocks and chain bookkeeping -----------------------------------------------------------
    def note_block(self, block_hash: bytes, camera: bytes, height: int, start: int, end: int, role: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO blocks VALUES (?,?,?,?,?,?,?)",
                        (block_hash, camera, height, start, end, role, time.time()))

    def block_role(self, block_hash: bytes) -> str | None:
        row = self.db.execute("SELECT role FROM blocks WHERE block_hash=?", (block_hash,)).fetchone()
        return row[0] if row else None

    def last_proposed(self) -> tuple[bytes, bytes, int, float] | None:
        """(block hash, camera, height, when) of the newest block this node anchored."""
        row = self.db.execute("SELECT block_hash, camera_id, height, at FROM blocks WHERE role='proposed' "
                              "ORDER BY at DESC LIMIT 1").fetchone()
        return (bytes(row[0]), bytes(row[1]), row[2], row[3]) if row else None

    def block_for_window(self, camera: bytes, window_start: int) -> bytes | None:
        row = self.db.execute("SELECT block_hash FROM blocks WHERE camera_id=? AND window_start=?", (camera, window_start)).fetchone()
        return row[0] if row else None

    # declared outages (issue 10) ----------------------------------------------------------------
    def add_outage(self, camera: bytes, digest: bytes, after_seq: int, from_ms: int, to_ms: int, reason: str,
                   proof: str) -> bool:
        """Keep one declaration; False if the same signed bytes are already kept."""
        cur = self.db.execute("INSERT OR IGNORE INTO outages VALUES (?,?,?,?,?,?,?,?)",
                              (camera, digest, after_seq, from_ms, to_ms, reason, proof, time.time()))
        return cur.rowcount == 1

    def has_outage(self, camera: bytes, digest: bytes) -> bool:
        return self.db.execute("SELECT 1 FROM outages WHERE camera_id=? AND digest=?", (camera, digest)).fetchone() is not None

    def outage_count(self, camera: bytes, from_ms: int, to_ms: int) -> int:
        """Declarations kept whose to_ms is in [from_ms, to_ms)."""
        return int(self.db.execute("SELECT COUNT(*) FROM outages WHERE camera_id=? AND to_ms>=? AND to_ms<?",
                                   (camera, from_ms, to_ms)).fetchone()[0])

    def outage_proofs(self, camera: bytes, from_ms: int, to_ms: int) -> list[str]:
        """The proofs (JSON) of the declarations whose to_ms is in [from_ms, to_ms), in a fixed
        order (time, then digest), so every node holding the same ones builds the same manifest."""
        return [r[0] for r in self.db.execute(
            "SELECT proof FROM outages WHERE camera_id=? AND to_ms>=? AND to_ms<? ORDER BY to_ms, from_ms, digest",
            (camera, from_ms, to_ms))]

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (key, value))

    def transaction(self) -> "_Tx":
        return _Tx(self.db)


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN")
        return self

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _stored(row: Iterable) -> StoredFrame:
    seq, ts, sha, key, size, dts, sig, source, anchored = row
    return StoredFrame(FrameRef(ts, seq, bytes(sha), bool(key), size, dts), bytes(sig), source, bool(anchored))


def _alarm(row: Iterable) -> Alarm:
    r = list(row)
    return Alarm(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), r[9], r[10], r[11], r[12])


def iter_chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# Batch mode (docs/NODES.md, "Batch mode"): each camera's tip as the anchored batches left it,
# the batches followed, and what this node signed (never two batches for one window and slot).
BATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_tips (
    camera_id BLOB PRIMARY KEY, block_hash BLOB NOT NULL, height INTEGER NOT NULL, window_end INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    idx INTEGER PRIMARY KEY, window_start INTEGER NOT NULL, window_end INTEGER NOT NULL, root BLOB NOT NULL,
    digest BLOB NOT NULL, block_count INTEGER NOT NULL, anchored_at INTEGER NOT NULL, gas INTEGER, proposer TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_signed (
    window_start INTEGER NOT NULL, attempt INTEGER NOT NULL, digest BLOB NOT NULL, signature BLOB NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (window_start, attempt)
) WITHOUT ROWID;
"""


class BatchState:
    """The batch-mode tables, on the node state's connection (one event loop owns it)."""

    def __init__(self, state: NodeState):
        self.db = state.db
        self.db.executescript(BATCH_SCHEMA)

    def tips(self) -> dict[bytes, tuple[bytes, int, int]]:
        """camera -> (block hash, height, window end) after the batches followed so far."""
        return {bytes(r[0]): (bytes(r[1]), r[2], r[3]) for r in self.db.execute("SELECT * FROM batch_tips")}

    def next_index(self) -> int:
        row = self.db.execute("SELECT MAX(idx) FROM batches").fetchone()
        return 0 if row[0] is None else row[0] + 1

    def last(self) -> dict | None:
        row = self.db.execute("SELECT idx, window_start, window_end, root, digest, block_count, anchored_at, gas, proposer "
                              "FROM batches ORDER BY idx DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return {"index": row[0], "windowStartMs": row[1], "windowEndMs": row[2], "root": "0x" + bytes(row[3]).hex(),
                "manifestDigest": "0x" + bytes(row[4]).hex(), "blocks": row[5], "anchoredAt": row[6], "gas": row[7],
                "proposer": row[8]}

    def record(self, *, index: int, window_start: int, window_end: int, root: bytes, digest: bytes, block_count: int,
               anchored_at: int, gas: int | None, proposer: str,
               tips: dict[bytes, tuple[bytes, int, int]]) -> None:
        """A followed batch and the tips it leaves, in one transaction (a restart resumes after it)."""
        self.db.execute("BEGIN")
        try:
            self.db.executemany("INSERT OR REPLACE INTO batch_tips VALUES (?,?,?,?)",
                                [(cam, h, height, end) for cam, (h, height, end) in tips.items()])
            self.db.execute("INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?,?,?,?,?,?)",
                            (index, window_start, window_end, root, digest, block_count, anchored_at, gas, proposer,
                             time.time()))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def signed(self, window_start: int, attempt: int) -> tuple[bytes, bytes] | None:
        row = self.db.execute("SELECT digest, signature FROM batch_signed WHERE window_start=? AND attempt=?",
                              (window_start, attempt)).fetchone()
        return (bytes(row[0]), bytes(row[1])) if row else None

    def note_signed(self, window_start: int, attempt: int, digest: bytes, signature: bytes) -> bool:
        """False when another batch was recorded for this window and slot first."""
        return self.db.execute("INSERT OR IGNORE INTO batch_signed VALUES (?,?,?,?,?)",
                               (window_start, attempt, digest, signature, time.time())).rowcount == 1

    def total_gas(self) -> int:
        return int(self.db.execute("SELECT COALESCE(SUM(gas), 0) FROM batches").fetchone()[0])
