"""The camera device keys a verifier checks declared outages with (issue 10), read from the chain.

A manifest's ``declaredOutages`` are the camera's own signed words (`offchain.core.outages`); their
signatures are checked under the device keys the trusted consortium set for the camera: the key of
its registration and of each rotation (``CameraRegistered`` / ``CameraKeyRotated`` logs, one query
each). A key retired by a rotation still vouches for what the camera signed before. Read only when
a presented manifest carries a declaration, so other evidence costs no extra round trip.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..core.block import Manifest

__all__ = ["device_keys", "carries_declarations"]


def device_keys(consortium: Any, camera: bytes) -> tuple[bytes, ...]:
    """Every device key the chain set for `camera` (web3 contract of the Consortium), oldest first."""
    keys: list[bytes] = []
    for event in (consortium.events.CameraRegistered, consortium.events.CameraKeyRotated):
        for log in event().get_logs(from_block=0, argument_filters={"cameraId": camera}):
            keys.append(bytes(log["args"]["devicePublicKey"]))
    return tuple(dict.fromkeys(keys))


def carries_declarations(manifests: Iterable[Manifest | None]) -> bool:
    return any(m is not None and m.declared_outages for m in manifests)
