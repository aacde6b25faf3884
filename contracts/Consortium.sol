// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EnumerableSet} from "@openzeppelin/contracts/utils/structs/EnumerableSet.sol";

/// @title FrameLedger consortium registry
/// @notice Who belongs to the consortium (members with roles and multi-level admission), which
///         accounts run nodes, which cameras may feed it (the whitelist), the genesis hash and the
///         per-camera head blocks that every camera's video chain starts from.
/// @dev Seeds 000/001, features C1-C4. Membership is a tree: authorities admit operators,
///      operators admit their viewers. An applicant names the member it applies under (its parent);
///      it is admitted once the parent has confirmed and at least `admissionThreshold` members of
///      the parent's rank or above have confirmed in total.
contract Consortium is AccessControl {
    using EnumerableSet for EnumerableSet.AddressSet;
    using EnumerableSet for EnumerableSet.Bytes32Set;

    /// @notice Governs consortium-wide settings: nodes, quorum, thresholds, the genesis seal.
    bytes32 public constant GOVERNOR_ROLE = keccak256("GOVERNOR_ROLE");

    /// @notice Membership ranks, highest first. `None` means "not a member".
    enum Role {
        None,
        Authority,
        Operator,
        Viewer
    }

    struct Member {
        Role role;
        bool active;
        address parent;
        uint64 admittedAt;
        string name;
    }

    struct Application {
        Role role;
        bool open;
        bool parentConfirmed;
        uint16 confirmations;
        address parent;
        uint64 appliedAt;
        uint64 round;
        string name;
    }

    struct Camera {
        string ip;
        bytes devicePublicKey;
        address owner;
        bytes32 group;
        uint64 registeredAt;
        bool active;
        uint64 headTimestamp;
        bytes32 headBlock;
    }

    // ---------------------------------------------------------------- errors
    error NotMember(address account);
    error NotActiveMember(address account);
    error AlreadyMember(address account);
    error InvalidRole(Role role);
    error InvalidParent(address parent, Role applyingFor);
    error NoOpenApplication(address applicant);
    error ApplicationAlreadyOpen(address applicant);
    error NotEligibleToConfirm(address confirmer, address applicant);
    error AlreadyConfirmed(address confirmer, address applicant);
    error CannotRemoveMember(address caller, address member);
    error NotANode(address account);
    error NodeAlreadyRegistered(address node);
    error InvalidQuorum(uint16 quorum, uint256 nodeCount);
    error InvalidThreshold(uint16 threshold);
    error CameraAlreadyRegistered(bytes32 cameraId);
    error UnknownCamera(bytes32 cameraId);
    error CameraIsRevoked(bytes32 cameraId);
    error NotCameraOwner(address caller, bytes32 cameraId);
    error NotAllowedToRegisterCameras(address caller);
    error EmptyCameraIp();
    error EmptyDeviceKey();
    error GenesisAlreadySealed();
    error GenesisNotSealed();
    error NoCameras();

    // ---------------------------------------------------------------- events
    event MemberApplied(address indexed applicant, Role role, address indexed parent, string name, uint64 round);
    event MemberConfirmed(address indexed applicant, address indexed confirmer, uint16 confirmations);
    event MemberAdmitted(address indexed member, Role role, address indexed parent, string name);
    event ApplicationWithdrawn(address indexed applicant);
    event MemberRemoved(address indexed member, address indexed by);
    event AdmissionThresholdChanged(uint16 threshold);
    event NodeAdded(address indexed node, address indexed operatedBy);
    event NodeRemoved(address indexed node);
    event QuorumChanged(uint16 quorum);
    event CameraRegistered(bytes32 indexed cameraId, string ip, address indexed owner, bytes32 indexed group, bytes devicePublicKey);
    event CameraKeyRotated(bytes32 indexed cameraId, bytes devicePublicKey);
    event CameraRevoked(bytes32 indexed cameraId, address indexed by);
    event HeadBlockSet(bytes32 indexed cameraId, bytes32 headBlock, uint64 timestamp);
    event GenesisSealed(uint256 cameraCount, uint64 timestamp);

    // ---------------------------------------------------------------- state
    mapping(address => Member) private _members;
    mapping(address => Application) private _applications;
    /// @dev applicant => application round => confirmer => confirmed. Rounds make a re-application start clean.
    mapping(address => mapping(uint64 => mapping(address => bool))) private _confirmedBy;
    EnumerableSet.AddressSet private _memberSet;

    EnumerableSet.AddressSet private _nodes;
    mapping(address => address) public nodeOperator;
    /// @notice Attestations (the proposer's anchor included) that make a video block final.
    uint16 public quorum;
    /// @notice Confirmations an applicant needs in total (the parent's included).
    uint16 public admissionThreshold;

    mapping(bytes32 => Camera) private _cameras;
    EnumerableSet.Bytes32Set private _cameraIds;

    /// @dev Private so that the getter can be restricted to members. This hides the value from
    ///      other contracts and from the member-checking RPC path only: anyone who runs a chain
    ///      node can read raw storage. Confidentiality comes from the permissioned network.
    bytes32 private _genesisHash;
    uint64 private _genesisTimestamp;

    /// @param founder first authority and governor of the consortium
    /// @param founderName human-readable name of the founding authority
    constructor(address founder, string memory founderName) {
        _grantRole(DEFAULT_ADMIN_ROLE, founder);
        _grantRole(GOVERNOR_ROLE, founder);
        _admit(founder, Role.Authority, address(0), founderName);
        quorum = 1;
        admissionThreshold = 1;
        emit QuorumChanged(1);
        emit AdmissionThresholdChanged(1);
    }

    // ------------------------------------------------------------ membership

    /// @notice Apply to join under `parent` (an authority for operators, an operator for viewers;
    ///         `address(0)` for an authority, confirmed by existing authorities).
    function applyForMembership(Role role, address parent, string calldata name) external {
        if (_members[msg.sender].active) revert AlreadyMember(msg.sender);
        if (role == Role.None) revert InvalidRole(role);
        Application storage app = _applications[msg.sender];
        if (app.open) revert ApplicationAlreadyOpen(msg.sender);
        if (role == Role.Authority) {
            if (parent != address(0)) revert InvalidParent(parent, role);
        } else {
            Member storage p = _members[parent];
            if (!p.active || uint8(p.role) != uint8(role) - 1) revert InvalidParent(parent, role);
        }
        app.role = role;
        app.parent = parent;
        app.open = true;
        app.parentConfirmed = role == Role.Authority; // authorities have no single parent
        app.confirmations = 0;
        app.appliedAt = uint64(block.timestamp);
        app.round += 1;
        app.name = name;
        emit MemberApplied(msg.sender, role, parent, name, app.round);
    }

    /// @notice Withdraw one's own open application.
    function withdrawApplication() external {
        Application storage app = _applications[msg.sender];
        if (!app.open) revert NoOpenApplication(msg.sender);
        app.open = false;
        emit ApplicationWithdrawn(msg.sender);
    }

    /// @notice Confirm an open application. Eligible: active members whose rank is at or above the
    ///         applicant's parent rank (authorities for operators; the operator's peers and
    ///         authorities for viewers). The applicant is admitted once the parent has confirmed
    ///         and the total reaches `admissionThreshold`.
    function confirm(address applicant) external {
        Application storage app = _applications[applicant];
        if (!app.open) revert NoOpenApplication(applicant);
        Member storage c = _members[msg.sender];
        Role parentRank = app.role == Role.Authority ? Role.Authority : Role(uint8(app.role) - 1);
        if (!c.active || uint8(c.role) > uint8(parentRank)) revert NotEligibleToConfirm(msg.sender, applicant);
        if (_confirmedBy[applicant][app.round][msg.sender]) revert AlreadyConfirmed(msg.sender, applicant);
        _confirmedBy[applicant][app.round][msg.sender] = true;
        app.confirmations += 1;
        if (msg.sender == app.parent) app.parentConfirmed = true;
        emit MemberConfirmed(applicant, msg.sender, app.confirmations);
        if (app.parentConfirmed && app.confirmations >= admissionThreshold) {
            app.open = false;
            _admit(applicant, app.role, app.parent, app.name);
        }
    }

    /// @notice Remove a member: by its parent, or by the governor.
    function removeMember(address account) external {
        Member storage m = _members[account];
        if (!m.active) revert NotActiveMember(account);
        if (msg.sender != m.parent && !hasRole(GOVERNOR_ROLE, msg.sender)) revert CannotRemoveMember(msg.sender, account);
        m.active = false;
        _memberSet.remove(account);
        emit MemberRemoved(account, msg.sender);
    }

    /// @notice Set how many confirmations admit an applicant.
    function setAdmissionThreshold(uint16 threshold) external onlyRole(GOVERNOR_ROLE) {
        if (threshold == 0) revert InvalidThreshold(threshold);
        admissionThreshold = threshold;
        emit AdmissionThresholdChanged(threshold);
    }

    // ------------------------------------------------------------------ nodes

    /// @notice Register an account that runs a consortium node, operated by an active member.
    function addNode(address node, address operatedBy) external onlyRole(GOVERNOR_ROLE) {
        if (!_members[operatedBy].active) revert NotActiveMember(operatedBy);
        if (!_nodes.add(node)) revert NodeAlreadyRegistered(node);
        nodeOperator[node] = operatedBy;
        emit NodeAdded(node, operatedBy);
    }

    /// @notice Retire a node account. The quorum must stay reachable.
    function removeNode(address node) external onlyRole(GOVERNOR_ROLE) {
        if (!_nodes.remove(node)) revert NotANode(node);
        delete nodeOperator[node];
        if (quorum > _nodes.length()) revert InvalidQuorum(quorum, _nodes.length());
        emit NodeRemoved(node);
    }

    /// @notice Set the number of node attestations that finalise a video block.
    function setQuorum(uint16 newQuorum) external onlyRole(GOVERNOR_ROLE) {
        if (newQuorum == 0 || newQuorum > _nodes.length()) revert InvalidQuorum(newQuorum, _nodes.length());
        quorum = newQuorum;
        emit QuorumChanged(newQuorum);
    }

    // ---------------------------------------------------------------- cameras

    /// @notice Whitelist a camera. The caller (an operator or authority) becomes its owner.
    /// @param ip the camera's network identity as the nodes see it; cameraId = keccak256(bytes(ip))
    /// @param devicePublicKey the key the camera signs its frame packets with (Ed25519, 32 bytes)
    /// @param group cameras of one user share a group; used to fill spans lost everywhere (I7)
    function registerCamera(string calldata ip, bytes calldata devicePublicKey, bytes32 group)
        external
        returns (bytes32 cameraId)
    {
        Member storage m = _members[msg.sender];
        if (!m.active || (m.role != Role.Authority && m.role != Role.Operator)) {
            revert NotAllowedToRegisterCameras(msg.sender);
        }
        if (bytes(ip).length == 0) revert EmptyCameraIp();
        if (devicePublicKey.length == 0) revert EmptyDeviceKey();
        cameraId = keccak256(bytes(ip));
        if (!_cameraIds.add(cameraId)) revert CameraAlreadyRegistered(cameraId);
        Camera storage c = _cameras[cameraId];
        c.ip = ip;
        c.devicePublicKey = devicePublicKey;
        c.owner = msg.sender;
        c.group = group;
        c.registeredAt = uint64(block.timestamp);
        c.active = true;
        emit CameraRegistered(cameraId, ip, msg.sender, group, devicePublicKey);
        if (_genesisHash != bytes32(0)) _setHead(cameraId, uint64(block.timestamp));
    }

    /// @notice Replace a camera's device key (key rotation, C6). Its owner only, while the owner
    ///         is still an active member: a removed member no longer speaks for its cameras.
    /// @param cameraId keccak256(bytes(ip))
    /// @param devicePublicKey the new key (Ed25519, 32 bytes)
    function rotateCameraKey(bytes32 cameraId, bytes calldata devicePublicKey) external {
        Camera storage c = _activeCamera(cameraId);
        if (msg.sender != c.owner) revert NotCameraOwner(msg.sender, cameraId);
        if (!_members[msg.sender].active) revert NotActiveMember(msg.sender);
        if (devicePublicKey.length == 0) revert EmptyDeviceKey();
        c.devicePublicKey = devicePublicKey;
        emit CameraKeyRotated(cameraId, devicePublicKey);
    }

    /// @notice Take a camera off the whitelist, for good. Its owner or an authority.
    function revokeCamera(bytes32 cameraId) external {
        Camera storage c = _activeCamera(cameraId);
        Member storage m = _members[msg.sender];
        if (msg.sender != c.owner && !(m.active && m.role == Role.Authority)) {
            revert NotCameraOwner(msg.sender, cameraId);
        }
        c.active = false;
        emit CameraRevoked(cameraId, msg.sender);
    }

    // ---------------------------------------------------------------- genesis

    /// @notice Seal the genesis hash H(IP1 ‖ … ‖ IPN ‖ timestamp) over the cameras registered so
    ///         far, once, and give each of them its head block. Later cameras get theirs on
    ///         registration.
    /// @dev The concatenation is abi.encode(string[] ips, uint64 timestamp): unambiguous, unlike
    ///      plain byte concatenation of variable-length IPs.
    function sealGenesis() external onlyRole(GOVERNOR_ROLE) returns (bytes32 genesis) {
        if (_genesisHash != bytes32(0)) revert GenesisAlreadySealed();
        uint256 n = _cameraIds.length();
        if (n == 0) revert NoCameras();
        string[] memory ips = new string[](n);
        for (uint256 i = 0; i < n; ++i) {
            ips[i] = _cameras[_cameraIds.at(i)].ip;
        }
        uint64 ts = uint64(block.timestamp);
        genesis = keccak256(abi.encode(ips, ts));
        _genesisHash = genesis;
        _genesisTimestamp = ts;
        emit GenesisSealed(n, ts);
        for (uint256 i = 0; i < n; ++i) {
            _setHead(_cameraIds.at(i), ts);
        }
    }

    /// @notice The genesis hash, for members and nodes only (see the storage note above).
    function genesisHash() external view returns (bytes32 hash, uint64 timestamp) {
        if (!_members[msg.sender].active && !_nodes.contains(msg.sender)) revert NotMember(msg.sender);
        if (_genesisHash == bytes32(0)) revert GenesisNotSealed();
        return (_genesisHash, _genesisTimestamp);
    }

    /// @notice Whether the genesis has been sealed (public: says nothing about the hash).
    function genesisSealed() external view returns (bool) {
        return _genesisHash != bytes32(0);
    }

    // ------------------------------------------------------------------ views

    function member(address account) external view returns (Member memory) {
        return _members[account];
    }

    function application(address applicant) external view returns (Application memory) {
        return _applications[applicant];
    }

    function isMember(address account) public view returns (bool) {
        return _members[account].active;
    }

    function members() external view returns (address[] memory) {
        return _memberSet.values();
    }

    function isNode(address account) external view returns (bool) {
        return _nodes.contains(account);
    }

    /// @notice Node accounts in registration order: the rotation order for block proposers.
    function nodes() external view returns (address[] memory) {
        return _nodes.values();
    }

    function nodeCount() external view returns (uint256) {
        return _nodes.length();
    }

    function camera(bytes32 cameraId) external view returns (Camera memory) {
        if (!_cameraIds.contains(cameraId)) revert UnknownCamera(cameraId);
        return _cameras[cameraId];
    }

    function isCameraActive(bytes32 cameraId) external view returns (bool) {
        return _cameras[cameraId].active;
    }

    function cameraIds() external view returns (bytes32[] memory) {
        return _cameraIds.values();
    }

    /// @notice The camera's head block (C4): keccak256(abi.encode(genesis, ip, timestamp)), zero
    ///         before the genesis is sealed. Its first video block links to it.
    function headBlock(bytes32 cameraId) external view returns (bytes32 hash, uint64 timestamp) {
        Camera storage c = _cameras[cameraId];
        return (c.headBlock, c.headTimestamp);
    }

    // --------------------------------------------------------------- internal

    function _admit(address account, Role role, address parent, string memory name) private {
        _members[account] = Member(role, true, parent, uint64(block.timestamp), name);
        _memberSet.add(account);
        emit MemberAdmitted(account, role, parent, name);
    }

    function _activeCamera(bytes32 cameraId) private view returns (Camera storage c) {
        if (!_cameraIds.contains(cameraId)) revert UnknownCamera(cameraId);
        c = _cameras[cameraId];
        if (!c.active) revert CameraIsRevoked(cameraId);
    }

    function _setHead(bytes32 cameraId, uint64 ts) private {
        Camera storage c = _cameras[cameraId];
        bytes32 head = keccak256(abi.encode(_genesisHash, c.ip, ts));
        c.headBlock = head;
        c.headTimestamp = ts;
        emit HeadBlockSet(cameraId, head, ts);
    }
}
