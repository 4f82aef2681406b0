//! Assembling content: blocks back into files and HLS presentations.
//!
//! A segment is rebuilt from its data shards when they are all present and
//! intact, else from any `k` shards through the Reed-Solomon decoder; either
//! way the result is checked against the segment's hash before a byte of it
//! is handed out. A shard that is missing or fails its CID counts as lost.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use shoal_protocol::block::{Block, Cid, Codec};
use shoal_protocol::manifest::{ManifestError, SegmentManifest, StreamKind, StreamManifest};

use crate::blockstore::{Blockstore, StoreError};
use crate::codec::{self, CodecError, Decoder};
use crate::hls;

/// Why content could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("{0} is not in the repo")]
    NotFound(Cid),
    #[error("{cid} is not a shoal stream: {reason}")]
    NotAStream { cid: Cid, reason: String },
    #[error("segment {index} ({cid}) cannot be rebuilt: {reason}")]
    Segment {
        index: u64,
        cid: Cid,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("writing output: {0}")]
    Output(io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads and decodes a stream's root manifest.
pub fn load_stream(store: &Blockstore, root: &Cid) -> Result<StreamManifest, AssembleError> {
    if Codec::of(root) != Some(Codec::DagCbor) {
        return Err(AssembleError::NotAStream {
            cid: *root,
            reason: "a stream root is a dag-cbor manifest; this CID names a raw block".into(),
        });
    }
    let bytes = store.get(root)?.ok_or(AssembleError::NotFound(*root))?;
    StreamManifest::from_block(&bytes).map_err(|e| AssembleError::NotAStream {
        cid: *root,
        reason: e.to_string(),
    })
}

/// Whether the store holds the whole stream: its root, every segment
/// manifest, and at least `k` shards of every segment.
pub fn is_complete(store: &Blockstore, root: &Cid) -> Result<bool, AssembleError> {
    let stream = match load_stream(store, root) {
        Ok(stream) => stream,
        Err(AssembleError::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    for cid in stream.segment_links() {
        let Some(bytes) = store.get(&cid)? else {
            return Ok(false);
        };
        let Ok(manifest) = SegmentManifest::from_block(&bytes) else {
            return Ok(false);
        };
        let mut present = 0;
        for shard in &manifest.shards {
            if store.has(shard)? {
                present += 1;
            }
        }
        if present < usize::from(manifest.k) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reads a segment manifest; `position` names the segment in errors.
pub fn load_segment(
    store: &Blockstore,
    cid: &Cid,
    position: u64,
) -> Result<SegmentManifest, AssembleError> {
    let seg_err = |reason: String| AssembleError::Segment {
        index: position,
        cid: *cid,
        reason,
    };
    let bytes = match store.get(cid) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(seg_err("its manifest is not in the repo".into())),
        Err(StoreError::CorruptBlock { .. }) => {
            return Err(seg_err("its manifest block is damaged".into()));
        }
        Err(e) => return Err(e.into()),
    };
    SegmentManifest::from_block(&bytes).map_err(|e: ManifestError| seg_err(e.to_string()))
}

/// Reads whichever shards of a segment are present and intact. Data shards
/// come first; parity is read only when a data shard is lost.
fn read_shards(
    store: &Blockstore,
    manifest: &SegmentManifest,
) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
    let k = usize::from(manifest.k);
    let mut shards: Vec<Option<Vec<u8>>> = vec![None; manifest.shards.len()];
    let mut lost = 0;
    for (i, cid) in manifest.shards.iter().enumerate() {
        if i >= k && lost == 0 {
            break;
        }
        match store.get(cid) {
            Ok(Some(bytes)) if bytes.len() == manifest.shard_size as usize => {
                shards[i] = Some(bytes)
            }
            Ok(_) => lost += 1,
            Err(StoreError::CorruptBlock { cid, .. }) => {
                tracing::warn!(%cid, "shard is damaged; treating it as lost");
                lost += 1;
            }
            Err(e) => return Err(e),
        }
        if i >= k && shards.iter().filter(|s| s.is_some()).count() >= k {
            break;
        }
    }
    Ok(shards)
}

/// Rebuilds a segment, checks it against its hash, and hands it to `f` as
/// consecutive pieces (no copy is made of it).
pub fn with_segment<R>(
    store: &Blockstore,
    decoder: &mut Decoder,
    manifest: &SegmentManifest,
    cid: &Cid,
    position: u64,
    f: impl FnOnce(&[&[u8]]) -> R,
) -> Result<R, AssembleError> {
    let shards = read_shards(store, manifest)?;
    let view: Vec<Option<&[u8]>> = shards.iter().map(|s| s.as_deref()).collect();
    let seg_err = |reason: String| AssembleError::Segment {
        index: position,
        cid: *cid,
        reason,
    };
    decoder
        .with_segment(
            usize::from(manifest.k),
            usize::from(manifest.m),
            manifest.shard_size as usize,
            manifest.length as usize,
            &view,
            |parts| {
                if manifest.verify_segment_parts(parts) {
                    Ok(f(parts))
                } else {
                    Err(seg_err(
                        "the rebuilt bytes do not match the segment hash".into(),
                    ))
                }
            },
        )
        .map_err(|e| seg_err(e.to_string()))?
}

/// Reads segment manifest `cid` and rebuilds the segment into one buffer,
/// checked against its hash (for a gateway serving it whole).
pub fn read_segment(
    store: &Blockstore,
    cid: &Cid,
    position: u64,
) -> Result<Vec<u8>, AssembleError> {
    let manifest = load_segment(store, cid, position)?;
    let mut decoder = Decoder::default();
    with_segment(store, &mut decoder, &manifest, cid, position, |parts| {
        parts.concat()
    })
}

/// Writes every piece to `out`.
fn write_parts(out: &mut dyn Write, parts: &[&[u8]]) -> io::Result<u64> {
    let mut n = 0;
    for part in parts {
        out.write_all(part)?;
        n += part.len() as u64;
    }
    Ok(n)
}

/// Regenerates and stores the lost shards of a segment; returns how many
/// were stored.
pub fn repair_segment(store: &Blockstore, cid: &Cid) -> Result<usize, AssembleError> {
    regenerate(store, cid, true)
}

/// [`repair_segment`] without waiting for the disk, for a segment that is
/// only kept for a while (a live window): a viewer that got `k` shards
/// from peers and an origin then holds all `k + m`, and can serve any of
/// them. After a crash the shards may be gone; they can be made again.
pub fn complete_segment(store: &Blockstore, cid: &Cid) -> Result<usize, AssembleError> {
    regenerate(store, cid, false)
}

fn regenerate(store: &Blockstore, cid: &Cid, durable: bool) -> Result<usize, AssembleError> {
    let manifest = load_segment(store, cid, 0)?;
    let mut shards = read_shards(store, &manifest)?;
    // Parity is read only when data is lost; repair wants every shard.
    for (i, shard_cid) in manifest.shards.iter().enumerate() {
        if shards[i].is_none() {
            shards[i] = store.get(shard_cid).ok().flatten();
        }
    }
    let view: Vec<Option<&[u8]>> = shards.iter().map(|s| s.as_deref()).collect();
    let repaired = codec::repair(
        usize::from(manifest.k),
        usize::from(manifest.m),
        manifest.shard_size as usize,
        &view,
    )
    .map_err(|e: CodecError| AssembleError::Segment {
        index: manifest.index,
        cid: *cid,
        reason: e.to_string(),
    })?;
    let blocks: Vec<Block<'_>> = repaired
        .iter()
        .map(|(i, bytes)| Block::verified(manifest.shards[*i], bytes))
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)?;
    if durable {
        store.put_many(&blocks)?;
    } else {
        store.put_many_lazily(&blocks)?;
    }
    Ok(blocks.len())
}

/// Writes a stream's bytes (every segment of its first rendition, in order)
/// to `out`. Each segment is verified before it is written.
pub fn write_stream(
    store: &Blockstore,
    root: &Cid,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, AssembleError> {
    let stream = load_stream(store, root)?;
    if stream.kind != StreamKind::File {
        return Err(AssembleError::NotAStream {
            cid: *root,
            reason: "it is an HLS presentation; use export-hls".into(),
        });
    }
    let mut written = 0u64;
    let mut decoder = Decoder::default();
    for (position, seg) in stream.renditions[0].segments.iter().enumerate() {
        let manifest = load_segment(store, &seg.cid, position as u64)?;
        let n = with_segment(
            store,
            &mut decoder,
            &manifest,
            &seg.cid,
            position as u64,
            |parts| write_parts(out, parts),
        )?
        .map_err(AssembleError::Output)?;
        written += n;
        progress(written);
    }
    out.flush().map_err(AssembleError::Output)?;
    Ok(written)
}

/// Writes an HLS presentation into `dir`, which must not exist or be empty.
///
/// Everything is written into a sibling temporary folder first and renamed
/// into place at the end, so a failure leaves no partial presentation.
/// Returns the playlist to open: `index.m3u8` (the master playlist when there
/// are several renditions).
pub fn export_hls(
    store: &Blockstore,
    root: &Cid,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<PathBuf, AssembleError> {
    let stream = load_stream(store, root)?;
    if stream.kind == StreamKind::File {
        return Err(AssembleError::NotAStream {
            cid: *root,
            reason: "it is a file, not an HLS presentation; use get".into(),
        });
    }
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| AssembleError::Io { path, source }
    };
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
        if entries.next().is_some() {
            return Err(AssembleError::Io {
                path: dir.to_owned(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "folder is not empty"),
            });
        }
    }
    // A fresh folder of a random name, the owner's only until it is
    // renamed into place: nothing planted beside or inside it is written
    // through (see `files`).
    let tmp = crate::files::temp_dir(dir).map_err(io_err(dir))?;
    let result = write_presentation(store, &stream, &tmp, progress);
    let result = result.and_then(|()| {
        // Written: the folder opens as any exported folder would.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                .map_err(io_err(&tmp))?;
        }
        if dir.exists() {
            std::fs::remove_dir(dir).map_err(io_err(dir))?;
        }
        std::fs::rename(&tmp, dir).map_err(io_err(dir))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|()| dir.join("index.m3u8"))
}

fn write_presentation(
    store: &Blockstore,
    stream: &StreamManifest,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(), AssembleError> {
    let write = |path: PathBuf, parts: &[&[u8]]| -> Result<u64, AssembleError> {
        crate::files::create_new(&path, false)
            .and_then(|mut f| write_parts(&mut f, parts))
            .map_err(|source| AssembleError::Io { path, source })
    };
    std::fs::create_dir_all(dir).map_err(|source| AssembleError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let single = stream.renditions.len() == 1 && stream.renditions[0].bandwidth.is_none();
    let mut done = 0u64;
    let mut variants = Vec::new();
    let mut decoder = Decoder::default();
    for (r_index, r) in stream.renditions.iter().enumerate() {
        let stem = if single {
            "segment".to_string()
        } else {
            format!("r{r_index}")
        };
        let init_name = match &r.init {
            Some(cid) => {
                let manifest = load_segment(store, cid, 0)?;
                let file = format!("{stem}_init.mp4");
                done += with_segment(store, &mut decoder, &manifest, cid, 0, |parts| {
                    write(dir.join(&file), parts)
                })??;
                progress(done);
                Some(file)
            }
            None => None,
        };
        let mut entries = Vec::with_capacity(r.segments.len());
        for (i, seg) in r.segments.iter().enumerate() {
            let manifest = load_segment(store, &seg.cid, i as u64)?;
            let file = format!("{stem}_{i:05}.{}", r.segment_extension);
            done += with_segment(
                store,
                &mut decoder,
                &manifest,
                &seg.cid,
                i as u64,
                |parts| write(dir.join(&file), parts),
            )??;
            progress(done);
            entries.push((file, seg.duration_us.unwrap_or(0)));
        }
        let playlist = if single {
            "index.m3u8".to_string()
        } else {
            r.playlist.clone()
        };
        let text = hls::write_media(r.media_sequence, init_name.as_deref(), &entries);
        write(dir.join(&playlist), &[text.as_bytes()])?;
        variants.push(hls::Variant {
            uri: playlist,
            bandwidth: r.bandwidth.unwrap_or(0),
            resolution: r.resolution.clone(),
            codecs: r.codecs.clone(),
        });
    }
    if !single {
        write(
            dir.join("index.m3u8"),
            &[hls::write_master(&variants).as_bytes()],
        )?;
    }
    Ok(())
}
