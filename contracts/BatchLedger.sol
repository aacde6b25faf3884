// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {BlockHeader, LedgerHashes} from "./BlockHeader.sol";
import {IBatchLedger} from "./IBatchLedger.sol";
import {IConsortiumNodes} from "./IConsortiumNodes.sol";
import {WindowLimits} from "./WindowLimits.sol";

/// @title FrameLedger batch ledger
/// @notice See {IBatchLedger}. One transaction per window for all cameras: the quorum's EIP-712
///         signatures travel with the batch, so there are no attest transactions.
/// @dev EIP-712 domain: name "FrameLedger BatchLedger", version "1", this chain and contract.
///      Storage per batch: three fresh slots (window start/end, anchoredAt and blockCount packed
///      in one; the root; the manifest digest). Headers and the batch manifest live off chain
///      (content store); the manifest's SHA-256 is kept in storage so that `batchAt` alone leads a
///      reader to it (docs/CONTRACTS.md gives the measured cost of that choice).
contract BatchLedger is IBatchLedger, WindowLimits, EIP712 {
    /// @notice keccak256 of the EIP-712 type string of `Batch`.
    bytes32 public constant BATCH_TYPEHASH = keccak256(
        "Batch(uint64 windowStartMs,uint64 windowEndMs,bytes32 batchRoot,bytes32 manifestDigest,uint32 blockCount,bytes32 prevBatchRoot)"
    );
    /// @notice Most records one `batchesAt` call returns (a day of 60 s windows is 1,440: 6 pages).
    uint256 public constant MAX_PAGE = 256;
    /// @notice Longest dispute reason, in bytes (events are not free).
    uint256 public constant MAX_REASON_BYTES = 200;

    /// @notice The consortium whose nodes and quorum govern this ledger.
    IConsortiumNodes public immutable consortium;

    BatchRecord[] private _batches;
    /// @dev Written only when a node disputes: nothing in the anchoring path pays for it.
    mapping(uint256 => mapping(address => bool)) private _disputedBy;
    mapping(uint256 => uint16) private _disputes;

    modifier onlyNode() {
        if (!consortium.isNode(msg.sender)) revert NotANode(msg.sender);
        _;
    }

    /// @dev {WindowLimits}: the consortium's governor only.
    function _authorizeWindowLimits(address account) internal view override {
        if (!consortium.hasRole(consortium.GOVERNOR_ROLE(), account)) revert NotGovernor(account);
    }

    /// @param consortium_ the registry of nodes and quorum
    /// @param maxFutureMs_ how far (ms) a window's end may lie after `block.timestamp`
    /// @param maxWindowMs_ the longest window (ms) a batch may cover
    constructor(IConsortiumNodes consortium_, uint64 maxFutureMs_, uint64 maxWindowMs_)
        EIP712("FrameLedger BatchLedger", "1")
    {
        consortium = consortium_;
        _setWindowLimits(maxFutureMs_, maxWindowMs_);
    }

    // ---------------------------------------------------------------- writes

    /// @inheritdoc IBatchLedger
    function anchorBatch(Batch calldata batch, bytes[] calldata signatures) external onlyNode returns (uint256 index) {
        _checkBatch(batch);
        address[] memory signers = _verifySignatures(hashBatch(batch), signatures);
        index = _batches.length;
        _batches.push(
            BatchRecord({
                windowStartMs: batch.windowStartMs,
                windowEndMs: batch.windowEndMs,
                anchoredAt: uint64(block.timestamp),
                blockCount: batch.blockCount,
                batchRoot: batch.batchRoot,
                manifestDigest: batch.manifestDigest
            })
        );
        emit BatchAnchored(
            index,
            batch.windowStartMs,
            msg.sender,
            batch.windowEndMs,
            batch.batchRoot,
            batch.manifestDigest,
            batch.blockCount,
            batch.prevBatchRoot,
            signers
        );
    }

    /// @inheritdoc IBatchLedger
    function disputeBatch(uint256 index, string calldata reason) external onlyNode {
        if (index >= _batches.length) revert UnknownBatch(index);
        if (bytes(reason).length > MAX_REASON_BYTES) revert ReasonTooLong(bytes(reason).length, MAX_REASON_BYTES);
        if (_disputedBy[index][msg.sender]) revert AlreadyDisputedBatch(msg.sender, index);
        _disputedBy[index][msg.sender] = true;
        uint16 disputes = _disputes[index] + 1;
        _disputes[index] = disputes;
        emit BatchDisputed(index, msg.sender, reason, disputes);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IBatchLedger
    function disputesOf(uint256 index) external view returns (uint16) {
        if (index >= _batches.length) revert UnknownBatch(index);
        return _disputes[index];
    }

    /// @inheritdoc IBatchLedger
    function hasDisputedBatch(uint256 index, address node) external view returns (bool) {
        if (index >= _batches.length) revert UnknownBatch(index);
        return _disputedBy[index][node];
    }

    /// @inheritdoc IBatchLedger
    function batchCount() external view returns (uint256) {
        return _batches.length;
    }

    /// @inheritdoc IBatchLedger
    function batchAt(uint256 index) external view returns (BatchRecord memory) {
        if (index >= _batches.length) revert UnknownBatch(index);
        return _batches[index];
    }

    /// @inheritdoc IBatchLedger
    function batchesAt(uint256 first, uint256 count) external view returns (BatchRecord[] memory records) {
        if (count > MAX_PAGE) revert PageTooLarge(count, MAX_PAGE);
        uint256 n = _batches.length;
        uint256 end = first >= n ? first : (n - first < count ? n : first + count);
        records = new BatchRecord[](end - first);
        for (uint256 i = first; i < end; ++i) {
            records[i - first] = _batches[i];
        }
    }

    /// @inheritdoc IBatchLedger
    function batchForTime(uint64 timeMs) external view returns (uint256 index) {
        // windows are in order and disjoint: the candidate is the first whose end lies after timeMs
        uint256 i = _firstEndingAfter(timeMs);
        if (i == _batches.length || _batches[i].windowStartMs > timeMs) revert NoBatchAt(timeMs);
        return i;
    }

    /// @inheritdoc IBatchLedger
    function batchesInRange(uint64 fromMs, uint64 toMs) external view returns (uint256 first, uint256 end) {
        first = _firstEndingAfter(fromMs);
        // first index at or after `first` whose window starts at or after toMs
        uint256 lo = first;
        uint256 hi = _batches.length;
        while (lo < hi) {
            uint256 mid = (lo + hi) / 2;
            if (_batches[mid].windowStartMs >= toMs) hi = mid;
            else lo = mid + 1;
        }
        end = lo;
    }

    /// @inheritdoc IBatchLedger
    function hashBatch(Batch calldata batch) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(BATCH_TYPEHASH, batch)));
    }

    /// @inheritdoc IBatchLedger
    function hashHeader(BlockHeader calldata header) external pure returns (bytes32) {
        return LedgerHashes.hashHeader(header);
    }

    /// @inheritdoc IBatchLedger
    function verifyBlockInBatch(uint256 index, bytes32 blockHash, bytes32[] calldata proof) public view returns (bool) {
        if (index >= _batches.length) revert UnknownBatch(index);
        return MerkleProof.verifyCalldata(proof, _batches[index].batchRoot, LedgerHashes.blockLeaf(blockHash));
    }

    /// @inheritdoc IBatchLedger
    function verifyFrameInBatch(
        uint256 index,
        BlockHeader calldata header,
        bytes32[] calldata batchProof,
        uint64 seq,
        uint64 timestampMs,
        bytes32 frameSha256,
        bytes32[] calldata frameProof
    ) external view returns (bool) {
        if (!verifyBlockInBatch(index, LedgerHashes.hashHeader(header), batchProof)) return false;
        bytes32 leaf = LedgerHashes.frameLeaf(header.cameraId, seq, timestampMs, frameSha256);
        return MerkleProof.verifyCalldata(frameProof, header.framesRoot, leaf);
    }

    // --------------------------------------------------------------- internal

    /// @dev Everything about the batch itself: non-empty, its window's time bounds, in order after
    ///      the previous batch and linked to its root.
    function _checkBatch(Batch calldata batch) internal view {
        if (batch.blockCount == 0) revert EmptyBatch();
        if (batch.batchRoot == bytes32(0)) revert ZeroBatchRoot();
        _checkWindowTime(batch.windowStartMs, batch.windowEndMs);
        uint256 n = _batches.length;
        bytes32 expectedPrev;
        if (n > 0) {
            BatchRecord storage last = _batches[n - 1];
            if (batch.windowStartMs < last.windowEndMs) revert WindowOutOfOrder(last.windowEndMs, batch.windowStartMs);
            expectedPrev = last.batchRoot;
        }
        if (batch.prevBatchRoot != expectedPrev) revert WrongPrevBatchRoot(expectedPrev, batch.prevBatchRoot);
    }

    /// @dev Recover every signer, require them registered, strictly ascending (so distinct without
    ///      a storage-backed seen-set) and at least a quorum of them.
    function _verifySignatures(bytes32 digest, bytes[] calldata signatures) internal view returns (address[] memory signers) {
        uint16 quorum = consortium.quorum();
        if (signatures.length < quorum || signatures.length == 0) revert BelowQuorum(signatures.length, quorum);
        signers = new address[](signatures.length);
        address previous = address(0);
        for (uint256 i = 0; i < signatures.length; ++i) {
            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signatures[i]);
            if (err != ECDSA.RecoverError.NoError) revert MalformedSignature(i);
            if (signer <= previous) revert SignersNotAscending(i, previous, signer);
            if (!consortium.isNode(signer)) revert SignerNotANode(i, signer);
            signers[i] = signer;
            previous = signer;
        }
    }

    /// @dev The first index whose window ends after `timeMs` (`batchCount` when none).
    function _firstEndingAfter(uint64 timeMs) internal view returns (uint256 lo) {
        uint256 hi = _batches.length;
        while (lo < hi) {
            uint256 mid = (lo + hi) / 2;
            if (_batches[mid].windowEndMs > timeMs) hi = mid;
            else lo = mid + 1;
        }
    }
}
