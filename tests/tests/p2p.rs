//! Nodes in one process on 127.0.0.1 find each other through the DHT and
//! swap verified blocks over Bitswap.

use std::sync::Arc;
use std::time::Duration;

use shoal_node::libp2p::{Multiaddr, PeerId};
use shoal_node::{Node, NodeConfig, identity};
use shoal_protocol::block::Cid;
use shoal_storage::{Blockstore, ImportOptions, StoreOptions, import_file};
use shoal_tests::Sandbox;

/// The longest any test here waits for a fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

struct TestNode {
    node: Node,
    addr: Multiaddr,
    _dir: tempfile::TempDir,
}

async fn start(transport: &str, bootstrap: Option<&Multiaddr>) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Blockstore::create(&dir.path().join("blocks.redb"), &StoreOptions::default()).unwrap();
    let key = identity::load_or_create(&dir.path().join("identity.key")).unwrap();
    let listen: Multiaddr = match transport {
        "quic" => "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        _ => "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
    };
    let config = NodeConfig {
        listen: vec![listen],
        bootstrap: bootstrap.into_iter().cloned().collect(),
        mdns: false,
        ..NodeConfig::default()
    };
    let node = Node::start(config, key, Arc::new(store)).await.unwrap();
    let addr = node.listen_addrs().await.unwrap()[0]
        .clone()
        .with(shoal_node::libp2p::multiaddr::Protocol::P2p(node.peer_id()));
    TestNode {
        node,
        addr,
        _dir: dir,
    }
}

/// Imports a file of `len` random bytes into `node`'s store; returns the
/// root and the bytes.
fn import(sb: &Sandbox, node: &Node, len: u64, seed: u64) -> (Cid, Vec<u8>) {
    let (path, _) = sb.write_random_file(&format!("in-{seed}.bin"), len, seed);
    let options = ImportOptions {
        segment_size: 1 << 20,
        ..ImportOptions::default()
    };
    let imported = import_file(node.store(), &path, &options, &mut |_| {}).unwrap();
    (imported.root, std::fs::read(path).unwrap())
}

fn read_back(node: &Node, root: &Cid) -> Vec<u8> {
    let mut out = Vec::new();
    shoal_storage::write_stream(node.store(), root, &mut out, &mut |_| {}).unwrap();
    out
}

async fn wait_for_peers(node: &Node, n: usize) {
    for _ in 0..200 {
        if node.peers().await.unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never had {n} peers", node.peer_id());
}

async fn five_nodes_fetch(transport: &str) {
    let sb = Sandbox::new();
    let b = start(transport, None).await;
    let a = start(transport, Some(&b.addr)).await;
    let c = start(transport, Some(&b.addr)).await;
    let d = start(transport, Some(&b.addr)).await;
    wait_for_peers(&b.node, 3).await;
    let (root, bytes) = import(&sb, &a.node, 6_000_000, 1);
    a.node.provide(root).await.unwrap();

    // E knows only B.
    let e = start(transport, Some(&b.addr)).await;
    wait_for_peers(&e.node, 1).await;
    let report = tokio::time::timeout(FETCH_TIMEOUT, e.node.fetch(root))
        .await
        .expect("fetch finished in time")
        .unwrap();
    assert_eq!(read_back(&e.node, &root), bytes);
    assert!(report.bytes_fetched > 0);
    let from: Vec<PeerId> = report.from_peers.iter().map(|(p, _)| *p).collect();
    assert!(from.contains(&a.node.peer_id()), "{report:?}");

    // E now serves it: D fetches and some bytes may come from E.
    let report = tokio::time::timeout(FETCH_TIMEOUT, d.node.fetch(root))
        .await
        .expect("fetch finished in time")
        .unwrap();
    assert_eq!(read_back(&d.node, &root), bytes);
    assert!(report.bytes_fetched > 0);
    for n in [&a, &b, &c, &d, &e] {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_over_tcp() {
    five_nodes_fetch("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_over_quic() {
    five_nodes_fetch("quic").await;
}
