//! Importing content: files and HLS presentations into blocks and manifests.
//!
//! Input is read one segment at a time, so memory stays bounded whatever the
//! input size. Two threads share the work: one reads a segment, hashes it,
//! computes its parity and hashes every shard; the other writes the shards
//! and the segment manifest to the store. At most [`PIPELINE_DEPTH`] segments
//! are in flight between them.
//!
//! The root is written last, in a durable transaction that also pins it: the
//! root CID is returned only once everything below it is stored. A crash
//! before then leaves unpinned blocks, which the next GC removes.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use shoal_protocol::block::{self, Block, Cid, Codec, MAX_BLOCK_SIZE};
use shoal_protocol::manifest::{
    MANIFEST_VERSION, MAX_SEGMENTS, MAX_SHARDS, Rendition, SegmentManifest, SegmentRef, StreamKind,
    StreamManifest, is_safe_file_name,
};

use crate::blockstore::{Blockstore, StoreError};
use crate::codec::{CodecError, Encoder};
use crate::hls::{self, Playlist, PlaylistError};

/// Segments prepared but not yet stored. Two keeps both threads busy; more
/// only costs memory.
pub const PIPELINE_DEPTH: usize = 2;

/// Largest HLS media segment read into memory. Encoders write a few
/// megabytes per segment; 64 MiB is 6 s of 80 Mb/s video.
pub const MAX_HLS_SEGMENT_BYTES: u64 = 64 << 20;

/// Bytes an import writes between two durable commits. Commits in between
/// skip the fsync; a crash loses at most this much work, never consistency.
pub const DURABLE_EVERY_BYTES: u64 = 256 << 20;

/// How content is cut and coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportOptions {
    /// Data shards per segment.
    pub k: u16,
    /// Parity shards per segment.
    pub m: u16,
    /// Bytes per segment when cutting a file (HLS keeps the encoder's
    /// segments).
    pub segment_size: usize,
    /// The address the content's creator is paid at, written into the
    /// root manifest (and so into its CID): receipts for the stream name
    /// it, and only its funding pays it. None: the stream earns nothing.
    pub creator: Option<[u8; 20]>,
}

impl Default for ImportOptions {
    /// 4 MiB segments as 10 + 4 shards of 410 KiB: any 4 shards of 14 may be
    /// lost (40% overhead), and a shard is well under the 1 MiB block limit.
    /// `docs/BENCHMARKS.md` has the codec numbers behind (10, 4).
    fn default() -> Self {
        ImportOptions {
            k: 10,
            m: 4,
            segment_size: 4 << 20,
            creator: None,
        }
    }
}

impl ImportOptions {
    /// Checks `k` and `m` against the limits of the format.
    pub fn validate_coding(&self) -> Result<(), ImportError> {
        let (k, m) = (usize::from(self.k), usize::from(self.m));
        if k == 0 || k + m > MAX_SHARDS {
            return Err(ImportError::Options(format!(
                "k={k}, m={m}: need k >= 1 and k + m <= {MAX_SHARDS}"
            )));
        }
        Ok(())
    }

    /// Checks every option, the segment size included.
    pub fn validate(&self) -> Result<(), ImportError> {
        self.validate_coding()?;
        let k = usize::from(self.k);
        if self.segment_size == 0 || self.segment_size > k * MAX_BLOCK_SIZE {
            return Err(ImportError::Options(format!(
                "segment size {} must be between 1 and k x {MAX_BLOCK_SIZE} = {} bytes",
                self.segment_size,
                k * MAX_BLOCK_SIZE
            )));
        }
        Ok(())
    }
}

/// Why an import failed. Nothing of a failed import is pinned.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {error}")]
    Playlist { path: PathBuf, error: PlaylistError },
    #[error("{path}: {message}")]
    Unsupported { path: PathBuf, message: String },
    #[error("invalid import options: {0}")]
    Options(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What an import stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    pub root: Cid,
    /// Bytes of content (segments, not parity or manifests).
    pub size: u64,
    pub segments: u64,
    /// Blocks written, parity and manifests included.
    pub blocks: u64,
}

/// One segment's bytes on their way in.
struct Input {
    bytes: Vec<u8>,
    index: u64,
    duration_us: Option<u64>,
}

/// One segment hashed and coded, ready to store.
struct Prepared {
    segment: Vec<u8>,
    /// Data shards wholly inside `segment`.
    full_count: usize,
    shard_size: usize,
    /// The other data shards: tail and zero padding.
    padded: Vec<u8>,
    parity: Vec<Vec<u8>>,
    shards: Vec<Cid>,
    manifest: (Cid, Vec<u8>),
    duration_us: Option<u64>,
}

impl Prepared {
    fn blocks(&self) -> Vec<Block<'_>> {
        let s = self.shard_size;
        let data = self.segment[..self.full_count * s]
            .chunks_exact(s)
            .chain(self.padded.chunks_exact(s));
        let parity = self.parity.iter().map(Vec::as_slice);
        let mut out: Vec<Block<'_>> = data
            .chain(parity)
            .zip(&self.shards)
            .map(|(bytes, cid)| Block::prehashed(*cid, bytes))
            .collect();
        out.push(Block::prehashed(self.manifest.0, &self.manifest.1));
        out
    }
}

/// (k, m) for a segment of `len` bytes: the configured pair, or for a segment
/// too large for `k` shards of at most one block, more data shards with
/// parity in the same proportion.
fn coding_for(len: usize, k: u16, m: u16) -> Result<(usize, usize), CodecError> {
    let (k, m) = (usize::from(k), usize::from(m));
    if len <= k * MAX_BLOCK_SIZE {
        return Ok((k, m));
    }
    let k2 = len.div_ceil(MAX_BLOCK_SIZE);
    let m2 = (m * k2).div_ceil(k);
    if k2 + m2 > MAX_SHARDS {
        return Err(CodecError::Parameters(format!(
            "a {len}-byte segment needs {k2} + {m2} shards, over the {MAX_SHARDS}-shard limit"
        )));
    }
    Ok((k2, m2))
}

fn prepare(
    encoder: &mut Encoder,
    input: Input,
    opts: &ImportOptions,
) -> Result<Prepared, ImportError> {
    let (k, m) = coding_for(input.bytes.len(), opts.k, opts.m)?;
    let hash = block::sha256_multihash(&block::sha256(&input.bytes)).to_bytes();
    let (shard_size, shards, full_count, padded, parity) = {
        let encoded = encoder.encode(&input.bytes, k, m)?;
        let shard_size = encoded.shard_size();
        let shards: Vec<Cid> = (0..k + m)
            .map(|i| block::cid_of(Codec::Raw, encoded.shard(i)))
            .collect();
        let full_count = (input.bytes.len() / shard_size).min(k);
        let mut padded = Vec::with_capacity((k - full_count) * shard_size);
        for i in full_count..k {
            padded.extend_from_slice(encoded.shard(i));
        }
        let parity: Vec<Vec<u8>> = (k..k + m).map(|i| encoded.shard(i).to_vec()).collect();
        (shard_size, shards, full_count, padded, parity)
    };
    let manifest = SegmentManifest {
        version: MANIFEST_VERSION,
        index: input.index,
        length: input.bytes.len() as u64,
        duration_us: input.duration_us,
        hash,
        // k, m <= MAX_SHARDS and shard_size <= MAX_BLOCK_SIZE: they fit.
        k: k as u16,
        m: m as u16,
        shard_size: shard_size as u32,
        shards: shards.clone(),
    };
    Ok(Prepared {
        full_count,
        shard_size,
        padded,
        parity,
        shards,
        manifest: manifest.to_block(),
        duration_us: input.duration_us,
        segment: input.bytes,
    })
}

/// A stored segment: its manifest and duration.
struct Stored {
    cid: Cid,
    duration_us: Option<u64>,
    length: u64,
}

/// Runs the two-thread pipeline over `inputs`; returns the stored segments
/// in input order and the number of blocks written.
fn run_pipeline<I>(
    staging: &mut crate::blockstore::Staging<'_>,
    inputs: I,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<(Vec<Stored>, u64), ImportError>
where
    I: Iterator<Item = Result<Input, ImportError>> + Send,
{
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Result<Prepared, ImportError>>(PIPELINE_DEPTH);
        scope.spawn(move || {
            let mut encoder = Encoder::default();
            for input in inputs {
                let prepared = input.and_then(|i| prepare(&mut encoder, i, opts));
                let failed = prepared.is_err();
                // A closed channel means the writer stopped on an error.
                if tx.send(prepared).is_err() || failed {
                    break;
                }
            }
        });
        let mut stored = Vec::new();
        let (mut done, mut since_durable, mut blocks) = (0u64, 0u64, 0u64);
        for prepared in rx {
            let p = prepared?;
            let len = p.segment.len() as u64;
            since_durable += len;
            let durable = since_durable >= DURABLE_EVERY_BYTES;
            if durable {
                since_durable = 0;
            }
            let batch = p.blocks();
            staging.put(&batch, durable)?;
            blocks += batch.len() as u64;
            done += len;
            progress(done);
            stored.push(Stored {
                cid: p.manifest.0,
                duration_us: p.duration_us,
                length: len,
            });
        }
        Ok((stored, blocks))
    })
}

/// One segment stored on its own: what a live broadcaster announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSegment {
    pub manifest_cid: Cid,
    /// The manifest block, as announced inline.
    pub manifest_bytes: Vec<u8>,
    pub manifest: SegmentManifest,
    /// Blocks written, the manifest included.
    pub blocks: usize,
}

/// Codes and stores one segment (a live HLS segment) in one durable
/// transaction, unpinned: a live window keeps segments only while they are
/// recent, and the quota's eviction or `repo gc` may take them after.
pub fn import_segment(
    store: &Blockstore,
    encoder: &mut Encoder,
    bytes: Vec<u8>,
    index: u64,
    duration_us: Option<u64>,
    opts: &ImportOptions,
) -> Result<StoredSegment, ImportError> {
    opts.validate_coding()?;
    let prepared = prepare(
        encoder,
        Input {
            bytes,
            index,
            duration_us,
        },
        opts,
    )?;
    let blocks = prepared.blocks();
    store.put_many(&blocks)?;
    let (manifest_cid, manifest_bytes) = prepared.manifest.clone();
    let manifest = SegmentManifest::from_block(&manifest_bytes)
        .map_err(|e| ImportError::Options(format!("segment manifest: {e}")))?;
    Ok(StoredSegment {
        manifest_cid,
        manifest_bytes,
        manifest,
        blocks: blocks.len(),
    })
}

/// Reads a file `segment_size` bytes at a time.
fn file_inputs(
    mut file: File,
    path: &Path,
    segment_size: usize,
) -> impl Iterator<Item = Result<Input, ImportError>> + Send + '_ {
    let mut index = 0u64;
    let mut finished = false;
    std::iter::from_fn(move || {
        if finished {
            return None;
        }
        let mut bytes = Vec::with_capacity(segment_size);
        match (&mut file)
            .take(segment_size as u64)
            .read_to_end(&mut bytes)
        {
            Err(e) => {
                finished = true;
                Some(Err(io_err(path)(e)))
            }
            Ok(0) => None,
            Ok(n) => {
                finished = n < segment_size;
                index += 1;
                Some(Ok(Input {
                    bytes,
                    index: index - 1,
                    duration_us: None,
                }))
            }
        }
    })
}

/// Imports a file as fixed-size segments.
pub fn import_file(
    store: &Blockstore,
    path: &Path,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Imported, ImportError> {
    opts.validate()?;
    let file = File::open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if meta.is_dir() {
        return Err(ImportError::Unsupported {
            path: path.to_owned(),
            message: "is a directory; shoal add takes a file (or --hls PLAYLIST)".into(),
        });
    }
    let expected = meta.len().div_ceil(opts.segment_size as u64);
    if expected > MAX_SEGMENTS as u64 {
        return Err(ImportError::Unsupported {
            path: path.to_owned(),
            message: format!(
                "{} bytes make {expected} segments of {} bytes, over the {MAX_SEGMENTS}-segment \
                 limit of one stream; use a larger segment size",
                meta.len(),
                opts.segment_size
            ),
        });
    }
    let mut staging = store.stage();
    let inputs = file_inputs(file, path, opts.segment_size);
    let (stored, blocks) = run_pipeline(&mut staging, inputs, opts, progress)?;
    if stored.len() > MAX_SEGMENTS {
        return Err(ImportError::Unsupported {
            path: path.to_owned(),
            message: format!("the file grew past {MAX_SEGMENTS} segments while it was read"),
        });
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size = stored.iter().map(|s| s.length).sum();
    let manifest = StreamManifest {
        version: MANIFEST_VERSION,
        kind: StreamKind::File,
        media_type: media_type_for(&name).to_owned(),
        name: truncate(name),
        size,
        creator: creator_bytes(opts),
        renditions: vec![Rendition {
            playlist: "index.m3u8".into(),
            bandwidth: None,
            resolution: None,
            codecs: None,
            init: None,
            segment_extension: "bin".into(),
            media_sequence: 0,
            segments: stored
                .iter()
                .map(|s| SegmentRef {
                    cid: s.cid,
                    duration_us: None,
                })
                .collect(),
        }],
    };
    finish(staging, manifest, stored.len() as u64, blocks)
}

fn finish(
    staging: crate::blockstore::Staging<'_>,
    manifest: StreamManifest,
    segments: u64,
    blocks: u64,
) -> Result<Imported, ImportError> {
    // What the importer builds must pass the checks a peer's manifest does.
    manifest
        .validate()
        .map_err(|e| ImportError::Options(format!("the stream manifest would be invalid: {e}")))?;
    let (root, bytes) = manifest.to_block();
    if bytes.len() > MAX_BLOCK_SIZE {
        return Err(ImportError::Options(format!(
            "the stream manifest is {} bytes, over the {MAX_BLOCK_SIZE}-byte block limit",
            bytes.len()
        )));
    }
    staging.finish(Block::prehashed(root, &bytes))?;
    Ok(Imported {
        root,
        size: manifest.size,
        segments,
        blocks: blocks + 1,
    })
}

fn truncate(mut name: String) -> String {
    let max = shoal_protocol::manifest::MAX_TEXT;
    if name.len() > max {
        let mut cut = max;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

/// A MIME type from a file name's extension.
fn media_type_for(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("mp4" | "m4v") => "video/mp4",
        Some("ts") => "video/mp2t",
        Some("mkv") => "video/x-matroska",
        Some("webm") => "video/webm",
        Some("mov") => "video/quicktime",
        Some("mp3") => "audio/mpeg",
        Some("m4a") => "audio/mp4",
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("txt") => "text/plain",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Reads a playlist file, bounded in size.
fn read_playlist(path: &Path) -> Result<Playlist, ImportError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if meta.len() > hls::MAX_PLAYLIST_BYTES {
        return Err(ImportError::Unsupported {
            path: path.to_owned(),
            message: format!("playlist is over {} bytes", hls::MAX_PLAYLIST_BYTES),
        });
    }
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let text = String::from_utf8(bytes).map_err(|_| ImportError::Playlist {
        path: path.to_owned(),
        error: PlaylistError {
            line: 0,
            message: "the playlist is not UTF-8 text".into(),
        },
    })?;
    hls::parse(&text).map_err(|error| ImportError::Playlist {
        path: path.to_owned(),
        error,
    })
}

/// One rendition being imported.
struct PlannedRendition {
    path: PathBuf,
    playlist_name: String,
    variant: Option<hls::Variant>,
    media: hls::MediaPlaylist,
}

/// Imports an HLS VOD presentation from its master or media playlist.
pub fn import_hls(
    store: &Blockstore,
    playlist: &Path,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Imported, ImportError> {
    opts.validate_coding()?;
    let planned = plan_hls(playlist)?;

    // Every file, in order: per rendition its init section, then segments.
    let mut files: Vec<(PathBuf, u64, Option<u64>)> = Vec::new();
    for r in &planned {
        let dir = r.path.parent().unwrap_or(Path::new("."));
        if let Some(init) = &r.media.init {
            files.push((dir.join(init), 0, None));
        }
        for (i, seg) in r.media.segments.iter().enumerate() {
            files.push((dir.join(&seg.uri), i as u64, Some(seg.duration_us)));
        }
    }
    // Check every file before the first byte is stored.
    for (path, _, _) in &files {
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        if !meta.is_file() || meta.len() == 0 || meta.len() > MAX_HLS_SEGMENT_BYTES {
            return Err(ImportError::Unsupported {
                path: path.clone(),
                message: format!("a segment must be a file of 1 to {MAX_HLS_SEGMENT_BYTES} bytes"),
            });
        }
    }

    let mut staging = store.stage();
    let inputs = files.iter().map(|(path, index, duration_us)| {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        if bytes.is_empty() || bytes.len() as u64 > MAX_HLS_SEGMENT_BYTES {
            return Err(ImportError::Unsupported {
                path: path.clone(),
                message: "the segment changed size while it was imported".into(),
            });
        }
        Ok(Input {
            bytes,
            index: *index,
            duration_us: *duration_us,
        })
    });
    let (stored, blocks) = run_pipeline(&mut staging, inputs, opts, progress)?;
    let size = stored.iter().map(|s| s.length).sum();

    let mut stored = stored.into_iter();
    let mut renditions = Vec::with_capacity(planned.len());
    for r in planned {
        let init = r
            .media
            .init
            .as_ref()
            .and_then(|_| stored.next())
            .map(|s| s.cid);
        let segments = r
            .media
            .segments
            .iter()
            .zip(stored.by_ref())
            .map(|(_, s)| SegmentRef {
                cid: s.cid,
                duration_us: s.duration_us,
            })
            .collect();
        let ext = segment_extension(&r.media, init.is_some());
        renditions.push(Rendition {
            playlist: r.playlist_name,
            bandwidth: r.variant.as_ref().map(|v| v.bandwidth),
            resolution: r.variant.as_ref().and_then(|v| v.resolution.clone()),
            codecs: r.variant.as_ref().and_then(|v| v.codecs.clone()),
            init,
            segment_extension: ext,
            media_sequence: r.media.media_sequence,
            segments,
        });
    }
    let name = playlist
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let manifest = StreamManifest {
        version: MANIFEST_VERSION,
        kind: StreamKind::HlsVod,
        name: truncate(name),
        media_type: "application/vnd.apple.mpegurl".into(),
        size,
        renditions,
        creator: creator_bytes(opts),
    };
    let segments = files.len() as u64;
    finish(staging, manifest, segments, blocks)
}

fn creator_bytes(options: &ImportOptions) -> Vec<u8> {
    options.creator.map(|c| c.to_vec()).unwrap_or_default()
}

/// Reads the master playlist (if any) and every media playlist.
fn plan_hls(playlist: &Path) -> Result<Vec<PlannedRendition>, ImportError> {
    let unsupported = |path: &Path, message: String| ImportError::Unsupported {
        path: path.to_owned(),
        message,
    };
    let mut planned = Vec::new();
    match read_playlist(playlist)? {
        Playlist::Media(media) => planned.push(PlannedRendition {
            path: playlist.to_owned(),
            playlist_name: "index.m3u8".into(),
            variant: None,
            media,
        }),
        Playlist::Master(variants) => {
            if variants.len() > shoal_protocol::manifest::MAX_RENDITIONS {
                return Err(unsupported(
                    playlist,
                    format!(
                        "more than {} variants",
                        shoal_protocol::manifest::MAX_RENDITIONS
                    ),
                ));
            }
            let dir = playlist.parent().unwrap_or(Path::new("."));
            for (i, variant) in variants.into_iter().enumerate() {
                let path = dir.join(&variant.uri);
                let media = match read_playlist(&path)? {
                    Playlist::Media(m) => m,
                    Playlist::Master(_) => {
                        return Err(unsupported(
                            &path,
                            "a variant is itself a master playlist".into(),
                        ));
                    }
                };
                planned.push(PlannedRendition {
                    path,
                    playlist_name: format!("rendition_{i}.m3u8"),
                    variant: Some(variant),
                    media,
                });
            }
        }
    }
    for r in &planned {
        if !r.media.ended {
            return Err(unsupported(
                &r.path,
                "the playlist has no #EXT-X-ENDLIST: it is live or unfinished, and \
                 `shoal add --hls` takes VOD playlists"
                    .into(),
            ));
        }
        if r.media.segments.is_empty() {
            return Err(unsupported(&r.path, "the playlist lists no segment".into()));
        }
    }
    Ok(planned)
}

/// The extension exported segments get: the source's own when it is a plain
/// one, else what the container implies.
/// The extension a rendition's segments are named with (`<n>.<ext>`): its
/// first segment's, when that is short and plain; else `m4s` for fMP4
/// and `ts`.
pub fn segment_extension(media: &hls::MediaPlaylist, fmp4: bool) -> String {
    let ext = media
        .segments
        .first()
        .and_then(|s| s.uri.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase())
        .filter(|e| {
            is_safe_file_name(e) && e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    ext.unwrap_or_else(|| if fmp4 { "m4s".into() } else { "ts".into() })
}
