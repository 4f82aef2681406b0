//! Live channels in the node: the sessions themselves (which shards to ask
//! whom for, when an origin fills in, the window) are
//! `shoal_protocol::live`, inside the node's machine; what they ask of
//! HTTP origins is `origin_client.rs`; here are the gossipsub score
//! parameters of channel topics and the types a gateway shows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::gossipsub;

pub use shoal_protocol::live::{LiveView, RenditionView};
pub use shoal_protocol::machine::MAX_SESSIONS;

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Score parameters for a channel's topics. Announcements come one per
/// segment (every few seconds), too rarely for gossipsub's mesh-delivery
/// penalties (P3, P3b) to tell a slow peer from a silent one, so those are
/// off; an invalid message (P4) costs 100 × count², which puts its sender
/// under the graylist threshold at the first offence.
pub(crate) fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 50.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.9,
        ..gossipsub::TopicScoreParams::default()
    }
}

/// Peer score parameters. Peers on the loopback interface are not counted
/// as colocated: they are processes of this machine (a test swarm, a
/// player's local node), not a Sybil farm behind one address.
pub(crate) fn peer_score_params() -> gossipsub::PeerScoreParams {
    let mut p = gossipsub::PeerScoreParams::default();
    p.ip_colocation_factor_whitelist
        .insert(std::net::Ipv4Addr::LOCALHOST.into());
    p.ip_colocation_factor_whitelist
        .insert(std::net::Ipv6Addr::LOCALHOST.into());
    p
}
