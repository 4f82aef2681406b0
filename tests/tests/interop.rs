//! Interop with a real IPFS implementation: helia (IPFS in JavaScript, from
//! npm) fetches blocks from shoal over Bitswap, and shoal fetches one from
//! helia. `scripts/test` installs helia into `tests/interop/node_modules`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use shoal_node::{Node, NodeConfig, identity};
use shoal_protocol::block::Cid;
use shoal_protocol::manifest::{SegmentManifest, StreamManifest};
use shoal_storage::{Blockstore, ImportOptions, StoreOptions, import_file};
use shoal_tests::Sandbox;

fn interop_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop");
    assert!(
        dir.join("node_modules/helia").exists(),
        "helia is not installed: run ./scripts/test, which runs `npm ci` in {}",
        dir.display()
    );
    dir
}

async fn shoal_node(dir: &std::path::Path) -> (Node, String) {
    let store = Blockstore::create(&dir.join("blocks.redb"), &StoreOptions::default()).unwrap();
    let key = identity::load_or_create(&dir.join("identity.key")).unwrap();
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        mdns: false,
        ..NodeConfig::default()
    };
    let node = Node::start(config, key, Arc::new(store)).await.unwrap();
    let addr = format!(
        "{}/p2p/{}",
        node.listen_addrs().await.unwrap()[0],
        node.peer_id()
    );
    (node, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helia_fetches_blocks_from_shoal() {
    let interop = interop_dir();
    let sb = Sandbox::new();
    let (node, addr) = shoal_node(sb.dir.path()).await;
    let (path, _) = sb.write_random_file("in.bin", 2_000_000, 4);
    let imported =
        import_file(node.store(), &path, &ImportOptions::default(), &mut |_| {}).unwrap();
    // A raw shard, a segment manifest and the root (dag-cbor).
    let root_bytes = node.store().require(&imported.root).unwrap();
    let stream = StreamManifest::from_block(&root_bytes).unwrap();
    let seg_cid = stream.renditions[0].segments[0].cid;
    let seg = SegmentManifest::from_block(&node.store().require(&seg_cid).unwrap()).unwrap();
    let wanted: Vec<Cid> = vec![seg.shards[3], seg_cid, imported.root];

    let mut cmd = Command::new("node");
    cmd.current_dir(&interop)
        .arg("helia.mjs")
        .arg("fetch")
        .arg(&addr);
    cmd.args(wanted.iter().map(|c| c.to_string()));
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .expect("helia finished within 90 s")
    .unwrap()
    .expect("node runs");
    assert!(
        out.status.success(),
        "helia failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), wanted.len(), "{lines:?}");
    for (cid, line) in wanted.iter().zip(&lines) {
        let bytes = node.store().require(cid).unwrap();
        let expected = format!("{cid} {} {}", hex(&Sha256::digest(&bytes)), bytes.len());
        assert_eq!(line, &expected);
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_fetches_a_block_from_helia() {
    let interop = interop_dir();
    let sb = Sandbox::new();
    let (node, _) = shoal_node(sb.dir.path()).await;
    let data = b"a block that only helia has".to_vec();
    let mut child = Command::new("node")
        .current_dir(&interop)
        .args(["helia.mjs", "serve", &hex(&data)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(60), line)
        .await
        .expect("helia ready within 60 s")
        .unwrap()
        .unwrap();
    let mut parts = line.split_whitespace();
    assert_eq!(parts.next(), Some("ready"), "{line}");
    let addr = parts.next().unwrap().parse().unwrap();
    let cid = Cid::try_from(parts.next().unwrap()).unwrap();

    node.dial(addr).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(60), node.fetch_block(cid))
        .await
        .expect("fetched within 60 s")
        .unwrap();
    assert_eq!(got, data);
    drop(child.stdin.take()); // helia stops when its stdin closes
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    node.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
