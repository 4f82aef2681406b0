//! Live channels on loopback: a real encoder (ffmpeg, in real time) writes
//! HLS into a folder, a broadcaster node publishes it, and viewer nodes
//! fetch every segment from each other and the broadcaster, or from an
//! HTTP origin serving the folder when peers cannot.

use std::time::Duration;

use shoal_node::NodeConfig;
use shoal_protocol::channel::ChannelKey;
use shoal_protocol::live::LiveConfig;
use shoal_tests::live::{
    Encoder, Forger, TestNode, assert_has_every_segment, assert_segments_intact, channel_key,
    hls_folder, one_at_a_time, spawn_broadcast, start, start_with, viewer_config, viewers,
    viewers_with, wait_for_segments,
};
use shoal_tests::origin::{Mode, Origin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_viewers_receive_every_segment_byte_identical() {
    let _serial = one_at_a_time().await;
    let (_work, hls_dir) = hls_folder();
    let broadcaster = start(None, LiveConfig::default()).await;
    let key = channel_key();
    let channel = key.id();
    let viewers = viewers(10, &broadcaster.addr, channel).await;
    let published = spawn_broadcast(&broadcaster.node, key, hls_dir.clone(), Vec::new());
    let encoder = Encoder::start(&hls_dir, 8);
    let published = published.await.unwrap();
    drop(encoder);
    let count = published.len();
    assert!(count >= 7, "the encoder wrote {count} segments");
    for v in &viewers {
        wait_for_segments(&v.node, channel, count).await;
    }
    let mut from_peers = 0;
    for v in &viewers {
        assert_has_every_segment(&v.node, channel, &hls_dir, count).await;
        let view = v.node.live_view(channel).await.unwrap().unwrap();
        let stats = view.stats;
        eprintln!(
            "viewer {}: {} segments, {} late, p50 {:?} ms, p95 {:?} ms, {} peers",
            v.node.peer_id(),
            stats.segments,
            stats.late,
            stats.latency_quantile_ms(0.5),
            stats.latency_quantile_ms(0.95),
            view.peers
        );
        assert_eq!(stats.missed, 0, "{stats:?}");
        assert_eq!(stats.bytes_from_http, 0);
        from_peers += stats.bytes_from_peers + stats.bytes_from_source;
    }
    // Each viewer took at least the data shards of every segment.
    let content: u64 = published.iter().map(|p| p.bytes).sum();
    assert!(from_peers >= 10 * content);
    for v in viewers {
        v.node.stop().await;
    }
    broadcaster.node.stop().await;
}

/// The broadcaster sends each shard of a new segment to two viewers (the
/// first to ask) and tells the rest DONT_HAVE: they trade it among
/// themselves, so the broadcaster's upload is two copies of the shards
/// whatever the audience — even when every viewer asks it for everything
/// at once, as they all do when trading is slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broadcaster_sends_each_shard_twice_and_viewers_trade_the_rest() {
    let _serial = one_at_a_time().await;
    let (_work, hls_dir) = hls_folder();
    // A ration longer than the test: no shard ever leaves the broadcaster
    // a third time, however slowly the viewers trade.
    let broadcaster = start(
        None,
        LiveConfig {
            ration_window: Duration::from_secs(3600),
            ..LiveConfig::default()
        },
    )
    .await;
    let key = channel_key();
    let channel = key.id();
    // Viewers that do not spare the source at all: each asks it for every
    // shard at once.
    let mut greedy = LiveConfig {
        source_wait: Duration::ZERO,
        ..shoal_tests::live::viewer_config()
    };
    greedy.fetch.max_in_flight_per_peer = 14;
    let viewers = viewers_with(8, &broadcaster.addr, channel, greedy).await;
    let published = spawn_broadcast(&broadcaster.node, key, hls_dir.clone(), Vec::new());
    let encoder = Encoder::start(&hls_dir, 6);
    let published = published.await.unwrap();
    drop(encoder);
    let count = published.len();
    assert!(count >= 5, "the encoder wrote {count} segments");
    for v in &viewers {
        wait_for_segments(&v.node, channel, count).await;
    }
    for v in &viewers {
        assert_has_every_segment(&v.node, channel, &hls_dir, count).await;
    }
    // Two copies of every shard (k = 10, m = 4; a shard is a tenth of the
    // segment rounded up to 64 bytes), and a segment manifest (under 2 KiB)
    // per viewer for the first segment, which viewers may learn of from
    // the channel record before its announcement.
    let shards: u64 = published
        .iter()
        .map(|p| 14 * p.bytes.div_ceil(10).div_ceil(64) * 64)
        .sum();
    let bound = 2 * shards + 8 * 2048;
    let served: u64 = broadcaster
        .node
        .accounts()
        .await
        .unwrap()
        .iter()
        .map(|(_, a)| a.served_bytes)
        .sum();
    let content: u64 = published.iter().map(|p| p.bytes).sum();
    eprintln!(
        "broadcaster served {served} bytes for {content} bytes of segments ({shards} of shards), bound {bound}"
    );
    assert!(served <= bound, "served {served}, two copies are {bound}");
    for v in viewers {
        v.node.stop().await;
    }
    broadcaster.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_that_stay_miss_no_deadline_when_three_leave() {
    let _serial = one_at_a_time().await;
    let (_work, hls_dir) = hls_folder();
    let broadcaster = start(None, LiveConfig::default()).await;
    let key = channel_key();
    let channel = key.id();
    let mut viewers = viewers(10, &broadcaster.addr, channel).await;
    let published = spawn_broadcast(&broadcaster.node, key, hls_dir.clone(), Vec::new());
    let encoder = Encoder::start(&hls_dir, 8);
    // Three viewers leave once the stream is under way.
    wait_for_segments(&viewers[0].node, channel, 3).await;
    let leaving: Vec<TestNode> = viewers.drain(..3).collect();
    for v in &leaving {
        v.node.stop().await;
    }
    let published = published.await.unwrap();
    drop(encoder);
    let count = published.len();
    for v in &viewers {
        wait_for_segments(&v.node, channel, count).await;
    }
    for v in &viewers {
        assert_has_every_segment(&v.node, channel, &hls_dir, count).await;
        let stats = v.node.live_view(channel).await.unwrap().unwrap().stats;
        assert_eq!((stats.missed, stats.late), (0, 0), "{stats:?}");
    }
    for v in viewers {
        v.node.stop().await;
    }
    broadcaster.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_announcements_are_refused_and_cost_the_sender_its_score() {
    let _serial = one_at_a_time().await;
    let (_work, hls_dir) = hls_folder();
    let broadcaster = start(None, LiveConfig::default()).await;
    let key = channel_key();
    let replayer = ChannelKey::from_seed(&key.seed());
    let channel = key.id();
    let viewer = viewers(1, &broadcaster.addr, channel).await.remove(0);
    // One forger per forgery: the first invalid message already puts its
    // sender under gossipsub's graylist threshold, after which the viewer
    // ignores it without looking. A shoal node would refuse to publish
    // them: these are bare gossipsub peers.
    let mut forgers = Vec::new();
    for _ in 0..3 {
        forgers.push(Forger::connect(&viewer.addr, channel.topic(0)).await);
    }
    let published = spawn_broadcast(&broadcaster.node, key, hls_dir.clone(), Vec::new());
    let encoder = Encoder::start(&hls_dir, 6);
    wait_for_segments(&viewer.node, channel, 3).await;

    let view = viewer.node.live_view(channel).await.unwrap().unwrap();
    let first = view.renditions[0].window[0].clone();
    let manifest = viewer.node.store().get(&first.manifest).unwrap().unwrap();
    let now = shoal_node::live::unix_ms();
    // Signed by a key that is not the channel's.
    let publisher = broadcaster.node.peer_id().to_bytes();
    let forged = channel_key().announce(0, 1000, now, "seg999.ts", &publisher, manifest.clone());
    // Signed by the channel, but for a segment long past: a replay.
    let rewound = replayer.announce(0, first.sequence, now, &first.uri, &publisher, manifest);
    // Far over the size limit.
    let oversized = vec![0xA5u8; 40 << 10];
    for (forger, message) in forgers.iter().zip([forged, rewound, oversized]) {
        forger.publish(message).await;
    }
    for forger in &forgers {
        let mut score = None;
        for _ in 0..50 {
            score = viewer.node.gossip_score(forger.peer).await.unwrap();
            if score.is_some_and(|s| s < 0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            score.is_some_and(|s| s < 0.0),
            "the forger's score is {score:?}"
        );
    }
    let view = viewer.node.live_view(channel).await.unwrap().unwrap();
    assert_eq!(view.stats.rejected, 3, "{:?}", view.stats);
    assert!(view.renditions[0].window.iter().all(|w| w.sequence < 1000));
    let honest = viewer
        .node
        .gossip_score(broadcaster.node.peer_id())
        .await
        .unwrap();
    assert!(honest.is_none_or(|s| s >= 0.0), "broadcaster: {honest:?}");

    // The real stream goes on, untouched.
    let published = published.await.unwrap();
    drop(encoder);
    let count = published.len();
    wait_for_segments(&viewer.node, channel, count).await;
    assert_has_every_segment(&viewer.node, channel, &hls_dir, count).await;
    drop(forgers);
    for n in [&viewer, &broadcaster] {
        n.node.stop().await;
    }
}

/// A broadcaster that uploads at 8 kB/s: far too slow for its own stream,
/// so peers alone cannot make the deadlines.
async fn slow_broadcaster() -> TestNode {
    start_with(
        None,
        NodeConfig {
            upload_bytes_per_sec: Some(8_000),
            ..NodeConfig::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_origin_fills_in_what_slow_peers_cannot_deliver_in_time() {
    let _serial = one_at_a_time().await;
    let (_work, hls_dir) = hls_folder();
    let origin = Origin::start(hls_dir.clone(), Mode::Faithful).await;
    let broadcaster = slow_broadcaster().await;
    let key = channel_key();
    let channel = key.id();
    let viewer = viewers(1, &broadcaster.addr, channel).await.remove(0);
    let published = spawn_broadcast(
        &broadcaster.node,
        key,
        hls_dir.clone(),
        vec![origin.url.clone()],
    );
    let encoder = Encoder::start(&hls_dir, 8);
    let published = published.await.unwrap();
    drop(encoder);
    let count = published.len();
    wait_for_segments(&viewer.node, channel, count).await;
    assert_has_every_segment(&viewer.node, channel, &hls_dir, count).await;
    let stats = viewer.node.live_view(channel).await.unwrap().unwrap().stats;
    eprintln!("{stats:?}");
    assert_eq!((stats.missed, stats.late), (0, 0), "{stats:?}");
    assert!(stats.bytes_from_http > 0, "{stats:?}");
    assert!(origin.segment_requests() > 0);
    // The origin gave data shards only; the viewer made the parity itself,
    // so it can serve peers any shard of every segment.
    let view = viewer.node.live_view(channel).await.unwrap().unwrap();
    let store = viewer.node.store();
    for w in &view.renditions[0].window {
        let bytes = store.get(&w.manifest).unwrap().unwrap();
        let manifest = shoal_protocol::manifest::SegmentManifest::from_block(&bytes).unwrap();
        for (i, shard) in manifest.shards.iter().enumerate() {
            assert!(
                store.size(shard).unwrap().is_some(),
                "segment {} lacks shard {i}",
                w.sequence
            );
        }
    }
    viewer.node.stop().await;
    broadcaster.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_peers_a_viewer_plays_the_origin_as_a_plain_hls_proxy() {
    let _serial = one_at_a_time().await;
    let (_work, hls_dir) = hls_folder();
    let origin = Origin::start(hls_dir.clone(), Mode::Faithful).await;
    // Nobody broadcasts on shoal and the viewer knows no peer: all it has
    // is the channel id and the origin's playlist.
    let viewer = start(None, shoal_tests::live::viewer_config()).await;
    let channel = channel_key().id();
    viewer
        .node
        .watch_with_origins(channel, &[format!("{}/index.m3u8", origin.url)])
        .await
        .unwrap();
    let count = Encoder::start(&hls_dir, 6).finish(&hls_dir).await;
    assert!(count >= 5, "the encoder wrote {count} segments");
    wait_for_segments(&viewer.node, channel, count).await;
    assert_has_every_segment(&viewer.node, channel, &hls_dir, count).await;
    let view = viewer.node.live_view(channel).await.unwrap().unwrap();
    let stats = view.stats;
    eprintln!("{stats:?}");
    assert!(view.proxying);
    assert_eq!((stats.segments, stats.missed), (count as u64, 0));
    assert_eq!(stats.bytes_from_peers + stats.bytes_from_source, 0);
    let written: u64 = (0..count)
        .map(|i| {
            std::fs::metadata(hls_dir.join(format!("seg{i:03}.ts")))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(stats.bytes_from_http, written);
    assert_eq!(viewer.node.store().verify_all().unwrap(), Vec::new());
    viewer.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_broadcaster_goes_its_viewers_carry_on_from_the_origin() {
    let _serial = one_at_a_time().await;
    let (_work, hls_dir) = hls_folder();
    let origin = Origin::start(hls_dir.clone(), Mode::Faithful).await;
    let broadcaster = start(None, LiveConfig::default()).await;
    let key = channel_key();
    let channel = key.id();
    let viewers = viewers(2, &broadcaster.addr, channel).await;
    let broadcast = spawn_broadcast(
        &broadcaster.node,
        key,
        hls_dir.clone(),
        vec![origin.url.clone()],
    );
    let encoder = Encoder::start(&hls_dir, 10);
    // A few segments through the swarm, then the broadcaster is gone.
    wait_for_segments(&viewers[0].node, channel, 3).await;
    broadcast.abort();
    broadcaster.node.stop().await;
    let count = encoder.finish(&hls_dir).await;
    for v in &viewers {
        wait_for_segments(&v.node, channel, count).await;
    }
    for v in &viewers {
        assert_has_every_segment(&v.node, channel, &hls_dir, count).await;
        let view = v.node.live_view(channel).await.unwrap().unwrap();
        let stats = view.stats;
        eprintln!("{stats:?}");
        assert!(view.proxying);
        assert_eq!(stats.missed, 0, "{stats:?}");
        assert!(
            stats.bytes_from_source > 0 && stats.bytes_from_http > 0,
            "{stats:?}"
        );
    }
    for v in viewers {
        v.node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_or_altered_segments_from_an_origin_are_refused() {
    let _serial = one_at_a_time().await;
    let (_work, hls_dir) = hls_folder();
    let truncated = Origin::start(hls_dir.clone(), Mode::Truncated).await;
    let altered = Origin::start(hls_dir.clone(), Mode::Altered).await;
    let broadcaster = slow_broadcaster().await;
    let key = channel_key();
    let channel = key.id();
    let viewer = viewers(1, &broadcaster.addr, channel).await.remove(0);
    let published = spawn_broadcast(
        &broadcaster.node,
        key,
        hls_dir.clone(),
        vec![truncated.url.clone(), altered.url.clone()],
    );
    let encoder = Encoder::start(&hls_dir, 5);
    published.await.unwrap();
    drop(encoder);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let view = viewer.node.live_view(channel).await.unwrap().unwrap();
    let stats = &view.stats;
    eprintln!("{stats:?}");
    // Both origins were asked, and nothing they sent was used...
    assert!(truncated.segment_requests() > 0 && altered.segment_requests() > 0);
    assert_eq!(stats.bytes_from_http, 0, "{stats:?}");
    assert!(stats.http_failures > 0, "{stats:?}");
    // ...so whatever the viewer holds came from peers, intact.
    assert_segments_intact(&viewer.node, &view.renditions[0].window, &hls_dir);
    assert_eq!(viewer.node.store().verify_all().unwrap(), Vec::new());
    viewer.node.stop().await;
    broadcaster.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_no_upload_mode_serves_nothing_until_allowed_again() {
    let _serial = one_at_a_time().await;
    let phone = start_with(
        None,
        NodeConfig {
            no_upload: true,
            ..NodeConfig::default()
        },
    )
    .await;
    let data = b"a shard a phone on a metered network keeps to itself".to_vec();
    let cid = shoal_protocol::block::cid_of(shoal_protocol::block::Codec::Raw, &data);
    phone.node.store().put(&cid, &data).unwrap();
    let peer = start(Some(&phone.addr), LiveConfig::default()).await;
    assert!(peer.node.fetch_block(cid).await.is_err());

    let mut limits = phone.node.limits().await.unwrap();
    assert!(limits.no_upload);
    // Nonsense is refused and changes nothing.
    let bad = shoal_node::limits::Limits {
        cache_segments: 1,
        ..limits.clone()
    };
    assert!(phone.node.set_limits(bad).await.is_err());
    limits.no_upload = false;
    limits.upload_bytes_per_sec = Some(1_000_000);
    phone.node.set_limits(limits.clone()).await.unwrap();
    assert_eq!(phone.node.limits().await.unwrap(), limits);
    assert_eq!(peer.node.fetch_block(cid).await.unwrap(), data);
    peer.node.stop().await;
    phone.node.stop().await;
}

/// A channel whose segments are all the same bytes (a static slate,
/// silence): each segment's shards are the others'. A segment leaving a
/// viewer's window, or the broadcaster's store, must not take with it the
/// blocks the segments after it are made of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_of_identical_segments_plays() {
    let _serial = one_at_a_time().await;
    let (_work, dir) = hls_folder();
    let broadcaster = start(None, LiveConfig::default()).await;
    let key = channel_key();
    let channel = key.id();
    let window = 3;
    let viewers = viewers_with(
        2,
        &broadcaster.addr,
        channel,
        LiveConfig {
            window,
            ..viewer_config()
        },
    )
    .await;
    let published = spawn_broadcast(&broadcaster.node, key, dir.clone(), Vec::new());
    // More segments than the broadcaster keeps, a quarter second each.
    let count = shoal_node::broadcast::KEEP_SEGMENTS + 6;
    let slate: Vec<u8> = (0..96 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut playlist = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n",
    );
    for n in 0..count {
        std::fs::write(dir.join(format!("slate{n}.ts")), &slate).unwrap();
        playlist.push_str(&format!("#EXTINF:0.250,\nslate{n}.ts\n"));
        let tmp = dir.join("index.m3u8.tmp");
        std::fs::write(&tmp, &playlist).unwrap();
        std::fs::rename(&tmp, dir.join("index.m3u8")).unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    std::fs::write(dir.join("index.m3u8"), &playlist).unwrap();
    let published = published.await.unwrap();
    assert_eq!(published.len(), count);
    for v in &viewers {
        // Bounded: 10 s for the last segments to arrive.
        for _ in 0..100 {
            let stats = v.node.live_view(channel).await.unwrap().unwrap().stats;
            if stats.segments + stats.missed >= count as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let view = v.node.live_view(channel).await.unwrap().unwrap();
        eprintln!("viewer {}: {:?}", v.node.peer_id(), view.stats);
        assert_eq!(view.stats.missed, 0, "{:?}", view.stats);
        assert_eq!(view.stats.segments, count as u64);
        let held = &view.renditions[0].window;
        assert_eq!(held.len(), window);
        assert_segments_intact(&v.node, held, &dir);
    }
    // The broadcaster let its oldest segments go and still serves the
    // newest, made of the same blocks.
    let last = published.last().unwrap();
    let manifest: shoal_protocol::block::Cid = last.manifest.parse().unwrap();
    let got =
        shoal_storage::assemble::read_segment(broadcaster.node.store(), &manifest, last.sequence)
            .expect("the broadcaster still holds its newest segment");
    assert!(got == slate);
    for v in viewers {
        v.node.stop().await;
    }
    broadcaster.node.stop().await;
}

/// A viewer that asks the broadcaster for everything and reads nothing
/// (a viewer cut off by its network looks the same from the broadcaster)
/// keeps what it was given, but not the broadcaster's shared budget for
/// live shards: an honest viewer gets every new segment while that one
/// is still connected, not only once the broadcaster gives up on it (10 s
/// without progress). In the network lab, half the viewers cut off for
/// 10 s once stalled every viewer's segments so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_reads_nothing_does_not_hold_up_the_broadcaster() {
    use futures::AsyncWriteExt;
    use shoal_protocol::bitswap::wire::{Message, WantEntry, WantType};
    use shoal_protocol::block::{Codec, cid_of};
    use shoal_protocol::manifest::SegmentManifest;
    use shoal_tests::hostile::RawPeer;
    const BITSWAP: &str = "/ipfs/bitswap/1.2.0";

    let _serial = one_at_a_time().await;
    let (_work, hls_dir) = hls_folder();
    let broadcaster = start(None, LiveConfig::default()).await;
    let key = channel_key();
    let channel = key.id();
    let honest = viewers(1, &broadcaster.addr, channel).await;
    let honest = &honest[0].node;

    // Blocks that fill the hostile viewer's stream window and more: its
    // writer at the broadcaster is stuck on them from the start.
    let store = broadcaster.node.store();
    let bulk: Vec<_> = (0..8u8)
        .map(|i| {
            let data = vec![i; 256 << 10];
            let cid = cid_of(Codec::Raw, &data);
            store.put(&cid, &data).unwrap();
            cid
        })
        .collect();
    let want_blocks = |cids: &[shoal_protocol::Cid]| {
        Message {
            wantlist: cids
                .iter()
                .map(|cid| WantEntry {
                    cid: *cid,
                    priority: 1,
                    cancel: false,
                    want_type: WantType::Block,
                    send_dont_have: false,
                })
                .collect(),
            ..Message::default()
        }
        .encode_framed()
    };
    let mut hostile = RawPeer::connect(&broadcaster.addr, &[BITSWAP]).await;
    let mut asking = hostile.open(broadcaster.node.peer_id(), BITSWAP).await;
    asking.write_all(&want_blocks(&bulk)).await.unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let options = shoal_node::broadcast::BroadcastOptions {
        dir: hls_dir.clone(),
        playlist: None,
        origins: Vec::new(),
        import: shoal_storage::ImportOptions::default(),
        name: "test".into(),
    };
    let run = tokio::spawn(shoal_node::broadcast::broadcast(
        broadcaster.node.clone(),
        key,
        options,
        tx,
    ));
    let encoder = Encoder::start(&hls_dir, 12);
    // The hostile viewer asks for every shard of every segment as soon as
    // it is published, as a greedy viewer would.
    let mut published = 0u64;
    let mut first_watched = None;
    let mut reached = None;
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
        published += 1;
        let manifest: shoal_protocol::Cid = p.manifest.parse().unwrap();
        let bytes = store.get(&manifest).unwrap().unwrap();
        let shards = SegmentManifest::from_block(&bytes).unwrap().shards;
        asking.write_all(&want_blocks(&shards)).await.unwrap();
        // From the third segment on, the hostile viewer's writer has long
        // been stuck: the honest one must get the next four anyway.
        let first = *first_watched.get_or_insert(p.sequence + 2);
        if reached.is_none() && p.sequence >= first + 4 {
            reached = Some(p.sequence);
        }
        if reached.is_some() {
            break;
        }
    }
    let first = first_watched.expect("the broadcaster published segments");
    let mut held = false;
    for _ in 0..100 {
        let view = honest.live_view(channel).await.unwrap().unwrap();
        let got = view.renditions[0]
            .window
            .iter()
            .filter(|w| (first..first + 4).contains(&w.sequence))
            .count();
        if got == 4 {
            held = true;
            break;
        }
        if !hostile.connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let view = honest.live_view(channel).await.unwrap().unwrap();
    eprintln!(
        "{published} segments published; the honest viewer: {:?}; hostile still connected: {}",
        view.stats,
        hostile.connected()
    );
    assert!(
        held,
        "the honest viewer had segments {first}..{} while the hostile one was connected",
        first + 4
    );
    drop(encoder);
    run.abort();
    broadcaster.node.stop().await;
}
