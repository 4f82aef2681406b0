//! Import throughput against `sha256sum` of the same file, in the same run.
//! Importing hashes every byte twice (segment and shards), computes 40%
//! parity and writes it all to redb; sha256sum hashes once and writes
//! nothing, so it is the floor any content-addressed import is measured
//! against.
//!
//! `cargo bench -p shoal-storage --bench import` (`SHOAL_BENCH_MIB`
//! sets the file size, 256 MiB by default).

mod common;

use std::io::Write;
use std::process::Command;

use criterion::{Criterion, Throughput};
use shoal_storage::{Blockstore, ImportOptions, StoreOptions, import_file};

fn main() {
    let mib: u64 = std::env::var("SHOAL_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for chunk in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&buf).unwrap();
        }
    }

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("import");
    g.throughput(Throughput::Bytes(mib << 20));
    g.sample_size(10);
    g.bench_function("sha256sum", |b| {
        b.iter(|| {
            let out = Command::new("sha256sum").arg(&input).output().unwrap();
            assert!(out.status.success());
        })
    });
    let opts = ImportOptions::default();
    g.bench_function("shoal", |b| {
        b.iter_batched(
            || {
                let store_dir = tempfile::tempdir_in(dir.path()).unwrap();
                let store =
                    Blockstore::create(&store_dir.path().join("b.redb"), &StoreOptions::default())
                        .unwrap();
                (store_dir, store)
            },
            |(store_dir, store)| {
                import_file(&store, &input, &opts, &mut |_| {}).unwrap();
                (store_dir, store)
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
    c.final_summary();
    if let (Some(shoal), Some(sha)) = (
        common::median_ns("import", "shoal"),
        common::median_ns("import", "sha256sum"),
    ) {
        let mb = (mib << 20) as f64 / 1e6;
        println!(
            "\nimport of {mib} MiB: shoal {:.0} MB/s, sha256sum {:.0} MB/s; throughput ratio {:.2} (goal >= 0.5)",
            mb / (shoal / 1e9),
            mb / (sha / 1e9),
            sha / shoal
        );
    }
}
