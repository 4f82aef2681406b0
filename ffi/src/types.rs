//! What crosses the FFI: the settings an app gives, the numbers and
//! events it gets back, and its errors. Every type here is plain data
//! (records and enums), copied across the boundary.

use shoal_node::NodeError;
use shoal_node::channel_keys::ChannelKeyError;
use shoal_node::repo::RepoError;
use shoal_storage::{ImportError, StoreError};

/// When the node uploads to other viewers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum UploadPolicy {
    /// Whenever it is online.
    Always,
    /// Only while the app reports an unmetered network (Wi-Fi, Ethernet):
    /// a phone on mobile data watches but does not share.
    UnmeteredOnly,
    /// Never: the node only watches.
    Never,
}

/// How a node starts. [`default_config`] gives the usual values.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct MobileConfig {
    /// The node's folder (the app's files or cache folder): its store,
    /// identity and channel keys. Created if missing; one node at a time.
    pub data_dir: String,
    /// TCP port for peers, on every interface (IPv4 and IPv6); 0: a free
    /// one, drawn at each start.
    pub listen_port: u16,
    /// Multiaddrs of peers to join through
    /// (`/ip4/…/tcp/…/p2p/<peer id>`, `/dns4/…`).
    pub bootstrap: Vec<String>,
    /// Most bytes the store keeps; what is not pinned is evicted, least
    /// recently used first. At least [`MIN_STORE_QUOTA`].
    pub store_quota_bytes: u64,
    /// Complete segments kept per rendition of a watched channel (at
    /// least 3: the one playing and the next two).
    pub cache_segments: u32,
    /// Most connected peers.
    pub max_peers: u32,
    /// Most bytes per second sent to peers; `None`: no cap.
    pub upload_bytes_per_sec: Option<u64>,
    pub upload_policy: UploadPolicy,
    /// Find peers on the local network (multicast DNS).
    pub mdns: bool,
}

/// The smallest store: a few segments of a 4.5 Mb/s channel, with room
/// for its manifests.
pub const MIN_STORE_QUOTA: u64 = 16 << 20;

/// The usual settings, for a node in `data_dir`: any free port, 256 MiB
/// of store, 5 segments cached, 32 peers, upload on unmetered networks
/// only, mDNS on.
#[uniffi::export]
pub fn default_config(data_dir: String) -> MobileConfig {
    MobileConfig {
        data_dir,
        listen_port: 0,
        bootstrap: Vec::new(),
        store_quota_bytes: 256 << 20,
        cache_segments: 5,
        max_peers: 32,
        upload_bytes_per_sec: None,
        upload_policy: UploadPolicy::UnmeteredOnly,
        mdns: true,
    }
}

/// What can change while the node runs.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct MobileLimits {
    pub upload_bytes_per_sec: Option<u64>,
    pub upload_policy: UploadPolicy,
    pub max_peers: u32,
    pub cache_segments: u32,
}

/// The network the phone is on, as the app's connectivity callbacks
/// report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Record)]
pub struct NetworkState {
    pub online: bool,
    /// Mobile data, a hotspot, or anything the user pays for by the byte.
    pub metered: bool,
}

/// Where a watched channel's segments come from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum DeliveryState {
    /// From peers (the broadcaster or other viewers), with an origin
    /// filling in what comes late.
    P2p,
    /// No peer announces the channel: the node relays an HTTP origin's
    /// playlist, as a plain HLS proxy.
    Proxying,
    /// Nothing new for three segment durations (20 s before the first):
    /// the player will stall.
    Stalled,
}

/// One watched channel's numbers.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ChannelStats {
    pub channel: String,
    /// The playlist URL on the app's gateway.
    pub url: String,
    pub state: DeliveryState,
    /// Segments complete.
    pub segments: u64,
    /// Complete after their deadline: a player at the live edge stalled.
    pub late: u64,
    /// Given up.
    pub missed: u64,
    pub bytes_from_peers: u64,
    pub bytes_from_source: u64,
    pub bytes_from_http: u64,
    /// Bytes of this channel sent to other viewers.
    pub bytes_uploaded: u64,
    /// Publication to completion, 95th percentile of recent segments.
    pub latency_p95_ms: Option<u64>,
    /// Peers of the channel the node knows.
    pub peers: u32,
}

/// The node's numbers.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct NodeStats {
    /// Connected peers.
    pub peers: u32,
    /// Block bytes sent to and received from peers since the start.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Whether the node serves peers now (the policy, the network and
    /// pause allowing).
    pub uploading: bool,
    pub paused: bool,
    pub channels: Vec<ChannelStats>,
    /// Channels broadcast from this node, by name.
    pub broadcasting: Vec<String>,
}

/// What the node tells the app's listener, from one thread of its own.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum NodeEvent {
    /// The node runs: its peer id and its gateway's URL.
    Started {
        peer_id: String,
        gateway_url: String,
    },
    PeersChanged {
        peers: u32,
    },
    /// A watched channel's delivery changed.
    ChannelState {
        channel: String,
        state: DeliveryState,
    },
    /// Once a second while a channel is watched or broadcast.
    Stats {
        stats: NodeStats,
    },
    /// Something failed that no call returned: a broadcast that stopped,
    /// events the listener was too slow for.
    Error {
        reason: String,
    },
}

/// The app's listener. Called from one thread the node keeps for it, in
/// order; a slow listener delays only later events (which are dropped
/// beyond a queue of [`crate::EVENT_QUEUE`], with an `Error` event saying
/// how many), never the node. An exception it throws, of any type, is
/// logged and the next event is delivered as usual.
#[uniffi::export(foreign)]
pub trait NodeListener: Send + Sync {
    // A `Result`, so that an exception thrown by the app's code comes back
    // as an error value (see `From<UnexpectedUniFFICallbackError>`); with
    // no error type, uniffi turns it into a panic, which an app built with
    // `panic = "abort"` would not survive.
    fn on_event(&self, event: NodeEvent) -> Result<(), ShoalError>;
}

/// Why a call failed. Each names what to do in its `msg`.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ShoalError {
    /// A setting or argument is invalid (a port, a quota, a multiaddr, a
    /// channel id, a CID, a channel name).
    #[error("{msg}")]
    BadConfig { msg: String },
    /// Another node (in this process or another) holds the data folder.
    #[error("{msg}")]
    RepoLocked { msg: String },
    /// A file or folder could not be read or written.
    #[error("{msg}")]
    Io { msg: String },
    /// A peer could not be reached, a port could not be bound.
    #[error("{msg}")]
    Network { msg: String },
    /// No such channel, stream or broadcast.
    #[error("{msg}")]
    NotFound { msg: String },
    /// The store's quota is reached by what is pinned: raise
    /// `store_quota_bytes`, or import less.
    #[error("{msg}")]
    StoreFull { msg: String },
    /// A limit was reached (watches, a broadcast already running).
    #[error("{msg}")]
    Busy { msg: String },
    /// The node was stopped; start a new one.
    #[error("{msg}")]
    Stopped { msg: String },
    /// The store is damaged or something else failed inside the node.
    #[error("{msg}")]
    Internal { msg: String },
}

impl ShoalError {
    pub(crate) fn bad(msg: impl std::fmt::Display) -> ShoalError {
        ShoalError::BadConfig {
            msg: msg.to_string(),
        }
    }

    pub(crate) fn not_found(msg: impl std::fmt::Display) -> ShoalError {
        ShoalError::NotFound {
            msg: msg.to_string(),
        }
    }

    pub(crate) fn stopped() -> ShoalError {
        ShoalError::Stopped {
            msg: "the node was stopped; start a new one".into(),
        }
    }
}

/// An exception the app's listener threw that is no `ShoalError`.
impl From<uniffi::UnexpectedUniFFICallbackError> for ShoalError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        ShoalError::Internal {
            msg: format!("the app's listener failed: {}", e.reason),
        }
    }
}

impl From<StoreError> for ShoalError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::Locked { .. } => ShoalError::RepoLocked {
                msg: format!("{msg}: stop the other node first"),
            },
            StoreError::Io { .. } => ShoalError::Io { msg },
            StoreError::Missing(_) | StoreError::NotPinned(_) => ShoalError::NotFound { msg },
            StoreError::QuotaExceeded { .. } => ShoalError::StoreFull { msg },
            _ => ShoalError::Internal { msg },
        }
    }
}

impl From<RepoError> for ShoalError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Store(s) => s.into(),
            RepoError::Io { .. } => ShoalError::Io { msg: e.to_string() },
            RepoError::Config { .. } => ShoalError::BadConfig { msg: e.to_string() },
            _ => ShoalError::Internal { msg: e.to_string() },
        }
    }
}

impl From<NodeError> for ShoalError {
    // The last arm catches the variants of shoal-node features this crate
    // leaves off (they exist when another crate of a build turns them on).
    #[allow(unreachable_patterns)]
    fn from(e: NodeError) -> Self {
        use shoal_protocol::machine::WatchError;
        let msg = e.to_string();
        match e {
            NodeError::Store(s) => s.into(),
            NodeError::Repo(r) => (*r).into(),
            NodeError::Io { .. } | NodeError::Identity { .. } | NodeError::Wallet(_) => {
                ShoalError::Io { msg }
            }
            NodeError::Transport { .. }
            | NodeError::Listen { .. }
            | NodeError::NotListening
            | NodeError::Dial { .. }
            | NodeError::Provide(_)
            | NodeError::Gossip(_) => ShoalError::Network { msg },
            NodeError::Watch(WatchError::TooMany(_)) => ShoalError::Busy { msg },
            NodeError::Watch(_) | NodeError::Channel(_) | NodeError::Limits(_) => {
                ShoalError::BadConfig { msg }
            }
            NodeError::Fetch(_) => ShoalError::NotFound { msg },
            NodeError::ShutDown => ShoalError::stopped(),
            _ => ShoalError::Internal { msg },
        }
    }
}

impl From<ChannelKeyError> for ShoalError {
    fn from(e: ChannelKeyError) -> Self {
        let msg = e.to_string();
        match e {
            ChannelKeyError::BadName(_) => ShoalError::BadConfig { msg },
            ChannelKeyError::Unknown(name) => ShoalError::NotFound {
                msg: format!("no channel named {name:?}; create it with create_channel"),
            },
            ChannelKeyError::Io { .. } => ShoalError::Io { msg },
            ChannelKeyError::Exists { .. } | ChannelKeyError::Damaged { .. } => {
                ShoalError::Internal { msg }
            }
        }
    }
}

impl From<ImportError> for ShoalError {
    fn from(e: ImportError) -> Self {
        let msg = e.to_string();
        match e {
            ImportError::Store(s) => s.into(),
            ImportError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ShoalError::NotFound { msg }
            }
            ImportError::Io { .. } => ShoalError::Io { msg },
            _ => ShoalError::BadConfig { msg },
        }
    }
}
