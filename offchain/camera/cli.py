"""``frameledger camera ...``: run a camera agent, manage device keys.

    frameledger camera keygen --ip 10.0.0.1 --keystore keys/   # prints the public key (hex)
    frameledger camera pubkey --ip 10.0.0.1 --keystore keys/
    frameledger camera run --ip 10.0.0.1 --source sample:vtest --keystore keys/ \\
        --node bank=127.0.0.1:7001 --node customer=127.0.0.1:7002 \\
        --speed 4 --faults 'bank:drop=0.05;*:cut=30s-35s' --seed 7

`camera run` prints, per node, frames sent / acknowledged / unacknowledged / rejected (a table, or
JSON with ``--json``), and exits 1 when any node acknowledged none of the frames (e.g. it refused
the camera: not registered), with one line per such node on stderr; 0 otherwise (unacknowledged
frames are reported, not fatal: the nodes repair from each other). While it streams, a progress bar
per node (acknowledged of produced; sent, rejected, unacknowledged) is drawn on stderr when stderr
is a terminal and neither ``--json`` nor ``--no-progress`` is given.

``--duration S`` stops after S seconds of capture time (a live camera's, or a file's without
looping); ``--range-out FILE`` writes the capture times of the first and last video frame it
streamed (``FIRST LAST``, epoch ms; ``firstMs``/``lastMs`` in the JSON), the range to extract.

Live cameras (rtsp://, MJPEG over http:// — told from a recording by its multipart Content-Type)
reconnect with backoff unless ``--no-reconnect``; each outage is one ``warning:`` line and an entry
of ``outages`` in the JSON; once the camera is back it is also declared to the nodes, signed by the
device key (``declared`` in the JSON; the block's manifest carries it, docs/TRANSPORT.md). A camera that does not come back within ``--reconnect-s`` ends the run
with exit 1; a stream that breaks without reconnecting (bad MJPEG part, truncated stream) ends it
with exit 2, after the table of what was delivered; either way one ``error:`` line says why.

The keystore passphrase comes from FRAMELEDGER_KEYSTORE_PASSPHRASE (or --passphrase-env NAME).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_camera_commands"]


def _speed(text: str) -> float:
    if text.lower() in ("inf", "max", "0"):
        return math.inf
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("speed must be >= 0")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _node(text: str) -> tuple[str, tuple[str, int]]:
    from .agent import parse_node

    try:
        return parse_node(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _passphrase(args: argparse.Namespace) -> str | None:
    if getattr(args, "passphrase_env", None):
        value = os.environ.get(args.passphrase_env)
        if value is None:
            raise SystemExit(f"error: environment variable {args.passphrase_env} is not set")
        return value
    return None  # keystore falls back to FRAMELEDGER_KEYSTORE_PASSPHRASE


def _open_source(text: str, start_ms: int | None, loop: bool, *, reconnect: bool = True, timing: str = "auto",
                 fps: float | None = None, reconnect_s: float = 30.0) -> Any:
    """A file, a sample, a recording over HTTP, or a live camera (rtsp://, MJPEG over http://,
    told from a recording by the multipart Content-Type it answers with). Live cameras reconnect
    unless ``reconnect`` is off; ``loop`` repeats a file or recording."""
    from .sources import FileSource
    from .url_source import LIVE_SCHEMES, UrlSource, is_url

    if is_url(text):
        scheme = text.split(":", 1)[0].lower()
        if scheme in ("http", "https"):
            from .mjpeg import MjpegSource, http_content_type, is_multipart

            if is_multipart(http_content_type(text)):
                return MjpegSource(text, start_ms=start_ms, loop=loop or reconnect, fps=fps, timing=timing,
                                   reconnect_s=reconnect_s)
        live = scheme in LIVE_SCHEMES
        return UrlSource(text, start_ms=start_ms if start_ms is not None else int(time.time() * 1000),
                         loop=loop or (live and reconnect), timing=timing, reconnect_s=reconnect_s)
    now = start_ms if start_ms is not None else int(time.time() * 1000)
    if text.startswith("sample:"):
        from .samples import sample_path

        return FileSource(sample_path(text[len("sample:"):]), start_ms=now, loop=loop)
    return FileSource(text, start_ms=now, loop=loop)


def cmd_keygen(args: argparse.Namespace) -> int:
    from . import keystore as ks

    try:
        if args.rotate:
            key = ks.rotate_key(args.keystore, args.ip, _passphrase(args))
        else:
            key = ks.create_key(args.keystore, args.ip, _passphrase(args))
    except ks.KeystoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(ks.public_key_bytes(key).hex())
    return 0


def cmd_pubkey(args: argparse.Namespace) -> int:
    from . import keystore as ks

    try:
        key = ks.load_key(args.keystore, args.ip, _passphrase(args))
    except ks.KeystoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(ks.public_key_bytes(key).hex())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from . import keystore as ks
    from .agent import CameraAgent
    from .faults import FaultInjector, FaultSpecError

    nodes: dict[str, tuple[str, int]] = {}
    for name, addr in args.node:
        if name in nodes:
            print(f"error: node {name} given twice", file=sys.stderr)
            return 2
        nodes[name] = addr
    if args.keystore:
        try:
            key = ks.load_key(args.keystore, args.ip, _passphrase(args))
        except ks.KeyNotFound as exc:
            print(f"error: {exc}; create it with: frameledger camera keygen --ip {args.ip} "
                  f"--keystore {args.keystore}", file=sys.stderr)
            return 2
        except ks.KeystoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        print(f"warning: no --keystore, using a throwaway device key {ks.public_key_bytes(key).hex()} "
              "(nodes will reject it unless it is on the whitelist)", file=sys.stderr)
    faults_text = args.faults
    if faults_text and faults_text.startswith("@"):
        faults_text = Path(faults_text[1:]).read_text()
    try:
        injector = FaultInjector(faults_text, seed=args.seed)
        injector.check_nodes(list(nodes))
    except FaultSpecError as exc:
        print(f"error: --faults: {exc}", file=sys.stderr)
        return 2
    loop_seconds = args.loop_seconds
    duration_s = loop_seconds if loop_seconds is not None else args.duration
    try:
        source = _open_source(args.source, args.start_ms, loop=loop_seconds is not None, reconnect=args.reconnect,
                              timing=args.timing, fps=args.fps, reconnect_s=args.reconnect_s)
    except (FileNotFoundError, OSError, KeyError, ValueError) as exc:
        print(f"error: --source {args.source}: {exc}", file=sys.stderr)
        return 2
    source = _Timed(source)
    agent = CameraAgent(
        args.ip, key, source, nodes, speed=args.speed, faults=injector,
        max_frames=args.max_frames,
        max_duration_ms=int(duration_s * 1000) if duration_s is not None else None,
        queue_size=args.queue_size, end_timeout=args.ack_timeout, unacked_frames=args.unacked_frames,
    )
    speed = "max" if math.isinf(args.speed) else f"{args.speed:g}x"
    print(f"camera {args.ip}: {source!r} -> {', '.join(f'{n}={h}:{p}' for n, (h, p) in nodes.items())} "
          f"at {speed}" + (f", faults {injector.spec} (seed {args.seed})" if injector.spec else ""),
          file=sys.stderr)
    show_progress = args.progress and not args.json and sys.stderr.isatty()

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, agent.stop)
            except (NotImplementedError, RuntimeError):
                pass
        if not show_progress:
            return await agent.run()
        return await _with_progress(agent, args.max_frames)

    started = time.monotonic()
    from .sources import SourceError

    broke: str | None = None
    try:
        stats = asyncio.run(main())
    except SourceError as exc:
        if not agent.frames_produced:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        stats, broke = agent.stats, str(exc)  # the stream broke mid-way: say what was delivered, then why
    return _report(args, agent, source, str(injector.spec), stats, time.monotonic() - started, broke)


def _report(args: argparse.Namespace, agent: Any, source: Any, faults: str, stats: dict[str, Any], elapsed: float,
            broke: str | None) -> int:
    """The table or JSON of what each node did, the source's outages, and the exit code."""
    from .agent import stats_table

    # The source reads ahead of the agent: only outages before the last frame sent were part of this run.
    outages = [o for o in getattr(source, "outages", []) if o.after_seq < agent.last_seq
               or (o.to_ms is None and o.after_seq == agent.last_seq)]
    gone: str | None = getattr(source, "failure", None)  # a live camera that did not come back
    failure = broke or gone
    first_ms, last_ms = (source.first_ms, source.capture_ms(agent.last_seq)) if agent.last_seq >= 0 else (None, None)
    doc = {"camera": args.ip, "frames": agent.frames_produced, "lastSeq": agent.last_seq,
           "firstMs": first_ms, "lastMs": last_ms,
           "seconds": round(elapsed, 3), "faults": faults, "seed": args.seed,
           "timing": list(getattr(source, "session_timing", [])), "outages": [o.as_dict() for o in outages],
           "declared": list(getattr(agent, "declared", [])), "sourceFailure": failure, "nodes": {n: s.as_dict() for n, s in stats.items()}}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        captured = f", captured {first_ms}-{last_ms} ms" if last_ms is not None else ""
        print(stats_table(stats, title=f"camera {args.ip}: {agent.frames_produced} frames "
                                       f"(last seq {agent.last_seq}{captured}) in {elapsed:.1f} s"))
    if args.stats_json:
        Path(args.stats_json).write_text(json.dumps(doc, indent=2))
    if args.range_out and first_ms is not None and last_ms is not None:
        Path(args.range_out).write_text(f"{first_ms} {last_ms}\n")
    declared = {(d["afterSeq"], d["fromMs"]) for d in getattr(agent, "declared", [])}
    for o in outages:
        back = f"back at {o.to_ms} ({(o.to_ms - o.from_ms) / 1000:.1f} s later)" if o.to_ms is not None else "never back"
        told = "; declared to the nodes (signed)" if (o.after_seq, o.from_ms) in declared else ""
        print(f"warning: camera lost after seq {o.after_seq} (captured {o.from_ms}), {back}: {o.reason}{told}",
              file=sys.stderr)
    verdict = _verdict(stats)
    if failure:
        print(f"error: --source: {failure}", file=sys.stderr)
        return 2 if broke else max(verdict, 1)
    return verdict


class _Timed:
    """The source, remembering the capture times of the last video frames it gave the agent, so
    the run can report the capture time of the last frame it streamed (the agent reads a few
    frames ahead of what it sends: they are kept, bounded, until the run says which was last)."""

    _KEPT = 1024  # > the agent's read-ahead (one batch of 32 plus the audio between)

    def __init__(self, source: Any) -> None:
        self._source = source
        self._times: dict[int, int] = {}
        self.first_ms: int | None = None  # the first video frame's (the agent sends from the first on)

    def __getattr__(self, name: str) -> Any:  # codec, outages, session_timing, failure, …: the source's
        if name == "_source":
            raise AttributeError(name)
        return getattr(self._source, name)

    def __repr__(self) -> str:
        return repr(self._source)

    def frames(self) -> Any:
        from ..core.block import track_of

        inner = self._source.frames()
        try:
            for frame in inner:
                if not track_of(frame.seq):
                    if self.first_ms is None:
                        self.first_ms = frame.timestamp_ms
                    self._times[frame.seq] = frame.timestamp_ms
                    if len(self._times) > self._KEPT:
                        del self._times[next(iter(self._times))]  # the oldest: dicts keep insertion order
                yield frame
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()

    def capture_ms(self, seq: int) -> int | None:
        return self._times.get(seq)


async def _with_progress(agent: Any, total: int | None) -> dict[str, Any]:
    """Run the agent with one progress bar per node on stderr: frames acknowledged of those
    produced, with sent / rejected / unacknowledged beside it, refreshed twice a second."""
    from tqdm import tqdm

    task = asyncio.ensure_future(agent.run())
    bars: dict[str, Any] = {}
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            for position, (name, s) in enumerate(agent.stats.items()):
                bar = bars.get(name)
                if bar is None:
                    bar = bars[name] = tqdm(total=total, desc=f"{name} acked", unit="frame", position=position,
                                            leave=False, file=sys.stderr, dynamic_ncols=True)
                if total is None:
                    bar.total = max(s.frames, 1)
                bar.n = s.acked
                bar.set_postfix_str(f"sent {s.sent} rejected {s.rejected} unacked {s.unacked}", refresh=False)
                bar.refresh()
    finally:
        for bar in bars.values():
            bar.close()
        if not task.done():
            task.cancel()
    return task.result()  # type: ignore[no-any-return]


def _verdict(stats: dict[str, Any]) -> int:
    """1 when some node acknowledged nothing (or rejected everything) of a non-empty stream."""
    failed = 0
    for name, s in stats.items():
        if s.unacked_seqs:
            print(f"warning: node {name} did not acknowledge {s.unacked} frames: seqs {s.unacked_seqs}", file=sys.stderr)
        if s.frames and s.acked == 0:
            why = (f"rejected every frame ({s.rejected_reason})" if s.rejected_reason or s.rejected >= s.frames
                   else f"acknowledged none of {s.frames} frames ({s.last_error or 'no acknowledgement'})")
            print(f"error: node {name} {why}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def add_camera_commands(subparsers: Any) -> None:
    """Register ``camera run|keygen|pubkey`` on the top-level ``frameledger`` subparsers."""
    camera = subparsers.add_parser("camera", help="camera agent: stream signed frames to the nodes; device keys")
    sub = camera.add_subparsers(dest="camera_command", required=True)

    def keystore_args(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument("--ip", required=True, help="camera IP (its identity on chain)")
        p.add_argument("--keystore", required=required, metavar="DIR",
                       help="encrypted keystore directory (one <ip>.key per camera)")
        p.add_argument("--passphrase-env", metavar="NAME",
                       help="read the keystore passphrase from this variable "
                            "(default FRAMELEDGER_KEYSTORE_PASSPHRASE)")

    run = sub.add_parser("run", help="stream a file or URL to every node as signed frame packets",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="fault spec: see `python -m pydoc offchain.camera.faults`, e.g.\n"
                                "  'node-bank:drop=0.05;node-customer:corrupt=0.02;*:cut=30000-35000'")
    keystore_args(run, required=False)
    run.add_argument("--source", required=True, metavar="PATH|URL|sample:NAME",
                     help="video file, rtsp:// or http(s):// URL, or sample:vtest / sample:bikes")
    run.add_argument("--node", action="append", type=_node, required=True, metavar="NAME=HOST:PORT",
                     help="a node's ingest address (repeat for every node)")
    run.add_argument("--speed", type=_speed, default=1.0,
                     help="pace = capture time / speed (default 1 = real time; 0 or inf = as fast as possible)")
    run.add_argument("--faults", metavar="SPEC", help="fault spec string, JSON, or @file")
    run.add_argument("--seed", type=int, default=0, help="fault seed (same seed, same faults; default 0)")
    run.add_argument("--start-ms", type=int, metavar="MS",
                     help="capture time of the first frame, epoch ms, where the source has no clock of its own "
                          "(default now)")
    bound = run.add_mutually_exclusive_group()
    bound.add_argument("--loop-seconds", type=float, metavar="S",
                       help="loop the source and stop after S seconds of capture time")
    bound.add_argument("--duration", type=_positive, metavar="S",
                       help="stop after S seconds of capture time (a live camera's, or a file's, without looping)")
    run.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    run.add_argument("--queue-size", type=int, default=256, help="per-node queue, frames (default 256)")
    run.add_argument("--ack-timeout", type=_positive, default=10.0, metavar="S",
                     help="at the end, wait up to S seconds for every node's acknowledgements (default 10)")
    run.add_argument("--unacked-frames", type=_count, default=2048, metavar="N",
                     help="per node, frames kept for retransmission until acknowledged; "
                          "the oldest are dropped and counted beyond N (default 2048)")
    run.add_argument("--stats-json", metavar="PATH", help="also write the per-node stats as JSON")
    run.add_argument("--range-out", metavar="PATH",
                     help="write the capture times (epoch ms) of the first and last video frame streamed, "
                          "'FIRST LAST' on one line, for the extract that follows (`read FROM TO < PATH`)")
    run.add_argument("--json", action="store_true", help="print the stats as JSON on stdout instead of a table "
                                                       "(no progress bars)")
    run.add_argument("--no-progress", dest="progress", action="store_false",
                     help="no progress bars (they are drawn on stderr only when it is a terminal)")
    run.add_argument("--no-reconnect", dest="reconnect", action="store_false",
                     help="a live camera (rtsp://, MJPEG over http://) that ends or breaks ends the run "
                          "(default: reconnect with backoff, the outage declared)")
    run.add_argument("--reconnect-s", type=_positive, default=30.0, metavar="S",
                     help="give a lost live camera up after S seconds of failed reconnects (default 30)")
    run.add_argument("--timing", choices=("auto", "agent"), default="auto",
                     help="capture times: auto = the camera's own clock where it sends one (RTSP's RTCP sender "
                          "reports, MJPEG's X-Timestamp) and it is within 5 min of ours, else the agent's clock; "
                          "agent = always the agent's clock (default auto)")
    run.add_argument("--fps", type=_positive, metavar="F",
                     help="frame rate of an MJPEG camera (default: measured over its first frames)")
    run.set_defaults(func=cmd_run)

    keygen = sub.add_parser("keygen", help="create (or --rotate) a camera's device key; prints the public key hex")
    keystore_args(keygen, required=True)
    keygen.add_argument("--rotate", action="store_true", help="replace the key, keeping the old one as <ip>.key.<n>")
    keygen.set_defaults(func=cmd_keygen)

    pubkey = sub.add_parser("pubkey", help="print a camera's device public key (hex)")
    keystore_args(pubkey, required=True)
    pubkey.set_defaults(func=cmd_pubkey)
