//! The DHT's record store, with room kept for this node's own
//! announcements whatever other peers send.
//!
//! Kademlia keeps two kinds of remote state on a server node: provider
//! records (ADD_PROVIDER, "peer X has key K", for 48 h) and values
//! (PUT_VALUE: here only signed channel records, checked before they are
//! stored). libp2p's `MemoryStore` keeps both under limits shared with the
//! node's own: one peer that sends 1100 ADD_PROVIDERs for random keys
//! fills the 1024 keys and every `add`, watch and broadcast then fails to
//! announce. This store wraps it so that:
//!
//! - **Own records always have room.** The node's own provider records
//!   and values count against [`MAX_OWN_KEYS`] and [`MAX_OWN_RECORDS`]
//!   alone; where a key already lists the most providers a key may list,
//!   a remote one makes way for ours.
//! - **Each remote peer has a quota**: [`PROVIDERS_PER_PEER`] provider
//!   records and [`RECORDS_PER_PEER`] values; beyond, its inserts are
//!   refused. The sender of a provider record is its provider (Kademlia
//!   checks), and a value is counted against the peer that sent it (the
//!   event loop sets its publisher), so a quota binds who sent it.
//! - **All remote peers together** hold at most [`MAX_REMOTE_PROVIDERS`]
//!   provider records and [`MAX_REMOTE_RECORDS`] values: peer ids cost
//!   nothing, so per-peer quotas alone would not bound memory. A sybil
//!   that fills them denies other remote peers' records on this node
//!   until they expire, never the node's own.
//!
//! Counts follow every insert and removal (expiry included: Kademlia
//! removes expired records through this store).

use std::borrow::Cow;
use std::collections::HashMap;

use libp2p::PeerId;
use libp2p::kad::store::{Error, MemoryStore, MemoryStoreConfig, RecordStore, Result};
use libp2p::kad::{K_VALUE, ProviderRecord, Record, RecordKey};

/// Keys this node provides itself: a root per `add` and a key per watched
/// or broadcast channel; 65,536 is far beyond one user's content.
pub const MAX_OWN_KEYS: usize = 65_536;

/// Values this node publishes itself: a channel record per broadcast.
pub const MAX_OWN_RECORDS: usize = 1024;

/// Provider records kept per remote peer. A shoal node provides a root
/// per stream and a key per channel; 1024 is a large library, and an
/// IPFS node that provides more to its closest peers loses nothing but
/// this node's copy.
pub const PROVIDERS_PER_PEER: usize = 1024;

/// Channel records kept per remote peer that sent them: a node relays
/// the records of the channels near it in the key space, a handful each.
pub const RECORDS_PER_PEER: usize = 64;

/// Remote provider records in all (about 200 bytes each with addresses:
/// 6 MiB).
pub const MAX_REMOTE_PROVIDERS: usize = 32_768;

/// Remote channel records in all (at most 64 KiB each, most under 4 KiB).
pub const MAX_REMOTE_RECORDS: usize = 4096;

/// What the store holds and what it refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DhtStat {
    /// Keys this node provides.
    pub own_keys: usize,
    /// Values this node publishes.
    pub own_records: usize,
    /// Provider records of other peers.
    pub remote_providers: usize,
    /// Values other peers sent.
    pub remote_records: usize,
    /// Remote inserts refused over a quota since the start.
    pub refused: u64,
}

/// See the module documentation.
pub struct DhtStore {
    inner: MemoryStore,
    local: PeerId,
    /// Remote provider records per provider.
    providers_of: HashMap<PeerId, usize>,
    remote_providers: usize,
    /// Who sent each remote value, and how many each sent.
    record_from: HashMap<RecordKey, PeerId>,
    records_of: HashMap<PeerId, usize>,
    own_records: usize,
    refused: u64,
}

impl DhtStore {
    pub fn new(local: PeerId) -> DhtStore {
        let config = MemoryStoreConfig {
            max_records: MAX_OWN_RECORDS + MAX_REMOTE_RECORDS,
            max_provided_keys: MAX_OWN_KEYS + MAX_REMOTE_PROVIDERS,
            max_providers_per_key: K_VALUE.get(),
            ..MemoryStoreConfig::default()
        };
        DhtStore {
            inner: MemoryStore::with_config(local, config),
            local,
            providers_of: HashMap::new(),
            remote_providers: 0,
            record_from: HashMap::new(),
            records_of: HashMap::new(),
            own_records: 0,
            refused: 0,
        }
    }

    pub fn stat(&self) -> DhtStat {
        DhtStat {
            own_keys: self.inner.provided().count(),
            own_records: self.own_records,
            remote_providers: self.remote_providers,
            remote_records: self.record_from.len(),
            refused: self.refused,
        }
    }

    fn refuse(&mut self, e: Error) -> Result<()> {
        self.refused += 1;
        Err(e)
    }

    fn forget_remote_provider(&mut self, provider: &PeerId) {
        if let Some(n) = self.providers_of.get_mut(provider) {
            *n -= 1;
            if *n == 0 {
                self.providers_of.remove(provider);
            }
            self.remote_providers -= 1;
        }
    }

    /// Uncounts the value held under `key` (which must be held).
    fn forget_value(&mut self, key: &RecordKey) {
        match self.record_from.remove(key) {
            Some(from) => {
                if let Some(n) = self.records_of.get_mut(&from) {
                    *n -= 1;
                    if *n == 0 {
                        self.records_of.remove(&from);
                    }
                }
            }
            None => self.own_records = self.own_records.saturating_sub(1),
        }
    }
}

impl RecordStore for DhtStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.inner.get(k)
    }

    fn put(&mut self, r: Record) -> Result<()> {
        // `None`: the node's own; a remote value's publisher is its sender.
        let owner = r.publisher.filter(|p| *p != self.local);
        let held = self.inner.get(&r.key).is_some();
        if held && self.record_from.get(&r.key).copied() == owner {
            // A newer value from whoever holds the key: counted already.
            return self.inner.put(r);
        }
        match owner {
            None if self.own_records >= MAX_OWN_RECORDS => return Err(Error::MaxRecords),
            Some(from)
                if self.record_from.len() >= MAX_REMOTE_RECORDS
                    || self.records_of.get(&from).copied().unwrap_or(0) >= RECORDS_PER_PEER =>
            {
                return self.refuse(Error::MaxRecords);
            }
            _ => {}
        }
        let key = r.key.clone();
        self.inner.put(r)?;
        if held {
            self.forget_value(&key);
        }
        match owner {
            Some(from) => {
                self.record_from.insert(key, from);
                *self.records_of.entry(from).or_default() += 1;
            }
            None => self.own_records += 1,
        }
        Ok(())
    }

    fn remove(&mut self, k: &RecordKey) {
        if self.inner.get(k).is_some() {
            self.forget_value(k);
        }
        self.inner.remove(k);
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.inner.records()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        let listed = self.inner.providers(&record.key);
        if listed.iter().any(|p| p.provider == record.provider) {
            // An update of a record already counted.
            return self.inner.add_provider(record);
        }
        if record.provider == self.local {
            if self.inner.provided().count() >= MAX_OWN_KEYS {
                return Err(Error::MaxProvidedKeys);
            }
            if listed.len() >= K_VALUE.get()
                && let Some(remote) = listed.iter().find(|p| p.provider != self.local)
            {
                let (key, provider) = (remote.key.clone(), remote.provider);
                self.remove_provider(&key, &provider);
            }
            return self.inner.add_provider(record);
        }
        let provider = record.provider;
        if self.remote_providers >= MAX_REMOTE_PROVIDERS
            || self.providers_of.get(&provider).copied().unwrap_or(0) >= PROVIDERS_PER_PEER
        {
            return self.refuse(Error::MaxProvidedKeys);
        }
        let key = record.key.clone();
        self.inner.add_provider(record)?;
        // A key that lists the most providers it may ignores one more.
        if self
            .inner
            .providers(&key)
            .iter()
            .any(|p| p.provider == provider)
        {
            *self.providers_of.entry(provider).or_default() += 1;
            self.remote_providers += 1;
        }
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.inner.providers(key)
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.inner.provided()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        let listed = self.inner.providers(k).iter().any(|r| r.provider == *p);
        if listed && *p != self.local {
            self.forget_remote_provider(p);
        }
        self.inner.remove_provider(k, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> RecordKey {
        RecordKey::new(&i.to_be_bytes())
    }

    fn provider(i: u32, who: PeerId) -> ProviderRecord {
        ProviderRecord::new(key(i), who, Vec::new())
    }

    fn value(i: u32, from: Option<PeerId>) -> Record {
        Record {
            key: key(i),
            value: vec![1],
            publisher: from,
            expires: None,
        }
    }

    #[test]
    fn one_peer_cannot_fill_the_store_and_own_records_still_fit() {
        let me = PeerId::random();
        let attacker = PeerId::random();
        let mut s = DhtStore::new(me);
        for i in 0..10_000 {
            let _ = s.add_provider(provider(i, attacker));
            let _ = s.put(value(i, Some(attacker)));
        }
        let stat = s.stat();
        assert_eq!(stat.remote_providers, PROVIDERS_PER_PEER);
        assert_eq!(stat.remote_records, RECORDS_PER_PEER);
        assert_eq!(
            stat.refused as usize,
            20_000 - PROVIDERS_PER_PEER - RECORDS_PER_PEER
        );
        for i in 0..2000 {
            s.add_provider(provider(100_000 + i, me)).unwrap();
        }
        s.put(value(200_000, None)).unwrap();
        assert_eq!(s.stat().own_keys, 2000);
        assert_eq!(s.stat().own_records, 1);
    }

    #[test]
    fn a_full_key_makes_way_for_our_own_record() {
        let me = PeerId::random();
        let mut s = DhtStore::new(me);
        for _ in 0..K_VALUE.get() {
            s.add_provider(provider(1, PeerId::random())).unwrap();
        }
        s.add_provider(provider(1, me)).unwrap();
        let listed = s.providers(&key(1));
        assert_eq!(listed.len(), K_VALUE.get());
        assert!(listed.iter().any(|p| p.provider == me));
        assert_eq!(s.stat().remote_providers, K_VALUE.get() - 1);
    }

    #[test]
    fn counts_follow_removals_and_replacements() {
        let me = PeerId::random();
        let a = PeerId::random();
        let b = PeerId::random();
        let mut s = DhtStore::new(me);
        s.add_provider(provider(1, a)).unwrap();
        s.add_provider(provider(1, a)).unwrap();
        assert_eq!(
            s.stat().remote_providers,
            1,
            "an update is not a new record"
        );
        s.remove_provider(&key(1), &a);
        s.remove_provider(&key(1), &a);
        assert_eq!(s.stat().remote_providers, 0);
        s.put(value(1, Some(a))).unwrap();
        s.put(value(1, Some(b))).unwrap();
        assert_eq!(s.records_of.get(&a), None, "b's value replaced a's");
        assert_eq!(s.records_of.get(&b), Some(&1));
        s.put(value(1, None)).unwrap();
        assert_eq!((s.stat().remote_records, s.stat().own_records), (0, 1));
        s.remove(&key(1));
        s.remove(&key(1));
        assert_eq!((s.stat().remote_records, s.stat().own_records), (0, 0));
    }
}
