// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {IConsortiumMembership, IRiskRegister, ISigningSession} from "./ISigningSession.sol";

/// @title FrameLedger signing sessions
/// @notice See {ISigningSession}. Names and the document stay off chain: the contract holds the
///         parties' addresses, camera ids, the document hash and the evidence root only.
/// @dev EIP-712 domain: name "FrameLedger SigningSession", version "1", this chain and contract.
///      The evidence root is an OpenZeppelin StandardMerkleTree root over leaves
///      (bytes32 cameraId, uint64 height, bytes32 blockHash) of every anchored block of the
///      session's cameras whose window overlaps [startMs, endMs); it is computed off chain
///      (offchain/core/agreement.py, docs/SIGNING.md) and checked by every party before it signs.
contract SigningSession is ISigningSession, EIP712 {
    /// @notice Hard caps on the limits a deployment may choose: they bound the gas of `sign`
    ///         (one risk read per camera) and of `propose` (duplicate checks).
    uint16 public constant MAX_PARTIES_CAP = 32;
    uint16 public constant MAX_CAMERAS_CAP = 64;

    bytes32 public constant PROPOSAL_TYPEHASH = keccak256(
        "Proposal(address initiator,address[] parties,bytes32[] cameras,uint8[] cameraParty,bytes32 documentHash,uint64 startMs,uint64 endMs,uint64 expiresAt,bytes32 salt)"
    );
    bytes32 public constant RESPONSE_TYPEHASH = keccak256("Response(bytes32 sessionId,bool accept)");
    bytes32 public constant CANCEL_TYPEHASH = keccak256("Cancel(bytes32 sessionId)");
    bytes32 public constant AGREEMENT_TYPEHASH =
        keccak256("Agreement(bytes32 sessionId,bytes32 documentHash,bytes32 evidenceRoot)");

    struct SessionRecord {
        address initiator;
        Status status; // stored: Proposed, Formed, Completed, Declined or Cancelled
        uint16 accepted;
        uint16 signedCount;
        uint64 startMs;
        uint64 endMs;
        uint64 expiresAt;
        bytes32 documentHash;
        bytes32 evidenceRoot;
        address[] parties;
        bytes32[] cameras;
        uint8[] cameraParty;
    }

    struct PartyRecord {
        bool isParty;
        Response response;
        bool signed;
    }

    /// @notice The registry whose members may take part and whose cameras may be recorded.
    IConsortiumMembership public immutable consortium;
    /// @notice The ledger whose risk warnings gate signing (S4).
    IRiskRegister public immutable ledger;
    /// @notice Most parties a session may have (at least 2).
    uint16 public immutable maxParties;
    /// @notice Most cameras a session may have (at least 1).
    uint16 public immutable maxCameras;

    mapping(bytes32 => SessionRecord) private _sessions;
    mapping(bytes32 => mapping(address => PartyRecord)) private _partyRecords;
    mapping(bytes32 => mapping(address => bytes)) private _signatures;

    /// @param ledger_ the VideoLedger (its consortium is read from it, so the two always match)
    /// @param maxParties_ most parties per session, 2..MAX_PARTIES_CAP
    /// @param maxCameras_ most cameras per session, 1..MAX_CAMERAS_CAP
    constructor(IRiskRegister ledger_, uint16 maxParties_, uint16 maxCameras_) EIP712("FrameLedger SigningSession", "1") {
        if (maxParties_ < 2 || maxParties_ > MAX_PARTIES_CAP || maxCameras_ == 0 || maxCameras_ > MAX_CAMERAS_CAP) {
            revert InvalidLimits(maxParties_, maxCameras_);
        }
        ledger = ledger_;
        consortium = IConsortiumMembership(ledger_.consortium());
        maxParties = maxParties_;
        maxCameras = maxCameras_;
    }

    // ---------------------------------------------------------------- writes

    /// @inheritdoc ISigningSession
    function propose(Proposal calldata p) external returns (bytes32 sessionId) {
        sessionId = proposalId(p);
        if (msg.sender != p.initiator) revert NotInitiator(sessionId, msg.sender);
        return _propose(p, sessionId);
    }

    /// @inheritdoc ISigningSession
    function proposeWithSignature(Proposal calldata p, bytes calldata signature) external returns (bytes32 sessionId) {
        sessionId = proposalId(p);
        _requireSigner(sessionId, signature, p.initiator);
        return _propose(p, sessionId);
    }

    /// @inheritdoc ISigningSession
    function respond(bytes32 sessionId, bool accept) external {
        _respond(sessionId, msg.sender, accept);
    }

    /// @inheritdoc ISigningSession
    function respondWithSignature(bytes32 sessionId, bool accept, bytes calldata signature) external {
        _respond(sessionId, _recover(responseDigest(sessionId, accept), signature), accept);
    }

    /// @inheritdoc ISigningSession
    function cancel(bytes32 sessionId) external {
        _cancel(sessionId, msg.sender);
    }

    /// @inheritdoc ISigningSession
    function cancelWithSignature(bytes32 sessionId, bytes calldata signature) external {
        _cancel(sessionId, _recover(cancelDigest(sessionId), signature));
    }

    /// @inheritdoc ISigningSession
    function sign(bytes32 sessionId, bytes32 evidenceRoot, bytes calldata signature) external returns (address party) {
        SessionRecord storage s = _existing(sessionId);
        Status status = _status(s);
        if (status != Status.Formed) revert SessionNotFormed(sessionId, status);
        if (evidenceRoot == bytes32(0)) revert EmptyEvidenceRoot();
        party = _recover(agreementDigest(sessionId, evidenceRoot), signature);
        PartyRecord storage rec = _partyRecords[sessionId][party];
        if (!rec.isParty) revert NotAParty(sessionId, party);
        if (rec.signed) revert AlreadySigned(sessionId, party);
        if (uint256(s.endMs) > block.timestamp * 1000) revert RecordingNotOver(sessionId, s.endMs, block.timestamp * 1000);
        (bool risky, bytes32 cameraId) = _riskOf(s);
        if (risky) revert RiskActive(sessionId, cameraId);
        if (s.signedCount == 0) s.evidenceRoot = evidenceRoot;
        else if (s.evidenceRoot != evidenceRoot) revert EvidenceMismatch(sessionId, s.evidenceRoot, evidenceRoot);

        rec.signed = true;
        _signatures[sessionId][party] = signature;
        s.signedCount += 1;
        emit AgreementSigned(sessionId, party, evidenceRoot, signature);
        if (s.signedCount == s.parties.length) {
            s.status = Status.Completed;
            emit SessionCompleted(sessionId, evidenceRoot);
        }
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc ISigningSession
    function session(bytes32 sessionId) external view returns (SessionView memory) {
        SessionRecord storage s = _existing(sessionId);
        return SessionView({
            initiator: s.initiator,
            status: _status(s),
            partyCount: uint16(s.parties.length),
            accepted: s.accepted,
            signedCount: s.signedCount,
            startMs: s.startMs,
            endMs: s.endMs,
            expiresAt: s.expiresAt,
            documentHash: s.documentHash,
            evidenceRoot: s.evidenceRoot
        });
    }

    /// @inheritdoc ISigningSession
    function membersOf(bytes32 sessionId)
        external
        view
        returns (address[] memory parties, bytes32[] memory cameras, uint8[] memory cameraParty)
    {
        SessionRecord storage s = _existing(sessionId);
        return (s.parties, s.cameras, s.cameraParty);
    }

    /// @inheritdoc ISigningSession
    function partyState(bytes32 sessionId, address account)
        external
        view
        returns (bool isParty, Response response, bool signed)
    {
        _existing(sessionId);
        PartyRecord storage rec = _partyRecords[sessionId][account];
        return (rec.isParty, rec.response, rec.signed);
    }

    /// @inheritdoc ISigningSession
    function signatureOf(bytes32 sessionId, address party) external view returns (bytes memory) {
        _existing(sessionId);
        return _signatures[sessionId][party];
    }

    /// @inheritdoc ISigningSession
    function riskOf(bytes32 sessionId) external view returns (bool active, bytes32 cameraId) {
        return _riskOf(_existing(sessionId));
    }

    /// @inheritdoc ISigningSession
    function proposalId(Proposal calldata p) public view returns (bytes32) {
        bytes32 structHash = keccak256(
            abi.encode(
                PROPOSAL_TYPEHASH,
                p.initiator,
                keccak256(abi.encodePacked(p.parties)),
                keccak256(abi.encodePacked(p.cameras)),
                keccak256(abi.encodePacked(p.cameraParty)),
                p.documentHash,
                p.startMs,
                p.endMs,
                p.expiresAt,
                p.salt
            )
        );
        return _hashTypedDataV4(structHash);
    }

    /// @inheritdoc ISigningSession
    function responseDigest(bytes32 sessionId, bool accept) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(RESPONSE_TYPEHASH, sessionId, accept)));
    }

    /// @inheritdoc ISigningSession
    function cancelDigest(bytes32 sessionId) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(CANCEL_TYPEHASH, sessionId)));
    }

    /// @inheritdoc ISigningSession
    function agreementDigest(bytes32 sessionId, bytes32 evidenceRoot) public view returns (bytes32) {
        bytes32 documentHash = _sessions[sessionId].documentHash;
        return _hashTypedDataV4(keccak256(abi.encode(AGREEMENT_TYPEHASH, sessionId, documentHash, evidenceRoot)));
    }

    // --------------------------------------------------------------- internal

    /// @dev Validate and store a proposal; the initiator's proposal is its acceptance.
    function _propose(Proposal calldata p, bytes32 sessionId) internal returns (bytes32) {
        if (_sessions[sessionId].initiator != address(0)) revert SessionExists(sessionId);
        _validateProposal(p);
        SessionRecord storage s = _sessions[sessionId];
        s.initiator = p.initiator;
        s.status = Status.Proposed;
        s.startMs = p.startMs;
        s.endMs = p.endMs;
        s.expiresAt = p.expiresAt;
        s.documentHash = p.documentHash;
        s.parties = p.parties;
        s.cameras = p.cameras;
        s.cameraParty = p.cameraParty;
        mapping(address => PartyRecord) storage records = _partyRecords[sessionId];
        for (uint256 i = 0; i < p.parties.length; ++i) {
            address party = p.parties[i];
            if (records[party].isParty) revert DuplicateParty(party);
            if (!consortium.isMember(party)) revert NotAMember(party);
            records[party].isParty = true;
        }
        _emitProposed(sessionId, p);
        _accept(sessionId, s, records[p.initiator], p.initiator);
        return sessionId;
    }

    /// @dev Checks that need no storage: counts, ranges, hashes, the initiator among the parties,
    ///      cameras distinct, active and each owned by a listed party.
    function _validateProposal(Proposal calldata p) internal view {
        uint256 nParties = p.parties.length;
        uint256 nCameras = p.cameras.length;
        if (nParties < 2 || nParties > maxParties) revert InvalidPartyCount(nParties, maxParties);
        if (nCameras == 0 || nCameras > maxCameras) revert InvalidCameraCount(nCameras, maxCameras);
        if (p.cameraParty.length != nCameras) revert CameraPartyMismatch(nCameras, p.cameraParty.length);
        if (p.documentHash == bytes32(0)) revert EmptyDocumentHash();
        if (p.endMs <= p.startMs) revert InvalidTimeRange(p.startMs, p.endMs);
        if (p.expiresAt <= block.timestamp) revert ExpiryNotInFuture(p.expiresAt, block.timestamp);
        bool initiatorListed = false;
        for (uint256 i = 0; i < nParties; ++i) {
            if (p.parties[i] == p.initiator) initiatorListed = true;
        }
        if (!initiatorListed) revert InitiatorNotAParty(p.initiator);
        for (uint256 i = 0; i < nCameras; ++i) {
            bytes32 cameraId = p.cameras[i];
            if (p.cameraParty[i] >= nParties) revert InvalidCameraParty(i, p.cameraParty[i]);
            if (!consortium.isCameraActive(cameraId)) revert CameraNotActive(cameraId);
            for (uint256 j = 0; j < i; ++j) {
                if (p.cameras[j] == cameraId) revert DuplicateCamera(cameraId);
            }
        }
    }

    function _emitProposed(bytes32 sessionId, Proposal calldata p) internal {
        emit SessionProposed(
            sessionId, p.initiator, p.documentHash, p.parties, p.cameras, p.cameraParty, p.startMs, p.endMs, p.expiresAt
        );
    }

    /// @dev One answer per party, while the proposal is open; a decline ends the session.
    function _respond(bytes32 sessionId, address party, bool accept) internal {
        SessionRecord storage s = _existing(sessionId);
        PartyRecord storage rec = _partyRecords[sessionId][party];
        if (!rec.isParty) revert NotAParty(sessionId, party);
        Status status = _status(s);
        if (status != Status.Proposed) revert SessionNotProposed(sessionId, status);
        if (rec.response != Response.None) revert AlreadyResponded(sessionId, party);
        if (accept) {
            _accept(sessionId, s, rec, party);
        } else {
            rec.response = Response.Declined;
            s.status = Status.Declined;
            emit SessionResponded(sessionId, party, false);
            emit SessionDeclined(sessionId, party);
        }
    }

    function _accept(bytes32 sessionId, SessionRecord storage s, PartyRecord storage rec, address party) internal {
        rec.response = Response.Accepted;
        s.accepted += 1;
        emit SessionResponded(sessionId, party, true);
        if (s.accepted == s.parties.length) {
            s.status = Status.Formed;
            emit SessionFormed(sessionId);
        }
    }

    /// @dev The initiator may withdraw until the session completes, declines or expires.
    function _cancel(bytes32 sessionId, address by) internal {
        SessionRecord storage s = _existing(sessionId);
        if (by != s.initiator) revert NotInitiator(sessionId, by);
        Status status = _status(s);
        if (status != Status.Proposed && status != Status.Formed) revert SessionNotOpen(sessionId, status);
        s.status = Status.Cancelled;
        emit SessionCancelled(sessionId, by);
    }

    function _existing(bytes32 sessionId) internal view returns (SessionRecord storage s) {
        s = _sessions[sessionId];
        if (s.initiator == address(0)) revert UnknownSession(sessionId);
    }

    /// @dev A proposal that has not formed by its deadline is expired; nothing is stored for it.
    function _status(SessionRecord storage s) internal view returns (Status) {
        if (s.status == Status.Proposed && block.timestamp > s.expiresAt) return Status.Expired;
        return s.status;
    }

    function _riskOf(SessionRecord storage s) internal view returns (bool, bytes32) {
        bytes32[] storage cameras = s.cameras;
        for (uint256 i = 0; i < cameras.length; ++i) {
            if (ledger.risk(cameras[i]).active) return (true, cameras[i]);
        }
        return (false, bytes32(0));
    }

    /// @dev ECDSA.tryRecover rejects malformed and high-s (malleable) signatures.
    function _recover(bytes32 digest, bytes calldata signature) internal pure returns (address signer) {
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signature);
        if (err != ECDSA.RecoverError.NoError) revert InvalidSignature();
        return recovered;
    }

    function _requireSigner(bytes32 digest, bytes calldata signature, address expected) internal pure {
        address recovered = _recover(digest, signature);
        if (recovered != expected) revert WrongSigner(expected, recovered);
    }
}
