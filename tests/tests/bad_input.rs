//! Bad input from a user or a file: one line on stderr, exit status 1, and
//! nothing half-written left behind.

use shoal_tests::Sandbox;

fn blocks(sb: &Sandbox) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(sb.shoal(&["repo", "stat", "--json"]).ok()).unwrap();
    v["blocks"].as_u64().unwrap()
}

/// A repo holding one small file, and its root.
fn repo_with_file() -> (Sandbox, String) {
    let sb = Sandbox::with_repo();
    let (f, _) = sb.write_random_file("have.bin", 100_000, 1);
    let root = sb.shoal(&["add", f.to_str().unwrap()]).ok().to_owned();
    (sb, root)
}

/// Runs `args`, expects the failure, and checks that the repo and the
/// sandbox folder are as they were.
fn refused(sb: &Sandbox, args: &[&str], needle: &str) {
    let before_blocks = blocks(sb);
    let before_files = sb.entries(sb.dir.path());
    sb.shoal(args).fails_with(needle);
    assert_eq!(blocks(sb), before_blocks, "{args:?} changed the repo");
    assert_eq!(
        sb.entries(sb.dir.path()),
        before_files,
        "{args:?} left files behind"
    );
}

#[test]
fn missing_or_unreadable_input_files() {
    let (sb, _) = repo_with_file();
    refused(&sb, &["add", "nope.bin"], "nope.bin");
    std::fs::create_dir(sb.path("a-dir")).unwrap();
    refused(&sb, &["add", "a-dir"], "is a directory");
    refused(&sb, &["add", "--hls", "nope.m3u8"], "nope.m3u8");
}

#[test]
fn malformed_playlists_name_file_and_line() {
    let (sb, _) = repo_with_file();
    std::fs::write(sb.path("seg0.ts"), vec![0x47u8; 1880]).unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("not-hls.m3u8", "hello\n", "line 1: not an HLS playlist"),
        ("empty.m3u8", "", "the playlist is empty"),
        (
            "bad-duration.m3u8",
            "#EXTM3U\n#EXTINF:soon,\nseg0.ts\n#EXT-X-ENDLIST\n",
            "line 2",
        ),
        (
            "orphan-uri.m3u8",
            "#EXTM3U\nseg0.ts\n#EXT-X-ENDLIST\n",
            "line 2",
        ),
        (
            "remote.m3u8",
            "#EXTM3U\n#EXTINF:2,\nhttp://example.invalid/a.ts\n#EXT-X-ENDLIST\n",
            "remote",
        ),
        (
            "live.m3u8",
            "#EXTM3U\n#EXTINF:2,\nseg0.ts\n",
            "EXT-X-ENDLIST",
        ),
        (
            "encrypted.m3u8",
            "#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n#EXTINF:2,\nseg0.ts\n#EXT-X-ENDLIST\n",
            "encrypted",
        ),
        (
            "missing-seg.m3u8",
            "#EXTM3U\n#EXTINF:2,\nseg0.ts\n#EXTINF:2,\nseg1.ts\n#EXT-X-ENDLIST\n",
            "seg1.ts",
        ),
        (
            "bad-master.m3u8",
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nnope/index.m3u8\n",
            "nope/index.m3u8",
        ),
    ];
    for (name, text, needle) in cases {
        std::fs::write(sb.path(name), text).unwrap();
        refused(&sb, &["add", "--hls", name], needle);
    }
    std::fs::write(sb.path("binary.m3u8"), [0xff, 0xfe, 0x00, 0x80]).unwrap();
    refused(&sb, &["add", "--hls", "binary.m3u8"], "not UTF-8");
}

#[test]
fn invalid_cid_strings() {
    let (sb, _) = repo_with_file();
    for args in [
        vec!["get", "not-a-cid", "-o", "out"],
        vec!["cat", "bafy!!!"],
        vec!["export-hls", "Qm", "dir"],
        vec!["pin", "add", ""],
        vec!["pin", "rm", "zzz"],
    ] {
        refused(&sb, &args, "invalid CID");
    }
}

#[test]
fn unknown_cids() {
    let (sb, _) = repo_with_file();
    // A well-formed CID of content this repo never saw.
    let unknown = "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
    refused(&sb, &["get", unknown, "-o", "out"], "not in the repo");
    refused(&sb, &["cat", unknown], "not in the repo");
    refused(&sb, &["export-hls", unknown, "dir"], "not in the repo");
    refused(&sb, &["pin", "add", unknown], "not in the store");
    // A raw block is not a stream root.
    let raw = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq";
    refused(&sb, &["get", raw, "-o", "out"], "raw block");
}

#[test]
fn uninitialised_repo() {
    let sb = Sandbox::new();
    let (f, _) = sb.write_random_file("f.bin", 10, 1);
    for args in [
        vec!["add", f.to_str().unwrap()],
        vec![
            "get",
            "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
            "-o",
            "out",
        ],
        vec!["pin", "ls"],
        vec!["repo", "stat"],
        vec!["repo", "gc"],
    ] {
        sb.shoal(&args).fails_with("shoal init");
        assert!(!sb.repo().exists(), "{args:?} created a repo");
        assert!(!sb.path("out").exists());
    }
}

#[test]
fn bad_options_and_config() {
    let (sb, _) = repo_with_file();
    refused(&sb, &["add", "--k", "0", "have.bin"], "k=0");
    refused(
        &sb,
        &["add", "--k", "200", "--m", "100", "have.bin"],
        "k + m <= 256",
    );
    refused(
        &sb,
        &["add", "--segment-size", "0", "have.bin"],
        "segment size",
    );
    let config = sb.repo().join("config.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "[import]\nk = \"ten\"\n").unwrap();
    sb.shoal(&["repo", "stat"])
        .fails_with("config.toml is invalid");
    std::fs::write(&config, "[live]\ncache_segments = 1\n").unwrap();
    sb.shoal(&["repo", "stat"])
        .fails_with("cache_segments must be at least 3");
    std::fs::write(&config, "[live]\ndeadline_durations = 0.0\n").unwrap();
    sb.shoal(&["repo", "stat"])
        .fails_with("deadline_durations must be above 0");
    std::fs::write(&config, "[live]\nration_copies = 0\n").unwrap();
    sb.shoal(&["repo", "stat"])
        .fails_with("ration_copies must be at least 1");
    std::fs::write(&config, "[live]\nration_window_ms = 60000\n").unwrap();
    sb.shoal(&["repo", "stat"])
        .fails_with("ration_window_ms must be at most 10000");
    std::fs::write(&config, "[node]\nupload_bytes_per_sec = 0\n").unwrap();
    sb.shoal(&["repo", "stat"])
        .fails_with("use no_upload instead");
    std::fs::write(&config, "[store]\nquota = 5\n").unwrap();
    sb.shoal(&["repo", "stat"])
        .fails_with("config.toml is invalid");
    // A comment 2 MiB long: refused by its size, before it is read.
    std::fs::write(&config, format!("#{}\n", "x".repeat(2 << 20))).unwrap();
    sb.shoal(&["repo", "stat"])
        .fails_with("a config is at most 1048576");
    std::fs::write(&config, good).unwrap();
    sb.shoal(&["repo", "stat"]).ok();
}

#[test]
fn export_into_a_non_empty_folder_changes_nothing() {
    let (sb, root) = repo_with_file();
    std::fs::create_dir(sb.path("full")).unwrap();
    std::fs::write(sb.path("full/keep.txt"), "mine").unwrap();
    // A file stream is refused before the folder is looked at...
    refused(&sb, &["export-hls", &root, "full"], "use get");
    assert_eq!(
        std::fs::read_to_string(sb.path("full/keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn quota_too_small_for_an_import_keeps_the_repo_as_it_was() {
    let (sb, root) = repo_with_file();
    let config = sb.repo().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[store]", "[store]\nquota_bytes = 1000000"),
    )
    .unwrap();
    let (big, _) = sb.write_random_file("big.bin", 3_000_000, 2);
    refused(&sb, &["add", big.to_str().unwrap()], "quota");
    // What was pinned before is intact.
    sb.shoal(&["get", &root, "-o", "again.bin"]).ok();
}

/// The next process ids, as `/proc` tells them: where a writer that names
/// its temporary files after its pid would write.
#[cfg(target_os = "linux")]
fn next_pids(n: u32) -> impl Iterator<Item = u32> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1000);
    (last + 1)..(last + 1 + n)
}

/// An attacker who can write beside the user's output plants symlinks to
/// a victim file at every name `get -o` and `export-hls` might write
/// first: the target itself and the temporary names of the next
/// processes. The victim is untouched and the output lands whole.
#[cfg(target_os = "linux")]
#[test]
fn planted_symlinks_leave_their_victims_untouched() {
    let (sb, root) = repo_with_file();
    let victim = sb.path("victim");
    std::fs::write(&victim, "precious").unwrap();
    let out = sb.path("out.bin");
    std::os::unix::fs::symlink(&victim, &out).unwrap();
    for pid in next_pids(500) {
        std::os::unix::fs::symlink(&victim, sb.path(&format!(".out.bin.partial-{pid}"))).unwrap();
        std::os::unix::fs::symlink(&victim, sb.path(&format!(".hls.partial-{pid}"))).unwrap();
    }
    sb.shoal(&["get", &root, "-o", out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!std::fs::symlink_metadata(&out).unwrap().is_symlink());

    // An HLS presentation, exported beside the same traps.
    let src = sb.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("seg0.ts"), vec![0x47u8; 188 * 40]).unwrap();
    std::fs::write(
        src.join("index.m3u8"),
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:2.0,\nseg0.ts\n#EXT-X-ENDLIST\n",
    )
    .unwrap();
    let hls = sb
        .shoal(&["add", "--hls", src.join("index.m3u8").to_str().unwrap()])
        .ok()
        .to_owned();
    let dir = sb.path("hls");
    sb.shoal(&["export-hls", &hls, dir.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(dir.join("index.m3u8").is_file());
    // A target folder that is a symlink to the victim's folder is refused.
    let victim_dir = sb.path("victim_dir");
    std::fs::create_dir(&victim_dir).unwrap();
    let linked = sb.path("linked");
    std::os::unix::fs::symlink(&victim_dir, &linked).unwrap();
    sb.shoal(&["export-hls", &hls, linked.to_str().unwrap()])
        .fails_with("linked");
    assert!(std::fs::read_dir(&victim_dir).unwrap().next().is_none());
}
