//! `shoal demo`: a live channel and its audience on this machine, with
//! nothing to set up. A test stream (ffmpeg's lavfi source when ffmpeg is
//! installed, else synthetic segments) is broadcast by one node and watched
//! by several viewer nodes, one of which serves the HLS gateway and the
//! player page; an HTTP origin serves the encoder's folder as the safety
//! net. Every node runs in this process, each with its own store in a
//! temporary folder that is removed at the end. With `--low-latency`
//! ffmpeg pipes fragmented MP4 instead, broadcast as 200 ms parts of 1 s
//! segments (LL-HLS at the gateway; no origin, as there is no folder).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use shoal_node::broadcast::{BroadcastOptions, Fmp4Options, broadcast, broadcast_fmp4};
use shoal_node::daemon::{Daemon, DaemonOptions};
use shoal_node::libp2p::Multiaddr;
use shoal_node::repo::Repo;
use shoal_node::{Node, NodeConfig};
use shoal_protocol::channel::{ChannelId, ChannelKey};
use shoal_storage::ImportOptions;

/// Segment length of the demo stream: short segments keep the delay from
/// the encoder to the player low.
const SEGMENT_SECONDS: u32 = 2;

/// Bytes per synthetic segment (about 1 Mb/s at 2 s segments).
const SYNTHETIC_SEGMENT_BYTES: usize = 250_000;

/// How often the statistics line is printed.
const REPORT_EVERY: Duration = Duration::from_secs(2);

pub struct DemoOptions {
    pub viewers: usize,
    pub seconds: Option<u64>,
    pub api: String,
    /// Low-latency live: parts over the swarm, LL-HLS at the gateway.
    pub low_latency: bool,
}

/// Low-latency mode: fragments (parts) of 200 ms, segments of a second
/// (a keyframe each), as LL-HLS servers commonly cut them.
const LL_FRAGMENT_US: u32 = 200_000;
const LL_SEGMENT: Duration = Duration::from_secs(1);

/// The stream's source: ffmpeg, or synthetic segments written here.
enum Source {
    Ffmpeg(Child),
    Synthetic(tokio::task::JoinHandle<()>),
}

impl Drop for Source {
    fn drop(&mut self) {
        match self {
            Source::Ffmpeg(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Source::Synthetic(task) => task.abort(),
        }
    }
}

fn have_ffmpeg() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_source(dir: &Path) -> Result<Source> {
    if have_ffmpeg() {
        let child = Command::new("ffmpeg")
            .current_dir(dir)
            .args(["-v", "error", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            ])
            .args([
                "-b:v",
                "800k",
                "-g",
                "50",
                "-keyint_min",
                "50",
                "-sc_threshold",
                "0",
            ])
            .args(["-c:a", "aac", "-b:a", "64k"])
            .args(["-f", "hls", "-hls_time", &SEGMENT_SECONDS.to_string()])
            .args(["-hls_list_size", "10", "-hls_flags", "delete_segments"])
            .args(["-hls_segment_filename", "seg%05d.ts", "index.m3u8"])
            .stdin(Stdio::null())
            .spawn()
            .context("starting ffmpeg")?;
        return Ok(Source::Ffmpeg(child));
    }
    let dir = dir.to_owned();
    Ok(Source::Synthetic(tokio::spawn(async move {
        let segment = Duration::from_secs(u64::from(SEGMENT_SECONDS));
        let run = shoal_node::testsrc::run(&dir, segment, SYNTHETIC_SEGMENT_BYTES, None, |_| {});
        if let Err(e) = run.await {
            eprintln!("shoal demo: synthetic stream stopped: {e}");
        }
    })))
}

/// Low-latency mode's encoder: ffmpeg's test picture and tone as
/// fragmented MP4 on a pipe, at real-time pace; the pipe is returned to
/// be read.
fn start_ll_source() -> Result<(Source, tokio::net::unix::pipe::Receiver)> {
    if !have_ffmpeg() {
        anyhow::bail!("low-latency mode needs ffmpeg (it pipes fragmented MP4); install ffmpeg");
    }
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-b:v",
            "800k",
            "-g",
            "25",
            "-keyint_min",
            "25",
            "-sc_threshold",
            "0",
        ])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "mp4"])
        .args(["-movflags", "+frag_keyframe+empty_moov+default_base_moof"])
        .args(["-frag_duration", &LL_FRAGMENT_US.to_string(), "pipe:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting ffmpeg")?;
    let stdout = child.stdout.take().context("ffmpeg's output")?;
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout.into())
        .context("reading ffmpeg's output")?;
    Ok((Source::Ffmpeg(child), pipe))
}

fn loopback_config(bootstrap: Vec<Multiaddr>) -> NodeConfig {
    NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")],
        bootstrap,
        mdns: false,
        // The demo's origin serves on 127.0.0.1 beside its nodes.
        private_origins: true,
        ..NodeConfig::default()
    }
}

async fn start_node(dir: &Path, bootstrap: Vec<Multiaddr>) -> Result<(Node, Multiaddr)> {
    let node = Node::start_in(dir, loopback_config(bootstrap)).await?;
    let addr = node.dialable_addr().await?;
    Ok((node, addr))
}

/// A fresh channel key (not kept: the demo's channel lives as long as the
/// demo).
fn demo_key(work: &Path) -> Result<ChannelKey> {
    shoal_node::channel_keys::create(work, "demo")?;
    Ok(shoal_node::channel_keys::load(work, "demo")?)
}

pub fn run(options: DemoOptions) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let work = tempfile::Builder::new()
        .prefix("shoal-demo-")
        .tempdir()
        .context("making a temporary folder")?;
    let result = rt.block_on(demo(work.path(), options));
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn demo(work: &Path, options: DemoOptions) -> Result<()> {
    let hls = work.join("encoder");
    std::fs::create_dir_all(&hls)?;
    let (source, pipe) = if options.low_latency {
        let (source, pipe) = start_ll_source()?;
        (source, Some(pipe))
    } else {
        (start_source(&hls)?, None)
    };
    let playable = matches!(source, Source::Ffmpeg(_));

    let origin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin_url = format!("http://{}", origin_listener.local_addr()?);
    let origin = tokio::spawn(shoal_node::origin::serve(hls.clone(), origin_listener));

    let (broadcaster, bootstrap) = start_node(&work.join("broadcaster"), Vec::new()).await?;
    let key = demo_key(work)?;
    let channel = key.id();

    // The viewer with the gateway: a daemon on the usual API port, or any
    // free port if something holds that one.
    let repo = work.join("viewer-0");
    Repo::init(&repo)?;
    let daemon_options = |api: &str| DaemonOptions {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")],
        bootstrap: vec![bootstrap.clone()],
        api: Some(api.to_owned()),
        mdns: Some(false),
    };
    let daemon = match Daemon::start(&repo, daemon_options(&options.api)).await {
        Ok(d) => d,
        Err(shoal_node::daemon::DaemonError::Bind { .. }) => {
            Daemon::start(&repo, daemon_options("127.0.0.1:0")).await?
        }
        Err(e) => return Err(e.into()),
    };
    let base = format!("http://{}", daemon.api_addr);
    let mut viewers = vec![daemon.node.clone()];
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(daemon.serve_until(async {
        let _ = api_stopped.await;
    }));
    for i in 1..options.viewers.max(1) {
        let (node, _) =
            start_node(&work.join(format!("viewer-{i}")), vec![bootstrap.clone()]).await?;
        viewers.push(node);
    }
    for v in &viewers {
        v.watch(channel).await?;
    }

    let (events, mut published) = tokio::sync::mpsc::channel(64);
    let broadcast_task = match pipe {
        Some(pipe) => tokio::spawn(broadcast_fmp4(
            broadcaster.clone(),
            key,
            Fmp4Options {
                source: "ffmpeg".into(),
                segment_duration: LL_SEGMENT,
                parts: true,
                origins: Vec::new(),
                import: ImportOptions::default(),
                name: "shoal demo".into(),
            },
            vec![pipe],
            events,
        )),
        None => tokio::spawn(broadcast(
            broadcaster.clone(),
            key,
            BroadcastOptions {
                dir: hls.clone(),
                playlist: None,
                origins: vec![origin_url.clone()],
                import: ImportOptions::default(),
                name: "shoal demo".into(),
            },
            events,
        )),
    };

    println!("shoal demo: channel {channel}");
    println!(
        "  source: {}",
        match (options.low_latency, playable) {
            (true, _) => {
                "ffmpeg test picture and tone, low latency: 1 s segments of 200 ms parts, LL-HLS"
            }
            (false, true) => "ffmpeg test picture and tone, 2 s segments",
            (false, false) => {
                "synthetic segments (install ffmpeg for a picture a player can show)"
            }
        }
    );
    if options.low_latency {
        println!("  1 broadcaster, {} viewers, no HTTP origin", viewers.len());
    } else {
        println!(
            "  1 broadcaster, {} viewers, HTTP origin {origin_url}",
            viewers.len()
        );
    }
    println!("  watch in a browser:  {base}/web/?channel={channel}");
    println!("  or in any player:    {base}/live/{channel}/index.m3u8");
    match options.seconds {
        Some(s) => println!("  running for {s} s"),
        None => println!("  press Ctrl-C to stop"),
    }
    std::io::stdout().flush()?;

    let started = Instant::now();
    let mut report = tokio::time::interval(REPORT_EVERY);
    report.tick().await;
    let deadline = options.seconds.map(|s| started + Duration::from_secs(s));
    let mut segments_published = 0u64;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            p = published.recv() => match p {
                Some(_) => segments_published += 1,
                None => break,
            },
            _ = report.tick() => {
                print_report(started, segments_published, &broadcaster, &viewers, channel).await;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
            }
        }
    }
    println!("stopping");
    broadcast_task.abort();
    drop(source);
    let _ = stop_api.send(());
    let _ = api.await;
    for v in viewers.iter().skip(1) {
        v.stop().await;
    }
    broadcaster.stop().await;
    origin.abort();
    Ok(())
}

async fn print_report(
    started: Instant,
    published: u64,
    broadcaster: &Node,
    viewers: &[Node],
    channel: ChannelId,
) {
    let (mut segments, mut late, mut missed) = (0, 0, 0);
    let (mut peers, mut source, mut http) = (0u64, 0u64, 0u64);
    let mut p95 = Vec::new();
    for v in viewers {
        if let Ok(Some(view)) = v.live_view(channel).await {
            let s = &view.stats;
            segments += s.segments;
            late += s.late;
            missed += s.missed;
            peers += s.bytes_from_peers;
            source += s.bytes_from_source;
            http += s.bytes_from_http;
            p95.extend(s.latency_quantile_ms(0.95));
        }
    }
    let total = (peers + source + http).max(1) as f64;
    let uploaded = broadcaster.traffic().await.map(|t| t.sent).unwrap_or(0);
    println!(
        "{:>4} s  published {published:>3}  delivered {segments:>4}  from viewers {:>5.1}%  broadcaster {:>5.1}%  HTTP {:>5.1}%  latency p95 {}  stalls {late}  missed {missed}  broadcaster sent {:.1} MB",
        started.elapsed().as_secs(),
        peers as f64 / total * 100.0,
        source as f64 / total * 100.0,
        http as f64 / total * 100.0,
        p95.iter()
            .max()
            .map_or("-".to_string(), |v| format!("{v} ms")),
        uploaded as f64 / 1e6,
    );
    let _ = std::io::stdout().flush();
}
