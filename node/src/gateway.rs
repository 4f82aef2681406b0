//! The HLS gateway: live channels and on-demand streams as ordinary HLS,
//! for any player, on the daemon's port or on its own ([`serve`]; and
//! [`serve_private`] for an app that embeds the node: playlists and
//! segments only, under a secret path).
//!
//! - `/live/<channel>/index.m3u8`: a master playlist when the channel has
//!   several renditions, else the sliding media playlist of its only one.
//!   Asking for it starts watching the channel, so a player needs nothing
//!   but the URL.
//! - `/live/<channel>/<rendition>/index.m3u8`: one rendition's sliding media
//!   playlist, the segments this node holds complete, oldest first.
//! - `/live/<channel>/<rendition>/<sequence>.<ext>`: a segment, rebuilt
//!   from its shards and checked against its hash.
//! - Low-latency channels (their units are parts, [`crate::ll_hls`]): the
//!   media playlist is LL-HLS, and a request for it with `_HLS_msn` (and
//!   `_HLS_part`) waits until the playlist holds that segment or part
//!   (400 when it is too far ahead, 503 after three target durations);
//!   `/live/<channel>/<rendition>/<segment>.<part>.<ext>` is a part, and a
//!   request for one not in yet (the preload hint) waits for it as long;
//!   `<segment>.<ext>` is the segment's parts back to back. A site may
//!   have [`WAITS_PER_SITE`] such requests waiting at once.
//! - `/live/<channel>/stats.json`: the session's numbers and the node's
//!   peer count, read-only (the player page charts them).
//! - `/vod/<root>/index.m3u8` (and `<rendition>/index.m3u8`,
//!   `<rendition>/<n>.<ext>`, `<rendition>/init.mp4`): an on-demand stream,
//!   fetched from the network segment by segment as the player asks, with
//!   the next [`VOD_PREFETCH`] segments fetched ahead of the playhead.
//! - `/web/`: the player page (hls.js); `/metrics`: Prometheus text.
//!
//! What a request may start is decided by where it comes from
//! ([`crate::local_http::Site`]): a player, the CLI or the gateway's own
//! page may start a watch or a fetch, within [`WATCHES_PER_SITE`] channels
//! and [`FETCHES_PER_SITE`] fetches at once per site, and all sites
//! together leave [`RESERVED_WATCHES`] of the node's watch slots to the
//! owner; a page of an origin listed in `[api] player_origins` the same,
//! with CORS headers so that it can read the answers; any other web page
//! gets 403 and starts nothing (it could not read the answers anyway, but
//! it could fill the watch slots and make the node announce channels).
//! Nothing here pins, imports or writes files.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shoal_protocol::block::Cid;
use shoal_protocol::channel::ChannelId;
use shoal_protocol::http::{BlockingReload, GatewayPath, PathError, ReloadAnswer, reload_wait};
use shoal_protocol::manifest::{StreamKind, StreamManifest};
use shoal_storage::assemble::load_stream;
use shoal_storage::hls;

use crate::live::{LiveView, RenditionView};
use crate::ll_hls::{NotWhole, PartState, has_parts, ll_media, part_state, report, whole_segment};
use crate::local_http::{Access, Refused, Site};
use crate::stats::LiveStatsReport;
use crate::{Node, NodeError};
use shoal_protocol::live::group_parts;

/// How long a first playlist request waits for the first segment of a
/// channel just joined: a late joiner's first segments arrive within a
/// target duration or two.
const FIRST_SEGMENT_WAIT: Duration = Duration::from_secs(20);

/// Segments fetched ahead of the one a player asks for: at 2–6 s segments,
/// 8–24 s of video, enough to ride out a slow peer without holding much.
pub const VOD_PREFETCH: usize = 4;

/// Channels one site may have the gateway watch at once: a household's
/// players, or the tabs of one player page.
pub const WATCHES_PER_SITE: usize = 8;

/// Watch slots ([`crate::live::MAX_SESSIONS`]) the gateway never takes, so
/// that the owner's own `shoal watch` always has room.
pub const RESERVED_WATCHES: usize = 8;

/// On-demand fetches one site may run at once (a player asks for one
/// segment at a time; the prefetch runs beside it).
pub const FETCHES_PER_SITE: usize = 4;

/// Of those, how many may be prefetches: a player's own request always
/// finds a slot.
const PREFETCHES_PER_SITE: usize = 2;

/// Blocking requests (a playlist reload or a part not in yet) one site may
/// have waiting at once: hls.js keeps one of each per rendition it loads.
pub const WAITS_PER_SITE: usize = 8;

/// How often a waiting request looks again when no event of its channel
/// woke it (a part passed over at its deadline sends none).
const WAIT_RECHECK: Duration = Duration::from_millis(100);

/// The longest a blocking request waits, whatever target duration a
/// channel's record claims: three of the longest segments a broadcast of
/// this node takes (10 s).
const MAX_WAIT: Duration = Duration::from_secs(30);

/// How long a blocking request of a channel with target `target_us` waits:
/// the spec's three target durations, at most [`MAX_WAIT`].
fn wait_limit(target_us: u64) -> Duration {
    reload_wait(target_us).min(MAX_WAIT)
}

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

/// The player page (`web/`), built into the binary so the daemon needs no
/// files beside it.
const WEB_INDEX: &[u8] = include_bytes!("../../web/index.html");
const WEB_APP: &[u8] = include_bytes!("../../web/app.js");
/// hls.js from npm (version pinned in `web/package.json`).
const WEB_HLS: &[u8] = include_bytes!("../../web/vendor/hls.light.min.js");

/// An error as the gateway answers it: a status and a line of text.
#[derive(Debug)]
pub struct GatewayError(StatusCode, String);

impl GatewayError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        GatewayError(status, message.into())
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        Refused(self.0, self.1).into_response()
    }
}

impl From<NodeError> for GatewayError {
    fn from(e: NodeError) -> Self {
        let status = match e {
            NodeError::Fetch { .. } => StatusCode::NOT_FOUND,
            NodeError::Watch(shoal_protocol::machine::WatchError::TooMany(_)) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            NodeError::Watch(_) | NodeError::Channel(_) | NodeError::Limits(_) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        GatewayError(status, e.to_string())
    }
}

impl From<PathError> for GatewayError {
    fn from(e: PathError) -> Self {
        let status = match e {
            PathError::NotFound => StatusCode::NOT_FOUND,
            PathError::BadChannel(_) | PathError::BadRoot(_) => StatusCode::BAD_REQUEST,
        };
        GatewayError(status, e.to_string())
    }
}

impl From<shoal_storage::StoreError> for GatewayError {
    fn from(e: shoal_storage::StoreError) -> Self {
        GatewayError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<shoal_storage::AssembleError> for GatewayError {
    fn from(e: shoal_storage::AssembleError) -> Self {
        let status = match e {
            shoal_storage::AssembleError::NotFound(_) => StatusCode::NOT_FOUND,
            shoal_storage::AssembleError::NotAStream { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        GatewayError(status, e.to_string())
    }
}

type GatewayResult<T> = Result<T, GatewayError>;

/// The gateway of one node.
pub struct Gateway {
    node: Node,
    access: Access,
    /// Channels each site had the gateway start watching.
    watches: tokio::sync::Mutex<HashMap<Site, HashSet<ChannelId>>>,
    /// On-demand fetches and blocking requests running per site.
    slots: Mutex<HashMap<(Site, SlotKind), usize>>,
    /// The first path segment every request must carry ([`serve_private`]).
    secret: Option<String>,
}

impl Gateway {
    pub fn new(node: Node, access: Access) -> Arc<Gateway> {
        Arc::new(Gateway {
            node,
            access,
            watches: Default::default(),
            slots: Mutex::default(),
            secret: None,
        })
    }

    /// `path` without the secret first segment this gateway requires, or
    /// 404 (compared in constant time: a guess learns nothing from how
    /// long the refusal took).
    fn unprefixed<'a>(&self, path: &'a str) -> GatewayResult<&'a str> {
        let Some(secret) = &self.secret else {
            return Ok(path);
        };
        let not_found = || GatewayError::new(StatusCode::NOT_FOUND, "not found");
        let (given, _) = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .ok_or_else(not_found)?;
        let same = given.len() == secret.len()
            && given
                .bytes()
                .zip(secret.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(not_found());
        }
        Ok(&path[given.len() + 1..])
    }

    /// Watches `channel` for a player of `site` (or keeps watching it),
    /// within the site's share of the watch slots. Starts are taken one at
    /// a time, so that the count and the start cannot race.
    async fn watch_for(&self, site: &Site, channel: ChannelId) -> GatewayResult<()> {
        let mut watches = self.watches.lock().await;
        let watching: HashSet<ChannelId> = self.node.watching().await?.into_iter().collect();
        if !watching.contains(&channel) {
            // Sessions end by themselves when nobody looks: forget those.
            for set in watches.values_mut() {
                set.retain(|c| watching.contains(c));
            }
            let mine = watches.get(site).map_or(0, HashSet::len);
            let all: usize = watches.values().map(HashSet::len).sum();
            let room = crate::live::MAX_SESSIONS - RESERVED_WATCHES;
            if mine >= WATCHES_PER_SITE || all >= room {
                return Err(GatewayError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "players already watch {} channels through this gateway; stop one first",
                        if mine >= WATCHES_PER_SITE { mine } else { all }
                    ),
                ));
            }
            self.node.watch(channel).await?;
            watches.entry(site.clone()).or_default().insert(channel);
            return Ok(());
        }
        drop(watches);
        self.node.watch(channel).await?;
        Ok(())
    }

    /// A slot for one on-demand fetch of `site` while it runs fewer than
    /// `limit`, freed when dropped.
    fn fetch_slot(self: &Arc<Self>, site: &Site, limit: usize) -> GatewayResult<Slot> {
        self.slot(site, SlotKind::Fetch, limit).ok_or_else(|| {
            GatewayError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{FETCHES_PER_SITE} fetches are running for this player already"),
            )
        })
    }

    /// A slot for one blocking request of `site`, freed when dropped.
    fn wait_slot(self: &Arc<Self>, site: &Site) -> GatewayResult<Slot> {
        self.slot(site, SlotKind::Wait, WAITS_PER_SITE)
            .ok_or_else(|| {
                GatewayError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("{WAITS_PER_SITE} requests of this player are waiting already"),
                )
            })
    }

    fn slot(self: &Arc<Self>, site: &Site, kind: SlotKind, limit: usize) -> Option<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let running = slots.entry((site.clone(), kind)).or_default();
        if *running >= limit {
            return None;
        }
        *running += 1;
        Some(Slot {
            gateway: self.clone(),
            key: (site.clone(), kind),
        })
    }
}

/// What a site's slots are counted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum SlotKind {
    /// An on-demand fetch.
    Fetch,
    /// A blocking playlist reload or part request.
    Wait,
}

/// One running fetch or waiting request of a site.
struct Slot {
    gateway: Arc<Gateway>,
    key: (Site, SlotKind),
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = self.gateway.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = slots.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

/// A request placed by the access rules: who asks, for the handlers.
#[derive(Clone)]
struct Asker(Site);

fn page(content_type: &'static str, bytes: &'static [u8]) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], bytes).into_response();
    // Another site must not frame the player page (and click it for the
    // user, or make it start watches hidden in a frame).
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    response
}

/// The gateway's routes, with its access rules applied.
pub fn router(gateway: Arc<Gateway>) -> Router {
    // Every /live/ and /vod/ path is read by one parser
    // (shoal_protocol::http::GatewayPath), the one the fuzzer runs.
    let players = Router::new()
        .route("/vod/{*path}", get(player))
        .route("/live/{*path}", get(player))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            gateway.clone(),
            players_only,
        ))
        .with_state(gateway.clone());
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
        .merge(players)
        .layer(middleware::from_fn_with_state(gateway, known_host))
}

/// The routes of [`serve_private`]: playlists and segments under the
/// secret first segment, nothing else (no player page, no metrics).
fn private_router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/{secret}/vod/{*path}", get(player))
        .route("/{secret}/live/{*path}", get(player))
        .layer(middleware::from_fn_with_state(
            gateway.clone(),
            players_only,
        ))
        .layer(middleware::from_fn_with_state(gateway.clone(), known_host))
        .with_state(gateway)
}

/// Every request: a `Host` this node answers to.
async fn known_host(State(g): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    match g.access.check_host(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// Playlists, segments and statistics: players and the allowed origins'
/// pages only (which also get CORS headers); another web page gets 403.
async fn players_only(State(g): State<Arc<Gateway>>, mut request: Request, next: Next) -> Response {
    let site = g.access.site(request.headers());
    let cors = match &site {
        Site::Local => None,
        Site::Player(origin) => HeaderValue::from_str(origin).ok(),
        Site::Foreign(origin) => {
            tracing::debug!(?origin, path = %request.uri().path(), "refused a web page of another origin");
            return GatewayError::new(
                StatusCode::FORBIDDEN,
                "pages of other origins may not use this gateway; list the page's origin under [api] player_origins to allow it",
            )
            .into_response();
        }
    };
    request.extensions_mut().insert(Asker(site));
    let mut response = next.run(request).await;
    if let Some(origin) = cors {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// A gateway serving on its own: what an app that embeds the node shows
/// its player.
pub struct GatewayServer {
    /// `http://<address>` (and the secret path of [`serve_private`]);
    /// playlists are under it (`/live/<channel>/index.m3u8`).
    pub url: String,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
}

impl GatewayServer {
    /// Stops serving and waits until the server is gone.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.served).await;
    }
}

/// Serves `node`'s gateway on `addr` (port 0: any free one), with the
/// default access rules, until [`GatewayServer::stop`].
pub async fn serve(node: Node, addr: SocketAddr) -> Result<GatewayServer, NodeError> {
    let app = router(Gateway::new(node, Access::default()));
    serve_app(app, addr, "").await
}

/// Serves `node`'s gateway for an app's own player on `addr`: playlists
/// and segments only, every path under `/<secret>/` (the server's `url`
/// includes it). Other apps on a phone share its loopback interface; a
/// secret drawn at each start (say 32 random bytes in hex) keeps them,
/// and web pages, from watching through it or reading what it holds.
pub async fn serve_private(
    node: Node,
    addr: SocketAddr,
    secret: &str,
) -> Result<GatewayServer, NodeError> {
    let gateway = Gateway {
        node,
        access: Access::default(),
        watches: Default::default(),
        slots: Mutex::default(),
        secret: Some(secret.to_owned()),
    };
    let app = private_router(Arc::new(gateway));
    serve_app(app, addr, &format!("/{secret}")).await
}

async fn serve_app(app: Router, addr: SocketAddr, path: &str) -> Result<GatewayServer, NodeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| NodeError::Listen {
            addr: addr.to_string(),
            source: Box::new(e),
        })?;
    let addr = listener.local_addr().map_err(|e| NodeError::Listen {
        addr: addr.to_string(),
        source: Box::new(e),
    })?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(crate::local_http::serve(listener, app, async {
        let _ = stopped.await;
    }));
    Ok(GatewayServer {
        url: format!("http://{addr}{path}"),
        addr,
        stop: Some(stop),
        served,
    })
}

/// A playlist, segment or statistics request, by what its path names.
async fn player(
    State(g): State<Arc<Gateway>>,
    axum::Extension(Asker(site)): axum::Extension<Asker>,
    uri: Uri,
) -> GatewayResult<Response> {
    let query = uri.query().unwrap_or("");
    match GatewayPath::parse(g.unprefixed(uri.path())?)? {
        GatewayPath::LiveTop { channel } => live_top(&g, &site, channel, query).await,
        // An app's private gateway serves playlists and segments only.
        GatewayPath::LiveStats { .. } if g.secret.is_some() => {
            Err(GatewayError::new(StatusCode::NOT_FOUND, "not found"))
        }
        GatewayPath::LiveStats { channel } => live_stats(&g, channel).await,
        GatewayPath::LiveMedia { channel, rendition } => {
            live_media(&g, &site, channel, rendition.into(), query).await
        }
        GatewayPath::LiveInit { channel, rendition } => {
            live_init(&g, &site, channel, rendition.into()).await
        }
        GatewayPath::LiveSegment {
            channel,
            rendition,
            sequence,
        } => live_segment(&g, channel, rendition.into(), sequence).await,
        GatewayPath::LivePart {
            channel,
            rendition,
            segment,
            part,
        } => live_part(&g, &site, channel, rendition.into(), segment, part).await,
        GatewayPath::VodTop { root } => vod_top(&g, &site, root).await,
        GatewayPath::VodMedia { root, rendition } => {
            vod_media(&g, &site, root, rendition.into()).await
        }
        GatewayPath::VodInit { root, rendition } => {
            vod_segment(&g, &site, root, rendition.into(), None).await
        }
        GatewayPath::VodSegment {
            root,
            rendition,
            index,
        } => vod_segment(&g, &site, root, rendition.into(), Some(index)).await,
    }
}

/// The channel's view, watching it first if needed (for `site`) and
/// waiting (a while) for its first segment.
async fn view_with_segments(
    g: &Gateway,
    site: &Site,
    channel: ChannelId,
) -> GatewayResult<LiveView> {
    g.watch_for(site, channel).await?;
    let deadline = tokio::time::Instant::now() + FIRST_SEGMENT_WAIT;
    loop {
        let view = g.node.live_view(channel).await?.ok_or_else(|| {
            GatewayError::new(StatusCode::NOT_FOUND, format!("not watching {channel}"))
        })?;
        if view.renditions.iter().any(playable) {
            return Ok(view);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(GatewayError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no segment of channel {channel} has arrived yet; try again shortly"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a player may start on a rendition: it lists a segment.
fn playable(r: &RenditionView) -> bool {
    if has_parts(r) {
        !group_parts(&r.playlist).closed.is_empty()
    } else {
        !r.playlist.is_empty()
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
    let first = r.playlist.first().map_or(0, |l| l.sequence);
    let segments: Vec<hls::LiveSegment> = r
        .playlist
        .iter()
        .map(|l| hls::LiveSegment {
            uri: format!("{}.{}", l.sequence, r.info.segment_extension),
            duration_us: l.duration_us,
            gap: l.gap,
            // A segment is published once it is complete: its first frame
            // was shown its duration before (plus what the encoder took).
            program_date_ms: l
                .published_ms
                .map(|ms| ms.saturating_sub(l.duration_us / 1000)),
        })
        .collect();
    Some(hls::write_live_media(
        first,
        view.target_duration_us,
        r.info.init.map(|_| "init.mp4"),
        &segments,
    ))
}

async fn live_top(
    g: &Arc<Gateway>,
    site: &Site,
    channel: ChannelId,
    query: &str,
) -> GatewayResult<Response> {
    let view = view_with_segments(g, site, channel).await?;
    if view.renditions.len() <= 1 {
        // Segment URIs are relative to the rendition's folder.
        return serve_media(g, site, view, 0, query, "0/").await;
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
    g: &Arc<Gateway>,
    site: &Site,
    channel: ChannelId,
    rendition: usize,
    query: &str,
) -> GatewayResult<Response> {
    let view = view_with_segments(g, site, channel).await?;
    serve_media(g, site, view, rendition, query, "").await
}

/// Rendition `rendition`'s media playlist (its URIs under `prefix`) from
/// `view` on: at once, or for a blocking reload (`query`) once it holds
/// what was asked.
async fn serve_media(
    g: &Arc<Gateway>,
    site: &Site,
    mut view: LiveView,
    rendition: usize,
    query: &str,
    prefix: &str,
) -> GatewayResult<Response> {
    let channel = view.channel;
    let reload =
        BlockingReload::parse(query).map_err(|e| GatewayError::new(StatusCode::BAD_REQUEST, e))?;
    let mut wait = Wait::new(g);
    loop {
        let r = view.renditions.get(rendition).ok_or_else(|| {
            GatewayError::new(
                StatusCode::NOT_FOUND,
                format!("channel {channel} has no rendition {rendition}"),
            )
        })?;
        if !has_parts(r) {
            // Whole segments: nothing to block for.
            let text = media_playlist(&view, rendition).unwrap_or_default();
            return Ok(playlist(prefix_uris(&text, prefix)));
        }
        // Where the other low-latency renditions stand.
        let reports: Vec<_> = view
            .renditions
            .iter()
            .enumerate()
            .filter(|(j, other)| *j != rendition && has_parts(other))
            .filter_map(|(j, other)| report(other, format!("../{j}/index.m3u8")))
            .collect();
        let media = ll_media(r, view.target_duration_us, &reports).ok_or_else(|| {
            GatewayError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "no segment of rendition {rendition} has begun here yet; try again shortly"
                ),
            )
        })?;
        match reload.map_or(ReloadAnswer::Ready, |b| b.answer(&media.edge)) {
            ReloadAnswer::Ready => return Ok(playlist(prefix_uris(&media.text, prefix))),
            ReloadAnswer::TooFar => {
                return Err(GatewayError::new(
                    StatusCode::BAD_REQUEST,
                    "_HLS_msn or _HLS_part is too far beyond the playlist's end",
                ));
            }
            ReloadAnswer::Wait => {}
        }
        if !wait.next(g, site, channel, view.target_duration_us).await? {
            return Err(GatewayError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the playlist did not reach the asked segment or part in three target durations",
            ));
        }
        view = g.node.live_view(channel).await?.ok_or_else(|| {
            GatewayError::new(StatusCode::NOT_FOUND, format!("not watching {channel}"))
        })?;
    }
}

/// A blocking request's wait: the node's events that wake it (heard from
/// before its first look), and once it first waits, its slot among its
/// site's and its time limit.
struct Wait {
    events: tokio::sync::broadcast::Receiver<crate::NodeEvent>,
    held: Option<(Slot, tokio::time::Instant)>,
}

impl Wait {
    fn new(g: &Gateway) -> Wait {
        Wait {
            events: g.node.events(),
            held: None,
        }
    }

    /// Waits for `channel` to move on; `false` once the request has waited
    /// its limit ([`wait_limit`] of `target_us`, from its first wait). The
    /// first wait takes one of `site`'s slots, or answers 429.
    async fn next(
        &mut self,
        g: &Arc<Gateway>,
        site: &Site,
        channel: ChannelId,
        target_us: u64,
    ) -> GatewayResult<bool> {
        let until = match &self.held {
            Some((_, until)) => *until,
            None => {
                let until = tokio::time::Instant::now() + wait_limit(target_us);
                self.held = Some((g.wait_slot(site)?, until));
                until
            }
        };
        if tokio::time::Instant::now() >= until {
            return Ok(false);
        }
        wait_for_channel(&mut self.events, channel, until).await;
        Ok(true)
    }
}

/// Waits until `channel`'s session reports something, [`WAIT_RECHECK`]
/// passes, or `until`, whichever comes first.
async fn wait_for_channel(
    events: &mut tokio::sync::broadcast::Receiver<crate::NodeEvent>,
    channel: ChannelId,
    until: tokio::time::Instant,
) {
    use tokio::sync::broadcast::error::RecvError;
    let recheck = (tokio::time::Instant::now() + WAIT_RECHECK).min(until);
    let heard = async {
        loop {
            match events.recv().await {
                Ok(crate::NodeEvent::Live { channel: c, .. }) if c == channel => return,
                Ok(_) => {}
                // Missed some: look now.
                Err(RecvError::Lagged(_)) => return,
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    };
    tokio::select! {
        () = heard => {}
        () = tokio::time::sleep_until(recheck) => {}
    }
}

/// The session's numbers, without starting one: `session` is `null` while
/// the node does not watch the channel.
async fn live_stats(g: &Arc<Gateway>, channel: ChannelId) -> GatewayResult<Response> {
    let session = g
        .node
        .live_view(channel)
        .await?
        .map(|v| LiveStatsReport::of(&v));
    let peers = g.node.peers().await?.len();
    let body = serde_json::json!({ "peers": peers, "session": session });
    Ok(([(header::CACHE_CONTROL, "no-cache")], axum::Json(body)).into_response())
}

/// Prometheus text: the node's peers and every watch session's numbers.
async fn metrics(State(g): State<Arc<Gateway>>) -> GatewayResult<Response> {
    let mut sessions = Vec::new();
    for channel in g.node.watching().await? {
        if let Some(view) = g.node.live_view(channel).await? {
            sessions.push(LiveStatsReport::of(&view));
        }
    }
    let peers = g.node.peers().await?.len();
    let text = crate::stats::prometheus(peers, &sessions);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn live_segment(
    g: &Arc<Gateway>,
    channel: ChannelId,
    rendition: usize,
    sequence: u64,
) -> GatewayResult<Response> {
    let not_found = || {
        GatewayError::new(
            StatusCode::NOT_FOUND,
            format!(
                "segment {sequence} of rendition {rendition} of channel {channel} is not held here (any more)"
            ),
        )
    };
    let view = g.node.live_view(channel).await?.ok_or_else(not_found)?;
    let r = view.renditions.get(rendition).ok_or_else(not_found)?;
    if has_parts(r) {
        // A segment is its parts back to back.
        let parts = match whole_segment(r, sequence) {
            Ok(parts) => parts,
            Err(NotWhole::NotHere) => return Err(not_found()),
            Err(NotWhole::TooLarge(total)) => {
                return Err(GatewayError::new(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "segment {sequence} is {total} bytes of parts, over the {} a segment may be; play its parts",
                        shoal_storage::import::MAX_HLS_SEGMENT_BYTES
                    ),
                ));
            }
        };
        let mut bytes = Vec::new();
        for w in parts {
            bytes.extend(read_segment(&g.node, w.manifest, w.sequence).await?);
        }
        return Ok((
            [(header::CONTENT_TYPE, media_type(&r.info.segment_extension))],
            Body::from(bytes),
        )
            .into_response());
    }
    let w = r
        .window
        .iter()
        .find(|w| w.sequence == sequence)
        .cloned()
        .ok_or_else(not_found)?;
    let bytes = read_segment(&g.node, w.manifest, w.sequence).await?;
    Ok((
        [(header::CONTENT_TYPE, media_type(&r.info.segment_extension))],
        Body::from(bytes),
    )
        .into_response())
}

/// Part `part` of segment `segment`: at once if held, else (the preload
/// hint a player asks for ahead) when it comes, within three target
/// durations; 404 for one that will not come.
async fn live_part(
    g: &Arc<Gateway>,
    site: &Site,
    channel: ChannelId,
    rendition: usize,
    segment: u64,
    part: u32,
) -> GatewayResult<Response> {
    let not_found = || {
        GatewayError::new(
            StatusCode::NOT_FOUND,
            format!(
                "part {part} of segment {segment} of rendition {rendition} of channel {channel} is not held here (any more)"
            ),
        )
    };
    let mut wait = Wait::new(g);
    loop {
        let view = g.node.live_view(channel).await?.ok_or_else(not_found)?;
        let r = view.renditions.get(rendition).ok_or_else(not_found)?;
        // Whole segments have no parts to wait for.
        if !has_parts(r) {
            return Err(not_found());
        }
        match part_state(r, segment, part) {
            PartState::Held { manifest, sequence } => {
                let bytes = read_segment(&g.node, manifest, sequence).await?;
                return Ok((
                    [(header::CONTENT_TYPE, media_type(&r.info.segment_extension))],
                    Body::from(bytes),
                )
                    .into_response());
            }
            PartState::Never => return Err(not_found()),
            PartState::Coming => {}
        }
        if !wait.next(g, site, channel, view.target_duration_us).await? {
            return Err(not_found());
        }
    }
}

/// An fMP4 rendition's initialisation section, as its channel record
/// names it: from the store, else fetched from the peers watching (for
/// `site`, within its fetches).
async fn live_init(
    g: &Arc<Gateway>,
    site: &Site,
    channel: ChannelId,
    rendition: usize,
) -> GatewayResult<Response> {
    let view = view_with_segments(g, site, channel).await?;
    let manifest = view
        .renditions
        .get(rendition)
        .and_then(|r| r.info.init)
        .ok_or_else(|| {
            GatewayError::new(
                StatusCode::NOT_FOUND,
                format!("rendition {rendition} of channel {channel} has no init.mp4"),
            )
        })?;
    // No stream root: the fetch looks for the section itself.
    let bytes = read_or_fetch(g, site, manifest, manifest, 0).await?;
    Ok(([(header::CONTENT_TYPE, "video/mp4")], Body::from(bytes)).into_response())
}

/// The media type of a segment named `<n>.<extension>`.
fn media_type(extension: &str) -> &'static str {
    match extension {
        "ts" => "video/mp2t",
        _ => "video/mp4",
    }
}

/// The stream's root manifest, fetched (not pinned) for `site` if this
/// node lacks it.
async fn vod_stream(g: &Arc<Gateway>, site: &Site, root: Cid) -> GatewayResult<StreamManifest> {
    let store = g.node.store().clone();
    if !store.has(&root)? {
        let _slot = g.fetch_slot(site, FETCHES_PER_SITE)?;
        g.node.fetch_root(root).await?;
    }
    let stream = tokio::task::spawn_blocking(move || load_stream(&store, &root))
        .await
        .map_err(|e| GatewayError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    if stream.kind == StreamKind::File {
        return Err(GatewayError::new(
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

async fn vod_top(g: &Arc<Gateway>, site: &Site, root: Cid) -> GatewayResult<Response> {
    let stream = vod_stream(g, site, root).await?;
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
    g: &Arc<Gateway>,
    site: &Site,
    root: Cid,
    rendition: usize,
) -> GatewayResult<Response> {
    let stream = vod_stream(g, site, root).await?;
    let text = vod_media_playlist(&stream, rendition).ok_or_else(|| {
        GatewayError::new(
            StatusCode::NOT_FOUND,
            format!("{root} has no rendition {rendition}"),
        )
    })?;
    Ok(playlist(text))
}

/// Segment `index` of a rendition (`None`: its init section).
async fn vod_segment(
    g: &Arc<Gateway>,
    site: &Site,
    root: Cid,
    rendition: usize,
    index: Option<u64>,
) -> GatewayResult<Response> {
    let stream = vod_stream(g, site, root).await?;
    let not_found = || {
        let which = index.map_or("init.mp4".to_string(), |i| format!("segment {i}"));
        GatewayError::new(
            StatusCode::NOT_FOUND,
            format!("{root} has no {which} in rendition {rendition}"),
        )
    };
    let r = stream.renditions.get(rendition).ok_or_else(not_found)?;
    let (manifest, position, ahead) = match index {
        None => (r.init.ok_or_else(not_found)?, 0, Vec::new()),
        Some(i) => {
            let i = usize::try_from(i).map_err(|_| not_found())?;
            let seg = r.segments.get(i).ok_or_else(not_found)?;
            let ahead: Vec<Cid> = r
                .segments
                .iter()
                .skip(i + 1)
                .take(VOD_PREFETCH)
                .map(|x| x.cid)
                .collect();
            (seg.cid, i as u64, ahead)
        }
    };
    // Ahead of the playhead, in the background, if the site has a fetch
    // to spare.
    if !ahead.is_empty()
        && let Ok(slot) = g.fetch_slot(site, PREFETCHES_PER_SITE)
    {
        let node = g.node.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = node.fetch_segments(root, ahead).await {
                tracing::debug!(%root, error = %e, "prefetch failed");
            }
        });
    }
    let bytes = read_or_fetch(g, site, root, manifest, position).await?;
    Ok((
        [(header::CONTENT_TYPE, media_type(&r.segment_extension))],
        Body::from(bytes),
    )
        .into_response())
}

/// Segment `manifest` (number `position`) from the store, else fetched
/// (under `root`, for `site`, within its fetches) and then read.
async fn read_or_fetch(
    g: &Arc<Gateway>,
    site: &Site,
    root: Cid,
    manifest: Cid,
    position: u64,
) -> GatewayResult<Vec<u8>> {
    if let Ok(bytes) = read_segment(&g.node, manifest, position).await {
        return Ok(bytes);
    }
    let _slot = g.fetch_slot(site, FETCHES_PER_SITE)?;
    g.node.fetch_segments(root, vec![manifest]).await?;
    read_segment(&g.node, manifest, position).await
}

/// Rebuilds a segment from the store and checks it.
async fn read_segment(node: &Node, manifest: Cid, position: u64) -> GatewayResult<Vec<u8>> {
    let store = node.store().clone();
    tokio::task::spawn_blocking(move || -> GatewayResult<Vec<u8>> {
        Ok(shoal_storage::assemble::read_segment(
            &store, &manifest, position,
        )?)
    })
    .await
    .map_err(|e| GatewayError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// Puts `prefix` before every URI line of a playlist.
fn prefix_uris(text: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        if !line.starts_with('#') && !line.is_empty() {
            out.push_str(prefix);
        } else if let Some(at) = line.find("URI=\"") {
            // A tag naming a file: EXT-X-MAP, EXT-X-PART, the preload hint.
            let (tag, uri) = line.split_at(at + 5);
            out.push_str(tag);
            out.push_str(prefix);
            out.push_str(uri);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
