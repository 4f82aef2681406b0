//! Gossipsub's mesh for the channel's topic at one node, kept the way
//! rust-libp2p keeps it with the defaults the node runs (the node sets
//! only `flood_publish`, validation and message ids): a mesh held
//! between [`MESH_N_LOW`] and [`MESH_N_HIGH`] peers by a heartbeat every
//! second, GRAFT and PRUNE with a minute's backoff after a prune, and
//! lazy gossip — IHAVE for the messages of the last three heartbeats to
//! peers outside the mesh, who ask with IWANT for the ones they have not
//! seen.
//!
//! What it leaves out: peer scores (an honest swarm keeps every score at
//! zero or above), opportunistic grafting (it acts on median scores, all
//! equal here), outbound-peer quotas in the mesh, flood publishing, peer
//! exchange (off by default), and the cap on IHAVE messages per peer per
//! heartbeat (a live channel has a message or two per heartbeat).
//!
//! A node that publishes without subscribing (the broadcaster) keeps
//! fanout peers instead of a mesh: [`Topic::mesh`] holds them, refilled
//! to [`MESH_N`] at each heartbeat; it answers a GRAFT with a PRUNE.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use super::Rng;

/// Mesh degree (rust-libp2p's `mesh_n`).
pub const MESH_N: usize = 6;
/// Below this a heartbeat grafts up to [`MESH_N`] (`mesh_n_low`).
pub const MESH_N_LOW: usize = 5;
/// Above this a heartbeat prunes down to [`MESH_N`] (`mesh_n_high`).
pub const MESH_N_HIGH: usize = 12;
/// Peers outside the mesh sent IHAVE at each heartbeat, at least
/// (`gossip_lazy`)...
pub const GOSSIP_LAZY: usize = 6;
/// ...or this share of them, if more (`gossip_factor`).
pub const GOSSIP_FACTOR: f64 = 0.25;
/// Heartbeats whose messages IHAVE lists (`history_gossip`).
pub const HISTORY_GOSSIP: usize = 3;
/// Heartbeats whose messages are kept to answer IWANT (`history_length`).
pub const HISTORY_LENGTH: usize = 5;
/// The heartbeat (`heartbeat_interval`).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// The first heartbeat after the node starts (`heartbeat_initial_delay`).
pub const HEARTBEAT_INITIAL_DELAY: Duration = Duration::from_secs(5);
/// How long a pruned peer is not grafted again (`prune_backoff`).
pub const PRUNE_BACKOFF: Duration = Duration::from_secs(60);

/// A gossip message's id (the node's: the SHA-256 of its data).
pub type MsgId = [u8; 32];

/// A gossipsub control message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    Graft,
    Prune,
    IHave(Vec<MsgId>),
    IWant(Vec<MsgId>),
}

impl Control {
    /// Bytes on the wire, about: the RPC frame, the topic, and an id per
    /// message named.
    pub fn wire_bytes(&self) -> usize {
        let ids = match self {
            Control::Graft | Control::Prune => 0,
            Control::IHave(ids) | Control::IWant(ids) => ids.len(),
        };
        64 + 34 * ids
    }
}

/// The topic as one node sees it.
pub struct Topic {
    /// The node is subscribed (a viewer); otherwise it only publishes.
    subscribed: bool,
    /// The mesh, or the fanout of a node that is not subscribed.
    pub mesh: Vec<usize>,
    /// Connected peers known to be subscribed.
    peers: BTreeSet<usize>,
    /// Peers not to be grafted before the given time.
    backoff: HashMap<usize, Duration>,
    /// Ids of the messages seen, one entry per heartbeat, newest first.
    history: VecDeque<Vec<MsgId>>,
    /// Ids already asked for with IWANT.
    asked: HashSet<MsgId>,
}

impl Topic {
    pub fn new(subscribed: bool) -> Topic {
        Topic {
            subscribed,
            mesh: Vec::new(),
            peers: BTreeSet::new(),
            backoff: HashMap::new(),
            history: VecDeque::from([Vec::new()]),
            asked: HashSet::new(),
        }
    }

    /// `peer` told us it is subscribed. A mesh short of [`MESH_N_LOW`]
    /// takes it at once and grafts it (rust-libp2p does this on the
    /// subscription, not at the next heartbeat).
    pub fn peer_subscribed(&mut self, peer: usize, now: Duration) -> Option<Control> {
        if !self.peers.insert(peer) || !self.subscribed {
            return None;
        }
        if self.mesh.len() < MESH_N_LOW && !self.backed_off(peer, now) {
            self.mesh.push(peer);
            return Some(Control::Graft);
        }
        None
    }

    /// `peer` is subscribed, known from the start (the idealised swarm,
    /// whose mesh is drawn apart).
    pub fn know_subscribed(&mut self, peer: usize) {
        self.peers.insert(peer);
    }

    /// A publisher without a mesh picks its fanout when it publishes.
    pub fn fill_fanout(&mut self, rng: &mut Rng) {
        if self.subscribed {
            return;
        }
        let mut candidates = self.outside_mesh();
        while self.mesh.len() < MESH_N && !candidates.is_empty() {
            self.mesh
                .push(candidates.swap_remove(rng.below(candidates.len())));
        }
    }

    /// `peer`'s connection closed.
    pub fn peer_gone(&mut self, peer: usize) {
        self.peers.remove(&peer);
        self.mesh.retain(|p| *p != peer);
    }

    /// `peer` grafted us: taken unless we publish only, it is backed off,
    /// or the mesh is full; otherwise pruned back.
    pub fn handle_graft(&mut self, peer: usize, now: Duration) -> Option<Control> {
        if self.mesh.contains(&peer) {
            return None;
        }
        if !self.subscribed || self.backed_off(peer, now) || self.mesh.len() >= MESH_N_HIGH {
            self.backoff.insert(peer, now + PRUNE_BACKOFF);
            return Some(Control::Prune);
        }
        self.peers.insert(peer);
        self.mesh.push(peer);
        None
    }

    /// `peer` pruned us: out of the mesh, and not grafted again for the
    /// backoff.
    pub fn handle_prune(&mut self, peer: usize, now: Duration) {
        self.mesh.retain(|p| *p != peer);
        self.backoff.insert(peer, now + PRUNE_BACKOFF);
    }

    /// `peer` has these messages: ask for the ones neither seen nor
    /// already asked for.
    pub fn handle_ihave(
        &mut self,
        ids: &[MsgId],
        seen: impl Fn(&MsgId) -> bool,
    ) -> Option<Control> {
        let want: Vec<MsgId> = ids
            .iter()
            .filter(|id| !seen(id) && self.asked.insert(**id))
            .copied()
            .collect();
        (!want.is_empty()).then_some(Control::IWant(want))
    }

    /// Of `ids`, the ones still kept to answer an IWANT.
    pub fn kept(&self, ids: &[MsgId]) -> Vec<MsgId> {
        ids.iter()
            .filter(|id| self.history.iter().any(|h| h.contains(id)))
            .copied()
            .collect()
    }

    /// A message this node accepted (or published) enters its history.
    pub fn seen_message(&mut self, id: MsgId) {
        if let Some(h) = self.history.front_mut() {
            h.push(id);
        }
    }

    /// The heartbeat: the mesh (or fanout) topped up or trimmed, and
    /// IHAVE to peers outside it. Returns what to send to whom.
    pub fn heartbeat(&mut self, now: Duration, rng: &mut Rng) -> Vec<(usize, Control)> {
        let mut out = Vec::new();
        self.backoff.retain(|_, until| *until > now);
        let low = if self.subscribed { MESH_N_LOW } else { MESH_N };
        if self.mesh.len() < low {
            let mut candidates: Vec<usize> = self
                .outside_mesh()
                .into_iter()
                .filter(|p| !self.backoff.contains_key(p))
                .collect();
            while self.mesh.len() < MESH_N && !candidates.is_empty() {
                let peer = candidates.swap_remove(rng.below(candidates.len()));
                self.mesh.push(peer);
                if self.subscribed {
                    out.push((peer, Control::Graft));
                }
            }
        }
        if self.subscribed && self.mesh.len() > MESH_N_HIGH {
            while self.mesh.len() > MESH_N {
                let peer = self.mesh.swap_remove(rng.below(self.mesh.len()));
                self.backoff.insert(peer, now + PRUNE_BACKOFF);
                out.push((peer, Control::Prune));
            }
        }
        let ids: Vec<MsgId> = self
            .history
            .iter()
            .take(HISTORY_GOSSIP)
            .flatten()
            .copied()
            .collect();
        if !ids.is_empty() {
            let mut others = self.outside_mesh();
            let n = GOSSIP_LAZY.max((others.len() as f64 * GOSSIP_FACTOR) as usize);
            for _ in 0..n.min(others.len()) {
                let peer = others.swap_remove(rng.below(others.len()));
                out.push((peer, Control::IHave(ids.clone())));
            }
        }
        self.history.push_front(Vec::new());
        self.history.truncate(HISTORY_LENGTH);
        out
    }

    /// Subscribed peers not in the mesh.
    fn outside_mesh(&self) -> Vec<usize> {
        self.peers
            .iter()
            .filter(|p| !self.mesh.contains(p))
            .copied()
            .collect()
    }

    fn backed_off(&self, peer: usize, now: Duration) -> bool {
        self.backoff.get(&peer).is_some_and(|until| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn a_subscription_fills_a_short_mesh_and_a_heartbeat_trims_an_overfull_one() {
        let mut t = Topic::new(true);
        for p in 0..MESH_N_LOW {
            assert_eq!(t.peer_subscribed(p, T), Some(Control::Graft));
        }
        assert_eq!(t.peer_subscribed(99, T), None, "a mesh at mesh_n_low");
        for p in 100..100 + MESH_N_HIGH {
            let _ = t.handle_graft(p, T);
        }
        assert_eq!(t.mesh.len(), MESH_N_HIGH, "grafts taken up to mesh_n_high");
        assert_eq!(t.handle_graft(500, T), Some(Control::Prune));
        let mut rng = Rng(1);
        t.mesh.push(501);
        let out = t.heartbeat(T, &mut rng);
        assert_eq!(t.mesh.len(), MESH_N);
        let pruned = out.iter().filter(|(_, c)| *c == Control::Prune).count();
        assert_eq!(pruned, MESH_N_HIGH + 1 - MESH_N);
    }

    #[test]
    fn a_pruned_peer_is_not_grafted_again_within_the_backoff() {
        let mut t = Topic::new(true);
        let _ = t.peer_subscribed(7, T);
        t.handle_prune(7, T);
        let mut rng = Rng(1);
        assert!(t.heartbeat(T + Duration::from_secs(1), &mut rng).is_empty());
        assert!(t.mesh.is_empty());
        let later = t.heartbeat(T + PRUNE_BACKOFF + Duration::from_secs(1), &mut rng);
        assert_eq!(later, vec![(7, Control::Graft)]);
    }

    #[test]
    fn ihave_lists_three_heartbeats_and_iwant_asks_once() {
        let mut t = Topic::new(true);
        let mut rng = Rng(1);
        for p in 0..20 {
            let _ = t.peer_subscribed(p, T);
        }
        t.seen_message([1; 32]);
        let out = t.heartbeat(T, &mut rng);
        let ihaves = out
            .iter()
            .filter(|(_, c)| matches!(c, Control::IHave(ids) if ids == &vec![[1; 32]]))
            .count();
        assert_eq!(
            ihaves, GOSSIP_LAZY,
            "15 peers outside the mesh, a quarter < 6"
        );
        for _ in 0..HISTORY_GOSSIP - 1 {
            assert!(!t.heartbeat(T, &mut rng).is_empty());
        }
        assert!(
            t.heartbeat(T, &mut rng).is_empty(),
            "gossiped for 3 heartbeats"
        );
        assert_eq!(t.kept(&[[1; 32]]), vec![[1; 32]], "kept for 5");
        let mut other = Topic::new(true);
        let want = other.handle_ihave(&[[1; 32], [2; 32]], |id| *id == [2; 32]);
        assert_eq!(want, Some(Control::IWant(vec![[1; 32]])));
        assert_eq!(other.handle_ihave(&[[1; 32]], |_| false), None);
    }

    #[test]
    fn a_publisher_keeps_fanout_and_refuses_grafts() {
        let mut t = Topic::new(false);
        for p in 0..10 {
            assert_eq!(t.peer_subscribed(p, T), None);
        }
        assert_eq!(t.handle_graft(3, T), Some(Control::Prune));
        let out = t.heartbeat(T, &mut Rng(1));
        assert_eq!(t.mesh.len(), MESH_N);
        assert!(out.iter().all(|(_, c)| !matches!(c, Control::Graft)));
    }
}
