//! Fetching an on-demand stream as a machine: the root manifest, then
//! every segment manifest, then, segment by segment, any `k` of its
//! shards, each step a [`GroupFetch`]. The quinn shape: `handle_*` in,
//! [`StreamFetch::poll_action`] out, the time passed in, one
//! [`StreamFetch::poll_timeout`].
//!
//! What it guarantees:
//!
//! - **Nothing held is fetched again**: blocks already in the store (asked
//!   through [`BlockLookup`]) count as received.
//! - **Memory and requests are bounded**: at most [`MANIFEST_WINDOW`]
//!   manifests and [`StreamFetchConfig::segment_window`] segments are in
//!   flight.
//! - **Every manifest is decoded strictly** before its links are followed;
//!   an invalid one ends the fetch with an error naming it.
//! - **A fetch ends once**, with [`StreamFetchAction::Done`]: complete; or
//!   failed after [`StreamFetchConfig::stall_timeout`] without a block; or
//!   failed [`StreamFetchConfig::hopeless_grace`] after every known peer
//!   answered, the DHT had no more providers, and together they cannot
//!   complete some group. A failed fetch cancels what it still wanted.
//! - **Every byte a peer delivered is reported**
//!   ([`StreamFetchAction::Delivered`]), for the receipts the fetching
//!   node signs.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::block::Cid;
use crate::manifest::{SegmentManifest, StreamManifest};

use super::group::{FetchAction, FetchConfig, GroupFetch};

/// Segment manifests fetched at once: they are small, so many may be in
/// flight; 64 keep the request rate modest.
pub const MANIFEST_WINDOW: usize = 64;

/// What a fetch reads of the node's store.
pub trait BlockLookup {
    /// Whether the store holds `cid`.
    fn has(&self, cid: &Cid) -> Result<bool, String>;
    /// The bytes of `cid`, if held.
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, String>;
}

/// Limits and timeouts, each with the reason for its default.
#[derive(Clone, Debug)]
pub struct StreamFetchConfig {
    pub fetch: FetchConfig,
    /// Segments fetched at once. Eight 4 MiB segments in flight keep
    /// several peers busy without holding much memory.
    pub segment_window: usize,
    /// A fetch with no block for this long fails.
    pub stall_timeout: Duration,
    /// A fetch that no known peer can complete, with the DHT search over,
    /// fails after this long: long enough for content being added right
    /// now to arrive, short enough that a wrong CID is reported quickly.
    pub hopeless_grace: Duration,
}

impl Default for StreamFetchConfig {
    fn default() -> Self {
        StreamFetchConfig {
            fetch: FetchConfig::default(),
            segment_window: 8,
            stall_timeout: Duration::from_secs(30),
            hopeless_grace: Duration::from_secs(5),
        }
    }
}

/// What a fetch brings into the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchTarget {
    /// The stream below the root: its manifests and any `k` shards of every
    /// segment. To be pinned and provided when done.
    Stream,
    /// The root block alone (any block, for IPFS peers), to be pinned if
    /// `pin`.
    Block { pin: bool },
    /// Some segments of the stream (their manifests and shards), for a
    /// player: cached, not pinned.
    Segments(Vec<Cid>),
}

/// Why a fetch failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("fetching {root}: the root is not a valid stream manifest: {detail}")]
    InvalidRoot { root: Cid, detail: String },
    #[error("fetching {root}: segment {position} ({cid}) has an invalid manifest: {detail}")]
    InvalidManifest {
        root: Cid,
        position: usize,
        cid: Cid,
        detail: String,
    },
    #[error("fetching {root}: no progress for {} s fetching {what} from {peers} peer(s)", .after.as_secs())]
    Stalled {
        root: Cid,
        after: Duration,
        what: String,
        peers: usize,
    },
    #[error("fetching {root}: no reachable peer ({peers} known) can provide {what}")]
    NoPeer {
        root: Cid,
        what: String,
        peers: usize,
    },
    #[error("fetching {root}: reading the store: {detail}")]
    Store { root: Cid, detail: String },
    #[error("fetching {root}: the node stopped")]
    Stopped { root: Cid },
}

/// What a finished fetch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReport<P> {
    pub root: Cid,
    pub segments: usize,
    /// Blocks and bytes received over the network (not those already held).
    pub blocks_fetched: u64,
    pub bytes_fetched: u64,
    /// Bytes received from each peer, most first.
    pub from_peers: Vec<(P, u64)>,
}

/// What a fetch asks of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamFetchAction<P> {
    /// A Bitswap want-have, want-block or cancel (a cancel only if nothing
    /// else still wants the block).
    Fetch(FetchAction<P>),
    /// `peer` delivered `bytes` into group `group` (a segment or a
    /// manifest level): what the fetching node signs receipts for.
    Delivered { peer: P, group: u64, bytes: u64 },
    /// The fetch ended; nothing more comes from it.
    Done(Result<FetchReport<P>, FetchError>),
}

enum GroupKind {
    /// One block wanted for itself, not as a stream root.
    Single,
    Root,
    Manifest {
        position: usize,
    },
    Shards {
        position: usize,
    },
}

struct Group<P> {
    kind: GroupKind,
    fetch: GroupFetch<P>,
}

impl<P: Clone + Ord> Group<P> {
    /// What the group fetches, for error messages.
    fn describe(&self) -> String {
        match self.kind {
            GroupKind::Single => "the block".to_string(),
            GroupKind::Root => "the root manifest".to_string(),
            GroupKind::Manifest { position } => format!("the manifest of segment {position}"),
            GroupKind::Shards { position } => format!(
                "shards of segment {position} ({} found)",
                self.fetch.received().len()
            ),
        }
    }
}

/// One stream being fetched. See the module documentation.
pub struct StreamFetch<P> {
    root: Cid,
    target: FetchTarget,
    config: StreamFetchConfig,
    candidates: BTreeSet<P>,
    groups: BTreeMap<u64, Group<P>>,
    by_cid: HashMap<Cid, Vec<u64>>,
    next_group: u64,
    /// (position, segment manifest CID) still to fetch.
    manifests: VecDeque<(usize, Cid)>,
    /// (position, segment manifest) whose shards are still to fetch.
    segments: VecDeque<(usize, SegmentManifest)>,
    total_segments: Option<usize>,
    /// The creator the root manifest names.
    creator: Option<alloy_primitives::Address>,
    done_segments: usize,
    last_progress: Instant,
    from_peers: BTreeMap<P, u64>,
    blocks_fetched: u64,
    bytes_fetched: u64,
    /// Whether the DHT search for providers has finished.
    providers_searched: bool,
    /// Since when no known peer could complete the fetch.
    hopeless_since: Option<Instant>,
    finished: bool,
    actions: VecDeque<StreamFetchAction<P>>,
}

impl<P: Clone + Ord> StreamFetch<P> {
    /// A fetch of `target` below `root` (the key its providers are found
    /// under), starting `now` with what `store` holds.
    pub fn new(
        root: Cid,
        target: FetchTarget,
        config: StreamFetchConfig,
        store: &impl BlockLookup,
        now: Instant,
    ) -> Self {
        let mut job = StreamFetch {
            root,
            target: target.clone(),
            config,
            candidates: BTreeSet::new(),
            groups: BTreeMap::new(),
            by_cid: HashMap::new(),
            next_group: 0,
            manifests: VecDeque::new(),
            segments: VecDeque::new(),
            total_segments: None,
            creator: None,
            done_segments: 0,
            last_progress: now,
            from_peers: BTreeMap::new(),
            blocks_fetched: 0,
            bytes_fetched: 0,
            providers_searched: false,
            hopeless_since: None,
            finished: false,
            actions: VecDeque::new(),
        };
        let started = match &target {
            FetchTarget::Block { .. } => job.has(store, &root).map(|held| {
                if held {
                    job.total_segments = Some(0);
                } else {
                    job.add_group(GroupKind::Single, vec![root], 1, now);
                }
            }),
            FetchTarget::Segments(manifests) => {
                job.total_segments = Some(manifests.len());
                job.manifests.extend(manifests.iter().copied().enumerate());
                job.fill(store, now)
            }
            FetchTarget::Stream => match job.has(store, &root) {
                Ok(true) => job.root_arrived(store).and_then(|()| job.fill(store, now)),
                Ok(false) => {
                    job.add_group(GroupKind::Root, vec![root], 1, now);
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        job.review(started, now);
        job
    }

    pub fn root(&self) -> Cid {
        self.root
    }

    /// The address the root manifest names for the stream's creator (none
    /// before the root is read): bound into the content id of the
    /// receipts for this stream.
    pub fn creator(&self) -> Option<alloy_primitives::Address> {
        self.creator
    }

    pub fn target(&self) -> &FetchTarget {
        &self.target
    }

    /// Whether [`StreamFetchAction::Done`] has been issued.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    pub fn poll_action(&mut self) -> Option<StreamFetchAction<P>> {
        self.actions.pop_front()
    }

    /// When [`StreamFetch::handle_timeout`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let stall = self.last_progress + self.config.stall_timeout;
        let hopeless = self.hopeless_since.map(|t| t + self.config.hopeless_grace);
        self.groups
            .values()
            .filter_map(|g| g.fetch.next_deadline())
            .chain([Some(stall), hopeless].into_iter().flatten())
            .min()
    }

    /// Whether a running group still wants `cid`.
    pub fn wants(&self, cid: &Cid) -> bool {
        self.by_cid.get(cid).is_some_and(|ids| {
            ids.iter()
                .any(|id| self.groups.get(id).is_some_and(|g| !g.fetch.is_complete()))
        })
    }

    /// A candidate peer (connected, or a provider found in the DHT).
    pub fn add_candidate(&mut self, peer: P, now: Instant) {
        if self.finished || !self.candidates.insert(peer.clone()) {
            return;
        }
        let mut totals = self.loads();
        let ids: Vec<u64> = self.groups.keys().copied().collect();
        for id in ids {
            self.with_group(id, &mut totals, |g| g.add_peer(peer.clone(), now));
        }
        self.review(Ok(()), now);
    }

    pub fn handle_presence(&mut self, peer: &P, cid: &Cid, have: bool, now: Instant) {
        let mut totals = self.loads();
        for id in self.by_cid.get(cid).cloned().unwrap_or_default() {
            self.with_group(id, &mut totals, |g| g.on_presence(peer, cid, have, now));
        }
        self.review(Ok(()), now);
    }

    /// A block of this fetch is stored (`from`: the peer that sent it, or
    /// `None` for any other path into the store).
    pub fn handle_block(
        &mut self,
        from: Option<&P>,
        cid: &Cid,
        bytes: usize,
        store: &impl BlockLookup,
        now: Instant,
    ) {
        let ids = self.by_cid.get(cid).cloned().unwrap_or_default();
        if ids.is_empty() || self.finished {
            return;
        }
        let mut totals = self.loads();
        if let Some(peer) = from {
            *self.from_peers.entry(peer.clone()).or_default() += bytes as u64;
            self.blocks_fetched += 1;
            self.bytes_fetched += bytes as u64;
            if let Some(&group) = ids.first() {
                self.actions.push_back(StreamFetchAction::Delivered {
                    peer: peer.clone(),
                    group,
                    bytes: bytes as u64,
                });
            }
        }
        self.last_progress = now;
        let mut result = Ok(());
        for id in ids {
            let complete = self
                .with_group(id, &mut totals, |g| g.on_block(cid, now))
                .is_some_and(|g| g.is_complete());
            if !complete {
                continue;
            }
            let Some(group) = self.remove_group(id) else {
                continue;
            };
            let step = match group.kind {
                GroupKind::Single => {
                    self.total_segments = Some(0);
                    Ok(())
                }
                GroupKind::Root => self.root_arrived(store),
                GroupKind::Manifest { position } => self.manifest_arrived(position, cid, store),
                GroupKind::Shards { .. } => {
                    self.done_segments += 1;
                    Ok(())
                }
            };
            if step.is_err() {
                result = step;
                break;
            }
        }
        let result = result.and_then(|()| self.fill(store, now));
        self.review(result, now);
        self.refill(now);
    }

    /// Calls `f` on group `id`, told first what the other groups have
    /// asked of each peer (`totals` counts every group's requests, and is
    /// kept so as the group asks for more), and queues what it asks.
    /// Returns the group, if it is still there.
    fn with_group(
        &mut self,
        id: u64,
        totals: &mut BTreeMap<P, usize>,
        f: impl FnOnce(&mut GroupFetch<P>) -> Vec<FetchAction<P>>,
    ) -> Option<&GroupFetch<P>> {
        let group = self.groups.get_mut(&id)?;
        let mut own: BTreeMap<P, usize> = BTreeMap::new();
        for p in group.fetch.outstanding() {
            *own.entry(p.clone()).or_default() += 1;
        }
        let others: BTreeMap<P, usize> = totals
            .iter()
            .map(|(p, n)| (p.clone(), n - own.get(p).copied().unwrap_or(0).min(*n)))
            .collect();
        group.fetch.set_others(others);
        let actions = f(&mut group.fetch);
        for (p, n) in own {
            if let Some(t) = totals.get_mut(&p) {
                *t = t.saturating_sub(n);
            }
        }
        for p in group.fetch.outstanding() {
            *totals.entry(p.clone()).or_default() += 1;
        }
        self.actions
            .extend(actions.into_iter().map(StreamFetchAction::Fetch));
        Some(&group.fetch)
    }

    /// A peer's request was answered, so it has room: the oldest groups
    /// ask again (each told what the others have asked in the meantime).
    fn refill(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        let max = self.config.fetch.max_in_flight_per_peer_total;
        let mut totals = self.loads();
        let ids: Vec<u64> = self.groups.keys().copied().collect();
        for id in ids {
            // Nobody has room: nothing more to ask of anyone.
            let room = self
                .candidates
                .iter()
                .any(|p| totals.get(p).copied().unwrap_or(0) < max);
            if !room {
                break;
            }
            self.with_group(id, &mut totals, |g| g.reschedule(now));
        }
    }

    /// A peer left or was banned: its requests go to others.
    pub fn handle_peer_gone(&mut self, peer: &P, now: Instant) {
        self.candidates.remove(peer);
        let mut totals = self.loads();
        let ids: Vec<u64> = self.groups.keys().copied().collect();
        for id in ids {
            self.with_group(id, &mut totals, |g| g.on_peer_gone(peer, now));
        }
        self.review(Ok(()), now);
    }

    /// The DHT search for providers has finished: no new candidate will
    /// come from it.
    pub fn handle_providers_searched(&mut self, now: Instant) {
        self.providers_searched = true;
        self.review(Ok(()), now);
    }

    /// Moves timed-out requests; fails a stalled or hopeless fetch.
    pub fn handle_timeout(&mut self, now: Instant) {
        // A stalled fetch ends before its groups ask anything again.
        self.review(Ok(()), now);
        if self.finished {
            return;
        }
        let mut totals = self.loads();
        let ids: Vec<u64> = self.groups.keys().copied().collect();
        for id in ids {
            self.with_group(id, &mut totals, |g| g.tick(now));
        }
        self.review(Ok(()), now);
    }

    /// Gives the fetch up (the node stops): what it still wants is
    /// cancelled.
    pub fn stop(&mut self) {
        let root = self.root;
        self.finish(Err(FetchError::Stopped { root }));
    }

    fn has(&self, store: &impl BlockLookup, cid: &Cid) -> Result<bool, FetchError> {
        store.has(cid).map_err(|detail| FetchError::Store {
            root: self.root,
            detail,
        })
    }

    fn read(&self, store: &impl BlockLookup, cid: &Cid) -> Result<Vec<u8>, FetchError> {
        store
            .get(cid)
            .and_then(|b| b.ok_or_else(|| format!("{cid} left the store")))
            .map_err(|detail| FetchError::Store {
                root: self.root,
                detail,
            })
    }

    /// Requests outstanding per peer, over every group.
    fn loads(&self) -> BTreeMap<P, usize> {
        let mut totals: BTreeMap<P, usize> = BTreeMap::new();
        for p in self.groups.values().flat_map(|g| g.fetch.outstanding()) {
            *totals.entry(p.clone()).or_default() += 1;
        }
        totals
    }

    fn add_group(&mut self, kind: GroupKind, cids: Vec<Cid>, need: usize, now: Instant) -> u64 {
        let id = self.next_group;
        self.next_group += 1;
        let mut fetch = GroupFetch::new(self.config.fetch.clone(), cids.clone(), need);
        fetch.set_others(self.loads());
        for peer in &self.candidates {
            let actions = fetch.add_peer(peer.clone(), now);
            self.actions
                .extend(actions.into_iter().map(StreamFetchAction::Fetch));
        }
        for cid in cids {
            let ids = self.by_cid.entry(cid).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        self.groups.insert(id, Group { kind, fetch });
        id
    }

    fn remove_group(&mut self, id: u64) -> Option<Group<P>> {
        let group = self.groups.remove(&id)?;
        for cid in group.fetch.cids() {
            if let Some(ids) = self.by_cid.get_mut(cid) {
                ids.retain(|g| *g != id);
                if ids.is_empty() {
                    self.by_cid.remove(cid);
                }
            }
        }
        Some(group)
    }

    /// The root manifest is in the store: queue its segment manifests.
    fn root_arrived(&mut self, store: &impl BlockLookup) -> Result<(), FetchError> {
        let bytes = self.read(store, &self.root)?;
        let stream = StreamManifest::from_block(&bytes).map_err(|e| FetchError::InvalidRoot {
            root: self.root,
            detail: e.to_string(),
        })?;
        let links: Vec<Cid> = stream.segment_links().collect();
        self.creator = stream.creator();
        self.total_segments = Some(links.len());
        self.manifests.extend(links.into_iter().enumerate());
        Ok(())
    }

    fn manifest_arrived(
        &mut self,
        position: usize,
        cid: &Cid,
        store: &impl BlockLookup,
    ) -> Result<(), FetchError> {
        let bytes = self.read(store, cid)?;
        let manifest =
            SegmentManifest::from_block(&bytes).map_err(|e| FetchError::InvalidManifest {
                root: self.root,
                position,
                cid: *cid,
                detail: e.to_string(),
            })?;
        self.segments.push_back((position, manifest));
        Ok(())
    }

    /// Starts groups while the windows allow.
    fn fill(&mut self, store: &impl BlockLookup, now: Instant) -> Result<(), FetchError> {
        loop {
            let in_flight = self
                .groups
                .values()
                .filter(|g| matches!(g.kind, GroupKind::Manifest { .. }))
                .count();
            let Some(&(position, cid)) = self.manifests.front() else {
                break;
            };
            if in_flight >= MANIFEST_WINDOW {
                break;
            }
            self.manifests.pop_front();
            if self.has(store, &cid)? {
                self.manifest_arrived(position, &cid, store)?;
            } else {
                self.add_group(GroupKind::Manifest { position }, vec![cid], 1, now);
            }
        }
        loop {
            let in_flight = self
                .groups
                .values()
                .filter(|g| matches!(g.kind, GroupKind::Shards { .. }))
                .count();
            if in_flight >= self.config.segment_window.max(1) {
                break;
            }
            let Some((position, manifest)) = self.segments.pop_front() else {
                break;
            };
            let mut present = Vec::new();
            for c in &manifest.shards {
                if self.has(store, c)? {
                    present.push(*c);
                }
            }
            if present.len() >= usize::from(manifest.k) {
                self.done_segments += 1;
                continue;
            }
            let id = self.add_group(
                GroupKind::Shards { position },
                manifest.shards.clone(),
                usize::from(manifest.k),
                now,
            );
            if let Some(group) = self.groups.get_mut(&id) {
                for cid in present {
                    let actions = group.fetch.on_block(&cid, now);
                    self.actions
                        .extend(actions.into_iter().map(StreamFetchAction::Fetch));
                }
            }
        }
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.total_segments.is_some_and(|t| {
            self.done_segments >= t
                && self.groups.is_empty()
                && self.manifests.is_empty()
                && self.segments.is_empty()
        })
    }

    /// After every input: ends the fetch if it failed, completed, stalled
    /// or is hopeless.
    fn review(&mut self, result: Result<(), FetchError>, now: Instant) {
        if self.finished {
            return;
        }
        if let Err(e) = result {
            return self.finish(Err(e));
        }
        if self.is_complete() {
            let mut from_peers: Vec<(P, u64)> =
                std::mem::take(&mut self.from_peers).into_iter().collect();
            from_peers.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
            let report = FetchReport {
                root: self.root,
                segments: self.total_segments.unwrap_or(0),
                blocks_fetched: self.blocks_fetched,
                bytes_fetched: self.bytes_fetched,
                from_peers,
            };
            return self.finish(Ok(report));
        }
        let peers = self.candidates.len();
        if now.duration_since(self.last_progress) >= self.config.stall_timeout {
            let what = self
                .groups
                .values()
                .map(Group::describe)
                .next()
                .unwrap_or_else(|| "the stream".into());
            let e = FetchError::Stalled {
                root: self.root,
                after: self.config.stall_timeout,
                what,
                peers,
            };
            return self.finish(Err(e));
        }
        let stuck = self
            .groups
            .values()
            .find(|g| g.fetch.is_stuck())
            .filter(|_| self.providers_searched)
            .map(Group::describe);
        let Some(what) = stuck else {
            self.hopeless_since = None;
            return;
        };
        let since = *self.hopeless_since.get_or_insert(now);
        if now.duration_since(since) >= self.config.hopeless_grace {
            let e = FetchError::NoPeer {
                root: self.root,
                what,
                peers,
            };
            self.finish(Err(e));
        }
    }

    fn finish(&mut self, result: Result<FetchReport<P>, FetchError>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if result.is_err() {
            for group in self.groups.values_mut() {
                let actions = group.fetch.cancel();
                self.actions
                    .extend(actions.into_iter().map(StreamFetchAction::Fetch));
            }
        }
        self.groups.clear();
        self.by_cid.clear();
        self.actions.push_back(StreamFetchAction::Done(result));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::block::{self, Codec};
    use crate::manifest::{Rendition, SegmentRef, StreamKind};

    const PEER: u32 = 1;

    /// A store in memory; `blocks` is everything that exists, `held` what
    /// this node has.
    #[derive(Default)]
    struct Store {
        blocks: HashMap<Cid, Vec<u8>>,
        held: BTreeSet<Cid>,
    }

    impl BlockLookup for Store {
        fn has(&self, cid: &Cid) -> Result<bool, String> {
            Ok(self.held.contains(cid))
        }

        fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, String> {
            Ok(self
                .held
                .contains(cid)
                .then(|| self.blocks.get(cid).cloned())
                .flatten())
        }
    }

    /// A stream of two segments of k = 2, m = 1 (everything in `blocks`,
    /// nothing held).
    fn stream() -> (Cid, Store) {
        let mut store = Store::default();
        let mut refs = Vec::new();
        for seq in 0..2u8 {
            let shards: Vec<Vec<u8>> = (0..3u8).map(|i| vec![seq * 10 + i; 64]).collect();
            let cids: Vec<Cid> = shards
                .iter()
                .map(|s| block::cid_of(Codec::Raw, s))
                .collect();
            for (c, s) in cids.iter().zip(shards) {
                store.blocks.insert(*c, s);
            }
            let m = SegmentManifest {
                version: 1,
                index: u64::from(seq),
                length: 128,
                duration_us: Some(2_000_000),
                hash: block::sha256_multihash(&block::sha256(&[seq])).to_bytes(),
                k: 2,
                m: 1,
                shard_size: 64,
                shards: cids,
            };
            let (cid, bytes) = m.to_block();
            store.blocks.insert(cid, bytes);
            refs.push(SegmentRef {
                cid,
                duration_us: Some(2_000_000),
            });
        }
        let root = StreamManifest {
            version: 1,
            creator: Vec::new(),
            kind: StreamKind::HlsVod,
            name: "show".into(),
            media_type: "application/vnd.apple.mpegurl".into(),
            size: 256,
            renditions: vec![Rendition {
                playlist: "index.m3u8".into(),
                bandwidth: None,
                resolution: None,
                codecs: None,
                init: None,
                segment_extension: "ts".into(),
                media_sequence: 0,
                segments: refs,
            }],
        };
        let (cid, bytes) = root.to_block();
        store.blocks.insert(cid, bytes);
        (cid, store)
    }

    fn drain(f: &mut StreamFetch<u32>) -> Vec<StreamFetchAction<u32>> {
        std::iter::from_fn(|| f.poll_action()).collect()
    }

    /// Plays a peer that has everything: every want-block is answered by
    /// storing the block and reporting it. Returns the blocks fetched and
    /// the fetch's end.
    fn serve_everything(
        f: &mut StreamFetch<u32>,
        store: &mut Store,
        now: Instant,
    ) -> (Vec<Cid>, Result<FetchReport<u32>, FetchError>) {
        let mut fetched = Vec::new();
        for _ in 0..100 {
            let mut blocks = Vec::new();
            for a in drain(f) {
                match a {
                    StreamFetchAction::Fetch(FetchAction::WantHave { cid, .. }) => {
                        f.handle_presence(&PEER, &cid, true, now)
                    }
                    StreamFetchAction::Fetch(FetchAction::WantBlock { cid, .. }) => {
                        blocks.push(cid)
                    }
                    StreamFetchAction::Done(result) => return (fetched, result),
                    _ => {}
                }
            }
            for cid in blocks {
                store.held.insert(cid);
                fetched.push(cid);
                let n = store.blocks[&cid].len();
                f.handle_block(Some(&PEER), &cid, n, &*store, now);
            }
        }
        panic!("the fetch never ended");
    }

    #[test]
    fn a_stream_comes_root_first_then_manifests_then_any_k_shards_and_ends_once() {
        let (root, mut store) = stream();
        let t = Instant::now();
        let mut f = StreamFetch::new(
            root,
            FetchTarget::Stream,
            StreamFetchConfig::default(),
            &store,
            t,
        );
        f.add_candidate(PEER, t);
        let (fetched, result) = serve_everything(&mut f, &mut store, t);
        let report = result.unwrap();
        assert_eq!(fetched[0], root);
        // The root, two manifests, and two of three shards of each segment.
        assert_eq!(fetched.len(), 1 + 2 + 2 * 2, "{fetched:?}");
        assert_eq!(report.segments, 2);
        assert_eq!(report.blocks_fetched, 7);
        assert_eq!(report.from_peers, vec![(PEER, report.bytes_fetched)]);
        assert!(f.is_finished());
        assert_eq!(f.poll_timeout(), None);
        assert!(drain(&mut f).is_empty());
    }

    #[test]
    fn what_the_store_holds_is_not_fetched_again() {
        let (root, mut store) = stream();
        store.held = store.blocks.keys().copied().collect();
        let t = Instant::now();
        let mut f = StreamFetch::new(
            root,
            FetchTarget::Stream,
            StreamFetchConfig::default(),
            &store,
            t,
        );
        let actions = drain(&mut f);
        assert!(
            matches!(&actions[..], [StreamFetchAction::Done(Ok(r))] if r.blocks_fetched == 0),
            "{actions:?}"
        );
    }

    #[test]
    fn a_fetch_with_no_progress_fails_after_the_stall_timeout_and_cancels_its_wants() {
        let (root, store) = stream();
        let t = Instant::now();
        let config = StreamFetchConfig::default();
        let stall = config.stall_timeout;
        let again = config.fetch.block_timeout;
        let mut f = StreamFetch::new(root, FetchTarget::Stream, config, &store, t);
        f.add_candidate(PEER, t);
        drain(&mut f);
        // The peer never answers: the question is asked again after each
        // block timeout, until the stall timeout ends the fetch.
        let mut asked_at = Vec::new();
        let mut actions = Vec::new();
        for _ in 0..100 {
            let Some(at) = f.poll_timeout() else { break };
            f.handle_timeout(at);
            actions = drain(&mut f);
            if actions.contains(&StreamFetchAction::Fetch(FetchAction::WantHave {
                peer: PEER,
                cid: root,
            })) {
                asked_at.push(at.duration_since(t));
            }
        }
        let expected: Vec<_> = (1..)
            .map(|n| again * n)
            .take_while(|d| *d < stall)
            .collect();
        assert_eq!(asked_at, expected);
        assert!(actions.contains(&StreamFetchAction::Fetch(FetchAction::Cancel { cid: root })));
        let Some(StreamFetchAction::Done(Err(e))) = actions.last() else {
            panic!("{actions:?}");
        };
        assert!(matches!(e, FetchError::Stalled { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("no progress for 30 s fetching the root manifest"),
            "{e}"
        );
    }

    #[test]
    fn a_fetch_no_known_peer_can_complete_fails_once_the_dht_has_no_more() {
        let (root, store) = stream();
        let t = Instant::now();
        let config = StreamFetchConfig::default();
        let grace = config.hopeless_grace;
        let mut f = StreamFetch::new(root, FetchTarget::Stream, config, &store, t);
        f.add_candidate(PEER, t);
        drain(&mut f);
        f.handle_presence(&PEER, &root, false, t);
        // Stuck, but the DHT may still find someone.
        assert!(drain(&mut f).is_empty());
        f.handle_providers_searched(t);
        assert_eq!(f.poll_timeout(), Some(t + grace));
        f.handle_timeout(t + grace);
        let actions = drain(&mut f);
        let Some(StreamFetchAction::Done(Err(e))) = actions.last() else {
            panic!("{actions:?}");
        };
        assert!(matches!(e, FetchError::NoPeer { peers: 1, .. }), "{e}");
    }

    #[test]
    fn a_root_that_is_not_a_stream_manifest_ends_the_fetch_naming_it() {
        let mut store = Store::default();
        let junk = b"not a manifest".to_vec();
        let root = block::cid_of(Codec::DagCbor, &junk);
        store.blocks.insert(root, junk);
        let t = Instant::now();
        let mut f = StreamFetch::new(
            root,
            FetchTarget::Stream,
            StreamFetchConfig::default(),
            &store,
            t,
        );
        f.add_candidate(PEER, t);
        let (_, result) = serve_everything(&mut f, &mut store, t);
        let e = result.unwrap_err();
        assert!(matches!(e, FetchError::InvalidRoot { .. }), "{e}");
        assert!(e.to_string().contains("not a valid stream manifest"), "{e}");
    }
}
