//! Nodes in one process on 127.0.0.1 find each other through the DHT and
//! swap verified blocks over Bitswap.

use std::time::Duration;

use shoal_node::libp2p::{Multiaddr, PeerId};
use shoal_node::{Node, NodeConfig};
use shoal_protocol::block::Cid;
use shoal_storage::{ImportOptions, import_file};
use shoal_tests::Sandbox;
use shoal_tests::live::{TestNode, start_node};

/// The longest any test here waits for a fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

async fn start(transport: &str, bootstrap: Option<&Multiaddr>) -> TestNode {
    let listen: Multiaddr = match transport {
        "quic" => "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        _ => "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
    };
    start_node(NodeConfig {
        listen: vec![listen],
        bootstrap: bootstrap.into_iter().cloned().collect(),
        mdns: false,
        ..NodeConfig::default()
    })
    .await
}

/// Imports a file of `len` random bytes into `node`'s store; returns the
/// root and the bytes.
fn import(sb: &Sandbox, node: &Node, len: u64, seed: u64) -> (Cid, Vec<u8>) {
    let (path, _) = sb.write_random_file(&format!("in-{seed}.bin"), len, seed);
    let options = ImportOptions {
        segment_size: 1 << 20,
        ..ImportOptions::default()
    };
    let imported = import_file(node.store(), &path, &options, &mut |_| {}).unwrap();
    (imported.root, std::fs::read(path).unwrap())
}

fn read_back(node: &Node, root: &Cid) -> Vec<u8> {
    let mut out = Vec::new();
    shoal_storage::write_stream(node.store(), root, &mut out, &mut |_| {}).unwrap();
    out
}

async fn wait_for_peers(node: &Node, n: usize) {
    for _ in 0..200 {
        if node.peers().await.unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never had {n} peers", node.peer_id());
}

async fn five_nodes_fetch(transport: &str) {
    let sb = Sandbox::new();
    let b = start(transport, None).await;
    let a = start(transport, Some(&b.addr)).await;
    let c = start(transport, Some(&b.addr)).await;
    let d = start(transport, Some(&b.addr)).await;
    wait_for_peers(&b.node, 3).await;
    let (root, bytes) = import(&sb, &a.node, 6_000_000, 1);
    a.node.provide(root).await.unwrap();

    // E knows only B.
    let e = start(transport, Some(&b.addr)).await;
    wait_for_peers(&e.node, 1).await;
    let report = tokio::time::timeout(FETCH_TIMEOUT, e.node.fetch(root))
        .await
        .expect("fetch finished in time")
        .unwrap();
    assert_eq!(read_back(&e.node, &root), bytes);
    assert!(report.bytes_fetched > 0);
    let from: Vec<PeerId> = report.from_peers.iter().map(|(p, _)| *p).collect();
    assert!(from.contains(&a.node.peer_id()), "{report:?}");

    // E now serves it: D fetches and some bytes may come from E.
    let report = tokio::time::timeout(FETCH_TIMEOUT, d.node.fetch(root))
        .await
        .expect("fetch finished in time")
        .unwrap();
    assert_eq!(read_back(&d.node, &root), bytes);
    assert!(report.bytes_fetched > 0);
    for n in [&a, &b, &c, &d, &e] {
        n.node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_over_tcp() {
    five_nodes_fetch("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_over_quic() {
    five_nodes_fetch("quic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_want_sent_before_the_block_exists_is_served_when_it_is_added() {
    let sb = Sandbox::new();
    let a = start("tcp", None).await;
    let e = start("tcp", Some(&a.addr)).await;
    wait_for_peers(&e.node, 1).await;
    // Import into a scratch store first, only to learn the root.
    let scratch = start("tcp", None).await;
    let (root, bytes) = import(&sb, &scratch.node, 3_000_000, 7);
    scratch.node.stop().await;

    let fetch = tokio::spawn({
        let e = e.node.clone();
        async move { e.fetch(root).await }
    });
    // E's wants are out; A has nothing yet and answers DONT_HAVE.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!fetch.is_finished());
    // A imports the content: every block enters A's store, and E's open
    // wants are served without E asking again.
    let (root_a, _) = import(&sb, &a.node, 3_000_000, 7);
    assert_eq!(root_a, root);
    let report = tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(read_back(&e.node, &root), bytes);
    assert_eq!(report.from_peers[0].0, a.node.peer_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_five_providers_killed_mid_transfer() {
    let sb = Sandbox::new();
    let b = start("tcp", None).await;
    let a = start("tcp", Some(&b.addr)).await;
    let c = start("tcp", Some(&b.addr)).await;
    let d = start("tcp", Some(&b.addr)).await;
    wait_for_peers(&b.node, 3).await;
    let len = 48_000_000;
    let (root, bytes) = import(&sb, &a.node, len, 3);
    assert_eq!(import(&sb, &c.node, len, 3).0, root);
    assert_eq!(import(&sb, &d.node, len, 3).0, root);
    // D, the survivor, lacks m data shards of every segment: E can only
    // finish with D's parity shards.
    let store = d.node.store();
    store.unpin(&root).unwrap();
    let stream = shoal_storage::assemble::load_stream(store, &root).unwrap();
    let mut dropped = 0;
    for seg in &stream.renditions[0].segments {
        let m = shoal_protocol::manifest::SegmentManifest::from_block(
            &store.require(&seg.cid).unwrap(),
        )
        .unwrap();
        for shard in &m.shards[..usize::from(m.m)] {
            dropped += usize::from(store.delete(shard).unwrap());
        }
    }
    assert!(dropped > 0);
    for n in [&a, &c, &d] {
        n.node.provide(root).await.unwrap();
    }

    let e = start("tcp", Some(&b.addr)).await;
    wait_for_peers(&e.node, 1).await;
    let fetch = tokio::spawn({
        let e = e.node.clone();
        async move { e.fetch(root).await }
    });
    // Kill A and C once E holds a tenth of the stream (bounded wait).
    let total_blocks = stream.renditions[0].segments.len() as u64 * 11;
    let mut killed = false;
    for _ in 0..20_000 {
        if e.node.store().stat().unwrap().blocks >= total_blocks / 10 {
            assert!(!fetch.is_finished(), "the fetch ended before the kill");
            a.node.stop().await;
            c.node.stop().await;
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    assert!(killed, "E never got a tenth of the stream");
    let report = tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(read_back(&e.node, &root), bytes);
    let from_d = report
        .from_peers
        .iter()
        .find(|(p, _)| *p == d.node.peer_id())
        .map(|(_, b)| *b);
    assert!(from_d.unwrap_or(0) > 0, "{report:?}");
}

/// A peer that speaks Bitswap dishonestly.
mod evil {
    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
    use shoal_node::libp2p::{self, Multiaddr, PeerId, StreamProtocol};
    use shoal_protocol::bitswap::wire::FrameDecoder;
    use shoal_protocol::bitswap::{Message, Presence, WantType, WireBlock};

    #[derive(Clone, Copy)]
    pub enum Mode {
        /// Claims every block and sends corrupted bytes for it.
        CorruptBlocks,
        /// Declares a 1 GiB message.
        Oversized,
        /// Sends a frame that is not a protobuf message.
        Garbage,
    }

    pub struct Evil {
        pub peer: PeerId,
        pub addr: Multiaddr,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Evil {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    const PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.2.0");

    pub async fn start(mode: Mode) -> Evil {
        let mut swarm = shoal_tests::hostile::stream_swarm();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let addr = loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                swarm.select_next_some().await
            {
                break address;
            }
        };
        let peer = *swarm.local_peer_id();
        let mut control = swarm.behaviour().new_control();
        let mut incoming = control.accept(PROTOCOL).unwrap();
        let task = tokio::spawn(async move {
            let drive = async move {
                loop {
                    swarm.select_next_some().await;
                }
            };
            let serve = async move {
                while let Some((from, mut stream)) = incoming.next().await {
                    let mut control = control.clone();
                    tokio::spawn(async move {
                        let mut out = match control.open_stream(from, PROTOCOL).await {
                            Ok(s) => s,
                            Err(_) => return,
                        };
                        match mode {
                            Mode::Oversized => {
                                // A length prefix of 1 GiB, then a trickle.
                                let _ = out.write_all(&[0x80, 0x80, 0x80, 0x80, 0x04]).await;
                                let _ = out.write_all(&[0u8; 1024]).await;
                                let _ = out.flush().await;
                                return;
                            }
                            Mode::Garbage => {
                                let _ = out.write_all(&[0x05, 0x0b, 0xff, 0xff, 0xff, 0xff]).await;
                                let _ = out.flush().await;
                                return;
                            }
                            Mode::CorruptBlocks => {}
                        }
                        let mut frames = FrameDecoder::default();
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            let n = match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            frames.extend(&buf[..n]);
                            while let Ok(Some(frame)) = frames.next_frame() {
                                let Ok(msg) = Message::decode(&frame) else {
                                    return;
                                };
                                let mut reply = Message::default();
                                for want in msg.wantlist.iter().filter(|w| !w.cancel) {
                                    match want.want_type {
                                        WantType::Have => {
                                            reply.presences.push((want.cid, Presence::Have))
                                        }
                                        WantType::Block => reply.blocks.push(WireBlock {
                                            cid: want.cid,
                                            data: b"corrupted bytes, not the block".to_vec(),
                                        }),
                                    }
                                }
                                if !reply.is_empty()
                                    && out.write_all(&reply.encode_framed()).await.is_err()
                                {
                                    return;
                                }
                                let _ = out.flush().await;
                            }
                        }
                    });
                }
            };
            tokio::join!(drive, serve);
        });
        Evil {
            peer,
            addr: addr.with(libp2p::multiaddr::Protocol::P2p(peer)),
            task,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_corrupted_blocks_is_banned_and_honest_peers_finish_the_fetch() {
    let sb = Sandbox::new();
    let a = start("tcp", None).await;
    let (root, bytes) = import(&sb, &a.node, 4_000_000, 11);
    let liar = evil::start(evil::Mode::CorruptBlocks).await;
    let e = start("tcp", None).await;
    // E knows the liar first, and A.
    e.node.dial(liar.addr.clone()).await.unwrap();
    e.node.dial(a.addr.clone()).await.unwrap();
    let report = tokio::time::timeout(FETCH_TIMEOUT, e.node.fetch(root))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read_back(&e.node, &root), bytes);
    assert!(e.node.banned().await.unwrap().contains(&liar.peer));
    assert!(!e.node.peers().await.unwrap().contains(&liar.peer));
    assert!(report.from_peers.iter().all(|(p, _)| *p != liar.peer));
    // Nothing the liar sent is in E's store: every stored block verifies.
    assert_eq!(e.node.store().verify_all().unwrap(), Vec::<Cid>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_messages_get_the_sender_banned() {
    for mode in [evil::Mode::Oversized, evil::Mode::Garbage] {
        let bad = evil::start(mode).await;
        let e = start("tcp", None).await;
        e.node.dial(bad.addr.clone()).await.unwrap();
        // The evil peer speaks when E opens a stream to it: ask for
        // something so E does.
        let unknown =
            shoal_protocol::block::cid_of(shoal_protocol::block::Codec::DagCbor, b"nothing");
        let fetch = tokio::spawn({
            let e = e.node.clone();
            async move { e.fetch(unknown).await }
        });
        let mut banned = false;
        for _ in 0..200 {
            if e.node.banned().await.unwrap().contains(&bad.peer) {
                banned = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(banned, "the peer was not banned");
        fetch.abort();
        // E still works: a fresh honest peer serves it.
        let sb = Sandbox::new();
        let a = start("tcp", None).await;
        let (root, bytes) = import(&sb, &a.node, 500_000, 2);
        e.node.dial(a.addr.clone()).await.unwrap();
        tokio::time::timeout(FETCH_TIMEOUT, e.node.fetch(root))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read_back(&e.node, &root), bytes);
    }
}

/// An RSA key as IPFS nodes made them for years (PKCS#8, from openssl:
/// libp2p signs with RSA but does not generate such keys).
fn rsa_keypair(sb: &Sandbox) -> shoal_node::libp2p::identity::Keypair {
    shoal_tests::require_tool("openssl");
    let (pem, path) = (sb.path("rsa.pem"), sb.path("rsa.der"));
    for args in [
        vec!["genrsa", "-out", pem.to_str().unwrap(), "2048"],
        vec![
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            pem.to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            path.to_str().unwrap(),
        ],
    ] {
        let out = std::process::Command::new("openssl")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut der = std::fs::read(&path).unwrap();
    shoal_node::libp2p::identity::Keypair::rsa_from_pkcs8(&mut der).unwrap()
}

/// Long-lived IPFS nodes still have RSA identities, others secp256k1 or
/// ECDSA ones: each connects to a shoal node (ed25519) and fetches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_rsa_secp256k1_and_ecdsa_identities_connect_and_fetch() {
    use shoal_node::libp2p::identity::Keypair;
    let sb = Sandbox::new();
    let server = start("tcp", None).await;
    let (root, bytes) = import(&sb, &server.node, 300_000, 21);
    let keys = [
        ("RSA", rsa_keypair(&sb)),
        ("secp256k1", Keypair::generate_secp256k1()),
        ("ECDSA", Keypair::generate_ecdsa()),
    ];
    for (kind, key) in keys {
        let dir = tempfile::tempdir().unwrap();
        let store = shoal_storage::Blockstore::create(
            &dir.path().join("blocks.redb"),
            &shoal_storage::StoreOptions::default(),
        )
        .unwrap();
        let config = NodeConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap: vec![server.addr.clone()],
            mdns: false,
            ..NodeConfig::default()
        };
        let node = Node::start(config, key, std::sync::Arc::new(store))
            .await
            .unwrap();
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, node.fetch(root)).await;
        assert!(
            fetched.is_ok(),
            "a peer with an {kind} identity fetched in time"
        );
        fetched.unwrap().unwrap();
        assert!(read_back(&node, &root) == bytes, "{kind}");
        println!(
            "a peer with a {kind} identity ({}) fetched {} bytes",
            node.peer_id(),
            bytes.len()
        );
        node.stop().await;
    }
}
