//! Live channels in the event loop: watching (gossip announcements checked
//! and scored, segments planned by `shoal_protocol::live`, HTTP fill-in),
//! publishing, and the channel records kept in the DHT.
//!
//! A watched channel is a [`LiveSession`]: the channel's record, the
//! topics subscribed, and a [`LivePlanner`]. Announcements are opened
//! (signature first) and offered to the planner, whose verdict is reported
//! to gossipsub: a rejected message is not forwarded and costs its sender
//! score. The planner's actions become Bitswap wants, HTTP range requests
//! (run as tasks; every shard they return is verified against its CID
//! before it is stored), segment checks (run on the blocking pool) and
//! releases of segments that left the window.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, TopicHash};
use libp2p::kad::{self, store::RecordStore};
use shoal_protocol::block::{self, Block, Cid, Codec};
use shoal_protocol::channel::{
    Announcement, ChannelId, ChannelRecord, LiveRendition, MAX_LIVE_RENDITIONS, MAX_ORIGINS,
    MAX_RECORD_BYTES, MAX_URL, is_safe_relative_path,
};
use shoal_protocol::live::{
    HttpRequest, LiveAction, LiveConfig, LivePlanner, LiveStats, Verdict, WindowSegment,
    shards_from_range,
};
use shoal_protocol::manifest::SegmentManifest;
use shoal_storage::Blockstore;
use shoal_storage::hls::{self, MediaPlaylist, Playlist};
use tokio::sync::{mpsc, oneshot};

use crate::NodeError;
use crate::event_loop::{EventLoop, StoreSource};

/// How often a watching node looks for more viewers of the channel and for
/// a newer channel record.
const LIVE_DISCOVERY_INTERVAL: Duration = Duration::from_secs(15);

/// Channels watched at once: each costs subscriptions, DHT lookups and a
/// window of segments, and the gateway starts a session for any channel a
/// client names.
pub const MAX_SESSIONS: usize = 32;

/// How often a session without a channel record looks for one while
/// announcements arrive.
const RECORD_RETRY: Duration = Duration::from_secs(2);

/// A session nobody has looked at (playlist, stats) for this long ends: a
/// player polls its live playlist every target duration.
pub const LIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest segment an HTTP origin may send (matches the importer's
/// limit for HLS segments).
const MAX_HTTP_BYTES: u64 = shoal_storage::import::MAX_HLS_SEGMENT_BYTES;

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Score parameters for a channel's topics. Announcements come one per
/// segment (every few seconds), too rarely for gossipsub's mesh-delivery
/// penalties (P3, P3b) to tell a slow peer from a silent one, so those are
/// off; an invalid message (P4) costs 100 × count², which puts its sender
/// under the graylist threshold at the first offence.
pub(crate) fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 50.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.9,
        ..gossipsub::TopicScoreParams::default()
    }
}

/// Peer score parameters. Peers on the loopback interface are not counted
/// as colocated: they are processes of this machine (a test swarm, a
/// player's local node), not a Sybil farm behind one address.
pub(crate) fn peer_score_params() -> gossipsub::PeerScoreParams {
    let mut p = gossipsub::PeerScoreParams::default();
    p.ip_colocation_factor_whitelist
        .insert(std::net::Ipv4Addr::LOCALHOST.into());
    p.ip_colocation_factor_whitelist
        .insert(std::net::Ipv6Addr::LOCALHOST.into());
    p
}

/// One rendition as a gateway shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenditionView {
    pub info: LiveRendition,
    pub window: Vec<WindowSegment>,
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

/// Results of work done off the event loop.
pub(crate) enum LiveEvent {
    Http {
        channel: ChannelId,
        request: HttpRequest,
        result: Result<Vec<(Cid, Vec<u8>)>, String>,
    },
    Checked {
        channel: ChannelId,
        rendition: u16,
        sequence: u64,
        ok: bool,
    },
    /// The origin's media playlists, for proxying.
    Playlists {
        channel: ChannelId,
        result: Result<OriginPlaylists, String>,
    },
    /// A segment fetched whole from an origin and stored (manifest,
    /// length), for proxying.
    Proxied {
        channel: ChannelId,
        rendition: u16,
        sequence: u64,
        uri: String,
        duration_us: u64,
        stored: Option<(Cid, u64)>,
    },
}

/// What a proxying session read from an origin.
pub(crate) struct OriginPlaylists {
    /// Per rendition: where its media playlist is, and what it lists.
    media: Vec<(u16, reqwest::Url, MediaPlaylist)>,
    /// The renditions of the origin's master playlist, when the session
    /// knows no channel record.
    renditions: Option<Vec<LiveRendition>>,
}

pub(crate) struct LiveSession {
    planner: LivePlanner<PeerId>,
    record: Option<ChannelRecord>,
    topics: Vec<TopicHash>,
    candidates: HashSet<PeerId>,
    last_access: Instant,
    next_discovery: Instant,
    /// No record yet: the earliest time to look for one again.
    next_record_query: Instant,
    /// Playlist URLs the user gave for the channel (master or media), for
    /// when the record is not found or names no origin.
    origins: Vec<reqwest::Url>,
    /// Proxying: each rendition's media playlist, as last read.
    playlists: HashMap<u16, reqwest::Url>,
    /// Proxying without a record: the origin master playlist's renditions.
    proxy_renditions: Vec<LiveRendition>,
}

impl LiveSession {
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
                        .filter_map(|o| {
                            reqwest::Url::parse(&format!(
                                "{}/{}",
                                o.0.trim_end_matches('/'),
                                r.playlist
                            ))
                            .ok()
                        })
                        .collect()
                })
                .collect();
            return PlaylistSources::Renditions(renditions);
        }
        PlaylistSources::Top(self.origins.clone())
    }
}

/// Where a proxying session reads playlists.
enum PlaylistSources {
    /// For each rendition, its media playlist at each origin.
    Renditions(Vec<Vec<reqwest::Url>>),
    /// Top playlists (master or media) given by the user.
    Top(Vec<reqwest::Url>),
}

/// Checks the playlist URLs a user gives for a channel.
pub fn parse_origins(origins: &[String]) -> Result<Vec<reqwest::Url>, NodeError> {
    if origins.len() > MAX_ORIGINS {
        return Err(NodeError::InvalidInput(format!(
            "{} origins; at most {MAX_ORIGINS}",
            origins.len()
        )));
    }
    origins
        .iter()
        .map(|o| {
            let url = reqwest::Url::parse(o)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && o.len() <= MAX_URL)
                .ok_or_else(|| {
                    NodeError::InvalidInput(format!(
                        "invalid origin {o:?}: give the http:// or https:// URL of the channel's playlist"
                    ))
                })?;
            Ok(url)
        })
        .collect()
}

/// The live state of the event loop.
pub(crate) struct Live {
    pub(crate) config: LiveConfig,
    pub(crate) sessions: HashMap<ChannelId, LiveSession>,
    topics: HashMap<TopicHash, (ChannelId, u16)>,
    record_queries: HashMap<kad::QueryId, ChannelId>,
    provider_queries: HashMap<kad::QueryId, ChannelId>,
    /// DHT puts of channel records under way.
    puts: HashSet<kad::QueryId>,
    pub(crate) events_tx: mpsc::UnboundedSender<LiveEvent>,
    pub(crate) events_rx: mpsc::UnboundedReceiver<LiveEvent>,
    http: reqwest::Client,
    /// Dial at most this many viewers found in the DHT per lookup.
    max_dials: usize,
    /// Shards of segments this node published, rationed in the Bitswap
    /// engine until the instant beside them, oldest first.
    rationed: VecDeque<(Instant, Vec<Cid>)>,
}

impl Live {
    pub(crate) fn new(config: LiveConfig, max_dials: usize) -> Live {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let http = reqwest::Client::builder()
            .timeout(config.origin_timeout)
            .build()
            .unwrap_or_default();
        Live {
            config,
            sessions: HashMap::new(),
            topics: HashMap::new(),
            record_queries: HashMap::new(),
            provider_queries: HashMap::new(),
            puts: HashSet::new(),
            events_tx,
            events_rx,
            http,
            max_dials,
            rationed: VecDeque::new(),
        }
    }

    /// Changes a session's live cache; returns the releases.
    pub(crate) fn set_window(
        &mut self,
        channel: &ChannelId,
        window: usize,
    ) -> Vec<LiveAction<PeerId>> {
        self.sessions
            .get_mut(channel)
            .map(|s| s.planner.set_window(window))
            .unwrap_or_default()
    }

    /// Whether any session still waits for `cid`.
    pub(crate) fn wants(&self, cid: &Cid) -> bool {
        self.sessions.values().any(|s| s.planner.wants(cid))
    }
}

/// A rotation for this node's shard order: viewers start at different
/// shards of each segment.
fn rotation_of(peer: &PeerId) -> usize {
    let bytes = peer.to_bytes();
    let digest = block::sha256(&bytes);
    usize::from(digest[0]) | (usize::from(digest[1]) << 8)
}

impl EventLoop {
    /// Starts watching `channel` (or keeps watching it); `origins` are
    /// playlist URLs to proxy when no peer announces the channel.
    pub(crate) fn watch(
        &mut self,
        channel: ChannelId,
        origins: Vec<reqwest::Url>,
    ) -> Result<(), NodeError> {
        let now = Instant::now();
        if let Some(s) = self.live.sessions.get_mut(&channel) {
            s.last_access = now;
            for o in origins {
                if !s.origins.contains(&o) && s.origins.len() < MAX_ORIGINS {
                    s.origins.push(o);
                }
            }
            let http = s.has_origins();
            s.planner.set_http(http);
            return Ok(());
        }
        if self.live.sessions.len() >= MAX_SESSIONS {
            return Err(NodeError::Busy(format!(
                "already watching {MAX_SESSIONS} channels; stop one first"
            )));
        }
        let rotation = rotation_of(self.swarm.local_peer_id());
        let planner =
            LivePlanner::new(self.live.config.clone(), rotation, !origins.is_empty(), now);
        self.live.sessions.insert(
            channel,
            LiveSession {
                planner,
                record: None,
                topics: Vec::new(),
                candidates: HashSet::new(),
                last_access: now,
                next_discovery: now,
                next_record_query: now,
                origins,
                playlists: HashMap::new(),
                proxy_renditions: Vec::new(),
            },
        );
        // Rendition 0 always exists; the record names the others.
        self.subscribe(channel, 0);
        let key = kad::RecordKey::new(&channel.record_key());
        if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
            tracing::debug!(%channel, error = %e, "cannot provide the channel");
        }
        self.discover(channel);
        tracing::info!(%channel, "watching");
        Ok(())
    }

    pub(crate) fn unwatch(&mut self, channel: &ChannelId) {
        let Some(session) = self.live.sessions.remove(channel) else {
            return;
        };
        for topic in &session.topics {
            self.live.topics.remove(topic);
            let t = IdentTopic::new(topic.to_string());
            self.swarm.behaviour_mut().gossipsub.unsubscribe(&t);
        }
        let key = kad::RecordKey::new(&channel.record_key());
        self.swarm.behaviour_mut().kad.stop_providing(&key);
        tracing::info!(%channel, "stopped watching");
    }

    fn subscribe(&mut self, channel: ChannelId, rendition: u16) {
        let topic = IdentTopic::new(channel.topic(rendition));
        let hash = topic.hash();
        if self.live.topics.contains_key(&hash) {
            return;
        }
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        if let Err(e) = gossipsub.set_topic_params(topic.clone(), topic_score_params()) {
            tracing::warn!(%channel, error = e, "cannot score the channel's topic");
        }
        if let Err(e) = gossipsub.subscribe(&topic) {
            tracing::warn!(%channel, error = %e, "cannot subscribe to the channel");
            return;
        }
        self.live.topics.insert(hash.clone(), (channel, rendition));
        // Peers already subscribed are candidates from the start.
        let known: Vec<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&hash))
            .map(|(p, _)| *p)
            .collect();
        if let Some(s) = self.live.sessions.get_mut(&channel) {
            s.topics.push(hash);
        }
        for peer in known {
            self.live_candidate(channel, peer);
        }
    }

    /// Looks up the channel's record and other viewers in the DHT.
    fn discover(&mut self, channel: ChannelId) {
        let key = kad::RecordKey::new(&channel.record_key());
        let kad = &mut self.swarm.behaviour_mut().kad;
        let q = kad.get_record(key.clone());
        self.live.record_queries.insert(q, channel);
        let q = kad.get_providers(key);
        self.live.provider_queries.insert(q, channel);
        if let Some(s) = self.live.sessions.get_mut(&channel) {
            s.next_discovery = Instant::now() + LIVE_DISCOVERY_INTERVAL;
        }
    }

    /// A peer that can serve the channel's shards.
    pub(crate) fn live_candidate(&mut self, channel: ChannelId, peer: PeerId) {
        if peer == *self.swarm.local_peer_id() || self.banned.contains_key(&peer) {
            return;
        }
        let Some(s) = self.live.sessions.get_mut(&channel) else {
            return;
        };
        if !s.candidates.insert(peer) {
            return;
        }
        let actions = s.planner.add_peer(peer, Instant::now());
        self.run_live_actions(channel, actions);
    }

    /// A peer subscribed to a topic.
    pub(crate) fn on_gossip_subscribed(&mut self, peer: PeerId, topic: &TopicHash) {
        if let Some((channel, _)) = self.live.topics.get(topic).copied() {
            self.live_candidate(channel, peer);
        }
    }

    /// A gossiped message: an announcement on a watched channel, checked
    /// and reported back to gossipsub.
    pub(crate) fn on_gossip_message(
        &mut self,
        propagation_source: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let acceptance = self.judge(&message);
        if let MessageAcceptance::Reject = acceptance {
            tracing::warn!(
                peer = %propagation_source,
                topic = %message.topic,
                "refused a live announcement; the sender loses gossip score"
            );
        }
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &propagation_source, acceptance);
    }

    fn judge(&mut self, message: &gossipsub::Message) -> MessageAcceptance {
        let Some((channel, rendition)) = self.live.topics.get(&message.topic).copied() else {
            return MessageAcceptance::Ignore;
        };
        let a = match Announcement::open(&channel, &message.data) {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(%channel, error = %e, "bad announcement");
                if let Some(s) = self.live.sessions.get_mut(&channel) {
                    s.planner.note_rejected();
                }
                return MessageAcceptance::Reject;
            }
        };
        if a.rendition != rendition {
            if let Some(s) = self.live.sessions.get_mut(&channel) {
                s.planner.note_rejected();
            }
            return MessageAcceptance::Reject;
        }
        // The source is the publisher the channel signed for, not whoever
        // relayed the message first.
        let Ok(publisher) = PeerId::from_bytes(&a.publisher) else {
            if let Some(s) = self.live.sessions.get_mut(&channel) {
                s.planner.note_rejected();
            }
            return MessageAcceptance::Reject;
        };
        let Some(session) = self.live.sessions.get_mut(&channel) else {
            return MessageAcceptance::Ignore;
        };
        let now = Instant::now();
        let (verdict, actions) = session.planner.offer(&a, Some(publisher), now, unix_ms());
        if let Verdict::Reject(why) = verdict {
            tracing::debug!(%channel, %why, "refused announcement");
            return MessageAcceptance::Reject;
        }
        // The manifest travels inline: keep it, so the segment can be
        // checked and served to peers that ask for it.
        let manifest = Block::prehashed(a.manifest_cid, &a.manifest_bytes);
        if let Err(e) = self.store.put_many_lazily(&[manifest]) {
            tracing::warn!(%channel, error = %e, "cannot store a segment manifest");
        }
        // The channel is live but its record (origins, renditions) is not
        // known yet: look again, at most every RECORD_RETRY.
        if session.record.is_none() && now >= session.next_record_query {
            session.next_record_query = now + RECORD_RETRY;
            let key = kad::RecordKey::new(&channel.record_key());
            let q = self.swarm.behaviour_mut().kad.get_record(key);
            self.live.record_queries.insert(q, channel);
        }
        self.live_candidate(channel, publisher);
        tracing::debug!(%channel, rendition, sequence = a.sequence, "announcement accepted");
        self.run_live_actions(channel, actions);
        MessageAcceptance::Accept
    }

    /// Carries out a session's planner actions.
    pub(crate) fn run_live_actions(
        &mut self,
        channel: ChannelId,
        actions: Vec<LiveAction<PeerId>>,
    ) {
        let mut fetches = Vec::new();
        for action in actions {
            match action {
                LiveAction::Fetch(a) => fetches.push(a),
                LiveAction::Http(request) => self.start_http(channel, request),
                LiveAction::Check {
                    rendition,
                    sequence,
                    manifest,
                    from_http,
                } => {
                    let store = self.store.clone();
                    let tx = self.live.events_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let ok = check_segment(&store, &manifest, sequence);
                        let _ = tx.send(LiveEvent::Checked {
                            channel,
                            rendition,
                            sequence,
                            ok,
                        });
                        // After the segment is playable, not before: the
                        // player need not wait for the parity.
                        if ok && from_http {
                            complete_segment(&store, &manifest);
                        }
                    });
                }
                LiveAction::Release { manifest, shards } => {
                    let store = self.store.clone();
                    tokio::task::spawn_blocking(move || release(&store, &manifest, shards));
                }
                LiveAction::ReadPlaylists => self.read_playlists(channel),
                LiveAction::Proxy {
                    rendition,
                    sequence,
                    uri,
                    duration_us,
                } => self.start_proxy(channel, rendition, sequence, uri, duration_us),
            }
        }
        self.run_actions(fetches);
    }

    /// Proxying: reads the origin's media playlists.
    fn read_playlists(&mut self, channel: ChannelId) {
        let Some(session) = self.live.sessions.get(&channel) else {
            return;
        };
        let sources = session.playlist_sources();
        let client = self.live.http.clone();
        let tx = self.live.events_tx.clone();
        tokio::spawn(async move {
            let result = read_origin(&client, sources).await;
            let _ = tx.send(LiveEvent::Playlists { channel, result });
        });
    }

    /// Proxying: fetches a segment whole from the origin and stores it.
    fn start_proxy(
        &mut self,
        channel: ChannelId,
        rendition: u16,
        sequence: u64,
        uri: String,
        duration_us: u64,
    ) {
        let url = self
            .live
            .sessions
            .get(&channel)
            .and_then(|s| s.playlists.get(&rendition))
            .and_then(|playlist| playlist.join(&uri).ok());
        let client = self.live.http.clone();
        let store = self.store.clone();
        let tx = self.live.events_tx.clone();
        tokio::spawn(async move {
            let stored = match url {
                Some(url) => proxy_segment(&client, store, url, sequence, duration_us).await,
                None => None,
            };
            let _ = tx.send(LiveEvent::Proxied {
                channel,
                rendition,
                sequence,
                uri,
                duration_us,
                stored,
            });
        });
    }

    fn start_http(&mut self, channel: ChannelId, request: HttpRequest) {
        let Some(session) = self.live.sessions.get_mut(&channel) else {
            return;
        };
        // The record's origins serve the broadcaster's folder; a playlist
        // read from an origin (the user's) locates the segment as well.
        let mut urls: Vec<String> = Vec::new();
        if let Some(record) = &session.record
            && let Some(rendition) = record.renditions.get(usize::from(request.rendition))
        {
            let dir = match rendition.playlist.rfind('/') {
                Some(i) => &rendition.playlist[..=i],
                None => "",
            };
            urls.extend(
                record
                    .origins
                    .iter()
                    .map(|o| format!("{}/{dir}{}", o.0.trim_end_matches('/'), request.uri)),
            );
        }
        if let Some(url) = session
            .playlists
            .get(&request.rendition)
            .and_then(|p| p.join(&request.uri).ok())
        {
            urls.push(url.to_string());
        }
        if urls.is_empty() {
            // Nowhere to ask yet: the planner tries again later.
            session
                .planner
                .http_done(request.rendition, request.sequence, false, Instant::now());
            return;
        }
        let client = self.live.http.clone();
        let tx = self.live.events_tx.clone();
        tokio::spawn(async move {
            let mut result = Err("no origin".to_string());
            for url in &urls {
                result = fetch_range(&client, url, &request).await;
                match &result {
                    Ok(_) => break,
                    Err(e) => tracing::warn!(%url, error = %e, "origin did not deliver"),
                }
            }
            let _ = tx.send(LiveEvent::Http {
                channel,
                request,
                result,
            });
        });
    }

    pub(crate) fn on_live_event(&mut self, event: LiveEvent) {
        let now = Instant::now();
        match event {
            LiveEvent::Http {
                channel,
                request,
                result,
            } => {
                let ok = result.is_ok();
                let mut actions = Vec::new();
                if let Ok(shards) = result {
                    let blocks: Vec<Block<'_>> = shards
                        .iter()
                        .map(|(cid, data)| Block::prehashed(*cid, data))
                        .collect();
                    if let Err(e) = self.store.put_many_lazily(&blocks) {
                        tracing::error!(error = %e, "cannot store shards from an origin");
                    } else if let Some(s) = self.live.sessions.get_mut(&channel) {
                        for (cid, data) in &shards {
                            actions.extend(s.planner.on_block(cid, data, None, now));
                        }
                    }
                }
                if let Some(s) = self.live.sessions.get_mut(&channel) {
                    s.planner
                        .http_done(request.rendition, request.sequence, ok, now);
                }
                self.run_live_actions(channel, actions);
            }
            LiveEvent::Checked {
                channel,
                rendition,
                sequence,
                ok,
            } => {
                let Some(s) = self.live.sessions.get_mut(&channel) else {
                    return;
                };
                if !ok {
                    tracing::warn!(%channel, rendition, sequence, "segment did not rebuild; dropped");
                }
                let actions = s
                    .planner
                    .segment_checked(rendition, sequence, ok, now, unix_ms());
                self.run_live_actions(channel, actions);
            }
            LiveEvent::Playlists { channel, result } => {
                let Some(s) = self.live.sessions.get_mut(&channel) else {
                    return;
                };
                let mut actions = Vec::new();
                let mut renditions = 0;
                match &result {
                    Ok(found) => {
                        for (r, url, media) in &found.media {
                            s.playlists.insert(*r, url.clone());
                            let listed: Vec<(String, u64)> = media
                                .segments
                                .iter()
                                .map(|m| (m.uri.clone(), m.duration_us))
                                .collect();
                            actions.extend(s.planner.on_playlist(
                                *r,
                                media.media_sequence,
                                &listed,
                                now,
                            ));
                            renditions = renditions.max(usize::from(*r) + 1);
                        }
                        if let Some(info) = &found.renditions {
                            s.proxy_renditions = info.clone();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%channel, error = %e, "cannot read the origin's playlist")
                    }
                }
                s.planner.playlists_read(result.is_ok(), now);
                // Peers may come back on any rendition's topic.
                for r in 1..renditions {
                    self.subscribe(channel, r as u16);
                }
                self.run_live_actions(channel, actions);
            }
            LiveEvent::Proxied {
                channel,
                rendition,
                sequence,
                uri,
                duration_us,
                stored,
            } => {
                let Some(s) = self.live.sessions.get_mut(&channel) else {
                    // Watching stopped meanwhile: nothing will release it.
                    if let Some((manifest, _)) = stored {
                        let store = self.store.clone();
                        tokio::task::spawn_blocking(move || release(&store, &manifest, Vec::new()));
                    }
                    return;
                };
                let actions = s.planner.proxied(
                    rendition,
                    sequence,
                    &uri,
                    duration_us,
                    stored,
                    now,
                    unix_ms(),
                );
                self.run_live_actions(channel, actions);
            }
        }
    }

    /// Blocks arrived from peers: every session that waits for them hears.
    pub(crate) fn live_blocks(&mut self, received: &[(PeerId, Cid, Vec<u8>)]) {
        if self.live.sessions.is_empty() {
            return;
        }
        let now = Instant::now();
        let channels: Vec<ChannelId> = self.live.sessions.keys().copied().collect();
        for channel in channels {
            let mut actions = Vec::new();
            if let Some(s) = self.live.sessions.get_mut(&channel) {
                let content = shoal_protocol::receipt::channel_content_id(&channel);
                for (peer, cid, data) in received {
                    // What this peer delivered, for the receipts it may ask for.
                    if let Some(segment) = s.planner.segment_of(cid) {
                        self.rewards
                            .delivered(*peer, content, segment, data.len() as u64);
                    }
                    actions.extend(s.planner.on_block(cid, data, Some(peer), now));
                }
            }
            self.run_live_actions(channel, actions);
        }
    }

    pub(crate) fn live_presence(&mut self, peer: &PeerId, cid: &Cid, have: bool) {
        let now = Instant::now();
        let channels: Vec<ChannelId> = self.live.sessions.keys().copied().collect();
        for channel in channels {
            let actions = match self.live.sessions.get_mut(&channel) {
                Some(s) => s.planner.on_presence(peer, cid, have, now),
                None => continue,
            };
            self.run_live_actions(channel, actions);
        }
    }

    pub(crate) fn live_peer_gone(&mut self, peer: &PeerId) {
        let now = Instant::now();
        let channels: Vec<ChannelId> = self.live.sessions.keys().copied().collect();
        for channel in channels {
            let actions = match self.live.sessions.get_mut(&channel) {
                Some(s) => {
                    s.candidates.remove(peer);
                    s.planner.peer_gone(peer, now)
                }
                None => continue,
            };
            self.run_live_actions(channel, actions);
        }
    }

    pub(crate) fn live_tick(&mut self) {
        let now = Instant::now();
        self.end_rations_due(now);
        let idle: Vec<ChannelId> = self
            .live
            .sessions
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_access) > LIVE_IDLE_TIMEOUT)
            .map(|(c, _)| *c)
            .collect();
        for channel in idle {
            tracing::info!(%channel, "nobody is watching any more");
            self.unwatch(&channel);
        }
        let channels: Vec<ChannelId> = self.live.sessions.keys().copied().collect();
        for channel in channels {
            let (actions, discover) = match self.live.sessions.get_mut(&channel) {
                Some(s) => (s.planner.tick(now), now >= s.next_discovery),
                None => continue,
            };
            self.run_live_actions(channel, actions);
            if discover {
                self.discover(channel);
            }
        }
    }

    /// Ends the ration of published shards whose window has passed: the
    /// viewers still waiting for them are sent them.
    fn end_rations_due(&mut self, now: Instant) {
        let mut out = Vec::new();
        while self
            .live
            .rationed
            .front()
            .is_some_and(|(due, _)| *due <= now)
        {
            let Some((_, shards)) = self.live.rationed.pop_front() else {
                break;
            };
            let source = StoreSource::new(&self.store, &self.config);
            for cid in &shards {
                self.engine.end_ration(cid, &source, &mut out);
            }
        }
        if !out.is_empty() {
            self.apply(out);
        }
    }

    /// What a gateway shows of a watched channel; marks it as looked at.
    pub(crate) fn live_view(&mut self, channel: &ChannelId) -> Option<LiveView> {
        let s = self.live.sessions.get_mut(channel)?;
        let now = Instant::now();
        s.last_access = now;
        let record = s.record.as_ref();
        let known = record.map_or(&s.proxy_renditions, |r| &r.renditions);
        let count = s.planner.rendition_count().max(known.len()).max(1);
        let renditions = (0..count)
            .map(|r| {
                let window: Vec<WindowSegment> = s.planner.window(r as u16).cloned().collect();
                let info = known.get(r).cloned().unwrap_or_else(|| LiveRendition {
                    playlist: format!("{r}.m3u8"),
                    segment_extension: window
                        .last()
                        .and_then(|w| w.uri.rsplit_once('.').map(|(_, e)| e.to_owned()))
                        .unwrap_or_else(|| "ts".into()),
                    ..LiveRendition::default()
                });
                RenditionView { info, window }
            })
            .collect();
        Some(LiveView {
            channel: *channel,
            name: record.map(|r| r.name.clone()),
            target_duration_us: record.map_or(0, |r| r.target_duration_us),
            renditions,
            stats: s.planner.stats().clone(),
            peers: s.candidates.len(),
            origins: record
                .into_iter()
                .flat_map(|r| r.origins.iter().map(|o| o.0.clone()))
                .chain(s.origins.iter().map(|u| u.to_string()))
                .collect(),
            proxying: s.planner.proxying(now),
        })
    }

    /// Publishes `data` on a rendition's topic of `channel`. The shards of
    /// an announced segment are paced and rationed first (each goes to a
    /// few viewers, who trade it): viewers ask for them as soon as they
    /// hear the announcement.
    pub(crate) fn publish(
        &mut self,
        channel: ChannelId,
        rendition: u16,
        data: Vec<u8>,
    ) -> Result<(), NodeError> {
        let window = self.live.config.ration_window;
        if let Ok(announcement) = Announcement::open(&channel, &data) {
            let shards = announcement.manifest.shards;
            for cid in &shards {
                self.engine.pace(*cid);
            }
            if !window.is_zero() {
                for cid in &shards {
                    self.engine.ration(*cid, self.live.config.ration_copies);
                }
                self.live
                    .rationed
                    .push_back((Instant::now() + window, shards));
            }
        }
        let topic = IdentTopic::new(channel.topic(rendition));
        match self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
            Ok(_) => Ok(()),
            // Nobody watches yet: late joiners find the segment through
            // the channel record.
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Ok(()),
            Err(gossipsub::PublishError::Duplicate) => Ok(()),
            Err(e) => Err(NodeError::Publish(e.to_string())),
        }
    }

    /// Stores a signed channel record here and provides the channel;
    /// answers once it is stored here, while the put to the DHT goes on (a
    /// broadcaster does not wait for remote peers between segments, and a
    /// viewer that hears an announcement finds the record here at once).
    pub(crate) fn put_channel_record(
        &mut self,
        channel: ChannelId,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<(), NodeError>>,
    ) {
        if let Err(e) = ChannelRecord::open(&channel, &bytes) {
            let _ = reply.send(Err(NodeError::Publish(format!("channel record: {e}"))));
            return;
        }
        let key = kad::RecordKey::new(&channel.record_key());
        let record = kad::Record::new(key.clone(), bytes);
        let kad = &mut self.swarm.behaviour_mut().kad;
        if kad.store_mut().providers(&key).is_empty() {
            let _ = kad.start_providing(key);
        }
        match kad.put_record(record, kad::Quorum::One) {
            Ok(q) => {
                self.live.puts.insert(q);
                let _ = reply.send(Ok(()));
            }
            Err(e) => {
                let _ = reply.send(Err(NodeError::Publish(e.to_string())));
            }
        }
    }

    /// A peer asks us to store a record: only valid channel records are
    /// kept, and never one older than what we hold.
    pub(crate) fn on_inbound_record(&mut self, source: PeerId, record: kad::Record) {
        match validate_record(&record) {
            Ok((channel, fresh)) => {
                let store = self.swarm.behaviour_mut().kad.store_mut();
                let held = store
                    .get(&record.key)
                    .and_then(|r| ChannelRecord::open(&channel, &r.value).ok());
                if held.is_some_and(|h| h.sequence >= fresh.sequence) {
                    return;
                }
                if let Err(e) = store.put(record) {
                    tracing::debug!(%source, error = %e, "cannot keep a channel record");
                }
            }
            Err(why) => tracing::debug!(%source, %why, "refused a DHT record"),
        }
    }

    /// Results of the DHT queries this module started. Returns whether the
    /// query was one of them.
    pub(crate) fn on_live_kad_result(
        &mut self,
        id: kad::QueryId,
        result: &kad::QueryResult,
        last: bool,
    ) -> bool {
        if let Some(channel) = self.live.record_queries.get(&id).copied() {
            if last {
                self.live.record_queries.remove(&id);
            }
            if let kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) = result {
                match ChannelRecord::open(&channel, &found.record.value) {
                    Ok(r) => self.adopt_record(channel, r),
                    Err(e) => {
                        tracing::debug!(%channel, peer = ?found.peer, error = %e, "invalid channel record")
                    }
                }
            }
            return true;
        }
        if let Some(channel) = self.live.provider_queries.get(&id).copied() {
            if last {
                self.live.provider_queries.remove(&id);
            }
            if let kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) = result
            {
                let mut dialed = 0;
                for peer in providers {
                    if *peer == *self.swarm.local_peer_id() || self.banned.contains_key(peer) {
                        continue;
                    }
                    if self.swarm.is_connected(peer) {
                        self.live_candidate(channel, *peer);
                    } else if dialed < self.live.max_dials && self.swarm.dial(*peer).is_ok() {
                        dialed += 1;
                    }
                }
            }
            return true;
        }
        if self.live.puts.remove(&id) {
            // Stored here either way; a timeout only means fewer remote
            // copies so far.
            if let kad::QueryResult::PutRecord(Err(e)) = result {
                tracing::debug!(error = %e, "channel record reached fewer peers than wanted");
            }
            return true;
        }
        false
    }

    /// A valid record for a watched channel: newer ones replace older.
    fn adopt_record(&mut self, channel: ChannelId, record: ChannelRecord) {
        let now = Instant::now();
        let Some(s) = self.live.sessions.get_mut(&channel) else {
            return;
        };
        if s.record
            .as_ref()
            .is_some_and(|old| old.sequence >= record.sequence)
        {
            return;
        }
        let mut actions = Vec::new();
        for (r, rendition) in record.renditions.iter().enumerate() {
            let ext = rendition.segment_extension.clone();
            actions.extend(s.planner.seed(
                r as u16,
                &rendition.recent,
                |seq| format!("{seq}.{ext}"),
                now,
            ));
        }
        let renditions = record.renditions.len();
        s.record = Some(record);
        let http = s.has_origins();
        s.planner.set_http(http);
        for r in 1..renditions {
            self.subscribe(channel, r as u16);
        }
        self.run_live_actions(channel, actions);
    }
}

/// Checks a record someone wants stored: a channel record under its key.
fn validate_record(record: &kad::Record) -> Result<(ChannelId, ChannelRecord), String> {
    if record.value.len() > MAX_RECORD_BYTES {
        return Err(format!("{} bytes", record.value.len()));
    }
    let key = record.key.as_ref();
    let id = key
        .strip_prefix(b"/shoal/channel/".as_slice())
        .and_then(|rest| <[u8; 32]>::try_from(rest).ok())
        .and_then(ChannelId::from_bytes)
        .ok_or_else(|| "not a channel record key".to_string())?;
    let r = ChannelRecord::open(&id, &record.value).map_err(|e| e.to_string())?;
    Ok((id, r))
}

/// Rebuilds a segment from the store and checks its hash.
fn check_segment(store: &Blockstore, manifest: &Cid, sequence: u64) -> bool {
    shoal_storage::assemble::read_segment(store, manifest, sequence)
        .map_err(|e| tracing::warn!(error = %e, "live segment does not rebuild"))
        .is_ok()
}

/// Makes the shards of a checked segment that an origin filled in and
/// this node lacks (the parity), so that it serves peers any of them like
/// a segment that came from peers. (Segments from peers are left as they
/// came: regenerating every one cost each viewer CPU that the live
/// benchmark measured as latency.)
fn complete_segment(store: &Blockstore, manifest: &Cid) {
    if let Err(e) = shoal_storage::assemble::complete_segment(store, manifest) {
        tracing::warn!(%manifest, error = %e, "cannot complete a live segment's shards");
    }
}

/// Deletes a segment that left the window (unless pinned).
pub(crate) fn release(store: &Blockstore, manifest: &Cid, mut shards: Vec<Cid>) {
    if shards.is_empty()
        && let Ok(Some(bytes)) = store.get(manifest)
        && let Ok(m) = SegmentManifest::from_block(&bytes)
    {
        shards = m.shards;
    }
    for cid in shards.iter().chain(std::iter::once(manifest)) {
        // Pinned or already gone: either way nothing to do.
        let _ = store.delete(cid);
    }
}

/// Fetches bytes `start..end` of a segment from `url` and cuts them into
/// verified shards. A server that ignores the range and sends the whole
/// file is fine; a body of the wrong length, or one whose shards do not
/// match the manifest, is refused.
async fn fetch_range(
    client: &reqwest::Client,
    url: &str,
    req: &HttpRequest,
) -> Result<Vec<(Cid, Vec<u8>)>, String> {
    if req.end <= req.start {
        return cut(req, &[]);
    }
    let response = client
        .get(url)
        .header(
            reqwest::header::RANGE,
            format!("bytes={}-{}", req.start, req.end - 1),
        )
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let want = req.end - req.start;
    let whole = req.manifest.length;
    let (offset, expect) = match status.as_u16() {
        206 => (0, want),
        200 => (req.start, whole),
        other => return Err(format!("HTTP {other}")),
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_HTTP_BYTES)
    {
        return Err("response too large".into());
    }
    let body = read_limited(response, expect).await?;
    if body.len() as u64 != expect {
        return Err(format!(
            "{} bytes, expected {expect}: truncated or not this segment",
            body.len()
        ));
    }
    let slice = &body[offset as usize..(offset + want) as usize];
    cut(req, slice)
}

/// Reads a body, refusing more than `limit` bytes.
async fn read_limited(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    let mut body = Vec::with_capacity(limit.min(MAX_HTTP_BYTES) as usize);
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(format!("more than the {limit} bytes expected"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn cut(req: &HttpRequest, bytes: &[u8]) -> Result<Vec<(Cid, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for (i, shard) in shards_from_range(req, bytes) {
        let expected = req
            .manifest
            .shards
            .get(i)
            .ok_or_else(|| format!("shard {i} is not in the manifest"))?;
        let cid = block::cid_of(Codec::Raw, &shard);
        if cid != *expected {
            return Err(format!(
                "bytes for shard {i} do not match the manifest: altered or not this segment"
            ));
        }
        out.push((cid, shard));
    }
    Ok(out)
}

/// Reads the media playlist of every rendition from the first origin that
/// answers for it.
async fn read_origin(
    client: &reqwest::Client,
    sources: PlaylistSources,
) -> Result<OriginPlaylists, String> {
    match sources {
        PlaylistSources::Renditions(renditions) => {
            let mut media = Vec::new();
            let mut last_error = "no origin".to_string();
            for (r, urls) in renditions.iter().enumerate().take(MAX_LIVE_RENDITIONS) {
                for url in urls {
                    match read_playlist(client, url).await {
                        Ok(Playlist::Media(m)) => {
                            media.push((r as u16, url.clone(), m));
                            break;
                        }
                        Ok(Playlist::Master(_)) => {
                            last_error = format!("{url}: a master playlist, not a rendition's")
                        }
                        Err(e) => last_error = e,
                    }
                }
            }
            if media.is_empty() {
                return Err(last_error);
            }
            Ok(OriginPlaylists {
                media,
                renditions: None,
            })
        }
        PlaylistSources::Top(urls) => {
            let mut last_error = "no origin".to_string();
            for url in &urls {
                match read_top(client, url).await {
                    Ok(found) => return Ok(found),
                    Err(e) => last_error = e,
                }
            }
            Err(last_error)
        }
    }
}

/// Reads a playlist a user named: a media playlist is rendition 0; a
/// master playlist's variants are the renditions, in its order (the order
/// a broadcaster of the same folder numbers them in).
async fn read_top(client: &reqwest::Client, url: &reqwest::Url) -> Result<OriginPlaylists, String> {
    match read_playlist(client, url).await? {
        Playlist::Media(m) => Ok(OriginPlaylists {
            media: vec![(0, url.clone(), m)],
            renditions: None,
        }),
        Playlist::Master(variants) => {
            let mut media = Vec::new();
            let mut info = Vec::new();
            for (r, v) in variants.iter().enumerate().take(MAX_LIVE_RENDITIONS) {
                let at = url.join(&v.uri).map_err(|e| format!("{url}: {e}"))?;
                let m = match read_playlist(client, &at).await? {
                    Playlist::Media(m) => m,
                    Playlist::Master(_) => return Err(format!("{at}: a master inside a master")),
                };
                let ext = m
                    .segments
                    .first()
                    .and_then(|s| s.uri.rsplit_once('.'))
                    .map_or_else(|| "ts".to_string(), |(_, e)| e.to_owned());
                info.push(LiveRendition {
                    playlist: v.uri.clone(),
                    bandwidth: Some(v.bandwidth),
                    resolution: v.resolution.clone(),
                    codecs: v.codecs.clone(),
                    segment_extension: ext,
                    ..LiveRendition::default()
                });
                media.push((r as u16, at, m));
            }
            Ok(OriginPlaylists {
                media,
                renditions: Some(info),
            })
        }
    }
}

/// The longest playlist read from an origin.
const MAX_PLAYLIST_BYTES: u64 = 1 << 20;

/// Reads and parses one playlist. Only what the gateway can serve is
/// accepted: MPEG-TS segments named by plain relative paths.
async fn read_playlist(client: &reqwest::Client, url: &reqwest::Url) -> Result<Playlist, String> {
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status().as_u16()));
    }
    let body = read_limited(response, MAX_PLAYLIST_BYTES)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8(body).map_err(|_| format!("{url}: not UTF-8 text"))?;
    let playlist = hls::parse(&text).map_err(|e| format!("{url}: {e}"))?;
    if let Playlist::Media(m) = &playlist {
        if m.init.is_some() {
            return Err(format!(
                "{url}: fragmented MP4 (EXT-X-MAP); live channels carry MPEG-TS"
            ));
        }
        if let Some(bad) = m.segments.iter().find(|s| !is_safe_relative_path(&s.uri)) {
            return Err(format!(
                "{url}: segment URI {:?} is not a plain relative path",
                bad.uri
            ));
        }
    }
    Ok(playlist)
}

/// Proxying: fetches a whole segment and stores it as shards and a
/// manifest, so that it plays from the store and peers can fetch it.
/// Returns `(manifest, length)`, or `None` (logged) if that failed.
async fn proxy_segment(
    client: &reqwest::Client,
    store: std::sync::Arc<Blockstore>,
    url: reqwest::Url,
    sequence: u64,
    duration_us: u64,
) -> Option<(Cid, u64)> {
    let fetched = async {
        let response = client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        read_limited(response, MAX_HTTP_BYTES).await
    }
    .await;
    let bytes = match fetched {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(%url, error = %e, "origin did not deliver a segment");
            return None;
        }
    };
    let length = bytes.len() as u64;
    let stored = tokio::task::spawn_blocking(move || {
        let mut encoder = shoal_storage::codec::Encoder::default();
        shoal_storage::import_segment(
            &store,
            &mut encoder,
            bytes,
            sequence,
            Some(duration_us),
            &shoal_storage::ImportOptions::default(),
        )
    })
    .await;
    match stored {
        Ok(Ok(s)) => Some((s.manifest_cid, length)),
        Ok(Err(e)) => {
            tracing::error!(%url, error = %e, "cannot store a segment from an origin");
            None
        }
        Err(_) => None,
    }
}
