// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @title Vault
/// @notice One shared chequebook for every node. A node deposits tokens once and then pays
///         any number of peers off-chain with signed cheques; a peer cashes a cheque only when
///         it wants the money on-chain. Paying per segment on-chain would cost more than the
///         segments are worth, so the chain sees a deposit and an occasional cash-out instead.
/// @dev Cheques are cumulative: each new cheque from `payer` to `payee` carries the running
///      total owed, so only the latest one matters and an old one can never be cashed twice.
///      The deposit backs cheques to every payee at once, so a payer can hand out more than
///      it holds; a payee limits that risk by cashing often and by watching `balanceOf` and
///      `unlockAt`. Withdrawal is delayed by `unlockPeriod` so that payees have time to cash
///      what they hold before a deposit leaves.
///
///      Part of a deposit can be *locked* until a time (`lock`): neither a withdrawal nor a
///      cheque can draw it before then. A viewer's receipts count in the `RewardPool` only
///      for epochs its lock covered from their start through their claim window, so one
///      deposit stands behind one viewer per epoch: it cannot be moved to another key by a
///      cheque to itself, nor taken back once the viewer has watched.
contract Vault is EIP712 {
    using SafeERC20 for IERC20;

    /// @notice EIP-712 type of a cheque. `token` is part of it so that a cheque can never be
    ///         read as a promise in another token.
    bytes32 public constant CHEQUE_TYPEHASH =
        keccak256("Cheque(address payer,address payee,address token,uint256 cumulativeAmount)");

    /// @notice The token deposits and cheques are denominated in.
    IERC20 public immutable token;
    /// @notice Seconds between `requestWithdrawal` and the first allowed `withdraw`.
    uint64 public immutable unlockPeriod;

    /// @notice Deposit held for `account`, the most its cheques can draw.
    mapping(address account => uint256) public balanceOf;
    /// @notice When `account` may withdraw; 0 while no withdrawal has been requested.
    mapping(address account => uint64) public unlockAt;
    /// @notice Cumulative amount already paid on cheques from `payer` to `payee`.
    mapping(address payer => mapping(address payee => uint256)) public paidOut;

    /// @notice Part of a deposit that cannot leave before `until`, locked as it is since `since`.
    struct Lock {
        uint128 amount;
        uint64 since;
        uint64 until;
    }

    /// @notice Each account's lock (expired once `until` has passed).
    mapping(address account => Lock) public locks;

    event Deposited(address indexed account, uint256 amount, uint256 balance);
    event WithdrawalRequested(address indexed account, uint64 unlockAt);
    event WithdrawalCancelled(address indexed account);
    event Withdrawn(address indexed account, uint256 amount);
    event ChequeCashed(address indexed payer, address indexed payee, uint256 cumulativeAmount, uint256 paid);
    /// @notice The payer's deposit did not cover the cheque; `unpaid` stays claimable with the
    ///         same cheque once the payer deposits again.
    event ChequeBounced(address indexed payer, address indexed payee, uint256 unpaid);
    event Locked(address indexed account, uint256 amount, uint64 since, uint64 until);

    error WithdrawalLocked(uint64 unlockAt);
    error InsufficientDeposit(uint256 available);
    error BadSignature();
    error NothingDue();
    /// @notice A lock may grow and last longer while it runs, never shrink or end sooner.
    error LockShrinks(uint256 amount, uint64 until);

    constructor(IERC20 token_, uint64 unlockPeriod_) EIP712("Shoal Vault", "1") {
        token = token_;
        unlockPeriod = unlockPeriod_;
    }

    /// @notice Adds `amount` (pulled with transferFrom) to the caller's deposit: what arrived
    ///         of it, should the token take a fee on transfer.
    /// @dev Depositing also cancels a pending withdrawal: a payer topping up is staying, and
    ///      payees should be able to trust the deposit again without the clock still running.
    ///      The token is the one fixed at deployment, so pulling first lets no stranger's code
    ///      run before the bookkeeping.
    function deposit(uint256 amount) external {
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 arrived = token.balanceOf(address(this)) - before;
        uint256 balance = balanceOf[msg.sender] + arrived;
        balanceOf[msg.sender] = balance;
        emit Deposited(msg.sender, arrived, balance);
        if (unlockAt[msg.sender] != 0) {
            unlockAt[msg.sender] = 0;
            emit WithdrawalCancelled(msg.sender);
        }
    }

    /// @notice Locks `amount` of the caller's deposit until `until` (a Unix time).
    /// @dev While a lock runs it may only grow and last longer; a larger amount is locked from
    ///      now on (`since` moves), a longer time alone keeps `since`. Locking never moves
    ///      tokens: it only keeps them from withdrawals and cheques.
    function lock(uint256 amount, uint64 until) external {
        Lock memory current = locks[msg.sender];
        bool running = current.until > block.timestamp;
        if (until <= block.timestamp) revert LockShrinks(amount, uint64(block.timestamp) + 1);
        if (running && (amount < current.amount || until < current.until)) {
            revert LockShrinks(current.amount, current.until);
        }
        uint256 balance = balanceOf[msg.sender];
        if (amount > balance) revert InsufficientDeposit(balance);
        uint64 since = running && amount == current.amount ? current.since : uint64(block.timestamp);
        locks[msg.sender] = Lock(SafeCast.toUint128(amount), since, until);
        emit Locked(msg.sender, amount, since, until);
    }

    /// @notice What of `account`'s deposit is locked now.
    function lockedOf(address account) public view returns (uint256) {
        Lock memory l = locks[account];
        return l.until > block.timestamp ? l.amount : 0;
    }

    /// @notice Whether `account` has had at least `amount` locked since `from` or earlier, and
    ///         keeps it locked until `to` or later.
    function lockedThrough(address account, uint256 amount, uint64 from, uint64 to) external view returns (bool) {
        Lock memory l = locks[account];
        return l.amount >= amount && l.since <= from && l.until >= to;
    }

    /// @notice Starts the clock on withdrawing: `withdraw` works from `unlockAt` on.
    /// @dev Asking again restarts the clock; it only ever delays the caller's own money.
    function requestWithdrawal() external {
        uint64 at = uint64(block.timestamp) + unlockPeriod;
        unlockAt[msg.sender] = at;
        emit WithdrawalRequested(msg.sender, at);
    }

    /// @notice Takes `amount` of the caller's deposit back once the unlock time has passed.
    /// @dev The account stays withdrawable (in as many steps as it likes) until it deposits
    ///      again, so payees must treat any account with `unlockAt != 0` as leaving.
    function withdraw(uint256 amount) external {
        uint64 at = unlockAt[msg.sender];
        if (at == 0 || block.timestamp < at) revert WithdrawalLocked(at);
        uint256 balance = balanceOf[msg.sender];
        uint256 free = balance - lockedOf(msg.sender);
        if (amount > free) revert InsufficientDeposit(free);
        balanceOf[msg.sender] = balance - amount;
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice The EIP-712 digest the payer signs for a cheque to `payee` worth
    ///         `cumulativeAmount` in total.
    function chequeDigest(address payer, address payee, uint256 cumulativeAmount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(CHEQUE_TYPEHASH, payer, payee, address(token), cumulativeAmount)));
    }

    /// @notice Pays `payee` what a cheque signed by `payer` owes beyond what was paid before.
    /// @dev Anyone may submit it (a payee without gas can have someone else do it); the money
    ///      always goes to `payee`. If the deposit is short, what it holds is paid and the rest
    ///      bounces: the same cheque pays the rest when cashed again after a new deposit, since
    ///      `paidOut` only moves by what was actually paid.
    /// @return paid amount transferred to `payee` by this call
    function cashCheque(address payer, address payee, uint256 cumulativeAmount, bytes calldata signature)
        external
        returns (uint256 paid)
    {
        (address signer, ECDSA.RecoverError err,) =
            ECDSA.tryRecover(chequeDigest(payer, payee, cumulativeAmount), signature);
        if (err != ECDSA.RecoverError.NoError || signer != payer) revert BadSignature();

        uint256 already = paidOut[payer][payee];
        if (cumulativeAmount <= already) revert NothingDue();
        uint256 due = cumulativeAmount - already;

        // A locked deposit backs the payer's receipts, not its cheques.
        uint256 balance = balanceOf[payer];
        uint256 free = balance - lockedOf(payer);
        paid = due < free ? due : free;
        balanceOf[payer] = balance - paid;
        paidOut[payer][payee] = already + paid;

        emit ChequeCashed(payer, payee, cumulativeAmount, paid);
        if (paid < due) emit ChequeBounced(payer, payee, due - paid);
        if (paid != 0) token.safeTransfer(payee, paid);
    }
}
