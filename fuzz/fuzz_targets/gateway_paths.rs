//! The gateway's request paths (`/live/...`, `/vod/...`) and blocking
//! reload queries (`?_HLS_msn=...`), as any HTTP client, a web page
//! included, can send them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::http::{BlockingReload, GatewayPath, PlaylistEdge};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((_, query)) = path.split_once('?')
        && let Ok(Some(reload)) = BlockingReload::parse(query)
    {
        // Whatever is asked, against any playlist edge, gets an answer.
        let edge = PlaylistEdge {
            open_msn: reload.msn ^ 0x5a,
            open_parts: reload.part.unwrap_or(0) / 2,
            part_target_us: reload.msn % 2_000_000,
        };
        let _ = reload.answer(&edge);
    }
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
