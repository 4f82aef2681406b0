//! Transfer of one stream on loopback TCP: shoal's Bitswap fetch from one
//! and from four seeders, against a plain libp2p stream (same TCP + noise +
//! yamux transport) carrying the same number of bytes, in the same run.
//!
//! `cargo bench -p shoal-node --bench transfer` (`SHOAL_BENCH_MIB` sets the
//! stream size, 256 MiB by default; `SHOAL_BENCH_RUNS` the runs, 3).

use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{Multiaddr, StreamProtocol, noise, tcp, yamux};
use shoal_node::{Node, NodeConfig};
use shoal_storage::{ImportOptions, import_file};

const PLAIN: StreamProtocol = StreamProtocol::new("/shoal-bench/plain/1.0.0");

/// CPU seconds (user + system) used by this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills a plain struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn plain_swarm() -> libp2p::Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Sends `bytes` over one libp2p stream; returns the seconds and CPU
/// seconds it took.
async fn plain_transfer(bytes: u64) -> (f64, f64) {
    let mut a = plain_swarm();
    let mut b = plain_swarm();
    b.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await
        {
            break address;
        }
    };
    let b_peer = *b.local_peer_id();
    let mut incoming = b.behaviour().new_control().accept(PLAIN).unwrap();
    let mut control = a.behaviour().new_control();
    a.dial(addr).unwrap();
    loop {
        tokio::select! {
            e = a.select_next_some() => {
                if let libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } = e {
                    break;
                }
            }
            _ = b.select_next_some() => {}
        }
    }
    let drive_a = tokio::spawn(async move {
        loop {
            a.select_next_some().await;
        }
    });
    let drive_b = tokio::spawn(async move {
        loop {
            b.select_next_some().await;
        }
    });
    let reader = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while got < bytes {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got += n as u64;
        }
    });
    let cpu = cpu_seconds();
    let start = Instant::now();
    let mut stream = control.open_stream(b_peer, PLAIN).await.unwrap();
    let chunk = vec![7u8; 1 << 20];
    let mut sent = 0u64;
    while sent < bytes {
        stream.write_all(&chunk).await.unwrap();
        sent += chunk.len() as u64;
    }
    stream.flush().await.unwrap();
    reader.await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    drive_a.abort();
    drive_b.abort();
    (secs, cpu)
}

async fn start_node(dir: &std::path::Path, bootstrap: Vec<Multiaddr>) -> (Node, Multiaddr) {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap,
        mdns: false,
        ..NodeConfig::default()
    };
    let node = Node::start_in(dir, config).await.unwrap();
    let addr = node.dialable_addr().await.unwrap();
    (node, addr)
}

/// Fetches the stream at `input` from `seeders` fresh seeders; returns the
/// seconds and CPU seconds the fetch took.
async fn shoal_transfer(input: &std::path::Path, seeders: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    let mut root = None;
    for i in 0..seeders {
        let d = dir.path().join(format!("seed{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let (node, addr) = start_node(&d, Vec::new()).await;
        let imported =
            import_file(node.store(), input, &ImportOptions::default(), &mut |_| {}).unwrap();
        root = Some(imported.root);
        nodes.push((node, addr));
    }
    let d = dir.path().join("fetcher");
    std::fs::create_dir_all(&d).unwrap();
    let (fetcher, _) = start_node(&d, Vec::new()).await;
    for (_, addr) in &nodes {
        fetcher.dial(addr.clone()).await.unwrap();
    }
    let root = root.unwrap();
    let cpu = cpu_seconds();
    let start = Instant::now();
    let report = fetcher.fetch(root).await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    assert!(report.bytes_fetched > 0);
    fetcher.stop().await;
    for (n, _) in nodes {
        n.stop().await;
    }
    (secs, cpu)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mib: u64 = std::env::var("SHOAL_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let runs: usize = std::env::var("SHOAL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let bytes = mib << 20;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("stream.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for c in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&buf).unwrap();
        }
    }
    // What crosses the network: the k data shards of every segment, plus
    // manifests. Parity is fetched only when data shards are missing.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut plain = Vec::new();
    let mut one = Vec::new();
    let mut four = Vec::new();
    let (mut cpu0, mut cpu1, mut cpu4) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let (s, c) = rt.block_on(plain_transfer(bytes));
        plain.push(s);
        cpu0.push(c);
        let (s, c) = rt.block_on(shoal_transfer(&input, 1));
        one.push(s);
        cpu1.push(c);
        let (s, c) = rt.block_on(shoal_transfer(&input, 4));
        four.push(s);
        cpu4.push(c);
        eprintln!(
            "run {run}: plain {:.2} s, 1 seeder {:.2} s, 4 seeders {:.2} s",
            plain[run], one[run], four[run]
        );
    }
    let (p, o, f) = (median(plain), median(one), median(four));
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let mbps = |s: f64| bytes as f64 / s / 1e6;
    println!("stream of {mib} MiB on loopback TCP (noise + yamux), median of {runs} runs:");
    println!(
        "  plain libp2p stream: {:.2} s, {:.0} MB/s, {:.2} CPU s/GiB",
        p,
        mbps(p),
        median(cpu0) / gib
    );
    println!(
        "  shoal, 1 seeder:     {:.2} s, {:.0} MB/s, ratio {:.2}, {:.2} CPU s/GiB",
        o,
        mbps(o),
        p / o,
        median(cpu1) / gib
    );
    println!(
        "  shoal, 4 seeders:    {:.2} s, {:.0} MB/s, ratio {:.2}, {:.2} CPU s/GiB",
        f,
        mbps(f),
        p / f,
        median(cpu4) / gib
    );
    println!("  (CPU counts both ends, all in this process; goal: ratio >= 0.8)");
}
