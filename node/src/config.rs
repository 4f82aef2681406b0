//! Node settings, each with the reason for its default.

use std::time::Duration;

use libp2p::Multiaddr;
use shoal_protocol::bitswap::EngineConfig;
use shoal_protocol::fetch::FetchConfig;
use shoal_protocol::live::LiveConfig;

/// How a node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Addresses to listen on. The default takes any free port on every
    /// interface, over TCP and QUIC.
    pub listen: Vec<Multiaddr>,
    /// Peers to join the network through.
    pub bootstrap: Vec<Multiaddr>,
    /// Kademlia protocol name: shoal keeps its own DHT, apart from IPFS's.
    pub kad_protocol: String,
    /// Find peers on the local network with mDNS.
    pub mdns: bool,
    /// Most connections in total, so a crowd of peers cannot exhaust
    /// memory or file descriptors.
    pub max_connections: u32,
    /// Most connections with one peer.
    pub max_connections_per_peer: u32,
    /// Upload cap and no-upload mode (changeable at run time; the live
    /// cache and peer limit come from `live.window` and
    /// `max_connections`).
    pub upload_bytes_per_sec: Option<u64>,
    pub no_upload: bool,
    /// How often provider records are published again (Kademlia drops them
    /// after 48 h; republishing every 12 h keeps them alive through churn).
    pub provide_interval: Duration,
    /// How long a peer that sent a wrong block stays banned.
    pub ban_duration: Duration,
    /// Segments fetched at once. Eight 4 MiB segments in flight keep several
    /// peers busy without holding much memory.
    pub segment_window: usize,
    /// A fetch with no progress for this long fails.
    pub fetch_stall_timeout: Duration,
    /// A fetch that no known peer can complete, with the DHT search over,
    /// fails after this long: long enough for content being added right
    /// now to arrive, short enough that a wrong CID is reported quickly.
    pub fetch_hopeless_grace: Duration,
    pub fetch: FetchConfig,
    /// The Bitswap engine's limits (wantlists, queues, the broadcaster's
    /// pacing).
    pub engine: EngineConfig,
    /// Deadlines and windows of watched live channels.
    pub live: LiveConfig,
    /// Viewers of a channel dialed per DHT lookup: enough for a gossip mesh
    /// (gossipsub keeps 6 mesh peers) and several shard sources each.
    pub live_max_dials: usize,
    /// The wallet, the deployment claimed on, and the ledger's thresholds.
    pub rewards: crate::rewards::RewardsConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            bootstrap: Vec::new(),
            kad_protocol: "/shoal/kad/1.0.0".into(),
            mdns: true,
            max_connections: 512,
            max_connections_per_peer: 2,
            upload_bytes_per_sec: None,
            no_upload: false,
            provide_interval: Duration::from_secs(12 * 3600),
            ban_duration: Duration::from_secs(3600),
            segment_window: 8,
            fetch_stall_timeout: Duration::from_secs(30),
            fetch_hopeless_grace: Duration::from_secs(5),
            fetch: FetchConfig::default(),
            engine: EngineConfig::default(),
            live: LiveConfig::default(),
            live_max_dials: 16,
            rewards: Default::default(),
        }
    }
}
