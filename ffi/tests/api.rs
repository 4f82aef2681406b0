//! The SDK as an app uses it: nodes started through `ShoalNode::start` on
//! loopback, a synthetic live encoder writing a folder, the app's player
//! fetching through the gateway URL with plain HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "common/http.rs"]
mod http;
use http::get;

use shoal_ffi::{
    DeliveryState, MobileConfig, MobileLimits, NetworkState, NodeEvent, NodeListener, ShoalError,
    ShoalNode, UploadPolicy, default_config,
};

/// Synthetic segments: one a second, 64 KiB each.
const SEGMENT: Duration = Duration::from_secs(1);
const SEGMENT_BYTES: usize = 64 << 10;

fn config(dir: &Path) -> MobileConfig {
    let mut c = default_config(dir.to_string_lossy().into_owned());
    c.mdns = false;
    c.upload_policy = UploadPolicy::Always;
    c
}

const UNMETERED: NetworkState = NetworkState {
    online: true,
    metered: false,
};

/// A listener that keeps every event, failing on the first.
#[derive(Default)]
struct Recorder(Mutex<Vec<NodeEvent>>);

impl NodeListener for Recorder {
    /// Fails on the first event: the node must go on delivering.
    fn on_event(&self, event: NodeEvent) -> Result<(), ShoalError> {
        let mut events = self.0.lock().unwrap();
        events.push(event);
        if events.len() == 1 {
            return Err(ShoalError::Internal {
                msg: "an app's listener that fails".into(),
            });
        }
        Ok(())
    }
}

impl Recorder {
    fn any(&self, f: impl Fn(&NodeEvent) -> bool) -> bool {
        self.0.lock().unwrap().iter().any(f)
    }
}

/// Polls `f` until it holds, for at most `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the synthetic encoder into `dir` on a thread of its own, for
/// `count` segments.
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

fn channel_stats(node: &ShoalNode) -> Option<shoal_ffi::ChannelStats> {
    node.stats().unwrap().channels.into_iter().next()
}

#[test]
fn a_viewer_plays_a_broadcast_through_its_gateway_and_hears_events() {
    let tmp = tempfile::tempdir().unwrap();
    let hls = tmp.path().join("hls");
    let source = ShoalNode::start(config(&tmp.path().join("b")), None).unwrap();
    let heard = Arc::new(Recorder::default());
    let viewer = ShoalNode::start(config(&tmp.path().join("v")), Some(heard.clone())).unwrap();
    let encoding = encoder(hls.clone(), 40);
    let channel = source.create_channel("cam".into()).unwrap();
    // Asking again finds the same channel.
    assert_eq!(source.create_channel("cam".into()).unwrap(), channel);
    assert_eq!(
        source
            .broadcast("cam".into(), hls.to_string_lossy().into())
            .unwrap(),
        channel
    );
    let addr = source.listen_addrs().unwrap().remove(0);
    assert_eq!(viewer.connect(addr).unwrap(), source.peer_id());
    let url = viewer.watch(channel.clone()).unwrap();
    assert!(url.starts_with(&viewer.gateway_url()));

    // The player's view: a playlist listing segments, each the encoder's
    // bytes.
    let mut checked = std::collections::BTreeSet::new();
    wait_for(
        "three segments through the gateway",
        Duration::from_secs(90),
        || {
            let (status, body) = get(&url, &[]);
            if status != 200 {
                return false;
            }
            let text = String::from_utf8(body).unwrap();
            for uri in text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
            {
                let (status, bytes) =
                    get(&format!("{}/{uri}", url.rsplit_once('/').unwrap().0), &[]);
                assert_eq!(status, 200, "{uri}");
                let sequence: u64 = uri
                    .trim_start_matches("0/")
                    .trim_end_matches(".ts")
                    .parse()
                    .unwrap();
                if let Ok(original) = std::fs::read(hls.join(format!("seg{sequence:05}.ts"))) {
                    assert_eq!(
                        bytes, original,
                        "segment {sequence} differs from the encoder's"
                    );
                    checked.insert(sequence);
                }
            }
            text.contains("#EXT-X-TARGETDURATION:1") && checked.len() >= 3
        },
    );
    let stats = viewer.stats().unwrap();
    assert!(stats.peers >= 1);
    assert!(stats.bytes_received > 0);
    let ch = &stats.channels[0];
    assert_eq!(ch.channel, channel);
    assert_eq!(ch.url, url);
    assert!(ch.segments >= 3);
    assert_eq!(ch.state, DeliveryState::P2p);
    assert_eq!(
        source.stats().unwrap().broadcasting,
        vec!["cam".to_string()]
    );

    // The listener heard the start, the peer, the channel's state and
    // the statistics.
    wait_for("the listener's events", Duration::from_secs(10), || {
        heard.any(|e| matches!(e, NodeEvent::Started { peer_id, .. } if *peer_id == viewer.peer_id()))
            && heard.any(|e| matches!(e, NodeEvent::PeersChanged { peers } if *peers >= 1))
            && heard.any(|e| {
                matches!(e, NodeEvent::ChannelState { state: DeliveryState::P2p, channel: c } if *c == channel)
            })
            && heard.any(|e| matches!(e, NodeEvent::Stats { stats } if !stats.channels.is_empty()))
    });

    source.stop_broadcast("cam".into()).unwrap();
    assert!(source.stats().unwrap().broadcasting.is_empty());
    assert!(matches!(
        source.stop_broadcast("cam".into()),
        Err(ShoalError::NotFound { .. })
    ));
    viewer.unwatch(channel).unwrap();
    assert!(viewer.stats().unwrap().channels.is_empty());
    viewer.stop();
    source.stop();
    drop(encoding);
}

#[test]
fn a_metered_network_stops_upload_and_pause_closes_every_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let hls = tmp.path().join("hls");
    // The broadcaster takes one peer: the second viewer can only get the
    // stream from the first, which therefore uploads.
    let mut c = config(&tmp.path().join("b"));
    c.max_peers = 1;
    let source = ShoalNode::start(c, None).unwrap();
    let mut c = config(&tmp.path().join("v1"));
    c.upload_policy = UploadPolicy::UnmeteredOnly;
    let relay = ShoalNode::start(c, None).unwrap();
    let last = ShoalNode::start(config(&tmp.path().join("v2")), None).unwrap();
    relay.set_network(UNMETERED).unwrap();
    let _encoding = encoder(hls.clone(), 90);
    let channel = source.create_channel("cam".into()).unwrap();
    source
        .broadcast("cam".into(), hls.to_string_lossy().into())
        .unwrap();
    relay
        .connect(source.listen_addrs().unwrap().remove(0))
        .unwrap();
    relay.watch(channel.clone()).unwrap();
    last.connect(relay.listen_addrs().unwrap().remove(0))
        .unwrap();
    last.watch(channel.clone()).unwrap();
    wait_for(
        "the first viewer uploads to the second",
        Duration::from_secs(90),
        || {
            channel_stats(&last).is_some_and(|c| c.segments >= 2)
                && relay.stats().unwrap().bytes_sent > 0
        },
    );
    let stats = relay.stats().unwrap();
    assert!(stats.uploading);
    assert!(stats.channels[0].bytes_uploaded > 0, "{stats:?}");

    // On mobile data an UnmeteredOnly node serves nothing.
    relay
        .set_network(NetworkState {
            online: true,
            metered: true,
        })
        .unwrap();
    assert!(!relay.stats().unwrap().uploading);
    // Messages already queued go out; nothing after them.
    std::thread::sleep(Duration::from_secs(1));
    let sent = relay.stats().unwrap().bytes_sent;
    let watched = channel_stats(&relay).unwrap().segments;
    wait_for(
        "the first viewer keeps watching",
        Duration::from_secs(30),
        || channel_stats(&relay).unwrap().segments >= watched + 4,
    );
    assert_eq!(
        relay.stats().unwrap().bytes_sent,
        sent,
        "upload went on on a metered network"
    );

    // In the background: no connection at all, and none taken.
    relay.pause().unwrap();
    wait_for("every connection closed", Duration::from_secs(10), || {
        relay.stats().unwrap().peers == 0
    });
    std::thread::sleep(Duration::from_secs(3));
    let paused = relay.stats().unwrap();
    assert!(paused.paused && !paused.uploading);
    assert_eq!(paused.peers, 0, "a paused node took a connection");
    assert_eq!(paused.bytes_sent, sent);

    // Back: it reconnects and the channel goes on.
    relay.set_network(UNMETERED).unwrap();
    relay.resume().unwrap();
    let before = channel_stats(&relay).map_or(0, |c| c.segments);
    wait_for(
        "reconnected and watching again",
        Duration::from_secs(60),
        || {
            let s = relay.stats().unwrap();
            s.peers > 0 && s.channels.first().is_some_and(|c| c.segments > before + 1)
        },
    );
    assert!(relay.stats().unwrap().uploading);
    for n in [&last, &relay, &source] {
        n.stop();
    }
}

#[test]
fn stop_frees_the_port_and_the_folder_for_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let node = ShoalNode::start(config(&dir), None).unwrap();
    let peer = node.peer_id();
    let port: u16 = node.listen_addrs().unwrap()[0]
        .split('/')
        .nth(4)
        .unwrap()
        .parse()
        .unwrap();
    let gateway: String = node.gateway_url();
    let gateway_port = gateway.trim_start_matches("http://127.0.0.1:");
    let gateway_port: u16 = gateway_port[..gateway_port.find('/').unwrap()]
        .parse()
        .unwrap();
    let channel = node.create_channel("cam".into()).unwrap();
    // While it runs, the folder is its own.
    assert!(matches!(
        ShoalNode::start(config(&dir), None),
        Err(ShoalError::RepoLocked { .. })
    ));

    node.stop();
    node.stop();
    std::net::TcpListener::bind(("0.0.0.0", port)).expect("the peer port is free after stop");
    std::net::TcpListener::bind(("127.0.0.1", gateway_port)).expect("the gateway port is free");
    assert!(matches!(node.stats(), Err(ShoalError::Stopped { .. })));
    assert!(matches!(
        node.watch(channel),
        Err(ShoalError::Stopped { .. })
    ));

    let mut again = config(&dir);
    again.listen_port = port;
    let node = ShoalNode::start(again, None).unwrap();
    assert_eq!(node.peer_id(), peer, "the identity is kept in the folder");
    assert!(node.listen_addrs().unwrap()[0].contains(&format!("/tcp/{port}/")));
    node.stop();
}

#[test]
fn bad_settings_and_arguments_get_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let bad = |f: &dyn Fn(&mut MobileConfig)| {
        let mut c = config(&dir);
        f(&mut c);
        match ShoalNode::start(c, None) {
            Err(ShoalError::BadConfig { msg }) => msg,
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("started"),
        }
    };
    assert!(bad(&|c| c.cache_segments = 1).contains("cache_segments"));
    assert!(bad(&|c| c.max_peers = 0).contains("max_peers"));
    assert!(bad(&|c| c.upload_bytes_per_sec = Some(0)).contains("no_upload"));
    assert!(bad(&|c| c.store_quota_bytes = 1000).contains("store_quota_bytes"));
    assert!(bad(&|c| c.data_dir = " ".into()).contains("data_dir"));
    assert!(bad(&|c| c.bootstrap = vec!["tcp://peer".into()]).contains("tcp://peer"));
    // Nothing was created for a refused start.
    assert!(!dir.exists());

    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let mut c = config(&file);
    c.data_dir = file.join("node").to_string_lossy().into();
    assert!(matches!(
        ShoalNode::start(c, None),
        Err(ShoalError::Io { .. })
    ));

    let node = ShoalNode::start(config(&dir), None).unwrap();
    let err = |r: Result<String, ShoalError>| r.unwrap_err();
    assert!(matches!(
        err(node.watch("nonsense".into())),
        ShoalError::BadConfig { .. }
    ));
    assert!(matches!(
        err(node.vod_url("bafy-nonsense".into())),
        ShoalError::BadConfig { .. }
    ));
    assert!(matches!(
        err(node.connect("not an address".into())),
        ShoalError::BadConfig { .. }
    ));
    assert!(matches!(
        err(node.create_channel("../escape".into())),
        ShoalError::BadConfig { .. }
    ));
    assert!(matches!(
        err(node.broadcast("unknown".into(), tmp.path().to_string_lossy().into())),
        ShoalError::NotFound { .. }
    ));
    node.create_channel("cam".into()).unwrap();
    assert!(matches!(
        err(node.broadcast(
            "cam".into(),
            tmp.path().join("missing").to_string_lossy().into()
        )),
        ShoalError::BadConfig { .. }
    ));
    assert!(matches!(
        err(node.add_file(tmp.path().join("missing.mp4").to_string_lossy().into())),
        ShoalError::NotFound { .. }
    ));
    assert!(matches!(
        node.set_limits(MobileLimits {
            upload_bytes_per_sec: None,
            upload_policy: UploadPolicy::Never,
            max_peers: 8,
            cache_segments: 2,
        }),
        Err(ShoalError::BadConfig { .. })
    ));
    let unreachable = "/ip4/127.0.0.1/tcp/1".to_string();
    assert!(matches!(
        err(node.connect(unreachable)),
        ShoalError::Network { .. }
    ));
    node.stop();
}

#[test]
fn the_gateway_answers_its_secret_paths_only() {
    let tmp = tempfile::tempdir().unwrap();
    let node = ShoalNode::start(config(&tmp.path().join("node")), None).unwrap();
    let base = node.gateway_url();
    let (origin, secret) = base.rsplit_once('/').unwrap();
    assert_eq!(secret.len(), 64, "a 32-byte secret in hex");
    let file = tmp.path().join("movie.bin");
    std::fs::write(&file, vec![7u8; 100_000]).unwrap();
    let root = node.add_file(file.to_string_lossy().into()).unwrap();
    let channel = node.create_channel("cam".into()).unwrap();
    let vod = node.vod_url(root.clone()).unwrap();
    // With the secret: the gateway answers (a file is no HLS stream).
    assert_eq!(get(&vod, &[]).0, 400);
    // Without it, with another, or anything but playlists and segments:
    // nothing.
    let other = "0".repeat(64);
    for path in [
        format!("/vod/{root}/index.m3u8"),
        format!("/{other}/vod/{root}/index.m3u8"),
        format!("/{}/vod/{root}/index.m3u8", &secret[..63]),
        "/web/".to_string(),
        "/metrics".to_string(),
        "/api/v0/id".to_string(),
        format!("/{secret}/web/"),
        format!("/{secret}/metrics"),
        format!("/{secret}/live/{channel}/stats.json"),
    ] {
        let (status, _) = get(&format!("{origin}{path}"), &[]);
        assert_eq!(status, 404, "{path}");
    }
    // A web page of another origin, or a rebound DNS name, is refused.
    assert_eq!(get(&vod, &[("Origin", "https://evil.example")]).0, 403);
    let path = vod.trim_start_matches(origin);
    let host = origin.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    node.stop();
}
