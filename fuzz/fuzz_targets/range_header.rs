//! `Range` headers as the origin reads them, for files of any length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::http::RangeAnswer;

fuzz_target!(|data: &[u8]| {
    // The first eight bytes give the file's length, the rest is the header.
    let (len, header) = match data.split_first_chunk::<8>() {
        Some((len, header)) => (u64::from_le_bytes(*len) >> (len[0] % 64), header),
        None => (0, data),
    };
    match RangeAnswer::of(Some(header), len) {
        RangeAnswer::Part { start, end } => {
            assert!(
                start < end && end <= len,
                "{start}..{end} of {len} for {header:?}"
            )
        }
        RangeAnswer::Unsatisfiable | RangeAnswer::Whole => {}
    }
});
