//! Live channels on the network lab: a broadcaster and its viewers as
//! daemons on lab hosts, a synthetic encoder, and a player on each
//! viewer's host that checks every segment against the encoder's files.
//! Shared by the lab's tests and its benchmark.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::lab::{Host, Lab, LabNode, LinkSpec};
pub use shoal_sim::swarm::scenario::LiveScenario;

/// The synthetic encoder's stream: 1 s segments of 1.5 Mb/s.
pub const SEGMENT: Duration = shoal_sim::swarm::scenario::LAB_SEGMENT;
pub const SEGMENT_BYTES: usize = shoal_sim::swarm::scenario::LAB_SEGMENT_BYTES;

/// Runs the synthetic encoder into `dir` for `count` segments, on a thread.
pub fn encoder(dir: PathBuf, count: u64) -> std::thread::JoinHandle<()> {
    std::fs::create_dir_all(&dir).unwrap();
    std::thread::spawn(move || {
        // A test that ends first removes the folder: the write fails and
        // the encoder stops.
        let _ = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(shoal_node::testsrc::run(
                &dir,
                SEGMENT,
                SEGMENT_BYTES,
                Some(count),
                |_| {},
            ));
    })
}

/// The sequence of the newest segment the encoder has listed.
pub fn encoder_at(hls: &Path) -> u64 {
    std::fs::read_to_string(hls.join("index.m3u8"))
        .ok()
        .and_then(|text| {
            text.lines()
                .rfind(|l| l.starts_with("seg"))
                .and_then(|l| l[3..8].parse().ok())
        })
        .unwrap_or(0)
}

/// Watches `channel` through `viewer`'s gateway as a player does, until
/// `want` segments from sequence `from` on were read byte for byte equal
/// to the encoder's files; returns the sequences checked.
pub fn play(
    viewer: &LabNode,
    channel: &str,
    hls: &Path,
    from: u64,
    want: usize,
    limit: Duration,
) -> BTreeSet<u64> {
    let playlist = format!("/live/{channel}/index.m3u8");
    let mut checked = BTreeSet::new();
    let start = Instant::now();
    while checked.len() < want {
        assert!(
            start.elapsed() < limit,
            "host {} checked {checked:?} of {want} segments from {from} in {limit:?}",
            viewer.host.index
        );
        let reply = match viewer.get(&playlist) {
            Ok(r) if r.status == 200 => r,
            _ => {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let text = reply.text();
        let mut gap = false;
        for line in text.lines() {
            // A segment given up is listed as a gap, not to be loaded.
            if line == "#EXT-X-GAP" {
                gap = true;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let uri = line;
            if std::mem::take(&mut gap) {
                continue;
            }
            let seq = uri
                .rsplit('/')
                .next()
                .and_then(|f| f.split('.').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("a segment URI without a sequence: {uri}"));
            if seq < from || checked.contains(&seq) {
                continue;
            }
            let Ok(original) = std::fs::read(hls.join(format!("seg{seq:05}.ts"))) else {
                continue;
            };
            let segment = viewer
                .get(&format!("/live/{channel}/{uri}"))
                .expect("the segment through the gateway");
            assert_eq!(segment.status, 200, "{uri} on host {}", viewer.host.index);
            assert!(
                segment.body == original,
                "segment {seq} on host {} differs from the encoder's",
                viewer.host.index
            );
            checked.insert(seq);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    checked
}

/// A channel's session statistics on `viewer` (its gateway's stats.json).
pub fn stats(viewer: &LabNode, channel: &str) -> serde_json::Value {
    let reply = viewer
        .get(&format!("/live/{channel}/stats.json"))
        .expect("stats.json");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let all: serde_json::Value = serde_json::from_slice(&reply.body).expect("stats.json is JSON");
    all["session"].clone()
}

/// A home connection with `delay_ms` one way to the core: 10 Mb/s up,
/// 50 Mb/s down, a tenth of the delay as jitter.
pub fn home(delay_ms: u64) -> LinkSpec {
    link(Duration::from_millis(delay_ms), 10_000_000 / 8)
}

/// A link with `delay` one way to the core and `uplink` bytes per second
/// up (five times that down), a tenth of the delay as jitter.
pub fn link(delay: Duration, uplink: u64) -> LinkSpec {
    let up_kbit = u32::try_from(uplink * 8 / 1000).unwrap_or(u32::MAX);
    LinkSpec {
        delay,
        jitter: delay / 10,
        up_kbit: Some(up_kbit),
        down_kbit: Some(up_kbit.saturating_mul(5)),
        ..LinkSpec::default()
    }
}

/// One-way 5–45 ms to the core for `n` viewers: 20–100 ms round trips to
/// a broadcaster 5 ms away ([`LiveScenario::spread`]).
pub fn spread(n: u64) -> Vec<LinkSpec> {
    let s = LiveScenario::spread(n as usize, 0);
    s.viewer_delays.iter().map(|d| link(*d, s.uplink)).collect()
}

/// A broadcaster and its viewers as daemons on lab hosts, streaming what
/// the synthetic encoder writes (and, with `origin`, an HTTP origin on a
/// host of its own serving the encoder's folder).
pub struct Stream {
    pub hls: PathBuf,
    pub channel: String,
    pub source: LabNode,
    pub viewers: Vec<LabNode>,
    _encoding: std::thread::JoinHandle<()>,
    _origin: Option<tokio::runtime::Runtime>,
    _tmp: tempfile::TempDir,
    // Last: the lab goes after the daemons and the origin.
    pub lab: Lab,
}

impl Stream {
    pub fn start(name: &str, viewers: &[LinkSpec], segments: u64, origin: bool) -> Option<Stream> {
        Stream::start_with(name, home(5), viewers, segments, origin)
    }

    /// `scenario` on the lab (its stream must be the lab's encoder's).
    pub fn start_scenario(name: &str, scenario: &LiveScenario) -> Option<Stream> {
        assert_eq!(
            (scenario.segment_bytes, scenario.segment_duration),
            (SEGMENT_BYTES, SEGMENT),
            "the lab's encoder makes one stream"
        );
        let viewers: Vec<LinkSpec> = scenario
            .viewer_delays
            .iter()
            .map(|d| link(*d, scenario.uplink))
            .collect();
        let source = link(scenario.source_delay, scenario.uplink);
        Stream::start_with(name, source, &viewers, scenario.segments, false)
    }

    fn start_with(
        name: &str,
        source: LinkSpec,
        viewers: &[LinkSpec],
        segments: u64,
        origin: bool,
    ) -> Option<Stream> {
        let mut lab = Lab::new(name)?;
        let tmp = tempfile::tempdir().unwrap();
        let hls = tmp.path().join("hls");
        std::fs::create_dir_all(&hls).unwrap();
        let source_host = lab.host(source);
        let viewer_hosts: Vec<Host> = viewers.iter().map(|spec| lab.host(*spec)).collect();
        let (origin_url, origin_rt) = if origin {
            let host = lab.host(home(5));
            let at = SocketAddr::from((host.addr, 8080));
            let listener = host.listen(at).unwrap();
            listener.set_nonblocking(true).unwrap();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let dir = hls.clone();
            rt.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = shoal_node::origin::serve(dir, listener).await;
            });
            (Some(format!("http://{at}/")), Some(rt))
        } else {
            (None, None)
        };
        let source = LabNode::start(&source_host, &[], &[]);
        // The origin is on the lab's private addresses: viewers take it
        // from the channel record only when told that is fine (a LAN).
        let config: &[(&str, &str)] = if origin {
            &[("live", "private_origins = true")]
        } else {
            &[]
        };
        let viewers: Vec<LabNode> = viewer_hosts
            .iter()
            .map(|h| LabNode::start(h, &[&source.addr()], config))
            .collect();
        let encoding = encoder(hls.clone(), segments);
        let channel = source.shoal(&["channel", "create", name]).ok().to_owned();
        let hls_arg = hls.to_str().unwrap().to_owned();
        let mut args = vec!["broadcast", name, "--hls-dir", &hls_arg];
        if let Some(url) = &origin_url {
            args.extend(["--origin", url]);
        }
        let mut broadcast = source.sandbox.command(&args);
        broadcast.stdout(std::process::Stdio::null());
        lab.spawn(broadcast).unwrap();
        Some(Stream {
            hls,
            channel,
            source,
            viewers,
            _encoding: encoding,
            _origin: origin_rt,
            _tmp: tmp,
            lab,
        })
    }

    /// Every viewer (of `which`) plays `want` segments from `from` on, at
    /// once, within `limit`.
    pub fn play(
        &self,
        which: &[usize],
        from: u64,
        want: usize,
        limit: Duration,
    ) -> Vec<BTreeSet<u64>> {
        std::thread::scope(|s| {
            let players: Vec<_> = which
                .iter()
                .map(|i| {
                    let v = &self.viewers[*i];
                    s.spawn(move || play(v, &self.channel, &self.hls, from, want, limit))
                })
                .collect();
            players.into_iter().map(|p| p.join().unwrap()).collect()
        })
    }

    pub fn all(&self) -> Vec<usize> {
        (0..self.viewers.len()).collect()
    }

    /// Prints what each viewer of `which` saw, and returns their stats.
    pub fn report(&self, which: &[usize]) -> Vec<serde_json::Value> {
        which
            .iter()
            .map(|i| {
                let v = &self.viewers[*i];
                let st = stats(v, &self.channel);
                eprintln!(
                    "  host {} (one-way {:?}, loss {}%): segments {}, late {}, missed {}, skipped while joining {}, \
                     p50 {} ms, p95 {} ms, startup {} ms, offload {}, from HTTP {} B, proxying {}",
                    v.host.index,
                    v.host.spec.delay,
                    v.host.spec.loss_percent,
                    st["segments"],
                    st["late"],
                    st["missed"],
                    st["skipped"],
                    st["latency_p50_ms"],
                    st["latency_p95_ms"],
                    st["startup_ms"],
                    st["offload"],
                    st["bytes_from_http"],
                    st["proxying"],
                );
                st
            })
            .collect()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.lab.stop_processes();
    }
}
