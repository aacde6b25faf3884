"""eth_call straight over HTTP, for the evidence path's large calls (issue 9).

A `verifyFrames` call carries ~100 kB of calldata (every leaf of a block). Through web3 and
requests each one cost ~1.5 ms of Python — JSON-encoding the 200 kB hex string, requests walking
the environment for proxies on every call — on the threads that ask the chain while the
self-check runs, so on this 2-core machine it was taken from the rules (the GIL). Here the body
is written by hand and sent on a keep-alive connection per thread.

Only for a plain ``http://`` `HTTPProvider` whose only request option is its timeout (the
project's own `chain.client.connect`): anything else (https, headers, auth, another provider)
is not handled here and the caller goes through web3. Every failure — a refused connection, a
status other than 200, a body that is not a JSON object — is ``None``: the caller asks again
through web3, whose errors say what it was.
"""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any
from urllib.parse import urlsplit

from web3 import HTTPProvider

MAX_ANSWER_BYTES = 1 << 20  # an eth_call's answer here is one word; anything larger goes the careful way


class RawEthCall:
    """eth_call ``{"to", "data"}`` at "latest" on one HTTP endpoint, a connection per thread."""

    def __init__(self, host: str, port: int, path: str, timeout: float) -> None:
        self._host, self._port, self._path, self._timeout = host, port, path or "/", timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []

    @classmethod
    def of(cls, provider: Any) -> "RawEthCall | None":
        """The raw caller for ``provider``, or None when it is not a plain http:// HTTPProvider."""
        if type(provider) is not HTTPProvider or not isinstance(provider.endpoint_uri, str):
            return None
        options = dict(provider._request_kwargs or {})
        timeout = options.pop("timeout", 30.0)
        url = urlsplit(provider.endpoint_uri)
        if options or url.scheme != "http" or url.hostname is None or url.username or url.query \
                or not isinstance(timeout, (int, float)):
            return None
        try:
            port = url.port or 80
        except ValueError:
            return None
        return cls(url.hostname, port, url.path, float(timeout))

    def call(self, to: str, data_hex: str) -> Any:
        """The JSON-RPC answer (a dict) to eth_call of ``data_hex`` ("0x…", the caller's request
        spelling) at ``to``, or None on any failure."""
        body = b'{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"to":"%s","data":"%s"},"latest"]}' % (
            to.encode("ascii"), data_hex.encode("ascii"))
        conn = self._connection()
        try:
            conn.request("POST", self._path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            raw = response.read(MAX_ANSWER_BYTES + 1)
            refused = response.status != 200 or len(raw) > MAX_ANSWER_BYTES
            if refused or response.will_close:
                conn.close()  # an unread rest, or the server's own close: the next call connects again
            if refused:
                return None
            answer = json.loads(raw)
        except (OSError, http.client.HTTPException, ValueError):
            conn.close()  # the next call connects again
            return None
        return answer if isinstance(answer, dict) else None

    def close(self) -> None:
        """Close every thread's connection (each reconnects on its next call)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def __del__(self) -> None:
        self.close()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn
