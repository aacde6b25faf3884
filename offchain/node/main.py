"""`frameledger node --config FILE`: run one node process until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal

import uvicorn

from .api import build_app
from .config import NodeConfig
from .gctune import tune_for_a_long_running_node
from .node import Node

log = logging.getLogger(__name__)


async def serve(config: NodeConfig) -> None:
    node = Node(config)
    await node.start()
    server = uvicorn.Server(uvicorn.Config(build_app(node), host=config.api_host, port=config.api_port,
                                           log_level="warning", access_log=False, lifespan="off"))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: (node.stopping.set(), setattr(server, "should_exit", True)))
    tune_for_a_long_running_node()  # after start-up: its heap is frozen
    tasks = [asyncio.create_task(node.tick_forever(), name="tick")]
    if node.alarm_centre is not None:  # built by node.start() when config.alarm_centre is set
        tasks.append(asyncio.create_task(node.alarm_centre.run(node.stopping), name="alarm-centre"))
    # A line a supervisor can wait for: both ports are bound.
    print(f"READY {config.name} ingest={config.ingest_host}:{config.ingest_port} api={config.api_url}", flush=True)
    try:
        await server.serve()
    finally:
        node.stopping.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await node.stop()


def run(config_path: str) -> int:
    # `kill -USR1 <pid>` prints every thread's stack to the log: how to see a stuck node.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    config = NodeConfig.load(config_path)
    asyncio.run(serve(config))
    return 0
