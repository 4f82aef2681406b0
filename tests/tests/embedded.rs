//! The node as an app embeds it: no daemon, a gateway of its own for the
//! player, events to show, and a stop after which the same repo opens
//! again in the same process.

use std::time::Duration;

use shoal_node::gateway;
use shoal_node::repo::{Repo, RepoPaths};
use shoal_node::{Node, NodeConfig, NodeEvent};
use shoal_protocol::live::LiveEvent;
use shoal_tests::live::{Encoder, channel_key, hls_folder, one_at_a_time, spawn_broadcast, start};

/// The node of the repo at `dir`, on loopback, joined through `bootstrap`.
async fn start_embedded(dir: &std::path::Path, bootstrap: &shoal_node::libp2p::Multiaddr) -> Node {
    let paths = RepoPaths::load(dir).unwrap();
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: vec![bootstrap.clone()],
        mdns: false,
        ..NodeConfig::from_repo(&paths).unwrap()
    };
    Node::start_repo(&paths, config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_node_plays_a_channel_through_its_own_gateway_stops_and_starts_again() {
    let _serial = one_at_a_time().await;
    let (_work, hls_dir) = hls_folder();
    let repo = tempfile::tempdir().unwrap();
    Repo::init(repo.path()).unwrap();
    let broadcaster = start(None, Default::default()).await;
    let key = channel_key();
    let channel = key.id();

    let node = start_embedded(repo.path(), &broadcaster.addr).await;
    let mut events = node.events();
    let server = gateway::serve(node.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let published = spawn_broadcast(&broadcaster.node, key, hls_dir.clone(), Vec::new());
    let encoder = Encoder::start(&hls_dir, 6);

    // The watch URL is all a player needs: asking for it starts watching.
    let http = reqwest::Client::new();
    let playlist = http
        .get(format!("{}/live/{channel}/index.m3u8", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(playlist.status(), 200);
    let text = playlist.text().await.unwrap();
    let first = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap_or_else(|| panic!("no segment listed: {text}"))
        .to_owned();
    let segment = http
        .get(format!("{}/live/{channel}/{first}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(segment.status(), 200);
    let view = node.live_view(channel).await.unwrap().unwrap();
    let w = view.renditions[0]
        .window
        .iter()
        .find(|w| first.ends_with(&format!("/{}.ts", w.sequence)))
        .unwrap()
        .clone();
    assert_eq!(
        segment.bytes().await.unwrap().to_vec(),
        std::fs::read(hls_dir.join(&w.uri)).unwrap()
    );
    // Paths that name nothing, or name a segment another way, are refused
    // before any work: one parser reads them all (shoal_protocol::http).
    for (path, status) in [
        ("/live/not-a-channel/index.m3u8".to_string(), 400),
        ("/vod/bafy!/index.m3u8".to_string(), 400),
        (format!("/live/{channel}/00/index.m3u8"), 404),
        (format!("/live/{channel}/0/+{}.ts", w.sequence), 404),
        (format!("/live/{channel}/0/0{}.ts", w.sequence), 404),
        (format!("/live/{channel}/0/%3{}.ts", w.sequence % 10), 404),
        (format!("/live/{channel}/0/{}.ts/more", w.sequence), 404),
        (format!("/live/{channel}/99/{}.ts", w.sequence), 404),
    ] {
        let answer = http
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{path}");
    }
    // The app heard of the segments as they were ready.
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(NodeEvent::Live {
                    channel: c,
                    event: LiveEvent::SegmentReady { sequence, .. },
                }) if c == channel => return sequence,
                Ok(_) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await
    .expect("a segment-ready event");
    assert!(
        view.renditions[0]
            .window
            .iter()
            .any(|w| w.sequence == ready)
    );

    // Stop everything of the node; then the repo opens again.
    drop(encoder);
    published.abort();
    server.stop().await;
    node.stop().await;
    drop(node);
    let again = start_embedded(repo.path(), &broadcaster.addr).await;
    // What the first run stored is there.
    assert!(again.store().has(&w.manifest).unwrap());
    // A stopped node says so.
    let stopped = again.clone();
    again.stop().await;
    assert!(matches!(
        stopped.peers().await,
        Err(shoal_node::NodeError::ShutDown)
    ));
    drop(stopped);
    broadcaster.node.stop().await;
}
