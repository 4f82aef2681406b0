//! A damaged database file, or a block whose bytes no longer match its CID,
//! gives a clear error that names the file or the CID — never wrong bytes.

use std::path::Path;

use shoal_protocol::block::{self, Cid, Codec};
use shoal_tests::{Sandbox, sha256_file};

/// Flips every byte of the first place in `file` where `needle` occurs.
fn damage_where(file: &Path, needle: &[u8]) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the block's bytes are in the database file");
    for b in &mut bytes[at..at + needle.len()] {
        *b = !*b;
    }
    std::fs::write(file, bytes).unwrap();
}

fn add(sb: &Sandbox, len: u64) -> (String, [u8; 32], Vec<u8>) {
    let (input, digest) = sb.write_random_file("in.bin", len, 4);
    let root = sb.shoal(&["add", input.to_str().unwrap()]).ok().to_owned();
    (root, digest, std::fs::read(input).unwrap())
}

#[test]
fn a_damaged_shard_is_named_and_never_returned() {
    let sb = Sandbox::with_repo();
    let (root, digest, content) = add(&sb, 2_000_000);
    let db = sb.repo().join("blocks.redb");
    // The first data shard is the first shard_size bytes of the file.
    let shard_size = shoal_storage::codec::shard_size_for(content.len(), 10);
    let shard_cid = block::cid_of(Codec::Raw, &content[..shard_size]);
    damage_where(&db, &content[1000..1064]);

    // verify names the block.
    let verify = sb.shoal(&["repo", "verify"]);
    verify.fails_with(&shard_cid.to_string());
    // get never writes wrong bytes: the damaged shard counts as lost and
    // parity rebuilds the segment.
    sb.shoal(&["get", &root, "-o", "out.bin"]).ok();
    assert_eq!(sha256_file(&sb.path("out.bin")), digest);
}

#[test]
fn a_damaged_manifest_is_named() {
    let sb = Sandbox::with_repo();
    let (root, _, _) = add(&sb, 100_000);
    let db = sb.repo().join("blocks.redb");
    // The root manifest holds the file name "in.bin" as text.
    damage_where(&db, b"in.bin");
    let root_cid = Cid::try_from(root.as_str()).unwrap();
    let run = sb.shoal(&["get", &root, "-o", "out.bin"]);
    run.fails_with(&root_cid.to_string());
    assert!(run.stderr.contains("damaged"), "{}", run.stderr);
    assert!(!sb.path("out.bin").exists());
    sb.shoal(&["repo", "verify"])
        .fails_with(&root_cid.to_string());
}

/// Runs a few commands against a repo whose database file was damaged as a
/// whole; each must fail with one line naming the file.
fn every_command_names_the_file(sb: &Sandbox, root: &str) {
    let db = sb.repo().join("blocks.redb");
    let name = db.display().to_string();
    for args in [
        vec!["repo", "stat"],
        vec!["get", root, "-o", "out.bin"],
        vec!["pin", "ls"],
    ] {
        let run = sb.shoal(&args);
        run.fails_with(&name);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    assert!(!sb.path("out.bin").exists());
}

#[test]
fn a_database_with_a_garbage_header_is_named() {
    let sb = Sandbox::with_repo();
    let (root, _, _) = add(&sb, 300_000);
    let db = sb.repo().join("blocks.redb");
    let mut bytes = std::fs::read(&db).unwrap();
    for (i, b) in bytes[..4096].iter_mut().enumerate() {
        *b = (i * 7 % 256) as u8;
    }
    std::fs::write(&db, bytes).unwrap();
    every_command_names_the_file(&sb, &root);
}

#[test]
fn a_truncated_database_is_named() {
    let sb = Sandbox::with_repo();
    let (root, _, _) = add(&sb, 3_000_000);
    let db = sb.repo().join("blocks.redb");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    every_command_names_the_file(&sb, &root);
}

#[test]
fn a_file_that_is_not_a_database_is_named() {
    let sb = Sandbox::with_repo();
    std::fs::write(
        sb.repo().join("blocks.redb"),
        "this is not a database\n".repeat(1000),
    )
    .unwrap();
    every_command_names_the_file(
        &sb,
        "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    );
}
