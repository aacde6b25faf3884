"""Camera → node framing: length prefix, incremental reader, control messages."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from offchain.core import wire
from offchain.core.packet import decode_packet, encode_packet


def _bodies(n: int, rng: random.Random) -> list[bytes]:
    return [bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 3, 4, 5, 100, 3000]))) for _ in range(n)]


def test_frame_message_layout():
    assert wire.frame_message(b"abc") == b"\x00\x00\x00\x03abc"
    assert wire.frame_message(b"") == b"\x00\x00\x00\x00"


@pytest.mark.parametrize("chunking", ["whole", "bytewise", "random"])
def test_reader_reassembles_any_chunking(chunking):
    rng = random.Random(1)
    bodies = _bodies(60, rng)
    stream = b"".join(wire.frame_message(b) for b in bodies)
    if chunking == "whole":
        chunks = [stream]
    elif chunking == "bytewise":
        chunks = [stream[i : i + 1] for i in range(len(stream))]
    else:
        chunks, i = [], 0
        while i < len(stream):
            step = rng.randint(1, 9000)
            chunks.append(stream[i : i + step])
            i += step
    reader = wire.MessageReader()
    out = [body for chunk in chunks for body in reader.feed(chunk)]
    assert out == bodies
    assert reader.pending == 0 and reader.messages == len(bodies)
    reader.finish()


def test_reader_feed_is_eager_even_if_not_iterated():
    reader = wire.MessageReader()
    msg = wire.frame_message(b"hello")
    reader.feed(msg[:3])  # not iterated: still buffered
    assert list(reader.feed(msg[3:])) == [b"hello"]


def test_size_limit_is_16_mib_plus_4_kib():
    assert wire.MAX_MESSAGE_BYTES == 16 * 1024 * 1024 + 4096
    reader = wire.MessageReader()
    # Exactly the limit is accepted (the reader waits for the body).
    assert list(reader.feed(struct.pack(">I", wire.MAX_MESSAGE_BYTES))) == []
    assert reader.pending == 4
    reader = wire.MessageReader()
    with pytest.raises(wire.MessageTooLarge, match="limit"):
        list(reader.feed(struct.pack(">I", wire.MAX_MESSAGE_BYTES + 1)))
    with pytest.raises(wire.MessageTooLarge):  # the stream stays failed: it cannot resynchronise
        list(reader.feed(b"more"))
    with pytest.raises(wire.MessageTooLarge):
        wire.frame_message(bytes(wire.MAX_MESSAGE_BYTES + 1))


def test_messages_before_an_oversized_prefix_are_delivered():
    reader = wire.MessageReader(max_size=10)
    got = []
    with pytest.raises(wire.MessageTooLarge):
        for body in reader.feed(wire.frame_message(b"ok1") + wire.frame_message(b"ok2") + struct.pack(">I", 11)):
            got.append(body)
    assert got == [b"ok1", b"ok2"]


def test_finish_detects_truncated_stream():
    reader = wire.MessageReader()
    assert list(reader.feed(wire.frame_message(b"0123456789")[:-2])) == []
    with pytest.raises(wire.TruncatedStream):
        reader.finish()


def test_unsigned_format_1_control_messages_still_parse_for_tools():
    body = wire.control_message({"type": "bench-start", "note": "é"})
    assert body.startswith(b"FLC1") and wire.is_control(body) and not wire.is_signed_control(body)
    assert not wire.is_packet(body)
    assert wire.parse_control(body) == {"type": "bench-start", "note": "é"}
    for bad in (b"FLP1{}", b"FLC1not json", b"FLC1[1,2]", b'FLC1{"no":"type"}', b"FLC1\xff\xfe", b"FLC2{}"):
        with pytest.raises(wire.ControlError):
            wire.parse_control(bad)
    with pytest.raises(wire.ControlError):
        wire.control_message({"camera": "x"})


def test_signed_hello_and_end_verify_only_under_the_device_key():
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes_raw()
    body = wire.hello_message(key, "10.0.0.1", {"codec": "h264"}, "ab12", 1000, first_seq=7)
    assert body.startswith(b"FLC2") and wire.is_control(body) and wire.is_signed_control(body)
    hello = wire.parse_signed_control(body)
    assert hello.message == {"type": "hello", "camera": "10.0.0.1", "codec": {"codec": "h264"}, "nonce": "ab12",
                             "ts": 1000, "firstSeq": 7}
    assert (hello.type, hello.camera_ip, hello.nonce) == ("hello", "10.0.0.1", "ab12")
    assert hello.verify(pub) and not hello.verify(other.public_key().public_bytes_raw())
    assert not hello.verify(b"short")  # not a key at all: refused, not raised
    assert hello.body() == body
    end = wire.parse_signed_control(wire.end_message(key, "10.0.0.1", 41, "ab12", 2000))
    assert end.message["lastSeq"] == 41 and end.verify(pub)
    # any change to the signed JSON (here: the codec) breaks the signature
    forged = body[:68] + body[68:].replace(b"h264", b"h265")
    assert not wire.parse_signed_control(forged).verify(pub)
    # the signature covers a domain: an Ed25519 signature over the bare JSON does not verify
    bare = b"FLC2" + key.sign(hello.signed_json) + hello.signed_json
    assert not wire.parse_signed_control(bare).verify(pub)
    for bad in (b"FLC1{}", b"FLC2" + b"\0" * 64, b"FLC2" + b"\0" * 64 + b"[1]", b"FLC2" + b"\0" * 64 + b'{"type":"x"}',
                b"FLC2" + b"\0" * 64 + b"x" * wire.MAX_CONTROL_BYTES):
        with pytest.raises(wire.ControlError):
            wire.parse_signed_control(bad)
    with pytest.raises(wire.ControlError):
        wire.signed_control(key, {"type": "hello"})  # no camera
    with pytest.raises(wire.ControlError):
        wire.hello_message(key, "10.0.0.1", {"pad": "x" * wire.MAX_CONTROL_BYTES}, "n", 0)


def test_codec_proof_binds_the_codec_to_the_device_key():
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes_raw()
    codec = {"codec": "h264", "fps": 25}
    proof = wire.codec_proof(wire.parse_signed_control(wire.hello_message(key, "10.0.0.1", codec, "n", 1)))
    assert wire.verify_codec_proof(proof, codec, pub)
    assert not wire.verify_codec_proof(proof, {"codec": "h265", "fps": 25}, pub)  # another codec
    assert not wire.verify_codec_proof(proof, codec, Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    end = wire.codec_proof(wire.parse_signed_control(wire.end_message(key, "10.0.0.1", 3, "n", 1)))
    assert not wire.verify_codec_proof(end, codec, pub)  # signed, but not a hello
    for bad in (None, {}, {**proof, "signature": "zz"}, {**proof, "domain": "x"}, {**proof, "signedJson": "[1]"}):
        assert not wire.verify_codec_proof(bad, codec, pub)


def test_node_messages():
    assert wire.parse_node_message(wire.challenge_message("ff00", "node-a")) == {
        "type": "challenge", "nonce": "ff00", "node": "node-a"}
    ranges = [[i * 10, i * 10 + 1] for i in range(1, 100)]
    ack = wire.parse_node_message(wire.ack_message("10.0.0.1", 5, ranges))
    assert ack["upTo"] == 5 and len(ack["ranges"]) == wire.MAX_ACK_RANGES and ack["ranges"][0] == [10, 11]
    rej = wire.parse_node_message(wire.reject_message(wire.RejectReason.NOT_REGISTERED, "x" * 2000, seq=3))
    assert rej == {"type": "reject", "reason": "not-registered", "detail": "x" * 500, "seq": 3}
    assert wire.is_node_message(wire.challenge_message("1", "n")) and not wire.is_control(wire.challenge_message("1", "n"))
    for bad in (b"FLC1{}", b"FLN1nope", b"FLN1" + b" " * wire.MAX_CONTROL_BYTES):
        with pytest.raises(wire.ControlError):
            wire.parse_node_message(bad)


def test_reader_wants_only_what_completes_the_message():
    reader = wire.MessageReader(max_size=1000)
    assert reader.wanted() == 4
    assert list(reader.feed(b"\x00\x00")) == [] and reader.wanted() == 2
    assert list(reader.feed(b"\x00\x0a")) == [] and reader.wanted() == 10
    assert list(reader.feed(b"abc")) == [] and reader.wanted() == 7
    assert list(reader.feed(b"defghij")) == [b"abcdefghij"] and reader.wanted() == 4
    big = wire.MessageReader(max_size=10)
    big.feed(struct.pack(">I", 1 << 30))
    assert big.wanted() <= 10 + 4  # an oversized prefix never asks for more than the limit
    with pytest.raises(wire.MessageTooLarge):
        list(big.feed(b""))


def test_packets_are_recognised():
    raw = encode_packet(Ed25519PrivateKey.generate(), "10.0.0.1", 1, 2, True, b"x" * 50)
    assert wire.is_packet(raw) and not wire.is_control(raw)
    reader = wire.MessageReader()
    (body,) = reader.feed(wire.frame_message(raw))
    assert decode_packet(body).seq == 1


def test_read_messages_over_a_real_socket():
    bodies = [b"a" * 70_000, b"", b"FLC1{}", b"b" * 5]

    async def main() -> list[bytes]:
        got: list[bytes] = []
        done = asyncio.Event()

        async def handle(reader, writer):
            async for body in wire.read_messages(reader):
                got.append(body)
            writer.close()
            done.set()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, w = await asyncio.open_connection("127.0.0.1", port)
        for b in bodies:
            w.write(wire.frame_message(b))
        await w.drain()
        w.close()
        await asyncio.wait_for(done.wait(), 5)
        server.close()
        await server.wait_closed()
        return got

    assert asyncio.run(main()) == bodies
