//! A live channel's swarm in simulated time: the broadcaster and every
//! viewer run shoal's own [`NodeMachine`] — the very machine a node's event
//! loop drives, with its live sessions, the broadcaster's pacing and
//! ration, and the Bitswap engine — over a modelled network instead of
//! libp2p. The model feeds each machine what its network and store would
//! report and carries out what the machine asks, as the node's event loop
//! does; it decides nothing itself.
//!
//! What the network model keeps, and why:
//!
//! - **Uplinks are the scarce resource.** Each node sends at a fixed rate;
//!   the messages waiting for its uplink are served round-robin per peer,
//!   16 KiB at a time (TCP shares a link roughly fairly between its
//!   connections), and in order within one peer (one Bitswap stream).
//!   Downlinks are unlimited: a home or mobile line receives several times
//!   faster than it sends.
//! - **Every link has its own one-way latency**, drawn once per link.
//! - **Gossip is gossipsub's**: the broadcaster sends its announcements to
//!   its mesh peers (the node turns gossipsub's `flood_publish` off;
//!   [`SwarmParams::flood_publish`] puts it back), and each viewer forwards
//!   the first copy it accepts to its mesh peers (six to twelve); copies go
//!   through the uplinks like any other message.
//! - **Sizes are real**: Bitswap messages are encoded with shoal's wire
//!   codec and announcements are signed, so what crosses a link is what
//!   the node would send.
//! - **Time is the machine's**: each machine is woken at its own
//!   `poll_timeout`, as the node's loop sleeps until it.
//!
//! Two ways for an audience to form ([`Arrivals`]):
//!
//! - **At the start** (the idealised swarm): every viewer is connected and
//!   in the mesh before the first segment, to the broadcaster and `dials`
//!   viewers drawn at random, and the mesh is built once.
//! - **Over time** (the realistic one, [`SwarmParams::home`]): viewers
//!   arrive as a Poisson process and stay for an exponential time. Each
//!   runs the node's discovery: its machine's DHT lookups are answered by
//!   the model of [`dht`] (the 20 providers closest to the channel's key,
//!   after a lookup's hops), its dials take two round trips and are
//!   refused by a node at its connection limit (the node's 512, of which
//!   at most 7/8 inbound) or behind NAT (no inbound connection at all),
//!   and gossipsub keeps its mesh with heartbeats, GRAFT/PRUNE and
//!   IHAVE/IWANT ([`gossip`]). Uplinks can differ from viewer to viewer
//!   ([`SwarmParams::uplink_mix`]), some below the stream's rate.
//!
//! What it leaves out: CPU time (a message is handled the instant it
//! arrives, so this measures the protocol, not a machine), packet loss,
//! relays and hole punching (two viewers behind NAT never connect, which
//! is pessimistic), the time a store takes (a write is done the moment it
//! is asked for), and the parity a viewer makes for a segment an origin
//! filled in (so such a viewer serves only data shards here, which makes
//! runs with an origin pessimistic).
//!
//! `Instant`s handed to the machines are a fixed base plus the simulated
//! time.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_protocol::bitswap::{BlockSource, EngineConfig, Message, WireBlock};
use shoal_protocol::block::{Codec, cid_of, sha256, sha256_multihash};
use shoal_protocol::channel::{
    Announcement, CHANNEL_VERSION, ChannelId, ChannelKey, ChannelRecord, LiveRendition, Origin,
    PartOf,
};
use shoal_protocol::fetch::BlockLookup;
use shoal_protocol::live::{HttpRequest, LiveConfig, LiveEvent};
use shoal_protocol::machine::{
    Action, Identity, Input, Judgement, MachineConfig, NodeEvent, NodeMachine, ProviderKey,
    WallClock,
};
use shoal_protocol::manifest::MANIFEST_VERSION;
use shoal_protocol::receipt::Wallet;
use shoal_protocol::{Cid, SegmentManifest};

use crate::Error;

pub mod dht;
pub mod gossip;
pub mod scenario;

use gossip::{Control, MsgId, Topic};

/// Bytes an uplink sends before it turns to the next peer's queue.
const CHUNK: usize = 16 * 1024;
/// A gossipsub frame's own bytes around an announcement: sender, sequence
/// number, topic, the sender's signature and key.
const GOSSIP_OVERHEAD: usize = 160;
/// TCP's first flight on Linux: 10 segments of 1448 bytes
/// ([`SwarmParams::first_flight`]).
pub const FIRST_FLIGHT: usize = 10 * 1448;
/// Linux's least retransmission timeout: a connection silent for its
/// round trip and this long starts again from its first flight.
const MIN_RTO: Duration = Duration::from_millis(200);
/// Time a viewer takes to rebuild and hash a segment before the player
/// may have it.
const CHECK: Duration = Duration::from_millis(2);
/// The broadcaster.
const SOURCE: usize = 0;
/// A viewer arriving over time that has no segment this long after it
/// joined has failed to start; the segments published after that count
/// as missed.
const STARTUP_ALLOWANCE: Duration = Duration::from_secs(10);
/// The wall clock at the start, in Unix milliseconds.
const BASE_MS: u64 = 1_700_000_000_000;
/// The origin the channel record names when the run has one (the model
/// answers for it; nothing is fetched).
const ORIGIN_URL: &str = "http://origin.invalid/live";

/// An HTTP origin (a CDN) that viewers may fill gaps from.
#[derive(Clone, Debug)]
pub struct OriginParams {
    /// Round trip to the origin.
    pub rtt: Duration,
    /// Bytes per second one request receives.
    pub rate: u64,
}

/// How the audience forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrivals {
    /// Everyone connected and in the mesh before the first segment, to
    /// the broadcaster and `dials` viewers drawn at random.
    AtStart,
    /// One viewer at a time, as a Poisson process spread over this span;
    /// each finds its peers through the DHT.
    Poisson { over: Duration },
}

/// Home uplinks, per cent of viewers and bytes per second: a tenth on
/// ADSL or a weak mobile link below a 1 Mb/s stream, most between 2 and
/// 20 Mb/s, a tenth on fibre.
pub const HOME_UPLINKS: [(u32, u64); 5] = [
    (10, 500_000 / 8),
    (25, 2_000_000 / 8),
    (35, 10_000_000 / 8),
    (20, 20_000_000 / 8),
    (10, 100_000_000 / 8),
];

/// The node's connection limit (`[node] max_peers`).
pub const NODE_MAX_CONNECTIONS: usize = 512;

/// One simulated broadcast.
#[derive(Clone, Debug)]
pub struct SwarmParams {
    pub viewers: usize,
    /// Segments measured, after the warm-up ones.
    pub segments: u64,
    /// Segments published first and left out of the figures.
    pub warmup: u64,
    pub segment_bytes: usize,
    pub segment_duration: Duration,
    /// Low-latency live: each segment of the model is announced as a part
    /// of a segment this many parts long (`Announcement::part`), as the
    /// node's `--low-latency` broadcast does, so the viewers' windows and
    /// fetches in flight count parts by segment. 1: whole segments.
    pub parts_per_segment: u32,
    pub k: u16,
    pub m: u16,
    /// Viewers each viewer dials (it also dials the broadcaster); others
    /// dial it in turn, so a viewer has about twice this many.
    pub dials: usize,
    /// Upload rate of each viewer, bytes per second.
    pub viewer_uplink: u64,
    /// Upload rate of the broadcaster, bytes per second.
    pub source_uplink: u64,
    /// One-way latency of a link, drawn uniformly from this range.
    pub latency: (Duration, Duration),
    /// One-way delay from each node to the core of a star network, the
    /// broadcaster first (the network lab's shape). When set, a link's
    /// latency is the sum of its ends' and `latency` only bounds DHT
    /// lookups.
    pub host_delays: Vec<Duration>,
    pub origin: Option<OriginParams>,
    /// Viewers that leave, all at once, halfway through the measured
    /// segments.
    pub leave: usize,
    pub seed: u64,
    pub live: LiveConfig,
    /// Every node's Bitswap engine (the broadcaster's pacing among them).
    pub engine: EngineConfig,
    /// The broadcaster sends each announcement to every viewer it is
    /// connected to (gossipsub's `flood_publish`), not just its mesh.
    pub flood_publish: bool,
    /// Record everything fed to this node's machine and everything it
    /// asked ([`SwarmReport::trace`]).
    pub trace: Option<usize>,
    pub arrivals: Arrivals,
    /// With [`Arrivals::Poisson`]: how long a viewer stays, on average
    /// (exponentially distributed); `None`, to the end.
    pub mean_stay: Option<Duration>,
    /// Per cent of viewers at each uplink rate (bytes per second); empty:
    /// every viewer at `viewer_uplink`.
    pub uplink_mix: Vec<(u32, u64)>,
    /// Per cent of viewers behind NAT: no inbound connection reaches them.
    pub nat_percent: u32,
    /// Connections a node holds at most, of which at most 7/8 inbound.
    pub max_connections: usize,
    /// Gossipsub's heartbeat: mesh upkeep and IHAVE/IWANT ([`gossip`]).
    pub heartbeats: bool,
    /// TCP's first flight, bytes: a connection silent for longer than its
    /// retransmission timeout sends this much, waits a round trip for
    /// the acknowledgements, then twice as much, and so on (slow start).
    /// A live shard is larger than Linux's first flight, so it takes a
    /// round trip more than its bytes alone: the network lab's median
    /// latency agreed with the model only once its hosts' first flight
    /// was widened (BENCHMARKS, "The lab against the model"). 0: every
    /// message goes at the uplink's rate from its first byte.
    pub first_flight: usize,
}

impl Default for SwarmParams {
    /// The node benchmark's stream (1 Mb/s: 250 kB every 2 s, k = 10,
    /// m = 4) to viewers with a 10 Mb/s uplink, a 20 Mb/s broadcaster and
    /// 10–50 ms one-way latency, with the node's own defaults.
    fn default() -> Self {
        SwarmParams {
            viewers: 100,
            segments: 10,
            warmup: 2,
            segment_bytes: 250_000,
            segment_duration: Duration::from_secs(2),
            parts_per_segment: 1,
            k: 10,
            m: 4,
            dials: 16,
            viewer_uplink: 10_000_000 / 8,
            source_uplink: 20_000_000 / 8,
            latency: (Duration::from_millis(10), Duration::from_millis(50)),
            host_delays: Vec::new(),
            origin: None,
            leave: 0,
            seed: 1,
            live: LiveConfig::default(),
            engine: EngineConfig::default(),
            flood_publish: false,
            trace: None,
            arrivals: Arrivals::AtStart,
            mean_stay: None,
            uplink_mix: Vec::new(),
            nat_percent: 0,
            max_connections: usize::MAX,
            heartbeats: false,
            first_flight: FIRST_FLIGHT,
        }
    }
}

impl SwarmParams {
    /// An audience at home: viewers join over 30 s and stay 10 minutes on
    /// average, on [`HOME_UPLINKS`], 30% behind NAT, with the node's
    /// connection limit and gossipsub's mesh upkeep; 30 segments
    /// measured.
    pub fn home(viewers: usize) -> SwarmParams {
        SwarmParams {
            viewers,
            segments: 30,
            arrivals: Arrivals::Poisson {
                over: Duration::from_secs(30),
            },
            mean_stay: Some(Duration::from_secs(600)),
            uplink_mix: HOME_UPLINKS.to_vec(),
            nat_percent: 30,
            max_connections: NODE_MAX_CONNECTIONS,
            heartbeats: true,
            ..SwarmParams::default()
        }
    }
}

impl SwarmParams {
    /// The one-way latency of a new link between nodes `a` and `b`.
    fn link_latency(&self, a: usize, b: usize, rng: &mut Rng) -> Duration {
        match (self.host_delays.get(a), self.host_delays.get(b)) {
            (Some(x), Some(y)) => *x + *y,
            _ => rng.between(self.latency.0, self.latency.1),
        }
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Params(m.to_owned()));
        if self.viewers == 0 {
            return bad("a swarm needs at least one viewer");
        }
        if self.segments == 0 {
            return bad("a broadcast needs at least one measured segment");
        }
        if self.k == 0 || usize::from(self.k) + usize::from(self.m) > 256 {
            return bad("k must be at least 1 and k + m at most 256");
        }
        if self.segment_bytes < usize::from(self.k) * 32 {
            return bad("a segment must be at least 32 bytes per data shard");
        }
        if self.segment_duration.is_zero() {
            return bad("segments must have a duration");
        }
        if !(1..=shoal_protocol::channel::MAX_PARTS_PER_SEGMENT).contains(&self.parts_per_segment) {
            return bad("a segment has 1 to 256 parts");
        }
        if self.viewer_uplink == 0 || self.source_uplink == 0 {
            return bad("uplink rates must be above zero");
        }
        if self.latency.0 > self.latency.1 {
            return bad("the latency range is reversed");
        }
        if !self.host_delays.is_empty() && self.host_delays.len() != self.viewers + 1 {
            return bad("host delays need one entry per node, the broadcaster first");
        }
        if self.leave >= self.viewers {
            return bad("at least one viewer must stay");
        }
        if self.origin.as_ref().is_some_and(|o| o.rate == 0) {
            return bad("the origin's rate must be above zero");
        }
        if self.uplink_mix.iter().any(|(_, rate)| *rate == 0) {
            return bad("uplink rates must be above zero");
        }
        if !self.uplink_mix.is_empty() && self.uplink_mix.iter().map(|(p, _)| p).sum::<u32>() != 100
        {
            return bad("the uplink mix's shares must add up to 100%");
        }
        if self.nat_percent > 100 {
            return bad("at most 100% of viewers can be behind NAT");
        }
        if self.max_connections < 2 {
            return bad("a node needs at least two connections");
        }
        if self.leave > 0 && self.arrivals != Arrivals::AtStart {
            return bad("viewers arriving over time leave over time (mean stay), not at once");
        }
        if self.arrivals != Arrivals::AtStart && !self.heartbeats {
            return bad("viewers arriving over time need gossipsub's heartbeats to join the mesh");
        }
        Ok(())
    }
}

/// What a simulated broadcast measured.
#[derive(Clone, Debug)]
pub struct SwarmReport {
    pub viewers: usize,
    pub seed: u64,
    /// Viewer-segments that should have been complete (measured segments
    /// times the viewers that stayed).
    pub expected: u64,
    /// Of those, how many were complete and checked.
    pub delivered: u64,
    /// From publication to checked, over the measured segments.
    pub latency_p50: Duration,
    pub latency_p95: Duration,
    pub latency_max: Duration,
    /// Measured viewer-segments complete after their deadline (a player at
    /// hls.js's default distance from the live edge would have stalled).
    pub late: u64,
    /// Measured viewer-segments never complete.
    pub missed: u64,
    /// Shard bytes viewers got from other viewers, the broadcaster and
    /// the origin.
    pub from_peers: u64,
    pub from_source: u64,
    pub from_http: u64,
    /// Everything the broadcaster's uplink carried by the end of the run
    /// (announcements, presences and shards, duplicates included; what
    /// still waited in its queue is not counted).
    pub source_sent: u64,
    /// Shards in the messages that left the broadcaster's uplink whole (a
    /// shard sent twice counts twice).
    pub source_shards_sent: u64,
    /// Bytes of one copy of the measured segments' data shards, for scale.
    pub stream_bytes: u64,
    /// Peers that disconnected another for misbehaviour (an honest swarm
    /// has none).
    pub disconnects: u64,
    pub events: u64,
    /// Viewers arriving over time: from joining to the first segment
    /// ready, over those that got one.
    pub startup_p50: Duration,
    pub startup_p95: Duration,
    /// Viewers that stayed 10 s or more and never got a segment.
    pub never_started: u64,
    /// Viewers that joined, that left, and the most watching at once.
    pub joined: usize,
    pub left: usize,
    pub peak_audience: usize,
    /// Dials refused by a node at its connection limit, and dials to a
    /// node behind NAT.
    pub refused_dials: u64,
    pub unreachable_dials: u64,
    /// Connections a viewer still watching held at the end, on average.
    pub mean_peers: f64,
    /// Bytes of one copy of every segment published, for
    /// [`SwarmReport::copies`].
    pub published_bytes: u64,
    /// Data and parity shards per segment, for
    /// [`SwarmReport::copies_per_shard`].
    pub k: u16,
    pub m: u16,
    /// What [`SwarmParams::trace`] asked for.
    pub trace: Option<Trace>,
    /// Each viewer's session statistics as its machine kept them (what a
    /// node's gateway reports in `stats.json`), warm-up included.
    pub sessions: Vec<SessionSummary>,
}

/// One viewer's session statistics, as the node reports them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionSummary {
    pub segments: u64,
    pub missed: u64,
    pub latency_p50_ms: Option<u64>,
    pub latency_p95_ms: Option<u64>,
}

/// One node's machine as the model drove it: enough to drive a fresh
/// machine the same way and compare what it asks.
#[derive(Clone, Debug)]
pub struct Trace {
    pub node: usize,
    /// How its machine was made: [`machine`] with these.
    pub rotation: usize,
    pub base: Instant,
    pub blocks: Arc<HashMap<Cid, Vec<u8>>>,
    pub steps: Vec<TraceStep>,
}

/// One step of a [`Trace`], in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceStep {
    /// The machine was told to watch the channel.
    Watch { at: Duration, channel: ChannelId },
    /// The machine was told to publish an announcement.
    Publish {
        at: Duration,
        channel: ChannelId,
        data: Vec<u8>,
    },
    /// Blocks entered the node's store.
    Held(Vec<Cid>),
    /// Blocks left it.
    Dropped(Vec<Cid>),
    /// An input, at this simulated time.
    Input { at: Duration, input: Input<usize> },
    /// What the machine asked, in the order it asked.
    Action(Action<usize>),
}

impl SwarmReport {
    /// Share of the shard bytes viewers got from each other.
    pub fn offload(&self) -> f64 {
        let all = self.from_peers + self.from_source + self.from_http;
        if all == 0 {
            return 0.0;
        }
        self.from_peers as f64 / all as f64
    }

    /// Copies of the stream the broadcaster uploaded in shards (parity
    /// included: every shard sent once is (k + m) / k copies).
    pub fn copies(&self) -> f64 {
        self.source_shards_sent as f64 / self.published_bytes.max(1) as f64
    }

    /// How many times the broadcaster sent each shard, on average: the
    /// copies of the stream over (k + m) / k.
    pub fn copies_per_shard(&self) -> f64 {
        let n = f64::from(self.k) + f64::from(self.m);
        self.copies() * f64::from(self.k) / n.max(1.0)
    }
}

/// Runs one broadcast to the end; bounded by the simulated time.
pub fn run(params: &SwarmParams) -> Result<SwarmReport, Error> {
    params.check()?;
    let mut sim = Sim::new(params.clone());
    sim.run();
    Ok(sim.report())
}

/// A segment as the broadcaster publishes it.
struct Segment {
    manifest: SegmentManifest,
    /// The signed announcement, as gossiped.
    announcement: Vec<u8>,
    /// When the broadcaster publishes it, in simulated time.
    published: Duration,
}

/// What waits in an uplink's queue for one peer.
enum Payload {
    Bitswap {
        message: Message,
        block_bytes: usize,
        /// The answers the engine counted against the peer's queue.
        queued_presences: usize,
    },
    Announce(Arc<Vec<u8>>),
    Control(Control),
}

struct Queued {
    payload: Payload,
    size: usize,
    left: usize,
    /// When its first byte left the uplink.
    started: Option<Duration>,
}

/// A connection's TCP window, as far as the model follows it: the
/// window (it restarts from the first flight after a silence longer than
/// a retransmission timeout, and doubles only when a message fills it,
/// as Linux grows it only while it limits the sender) and the flight
/// under way.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Flight {
    /// Bytes one flight may carry.
    window: usize,
    /// When the flight under way is acknowledged and the next may leave.
    round_end: Duration,
    /// Bytes in the flight under way.
    in_round: usize,
    /// When the last message left the uplink; `None` before the first.
    last: Option<Duration>,
    /// When the last message arrives: messages keep their order.
    arrives: Duration,
}

impl Flight {
    /// A message of `size` bytes whose first byte left the uplink at
    /// `started` and its last at `done`, over a link of one-way
    /// `latency`, with a first flight of `first` bytes (0: no window):
    /// when it arrives. Its last byte leaves once both the uplink and the
    /// window let it.
    fn send(
        &mut self,
        size: usize,
        started: Duration,
        done: Duration,
        latency: Duration,
        first: usize,
    ) -> Duration {
        let rtt = latency * 2;
        let mut leaves = done;
        if first > 0 {
            if self
                .last
                .is_none_or(|last| started.saturating_sub(last) > rtt + MIN_RTO)
            {
                self.window = first;
                self.round_end = Duration::ZERO;
            }
            if started >= self.round_end {
                self.round_end = started + rtt;
                self.in_round = 0;
            }
            let room = self.window.saturating_sub(self.in_round);
            let mut left = size.saturating_sub(room);
            self.in_round += size - left;
            while left > 0 {
                // The window was full: it doubles, and the rest goes
                // when the flight before is acknowledged.
                self.window = self.window.saturating_mul(2);
                self.round_end += rtt;
                self.in_round = left.min(self.window);
                left -= self.in_round;
            }
            leaves = leaves.max(self.round_end - rtt);
        }
        self.last = Some(done);
        self.arrives = self.arrives.max(leaves + latency);
        self.arrives
    }
}

impl Payload {
    fn block_bytes(&self) -> usize {
        match self {
            Payload::Bitswap { block_bytes, .. } => *block_bytes,
            Payload::Announce(_) | Payload::Control(_) => 0,
        }
    }
}

#[derive(Default)]
struct Uplink {
    queues: HashMap<usize, VecDeque<Queued>>,
    /// Peers with something queued, in round-robin order.
    order: VecDeque<usize>,
    busy: bool,
    /// Bytes that left the uplink.
    sent: u64,
    /// The blocks in the messages that left it whole.
    block_bytes: u64,
}

enum Event {
    Publish(u64),
    /// The uplink may send its next chunk.
    Uplink(usize),
    Deliver {
        to: usize,
        from: usize,
        message: Message,
    },
    Announce {
        to: usize,
        from: usize,
        data: Arc<Vec<u8>>,
    },
    /// A message's blocks left `node`'s uplink for `peer`.
    Sent {
        node: usize,
        peer: usize,
        bytes: usize,
        presences: usize,
    },
    /// The node's machine asked to be woken now.
    Timeout {
        node: usize,
        at: Duration,
    },
    Checked {
        node: usize,
        rendition: u16,
        sequence: u64,
    },
    HttpDone {
        node: usize,
        request: HttpRequest,
        shards: Vec<Cid>,
    },
    Leave,
    /// A viewer arrives and starts watching.
    Join(usize),
    /// A viewer leaves: its connections close.
    Depart(usize),
    /// Gossipsub's heartbeat at a node.
    Heartbeat(usize),
    /// A node's ADD_PROVIDER reached the key's record holders.
    Provided {
        node: usize,
        key: Vec<u8>,
    },
    /// A node's lookup of providers ends.
    Found {
        node: usize,
        key: ProviderKey,
    },
    /// A node's lookup of the channel's record ends.
    RecordFound(usize),
    /// A dial's handshakes are done (or refused).
    Dialled {
        from: usize,
        to: usize,
        latency: Duration,
    },
    /// `peer`'s subscription to the topic reaches `to`.
    Subscription {
        to: usize,
        peer: usize,
    },
    /// A gossipsub control message arrives.
    Control {
        to: usize,
        from: usize,
        control: Control,
    },
}

struct Scheduled {
    at: Duration,
    order: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Earliest first out of a max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// A node's store in the model: which blocks it holds, their bytes shared
/// by everyone (a block is the same bytes wherever it is).
pub struct ModelStore {
    held: HashSet<Cid>,
    blocks: Arc<HashMap<Cid, Vec<u8>>>,
}

impl ModelStore {
    /// Blocks enter the store.
    pub fn hold(&mut self, cids: &[Cid]) {
        self.held.extend(cids.iter().copied());
    }

    /// Blocks leave it.
    pub fn drop_blocks(&mut self, cids: &[Cid]) {
        for cid in cids {
            self.held.remove(cid);
        }
    }
}

impl BlockSource for ModelStore {
    fn block_size(&self, cid: &Cid) -> Option<usize> {
        if self.held.contains(cid) {
            self.blocks.get(cid).map(Vec::len)
        } else {
            None
        }
    }
}

impl BlockLookup for ModelStore {
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

struct SimNode {
    machine: NodeMachine<usize, ModelStore>,
    /// Connections, with their one-way latency.
    links: BTreeMap<usize, Duration>,
    /// Of those, the ones the peer dialled.
    inbound: HashSet<usize>,
    /// The channel's topic: the mesh (the broadcaster's fanout), and
    /// gossipsub's upkeep of it.
    topic: Topic,
    /// Announcements seen, by their bytes (gossipsub's content-addressed
    /// message ids).
    seen: HashSet<MsgId>,
    uplink: Uplink,
    /// TCP's window on each connection.
    flights: HashMap<usize, Flight>,
    rate: u64,
    /// Not in the network: not yet arrived, or left.
    gone: bool,
    /// Behind NAT: no inbound connection reaches it.
    nat: bool,
    /// The node's id in the DHT.
    dht_id: u64,
    joined: Duration,
    left: Option<Duration>,
    /// The first segment ready: its sequence number, and when.
    first_ready: Option<(u64, Duration)>,
    /// The wake-up asked for last, if it is still to come.
    wake: Option<Duration>,
}

/// SplitMix64: small, seedable and good enough for drawing a topology.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed with this mean.
    fn exponential(&mut self, mean: Duration) -> Duration {
        mean.mul_f64(-(1.0 - self.unit()).ln())
    }

    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_micros() as u64;
        lo + Duration::from_micros(if span == 0 {
            0
        } else {
            self.next_u64() % (span + 1)
        })
    }
}

/// A viewer's uplink, drawn from the mix.
fn uplink_of(p: &SwarmParams, rng: &mut Rng) -> u64 {
    let mut pick = rng.below(100) as u32;
    for (share, rate) in &p.uplink_mix {
        if pick < *share {
            return *rate;
        }
        pick -= share;
    }
    p.viewer_uplink
}

/// The model's peer ids are node indices; a publisher's "peer id" in an
/// announcement is the broadcaster's.
fn publisher_of(bytes: &[u8]) -> Option<usize> {
    (bytes == b"broadcaster").then_some(SOURCE)
}

/// The machine of node `node` of a run of `p`, its wall clock starting at
/// `base`, its store empty over the run's `blocks`: what every node of the
/// model runs.
pub fn machine(
    p: &SwarmParams,
    node: usize,
    rotation: usize,
    base: Instant,
    blocks: Arc<HashMap<Cid, Vec<u8>>>,
) -> NodeMachine<usize, ModelStore> {
    let config = MachineConfig {
        engine: p.engine.clone(),
        live: p.live.clone(),
        ..MachineConfig::default()
    };
    NodeMachine::new(
        config,
        Identity {
            peer: node,
            // Nobody claims in the model: a wallet signs nothing.
            wallet: Wallet::from_bytes(&[1; 32]).expect("a valid key"),
            deployment: None,
            publisher_of,
            rotation,
        },
        ModelStore {
            held: HashSet::new(),
            blocks,
        },
        WallClock {
            at: base,
            unix_ms: BASE_MS,
        },
    )
}

struct Sim {
    p: SwarmParams,
    nodes: Vec<SimNode>,
    blocks: Arc<HashMap<Cid, Vec<u8>>>,
    segments: Vec<Segment>,
    channel: ChannelId,
    /// The channel's signed record, when it names an origin.
    record: Option<Vec<u8>>,
    queue: BinaryHeap<Scheduled>,
    order: u64,
    now: Duration,
    end: Duration,
    base: Instant,
    /// Draws made as the run goes (latencies of new links, heartbeats,
    /// lookups), apart from those that drew the idealised topology.
    rng: Rng,
    dht: dht::Dht,
    /// Every announcement by its gossip id, for IWANT answers.
    messages: HashMap<MsgId, Arc<Vec<u8>>>,
    /// (viewer, sequence) → latency, measured segments only.
    latencies: HashMap<(usize, u64), Duration>,
    disconnects: u64,
    refused_dials: u64,
    unreachable_dials: u64,
    audience: usize,
    peak_audience: usize,
    events: u64,
    trace: Option<Trace>,
}

impl Sim {
    fn new(p: SwarmParams) -> Sim {
        let mut rng = Rng(p.seed);
        let n = p.viewers + 1;
        let key = ChannelKey::from_seed(&[7; 32]);
        let channel = key.id();
        let total = p.warmup + p.segments;
        // The first segment is published a second in, after the mesh forms.
        let start = Duration::from_secs(1);
        let shard_size = p
            .segment_bytes
            .div_ceil(usize::from(p.k))
            .next_multiple_of(2);
        let mut blocks = HashMap::new();
        let mut segments = Vec::new();
        for sequence in 0..total {
            let mut shards = Vec::new();
            for index in 0..usize::from(p.k + p.m) {
                // Distinct contents, so distinct CIDs: the sequence and the
                // shard's position, then zeros.
                let mut data = vec![0u8; shard_size];
                data[..8].copy_from_slice(&sequence.to_le_bytes());
                data[8..16].copy_from_slice(&(index as u64).to_le_bytes());
                let cid = cid_of(Codec::Raw, &data);
                blocks.insert(cid, data);
                shards.push(cid);
            }
            let manifest = SegmentManifest {
                version: MANIFEST_VERSION,
                index: sequence,
                length: p.segment_bytes as u64,
                duration_us: Some(p.segment_duration.as_micros() as u64),
                hash: sha256_multihash(&sha256(&sequence.to_le_bytes()))
                    .to_bytes()
                    .to_vec(),
                k: p.k,
                m: p.m,
                shard_size: shard_size as u32,
                shards,
            };
            let (manifest_cid, manifest_bytes) = manifest.to_block();
            blocks.insert(manifest_cid, manifest_bytes.clone());
            let at = start + p.segment_duration * (sequence as u32);
            let published_ms = BASE_MS + at.as_millis() as u64;
            let per = u64::from(p.parts_per_segment);
            let part = (per > 1).then(|| PartOf {
                segment: sequence / per,
                index: (sequence % per) as u32,
                independent: sequence.is_multiple_of(per),
            });
            let announcement = key.sign_announcement(Announcement {
                version: CHANNEL_VERSION,
                channel: Vec::new(),
                rendition: 0,
                sequence,
                published_ms,
                uri: format!("segment{sequence}.ts"),
                publisher: b"broadcaster".to_vec(),
                manifest: manifest_bytes,
                part,
            });
            segments.push(Segment {
                manifest,
                announcement,
                published: at,
            });
        }
        let blocks = Arc::new(blocks);
        let base = Instant::now();
        let mut trace = None;
        // The realistic run's draws come from their own generator, so the
        // idealised topology of a seed stays what it was.
        let mut draw = Rng(p.seed ^ 0x0005_eed0_fa11_da7a);
        let nodes: Vec<SimNode> = (0..n)
            .map(|i| {
                let rotation = rng.next_u64() as usize;
                if p.trace == Some(i) {
                    trace = Some(Trace {
                        node: i,
                        rotation,
                        base,
                        blocks: blocks.clone(),
                        steps: Vec::new(),
                    });
                }
                (i, machine(&p, i, rotation, base, blocks.clone()))
            })
            .map(|(i, machine)| {
                let rate = if i == SOURCE {
                    p.source_uplink
                } else {
                    uplink_of(&p, &mut draw)
                };
                let nat = i != SOURCE && draw.below(100) < p.nat_percent as usize;
                SimNode {
                    machine,
                    links: BTreeMap::new(),
                    inbound: HashSet::new(),
                    topic: Topic::new(i != SOURCE),
                    seen: HashSet::new(),
                    uplink: Uplink::default(),
                    flights: HashMap::new(),
                    rate,
                    gone: i != SOURCE && p.arrivals != Arrivals::AtStart,
                    nat,
                    dht_id: draw.next_u64(),
                    joined: Duration::ZERO,
                    left: None,
                    first_ready: None,
                    wake: None,
                }
            })
            .collect();
        let end = start
            + p.segment_duration * (total as u32)
            + p.live.deadline(p.segment_duration.as_micros() as u64)
            + Duration::from_secs(2);
        let record = p.origin.as_ref().map(|_| {
            key.sign_record(&ChannelRecord {
                version: CHANNEL_VERSION,
                channel: channel.as_bytes().to_vec(),
                name: "model".into(),
                sequence: 1,
                expires_ms: u64::MAX,
                target_duration_us: p.segment_duration.as_micros() as u64,
                renditions: vec![LiveRendition {
                    playlist: "index.m3u8".into(),
                    segment_extension: "ts".into(),
                    ..LiveRendition::default()
                }],
                origins: vec![Origin(ORIGIN_URL.into())],
                creator: Vec::new(),
            })
        });
        let mut sim = Sim {
            p,
            nodes,
            blocks,
            segments,
            channel,
            record,
            queue: BinaryHeap::new(),
            order: 0,
            now: Duration::ZERO,
            end,
            base,
            rng: draw,
            dht: dht::Dht::default(),
            messages: HashMap::new(),
            latencies: HashMap::new(),
            disconnects: 0,
            refused_dials: 0,
            unreachable_dials: 0,
            audience: 0,
            peak_audience: 0,
            events: 0,
            trace,
        };
        for seq in 0..total {
            sim.at(sim.segments[seq as usize].published, Event::Publish(seq));
        }
        match sim.p.arrivals {
            Arrivals::AtStart => sim.start_together(&mut rng, start),
            Arrivals::Poisson { over } => sim.schedule_arrivals(over),
        }
        if sim.p.heartbeats {
            let phase = sim.rng.between(Duration::ZERO, gossip::HEARTBEAT);
            sim.at(
                gossip::HEARTBEAT_INITIAL_DELAY + phase,
                Event::Heartbeat(SOURCE),
            );
        }
        sim
    }

    /// The idealised swarm: every viewer joins at once, every connection
    /// is up, and every viewer it is connected to is subscribed to the
    /// channel's topic. With an origin, the channel's record names it, and
    /// every viewer has found the record.
    fn start_together(&mut self, rng: &mut Rng, start: Duration) {
        let n = self.p.viewers + 1;
        let channel = self.channel;
        self.connect(rng);
        self.audience = self.p.viewers;
        self.peak_audience = self.p.viewers;
        let topic = channel.topic(0);
        let now = self.instant();
        for v in 0..n {
            let peers: Vec<usize> = self.nodes[v].links.keys().copied().collect();
            for &peer in &peers {
                self.feed(v, Input::Connected(peer));
            }
            if v != SOURCE {
                self.record(v, || TraceStep::Watch {
                    at: Duration::ZERO,
                    channel,
                });
                if let Err(e) = self.nodes[v].machine.watch(channel, Vec::new(), now) {
                    unreachable!("one channel: {e}");
                }
                for &peer in peers.iter().filter(|p| **p != SOURCE) {
                    let topic = topic.clone();
                    self.feed(v, Input::Subscribed { peer, topic });
                }
                if let Some(bytes) = self.record.clone() {
                    self.feed(v, Input::Record { channel, bytes });
                }
                if self.p.heartbeats {
                    let phase = self.rng.between(Duration::ZERO, gossip::HEARTBEAT);
                    self.at(gossip::HEARTBEAT_INITIAL_DELAY + phase, Event::Heartbeat(v));
                }
            }
            self.perform(v);
        }
        if self.p.leave > 0 {
            let half = start
                + self.p.segment_duration * ((self.p.warmup + self.p.segments / 2) as u32)
                + self.p.segment_duration / 2;
            self.at(half, Event::Leave);
        }
    }

    /// Viewers arrive as a Poisson process over `over` and stay for an
    /// exponential time; the broadcaster provides the channel from the
    /// start.
    fn schedule_arrivals(&mut self, over: Duration) {
        let key = ProviderKey::Channel(self.channel).to_bytes();
        let id = self.nodes[SOURCE].dht_id;
        self.dht.provide(&key, SOURCE, id);
        let mean_gap = over / self.p.viewers as u32;
        let mut t = Duration::ZERO;
        for v in 1..=self.p.viewers {
            t += self.rng.exponential(mean_gap);
            let arrival = t.min(over);
            self.at(arrival, Event::Join(v));
            if let Some(mean) = self.p.mean_stay {
                let leave = arrival + self.rng.exponential(mean);
                if leave < self.end {
                    self.at(leave, Event::Depart(v));
                }
            }
        }
    }

    /// Every viewer dials the broadcaster and `dials` other viewers (as
    /// far as connection limits allow); each node grafts connected peers
    /// into its gossip mesh up to the mesh degree, and a peer accepts
    /// while it is under the upper bound.
    fn connect(&mut self, rng: &mut Rng) {
        let p = &self.p;
        let n = p.viewers + 1;
        let nodes = &mut self.nodes;
        let max = p.max_connections;
        let link = |nodes: &mut Vec<SimNode>, a: usize, b: usize, rng: &mut Rng| {
            if a == b
                || nodes[a].links.contains_key(&b)
                || nodes[a].links.len() >= max
                || nodes[b].links.len() >= max
                || nodes[b].inbound.len() >= max - max / 8
            {
                return;
            }
            let latency = p.link_latency(a, b, rng);
            nodes[a].links.insert(b, latency);
            nodes[b].links.insert(a, latency);
            nodes[b].inbound.insert(a);
        };
        for v in 1..n {
            link(nodes, v, SOURCE, rng);
            let dials = p.dials.min(p.viewers - 1);
            let mut tries = 0;
            while nodes[v].links.len() < dials + 1 && tries < dials * 8 {
                tries += 1;
                let other = 1 + rng.below(p.viewers);
                link(nodes, v, other, rng);
            }
        }
        let mut meshes: Vec<Vec<usize>> = vec![Vec::new(); n];
        for v in 0..n {
            let peers: Vec<usize> = nodes[v].links.keys().copied().collect();
            let mut tries = 0;
            while meshes[v].len() < gossip::MESH_N.min(peers.len()) && tries < peers.len() * 4 {
                tries += 1;
                let other = peers[rng.below(peers.len())];
                if meshes[v].contains(&other) || meshes[other].len() >= gossip::MESH_N_HIGH {
                    continue;
                }
                meshes[v].push(other);
                meshes[other].push(v);
            }
        }
        for (v, mesh) in meshes.into_iter().enumerate() {
            let peers: Vec<usize> = nodes[v].links.keys().copied().collect();
            let topic = &mut nodes[v].topic;
            for peer in peers.into_iter().filter(|p| *p != SOURCE) {
                topic.know_subscribed(peer);
            }
            // Nobody grafts the broadcaster: it publishes without
            // subscribing.
            topic.mesh = mesh.into_iter().filter(|p| *p != SOURCE).collect();
        }
    }

    fn at(&mut self, at: Duration, event: Event) {
        self.order += 1;
        self.queue.push(Scheduled {
            at,
            order: self.order,
            event,
        });
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// Feeds `node`'s machine, as the node's event loop does.
    fn feed(&mut self, node: usize, input: Input<usize>) -> Judgement {
        let now = self.instant();
        let at = self.now;
        self.record(node, || TraceStep::Input {
            at,
            input: input.clone(),
        });
        self.nodes[node].machine.handle(input, now)
    }

    /// Blocks enter `node`'s store (the model's stores write at once).
    fn hold(&mut self, node: usize, cids: &[Cid]) {
        self.record(node, || TraceStep::Held(cids.to_vec()));
        self.nodes[node].machine.store_mut().hold(cids);
    }

    /// Blocks leave `node`'s store.
    fn drop_blocks(&mut self, node: usize, cids: &[Cid]) {
        self.record(node, || TraceStep::Dropped(cids.to_vec()));
        self.nodes[node].machine.store_mut().drop_blocks(cids);
    }

    /// Adds a step to the trace, if `node` is traced.
    fn record(&mut self, node: usize, step: impl FnOnce() -> TraceStep) {
        if let Some(t) = self.trace.as_mut().filter(|t| t.node == node) {
            t.steps.push(step());
        }
    }

    fn run(&mut self) {
        while let Some(next) = self.queue.pop() {
            if next.at > self.end {
                break;
            }
            self.now = next.at;
            self.events += 1;
            self.handle(next.event);
        }
    }

    /// One simulated event, fed to the machine it concerns, whose actions
    /// are then carried out.
    fn handle(&mut self, event: Event) {
        let node = match event {
            Event::Publish(seq) => {
                self.publish(seq);
                SOURCE
            }
            Event::Uplink(node) => {
                self.uplink(node);
                return;
            }
            Event::Deliver { to, from, message } => {
                if self.nodes[to].gone || self.nodes[from].gone {
                    return;
                }
                self.feed(to, Input::Bitswap { from, message });
                to
            }
            Event::Announce { to, from, data } => {
                if !self.announced(to, from, data) {
                    return;
                }
                to
            }
            Event::Sent {
                node,
                peer,
                bytes,
                presences,
            } => {
                if self.nodes[node].gone {
                    return;
                }
                self.feed(
                    node,
                    Input::Sent {
                        to: peer,
                        bytes,
                        presences,
                    },
                );
                node
            }
            Event::Timeout { node, at } => {
                if self.nodes[node].gone || self.nodes[node].wake != Some(at) {
                    // Gone, or a wake-up asked for before a later one.
                    return;
                }
                self.nodes[node].wake = None;
                self.feed(node, Input::Timeout);
                node
            }
            Event::Checked {
                node,
                rendition,
                sequence,
            } => {
                if self.nodes[node].gone {
                    return;
                }
                let channel = self.channel;
                let input = Input::Checked {
                    channel,
                    rendition,
                    sequence,
                    ok: true,
                };
                self.feed(node, input);
                node
            }
            Event::HttpDone {
                node,
                request,
                shards,
            } => {
                if self.nodes[node].gone {
                    return;
                }
                let blocks: Vec<(Cid, Vec<u8>)> = shards
                    .iter()
                    .filter_map(|c| self.blocks.get(c).map(|b| (*c, b.clone())))
                    .collect();
                let channel = self.channel;
                self.hold(node, &shards);
                self.feed(node, Input::Stored(shards));
                let input = Input::Range {
                    channel,
                    request,
                    result: Ok(blocks),
                };
                self.feed(node, input);
                node
            }
            Event::Leave => {
                for i in 0..self.p.leave {
                    self.depart(1 + (i * self.p.viewers) / self.p.leave);
                }
                return;
            }
            Event::Join(v) => {
                self.join(v);
                v
            }
            Event::Depart(v) => {
                self.depart(v);
                return;
            }
            Event::Heartbeat(v) => {
                self.heartbeat(v);
                return;
            }
            Event::Provided { node, key } => {
                let id = self.nodes[node].dht_id;
                self.dht.provide(&key, node, id);
                return;
            }
            Event::Found { node, key } => {
                if self.nodes[node].gone {
                    return;
                }
                let providers = self.dht.providers(&key.to_bytes());
                self.feed(node, Input::Providers { key, providers });
                self.feed(node, Input::ProvidersDone(key));
                node
            }
            Event::RecordFound(node) => {
                let Some(bytes) = self.record.clone().filter(|_| !self.nodes[node].gone) else {
                    return;
                };
                let channel = self.channel;
                self.feed(node, Input::Record { channel, bytes });
                node
            }
            Event::Dialled { from, to, latency } => {
                self.dialled(from, to, latency);
                return;
            }
            Event::Subscription { to, peer } => {
                if !self.linked(to, peer) {
                    return;
                }
                let now = self.now;
                if let Some(graft) = self.nodes[to].topic.peer_subscribed(peer, now) {
                    self.enqueue(to, peer, Payload::Control(graft));
                }
                let topic = self.channel.topic(0);
                self.feed(to, Input::Subscribed { peer, topic });
                to
            }
            Event::Control { to, from, control } => {
                self.control(to, from, control);
                return;
            }
        };
        self.perform(node);
    }

    /// Whether `a` and `b` are both in the network and connected.
    fn linked(&self, a: usize, b: usize) -> bool {
        !self.nodes[a].gone && !self.nodes[b].gone && self.nodes[a].links.contains_key(&b)
    }

    /// A viewer arrives and watches the channel; its machine starts its
    /// discovery (the DHT) from there.
    fn join(&mut self, v: usize) {
        let channel = self.channel;
        let now = self.instant();
        let at = self.now;
        let node = &mut self.nodes[v];
        node.gone = false;
        node.joined = at;
        self.audience += 1;
        self.peak_audience = self.peak_audience.max(self.audience);
        self.record(v, || TraceStep::Watch { at, channel });
        if let Err(e) = self.nodes[v].machine.watch(channel, Vec::new(), now) {
            unreachable!("one channel: {e}");
        }
        let phase = self.rng.between(Duration::ZERO, gossip::HEARTBEAT);
        self.at(
            at + gossip::HEARTBEAT_INITIAL_DELAY + phase,
            Event::Heartbeat(v),
        );
    }

    /// A viewer leaves: its connections close, and its peers notice at
    /// once.
    fn depart(&mut self, gone: usize) {
        if self.nodes[gone].gone {
            return;
        }
        self.nodes[gone].gone = true;
        self.nodes[gone].left = Some(self.now);
        self.audience -= 1;
        let peers: Vec<usize> = self.nodes[gone].links.keys().copied().collect();
        for peer in peers {
            if self.nodes[peer].gone {
                continue;
            }
            let n = &mut self.nodes[peer];
            n.uplink.queues.remove(&gone);
            n.uplink.order.retain(|p| *p != gone);
            n.links.remove(&gone);
            n.flights.remove(&gone);
            n.inbound.remove(&gone);
            n.topic.peer_gone(gone);
            self.feed(peer, Input::Disconnected(gone));
            self.perform(peer);
        }
    }

    /// A dial's handshakes are over: the connection is up unless either
    /// side is gone or at its limit, or the one dialled is behind NAT.
    fn dialled(&mut self, from: usize, to: usize, latency: Duration) {
        if self.nodes[from].gone || self.nodes[to].gone || self.nodes[from].links.contains_key(&to)
        {
            return;
        }
        if self.nodes[to].nat {
            self.unreachable_dials += 1;
            return;
        }
        let max = self.p.max_connections;
        if self.nodes[from].links.len() >= max
            || self.nodes[to].links.len() >= max
            || self.nodes[to].inbound.len() >= max - max / 8
        {
            self.refused_dials += 1;
            return;
        }
        self.nodes[from].links.insert(to, latency);
        self.nodes[to].links.insert(from, latency);
        self.nodes[to].inbound.insert(from);
        for (a, b) in [(from, to), (to, from)] {
            self.feed(a, Input::Connected(b));
            // Each side sends its subscriptions as the connection opens;
            // only viewers subscribe.
            if b != SOURCE {
                self.at(self.now + latency, Event::Subscription { to: a, peer: b });
            }
            self.perform(a);
        }
    }

    /// Gossipsub's heartbeat at `node`, and the next one.
    fn heartbeat(&mut self, node: usize) {
        if self.nodes[node].gone {
            return;
        }
        let now = self.now;
        let out = self.nodes[node].topic.heartbeat(now, &mut self.rng);
        for (peer, control) in out {
            self.enqueue(node, peer, Payload::Control(control));
        }
        self.at(now + gossip::HEARTBEAT, Event::Heartbeat(node));
    }

    /// A gossipsub control message from `from` reaches `to`.
    fn control(&mut self, to: usize, from: usize, control: Control) {
        if !self.linked(to, from) {
            return;
        }
        let now = self.now;
        let node = &mut self.nodes[to];
        let answer = match control {
            Control::Graft => node.topic.handle_graft(from, now),
            Control::Prune => {
                node.topic.handle_prune(from, now);
                None
            }
            Control::IHave(ids) => {
                let seen = &node.seen;
                node.topic.handle_ihave(&ids, |id| seen.contains(id))
            }
            Control::IWant(ids) => {
                for id in node.topic.kept(&ids) {
                    if let Some(data) = self.messages.get(&id).cloned() {
                        self.enqueue(to, from, Payload::Announce(data));
                    }
                }
                None
            }
        };
        if let Some(answer) = answer {
            self.enqueue(to, from, Payload::Control(answer));
        }
    }

    /// The broadcaster imports a segment (its shards enter the store) and
    /// publishes its announcement, as `shoal broadcast` does.
    fn publish(&mut self, seq: u64) {
        let now = self.instant();
        let s = &self.segments[seq as usize];
        let (manifest_cid, _) = s.manifest.to_block();
        let mut stored = s.manifest.shards.clone();
        stored.push(manifest_cid);
        let announcement = s.announcement.clone();
        self.hold(SOURCE, &stored);
        self.feed(SOURCE, Input::Stored(stored));
        let (at, channel) = (self.now, self.channel);
        let data = announcement.clone();
        self.record(SOURCE, || TraceStep::Publish { at, channel, data });
        let machine = &mut self.nodes[SOURCE].machine;
        if let Err(e) = machine.publish(self.channel, 0, announcement, now) {
            unreachable!("the model's announcements are signed by the channel: {e}");
        }
    }

    /// A node hears an announcement: the first copy goes to its machine
    /// (gossipsub drops the others by message id), and an accepted one on
    /// to its mesh. Returns whether the machine heard it.
    fn announced(&mut self, to: usize, from: usize, data: Arc<Vec<u8>>) -> bool {
        if self.nodes[to].gone || self.nodes[from].gone {
            return false;
        }
        let id = sha256(&data);
        if !self.nodes[to].seen.insert(id) {
            return false;
        }
        let topic = self.channel.topic(0);
        // Every announcement is the broadcaster's own gossip message.
        let input = Input::Gossip {
            topic,
            data: data.to_vec(),
            author: Some(SOURCE),
        };
        let judged = self.feed(to, input);
        if judged == Judgement::Accept {
            self.nodes[to].topic.seen_message(id);
            let mesh: Vec<usize> = self.nodes[to]
                .topic
                .mesh
                .iter()
                .copied()
                .filter(|p| *p != from && *p != SOURCE)
                .collect();
            for peer in mesh {
                self.enqueue(to, peer, Payload::Announce(data.clone()));
            }
        }
        true
    }

    /// Carries out what `node`'s machine asks, as the node's event loop
    /// does, and schedules its next wake-up.
    fn perform(&mut self, node: usize) {
        while let Some(action) = self.nodes[node].machine.poll_action() {
            self.record(node, || TraceStep::Action(action.clone()));
            match action {
                Action::Send { peer, message } => {
                    let blocks = message
                        .blocks
                        .iter()
                        .filter_map(|cid| {
                            self.blocks.get(cid).map(|data| WireBlock {
                                cid: *cid,
                                data: data.clone(),
                            })
                        })
                        .collect();
                    let (block_bytes, queued_presences) =
                        (message.block_bytes, message.queued_presences);
                    // As the node's writer: the frames in turn, the queue
                    // space reported once the last is written.
                    let mut wire = message.into_messages(blocks);
                    if wire.is_empty() {
                        // Its blocks left meanwhile: the report still goes.
                        wire.push(Message::default());
                    }
                    let last = wire.len().saturating_sub(1);
                    for (i, message) in wire.into_iter().enumerate() {
                        let (block_bytes, queued_presences) = if i == last {
                            (block_bytes, queued_presences)
                        } else {
                            (0, 0)
                        };
                        self.enqueue(
                            node,
                            peer,
                            Payload::Bitswap {
                                message,
                                block_bytes,
                                queued_presences,
                            },
                        );
                    }
                }
                Action::Store { from, blocks } => {
                    // A store that writes at once: the listener's notice,
                    // then the writer's report, as in the node.
                    let cids: Vec<Cid> = blocks.iter().map(|(c, _)| *c).collect();
                    self.hold(node, &cids);
                    self.feed(node, Input::Stored(cids));
                    self.feed(node, Input::Received { from, blocks });
                }
                Action::StoreManifest { cid, .. } => self.hold(node, &[cid]),
                Action::Release { blocks } => {
                    // The node deletes a segment's blocks once it leaves
                    // the window, and so no longer serves it.
                    self.drop_blocks(node, &blocks);
                }
                Action::Check {
                    rendition,
                    sequence,
                    ..
                } => self.at(
                    self.now + CHECK,
                    Event::Checked {
                        node,
                        rendition,
                        sequence,
                    },
                ),
                Action::FetchRange { request, .. } => self.http(node, request),
                Action::ReadPlaylists { channel, .. } => {
                    // No playlists in the model: the read fails, and the
                    // session tries again later.
                    let result = Err("the model has no playlists".into());
                    self.feed(node, Input::Playlists { channel, result });
                }
                Action::Gossip { data, .. } => {
                    self.nodes[node].topic.fill_fanout(&mut self.rng);
                    let to: Vec<usize> = if self.p.flood_publish {
                        self.nodes[node].links.keys().copied().collect()
                    } else {
                        self.nodes[node].topic.mesh.clone()
                    };
                    let data = Arc::new(data);
                    let id = sha256(&data);
                    self.nodes[node].seen.insert(id);
                    if self.p.heartbeats {
                        self.nodes[node].topic.seen_message(id);
                        self.messages.insert(id, data.clone());
                    }
                    for peer in to {
                        self.enqueue(node, peer, Payload::Announce(data.clone()));
                    }
                }
                Action::Event(NodeEvent::Live {
                    event: LiveEvent::SegmentReady { sequence, .. },
                    ..
                }) => {
                    let n = &mut self.nodes[node];
                    if n.first_ready.is_none() {
                        n.first_ready = Some((sequence, self.now));
                    }
                    if sequence >= self.p.warmup {
                        let published = self.segments[sequence as usize].published;
                        self.latencies
                            .insert((node, sequence), self.now.saturating_sub(published));
                    }
                }
                Action::Ban { .. } => self.disconnects += 1,
                // Viewers arriving over time find peers through the DHT;
                // the idealised swarm's topology is drawn beforehand.
                Action::Provide { key } if self.discovers() => {
                    let at = self.now + self.lookup();
                    self.at(at, Event::Provided { node, key });
                }
                Action::FindProviders { key } if self.discovers() => {
                    let at = self.now + self.lookup();
                    self.at(at, Event::Found { node, key });
                }
                Action::FindRecord { .. } if self.discovers() && self.record.is_some() => {
                    let at = self.now + self.lookup();
                    self.at(at, Event::RecordFound(node));
                }
                Action::Dial { peer } if self.discovers() => {
                    // TCP's handshake, then Noise's and yamux's: two
                    // round trips.
                    let latency = self.p.link_latency(node, peer, &mut self.rng);
                    let at = self.now + latency * 4;
                    self.at(
                        at,
                        Event::Dialled {
                            from: node,
                            to: peer,
                            latency,
                        },
                    );
                }
                // Viewers subscribe as they join; no chain.
                Action::Unban { .. }
                | Action::Subscribe { .. }
                | Action::Unsubscribe { .. }
                | Action::Provide { .. }
                | Action::StopProviding { .. }
                | Action::FindRecord { .. }
                | Action::FindProviders { .. }
                | Action::Dial { .. }
                | Action::FetchSegment { .. }
                | Action::AskReceipts { .. }
                | Action::KeepReceipts(_)
                | Action::FetchDone { .. }
                | Action::Event(_) => {}
            }
        }
        self.wake(node);
    }

    /// Whether viewers find their peers themselves (through the DHT).
    fn discovers(&self) -> bool {
        self.p.arrivals != Arrivals::AtStart
    }

    /// How long a DHT lookup takes now.
    fn lookup(&mut self) -> Duration {
        let nodes = self.audience + 1;
        dht::lookup_time(nodes, self.p.latency, &mut self.rng)
    }

    /// Schedules `node`'s machine to be woken at its `poll_timeout`.
    fn wake(&mut self, node: usize) {
        let Some(t) = self.nodes[node].machine.poll_timeout() else {
            self.nodes[node].wake = None;
            return;
        };
        let at = t.saturating_duration_since(self.base).max(self.now);
        if self.nodes[node].wake == Some(at) {
            return;
        }
        self.nodes[node].wake = Some(at);
        self.at(at, Event::Timeout { node, at });
    }

    /// An origin answers a byte range: its data shards arrive after a
    /// round trip and the transfer at the origin's rate.
    fn http(&mut self, node: usize, request: HttpRequest) {
        let Some(origin) = self.p.origin.clone() else {
            return;
        };
        let size = u64::from(request.manifest.shard_size).max(1);
        let first = request.first_shard;
        let last = (request.end.saturating_sub(1) / size) as usize;
        let shards = request
            .manifest
            .shards
            .get(first..=last.min(usize::from(request.manifest.k) - 1))
            .map(<[Cid]>::to_vec)
            .unwrap_or_default();
        let bytes = request.end.saturating_sub(request.start);
        let transfer = Duration::from_secs_f64(bytes as f64 / origin.rate as f64);
        self.at(
            self.now + origin.rtt + transfer,
            Event::HttpDone {
                node,
                request,
                shards,
            },
        );
    }

    fn enqueue(&mut self, from: usize, to: usize, payload: Payload) {
        let size = match &payload {
            Payload::Bitswap { message, .. } => message.encode_framed().len(),
            Payload::Announce(data) => data.len() + GOSSIP_OVERHEAD,
            Payload::Control(c) => c.wire_bytes(),
        };
        let up = &mut self.nodes[from].uplink;
        let queue = up.queues.entry(to).or_default();
        if queue.is_empty() {
            up.order.push_back(to);
        }
        queue.push_back(Queued {
            payload,
            size,
            left: size,
            started: None,
        });
        if !up.busy {
            up.busy = true;
            self.at(self.now, Event::Uplink(from));
        }
    }

    /// Sends the next chunk of the uplink's round-robin.
    fn uplink(&mut self, node: usize) {
        if self.nodes[node].gone {
            return;
        }
        let rate = self.nodes[node].rate;
        let up = &mut self.nodes[node].uplink;
        let Some(peer) = up.order.pop_front() else {
            up.busy = false;
            return;
        };
        let Some(queue) = up.queues.get_mut(&peer) else {
            up.busy = false;
            return;
        };
        let Some(front) = queue.front_mut() else {
            up.busy = false;
            return;
        };
        let chunk = front.left.min(CHUNK);
        front.started.get_or_insert(self.now);
        front.left -= chunk;
        up.sent += chunk as u64;
        let done = self.now + Duration::from_secs_f64(chunk as f64 / rate as f64);
        let finished = if front.left == 0 {
            queue.pop_front()
        } else {
            None
        };
        if let Some(q) = &finished {
            up.block_bytes += q.payload.block_bytes() as u64;
        }
        if !queue.is_empty() {
            up.order.push_back(peer);
        }
        self.at(done, Event::Uplink(node));
        if let Some(q) = finished {
            let latency = self.nodes[node]
                .links
                .get(&peer)
                .copied()
                .unwrap_or_default();
            let first = self.p.first_flight;
            let arrives = self.nodes[node].flights.entry(peer).or_default().send(
                q.size,
                q.started.unwrap_or(self.now),
                done,
                latency,
                first,
            );
            match q.payload {
                Payload::Bitswap {
                    message,
                    block_bytes,
                    queued_presences,
                } => {
                    if block_bytes > 0 || queued_presences > 0 {
                        self.at(
                            done,
                            Event::Sent {
                                node,
                                peer,
                                bytes: block_bytes,
                                presences: queued_presences,
                            },
                        );
                    }
                    self.at(
                        arrives,
                        Event::Deliver {
                            to: peer,
                            from: node,
                            message,
                        },
                    );
                }
                Payload::Announce(data) => self.at(
                    arrives,
                    Event::Announce {
                        to: peer,
                        from: node,
                        data,
                    },
                ),
                Payload::Control(control) => self.at(
                    arrives,
                    Event::Control {
                        to: peer,
                        from: node,
                        control,
                    },
                ),
            }
        }
    }

    fn report(&self) -> SwarmReport {
        let deadline = self
            .p
            .live
            .deadline(self.p.segment_duration.as_micros() as u64);
        let total = self.p.warmup + self.p.segments;
        let published = |s: u64| self.segments[s as usize].published;
        // The viewer-segments that should have been complete, and the
        // viewers counted.
        let mut expected: Vec<(usize, u64)> = Vec::new();
        let mut counted: Vec<&SimNode> = Vec::new();
        let mut startups: Vec<Duration> = Vec::new();
        let mut never_started = 0;
        for (v, n) in self.nodes.iter().enumerate().skip(1) {
            match self.p.arrivals {
                // The idealised swarm counts the viewers that stayed, for
                // every measured segment.
                Arrivals::AtStart => {
                    if n.gone {
                        continue;
                    }
                    expected.extend((self.p.warmup..total).map(|s| (v, s)));
                }
                // Viewers arriving over time: every segment after their
                // first, whose deadline came before they left.
                Arrivals::Poisson { .. } => {
                    if n.gone && n.left.is_none() {
                        continue;
                    }
                    let until = n.left.unwrap_or(self.end);
                    let first = match n.first_ready {
                        Some((first, at)) => {
                            startups.push(at - n.joined);
                            Some(first)
                        }
                        None => {
                            if until.saturating_sub(n.joined) >= STARTUP_ALLOWANCE {
                                never_started += 1;
                            }
                            None
                        }
                    };
                    expected.extend(
                        (self.p.warmup..total)
                            .filter(|s| match first {
                                Some(f) => *s > f,
                                None => published(*s) >= n.joined + STARTUP_ALLOWANCE,
                            })
                            .filter(|s| published(*s) + deadline <= until)
                            .map(|s| (v, s)),
                    );
                }
            }
            counted.push(n);
        }
        let mut latencies: Vec<Duration> = expected
            .iter()
            .filter_map(|key| self.latencies.get(key).copied())
            .collect();
        latencies.sort();
        startups.sort();
        let quantile = |v: &[Duration], q: f64| -> Duration {
            if v.is_empty() {
                return Duration::ZERO;
            }
            let i = ((v.len() as f64 - 1.0) * q).round() as usize;
            v[i.min(v.len() - 1)]
        };
        let staying: Vec<&SimNode> = self.nodes[1..].iter().filter(|n| !n.gone).collect();
        let mean_peers = staying.iter().map(|n| n.links.len()).sum::<usize>() as f64
            / staying.len().max(1) as f64;
        let mut r = SwarmReport {
            viewers: self.p.viewers,
            seed: self.p.seed,
            expected: expected.len() as u64,
            delivered: latencies.len() as u64,
            latency_p50: quantile(&latencies, 0.5),
            latency_p95: quantile(&latencies, 0.95),
            latency_max: latencies.last().copied().unwrap_or_default(),
            late: latencies.iter().filter(|l| **l > deadline).count() as u64,
            missed: (expected.len() - latencies.len()) as u64,
            from_peers: 0,
            from_source: 0,
            from_http: 0,
            source_sent: self.nodes[SOURCE].uplink.sent,
            source_shards_sent: self.nodes[SOURCE].uplink.block_bytes,
            stream_bytes: self.p.segments * self.p.segment_bytes as u64,
            disconnects: self.disconnects,
            events: self.events,
            startup_p50: quantile(&startups, 0.5),
            startup_p95: quantile(&startups, 0.95),
            never_started,
            joined: counted.len().max(staying.len()),
            left: self.nodes[1..].iter().filter(|n| n.left.is_some()).count(),
            peak_audience: self.peak_audience,
            refused_dials: self.refused_dials,
            unreachable_dials: self.unreachable_dials,
            mean_peers,
            published_bytes: total * self.p.segment_bytes as u64,
            k: self.p.k,
            m: self.p.m,
            trace: self.trace.clone(),
            sessions: Vec::new(),
        };
        for n in counted {
            if let Some(s) = n.machine.live_stats(&self.channel) {
                r.from_peers += s.bytes_from_peers;
                r.from_source += s.bytes_from_source;
                r.from_http += s.bytes_from_http;
                r.sessions.push(SessionSummary {
                    segments: s.segments,
                    missed: s.missed,
                    latency_p50_ms: s.latency_quantile_ms(0.5),
                    latency_p95_ms: s.latency_quantile_ms(0.95),
                });
            }
        }
        r
    }
}

/// The reports as a table, with the model's parameters above it and,
/// where an audience size ran with several seeds, the spread.
pub fn table(params: &SwarmParams, reports: &[SwarmReport]) -> String {
    use std::fmt::Write;
    let mbps = |bytes: u64| bytes as f64 * 8.0 / 1e6;
    let ms = |d: Duration| d.as_millis();
    let realistic = params.arrivals != Arrivals::AtStart;
    let mut t = String::new();
    let uplinks = if params.uplink_mix.is_empty() {
        format!("viewer uplink {:.1} Mb/s", mbps(params.viewer_uplink))
    } else {
        let mix: Vec<String> = params
            .uplink_mix
            .iter()
            .map(|(share, rate)| format!("{share}% {:.1}", mbps(*rate)))
            .collect();
        format!("viewer uplinks {} Mb/s", mix.join(", "))
    };
    let _ = writeln!(
        t,
        "live swarm: {} kB segments every {:.1} s (k = {}, m = {}), {uplinks}, \
         broadcaster {:.1} Mb/s, one-way latency {}-{} ms, ration {} ms, source wait {} ms, \
         pacing {}{}{}{}",
        params.segment_bytes / 1000,
        params.segment_duration.as_secs_f64(),
        params.k,
        params.m,
        mbps(params.source_uplink),
        ms(params.latency.0),
        ms(params.latency.1),
        ms(params.live.ration_window),
        ms(params.live.source_wait),
        if params.engine.max_paced_bytes == usize::MAX {
            "off".to_owned()
        } else {
            format!("{} KiB", params.engine.max_paced_bytes >> 10)
        },
        match &params.origin {
            Some(o) => format!(", HTTP origin {} ms away", ms(o.rtt)),
            None => String::new(),
        },
        if params.leave > 0 {
            format!(", {} viewers leave halfway", params.leave)
        } else {
            String::new()
        },
        if params.flood_publish {
            ", flood publish"
        } else {
            ""
        },
    );
    match params.arrivals {
        Arrivals::AtStart => {
            let _ = writeln!(
                t,
                "everyone connected before the first segment, {} dials each{}",
                params.dials,
                if params.heartbeats {
                    ", gossipsub heartbeats"
                } else {
                    ""
                }
            );
        }
        Arrivals::Poisson { over } => {
            let _ = writeln!(
                t,
                "viewers arrive over {} s{}, find peers through the DHT; {}% behind NAT; \
                 at most {} connections a node; gossipsub heartbeats",
                over.as_secs(),
                match params.mean_stay {
                    Some(m) => format!(" and stay {} s on average", m.as_secs()),
                    None => String::new(),
                },
                params.nat_percent,
                params.max_connections,
            );
        }
    }
    let _ = write!(
        t,
        "viewers  seed  p50 ms  p95 ms  max ms  late  missed  offload  copies  per shard  broadcaster sent  from HTTP"
    );
    if realistic {
        let _ = write!(
            t,
            "  peak  left  startup p50/p95 ms  never  peers  refused  NAT"
        );
    }
    let _ = writeln!(t);
    for r in reports {
        let _ = write!(
            t,
            "{:>7}  {:>4}  {:>6}  {:>6}  {:>6}  {:>4}  {:>6}  {:>6.1}%  {:>6.2}  {:>9.2}  {:>13.2} MB  {:>6.2} MB",
            r.viewers,
            r.seed,
            ms(r.latency_p50),
            ms(r.latency_p95),
            ms(r.latency_max),
            r.late,
            r.missed,
            r.offload() * 100.0,
            r.copies(),
            r.copies_per_shard(),
            r.source_sent as f64 / 1e6,
            r.from_http as f64 / 1e6,
        );
        if realistic {
            let _ = write!(
                t,
                "  {:>4}  {:>4}  {:>8}/{:<9}  {:>5}  {:>5.1}  {:>7}  {:>3}",
                r.peak_audience,
                r.left,
                ms(r.startup_p50),
                ms(r.startup_p95),
                r.never_started,
                r.mean_peers,
                r.refused_dials,
                r.unreachable_dials,
            );
        }
        let _ = writeln!(t);
    }
    let mut sizes: Vec<usize> = reports.iter().map(|r| r.viewers).collect();
    sizes.dedup();
    for n in sizes {
        let runs: Vec<&SwarmReport> = reports.iter().filter(|r| r.viewers == n).collect();
        if runs.len() < 2 {
            continue;
        }
        let range = |f: &dyn Fn(&SwarmReport) -> f64| {
            let lo = runs.iter().map(|r| f(r)).fold(f64::INFINITY, f64::min);
            let hi = runs.iter().map(|r| f(r)).fold(f64::NEG_INFINITY, f64::max);
            (lo, hi)
        };
        let p95 = range(&|r| r.latency_p95.as_millis() as f64);
        let off = range(&|r| r.offload() * 100.0);
        let copies = range(&|r| r.copies());
        let per_shard = range(&|r| r.copies_per_shard());
        let missed = range(&|r| r.missed as f64);
        let _ = writeln!(
            t,
            "{n} viewers over {} seeds: p95 {:.0}-{:.0} ms, offload {:.1}-{:.1}%, copies {:.2}-{:.2} ({:.2}-{:.2} of each shard), missed {:.0}-{:.0}",
            runs.len(),
            p95.0,
            p95.1,
            off.0,
            off.1,
            copies.0,
            copies.1,
            per_shard.0,
            per_shard.1,
            missed.0,
            missed.1,
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn after_a_silence_a_message_larger_than_the_first_flight_takes_a_round_trip_more() {
        let mut f = Flight::default();
        let latency = 20 * MS;
        let t = 1000 * MS;
        // 19 kB: the first flight goes at once, the rest once it is
        // acknowledged, a round trip later.
        assert_eq!(
            f.send(19_000, t, t + MS, latency, FIRST_FLIGHT),
            t + 60 * MS
        );
        // Straight after, the burst goes on in the doubled window: the
        // second message goes in the same second flight.
        let t2 = t + 2 * MS;
        assert_eq!(
            f.send(19_000, t2, t2 + MS, latency, FIRST_FLIGHT),
            t + 60 * MS
        );
        // After a silence, a message within the first flight goes at the
        // uplink's pace.
        let t3 = t + 1000 * MS;
        assert_eq!(
            f.send(10_000, t3, t3 + MS, latency, FIRST_FLIGHT),
            t3 + 21 * MS
        );
        // Without the window: the uplink's pace alone.
        let mut off = Flight::default();
        assert_eq!(off.send(100_000, t, t + MS, latency, 0), t + 21 * MS);
    }

    #[test]
    fn a_small_message_never_overtakes_a_large_one_on_its_connection() {
        let mut f = Flight::default();
        let latency = 20 * MS;
        let t = 1000 * MS;
        let large = f.send(200_000, t, t + 10 * MS, latency, FIRST_FLIGHT);
        let small = f.send(100, t + 10 * MS, t + 11 * MS, latency, FIRST_FLIGHT);
        assert!(small >= large, "{small:?} before {large:?}");
    }
}
