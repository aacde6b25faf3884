"""The frame packet a camera sends to every node (I1), and its checks (I2, I3).

Wire layout (big-endian), chosen so a node can reject a packet before reading its payload:

    magic "FLP1" | flags u8 (bit 0: keyframe, bit 1: has decode time) | ip_len u8 | camera ip (UTF-8)
    | seq u64 | timestamp_ms u64 | length u32 | sha256 (32) | signature (64)
    | [dts delta i32 = timestamp - decode time, only with bit 1] | payload (length)

The decode time exists for streams with B-frames, whose packets cannot be remuxed from capture
times alone.

The device signs ``SIGNING_DOMAIN ‖ cameraId ‖ seq ‖ timestamp ‖ flags ‖ length ‖ sha256`` with its
Ed25519 key (registered on chain as the camera's device key). Signing the digest rather than the
payload keeps signing cost independent of frame size, and the digest binds the payload anyway.
Sequence number and signature go beyond the seeds on purpose: a camera IP alone is spoofable.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import ed25519
from .block import FrameRef, camera_id

MAGIC = b"FLP1"
SIGNING_DOMAIN = b"frameledger.frame.v1"
FLAG_KEYFRAME = 0x01
FLAG_DTS = 0x02
_DTS = struct.Struct(">i")
MAX_FRAME_BYTES = 16 * 1024 * 1024
_FIXED = struct.Struct(">QQI32s64s")  # seq, timestamp, length, sha256, signature


class PacketError(ValueError):
    """Base for every reason a packet is refused. `alarm` is the alarm kind it raises."""

    alarm = "integrity"

    def __init__(self, message: str, camera_ip: str | None = None):
        super().__init__(message)
        self.camera_ip = camera_ip  # known when the header parsed, so alarms can name the camera


class MalformedPacket(PacketError):
    """Truncated, wrong magic, impossible lengths: cannot even be parsed."""


class LengthMismatch(PacketError):
    """Declared length ≠ received payload length (I3)."""


class DigestMismatch(PacketError):
    """SHA-256 of the payload ≠ the declared digest (I3)."""


class BadSignature(PacketError):
    """The device signature does not verify under the camera's registered key (I2)."""

    alarm = "security"


@dataclass(frozen=True)
class FramePacket:
    camera_ip: str
    seq: int
    timestamp_ms: int
    keyframe: bool
    sha256: bytes
    signature: bytes
    payload: bytes
    declared_length: int
    dts_ms: int | None = None

    @property
    def camera_id(self) -> bytes:
        return camera_id(self.camera_ip)

    def signing_message(self) -> bytes:
        return signing_message(self.camera_ip, self.seq, self.timestamp_ms, self.keyframe, self.declared_length,
                               self.sha256, self.dts_ms)

    def frame_ref(self) -> FrameRef:
        return FrameRef(self.timestamp_ms, self.seq, self.sha256, self.keyframe, len(self.payload), self.dts_ms)


def _flags(keyframe: bool, dts_ms: int | None) -> int:
    return (FLAG_KEYFRAME if keyframe else 0) | (FLAG_DTS if dts_ms is not None else 0)


def signing_message(
    camera_ip: str, seq: int, timestamp_ms: int, keyframe: bool, length: int, sha256: bytes, dts_ms: int | None = None
) -> bytes:
    delta = 0 if dts_ms is None else timestamp_ms - dts_ms
    return (SIGNING_DOMAIN + camera_id(camera_ip)
            + struct.pack(">QQBIi", seq, timestamp_ms, _flags(keyframe, dts_ms), length, delta) + sha256)


def encode_packet(
    key: Ed25519PrivateKey, camera_ip: str, seq: int, timestamp_ms: int, keyframe: bool, payload: bytes,
    dts_ms: int | None = None,
) -> bytes:
    ip = camera_ip.encode("utf-8")
    if not 0 < len(ip) < 256:
        raise MalformedPacket("camera ip must be 1..255 bytes")
    digest = hashlib.sha256(payload).digest()
    sig = key.sign(signing_message(camera_ip, seq, timestamp_ms, keyframe, len(payload), digest, dts_ms))
    dts = _DTS.pack(timestamp_ms - dts_ms) if dts_ms is not None else b""
    return (MAGIC + bytes([_flags(keyframe, dts_ms), len(ip)]) + ip
            + _FIXED.pack(seq, timestamp_ms, len(payload), digest, sig) + dts + payload)


def decode_packet(raw: bytes, check_digest: bool = True) -> FramePacket:
    """Parse and check integrity (length, digest). The signature is checked separately by
    `verify_signature`, because it needs the camera's key from the whitelist. A node parses with
    ``check_digest=False`` on its event loop and leaves the digest to a worker process."""
    if len(raw) < 6 or raw[:4] != MAGIC:
        raise MalformedPacket("not a frame packet (bad magic or too short)")
    flags, ip_len = raw[4], raw[5]
    head_end = 6 + ip_len + _FIXED.size
    if ip_len == 0 or len(raw) < head_end:
        raise MalformedPacket("truncated header")
    try:
        camera_ip = raw[6 : 6 + ip_len].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket("camera ip is not UTF-8") from exc
    seq, ts, length, digest, sig = _FIXED.unpack_from(raw, 6 + ip_len)
    if length > MAX_FRAME_BYTES:
        raise MalformedPacket(f"declared length {length} exceeds {MAX_FRAME_BYTES}")
    dts_ms = None
    if flags & FLAG_DTS:
        if len(raw) < head_end + _DTS.size:
            raise MalformedPacket("truncated decode time")
        dts_ms = ts - _DTS.unpack_from(raw, head_end)[0]
        head_end += _DTS.size
    payload = raw[head_end:]
    packet = FramePacket(camera_ip, seq, ts, bool(flags & FLAG_KEYFRAME), digest, sig, payload, length, dts_ms)
    if len(payload) != length:
        raise LengthMismatch(f"{camera_ip} seq {seq}: declared {length} bytes, received {len(payload)}", camera_ip)
    if check_digest and hashlib.sha256(payload).digest() != digest:
        raise DigestMismatch(f"{camera_ip} seq {seq}: payload does not match its SHA-256", camera_ip)
    return packet


def verify_signature(packet: FramePacket, device_public_key: bytes) -> None:
    if not ed25519.verify(device_public_key, packet.signature, packet.signing_message()):
        raise BadSignature(f"{packet.camera_ip} seq {packet.seq}: device signature does not verify", packet.camera_ip)


def assemble_packet(
    camera_ip: str, seq: int, timestamp_ms: int, keyframe: bool, payload: bytes, sha256: bytes, signature: bytes,
    dts_ms: int | None = None,
) -> bytes:
    """Rebuild the exact packet a camera sent from what a node stored (fields, bytes and the
    device signature), so a peer can hand it on and the receiver can check the camera's
    signature itself instead of trusting the peer (I6)."""
    ip = camera_ip.encode("utf-8")
    dts = _DTS.pack(timestamp_ms - dts_ms) if dts_ms is not None else b""
    return (MAGIC + bytes([_flags(keyframe, dts_ms), len(ip)]) + ip
            + _FIXED.pack(seq, timestamp_ms, len(payload), sha256, signature) + dts + payload)
