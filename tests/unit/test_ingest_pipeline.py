"""The ingest pipeline's parts (offchain/node/pipeline.py): the verdicts a worker returns, the
budget that bounds what is in flight, and the group committer's batching."""

from __future__ import annotations

import asyncio

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from offchain.core import packet as pk
from offchain.node.pipeline import Budget, GroupCommitter, Pending, Verdict, Verifier, verify_batch


def _packet(key: Ed25519PrivateKey, seq: int = 0) -> bytes:
    return pk.encode_packet(key, "10.1.1.1", seq, 1000 + 40 * seq, seq == 0, b"frame-%d" % seq * 50)


def test_verdicts_for_good_tampered_and_forged_packets():
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pub, wrong = key.public_key().public_bytes_raw(), other.public_key().public_bytes_raw()
    good = _packet(key)
    tampered = good[:-1] + bytes([good[-1] ^ 1])
    assert verify_batch([(good, [pub]), (tampered, [pub]), (good, [wrong]), (good, [wrong, pub]), (good, [])]) == [
        Verdict.OK, Verdict.DIGEST, Verdict.SIGNATURE, Verdict.OK, Verdict.SIGNATURE]


def test_a_worker_process_gives_the_same_verdicts():
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes_raw()
    good, forged = _packet(key, 1), _packet(Ed25519PrivateKey.generate(), 1)
    verifier = Verifier(1)

    async def run():
        return await asyncio.gather(*(verifier.verify(b"cam0", raw, [pub]) for raw in (good, forged, good)))

    try:
        assert asyncio.run(run()) == [Verdict.OK, Verdict.SIGNATURE, Verdict.OK]
    finally:
        verifier.close()


def test_budget_holds_a_connection_until_there_is_room():
    async def run():
        budget = Budget(max_frames=2, max_bytes=1000)
        await budget.acquire(10)
        await budget.acquire(10)
        third = asyncio.ensure_future(budget.acquire(10))
        await asyncio.sleep(0.01)
        blocked = not third.done()
        budget.release(10)
        await asyncio.wait_for(third, 1)
        big = asyncio.ensure_future(budget.acquire(990))  # over the byte bound while others are in
        await asyncio.sleep(0.01)
        blocked_by_bytes = not big.done()
        budget.release(10)
        budget.release(10)
        await asyncio.wait_for(big, 1)  # alone it is admitted, however large
        return blocked, blocked_by_bytes, budget.high_water, budget.waited, budget.frames

    assert asyncio.run(run()) == (True, True, 2, 2, 1)


def test_group_committer_batches_and_answers_after_the_commit():
    batches: list[int] = []
    durable: list[int] = []

    def commit(batch):
        batches.append(len(batch))
        return [p.ref != "dup" for p in batch]

    async def run():
        loop = asyncio.get_running_loop()
        gc = GroupCommitter(commit, lambda b, added: durable.extend(i for i, (p, a) in enumerate(zip(b, added)) if a),
                            lambda exc: None, max_frames=4, linger_s=0.01)
        items = [Pending(b"c", "ip", "dup" if i == 5 else f"r{i}", b"", "camera", b"", False, loop.create_future())
                 for i in range(10)]
        futs = [gc.submit(p) for p in items]
        results = await asyncio.gather(*futs)
        gc.close()
        return results

    results = asyncio.run(run())
    assert results == [True] * 5 + [False] + [True] * 4
    assert sum(batches) == 10 and max(batches) <= 4 and len(batches) == 3  # 4 + 4 + 2
    assert len(durable) == 9  # on_durable saw every new row, and only those


def test_inline_checks_sign_the_same_bytes_and_give_the_same_verdicts():
    from offchain.node.pipeline import signing_message_cached, verify_parsed

    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pub, wrong = key.public_key().public_bytes_raw(), other.public_key().public_bytes_raw()
    with_dts = pk.encode_packet(key, "10.1.1.2", 7, 5000, True, b"x" * 300, dts_ms=4960)
    for raw in (_packet(key, 3), with_dts):
        packet = pk.decode_packet(raw, check_digest=False)
        assert signing_message_cached(packet) == packet.signing_message()
        tampered = pk.decode_packet(raw[:-1] + bytes([raw[-1] ^ 1]), check_digest=False)
        assert [verify_parsed(packet, [pub]), verify_parsed(tampered, [pub]), verify_parsed(packet, [wrong]),
                verify_parsed(packet, [wrong, pub])] == [Verdict.OK, Verdict.DIGEST, Verdict.SIGNATURE, Verdict.OK]
