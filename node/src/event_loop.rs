//! The one task that owns the swarm. It only routes: it feeds the node's
//! machine ([`NodeMachine`], `shoal_protocol::machine`) what the swarm,
//! the handles' commands and its own tasks report, carries out what the
//! machine asks, and sleeps until the machine's [`NodeMachine::poll_timeout`]
//! (there is no fixed tick). No lock is held around the swarm; everything
//! that touches it happens here, and everything that writes the store or
//! waits on the network happens in tasks.
//!
//! Where things are:
//! - one handler per swarm behaviour (`on_connection_*`, `on_identify`,
//!   `on_mdns`, `on_gossip`, `on_kad_request`, `on_kad_query`);
//! - [`EventLoop::perform`]: every [`Action`] the machine asks for;
//! - [`EventLoop::on_done`]: what the tasks report back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::kad::store::RecordStore;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, dcutr, gossipsub, identify, kad, mdns, relay};
use shoal_protocol::bitswap::Outgoing;
use shoal_protocol::block::Cid;
use shoal_protocol::channel::{ChannelId, ChannelRecord, open_dht_record};
use shoal_protocol::fetch::FetchTarget;
use shoal_protocol::live::{
    HttpRequest, LiveEvent, LiveView, OriginPlaylists, ProxiedSegment, ProxySegment,
};
use shoal_protocol::machine::{
    Action, FetchId, Identity, Input, Judgement, NodeMachine, ProviderKey, Traffic, WallClock,
};
use shoal_protocol::receipt::{ReceiptResponse, SignedReceipt};
use shoal_storage::Blockstore;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::bitswap::{self, StreamEvent};
use crate::limits::{Limits, UploadLimiter};
use crate::rewards::ReceiptAsked;
use crate::store_io::{NodeStore, Write};
use crate::{FetchReport, NodeConfig, NodeError, NodeEvent};

pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, NodeError>>),
    Peers(oneshot::Sender<Vec<PeerId>>),
    Connections(oneshot::Sender<Vec<(PeerId, Multiaddr)>>),
    Provide(Cid, oneshot::Sender<Result<(), NodeError>>),
    Fetch(
        Cid,
        FetchTarget,
        oneshot::Sender<Result<FetchReport, NodeError>>,
    ),
    Banned(oneshot::Sender<Vec<PeerId>>),
    Watch(
        ChannelId,
        Vec<String>,
        oneshot::Sender<Result<(), NodeError>>,
    ),
    Unwatch(ChannelId, oneshot::Sender<()>),
    LiveView(ChannelId, oneshot::Sender<Option<LiveView>>),
    Watching(oneshot::Sender<Vec<ChannelId>>),
    Publish(
        ChannelId,
        u16,
        Vec<u8>,
        oneshot::Sender<Result<(), NodeError>>,
    ),
    PutRecord(ChannelId, Vec<u8>, oneshot::Sender<Result<(), NodeError>>),
    GossipScore(PeerId, oneshot::Sender<Option<f64>>),
    Limits(oneshot::Sender<Limits>),
    Traffic(oneshot::Sender<Traffic>),
    DhtStat(oneshot::Sender<crate::dht_store::DhtStat>),
    WalletAddress(oneshot::Sender<alloy_primitives::Address>),
    Accounts(oneshot::Sender<Vec<(PeerId, shoal_protocol::ledger::Account)>>),
    SetLimits(Limits, oneshot::Sender<()>),
    /// Pause (`true`) or resume (`false`).
    Pause(bool, oneshot::Sender<()>),
}

/// What the loop's tasks report back.
enum Done {
    /// A segment's missing shards from an origin, verified; stored if `Ok`.
    Range {
        channel: ChannelId,
        request: HttpRequest,
        result: Result<Vec<(Cid, Vec<u8>)>, String>,
    },
    Checked {
        channel: ChannelId,
        rendition: u16,
        sequence: u64,
        ok: bool,
    },
    Playlists {
        channel: ChannelId,
        result: Result<OriginPlaylists, String>,
    },
    Proxied {
        channel: ChannelId,
        segment: ProxySegment,
        stored: Option<ProxiedSegment>,
    },
    Receipts {
        peer: PeerId,
        epoch: u64,
        result: Result<ReceiptResponse, String>,
    },
    ReceiptsKept(Vec<SignedReceipt>),
    /// A finished fetch, pinned if its target asked for it.
    Pinned {
        id: FetchId,
        result: Result<FetchReport, NodeError>,
    },
}

/// A DHT query under way, and what it is for.
enum Query {
    Record(ChannelId),
    Providers(ProviderKey),
    /// A provider record the user asked for (reply when it is out).
    Provide(Option<oneshot::Sender<Result<(), NodeError>>>),
    PutRecord,
}

/// The channels through which the loop hears from everything else.
struct Inbox {
    commands: mpsc::Receiver<Command>,
    /// A handle asks the node to stop; answered once it has.
    stop: mpsc::Receiver<oneshot::Sender<()>>,
    stream_events: mpsc::Receiver<StreamEvent>,
    stored: mpsc::UnboundedReceiver<Vec<Cid>>,
    written: mpsc::UnboundedReceiver<crate::store_io::Stored<PeerId>>,
    receipt_requests: mpsc::Receiver<ReceiptAsked>,
    done: mpsc::UnboundedReceiver<Done>,
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    machine: NodeMachine<PeerId, NodeStore>,
    config: NodeConfig,
    store: Arc<Blockstore>,
    inbox: Inbox,
    done_tx: mpsc::UnboundedSender<Done>,
    stream_events_tx: mpsc::Sender<StreamEvent>,
    /// Writes for the writer task; `None` once stopping.
    writes: Option<mpsc::UnboundedSender<Write<PeerId>>>,
    control: crate::streams::Control,
    writers: HashMap<PeerId, mpsc::UnboundedSender<Outgoing>>,
    /// The address each connected peer reached us from (its last
    /// connection's): what the addresses it gives for itself are judged by.
    peer_ips: HashMap<PeerId, std::net::IpAddr>,
    pending_dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, NodeError>>>,
    queries: HashMap<kad::QueryId, Query>,
    fetches: HashMap<FetchId, oneshot::Sender<Result<FetchReport, NodeError>>>,
    #[cfg(feature = "http-origin")]
    http: crate::origin_client::Origins,
    upload: Arc<UploadLimiter>,
    events: tokio::sync::broadcast::Sender<NodeEvent>,
    /// The loop's network tasks (acceptors, Bitswap writers, HTTP requests,
    /// receipt exchanges): aborted when it stops.
    tasks: JoinSet<()>,
    /// Its store work (the writer, checks, releases, pins, receipts):
    /// waited for when it stops.
    jobs: JoinSet<()>,
    /// Held by every blocking job the node's tasks run (they cannot be
    /// aborted): the loop waits for it to be its own again before it lets
    /// the store go.
    blocking: Arc<()>,
    /// What the last publish's gossip reported.
    publish_error: Option<NodeError>,
    /// Paused: no connection, nothing served. The peers held when the
    /// node paused, dialled again when it resumes.
    paused: Option<Vec<PeerId>>,
    /// Every established connection: its peer, its remote address, and
    /// whether this node dialled it.
    connections: HashMap<ConnectionId, (PeerId, Multiaddr, bool)>,
    /// Relays met and reservations held (behind NAT).
    relaying: crate::relaying::Relaying,
}

/// Queued commands from the handles: a caller waits for room beyond this.
const COMMANDS_QUEUED: usize = 256;

/// Decoded Bitswap messages queued from the readers: a reader waits for
/// room beyond this, and so stops reading its peer.
const STREAM_EVENTS_QUEUED: usize = 1024;

/// Receipt requests queued from peers.
const RECEIPT_REQUESTS_QUEUED: usize = 256;

/// Events kept for a slow listener of `Node::events` before the oldest
/// are dropped (it then hears how many it missed).
const EVENTS_KEPT: usize = 256;

/// Where a node's handles reach its event loop.
pub(crate) struct Handles {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) stop: mpsc::Sender<oneshot::Sender<()>>,
    pub(crate) events: tokio::sync::broadcast::Sender<NodeEvent>,
}

/// Starts the event loop of a node whose swarm is built: the Bitswap and
/// receipt acceptors, the store's writer, the machine. Returns where the
/// handles send commands and where events go out.
pub(crate) fn spawn(
    mut swarm: Swarm<Behaviour>,
    config: NodeConfig,
    peer_id: PeerId,
    store: Arc<Blockstore>,
) -> Result<Handles, NodeError> {
    let upload = Arc::new(UploadLimiter::default());
    upload.set_rate(config.upload_bytes_per_sec);
    let mut tasks = tokio::task::JoinSet::new();
    let control = swarm.behaviour().streams.control();
    let mut accept = |protocol: &libp2p::StreamProtocol| {
        swarm
            .behaviour_mut()
            .streams
            .accept(protocol)
            .ok_or_else(|| {
                NodeError::transport("a stream protocol", format!("{protocol} is not offered"))
            })
    };
    let bitswap_incoming = bitswap::protocols()
        .iter()
        .map(&mut accept)
        .collect::<Result<Vec<_>, _>>()?;
    let receipts_incoming = accept(&crate::rewards::RECEIPT_PROTOCOL)?;
    let (stream_events_tx, stream_events) = mpsc::channel(STREAM_EVENTS_QUEUED);
    bitswap::spawn_acceptors(bitswap_incoming, stream_events_tx.clone(), &mut tasks);
    let (receipts_tx, receipt_requests) = mpsc::channel(RECEIPT_REQUESTS_QUEUED);
    crate::rewards::spawn_acceptor(receipts_incoming, receipts_tx, &mut tasks);

    let (commands_tx, commands) = mpsc::channel(COMMANDS_QUEUED);
    let (stop_tx, stop) = mpsc::channel(1);
    // Every block that enters the store, by whatever path, may be one a
    // peer is waiting for.
    // Unbounded: a notice is a few CIDs, the loop drains them at once,
    // and dropping one would leave a peer waiting for ever.
    let (stored_tx, stored) = mpsc::unbounded_channel::<Vec<Cid>>();
    store.set_listener(Box::new(move |cids| {
        let _ = stored_tx.send(cids.to_vec());
    }));
    let (writes, writes_rx) = mpsc::unbounded_channel();
    let (written_tx, written) = mpsc::unbounded_channel();
    let mut jobs = tokio::task::JoinSet::new();
    jobs.spawn(crate::store_io::run_writer(
        store.clone(),
        writes_rx,
        written_tx,
    ));
    let (done_tx, done) = mpsc::unbounded_channel();
    let (events, _) = tokio::sync::broadcast::channel(EVENTS_KEPT);

    let wallet = config
        .rewards
        .wallet
        .clone()
        .unwrap_or_else(crate::wallet::generate);
    let machine = NodeMachine::new(
        config.machine(),
        Identity {
            peer: peer_id,
            wallet,
            deployment: config.rewards.deployment,
            publisher_of: |bytes| PeerId::from_bytes(bytes).ok(),
            rotation: rotation_of(&peer_id),
        },
        crate::store_io::NodeStore(store.clone()),
        WallClock {
            at: std::time::Instant::now(),
            unix_ms: config.start_unix_ms.unwrap_or_else(crate::live::unix_ms),
        },
    );
    #[cfg(feature = "http-origin")]
    let http =
        crate::origin_client::Origins::new(config.live.origin_timeout, config.private_origins)
            .map_err(|e| NodeError::transport("the HTTP client", e))?;
    let event_loop = EventLoop {
        swarm,
        machine,
        config,
        store: store.clone(),
        inbox: Inbox {
            commands,
            stop,
            stream_events,
            stored,
            written,
            receipt_requests,
            done,
        },
        done_tx,
        stream_events_tx,
        writes: Some(writes),
        control,
        writers: HashMap::new(),
        peer_ips: HashMap::new(),
        pending_dials: HashMap::new(),
        queries: HashMap::new(),
        fetches: HashMap::new(),
        #[cfg(feature = "http-origin")]
        http,
        upload,
        events: events.clone(),
        tasks,
        jobs,
        blocking: Arc::new(()),
        publish_error: None,
        paused: None,
        connections: HashMap::new(),
        relaying: Default::default(),
    };
    tokio::spawn(event_loop.run());
    Ok(Handles {
        commands: commands_tx,
        stop: stop_tx,
        events,
    })
}

/// A rotation for this node's shard order: viewers start at different
/// shards of each live segment.
fn rotation_of(peer: &PeerId) -> usize {
    let digest = shoal_protocol::block::sha256(&peer.to_bytes());
    usize::from(digest[0]) | (usize::from(digest[1]) << 8)
}

impl EventLoop {
    async fn run(mut self) {
        let stopped_by = loop {
            let timeout = self.machine.poll_timeout();
            let sleep = async move {
                match timeout {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(reply) = self.inbox.stop.recv() => break Some(reply),
                command = self.inbox.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    // Every handle is gone: nobody can ask anything more.
                    None => break None,
                },
                Some(event) = self.inbox.stream_events.recv() => self.on_stream_event(event),
                Some(cids) = self.inbox.stored.recv() => {
                    self.machine.handle(Input::Stored(cids), Instant::now());
                }
                Some((from, blocks)) = self.inbox.written.recv() => {
                    self.machine.handle(Input::Received { from, blocks }, Instant::now());
                }
                Some(asked) = self.inbox.receipt_requests.recv() => {
                    let answer = self.machine.handle_receipt_request(&asked.peer, &asked.request, Instant::now());
                    let _ = asked.reply.send(answer);
                }
                Some(done) = self.inbox.done.recv() => self.on_done(done),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                Some(_) = self.jobs.join_next(), if !self.jobs.is_empty() => {}
                () = sleep => {
                    self.machine.handle(Input::Timeout, Instant::now());
                }
            }
            self.perform();
        };
        self.stop().await;
        // The swarm, the machine and the loop's hold on the store go before
        // the caller hears that the node has stopped.
        drop(self);
        if let Some(reply) = stopped_by {
            let _ = reply.send(());
        }
    }

    /// Stops: fetches and watches end, the network tasks are aborted, the
    /// writer's queue closes and the store work under way is waited for,
    /// so that nothing of the loop holds the store when it returns.
    async fn stop(&mut self) {
        self.machine.stop(Instant::now());
        self.perform();
        for (_, reply) in self.fetches.drain() {
            let _ = reply.send(Err(NodeError::ShutDown));
        }
        self.writers.clear();
        self.writes = None;
        self.tasks.shutdown().await;
        while self.jobs.join_next().await.is_some() {}
        // Blocking jobs cannot be aborted; they are short (a block read,
        // a transaction).
        for _ in 0..1000 {
            if Arc::strong_count(&self.blocking) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::debug!("node event loop stopped");
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Dial(addr, reply) => {
                let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_dials.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NodeError::Dial {
                            addr: addr.to_string(),
                            source: Box::new(e),
                        }));
                    }
                }
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Connections(reply) => {
                let mut all: Vec<(PeerId, Multiaddr)> = self
                    .connections
                    .values()
                    .map(|(p, a, _)| (*p, a.clone()))
                    .collect();
                all.sort();
                let _ = reply.send(all);
            }
            Command::Provide(cid, reply) => self.provide(cid.to_bytes(), Some(reply)),
            Command::Fetch(root, target, reply) => {
                let id = self.machine.fetch(root, target, now);
                self.fetches.insert(id, reply);
            }
            Command::Banned(reply) => {
                let _ = reply.send(self.machine.banned().copied().collect());
            }
            Command::Watch(channel, origins, reply) => {
                #[cfg(feature = "http-origin")]
                self.http.vouch(&origins);
                let result = self.machine.watch(channel, origins, now);
                let _ = reply.send(result.map_err(NodeError::Watch));
            }
            Command::Unwatch(channel, reply) => {
                self.machine.unwatch(&channel, now);
                let _ = reply.send(());
            }
            Command::LiveView(channel, reply) => {
                let _ = reply.send(self.machine.live_view(&channel, now));
            }
            Command::Watching(reply) => {
                let _ = reply.send(self.machine.watching().copied().collect());
            }
            Command::Publish(channel, rendition, data, reply) => {
                let result = self
                    .machine
                    .publish(channel, rendition, data, now)
                    .map_err(NodeError::Channel);
                if result.is_err() {
                    let _ = reply.send(result);
                    return;
                }
                // The gossip goes out now, so that its error is the reply's.
                self.perform();
                let _ = reply.send(self.publish_error.take().map_or(Ok(()), Err));
            }
            Command::PutRecord(channel, data, reply) => {
                let _ = reply.send(self.put_channel_record(channel, data));
            }
            Command::WalletAddress(reply) => {
                let _ = reply.send(self.machine.wallet_address());
            }
            Command::Accounts(reply) => {
                let _ = reply.send(self.machine.accounts());
            }
            Command::Traffic(reply) => {
                let _ = reply.send(self.machine.traffic());
            }
            Command::DhtStat(reply) => {
                let _ = reply.send(self.swarm.behaviour_mut().kad.store_mut().stat());
            }
            Command::Limits(reply) => {
                let _ = reply.send(self.limits());
            }
            Command::SetLimits(limits, reply) => {
                self.set_limits(limits, now);
                let _ = reply.send(());
            }
            Command::Pause(pause, reply) => {
                if pause {
                    self.pause();
                } else {
                    self.resume();
                }
                let _ = reply.send(());
            }
            Command::GossipScore(peer, reply) => {
                let _ = reply.send(self.swarm.behaviour().gossipsub.peer_score(&peer));
            }
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            upload_bytes_per_sec: self.config.upload_bytes_per_sec,
            no_upload: self.config.no_upload,
            max_peers: self.config.max_connections,
            cache_segments: self.machine.config().live.window,
        }
    }

    fn set_limits(&mut self, limits: Limits, now: Instant) {
        tracing::info!(?limits, "limits changed");
        self.config.upload_bytes_per_sec = limits.upload_bytes_per_sec;
        self.upload.set_rate(limits.upload_bytes_per_sec);
        self.config.no_upload = limits.no_upload;
        self.machine
            .set_no_upload(limits.no_upload || self.paused.is_some());
        self.config.max_connections = limits.max_peers;
        self.swarm.behaviour_mut().limits.limits_mut().clone_from(
            &crate::ip_limit::connection_limits(
                limits.max_peers,
                self.config.max_connections_per_peer,
            ),
        );
        self.machine.set_window(limits.cache_segments, now);
    }

    /// Pauses (an app gone to the background): serves nothing, closes
    /// every connection and refuses new ones, both ways. Watches and
    /// fetches stay, without peers; a session nobody looks at ends by
    /// itself.
    fn pause(&mut self) {
        if self.paused.is_some() {
            return;
        }
        let held: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        tracing::info!(peers = held.len(), "paused");
        self.machine.set_no_upload(true);
        self.swarm.behaviour_mut().per_ip.set_paused(true);
        for peer in &held {
            let _ = self.swarm.disconnect_peer_id(*peer);
        }
        self.paused = Some(held);
    }

    /// Resumes: serves again (unless the limits say not to), and dials the
    /// bootstrap peers and the peers held when paused, so that the DHT
    /// and the channels' meshes are joined again at once.
    fn resume(&mut self) {
        let Some(held) = self.paused.take() else {
            return;
        };
        tracing::info!(peers = held.len(), "resumed");
        self.swarm.behaviour_mut().per_ip.set_paused(false);
        self.machine.set_no_upload(self.config.no_upload);
        for addr in self.config.bootstrap.clone() {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "cannot dial a bootstrap peer");
            }
        }
        for peer in held.into_iter().take(self.config.max_dials) {
            if let Err(e) = self.swarm.dial(peer) {
                tracing::debug!(%peer, error = %e, "cannot dial a peer held before the pause");
            }
        }
        let _ = self.swarm.behaviour_mut().kad.bootstrap();
    }

    fn provide(&mut self, key: Vec<u8>, reply: Option<oneshot::Sender<Result<(), NodeError>>>) {
        let key = kad::RecordKey::new(&key);
        match self.swarm.behaviour_mut().kad.start_providing(key) {
            Ok(id) => {
                self.queries.insert(id, Query::Provide(reply));
            }
            Err(e) => match reply {
                Some(reply) => {
                    let _ = reply.send(Err(NodeError::Provide(e)));
                }
                None => tracing::debug!(error = %e, "cannot provide"),
            },
        }
    }

    /// Stores a signed channel record here and provides the channel;
    /// answers once it is stored here, while the put to the DHT goes on (a
    /// broadcaster does not wait for remote peers between segments, and a
    /// viewer that hears an announcement finds the record here at once).
    fn put_channel_record(&mut self, channel: ChannelId, bytes: Vec<u8>) -> Result<(), NodeError> {
        ChannelRecord::open(&channel, &bytes).map_err(NodeError::Channel)?;
        let key = kad::RecordKey::new(&channel.record_key());
        let record = kad::Record::new(key.clone(), bytes);
        let kad = &mut self.swarm.behaviour_mut().kad;
        if kad.store_mut().providers(&key).is_empty() {
            let _ = kad.start_providing(key);
        }
        let q = kad
            .put_record(record, kad::Quorum::One)
            .map_err(NodeError::Provide)?;
        self.queries.insert(q, Query::PutRecord);
        Ok(())
    }

    // ---- what the machine asks ---------------------------------------

    /// Carries out everything the machine asks, until it asks nothing.
    fn perform(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::Send { peer, message } => self.send(peer, message),
                Action::Store { from, blocks } => self.write(Write::Received { from, blocks }),
                Action::StoreManifest { cid, bytes } => self.write(Write::Manifest { cid, bytes }),
                Action::Ban { peer, reason } => {
                    tracing::warn!(%peer, %reason, "peer misbehaved; banned");
                    self.swarm.behaviour_mut().blocked.block_peer(peer);
                    self.writers.remove(&peer);
                }
                Action::Unban { peer } => {
                    self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                }
                Action::Subscribe { topic } => self.subscribe(topic),
                Action::Unsubscribe { topic } => {
                    let topic = gossipsub::IdentTopic::new(topic);
                    self.swarm.behaviour_mut().gossipsub.unsubscribe(&topic);
                }
                Action::Gossip { topic, data } => {
                    let topic = gossipsub::IdentTopic::new(topic);
                    match self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
                        // Nobody watches yet: late joiners find the segment
                        // through the channel record.
                        Ok(_)
                        | Err(gossipsub::PublishError::NoPeersSubscribedToTopic)
                        | Err(gossipsub::PublishError::Duplicate) => {}
                        Err(e) => self.publish_error = Some(NodeError::Gossip(e)),
                    }
                }
                Action::Provide { key } => self.provide(key, None),
                Action::StopProviding { key } => {
                    let key = kad::RecordKey::new(&key);
                    self.swarm.behaviour_mut().kad.stop_providing(&key);
                }
                Action::FindRecord { channel } => {
                    let key = kad::RecordKey::new(&channel.record_key());
                    let q = self.swarm.behaviour_mut().kad.get_record(key);
                    self.queries.insert(q, Query::Record(channel));
                }
                Action::FindProviders { key } => {
                    let k = kad::RecordKey::new(&key.to_bytes());
                    let q = self.swarm.behaviour_mut().kad.get_providers(k);
                    self.queries.insert(q, Query::Providers(key));
                }
                Action::Dial { peer } => {
                    if let Err(e) = self.swarm.dial(peer) {
                        tracing::debug!(%peer, error = %e, "cannot dial a provider");
                    }
                }
                Action::FetchRange {
                    channel,
                    request,
                    urls,
                } => self.fetch_range(channel, request, urls),
                Action::ReadPlaylists { channel, sources } => self.read_playlists(channel, sources),
                Action::FetchSegment {
                    channel,
                    segment,
                    url,
                } => self.fetch_segment(channel, segment, url),
                Action::Check {
                    channel,
                    rendition,
                    sequence,
                    manifest,
                    from_http,
                } => {
                    let store = self.store.clone();
                    let tx = self.done_tx.clone();
                    let token = self.blocking.clone();
                    self.jobs.spawn_blocking(move || {
                        let _token = token;
                        let ok =
                            crate::store_io::check_segment(&store, &manifest, sequence, from_http);
                        let _ = tx.send(Done::Checked {
                            channel,
                            rendition,
                            sequence,
                            ok,
                        });
                    });
                }
                Action::Release { blocks } => self.write(Write::Release(blocks)),
                Action::AskReceipts { peer, request } => {
                    let control = self.control.clone();
                    let tx = self.done_tx.clone();
                    self.tasks.spawn(async move {
                        let epoch = request.epoch;
                        let result = crate::rewards::ask(control, peer, request).await;
                        let _ = tx.send(Done::Receipts {
                            peer,
                            epoch,
                            result,
                        });
                    });
                }
                Action::KeepReceipts(receipts) => {
                    let store = self.store.clone();
                    let tx = self.done_tx.clone();
                    let token = self.blocking.clone();
                    self.jobs.spawn_blocking(move || {
                        let _token = token;
                        for r in &receipts {
                            if let Err(e) = store.put_receipt(&r.key(), &r.to_bytes()) {
                                tracing::error!(error = %e, "cannot keep a receipt");
                            }
                        }
                        let _ = tx.send(Done::ReceiptsKept(receipts));
                    });
                }
                Action::FetchDone { id, target, result } => self.fetch_done(id, target, result),
                Action::Event(event) => {
                    if let NodeEvent::Live {
                        channel,
                        event: LiveEvent::SegmentMissed(m),
                    } = &event
                    {
                        tracing::info!(
                            %channel,
                            rendition = m.rendition,
                            sequence = m.sequence,
                            age_ms = m.age.as_millis() as u64,
                            progress = %m.progress,
                            "segment {}: {}",
                            if m.joining { "skipped while joining" } else { "missed" },
                            m.reason
                        );
                    }
                    // Nobody listening is fine.
                    let _ = self.events.send(event);
                }
            }
        }
    }

    fn write(&mut self, write: Write<PeerId>) {
        if let Some(writes) = &self.writes {
            let _ = writes.send(write);
        }
    }

    /// Hands `message` to the peer's writer. If the writer has stopped,
    /// the machine gets the queue space back at once.
    fn send(&mut self, peer: PeerId, message: Outgoing) {
        let writer = self.writers.entry(peer).or_insert_with(|| {
            bitswap::spawn_writer(
                peer,
                self.control.clone(),
                self.store.clone(),
                self.upload.clone(),
                self.stream_events_tx.clone(),
                self.blocking.clone(),
                &mut self.tasks,
            )
        });
        let (bytes, presences) = (message.block_bytes, message.queued_presences);
        if writer.send(message).is_err() {
            tracing::debug!(%peer, "bitswap writer gone; message dropped");
            self.writers.remove(&peer);
            self.machine.handle(
                Input::Sent {
                    to: peer,
                    bytes,
                    presences,
                },
                Instant::now(),
            );
        }
    }

    fn subscribe(&mut self, topic: String) {
        let t = gossipsub::IdentTopic::new(topic.clone());
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        if let Err(e) = gossipsub.set_topic_params(t.clone(), crate::live::topic_score_params()) {
            tracing::warn!(%topic, error = e, "cannot score a channel's topic");
        }
        if let Err(e) = gossipsub.subscribe(&t) {
            tracing::warn!(%topic, error = %e, "cannot subscribe to a channel's topic");
            return;
        }
        // Peers already subscribed are candidates from the start.
        let hash = t.hash();
        let known: Vec<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&hash))
            .map(|(p, _)| *p)
            .collect();
        let now = Instant::now();
        for peer in known {
            let topic = topic.clone();
            self.machine.handle(Input::Subscribed { peer, topic }, now);
        }
    }

    #[cfg(feature = "http-origin")]
    fn fetch_range(&mut self, channel: ChannelId, request: HttpRequest, urls: Vec<String>) {
        let client = self.http.clone();
        let store = self.store.clone();
        let tx = self.done_tx.clone();
        let token = self.blocking.clone();
        self.tasks.spawn(async move {
            let result =
                crate::origin_client::fetch_and_store_range(&client, store, &urls, &request, token)
                    .await;
            let _ = tx.send(Done::Range {
                channel,
                request,
                result,
            });
        });
    }

    #[cfg(not(feature = "http-origin"))]
    fn fetch_range(&mut self, channel: ChannelId, request: HttpRequest, _urls: Vec<String>) {
        let _ = self.done_tx.send(Done::Range {
            channel,
            request,
            result: Err("this build has no HTTP origin client".into()),
        });
    }

    #[cfg(feature = "http-origin")]
    fn read_playlists(
        &mut self,
        channel: ChannelId,
        sources: shoal_protocol::live::PlaylistSources,
    ) {
        let client = self.http.clone();
        let tx = self.done_tx.clone();
        self.tasks.spawn(async move {
            let result = crate::origin_client::read_origin(&client, sources).await;
            let _ = tx.send(Done::Playlists { channel, result });
        });
    }

    #[cfg(not(feature = "http-origin"))]
    fn read_playlists(
        &mut self,
        channel: ChannelId,
        _sources: shoal_protocol::live::PlaylistSources,
    ) {
        let _ = self.done_tx.send(Done::Playlists {
            channel,
            result: Err("this build has no HTTP origin client".into()),
        });
    }

    #[cfg(feature = "http-origin")]
    fn fetch_segment(&mut self, channel: ChannelId, segment: ProxySegment, url: String) {
        let client = self.http.clone();
        let store = self.store.clone();
        let tx = self.done_tx.clone();
        let token = self.blocking.clone();
        self.tasks.spawn(async move {
            let stored =
                crate::origin_client::proxy_segment(&client, store, &url, &segment, token).await;
            let _ = tx.send(Done::Proxied {
                channel,
                segment,
                stored,
            });
        });
    }

    #[cfg(not(feature = "http-origin"))]
    fn fetch_segment(&mut self, channel: ChannelId, segment: ProxySegment, _url: String) {
        let _ = self.done_tx.send(Done::Proxied {
            channel,
            segment,
            stored: None,
        });
    }

    /// A fetch ended: what is fetched for keeps is pinned (durably), and a
    /// stream provided, before the caller hears.
    fn fetch_done(
        &mut self,
        id: FetchId,
        target: FetchTarget,
        result: Result<FetchReport, shoal_protocol::fetch::FetchError>,
    ) {
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                if let Some(reply) = self.fetches.remove(&id) {
                    let _ = reply.send(Err(NodeError::Fetch(e)));
                }
                return;
            }
        };
        let pin = match target {
            FetchTarget::Stream | FetchTarget::Block { pin: true } => true,
            FetchTarget::Block { pin: false } | FetchTarget::Segments(_) => false,
        };
        if !pin {
            if let Some(reply) = self.fetches.remove(&id) {
                let _ = reply.send(Ok(report));
            }
            return;
        }
        let store = self.store.clone();
        let tx = self.done_tx.clone();
        let token = self.blocking.clone();
        self.jobs.spawn_blocking(move || {
            let _token = token;
            let result = store
                .pin(&report.root)
                .map(|()| report)
                .map_err(NodeError::from);
            let _ = tx.send(Done::Pinned { id, result });
        });
    }

    // ---- what the tasks report ---------------------------------------

    fn on_done(&mut self, done: Done) {
        let now = Instant::now();
        match done {
            Done::Range {
                channel,
                request,
                result,
            } => {
                let input = Input::Range {
                    channel,
                    request,
                    result,
                };
                self.machine.handle(input, now);
            }
            Done::Checked {
                channel,
                rendition,
                sequence,
                ok,
            } => {
                if !ok {
                    tracing::warn!(%channel, rendition, sequence, "segment did not rebuild; dropped");
                }
                let input = Input::Checked {
                    channel,
                    rendition,
                    sequence,
                    ok,
                };
                self.machine.handle(input, now);
            }
            Done::Playlists { channel, result } => {
                if let Err(e) = &result {
                    tracing::warn!(%channel, error = %e, "cannot read the origin's playlist");
                }
                self.machine
                    .handle(Input::Playlists { channel, result }, now);
            }
            Done::Proxied {
                channel,
                segment,
                stored,
            } => {
                let input = Input::Proxied {
                    channel,
                    segment,
                    stored,
                };
                self.machine.handle(input, now);
            }
            Done::Receipts {
                peer,
                epoch,
                result,
            } => {
                if let Err(e) = &result {
                    tracing::debug!(%peer, error = %e, "no receipts");
                }
                let held = self.machine.store().clone();
                match self
                    .machine
                    .handle_receipts(&peer, epoch, result, &held, now)
                {
                    Ok(credited) => tracing::debug!(%peer, credited, "receipts"),
                    Err(e) => tracing::error!(error = %e, "cannot read receipts"),
                }
            }
            Done::ReceiptsKept(receipts) => self.machine.handle_receipts_kept(&receipts),
            Done::Pinned { id, result } => {
                if let Ok(report) = &result {
                    self.provide(report.root.to_bytes(), None);
                }
                if let Some(reply) = self.fetches.remove(&id) {
                    let _ = reply.send(result);
                }
            }
        }
    }

    fn on_stream_event(&mut self, event: StreamEvent) {
        let now = Instant::now();
        let input = match event {
            StreamEvent::Message(from, message) => Input::Bitswap { from, message },
            StreamEvent::Sent {
                peer,
                bytes,
                presences,
            } => Input::Sent {
                to: peer,
                bytes,
                presences,
            },
            StreamEvent::Slow(peer) => Input::WriteSlow { to: peer },
            StreamEvent::Stalled(peer) => {
                // A peer that takes nothing holds its queue and our
                // stream; the machine hears it leave with its connections.
                self.writers.remove(&peer);
                let _ = self.swarm.disconnect_peer_id(peer);
                return;
            }
            StreamEvent::Malformed(from, error) => Input::Malformed {
                from,
                error: error.to_string(),
            },
        };
        self.machine.handle(input, now);
    }

    // ---- what the swarm reports --------------------------------------

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.relaying.listening(&address);
                // A relay tells the peers it serves where it is: libp2p's
                // relay serves only once it has an address to give them.
                if self.config.relay
                    && let Some(ip) = crate::ip_limit::direct_ip(&address)
                    && !ip.to_canonical().is_loopback()
                {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ListenerClosed { listener_id, .. } => self.relaying.closed(listener_id),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.on_connection_established(
                peer_id,
                connection_id,
                &endpoint,
                num_established.get(),
            ),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.connections.remove(&connection_id);
                if num_established == 0 {
                    self.writers.remove(&peer_id);
                    self.peer_ips.remove(&peer_id);
                    self.relaying.disconnected(&peer_id);
                    self.machine
                        .handle(Input::Disconnected(peer_id), Instant::now());
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(NodeError::Dial {
                        addr: String::new(),
                        source: Box::new(error),
                    }));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.on_identify(event),
            SwarmEvent::Behaviour(BehaviourEvent::Relay(
                relay::client::Event::ReservationReqAccepted {
                    relay_peer_id,
                    renewal,
                    ..
                },
            )) => {
                tracing::info!(relay = %relay_peer_id, "reachable through a relay");
                // Provider records carry the addresses this node had when
                // it sent them; behind NAT none of those could be dialled.
                // Announce again with the relayed one.
                if !renewal {
                    self.provide_again();
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => match result {
                Ok(_) => {
                    tracing::info!(peer = %remote_peer_id, "hole punched: a direct connection")
                }
                Err(e) => {
                    tracing::info!(peer = %remote_peer_id, error = %e, "hole punching failed; staying relayed")
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(event)) => self.on_mdns(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossip(event),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::InboundRequest { request })) => {
                self.on_kad_request(request)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                ..
            })) => self.on_kad_query(id, result, step.last),
            _ => {}
        }
    }

    fn on_connection_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &libp2p::core::ConnectedPoint,
        established: u32,
    ) {
        if let Some(reply) = self.pending_dials.remove(&connection) {
            let _ = reply.send(Ok(peer));
        }
        if let Some(ip) = crate::ip_limit::direct_ip(endpoint.get_remote_address()) {
            self.peer_ips.insert(peer, ip);
        }
        self.connections.insert(
            connection,
            (
                peer,
                endpoint.get_remote_address().clone(),
                endpoint.is_dialer(),
            ),
        );
        if endpoint.is_dialer() {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, endpoint.get_remote_address().clone());
        }
        if established == 1 {
            self.machine.handle(Input::Connected(peer), Instant::now());
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        if let identify::Event::Received { peer_id, info, .. } = event {
            let from = self.peer_ips.get(&peer_id).copied();
            // The address of a connection this node dialled directly: a
            // relay is reserved on where it was reached.
            let dialled = self
                .connections
                .values()
                .find(|(p, a, dialer)| {
                    *p == peer_id && *dialer && crate::ip_limit::direct_ip(a).is_some()
                })
                .map(|(_, a, _)| a.clone());
            self.relaying.identified(
                peer_id,
                dialled.as_ref(),
                &info.observed_addr,
                &info.protocols,
            );
            self.reserve_relays();
            for addr in info.listen_addrs {
                if crate::ip_limit::in_scope(&addr, from) {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                } else {
                    tracing::debug!(%peer_id, %addr, "refused an address out of the peer's scope");
                }
            }
        }
    }

    /// Sends this node's provider records again (with its addresses now).
    fn provide_again(&mut self) {
        let keys: Vec<kad::RecordKey> = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .provided()
            .map(|r| r.key.clone())
            .collect();
        for key in keys {
            if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
                tracing::debug!(error = %e, "cannot provide again");
            }
        }
    }

    /// Behind NAT: asks the relays met for a slot (see `relaying`).
    fn reserve_relays(&mut self) {
        if self.paused.is_some() {
            return;
        }
        for (relay, circuit) in self.relaying.wanted() {
            match self.swarm.listen_on(circuit.clone()) {
                Ok(listener) => {
                    tracing::info!(%relay, "behind NAT: asking a relay for a slot");
                    self.relaying.reserving(listener, relay);
                }
                Err(e) => tracing::debug!(%circuit, error = %e, "cannot listen through a relay"),
            }
        }
    }

    fn on_mdns(&mut self, event: mdns::Event) {
        if let mdns::Event::Discovered(found) = event {
            for (peer, addr) in found {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                if !self.swarm.is_connected(&peer) {
                    let _ = self.swarm.dial(peer);
                }
            }
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let now = Instant::now();
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let topic = message.topic.into_string();
                let input = Input::Gossip {
                    topic: topic.clone(),
                    data: message.data,
                    author: message.source,
                };
                let judged = self.machine.handle(input, now);
                let acceptance = match judged {
                    Judgement::Accept => gossipsub::MessageAcceptance::Accept,
                    Judgement::Ignore => gossipsub::MessageAcceptance::Ignore,
                    Judgement::Reject(why) => {
                        tracing::warn!(
                            peer = %propagation_source,
                            %topic,
                            %why,
                            "refused a live announcement; the sender loses gossip score"
                        );
                        gossipsub::MessageAcceptance::Reject
                    }
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                let input = Input::Subscribed {
                    peer: peer_id,
                    topic: topic.into_string(),
                };
                self.machine.handle(input, now);
            }
            _ => {}
        }
    }

    /// A peer asks this node to keep a record: only valid channel records
    /// are kept, and never one older than what is held.
    fn on_kad_request(&mut self, request: kad::InboundRequest) {
        let store = self.swarm.behaviour_mut().kad.store_mut();
        match request {
            kad::InboundRequest::PutRecord {
                source,
                record: Some(mut record),
                ..
            } => match open_dht_record(record.key.as_ref(), &record.value) {
                Ok((channel, fresh)) => {
                    let held = store
                        .get(&record.key)
                        .and_then(|r| ChannelRecord::open(&channel, &r.value).ok());
                    if held.is_some_and(|h| h.sequence >= fresh.sequence) {
                        return;
                    }
                    // Counted against the peer that sent it, whatever it
                    // claims: the store's quotas are per sender.
                    record.publisher = Some(source);
                    if let Err(e) = store.put(record) {
                        tracing::debug!(%source, error = %e, "cannot keep a channel record");
                    }
                }
                Err(why) => tracing::debug!(%source, %why, "refused a DHT record"),
            },
            kad::InboundRequest::AddProvider {
                record: Some(mut record),
            } => {
                // Its provider is its sender (Kademlia checks).
                let from = self.peer_ips.get(&record.provider).copied();
                record
                    .addresses
                    .retain(|a| crate::ip_limit::in_scope(a, from));
                if let Err(e) = store.add_provider(record) {
                    tracing::debug!(error = %e, "cannot keep a provider record");
                }
            }
            _ => {}
        }
    }

    fn on_kad_query(&mut self, id: kad::QueryId, result: kad::QueryResult, last: bool) {
        let now = Instant::now();
        let query = if last {
            self.queries.remove(&id)
        } else {
            match self.queries.get(&id) {
                Some(Query::Record(c)) => Some(Query::Record(*c)),
                Some(Query::Providers(k)) => Some(Query::Providers(*k)),
                _ => None,
            }
        };
        match (query, result) {
            (
                Some(Query::Record(channel)),
                kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))),
            ) => {
                let bytes = found.record.value;
                self.machine.handle(Input::Record { channel, bytes }, now);
            }
            (Some(Query::Providers(key)), result) => {
                if let kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                    providers,
                    ..
                })) = result
                {
                    let providers: Vec<PeerId> = providers.into_iter().collect();
                    self.machine
                        .handle(Input::Providers { key, providers }, now);
                }
                if last {
                    self.machine.handle(Input::ProvidersDone(key), now);
                }
            }
            (Some(Query::Provide(reply)), kad::QueryResult::StartProviding(result)) => {
                // The record is stored locally either way; a timeout only
                // means fewer remote peers hold it yet.
                if let Err(e) = &result {
                    tracing::debug!(error = %e, "provider record reached fewer peers than wanted");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
            }
            (Some(Query::PutRecord), kad::QueryResult::PutRecord(Err(e))) => {
                tracing::debug!(error = %e, "channel record reached fewer peers than wanted");
            }
            _ => {}
        }
    }
}
