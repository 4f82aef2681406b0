//! The HLS gateway: live channels and on-demand streams as ordinary HLS on
//! the daemon's HTTP port, for any player.
//!
//! - `/live/<channel>/index.m3u8`: a master playlist when the channel has
//!   several renditions, else the sliding media playlist of its only one.
//!   Asking for it starts watching the channel, so a player needs nothing
//!   but the URL.
//! - `/live/<channel>/<rendition>/index.m3u8`: one rendition's sliding media
//!   playlist, the segments this node holds complete, oldest first.
//! - `/live/<channel>/<rendition>/<sequence>.<ext>`: a segment, rebuilt
//!   from its shards and checked against its hash.
//! - `/vod/<root>/index.m3u8` (and `<rendition>/index.m3u8`,
//!   `<rendition>/<n>.<ext>`, `<rendition>/init.mp4`): an on-demand stream,
//!   fetched from the network segment by segment as the player asks, with
//!   the next [`VOD_PREFETCH`] segments fetched ahead of the playhead.
//! - `/web/`: the player page (hls.js), with live statistics.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shoal_protocol::block::{Cid, parse_cid};
use shoal_protocol::channel::ChannelId;
use shoal_protocol::manifest::{StreamKind, StreamManifest};
use shoal_storage::assemble::load_stream;
use shoal_storage::hls;

use crate::api::{ApiError, ApiState};
use crate::live::LiveView;

/// How long a first playlist request waits for the first segment of a
/// channel just joined: a late joiner's first segments arrive within a
/// target duration or two.
const FIRST_SEGMENT_WAIT: Duration = Duration::from_secs(20);

/// Segments fetched ahead of the one a player asks for: at 2–6 s segments,
/// 8–24 s of video, enough to ride out a slow peer without holding much.
pub const VOD_PREFETCH: usize = 4;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

/// The player page (`web/`), built into the binary so the daemon needs no
/// files beside it.
const WEB_INDEX: &[u8] = include_bytes!("../../web/index.html");
const WEB_APP: &[u8] = include_bytes!("../../web/app.js");
/// hls.js from npm (version pinned in `web/package.json`).
const WEB_HLS: &[u8] = include_bytes!("../../web/vendor/hls.light.min.js");

fn page(content_type: &'static str, bytes: &'static [u8]) -> Response {
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/", get(|| async { axum::response::Redirect::to("/web/") }))
        .route(
            "/web/",
            get(|| async { page("text/html; charset=utf-8", WEB_INDEX) }),
        )
        .route(
            "/web/app.js",
            get(|| async { page("text/javascript", WEB_APP) }),
        )
        .route(
            "/web/hls.light.min.js",
            get(|| async { page("text/javascript", WEB_HLS) }),
        )
        .route("/vod/{root}/index.m3u8", get(vod_top))
        .route("/vod/{root}/{rendition}/index.m3u8", get(vod_media))
        .route("/vod/{root}/{rendition}/{segment}", get(vod_segment))
        .route("/live/{channel}/index.m3u8", get(live_top))
        .route("/live/{channel}/{rendition}/index.m3u8", get(live_media))
        .route("/live/{channel}/{rendition}/{segment}", get(live_segment))
}

fn channel_arg(text: &str) -> Result<ChannelId, ApiError> {
    text.parse()
        .map_err(|e: shoal_protocol::channel::ChannelError| {
            ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
        })
}

/// The channel's view, watching it first if needed and waiting (a while)
/// for its first segment.
async fn view_with_segments(s: &ApiState, channel: ChannelId) -> Result<LiveView, ApiError> {
    s.node.watch(channel).await?;
    let deadline = tokio::time::Instant::now() + FIRST_SEGMENT_WAIT;
    loop {
        let view = s.node.live_view(channel).await?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("not watching {channel}"))
        })?;
        if view.renditions.iter().any(|r| !r.window.is_empty()) {
            return Ok(view);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no segment of channel {channel} has arrived yet; try again shortly"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn playlist(text: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, PLAYLIST_TYPE),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
        .into_response()
}

/// A master playlist naming rendition `i`'s playlist `i/index.m3u8`, from
/// each rendition's (bandwidth, resolution, codecs).
fn master_playlist(
    renditions: impl Iterator<Item = (Option<u64>, Option<String>, Option<String>)>,
) -> Response {
    let variants: Vec<hls::Variant> = renditions
        .enumerate()
        .map(|(i, (bandwidth, resolution, codecs))| hls::Variant {
            uri: format!("{i}/index.m3u8"),
            bandwidth: bandwidth.unwrap_or(0),
            resolution,
            codecs,
        })
        .collect();
    playlist(hls::write_master(&variants))
}

/// The sliding media playlist of one rendition.
fn media_playlist(view: &LiveView, rendition: usize) -> Option<String> {
    let r = view.renditions.get(rendition)?;
    let first = r.window.first().map_or(0, |w| w.sequence);
    let segments: Vec<(String, u64)> = r
        .window
        .iter()
        .map(|w| {
            (
                format!("{}.{}", w.sequence, r.info.segment_extension),
                w.duration_us,
            )
        })
        .collect();
    Some(hls::write_live_media(
        first,
        view.target_duration_us,
        &segments,
    ))
}

async fn live_top(
    State(s): State<Arc<ApiState>>,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    let channel = channel_arg(&channel)?;
    let view = view_with_segments(&s, channel).await?;
    if view.renditions.len() <= 1 {
        let text = media_playlist(&view, 0).unwrap_or_default();
        // Segment URIs are relative to the rendition's folder.
        return Ok(playlist(prefix_uris(&text, "0/")));
    }
    Ok(master_playlist(view.renditions.iter().map(|r| {
        (
            r.info.bandwidth,
            r.info.resolution.clone(),
            r.info.codecs.clone(),
        )
    })))
}

async fn live_media(
    State(s): State<Arc<ApiState>>,
    Path((channel, rendition)): Path<(String, usize)>,
) -> Result<Response, ApiError> {
    let channel = channel_arg(&channel)?;
    let view = view_with_segments(&s, channel).await?;
    let text = media_playlist(&view, rendition).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("channel {channel} has no rendition {rendition}"),
        )
    })?;
    Ok(playlist(text))
}

async fn live_segment(
    State(s): State<Arc<ApiState>>,
    Path((channel, rendition, segment)): Path<(String, usize, String)>,
) -> Result<Response, ApiError> {
    let channel = channel_arg(&channel)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("segment {segment} of channel {channel} is not held here (any more)"),
        )
    };
    let sequence: u64 = segment
        .split_once('.')
        .and_then(|(n, _)| n.parse().ok())
        .ok_or_else(not_found)?;
    let view = s.node.live_view(channel).await?.ok_or_else(not_found)?;
    let w = view
        .renditions
        .get(rendition)
        .and_then(|r| r.window.iter().find(|w| w.sequence == sequence))
        .cloned()
        .ok_or_else(not_found)?;
    let bytes = read_segment(&s, w.manifest, w.sequence).await?;
    Ok(([(header::CONTENT_TYPE, "video/mp2t")], Body::from(bytes)).into_response())
}

fn root_arg(text: &str) -> Result<Cid, ApiError> {
    parse_cid(text).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))
}

/// The stream's root manifest, fetched (not pinned) if this node lacks it.
async fn vod_stream(s: &ApiState, root: Cid) -> Result<StreamManifest, ApiError> {
    let store = s.node.store().clone();
    if !store.has(&root).map_err(ApiError::from)? {
        s.node.fetch_root(root).await?;
    }
    let store = s.node.store().clone();
    let stream = tokio::task::spawn_blocking(move || load_stream(&store, &root))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    if stream.kind == StreamKind::File {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{root} is a file, not an HLS presentation"),
        ));
    }
    Ok(stream)
}

fn vod_media_playlist(stream: &StreamManifest, rendition: usize) -> Option<String> {
    let r = stream.renditions.get(rendition)?;
    let segments: Vec<(String, u64)> = r
        .segments
        .iter()
        .enumerate()
        .map(|(i, seg)| {
            (
                format!("{i}.{}", r.segment_extension),
                seg.duration_us.unwrap_or(0),
            )
        })
        .collect();
    let init = r.init.map(|_| "init.mp4");
    Some(hls::write_media(r.media_sequence, init, &segments))
}

async fn vod_top(
    State(s): State<Arc<ApiState>>,
    Path(root): Path<String>,
) -> Result<Response, ApiError> {
    let root = root_arg(&root)?;
    let stream = vod_stream(&s, root).await?;
    let single = stream.renditions.len() == 1 && stream.renditions[0].bandwidth.is_none();
    if single {
        let text = vod_media_playlist(&stream, 0).unwrap_or_default();
        return Ok(playlist(prefix_uris(&text, "0/")));
    }
    Ok(master_playlist(stream.renditions.iter().map(|r| {
        (r.bandwidth, r.resolution.clone(), r.codecs.clone())
    })))
}

async fn vod_media(
    State(s): State<Arc<ApiState>>,
    Path((root, rendition)): Path<(String, usize)>,
) -> Result<Response, ApiError> {
    let root = root_arg(&root)?;
    let stream = vod_stream(&s, root).await?;
    let text = vod_media_playlist(&stream, rendition).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{root} has no rendition {rendition}"),
        )
    })?;
    Ok(playlist(text))
}

async fn vod_segment(
    State(s): State<Arc<ApiState>>,
    Path((root, rendition, segment)): Path<(String, usize, String)>,
) -> Result<Response, ApiError> {
    let root = root_arg(&root)?;
    let stream = vod_stream(&s, root).await?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{root} has no segment {rendition}/{segment}"),
        )
    };
    let r = stream.renditions.get(rendition).ok_or_else(not_found)?;
    let (manifest, position, ahead) = if segment == "init.mp4" {
        (r.init.ok_or_else(not_found)?, 0, Vec::new())
    } else {
        let i: usize = segment
            .split_once('.')
            .and_then(|(n, _)| n.parse().ok())
            .ok_or_else(not_found)?;
        let seg = r.segments.get(i).ok_or_else(not_found)?;
        let ahead: Vec<Cid> = r
            .segments
            .iter()
            .skip(i + 1)
            .take(VOD_PREFETCH)
            .map(|x| x.cid)
            .collect();
        (seg.cid, i as u64, ahead)
    };
    // Ahead of the playhead, in the background.
    if !ahead.is_empty() {
        let node = s.node.clone();
        tokio::spawn(async move {
            if let Err(e) = node.fetch_segments(root, ahead).await {
                tracing::debug!(%root, error = %e, "prefetch failed");
            }
        });
    }
    let bytes = match read_segment(&s, manifest, position).await {
        Ok(bytes) => bytes,
        Err(_) => {
            s.node.fetch_segments(root, vec![manifest]).await?;
            read_segment(&s, manifest, position).await?
        }
    };
    let content_type = match r.segment_extension.as_str() {
        "ts" => "video/mp2t",
        _ => "video/mp4",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], Body::from(bytes)).into_response())
}

/// Rebuilds a segment from the store and checks it.
async fn read_segment(s: &ApiState, manifest: Cid, position: u64) -> Result<Vec<u8>, ApiError> {
    let store = s.node.store().clone();
    tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        Ok(shoal_storage::assemble::read_segment(
            &store, &manifest, position,
        )?)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// Puts `prefix` before every URI line of a playlist.
fn prefix_uris(text: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        if !line.starts_with('#') && !line.is_empty() {
            out.push_str(prefix);
        } else if let Some(rest) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            out.push_str("#EXT-X-MAP:URI=\"");
            out.push_str(prefix);
            out.push_str(rest);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
