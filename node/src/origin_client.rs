//! The HTTP origin client: what a live session asks of a CDN when peers
//! cannot make a deadline, or when no peer announces the channel at all.
//!
//! - [`fetch_and_store_range`]: a late segment's missing data shards, as
//!   one byte range of the encoder's file, every shard verified against
//!   the signed manifest before any is stored (a server that ignores the
//!   range and sends the whole file is fine; a body of the wrong length,
//!   or shards that do not match, are not);
//! - [`read_origin`]: a proxying session's media playlists;
//! - [`proxy_segment`]: a segment fetched whole and coded into the store.
//!
//! Origins are URLs the user or the channel's key vouched for, and nothing
//! else ([`Origins`]): a redirect may not leave the origin's host; an
//! origin only a channel record names may not be, or resolve to, a
//! loopback, private or link-local address (a record is anyone's to sign,
//! and a viewer's node must not become its reader of the viewer's LAN),
//! unless the user named that origin themselves or allowed private
//! origins; master-playlist variants must be plain relative paths; bodies
//! and times are bounded.

use shoal_protocol::block::{self, Cid, Codec};
use shoal_protocol::channel::{LiveRendition, MAX_LIVE_RENDITIONS, is_safe_relative_path};
use shoal_protocol::live::{
    HttpRequest, OriginMedia, OriginPlaylists, PlaylistSources, ProxiedSegment, ProxySegment,
    shards_from_range,
};
use shoal_storage::Blockstore;
use shoal_storage::hls::{self, MediaPlaylist, Playlist};

/// Redirects followed, at most, within an origin's host.
const MAX_REDIRECTS: usize = 5;

/// `scheme://host:port` of a URL: what a redirect may not leave and what
/// a user vouches for by naming an origin.
fn site(url: &reqwest::Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

/// Resolves names to public addresses only: what a record-named origin
/// may reach, checked at every connection (so DNS rebinding gains
/// nothing).
struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| crate::ip_limit::is_public_ip(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (an origin only a channel record names must be on the Internet)"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// TLS for HTTPS origins without the platform: rustls on ring, the
/// Mozilla roots compiled in (`webpki-roots`), TLS 1.2 and 1.3. Nothing to
/// set up on a phone (Android's platform verifier needs JNI, aws-lc a
/// CMake cross-build).
#[cfg(feature = "origin-tls-webpki")]
fn webpki_tls() -> Result<rustls::ClientConfig, rustls::Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The client speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The HTTP clients for origins, and which origins the user vouched for.
#[derive(Clone)]
pub(crate) struct Origins {
    /// For origins the user named (or all, with private origins allowed).
    vouched: reqwest::Client,
    /// For origins only a channel record names: public addresses only.
    public: reqwest::Client,
    /// Sites the user named (`scheme://host:port`).
    named: std::sync::Arc<std::collections::BTreeSet<String>>,
    allow_private: bool,
}

impl Origins {
    pub(crate) fn new(
        timeout: std::time::Duration,
        allow_private: bool,
    ) -> Result<Origins, Box<dyn std::error::Error + Send + Sync>> {
        let same_site = || {
            reqwest::redirect::Policy::custom(|attempt| {
                let first = attempt.previous().first().map(site);
                if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if first.is_some_and(|f| f != site(attempt.url())) {
                    attempt.error("a redirect to another host")
                } else {
                    attempt.follow()
                }
            })
        };
        type BoxError = Box<dyn std::error::Error + Send + Sync>;
        let builder = || -> Result<reqwest::ClientBuilder, BoxError> {
            let b = reqwest::Client::builder()
                .timeout(timeout)
                .redirect(same_site());
            #[cfg(feature = "origin-tls-webpki")]
            let b = b.tls_backend_preconfigured(webpki_tls()?);
            Ok(b)
        };
        Ok(Origins {
            vouched: builder()?.build()?,
            public: builder()?
                .dns_resolver(std::sync::Arc::new(PublicResolver))
                .build()?,
            named: Default::default(),
            allow_private,
        })
    }

    /// The user named these origins (a watch with origins of their own).
    pub(crate) fn vouch(&mut self, origins: &[String]) {
        let mut named = (*self.named).clone();
        for o in origins {
            if let Ok(url) = reqwest::Url::parse(o) {
                named.insert(site(&url));
            }
        }
        self.named = std::sync::Arc::new(named);
    }

    /// A GET of `url` through the client its provenance allows, or why
    /// not.
    fn get(&self, url: &str) -> Result<reqwest::RequestBuilder, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("{url}: not an http(s) URL"));
        }
        if self.allow_private || self.named.contains(&site(&parsed)) {
            return Ok(self.vouched.get(parsed));
        }
        let literal = parsed
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<std::net::IpAddr>().ok());
        if literal.is_some_and(|ip| !crate::ip_limit::is_public_ip(ip)) {
            return Err(format!(
                "{url}: refused, a private address that only a channel record names"
            ));
        }
        Ok(self.public.get(parsed))
    }
}

/// The longest segment an HTTP origin may send (matches the importer's
/// limit for HLS segments).
const MAX_HTTP_BYTES: u64 = shoal_storage::import::MAX_HLS_SEGMENT_BYTES;

/// Fetches a segment's missing bytes from the first of `urls` that
/// delivers them, verified shard by shard, and stores the shards (without
/// an fsync: they can be fetched again).
pub(crate) async fn fetch_and_store_range(
    origins: &Origins,
    store: std::sync::Arc<Blockstore>,
    urls: &[String],
    request: &HttpRequest,
    blocking: std::sync::Arc<()>,
) -> Result<Vec<(Cid, Vec<u8>)>, String> {
    let mut result = Err("no origin".to_string());
    for url in urls {
        result = fetch_range(origins, url, request).await;
        match &result {
            Ok(_) => break,
            Err(e) => tracing::warn!(%url, error = %e, "origin did not deliver"),
        }
    }
    let shards = result?;
    tokio::task::spawn_blocking(move || {
        let _token = blocking;
        let blocks: Vec<shoal_protocol::Block<'_>> = shards
            .iter()
            .map(|(cid, data)| shoal_protocol::Block::prehashed(*cid, data))
            .collect();
        let stored = store.put_many_lazily(&blocks).map_err(|e| e.to_string());
        drop(blocks);
        stored.map(|()| shards)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Fetches bytes `start..end` of a segment from `url` and cuts them into
/// verified shards. A server that ignores the range and sends the whole
/// file is fine; a body of the wrong length, or one whose shards do not
/// match the manifest, is refused.
async fn fetch_range(
    origins: &Origins,
    url: &str,
    req: &HttpRequest,
) -> Result<Vec<(Cid, Vec<u8>)>, String> {
    if req.end <= req.start {
        return cut(req, &[]);
    }
    let response = origins
        .get(url)?
        .header(
            reqwest::header::RANGE,
            format!("bytes={}-{}", req.start, req.end - 1),
        )
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let want = req.end - req.start;
    let whole = req.manifest.length;
    let (offset, expect) = match status.as_u16() {
        206 => (0, want),
        200 => (req.start, whole),
        other => return Err(format!("HTTP {other}")),
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_HTTP_BYTES)
    {
        return Err("response too large".into());
    }
    let body = read_limited(response, expect).await?;
    if body.len() as u64 != expect {
        return Err(format!(
            "{} bytes, expected {expect}: truncated or not this segment",
            body.len()
        ));
    }
    let slice = &body[offset as usize..(offset + want) as usize];
    cut(req, slice)
}

/// Reads a body, refusing more than `limit` bytes.
async fn read_limited(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    let mut body = Vec::with_capacity(limit.min(MAX_HTTP_BYTES) as usize);
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(format!("more than the {limit} bytes expected"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn cut(req: &HttpRequest, bytes: &[u8]) -> Result<Vec<(Cid, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for (i, shard) in shards_from_range(req, bytes) {
        let expected = req
            .manifest
            .shards
            .get(i)
            .ok_or_else(|| format!("shard {i} is not in the manifest"))?;
        let cid = block::cid_of(Codec::Raw, &shard);
        if cid != *expected {
            return Err(format!(
                "bytes for shard {i} do not match the manifest: altered or not this segment"
            ));
        }
        out.push((cid, shard));
    }
    Ok(out)
}

/// Reads the media playlist of every rendition from the first origin that
/// answers for it.
pub(crate) async fn read_origin(
    origins: &Origins,
    sources: PlaylistSources,
) -> Result<OriginPlaylists, String> {
    match sources {
        PlaylistSources::Renditions(renditions) => {
            let mut media = Vec::new();
            let mut last_error = "no origin".to_string();
            for (r, urls) in renditions.iter().enumerate().take(MAX_LIVE_RENDITIONS) {
                for text in urls {
                    let Ok(url) = reqwest::Url::parse(text) else {
                        last_error = format!("{text}: not a URL");
                        continue;
                    };
                    match read_playlist(origins, &url).await {
                        Ok(Playlist::Media(m)) => {
                            media.push(origin_media(r as u16, &url, m));
                            break;
                        }
                        Ok(Playlist::Master(_)) => {
                            last_error = format!("{url}: a master playlist, not a rendition's")
                        }
                        Err(e) => last_error = e,
                    }
                }
            }
            if media.is_empty() {
                return Err(last_error);
            }
            Ok(OriginPlaylists {
                media,
                renditions: None,
            })
        }
        PlaylistSources::Top(urls) => {
            let mut last_error = "no origin".to_string();
            for text in &urls {
                let Ok(url) = reqwest::Url::parse(text) else {
                    last_error = format!("{text}: not a URL");
                    continue;
                };
                match read_top(origins, &url).await {
                    Ok(found) => return Ok(found),
                    Err(e) => last_error = e,
                }
            }
            Err(last_error)
        }
    }
}

/// Reads a playlist a user named: a media playlist is rendition 0; a
/// master playlist's variants are the renditions, in its order (the order
/// a broadcaster of the same folder numbers them in).
async fn read_top(origins: &Origins, url: &reqwest::Url) -> Result<OriginPlaylists, String> {
    match read_playlist(origins, url).await? {
        Playlist::Media(m) => Ok(OriginPlaylists {
            media: vec![origin_media(0, url, m)],
            renditions: None,
        }),
        Playlist::Master(variants) => {
            let mut media = Vec::new();
            let mut info = Vec::new();
            for (r, v) in variants.iter().enumerate().take(MAX_LIVE_RENDITIONS) {
                // `//host/path` or an absolute URL would reach another host.
                if !is_safe_relative_path(&v.uri) {
                    return Err(format!(
                        "{url}: variant {:?} is not a plain relative path",
                        v.uri
                    ));
                }
                let at = url.join(&v.uri).map_err(|e| format!("{url}: {e}"))?;
                let m = match read_playlist(origins, &at).await? {
                    Playlist::Media(m) => m,
                    Playlist::Master(_) => return Err(format!("{at}: a master inside a master")),
                };
                let ext = m
                    .segments
                    .first()
                    .and_then(|s| s.uri.rsplit_once('.'))
                    .map_or_else(|| "ts".to_string(), |(_, e)| e.to_owned());
                info.push(LiveRendition {
                    playlist: v.uri.clone(),
                    bandwidth: Some(v.bandwidth),
                    resolution: v.resolution.clone(),
                    codecs: v.codecs.clone(),
                    segment_extension: ext,
                    ..LiveRendition::default()
                });
                media.push(origin_media(r as u16, &at, m));
            }
            Ok(OriginPlaylists {
                media,
                renditions: Some(info),
            })
        }
    }
}

/// A media playlist as a session takes it.
fn origin_media(rendition: u16, url: &reqwest::Url, m: MediaPlaylist) -> OriginMedia {
    OriginMedia {
        rendition,
        url: url.to_string(),
        media_sequence: m.media_sequence,
        segments: m
            .segments
            .into_iter()
            .map(|s| (s.uri, s.duration_us))
            .collect(),
    }
}

/// The longest playlist read from an origin.
const MAX_PLAYLIST_BYTES: u64 = 1 << 20;

/// Reads and parses one playlist. Only what the gateway can serve is
/// accepted: MPEG-TS segments named by plain relative paths.
async fn read_playlist(origins: &Origins, url: &reqwest::Url) -> Result<Playlist, String> {
    let response = origins
        .get(url.as_str())?
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status().as_u16()));
    }
    let body = read_limited(response, MAX_PLAYLIST_BYTES)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8(body).map_err(|_| format!("{url}: not UTF-8 text"))?;
    let playlist = hls::parse(&text).map_err(|e| format!("{url}: {e}"))?;
    if let Playlist::Media(m) = &playlist {
        if m.init.is_some() {
            return Err(format!(
                "{url}: fragmented MP4 (EXT-X-MAP); live channels carry MPEG-TS"
            ));
        }
        if let Some(bad) = m.segments.iter().find(|s| !is_safe_relative_path(&s.uri)) {
            return Err(format!(
                "{url}: segment URI {:?} is not a plain relative path",
                bad.uri
            ));
        }
    }
    Ok(playlist)
}

/// Proxying: fetches a whole segment from `url` and stores it as shards and
/// a manifest, so that it plays from the store and peers can fetch it.
/// `None` (logged) if that failed.
pub(crate) async fn proxy_segment(
    origins: &Origins,
    store: std::sync::Arc<Blockstore>,
    url: &str,
    segment: &ProxySegment,
    blocking: std::sync::Arc<()>,
) -> Option<ProxiedSegment> {
    let fetched = async {
        let response = origins.get(url)?.send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        read_limited(response, MAX_HTTP_BYTES).await
    }
    .await;
    let bytes = match fetched {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(%url, error = %e, "origin did not deliver a segment");
            return None;
        }
    };
    let length = bytes.len() as u64;
    let (sequence, duration_us) = (segment.sequence, segment.duration_us);
    let stored = tokio::task::spawn_blocking(move || {
        let _token = blocking;
        let mut encoder = shoal_storage::codec::Encoder::default();
        shoal_storage::import_segment(
            &store,
            &mut encoder,
            bytes,
            sequence,
            Some(duration_us),
            &shoal_storage::ImportOptions::default(),
        )
    })
    .await;
    match stored {
        Ok(Ok(s)) => Some(ProxiedSegment {
            manifest: s.manifest_cid,
            length,
            shards: s.manifest.shards,
        }),
        Ok(Err(e)) => {
            tracing::error!(%url, error = %e, "cannot store a segment from an origin");
            None
        }
        Err(_) => None,
    }
}
