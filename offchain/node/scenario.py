"""The consortium scenario that `frameledger demo` runs and the integration tests assert on.

Three node processes (authority, bank, customer; quorum 2), four whitelisted cameras of two
members (two each, one group per member), real sample clips, and the faults of issue 3:

* node-bank loses 5% of camera 10.0.1.11's frames      → detected missing, repaired from peers (I5, I6)
* node-customer receives corrupt frames of 10.0.2.21  → integrity alarms, then repaired (I3, I6)
* camera 10.0.1.12 is cut off from every node         → the same alarm at every node: a risk
  for a few seconds                                      warning on chain (I9), the gap declared and
                                                         filled from 10.0.1.11, marked substituted (I7)
* an unknown camera 10.0.9.99 tries to join            → security alarms, nothing stored (I2)
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tqdm import tqdm

from ..camera.agent import CameraAgent
from ..chain.client import Signer
from ..core.batch import BatchManifest
from ..core.cid import cid_from_digest
from ..store.local import LocalStore
from ..camera.samples import sample_path, synthetic_clip
from ..camera.sources import FileSource
from ..core.block import camera_id
from .cluster import Cluster

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraPlan:
    ip: str
    sample: str
    owner_account: int | None  # None: not on the whitelist
    group: bytes
    faults: str = ""


@dataclass
class Scenario:
    work_dir: Path
    window_ms: int = 60_000
    seconds: int = 80  # capture seconds streamed per camera
    speed: float = 8.0
    cut_ms: tuple[int, int] = (20_000, 24_000)
    seed: int = 7
    node_settings: dict[str, Any] = field(default_factory=dict)
    cameras: tuple[CameraPlan, ...] = ()
    anchoring: str = "header"  # or "batch": one BatchLedger batch per window (the demo's mode)

    def __post_init__(self) -> None:
        if not self.cameras:
            a, b = self.cut_ms
            self.cameras = (
                CameraPlan("10.0.1.11", "vtest", 1, b"bank", "node-bank:drop=0.05"),
                CameraPlan("10.0.1.12", "bikes", 1, b"bank", f"*:cut={a}-{b}"),
                CameraPlan("10.0.2.21", "bikes", 2, b"customer", "node-customer:corrupt=0.03"),
                CameraPlan("10.0.2.22", "vtest", 2, b"customer"),
                CameraPlan("10.0.9.99", "synthetic", None, b"intruder"),
            )

    def settings(self) -> dict[str, Any]:
        base = {"window_ms": self.window_ms, "missing_wait_ms": 1000, "repair_deadline_ms": 6000,
                "idle_close_ms": 3000, "proposer_timeout_ms": 6000, "alarm_hold_ms": 2000, "store_fsync": "file",
                "anchoring": self.anchoring}
        base.update(self.node_settings)
        return base


class ScenarioRun:
    """Sets up the cluster, streams the cameras, waits until every window is final."""

    def __init__(self, scenario: Scenario, out=print):
        self.s = scenario
        self.out = out
        self.cluster = Cluster(scenario.work_dir, settings=scenario.settings())
        self.keys: dict[str, Ed25519PrivateKey] = {}
        self.agent_stats: dict[str, dict] = {}
        self.t0 = 0

    def setup(self) -> None:
        c = self.cluster
        c.start_chain()
        self.out(f"dev chain  : Anvil on {c.chain.rpc_url}; Consortium {c.deployment.consortium}, "
                 f"VideoLedger {c.deployment.video_ledger}")
        for cam in self.s.cameras:
            if cam.owner_account is not None:
                self.keys[cam.ip] = c.register_camera(cam.ip, cam.owner_account, cam.group)
            else:
                self.keys[cam.ip] = Ed25519PrivateKey.generate()  # an intruder with its own key
        c.seal_genesis()
        c.configure_nodes()
        c.start_nodes()
        self.out(f"consortium : {len(c.nodes)} node processes ({', '.join(n.name for n in c.nodes)}), quorum "
                 f"{c.consortium().quorum()}, {sum(1 for x in self.s.cameras if x.owner_account is not None)} "
                 f"whitelisted cameras, genesis sealed")

    def stream(self) -> None:
        now = int(time.time() * 1000)
        # Capture times are replayed as if recording had started a few windows ago, aligned to a
        # window, so block boundaries fall where a reader expects them.
        self.t0 = now - now % self.s.window_ms - 3 * self.s.window_ms
        nodes = {n.name: n.ingest for n in self.cluster.nodes}

        async def run_all() -> None:
            agents = {}
            for cam in self.s.cameras:
                source = FileSource(self.clip(cam.sample), start_ms=self.t0, loop=True)
                agents[cam.ip] = CameraAgent(cam.ip, self.keys[cam.ip], source, nodes, speed=self.s.speed,
                                             faults=cam.faults or None, seed=self.s.seed,
                                             max_duration_ms=self.s.seconds * 1000)
            results = await asyncio.gather(*(a.run() for a in agents.values()))
            for ip, stats in zip(agents, results):
                self.agent_stats[ip] = {name: st.as_dict() for name, st in stats.items()}

        started = time.monotonic()
        asyncio.run(run_all())
        self.out(f"cameras    : {len(self.s.cameras)} streams x {self.s.seconds}s of capture at {self.s.speed}x, "
                 f"sent in {time.monotonic() - started:.1f}s")

    def clip(self, sample: str) -> Path:
        """A real sample clip, or (for the intruder) a generated one, so that none of its bytes
        coincide with a whitelisted camera's frames in the content-addressed stores."""
        if sample == "synthetic":
            path = self.s.work_dir / "intruder.mp4"
            return path if path.exists() else synthetic_clip(path, seconds=4, fps=10, width=320, height=240, gop=20)
        return sample_path(sample)

    def expected_windows(self) -> int:
        return -(-self.s.seconds * 1000 // self.s.window_ms)

    def wait_final(self, timeout: float = 120.0, progress: bool = False) -> dict[str, list]:
        """Until every whitelisted camera has all its windows anchored and final, every node has
        attested (or disputed) each block, and no risk is active. Finality needs only the quorum;
        waiting for every node's verdict means every node has checked, and so holds, each frame.
        With ``progress`` a bar (stderr) counts the blocks final and judged by every node."""
        ledger = self.cluster.ledger(0)
        cams = [c for c in self.s.cameras if c.owner_account is not None]
        deadline = time.monotonic() + timeout
        bar = tqdm(total=len(cams) * self.expected_windows(), desc="blocks final, judged by every node",
                   unit="block", disable=not progress, leave=False)
        try:
            return self._wait_final(ledger, cams, deadline, bar)
        finally:
            bar.close()

    def _wait_final(self, ledger, cams, deadline: float, bar: tqdm) -> dict[str, list]:
        while True:
            done, blocks = True, {}
            for cam in cams:
                cid = camera_id(cam.ip)
                n = ledger.chain_length(cid)
                recs = [ledger.block_at(cid, h) for h in range(1, n + 1)]
                blocks[cam.ip] = recs
                everyone = all(r.attestations + r.disputes >= len(self.cluster.nodes) for r in recs)
                if (n < self.expected_windows() or not all(r.finalized for r in recs) or not everyone
                        or ledger.risk(cid)["active"]):
                    done = False
            settled = sum(1 for recs in blocks.values() for r in recs
                          if r.finalized and r.attestations + r.disputes >= len(self.cluster.nodes))
            bar.update(max(0, min(settled, bar.total) - bar.n))
            if done or time.monotonic() > deadline:
                return blocks
            time.sleep(0.5)

    def wait_batches_final(self, timeout: float = 120.0, progress: bool = False) -> list[tuple[Any, Any]]:
        """Batch mode: until every window of the stream is anchored as a batch holding a block of
        every whitelisted camera, every node has followed every batch, and no risk is active.
        Returns (BatchRecord, BatchManifest) of the stream's windows, in order."""
        c = self.cluster
        batches = c.deployment.batch_client(Signer(c.w3, c.keys[0]))
        ledger = c.ledger(0)
        store = LocalStore(c.nodes[0].config.data_dir / "store")
        cams = {camera_id(x.ip) for x in self.s.cameras if x.owner_account is not None}
        end = self.t0 + self.expected_windows() * self.s.window_ms
        deadline = time.monotonic() + timeout
        bar = tqdm(total=self.expected_windows(), desc="batches final, followed by every node", unit="batch",
                   disable=not progress, leave=False)
        out: list[tuple[Any, Any]] = []
        try:
            while True:
                recs = [batches.batch_at(i) for i in range(batches.batch_count())]
                out = []
                for rec in recs:
                    if self.t0 <= rec.window_start_ms < end:
                        try:
                            out.append((rec, BatchManifest.from_bytes(store.get(cid_from_digest(rec.manifest_digest)))))
                        except Exception:  # noqa: BLE001 - not in node 0's store yet: it has not followed it
                            pass
                bar.update(max(0, min(len(out), bar.total) - bar.n))
                followed = all(self.cluster.api(n, "/api/v1/status").get("batch", {}).get("batchesFollowed") == len(recs)
                               for n in self.cluster.nodes)
                complete = len(out) == self.expected_windows() and all(
                    {h.camera_id for h in m.headers} >= cams for _, m in out)
                risky = any(ledger.risk(cid)["active"] for cid in cams)
                if (complete and followed and not risky) or time.monotonic() > deadline:
                    return out
                time.sleep(0.5)
        finally:
            bar.close()

    def node_status(self) -> dict[str, dict]:
        return {n.name: self.cluster.api(n, "/api/v1/status") for n in self.cluster.nodes}

    def disputes(self) -> int:
        """Disputes on chain: VideoLedger `BlockDisputed` and, in batch mode, BatchLedger
        `BatchDisputed` (an honest run has none: every node holds what the blocks list)."""
        count = len(self.cluster.ledger(0).contract.events.BlockDisputed().get_logs(from_block=0))
        if self.cluster.deployment.batch_ledger:
            batches = self.cluster.deployment.batch_client(Signer(self.cluster.w3, self.cluster.keys[0]))
            count += len(batches.contract.events.BatchDisputed().get_logs(from_block=0))
        return count

    def risk_events(self) -> list[tuple[str, str]]:
        ledger = self.cluster.ledger(0).contract
        ips = {camera_id(c.ip): c.ip for c in self.s.cameras}
        out = []
        for name in ("RiskRaised", "RiskCleared"):
            for e in getattr(ledger.events, name)().get_logs(from_block=0):
                out.append((ips.get(bytes(e.args.cameraId), "?"), name, e.blockNumber))
        return sorted(out, key=lambda x: x[2])
