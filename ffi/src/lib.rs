//! shoal inside a phone app: the node behind one small API that uniffi
//! turns into Kotlin (Android), Swift (iOS) and Python bindings.
//!
//! An app starts a [`ShoalNode`] on a folder of its own, hands the URLs
//! it gets ([`ShoalNode::watch`], [`ShoalNode::vod_url`]) to its player,
//! and tells the node what the phone does: the network it is on
//! ([`ShoalNode::set_network`]), the app going to the background and
//! back ([`ShoalNode::pause`], [`ShoalNode::resume`]).
//!
//! What the crate guarantees:
//!
//! - **Synchronous calls, one runtime.** Every call blocks until done
//!   (apps call them off their main thread); the node runs on a tokio
//!   runtime of two worker threads the crate owns. [`ShoalNode::stop`]
//!   returns once the node's ports are closed and its data folder is free.
//! - **A listener that cannot stall the node.** Events go through a queue
//!   of [`EVENT_QUEUE`] to one thread that calls the app's
//!   [`NodeListener`]; beyond it they are dropped and counted. An
//!   exception in the listener is caught and logged.
//! - **A gateway for the app's player only.** It listens on 127.0.0.1 on
//!   a free port, every path starts with a secret drawn at each start
//!   (other apps share the phone's loopback), and it serves playlists and
//!   segments alone: no control API, no player page, no metrics.
//! - **Upload as the user allows.** `UnmeteredOnly` serves peers only
//!   while the app reports an unmetered network, and the network counts
//!   as metered until the app says otherwise; paused or offline, the node
//!   holds no connection at all. The store stays within its quota and
//!   the live cache within its segment count, whatever is watched.
//! - **A mobile dependency tree.** No C or CMake build of aws-lc (no
//!   QUIC, whose TLS needs it; HTTPS origins on rustls with ring and the
//!   Mozilla roots), no reading of the system's DNS settings (public
//!   resolvers, asked directly), no chain client.
//! - **Typed errors.** [`ShoalError`] says what kind of failure it is
//!   (bad config, data folder locked, network, not found, …), with a
//!   message saying what to do.

// Errors from shoal-node name the CID they are about; they are returned
// on cold paths only.
#![allow(clippy::result_large_err)]

uniffi::setup_scaffolding!("shoal");

mod monitor;
mod node;
mod types;

pub use monitor::EVENT_QUEUE;
pub use node::ShoalNode;
pub use types::*;
