//! Real daemons across a real (emulated) network: hosts in network
//! namespaces with delay, loss, rate limits, NAT and partitions
//! (`shoal_tests::lab`). Each scenario asserts what a viewer relies on:
//! every segment complete and byte-identical to the encoder's, none
//! missed where the scenario leaves a path. Skips where the lab cannot
//! run (not root).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_tests::lab::{Host, Lab, LabNode, LinkSpec};

/// The synthetic encoder's stream: 1 s segments of 1.5 Mb/s.
const SEGMENT: Duration = Duration::from_secs(1);
const SEGMENT_BYTES: usize = 187_500;

/// Runs the synthetic encoder into `dir` for `count` segments, on a thread.
fn encoder(dir: PathBuf, count: u64) -> std::thread::JoinHandle<()> {
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

/// How long one TCP handshake from `from` to `to` takes (one round trip).
fn handshake(from: &Host, to: SocketAddr) -> std::io::Result<Duration> {
    let start = Instant::now();
    let mut s = from.connect(to)?;
    let elapsed = start.elapsed();
    let _ = s.write_all(b"x");
    Ok(elapsed)
}

#[test]
fn the_lab_delays_partitions_loses_and_hides_hosts_behind_nat() {
    let Some(mut lab) = Lab::new("self") else {
        return;
    };
    let a = lab.host(LinkSpec {
        delay: Duration::from_millis(10),
        ..LinkSpec::default()
    });
    let b = lab.host(LinkSpec {
        delay: Duration::from_millis(20),
        ..LinkSpec::default()
    });
    let natted = lab.host(LinkSpec {
        nat: true,
        ..LinkSpec::default()
    });
    let at_b = SocketAddr::from((b.addr, 7000));
    let listener = b.listen(at_b).unwrap();
    let (accepted, arrivals) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok((mut s, peer)) = listener.accept() {
            let mut byte = [0u8; 1];
            let _ = s.read(&mut byte);
            if accepted.send(peer).is_err() {
                break;
            }
        }
    });
    let arrival = || arrivals.recv_timeout(Duration::from_secs(10)).unwrap();

    // a → core 10 ms, core → b 20 ms: 60 ms there and back.
    let rtt = handshake(&a, at_b).unwrap();
    assert!(rtt >= Duration::from_millis(60), "round trip {rtt:?}");
    assert_eq!(arrival().ip(), a.addr);

    // Partitioned, nothing gets through; healed, it does again.
    lab.partition(&[&a], &[&b]);
    assert!(
        handshake(&a, at_b).is_err(),
        "a partition let a connection through"
    );
    lab.heal();

    // A host behind NAT reaches out under its home router's address...
    handshake(&natted, at_b).unwrap();
    assert_eq!(arrival().ip(), natted.public);
    // ...and nobody reaches in.
    let inside = SocketAddr::from((natted.addr, 7001));
    let _l = natted.listen(inside).unwrap();
    assert!(handshake(&a, SocketAddr::from((natted.public, 7001))).is_err());
    assert!(handshake(&a, inside).is_err());

    // Every packet lost: no handshake.
    lab.set_loss(&b, 100.0);
    assert!(
        handshake(&a, at_b).is_err(),
        "a link losing everything carried one"
    );
}

/// The sequence of the newest segment the encoder has listed.
fn encoder_at(hls: &Path) -> u64 {
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
fn play(
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
        for uri in reply
            .text()
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
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
fn stats(viewer: &LabNode, channel: &str) -> serde_json::Value {
    let reply = viewer
        .get(&format!("/live/{channel}/stats.json"))
        .expect("stats.json");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let all: serde_json::Value = serde_json::from_slice(&reply.body).expect("stats.json is JSON");
    all["session"].clone()
}

/// A home connection with `delay_ms` one way to the core: 10 Mb/s up,
/// 50 Mb/s down, a tenth of the delay as jitter.
fn home(delay_ms: u64) -> LinkSpec {
    LinkSpec {
        delay: Duration::from_millis(delay_ms),
        jitter: Duration::from_millis(delay_ms / 10),
        up_kbit: Some(10_000),
        down_kbit: Some(50_000),
        ..LinkSpec::default()
    }
}

/// One-way 5–45 ms to the core for `n` viewers: 20–100 ms round trips to
/// a broadcaster 5 ms away.
fn spread(n: u64) -> Vec<LinkSpec> {
    (0..n).map(|i| home(5 + i * 40 / (n - 1).max(1))).collect()
}

/// A broadcaster and its viewers as daemons on lab hosts, streaming what
/// the synthetic encoder writes (and, with `origin`, an HTTP origin on a
/// host of its own serving the encoder's folder).
struct Stream {
    hls: PathBuf,
    channel: String,
    source: LabNode,
    viewers: Vec<LabNode>,
    _encoding: std::thread::JoinHandle<()>,
    _origin: Option<tokio::runtime::Runtime>,
    _tmp: tempfile::TempDir,
    // Last: the lab goes after the daemons and the origin.
    lab: Lab,
}

impl Stream {
    fn start(name: &str, viewers: &[LinkSpec], segments: u64, origin: bool) -> Option<Stream> {
        let mut lab = Lab::new(name)?;
        let tmp = tempfile::tempdir().unwrap();
        let hls = tmp.path().join("hls");
        std::fs::create_dir_all(&hls).unwrap();
        let source_host = lab.host(home(5));
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
    fn play(&self, which: &[usize], from: u64, want: usize, limit: Duration) -> Vec<BTreeSet<u64>> {
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

    fn all(&self) -> Vec<usize> {
        (0..self.viewers.len()).collect()
    }

    /// Prints what each viewer of `which` saw, and returns their stats.
    fn report(&self, which: &[usize]) -> Vec<serde_json::Value> {
        which
            .iter()
            .map(|i| {
                let v = &self.viewers[*i];
                let st = stats(v, &self.channel);
                eprintln!(
                    "  host {} (one-way {:?}, loss {}%): segments {}, late {}, missed {}, \
                     p50 {} ms, p95 {} ms, startup {} ms, offload {}, from HTTP {} B, proxying {}",
                    v.host.index,
                    v.host.spec.delay,
                    v.host.spec.loss_percent,
                    st["segments"],
                    st["late"],
                    st["missed"],
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

#[test]
fn eight_viewers_at_20_to_100_ms_play_every_segment() {
    let Some(stream) = Stream::start("rtt", &spread(8), 30, false) else {
        return;
    };
    stream.play(&stream.all(), 0, 8, Duration::from_secs(60));
    eprintln!("8 viewers, 20-100 ms:");
    for st in stream.report(&stream.all()) {
        assert_eq!(st["missed"], 0, "{st}");
    }
}

#[test]
fn eight_viewers_at_5_percent_loss_play_every_segment() {
    let lossy: Vec<LinkSpec> = spread(8)
        .into_iter()
        .map(|l| LinkSpec {
            loss_percent: 5.0,
            ..l
        })
        .collect();
    let Some(stream) = Stream::start("loss", &lossy, 30, false) else {
        return;
    };
    stream.lab.set_loss(&stream.source.host, 5.0);
    stream.play(&stream.all(), 0, 8, Duration::from_secs(60));
    eprintln!("8 viewers, 20-100 ms, 5% loss each way on every link:");
    for st in stream.report(&stream.all()) {
        assert_eq!(st["missed"], 0, "{st}");
    }
}

#[test]
fn half_the_viewers_cut_from_the_broadcaster_for_10_s_play_on() {
    let Some(stream) = Stream::start("split", &spread(8), 45, false) else {
        return;
    };
    stream.play(&stream.all(), 0, 4, Duration::from_secs(60));
    let cut: Vec<&Host> = stream.viewers.iter().step_by(2).map(|v| &v.host).collect();
    let at = encoder_at(&stream.hls);
    // Players read on through the partition and after it: every segment
    // of those 10 s and 4 after, byte for byte. The cut half still
    // reaches the other viewers, so nothing need be missed.
    std::thread::scope(|s| {
        let players = s.spawn(|| stream.play(&stream.all(), at + 1, 14, Duration::from_secs(60)));
        stream.lab.partition(&cut, &[&stream.source.host]);
        std::thread::sleep(Duration::from_secs(10));
        stream.lab.heal();
        players.join().unwrap();
    });
    eprintln!("8 viewers, half cut from the broadcaster for 10 s from segment {at}:");
    for st in stream.report(&stream.all()) {
        assert_eq!(st["missed"], 0, "{st}");
    }
}

#[test]
fn three_viewers_killed_and_a_late_joiner_cost_the_others_nothing() {
    let Some(mut stream) = Stream::start("churn", &spread(8), 45, false) else {
        return;
    };
    stream.play(&stream.all(), 0, 4, Duration::from_secs(60));
    for v in &mut stream.viewers[..3] {
        v.daemon.kill();
    }
    let at = encoder_at(&stream.hls);
    let host = stream.lab.host(home(25));
    let joiner = LabNode::start(&host, &[&stream.source.addr()], &[]);
    stream.viewers.push(joiner);
    let alive: Vec<usize> = (3..stream.viewers.len()).collect();
    stream.play(&alive, at + 1, 8, Duration::from_secs(60));
    eprintln!("8 viewers, 3 killed at segment {at}, then a late joiner (the last):");
    for st in stream.report(&alive) {
        assert_eq!(st["missed"], 0, "{st}");
    }
}

#[test]
fn when_the_broadcaster_dies_viewers_play_the_origin() {
    let Some(mut stream) = Stream::start("orphan", &spread(4), 45, true) else {
        return;
    };
    stream.play(&stream.all(), 0, 4, Duration::from_secs(60));
    stream.source.daemon.kill();
    let at = encoder_at(&stream.hls);
    // Segments the broadcaster never announced come from the origin's
    // playlist, byte for byte.
    stream.play(&stream.all(), at + 2, 6, Duration::from_secs(60));
    eprintln!("4 viewers, the broadcaster killed at segment {at}:");
    for st in stream.report(&stream.all()) {
        assert_eq!(st["proxying"], true, "{st}");
        assert!(st["bytes_from_http"].as_u64().unwrap_or(0) > 0, "{st}");
    }
}

#[test]
fn viewers_behind_nat_reach_each_other_through_a_relay() {
    let Some(mut lab) = Lab::new("nat") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let hls = tmp.path().join("hls");
    let source_host = lab.host(home(5));
    let relay_host = lab.host(home(10));
    let behind = |delay| LinkSpec {
        nat: true,
        ..home(delay)
    };
    let nat_hosts: Vec<Host> = [15, 25, 35]
        .into_iter()
        .map(|d| lab.host(behind(d)))
        .collect();
    let source = LabNode::start(&source_host, &[], &[]);
    let relay = LabNode::start(&relay_host, &[&source.addr()], &[("node", "relay = true")]);
    let bootstrap = [source.addr(), relay.addr()];
    let bootstrap: Vec<&str> = bootstrap.iter().map(String::as_str).collect();
    let viewers: Vec<LabNode> = nat_hosts
        .iter()
        .map(|h| LabNode::start(h, &bootstrap, &[]))
        .collect();
    // The second and third cannot reach the broadcaster at all: what they
    // play comes from the first, behind its own NAT, or each other.
    lab.partition(&[&nat_hosts[1], &nat_hosts[2]], &[&source_host]);

    let _encoding = encoder(hls.clone(), 40);
    let channel = source.shoal(&["channel", "create", "nat"]).ok().to_owned();
    let mut broadcast =
        source
            .sandbox
            .command(&["broadcast", "nat", "--hls-dir", hls.to_str().unwrap()]);
    broadcast.stdout(std::process::Stdio::null());
    lab.spawn(broadcast).unwrap();

    let play_all = |from: u64, want: usize| {
        std::thread::scope(|s| {
            for v in &viewers {
                let (channel, hls) = (&channel, &hls);
                s.spawn(move || play(v, channel, hls, from, want, Duration::from_secs(90)));
            }
        })
    };
    // Until each has found its way in (the channel's peers, a relay), a
    // segment may pass it by; from then on, none may.
    play_all(0, 3);
    let missed_before: Vec<serde_json::Value> = viewers
        .iter()
        .map(|v| stats(v, &channel)["missed"].clone())
        .collect();
    let at = encoder_at(&hls);
    play_all(at + 1, 8);
    eprintln!("3 viewers behind NAT, the last two cut from the broadcaster, one relay:");
    let peer_of: std::collections::HashMap<String, usize> = viewers
        .iter()
        .map(|v| (v.daemon.peer_id.clone(), v.host.index))
        .collect();
    for (v, before) in viewers.iter().zip(&missed_before) {
        let st = stats(v, &channel);
        let links: Vec<String> = v
            .connections()
            .into_iter()
            .filter_map(|(peer, addr)| {
                let other = peer_of.get(&peer)?;
                let how = if addr.contains("/p2p-circuit") {
                    "relayed"
                } else {
                    "direct (hole punched)"
                };
                Some(format!("host {other} {how}"))
            })
            .collect();
        eprintln!(
            "  host {}: segments {}, missed {} ({} before it found its way in), p95 {} ms, \
             startup {} ms, from peers {} B, from the broadcaster {} B; {}",
            v.host.index,
            st["segments"],
            st["missed"],
            before,
            st["latency_p95_ms"],
            st["startup_ms"],
            st["bytes_from_peers"],
            st["bytes_from_source"],
            links.join(", ")
        );
        assert_eq!(&st["missed"], before, "{st}");
    }
    // The two cut from the broadcaster played what other viewers behind
    // NAT gave them (and what the broadcaster sent through the relay).
    for v in &viewers[1..] {
        let st = stats(v, &channel);
        assert!(st["bytes_from_peers"].as_u64().unwrap_or(0) > 0, "{st}");
    }
    lab.stop_processes();
}
