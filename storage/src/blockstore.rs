//! The blockstore: every block of a repo in one redb database.
//!
//! A block is written in a redb transaction together with its bookkeeping, so
//! after a crash (even SIGKILL half-way through an import) the database holds
//! exactly the blocks of the transactions that committed, each complete and
//! verified when it went in. Blocks are verified again when they are read: a
//! block whose bytes no longer match its CID is reported, never returned.
//!
//! Space is bounded by an optional byte quota. When a write would pass it, the
//! least recently used blocks that no pin protects are evicted first; blocks of
//! an import still in progress are protected too (see [`Staging`]).
//!
//! Pins are recursive: pinning a stream root protects its manifests and every
//! shard below them. A reference count per block lets streams share blocks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use shoal_protocol::block::{self, Block, BlockError, Cid};
use shoal_protocol::manifest::{self, ManifestError};
use xxhash_rust::xxh3::xxh3_64;

/// Block bytes by (CID, chunk number). See [`CHUNK_BYTES`].
const BLOCKS: TableDefinition<(&[u8], u32), &[u8]> = TableDefinition::new("block_chunks");
/// Per block: (size in bytes, last-use stamp).
const META: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("block_meta");
/// Last-use stamp to CID: the eviction order, oldest first.
const LRU: TableDefinition<u64, &[u8]> = TableDefinition::new("lru");
/// Recursively pinned roots.
const PINS: TableDefinition<&[u8], ()> = TableDefinition::new("pins");
/// Per block: how many pinned roots reach it.
const PIN_REFS: TableDefinition<&[u8], u64> = TableDefinition::new("pin_refs");
/// Per block: the xxh3-64 checksum of its bytes, taken when it was stored.
/// Reads check it instead of recomputing the CID's SHA-256 (see
/// [`Blockstore::get`]). Stores made before this table existed lack it, and
/// their blocks are checked against their CIDs.
const SUMS: TableDefinition<&[u8], u64> = TableDefinition::new("block_sums");
/// Totals kept in step with the tables.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// A receipt as the store keeps it (its encoding is the caller's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldReceipt {
    pub key: Vec<u8>,
    pub receipt: Vec<u8>,
    /// What of it was claimed on chain.
    pub claimed: u64,
}

/// Signed receipts this node holds as a relayer, the latest per key, and
/// how much of each was claimed on chain (opaque to the store).
const RECEIPTS: TableDefinition<&[u8], (&[u8], u64)> = TableDefinition::new("receipts");

const BYTES: &str = "bytes";
const CLOCK: &str = "clock";
const FORMAT: &str = "format";
/// Layout version of the tables above.
const FORMAT_VERSION: u64 = 1;

/// Blocks are stored in chunks of this many bytes. redb gives a value larger
/// than a page a leaf of its own, sized to the next power of two: a 410 KiB
/// shard stored whole takes a 512 KiB leaf. Chunks just under a power of two
/// (leaving room for the leaf header and key) waste almost nothing; only a
/// block's last chunk is rounded up.
pub const CHUNK_BYTES: usize = (64 << 10) - 256;

/// redb's page cache. Its default (1 GiB) is sized for servers; the blocks
/// shoal reads are verified and handed on once, so a small cache costs little
/// and keeps a phone's memory free.
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;

/// Reads waiting to move their blocks to the young end of the eviction order.
/// They are applied with the next write; past this many the oldest are
/// dropped, which only makes eviction slightly less exact.
const MAX_PENDING_TOUCHES: usize = 4096;

/// Options for opening a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Most bytes of blocks to keep; `None` for no limit.
    pub quota: Option<u64>,
    /// redb cache size in bytes.
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            quota: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} is in use by another shoal process")]
    Locked { path: PathBuf },
    #[error("repo database {path} is damaged: {detail}")]
    Damaged { path: PathBuf, detail: String },
    #[error("block {cid} in {path} is damaged: its bytes no longer match its CID")]
    CorruptBlock { cid: Cid, path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("repo database {path}: {detail}")]
    Database { path: PathBuf, detail: String },
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("block {0} is not in the store")]
    Missing(Cid),
    #[error("block {0} is pinned; unpin its root first")]
    Pinned(Cid),
    #[error("{0} is not pinned")]
    NotPinned(Cid),
    #[error("{cid}: {source}")]
    Manifest { cid: Cid, source: ManifestError },
    #[error(
        "storing {incoming} bytes would pass the quota of {quota} bytes: \
         {protected} bytes are pinned or being imported"
    )]
    QuotaExceeded {
        incoming: u64,
        quota: u64,
        protected: u64,
    },
    /// A redb error not yet tied to the database's path.
    #[error("{0}")]
    Redb(redb::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Redb(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Totals for `shoal repo stat`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStat {
    pub blocks: u64,
    pub bytes: u64,
    pub quota: Option<u64>,
    pub pinned_roots: u64,
    /// Size of the database file on disk.
    pub file_bytes: u64,
}

/// What a garbage collection removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStat {
    pub blocks: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct Volatile {
    /// Keys of blocks read since the last write.
    touched: VecDeque<Vec<u8>>,
    /// Keys of blocks written by imports in progress, with a count per import.
    staged: HashMap<Vec<u8>, u32>,
}

/// A repo's blocks.
pub struct Blockstore {
    db: Database,
    path: PathBuf,
    quota: Option<u64>,
    volatile: Mutex<Volatile>,
    listener: std::sync::RwLock<Option<BlockListener>>,
}

/// Called with the CIDs of blocks newly stored, after their transaction
/// committed. The node uses it to serve peers that asked for a block before
/// it existed, whichever way the block arrived (import, peer, HTTP).
pub type BlockListener = Box<dyn Fn(&[Cid]) + Send + Sync>;

impl Blockstore {
    /// Creates the database file (or opens it if it exists).
    pub fn create(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let store = Self::open_db(path, options, true)?;
        store.contextualize((|| {
            let txn = store.db.begin_write()?;
            {
                txn.open_table(BLOCKS)?;
                txn.open_table(META)?;
                txn.open_table(LRU)?;
                txn.open_table(PINS)?;
                txn.open_table(PIN_REFS)?;
                txn.open_table(SUMS)?;
                txn.open_table(RECEIPTS)?;
                let mut counters = txn.open_table(COUNTERS)?;
                if counters.get(FORMAT)?.is_none() {
                    counters.insert(FORMAT, FORMAT_VERSION)?;
                }
            }
            txn.commit()?;
            Ok(())
        })())?;
        store.check_format()?;
        Ok(store)
    }

    /// Opens an existing database file.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let store = Self::open_db(path, options, false)?;
        store.check_format()?;
        Ok(store)
    }

    fn open_db(path: &Path, options: &StoreOptions, create: bool) -> Result<Self, StoreError> {
        let mut builder = Database::builder();
        builder.set_cache_size(options.cache_bytes);
        let opened = if create {
            builder.create(path)
        } else {
            builder.open(path)
        };
        let db = opened.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                path: path.to_owned(),
            },
            redb::DatabaseError::Storage(redb::StorageError::Io(source))
                if source.kind() != std::io::ErrorKind::InvalidData =>
            {
                StoreError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
            other => StoreError::Damaged {
                path: path.to_owned(),
                detail: other.to_string(),
            },
        })?;
        Ok(Blockstore {
            db,
            path: path.to_owned(),
            quota: options.quota,
            volatile: Mutex::new(Volatile::default()),
            listener: std::sync::RwLock::new(None),
        })
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let format = self.contextualize((|| {
            let txn = self.db.begin_read()?;
            let counters = txn.open_table(COUNTERS)?;
            Ok(counters.get(FORMAT)?.map(|v| v.value()))
        })());
        match format {
            Ok(Some(FORMAT_VERSION)) => Ok(()),
            Ok(Some(other)) => Err(StoreError::Damaged {
                path: self.path.clone(),
                detail: format!("table layout {other} is not one this shoal reads"),
            }),
            Ok(None) => Err(StoreError::Damaged {
                path: self.path.clone(),
                detail: "not a shoal blockstore (no format marker)".into(),
            }),
            Err(StoreError::Database { detail, .. }) => Err(StoreError::Damaged {
                path: self.path.clone(),
                detail,
            }),
            Err(e) => Err(e),
        }
    }

    /// Sets the function told about every newly stored block (replacing
    /// any earlier one).
    pub fn set_listener(&self, listener: BlockListener) {
        *self.listener.write().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }

    fn notify(&self, keys: &[Vec<u8>]) {
        if keys.is_empty() {
            return;
        }
        let guard = self.listener.read().unwrap_or_else(|p| p.into_inner());
        if let Some(listener) = guard.as_ref() {
            let cids: Vec<Cid> = keys
                .iter()
                .filter_map(|k| Cid::try_from(k.as_slice()).ok())
                .collect();
            listener(&cids);
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ties a bare redb error to this database's path.
    fn contextualize<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        r.map_err(|e| match e {
            StoreError::Redb(redb::Error::Corrupted(detail)) => StoreError::Damaged {
                path: self.path.clone(),
                detail,
            },
            StoreError::Redb(redb::Error::Io(source)) => StoreError::Io {
                path: self.path.clone(),
                source,
            },
            StoreError::Redb(redb::Error::TableDoesNotExist(table)) => StoreError::Damaged {
                path: self.path.clone(),
                detail: format!("table {table} is missing"),
            },
            StoreError::Redb(other) => StoreError::Database {
                path: self.path.clone(),
                detail: other.to_string(),
            },
            other => other,
        })
    }

    fn volatile(&self) -> MutexGuard<'_, Volatile> {
        // The guarded state is only bookkeeping; a panic elsewhere while it
        // was held leaves it usable.
        self.volatile.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores blocks in one durable transaction. Blocks already present are
    /// kept as they are.
    pub fn put_many(&self, blocks: &[Block<'_>]) -> Result<(), StoreError> {
        self.write_blocks(blocks, Durability::Immediate, None)
            .map(drop)
    }

    /// Stores blocks in one transaction that does not wait for the disk:
    /// after a crash they may be gone, never half there. The next durable
    /// commit (any `put_many`, pin or import end) makes them permanent.
    /// For blocks that can be fetched again, such as a download's.
    pub fn put_many_lazily(&self, blocks: &[Block<'_>]) -> Result<(), StoreError> {
        self.write_blocks(blocks, Durability::None, None).map(drop)
    }

    /// Stores one block, checking that its bytes hash to its CID.
    pub fn put(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_many(&[Block::verified(*cid, bytes)?])
    }

    fn write_blocks(
        &self,
        blocks: &[Block<'_>],
        durability: Durability,
        pin_root: Option<&Cid>,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let new = self.contextualize((|| {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(durability)?;
            self.apply_touches(&txn)?;
            let new = self.insert_blocks(&txn, blocks)?;
            if let Some(root) = pin_root {
                pin_in(&txn, root, &self.path)?;
            }
            txn.commit()?;
            Ok(new)
        })())?;
        self.notify(&new);
        Ok(new)
    }

    /// Inserts the blocks not yet stored; returns their keys.
    fn insert_blocks(
        &self,
        txn: &WriteTransaction,
        blocks: &[Block<'_>],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut meta = txn.open_table(META)?;
        // Every key of the batch is kept from eviction, also those already
        // stored: the caller is about to rely on them.
        let mut batch = HashSet::with_capacity(blocks.len());
        let mut new: Vec<&Block<'_>> = Vec::with_capacity(blocks.len());
        for b in blocks {
            let key = b.cid().to_bytes();
            if meta.get(key.as_slice())?.is_none() && !batch.contains(&key) {
                new.push(b);
            }
            batch.insert(key);
        }
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let incoming: u64 = new.iter().map(|b| b.bytes().len() as u64).sum();
        let mut counters = txn.open_table(COUNTERS)?;
        let mut bytes = get_counter(&counters, BYTES)?;
        if let Some(quota) = self.quota
            && bytes + incoming > quota
        {
            drop(meta);
            drop(counters);
            let freed = self.evict(txn, bytes + incoming - quota, &batch, incoming, quota)?;
            bytes -= freed;
            counters = txn.open_table(COUNTERS)?;
            meta = txn.open_table(META)?;
        }
        let mut clock = get_counter(&counters, CLOCK)?;
        let mut table = txn.open_table(BLOCKS)?;
        let mut lru = txn.open_table(LRU)?;
        let mut sums = txn.open_table(SUMS)?;
        let mut keys = Vec::with_capacity(new.len());
        for b in new {
            let key = b.cid().to_bytes();
            write_value(&mut table, &key, b.bytes())?;
            sums.insert(key.as_slice(), xxh3_64(b.bytes()))?;
            clock += 1;
            meta.insert(key.as_slice(), (b.bytes().len() as u64, clock))?;
            lru.insert(clock, key.as_slice())?;
            bytes += b.bytes().len() as u64;
            keys.push(key);
        }
        counters.insert(BYTES, bytes)?;
        counters.insert(CLOCK, clock)?;
        Ok(keys)
    }

    /// Evicts least recently used, unprotected blocks until `needed` bytes
    /// are freed; returns the bytes freed.
    fn evict(
        &self,
        txn: &WriteTransaction,
        needed: u64,
        incoming_keys: &HashSet<Vec<u8>>,
        incoming: u64,
        quota: u64,
    ) -> Result<u64, StoreError> {
        // Held for the scan: only imports' bookkeeping waits on it, and
        // copying the set on every write of a large import would cost
        // quadratic time.
        let volatile = self.volatile();
        let staged = &volatile.staged;
        let refs = txn.open_table(PIN_REFS)?;
        let mut victims = Vec::new();
        let mut freed = 0u64;
        {
            let lru = txn.open_table(LRU)?;
            let meta = txn.open_table(META)?;
            for entry in lru.iter()? {
                let (stamp, key) = entry?;
                let key = key.value();
                if staged.contains_key(key)
                    || incoming_keys.contains(key)
                    || refs.get(key)?.is_some()
                {
                    continue;
                }
                let size = meta.get(key)?.map(|v| v.value().0).unwrap_or(0);
                victims.push((stamp.value(), key.to_vec(), size));
                freed += size;
                if freed >= needed {
                    break;
                }
            }
        }
        drop(volatile);
        if freed < needed {
            let bytes = get_counter(&txn.open_table(COUNTERS)?, BYTES)?;
            return Err(StoreError::QuotaExceeded {
                incoming,
                quota,
                protected: bytes - freed,
            });
        }
        let mut lru = txn.open_table(LRU)?;
        let mut meta = txn.open_table(META)?;
        let mut table = txn.open_table(BLOCKS)?;
        for (stamp, key, size) in &victims {
            lru.remove(stamp)?;
            meta.remove(key.as_slice())?;
            remove_value(&mut table, key, *size)?;
        }
        tracing::debug!(
            blocks = victims.len(),
            bytes = freed,
            "evicted to stay within quota"
        );
        Ok(freed)
    }

    /// Moves recently read blocks to the young end of the eviction order.
    fn apply_touches(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let touched = std::mem::take(&mut self.volatile().touched);
        if touched.is_empty() {
            return Ok(());
        }
        let mut counters = txn.open_table(COUNTERS)?;
        let mut clock = get_counter(&counters, CLOCK)?;
        let mut meta = txn.open_table(META)?;
        let mut lru = txn.open_table(LRU)?;
        for key in touched {
            let Some((size, stamp)) = meta.get(key.as_slice())?.map(|v| v.value()) else {
                continue;
            };
            clock += 1;
            lru.remove(stamp)?;
            lru.insert(clock, key.as_slice())?;
            meta.insert(key.as_slice(), (size, clock))?;
        }
        counters.insert(CLOCK, clock)?;
        Ok(())
    }

    /// Reads a block, checking that its bytes are the ones stored.
    ///
    /// Every block was verified against its CID when it entered the store;
    /// what a read must catch is damage at rest, which is not adversarial.
    /// So a read compares an xxh3 checksum taken at write time (some 20×
    /// cheaper than SHA-256, which matters because a seeder reads a popular
    /// block once for every peer it serves) and recomputes the CID only when
    /// the checksum is missing or disagrees — so a damaged checksum never
    /// hides a good block. [`Blockstore::verify_all`] always recomputes.
    pub fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(cid, false)
    }

    fn read(&self, cid: &Cid, full_check: bool) -> Result<Option<Vec<u8>>, StoreError> {
        let key = cid.to_bytes();
        let found = self.contextualize((|| {
            let txn = self.db.begin_read()?;
            let Some((size, _)) = txn
                .open_table(META)?
                .get(key.as_slice())?
                .map(|v| v.value())
            else {
                return Ok(None);
            };
            let sum = match txn.open_table(SUMS) {
                Ok(sums) => sums.get(key.as_slice())?.map(|v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            };
            Ok(Some((
                read_value(&txn.open_table(BLOCKS)?, &key, size)?,
                sum,
            )))
        })())?;
        let Some((bytes, sum)) = found else {
            return Ok(None);
        };
        let sum_holds = !full_check && sum == Some(xxh3_64(&bytes));
        if !sum_holds && block::verify(cid, &bytes).is_err() {
            return Err(StoreError::CorruptBlock {
                cid: *cid,
                path: self.path.clone(),
            });
        }
        let mut v = self.volatile();
        if v.touched.len() >= MAX_PENDING_TOUCHES {
            v.touched.pop_front();
        }
        v.touched.push_back(key);
        Ok(Some(bytes))
    }

    /// Reads a block that must be present.
    pub fn require(&self, cid: &Cid) -> Result<Vec<u8>, StoreError> {
        self.get(cid)?.ok_or(StoreError::Missing(*cid))
    }

    /// The size of a stored block.
    pub fn size(&self, cid: &Cid) -> Result<Option<u64>, StoreError> {
        let key = cid.to_bytes();
        self.contextualize((|| {
            let txn = self.db.begin_read()?;
            let meta = txn.open_table(META)?;
            Ok(meta.get(key.as_slice())?.map(|v| v.value().0))
        })())
    }

    /// Whether a block is stored.
    pub fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.size(cid)?.is_some())
    }

    /// Every stored block with its size.
    pub fn list(&self) -> Result<Vec<(Cid, u64)>, StoreError> {
        self.contextualize((|| {
            let txn = self.db.begin_read()?;
            let meta = txn.open_table(META)?;
            let mut out = Vec::with_capacity(meta.len()? as usize);
            for entry in meta.iter()? {
                let (key, value) = entry?;
                let cid = Cid::try_from(key.value()).map_err(|e| {
                    StoreError::Redb(redb::Error::Corrupted(format!(
                        "stored key is not a CID: {e}"
                    )))
                })?;
                out.push((cid, value.value().0));
            }
            Ok(out)
        })())
    }

    /// Deletes a block that no pin protects. Returns whether it was there.
    pub fn delete(&self, cid: &Cid) -> Result<bool, StoreError> {
        let key = cid.to_bytes();
        self.contextualize((|| {
            let txn = self.db.begin_write()?;
            if txn.open_table(PIN_REFS)?.get(key.as_slice())?.is_some() {
                return Err(StoreError::Pinned(*cid));
            }
            let found = remove_block(&txn, &key)?;
            txn.commit()?;
            Ok(found)
        })())
    }

    /// Deletes those of `cids` that no pin protects, in one transaction;
    /// returns how many were there. The commit is durable on purpose: one
    /// wait for the disk per batch (not one per block, which cost a
    /// watching phone a flush per shard), and redb reuses the pages that
    /// non-durable commits freed only at a durable one, so a viewer that
    /// only watches would otherwise grow its file for ever.
    pub fn delete_unpinned(&self, cids: &[Cid]) -> Result<usize, StoreError> {
        self.contextualize((|| {
            let txn = self.db.begin_write()?;
            let mut deleted = 0;
            {
                let refs = txn.open_table(PIN_REFS)?;
                for cid in cids {
                    let key = cid.to_bytes();
                    if refs.get(key.as_slice())?.is_none() && remove_block(&txn, &key)? {
                        deleted += 1;
                    }
                }
            }
            txn.commit()?;
            Ok(deleted)
        })())
    }

    /// Pins `root` and everything below it. Every block of the DAG must be
    /// present.
    pub fn pin(&self, root: &Cid) -> Result<(), StoreError> {
        self.contextualize((|| {
            let txn = self.db.begin_write()?;
            pin_in(&txn, root, &self.path)?;
            txn.commit()?;
            Ok(())
        })())
    }

    /// Removes the pin on `root`.
    pub fn unpin(&self, root: &Cid) -> Result<(), StoreError> {
        self.contextualize((|| {
            let txn = self.db.begin_write()?;
            let key = root.to_bytes();
            if txn.open_table(PINS)?.remove(key.as_slice())?.is_none() {
                return Err(StoreError::NotPinned(*root));
            }
            let dag = walk_dag(&txn, root, &self.path)?;
            let mut refs = txn.open_table(PIN_REFS)?;
            for key in dag {
                let count = refs.get(key.as_slice())?.map(|v| v.value()).unwrap_or(0);
                if count <= 1 {
                    refs.remove(key.as_slice())?;
                } else {
                    refs.insert(key.as_slice(), count - 1)?;
                }
            }
            drop(refs);
            txn.commit()?;
            Ok(())
        })())
    }

    /// Keeps `receipt` under `key`, replacing what was there; what was
    /// claimed of the old one stays recorded.
    pub fn put_receipt(&self, key: &[u8], receipt: &[u8]) -> Result<(), StoreError> {
        self.contextualize((|| {
            let txn = self.db.begin_write()?;
            {
                let mut t = txn.open_table(RECEIPTS)?;
                let claimed = t.get(key)?.map_or(0, |v| v.value().1);
                t.insert(key, (receipt, claimed))?;
            }
            txn.commit()?;
            Ok(())
        })())
    }

    /// The receipt under `key` and what of it was claimed.
    pub fn receipt(&self, key: &[u8]) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        self.contextualize((|| {
            let txn = self.db.begin_read()?;
            let t = match txn.open_table(RECEIPTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(t.get(key)?.map(|v| {
                let (r, c) = v.value();
                (r.to_vec(), c)
            }))
        })())
    }

    /// Every receipt held.
    pub fn receipts(&self) -> Result<Vec<HeldReceipt>, StoreError> {
        self.contextualize((|| {
            let txn = self.db.begin_read()?;
            let t = match txn.open_table(RECEIPTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for entry in t.iter()? {
                let (k, v) = entry?;
                let (r, c) = v.value();
                out.push(HeldReceipt {
                    key: k.value().to_vec(),
                    receipt: r.to_vec(),
                    claimed: c,
                });
            }
            Ok(out)
        })())
    }

    /// Forgets the receipts under `keys` (their claim window has closed),
    /// in one transaction.
    pub fn delete_receipts(&self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.contextualize((|| {
            let txn = self.db.begin_write()?;
            {
                let mut t = txn.open_table(RECEIPTS)?;
                for key in keys {
                    t.remove(key.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })())
    }

    /// Records that the receipt under `key` was claimed up to `claimed`.
    pub fn mark_claimed(&self, key: &[u8], claimed: u64) -> Result<(), StoreError> {
        self.contextualize((|| {
            let txn = self.db.begin_write()?;
            {
                let mut t = txn.open_table(RECEIPTS)?;
                let receipt = t.get(key)?.map(|v| v.value().0.to_vec());
                if let Some(r) = receipt {
                    t.insert(key, (r.as_slice(), claimed))?;
                }
            }
            txn.commit()?;
            Ok(())
        })())
    }

    /// The pinned roots.
    pub fn pins(&self) -> Result<Vec<Cid>, StoreError> {
        self.contextualize((|| {
            let txn = self.db.begin_read()?;
            let pins = txn.open_table(PINS)?;
            let mut out = Vec::new();
            for entry in pins.iter()? {
                let (key, _) = entry?;
                out.push(Cid::try_from(key.value()).map_err(|e| {
                    StoreError::Redb(redb::Error::Corrupted(format!(
                        "pinned key is not a CID: {e}"
                    )))
                })?);
            }
            Ok(out)
        })())
    }

    /// Deletes every block that no pin protects and no import is writing.
    pub fn gc(&self) -> Result<GcStat, StoreError> {
        let staged: HashSet<Vec<u8>> = self.volatile().staged.keys().cloned().collect();
        self.contextualize((|| {
            let txn = self.db.begin_write()?;
            let mut doomed = Vec::new();
            {
                let meta = txn.open_table(META)?;
                let refs = txn.open_table(PIN_REFS)?;
                for entry in meta.iter()? {
                    let (key, _) = entry?;
                    let key = key.value();
                    if !staged.contains(key) && refs.get(key)?.is_none() {
                        doomed.push(key.to_vec());
                    }
                }
            }
            let mut stat = GcStat::default();
            for key in &doomed {
                let size = txn
                    .open_table(META)?
                    .get(key.as_slice())?
                    .map(|v| v.value().0);
                if remove_block(&txn, key)? {
                    stat.blocks += 1;
                    stat.bytes += size.unwrap_or(0);
                }
            }
            txn.commit()?;
            Ok(stat)
        })())
    }

    /// Reads every block and checks it against its CID; returns the CIDs of
    /// the blocks that fail.
    pub fn verify_all(&self) -> Result<Vec<Cid>, StoreError> {
        let mut damaged = Vec::new();
        for (cid, _) in self.list()? {
            match self.read(&cid, true) {
                Ok(_) => {}
                Err(StoreError::CorruptBlock { cid, .. }) => damaged.push(cid),
                Err(e) => return Err(e),
            }
        }
        Ok(damaged)
    }

    /// Totals.
    pub fn stat(&self) -> Result<StoreStat, StoreError> {
        let file_bytes = std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|source| StoreError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.contextualize((|| {
            let txn = self.db.begin_read()?;
            let counters = txn.open_table(COUNTERS)?;
            Ok(StoreStat {
                blocks: txn.open_table(META)?.len()?,
                bytes: counters.get(BYTES)?.map(|v| v.value()).unwrap_or(0),
                quota: self.quota,
                pinned_roots: txn.open_table(PINS)?.len()?,
                file_bytes,
            })
        })())
    }

    /// Starts an import: blocks written through the returned [`Staging`] are
    /// protected from eviction and GC until it is finished or dropped. An
    /// import dropped unfinished removes the blocks it added.
    pub fn stage(&self) -> Staging<'_> {
        Staging {
            store: self,
            keys: Vec::new(),
            added: Vec::new(),
            finished: false,
        }
    }

    /// Removes blocks an abandoned import added, unless a pin now holds them.
    fn roll_back(&self, added: &[Vec<u8>]) -> Result<(), StoreError> {
        self.contextualize((|| {
            let txn = self.db.begin_write()?;
            for key in added {
                if txn.open_table(PIN_REFS)?.get(key.as_slice())?.is_none() {
                    remove_block(&txn, key)?;
                }
            }
            txn.commit()?;
            Ok(())
        })())
    }
}

/// An import in progress. See [`Blockstore::stage`].
pub struct Staging<'a> {
    store: &'a Blockstore,
    /// Every key written, for the eviction guard.
    keys: Vec<Vec<u8>>,
    /// Keys this import added to the store.
    added: Vec<Vec<u8>>,
    finished: bool,
}

impl Staging<'_> {
    /// Stores blocks. `durable` makes the commit wait for the disk; an import
    /// commits most batches without waiting and the last one durably, since
    /// a crash before the root is stored loses the import either way.
    pub fn put(&mut self, blocks: &[Block<'_>], durable: bool) -> Result<(), StoreError> {
        {
            let mut v = self.store.volatile();
            for b in blocks {
                let key = b.cid().to_bytes();
                *v.staged.entry(key.clone()).or_default() += 1;
                self.keys.push(key);
            }
        }
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        let added = self.store.write_blocks(blocks, durability, None)?;
        self.added.extend(added);
        Ok(())
    }

    /// Stores the root block and pins it, durably, in one transaction.
    pub fn finish(mut self, root: Block<'_>) -> Result<(), StoreError> {
        self.store
            .write_blocks(&[root], Durability::Immediate, Some(root.cid()))?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if !self.finished
            && !self.added.is_empty()
            && let Err(e) = self.store.roll_back(&self.added)
        {
            tracing::warn!(
                error = %e,
                "could not remove the blocks of an abandoned import; `shoal repo gc` will"
            );
        }
        let mut v = self.store.volatile();
        for key in self.keys.drain(..) {
            if let Some(count) = v.staged.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    v.staged.remove(&key);
                }
            }
        }
    }
}

fn get_counter(
    table: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> Result<u64, StoreError> {
    Ok(table.get(name)?.map(|v| v.value()).unwrap_or(0))
}

fn write_value(
    table: &mut redb::Table<'_, (&'static [u8], u32), &'static [u8]>,
    key: &[u8],
    bytes: &[u8],
) -> Result<(), StoreError> {
    for (i, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
        table.insert((key, i as u32), chunk)?;
    }
    Ok(())
}

/// Reads a block's chunks. A missing or short chunk reads as fewer bytes,
/// which the caller's CID check then reports as damage.
fn read_value(
    table: &impl ReadableTable<(&'static [u8], u32), &'static [u8]>,
    key: &[u8],
    size: u64,
) -> Result<Vec<u8>, StoreError> {
    let size = usize::try_from(size)
        .unwrap_or(usize::MAX)
        .min(block::MAX_BLOCK_SIZE);
    let mut out = Vec::with_capacity(size);
    for i in 0..size.div_ceil(CHUNK_BYTES) {
        match table.get((key, i as u32))? {
            Some(chunk) => out.extend_from_slice(chunk.value()),
            None => break,
        }
    }
    Ok(out)
}

fn remove_value(
    table: &mut redb::Table<'_, (&'static [u8], u32), &'static [u8]>,
    key: &[u8],
    size: u64,
) -> Result<(), StoreError> {
    for i in 0..(size as usize).div_ceil(CHUNK_BYTES) {
        table.remove((key, i as u32))?;
    }
    Ok(())
}

/// Removes a block and its bookkeeping; returns whether it was there.
fn remove_block(txn: &WriteTransaction, key: &[u8]) -> Result<bool, StoreError> {
    let Some((size, stamp)) = txn.open_table(META)?.remove(key)?.map(|v| v.value()) else {
        return Ok(false);
    };
    txn.open_table(LRU)?.remove(stamp)?;
    txn.open_table(SUMS)?.remove(key)?;
    remove_value(&mut txn.open_table(BLOCKS)?, key, size)?;
    let mut counters = txn.open_table(COUNTERS)?;
    let bytes = get_counter(&counters, BYTES)?;
    counters.insert(BYTES, bytes.saturating_sub(size))?;
    Ok(true)
}

/// Pins `root` inside `txn`: one more reference on every block below it.
fn pin_in(txn: &WriteTransaction, root: &Cid, path: &Path) -> Result<(), StoreError> {
    let key = root.to_bytes();
    if txn.open_table(PINS)?.get(key.as_slice())?.is_some() {
        return Ok(());
    }
    let dag = walk_dag(txn, root, path)?;
    let mut refs = txn.open_table(PIN_REFS)?;
    for key in dag {
        let count = refs.get(key.as_slice())?.map(|v| v.value()).unwrap_or(0);
        refs.insert(key.as_slice(), count + 1)?;
    }
    txn.open_table(PINS)?.insert(key.as_slice(), ())?;
    Ok(())
}

/// The keys of every block reachable from `root`, each once. Manifests are
/// read and decoded; shards only need to be present, and a segment is
/// complete with any `k` of its shards (the others are not referenced).
fn walk_dag(
    txn: &WriteTransaction,
    root: &Cid,
    path: &Path,
) -> Result<HashSet<Vec<u8>>, StoreError> {
    let blocks = txn.open_table(BLOCKS)?;
    let meta = txn.open_table(META)?;
    let mut seen = HashSet::new();
    let mut stack = vec![*root];
    while let Some(cid) = stack.pop() {
        let key = cid.to_bytes();
        if seen.contains(&key) {
            continue;
        }
        let (size, _) = meta
            .get(key.as_slice())?
            .ok_or(StoreError::Missing(cid))?
            .value();
        if cid.codec() != block::Codec::Raw.code() {
            let bytes = read_value(&blocks, &key, size)?;
            block::verify(&cid, &bytes).map_err(|_| StoreError::CorruptBlock {
                cid,
                path: path.to_owned(),
            })?;
            let (links, needed) = manifest::links_needed(&cid, &bytes)
                .map_err(|source| StoreError::Manifest { cid, source })?;
            if needed == links.len() {
                stack.extend(links);
            } else {
                // Shards: leaves, so presence is all that is checked.
                let mut present = 0;
                let mut first_missing = None;
                for shard in links {
                    let shard_key = shard.to_bytes();
                    if meta.get(shard_key.as_slice())?.is_some() {
                        present += 1;
                        seen.insert(shard_key);
                    } else {
                        first_missing.get_or_insert(shard);
                    }
                }
                if present < needed {
                    return Err(StoreError::Missing(first_missing.unwrap_or(cid)));
                }
            }
        }
        seen.insert(key);
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::block::Codec;

    fn store(quota: Option<u64>) -> (tempfile::TempDir, Blockstore) {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            quota,
            ..StoreOptions::default()
        };
        let s = Blockstore::create(&dir.path().join("blocks.redb"), &opts).unwrap();
        (dir, s)
    }

    #[test]
    fn put_get_has_delete_list() {
        let (_d, s) = store(None);
        let cid = block::cid_of(Codec::Raw, b"abc");
        assert!(!s.has(&cid).unwrap());
        s.put(&cid, b"abc").unwrap();
        s.put(&cid, b"abc").unwrap();
        assert_eq!(s.get(&cid).unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(s.size(&cid).unwrap(), Some(3));
        assert_eq!(s.list().unwrap(), vec![(cid, 3)]);
        assert_eq!(s.stat().unwrap().bytes, 3);
        assert!(s.delete(&cid).unwrap());
        assert!(!s.delete(&cid).unwrap());
        assert_eq!(s.get(&cid).unwrap(), None);
        assert_eq!(s.stat().unwrap().bytes, 0);
    }

    #[test]
    fn receipts_are_replaced_keep_what_was_claimed_and_survive_a_reopen() {
        let (d, s) = store(None);
        assert_eq!(s.receipt(b"k1").unwrap(), None);
        s.put_receipt(b"k1", b"first").unwrap();
        s.mark_claimed(b"k1", 100).unwrap();
        s.put_receipt(b"k1", b"newer").unwrap();
        s.put_receipt(b"k2", b"other").unwrap();
        // Marking a receipt that is not there does nothing.
        s.mark_claimed(b"k3", 5).unwrap();
        assert_eq!(s.receipt(b"k1").unwrap(), Some((b"newer".to_vec(), 100)));
        drop(s);
        let s = Blockstore::open(&d.path().join("blocks.redb"), &StoreOptions::default()).unwrap();
        let held: Vec<(Vec<u8>, u64)> = s
            .receipts()
            .unwrap()
            .into_iter()
            .map(|h| (h.key, h.claimed))
            .collect();
        assert_eq!(held, vec![(b"k1".to_vec(), 100), (b"k2".to_vec(), 0)]);
    }

    /// Overwrites a block's bytes in place, as damage at rest would.
    fn damage(s: &Blockstore, cid: &Cid, bytes: &[u8]) {
        let txn = s.db.begin_write().unwrap();
        write_value(&mut txn.open_table(BLOCKS).unwrap(), &cid.to_bytes(), bytes).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn reads_catch_damage_by_checksum_and_by_cid() {
        let (_d, s) = store(None);
        let cid = block::cid_of(Codec::Raw, b"abc");
        s.put(&cid, b"abc").unwrap();
        damage(&s, &cid, b"abd");
        assert!(matches!(s.get(&cid), Err(StoreError::CorruptBlock { .. })));
        assert_eq!(s.verify_all().unwrap(), vec![cid]);
        // Without its checksum (a store made before checksums existed) the
        // damage is found by the CID.
        let txn = s.db.begin_write().unwrap();
        txn.delete_table(SUMS).unwrap();
        txn.commit().unwrap();
        assert!(matches!(s.get(&cid), Err(StoreError::CorruptBlock { .. })));
        damage(&s, &cid, b"abc");
        assert_eq!(s.get(&cid).unwrap().as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn a_damaged_checksum_does_not_hide_a_good_block() {
        let (_d, s) = store(None);
        let cid = block::cid_of(Codec::Raw, b"abc");
        s.put(&cid, b"abc").unwrap();
        let txn = s.db.begin_write().unwrap();
        txn.open_table(SUMS)
            .unwrap()
            .insert(cid.to_bytes().as_slice(), 12345)
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(s.get(&cid).unwrap().as_deref(), Some(&b"abc"[..]));
        assert!(s.verify_all().unwrap().is_empty());
    }

    #[test]
    fn put_refuses_bytes_that_do_not_match() {
        let (_d, s) = store(None);
        let cid = block::cid_of(Codec::Raw, b"abc");
        assert!(matches!(
            s.put(&cid, b"abd"),
            Err(StoreError::Block(BlockError::HashMismatch { .. }))
        ));
        assert!(!s.has(&cid).unwrap());
    }

    #[test]
    fn released_blocks_go_in_one_batch_and_pinned_ones_stay() {
        let (_d, s) = store(None);
        let data: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100]).collect();
        let cids: Vec<Cid> = data.iter().map(|d| block::cid_of(Codec::Raw, d)).collect();
        for (c, d) in cids.iter().zip(&data) {
            s.put(c, d).unwrap();
        }
        s.pin(&cids[0]).unwrap();
        let absent = block::cid_of(Codec::Raw, b"never stored");
        // Pinned, present twice, absent: only the unpinned ones go.
        assert_eq!(
            s.delete_unpinned(&[cids[0], cids[1], cids[1], absent, cids[2]])
                .unwrap(),
            2
        );
        assert!(s.has(&cids[0]).unwrap());
        assert!(!s.has(&cids[1]).unwrap() && !s.has(&cids[2]).unwrap());
        assert_eq!(s.stat().unwrap().bytes, 100);
    }

    #[test]
    fn quota_evicts_least_recently_used_unpinned() {
        let (_d, s) = store(Some(300));
        let data: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100]).collect();
        let cids: Vec<Cid> = data.iter().map(|d| block::cid_of(Codec::Raw, d)).collect();
        for (c, d) in cids.iter().zip(&data) {
            s.put(c, d).unwrap();
        }
        // Reading block 0 makes block 1 the least recently used.
        s.get(&cids[0]).unwrap();
        let extra = vec![9u8; 100];
        s.put(&block::cid_of(Codec::Raw, &extra), &extra).unwrap();
        assert!(s.has(&cids[0]).unwrap());
        assert!(!s.has(&cids[1]).unwrap());
        assert!(s.has(&cids[2]).unwrap());
        assert_eq!(s.stat().unwrap().bytes, 300);
    }

    #[test]
    fn quota_never_evicts_staged_blocks() {
        let (_d, s) = store(Some(250));
        let mut staging = s.stage();
        let a = vec![1u8; 100];
        let b = vec![2u8; 100];
        let c = vec![3u8; 100];
        staging
            .put(&[Block::new(Codec::Raw, &a).unwrap()], false)
            .unwrap();
        staging
            .put(&[Block::new(Codec::Raw, &b).unwrap()], false)
            .unwrap();
        let err = staging
            .put(&[Block::new(Codec::Raw, &c).unwrap()], true)
            .unwrap_err();
        assert!(matches!(err, StoreError::QuotaExceeded { .. }), "{err}");
        drop(staging);
        // The abandoned import took its blocks with it.
        assert_eq!(s.stat().unwrap().blocks, 0);
        s.put(&block::cid_of(Codec::Raw, &c), &c).unwrap();
    }

    #[test]
    fn the_listener_hears_new_blocks_once() {
        let (_d, s) = store(None);
        let heard = std::sync::Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        s.set_listener(Box::new(move |cids| {
            h.lock().unwrap().extend_from_slice(cids)
        }));
        let cid = block::cid_of(Codec::Raw, b"new");
        s.put(&cid, b"new").unwrap();
        s.put(&cid, b"new").unwrap();
        assert_eq!(*heard.lock().unwrap(), vec![cid]);
    }

    #[test]
    fn reopen_keeps_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocks.redb");
        let cid = block::cid_of(Codec::Raw, b"kept");
        {
            let s = Blockstore::create(&path, &StoreOptions::default()).unwrap();
            s.put(&cid, b"kept").unwrap();
        }
        let s = Blockstore::open(&path, &StoreOptions::default()).unwrap();
        assert_eq!(s.require(&cid).unwrap(), b"kept");
    }

    #[test]
    fn second_open_is_locked() {
        let (d, _s) = store(None);
        let err = Blockstore::open(&d.path().join("blocks.redb"), &StoreOptions::default());
        assert!(matches!(err, Err(StoreError::Locked { .. })));
    }
}
