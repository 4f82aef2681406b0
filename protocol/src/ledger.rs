//! Per-peer accounting, after Swarm's: what this node served each peer and
//! received from it, and what the peer acknowledged (signed receipts) or
//! paid (cheques). A peer *owes* what it was served beyond what it gave
//! back, acknowledged or paid.
//!
//! - Past the **payment threshold** the peer is asked for an updated
//!   receipt ([`LedgerAction::AskReceipt`]), at most once per
//!   [`LedgerConfig::ask_interval`].
//! - Past the **disconnect threshold** it is served no more (throttled)
//!   until it settles: a peer that takes without signing or paying stops
//!   getting anything.
//! - One **optimistic slot** serves one throttled peer anyway, for a while
//!   and for a bounded number of bytes, so a newcomer (or a relayer
//!   configured to serve strangers nothing on credit) can get started;
//!   a peer that had the slot waits a cool-down before it gets it again,
//!   so a free-rider cannot live on it.
//!
//! Accounts outlive connections (a free-rider does not start afresh by
//! reconnecting); at most [`LedgerConfig::max_peers`] are kept, and those
//! that owe nothing are forgotten first.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Thresholds, each with the reason for its default.
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// Bytes owed before a receipt is asked for: about 30 s of a 1 Mb/s
    /// stream, so receipts come a few times a minute per busy peer.
    pub payment_threshold: u64,
    /// Bytes owed beyond which a peer is throttled: four times the payment
    /// threshold, room for a receipt to be asked for, signed and sent back
    /// while the stream goes on.
    pub disconnect_threshold: u64,
    /// Bytes the peer holding the optimistic slot may take past its limit:
    /// enough to start a stream.
    pub optimistic_bytes: u64,
    /// How long the slot may be held.
    pub optimistic_period: Duration,
    /// How long before a peer may hold the slot again.
    pub optimistic_cooldown: Duration,
    /// Least time between two receipt requests to one peer.
    pub ask_interval: Duration,
    /// A peer that owes anything at all is asked at least this often, so
    /// the last bytes of an epoch get receipts too.
    pub settle_interval: Duration,
    /// Accounts kept.
    pub max_peers: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            payment_threshold: 4 << 20,
            disconnect_threshold: 16 << 20,
            optimistic_bytes: 4 << 20,
            optimistic_period: Duration::from_secs(30),
            optimistic_cooldown: Duration::from_secs(600),
            ask_interval: Duration::from_secs(5),
            settle_interval: Duration::from_secs(60),
            max_peers: 4096,
        }
    }
}

/// One peer's account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub served_bytes: u64,
    pub served_blocks: u64,
    pub received_bytes: u64,
    pub received_blocks: u64,
    /// Bytes the peer acknowledged in receipts.
    pub acknowledged_bytes: u64,
    /// Bytes' worth the peer paid with cheques.
    pub paid_bytes: u64,
    /// `served_bytes` when the peer last settled in full.
    settled_served: u64,
    last_ask: Option<Instant>,
    last_slot: Option<Instant>,
    last_active: Option<Instant>,
}

impl Account {
    /// What the peer was served beyond what it gave back, acknowledged or
    /// paid.
    pub fn owed(&self) -> u64 {
        self.served_bytes.saturating_sub(
            self.received_bytes
                .saturating_add(self.acknowledged_bytes)
                .saturating_add(self.paid_bytes),
        )
    }
}

/// Whether to serve a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Serve,
    /// Over its limit, and the optimistic slot is not for it now.
    Throttle,
}

/// What the ledger asks the caller to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerAction<P> {
    /// Ask `peer` for updated receipts; it owes `owed` bytes.
    AskReceipt { peer: P, owed: u64 },
}

struct Slot<P> {
    peer: P,
    since: Instant,
    used: u64,
}

/// The accounts of every peer. See the module documentation.
pub struct Ledger<P> {
    config: LedgerConfig,
    accounts: BTreeMap<P, Account>,
    slot: Option<Slot<P>>,
    /// No account is due before this ([`Ledger::next_due`]); never later
    /// than the earliest one that is.
    next_due: Option<Instant>,
}

impl<P: Clone + Ord> Ledger<P> {
    pub fn new(config: LedgerConfig) -> Self {
        Ledger {
            config,
            accounts: BTreeMap::new(),
            slot: None,
            next_due: None,
        }
    }

    pub fn account(&self, peer: &P) -> Option<&Account> {
        self.accounts.get(peer)
    }

    pub fn accounts(&self) -> impl Iterator<Item = (&P, &Account)> {
        self.accounts.iter()
    }

    /// The peer holding the optimistic slot, if any.
    #[cfg(test)]
    fn optimistic(&self) -> Option<&P> {
        self.slot.as_ref().map(|s| &s.peer)
    }

    fn entry(&mut self, peer: &P, now: Instant) -> &mut Account {
        if !self.accounts.contains_key(peer) && self.accounts.len() >= self.config.max_peers.max(1)
        {
            self.evict();
        }
        let a = self.accounts.entry(peer.clone()).or_default();
        a.last_active = Some(now);
        a
    }

    /// Forgets the least recently active account that owes nothing, or
    /// failing that the least recently active one.
    fn evict(&mut self) {
        let victim = self
            .accounts
            .iter()
            .min_by_key(|(_, a)| (a.owed() > 0, a.last_active))
            .map(|(p, _)| p.clone());
        if let Some(p) = victim {
            self.accounts.remove(&p);
        }
    }

    /// Whether `peer` may be sent more now: it owes less than the
    /// disconnect threshold, or it holds (or takes) the optimistic slot.
    /// What is sent is recorded with [`Ledger::served`].
    pub fn may_serve(&mut self, peer: &P, now: Instant) -> Decision {
        let limit = self.config.disconnect_threshold;
        let (period, budget, cooldown) = (
            self.config.optimistic_period,
            self.config.optimistic_bytes,
            self.config.optimistic_cooldown,
        );
        let account = self.entry(peer, now);
        if account.owed() < limit {
            return Decision::Serve;
        }
        let last_slot = account.last_slot;
        if let Some(slot) = &self.slot {
            let expired = now.duration_since(slot.since) > period;
            if slot.peer == *peer {
                if !expired && slot.used < budget {
                    return Decision::Serve;
                }
                self.slot = None;
                return Decision::Throttle;
            }
            if !expired {
                return Decision::Throttle;
            }
            self.slot = None;
        }
        if last_slot.is_some_and(|t| now.duration_since(t) < cooldown) || budget == 0 {
            return Decision::Throttle;
        }
        self.slot = Some(Slot {
            peer: peer.clone(),
            since: now,
            used: 0,
        });
        if let Some(a) = self.accounts.get_mut(peer) {
            a.last_slot = Some(now);
        }
        Decision::Serve
    }

    /// `bytes` (one block) were sent to `peer`. Returns a receipt request
    /// when the peer owes more than the payment threshold.
    pub fn served(&mut self, peer: &P, bytes: u64, now: Instant) -> Option<LedgerAction<P>> {
        let threshold = self.config.payment_threshold;
        let limit = self.config.disconnect_threshold;
        let interval = self.config.ask_interval;
        let a = self.entry(peer, now);
        let over = a.owed() >= limit;
        a.served_bytes = a.served_bytes.saturating_add(bytes);
        a.served_blocks += 1;
        let owed = a.owed();
        if over && let Some(slot) = self.slot.as_mut().filter(|s| s.peer == *peer) {
            slot.used = slot.used.saturating_add(bytes);
        }
        let a = self.accounts.get_mut(peer)?;
        if owed > 0 {
            let since = a.last_ask.or(a.last_active).unwrap_or(now);
            let due = since + self.config.settle_interval;
            self.next_due = Some(self.next_due.map_or(due, |d| d.min(due)));
        }
        if owed < threshold || a.last_ask.is_some_and(|t| now.duration_since(t) < interval) {
            return None;
        }
        a.last_ask = Some(now);
        Some(LedgerAction::AskReceipt {
            peer: peer.clone(),
            owed,
        })
    }

    /// Peers that owe something and were not asked for a settle interval:
    /// ask them now.
    pub fn due(&mut self, now: Instant) -> Vec<LedgerAction<P>> {
        let interval = self.config.settle_interval;
        let mut out = Vec::new();
        let mut next: Option<Instant> = None;
        for (peer, a) in &mut self.accounts {
            let owed = a.owed();
            if owed == 0 {
                continue;
            }
            let since = a.last_ask.or(a.last_active);
            if since.is_none_or(|t| now.duration_since(t) >= interval) {
                a.last_ask = Some(now);
                out.push(LedgerAction::AskReceipt {
                    peer: peer.clone(),
                    owed,
                });
            }
            let due = a.last_ask.or(a.last_active).unwrap_or(now) + interval;
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        self.next_due = next;
        out
    }

    /// When [`Ledger::due`] may next have a peer to ask (it may find none:
    /// a peer can settle meanwhile).
    pub fn next_due(&self) -> Option<Instant> {
        self.next_due
    }

    /// `bytes` (one block) came from `peer`.
    pub fn received(&mut self, peer: &P, bytes: u64, now: Instant) {
        let a = self.entry(peer, now);
        a.received_bytes = a.received_bytes.saturating_add(bytes);
        a.received_blocks += 1;
        self.settled(peer);
    }

    /// `peer` signed receipts for `bytes` more than before. A peer that
    /// has acknowledged at least three quarters of what it was served
    /// since it last settled is settled in full: the shards it had no use
    /// for (duplicates), bytes lost with a dropped connection and the
    /// tail of an epoch are not held against an honest viewer until it is
    /// throttled.
    pub fn acknowledged(&mut self, peer: &P, bytes: u64, now: Instant) {
        let a = self.entry(peer, now);
        a.acknowledged_bytes = a.acknowledged_bytes.saturating_add(bytes);
        a.last_ask = None;
        let since = a.served_bytes.saturating_sub(a.settled_served);
        let owed = a.owed();
        if owed <= since / 4 {
            a.acknowledged_bytes = a.acknowledged_bytes.saturating_add(owed);
            a.settled_served = a.served_bytes;
        }
        self.settled(peer);
    }

    /// `peer` paid `bytes`' worth.
    pub fn paid(&mut self, peer: &P, bytes: u64, now: Instant) {
        let a = self.entry(peer, now);
        a.paid_bytes = a.paid_bytes.saturating_add(bytes);
        self.settled(peer);
    }

    /// A peer back under its limit gives the optimistic slot up.
    fn settled(&mut self, peer: &P) {
        let limit = self.config.disconnect_threshold;
        let under = self
            .accounts
            .get(peer)
            .is_some_and(|a| a.owed() == 0 || a.owed() < limit);
        if under && self.slot.as_ref().is_some_and(|s| s.peer == *peer) {
            self.slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: u64 = 256 << 10;

    fn config() -> LedgerConfig {
        LedgerConfig {
            payment_threshold: 4 * BLOCK,
            disconnect_threshold: 8 * BLOCK,
            optimistic_bytes: 2 * BLOCK,
            optimistic_period: Duration::from_secs(30),
            optimistic_cooldown: Duration::from_secs(600),
            ask_interval: Duration::from_secs(5),
            settle_interval: Duration::from_secs(60),
            max_peers: 16,
        }
    }

    /// Serves `peer` block by block while the ledger allows, at most
    /// `limit` blocks; returns the blocks served and the receipt requests.
    fn take(
        ledger: &mut Ledger<u32>,
        peer: u32,
        limit: usize,
        now: Instant,
    ) -> (usize, Vec<LedgerAction<u32>>) {
        let mut asks = Vec::new();
        for n in 0..limit {
            if ledger.may_serve(&peer, now) == Decision::Throttle {
                return (n, asks);
            }
            asks.extend(ledger.served(&peer, BLOCK, now));
        }
        (limit, asks)
    }

    #[test]
    fn a_free_rider_is_asked_for_receipts_then_throttled() {
        let t = Instant::now();
        let mut l = Ledger::new(config());
        let (served, asks) = take(&mut l, 1, 100, t);
        // Its limit (8 blocks), then the optimistic slot once (2 blocks).
        assert_eq!(served, 10);
        assert_eq!(
            asks,
            vec![LedgerAction::AskReceipt {
                peer: 1,
                owed: 4 * BLOCK
            }],
            "asked once at the payment threshold, not again within the interval"
        );
        assert_eq!(l.may_serve(&1, t), Decision::Throttle);
        // Later it is asked again, and it stays throttled: the slot is
        // not its to have again before the cool-down.
        let later = t + Duration::from_secs(60);
        assert_eq!(take(&mut l, 1, 100, later).0, 0);
        assert!(l.served(&1, 0, later).is_some());
        assert_eq!(
            l.may_serve(&1, t + Duration::from_secs(300)),
            Decision::Throttle
        );
        assert_eq!(l.account(&1).unwrap().owed(), 10 * BLOCK);
    }

    #[test]
    fn a_peer_owing_a_little_is_asked_once_a_settle_interval() {
        let t = Instant::now();
        let mut l = Ledger::new(config());
        // Under the payment threshold: no request at once...
        assert_eq!(l.served(&1, BLOCK, t), None);
        l.served(&2, BLOCK, t);
        l.received(&2, BLOCK, t);
        assert!(l.due(t + Duration::from_secs(30)).is_empty());
        // ...but once the interval has passed, for what it owes (peer 2
        // served back as much as it got, and owes nothing).
        let later = t + Duration::from_secs(60);
        assert_eq!(
            l.due(later),
            vec![LedgerAction::AskReceipt {
                peer: 1,
                owed: BLOCK
            }]
        );
        assert!(l.due(later).is_empty(), "not twice in one interval");
    }

    /// Serves peer 1 a block a second while it signs for `share` of what
    /// it is asked about; returns what it owes at the end.
    fn serve_a_signer(l: &mut Ledger<u32>, blocks: u64, share: (u64, u64)) -> u64 {
        let t = Instant::now();
        for n in 0..blocks {
            let now = t + Duration::from_secs(n);
            assert_eq!(l.may_serve(&1, now), Decision::Serve, "block {n}");
            if let Some(LedgerAction::AskReceipt { owed, .. }) = l.served(&1, BLOCK, now) {
                l.acknowledged(&1, owed * share.0 / share.1, now);
            }
        }
        l.account(&1).unwrap().owed()
    }

    #[test]
    fn a_peer_that_signs_receipts_is_served_without_end() {
        let mut l = Ledger::new(config());
        assert!(serve_a_signer(&mut l, 120, (1, 1)) < config().payment_threshold);
        assert_eq!(l.account(&1).unwrap().served_blocks, 120);
        assert_eq!(l.optimistic(), None);
    }

    #[test]
    fn a_viewer_that_signs_for_most_of_what_it_got_is_never_throttled() {
        // It signs for 80% (the rest were duplicates it had no use for).
        let mut l = Ledger::new(config());
        assert!(serve_a_signer(&mut l, 1000, (4, 5)) < config().payment_threshold);
        // One signing for half is not forgiven the rest.
        let t = Instant::now();
        for n in 0..8u64 {
            l.served(&2, BLOCK, t + Duration::from_secs(n));
        }
        l.acknowledged(&2, 4 * BLOCK, t);
        assert_eq!(l.account(&2).unwrap().owed(), 4 * BLOCK);
    }

    #[test]
    fn what_a_peer_serves_back_counts_like_a_receipt() {
        let t = Instant::now();
        let mut l = Ledger::new(config());
        for _ in 0..40 {
            assert_eq!(l.may_serve(&1, t), Decision::Serve);
            l.served(&1, BLOCK, t);
            l.received(&1, BLOCK, t);
        }
        let a = l.account(&1).unwrap();
        assert_eq!((a.served_blocks, a.received_blocks, a.owed()), (40, 40, 0));
    }

    #[test]
    fn a_newcomer_gets_the_optimistic_slot_when_strangers_get_no_credit() {
        // A relayer that serves nothing on credit: only the slot lets a
        // peer with no history start.
        let t = Instant::now();
        let mut l = Ledger::new(LedgerConfig {
            disconnect_threshold: 0,
            ..config()
        });
        assert_eq!(take(&mut l, 1, 100, t).0, 2, "the first newcomer's start");
        assert_eq!(l.optimistic(), None, "used up, and given up");
        // The next newcomer gets its turn; the first does not get another.
        assert_eq!(l.may_serve(&2, t), Decision::Serve);
        l.served(&2, BLOCK, t);
        assert_eq!(l.optimistic(), Some(&2));
        assert_eq!(l.may_serve(&1, t), Decision::Throttle);
        // A third waits while the slot is held...
        assert_eq!(l.may_serve(&3, t), Decision::Throttle);
        // ...and gets it once the holder settles (signs a receipt).
        l.acknowledged(&2, BLOCK, t);
        assert_eq!(l.optimistic(), None);
        assert_eq!(l.may_serve(&3, t), Decision::Serve);
        assert_eq!(l.optimistic(), Some(&3));
        // A slot held past its period is taken over.
        let later = t + Duration::from_secs(31);
        assert_eq!(l.may_serve(&4, later), Decision::Serve);
        assert_eq!(l.optimistic(), Some(&4));
        assert_eq!(l.may_serve(&3, later), Decision::Throttle);
    }

    #[test]
    fn debtors_are_remembered_before_peers_that_owe_nothing() {
        let t = Instant::now();
        let mut l = Ledger::new(LedgerConfig {
            max_peers: 3,
            ..config()
        });
        l.served(&1, 9 * BLOCK, t);
        for p in 2..10u32 {
            l.received(&p, BLOCK, t + Duration::from_secs(u64::from(p)));
        }
        assert_eq!(l.accounts().count(), 3);
        assert_eq!(l.account(&1).unwrap().owed(), 9 * BLOCK);
        assert_eq!(l.may_serve(&1, t), Decision::Serve, "its one slot");
    }
}
