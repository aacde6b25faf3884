"""RFC 9457 problem documents for the node API: one stable `type` per kind of refusal.

`type` is ``https://frameledger.dev/problems/<code>``; the table of codes is in docs/NODES.md
("HTTP errors"). Clients branch on `type` (and `status`), never on `title` or `detail`.
"""

from __future__ import annotations

import json
from enum import Enum

from pydantic import BaseModel

PROBLEM_BASE = "https://frameledger.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemType(Enum):
    """code -> (status, title)"""

    BODY_INVALID = ("body-invalid", 422, "Request body is invalid")
    BODY_NOT_JSON = ("body-not-json", 400, "Request body is not UTF-8 JSON")
    BODY_TOO_LARGE = ("body-too-large", 413, "Request body is too large")
    PARAMS_INVALID = ("params-invalid", 422, "Path or query parameter is invalid")
    CAMERA_INVALID = ("camera-invalid", 400, "Camera reference is invalid")
    HOPS_OVER_LIMIT = ("hops-over-limit", 422, "Alarm hops exceed the hop limit")
    TOO_MANY_SEQS = ("too-many-seqs", 422, "Too many sequence numbers in one message")
    NOT_FOUND = ("not-found", 404, "Not found")
    FRAME_NOT_HELD = ("frame-not-held", 404, "Frame not held by this node")
    BLOCK_NOT_HELD = ("block-not-held", 404, "Block not held by this node")
    METHOD_NOT_ALLOWED = ("method-not-allowed", 405, "Method not allowed")
    PEER_AUTH_MISSING = ("peer-auth-missing", 401, "Peer authentication headers missing")
    PEER_AUTH_MALFORMED = ("peer-auth-malformed", 401, "Peer authentication headers malformed")
    PEER_AUTH_STALE = ("peer-auth-stale", 401, "Peer signature outside the time window")
    PEER_AUTH_SIGNATURE = ("peer-auth-signature", 401, "Peer signature invalid")
    PEER_AUTH_REPLAYED = ("peer-auth-replayed", 401, "Peer nonce already used")
    PEER_NOT_A_NODE = ("peer-not-a-node", 403, "Signer is not a consortium node")
    PEER_AUTH_BUSY = ("peer-auth-busy", 503, "Too many signed peer requests")
    BATCH_REFUSED = ("batch-refused", 409, "This node does not sign that batch")
    BATCH_MODE_OFF = ("batch-mode-off", 409, "This node does not anchor in batch mode")
    BUSY = ("busy", 503, "Too many requests in flight")
    HTTP_ERROR = ("http-error", 400, "Request refused")
    INTERNAL = ("internal", 500, "Internal error")

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def status(self) -> int:
        return self.value[1]

    @property
    def title(self) -> str:
        return self.value[2]

    @property
    def uri(self) -> str:
        return PROBLEM_BASE + self.code

    @classmethod
    def by_code(cls, code: str) -> "ProblemType":
        return next(p for p in cls if p.code == code)


class Problem(BaseModel):
    """The problem document (RFC 9457) every refusal of the node API carries."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict] | None = None  # validation failures only: loc, msg, type of each


class ProblemError(Exception):
    """Raised by a handler to answer with a problem document."""

    def __init__(self, kind: ProblemType, detail: str, status: int | None = None):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status or kind.status


def problem_body(kind: ProblemType, detail: str, status: int | None = None) -> bytes:
    doc = {"type": kind.uri, "title": kind.title, "status": status or kind.status, "detail": detail[:500]}
    return json.dumps(doc).encode()


def problem_asgi_messages(kind: ProblemType, detail: str, status: int | None = None) -> list[dict]:
    """The two ASGI send messages of a problem response, for middlewares that answer themselves."""
    body = problem_body(kind, detail, status)
    headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    return [{"type": "http.response.start", "status": status or kind.status, "headers": headers},
            {"type": "http.response.body", "body": body, "more_body": False}]


# Every route documents these, so clients (and schemathesis) know a refusal's shape.
PROBLEM_RESPONSES: dict[int | str, dict] = {
    "4XX": {"description": "Refused: a problem document", "model": Problem,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}},
    "5XX": {"description": "Server fault: a problem document", "model": Problem,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}},
}
