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
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(shoal_node::testsrc::run(
                &dir,
                SEGMENT,
                SEGMENT_BYTES,
                Some(count),
                |_| {},
            ))
            .unwrap();
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

/// Watches `channel` through `viewer`'s gateway as a player does, until
/// `want` segments still on the encoder's disk were read byte for byte
/// equal to its files; returns the sequences checked.
fn play(
    viewer: &LabNode,
    channel: &str,
    hls: &Path,
    want: usize,
    limit: Duration,
) -> BTreeSet<u64> {
    let playlist = format!("/live/{channel}/index.m3u8");
    let mut checked = BTreeSet::new();
    let start = Instant::now();
    while checked.len() < want {
        assert!(
            start.elapsed() < limit,
            "host {} checked {checked:?} of {want} segments in {limit:?}",
            viewer.host.index
        );
        let Ok(reply) = viewer.get(&playlist) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        if reply.status != 200 {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        for uri in reply
            .text()
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let Some(seq) = uri
                .rsplit('/')
                .next()
                .and_then(|f| f.split('.').next())
                .and_then(|n| n.parse::<u64>().ok())
            else {
                panic!("a segment URI without a sequence: {uri}");
            };
            if checked.contains(&seq) {
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

/// A channel's statistics on `viewer` (its gateway's stats.json).
fn stats(viewer: &LabNode, channel: &str) -> serde_json::Value {
    let reply = viewer
        .get(&format!("/live/{channel}/stats.json"))
        .expect("stats.json");
    assert_eq!(reply.status, 200, "{}", reply.text());
    serde_json::from_slice(&reply.body).expect("stats.json is JSON")
}

#[test]
fn eight_viewers_at_20_to_100_ms_play_every_segment() {
    let Some(mut lab) = Lab::new("rtt") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let hls = tmp.path().join("hls");
    let home = |delay_ms: u64| LinkSpec {
        delay: Duration::from_millis(delay_ms),
        jitter: Duration::from_millis(delay_ms / 10),
        up_kbit: Some(10_000),
        down_kbit: Some(50_000),
        ..LinkSpec::default()
    };
    let source_host = lab.host(home(5));
    // One-way 5–45 ms to the core: 20–100 ms round trips to the broadcaster.
    let viewer_hosts: Vec<Host> = (0..8).map(|i| lab.host(home(5 + i * 40 / 7))).collect();
    let source = LabNode::start(&source_host, None, &[]);
    let viewers: Vec<LabNode> = viewer_hosts
        .iter()
        .map(|h| LabNode::start(h, Some(&source.addr()), &[]))
        .collect();

    let _encoding = encoder(hls.clone(), 40);
    let channel = source.shoal(&["channel", "create", "lab"]).ok().to_owned();
    let mut broadcast =
        source
            .sandbox
            .command(&["broadcast", "lab", "--hls-dir", hls.to_str().unwrap()]);
    broadcast.stdout(std::process::Stdio::null());
    lab.spawn(broadcast).unwrap();

    let checked: Vec<BTreeSet<u64>> = std::thread::scope(|s| {
        let players: Vec<_> = viewers
            .iter()
            .map(|v| s.spawn(|| play(v, &channel, &hls, 8, Duration::from_secs(60))))
            .collect();
        players.into_iter().map(|p| p.join().unwrap()).collect()
    });
    for (v, seqs) in viewers.iter().zip(&checked) {
        let st = stats(v, &channel)["session"].clone();
        assert_eq!(st["missed"], 0, "host {}: {st}", v.host.index);
        eprintln!(
            "host {} (one-way {:?}): segments {:?}, p95 {} ms, offload {}",
            v.host.index, v.host.spec.delay, seqs, st["latency_p95_ms"], st["offload"]
        );
    }
}
