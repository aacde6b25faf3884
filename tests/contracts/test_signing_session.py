"""SigningSession on a real Anvil: proposal, responses, formation (C5), EIP-712 agreements recorded
on chain (S3), the risk gate (S4), and every refusal, wrong callers and wrong signers included."""

from __future__ import annotations

import hashlib
import pytest

from offchain.chain import reverts
from offchain.chain.client import events
from offchain.chain.sessions import (
    EvidenceIncomplete, PartyResponse, SessionStatus, SigningSessionClient, session_evidence,
)
from offchain.core import agreement
from offchain.core.agreement import Proposal
from offchain.core.block import FrameRef, build_block, camera_id

IPS = ("10.9.0.1", "10.9.0.2")
CAMS = tuple(camera_id(ip) for ip in IPS)
W = 60_000
DOC = hashlib.sha256(b"loan agreement v1").digest()
BANK, CUSTOMER, NODE, OUTSIDER, RELAYER = 1, 2, 3, 8, 9


class Env:
    def __init__(self, chain_env):
        self.chain = chain_env
        self.address = chain_env.deployment.signing_session

    def client(self, i: int) -> SigningSessionClient:
        return SigningSessionClient(self.chain.signer(i), self.address)

    def addr(self, i: int) -> str:
        return self.chain.signer(i).address

    def key(self, i: int) -> str:
        return self.chain.keys[i]

    def now(self) -> int:
        return self.chain.w3.eth.get_block("latest")["timestamp"]

    def proposal(self, **kw) -> Proposal:
        base = dict(initiator=self.addr(BANK), parties=(self.addr(BANK), self.addr(CUSTOMER)), cameras=CAMS,
                    camera_party=(0, 1), document_hash=DOC, start_ms=W, end_ms=3 * W,
                    expires_at=self.now() + 3600, salt=b"\x01" * 32)
        base.update(kw)
        return Proposal(**base)

    def anchor(self, cam_index: int, height: int, start: int) -> None:
        ledger = self.chain.ledger(NODE)
        prev = ledger.tip(CAMS[cam_index])[0]
        blk = build_block(camera_ip=IPS[cam_index], height=height, prev_hash=prev, window_start_ms=start,
                          window_end_ms=start + W, frames=[FrameRef.of_bytes(height, start, b"f%d" % height, True)],
                          proposer=self.addr(NODE))
        ledger.anchor(blk.header)

    def formed(self, **kw) -> bytes:
        p = self.proposal(**kw)
        self.client(BANK).propose(p)
        sid = agreement.session_id(self.client(BANK).domain, p)
        self.client(CUSTOMER).respond(sid, True)
        return sid

    def agreement_sig(self, signer: int, sid: bytes, root: bytes) -> bytes:
        data = agreement.agreement_data(self.client(0).domain, sid, DOC, root)
        return agreement.sign_typed(self.key(signer), data)

    def root(self, sid: bytes) -> bytes:
        info = self.client(0).session(sid)
        members = self.client(0).members(sid)
        leaves = session_evidence(self.chain.ledger(0), members.cameras, info.start_ms, info.end_ms)
        return agreement.evidence_root(leaves)

    def advance(self, seconds: int) -> None:
        self.chain.w3.provider.make_request("evm_increaseTime", [seconds])
        self.chain.w3.provider.make_request("evm_mine", [])


@pytest.fixture
def env(chain_env):
    chain_env.consortium(BANK).register_camera(IPS[0], b"\x11" * 32, b"\x01" * 32)
    chain_env.consortium(CUSTOMER).register_camera(IPS[1], b"\x12" * 32, b"\x02" * 32)
    chain_env.consortium(0).seal_genesis()
    e = Env(chain_env)
    for cam in (0, 1):
        e.anchor(cam, 1, W)
        e.anchor(cam, 2, 2 * W)
    return e


def test_ids_and_digests_match_the_pure_core(env):
    p = env.proposal()
    c = env.client(0)
    sid = agreement.session_id(c.domain, p)
    assert c.proposal_id(p) == sid
    root = b"\x42" * 32
    env.client(BANK).propose(p)
    assert c.agreement_digest(sid, root) == agreement.digest(agreement.agreement_data(c.domain, sid, DOC, root))
    assert bytes(c.contract.functions.responseDigest(sid, True).call()) == agreement.digest(
        agreement.response_data(c.domain, sid, True))
    assert bytes(c.contract.functions.cancelDigest(sid).call()) == agreement.digest(agreement.cancel_data(c.domain, sid))


def test_lifecycle_propose_accept_form_sign_complete(env):
    p = env.proposal()
    res = env.client(BANK).propose(p)
    sid = agreement.session_id(env.client(0).domain, p)
    proposed = events(env.client(0).contract, "SessionProposed", res.receipt)[0].args
    assert bytes(proposed.sessionId) == sid and list(proposed.parties) == list(p.parties)
    info = env.client(0).session(sid)
    assert (info.status, info.accepted, info.party_count) == (SessionStatus.PROPOSED, 1, 2)  # proposing = accepting
    assert env.client(0).party_state(sid, env.addr(BANK)).response == PartyResponse.ACCEPTED

    res = env.client(CUSTOMER).respond(sid, True)
    assert [bytes(e.args.sessionId) for e in events(env.client(0).contract, "SessionFormed", res.receipt)] == [sid]
    assert env.client(0).session(sid).status == SessionStatus.FORMED

    root = env.root(sid)
    assert len(session_evidence(env.chain.ledger(0), CAMS, W, 3 * W)) == 4
    relayer = env.client(RELAYER)  # anyone may relay: the signature names the party
    for i, party in enumerate((BANK, CUSTOMER)):
        sig = env.agreement_sig(party, sid, root)
        res = relayer.sign(sid, root, sig)
        signed = events(relayer.contract, "AgreementSigned", res.receipt)[0].args
        assert (signed.party, bytes(signed.signature), bytes(signed.evidenceRoot)) == (env.addr(party), sig, root)
        assert env.client(0).signature_of(sid, env.addr(party)) == sig
        assert env.client(0).session(sid).signed_count == i + 1
    completed = events(relayer.contract, "SessionCompleted", res.receipt)
    assert [bytes(e.args.evidenceRoot) for e in completed] == [root]
    info = env.client(0).session(sid)
    assert (info.status, info.evidence_root) == (SessionStatus.COMPLETED, root)
    with pytest.raises(reverts.SessionNotOpen):
        env.client(BANK).cancel(sid)


def test_signed_variants_relay_propose_respond_and_cancel(env):
    c = env.client(RELAYER)
    p = env.proposal()
    sig = agreement.sign_typed(env.key(BANK), agreement.proposal_data(c.domain, p))
    c.propose_with_signature(p, sig)
    sid = agreement.session_id(c.domain, p)
    assert c.session(sid).initiator == env.addr(BANK)
    with pytest.raises(reverts.SessionExists):  # a replayed proposal
        c.propose_with_signature(p, sig)
    other = env.proposal(salt=b"\x02" * 32)
    with pytest.raises(reverts.WrongSigner):  # signed by the customer, claims the bank as initiator
        c.propose_with_signature(other, agreement.sign_typed(env.key(CUSTOMER), agreement.proposal_data(c.domain, other)))

    accept = agreement.sign_typed(env.key(CUSTOMER), agreement.response_data(c.domain, sid, True))
    with pytest.raises(reverts.NotAParty):  # the signature says accept; relayed as decline it is someone else's
        c.respond_with_signature(sid, False, accept)
    c.respond_with_signature(sid, True, accept)
    assert c.session(sid).status == SessionStatus.FORMED
    with pytest.raises(reverts.SessionNotProposed):
        c.respond_with_signature(sid, True, accept)

    with pytest.raises(reverts.NotInitiator):
        c.cancel_with_signature(sid, agreement.sign_typed(env.key(CUSTOMER), agreement.cancel_data(c.domain, sid)))
    cancel = agreement.sign_typed(env.key(BANK), agreement.cancel_data(c.domain, sid))
    res = c.cancel_with_signature(sid, cancel)
    assert [e.args.by for e in events(c.contract, "SessionCancelled", res.receipt)] == [env.addr(BANK)]
    assert c.session(sid).status == SessionStatus.CANCELLED
    with pytest.raises(reverts.SessionNotOpen):  # replayed cancel
        c.cancel_with_signature(sid, cancel)
    with pytest.raises(reverts.InvalidSignature):
        c.respond_with_signature(sid, True, b"\x01" * 65)


@pytest.mark.parametrize("error, change", [
    ("InvalidPartyCount", lambda e: dict(parties=(e.addr(BANK),), camera_party=(0, 0))),
    ("InvalidPartyCount", lambda e: dict(parties=tuple(e.addr(i) for i in range(9)))),
    ("InvalidCameraCount", lambda e: dict(cameras=(), camera_party=())),
    ("InvalidCameraCount", lambda e: dict(cameras=tuple(bytes([i]) * 32 for i in range(17)), camera_party=(0,) * 17)),
    ("CameraPartyMismatch", lambda e: dict(camera_party=(0,))),
    ("InvalidCameraParty", lambda e: dict(camera_party=(0, 2))),
    ("DuplicateParty", lambda e: dict(parties=(e.addr(BANK), e.addr(BANK)))),
    ("DuplicateCamera", lambda e: dict(cameras=(CAMS[0], CAMS[0]))),
    ("CameraNotActive", lambda e: dict(cameras=(CAMS[0], camera_id("10.9.9.9")))),
    ("NotAMember", lambda e: dict(parties=(e.addr(BANK), e.addr(OUTSIDER)))),
    ("InitiatorNotAParty", lambda e: dict(parties=(e.addr(0), e.addr(CUSTOMER)))),
    ("EmptyDocumentHash", lambda e: dict(document_hash=b"\x00" * 32)),
    ("InvalidTimeRange", lambda e: dict(start_ms=5 * W, end_ms=5 * W)),
    ("ExpiryNotInFuture", lambda e: dict(expires_at=e.now() - 1)),
])
def test_propose_refusals(env, error, change):
    with pytest.raises(getattr(reverts, error)):
        env.client(BANK).propose(env.proposal(**change(env)))


def test_propose_by_a_wrong_caller_and_a_revoked_camera(env):
    with pytest.raises(reverts.NotInitiator):  # wrong caller: the customer sends the bank's proposal
        env.client(CUSTOMER).propose(env.proposal())
    env.chain.consortium(BANK).revoke_camera(CAMS[0])
    with pytest.raises(reverts.CameraNotActive):
        env.client(BANK).propose(env.proposal())


def test_respond_refusals_decline_and_expiry(env):
    p = env.proposal(expires_at=env.now() + 100)
    env.client(BANK).propose(p)
    sid = agreement.session_id(env.client(0).domain, p)
    with pytest.raises(reverts.UnknownSession):
        env.client(CUSTOMER).respond(b"\x07" * 32, True)
    with pytest.raises(reverts.NotAParty):  # wrong caller
        env.client(OUTSIDER).respond(sid, True)
    with pytest.raises(reverts.AlreadyResponded):
        env.client(BANK).respond(sid, False)
    env.advance(200)
    assert env.client(0).session(sid).status == SessionStatus.EXPIRED
    with pytest.raises(reverts.SessionNotProposed) as info:
        env.client(CUSTOMER).respond(sid, True)
    assert info.value.args_by_name["status"] == SessionStatus.EXPIRED
    with pytest.raises(reverts.SessionNotOpen):
        env.client(BANK).cancel(sid)

    declined = env.proposal(salt=b"\x03" * 32, expires_at=env.now() + 3600)
    env.client(BANK).propose(declined)
    did = agreement.session_id(env.client(0).domain, declined)
    res = env.client(CUSTOMER).respond(did, False)
    assert [e.args.party for e in events(env.client(0).contract, "SessionDeclined", res.receipt)] == [env.addr(CUSTOMER)]
    assert env.client(0).session(did).status == SessionStatus.DECLINED
    with pytest.raises(reverts.SessionNotFormed):
        env.client(RELAYER).sign(did, b"\x05" * 32, env.agreement_sig(BANK, did, b"\x05" * 32))


def test_cancel_by_a_wrong_caller_then_by_the_initiator(env):
    sid = env.formed()
    with pytest.raises(reverts.NotInitiator):
        env.client(CUSTOMER).cancel(sid)
    with pytest.raises(reverts.NotInitiator):
        env.client(OUTSIDER).cancel(sid)
    env.client(BANK).cancel(sid)
    with pytest.raises(reverts.SessionNotFormed):
        env.client(RELAYER).sign(sid, env.root(sid), env.agreement_sig(BANK, sid, env.root(sid)))


def test_sign_refusals(env):
    p = env.proposal()
    env.client(BANK).propose(p)
    sid = agreement.session_id(env.client(0).domain, p)
    root = env.root(sid)
    relayer = env.client(RELAYER)
    with pytest.raises(reverts.SessionNotFormed):  # not yet formed
        relayer.sign(sid, root, env.agreement_sig(BANK, sid, root))
    env.client(CUSTOMER).respond(sid, True)
    with pytest.raises(reverts.NotAParty):  # wrong signer: an outsider's signature
        relayer.sign(sid, root, env.agreement_sig(OUTSIDER, sid, root))
    with pytest.raises(reverts.NotAParty):  # the bank's signature of another root, offered for this one
        relayer.sign(sid, root, env.agreement_sig(BANK, sid, b"\x09" * 32))
    with pytest.raises(reverts.InvalidSignature):
        relayer.sign(sid, root, b"\x00" * 65)
    with pytest.raises(reverts.EmptyEvidenceRoot):
        relayer.sign(sid, b"\x00" * 32, env.agreement_sig(BANK, sid, b"\x00" * 32))
    sig = env.agreement_sig(BANK, sid, root)
    relayer.sign(sid, root, sig)
    with pytest.raises(reverts.AlreadySigned):  # a replayed signature
        relayer.sign(sid, root, sig)
    other = b"\x0a" * 32
    with pytest.raises(reverts.EvidenceMismatch):
        relayer.sign(sid, other, env.agreement_sig(CUSTOMER, sid, other))


def test_risk_warning_blocks_signing_until_it_clears(env):
    sid = env.formed()
    root = env.root(sid)
    env.chain.ledger(4).raise_risk(CAMS[1], "stream unhealthy at every node", 2 * W)
    assert env.client(0).risk_of(sid) == (True, CAMS[1])
    sig = env.agreement_sig(CUSTOMER, sid, root)
    with pytest.raises(reverts.RiskActive) as info:
        env.client(RELAYER).sign(sid, root, sig)
    assert info.value.args_by_name["cameraId"] == CAMS[1]
    env.chain.ledger(4).clear_risk(CAMS[1])
    assert env.client(0).risk_of(sid) == (False, b"\x00" * 32)
    env.client(RELAYER).sign(sid, root, sig)
    assert env.client(0).party_state(sid, env.addr(CUSTOMER)).signed


def test_recording_not_over_and_incomplete_evidence(env):
    future_end = (env.now() + 3600) * 1000
    sid = env.formed(start_ms=W, end_ms=future_end)
    with pytest.raises(EvidenceIncomplete):
        env.root(sid)
    root = agreement.evidence_root(session_evidence(env.chain.ledger(0), CAMS, W, future_end, require_complete=False))
    with pytest.raises(reverts.RecordingNotOver):
        env.client(RELAYER).sign(sid, root, env.agreement_sig(BANK, sid, root))


def test_constructor_limits(env):
    signer = env.chain.signer(0)
    with pytest.raises(reverts.InvalidLimits):
        signer.deploy("SigningSession", env.chain.deployment.video_ledger, 1, 4)
    with pytest.raises(reverts.InvalidLimits):
        signer.deploy("SigningSession", env.chain.deployment.video_ledger, 4, 65)
    contract, _ = signer.deploy("SigningSession", env.chain.deployment.video_ledger, 32, 64)
    assert contract.functions.consortium().call() == env.chain.deployment.consortium
    assert env.client(0).limits() == (8, 16)


# ---------------------------------------------------------------- pure evidence root


def _header(cam: bytes, height: int, start: int, end: int, salt: bytes = b"") -> object:
    from offchain.core.block import BlockHeader
    return BlockHeader(cam, height, hashlib.sha256(salt + bytes([height])).digest(), start, end, 0, b"\x00" * 32,
                       b"\x00" * 32, "0x" + "00" * 20)


def test_evidence_leaves_select_overlapping_blocks_in_camera_order():
    a, b = CAMS
    blocks = {b: [_header(b, 2, 100, 200), _header(b, 1, 0, 100)], a: [_header(a, 1, 0, 50), _header(a, 2, 50, 150),
                                                                      _header(a, 3, 150, 250)]}
    leaves = agreement.evidence_leaves((a, b), 60, 150, blocks)
    assert [(leaf.camera_id, leaf.height) for leaf in leaves] == [(a, 2), (b, 1), (b, 2)]
    root = agreement.evidence_root(leaves)
    tree = agreement.evidence_tree(leaves)
    for leaf in leaves:  # every block is provable against the root with MerkleProof-compatible proofs
        proof = tree.get_proof(leaf.as_values())
        assert agreement.StandardMerkleTree.verify_with_root(root, list(agreement.EVIDENCE_LEAF_ENCODING),
                                                             leaf.as_values(), proof)
    changed = dict(blocks)
    changed[b] = [_header(b, 2, 100, 200, salt=b"x"), _header(b, 1, 0, 100)]
    assert agreement.evidence_root(agreement.evidence_leaves((a, b), 60, 150, changed)) != root
    with pytest.raises(agreement.EvidenceError):
        agreement.evidence_leaves((a,), 0, 100, {a: [_header(b, 1, 0, 100)]})
    with pytest.raises(agreement.EvidenceError):
        agreement.evidence_root(agreement.evidence_leaves((a, b), 1000, 2000, blocks))
