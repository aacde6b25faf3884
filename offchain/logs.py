"""Structured logs: one line per event, `key=value` pairs (or JSON with FRAMELEDGER_LOG_JSON=1),
with the `extra={...}` fields of each call, so a log line can be grepped and parsed alike."""

from __future__ import annotations

import json
import logging
import os
import sys

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class StructuredFormatter(logging.Formatter):
    def __init__(self, as_json: bool):
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        base = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            base["exc"] = self.formatException(record.exc_info)
        if self.as_json:
            return json.dumps({**base, **fields}, default=str)
        extras = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{base['level']:<7} {record.name}: {base['msg']}" + (f"  {extras}" if extras else "")
        return line + ("\n" + base["exc"] if "exc" in base else "")


def setup_logging(level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StructuredFormatter(os.environ.get("FRAMELEDGER_LOG_JSON") == "1"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("FRAMELEDGER_LOG_LEVEL", "WARNING")).upper())
    # Per-request lines from the HTTP client drown the node's own events.
    for noisy in ("httpx", "httpcore", "web3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
