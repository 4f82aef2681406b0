//! The viewer's side of a live channel, without I/O: which announcements to
//! accept, which shards to ask which peer for, when to turn to an HTTP
//! origin, and which segments make up the sliding window a player sees.
//!
//! For every accepted announcement a [`LivePlanner`] runs a [`GroupFetch`]
//! over the segment's shards (any `k` of `k + m`) with the connected peers
//! as candidates. The peer that published the segment is *spared*: it is
//! asked for a few shards only until [`LiveConfig::source_wait`] has
//! passed, and each viewer starts at a different shard, so the source
//! uploads each shard to a few viewers and they trade the rest. If the
//! segment is still incomplete [`LiveConfig::p2p_budget`] after it was
//! announced and the channel has HTTP origins, the planner asks for the
//! missing data shards over HTTP as one byte range (data shards are the
//! segment's own bytes, so a range of the encoder's file *is* those shards,
//! and each is verified against its CID like a block from a peer).
//!
//! A segment with `k` shards is handed to the caller to check (its hash)
//! and then enters its rendition's window; the oldest leaves it, and its
//! blocks may be released. The caller feeds the planner announcements,
//! peers, blocks, HTTP results and the time, and carries out the
//! [`LiveAction`]s it returns.
//!
//! When the channel has origins and no announcement has come for a
//! deadline's time (no peers at all, or the broadcaster is gone), the
//! planner turns into a plain HLS proxy: it asks the caller to read the
//! origin's media playlists ([`LiveAction::ReadPlaylists`]) every half
//! segment, and to fetch each new segment they list whole
//! ([`LiveAction::Proxy`]). Such a segment has no signed manifest to be
//! checked against: it is as good as the origin (and its TLS). The first
//! announcement that comes ends the proxying; sequences are the encoder's
//! media sequence numbers either way, so the window carries on.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::block::Cid;
use crate::channel::{MAX_LIVE_RENDITIONS, PartOf, RecentSegment, VerifiedAnnouncement};
use crate::fetch::{FetchAction, FetchConfig, GroupFetch};
use crate::manifest::SegmentManifest;

/// Other viewers a viewer needs before it spares the source: with fewer,
/// there is little to trade and waiting only adds latency.
const MIN_PEERS_TO_SPARE_SOURCE: usize = 2;

/// How many times, summed over the viewers a viewer knows, the source
/// should send each shard of a segment before they trade: two copies
/// survive one viewer leaving mid-segment.
pub const SOURCE_COPIES: usize = 2;

/// The fewest shards of a segment a viewer asks the source for while it
/// spares it. Of a thousand viewers, the ones that reach the broadcaster
/// may be few (18 in `shoal-sim swarm --home`, seed 1): asking one shard
/// each, they took 18 of the ration's 28 copies, and the segments came
/// at p95 4.0 s; two each fill it (2.2 s). The ration, not this
/// quota, holds the broadcaster to its copies.
const MIN_SOURCE_QUOTA: usize = 2;

/// Tells a new fetch which peers are slow lately, and how long each
/// took to deliver.
fn remember_peers<P: Clone + Ord>(
    slow: &BTreeMap<P, Instant>,
    service: &BTreeMap<P, (Duration, Instant)>,
    fetch: &mut GroupFetch<P>,
    now: Instant,
) {
    for (peer, until) in slow {
        if *until > now {
            fetch.mark_slow(peer.clone());
        }
    }
    let fresh = service
        .iter()
        .filter(|(_, (_, at))| now.saturating_duration_since(*at) < SLOW_MEMORY)
        .map(|(p, (took, _))| (p.clone(), *took));
    fetch.set_service_times(fresh.collect());
}

/// How much a new delivery time moves a peer's estimate: a quarter, so
/// that a peer whose queue filled (or emptied) is seen within a segment's
/// few blocks, while one slow block does not undo a fast record.
const SERVICE_GAIN: u32 = 4;

/// A peer is passed over when choosing whom a segment asks while its
/// delivery time is above this, and other candidates are left: a 25 kB
/// shard on a 0.5 Mb/s uplink takes 400 ms before any queue.
const SLOW_SERVICE: Duration = Duration::from_millis(300);

/// How long a peer whose requests timed out counts as slow for later
/// segments: asked only for shards nobody faster has. A viewer whose
/// uplink is below the stream's rate cannot serve many, and each segment
/// relearning that cost a request timeout (`shoal-sim swarm --home`, a
/// tenth of the viewers at 0.5 Mb/s: p50 4.1 s and 9,814 segments missed
/// at 1000 viewers, the broadcaster at 4.3 copies). Five segments.
pub const SLOW_MEMORY: Duration = Duration::from_secs(10);

/// A sequence taken from a channel record is forgotten as unannounced
/// once announcements have moved this many sequences past it (a record
/// lists six).
const MAX_UNANNOUNCED_AGE: u64 = 16;

/// At most this many sequences skipped by one announcement are held as
/// holes ([`Hole`]): gossip reorders a few messages, while a larger jump
/// is the broadcaster starting again, with nothing to wait for.
const MAX_HOLES: u64 = 16;

/// Missed segments kept for [`LivePlanner::take_missed`] between two
/// calls; beyond it they are only counted. The session takes them after
/// every input, so this bounds only a caller that never does.
const MAX_MISSED_KEPT: usize = 64;

/// How often a proxying planner reads playlists before it knows the
/// segment duration.
const PLAYLIST_INTERVAL_UNKNOWN: Duration = Duration::from_secs(1);

/// The shortest interval between two playlist reads, however short the
/// segments: an origin is not polled faster than this.
const MIN_PLAYLIST_INTERVAL: Duration = Duration::from_millis(250);

/// Limits and timings, each with the reason for its default.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// When a segment must be complete, in segment durations after its
    /// announcement. A player at hls.js's default distance from the live
    /// edge (three target durations) needs a segment about two durations
    /// after it was announced; a segment complete later is counted as a
    /// stall.
    pub deadline_durations: f64,
    /// Longest time peers have to deliver a segment before its missing
    /// shards are fetched from an HTTP origin. On loopback and LANs peers
    /// deliver in tens of milliseconds; 1.5 s leaves room for a slow
    /// uplink.
    pub p2p_budget: Duration,
    /// Peers never get more than this share of the deadline, so the
    /// origin has the rest to deliver in.
    pub p2p_share: f64,
    /// Complete segments kept per rendition: the gateway's sliding
    /// playlist, and what this viewer serves to others. Six segments let a
    /// player start three target durations behind the live edge (hls.js's
    /// default) with room to spare; phones may keep fewer.
    pub window: usize,
    /// Segments fetched at once per rendition; when a newer one would pass
    /// this, the oldest incomplete one is given up (a player at the live
    /// edge has moved past it).
    pub max_pending: usize,
    /// Most shards a viewer asks the source for before other viewers have
    /// had [`LiveConfig::source_wait`] to deliver. The quota shrinks as the
    /// audience a viewer sees grows, so that the source sends each shard
    /// about [`SOURCE_COPIES`] times however many watch.
    pub source_quota: usize,
    /// Peers asked for each segment besides the source. A viewer's
    /// want-haves, and the HAVEs it hears back, grow with this: 16 peers
    /// are 224 want-haves a segment of 14 shards, about 9 kB, against a
    /// 250 kB segment. Once a fetch asks the peer expected to deliver
    /// first, more candidates pay: in `shoal-sim swarm --home`, 1000
    /// viewers, 16 instead of 8 took p95 from 1.72-1.88 s to 1.58-1.71 s
    /// at the same copies (32: 1.53-1.66 s, with more segments missed).
    pub fetch_peers: usize,
    /// How long other viewers have to deliver shards before the source is
    /// asked for the rest. Loopback and LAN peers deliver in milliseconds,
    /// and there the wait costs nothing; on slow uplinks asking the source
    /// sooner only brings DONT_HAVE from its ration and open wants it must
    /// serve later, when the viewers have mostly traded the shards already.
    /// In `shoal-sim swarm`, 1.5 s (the P2P budget) against 300 ms cut the
    /// shards the broadcaster sent by 28% (100 viewers with 4 Mb/s
    /// uplinks: 30.9 → 22.2 MB) at the same latency; longer changed
    /// nothing.
    pub source_wait: Duration,
    /// The broadcaster's side of sparing the source: it sends each shard
    /// of a new segment to at most this many viewers (the first to ask)
    /// during [`LiveConfig::ration_window`], and tells the others DONT_HAVE
    /// so that they fetch it from those viewers. Each viewer's quota alone
    /// cannot hold the source to a few copies: a viewer does not know how
    /// many others watch, and when trading is slow every viewer turns to
    /// the source at once. Two copies survive one viewer leaving.
    pub ration_copies: usize,
    /// How long after publishing a segment the broadcaster keeps to
    /// [`LiveConfig::ration_copies`]. As long as the viewers' own
    /// [`LiveConfig::source_wait`], so that every ask a viewer makes of
    /// the source within its quota falls under the ration; a viewer it
    /// refused asks again after its wait, when the ration is over
    /// (`shoal-sim swarm --home`, 1000 viewers, seeds 1-3, against 1 s:
    /// 3.05, 2.76 and 3.26 copies of each shard against 3.35, 3.34 and
    /// 3.65, p95 2.1-2.4 s either way). Zero turns rationing off.
    pub ration_window: Duration,
    /// Announcements dated this far in the future are refused: a publisher
    /// cannot pin a segment at the live edge for ever.
    pub max_clock_skew: Duration,
    /// HTTP attempts per segment before it is left to peers alone.
    pub http_attempts: u32,
    /// One HTTP request to an origin (a segment's missing shards) may take
    /// this long; by then the segment is late anyway and the next origin
    /// or attempt is tried.
    pub origin_timeout: Duration,
    /// Latency samples kept for the percentiles.
    pub latency_samples: usize,
    pub fetch: FetchConfig,
}

impl LiveConfig {
    /// When a segment of `duration_us` must be complete, after its
    /// announcement (twice the P2P budget when the duration is unknown).
    pub fn deadline(&self, duration_us: u64) -> Duration {
        if duration_us == 0 {
            return self.p2p_budget * 2;
        }
        Duration::from_micros(duration_us).mul_f64(self.deadline_durations.max(0.0))
    }
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            deadline_durations: 2.0,
            p2p_budget: Duration::from_millis(1500),
            p2p_share: 0.5,
            window: 6,
            max_pending: 4,
            source_quota: 3,
            fetch_peers: 16,
            source_wait: Duration::from_millis(1500),
            ration_copies: SOURCE_COPIES,
            ration_window: Duration::from_millis(1500),
            max_clock_skew: Duration::from_secs(30),
            http_attempts: 3,
            origin_timeout: Duration::from_secs(5),
            latency_samples: 1024,
            fetch: FetchConfig {
                // A live shard is small and urgent: move on quickly.
                block_timeout: Duration::from_millis(750),
                // A shard not in 300 ms waits in its sender's queue behind
                // others' copies: ask for another beside it. In
                // `shoal-sim swarm --home`, 1000 viewers, seeds 1-3, this
                // took p95 from 2.19-2.43 s to 1.89-2.14 s, for 0.2-0.3
                // more copies of each shard (BENCHMARKS, "Where a hop's
                // time goes, and hedged requests").
                hedge_after: Some(Duration::from_millis(300)),
                ..FetchConfig::default()
            },
        }
    }
}

/// What to do with a gossiped announcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// New: forward it and fetch the segment.
    Accept,
    /// Refused; the sender should be penalised.
    Reject(String),
    /// Signed by the channel but not newer than what this node has: not
    /// forwarded, and nobody penalised. Gossip brings an older message
    /// late in the ordinary course (another path, IHAVE/IWANT), so its
    /// forwarder did nothing wrong.
    Stale(String),
}

/// Bytes `start..end` of a segment from an HTTP origin: data shards
/// `first_shard..` of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub rendition: u16,
    pub sequence: u64,
    /// The segment's file name relative to the rendition's playlist.
    pub uri: String,
    pub start: u64,
    pub end: u64,
    pub first_shard: usize,
    pub manifest: SegmentManifest,
}

/// What the planner asks the caller to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveAction<P> {
    Fetch(FetchAction<P>),
    Http(HttpRequest),
    /// Proxying: read every rendition's media playlist from an origin,
    /// pass each to [`LivePlanner::on_playlist`], then call
    /// [`LivePlanner::playlists_read`].
    ReadPlaylists,
    /// Proxying: fetch this segment whole from an origin, store it, and
    /// report with [`LivePlanner::proxied`].
    Proxy {
        rendition: u16,
        sequence: u64,
        /// Relative to the rendition's media playlist.
        uri: String,
        duration_us: u64,
    },
    /// Enough shards are stored: check the segment and report with
    /// [`LivePlanner::segment_checked`].
    Check {
        rendition: u16,
        sequence: u64,
        manifest: Cid,
        /// An origin delivered some of its shards: once checked, the
        /// caller should make the parity it lacks, so that it can serve
        /// peers any shard.
        from_http: bool,
    },
    /// A segment left the window (or was given up): its blocks (the
    /// manifest and the shards named) are no longer needed for playback.
    /// A segment given up before its manifest arrived names no shards.
    Release {
        manifest: Cid,
        shards: Vec<Cid>,
    },
}

/// A complete segment in a rendition's window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowSegment {
    pub sequence: u64,
    pub manifest: Cid,
    pub duration_us: u64,
    pub uri: String,
    pub length: u64,
    /// When it became complete here, in Unix milliseconds.
    pub completed_ms: u64,
    /// When this node heard of it (its announcement, or the record that
    /// listed it), in Unix milliseconds: `completed_ms` minus this is the
    /// time its fetch took.
    pub heard_ms: u64,
    /// When its publisher says it was published, in Unix milliseconds
    /// (none for a segment taken from an origin's playlist).
    pub published_ms: Option<u64>,
    /// Its shards (data then parity), released with it.
    pub shards: Vec<Cid>,
    /// Where it sits in its segment, when it is a part.
    pub part: Option<PartOf>,
}

impl WindowSegment {
    /// The segment it belongs to: itself, or the one it is a part of.
    fn group(&self) -> u64 {
        self.part.map_or(self.sequence, |p| p.segment)
    }
}

/// How many segments `units` (sorted by sequence) make: each whole
/// segment is one, and a segment's parts together are one.
pub(crate) fn groups(units: impl Iterator<Item = u64>) -> usize {
    let mut count = 0;
    let mut last = None;
    for g in units {
        if last != Some(g) {
            count += 1;
            last = Some(g);
        }
    }
    count
}

/// One entry of a rendition's playlist ([`LivePlanner::playlist`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    pub sequence: u64,
    pub duration_us: u64,
    /// Not held (given up, or passed over at its deadline): listed so
    /// that the media sequence numbers of the segments after it stay
    /// right, marked so that players skip it (`EXT-X-GAP`).
    pub gap: bool,
    /// When the broadcaster published it (Unix ms, signed in its
    /// announcement), if held.
    pub published_ms: Option<u64>,
    /// Where it sits in its segment, when it is a held part.
    pub part: Option<PartOf>,
}

/// What a rendition's playlist lists: sequences `first..=through`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ListedRange {
    first: u64,
    through: u64,
}

/// A segment fetched whole from an origin and stored
/// ([`LiveAction::Proxy`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxiedSegment {
    pub manifest: Cid,
    pub length: u64,
    /// Its shards, as the node coded and stored them.
    pub shards: Vec<Cid>,
}

/// Why a segment was given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissReason {
    /// More than [`LiveConfig::max_pending`] segments were being fetched:
    /// the oldest made way for a newer one.
    Overtaken,
    /// Its manifest, listed by a signed channel record, was not a manifest
    /// of that segment.
    BadManifest,
    /// Rebuilt from its shards, it did not match its hash.
    CheckFailed,
    /// Announcements moved [`MAX_UNANNOUNCED_AGE`] sequences past it and
    /// its own never came (gossip lost it).
    NeverAnnounced,
}

impl std::fmt::Display for MissReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MissReason::Overtaken => "overtaken by newer segments",
            MissReason::BadManifest => "its manifest was not this segment's",
            MissReason::CheckFailed => "it did not match its hash",
            MissReason::NeverAnnounced => "its announcement never came",
        })
    }
}

/// A segment given up, and how far its fetch had come: what a log needs
/// to tell a slow peer from a lost request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissedSegment {
    pub rendition: u16,
    pub sequence: u64,
    pub reason: MissReason,
    /// Since it was announced (or taken from a channel record).
    pub age: Duration,
    /// Its fetch when given up ([`GroupFetch::progress`]).
    pub progress: String,
    /// Given up before the playlist listed any segment: the viewer joined
    /// past it, and no player waited for it ([`LiveStats::skipped`]).
    pub joining: bool,
}

/// Counters of one watch session.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveStats {
    pub segments: u64,
    /// Segments given up before they were complete, once the playlist
    /// listed a segment: a player skips them.
    pub missed: u64,
    /// Segments given up while joining, before the playlist listed any:
    /// the viewer started after them, and no player waited for them.
    pub skipped: u64,
    /// Segments not there by their deadline
    /// ([`LiveConfig::deadline_durations`] after they were heard of):
    /// listed after it (a player at the live edge would have stalled), or
    /// passed over as a gap at it and complete later.
    pub late: u64,
    /// Bytes of segments from other viewers.
    pub bytes_from_peers: u64,
    /// Bytes from the peer that published the channel.
    pub bytes_from_source: u64,
    /// Bytes from HTTP origins.
    pub bytes_from_http: u64,
    /// Bytes of this channel's segments sent to other viewers.
    pub bytes_uploaded: u64,
    /// From the start of the session to the first segment its playlist
    /// listed: when a player can start.
    pub startup: Option<Duration>,
    /// Milliseconds from publication to the playlist listing the segment,
    /// most recent last.
    pub latencies_ms: VecDeque<u64>,
    pub rejected: u64,
    /// HTTP requests that failed or brought bytes that did not verify.
    pub http_failures: u64,
}

impl LiveStats {
    /// The share of bytes that came from other viewers, not from the
    /// source or an origin: what the swarm took off the broadcaster's and
    /// the CDN's hands.
    pub fn offload(&self) -> Option<f64> {
        let total = self.bytes_from_peers + self.bytes_from_source + self.bytes_from_http;
        (total > 0).then(|| self.bytes_from_peers as f64 / total as f64)
    }

    /// The `q`-quantile (0..=1) of the latencies.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<u64> {
        let mut v: Vec<u64> = self.latencies_ms.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        Some(v[i])
    }
}

enum Stage<P> {
    /// Known from a channel record: the manifest itself is fetched first.
    Manifest(GroupFetch<P>),
    Shards {
        manifest: SegmentManifest,
        fetch: GroupFetch<P>,
    },
    /// Handed to the caller to check.
    Checking { manifest: SegmentManifest },
}

struct Pending<P> {
    /// The peers this segment's fetch asks (the source and up to
    /// `fetch_peers` others).
    asked: BTreeSet<P>,
    manifest_cid: Cid,
    uri: String,
    published_ms: Option<u64>,
    announced: Instant,
    stage: Stage<P>,
    http_attempts: u32,
    http_in_flight: bool,
    /// An origin delivered some of its shards.
    from_http: bool,
    /// When the next HTTP attempt may start.
    http_after: Instant,
    /// Its deadline came while a newer segment was complete: the playlist
    /// no longer waits for it ([`LivePlanner::list`]).
    passed: bool,
    /// Where it sits in its segment, when it is a part.
    part: Option<PartOf>,
}

impl<P> Pending<P> {
    fn group(&self, sequence: u64) -> u64 {
        self.part.map_or(sequence, |p| p.segment)
    }
}

impl<P: Clone + Ord> Pending<P> {
    /// When a player at the live edge needs it: the deadline after it was
    /// heard of (`last_duration_us` while its manifest is unknown).
    fn due(&self, config: &LiveConfig, last_duration_us: u64) -> Instant {
        let duration_us = match &self.stage {
            Stage::Shards { manifest, .. } | Stage::Checking { manifest } => {
                manifest.duration_us.unwrap_or(last_duration_us)
            }
            Stage::Manifest(_) => last_duration_us,
        };
        self.announced + config.deadline(duration_us)
    }

    /// How far its fetch has come, for a log line.
    fn progress(&self) -> String {
        let http = if self.http_attempts > 0 {
            format!("; {} HTTP attempts", self.http_attempts)
        } else {
            String::new()
        };
        match &self.stage {
            Stage::Manifest(g) => format!("manifest: {}{http}", g.progress()),
            Stage::Shards { fetch, .. } => format!("shards: {}{http}", fetch.progress()),
            Stage::Checking { .. } => format!("complete, being checked{http}"),
        }
    }
}

/// A sequence skipped when a later one was announced. Gossip keeps no
/// order between the paths a message takes (with parts, five a second,
/// a unit's announcement overtaken by the next is ordinary), so its
/// announcement is taken when it comes, and the playlist waits for it
/// until its deadline as for a unit still being fetched. Forgotten, and
/// counted missed, once announcements move [`MAX_UNANNOUNCED_AGE`] past
/// it.
struct Hole {
    /// When the later announcement came.
    since: Instant,
    /// Its deadline passed: the playlist lists it as a gap.
    passed: bool,
}

struct Rendition<P> {
    /// Highest sequence announced.
    highest: Option<u64>,
    pending: BTreeMap<u64, Pending<P>>,
    window: VecDeque<WindowSegment>,
    /// Proxying: the first sequence to take from the origin's playlist.
    proxy_from: Option<u64>,
    /// Proxying: segments being fetched from the origin.
    proxying: BTreeSet<u64>,
    /// Sequences taken from a channel record whose announcement has not
    /// come yet: their announcement is no replay.
    unannounced: BTreeSet<u64>,
    /// Sequences skipped by a later announcement: theirs may still come.
    holes: BTreeMap<u64, Hole>,
    /// What the playlist lists ([`LivePlanner::list`]); none before the
    /// first segment a player may have.
    listed: Option<ListedRange>,
}

impl<P> Default for Rendition<P> {
    fn default() -> Self {
        Rendition {
            highest: None,
            pending: BTreeMap::new(),
            window: VecDeque::new(),
            proxy_from: None,
            proxying: BTreeSet::new(),
            unannounced: BTreeSet::new(),
            holes: BTreeMap::new(),
            listed: None,
        }
    }
}

impl<P> Rendition<P> {
    /// Whether a sequence is complete, being fetched, or being proxied.
    fn has(&self, sequence: u64) -> bool {
        self.pending.contains_key(&sequence)
            || self.proxying.contains(&sequence)
            || self.window.iter().any(|w| w.sequence == sequence)
    }

    /// Whether `sequence` is complete or being fetched as the segment whose
    /// manifest is `manifest`.
    fn holds(&self, sequence: u64, manifest: &Cid) -> bool {
        self.pending
            .get(&sequence)
            .is_some_and(|p| p.manifest_cid == *manifest)
            || self
                .window
                .iter()
                .any(|w| w.sequence == sequence && w.manifest == *manifest)
    }

    /// Puts a complete segment in the (sorted) window; returns the
    /// releases of those that fall out of it.
    fn enter_window<A>(&mut self, seg: WindowSegment, window: usize) -> Vec<LiveAction<A>> {
        // Segments complete out of order at times; the window stays sorted.
        let at = self.window.partition_point(|w| w.sequence < seg.sequence);
        self.holes.remove(&seg.sequence);
        self.window.insert(at, seg);
        self.trim_window(window)
    }

    /// Lets the oldest units go until the window holds `window` segments
    /// (a segment's parts count as one); returns their releases.
    fn trim_window<A>(&mut self, window: usize) -> Vec<LiveAction<A>> {
        let mut out = Vec::new();
        while groups(self.window.iter().map(WindowSegment::group)) > window.max(1) {
            if let Some(old) = self.window.pop_front() {
                out.push(LiveAction::Release {
                    manifest: old.manifest,
                    shards: old.shards,
                });
            }
        }
        out
    }
}

/// The plan of one watched channel. See the module documentation.
pub struct LivePlanner<P> {
    config: LiveConfig,
    started: Instant,
    /// Where this viewer starts in every segment's shards.
    rotation: usize,
    peers: BTreeSet<P>,
    source: Option<P>,
    /// Peers whose requests timed out lately, and until when they count
    /// as slow ([`SLOW_MEMORY`]).
    slow: BTreeMap<P, Instant>,
    /// Each candidate's delivery time (want-block to block), averaged
    /// ([`SERVICE_GAIN`]), and when it last delivered; only peers in
    /// `peers`. Forgotten after [`SLOW_MEMORY`] without a delivery, so a
    /// peer once slow is tried again.
    service: BTreeMap<P, (Duration, Instant)>,
    http: bool,
    renditions: Vec<Rendition<P>>,
    stats: LiveStats,
    /// Segments given up since [`LivePlanner::take_missed`] was last
    /// called (at most [`MAX_MISSED_KEPT`]).
    missed: Vec<MissedSegment>,
    /// The last announcement (or channel record, or the start): proxying
    /// begins a deadline after it.
    last_heard: Instant,
    /// The latest segment duration seen (0: none yet).
    last_duration_us: u64,
    /// Proxying: playlists are being read.
    playlists_in_flight: bool,
    /// Proxying: when to read the playlists next.
    playlists_due: Instant,
    /// The wall clock (Unix milliseconds) at an instant, from the last
    /// call that passed it: the playlist dates what it lists by it.
    wall: Option<(Instant, u64)>,
    /// Parts have been announced (low-latency live): the origin is not
    /// proxied, for an origin's playlist numbers whole segments and this
    /// plan's units are parts.
    parts: bool,
}

impl<P: Clone + Ord + Hash> LivePlanner<P> {
    /// A plan starting `now`. `rotation` should differ between viewers
    /// (a hash of the peer id); `http` says whether the channel has
    /// origins.
    pub fn new(config: LiveConfig, rotation: usize, http: bool, now: Instant) -> Self {
        LivePlanner {
            config,
            started: now,
            rotation,
            peers: BTreeSet::new(),
            source: None,
            slow: BTreeMap::new(),
            service: BTreeMap::new(),
            http,
            renditions: Vec::new(),
            wall: None,
            stats: LiveStats::default(),
            missed: Vec::new(),
            last_heard: now,
            last_duration_us: 0,
            playlists_in_flight: false,
            playlists_due: now,
            parts: false,
        }
    }

    /// Whether the planner is proxying an origin: the channel has origins
    /// and nothing has been announced for a deadline. Never once parts
    /// were announced: a part's deadline is a fraction of a second, and
    /// the origin's whole segments are numbered otherwise than parts.
    pub fn proxying(&self, now: Instant) -> bool {
        self.http
            && !self.parts
            && now.duration_since(self.last_heard) >= self.deadline(self.last_duration_us)
    }

    /// How often a proxying planner reads the origin's playlists: twice a
    /// segment, as players do near the live edge.
    fn playlist_interval(&self) -> Duration {
        if self.last_duration_us == 0 {
            return PLAYLIST_INTERVAL_UNKNOWN;
        }
        (Duration::from_micros(self.last_duration_us) / 2).max(MIN_PLAYLIST_INTERVAL)
    }

    /// When a segment of `duration_us` must be complete, after its
    /// announcement.
    pub fn deadline(&self, duration_us: u64) -> Duration {
        self.config.deadline(duration_us)
    }

    /// How long peers have for a segment of `duration_us` before HTTP.
    fn p2p_time(&self, duration_us: u64) -> Duration {
        self.config.p2p_budget.min(
            self.deadline(duration_us)
                .mul_f64(self.config.p2p_share.clamp(0.0, 1.0)),
        )
    }

    pub fn stats(&self) -> &LiveStats {
        &self.stats
    }

    /// The segments given up since the last call, oldest first.
    pub fn take_missed(&mut self) -> Vec<MissedSegment> {
        std::mem::take(&mut self.missed)
    }

    /// Gives up `p` (segment `sequence` of `rendition`): counts it,
    /// keeps why for [`LivePlanner::take_missed`], and cancels its fetch.
    fn miss(
        &mut self,
        rendition: u16,
        sequence: u64,
        mut p: Pending<P>,
        reason: MissReason,
        now: Instant,
    ) -> Vec<LiveAction<P>> {
        let age = now.saturating_duration_since(p.announced);
        self.count_missed(rendition, sequence, reason, age, p.progress());
        let out = give_up(&mut p);
        self.list(rendition, now);
        out
    }

    /// Counts a unit given up (missed, or skipped while joining) and keeps
    /// why for [`LivePlanner::take_missed`].
    fn count_missed(
        &mut self,
        rendition: u16,
        sequence: u64,
        reason: MissReason,
        age: Duration,
        progress: String,
    ) {
        let joining = self
            .renditions
            .get(usize::from(rendition))
            .is_none_or(|r| r.listed.is_none());
        if joining {
            self.stats.skipped += 1;
        } else {
            self.stats.missed += 1;
        }
        if self.missed.len() < MAX_MISSED_KEPT {
            self.missed.push(MissedSegment {
                rendition,
                sequence,
                reason,
                age,
                progress,
                joining,
            });
        }
    }

    /// Remembers the wall clock at `now`.
    fn note_wall(&mut self, now: Instant, now_ms: u64) {
        self.wall = Some((now, now_ms));
    }

    /// Lists for players what they may now have: the complete segments up
    /// to the first one still being fetched, the given-up ones between as
    /// gaps. A segment complete while an older one is still coming waits
    /// for it, so that a playlist never lists a segment and later one
    /// before it (its media sequence would go back) and never numbers a
    /// segment by another's place. It waits until the older one's
    /// deadline at most: then the older one is passed over as a gap (still
    /// fetched, and listed if it comes, counted late), for a player at the
    /// live edge would rather skip it than stall. Each segment
    /// counts for startup, latency and lateness when it is listed: that is
    /// when a player can have it.
    fn list(&mut self, rendition: u16, now: Instant) {
        let wall_ms = self.wall.map(|(at, ms)| {
            ms.saturating_add(now.saturating_duration_since(at).as_millis() as u64)
        });
        let config = &self.config;
        let Some(r) = self.renditions.get_mut(usize::from(rendition)) else {
            return;
        };
        let holding = r
            .pending
            .iter()
            .find(|(_, p)| !p.passed)
            .map(|(seq, _)| seq);
        let hole = r.holes.iter().find(|(_, h)| !h.passed).map(|(seq, _)| seq);
        let unresolved = [holding, hole, r.proxying.first()]
            .into_iter()
            .flatten()
            .min()
            .copied();
        let through = match unresolved {
            Some(u) => u.checked_sub(1),
            None => r.window.back().map(|w| w.sequence),
        };
        let Some(through) = through else {
            return;
        };
        let old = r.listed;
        if old.is_some_and(|l| through <= l.through) {
            return;
        }
        let first = match (old, r.window.front()) {
            (Some(l), _) => l.first,
            (None, Some(w)) if w.sequence <= through => w.sequence,
            _ => return,
        };
        r.listed = Some(ListedRange { first, through });
        let newly = r
            .window
            .iter()
            .filter(|w| w.sequence <= through && old.is_none_or(|l| w.sequence > l.through));
        for w in newly {
            let Some(wall_ms) = wall_ms else { break };
            let deadline = config.deadline(w.duration_us).as_millis() as u64;
            if wall_ms.saturating_sub(w.heard_ms) > deadline {
                self.stats.late += 1;
            }
            if let Some(published) = w.published_ms {
                self.stats
                    .latencies_ms
                    .push_back(wall_ms.saturating_sub(published));
            }
        }
        while self.stats.latencies_ms.len() > config.latency_samples {
            self.stats.latencies_ms.pop_front();
        }
        if self.stats.startup.is_none() {
            self.stats.startup = Some(now.duration_since(self.started));
        }
    }

    /// The playlist of a rendition, oldest first: complete segments and
    /// gaps where one was given up, up to the first segment still being
    /// fetched (see [`LivePlanner::list`]). Empty until a player may
    /// start. At most twice the window long, however far sequences jump.
    pub fn playlist(&self, rendition: u16) -> Vec<Listed> {
        let Some(r) = self.renditions.get(usize::from(rendition)) else {
            return Vec::new();
        };
        let Some(l) = r.listed else {
            return Vec::new();
        };
        // Twice the window's units (or its segments, for whole ones).
        let span = (2 * self.config.window.max(r.window.len()).max(1)) as u64;
        let start = r
            .window
            .front()
            .map_or(l.first, |w| w.sequence.max(l.first))
            .max(l.through.saturating_sub(span - 1));
        let duration_us = self.last_duration_us;
        let mut held = r.window.iter().filter(|w| w.sequence >= start).peekable();
        let mut out = Vec::new();
        for sequence in start..=l.through {
            out.push(match held.next_if(|w| w.sequence == sequence) {
                Some(w) => Listed {
                    sequence,
                    duration_us: w.duration_us,
                    gap: false,
                    published_ms: w.published_ms,
                    part: w.part,
                },
                None => Listed {
                    sequence,
                    duration_us,
                    gap: true,
                    published_ms: None,
                    part: None,
                },
            });
        }
        out
    }

    /// Changes how many complete segments each rendition keeps; the
    /// oldest beyond it are released.
    pub fn set_window(&mut self, window: usize) -> Vec<LiveAction<P>> {
        self.config.window = window.max(1);
        let mut out = Vec::new();
        for r in &mut self.renditions {
            out.extend(r.trim_window(self.config.window));
        }
        out
    }

    /// Counts an announcement refused before it reached the planner (bad
    /// signature or form).
    pub fn note_rejected(&mut self) {
        self.stats.rejected += 1;
    }

    pub fn set_http(&mut self, http: bool) {
        self.http = http;
    }

    /// The channel moves parts (its record says so): no proxying.
    pub fn note_parts(&mut self) {
        self.parts = true;
    }

    /// Adds to `held` every block this planner still needs: the manifests
    /// and shards of the segments in its windows and of those it fetches
    /// or checks (a manifest still being fetched names no shards yet).
    pub fn holds(&self, held: &mut std::collections::BTreeSet<Cid>) {
        held.extend(self.blocks().copied());
    }

    /// Whether `cid` is one of the blocks [`LivePlanner::holds`] names.
    pub fn has_block(&self, cid: &Cid) -> bool {
        self.blocks().any(|c| c == cid)
    }

    fn blocks(&self) -> impl Iterator<Item = &Cid> {
        self.renditions.iter().flat_map(|r| {
            let window = r
                .window
                .iter()
                .flat_map(|w| std::iter::once(&w.manifest).chain(&w.shards));
            let pending = r.pending.values().flat_map(|p| {
                let shards: &[Cid] = match &p.stage {
                    Stage::Manifest(_) => &[],
                    Stage::Shards { manifest, .. } | Stage::Checking { manifest } => {
                        &manifest.shards
                    }
                };
                std::iter::once(&p.manifest_cid).chain(shards)
            });
            window.chain(pending)
        })
    }

    /// The complete segments of a rendition, oldest first.
    pub fn window(&self, rendition: u16) -> impl Iterator<Item = &WindowSegment> {
        self.renditions
            .get(usize::from(rendition))
            .into_iter()
            .flat_map(|r| r.window.iter())
    }

    /// Renditions heard of so far.
    pub fn rendition_count(&self) -> usize {
        self.renditions.len()
    }

    /// Whether `cid` is the manifest or a shard of a complete segment in
    /// a window.
    pub fn serves(&self, cid: &Cid) -> bool {
        self.renditions
            .iter()
            .flat_map(|r| r.window.iter())
            .any(|w| w.manifest == *cid || w.shards.contains(cid))
    }

    pub fn note_uploaded(&mut self, bytes: u64) {
        self.stats.bytes_uploaded += bytes;
    }

    /// Whether a block is one this plan is waiting for.
    pub fn wants(&self, cid: &Cid) -> bool {
        self.renditions
            .iter()
            .flat_map(|r| r.pending.values())
            .any(|p| match &p.stage {
                Stage::Manifest(f) | Stage::Shards { fetch: f, .. } => {
                    !f.is_complete() && f.cids().contains(cid)
                }
                Stage::Checking { .. } => false,
            })
    }

    /// The segment (rendition, sequence) a wanted block belongs to.
    pub fn segment_of(&self, cid: &Cid) -> Option<(u16, u64)> {
        self.renditions.iter().enumerate().find_map(|(ri, r)| {
            r.pending.iter().find_map(|(seq, p)| match &p.stage {
                Stage::Manifest(f) | Stage::Shards { fetch: f, .. } if f.cids().contains(cid) => {
                    Some((ri as u16, *seq))
                }
                _ => None,
            })
        })
    }

    fn rendition_mut(&mut self, rendition: u16) -> Option<&mut Rendition<P>> {
        let i = usize::from(rendition);
        if i >= MAX_LIVE_RENDITIONS {
            return None;
        }
        if self.renditions.len() <= i {
            self.renditions.resize_with(i + 1, Rendition::default);
        }
        self.renditions.get_mut(i)
    }

    /// A candidate peer: segments being fetched from fewer than
    /// `fetch_peers` peers ask it too.
    pub fn add_peer(&mut self, peer: P, now: Instant) -> Vec<LiveAction<P>> {
        if !self.peers.insert(peer.clone()) {
            return Vec::new();
        }
        let limit = self.config.fetch_peers;
        let source = self.source.clone();
        let mut out = Vec::new();
        for r in &mut self.renditions {
            for p in r.pending.values_mut() {
                let others = p
                    .asked
                    .iter()
                    .filter(|a| Some(*a) != source.as_ref())
                    .count();
                if others < limit || Some(&peer) == source.as_ref() {
                    out.extend(ask(p, peer.clone(), source.as_ref(), now));
                }
            }
        }
        out
    }

    /// A peer left: its requests move to others, and each segment that
    /// asked it asks another candidate instead.
    pub fn peer_gone(&mut self, peer: &P, now: Instant) -> Vec<LiveAction<P>> {
        self.peers.remove(peer);
        self.service.remove(peer);
        let mut out = self.each_fetch(|f| f.on_peer_gone(peer, now));
        let candidates: Vec<P> = self.peers.iter().cloned().collect();
        let source = self.source.as_ref();
        for r in &mut self.renditions {
            for p in r.pending.values_mut() {
                if !p.asked.remove(peer) {
                    continue;
                }
                if let Some(next) = candidates.iter().find(|c| !p.asked.contains(*c)) {
                    out.extend(ask(p, next.clone(), source, now));
                }
            }
        }
        out
    }

    pub fn on_presence(
        &mut self,
        peer: &P,
        cid: &Cid,
        have: bool,
        now: Instant,
    ) -> Vec<LiveAction<P>> {
        self.each_fetch(|f| f.on_presence(peer, cid, have, now))
    }

    fn each_fetch(
        &mut self,
        mut f: impl FnMut(&mut GroupFetch<P>) -> Vec<FetchAction<P>>,
    ) -> Vec<LiveAction<P>> {
        let mut out = Vec::new();
        for r in &mut self.renditions {
            for p in r.pending.values_mut() {
                if let Stage::Manifest(g) | Stage::Shards { fetch: g, .. } = &mut p.stage {
                    out.extend(f(g).into_iter().map(LiveAction::Fetch));
                }
            }
        }
        out
    }

    /// A gossiped announcement, already opened (signature and form
    /// checked); `source` is the peer that published it. `now_ms` is the
    /// wall clock in Unix milliseconds.
    pub fn offer(
        &mut self,
        a: &VerifiedAnnouncement,
        source: Option<P>,
        now: Instant,
        now_ms: u64,
    ) -> (Verdict, Vec<LiveAction<P>>) {
        self.note_wall(now, now_ms);
        let skew = self.config.max_clock_skew.as_millis() as u64;
        if a.published_ms > now_ms.saturating_add(skew) {
            self.stats.rejected += 1;
            return (
                Verdict::Reject(format!(
                    "published {} ms in the future",
                    a.published_ms - now_ms
                )),
                Vec::new(),
            );
        }
        let Some(r) = self.rendition_mut(a.rendition) else {
            self.stats.rejected += 1;
            return (
                Verdict::Reject(format!("rendition {} is out of range", a.rendition)),
                Vec::new(),
            );
        };
        let mut forgotten = Vec::new();
        if let Some(h) = r.highest
            && a.sequence <= h
        {
            if r.unannounced.contains(&a.sequence) && r.holds(a.sequence, &a.manifest_cid) {
                // Learned from the channel record before its announcement
                // came: the same segment, so a valid message to forward,
                // with nothing more to fetch. A second copy is a replay.
                r.unannounced.remove(&a.sequence);
                if let Some(p) = r.pending.get_mut(&a.sequence) {
                    p.published_ms.get_or_insert(a.published_ms);
                }
                if let Some(s) = source {
                    self.source = Some(s);
                }
                return (Verdict::Accept, Vec::new());
            }
            // Overtaken in gossip by a later one: fetched now. A second
            // copy finds no hole.
            if r.holes.remove(&a.sequence).is_none() || r.has(a.sequence) {
                return (
                    Verdict::Stale(format!(
                        "sequence {} is not after {h}: late, replayed or rewound",
                        a.sequence
                    )),
                    Vec::new(),
                );
            }
        } else {
            if let Some(h) = r.highest {
                let skipped = a.sequence - h - 1;
                if skipped <= MAX_HOLES {
                    for s in h + 1..a.sequence {
                        r.holes.insert(
                            s,
                            Hole {
                                since: now,
                                passed: false,
                            },
                        );
                    }
                }
            }
            r.highest = Some(a.sequence);
            let oldest = a.sequence.saturating_sub(MAX_UNANNOUNCED_AGE);
            r.unannounced.retain(|s| *s >= oldest);
            let kept = r.holes.split_off(&oldest);
            forgotten = std::mem::replace(&mut r.holes, kept).into_iter().collect();
        }
        // Only a segment already complete from the origin is not fetched
        // again; one still coming from it is fetched from peers as well,
        // in case the origin fails.
        let proxied = r.window.iter().any(|w| w.sequence == a.sequence);
        for (sequence, hole) in forgotten {
            let age = now.saturating_duration_since(hole.since);
            let reason = MissReason::NeverAnnounced;
            self.count_missed(a.rendition, sequence, reason, age, "never announced".into());
        }
        self.parts |= a.part.is_some();
        self.last_heard = now;
        if let Some(d) = a.manifest.duration_us.filter(|d| *d > 0) {
            self.last_duration_us = d;
        }
        if let Some(s) = source {
            self.source = Some(s);
        }
        if proxied {
            // Taken from the origin while the channel was silent: a valid
            // announcement all the same, with nothing left to fetch.
            return (Verdict::Accept, Vec::new());
        }
        let fetch = self.shard_fetch(&a.manifest, a.sequence, now);
        let stage = Stage::Shards {
            manifest: a.manifest.clone(),
            fetch,
        };
        let pending = self.pending_of(a, stage, now);
        let mut out = self.insert(a.rendition, a.sequence, pending, now);
        out.extend(self.start(a.rendition, a.sequence, now));
        (Verdict::Accept, out)
    }

    /// The pending entry of announcement `a`, at `stage`.
    fn pending_of(&self, a: &VerifiedAnnouncement, stage: Stage<P>, now: Instant) -> Pending<P> {
        Pending {
            asked: BTreeSet::new(),
            manifest_cid: a.manifest_cid,
            uri: a.uri.clone(),
            published_ms: Some(a.published_ms),
            announced: now,
            stage,
            http_attempts: 0,
            http_in_flight: false,
            from_http: false,
            http_after: now + self.p2p_time(a.manifest.duration_us.unwrap_or(0)),
            passed: false,
            part: a.part,
        }
    }

    /// An announcement this node published itself (a broadcaster that
    /// watches its own channel, for its own gateway): its blocks are in
    /// the store, so the segment is handed out to be checked at once and
    /// nothing is fetched. One not after the highest is ignored.
    pub fn offer_local(
        &mut self,
        a: &VerifiedAnnouncement,
        now: Instant,
        now_ms: u64,
    ) -> Vec<LiveAction<P>> {
        self.note_wall(now, now_ms);
        let Some(r) = self.rendition_mut(a.rendition) else {
            return Vec::new();
        };
        if r.highest.is_some_and(|h| a.sequence <= h) {
            return Vec::new();
        }
        r.highest = Some(a.sequence);
        self.parts |= a.part.is_some();
        self.last_heard = now;
        if let Some(d) = a.manifest.duration_us.filter(|d| *d > 0) {
            self.last_duration_us = d;
        }
        let stage = Stage::Checking {
            manifest: a.manifest.clone(),
        };
        let pending = self.pending_of(a, stage, now);
        let mut out = self.insert(a.rendition, a.sequence, pending, now);
        out.push(LiveAction::Check {
            rendition: a.rendition,
            sequence: a.sequence,
            manifest: a.manifest_cid,
            from_http: false,
        });
        out
    }

    /// Segments listed by a channel record, for a viewer that joins late:
    /// their manifests are fetched, then their shards. Ignored for a
    /// rendition that already has announcements.
    pub fn seed(
        &mut self,
        rendition: u16,
        recent: &[RecentSegment],
        uri_of: impl Fn(u64) -> String,
        now: Instant,
    ) -> Vec<LiveAction<P>> {
        let config = self.config.fetch.clone();
        let window = self.config.window;
        let budget = self.config.p2p_budget;
        // No more than the fetches allowed at once, less one for the next
        // announcement: a seed beyond that would be given up (and counted
        // missed) as soon as the live edge moves.
        let room = self.config.max_pending.saturating_sub(1).max(1);
        let Some(r) = self.rendition_mut(rendition) else {
            return Vec::new();
        };
        if r.highest.is_some() {
            return Vec::new();
        }
        let take = recent.len().min(window).min(room);
        let mut started = Vec::new();
        let mut duration = 0;
        for s in &recent[recent.len() - take..] {
            duration = s.duration_us;
            if r.has(s.sequence) {
                continue;
            }
            r.highest = Some(s.sequence);
            r.unannounced.insert(s.sequence);
            r.pending.insert(
                s.sequence,
                Pending {
                    asked: BTreeSet::new(),
                    manifest_cid: s.manifest,
                    uri: uri_of(s.sequence),
                    published_ms: None,
                    announced: now,
                    stage: Stage::Manifest(GroupFetch::new(config.clone(), vec![s.manifest], 1)),
                    http_attempts: 0,
                    http_in_flight: false,
                    from_http: false,
                    http_after: now + budget,
                    passed: false,
                    part: None,
                },
            );
            started.push(s.sequence);
        }
        if !started.is_empty() {
            self.last_heard = now;
        }
        if duration > 0 {
            self.last_duration_us = duration;
        }
        let mut out = Vec::new();
        for seq in started {
            out.extend(self.start(rendition, seq, now));
        }
        out
    }

    /// Tells a new fetch which peers are slow lately, and how long each
    /// took to deliver.
    fn remember_peers(&self, fetch: &mut GroupFetch<P>, now: Instant) {
        remember_peers(&self.slow, &self.service, fetch, now);
    }

    fn shard_fetch(&self, m: &SegmentManifest, sequence: u64, now: Instant) -> GroupFetch<P> {
        let mut fetch = GroupFetch::new(
            self.config.fetch.clone(),
            m.shards.clone(),
            usize::from(m.k),
        );
        self.remember_peers(&mut fetch, now);
        let n = m.shards.len().max(1);
        fetch.rotate((self.rotation.wrapping_add(sequence as usize)) % n);
        // Sparing the source pays only when other viewers can trade; a
        // lone viewer would just wait.
        if let Some(s) = &self.source {
            let others = self.peers.iter().filter(|p| *p != s).count();
            let quota = (SOURCE_COPIES * n)
                .div_ceil(others + 1)
                .max(MIN_SOURCE_QUOTA);
            if others >= MIN_PEERS_TO_SPARE_SOURCE && quota <= self.config.source_quota.max(1) {
                fetch.spare(s.clone(), quota, now + self.config.source_wait);
            }
        }
        fetch
    }

    /// Adds a pending segment, giving up the oldest beyond `max_pending`.
    fn insert(
        &mut self,
        rendition: u16,
        sequence: u64,
        pending: Pending<P>,
        now: Instant,
    ) -> Vec<LiveAction<P>> {
        let max = self.config.max_pending.max(1);
        let mut out = Vec::new();
        let Some(r) = self.rendition_mut(rendition) else {
            return out;
        };
        r.pending.insert(sequence, pending);
        let mut given_up = Vec::new();
        // A segment's parts count as one.
        while groups(r.pending.iter().map(|(seq, p)| p.group(*seq))) > max {
            if let Some(oldest) = r.pending.pop_first() {
                given_up.push(oldest);
            }
        }
        for (seq, p) in given_up {
            out.extend(self.miss(rendition, seq, p, MissReason::Overtaken, now));
        }
        out
    }

    /// Asks the source and up to `fetch_peers` other candidates (a
    /// different selection for each segment and viewer) for a segment's
    /// blocks.
    fn start(&mut self, rendition: u16, sequence: u64, now: Instant) -> Vec<LiveAction<P>> {
        let mut others: Vec<((bool, u64), P)> = self
            .peers
            .iter()
            .filter(|p| Some(*p) != self.source.as_ref())
            .map(|p| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (self.rotation, sequence, p).hash(&mut h);
                // Peers lately slow to deliver come last.
                let slow = self.service.get(p).is_some_and(|(took, at)| {
                    *took > SLOW_SERVICE && now.saturating_duration_since(*at) < SLOW_MEMORY
                });
                ((slow, h.finish()), p.clone())
            })
            .collect();
        others.sort_by_key(|(key, _)| *key);
        let chosen: Vec<P> = self
            .source
            .iter()
            .filter(|s| self.peers.contains(*s))
            .cloned()
            .chain(
                others
                    .into_iter()
                    .take(self.config.fetch_peers)
                    .map(|(_, p)| p),
            )
            .collect();
        let source = self.source.as_ref();
        let Some(p) = self
            .renditions
            .get_mut(usize::from(rendition))
            .and_then(|r| r.pending.get_mut(&sequence))
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for peer in chosen {
            out.extend(ask(p, peer, source, now));
        }
        out
    }

    /// A verified block arrived from `sender` (`None`: an HTTP origin);
    /// `bytes` are its contents.
    pub fn on_block(
        &mut self,
        cid: &Cid,
        bytes: &[u8],
        sender: Option<&P>,
        now: Instant,
    ) -> Vec<LiveAction<P>> {
        if let Some(sender) = sender {
            self.time_delivery(cid, sender, now);
        }
        let mut out = Vec::new();
        let mut counted = false;
        let mut advanced = Vec::new();
        let mut bad = Vec::new();
        for (ri, r) in self.renditions.iter_mut().enumerate() {
            for (seq, p) in r.pending.iter_mut() {
                match &mut p.stage {
                    Stage::Manifest(g) if g.cids().contains(cid) && !g.is_complete() => {
                        out.extend(g.on_block(cid, now).into_iter().map(LiveAction::Fetch));
                        counted = true;
                        match SegmentManifest::from_block(bytes) {
                            Ok(m) if m.index == *seq => {
                                let mut fetch = GroupFetch::new(
                                    self.config.fetch.clone(),
                                    m.shards.clone(),
                                    usize::from(m.k),
                                );
                                remember_peers(&self.slow, &self.service, &mut fetch, now);
                                let n = m.shards.len().max(1);
                                fetch.rotate(self.rotation.wrapping_add(*seq as usize) % n);
                                p.stage = Stage::Shards { manifest: m, fetch };
                                // The shard fetch starts with no peers.
                                p.asked.clear();
                                advanced.push((ri as u16, *seq));
                            }
                            // Listed by the signed record, so only the
                            // broadcaster could have got it wrong.
                            _ => bad.push((ri, *seq)),
                        }
                    }
                    Stage::Shards { fetch, manifest } if fetch.cids().contains(cid) => {
                        if !fetch.is_complete() {
                            counted = true;
                            p.from_http |= sender.is_none();
                        }
                        out.extend(fetch.on_block(cid, now).into_iter().map(LiveAction::Fetch));
                        if fetch.is_complete() {
                            let manifest = manifest.clone();
                            p.stage = Stage::Checking { manifest };
                            out.push(LiveAction::Check {
                                rendition: ri as u16,
                                sequence: *seq,
                                manifest: p.manifest_cid,
                                from_http: p.from_http,
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        if counted {
            let n = bytes.len() as u64;
            match sender {
                None => self.stats.bytes_from_http += n,
                Some(p) if Some(p) == self.source.as_ref() => self.stats.bytes_from_source += n,
                Some(_) => self.stats.bytes_from_peers += n,
            }
        }
        for (ri, seq) in bad {
            if let Some(p) = self.renditions[ri].pending.remove(&seq) {
                out.extend(self.miss(ri as u16, seq, p, MissReason::BadManifest, now));
            }
        }
        for (r, seq) in advanced {
            out.extend(self.start(r, seq, now));
        }
        out
    }

    /// Updates `sender`'s delivery time if it sent a block it was asked
    /// for.
    fn time_delivery(&mut self, cid: &Cid, sender: &P, now: Instant) {
        if !self.peers.contains(sender) {
            return;
        }
        let asked = self
            .renditions
            .iter()
            .flat_map(|r| r.pending.values())
            .find_map(|p| match &p.stage {
                Stage::Manifest(g) | Stage::Shards { fetch: g, .. } => g.request_of(cid),
                Stage::Checking { .. } => None,
            });
        let Some((peer, at)) = asked.filter(|(p, _)| *p == sender) else {
            return;
        };
        let took = now.saturating_duration_since(at);
        let entry = self.service.entry(peer.clone()).or_insert((took, now));
        entry.0 = entry.0 - entry.0 / SERVICE_GAIN + took / SERVICE_GAIN;
        entry.1 = now;
    }

    /// The caller checked a segment handed out by [`LiveAction::Check`]:
    /// `ok` if it rebuilt and matched its hash. `now_ms` is the wall clock.
    pub fn segment_checked(
        &mut self,
        rendition: u16,
        sequence: u64,
        ok: bool,
        now: Instant,
        now_ms: u64,
    ) -> Vec<LiveAction<P>> {
        let window = self.config.window;
        let mut out = Vec::new();
        let Some(r) = self.renditions.get_mut(usize::from(rendition)) else {
            return out;
        };
        let Some(p) = r.pending.remove(&sequence) else {
            return out;
        };
        let Stage::Checking { manifest } = &p.stage else {
            r.pending.insert(sequence, p);
            return out;
        };
        if !ok {
            return self.miss(rendition, sequence, p, MissReason::CheckFailed, now);
        }
        let duration_us = manifest.duration_us.unwrap_or(0);
        let seg = WindowSegment {
            sequence,
            manifest: p.manifest_cid,
            duration_us,
            uri: p.uri.clone(),
            length: manifest.length,
            completed_ms: now_ms,
            heard_ms: now_ms.saturating_sub(now.duration_since(p.announced).as_millis() as u64),
            published_ms: p.published_ms,
            shards: manifest.shards.clone(),
            part: p.part,
        };
        // Passed over in the playlist as a gap when its deadline came.
        let passed_over = r
            .listed
            .is_some_and(|l| (l.first..=l.through).contains(&sequence));
        out.extend(r.enter_window(seg, window));
        self.stats.segments += 1;
        if passed_over {
            self.stats.late += 1;
        }
        self.note_wall(now, now_ms);
        self.list(rendition, now);
        out
    }

    /// An HTTP request ended; `ok` if every shard in it verified and was
    /// stored (the blocks themselves come through [`LivePlanner::on_block`]).
    pub fn http_done(&mut self, rendition: u16, sequence: u64, ok: bool, now: Instant) {
        let budget = self.config.p2p_budget;
        if let Some(p) = self
            .renditions
            .get_mut(usize::from(rendition))
            .and_then(|r| r.pending.get_mut(&sequence))
        {
            p.http_in_flight = false;
            if !ok {
                self.stats.http_failures += 1;
                // Back off: half the budget again before the next attempt.
                p.http_after = now + budget / 2;
            }
        }
    }

    /// Proxying: a rendition's media playlist as the origin lists it now
    /// (`segments` are `(uri, duration)` from `media_sequence` on). Asks
    /// for each segment not held or announced, starting, the first time,
    /// a few segments behind the live edge.
    pub fn on_playlist(
        &mut self,
        rendition: u16,
        media_sequence: u64,
        segments: &[(String, u64)],
        now: Instant,
    ) -> Vec<LiveAction<P>> {
        if !self.proxying(now) {
            return Vec::new();
        }
        let behind = self.config.window.min(self.config.max_pending).max(1) as u64;
        let max_pending = self.config.max_pending.max(1);
        let Some(r) = self.rendition_mut(rendition) else {
            return Vec::new();
        };
        let end = media_sequence.saturating_add(segments.len() as u64);
        let start = *r.proxy_from.get_or_insert(match r.highest {
            Some(h) => h.saturating_add(1),
            None => end.saturating_sub(behind),
        });
        // Nothing older than what the window already shows.
        let floor = r.window.front().map_or(start, |w| start.max(w.sequence));
        let mut out = Vec::new();
        let mut duration = 0;
        for (i, (uri, duration_us)) in segments.iter().enumerate() {
            let sequence = media_sequence.saturating_add(i as u64);
            duration = *duration_us;
            if sequence < floor || r.has(sequence) || r.highest.is_some_and(|h| sequence <= h) {
                continue;
            }
            if r.proxying.len() >= max_pending {
                break;
            }
            r.proxying.insert(sequence);
            out.push(LiveAction::Proxy {
                rendition,
                sequence,
                uri: uri.clone(),
                duration_us: *duration_us,
            });
        }
        if duration > 0 {
            self.last_duration_us = duration;
        }
        out
    }

    /// Proxying: the playlists of a [`LiveAction::ReadPlaylists`] were
    /// read (or could not be).
    pub fn playlists_read(&mut self, ok: bool, now: Instant) {
        self.playlists_in_flight = false;
        self.playlists_due = now + self.playlist_interval();
        if !ok {
            self.stats.http_failures += 1;
        }
    }

    /// Proxying: a segment of a [`LiveAction::Proxy`] was fetched and
    /// stored (`stored`), or could not be (it is asked for again while the
    /// playlist lists it). `now_ms` is the wall clock.
    #[allow(clippy::too_many_arguments)]
    pub fn proxied(
        &mut self,
        rendition: u16,
        sequence: u64,
        uri: &str,
        duration_us: u64,
        stored: Option<ProxiedSegment>,
        now: Instant,
        now_ms: u64,
    ) -> Vec<LiveAction<P>> {
        let window = self.config.window;
        let Some(r) = self.renditions.get_mut(usize::from(rendition)) else {
            return Vec::new();
        };
        if !r.proxying.remove(&sequence) {
            return Vec::new();
        }
        let Some(ProxiedSegment {
            manifest,
            length,
            shards,
        }) = stored
        else {
            self.stats.http_failures += 1;
            return Vec::new();
        };
        let held = r
            .pending
            .get(&sequence)
            .map(|p| p.manifest_cid)
            .or_else(|| {
                r.window
                    .iter()
                    .find(|w| w.sequence == sequence)
                    .map(|w| w.manifest)
            });
        if held.is_some() {
            // Announced meanwhile: keep what peers deliver (it is checked
            // against the signed manifest). The origin's copy is not
            // released: the same bytes make the same shards, which the
            // held copy may be using; unpinned, it is evicted in time.
            return Vec::new();
        }
        let out = r.enter_window(
            WindowSegment {
                sequence,
                manifest,
                duration_us,
                uri: uri.to_owned(),
                length,
                completed_ms: now_ms,
                heard_ms: now_ms,
                published_ms: None,
                shards,
                part: None,
            },
            window,
        );
        self.stats.segments += 1;
        self.stats.bytes_from_http += length;
        self.note_wall(now, now_ms);
        self.list(rendition, now);
        out
    }

    /// Moves timed-out requests, turns late segments over to HTTP, and
    /// (proxying) reads the origin's playlists when due. Call it when
    /// [`LivePlanner::next_timeout`] has come.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<LiveAction<P>> {
        let mut out = self.each_fetch(|f| f.tick(now));
        // A segment holding the playlist back may have reached its
        // deadline: it is passed over.
        let last_duration_us = self.last_duration_us;
        for r in &mut self.renditions {
            let newest = r.window.back().map(|w| w.sequence);
            for (seq, p) in r.pending.iter_mut() {
                if newest.is_some_and(|n| n > *seq) && now >= p.due(&self.config, last_duration_us)
                {
                    p.passed = true;
                }
            }
            let hole_deadline = self.config.deadline(last_duration_us);
            for h in r.holes.values_mut() {
                h.passed |= now >= h.since + hole_deadline;
            }
        }
        for r in 0..self.renditions.len() {
            self.list(r as u16, now);
        }
        // Peers whose requests timed out are slow for the next segments
        // too.
        self.slow.retain(|_, until| *until > now);
        self.service
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < SLOW_MEMORY);
        for r in &self.renditions {
            for p in r.pending.values() {
                if let Stage::Manifest(g) | Stage::Shards { fetch: g, .. } = &p.stage {
                    for peer in g.slow_peers() {
                        self.slow.entry(peer.clone()).or_insert(now + SLOW_MEMORY);
                    }
                }
            }
        }
        if !self.http {
            return out;
        }
        if self.proxying(now) && !self.playlists_in_flight && now >= self.playlists_due {
            self.playlists_in_flight = true;
            out.push(LiveAction::ReadPlaylists);
        }
        let attempts = self.config.http_attempts;
        for (ri, r) in self.renditions.iter_mut().enumerate() {
            for (seq, p) in r.pending.iter_mut() {
                let Stage::Shards { manifest, fetch } = &p.stage else {
                    continue;
                };
                if p.http_in_flight
                    || now < p.http_after
                    || p.http_attempts >= attempts
                    || fetch.is_complete()
                {
                    continue;
                }
                match http_request(ri as u16, *seq, &p.uri, manifest, fetch) {
                    Some(req) => {
                        p.http_in_flight = true;
                        p.http_attempts += 1;
                        out.push(LiveAction::Http(req));
                    }
                    // Nothing an origin could add: no more attempts.
                    None => p.http_attempts = attempts,
                }
            }
        }
        out
    }

    /// Ends the plan: every fetch under way is cancelled (the window stays
    /// where it is, for the store's eviction to take in time).
    pub fn stop(&mut self) -> Vec<LiveAction<P>> {
        let out = self.each_fetch(|f| f.cancel());
        for r in &mut self.renditions {
            r.pending.clear();
            r.proxying.clear();
        }
        out
    }

    /// When [`LivePlanner::handle_timeout`] has something to do next: a
    /// block request times out, the source's spare ends, a segment's P2P
    /// time is up, proxying starts, or the origin's playlists are due.
    pub fn next_timeout(&self) -> Option<Instant> {
        let attempts = self.config.http_attempts;
        let mut next: Option<Instant> = None;
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for r in &self.renditions {
            // A segment still coming while a newer one is complete: when
            // the playlist passes it over.
            let newest = r.window.back().map(|w| w.sequence);
            for (seq, p) in &r.pending {
                if !p.passed && newest.is_some_and(|n| n > *seq) {
                    at(Some(p.due(&self.config, self.last_duration_us)));
                }
            }
            let hole_deadline = self.deadline(self.last_duration_us);
            for h in r.holes.values().filter(|h| !h.passed) {
                at(Some(h.since + hole_deadline));
            }
            for p in r.pending.values() {
                match &p.stage {
                    Stage::Manifest(g) => at(g.next_deadline()),
                    Stage::Shards { fetch, .. } => {
                        at(fetch.next_deadline());
                        let http_due = self.http
                            && !p.http_in_flight
                            && p.http_attempts < attempts
                            && !fetch.is_complete();
                        at(http_due.then_some(p.http_after));
                    }
                    Stage::Checking { .. } => {}
                }
            }
        }
        if self.http && !self.playlists_in_flight {
            let proxying_from = self.last_heard + self.deadline(self.last_duration_us);
            at(Some(proxying_from.max(self.playlists_due)));
        }
        next
    }
}

/// Adds `peer` to a segment's fetch. The source published the segment,
/// so it holds every shard: it is not asked which (with a thousand viewers
/// that is fourteen thousand HAVEs per segment from the busiest uplink).
fn ask<P: Clone + Ord + Hash>(
    p: &mut Pending<P>,
    peer: P,
    source: Option<&P>,
    now: Instant,
) -> Vec<LiveAction<P>> {
    if !p.asked.insert(peer.clone()) {
        return Vec::new();
    }
    let actions = match &mut p.stage {
        Stage::Shards { fetch, .. } if Some(&peer) == source => fetch.add_holder(peer, now),
        Stage::Manifest(g) | Stage::Shards { fetch: g, .. } => g.add_peer(peer, now),
        Stage::Checking { .. } => Vec::new(),
    };
    actions.into_iter().map(LiveAction::Fetch).collect()
}

/// The missing data shards a segment needs, as one byte range of the
/// encoder's file: the first `k - received` data shards not yet received,
/// from the first to the last of them. Data shards wholly past the end of
/// the segment are zeros and never fetched (the caller makes them).
fn http_request<P: Clone + Ord + Hash>(
    rendition: u16,
    sequence: u64,
    uri: &str,
    manifest: &SegmentManifest,
    fetch: &GroupFetch<P>,
) -> Option<HttpRequest> {
    let k = usize::from(manifest.k);
    let need = k.saturating_sub(fetch.received().len());
    let missing: Vec<usize> = (0..k)
        .filter(|i| !fetch.received().contains(i))
        .take(need)
        .collect();
    let (&first, &last) = (missing.first()?, missing.last()?);
    let size = u64::from(manifest.shard_size);
    let start = (first as u64 * size).min(manifest.length);
    let end = ((last as u64 + 1) * size).min(manifest.length);
    Some(HttpRequest {
        rendition,
        sequence,
        uri: uri.to_owned(),
        start,
        end,
        first_shard: first,
        manifest: manifest.clone(),
    })
}

fn give_up<P: Clone + Ord + Hash>(p: &mut Pending<P>) -> Vec<LiveAction<P>> {
    let mut out = Vec::new();
    let shards = match &mut p.stage {
        Stage::Manifest(g) => {
            out.extend(g.cancel().into_iter().map(LiveAction::Fetch));
            Vec::new()
        }
        Stage::Shards { fetch, manifest } => {
            out.extend(fetch.cancel().into_iter().map(LiveAction::Fetch));
            manifest.shards.clone()
        }
        Stage::Checking { manifest } => manifest.shards.clone(),
    };
    out.push(LiveAction::Release {
        manifest: p.manifest_cid,
        shards,
    });
    out
}

/// Splits bytes fetched over HTTP for an [`HttpRequest`] into its data
/// shards, zero-padding the last one, and appends the all-zero shards past
/// the segment's end. Returns `(shard index, bytes)`; the caller verifies
/// each against the manifest's CID before storing it.
pub fn shards_from_range(req: &HttpRequest, bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let size = req.manifest.shard_size as usize;
    let k = usize::from(req.manifest.k);
    let mut out = Vec::new();
    if size == 0 {
        return out;
    }
    for (j, chunk) in bytes.chunks(size).enumerate() {
        let mut shard = chunk.to_vec();
        shard.resize(size, 0);
        out.push((req.first_shard + j, shard));
    }
    let real = (req.manifest.length as usize).div_ceil(size);
    for i in real..k {
        out.push((i, vec![0; size]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{self, Codec};
    use crate::channel::ChannelKey;

    const K: u16 = 4;
    const M: u16 = 2;
    const SIZE: usize = 8;

    /// A segment of `len` bytes and its announcement.
    fn segment(seq: u64, len: usize) -> (Vec<u8>, Vec<Vec<u8>>, VerifiedAnnouncement) {
        unit(seq, len, None)
    }

    /// Unit `seq`, part `index` of segment `of`, and its announcement.
    fn part(seq: u64, of: u64, index: u32) -> (Vec<Vec<u8>>, VerifiedAnnouncement) {
        let part = PartOf {
            segment: of,
            index,
            independent: index == 0,
        };
        let (_, shards, a) = unit(seq, 32, Some(part));
        (shards, a)
    }

    /// A unit of `len` bytes (a whole segment, or a part) and its
    /// announcement.
    fn unit(
        seq: u64,
        len: usize,
        part: Option<PartOf>,
    ) -> (Vec<u8>, Vec<Vec<u8>>, VerifiedAnnouncement) {
        let bytes: Vec<u8> = (0..len).map(|i| (i as u64 * 7 + seq) as u8).collect();
        let mut shards: Vec<Vec<u8>> = Vec::new();
        for i in 0..usize::from(K) {
            let mut s = bytes[(i * SIZE).min(len)..((i + 1) * SIZE).min(len)].to_vec();
            s.resize(SIZE, 0);
            shards.push(s);
        }
        for i in 0..usize::from(M) {
            shards.push(vec![0xF0 + i as u8; SIZE]);
        }
        let manifest = SegmentManifest {
            version: 1,
            index: seq,
            length: len as u64,
            duration_us: Some(2_000_000),
            hash: block::sha256_multihash(&block::sha256(&bytes)).to_bytes(),
            k: K,
            m: M,
            shard_size: SIZE as u32,
            shards: shards
                .iter()
                .map(|s| block::cid_of(Codec::Raw, s))
                .collect(),
        };
        let key = ChannelKey::from_seed(&[1; 32]);
        let signed = key.sign_announcement(crate::channel::Announcement {
            version: 0,
            channel: Vec::new(),
            rendition: 0,
            sequence: seq,
            published_ms: 1_000,
            uri: format!("s{seq}.ts"),
            publisher: b"peer".to_vec(),
            manifest: manifest.to_block().1,
            part,
        });
        let a = crate::channel::Announcement::open(&key.id(), &signed).unwrap();
        (bytes, shards, a)
    }

    fn wants(actions: &[LiveAction<u32>]) -> Vec<(u32, Cid)> {
        actions
            .iter()
            .filter_map(|a| match a {
                LiveAction::Fetch(FetchAction::WantBlock { peer, cid }) => Some((*peer, *cid)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn late_and_replayed_announcements_are_dropped_unpunished_and_future_ones_rejected() {
        let t = Instant::now();
        let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, false, t);
        let (_, _, a5) = segment(5, 20);
        let (_, _, a4) = segment(4, 20);
        assert_eq!(p.offer(&a5, Some(1), t, 1_000).0, Verdict::Accept);
        // Again, or one from before this viewer's first (it joined
        // after it): not forwarded, and its forwarder did nothing wrong.
        assert!(matches!(
            p.offer(&a5, Some(1), t, 1_000),
            (Verdict::Stale(_), ref asked) if asked.is_empty()
        ));
        assert!(matches!(
            p.offer(&a4, Some(1), t, 1_000).0,
            Verdict::Stale(_)
        ));
        // Dated an hour ahead of our clock.
        let (_, _, mut future) = segment(6, 20);
        future.published_ms = 1_000 + 3_600_000;
        assert!(matches!(
            p.offer(&future, Some(1), t, 1_000).0,
            Verdict::Reject(_)
        ));
        assert_eq!(p.stats().rejected, 1);
    }

    #[test]
    fn a_late_joiner_seeds_what_it_can_fetch_and_misses_nothing_when_the_edge_moves() {
        let t = Instant::now();
        let config = LiveConfig::default();
        let max = config.max_pending;
        let mut p = LivePlanner::<u32>::new(config, 0, false, t);
        let segments: Vec<_> = (0..8u64).map(|s| segment(s, 20).2).collect();
        let recent: Vec<RecentSegment> = segments[..7]
            .iter()
            .map(|a| RecentSegment {
                sequence: a.sequence,
                manifest: a.manifest_cid,
                duration_us: 2_000_000,
            })
            .collect();
        p.seed(0, &recent, |s| format!("s{s}.ts"), t);
        // The newest of the record, as many as leave room for the next.
        assert!(!p.wants(&segments[6 - (max - 1)].manifest_cid));
        assert!(p.wants(&segments[6].manifest_cid));
        assert!(p.wants(&segments[7 - (max - 1)].manifest_cid));
        assert_eq!(p.offer(&segments[7], Some(1), t, 1_000).0, Verdict::Accept);
        assert_eq!(p.stats().missed, 0);
    }

    #[test]
    fn an_announcement_for_a_segment_known_from_the_record_is_no_replay() {
        let t = Instant::now();
        let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, false, t);
        let (_, _, a4) = segment(4, 20);
        let (_, _, a5) = segment(5, 20);
        let recent: Vec<RecentSegment> = [&a4, &a5]
            .iter()
            .map(|a| RecentSegment {
                sequence: a.sequence,
                manifest: a.manifest_cid,
                duration_us: 2_000_000,
            })
            .collect();
        p.seed(0, &recent, |s| format!("s{s}.ts"), t);
        assert!(p.wants(&a5.manifest_cid), "the manifest is being fetched");
        // The record came first; the announcement of the same segment is
        // valid and fetches nothing more.
        assert_eq!(
            p.offer(&a5, Some(1), t, 1_000),
            (Verdict::Accept, Vec::new())
        );
        // The same announcement again is a replay.
        assert!(matches!(
            p.offer(&a5, Some(1), t, 1_000).0,
            Verdict::Stale(_)
        ));
        // Another segment under a sequence the record gave is dropped.
        let (_, _, other) = segment(40, 20);
        let other = VerifiedAnnouncement {
            sequence: 4,
            ..other
        };
        assert!(matches!(
            p.offer(&other, Some(1), t, 1_000).0,
            Verdict::Stale(_)
        ));
        assert_eq!(p.offer(&a4, Some(1), t, 1_000).0, Verdict::Accept);
    }

    #[test]
    fn a_segment_completes_from_peers_and_enters_the_window() {
        let t = Instant::now();
        let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, false, t);
        p.add_peer(1, t);
        p.add_peer(2, t);
        let (_, shards, a) = segment(9, 30);
        let (v, out) = p.offer(&a, Some(1), t, 1_000);
        assert_eq!(v, Verdict::Accept);
        // Want-haves to peer 2 only: the source (1) published the segment
        // and has every shard, so it is asked for two straight away.
        let haves: Vec<u32> = out
            .iter()
            .filter_map(|x| match x {
                LiveAction::Fetch(FetchAction::WantHave { peer, .. }) => Some(*peer),
                _ => None,
            })
            .collect();
        assert_eq!(haves, vec![2; 6]);
        assert_eq!(
            wants(&out).iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![1, 1]
        );
        let mut out = Vec::new();
        for s in &shards {
            out.extend(p.on_presence(&2, &block::cid_of(Codec::Raw, s), true, t));
        }
        assert_eq!(wants(&out).len(), 2, "two at a time from one peer");
        let mut checks = Vec::new();
        for s in &shards[..usize::from(K)] {
            let acts = p.on_block(&block::cid_of(Codec::Raw, s), s, Some(&2), t);
            checks.extend(
                acts.into_iter()
                    .filter(|x| matches!(x, LiveAction::Check { .. })),
            );
        }
        assert_eq!(
            checks,
            vec![LiveAction::Check {
                rendition: 0,
                sequence: 9,
                manifest: a.manifest_cid,
                from_http: false,
            }]
        );
        assert_eq!(p.window(0).count(), 0, "not before the check");
        p.segment_checked(0, 9, true, t + Duration::from_millis(100), 1_250);
        let w: Vec<_> = p.window(0).cloned().collect();
        assert_eq!(w.len(), 1);
        assert_eq!(
            (w[0].sequence, w[0].uri.as_str(), w[0].length),
            (9, "s9.ts", 30)
        );
        let s = p.stats();
        assert_eq!((s.segments, s.late, s.missed), (1, 0, 0));
        assert_eq!(s.bytes_from_peers, (SIZE * usize::from(K)) as u64);
        assert_eq!(s.latency_quantile_ms(0.5), Some(250));
        assert_eq!(s.startup, Some(Duration::from_millis(100)));
    }

    #[test]
    fn http_fills_in_the_missing_data_shards_after_the_budget() {
        let t = Instant::now();
        let config = LiveConfig::default();
        let budget = config.p2p_budget;
        let mut p = LivePlanner::<u32>::new(config, 0, true, t);
        p.add_peer(1, t);
        // 20 bytes: data shards 0, 1 and half of 2 are real, 3 is padding.
        let (bytes, shards, a) = segment(3, 20);
        p.offer(&a, Some(1), t, 1_000);
        // One shard arrives from a peer, then nothing.
        p.on_block(
            &block::cid_of(Codec::Raw, &shards[1]),
            &shards[1],
            Some(&1),
            t,
        );
        assert!(
            p.handle_timeout(t + budget / 2)
                .iter()
                .all(|x| !matches!(x, LiveAction::Http(_)))
        );
        let out = p.handle_timeout(t + budget);
        let reqs: Vec<&HttpRequest> = out
            .iter()
            .filter_map(|x| match x {
                LiveAction::Http(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(reqs.len(), 1);
        let r = reqs[0];
        // Shards 0, 2, 3 are missing; 3 is padding, so the range stops at
        // the end of the file.
        assert_eq!(
            (r.uri.as_str(), r.start, r.end, r.first_shard),
            ("s3.ts", 0, 20, 0)
        );
        assert!(
            p.handle_timeout(t + budget * 2)
                .iter()
                .all(|x| !matches!(x, LiveAction::Http(_))),
            "one request in flight"
        );
        let got = shards_from_range(r, &bytes[r.start as usize..r.end as usize]);
        let mut checks = 0;
        for (i, s) in &got {
            let cid = block::cid_of(Codec::Raw, s);
            if *i < usize::from(K) {
                assert_eq!(
                    cid, a.manifest.shards[*i],
                    "shard {i} rebuilt from the range"
                );
            }
            checks += p
                .on_block(&cid, s, None, t + budget)
                .iter()
                .filter(|x| {
                    matches!(
                        x,
                        LiveAction::Check {
                            from_http: true,
                            ..
                        }
                    )
                })
                .count();
        }
        assert_eq!(checks, 1);
        p.http_done(0, 3, true, t + budget);
        p.segment_checked(0, 3, true, t + budget, 2_000);
        let s = p.stats();
        // Peer 1 published the segment: its shard counts as the source's.
        assert_eq!((s.bytes_from_peers, s.bytes_from_source), (0, SIZE as u64));
        assert!(s.bytes_from_http > 0);
        assert!(s.offload().unwrap() < 0.5);
    }

    #[test]
    fn the_source_is_spared_only_when_the_audience_can_cover_a_segment() {
        // How many shards a viewer takes from the source (peer 1) before
        // `source_wait`, when the source has all of them and nobody else
        // answers, with `viewers - 1` other viewers connected.
        fn from_source_before_the_wait(viewers: u32) -> usize {
            let t = Instant::now();
            let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, false, t);
            for peer in 1..=viewers {
                p.add_peer(peer, t);
            }
            let (_, shards, a) = segment(1, 32);
            let mut actions = p.offer(&a, Some(1), t, 1_000).1;
            for s in &shards {
                actions.extend(p.on_presence(&1, &block::cid_of(Codec::Raw, s), true, t));
            }
            let mut got = 0;
            loop {
                let asked: Vec<Cid> = wants(&actions)
                    .into_iter()
                    .filter(|(peer, _)| *peer == 1)
                    .map(|(_, cid)| cid)
                    .collect();
                if asked.is_empty() {
                    return got;
                }
                actions.clear();
                for cid in asked {
                    let i = a.manifest.shards.iter().position(|c| *c == cid).unwrap();
                    got += 1;
                    actions.extend(p.on_block(&cid, &shards[i], Some(&1), t));
                }
            }
        }
        // K = 4 of 6 shards, two copies each: 12 shards to share. Three
        // viewers at a quota of 3 hold only 9 of them, so the source is not
        // spared and none waits: each takes what it needs from it.
        assert_eq!(from_source_before_the_wait(3), usize::from(K));
        // Five viewers share 12 at 3 each: the source is spared.
        assert_eq!(from_source_before_the_wait(5), 3);
    }

    #[test]
    fn a_peer_slow_to_deliver_is_asked_last_by_the_next_segments() {
        let t = Instant::now();
        let config = LiveConfig {
            fetch_peers: 1,
            ..LiveConfig::default()
        };
        let mut p = LivePlanner::<u32>::new(config, 0, false, t);
        for peer in 1..=3 {
            p.add_peer(peer, t);
        }
        let asked_about = |out: &[LiveAction<u32>]| -> BTreeSet<u32> {
            out.iter()
                .filter_map(|x| match x {
                    LiveAction::Fetch(FetchAction::WantHave { peer, .. }) => Some(*peer),
                    _ => None,
                })
                .collect()
        };
        // The source (1) and one other viewer are asked for segment 1.
        let (_, shards, a) = segment(1, 32);
        let out = p.offer(&a, Some(1), t, 1_000).1;
        let chosen = asked_about(&out);
        assert_eq!(chosen.len(), 1, "{chosen:?}");
        let slow = *chosen.iter().next().unwrap();
        let mut out = Vec::new();
        for s in &shards {
            out.extend(p.on_presence(&slow, &block::cid_of(Codec::Raw, s), true, t));
        }
        let (_, cid) = *wants(&out)
            .iter()
            .find(|(peer, _)| *peer == slow)
            .expect("the viewer is asked for a shard");
        let i = a.manifest.shards.iter().position(|c| *c == cid).unwrap();
        // It takes 400 ms to deliver: a home uplink below the stream's rate.
        let later = t + Duration::from_millis(400);
        let _ = p.on_block(&cid, &shards[i], Some(&slow), later);
        // The next segments ask the other viewer, whatever their turn.
        for seq in 2..10 {
            let (_, _, a) = segment(seq, 32);
            let out = p.offer(&a, Some(1), later, 1_000).1;
            let chosen = asked_about(&out);
            assert_eq!(chosen.len(), 1, "segment {seq}: {chosen:?}");
            assert!(!chosen.contains(&slow), "segment {seq} asked {slow}");
        }
    }

    #[test]
    fn the_window_slides_and_releases_old_segments() {
        let t = Instant::now();
        let config = LiveConfig {
            window: 2,
            ..LiveConfig::default()
        };
        let mut p = LivePlanner::<u32>::new(config, 0, false, t);
        let mut released = Vec::new();
        for seq in 0..4 {
            let (_, shards, a) = segment(seq, 32);
            p.offer(&a, None, t, 1_000);
            for s in &shards[..usize::from(K)] {
                p.on_block(&block::cid_of(Codec::Raw, s), s, Some(&1), t);
            }
            for x in p.segment_checked(0, seq, true, t, 1_000) {
                if let LiveAction::Release { manifest, .. } = x {
                    released.push(manifest);
                }
            }
        }
        let seqs: Vec<u64> = p.window(0).map(|w| w.sequence).collect();
        assert_eq!(seqs, vec![2, 3]);
        assert_eq!(released.len(), 2);
    }

    #[test]
    fn a_segments_parts_count_as_one_segment_in_the_window_and_in_flight() {
        let t = Instant::now();
        let config = LiveConfig {
            window: 2,
            max_pending: 2,
            ..LiveConfig::default()
        };
        let mut p = LivePlanner::<u32>::new(config, 0, false, t);
        // Segments 0, 1 and 2 of three parts each: units 0..9.
        let mut released = 0;
        for seq in 0..9u64 {
            let (shards, a) = part(seq, seq / 3, (seq % 3) as u32);
            assert_eq!(p.offer(&a, None, t, 1_000).0, Verdict::Accept);
            for s in &shards[..usize::from(K)] {
                p.on_block(&block::cid_of(Codec::Raw, s), s, Some(&1), t);
            }
            let out = p.segment_checked(0, seq, true, t, 1_000);
            released += out
                .iter()
                .filter(|x| matches!(x, LiveAction::Release { .. }))
                .count();
        }
        // Two segments' parts are kept: segment 0 left whole.
        let kept: Vec<u64> = p.window(0).map(|w| w.sequence).collect();
        assert_eq!(kept, (3..9).collect::<Vec<_>>());
        assert_eq!(released, 3);
        let listed = p.playlist(0);
        assert_eq!(listed.len(), 6);
        assert_eq!(
            listed[4].part,
            Some(PartOf {
                segment: 2,
                index: 1,
                independent: false
            })
        );
        // Six parts in flight are two segments: none given up.
        for seq in 9..15u64 {
            p.offer(&part(seq, seq / 3, (seq % 3) as u32).1, None, t, 1_000);
        }
        assert_eq!(p.stats().missed, 0);
        // A part of a third segment gives up the oldest segment's parts.
        p.offer(&part(15, 5, 0).1, None, t, 1_000);
        assert_eq!(p.stats().missed, 3);
    }

    #[test]
    fn a_segment_published_here_is_checked_at_once_and_fetches_nothing() {
        let t = Instant::now();
        let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, false, t);
        p.add_peer(1, t);
        let (_, _, a) = segment(3, 32);
        let out = p.offer_local(&a, t, 1_000);
        assert!(wants(&out).is_empty());
        assert!(matches!(
            out.as_slice(),
            [LiveAction::Check { sequence: 3, .. }]
        ));
        p.segment_checked(0, 3, true, t, 1_000);
        assert_eq!(listed(&p), vec![(3, false)]);
        // Published again (or older): nothing.
        assert!(p.offer_local(&a, t, 1_000).is_empty());
        assert_eq!(p.stats().bytes_from_source + p.stats().bytes_from_peers, 0);
    }

    #[test]
    fn too_many_incomplete_segments_are_given_up() {
        let t = Instant::now();
        let config = LiveConfig {
            max_pending: 2,
            ..LiveConfig::default()
        };
        let mut p = LivePlanner::<u32>::new(config.clone(), 0, false, t);
        complete(&mut p, 0, t, 1_000);
        for seq in 1..4 {
            let (_, _, a) = segment(seq, 32);
            p.offer(&a, None, t, 1_000);
        }
        assert_eq!((p.stats().missed, p.stats().skipped), (1, 0));
        let missed = p.take_missed();
        assert_eq!((missed[0].sequence, missed[0].joining), (1, false));

        // Given up before the playlist listed anything: the viewer joined
        // past it, and no player waited for it.
        let mut p = LivePlanner::<u32>::new(config, 0, false, t);
        for seq in 0..3 {
            let (_, _, a) = segment(seq, 32);
            p.offer(&a, None, t, 1_000);
        }
        assert_eq!((p.stats().missed, p.stats().skipped), (0, 1));
        assert!(p.take_missed()[0].joining);
    }

    /// Offers segment `seq` and completes it with its data shards.
    fn complete(p: &mut LivePlanner<u32>, seq: u64, t: Instant, now_ms: u64) {
        let (_, shards, a) = segment(seq, 32);
        p.offer(&a, None, t, now_ms);
        finish(p, seq, &shards, t, now_ms);
    }

    /// Delivers a pending segment's data shards and passes its check.
    fn finish(p: &mut LivePlanner<u32>, seq: u64, shards: &[Vec<u8>], t: Instant, now_ms: u64) {
        for s in &shards[..usize::from(K)] {
            p.on_block(&block::cid_of(Codec::Raw, s), s, Some(&1), t);
        }
        p.segment_checked(0, seq, true, t, now_ms);
    }

    fn listed(p: &LivePlanner<u32>) -> Vec<(u64, bool)> {
        p.playlist(0).iter().map(|l| (l.sequence, l.gap)).collect()
    }

    #[test]
    fn a_segment_complete_before_an_older_one_waits_for_it_in_the_playlist() {
        let t = Instant::now();
        let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, false, t);
        let (_, shards0, a0) = segment(0, 32);
        let (_, shards1, a1) = segment(1, 32);
        p.offer(&a0, None, t, 1_000);
        p.offer(&a1, None, t, 1_000);
        let later = t + Duration::from_millis(500);
        finish(&mut p, 1, &shards1, later, 1_500);
        // Complete and served to peers, but not shown before segment 0.
        assert_eq!(p.window(0).count(), 1);
        assert!(listed(&p).is_empty());
        assert_eq!(p.stats().startup, None);
        let done = t + Duration::from_millis(900);
        finish(&mut p, 0, &shards0, done, 1_900);
        assert_eq!(listed(&p), vec![(0, false), (1, false)]);
        // Both reach the player when listed: 900 ms after publication.
        assert_eq!(p.stats().latencies_ms, vec![900, 900]);
        assert_eq!(p.stats().startup, Some(Duration::from_millis(900)));
    }

    #[test]
    fn a_segment_given_up_is_listed_as_a_gap_and_the_playlist_moves_on() {
        let t = Instant::now();
        let config = LiveConfig {
            max_pending: 2,
            ..LiveConfig::default()
        };
        let mut p = LivePlanner::<u32>::new(config, 0, false, t);
        complete(&mut p, 0, t, 1_000);
        let (_, _, a1) = segment(1, 32);
        p.offer(&a1, None, t, 1_000);
        let (_, shards2, a2) = segment(2, 32);
        p.offer(&a2, None, t, 1_000);
        // Segment 2 waits for 1...
        finish(&mut p, 2, &shards2, t, 1_000);
        assert_eq!(listed(&p), vec![(0, false)]);
        // ...until 1 is given up for 3 and 4: then 2 follows a gap,
        // keeping its place in the media sequence.
        for seq in [3, 4] {
            let (_, _, a) = segment(seq, 32);
            p.offer(&a, None, t, 1_000);
        }
        assert_eq!(p.stats().missed, 1);
        assert_eq!(listed(&p), vec![(0, false), (1, true), (2, false)]);
    }

    #[test]
    fn a_stuck_segment_holds_the_playlist_back_only_until_its_deadline() {
        let t = Instant::now();
        let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, false, t);
        complete(&mut p, 0, t, 1_000);
        let (_, shards1, a1) = segment(1, 32);
        p.offer(&a1, None, t, 1_000);
        complete(&mut p, 2, t, 1_000);
        assert_eq!(listed(&p), vec![(0, false)]);
        // 2 s segments: due 4 s after it was heard of; the planner wakes
        // for it.
        let due = t + Duration::from_secs(4);
        assert_eq!(p.next_timeout(), Some(due));
        p.handle_timeout(due - Duration::from_millis(1));
        assert_eq!(listed(&p), vec![(0, false)]);
        p.handle_timeout(due);
        assert_eq!(listed(&p), vec![(0, false), (1, true), (2, false)]);
        assert_eq!(p.stats().missed, 0, "passed over, not given up");
        // Nothing left to wait for: no timer for it any more.
        assert!(p.next_timeout().is_none_or(|n| n > due));
        // Still fetched; when it comes, it fills its gap, counted late.
        finish(&mut p, 1, &shards1, due, 5_000);
        assert_eq!(listed(&p), vec![(0, false), (1, false), (2, false)]);
        assert_eq!(p.stats().late, 1);
    }

    #[test]
    fn an_announcement_overtaken_in_gossip_is_fetched_and_listed_in_its_place() {
        let t = Instant::now();
        let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, false, t);
        p.add_peer(1, t);
        complete(&mut p, 0, t, 1_000);
        // 2's announcement comes before 1's: 2 waits for 1 in the
        // playlist, as for a unit still being fetched.
        complete(&mut p, 2, t, 1_000);
        assert_eq!(listed(&p), vec![(0, false)]);
        let (_, shards1, a1) = segment(1, 32);
        let (verdict, actions) = p.offer(&a1, Some(1), t, 1_000);
        assert_eq!(verdict, Verdict::Accept);
        assert!(!wants(&actions).is_empty(), "1 is fetched");
        finish(&mut p, 1, &shards1, t, 1_000);
        assert_eq!(listed(&p), vec![(0, false), (1, false), (2, false)]);
        assert_eq!((p.stats().missed, p.stats().late), (0, 0));
        // A second copy of it is a replay.
        assert!(matches!(
            p.offer(&a1, Some(1), t, 1_000).0,
            Verdict::Stale(_)
        ));
    }

    #[test]
    fn a_lost_announcement_holds_the_playlist_until_its_deadline_then_counts_missed() {
        let t = Instant::now();
        let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, false, t);
        complete(&mut p, 0, t, 1_000);
        complete(&mut p, 2, t, 1_000);
        // 2 s segments: 1 is due 4 s after 2 showed it was skipped.
        let due = t + Duration::from_secs(4);
        assert_eq!(p.next_timeout(), Some(due));
        p.handle_timeout(due);
        assert_eq!(listed(&p), vec![(0, false), (1, true), (2, false)]);
        assert!(
            p.next_timeout().is_none_or(|n| n > due),
            "no timer in the past"
        );
        assert_eq!(p.stats().missed, 0, "it may still come");
        // Announcements move on: once they are far past it, it is missed.
        for seq in 3..=2 + MAX_UNANNOUNCED_AGE {
            complete(&mut p, seq, due, 5_000);
        }
        assert_eq!(p.stats().missed, 1);
        let missed = p.take_missed();
        assert_eq!(
            (missed[0].sequence, missed[0].reason),
            (1, MissReason::NeverAnnounced)
        );
        // Its announcement after that is stale.
        let (_, _, a1) = segment(1, 32);
        assert!(matches!(
            p.offer(&a1, Some(1), due, 5_000).0,
            Verdict::Stale(_)
        ));
    }

    #[test]
    fn a_broadcaster_starting_again_far_ahead_leaves_no_holes_to_wait_for() {
        let t = Instant::now();
        let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, false, t);
        complete(&mut p, 0, t, 1_000);
        complete(&mut p, 2 + MAX_HOLES, t, 1_000);
        assert_eq!(listed(&p).last(), Some(&(2 + MAX_HOLES, false)));
    }

    #[test]
    fn a_passed_over_segment_sets_no_timer_in_the_past() {
        // Joining: 0 and 1 still coming, 2-4 complete. 0's deadline passes
        // while the playlist still waits for 1: the planner must not ask
        // to be woken for 0 again and again.
        let t = Instant::now();
        let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, false, t);
        let (_, _, a0) = segment(0, 32);
        p.offer(&a0, None, t, 1_000);
        let later = t + Duration::from_secs(3);
        let (_, _, a1) = segment(1, 32);
        p.offer(&a1, None, later, 4_000);
        for seq in 2..5 {
            complete(&mut p, seq, later, 4_000);
        }
        let due0 = t + Duration::from_secs(4);
        let due1 = later + Duration::from_secs(4);
        assert_eq!(p.next_timeout().map(|n| n <= due0), Some(true));
        p.handle_timeout(due0);
        assert!(listed(&p).is_empty(), "1 still holds it back");
        let next = p.next_timeout().expect("1's deadline");
        assert!(next > due0 && next <= due1, "{next:?}");
        p.handle_timeout(due1);
        assert_eq!(listed(&p), vec![(2, false), (3, false), (4, false)]);
    }

    #[test]
    fn the_playlist_stays_short_when_sequences_jump() {
        let t = Instant::now();
        let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, false, t);
        complete(&mut p, 0, t, 1_000);
        complete(&mut p, 1_000_000_000, t, 1_000);
        let entries = listed(&p);
        assert_eq!(entries.len(), 2 * LiveConfig::default().window);
        assert_eq!(entries.last(), Some(&(1_000_000_000, false)));
    }

    fn proxies(actions: &[LiveAction<u32>]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                LiveAction::Proxy { sequence, .. } => Some(*sequence),
                _ => None,
            })
            .collect()
    }

    fn listing(from: u64, count: u64) -> Vec<(String, u64)> {
        (from..from + count)
            .map(|s| (format!("s{s}.ts"), 2_000_000))
            .collect()
    }

    fn cid(n: u8) -> Cid {
        block::cid_of(Codec::Raw, &[n])
    }

    #[test]
    fn with_origins_and_no_announcements_the_planner_proxies_the_live_edge() {
        let t = Instant::now();
        let config = LiveConfig::default();
        let silence = config.p2p_budget * 2;
        let mut p = LivePlanner::<u32>::new(config, 0, true, t);
        let reads = |out: &[LiveAction<u32>]| {
            out.iter()
                .filter(|a| matches!(a, LiveAction::ReadPlaylists))
                .count()
        };
        assert_eq!(
            reads(&p.handle_timeout(t + silence / 2)),
            0,
            "peers get their chance"
        );
        let t1 = t + silence;
        assert_eq!(reads(&p.handle_timeout(t1)), 1);
        assert_eq!(reads(&p.handle_timeout(t1)), 0, "one read at a time");
        // The origin lists 10..=17: the proxy starts max_pending (4)
        // segments behind the edge.
        let out = p.on_playlist(0, 10, &listing(10, 8), t1);
        assert_eq!(proxies(&out), vec![14, 15, 16, 17]);
        p.playlists_read(true, t1);
        // Nothing new is asked twice.
        assert!(proxies(&p.on_playlist(0, 10, &listing(10, 8), t1)).is_empty());
        for seq in 14..18 {
            p.proxied(
                0,
                seq,
                &format!("s{seq}.ts"),
                2_000_000,
                Some(ProxiedSegment {
                    manifest: cid(seq as u8),
                    length: 100,
                    shards: Vec::new(),
                }),
                t1,
                5,
            );
        }
        let seqs: Vec<u64> = p.window(0).map(|w| w.sequence).collect();
        assert_eq!(seqs, vec![14, 15, 16, 17]);
        assert_eq!(p.stats().bytes_from_http, 400);
        assert_eq!(p.stats().offload(), Some(0.0));
        // Next read after half a segment; a failed segment is asked again.
        assert_eq!(reads(&p.handle_timeout(t1 + Duration::from_millis(500))), 0);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(reads(&p.handle_timeout(t2)), 1);
        assert_eq!(
            proxies(&p.on_playlist(0, 12, &listing(12, 7), t2)),
            vec![18]
        );
        p.proxied(0, 18, "s18.ts", 2_000_000, None, t2, 6);
        p.playlists_read(true, t2);
        assert_eq!(p.stats().http_failures, 1);
        assert_eq!(
            proxies(&p.on_playlist(0, 12, &listing(12, 7), t2)),
            vec![18]
        );
    }

    #[test]
    fn an_announcement_ends_proxying_without_fetching_what_the_origin_gave() {
        let t = Instant::now();
        let config = LiveConfig::default();
        let t1 = t + config.p2p_budget * 2;
        let mut p = LivePlanner::<u32>::new(config, 0, true, t);
        p.add_peer(1, t);
        p.handle_timeout(t1);
        assert_eq!(
            proxies(&p.on_playlist(0, 0, &listing(0, 6), t1)),
            vec![2, 3, 4, 5]
        );
        p.proxied(
            0,
            2,
            "s2.ts",
            2_000_000,
            Some(ProxiedSegment {
                manifest: cid(2),
                length: 20,
                shards: Vec::new(),
            }),
            t1,
            5,
        );
        // Segment 2 is held: its announcement is valid and nothing is
        // fetched again.
        let (_, _, a2) = segment(2, 20);
        let (v, out) = p.offer(&a2, Some(1), t1, 1_000);
        assert_eq!(v, Verdict::Accept);
        assert!(out.iter().all(|a| !matches!(a, LiveAction::Fetch(_))));
        assert!(!p.proxying(t1));
        assert!(
            p.handle_timeout(t1)
                .iter()
                .all(|a| !matches!(a, LiveAction::ReadPlaylists))
        );
        // Segments 3 and 4 are still coming from the origin: peers are
        // asked too, in case the origin fails.
        let deliver = |p: &mut LivePlanner<u32>, seq: u64| {
            let (_, shards, a) = segment(seq, 20);
            let (v, out) = p.offer(&a, Some(1), t1, 1_000);
            assert_eq!(v, Verdict::Accept);
            assert!(out.iter().any(|a| matches!(a, LiveAction::Fetch(_))));
            for s in &shards[..usize::from(K)] {
                p.on_block(&block::cid_of(Codec::Raw, s), s, Some(&1), t1);
            }
            p.segment_checked(0, seq, true, t1, 7);
            a.manifest_cid
        };
        let held = deliver(&mut p, 3);
        // The origin's late copy of 3 changes nothing and releases
        // nothing: the same bytes make the same shards, which the held
        // copy uses.
        let out = p.proxied(
            0,
            3,
            "s3.ts",
            2_000_000,
            Some(ProxiedSegment {
                manifest: cid(9),
                length: 20,
                shards: Vec::new(),
            }),
            t1,
            8,
        );
        assert!(out.is_empty(), "{out:?}");
        // The origin fails 4; peers deliver it.
        p.proxied(0, 4, "s4.ts", 2_000_000, None, t1, 6);
        deliver(&mut p, 4);
        let w: Vec<(u64, Cid)> = p.window(0).map(|w| (w.sequence, w.manifest)).collect();
        assert_eq!(w.len(), 3);
        assert_eq!(w[1], (3, held));
        assert_eq!((w[0].0, w[2].0), (2, 4));
    }

    #[test]
    fn a_channel_of_parts_never_proxies_its_origin() {
        let t = Instant::now();
        let later = t + Duration::from_secs(10);
        // Its record says so, before any part comes.
        let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, true, t);
        assert!(p.proxying(later));
        p.note_parts();
        assert!(!p.proxying(later));
        // Or its first part does.
        let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, true, t);
        p.offer(&part(0, 0, 0).1, None, t, 1_000);
        assert!(!p.proxying(later));
    }

    #[test]
    fn without_origins_the_planner_never_proxies() {
        let t = Instant::now();
        let mut p = LivePlanner::<u32>::new(LiveConfig::default(), 0, false, t);
        let later = t + Duration::from_secs(60);
        assert!(!p.proxying(later));
        assert!(p.handle_timeout(later).is_empty());
        assert!(p.on_playlist(0, 0, &listing(0, 4), later).is_empty());
    }
}
