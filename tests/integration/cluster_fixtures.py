"""A consortium with one whitelisted camera, for the node integration tests."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from offchain.node.cluster import Cluster


@contextmanager
def one_camera_cluster(tmp_path, ip: str, owner: int, settings: dict[str, Any],
                       start: tuple[str, ...] | None = None) -> Iterator[tuple[Cluster, Any]]:
    """Anvil, the contracts, one whitelisted camera and the plan's node processes (all, or the
    named ones); stopped on exit."""
    cluster = Cluster(tmp_path, settings=settings)
    try:
        cluster.start_chain()
        key = cluster.register_camera(ip, owner, b"g")
        cluster.seal_genesis()
        cluster.configure_nodes()
        for node in cluster.nodes:
            if start is None or node.name in start:
                cluster.start_node(node)
        yield cluster, key
    finally:
        cluster.stop()
