"""WebSocket `eth_subscribe` (newHeads, and logs of the deployed contracts) as the monitor's wake-up.

A notification only says "look now": the monitor then runs its ordinary step, which reads
`eth_getLogs` from the checkpoint up to `head - confirmations` (the backfill) and checks the
remembered block hashes first. So the exactly-once and reorg rules are the polling monitor's,
unchanged, and a missed or duplicated notification costs nothing but latency: pushed logs are
never written as they arrive (they may be unconfirmed, or dropped by a reorg a moment later).

Besu serves WebSocket on its own port (`--rpc-ws-enabled`, 8546 by default); Anvil on the same
port as HTTP. When the socket cannot be opened or drops, the monitor goes on polling every
`poll_s` and tries to subscribe again every `retry_s`; a new subscription triggers a step at once
(what happened while it was down is backfilled like anything else).

Bounded: messages above `max_message` bytes close the connection (the peer is then treated as
down); each wake-up drains at most `max_drain` queued notifications.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

log = logging.getLogger(__name__)


class Subscription:
    def __init__(self, url: str, addresses: list[str], *, open_timeout_s: float = 5.0, retry_s: float = 10.0,
                 max_message: int = 1 << 20, max_drain: int = 10_000):
        self.url = url
        self.addresses = addresses
        self.open_timeout_s = open_timeout_s
        self.retry_s = retry_s
        self.max_message = max_message
        self.max_drain = max_drain
        self._ws: ClientConnection | None = None
        self._next_try = 0.0
        self.subscriptions: list[str] = []
        self.notifications = 0  # received since start (for tests and logs)

    def open(self) -> bool:
        """Subscribe; False (and polling meanwhile) when the endpoint does not answer."""
        self._next_try = time.monotonic() + self.retry_s
        try:
            ws = connect(self.url, open_timeout=self.open_timeout_s, max_size=self.max_message)
        except (OSError, WebSocketException, TimeoutError) as exc:
            log.warning("websocket unavailable, polling", extra={"url": self.url, "error": str(exc)[:200]})
            return False
        try:
            self.subscriptions = [self._subscribe(ws, 1, ["newHeads"]),
                                  self._subscribe(ws, 2, ["logs", {"address": self.addresses}])]
        except (OSError, WebSocketException, TimeoutError, ValueError) as exc:
            log.warning("eth_subscribe refused, polling", extra={"url": self.url, "error": str(exc)[:200]})
            ws.close()
            return False
        self._ws = ws
        log.info("subscribed over websocket", extra={"url": self.url, "subscriptions": len(self.subscriptions)})
        return True

    def _subscribe(self, ws: ClientConnection, request_id: int, params: list[Any]) -> str:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "eth_subscribe", "params": params}))
        deadline = time.monotonic() + self.open_timeout_s
        while True:  # a notification of the first subscription may come before the second's answer
            msg = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if isinstance(msg, dict) and msg.get("id") == request_id:
                if not isinstance(msg.get("result"), str):
                    raise ValueError(f"eth_subscribe {params[0]}: {str(msg.get('error'))[:200]}")
                return str(msg["result"])

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` s; True when the monitor should look: the chain has news, a
        subscription was just made (the gap is backfilled), or there is no socket (polling).
        False when the socket was quiet."""
        if self._ws is None:
            if time.monotonic() >= self._next_try and self.open():
                return True
            time.sleep(timeout)
            return True
        try:
            self._ws.recv(timeout=timeout)
        except TimeoutError:
            return False
        except (OSError, WebSocketException) as exc:
            self._lost(exc)
            return True  # look once now: the drop may hide news
        self.notifications += 1
        for _ in range(self.max_drain):  # one step covers every notification queued so far
            try:
                self._ws.recv(timeout=0)
            except TimeoutError:
                break
            except (OSError, WebSocketException) as exc:
                self._lost(exc)
                break
            self.notifications += 1
        return True

    def _lost(self, exc: BaseException) -> None:
        log.warning("websocket lost, polling until it is back", extra={"url": self.url, "error": str(exc)[:200]})
        self.close()
        self._next_try = time.monotonic() + self.retry_s

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except (OSError, WebSocketException):
                pass
            self._ws = None

    @property
    def connected(self) -> bool:
        return self._ws is not None
