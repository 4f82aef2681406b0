//! The daemon's HTTP port against the web pages its user opens: each attack
//! that used to work, turned around. A page can send any request to
//! 127.0.0.1 (a "simple" cross-origin POST needs no preflight) and, with
//! DNS rebinding, read the answers under its own host name.

use std::time::Duration;

use shoal_protocol::channel::ChannelKey;
use shoal_tests::{HttpReply, Sandbox, http_request};

const QUICK: Duration = Duration::from_secs(10);

/// The daemon's control API token, from the file the CLI reads.
fn token(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.repo().join("api.token"))
        .expect("the daemon writes api.token")
        .trim()
        .to_owned()
}

fn ask(host: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpReply {
    http_request(host, method, path, headers, QUICK).expect("the daemon answers")
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_web_page_cannot_import_a_private_file_and_read_it_back() {
    let sb = Sandbox::with_repo();
    let d = sb.start_daemon(None);
    let host = d.api.trim_start_matches("http://").to_owned();
    let secret = sb.path("id_ed25519");
    std::fs::write(
        &secret,
        b"-----BEGIN OPENSSH PRIVATE KEY----- not for the web",
    )
    .unwrap();
    let add = format!("/api/v0/add?path={}", secret.display());
    let bearer = format!("Bearer {}", token(&sb));

    // A page's cross-origin "simple" POST, as the browser sends it.
    let r = ask(
        &host,
        "POST",
        &add,
        &[("Host", &host), ("Origin", "http://evil.example")],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // The same page, with the sites's browser headers but no Origin.
    let r = ask(
        &host,
        "POST",
        &add,
        &[("Host", &host), ("Sec-Fetch-Site", "cross-site")],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // DNS rebinding: the page's own name arrives as Host. Even with the
    // token a rebinding page could never have.
    let r = ask(
        &host,
        "POST",
        &add,
        &[("Host", "evil.example:5080"), ("Authorization", &bearer)],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("[api] hosts"), "{}", r.text());
    // A local client without the token, and a GET with it.
    let r = ask(&host, "POST", &add, &[("Host", &host)]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("api.token"), "{}", r.text());
    let r = ask(
        &host,
        "GET",
        &add,
        &[("Host", &host), ("Authorization", &bearer)],
    );
    assert_eq!(r.status, 405, "{}", r.text());
    // None of that imported anything.
    assert_eq!(sb.shoal(&["pin", "ls"]).ok(), "");

    // The owner, with the token from the repo, imports it ...
    let r = ask(
        &host,
        "POST",
        &add,
        &[("Host", &host), ("Authorization", &bearer)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let root = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["root"]
        .as_str()
        .unwrap()
        .to_owned();
    // ... and a rebinding page still cannot read it back, through the API
    // or the gateway.
    let cat = format!("/api/v0/cat?arg={root}");
    let r = ask(&host, "POST", &cat, &[("Host", "evil.example:5080")]);
    assert_eq!(r.status, 403);
    assert!(!r.text().contains("PRIVATE KEY"));
    let r = ask(
        &host,
        "GET",
        &format!("/vod/{root}/index.m3u8"),
        &[("Host", "evil.example:5080")],
    );
    assert_eq!(r.status, 403);
    // Every call refuses a page of another origin, whatever it does.
    for call in [
        "id",
        "cat",
        "export-hls",
        "pin/add",
        "repo/gc",
        "watch",
        "broadcast",
        "limits",
        "rewards/claim",
    ] {
        let r = ask(
            &host,
            "POST",
            &format!("/api/v0/{call}"),
            &[
                ("Host", &host),
                ("Origin", "https://evil.example"),
                ("Authorization", &bearer),
            ],
        );
        assert_eq!(r.status, 403, "{call}: {}", r.text());
    }
    // The CLI, which reads the token from the repo, works as before.
    assert_eq!(sb.shoal(&["pin", "ls"]).ok(), root);
    let cat = sb.command(&["cat", &root]).output().unwrap();
    assert!(cat.status.success());
    assert_eq!(cat.stdout, std::fs::read(&secret).unwrap());
}

#[test]
fn a_web_page_cannot_make_the_gateway_watch_or_fetch() {
    let sb = Sandbox::with_repo();
    let config = sb.repo().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "player_origins = []",
            "player_origins = [\"https://tv.example\"]",
        ),
    )
    .unwrap();
    let d = sb.start_daemon(None);
    let host = d.api.trim_start_matches("http://").to_owned();
    let bearer = format!("Bearer {}", token(&sb));
    let channel = |i: u8| ChannelKey::from_seed(&[i; 32]).id().to_string();
    let sessions = || -> usize {
        let r = ask(
            &host,
            "POST",
            "/api/v0/stats",
            &[("Host", &host), ("Authorization", &bearer)],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["sessions"].as_array().unwrap().len()
    };

    // 31 playlists of other pages, by Origin or by Sec-Fetch-Site: every
    // one refused at once, no session started, nothing announced.
    for i in 0..31u8 {
        let path = format!("/live/{}/index.m3u8", channel(i));
        let by: (&str, &str) = if i % 2 == 0 {
            ("Origin", "https://evil.example")
        } else {
            ("Sec-Fetch-Site", "cross-site")
        };
        let r = ask(&host, "GET", &path, &[("Host", &host), by]);
        assert_eq!(r.status, 403, "{}", r.text());
    }
    let vod = ask(
        &host,
        "GET",
        "/vod/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy/index.m3u8",
        &[("Host", &host), ("Sec-Fetch-Site", "cross-site")],
    );
    assert_eq!(vod.status, 403);
    assert_eq!(sessions(), 0);

    // The owner watches through the control API ...
    let r = ask(
        &host,
        "POST",
        &format!("/api/v0/watch?arg={}", channel(100)),
        &[("Host", &host), ("Authorization", &bearer)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // ... and local players may start watches, eight channels at most: nine
    // at once, each waiting for a first segment that never comes (the
    // client gives up first), and one of them is told to stop one first.
    let players: Vec<_> = (0..9u8)
        .map(|i| {
            let host = host.clone();
            let path = format!("/live/{}/index.m3u8", channel(200 + i));
            std::thread::spawn(move || {
                http_request(
                    &host,
                    "GET",
                    &path,
                    &[("Host", &host)],
                    Duration::from_secs(3),
                )
                .ok()
                .map(|r| r.status)
            })
        })
        .collect();
    let answers: Vec<Option<u16>> = players.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        answers.iter().filter(|a| **a == Some(429)).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(sessions(), 1 + 8);

    // A page of an allowed origin may read what the gateway serves, and
    // is told so by CORS; another may not.
    let stats = format!("/live/{}/stats.json", channel(100));
    let r = ask(
        &host,
        "GET",
        &stats,
        &[("Host", &host), ("Origin", "https://tv.example")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://tv.example")
    );
    let r = ask(
        &host,
        "GET",
        &stats,
        &[("Host", &host), ("Origin", "https://evil.example")],
    );
    assert_eq!(r.status, 403);
    // Nobody may frame the player page.
    let page = ask(&host, "GET", "/web/", &[("Host", &host)]);
    assert_eq!(page.status, 200);
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
}

#[test]
fn a_half_sent_request_is_closed() {
    use std::io::{Read, Write};
    let sb = Sandbox::with_repo();
    let d = sb.start_daemon(None);
    let host = d.api.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.write_all(format!("GET /web/ HTTP/1.1\r\nHost: {host}\r\nX-Slow: ").as_bytes())
        .unwrap();
    // The server closes it (an error answer, if any, then EOF) before this
    // client would give up.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut rest = Vec::new();
    let read = s.read_to_end(&mut rest);
    assert!(
        read.is_ok(),
        "the connection was still open after 30 s: {read:?}"
    );
}

#[cfg(unix)]
#[test]
fn the_repo_is_the_owners_alone() {
    let sb = Sandbox::with_repo();
    let repo = sb.repo();
    assert_eq!(mode(&repo), 0o700);
    for file in ["config.toml", "blocks.redb", "identity.key"] {
        assert_eq!(mode(&repo.join(file)), 0o600, "{file}");
    }
    let _d = sb.start_daemon(None);
    for file in ["api", "api.token"] {
        assert_eq!(mode(&repo.join(file)), 0o600, "{file}");
    }
    // Nothing but the files themselves: no temporary names left over.
    let names = sb.entries(&repo);
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}
