//! Everything a node decides, as one machine: the Bitswap [`Engine`] and
//! every machine that asks it for blocks — a [`LiveSession`] per watched
//! channel, a [`Broadcast`] per published channel, a [`StreamFetch`] per
//! on-demand fetch — with the [`Rewards`] rules and the peers banned,
//! routed among themselves. The quinn shape, as `quinn-proto`'s endpoint:
//! `handle_*` in, [`NodeMachine::poll_action`] out, the time passed in,
//! one [`NodeMachine::poll_timeout`]. The node's event loop feeds it what
//! the network and its tasks report and performs what it asks; the swarm
//! model (`shoal-sim swarm`) drives the very same machine over a modelled
//! network.
//!
//! How it routes, so that neither the node nor the model has to:
//!
//! - The engine's sends to one peer within one input go out as **one
//!   message** ([`Action::Send`]). A peer over its ledger limit (and not in
//!   the optimistic slot) hears DONT_HAVE instead of blocks, and the engine
//!   gets the room back.
//! - A verified block from a peer is **stored first**
//!   ([`Action::Store`]); only once the node reports it stored
//!   ([`NodeMachine::handle_received`]) do the sessions, the fetches and
//!   the ledger hear of it. Every block that enters the store by any path
//!   ([`NodeMachine::handle_stored`]) is served to the peers waiting for it.
//! - Presences go to every session and fetch; a **cancel** goes out only
//!   when no session and no fetch still wants the block.
//! - **One path for a peer that goes** ([`NodeMachine::handle_disconnected`]),
//!   whether it closed its connections or was banned: the engine, every
//!   session and every fetch forget it.
//! - **One path for peers found in the DHT**: connected ones become
//!   candidates at once; at most [`MachineConfig::max_dials`] others are
//!   dialled per lookup, never this node or a banned peer.
//! - A peer that sends a malformed message or a block nobody asked it for
//!   is **banned** for [`MachineConfig::ban_duration`]
//!   ([`Action::Ban`], then [`Action::Unban`]).
//!
//! `P` is the peer identifier (libp2p's `PeerId` in the node, an index in
//! the model); it must be ordered, so that a run's actions are the same
//! every time for the same inputs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::bitswap::{
    BlockSource, Engine, EngineConfig, Message, Misbehaviour, Outgoing, Output, Presence, WantType,
    uplink::UplinkBudget,
};
use crate::block::Cid;
use crate::channel::{ChannelError, ChannelId, ChannelRecord, check_origin};
use crate::fetch::{
    BlockLookup, FetchAction, FetchError, FetchReport, FetchTarget, StreamFetch, StreamFetchAction,
    StreamFetchConfig,
};
use crate::ledger::{Account, LedgerConfig};
use crate::live::HttpRequest;
use crate::live::{
    Broadcast, BroadcastAction, LiveConfig, LiveEvent, LiveSession, LiveView, OriginPlaylists,
    PlaylistSources, ProxiedSegment, ProxySegment, SessionAction, Verdict,
};
use crate::receipt::{
    Deployment, EPOCH_SECS, ReceiptRequest, ReceiptResponse, SignedReceipt, Wallet,
    channel_subject, content_id, epoch_of, stream_subject,
};
use crate::rewards::{HeldReceipts, Rewards, RewardsAction};

/// Channels watched at once: each costs subscriptions, DHT lookups and a
/// window of segments, and the gateway starts a session for any channel a
/// player names.
pub const MAX_SESSIONS: usize = 32;

/// Settings, each with the reason for its default.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    pub engine: EngineConfig,
    pub live: LiveConfig,
    pub fetch: StreamFetchConfig,
    pub ledger: LedgerConfig,
    /// How long a peer that misbehaved stays banned.
    pub ban_duration: Duration,
    /// Peers found in the DHT dialled per lookup: enough for a gossip mesh
    /// (gossipsub keeps 6 mesh peers) and several shard sources each.
    pub max_dials: usize,
    /// Serve nothing to peers (a phone on a metered network): every want
    /// is answered DONT_HAVE.
    pub no_upload: bool,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            engine: EngineConfig::default(),
            live: LiveConfig::default(),
            fetch: StreamFetchConfig::default(),
            ledger: LedgerConfig::default(),
            ban_duration: Duration::from_secs(3600),
            max_dials: 16,
            no_upload: false,
        }
    }
}

/// Who a node is: its peer id, its wallet, the deployment it claims on.
pub struct Identity<P> {
    pub peer: P,
    pub wallet: Wallet,
    pub deployment: Option<Deployment>,
    /// Reads a publisher's peer id from its bytes (announcements carry
    /// them).
    pub publisher_of: fn(&[u8]) -> Option<P>,
    /// Where this node starts in every live segment's shards (a hash of its
    /// peer id): viewers ask the source for different shards.
    pub rotation: usize,
}

/// The wall clock, as it stood at one monotonic instant: Unix time for any
/// later instant, without reading a clock.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    pub at: Instant,
    pub unix_ms: u64,
}

impl WallClock {
    pub fn unix_ms(&self, now: Instant) -> u64 {
        self.unix_ms
            .saturating_add(now.saturating_duration_since(self.at).as_millis() as u64)
    }

    /// The reward epoch `now` falls in.
    pub fn epoch(&self, now: Instant) -> u64 {
        epoch_of(self.unix_ms(now) / 1000, EPOCH_SECS)
    }
}

/// The instant the reward epoch after the one `now` falls in begins.
fn next_epoch_start(clock: &WallClock, now: Instant) -> Instant {
    let epoch_ms = EPOCH_SECS * 1000;
    let unix = clock.unix_ms(now);
    let left = epoch_ms - unix % epoch_ms;
    now + Duration::from_millis(left)
}

/// A DHT key providers are looked up under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProviderKey {
    /// A channel's record key: its broadcaster and viewers.
    Channel(ChannelId),
    /// One of a channel's [`PROVIDER_BUCKETS`](crate::live::PROVIDER_BUCKETS)
    /// keys: the viewers that drew it.
    ChannelBucket(ChannelId, u16),
    /// A stream's root: its holders.
    Root(Cid),
}

impl ProviderKey {
    /// The key's bytes in the DHT.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            ProviderKey::Channel(c) => c.record_key(),
            ProviderKey::ChannelBucket(c, b) => c.bucket_key(*b),
            ProviderKey::Root(cid) => cid.to_bytes(),
        }
    }

    /// A channel's own key, or one of its buckets.
    pub fn of_channel(channel: ChannelId, bucket: Option<u16>) -> ProviderKey {
        match bucket {
            None => ProviderKey::Channel(channel),
            Some(b) => ProviderKey::ChannelBucket(channel, b),
        }
    }

    /// The channel whose viewers the key finds.
    fn channel(&self) -> Option<ChannelId> {
        match self {
            ProviderKey::Channel(c) | ProviderKey::ChannelBucket(c, _) => Some(*c),
            ProviderKey::Root(_) => None,
        }
    }
}

/// One fetch, as [`NodeMachine::fetch`] numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FetchId(pub u64);

/// Block bytes this node sent and received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
}

/// What an app embedding the node would show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent<P> {
    Live {
        channel: ChannelId,
        event: LiveEvent,
    },
    /// Peers connected now.
    Peers(usize),
    Banned {
        peer: P,
        reason: String,
    },
}

/// Why a watch was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("already watching {0} channels; stop one first")]
    TooMany(usize),
    #[error("{0}")]
    BadOrigin(String),
}

/// What the machine asks of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<P> {
    /// Send a Bitswap message (the node reads the named blocks from its
    /// store); if it [needs a report](Outgoing::needs_report), report it
    /// with [`NodeMachine::handle_sent`] once written or dropped.
    Send {
        peer: P,
        message: Outgoing,
    },
    /// Store these verified blocks from `from`, then report them with
    /// [`NodeMachine::handle_received`].
    Store {
        from: P,
        blocks: Vec<(Cid, Vec<u8>)>,
    },
    /// Store a segment manifest that came inline with an announcement.
    StoreManifest {
        cid: Cid,
        bytes: Vec<u8>,
    },
    /// Refuse the peer's connections until [`Action::Unban`].
    Ban {
        peer: P,
        reason: String,
    },
    Unban {
        peer: P,
    },
    /// Subscribe to a gossip topic; report peers already subscribed to it
    /// with [`NodeMachine::handle_subscribed`].
    Subscribe {
        topic: String,
    },
    Unsubscribe {
        topic: String,
    },
    /// Publish on a gossip topic.
    Gossip {
        topic: String,
        data: Vec<u8>,
    },
    /// Provide (or stop providing) a DHT key.
    Provide {
        key: Vec<u8>,
    },
    StopProviding {
        key: Vec<u8>,
    },
    /// Look a channel's record up; report with
    /// [`NodeMachine::handle_record`].
    FindRecord {
        channel: ChannelId,
    },
    /// Look providers up; report with [`NodeMachine::handle_providers`] and
    /// [`NodeMachine::handle_providers_done`].
    FindProviders {
        key: ProviderKey,
    },
    /// Dial a peer by its id (its addresses are in the DHT).
    Dial {
        peer: P,
    },
    /// Live: fetch a byte range of a segment from the first of `urls` that
    /// delivers, verify and store the shards; report with
    /// [`NodeMachine::handle_range`].
    FetchRange {
        channel: ChannelId,
        request: HttpRequest,
        urls: Vec<String>,
    },
    /// Live, proxying: read the origin's playlists; report with
    /// [`NodeMachine::handle_playlists`].
    ReadPlaylists {
        channel: ChannelId,
        sources: PlaylistSources,
    },
    /// Live, proxying: fetch a segment whole, code and store it; report
    /// with [`NodeMachine::handle_proxied`].
    FetchSegment {
        channel: ChannelId,
        segment: ProxySegment,
        url: String,
    },
    /// Live: rebuild a segment and check its hash; report with
    /// [`NodeMachine::handle_checked`]. If `from_http`, once checked, make
    /// and store the parity it lacks.
    Check {
        channel: ChannelId,
        rendition: u16,
        sequence: u64,
        manifest: Cid,
        from_http: bool,
    },
    /// Delete these blocks (unless pinned): no session, window or
    /// broadcast of this machine holds them any more. Delete them in order
    /// with the [`Action::Store`]s, so that a block stored again after
    /// this is not deleted.
    Release {
        blocks: Vec<Cid>,
    },
    /// Ask a peer for receipts; report with
    /// [`NodeMachine::handle_receipts`].
    AskReceipts {
        peer: P,
        request: ReceiptRequest,
    },
    /// Keep these receipts; report with [`NodeMachine::handle_receipts_kept`].
    KeepReceipts(Vec<SignedReceipt>),
    /// A fetch ended. A finished [`FetchTarget::Stream`] is to be pinned and
    /// provided, a [`FetchTarget::Block`] with `pin` pinned.
    FetchDone {
        id: FetchId,
        target: FetchTarget,
        result: Result<FetchReport<P>, FetchError>,
    },
    Event(NodeEvent<P>),
}

/// Something that happened, for [`NodeMachine::handle`]: what the network
/// and the node's tasks report, and the time. The node's event loop and
/// the swarm model feed the machine through this one type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<P> {
    /// A first connection to the peer is up.
    Connected(P),
    /// The peer's last connection closed.
    Disconnected(P),
    /// A decoded Bitswap message.
    Bitswap { from: P, message: Message },
    /// A peer sent something that is not a Bitswap message.
    Malformed { from: P, error: String },
    /// An [`Action::Send`] that [needed a report](Outgoing::needs_report)
    /// was written (or dropped): its `block_bytes` and `queued_presences`.
    Sent {
        to: P,
        bytes: usize,
        presences: usize,
    },
    /// A message to `to` has been writing for a while: the peer is slow
    /// to take what it asked for ([`Engine::write_slow`]).
    WriteSlow { to: P },
    /// Blocks entered the store, by any path.
    Stored(Vec<Cid>),
    /// The blocks of an [`Action::Store`] are stored.
    Received {
        from: P,
        blocks: Vec<(Cid, Vec<u8>)>,
    },
    /// A gossiped message ([`NodeMachine::handle`] returns its
    /// judgement), with the peer that signed it into gossip (its author,
    /// not whoever forwarded it).
    Gossip {
        topic: String,
        data: Vec<u8>,
        author: Option<P>,
    },
    /// A peer is subscribed to a topic.
    Subscribed { peer: P, topic: String },
    /// A record found under a channel's key (not yet opened).
    Record { channel: ChannelId, bytes: Vec<u8> },
    /// Providers found in the DHT.
    Providers { key: ProviderKey, providers: Vec<P> },
    /// A lookup of providers is over.
    ProvidersDone(ProviderKey),
    /// A [`Action::FetchRange`] ended (`Ok`: the verified shards, stored).
    Range {
        channel: ChannelId,
        request: HttpRequest,
        result: Result<Vec<(Cid, Vec<u8>)>, String>,
    },
    /// A [`Action::Check`] ended.
    Checked {
        channel: ChannelId,
        rendition: u16,
        sequence: u64,
        ok: bool,
    },
    /// A [`Action::ReadPlaylists`] ended.
    Playlists {
        channel: ChannelId,
        result: Result<OriginPlaylists, String>,
    },
    /// A [`Action::FetchSegment`] ended.
    Proxied {
        channel: ChannelId,
        segment: ProxySegment,
        stored: Option<ProxiedSegment>,
    },
    /// The time of [`NodeMachine::poll_timeout`] has come.
    Timeout,
}

/// What a gossiped message is worth, for gossipsub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Forward it.
    Accept,
    /// Do not forward it; its sender loses score.
    Reject(String),
    /// Not forwarded, nobody penalised: not a topic this node judges,
    /// or an announcement older than what it has.
    Ignore,
}

/// The store as the engine sees it: empty in no-upload mode.
struct Serving<'a, S> {
    store: &'a S,
    serve: bool,
}

impl<S: BlockSource> BlockSource for Serving<'_, S> {
    fn block_size(&self, cid: &Cid) -> Option<usize> {
        if self.serve {
            self.store.block_size(cid)
        } else {
            None
        }
    }
}

/// The node's decisions. See the module documentation.
pub struct NodeMachine<P, S> {
    config: MachineConfig,
    /// The node's blocks, as the engine and the fetches look them up.
    store: S,
    local: P,
    rotation: usize,
    publisher_of: fn(&[u8]) -> Option<P>,
    clock: WallClock,
    engine: Engine<P>,
    /// The engine's budget of paced bytes, from how fast messages are
    /// written.
    uplink: UplinkBudget<P>,
    connected: BTreeSet<P>,
    banned: BTreeMap<P, Instant>,
    sessions: BTreeMap<ChannelId, LiveSession<P>>,
    /// Gossip topic → (channel, rendition), for the sessions' topics.
    topics: BTreeMap<String, (ChannelId, u16)>,
    broadcasts: BTreeMap<ChannelId, Broadcast>,
    fetches: BTreeMap<FetchId, StreamFetch<P>>,
    next_fetch: u64,
    rewards: Rewards<P>,
    traffic: Traffic,
    /// What one input sends each peer, merged.
    sends: BTreeMap<P, Outgoing>,
    /// Blocks let go within one input, to delete unless still held.
    releasing: BTreeSet<Cid>,
    /// Blocks received from each peer within one input, to store.
    received: BTreeMap<P, Vec<(Cid, Vec<u8>)>>,
    /// The earliest ban to end.
    next_unban: Option<Instant>,
    /// The start of the next reward epoch: what viewers delivered before
    /// the last one is forgotten then.
    next_epoch: Instant,
    actions: VecDeque<Action<P>>,
}

impl<P: Clone + Ord + Hash, S: BlockSource + BlockLookup> NodeMachine<P, S> {
    pub fn new(config: MachineConfig, me: Identity<P>, store: S, clock: WallClock) -> Self {
        let engine = Engine::new(config.engine.clone());
        let uplink = UplinkBudget::new(config.engine.max_paced_bytes);
        let rewards = Rewards::new(me.wallet, me.deployment, config.ledger.clone());
        NodeMachine {
            local: me.peer,
            rotation: me.rotation,
            publisher_of: me.publisher_of,
            next_unban: None,
            next_epoch: next_epoch_start(&clock, clock.at),
            clock,
            engine,
            uplink,
            connected: BTreeSet::new(),
            banned: BTreeMap::new(),
            sessions: BTreeMap::new(),
            topics: BTreeMap::new(),
            broadcasts: BTreeMap::new(),
            fetches: BTreeMap::new(),
            next_fetch: 0,
            rewards,
            traffic: Traffic::default(),
            sends: BTreeMap::new(),
            releasing: BTreeSet::new(),
            received: BTreeMap::new(),
            actions: VecDeque::new(),
            store,
            config,
        }
    }

    /// The store the machine looks blocks up in.
    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// What the machine asks next, if anything.
    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    /// When [`NodeMachine::handle_timeout`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self.sessions.values().filter_map(LiveSession::poll_timeout);
        let broadcasts = self.broadcasts.values().filter_map(Broadcast::poll_timeout);
        let fetches = self.fetches.values().filter_map(StreamFetch::poll_timeout);
        sessions
            .chain(broadcasts)
            .chain(fetches)
            .chain(self.rewards.poll_timeout())
            .chain(self.next_unban)
            .chain(std::iter::once(self.next_epoch))
            .min()
    }

    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    pub fn connected(&self) -> impl Iterator<Item = &P> {
        self.connected.iter()
    }

    pub fn banned(&self) -> impl Iterator<Item = &P> {
        self.banned.keys()
    }

    pub fn is_banned(&self, peer: &P) -> bool {
        self.banned.contains_key(peer)
    }

    pub fn wallet_address(&self) -> alloy_primitives::Address {
        self.rewards.address()
    }

    pub fn accounts(&self) -> Vec<(P, Account)> {
        self.rewards.accounts()
    }

    pub fn watching(&self) -> impl Iterator<Item = &ChannelId> {
        self.sessions.keys()
    }

    /// Turns no-upload mode on or off.
    pub fn set_no_upload(&mut self, no_upload: bool) {
        self.config.no_upload = no_upload;
    }

    /// Changes how many complete segments each watched rendition keeps.
    pub fn set_window(&mut self, window: usize, now: Instant) {
        self.config.live.window = window;
        for s in self.sessions.values_mut() {
            s.set_window(window, now);
        }
        self.settle(now);
    }

    /// Feeds the machine one [`Input`] at `now`. Returns what a gossiped
    /// message is worth (for [`Input::Gossip`]; [`Judgement::Ignore`] for
    /// every other input).
    pub fn handle(&mut self, input: Input<P>, now: Instant) -> Judgement {
        match input {
            Input::Connected(peer) => self.handle_connected(peer, now),
            Input::Disconnected(peer) => self.handle_disconnected(&peer, now),
            Input::Bitswap { from, message } => self.handle_bitswap(from, message, now),
            Input::Malformed { from, error } => self.handle_malformed(from, error, now),
            Input::Sent {
                to,
                bytes,
                presences,
            } => self.handle_sent(to, bytes, presences, now),
            Input::WriteSlow { to } => self.handle_write_slow(to, now),
            Input::Stored(cids) => self.handle_stored(&cids, now),
            Input::Received { from, blocks } => self.handle_received(from, &blocks, now),
            Input::Gossip {
                topic,
                data,
                author,
            } => return self.handle_gossip(&topic, &data, author.as_ref(), now),
            Input::Subscribed { peer, topic } => self.handle_subscribed(peer, &topic, now),
            Input::Record { channel, bytes } => self.handle_record(channel, &bytes, now),
            Input::Providers { key, providers } => self.handle_providers(key, &providers, now),
            Input::ProvidersDone(key) => self.handle_providers_done(key, now),
            Input::Range {
                channel,
                request,
                result,
            } => {
                let result = result.as_deref().map_err(Clone::clone);
                self.handle_range(&channel, &request, result, now)
            }
            Input::Checked {
                channel,
                rendition,
                sequence,
                ok,
            } => self.handle_checked(&channel, rendition, sequence, ok, now),
            Input::Playlists { channel, result } => self.handle_playlists(&channel, result, now),
            Input::Proxied {
                channel,
                segment,
                stored,
            } => self.handle_proxied(&channel, &segment, stored, now),
            Input::Timeout => self.handle_timeout(now),
        }
        Judgement::Ignore
    }

    // ---- peers -------------------------------------------------------

    /// A connection to `peer` is up (its first).
    pub fn handle_connected(&mut self, peer: P, now: Instant) {
        if peer == self.local || !self.connected.insert(peer.clone()) {
            return;
        }
        self.engine.peer_connected(peer.clone());
        for f in self.fetches.values_mut() {
            f.add_candidate(peer.clone(), now);
        }
        self.event(NodeEvent::Peers(self.connected.len()));
        self.settle(now);
    }

    /// `peer`'s last connection closed: the one path for a peer that goes.
    pub fn handle_disconnected(&mut self, peer: &P, now: Instant) {
        self.forget(peer, now);
        self.settle(now);
    }

    fn forget(&mut self, peer: &P, now: Instant) {
        let was = self.connected.remove(peer);
        // What we had asked it for is asked of others by the machines.
        let _ = self.engine.peer_disconnected(peer);
        self.uplink.peer_gone(peer);
        self.sends.remove(peer);
        for s in self.sessions.values_mut() {
            s.handle_peer_gone(peer, now);
        }
        for f in self.fetches.values_mut() {
            f.handle_peer_gone(peer, now);
        }
        if was {
            self.event(NodeEvent::Peers(self.connected.len()));
        }
    }

    fn ban(&mut self, peer: P, reason: String, now: Instant) {
        if self.banned.contains_key(&peer) {
            return;
        }
        let until = now + self.config.ban_duration;
        self.banned.insert(peer.clone(), until);
        self.next_unban = Some(self.next_unban.map_or(until, |t| t.min(until)));
        self.actions.push_back(Action::Ban {
            peer: peer.clone(),
            reason: reason.clone(),
        });
        self.event(NodeEvent::Banned {
            peer: peer.clone(),
            reason,
        });
        self.forget(&peer, now);
    }

    // ---- Bitswap -----------------------------------------------------

    /// A decoded Bitswap message from `peer`.
    pub fn handle_bitswap(&mut self, peer: P, message: Message, now: Instant) {
        if self.banned.contains_key(&peer) {
            return;
        }
        let mut out = Vec::new();
        let serving = Serving {
            store: &self.store,
            serve: !self.config.no_upload,
        };
        self.engine.on_message(&peer, message, &serving, &mut out);
        self.route(out, now);
        self.settle(now);
    }

    /// `peer` sent something that is not a Bitswap message.
    pub fn handle_malformed(&mut self, peer: P, error: String, now: Instant) {
        self.ban(peer, format!("malformed Bitswap message: {error}"), now);
        self.settle(now);
    }

    /// A [`Action::Send`] to `peer` carrying `bytes` of blocks and
    /// `presences` counted answers was written (or dropped with its
    /// stream).
    pub fn handle_sent(&mut self, peer: P, bytes: usize, presences: usize, now: Instant) {
        if bytes > 0 {
            self.traffic.sent += bytes as u64;
            let epoch = self.clock.epoch(now);
            self.rewards.served(&peer, bytes as u64, now, epoch);
        }
        let mut out = Vec::new();
        let serving = Serving {
            store: &self.store,
            serve: !self.config.no_upload,
        };
        // The budget first: the room this write frees is refilled under it.
        if bytes > 0
            && let Some(budget) = self.uplink.written(&peer, now)
        {
            self.engine.set_paced_limit(budget, &serving, &mut out);
        }
        self.engine
            .sent(&peer, bytes, presences, &serving, &mut out);
        self.route(out, now);
        self.settle(now);
    }

    /// A message to `peer` is slow to write: the paced blocks it holds
    /// stop holding up the other peers.
    pub fn handle_write_slow(&mut self, peer: P, now: Instant) {
        let mut out = Vec::new();
        let serving = Serving {
            store: &self.store,
            serve: !self.config.no_upload,
        };
        self.uplink.peer_stuck(&peer);
        self.engine.write_slow(&peer, &serving, &mut out);
        self.route(out, now);
    }

    /// Blocks entered the store, by any path (an import, a peer, an
    /// origin): peers waiting for them get them. A live segment's blocks
    /// are paced, as the broadcaster paces what it publishes: a viewer's
    /// uplink is often the slower one, and copies it queued beyond what
    /// it can send in a moment held its own asks back and kept other
    /// viewers' asks waiting until they timed out and went to the
    /// broadcaster (`shoal-sim swarm --home`, 1000 viewers, seed 1: 3.11
    /// copies of each shard from the broadcaster, 185 segments late;
    /// paced, 2.23 and 47).
    pub fn handle_stored(&mut self, cids: &[Cid], now: Instant) {
        if self.config.no_upload {
            return;
        }
        let mut out = Vec::new();
        for cid in cids {
            if self.sessions.values().any(|s| s.has_block(cid)) {
                self.engine.pace(*cid);
            }
            self.engine.block_stored(cid, &self.store, &mut out);
        }
        self.route(out, now);
        self.settle(now);
    }

    /// The blocks of an [`Action::Store`] from `from` are stored: the
    /// sessions, fetches and ledger hear of them.
    pub fn handle_received(&mut self, from: P, blocks: &[(Cid, Vec<u8>)], now: Instant) {
        for (cid, data) in blocks {
            let n = data.len();
            self.traffic.received += n as u64;
            self.rewards.received(&from, n as u64, now);
            for s in self.sessions.values_mut() {
                s.handle_block(cid, data, Some(&from), now);
            }
            for f in self.fetches.values_mut() {
                f.handle_block(Some(&from), cid, n, &self.store, now);
            }
        }
        self.settle(now);
    }

    // ---- gossip and the DHT -----------------------------------------

    /// A gossiped message on `topic`, judged for gossipsub.
    pub fn handle_gossip(
        &mut self,
        topic: &str,
        data: &[u8],
        author: Option<&P>,
        now: Instant,
    ) -> Judgement {
        let Some(&(channel, rendition)) = self.topics.get(topic) else {
            return Judgement::Ignore;
        };
        let now_ms = self.clock.unix_ms(now);
        let Some(session) = self.sessions.get_mut(&channel) else {
            return Judgement::Ignore;
        };
        let verdict = session.handle_announcement(rendition, data, author, now, now_ms);
        self.settle(now);
        match verdict {
            Verdict::Accept => Judgement::Accept,
            Verdict::Reject(why) => Judgement::Reject(why),
            Verdict::Stale(_) => Judgement::Ignore,
        }
    }

    /// `peer` is subscribed to `topic`.
    pub fn handle_subscribed(&mut self, peer: P, topic: &str, now: Instant) {
        if peer == self.local || self.banned.contains_key(&peer) {
            return;
        }
        let Some(&(channel, _)) = self.topics.get(topic) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(&channel) {
            s.handle_peer(peer, now);
        }
        self.settle(now);
    }

    /// A record found under `channel`'s key (not yet opened).
    pub fn handle_record(&mut self, channel: ChannelId, bytes: &[u8], now: Instant) {
        let Some(s) = self.sessions.get_mut(&channel) else {
            return;
        };
        if let Ok(record) = ChannelRecord::open(&channel, bytes) {
            s.handle_record(record, now);
        }
        self.settle(now);
    }

    /// Providers found under `key`: the one path for peers found in the
    /// DHT.
    /// A channel's session dials only while it
    /// [wants peers](LiveSession::wants_peers).
    pub fn handle_providers(&mut self, key: ProviderKey, providers: &[P], now: Instant) {
        let mut dialled = 0;
        let budget = match key.channel() {
            Some(channel) => self
                .sessions
                .get(&channel)
                .map_or(0, |s| s.wants_peers())
                .min(self.config.max_dials),
            None => self.config.max_dials,
        };
        for peer in providers {
            if *peer == self.local || self.banned.contains_key(peer) {
                continue;
            }
            if self.connected.contains(peer) {
                match key {
                    ProviderKey::Channel(channel) | ProviderKey::ChannelBucket(channel, _) => {
                        if let Some(s) = self.sessions.get_mut(&channel) {
                            s.handle_peer(peer.clone(), now);
                        }
                    }
                    ProviderKey::Root(root) => {
                        for f in self.fetches.values_mut().filter(|f| f.root() == root) {
                            f.add_candidate(peer.clone(), now);
                        }
                    }
                }
            } else if dialled < budget {
                dialled += 1;
                self.actions.push_back(Action::Dial { peer: peer.clone() });
            }
        }
        self.settle(now);
    }

    /// The lookup of providers under `key` is over.
    pub fn handle_providers_done(&mut self, key: ProviderKey, now: Instant) {
        if let ProviderKey::Root(root) = key {
            for f in self.fetches.values_mut().filter(|f| f.root() == root) {
                f.handle_providers_searched(now);
            }
        }
        self.settle(now);
    }

    // ---- live --------------------------------------------------------

    /// Starts watching `channel` (or keeps watching it); `origins` are
    /// playlist URLs of the user's, for when no peer announces it.
    pub fn watch(
        &mut self,
        channel: ChannelId,
        origins: Vec<String>,
        now: Instant,
    ) -> Result<(), WatchError> {
        if origins.len() > crate::channel::MAX_ORIGINS {
            return Err(WatchError::BadOrigin(format!(
                "{} origins; at most {}",
                origins.len(),
                crate::channel::MAX_ORIGINS
            )));
        }
        for o in &origins {
            check_origin(o).map_err(WatchError::BadOrigin)?;
        }
        if let Some(s) = self.sessions.get_mut(&channel) {
            s.watch_again(origins, now);
            return Ok(());
        }
        if self.sessions.len() >= MAX_SESSIONS {
            return Err(WatchError::TooMany(MAX_SESSIONS));
        }
        let session = LiveSession::new(
            channel,
            self.config.live.clone(),
            self.rotation,
            origins,
            self.publisher_of,
            now,
        );
        self.sessions.insert(channel, session);
        self.settle(now);
        Ok(())
    }

    /// Stops watching `channel`: its topics, its provider record and its
    /// wants go.
    pub fn unwatch(&mut self, channel: &ChannelId, now: Instant) {
        let Some(mut session) = self.sessions.remove(channel) else {
            return;
        };
        session.stop(now);
        let topics: Vec<u16> = session.renditions_subscribed().collect();
        let mut leftovers = Vec::new();
        while let Some(a) = session.poll_action() {
            if let SessionAction::Fetch(f) = a {
                leftovers.push(f);
            }
        }
        let mut out = Vec::new();
        for f in leftovers {
            self.fetch_action(f, &mut out);
        }
        self.route(out, now);
        for r in topics {
            let topic = channel.topic(r);
            self.topics.remove(&topic);
            self.actions.push_back(Action::Unsubscribe { topic });
        }
        for bucket in [None, Some(session.own_bucket())] {
            self.actions.push_back(Action::StopProviding {
                key: ProviderKey::of_channel(*channel, bucket).to_bytes(),
            });
        }
        self.settle(now);
    }

    /// A watched channel's counters (the session does not count as looked
    /// at).
    pub fn live_stats(&self, channel: &ChannelId) -> Option<&crate::live::LiveStats> {
        self.sessions.get(channel).map(LiveSession::stats)
    }

    /// What this node holds of a watched channel; the session counts as
    /// looked at.
    pub fn live_view(&mut self, channel: &ChannelId, now: Instant) -> Option<LiveView> {
        self.sessions.get_mut(channel).map(|s| s.view(now))
    }

    /// A [`Action::FetchRange`] ended: `Ok` with the verified shards, which
    /// the node has stored.
    pub fn handle_range(
        &mut self,
        channel: &ChannelId,
        request: &HttpRequest,
        result: Result<&[(Cid, Vec<u8>)], String>,
        now: Instant,
    ) {
        if let Some(s) = self.sessions.get_mut(channel) {
            s.handle_range(request, result, now);
        }
        self.settle(now);
    }

    /// A [`Action::Check`] ended.
    pub fn handle_checked(
        &mut self,
        channel: &ChannelId,
        rendition: u16,
        sequence: u64,
        ok: bool,
        now: Instant,
    ) {
        let now_ms = self.clock.unix_ms(now);
        if let Some(s) = self.sessions.get_mut(channel) {
            s.handle_checked(rendition, sequence, ok, now, now_ms);
        }
        self.settle(now);
    }

    /// A [`Action::ReadPlaylists`] ended.
    pub fn handle_playlists(
        &mut self,
        channel: &ChannelId,
        result: Result<OriginPlaylists, String>,
        now: Instant,
    ) {
        if let Some(s) = self.sessions.get_mut(channel) {
            s.handle_playlists(result, now);
        }
        self.settle(now);
    }

    /// A [`Action::FetchSegment`] ended. A segment stored for a session that
    /// has ended meanwhile is released.
    pub fn handle_proxied(
        &mut self,
        channel: &ChannelId,
        segment: &ProxySegment,
        stored: Option<ProxiedSegment>,
        now: Instant,
    ) {
        let now_ms = self.clock.unix_ms(now);
        match self.sessions.get_mut(channel) {
            Some(s) => s.handle_proxied(segment, stored, now, now_ms),
            None => {
                if let Some(p) = stored {
                    self.releasing.insert(p.manifest);
                    self.releasing.extend(p.shards);
                }
            }
        }
        self.settle(now);
    }

    /// Publishes a signed announcement of `channel` (which this node
    /// broadcasts) on `rendition`'s topic, its shards paced and rationed
    /// first.
    pub fn publish(
        &mut self,
        channel: ChannelId,
        rendition: u16,
        data: Vec<u8>,
        now: Instant,
    ) -> Result<(), ChannelError> {
        let live = self.config.live.clone();
        let b = self
            .broadcasts
            .entry(channel)
            .or_insert_with(|| Broadcast::new(channel, live));
        b.handle_publish(rendition, data.clone(), now)?;
        // Watching its own channel (its gateway serves it): the session
        // lists what was just published, from the store.
        let now_ms = self.clock.unix_ms(now);
        if let Some(session) = self.sessions.get_mut(&channel) {
            session.handle_local_announcement(&data, now, now_ms);
        }
        self.settle(now);
        Ok(())
    }

    // ---- on-demand fetches ------------------------------------------

    /// Starts fetching `target` below `root`; the connected peers are
    /// candidates at once, and the root's providers are looked up.
    pub fn fetch(&mut self, root: Cid, target: FetchTarget, now: Instant) -> FetchId {
        let id = FetchId(self.next_fetch);
        self.next_fetch += 1;
        let mut job = StreamFetch::new(root, target, self.config.fetch.clone(), &self.store, now);
        for peer in &self.connected {
            job.add_candidate(peer.clone(), now);
        }
        self.fetches.insert(id, job);
        self.actions.push_back(Action::FindProviders {
            key: ProviderKey::Root(root),
        });
        self.settle(now);
        id
    }

    // ---- rewards -----------------------------------------------------

    /// A relayer asks this node (a viewer) for receipts.
    pub fn handle_receipt_request(
        &mut self,
        peer: &P,
        request: &ReceiptRequest,
        now: Instant,
    ) -> ReceiptResponse {
        let epoch = self.clock.epoch(now);
        self.rewards.answer(peer, request, now, epoch)
    }

    /// A viewer this node asked ([`Action::AskReceipts`] for `epoch`)
    /// answered, or did not. Returns the bytes credited.
    pub fn handle_receipts(
        &mut self,
        peer: &P,
        epoch: u64,
        result: Result<ReceiptResponse, String>,
        held: &impl HeldReceipts,
        now: Instant,
    ) -> Result<u64, String> {
        let credited = match result {
            Ok(response) => self.rewards.accept(peer, epoch, response, held, now),
            Err(_) => {
                self.rewards.no_answer(peer);
                Ok(0)
            }
        };
        self.settle(now);
        credited
    }

    /// The receipts of a [`Action::KeepReceipts`] were written (or not).
    pub fn handle_receipts_kept(&mut self, receipts: &[SignedReceipt]) {
        let keys: Vec<Vec<u8>> = receipts.iter().map(SignedReceipt::key).collect();
        self.rewards.kept(&keys);
    }

    // ---- time --------------------------------------------------------

    /// Runs every timer that is due: block timeouts, the source's spare,
    /// HTTP fill-in, proxying, discovery, idle sessions, rations, stalled
    /// fetches, bans and the ledger.
    pub fn handle_timeout(&mut self, now: Instant) {
        for s in self.sessions.values_mut() {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
        let idle: Vec<ChannelId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.is_idle(now))
            .map(|(c, _)| *c)
            .collect();
        for channel in idle {
            self.unwatch(&channel, now);
        }
        for b in self.broadcasts.values_mut() {
            b.handle_timeout(now);
        }
        for f in self.fetches.values_mut() {
            if f.poll_timeout().is_some_and(|t| t <= now) {
                f.handle_timeout(now);
            }
        }
        if self.next_unban.is_some_and(|t| t <= now) {
            let expired: Vec<P> = self
                .banned
                .iter()
                .filter(|(_, until)| **until <= now)
                .map(|(p, _)| p.clone())
                .collect();
            for peer in expired {
                self.banned.remove(&peer);
                self.actions.push_back(Action::Unban { peer });
            }
            self.next_unban = self.banned.values().min().copied();
        }
        let epoch = self.clock.epoch(now);
        if self.rewards.poll_timeout().is_some_and(|t| t <= now) {
            let connected = &self.connected;
            self.rewards
                .handle_timeout(now, epoch, |p| connected.contains(p));
        }
        if now >= self.next_epoch {
            self.next_epoch = next_epoch_start(&self.clock, now);
            self.rewards.prune(now, epoch);
        }
        self.settle(now);
    }

    /// Stops everything under way: fetches end with an error.
    pub fn stop(&mut self, now: Instant) {
        for f in self.fetches.values_mut() {
            f.stop();
        }
        let channels: Vec<ChannelId> = self.sessions.keys().copied().collect();
        for channel in channels {
            self.unwatch(&channel, now);
        }
        self.settle(now);
    }

    // ---- routing -----------------------------------------------------

    fn event(&mut self, event: NodeEvent<P>) {
        self.actions.push_back(Action::Event(event));
    }

    /// Whether any machine still wants `cid`.
    fn wanted(&self, cid: &Cid) -> bool {
        self.sessions.values().any(|s| s.wants(cid)) || self.fetches.values().any(|f| f.wants(cid))
    }

    fn fetch_action(&mut self, action: FetchAction<P>, out: &mut Vec<Output<P>>) {
        match action {
            FetchAction::WantHave { peer, cid } => {
                self.engine.want(&peer, cid, WantType::Have, out)
            }
            FetchAction::WantBlock { peer, cid } => {
                self.engine.want(&peer, cid, WantType::Block, out)
            }
            FetchAction::Cancel { cid } => {
                if !self.wanted(&cid) {
                    self.engine.cancel(&cid, out);
                }
            }
        }
    }

    /// Sorts the engine's outputs: sends merged per peer, blocks to store,
    /// presences to the machines, misbehaviour banned.
    fn route(&mut self, outputs: Vec<Output<P>>, now: Instant) {
        for output in outputs {
            match output {
                Output::Send { peer, message } => {
                    self.sends.entry(peer).or_default().merge(message)
                }
                Output::Received { peer, cid, data } => {
                    self.received.entry(peer).or_default().push((cid, data))
                }
                Output::Presence {
                    peer,
                    cid,
                    presence,
                } => {
                    let have = presence == Presence::Have;
                    for s in self.sessions.values_mut() {
                        s.handle_presence(&peer, &cid, have, now);
                    }
                    for f in self.fetches.values_mut() {
                        f.handle_presence(&peer, &cid, have, now);
                    }
                }
                Output::Disconnect { peer, reason } => {
                    let why = match reason {
                        Misbehaviour::UnrequestedBlock(cid) => {
                            format!("sent block {cid}, which nobody asked it for")
                        }
                        Misbehaviour::UncheckableBlock => {
                            "sent a block whose hash cannot be checked".to_string()
                        }
                    };
                    self.ban(peer, why, now);
                }
            }
        }
    }

    /// Drains every machine's actions, feeding the engine and routing its
    /// outputs, until nothing moves; then sends what the input sends.
    fn settle(&mut self, now: Instant) {
        let epoch = self.clock.epoch(now);
        loop {
            let mut out = Vec::new();
            let mut moved = false;
            let mut session_actions = Vec::new();
            for (channel, s) in &mut self.sessions {
                while let Some(a) = s.poll_action() {
                    session_actions.push((*channel, a));
                }
            }
            for (channel, a) in session_actions {
                moved = true;
                self.session_action(channel, a, epoch, &mut out);
            }
            let mut broadcast_actions = Vec::new();
            for (channel, b) in &mut self.broadcasts {
                while let Some(a) = b.poll_action() {
                    broadcast_actions.push((*channel, a));
                }
            }
            for (channel, a) in broadcast_actions {
                moved = true;
                match a {
                    BroadcastAction::Pace(shards) => {
                        for cid in shards {
                            self.engine.pace(cid);
                        }
                    }
                    BroadcastAction::Ration { shards, copies } => {
                        for cid in shards {
                            self.engine.ration(cid, copies);
                        }
                    }
                    BroadcastAction::EndRation(shards) => {
                        let serving = Serving {
                            store: &self.store,
                            serve: !self.config.no_upload,
                        };
                        for cid in &shards {
                            self.engine.end_ration(cid, &serving, &mut out);
                        }
                    }
                    BroadcastAction::Gossip { rendition, data } => {
                        self.actions.push_back(Action::Gossip {
                            topic: channel.topic(rendition),
                            data,
                        });
                    }
                    BroadcastAction::Release(blocks) => self.releasing.extend(blocks),
                }
            }
            let mut fetch_actions = Vec::new();
            for (id, f) in &mut self.fetches {
                while let Some(a) = f.poll_action() {
                    fetch_actions.push((*id, a));
                }
            }
            for (id, a) in fetch_actions {
                moved = true;
                match a {
                    StreamFetchAction::Fetch(f) => self.fetch_action(f, &mut out),
                    StreamFetchAction::Delivered { peer, group, bytes } => {
                        // As for channels: under the creator the root
                        // manifest names, once it is read.
                        if let Some((root, creator)) = self
                            .fetches
                            .get(&id)
                            .and_then(|f| Some((f.root(), f.creator()?)))
                        {
                            let content = content_id(stream_subject(&root), creator);
                            self.rewards
                                .delivered(peer, content, (0, group), bytes, epoch);
                        }
                    }
                    StreamFetchAction::Done(result) => {
                        let target = self
                            .fetches
                            .get(&id)
                            .map(|f| f.target().clone())
                            .unwrap_or(FetchTarget::Block { pin: false });
                        self.actions
                            .push_back(Action::FetchDone { id, target, result });
                    }
                }
            }
            self.fetches.retain(|_, f| !f.is_finished());
            while let Some(a) = self.rewards.poll_action() {
                moved = true;
                match a {
                    RewardsAction::Ask { peer, request } => {
                        self.actions
                            .push_back(Action::AskReceipts { peer, request });
                    }
                    RewardsAction::Keep(receipts) => {
                        self.actions.push_back(Action::KeepReceipts(receipts));
                    }
                }
            }
            if !out.is_empty() {
                moved = true;
                self.route(out, now);
            }
            if !moved {
                break;
            }
        }
        self.release();
        for (from, blocks) in std::mem::take(&mut self.received) {
            self.actions.push_back(Action::Store { from, blocks });
        }
        self.flush(now);
    }

    /// Asks the node to delete the blocks let go in this input that
    /// nothing else holds: one segment's shards may be another's (a
    /// channel that repeats a slate, two channels of the same source), and
    /// a broadcaster keeps what it published.
    fn release(&mut self) {
        if self.releasing.is_empty() {
            return;
        }
        let mut held = BTreeSet::new();
        for s in self.sessions.values() {
            s.holds(&mut held);
        }
        for b in self.broadcasts.values() {
            b.holds(&mut held);
        }
        let blocks: Vec<Cid> = std::mem::take(&mut self.releasing)
            .into_iter()
            .filter(|c| !held.contains(c))
            .collect();
        if !blocks.is_empty() {
            self.actions.push_back(Action::Release { blocks });
        }
    }

    fn session_action(
        &mut self,
        channel: ChannelId,
        action: SessionAction<P>,
        epoch: u64,
        out: &mut Vec<Output<P>>,
    ) {
        let push = |this: &mut Self, a| this.actions.push_back(a);
        match action {
            SessionAction::Fetch(f) => self.fetch_action(f, out),
            SessionAction::Subscribe { rendition } => {
                let topic = channel.topic(rendition);
                self.topics.insert(topic.clone(), (channel, rendition));
                push(self, Action::Subscribe { topic });
            }
            SessionAction::Provide { bucket } => push(
                self,
                Action::Provide {
                    key: ProviderKey::of_channel(channel, bucket).to_bytes(),
                },
            ),
            SessionAction::FindRecord => push(self, Action::FindRecord { channel }),
            SessionAction::FindProviders { bucket } => push(
                self,
                Action::FindProviders {
                    key: ProviderKey::of_channel(channel, bucket),
                },
            ),
            SessionAction::StoreManifest { cid, bytes } => {
                push(self, Action::StoreManifest { cid, bytes })
            }
            SessionAction::FetchRange { request, urls } => push(
                self,
                Action::FetchRange {
                    channel,
                    request,
                    urls,
                },
            ),
            SessionAction::ReadPlaylists(sources) => {
                push(self, Action::ReadPlaylists { channel, sources })
            }
            SessionAction::FetchSegment { segment, url } => push(
                self,
                Action::FetchSegment {
                    channel,
                    segment,
                    url,
                },
            ),
            SessionAction::Check {
                rendition,
                sequence,
                manifest,
                from_http,
            } => push(
                self,
                Action::Check {
                    channel,
                    rendition,
                    sequence,
                    manifest,
                    from_http,
                },
            ),
            SessionAction::Release { manifest, shards } => {
                self.releasing.insert(manifest);
                self.releasing.extend(shards);
            }
            SessionAction::Delivered {
                peer,
                segment,
                bytes,
            } => {
                // A channel earns under its creator's address, which its
                // record names; what is delivered before the record is
                // found, or for a channel that names no creator, earns
                // nothing.
                let creator = self.sessions.get(&channel).and_then(|s| s.creator());
                if let Some(creator) = creator {
                    let content = content_id(channel_subject(&channel), creator);
                    self.rewards.delivered(peer, content, segment, bytes, epoch);
                }
            }
            SessionAction::Event(event) => {
                push(self, Action::Event(NodeEvent::Live { channel, event }))
            }
        }
    }

    /// Counts blocks going to a peer against the watched channels whose
    /// segments they belong to. The blocks of one message share its
    /// bytes by count (they are a segment's shards, of one size).
    fn count_upload(&mut self, blocks: &[Cid], bytes: usize) {
        for s in self.sessions.values_mut() {
            let ours = blocks.iter().filter(|c| s.serves(c)).count();
            if ours > 0 {
                s.note_uploaded((bytes * ours / blocks.len()) as u64);
            }
        }
    }

    /// Sends what this input sends each peer, as one message per peer. A
    /// peer the ledger throttles hears DONT_HAVE instead of blocks, and the
    /// engine gets the room back (which may let other peers' blocks go).
    fn flush(&mut self, now: Instant) {
        while !self.sends.is_empty() {
            let mut released = Vec::new();
            for (peer, mut message) in std::mem::take(&mut self.sends) {
                if !message.blocks.is_empty() && !self.rewards.may_serve(&peer, now) {
                    let bytes = std::mem::take(&mut message.block_bytes);
                    for cid in std::mem::take(&mut message.blocks) {
                        message.presences.push((cid, Presence::DontHave));
                    }
                    let serving = Serving {
                        store: &self.store,
                        serve: !self.config.no_upload,
                    };
                    self.engine.sent(&peer, bytes, 0, &serving, &mut released);
                }
                if !message.blocks.is_empty() {
                    self.count_upload(&message.blocks, message.block_bytes);
                }
                if message.block_bytes > 0 {
                    self.uplink.handed(&peer, now);
                }
                self.actions.push_back(Action::Send { peer, message });
            }
            self.route(released, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::bitswap::{WantEntry, WireBlock};
    use crate::block::{self, Codec};
    use crate::channel::ChannelKey;

    const ME: u32 = 0;
    /// The peer that publishes the test channel's segments.
    const PUBLISHER: u32 = 9;

    /// A store in memory.
    #[derive(Default)]
    struct Store(HashMap<Cid, Vec<u8>>);

    impl BlockSource for Store {
        fn block_size(&self, cid: &Cid) -> Option<usize> {
            self.0.get(cid).map(Vec::len)
        }
    }

    impl BlockLookup for Store {
        fn has(&self, cid: &Cid) -> Result<bool, String> {
            Ok(self.0.contains_key(cid))
        }
        fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.get(cid).cloned())
        }
    }

    fn machine(
        config: MachineConfig,
        deployment: Option<Deployment>,
        t: Instant,
    ) -> NodeMachine<u32, Store> {
        NodeMachine::new(
            config,
            Identity {
                peer: ME,
                wallet: Wallet::from_bytes(&[1; 32]).unwrap(),
                deployment,
                publisher_of: |bytes| (bytes == b"source").then_some(PUBLISHER),
                rotation: 0,
            },
            Store::default(),
            WallClock {
                at: t,
                unix_ms: 1_700_000_000_000,
            },
        )
    }

    fn drain(m: &mut NodeMachine<u32, Store>) -> Vec<Action<u32>> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn want(cid: Cid, want_type: WantType, cancel: bool) -> WantEntry {
        WantEntry {
            cid,
            priority: 1,
            cancel,
            want_type,
            send_dont_have: true,
        }
    }

    fn wants(message: Message) -> Input<u32> {
        Input::Bitswap {
            from: 1,
            message: Message {
                wantlist: message.wantlist,
                ..Message::default()
            },
        }
    }

    #[test]
    fn a_peer_that_sends_a_block_nobody_asked_for_is_banned_forgotten_then_unbanned() {
        let t = Instant::now();
        let config = MachineConfig::default();
        let ban = config.ban_duration;
        let mut m = machine(config, None, t);
        m.handle(Input::Connected(1), t);
        drain(&mut m);
        let data = b"spam".to_vec();
        let cid = block::cid_of(Codec::Raw, &data);
        let message = Message {
            blocks: vec![WireBlock { cid, data }],
            ..Message::default()
        };
        m.handle(
            Input::Bitswap {
                from: 1,
                message: message.clone(),
            },
            t,
        );
        let actions = drain(&mut m);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Ban { peer: 1, .. })),
            "{actions:?}"
        );
        assert!(
            actions.contains(&Action::Event(NodeEvent::Peers(0))),
            "{actions:?}"
        );
        assert!(m.is_banned(&1));
        // What it sends now is not even looked at.
        m.handle(Input::Bitswap { from: 1, message }, t);
        assert!(drain(&mut m).is_empty());
        assert_eq!(m.poll_timeout().map(|w| w <= t + ban), Some(true));
        m.handle(Input::Timeout, t + ban);
        assert!(drain(&mut m).contains(&Action::Unban { peer: 1 }));
        assert!(!m.is_banned(&1));
    }

    #[test]
    fn providers_found_are_dialled_at_most_max_dials_and_never_this_node_or_a_banned_peer() {
        let t = Instant::now();
        let config = MachineConfig {
            max_dials: 4,
            ..MachineConfig::default()
        };
        let mut m = machine(config, None, t);
        let channel = ChannelKey::from_seed(&[2; 32]).id();
        m.watch(channel, Vec::new(), t).unwrap();
        m.handle(Input::Connected(3), t);
        m.handle(
            Input::Malformed {
                from: 2,
                error: "garbage".into(),
            },
            t,
        );
        drain(&mut m);
        let providers: Vec<u32> = (0..20).collect();
        m.handle(
            Input::Providers {
                key: ProviderKey::Channel(channel),
                providers,
            },
            t,
        );
        let dialled: Vec<u32> = drain(&mut m)
            .into_iter()
            .filter_map(|a| match a {
                Action::Dial { peer } => Some(peer),
                _ => None,
            })
            .collect();
        assert_eq!(dialled, vec![1, 4, 5, 6]);
        // The connected one became a candidate instead.
        assert_eq!(m.live_view(&channel, t).unwrap().peers, 1);
    }

    #[test]
    fn a_watch_provides_its_channel_and_one_bucket_and_an_unwatch_withdraws_both() {
        let t = Instant::now();
        let mut m = machine(MachineConfig::default(), None, t);
        let channel = ChannelKey::from_seed(&[2; 32]).id();
        m.watch(channel, Vec::new(), t).unwrap();
        let provided: Vec<Vec<u8>> = drain(&mut m)
            .into_iter()
            .filter_map(|a| match a {
                Action::Provide { key } => Some(key),
                _ => None,
            })
            .collect();
        assert_eq!(provided.len(), 2, "{provided:?}");
        assert_eq!(provided[0], channel.record_key());
        assert!(provided[1].starts_with(&channel.record_key()));
        m.unwatch(&channel, t);
        let withdrawn: Vec<Vec<u8>> = drain(&mut m)
            .into_iter()
            .filter_map(|a| match a {
                Action::StopProviding { key } => Some(key),
                _ => None,
            })
            .collect();
        assert_eq!(withdrawn, provided);
        // Providers found under a bucket are dialled, until the session
        // knows its target of peers; then none is.
        let mut m = machine(MachineConfig::default(), None, t);
        m.watch(channel, Vec::new(), t).unwrap();
        drain(&mut m);
        let key = ProviderKey::ChannelBucket(channel, 3);
        m.handle(
            Input::Providers {
                key,
                providers: vec![7, 8],
            },
            t,
        );
        let dials = drain(&mut m)
            .iter()
            .filter(|a| matches!(a, Action::Dial { .. }))
            .count();
        assert_eq!(dials, 2);
        for p in 100..100 + crate::live::LIVE_TARGET_PEERS as u32 {
            m.handle(Input::Connected(p), t);
            let topic = channel.topic(0);
            m.handle(Input::Subscribed { peer: p, topic }, t);
        }
        drain(&mut m);
        let key = ProviderKey::ChannelBucket(channel, 3);
        m.handle(
            Input::Providers {
                key,
                providers: (1..20).collect(),
            },
            t,
        );
        assert!(
            drain(&mut m)
                .iter()
                .all(|a| !matches!(a, Action::Dial { .. }))
        );
    }

    #[test]
    fn a_cancel_goes_out_only_once_nothing_still_wants_the_block() {
        let t = Instant::now();
        let mut m = machine(MachineConfig::default(), None, t);
        m.handle(Input::Connected(1), t);
        let cid = block::cid_of(Codec::Raw, b"wanted");
        let stall = MachineConfig::default().fetch.stall_timeout;
        // Two fetches of one block, ten seconds apart.
        m.fetch(cid, FetchTarget::Block { pin: false }, t);
        let later = t + Duration::from_secs(10);
        m.fetch(cid, FetchTarget::Block { pin: false }, later);
        drain(&mut m);
        let cancels = |actions: &[Action<u32>]| {
            actions
                .iter()
                .filter(|a| matches!(a, Action::Send { message, .. } if message.wantlist.iter().any(|w| w.cancel)))
                .count()
        };
        // The first gives up; the second still wants the block.
        m.handle(Input::Timeout, t + stall);
        let actions = drain(&mut m);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::FetchDone { result: Err(_), .. }))
        );
        assert_eq!(cancels(&actions), 0, "{actions:?}");
        // The second gives up: now the peer hears the cancel.
        m.handle(Input::Timeout, later + stall);
        let actions = drain(&mut m);
        assert_eq!(cancels(&actions), 1, "{actions:?}");
    }

    /// The blocks sent to `peer` in `actions`.
    fn blocks_to(peer: u32, actions: &[Action<u32>]) -> Vec<Cid> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { peer: p, message } if *p == peer => Some(message.blocks.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// A viewer of a channel, connected to peer 1, that has stored every
    /// shard of the channel's segment 0 (`k + m` shards of `size` bytes);
    /// the shards' CIDs.
    fn viewer_holding_a_segment(
        config: MachineConfig,
        k: u16,
        m: u16,
        size: usize,
        t: Instant,
    ) -> (NodeMachine<u32, Store>, Vec<Cid>) {
        let mut node = machine(config, None, t);
        let key = ChannelKey::from_seed(&[2; 32]);
        node.watch(key.id(), Vec::new(), t).unwrap();
        node.handle(Input::Connected(1), t);
        let (shards, announcement) = crate::live::testing::segment(&key, 0, k, m, size, b"source");
        node.handle(
            Input::Gossip {
                topic: key.id().topic(0),
                data: announcement,
                author: Some(PUBLISHER),
            },
            t,
        );
        let mut stored = Vec::new();
        for (cid, data) in shards {
            node.store_mut().0.insert(cid, data);
            stored.push(cid);
        }
        node.handle(Input::Stored(stored.clone()), t);
        drain(&mut node);
        (node, stored)
    }

    #[test]
    fn a_viewer_paces_the_blocks_of_live_segments_it_stores_and_nothing_else() {
        let t = Instant::now();
        const SIZE: usize = 64;
        let mut config = MachineConfig::default();
        // Room for one shard at a time.
        config.engine.max_paced_bytes = SIZE;
        let (mut m, shards) = viewer_holding_a_segment(config, 2, 1, SIZE, t);
        // A block of no live segment enters the store too.
        let other = vec![7u8; SIZE];
        let other_cid = block::cid_of(Codec::Raw, &other);
        m.store_mut().0.insert(other_cid, other);
        m.handle(Input::Stored(vec![other_cid]), t);
        drain(&mut m);
        let (s0, s1) = (shards[0], shards[1]);
        let ask = Message {
            wantlist: vec![
                want(other_cid, WantType::Block, false),
                want(s0, WantType::Block, false),
                want(s1, WantType::Block, false),
            ],
            ..Message::default()
        };
        m.handle(wants(ask), t);
        // The other block takes no paced room; one shard fills it.
        let mut first = blocks_to(1, &drain(&mut m));
        first.sort();
        let mut expected = vec![s0, other_cid];
        expected.sort();
        assert_eq!(first, expected);
        // Once the first shard is written, the second goes.
        m.handle(
            Input::Sent {
                to: 1,
                bytes: 2 * SIZE,
                presences: 0,
            },
            t,
        );
        assert_eq!(blocks_to(1, &drain(&mut m)), vec![s1]);
    }

    #[test]
    fn slow_writes_lower_the_paced_budget_and_fewer_shards_wait_on_the_uplink() {
        let t = Instant::now();
        const SIZE: usize = 16 << 10;
        let mut config = MachineConfig::default();
        // Room for four shards while writes are quick.
        config.engine.max_paced_bytes = 4 * SIZE;
        let (mut m, shards) = viewer_holding_a_segment(config, 16, 4, SIZE, t);
        let ask = Message {
            wantlist: shards
                .iter()
                .map(|c| want(*c, WantType::Block, false))
                .collect(),
            ..Message::default()
        };
        m.handle(wants(ask), t);
        assert_eq!(blocks_to(1, &drain(&mut m)).len(), 4);
        // Each message takes a second to write: the first report opens a
        // period of timing, four more shards take the room it frees...
        let sent = |m: &mut NodeMachine<u32, Store>, at| {
            m.handle(
                Input::Sent {
                    to: 1,
                    bytes: 4 * SIZE,
                    presences: 0,
                },
                at,
            );
            blocks_to(1, &drain(m)).len()
        };
        assert_eq!(sent(&mut m, t + Duration::from_secs(1)), 4);
        // ... and the second, a period later and as slow, halves the
        // budget: two shards wait on the uplink now, not four.
        assert_eq!(sent(&mut m, t + Duration::from_secs(2)), 2);
    }

    #[test]
    fn a_peer_over_its_ledger_limit_hears_dont_have_instead_of_blocks() {
        let t = Instant::now();
        let config = MachineConfig {
            ledger: LedgerConfig {
                disconnect_threshold: 0,
                optimistic_bytes: 0,
                ..LedgerConfig::default()
            },
            ..MachineConfig::default()
        };
        let deployment = Deployment {
            chain_id: 1,
            reward_pool: alloy_primitives::Address::repeat_byte(1),
            vault: alloy_primitives::Address::repeat_byte(2),
            token: alloy_primitives::Address::repeat_byte(3),
        };
        let mut m = machine(config, Some(deployment), t);
        let data = b"a shard".to_vec();
        let cid = block::cid_of(Codec::Raw, &data);
        m.store_mut().0.insert(cid, data);
        m.handle(Input::Connected(1), t);
        drain(&mut m);
        let ask = Message {
            wantlist: vec![want(cid, WantType::Block, false)],
            ..Message::default()
        };
        m.handle(wants(ask), t);
        let actions = drain(&mut m);
        assert_eq!(
            actions,
            vec![Action::Send {
                peer: 1,
                message: Outgoing {
                    presences: vec![(cid, Presence::DontHave)],
                    ..Outgoing::default()
                }
            }]
        );
    }

    #[test]
    fn the_machine_never_asks_to_be_woken_for_a_time_it_has_handled() {
        let t = Instant::now();
        let mut m = machine(MachineConfig::default(), None, t);
        m.handle(Input::Connected(1), t);
        let key = ChannelKey::from_seed(&[2; 32]);
        m.watch(
            key.id(),
            vec!["http://origin.example/live/index.m3u8".into()],
            t,
        )
        .unwrap();
        m.fetch(block::cid_of(Codec::Raw, b"x"), FetchTarget::Stream, t);
        let mut now = t;
        for _ in 0..1000 {
            drain(&mut m);
            let Some(next) = m.poll_timeout() else {
                return;
            };
            assert!(next > now || now == t, "asked for {next:?} after {now:?}");
            now = next;
            m.handle(Input::Timeout, now);
            if now > t + Duration::from_secs(3 * 3600) {
                return;
            }
        }
        panic!("a thousand wake-ups in three hours");
    }
}
