//! Reed-Solomon redundancy seen from the outside: lose shards in the repo,
//! the file still comes back exactly, until too many are gone.

use shoal_protocol::block::Cid;
use shoal_protocol::manifest::{SegmentManifest, StreamManifest};
use shoal_storage::{Blockstore, StoreOptions};
use shoal_tests::{Sandbox, sha256_file};

fn open_store(sb: &Sandbox) -> Blockstore {
    Blockstore::open(&sb.repo().join("blocks.redb"), &StoreOptions::default()).unwrap()
}

fn segments(store: &Blockstore, root: &str) -> Vec<(Cid, SegmentManifest)> {
    let root = Cid::try_from(root).unwrap();
    let stream = StreamManifest::from_block(&store.require(&root).unwrap()).unwrap();
    stream.renditions[0]
        .segments
        .iter()
        .map(|s| {
            (
                s.cid,
                SegmentManifest::from_block(&store.require(&s.cid).unwrap()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn any_m_lost_shards_per_segment_still_assemble_and_m_plus_one_names_the_segment() {
    let sb = Sandbox::with_repo();
    let (input, digest) = sb.write_random_file("in.bin", 40_000_000, 5);
    let root = sb.shoal(&["add", input.to_str().unwrap()]).ok().to_owned();
    sb.shoal(&["pin", "rm", &root]).ok();

    let store = open_store(&sb);
    let segs = segments(&store, &root);
    assert_eq!(segs.len(), 10);
    // Segment i loses the m shards starting at i: data only, data and
    // parity, parity only, wrapping around.
    for (i, (_, seg)) in segs.iter().enumerate() {
        let n = seg.shards.len();
        for j in 0..usize::from(seg.m) {
            assert!(store.delete(&seg.shards[(i + j) % n]).unwrap());
        }
    }
    drop(store);
    sb.shoal(&["get", &root, "-o", "out.bin"]).ok();
    assert_eq!(sha256_file(&sb.path("out.bin")), digest);

    // One more shard of segment 6 makes it unrecoverable.
    let store = open_store(&sb);
    let (seg_cid, seg) = &segs[6];
    let extra = (6 + usize::from(seg.m)) % seg.shards.len();
    assert!(store.delete(&seg.shards[extra]).unwrap());
    drop(store);
    let run = sb.shoal(&["get", &root, "-o", "out2.bin"]);
    run.fails_with(&format!("segment 6 ({seg_cid})"));
    assert!(run.stderr.contains("9 of 14 shards"), "{}", run.stderr);
    assert!(!sb.path("out2.bin").exists());
    assert!(
        !sb.entries(sb.dir.path())
            .iter()
            .any(|n| n.contains("partial")),
        "no partial output is left behind"
    );
}

#[test]
fn repair_regenerates_lost_shards_in_the_repo() {
    let sb = Sandbox::with_repo();
    let (input, digest) = sb.write_random_file("in.bin", 5_000_000, 6);
    let root = sb.shoal(&["add", input.to_str().unwrap()]).ok().to_owned();
    sb.shoal(&["pin", "rm", &root]).ok();
    let store = open_store(&sb);
    let (seg_cid, seg) = segments(&store, &root)[0].clone();
    for shard in &seg.shards[3..7] {
        store.delete(shard).unwrap();
    }
    assert_eq!(
        shoal_storage::assemble::repair_segment(&store, &seg_cid).unwrap(),
        4
    );
    for shard in &seg.shards {
        assert!(store.has(shard).unwrap());
    }
    // With every shard back, any m may be lost again.
    for shard in &seg.shards[..4] {
        store.delete(shard).unwrap();
    }
    drop(store);
    sb.shoal(&["get", &root, "-o", "out.bin"]).ok();
    assert_eq!(sha256_file(&sb.path("out.bin")), digest);
}
