// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Vault} from "./Vault.sol";

/// @title RewardPool
/// @notice Pays the nodes that relay a piece of content for the bytes they actually delivered.
///         A creator or advertiser funds a content id for an epoch; the funding is split at once
///         between the creator, the treasury and a viewer pool. Viewers sign cumulative receipts
///         for the bytes a relay served them; after the epoch each relay submits its receipts,
///         and once the claim window closes the viewer pool is shared among the relays in
///         proportion to the bytes counted for each.
/// @dev Only viewers with at least `minDeposit` locked in the Vault from the epoch's start
///      to the end of its claim window count, which puts a price on inventing viewers to
///      inflate a relay's share: one deposit per viewer key and epoch. Receipts are cumulative per
///      (viewer, relayer, content, epoch), so a relay submits only the latest one it holds and
///      each byte is counted once however often receipts are resubmitted. A viewer cannot be
///      its own relayer, and counts at most `maxViewerBytesPerEpoch` in an epoch over every
///      relayer and content together (what one viewer can watch in an epoch): a key that
///      signs for itself, or a viewer key signing 2^64 - 1 bytes, takes no more than one
///      honest viewer's worth of any pool.
///
///      Claims are sampled so that they cost less than they pay: after an epoch ends a seed is
///      drawn from a block hash nobody knew while the epoch ran (`draw`), and only the receipts
///      of viewers the seed picks (one in 2^drawBits) are claimed. Every rule above still holds
///      for each receipt that is claimed, and the pool is shared among the bytes claimed, so a
///      relay's expected share is its share of all bytes, while the gas paid falls 2^drawBits
///      times. A viewer is picked whole (all its receipts, for every relayer and content), so
///      its cap binds what it can count, and it cannot be picked after the fact: its deposit
///      must be locked from the epoch's start, before the seed exists. A pool none of whose
///      viewers were picked rolls into the content's current epoch (`sweep`), so a small
///      channel's relays are paid in expectation too.
///      Identities are bound: a content id is `keccak256(abi.encode(subject, creator))`, the
///      creator's address being part of what viewers sign for, so funding pays only the creator
///      that the content's own (signed) record names; a funder naming another address funds a
///      pool no viewer signs for.
contract RewardPool is EIP712 {
    using SafeERC20 for IERC20;

    /// @notice What a viewer signs: in `epoch` it has received `cumulativeBytes` bytes
    ///         (`cumulativeSegments` segments) of `contentId` from `relayer`, in total so far.
    struct Receipt {
        address viewer;
        address relayer;
        bytes32 contentId;
        uint64 epoch;
        uint64 cumulativeBytes;
        uint64 cumulativeSegments;
    }

    /// @notice A receipt with the viewer's 65-byte EIP-712 signature over it.
    struct SignedReceipt {
        Receipt receipt;
        bytes signature;
    }

    bytes32 public constant RECEIPT_TYPEHASH = keccak256(
        "Receipt(address viewer,address relayer,bytes32 contentId,uint64 epoch,uint64 cumulativeBytes,uint64 cumulativeSegments)"
    );

    uint16 private constant TOTAL_BPS = 10_000;
    uint8 private constant NOT_YOURS = 1;
    uint8 private constant BAD_SIGNATURE = 2;
    uint8 private constant NOT_NEWER = 3;
    uint8 private constant SELF_DEALING = 4;
    uint8 private constant NOT_DRAWN = 5;
    /// @dev A block hash is readable for 256 blocks; a draw not completed by then starts over.
    uint256 private constant BLOCKHASH_WINDOW = 256;
    /// @notice How often a pool nobody's counted bytes took rolls into a later epoch before
    ///         what is left of it goes to the treasury (a content nobody watches any more).
    uint8 public constant MAX_ROLLS = 24;
    /// @notice The largest `drawBits`: one viewer in 65,536.
    uint8 public constant MAX_DRAW_BITS = 16;

    IERC20 public immutable token;
    /// @notice Where viewers hold the deposit that makes their receipts count.
    Vault public immutable vault;
    /// @notice Receives the treasury share of every funding, and viewer pools nobody relayed.
    address public immutable treasury;
    uint16 public immutable creatorBps;
    /// @dev Informational: the viewer pool is what remains after the creator and treasury
    ///      shares, so rounding never leaves a wei unassigned.
    uint16 public immutable viewerBps;
    uint16 public immutable treasuryBps;
    /// @notice Seconds per epoch; epoch n covers [n * epochLength, (n + 1) * epochLength).
    uint64 public immutable epochLength;
    /// @notice For how many epochs after an epoch ends its receipts may still be claimed.
    uint64 public immutable claimEpochs;
    /// @notice Vault deposit a viewer needs for its receipts to count.
    uint256 public immutable minDeposit;
    /// @notice Bytes one viewer's receipts may count in one epoch, over all relayers and
    ///         content: the most a viewer can watch in an epoch.
    uint64 public immutable maxViewerBytesPerEpoch;
    /// @notice One viewer in 2^drawBits is picked for claims in each epoch (0: every viewer).
    uint8 public immutable drawBits;

    mapping(bytes32 contentId => mapping(uint64 epoch => uint256)) public viewerPool;
    mapping(bytes32 contentId => mapping(uint64 epoch => uint256)) public totalBytes;
    mapping(bytes32 contentId => mapping(uint64 epoch => mapping(address relayer => uint256))) public relayerBytes;
    /// @notice The cumulativeBytes of the latest receipt counted for this pair, content and epoch.
    mapping(address viewer => mapping(address relayer => mapping(bytes32 contentId => mapping(uint64 epoch => uint64))))
        public counted;
    mapping(bytes32 contentId => mapping(uint64 epoch => mapping(address relayer => bool))) private _paid;
    /// @notice Bytes counted for a viewer in an epoch, over all relayers and content.
    mapping(address viewer => mapping(uint64 epoch => uint64)) public viewerBytes;
    /// @notice The block whose hash will be an epoch's seed (0: no draw started).
    mapping(uint64 epoch => uint256) public drawBlock;
    /// @notice The seed that picks an epoch's viewers (0: not drawn yet).
    mapping(uint64 epoch => bytes32) public seed;
    /// @notice How many times the money in a pool has been rolled on from earlier epochs.
    mapping(bytes32 contentId => mapping(uint64 epoch => uint8)) public rolls;

    /// @notice `amount` is what arrived from the funder, which the three shares add up to.
    event Funded(
        bytes32 indexed contentId,
        uint64 indexed epoch,
        address indexed funder,
        uint256 amount,
        uint256 creatorAmount,
        uint256 viewerAmount,
        uint256 treasuryAmount
    );
    event ReceiptCounted(
        address indexed viewer, address indexed relayer, bytes32 indexed contentId, uint64 epoch, uint64 delta
    );
    /// @notice Receipt `index` of a claim was skipped because `viewer` did not have
    ///         `minDeposit` locked in the Vault from the epoch's start to the end of its claim
    ///         window.
    event ReceiptNotCounted(uint256 index, address indexed viewer);
    /// @notice Receipt `index` counted `uncounted` bytes fewer than it claimed: its viewer
    ///         reached `maxViewerBytesPerEpoch`. Those bytes never count.
    event ReceiptCapped(uint256 index, address indexed viewer, uint64 uncounted);
    event PaidOut(bytes32 indexed contentId, uint64 indexed epoch, address indexed relayer, uint256 amount);
    /// @notice A pool nobody's counted bytes took went to the treasury (after MAX_ROLLS rolls).
    event Swept(bytes32 indexed contentId, uint64 indexed epoch, uint256 amount);
    /// @notice A pool nobody's counted bytes took moved to the content's pool for `toEpoch`.
    event Rolled(bytes32 indexed contentId, uint64 indexed epoch, uint64 toEpoch, uint256 amount);
    /// @notice The seed of `epoch` will be the hash of block `blockNumber`.
    event DrawStarted(uint64 indexed epoch, uint256 blockNumber);
    event Drawn(uint64 indexed epoch, bytes32 seed);

    error BadSplit();
    error BadEpochs();
    error ZeroAddress();
    error EpochOver();
    /// @param reason 1: the receipt names another relayer; 2: the signature is not the
    ///        viewer's for this chain and contract; 3: not newer than what was counted;
    ///        4: the viewer is the relayer; 5: the epoch's draw did not pick the viewer
    error BadReceipt(uint256 index, uint8 reason);
    /// @notice Receipts of `epoch` cannot be claimed before its seed is drawn (`draw`).
    error NotDrawn(uint64 epoch);
    error EpochNotOver();
    error ClaimWindowClosed(uint256 index);
    error ClaimsStillOpen();
    error NothingToPay();
    error NothingToSweep();

    constructor(
        IERC20 token_,
        Vault vault_,
        address treasury_,
        uint16 creatorBps_,
        uint16 viewerBps_,
        uint16 treasuryBps_,
        uint64 epochLength_,
        uint64 claimEpochs_,
        uint256 minDeposit_,
        uint64 maxViewerBytesPerEpoch_,
        uint8 drawBits_
    ) EIP712("Shoal RewardPool", "1") {
        if (uint256(creatorBps_) + viewerBps_ + treasuryBps_ != TOTAL_BPS) revert BadSplit();
        if (epochLength_ == 0 || claimEpochs_ == 0 || maxViewerBytesPerEpoch_ == 0 || drawBits_ > MAX_DRAW_BITS) {
            revert BadEpochs();
        }
        if (address(token_) == address(0) || address(vault_) == address(0) || treasury_ == address(0)) {
            revert ZeroAddress();
        }
        token = token_;
        vault = vault_;
        treasury = treasury_;
        creatorBps = creatorBps_;
        viewerBps = viewerBps_;
        treasuryBps = treasuryBps_;
        epochLength = epochLength_;
        claimEpochs = claimEpochs_;
        minDeposit = minDeposit_;
        maxViewerBytesPerEpoch = maxViewerBytesPerEpoch_;
        drawBits = drawBits_;
    }

    function currentEpoch() public view returns (uint64) {
        return uint64(block.timestamp / epochLength);
    }

    /// @notice The content id receipts name for `subject` (a channel's or a stream's tagged id)
    ///         made by `creator`.
    function contentOf(bytes32 subject, address creator) public pure returns (bytes32) {
        return keccak256(abi.encode(subject, creator));
    }

    /// @notice Puts `amount` (pulled with transferFrom) behind the content `subject` made by
    ///         `creator` (content id `contentOf(subject, creator)`) for `epoch`; what is split
    ///         is what arrived (a token that takes a fee on transfer delivers less).
    /// @dev The creator and treasury shares are paid at once, so only the viewer share waits for
    ///      the epoch's receipts. An epoch can be funded until it ends, never after, so the pool
    ///      is final before the first claim for it is accepted. The creator is part of the
    ///      content id viewers sign for (nodes read it from the channel's signed record or the
    ///      stream's root), so a funder naming any other address funds a content no viewer
    ///      watches: the creator share cannot be redirected, nor a creator squatted.
    function fund(bytes32 subject, address creator, uint64 epoch, uint256 amount) external {
        if (epoch < currentEpoch()) revert EpochOver();
        if (creator == address(0)) revert ZeroAddress();
        bytes32 contentId = contentOf(subject, creator);

        // The token is the one fixed at deployment, so pulling before the bookkeeping lets
        // no stranger's code run in between.
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 arrived = token.balanceOf(address(this)) - before;

        uint256 creatorAmount = arrived * creatorBps / TOTAL_BPS;
        uint256 treasuryAmount = arrived * treasuryBps / TOTAL_BPS;
        uint256 viewerAmount = arrived - creatorAmount - treasuryAmount;
        viewerPool[contentId][epoch] += viewerAmount;
        emit Funded(contentId, epoch, msg.sender, arrived, creatorAmount, viewerAmount, treasuryAmount);

        if (creatorAmount != 0) token.safeTransfer(creator, creatorAmount);
        if (treasuryAmount != 0) token.safeTransfer(treasury, treasuryAmount);
    }

    /// @notice The EIP-712 digest a viewer signs for `r`.
    function receiptDigest(Receipt calldata r) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    RECEIPT_TYPEHASH,
                    r.viewer,
                    r.relayer,
                    r.contentId,
                    r.epoch,
                    r.cumulativeBytes,
                    r.cumulativeSegments
                )
            )
        );
    }

    /// @notice Draws the seed that picks the viewers of `epoch` whose receipts are claimed, in
    ///         two steps, each a call anyone may make once the epoch is over: the first names
    ///         the block being mined, the next (in a later block) takes that block's hash.
    ///         Returns whether the seed is drawn.
    /// @dev Nobody calling the first step knows the hash of the block its call lands in, and
    ///      viewers' deposits are locked from the epoch's start, so no viewer can be created
    ///      to be picked. Whoever produces that block could choose among hashes; a draw not
    ///      completed within 256 blocks (the hash is gone) starts over.
    function draw(uint64 epoch) public returns (bool) {
        if (seed[epoch] != 0) return true;
        if (epoch >= currentEpoch()) revert EpochNotOver();
        uint256 at = drawBlock[epoch];
        if (at != 0 && block.number > at && block.number - at <= BLOCKHASH_WINDOW) {
            bytes32 s = blockhash(at);
            // A zero seed would read as "not drawn".
            if (s == 0) s = bytes32(uint256(1));
            seed[epoch] = s;
            emit Drawn(epoch, s);
            return true;
        }
        if (at == 0 || block.number - at > BLOCKHASH_WINDOW) {
            drawBlock[epoch] = block.number;
            emit DrawStarted(epoch, block.number);
        }
        return false;
    }

    /// @notice Whether `viewer`'s receipts of `epoch` are claimed: always when `drawBits` is 0,
    ///         else when the epoch's seed picks it (false until drawn).
    function picked(uint64 epoch, address viewer) public view returns (bool) {
        if (drawBits == 0) return true;
        bytes32 s = seed[epoch];
        return s != 0 && uint256(keccak256(abi.encode(s, viewer))) >> (256 - drawBits) == 0;
    }

    /// @notice Counts a batch of viewer-signed receipts for the caller, the relay they name.
    /// @dev A malformed receipt reverts the whole batch, so that a relay notices its own bug;
    ///      a receipt whose viewer lacks the deposit is only skipped, since the relay cannot
    ///      know every viewer's deposit at the moment it submits. Receipts for an epoch are
    ///      accepted once it has ended and its seed is drawn, for `claimEpochs` epochs, and only
    ///      from the viewers its seed picked.
    function claim(SignedReceipt[] calldata receipts) external {
        uint64 now_ = currentEpoch();
        for (uint256 i; i < receipts.length; ++i) {
            Receipt calldata r = receipts[i].receipt;
            if (r.relayer != msg.sender) revert BadReceipt(i, NOT_YOURS);
            if (r.viewer == r.relayer) revert BadReceipt(i, SELF_DEALING);
            if (r.epoch >= now_ || now_ - r.epoch > claimEpochs) revert ClaimWindowClosed(i);
            if (drawBits != 0) {
                if (seed[r.epoch] == 0) revert NotDrawn(r.epoch);
                if (!picked(r.epoch, r.viewer)) revert BadReceipt(i, NOT_DRAWN);
            }

            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(receiptDigest(r), receipts[i].signature);
            if (err != ECDSA.RecoverError.NoError || signer != r.viewer) revert BadReceipt(i, BAD_SIGNATURE);

            uint64 before = counted[r.viewer][r.relayer][r.contentId][r.epoch];
            if (r.cumulativeBytes <= before) revert BadReceipt(i, NOT_NEWER);

            // The deposit behind a viewer is locked from the epoch's start to the end of
            // its claim window: it backs this viewer alone for the whole epoch.
            if (!vault.lockedThrough(
                    r.viewer, minDeposit, r.epoch * epochLength, (r.epoch + 1 + claimEpochs) * epochLength
                )) {
                emit ReceiptNotCounted(i, r.viewer);
                continue;
            }

            // The receipt is spent whole; what lies beyond the viewer's cap never counts.
            counted[r.viewer][r.relayer][r.contentId][r.epoch] = r.cumulativeBytes;
            uint64 claimed = r.cumulativeBytes - before;
            uint64 used = viewerBytes[r.viewer][r.epoch];
            uint64 room = maxViewerBytesPerEpoch > used ? maxViewerBytesPerEpoch - used : 0;
            uint64 delta = claimed < room ? claimed : room;
            if (delta < claimed) emit ReceiptCapped(i, r.viewer, claimed - delta);
            viewerBytes[r.viewer][r.epoch] = used + delta;
            relayerBytes[r.contentId][r.epoch][r.relayer] += delta;
            totalBytes[r.contentId][r.epoch] += delta;
            emit ReceiptCounted(r.viewer, r.relayer, r.contentId, r.epoch, delta);
        }
    }

    /// @notice What `relayer` is owed from the viewer pool of `contentId` in `epoch`: its share
    ///         of the bytes counted. Provisional while the claim window is open; 0 once paid.
    /// @dev Rounds down, so at most one wei per relay stays behind in the contract.
    function claimable(bytes32 contentId, uint64 epoch, address relayer) public view returns (uint256) {
        uint256 total = totalBytes[contentId][epoch];
        if (total == 0 || _paid[contentId][epoch][relayer]) return 0;
        return Math.mulDiv(viewerPool[contentId][epoch], relayerBytes[contentId][epoch][relayer], total);
    }

    /// @notice Pays the caller its share of the viewer pool of `contentId` in `epoch`, once,
    ///         after the claim window has closed and every relay's bytes are final.
    function payout(bytes32 contentId, uint64 epoch) external returns (uint256 amount) {
        _requireClaimsClosed(epoch);
        amount = claimable(contentId, epoch, msg.sender);
        if (amount == 0) revert NothingToPay();
        _paid[contentId][epoch][msg.sender] = true;
        emit PaidOut(contentId, epoch, msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice Moves the viewer pool of a closed epoch in which no bytes of `contentId` were
    ///         counted (nobody relayed it, or the draw picked none of its viewers) into the
    ///         content's pool for the current epoch, so that its relays still earn it; a pool
    ///         already rolled `MAX_ROLLS` times goes to the treasury instead, so that money
    ///         for content nobody watches is not locked here for good. Anyone may call it; the
    ///         money can only go to the content's relays or to the treasury.
    function sweep(bytes32 contentId, uint64 epoch) external {
        _requireClaimsClosed(epoch);
        uint256 amount = viewerPool[contentId][epoch];
        if (totalBytes[contentId][epoch] != 0 || amount == 0) revert NothingToSweep();
        viewerPool[contentId][epoch] = 0;
        uint8 rolled = rolls[contentId][epoch];
        if (rolled >= MAX_ROLLS) {
            emit Swept(contentId, epoch, amount);
            token.safeTransfer(treasury, amount);
            return;
        }
        uint64 to = currentEpoch();
        viewerPool[contentId][to] += amount;
        if (rolls[contentId][to] <= rolled) rolls[contentId][to] = rolled + 1;
        emit Rolled(contentId, epoch, to, amount);
    }

    function _requireClaimsClosed(uint64 epoch) private view {
        uint64 now_ = currentEpoch();
        if (now_ <= epoch || now_ - epoch <= claimEpochs) revert ClaimsStillOpen();
    }
}
