// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title ShoalToken
/// @notice The token that viewers deposit in the Vault, pay relays with by cheque, and that
///         creators and advertisers put into the RewardPool.
/// @dev A plain fixed-supply ERC-20 with 18 decimals: the whole supply is minted once, to
///      `holder`, and there is no owner, no minting and no pausing afterwards, so nobody holds
///      a lever over balances that the node software would have to trust.
contract ShoalToken is ERC20 {
    /// @param holder receives the whole supply
    /// @param supply total supply in wei (10**18 wei = 1 SHOAL)
    constructor(address holder, uint256 supply) ERC20("Shoal", "SHOAL") {
        _mint(holder, supply);
    }
}
