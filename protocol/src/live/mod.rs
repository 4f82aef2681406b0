//! Live channels as machines, without I/O.
//!
//! - [`LiveSession`] (`session.rs`) is one watched channel: it takes the
//!   gossiped announcements (and judges them for gossipsub), the channel
//!   record, the peers, presences and blocks, the HTTP origins' answers and
//!   the time, and asks for what a viewer does: Bitswap wants, a byte range
//!   from an origin, a segment checked, a segment released, a topic
//!   subscribed, a DHT lookup. Inside, a [`LivePlanner`] decides which
//!   shards to ask which peer for and when an origin must fill in.
//! - [`Broadcast`] (`broadcast.rs`) is one channel this node publishes: the
//!   pacing and the ration of each new segment's shards, and when each
//!   ration ends.
//! - [`LivePlanner`] (`planner.rs`) is the viewer's plan of one channel's
//!   segments: accepting announcements, the shard fetches, the deadline,
//!   the HTTP fill-in, the proxying of an origin and the window. In
//!   low-latency live its units are parts, and [`group_parts`]
//!   (`parts.rs`) puts what it lists back into segments.
//!
//! Where a late segment is fetched over HTTP: [`LivePlanner`] decides when
//! (its P2P time is up, `planner.rs`, `handle_timeout`) and which bytes
//! ([`HttpRequest`]); [`LiveSession`] adds the URLs
//! ([`SessionAction::FetchRange`]); the node's `live.rs` fetches the range
//! and verifies every shard.

mod broadcast;
mod parts;
mod planner;
mod session;
#[cfg(test)]
pub(crate) mod testing;

pub use broadcast::{Broadcast, BroadcastAction, KEEP_SEGMENTS};
pub use parts::{ListedPart, PartSegment, PartsView, group_parts};
pub use planner::*;
pub use session::{
    FIRST_DISCOVERY_RETRY, LIVE_DISCOVERY_INTERVAL, LIVE_IDLE_TIMEOUT, LIVE_TARGET_PEERS,
    LiveEvent, LiveSession, LiveView, OriginMedia, OriginPlaylists, PROVIDER_BUCKETS,
    PlaylistSources, ProxySegment, RECORD_RETRY, RenditionView, SessionAction, join_relative,
};
