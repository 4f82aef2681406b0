//! Reading and writing HLS playlists (RFC 8216), as far as shoal uses them.
//!
//! The reader is strict: it accepts the VOD playlists an encoder writes (media
//! playlists with MPEG-TS or fMP4 segments, master playlists of variant
//! streams) and refuses with a line number what it cannot keep faithfully
//! (byte ranges, encryption, discontinuities, alternate renditions, remote
//! URIs) rather than silently dropping it.

use std::fmt::Write as _;

/// Largest playlist file read, so a bad path cannot make shoal read gigabytes.
pub const MAX_PLAYLIST_BYTES: u64 = 16 << 20;

/// Longest segment duration accepted, in microseconds (one hour).
const MAX_SEGMENT_DURATION_US: u64 = 3_600_000_000;

/// A playlist that could not be used, with the line at fault (1-based; 0 for
/// the playlist as a whole).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct PlaylistError {
    pub line: usize,
    pub message: String,
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, PlaylistError> {
    Err(PlaylistError {
        line,
        message: message.into(),
    })
}

/// A media segment of a media playlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSegment {
    pub uri: String,
    pub duration_us: u64,
}

/// A media playlist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaPlaylist {
    pub media_sequence: u64,
    /// URI of the initialisation section (EXT-X-MAP), for fMP4.
    pub init: Option<String>,
    pub segments: Vec<MediaSegment>,
    /// Whether EXT-X-ENDLIST was present.
    pub ended: bool,
}

/// One variant stream of a master playlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    pub uri: String,
    pub bandwidth: u64,
    pub resolution: Option<String>,
    pub codecs: Option<String>,
}

/// A parsed playlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Playlist {
    Master(Vec<Variant>),
    Media(MediaPlaylist),
}

/// Parses a playlist.
pub fn parse(text: &str) -> Result<Playlist, PlaylistError> {
    let mut lines = text
        .trim_start_matches('\u{feff}')
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());
    match lines.next() {
        Some((_, "#EXTM3U")) => {}
        Some((n, _)) => return err(n, "not an HLS playlist: the first line must be #EXTM3U"),
        None => return err(0, "the playlist is empty"),
    }

    let mut media = MediaPlaylist::default();
    let mut variants = Vec::new();
    let mut pending_duration: Option<u64> = None;
    let mut pending_variant: Option<Variant> = None;
    let mut is_media = false;

    for (n, line) in lines {
        if let Some(tag) = line.strip_prefix('#') {
            if !tag.starts_with("EXT") {
                continue; // a comment
            }
            let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
            match name {
                "EXTINF" => {
                    is_media = true;
                    let duration = value.split(',').next().unwrap_or("");
                    pending_duration = Some(parse_duration(n, duration)?);
                }
                "EXT-X-MEDIA-SEQUENCE" => {
                    is_media = true;
                    media.media_sequence = value.parse().or_else(|_| {
                        err(n, format!("EXT-X-MEDIA-SEQUENCE {value:?} is not a number"))
                    })?;
                }
                "EXT-X-TARGETDURATION" | "EXT-X-PLAYLIST-TYPE" => is_media = true,
                "EXT-X-ENDLIST" => {
                    is_media = true;
                    media.ended = true;
                }
                "EXT-X-MAP" => {
                    is_media = true;
                    let attrs = attributes(n, value)?;
                    if attrs.iter().any(|(k, _)| k == "BYTERANGE") {
                        return err(n, "EXT-X-MAP with BYTERANGE is not supported");
                    }
                    if media.init.is_some() || !media.segments.is_empty() {
                        return err(
                            n,
                            "only one EXT-X-MAP, before the first segment, is supported",
                        );
                    }
                    let uri = find(&attrs, "URI").ok_or_else(|| PlaylistError {
                        line: n,
                        message: "EXT-X-MAP has no URI".into(),
                    })?;
                    media.init = Some(check_uri(n, uri)?);
                }
                "EXT-X-KEY" => {
                    let attrs = attributes(n, value)?;
                    if find(&attrs, "METHOD") != Some("NONE") {
                        return err(n, "encrypted segments (EXT-X-KEY) are not supported");
                    }
                }
                "EXT-X-BYTERANGE" => {
                    return err(n, "byte-range segments (EXT-X-BYTERANGE) are not supported");
                }
                "EXT-X-DISCONTINUITY" => {
                    return err(n, "discontinuities (EXT-X-DISCONTINUITY) are not supported");
                }
                "EXT-X-MEDIA" => {
                    return err(n, "alternate renditions (EXT-X-MEDIA) are not supported");
                }
                "EXT-X-I-FRAME-STREAM-INF" => return err(n, "I-frame playlists are not supported"),
                "EXT-X-STREAM-INF" => {
                    let attrs = attributes(n, value)?;
                    let bandwidth = find(&attrs, "BANDWIDTH")
                        .and_then(|b| b.parse().ok())
                        .ok_or_else(|| PlaylistError {
                            line: n,
                            message: "EXT-X-STREAM-INF needs a numeric BANDWIDTH".into(),
                        })?;
                    pending_variant = Some(Variant {
                        uri: String::new(),
                        bandwidth,
                        resolution: find(&attrs, "RESOLUTION").map(str::to_owned),
                        codecs: find(&attrs, "CODECS").map(str::to_owned),
                    });
                }
                _ => {} // tags that change nothing shoal keeps
            }
        } else if let Some(mut variant) = pending_variant.take() {
            variant.uri = check_uri(n, line)?;
            variants.push(variant);
        } else if let Some(duration_us) = pending_duration.take() {
            media.segments.push(MediaSegment {
                uri: check_uri(n, line)?,
                duration_us,
            });
            if media.segments.len() > shoal_protocol::manifest::MAX_SEGMENTS {
                return err(
                    n,
                    format!(
                        "more than {} segments in one playlist",
                        shoal_protocol::manifest::MAX_SEGMENTS
                    ),
                );
            }
        } else {
            return err(
                n,
                format!("URI {line:?} follows neither #EXTINF nor #EXT-X-STREAM-INF"),
            );
        }
    }

    match (is_media, variants.is_empty()) {
        (true, false) => err(0, "the playlist mixes master and media playlist tags"),
        (false, false) => Ok(Playlist::Master(variants)),
        (_, true) if pending_variant.is_some() => err(0, "EXT-X-STREAM-INF without a URI"),
        (_, true) => Ok(Playlist::Media(media)),
    }
}

/// Parses a decimal number of seconds into microseconds, exactly.
fn parse_duration(line: usize, text: &str) -> Result<u64, PlaylistError> {
    let bad = || PlaylistError {
        line,
        message: format!("segment duration {text:?} is not a number of seconds"),
    };
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || whole.len() > 10
    {
        return Err(bad());
    }
    let seconds: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    // Round to the nearest microsecond.
    let mut micros = 0u64;
    for (i, d) in frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(7)
        .enumerate()
    {
        let d = u64::from(d - b'0');
        if i < 6 {
            micros = micros * 10 + d;
        } else if d >= 5 {
            micros += 1;
        }
    }
    let total = seconds * 1_000_000 + micros;
    if total > MAX_SEGMENT_DURATION_US {
        return err(line, format!("segment duration {text} s is over an hour"));
    }
    Ok(total)
}

/// Accepts a relative path URI, the only kind shoal can read from disk.
fn check_uri(line: usize, uri: &str) -> Result<String, PlaylistError> {
    if uri.contains("://") || uri.starts_with("data:") {
        return err(
            line,
            format!(
                "URI {uri:?} is remote; shoal imports playlists whose segments are local files"
            ),
        );
    }
    if uri.contains('?') || uri.contains('#') {
        return err(
            line,
            format!("URI {uri:?} has a query or fragment; expected a plain file path"),
        );
    }
    Ok(uri.to_owned())
}

/// Splits an attribute list (`A=1,B="x,y"`).
fn attributes(line: usize, text: &str) -> Result<Vec<(String, String)>, PlaylistError> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            return err(line, format!("malformed attribute list {text:?}"));
        };
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let Some(end) = quoted.find('"') else {
                return err(line, format!("unterminated quoted attribute in {text:?}"));
            };
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_at(after.find(',').unwrap_or(after.len()))
        };
        out.push((name.trim().to_owned(), value.to_owned()));
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(out)
}

fn find<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Formats microseconds as decimal seconds with six places.
pub fn format_duration(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// Writes a VOD media playlist. `segments` are (URI, duration) pairs.
pub fn write_media(media_sequence: u64, init: Option<&str>, segments: &[(String, u64)]) -> String {
    write_media_playlist(media_sequence, init, segments, None, &[])
}

/// One segment of a live playlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveSegment {
    pub uri: String,
    pub duration_us: u64,
    /// Not there (given up): listed with `EXT-X-GAP` so that the segments
    /// after it keep their media sequence numbers, and players skip it.
    pub gap: bool,
    /// When its first frame was shown, in Unix milliseconds, if known:
    /// written as `EXT-X-PROGRAM-DATE-TIME`, from which a player tells how
    /// far behind the live picture it plays.
    pub program_date_ms: Option<u64>,
}

/// Writes the sliding playlist of a live stream: no playlist type and no
/// end, so a player reloads it every target duration. `target_us` is the
/// channel's target duration (0: the longest segment listed).
pub fn write_live_media(
    media_sequence: u64,
    target_us: u64,
    init: Option<&str>,
    segments: &[LiveSegment],
) -> String {
    let listed: Vec<(String, u64)> = segments
        .iter()
        .map(|s| (s.uri.clone(), s.duration_us))
        .collect();
    let marks: Vec<(bool, Option<u64>)> = segments
        .iter()
        .map(|s| (s.gap, s.program_date_ms))
        .collect();
    write_media_playlist(media_sequence, init, &listed, Some(target_us), &marks)
}

fn write_media_playlist(
    media_sequence: u64,
    init: Option<&str>,
    segments: &[(String, u64)],
    live_target_us: Option<u64>,
    // Per segment: a gap, and its program date.
    marks: &[(bool, Option<u64>)],
) -> String {
    let target = segments
        .iter()
        .map(|(_, us)| us.div_ceil(1_000_000))
        .chain(live_target_us.map(|us| us.div_ceil(1_000_000)))
        .max()
        .unwrap_or(1)
        .max(1);
    let mut out = String::from("#EXTM3U\n");
    // Version 6 is the first that allows EXT-X-MAP in a media playlist
    // without I-frames; 3 is enough for decimal durations.
    let version = if init.is_some() { 6 } else { 3 };
    let _ = writeln!(out, "#EXT-X-VERSION:{version}");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{media_sequence}");
    if live_target_us.is_none() {
        out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
    }
    if let Some(init) = init {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{init}\"");
    }
    for (i, (uri, us)) in segments.iter().enumerate() {
        let (gap, date) = marks.get(i).copied().unwrap_or_default();
        if let Some(ms) = date {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601_ms(ms));
        }
        if gap {
            out.push_str("#EXT-X-GAP\n");
        }
        let _ = writeln!(out, "#EXTINF:{},\n{uri}", format_duration(*us));
    }
    if live_target_us.is_none() {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// A part of a low-latency segment (`EXT-X-PART`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlPart {
    pub uri: String,
    pub duration_us: u64,
    /// Starts with a frame that decodes alone (`INDEPENDENT=YES`).
    pub independent: bool,
}

/// A complete segment of a low-latency playlist, with its parts if they
/// are still listed (the last few segments only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlSegment {
    pub segment: LiveSegment,
    pub parts: Vec<LlPart>,
}

/// What a low-latency (LL-HLS) media playlist lists.
#[derive(Clone, Debug)]
pub struct LlPlaylist<'a> {
    pub media_sequence: u64,
    /// The channel's target duration (0: the longest segment listed).
    pub target_us: u64,
    /// The parts' target duration; raised to the longest part listed, so
    /// that no part is ever longer than it (the spec's rule).
    pub part_target_us: u64,
    pub init: Option<&'a str>,
    pub segments: &'a [LlSegment],
    /// The parts of the segment under way, after the last complete one.
    pub open_parts: &'a [LlPart],
    /// The part that comes next (`EXT-X-PRELOAD-HINT`): a player asks for
    /// it at once and the server answers when it exists.
    pub preload_hint: &'a str,
    /// Where the channel's other renditions stand
    /// (`EXT-X-RENDITION-REPORT`), so that a player switching to one
    /// can ask for its next part at once.
    pub rendition_reports: &'a [RenditionReport],
}

/// How far another rendition's playlist has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenditionReport {
    /// Its media playlist, relative to this one.
    pub uri: String,
    /// Its last segment with anything listed (the one under way if it
    /// has parts).
    pub last_msn: u64,
    /// The last part listed of `last_msn`, if it has parts listed.
    pub last_part: Option<u64>,
}

/// Of a part target, the hold back a player keeps from the live edge:
/// three parts, the spec's recommendation (it requires at least two).
pub fn part_hold_back_us(part_target_us: u64) -> u64 {
    3 * part_target_us
}

/// Writes a low-latency live media playlist (draft-pantos-hls-rfc8216bis:
/// `EXT-X-SERVER-CONTROL` with blocking reload and `PART-HOLD-BACK`,
/// `EXT-X-PART-INF`, the parts of the last segments and of the one under
/// way, and always a preload hint). Players without low-latency support
/// read it as a plain live playlist of whole segments.
pub fn write_ll_media(p: &LlPlaylist<'_>) -> String {
    let all_parts = p
        .segments
        .iter()
        .flat_map(|s| s.parts.iter())
        .chain(p.open_parts);
    let part_target = all_parts
        .map(|x| x.duration_us)
        .max()
        .unwrap_or(0)
        .max(p.part_target_us)
        .max(1);
    let target = p
        .segments
        .iter()
        .map(|s| s.segment.duration_us.div_ceil(1_000_000))
        .chain([p.target_us.div_ceil(1_000_000)])
        .max()
        .unwrap_or(1)
        .max(1);
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:9\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(
        out,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={}",
        format_duration(part_hold_back_us(part_target))
    );
    let _ = writeln!(
        out,
        "#EXT-X-PART-INF:PART-TARGET={}",
        format_duration(part_target)
    );
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", p.media_sequence);
    if let Some(init) = p.init {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{init}\"");
    }
    let write_part = |out: &mut String, part: &LlPart| {
        let _ = write!(
            out,
            "#EXT-X-PART:DURATION={},URI=\"{}\"",
            format_duration(part.duration_us),
            part.uri
        );
        out.push_str(if part.independent {
            ",INDEPENDENT=YES\n"
        } else {
            "\n"
        });
    };
    for s in p.segments {
        if let Some(ms) = s.segment.program_date_ms {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601_ms(ms));
        }
        for part in &s.parts {
            write_part(&mut out, part);
        }
        if s.segment.gap {
            out.push_str("#EXT-X-GAP\n");
        }
        let _ = writeln!(
            out,
            "#EXTINF:{},\n{}",
            format_duration(s.segment.duration_us),
            s.segment.uri
        );
    }
    for part in p.open_parts {
        write_part(&mut out, part);
    }
    let _ = writeln!(
        out,
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
        p.preload_hint
    );
    for r in p.rendition_reports {
        let _ = write!(
            out,
            "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
            r.uri, r.last_msn
        );
        match r.last_part {
            Some(part) => {
                let _ = writeln!(out, ",LAST-PART={part}");
            }
            None => out.push('\n'),
        }
    }
    out
}

/// `ms` after the Unix epoch as ISO 8601 in UTC with milliseconds
/// (`2026-12-07T08:43:30.123Z`), the date form HLS asks for. The civil
/// date from the day count is Howard Hinnant's `civil_from_days`.
fn iso8601_ms(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    let in_day = ms % 86_400_000;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// Writes a master playlist.
pub fn write_master(variants: &[Variant]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
    for v in variants {
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth);
        if let Some(r) = &v.resolution {
            let _ = write!(out, ",RESOLUTION={r}");
        }
        if let Some(c) = &v.codecs {
            let _ = write!(out, ",CODECS=\"{c}\"");
        }
        let _ = writeln!(out, "\n{}", v.uri);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEDIA: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
        #EXTINF:2.000000,\nseg0.ts\n#EXTINF:1.966667,\nseg1.ts\n#EXT-X-ENDLIST\n";

    #[test]
    fn a_live_playlist_slides_and_never_ends() {
        let seg = |uri: &str, duration_us, gap| LiveSegment {
            uri: uri.into(),
            duration_us,
            gap,
            program_date_ms: None,
        };
        let text = write_live_media(
            40,
            2_000_000,
            None,
            &[
                seg("40.ts", 2_000_000, false),
                seg("41.ts", 1_500_000, false),
            ],
        );
        assert!(!text.contains("ENDLIST") && !text.contains("PLAYLIST-TYPE"));
        assert!(text.contains("#EXT-X-TARGETDURATION:2\n"));
        let Playlist::Media(m) = parse(&text).unwrap() else {
            panic!("not a media playlist")
        };
        assert_eq!(
            (m.media_sequence, m.ended, m.segments.len()),
            (40, false, 2)
        );
        assert_eq!(m.segments[1].duration_us, 1_500_000);
    }

    #[test]
    fn a_given_up_live_segment_is_a_gap_that_keeps_the_numbering() {
        let seg = |uri: &str, gap| LiveSegment {
            uri: uri.into(),
            duration_us: 2_000_000,
            gap,
            program_date_ms: None,
        };
        let text = write_live_media(
            7,
            2_000_000,
            None,
            &[seg("7.ts", false), seg("8.ts", true), seg("9.ts", false)],
        );
        assert!(text.contains("#EXT-X-GAP\n#EXTINF:2.000000,\n8.ts\n"));
        assert_eq!(text.matches("#EXT-X-GAP").count(), 1);
        let Playlist::Media(m) = parse(&text).unwrap() else {
            panic!("not a media playlist")
        };
        // Segment 9 is still the third from 7.
        assert_eq!(m.segments[2].uri, "9.ts");
    }

    #[test]
    fn live_segments_carry_their_program_date() {
        let seg = |uri: &str, date: Option<u64>| LiveSegment {
            uri: uri.into(),
            duration_us: 2_000_000,
            gap: date.is_none(),
            program_date_ms: date,
        };
        // 2026-12-07T08:43:30.123Z, and one across a leap day.
        let text = write_live_media(
            1,
            2_000_000,
            None,
            &[
                seg("1.ts", Some(1_796_633_010_123)),
                seg("2.ts", None),
                seg("3.ts", Some(951_782_400_007)),
            ],
        );
        assert!(text.contains(
            "#EXT-X-PROGRAM-DATE-TIME:2026-12-07T08:43:30.123Z\n#EXTINF:2.000000,\n1.ts\n"
        ));
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2000-02-29T00:00:00.007Z\n"));
        assert_eq!(text.matches("PROGRAM-DATE-TIME").count(), 2);
        // Readers that know nothing of it still read the playlist.
        let Playlist::Media(m) = parse(&text).unwrap() else {
            panic!("not a media playlist")
        };
        assert_eq!(m.segments.len(), 3);
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
    }

    fn part(uri: &str, ms: u64, independent: bool) -> LlPart {
        LlPart {
            uri: uri.into(),
            duration_us: ms * 1000,
            independent,
        }
    }

    #[test]
    fn a_low_latency_playlist_follows_the_spec_rules() {
        let seg = |n: u64, parts: Vec<LlPart>| LlSegment {
            segment: LiveSegment {
                uri: format!("{n}.m4s"),
                duration_us: 1_000_000,
                gap: false,
                program_date_ms: Some(1_796_633_010_000 + n * 1000),
            },
            parts,
        };
        let segments = [
            seg(10, Vec::new()),
            seg(
                11,
                vec![
                    part("11.0.m4s", 333, true),
                    part("11.1.m4s", 333, false),
                    // ffmpeg cuts a little long: the target follows.
                    part("11.2.m4s", 340, false),
                ],
            ),
        ];
        let open = [part("12.0.m4s", 333, true)];
        let text = write_ll_media(&LlPlaylist {
            media_sequence: 10,
            target_us: 1_000_000,
            part_target_us: 333_000,
            init: Some("init.mp4"),
            segments: &segments,
            open_parts: &open,
            preload_hint: "12.1.m4s",
            rendition_reports: &[],
        });
        let lines: Vec<&str> = text.lines().collect();
        // No part is longer than the part target, and players hold three
        // parts back.
        assert!(
            lines.contains(&"#EXT-X-PART-INF:PART-TARGET=0.340000"),
            "{text}"
        );
        assert!(
            lines.contains(&"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.020000"),
            "{text}"
        );
        assert!(lines.contains(&"#EXT-X-TARGETDURATION:1"));
        // Parts come before the segment they make up, in order, the
        // first independent; the open segment's parts follow the last
        // complete one, and the hint is last.
        let at = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
        let segment_11 = lines.iter().position(|l| *l == "11.m4s").unwrap();
        assert!(at("URI=\"11.0.m4s\",INDEPENDENT=YES") < at("11.1.m4s"));
        assert!(at("11.1.m4s") < at("11.2.m4s") && at("11.2.m4s") < segment_11);
        assert!(segment_11 < at("URI=\"12.0.m4s\",INDEPENDENT=YES"));
        assert_eq!(
            lines.last(),
            Some(&"#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"12.1.m4s\"")
        );
        assert_eq!(text.matches("INDEPENDENT=YES").count(), 2);
        // A player without parts reads two whole segments after the map.
        let Playlist::Media(m) = parse(&text).unwrap() else {
            panic!("not a media playlist")
        };
        assert_eq!(m.init.as_deref(), Some("init.mp4"));
        let uris: Vec<&str> = m.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris, ["10.m4s", "11.m4s"]);

        // With other renditions, where each stands, after the hint.
        let reports = [
            RenditionReport {
                uri: "../1/index.m3u8".into(),
                last_msn: 12,
                last_part: Some(0),
            },
            RenditionReport {
                uri: "../2/index.m3u8".into(),
                last_msn: 11,
                last_part: None,
            },
        ];
        let text = write_ll_media(&LlPlaylist {
            media_sequence: 10,
            target_us: 1_000_000,
            part_target_us: 333_000,
            init: Some("init.mp4"),
            segments: &segments,
            open_parts: &open,
            preload_hint: "12.1.m4s",
            rendition_reports: &reports,
        });
        assert!(text.ends_with(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"12.1.m4s\"\n\
             #EXT-X-RENDITION-REPORT:URI=\"../1/index.m3u8\",LAST-MSN=12,LAST-PART=0\n\
             #EXT-X-RENDITION-REPORT:URI=\"../2/index.m3u8\",LAST-MSN=11\n"
        ));
    }

    #[test]
    fn an_fmp4_live_playlist_names_its_initialisation_section() {
        let seg = LiveSegment {
            uri: "3.m4s".into(),
            duration_us: 1_000_000,
            gap: false,
            program_date_ms: None,
        };
        let text = write_live_media(3, 1_000_000, Some("init.mp4"), &[seg]);
        // EXT-X-MAP needs version 6 and comes before the first segment.
        assert!(text.contains(
            "#EXT-X-VERSION:6
"
        ));
        assert!(text.find("#EXT-X-MAP:URI=\"init.mp4\"").unwrap() < text.find("3.m4s").unwrap());
        let Playlist::Media(m) = parse(&text).unwrap() else {
            panic!("not a media playlist")
        };
        assert_eq!(m.init.as_deref(), Some("init.mp4"));
        assert_eq!(m.segments[0].uri, "3.m4s");
    }

    #[test]
    fn media_playlist() {
        let Playlist::Media(m) = parse(MEDIA).unwrap() else {
            panic!("media")
        };
        assert!(m.ended);
        assert_eq!(m.segments.len(), 2);
        assert_eq!(m.segments[1].duration_us, 1_966_667);
        assert_eq!(m.segments[1].uri, "seg1.ts");
    }

    #[test]
    fn written_playlist_reads_back() {
        let segs = vec![
            ("a.m4s".to_string(), 2_000_000),
            ("b.m4s".to_string(), 1_500_000),
        ];
        let text = write_media(5, Some("init.mp4"), &segs);
        let Playlist::Media(m) = parse(&text).unwrap() else {
            panic!("media")
        };
        assert_eq!(m.media_sequence, 5);
        assert_eq!(m.init.as_deref(), Some("init.mp4"));
        assert_eq!(m.segments[1].duration_us, 1_500_000);
        assert!(text.contains("#EXT-X-TARGETDURATION:2\n"));
    }

    #[test]
    fn master_playlist() {
        let text = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1200000,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\"\nv0/index.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=400000\nv1/index.m3u8\n";
        let Playlist::Master(v) = parse(text).unwrap() else {
            panic!("master")
        };
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].codecs.as_deref(), Some("avc1.64001f,mp4a.40.2"));
        assert_eq!(v[0].resolution.as_deref(), Some("1280x720"));
        assert_eq!(v[1].bandwidth, 400_000);
        assert_eq!(parse(&write_master(&v)).unwrap(), Playlist::Master(v));
    }

    #[test]
    fn durations_are_exact() {
        assert_eq!(parse_duration(1, "2").unwrap(), 2_000_000);
        assert_eq!(parse_duration(1, "0.0333335").unwrap(), 33_334);
        assert!(parse_duration(1, "-1").is_err());
        assert!(parse_duration(1, "abc").is_err());
        assert!(parse_duration(1, "1e3").is_err());
        assert!(parse_duration(1, "99999").is_err());
        assert_eq!(format_duration(1_966_667), "1.966667");
    }

    #[test]
    fn refusals_name_the_line() {
        assert_eq!(parse("hello\n").unwrap_err().line, 1);
        assert_eq!(parse("").unwrap_err().line, 0);
        let e = parse("#EXTM3U\n#EXTINF:2,\nhttp://cdn/x.ts\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("remote"));
        let e = parse("#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n").unwrap_err();
        assert!(e.message.contains("encrypted"));
        let e = parse("#EXTM3U\n#EXTINF:2,\na.ts\nb.ts\n").unwrap_err();
        assert_eq!(e.line, 4);
        let e = parse("#EXTM3U\n#EXTINF:x,\na.ts\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\na.m3u8\n").unwrap_err();
        assert!(e.message.contains("BANDWIDTH"));
    }
}
