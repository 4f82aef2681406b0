//! The low-latency (LL-HLS) media playlist of a rendition whose units are
//! parts, from what its session lists.
//!
//! The session lists parts in order ([`shoal_protocol::live::LivePlanner::
//! playlist`]); [`shoal_protocol::live::group_parts`] puts them back into
//! segments. Here they become a playlist: closed segments as whole
//! segments (`<segment>.<ext>`, their parts back to back), the parts of
//! those that end within [`PART_LISTED_TARGETS`] target durations of the
//! playlist's end (the spec drops older ones) and of the segment under
//! way as `EXT-X-PART` (`<segment>.<part>.<ext>`), and the part that comes
//! next as the preload hint. Players without low-latency support read the
//! whole segments and ignore the rest.

use shoal_protocol::http::PlaylistEdge;
use shoal_protocol::live::{ListedPart, PartSegment, RenditionView, WindowSegment, group_parts};
use shoal_storage::hls::{self, LiveSegment, LlPart, LlPlaylist, LlSegment, RenditionReport};

/// Closed segments keep their parts listed while they end within this
/// many target durations of the playlist's end.
pub const PART_LISTED_TARGETS: u64 = 3;

/// Whether a rendition's units are parts (low-latency live).
pub fn has_parts(r: &RenditionView) -> bool {
    r.window.iter().any(|w| w.part.is_some())
}

/// A low-latency media playlist, and how far it has come (for blocking
/// reloads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlMedia {
    pub text: String,
    pub edge: PlaylistEdge,
}

/// The first frame's date of a segment: its first part was published
/// once complete, its duration after that frame.
fn first_frame_ms(s: &PartSegment) -> Option<u64> {
    let first = s.parts.first()?;
    let published = first.published_ms?;
    Some(published.saturating_sub(first.duration_us / 1000))
}

/// Where rendition `r` stands, for the playlists of the channel's other
/// renditions (`EXT-X-RENDITION-REPORT`, `uri` relative to them); `None`
/// until it lists a whole segment.
pub fn report(r: &RenditionView, uri: String) -> Option<RenditionReport> {
    let view = group_parts(&r.playlist);
    let open = view.open.as_ref()?;
    let closed = view.closed.last()?;
    Some(match open.parts.len() {
        n if n > 0 && !open.gap => RenditionReport {
            uri,
            last_msn: open.segment,
            last_part: Some(n as u64 - 1),
        },
        _ => RenditionReport {
            uri,
            last_msn: closed.segment,
            last_part: (!closed.gap)
                .then(|| closed.parts.len().checked_sub(1))
                .flatten()
                .map(|p| p as u64),
        },
    })
}

/// The playlist of rendition `r` of a channel whose segments aim at
/// `target_us`, with `reports` of its other renditions; `None` until a
/// whole segment is listed (hls.js takes a playlist of parts alone for an
/// empty one, an error).
pub fn ll_media(r: &RenditionView, target_us: u64, reports: &[RenditionReport]) -> Option<LlMedia> {
    let view = group_parts(&r.playlist);
    let open = view.open.as_ref()?;
    if view.closed.is_empty() {
        return None;
    }
    let ext = &r.info.segment_extension;
    let part = |segment: u64, p: &ListedPart| LlPart {
        uri: format!("{segment}.{}.{ext}", p.index),
        duration_us: p.duration_us,
        independent: p.independent,
    };
    let target_us = target_us.max(1);
    // A segment missing its head lists none of its parts.
    let open_parts: Vec<LlPart> = if open.gap {
        Vec::new()
    } else {
        open.parts.iter().map(|p| part(open.segment, p)).collect()
    };
    let mut from_end: u64 = open_parts.iter().map(|p| p.duration_us).sum();
    let mut segments = Vec::with_capacity(view.closed.len());
    for s in view.closed.iter().rev() {
        let duration_us = if s.gap { target_us } else { s.duration_us() };
        let with_parts = !s.gap && from_end < PART_LISTED_TARGETS * target_us;
        from_end = from_end.saturating_add(duration_us);
        segments.push(LlSegment {
            segment: LiveSegment {
                uri: format!("{}.{ext}", s.segment),
                duration_us,
                gap: s.gap,
                program_date_ms: first_frame_ms(s),
            },
            parts: if with_parts {
                s.parts.iter().map(|p| part(s.segment, p)).collect()
            } else {
                Vec::new()
            },
        });
    }
    segments.reverse();
    let part_target_us = segments
        .iter()
        .flat_map(|s| s.parts.iter())
        .chain(&open_parts)
        .map(|p| p.duration_us)
        .max()
        .unwrap_or(0);
    let next = open.parts.last().map_or(0, |p| p.index + 1);
    let hint = format!("{}.{next}.{ext}", open.segment);
    let text = hls::write_ll_media(&LlPlaylist {
        media_sequence: view.closed.first().map_or(open.segment, |s| s.segment),
        target_us,
        part_target_us,
        init: r.info.init.map(|_| "init.mp4"),
        segments: &segments,
        open_parts: &open_parts,
        preload_hint: &hint,
        rendition_reports: reports,
    });
    Some(LlMedia {
        text,
        edge: PlaylistEdge {
            open_msn: open.segment,
            open_parts: open_parts.len() as u64,
            part_target_us,
        },
    })
}

/// Where unit `(segment, part)` stands in a rendition of parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartState {
    /// Held: its manifest and unit sequence.
    Held {
        manifest: shoal_protocol::block::Cid,
        sequence: u64,
    },
    /// Not held, and never will be: a later part is listed (it was given
    /// up), or it is too far ahead of the live edge to wait for.
    Never,
    /// Not held yet: worth waiting for.
    Coming,
}

/// Segments ahead of the newest held part a request may wait for: the
/// preload hint names the next part, which may open the next segment.
const PART_LOOKAHEAD_SEGMENTS: u64 = 1;

/// Where part `index` of `segment` stands in `r`.
pub fn part_state(r: &RenditionView, segment: u64, index: u32) -> PartState {
    if let Some(w) = r.window.iter().find(|w| {
        w.part
            .is_some_and(|p| p.segment == segment && p.index == index)
    }) {
        return PartState::Held {
            manifest: w.manifest,
            sequence: w.sequence,
        };
    }
    // The playlist lists in order: a later part listed means this one was
    // resolved, and it is not held.
    let later = |p: shoal_protocol::channel::PartOf| (p.segment, p.index) > (segment, index);
    if r.playlist.iter().any(|l| l.part.is_some_and(later)) {
        return PartState::Never;
    }
    let newest = r
        .window
        .iter()
        .filter_map(|w| w.part)
        .map(|p| p.segment)
        .max();
    match newest {
        Some(n) if segment > n.saturating_add(PART_LOOKAHEAD_SEGMENTS) => PartState::Never,
        _ => PartState::Coming,
    }
}

/// Why a closed segment cannot be served whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotWhole {
    /// A part is missing, or the segment is not closed.
    NotHere,
    /// Its parts add up to more than a segment may be (bytes).
    TooLarge(u64),
}

/// The units making closed segment `segment` of `r`, in order: its parts
/// from the first with none missing, and a later segment's part held (so
/// that it is closed). The whole is served from memory, so its parts may
/// add up to no more than a broadcaster's cutter lets a segment be
/// ([`shoal_storage::import::MAX_HLS_SEGMENT_BYTES`]); each part is
/// bounded by its manifest, their number by the announcements, which a
/// misbehaving broadcaster could otherwise stretch to gigabytes.
pub fn whole_segment(r: &RenditionView, segment: u64) -> Result<Vec<&WindowSegment>, NotWhole> {
    let parts = segment_parts(r, segment).ok_or(NotWhole::NotHere)?;
    let total: u64 = parts.iter().map(|w| w.length).sum();
    if total > shoal_storage::import::MAX_HLS_SEGMENT_BYTES {
        return Err(NotWhole::TooLarge(total));
    }
    Ok(parts)
}

fn segment_parts(r: &RenditionView, segment: u64) -> Option<Vec<&WindowSegment>> {
    let mut parts: Vec<_> = r
        .window
        .iter()
        .filter_map(|w| {
            w.part
                .filter(|p| p.segment == segment)
                .map(|p| (p.index, w))
        })
        .collect();
    parts.sort_by_key(|(i, _)| *i);
    let contiguous = parts.iter().enumerate().all(|(n, (i, _))| *i as usize == n);
    let closed = r
        .window
        .iter()
        .any(|w| w.part.is_some_and(|p| p.segment > segment));
    (contiguous && closed && !parts.is_empty()).then(|| parts.iter().map(|(_, w)| *w).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::block::{Codec, cid_of};
    use shoal_protocol::channel::{LiveRendition, PartOf};
    use shoal_protocol::live::{Listed, WindowSegment};

    /// A rendition holding units `0..n` as parts of `per` parts a segment
    /// (200 ms each), all listed but `gaps`.
    fn rendition(n: u64, per: u64, gaps: &[u64]) -> RenditionView {
        let part = |seq: u64| PartOf {
            segment: seq / per,
            index: (seq % per) as u32,
            independent: seq.is_multiple_of(per),
        };
        let window = (0..n)
            .filter(|s| !gaps.contains(s))
            .map(|seq| WindowSegment {
                sequence: seq,
                manifest: cid_of(Codec::Raw, &seq.to_be_bytes()),
                duration_us: 200_000,
                uri: String::new(),
                length: 10,
                completed_ms: 0,
                heard_ms: 0,
                published_ms: Some(10_000 + 200 * seq),
                shards: Vec::new(),
                part: Some(part(seq)),
            })
            .collect();
        let playlist = (0..n)
            .map(|seq| {
                let gap = gaps.contains(&seq);
                Listed {
                    sequence: seq,
                    duration_us: 200_000,
                    gap,
                    published_ms: (!gap).then_some(10_000 + 200 * seq),
                    part: (!gap).then(|| part(seq)),
                }
            })
            .collect();
        RenditionView {
            info: LiveRendition {
                segment_extension: "m4s".into(),
                init: Some(cid_of(Codec::Raw, b"init")),
                ..LiveRendition::default()
            },
            window,
            playlist,
        }
    }

    #[test]
    fn the_playlist_lists_recent_parts_the_open_segment_and_a_hint() {
        // Segments 0..=3 of five 200 ms parts closed, segment 4 open with
        // two parts; the target is 1 s.
        let r = rendition(22, 5, &[]);
        let m = ll_media(&r, 1_000_000, &[]).unwrap();
        let t = &m.text;
        assert!(t.contains("#EXT-X-MEDIA-SEQUENCE:0\n"), "{t}");
        assert!(t.contains("#EXT-X-PART-INF:PART-TARGET=0.2"), "{t}");
        assert!(t.contains("PART-HOLD-BACK=0.6"), "{t}");
        assert!(t.contains("#EXT-X-MAP:URI=\"init.mp4\""), "{t}");
        // Segment 0 ends 3.4 s before the end: no parts; 1 ends 2.4 s
        // before: its parts are listed.
        assert!(!t.contains("\"0.0.m4s\""), "{t}");
        assert!(t.contains("URI=\"1.0.m4s\",INDEPENDENT=YES"), "{t}");
        assert!(t.contains("#EXTINF:1.000000,\n3.m4s"), "{t}");
        assert!(
            t.contains("URI=\"4.1.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"4.2.m4s\""),
            "{t}"
        );
        // Segment 1's first frame: its first part's publication less its
        // duration.
        assert!(
            t.contains("#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:10.800Z"),
            "{t}"
        );
        assert_eq!(
            m.edge,
            PlaylistEdge {
                open_msn: 4,
                open_parts: 2,
                part_target_us: 200_000
            }
        );
    }

    #[test]
    fn a_segment_missing_a_part_is_a_gap_without_parts() {
        let r = rendition(22, 5, &[12]);
        let t = ll_media(&r, 1_000_000, &[]).unwrap().text;
        assert!(t.contains("#EXT-X-GAP\n#EXTINF:1.000000,\n2.m4s"), "{t}");
        assert!(!t.contains("\"2.0.m4s\""), "{t}");
        assert_eq!(whole_segment(&r, 2), Err(NotWhole::NotHere));
        assert_eq!(part_state(&r, 2, 2), PartState::Never);
    }

    #[test]
    fn parts_and_segments_are_found_or_waited_for_within_reach() {
        let r = rendition(22, 5, &[]);
        assert!(matches!(
            part_state(&r, 4, 1),
            PartState::Held { sequence: 21, .. }
        ));
        assert_eq!(part_state(&r, 4, 2), PartState::Coming);
        assert_eq!(part_state(&r, 5, 0), PartState::Coming);
        assert_eq!(part_state(&r, 6, 0), PartState::Never);
        let seg = whole_segment(&r, 3).unwrap();
        assert_eq!(
            seg.iter().map(|w| w.sequence).collect::<Vec<_>>(),
            vec![15, 16, 17, 18, 19]
        );
        // Where it stands, for the other renditions' playlists.
        assert_eq!(
            report(&r, "../0/index.m3u8".into()),
            Some(RenditionReport {
                uri: "../0/index.m3u8".into(),
                last_msn: 4,
                last_part: Some(1)
            })
        );
        // The open segment is not whole yet.
        assert_eq!(whole_segment(&r, 4), Err(NotWhole::NotHere));
        // Parts that add up past a segment's limit are not joined.
        let mut big = r.clone();
        for w in &mut big.window {
            w.length = shoal_storage::import::MAX_HLS_SEGMENT_BYTES / 4;
        }
        assert!(matches!(whole_segment(&big, 3), Err(NotWhole::TooLarge(_))));
        // Nothing before a whole segment.
        assert!(ll_media(&rendition(4, 5, &[]), 1_000_000, &[]).is_none());
        assert!(ll_media(&rendition(6, 5, &[]), 1_000_000, &[]).is_some());
    }
}
