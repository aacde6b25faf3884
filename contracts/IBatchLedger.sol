// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {BlockHeader} from "./BlockHeader.sol";
import {IWindowLimits} from "./IWindowLimits.sol";

/// @title FrameLedger batch ledger (B6, batch mode)
/// @notice One anchor per time window for every camera of the consortium: the root of an
///         OpenZeppelin StandardMerkleTree over leaves (bytes32 blockHash), one per camera block
///         header of the window, signed by a quorum of nodes with EIP-712 and final on inclusion.
///         Batches form their own hash chain (`prevBatchRoot`) and their windows are in order.
/// @dev What the contract does NOT check, because it would cost a storage write per camera: the
///      per-camera hash chain (each header's prevHash, height and time continuity). Every node
///      checks it before it signs and every verifier checks it again (offchain/core/batch.py,
///      docs/BATCH.md); the signatures put the quorum's name under the result.
///      The window's time bounds (`maxFutureMs`, `maxWindowMs`, `setWindowLimits`, their errors
///      and event) are {IWindowLimits}, the same as VideoLedger's.
interface IBatchLedger is IWindowLimits {
    /// @notice What the nodes sign (EIP-712 primary type `Batch`, field order as declared).
    struct Batch {
        uint64 windowStartMs;
        uint64 windowEndMs;
        bytes32 batchRoot;
        bytes32 manifestDigest;
        uint32 blockCount;
        bytes32 prevBatchRoot;
    }

    /// @notice An anchored batch. The first four fields share one storage slot.
    struct BatchRecord {
        uint64 windowStartMs;
        uint64 windowEndMs;
        uint64 anchoredAt;
        uint32 blockCount;
        bytes32 batchRoot;
        bytes32 manifestDigest;
    }

    // ---------------------------------------------------------------- errors
    /// @notice The sender is not a registered node.
    error NotANode(address account);
    /// @notice The sender is not the consortium's governor.
    error NotGovernor(address account);
    /// @notice Signature `index` recovers to an address that is not a registered node.
    error SignerNotANode(uint256 index, address signer);
    /// @notice Signers must be given in strictly ascending address order (no repeats).
    error SignersNotAscending(uint256 index, address previous, address signer);
    /// @notice Signature `index` is malformed (length, s or v out of range).
    error MalformedSignature(uint256 index);
    /// @notice Fewer signatures than the consortium's quorum.
    error BelowQuorum(uint256 signatures, uint16 quorum);
    /// @notice A batch names at least one block.
    error EmptyBatch();
    /// @notice A batch root is never zero.
    error ZeroBatchRoot();
    /// @notice The window starts before the previous batch's window ended.
    error WindowOutOfOrder(uint64 previousEndMs, uint64 windowStartMs);
    /// @notice `prevBatchRoot` is not the root of the last anchored batch (zero for the first).
    error WrongPrevBatchRoot(bytes32 expected, bytes32 offered);
    /// @notice No batch has this index.
    error UnknownBatch(uint256 index);
    /// @notice No anchored window covers this time.
    error NoBatchAt(uint64 timeMs);
    /// @notice A page of `batchesAt` may hold at most `MAX_PAGE` records.
    error PageTooLarge(uint256 count, uint256 maxPage);
    /// @notice This node has disputed this batch already.
    error AlreadyDisputedBatch(address node, uint256 index);
    /// @notice A dispute reason is longer than `MAX_REASON_BYTES`.
    error ReasonTooLong(uint256 length, uint256 maxLength);

    // ---------------------------------------------------------------- events
    /// @notice A batch was anchored and is final. `signers` are the nodes whose signatures were
    ///         verified, ascending.
    event BatchAnchored(
        uint256 indexed index,
        uint64 indexed windowStartMs,
        address indexed submitter,
        uint64 windowEndMs,
        bytes32 batchRoot,
        bytes32 manifestDigest,
        uint32 blockCount,
        bytes32 prevBatchRoot,
        address[] signers
    );
    /// @notice A node objected to an anchored batch (it did not sign it, or found it wrong after
    ///         signing). Verifiers treat a batch with any dispute as not final.
    event BatchDisputed(uint256 indexed index, address indexed node, string reason, uint16 disputes);

    // ---------------------------------------------------------------- writes
    /// @notice Anchor the next batch, final on inclusion. Callable by a registered node.
    /// @param batch the batch the nodes signed
    /// @param signatures 65-byte EIP-712 signatures of `batch` by distinct registered nodes, in
    ///        strictly ascending signer address order; at least `quorum()` of them
    /// @return index the batch's index (0 for the first)
    function anchorBatch(Batch calldata batch, bytes[] calldata signatures) external returns (uint256 index);

    /// @notice Put on record that this node objects to an anchored batch. A batch is final on
    ///         inclusion when a quorum signed it; with a quorum below the node count, this is how
    ///         the others' objection reaches the chain. Any dispute makes verifiers refuse the
    ///         batch (docs/BATCH.md). Callable by a registered node, once per batch.
    /// @param index an anchored batch
    /// @param reason why, at most `MAX_REASON_BYTES` bytes
    function disputeBatch(uint256 index, string calldata reason) external;

    // ------------------------------------------------------------------ views
    /// @return how many batches are anchored
    function batchCount() external view returns (uint256);

    /// @param index a batch index
    /// @return the anchored batch (reverts `UnknownBatch`)
    function batchAt(uint256 index) external view returns (BatchRecord memory);

    /// @param first the first index
    /// @param count how many records, at most `MAX_PAGE`; fewer when the ledger ends first
    /// @return records the batches [first, first + count) that exist
    function batchesAt(uint256 first, uint256 count) external view returns (BatchRecord[] memory records);

    /// @param index an anchored batch
    /// @return how many nodes disputed it
    function disputesOf(uint256 index) external view returns (uint16);

    /// @param index an anchored batch
    /// @param node a node address
    /// @return whether that node disputed it
    function hasDisputedBatch(uint256 index, address node) external view returns (bool);

    /// @param timeMs a capture time
    /// @return index the batch whose window [start, end) holds `timeMs` (reverts `NoBatchAt`)
    function batchForTime(uint64 timeMs) external view returns (uint256 index);

    /// @notice The batches whose windows overlap [fromMs, toMs), by two binary searches:
    ///         O(log batchCount) gas whatever the range; read the records with `batchesAt`.
    /// @param fromMs range start (inclusive)
    /// @param toMs range end (exclusive)
    /// @return first the first overlapping index
    /// @return end one past the last overlapping index (`first == end`: none)
    function batchesInRange(uint64 fromMs, uint64 toMs) external view returns (uint256 first, uint256 end);

    /// @param batch a batch
    /// @return the EIP-712 digest the nodes sign
    function hashBatch(Batch calldata batch) external view returns (bytes32);

    /// @param header a block header
    /// @return keccak256(abi.encode(header)), as VideoLedger.hashHeader
    function hashHeader(BlockHeader calldata header) external pure returns (bytes32);

    /// @param index an anchored batch
    /// @param blockHash a block hash
    /// @param proof the StandardMerkleTree proof of leaf (bytes32 blockHash) in the batch tree
    /// @return whether the block belongs to the batch
    function verifyBlockInBatch(uint256 index, bytes32 blockHash, bytes32[] calldata proof) external view returns (bool);

    /// @notice Frame → block root → batch root, all through MerkleProof.
    /// @param index an anchored batch
    /// @param header the frame's block header
    /// @param batchProof the proof of the header's hash in the batch tree
    /// @param seq the frame's sequence number
    /// @param timestampMs the frame's capture time
    /// @param frameSha256 SHA-256 of the frame bytes
    /// @param frameProof the proof of the frame leaf in the header's frames tree
    /// @return whether the frame belongs to a block of the batch
    function verifyFrameInBatch(
        uint256 index,
        BlockHeader calldata header,
        bytes32[] calldata batchProof,
        uint64 seq,
        uint64 timestampMs,
        bytes32 frameSha256,
        bytes32[] calldata frameProof
    ) external view returns (bool);
}
