//! A synthetic live encoder: writes a segment of pseudo-random bytes every
//! segment duration and then replaces its media playlist, the way a real
//! encoder does (segment first, playlist renamed over the old one after).
//! `shoal demo` uses it when ffmpeg is not installed, and the live
//! benchmark uses it for a stream whose timing it controls.

use std::path::Path;
use std::time::Duration;

/// Segments listed in the playlist; older files are deleted.
const LISTED: u64 = 10;

/// Writes segments of `bytes` bytes every `segment` into `dir` (named
/// `seg00000.ts`, …, listed in `index.m3u8`) until `count` are written
/// (`None`: for ever), then ends the playlist. Calls `written` with each
/// sequence number once its segment is listed.
pub async fn run(
    dir: &Path,
    segment: Duration,
    bytes: usize,
    count: Option<u64>,
    mut written: impl FnMut(u64),
) -> std::io::Result<()> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut tick = tokio::time::interval(segment);
    let secs = segment.as_secs_f64();
    let target = segment.as_secs().max(1) + u64::from(segment.subsec_nanos() > 0);
    let mut seq = 0u64;
    loop {
        if count.is_some_and(|c| seq >= c) {
            break;
        }
        tick.tick().await;
        let mut data = vec![0u8; bytes];
        for c in data.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        std::fs::write(dir.join(format!("seg{seq:05}.ts")), &data)?;
        write_playlist(dir, seq, target, secs, false)?;
        written(seq);
        if let Some(old) = seq.checked_sub(LISTED + 2) {
            let _ = std::fs::remove_file(dir.join(format!("seg{old:05}.ts")));
        }
        seq += 1;
    }
    if let Some(last) = seq.checked_sub(1) {
        write_playlist(dir, last, target, secs, true)?;
    }
    Ok(())
}

fn write_playlist(
    dir: &Path,
    last: u64,
    target: u64,
    secs: f64,
    ended: bool,
) -> std::io::Result<()> {
    let first = last.saturating_sub(LISTED - 1);
    let mut text = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
    );
    for s in first..=last {
        text.push_str(&format!("#EXTINF:{secs:.6},\nseg{s:05}.ts\n"));
    }
    if ended {
        text.push_str("#EXT-X-ENDLIST\n");
    }
    let tmp = dir.join("index.m3u8.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join("index.m3u8"))
}
