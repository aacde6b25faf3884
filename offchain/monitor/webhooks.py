"""Deliver monitor events to webhooks: signed, retried, in order, before the checkpoint moves.

Each event is POSTed alone as JSON (the line the monitor writes) with
`X-FrameLedger-Signature: sha256=<hex HMAC-SHA256(secret, body)>` and
`X-FrameLedger-Event-Id: <transactionHash>:<logIndex>:<blockHash>[:notify:<sessionId>][:removed]`
(a notification line carries its cause's position and the session it is for). A 2xx answer is a
delivery; anything else (or no answer) is retried with exponential backoff, `attempts` times in
all. When a webhook still refuses, the monitor stops before its checkpoint moves, so the event
is delivered again on restart: at least once, in order; receivers dedupe on the event id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import httpx

log = logging.getLogger(__name__)


class DeliveryFailed(RuntimeError):
    """A webhook refused an event `attempts` times."""


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def event_id(event: dict[str, Any]) -> str:
    base = f"{event['transactionHash']}:{event['logIndex']}:{event['blockHash']}"
    if "notification" in event:  # one per session its cause concerns
        base += f":notify:{event['sessionId']}"
    return base + (":removed" if event["removed"] else "")


@dataclass
class Webhooks:
    urls: list[str]
    secret: bytes
    attempts: int = 5
    backoff_s: float = 0.5
    timeout_s: float = 5.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self._client = httpx.Client(timeout=self.timeout_s)

    def deliver(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            body = json.dumps(event, sort_keys=True).encode()
            headers = {"Content-Type": "application/json", "X-FrameLedger-Signature": signature(self.secret, body),
                       "X-FrameLedger-Event-Id": event_id(event)}
            for url in self.urls:
                self._post(url, body, headers)

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                status = self._client.post(url, content=body, headers=headers).status_code
                if 200 <= status < 300:
                    return
                reason = f"HTTP {status}"
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            log.warning("webhook %s refused (%s), attempt %d/%d", url, reason, attempt, self.attempts)
            if attempt < self.attempts:
                self.sleep(delay)
                delay *= 2
        raise DeliveryFailed(f"webhook {url} refused an event {self.attempts} times ({reason})")

    def close(self) -> None:
        self._client.close()
