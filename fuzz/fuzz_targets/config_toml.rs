//! `config.toml` as the node reads it: TOML, then every setting checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_node::repo::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text) else {
        return;
    };
    // A config the node accepts, written back, is accepted again.
    let written = toml::to_string(&config).expect("an accepted config writes");
    if let Err(e) = Config::parse(&written) {
        panic!("{written:?} was written from an accepted config and refused: {e}");
    }
});
