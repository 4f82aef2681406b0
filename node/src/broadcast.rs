//! Broadcasting a live channel from the folder a live encoder writes.
//!
//! An encoder such as `ffmpeg -f hls` writes each segment, closes it, and
//! only then rewrites its media playlist to list it (through a temporary
//! file renamed over the old one). So a segment listed in the playlist is
//! complete, and a segment still being written is never listed: the
//! broadcaster polls the playlists and imports only what they list. For
//! each new segment it codes and stores the shards, signs an announcement
//! and publishes it on the rendition's topic; then it signs a new channel
//! record (renditions, origins, the latest segments) and puts it in the
//! DHT for viewers who join later.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_protocol::channel::{
    Announcement, ChannelKey, ChannelRecord, LiveRendition, Origin, PartOf, RECORD_WINDOW,
    RecentSegment, is_safe_relative_path,
};
use shoal_storage::cmaf::{FragmentReader, Item, PartCutter, SegmentCutter};
use shoal_storage::hls::{self, Playlist};
use shoal_storage::import::MAX_HLS_SEGMENT_BYTES;
use shoal_storage::{ImportOptions, codec::Encoder, import_segment};
use tokio::sync::mpsc;

use crate::live::unix_ms;
use crate::{Node, NodeError};

/// How often the encoder's playlists are read: at most this is added to a
/// segment's latency, for the cost of reading a few hundred bytes twenty
/// times a second.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Segments per rendition the broadcaster keeps in its store after
/// publishing them (the node's machine lets older ones go).
pub use shoal_protocol::live::KEEP_SEGMENTS;

/// How long a channel record stays valid without a newer one: a viewer
/// that finds only an older record knows the channel has stopped.
const RECORD_LIFETIME: Duration = Duration::from_secs(60);

/// What to broadcast.
#[derive(Clone, Debug)]
pub struct BroadcastOptions {
    /// The folder the encoder writes.
    pub dir: PathBuf,
    /// The top playlist in `dir` (master or media); found when `None`.
    pub playlist: Option<String>,
    /// HTTP origins serving `dir`.
    pub origins: Vec<String>,
    pub import: ImportOptions,
    pub name: String,
}

impl BroadcastOptions {
    /// Checks what can be checked before the encoder has written anything:
    /// the folder exists, the origins are HTTP URLs.
    pub fn validate(&self) -> Result<(), BroadcastError> {
        if !self.dir.is_dir() {
            return Err(input_err(&self.dir, "not a folder"));
        }
        for o in &self.origins {
            shoal_protocol::channel::check_origin(o).map_err(BroadcastError::Origin)?;
        }
        Ok(())
    }
}

/// One published segment, or part of one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Published {
    pub rendition: u16,
    pub sequence: u64,
    pub uri: String,
    pub bytes: u64,
    pub manifest: String,
    /// Where it sits in its segment, when it is a part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<PartOf>,
}

/// Why a broadcast stopped.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    #[error("{path}: {detail}")]
    Input { path: PathBuf, detail: String },
    #[error("{0}")]
    Origin(String),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("storing a segment: {0}")]
    Import(#[from] shoal_storage::ImportError),
}

struct RenditionState {
    info: LiveRendition,
    /// Path of the media playlist inside the folder.
    playlist: PathBuf,
    /// The fMP4 initialisation section stored for `info.init`, by the URI
    /// the playlist gave it.
    init_uri: Option<String>,
    /// Highest sequence published.
    last: Option<u64>,
    recent: VecDeque<RecentSegment>,
}

/// Broadcasts until the encoder ends the stream (EXT-X-ENDLIST in every
/// rendition) or `events` is closed (the caller went away). Each published
/// segment is reported on `events`.
pub async fn broadcast(
    node: Node,
    key: ChannelKey,
    options: BroadcastOptions,
    events: mpsc::Sender<Published>,
) -> Result<(), BroadcastError> {
    options.validate()?;
    let channel = key.id();
    let top = loop {
        match find_playlist(&options.dir, options.playlist.as_deref())? {
            Some(p) => break p,
            None => {
                if events.is_closed() {
                    return Ok(());
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    };
    let mut renditions = read_renditions(&options.dir, &top)?;
    tracing::info!(%channel, renditions = renditions.len(), playlist = %top, "broadcasting");
    let mut encoder = Encoder::default();
    let mut record_sequence = 0u64;
    let mut target_duration_us = 0u64;
    loop {
        if events.is_closed() {
            return Ok(());
        }
        // This round's new segments, imported, with their announcements.
        let mut imported: Vec<(u16, Vec<u8>, Published)> = Vec::new();
        let mut ended = 0;
        for (r, state) in renditions.iter_mut().enumerate() {
            let media = match read_media(&options.dir, &state.playlist) {
                Ok(m) => m,
                Err(e) => {
                    // Encoders replace playlists atomically, so this is a
                    // real problem; say so, and try again next time.
                    tracing::warn!(%channel, error = %e, "cannot read the encoder's playlist");
                    continue;
                }
            };
            if media.ended {
                ended += 1;
            }
            if let Err(e) = import_init(&node, &options, &mut encoder, state, &media).await {
                // Without it no player can decode the segments: try again
                // next time rather than announce them.
                tracing::warn!(%channel, error = %e, "cannot store the initialisation section");
                continue;
            }
            let first_new = match state.last {
                Some(last) => last + 1,
                // Starting on a running encoder: the latest few only.
                None => (media.media_sequence + media.segments.len() as u64)
                    .saturating_sub(RECORD_WINDOW as u64),
            };
            for (i, seg) in media.segments.iter().enumerate() {
                let sequence = media.media_sequence + i as u64;
                if sequence < first_new {
                    continue;
                }
                target_duration_us = target_duration_us.max(seg.duration_us);
                let (announcement, published) = import_new_segment(
                    &node,
                    &key,
                    &options,
                    &mut encoder,
                    state,
                    r as u16,
                    sequence,
                    seg,
                )
                .await?;
                imported.push((r as u16, announcement, published));
            }
        }
        if !imported.is_empty() {
            record_sequence += 1;
            let record = Record {
                name: &options.name,
                origins: &options.origins,
                import: &options.import,
                sequence: record_sequence,
                target_duration_us,
            };
            if !publish(&node, &key, Some(&record), &renditions, imported, &events).await? {
                return Ok(());
            }
        }
        if ended == renditions.len() && !renditions.is_empty() {
            tracing::info!(%channel, "the encoder ended the stream");
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        // A master playlist may gain renditions only by restarting the
        // encoder; re-reading it each time keeps names right if it does.
        if renditions.is_empty() {
            renditions = read_renditions(&options.dir, &top)?;
        }
    }
}

/// What to broadcast from a fragmented MP4 stream.
#[derive(Clone, Debug)]
pub struct Fmp4Options {
    /// Where the stream comes from (a FIFO's path, or what an app calls
    /// its stream): named in errors.
    pub source: PathBuf,
    /// Segments close at the first keyframe past this.
    pub segment_duration: Duration,
    /// Low-latency live: every fragment is announced as a part of its
    /// segment the moment it is in, rather than whole segments as they
    /// close.
    pub parts: bool,
    /// HTTP origins serving the channel as a gateway lays it out
    /// (`<origin>/<rendition>/<name>`: a CDN in front of the
    /// broadcaster's `http://host:port/live/<channel>`), for viewers whose
    /// peers are too slow.
    pub origins: Vec<String>,
    pub import: ImportOptions,
    pub name: String,
}

/// Bytes read from the stream at once: a pipe's buffer.
const STREAM_READ: usize = 64 << 10;

/// How often a pipe no encoder has opened yet is looked at again.
const WRITER_POLL: Duration = Duration::from_millis(100);

/// Opens what `broadcast --fmp4` names: a FIFO without blocking (no
/// thread waits in `open` for the encoder, so the node can always stop;
/// [`broadcast_fmp4`] waits for the first bytes), or a regular file.
pub async fn open_fmp4_source(
    path: &Path,
) -> std::io::Result<Box<dyn tokio::io::AsyncRead + Unpin + Send>> {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::metadata(path)?.file_type().is_fifo() {
        let pipe = tokio::net::unix::pipe::OpenOptions::new().open_receiver(path)?;
        return Ok(Box::new(pipe));
    }
    Ok(Box::new(tokio::fs::File::open(path).await?))
}

/// One rendition of a fragmented MP4 broadcast: its stream's reader and
/// cutter, and what has been published of it.
struct Fmp4Rendition {
    reader: FragmentReader,
    cutter: SegmentCutter,
    /// Low-latency live: fragments go out as parts.
    parts: Option<PartCutter>,
    /// The segment under way (parts mode): its duration and bytes.
    open_us: u64,
    open_bytes: u64,
    next_unit: u64,
    ended: bool,
}

impl Fmp4Rendition {
    /// Notes a closed segment: the rendition's peak rate (the master
    /// playlist's `BANDWIDTH`) and the channel's target duration.
    fn closed(state: &mut RenditionState, target_us: &mut u64, bytes: u64, duration_us: u64) {
        *target_us = (*target_us).max(duration_us);
        if let Some(rate) = bytes.saturating_mul(8_000_000).checked_div(duration_us) {
            state.info.bandwidth = Some(state.info.bandwidth.unwrap_or(0).max(rate));
        }
    }
}

/// Reads `input` in chunks onto `tx` as rendition `rendition`'s, until it
/// ends (an empty chunk) or fails. Nothing before the first byte means no
/// encoder yet (a FIFO reads as ended until one opens it): it is looked
/// at again every [`WRITER_POLL`].
async fn read_stream<R: tokio::io::AsyncRead + Unpin>(
    rendition: usize,
    mut input: R,
    tx: mpsc::Sender<(usize, std::io::Result<Vec<u8>>)>,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; STREAM_READ];
    let mut started = false;
    loop {
        let read = input.read(&mut buf).await;
        let chunk = match read {
            Ok(0) if !started => {
                tokio::time::sleep(WRITER_POLL).await;
                continue;
            }
            Ok(n) => Ok(buf[..n].to_vec()),
            Err(e) => Err(e),
        };
        started = true;
        let last = !matches!(&chunk, Ok(c) if !c.is_empty());
        if tx.send((rendition, chunk)).await.is_err() || last {
            return;
        }
    }
}

/// Broadcasts fragmented MP4 streams, one rendition each (`ffmpeg ... -f
/// mp4 -movflags +frag_keyframe+empty_moov+default_base_moof` into a
/// pipe), until every stream ends or `events` is closed: each
/// rendition's initialisation section is stored and named in the channel
/// record, and its fragments are cut into segments of about
/// `segment_duration` (`shoal_storage::cmaf`), each published as it
/// closes, named `<sequence>.m4s`; or, with [`Fmp4Options::parts`], each
/// fragment is published as a part as soon as it is in, named
/// `<segment>.<part>.m4s`, and the channel record is stored again as
/// segments close. A rendition's `BANDWIDTH` is the peak rate of its
/// closed segments. Until its first byte a stream is waited for (an
/// encoder not started yet); after it, its end ends its rendition.
/// Invalid input stops the broadcast with an error naming the stream and
/// the box; what was published stays.
pub async fn broadcast_fmp4<R>(
    node: Node,
    key: ChannelKey,
    options: Fmp4Options,
    inputs: Vec<R>,
    events: mpsc::Sender<Published>,
) -> Result<(), BroadcastError>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let channel = key.id();
    let count = inputs.len();
    if count == 0 || count > shoal_protocol::channel::MAX_LIVE_RENDITIONS {
        return Err(input_err(
            &options.source,
            format!(
                "{count} streams: a broadcast takes 1 to {}",
                shoal_protocol::channel::MAX_LIVE_RENDITIONS
            ),
        ));
    }
    tracing::info!(%channel, source = %options.source.display(), renditions = count, "broadcasting fragmented MP4");
    let target_us = u64::try_from(options.segment_duration.as_micros()).unwrap_or(u64::MAX);
    let mut streams: Vec<Fmp4Rendition> = (0..count)
        .map(|_| Fmp4Rendition {
            reader: FragmentReader::new(),
            cutter: SegmentCutter::new(target_us),
            parts: options.parts.then(|| PartCutter::new(target_us)),
            open_us: 0,
            open_bytes: 0,
            next_unit: 0,
            ended: false,
        })
        .collect();
    let mut renditions: Vec<RenditionState> = (0..count)
        .map(|i| {
            // As a gateway lays a channel out, so that an origin in front
            // of one serves every name the announcements give.
            let playlist = format!("{i}/index.m3u8");
            RenditionState {
                info: LiveRendition {
                    playlist: playlist.clone(),
                    segment_extension: "m4s".into(),
                    ..LiveRendition::default()
                },
                playlist: PathBuf::from(playlist),
                init_uri: None,
                last: None,
                recent: VecDeque::new(),
            }
        })
        .collect();
    // The readers stop with the broadcast (the set is dropped).
    let (tx, mut chunks) = mpsc::channel(2 * count);
    let mut readers = tokio::task::JoinSet::new();
    for (i, input) in inputs.into_iter().enumerate() {
        readers.spawn(read_stream(i, input, tx.clone()));
    }
    drop(tx);
    let mut encoder = Encoder::default();
    let mut record_sequence = 0u64;
    // Parts are listed before their segment closes; the playlist's
    // target duration must cover it from the start.
    let mut target_duration_us = if options.parts { target_us } else { 0 };
    // In parts mode the record is stored again only when it has news: the
    // first time, a rendition's initialisation section, a closed segment.
    let mut record_due = true;
    loop {
        // A silent pipe does not keep a broadcast nobody follows.
        let (r, chunk) = tokio::select! {
            c = chunks.recv() => match c {
                Some(c) => c,
                None => return Ok(()),
            },
            () = events.closed() => return Ok(()),
        };
        let source = if count == 1 {
            options.source.clone()
        } else {
            options.source.join(format!("rendition {r}"))
        };
        let chunk = chunk.map_err(|e| input_err(&source, e))?;
        let stream = &mut streams[r];
        let state = &mut renditions[r];
        // What to publish: (bytes, duration, part).
        let mut units: Vec<(Vec<u8>, u64, Option<PartOf>)> = Vec::new();
        if chunk.is_empty() {
            stream.ended = true;
            units.extend(
                stream
                    .cutter
                    .finish()
                    .map(|s| (s.bytes, s.duration_us, None)),
            );
            let dropped = stream.cutter.dropped + stream.parts.as_ref().map_or(0, |p| p.dropped);
            if dropped > 0 {
                tracing::warn!(%channel, rendition = r, fragments = dropped, "dropped fragments before the first keyframe");
            }
        } else {
            stream.reader.push(&chunk);
        }
        while let Some(item) = stream
            .reader
            .poll_item()
            .map_err(|e| input_err(&source, e))?
        {
            match item {
                Item::Init(bytes) => {
                    let stored = store_segment(
                        &node,
                        &options.import,
                        &mut encoder,
                        &source,
                        bytes,
                        0,
                        None,
                    )
                    .await?;
                    tracing::info!(%channel, rendition = r, manifest = %stored.manifest_cid, "stored the initialisation section");
                    state.info.init = Some(stored.manifest_cid);
                    record_due = true;
                }
                Item::Fragment(f) => {
                    let Some(parts) = &mut stream.parts else {
                        let closed = stream.cutter.push(f).map_err(|e| input_err(&source, e))?;
                        units.extend(closed.map(|s| (s.bytes, s.duration_us, None)));
                        continue;
                    };
                    let Some(p) = parts.push(f).map_err(|e| input_err(&source, e))? else {
                        continue;
                    };
                    if p.index == 0 && p.segment > 0 {
                        // The segment before closed: the record says so.
                        Fmp4Rendition::closed(
                            state,
                            &mut target_duration_us,
                            stream.open_bytes,
                            stream.open_us,
                        );
                        stream.open_us = 0;
                        stream.open_bytes = 0;
                        record_due = true;
                    }
                    stream.open_us = stream.open_us.saturating_add(p.fragment.duration_us);
                    let longest = state.info.part_target_us.unwrap_or(0);
                    if p.fragment.duration_us > longest {
                        state.info.part_target_us = Some(p.fragment.duration_us);
                        record_due = true;
                    }
                    stream.open_bytes += p.fragment.bytes.len() as u64;
                    let part = PartOf {
                        segment: p.segment,
                        index: p.index,
                        independent: p.fragment.independent,
                    };
                    units.push((p.fragment.bytes, p.fragment.duration_us, Some(part)));
                }
            }
        }
        let mut imported = Vec::new();
        for (bytes, duration_us, part) in units {
            let sequence = stream.next_unit;
            stream.next_unit += 1;
            let uri = match part {
                Some(p) => format!("{}.{}.m4s", p.segment, p.index),
                None => {
                    Fmp4Rendition::closed(
                        state,
                        &mut target_duration_us,
                        bytes.len() as u64,
                        duration_us,
                    );
                    format!("{sequence}.m4s")
                }
            };
            let new = NewSegment {
                rendition: r as u16,
                sequence,
                uri: &uri,
                duration_us,
                part,
            };
            let (announcement, published) = announce_segment(
                &node,
                &key,
                &options.import,
                &mut encoder,
                state,
                new,
                &source,
                bytes,
            )
            .await?;
            imported.push((r as u16, announcement, published));
        }
        if !imported.is_empty() {
            let record = (record_due || !options.parts).then(|| {
                record_due = false;
                record_sequence += 1;
                Record {
                    name: &options.name,
                    origins: &options.origins,
                    import: &options.import,
                    sequence: record_sequence,
                    target_duration_us,
                }
            });
            if !publish(&node, &key, record.as_ref(), &renditions, imported, &events).await? {
                return Ok(());
            }
        }
        if streams.iter().all(|s| s.ended) {
            tracing::info!(%channel, "the encoder ended the stream");
            return Ok(());
        }
    }
}

/// What a channel record says beside its renditions.
struct Record<'a> {
    name: &'a str,
    origins: &'a [String],
    import: &'a ImportOptions,
    sequence: u64,
    target_duration_us: u64,
}

/// Signs and stores a new channel record (if there is one to store), then
/// publishes the round's announcements and reports each segment on
/// `events`; `false` once `events` is closed (the caller went away). The
/// record goes first: a viewer that hears an announcement and looks for
/// the channel's origins or initialisation section finds the record
/// already.
async fn publish(
    node: &Node,
    key: &ChannelKey,
    record: Option<&Record<'_>>,
    renditions: &[RenditionState],
    imported: Vec<(u16, Vec<u8>, Published)>,
    events: &mpsc::Sender<Published>,
) -> Result<bool, BroadcastError> {
    let channel = key.id();
    if let Some(record) = record {
        put_record(node, key, record, renditions).await?;
    }
    for (rendition, announcement, published) in imported {
        node.publish(channel, rendition, announcement).await?;
        tracing::info!(
            %channel,
            rendition,
            sequence = published.sequence,
            bytes = published.bytes,
            "published"
        );
        if events.send(published).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Signs a new channel record and stores it (in the DHT, and here).
async fn put_record(
    node: &Node,
    key: &ChannelKey,
    record: &Record<'_>,
    renditions: &[RenditionState],
) -> Result<(), BroadcastError> {
    let signed = ChannelRecord {
        name: record.name.to_owned(),
        sequence: record.sequence,
        expires_ms: unix_ms() + RECORD_LIFETIME.as_millis() as u64,
        target_duration_us: record.target_duration_us,
        renditions: renditions
            .iter()
            .map(|s| LiveRendition {
                recent: s.recent.iter().copied().collect(),
                ..s.info.clone()
            })
            .collect(),
        origins: record.origins.iter().cloned().map(Origin).collect(),
        // The creator the channel's funding pays (see
        // `shoal_protocol::receipt::content_id`).
        creator: record
            .import
            .creator
            .map(|c| c.to_vec())
            .unwrap_or_default(),
        ..ChannelRecord::default()
    };
    node.put_channel_record(key.id(), key.sign_record(&signed))
        .await?;
    Ok(())
}

/// Stores the rendition's fMP4 initialisation section (`EXT-X-MAP`) when
/// the playlist names one it has not stored yet: coded like a segment
/// (numbered 0), its manifest named in the channel record, where viewers
/// find it. An encoder that restarts may write a new one; the record then
/// names the new one. MPEG-TS playlists name none.
async fn import_init(
    node: &Node,
    options: &BroadcastOptions,
    encoder: &mut Encoder,
    state: &mut RenditionState,
    media: &hls::MediaPlaylist,
) -> Result<(), BroadcastError> {
    let Some(uri) = &media.init else {
        return Ok(());
    };
    if state.init_uri.as_ref() == Some(uri) {
        return Ok(());
    }
    let path = options.dir.join(&state.playlist);
    if !is_safe_relative_path(uri) {
        return Err(input_err(
            &path,
            format!("initialisation section {uri:?} is not a plain relative path"),
        ));
    }
    let base = state
        .playlist
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = options.dir.join(base).join(uri);
    let bytes = read_segment(&path)?;
    let stored = store_segment(node, &options.import, encoder, &path, bytes, 0, None).await?;
    state.info.init = Some(stored.manifest_cid);
    state.info.segment_extension = shoal_storage::import::segment_extension(media, true);
    state.init_uri = Some(uri.clone());
    tracing::info!(path = %path.display(), manifest = %stored.manifest_cid, "stored the initialisation section");
    Ok(())
}

/// Codes and stores one file of the encoder's (a segment, or an
/// initialisation section as number 0) off the async threads.
async fn store_segment(
    node: &Node,
    import: &ImportOptions,
    encoder: &mut Encoder,
    path: &Path,
    bytes: Vec<u8>,
    sequence: u64,
    duration: Option<u64>,
) -> Result<shoal_storage::StoredSegment, BroadcastError> {
    let store = node.store().clone();
    let import = *import;
    let mut enc = std::mem::take(encoder);
    let (stored, enc) = tokio::task::spawn_blocking(move || {
        let r = import_segment(&store, &mut enc, bytes, sequence, duration, &import);
        (r, enc)
    })
    .await
    .map_err(|e| input_err(path, e))?;
    *encoder = enc;
    Ok(stored?)
}

/// Imports one segment the encoder finished and signs its announcement;
/// the caller publishes it.
#[allow(clippy::too_many_arguments)]
async fn import_new_segment(
    node: &Node,
    key: &ChannelKey,
    options: &BroadcastOptions,
    encoder: &mut Encoder,
    state: &mut RenditionState,
    rendition: u16,
    sequence: u64,
    seg: &hls::MediaSegment,
) -> Result<(Vec<u8>, Published), BroadcastError> {
    let base = state
        .playlist
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if !is_safe_relative_path(&seg.uri) {
        return Err(BroadcastError::Input {
            path: options.dir.join(&state.playlist),
            detail: format!("segment {:?} is not a plain relative path", seg.uri),
        });
    }
    let path = options.dir.join(&base).join(&seg.uri);
    let bytes = read_segment(&path)?;
    let segment = NewSegment {
        rendition,
        sequence,
        uri: &seg.uri,
        duration_us: seg.duration_us,
        part: None,
    };
    announce_segment(
        node,
        key,
        &options.import,
        encoder,
        state,
        segment,
        &path,
        bytes,
    )
    .await
}

/// A segment to store and announce.
struct NewSegment<'a> {
    rendition: u16,
    sequence: u64,
    /// Its name in announcements (the encoder's file, under an origin).
    uri: &'a str,
    duration_us: u64,
    /// Where it sits in its segment, when it is a part.
    part: Option<PartOf>,
}

/// Stores a segment's shards, signs its announcement and adds it to the
/// rendition's latest; the caller publishes it. `path` names where the
/// bytes came from, for errors.
#[allow(clippy::too_many_arguments)]
async fn announce_segment(
    node: &Node,
    key: &ChannelKey,
    import: &ImportOptions,
    encoder: &mut Encoder,
    state: &mut RenditionState,
    seg: NewSegment<'_>,
    path: &Path,
    bytes: Vec<u8>,
) -> Result<(Vec<u8>, Published), BroadcastError> {
    let NewSegment {
        rendition,
        sequence,
        uri,
        duration_us,
        part,
    } = seg;
    let len = bytes.len() as u64;
    let stored = store_segment(
        node,
        import,
        encoder,
        path,
        bytes,
        sequence,
        Some(duration_us),
    )
    .await?;
    let announcement = key.sign_announcement(Announcement {
        version: 0,
        channel: Vec::new(),
        rendition,
        sequence,
        published_ms: unix_ms(),
        uri: uri.to_owned(),
        publisher: node.peer_id().to_bytes(),
        manifest: stored.manifest_bytes.clone(),
        part,
    });
    state.last = Some(sequence);
    // A late joiner seeds from the record's whole segments; parts come
    // too fast for that to pay, and it waits for the next segment's first.
    if part.is_none() {
        state.recent.push_back(RecentSegment {
            sequence,
            manifest: stored.manifest_cid,
            duration_us,
        });
        while state.recent.len() > RECORD_WINDOW {
            state.recent.pop_front();
        }
    }
    let published = Published {
        rendition,
        sequence,
        uri: uri.to_owned(),
        bytes: len,
        manifest: stored.manifest_cid.to_string(),
        part,
    };
    Ok((announcement, published))
}

fn input_err(path: &Path, detail: impl std::fmt::Display) -> BroadcastError {
    BroadcastError::Input {
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

fn read_segment(path: &Path) -> Result<Vec<u8>, BroadcastError> {
    let meta = std::fs::metadata(path).map_err(|e| input_err(path, e))?;
    if meta.len() > MAX_HLS_SEGMENT_BYTES {
        return Err(input_err(
            path,
            format!(
                "segment is {} bytes, over the {MAX_HLS_SEGMENT_BYTES}-byte limit",
                meta.len()
            ),
        ));
    }
    if meta.len() == 0 {
        return Err(input_err(path, "segment is empty"));
    }
    std::fs::read(path).map_err(|e| input_err(path, e))
}

fn read_playlist(path: &Path) -> Result<Playlist, BroadcastError> {
    let meta = std::fs::metadata(path).map_err(|e| input_err(path, e))?;
    if meta.len() > hls::MAX_PLAYLIST_BYTES {
        return Err(input_err(path, "playlist too large"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| input_err(path, e))?;
    hls::parse(&text).map_err(|e| input_err(path, e))
}

fn read_media(dir: &Path, playlist: &Path) -> Result<hls::MediaPlaylist, BroadcastError> {
    let path = dir.join(playlist);
    match read_playlist(&path)? {
        Playlist::Media(m) => Ok(m),
        Playlist::Master(_) => Err(input_err(&path, "expected a media playlist")),
    }
}

/// The top playlist: the one named, else a master playlist in `dir`, else
/// the only playlist there. `None` while the encoder has written none.
fn find_playlist(dir: &Path, named: Option<&str>) -> Result<Option<String>, BroadcastError> {
    if !dir.is_dir() {
        return Err(input_err(dir, "not a folder"));
    }
    if let Some(name) = named {
        if !is_safe_relative_path(name) {
            return Err(input_err(
                dir,
                format!("playlist {name:?} is not a plain relative path"),
            ));
        }
        return Ok(dir.join(name).exists().then(|| name.to_owned()));
    }
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| input_err(dir, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".m3u8"))
        .collect();
    found.sort();
    let masters: Vec<&String> = found
        .iter()
        .filter(|n| matches!(read_playlist(&dir.join(n)), Ok(Playlist::Master(_))))
        .collect();
    match (masters.as_slice(), found.as_slice()) {
        ([m], _) => Ok(Some((*m).clone())),
        ([], []) => Ok(None),
        ([], [only]) => Ok(Some(only.clone())),
        _ => Err(input_err(
            dir,
            format!(
                "several playlists ({}); name the top one with --playlist",
                found.join(", ")
            ),
        )),
    }
}

fn read_renditions(dir: &Path, top: &str) -> Result<Vec<RenditionState>, BroadcastError> {
    let state = |playlist: &str, bandwidth, resolution, codecs| {
        // MPEG-TS until the playlist names an initialisation section
        // (`import_init`).
        let ext = "ts".to_string();
        RenditionState {
            info: LiveRendition {
                playlist: playlist.to_owned(),
                bandwidth,
                resolution,
                codecs,
                segment_extension: ext,
                ..LiveRendition::default()
            },
            playlist: PathBuf::from(playlist),
            init_uri: None,
            last: None,
            recent: VecDeque::new(),
        }
    };
    match read_playlist(&dir.join(top))? {
        Playlist::Media(_) => Ok(vec![state(top, None, None, None)]),
        Playlist::Master(variants) => {
            if variants.len() > shoal_protocol::channel::MAX_LIVE_RENDITIONS {
                return Err(input_err(&dir.join(top), "too many renditions"));
            }
            variants
                .iter()
                .map(|v| {
                    if !is_safe_relative_path(&v.uri) {
                        return Err(input_err(
                            &dir.join(top),
                            format!("variant {:?} is not a plain relative path", v.uri),
                        ));
                    }
                    Ok(state(
                        &v.uri,
                        Some(v.bandwidth),
                        v.resolution.clone(),
                        v.codecs.clone(),
                    ))
                })
                .collect()
        }
    }
}
