//! Fetch planning: which peer to ask for which block, without I/O.
//!
//! A [`GroupFetch`] fetches a group of blocks of which any `need` will do:
//! the `k + m` shards of a segment (any `k` rebuild it), or a single
//! manifest (`need = 1`). It asks every candidate peer which blocks it has
//! (want-have), then asks for blocks (want-block) from the peers that have
//! them, spreading the requests so that no peer has more than
//! [`FetchConfig::max_in_flight_per_peer`] outstanding, preferring data
//! shards (no decoding needed when they all arrive). A request not answered
//! within [`FetchConfig::block_timeout`] is moved to another peer and the
//! slow peer is asked again only for blocks no other peer has, and only
//! once no block a faster peer has is left to ask for (any `need` of them
//! will do, so a block held by slow peers alone is passed over while
//! another will serve). Want-haves left unanswered for as long are asked
//! again, so a message lost on its way (a stream that failed under it)
//! costs one timeout, not the fetch. Once `need` blocks have arrived the
//! rest are cancelled.
//!
//! The caller feeds it presences, blocks, peer changes and the time, and
//! carries out the [`FetchAction`]s it returns.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use cid::Cid;

/// Limits and timeouts, each with the reason for its default.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Want-blocks outstanding per peer and group. Two shards of a segment
    /// per peer spreads a 10-of-14 segment over five peers while keeping
    /// each connection busy.
    pub max_in_flight_per_peer: usize,
    /// Want-blocks outstanding per peer over every group of a fetch
    /// ([`GroupFetch::set_others`] says what the others asked). A peer's
    /// queue stays a few shards deep, so that work goes to whichever peer
    /// has room as blocks arrive: with a queue of two shards per group
    /// and eight groups, one peer held a window's last shards for a
    /// second and a half while three others sat idle (the network lab,
    /// four seeders at 20 Mb/s). Four 410 KiB shards cover the round
    /// trip of a 100 Mb/s link at 100 ms.
    pub max_in_flight_per_peer_total: usize,
    /// How long a want-block may go unanswered before another peer is
    /// asked. A 410 KiB shard takes 33 ms at 100 Mb/s; 5 s allows for a
    /// congested link without stalling a live segment for long.
    pub block_timeout: Duration,
    /// A want-block outstanding this long no longer holds one of the
    /// `need` places: another block is asked for beside it, and whichever
    /// `need` blocks arrive first complete the group (the rest are
    /// cancelled). It is still awaited, until `block_timeout`. Off by
    /// default: a file's fetch would spend its links on shards beyond `k`.
    /// Live segments hedge (`LiveConfig::fetch`), because a shard waits
    /// behind whatever its sender queued for others, and the viewer has
    /// no other way to hear that it should ask elsewhere.
    pub hedge_after: Option<Duration>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_in_flight_per_peer: 2,
            max_in_flight_per_peer_total: 8,
            block_timeout: Duration::from_secs(5),
            hedge_after: None,
        }
    }
}

/// What the planner asks the caller to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchAction<P> {
    WantHave { peer: P, cid: Cid },
    WantBlock { peer: P, cid: Cid },
    Cancel { cid: Cid },
}

/// Fetches any `need` of a group of blocks. See the module documentation.
pub struct GroupFetch<P> {
    config: FetchConfig,
    cids: Vec<Cid>,
    /// Positions of each CID: a segment's zero-padding shards are equal
    /// blocks, so one CID may fill several positions.
    index: HashMap<Cid, Vec<usize>>,
    need: usize,
    peers: BTreeSet<P>,
    has: BTreeMap<P, BTreeSet<usize>>,
    lacks: BTreeMap<P, BTreeSet<usize>>,
    requested: BTreeMap<usize, (P, Instant)>,
    done: BTreeSet<usize>,
    /// Peers that let a request time out: asked again by this group only
    /// when no other peer has the block.
    slow: BTreeSet<P>,
    /// When each peer with want-haves still unanswered was last asked
    /// them.
    probed: BTreeMap<P, Instant>,
    /// Positions in the order blocks are requested.
    order: Vec<usize>,
    /// A peer to spare (see [`GroupFetch::spare`]).
    spared: Option<Spared<P>>,
    /// Requests other groups of the same fetch have outstanding, per
    /// peer ([`GroupFetch::set_others`]).
    others: BTreeMap<P, usize>,
    /// Positions whose request is past [`FetchConfig::hedge_after`]: still
    /// awaited, no longer counted against `need`.
    hedged: BTreeSet<usize>,
    /// How long each peer has lately taken to deliver a block asked of
    /// it ([`GroupFetch::set_service_times`]).
    service: BTreeMap<P, Duration>,
    cancelled: bool,
}

/// The delivery time assumed for a peer not yet timed: a hop at the
/// design's 10-50 ms links. Lower than a slow uplink's, so a peer not yet
/// tried is tried before one known to be slow.
pub const DEFAULT_SERVICE_TIME: Duration = Duration::from_millis(100);

/// Which peers a block is asked of first. Any `need` blocks will do, so
/// every open block is tried with the peers of one class before any is
/// asked of the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// Peers that never let a request time out here.
    Fast,
    /// The spared source once its wait is over: asked for what no other
    /// peer with room has. It holds every block and is often the least
    /// loaded candidate; asked like any peer, it could be asked for
    /// blocks other viewers with room hold. (In the swarm model at 1000
    /// viewers this alone changed nothing measurable; the broadcaster's
    /// extra copies came from viewers with slow uplinks, which the pacing
    /// of every node's live blocks fixed.)
    SourceAfterWait,
    /// Peers that let a request time out: asked only when no other will
    /// serve.
    Slow,
}

/// A peer asked for at most `quota` blocks before `until`.
struct Spared<P> {
    peer: P,
    quota: usize,
    until: Instant,
    asked: usize,
    /// Positions it answered DONT_HAVE for: it publishes them, so they
    /// were rationed, not missing ("not now"); it is asked for them again
    /// at `retry`.
    refused: BTreeSet<usize>,
    /// `until`, or a request timeout after a refusal that came later.
    retry: Instant,
    /// `until` has passed and the group was scheduled since.
    lapsed: bool,
}

impl<P: Clone + Ord> GroupFetch<P> {
    /// A fetch of any `need` of `cids` (in preference order: data shards
    /// first). `need` is clamped to `1..=cids.len()`.
    pub fn new(config: FetchConfig, cids: Vec<Cid>, need: usize) -> Self {
        let mut index: HashMap<Cid, Vec<usize>> = HashMap::new();
        for (i, c) in cids.iter().enumerate() {
            index.entry(*c).or_default().push(i);
        }
        let need = need.clamp(1, cids.len().max(1));
        GroupFetch {
            config,
            index,
            need,
            peers: BTreeSet::new(),
            has: BTreeMap::new(),
            lacks: BTreeMap::new(),
            requested: BTreeMap::new(),
            done: BTreeSet::new(),
            slow: BTreeSet::new(),
            probed: BTreeMap::new(),
            order: (0..cids.len()).collect(),
            spared: None,
            others: BTreeMap::new(),
            hedged: BTreeSet::new(),
            service: BTreeMap::new(),
            cancelled: false,
            cids,
        }
    }

    /// Requests blocks starting at position `first` and wrapping around,
    /// instead of from the first. Viewers of a live segment each start at
    /// a different shard, so that what they take from the source differs
    /// and they can trade the rest among themselves.
    pub fn rotate(&mut self, first: usize) {
        let n = self.cids.len();
        if n > 0 {
            self.order = (0..n).map(|i| (first + i) % n).collect();
        }
    }

    /// Asks `peer` for at most `quota` blocks before `until`, while other
    /// peers may get the rest: a live source that every viewer can reach
    /// should send each shard to a few viewers, not every shard to all.
    /// A block it refuses (DONT_HAVE: the source has sent it to its share
    /// of viewers) does not count against the quota, so the next block is
    /// asked of it at once: the source's first copies then cover every
    /// block, whichever ones the viewers that reach it start at. After
    /// `until` it is asked, for what it refused too, whenever no other
    /// peer with room has a block that will do, so the deadline holds
    /// even when no other viewer has the blocks.
    pub fn spare(&mut self, peer: P, quota: usize, until: Instant) {
        self.spared = Some(Spared {
            peer,
            quota,
            until,
            asked: 0,
            refused: BTreeSet::new(),
            retry: until,
            lapsed: false,
        });
    }

    /// The blocks of the group.
    pub fn cids(&self) -> &[Cid] {
        &self.cids
    }

    /// Blocks received so far (their positions in the group).
    pub fn received(&self) -> &BTreeSet<usize> {
        &self.done
    }

    pub fn is_complete(&self) -> bool {
        self.done.len() >= self.need
    }

    /// How far the fetch has come, for a log line: blocks received of
    /// those needed, requests outstanding and to how many peers, the
    /// candidates, how many of them were slow, and how many left
    /// want-haves unanswered.
    pub fn progress(&self) -> String {
        let asked: BTreeSet<&P> = self.requested.values().map(|(p, _)| p).collect();
        format!(
            "{} of {} blocks, {} requested from {} peers, {} candidates ({} slow, {} silent)",
            self.done.len(),
            self.need,
            self.requested.len(),
            asked.len(),
            self.peers.len(),
            self.slow.len(),
            self.probed.len(),
        )
    }

    /// True when every candidate peer has answered for every block it was
    /// asked about and the blocks they have cannot complete the group: more
    /// peers are needed.
    pub fn is_stuck(&self) -> bool {
        if self.is_complete() || !self.requested.is_empty() {
            return false;
        }
        let reachable: HashSet<usize> = self
            .has
            .iter()
            .filter(|(p, _)| self.peers.contains(*p))
            .flat_map(|(_, s)| s.iter().copied())
            .chain(self.done.iter().copied())
            .collect();
        let all_answered = self.peers.iter().all(|p| {
            let known = self.has.get(p).map_or(0, BTreeSet::len)
                + self.lacks.get(p).map_or(0, BTreeSet::len);
            known >= self.cids.len() || self.slow.contains(p)
        });
        all_answered && reachable.len() < self.need
    }

    /// A candidate peer (a provider, or any connected peer): it is asked
    /// which blocks it has.
    pub fn add_peer(&mut self, peer: P, now: Instant) -> Vec<FetchAction<P>> {
        let mut out = Vec::new();
        if self.is_complete() || !self.peers.insert(peer.clone()) {
            return out;
        }
        out.extend(self.probe(&peer, now));
        out.extend(self.schedule(now));
        out
    }

    /// Asks `peer` which of the blocks it has not answered for it holds,
    /// in request order (peers answer in the order they are asked).
    fn probe(&mut self, peer: &P, now: Instant) -> Vec<FetchAction<P>> {
        let mut seen = HashSet::new();
        let asks: Vec<FetchAction<P>> = self
            .unanswered(peer)
            .map(|i| self.cids[i])
            .filter(|cid| seen.insert(*cid))
            .map(|cid| FetchAction::WantHave {
                peer: peer.clone(),
                cid,
            })
            .collect();
        if asks.is_empty() {
            self.probed.remove(peer);
        } else {
            self.probed.insert(peer.clone(), now);
        }
        asks
    }

    /// Positions, in request order, neither received nor answered for by
    /// `peer`.
    fn unanswered<'a>(&'a self, peer: &'a P) -> impl Iterator<Item = usize> + 'a {
        let known = |m: &BTreeMap<P, BTreeSet<usize>>, i: usize| {
            m.get(peer).is_some_and(|s| s.contains(&i))
        };
        self.order.iter().copied().filter(move |&i| {
            !self.done.contains(&i) && !known(&self.has, i) && !known(&self.lacks, i)
        })
    }

    /// A candidate peer known to hold every block of the group (a live
    /// segment's publisher): nothing is asked about, blocks are requested
    /// from it straight away.
    pub fn add_holder(&mut self, peer: P, now: Instant) -> Vec<FetchAction<P>> {
        if self.is_complete() || !self.peers.insert(peer.clone()) {
            return Vec::new();
        }
        let all: BTreeSet<usize> = (0..self.cids.len()).collect();
        self.has.insert(peer, all);
        self.schedule(now)
    }

    /// A peer said whether it has a block.
    pub fn on_presence(
        &mut self,
        peer: &P,
        cid: &Cid,
        have: bool,
        now: Instant,
    ) -> Vec<FetchAction<P>> {
        let Some(positions) = self.index.get(cid).cloned() else {
            return Vec::new();
        };
        if !self.peers.contains(peer) {
            return Vec::new();
        }
        for i in positions {
            if have {
                self.has.entry(peer.clone()).or_default().insert(i);
            } else {
                self.lacks.entry(peer.clone()).or_default().insert(i);
                if let Some(s) = self.has.get_mut(peer) {
                    s.remove(&i);
                }
                // A DONT_HAVE for a want-block frees the slot at once.
                if self.requested.get(&i).is_some_and(|(p, _)| p == peer) {
                    self.requested.remove(&i);
                    let timeout = self.config.block_timeout;
                    if let Some(s) = self.spared.as_mut().filter(|s| s.peer == *peer) {
                        s.refused.insert(i);
                        if now < s.until {
                            s.asked = s.asked.saturating_sub(1);
                        } else {
                            s.retry = s.retry.max(now + timeout);
                        }
                    }
                }
            }
        }
        if self.probed.contains_key(peer) && self.unanswered(peer).next().is_none() {
            self.probed.remove(peer);
        }
        self.schedule(now)
    }

    /// A verified block of the group arrived (from anyone).
    pub fn on_block(&mut self, cid: &Cid, now: Instant) -> Vec<FetchAction<P>> {
        let Some(positions) = self.index.get(cid).cloned() else {
            return Vec::new();
        };
        for i in positions {
            self.requested.remove(&i);
            self.done.insert(i);
        }
        if self.is_complete() {
            return self.finish();
        }
        self.schedule(now)
    }

    /// A peer went away: its requests go to others.
    pub fn on_peer_gone(&mut self, peer: &P, now: Instant) -> Vec<FetchAction<P>> {
        self.peers.remove(peer);
        self.has.remove(peer);
        self.lacks.remove(peer);
        self.probed.remove(peer);
        self.requested.retain(|_, (p, _)| p != peer);
        self.schedule(now)
    }

    /// Moves requests that timed out to other peers, and asks peers
    /// that left want-haves unanswered as long again.
    pub fn tick(&mut self, now: Instant) -> Vec<FetchAction<P>> {
        let timeout = self.config.block_timeout;
        let late: Vec<(usize, P)> = self
            .requested
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= timeout)
            .map(|(i, (p, _))| (*i, p.clone()))
            .collect();
        for (i, peer) in late {
            self.requested.remove(&i);
            self.slow.insert(peer);
        }
        if let Some(hedge) = self.config.hedge_after {
            let hedged = self
                .requested
                .iter()
                .filter(|(_, (_, at))| now.duration_since(*at) >= hedge)
                .map(|(i, _)| *i);
            self.hedged.extend(hedged);
        }
        if let Some(s) = self.spared.as_mut().filter(|s| now >= s.until) {
            s.lapsed = true;
        }
        if let Some(s) = self.spared.as_mut().filter(|s| now >= s.retry) {
            // What it refused, it is asked for now.
            let refused = std::mem::take(&mut s.refused);
            if !refused.is_empty() && self.peers.contains(&s.peer) {
                if let Some(lacks) = self.lacks.get_mut(&s.peer) {
                    lacks.retain(|i| !refused.contains(i));
                }
                self.has.entry(s.peer.clone()).or_default().extend(refused);
            }
        }
        let silent: Vec<P> = self
            .probed
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= timeout)
            .map(|(p, _)| p.clone())
            .collect();
        let mut out = Vec::new();
        for peer in silent {
            out.extend(self.probe(&peer, now));
        }
        out.extend(self.schedule(now));
        out
    }

    /// When [`GroupFetch::tick`] has something to do next: a request times
    /// out, or the spared peer's wait ends while it holds back blocks.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.cancelled || self.is_complete() {
            return None;
        }
        let spare_ends = self.spared.as_ref().and_then(|s| {
            let holds_back = (!s.lapsed && s.asked >= s.quota).then_some(s.until);
            let refused = (!s.refused.is_empty()).then_some(s.retry);
            holds_back.into_iter().chain(refused).min()
        });
        let hedges = self.config.hedge_after.into_iter().flat_map(|hedge| {
            self.requested
                .iter()
                .filter(|(i, _)| !self.hedged.contains(*i))
                .map(move |(_, (_, at))| *at + hedge)
        });
        self.requested
            .values()
            .map(|(_, at)| *at)
            .chain(self.probed.values().copied())
            .map(|at| at + self.config.block_timeout)
            .chain(spare_ends)
            .chain(hedges)
            .min()
    }

    /// What other groups fetching beside this one have asked each peer
    /// for: among the peers with room, the least loaded overall is asked
    /// first. Balancing within each group alone let one peer's queue grow
    /// behind every group's first picks while the others ran dry.
    pub fn set_others(&mut self, others: BTreeMap<P, usize>) {
        self.others = others;
    }

    /// How long each peer lately took to deliver a block asked of it
    /// (peers not listed: [`DEFAULT_SERVICE_TIME`]). Among the peers
    /// with room, the one expected to deliver first is asked: its time
    /// for each block it already has to send plus this one. A viewer on
    /// a home uplink below the stream's rate has shards too, and a
    /// request it takes waits there seconds.
    pub fn set_service_times(&mut self, service: BTreeMap<P, Duration>) {
        self.service = service;
    }

    /// The peer asked for `cid` and when, while the request is
    /// outstanding.
    pub fn request_of(&self, cid: &Cid) -> Option<(&P, Instant)> {
        let positions = self.index.get(cid)?;
        positions
            .iter()
            .find_map(|i| self.requested.get(i))
            .map(|(p, at)| (p, *at))
    }

    /// The peer of each request outstanding.
    pub fn outstanding(&self) -> impl Iterator<Item = &P> {
        self.requested.values().map(|(p, _)| p)
    }

    /// Asks for more blocks if there is room now (another group's request
    /// to a peer was answered).
    pub fn reschedule(&mut self, now: Instant) -> Vec<FetchAction<P>> {
        self.schedule(now)
    }

    /// Abandons the group: cancels everything not yet received.
    pub fn cancel(&mut self) -> Vec<FetchAction<P>> {
        self.finish()
    }

    fn finish(&mut self) -> Vec<FetchAction<P>> {
        if self.cancelled {
            return Vec::new();
        }
        self.cancelled = true;
        self.requested.clear();
        self.probed.clear();
        let mut seen = HashSet::new();
        (0..self.cids.len())
            .filter(|i| !self.done.contains(i) && seen.insert(self.cids[*i]))
            .map(|i| FetchAction::Cancel { cid: self.cids[i] })
            .collect()
    }

    /// A peer known to be slow elsewhere (another segment's requests
    /// timed out on it): asked only for blocks no other peer can give.
    pub fn mark_slow(&mut self, peer: P) {
        self.slow.insert(peer);
    }

    /// The peers whose requests timed out here.
    pub fn slow_peers(&self) -> impl Iterator<Item = &P> {
        self.slow.iter()
    }

    /// The peer to ask for block `i`: one that has it and has room, the
    /// one expected to deliver first (its service time for each block
    /// it has to send, counting what other groups asked of it), of the
    /// best class `class` allows ([`Class`]).
    fn holder(&self, i: usize, load: &BTreeMap<P, usize>, now: Instant, class: Class) -> Option<P> {
        let max = self.config.max_in_flight_per_peer;
        let max_total = self.config.max_in_flight_per_peer_total.max(max);
        let load_of = |p: &P| load.get(p).copied().unwrap_or(0);
        let others_of = |p: &P| self.others.get(p).copied().unwrap_or(0);
        let spared = self.spared.as_ref();
        let class_of = |p: &P| {
            if self.slow.contains(p) {
                Class::Slow
            } else if spared.is_some_and(|s| s.peer == *p && now >= s.until) {
                Class::SourceAfterWait
            } else {
                Class::Fast
            }
        };
        let spared_out = spared
            .filter(|s| now < s.until && s.asked >= s.quota)
            .map(|s| &s.peer);
        self.has
            .iter()
            .filter(|(p, s)| {
                s.contains(&i)
                    && self.peers.contains(*p)
                    && load_of(p) < max
                    && load_of(p) + others_of(p) < max_total
                    && Some(*p) != spared_out
            })
            .map(|(p, _)| (class_of(p), p))
            .filter(|(c, _)| *c <= class)
            .min_by_key(|(c, p)| {
                let service = self.service.get(*p).copied();
                let queued = u32::try_from(1 + load_of(p) + others_of(p)).unwrap_or(u32::MAX);
                let service = service.unwrap_or(DEFAULT_SERVICE_TIME);
                (*c, service.saturating_mul(queued))
            })
            .map(|(_, p)| p.clone())
    }

    /// Issues want-blocks until enough are in flight.
    fn schedule(&mut self, now: Instant) -> Vec<FetchAction<P>> {
        let mut out = Vec::new();
        if self.cancelled {
            return out;
        }
        let mut load: BTreeMap<P, usize> = BTreeMap::new();
        for (p, _) in self.requested.values() {
            *load.entry(p.clone()).or_default() += 1;
        }
        let requested = &self.requested;
        self.hedged.retain(|i| requested.contains_key(i));
        // Requests past their hedge time leave their place to another.
        let mut counted = self.requested.len() - self.hedged.len();
        while self.done.len() + counted < self.need {
            // The first block (data shards come first) that is neither
            // received nor requested and that a usable peer has, from the
            // least loaded such peer; a block only slow peers have waits
            // while another block will do (any `need` of them rebuild the
            // whole).
            let asked: HashSet<Cid> = self.requested.keys().map(|i| self.cids[*i]).collect();
            let open: Vec<usize> = self
                .order
                .iter()
                .copied()
                .filter(|i| {
                    !self.done.contains(i)
                        && !self.requested.contains_key(i)
                        && !asked.contains(&self.cids[*i])
                })
                .collect();
            // A place a hedge freed goes to a fast peer only: the source
            // past its wait and slow peers are asked only where the group
            // would wait for them anyway. (Hedges given to the broadcaster
            // raised its copies of each shard from 2.2 to 3.35 at 10,000
            // viewers in the swarm model, where many viewers are still
            // fetching when the source's wait ends.)
            let hedging = self.done.len() + self.requested.len() >= self.need;
            let classes: &[Class] = if hedging {
                &[Class::Fast]
            } else {
                &[Class::Fast, Class::SourceAfterWait, Class::Slow]
            };
            let pick = classes.iter().copied().find_map(|class| {
                open.iter()
                    .find_map(|i| self.holder(*i, &load, now, class).map(|p| (*i, p)))
            });
            let Some((i, peer)) = pick else {
                break;
            };
            if let Some(s) = self.spared.as_mut().filter(|s| s.peer == peer) {
                s.asked += 1;
            }
            *load.entry(peer.clone()).or_default() += 1;
            counted += 1;
            self.requested.insert(i, (peer.clone(), now));
            out.push(FetchAction::WantBlock {
                peer,
                cid: self.cids[i],
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Codec, cid_of};

    fn shards(n: u8) -> Vec<Cid> {
        (0..n).map(|i| cid_of(Codec::Raw, &[i])).collect()
    }

    fn want_blocks(actions: &[FetchAction<u32>]) -> Vec<(u32, Cid)> {
        actions
            .iter()
            .filter_map(|a| match a {
                FetchAction::WantBlock { peer, cid } => Some((*peer, *cid)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_known_holder_is_asked_for_blocks_without_being_asked_what_it_has() {
        let cids = shards(6);
        let mut g = GroupFetch::new(FetchConfig::default(), cids.clone(), 4);
        let t = Instant::now();
        let out = g.add_holder(1u32, t);
        assert!(
            out.iter()
                .all(|a| matches!(a, FetchAction::WantBlock { peer: 1, .. }))
        );
        // Two at a time, data shards first.
        let asked: Vec<Cid> = want_blocks(&out).into_iter().map(|(_, c)| c).collect();
        assert_eq!(asked, cids[..2].to_vec());
        // Added twice, it is not asked twice.
        assert!(g.add_holder(1, t).is_empty());
    }

    #[test]
    fn a_block_only_a_slow_peer_has_is_passed_over_while_another_will_do() {
        let cids = shards(6); // any 4 of 6
        let config = FetchConfig {
            max_in_flight_per_peer: 4,
            max_in_flight_per_peer_total: 4,
            ..FetchConfig::default()
        };
        let t = Instant::now();
        let mut g = GroupFetch::new(config.clone(), cids.clone(), 4);
        let _ = g.add_peer(1u32, t);
        let _ = g.add_peer(2, t);
        // Peer 1 has every shard and is asked for the data shards...
        let mut wb = Vec::new();
        for c in &cids {
            wb.extend(want_blocks(&g.on_presence(&1, c, true, t)));
        }
        assert_eq!(wb, cids[..4].iter().map(|c| (1, *c)).collect::<Vec<_>>());
        // ...peer 2 has all but the first two...
        for c in &cids[2..] {
            assert!(want_blocks(&g.on_presence(&2, c, true, t)).is_empty());
        }
        // ...and peer 1 lets them time out: peer 2 is asked for four of
        // its own, although the first two data shards come first in the
        // order and peer 1 still has them.
        let late = t + config.block_timeout;
        let again = want_blocks(&g.tick(late));
        assert_eq!(again, cids[2..].iter().map(|c| (2, *c)).collect::<Vec<_>>());
        assert_eq!(g.slow_peers().collect::<Vec<_>>(), vec![&1]);
        // A fetch told beforehand that peer 1 is slow asks peer 2 first.
        let mut h = GroupFetch::new(config, cids.clone(), 4);
        h.mark_slow(1);
        let _ = h.add_peer(1, t);
        let _ = h.add_peer(2, t);
        for c in &cids[2..] {
            let _ = h.on_presence(&2, c, true, t);
        }
        assert!(want_blocks(&h.on_presence(&1, &cids[0], true, t)).is_empty());
    }

    #[test]
    fn spreads_requests_and_completes_with_any_k() {
        let cids = shards(6); // k = 4, m = 2
        let mut g = GroupFetch::new(FetchConfig::default(), cids.clone(), 4);
        let t = Instant::now();
        let mut actions = Vec::new();
        for p in [1u32, 2, 3] {
            actions.extend(g.add_peer(p, t));
        }
        assert_eq!(actions.len(), 18, "want-have for every shard to every peer");
        // Everyone has everything.
        let mut wb = Vec::new();
        for p in [1u32, 2, 3] {
            for c in &cids {
                wb.extend(want_blocks(&g.on_presence(&p, c, true, t)));
            }
        }
        assert_eq!(wb.len(), 4);
        // Data shards first, at most two per peer.
        let asked: HashSet<Cid> = wb.iter().map(|(_, c)| *c).collect();
        assert_eq!(asked, cids[..4].iter().copied().collect());
        let mut per_peer: HashMap<u32, usize> = HashMap::new();
        for (p, _) in &wb {
            *per_peer.entry(*p).or_default() += 1;
        }
        assert!(per_peer.values().all(|&n| n <= 2));
        // Three arrive, then a parity shard from elsewhere: complete, and
        // the remaining shards are cancelled.
        for (_, c) in &wb[..3] {
            assert!(
                g.on_block(c, t)
                    .iter()
                    .all(|a| !matches!(a, FetchAction::Cancel { .. }))
            );
        }
        let end = g.on_block(&cids[5], t);
        assert!(g.is_complete());
        let cancels: HashSet<Cid> = end
            .iter()
            .filter_map(|a| match a {
                FetchAction::Cancel { cid } => Some(*cid),
                _ => None,
            })
            .collect();
        assert_eq!(cancels, [wb[3].1, cids[4]].into_iter().collect());
    }

    #[test]
    fn a_spared_source_sends_its_quota_then_waits_for_other_peers() {
        let cids = shards(6);
        let config = FetchConfig {
            max_in_flight_per_peer: 4,
            ..FetchConfig::default()
        };
        let mut g = GroupFetch::new(config, cids.clone(), 4);
        let t = Instant::now();
        g.rotate(3);
        g.spare(1u32, 2, t + Duration::from_secs(1));
        g.add_peer(1, t);
        g.add_peer(2, t);
        let mut wb = Vec::new();
        for i in [3, 4, 5, 0, 1, 2] {
            wb.extend(want_blocks(&g.on_presence(&1, &cids[i], true, t)));
        }
        // Two shards from the source, starting at the rotation.
        assert_eq!(wb, vec![(1, cids[3]), (1, cids[4])]);
        // Another viewer gets shard 0: it is asked, not the source.
        assert_eq!(
            want_blocks(&g.on_presence(&2, &cids[0], true, t)),
            vec![(2, cids[0])]
        );
        // Past the wait the source is asked for what nobody else has.
        let later = want_blocks(&g.tick(t + Duration::from_secs(1)));
        assert_eq!(later, vec![(1, cids[5])]);
    }

    #[test]
    fn past_its_wait_the_source_is_asked_only_for_what_no_other_peer_with_room_has() {
        let cids = shards(5);
        let mut g = GroupFetch::new(FetchConfig::default(), cids.clone(), 4);
        let t = Instant::now();
        let until = t + Duration::from_secs(1);
        g.spare(1u32, 1, until);
        // Peer 2 is busy with other segments: the source is the least
        // loaded candidate overall.
        g.set_others(BTreeMap::from([(2, 3)]));
        assert_eq!(want_blocks(&g.add_holder(1, t)), vec![(1, cids[0])]);
        g.add_peer(2, t);
        let mut asked = Vec::new();
        for cid in &cids {
            asked.extend(want_blocks(&g.on_presence(&2, cid, true, t)));
        }
        assert_eq!(asked, vec![(2, cids[1]), (2, cids[2])]);
        // The wait is over and peer 2 has room again: it is asked for the
        // next block, not the source.
        assert_eq!(
            want_blocks(&g.on_block(&cids[1], until)),
            vec![(2, cids[3])]
        );
        // Once no other peer has the block, the source serves it.
        assert!(want_blocks(&g.on_presence(&2, &cids[4], false, until)).is_empty());
        assert_eq!(
            want_blocks(&g.on_presence(&2, &cids[3], false, until)),
            vec![(1, cids[3])]
        );
    }

    #[test]
    fn a_refusal_from_the_spared_source_moves_to_the_next_block_until_the_wait_ends() {
        let cids = shards(3);
        let mut g = GroupFetch::new(FetchConfig::default(), cids.clone(), 3);
        let t = Instant::now();
        let until = t + Duration::from_secs(1);
        let timeout = FetchConfig::default().block_timeout;
        g.spare(1u32, 1, until);
        // The source holds everything: one block, its quota.
        assert_eq!(want_blocks(&g.add_holder(1, t)), vec![(1, cids[0])]);
        // Refused (sent to its share of viewers already): the next block
        // is asked of it at once, within the same quota of one.
        let next = g.on_presence(&1, &cids[0], false, t);
        assert_eq!(want_blocks(&next), vec![(1, cids[1])]);
        assert!(want_blocks(&g.on_block(&cids[1], t)).is_empty(), "quota");
        assert_eq!(g.next_deadline(), Some(until));
        // Once the wait is over it is asked like any peer, for the refused
        // block too (two in flight per peer).
        let mut later = want_blocks(&g.tick(until));
        later.sort();
        let mut expected = vec![(1, cids[0]), (1, cids[2])];
        expected.sort();
        assert_eq!(later, expected);
        // Refused again after the wait (the ration outlived it): asked
        // again a request timeout later, not at once and not never.
        assert!(want_blocks(&g.on_presence(&1, &cids[0], false, until)).is_empty());
        assert!(want_blocks(&g.on_block(&cids[2], until)).is_empty());
        assert_eq!(g.next_deadline(), Some(until + timeout));
        assert_eq!(want_blocks(&g.tick(until + timeout)), vec![(1, cids[0])]);
    }

    #[test]
    fn a_silent_peer_is_replaced_after_the_timeout() {
        let cids = shards(2);
        let config = FetchConfig {
            block_timeout: Duration::from_secs(1),
            ..FetchConfig::default()
        };
        let mut g = GroupFetch::new(config, cids.clone(), 1);
        let t = Instant::now();
        g.add_peer(1u32, t);
        g.add_peer(2u32, t);
        let first = want_blocks(&g.on_presence(&1, &cids[0], true, t));
        assert_eq!(first, vec![(1, cids[0])]);
        assert!(want_blocks(&g.on_presence(&2, &cids[0], true, t)).is_empty());
        assert_eq!(g.next_deadline(), Some(t + Duration::from_secs(1)));
        assert!(want_blocks(&g.tick(t + Duration::from_millis(500))).is_empty());
        let moved = want_blocks(&g.tick(t + Duration::from_secs(1)));
        assert_eq!(moved, vec![(2, cids[0])]);
    }

    /// A group, its blocks, its start, and the want-blocks it sent first.
    type Started = (GroupFetch<u32>, Vec<Cid>, Instant, Vec<(u32, Cid)>);

    /// Any 2 of 4 blocks, hedged after 300 ms, with `peers` as
    /// candidates, the first of which says it has all four.
    fn hedging_group(peers: &[u32]) -> Started {
        let cids = shards(4);
        let config = FetchConfig {
            hedge_after: Some(Duration::from_millis(300)),
            ..FetchConfig::default()
        };
        let mut g = GroupFetch::new(config, cids.clone(), 2);
        let t = Instant::now();
        for p in peers {
            let _ = g.add_peer(*p, t);
        }
        let mut first = Vec::new();
        for c in &cids {
            first.extend(want_blocks(&g.on_presence(&peers[0], c, true, t)));
        }
        (g, cids, t, first)
    }

    #[test]
    fn a_request_past_its_hedge_time_makes_room_for_another_block() {
        let (mut g, cids, t, first) = hedging_group(&[1, 2]);
        assert_eq!(first.len(), 2, "{first:?}");
        assert_eq!(g.next_deadline(), Some(t + Duration::from_millis(300)));
        assert!(want_blocks(&g.tick(t + Duration::from_millis(200))).is_empty());
        // Past the hedge time both requests leave their places: two more
        // blocks are asked for, of a peer with room, beside them.
        let at = t + Duration::from_millis(300);
        let _ = g.on_presence(&2, &cids[2], true, at);
        let hedged = want_blocks(&g.on_presence(&2, &cids[3], true, at));
        assert!(hedged.is_empty(), "nothing before the tick: {hedged:?}");
        let hedged = want_blocks(&g.tick(at));
        assert_eq!(hedged, vec![(2, cids[2]), (2, cids[3])]);
        // Each request is hedged once: next are the new requests'.
        assert_eq!(g.next_deadline(), Some(at + Duration::from_millis(300)));
        // Whichever two arrive first complete the group; the rest are
        // cancelled.
        let _ = g.on_block(&cids[3], at);
        let done = g.on_block(&cids[0], at);
        assert!(g.is_complete());
        assert!(done.contains(&FetchAction::Cancel { cid: cids[1] }));
        assert!(done.contains(&FetchAction::Cancel { cid: cids[2] }));
    }

    #[test]
    fn a_hedge_goes_to_a_fast_peer_never_to_the_source_past_its_wait() {
        let (mut g, cids, t, first) = hedging_group(&[2]);
        assert_eq!(first, vec![(2, cids[0]), (2, cids[1])]);
        // The source's wait is already over and it has room: a place
        // that opens without a hedge would be its to fill.
        g.spare(1u32, 1, t);
        assert!(want_blocks(&g.add_holder(1, t)).is_empty());
        let at = t + Duration::from_millis(300);
        assert!(want_blocks(&g.tick(at)).is_empty(), "not the source");
        // A viewer with room that has a block takes the hedge.
        let hedged = want_blocks(&g.on_presence(&3, &cids[2], true, at));
        assert!(hedged.is_empty(), "peer 3 is not a candidate yet");
        let _ = g.add_peer(3u32, at);
        let hedged = want_blocks(&g.on_presence(&3, &cids[2], true, at));
        assert_eq!(hedged, vec![(3, cids[2])]);
        // Peer 2's requests time out: one place is no hedge (peer 3's
        // request is one by now), and the source fills it.
        let late = t + FetchConfig::default().block_timeout;
        assert_eq!(want_blocks(&g.tick(late)), vec![(1, cids[0])]);
    }

    #[test]
    fn the_peer_expected_to_deliver_first_is_asked() {
        let cids = shards(3);
        let config = FetchConfig {
            max_in_flight_per_peer: 3,
            max_in_flight_per_peer_total: 3,
            ..FetchConfig::default()
        };
        let mut g = GroupFetch::new(config, cids.clone(), 3);
        let ms = Duration::from_millis;
        // Peer 1 delivers in 40 ms, peer 2 is not yet timed, peer 3 is
        // on a slow uplink.
        g.set_service_times(BTreeMap::from([(1u32, ms(40)), (3, ms(400))]));
        let t = Instant::now();
        // Every peer busy elsewhere while they say what they have, so
        // that the choice is made knowing all three.
        g.set_others(BTreeMap::from([(1, 3), (2, 3), (3, 3)]));
        for peer in [3, 2, 1] {
            let _ = g.add_peer(peer, t);
            for c in &cids {
                assert!(want_blocks(&g.on_presence(&peer, c, true, t)).is_empty());
            }
        }
        g.set_others(BTreeMap::new());
        let asked = want_blocks(&g.reschedule(t));
        // Peer 1 with a block queued (80 ms) beats peer 2's first (100
        // ms, assumed); with two (120 ms) it does not. Peer 3 (400 ms)
        // is never asked while the others will do.
        let to: Vec<u32> = asked.iter().map(|(p, _)| *p).collect();
        assert_eq!(to, vec![1, 1, 2], "{asked:?}");
    }

    #[test]
    fn a_group_without_a_hedge_time_waits_for_its_requests() {
        let cids = shards(4);
        // Room for all four at peer 1, so only the missing hedge keeps
        // the last two unasked.
        let config = FetchConfig {
            max_in_flight_per_peer: 4,
            max_in_flight_per_peer_total: 4,
            hedge_after: None,
            ..FetchConfig::default()
        };
        let mut g = GroupFetch::new(config, cids.clone(), 2);
        let t = Instant::now();
        let _ = g.add_peer(1u32, t);
        for c in &cids {
            let _ = g.on_presence(&1, c, true, t);
        }
        let later = t + Duration::from_secs(1);
        assert!(want_blocks(&g.tick(later)).is_empty());
    }

    #[test]
    fn want_haves_left_unanswered_are_asked_again_after_the_timeout() {
        let cids = shards(3);
        let config = FetchConfig {
            block_timeout: Duration::from_secs(1),
            ..FetchConfig::default()
        };
        let mut g = GroupFetch::new(config, cids.clone(), 1);
        let t = Instant::now();
        assert_eq!(g.add_peer(1u32, t).len(), 3);
        // One answer came; the other two questions were lost on the way.
        let _ = g.on_presence(&1, &cids[0], false, t);
        assert_eq!(g.next_deadline(), Some(t + Duration::from_secs(1)));
        assert!(g.tick(t + Duration::from_millis(500)).is_empty());
        let later = t + Duration::from_secs(1);
        let again = g.tick(later);
        let asked: Vec<Cid> = again
            .iter()
            .filter_map(|a| match a {
                FetchAction::WantHave { peer: 1, cid } => Some(*cid),
                _ => None,
            })
            .collect();
        assert_eq!(asked, cids[1..].to_vec(), "only the unanswered, once");
        // Answered this time: the block is asked for, and nothing is
        // asked again.
        let _ = g.on_presence(&1, &cids[1], false, later);
        let got = want_blocks(&g.on_presence(&1, &cids[2], true, later));
        assert_eq!(got, vec![(1, cids[2])]);
        assert_eq!(g.next_deadline(), Some(later + Duration::from_secs(1)));
        let _ = g.on_block(&cids[2], later);
        assert!(g.is_complete() && g.next_deadline().is_none());
    }

    #[test]
    fn a_departed_peer_is_replaced_and_dont_have_frees_the_slot() {
        let cids = shards(3);
        let mut g = GroupFetch::new(FetchConfig::default(), cids.clone(), 2);
        let t = Instant::now();
        g.add_peer(1u32, t);
        g.add_peer(2u32, t);
        for c in &cids {
            g.on_presence(&1, c, true, t);
        }
        for c in &cids[1..] {
            g.on_presence(&2, c, true, t);
        }
        let moved = want_blocks(&g.on_peer_gone(&1, t));
        assert!(
            !moved.is_empty() && moved.iter().all(|(p, _)| *p == 2),
            "{moved:?}"
        );
        let again = want_blocks(&g.on_presence(&2, &moved[0].1, false, t));
        assert!(again.iter().all(|(_, c)| *c != moved[0].1));
    }

    #[test]
    fn equal_shards_count_once_each_position() {
        // A short segment: three zero-padding shards share one CID.
        let zero = cid_of(Codec::Raw, &[0u8; 64]);
        let a = cid_of(Codec::Raw, b"a");
        let cids = vec![a, zero, zero, zero, cid_of(Codec::Raw, b"p")];
        let mut g = GroupFetch::new(FetchConfig::default(), cids.clone(), 4);
        let t = Instant::now();
        let asks = g.add_peer(1u32, t);
        assert_eq!(asks.len(), 3, "one want-have per distinct CID");
        for c in [a, zero] {
            g.on_presence(&1, &c, true, t);
        }
        let _ = g.on_block(&zero, t);
        let _ = g.on_block(&a, t);
        assert!(g.is_complete());
    }

    #[test]
    fn stuck_when_the_peers_cannot_complete_it() {
        let cids = shards(3);
        let mut g = GroupFetch::new(FetchConfig::default(), cids.clone(), 2);
        let t = Instant::now();
        g.add_peer(1u32, t);
        g.on_presence(&1, &cids[0], true, t);
        assert!(!g.is_stuck());
        g.on_presence(&1, &cids[1], false, t);
        g.on_presence(&1, &cids[2], false, t);
        let _ = g.on_block(&cids[0], t);
        assert!(g.is_stuck());
        // A new peer with the missing shard un-sticks it.
        g.add_peer(2u32, t);
        let got = want_blocks(&g.on_presence(&2, &cids[2], true, t));
        assert_eq!(got, vec![(2, cids[2])]);
    }
}
