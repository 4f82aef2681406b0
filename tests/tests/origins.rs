//! Origins are URLs the user or the channel's key vouched for, and nothing
//! else: a viewer's node is not a web page's (or a record signer's) way
//! into another host or into the viewer's own network.

use std::time::{Duration, Instant};

use shoal_node::NodeConfig;
use shoal_protocol::channel::{ChannelRecord, LiveRendition, Origin as RecordOrigin};
use shoal_tests::live::{TestNode, channel_key, hls_folder, one_at_a_time, start, start_node};
use shoal_tests::origin::{Mode, Origin};

/// A live playlist of three (meaningless) MPEG-TS segments in `dir`.
fn write_live_folder(dir: &std::path::Path) {
    let mut playlist = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n",
    );
    for n in 0..3 {
        std::fs::write(dir.join(format!("seg{n}.ts")), vec![0x47u8; 188 * 50]).unwrap();
        playlist.push_str(&format!("#EXTINF:1.000,\nseg{n}.ts\n"));
    }
    std::fs::write(dir.join("index.m3u8"), playlist).unwrap();
}

/// Waits (bounded) until `done` holds or `limit` passes.
async fn within(limit: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !done() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_redirect_to_another_host_is_refused() {
    let _serial = one_at_a_time().await;
    let (_work, dir) = hls_folder();
    write_live_folder(&dir);
    let elsewhere = Origin::start(dir.clone(), Mode::Faithful).await;
    let named = Origin::start(dir.clone(), Mode::Redirect).await;
    named.redirect_to(&elsewhere.url);
    let viewer = start(None, shoal_tests::live::viewer_config()).await;
    let channel = channel_key().id();
    viewer
        .node
        .watch_with_origins(channel, &[format!("{}/index.m3u8", named.url)])
        .await
        .unwrap();
    within(Duration::from_secs(15), || named.segment_requests() >= 3).await;
    let stats = viewer.node.live_view(channel).await.unwrap().unwrap().stats;
    println!(
        "{} segment requests to the named origin, {} to the host it redirects to; {stats:?}",
        named.segment_requests(),
        elsewhere.requests()
    );
    assert!(
        named.segment_requests() >= 3,
        "the viewer proxied the origin"
    );
    assert_eq!(elsewhere.requests(), 0, "the redirect was not followed");
    assert_eq!(stats.segments, 0);
    viewer.node.stop().await;
}

/// A broadcaster whose signed record names an origin on 127.0.0.1, and a
/// viewer that finds only the record.
async fn viewer_of_a_record_naming(origin: &Origin, private_origins: bool) -> (TestNode, TestNode) {
    let broadcaster = start(None, Default::default()).await;
    let key = channel_key();
    let record = key.sign_record(&ChannelRecord {
        name: "private".into(),
        sequence: 1,
        expires_ms: u64::MAX,
        target_duration_us: 1_000_000,
        renditions: vec![LiveRendition {
            playlist: "index.m3u8".into(),
            segment_extension: "ts".into(),
            ..LiveRendition::default()
        }],
        origins: vec![RecordOrigin(origin.url.clone())],
        ..ChannelRecord::default()
    });
    broadcaster
        .node
        .put_channel_record(key.id(), record)
        .await
        .unwrap();
    let viewer = start_node(NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: vec![broadcaster.addr.clone()],
        mdns: false,
        max_connections_per_ip: None,
        private_origins,
        ..NodeConfig::default()
    })
    .await;
    viewer.node.watch(key.id()).await.unwrap();
    (broadcaster, viewer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_only_a_record_names_may_not_be_a_private_address() {
    let _serial = one_at_a_time().await;
    let (_work, dir) = hls_folder();
    write_live_folder(&dir);
    let origin = Origin::start(dir.clone(), Mode::Faithful).await;
    // Allowed (a LAN broadcast): the viewer reads the record's origin.
    let started = Instant::now();
    let (b, v) = viewer_of_a_record_naming(&origin, true).await;
    within(Duration::from_secs(15), || origin.requests() > 0).await;
    let took = started.elapsed();
    let allowed = origin.requests();
    v.node.stop().await;
    b.node.stop().await;
    assert!(
        allowed > 0,
        "with private origins allowed the record's origin is read"
    );
    // By default: refused, not one request, in twice the time the
    // allowed viewer took to ask.
    let (b, v) = viewer_of_a_record_naming(&origin, false).await;
    tokio::time::sleep((took * 2).max(Duration::from_secs(3))).await;
    println!(
        "requests to a 127.0.0.1 origin named only by a record: {} allowed, {} by default",
        allowed,
        origin.requests() - allowed
    );
    assert_eq!(origin.requests(), allowed, "not one request by default");
    v.node.stop().await;
    b.node.stop().await;
}
