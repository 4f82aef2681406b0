//! Live channels through the command line and two daemons as processes:
//! `channel create`, `broadcast` on one, `watch` and `stats` on the other,
//! and the mistakes a user makes on the way; an fMP4 channel played from
//! the watching daemon's gateway.

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_tests::live::{Encoder, listed_parts, parts_of};
use shoal_tests::{Sandbox, http_request, require_tool};

/// A child whose stdout lines arrive on a channel; killed when dropped.
struct Lines {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Lines {
    fn spawn(mut command: std::process::Command) -> Lines {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn shoal");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { child, lines }
    }

    /// The next line that contains `needle`, within `secs` seconds.
    fn expect(&self, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line with {needle:?} within {secs} s"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_channel_is_broadcast_and_watched_through_the_cli() {
    let one = Sandbox::with_repo();
    let two = Sandbox::with_repo();
    let d1 = one.start_daemon(None);
    let _d2 = two.start_daemon(Some(&d1.addr));

    let id = one.shoal(&["channel", "create", "news"]).ok().to_owned();
    assert!(id.starts_with('z'), "{id}");
    assert_eq!(one.shoal(&["channel", "ls"]).ok(), format!("news\t{id}"));
    // Mistakes: each one line, exit 1, nothing changed.
    one.shoal(&["channel", "create", "news"])
        .fails_with("already exists");
    one.shoal(&["channel", "create", "../escape"])
        .fails_with("invalid channel name");
    let hls = one.path("hls");
    std::fs::create_dir_all(&hls).unwrap();
    let hls_arg = hls.to_str().unwrap();
    one.shoal(&["broadcast", "sports", "--hls-dir", hls_arg])
        .fails_with("no channel named \"sports\"");
    one.shoal(&["broadcast", "news", "--hls-dir", "/no/such/folder"])
        .fails_with("not a folder");
    one.shoal(&[
        "broadcast",
        "news",
        "--hls-dir",
        hls_arg,
        "--origin",
        "ftp://x",
    ])
    .fails_with("invalid origin");
    two.shoal(&["watch", "not-a-channel"])
        .fails_with("not a channel id");
    two.shoal(&["watch", &id, "--origin", "cdn.example/live.m3u8"])
        .fails_with("invalid origin \"cdn.example/live.m3u8\"");
    two.shoal(&["stats"]).ok();

    let broadcast = Lines::spawn(one.command(&["broadcast", "news", "--hls-dir", hls_arg]));
    broadcast.expect(&format!("broadcasting channel {id}"), 10);
    let encoder = Encoder::start(&hls, 6);
    broadcast.expect("published rendition 0 segment 0", 20);
    // A second broadcast of the same channel would announce everything twice.
    one.shoal(&["broadcast", "news", "--hls-dir", hls_arg])
        .fails_with("already being broadcast");

    let watch = Lines::spawn(two.command(&["watch", &id]));
    let url = watch.expect("/live/", 10);
    assert!(url.ends_with(&format!("/live/{id}/index.m3u8")), "{url}");
    watch.expect("segments", 10);

    // The encoder ends the stream: so does the broadcast, cleanly.
    broadcast.expect("the encoder ended the stream", 30);
    drop(encoder);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats: serde_json::Value =
            serde_json::from_str(two.shoal(&["stats", "--json"]).ok()).unwrap();
        let session = &stats["sessions"][0];
        assert_eq!(session["channel"], id.as_str(), "{stats}");
        if session["segments"].as_u64().unwrap_or(0) >= 5 {
            assert_eq!(session["missed"], 0, "{stats}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "segments did not arrive: {stats}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = two.shoal(&["stats"]).ok().to_owned();
    assert!(text.contains(&id), "{text}");
}

/// A GET on a daemon's gateway.
fn get(api: &str, path: &str) -> shoal_tests::HttpReply {
    let api = api.trim_start_matches("http://");
    http_request(api, "GET", path, &[("Host", api)], Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// What a viewer's gateway serves of an fMP4 channel, checked: the
/// playlist names the initialisation section (in the rendition's folder,
/// before the segments) and at least `count` segments; the section is
/// `init`; each listed segment is `segment(sequence)` byte for byte, and
/// with the section in front ffprobe reads it as H.264. Returns how many
/// segments were listed.
fn check_fmp4_gateway(
    viewer: &Sandbox,
    api: &str,
    id: &str,
    count: usize,
    init: &[u8],
    segment: impl Fn(usize) -> Vec<u8>,
) -> usize {
    // The segments listed, skipping any given up (EXT-X-GAP).
    let listed = |text: &str| -> Vec<String> {
        let lines: Vec<&str> = text.lines().collect();
        lines
            .iter()
            .enumerate()
            .filter(|(i, l)| {
                l.ends_with(".m4s") && !lines[..*i].iter().rev().take(2).any(|t| *t == "#EXT-X-GAP")
            })
            .map(|(_, l)| l.to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let playlist = loop {
        let reply = get(api, &format!("/live/{id}/index.m3u8"));
        let text = reply.text();
        if reply.status == 200 && listed(&text).len() >= count {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no playlist of {count} segments: {} {text}",
            reply.status
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        playlist.contains("#EXT-X-MAP:URI=\"0/init.mp4\""),
        "{playlist}"
    );
    let reply = get(api, &format!("/live/{id}/0/init.mp4"));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("video/mp4"));
    assert!(reply.body == init, "init.mp4 differs from the encoder's");
    let uris = listed(&playlist);
    for uri in &uris {
        let seg = get(api, &format!("/live/{id}/{uri}"));
        assert_eq!(seg.status, 200, "{uri}");
        let sequence: usize = uri
            .trim_start_matches("0/")
            .trim_end_matches(".m4s")
            .parse()
            .unwrap();
        assert!(
            seg.body == segment(sequence),
            "{uri} differs from the encoder's"
        );
        let whole = viewer.path(&format!("whole{sequence}.mp4"));
        std::fs::write(&whole, [init, &seg.body].concat()).unwrap();
        let probe = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "stream=codec_name"])
            .args(["-of", "csv=p=0"])
            .arg(&whole)
            .output()
            .unwrap();
        assert!(
            probe.status.success(),
            "ffprobe: {}",
            String::from_utf8_lossy(&probe.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "h264");
    }
    // A rendition without one says so.
    assert_eq!(get(api, &format!("/live/{id}/1/init.mp4")).status, 404);
    // Whole segments have no parts: asking for one is answered at once.
    assert_eq!(get(api, &format!("/live/{id}/0/0.0.m4s")).status, 404);
    uris.len()
}

#[test]
fn an_fmp4_channel_plays_from_a_viewers_gateway() {
    require_tool("ffprobe");
    let one = Sandbox::with_repo();
    let two = Sandbox::with_repo();
    let d1 = one.start_daemon(None);
    let d2 = two.start_daemon(Some(&d1.addr));
    let id = one.shoal(&["channel", "create", "cmaf"]).ok().to_owned();
    let hls = one.path("hls");
    std::fs::create_dir_all(&hls).unwrap();
    let broadcast =
        Lines::spawn(one.command(&["broadcast", "cmaf", "--hls-dir", hls.to_str().unwrap()]));
    broadcast.expect(&format!("broadcasting channel {id}"), 10);
    let encoder = Encoder::start_fmp4(&hls, 6);
    broadcast.expect("published rendition 0 segment 1", 20);
    let _watch = Lines::spawn(two.command(&["watch", &id]));
    let init = std::fs::read(hls.join("init.mp4")).unwrap();
    check_fmp4_gateway(&two, &d2.api, &id, 2, &init, |sequence| {
        std::fs::read(hls.join(format!("seg{sequence:03}.m4s"))).unwrap()
    });
    broadcast.expect("the encoder ended the stream", 30);
    drop(encoder);
}

/// A FIFO in the sandbox, for an encoder to write into.
fn make_fifo(sandbox: &Sandbox, name: &str) -> std::path::PathBuf {
    require_tool("mkfifo");
    let fifo = sandbox.path(name);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    fifo
}

/// Writes `stream` (`seconds` of video) into `fifo` at about its
/// real-time pace, as a live encoder would, from a thread.
fn feed_fifo(fifo: &std::path::Path, stream: &[u8], seconds: usize) -> std::thread::JoinHandle<()> {
    let (fifo, stream) = (fifo.to_owned(), stream.to_owned());
    std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let pieces = seconds * 5;
        for chunk in stream.chunks(stream.len() / pieces + 1) {
            f.write_all(chunk).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// An encoder writing fragmented MP4 into a FIFO (`broadcast --fmp4`):
/// the stream is cut into 1 s segments at keyframes and played from a
/// viewer's gateway, each segment the stream's own bytes.
#[test]
fn a_piped_fmp4_stream_is_broadcast_and_plays_from_a_viewers_gateway() {
    use shoal_storage::cmaf::{FragmentReader, Item, SegmentCutter};
    require_tool("ffprobe");
    // The encoder's output, made first so that the test knows every byte;
    // written into the FIFO below at about its real-time pace.
    let stream = shoal_tests::live::fragmented_mp4(5, false);
    let mut reader = FragmentReader::new();
    reader.push(&stream);
    let mut cutter = SegmentCutter::new(1_000_000);
    let mut init = Vec::new();
    let mut expected = Vec::new();
    while let Some(item) = reader.poll_item().unwrap() {
        match item {
            Item::Init(bytes) => init = bytes,
            Item::Fragment(f) => expected.extend(cutter.push(f).unwrap()),
        }
    }
    expected.extend(cutter.finish());
    assert_eq!(expected.len(), 5);

    let one = Sandbox::with_repo();
    let two = Sandbox::with_repo();
    let d1 = one.start_daemon(None);
    let d2 = two.start_daemon(Some(&d1.addr));
    let id = one.shoal(&["channel", "create", "pipe"]).ok().to_owned();
    let fifo = make_fifo(&one, "live.fifo");
    // Mistakes first: one line each, nothing started.
    one.shoal(&["broadcast", "pipe", "--fmp4", "/no/such/fifo"])
        .fails_with("/no/such/fifo");
    one.shoal(&[
        "broadcast",
        "pipe",
        "--fmp4",
        fifo.to_str().unwrap(),
        "--segment-seconds",
        "60",
    ])
    .fails_with("choose 0.1 to 10");
    let start = || {
        Lines::spawn(one.command(&[
            "broadcast",
            "pipe",
            "--fmp4",
            fifo.to_str().unwrap(),
            "--segment-seconds",
            "1",
        ]))
    };
    // A broadcast given up before its encoder opened the FIFO frees the
    // channel: the next one starts (once the daemon has seen the first
    // go, within moments) instead of being told it is already running.
    start().expect(&format!("broadcasting channel {id}"), 10);
    let deadline = Instant::now() + Duration::from_secs(10);
    let broadcast = loop {
        let attempt = start();
        match attempt.lines.recv_timeout(Duration::from_secs(5)) {
            Ok(line) if line.contains(&format!("broadcasting channel {id}")) => break attempt,
            // Refused (it exits): the daemon has not let the first go yet.
            Ok(_) | Err(_) => {
                assert!(Instant::now() < deadline, "the channel stayed taken");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    let _watch = Lines::spawn(two.command(&["watch", &id]));
    let writer = feed_fifo(&fifo, &stream, 5);
    broadcast.expect("published rendition 0 segment 0", 20);
    writer.join().unwrap();
    broadcast.expect("the encoder ended the stream", 30);
    let listed = check_fmp4_gateway(&two, &d2.api, &id, 5, &init, |sequence| {
        expected[sequence].bytes.clone()
    });
    assert_eq!(listed, 5);
}

/// The last `EXT-X-PART` of a playlist: (segment, part).
fn last_part(playlist: &str) -> Option<(u64, u32)> {
    listed_parts(playlist).last().copied()
}

/// Low-latency live (`broadcast --fmp4 --low-latency`): each fragment
/// goes to the viewer as a part the moment the encoder writes it; the
/// viewer's gateway serves LL-HLS (parts, a preload hint, blocking
/// reloads with the spec's answers), each part the encoder's fragment and
/// each segment its parts back to back, which ffprobe reads whole.
#[test]
fn a_low_latency_stream_moves_as_parts_and_a_viewers_gateway_serves_ll_hls() {
    require_tool("ffprobe");
    // Five seconds of 200 ms fragments, a keyframe a second: five
    // segments of five parts.
    let stream = shoal_tests::live::fragmented_mp4(5, false);
    let (parts, init) = parts_of(&stream);
    assert_eq!(parts.keys().map(|(s, _)| *s).max(), Some(4));

    let one = Sandbox::with_repo();
    let two = Sandbox::with_repo();
    let d1 = one.start_daemon(None);
    let d2 = two.start_daemon(Some(&d1.addr));
    let id = one.shoal(&["channel", "create", "ll"]).ok().to_owned();
    let fifo = make_fifo(&one, "live.fifo");
    let fifo_arg = fifo.to_str().unwrap();
    let ll = [
        "broadcast",
        "ll",
        "--fmp4",
        fifo_arg,
        "--segment-seconds",
        "1",
        "--low-latency",
    ];
    // Parts need a stream to cut: a folder is refused.
    one.shoal(&[
        "broadcast",
        "ll",
        "--hls-dir",
        one.path("").to_str().unwrap(),
        "--low-latency",
    ])
    .fails_with("low latency needs an fMP4 stream");
    let broadcast = Lines::spawn(one.command(&ll));
    broadcast.expect(&format!("broadcasting channel {id}"), 10);
    let _watch = Lines::spawn(two.command(&["watch", &id]));
    // The broadcaster's own gateway serves the channel too.
    let _own = Lines::spawn(one.command(&["watch", &id]));
    let writer = feed_fifo(&fifo, &stream, 5);
    broadcast.expect("published rendition 0 segment 0 part 0", 20);
    let top = format!("/live/{id}/index.m3u8");

    // While the stream runs: a blocking reload for the part after the
    // last listed answers once it (or the next segment) is in, and the
    // preload hint is answered with the part when it exists.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let reply = get(&d2.api, &top);
        if reply.status == 200 && last_part(&reply.text()).is_some() {
            break reply.text();
        }
        assert!(
            Instant::now() < deadline,
            "no LL playlist: {} {}",
            reply.status,
            reply.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for tag in [
        "#EXT-X-VERSION:9",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=",
        "#EXT-X-PART-INF:PART-TARGET=",
        "#EXT-X-MAP:URI=\"0/init.mp4\"",
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"0/",
    ] {
        assert!(first.contains(tag), "{tag} missing:\n{first}");
    }
    let (segment, part) = last_part(&first).unwrap();
    let blocked = get(
        &d2.api,
        &format!("{top}?_HLS_msn={segment}&_HLS_part={}", part + 1),
    );
    assert_eq!(blocked.status, 200, "{}", blocked.text());
    let next = [
        format!("\"0/{segment}.{}.m4s\"", part + 1),
        format!("\"0/{}.0.m4s\"", segment + 1),
    ];
    assert!(
        next.iter().any(|n| blocked.text().contains(n.as_str())),
        "the blocking reload came back without the next part:\n{}",
        blocked.text()
    );
    let hint = blocked
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"0/"))
        .and_then(|rest| rest.strip_suffix(".m4s\""))
        .map(str::to_owned)
        .unwrap();
    let hinted = get(&d2.api, &format!("/live/{id}/0/{hint}.m4s"));
    let (s, p) = hint.split_once('.').unwrap();
    let key = (s.parse::<u64>().unwrap(), p.parse::<u32>().unwrap());
    // The hint names the open segment's next part, which a new segment
    // may pass over: then it never comes (404).
    match hinted.status {
        200 => assert!(
            hinted.body == parts[&key],
            "part {hint} differs from the encoder's"
        ),
        404 => assert!(
            !parts.contains_key(&key),
            "part {hint} exists but was refused"
        ),
        other => panic!("preload hint {hint}: {other} {}", hinted.text()),
    }
    // Too far ahead, or misspelled: 400 at once.
    for query in [
        format!("_HLS_msn={}", segment + 3),
        format!("_HLS_msn={segment}&_HLS_part=100"),
        "_HLS_part=1".to_owned(),
        "_HLS_msn=01".to_owned(),
    ] {
        let reply = get(&d2.api, &format!("{top}?{query}"));
        assert_eq!(reply.status, 400, "{query}: {}", reply.text());
    }
    writer.join().unwrap();
    broadcast.expect("the encoder ended the stream", 30);

    // Once it ended: segments 0 to 3 closed, segment 4 still open.
    let deadline = Instant::now() + Duration::from_secs(30);
    let playlist = loop {
        let text = get(&d2.api, &top).text();
        if last_part(&text) == Some((4, 4)) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the last part never listed:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!playlist.contains("#EXT-X-GAP"), "{playlist}");
    for ((segment, part), bytes) in &parts {
        let listed = format!("URI=\"0/{segment}.{part}.m4s\"");
        // Segments 0 and 1 end three target durations or more before the
        // end: their parts are no longer listed.
        if *segment > 1 {
            assert!(
                playlist.contains(&listed),
                "{listed} not listed:\n{playlist}"
            );
        }
        let reply = get(&d2.api, &format!("/live/{id}/0/{segment}.{part}.m4s"));
        assert_eq!(reply.status, 200, "{segment}.{part}");
        assert!(
            reply.body == *bytes,
            "part {segment}.{part} differs from the encoder's"
        );
    }
    for segment in 0..4u64 {
        assert!(
            playlist.contains(&format!("\n0/{segment}.m4s\n")),
            "{playlist}"
        );
        let reply = get(&d2.api, &format!("/live/{id}/0/{segment}.m4s"));
        assert_eq!(reply.status, 200, "segment {segment}");
        let whole: Vec<u8> = parts
            .range((segment, 0)..(segment + 1, 0))
            .flat_map(|(_, b)| b.clone())
            .collect();
        assert!(reply.body == whole, "segment {segment} is not its parts");
        let file = two.path(&format!("ll{segment}.mp4"));
        std::fs::write(&file, [init.as_slice(), &reply.body].concat()).unwrap();
        let probe = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "stream=codec_name"])
            .args(["-of", "csv=p=0"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "h264");
    }
    // The open segment is not served whole.
    assert_eq!(get(&d2.api, &format!("/live/{id}/0/4.m4s")).status, 404);
    // A player without low-latency support (ffmpeg's HLS reader) plays
    // the whole segments of the same playlist.
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name"])
        .args(["-of", "csv=p=0"])
        .arg(format!("{}{top}", d2.api))
        .output()
        .unwrap();
    // (ffprobe names the stream once per program it finds.)
    let codecs = String::from_utf8_lossy(&probe.stdout);
    let codecs: Vec<&str> = codecs.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        !codecs.is_empty() && codecs.iter().all(|c| *c == "h264"),
        "{codecs:?} {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    // The broadcaster's gateway lists what it published, and serves it.
    let own = get(&d1.api, &top).text();
    assert_eq!(last_part(&own), Some((4, 4)), "{own}");
    let reply = get(&d1.api, &format!("/live/{id}/0/4.4.m4s"));
    assert!(
        reply.body == parts[&(4, 4)],
        "the broadcaster's part 4.4 differs"
    );
    // Nothing more comes: a reload for the next part gives up with 503,
    // and the hinted part with 404, after three target durations.
    let reload = get(&d2.api, &format!("{top}?_HLS_msn=4&_HLS_part=5"));
    assert_eq!(reload.status, 503, "{}", reload.text());
    assert_eq!(get(&d2.api, &format!("/live/{id}/0/4.5.m4s")).status, 404);
}

/// Two low-latency renditions (`--fmp4` twice): the master playlist names
/// both, each media playlist reports where the other stands
/// (`EXT-X-RENDITION-REPORT`), and the second rendition's parts are its
/// encoder's fragments at the viewer.
#[test]
fn two_low_latency_renditions_report_on_each_other() {
    let streams = [
        shoal_tests::live::fragmented_mp4(4, false),
        shoal_tests::live::fragmented_mp4(4, true),
    ];
    let (first, _) = parts_of(&streams[0]);
    let (second, _) = parts_of(&streams[1]);
    // Each rendition's last part, which the other's playlist reports.
    let ends: Vec<(u64, u32)> = [&first, &second]
        .iter()
        .map(|p| *p.keys().next_back().unwrap())
        .collect();
    let one = Sandbox::with_repo();
    let two = Sandbox::with_repo();
    let d1 = one.start_daemon(None);
    let d2 = two.start_daemon(Some(&d1.addr));
    let id = one.shoal(&["channel", "create", "ladder"]).ok().to_owned();
    let fifos = [make_fifo(&one, "hi.fifo"), make_fifo(&one, "lo.fifo")];
    let broadcast = Lines::spawn(one.command(&[
        "broadcast",
        "ladder",
        "--fmp4",
        fifos[0].to_str().unwrap(),
        "--fmp4",
        fifos[1].to_str().unwrap(),
        "--segment-seconds",
        "1",
        "--low-latency",
    ]));
    broadcast.expect(&format!("broadcasting channel {id}"), 10);
    let _watch = Lines::spawn(two.command(&["watch", &id]));
    let writers: Vec<_> = fifos
        .iter()
        .zip(&streams)
        .map(|(f, s)| feed_fifo(f, s, 4))
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    broadcast.expect("the encoder ended the stream", 30);
    let master = get(&d2.api, &format!("/live/{id}/index.m3u8")).text();
    assert!(
        master.contains("0/index.m3u8") && master.contains("1/index.m3u8"),
        "{master}"
    );
    // Both renditions have listed their last part.
    let deadline = Instant::now() + Duration::from_secs(30);
    let playlists = loop {
        let texts: Vec<String> = (0..2)
            .map(|r| get(&d2.api, &format!("/live/{id}/{r}/index.m3u8")).text())
            .collect();
        let last = |t: &str| {
            t.lines()
                .rev()
                .find(|l| l.starts_with("#EXT-X-PART:"))
                .map(str::to_owned)
        };
        let done = texts
            .iter()
            .zip(&ends)
            .all(|(t, (s, p))| last(t).is_some_and(|l| l.contains(&format!("\"{s}.{p}.m4s\""))));
        if done {
            break texts;
        }
        assert!(
            Instant::now() < deadline,
            "not every part listed: {texts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for (r, other) in [(0, 1), (1, 0)] {
        let (s, p) = ends[other];
        let report = format!(
            "#EXT-X-RENDITION-REPORT:URI=\"../{other}/index.m3u8\",LAST-MSN={s},LAST-PART={p}\n"
        );
        assert!(
            playlists[r].ends_with(&report),
            "{report} not at the end of\n{}",
            playlists[r]
        );
    }
    assert!(
        playlists[1].contains("#EXT-X-MAP:URI=\"init.mp4\""),
        "{}",
        playlists[1]
    );
    // Every part the second rendition lists (the viewer hears of a
    // rendition's topic from the record, so it may join it a segment or
    // two late) is its encoder's fragment.
    let listed = listed_parts(&playlists[1]);
    assert!(listed.len() >= 5, "{}", playlists[1]);
    for (segment, part) in listed {
        let reply = get(&d2.api, &format!("/live/{id}/1/{segment}.{part}.m4s"));
        assert_eq!(reply.status, 200, "1/{segment}.{part}");
        assert!(
            reply.body == second[&(segment, part)],
            "part 1/{segment}.{part} differs from its encoder's"
        );
    }
}

/// `--fmp4 -`: the encoder's stream on the command's stdin (`ffmpeg ...
/// pipe:1 | shoal broadcast NAME --fmp4 -`) reaches the daemon through a
/// FIFO the command makes for it, and the end of stdin ends the broadcast.
#[test]
fn a_stream_on_stdin_is_broadcast_until_stdin_ends() {
    let stream = shoal_tests::live::fragmented_mp4(3, false);
    let one = Sandbox::with_repo();
    let _d1 = one.start_daemon(None);
    one.shoal(&["channel", "create", "piped"]).ok();
    one.shoal(&["broadcast", "piped", "--fmp4", "-", "--fmp4", "-"])
        .fails_with("give it once");
    let mut command = one.command(&[
        "broadcast",
        "piped",
        "--fmp4",
        "-",
        "--segment-seconds",
        "1",
    ]);
    command.stdin(Stdio::piped());
    let mut broadcast = Lines::spawn(command);
    let mut stdin = broadcast.child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        for chunk in stream.chunks(stream.len() / 15 + 1) {
            stdin.write_all(chunk).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
        // Dropped: the end of stdin.
    });
    broadcast.expect("published rendition 0 segment 0", 20);
    writer.join().unwrap();
    broadcast.expect("published rendition 0 segment 2", 20);
    broadcast.expect("the encoder ended the stream", 20);
}

/// Low-latency parts from an HTTP origin when peers cannot deliver: the
/// broadcaster uploads nothing to peers (`no_upload`) and names its own
/// gateway as the channel's origin (as a CDN in front of it would be);
/// the viewer fills every part it lists from there, each verified shard
/// by shard, and gets them byte for byte.
#[test]
fn a_viewer_fills_parts_from_an_origin_when_peers_cannot() {
    let stream = shoal_tests::live::fragmented_mp4(4, false);
    let (parts, _) = parts_of(&stream);
    let one = Sandbox::with_repo();
    let two = Sandbox::with_repo();
    let set = |sandbox: &Sandbox, key: &str| {
        let config = sandbox.repo().join("config.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let (off, on) = (format!("{key} = false"), format!("{key} = true"));
        assert!(text.contains(&off), "{text}");
        std::fs::write(&config, text.replace(&off, &on)).unwrap();
    };
    set(&one, "no_upload");
    // The origin is on 127.0.0.1, which a record alone may not name.
    set(&two, "private_origins");
    let d1 = one.start_daemon(None);
    let d2 = two.start_daemon(Some(&d1.addr));
    let id = one.shoal(&["channel", "create", "cdn"]).ok().to_owned();
    let fifo = make_fifo(&one, "live.fifo");
    let origin = format!("{}/live/{id}", d1.api);
    let broadcast = Lines::spawn(one.command(&[
        "broadcast",
        "cdn",
        "--fmp4",
        fifo.to_str().unwrap(),
        "--segment-seconds",
        "1",
        "--low-latency",
        "--origin",
        &origin,
    ]));
    broadcast.expect(&format!("broadcasting channel {id}"), 10);
    // The broadcaster's gateway serves what it publishes: the origin.
    let _own = Lines::spawn(one.command(&["watch", &id]));
    let _watch = Lines::spawn(two.command(&["watch", &id]));
    feed_fifo(&fifo, &stream, 4).join().unwrap();
    broadcast.expect("the encoder ended the stream", 30);
    let top = format!("/live/{id}/index.m3u8");
    let deadline = Instant::now() + Duration::from_secs(30);
    let playlist = loop {
        let text = get(&d2.api, &top).text();
        if last_part(&text) == parts.keys().next_back().copied() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the last part never listed:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!playlist.contains("#EXT-X-GAP"), "{playlist}");
    for ((segment, part), bytes) in &parts {
        let reply = get(&d2.api, &format!("/live/{id}/0/{segment}.{part}.m4s"));
        assert_eq!(reply.status, 200, "{segment}.{part}");
        assert!(
            reply.body == *bytes,
            "part {segment}.{part} differs from the encoder's"
        );
    }
    let stats: serde_json::Value =
        serde_json::from_str(&get(&d2.api, &format!("/live/{id}/stats.json")).text()).unwrap();
    let session = &stats["session"];
    assert!(
        session["bytes_from_http"].as_u64().is_some_and(|b| b > 0),
        "{stats}"
    );
    assert_eq!(session["bytes_from_source"].as_u64(), Some(0), "{stats}");
}

/// `shoal broadcast ... | head -1`: the reader of its output goes away;
/// the command ends quietly instead of with a panic, and the broadcast
/// with it, so the channel is free again.
#[test]
fn a_broadcast_whose_reader_goes_away_ends_without_a_panic() {
    use std::io::{Read, Write};
    let stream = shoal_tests::live::fragmented_mp4(3, false);
    let one = Sandbox::with_repo();
    let _d1 = one.start_daemon(None);
    one.shoal(&["channel", "create", "headed"]).ok();
    let args = [
        "broadcast",
        "headed",
        "--fmp4",
        "-",
        "--segment-seconds",
        "1",
    ];
    let mut child = one
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shoal");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("broadcasting channel"), "{first}");
    drop(stdout);
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        for chunk in stream.chunks(stream.len() / 15 + 1) {
            if stdin.write_all(chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    writer.join().unwrap();
    // Quietly, as `shoal cat | head` does.
    assert!(stderr.is_empty(), "{stderr}");
    assert!(status.success(), "{status}");
    // The channel is free again: another broadcast starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = Lines::spawn(one.command(&args));
        match again.lines.recv_timeout(Duration::from_secs(5)) {
            Ok(line) if line.starts_with("broadcasting channel") => break,
            _ => {
                assert!(Instant::now() < deadline, "the channel stayed taken");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}
