//! Reed-Solomon on 4 MiB segments: reed-solomon-simd (what shoal uses),
//! shoal's codec around it, and reed-solomon-erasure (with its SIMD C
//! build), encoding and recovering with m shards lost.
//!
//! `cargo bench -p shoal-storage --bench codec`

mod common;

use criterion::{Criterion, Throughput};
use reed_solomon_erasure::galois_8::ReedSolomon as Rse;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use shoal_storage::codec::{self, Encoder, shard_size_for};

const SEGMENT: usize = 4 << 20;
const CASES: [(usize, usize); 2] = [(10, 4), (32, 8)];

fn segment() -> Vec<u8> {
    let mut x = 0x1234_5678_9abc_def1u64;
    (0..SEGMENT)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn shards(seg: &[u8], k: usize) -> Vec<Vec<u8>> {
    let s = shard_size_for(seg.len(), k);
    (0..k)
        .map(|i| {
            let mut v = seg[(i * s).min(seg.len())..((i + 1) * s).min(seg.len())].to_vec();
            v.resize(s, 0);
            v
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let seg = segment();
    for (k, m) in CASES {
        let name = format!("{k}+{m}");
        let data = shards(&seg, k);
        let s = data[0].len();

        let mut g = c.benchmark_group(format!("encode_{name}"));
        g.throughput(Throughput::Bytes(SEGMENT as u64));
        g.sample_size(20);
        g.bench_function("rs-simd", |b| {
            let mut enc = ReedSolomonEncoder::new(k, m, s).unwrap();
            b.iter(|| {
                enc.reset(k, m, s).unwrap();
                for d in &data {
                    enc.add_original_shard(d).unwrap();
                }
                enc.encode().unwrap().recovery_iter().count()
            })
        });
        g.bench_function("shoal", |b| {
            let mut enc = Encoder::default();
            b.iter(|| enc.encode(&seg, k, m).unwrap().len())
        });
        g.bench_function("rs-erasure", |b| {
            let rs = Rse::new(k, m).unwrap();
            let mut all: Vec<Vec<u8>> = data.clone();
            all.extend((0..m).map(|_| vec![0u8; s]));
            b.iter(|| rs.encode(&mut all).unwrap())
        });
        g.finish();

        // Recovery with m data shards lost: the worst case for a systematic
        // code, since every lost shard must be computed.
        let mut enc = Encoder::default();
        let encoded = enc.encode(&seg, k, m).unwrap();
        let all: Vec<Vec<u8>> = (0..k + m).map(|i| encoded.shard(i).to_vec()).collect();
        let mut g = c.benchmark_group(format!("recover_{name}"));
        g.throughput(Throughput::Bytes(SEGMENT as u64));
        g.sample_size(20);
        g.bench_function("rs-simd", |b| {
            let mut dec = ReedSolomonDecoder::new(k, m, s).unwrap();
            b.iter(|| {
                dec.reset(k, m, s).unwrap();
                for (i, shard) in all.iter().enumerate().skip(m) {
                    if i < k {
                        dec.add_original_shard(i, shard).unwrap();
                    } else {
                        dec.add_recovery_shard(i - k, shard).unwrap();
                    }
                }
                dec.decode().unwrap().restored_original_iter().count()
            })
        });
        g.bench_function("shoal", |b| {
            let view: Vec<Option<&[u8]>> = all
                .iter()
                .enumerate()
                .map(|(i, sh)| (i >= m).then_some(sh.as_slice()))
                .collect();
            let mut dec = codec::Decoder::default();
            b.iter(|| {
                dec.with_segment(k, m, s, SEGMENT, &view, |parts| parts.len())
                    .unwrap()
            })
        });
        // The same, copied into one contiguous buffer (what a caller that
        // needs a single slice pays on top).
        g.bench_function("shoal-contiguous", |b| {
            let view: Vec<Option<&[u8]>> = all
                .iter()
                .enumerate()
                .map(|(i, sh)| (i >= m).then_some(sh.as_slice()))
                .collect();
            let mut dec = codec::Decoder::default();
            let mut out = Vec::new();
            b.iter(|| {
                dec.reconstruct_into(k, m, s, SEGMENT, &view, &mut out)
                    .unwrap();
                out.len()
            })
        });
        g.bench_function("rs-erasure", |b| {
            let rs = Rse::new(k, m).unwrap();
            b.iter(|| {
                let mut view: Vec<Option<Vec<u8>>> = all
                    .iter()
                    .enumerate()
                    .map(|(i, sh)| (i >= m).then(|| sh.clone()))
                    .collect();
                rs.reconstruct_data(&mut view).unwrap();
            })
        });
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    let mut rows = Vec::new();
    let groups: Vec<String> = CASES
        .iter()
        .flat_map(|(k, m)| [format!("encode_{k}+{m}"), format!("recover_{k}+{m}")])
        .collect();
    for g in &groups {
        rows.push((g.as_str(), "shoal", g.as_str(), "rs-simd"));
        if g.starts_with("recover") {
            rows.push((g.as_str(), "shoal-contiguous", g.as_str(), "rs-simd"));
        }
        rows.push((g.as_str(), "rs-erasure", g.as_str(), "rs-simd"));
    }
    common::print_ratios(
        "Ratios (median time; below 1.0 is faster than the baseline):",
        &rows,
    );
}
