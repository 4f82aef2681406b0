//! The network lab as a benchmark (as root; `tests/src/lab.rs`): real
//! daemons (the release `shoal` binary) on capped links.
//!
//! `cargo build --release -p shoal-cli && cargo bench -p shoal-tests --bench lab -- [transfer] [live] [crosscheck]`
//!
//! - **transfer**: a 64 MiB stream (`SHOAL_BENCH_MIB`) fetched with `shoal
//!   get` by one host from 1, 2 and 4 seeders (`SHOAL_BENCH_SEEDERS`), each
//!   behind a 20 Mb/s uplink with 10 ms to the core. The baseline, in the
//!   same run: one plain TCP connection carrying bytes over one such link
//!   (what a link gives a single stream: TCP/IP headers, the queue). The
//!   ratio is shoal's throughput over that baseline times the seeders.
//!   The time includes the command's start and the DHT lookup, as a user
//!   sees it.
//! - **live**: a broadcaster and 10 and 20 viewers (`SHOAL_BENCH_VIEWERS`)
//!   at 20–100 ms round trips with 10 Mb/s uplinks watch a 1.5 Mb/s
//!   synthetic stream for 30 segments; reports latency from listing to
//!   completion (p50, p95 over every viewer's segments), startup, offload,
//!   what the broadcaster sent against what viewers got, missed segments,
//!   and the machine's CPU share during the run (above 70% the machine,
//!   not the network, may be what limits).
//! - **crosscheck**: the live scenario with 5, 10 and 20 viewers on the
//!   lab, then in the model (`shoal_sim::swarm::scenario`), side by side
//!   with what lies beyond the targets (latency within the larger of 15%
//!   and the mean round trip, offload within 3 points, the broadcaster's
//!   bytes within 10%, the same misses), the model's latency over seeds
//!   1-8, and how late the lab's links wrote their packets (what a busy
//!   machine adds to every delay). `SHOAL_BENCH_UPLINK_MBPS` sets every
//!   host's uplink in Mb/s (10 by default, held to 1-10,000).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use shoal_sim::swarm::SessionSummary;
use shoal_sim::swarm::scenario::{Figures, LiveScenario};
use shoal_tests::lab::{Host, Lab, LabNode, LinkSpec, WireLateness};
use shoal_tests::lab_live::Stream;
use shoal_tests::{cpu_share, cpu_ticks};

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// A seeder's uplink: 20 Mb/s, 10 ms to the core.
fn seeder_link() -> LinkSpec {
    LinkSpec {
        delay: Duration::from_millis(10),
        up_kbit: Some(20_000),
        ..LinkSpec::default()
    }
}

/// Bytes per second one plain TCP connection gets from `from` to `to`
/// over the lab (`bytes` of them).
fn tcp_goodput(from: &Host, to: &Host, bytes: usize) -> f64 {
    let at = SocketAddr::from((to.addr, 9000));
    let listener = to.listen(at).expect("listen");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0usize;
        let start = Instant::now();
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        got as f64 / start.elapsed().as_secs_f64()
    });
    let mut s = from.connect(at).expect("connect");
    let chunk = vec![0x5Au8; 1 << 16];
    let mut sent = 0;
    while sent < bytes {
        let n = chunk.len().min(bytes - sent);
        s.write_all(&chunk[..n]).expect("send");
        sent += n;
    }
    drop(s);
    reader.join().expect("the reader")
}

/// Bytes `host` has received (`Rx`) or sent (`Tx`) on its link, from
/// `/proc/net/dev` inside its namespace.
fn link_bytes(host: &Host, direction: Direction) -> u64 {
    let out = host
        .command("cat")
        .arg("/proc/net/dev")
        .output()
        .expect("read /proc/net/dev");
    // Received bytes are the first counter, sent bytes the ninth.
    let field = match direction {
        Direction::Rx => 0,
        Direction::Tx => 8,
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("eth0:"))
        .and_then(|rest| rest.split_whitespace().nth(field))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[derive(Clone, Copy)]
enum Direction {
    Rx,
    Tx,
}

fn transfer(mib: usize, seeders: usize, file: &Path, goodput: f64) {
    let Some(mut lab) = Lab::new("xfer") else {
        return;
    };
    let fetcher_host = lab.host(LinkSpec {
        delay: Duration::from_millis(10),
        ..LinkSpec::default()
    });
    let hosts: Vec<Host> = (0..seeders).map(|_| lab.host(seeder_link())).collect();
    let seeds: Vec<LabNode> = hosts.iter().map(|h| LabNode::start(h, &[], &[])).collect();
    let file_arg = file.to_str().expect("a UTF-8 path");
    let mut root = String::new();
    for s in &seeds {
        root = s.shoal(&["add", file_arg]).ok().to_owned();
    }
    let addrs: Vec<String> = seeds.iter().map(LabNode::addr).collect();
    let bootstrap: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let fetcher = LabNode::start(&fetcher_host, &bootstrap, &[]);
    let out = fetcher.sandbox.path("copy");
    let rx_before = link_bytes(&fetcher_host, Direction::Rx);
    let cpu_before = cpu_ticks();
    let start = Instant::now();
    // SHOAL_BENCH_TRACE=1: what each link carried, about every 100 ms
    // (reading the counters in each namespace takes a few ms more).
    let trace = std::env::var_os("SHOAL_BENCH_TRACE").is_some();
    let done = std::sync::atomic::AtomicBool::new(false);
    let secs = std::thread::scope(|s| {
        if trace {
            s.spawn(|| {
                let mut last = rx_before;
                let mut sent: Vec<u64> =
                    hosts.iter().map(|h| link_bytes(h, Direction::Tx)).collect();
                let mut line = String::new();
                let mut each = vec![String::new(); hosts.len()];
                let mut then = Instant::now();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    let secs = then.elapsed().as_secs_f64();
                    then = Instant::now();
                    let now = link_bytes(&fetcher_host, Direction::Rx);
                    line.push_str(&format!(" {:.1}", (now - last) as f64 / secs / 1e6));
                    last = now;
                    for (i, h) in hosts.iter().enumerate() {
                        let t = link_bytes(h, Direction::Tx);
                        each[i].push_str(&format!(" {:.1}", (t - sent[i]) as f64 / secs / 1e6));
                        sent[i] = t;
                    }
                }
                println!("    fetcher received, MB/s every ~100 ms:{line}");
                for (i, e) in each.iter().enumerate() {
                    println!("      seeder {i} sent:{e}");
                }
            });
        }
        fetcher
            .shoal(&["get", &root, "-o", out.to_str().expect("a UTF-8 path")])
            .ok();
        let secs = start.elapsed().as_secs_f64();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        secs
    });
    let wire = link_bytes(&fetcher_host, Direction::Rx) - rx_before;
    let cpu = cpu_share(cpu_before, cpu_ticks());
    // The same command again, with everything local: what of the time was
    // writing the copy out rather than fetching.
    let again = Instant::now();
    fetcher
        .shoal(&["get", &root, "-o", out.to_str().expect("a UTF-8 path")])
        .ok();
    let local = again.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    assert_eq!(bytes, (mib << 20) as u64, "the copy is whole");
    let rate = bytes as f64 / secs;
    let capacity = goodput * seeders as f64;
    println!(
        "  {seeders} seeder{}: {:.1} s, {:.2} MB/s of {:.2} MB/s ({seeders} x one link's TCP goodput): {:.0}%; \
         {:.1} MB on the fetcher's wire ({:.2}x the stream); machine CPU {:.0}%; \
         the same command with everything local {local:.2} s",
        if seeders == 1 { "" } else { "s" },
        secs,
        rate / 1e6,
        capacity / 1e6,
        100.0 * rate / capacity,
        wire as f64 / 1e6,
        wire as f64 / bytes as f64,
        100.0 * cpu,
    );
}

fn transfers() {
    let mib = std::env::var("SHOAL_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64usize);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("stream.bin");
    let mut f = std::fs::File::create(&file).expect("the stream file");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for c in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).expect("write");
    }
    drop(f);
    // The baseline: one TCP connection over one capped link.
    let goodput = {
        let Some(mut lab) = Lab::new("tcp") else {
            return;
        };
        let a = lab.host(seeder_link());
        let b = lab.host(LinkSpec {
            delay: Duration::from_millis(10),
            ..LinkSpec::default()
        });
        tcp_goodput(&a, &b, 16 << 20)
    };
    println!(
        "transfer of {mib} MiB over 20 Mb/s uplinks; one TCP connection gets {:.2} MB/s ({:.1} Mb/s) of a link",
        goodput / 1e6,
        goodput * 8.0 / 1e6
    );
    for seeders in env_list("SHOAL_BENCH_SEEDERS", &[1, 2, 4]) {
        transfer(mib, seeders, &file, goodput);
    }
}

/// Segments the live run measures, after a warm-up of 4.
const LIVE_SEGMENTS: usize = 30;

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// TCP's loss recovery in `host`'s namespace so far: segments sent
/// again, and retransmission timeouts (each a pause of at least 200 ms on
/// Linux), from `/proc/net/snmp` and `/proc/net/netstat`.
fn tcp_recovery(host: &Host) -> (u64, u64) {
    let out = host
        .command("cat")
        .args(["/proc/net/snmp", "/proc/net/netstat"])
        .output()
        .expect("read the TCP counters");
    let text = String::from_utf8_lossy(&out.stdout);
    // Each table is a line of names and a line of values, both prefixed.
    let lines: Vec<&str> = text.lines().collect();
    let field = |prefix: &str, name: &str| -> u64 {
        lines
            .windows(2)
            .filter(|w| w[0].starts_with(prefix) && w[1].starts_with(prefix))
            .find_map(|w| {
                let i = w[0].split_whitespace().position(|n| n == name)?;
                w[1].split_whitespace().nth(i)?.parse().ok()
            })
            .unwrap_or(0)
    };
    (
        field("Tcp:", "RetransSegs"),
        field("TcpExt:", "TCPTimeouts"),
    )
}

/// [`tcp_recovery`] summed over the broadcaster and the viewers.
fn stream_recovery(stream: &Stream) -> (u64, u64) {
    std::iter::once(&stream.source)
        .chain(&stream.viewers)
        .map(|n| tcp_recovery(&n.host))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// What one lab run of a live scenario measured.
struct LabRun {
    figures: Figures,
    /// TCP segments sent again and retransmission timeouts over the
    /// measured segments, in every host.
    retransmits: u64,
    timeouts: u64,
    startup_ms: f64,
    /// The machine's CPU share over the measured segments, and how long
    /// they took.
    cpu: f64,
    wall: f64,
    /// How late the links' threads wrote packets over the measured
    /// segments.
    wires: WireLateness,
}

/// Runs `scenario` on the lab: four segments to warm up, then
/// [`LIVE_SEGMENTS`] measured; the figures are every viewer's session
/// statistics at the end.
fn run_lab(scenario: &LiveScenario) -> Option<LabRun> {
    let stream = Stream::start_scenario("bench", scenario)?;
    stream.play(&stream.all(), 0, 4, Duration::from_secs(120));
    let before = cpu_ticks();
    let recovery = stream_recovery(&stream);
    let wires_before = stream.lab.wire_lateness();
    let at = shoal_tests::lab_live::encoder_at(&stream.hls);
    let started = Instant::now();
    stream.play(
        &stream.all(),
        at + 1,
        LIVE_SEGMENTS,
        Duration::from_secs(300),
    );
    let cpu = cpu_share(before, cpu_ticks());
    let wall = started.elapsed().as_secs_f64();
    let wires = stream.lab.wire_lateness().since(&wires_before);
    let after = stream_recovery(&stream);
    let stats: Vec<serde_json::Value> = stream
        .viewers
        .iter()
        .map(|v| shoal_tests::lab_live::stats(v, &stream.channel))
        .collect();
    let num = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let sessions: Vec<SessionSummary> = stats
        .iter()
        .map(|s| SessionSummary {
            segments: num(s, "segments"),
            missed: num(s, "missed"),
            latency_p50_ms: s["latency_p50_ms"].as_u64(),
            latency_p95_ms: s["latency_p95_ms"].as_u64(),
        })
        .collect();
    let sum = |k: &str| stats.iter().map(|s| num(s, k)).sum::<u64>();
    let mut startup: Vec<f64> = stats.iter().map(|s| num(s, "startup_ms") as f64).collect();
    Some(LabRun {
        figures: Figures::new(
            &sessions,
            sum("bytes_from_peers"),
            sum("bytes_from_source"),
            sum("bytes_from_http"),
            scenario.segment_bytes,
        ),
        retransmits: after.0 - recovery.0,
        timeouts: after.1 - recovery.1,
        startup_ms: quantile(&mut startup, 0.5),
        cpu,
        wall,
        wires,
    })
}

/// The links' lateness in a few words.
fn lateness(w: &WireLateness) -> String {
    let share = |n: u64| 100.0 * n as f64 / w.packets.max(1) as f64;
    format!(
        "{} packets, mean {:.2} ms late, over 2 / 10 / 50 ms: {:.2} / {:.3} / {:.3}%, worst {:.0} ms",
        w.packets,
        w.mean_us() / 1000.0,
        share(w.over_2ms),
        share(w.over_10ms),
        share(w.over_50ms),
        w.max_us as f64 / 1000.0,
    )
}

fn limited(cpu: f64) -> &'static str {
    if cpu > 0.7 {
        " (limited by the machine)"
    } else {
        ""
    }
}

fn live(viewers: usize) {
    let scenario = LiveScenario::spread(viewers, LIVE_SEGMENTS as u64 + 12);
    let Some(run) = run_lab(&scenario) else {
        return;
    };
    let f = &run.figures;
    println!(
        "  {viewers} viewers: latency p50 {:.0} ms (median of viewers), p95 {:.0} ms (worst viewer); \
         startup median {:.0} ms; offload {:.1}%; the broadcaster sent {:.1} MB, {:.2} copies \
         of the stream; missed {}; TCP resent {} segments, {} timeouts; machine CPU {:.0}% over {:.0} s{}",
        f.p50_ms,
        f.p95_ms,
        run.startup_ms,
        f.offload,
        f.source_bytes as f64 / 1e6,
        f.copies,
        f.missed,
        run.retransmits,
        run.timeouts,
        100.0 * run.cpu,
        run.wall,
        limited(run.cpu),
    );
    println!("     lab links: {}", lateness(&run.wires));
}

fn lives() {
    println!(
        "live: a broadcaster and N viewers at 20-100 ms, 10 Mb/s uplinks, a 1.5 Mb/s stream, {LIVE_SEGMENTS} segments"
    );
    for n in env_list("SHOAL_BENCH_VIEWERS", &[10, 20]) {
        live(n);
    }
}

/// The same scenario on the lab and in the model, side by side, with
/// what lies beyond the cross-check's targets.
/// Seeds the model runs each cross-checked scenario with.
const MODEL_SEEDS: u64 = 8;

fn crosscheck() {
    // SHOAL_BENCH_UPLINK_MBPS: every host's uplink (10 Mb/s unless set);
    // far above the stream's rate, it takes TCP's congestion control at
    // a full link out of the comparison.
    let uplink_mbps = env_list("SHOAL_BENCH_UPLINK_MBPS", &[10])
        .first()
        .copied()
        .unwrap_or(10)
        .clamp(1, 10_000) as u64;
    println!(
        "crosscheck: one scenario (a broadcaster and N viewers at 20-100 ms, {uplink_mbps} Mb/s uplinks, \
         a 1.5 Mb/s stream) on the lab and in the model (seed 1), every viewer's session statistics"
    );
    println!(
        "  N  | p50 lab / model | p95 lab / model | offload lab / model | broadcaster MB lab / model | missed | lab TCP resent / timeouts | beyond target"
    );
    for n in env_list("SHOAL_BENCH_VIEWERS", &[5, 10, 20]) {
        let scenario = LiveScenario {
            uplink: uplink_mbps * 1_000_000 / 8,
            ..LiveScenario::spread(n, LIVE_SEGMENTS as u64 + 12)
        };
        let Some(lab) = run_lab(&scenario) else {
            return;
        };
        // The model publishes what the lab's viewers held by the end.
        let modelled = LiveScenario {
            segments: lab.figures.segments.max(1),
            ..scenario.clone()
        };
        // Seed 1 is the model's figure; seeds 2-8 give its own spread
        // (who trades with whom, the rotations, gossip's timing).
        let seeds: Vec<Figures> = (1..=MODEL_SEEDS)
            .map(
                |seed| match shoal_sim::swarm::run(&modelled.swarm_params(seed)) {
                    Ok(r) => Figures::of_model(&r, scenario.segment_bytes),
                    Err(e) => panic!("the model refused the scenario: {e}"),
                },
            )
            .collect();
        let model = seeds[0].clone();
        let range = |f: fn(&Figures) -> f64| {
            let v = seeds.iter().map(f);
            let lo = v.clone().fold(f64::INFINITY, f64::min);
            (lo, v.fold(f64::NEG_INFINITY, f64::max))
        };
        let (p50_lo, p50_hi) = range(|f| f.p50_ms);
        let (p95_lo, p95_hi) = range(|f| f.p95_ms);
        let l = &lab.figures;
        let beyond = Figures::differences(l, &model, scenario.mean_rtt());
        println!(
            "  {n:<2} | {:>5.0} / {:<5.0} ms | {:>5.0} / {:<5.0} ms | {:>5.1} / {:<5.1}% | {:>5.1} / {:<5.1} | {} / {} | {} / {} | {}{}",
            l.p50_ms,
            model.p50_ms,
            l.p95_ms,
            model.p95_ms,
            l.offload,
            model.offload,
            l.source_bytes as f64 / 1e6,
            model.source_bytes as f64 / 1e6,
            l.missed,
            model.missed,
            lab.retransmits,
            lab.timeouts,
            if beyond.is_empty() {
                "none".to_string()
            } else {
                beyond.join("; ")
            },
            limited(lab.cpu),
        );
        println!(
            "     model seeds 1-{MODEL_SEEDS}: p50 {p50_lo:.0}-{p50_hi:.0} ms, p95 {p95_lo:.0}-{p95_hi:.0} ms; \
             lab machine CPU {:.0}%; lab links: {}",
            100.0 * lab.cpu,
            lateness(&lab.wires),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let all = args.is_empty();
    if all || args.iter().any(|a| a == "transfer") {
        transfers();
    }
    if all || args.iter().any(|a| a == "live") {
        lives();
    }
    if all || args.iter().any(|a| a == "crosscheck") {
        crosscheck();
    }
}
