// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @notice A video block header: one camera, one time window (B1). Its hash is
///         keccak256(abi.encode(header)) with the fields in this order; off-chain code computes the
///         same (offchain/core/block.py). Declared at file level so that VideoLedger (one anchor
///         per header) and BatchLedger (one root over every header of a window) hash the same
///         bytes.
struct BlockHeader {
    bytes32 cameraId;
    uint64 height;
    bytes32 prevHash;
    uint64 windowStartMs;
    uint64 windowEndMs;
    uint32 frameCount;
    bytes32 framesRoot;
    bytes32 manifestDigest;
    address proposer;
}

/// @title Hashes shared by the ledgers
/// @notice The block hash and the StandardMerkleTree leaves of SPEC.md "Normative formats".
library LedgerHashes {
    /// @param header a block header
    /// @return keccak256(abi.encode(header)), the block hash both ledgers use
    function hashHeader(BlockHeader calldata header) internal pure returns (bytes32) {
        return keccak256(abi.encode(header));
    }

    /// @param cameraId keccak256 of the camera's IP
    /// @param seq the frame's sequence number
    /// @param timestampMs the frame's capture time
    /// @param frameSha256 SHA-256 of the frame bytes
    /// @return the frame's StandardMerkleTree leaf over (bytes32, uint64, uint64, bytes32)
    function frameLeaf(bytes32 cameraId, uint64 seq, uint64 timestampMs, bytes32 frameSha256)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(bytes.concat(keccak256(abi.encode(cameraId, seq, timestampMs, frameSha256))));
    }

    /// @param blockHash a block hash
    /// @return the block's StandardMerkleTree leaf over (bytes32 blockHash) in a batch tree
    function blockLeaf(bytes32 blockHash) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(blockHash))));
    }
}
