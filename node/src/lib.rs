//! shoal-node: the peer-to-peer node.
//!
//! A [`Node`] is a cheap-to-clone handle; one task (the event loop) owns the
//! libp2p swarm and receives the handle's commands over a channel, replying
//! through oneshots. The swarm combines TCP and QUIC (noise, yamux),
//! identify, ping, Kademlia on `/shoal/kad/1.0.0`, gossipsub (signed,
//! validated before forwarding), autonat, relay client and DCUtR, mDNS,
//! connection limits, a block list for banned peers, and Bitswap streams
//! driven by the sans-IO engine of `shoal-protocol`.

// Errors name the CID they are about (a CID is ~100 bytes inline) so the
// user can act on them; they are returned on cold paths only.
#![allow(clippy::result_large_err)]

#[cfg(feature = "api")]
pub mod api;
mod behaviour;
mod bitswap;
pub mod broadcast;
pub mod channel_keys;
pub mod config;
#[cfg(feature = "api")]
pub mod daemon;
pub mod dht_store;
mod event_loop;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod identity;
pub mod ip_limit;
pub mod limits;
pub mod live;
#[cfg(feature = "gateway")]
pub mod ll_hls;
#[cfg(feature = "gateway")]
pub mod local_http;
#[cfg(feature = "gateway")]
pub mod origin;
#[cfg(feature = "http-origin")]
mod origin_client;
mod relaying;
pub mod repo;
pub mod rewards;
#[cfg(feature = "settle")]
pub mod settle;
pub mod stats;
mod store_io;
mod streams;
pub mod testsrc;
pub mod wallet;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, allow_block_list, autonat, connection_limits, dcutr,
    gossipsub, identify, kad, mdns, noise, ping, relay, tcp, yamux,
};
use shoal_protocol::block::Cid;
use shoal_protocol::channel::{ChannelError, ChannelId};
use shoal_protocol::fetch::{FetchError, FetchTarget};
use shoal_protocol::machine::WatchError;
use shoal_protocol::receipt::SignedReceipt;
use shoal_storage::{Blockstore, StoreError};
use tokio::sync::{mpsc, oneshot};

pub use config::NodeConfig;
pub use libp2p;
pub use live::{LiveView, RenditionView};
pub use shoal_protocol::machine::Traffic;

use crate::behaviour::Behaviour;
use crate::event_loop::Command;

/// What a finished fetch did.
pub type FetchReport = shoal_protocol::fetch::FetchReport<PeerId>;

/// What happens in the node that an app would show: segments ready, a
/// channel proxying its origin or stalling, the peer count, bans.
pub type NodeEvent = shoal_protocol::machine::NodeEvent<PeerId>;

/// Largest gossipsub message: announcements are small, and a bound keeps a
/// flood cheap to refuse.
const GOSSIPSUB_MAX_BYTES: usize = 64 << 10;

/// What went wrong in the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity key {path} is unreadable: {source}")]
    Identity {
        path: PathBuf,
        source: libp2p::identity::DecodingError,
    },
    #[error(transparent)]
    Wallet(#[from] wallet::WalletError),
    #[error("cannot start the network: {what}: {source}")]
    Transport {
        what: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the node listens nowhere")]
    NotListening,
    #[error("cannot reach {addr}: {source}")]
    Dial {
        addr: String,
        // Boxed: a dial error lists every address tried, and a
        // `NodeError` travels in every reply.
        source: Box<libp2p::swarm::DialError>,
    },
    #[error("cannot announce content: {0}")]
    Provide(#[from] kad::store::Error),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("cannot publish: {0}")]
    Gossip(#[from] gossipsub::PublishError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[cfg(feature = "settle")]
    #[error(transparent)]
    Settle(#[from] settle::SettleError),
    #[error("invalid limits: {0}")]
    Limits(#[from] limits::LimitsError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Repo(Box<repo::RepoError>),
    #[error("the node has shut down")]
    ShutDown,
}

impl NodeError {
    fn transport(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> NodeError {
        NodeError::Transport {
            what,
            source: source.into(),
        }
    }
}

/// A handle to a running node.
#[derive(Clone)]
pub struct Node {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    stop: mpsc::Sender<oneshot::Sender<()>>,
    store: Arc<Blockstore>,
    events: tokio::sync::broadcast::Sender<NodeEvent>,
}

impl Node {
    /// Starts a node on the current tokio runtime: binds the listen
    /// addresses, joins through the bootstrap peers, and returns once
    /// listening.
    pub async fn start(
        config: NodeConfig,
        keypair: Keypair,
        store: Arc<Blockstore>,
    ) -> Result<Node, NodeError> {
        let peer_id = keypair.public().to_peer_id();
        let mut swarm = build_swarm(&config, keypair)?;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen {
                    addr: addr.to_string(),
                    source: Box::new(e),
                })?;
        }
        // Serve the DHT from the start: nodes on one LAN or loopback have
        // no confirmed external address for the automatic switch.
        swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
        for addr in &config.bootstrap {
            match peer_of(addr) {
                Some(peer) => {
                    swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                }
                None => {
                    tracing::warn!(%addr, "bootstrap address has no /p2p/ peer id; dialing it anyway")
                }
            }
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        if !config.bootstrap.is_empty() {
            let _ = swarm.behaviour_mut().kad.bootstrap();
        }

        let handles = event_loop::spawn(swarm, config, peer_id, store.clone())?;
        let node = Node {
            peer_id,
            commands: handles.commands,
            stop: handles.stop,
            store,
            events: handles.events,
        };
        Ok(node)
    }

    /// Starts a node whose store and identity live in `dir` (created if
    /// needed): `blocks.redb` and `identity.key`, as in a repo. For tools
    /// that run nodes without a repo's config (the demo, benchmarks,
    /// simulations).
    pub async fn start_in(dir: &std::path::Path, config: NodeConfig) -> Result<Node, NodeError> {
        std::fs::create_dir_all(dir).map_err(|source| NodeError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let store = Blockstore::create(
            &dir.join("blocks.redb"),
            &shoal_storage::StoreOptions::default(),
        )?;
        let key = identity::load_or_create(&dir.join("identity.key"))?;
        let mut config = config;
        if config.rewards.wallet.is_none() {
            let path = dir.join("wallet.key");
            let wallet = wallet::load_or_create(&path)?;
            config.rewards.wallet = Some(wallet);
        }
        Node::start(config, key, Arc::new(store)).await
    }

    /// Starts a node on a repo (see [`crate::repo`]): its store (opened
    /// exclusively) and identity, with `config` (usually
    /// [`NodeConfig::from_repo`], changed as the caller needs). What an app
    /// that embeds the node calls; stop it with [`Node::stop`].
    pub async fn start_repo(
        paths: &repo::RepoPaths,
        config: NodeConfig,
    ) -> Result<Node, NodeError> {
        let store = paths.open_store().map_err(|e| match e {
            repo::RepoError::Store(s) => NodeError::Store(s),
            other => NodeError::Repo(Box::new(other)),
        })?;
        let key = identity::load_or_create(&paths.identity())?;
        Node::start(config, key, Arc::new(store)).await
    }

    /// The first address the node listens on, with its `/p2p/` peer id:
    /// what another node dials or bootstraps from.
    pub async fn dialable_addr(&self) -> Result<Multiaddr, NodeError> {
        let addr = self
            .listen_addrs()
            .await?
            .into_iter()
            .next()
            .ok_or(NodeError::NotListening)?;
        Ok(addr.with(libp2p::multiaddr::Protocol::P2p(self.peer_id)))
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub fn store(&self) -> &Arc<Blockstore> {
        &self.store
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::ShutDown)?;
        rx.await.map_err(|_| NodeError::ShutDown)
    }

    /// The addresses the node listens on, waiting (up to five seconds) for
    /// the listeners to be bound.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        for _ in 0..100 {
            let addrs = self.ask(Command::ListenAddrs).await?;
            if !addrs.is_empty() {
                return Ok(addrs);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.ask(Command::ListenAddrs).await
    }

    /// Connects to a peer; returns its id once connected.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        let text = addr.to_string();
        self.ask(|tx| Command::Dial(addr, tx))
            .await?
            .map_err(|e| match e {
                NodeError::Dial { source, .. } => NodeError::Dial { addr: text, source },
                other => other,
            })
    }

    /// The peers connected now.
    pub async fn peers(&self) -> Result<Vec<PeerId>, NodeError> {
        self.ask(Command::Peers).await
    }

    /// Every connection: its peer and the address at the other end (a
    /// relayed one ends in `/p2p-circuit`).
    pub async fn connections(&self) -> Result<Vec<(PeerId, Multiaddr)>, NodeError> {
        self.ask(Command::Connections).await
    }

    /// Peers banned for misbehaviour.
    pub async fn banned(&self) -> Result<Vec<PeerId>, NodeError> {
        self.ask(Command::Banned).await
    }

    /// Announces in the DHT that this node provides `root`. Kademlia
    /// republishes the record periodically.
    pub async fn provide(&self, root: Cid) -> Result<(), NodeError> {
        self.ask(|tx| Command::Provide(root, tx)).await?
    }

    /// Fetches a stream from the network into the store (what is already
    /// there is not fetched again), pins it and provides it.
    pub async fn fetch(&self, root: Cid) -> Result<FetchReport, NodeError> {
        self.ask(|tx| Command::Fetch(root, FetchTarget::Stream, tx))
            .await?
    }

    /// Fetches some segments of the stream `root` (their manifests and any
    /// `k` shards each) into the store without pinning them: what a player
    /// needs next.
    pub async fn fetch_segments(
        &self,
        root: Cid,
        manifests: Vec<Cid>,
    ) -> Result<FetchReport, NodeError> {
        self.ask(|tx| Command::Fetch(root, FetchTarget::Segments(manifests), tx))
            .await?
    }

    /// Fetches a stream's root manifest alone, without pinning it.
    pub async fn fetch_root(&self, root: Cid) -> Result<(), NodeError> {
        self.ask(|tx| Command::Fetch(root, FetchTarget::Block { pin: false }, tx))
            .await??;
        Ok(())
    }

    /// Fetches one block of any kind (not a stream) into the store, pins it
    /// and returns its bytes: what any IPFS node can ask of shoal.
    pub async fn fetch_block(&self, cid: Cid) -> Result<Vec<u8>, NodeError> {
        self.ask(|tx| Command::Fetch(cid, FetchTarget::Block { pin: true }, tx))
            .await??;
        Ok(self.store.require(&cid)?)
    }

    /// Starts watching a live channel (or keeps watching it): subscribes to
    /// its announcements, finds its record and other viewers in the DHT,
    /// and fetches new segments as they are announced.
    pub async fn watch(&self, channel: ChannelId) -> Result<(), NodeError> {
        self.watch_with_origins(channel, &[]).await
    }

    /// Watches a channel with HTTP origins of the user's own: the URLs of
    /// its playlist (master or media). When no peer announces the channel
    /// (none found, or the broadcaster is gone), the node proxies the
    /// first origin that answers, as a plain HLS proxy would. Origins the
    /// channel record names are used as well.
    pub async fn watch_with_origins(
        &self,
        channel: ChannelId,
        origins: &[String],
    ) -> Result<(), NodeError> {
        let origins = origins.to_vec();
        self.ask(|tx| Command::Watch(channel, origins, tx)).await?
    }

    /// Stops watching a channel.
    pub async fn unwatch(&self, channel: ChannelId) -> Result<(), NodeError> {
        self.ask(|tx| Command::Unwatch(channel, tx)).await
    }

    /// What this node holds of a watched channel (`None` if not watching).
    pub async fn live_view(&self, channel: ChannelId) -> Result<Option<LiveView>, NodeError> {
        self.ask(|tx| Command::LiveView(channel, tx)).await
    }

    /// The address of the wallet this node signs receipts with.
    pub async fn wallet_address(&self) -> Result<alloy_primitives::Address, NodeError> {
        self.ask(Command::WalletAddress).await
    }

    /// Every peer's account in this node's ledger.
    pub async fn accounts(
        &self,
    ) -> Result<Vec<(PeerId, shoal_protocol::ledger::Account)>, NodeError> {
        self.ask(Command::Accounts).await
    }

    /// The receipts this node holds as a relayer, with what of each was
    /// claimed on chain.
    pub fn receipts(&self) -> Result<Vec<(SignedReceipt, u64)>, NodeError> {
        rewards::held_receipts(&self.store)
    }

    /// Claims every receipt held that the pool can count now (its epoch
    /// over, its claim window open) and not claimed yet.
    #[cfg(feature = "settle")]
    pub async fn claim(
        &self,
        chain: &settle::Settlement,
    ) -> Result<settle::ClaimOutcome, NodeError> {
        settle::claim(&self.store, chain).await
    }

    /// Channels being watched.
    pub async fn watching(&self) -> Result<Vec<ChannelId>, NodeError> {
        self.ask(Command::Watching).await
    }

    /// Publishes a (signed) announcement on a rendition's topic.
    pub async fn publish(
        &self,
        channel: ChannelId,
        rendition: u16,
        announcement: Vec<u8>,
    ) -> Result<(), NodeError> {
        self.ask(|tx| Command::Publish(channel, rendition, announcement, tx))
            .await?
    }

    /// Stores a signed channel record here and provides the channel; the
    /// put to the DHT goes on after this returns.
    pub async fn put_channel_record(
        &self,
        channel: ChannelId,
        record: Vec<u8>,
    ) -> Result<(), NodeError> {
        self.ask(|tx| Command::PutRecord(channel, record, tx))
            .await?
    }

    /// Block bytes sent to and received from peers since the node started.
    pub async fn traffic(&self) -> Result<Traffic, NodeError> {
        self.ask(Command::Traffic).await
    }

    /// What the node's DHT store holds: its own announcements and other
    /// peers' records, and how many of those it refused over a quota.
    pub async fn dht_stat(&self) -> Result<dht_store::DhtStat, NodeError> {
        self.ask(Command::DhtStat).await
    }

    /// The node's run-time limits.
    pub async fn limits(&self) -> Result<limits::Limits, NodeError> {
        self.ask(Command::Limits).await
    }

    /// Changes the node's run-time limits.
    pub async fn set_limits(&self, limits: limits::Limits) -> Result<(), NodeError> {
        limits.validate()?;
        self.ask(|tx| Command::SetLimits(limits, tx)).await
    }

    /// Pauses the node, as a phone app does when it goes to the
    /// background: it serves nothing, closes every connection and refuses
    /// new ones until [`Node::resume`]. Watches and the gateway stay (a
    /// player asking finds what the store holds); the store is untouched.
    pub async fn pause(&self) -> Result<(), NodeError> {
        self.ask(|tx| Command::Pause(true, tx)).await
    }

    /// Resumes a paused node: it serves again (as its limits allow) and
    /// dials its bootstrap peers and the peers it held before the pause.
    pub async fn resume(&self) -> Result<(), NodeError> {
        self.ask(|tx| Command::Pause(false, tx)).await
    }

    /// A peer's gossipsub score (negative after invalid messages).
    pub async fn gossip_score(&self, peer: PeerId) -> Result<Option<f64>, NodeError> {
        self.ask(|tx| Command::GossipScore(peer, tx)).await
    }

    /// What happens in the node, as an app would show it, from now on. A
    /// listener that falls more than a few hundred events behind loses the
    /// oldest (and is told how many).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// Stops the node and waits until it has: fetches under way fail,
    /// watches end, the swarm and its connections close, and every task
    /// the node started has finished, so that nothing of the node holds the
    /// store any more. The store itself closes (and its lock is released)
    /// when the last handle to it goes: drop this handle and its clones
    /// (a gateway's among them), and the repo can be opened again.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.stop.send(tx).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The peer id at the end of a multiaddr (`…/p2p/<id>`), if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// Where `/dns*` multiaddrs are resolved (see [`NodeConfig::system_dns`]).
fn dns_resolvers(
    system: bool,
) -> Result<(libp2p::dns::ResolverConfig, libp2p::dns::ResolverOpts), NodeError> {
    use hickory_resolver::config::{CLOUDFLARE, GOOGLE, ResolverConfig, ResolverOpts};
    if system {
        return hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| NodeError::transport("DNS (the system's resolver settings)", e));
    }
    let servers = CLOUDFLARE
        .udp_and_tcp()
        .chain(GOOGLE.udp_and_tcp())
        .collect();
    Ok((
        ResolverConfig::from_name_servers(servers),
        ResolverOpts::default(),
    ))
}

fn build_swarm(
    config: &NodeConfig,
    keypair: Keypair,
) -> Result<libp2p::Swarm<Behaviour>, NodeError> {
    let kad_protocol = StreamProtocol::try_from_owned(config.kad_protocol.clone())
        .map_err(|e| NodeError::transport("the Kademlia protocol name", e.to_string()))?;
    let limits =
        ip_limit::connection_limits(config.max_connections, config.max_connections_per_peer);
    let per_ip = config.max_connections_per_ip;
    let mdns_enabled = config.mdns;
    let serve_relay = config.relay;
    let provide_interval = config.provide_interval;
    let builder = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NodeError::transport("TCP", e))?;
    #[cfg(feature = "quic")]
    let builder = builder.with_quic();
    let (dns, dns_options) = dns_resolvers(config.system_dns)?;
    let swarm = builder
        .with_dns_config(dns, dns_options)
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| NodeError::transport("the relay client", e))?
        .with_behaviour(|key, relay_client| {
            let peer_id = key.public().to_peer_id();
            let mut kad_config = kad::Config::new(kad_protocol);
            kad_config.set_provider_publication_interval(Some(provide_interval));
            // Records are checked before they are stored (only signed
            // channel records are kept); provider records are kept as is.
            kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
            let kad =
                kad::Behaviour::with_config(peer_id, dht_store::DhtStore::new(peer_id), kad_config);
            let gossipsub_config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .validate_messages()
                .max_transmit_size(GOSSIPSUB_MAX_BYTES)
                // A broadcaster sends each announcement to its mesh (topped
                // up to six peers) rather than to every viewer connected to
                // it: its uplink is the channel's scarcest, and the mesh
                // carries the message on in a few hops (`shoal-sim swarm`,
                // 1000 viewers: p95 1.33 -> 0.98 s, and a third of the
                // broadcaster's bytes).
                .flood_publish(false)
                // A message is known by its content: a replayed
                // announcement is a duplicate while remembered, and a
                // rewound one after that.
                .message_id_fn(|m: &gossipsub::Message| {
                    gossipsub::MessageId::from(shoal_protocol::block::sha256(&m.data).to_vec())
                })
                .build()
                .map_err(|e| e.to_string())?;
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub_config,
            )?;
            gossipsub.with_peer_score(
                live::peer_score_params(),
                gossipsub::PeerScoreThresholds::default(),
            )?;
            let mdns = if mdns_enabled {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    peer_id,
                )?)
            } else {
                None
            };
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                per_ip: ip_limit::IpLimit::new(per_ip),
                blocked: allow_block_list::Behaviour::default(),
                // Peers hear of new addresses at once (a relayed one, once a
                // relay has given this node a slot), not at the next
                // periodic identify.
                identify: identify::Behaviour::new(
                    identify::Config::new("/shoal/1.0.0".into(), key.public())
                        .with_push_listen_addr_updates(true),
                ),
                ping: ping::Behaviour::default(),
                kad,
                gossipsub,
                autonat: autonat::Behaviour::new(peer_id, autonat::Config::default()),
                relay: relay_client,
                relay_server: Toggle::from(
                    serve_relay.then(|| relay::Behaviour::new(peer_id, relaying::server_config())),
                ),
                dcutr: dcutr::Behaviour::new(peer_id),
                mdns: Toggle::from(mdns),
                streams: streams::Behaviour::new(
                    bitswap::protocols()
                        .into_iter()
                        .chain([rewards::RECEIPT_PROTOCOL])
                        .collect(),
                ),
            })
        })
        .map_err(|e| NodeError::transport("the behaviour", e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}
