//! Fragmented MP4 (CMAF) as a live encoder pipes it (`ffmpeg -f mp4
//! -movflags +frag_keyframe+empty_moov+default_base_moof`): the
//! initialisation section (`ftyp` and `moov`), then fragments (`moof` and
//! `mdat`), cut into segments at independent fragments.
//!
//! Sans-IO: [`FragmentReader::push`] takes bytes as they come, in any
//! pieces, and [`FragmentReader::poll_item`] hands out what is complete;
//! [`SegmentCutter`] joins fragments into segments, and [`PartCutter`]
//! makes the same cuts but hands each fragment on at once as a part of its
//! segment (low-latency live). What they guarantee:
//!
//! - **Nothing is buffered beyond its limit**: a box's declared size is
//!   checked against [`MAX_INIT_BYTES`] or [`MAX_FRAGMENT_BYTES`] as soon
//!   as its header is in, before its body is awaited; a box that says it
//!   runs to the end of the stream (size 0) is refused, since a pipe has
//!   no end to run to.
//! - **The bytes go out as they came**: the initialisation section is the
//!   stream's first bytes up to the end of `moov`, a fragment is every box
//!   from one `moof` up to the end of its `mdat`, and a segment is its
//!   fragments back to back, so the init section followed by every
//!   fragment is the input, byte for byte, up to what follows the last
//!   `mdat` (ffmpeg ends a pipe with an `mfra` index, which no segment
//!   needs; it waits in [`FragmentReader::buffered`]).
//! - **A fragment is independent** when the first sample of the video
//!   track (the first track if none is video) is a sync sample, read from
//!   the sample flags in `trun`, `tfhd` or the `trex` defaults; its
//!   duration is that track's sample durations over its timescale.
//! - **A segment starts with an independent fragment** and closes at the
//!   next independent fragment once it has reached its target duration;
//!   fragments before the first independent one are dropped (nothing can
//!   decode them) and counted.
//! - Every length read from the input is checked against the box that
//!   holds it: malformed input is an error naming the box, never a panic.

/// Largest initialisation section: a few KiB in practice (codec
/// parameters, one `trak` per track); 1 MiB leaves room for long
/// metadata.
pub const MAX_INIT_BYTES: usize = 1 << 20;

/// Largest fragment (`moof` + `mdat`): 8 s of a 16 Mb/s stream, far more
/// than a part or a segment of any live encoder.
pub const MAX_FRAGMENT_BYTES: usize = 16 << 20;

/// Largest segment a cutter makes: the HLS importer's limit.
pub const MAX_SEGMENT_BYTES: usize = crate::import::MAX_HLS_SEGMENT_BYTES as usize;

/// `sample_is_non_sync_sample` in ISO/IEC 14496-12 sample flags.
const NON_SYNC: u32 = 0x0001_0000;

/// Why a stream cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CmafError {
    #[error("the {0} box is malformed: {1}")]
    Malformed(String, &'static str),
    #[error("the {kind} box is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        kind: String,
        size: u64,
        limit: usize,
    },
    #[error("the {0} box runs to the end of the stream (size 0), which a live pipe never reaches")]
    Unbounded(String),
    #[error("a {0} box came before the initialisation section (ftyp, moov) was complete")]
    Early(String),
    #[error("no independent fragment for {0} bytes: give the encoder a shorter keyframe interval")]
    NoKeyframe(usize),
    #[error(
        "no independent fragment for {0} parts: give the encoder a shorter keyframe interval or longer fragments"
    )]
    TooManyParts(u32),
}

/// One fragment: every box from a `moof` up to the end of its `mdat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    pub bytes: Vec<u8>,
    /// Its first sample decodes alone.
    pub independent: bool,
    pub duration_us: u64,
}

/// What [`FragmentReader::poll_item`] hands out, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// The initialisation section (once, first).
    Init(Vec<u8>),
    Fragment(Fragment),
}

/// What the initialisation section says about a track.
#[derive(Clone, Copy, Debug, Default)]
struct Track {
    id: u32,
    timescale: u32,
    video: bool,
    default_duration: u32,
    default_flags: u32,
}

/// Reads a fragmented MP4 stream. See the module documentation.
#[derive(Default)]
pub struct FragmentReader {
    buf: Vec<u8>,
    /// Where the box being gathered starts in `buf`.
    start: usize,
    /// The init section gathered so far, until `moov` ends.
    init: Vec<u8>,
    tracks: Option<Vec<Track>>,
    /// The fragment being gathered (its `moof` and the boxes since).
    fragment: Vec<u8>,
    failed: Option<CmafError>,
}

struct BoxHeader {
    kind: [u8; 4],
    /// Header and body.
    size: usize,
    header: usize,
}

fn kind_name(kind: &[u8; 4]) -> String {
    kind.iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

/// The header at the start of `bytes`, if all of it is there; `limit`
/// bounds the box's whole size.
fn header(bytes: &[u8], limit: impl Fn(&[u8; 4]) -> usize) -> Result<Option<BoxHeader>, CmafError> {
    if bytes.len() < 8 {
        return Ok(None);
    }
    let size32 = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let kind = [bytes[4], bytes[5], bytes[6], bytes[7]];
    let (size, header) = match size32 {
        0 => return Err(CmafError::Unbounded(kind_name(&kind))),
        1 => {
            if bytes.len() < 16 {
                return Ok(None);
            }
            let mut large = [0u8; 8];
            large.copy_from_slice(&bytes[8..16]);
            (u64::from_be_bytes(large), 16)
        }
        n => (u64::from(n), 8),
    };
    if size < header as u64 {
        return Err(CmafError::Malformed(
            kind_name(&kind),
            "its size is smaller than its header",
        ));
    }
    let max = limit(&kind);
    if size > max as u64 {
        return Err(CmafError::TooLarge {
            kind: kind_name(&kind),
            size,
            limit: max,
        });
    }
    Ok(Some(BoxHeader {
        kind,
        size: size as usize,
        header,
    }))
}

/// The child boxes of a box body: `(kind, body)` each.
/// A child box: its type and body.
type Child<'a> = ([u8; 4], &'a [u8]);

fn children<'a>(parent: &str, mut body: &'a [u8]) -> Result<Vec<Child<'a>>, CmafError> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let h = header(body, |_| usize::MAX)?.ok_or(CmafError::Malformed(
            parent.to_owned(),
            "a child box is cut short",
        ))?;
        if h.size > body.len() {
            return Err(CmafError::Malformed(
                parent.to_owned(),
                "a child box runs past its parent",
            ));
        }
        out.push((h.kind, &body[h.header..h.size]));
        body = &body[h.size..];
    }
    Ok(out)
}

/// A big-endian reader over a box body that names the box in its errors.
struct Fields<'a> {
    kind: &'static str,
    bytes: &'a [u8],
}

impl Fields<'_> {
    fn u32(&mut self) -> Result<u32, CmafError> {
        let (head, rest) = self
            .bytes
            .split_at_checked(4)
            .ok_or(CmafError::Malformed(self.kind.to_owned(), "cut short"))?;
        self.bytes = rest;
        Ok(u32::from_be_bytes([head[0], head[1], head[2], head[3]]))
    }

    fn skip(&mut self, n: usize) -> Result<(), CmafError> {
        self.bytes = self
            .bytes
            .get(n..)
            .ok_or(CmafError::Malformed(self.kind.to_owned(), "cut short"))?;
        Ok(())
    }
}

fn tracks_of(moov: &[u8]) -> Result<Vec<Track>, CmafError> {
    let mut tracks = Vec::new();
    let mut trex = Vec::new();
    for (kind, body) in children("moov", moov)? {
        match &kind {
            b"trak" => {
                let mut t = Track::default();
                for (kind, body) in children("trak", body)? {
                    match &kind {
                        b"tkhd" => {
                            let mut f = Fields {
                                kind: "tkhd",
                                bytes: body,
                            };
                            let version = f.u32()? >> 24;
                            f.skip(if version == 1 { 16 } else { 8 })?;
                            t.id = f.u32()?;
                        }
                        b"mdia" => {
                            for (kind, body) in children("mdia", body)? {
                                let mut f = Fields {
                                    kind: "mdhd",
                                    bytes: body,
                                };
                                match &kind {
                                    b"mdhd" => {
                                        let version = f.u32()? >> 24;
                                        f.skip(if version == 1 { 16 } else { 8 })?;
                                        t.timescale = f.u32()?;
                                    }
                                    b"hdlr" => {
                                        f.kind = "hdlr";
                                        f.skip(8)?;
                                        t.video = f.u32()? == u32::from_be_bytes(*b"vide");
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                tracks.push(t);
            }
            b"mvex" => {
                for (kind, body) in children("mvex", body)? {
                    if &kind == b"trex" {
                        let mut f = Fields {
                            kind: "trex",
                            bytes: body,
                        };
                        f.skip(4)?;
                        let id = f.u32()?;
                        f.skip(4)?;
                        let duration = f.u32()?;
                        f.skip(4)?;
                        trex.push((id, duration, f.u32()?));
                    }
                }
            }
            _ => {}
        }
    }
    for (id, duration, flags) in trex {
        if let Some(t) = tracks.iter_mut().find(|t| t.id == id) {
            t.default_duration = duration;
            t.default_flags = flags;
        }
    }
    if tracks.is_empty() {
        return Err(CmafError::Malformed("moov".into(), "it has no track"));
    }
    Ok(tracks)
}

/// Whether the fragment's first sample of `track` is a sync sample, and
/// its duration in that track's timescale; `None` when the fragment has
/// no run of that track.
fn read_moof(moof: &[u8], track: &Track) -> Result<Option<(bool, u64)>, CmafError> {
    let mut found: Option<(bool, u64)> = None;
    for (kind, traf) in children("moof", moof)? {
        if &kind != b"traf" {
            continue;
        }
        let mut default_duration = track.default_duration;
        let mut default_flags = track.default_flags;
        let mut ours = false;
        for (kind, body) in children("traf", traf)? {
            match &kind {
                b"tfhd" => {
                    let mut f = Fields {
                        kind: "tfhd",
                        bytes: body,
                    };
                    let flags = f.u32()? & 0x00ff_ffff;
                    ours = f.u32()? == track.id;
                    if flags & 0x01 != 0 {
                        f.skip(8)?;
                    }
                    if flags & 0x02 != 0 {
                        f.skip(4)?;
                    }
                    if flags & 0x08 != 0 {
                        default_duration = f.u32()?;
                    }
                    if flags & 0x10 != 0 {
                        f.skip(4)?;
                    }
                    if flags & 0x20 != 0 {
                        default_flags = f.u32()?;
                    }
                }
                b"trun" if ours => {
                    let mut f = Fields {
                        kind: "trun",
                        bytes: body,
                    };
                    let flags = f.u32()? & 0x00ff_ffff;
                    let count = f.u32()? as usize;
                    if flags & 0x01 != 0 {
                        f.skip(4)?;
                    }
                    let first_flags = if flags & 0x04 != 0 {
                        Some(f.u32()?)
                    } else {
                        None
                    };
                    let each = [0x100u32, 0x200, 0x400, 0x800]
                        .iter()
                        .filter(|b| flags & **b != 0)
                        .count()
                        * 4;
                    // The entries must fit in the box before any is read.
                    if count.checked_mul(each).is_none_or(|n| n > f.bytes.len()) {
                        return Err(CmafError::Malformed(
                            "trun".into(),
                            "its sample count runs past the box",
                        ));
                    }
                    // Without per-sample durations the run's time is a
                    // product: a count of 2^32 with no entries costs
                    // nothing to read.
                    let mut duration = if flags & 0x100 == 0 {
                        (count as u64).saturating_mul(u64::from(default_duration))
                    } else {
                        0
                    };
                    let mut first_sample_flags = None;
                    // Entries to read: bounded by the box (checked above).
                    let entries = if each == 0 { 0 } else { count };
                    for i in 0..entries {
                        if flags & 0x100 != 0 {
                            duration = duration.saturating_add(u64::from(f.u32()?));
                        }
                        if flags & 0x200 != 0 {
                            f.skip(4)?;
                        }
                        let sample_flags = if flags & 0x400 != 0 {
                            Some(f.u32()?)
                        } else {
                            None
                        };
                        if i == 0 {
                            first_sample_flags = sample_flags;
                        }
                        if flags & 0x800 != 0 {
                            f.skip(4)?;
                        }
                    }
                    let sync =
                        first_flags.or(first_sample_flags).unwrap_or(default_flags) & NON_SYNC == 0;
                    found = Some(match found {
                        // Later runs add their time; the first sample is
                        // the first run's.
                        Some((independent, d)) => (independent, d.saturating_add(duration)),
                        None if count == 0 => continue,
                        None => (sync, duration),
                    });
                }
                _ => {}
            }
        }
    }
    Ok(found)
}

impl FragmentReader {
    pub fn new() -> FragmentReader {
        FragmentReader::default()
    }

    /// Takes the next bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        // What was handed out goes; what is left is at most one box.
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held and not handed out yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start + self.init.len() + self.fragment.len()
    }

    /// The next complete item, `Ok(None)` until more bytes come. An error
    /// is final: every later call returns it again.
    pub fn poll_item(&mut self) -> Result<Option<Item>, CmafError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.read();
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn read(&mut self) -> Result<Option<Item>, CmafError> {
        loop {
            let initialised = self.tracks.is_some();
            let gathered = self.init.len() + self.fragment.len();
            // The section or fragment being gathered, this box included,
            // stays within its limit.
            let Some(h) = header(&self.buf[self.start..], |_| {
                if initialised {
                    MAX_FRAGMENT_BYTES.saturating_sub(gathered)
                } else {
                    MAX_INIT_BYTES.saturating_sub(gathered)
                }
            })?
            else {
                return Ok(None);
            };
            if self.buf.len() - self.start < h.size {
                return Ok(None);
            }
            let whole = &self.buf[self.start..self.start + h.size];
            let body = &whole[h.header..];
            self.start += h.size;
            let Some(tracks) = &self.tracks else {
                if &h.kind == b"moof" || &h.kind == b"mdat" {
                    return Err(CmafError::Early(kind_name(&h.kind)));
                }
                self.init.extend_from_slice(whole);
                if &h.kind == b"moov" {
                    self.tracks = Some(tracks_of(body)?);
                    return Ok(Some(Item::Init(std::mem::take(&mut self.init))));
                }
                continue;
            };
            match &h.kind {
                b"moof" if !self.fragment.is_empty() && self.has_moof() => {
                    return Err(CmafError::Malformed(
                        "moof".into(),
                        "a second moof came before the first one's mdat",
                    ));
                }
                b"mdat" => {
                    if !self.has_moof() {
                        return Err(CmafError::Malformed(
                            "mdat".into(),
                            "it came without a moof before it",
                        ));
                    }
                    self.fragment.extend_from_slice(whole);
                    let fragment = std::mem::take(&mut self.fragment);
                    let track = tracks
                        .iter()
                        .find(|t| t.video)
                        .or(tracks.first())
                        .copied()
                        .unwrap_or_default();
                    let moof = moof_body(&fragment)?;
                    let (independent, duration) = read_moof(moof, &track)?.unwrap_or((false, 0));
                    let duration_us = if track.timescale == 0 {
                        0
                    } else {
                        duration.saturating_mul(1_000_000) / u64::from(track.timescale)
                    };
                    return Ok(Some(Item::Fragment(Fragment {
                        bytes: fragment,
                        independent,
                        duration_us,
                    })));
                }
                _ => self.fragment.extend_from_slice(whole),
            }
        }
    }

    /// Whether the fragment being gathered has its `moof` yet.
    fn has_moof(&self) -> bool {
        moof_body(&self.fragment).is_ok()
    }
}

/// The body of the first `moof` among `boxes` (boxes such as `styp` or
/// `prft` may come before it).
fn moof_body(mut boxes: &[u8]) -> Result<&[u8], CmafError> {
    while let Some(h) = header(boxes, |_| usize::MAX)? {
        if h.size > boxes.len() {
            break;
        }
        if &h.kind == b"moof" {
            return Ok(&boxes[h.header..h.size]);
        }
        boxes = &boxes[h.size..];
    }
    Err(CmafError::Malformed("fragment".into(), "it has no moof"))
}

/// A part of a cut segment: one fragment, where it lies in the segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub offset: usize,
    pub len: usize,
    pub duration_us: u64,
    pub independent: bool,
}

/// A segment: fragments back to back, the first independent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutSegment {
    pub bytes: Vec<u8>,
    pub duration_us: u64,
    pub parts: Vec<Part>,
}

/// Whether `fragment` closes a segment of `current_us` so far: it is
/// independent and the segment has reached its target.
fn closes(fragment: &Fragment, current_us: Option<u64>, target_us: u64) -> bool {
    fragment.independent && current_us.is_some_and(|d| d >= target_us)
}

/// A fragment placed in its segment ([`PartCutter::push`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedPart {
    /// The segment, counted from 0 at the first independent fragment.
    pub segment: u64,
    /// Its place in the segment, from 0 (always independent).
    pub index: u32,
    pub fragment: Fragment,
}

/// Where the segment under way stands ([`PartCutter`]).
#[derive(Clone, Copy, Debug)]
struct OpenSegment {
    segment: u64,
    parts: u32,
    duration_us: u64,
    bytes: usize,
}

/// Makes [`SegmentCutter`]'s cuts, but hands each fragment on at once as
/// a part of its segment: low-latency live moves parts as they exist. A
/// segment (its parts back to back) stays within [`MAX_SEGMENT_BYTES`]
/// and [`shoal_protocol::channel::MAX_PARTS_PER_SEGMENT`] parts.
pub struct PartCutter {
    target_us: u64,
    current: Option<OpenSegment>,
    /// Fragments dropped before the first independent one.
    pub dropped: u64,
}

impl PartCutter {
    pub fn new(target_us: u64) -> PartCutter {
        PartCutter {
            target_us,
            current: None,
            dropped: 0,
        }
    }

    /// Places the next fragment; `None` for one dropped before the first
    /// independent fragment.
    pub fn push(&mut self, fragment: Fragment) -> Result<Option<PlacedPart>, CmafError> {
        let duration = self.current.map(|c| c.duration_us);
        let next = match self.current {
            None if !fragment.independent => {
                self.dropped += 1;
                return Ok(None);
            }
            None => OpenSegment {
                segment: 0,
                parts: 0,
                duration_us: 0,
                bytes: 0,
            },
            Some(c) if closes(&fragment, duration, self.target_us) => OpenSegment {
                segment: c.segment + 1,
                parts: 0,
                duration_us: 0,
                bytes: 0,
            },
            Some(c) => c,
        };
        let bytes = next.bytes + fragment.bytes.len();
        if bytes > MAX_SEGMENT_BYTES {
            return Err(CmafError::NoKeyframe(bytes));
        }
        if next.parts >= shoal_protocol::channel::MAX_PARTS_PER_SEGMENT {
            return Err(CmafError::TooManyParts(next.parts + 1));
        }
        self.current = Some(OpenSegment {
            parts: next.parts + 1,
            duration_us: next.duration_us.saturating_add(fragment.duration_us),
            bytes,
            ..next
        });
        Ok(Some(PlacedPart {
            segment: next.segment,
            index: next.parts,
            fragment,
        }))
    }
}

/// Joins fragments into segments of about a target duration. See the
/// module documentation.
pub struct SegmentCutter {
    target_us: u64,
    current: Option<CutSegment>,
    /// Fragments dropped before the first independent one.
    pub dropped: u64,
}

impl SegmentCutter {
    pub fn new(target_us: u64) -> SegmentCutter {
        SegmentCutter {
            target_us,
            current: None,
            dropped: 0,
        }
    }

    /// Adds the next fragment; returns the segment it closed, if any.
    pub fn push(&mut self, fragment: Fragment) -> Result<Option<CutSegment>, CmafError> {
        let current_us = self.current.as_ref().map(|c| c.duration_us);
        let closed = if closes(&fragment, current_us, self.target_us) {
            self.current.take()
        } else {
            None
        };
        let Some(current) = &mut self.current else {
            if !fragment.independent {
                self.dropped += 1;
                return Ok(closed);
            }
            self.current = Some(CutSegment {
                parts: vec![Part {
                    offset: 0,
                    len: fragment.bytes.len(),
                    duration_us: fragment.duration_us,
                    independent: true,
                }],
                duration_us: fragment.duration_us,
                bytes: fragment.bytes,
            });
            return Ok(closed);
        };
        if current.bytes.len() + fragment.bytes.len() > MAX_SEGMENT_BYTES {
            return Err(CmafError::NoKeyframe(
                current.bytes.len() + fragment.bytes.len(),
            ));
        }
        current.parts.push(Part {
            offset: current.bytes.len(),
            len: fragment.bytes.len(),
            duration_us: fragment.duration_us,
            independent: fragment.independent,
        });
        current.duration_us += fragment.duration_us;
        current.bytes.extend_from_slice(&fragment.bytes);
        Ok(closed)
    }

    /// The segment under way, at the end of the stream.
    pub fn finish(&mut self) -> Option<CutSegment> {
        self.current.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn full(version_flags: u32, fields: &[u32]) -> Vec<u8> {
        let mut out = version_flags.to_be_bytes().to_vec();
        for f in fields {
            out.extend_from_slice(&f.to_be_bytes());
        }
        out
    }

    /// An init section with an audio track 1 and a video track 2 at
    /// 90 kHz whose samples are non-sync unless a fragment says otherwise.
    fn init() -> Vec<u8> {
        let trak = |id: u32, handler: &[u8; 4], timescale: u32| {
            let tkhd = mp4_box(b"tkhd", &full(0, &[0, 0, id]));
            let mdhd = mp4_box(b"mdhd", &full(0, &[0, 0, timescale, 0]));
            let mut hdlr = full(0, &[0]);
            hdlr.extend_from_slice(handler);
            let mdia = mp4_box(b"mdia", &[mdhd, mp4_box(b"hdlr", &hdlr)].concat());
            mp4_box(b"trak", &[tkhd, mdia].concat())
        };
        let trex = mp4_box(b"trex", &full(0, &[2, 1, 3000, 0, NON_SYNC]));
        let moov = mp4_box(
            b"moov",
            &[
                trak(1, b"soun", 48_000),
                trak(2, b"vide", 90_000),
                mp4_box(b"mvex", &trex),
            ]
            .concat(),
        );
        [mp4_box(b"ftyp", b"isom\0\0\0\0"), moov].concat()
    }

    /// A fragment of `samples` video samples of 3000 ticks (1/30 s),
    /// the first a sync sample if `sync`, behind an audio run.
    fn fragment(samples: u32, sync: bool) -> Vec<u8> {
        let audio = mp4_box(
            b"traf",
            &[
                mp4_box(b"tfhd", &full(0x02_0000, &[1])),
                mp4_box(b"trun", &full(0x100, &[1, 1024])),
            ]
            .concat(),
        );
        let first = if sync { 0x0200_0000 } else { NON_SYNC };
        let video = mp4_box(
            b"traf",
            &[
                mp4_box(b"tfhd", &full(0x02_0000, &[2])),
                mp4_box(b"trun", &full(0x04, &[samples, first])),
            ]
            .concat(),
        );
        let moof = mp4_box(b"moof", &[audio, video].concat());
        [moof, mp4_box(b"mdat", &[7u8; 100])].concat()
    }

    fn read_all(reader: &mut FragmentReader) -> Vec<Item> {
        let mut out = Vec::new();
        while let Some(item) = reader.poll_item().unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn the_stream_comes_out_as_init_then_fragments_whatever_the_pieces() {
        let stream = [init(), fragment(30, true), fragment(30, false)].concat();
        for piece in [1, 7, 64, stream.len()] {
            let mut reader = FragmentReader::new();
            let mut items = Vec::new();
            for chunk in stream.chunks(piece) {
                reader.push(chunk);
                items.extend(read_all(&mut reader));
            }
            assert_eq!(items.len(), 3, "pieces of {piece}");
            assert_eq!(items[0], Item::Init(init()));
            let Item::Fragment(a) = &items[1] else {
                panic!()
            };
            let Item::Fragment(b) = &items[2] else {
                panic!()
            };
            assert!(a.independent && !b.independent);
            // 30 samples of 3000 ticks at 90 kHz.
            assert_eq!((a.duration_us, b.duration_us), (1_000_000, 1_000_000));
            assert_eq!([init(), a.bytes.clone(), b.bytes.clone()].concat(), stream);
            assert_eq!(reader.buffered(), 0);
        }
    }

    #[test]
    fn segments_close_at_an_independent_fragment_past_the_target() {
        let mut cutter = SegmentCutter::new(2_000_000);
        let frag = |sync| Fragment {
            bytes: fragment(15, sync),
            independent: sync,
            duration_us: 500_000,
        };
        let mut cut = Vec::new();
        // Dropped: nothing decodes before the first keyframe.
        for sync in [false, true, false, false, true, false, false, true, true] {
            cut.extend(cutter.push(frag(sync)).unwrap());
        }
        assert_eq!(cutter.dropped, 1);
        // 0.5 + 0.5 + 0.5 s is short of 2 s at the second keyframe; the
        // third closes 3 s; the fourth comes 0.5 s into the next.
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].duration_us, 3_000_000);
        assert_eq!(cut[0].parts.len(), 6);
        assert!(cut[0].parts[0].independent && cut[0].parts[3].independent);
        let last = cutter.finish().unwrap();
        assert_eq!(last.parts.len(), 2);
        for s in cut.iter().chain([&last]) {
            let mut at = 0;
            for p in &s.parts {
                assert_eq!(p.offset, at);
                at += p.len;
            }
            assert_eq!(at, s.bytes.len());
        }
    }

    #[test]
    fn parts_are_placed_where_the_segment_cutter_cuts() {
        let frag = |sync| Fragment {
            bytes: fragment(15, sync),
            independent: sync,
            duration_us: 500_000,
        };
        let pattern = [false, true, false, false, true, false, false, true, true];
        let mut segments = SegmentCutter::new(2_000_000);
        let mut cut: Vec<CutSegment> = Vec::new();
        let mut parts = PartCutter::new(2_000_000);
        let mut placed = Vec::new();
        for sync in pattern {
            cut.extend(segments.push(frag(sync)).unwrap());
            placed.extend(parts.push(frag(sync)).unwrap());
        }
        cut.extend(segments.finish());
        assert_eq!(parts.dropped, 1);
        let places: Vec<(u64, u32)> = placed.iter().map(|p| (p.segment, p.index)).collect();
        assert_eq!(
            places,
            vec![
                (0, 0),
                (0, 1),
                (0, 2),
                (0, 3),
                (0, 4),
                (0, 5),
                (1, 0),
                (1, 1)
            ]
        );
        // A segment is its parts back to back.
        for (n, s) in cut.iter().enumerate() {
            let joined: Vec<u8> = placed
                .iter()
                .filter(|p| p.segment == n as u64)
                .flat_map(|p| p.fragment.bytes.clone())
                .collect();
            assert_eq!(joined, s.bytes);
        }
        // A stream that never brings another keyframe runs out of parts.
        let mut parts = PartCutter::new(2_000_000);
        let limit = shoal_protocol::channel::MAX_PARTS_PER_SEGMENT;
        parts.push(frag(true)).unwrap();
        for _ in 1..limit {
            parts.push(frag(false)).unwrap();
        }
        assert_eq!(
            parts.push(frag(false)),
            Err(CmafError::TooManyParts(limit + 1))
        );
    }

    #[test]
    fn hostile_sizes_are_refused_before_anything_is_buffered() {
        let mut huge = mp4_box(b"ftyp", b"isom");
        huge[..4].copy_from_slice(&((MAX_INIT_BYTES + 1) as u32).to_be_bytes());
        let mut r = FragmentReader::new();
        r.push(&huge[..8]);
        assert!(matches!(r.poll_item(), Err(CmafError::TooLarge { .. })));
        // The error stays.
        assert!(r.poll_item().is_err());

        let mut r = FragmentReader::new();
        r.push(&[0, 0, 0, 0, b'm', b'o', b'o', b'v']);
        assert_eq!(r.poll_item(), Err(CmafError::Unbounded("moov".into())));

        let mut r = FragmentReader::new();
        r.push(&[0, 0, 0, 4, b'f', b't', b'y', b'p']);
        assert!(matches!(r.poll_item(), Err(CmafError::Malformed(..))));

        let mut r = FragmentReader::new();
        r.push(&fragment(1, true));
        assert_eq!(r.poll_item(), Err(CmafError::Early("moof".into())));

        // A fragment's boxes together stay within the limit: a moof after
        // a prefix box of nearly all of it is refused by its header.
        let mut r = FragmentReader::new();
        r.push(&init());
        r.poll_item().unwrap();
        let prefix = mp4_box(b"styp", &vec![0; MAX_FRAGMENT_BYTES - 100]);
        r.push(&prefix);
        assert_eq!(r.poll_item(), Ok(None));
        r.push(&mp4_box(b"moof", &[0; 200])[..8]);
        assert!(matches!(r.poll_item(), Err(CmafError::TooLarge { kind, .. }) if kind == "moof"));
        assert!(r.buffered() <= MAX_FRAGMENT_BYTES);

        // A run of 2^32 - 1 samples with no entries: its time is the
        // default duration times the count, found without a loop over it.
        let mut r = FragmentReader::new();
        r.push(&init());
        r.poll_item().unwrap();
        let traf = mp4_box(
            b"traf",
            &[
                mp4_box(b"tfhd", &full(0, &[2])),
                mp4_box(b"trun", &full(0, &[u32::MAX])),
            ]
            .concat(),
        );
        r.push(&[mp4_box(b"moof", &traf), mp4_box(b"mdat", b"x")].concat());
        let Ok(Some(Item::Fragment(f))) = r.poll_item() else {
            panic!("a fragment")
        };
        // trex: 3000 ticks of 90 kHz a sample; non-sync by default.
        assert_eq!(
            f.duration_us,
            u64::from(u32::MAX) * 3000 * 1_000_000 / 90_000
        );
        assert!(!f.independent);

        // A run whose sample count runs past its box.
        let mut r = FragmentReader::new();
        r.push(&init());
        r.poll_item().unwrap();
        let traf = mp4_box(
            b"traf",
            &[
                mp4_box(b"tfhd", &full(0, &[2])),
                mp4_box(b"trun", &full(0x100, &[u32::MAX, 1])),
            ]
            .concat(),
        );
        r.push(&[mp4_box(b"moof", &traf), mp4_box(b"mdat", b"x")].concat());
        assert!(matches!(r.poll_item(), Err(CmafError::Malformed(k, _)) if k == "trun"));
    }

    #[test]
    fn a_segment_without_a_keyframe_for_too_long_is_an_error() {
        let mut cutter = SegmentCutter::new(1_000_000);
        let big = |sync| Fragment {
            bytes: vec![0; MAX_SEGMENT_BYTES / 2 + 1],
            independent: sync,
            duration_us: 100_000,
        };
        cutter.push(big(true)).unwrap();
        assert!(matches!(
            cutter.push(big(false)),
            Err(CmafError::NoKeyframe(_))
        ));
    }
}
