//! A real player on a real gateway: a broadcaster publishes ffmpeg's live
//! output, a viewer daemon (in this process, with its HTTP API) serves the
//! channel at `/live/<channel>/index.m3u8`; ffprobe reads that playlist,
//! and headless Chromium plays it with hls.js in shoal's own player page.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use shoal_tests::check_output;
use shoal_tests::live::{
    Encoder, ViewerDaemon, channel_key, spawn_broadcast, spawn_fmp4_broadcast, start,
};
use shoal_tests::require_tool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_a_live_channel_through_the_gateway() {
    plays_live(Encoder::start).await;
}

/// The same with fragmented MP4 segments: hls.js loads the init section
/// the playlist maps (`/live/<channel>/0/init.mp4`) before them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_an_fmp4_live_channel_through_the_gateway() {
    plays_live(Encoder::start_fmp4).await;
}

/// Low-latency live: a piped fMP4 stream broadcast as parts; hls.js
/// plays the viewer's LL-HLS playlist and loads parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_a_low_latency_channel_loading_parts() {
    let _serial = shoal_tests::live::one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let broadcaster = start(None, Default::default()).await;
    let key = channel_key();
    let channel = key.id();
    let viewer = ViewerDaemon::start(&work.path().join("viewer"), Some(&broadcaster.addr)).await;
    // Watching before the stream starts: parts come from the first.
    viewer.node.watch(channel).await.unwrap();
    let (encoder, stdout) = Encoder::piped_fmp4(30, false);
    let published =
        spawn_fmp4_broadcast(&broadcaster.node, key, stdout, Duration::from_secs(1), true);
    let result = play_page(&format!("{}/web/?channel={channel}", viewer.base)).await;
    assert!(result["fatal"].is_null(), "{result}");
    assert!(
        result["partsLoaded"].as_u64().is_some_and(|n| n > 0),
        "hls.js loaded no parts: {result}"
    );
    assert!(
        result["behindMs"].as_f64().is_some_and(|ms| ms > 0.0),
        "{result}"
    );
    drop(encoder);
    published.abort();
    viewer.stop().await;
    broadcaster.node.stop().await;
}

/// Plays `page` in headless Chromium past 6 s (within 60 s); what the
/// page reported (`tests/browser/play.mjs`).
async fn play_page(page: &str) -> serde_json::Value {
    let page = page.to_owned();
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(&browser_dir)
            .args(["play.mjs", &page, "6", "60"])
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the player did not get past 6 s: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(result["currentTime"].as_f64().unwrap() > 6.0, "{result}");
    assert!(result["played"].as_f64().unwrap() > 6.0, "{result}");
    eprintln!("player: {result}");
    result
}

/// A channel from `encoder`: ffprobe reads the viewer's playlist, and
/// Chromium plays the player page past 6 s.
async fn plays_live(encoder: fn(&std::path::Path, u32) -> Encoder) {
    let _serial = shoal_tests::live::one_at_a_time().await;
    require_tool("ffprobe");
    let work = tempfile::tempdir().unwrap();
    let hls_dir = work.path().join("hls");
    std::fs::create_dir_all(&hls_dir).unwrap();
    let broadcaster = start(None, Default::default()).await;
    let key = channel_key();
    let channel = key.id();

    let viewer = ViewerDaemon::start(&work.path().join("viewer"), Some(&broadcaster.addr)).await;
    let base = viewer.base.clone();

    let published = spawn_broadcast(&broadcaster.node, key, hls_dir.clone(), Vec::new());
    let encoder = encoder(&hls_dir, 30);

    // ffprobe reads the gateway's live playlist (the first request starts
    // watching and waits for the first segment).
    let playlist = format!("{base}/live/{channel}/index.m3u8");
    let probe = {
        let playlist = playlist.clone();
        tokio::task::spawn_blocking(move || {
            check_output(Command::new("ffprobe").args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height",
                "-of",
                "json",
                &playlist,
            ]))
        })
        .await
        .unwrap()
    };
    let probe: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    let streams = probe["streams"].as_array().unwrap();
    assert_eq!(streams[0]["codec_name"], "h264", "{probe}");
    assert_eq!(streams[0]["width"], 320, "{probe}");

    // Chromium plays past 6 s with no fatal error.
    let result = play_page(&format!("{base}/web/?channel={channel}")).await;
    assert!(result["fatal"].is_null(), "{result}");
    // The page dated the frame on screen from the playlist's program
    // dates: it plays behind the live picture, by some amount.
    assert!(
        result["behindMs"].as_f64().is_some_and(|ms| ms > 0.0),
        "{result}"
    );

    drop(encoder);
    published.abort();
    viewer.stop().await;
    broadcaster.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffprobe_reads_an_on_demand_stream_that_the_gateway_fetches_from_peers() {
    require_tool("ffmpeg");
    require_tool("ffprobe");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    check_output(
        Command::new("ffmpeg")
            .current_dir(&src)
            .args([
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x180:rate=25",
            ])
            .args([
                "-t",
                "8",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "50",
            ])
            .args(["-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod"])
            .args(["-hls_segment_filename", "seg%03d.ts", "index.m3u8"]),
    );
    let seeder = start(None, Default::default()).await;
    let imported = shoal_storage::import_hls(
        seeder.node.store(),
        &src.join("index.m3u8"),
        &Default::default(),
        &mut |_| {},
    )
    .unwrap();
    seeder.node.provide(imported.root).await.unwrap();

    let daemon = ViewerDaemon::start(&work.path().join("viewer"), Some(&seeder.addr)).await;
    let base = daemon.base.clone();
    let viewer = daemon.node.clone();

    let url = format!("{base}/vod/{}/index.m3u8", imported.root);
    let probe = tokio::task::spawn_blocking(move || {
        check_output(Command::new("ffprobe").args([
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_name",
            "-of",
            "json",
            &url,
        ]))
    })
    .await
    .unwrap();
    let probe: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    assert_eq!(probe["streams"][0]["codec_name"], "h264", "{probe}");
    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap();
    assert!((7.5..8.5).contains(&duration), "{probe}");
    // Watching is caching: nothing was pinned on the viewer.
    assert!(viewer.store().pins().unwrap().is_empty());
    assert!(viewer.store().stat().unwrap().blocks > 0);

    daemon.stop().await;
    seeder.node.stop().await;
}
