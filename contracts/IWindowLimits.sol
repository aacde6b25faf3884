// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Time bounds of anchored windows
/// @notice A window may end at most `maxFutureMs` after the anchoring block's timestamp and last
///         at most `maxWindowMs`, so that no node can stamp a window that ends a camera's history
///         (windowEnd = 2^64-1). Both are set at deployment and changeable by the consortium's
///         governor. VideoLedger and BatchLedger apply the same rule ({WindowLimits}).
interface IWindowLimits {
    /// @notice The window is empty or reversed.
    error InvalidWindow(uint64 windowStartMs, uint64 windowEndMs);
    /// @notice The window ends after `block.timestamp` + `maxFutureMs`.
    error WindowInFuture(uint64 windowEndMs, uint64 latestAllowedMs);
    /// @notice The window is longer than `maxWindowMs`.
    error WindowTooLong(uint64 lengthMs, uint64 maxWindowMs);
    /// @notice Window limits must lie in 1 ms .. 1 day.
    error InvalidWindowLimits(uint64 maxFutureMs, uint64 maxWindowMs);

    /// @notice The time bounds changed (at deployment, or by the consortium's governor).
    event WindowLimitsChanged(uint64 maxFutureMs, uint64 maxWindowMs, address indexed by);

    /// @return how far (ms) a window's end may lie after the anchoring block's timestamp
    function maxFutureMs() external view returns (uint64);

    /// @return the longest window (ms) an anchor may cover
    function maxWindowMs() external view returns (uint64);

    /// @notice Change the time bounds. The consortium's governor only.
    /// @param maxFutureMs_ how far (ms) a window's end may lie after `block.timestamp` (1 ms .. 1 day)
    /// @param maxWindowMs_ the longest window (ms) an anchor may cover (1 ms .. 1 day)
    function setWindowLimits(uint64 maxFutureMs_, uint64 maxWindowMs_) external;
}
