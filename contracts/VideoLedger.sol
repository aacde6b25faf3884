// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Consortium} from "./Consortium.sol";
import {BlockHeader, LedgerHashes} from "./BlockHeader.sol";
import {WindowLimits} from "./WindowLimits.sol";

/// @title FrameLedger video ledger
/// @notice One hash chain of video block headers per camera (B1, B6). A node anchors a block
///         header it proposes; the other nodes attest it after checking it against their own
///         frame pools; a block is final once `Consortium.quorum()` nodes stand behind it.
/// @dev The contract enforces the chain rules itself (height, link to the previous block or the
///      camera's head block, time continuity), so a node that is wrong or dishonest cannot fork a
///      camera's history. Frames are proven against `framesRoot`, an OpenZeppelin
///      StandardMerkleTree root over leaves (bytes32 cameraId, uint64 seq, uint64 timestampMs,
///      bytes32 frameSha256).
///      Time bounds ({WindowLimits}, shared with BatchLedger): a window may end at most
///      `maxFutureMs` after `block.timestamp` and last at most `maxWindowMs`, both set at
///      deployment and changeable by the consortium's governor.
///      Finality: a block is final when `Consortium.quorum()` nodes attest it and no node
///      disputes it; one node can either attest or dispute a block, never both.
contract VideoLedger is WindowLimits {
    struct BlockRecord {
        BlockHeader header;
        uint64 anchoredAt;
        uint16 attestations;
        uint16 disputes;
        bool finalized;
    }

    /// @dev How a block is kept: the header's nine fields and the record's four in six slots
    ///      (the ABI struct `BlockRecord` would take eight), packed by size. The proposer's
    ///      attestation is implied by `proposer` instead of an `_attestedBy` slot. Together with the
    ///      chain entry that is seven fresh slots per anchor instead of ten (docs/CONTRACTS.md).
    struct StoredBlock {
        bytes32 cameraId;
        bytes32 prevHash;
        bytes32 framesRoot;
        bytes32 manifestDigest;
        address proposer; // slot 4: 20 + 8 + 4 bytes
        uint64 height;
        uint32 frameCount;
        uint64 windowStartMs; // slot 5: 8 + 8 + 8 + 2 + 2 + 1 bytes
        uint64 windowEndMs;
        uint64 anchoredAt;
        uint16 attestations;
        uint16 disputes;
        bool finalized;
    }

    // ---------------------------------------------------------------- errors
    error NotANode(address account);
    error ProposerMismatch(address sender, address proposer);
    error CameraNotActive(bytes32 cameraId);
    error CameraHasNoHead(bytes32 cameraId);
    error BlockAlreadyAnchored(bytes32 blockHash);
    error ConflictingBlock(bytes32 cameraId, uint64 height, bytes32 anchoredHash, bytes32 offeredHash);
    error UnexpectedHeight(bytes32 cameraId, uint64 expected, uint64 offered);
    error BrokenChainLink(bytes32 cameraId, bytes32 expectedPrev, bytes32 offeredPrev);
    error TimeNotContinuous(bytes32 cameraId, uint64 previousEndMs, uint64 windowStartMs);
    error InvalidFramesRoot(uint32 frameCount, bytes32 framesRoot);
    error UnknownBlock(bytes32 blockHash);
    error UnknownHeight(bytes32 cameraId, uint64 height);
    error AlreadyAttested(address node, bytes32 blockHash);
    error AlreadyDisputed(address node, bytes32 blockHash);
    error RiskAlreadyActive(bytes32 cameraId);
    error NoActiveRisk(bytes32 cameraId);
    error NotGovernor(address account);
    error AttestedAndDisputed(address node, bytes32 blockHash);

    // ---------------------------------------------------------------- events
    /// @notice The full header travels in the event, so a monitor can rebuild every chain from logs.
    event BlockAnchored(bytes32 indexed cameraId, uint64 indexed height, bytes32 indexed blockHash, BlockHeader header);
    event BlockAttested(bytes32 indexed blockHash, address indexed node, uint16 attestations);
    event BlockFinalized(bytes32 indexed blockHash, bytes32 indexed cameraId, uint64 height);
    event BlockDisputed(bytes32 indexed blockHash, address indexed node, string reason);
    /// @notice I9: every node has held the same alarm for a camera for the configured period.
    event RiskRaised(bytes32 indexed cameraId, address indexed by, string reason, uint64 sinceMs);
    event RiskCleared(bytes32 indexed cameraId, address indexed by);

    struct Risk {
        bool active;
        uint64 raisedAt;
        uint64 sinceMs;
        address raisedBy;
        string reason;
    }

    /// @notice The consortium whose nodes, cameras and quorum govern this ledger.
    Consortium public immutable consortium;

    mapping(bytes32 => StoredBlock) private _blocks;
    /// @dev cameraId => block hashes; index i holds height i + 1 (height 0 is the head block).
    mapping(bytes32 => bytes32[]) private _chains;
    mapping(bytes32 => mapping(address => bool)) private _attestedBy;
    mapping(bytes32 => mapping(address => bool)) private _disputedBy;
    mapping(bytes32 => Risk) private _risks;

    modifier onlyNode() {
        if (!consortium.isNode(msg.sender)) revert NotANode(msg.sender);
        _;
    }

    /// @dev {WindowLimits}: the consortium's governor only.
    function _authorizeWindowLimits(address account) internal view override {
        if (!consortium.hasRole(consortium.GOVERNOR_ROLE(), account)) revert NotGovernor(account);
    }

    /// @param consortium_ the registry of nodes, cameras and quorum
    /// @param maxFutureMs_ how far (ms) a window's end may lie after `block.timestamp`
    /// @param maxWindowMs_ the longest window (ms) a block may cover
    constructor(Consortium consortium_, uint64 maxFutureMs_, uint64 maxWindowMs_) {
        consortium = consortium_;
        _setWindowLimits(maxFutureMs_, maxWindowMs_);
    }

    // ---------------------------------------------------------------- writes

    /// @notice Anchor the next block of a camera's chain. The sender must be a node and the
    ///         header's proposer; the proposer's anchor counts as its attestation.
    /// @return blockHash keccak256(abi.encode(header))
    function anchor(BlockHeader calldata header) external onlyNode returns (bytes32 blockHash) {
        if (header.proposer != msg.sender) revert ProposerMismatch(msg.sender, header.proposer);
        bytes32 cameraId = header.cameraId;
        if (!consortium.isCameraActive(cameraId)) revert CameraNotActive(cameraId);
        (bytes32 head,) = consortium.headBlock(cameraId);
        if (head == bytes32(0)) revert CameraHasNoHead(cameraId);

        blockHash = hashHeader(header);
        if (_blocks[blockHash].anchoredAt != 0) revert BlockAlreadyAnchored(blockHash);

        bytes32[] storage chain = _chains[cameraId];
        uint256 length = chain.length;
        if (header.height >= 1 && header.height <= length) {
            revert ConflictingBlock(cameraId, header.height, chain[header.height - 1], blockHash);
        }
        if (header.height != length + 1) revert UnexpectedHeight(cameraId, uint64(length + 1), header.height);

        bytes32 expectedPrev = length == 0 ? head : chain[length - 1];
        if (header.prevHash != expectedPrev) revert BrokenChainLink(cameraId, expectedPrev, header.prevHash);
        _checkWindowTime(header.windowStartMs, header.windowEndMs);
        if (length > 0) {
            uint64 previousEnd = _blocks[expectedPrev].windowEndMs;
            if (header.windowStartMs < previousEnd) {
                revert TimeNotContinuous(cameraId, previousEnd, header.windowStartMs);
            }
        }
        // An empty window (everything lost everywhere) is anchored too, so the gap is on record.
        if ((header.frameCount == 0) != (header.framesRoot == bytes32(0))) {
            revert InvalidFramesRoot(header.frameCount, header.framesRoot);
        }

        StoredBlock storage rec = _blocks[blockHash];
        _store(rec, header);
        chain.push(blockHash);

        emit BlockAnchored(cameraId, header.height, blockHash, header);
        emit BlockAttested(blockHash, msg.sender, 1);
        _finalizeIfQuorum(blockHash, rec);
    }

    /// @notice Attest an anchored block after checking it against the node's own frame pool.
    function attest(bytes32 blockHash) external onlyNode {
        StoredBlock storage rec = _blocks[blockHash];
        if (rec.anchoredAt == 0) revert UnknownBlock(blockHash);
        if (_hasAttested(blockHash, rec, msg.sender)) revert AlreadyAttested(msg.sender, blockHash);
        if (_disputedBy[blockHash][msg.sender]) revert AttestedAndDisputed(msg.sender, blockHash);
        _attestedBy[blockHash][msg.sender] = true;
        rec.attestations += 1;
        emit BlockAttested(blockHash, msg.sender, rec.attestations);
        _finalizeIfQuorum(blockHash, rec);
    }

    /// @notice Put on record that this node's pool contradicts an anchored block (B4). A block
    ///         with a dispute does not become final; one disputed after it became final stays
    ///         final, with the dispute on record (`disputes` in `getBlock`, the event).
    /// @param blockHash the anchored block
    /// @param reason what this node's pool contradicts (free text, for the record)
    function dispute(bytes32 blockHash, string calldata reason) external onlyNode {
        StoredBlock storage rec = _blocks[blockHash];
        if (rec.anchoredAt == 0) revert UnknownBlock(blockHash);
        if (_disputedBy[blockHash][msg.sender]) revert AlreadyDisputed(msg.sender, blockHash);
        if (_hasAttested(blockHash, rec, msg.sender)) revert AttestedAndDisputed(msg.sender, blockHash);
        _disputedBy[blockHash][msg.sender] = true;
        rec.disputes += 1;
        emit BlockDisputed(blockHash, msg.sender, reason);
    }

    /// @notice Raise a risk warning for a camera (from the alarm centre, run by a node): its
    ///         evidence stream is unhealthy at every node. Signing apps refuse to sign while a
    ///         risk is active (S4).
    /// @param sinceMs capture time from which the stream has been unhealthy
    function raiseRisk(bytes32 cameraId, string calldata reason, uint64 sinceMs) external onlyNode {
        consortium.camera(cameraId); // reverts UnknownCamera for a camera never whitelisted
        Risk storage r = _risks[cameraId];
        if (r.active) revert RiskAlreadyActive(cameraId);
        _risks[cameraId] = Risk(true, uint64(block.timestamp), sinceMs, msg.sender, reason);
        emit RiskRaised(cameraId, msg.sender, reason, sinceMs);
    }

    /// @notice Clear a camera's risk warning once the alarm behind it has cleared.
    function clearRisk(bytes32 cameraId) external onlyNode {
        Risk storage r = _risks[cameraId];
        if (!r.active) revert NoActiveRisk(cameraId);
        r.active = false;
        emit RiskCleared(cameraId, msg.sender);
    }

    // ------------------------------------------------------------------ views

    function risk(bytes32 cameraId) external view returns (Risk memory) {
        return _risks[cameraId];
    }

    /// @notice The block hash the ledger uses: keccak256 of the ABI-encoded header.
    function hashHeader(BlockHeader calldata header) public pure returns (bytes32) {
        return LedgerHashes.hashHeader(header);
    }

    /// @notice The StandardMerkleTree leaf of one frame.
    function frameLeaf(bytes32 cameraId, uint64 seq, uint64 timestampMs, bytes32 frameSha256)
        public
        pure
        returns (bytes32)
    {
        return LedgerHashes.frameLeaf(cameraId, seq, timestampMs, frameSha256);
    }

    /// @notice Whether a frame belongs to an anchored block (single proof).
    function verifyFrame(
        bytes32 blockHash,
        bytes32[] calldata proof,
        uint64 seq,
        uint64 timestampMs,
        bytes32 frameSha256
    ) external view returns (bool) {
        StoredBlock storage rec = _blocks[blockHash];
        if (rec.anchoredAt == 0) revert UnknownBlock(blockHash);
        bytes32 leaf = frameLeaf(rec.cameraId, seq, timestampMs, frameSha256);
        return MerkleProof.verifyCalldata(proof, rec.framesRoot, leaf);
    }

    /// @notice Whether a set of frame leaves belongs to an anchored block (multiproof).
    function verifyFrames(
        bytes32 blockHash,
        bytes32[] calldata proof,
        bool[] calldata proofFlags,
        bytes32[] calldata leaves
    ) external view returns (bool) {
        StoredBlock storage rec = _blocks[blockHash];
        if (rec.anchoredAt == 0) revert UnknownBlock(blockHash);
        return MerkleProof.multiProofVerifyCalldata(proof, proofFlags, rec.framesRoot, leaves);
    }

    function getBlock(bytes32 blockHash) external view returns (BlockRecord memory) {
        StoredBlock storage rec = _blocks[blockHash];
        if (rec.anchoredAt == 0) revert UnknownBlock(blockHash);
        return _record(rec);
    }

    /// @notice Whether a node stands behind an anchored block: its proposer, or a node that attested it.
    function hasAttested(bytes32 blockHash, address node) external view returns (bool) {
        StoredBlock storage rec = _blocks[blockHash];
        return rec.anchoredAt != 0 && _hasAttested(blockHash, rec, node);
    }

    function hasDisputed(bytes32 blockHash, address node) external view returns (bool) {
        return _disputedBy[blockHash][node];
    }

    /// @notice Number of anchored blocks of a camera (= height of its last block).
    function chainLength(bytes32 cameraId) external view returns (uint64) {
        return uint64(_chains[cameraId].length);
    }

    function blockHashAt(bytes32 cameraId, uint64 height) public view returns (bytes32) {
        if (height == 0 || height > _chains[cameraId].length) revert UnknownHeight(cameraId, height);
        return _chains[cameraId][height - 1];
    }

    function blockAt(bytes32 cameraId, uint64 height) external view returns (BlockRecord memory) {
        return _record(_blocks[blockHashAt(cameraId, height)]);
    }

    /// @notice Hash of the camera's newest block, or its head block when none is anchored yet:
    ///         what the next block's prevHash must be.
    function tip(bytes32 cameraId) external view returns (bytes32 prevHash, uint64 height, uint64 windowEndMs) {
        uint256 length = _chains[cameraId].length;
        if (length == 0) {
            (bytes32 head,) = consortium.headBlock(cameraId);
            return (head, 0, 0);
        }
        bytes32 last = _chains[cameraId][length - 1];
        return (last, uint64(length), _blocks[last].windowEndMs);
    }

    /// @notice Heights of the blocks whose windows overlap [fromMs, toMs). Empty when
    ///         `first > last`. Windows are ordered and disjoint, so two binary searches suffice.
    function blocksInRange(bytes32 cameraId, uint64 fromMs, uint64 toMs)
        external
        view
        returns (uint64 first, uint64 last)
    {
        bytes32[] storage chain = _chains[cameraId];
        uint256 n = chain.length;
        // first index whose windowEnd > fromMs
        uint256 lo = 0;
        uint256 hi = n;
        while (lo < hi) {
            uint256 mid = (lo + hi) / 2;
            if (_blocks[chain[mid]].windowEndMs > fromMs) hi = mid;
            else lo = mid + 1;
        }
        uint256 firstIdx = lo;
        // first index whose windowStart >= toMs
        lo = firstIdx;
        hi = n;
        while (lo < hi) {
            uint256 mid = (lo + hi) / 2;
            if (_blocks[chain[mid]].windowStartMs >= toMs) hi = mid;
            else lo = mid + 1;
        }
        // heights are index + 1; `lo` is one past the last overlapping index
        return (uint64(firstIdx + 1), uint64(lo));
    }

    // --------------------------------------------------------------- internal

    /// @dev Write a newly anchored block: the header and its proposer's attestation.
    function _store(StoredBlock storage rec, BlockHeader calldata header) internal {
        rec.cameraId = header.cameraId;
        rec.prevHash = header.prevHash;
        rec.framesRoot = header.framesRoot;
        rec.manifestDigest = header.manifestDigest;
        rec.proposer = header.proposer;
        rec.height = header.height;
        rec.frameCount = header.frameCount;
        rec.windowStartMs = header.windowStartMs;
        rec.windowEndMs = header.windowEndMs;
        rec.anchoredAt = uint64(block.timestamp);
        rec.attestations = 1;
    }

    /// @dev The ABI form of a stored block.
    function _record(StoredBlock storage rec) internal view returns (BlockRecord memory) {
        return BlockRecord({
            header: BlockHeader({
                cameraId: rec.cameraId,
                height: rec.height,
                prevHash: rec.prevHash,
                windowStartMs: rec.windowStartMs,
                windowEndMs: rec.windowEndMs,
                frameCount: rec.frameCount,
                framesRoot: rec.framesRoot,
                manifestDigest: rec.manifestDigest,
                proposer: rec.proposer
            }),
            anchoredAt: rec.anchoredAt,
            attestations: rec.attestations,
            disputes: rec.disputes,
            finalized: rec.finalized
        });
    }

    /// @dev The proposer's anchor is its attestation; other nodes attest with `attest`.
    function _hasAttested(bytes32 blockHash, StoredBlock storage rec, address node) internal view returns (bool) {
        return rec.proposer == node || _attestedBy[blockHash][node];
    }

    /// @dev Final: a quorum of attestations and no dispute.
    function _finalizeIfQuorum(bytes32 blockHash, StoredBlock storage rec) private {
        if (!rec.finalized && rec.disputes == 0 && rec.attestations >= consortium.quorum()) {
            rec.finalized = true;
            emit BlockFinalized(blockHash, rec.cameraId, rec.height);
        }
    }
}
