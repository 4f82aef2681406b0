//! shoal-protocol: the wire formats and sans-IO state machines of shoal.
//!
//! Nothing here does I/O: no sockets, no runtime, no file system. What lives
//! here is what two shoal nodes (or shoal and another IPFS implementation) must
//! agree on byte for byte:
//!
//! - [`block`]: content identifiers (CIDv1) and block verification;
//! - [`manifest`]: [`SegmentManifest`] and [`StreamManifest`], the dag-cbor
//!   documents that describe a stream, with strict, bounded decoding;
//! - [`channel`]: live channels: ids, signed announcements and records;
//! - [`bitswap`]: the Bitswap 1.2.0 wire format and engine;
//! - [`fetch`]: the planner that spreads block requests over peers, and
//!   the fetch of a whole on-demand stream;
//! - [`live`]: a watched live channel (its session and the deadline-aware
//!   planner inside it) and a published one;
//! - [`http`]: the gateway's paths and `Range` headers, as HTTP clients
//!   send them;
//! - [`ledger`]: per-peer accounting (Swarm's thresholds) and throttling;
//! - [`receipt`]: EIP-712 receipts and cheques, the wallet key, and the
//!   receipt protocol's messages;
//! - [`rewards`]: the ledger as the node uses it and the receipt
//!   protocol's rules on both sides;
//! - [`machine`]: the node as one machine, the engine and all of the
//!   above routed among themselves: what the node's event loop and the
//!   swarm model both drive.
//!
//! Every machine has the shape of `quinn-proto`: `handle_*` calls feed it
//! what happened, with the time passed in; `poll_action` drains what it
//! asks for; `poll_timeout` says when it next needs the time.

// Errors name the CID they are about (a CID is ~100 bytes inline) so the
// user can act on them; they are returned on cold paths only.
#![allow(clippy::result_large_err)]

pub mod bitswap;
pub mod block;
mod bounded;
pub mod channel;
pub mod fetch;
pub mod http;
pub mod ledger;
pub mod live;
pub mod machine;
pub mod manifest;
pub mod receipt;
pub mod rewards;

pub use block::{Block, BlockError, Cid, Codec, MAX_BLOCK_SIZE};
pub use manifest::{
    ManifestError, Rendition, SegmentManifest, SegmentRef, StreamKind, StreamManifest,
};
