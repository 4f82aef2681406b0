//! Segment and stream manifests, as blocks from a peer or the store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::manifest::{SegmentManifest, StreamManifest};

fuzz_target!(|data: &[u8]| {
    let _ = SegmentManifest::from_block(data);
    let _ = StreamManifest::from_block(data);
});
