//! A live channel's swarm in simulated time: the broadcaster and every
//! viewer run shoal's own sans-IO state machines — [`LivePlanner`] decides
//! what each viewer asks whom for, [`Engine`] answers (and the broadcaster
//! rations each new shard) — over a modelled network instead of libp2p.
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
//!   the first copy it sees to its mesh peers (six to twelve); copies go
//!   through the uplinks like any other message.
//! - **Sizes are real**: Bitswap messages are encoded with shoal's wire
//!   codec and announcements are signed, so what crosses a link is what
//!   the node would send.
//!
//! What it leaves out: CPU time (a message is handled the instant it
//! arrives, so this measures the protocol, not a machine), connection
//! set-up (every viewer is connected and in the mesh before the first
//! segment), packet loss, gossipsub's re-grafting after churn, the DHT (a
//! viewer dials `dials` viewers chosen at random, as it would dial
//! providers found there), and the parity a viewer makes for a segment an
//! origin filled in (so such a viewer serves only data shards here, which
//! makes runs with an origin pessimistic).
//!
//! Time is a virtual clock: `Instant`s handed to the state machines are a
//! fixed base plus the simulated time, so the planner's timers (source
//! wait, block timeouts, the P2P budget) run exactly as in the node, which
//! ticks every viewer's planner every 200 ms.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use shoal_protocol::bitswap::{
    BlockSource, Engine, EngineConfig, Message, Outgoing, Output, WantType, WireBlock,
};
use shoal_protocol::block::{Codec, cid_of, sha256, sha256_multihash};
use shoal_protocol::channel::{Announcement, ChannelId, ChannelKey};
use shoal_protocol::fetch::FetchAction;
use shoal_protocol::live::{LiveAction, LiveConfig, LivePlanner};
use shoal_protocol::manifest::MANIFEST_VERSION;
use shoal_protocol::{Cid, SegmentManifest};

use crate::Error;

/// How often the node ticks its planners.
const TICK: Duration = Duration::from_millis(200);
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
    manifest_cid: Cid,
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
    },
    Announce(u64),
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
    /// The broadcaster's ration of a segment's shards ends.
    EndRation(u64),
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
        sequence: u64,
    },
    /// A message's blocks left `node`'s uplink for `peer`.
    Sent {
        node: usize,
        peer: usize,
        bytes: usize,
    },
    Tick(usize),
    Checked {
        node: usize,
        rendition: u16,
        sequence: u64,
    },
    HttpDone {
        node: usize,
        rendition: u16,
        sequence: u64,
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

struct SimNode {
    engine: Engine<usize>,
    /// `None` for the broadcaster.
    planner: Option<LivePlanner<usize>>,
    held: HashSet<Cid>,
    links: BTreeMap<usize, Duration>,
    mesh: Vec<usize>,
    seen: HashSet<u64>,
    uplink: Uplink,
    rate: u64,
    gone: bool,
}

/// A node's blocks, as its engine sees them.
struct Held<'a> {
    held: &'a HashSet<Cid>,
    blocks: &'a HashMap<Cid, Vec<u8>>,
}

impl BlockSource for Held<'_> {
    fn block_size(&self, cid: &Cid) -> Option<usize> {
        if self.held.contains(cid) {
            self.blocks.get(cid).map(|b| b.len())
        } else {
            None
        }
    }
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

struct Sim {
    p: SwarmParams,
    nodes: Vec<SimNode>,
    blocks: HashMap<Cid, Vec<u8>>,
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
}

impl Sim {
    fn new(p: SwarmParams) -> Sim {
        let mut rng = Rng(p.seed);
        let n = p.viewers + 1;
        let mut nodes: Vec<SimNode> = (0..n)
            .map(|i| SimNode {
                engine: Engine::new(p.engine.clone()),
                planner: None,
                held: HashSet::new(),
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
            })
            .collect();
        // Every viewer dials the broadcaster and `dials` other viewers.
        let link = |nodes: &mut Vec<SimNode>, a: usize, b: usize, rng: &mut Rng| {
            if a == b || nodes[a].links.contains_key(&b) {
                return;
            }
            let latency = rng.between(p.latency.0, p.latency.1);
            nodes[a].links.insert(b, latency);
            nodes[b].links.insert(a, latency);
        };
        for v in 1..n {
            link(&mut nodes, v, SOURCE, &mut rng);
            let dials = p.dials.min(p.viewers - 1);
            let mut tries = 0;
            while nodes[v].links.len() < dials + 1 && tries < dials * 8 {
                tries += 1;
                let other = 1 + rng.below(p.viewers);
                link(&mut nodes, v, other, &mut rng);
            }
        }
        // Gossip mesh: each node grafts connected peers up to the mesh
        // degree, and a peer accepts while it is under the upper bound.
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
                manifest_cid,
                manifest,
                announcement,
                published: at,
            });
        }
        let base = Instant::now();
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
        };
        for seq in 0..total {
            sim.at(sim.segments[seq as usize].published, Event::Publish(seq));
        }
        // Viewers join: every connection is a candidate of the planner
        // and a peer of the engine.
        let http = sim.p.origin.is_some();
        for v in 0..n {
            let peers: Vec<usize> = sim.nodes[v].links.keys().copied().collect();
            for &peer in &peers {
                sim.nodes[v].engine.peer_connected(peer);
            }
            if v == SOURCE {
                continue;
            }
            let rotation = rng.next() as usize;
            let mut planner = LivePlanner::new(sim.p.live.clone(), rotation, http, base);
            for &peer in &peers {
                let actions = planner.add_peer(peer, base);
                debug_assert!(actions.is_empty());
            }
            sim.nodes[v].planner = Some(planner);
            let phase = Duration::from_micros(rng.next() % TICK.as_micros() as u64);
            sim.at(phase, Event::Tick(v));
        }
        if sim.p.leave > 0 {
            let half = start
                + sim.p.segment_duration * ((sim.p.warmup + sim.p.segments / 2) as u32)
                + sim.p.segment_duration / 2;
            sim.at(half, Event::Leave);
        }
        sim
    }

    /// Runs `f` on `node`'s engine with the node's blocks, then carries out
    /// what it output.
    fn engine(
        &mut self,
        node: usize,
        f: impl FnOnce(&mut Engine<usize>, &Held<'_>, &mut Vec<Output<usize>>),
    ) {
        let mut out = Vec::new();
        let n = &mut self.nodes[node];
        let store = Held {
            held: &n.held,
            blocks: &self.blocks,
        };
        f(&mut n.engine, &store, &mut out);
        self.outputs(node, out);
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

    fn now_ms(&self) -> u64 {
        BASE_MS + self.now.as_millis() as u64
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

    fn handle(&mut self, event: Event) {
        match event {
            Event::Publish(seq) => self.publish(seq),
            Event::EndRation(seq) => {
                let shards = self.segments[seq as usize].manifest.shards.clone();
                self.engine(SOURCE, |engine, store, out| {
                    for cid in &shards {
                        engine.end_ration(cid, store, out);
                    }
                });
            }
            Event::Uplink(node) => self.uplink(node),
            Event::Deliver { to, from, message } => {
                if self.nodes[to].gone || self.nodes[from].gone {
                    return;
                }
                self.engine(to, |engine, store, out| {
                    engine.on_message(&from, message, store, out)
                });
            }
            Event::Announce { to, from, sequence } => self.announced(to, from, sequence),
            Event::Sent { node, peer, bytes } => {
                if self.nodes[node].gone {
                    return;
                }
                self.engine(node, |engine, store, out| {
                    engine.sent(&peer, bytes, store, out)
                });
            }
            Event::Tick(node) => {
                if self.nodes[node].gone {
                    return;
                }
                let now = self.instant();
                let actions = match &mut self.nodes[node].planner {
                    Some(p) => p.tick(now),
                    None => return,
                };
                self.actions(node, actions);
                self.at(self.now + TICK, Event::Tick(node));
            }
            Event::Checked {
                node,
                rendition,
                sequence,
            } => {
                if self.nodes[node].gone {
                    return;
                }
                let (now, now_ms) = (self.instant(), self.now_ms());
                let Some(planner) = &mut self.nodes[node].planner else {
                    return;
                };
                let before = planner.stats().segments;
                let actions = planner.segment_checked(rendition, sequence, true, now, now_ms);
                let entered = planner.stats().segments > before;
                if entered && sequence >= self.p.warmup {
                    let published = self.segments[sequence as usize].published;
                    self.latencies
                        .insert((node, sequence), self.now.saturating_sub(published));
                }
                self.actions(node, actions);
            }
            Event::HttpDone {
                node,
                rendition,
                sequence,
                shards,
            } => {
                if self.nodes[node].gone {
                    return;
                }
                let now = self.instant();
                let mut actions = Vec::new();
                let mut out = Vec::new();
                let n = &mut self.nodes[node];
                for cid in shards {
                    if !n.held.insert(cid) {
                        continue;
                    }
                    let Some(data) = self.blocks.get(&cid) else {
                        continue;
                    };
                    if let Some(planner) = &mut n.planner {
                        actions.extend(planner.on_block(&cid, data, None, now));
                    }
                    let store = Held {
                        held: &n.held,
                        blocks: &self.blocks,
                    };
                    n.engine.block_stored(&cid, &store, &mut out);
                }
                if let Some(planner) = &mut n.planner {
                    planner.http_done(rendition, sequence, true, now);
                }
                self.outputs(node, out);
                self.actions(node, actions);
            }
            Event::Leave => self.leave(),
        }
    }

    /// The broadcaster imports a segment: stores its shards, paces and
    /// rations each, serves any want already open, and sends the
    /// announcement to its mesh.
    fn publish(&mut self, seq: u64) {
        let s = &self.segments[seq as usize];
        let shards = s.manifest.shards.clone();
        let manifest_cid = s.manifest_cid;
        let rationed = !self.p.live.ration_window.is_zero();
        let copies = self.p.live.ration_copies;
        let node = &mut self.nodes[SOURCE];
        node.held.insert(manifest_cid);
        for cid in &shards {
            node.held.insert(*cid);
            node.engine.pace(*cid);
            if rationed {
                node.engine.ration(*cid, copies);
            }
        }
        self.engine(SOURCE, |engine, store, out| {
            for cid in &shards {
                engine.block_stored(cid, store, out);
            }
        });
        // The node ends a ration on its first tick after it is due.
        if rationed {
            let tick = TICK.as_micros();
            let due = (self.now + self.p.live.ration_window)
                .as_micros()
                .div_ceil(tick)
                * tick;
            self.at(Duration::from_micros(due as u64), Event::EndRation(seq));
        }
        self.nodes[SOURCE].seen.insert(seq);
        let viewers: Vec<usize> = if self.p.flood_publish {
            self.nodes[SOURCE].links.keys().copied().collect()
        } else {
            self.nodes[SOURCE].mesh.clone()
        };
        for v in viewers {
            self.enqueue(SOURCE, v, Payload::Announce(seq));
        }
    }

    /// A viewer hears an announcement: the first copy is offered to its
    /// planner and forwarded to its mesh.
    fn announced(&mut self, to: usize, from: usize, seq: u64) {
        if self.nodes[to].gone || self.nodes[from].gone || !self.nodes[to].seen.insert(seq) {
            return;
        }
        let (now, now_ms) = (self.instant(), self.now_ms());
        let s = &self.segments[seq as usize];
        let Ok(a) = Announcement::open(&self.channel, &s.announcement) else {
            return;
        };
        let manifest_cid = s.manifest_cid;
        let node = &mut self.nodes[to];
        let Some(planner) = &mut node.planner else {
            return;
        };
        let (_, actions) = planner.offer(&a, Some(SOURCE), now, now_ms);
        node.held.insert(manifest_cid);
        let mesh: Vec<usize> = node
            .mesh
            .iter()
            .copied()
            .filter(|p| *p != from && *p != SOURCE)
            .collect();
        for peer in mesh {
            self.enqueue(to, peer, Payload::Announce(seq));
        }
        self.actions(to, actions);
    }

    /// Carries out a planner's actions at `node`.
    fn actions(&mut self, node: usize, actions: Vec<LiveAction<usize>>) {
        if actions.is_empty() {
            return;
        }
        let mut out = Vec::new();
        for action in actions {
            let n = &mut self.nodes[node];
            match action {
                LiveAction::Fetch(FetchAction::WantHave { peer, cid }) => {
                    n.engine.want(&peer, cid, WantType::Have, &mut out)
                }
                LiveAction::Fetch(FetchAction::WantBlock { peer, cid }) => {
                    n.engine.want(&peer, cid, WantType::Block, &mut out)
                }
                LiveAction::Fetch(FetchAction::Cancel { cid }) => {
                    if !n.planner.as_ref().is_some_and(|p| p.wants(&cid)) {
                        n.engine.cancel(&cid, &mut out);
                    }
                }
                LiveAction::Check {
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
                LiveAction::Release { manifest, shards } => {
                    // The node deletes a segment's blocks once it leaves
                    // the window, and so no longer serves it.
                    for cid in shards.iter().chain(std::iter::once(&manifest)) {
                        n.held.remove(cid);
                    }
                }
                LiveAction::Http(req) => {
                    let Some(origin) = self.p.origin.clone() else {
                        continue;
                    };
                    let size = u64::from(req.manifest.shard_size).max(1);
                    let first = req.first_shard;
                    let last = (req.end.saturating_sub(1) / size) as usize;
                    let shards = req
                        .manifest
                        .shards
                        .get(first..=last.min(usize::from(req.manifest.k) - 1))
                        .map(<[Cid]>::to_vec)
                        .unwrap_or_default();
                    let bytes = req.end.saturating_sub(req.start);
                    let transfer = Duration::from_secs_f64(bytes as f64 / origin.rate as f64);
                    self.at(
                        self.now + origin.rtt + transfer,
                        Event::HttpDone {
                            node,
                            rendition: req.rendition,
                            sequence: req.sequence,
                            shards,
                        },
                    );
                }
                LiveAction::ReadPlaylists => {
                    // No playlists in the model: the read fails, and the
                    // planner tries again later.
                    let now = self.base + self.now;
                    if let Some(p) = &mut n.planner {
                        p.playlists_read(false, now);
                    }
                }
                LiveAction::Proxy { .. } => {}
            }
        }
        self.outputs(node, out);
    }

    /// Carries out an engine's outputs at `node`, like the node's event
    /// loop: one message per peer per batch, received blocks stored (and
    /// served to whoever waits for them) and handed to the planner.
    fn outputs(&mut self, node: usize, outputs: Vec<Output<usize>>) {
        if outputs.is_empty() {
            return;
        }
        let now = self.instant();
        let mut sends: BTreeMap<usize, Outgoing> = BTreeMap::new();
        let mut received = Vec::new();
        let mut actions = Vec::new();
        for output in outputs {
            match output {
                Output::Send { peer, message } => sends.entry(peer).or_default().merge(message),
                Output::Received { peer, cid, data } => received.push((peer, cid, data)),
                Output::Presence {
                    peer,
                    cid,
                    presence,
                } => {
                    if let Some(p) = &mut self.nodes[node].planner {
                        actions.extend(p.on_presence(
                            &peer,
                            &cid,
                            presence == shoal_protocol::bitswap::Presence::Have,
                            now,
                        ));
                    }
                }
                Output::Disconnect { .. } => self.disconnects += 1,
            }
        }
        for (peer, out) in sends {
            let blocks = out
                .blocks
                .iter()
                .filter_map(|cid| {
                    self.blocks.get(cid).map(|data| WireBlock {
                        cid: *cid,
                        data: data.clone(),
                    })
                })
                .collect();
            let message = Message {
                wantlist: out.wantlist,
                full: false,
                blocks,
                unreadable_blocks: 0,
                presences: out.presences,
                pending_bytes: 0,
            };
            self.enqueue(
                node,
                peer,
                Payload::Bitswap {
                    message,
                    block_bytes: out.block_bytes,
                },
            );
        }
        let mut served = Vec::new();
        let n = &mut self.nodes[node];
        for (peer, cid, data) in received {
            n.held.insert(cid);
            if let Some(p) = &mut n.planner {
                actions.extend(p.on_block(&cid, &data, Some(&peer), now));
            }
            let store = Held {
                held: &n.held,
                blocks: &self.blocks,
            };
            n.engine.block_stored(&cid, &store, &mut served);
        }
        self.outputs(node, served);
        self.actions(node, actions);
    }

    fn enqueue(&mut self, from: usize, to: usize, payload: Payload) {
        let size = match &payload {
            Payload::Bitswap { message, .. } => message.encode_framed().len(),
            Payload::Announce(seq) => {
                self.segments[*seq as usize].announcement.len() + GOSSIP_OVERHEAD
            }
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
                } => {
                    if block_bytes > 0 {
                        self.at(
                            done,
                            Event::Sent {
                                node,
                                peer,
                                bytes: block_bytes,
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
                Payload::Announce(sequence) => self.at(
                    done + latency,
                    Event::Announce {
                        to: peer,
                        from: node,
                        sequence,
                    },
                ),
            }
        }
    }

    /// `leave` viewers go at once; their peers notice at once (their
    /// connections close).
    fn leave(&mut self) {
        let now = self.instant();
        for i in 0..self.p.leave {
            let gone = 1 + (i * self.p.viewers) / self.p.leave;
            self.nodes[gone].gone = true;
            let peers: Vec<usize> = self.nodes[gone].links.keys().copied().collect();
            for peer in peers {
                if self.nodes[peer].gone {
                    continue;
                }
                let n = &mut self.nodes[peer];
                n.engine.peer_disconnected(&gone);
                n.uplink.queues.remove(&gone);
                n.uplink.order.retain(|p| *p != gone);
                // Gone from the mesh too; gossipsub's re-grafting is not
                // modelled (the mesh is dense enough to carry on).
                n.links.remove(&gone);
                n.mesh.retain(|p| *p != gone);
                let actions = match &mut n.planner {
                    Some(p) => p.peer_gone(&gone, now),
                    None => Vec::new(),
                };
                self.actions(peer, actions);
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
        };
        for n in staying {
            if let Some(p) = &n.planner {
                let s = p.stats();
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
