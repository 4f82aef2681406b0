//! The DHT as a viewer meets it: provider records and the time a lookup
//! takes.
//!
//! What it keeps, and why: a Kademlia node keeps at most
//! [`K_VALUE`] providers per key, and when a closer one arrives it drops
//! the farthest (rust-libp2p's `MemoryStore`, which the node's `DhtStore`
//! wraps with that limit). Every record holder of a key hears the same
//! ADD_PROVIDERs, so a lookup finds the [`K_VALUE`] providers closest to
//! the key — the same few for every viewer of a channel, however large
//! the audience, and departed viewers among them until their records
//! expire (hours, longer than any run). A lookup takes a few hops, each a
//! connection and a request to a peer at a random distance.
//!
//! What it leaves out: the routing table's own connections (a lookup's
//! peers are not kept as gossip or Bitswap peers here), records expiring
//! and being republished, and lookups that fail.

use std::collections::HashMap;
use std::time::Duration;

use super::Rng;

/// Providers a DHT node keeps per key (Kademlia's k).
pub const K_VALUE: usize = 20;

/// Provider records, key by key.
#[derive(Default)]
pub struct Dht {
    /// Per key: (distance to the key, provider), closest first, at most
    /// [`K_VALUE`].
    providers: HashMap<Vec<u8>, Vec<(u64, usize)>>,
}

/// A stand-in for the XOR distance between a node's id and a key: the
/// same for the same pair, uniform over pairs.
fn distance(node_id: u64, key: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in key {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut r = Rng(h ^ node_id);
    r.next_u64()
}

impl Dht {
    /// `node` (whose DHT id is `node_id`) provides `key`.
    pub fn provide(&mut self, key: &[u8], node: usize, node_id: u64) {
        let list = self.providers.entry(key.to_vec()).or_default();
        if list.iter().any(|(_, p)| *p == node) {
            return;
        }
        let d = distance(node_id, key);
        let at = list.partition_point(|(other, _)| *other < d);
        if at < K_VALUE {
            list.insert(at, (d, node));
            list.truncate(K_VALUE);
        }
    }

    /// What a lookup of `key` finds.
    pub fn providers(&self, key: &[u8]) -> Vec<usize> {
        self.providers
            .get(key)
            .map(|l| l.iter().map(|(_, p)| *p).collect())
            .unwrap_or_default()
    }
}

/// How long a lookup takes in a network of `nodes`: one hop per four bits
/// of the network's size (Kademlia with α = 3 parallel requests gets
/// about that close per round), plus one; each hop a connection set-up
/// and a request, three round trips over a link of `latency` (one way).
pub fn lookup_time(nodes: usize, latency: (Duration, Duration), rng: &mut Rng) -> Duration {
    let bits = usize::BITS - nodes.max(2).leading_zeros();
    let hops = 1 + bits.div_ceil(4);
    (0..hops)
        .map(|_| rng.between(latency.0, latency.1) * 6)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_keeps_its_twenty_closest_providers_whoever_came_first() {
        let mut dht = Dht::default();
        let key = b"channel";
        for node in 0..1000 {
            dht.provide(key, node, node as u64 * 7919);
        }
        let found = dht.providers(key);
        assert_eq!(found.len(), K_VALUE);
        let mut all: Vec<(u64, usize)> = (0..1000)
            .map(|n| (distance(n as u64 * 7919, key), n))
            .collect();
        all.sort();
        let closest: Vec<usize> = all.iter().take(K_VALUE).map(|(_, n)| *n).collect();
        assert_eq!(found, closest);
        dht.provide(key, found[0], found[0] as u64 * 7919);
        assert_eq!(
            dht.providers(key),
            closest,
            "providing again changes nothing"
        );
    }

    #[test]
    fn lookups_take_more_hops_in_larger_networks() {
        let l = (Duration::from_millis(10), Duration::from_millis(10));
        let mut rng = Rng(1);
        assert_eq!(lookup_time(100, l, &mut rng), Duration::from_millis(180));
        assert_eq!(lookup_time(10_000, l, &mut rng), Duration::from_millis(300));
    }
}
