"""Consortium rules on a real Anvil: admission, nodes, quorum, camera whitelist, genesis, heads.
Accounts (chain/consortium.json): 0 founder authority, 1-2 operators, 3-5 nodes, 6+ outsiders."""

from __future__ import annotations

import pytest

from offchain.chain import reverts
from offchain.chain.client import events as chain_events
from offchain.chain.ledger import Role
from offchain.core.block import camera_id, genesis_hash, head_block_hash

KEY = b"\x11" * 32
GROUP = b"\x01" * 32


def test_plan_members_nodes_and_quorum(chain_env):
    c = chain_env.consortium()
    founder = chain_env.signer(0).address
    assert c.member(founder)["role"] == Role.AUTHORITY
    assert c.member(chain_env.signer(1).address)["role"] == Role.OPERATOR
    assert c.member(chain_env.signer(1).address)["parent"] == founder
    assert c.nodes() == [chain_env.signer(i).address for i in (3, 4, 5)]
    assert c.quorum() == 2


def test_operator_admitted_by_authority(chain_env):
    applicant = chain_env.signer(6).address
    chain_env.consortium(6).apply(Role.OPERATOR, chain_env.signer(0).address, "Kindergarten")
    assert not chain_env.consortium().is_member(applicant)
    res = chain_env.consortium(0).confirm(applicant)
    events = chain_events(chain_env.consortium().contract, "MemberAdmitted", res.receipt)
    assert [e.args.member for e in events] == [applicant]
    assert chain_env.consortium().member(applicant)["role"] == Role.OPERATOR


def test_viewer_needs_its_parent_operator(chain_env):
    viewer = chain_env.signer(7).address
    bank = chain_env.signer(1).address
    chain_env.consortium(7).apply(Role.VIEWER, bank, "Parent of pupil")
    chain_env.consortium(2).confirm(viewer)  # another operator: eligible, but not the parent
    assert not chain_env.consortium().is_member(viewer)
    chain_env.consortium(1).confirm(viewer)
    assert chain_env.consortium().member(viewer)["role"] == Role.VIEWER


def test_threshold_requires_several_confirmations(chain_env):
    founder = chain_env.signer(0).address
    chain_env.consortium(8).apply(Role.AUTHORITY, None, "Second authority")
    chain_env.consortium(0).confirm(chain_env.signer(8).address)
    chain_env.consortium(0).set_admission_threshold(2)
    applicant = chain_env.signer(6).address
    chain_env.consortium(6).apply(Role.OPERATOR, founder, "Operator")
    chain_env.consortium(0).confirm(applicant)
    assert not chain_env.consortium().is_member(applicant)
    assert chain_env.consortium().contract.functions.application(applicant).call()[3] == 1
    chain_env.consortium(8).confirm(applicant)
    assert chain_env.consortium().is_member(applicant)


@pytest.mark.parametrize(
    "who, action, error",
    [
        (6, lambda c, e: c.apply(Role.OPERATOR, e.signer(1).address, "x"), "InvalidParent"),  # operator under operator
        (6, lambda c, e: c.apply(Role.VIEWER, e.signer(0).address, "x"), "InvalidParent"),  # viewer under authority
        (6, lambda c, e: c.apply(Role.NONE, e.signer(0).address, "x"), "InvalidRole"),
        (1, lambda c, e: c.apply(Role.OPERATOR, e.signer(0).address, "x"), "AlreadyMember"),
        (6, lambda c, e: c.confirm(e.signer(7).address), "NoOpenApplication"),
        (6, lambda c, e: c.add_node(e.signer(9).address, e.signer(0).address), "AccessControlUnauthorizedAccount"),
        (1, lambda c, e: c.set_quorum(1), "AccessControlUnauthorizedAccount"),
        (6, lambda c, e: c.set_admission_threshold(3), "AccessControlUnauthorizedAccount"),
        (0, lambda c, e: c.set_admission_threshold(0), "InvalidThreshold"),
        (0, lambda c, e: c.set_quorum(4), "InvalidQuorum"),
        (0, lambda c, e: c.set_quorum(0), "InvalidQuorum"),
        (0, lambda c, e: c.add_node(e.signer(3).address, e.signer(0).address), "NodeAlreadyRegistered"),
        (0, lambda c, e: c.add_node(e.signer(9).address, e.signer(9).address), "NotActiveMember"),
        (6, lambda c, e: c.remove_member(e.signer(1).address), "CannotRemoveMember"),
        (2, lambda c, e: c.remove_member(e.signer(1).address), "CannotRemoveMember"),
        (6, lambda c, e: c.seal_genesis(), "AccessControlUnauthorizedAccount"),
        (0, lambda c, e: c.seal_genesis(), "NoCameras"),
        (6, lambda c, e: c.register_camera("10.0.0.1", KEY, GROUP), "NotAllowedToRegisterCameras"),
        (1, lambda c, e: c.register_camera("", KEY, GROUP), "EmptyCameraIp"),
        (1, lambda c, e: c.register_camera("10.0.0.1", b"", GROUP), "EmptyDeviceKey"),
    ],
)
def test_wrong_caller_or_input_reverts_with_named_error(chain_env, who, action, error):
    with pytest.raises(getattr(reverts, error)) as info:
        action(chain_env.consortium(who), chain_env)
    assert info.value.name == error


def test_confirmation_rules(chain_env):
    applicant = chain_env.signer(6).address
    chain_env.consortium(6).apply(Role.OPERATOR, chain_env.signer(0).address, "Op")
    with pytest.raises(reverts.ApplicationAlreadyOpen):
        chain_env.consortium(6).apply(Role.OPERATOR, chain_env.signer(0).address, "Op")
    with pytest.raises(reverts.NotEligibleToConfirm) as info:
        chain_env.consortium(1).confirm(applicant)  # an operator cannot admit operators
    assert info.value.args_by_name["confirmer"] == chain_env.signer(1).address
    with pytest.raises(reverts.NotEligibleToConfirm):
        chain_env.consortium(9).confirm(applicant)  # outsiders cannot confirm
    chain_env.consortium(0).set_admission_threshold(2)
    chain_env.consortium(0).confirm(applicant)
    with pytest.raises(reverts.AlreadyConfirmed):
        chain_env.consortium(0).confirm(applicant)
    chain_env.consortium(6).signer.transact(chain_env.consortium(6).contract.functions.withdrawApplication())
    with pytest.raises(reverts.NoOpenApplication):
        chain_env.consortium(0).confirm(applicant)


def test_parent_removes_member(chain_env):
    viewer = chain_env.signer(7).address
    chain_env.consortium(7).apply(Role.VIEWER, chain_env.signer(1).address, "v")
    chain_env.consortium(1).confirm(viewer)
    chain_env.consortium(1).remove_member(viewer)
    assert not chain_env.consortium().is_member(viewer)
    with pytest.raises(reverts.NotActiveMember):
        chain_env.consortium(0).remove_member(viewer)


def test_camera_whitelist_rotation_and_revocation(chain_env):
    bank = chain_env.consortium(1)
    res = bank.register_camera("10.0.0.7", KEY, GROUP)
    cam = camera_id("10.0.0.7")
    ev = chain_events(bank.contract, "CameraRegistered", res.receipt)[0]
    assert bytes(ev.args.cameraId) == cam
    info = bank.camera(cam)
    assert (info.ip, info.owner, info.device_public_key, info.group, info.active) == ("10.0.0.7", bank.signer.address, KEY, GROUP, True)
    with pytest.raises(reverts.CameraAlreadyRegistered):
        chain_env.consortium(2).register_camera("10.0.0.7", KEY, GROUP)
    with pytest.raises(reverts.NotCameraOwner):
        chain_env.consortium(2).rotate_camera_key(cam, b"\x22" * 32)
    bank.rotate_camera_key(cam, b"\x22" * 32)
    assert bank.camera(cam).device_public_key == b"\x22" * 32
    with pytest.raises(reverts.NotCameraOwner):
        chain_env.consortium(2).revoke_camera(cam)  # another operator
    chain_env.consortium(0).revoke_camera(cam)  # an authority may
    assert not bank.camera(cam).active
    with pytest.raises(reverts.CameraIsRevoked):
        bank.rotate_camera_key(cam, KEY)
    with pytest.raises(reverts.UnknownCamera):
        bank.camera(camera_id("10.9.9.9"))


def test_genesis_sealed_once_hash_matches_and_is_members_only(chain_env, w3):
    ips = ["10.0.0.1", "10.0.0.2"]
    for ip in ips:
        chain_env.consortium(1).register_camera(ip, KEY, GROUP)
    res = chain_env.consortium(0).seal_genesis()
    ts = w3.eth.get_block(res.block_number)["timestamp"]
    expected = genesis_hash(ips, ts)
    assert chain_env.consortium(0).genesis_hash() == (expected, ts)
    assert chain_env.consortium(3).genesis_hash()[0] == expected  # a node account may read it
    with pytest.raises(reverts.NotMember):
        chain_env.consortium(9).genesis_hash()
    with pytest.raises(reverts.GenesisAlreadySealed):
        chain_env.consortium(0).seal_genesis()
    for ip in ips:
        assert chain_env.consortium().head_block(camera_id(ip)) == (head_block_hash(expected, ip, ts), ts)
    # a camera registered later gets its head block at registration
    late = chain_env.consortium(2).register_camera("10.0.0.3", KEY, GROUP)
    late_ts = w3.eth.get_block(late.block_number)["timestamp"]
    assert chain_env.consortium().head_block(camera_id("10.0.0.3"))[0] == head_block_hash(expected, "10.0.0.3", late_ts)


def test_genesis_getter_before_seal(chain_env):
    with pytest.raises(reverts.GenesisNotSealed):
        chain_env.consortium(0).genesis_hash()
