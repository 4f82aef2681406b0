//! Test data shared by the live machines' tests.

use cid::Cid;

use crate::block::{self, Codec};
use crate::channel::ChannelKey;
use crate::manifest::SegmentManifest;

/// Segment `seq` of `k + m` shards of `size` bytes, as (CID, bytes), and
/// its announcement signed by `key` with `publisher` as its publisher.
pub(crate) fn segment(
    key: &ChannelKey,
    seq: u64,
    k: u16,
    m: u16,
    size: usize,
    publisher: &[u8],
) -> (Vec<(Cid, Vec<u8>)>, Vec<u8>) {
    let shards: Vec<Vec<u8>> = (0..usize::from(k + m))
        .map(|i| vec![(seq as u8).wrapping_mul(16) + i as u8; size])
        .collect();
    let cids: Vec<Cid> = shards
        .iter()
        .map(|s| block::cid_of(Codec::Raw, s))
        .collect();
    let data: Vec<u8> = shards[..usize::from(k)].concat();
    let manifest = SegmentManifest {
        version: 1,
        index: seq,
        length: data.len() as u64,
        duration_us: Some(2_000_000),
        hash: block::sha256_multihash(&block::sha256(&data)).to_bytes(),
        k,
        m,
        shard_size: size as u32,
        shards: cids.clone(),
    };
    let announcement = key.announce(
        0,
        seq,
        1_000_000,
        &format!("seg{seq}.ts"),
        publisher,
        manifest.to_block().1,
    );
    (cids.into_iter().zip(shards).collect(), announcement)
}
