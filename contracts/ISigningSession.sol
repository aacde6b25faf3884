// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title What SigningSession reads from the consortium registry
/// @dev A narrow view of `Consortium`, declared here so that SigningSession's bytecode (and its
///      committed artifact) does not change when Consortium.sol changes elsewhere.
interface IConsortiumMembership {
    /// @param account any address
    /// @return whether `account` is an active consortium member
    function isMember(address account) external view returns (bool);

    /// @param cameraId keccak256 of the camera's IP
    /// @return whether the camera is whitelisted and not revoked
    function isCameraActive(bytes32 cameraId) external view returns (bool);
}

/// @title What SigningSession reads from the video ledger: its consortium and its risk warnings
/// @dev Mirrors `VideoLedger.Risk` field for field (the ABI decoding depends on the layout).
interface IRiskRegister {
    /// @notice A camera's risk warning as VideoLedger records it (S4).
    struct Risk {
        bool active;
        uint64 raisedAt;
        uint64 sinceMs;
        address raisedBy;
        string reason;
    }

    /// @return the consortium whose nodes and cameras govern the ledger
    function consortium() external view returns (address);

    /// @param cameraId keccak256 of the camera's IP
    /// @return the camera's current risk record (`active` false when none was raised or it cleared)
    function risk(bytes32 cameraId) external view returns (Risk memory);
}

/// @title FrameLedger signing sessions (C5, S3, S4)
/// @notice An initiator proposes a session: its parties, their cameras, the hash of the document
///         to sign, the capture time range of the recording and a deadline for the answers. Every
///         party accepts or declines; the session forms only when all accepted, and expires when
///         the deadline passes first. After the recording every party signs an EIP-712
///         `Agreement(sessionId, documentHash, evidenceRoot)`; the contract records each
///         signature and the session completes when all parties signed the same evidence root.
///         While a risk warning is active for any camera of the session, signing reverts.
/// @dev Every action exists as a direct call (the party is `msg.sender`) and, except for signing,
///      as a `...WithSignature` variant that anyone may relay (the party is the EIP-712 signer).
///      No nonces are needed: each signed action can take effect once only (a session id exists
///      once, a party responds once and signs once, a session is cancelled once).
interface ISigningSession {
    /// @notice Stored and derived states. `Expired` is derived: a proposal past its deadline.
    enum Status {
        None,
        Proposed,
        Formed,
        Completed,
        Declined,
        Cancelled,
        Expired
    }

    /// @notice A party's answer to the proposal.
    enum Response {
        None,
        Accepted,
        Declined
    }

    /// @notice What the initiator proposes. `cameras[i]` belongs to `parties[cameraParty[i]]`.
    ///         The session id is the EIP-712 digest of this struct (see `proposalId`).
    struct Proposal {
        address initiator;
        address[] parties;
        bytes32[] cameras;
        uint8[] cameraParty;
        bytes32 documentHash;
        uint64 startMs;
        uint64 endMs;
        uint64 expiresAt;
        bytes32 salt;
    }

    /// @notice A session as `session(id)` reports it (status already derived).
    struct SessionView {
        address initiator;
        Status status;
        uint16 partyCount;
        uint16 accepted;
        uint16 signedCount;
        uint64 startMs;
        uint64 endMs;
        uint64 expiresAt;
        bytes32 documentHash;
        bytes32 evidenceRoot;
    }

    // ---------------------------------------------------------------- errors
    error UnknownSession(bytes32 sessionId);
    error SessionExists(bytes32 sessionId);
    error NotInitiator(bytes32 sessionId, address account);
    error NotAParty(bytes32 sessionId, address account);
    error NotAMember(address account);
    error InitiatorNotAParty(address initiator);
    error InvalidPartyCount(uint256 count, uint256 max);
    error InvalidCameraCount(uint256 count, uint256 max);
    error CameraPartyMismatch(uint256 cameras, uint256 owners);
    error InvalidCameraParty(uint256 index, uint8 party);
    error DuplicateParty(address account);
    error DuplicateCamera(bytes32 cameraId);
    error CameraNotActive(bytes32 cameraId);
    error EmptyDocumentHash();
    error InvalidTimeRange(uint64 startMs, uint64 endMs);
    error ExpiryNotInFuture(uint64 expiresAt, uint256 now_);
    error InvalidLimits(uint16 maxParties, uint16 maxCameras);
    error InvalidSignature();
    error WrongSigner(address expected, address recovered);
    error SessionNotProposed(bytes32 sessionId, Status status);
    error SessionNotFormed(bytes32 sessionId, Status status);
    error SessionNotOpen(bytes32 sessionId, Status status);
    error AlreadyResponded(bytes32 sessionId, address party);
    error AlreadySigned(bytes32 sessionId, address party);
    error RecordingNotOver(bytes32 sessionId, uint64 endMs, uint256 nowMs);
    error EmptyEvidenceRoot();
    error EvidenceMismatch(bytes32 sessionId, bytes32 recorded, bytes32 offered);
    error RiskActive(bytes32 sessionId, bytes32 cameraId);

    // ---------------------------------------------------------------- events
    /// @notice A session was proposed; the initiator's proposal counts as its acceptance.
    event SessionProposed(
        bytes32 indexed sessionId,
        address indexed initiator,
        bytes32 documentHash,
        address[] parties,
        bytes32[] cameras,
        uint8[] cameraParty,
        uint64 startMs,
        uint64 endMs,
        uint64 expiresAt
    );
    /// @notice A party answered the proposal.
    event SessionResponded(bytes32 indexed sessionId, address indexed party, bool accepted);
    /// @notice Every party accepted (C5).
    event SessionFormed(bytes32 indexed sessionId);
    /// @notice A party declined: the session is over.
    event SessionDeclined(bytes32 indexed sessionId, address indexed party);
    /// @notice The initiator withdrew the session before it completed.
    event SessionCancelled(bytes32 indexed sessionId, address indexed by);
    /// @notice A party's EIP-712 agreement signature, recorded (S3).
    event AgreementSigned(bytes32 indexed sessionId, address indexed party, bytes32 evidenceRoot, bytes signature);
    /// @notice Every party signed the same evidence root.
    event SessionCompleted(bytes32 indexed sessionId, bytes32 evidenceRoot);

    // ---------------------------------------------------------------- writes
    /// @notice Propose a session as `msg.sender`, who must be `p.initiator`.
    /// @param p the proposal
    /// @return sessionId the proposal's EIP-712 digest
    function propose(Proposal calldata p) external returns (bytes32 sessionId);

    /// @notice Propose on behalf of `p.initiator`, who signed the `Proposal` typed data.
    /// @param p the proposal
    /// @param signature the initiator's 65-byte EIP-712 signature of `p`
    /// @return sessionId the proposal's EIP-712 digest (the digest the initiator signed)
    function proposeWithSignature(Proposal calldata p, bytes calldata signature) external returns (bytes32 sessionId);

    /// @notice Accept or decline a proposed session as `msg.sender`.
    /// @param sessionId the session
    /// @param accept true to accept, false to decline
    function respond(bytes32 sessionId, bool accept) external;

    /// @notice Accept or decline on behalf of the party that signed `Response(sessionId, accept)`.
    /// @param sessionId the session
    /// @param accept true to accept, false to decline
    /// @param signature the party's EIP-712 signature
    function respondWithSignature(bytes32 sessionId, bool accept, bytes calldata signature) external;

    /// @notice Withdraw a proposed or formed session, as its initiator.
    /// @param sessionId the session
    function cancel(bytes32 sessionId) external;

    /// @notice Withdraw on behalf of the initiator, who signed `Cancel(sessionId)`.
    /// @param sessionId the session
    /// @param signature the initiator's EIP-712 signature
    function cancelWithSignature(bytes32 sessionId, bytes calldata signature) external;

    /// @notice Record a party's signature of `Agreement(sessionId, documentHash, evidenceRoot)`.
    ///         Anyone may relay it; the signer must be a party that has not signed yet.
    /// @param sessionId the session
    /// @param evidenceRoot the evidence root the party signed (the first signature fixes it)
    /// @param signature the party's 65-byte EIP-712 signature
    /// @return party the recovered signer
    function sign(bytes32 sessionId, bytes32 evidenceRoot, bytes calldata signature) external returns (address party);

    // ---------------------------------------------------------------- views
    /// @param sessionId the session
    /// @return the session with its derived status
    function session(bytes32 sessionId) external view returns (SessionView memory);

    /// @param sessionId the session
    /// @return parties the session's parties, in proposal order
    /// @return cameras the session's cameras
    /// @return cameraParty for each camera, the index of the party it belongs to
    function membersOf(bytes32 sessionId)
        external
        view
        returns (address[] memory parties, bytes32[] memory cameras, uint8[] memory cameraParty);

    /// @param sessionId the session
    /// @param account any address
    /// @return isParty whether `account` is a party of the session
    /// @return response the party's answer so far
    /// @return signed whether the party has signed the agreement
    function partyState(bytes32 sessionId, address account)
        external
        view
        returns (bool isParty, Response response, bool signed);

    /// @param sessionId the session
    /// @param party a party
    /// @return the party's recorded agreement signature (empty before it signed)
    function signatureOf(bytes32 sessionId, address party) external view returns (bytes memory);

    /// @param sessionId the session
    /// @return active whether any camera of the session has an active risk warning
    /// @return cameraId the first such camera (zero when none)
    function riskOf(bytes32 sessionId) external view returns (bool active, bytes32 cameraId);

    /// @param p a proposal
    /// @return the session id `p` would get: its EIP-712 digest under this contract's domain
    function proposalId(Proposal calldata p) external view returns (bytes32);

    /// @param sessionId the session
    /// @param accept the answer
    /// @return the EIP-712 digest a party signs to respond
    function responseDigest(bytes32 sessionId, bool accept) external view returns (bytes32);

    /// @param sessionId the session
    /// @return the EIP-712 digest the initiator signs to cancel
    function cancelDigest(bytes32 sessionId) external view returns (bytes32);

    /// @param sessionId the session
    /// @param evidenceRoot the evidence root
    /// @return the EIP-712 digest a party signs to agree
    function agreementDigest(bytes32 sessionId, bytes32 evidenceRoot) external view returns (bytes32);
}
