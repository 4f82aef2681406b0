//! A process killed with SIGKILL in the middle of an import leaves a store
//! that opens and holds only complete, verified blocks.

use std::time::{Duration, Instant};

use shoal_tests::{Sandbox, sha256_file};

/// How long to wait for the import to get going before giving up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn sigkill_during_import_leaves_a_consistent_store() {
    let sb = Sandbox::with_repo();
    let (input, digest) = sb.write_random_file("in.bin", 600 << 20, 9);
    let db = sb.repo().join("blocks.redb");
    // Kill at three different depths into the import.
    for (round, grown) in [8u64 << 20, 64 << 20, 500 << 20].into_iter().enumerate() {
        let start_len = std::fs::metadata(&db).unwrap().len();
        let mut child = sb
            .command(&["add", input.to_str().unwrap()])
            .spawn()
            .unwrap();
        let started = Instant::now();
        let mut finished = false;
        // Bounded: the loop ends when the database has grown, the import
        // finished on its own, or the timeout passed.
        while started.elapsed() < START_TIMEOUT {
            if child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            if std::fs::metadata(&db).unwrap().len() >= start_len + grown {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !finished,
            "round {round}: the import finished before it could be killed"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // The store opens, every block in it matches its CID, and nothing
        // of the killed import is pinned.
        sb.shoal(&["repo", "verify"]).ok();
        assert_eq!(sb.shoal(&["pin", "ls"]).ok(), "", "round {round}");
    }
    // The last kill came after a durable commit: complete blocks survived,
    // unpinned, and GC collects every one of them.
    let stat: serde_json::Value =
        serde_json::from_str(sb.shoal(&["repo", "stat", "--json"]).ok()).unwrap();
    assert!(stat["blocks"].as_u64().unwrap() > 0, "{stat}");
    sb.shoal(&["repo", "gc"]).ok();
    let stat: serde_json::Value =
        serde_json::from_str(sb.shoal(&["repo", "stat", "--json"]).ok()).unwrap();
    assert_eq!(stat["blocks"], 0);
    // A new import completes.
    let root = sb.shoal(&["add", input.to_str().unwrap()]).ok().to_owned();
    sb.shoal(&["get", &root, "-o", "out.bin"]).ok();
    assert_eq!(sha256_file(&sb.path("out.bin")), digest);
}
