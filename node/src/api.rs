//! The daemon's control API: JSON under `/api/v0/`, for the node's owner
//! only (the CLI, or a script of the user's).
//!
//! Any web page the user opens can send requests to this port, so every
//! call must pass, in this order:
//!
//! 1. `Host`: an IP literal, `localhost` or a name listed in `[api] hosts`
//!    (DNS rebinding), else 403 ([`crate::local_http::Access`]);
//! 2. no browser page of another origin (`Origin`, `Sec-Fetch-Site`), else
//!    403;
//! 3. `POST` for every call, reads included, so that no link, image or
//!    form GET can reach it (405 otherwise);
//! 4. `Authorization: Bearer <token>`, the token in the repo's `api.token`
//!    file (mode 0600, written by the daemon at start; `[api] token` in
//!    `config.toml` fixes it for clients on other machines), else 401.
//!
//! Errors are JSON `{"error": "..."}` with a 4xx or 5xx status. The
//! response types are shared with the CLI, which prints the same JSON
//! whether it went through a daemon or opened the repo itself. What a
//! player needs (playlists, segments, read-only statistics) is the
//! gateway's, apart from this ([`crate::gateway`]).

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_protocol::block::{Cid, parse_cid};
use shoal_protocol::channel::ChannelId;
use shoal_storage::{AssembleError, Blockstore, ImportError, ImportOptions, StoreError};

use crate::limits::Limits;
use crate::local_http::{Access, Site};
use crate::stats::LiveStatsReport;
use crate::{Node, NodeError};

/// What `add` reports.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AddResult {
    pub root: String,
    pub kind: String,
    pub size: u64,
    pub segments: u64,
    pub blocks: u64,
    pub k: u16,
    pub m: u16,
}

/// What `repo stat` reports.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepoStat {
    pub path: PathBuf,
    pub blocks: u64,
    pub bytes: u64,
    pub quota_bytes: Option<u64>,
    pub pinned_roots: u64,
    pub database_bytes: u64,
}

/// What `id` reports.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdResult {
    pub peer_id: String,
    pub addrs: Vec<String>,
}

/// Imports a file or HLS presentation and reports it (used by the API and
/// by the CLI when no daemon runs).
pub fn add(
    store: &Blockstore,
    path: &std::path::Path,
    hls: bool,
    options: &ImportOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<AddResult, ImportError> {
    let imported = if hls {
        shoal_storage::import_hls(store, path, options, progress)?
    } else {
        shoal_storage::import_file(store, path, options, progress)?
    };
    Ok(AddResult {
        root: imported.root.to_string(),
        kind: if hls { "hls-vod" } else { "file" }.into(),
        size: imported.size,
        segments: imported.segments,
        blocks: imported.blocks,
        k: options.k,
        m: options.m,
    })
}

/// The store's totals as reported by `repo stat`.
pub fn repo_stat(store: &Blockstore, dir: &std::path::Path) -> Result<RepoStat, StoreError> {
    let s = store.stat()?;
    Ok(RepoStat {
        path: dir.to_owned(),
        blocks: s.blocks,
        bytes: s.bytes,
        quota_bytes: s.quota,
        pinned_roots: s.pinned_roots,
        database_bytes: s.file_bytes,
    })
}

pub(crate) struct ApiState {
    pub(crate) node: Node,
    pub(crate) dir: PathBuf,
    pub(crate) import: ImportOptions,
    /// The secret every call carries (`Authorization: Bearer`).
    pub(crate) token: String,
    pub(crate) access: Access,
    /// Channels being broadcast now: a second broadcast of one would
    /// announce every sequence twice.
    pub(crate) broadcasting: std::sync::Mutex<std::collections::HashSet<ChannelId>>,
}

/// An error as the API returns it.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::Missing(_) | StoreError::NotPinned(_) => StatusCode::NOT_FOUND,
            StoreError::Pinned(_) | StoreError::QuotaExceeded { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Store(s) => s.into(),
            other => bad_request(other.to_string()),
        }
    }
}

impl From<AssembleError> for ApiError {
    fn from(e: AssembleError) -> Self {
        let status = match e {
            AssembleError::NotFound(_) => StatusCode::NOT_FOUND,
            AssembleError::NotAStream { .. } | AssembleError::Io { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let status = match e {
            NodeError::Fetch { .. } => StatusCode::NOT_FOUND,
            NodeError::Dial { .. } => StatusCode::BAD_GATEWAY,
            NodeError::Watch(shoal_protocol::machine::WatchError::TooMany(_)) => {
                StatusCode::CONFLICT
            }
            NodeError::Watch(_) | NodeError::Channel(_) | NodeError::Limits(_) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

#[derive(Deserialize)]
struct Arg {
    arg: String,
}

fn cid_arg(q: &Arg) -> ApiResult<Cid> {
    parse_cid(&q.arg).map_err(bad_request)
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

pub(crate) fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/v0/id", post(id))
        .route("/api/v0/peers", post(peers))
        .route("/api/v0/connect", post(connect))
        .route("/api/v0/add", post(add_handler))
        .route("/api/v0/cat", post(cat))
        .route("/api/v0/fetch", post(fetch))
        .route("/api/v0/export-hls", post(export_hls))
        .route("/api/v0/pin/add", post(pin_add))
        .route("/api/v0/pin/rm", post(pin_rm))
        .route("/api/v0/pin/ls", post(pin_ls))
        .route("/api/v0/repo/stat", post(stat))
        .route("/api/v0/repo/gc", post(gc))
        .route("/api/v0/repo/verify", post(verify))
        .route("/api/v0/watch", post(watch))
        .route("/api/v0/unwatch", post(unwatch))
        .route("/api/v0/stats", post(stats))
        .route("/api/v0/broadcast", post(broadcast))
        .route("/api/v0/limits", post(limits))
        .route("/api/v0/rewards", post(rewards))
        .route("/api/v0/rewards/claim", post(rewards_claim))
        .route(
            "/api/v0/{*call}",
            post(|| async {
                ApiError(
                    StatusCode::NOT_FOUND,
                    "no such API call (calls are POST /api/v0/<call>)".into(),
                )
            }),
        )
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// The checks every call passes, in the order of the module documentation.
async fn authorize(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if let Err(refused) = state.access.check_host(headers) {
        return refused.into_response();
    }
    if let Site::Foreign(origin) = state.access.site(headers) {
        tracing::warn!(?origin, path = %request.uri().path(), "refused a web page's call to the control API");
        return ApiError(
            StatusCode::FORBIDDEN,
            "the control API does not answer web pages; the gateway (/live, /vod, /web) is for players"
                .into(),
        )
        .into_response();
    }
    if request.method() != axum::http::Method::POST {
        return ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            "the control API takes POST only".into(),
        )
        .into_response();
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), state.token.as_bytes())) {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send `Authorization: Bearer <token>` with the token in the repo's api.token file".into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// Compares two secrets in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn id(State(s): State<Arc<ApiState>>) -> ApiResult<Json<IdResult>> {
    let addrs = s.node.listen_addrs().await?;
    Ok(Json(IdResult {
        peer_id: s.node.peer_id().to_string(),
        addrs: addrs.iter().map(ToString::to_string).collect(),
    }))
}

async fn peers(State(s): State<Arc<ApiState>>) -> ApiResult<Json<serde_json::Value>> {
    let peers: Vec<String> = s
        .node
        .peers()
        .await?
        .iter()
        .map(ToString::to_string)
        .collect();
    let connections: Vec<serde_json::Value> = s
        .node
        .connections()
        .await?
        .iter()
        .map(|(p, a)| serde_json::json!({ "peer": p.to_string(), "addr": a.to_string() }))
        .collect();
    Ok(Json(
        serde_json::json!({ "peers": peers, "connections": connections }),
    ))
}

async fn connect(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<Arg>,
) -> ApiResult<Json<serde_json::Value>> {
    let addr: libp2p::Multiaddr = q
        .arg
        .parse()
        .map_err(|e| bad_request(format!("invalid multiaddr {:?}: {e}", q.arg)))?;
    let peer = s.node.dial(addr).await?;
    Ok(Json(serde_json::json!({ "peer_id": peer.to_string() })))
}

#[derive(Deserialize)]
struct AddQuery {
    path: PathBuf,
    #[serde(default)]
    hls: bool,
    k: Option<u16>,
    m: Option<u16>,
    segment_size: Option<usize>,
}

async fn add_handler(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<AddQuery>,
) -> ApiResult<Json<AddResult>> {
    if !q.path.is_absolute() {
        return Err(bad_request(format!(
            "{} is not an absolute path",
            q.path.display()
        )));
    }
    let mut options = s.import;
    options.k = q.k.unwrap_or(options.k);
    options.m = q.m.unwrap_or(options.m);
    options.segment_size = q.segment_size.unwrap_or(options.segment_size);
    let store = s.node.store().clone();
    let result = blocking(move || add(&store, &q.path, q.hls, &options, &mut |_| {})).await??;
    let root = parse_cid(&result.root).map_err(bad_request)?;
    s.node.provide(root).await?;
    Ok(Json(result))
}

fn channel_arg(q: &Arg) -> ApiResult<ChannelId> {
    q.arg
        .parse()
        .map_err(|e: shoal_protocol::channel::ChannelError| bad_request(e.to_string()))
}

/// `?arg=CHANNEL[&origin=URL]...`
async fn watch(
    State(s): State<Arc<ApiState>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Json<serde_json::Value>> {
    let mut arg = None;
    let mut origins = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "arg" => arg = Some(v),
            "origin" => origins.push(v),
            other => return Err(bad_request(format!("unknown parameter {other:?}"))),
        }
    }
    let channel = channel_arg(&Arg {
        arg: arg.ok_or_else(|| bad_request("which channel? (arg=…)".to_string()))?,
    })?;
    s.node.watch_with_origins(channel, &origins).await?;
    Ok(Json(serde_json::json!({
        "channel": channel.to_string(),
        "url": format!("/live/{channel}/index.m3u8"),
    })))
}

async fn unwatch(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<Arg>,
) -> ApiResult<Json<serde_json::Value>> {
    let channel = channel_arg(&q)?;
    s.node.unwatch(channel).await?;
    Ok(Json(serde_json::json!({ "channel": channel.to_string() })))
}

#[derive(Deserialize)]
struct OptArg {
    arg: Option<String>,
}

/// Every watch session (or the one named), with the node's peer count.
async fn live_reports(s: &ApiState, only: Option<ChannelId>) -> ApiResult<Vec<LiveStatsReport>> {
    let channels = match only {
        Some(c) => vec![c],
        None => s.node.watching().await?,
    };
    let mut out = Vec::new();
    for c in channels {
        if let Some(view) = s.node.live_view(c).await? {
            out.push(LiveStatsReport::of(&view));
        }
    }
    Ok(out)
}

async fn stats(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<OptArg>,
) -> ApiResult<Json<serde_json::Value>> {
    let only = match q.arg {
        Some(arg) => Some(channel_arg(&Arg { arg })?),
        None => None,
    };
    let sessions = live_reports(&s, only).await?;
    if only.is_some() && sessions.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "not watching that channel".into(),
        ));
    }
    let peers = s.node.peers().await?.len();
    Ok(Json(
        serde_json::json!({ "peers": peers, "sessions": sessions }),
    ))
}

/// The node's limits, after changing those the body names (a JSON object;
/// an empty body changes nothing).
async fn limits(State(s): State<Arc<ApiState>>, body: Bytes) -> ApiResult<Json<Limits>> {
    let current = s.node.limits().await?;
    if body.is_empty() {
        return Ok(Json(current));
    }
    let change: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("limits: {e}")))?;
    let mut merged = serde_json::to_value(&current)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (Some(m), Some(c)) = (merged.as_object_mut(), change.as_object()) else {
        return Err(bad_request("expected a JSON object of limits"));
    };
    for (k, v) in c {
        m.insert(k.clone(), v.clone());
    }
    let limits: Limits = serde_json::from_value(merged).map_err(|e| bad_request(e.to_string()))?;
    limits.validate().map_err(|e| bad_request(e.to_string()))?;
    s.node.set_limits(limits).await?;
    Ok(Json(s.node.limits().await?))
}

/// What `shoal broadcast` asks for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BroadcastRequest {
    pub name: String,
    /// The folder an HLS encoder writes; or else:
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Fragmented MP4 streams to read (FIFOs encoders write into), one
    /// rendition each, in order.
    #[serde(default)]
    pub fmp4: Vec<PathBuf>,
    /// With `fmp4`: segments close at the first keyframe past this
    /// [default: 2000].
    #[serde(default)]
    pub segment_ms: Option<u64>,
    /// With `fmp4`: low-latency live, every fragment published as a part
    /// the moment it is in.
    #[serde(default)]
    pub low_latency: bool,
    #[serde(default)]
    pub playlist: Option<String>,
    #[serde(default)]
    pub origins: Vec<String>,
    #[serde(default)]
    pub k: Option<u16>,
    #[serde(default)]
    pub m: Option<u16>,
}

/// Broadcasts until the encoder ends the stream or the client goes away;
/// the response is one JSON line per published segment, and a last line
/// `{"error": ...}` if the broadcast failed.
async fn broadcast(
    State(s): State<Arc<ApiState>>,
    Json(req): Json<BroadcastRequest>,
) -> ApiResult<Response> {
    if let Some(p) = req.dir.iter().chain(&req.fmp4).find(|p| !p.is_absolute()) {
        return Err(bad_request(format!(
            "{} is not an absolute path",
            p.display()
        )));
    }
    let key =
        crate::channel_keys::load(&s.dir, &req.name).map_err(|e| bad_request(e.to_string()))?;
    let mut import = s.import;
    import.k = req.k.unwrap_or(import.k);
    import.m = req.m.unwrap_or(import.m);
    import.validate_coding()?;
    let input = match (req.dir, req.fmp4.is_empty()) {
        (Some(dir), true) => {
            let options = crate::broadcast::BroadcastOptions {
                dir,
                playlist: req.playlist,
                origins: req.origins,
                import,
                name: req.name.clone(),
            };
            options.validate().map_err(|e| bad_request(e.to_string()))?;
            if req.low_latency {
                return Err(bad_request(
                    "low latency needs an fMP4 stream (fmp4): an HLS folder lists whole segments",
                ));
            }
            Input::Folder(options)
        }
        (None, false) => {
            let sources = req.fmp4;
            if sources.len() > shoal_protocol::channel::MAX_LIVE_RENDITIONS {
                return Err(bad_request(format!(
                    "{} fMP4 streams; a channel has at most {} renditions",
                    sources.len(),
                    shoal_protocol::channel::MAX_LIVE_RENDITIONS
                )));
            }
            if req.playlist.is_some() {
                return Err(bad_request(
                    "a playlist goes with a folder, not an fMP4 stream",
                ));
            }
            for o in &req.origins {
                shoal_protocol::channel::check_origin(o).map_err(bad_request)?;
            }
            let ms = req.segment_ms.unwrap_or(2000);
            if !(100..=MAX_SEGMENT_MS).contains(&ms) {
                return Err(bad_request(format!(
                    "a segment of {} s: choose 0.1 to {} s",
                    ms as f64 / 1000.0,
                    MAX_SEGMENT_MS / 1000
                )));
            }
            // Opened in the task; but they must be there.
            for source in &sources {
                if let Err(e) = std::fs::metadata(source) {
                    return Err(bad_request(format!("{}: {e}", source.display())));
                }
            }
            let options = crate::broadcast::Fmp4Options {
                source: sources[0].clone(),
                segment_duration: std::time::Duration::from_millis(ms),
                parts: req.low_latency,
                origins: req.origins,
                import,
                name: req.name.clone(),
            };
            Input::Fmp4(options, sources)
        }
        _ => {
            return Err(bad_request(
                "name either the encoder's folder (dir) or its fMP4 stream (fmp4)",
            ));
        }
    };
    let channel = key.id();
    let guard = BroadcastGuard::claim(&s, channel).ok_or_else(|| {
        ApiError(
            StatusCode::CONFLICT,
            format!("channel {:?} is already being broadcast", req.name),
        )
    })?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let (line_tx, line_rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let node = s.node.clone();
    let first = serde_json::json!({ "channel": channel.to_string() }).to_string() + "\n";
    let _ = line_tx.send(Ok(Bytes::from(first))).await;
    let lines = line_tx.clone();
    tokio::spawn(async move {
        loop {
            // A client that goes away ends the broadcast, also while
            // nothing is being published.
            let p = tokio::select! {
                p = rx.recv() => p,
                () = lines.closed() => return,
            };
            let Some(p) = p else { return };
            let line = serde_json::to_string(&p).unwrap_or_default() + "\n";
            if lines.send(Ok(Bytes::from(line))).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let _guard = guard;
        let result = match input {
            Input::Folder(options) => crate::broadcast::broadcast(node, key, options, tx).await,
            Input::Fmp4(options, sources) => {
                let mut inputs = Vec::with_capacity(sources.len());
                let mut failed = None;
                for source in sources {
                    match crate::broadcast::open_fmp4_source(&source).await {
                        Ok(input) => inputs.push(input),
                        Err(e) => {
                            failed = Some(crate::broadcast::BroadcastError::Input {
                                path: source,
                                detail: e.to_string(),
                            });
                            break;
                        }
                    }
                }
                match failed {
                    Some(e) => Err(e),
                    None => crate::broadcast::broadcast_fmp4(node, key, options, inputs, tx).await,
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!(%channel, error = %e, "broadcast stopped");
            let line = serde_json::json!({ "error": e.to_string() }).to_string() + "\n";
            let _ = line_tx.send(Ok(Bytes::from(line))).await;
        }
    });
    let body = Body::from_stream(receiver_stream(line_rx));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// The longest segment a broadcast of an fMP4 stream may ask for: HLS
/// players hold three target durations back.
const MAX_SEGMENT_MS: u64 = 10_000;

/// Where a broadcast reads its segments.
enum Input {
    Folder(crate::broadcast::BroadcastOptions),
    /// The options, and the streams (one rendition each).
    Fmp4(crate::broadcast::Fmp4Options, Vec<PathBuf>),
}

/// A channel marked as being broadcast, until dropped.
struct BroadcastGuard {
    state: Arc<ApiState>,
    channel: ChannelId,
}

impl BroadcastGuard {
    fn claim(state: &Arc<ApiState>, channel: ChannelId) -> Option<Self> {
        let mut set = state.broadcasting.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(channel).then(|| BroadcastGuard {
            state: state.clone(),
            channel,
        })
    }
}

impl Drop for BroadcastGuard {
    fn drop(&mut self) {
        let mut set = self
            .state
            .broadcasting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        set.remove(&self.channel);
    }
}

/// A receiver as a stream (of body chunks).
fn receiver_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Makes sure the stream is complete in the store, fetching what is missing
/// from the network.
async fn ensure_local(s: &ApiState, root: Cid) -> ApiResult<()> {
    let store = s.node.store().clone();
    let complete = blocking(move || shoal_storage::assemble::is_complete(&store, &root)).await??;
    if !complete {
        s.node.fetch(root).await?;
    }
    Ok(())
}

async fn fetch(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<Arg>,
) -> ApiResult<Json<serde_json::Value>> {
    let root = cid_arg(&q)?;
    let report = s.node.fetch(root).await?;
    Ok(Json(serde_json::json!({
        "root": root.to_string(),
        "segments": report.segments,
        "blocks_fetched": report.blocks_fetched,
        "bytes_fetched": report.bytes_fetched,
        "from_peers": report.from_peers.iter().map(|(p, b)| serde_json::json!({"peer": p.to_string(), "bytes": b})).collect::<Vec<_>>(),
    })))
}

/// Chunks of a streamed response in flight: bounded, so a slow reader
/// holds at most a few segments' worth of memory.
const CAT_CHUNKS: usize = 4;

async fn cat(State(s): State<Arc<ApiState>>, Query(q): Query<Arg>) -> ApiResult<Response> {
    let root = cid_arg(&q)?;
    ensure_local(&s, root).await?;
    let store = s.node.store().clone();
    // Errors that can be reported with a status come before the first byte.
    let size = {
        let store = store.clone();
        blocking(move || shoal_storage::assemble::load_stream(&store, &root))
            .await??
            .size
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(CAT_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter(tx.clone());
        if let Err(e) = shoal_storage::write_stream(&store, &root, &mut writer, &mut |_| {}) {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = Body::from_stream(receiver_stream(rx));
    Ok(([(header::CONTENT_LENGTH, size.to_string())], body).into_response())
}

/// A `Write` that hands its bytes to an async body.
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Deserialize)]
struct ExportQuery {
    arg: String,
    dir: PathBuf,
}

async fn export_hls(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let root = parse_cid(&q.arg).map_err(bad_request)?;
    if !q.dir.is_absolute() {
        return Err(bad_request(format!(
            "{} is not an absolute path",
            q.dir.display()
        )));
    }
    ensure_local(&s, root).await?;
    let store = s.node.store().clone();
    let entry =
        blocking(move || shoal_storage::export_hls(&store, &root, &q.dir, &mut |_| {})).await??;
    Ok(Json(serde_json::json!({ "entry": entry })))
}

async fn pin_add(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<Arg>,
) -> ApiResult<Json<serde_json::Value>> {
    let root = cid_arg(&q)?;
    let store = s.node.store().clone();
    blocking(move || store.pin(&root)).await??;
    Ok(Json(serde_json::json!({ "pinned": root.to_string() })))
}

async fn pin_rm(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<Arg>,
) -> ApiResult<Json<serde_json::Value>> {
    let root = cid_arg(&q)?;
    let store = s.node.store().clone();
    blocking(move || store.unpin(&root)).await??;
    Ok(Json(serde_json::json!({ "unpinned": root.to_string() })))
}

async fn pin_ls(State(s): State<Arc<ApiState>>) -> ApiResult<Json<serde_json::Value>> {
    let store = s.node.store().clone();
    let pins = blocking(move || store.pins()).await??;
    let pins: Vec<String> = pins.iter().map(ToString::to_string).collect();
    Ok(Json(serde_json::json!({ "pins": pins })))
}

async fn stat(State(s): State<Arc<ApiState>>) -> ApiResult<Json<RepoStat>> {
    let store = s.node.store().clone();
    let dir = s.dir.clone();
    Ok(Json(blocking(move || repo_stat(&store, &dir)).await??))
}

async fn gc(State(s): State<Arc<ApiState>>) -> ApiResult<Json<serde_json::Value>> {
    let store = s.node.store().clone();
    let g = blocking(move || store.gc()).await??;
    Ok(Json(
        serde_json::json!({ "blocks": g.blocks, "bytes": g.bytes }),
    ))
}

async fn verify(State(s): State<Arc<ApiState>>) -> ApiResult<Json<serde_json::Value>> {
    let store = s.node.store().clone();
    let damaged = blocking(move || store.verify_all()).await??;
    let damaged: Vec<String> = damaged.iter().map(ToString::to_string).collect();
    Ok(Json(serde_json::json!({ "damaged": damaged })))
}

/// What `shoal rewards` shows of a running node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RewardsReport {
    pub wallet: String,
    pub accounts: Vec<crate::rewards::AccountReport>,
    pub receipts: Vec<crate::rewards::ReceiptReport>,
}

async fn rewards(State(s): State<Arc<ApiState>>) -> ApiResult<Json<RewardsReport>> {
    let wallet = s.node.wallet_address().await?;
    let mut accounts: Vec<_> = s
        .node
        .accounts()
        .await?
        .iter()
        .map(|(p, a)| crate::rewards::AccountReport::of(p, a))
        .collect();
    accounts.sort_by_key(|a| std::cmp::Reverse(a.served_bytes));
    let receipts = crate::rewards::receipt_reports(s.node.store())?;
    Ok(Json(RewardsReport {
        wallet: wallet.to_string(),
        accounts,
        receipts,
    }))
}

#[cfg(feature = "settle")]
#[derive(Deserialize)]
struct ClaimQuery {
    rpc: Option<String>,
}

#[cfg(feature = "settle")]
/// Claims with the receipts held, on the chain of `[rewards]` (or `rpc`).
async fn rewards_claim(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<ClaimQuery>,
) -> ApiResult<Json<crate::settle::ClaimOutcome>> {
    let chain = crate::settle::from_repo(&s.dir, q.rpc.as_deref())
        .await
        .map_err(bad_request)?;
    Ok(Json(s.node.claim(&chain).await?))
}

/// This build has no chain client.
#[cfg(not(feature = "settle"))]
async fn rewards_claim() -> ApiError {
    ApiError(
        StatusCode::NOT_IMPLEMENTED,
        "this build of shoal has no chain client (the `settle` feature)".into(),
    )
}
