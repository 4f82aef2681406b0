//! Fetching blocks from peers, without I/O.
//!
//! - [`GroupFetch`] (`group.rs`) fetches any `need` of a group of blocks
//!   (a segment's shards, or one manifest), spreading requests over peers.
//! - [`StreamFetch`] (`stream.rs`) fetches a whole on-demand stream, or
//!   some of its segments, or one block: the root, then the segment
//!   manifests, then any `k` shards of each segment, each step a
//!   [`GroupFetch`], with its timeouts and its report.

mod group;
mod stream;

pub use group::*;
pub use stream::{
    BlockLookup, FetchError, FetchReport, FetchTarget, StreamFetch, StreamFetchAction,
    StreamFetchConfig,
};
