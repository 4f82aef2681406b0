//! The gateway's request paths (`/live/...`, `/vod/...`), as any HTTP
//! client, a web page included, can send them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::http::GatewayPath;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = GatewayPath::parse(path) else {
        return;
    };
    // What parses names a file inside its folder, spelled one way.
    assert!(!path.contains("//") && !path.contains('%'), "{path:?}");
    assert!(path.split('/').all(|p| p != ".." && p != "."), "{path:?}");
    let parts: Vec<&str> = path.split('/').collect();
    let number = |i: usize| parts[i].split('.').next().unwrap_or_default();
    match parsed {
        GatewayPath::LiveMedia { rendition, .. } | GatewayPath::VodMedia { rendition, .. } => {
            assert_eq!(parts[3], rendition.to_string(), "{path:?}")
        }
        GatewayPath::LiveSegment {
            rendition,
            sequence,
            ..
        } => {
            assert_eq!(parts[3], rendition.to_string(), "{path:?}");
            assert_eq!(number(4), sequence.to_string(), "{path:?}");
        }
        GatewayPath::VodSegment {
            rendition, index, ..
        } => {
            assert_eq!(parts[3], rendition.to_string(), "{path:?}");
            assert_eq!(number(4), index.to_string(), "{path:?}");
        }
        _ => {}
    }
});
