// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title What BatchLedger reads from the consortium registry: its nodes, quorum and governor
/// @dev A narrow view of `Consortium`, declared apart so that BatchLedger's bytecode (and its
///      committed artifact) does not change when Consortium.sol changes elsewhere.
interface IConsortiumNodes {
    /// @param account any address
    /// @return whether `account` is a registered node
    function isNode(address account) external view returns (bool);

    /// @return how many nodes must stand behind a block or batch for it to be final
    function quorum() external view returns (uint16);

    /// @return the role id of the consortium's governor (OpenZeppelin AccessControl)
    // solhint-disable-next-line func-name-mixedcase
    function GOVERNOR_ROLE() external view returns (bytes32);

    /// @param role an AccessControl role id
    /// @param account any address
    /// @return whether `account` holds `role`
    function hasRole(bytes32 role, address account) external view returns (bool);
}
