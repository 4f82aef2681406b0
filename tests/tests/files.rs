//! Files in and out through the CLI: identical bytes, bounded memory.

use shoal_tests::{Sandbox, sha256_file};

/// Peak memory allowed to `shoal add` and `shoal get`, whatever the file size.
const MAX_RSS: u64 = 200 << 20;

/// `shoal add` then `shoal get` of a large generated file gives identical
/// bytes, and neither command's memory grows with the file. 1 GiB by
/// default; `SHOAL_TEST_BIG_BYTES` changes it.
#[test]
fn large_file_round_trip_in_bounded_memory() {
    let len: u64 = std::env::var("SHOAL_TEST_BIG_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let sb = Sandbox::with_repo();
    // Not a multiple of the segment size: the last segment is short.
    let (input, digest) = sb.write_random_file("big.bin", len + 12_345, 1);

    let add = sb.shoal(&["add", input.to_str().unwrap()]);
    let root = add.ok().to_owned();
    assert!(
        root.starts_with("bafy"),
        "add prints the root CID alone: {root:?}"
    );
    assert!(
        add.max_rss < MAX_RSS,
        "shoal add peaked at {} MiB",
        add.max_rss >> 20
    );
    // The input is no longer needed: free the disk for the output.
    std::fs::remove_file(&input).unwrap();

    let out = sb.path("big.out");
    let get = sb.shoal(&["get", &root, "-o", out.to_str().unwrap()]);
    get.ok();
    assert!(
        get.max_rss < MAX_RSS,
        "shoal get peaked at {} MiB",
        get.max_rss >> 20
    );
    assert_eq!(sha256_file(&out), digest);
    eprintln!(
        "{} MiB: add peak RSS {} MiB, get peak RSS {} MiB",
        len >> 20,
        add.max_rss >> 20,
        get.max_rss >> 20
    );
}

#[test]
fn small_and_empty_files_round_trip_and_cat_matches_get() {
    let sb = Sandbox::with_repo();
    for (i, len) in [0u64, 1, 63, 4096, 5_000_000].into_iter().enumerate() {
        let (input, digest) = sb.write_random_file(&format!("f{i}"), len, i as u64 + 10);
        let root = sb.shoal(&["add", input.to_str().unwrap()]).ok().to_owned();
        let out = sb.path(&format!("f{i}.out"));
        sb.shoal(&["get", &root, "-o", out.to_str().unwrap()]).ok();
        assert_eq!(sha256_file(&out), digest, "{len} bytes");
        let cat = sb.command(&["cat", &root]).output().unwrap();
        assert!(cat.status.success());
        assert_eq!(cat.stdout.len() as u64, len);
        assert_eq!(cat.stdout, std::fs::read(&input).unwrap());
    }
}

#[test]
fn same_content_gives_same_root_and_is_stored_once() {
    let sb = Sandbox::with_repo();
    let (a, _) = sb.write_random_file("a", 3_000_000, 7);
    let (b, _) = sb.write_random_file("a-copy", 3_000_000, 7);
    let ra = sb.shoal(&["add", a.to_str().unwrap()]).ok().to_owned();
    let stat = |sb: &Sandbox| -> serde_json::Value {
        serde_json::from_str(sb.shoal(&["repo", "stat", "--json"]).ok()).unwrap()
    };
    let blocks = stat(&sb)["blocks"].as_u64().unwrap();
    let rb = sb.shoal(&["add", b.to_str().unwrap()]).ok().to_owned();
    // The name differs, so the root differs; every segment block is shared.
    assert_ne!(ra, rb);
    assert_eq!(stat(&sb)["blocks"].as_u64().unwrap(), blocks + 1);
    let rb2 = sb.shoal(&["add", b.to_str().unwrap()]).ok().to_owned();
    assert_eq!(rb, rb2);
}

#[test]
fn add_json_reports_the_import() {
    let sb = Sandbox::with_repo();
    let (input, _) = sb.write_random_file("v.bin", 9_000_000, 3);
    let run = sb.shoal(&[
        "add",
        "--json",
        "--k",
        "4",
        "--m",
        "2",
        "--segment-size",
        "2000000",
        input.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(run.ok()).unwrap();
    assert_eq!(v["size"], 9_000_000);
    assert_eq!(v["segments"], 5);
    assert_eq!(v["k"], 4);
    assert_eq!(v["m"], 2);
    // 5 segments x 6 shards + 5 segment manifests + the root.
    assert_eq!(v["blocks"], 36);
    assert!(v["root"].as_str().unwrap().starts_with("bafy"));
}

#[test]
fn pins_protect_from_gc_and_unpinned_content_is_collected() {
    let sb = Sandbox::with_repo();
    let (a, _) = sb.write_random_file("a", 1_000_000, 1);
    let (b, _) = sb.write_random_file("b", 1_000_000, 2);
    let ra = sb.shoal(&["add", a.to_str().unwrap()]).ok().to_owned();
    let rb = sb.shoal(&["add", b.to_str().unwrap()]).ok().to_owned();
    let mut pins: Vec<String> = sb
        .shoal(&["pin", "ls"])
        .ok()
        .lines()
        .map(str::to_owned)
        .collect();
    pins.sort();
    let mut expected = vec![ra.clone(), rb.clone()];
    expected.sort();
    assert_eq!(pins, expected, "add pins what it adds");

    sb.shoal(&["pin", "rm", &rb]).ok();
    let gc = sb.shoal(&["repo", "gc"]);
    assert!(gc.ok().starts_with("removed 16 blocks"), "{}", gc.stdout);
    sb.shoal(&["get", &ra, "-o", "a.out"]).ok();
    sb.shoal(&["get", &rb, "-o", "b.out"])
        .fails_with("not in the repo");
    sb.shoal(&["pin", "rm", &rb]).fails_with("not pinned");
    // Pinning needs the whole DAG.
    sb.shoal(&["pin", "add", &rb])
        .fails_with("not in the store");
    sb.shoal(&["pin", "add", &ra]).ok();
}
