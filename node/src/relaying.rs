//! Relays: when this node is behind NAT it reserves a slot on relays it
//! meets, so that others can reach it through them (and DCUtR can then
//! punch a direct path); a node with `[node] relay = true` serves as one.
//!
//! - **Behind NAT** means a peer saw this node at an address it does not
//!   listen on (identify's observed address): its router translated it.
//!   A node on a public address, or on the same LAN as its peers, sees its
//!   own address reflected and reserves nothing. This is simpler than
//!   AutoNAT's dial-backs, which need peers on public addresses to ask
//!   (and so cannot tell anything on a private network), and it errs the
//!   safe way: a node behind a router with a port forward reserves slots
//!   it did not need.
//! - **Relays** are peers whose identify lists the circuit relay v2 hop
//!   protocol, reached over a direct connection. At most [`MAX_RELAYS`]
//!   are held at once; a reservation that ends (the relay went, or
//!   refused) frees its place for the next relay identify reports.
//! - **A relay's limits** (see [`server_config`]) let a live stream cross
//!   it until DCUtR finds a direct path, and no longer than that stream
//!   needs; libp2p's defaults (2 minutes, 128 KiB per circuit) would cut a
//!   stream within a second.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol, relay};

/// Relays a node behind NAT holds slots on at once: one to be reachable,
/// a second so that losing one does not make it unreachable.
pub const MAX_RELAYS: usize = 2;

/// Circuits a relay carries at once: each is one pair of viewers talking
/// through it until DCUtR joins them directly.
const MAX_CIRCUITS: usize = 64;

/// Circuits between one pair of peers' side at once.
const MAX_CIRCUITS_PER_PEER: usize = 8;

/// How long one circuit may last: a viewer pair whose NATs defeat hole
/// punching watches through the relay for a whole programme.
const MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(3600);

/// Bytes one circuit may carry, both ways: an hour of a 2 Mb/s stream.
const MAX_CIRCUIT_BYTES: u64 = 900 << 20;

/// The circuit relay v2 hop protocol (what a relay's identify lists).
const HOP: StreamProtocol = relay::HOP_PROTOCOL_NAME;

/// The relay server's settings.
pub(crate) fn server_config() -> relay::Config {
    relay::Config {
        max_circuits: MAX_CIRCUITS,
        max_circuits_per_peer: MAX_CIRCUITS_PER_PEER,
        max_circuit_duration: MAX_CIRCUIT_DURATION,
        max_circuit_bytes: MAX_CIRCUIT_BYTES,
        ..relay::Config::default()
    }
}

/// What the node knows about relays and its own reachability.
#[derive(Default)]
pub(crate) struct Relaying {
    /// The IP addresses this node listens on.
    listen_ips: HashSet<IpAddr>,
    /// The address a peer saw this node at, when it is not one of ours.
    behind_nat: Option<Multiaddr>,
    /// Peers offering a relay, with the address of our direct connection.
    relays: BTreeMap<PeerId, Multiaddr>,
    /// Reservations asked for or held, by the listener that holds them.
    reservations: HashMap<ListenerId, PeerId>,
}

impl Relaying {
    /// The node listens on `addr`.
    pub(crate) fn listening(&mut self, addr: &Multiaddr) {
        if let Some(ip) = crate::ip_limit::direct_ip(addr) {
            self.listen_ips.insert(ip);
        }
    }

    /// Whether a peer has seen this node behind address translation.
    #[cfg(test)]
    fn behind_nat(&self) -> bool {
        self.behind_nat.is_some()
    }

    /// What identify told about `peer`, reached at `remote` (its direct
    /// connection's address, `None` if relayed): the address it saw us
    /// at, and whether it relays.
    pub(crate) fn identified(
        &mut self,
        peer: PeerId,
        remote: Option<&Multiaddr>,
        observed: &Multiaddr,
        protocols: &[StreamProtocol],
    ) {
        if let Some(ip) = crate::ip_limit::direct_ip(observed)
            && !ip.to_canonical().is_loopback()
            && !self.listen_ips.is_empty()
            && !self.listen_ips.contains(&ip)
            && self.behind_nat.is_none()
        {
            tracing::info!(%observed, "behind NAT: a peer sees this node at an address it does not listen on");
            self.behind_nat = Some(observed.clone());
        }
        if let Some(remote) = remote
            && protocols.contains(&HOP)
        {
            // Where it was dialled, without the peer id a dial address
            // may end in: the circuit address adds it.
            let mut at = remote.clone();
            if matches!(at.iter().last(), Some(Protocol::P2p(_))) {
                at.pop();
            }
            self.relays.insert(peer, at);
        }
    }

    /// `peer` is gone.
    pub(crate) fn disconnected(&mut self, peer: &PeerId) {
        self.relays.remove(peer);
    }

    /// Relayed addresses to listen on now: a reservation on each relay
    /// known and not yet used, while behind NAT and under [`MAX_RELAYS`].
    pub(crate) fn wanted(&self) -> Vec<(PeerId, Multiaddr)> {
        if self.behind_nat.is_none() {
            return Vec::new();
        }
        let held: HashSet<&PeerId> = self.reservations.values().collect();
        self.relays
            .iter()
            .filter(|(p, _)| !held.contains(p))
            .take(MAX_RELAYS.saturating_sub(self.reservations.len()))
            .map(|(p, addr)| {
                let circuit = addr
                    .clone()
                    .with(Protocol::P2p(*p))
                    .with(Protocol::P2pCircuit);
                (*p, circuit)
            })
            .collect()
    }

    /// A reservation on `relay` is asked for through `listener`.
    pub(crate) fn reserving(&mut self, listener: ListenerId, relay: PeerId) {
        self.reservations.insert(listener, relay);
    }

    /// A listener closed; if it held a reservation, its relay is dropped
    /// (identify reports it again if it still relays).
    pub(crate) fn closed(&mut self, listener: ListenerId) {
        if let Some(relay) = self.reservations.remove(&listener) {
            self.relays.remove(&relay);
            tracing::info!(%relay, "a relay reservation ended");
        }
    }

    /// Relays with a reservation asked for or held.
    #[cfg(test)]
    fn reserved(&self) -> Vec<PeerId> {
        self.reservations.values().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_node_seen_at_another_address_reserves_on_relays_it_meets() {
        let mut r = Relaying::default();
        r.listening(&addr("/ip4/192.168.1.5/tcp/4101"));
        let relay = PeerId::random();
        let other = PeerId::random();
        let at = addr("/ip4/198.51.100.7/tcp/4101");
        let dialled = at.clone().with(Protocol::P2p(relay));
        // Not behind NAT yet: nothing to reserve.
        r.identified(
            relay,
            Some(&dialled),
            &addr("/ip4/192.168.1.5/tcp/4101"),
            &[HOP],
        );
        assert!(!r.behind_nat() && r.wanted().is_empty());
        // A peer saw us at our router's address.
        r.identified(other, None, &addr("/ip4/203.0.113.9/tcp/4101"), &[]);
        assert!(r.behind_nat());
        let wanted = r.wanted();
        assert_eq!(wanted.len(), 1);
        assert_eq!(wanted[0].0, relay);
        assert_eq!(
            wanted[0].1,
            at.clone()
                .with(Protocol::P2p(relay))
                .with(Protocol::P2pCircuit)
        );
        let listener = ListenerId::next();
        r.reserving(listener, relay);
        assert!(r.wanted().is_empty(), "one reservation per relay");
        // The reservation ends: the relay must be reported again.
        r.closed(listener);
        assert!(r.wanted().is_empty() && r.reserved().is_empty());
    }

    #[test]
    fn a_node_seen_at_its_own_address_reserves_nothing_and_relays_are_capped() {
        let mut r = Relaying::default();
        r.listening(&addr("/ip4/198.51.100.2/tcp/4101"));
        for _ in 0..5 {
            let at = addr("/ip4/198.51.100.7/tcp/4101");
            r.identified(
                PeerId::random(),
                Some(&at),
                &addr("/ip4/198.51.100.2/tcp/4101"),
                &[HOP],
            );
        }
        assert!(!r.behind_nat() && r.wanted().is_empty());
        r.identified(
            PeerId::random(),
            None,
            &addr("/ip4/203.0.113.9/tcp/1234"),
            &[],
        );
        assert_eq!(r.wanted().len(), MAX_RELAYS);
        // A relayed connection is no way to reach a relay.
        let mut r = Relaying::default();
        r.listening(&addr("/ip4/192.168.1.5/tcp/4101"));
        r.identified(
            PeerId::random(),
            None,
            &addr("/ip4/203.0.113.9/tcp/1"),
            &[HOP],
        );
        assert!(r.behind_nat() && r.wanted().is_empty());
    }
}
