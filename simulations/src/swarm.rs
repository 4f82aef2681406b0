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
//! What it leaves out: CPU time (a message is handled the instant it
//! arrives, so this measures the protocol, not a machine), connection
//! set-up (every viewer is connected and in the mesh before the first
//! segment), packet loss, gossipsub's re-grafting after churn, the DHT (a
//! viewer dials `dials` viewers chosen at random, as it would dial
//! providers found there), the time a store takes (a write is done the
//! moment it is asked for), and the parity a viewer makes for a segment an
//! origin filled in (so such a viewer serves only data shards here, which
//! makes runs with an origin pessimistic).
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
    CHANNEL_VERSION, ChannelId, ChannelKey, ChannelRecord, LiveRendition, Origin,
};
use shoal_protocol::fetch::BlockLookup;
use shoal_protocol::live::{HttpRequest, LiveConfig, LiveEvent};
use shoal_protocol::machine::{
    Action, Identity, Input, Judgement, MachineConfig, NodeEvent, NodeMachine, WallClock,
};
use shoal_protocol::manifest::MANIFEST_VERSION;
use shoal_protocol::receipt::Wallet;
use shoal_protocol::{Cid, SegmentManifest};

use crate::Error;

/// Bytes an uplink sends before it turns to the next peer's queue.
const CHUNK: usize = 16 * 1024;
/// Gossipsub's mesh degree (rust-libp2p's default `mesh_n`).
const MESH: usize = 6;
/// Gossipsub's upper bound on a node's mesh (`mesh_n_high`).
const MESH_HIGH: usize = 12;
/// A gossipsub frame's own bytes around an announcement: sender, sequence
/// number, topic, the sender's signature and key.
const GOSSIP_OVERHEAD: usize = 160;
/// Time a viewer takes to rebuild and hash a segment before the player
/// may have it.
const CHECK: Duration = Duration::from_millis(2);
/// The broadcaster.
const SOURCE: usize = 0;
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
            k: 10,
            m: 4,
            dials: 16,
            viewer_uplink: 10_000_000 / 8,
            source_uplink: 20_000_000 / 8,
            latency: (Duration::from_millis(10), Duration::from_millis(50)),
            origin: None,
            leave: 0,
            seed: 1,
            live: LiveConfig::default(),
            engine: EngineConfig::default(),
            flood_publish: false,
            trace: None,
        }
    }
}

impl SwarmParams {
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
        if self.viewer_uplink == 0 || self.source_uplink == 0 {
            return bad("uplink rates must be above zero");
        }
        if self.latency.0 > self.latency.1 {
            return bad("the latency range is reversed");
        }
        if self.leave >= self.viewers {
            return bad("at least one viewer must stay");
        }
        if self.origin.as_ref().is_some_and(|o| o.rate == 0) {
            return bad("the origin's rate must be above zero");
        }
        Ok(())
    }
}

/// What a simulated broadcast measured.
#[derive(Clone, Debug)]
pub struct SwarmReport {
    pub viewers: usize,
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
    /// What [`SwarmParams::trace`] asked for.
    pub trace: Option<Trace>,
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
}

struct Queued {
    payload: Payload,
    left: usize,
}

impl Payload {
    fn block_bytes(&self) -> usize {
        match self {
            Payload::Bitswap { block_bytes, .. } => *block_bytes,
            Payload::Announce(_) => 0,
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
    links: BTreeMap<usize, Duration>,
    mesh: Vec<usize>,
    /// Announcements seen, by their bytes (gossipsub's content-addressed
    /// message ids).
    seen: HashSet<[u8; 32]>,
    uplink: Uplink,
    rate: u64,
    gone: bool,
    /// The wake-up asked for last, if it is still to come.
    wake: Option<Duration>,
}

/// SplitMix64: small, seedable and good enough for drawing a topology.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_micros() as u64;
        lo + Duration::from_micros(if span == 0 {
            0
        } else {
            self.next() % (span + 1)
        })
    }
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
    queue: BinaryHeap<Scheduled>,
    order: u64,
    now: Duration,
    end: Duration,
    base: Instant,
    /// (viewer, sequence) → latency, measured segments only.
    latencies: HashMap<(usize, u64), Duration>,
    disconnects: u64,
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
            let announcement = key.announce(
                0,
                sequence,
                published_ms,
                &format!("segment{sequence}.ts"),
                b"broadcaster",
                manifest_bytes,
            );
            segments.push(Segment {
                manifest,
                announcement,
                published: at,
            });
        }
        let blocks = Arc::new(blocks);
        let base = Instant::now();
        let mut trace = None;
        let nodes: Vec<SimNode> = (0..n)
            .map(|i| {
                let rotation = rng.next() as usize;
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
            .map(|(i, machine)| SimNode {
                machine,
                links: BTreeMap::new(),
                mesh: Vec::new(),
                seen: HashSet::new(),
                uplink: Uplink::default(),
                rate: if i == SOURCE {
                    p.source_uplink
                } else {
                    p.viewer_uplink
                },
                gone: false,
                wake: None,
            })
            .collect();
        let end = start
            + p.segment_duration * (total as u32)
            + p.live.deadline(p.segment_duration.as_micros() as u64)
            + Duration::from_secs(2);
        let mut sim = Sim {
            p,
            nodes,
            blocks,
            segments,
            channel,
            queue: BinaryHeap::new(),
            order: 0,
            now: Duration::ZERO,
            end,
            base,
            latencies: HashMap::new(),
            disconnects: 0,
            events: 0,
            trace,
        };
        sim.connect(&mut rng);
        for seq in 0..total {
            sim.at(sim.segments[seq as usize].published, Event::Publish(seq));
        }
        // Viewers join: every one watches the channel, every connection is
        // up, and every viewer it is connected to is subscribed to the
        // channel's topic. With an origin, the channel's record names it,
        // and every viewer has found the record.
        let topic = channel.topic(0);
        let record = sim.p.origin.as_ref().map(|_| {
            key.sign_record(&ChannelRecord {
                version: CHANNEL_VERSION,
                channel: channel.as_bytes().to_vec(),
                name: "model".into(),
                sequence: 1,
                expires_ms: u64::MAX,
                target_duration_us: sim.p.segment_duration.as_micros() as u64,
                renditions: vec![LiveRendition {
                    playlist: "index.m3u8".into(),
                    segment_extension: "ts".into(),
                    ..LiveRendition::default()
                }],
                origins: vec![Origin(ORIGIN_URL.into())],
            })
        });
        let now = sim.instant();
        for v in 0..n {
            let peers: Vec<usize> = sim.nodes[v].links.keys().copied().collect();
            for &peer in &peers {
                sim.feed(v, Input::Connected(peer));
            }
            if v != SOURCE {
                sim.record(v, || TraceStep::Watch {
                    at: Duration::ZERO,
                    channel,
                });
                if let Err(e) = sim.nodes[v].machine.watch(channel, Vec::new(), now) {
                    unreachable!("one channel: {e}");
                }
                for &peer in peers.iter().filter(|p| **p != SOURCE) {
                    let topic = topic.clone();
                    sim.feed(v, Input::Subscribed { peer, topic });
                }
                if let Some(bytes) = &record {
                    let bytes = bytes.clone();
                    sim.feed(v, Input::Record { channel, bytes });
                }
            }
            sim.perform(v);
        }
        if sim.p.leave > 0 {
            let half = start
                + sim.p.segment_duration * ((sim.p.warmup + sim.p.segments / 2) as u32)
                + sim.p.segment_duration / 2;
            sim.at(half, Event::Leave);
        }
        sim
    }

    /// Every viewer dials the broadcaster and `dials` other viewers; each
    /// node grafts connected peers into its gossip mesh up to the mesh
    /// degree, and a peer accepts while it is under the upper bound.
    fn connect(&mut self, rng: &mut Rng) {
        let p = &self.p;
        let n = p.viewers + 1;
        let nodes = &mut self.nodes;
        let link = |nodes: &mut Vec<SimNode>, a: usize, b: usize, rng: &mut Rng| {
            if a == b || nodes[a].links.contains_key(&b) {
                return;
            }
            let latency = rng.between(p.latency.0, p.latency.1);
            nodes[a].links.insert(b, latency);
            nodes[b].links.insert(a, latency);
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
        for v in 0..n {
            let peers: Vec<usize> = nodes[v].links.keys().copied().collect();
            let mut tries = 0;
            while nodes[v].mesh.len() < MESH.min(peers.len()) && tries < peers.len() * 4 {
                tries += 1;
                let other = peers[rng.below(peers.len())];
                if nodes[v].mesh.contains(&other) || nodes[other].mesh.len() >= MESH_HIGH {
                    continue;
                }
                nodes[v].mesh.push(other);
                nodes[other].mesh.push(v);
            }
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
                self.leave();
                return;
            }
        };
        self.perform(node);
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
        if !self.nodes[to].seen.insert(sha256(&data)) {
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
            let mesh: Vec<usize> = self.nodes[to]
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
                    let wire = Message {
                        wantlist: message.wantlist,
                        full: false,
                        blocks,
                        unreadable_blocks: 0,
                        presences: message.presences,
                        pending_bytes: 0,
                    };
                    self.enqueue(
                        node,
                        peer,
                        Payload::Bitswap {
                            message: wire,
                            block_bytes: message.block_bytes,
                            queued_presences: message.queued_presences,
                        },
                    );
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
                    let to: Vec<usize> = if self.p.flood_publish {
                        self.nodes[node].links.keys().copied().collect()
                    } else {
                        self.nodes[node].mesh.clone()
                    };
                    let data = Arc::new(data);
                    self.nodes[node].seen.insert(sha256(&data));
                    for peer in to {
                        self.enqueue(node, peer, Payload::Announce(data.clone()));
                    }
                }
                Action::Event(NodeEvent::Live {
                    event: LiveEvent::SegmentReady { sequence, .. },
                    ..
                }) => {
                    if sequence >= self.p.warmup {
                        let published = self.segments[sequence as usize].published;
                        self.latencies
                            .insert((node, sequence), self.now.saturating_sub(published));
                    }
                }
                Action::Ban { .. } => self.disconnects += 1,
                // The topology is modelled: no DHT, no dials, no topics
                // to join, no chain.
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
        };
        let up = &mut self.nodes[from].uplink;
        let queue = up.queues.entry(to).or_default();
        if queue.is_empty() {
            up.order.push_back(to);
        }
        queue.push_back(Queued {
            payload,
            left: size,
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
                        done + latency,
                        Event::Deliver {
                            to: peer,
                            from: node,
                            message,
                        },
                    );
                }
                Payload::Announce(data) => self.at(
                    done + latency,
                    Event::Announce {
                        to: peer,
                        from: node,
                        data,
                    },
                ),
            }
        }
    }

    /// `leave` viewers go at once; their peers notice at once (their
    /// connections close).
    fn leave(&mut self) {
        for i in 0..self.p.leave {
            let gone = 1 + (i * self.p.viewers) / self.p.leave;
            self.nodes[gone].gone = true;
            let peers: Vec<usize> = self.nodes[gone].links.keys().copied().collect();
            for peer in peers {
                if self.nodes[peer].gone {
                    continue;
                }
                let n = &mut self.nodes[peer];
                n.uplink.queues.remove(&gone);
                n.uplink.order.retain(|p| *p != gone);
                // Gone from the mesh too; gossipsub's re-grafting is not
                // modelled (the mesh is dense enough to carry on).
                n.links.remove(&gone);
                n.mesh.retain(|p| *p != gone);
                self.feed(peer, Input::Disconnected(gone));
                self.perform(peer);
            }
        }
    }

    fn report(&self) -> SwarmReport {
        let staying: Vec<&SimNode> = self.nodes[1..].iter().filter(|n| !n.gone).collect();
        let mut latencies: Vec<Duration> = self
            .latencies
            .iter()
            .filter(|((v, _), _)| !self.nodes[*v].gone)
            .map(|(_, l)| *l)
            .collect();
        latencies.sort();
        let quantile = |q: f64| -> Duration {
            if latencies.is_empty() {
                return Duration::ZERO;
            }
            let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies[i.min(latencies.len() - 1)]
        };
        let deadline = self
            .p
            .live
            .deadline(self.p.segment_duration.as_micros() as u64);
        let expected = self.p.segments * staying.len() as u64;
        let mut r = SwarmReport {
            viewers: self.p.viewers,
            expected,
            delivered: latencies.len() as u64,
            latency_p50: quantile(0.5),
            latency_p95: quantile(0.95),
            latency_max: latencies.last().copied().unwrap_or_default(),
            late: latencies.iter().filter(|l| **l > deadline).count() as u64,
            missed: expected.saturating_sub(latencies.len() as u64),
            from_peers: 0,
            from_source: 0,
            from_http: 0,
            source_sent: self.nodes[SOURCE].uplink.sent,
            source_shards_sent: self.nodes[SOURCE].uplink.block_bytes,
            stream_bytes: self.p.segments * self.p.segment_bytes as u64,
            disconnects: self.disconnects,
            events: self.events,
            trace: self.trace.clone(),
        };
        for n in staying {
            if let Some(s) = n.machine.live_stats(&self.channel) {
                r.from_peers += s.bytes_from_peers;
                r.from_source += s.bytes_from_source;
                r.from_http += s.bytes_from_http;
            }
        }
        r
    }
}

/// The reports as a table, with the model's parameters above it.
pub fn table(params: &SwarmParams, reports: &[SwarmReport]) -> String {
    use std::fmt::Write;
    let mbps = |bytes: u64| bytes as f64 * 8.0 / 1e6;
    let ms = |d: Duration| d.as_millis();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "live swarm: {} kB segments every {:.1} s (k = {}, m = {}), viewer uplink {:.1} Mb/s, \
         broadcaster {:.1} Mb/s, one-way latency {}-{} ms, {} dials, ration {} ms, source wait {} ms, \
         pacing {}{}{}{}",
        params.segment_bytes / 1000,
        params.segment_duration.as_secs_f64(),
        params.k,
        params.m,
        mbps(params.viewer_uplink),
        mbps(params.source_uplink),
        ms(params.latency.0),
        ms(params.latency.1),
        params.dials,
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
    let _ = writeln!(
        t,
        "viewers  p50 ms  p95 ms  max ms  late  missed  offload  broadcaster sent (shards)  from HTTP"
    );
    for r in reports {
        let _ = writeln!(
            t,
            "{:>7}  {:>6}  {:>6}  {:>6}  {:>4}  {:>6}  {:>6.1}%  {:>6.2} MB ({:>5.2} MB)  {:>6.2} MB",
            r.viewers,
            ms(r.latency_p50),
            ms(r.latency_p95),
            ms(r.latency_max),
            r.late,
            r.missed,
            r.offload() * 100.0,
            r.source_sent as f64 / 1e6,
            r.source_shards_sent as f64 / 1e6,
            r.from_http as f64 / 1e6,
        );
    }
    t
}
