//! Glass-to-glass latency as a viewer sees it, low-latency live against
//! plain segments, on loopback.
//!
//! `cargo bench -p shoal-tests --bench glass` (`SHOAL_BENCH_SECONDS`,
//! default 60: how long each row is sampled)
//!
//! One encoder (ffmpeg's test picture at real-time pace, a keyframe a
//! second, 200 ms fragments, the wall clock burned into the picture) is
//! broadcast as 200 ms parts of 1 s segments (LL-HLS), and then the same
//! stream as plain 2 s segments, the baseline, in the same run. For each
//! way, three rows: the broadcaster's own gateway, one viewer, and four
//! viewers, each a daemon in this process with its gateway, every viewer
//! playing the player page in its own tab of one headless Chromium. The
//! page samples `Date.now() - hls.playingDate` (the program date the
//! broadcaster signed for the frame on screen) every 250 ms
//! (`tests/browser/latency.mjs`); the table gives p50/p95 over every
//! sample of every tab, the stalls and the parts hls.js loaded. The first
//! low-latency row also saves a screenshot of its video with the clock
//! read at that moment, to check once by eye against the burned-in clock.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use shoal_tests::live::{Encoder, ViewerDaemon, channel_key, spawn_fmp4_broadcast};
use shoal_tests::{cpu_share, cpu_ticks};

/// One measured row.
struct Row {
    way: &'static str,
    at: String,
    samples: Vec<f64>,
    stalls: u64,
    parts: u64,
    fatal: Vec<String>,
    /// The machine's busy share while the players ran.
    cpu: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Runs one row: a broadcaster daemon and `viewers` viewer daemons, the
/// stream as parts or not, tabs on the broadcaster's gateway (no viewers)
/// or on every viewer's.
async fn row(
    way: &'static str,
    parts: bool,
    viewers: usize,
    seconds: u64,
    shot: Option<PathBuf>,
) -> (Row, Option<serde_json::Value>) {
    let work = tempfile::tempdir().unwrap();
    let broadcaster = ViewerDaemon::start(&work.path().join("broadcaster"), None).await;
    let addr = broadcaster.node.dialable_addr().await.unwrap();
    let mut audience = Vec::new();
    for i in 0..viewers {
        let repo = work.path().join(format!("viewer{i}"));
        audience.push(ViewerDaemon::start(&repo, Some(&addr)).await);
    }
    let key = channel_key();
    let channel = key.id();
    let gateways: Vec<&ViewerDaemon> = if viewers == 0 {
        vec![&broadcaster]
    } else {
        audience.iter().collect()
    };
    for g in &gateways {
        g.node.watch(channel).await.unwrap();
    }
    // Long enough for the players to start, then be sampled.
    let (encoder, stdout) = Encoder::piped_fmp4(seconds as u32 + 40, true);
    // The same stream either way: parts of 1 s segments, or 2 s segments.
    let segment = Duration::from_secs(if parts { 1 } else { 2 });
    let published = spawn_fmp4_broadcast(&broadcaster.node, key, stdout, segment, parts);
    let urls: Vec<String> = gateways
        .iter()
        .map(|g| format!("{}/web/?channel={channel}", g.base))
        .collect();
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    let shot_arg = shot
        .as_ref()
        .map_or("-".to_owned(), |p| p.display().to_string());
    let before = cpu_ticks();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(&browser_dir)
            .arg("latency.mjs")
            .arg(seconds.to_string())
            .arg(shot_arg)
            .args(&urls)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let cpu = cpu_share(before, cpu_ticks());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "latency.mjs: {e}: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    drop(encoder);
    published.abort();
    for v in audience {
        v.stop().await;
    }
    broadcaster.stop().await;
    let pages = result["pages"].as_array().cloned().unwrap_or_default();
    let mut samples: Vec<f64> = pages
        .iter()
        .flat_map(|p| p["samples"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_f64())
        .collect();
    samples.sort_by(f64::total_cmp);
    let sum = |key: &str| pages.iter().filter_map(|p| p[key].as_u64()).sum();
    let row = Row {
        way,
        at: if viewers == 0 {
            "broadcaster's gateway".into()
        } else {
            format!("{viewers} viewer{}", if viewers == 1 { "" } else { "s" })
        },
        samples,
        stalls: sum("stalls"),
        parts: sum("partsLoaded"),
        fatal: pages
            .iter()
            .filter_map(|p| p["fatal"].as_str().map(str::to_owned))
            .collect(),
        cpu,
    };
    (row, result.get("shot").filter(|s| !s.is_null()).cloned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::var("SHOAL_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let shot = std::env::temp_dir().join("shoal-glass.png");
    let mut rows = Vec::new();
    let mut checked = None;
    for (way, parts) in [
        ("low latency (200 ms parts)", true),
        ("plain 2 s segments", false),
    ] {
        for viewers in [0, 1, 4] {
            let take_shot = parts && viewers == 1;
            let (r, s) = row(
                way,
                parts,
                viewers,
                seconds,
                take_shot.then(|| shot.clone()),
            )
            .await;
            eprintln!(
                "{}, {}: {} samples, p50 {:.0} ms, p95 {:.0} ms, {} stalls, {} parts, CPU {:.0}%{}",
                r.way,
                r.at,
                r.samples.len(),
                quantile(&r.samples, 0.5),
                quantile(&r.samples, 0.95),
                r.stalls,
                r.parts,
                r.cpu * 100.0,
                if r.fatal.is_empty() {
                    String::new()
                } else {
                    format!(", fatal: {:?}", r.fatal)
                }
            );
            if s.is_some() {
                checked = s;
            }
            rows.push(r);
        }
    }
    println!("| way | watched at | p50 | p95 | stalls | parts loaded | machine CPU |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} ms | {:.0} ms | {} | {} | {:.0}%{} |",
            r.way,
            r.at,
            quantile(&r.samples, 0.5),
            quantile(&r.samples, 0.95),
            r.stalls,
            r.parts,
            r.cpu * 100.0,
            // As the network lab marks its runs.
            if r.cpu > 0.7 {
                " (limited by the machine)"
            } else {
                ""
            }
        );
    }
    let p95 = |way_parts: bool, at: &str| {
        rows.iter()
            .find(|r| r.way.starts_with(if way_parts { "low" } else { "plain" }) && r.at == at)
            .map_or(f64::NAN, |r| quantile(&r.samples, 0.95))
    };
    println!(
        "four viewers, p95 low latency / plain: {:.2}",
        p95(true, "4 viewers") / p95(false, "4 viewers")
    );
    if let Some(s) = checked {
        println!(
            "burned-in clock check: screenshot {} taken at {} ms of the UTC day, the page said {} ms behind; read the clock in the picture",
            s["path"], s["nowMsOfDay"], s["behindMs"]
        );
    }
}
