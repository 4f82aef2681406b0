//! Live delivery on loopback: a broadcaster and 10, 50 and 100 viewer
//! nodes (all in this process) watch a synthetic 1 Mb/s stream of 2 s
//! segments. Reports, per audience size, the latency from the moment the
//! encoder listed a segment to the moment each viewer held it complete
//! (p50, p95) and to the moment it heard of it (the broadcaster's import
//! and the gossip; the rest is the fetch), the offload (share of the bytes viewers got from each other
//! rather than from the broadcaster or an origin), and stalls. The baseline,
//! measured in the same run, is the same segments fetched by the same
//! number of HTTP clients from a local origin the moment they are listed —
//! a CDN on this machine.
//!
//! `cargo bench -p shoal-node --bench live` (`SHOAL_BENCH_VIEWERS=10,50`
//! picks the audiences, `SHOAL_BENCH_SEGMENTS` the segments per run, 12;
//! `SHOAL_BENCH_RATION_WINDOW_MS=0` turns the broadcaster's rationing off).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::Multiaddr;
use shoal_node::broadcast::{BroadcastOptions, broadcast};
use shoal_node::live::unix_ms;
use shoal_node::{Node, NodeConfig};
use shoal_protocol::channel::{ChannelId, ChannelKey};
use shoal_storage::ImportOptions;

const SEGMENT: Duration = Duration::from_secs(2);
const SEGMENT_BYTES: usize = 250_000;
/// Segments at the start left out of the figures: the gossip mesh and the
/// viewers' connections are still forming.
const WARMUP: u64 = 2;

async fn start_node(dir: &Path, bootstrap: Vec<Multiaddr>) -> (Node, Multiaddr) {
    let mut live = shoal_protocol::live::LiveConfig::default();
    if let Some(ms) = std::env::var("SHOAL_BENCH_SOURCE_WAIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        live.source_wait = Duration::from_millis(ms);
    }
    if let Some(q) = std::env::var("SHOAL_BENCH_SOURCE_QUOTA")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        live.source_quota = q;
    }
    if let Some(ms) = std::env::var("SHOAL_BENCH_RATION_WINDOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        live.ration_window = Duration::from_millis(ms);
    }
    let mut engine = shoal_protocol::bitswap::EngineConfig::default();
    if let Some(kib) = std::env::var("SHOAL_BENCH_PACED_KIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        engine.max_paced_bytes = kib << 10;
    }
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap,
        mdns: false,
        live,
        engine,
        // Every node of the benchmark runs on 127.0.0.1.
        max_connections_per_ip: None,
        private_origins: true,
        ..NodeConfig::default()
    };
    let node = Node::start_in(dir, config).await.unwrap();
    let addr = node.dialable_addr().await.unwrap();
    (node, addr)
}

fn quantile(v: &mut [u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

struct Outcome {
    p50: u64,
    p95: u64,
    heard_p50: u64,
    heard_p95: u64,
    offload: f64,
    source_share: f64,
    late: u64,
    missed: u64,
    delivered: usize,
    expected: usize,
    broadcaster_sent: u64,
}

async fn shoal_run(viewers: usize, segments: u64) -> Outcome {
    let work = tempfile::tempdir().unwrap();
    let hls = work.path().join("encoder");
    std::fs::create_dir_all(&hls).unwrap();
    let (broadcaster, boot) = start_node(&work.path().join("b"), Vec::new()).await;
    let key = ChannelKey::from_seed(&shoal_protocol::block::sha256(
        format!("bench {viewers} {}", unix_ms()).as_bytes(),
    ));
    let channel: ChannelId = key.id();
    let mut nodes = Vec::new();
    for i in 0..viewers {
        let (n, _) = start_node(&work.path().join(format!("v{i}")), vec![boot.clone()]).await;
        n.watch(channel).await.unwrap();
        nodes.push(n);
    }
    // Let the viewers find each other (DHT providers, gossip mesh).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let cast = tokio::spawn(broadcast(
        broadcaster.clone(),
        key,
        BroadcastOptions {
            dir: hls.clone(),
            playlist: None,
            origins: Vec::new(),
            import: ImportOptions::default(),
            name: "bench".into(),
        },
        tx,
    ));
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let written: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let w = written.clone();
    shoal_node::testsrc::run(&hls, SEGMENT, SEGMENT_BYTES, Some(segments), move |seq| {
        w.lock().unwrap().insert(seq, unix_ms());
    })
    .await
    .unwrap();
    let _ = cast.await;
    drain.abort();
    tokio::time::sleep(SEGMENT * 2).await;

    let written = written.lock().unwrap().clone();
    let mut latencies = Vec::new();
    // From the listing to the moment a viewer heard of the segment: the
    // broadcaster's import and the gossip, the rest being the fetch.
    let mut heard = Vec::new();
    let (mut peers, mut source, mut http, mut late, mut missed, mut delivered) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0usize);
    for n in &nodes {
        let Some(view) = n.live_view(channel).await.unwrap() else {
            continue;
        };
        let s = &view.stats;
        peers += s.bytes_from_peers;
        source += s.bytes_from_source;
        http += s.bytes_from_http;
        late += s.late;
        missed += s.missed;
        for r in &view.renditions {
            for w in &r.window {
                if w.sequence < WARMUP {
                    continue;
                }
                delivered += 1;
                if let Some(t) = written.get(&w.sequence) {
                    latencies.push(w.completed_ms.saturating_sub(*t));
                    heard.push(w.heard_ms.saturating_sub(*t));
                }
            }
        }
    }
    let broadcaster_sent = broadcaster.traffic().await.unwrap().sent;
    for n in nodes {
        n.stop().await;
    }
    broadcaster.stop().await;
    let total = (peers + source + http).max(1) as f64;
    // Windows keep the last six segments.
    let kept = (segments.min(6)).min(segments - WARMUP) as usize;
    Outcome {
        p50: quantile(&mut latencies, 0.5),
        p95: quantile(&mut latencies, 0.95),
        heard_p50: quantile(&mut heard, 0.5),
        heard_p95: quantile(&mut heard, 0.95),
        offload: peers as f64 / total,
        source_share: (source + http) as f64 / total,
        late,
        missed,
        delivered,
        expected: kept * viewers,
        broadcaster_sent,
    }
}

/// The same segments fetched over HTTP by `clients` clients from a local
/// origin as soon as each is listed; returns (p50, p95) in ms.
async fn http_run(clients: usize, segments: u64) -> (u64, u64) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let origin = tokio::spawn(shoal_node::origin::serve(dir.clone(), listener));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
    let fetcher = {
        let latencies = latencies.clone();
        tokio::spawn(async move {
            while let Some((seq, at)) = rx.recv().await {
                if seq < WARMUP {
                    continue;
                }
                let mut tasks = Vec::new();
                for _ in 0..clients {
                    let http = http.clone();
                    let url = format!("{base}/seg{seq:05}.ts");
                    let latencies = latencies.clone();
                    tasks.push(tokio::spawn(async move {
                        let body = http.get(&url).send().await.unwrap().bytes().await.unwrap();
                        assert_eq!(body.len(), SEGMENT_BYTES);
                        latencies.lock().unwrap().push(unix_ms().saturating_sub(at));
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            }
        })
    };
    shoal_node::testsrc::run(&dir, SEGMENT, SEGMENT_BYTES, Some(segments), move |seq| {
        let _ = tx.send((seq, unix_ms()));
    })
    .await
    .unwrap();
    fetcher.await.unwrap();
    origin.abort();
    let mut v = latencies.lock().unwrap().clone();
    (quantile(&mut v, 0.5), quantile(&mut v, 0.95))
}

fn main() {
    let audiences: Vec<usize> = std::env::var("SHOAL_BENCH_VIEWERS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 50, 100]);
    let segments: u64 = std::env::var("SHOAL_BENCH_SEGMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
        .max(WARMUP + 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "live, {} kB segments every {} s, {segments} segments per run ({WARMUP} warm-up left out):",
        SEGMENT_BYTES / 1000,
        SEGMENT.as_secs()
    );
    for n in audiences {
        let (h50, h95) = rt.block_on(http_run(n, segments));
        let o = rt.block_on(shoal_run(n, segments));
        println!(
            "  {n:>3} viewers: latency p50 {} ms, p95 {} ms (HTTP origin p50 {h50} ms, p95 {h95} ms; p95 ratio {:.2}); \
             heard of p50 {} ms, p95 {} ms after listing; offload {:.1}% (broadcaster + origin {:.1}%), broadcaster sent {:.1} MB for {:.1} MB delivered; \
             {}/{} segments held, {} late, {} missed",
            o.p50,
            o.p95,
            o.p95 as f64 / h95.max(1) as f64,
            o.heard_p50,
            o.heard_p95,
            o.offload * 100.0,
            o.source_share * 100.0,
            o.broadcaster_sent as f64 / 1e6,
            (segments as f64 * SEGMENT_BYTES as f64 * n as f64) / 1e6,
            o.delivered,
            o.expected,
            o.late,
            o.missed,
        );
    }
}
