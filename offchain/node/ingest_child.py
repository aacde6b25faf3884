"""An ingest process's entry point (`offchain.node.ingest_procs`, config ``ingest_processes``):
started by the node's main process with one end of a Unix socket pair, it reads its config
from the pair, builds its own `Node` parts (state, store, registry, pipeline) and serves the
camera connections handed to it. A module of its own so that `ingest_procs` (imported by
`node`) never needs `node` at run time."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import time

from ..logs import setup_logging
from .config import NodeConfig
from .gctune import tune_for_a_long_running_node
from .ingest_procs import _MAX_MSG, _Worker, _decode
from .node import Node
from .pipeline import _watch_parent

log = logging.getLogger(__name__)


async def _serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    first = sock.recv(_MAX_MSG)  # blocking: the config comes first
    if not first:
        return
    head, _ = _decode(first)
    config = NodeConfig.from_dict(head["config"], env={})
    node = Node(config)
    await asyncio.to_thread(node.registry.refresh, True)
    worker = _Worker(name=node.name, ingest=node.ingest, registry=node.registry, committer=node.committer,
                     budget=node.budget, storage=node.storage, sock=sock)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.done.set)
    tasks = [asyncio.ensure_future(worker.flush_forever(int(head.get("index", 0)))), asyncio.ensure_future(worker.watch_forever())]
    tune_for_a_long_running_node()
    worker.link.send({"t": "ready"})
    log.info("ingest process ready", extra={"node": config.name, "index": head.get("index"), "pid": os.getpid()})
    await worker.done.wait()
    for task in tasks:
        task.cancel()
    await worker.stop()
    # what is still in the outbox (the last report) goes before the pair closes
    deadline = time.monotonic() + 2.0
    while worker.link.outbox and not worker.link.closed and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    worker.link.close()
    node.state.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m offchain.node.ingest_child")
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--parent", type=int, default=0)
    args = ap.parse_args(argv)
    setup_logging()
    if args.parent:
        _watch_parent(args.parent)  # ends with the node's main process, even after its kill -9
    asyncio.run(_serve(args.fd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
