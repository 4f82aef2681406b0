//! Stream protocols (Bitswap, receipts) on libp2p connections: streams
//! opened to a peer on request, streams a peer opens handed to the
//! protocol's acceptor.
//!
//! What it guarantees:
//!
//! - An inbound stream is queued for its acceptor, up to
//!   [`INBOUND_QUEUED`] per protocol, and never dropped below that. (The
//!   generic `libp2p-stream` behaviour this replaces held one stream per
//!   protocol and dropped the next until its acceptor task ran again: a
//!   node that asked four peers at once lost an answer whenever two came
//!   back between two polls of that task, and the fetch waited on it for
//!   good. Seen under load in the test suite.)
//! - Beyond [`INBOUND_QUEUED`] a stream is dropped (the peer sees it
//!   reset), with a warning.
//! - A stream to a peer goes over its newest connection (a direct one
//!   made by hole punching comes after the relayed one it replaces). With
//!   [`Control::open_stream`] a peer with no connection is dialled first,
//!   and the request fails if the dial does; [`Control::open_connected`]
//!   fails at once instead (a Bitswap writer whose peer went away must not
//!   bring it back to deliver what it no longer wants).
//! - Only the protocols named at construction are offered to peers, and
//!   the requests waiting for a connection are bounded
//!   ([`MAX_WAITING_PER_PEER`]).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{InboundUpgrade, OutboundUpgrade, UpgradeInfo};
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId,
    FromSwarm, NetworkBehaviour, NotifyHandler, Stream, StreamProtocol, StreamUpgradeError,
    SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    behaviour::ConnectionEstablished,
};
use libp2p::{PeerId, swarm::DialFailure};
use tokio::sync::{mpsc, oneshot};

/// Inbound streams queued per protocol for its acceptor. An acceptor only
/// spawns a reader per stream, so the queue is empty again within a poll;
/// 256 covers a node whose every peer opens a stream at once (it dials at
/// most a few dozen for a channel), and each entry is a stream's handle,
/// a few hundred bytes.
pub(crate) const INBOUND_QUEUED: usize = 256;

/// Requests to open a stream waiting for the peer's connection. A writer
/// opens one stream at a time and receipts are asked of a peer once per
/// epoch, so 64 is far beyond any honest use.
pub(crate) const MAX_WAITING_PER_PEER: usize = 64;

/// Open requests queued from the node's tasks to the swarm. Callers wait
/// when it is full, so it bounds memory and holds up no one for long.
const REQUESTS_QUEUED: usize = 1024;

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("the peer does not speak {0}")]
    Unsupported(StreamProtocol),
    #[error("cannot reach the peer: {0}")]
    Unreachable(String),
    #[error("the peer is not connected")]
    NotConnected,
    #[error("the connection went away while the stream was being opened")]
    ConnectionClosed,
    #[error("too many streams waiting for the peer's connection")]
    TooManyWaiting,
    #[error("the node is stopping")]
    Stopped,
    #[error("opening the stream: {0}")]
    Io(#[from] std::io::Error),
}

type Reply = oneshot::Sender<Result<Stream, OpenError>>;

/// A request to open a stream of `protocol` to `peer`.
#[derive(Debug)]
pub(crate) struct Open {
    peer: PeerId,
    protocol: StreamProtocol,
    /// Dial the peer if it has no connection.
    dial: bool,
    reply: Reply,
}

/// The streams a peer opens for one protocol.
pub(crate) type Incoming = mpsc::Receiver<(PeerId, Stream)>;

/// Opens streams from any task; cheap to clone.
#[derive(Clone)]
pub(crate) struct Control {
    requests: mpsc::Sender<Open>,
    dropped: Arc<AtomicU64>,
}

impl Control {
    /// Opens a stream of `protocol` to `peer`, dialling it if need be.
    pub(crate) async fn open_stream(
        &self,
        peer: PeerId,
        protocol: StreamProtocol,
    ) -> Result<Stream, OpenError> {
        self.open(peer, protocol, true).await
    }

    /// Opens a stream of `protocol` on one of `peer`'s connections; fails
    /// with [`OpenError::NotConnected`] if it has none.
    pub(crate) async fn open_connected(
        &self,
        peer: PeerId,
        protocol: StreamProtocol,
    ) -> Result<Stream, OpenError> {
        self.open(peer, protocol, false).await
    }

    async fn open(
        &self,
        peer: PeerId,
        protocol: StreamProtocol,
        dial: bool,
    ) -> Result<Stream, OpenError> {
        let (reply, answer) = oneshot::channel();
        let open = Open {
            peer,
            protocol,
            dial,
            reply,
        };
        self.requests
            .send(open)
            .await
            .map_err(|_| OpenError::Stopped)?;
        answer.await.map_err(|_| OpenError::ConnectionClosed)?
    }

    /// Inbound streams dropped because their acceptor's queue was full.
    #[cfg(test)]
    pub(crate) fn dropped_inbound(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The behaviour. See the module documentation.
pub(crate) struct Behaviour {
    protocols: Arc<[StreamProtocol]>,
    queues: HashMap<StreamProtocol, mpsc::Sender<(PeerId, Stream)>>,
    /// Acceptors' ends, until [`Behaviour::accept`] takes them.
    unclaimed: HashMap<StreamProtocol, Incoming>,
    requests: mpsc::Receiver<Open>,
    control: Control,
    /// Each peer's connections, oldest first.
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// Requests waiting for a dial to the peer to succeed.
    waiting: HashMap<PeerId, Vec<Open>>,
    out: VecDeque<ToSwarm<Infallible, Open>>,
}

impl Behaviour {
    /// A behaviour offering `protocols` to peers.
    pub(crate) fn new(protocols: Vec<StreamProtocol>) -> Self {
        let mut queues = HashMap::new();
        let mut unclaimed = HashMap::new();
        for p in &protocols {
            let (tx, rx) = mpsc::channel(INBOUND_QUEUED);
            queues.insert(p.clone(), tx);
            unclaimed.insert(p.clone(), rx);
        }
        let (requests_tx, requests) = mpsc::channel(REQUESTS_QUEUED);
        Behaviour {
            protocols: protocols.into(),
            queues,
            unclaimed,
            requests,
            control: Control {
                requests: requests_tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            connections: HashMap::new(),
            waiting: HashMap::new(),
            out: VecDeque::new(),
        }
    }

    pub(crate) fn control(&self) -> Control {
        self.control.clone()
    }

    /// The inbound streams of `protocol`, for its one acceptor: `None` if
    /// the protocol was not named at construction or is taken already.
    pub(crate) fn accept(&mut self, protocol: &StreamProtocol) -> Option<Incoming> {
        self.unclaimed.remove(protocol)
    }

    fn inbound(&mut self, peer: PeerId, stream: Stream, protocol: StreamProtocol) {
        let Some(queue) = self.queues.get(&protocol) else {
            return;
        };
        match queue.try_send((peer, stream)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.control.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, %protocol, "inbound stream dropped: its acceptor is {INBOUND_QUEUED} streams behind");
            }
            // Nobody accepts it (the node is stopping): the stream is
            // dropped, and the peer sees it reset.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn route(&mut self, open: Open) {
        if let Some(&connection) = self.connections.get(&open.peer).and_then(|c| c.last()) {
            self.out.push_back(ToSwarm::NotifyHandler {
                peer_id: open.peer,
                handler: NotifyHandler::One(connection),
                event: open,
            });
            return;
        }
        if !open.dial {
            let _ = open.reply.send(Err(OpenError::NotConnected));
            return;
        }
        let waiting = self.waiting.entry(open.peer).or_default();
        if waiting.len() >= MAX_WAITING_PER_PEER {
            let _ = open.reply.send(Err(OpenError::TooManyWaiting));
            return;
        }
        if waiting.is_empty() {
            self.out.push_back(ToSwarm::Dial {
                opts: DialOpts::peer_id(open.peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
            });
        }
        waiting.push(open);
    }

    fn handler(&self) -> Handler {
        Handler {
            protocols: self.protocols.clone(),
            opens: VecDeque::new(),
            inbound: VecDeque::new(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler())
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            }) => {
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .push(connection_id);
                for open in self.waiting.remove(&peer_id).unwrap_or_default() {
                    self.route(open);
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                if let Some(c) = self.connections.get_mut(&peer_id) {
                    c.retain(|id| *id != connection_id);
                    if c.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
            }
            FromSwarm::DialFailure(DialFailure {
                peer_id: Some(peer),
                error,
                ..
            }) if !self.connections.contains_key(&peer) => {
                for open in self.waiting.remove(&peer).unwrap_or_default() {
                    let _ = open
                        .reply
                        .send(Err(OpenError::Unreachable(error.to_string())));
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        _: ConnectionId,
        (stream, protocol): THandlerOutEvent<Self>,
    ) {
        self.inbound(peer, stream, protocol);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        while let Poll::Ready(Some(open)) = self.requests.poll_recv(cx) {
            self.route(open);
        }
        match self.out.pop_front() {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }
}

/// One connection's part: offers the protocols, opens what it is asked
/// to, passes inbound streams up.
pub(crate) struct Handler {
    protocols: Arc<[StreamProtocol]>,
    opens: VecDeque<Open>,
    inbound: VecDeque<(Stream, StreamProtocol)>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Open;
    type ToBehaviour = (Stream, StreamProtocol);
    type InboundProtocol = Upgrade;
    type OutboundProtocol = Upgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Open;

    fn listen_protocol(&self) -> SubstreamProtocol<Upgrade, ()> {
        SubstreamProtocol::new(Upgrade(self.protocols.to_vec()), ())
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Upgrade, Open, Self::ToBehaviour>> {
        if let Some(stream) = self.inbound.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(stream));
        }
        if let Some(open) = self.opens.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(Upgrade(vec![open.protocol.clone()]), open),
            });
        }
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, open: Open) {
        self.opens.push_back(open);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol, (), Open>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol, ..
            }) => self.inbound.push_back(protocol),
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (stream, _),
                info: open,
            }) => {
                let _ = open.reply.send(Ok(stream));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info: open, error }) => {
                let error = match error {
                    StreamUpgradeError::NegotiationFailed => OpenError::Unsupported(open.protocol),
                    StreamUpgradeError::Timeout => {
                        OpenError::Io(std::io::ErrorKind::TimedOut.into())
                    }
                    StreamUpgradeError::Io(e) => OpenError::Io(e),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                let _ = open.reply.send(Err(error));
            }
            _ => {}
        }
    }
}

/// Offers (inbound) or asks for (outbound) one of a list of protocols;
/// the stream comes back as it is, with the protocol agreed.
#[derive(Clone, Debug)]
pub(crate) struct Upgrade(Vec<StreamProtocol>);

impl UpgradeInfo for Upgrade {
    type Info = StreamProtocol;
    type InfoIter = std::vec::IntoIter<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone().into_iter()
    }
}

impl InboundUpgrade<Stream> for Upgrade {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Output, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        std::future::ready(Ok((stream, protocol)))
    }
}

impl OutboundUpgrade<Stream> for Upgrade {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Output, Infallible>>;

    fn upgrade_outbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        std::future::ready(Ok((stream, protocol)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use libp2p::core::transport::MemoryTransport;
    use libp2p::core::upgrade::Version;
    use libp2p::swarm::SwarmEvent;
    use libp2p::{Swarm, Transport, noise, yamux};
    use std::time::Duration;

    const PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/test/1");

    fn swarm() -> Swarm<Behaviour> {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_other_transport(|key| {
                Ok(MemoryTransport::default()
                    .upgrade(Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()))
            })
            .unwrap()
            .with_behaviour(|_| Behaviour::new(vec![PROTOCOL]))
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    }

    /// A listening on memory and B connected to it, both driven by their
    /// own tasks: returns A's id, its acceptor's queue and both controls.
    async fn pair() -> (PeerId, Incoming, Control, Control) {
        let (mut a, mut b) = (swarm(), swarm());
        let incoming = a.behaviour_mut().accept(&PROTOCOL).unwrap();
        assert!(
            a.behaviour_mut().accept(&PROTOCOL).is_none(),
            "one acceptor"
        );
        a.listen_on("/memory/0".parse().unwrap()).unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = a.select_next_some().await {
                break address;
            }
        };
        let (a_id, a_control, b_control) = (
            *a.local_peer_id(),
            a.behaviour().control(),
            b.behaviour().control(),
        );
        tokio::spawn(async move {
            loop {
                a.select_next_some().await;
            }
        });
        b.dial(addr).unwrap();
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = b.select_next_some().await {
                break;
            }
        }
        tokio::spawn(async move {
            loop {
                b.select_next_some().await;
            }
        });
        (a_id, incoming, a_control, b_control)
    }

    #[tokio::test]
    async fn inbound_streams_wait_for_their_acceptor_and_only_those_beyond_the_queue_are_dropped() {
        let (a, mut incoming, a_control, b_control) = pair().await;
        // B opens more streams than the queue holds while A's acceptor
        // reads none of them.
        let extra = 10;
        let mut held = Vec::new();
        for _ in 0..INBOUND_QUEUED + extra {
            held.push(b_control.open_stream(a, PROTOCOL).await.unwrap());
        }
        for _ in 0..500 {
            if incoming.len() + a_control.dropped_inbound() as usize >= INBOUND_QUEUED + extra {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(incoming.len(), INBOUND_QUEUED);
        assert_eq!(a_control.dropped_inbound(), extra as u64);
        // The acceptor then takes every queued stream.
        for _ in 0..INBOUND_QUEUED {
            let (peer, _stream) = incoming.recv().await.unwrap();
            assert_ne!(peer, a);
        }
    }

    #[tokio::test]
    async fn a_stream_to_a_peer_that_cannot_be_dialled_fails_instead_of_waiting() {
        let (_, _incoming, _, b_control) = pair().await;
        let stranger = PeerId::random();
        let e = b_control.open_stream(stranger, PROTOCOL).await.unwrap_err();
        assert!(matches!(e, OpenError::Unreachable(_)), "{e}");
    }

    #[tokio::test]
    async fn a_stream_that_must_not_dial_fails_at_once_for_a_peer_without_connection() {
        let (a, _incoming, _, b_control) = pair().await;
        let stranger = PeerId::random();
        let e = b_control
            .open_connected(stranger, PROTOCOL)
            .await
            .unwrap_err();
        assert!(matches!(e, OpenError::NotConnected), "{e}");
        assert!(b_control.open_connected(a, PROTOCOL).await.is_ok());
    }

    #[tokio::test]
    async fn a_protocol_the_peer_does_not_offer_is_named_in_the_error() {
        let (a, _incoming, _, b_control) = pair().await;
        let other = StreamProtocol::new("/shoal/other/1");
        let e = b_control.open_stream(a, other.clone()).await.unwrap_err();
        assert!(
            matches!(&e, OpenError::Unsupported(p) if *p == other),
            "{e}"
        );
    }
}
