//! How many bytes of paced blocks the node lets wait on its uplink.
//!
//! The engine paces live blocks: at most a budget of them is handed to the
//! transport at once, the rest wait in the engine, where a cancel still
//! stops them ([`Engine::set_paced_limit`](super::Engine::set_paced_limit)).
//! A fixed budget of 128 KiB is 50 ms of a 20 Mb/s uplink but two seconds
//! of a 0.5 Mb/s one, and the node's own asks wait behind it: in the swarm
//! model (`shoal-sim swarm --home`, 1000 viewers) the tenth of viewers on
//! 0.5 Mb/s uplinks got their segments at p95 2.9 s, the others at 1.7 s.
//! [`UplinkBudget`] times how long each message carrying blocks takes to
//! be written and keeps that near [`TARGET_WRITE`].
//!
//! What it guarantees:
//!
//! - The budget goes below its ceiling only when writes are measured slow.
//!   Where they finish at once (a fast uplink, a kernel buffer with room)
//!   it stays at the ceiling, which is the engine's fixed budget.
//! - The signal is the quickest write of each period of [`TARGET_WRITE`]:
//!   one peer slow to read (its own link is slow) cannot shrink what the
//!   others get, and a peer reported stuck ([`UplinkBudget::peer_stuck`])
//!   is not timed at all.
//! - Halved at most once a period, when even the quickest write took
//!   longer than [`TARGET_WRITE`]; doubled once a period when the quickest
//!   took under half of it; never below [`MIN_BUDGET`] nor above the
//!   ceiling.
//! - Memory is bounded: at most [`MAX_TIMED`] messages are timed per peer.
//! - It owns no clock: time is passed in.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long a message carrying blocks should take to write. A viewer's
/// asks wait behind what its uplink holds; 200 ms is a few round trips
/// of a home link, and in the swarm model it took the 0.5 Mb/s viewers'
/// p95 from 2.9 s to 1.9 s while the others' stayed where they were.
pub const TARGET_WRITE: Duration = Duration::from_millis(200);

/// The least budget: 16 KiB is less than one live shard, so a slow
/// uplink sends one block at a time (the engine always lets one block
/// into an empty queue), and three doublings from here are 128 KiB.
pub const MIN_BUDGET: usize = 16 << 10;

/// Messages timed per peer. A peer holds at most a few messages of blocks
/// (the engine's queue per peer); beyond this, new ones go untimed.
pub const MAX_TIMED: usize = 64;

/// The paced-bytes budget of one node. See the module documentation.
pub struct UplinkBudget<P> {
    ceiling: usize,
    budget: usize,
    /// When each message carrying blocks was handed to the transport,
    /// per peer, oldest first (a peer's messages are written in order).
    handed: HashMap<P, VecDeque<Instant>>,
    /// The current period: when it began and its quickest write.
    period: Option<(Instant, Duration)>,
}

impl<P: Clone + Eq + Hash> UplinkBudget<P> {
    /// A budget that starts at, and never exceeds, `ceiling` bytes.
    pub fn new(ceiling: usize) -> Self {
        UplinkBudget {
            ceiling,
            budget: ceiling,
            handed: HashMap::new(),
            period: None,
        }
    }

    /// The bytes of paced blocks that may wait on the uplink now.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// A message carrying blocks was handed to the transport for `peer`.
    pub fn handed(&mut self, peer: &P, now: Instant) {
        let timed = self.handed.entry(peer.clone()).or_default();
        if timed.len() < MAX_TIMED {
            timed.push_back(now);
        }
    }

    /// A message carrying blocks to `peer` was written. Returns the new
    /// budget when it changed.
    pub fn written(&mut self, peer: &P, now: Instant) -> Option<usize> {
        let timed = self.handed.get_mut(peer)?;
        let at = timed.pop_front()?;
        if timed.is_empty() {
            self.handed.remove(peer);
        }
        let took = now.saturating_duration_since(at);
        let (began, quickest) = self.period.get_or_insert((now, took));
        *quickest = (*quickest).min(took);
        if now.saturating_duration_since(*began) < TARGET_WRITE {
            return None;
        }
        let quickest = *quickest;
        self.period = None;
        let before = self.budget;
        if quickest > TARGET_WRITE {
            self.budget = (self.budget / 2).max(MIN_BUDGET.min(self.ceiling));
        } else if quickest < TARGET_WRITE / 2 {
            self.budget = self.budget.saturating_mul(2).min(self.ceiling);
        }
        (self.budget != before).then_some(self.budget)
    }

    /// `peer` reads slowly or not at all (the node's writer to it is
    /// stuck): what it was handed is not timed.
    pub fn peer_stuck(&mut self, peer: &P) {
        self.handed.remove(peer);
    }

    /// `peer` left.
    pub fn peer_gone(&mut self, peer: &P) {
        self.handed.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CEILING: usize = 128 << 10;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Messages handed to `peers` in turn, each written `took` after it
    /// was handed, one every `every`, for `count` messages; the budget
    /// after.
    fn run(
        b: &mut UplinkBudget<u32>,
        t: &mut Instant,
        peers: &[u32],
        took: Duration,
        count: usize,
    ) {
        for i in 0..count {
            let peer = peers[i % peers.len()];
            b.handed(&peer, *t);
            *t += took;
            let _ = b.written(&peer, *t);
        }
    }

    #[test]
    fn quick_writes_keep_the_ceiling() {
        let mut b = UplinkBudget::new(CEILING);
        let mut t = Instant::now();
        run(&mut b, &mut t, &[1, 2, 3], ms(5), 200);
        assert_eq!(b.budget(), CEILING);
    }

    #[test]
    fn slow_writes_halve_the_budget_down_to_the_least_and_quick_ones_restore_it() {
        let mut b = UplinkBudget::new(CEILING);
        let mut t = Instant::now();
        // A 25 kB shard on a 0.5 Mb/s uplink: 400 ms a message.
        run(&mut b, &mut t, &[1, 2], ms(400), 3);
        assert_eq!(b.budget(), CEILING / 2, "once a period");
        run(&mut b, &mut t, &[1, 2], ms(400), 20);
        assert_eq!(b.budget(), MIN_BUDGET);
        // The uplink frees up: quick writes double it back.
        run(&mut b, &mut t, &[1, 2], ms(20), 100);
        assert_eq!(b.budget(), CEILING);
    }

    #[test]
    fn writes_near_the_target_leave_the_budget_as_it_is() {
        let mut b = UplinkBudget::new(CEILING);
        let mut t = Instant::now();
        run(&mut b, &mut t, &[1], ms(400), 4);
        let settled = b.budget();
        assert!(settled < CEILING);
        run(&mut b, &mut t, &[1], ms(150), 50);
        assert_eq!(b.budget(), settled);
    }

    #[test]
    fn one_slow_reader_does_not_shrink_the_budget() {
        let mut b = UplinkBudget::new(CEILING);
        let t = Instant::now();
        // Peer 9 takes a second to read each message; peer 1 reads at
        // once, within the same periods.
        let mut events = Vec::new();
        for i in 0..60u64 {
            let at = t + ms(50 * i);
            b.handed(&1, at);
            events.push((at + ms(10), 1));
            if i < 40 {
                b.handed(&9, at);
                events.push((at + ms(1000), 9));
            }
        }
        events.sort();
        for (at, peer) in events {
            let _ = b.written(&peer, at);
        }
        assert_eq!(b.budget(), CEILING);
    }

    #[test]
    fn a_stuck_peer_is_not_timed() {
        let mut b = UplinkBudget::new(CEILING);
        let t = Instant::now();
        b.handed(&1, t);
        b.peer_stuck(&1);
        // Its write, reported much later, is no sample.
        assert_eq!(b.written(&1, t + ms(5000)), None);
        assert_eq!(b.budget(), CEILING);
    }

    #[test]
    fn timing_is_bounded_per_peer() {
        let mut b = UplinkBudget::new(CEILING);
        let t = Instant::now();
        for _ in 0..10 * MAX_TIMED {
            b.handed(&1, t);
        }
        assert_eq!(b.handed.get(&1).map(VecDeque::len), Some(MAX_TIMED));
        b.peer_gone(&1);
        assert!(b.handed.is_empty());
    }
}
