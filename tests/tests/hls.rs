//! HLS VOD presentations made by ffmpeg go in with `add --hls` and come out
//! with `export-hls` as presentations ffprobe reads like the originals.

use std::path::Path;
use std::process::Command;

use shoal_storage::hls::{self, Playlist};
use shoal_tests::{Sandbox, check_output, require_tool, sha256_file};

/// Makes a 10 s presentation with two renditions and 2 s segments.
fn encode_two_renditions(sb: &Sandbox, segment_type: &str) -> std::path::PathBuf {
    require_tool("ffmpeg");
    let ext = if segment_type == "fmp4" { "m4s" } else { "ts" };
    let segment_names = format!("v%v/seg_%03d.{ext}");
    let out = sb.path("src");
    std::fs::create_dir_all(&out).unwrap();
    check_output(
        Command::new("ffmpeg")
            .current_dir(&out)
            .args([
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=640x360:rate=25",
            ])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", "10"])
            .args(["-filter_complex", "[0:v]split=2[a][b];[b]scale=320:180[b2]"])
            .args(["-map", "[a]", "-map", "[b2]", "-map", "1:a", "-map", "1:a"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "50",
                "-keyint_min",
                "50",
            ])
            .args(["-sc_threshold", "0", "-b:v:0", "800k", "-b:v:1", "300k"])
            .args(["-c:a", "aac", "-b:a", "64k"])
            .args(["-var_stream_map", "v:0,a:0 v:1,a:1"])
            .args(["-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod"])
            .args(["-hls_segment_type", segment_type])
            .args(["-master_pl_name", "master.m3u8"])
            .args(["-hls_segment_filename", &segment_names, "v%v/index.m3u8"]),
    );
    out.join("master.m3u8")
}

fn media_playlists(master: &Path) -> Vec<(std::path::PathBuf, hls::MediaPlaylist)> {
    let Playlist::Master(variants) = hls::parse(&std::fs::read_to_string(master).unwrap()).unwrap()
    else {
        panic!("{} is not a master playlist", master.display())
    };
    let dir = master.parent().unwrap();
    variants
        .iter()
        .map(|v| {
            let path = dir.join(&v.uri);
            let Playlist::Media(m) = hls::parse(&std::fs::read_to_string(&path).unwrap()).unwrap()
            else {
                panic!("{} is not a media playlist", path.display())
            };
            (path, m)
        })
        .collect()
}

/// ffprobe's view of a playlist or file: (duration in s, video stream count).
fn probe(path: &Path) -> (f64, usize) {
    require_tool("ffprobe");
    let out = check_output(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-print_format",
                "json",
                "-show_format",
                "-show_streams",
            ])
            .arg(path),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let duration = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    let videos = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["codec_type"] == "video")
        .count();
    (duration, videos)
}

fn round_trip(segment_type: &str) {
    let sb = Sandbox::with_repo();
    let master = encode_two_renditions(&sb, segment_type);
    let root = sb
        .shoal(&["add", "--hls", master.to_str().unwrap()])
        .ok()
        .to_owned();
    let exported = sb.path("exported");
    let entry = sb
        .shoal(&["export-hls", &root, exported.to_str().unwrap()])
        .ok()
        .to_owned();
    assert_eq!(Path::new(&entry), exported.join("index.m3u8"));

    let source = media_playlists(&master);
    let copy = media_playlists(&exported.join("index.m3u8"));
    assert_eq!(source.len(), 2);
    assert_eq!(copy.len(), 2);
    for ((src_path, src), (copy_path, cp)) in source.iter().zip(&copy) {
        // Same segments, same durations to the microsecond, same bytes.
        assert!(
            src.segments.len() >= 5,
            "ffmpeg wrote {} segments",
            src.segments.len()
        );
        assert_eq!(cp.segments.len(), src.segments.len());
        assert!(cp.ended);
        for (a, b) in src.segments.iter().zip(&cp.segments) {
            assert_eq!(a.duration_us, b.duration_us);
            let a_file = src_path.parent().unwrap().join(&a.uri);
            let b_file = copy_path.parent().unwrap().join(&b.uri);
            assert_eq!(sha256_file(&a_file), sha256_file(&b_file), "{}", b.uri);
        }
        assert_eq!(src.init.is_some(), cp.init.is_some());
        if let (Some(a), Some(b)) = (&src.init, &cp.init) {
            assert_eq!(
                sha256_file(&src_path.parent().unwrap().join(a)),
                sha256_file(&copy_path.parent().unwrap().join(b))
            );
        }
        // ffprobe reads the exported rendition as it reads the source.
        let (src_duration, src_videos) = probe(src_path);
        let (copy_duration, copy_videos) = probe(copy_path);
        assert_eq!(copy_videos, src_videos);
        assert!(
            (copy_duration - src_duration).abs() < 0.05,
            "{copy_duration} vs {src_duration}"
        );
        let listed: u64 = cp.segments.iter().map(|s| s.duration_us).sum();
        assert!(
            (listed as f64 / 1e6 - copy_duration).abs() < 0.5,
            "{listed} us vs {copy_duration} s"
        );
    }
    // And through the master playlist: both renditions, about 10 s.
    let (duration, videos) = probe(&exported.join("index.m3u8"));
    assert_eq!(videos, 2);
    assert!((duration - 10.0).abs() < 0.5, "{duration}");
}

#[test]
fn mpeg_ts_presentation_round_trips() {
    round_trip("mpegts");
}

#[test]
fn fmp4_presentation_with_init_segments_round_trips() {
    round_trip("fmp4");
}

#[test]
fn a_media_playlist_alone_round_trips() {
    let sb = Sandbox::with_repo();
    let master = encode_two_renditions(&sb, "mpegts");
    let media = master.parent().unwrap().join("v1/index.m3u8");
    let root = sb
        .shoal(&["add", "--hls", media.to_str().unwrap()])
        .ok()
        .to_owned();
    let exported = sb.path("one");
    sb.shoal(&["export-hls", &root, exported.to_str().unwrap()])
        .ok();
    let (duration, videos) = probe(&exported.join("index.m3u8"));
    assert_eq!(videos, 1);
    assert!((duration - 10.0).abs() < 0.5, "{duration}");
    // `get` of an HLS root says what to do instead.
    sb.shoal(&["get", &root, "-o", "x"])
        .fails_with("export-hls");
}

/// What a live encoder pipes (fragmented MP4 with video and audio, a
/// fragment every 200 ms, a keyframe every second) is cut into an init
/// section and 2 s segments that each play after the init section, and
/// nothing of the stream is lost or changed on the way.
#[test]
fn a_piped_fmp4_stream_is_cut_into_segments_that_play() {
    use shoal_storage::cmaf::{FragmentReader, Item, SegmentCutter};
    require_tool("ffmpeg");
    require_tool("ffprobe");
    let sb = Sandbox::new();
    let stream = shoal_tests::live::fragmented_mp4(7, true);
    let mut reader = FragmentReader::new();
    let mut cutter = SegmentCutter::new(2_000_000);
    let mut init = None;
    let mut segments = Vec::new();
    let mut fragments = 0;
    // In pipe-sized pieces, as they come.
    for chunk in stream.chunks(65536) {
        reader.push(chunk);
        while let Some(item) = reader.poll_item().unwrap() {
            match item {
                Item::Init(bytes) => init = Some(bytes),
                Item::Fragment(f) => {
                    fragments += 1;
                    segments.extend(cutter.push(f).unwrap());
                }
            }
        }
    }
    segments.extend(cutter.finish());
    let init = init.expect("an init section");
    assert_eq!(cutter.dropped, 0, "the stream starts at a keyframe");
    assert!(fragments > segments.len(), "{fragments} fragments");
    let mut whole = init.clone();
    for s in &segments {
        whole.extend_from_slice(&s.bytes);
    }
    // Byte for byte, up to the index ffmpeg appends when the pipe ends
    // (`mfra`), which follows the last fragment and no segment needs.
    assert!(
        stream.starts_with(&whole),
        "init and segments are the stream"
    );
    let rest = &stream[whole.len()..];
    assert_eq!(&rest[4..8], b"mfra");
    assert_eq!(
        u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize,
        rest.len()
    );
    // 7 s at a keyframe a second, closed at the first keyframe past 2 s.
    let durations: Vec<u64> = segments.iter().map(|s| s.duration_us).collect();
    let mut end = 0;
    assert_eq!(segments.len(), 4, "{durations:?}");
    for (i, s) in segments.iter().enumerate() {
        assert!(s.parts[0].independent);
        if i < 3 {
            assert!(
                (1_900_000..=2_100_000).contains(&s.duration_us),
                "{durations:?}"
            );
        }
        let file = sb.path(&format!("seg{i}.mp4"));
        std::fs::write(&file, [init.as_slice(), &s.bytes].concat()).unwrap();
        let (seconds, videos) = probe(&file);
        assert_eq!(videos, 1, "the video in segment {i}");
        // Its samples keep their decode times (tfdt), so ffprobe reads
        // the file as ending where the segment ends in the stream.
        end += s.duration_us;
        assert!(
            (seconds - end as f64 / 1e6).abs() < 0.1,
            "segment {i}: {seconds} s"
        );
    }
}
