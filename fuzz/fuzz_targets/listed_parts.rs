//! What a viewer lists of a low-latency channel, as signed parts from a
//! misbehaving broadcaster could make it (any segment numbers, places,
//! gaps), put back into segments: never panicking, in time linear in
//! what is listed, and numbering the segments it lists one after the
//! other from the first, as a playlist's media sequence numbers them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::channel::PartOf;
use shoal_protocol::live::{Listed, group_parts};

fuzz_target!(|data: &[u8]| {
    // Eleven bytes a unit: a flag byte (gap, independent), the segment
    // number (8 bytes) and the place (2 bytes).
    let listed: Vec<Listed> = data
        .chunks_exact(11)
        .enumerate()
        .map(|(i, c)| {
            let gap = c[0] & 1 == 1;
            let segment = u64::from_le_bytes(c[1..9].try_into().unwrap_or_default());
            let index = u32::from(u16::from_le_bytes([c[9], c[10]]));
            Listed {
                sequence: i as u64,
                duration_us: 200_000,
                gap,
                published_ms: None,
                part: (!gap).then_some(PartOf {
                    segment,
                    index,
                    independent: c[0] & 2 == 2,
                }),
            }
        })
        .collect();
    let view = group_parts(&listed);
    let numbers: Vec<u64> = view
        .closed
        .iter()
        .chain(&view.open)
        .map(|s| s.segment)
        .collect();
    for pair in numbers.windows(2) {
        assert_eq!(pair[1], pair[0].wrapping_add(1), "{numbers:?}");
    }
    // No more segments than units (each has a part, or stands for a gap).
    assert!(numbers.len() <= listed.len());
    for s in view.closed.iter().chain(&view.open) {
        for pair in s.parts.windows(2) {
            assert!(pair[0].index < pair[1].index);
        }
    }
});
