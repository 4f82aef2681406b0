//! Two `shoal daemon` processes, driven through the CLI, swap content.

use shoal_tests::{Sandbox, sha256_file};

#[test]
fn two_daemons_swap_a_file_through_the_cli() {
    let one = Sandbox::with_repo();
    let two = Sandbox::with_repo();
    let mut d1 = one.start_daemon(None);
    let mut d2 = two.start_daemon(Some(&d1.addr));

    // Commands on a repo go through its daemon.
    let (input, digest) = one.write_random_file("in.bin", 9_000_000, 5);
    let root = one.shoal(&["add", input.to_str().unwrap()]).ok().to_owned();
    assert!(two.shoal(&["peers"]).ok().contains(&d1.peer_id));
    let id: serde_json::Value = serde_json::from_str(two.shoal(&["id", "--json"]).ok()).unwrap();
    assert_eq!(id["peer_id"], d2.peer_id.as_str());

    // The second daemon lacks the content: get fetches it from the first.
    two.shoal(&["get", &root, "-o", "out.bin"]).ok();
    assert_eq!(sha256_file(&two.path("out.bin")), digest);
    let cat = two.command(&["cat", &root]).output().unwrap();
    assert!(cat.status.success());
    assert_eq!(cat.stdout, std::fs::read(&input).unwrap());

    // While the daemon holds the repo, a second daemon is refused.
    let second = two.shoal(&[
        "daemon",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--api",
        "127.0.0.1:0",
    ]);
    second.fails_with("in use");

    // Bad input through the daemon: one line, status 1.
    two.shoal(&["get", "not-a-cid", "-o", "x"])
        .fails_with("invalid CID");
    two.shoal(&["connect", "/ip4/127.0.0.1/tcp/1"])
        .fails_with("cannot reach");
    assert!(!two.path("x").exists());

    // SIGTERM: clean exits, nothing lost. The fetched stream is pinned and
    // every block verifies once the repo is opened directly again.
    assert!(d1.stop().unwrap().success());
    assert!(d2.stop().unwrap().success());
    assert!(!two.repo().join("api").exists());
    two.shoal(&["repo", "verify"]).ok();
    assert_eq!(two.shoal(&["pin", "ls"]).ok(), root);
    two.shoal(&["get", &root, "-o", "again.bin"]).ok();
    assert_eq!(sha256_file(&two.path("again.bin")), digest);
    // Without a daemon, network commands say what they need.
    two.shoal(&["peers"]).fails_with("needs a running daemon");
}

#[test]
fn an_hls_presentation_is_exported_from_the_network() {
    let one = Sandbox::with_repo();
    let two = Sandbox::with_repo();
    let d1 = one.start_daemon(None);
    let _d2 = two.start_daemon(Some(&d1.addr));
    // A small presentation made by hand: two segments and a playlist.
    std::fs::create_dir(one.path("hls")).unwrap();
    std::fs::write(one.path("hls/a.ts"), vec![0x47u8; 188 * 50]).unwrap();
    std::fs::write(one.path("hls/b.ts"), vec![0x47u8; 188 * 30]).unwrap();
    std::fs::write(
        one.path("hls/index.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXTINF:1.2,\nb.ts\n#EXT-X-ENDLIST\n",
    )
    .unwrap();
    let root = one
        .shoal(&["add", "--hls", "hls/index.m3u8"])
        .ok()
        .to_owned();
    let entry = two
        .shoal(&["export-hls", &root, "exported"])
        .ok()
        .to_owned();
    assert!(entry.ends_with("exported/index.m3u8"), "{entry}");
    let playlist = std::fs::read_to_string(two.path("exported/index.m3u8")).unwrap();
    assert!(playlist.contains("#EXTINF:1.200000,"), "{playlist}");
    assert_eq!(
        std::fs::read(two.path("exported/segment_00000.ts")).unwrap(),
        vec![0x47u8; 188 * 50]
    );
}

#[test]
fn the_api_refuses_the_network_without_a_token_and_requests_without_it() {
    let sb = Sandbox::with_repo();
    // Beyond loopback without a fixed token: refused at start.
    let run = sb.shoal(&[
        "daemon",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--api",
        "0.0.0.0:0",
        "--no-mdns",
    ]);
    run.fails_with("without an access token");
    // A token too short to stand between the network and the node.
    let config = sb.repo().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("[api]", "[api]\ntoken = \"s3cret\"")).unwrap();
    sb.shoal(&["repo", "stat"])
        .fails_with("api.token must be at least 16");

    // With a fixed token, every call must carry it; the CLI reads it from
    // the repo's api.token, which the daemon writes.
    let token = "a-long-s3cret-for-the-lan";
    std::fs::write(
        &config,
        text.replace("[api]", &format!("[api]\ntoken = \"{token}\"")),
    )
    .unwrap();
    let d = sb.start_daemon(None);
    sb.shoal(&["repo", "stat"]).ok();
    let host = d.api.trim_start_matches("http://");
    let ask = |auth: Option<&str>| -> u16 {
        let bearer = auth.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Host", host)];
        if let Some(b) = &bearer {
            headers.push(("Authorization", b));
        }
        shoal_tests::http_request(
            host,
            "POST",
            "/api/v0/id",
            &headers,
            std::time::Duration::from_secs(10),
        )
        .unwrap()
        .status
    };
    assert_eq!(ask(None), 401);
    assert_eq!(ask(Some("wrong")), 401);
    assert_eq!(ask(Some(token)), 200);
}
