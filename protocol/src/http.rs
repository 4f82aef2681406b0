//! The text HTTP clients send that shoal reads: the gateway's paths and
//! `Range` headers. Parsed here, without an HTTP stack, so that every
//! byte a player, a web page or a curl can send is checked by one function
//! each, tested and fuzzed on its own (`fuzz/`, targets `gateway_paths`
//! and `range_header`).
//!
//! Guarantees:
//!
//! - **Bounded work.** A path longer than [`MAX_PATH`] bytes is refused
//!   before it is split; a `Range` header longer than [`MAX_RANGE_HEADER`]
//!   is ignored (the whole file is the answer, which RFC 9110 allows).
//! - **One spelling per number.** Numbers in paths are plain decimal
//!   digits without leading zeros (no sign, no spaces: `u64::from_str`
//!   alone would take `+7` and `007`), renditions fit a
//!   `u16`, a segment's name is `<digits>.<extension>` with a short
//!   alphanumeric extension, nothing is percent-decoded (channel ids and
//!   CIDs are base32/base58 and need none), and no name climbs out of its
//!   folder.
//! - **Ranges as RFC 9110 §14 has them**: `bytes=a-b`, `bytes=a-` and the
//!   suffix `bytes=-n`, clipped to the file; one that starts at or past the
//!   end is unsatisfiable (416 with `Content-Range: bytes */len`); several
//!   ranges, another unit or bad syntax get the whole file.

use crate::block::{Cid, parse_cid};
use crate::channel::ChannelId;

/// The longest gateway path looked at: a channel id is 53 characters, a
/// CID about 60, and the longest path has two more short parts.
pub const MAX_PATH: usize = 512;

/// The longest `Range` header read; a single range of two 20-digit
/// numbers is 47 bytes.
pub const MAX_RANGE_HEADER: usize = 256;

/// The longest segment-name extension (`ts`, `m4s`, `mp4`, `aac`, ...).
const MAX_EXTENSION: usize = 8;

/// What a gateway path asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayPath {
    /// `/live/<channel>/index.m3u8`
    LiveTop { channel: ChannelId },
    /// `/live/<channel>/stats.json`
    LiveStats { channel: ChannelId },
    /// `/live/<channel>/<rendition>/index.m3u8`
    LiveMedia { channel: ChannelId, rendition: u16 },
    /// `/live/<channel>/<rendition>/init.mp4`: an fMP4 rendition's
    /// initialisation section.
    LiveInit { channel: ChannelId, rendition: u16 },
    /// `/live/<channel>/<rendition>/<sequence>.<ext>`
    LiveSegment {
        channel: ChannelId,
        rendition: u16,
        sequence: u64,
    },
    /// `/live/<channel>/<rendition>/<segment>.<part>.<ext>`: a part of a
    /// low-latency segment.
    LivePart {
        channel: ChannelId,
        rendition: u16,
        segment: u64,
        part: u32,
    },
    /// `/vod/<root>/index.m3u8`
    VodTop { root: Cid },
    /// `/vod/<root>/<rendition>/index.m3u8`
    VodMedia { root: Cid, rendition: u16 },
    /// `/vod/<root>/<rendition>/init.mp4`
    VodInit { root: Cid, rendition: u16 },
    /// `/vod/<root>/<rendition>/<n>.<ext>`
    VodSegment {
        root: Cid,
        rendition: u16,
        index: u64,
    },
}

/// Why a path names nothing: not one of the gateway's (404), or one whose
/// channel id or CID does not parse (400, with what is wrong).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("no such path on this gateway")]
    NotFound,
    #[error("{0}")]
    BadChannel(String),
    #[error("{0}")]
    BadRoot(String),
}

impl GatewayPath {
    /// Parses the path of a request's URI (without its query).
    pub fn parse(path: &str) -> Result<GatewayPath, PathError> {
        if path.len() > MAX_PATH {
            return Err(PathError::NotFound);
        }
        let rest = path.strip_prefix('/').ok_or(PathError::NotFound)?;
        let parts: Vec<&str> = rest.splitn(5, '/').collect();
        match parts.as_slice() {
            ["live", channel, last] => {
                let channel = channel_of(channel)?;
                match *last {
                    "index.m3u8" => Ok(GatewayPath::LiveTop { channel }),
                    "stats.json" => Ok(GatewayPath::LiveStats { channel }),
                    _ => Err(PathError::NotFound),
                }
            }
            ["live", channel, rendition, last] => {
                let rendition = rendition_of(rendition)?;
                let channel = channel_of(channel)?;
                match *last {
                    "index.m3u8" => Ok(GatewayPath::LiveMedia { channel, rendition }),
                    "init.mp4" => Ok(GatewayPath::LiveInit { channel, rendition }),
                    _ => match part_name(last) {
                        Some((segment, part)) => Ok(GatewayPath::LivePart {
                            channel,
                            rendition,
                            segment,
                            part,
                        }),
                        None => Ok(GatewayPath::LiveSegment {
                            channel,
                            rendition,
                            sequence: segment_number(last).ok_or(PathError::NotFound)?,
                        }),
                    },
                }
            }
            ["vod", root, "index.m3u8"] => Ok(GatewayPath::VodTop {
                root: root_of(root)?,
            }),
            ["vod", root, rendition, last] => {
                let rendition = rendition_of(rendition)?;
                let root = root_of(root)?;
                match *last {
                    "index.m3u8" => Ok(GatewayPath::VodMedia { root, rendition }),
                    "init.mp4" => Ok(GatewayPath::VodInit { root, rendition }),
                    _ => Ok(GatewayPath::VodSegment {
                        root,
                        rendition,
                        index: segment_number(last).ok_or(PathError::NotFound)?,
                    }),
                }
            }
            _ => Err(PathError::NotFound),
        }
    }
}

/// A channel id as shoal spells it (base58btc). Multibase reads the same
/// key in other bases too, the identity base among them (`\0` then the
/// raw bytes, `%` and control characters included): a path names a
/// channel one way only (found by the `gateway_paths` fuzz target).
fn channel_of(text: &str) -> Result<ChannelId, PathError> {
    let id: ChannelId = text
        .parse()
        .map_err(|e: crate::channel::ChannelError| PathError::BadChannel(e.to_string()))?;
    if id.to_string() != text {
        return Err(PathError::BadChannel(format!(
            "{text:?} is not spelled as shoal writes channel ids (base58btc, starting with z): use {id}"
        )));
    }
    Ok(id)
}

fn root_of(text: &str) -> Result<Cid, PathError> {
    // parse_cid trims; a path has no spaces to trim.
    if text.is_empty() || text.bytes().any(|b| !b.is_ascii_alphanumeric()) {
        return Err(PathError::BadRoot(format!(
            "{text:?} is not a CID (base32 or base58 characters only)"
        )));
    }
    parse_cid(text).map_err(PathError::BadRoot)
}

fn rendition_of(text: &str) -> Result<u16, PathError> {
    path_number(text)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or(PathError::NotFound)
}

/// `<digits>.<extension>`: the number of a segment's file name.
fn segment_number(name: &str) -> Option<u64> {
    let (number, extension) = name.split_once('.')?;
    let extension_ok = !extension.is_empty()
        && extension.len() <= MAX_EXTENSION
        && extension.bytes().all(|b| b.is_ascii_alphanumeric());
    extension_ok.then(|| path_number(number)).flatten()
}

/// `<digits>.<digits>.<extension>`: a part's segment and place.
fn part_name(name: &str) -> Option<(u64, u32)> {
    let (segment, rest) = name.split_once('.')?;
    let (part, _) = rest.split_once('.')?;
    let part = u32::try_from(path_number(part)?).ok()?;
    Some((path_number(segment)?, segment_number(rest).map(|_| part)?))
}

/// A number in a path: decimal, and `0` is the only one that starts with
/// a zero.
fn path_number(text: &str) -> Option<u64> {
    if text.len() > 1 && text.starts_with('0') {
        return None;
    }
    decimal(text)
}

/// Plain decimal digits, without sign or spaces, that fit a `u64`.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The longest query string read for a blocking reload: two short
/// parameters and room for others a player adds.
pub const MAX_QUERY: usize = 256;

/// A low-latency playlist request that waits (`?_HLS_msn=<M>` and maybe
/// `&_HLS_part=<N>`, draft-pantos-hls-rfc8216bis §6.2.5.2): answer once
/// the playlist holds segment `M` (or part `N` of it), or later ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockingReload {
    pub msn: u64,
    pub part: Option<u64>,
}

/// How far a low-latency playlist has come: its last complete segment,
/// and the parts of the one under way (numbered `last + 1`, or
/// `first` before any is complete).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaylistEdge {
    pub open_msn: u64,
    pub open_parts: u64,
    /// The part target, for the advance part limit.
    pub part_target_us: u64,
}

/// What to do with a [`BlockingReload`] now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadAnswer {
    /// The playlist holds what was asked: answer with it.
    Ready,
    /// Wait for the playlist to grow (at most [`reload_wait`], then 503).
    Wait,
    /// 400: asked for more than two segments, or more than the advance
    /// part limit, beyond the playlist.
    TooFar,
}

impl BlockingReload {
    /// From a request's query string: `Ok(None)` when it asks for no
    /// blocking; `Err` (400) for `_HLS_part` without `_HLS_msn` or a
    /// number spelled wrong. Other parameters are left alone; a query
    /// longer than [`MAX_QUERY`] asks for nothing.
    pub fn parse(query: &str) -> Result<Option<BlockingReload>, &'static str> {
        if query.len() > MAX_QUERY {
            return Ok(None);
        }
        let (mut msn, mut part) = (None, None);
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "_HLS_msn" => &mut msn,
                "_HLS_part" => &mut part,
                _ => continue,
            };
            if slot.is_some() {
                return Err("a blocking reload parameter is repeated");
            }
            *slot = Some(path_number(value).ok_or("_HLS_msn and _HLS_part are decimal numbers")?);
        }
        match (msn, part) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err("_HLS_part needs _HLS_msn"),
            (Some(msn), part) => Ok(Some(BlockingReload { msn, part })),
        }
    }

    /// What to do now that the playlist is at `edge`.
    pub fn answer(&self, edge: &PlaylistEdge) -> ReloadAnswer {
        // Segments before the open one are complete, with all parts.
        if self.msn < edge.open_msn {
            return ReloadAnswer::Ready;
        }
        let last_complete = edge.open_msn.checked_sub(1);
        if self.msn > last_complete.map_or(2, |l| l.saturating_add(2)) {
            return ReloadAnswer::TooFar;
        }
        // Parts ahead of the open segment's last one: a later segment's
        // parts are counted from the open one's, a segment being about
        // `3 s / part target` parts long at most for this purpose.
        let limit = advance_part_limit(edge.part_target_us);
        let wanted = match self.part {
            // The whole segment: it is complete when the next one opens.
            None => {
                return if self.msn <= edge.open_msn.saturating_add(1) {
                    ReloadAnswer::Wait
                } else {
                    ReloadAnswer::TooFar
                };
            }
            Some(n) if self.msn == edge.open_msn => n,
            Some(n) => {
                return if n < limit {
                    ReloadAnswer::Wait
                } else {
                    ReloadAnswer::TooFar
                };
            }
        };
        if wanted < edge.open_parts {
            ReloadAnswer::Ready
        } else if wanted - edge.open_parts < limit {
            ReloadAnswer::Wait
        } else {
            ReloadAnswer::TooFar
        }
    }
}

/// The advance part limit: three parts, or three seconds of parts when
/// they are shorter than a second.
pub fn advance_part_limit(part_target_us: u64) -> u64 {
    if part_target_us > 0 && part_target_us < 1_000_000 {
        3_000_000u64.div_ceil(part_target_us)
    } else {
        3
    }
}

/// How long a blocking reload may wait before the server answers 503:
/// three target durations.
pub fn reload_wait(target_us: u64) -> std::time::Duration {
    std::time::Duration::from_micros(target_us.saturating_mul(3))
}

/// How to answer a request for a file of some length, given its `Range`
/// header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// 200 and the whole file: no header, or one this server ignores.
    Whole,
    /// 206 and bytes `start..end` (`end` exclusive, never past the file).
    Part { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */<len>`.
    Unsatisfiable,
}

impl RangeAnswer {
    /// The answer for a file of `len` bytes to a `Range` header's value
    /// (`None`: no header).
    pub fn of(header: Option<&[u8]>, len: u64) -> RangeAnswer {
        let Some(header) = header else {
            return RangeAnswer::Whole;
        };
        if header.len() > MAX_RANGE_HEADER {
            return RangeAnswer::Whole;
        }
        let Ok(text) = std::str::from_utf8(header) else {
            return RangeAnswer::Whole;
        };
        let Some((unit, set)) = text.split_once('=') else {
            return RangeAnswer::Whole;
        };
        if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
            return RangeAnswer::Whole;
        }
        let Some((first, last)) = set.trim().split_once('-') else {
            return RangeAnswer::Whole;
        };
        match (decimal(first), last) {
            // bytes=-n: the last n bytes.
            (None, suffix) if first.is_empty() => match decimal(suffix) {
                Some(0) => RangeAnswer::Unsatisfiable,
                Some(_) if len == 0 => RangeAnswer::Unsatisfiable,
                Some(n) => RangeAnswer::Part {
                    start: len - n.min(len),
                    end: len,
                },
                None => RangeAnswer::Whole,
            },
            (None, _) => RangeAnswer::Whole,
            (Some(start), "") => RangeAnswer::from_start(start, len, len),
            (Some(start), last) => match decimal(last) {
                Some(last) if last >= start => {
                    RangeAnswer::from_start(start, last.saturating_add(1).min(len), len)
                }
                _ => RangeAnswer::Whole,
            },
        }
    }

    fn from_start(start: u64, end: u64, len: u64) -> RangeAnswer {
        if start >= len {
            RangeAnswer::Unsatisfiable
        } else {
            RangeAnswer::Part { start, end }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> ChannelId {
        crate::channel::ChannelKey::from_seed(&[7; 32]).id()
    }

    fn root() -> Cid {
        crate::block::cid_of(crate::block::Codec::DagCbor, b"stream")
    }

    #[test]
    fn every_gateway_path_parses_to_what_it_names() {
        let c = channel();
        let r = root();
        let cases = [
            (
                format!("/live/{c}/index.m3u8"),
                GatewayPath::LiveTop { channel: c },
            ),
            (
                format!("/live/{c}/stats.json"),
                GatewayPath::LiveStats { channel: c },
            ),
            (
                format!("/live/{c}/2/index.m3u8"),
                GatewayPath::LiveMedia {
                    channel: c,
                    rendition: 2,
                },
            ),
            (
                format!("/live/{c}/1/init.mp4"),
                GatewayPath::LiveInit {
                    channel: c,
                    rendition: 1,
                },
            ),
            (
                format!("/live/{c}/0/1234.ts"),
                GatewayPath::LiveSegment {
                    channel: c,
                    rendition: 0,
                    sequence: 1234,
                },
            ),
            (
                format!("/live/{c}/0/1234.0.m4s"),
                GatewayPath::LivePart {
                    channel: c,
                    rendition: 0,
                    segment: 1234,
                    part: 0,
                },
            ),
            (
                format!("/vod/{r}/index.m3u8"),
                GatewayPath::VodTop { root: r },
            ),
            (
                format!("/vod/{r}/1/index.m3u8"),
                GatewayPath::VodMedia {
                    root: r,
                    rendition: 1,
                },
            ),
            (
                format!("/vod/{r}/1/init.mp4"),
                GatewayPath::VodInit {
                    root: r,
                    rendition: 1,
                },
            ),
            (
                format!("/vod/{r}/0/7.m4s"),
                GatewayPath::VodSegment {
                    root: r,
                    rendition: 0,
                    index: 7,
                },
            ),
        ];
        for (path, want) in cases {
            assert_eq!(GatewayPath::parse(&path), Ok(want), "{path}");
        }
    }

    #[test]
    fn numbers_have_one_spelling() {
        let c = channel();
        for bad in [
            format!("/live/{c}/+0/1.ts"),
            format!("/live/{c}/0/+1.ts"),
            format!("/live/{c}/0/01.ts"),
            format!("/live/{c}/00/index.m3u8"),
            format!("/live/{c}/0/-1.ts"),
            format!("/live/{c}/0/ 1.ts"),
            format!("/live/{c}/0/1.ts/"),
            format!("/live/{c}/0/1."),
            format!("/live/{c}/0/1.t%73"),
            format!("/live/{c}/0/.ts"),
            format!("/live/{c}/65536/index.m3u8"),
            format!("/live/{c}/0/18446744073709551616.ts"),
            format!("/live/{c}/0/1.averylongext"),
            format!("/live/{c}/0/1.01.m4s"),
            format!("/live/{c}/0/1.+1.m4s"),
            format!("/live/{c}/0/1.4294967296.m4s"),
            format!("/live/{c}/0/1.2.m4s.m4s"),
            format!("/live/{c}/0/1..m4s"),
            format!("/live/{c}//index.m3u8"),
            format!("/live/{c}/0/../index.m3u8"),
            format!("live/{c}/index.m3u8"),
        ] {
            assert_eq!(GatewayPath::parse(&bad), Err(PathError::NotFound), "{bad}");
        }
    }

    #[test]
    fn a_bad_channel_or_root_says_what_is_wrong() {
        let Err(PathError::BadChannel(why)) = GatewayPath::parse("/live/nope/index.m3u8") else {
            panic!("a bad channel id is a bad request");
        };
        assert!(why.contains("nope"), "{why}");
        assert!(matches!(
            GatewayPath::parse("/vod/bafy%2e%2e/index.m3u8"),
            Err(PathError::BadRoot(_))
        ));
        assert!(matches!(
            GatewayPath::parse(&format!("/live/{}x/index.m3u8", channel())),
            Err(PathError::BadChannel(_))
        ));
        // The same key in another base (base32 here; the fuzzer found
        // the identity base, raw bytes after a NUL) is not its spelling.
        let id = channel();
        let raw = multibase::encode(multibase::Base::Base32Lower, id.as_bytes());
        let Err(PathError::BadChannel(why)) =
            GatewayPath::parse(&format!("/live/{raw}/index.m3u8"))
        else {
            panic!("another spelling of a channel id is a bad request");
        };
        assert!(why.contains(&id.to_string()), "{why}");
    }

    #[test]
    fn an_overlong_path_is_refused_before_it_is_split() {
        let long = format!("/live/{}", "a/".repeat(MAX_PATH));
        assert_eq!(GatewayPath::parse(&long), Err(PathError::NotFound));
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        let of = |h: &str, len| RangeAnswer::of(Some(h.as_bytes()), len);
        let part = |start, end| RangeAnswer::Part { start, end };
        assert_eq!(RangeAnswer::of(None, 10), RangeAnswer::Whole);
        assert_eq!(of("bytes=0-3", 10), part(0, 4));
        assert_eq!(of("bytes=2-100", 10), part(2, 10));
        assert_eq!(of("bytes=4-", 10), part(4, 10));
        assert_eq!(of("bytes=-3", 10), part(7, 10));
        assert_eq!(of("bytes=-30", 10), part(0, 10));
        assert_eq!(of("Bytes = 1-1", 10), part(1, 2));
        assert_eq!(of("bytes=007-008", 10), part(7, 9));
        assert_eq!(of("bytes=9-18446744073709551615", 10), part(9, 10));
        assert_eq!(of("bytes=10-", 10), RangeAnswer::Unsatisfiable);
        assert_eq!(of("bytes=10-20", 10), RangeAnswer::Unsatisfiable);
        assert_eq!(of("bytes=-0", 10), RangeAnswer::Unsatisfiable);
        assert_eq!(of("bytes=-5", 0), RangeAnswer::Unsatisfiable);
        assert_eq!(of("bytes=0-0", 0), RangeAnswer::Unsatisfiable);
        // Ignored: the whole file.
        for h in [
            "bytes=3-2",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=-",
            "bytes=a-b",
            "bytes 0-1",
            "bytes=18446744073709551616-",
        ] {
            assert_eq!(of(h, 10), RangeAnswer::Whole, "{h}");
        }
        assert_eq!(RangeAnswer::of(Some(&[b'b', 0xff]), 10), RangeAnswer::Whole);
        let long = format!("bytes={}1-2", "0".repeat(MAX_RANGE_HEADER));
        assert_eq!(of(&long, 10), RangeAnswer::Whole);
    }

    #[test]
    fn blocking_reload_queries_parse_to_what_they_ask() {
        assert_eq!(BlockingReload::parse(""), Ok(None));
        assert_eq!(BlockingReload::parse("x=1"), Ok(None));
        assert_eq!(
            BlockingReload::parse("_HLS_msn=12"),
            Ok(Some(BlockingReload {
                msn: 12,
                part: None
            }))
        );
        assert_eq!(
            BlockingReload::parse("_HLS_msn=12&_HLS_part=0&_HLS_skip=YES"),
            Ok(Some(BlockingReload {
                msn: 12,
                part: Some(0)
            }))
        );
        for bad in [
            "_HLS_part=1",
            "_HLS_msn=+1",
            "_HLS_msn=01",
            "_HLS_msn=",
            "_HLS_msn=1&_HLS_msn=2",
        ] {
            assert!(BlockingReload::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(BlockingReload::parse(&"a".repeat(MAX_QUERY + 1)), Ok(None));
    }

    #[test]
    fn blocking_reloads_wait_for_what_is_coming_and_refuse_what_is_far() {
        // Segment 11 is complete, segment 12 has 2 parts of 333 ms.
        let edge = PlaylistEdge {
            open_msn: 12,
            open_parts: 2,
            part_target_us: 333_000,
        };
        let ask = |msn, part| BlockingReload { msn, part }.answer(&edge);
        assert_eq!(ask(11, None), ReloadAnswer::Ready);
        assert_eq!(ask(11, Some(5)), ReloadAnswer::Ready);
        assert_eq!(ask(12, Some(1)), ReloadAnswer::Ready);
        assert_eq!(ask(12, Some(2)), ReloadAnswer::Wait);
        assert_eq!(ask(12, None), ReloadAnswer::Wait);
        assert_eq!(ask(13, None), ReloadAnswer::Wait);
        assert_eq!(ask(13, Some(0)), ReloadAnswer::Wait);
        // Three seconds of 333 ms parts: 10 parts ahead at most.
        assert_eq!(advance_part_limit(333_000), 10);
        assert_eq!(ask(12, Some(11)), ReloadAnswer::Wait);
        assert_eq!(ask(12, Some(12)), ReloadAnswer::TooFar);
        // More than two segments past the last complete one.
        assert_eq!(ask(14, None), ReloadAnswer::TooFar);
        assert_eq!(ask(14, Some(0)), ReloadAnswer::TooFar);
        assert_eq!(advance_part_limit(2_000_000), 3);
        assert_eq!(reload_wait(1_000_000), std::time::Duration::from_secs(3));
    }
}
