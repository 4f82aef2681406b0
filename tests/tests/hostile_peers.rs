//! The node against peers that try to make it spend memory: each attack
//! that used to work, turned around, measured on a real daemon's resident
//! memory (`/proc/<pid>/status`).

use std::time::{Duration, Instant};

use futures::AsyncWriteExt;
use shoal_node::libp2p::{Multiaddr, PeerId};
use shoal_protocol::bitswap::wire::{Message, WantEntry, WantType};
use shoal_protocol::block::{Codec, cid_of};
use shoal_tests::Sandbox;
use shoal_tests::hostile::{RawPeer, memory, reset_peak};

const BITSWAP: &str = "/ipfs/bitswap/1.2.0";
const MIB: u64 = 1 << 20;

fn target(d: &shoal_tests::DaemonProcess) -> (Multiaddr, PeerId) {
    (d.addr.parse().unwrap(), d.peer_id.parse().unwrap())
}

/// One message of 8192 want-haves for blocks nobody has, each asking for
/// DONT_HAVE: 8192 answers per message for a peer that reads none.
fn want_have_flood(round: u32) -> Vec<u8> {
    let wantlist = (0..8192u32)
        .map(|i| WantEntry {
            cid: cid_of(Codec::Raw, &[round.to_be_bytes(), i.to_be_bytes()].concat()),
            priority: 1,
            cancel: false,
            want_type: WantType::Have,
            send_dont_have: true,
        })
        .collect();
    Message {
        wantlist,
        ..Message::default()
    }
    .encode_framed()
}

#[test]
fn a_peer_that_floods_want_haves_and_never_reads_is_bounded_and_dropped() {
    let sb = Sandbox::with_repo();
    let daemon = sb.start_daemon(None);
    let pid = daemon.pid().unwrap();
    let (addr, node) = target(&daemon);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut attacker = RawPeer::connect(&addr, &[BITSWAP, "/ipfs/bitswap/1.1.0"]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (before, _) = memory(pid);
        reset_peak(pid);
        let started = Instant::now();
        let mut stream = attacker.open(node, BITSWAP).await;
        let mut sent = 0;
        for round in 0..1000 {
            let frame = want_have_flood(round);
            match tokio::time::timeout(Duration::from_secs(30), stream.write_all(&frame)).await {
                Ok(Ok(())) => sent += 1,
                _ => break,
            }
        }
        while attacker.connected() && started.elapsed() < Duration::from_secs(40) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let dropped_after = started.elapsed();
        let (_, peak) = memory(pid);
        let grew = peak.saturating_sub(before);
        println!(
            "{sent} floods of 8192 want-haves ({} MB) sent; the peer was dropped after {:.1} s; \
             resident memory {} MiB before, peak {} MiB (+{} MiB)",
            sent * want_have_flood(0).len() / 1_000_000,
            dropped_after.as_secs_f64(),
            before / MIB,
            peak / MIB,
            grew / MIB
        );
        assert!(
            !attacker.connected(),
            "the peer that reads nothing is dropped"
        );
        assert!(
            dropped_after < Duration::from_secs(30),
            "dropped within 30 s, not {dropped_after:?}"
        );
        assert!(grew < 64 * MIB, "the flood added {} MiB", grew / MIB);
    });
    let mut daemon = daemon;
    assert!(
        daemon.stop().is_some_and(|s| s.success()),
        "the daemon lived through it"
    );
}

#[test]
fn a_frame_of_empty_blocks_costs_no_more_than_its_bytes() {
    let sb = Sandbox::with_repo();
    let daemon = sb.start_daemon(None);
    let pid = daemon.pid().unwrap();
    let (addr, node) = target(&daemon);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut attacker = RawPeer::connect(&addr, &[]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (before, _) = memory(pid);
        reset_peak(pid);
        // 2,097,152 blocks of Bitswap 1.0.0 (field 2), each empty: the
        // largest frame a peer may send, and the most blocks it can hold.
        let body_len = 4usize << 20;
        let mut frame = Vec::with_capacity(body_len + 4);
        let mut len = body_len as u64;
        while len >= 0x80 {
            frame.push((len as u8) | 0x80);
            len >>= 7;
        }
        frame.push(len as u8);
        for _ in 0..body_len / 2 {
            frame.extend_from_slice(&[0x12, 0x00]);
        }
        let mut stream = attacker.open(node, BITSWAP).await;
        let _ = stream.write_all(&frame).await;
        let _ = stream.flush().await;
        let started = Instant::now();
        while attacker.connected() && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, peak) = memory(pid);
        let grew = peak.saturating_sub(before);
        println!(
            "a 4 MiB frame of 2,097,152 empty blocks: the sender was {} after {:.1} s; \
             resident memory {} MiB before, peak {} MiB (+{:.1} MB)",
            if attacker.connected() {
                "still connected"
            } else {
                "dropped"
            },
            started.elapsed().as_secs_f64(),
            before / MIB,
            peak / MIB,
            grew as f64 / 1e6
        );
        assert!(
            !attacker.connected(),
            "the sender of a malformed frame is dropped"
        );
        assert!(
            grew < 10_000_000,
            "the frame raised peak memory by {grew} bytes"
        );
    });
}

/// A Kademlia ADD_PROVIDER message (libp2p's `dht.proto`: type 2, the key,
/// one provider peer with one address), length-prefixed.
fn add_provider(key: &[u8], provider: &PeerId) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, field << 3 | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    let addr: Multiaddr = "/ip4/127.0.0.1/tcp/9".parse().unwrap();
    let mut peer = Vec::new();
    bytes(&mut peer, 1, &provider.to_bytes());
    bytes(&mut peer, 2, &addr.to_vec());
    let mut msg = Vec::new();
    varint(&mut msg, 1 << 3);
    varint(&mut msg, 2);
    bytes(&mut msg, 2, key);
    bytes(&mut msg, 9, &peer);
    let mut framed = Vec::new();
    varint(&mut framed, msg.len() as u64);
    framed.extend(msg);
    framed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_remote_provider_records_leave_room_for_our_own() {
    use shoal_node::NodeConfig;
    use shoal_protocol::channel::{ChannelKey, ChannelRecord, LiveRendition};
    let t = shoal_tests::live::start_with(None, NodeConfig::default()).await;
    let node = t.node.peer_id();
    let mut attacker = RawPeer::connect(&t.addr, &[]).await;
    let kad = "/shoal/kad/1.0.0";
    let mut stream = attacker.open(node, kad).await;
    let mut sent = 0u32;
    for i in 0..10_000u32 {
        let frame = add_provider(&i.to_be_bytes(), &attacker.peer);
        if stream.write_all(&frame).await.is_err() {
            // The node reads a few messages per stream: open another.
            stream = attacker.open(node, kad).await;
            stream.write_all(&frame).await.unwrap();
        }
        sent += 1;
    }
    let _ = stream.flush().await;
    // The last ones are in flight: wait until the store has heard them all.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stat = t.node.dht_stat().await.unwrap();
    while stat.remote_providers as u64 + stat.refused < u64::from(sent) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stat = t.node.dht_stat().await.unwrap();
    }
    println!("{sent} ADD_PROVIDERs from one peer: {stat:?}");
    assert_eq!(
        stat.remote_providers,
        shoal_node::dht_store::PROVIDERS_PER_PEER
    );
    assert!(stat.refused > 0);

    // `add` announces its root.
    let root = shoal_protocol::block::cid_of(shoal_protocol::block::Codec::Raw, b"mine");
    t.node.store().put(&root, b"mine").unwrap();
    t.node.provide(root).await.expect("add still announces");
    // A watch announces the channel's key and one of its buckets.
    let key = ChannelKey::from_seed(&[7; 32]);
    let before = t.node.dht_stat().await.unwrap().own_keys;
    t.node.watch(key.id()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.node.dht_stat().await.unwrap().own_keys < before + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        t.node.dht_stat().await.unwrap().own_keys,
        before + 2,
        "a watch still announces"
    );
    // A broadcast publishes its channel record.
    let record = key.sign_record(&ChannelRecord {
        name: "mine".into(),
        sequence: 1,
        expires_ms: u64::MAX,
        target_duration_us: 2_000_000,
        renditions: vec![LiveRendition {
            playlist: "index.m3u8".into(),
            segment_extension: "ts".into(),
            ..LiveRendition::default()
        }],
        ..ChannelRecord::default()
    });
    t.node
        .put_channel_record(key.id(), record)
        .await
        .expect("a broadcast still publishes its record");
    assert_eq!(t.node.dht_stat().await.unwrap().own_records, 1);
}

/// Peers connected to `node` a moment after twenty dials from 127.0.0.1.
async fn after_twenty_dials(t: &shoal_tests::live::TestNode) -> (Vec<RawPeer>, usize) {
    let crowd: Vec<RawPeer> = (0..20).map(|_| RawPeer::dial(&t.addr, &[]).0).collect();
    // Bounded: until the count has held still for a second, at most 15 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = usize::MAX;
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        let n = t.node.peers().await.unwrap().len();
        if n != last {
            last = n;
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (crowd, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_quota_of_connections() {
    use shoal_node::NodeConfig;
    let t = shoal_tests::live::start_node(NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        mdns: false,
        max_connections_per_ip: Some(8),
        ..NodeConfig::default()
    })
    .await;
    let (_crowd, held) = after_twenty_dials(&t).await;
    println!("twenty fresh peer ids from one address: {held} connected");
    assert_eq!(held, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_full_of_inbound_peers_still_dials_out() {
    use shoal_node::NodeConfig;
    let t = shoal_tests::live::start_node(NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        mdns: false,
        max_connections: 16,
        max_connections_per_ip: None,
        ..NodeConfig::default()
    })
    .await;
    let (_crowd, held) = after_twenty_dials(&t).await;
    println!("twenty inbound peers against 16 slots: {held} connected");
    assert_eq!(
        held, 14,
        "two of sixteen slots stay for the node's own dials"
    );
    let other = shoal_tests::live::start(None, Default::default()).await;
    let peer = t
        .node
        .dial(other.addr.clone())
        .await
        .expect("an outgoing dial still works");
    assert_eq!(peer, other.node.peer_id());
}
