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
//! - `/web/`: the player page (hls.js), with live statistics.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shoal_protocol::channel::ChannelId;
use shoal_storage::hls;

use crate::api::{ApiError, ApiState};
use crate::live::LiveView;

/// How long a first playlist request waits for the first segment of a
/// channel just joined: a late joiner's first segments arrive within a
/// target duration or two.
const FIRST_SEGMENT_WAIT: Duration = Duration::from_secs(20);

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
        let text = text
            .lines()
            .map(|l| {
                if l.starts_with('#') || l.is_empty() {
                    l.to_owned()
                } else {
                    format!("0/{l}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        return Ok(playlist(text));
    }
    let variants: Vec<hls::Variant> = view
        .renditions
        .iter()
        .enumerate()
        .map(|(i, r)| hls::Variant {
            uri: format!("{i}/index.m3u8"),
            bandwidth: r.info.bandwidth.unwrap_or(0),
            resolution: r.info.resolution.clone(),
            codecs: r.info.codecs.clone(),
        })
        .collect();
    Ok(playlist(hls::write_master(&variants)))
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
    let store = s.node.store().clone();
    let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let m = shoal_storage::assemble::load_segment(&store, &w.manifest, w.sequence)?;
        let mut decoder = shoal_storage::codec::Decoder::default();
        let bytes = shoal_storage::assemble::with_segment(
            &store,
            &mut decoder,
            &m,
            &w.manifest,
            w.sequence,
            |parts| parts.concat(),
        )?;
        Ok(bytes)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "video/mp2t")], Body::from(bytes)).into_response())
}
