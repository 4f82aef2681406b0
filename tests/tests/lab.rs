//! Real daemons across a real (emulated) network: hosts in network
//! namespaces with delay, loss, rate limits, NAT and partitions
//! (`shoal_tests::lab`). Each scenario asserts what a viewer relies on:
//! every segment complete and byte-identical to the encoder's, none
//! missed where the scenario leaves a path. Skips where the lab cannot
//! run (not root).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_tests::lab::{Host, Lab, LabNode, LinkSpec};
use shoal_tests::lab_live::{Stream, encoder, encoder_at, home, play, spread, stats};

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

/// Low-latency live across the lab: eight viewers at 20-100 ms RTT watch
/// a channel broadcast as 200 ms parts (`--fmp4 --low-latency`); each
/// lists every part from where it started, none given up, each part the
/// encoder's fragment; part delivery is reported per viewer.
#[test]
fn eight_viewers_at_20_to_100_ms_get_every_low_latency_part() {
    let Some(mut lab) = Lab::new("llrtt") else {
        return;
    };
    // Eight seconds of 200 ms fragments, a keyframe a second.
    let stream = shoal_tests::live::fragmented_mp4(8, false);
    let (parts, _) = shoal_tests::live::parts_of(&stream);
    let last = *parts.keys().next_back().unwrap();
    let source_host = lab.host(home(5));
    let hosts: Vec<Host> = spread(8).into_iter().map(|s| lab.host(s)).collect();
    let source = LabNode::start(&source_host, &[], &[]);
    let viewers: Vec<LabNode> = hosts
        .iter()
        .map(|h| LabNode::start(h, &[&source.addr()], &[]))
        .collect();
    let channel = source.shoal(&["channel", "create", "ll"]).ok().to_owned();
    // Watching before the stream starts: parts come from the first.
    for v in &viewers {
        let mut watch = v.sandbox.command(&["watch", &channel]);
        watch.stdout(std::process::Stdio::null());
        lab.spawn(watch).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("live.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let fifo_arg = fifo.to_str().unwrap().to_owned();
    let mut broadcast = source.sandbox.command(&[
        "broadcast",
        "ll",
        "--fmp4",
        &fifo_arg,
        "--segment-seconds",
        "1",
        "--low-latency",
    ]);
    broadcast.stdout(std::process::Stdio::null());
    lab.spawn(broadcast).unwrap();
    // A few seconds for the viewers to find the channel, then the encoder
    // at its real-time pace.
    std::thread::sleep(Duration::from_secs(3));
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        for chunk in stream.chunks(stream.len() / 40 + 1) {
            f.write_all(chunk).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let path = format!("/live/{channel}/0/index.m3u8");
    let wanted = format!("URI=\"{}.{}.m4s\"", last.0, last.1);
    eprintln!("8 viewers, 20-100 ms, 200 ms parts of 1 s segments:");
    for v in &viewers {
        let deadline = Instant::now() + Duration::from_secs(30);
        let playlist = loop {
            let text = v.get(&path).map(|r| r.text()).unwrap_or_default();
            if text.contains(&wanted) {
                break text;
            }
            assert!(
                Instant::now() < deadline,
                "host {} never listed the last part:\n{text}",
                v.host.index
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            !playlist.contains("#EXT-X-GAP"),
            "host {}:\n{playlist}",
            v.host.index
        );
        let listed = shoal_tests::live::listed_parts(&playlist);
        for (segment, part) in &listed {
            let reply = v
                .get(&format!("/live/{channel}/0/{segment}.{part}.m4s"))
                .unwrap();
            assert_eq!(reply.status, 200, "host {}: {segment}.{part}", v.host.index);
            assert!(
                reply.body == parts[&(*segment, *part)],
                "host {}: part {segment}.{part} differs from the encoder's",
                v.host.index
            );
        }
        let st = stats(v, &channel);
        eprintln!(
            "  host {} (one-way {:?}): parts {}, late {}, missed {}, part delivery p50 {} ms, p95 {} ms, offload {}",
            v.host.index,
            v.host.spec.delay,
            st["segments"],
            st["late"],
            st["missed"],
            st["latency_p50_ms"],
            st["latency_p95_ms"],
            st["offload"],
        );
        assert_eq!(st["missed"], 0, "host {}: {st}", v.host.index);
    }
}
