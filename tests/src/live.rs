//! Live-channel helpers shared by the live and player tests: nodes on
//! loopback, a real-time ffmpeg encoder, broadcasting, and checks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shoal_node::broadcast::{BroadcastOptions, Published, broadcast};
use shoal_node::libp2p::Multiaddr;
use shoal_node::{Node, NodeConfig};
use shoal_protocol::channel::{ChannelId, ChannelKey};
use shoal_protocol::live::LiveConfig;
use shoal_storage::ImportOptions;
use tokio::sync::mpsc;

use crate::require_tool;

/// Live tests hold this while they run, one at a time: each runs a
/// real-time encoder and a dozen nodes, and their deadlines are what they
/// check, so two of them must not share this machine's two cores.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A node in a temporary folder, listening on 127.0.0.1.
pub struct TestNode {
    pub node: Node,
    pub addr: Multiaddr,
    _dir: tempfile::TempDir,
}

/// Viewers keep every segment (a long window) so the test can compare all
/// of them with the encoder's files at the end.
pub fn viewer_config() -> LiveConfig {
    LiveConfig {
        window: 64,
        max_pending: 16,
        ..LiveConfig::default()
    }
}

pub async fn start(bootstrap: Option<&Multiaddr>, live: LiveConfig) -> TestNode {
    start_with(
        bootstrap,
        NodeConfig {
            live,
            ..NodeConfig::default()
        },
    )
    .await
}

pub async fn start_with(bootstrap: Option<&Multiaddr>, config: NodeConfig) -> TestNode {
    start_node(NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: bootstrap.into_iter().cloned().collect(),
        mdns: false,
        // Every node of a test runs on 127.0.0.1, and so do its origins.
        max_connections_per_ip: None,
        private_origins: true,
        ..config
    })
    .await
}

/// A node with `config` as given, in a temporary folder.
pub async fn start_node(config: NodeConfig) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(dir.path(), config).await.unwrap();
    let addr = node.dialable_addr().await.unwrap();
    TestNode {
        node,
        addr,
        _dir: dir,
    }
}

/// A folder for an encoder's output, inside a temporary folder.
pub fn hls_folder() -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let hls = work.path().join("hls");
    std::fs::create_dir_all(&hls).unwrap();
    (work, hls)
}

/// `count` viewers that join through `bootstrap` and watch `channel`.
pub async fn viewers(count: usize, bootstrap: &Multiaddr, channel: ChannelId) -> Vec<TestNode> {
    viewers_with(count, bootstrap, channel, viewer_config()).await
}

/// [`viewers`] with a live configuration of the test's own.
pub async fn viewers_with(
    count: usize,
    bootstrap: &Multiaddr,
    channel: ChannelId,
    live: LiveConfig,
) -> Vec<TestNode> {
    let mut out = Vec::new();
    for _ in 0..count {
        let v = start(Some(bootstrap), live.clone()).await;
        v.node.watch(channel).await.unwrap();
        out.push(v);
    }
    out
}

/// ffmpeg encoding a test picture in real time into `dir` as 1 s HLS
/// segments, for `seconds`. Killed when dropped.
pub struct Encoder(Child);

impl Encoder {
    /// MPEG-TS segments `seg000.ts`, ...
    pub fn start(dir: &Path, seconds: u32) -> Encoder {
        Encoder::spawn(dir, seconds, &["-hls_segment_filename", "seg%03d.ts"])
    }

    /// Fragmented MP4 (CMAF) segments `seg000.m4s`, ... after the
    /// initialisation section `init.mp4` (`EXT-X-MAP`).
    pub fn start_fmp4(dir: &Path, seconds: u32) -> Encoder {
        Encoder::spawn(
            dir,
            seconds,
            &[
                "-hls_segment_type",
                "fmp4",
                "-hls_fmp4_init_filename",
                "init.mp4",
                "-hls_segment_filename",
                "seg%03d.m4s",
            ],
        )
    }

    fn spawn(dir: &Path, seconds: u32, naming: &[&str]) -> Encoder {
        require_tool("ffmpeg");
        let child = Command::new("ffmpeg")
            .current_dir(dir)
            .args(["-v", "error", "-re", "-f", "lavfi"])
            .args(["-i", "testsrc=size=320x180:rate=25"])
            .args(["-t", &seconds.to_string()])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-g", "25", "-keyint_min", "25", "-sc_threshold", "0"])
            .args(["-f", "hls", "-hls_time", "1", "-hls_list_size", "0"])
            .args(naming)
            .arg("index.m3u8")
            .stdin(Stdio::null())
            .spawn()
            .expect("ffmpeg starts");
        Encoder(child)
    }
}

impl Encoder {
    /// Waits (off the runtime's workers) until the encoder has written
    /// the whole stream; returns how many segments its playlist lists.
    pub async fn finish(mut self, dir: &Path) -> usize {
        let mut child = std::mem::replace(
            &mut self.0,
            Command::new("true").spawn().expect("true runs"),
        );
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "ffmpeg failed: {status}");
        let text = std::fs::read_to_string(dir.join("index.m3u8")).unwrap();
        text.lines().filter(|l| l.starts_with("#EXTINF")).count()
    }
}

/// What a live encoder pipes as fragmented MP4 (`-movflags
/// +frag_keyframe+empty_moov+default_base_moof`): `seconds` of a test
/// picture (and a tone if `audio`), a keyframe every second and a fragment
/// every 200 ms, made at once rather than in real time.
pub fn fragmented_mp4(seconds: u32, audio: bool) -> Vec<u8> {
    let tone = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"];
    let extra: Vec<String> = if audio {
        tone.iter()
            .chain(&["-c:a", "aac"])
            .map(|a| a.to_string())
            .collect()
    } else {
        Vec::new()
    };
    let out = fmp4_command(seconds, false, &extra)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// ffmpeg writing `seconds` of its test picture to stdout as fragmented
/// MP4, as a live encoder would (x264 `zerolatency`, a keyframe every
/// second, a fragment every 200 ms); `realtime` paces it (`-re`), and
/// `extra` comes after the picture's input (another input, a filter).
fn fmp4_command(seconds: u32, realtime: bool, extra: &[String]) -> Command {
    require_tool("ffmpeg");
    let mut command = Command::new("ffmpeg");
    command.args(["-v", "error"]);
    if realtime {
        command.arg("-re");
    }
    command
        .args(["-f", "lavfi", "-i", "testsrc=size=320x180:rate=25"])
        .args(extra)
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args(["-pix_fmt", "yuv420p", "-g", "25", "-keyint_min", "25"])
        .args(["-sc_threshold", "0", "-f", "mp4"])
        .args(["-movflags", "+frag_keyframe+empty_moov+default_base_moof"])
        .args(["-frag_duration", "200000", "pipe:1"])
        .stdin(Stdio::null());
    command
}

impl Encoder {
    /// A live encoder piping fragmented MP4 at real-time pace
    /// ([`fmp4_command`]); its stdout is the stream. With `clock`, the
    /// picture shows the wall clock at which each frame was made, in
    /// milliseconds of the UTC day (the start read here plus the frame's
    /// time), to check a player's latency against by eye.
    pub fn piped_fmp4(seconds: u32, clock: bool) -> (Encoder, tokio::net::unix::pipe::Receiver) {
        let mut extra = Vec::new();
        if clock {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let of_day = now.as_millis() % 86_400_000;
            extra.push("-vf".to_owned());
            extra.push(format!(
                "drawtext=text='%{{eif\\:{of_day}+t*1000\\:d}}':fontsize=28:\
                 fontcolor=white:box=1:boxcolor=black:x=10:y=10"
            ));
        }
        let mut child = fmp4_command(seconds, true, &extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("ffmpeg starts");
        let stdout = child.stdout.take().expect("ffmpeg's stdout");
        let stdout = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout.into())
            .expect("a pipe the runtime reads");
        (Encoder(child), stdout)
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon (node, API, gateway) on a fresh repo in this process, joined
/// through `bootstrap`.
pub struct ViewerDaemon {
    /// Its API and gateway, `http://127.0.0.1:<port>`.
    pub base: String,
    pub node: shoal_node::Node,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), shoal_node::daemon::DaemonError>>,
}

impl ViewerDaemon {
    pub async fn start(repo: &std::path::Path, bootstrap: Option<&Multiaddr>) -> Self {
        shoal_node::repo::Repo::init(repo).unwrap();
        let daemon = shoal_node::daemon::Daemon::start(
            repo,
            shoal_node::daemon::DaemonOptions {
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
                bootstrap: bootstrap.into_iter().cloned().collect(),
                api: Some("127.0.0.1:0".into()),
                mdns: Some(false),
            },
        )
        .await
        .unwrap();
        let base = format!("http://{}", daemon.api_addr);
        let node = daemon.node.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(daemon.serve_until(async {
            let _ = stopped.await;
        }));
        ViewerDaemon {
            base,
            node,
            stop,
            served,
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.served.await.unwrap().unwrap();
    }
}

pub fn channel_key() -> ChannelKey {
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&shoal_protocol::block::sha256(
        format!("{:?}", std::time::SystemTime::now()).as_bytes(),
    ));
    ChannelKey::from_seed(&seed)
}

/// The creator address test broadcasts name in their channel records.
pub const CREATOR: [u8; 20] = [0xC7; 20];

/// Runs a broadcast of `dir` on `node` until the encoder ends, naming
/// [`CREATOR`] as the channel's creator; returns what was published.
pub fn spawn_broadcast(
    node: &Node,
    key: ChannelKey,
    dir: PathBuf,
    origins: Vec<String>,
) -> tokio::task::JoinHandle<Vec<Published>> {
    let node = node.clone();
    tokio::spawn(async move {
        let (tx, mut rx) = mpsc::channel(64);
        let options = BroadcastOptions {
            dir,
            playlist: None,
            origins,
            import: ImportOptions {
                creator: Some(CREATOR),
                ..ImportOptions::default()
            },
            name: "test".into(),
        };
        let run = tokio::spawn(broadcast(node, key, options, tx));
        let mut published = Vec::new();
        while let Some(p) = rx.recv().await {
            published.push(p);
        }
        run.await.unwrap().expect("broadcast ends cleanly");
        published
    })
}

/// Runs a broadcast of a fragmented MP4 stream on `node` until it ends,
/// in segments of `segment`, as parts if `parts` (low-latency live);
/// returns what was published.
pub fn spawn_fmp4_broadcast<R>(
    node: &Node,
    key: ChannelKey,
    input: R,
    segment: Duration,
    parts: bool,
) -> tokio::task::JoinHandle<Vec<Published>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let node = node.clone();
    tokio::spawn(async move {
        let (tx, mut rx) = mpsc::channel(64);
        let options = shoal_node::broadcast::Fmp4Options {
            source: PathBuf::from("ffmpeg"),
            segment_duration: segment,
            parts,
            origins: Vec::new(),
            import: ImportOptions {
                creator: Some(CREATOR),
                ..ImportOptions::default()
            },
            name: "test".into(),
        };
        let run = tokio::spawn(shoal_node::broadcast::broadcast_fmp4(
            node,
            key,
            options,
            vec![input],
            tx,
        ));
        let mut published = Vec::new();
        while let Some(p) = rx.recv().await {
            published.push(p);
        }
        run.await.unwrap().expect("broadcast ends cleanly");
        published
    })
}

/// Waits until `viewer` holds `count` complete segments (or 20 s pass).
pub async fn wait_for_segments(viewer: &Node, channel: ChannelId, count: usize) {
    for _ in 0..200 {
        let view = viewer.live_view(channel).await.unwrap().unwrap();
        if view.renditions.first().map_or(0, |r| r.window.len()) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every segment the encoder wrote is in the viewer's window, and the
/// viewer's store rebuilds each one byte for byte.
pub async fn assert_has_every_segment(viewer: &Node, channel: ChannelId, dir: &Path, count: usize) {
    let view = viewer.live_view(channel).await.unwrap().unwrap();
    let window = &view.renditions[0].window;
    let seqs: Vec<u64> = window.iter().map(|w| w.sequence).collect();
    assert_eq!(
        seqs,
        (0..count as u64).collect::<Vec<_>>(),
        "viewer {} holds these segments",
        viewer.peer_id()
    );
    assert_segments_intact(viewer, window, dir);
}

/// Each segment of `window` rebuilds from the viewer's store byte for byte
/// as the encoder wrote it.
pub fn assert_segments_intact(
    viewer: &Node,
    window: &[shoal_protocol::live::WindowSegment],
    dir: &Path,
) {
    for w in window {
        let expected = std::fs::read(dir.join(&w.uri)).unwrap();
        let got =
            shoal_storage::assemble::read_segment(viewer.store(), &w.manifest, w.sequence).unwrap();
        assert!(got == expected, "segment {} differs", w.uri);
    }
}

/// A peer that speaks nothing but gossipsub and publishes whatever it is
/// given on a channel's topic: what an attacker's node does, without the
/// checks a shoal node makes before it publishes.
pub struct Forger {
    pub peer: shoal_node::libp2p::PeerId,
    publish: mpsc::Sender<(Vec<u8>, tokio::sync::oneshot::Sender<()>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forger {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Forger {
    /// Connects to `peer` and subscribes to `topic`.
    pub async fn connect(peer: &Multiaddr, topic: String) -> Forger {
        use futures::StreamExt;
        use shoal_node::libp2p::{self, gossipsub, noise, tcp, yamux};
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|key| {
                let config = gossipsub::ConfigBuilder::default()
                    .max_transmit_size(64 << 10)
                    .build()
                    .unwrap();
                gossipsub::Behaviour::<
                    gossipsub::IdentityTransform,
                    gossipsub::AllowAllSubscriptionFilter,
                >::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
                .unwrap()
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let topic = gossipsub::IdentTopic::new(topic);
        swarm.behaviour_mut().subscribe(&topic).unwrap();
        swarm.dial(peer.clone()).unwrap();
        let forger = *swarm.local_peer_id();
        let (publish, mut asked) = mpsc::channel::<(Vec<u8>, tokio::sync::oneshot::Sender<()>)>(4);
        let task = tokio::spawn(async move {
            let mut waiting: Option<(Vec<u8>, tokio::sync::oneshot::Sender<()>)> = None;
            loop {
                // Published once the peer's subscription is known; until
                // then gossipsub has nobody to send it to.
                if let Some((data, done)) = waiting.take() {
                    match swarm.behaviour_mut().publish(topic.clone(), data.clone()) {
                        Ok(_) => {
                            let _ = done.send(());
                        }
                        Err(_) => waiting = Some((data, done)),
                    }
                }
                tokio::select! {
                    _ = swarm.select_next_some() => {}
                    Some(next) = asked.recv(), if waiting.is_none() => waiting = Some(next),
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        Forger {
            peer: forger,
            publish,
            task,
        }
    }

    /// Publishes `data` as it is (waits, at most ten seconds, until the
    /// peer's subscription is known).
    pub async fn publish(&self, data: Vec<u8>) {
        let (done, published) = tokio::sync::oneshot::channel();
        self.publish.send((data, done)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), published)
            .await
            .expect("the forger published within ten seconds")
            .unwrap();
    }
}

/// Parts by (segment, place).
pub type Parts = std::collections::BTreeMap<(u64, u32), Vec<u8>>;

/// The parts `broadcast --low-latency` makes of `stream` at 1 s segments
/// (`PartCutter`), and its initialisation section: what viewers must get.
pub fn parts_of(stream: &[u8]) -> (Parts, Vec<u8>) {
    use shoal_storage::cmaf::{FragmentReader, Item, PartCutter};
    let mut reader = FragmentReader::new();
    reader.push(stream);
    let mut cutter = PartCutter::new(1_000_000);
    let mut init = Vec::new();
    let mut parts = Parts::new();
    while let Some(item) = reader.poll_item().expect("ffmpeg's stream reads") {
        match item {
            Item::Init(bytes) => init = bytes,
            Item::Fragment(f) => {
                if let Some(p) = cutter.push(f).expect("ffmpeg's stream cuts") {
                    parts.insert((p.segment, p.index), p.fragment.bytes);
                }
            }
        }
    }
    (parts, init)
}

/// The parts an LL-HLS playlist lists, in order: (segment, place) from
/// each `EXT-X-PART`'s URI (`[<dir>/]<segment>.<part>.m4s`).
pub fn listed_parts(playlist: &str) -> Vec<(u64, u32)> {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .filter_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
        .filter_map(|uri| {
            let name = uri.rsplit('/').next()?.trim_end_matches(".m4s");
            let (s, p) = name.split_once('.')?;
            Some((s.parse().ok()?, p.parse().ok()?))
        })
        .collect()
}
