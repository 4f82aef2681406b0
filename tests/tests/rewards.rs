//! Settlement on a real local chain (anvil): the contracts built from
//! `contracts/`, driven by the node's alloy client, with receipts and
//! cheques signed by the protocol's EIP-712 code.

use alloy_primitives::{Address, B256, U256};
use shoal_node::settle::{SettleError, Settlement};
use shoal_protocol::receipt::{Cheque, Deployment, Receipt, SignedReceipt, Wallet, content_id};
use shoal_tests::chain::{
    Anvil, EPOCH, connect, deploy_fee_token, deploy_on, receipt_store, tokens, wallet,
};

/// A receipt `viewer` signs for `relayer`.
fn receipt(
    viewer: &Wallet,
    relayer: &Wallet,
    d: &Deployment,
    content: B256,
    epoch: u64,
    bytes: u64,
) -> SignedReceipt {
    viewer.sign_receipt(
        Receipt {
            viewer: viewer.address(),
            relayer: relayer.address(),
            contentId: content,
            epoch,
            cumulativeBytes: bytes,
            cumulativeSegments: bytes / 250_000,
        },
        &d.receipt_domain(),
    )
}

fn refused(result: Result<impl std::fmt::Debug, SettleError>, needle: &str) {
    match result {
        Err(SettleError::Reverted(why)) => assert!(why.contains(needle), "{why}"),
        other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
    }
}

/// A chain with the contracts, a deployer holding the supply, and a
/// treasury.
struct World {
    anvil: Anvil,
    d: Deployment,
    deployer: Wallet,
    treasury: Address,
}

async fn world() -> World {
    drawing_world(0).await
}

/// A world whose pool picks one viewer in 2^`draw_bits` for claims.
async fn drawing_world(draw_bits: u8) -> World {
    let anvil = Anvil::start().await;
    let deployer = wallet(&anvil, 1).await;
    let treasury = Wallet::from_bytes(&[2; 32]).unwrap().address();
    let d = deploy_on(&anvil, &deployer, treasury, None, draw_bits).await;
    World {
        anvil,
        d,
        deployer,
        treasury,
    }
}

impl World {
    /// A new participant with gas and `deposit` tokens in the vault.
    async fn member(&self, n: u8, deposit: u64) -> Wallet {
        let w = wallet(&self.anvil, n).await;
        if deposit > 0 {
            let bank = connect(&self.anvil, &self.deployer, self.d).await;
            bank.transfer(w.address(), tokens(deposit)).await.unwrap();
            let me = connect(&self.anvil, &w, self.d).await;
            me.deposit(tokens(deposit)).await.unwrap();
        }
        w
    }

    /// A viewer whose receipts count: a member whose `deposit` is locked
    /// from now on, for the epochs after this one (`shoal rewards
    /// deposit` does the same).
    async fn viewer(&self, n: u8, deposit: u64) -> Wallet {
        let w = self.member(n, deposit).await;
        let me = connect(&self.anvil, &w, self.d).await;
        me.lock_for_epochs(24).await.unwrap();
        w
    }

    /// Moves the chain into the next epoch, the first one that locks made
    /// before count in; returns it.
    async fn next_epoch(&self) -> u64 {
        self.anvil.advance(EPOCH).await;
        let bank = connect(&self.anvil, &self.deployer, self.d).await;
        bank.current_epoch().await.unwrap()
    }
}

/// A world with a viewer holding a locked deposit, a relayer connected to
/// the chain, the first epoch the viewer's receipts count in (the current
/// one) and a content id.
async fn viewer_and_relayer() -> (World, Wallet, Wallet, Settlement, u64, B256) {
    let w = world().await;
    let viewer = w.viewer(10, 5).await;
    let relayer = w.member(20, 0).await;
    let c = connect(&w.anvil, &relayer, w.d).await;
    let epoch = w.next_epoch().await;
    (w, viewer, relayer, c, epoch, B256::repeat_byte(1))
}

#[tokio::test]
async fn relayers_are_paid_the_split_to_the_wei() {
    let w = world().await;
    let creator = Wallet::from_bytes(&[3; 32]).unwrap().address();
    let (v1, v2) = (w.viewer(10, 5).await, w.viewer(11, 5).await);
    let stranger = w.member(12, 0).await;
    let (r1, r2) = (w.member(20, 0).await, w.member(21, 0).await);
    let bank = connect(&w.anvil, &w.deployer, w.d).await;
    let subject = B256::repeat_byte(0x42);
    let content = content_id(subject, creator);
    let epoch = w.next_epoch().await;
    // An advertiser funds the content: 1000 tokens and 7 wei, an amount
    // that does not split evenly.
    let amount = tokens(1000) + U256::from(7);
    bank.fund(subject, creator, epoch, amount).await.unwrap();
    let creator_share = amount * U256::from(7000) / U256::from(10_000);
    let treasury_share = amount * U256::from(1000) / U256::from(10_000);
    let viewer_pool = amount - creator_share - treasury_share;
    assert_eq!(bank.token_balance(creator).await.unwrap(), creator_share);
    assert_eq!(
        bank.token_balance(w.treasury).await.unwrap(),
        treasury_share
    );

    // Relayer 1 served both viewers; relayer 2 served viewer 1 and a
    // viewer with no deposit, whose receipt does not count.
    let for_r1 = vec![
        receipt(&v1, &r1, &w.d, content, epoch, 3_000_000),
        receipt(&v2, &r1, &w.d, content, epoch, 1_000_000),
    ];
    let for_r2 = vec![
        receipt(&v1, &r2, &w.d, content, epoch, 2_000_000),
        receipt(&stranger, &r2, &w.d, content, epoch, 5_000_000),
    ];
    let (c1, c2) = (
        connect(&w.anvil, &r1, w.d).await,
        connect(&w.anvil, &r2, w.d).await,
    );
    refused(c1.claim(&for_r1).await, "not over yet");
    w.anvil.advance(EPOCH).await;
    let o1 = c1.claim(&for_r1).await.unwrap();
    let o2 = c2.claim(&for_r2).await.unwrap();
    assert_eq!((o1.counted, o1.bytes, o1.not_counted), (2, 4_000_000, 0));
    assert_eq!((o2.counted, o2.bytes, o2.not_counted), (1, 2_000_000, 1));
    refused(c1.payout(content, epoch).await, "still open");
    w.anvil.advance(EPOCH).await;
    let p1 = c1.payout(content, epoch).await.unwrap();
    let p2 = c2.payout(content, epoch).await.unwrap();
    let total = U256::from(6_000_000);
    assert_eq!(p1, viewer_pool * U256::from(4_000_000) / total);
    assert_eq!(p2, viewer_pool * U256::from(2_000_000) / total);
    assert_eq!(bank.token_balance(r1.address()).await.unwrap(), p1);
    assert_eq!(bank.token_balance(r2.address()).await.unwrap(), p2);
    // Nothing is paid twice, and nothing but rounding stays behind.
    refused(c1.payout(content, epoch).await, "nothing to pay");
    assert!(viewer_pool - p1 - p2 <= U256::from(2));
}

/// A token that takes a fee on transfer delivers less than the funder
/// sends: the pool splits what arrived, so its viewer pool is backed to
/// the wei and the relayer's payout goes through (splitting the amount
/// asked for promised more than the pool held).
#[tokio::test]
async fn a_funding_counts_what_arrived() {
    let anvil = Anvil::start().await;
    let deployer = wallet(&anvil, 1).await;
    let treasury = Wallet::from_bytes(&[2; 32]).unwrap().address();
    let fee_token = deploy_fee_token(&anvil, &deployer, tokens(1_000_000)).await;
    let d = deploy_on(&anvil, &deployer, treasury, Some(fee_token), 0).await;
    let w = World {
        anvil,
        d,
        deployer,
        treasury,
    };
    let creator = Wallet::from_bytes(&[3; 32]).unwrap().address();
    let bank = connect(&w.anvil, &w.deployer, w.d).await;
    // The vault too counts what arrived: 4.95 of a deposit of 5.
    let viewer = w.member(10, 0).await;
    bank.transfer(viewer.address(), tokens(10)).await.unwrap();
    let me = connect(&w.anvil, &viewer, w.d).await;
    me.deposit(tokens(5)).await.unwrap();
    let deposited = tokens(495) / U256::from(100);
    assert_eq!(me.deposit_of(viewer.address()).await.unwrap().0, deposited);
    assert_eq!(bank.token_balance(w.d.vault).await.unwrap(), deposited);
    me.lock_for_epochs(24).await.unwrap();
    let relayer = w.member(20, 0).await;
    let subject = B256::repeat_byte(0x42);
    let content = content_id(subject, creator);
    let epoch = w.next_epoch().await;
    bank.fund(subject, creator, epoch, tokens(1000))
        .await
        .unwrap();
    // 990 arrived: 693 to the creator, 99 to the treasury (each less the
    // token's own 1% on the way), 198 in the pool.
    assert_eq!(
        bank.token_balance(w.d.reward_pool).await.unwrap(),
        tokens(198)
    );
    let c = connect(&w.anvil, &relayer, w.d).await;
    w.anvil.advance(EPOCH).await;
    let r = receipt(&viewer, &relayer, &w.d, content, epoch, 1_000_000);
    c.claim(&[r]).await.unwrap();
    w.anvil.advance(EPOCH).await;
    assert_eq!(c.payout(content, epoch).await.unwrap(), tokens(198));
    assert_eq!(
        bank.token_balance(w.d.reward_pool).await.unwrap(),
        U256::ZERO
    );
}

/// A node sends only receipts that can pay: for content someone funded,
/// from viewers whose deposit was locked through the epoch, and forgets
/// those whose claim window has closed.
#[tokio::test]
async fn a_node_claims_only_receipts_that_can_pay_and_forgets_expired_ones() {
    let w = world().await;
    let creator = Wallet::from_bytes(&[3; 32]).unwrap().address();
    let viewer = w.viewer(10, 5).await;
    let stranger = w.member(11, 5).await;
    let relayer = w.member(20, 0).await;
    let subject = B256::repeat_byte(1);
    let (funded, unfunded) = (content_id(subject, creator), B256::repeat_byte(2));
    let earlier = w.next_epoch().await;
    let epoch = w.next_epoch().await;
    let bank = connect(&w.anvil, &w.deployer, w.d).await;
    bank.fund(subject, creator, epoch, tokens(10))
        .await
        .unwrap();
    let held = [
        receipt(&viewer, &relayer, &w.d, funded, epoch, 1_000_000),
        receipt(&viewer, &relayer, &w.d, unfunded, epoch, 1_000_000),
        receipt(&stranger, &relayer, &w.d, funded, epoch, 1_000_000),
        receipt(&viewer, &relayer, &w.d, funded, earlier, 1_000_000),
    ];
    let (_dir, store) = receipt_store(&held);
    let c = connect(&w.anvil, &relayer, w.d).await;
    w.anvil.advance(EPOCH).await;
    let o = shoal_node::settle::claim(&store, &c).await.unwrap();
    assert_eq!(
        (
            o.transactions,
            o.counted,
            o.unfunded,
            o.no_deposit,
            o.expired
        ),
        (1, 1, 1, 1, 1),
        "{o:?}"
    );
    assert_eq!(store.receipts().unwrap().len(), 3);
    // Nothing left worth sending.
    let again = shoal_node::settle::claim(&store, &c).await.unwrap();
    assert_eq!(
        (again.transactions, again.unfunded, again.no_deposit),
        (0, 1, 1)
    );
}

/// The creator is part of the content id viewers sign for: whoever funds
/// a channel naming another creator funds a content nobody watches, and
/// the channel's relayers and creator are paid only from funding that
/// names the creator its record does.
#[tokio::test]
async fn funding_a_channel_pays_only_its_recorded_creator() {
    let (w, viewer, relayer, c, epoch, subject) = viewer_and_relayer().await;
    let creator = Wallet::from_bytes(&[3; 32]).unwrap().address();
    let squatter = w.member(30, 0).await;
    let bank = connect(&w.anvil, &w.deployer, w.d).await;
    bank.transfer(squatter.address(), tokens(1000))
        .await
        .unwrap();
    // The squatter funds the channel naming itself: it pays itself 70% of
    // its own money, and the pool lands under a content id no viewer of
    // the channel signs for.
    let s = connect(&w.anvil, &squatter, w.d).await;
    s.fund(subject, squatter.address(), epoch, tokens(1000))
        .await
        .unwrap();
    bank.fund(subject, creator, epoch, tokens(1000))
        .await
        .unwrap();
    assert_eq!(bank.token_balance(creator).await.unwrap(), tokens(700));
    let (real, squatted) = (
        content_id(subject, creator),
        content_id(subject, squatter.address()),
    );
    // The contract's contentOf and the node's content_id agree.
    assert_eq!(c.viewer_pool(real, epoch).await.unwrap(), tokens(200));
    assert_eq!(c.viewer_pool(squatted, epoch).await.unwrap(), tokens(200));
    w.anvil.advance(EPOCH).await;
    c.claim(&[receipt(&viewer, &relayer, &w.d, real, epoch, 1_000_000)])
        .await
        .unwrap();
    w.anvil.advance(EPOCH).await;
    assert_eq!(c.payout(real, epoch).await.unwrap(), tokens(200));
    refused(c.payout(squatted, epoch).await, "nothing to pay");
    assert_eq!(bank.token_balance(creator).await.unwrap(), tokens(700));
}

/// Claims are sampled: after an epoch a seed drawn from a block hash
/// picks one viewer in 2^bits, and only picked viewers' receipts are
/// claimed; a pool none of whose receipts could count rolls on into its
/// content's current epoch once its claim window closes.
#[tokio::test]
async fn only_the_viewers_an_epochs_draw_picks_are_claimed_and_an_unpicked_pool_rolls_on() {
    use shoal_protocol::receipt::picked;
    // One viewer in two: with 16 viewers, none or all picked has odds of
    // 3 in 100,000.
    let w = drawing_world(1).await;
    let creator = Wallet::from_bytes(&[3; 32]).unwrap().address();
    let mut viewers = Vec::new();
    for n in 0..16u8 {
        viewers.push(w.viewer(40 + n, 2).await);
    }
    let relayer = w.member(20, 0).await;
    let c = connect(&w.anvil, &relayer, w.d).await;
    let epoch = w.next_epoch().await;
    let bank = connect(&w.anvil, &w.deployer, w.d).await;
    let (watched, lonely) = (B256::repeat_byte(1), B256::repeat_byte(2));
    for subject in [watched, lonely] {
        bank.fund(subject, creator, epoch, tokens(100))
            .await
            .unwrap();
    }
    let watched_id = content_id(watched, creator);
    let lonely_id = content_id(lonely, creator);
    w.anvil.advance(EPOCH).await;
    let first = receipt(&viewers[0], &relayer, &w.d, watched_id, epoch, 1_000);
    refused(c.claim(std::slice::from_ref(&first)).await, "not drawn");

    let seed = c.draw(epoch).await.unwrap();
    let (chosen, passed): (Vec<&Wallet>, Vec<&Wallet>) =
        viewers.iter().partition(|v| picked(seed, v.address(), 1));
    assert!(!chosen.is_empty() && !passed.is_empty(), "{seed}");
    // The chain picks as the node computes.
    let unpicked = receipt(passed[0], &relayer, &w.d, watched_id, epoch, 1_000);
    refused(c.claim(&[unpicked]).await, "did not pick");

    let mut held: Vec<SignedReceipt> = viewers
        .iter()
        .map(|v| receipt(v, &relayer, &w.d, watched_id, epoch, 1_000_000))
        .collect();
    // The lonely content was watched only by a viewer the draw passed over.
    held.push(receipt(
        passed[0], &relayer, &w.d, lonely_id, epoch, 1_000_000,
    ));
    let (_dir, store) = receipt_store(&held);
    let o = shoal_node::settle::claim(&store, &c).await.unwrap();
    assert_eq!(
        (o.counted, o.bytes, o.not_picked, o.rolled),
        (
            chosen.len(),
            chosen.len() as u64 * 1_000_000,
            passed.len() + 1,
            0
        ),
        "{o:?}"
    );
    // Once the window closes the receipts are forgotten, the watched pool
    // stays for its relayers' payouts and the lonely one rolls on.
    w.anvil.advance(2 * EPOCH).await;
    let now = c.current_epoch().await.unwrap();
    let o = shoal_node::settle::claim(&store, &c).await.unwrap();
    assert_eq!((o.expired, o.rolled, o.transactions), (17, 1, 0), "{o:?}");
    assert_eq!(c.viewer_pool(lonely_id, epoch).await.unwrap(), U256::ZERO);
    assert_eq!(c.viewer_pool(lonely_id, now).await.unwrap(), tokens(20));
    assert_eq!(c.payout(watched_id, epoch).await.unwrap(), tokens(20));
}

#[tokio::test]
async fn a_forged_receipt_is_refused() {
    let (w, viewer, relayer, c, epoch, content) = viewer_and_relayer().await;
    let forger = Wallet::from_bytes(&[66; 32]).unwrap();
    // Claims to be the viewer's, signed by someone else.
    let mut forged = receipt(&forger, &relayer, &w.d, content, epoch, 9_000_000);
    forged.receipt.viewer = viewer.address();
    w.anvil.advance(EPOCH).await;
    refused(
        c.claim(&[forged]).await,
        "receipt 0: the signature is not the viewer's",
    );
    // A genuine receipt altered after signing is as bad.
    let mut altered = receipt(&viewer, &relayer, &w.d, content, epoch, 1_000);
    altered.receipt.cumulativeBytes = 1_000_000_000;
    refused(c.claim(&[altered]).await, "signature");
}

#[tokio::test]
async fn a_replayed_receipt_is_refused_and_a_newer_one_counts_only_its_increase() {
    let (w, viewer, relayer, c, epoch, content) = viewer_and_relayer().await;
    let first = receipt(&viewer, &relayer, &w.d, content, epoch, 1_000_000);
    w.anvil.advance(EPOCH).await;
    assert_eq!(
        c.claim(std::slice::from_ref(&first)).await.unwrap().bytes,
        1_000_000
    );
    refused(c.claim(std::slice::from_ref(&first)).await, "replayed");
    let newer = receipt(&viewer, &relayer, &w.d, content, epoch, 1_500_000);
    assert_eq!(c.claim(&[newer]).await.unwrap().bytes, 500_000);
    // A receipt for another relayer cannot be claimed by this one.
    let other = w.member(21, 0).await;
    let theirs = receipt(&viewer, &other, &w.d, content, epoch, 2_000_000);
    refused(c.claim(&[theirs]).await, "names another relayer");
}

#[tokio::test]
async fn a_relayer_cannot_count_receipts_it_signed_for_itself() {
    let (w, _viewer, relayer, c, epoch, content) = viewer_and_relayer().await;
    let bank = connect(&w.anvil, &w.deployer, w.d).await;
    bank.transfer(relayer.address(), tokens(5)).await.unwrap();
    c.deposit(tokens(5)).await.unwrap();
    let own = receipt(&relayer, &relayer, &w.d, content, epoch, 1_000_000);
    w.anvil.advance(EPOCH).await;
    refused(
        c.claim(&[own]).await,
        "receipt 0: its viewer is its relayer",
    );
}

/// One key (the attacker's relayer) holding a second key with a deposit
/// (its viewer) signs the most a receipt can carry, for two contents: the
/// viewer's receipts count what one viewer can watch in an epoch, over
/// both, and the honest relayer of the same pool is still paid its share
/// (before the cap its share rounded to nothing and its payout reverted).
#[tokio::test]
async fn a_viewer_counts_at_most_its_cap_in_an_epoch_however_much_it_signs() {
    use shoal_protocol::receipt::MAX_VIEWER_BYTES_PER_EPOCH as CAP;
    let w = world().await;
    let creator = Wallet::from_bytes(&[3; 32]).unwrap().address();
    let bank = connect(&w.anvil, &w.deployer, w.d).await;
    let subject = B256::repeat_byte(0x42);
    let (content, other) = (content_id(subject, creator), B256::repeat_byte(0x43));
    let sybil = w.viewer(10, 1).await;
    let honest_viewer = w.viewer(11, 5).await;
    let (attacker, honest) = (w.member(20, 0).await, w.member(21, 0).await);
    let epoch = w.next_epoch().await;
    bank.fund(subject, creator, epoch, tokens(1000))
        .await
        .unwrap();
    let inflated = vec![
        receipt(&sybil, &attacker, &w.d, content, epoch, u64::MAX),
        receipt(&sybil, &attacker, &w.d, other, epoch, 1_000_000),
    ];
    // An hour of a 1.1 Mb/s stream.
    let served = 500_000_000;
    let honest_receipt = receipt(&honest_viewer, &honest, &w.d, content, epoch, served);
    let (ca, ch) = (
        connect(&w.anvil, &attacker, w.d).await,
        connect(&w.anvil, &honest, w.d).await,
    );
    w.anvil.advance(EPOCH).await;
    let oa = ca.claim(&inflated).await.unwrap();
    assert_eq!((oa.counted, oa.bytes), (2, CAP));
    assert_eq!(oa.capped_bytes, (u64::MAX - CAP) + 1_000_000);
    // Spent: the same receipts cannot be sent again for their excess.
    refused(ca.claim(&inflated[1..]).await, "replayed");
    let oh = ch.claim(&[honest_receipt]).await.unwrap();
    assert_eq!((oh.bytes, oh.capped_bytes), (served, 0));
    w.anvil.advance(EPOCH).await;
    let pool = tokens(1000) * U256::from(2000) / U256::from(10_000);
    let total = U256::from(CAP) + U256::from(served);
    let pa = ca.payout(content, epoch).await.unwrap();
    let ph = ch.payout(content, epoch).await.unwrap();
    assert_eq!(pa, pool * U256::from(CAP) / total);
    assert_eq!(ph, pool * U256::from(served) / total);
    assert!(ph > U256::ZERO);
}

/// N sybil viewer keys, each with its own locked deposit and each
/// signing 2^64 - 1 bytes for the attacker's relayer, count N caps and
/// no more; a key without a locked deposit counts nothing.
#[tokio::test]
async fn n_sybil_viewers_count_at_most_n_caps() {
    use shoal_protocol::receipt::MAX_VIEWER_BYTES_PER_EPOCH as CAP;
    let w = world().await;
    let creator = Wallet::from_bytes(&[3; 32]).unwrap().address();
    let bank = connect(&w.anvil, &w.deployer, w.d).await;
    let subject = B256::repeat_byte(0x42);
    let content = content_id(subject, creator);
    let mut sybils = Vec::new();
    for n in 0..3u8 {
        sybils.push(w.viewer(60 + n, 1).await);
    }
    // A fourth key holds a deposit it never locked.
    let unlocked = w.member(63, 1).await;
    let attacker = w.member(20, 0).await;
    let epoch = w.next_epoch().await;
    bank.fund(subject, creator, epoch, tokens(1000))
        .await
        .unwrap();
    let mut inflated: Vec<SignedReceipt> = sybils
        .iter()
        .map(|v| receipt(v, &attacker, &w.d, content, epoch, u64::MAX))
        .collect();
    inflated.push(receipt(
        &unlocked,
        &attacker,
        &w.d,
        content,
        epoch,
        u64::MAX,
    ));
    let ca = connect(&w.anvil, &attacker, w.d).await;
    w.anvil.advance(EPOCH).await;
    let o = ca.claim(&inflated).await.unwrap();
    assert_eq!(
        (o.counted, o.bytes, o.not_counted),
        (3, 3 * CAP, 1),
        "{o:?}"
    );
}

/// A deposit stands behind one viewer for a whole epoch: locked in the
/// epoch it counts for, it counts only from the next; locked, it can
/// neither be taken back after watching (the relay's receipts would not
/// count) nor be moved to a second viewer key by a cheque to it.
#[tokio::test]
async fn a_locked_deposit_backs_one_viewer_for_the_whole_epoch() {
    let w = world().await;
    let content = B256::repeat_byte(5);
    let relayer = w.member(20, 0).await;
    let c = connect(&w.anvil, &relayer, w.d).await;
    // The pool's minimum, all of it locked.
    let viewer = w.viewer(10, 1).await;
    let locked_this_epoch = c.current_epoch().await.unwrap();
    let epoch = w.next_epoch().await;
    let me = connect(&w.anvil, &viewer, w.d).await;
    // A cheque to a second key of its own cannot carry the deposit over.
    let second = w.member(11, 0).await;
    let cheque = viewer.sign_cheque(
        Cheque {
            payer: viewer.address(),
            payee: second.address(),
            token: w.d.token,
            cumulativeAmount: tokens(5),
        },
        &w.d.cheque_domain(),
    );
    let cashed = c.cash_cheque(&cheque).await.unwrap();
    assert_eq!((cashed.paid, cashed.bounced), (U256::ZERO, tokens(5)));
    me.request_withdrawal().await.unwrap();
    // The epoch in which the deposit was locked does not count; the next
    // does; the second key, with nothing locked, never.
    let early = receipt(&viewer, &relayer, &w.d, content, locked_this_epoch, 1_000);
    let good = receipt(&viewer, &relayer, &w.d, content, epoch, 1_000_000);
    let sybil = receipt(&second, &relayer, &w.d, content, epoch, 1_000_000);
    w.anvil.advance(EPOCH).await;
    refused(c.claim(std::slice::from_ref(&early)).await, "claim window");
    let o = c.claim(&[good, sybil]).await.unwrap();
    assert_eq!((o.counted, o.bytes, o.not_counted), (1, 1_000_000, 1));
    // Watching done, the viewer asked for its deposit back: the unlock
    // period has passed, but the lock still holds it.
    w.anvil.advance(86_400 - EPOCH).await;
    refused(
        me.withdraw(tokens(1)).await,
        "only 0 wei of the deposit are free",
    );
    // A lock only grows and lasts longer.
    refused(me.lock(tokens(1), 1).await, "only grow");
    // Topping up keeps the lock as it was (extended): the epochs it covers
    // still count, and the rest of the deposit pays cheques.
    let (_, since, _) = me.lock_of(viewer.address()).await.unwrap();
    let bank = connect(&w.anvil, &w.deployer, w.d).await;
    bank.transfer(viewer.address(), tokens(3)).await.unwrap();
    me.deposit(tokens(3)).await.unwrap();
    me.lock_for_epochs(24).await.unwrap();
    let (locked, since_after, _) = me.lock_of(viewer.address()).await.unwrap();
    assert_eq!((locked, since_after), (tokens(1), since));
    let cashed = c.cash_cheque(&cheque).await.unwrap();
    assert_eq!((cashed.paid, cashed.bounced), (tokens(3), tokens(2)));
}

#[tokio::test]
async fn a_receipt_for_another_chain_or_contract_is_refused() {
    let (w, viewer, relayer, c, epoch, content) = viewer_and_relayer().await;
    let mainnet = Deployment { chain_id: 1, ..w.d };
    let other_pool = Deployment {
        reward_pool: Address::repeat_byte(0x77),
        ..w.d
    };
    w.anvil.advance(EPOCH).await;
    for d in [mainnet, other_pool] {
        let r = receipt(&viewer, &relayer, &d, content, epoch, 1_000_000);
        refused(
            c.claim(&[r]).await,
            "not the viewer's for this chain and contract",
        );
    }
    // The same receipt made for this deployment counts.
    let good = receipt(&viewer, &relayer, &w.d, content, epoch, 1_000_000);
    assert_eq!(c.claim(&[good]).await.unwrap().counted, 1);
}

#[tokio::test]
async fn a_withdrawal_before_the_unlock_period_is_refused() {
    let w = world().await;
    let viewer = w.member(10, 5).await;
    let c = connect(&w.anvil, &viewer, w.d).await;
    refused(c.withdraw(tokens(1)).await, "no withdrawal was requested");
    let unlock = c.request_withdrawal().await.unwrap();
    assert!(unlock > 0);
    refused(c.withdraw(tokens(1)).await, "locked until");
    w.anvil.advance(86_400).await;
    c.withdraw(tokens(2)).await.unwrap();
    assert_eq!(
        c.deposit_of(viewer.address()).await.unwrap(),
        (tokens(3), unlock)
    );
    assert_eq!(c.token_balance(viewer.address()).await.unwrap(), tokens(2));
    // A new deposit means staying: the withdrawal is cancelled.
    c.deposit(tokens(1)).await.unwrap();
    assert_eq!(
        c.deposit_of(viewer.address()).await.unwrap(),
        (tokens(4), 0)
    );
    refused(c.withdraw(tokens(1)).await, "no withdrawal was requested");
}

#[tokio::test]
async fn a_cheque_beyond_the_deposit_bounces_and_the_rest_is_paid_later() {
    let w = world().await;
    let payer = w.member(10, 5).await;
    let payee = w.member(20, 0).await;
    let cheque = |amount: U256| {
        payer.sign_cheque(
            Cheque {
                payer: payer.address(),
                payee: payee.address(),
                token: w.d.token,
                cumulativeAmount: amount,
            },
            &w.d.cheque_domain(),
        )
    };
    let c = connect(&w.anvil, &payee, w.d).await;
    // 8 tokens owed against a deposit of 5: 5 paid, 3 bounce.
    let eight = cheque(tokens(8));
    let cashed = c.cash_cheque(&eight).await.unwrap();
    assert_eq!((cashed.paid, cashed.bounced), (tokens(5), tokens(3)));
    assert_eq!(c.token_balance(payee.address()).await.unwrap(), tokens(5));
    // The payer tops up; the same cheque pays the rest, once.
    let bank = connect(&w.anvil, &w.deployer, w.d).await;
    bank.transfer(payer.address(), tokens(10)).await.unwrap();
    connect(&w.anvil, &payer, w.d)
        .await
        .deposit(tokens(10))
        .await
        .unwrap();
    let cashed = c.cash_cheque(&eight).await.unwrap();
    assert_eq!((cashed.paid, cashed.bounced), (tokens(3), U256::ZERO));
    refused(c.cash_cheque(&eight).await, "cashed already");
    assert_eq!(c.token_balance(payee.address()).await.unwrap(), tokens(8));
    // A cheque signed by someone else is refused.
    let mut forged = cheque(tokens(20));
    forged.cheque.payer = w.deployer.address();
    refused(c.cash_cheque(&forged).await, "not signed by its payer");
}

#[tokio::test]
async fn the_wrong_chain_is_refused_before_anything_is_sent() {
    let w = world().await;
    let other = Deployment {
        chain_id: 10,
        ..w.d
    };
    let err = shoal_node::settle::Settlement::connect(&w.anvil.rpc, &w.deployer, other)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("has id 31337, but the config says 10"),
        "{err}"
    );
    let err = shoal_node::settle::Settlement::connect("ftp://x", &w.deployer, w.d)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("invalid RPC URL"), "{err}");
}

/// The middle of `epoch`, in Unix milliseconds: nodes started at it count
/// receipts in `epoch` for half an hour, whatever the wall clock says, so
/// no test streams across an epoch boundary.
fn mid_epoch_ms(epoch: u64) -> u64 {
    (epoch * EPOCH + EPOCH / 2) * 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_stream_collect_receipts_and_relayers_are_paid_the_split() {
    use shoal_node::NodeConfig;
    use shoal_node::rewards::RewardsConfig;
    use shoal_protocol::ledger::LedgerConfig;
    use shoal_protocol::receipt::channel_subject;
    use shoal_tests::live::{
        CREATOR, Encoder, channel_key, hls_folder, one_at_a_time, spawn_broadcast, start_with,
        viewer_config, wait_for_segments,
    };

    let _serial = one_at_a_time().await;
    let w = world().await;
    // An advertiser funds the channel for the chain's epoch, the epoch the
    // nodes' clocks are set in.
    let bank = connect(&w.anvil, &w.deployer, w.d).await;
    // The creator the broadcast's channel record names.
    let creator = Address::from(CREATOR);
    // Viewers hold a locked deposit (their receipts count); the
    // broadcaster needs none to be paid.
    let viewer_wallets = [w.viewer(10, 5).await, w.viewer(11, 5).await];
    let broadcaster_wallet = w.member(20, 0).await;
    let epoch = w.next_epoch().await;
    let config = |wallet: &Wallet| NodeConfig {
        live: viewer_config(),
        rewards: RewardsConfig {
            wallet: Some(wallet.clone()),
            deployment: Some(w.d),
            // Ask for receipts every 64 KiB, so a short stream yields
            // several rounds.
            ledger: LedgerConfig {
                payment_threshold: 64 << 10,
                ask_interval: std::time::Duration::from_millis(200),
                settle_interval: std::time::Duration::from_millis(500),
                ..LedgerConfig::default()
            },
        },
        start_unix_ms: Some(mid_epoch_ms(epoch)),
        ..NodeConfig::default()
    };
    let broadcaster = start_with(None, config(&broadcaster_wallet)).await;
    let key = channel_key();
    let channel = key.id();
    let mut viewers = Vec::new();
    for wallet in &viewer_wallets {
        let v = start_with(Some(&broadcaster.addr), config(wallet)).await;
        v.node.watch(channel).await.unwrap();
        viewers.push(v);
    }

    let content = content_id(channel_subject(&channel), creator);
    let amount = tokens(300) + U256::from(1);
    bank.fund(channel_subject(&channel), creator, epoch, amount)
        .await
        .unwrap();

    let (_work, hls_dir) = hls_folder();
    let published = spawn_broadcast(&broadcaster.node, key, hls_dir.clone(), Vec::new());
    let encoder = Encoder::start(&hls_dir, 6);
    let count = published.await.unwrap().len();
    drop(encoder);
    for v in &viewers {
        wait_for_segments(&v.node, channel, count).await;
    }
    // The last requests settle.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    // The broadcaster holds a receipt from each viewer, for the channel,
    // signed for this deployment; no receipt says more than was served.
    let held = broadcaster.node.receipts().unwrap();
    let viewers_seen: std::collections::HashSet<Address> =
        held.iter().map(|(r, _)| r.receipt.viewer).collect();
    assert_eq!(
        viewers_seen,
        viewer_wallets.iter().map(Wallet::address).collect(),
        "{held:?}"
    );
    let accounts = broadcaster.node.accounts().await.unwrap();
    for (r, _) in &held {
        assert_eq!(r.receipt.contentId, content);
        assert_eq!(r.receipt.relayer, broadcaster_wallet.address());
        assert_eq!(r.verify(&w.d.receipt_domain()), Ok(()));
        let viewer = viewers
            .iter()
            .zip(&viewer_wallets)
            .find(|(_, wl)| wl.address() == r.receipt.viewer)
            .map(|(v, _)| v.node.peer_id())
            .unwrap();
        let served = accounts
            .iter()
            .find(|(p, _)| *p == viewer)
            .map_or(0, |(_, a)| a.served_bytes);
        assert!(r.receipt.cumulativeBytes <= served, "{r:?} vs {served}");
        assert!(r.receipt.cumulativeSegments > 0);
    }
    // What the broadcaster served is acknowledged by now, all but any
    // duplicate shards a viewer had no use for (it signs only for what
    // went into its segments).
    let served: u64 = accounts.iter().map(|(_, a)| a.served_bytes).sum();
    let acknowledged: u64 = held.iter().map(|(r, _)| r.receipt.cumulativeBytes).sum();
    assert!(
        acknowledged <= served && acknowledged * 10 >= served * 9,
        "{acknowledged} of {served} acknowledged: {accounts:?}"
    );

    // After the epoch, every relayer claims what it holds.
    w.anvil.advance(EPOCH).await;
    let mut relayers = vec![(&broadcaster, &broadcaster_wallet)];
    relayers.extend(viewers.iter().zip(&viewer_wallets));
    let mut counted = Vec::new();
    for (node, wallet) in &relayers {
        let chain = connect(&w.anvil, wallet, w.d).await;
        let outcome = node.node.claim(&chain).await.unwrap();
        counted.push(outcome.bytes);
        // Claimed receipts are not sent again.
        assert_eq!(node.node.claim(&chain).await.unwrap().transactions, 0);
    }
    assert!(
        counted[0] > 0,
        "the broadcaster's receipts count: {counted:?}"
    );
    let total: u64 = counted.iter().sum();

    // After the claim window, each relayer takes its share: the viewer
    // pool pro rata to the bytes counted, to the wei.
    w.anvil.advance(EPOCH).await;
    let creator_share = amount * U256::from(7000) / U256::from(10_000);
    let treasury_share = amount * U256::from(1000) / U256::from(10_000);
    let viewer_pool = amount - creator_share - treasury_share;
    for ((node, wallet), bytes) in relayers.iter().zip(&counted) {
        let chain = connect(&w.anvil, wallet, w.d).await;
        let expected = viewer_pool * U256::from(*bytes) / U256::from(total);
        let before = chain.token_balance(wallet.address()).await.unwrap();
        if *bytes > 0 {
            assert_eq!(chain.payout(content, epoch).await.unwrap(), expected);
        }
        let after = chain.token_balance(wallet.address()).await.unwrap();
        assert_eq!(after - before, expected, "relayer {}", node.node.peer_id());
    }
    assert_eq!(bank.token_balance(creator).await.unwrap(), creator_share);
    assert_eq!(
        bank.token_balance(w.treasury).await.unwrap(),
        treasury_share
    );
    eprintln!("bytes counted per relayer (broadcaster, viewers): {counted:?}");
    for v in viewers {
        v.node.stop().await;
    }
    broadcaster.node.stop().await;
}

/// Gas, the chain's own deterministic measure: claiming in batches
/// amortises the transaction's fixed cost. Prints the numbers recorded in
/// docs/BENCHMARKS.md.
#[tokio::test]
async fn claiming_in_batches_costs_less_gas_per_receipt() {
    let w = world().await;
    let relayer = w.member(200, 0).await;
    let c = connect(&w.anvil, &relayer, w.d).await;
    let mut viewers = Vec::new();
    for n in 0..61u8 {
        viewers.push(w.viewer(100 + n, 2).await);
    }
    let epoch = w.next_epoch().await;
    let content = B256::repeat_byte(9);
    w.anvil.advance(EPOCH).await;
    let mut rows = Vec::new();
    let mut start = 0;
    for batch in [1usize, 10, 50] {
        let group = &viewers[start..start + batch];
        start += batch;
        let first: Vec<_> = group
            .iter()
            .map(|v| receipt(v, &relayer, &w.d, content, epoch, 1_000_000))
            .collect();
        let later: Vec<_> = group
            .iter()
            .map(|v| receipt(v, &relayer, &w.d, content, epoch, 2_000_000))
            .collect();
        let a = c.claim(&first).await.unwrap();
        let b = c.claim(&later).await.unwrap();
        assert_eq!((a.counted, b.counted, a.transactions), (batch, batch, 1));
        rows.push((batch, a.gas_used / batch as u64, b.gas_used / batch as u64));
    }
    eprintln!("receipts per claim | gas per receipt, first | gas per receipt, later");
    for (batch, first, later) in &rows {
        eprintln!("{batch} | {first} | {later}");
    }
    assert!(rows[2].1 < rows[0].1 && rows[2].2 < rows[0].2, "{rows:?}");

    // Cheques: the first to a payee writes its running total, later ones
    // update it. (A payer's locked deposit pays no cheque.)
    let payer = &w.member(99, 2).await;
    let cheque = |amount: U256| {
        payer.sign_cheque(
            Cheque {
                payer: payer.address(),
                payee: relayer.address(),
                token: w.d.token,
                cumulativeAmount: amount,
            },
            &w.d.cheque_domain(),
        )
    };
    let first = c.cash_cheque(&cheque(tokens(1))).await.unwrap();
    let later = c
        .cash_cheque(&cheque(tokens(1) + tokens(1) / U256::from(2)))
        .await
        .unwrap();
    eprintln!(
        "cashCheque gas: first {}, later {}",
        first.gas_used, later.gas_used
    );
    assert!(later.gas_used < first.gas_used);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_fetching_a_stream_signs_receipts_for_it_too() {
    use shoal_node::NodeConfig;
    use shoal_node::rewards::RewardsConfig;
    use shoal_protocol::ledger::LedgerConfig;
    use shoal_protocol::receipt::stream_subject;
    use shoal_storage::{ImportOptions, import_file};
    use shoal_tests::live::start_with;

    // No chain is needed to collect receipts: only to claim them. Both
    // nodes keep the middle of this epoch's hour as their clock.
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let start_unix_ms = Some(mid_epoch_ms(now_secs / EPOCH));
    let d = Deployment {
        chain_id: 31337,
        reward_pool: Address::repeat_byte(0xAA),
        vault: Address::repeat_byte(0xBB),
        token: Address::repeat_byte(0xCC),
    };
    let seeder_wallet = Wallet::from_bytes(&[30; 32]).unwrap();
    let seeder = start_with(
        None,
        NodeConfig {
            rewards: RewardsConfig {
                wallet: Some(seeder_wallet.clone()),
                deployment: Some(d),
                ledger: LedgerConfig {
                    settle_interval: std::time::Duration::from_millis(300),
                    ..LedgerConfig::default()
                },
            },
            start_unix_ms,
            ..NodeConfig::default()
        },
    )
    .await;
    let fetcher = start_with(
        Some(&seeder.addr),
        NodeConfig {
            start_unix_ms,
            ..NodeConfig::default()
        },
    )
    .await;
    let sb = shoal_tests::Sandbox::new();
    let (path, _) = sb.write_random_file("movie.bin", 3_000_000, 5);
    let creator = Address::repeat_byte(0xC5);
    let options = ImportOptions {
        segment_size: 1 << 20,
        creator: Some(creator.into_array()),
        ..ImportOptions::default()
    };
    let root = import_file(seeder.node.store(), &path, &options, &mut |_| {})
        .unwrap()
        .root;
    seeder.node.provide(root).await.unwrap();
    fetcher.node.fetch(root).await.unwrap();

    let mut held = Vec::new();
    for _ in 0..50 {
        held = seeder.node.receipts().unwrap();
        if !held.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(held.len(), 1, "{held:?}");
    let r = &held[0].0;
    // The content id binds the creator the root manifest names.
    assert_eq!(
        r.receipt.contentId,
        content_id(stream_subject(&root), creator)
    );
    assert_eq!(r.receipt.relayer, seeder_wallet.address());
    assert_eq!(
        r.receipt.viewer,
        fetcher.node.wallet_address().await.unwrap()
    );
    assert_eq!(r.verify(&d.receipt_domain()), Ok(()));
    // At least the data shards of the 3 segments, and every segment.
    assert!(r.receipt.cumulativeBytes >= 3_000_000, "{r:?}");
    assert!(r.receipt.cumulativeSegments >= 3, "{r:?}");
    fetcher.node.stop().await;
    seeder.node.stop().await;
}
