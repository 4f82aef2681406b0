//! Connections per remote IP address, and the node's connection limits.
//!
//! Peer ids cost nothing, so a per-peer limit does not stop one host from
//! taking every connection slot with fresh identities (530 dials from one
//! address filled all 512). [`IpLimit`] refuses an inbound connection
//! from an address that already holds its quota; [`connection_limits`]
//! keeps part of the total for the node's own dials, so a crowd of
//! inbound peers never stops it from reaching the peers it chose
//! (providers of a segment, a bootstrap node).
//!
//! Relayed connections (`/p2p-circuit`) come from the relay's address
//! and are not counted against it: the relay bounds its own circuits.
//!
//! While the node is paused ([`IpLimit::set_paused`]) it refuses every
//! connection, both ways.
//!
//! [`in_scope`] judges the addresses a peer gives for itself (identify,
//! its provider records) before Kademlia keeps or dials them: a peer that
//! reached this node from the Internet may not point it at loopback,
//! private or link-local addresses (which would make the node probe its
//! own network for whoever asks); a peer on the same LAN or machine may.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::connection_limits::ConnectionLimits;
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Inbound connections held from one IP address by default: a household
/// behind one NAT with a few devices watching, or a few nodes on one
/// server; not a crowd.
pub const DEFAULT_PER_IP: u32 = 8;

/// Inbound handshakes in progress at once: each costs a socket and a noise
/// handshake before its peer is known.
const MAX_PENDING_INBOUND: u32 = 64;

/// The node's connection limits: `total` in all, at most `per_peer` with
/// one peer, and an eighth of `total` that inbound connections cannot
/// take, kept for the node's own dials.
pub fn connection_limits(total: u32, per_peer: u32) -> ConnectionLimits {
    ConnectionLimits::default()
        .with_max_established(Some(total))
        .with_max_established_incoming(Some(total - total / 8))
        .with_max_established_per_peer(Some(per_peer))
        .with_max_pending_incoming(Some(MAX_PENDING_INBOUND))
}

/// Whether `ip` is an address on the public Internet: not loopback,
/// private, link-local, shared (CGNAT), unspecified, multicast or
/// documentation space (IPv4 inside IPv6 judged as IPv4).
pub fn is_public_ip(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_ip(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] == 0x2001 && seg[1] == 0x0db8))
        }
    }
}

/// Whether `addr`, given by a peer connected from `from`, may be kept and
/// dialled: a public address, a name, a private or link-local address of
/// a peer that is itself on a private network with this node, and a
/// loopback address only of a peer on this machine. (A LAN peer's
/// `127.0.0.1:4101` is this node's own port when both use the default:
/// dialling it reaches this node itself.)
pub fn in_scope(addr: &Multiaddr, from: Option<IpAddr>) -> bool {
    let loopback = |ip: IpAddr| ip.to_canonical().is_loopback();
    match direct_ip(addr) {
        Some(ip) if is_public_ip(ip) => true,
        Some(ip) if loopback(ip) => from.is_some_and(loopback),
        Some(_) => from.is_some_and(|f| !is_public_ip(f)),
        None => true,
    }
}

/// The IP address a connection comes from, unless it is relayed.
pub(crate) fn direct_ip(addr: &Multiaddr) -> Option<IpAddr> {
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return None;
    }
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// See the module documentation.
pub struct IpLimit {
    /// `None`: no limit.
    per_ip: Option<u32>,
    inbound: HashMap<IpAddr, HashSet<ConnectionId>>,
    by_connection: HashMap<ConnectionId, IpAddr>,
    paused: bool,
}

impl IpLimit {
    pub fn new(per_ip: Option<u32>) -> IpLimit {
        IpLimit {
            per_ip,
            inbound: HashMap::new(),
            by_connection: HashMap::new(),
            paused: false,
        }
    }

    /// While paused (an app in the background), every connection is
    /// refused, inbound and outbound, so that the node holds none.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    fn open(&self) -> Result<(), ConnectionDenied> {
        if self.paused {
            return Err(ConnectionDenied::new(Paused));
        }
        Ok(())
    }
}

/// Why a connection was refused while the node is paused.
#[derive(Debug, thiserror::Error)]
#[error("the node is paused")]
pub struct Paused;

/// Why an inbound connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("{ip} already holds {limit} inbound connections")]
pub struct TooManyFromIp {
    pub ip: IpAddr,
    pub limit: u32,
}

impl NetworkBehaviour for IpLimit {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.open()?;
        let Some(ip) = direct_ip(remote_addr) else {
            return Ok(dummy::ConnectionHandler);
        };
        let held = self.inbound.entry(ip).or_default();
        if let Some(limit) = self.per_ip
            && held.len() >= limit as usize
        {
            return Err(ConnectionDenied::new(TooManyFromIp { ip, limit }));
        }
        held.insert(connection_id);
        self.by_connection.insert(connection_id, ip);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.open()?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.open()
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.open()?;
        Ok(Vec::new())
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) = event
            && let Some(ip) = self.by_connection.remove(&connection_id)
            && let Some(held) = self.inbound.get_mut(&ip)
        {
            held.remove(&connection_id);
            if held.is_empty() {
                self.inbound.remove(&ip);
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_point_only_at_addresses_of_their_own_scope() {
        let lan: Multiaddr = "/ip4/192.168.1.5/tcp/4101".parse().unwrap();
        let public: Multiaddr = "/ip4/8.8.8.8/tcp/4101".parse().unwrap();
        let from_internet = Some("1.1.1.1".parse().unwrap());
        let from_lan = Some("192.168.1.9".parse().unwrap());
        assert!(!in_scope(&lan, from_internet));
        assert!(!in_scope(&lan, None));
        assert!(in_scope(&lan, from_lan));
        assert!(in_scope(&public, from_internet));
        let own: Multiaddr = "/ip4/127.0.0.1/tcp/4101".parse().unwrap();
        assert!(in_scope(&own, Some("127.0.0.1".parse().unwrap())));
        // A LAN peer's loopback is this node's own.
        assert!(!in_scope(&own, from_lan));
        assert!(!in_scope(&"/ip6/::1/tcp/4101".parse().unwrap(), from_lan));
    }

    #[test]
    fn only_internet_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:192.168.1.1",
        ] {
            assert!(!is_public_ip(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public_ip(public.parse().unwrap()), "{public}");
        }
    }
}
