//! One watched live channel as a machine: the quinn shape, `handle_*` in,
//! [`LiveSession::poll_action`] out, the time passed in, one
//! [`LiveSession::poll_timeout`].
//!
//! What it guarantees:
//!
//! - **An announcement is judged before anything is done with it**: its
//!   signature against the channel (never a key named inside it), its
//!   rendition against the topic it came on, and its publisher's peer id,
//!   then the planner's rules (future-dated, replayed or rewound). The
//!   verdict is for gossipsub: a rejected message is not forwarded and
//!   costs its sender score; one signed by the channel but not newer than
//!   what the node has is dropped without cost to anyone when its
//!   publisher put it into gossip (gossip brings older messages late in
//!   the ordinary course), and rejected when another peer did (a replay).
//! - **The segment's source is the publisher the channel signed for**, not
//!   whoever relayed the message first.
//! - **Every block asked for is asked through [`SessionAction::Fetch`]**,
//!   and every byte a peer delivered into a segment is reported
//!   ([`SessionAction::Delivered`]) for the receipts the viewer signs.
//! - **A late segment's missing data shards are asked of every origin the
//!   channel has** ([`SessionAction::FetchRange`] with the record's
//!   origins and, proxying, the playlist the user gave), and a request with
//!   nowhere to go fails at once, so the planner tries again later.
//! - **A segment leaves with its blocks**: [`SessionAction::Release`]
//!   always names the shards to delete.
//! - **Discovery is bounded**: the record and other viewers are looked up
//!   at the start and every [`LIVE_DISCOVERY_INTERVAL`] (while no peer of
//!   the channel is known, after [`FIRST_DISCOVERY_RETRY`] and twice as
//!   long each time up to it); a channel that is live without a known
//!   record, or with one that does not describe an announced rendition
//!   (an fMP4 rendition without its initialisation section), is looked
//!   up again at most every [`RECORD_RETRY`].
//!
//! The session does not know the network or the store: `P` is the peer
//! identifier, and the caller opens nothing, stores what it is asked to,
//! and reports the results back.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::block::Cid;
use crate::channel::{
    Announcement, ChannelId, ChannelRecord, LiveRendition, MAX_LIVE_RENDITIONS, MAX_ORIGINS,
};
use crate::fetch::FetchAction;

use super::planner::{
    HttpRequest, Listed, LiveAction, LiveConfig, LivePlanner, LiveStats, MissedSegment,
    ProxiedSegment, Verdict, WindowSegment,
};

/// How often a watching node looks for more viewers of the channel and for
/// a newer channel record: often enough to replace viewers that left
/// within a few segments, rarely enough that a DHT lookup per channel costs
/// little.
pub const LIVE_DISCOVERY_INTERVAL: Duration = Duration::from_secs(15);

/// A session that knows no peer of the channel looks again this soon, then
/// twice as long each time up to [`LIVE_DISCOVERY_INTERVAL`]: a viewer that
/// starts with the others (none has announced itself yet), or one that
/// cannot reach the broadcaster, finds its peers within seconds.
pub const FIRST_DISCOVERY_RETRY: Duration = Duration::from_secs(1);

/// Keys a channel's viewers are spread over in the DHT, besides the
/// channel's own. A DHT node keeps the 20 providers of a key closest to
/// it, so under one key every newcomer would find, and dial, the same 20
/// viewers, which fill up at their connection limit (`shoal-sim swarm
/// --home`, 1000 viewers: 20,863 dials refused, 406 viewers never
/// started). Each viewer also provides under one bucket, drawn from its
/// rotation, and each lookup asks the channel's key and one bucket: small
/// audiences are found whole under the channel's key, large ones at 20
/// random viewers per bucket.
pub const PROVIDER_BUCKETS: u16 = 64;

/// A session dials providers it finds only while it knows fewer peers of
/// the channel than this: enough for a gossip mesh (6 to 12) and a choice
/// of Bitswap peers, without every lookup adding connections until the
/// node's limit.
pub const LIVE_TARGET_PEERS: usize = 32;

/// How often a session without a channel record looks for one while
/// announcements arrive (the record names the origins and renditions).
pub const RECORD_RETRY: Duration = Duration::from_secs(2);

/// A session nobody has looked at (playlist, stats) for this long ends: a
/// player polls its live playlist every target duration.
pub const LIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// What a session asks of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionAction<P> {
    /// A Bitswap want-have, want-block or cancel. A cancel is for the
    /// caller to carry out only if nothing else still wants the block.
    Fetch(FetchAction<P>),
    /// Subscribe to a rendition's topic ([`ChannelId::topic`]).
    Subscribe { rendition: u16 },
    /// Announce in the DHT that this node serves the channel: a provider
    /// record under [`ChannelId::record_key`] (`bucket` `None`) or under
    /// one of its [`PROVIDER_BUCKETS`] keys ([`ChannelId::bucket_key`]).
    Provide { bucket: Option<u16> },
    /// Look the channel record up in the DHT; report it with
    /// [`LiveSession::handle_record`].
    FindRecord,
    /// Look other viewers up in the DHT (providers of the record key, or
    /// of one of its buckets); the connected ones come back through
    /// [`LiveSession::handle_peer`].
    FindProviders { bucket: Option<u16> },
    /// Store a segment manifest that came inline with an accepted
    /// announcement (so the segment can be checked and served).
    StoreManifest { cid: Cid, bytes: Vec<u8> },
    /// Fetch bytes of a segment from the first of `urls` that delivers,
    /// verify every shard against the manifest, store them and report
    /// with [`LiveSession::handle_range`].
    FetchRange {
        request: HttpRequest,
        urls: Vec<String>,
    },
    /// Proxying: read the media playlists; report with
    /// [`LiveSession::handle_playlists`].
    ReadPlaylists(PlaylistSources),
    /// Proxying: fetch a segment whole from `url`, code and store it;
    /// report with [`LiveSession::handle_proxied`].
    FetchSegment { segment: ProxySegment, url: String },
    /// Rebuild a segment and check its hash; report with
    /// [`LiveSession::handle_checked`]. If `from_http`, once checked,
    /// make and store the parity it lacks.
    Check {
        rendition: u16,
        sequence: u64,
        manifest: Cid,
        from_http: bool,
    },
    /// Delete these blocks (unless pinned): the segment left the window
    /// or was given up.
    Release { manifest: Cid, shards: Vec<Cid> },
    /// `peer` delivered `bytes` into segment `segment` (rendition,
    /// sequence): what the viewer signs receipts for.
    Delivered {
        peer: P,
        segment: (u16, u64),
        bytes: u64,
    },
    /// Something an app would show.
    Event(LiveEvent),
}

/// A segment a proxying session takes from an origin's playlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySegment {
    pub rendition: u16,
    pub sequence: u64,
    /// Relative to the rendition's media playlist.
    pub uri: String,
    pub duration_us: u64,
}

/// What happened to a session, as an app would show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveEvent {
    /// A segment is complete and checked: the player can have it.
    SegmentReady {
        rendition: u16,
        sequence: u64,
        /// After its deadline: a player at the live edge stalled.
        late: bool,
    },
    /// A segment was given up: the player will skip or stall.
    SegmentMissed(MissedSegment),
    /// Nothing is announced: segments come from an origin's playlist
    /// (`true`), or peers announce the channel again (`false`).
    Proxying(bool),
}

/// Where a proxying session reads playlists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaylistSources {
    /// For each rendition, its media playlist at each of the record's
    /// origins.
    Renditions(Vec<Vec<String>>),
    /// Top playlists (master or media) the user gave.
    Top(Vec<String>),
}

/// One rendition's media playlist as an origin lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginMedia {
    pub rendition: u16,
    /// Where it was read (segment URIs are relative to it).
    pub url: String,
    pub media_sequence: u64,
    /// `(uri, duration in µs)` from `media_sequence` on.
    pub segments: Vec<(String, u64)>,
}

/// What a proxying session read from an origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginPlaylists {
    pub media: Vec<OriginMedia>,
    /// The renditions of the origin's master playlist, when it was a
    /// master playlist the user gave.
    pub renditions: Option<Vec<LiveRendition>>,
}

/// One rendition as a gateway shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenditionView {
    pub info: LiveRendition,
    /// Complete segments held (served to peers and to players by URI).
    pub window: Vec<WindowSegment>,
    /// What a player is shown ([`LivePlanner::playlist`]).
    pub playlist: Vec<Listed>,
}

/// What a watching node holds of a channel now.
#[derive(Clone, Debug)]
pub struct LiveView {
    pub channel: ChannelId,
    pub name: Option<String>,
    pub target_duration_us: u64,
    pub renditions: Vec<RenditionView>,
    pub stats: LiveStats,
    /// Peers of the channel this node knows (candidates for its shards).
    pub peers: usize,
    pub origins: Vec<String>,
    /// Nothing announced for a deadline: segments come straight from an
    /// origin's playlist (a plain HLS proxy).
    pub proxying: bool,
}

/// `relative` (a plain relative path, see
/// [`crate::channel::is_safe_relative_path`]) resolved against the
/// http(s) URL `base`: the base's path up to its last `/`, without query
/// or fragment, then `relative`. `None` if `base` is not an http(s) URL.
pub fn join_relative(base: &str, relative: &str) -> Option<String> {
    let scheme_end = base.find("://")? + 3;
    let scheme = &base[..scheme_end];
    if scheme != "http://" && scheme != "https://" {
        return None;
    }
    let rest = &base[scheme_end..];
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let dir = match rest.find('/') {
        Some(path_start) => &rest[..=path_start + rest[path_start..].rfind('/')?],
        None => return Some(format!("{scheme}{rest}/{relative}")),
    };
    Some(format!("{scheme}{dir}{relative}"))
}

/// One watched channel. See the module documentation.
pub struct LiveSession<P> {
    channel: ChannelId,
    planner: LivePlanner<P>,
    record: Option<ChannelRecord>,
    subscribed: BTreeSet<u16>,
    candidates: BTreeSet<P>,
    /// Playlist URLs the user gave (master or media), for when the record
    /// is not found or names no origin.
    origins: Vec<String>,
    /// Proxying: each rendition's media playlist, as last read.
    playlists: BTreeMap<u16, String>,
    /// Proxying without a record: the origin master playlist's renditions.
    proxy_renditions: Vec<LiveRendition>,
    last_access: Instant,
    next_discovery: Instant,
    /// The wait before the next lookup while no peer is known.
    discovery_backoff: Duration,
    /// No record yet: the earliest time to look for one again.
    next_record_query: Instant,
    /// The proxying state last reported.
    proxying: bool,
    /// Turns a publisher's peer id bytes into `P`.
    publisher_of: fn(&[u8]) -> Option<P>,
    /// Differs between viewers: picks the bucket this node provides under.
    rotation: usize,
    /// Bucket lookups made so far.
    lookups: usize,
    actions: VecDeque<SessionAction<P>>,
}

impl<P: Clone + Ord + Hash> LiveSession<P> {
    /// Starts watching `channel` at `now`: subscribes to rendition 0 (the
    /// record names the others), provides the channel, looks up its record
    /// and viewers. `rotation` should differ between viewers (a hash of
    /// the peer id); `origins` are playlist URLs of the user's, checked
    /// with [`crate::channel::check_origin`]; `publisher_of` reads a
    /// publisher's peer id.
    pub fn new(
        channel: ChannelId,
        config: LiveConfig,
        rotation: usize,
        origins: Vec<String>,
        publisher_of: fn(&[u8]) -> Option<P>,
        now: Instant,
    ) -> Self {
        let planner = LivePlanner::new(config, rotation, !origins.is_empty(), now);
        let mut s = LiveSession {
            channel,
            planner,
            record: None,
            subscribed: BTreeSet::new(),
            candidates: BTreeSet::new(),
            origins,
            playlists: BTreeMap::new(),
            proxy_renditions: Vec::new(),
            last_access: now,
            next_discovery: now,
            discovery_backoff: FIRST_DISCOVERY_RETRY,
            next_record_query: now,
            proxying: false,
            publisher_of,
            rotation,
            lookups: 0,
            actions: VecDeque::new(),
        };
        s.subscribe(0);
        s.actions.push_back(SessionAction::Provide { bucket: None });
        s.actions.push_back(SessionAction::Provide {
            bucket: Some(s.own_bucket()),
        });
        s.discover(now);
        s
    }

    /// The bucket this node provides the channel under, drawn from its
    /// rotation (mixed, so that it says nothing of the planner's use of
    /// the rotation).
    pub fn own_bucket(&self) -> u16 {
        let mixed = (self.rotation as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48;
        (mixed % u64::from(PROVIDER_BUCKETS)) as u16
    }

    /// Whether the session would take more peers: it knows fewer than
    /// [`LIVE_TARGET_PEERS`] of the channel.
    pub fn wants_peers(&self) -> usize {
        LIVE_TARGET_PEERS.saturating_sub(self.candidates.len())
    }

    /// The address the channel's record names for its creator (none
    /// before the record is found): bound into the content id of the
    /// receipts for this channel.
    pub fn creator(&self) -> Option<alloy_primitives::Address> {
        self.record.as_ref().and_then(ChannelRecord::creator)
    }

    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// The renditions whose topics are subscribed.
    pub fn renditions_subscribed(&self) -> impl Iterator<Item = u16> + '_ {
        self.subscribed.iter().copied()
    }

    /// The user asks again: the session is looked at, and `origins` are
    /// added (up to [`MAX_ORIGINS`]).
    pub fn watch_again(&mut self, origins: Vec<String>, now: Instant) {
        self.last_access = now;
        for o in origins {
            if !self.origins.contains(&o) && self.origins.len() < MAX_ORIGINS {
                self.origins.push(o);
            }
        }
        let http = self.has_origins();
        self.planner.set_http(http);
    }

    /// What the session asks next, if anything.
    pub fn poll_action(&mut self) -> Option<SessionAction<P>> {
        self.actions.pop_front()
    }

    /// When [`LiveSession::handle_timeout`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.planner.next_timeout(),
            Some(self.next_discovery),
            Some(self.last_access + LIVE_IDLE_TIMEOUT),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether nobody has looked at the session for
    /// [`LIVE_IDLE_TIMEOUT`]: the caller should end it.
    pub fn is_idle(&self, now: Instant) -> bool {
        now.duration_since(self.last_access) >= LIVE_IDLE_TIMEOUT
    }

    /// Whether `cid` is a block of a complete segment the session holds
    /// (what it serves other viewers).
    pub fn serves(&self, cid: &Cid) -> bool {
        self.planner.serves(cid)
    }

    /// Bytes of this channel's segments went to a peer.
    pub fn note_uploaded(&mut self, bytes: u64) {
        self.planner.note_uploaded(bytes);
    }

    /// Whether the session still waits for `cid`.
    pub fn wants(&self, cid: &Cid) -> bool {
        self.planner.wants(cid)
    }

    /// Adds to `held` every block this session still needs (its window,
    /// and the segments it fetches or checks).
    pub fn holds(&self, held: &mut std::collections::BTreeSet<Cid>) {
        self.planner.holds(held);
    }

    /// Whether `cid` is one of the blocks [`LiveSession::holds`] names.
    pub fn has_block(&self, cid: &Cid) -> bool {
        self.planner.has_block(cid)
    }

    /// Changes how many complete segments each rendition keeps.
    pub fn set_window(&mut self, window: usize, now: Instant) {
        let actions = self.planner.set_window(window);
        self.run(actions, now);
    }

    /// A gossiped message on rendition `rendition`'s topic, put into
    /// gossip by `author`. `now_ms` is the wall clock in Unix
    /// milliseconds.
    pub fn handle_announcement(
        &mut self,
        rendition: u16,
        data: &[u8],
        author: Option<&P>,
        now: Instant,
        now_ms: u64,
    ) -> Verdict {
        let a = match Announcement::open(&self.channel, data) {
            Ok(a) => a,
            Err(e) => {
                self.planner.note_rejected();
                return Verdict::Reject(format!("bad announcement: {e}"));
            }
        };
        if a.rendition != rendition {
            self.planner.note_rejected();
            return Verdict::Reject(format!(
                "rendition {} announced on rendition {rendition}'s topic",
                a.rendition
            ));
        }
        let Some(publisher) = (self.publisher_of)(&a.publisher) else {
            self.planner.note_rejected();
            return Verdict::Reject("the publisher is not a peer id".into());
        };
        let (verdict, actions) = self.planner.offer(&a, Some(publisher.clone()), now, now_ms);
        match verdict {
            // Late by its own publisher's message: gossip's ordinary
            // course. Put into gossip again by someone else: a replay.
            Verdict::Stale(why) if author != Some(&publisher) => {
                self.planner.note_rejected();
                return Verdict::Reject(format!("{why}, gossiped by a peer not its publisher"));
            }
            Verdict::Reject(_) | Verdict::Stale(_) => return verdict,
            Verdict::Accept => {}
        }
        self.actions.push_back(SessionAction::StoreManifest {
            cid: a.manifest_cid,
            bytes: a.manifest_bytes,
        });
        // Live, but its record (origins, renditions) is not known yet, or
        // the one known does not describe this rendition (its fMP4
        // initialisation section stored after that record was): look
        // again, at most every RECORD_RETRY.
        let described = self.record.as_ref().is_some_and(|record| {
            record
                .renditions
                .get(usize::from(a.rendition))
                .is_some_and(|r| r.init.is_some() || r.segment_extension != "m4s")
        });
        if !described && now >= self.next_record_query {
            self.next_record_query = now + RECORD_RETRY;
            self.actions.push_back(SessionAction::FindRecord);
        }
        self.handle_peer(publisher, now);
        self.run(actions, now);
        verdict
    }

    /// An announcement this node published (it broadcasts the channel it
    /// watches): its segment is in the store, so it is only checked and
    /// listed. Refused quietly if it does not open under the channel.
    pub fn handle_local_announcement(&mut self, data: &[u8], now: Instant, now_ms: u64) {
        let Ok(a) = Announcement::open(&self.channel, data) else {
            return;
        };
        let actions = self.planner.offer_local(&a, now, now_ms);
        self.run(actions, now);
    }

    /// A peer that can serve the channel's shards: subscribed to one of
    /// its topics, found in the DHT and connected, or its publisher.
    pub fn handle_peer(&mut self, peer: P, now: Instant) {
        if !self.candidates.insert(peer.clone()) {
            return;
        }
        let actions = self.planner.add_peer(peer, now);
        self.run(actions, now);
    }

    /// A peer left (or was banned): its requests move to others.
    pub fn handle_peer_gone(&mut self, peer: &P, now: Instant) {
        self.candidates.remove(peer);
        let actions = self.planner.peer_gone(peer, now);
        self.run(actions, now);
    }

    /// A peer said whether it has a block.
    pub fn handle_presence(&mut self, peer: &P, cid: &Cid, have: bool, now: Instant) {
        let actions = self.planner.on_presence(peer, cid, have, now);
        self.run(actions, now);
    }

    /// A verified block is stored, from `from` (`None`: an HTTP origin).
    pub fn handle_block(&mut self, cid: &Cid, bytes: &[u8], from: Option<&P>, now: Instant) {
        if let (Some(peer), Some(segment)) = (from, self.planner.segment_of(cid)) {
            self.actions.push_back(SessionAction::Delivered {
                peer: peer.clone(),
                segment,
                bytes: bytes.len() as u64,
            });
        }
        let actions = self.planner.on_block(cid, bytes, from, now);
        self.run(actions, now);
    }

    /// The channel record, found in the DHT (already opened under this
    /// channel's key): a newer one replaces what is known.
    pub fn handle_record(&mut self, record: ChannelRecord, now: Instant) {
        if self
            .record
            .as_ref()
            .is_some_and(|old| old.sequence >= record.sequence)
        {
            return;
        }
        let mut actions = Vec::new();
        for (r, rendition) in record.renditions.iter().enumerate() {
            let ext = rendition.segment_extension.clone();
            actions.extend(self.planner.seed(
                r as u16,
                &rendition.recent,
                |seq| format!("{seq}.{ext}"),
                now,
            ));
        }
        let renditions = record.renditions.len();
        if record.renditions.iter().any(|r| r.part_target_us.is_some()) {
            self.planner.note_parts();
        }
        self.record = Some(record);
        let http = self.has_origins();
        self.planner.set_http(http);
        for r in 1..renditions {
            self.subscribe(r as u16);
        }
        self.run(actions, now);
    }

    /// A [`SessionAction::FetchRange`] ended: `Ok` with the verified shards
    /// (already stored), or why not.
    pub fn handle_range(
        &mut self,
        request: &HttpRequest,
        result: Result<&[(Cid, Vec<u8>)], String>,
        now: Instant,
    ) {
        let mut actions = Vec::new();
        let ok = result.is_ok();
        if let Ok(shards) = result {
            for (cid, data) in shards {
                actions.extend(self.planner.on_block(cid, data, None, now));
            }
        }
        self.planner
            .http_done(request.rendition, request.sequence, ok, now);
        self.run(actions, now);
    }

    /// A [`SessionAction::Check`] ended: `ok` if the segment rebuilt and
    /// matched its hash.
    pub fn handle_checked(
        &mut self,
        rendition: u16,
        sequence: u64,
        ok: bool,
        now: Instant,
        now_ms: u64,
    ) {
        let before = self.ready_counts();
        let actions = self
            .planner
            .segment_checked(rendition, sequence, ok, now, now_ms);
        self.report_ready(before, rendition, sequence);
        self.run(actions, now);
    }

    /// A [`SessionAction::ReadPlaylists`] ended.
    pub fn handle_playlists(&mut self, result: Result<OriginPlaylists, String>, now: Instant) {
        let mut actions = Vec::new();
        let mut renditions = 0;
        let ok = result.is_ok();
        if let Ok(found) = result {
            for m in &found.media {
                self.playlists.insert(m.rendition, m.url.clone());
                actions.extend(self.planner.on_playlist(
                    m.rendition,
                    m.media_sequence,
                    &m.segments,
                    now,
                ));
                renditions = renditions.max(usize::from(m.rendition) + 1);
            }
            if let Some(info) = found.renditions {
                self.proxy_renditions = info;
            }
        }
        self.planner.playlists_read(ok, now);
        // Peers may come back on any rendition's topic.
        for r in 1..renditions.min(MAX_LIVE_RENDITIONS) {
            self.subscribe(r as u16);
        }
        self.run(actions, now);
    }

    /// A [`SessionAction::FetchSegment`] ended: stored as `stored`, or not.
    pub fn handle_proxied(
        &mut self,
        segment: &ProxySegment,
        stored: Option<ProxiedSegment>,
        now: Instant,
        now_ms: u64,
    ) {
        let before = self.ready_counts();
        let actions = self.planner.proxied(
            segment.rendition,
            segment.sequence,
            &segment.uri,
            segment.duration_us,
            stored,
            now,
            now_ms,
        );
        self.report_ready(before, segment.rendition, segment.sequence);
        self.run(actions, now);
    }

    /// Segments complete and segments late so far.
    fn ready_counts(&self) -> (u64, u64) {
        let s = self.planner.stats();
        (s.segments, s.late)
    }

    /// A segment entered the window since `before`: the app hears of it.
    fn report_ready(&mut self, (segments, late): (u64, u64), rendition: u16, sequence: u64) {
        let s = self.planner.stats();
        if s.segments > segments {
            self.actions
                .push_back(SessionAction::Event(LiveEvent::SegmentReady {
                    rendition,
                    sequence,
                    late: s.late > late,
                }));
        }
    }

    /// Timers: block requests, the source's spare, HTTP fill-in,
    /// proxying, discovery. Call it when [`LiveSession::poll_timeout`] has
    /// come.
    pub fn handle_timeout(&mut self, now: Instant) {
        let actions = self.planner.handle_timeout(now);
        self.run(actions, now);
        if now >= self.next_discovery {
            self.discover(now);
        }
    }

    /// Ends the session: what it still asks for is cancelled.
    pub fn stop(&mut self, now: Instant) {
        let actions = self.planner.stop();
        self.run(actions, now);
    }

    /// What a gateway shows; the session counts as looked at.
    pub fn view(&mut self, now: Instant) -> LiveView {
        self.last_access = now;
        let record = self.record.as_ref();
        let known = record.map_or(&self.proxy_renditions, |r| &r.renditions);
        let count = self.planner.rendition_count().max(known.len()).max(1);
        let renditions = (0..count)
            .map(|r| {
                let window: Vec<WindowSegment> = self.planner.window(r as u16).cloned().collect();
                let info = known.get(r).cloned().unwrap_or_else(|| LiveRendition {
                    playlist: format!("{r}.m3u8"),
                    segment_extension: window
                        .last()
                        .and_then(|w| w.uri.rsplit_once('.').map(|(_, e)| e.to_owned()))
                        .unwrap_or_else(|| "ts".into()),
                    ..LiveRendition::default()
                });
                let playlist = self.planner.playlist(r as u16);
                RenditionView {
                    info,
                    window,
                    playlist,
                }
            })
            .collect();
        LiveView {
            channel: self.channel,
            name: record.map(|r| r.name.clone()),
            target_duration_us: record.map_or(0, |r| r.target_duration_us),
            renditions,
            stats: self.planner.stats().clone(),
            peers: self.candidates.len(),
            origins: record
                .into_iter()
                .flat_map(|r| r.origins.iter().map(|o| o.0.clone()))
                .chain(self.origins.iter().cloned())
                .collect(),
            proxying: self.planner.proxying(now),
        }
    }

    /// The session's counters.
    pub fn stats(&self) -> &LiveStats {
        self.planner.stats()
    }

    fn subscribe(&mut self, rendition: u16) {
        if self.subscribed.insert(rendition) {
            self.actions
                .push_back(SessionAction::Subscribe { rendition });
        }
    }

    fn discover(&mut self, now: Instant) {
        self.actions.push_back(SessionAction::FindRecord);
        self.actions
            .push_back(SessionAction::FindProviders { bucket: None });
        // Each lookup a different bucket (37 is prime to their number, so
        // every bucket comes round), starting past this node's own.
        let bucket = (usize::from(self.own_bucket()) + 1 + self.lookups * 37)
            % usize::from(PROVIDER_BUCKETS);
        self.lookups += 1;
        self.actions.push_back(SessionAction::FindProviders {
            bucket: Some(bucket as u16),
        });
        let wait = if self.candidates.is_empty() {
            let wait = self.discovery_backoff;
            self.discovery_backoff = (wait * 2).min(LIVE_DISCOVERY_INTERVAL);
            wait
        } else {
            self.discovery_backoff = FIRST_DISCOVERY_RETRY;
            LIVE_DISCOVERY_INTERVAL
        };
        self.next_discovery = now + wait;
    }

    /// Whether the channel has any HTTP origin.
    fn has_origins(&self) -> bool {
        !self.origins.is_empty() || self.record.as_ref().is_some_and(|r| !r.origins.is_empty())
    }

    /// Where to read each rendition's media playlist: the record's origins
    /// (each serving the broadcaster's folder), else the user's.
    fn playlist_sources(&self) -> PlaylistSources {
        if let Some(record) = self.record.as_ref().filter(|r| !r.origins.is_empty()) {
            let renditions = record
                .renditions
                .iter()
                .map(|r| {
                    record
                        .origins
                        .iter()
                        .map(|o| format!("{}/{}", o.0.trim_end_matches('/'), r.playlist))
                        .collect()
                })
                .collect();
            return PlaylistSources::Renditions(renditions);
        }
        PlaylistSources::Top(self.origins.clone())
    }

    /// Where an origin serves a segment of `rendition` named `uri`: under
    /// each of the record's origins (the broadcaster's folder), and next
    /// to the rendition's playlist as last read from an origin.
    fn segment_urls(&self, rendition: u16, uri: &str) -> Vec<String> {
        let mut urls = Vec::new();
        if let Some(record) = &self.record
            && let Some(r) = record.renditions.get(usize::from(rendition))
        {
            let dir = match r.playlist.rfind('/') {
                Some(i) => &r.playlist[..=i],
                None => "",
            };
            urls.extend(
                record
                    .origins
                    .iter()
                    .map(|o| format!("{}/{dir}{uri}", o.0.trim_end_matches('/'))),
            );
        }
        if let Some(url) = self
            .playlists
            .get(&rendition)
            .and_then(|p| join_relative(p, uri))
        {
            urls.push(url);
        }
        urls
    }

    /// Turns the planner's actions into the session's, and reports what an
    /// app would show.
    fn run(&mut self, actions: Vec<LiveAction<P>>, now: Instant) {
        let mut work: VecDeque<LiveAction<P>> = actions.into();
        while let Some(action) = work.pop_front() {
            match action {
                LiveAction::Fetch(f) => self.actions.push_back(SessionAction::Fetch(f)),
                LiveAction::Http(request) => {
                    let urls = self.segment_urls(request.rendition, &request.uri);
                    if urls.is_empty() {
                        // Nowhere to ask yet: the planner tries again later.
                        self.planner
                            .http_done(request.rendition, request.sequence, false, now);
                    } else {
                        self.actions
                            .push_back(SessionAction::FetchRange { request, urls });
                    }
                }
                LiveAction::Check {
                    rendition,
                    sequence,
                    manifest,
                    from_http,
                } => self.actions.push_back(SessionAction::Check {
                    rendition,
                    sequence,
                    manifest,
                    from_http,
                }),
                LiveAction::Release { manifest, shards } => self
                    .actions
                    .push_back(SessionAction::Release { manifest, shards }),
                LiveAction::ReadPlaylists => {
                    let sources = self.playlist_sources();
                    self.actions
                        .push_back(SessionAction::ReadPlaylists(sources));
                }
                LiveAction::Proxy {
                    rendition,
                    sequence,
                    uri,
                    duration_us,
                } => {
                    let url = self
                        .playlists
                        .get(&rendition)
                        .and_then(|p| join_relative(p, &uri));
                    match url {
                        Some(url) => self.actions.push_back(SessionAction::FetchSegment {
                            segment: ProxySegment {
                                rendition,
                                sequence,
                                uri,
                                duration_us,
                            },
                            url,
                        }),
                        // No playlist to find it next to: it is asked for
                        // again while the playlist lists it.
                        None => work.extend(self.planner.proxied(
                            rendition,
                            sequence,
                            &uri,
                            duration_us,
                            None,
                            now,
                            0,
                        )),
                    }
                }
            }
        }
        for missed in self.planner.take_missed() {
            self.actions
                .push_back(SessionAction::Event(LiveEvent::SegmentMissed(missed)));
        }
        let proxying = self.planner.proxying(now);
        if proxying != self.proxying {
            self.proxying = proxying;
            self.actions
                .push_back(SessionAction::Event(LiveEvent::Proxying(proxying)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{CHANNEL_VERSION, ChannelKey, Origin};

    const K: u16 = 2;
    const M: u16 = 1;
    const SIZE: usize = 64;
    /// The publisher's peer id in these tests.
    const SOURCE: u32 = 9;

    fn key() -> ChannelKey {
        ChannelKey::from_seed(&[5; 32])
    }

    fn publisher_of(bytes: &[u8]) -> Option<u32> {
        (bytes == b"source").then_some(SOURCE)
    }

    /// A segment's shards and its announcement, signed by `key`.
    fn segment(key: &ChannelKey, seq: u64) -> (Vec<(Cid, Vec<u8>)>, Vec<u8>) {
        super::super::testing::segment(key, seq, K, M, SIZE, b"source")
    }

    fn session(now: Instant) -> LiveSession<u32> {
        LiveSession::new(
            key().id(),
            LiveConfig::default(),
            0,
            Vec::new(),
            publisher_of,
            now,
        )
    }

    fn drain(s: &mut LiveSession<u32>) -> Vec<SessionAction<u32>> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    fn record(origins: &[&str]) -> ChannelRecord {
        ChannelRecord {
            version: CHANNEL_VERSION,
            channel: key().id().as_bytes().to_vec(),
            name: "news".into(),
            sequence: 1,
            expires_ms: u64::MAX,
            target_duration_us: 2_000_000,
            creator: Vec::new(),
            renditions: vec![LiveRendition {
                playlist: "hd/index.m3u8".into(),
                segment_extension: "ts".into(),
                ..LiveRendition::default()
            }],
            origins: origins.iter().map(|o| Origin((*o).into())).collect(),
        }
    }

    #[test]
    fn a_session_that_knows_no_peer_looks_again_sooner() {
        let t = Instant::now();
        let mut s = session(t);
        drain(&mut s);
        let lookups = |s: &mut LiveSession<u32>| {
            drain(s)
                .into_iter()
                .filter(|a| *a == SessionAction::FindProviders { bucket: None })
                .count()
        };
        // Nobody known: after 1, then 2, then 4 seconds...
        let mut at = t;
        for wait in [1, 2, 4] {
            at += Duration::from_secs(wait);
            s.handle_timeout(at - Duration::from_millis(1));
            assert_eq!(lookups(&mut s), 0, "before {wait} s");
            s.handle_timeout(at);
            assert_eq!(lookups(&mut s), 1, "after {wait} s");
        }
        // ...and once a peer of the channel is known, every 15 s.
        s.handle_peer(SOURCE, at);
        drain(&mut s);
        at += Duration::from_secs(8);
        s.handle_timeout(at);
        assert_eq!(lookups(&mut s), 1, "the wait then was 8 s");
        s.handle_timeout(at + LIVE_DISCOVERY_INTERVAL - Duration::from_millis(1));
        assert_eq!(lookups(&mut s), 0);
        s.handle_timeout(at + LIVE_DISCOVERY_INTERVAL);
        assert_eq!(lookups(&mut s), 1);
    }

    #[test]
    fn a_session_wants_peers_until_it_knows_its_target_and_looks_up_every_bucket_in_turn() {
        let t = Instant::now();
        let mut s = session(t);
        assert_eq!(s.wants_peers(), LIVE_TARGET_PEERS);
        for p in 0..LIVE_TARGET_PEERS as u32 {
            s.handle_peer(1000 + p, t);
        }
        assert_eq!(s.wants_peers(), 0);
        let mut buckets = BTreeSet::new();
        let mut at = t;
        for _ in 0..PROVIDER_BUCKETS {
            drain(&mut s);
            at += LIVE_DISCOVERY_INTERVAL;
            s.handle_timeout(at);
            for a in drain(&mut s) {
                if let SessionAction::FindProviders { bucket: Some(b) } = a {
                    buckets.insert(b);
                }
            }
        }
        assert_eq!(buckets.len(), usize::from(PROVIDER_BUCKETS));
    }

    #[test]
    fn a_watch_subscribes_provides_and_looks_up_the_record_and_the_viewers() {
        let mut s = session(Instant::now());
        assert_eq!(
            drain(&mut s),
            vec![
                SessionAction::Subscribe { rendition: 0 },
                SessionAction::Provide { bucket: None },
                SessionAction::Provide { bucket: Some(0) },
                SessionAction::FindRecord,
                SessionAction::FindProviders { bucket: None },
                SessionAction::FindProviders { bucket: Some(1) },
            ]
        );
    }

    #[test]
    fn a_forged_or_misrouted_announcement_is_rejected_and_asks_for_nothing() {
        let t = Instant::now();
        let mut s = session(t);
        drain(&mut s);
        let (_, forged) = segment(&ChannelKey::from_seed(&[6; 32]), 1);
        assert!(matches!(
            s.handle_announcement(0, &forged, None, t, 1_000_000),
            Verdict::Reject(_)
        ));
        let (_, real) = segment(&key(), 1);
        assert!(matches!(
            s.handle_announcement(1, &real, None, t, 1_000_000),
            Verdict::Reject(_)
        ));
        assert!(matches!(
            s.handle_announcement(0, &[0xA5; 100], None, t, 1_000_000),
            Verdict::Reject(_)
        ));
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.stats().rejected, 3);
    }

    #[test]
    fn an_accepted_announcement_stores_its_manifest_and_asks_the_publisher_at_once() {
        let t = Instant::now();
        let mut s = session(t);
        drain(&mut s);
        let (shards, data) = segment(&key(), 1);
        assert_eq!(
            s.handle_announcement(0, &data, Some(&SOURCE), t, 1_000_000),
            Verdict::Accept
        );
        let actions = drain(&mut s);
        assert!(matches!(actions[0], SessionAction::StoreManifest { .. }));
        // No record yet: it is looked up again.
        assert_eq!(actions[1], SessionAction::FindRecord);
        // The publisher holds every shard: asked for blocks, not presences,
        // two at a time, from this viewer's rotation (0) plus the sequence.
        let asked: Vec<&FetchAction<u32>> = actions
            .iter()
            .filter_map(|a| match a {
                SessionAction::Fetch(f) => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(
            asked,
            vec![
                &FetchAction::WantBlock {
                    peer: SOURCE,
                    cid: shards[1].0
                },
                &FetchAction::WantBlock {
                    peer: SOURCE,
                    cid: shards[2].0
                },
            ]
        );
        // The same announcement again from its publisher (gossip's late
        // copies): dropped, unpunished. Put into gossip again by another
        // peer: a replay, rejected.
        assert!(matches!(
            s.handle_announcement(0, &data, Some(&SOURCE), t, 1_000_000),
            Verdict::Stale(_)
        ));
        assert!(matches!(
            s.handle_announcement(0, &data, Some(&(SOURCE + 1)), t, 1_000_000),
            Verdict::Reject(_)
        ));
    }

    #[test]
    fn what_peers_deliver_is_reported_and_a_complete_segment_is_checked_then_ready() {
        let t = Instant::now();
        let mut s = session(t);
        let (shards, data) = segment(&key(), 1);
        s.handle_announcement(0, &data, Some(&SOURCE), t, 1_000_000);
        drain(&mut s);
        for (cid, bytes) in &shards[..usize::from(K)] {
            s.handle_block(cid, bytes, Some(&SOURCE), t);
        }
        let actions = drain(&mut s);
        assert!(actions.contains(&SessionAction::Delivered {
            peer: SOURCE,
            segment: (0, 1),
            bytes: SIZE as u64
        }));
        let check = actions
            .iter()
            .find(|a| matches!(a, SessionAction::Check { .. }))
            .cloned();
        assert!(
            matches!(
                check,
                Some(SessionAction::Check {
                    rendition: 0,
                    sequence: 1,
                    from_http: false,
                    ..
                })
            ),
            "{actions:?}"
        );
        s.handle_checked(0, 1, true, t, 1_000_050);
        assert_eq!(
            drain(&mut s),
            vec![SessionAction::Event(LiveEvent::SegmentReady {
                rendition: 0,
                sequence: 1,
                late: false
            })]
        );
        assert_eq!(s.view(t).renditions[0].window.len(), 1);
    }

    #[test]
    fn a_late_segment_asks_every_origin_of_the_record_for_its_missing_data() {
        let t = Instant::now();
        let mut s = session(t);
        s.handle_record(
            record(&["https://cdn.example/live/", "http://b.example"]),
            t,
        );
        let (_, data) = segment(&key(), 1);
        s.handle_announcement(0, &data, Some(&SOURCE), t, 1_000_000);
        drain(&mut s);
        // Nothing arrives; the P2P time runs out.
        let due = s.poll_timeout().expect("a timer");
        let budget = LiveConfig::default().p2p_budget;
        let mut at = due;
        while at < t + budget {
            s.handle_timeout(at);
            drain(&mut s);
            at = s.poll_timeout().expect("a timer");
        }
        s.handle_timeout(at);
        let range = drain(&mut s)
            .into_iter()
            .find_map(|a| match a {
                SessionAction::FetchRange { request, urls } => Some((request, urls)),
                _ => None,
            })
            .expect("an origin is asked");
        assert_eq!(
            range.1,
            vec![
                "https://cdn.example/live/hd/seg1.ts".to_string(),
                "http://b.example/hd/seg1.ts".to_string()
            ]
        );
        assert_eq!((range.0.start, range.0.end), (0, 2 * SIZE as u64));
    }

    #[test]
    fn timers_never_ask_for_a_time_already_handled() {
        let t = Instant::now();
        let mut s = session(t);
        s.handle_record(record(&["https://cdn.example/live"]), t);
        let (_, data) = segment(&key(), 1);
        s.handle_announcement(0, &data, Some(&SOURCE), t, 1_000_000);
        let mut now = t;
        // A session whose shards never come wakes for each request's
        // hedge time and timeout until it goes idle: a few hundred times.
        for _ in 0..1000 {
            drain(&mut s);
            let Some(next) = s.poll_timeout() else { break };
            assert!(next > now || now == t, "asked for {next:?} at {now:?}");
            now = next.max(now);
            s.handle_timeout(now);
            if s.is_idle(now) {
                return;
            }
        }
        panic!("the session was never idle");
    }

    #[test]
    fn a_session_nobody_looks_at_goes_idle() {
        let t = Instant::now();
        let mut s = session(t);
        assert!(!s.is_idle(t + LIVE_IDLE_TIMEOUT / 2));
        s.view(t + LIVE_IDLE_TIMEOUT / 2);
        assert!(!s.is_idle(t + LIVE_IDLE_TIMEOUT));
        assert!(s.is_idle(t + LIVE_IDLE_TIMEOUT / 2 + LIVE_IDLE_TIMEOUT));
    }

    #[test]
    fn a_segment_uri_is_resolved_next_to_its_playlist() {
        let cases = [
            (
                "http://a.example/live/index.m3u8",
                "s1.ts",
                "http://a.example/live/s1.ts",
            ),
            (
                "https://a.example/x/y.m3u8?token=1#f",
                "hd/s1.ts",
                "https://a.example/x/hd/s1.ts",
            ),
            ("http://a.example", "s1.ts", "http://a.example/s1.ts"),
            ("http://a.example/", "s1.ts", "http://a.example/s1.ts"),
        ];
        for (base, rel, want) in cases {
            assert_eq!(join_relative(base, rel).as_deref(), Some(want), "{base}");
        }
        assert_eq!(join_relative("ftp://a.example/x.m3u8", "s.ts"), None);
    }
}
