//! [`ShoalNode`]: the node, its private gateway, its broadcasts and its
//! listener, behind synchronous calls.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use shoal_node::broadcast::{BroadcastOptions, broadcast};
use shoal_node::gateway::GatewayServer;
use shoal_node::libp2p::Multiaddr;
use shoal_node::limits::Limits;
use shoal_node::repo::{Repo, RepoPaths};
use shoal_node::{Node, NodeConfig};
use shoal_protocol::block::Cid;
use shoal_protocol::channel::ChannelId;
use shoal_storage::{Blockstore, ImportOptions};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

use crate::monitor::{self, Events, Shared};
use crate::types::{
    MIN_STORE_QUOTA, MobileConfig, MobileLimits, NetworkState, NodeEvent, NodeListener, NodeStats,
    ShoalError, UploadPolicy,
};

/// Worker threads of the node's runtime: the swarm, the gateway and the
/// store's work fit in two on a phone.
const WORKER_THREADS: usize = 2;

/// How long `stop` waits for the node's last task to let the store go.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// How long `stop_broadcast` waits for the broadcaster to finish the
/// segment it is storing before cutting it short.
const BROADCAST_STOP_WAIT: Duration = Duration::from_secs(5);

type Result<T, E = ShoalError> = std::result::Result<T, E>;

/// A running node. Every call blocks until it is done, so call them off
/// the app's main thread; they may be called from several threads at
/// once. After [`ShoalNode::stop`] every call fails with
/// `ShoalError::Stopped`.
#[derive(uniffi::Object)]
pub struct ShoalNode {
    runtime: Mutex<Option<Runtime>>,
    handle: tokio::runtime::Handle,
    peer_id: String,
    data_dir: PathBuf,
    import: ImportOptions,
    /// `None` once stopped.
    running: Mutex<Option<Running>>,
    shared: Arc<Shared>,
}

/// What a stop takes apart.
struct Running {
    node: Node,
    gateway: GatewayServer,
    monitor: tokio::task::JoinHandle<()>,
    /// The store, to know when its last holder is gone.
    store: Weak<Blockstore>,
}

/// A broadcast running.
pub(crate) struct BroadcastTask {
    pub(crate) id: u64,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn parse_addr(text: &str) -> Result<Multiaddr> {
    text.parse()
        .map_err(|e| ShoalError::bad(format!("invalid multiaddr {text:?}: {e}")))
}

fn parse_channel(text: &str) -> Result<ChannelId> {
    text.parse()
        .map_err(|e| ShoalError::bad(format!("invalid channel id {text:?}: {e}")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The node's limits for what the app set, its network and pause.
fn node_limits(limits: &MobileLimits, uploading: bool) -> Limits {
    Limits {
        upload_bytes_per_sec: limits.upload_bytes_per_sec,
        no_upload: !uploading,
        max_peers: limits.max_peers,
        cache_segments: limits.cache_segments as usize,
    }
}

/// Whether the node may serve peers.
pub(crate) fn may_upload(limits: &MobileLimits, network: &NetworkState, paused: bool) -> bool {
    let policy = match limits.upload_policy {
        UploadPolicy::Always => true,
        UploadPolicy::UnmeteredOnly => !network.metered,
        UploadPolicy::Never => false,
    };
    policy && network.online && !paused
}

fn check_limits(limits: &MobileLimits) -> Result<()> {
    node_limits(limits, true)
        .validate()
        .map_err(|e| ShoalError::bad(format!("invalid limits: {e}")))
}

impl MobileConfig {
    fn limits(&self) -> MobileLimits {
        MobileLimits {
            upload_bytes_per_sec: self.upload_bytes_per_sec,
            upload_policy: self.upload_policy,
            max_peers: self.max_peers,
            cache_segments: self.cache_segments,
        }
    }

    fn check(&self) -> Result<Vec<Multiaddr>> {
        if self.data_dir.trim().is_empty() {
            return Err(ShoalError::bad(
                "data_dir is empty: give the app's files folder",
            ));
        }
        if self.store_quota_bytes < MIN_STORE_QUOTA {
            return Err(ShoalError::bad(format!(
                "store_quota_bytes of {} is below the smallest store, {MIN_STORE_QUOTA} bytes",
                self.store_quota_bytes
            )));
        }
        check_limits(&self.limits())?;
        self.bootstrap.iter().map(|a| parse_addr(a)).collect()
    }
}

#[uniffi::export]
impl ShoalNode {
    /// Starts a node: opens (or creates) its data folder, listens for
    /// peers, joins through the bootstrap peers and serves the app's
    /// gateway on 127.0.0.1 (a free port; every URL carries a secret
    /// drawn at this start). Until [`ShoalNode::set_network`] says
    /// otherwise the network is taken as online and metered, so an
    /// `UnmeteredOnly` node does not upload before the app has looked.
    #[uniffi::constructor]
    pub fn start(
        config: MobileConfig,
        listener: Option<Arc<dyn NodeListener>>,
    ) -> Result<Arc<ShoalNode>> {
        let bootstrap = config.check()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("shoal")
            .enable_all()
            .build()
            .map_err(|e| ShoalError::Internal {
                msg: format!("cannot start the node's threads: {e}"),
            })?;
        let data_dir = PathBuf::from(&config.data_dir);
        Repo::init(&data_dir)?;
        let mut paths = RepoPaths::load(&data_dir)?;
        paths.config.store.quota_bytes = Some(config.store_quota_bytes);
        let limits = config.limits();
        let network = NetworkState {
            online: true,
            metered: true,
        };
        let mut node_config = NodeConfig::from_repo(&paths)?;
        let port = config.listen_port;
        node_config.listen = vec![
            parse_addr(&format!("/ip4/0.0.0.0/tcp/{port}"))?,
            parse_addr(&format!("/ip6/::/tcp/{port}"))?,
        ];
        node_config.bootstrap = bootstrap;
        node_config.mdns = config.mdns;
        node_config.system_dns = false;
        node_config.private_origins = false;
        node_config.max_connections = limits.max_peers;
        node_config.live.window = limits.cache_segments as usize;
        node_config.upload_bytes_per_sec = limits.upload_bytes_per_sec;
        node_config.no_upload = !may_upload(&limits, &network, false);
        let import = paths
            .import_options()
            .map_err(shoal_node::NodeError::from)?;

        let handle = runtime.handle().clone();
        let node = runtime.block_on(Node::start_repo(&paths, node_config))?;
        let secret = hex(&shoal_node::identity::random_secret());
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let gateway = match runtime.block_on(shoal_node::gateway::serve_private(
            node.clone(),
            loopback,
            &secret,
        )) {
            Ok(g) => g,
            Err(e) => {
                runtime.block_on(node.stop());
                return Err(e.into());
            }
        };
        let events = Events::new(listener);
        let shared = Arc::new(Shared::new(
            gateway.url.clone(),
            limits,
            network,
            events.clone(),
        ));
        let monitor = runtime.spawn(monitor::run(node.clone(), shared.clone()));
        let peer_id = node.peer_id().to_string();
        events.send(NodeEvent::Started {
            peer_id: peer_id.clone(),
            gateway_url: gateway.url.clone(),
        });
        let store = Arc::downgrade(node.store());
        Ok(Arc::new(ShoalNode {
            runtime: Mutex::new(Some(runtime)),
            handle,
            peer_id,
            data_dir,
            import,
            running: Mutex::new(Some(Running {
                node,
                gateway,
                monitor,
                store,
            })),
            shared,
        }))
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> String {
        self.peer_id.clone()
    }

    /// The gateway's base URL (`http://127.0.0.1:<port>/<secret>`).
    pub fn gateway_url(&self) -> String {
        self.shared.gateway_url.clone()
    }

    /// The addresses peers can dial, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> Result<Vec<String>> {
        let node = self.node()?;
        let addrs = self.handle.block_on(node.listen_addrs())?;
        Ok(addrs
            .into_iter()
            .map(|a| format!("{a}/p2p/{}", self.peer_id))
            .collect())
    }

    /// Connects to a peer at `addr`; returns its peer id.
    pub fn connect(&self, addr: String) -> Result<String> {
        let addr = parse_addr(&addr)?;
        let node = self.node()?;
        Ok(self.handle.block_on(node.dial(addr))?.to_string())
    }

    /// Creates a channel (a signing key kept in the data folder) named
    /// `name`, or finds the one of that name; returns its id.
    pub fn create_channel(&self, name: String) -> Result<String> {
        self.node()?;
        match shoal_node::channel_keys::load(&self.data_dir, &name) {
            Ok(key) => Ok(key.id().to_string()),
            Err(shoal_node::channel_keys::ChannelKeyError::Unknown(_)) => {
                Ok(shoal_node::channel_keys::create(&self.data_dir, &name)?.to_string())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Broadcasts channel `name` from `hls_dir`, the folder a live
    /// encoder writes (its playlist found when it appears), until
    /// [`ShoalNode::stop_broadcast`] or the encoder ends the stream.
    /// Returns the channel id.
    pub fn broadcast(&self, name: String, hls_dir: String) -> Result<String> {
        let node = self.node()?;
        let key = shoal_node::channel_keys::load(&self.data_dir, &name)?;
        let channel = key.id();
        let options = BroadcastOptions {
            dir: PathBuf::from(&hls_dir),
            playlist: None,
            origins: Vec::new(),
            import: self.import,
            name: name.clone(),
        };
        options.validate().map_err(ShoalError::bad)?;
        let mut broadcasts = lock(&self.shared.broadcasts);
        if broadcasts.contains_key(&name) {
            return Err(ShoalError::Busy {
                msg: format!("channel {name:?} is being broadcast already"),
            });
        }
        let id = self.shared.next_id();
        let (stop, stopped) = oneshot::channel();
        let shared = self.shared.clone();
        let task_name = name.clone();
        let task = self.handle.spawn(async move {
            let (tx, mut published) = tokio::sync::mpsc::channel(64);
            let run = broadcast(node, key, options, tx);
            tokio::pin!(run);
            tokio::pin!(stopped);
            let mut stopping = false;
            let result = loop {
                tokio::select! {
                    result = &mut run => break result,
                    _ = published.recv(), if !stopping => {}
                    _ = &mut stopped, if !stopping => {
                        // The broadcaster stops once nobody hears it.
                        published.close();
                        stopping = true;
                    }
                }
            };
            shared.broadcast_ended(&task_name, id);
            if let Err(e) = result {
                tracing::warn!(name = %task_name, error = %e, "broadcast stopped");
                shared.events.send(NodeEvent::Error {
                    reason: format!("the broadcast of {task_name:?} stopped: {e}"),
                });
            }
        });
        broadcasts.insert(name, BroadcastTask { id, stop, task });
        Ok(channel.to_string())
    }

    /// Stops broadcasting channel `name`; returns once the broadcaster
    /// has stopped.
    pub fn stop_broadcast(&self, name: String) -> Result<()> {
        self.node()?;
        let task = lock(&self.shared.broadcasts).remove(&name).ok_or_else(|| {
            ShoalError::not_found(format!("channel {name:?} is not being broadcast"))
        })?;
        self.handle.block_on(end_broadcast(task));
        Ok(())
    }

    /// Watches a live channel; returns its playlist URL on the app's
    /// gateway, for the player.
    pub fn watch(&self, channel: String) -> Result<String> {
        let channel = parse_channel(&channel)?;
        let node = self.node()?;
        self.handle.block_on(node.watch(channel))?;
        self.shared.watching(channel);
        Ok(self.shared.live_url(&channel))
    }

    /// Stops watching a channel.
    pub fn unwatch(&self, channel: String) -> Result<()> {
        let channel = parse_channel(&channel)?;
        let node = self.node()?;
        self.handle.block_on(node.unwatch(channel))?;
        self.shared.unwatched(&channel);
        Ok(())
    }

    /// Imports a file (or an HLS presentation, given its `.m3u8`) into the
    /// store, pins it and announces it; returns its root CID.
    pub fn add_file(&self, path: String) -> Result<String> {
        let node = self.node()?;
        let path = PathBuf::from(path);
        let hls = path.extension().is_some_and(|e| e == "m3u8");
        let store = node.store().clone();
        let import = self.import;
        let imported = self.handle.block_on(async move {
            tokio::task::spawn_blocking(move || {
                if hls {
                    shoal_storage::import_hls(&store, &path, &import, &mut |_| {})
                } else {
                    shoal_storage::import_file(&store, &path, &import, &mut |_| {})
                }
            })
            .await
        });
        let imported = imported.map_err(|e| ShoalError::Internal {
            msg: format!("the import stopped: {e}"),
        })??;
        self.handle.block_on(node.provide(imported.root))?;
        Ok(imported.root.to_string())
    }

    /// The playlist URL of an on-demand stream (an HLS presentation's
    /// root CID), fetched from the network as the player asks.
    pub fn vod_url(&self, root: String) -> Result<String> {
        let cid: Cid = root
            .parse()
            .map_err(|e| ShoalError::bad(format!("invalid CID {root:?}: {e}")))?;
        self.node()?;
        Ok(format!("{}/vod/{cid}/index.m3u8", self.shared.gateway_url))
    }

    /// The node's numbers now.
    pub fn stats(&self) -> Result<NodeStats> {
        let node = self.node()?;
        self.handle
            .block_on(monitor::collect(&node, &self.shared, false))
    }

    /// Changes the upload cap and policy, the peer limit and the live
    /// cache.
    pub fn set_limits(&self, limits: MobileLimits) -> Result<()> {
        check_limits(&limits)?;
        let node = self.node()?;
        lock(&self.shared.controls).limits = limits;
        self.apply(&node)
    }

    /// What the phone's network is now: offline, the node holds no
    /// connection; metered, an `UnmeteredOnly` node stops uploading.
    pub fn set_network(&self, state: NetworkState) -> Result<()> {
        let node = self.node()?;
        lock(&self.shared.controls).network = state;
        self.apply(&node)
    }

    /// The app went to the background: the node serves nothing and
    /// closes its connections (the store and watches stay).
    pub fn pause(&self) -> Result<()> {
        let node = self.node()?;
        lock(&self.shared.controls).paused = true;
        self.apply(&node)
    }

    /// The app is back: the node reconnects and serves again.
    pub fn resume(&self) -> Result<()> {
        let node = self.node()?;
        lock(&self.shared.controls).paused = false;
        self.apply(&node)
    }

    /// Stops the node: broadcasts, the gateway, the swarm. Returns once
    /// its ports are closed and its data folder is free (a new node may
    /// start on it at once). Stopping twice does nothing.
    pub fn stop(&self) {
        let Some(running) = lock(&self.running).take() else {
            return;
        };
        let broadcasts: Vec<BroadcastTask> = lock(&self.shared.broadcasts)
            .drain()
            .map(|(_, t)| t)
            .collect();
        let handle = self.handle.clone();
        handle.block_on(async move {
            for task in broadcasts {
                end_broadcast(task).await;
            }
            running.monitor.abort();
            let _ = running.monitor.await;
            running.gateway.stop().await;
            running.node.stop().await;
            drop(running.node);
            // Calls under way on other threads hold the node until they
            // hear it has stopped.
            let deadline = tokio::time::Instant::now() + STOP_WAIT;
            while running.store.strong_count() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if running.store.strong_count() > 0 {
                tracing::warn!("the store is still held after the node stopped");
            }
        });
        self.shared.events.close();
        if let Some(runtime) = lock(&self.runtime).take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl ShoalNode {
    fn node(&self) -> Result<Node> {
        lock(&self.running)
            .as_ref()
            .map(|r| r.node.clone())
            .ok_or_else(ShoalError::stopped)
    }

    /// Gives the node what the app's limits, network and pause say.
    fn apply(&self, node: &Node) -> Result<()> {
        // The controls are read under this lock: the last call to get it
        // gives the node the latest of them.
        let _order = lock(&self.shared.applying);
        let (limits, pause) = {
            let c = lock(&self.shared.controls);
            let uploading = may_upload(&c.limits, &c.network, c.paused);
            (
                node_limits(&c.limits, uploading),
                c.paused || !c.network.online,
            )
        };
        self.handle.block_on(async {
            node.set_limits(limits).await?;
            if pause {
                node.pause().await
            } else {
                node.resume().await
            }
        })?;
        Ok(())
    }
}

impl Drop for ShoalNode {
    /// A node the app never stopped: its threads are let go without
    /// waiting (the foreign side may drop it on any thread).
    fn drop(&mut self) {
        if let Some(runtime) = lock(&self.runtime).take() {
            runtime.shutdown_background();
        }
    }
}

async fn end_broadcast(task: BroadcastTask) {
    let BroadcastTask { stop, mut task, .. } = task;
    let _ = stop.send(());
    if tokio::time::timeout(BROADCAST_STOP_WAIT, &mut task)
        .await
        .is_err()
    {
        task.abort();
        let _ = task.await;
    }
}
