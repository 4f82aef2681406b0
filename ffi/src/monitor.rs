//! What the app hears: the listener's thread and queue, the numbers of
//! [`crate::ShoalNode::stats`], and the task that turns the node's own
//! events and a one-second tick into [`NodeEvent`]s.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_node::stats::LiveStatsReport;
use shoal_node::{LiveView, Node};
use shoal_protocol::channel::ChannelId;

use crate::node::{BroadcastTask, may_upload};
use crate::types::{
    ChannelStats, DeliveryState, MobileLimits, NetworkState, NodeEvent, NodeListener, NodeStats,
    ShoalError,
};

/// Events queued for the listener: a minute of statistics and the changes
/// around them. Beyond it events are dropped (and the listener is told how
/// many), so that a listener that blocks never holds the node up.
pub const EVENT_QUEUE: usize = 256;

/// How often statistics go to the listener while a channel is watched or
/// broadcast.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// A channel with no complete segment yet is stalled after this: a late
/// joiner's first segment comes within a target duration or two.
const FIRST_SEGMENT_WAIT: Duration = Duration::from_secs(20);

/// Target durations without a new segment before a channel is stalled: a
/// player holds about three segments.
const STALL_DURATIONS: u32 = 3;

/// The listener's end: a queue to one thread that calls it.
#[derive(Clone)]
pub(crate) struct Events {
    queue: Option<Arc<Queue>>,
}

struct Queue {
    /// `None` once the node has stopped.
    tx: Mutex<Option<SyncSender<NodeEvent>>>,
    dropped: Arc<AtomicU64>,
}

impl Events {
    /// Starts the listener's thread (none without a listener).
    pub(crate) fn new(listener: Option<Arc<dyn NodeListener>>) -> Events {
        let Some(listener) = listener else {
            return Events { queue: None };
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<NodeEvent>(EVENT_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("shoal-events".into())
            .spawn(move || {
                // Ends once the node has stopped and the queue is empty.
                for event in rx {
                    let n = lost.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        deliver(
                            &*listener,
                            NodeEvent::Error {
                                reason: format!(
                                    "{n} events were dropped: the listener was too slow"
                                ),
                            },
                        );
                    }
                    deliver(&*listener, event);
                }
            });
        match spawned {
            Ok(_) => Events {
                queue: Some(Arc::new(Queue {
                    tx: Mutex::new(Some(tx)),
                    dropped,
                })),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the listener's thread; no events");
                Events { queue: None }
            }
        }
    }

    /// Queues an event, or counts it as dropped if the queue is full.
    pub(crate) fn send(&self, event: NodeEvent) {
        let Some(q) = &self.queue else { return };
        let tx = q.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = tx.as_ref()
            && let Err(TrySendError::Full(_)) = tx.try_send(event)
        {
            q.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// No more events: the thread ends once it has delivered the queued
    /// ones.
    pub(crate) fn close(&self) {
        if let Some(q) = &self.queue {
            q.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }
}

fn deliver(listener: &dyn NodeListener, event: NodeEvent) {
    match std::panic::catch_unwind(AssertUnwindSafe(|| listener.on_event(event))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the app's listener failed on an event; going on"),
        Err(_) => tracing::warn!("the app's listener panicked on an event; going on"),
    }
}

/// What the app set.
pub(crate) struct Controls {
    pub(crate) limits: MobileLimits,
    pub(crate) network: NetworkState,
    pub(crate) paused: bool,
}

/// What the calls, the broadcasts and the monitor share.
pub(crate) struct Shared {
    pub(crate) gateway_url: String,
    pub(crate) controls: Mutex<Controls>,
    /// Held while the controls are given to the node, so that two calls
    /// on two threads cannot give it in the wrong order.
    pub(crate) applying: Mutex<()>,
    pub(crate) broadcasts: Mutex<HashMap<String, BroadcastTask>>,
    pub(crate) events: Events,
    channels: Mutex<HashMap<ChannelId, Tracker>>,
    ids: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        gateway_url: String,
        limits: MobileLimits,
        network: NetworkState,
        events: Events,
    ) -> Shared {
        Shared {
            gateway_url,
            controls: Mutex::new(Controls {
                limits,
                network,
                paused: false,
            }),
            applying: Mutex::default(),
            broadcasts: Mutex::default(),
            events,
            channels: Mutex::default(),
            ids: AtomicU64::new(0),
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn live_url(&self, channel: &ChannelId) -> String {
        format!("{}/live/{channel}/index.m3u8", self.gateway_url)
    }

    /// The app started watching: the stall clock starts now.
    pub(crate) fn watching(&self, channel: ChannelId) {
        lock(&self.channels)
            .entry(channel)
            .or_insert_with(|| Tracker::new(Instant::now()));
    }

    pub(crate) fn unwatched(&self, channel: &ChannelId) {
        lock(&self.channels).remove(channel);
    }

    /// Broadcast `id` of `name` has ended: forget it, unless a newer one
    /// of that name runs.
    pub(crate) fn broadcast_ended(&self, name: &str, id: u64) {
        let mut b = lock(&self.broadcasts);
        if b.get(name).is_some_and(|t| t.id == id) {
            b.remove(name);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A watched channel's progress, for its [`DeliveryState`].
struct Tracker {
    started: Instant,
    segments: u64,
    /// When the last new segment was seen.
    progress: Option<Instant>,
    /// The state the listener last heard.
    reported: Option<DeliveryState>,
}

impl Tracker {
    fn new(now: Instant) -> Tracker {
        Tracker {
            started: now,
            segments: 0,
            progress: None,
            reported: None,
        }
    }

    fn state(&mut self, view: &LiveView, now: Instant) -> DeliveryState {
        if view.stats.segments > self.segments {
            self.segments = view.stats.segments;
            self.progress = Some(now);
        }
        if view.proxying {
            return DeliveryState::Proxying;
        }
        let (since, allowed) = match self.progress {
            None => (self.started, FIRST_SEGMENT_WAIT),
            Some(t) => {
                let target = Duration::from_micros(view.target_duration_us);
                (t, (target * STALL_DURATIONS).max(Duration::from_secs(3)))
            }
        };
        if now.duration_since(since) > allowed {
            DeliveryState::Stalled
        } else {
            DeliveryState::P2p
        }
    }
}

/// The node's numbers now. With `report`, changes of a channel's state
/// go to the listener.
pub(crate) async fn collect(
    node: &Node,
    shared: &Shared,
    report: bool,
) -> Result<NodeStats, ShoalError> {
    let peers = node.peers().await?.len();
    let traffic = node.traffic().await?;
    let watching = node.watching().await?;
    let mut views = Vec::with_capacity(watching.len());
    for channel in &watching {
        if let Some(view) = node.live_view(*channel).await? {
            views.push(view);
        }
    }
    let now = Instant::now();
    let mut channels = Vec::with_capacity(views.len());
    let mut changes = Vec::new();
    {
        let mut trackers = lock(&shared.channels);
        // Sessions nobody looked at end by themselves.
        trackers.retain(|c, _| watching.contains(c));
        for view in &views {
            let tracker = trackers
                .entry(view.channel)
                .or_insert_with(|| Tracker::new(now));
            let state = tracker.state(view, now);
            if report && tracker.reported != Some(state) {
                tracker.reported = Some(state);
                changes.push(NodeEvent::ChannelState {
                    channel: view.channel.to_string(),
                    state,
                });
            }
            let r = LiveStatsReport::of(view);
            channels.push(ChannelStats {
                channel: r.channel,
                url: shared.live_url(&view.channel),
                state,
                segments: r.segments,
                late: r.late,
                missed: r.missed,
                bytes_from_peers: r.bytes_from_peers,
                bytes_from_source: r.bytes_from_source,
                bytes_from_http: r.bytes_from_http,
                bytes_uploaded: r.bytes_uploaded,
                latency_p95_ms: r.latency_p95_ms,
                peers: r.peers as u32,
            });
        }
    }
    for change in changes {
        shared.events.send(change);
    }
    let (uploading, paused) = {
        let c = lock(&shared.controls);
        (may_upload(&c.limits, &c.network, c.paused), c.paused)
    };
    let mut broadcasting: Vec<String> = lock(&shared.broadcasts).keys().cloned().collect();
    broadcasting.sort();
    Ok(NodeStats {
        peers: peers as u32,
        bytes_sent: traffic.sent,
        bytes_received: traffic.received,
        uploading,
        paused,
        channels,
        broadcasting,
    })
}

/// Runs until the node stops: peer counts as they change, and the
/// statistics every second while anything is watched or broadcast.
pub(crate) async fn run(node: Node, shared: Arc<Shared>) {
    let mut events = node.events();
    let mut tick = tokio::time::interval(STATS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut peers = None;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(shoal_node::NodeEvent::Peers(n)) => {
                    if peers != Some(n) {
                        peers = Some(n);
                        shared.events.send(NodeEvent::PeersChanged { peers: n as u32 });
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(n, "the monitor missed node events");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => match collect(&node, &shared, true).await {
                Ok(stats) => {
                    if !stats.channels.is_empty() || !stats.broadcasting.is_empty() {
                        shared.events.send(NodeEvent::Stats { stats });
                    }
                }
                Err(ShoalError::Stopped { .. }) => break,
                Err(e) => tracing::debug!(error = %e, "cannot collect statistics"),
            },
        }
    }
}
