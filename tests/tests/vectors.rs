//! Golden vectors: fixed inputs, the parameters they were imported with, and
//! every block shoal made of them, as files under `tests/vectors/`. Another
//! implementation that imports the same input the same way must produce the
//! same blocks and root CID. `SHOAL_BLESS=1` rewrites the vectors after an
//! intended format change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shoal_protocol::block::{self, Cid, Codec};
use shoal_protocol::manifest::{SegmentManifest, StreamManifest, links};
use shoal_storage::{Blockstore, ImportOptions, StoreOptions, import_file, import_hls};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// The inputs, made here so they are exactly reproducible.
fn write_inputs(dir: &Path) {
    std::fs::create_dir_all(dir.join("hls/low")).unwrap();
    std::fs::create_dir_all(dir.join("hls/high")).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello shoal\n").unwrap();
    let pattern: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(dir.join("pattern.bin"), pattern).unwrap();
    std::fs::write(
        dir.join("hls/master.m3u8"),
        "#EXTM3U\n#EXT-X-VERSION:6\n\
         #EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\"\nhigh/index.m3u8\n\
         #EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x180\nlow/index.m3u8\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("hls/high/index.m3u8"),
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MAP:URI=\"init.mp4\"\n\
         #EXTINF:2.000000,\nseg0.m4s\n#EXTINF:1.500000,\nseg1.m4s\n#EXT-X-ENDLIST\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("hls/low/index.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n\
         #EXTINF:2.002000,\nseg3.ts\n#EXT-X-ENDLIST\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("hls/high/init.mp4"),
        "init section of the high rendition",
    )
    .unwrap();
    std::fs::write(
        dir.join("hls/high/seg0.m4s"),
        "first high segment ".repeat(20),
    )
    .unwrap();
    std::fs::write(dir.join("hls/high/seg1.m4s"), "second high segment").unwrap();
    std::fs::write(dir.join("hls/low/seg3.ts"), vec![0x47u8; 188 * 3]).unwrap();
}

struct Case {
    name: &'static str,
    input: &'static str,
    hls: bool,
    options: ImportOptions,
}

fn cases() -> Vec<Case> {
    let opts = |k, m, segment_size| ImportOptions {
        k,
        m,
        segment_size,
        creator: None,
    };
    vec![
        Case {
            name: "hello",
            input: "hello.txt",
            hls: false,
            options: opts(4, 2, 4 << 20),
        },
        Case {
            name: "pattern",
            input: "pattern.bin",
            hls: false,
            options: opts(4, 2, 400),
        },
        Case {
            name: "hls",
            input: "hls/master.m3u8",
            hls: true,
            options: opts(3, 1, 1 << 20),
        },
    ]
}

/// Imports a case into a fresh store; returns the root and every block.
fn import_case(inputs: &Path, case: &Case) -> (Cid, BTreeMap<String, Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Blockstore::create(&dir.path().join("b.redb"), &StoreOptions::default()).unwrap();
    let path = inputs.join(case.input);
    let imported = if case.hls {
        import_hls(&store, &path, &case.options, &mut |_| {}).unwrap()
    } else {
        import_file(&store, &path, &case.options, &mut |_| {}).unwrap()
    };
    let blocks = store
        .list()
        .unwrap()
        .into_iter()
        .map(|(cid, _)| (cid.to_string(), store.require(&cid).unwrap()))
        .collect();
    (imported.root, blocks)
}

#[test]
fn shoal_reproduces_its_golden_vectors() {
    let vectors = vectors_dir();
    let bless = std::env::var_os("SHOAL_BLESS").is_some();
    if bless {
        for dir in ["inputs"].into_iter().chain(cases().iter().map(|c| c.name)) {
            let _ = std::fs::remove_dir_all(vectors.join(dir));
        }
        write_inputs(&vectors.join("inputs"));
    }
    // The inputs are checked in; regenerating them must give the same bytes.
    let fresh = tempfile::tempdir().unwrap();
    write_inputs(fresh.path());
    for case in cases() {
        let (root, blocks) = import_case(fresh.path(), &case);
        let case_dir = vectors.join(case.name);
        if bless {
            std::fs::create_dir_all(&case_dir).unwrap();
            std::fs::write(case_dir.join("ROOT"), format!("{root}\n")).unwrap();
            for (cid, bytes) in &blocks {
                std::fs::write(case_dir.join(format!("{cid}.block")), bytes).unwrap();
            }
        }
        let expected_root = std::fs::read_to_string(case_dir.join("ROOT"))
            .unwrap_or_else(|e| panic!("{}: {e}; run with SHOAL_BLESS=1", case_dir.display()));
        assert_eq!(
            root.to_string(),
            expected_root.trim(),
            "root of {}",
            case.name
        );
        let mut on_disk = BTreeMap::new();
        for entry in std::fs::read_dir(&case_dir).unwrap() {
            let path = entry.unwrap().path();
            if let Some(cid) = path
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .strip_suffix(".block")
            {
                on_disk.insert(cid.to_owned(), std::fs::read(&path).unwrap());
            }
        }
        assert_eq!(blocks, on_disk, "blocks of {}", case.name);
    }
}

#[test]
fn every_vector_block_hashes_to_its_name_and_decodes_strictly() {
    let vectors = vectors_dir();
    for case in cases() {
        let case_dir = vectors.join(case.name);
        let root = std::fs::read_to_string(case_dir.join("ROOT")).unwrap();
        let root = Cid::try_from(root.trim()).unwrap();
        let read = |cid: &Cid| std::fs::read(case_dir.join(format!("{cid}.block"))).unwrap();
        let stream = StreamManifest::from_block(&read(&root)).unwrap();
        assert_eq!(stream.to_block().0, root);
        // Walk the DAG: every link resolves to a block that hashes to it.
        let mut stack = vec![root];
        let mut seen = std::collections::HashSet::new();
        while let Some(cid) = stack.pop() {
            if !seen.insert(cid) {
                continue;
            }
            let bytes = read(&cid);
            block::verify(&cid, &bytes).unwrap();
            if Codec::of(&cid) == Some(Codec::DagCbor) && cid != root {
                let seg = SegmentManifest::from_block(&bytes).unwrap();
                assert_eq!(seg.shards.len(), usize::from(seg.k + seg.m));
            }
            stack.extend(links(&cid, &bytes).unwrap());
        }
        let files = std::fs::read_dir(&case_dir).unwrap().count() - 1; // ROOT
        assert_eq!(
            seen.len(),
            files,
            "{}: every block file is reachable from the root",
            case.name
        );
    }
}

#[test]
fn checked_in_inputs_are_the_generated_ones() {
    let fresh = tempfile::tempdir().unwrap();
    write_inputs(fresh.path());
    let checked_in = vectors_dir().join("inputs");
    for rel in [
        "hello.txt",
        "pattern.bin",
        "hls/master.m3u8",
        "hls/high/index.m3u8",
        "hls/low/seg3.ts",
    ] {
        assert_eq!(
            std::fs::read(fresh.path().join(rel)).unwrap(),
            std::fs::read(checked_in.join(rel)).unwrap(),
            "{rel}"
        );
    }
}

/// The signed channel messages of `channel/`: an announcement and a record
/// made with a fixed key. Ed25519 signatures are deterministic, so another
/// implementation signing the same fields with the same key must produce
/// these bytes exactly, and must open them.
#[test]
fn channel_messages_match_their_golden_vectors() {
    use shoal_protocol::channel::{
        Announcement, ChannelKey, ChannelRecord, LiveRendition, Origin, RecentSegment,
    };
    let dir = vectors_dir().join("channel");
    let bless = std::env::var_os("SHOAL_BLESS").is_some();
    let key = ChannelKey::from_seed(&[7u8; 32]);
    let shard = block::cid_of(Codec::Raw, b"shard");
    let manifest = SegmentManifest {
        version: 1,
        index: 42,
        length: 10,
        duration_us: Some(2_000_000),
        hash: block::sha256_multihash(&block::sha256(b"0123456789")).to_bytes(),
        k: 2,
        m: 1,
        shard_size: 64,
        shards: vec![shard; 3],
    };
    let (manifest_cid, manifest_bytes) = manifest.to_block();
    let publisher = b"\x00\x24\x08\x01\x12\x20publisher-peer-id-bytes-32-long!";
    let announcement = key.announce(
        0,
        42,
        1_764_000_000_000,
        "seg042.ts",
        publisher,
        manifest_bytes,
    );
    let record = key.sign_record(&ChannelRecord {
        name: "vectors".into(),
        sequence: 7,
        expires_ms: 1_764_000_060_000,
        target_duration_us: 2_000_000,
        renditions: vec![LiveRendition {
            playlist: "index.m3u8".into(),
            bandwidth: Some(800_000),
            resolution: Some("640x360".into()),
            codecs: Some("avc1.64001e,mp4a.40.2".into()),
            segment_extension: "ts".into(),
            recent: vec![RecentSegment {
                sequence: 42,
                manifest: manifest_cid,
                duration_us: 2_000_000,
            }],
            ..LiveRendition::default()
        }],
        origins: vec![Origin("https://cdn.example/live".into())],
        ..ChannelRecord::default()
    });
    let files = [
        ("CHANNEL", format!("{}\n", key.id()).into_bytes()),
        ("announcement.cbor", announcement),
        ("record.cbor", record),
    ];
    if bless {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in &files {
        let on_disk = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("channel/{name}: {e}; run with SHOAL_BLESS=1"));
        assert!(&on_disk == bytes, "channel/{name} differs");
    }
    let a = Announcement::open(&key.id(), &files[1].1).unwrap();
    assert_eq!((a.sequence, a.manifest_cid), (42, manifest_cid));
    let r = ChannelRecord::open(&key.id(), &files[2].1).unwrap();
    assert_eq!(r.renditions[0].recent[0].manifest, manifest_cid);
}
