//! Fetching a whole stream: the root manifest, then every segment manifest,
//! then, segment by segment, any `k` of its shards, each step planned by a
//! `GroupFetch` from `shoal_protocol::fetch`. The event loop feeds a job
//! peers, presences and blocks, and carries out the actions it returns.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use libp2p::PeerId;
use shoal_protocol::block::Cid;
use shoal_protocol::fetch::{FetchAction, FetchConfig, GroupFetch};
use shoal_protocol::manifest::{SegmentManifest, StreamManifest};
use shoal_storage::Blockstore;

use crate::NodeError;

/// Segment manifests fetched at once: they are small, so many may be in
/// flight; 64 keep the request rate modest.
const MANIFEST_WINDOW: usize = 64;

/// What a finished fetch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchReport {
    pub root: Option<Cid>,
    pub segments: usize,
    /// Blocks and bytes received over the network (not those already held).
    pub blocks_fetched: u64,
    pub bytes_fetched: u64,
    /// Bytes received from each peer.
    pub from_peers: Vec<(PeerId, u64)>,
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

struct Group {
    kind: GroupKind,
    fetch: GroupFetch<PeerId>,
}

impl Group {
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

/// One stream being fetched.
pub(crate) struct FetchJob {
    pub(crate) root: Cid,
    config: FetchConfig,
    segment_window: usize,
    candidates: HashSet<PeerId>,
    groups: HashMap<u64, Group>,
    by_cid: HashMap<Cid, Vec<u64>>,
    next_group: u64,
    /// (position, segment manifest CID) still to fetch.
    manifests: VecDeque<(usize, Cid)>,
    /// (position, segment manifest) whose shards are still to fetch.
    segments: VecDeque<(usize, SegmentManifest)>,
    total_segments: Option<usize>,
    done_segments: usize,
    last_progress: Instant,
    from_peers: HashMap<PeerId, u64>,
    blocks_fetched: u64,
    bytes_fetched: u64,
    failure: Option<NodeError>,
    /// Whether the DHT search for providers has finished.
    providers_searched: bool,
    /// Since when no known peer could complete the fetch.
    hopeless_since: Option<Instant>,
}

pub(crate) type Actions = Vec<FetchAction<PeerId>>;

/// What a fetch brings into the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The stream below the root: its manifests and any `k` shards of every
    /// segment. Pinned and provided when done.
    Stream,
    /// The root block alone (any block, for IPFS peers), pinned if `pin`.
    Block { pin: bool },
    /// Some segments of the stream (their manifests and shards), for a
    /// player: cached, not pinned.
    Segments(Vec<Cid>),
}

impl FetchJob {
    /// A fetch of `target` below `root` (the key its providers are found
    /// under).
    pub(crate) fn new(
        root: Cid,
        target: &Target,
        config: FetchConfig,
        segment_window: usize,
        store: &Blockstore,
        now: Instant,
    ) -> Result<(FetchJob, Actions), NodeError> {
        let mut job = FetchJob {
            root,
            config,
            segment_window: segment_window.max(1),
            candidates: HashSet::new(),
            groups: HashMap::new(),
            by_cid: HashMap::new(),
            next_group: 0,
            manifests: VecDeque::new(),
            segments: VecDeque::new(),
            total_segments: None,
            done_segments: 0,
            last_progress: now,
            from_peers: HashMap::new(),
            blocks_fetched: 0,
            bytes_fetched: 0,
            failure: None,
            providers_searched: false,
            hopeless_since: None,
        };
        let mut actions = Vec::new();
        match target {
            Target::Block { .. } => {
                if store.has(&root)? {
                    job.total_segments = Some(0);
                } else {
                    job.add_group(GroupKind::Single, vec![root], 1, now, &mut actions);
                }
            }
            Target::Segments(manifests) => {
                job.total_segments = Some(manifests.len());
                job.manifests.extend(manifests.iter().copied().enumerate());
                job.fill(store, now, &mut actions)?;
            }
            Target::Stream => {
                if store.has(&root)? {
                    job.root_arrived(store)?;
                    job.fill(store, now, &mut actions)?;
                } else {
                    job.add_group(GroupKind::Root, vec![root], 1, now, &mut actions);
                }
            }
        }
        Ok((job, actions))
    }

    fn add_group(
        &mut self,
        kind: GroupKind,
        cids: Vec<Cid>,
        need: usize,
        now: Instant,
        actions: &mut Actions,
    ) -> u64 {
        let id = self.next_group;
        self.next_group += 1;
        let mut fetch = GroupFetch::new(self.config.clone(), cids.clone(), need);
        for peer in &self.candidates {
            actions.extend(fetch.add_peer(*peer, now));
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

    fn remove_group(&mut self, id: u64) -> Option<Group> {
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
    fn root_arrived(&mut self, store: &Blockstore) -> Result<(), NodeError> {
        let bytes = store.require(&self.root)?;
        let stream = StreamManifest::from_block(&bytes).map_err(|e| NodeError::Fetch {
            root: self.root,
            detail: format!("the root is not a valid stream manifest: {e}"),
        })?;
        let links: Vec<Cid> = stream.segment_links().collect();
        self.total_segments = Some(links.len());
        self.manifests.extend(links.into_iter().enumerate());
        Ok(())
    }

    /// Starts groups while the windows allow.
    fn fill(
        &mut self,
        store: &Blockstore,
        now: Instant,
        actions: &mut Actions,
    ) -> Result<(), NodeError> {
        loop {
            let manifests_in_flight = self
                .groups
                .values()
                .filter(|g| matches!(g.kind, GroupKind::Manifest { .. }))
                .count();
            let Some(&(position, cid)) = self.manifests.front() else {
                break;
            };
            if manifests_in_flight >= MANIFEST_WINDOW {
                break;
            }
            self.manifests.pop_front();
            if store.has(&cid)? {
                self.manifest_arrived(position, &cid, store)?;
            } else {
                self.add_group(GroupKind::Manifest { position }, vec![cid], 1, now, actions);
            }
        }
        loop {
            let shards_in_flight = self
                .groups
                .values()
                .filter(|g| matches!(g.kind, GroupKind::Shards { .. }))
                .count();
            if shards_in_flight >= self.segment_window {
                break;
            }
            let Some((position, manifest)) = self.segments.pop_front() else {
                break;
            };
            let present: Vec<Cid> = manifest
                .shards
                .iter()
                .filter(|c| store.has(c).unwrap_or(false))
                .copied()
                .collect();
            if present.len() >= usize::from(manifest.k) {
                self.done_segments += 1;
                continue;
            }
            let id = self.add_group(
                GroupKind::Shards { position },
                manifest.shards.clone(),
                usize::from(manifest.k),
                now,
                actions,
            );
            if let Some(group) = self.groups.get_mut(&id) {
                for cid in present {
                    actions.extend(group.fetch.on_block(&cid, now));
                }
            }
        }
        Ok(())
    }

    fn manifest_arrived(
        &mut self,
        position: usize,
        cid: &Cid,
        store: &Blockstore,
    ) -> Result<(), NodeError> {
        let bytes = store.require(cid)?;
        let manifest = SegmentManifest::from_block(&bytes).map_err(|e| NodeError::Fetch {
            root: self.root,
            detail: format!("segment {position} ({cid}) has an invalid manifest: {e}"),
        })?;
        self.segments.push_back((position, manifest));
        Ok(())
    }

    pub(crate) fn add_candidate(&mut self, peer: PeerId, now: Instant) -> Actions {
        let mut actions = Vec::new();
        if self.candidates.insert(peer) {
            for group in self.groups.values_mut() {
                actions.extend(group.fetch.add_peer(peer, now));
            }
        }
        actions
    }

    pub(crate) fn on_presence(
        &mut self,
        peer: &PeerId,
        cid: &Cid,
        have: bool,
        now: Instant,
    ) -> Actions {
        let mut actions = Vec::new();
        for id in self.by_cid.get(cid).cloned().unwrap_or_default() {
            if let Some(group) = self.groups.get_mut(&id) {
                actions.extend(group.fetch.on_presence(peer, cid, have, now));
            }
        }
        actions
    }

    /// A block of this job arrived and is stored.
    /// The group (segment or manifest fetch) a wanted block belongs to.
    pub(crate) fn group_of(&self, cid: &Cid) -> Option<u64> {
        self.by_cid.get(cid).and_then(|ids| ids.first().copied())
    }

    pub(crate) fn on_block(
        &mut self,
        peer: Option<PeerId>,
        cid: &Cid,
        bytes: usize,
        store: &Blockstore,
        now: Instant,
    ) -> Result<Actions, NodeError> {
        let mut actions = Vec::new();
        let ids = self.by_cid.get(cid).cloned().unwrap_or_default();
        if ids.is_empty() {
            return Ok(actions);
        }
        if let Some(peer) = peer {
            *self.from_peers.entry(peer).or_default() += bytes as u64;
            self.blocks_fetched += 1;
            self.bytes_fetched += bytes as u64;
        }
        self.last_progress = now;
        for id in ids {
            let complete = match self.groups.get_mut(&id) {
                Some(group) => {
                    actions.extend(group.fetch.on_block(cid, now));
                    group.fetch.is_complete()
                }
                None => false,
            };
            if !complete {
                continue;
            }
            let Some(group) = self.remove_group(id) else {
                continue;
            };
            match group.kind {
                GroupKind::Single => self.total_segments = Some(0),
                GroupKind::Root => self.root_arrived(store)?,
                GroupKind::Manifest { position } => self.manifest_arrived(position, cid, store)?,
                GroupKind::Shards { .. } => self.done_segments += 1,
            }
        }
        self.fill(store, now, &mut actions)?;
        Ok(actions)
    }

    pub(crate) fn on_peer_gone(&mut self, peer: &PeerId, now: Instant) -> Actions {
        self.candidates.remove(peer);
        let mut actions = Vec::new();
        for group in self.groups.values_mut() {
            actions.extend(group.fetch.on_peer_gone(peer, now));
        }
        actions
    }

    pub(crate) fn tick(&mut self, now: Instant) -> Actions {
        let mut actions = Vec::new();
        for group in self.groups.values_mut() {
            actions.extend(group.fetch.tick(now));
        }
        actions
    }

    /// Whether a running group still wants `cid`.
    pub(crate) fn wants(&self, cid: &Cid) -> bool {
        self.by_cid.get(cid).is_some_and(|ids| {
            ids.iter()
                .any(|id| self.groups.get(id).is_some_and(|g| !g.fetch.is_complete()))
        })
    }

    /// Marks the job failed (the first failure is kept).
    pub(crate) fn fail(&mut self, error: NodeError) {
        self.failure.get_or_insert(error);
    }

    pub(crate) fn take_failure(&mut self) -> Option<NodeError> {
        self.failure.take()
    }

    pub(crate) fn is_done(&self) -> bool {
        self.total_segments.is_some_and(|t| {
            self.done_segments >= t
                && self.groups.is_empty()
                && self.manifests.is_empty()
                && self.segments.is_empty()
        })
    }

    /// The DHT search for providers has finished: no new candidate will
    /// come from it.
    pub(crate) fn providers_searched(&mut self) {
        self.providers_searched = true;
    }

    /// The error to fail with when, for `grace`, every known peer has
    /// answered and together they cannot complete some group, and the DHT
    /// has no more providers to offer.
    pub(crate) fn hopeless(
        &mut self,
        now: Instant,
        grace: std::time::Duration,
    ) -> Option<NodeError> {
        let stuck = self
            .groups
            .values()
            .find(|g| g.fetch.is_stuck())
            .filter(|_| self.providers_searched);
        let Some(stuck) = stuck else {
            self.hopeless_since = None;
            return None;
        };
        let since = *self.hopeless_since.get_or_insert(now);
        if now.duration_since(since) < grace {
            return None;
        }
        let what = stuck.describe();
        Some(NodeError::Fetch {
            root: self.root,
            detail: format!(
                "no reachable peer ({} known) can provide {what}",
                self.candidates.len()
            ),
        })
    }

    /// The error to fail with when nothing has arrived for `timeout`.
    pub(crate) fn stalled(&self, now: Instant, timeout: std::time::Duration) -> Option<NodeError> {
        if now.duration_since(self.last_progress) < timeout {
            return None;
        }
        let what = self
            .groups
            .values()
            .map(Group::describe)
            .next()
            .unwrap_or_else(|| "the stream".into());
        Some(NodeError::Fetch {
            root: self.root,
            detail: format!(
                "no progress for {} s fetching {what} from {} peer(s)",
                timeout.as_secs(),
                self.candidates.len()
            ),
        })
    }

    /// Cancels everything still wanted.
    pub(crate) fn cancel(&mut self) -> Actions {
        let mut actions = Vec::new();
        for group in self.groups.values_mut() {
            actions.extend(group.fetch.cancel());
        }
        actions
    }

    pub(crate) fn report(&self) -> FetchReport {
        let mut from_peers: Vec<(PeerId, u64)> =
            self.from_peers.iter().map(|(p, b)| (*p, *b)).collect();
        from_peers.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
        FetchReport {
            root: Some(self.root),
            segments: self.total_segments.unwrap_or(0),
            blocks_fetched: self.blocks_fetched,
            bytes_fetched: self.bytes_fetched,
            from_peers,
        }
    }
}
