//! What a phone pays to watch through the SDK: CPU time (the battery
//! proxy), peak memory and bytes, for a viewer driven through
//! `ShoalNode` in a process of its own, against a plain HTTP HLS client
//! fetching the same stream from an origin in the same run.
//!
//! Per stream rate (1 Mb/s and 4.5 Mb/s by default, 2 s segments from a
//! synthetic encoder), this process runs the broadcaster and a few other
//! viewers (each with a player pulling from its gateway), then starts, side
//! by side for the same seconds, three measured processes of this same
//! binary:
//!
//! - `sdk` with upload on (`UploadPolicy::Always`), its player on its
//!   gateway;
//! - `sdk` with upload off (`UploadPolicy::Never`);
//! - `http`: the same player on the origin's playlist: a CDN client.
//!
//! Each reports its CPU seconds (user + system, from `/proc/self/stat`)
//! over the watching, its peak RSS (`VmHWM`), the block bytes it sent and
//! received (the SDK's own counters) and the media bytes its player got.
//! An `idle` process first measures a node that joined and watches
//! nothing. Then the stripped size of the release `libshoal_ffi.so`.
//!
//! `cargo bench -p shoal-ffi --bench footprint`; `SHOAL_BENCH_SECONDS`
//! (60), `SHOAL_BENCH_RATES` (kbit/s, `1000,4500`), `SHOAL_BENCH_VIEWERS`
//! (other viewers, 3), `SHOAL_BENCH_PERF=DIR` (profile each measured
//! process with `perf record` into `DIR/<mode>.data`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "../tests/common/http.rs"]
mod http;

use shoal_ffi::{MobileConfig, ShoalNode, UploadPolicy, default_config};

const SEGMENT: Duration = Duration::from_secs(2);
/// Seconds of the stream before the measured processes start: the
/// broadcaster and the other viewers are connected and playing.
const WARMUP: Duration = Duration::from_secs(8);
/// Seconds an idle node runs before its memory is read.
const IDLE: Duration = Duration::from_secs(10);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(dir: &Path, policy: UploadPolicy) -> MobileConfig {
    let mut c = default_config(dir.to_string_lossy().into_owned());
    c.mdns = false;
    c.upload_policy = policy;
    c
}

/// A player: reads `playlist` every second and fetches each segment it
/// has not fetched, newest three at most (a player joining at the live
/// edge), until `stop`. Returns the media bytes fetched.
fn play(playlist: &str, stop: &AtomicBool) -> u64 {
    let base = playlist.rsplit_once('/').map_or(playlist, |(b, _)| b);
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (status, body) = http::get(playlist, &[]);
        if status == 200 {
            let text = String::from_utf8_lossy(&body).into_owned();
            let uris: Vec<&str> = text
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect();
            let fresh = uris.len().saturating_sub(3);
            for uri in &uris[fresh..] {
                if seen.insert(uri.to_string()) {
                    let (status, data) = http::get(&format!("{base}/{uri}"), &[]);
                    if status == 200 {
                        bytes += data.len() as u64;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    bytes
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command's closing parenthesis; utime and stime
    // are the 14th and 15th fields of the line.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks / per_second as f64
}

/// Peak resident memory of this process, MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

/// What a measured process prints on its last line.
#[derive(Debug, Default, Clone, Copy)]
struct Report {
    cpu_s: f64,
    peak_mib: f64,
    sent: u64,
    received: u64,
    played: u64,
}

impl Report {
    fn line(&self) -> String {
        format!(
            "report {} {} {} {} {}",
            self.cpu_s, self.peak_mib, self.sent, self.received, self.played
        )
    }

    fn parse(line: &str) -> Option<Report> {
        let mut f = line.strip_prefix("report ")?.split(' ');
        Some(Report {
            cpu_s: f.next()?.parse().ok()?,
            peak_mib: f.next()?.parse().ok()?,
            sent: f.next()?.parse().ok()?,
            received: f.next()?.parse().ok()?,
            played: f.next()?.parse().ok()?,
        })
    }
}

/// A measured process: `child MODE DIR ADDR TARGET SECONDS`.
fn child(args: &[String]) {
    let [mode, dir, addr, target, seconds] = args else {
        panic!("child MODE DIR ADDR TARGET SECONDS, got {args:?}");
    };
    let seconds: u64 = seconds.parse().expect("seconds");
    let stop = AtomicBool::new(false);
    let watch = |url: &str| {
        std::thread::scope(|s| {
            let player = s.spawn(|| play(url, &stop));
            std::thread::sleep(Duration::from_secs(seconds));
            stop.store(true, Ordering::Relaxed);
            player.join().expect("the player")
        })
    };
    let report = match mode.as_str() {
        "http" => {
            let start = cpu_seconds();
            let played = watch(target);
            Report {
                cpu_s: cpu_seconds() - start,
                peak_mib: peak_rss_mib(),
                played,
                ..Report::default()
            }
        }
        "idle" | "sdk-up" | "sdk-down" => {
            let policy = if mode == "sdk-down" {
                UploadPolicy::Never
            } else {
                UploadPolicy::Always
            };
            let node = ShoalNode::start(config(Path::new(dir), policy), None).expect("start");
            node.connect(addr.clone())
                .expect("connect to the broadcaster");
            let start = cpu_seconds();
            let played = if mode == "idle" {
                std::thread::sleep(IDLE);
                0
            } else {
                let url = node.watch(target.clone()).expect("watch");
                watch(&url)
            };
            let cpu_s = cpu_seconds() - start;
            let stats = node.stats().expect("stats");
            let report = Report {
                cpu_s,
                peak_mib: peak_rss_mib(),
                sent: stats.bytes_sent,
                received: stats.bytes_received,
                played,
            };
            node.stop();
            report
        }
        other => panic!("unknown mode {other}"),
    };
    println!("{}", report.line());
}

fn spawn(mode: &str, dir: &Path, addr: &str, target: &str, seconds: u64) -> Child {
    let exe = std::env::current_exe().expect("this benchmark's path");
    // SHOAL_BENCH_PERF=DIR: each measured process runs under `perf record`,
    // its profile written to DIR/<mode>.data.
    let mut command = match std::env::var_os("SHOAL_BENCH_PERF") {
        Some(dir) => {
            let mut c = Command::new("perf");
            c.args(["record", "-q", "-F", "999", "-g", "-e", "cpu-clock", "-o"])
                .arg(Path::new(&dir).join(format!("{mode}.data")))
                .arg("--")
                .arg(exe);
            c
        }
        None => Command::new(exe),
    };
    command
        .args(["child", mode])
        .arg(dir)
        .args([addr, target, &seconds.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start a measured process")
}

fn report_of(child: Child) -> Report {
    let mut child = child;
    let out = child.stdout.take().expect("its stdout");
    let mut report = None;
    for line in BufReader::new(out).lines() {
        let line = line.expect("a line");
        if let Some(r) = Report::parse(&line) {
            report = Some(r);
        }
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "a measured process failed: {status}");
    report.expect("a report line")
}

/// Runs the synthetic encoder into `dir` for `seconds` (and the warm-up).
fn encoder(dir: PathBuf, bytes: usize, seconds: u64) -> std::thread::JoinHandle<()> {
    std::fs::create_dir_all(&dir).unwrap();
    let count = (WARMUP.as_secs() + seconds + 10) / SEGMENT.as_secs();
    std::thread::spawn(move || {
        // It outlives the run by a few segments; a write into the folder
        // the run has removed ends it.
        let _ = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(shoal_node::testsrc::run(
                &dir,
                SEGMENT,
                bytes,
                Some(count),
                |_| {},
            ));
    })
}

/// Serves `dir` over HTTP on loopback: the CDN the baseline plays from.
fn origin(dir: PathBuf) -> (String, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(shoal_node::origin::serve(dir, listener));
    (format!("http://{addr}/index.m3u8"), rt)
}

fn per_minute(r: &Report, seconds: u64) -> f64 {
    r.cpu_s * 60.0 / seconds as f64
}

fn run(kbps: u64, seconds: u64, others: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let hls = tmp.path().join("hls");
    let bytes = (kbps * 1000 / 8 * SEGMENT.as_secs()) as usize;
    let _encoding = encoder(hls.clone(), bytes, seconds);
    let (origin_url, _origin) = origin(hls.clone());

    let source = ShoalNode::start(
        config(&tmp.path().join("source"), UploadPolicy::Always),
        None,
    )
    .unwrap();
    let channel = source.create_channel("bench".into()).unwrap();
    source
        .broadcast("bench".into(), hls.to_string_lossy().into())
        .unwrap();
    let addr = source.listen_addrs().unwrap().remove(0);

    let stop = Arc::new(AtomicBool::new(false));
    let played = Arc::new(AtomicU64::new(0));
    let mut viewers = Vec::new();
    let mut players = Vec::new();
    for i in 0..others {
        let v = ShoalNode::start(
            config(&tmp.path().join(format!("v{i}")), UploadPolicy::Always),
            None,
        )
        .unwrap();
        v.connect(addr.clone()).unwrap();
        let url = v.watch(channel.clone()).unwrap();
        let (stop, played) = (stop.clone(), played.clone());
        players.push(std::thread::spawn(move || {
            played.fetch_add(play(&url, &stop), Ordering::Relaxed);
        }));
        viewers.push(v);
    }
    std::thread::sleep(WARMUP);

    let started = Instant::now();
    let up = spawn("sdk-up", &tmp.path().join("up"), &addr, &channel, seconds);
    let down = spawn(
        "sdk-down",
        &tmp.path().join("down"),
        &addr,
        &channel,
        seconds,
    );
    let cdn = spawn("http", tmp.path(), &addr, &origin_url, seconds);
    let (up, down, cdn) = (report_of(up), report_of(down), report_of(cdn));
    let wall = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for p in players {
        p.join().unwrap();
    }
    for v in &viewers {
        v.stop();
    }
    source.stop();

    println!(
        "{:.1} Mb/s, {seconds} s watched beside {others} other viewers (all done in {:.1} s):",
        kbps as f64 / 1000.0,
        wall.as_secs_f64()
    );
    for (name, r) in [
        ("SDK, upload on ", &up),
        ("SDK, upload off", &down),
        ("HTTP client    ", &cdn),
    ] {
        println!(
            "  {name}: {:.2} CPU-s per minute watched, peak RSS {:.1} MiB, \
             sent {:.1} MB, received {:.1} MB, played {:.1} MB",
            per_minute(r, seconds),
            r.peak_mib,
            r.sent as f64 / 1e6,
            r.received as f64 / 1e6,
            r.played as f64 / 1e6,
        );
    }
    let base = per_minute(&cdn, seconds).max(1e-3);
    println!(
        "  CPU ratio to the HTTP client: upload off {:.2}, upload on {:.2}; \
         peak RSS ratio: upload off {:.2}, upload on {:.2}",
        per_minute(&down, seconds) / base,
        per_minute(&up, seconds) / base,
        down.peak_mib / cdn.peak_mib,
        up.peak_mib / cdn.peak_mib,
    );
}

fn idle() {
    let tmp = tempfile::tempdir().unwrap();
    let source =
        ShoalNode::start(config(&tmp.path().join("s"), UploadPolicy::Always), None).unwrap();
    let addr = source.listen_addrs().unwrap().remove(0);
    let idle = report_of(spawn("idle", &tmp.path().join("idle"), &addr, "-", 0));
    source.stop();
    println!(
        "idle node (joined, watching nothing, {} s): peak RSS {:.1} MiB, {:.3} CPU-s",
        IDLE.as_secs(),
        idle.peak_mib,
        idle.cpu_s
    );
}

/// The release library's size, whole and stripped.
fn library_size() {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // target/release/deps/footprint-… → target/release/libshoal_ffi.so
    let Some(lib) = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("libshoal_ffi.so"))
    else {
        return;
    };
    let Ok(whole) = std::fs::metadata(&lib).map(|m| m.len()) else {
        println!(
            "{} not found: `cargo build -p shoal-ffi --release --lib` builds it",
            lib.display()
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let stripped = tmp.path().join("libshoal_ffi.so");
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&lib)
        .status()
        .is_ok_and(|s| s.success());
    match std::fs::metadata(&stripped).map(|m| m.len()) {
        Ok(small) if ok => println!(
            "libshoal_ffi.so (x86_64, this build's profile): {:.1} MB, stripped {:.1} MB",
            whole as f64 / 1e6,
            small as f64 / 1e6
        ),
        _ => println!(
            "libshoal_ffi.so: {:.1} MB (strip failed)",
            whole as f64 / 1e6
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        child(&args[1..]);
        return;
    }
    let seconds = env_or("SHOAL_BENCH_SECONDS", 60u64);
    let others = env_or("SHOAL_BENCH_VIEWERS", 3usize);
    let rates: Vec<u64> = std::env::var("SHOAL_BENCH_RATES")
        .unwrap_or_else(|_| "1000,4500".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    library_size();
    idle();
    for kbps in rates {
        run(kbps, seconds, others);
    }
}
