"""Camera → node wire framing: one persistent TCP connection per (camera, node).

Every message on the connection is framed as

    u32 big-endian length | body

and a body is either

* a frame packet (``packet.MAGIC`` = ``b"FLP1"``, see ``offchain.core.packet``), or
* a control message: ``b"FLC1"`` followed by a UTF-8 JSON object with a string ``"type"``.

Control messages sent by the camera agent:

* ``{"type": "hello", "camera": ip, "codec": CodecConfig.to_dict()}`` — the first message on
  every connection (also after a reconnect); the node records the codec config once per camera.
* ``{"type": "end", "camera": ip, "lastSeq": N}`` — at the end of a stream, so a node can
  detect lost tail frames (``N`` is the last sequence number the camera produced, -1 if none).

The node never writes back; it may close the connection. Everything here is pure (no I/O)
except the small `read_messages` convenience for asyncio streams.

Limits: a body is at most `MAX_MESSAGE_BYTES` = 16 MiB (the largest frame payload, see
``packet.MAX_FRAME_BYTES``) + 4 KiB (packet header and slack). A larger declared length means
the stream is not ours or is out of sync; `MessageReader` raises `MessageTooLarge` and the
connection should be closed, since there is no way to resynchronise a length-prefixed stream.
"""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .packet import MAGIC as PACKET_MAGIC

__all__ = [
    "CONTROL_MAGIC",
    "ControlError",
    "MAX_MESSAGE_BYTES",
    "MessageReader",
    "MessageTooLarge",
    "PACKET_MAGIC",
    "TruncatedStream",
    "WireError",
    "control_message",
    "end_message",
    "frame_message",
    "hello_message",
    "is_control",
    "is_packet",
    "parse_control",
    "read_messages",
]

CONTROL_MAGIC = b"FLC1"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024 + 4 * 1024
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
    return body[:4] == CONTROL_MAGIC


def control_message(message: dict[str, Any]) -> bytes:
    """Body of a control message (not yet framed: pass it to `frame_message`)."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ControlError("a control message is a dict with a string 'type'")
    return CONTROL_MAGIC + json.dumps(message, separators=(",", ":"), ensure_ascii=False,
                                      sort_keys=True).encode("utf-8")


def parse_control(body: bytes) -> dict[str, Any]:
    """The JSON object of a control body; `ControlError` if it is not one."""
    if not is_control(body):
        raise ControlError("not a control message (bad magic)")
    try:
        message = json.loads(bytes(body[4:]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ControlError(f"control message is not UTF-8 JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ControlError("control message must be a JSON object with a string 'type'")
    return message


def hello_message(camera_ip: str, codec: dict[str, Any] | None) -> bytes:
    """``{"type":"hello","camera":ip,"codec":...}`` body; ``codec`` is ``CodecConfig.to_dict()``."""
    return control_message({"type": "hello", "camera": camera_ip, "codec": codec})


def end_message(camera_ip: str, last_seq: int) -> bytes:
    """``{"type":"end","camera":ip,"lastSeq":N}`` body."""
    return control_message({"type": "end", "camera": camera_ip, "lastSeq": int(last_seq)})
