//! HLS playlists: imported from files, read from origins and encoders.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = shoal_storage::hls::parse(text);
    }
});
