//! The one task that owns the swarm: it takes commands from [`crate::Node`]
//! handles, swarm events, and stream events, and drives the Bitswap engine
//! and the fetch jobs. No lock is held around the swarm; everything that
//! touches it happens here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::kad::store::RecordStore;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify, kad, mdns};
use shoal_protocol::bitswap::{BlockSource, Engine, Outgoing, Output, Presence, WantType};
use shoal_protocol::block::{Block, Cid};
use shoal_protocol::channel::ChannelId;
use shoal_protocol::fetch::FetchAction;
use shoal_storage::Blockstore;
use tokio::sync::{mpsc, oneshot};

use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::bitswap::{self, StreamEvent};
use crate::fetch::{FetchJob, FetchReport, Target};
use crate::limits::{Limits, UploadLimiter};
use crate::live::{Live, LiveView};
use crate::{NodeConfig, NodeError};

/// How often timeouts and bans are checked.
const TICK: Duration = Duration::from_millis(200);

pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, NodeError>>),
    Peers(oneshot::Sender<Vec<PeerId>>),
    Provide(Cid, oneshot::Sender<Result<(), NodeError>>),
    /// Fetch something below a root.
    Fetch(Cid, Target, oneshot::Sender<Result<FetchReport, NodeError>>),
    Banned(oneshot::Sender<Vec<PeerId>>),
    Watch(
        ChannelId,
        Vec<reqwest::Url>,
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
    WalletAddress(oneshot::Sender<alloy_primitives::Address>),
    Accounts(oneshot::Sender<Vec<(PeerId, shoal_protocol::ledger::Account)>>),
    SetLimits(Limits, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// The store as the engine sees it: empty in no-upload mode, so every
/// want is answered with DONT_HAVE.
pub(crate) struct StoreSource<'a> {
    store: &'a Blockstore,
    serve: bool,
}

impl<'a> StoreSource<'a> {
    pub(crate) fn new(store: &'a Blockstore, config: &NodeConfig) -> Self {
        StoreSource {
            store,
            serve: !config.no_upload,
        }
    }
}

impl BlockSource for StoreSource<'_> {
    fn block_size(&self, cid: &Cid) -> Option<usize> {
        if !self.serve {
            return None;
        }
        self.store.size(cid).ok().flatten().map(|s| s as usize)
    }
}

pub(crate) struct Job {
    job: FetchJob,
    target: Target,
    reply: oneshot::Sender<Result<FetchReport, NodeError>>,
}

pub(crate) struct EventLoop {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) config: NodeConfig,
    pub(crate) store: Arc<Blockstore>,
    pub(crate) engine: Engine<PeerId>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) stream_events: mpsc::Receiver<StreamEvent>,
    pub(crate) stored: mpsc::UnboundedReceiver<Vec<Cid>>,
    pub(crate) stream_events_tx: mpsc::Sender<StreamEvent>,
    pub(crate) control: libp2p_stream::Control,
    pub(crate) writers: HashMap<PeerId, mpsc::UnboundedSender<Outgoing>>,
    pub(crate) banned: HashMap<PeerId, Instant>,
    pub(crate) pending_dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, NodeError>>>,
    pub(crate) pending_provides: HashMap<kad::QueryId, oneshot::Sender<Result<(), NodeError>>>,
    pub(crate) provider_queries: HashMap<kad::QueryId, Cid>,
    pub(crate) jobs: Vec<Job>,
    pub(crate) live: Live,
    pub(crate) upload: Arc<UploadLimiter>,
    pub(crate) traffic: Traffic,
    pub(crate) rewards: crate::rewards::Rewards,
}

/// Bitswap block bytes this node sent and received since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
}

impl EventLoop {
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.on_command(command),
                    // Every handle is gone: nobody can ask anything more.
                    None => break,
                },
                Some(event) = self.stream_events.recv() => self.on_stream_event(event),
                Some(cids) = self.stored.recv() => self.on_blocks_stored(cids),
                Some(event) = self.live.events_rx.recv() => self.on_live_event(event),
                Some(event) = self.rewards.events_rx.recv() => self.on_rewards_event(event),
                _ = tick.tick() => self.on_tick(),
            }
        }
        for job in self.jobs.drain(..) {
            let _ = job.reply.send(Err(NodeError::ShutDown));
        }
        tracing::debug!("node event loop stopped");
    }

    fn on_command(&mut self, command: Command) {
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
                            detail: e.to_string(),
                        }));
                    }
                }
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Provide(cid, reply) => {
                let key = kad::RecordKey::new(&cid.to_bytes());
                match self.swarm.behaviour_mut().kad.start_providing(key) {
                    Ok(id) => {
                        self.pending_provides.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NodeError::Provide(e.to_string())));
                    }
                }
            }
            Command::Fetch(root, target, reply) => self.start_fetch(root, target, reply),
            Command::Banned(reply) => {
                let _ = reply.send(self.banned.keys().copied().collect());
            }
            Command::Watch(channel, origins, reply) => {
                let _ = reply.send(self.watch(channel, origins));
            }
            Command::Unwatch(channel, reply) => {
                self.unwatch(&channel);
                let _ = reply.send(());
            }
            Command::LiveView(channel, reply) => {
                let _ = reply.send(self.live_view(&channel));
            }
            Command::Watching(reply) => {
                let _ = reply.send(self.live.sessions.keys().copied().collect());
            }
            Command::Publish(channel, rendition, data, reply) => {
                let _ = reply.send(self.publish(channel, rendition, data));
            }
            Command::PutRecord(channel, data, reply) => {
                self.put_channel_record(channel, data, reply)
            }
            Command::WalletAddress(reply) => {
                let _ = reply.send(self.rewards.address());
            }
            Command::Accounts(reply) => {
                let _ = reply.send(self.rewards.accounts());
            }
            Command::Traffic(reply) => {
                let _ = reply.send(self.traffic);
            }
            Command::Limits(reply) => {
                let _ = reply.send(self.limits());
            }
            Command::SetLimits(limits, reply) => {
                self.set_limits(limits);
                let _ = reply.send(());
            }
            Command::GossipScore(peer, reply) => {
                let _ = reply.send(self.swarm.behaviour().gossipsub.peer_score(&peer));
            }
            // Stopping needs the loop itself; `run` handles it first.
            Command::Shutdown(reply) => {
                let _ = reply.send(());
            }
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            upload_bytes_per_sec: self.config.upload_bytes_per_sec,
            no_upload: self.config.no_upload,
            max_peers: self.config.max_connections,
            cache_segments: self.live.config.window,
        }
    }

    fn set_limits(&mut self, limits: Limits) {
        tracing::info!(?limits, "limits changed");
        self.config.upload_bytes_per_sec = limits.upload_bytes_per_sec;
        self.upload.set_rate(limits.upload_bytes_per_sec);
        self.config.no_upload = limits.no_upload;
        self.config.max_connections = limits.max_peers;
        self.swarm.behaviour_mut().limits.limits_mut().clone_from(
            &libp2p::connection_limits::ConnectionLimits::default()
                .with_max_established(Some(limits.max_peers))
                .with_max_established_per_peer(Some(self.config.max_connections_per_peer)),
        );
        self.live.config.window = limits.cache_segments;
        let channels: Vec<ChannelId> = self.live.sessions.keys().copied().collect();
        for channel in channels {
            let actions = self.live.set_window(&channel, limits.cache_segments);
            self.run_live_actions(channel, actions);
        }
    }

    /// Blocks entered the store: peers waiting for them get them.
    fn on_blocks_stored(&mut self, cids: Vec<Cid>) {
        if self.config.no_upload {
            return;
        }
        let mut out = Vec::new();
        let source = StoreSource::new(&self.store, &self.config);
        for cid in &cids {
            self.engine.block_stored(cid, &source, &mut out);
        }
        self.apply(out);
    }

    fn start_fetch(
        &mut self,
        root: Cid,
        target: Target,
        reply: oneshot::Sender<Result<FetchReport, NodeError>>,
    ) {
        let now = Instant::now();
        let (mut job, mut actions) = match FetchJob::new(
            root,
            &target,
            self.config.fetch.clone(),
            self.config.segment_window,
            &self.store,
            now,
        ) {
            Ok(x) => x,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            actions.extend(job.add_candidate(peer, now));
        }
        let key = kad::RecordKey::new(&root.to_bytes());
        let query = self.swarm.behaviour_mut().kad.get_providers(key);
        self.provider_queries.insert(query, root);
        self.jobs.push(Job { job, target, reply });
        self.run_actions(actions);
        self.finish_jobs();
    }

    /// Carries out fetch planner actions through the engine.
    pub(crate) fn run_actions(&mut self, actions: Vec<FetchAction<PeerId>>) {
        if actions.is_empty() {
            return;
        }
        let mut out = Vec::new();
        for action in actions {
            match action {
                FetchAction::WantHave { peer, cid } => {
                    self.engine.want(&peer, cid, WantType::Have, &mut out)
                }
                FetchAction::WantBlock { peer, cid } => {
                    self.engine.want(&peer, cid, WantType::Block, &mut out)
                }
                FetchAction::Cancel { cid } => {
                    let still_wanted =
                        self.jobs.iter().any(|j| j.job.wants(&cid)) || self.live.wants(&cid);
                    if !still_wanted {
                        self.engine.cancel(&cid, &mut out);
                    }
                }
            }
        }
        self.apply(out);
    }

    /// Carries out engine outputs.
    pub(crate) fn apply(&mut self, outputs: Vec<Output<PeerId>>) {
        let mut received: Vec<(PeerId, Cid, Vec<u8>)> = Vec::new();
        let mut actions = Vec::new();
        // One message per peer for everything this batch sends it.
        let mut sends: HashMap<PeerId, Outgoing> = HashMap::new();
        let now = Instant::now();
        for output in outputs {
            match output {
                Output::Send { peer, message } => sends.entry(peer).or_default().merge(message),
                Output::Received { peer, cid, data } => received.push((peer, cid, data)),
                Output::Presence {
                    peer,
                    cid,
                    presence,
                } => {
                    for job in &mut self.jobs {
                        actions.extend(job.job.on_presence(
                            &peer,
                            &cid,
                            presence == Presence::Have,
                            now,
                        ));
                    }
                    self.live_presence(&peer, &cid, presence == Presence::Have);
                }
                Output::Disconnect { peer, reason } => {
                    tracing::warn!(%peer, ?reason, "peer misbehaved; disconnecting and banning it");
                    self.ban(peer);
                    for job in &mut self.jobs {
                        actions.extend(job.job.on_peer_gone(&peer, now));
                    }
                    self.live_peer_gone(&peer);
                }
            }
        }
        let mut released = Vec::new();
        for (peer, mut message) in sends {
            if !message.blocks.is_empty() && !self.rewards.may_serve(&peer) {
                // Over its limit and not in the optimistic slot: the peer
                // hears DONT_HAVE and asks elsewhere.
                tracing::debug!(%peer, blocks = message.blocks.len(), "throttled: owes too much");
                let bytes = std::mem::take(&mut message.block_bytes);
                for cid in std::mem::take(&mut message.blocks) {
                    message.presences.push((cid, Presence::DontHave));
                }
                self.engine.sent(
                    &peer,
                    bytes,
                    &StoreSource::new(&self.store, &self.config),
                    &mut released,
                );
            }
            self.send(peer, message, &mut released);
        }
        if !released.is_empty() {
            self.apply(released);
        }
        if !received.is_empty() {
            self.store_received(received, &mut actions);
        }
        if !actions.is_empty() {
            self.run_actions(actions);
        }
        self.finish_jobs();
    }

    /// Stores verified blocks, credits their senders, serves peers waiting
    /// for them, and tells the fetch jobs.
    fn store_received(
        &mut self,
        received: Vec<(PeerId, Cid, Vec<u8>)>,
        actions: &mut Vec<FetchAction<PeerId>>,
    ) {
        // The wire decoder computed every CID from the block's bytes, so
        // hashing again would only repeat it. The commit skips the fsync: a
        // crash loses blocks that can be fetched again, and the pin at the
        // end of the fetch is durable.
        let blocks: Vec<Block<'_>> = received
            .iter()
            .map(|(_, cid, data)| Block::prehashed(*cid, data))
            .collect();
        if let Err(e) = self.store.put_many_lazily(&blocks) {
            tracing::error!(error = %e, "cannot store received blocks");
            return;
        }
        // Peers waiting for these blocks hear of them through the store's
        // listener (`on_blocks_stored`), like blocks from any source.
        self.traffic.received += received.iter().map(|(_, _, d)| d.len() as u64).sum::<u64>();
        for (peer, _, data) in &received {
            self.rewards
                .ledger
                .received(peer, data.len() as u64, Instant::now());
        }
        self.live_blocks(&received);
        let now = Instant::now();
        for (peer, cid, data) in &received {
            tracing::trace!(%peer, %cid, bytes = data.len(), "block received");
            for job in &mut self.jobs {
                // What this peer delivered of the stream, for its receipts.
                if let Some(group) = job.job.group_of(cid) {
                    self.rewards.delivered(
                        *peer,
                        shoal_protocol::receipt::stream_content_id(&job.job.root),
                        (0, group),
                        data.len() as u64,
                    );
                }
                match job
                    .job
                    .on_block(Some(*peer), cid, data.len(), &self.store, now)
                {
                    Ok(a) => actions.extend(a),
                    Err(e) => job.job.fail(e),
                }
            }
        }
    }

    /// Hands `message` to the peer's writer. If the writer has stopped,
    /// the engine releases the queue space it counted; what that frees for
    /// other peers (paced blocks waiting their turn) goes into `released`.
    fn send(&mut self, peer: PeerId, message: Outgoing, released: &mut Vec<Output<PeerId>>) {
        let writer = self.writers.entry(peer).or_insert_with(|| {
            bitswap::spawn_writer(
                peer,
                self.control.clone(),
                self.store.clone(),
                self.upload.clone(),
                self.stream_events_tx.clone(),
            )
        });
        let bytes = message.block_bytes;
        if writer.send(message).is_err() {
            // The writer has stopped: release the queue space the engine
            // counted; a new writer starts with the next message.
            tracing::debug!(%peer, "bitswap writer gone; message dropped");
            self.writers.remove(&peer);
            self.engine.sent(
                &peer,
                bytes,
                &StoreSource::new(&self.store, &self.config),
                released,
            );
        }
    }

    fn ban(&mut self, peer: PeerId) {
        self.banned
            .insert(peer, Instant::now() + self.config.ban_duration);
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.writers.remove(&peer);
        let _ = self.engine.peer_disconnected(&peer);
    }

    fn on_stream_event(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Message(peer, msg) => {
                if self.banned.contains_key(&peer) {
                    return;
                }
                let mut out = Vec::new();
                self.engine.on_message(
                    &peer,
                    msg,
                    &StoreSource::new(&self.store, &self.config),
                    &mut out,
                );
                self.apply(out);
            }
            StreamEvent::Sent(peer, bytes) => {
                self.traffic.sent += bytes as u64;
                self.rewards_served(peer, bytes as u64);
                let mut out = Vec::new();
                self.engine.sent(
                    &peer,
                    bytes,
                    &StoreSource::new(&self.store, &self.config),
                    &mut out,
                );
                self.apply(out);
            }
            StreamEvent::Malformed(peer, error) => {
                tracing::warn!(%peer, %error, "malformed bitswap message; disconnecting and banning the peer");
                self.ban(peer);
                let now = Instant::now();
                let mut actions = Vec::new();
                for job in &mut self.jobs {
                    actions.extend(job.job.on_peer_gone(&peer, now));
                }
                self.run_actions(actions);
                self.live_peer_gone(&peer);
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.rewards.prune();
        self.rewards_due();
        let expired: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            self.banned.remove(&peer);
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
        let mut actions = Vec::new();
        let timeout = self.config.fetch_stall_timeout;
        for job in &mut self.jobs {
            actions.extend(job.job.tick(now));
            let give_up = self.config.fetch_hopeless_grace;
            if let Some(e) = job
                .job
                .stalled(now, timeout)
                .or_else(|| job.job.hopeless(now, give_up))
            {
                job.job.fail(e);
            }
        }
        self.run_actions(actions);
        self.finish_jobs();
        self.live_tick();
    }

    /// Replies to finished and failed jobs, pins what was fetched and
    /// provides it.
    fn finish_jobs(&mut self) {
        let mut i = 0;
        while i < self.jobs.len() {
            let failed = self.jobs[i].job.take_failure();
            if failed.is_none() && !self.jobs[i].job.is_done() {
                i += 1;
                continue;
            }
            let Job {
                mut job,
                target,
                reply,
            } = self.jobs.swap_remove(i);
            let result = match failed {
                Some(e) => {
                    let actions = job.cancel();
                    self.run_actions(actions);
                    Err(e)
                }
                // Segments fetched for a player are a cache, not a copy.
                None if matches!(target, Target::Segments(_) | Target::Block { pin: false }) => {
                    Ok(job.report())
                }
                None => match self.store.pin(&job.root) {
                    Ok(()) => {
                        let key = kad::RecordKey::new(&job.root.to_bytes());
                        if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
                            tracing::warn!(root = %job.root, error = %e, "cannot provide fetched content");
                        }
                        Ok(job.report())
                    }
                    Err(e) => Err(e.into()),
                },
            };
            let _ = reply.send(result);
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if endpoint.is_dialer() {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, endpoint.get_remote_address().clone());
                }
                if num_established.get() == 1 {
                    self.engine.peer_connected(peer_id);
                    let now = Instant::now();
                    let mut actions = Vec::new();
                    for job in &mut self.jobs {
                        actions.extend(job.job.add_candidate(peer_id, now));
                    }
                    self.run_actions(actions);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.writers.remove(&peer_id);
                let _ = self.engine.peer_disconnected(&peer_id);
                let now = Instant::now();
                let mut actions = Vec::new();
                for job in &mut self.jobs {
                    actions.extend(job.job.on_peer_gone(&peer_id, now));
                }
                self.run_actions(actions);
                self.live_peer_gone(&peer_id);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(NodeError::Dial {
                        addr: String::new(),
                        detail: error.to_string(),
                    }));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(peer);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip_message(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                peer_id,
                topic,
            })) => self.on_gossip_subscribed(peer_id, &topic),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::InboundRequest { request })) => {
                match request {
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    } => self.on_inbound_record(source, record),
                    kad::InboundRequest::AddProvider {
                        record: Some(record),
                    } => {
                        if let Err(e) = self
                            .swarm
                            .behaviour_mut()
                            .kad
                            .store_mut()
                            .add_provider(record)
                        {
                            tracing::debug!(error = %e, "cannot keep a provider record");
                        }
                    }
                    _ => {}
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                ..
            })) => {
                if self.on_live_kad_result(id, &result, step.last) {
                    return;
                }
                self.on_kad_result(id, result);
                if step.last
                    && let Some(root) = self.provider_queries.remove(&id)
                {
                    for job in self.jobs.iter_mut().filter(|j| j.job.root == root) {
                        job.job.providers_searched();
                    }
                    self.finish_jobs();
                }
            }
            _ => {}
        }
    }

    fn on_kad_result(&mut self, id: kad::QueryId, result: kad::QueryResult) {
        match result {
            kad::QueryResult::StartProviding(result) => {
                if let Some(reply) = self.pending_provides.remove(&id) {
                    // The record is stored locally either way; a timeout
                    // only means fewer remote peers hold it yet.
                    if let Err(e) = &result {
                        tracing::debug!(error = %e, "provider record reached fewer peers than wanted");
                    }
                    let _ = reply.send(Ok(()));
                }
            }
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => {
                let Some(root) = self.provider_queries.get(&id).copied() else {
                    return;
                };
                let local = *self.swarm.local_peer_id();
                let now = Instant::now();
                let mut actions = Vec::new();
                for peer in providers {
                    if peer == local || self.banned.contains_key(&peer) {
                        continue;
                    }
                    if self.swarm.is_connected(&peer) {
                        for job in self.jobs.iter_mut().filter(|j| j.job.root == root) {
                            actions.extend(job.job.add_candidate(peer, now));
                        }
                    } else if let Err(e) = self.swarm.dial(peer) {
                        tracing::debug!(%peer, error = %e, "cannot dial a provider");
                    }
                }
                self.run_actions(actions);
            }
            _ => {}
        }
    }
}
