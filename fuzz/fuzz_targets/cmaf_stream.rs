//! A fragmented MP4 stream from a live encoder's pipe, in pieces as they
//! come: read and cut into segments (and placed as parts), never
//! panicking, holding no more than the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_storage::cmaf::{FragmentReader, Item, MAX_FRAGMENT_BYTES, PartCutter, SegmentCutter};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the piece size, the rest is the stream.
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let mut reader = FragmentReader::new();
    let mut cutter = SegmentCutter::new(1_000_000);
    let mut parts = PartCutter::new(1_000_000);
    for chunk in stream.chunks(usize::from(piece).max(1)) {
        reader.push(chunk);
        loop {
            match reader.poll_item() {
                Ok(Some(Item::Fragment(f))) => {
                    if parts.push(f.clone()).is_err() || cutter.push(f).is_err() {
                        return;
                    }
                }
                Ok(Some(Item::Init(_))) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(reader.buffered() <= MAX_FRAGMENT_BYTES + chunk.len() + 16);
    }
    let _ = cutter.finish();
});
