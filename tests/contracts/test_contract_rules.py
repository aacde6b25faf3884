"""Rules added for issue 8 (item 8), on a real Anvil: time bounds of `anchor`, what a dispute does
to finality, one verdict per node and block, and every mutating function called from the wrong
account (the inherited AccessControl role functions included).

Accounts (chain/consortium.json): 0 founder authority and governor, 1-2 operators, 3-5 nodes,
6+ outsiders."""

from __future__ import annotations

import hashlib

import pytest
from web3 import Web3

from offchain.chain import reverts
from offchain.chain.client import events
from offchain.chain.deployer import DEFAULT_MAX_FUTURE_MS, DEFAULT_MAX_WINDOW_MS
from offchain.chain.ledger import Role
from offchain.core.block import FrameRef, build_block, camera_id

IP = "10.1.0.1"
CAM = camera_id(IP)
W = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % W
KEY = b"\x11" * 32
GROUP = b"\x01" * 32


def frames_for(window_start: int, n: int = 30, seq0: int = 0) -> list[FrameRef]:
    return [FrameRef.of_bytes(seq0 + i, window_start + i * 10, hashlib.sha256(b"%d-%d" % (window_start, i)).digest(), i == 0)
            for i in range(n)]


def head(env) -> bytes:
    return env.consortium().head_block(CAM)[0]


def make_block(env, height: int, prev: bytes, start: int, proposer_idx: int = 3):
    return build_block(camera_ip=IP, height=height, prev_hash=prev, window_start_ms=start, window_end_ms=start + W,
                       frames=frames_for(start, seq0=(height - 1) * 30), proposer=env.signer(proposer_idx).address)


@pytest.fixture
def ledger_env(chain_env):
    chain_env.consortium(1).register_camera(IP, KEY, GROUP)
    chain_env.consortium(0).seal_genesis()
    return chain_env


def chain_now_ms(env) -> int:
    return env.w3.eth.get_block("latest")["timestamp"] * 1000


def block_over(env, start: int, end: int, height: int = 1, prev: bytes | None = None, proposer_idx: int = 3):
    return build_block(camera_ip=IP, height=height, prev_hash=prev or head(env), window_start_ms=start,
                       window_end_ms=end, frames=frames_for(start, n=3), proposer=env.signer(proposer_idx).address)


# ------------------------------------------------------------------------ time bounds of anchor

def test_deployment_sets_default_window_limits_with_an_event(chain_env):
    assert chain_env.ledger(3).window_limits() == (DEFAULT_MAX_FUTURE_MS, DEFAULT_MAX_WINDOW_MS)
    assert chain_env.deployment.record["windowLimits"] == {"maxFutureMs": DEFAULT_MAX_FUTURE_MS,
                                                            "maxWindowMs": DEFAULT_MAX_WINDOW_MS}
    ledger = chain_env.ledger(0).contract
    logs = ledger.events.WindowLimitsChanged().get_logs(from_block=0)
    assert [(e.args.maxFutureMs, e.args.maxWindowMs) for e in logs] == [(DEFAULT_MAX_FUTURE_MS, DEFAULT_MAX_WINDOW_MS)]


def test_window_ending_at_the_end_of_time_is_refused(ledger_env):
    """The attack of issue 8: windowEndMs = 2^64-1 would end the camera's history."""
    env = ledger_env
    with pytest.raises(reverts.WindowInFuture):
        env.ledger(3).anchor(block_over(env, T0, 2**64 - 1).header)
    env.ledger(3).anchor(make_block(env, 1, head(env), T0).header)  # the camera's real history goes on


def test_window_ahead_of_chain_time_by_more_than_the_slack_is_refused(ledger_env):
    env = ledger_env
    now = chain_now_ms(env)
    start = now - now % W
    # end = start + W is at most one window ahead: within the 10-minute slack
    slack = DEFAULT_MAX_FUTURE_MS
    far = start + slack + 2 * W
    with pytest.raises(reverts.WindowInFuture) as info:
        env.ledger(3).anchor(block_over(env, far - W, far).header)
    assert info.value.args_by_name["windowEndMs"] == far
    assert now + slack <= info.value.args_by_name["latestAllowedMs"] <= now + slack + 60_000  # chain time + slack
    env.ledger(3).anchor(block_over(env, start, start + W).header)


def test_window_longer_than_the_maximum_is_refused(ledger_env):
    env = ledger_env
    with pytest.raises(reverts.WindowTooLong) as info:
        env.ledger(3).anchor(block_over(env, T0, T0 + DEFAULT_MAX_WINDOW_MS + 1).header)
    assert info.value.args_by_name == {"lengthMs": DEFAULT_MAX_WINDOW_MS + 1, "maxWindowMs": DEFAULT_MAX_WINDOW_MS}
    env.ledger(3).anchor(block_over(env, T0, T0 + DEFAULT_MAX_WINDOW_MS).header)  # exactly the maximum is fine


def test_governor_changes_the_limits_and_they_apply_at_once(ledger_env):
    env = ledger_env
    res = env.ledger(0).set_window_limits(1_000, 30_000)
    ev = events(env.ledger(0).contract, "WindowLimitsChanged", res.receipt)[0]
    assert (ev.args.maxFutureMs, ev.args.maxWindowMs, ev.args.by) == (1_000, 30_000, env.signer(0).address)
    assert env.ledger(3).window_limits() == (1_000, 30_000)
    with pytest.raises(reverts.WindowTooLong):
        env.ledger(3).anchor(make_block(env, 1, head(env), T0).header)  # a 60 s window is now too long
    for bad in ((0, 30_000), (1_000, 0), (86_400_001, 30_000), (1_000, 86_400_001)):
        with pytest.raises(reverts.InvalidWindowLimits):
            env.ledger(0).set_window_limits(*bad)


# ----------------------------------------------------------------- disputes and finality

def test_a_disputed_block_does_not_become_final(ledger_env):
    env = ledger_env  # quorum 2 of 3
    b1 = make_block(env, 1, head(env), T0)
    env.ledger(3).anchor(b1.header)
    env.ledger(5).dispute(b1.hash, "manifest omits frame 7 held by this node")
    res = env.ledger(4).attest(b1.hash)  # quorum of attestations reached, but disputed
    assert events(env.ledger(4).contract, "BlockFinalized", res.receipt) == []
    rec = env.ledger(3).get_block(b1.hash)
    assert (rec.attestations, rec.disputes, rec.finalized) == (2, 1, False)
    # the camera's chain goes on: the next block links to the disputed one
    b2 = make_block(env, 2, b1.hash, T0 + W, proposer_idx=4)
    env.ledger(4).anchor(b2.header)
    env.ledger(5).attest(b2.hash)
    assert env.ledger(3).get_block(b2.hash).finalized


def test_a_dispute_after_finality_is_recorded_and_finality_stays(ledger_env):
    env = ledger_env
    b1 = make_block(env, 1, head(env), T0)
    env.ledger(3).anchor(b1.header)
    env.ledger(4).attest(b1.hash)
    res = env.ledger(5).dispute(b1.hash, "late: frame 9 differs")
    assert [e.args.node for e in events(env.ledger(5).contract, "BlockDisputed", res.receipt)] == [env.signer(5).address]
    rec = env.ledger(3).get_block(b1.hash)
    assert (rec.finalized, rec.disputes) == (True, 1)
    assert env.ledger(3).has_disputed(b1.hash, env.signer(5).address)


def test_one_node_cannot_attest_and_dispute_the_same_block(ledger_env):
    env = ledger_env
    b1 = make_block(env, 1, head(env), T0)
    env.ledger(3).anchor(b1.header)
    with pytest.raises(reverts.AttestedAndDisputed):
        env.ledger(3).dispute(b1.hash, "the proposer disputing its own block")  # its anchor is its attestation
    env.ledger(4).attest(b1.hash)
    with pytest.raises(reverts.AttestedAndDisputed) as info:
        env.ledger(4).dispute(b1.hash, "changed my mind")
    assert info.value.args_by_name["node"] == env.signer(4).address
    env.ledger(5).dispute(b1.hash, "frame 3 differs")
    with pytest.raises(reverts.AttestedAndDisputed):
        env.ledger(5).attest(b1.hash)
    rec = env.ledger(3).get_block(b1.hash)
    assert (rec.attestations, rec.disputes) == (2, 1)


# ------------------------------------------------------------------------- wrong callers

def _grant(c, e):
    return c.signer.transact(c.contract.functions.grantRole(c.contract.functions.GOVERNOR_ROLE().call(), e.signer(6).address))


def _revoke(c, e):
    return c.signer.transact(c.contract.functions.revokeRole(c.contract.functions.GOVERNOR_ROLE().call(), e.signer(0).address))


def _renounce_for_other(c, e):
    # renounceRole takes the caller's own address as confirmation; naming another account reverts
    return c.signer.transact(c.contract.functions.renounceRole(c.contract.functions.GOVERNOR_ROLE().call(), e.signer(0).address))


@pytest.mark.parametrize(
    "who, action, error",
    [
        (1, _grant, "AccessControlUnauthorizedAccount"),  # a member, not an admin
        (6, _grant, "AccessControlUnauthorizedAccount"),
        (3, _revoke, "AccessControlUnauthorizedAccount"),  # a node account
        (6, _renounce_for_other, "AccessControlBadConfirmation"),
        (6, lambda c, e: c.withdraw_application(), "NoOpenApplication"),  # nothing of its own to withdraw
        (1, lambda c, e: c.remove_node(e.signer(3).address), "AccessControlUnauthorizedAccount"),
        (3, lambda c, e: c.remove_node(e.signer(4).address), "AccessControlUnauthorizedAccount"),
        (0, lambda c, e: c.remove_node(e.signer(9).address), "NotANode"),
    ],
)
def test_consortium_wrong_callers(chain_env, who, action, error):
    with pytest.raises(getattr(reverts, error)) as info:
        action(chain_env.consortium(who), chain_env)
    assert info.value.name == error


def test_role_functions_work_for_the_admin_only(chain_env):
    c0 = chain_env.consortium(0)
    governor = c0.contract.functions.GOVERNOR_ROLE().call()
    outsider = chain_env.signer(6).address
    with pytest.raises(reverts.AccessControlUnauthorizedAccount):
        _grant(chain_env.consortium(6), chain_env)
    assert not c0.contract.functions.hasRole(governor, outsider).call()
    _grant(c0, chain_env)  # the admin may
    assert c0.contract.functions.hasRole(governor, outsider).call()
    c6 = chain_env.consortium(6)
    c6.signer.transact(c6.contract.functions.renounceRole(governor, outsider))  # one's own role, confirmed
    assert not c0.contract.functions.hasRole(governor, outsider).call()


def test_withdraw_by_a_non_applicant_leaves_the_application_open(chain_env):
    applicant = chain_env.signer(6).address
    chain_env.consortium(6).apply(Role.OPERATOR, chain_env.signer(0).address, "Op")
    with pytest.raises(reverts.NoOpenApplication):
        chain_env.consortium(7).withdraw_application()  # withdraws only the caller's own
    assert chain_env.consortium().contract.functions.application(applicant).call()[1]  # still open
    chain_env.consortium(0).confirm(applicant)
    assert chain_env.consortium().is_member(applicant)


def test_remove_node_by_the_governor_keeps_quorum_reachable(chain_env):
    c0 = chain_env.consortium(0)
    node5 = chain_env.signer(5).address
    res = c0.remove_node(node5)
    assert [e.args.node for e in events(c0.contract, "NodeRemoved", res.receipt)] == [node5]
    assert c0.nodes() == [chain_env.signer(i).address for i in (3, 4)]
    with pytest.raises(reverts.InvalidQuorum):
        c0.remove_node(chain_env.signer(4).address)  # quorum 2 would be unreachable with one node
    with pytest.raises(reverts.NotANode):
        chain_env.ledger(5).attest(b"\x42" * 32)  # a removed node no longer attests


def test_removed_owner_can_no_longer_rotate_its_camera_key(chain_env):
    bank = chain_env.consortium(1)
    bank.register_camera("10.0.0.8", KEY, GROUP)
    cam = camera_id("10.0.0.8")
    chain_env.consortium(0).remove_member(bank.signer.address)  # the governor removes the operator
    with pytest.raises(reverts.NotActiveMember):
        bank.rotate_camera_key(cam, b"\x33" * 32)
    assert bank.camera(cam).device_public_key == KEY


@pytest.mark.parametrize(
    "who, action, error",
    [
        (3, lambda led, e: led.set_window_limits(1_000, 1_000), "NotGovernor"),  # a node
        (1, lambda led, e: led.set_window_limits(1_000, 1_000), "NotGovernor"),  # an operator
        (6, lambda led, e: led.set_window_limits(1_000, 1_000), "NotGovernor"),  # an outsider
        (1, lambda led, e: led.anchor(make_block(e, 1, head(e), T0, proposer_idx=1).header), "NotANode"),
        (6, lambda led, e: led.attest(b"\x42" * 32), "NotANode"),
        (6, lambda led, e: led.dispute(b"\x42" * 32, "x"), "NotANode"),
        (6, lambda led, e: led.raise_risk(CAM, "x", T0), "NotANode"),
        (6, lambda led, e: led.clear_risk(CAM), "NotANode"),
    ],
)
def test_video_ledger_wrong_callers(ledger_env, who, action, error):
    with pytest.raises(getattr(reverts, error)) as info:
        action(ledger_env.ledger(who), ledger_env)
    assert info.value.name == error
    assert ledger_env.ledger(3).window_limits() == (DEFAULT_MAX_FUTURE_MS, DEFAULT_MAX_WINDOW_MS)


def test_window_limits_follow_the_governor_role(chain_env):
    """Governance of the limits is the consortium's: a new governor may set them, a former one not."""
    c0 = chain_env.consortium(0)
    governor = c0.contract.functions.GOVERNOR_ROLE().call()
    c0.signer.transact(c0.contract.functions.grantRole(governor, Web3.to_checksum_address(chain_env.signer(8).address)))
    chain_env.ledger(8).set_window_limits(5_000, 5_000)
    c0.signer.transact(c0.contract.functions.revokeRole(governor, chain_env.signer(8).address))
    with pytest.raises(reverts.NotGovernor):
        chain_env.ledger(8).set_window_limits(6_000, 6_000)
    assert chain_env.ledger(3).window_limits() == (5_000, 5_000)
