//! The node with nothing but its core (`--no-default-features`: no HTTP
//! API or gateway, no HTTP origins, no chain client, TCP only) does its
//! main job: two nodes find each other, one fetches what the other holds,
//! and an app hears of its peers.

use std::time::Duration;

use shoal_node::{Node, NodeConfig, NodeEvent};

fn config(bootstrap: Vec<shoal_node::libp2p::Multiaddr>) -> NodeConfig {
    NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap,
        mdns: false,
        ..NodeConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_core_nodes_swap_a_stream_and_report_their_peers() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let seeder = Node::start_in(dirs[0].path(), config(Vec::new()))
        .await
        .unwrap();
    let addr = seeder.dialable_addr().await.unwrap();
    let mut events = seeder.events();
    let fetcher = Node::start_in(dirs[1].path(), config(vec![addr]))
        .await
        .unwrap();

    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let file = dirs[0].path().join("movie.bin");
    std::fs::write(&file, &bytes).unwrap();
    let options = shoal_storage::ImportOptions {
        segment_size: 1 << 20,
        ..Default::default()
    };
    let root = shoal_storage::import_file(seeder.store(), &file, &options, &mut |_| {})
        .unwrap()
        .root;
    seeder.provide(root).await.unwrap();

    let report = fetcher.fetch(root).await.unwrap();
    assert_eq!(report.segments, 3);
    assert_eq!(report.from_peers[0].0, seeder.peer_id());
    let mut out = Vec::new();
    shoal_storage::write_stream(fetcher.store(), &root, &mut out, &mut |_| {}).unwrap();
    assert!(out == bytes, "the fetched stream differs");
    // The fetched stream is pinned: a copy, not a cache.
    assert_eq!(fetcher.store().pins().unwrap(), vec![root]);

    let peers = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(NodeEvent::Peers(n)) = events.recv().await {
                return n;
            }
        }
    })
    .await
    .expect("the seeder reports its peer");
    assert_eq!(peers, 1);
    fetcher.stop().await;
    seeder.stop().await;
}
