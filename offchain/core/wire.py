"""Camera ↔ node wire framing: one persistent TCP connection per (camera, node).

Every message on the connection, in both directions, is framed as

    u32 big-endian length | body

Camera → node bodies:

* a frame packet (``packet.MAGIC`` = ``b"FLP1"``, see ``offchain.core.packet``);
* a **signed control message** (format 2): ``b"FLC2" | signature (64) | JSON``, where the JSON is
  a UTF-8 object with a string ``"type"`` and ``"camera"`` (canonical: sorted keys, no spaces)
  and the signature is the camera's Ed25519 device signature over
  ``CONTROL_SIGNING_DOMAIN ‖ JSON``. Every control message carries the ``"nonce"`` of the
  node's challenge on that connection, so it cannot be replayed on another connection:

  - ``{"type":"hello","camera":ip,"codec":CodecConfig.to_dict()|null,"nonce":hex,"ts":ms
    [,"firstSeq":N]}`` — the first message on every connection (also after a reconnect);
  - ``{"type":"end","camera":ip,"lastSeq":N,"nonce":hex,"ts":ms[,"trackLastSeqs":{"1":M}]}`` — at
    the end of a stream (``N`` is the last sequence number of the video track the camera produced,
    -1 if none; ``M`` the last of its audio track, when it has one: ``core.block.track_seq``);
  - ``{"type":"outage","camera":ip,"afterSeq":N,"fromMs":t1,"toMs":t2,"reason":text,"ts":ms}`` —
    a declared outage (issue 10): the live source lost the camera after frame ``N`` (captured at
    ``t1``) and had it back at ``t2`` (the capture time of the next frame). It carries **no
    nonce**: the same signed bytes go to every node (and into the manifest of the block whose
    window holds ``t2``), so every copy is identical; a replay repeats a fact and is idempotent.
    Bounds and their checks: ``core.outages``.

  A camera with audio declares it in the hello's codec (``"codec": {..., "audio": {...}}``): its
  audio packets are FLP1 packets like the video's, numbered in the audio track's namespace.

  Format 1 (``b"FLC1"`` + JSON, unsigned) is no longer believed by nodes: it is refused with a
  security alarm and changes nothing. `control_message` / `parse_control` still build and read
  it for tools that need an unsigned marker on a private link (the transport bench).

Node → camera bodies (``b"FLN1"`` + UTF-8 JSON, unsigned: they only steer the camera's
retransmission, never evidence):

* ``{"type":"challenge","nonce":hex,"node":name}`` — first thing a node writes on a connection;
* ``{"type":"ack","camera":ip,"upTo":N,"ranges":[[a,b],...]}`` — every seq ≤ ``N`` of this
  camera's stream (from its first seq), and every seq in the listed ranges (at most
  `MAX_ACK_RANGES`, inclusive), is durable at the node (its row committed). Cumulative: a later
  ack never takes anything back;
* ``{"type":"reject","reason":RejectReason,"detail":str[,"seq":N]}`` — the node refuses the
  hello (camera not on the whitelist, bad signature, ...) or one frame; after a refused hello
  the node closes the connection.

Everything here is pure (no I/O) except the small `read_messages` convenience for asyncio streams.

Limits: a body is at most `MAX_MESSAGE_BYTES` = 16 MiB (the largest frame payload, see
``packet.MAX_FRAME_BYTES``) + 4 KiB (packet header and slack); a control or node message at most
`MAX_CONTROL_BYTES` = 64 KiB. A larger declared length means the stream is not ours or is out
of sync; `MessageReader` raises `MessageTooLarge` and the connection should be closed, since
there is no way to resynchronise a length-prefixed stream. `MessageReader.wanted` tells a reader
how many bytes complete the current message, so an unfinished message never holds more memory
than its declared size.
"""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import ed25519
from .packet import MAGIC as PACKET_MAGIC

__all__ = [
    "CONTROL_MAGIC",
    "CONTROL_SIGNING_DOMAIN",
    "ControlError",
    "MAX_ACK_RANGES",
    "MAX_CONTROL_BYTES",
    "MAX_MESSAGE_BYTES",
    "NODE_MAGIC",
    "NodeMessage",
    "RejectReason",
    "SIGNED_CONTROL_MAGIC",
    "SignedControl",
    "ack_message",
    "codec_proof",
    "verify_codec_proof",
    "challenge_message",
    "is_node_message",
    "is_signed_control",
    "parse_node_message",
    "parse_signed_control",
    "reject_message",
    "signed_control",
    "MessageReader",
    "MessageTooLarge",
    "PACKET_MAGIC",
    "TruncatedStream",
    "WireError",
    "control_message",
    "end_message",
    "outage_message",
    "OUTAGE",
    "MAX_OUTAGE_REASON",
    "frame_message",
    "hello_message",
    "is_control",
    "is_packet",
    "parse_control",
    "read_messages",
]

CONTROL_MAGIC = b"FLC1"          # format 1: unsigned, refused by nodes
SIGNED_CONTROL_MAGIC = b"FLC2"   # format 2: signed by the device key
NODE_MAGIC = b"FLN1"             # node -> camera
CONTROL_SIGNING_DOMAIN = b"frameledger.control.v2"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024 + 4 * 1024
MAX_CONTROL_BYTES = 64 * 1024
MAX_ACK_RANGES = 64
_SIG = 64
_LEN = struct.Struct(">I")


class WireError(ValueError):
    """Base for every framing or control-message error."""


class MessageTooLarge(WireError):
    """A length prefix above the limit: the peer is not speaking this protocol or is out of sync."""


class TruncatedStream(WireError):
    """The connection ended in the middle of a message."""


class ControlError(WireError):
    """A body that claims to be a control message but is not valid FLC1 JSON."""


def frame_message(body: bytes | bytearray | memoryview, *, max_size: int = MAX_MESSAGE_BYTES) -> bytes:
    """Length-prefix one body for the wire."""
    size = len(body)
    if size > max_size:
        raise MessageTooLarge(f"message of {size} bytes exceeds the {max_size}-byte limit")
    return _LEN.pack(size) + bytes(body)


class MessageReader:
    """Incremental decoder: feed whatever bytes arrived, get back the complete bodies.

    ``feed`` buffers the bytes immediately and returns an iterator over every body that is now
    complete, in order; iterate it fully (a ``for`` loop does). A length prefix above
    ``max_size`` raises `MessageTooLarge` while iterating, after the complete bodies before it
    were yielded. At end of stream call `finish`, which raises `TruncatedStream` if a partial
    message is left.

        reader = MessageReader()
        while chunk := await stream.read(65536):
            for body in reader.feed(chunk):
                handle(body)
        reader.finish()
    """

    def __init__(self, max_size: int = MAX_MESSAGE_BYTES) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._pos = 0
        self._failed: MessageTooLarge | None = None
        self.messages = 0
        self.bytes = 0

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a complete message."""
        return len(self._buf) - self._pos

    def wanted(self) -> int:
        """Bytes that complete the length prefix or the message under way (at least 1): read no
        more than this, and an unfinished message holds at most its declared size."""
        have = len(self._buf) - self._pos
        if have < _LEN.size:
            return _LEN.size - have
        size: int = _LEN.unpack_from(self._buf, self._pos)[0]
        return max(1, min(size, self.max_size) + _LEN.size - have)

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        if self._failed is not None:
            raise self._failed
        if data:
            self._buf += data
            self.bytes += len(data)
        return self._drain()

    def _drain(self) -> Iterator[bytes]:
        buf = self._buf
        while True:
            if self._failed is not None:
                raise self._failed
            pos = self._pos
            if len(buf) - pos < _LEN.size:
                break
            (size,) = _LEN.unpack_from(buf, pos)
            if size > self.max_size:
                self._failed = MessageTooLarge(
                    f"incoming message declares {size} bytes, above the {self.max_size}-byte limit "
                    f"(after {self.messages} messages); the stream cannot be resynchronised")
                raise self._failed
            end = pos + _LEN.size + size
            if len(buf) < end:
                break
            body = bytes(buf[pos + _LEN.size : end])
            self._pos = end
            self.messages += 1
            yield body
        if self._pos:  # deleting a bytearray's head is cheap (CPython moves its start)
            del buf[: self._pos]
            self._pos = 0

    def finish(self) -> None:
        """Call at end of stream: a partial message left in the buffer is an error."""
        if self._failed is not None:
            raise self._failed
        if self.pending:
            raise TruncatedStream(f"connection closed with {self.pending} bytes of an incomplete message")


async def read_messages(stream: Any, *, max_size: int = MAX_MESSAGE_BYTES,
                        chunk_size: int = 256 * 1024) -> AsyncIterator[bytes]:
    """Yield bodies from an ``asyncio.StreamReader`` until EOF (raises `TruncatedStream` if the
    peer stopped mid-message, `MessageTooLarge` on an oversized prefix)."""
    reader = MessageReader(max_size)
    while True:
        chunk = await stream.read(chunk_size)
        if not chunk:
            reader.finish()
            return
        for body in reader.feed(chunk):
            yield body


def is_packet(body: bytes) -> bool:
    return body[:4] == PACKET_MAGIC


def is_control(body: bytes) -> bool:
    """Any camera control message, signed (FLC2) or the refused unsigned format 1 (FLC1)."""
    return body[:4] in (CONTROL_MAGIC, SIGNED_CONTROL_MAGIC)


def is_signed_control(body: bytes) -> bool:
    return body[:4] == SIGNED_CONTROL_MAGIC


def is_node_message(body: bytes) -> bool:
    return body[:4] == NODE_MAGIC


def control_message(message: dict[str, Any]) -> bytes:
    """Body of a control message (not yet framed: pass it to `frame_message`)."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ControlError("a control message is a dict with a string 'type'")
    return CONTROL_MAGIC + json.dumps(message, separators=(",", ":"), ensure_ascii=False,
                                      sort_keys=True).encode("utf-8")


def parse_control(body: bytes) -> dict[str, Any]:
    """The JSON object of a control body; `ControlError` if it is not one."""
    if body[:4] != CONTROL_MAGIC:
        raise ControlError("not a format-1 control message (bad magic)")
    try:
        message = json.loads(bytes(body[4:]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ControlError(f"control message is not UTF-8 JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ControlError("control message must be a JSON object with a string 'type'")
    return message


def _canonical(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode("utf-8")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        message = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ControlError(f"{what} is not UTF-8 JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ControlError(f"{what} must be a JSON object with a string 'type'")
    return message


@dataclass(frozen=True)
class SignedControl:
    """A parsed FLC2 body: the message, the exact signed JSON bytes and the device signature
    (kept as received, so a node can show what the camera signed)."""

    message: dict[str, Any]
    signed_json: bytes
    signature: bytes

    @property
    def type(self) -> str:
        return str(self.message["type"])

    @property
    def camera_ip(self) -> str:
        return str(self.message.get("camera", ""))

    @property
    def nonce(self) -> str:
        return str(self.message.get("nonce", ""))

    def body(self) -> bytes:
        return SIGNED_CONTROL_MAGIC + self.signature + self.signed_json

    def verify(self, device_public_key: bytes) -> bool:
        return ed25519.verify(device_public_key, self.signature, CONTROL_SIGNING_DOMAIN + self.signed_json)


def signed_control(key: Ed25519PrivateKey, message: dict[str, Any]) -> bytes:
    """FLC2 body: ``magic | Ed25519(domain ‖ canonical JSON) | canonical JSON``."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str) \
            or not isinstance(message.get("camera"), str):
        raise ControlError("a signed control message is a dict with string 'type' and 'camera'")
    data = _canonical(message)
    if len(data) + 4 + _SIG > MAX_CONTROL_BYTES:
        raise ControlError(f"control message of {len(data)} bytes exceeds {MAX_CONTROL_BYTES}")
    return SIGNED_CONTROL_MAGIC + key.sign(CONTROL_SIGNING_DOMAIN + data) + data


def parse_signed_control(body: bytes) -> SignedControl:
    """Parse an FLC2 body (the signature is checked by `SignedControl.verify`)."""
    if not is_signed_control(body):
        raise ControlError("not a signed control message (bad magic)")
    if len(body) > MAX_CONTROL_BYTES or len(body) < 4 + _SIG + 2:
        raise ControlError(f"signed control message of {len(body)} bytes is out of bounds")
    data = bytes(body[4 + _SIG:])
    message = _json_object(data, "signed control message")
    if not isinstance(message.get("camera"), str):
        raise ControlError("signed control message lacks a string 'camera'")
    return SignedControl(message, data, bytes(body[4 : 4 + _SIG]))


def hello_message(key: Ed25519PrivateKey, camera_ip: str, codec: dict[str, Any] | None, nonce: str,
                  ts_ms: int, first_seq: int | None = None) -> bytes:
    """Signed hello body; ``codec`` is ``CodecConfig.to_dict()``, ``nonce`` the node's challenge."""
    msg: dict[str, Any] = {"type": "hello", "camera": camera_ip, "codec": codec, "nonce": nonce, "ts": int(ts_ms)}
    if first_seq is not None:
        msg["firstSeq"] = int(first_seq)
    return signed_control(key, msg)


def end_message(key: Ed25519PrivateKey, camera_ip: str, last_seq: int, nonce: str, ts_ms: int,
                track_last_seqs: dict[int, int] | None = None) -> bytes:
    """Signed end-of-stream body. ``last_seq`` is the video track's; ``track_last_seqs`` the last
    seq of every other track (audio: ``{1: seq}``), written only when given, so the end of a
    camera without audio keeps its bytes."""
    msg: dict[str, Any] = {"type": "end", "camera": camera_ip, "lastSeq": int(last_seq), "nonce": nonce,
                           "ts": int(ts_ms)}
    if track_last_seqs:
        msg["trackLastSeqs"] = {str(int(t)): int(s) for t, s in sorted(track_last_seqs.items())}
    return signed_control(key, msg)


OUTAGE = "outage"          # the control type of a declared outage (`core.outages`)
MAX_OUTAGE_REASON = 200    # characters of an outage's reason; a longer one is cut by the camera


def outage_message(key: Ed25519PrivateKey, camera_ip: str, after_seq: int, from_ms: int, to_ms: int, reason: str,
                   ts_ms: int) -> bytes:
    """Signed outage declaration body (no nonce: identical for every node, see the module doc)."""
    return signed_control(key, {"type": OUTAGE, "camera": camera_ip, "afterSeq": int(after_seq),
                                "fromMs": int(from_ms), "toMs": int(to_ms), "reason": str(reason)[:MAX_OUTAGE_REASON],
                                "ts": int(ts_ms)})


def codec_proof(hello: SignedControl) -> dict[str, str]:
    """What a manifest's ``codecProof`` carries: the signed hello's JSON, signature and domain."""
    return {"signedJson": hello.signed_json.decode("utf-8"), "signature": hello.signature.hex(),
            "domain": CONTROL_SIGNING_DOMAIN.decode()}


def verify_codec_proof(proof: Any, codec: dict[str, Any], device_public_key: bytes) -> bool:
    """True when ``proof`` is a hello signed by the device key whose codec is exactly ``codec``
    (what a manifest commits): anyone with the camera's key from the chain can check it."""
    try:
        if not isinstance(proof, dict) or proof.get("domain") != CONTROL_SIGNING_DOMAIN.decode():
            return False
        signed = str(proof["signedJson"]).encode("utf-8")
        hello = SignedControl(_json_object(signed, "codec proof"), signed, bytes.fromhex(str(proof["signature"])))
    except (KeyError, ValueError, ControlError):
        return False
    return hello.type == "hello" and hello.message.get("codec") == codec and hello.verify(device_public_key)


# ------------------------------------------------------------------ node -> camera
class NodeMessage(StrEnum):
    CHALLENGE = "challenge"
    ACK = "ack"
    REJECT = "reject"


class RejectReason(StrEnum):
    NOT_REGISTERED = "not-registered"     # camera not on the whitelist, or revoked
    BAD_SIGNATURE = "bad-signature"       # hello/end or frame signature does not verify
    BAD_HELLO = "bad-hello"               # first message not a valid signed hello for this challenge
    WRONG_CAMERA = "wrong-camera"         # a frame of another camera than the hello's
    TOO_MANY_INVALID = "too-many-invalid"
    UNSIGNED_CONTROL = "unsigned-control"
    STORAGE_UNAVAILABLE = "storage-unavailable"  # the node's disk is full or read-only: try again later
    CAMERA_RESTART = "camera-restart"     # this seq is taken by a frame from before the camera restarted


def _node_message(message: dict[str, Any]) -> bytes:
    return NODE_MAGIC + _canonical(message)


def challenge_message(nonce: str, node: str) -> bytes:
    return _node_message({"type": NodeMessage.CHALLENGE.value, "nonce": nonce, "node": node})


def ack_message(camera_ip: str, up_to: int, ranges: list[list[int]]) -> bytes:
    return _node_message({"type": NodeMessage.ACK.value, "camera": camera_ip, "upTo": int(up_to),
                          "ranges": [[int(a), int(b)] for a, b in ranges[:MAX_ACK_RANGES]]})


def reject_message(reason: RejectReason, detail: str, seq: int | None = None) -> bytes:
    msg: dict[str, Any] = {"type": NodeMessage.REJECT.value, "reason": reason.value, "detail": detail[:500]}
    if seq is not None:
        msg["seq"] = int(seq)
    return _node_message(msg)


def parse_node_message(body: bytes) -> dict[str, Any]:
    """A node message's JSON object (`ControlError` if malformed or oversized)."""
    if not is_node_message(body):
        raise ControlError("not a node message (bad magic)")
    if len(body) > MAX_CONTROL_BYTES:
        raise ControlError(f"node message of {len(body)} bytes exceeds {MAX_CONTROL_BYTES}")
    return _json_object(body[4:], "node message")
