//! Contributions without I/O: the per-peer [`Ledger`] as the node uses it,
//! and the rules of the receipt protocol on both sides. The epoch is
//! always passed in (the node's clock, as `unix secs / EPOCH_SECS`), so the
//! rules can be tested at any epoch and across a boundary.
//!
//! As a **viewer**, a node counts the bytes each peer delivered into the
//! segments of each content (a channel or a stream), per epoch
//! ([`Rewards::delivered`]), and answers a relayer's request with
//! cumulative receipts for exactly that ([`Rewards::answer`]). It refuses
//! ([`ReceiptResponse::default`]):
//!
//! - an epoch other than this one or the last;
//! - a second request from one peer within [`MIN_REQUEST_INTERVAL`];
//! - a second relayer wallet or deployment for one peer in one epoch (the
//!   same bytes cannot be signed for several wallets or pools).
//!
//! As a **relayer**, it counts what it served each peer; past the payment
//! threshold (or once per settle interval) it asks for receipts, one
//! request per peer at a time ([`RewardsAction::Ask`]). It keeps a receipt
//! ([`Rewards::accept`]) only if it is signed by the viewer for this
//! node's deployment, names this node's wallet and the epoch asked, says
//! no more than this node ever served the peer, comes from the one viewer
//! wallet that peer signs with, and says more than the receipt held for
//! the same viewer, content and epoch. The increase is credited to the
//! peer's account. Asking and throttling need a deployment; without one
//! the node only keeps accounts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256};

use crate::ledger::{Account, Decision, Ledger, LedgerAction, LedgerConfig};
use crate::receipt::{
    Deployment, MAX_RECEIPTS_PER_MESSAGE, Receipt, ReceiptRequest, ReceiptResponse, SignedReceipt,
    Wallet,
};

/// A peer's receipt requests are answered at most this often: signing
/// costs an ECDSA signature per content.
pub const MIN_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// The receipts a relayer holds, as the rules read them.
pub trait HeldReceipts {
    /// The receipt kept under `key` ([`SignedReceipt::key`]), if any.
    fn held(&self, key: &[u8]) -> Result<Option<SignedReceipt>, String>;
}

/// What the rules ask of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RewardsAction<P> {
    /// Send `request` to `peer` over the receipt protocol; report the
    /// answer with [`Rewards::accept`] or [`Rewards::no_answer`].
    Ask { peer: P, request: ReceiptRequest },
    /// Keep these receipts (each supersedes what is held for its key);
    /// report with [`Rewards::kept`] once written.
    Keep(Vec<SignedReceipt>),
}

/// Whom a viewer signs for: relayer address, chain id, pool address.
type SignedFor = ([u8; 20], u64, [u8; 20]);

/// What a peer delivered of one content in one epoch.
#[derive(Default)]
struct Delivered {
    bytes: u64,
    segments: BTreeSet<(u16, u64)>,
}

/// The ledger and both sides of the receipt rules. See the module
/// documentation.
pub struct Rewards<P> {
    wallet: Wallet,
    deployment: Option<Deployment>,
    ledger: Ledger<P>,
    /// Viewer side: (peer, content, epoch) → what the peer delivered.
    delivered: BTreeMap<(P, B256, u64), Delivered>,
    /// Viewer side: the relayer address and deployment signed for, per
    /// peer and epoch.
    signed_for: BTreeMap<(P, u64), SignedFor>,
    /// Viewer side: when each peer's last request was answered.
    answered: BTreeMap<P, Instant>,
    /// Relayer side: the one viewer address each peer signs with.
    viewer_of: BTreeMap<P, Address>,
    /// Relayer side: peers asked and not yet answered.
    asking: BTreeSet<P>,
    /// Relayer side: receipts kept but not yet written, by key, so that an
    /// answer handled before the write sees them.
    unwritten: BTreeMap<Vec<u8>, SignedReceipt>,
    actions: Vec<RewardsAction<P>>,
}

impl<P: Clone + Ord> Rewards<P> {
    pub fn new(wallet: Wallet, deployment: Option<Deployment>, ledger: LedgerConfig) -> Self {
        Rewards {
            wallet,
            deployment,
            ledger: Ledger::new(ledger),
            delivered: BTreeMap::new(),
            signed_for: BTreeMap::new(),
            answered: BTreeMap::new(),
            viewer_of: BTreeMap::new(),
            asking: BTreeSet::new(),
            unwritten: BTreeMap::new(),
            actions: Vec::new(),
        }
    }

    pub fn address(&self) -> Address {
        self.wallet.address()
    }

    /// Every peer's account.
    pub fn accounts(&self) -> Vec<(P, Account)> {
        self.ledger
            .accounts()
            .map(|(p, a)| (p.clone(), a.clone()))
            .collect()
    }

    /// What the rules ask of the node, oldest first.
    pub fn poll_action(&mut self) -> Option<RewardsAction<P>> {
        if self.actions.is_empty() {
            return None;
        }
        Some(self.actions.remove(0))
    }

    /// Whether `peer` may be sent blocks now (always, without a
    /// deployment).
    pub fn may_serve(&mut self, peer: &P, now: Instant) -> bool {
        self.deployment.is_none() || self.ledger.may_serve(peer, now) == Decision::Serve
    }

    /// `bytes` of blocks were sent to `peer`; past the payment threshold it
    /// is asked for receipts.
    pub fn served(&mut self, peer: &P, bytes: u64, now: Instant, epoch: u64) {
        if let Some(LedgerAction::AskReceipt { peer, owed }) = self.ledger.served(peer, bytes, now)
        {
            self.ask(peer, owed, epoch);
        }
    }

    /// `bytes` (one block) came from `peer`.
    pub fn received(&mut self, peer: &P, bytes: u64, now: Instant) {
        self.ledger.received(peer, bytes, now);
    }

    /// Viewer side: `peer` delivered `bytes` into segment `segment` of
    /// `content` in `epoch`.
    pub fn delivered(
        &mut self,
        peer: P,
        content: B256,
        segment: (u16, u64),
        bytes: u64,
        epoch: u64,
    ) {
        let d = self.delivered.entry((peer, content, epoch)).or_default();
        d.bytes += bytes;
        d.segments.insert(segment);
    }

    /// When [`Rewards::handle_timeout`] has something to do next: a peer
    /// may be due to be asked for receipts (relayer side).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deployment.and(self.ledger.next_due())
    }

    /// Asks every peer that owes something and was not asked for a settle
    /// interval (`connected`: whether a peer can be asked now).
    pub fn handle_timeout(&mut self, now: Instant, epoch: u64, connected: impl Fn(&P) -> bool) {
        self.prune(now, epoch);
        if self.deployment.is_none() {
            return;
        }
        for action in self.ledger.due(now) {
            let LedgerAction::AskReceipt { peer, owed } = action;
            if connected(&peer) {
                self.ask(peer, owed, epoch);
            }
        }
    }

    /// Forgets what was delivered and signed for before the last epoch, and
    /// answers older than [`MIN_REQUEST_INTERVAL`].
    pub fn prune(&mut self, now: Instant, epoch: u64) {
        let keep_from = epoch.saturating_sub(1);
        self.delivered.retain(|(_, _, e), _| *e >= keep_from);
        self.signed_for.retain(|(_, e), _| *e >= keep_from);
        self.answered
            .retain(|_, t| now.duration_since(*t) < MIN_REQUEST_INTERVAL);
    }

    fn ask(&mut self, peer: P, owed: u64, epoch: u64) {
        let Some(d) = self.deployment else {
            return;
        };
        if !self.asking.insert(peer.clone()) {
            return;
        }
        let served = self.ledger.account(&peer).map_or(owed, |a| a.served_bytes);
        let request = ReceiptRequest {
            epoch,
            served_bytes: served,
            relayer: self.wallet.address().into(),
            chain_id: d.chain_id,
            reward_pool: d.reward_pool.into(),
        };
        self.actions.push(RewardsAction::Ask { peer, request });
    }

    /// Viewer side: the receipts `peer` asks for, signed, in `epoch` by
    /// this node's clock. See the module documentation for what is
    /// refused.
    pub fn answer(
        &mut self,
        peer: &P,
        request: &ReceiptRequest,
        now: Instant,
        epoch: u64,
    ) -> ReceiptResponse {
        if request.epoch > epoch || request.epoch.saturating_add(1) < epoch {
            return ReceiptResponse::default();
        }
        if self
            .answered
            .get(peer)
            .is_some_and(|t| now.duration_since(*t) < MIN_REQUEST_INTERVAL)
        {
            return ReceiptResponse::default();
        }
        self.answered.insert(peer.clone(), now);
        let asked = (request.relayer, request.chain_id, request.reward_pool);
        if *self
            .signed_for
            .entry((peer.clone(), request.epoch))
            .or_insert(asked)
            != asked
        {
            return ReceiptResponse::default();
        }
        let domain = Deployment {
            chain_id: request.chain_id,
            reward_pool: Address::from(request.reward_pool),
            vault: Address::ZERO,
            token: Address::ZERO,
        }
        .receipt_domain();
        let mut mine: Vec<(&B256, &Delivered)> = self
            .delivered
            .iter()
            .filter(|((p, _, e), _)| p == peer && *e == request.epoch)
            .map(|((_, c, _), d)| (c, d))
            .collect();
        mine.sort_by_key(|(_, d)| std::cmp::Reverse(d.bytes));
        let receipts = mine
            .into_iter()
            .take(MAX_RECEIPTS_PER_MESSAGE)
            .map(|(content, d)| {
                self.wallet.sign_receipt(
                    Receipt {
                        viewer: self.wallet.address(),
                        relayer: Address::from(request.relayer),
                        contentId: *content,
                        epoch: request.epoch,
                        cumulativeBytes: d.bytes,
                        cumulativeSegments: d.segments.len() as u64,
                    },
                    &domain,
                )
            })
            .collect();
        ReceiptResponse { receipts }
    }

    /// Relayer side: `peer` answered the request for `epoch`. Keeps what
    /// passes the rules ([`RewardsAction::Keep`]) and credits the peer's
    /// account with the bytes they acknowledge beyond what was held;
    /// returns those bytes.
    pub fn accept(
        &mut self,
        peer: &P,
        epoch: u64,
        response: ReceiptResponse,
        held: &impl HeldReceipts,
        now: Instant,
    ) -> Result<u64, String> {
        self.asking.remove(peer);
        let Some(deployment) = self.deployment else {
            return Ok(0);
        };
        let domain = deployment.receipt_domain();
        // No receipt may say more than this node ever served the peer, and
        // all of them together credit no more than was served and not yet
        // acknowledged: 64 receipts for made-up content ids, each within
        // what was served, once credited 64 times what it was.
        let account = self.ledger.account(peer);
        let served = account.map_or(0, |a| a.served_bytes);
        let mut room = served.saturating_sub(account.map_or(0, |a| a.acknowledged_bytes));
        let mut acknowledged: u64 = 0;
        let mut keep = Vec::new();
        for r in response.receipts {
            if r.receipt.relayer != self.wallet.address() || r.receipt.epoch != epoch {
                continue;
            }
            if r.receipt.cumulativeBytes > served {
                continue;
            }
            if r.verify(&domain).is_err() {
                continue;
            }
            // One viewer address per peer: a peer cannot mint receipts
            // from throwaway keys.
            let viewer = *self
                .viewer_of
                .entry(peer.clone())
                .or_insert(r.receipt.viewer);
            if viewer != r.receipt.viewer {
                continue;
            }
            let key = r.key();
            let before = match self.unwritten.get(&key) {
                Some(r) => Some(r.clone()),
                None => held.held(&key)?,
            };
            if !r.supersedes(before.as_ref().map(|h| &h.receipt)) {
                continue;
            }
            let before = before.map_or(0, |h| h.receipt.cumulativeBytes);
            let credit = (r.receipt.cumulativeBytes - before).min(room);
            room -= credit;
            acknowledged = acknowledged.saturating_add(credit);
            self.unwritten.insert(key, r.clone());
            keep.push(r);
        }
        if !keep.is_empty() {
            self.actions.push(RewardsAction::Keep(keep));
        }
        if acknowledged > 0 {
            self.ledger.acknowledged(peer, acknowledged, now);
        }
        Ok(acknowledged)
    }

    /// Relayer side: `peer` did not answer (or could not be asked).
    pub fn no_answer(&mut self, peer: &P) {
        self.asking.remove(peer);
    }

    /// Relayer side: the receipts of a [`RewardsAction::Keep`] were
    /// written (or could not be: the store is then the truth again).
    pub fn kept(&mut self, keys: &[Vec<u8>]) {
        for key in keys {
            self.unwritten.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEWER: u32 = 1;
    const OTHER: u32 = 2;

    fn wallet(seed: u8) -> Wallet {
        Wallet::from_bytes(&[seed; 32]).unwrap()
    }

    fn deployment() -> Deployment {
        Deployment {
            chain_id: 31337,
            reward_pool: Address::repeat_byte(0xaa),
            vault: Address::repeat_byte(0xbb),
            token: Address::repeat_byte(0xcc),
        }
    }

    fn request(relayer: &Wallet, epoch: u64) -> ReceiptRequest {
        let d = deployment();
        ReceiptRequest {
            epoch,
            served_bytes: 0,
            relayer: relayer.address().into(),
            chain_id: d.chain_id,
            reward_pool: d.reward_pool.into(),
        }
    }

    /// Receipts held in memory, as a relayer's store would hold them.
    #[derive(Default)]
    struct Held(BTreeMap<Vec<u8>, SignedReceipt>);

    impl HeldReceipts for Held {
        fn held(&self, key: &[u8]) -> Result<Option<SignedReceipt>, String> {
            Ok(self.0.get(key).cloned())
        }
    }

    /// A viewer node that got `bytes` of content 7 from the relayer (peer
    /// `OTHER` to it) in `epoch`.
    fn viewer_with(bytes: u64, epoch: u64) -> Rewards<u32> {
        let mut v = Rewards::new(wallet(1), None, LedgerConfig::default());
        v.delivered(OTHER, B256::repeat_byte(7), (0, 1), bytes, epoch);
        v
    }

    #[test]
    fn a_viewer_signs_for_exactly_what_a_peer_delivered_this_epoch_or_the_last() {
        let relayer = wallet(2);
        let t = Instant::now();
        let epoch = 1_000;
        let mut v = viewer_with(5_000, epoch);
        v.delivered(OTHER, B256::repeat_byte(7), (0, 2), 1_000, epoch);
        let answer = v.answer(&OTHER, &request(&relayer, epoch), t, epoch);
        assert_eq!(answer.receipts.len(), 1);
        let r = &answer.receipts[0];
        assert_eq!(r.receipt.cumulativeBytes, 6_000);
        assert_eq!(r.receipt.cumulativeSegments, 2);
        assert_eq!(r.receipt.relayer, relayer.address());
        r.verify(&deployment().receipt_domain()).unwrap();
        // The epoch just over is still answered, an hour into the next.
        let mut v = viewer_with(5_000, epoch);
        let late = v.answer(&OTHER, &request(&relayer, epoch), t, epoch + 1);
        assert_eq!(late.receipts.len(), 1);
    }

    #[test]
    fn a_viewer_refuses_other_epochs_a_second_wallet_and_requests_within_a_second() {
        let relayer = wallet(2);
        let t = Instant::now();
        let epoch = 1_000;
        // Epochs ahead of the viewer's clock or two behind it.
        for asked in [epoch + 1, epoch - 2] {
            let mut v = viewer_with(5_000, asked);
            assert!(
                v.answer(&OTHER, &request(&relayer, asked), t, epoch)
                    .receipts
                    .is_empty(),
                "epoch {asked} at {epoch}"
            );
        }
        // Twice within a second: the second gets nothing.
        let mut v = viewer_with(5_000, epoch);
        assert_eq!(
            v.answer(&OTHER, &request(&relayer, epoch), t, epoch)
                .receipts
                .len(),
            1
        );
        assert!(
            v.answer(&OTHER, &request(&relayer, epoch), t, epoch)
                .receipts
                .is_empty()
        );
        // After a second, a second wallet for the same peer and epoch gets
        // nothing; the first still gets its receipts.
        let later = t + MIN_REQUEST_INTERVAL;
        let thief = wallet(3);
        assert!(
            v.answer(&OTHER, &request(&thief, epoch), later, epoch)
                .receipts
                .is_empty()
        );
        let again = later + MIN_REQUEST_INTERVAL;
        assert_eq!(
            v.answer(&OTHER, &request(&relayer, epoch), again, epoch)
                .receipts
                .len(),
            1
        );
    }

    #[test]
    fn what_was_delivered_two_epochs_ago_is_forgotten() {
        let relayer = wallet(2);
        let t = Instant::now();
        let mut v = viewer_with(5_000, 10);
        v.handle_timeout(t, 12, |_| true);
        let answer = v.answer(&OTHER, &request(&relayer, 11), t, 12);
        assert!(answer.receipts.is_empty());
    }

    /// A relayer that served `VIEWER` `served` bytes.
    fn relayer_after(served: u64, now: Instant, epoch: u64) -> Rewards<u32> {
        let mut r = Rewards::new(wallet(2), Some(deployment()), LedgerConfig::default());
        r.served(&VIEWER, served, now, epoch);
        r
    }

    fn signed(viewer: &Wallet, relayer: &Wallet, bytes: u64, epoch: u64) -> SignedReceipt {
        viewer.sign_receipt(
            Receipt {
                viewer: viewer.address(),
                relayer: relayer.address(),
                contentId: B256::repeat_byte(7),
                epoch,
                cumulativeBytes: bytes,
                cumulativeSegments: 1,
            },
            &deployment().receipt_domain(),
        )
    }

    #[test]
    fn a_relayer_past_the_payment_threshold_asks_once_and_keeps_a_good_receipt() {
        let t = Instant::now();
        let epoch = 500;
        let threshold = LedgerConfig::default().payment_threshold;
        let mut r = relayer_after(threshold, t, epoch);
        let asks: Vec<_> = std::iter::from_fn(|| r.poll_action()).collect();
        assert!(
            matches!(&asks[..], [RewardsAction::Ask { peer: VIEWER, request }] if request.epoch == epoch),
            "{asks:?}"
        );
        // Asked already: more bytes do not ask again before the answer.
        r.served(&VIEWER, threshold, t + Duration::from_secs(10), epoch);
        assert!(r.poll_action().is_none());
        let viewer = wallet(1);
        let good = signed(&viewer, &wallet(2), 1_000, epoch);
        let credited = r
            .accept(
                &VIEWER,
                epoch,
                ReceiptResponse {
                    receipts: vec![good.clone()],
                },
                &Held::default(),
                t,
            )
            .unwrap();
        assert_eq!(credited, 1_000);
        assert_eq!(r.poll_action(), Some(RewardsAction::Keep(vec![good])));
    }

    #[test]
    fn a_relayer_refuses_forged_foreign_inflated_and_second_wallet_receipts() {
        let t = Instant::now();
        let epoch = 500;
        let me = wallet(2);
        let viewer = wallet(1);
        let served = 10_000;
        let cases: Vec<(&str, SignedReceipt)> = vec![
            (
                "for another relayer",
                signed(&viewer, &wallet(9), 1_000, epoch),
            ),
            ("for another epoch", signed(&viewer, &me, 1_000, epoch + 1)),
            (
                "more than was served",
                signed(&viewer, &me, served + 1, epoch),
            ),
            ("signed for another deployment", {
                let mut d = deployment();
                d.chain_id = 1;
                viewer.sign_receipt(
                    signed(&viewer, &me, 1_000, epoch).receipt,
                    &d.receipt_domain(),
                )
            }),
            ("forged", {
                let mut r = signed(&viewer, &me, 1_000, epoch);
                r.receipt.cumulativeBytes = 2_000;
                r
            }),
        ];
        for (what, receipt) in cases {
            let mut r = relayer_after(served, t, epoch);
            let credited = r
                .accept(
                    &VIEWER,
                    epoch,
                    ReceiptResponse {
                        receipts: vec![receipt],
                    },
                    &Held::default(),
                    t,
                )
                .unwrap();
            assert_eq!(credited, 0, "{what}");
            assert!(
                std::iter::from_fn(|| r.poll_action())
                    .all(|a| !matches!(a, RewardsAction::Keep(_))),
                "{what}"
            );
        }
        // One viewer wallet per peer: a second one's receipt is refused.
        let mut r = relayer_after(served, t, epoch);
        let first = signed(&viewer, &me, 1_000, epoch);
        let second = signed(&wallet(5), &me, 1_000, epoch);
        let credited = r
            .accept(
                &VIEWER,
                epoch,
                ReceiptResponse {
                    receipts: vec![first, second],
                },
                &Held::default(),
                t,
            )
            .unwrap();
        assert_eq!(credited, 1_000);
    }

    #[test]
    fn receipts_for_many_contents_credit_no_more_than_was_served() {
        let t = Instant::now();
        let epoch = 500;
        let me = wallet(2);
        let viewer = wallet(1);
        let served = 10_000;
        let mut r = relayer_after(served, t, epoch);
        // Receipts each within what was served, each for a content id of
        // the viewer's own making; what they credit.
        let mut send = |contents: std::ops::Range<u8>| {
            let receipts = contents
                .map(|c| {
                    let mut x = signed(&viewer, &me, served, epoch).receipt;
                    x.contentId = B256::repeat_byte(c);
                    viewer.sign_receipt(x, &deployment().receipt_domain())
                })
                .collect();
            let response = ReceiptResponse { receipts };
            r.accept(&VIEWER, epoch, response, &Held::default(), t)
                .unwrap()
        };
        assert_eq!(send(0..64), served);
        // What was acknowledged is not credited again by more of them.
        assert_eq!(send(64..80), 0);
        assert_eq!(r.accounts()[0].1.acknowledged_bytes, served);
    }

    #[test]
    fn only_the_increase_over_a_held_receipt_counts_even_before_it_is_written() {
        let t = Instant::now();
        let epoch = 500;
        let me = wallet(2);
        let viewer = wallet(1);
        let mut r = relayer_after(10_000, t, epoch);
        let mut held = Held::default();
        let old = signed(&viewer, &me, 3_000, epoch);
        held.0.insert(old.key(), old);
        let newer = signed(&viewer, &me, 5_000, epoch);
        let credited = r
            .accept(
                &VIEWER,
                epoch,
                ReceiptResponse {
                    receipts: vec![newer.clone()],
                },
                &held,
                t,
            )
            .unwrap();
        assert_eq!(credited, 2_000);
        // The same receipt again before it is written: nothing more, and an
        // older one is no news either.
        let credited = r
            .accept(
                &VIEWER,
                epoch,
                ReceiptResponse {
                    receipts: vec![newer.clone(), signed(&viewer, &me, 4_000, epoch)],
                },
                &held,
                t,
            )
            .unwrap();
        assert_eq!(credited, 0);
        r.kept(&[newer.key()]);
    }
}
