//! A bare libp2p peer that speaks raw streams the way an attacker's would:
//! it sends whatever bytes it is given and reads nothing it is sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use shoal_node::libp2p::{self, Multiaddr, PeerId, Stream, StreamProtocol, noise, tcp, yamux};

/// A swarm of a fresh identity that speaks raw streams over TCP and
/// nothing else: what a hostile peer is built on.
pub fn stream_swarm() -> libp2p::Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

/// A peer connected to one node. Streams the node opens to it on the
/// protocols it accepts are held open and never read.
pub struct RawPeer {
    pub peer: PeerId,
    control: libp2p_stream::Control,
    connected: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawPeer {
    /// Dials `addr` (with its `/p2p/` part) and waits, at most ten seconds,
    /// for the connection. `accept`: protocols whose inbound streams are
    /// taken and left unread.
    pub async fn connect(addr: &Multiaddr, accept: &[&'static str]) -> RawPeer {
        let (peer, up) = RawPeer::dial(addr, accept);
        tokio::time::timeout(Duration::from_secs(10), up)
            .await
            .expect("the raw peer connected within ten seconds")
            .unwrap();
        peer
    }

    /// Dials `addr` and returns at once, with a signal for the first time
    /// the connection is up (which it may never be).
    pub fn dial(
        addr: &Multiaddr,
        accept: &[&'static str],
    ) -> (RawPeer, tokio::sync::oneshot::Receiver<()>) {
        let mut swarm = stream_swarm();
        let peer = *swarm.local_peer_id();
        let mut control = swarm.behaviour().new_control();
        let mut held = Vec::new();
        for p in accept {
            let mut incoming = control.accept(StreamProtocol::new(p)).unwrap();
            held.push(tokio::spawn(async move {
                let mut unread: Vec<Stream> = Vec::new();
                while let Some((_, stream)) = incoming.next().await {
                    unread.push(stream);
                }
            }));
        }
        swarm.dial(addr.clone()).unwrap();
        let connected = Arc::new(AtomicBool::new(false));
        let (up_tx, up) = tokio::sync::oneshot::channel();
        let flag = connected.clone();
        let task = tokio::spawn(async move {
            let _held = AbortOnDrop(held);
            let mut up_tx = Some(up_tx);
            loop {
                match swarm.select_next_some().await {
                    libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } => {
                        flag.store(true, Ordering::SeqCst);
                        if let Some(tx) = up_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    libp2p::swarm::SwarmEvent::ConnectionClosed {
                        num_established: 0, ..
                    } => flag.store(false, Ordering::SeqCst),
                    _ => {}
                }
            }
        });
        (
            RawPeer {
                peer,
                control,
                connected,
                task,
            },
            up,
        )
    }

    /// Opens a stream to `peer` on `protocol`.
    pub async fn open(&mut self, peer: PeerId, protocol: &'static str) -> Stream {
        self.control
            .open_stream(peer, StreamProtocol::new(protocol))
            .await
            .expect("the node accepts the protocol")
    }

    /// Whether the connection is still up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A process's resident memory now and at its peak, in bytes, from
/// `/proc/<pid>/status`.
pub fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets a process's peak resident memory to its current size (Linux's
/// `clear_refs` 5), so that [`memory`] measures the peak from now on.
pub fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}
