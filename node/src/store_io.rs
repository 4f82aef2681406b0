//! The store, as the node's machine sees it and as the event loop works on
//! it: lookups answered in place (a redb read is a few microseconds), and
//! everything that writes or rebuilds done off the loop.
//!
//! - [`NodeStore`] answers the machine's lookups: block sizes for the
//!   Bitswap engine, blocks for the fetches, held receipts for the rules.
//! - [`run_writer`] is the one task that writes what the network brings
//!   (blocks from peers, manifests that came inline) and deletes what the
//!   machine lets go, in the order it was asked, a batch per transaction;
//!   each batch is reported back once it is committed. One writer, in
//!   order, so that a manifest queued before a segment's shards is stored
//!   before the segment is checked, and a block let go and then fetched
//!   again (a repeated segment) is deleted before it is stored, not after.
//! - [`check_segment`] is the live sessions' blocking work, run on the
//!   blocking pool.

use std::sync::Arc;

use shoal_protocol::bitswap::BlockSource;
use shoal_protocol::block::{Block, Cid};
use shoal_protocol::fetch::BlockLookup;
use shoal_protocol::receipt::SignedReceipt;
use shoal_protocol::rewards::HeldReceipts;
use shoal_storage::Blockstore;
use tokio::sync::mpsc;

/// Writes taken together in one transaction, at most: a few segments'
/// shards, so a commit stays short.
const MAX_BATCH: usize = 256;

/// The node's store as its machine looks things up in it.
#[derive(Clone)]
pub(crate) struct NodeStore(pub(crate) Arc<Blockstore>);

impl BlockSource for NodeStore {
    fn block_size(&self, cid: &Cid) -> Option<usize> {
        self.0.size(cid).ok().flatten().map(|s| s as usize)
    }
}

impl BlockLookup for NodeStore {
    fn has(&self, cid: &Cid) -> Result<bool, String> {
        self.0.has(cid).map_err(|e| e.to_string())
    }

    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, String> {
        self.0.get(cid).map_err(|e| e.to_string())
    }
}

impl HeldReceipts for NodeStore {
    fn held(&self, key: &[u8]) -> Result<Option<SignedReceipt>, String> {
        let held = self.0.receipt(key).map_err(|e| e.to_string())?;
        Ok(held.and_then(|(bytes, _)| SignedReceipt::from_bytes(&bytes).ok()))
    }
}

/// Blocks from a peer, stored: what [`run_writer`] reports.
pub(crate) type Stored<P> = (P, Vec<(Cid, Vec<u8>)>);

/// A write for [`run_writer`].
pub(crate) enum Write<P> {
    /// Verified blocks from a peer, reported back once stored.
    Received {
        from: P,
        blocks: Vec<(Cid, Vec<u8>)>,
    },
    /// A segment manifest that came inline with an announcement.
    Manifest { cid: Cid, bytes: Vec<u8> },
    /// Blocks the machine let go: deleted unless pinned.
    Release(Vec<Cid>),
}

/// Writes in order, a batch per transaction, without an fsync (what is
/// lost in a crash can be fetched again), and deletes what is released
/// between the batches before and after it; sends `(from, blocks)` of
/// every committed [`Write::Received`] to `done`. Ends when `writes`
/// closes.
pub(crate) async fn run_writer<P: Send + 'static>(
    store: Arc<Blockstore>,
    mut writes: mpsc::UnboundedReceiver<Write<P>>,
    done: mpsc::UnboundedSender<Stored<P>>,
) {
    // A release read while batching waits for the batch before it.
    let mut next: Option<Write<P>> = None;
    loop {
        let first = match next.take() {
            Some(w) => w,
            None => match writes.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        if let Write::Release(cids) = first {
            let store = store.clone();
            let deleted = tokio::task::spawn_blocking(move || {
                // Pinned or already gone: either way nothing to do.
                if let Err(e) = store.delete_unpinned(&cids) {
                    tracing::warn!(error = %e, "cannot delete released blocks");
                }
            })
            .await;
            if deleted.is_err() {
                return;
            }
            continue;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match writes.try_recv() {
                Ok(w @ Write::Release(_)) => {
                    next = Some(w);
                    break;
                }
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let store = store.clone();
        let written = tokio::task::spawn_blocking(move || {
            // The wire decoder computed every CID from the block's bytes
            // (and the manifest's from its inline bytes): no hashing again.
            let blocks: Vec<Block<'_>> = batch
                .iter()
                .flat_map(|w| -> Vec<Block<'_>> {
                    match w {
                        Write::Received { blocks, .. } => blocks
                            .iter()
                            .map(|(cid, data)| Block::prehashed(*cid, data))
                            .collect(),
                        Write::Manifest { cid, bytes } => vec![Block::prehashed(*cid, bytes)],
                        Write::Release(_) => Vec::new(),
                    }
                })
                .collect();
            let result = store.put_many_lazily(&blocks);
            drop(blocks);
            (result, batch)
        })
        .await;
        let Ok((result, batch)) = written else {
            return;
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot store blocks from the network; they are fetched again");
            continue;
        }
        for w in batch {
            if let Write::Received { from, blocks } = w
                && done.send((from, blocks)).is_err()
            {
                return;
            }
        }
    }
}

/// Rebuilds a live segment from the store and checks its hash; if `ok` and
/// `from_http`, then makes the parity it lacks (after the check, so the
/// player need not wait for it), so that it serves peers any shard.
pub(crate) fn check_segment(
    store: &Blockstore,
    manifest: &Cid,
    sequence: u64,
    from_http: bool,
) -> bool {
    let ok = shoal_storage::assemble::read_segment(store, manifest, sequence)
        .map_err(|e| tracing::warn!(%manifest, error = %e, "live segment does not rebuild"))
        .is_ok();
    if ok
        && from_http
        && let Err(e) = shoal_storage::assemble::complete_segment(store, manifest)
    {
        tracing::warn!(%manifest, error = %e, "cannot complete a live segment's shards");
    }
    ok
}
