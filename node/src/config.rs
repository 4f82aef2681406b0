//! Node settings, each with the reason for its default.

use std::time::Duration;

use libp2p::Multiaddr;
use shoal_protocol::bitswap::EngineConfig;
use shoal_protocol::fetch::StreamFetchConfig;
use shoal_protocol::live::LiveConfig;
use shoal_protocol::machine::MachineConfig;

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
    /// Resolve `/dns*` multiaddrs with the system's resolver settings
    /// (`/etc/resolv.conf` and the like); `false`: Cloudflare's and
    /// Google's public resolvers, asked directly. Phones use `false`: on
    /// Android, reading the system's settings calls into the JVM, which a
    /// library the app loads cannot do without being handed its context.
    pub system_dns: bool,
    /// Serve as a circuit relay for peers behind NAT (`[node] relay`):
    /// for nodes on a public address that can spare the bandwidth.
    pub relay: bool,
    /// Most connections in total, so a crowd of peers cannot exhaust
    /// memory or file descriptors.
    pub max_connections: u32,
    /// Most connections with one peer.
    pub max_connections_per_peer: u32,
    /// Fetch from origins on loopback, private or link-local addresses
    /// even when only a channel record names them (a broadcast on a LAN,
    /// tests on one machine). Origins the user names are always allowed.
    pub private_origins: bool,
    /// Most inbound connections from one IP address (`None`: no limit,
    /// for nodes that all run on one address, as in tests).
    pub max_connections_per_ip: Option<u32>,
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
    /// On-demand fetches: windows and timeouts.
    pub fetch: StreamFetchConfig,
    /// The Bitswap engine's limits (wantlists, queues, the broadcaster's
    /// pacing).
    pub engine: EngineConfig,
    /// Deadlines and windows of watched live channels.
    pub live: LiveConfig,
    /// Peers found in the DHT dialled per lookup: enough for a gossip mesh
    /// (gossipsub keeps 6 mesh peers) and several shard sources each.
    pub max_dials: usize,
    /// The wallet, the deployment claimed on, and the ledger's thresholds.
    pub rewards: crate::rewards::RewardsConfig,
    /// The wall clock at the node's start, in Unix milliseconds (`None`:
    /// the system's). The node keeps time from it by its monotonic clock,
    /// so a clock stepped while it runs moves neither its deadlines nor
    /// its reward epochs.
    pub start_unix_ms: Option<u64>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: default_listen(),
            bootstrap: Vec::new(),
            kad_protocol: "/shoal/kad/1.0.0".into(),
            mdns: true,
            system_dns: true,
            relay: false,
            max_connections: 512,
            max_connections_per_peer: 2,
            max_connections_per_ip: Some(crate::ip_limit::DEFAULT_PER_IP),
            private_origins: false,
            upload_bytes_per_sec: None,
            no_upload: false,
            provide_interval: Duration::from_secs(12 * 3600),
            ban_duration: Duration::from_secs(3600),
            fetch: StreamFetchConfig::default(),
            engine: EngineConfig::default(),
            live: LiveConfig::default(),
            max_dials: 16,
            rewards: Default::default(),
            start_unix_ms: None,
        }
    }
}

/// Any free port on every interface, over TCP (and QUIC where built in).
fn default_listen() -> Vec<Multiaddr> {
    let mut addrs = vec!["/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr")];
    if cfg!(feature = "quic") {
        addrs.push(
            "/ip4/0.0.0.0/udp/0/quic-v1"
                .parse()
                .expect("valid multiaddr"),
        );
    }
    addrs
}

impl NodeConfig {
    /// The settings a repo's `config.toml` gives (its addresses, limits,
    /// live settings and deployment) with the repo's wallet, created if
    /// it has none. What `config.toml` cannot say (the engine's limits,
    /// timeouts) keeps its default.
    pub fn from_repo(paths: &crate::repo::RepoPaths) -> Result<NodeConfig, crate::repo::RepoError> {
        let invalid = |detail: String| crate::repo::RepoError::Config {
            path: paths.config_file(),
            detail,
        };
        let addrs =
            |what: &str, texts: &[String]| -> Result<Vec<Multiaddr>, crate::repo::RepoError> {
                texts
                    .iter()
                    .map(|t| {
                        t.parse()
                            .map_err(|e| invalid(format!("invalid {what} {t:?}: {e}")))
                    })
                    .collect()
            };
        let net = &paths.config.node;
        let wallet = crate::wallet::load_or_create(&paths.wallet()).map_err(|e| {
            crate::repo::RepoError::Config {
                path: paths.wallet(),
                detail: e.to_string(),
            }
        })?;
        Ok(NodeConfig {
            listen: addrs("listen address", &net.listen)?,
            bootstrap: addrs("bootstrap address", &net.bootstrap)?,
            mdns: net.mdns,
            relay: net.relay,
            max_connections: net.max_peers,
            max_connections_per_ip: (net.max_peers_per_ip > 0).then_some(net.max_peers_per_ip),
            private_origins: paths.config.live.private_origins,
            upload_bytes_per_sec: net.upload_bytes_per_sec,
            no_upload: net.no_upload,
            live: paths.config.live.config(),
            rewards: crate::rewards::RewardsConfig {
                wallet: Some(wallet),
                deployment: paths.config.rewards.deployment().map_err(invalid)?,
                ledger: Default::default(),
            },
            ..NodeConfig::default()
        })
    }

    /// The settings of the node's machine.
    pub(crate) fn machine(&self) -> MachineConfig {
        MachineConfig {
            engine: self.engine.clone(),
            live: self.live.clone(),
            fetch: self.fetch.clone(),
            ledger: self.rewards.ledger.clone(),
            ban_duration: self.ban_duration,
            max_dials: self.max_dials,
            no_upload: self.no_upload,
        }
    }
}
