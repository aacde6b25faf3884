// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IWindowLimits} from "./IWindowLimits.sol";

/// @title Time bounds of anchored windows, shared by VideoLedger and BatchLedger
/// @notice See {IWindowLimits}.
/// @dev An inheritor sets the limits in its constructor with {_setWindowLimits}, calls
///      {_checkWindowTime} before it anchors a window, and says who may change the limits by
///      implementing {_authorizeWindowLimits} (reverting for anyone else), in the manner of
///      OpenZeppelin's `UUPSUpgradeable._authorizeUpgrade`. Both limits share one storage slot,
///      so a check costs one SLOAD.
abstract contract WindowLimits is IWindowLimits {
    /// @dev Upper bounds of the settings themselves: a day ahead, a day long.
    uint64 private constant _LIMIT_CEILING_MS = 86_400_000;

    /// @inheritdoc IWindowLimits
    uint64 public maxFutureMs;
    /// @inheritdoc IWindowLimits
    uint64 public maxWindowMs;

    /// @inheritdoc IWindowLimits
    function setWindowLimits(uint64 maxFutureMs_, uint64 maxWindowMs_) external {
        _authorizeWindowLimits(msg.sender);
        _setWindowLimits(maxFutureMs_, maxWindowMs_);
    }

    /// @dev Reverts unless `account` may change the limits (the consortium's governor).
    function _authorizeWindowLimits(address account) internal view virtual;

    /// @dev Sets both limits, each in 1 ms .. 1 day (else `InvalidWindowLimits`), and emits
    ///      `WindowLimitsChanged`.
    function _setWindowLimits(uint64 maxFutureMs_, uint64 maxWindowMs_) internal {
        if (maxFutureMs_ == 0 || maxWindowMs_ == 0 || maxFutureMs_ > _LIMIT_CEILING_MS || maxWindowMs_ > _LIMIT_CEILING_MS) {
            revert InvalidWindowLimits(maxFutureMs_, maxWindowMs_);
        }
        maxFutureMs = maxFutureMs_;
        maxWindowMs = maxWindowMs_;
        emit WindowLimitsChanged(maxFutureMs_, maxWindowMs_, msg.sender);
    }

    /// @dev A window is non-empty (else `InvalidWindow`), ends at most `maxFutureMs` after this
    ///      block's timestamp (else `WindowInFuture`) and is at most `maxWindowMs` long (else
    ///      `WindowTooLong`).
    function _checkWindowTime(uint64 startMs, uint64 endMs) internal view {
        if (endMs <= startMs) revert InvalidWindow(startMs, endMs);
        uint64 latest = uint64(block.timestamp) * 1000 + maxFutureMs;
        if (endMs > latest) revert WindowInFuture(endMs, latest);
        if (endMs - startMs > maxWindowMs) revert WindowTooLong(endMs - startMs, maxWindowMs);
    }
}
