//! The node's HTTP surface on the user's machine: who may ask what, and
//! the server loop with its limits. Shared by the gateway (what a player
//! needs) and the control API (what the owner does), which are kept apart.
//!
//! The port is reachable by every web page the user opens: a page can
//! send requests to `127.0.0.1` (a "simple" cross-origin POST needs no
//! preflight), and with DNS rebinding it can even read the answers, since
//! its own name then points at this machine. So:
//!
//! - **`Host` is checked on every request** ([`Access::check_host`]): an IP
//!   literal, `localhost`, or a name the user listed (`[api] hosts`).
//!   A rebinding page's requests carry its own name and get 403. An IP
//!   literal is always safe: a page whose origin is an IP literal was
//!   loaded from that address, so the rebinding trick cannot apply.
//! - **Every request is placed** ([`Access::site`]): sent by no web page or
//!   by one of this server's own pages ([`Site::Local`]), by a page of an
//!   origin the user allowed to play through the gateway
//!   ([`Site::Player`], `[api] player_origins`), or by any other page
//!   ([`Site::Foreign`]). Browsers say so in `Origin` and
//!   `Sec-Fetch-Site`; a client that sends neither is not a browser page.
//!   The gateway starts no work for a foreign page, the control API answers
//!   only local requests.
//! - **The server is bounded** ([`serve`]): at most
//!   [`MAX_CONNECTIONS`] connections at once, and a request's headers must
//!   arrive within [`HEADER_TIMEOUT`], so half-sent requests cannot hold
//!   sockets and file descriptors.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// Connections served at once. A player keeps a few (browsers open up to
/// six per host), the CLI one per command; 256 leave room for a house full
/// of players while a flood of idle sockets stops there.
pub const MAX_CONNECTIONS: usize = 256;

/// A request's headers must arrive within this long after the connection
/// is ready for one (also between requests on a kept-alive connection).
/// Players and the CLI send theirs at once; a client that trickles them
/// holds a socket for nothing.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// After the server is told to stop, requests under way get this long to
/// finish (a streamed answer, such as a broadcast's progress, would
/// otherwise hold the stop for as long as it runs).
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// Who sent a request, as far as the server can tell.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Site {
    /// No web page (a player, the CLI, a script), or one of this server's
    /// own pages.
    Local,
    /// A page of an origin the user allowed to play through the gateway.
    Player(String),
    /// A page of any other origin (`None` when the browser named none).
    Foreign(Option<String>),
}

/// The access rules of the local HTTP surface.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Host names besides IP literals and `localhost` (lowercase, no port).
    hosts: Vec<String>,
    /// Any `Host` at all (`[api] hosts = ["*"]`).
    any_host: bool,
    /// Web origins whose pages may play through the gateway.
    player_origins: Vec<String>,
}

/// A request refused by the access rules.
#[derive(Debug)]
pub struct Refused(pub StatusCode, pub String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl Access {
    /// Rules allowing `hosts` (names, or `*` for any) and pages of
    /// `player_origins` (`scheme://host[:port]`) to play.
    pub fn new(hosts: &[String], player_origins: &[String]) -> Access {
        Access {
            hosts: hosts
                .iter()
                .filter(|h| *h != "*")
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            any_host: hosts.iter().any(|h| h == "*"),
            player_origins: player_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Refuses a request whose `Host` is not one this server answers to.
    pub fn check_host(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if self.any_host || self.host_allowed(host) {
            return Ok(());
        }
        Err(Refused(
            StatusCode::FORBIDDEN,
            format!(
                "this node does not answer to the host name {host:?}; \
                 list it under [api] hosts in config.toml to allow it"
            ),
        ))
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        if name.is_empty() {
            return false;
        }
        name == "localhost"
            || name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
            || self.hosts.contains(&name)
    }

    /// Where a request comes from.
    pub fn site(&self, headers: &HeaderMap) -> Site {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        if let Some(origin) = text(header::ORIGIN) {
            let origin = origin.trim_end_matches('/').to_ascii_lowercase();
            let own = text(header::HOST).map(|h| format!("http://{}", h.to_ascii_lowercase()));
            if own.as_deref() == Some(origin.as_str()) {
                return Site::Local;
            }
            if self.player_origins.contains(&origin) {
                return Site::Player(origin);
            }
            return Site::Foreign(Some(origin));
        }
        // Browsers send Origin with every cross-origin request but plain
        // GETs from elements (a <video>, an <img>, an iframe); those still
        // carry Sec-Fetch-Site.
        match text(axum::http::HeaderName::from_static("sec-fetch-site")) {
            None | Some("same-origin") | Some("none") => Site::Local,
            Some(_) => Site::Foreign(None),
        }
    }
}

/// The name in a `Host` header, without its port.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split_once(']').map_or("", |(ip, _)| ip);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Serves `app` on `listener` until `stop` completes: HTTP/1.1, at most
/// [`MAX_CONNECTIONS`] at once, headers within [`HEADER_TIMEOUT`]. Then
/// stops accepting, lets requests under way finish for [`STOP_GRACE`], and
/// returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        // A slot first: beyond the cap, connections wait in the kernel's
        // backlog and cost nothing here.
        let slot = tokio::select! {
            _ = &mut stop => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let _slot = slot;
            serve_connection(stream, peer, app, &mut stopping).await;
        });
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_GRACE, drained).await.is_err() {
        connections.abort_all();
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) {
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_ip_literals_localhost_and_listed_names_are_answered() {
        let access = Access::new(&["Box.lan".into()], &[]);
        for ok in [
            "127.0.0.1:5080",
            "127.0.0.1",
            "localhost:5080",
            "[::1]:5080",
            "192.168.1.5:5080",
            "box.lan:5080",
        ] {
            assert!(access.check_host(&headers(&[("host", ok)])).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:5080",
            "127.0.0.1.nip.io:5080",
            "localhost.evil.example",
            "",
        ] {
            let refused = access.check_host(&headers(&[("host", bad)])).unwrap_err();
            assert_eq!(refused.0, StatusCode::FORBIDDEN, "{bad}");
        }
        assert!(access.check_host(&HeaderMap::new()).is_err());
        let any = Access::new(&["*".into()], &[]);
        assert!(
            any.check_host(&headers(&[("host", "evil.example")]))
                .is_ok()
        );
    }

    #[test]
    fn requests_are_placed_by_their_origin() {
        let access = Access::new(&[], &["https://tv.example".into()]);
        let host = ("host", "127.0.0.1:5080");
        // Players, the CLI, curl: no browser headers.
        assert_eq!(access.site(&headers(&[host])), Site::Local);
        // This server's own page, and a URL typed into the address bar.
        assert_eq!(
            access.site(&headers(&[host, ("origin", "http://127.0.0.1:5080")])),
            Site::Local
        );
        assert_eq!(
            access.site(&headers(&[host, ("sec-fetch-site", "same-origin")])),
            Site::Local
        );
        assert_eq!(
            access.site(&headers(&[host, ("sec-fetch-site", "none")])),
            Site::Local
        );
        assert_eq!(
            access.site(&headers(&[host, ("origin", "https://tv.example")])),
            Site::Player("https://tv.example".into())
        );
        // Another page: by its Origin, or (a <video> or <img>) by
        // Sec-Fetch-Site alone. Another port of the same host is another
        // origin.
        assert_eq!(
            access.site(&headers(&[host, ("origin", "https://evil.example")])),
            Site::Foreign(Some("https://evil.example".into()))
        );
        assert_eq!(
            access.site(&headers(&[host, ("origin", "http://127.0.0.1:3000")])),
            Site::Foreign(Some("http://127.0.0.1:3000".into()))
        );
        assert_eq!(
            access.site(&headers(&[host, ("origin", "null")])),
            Site::Foreign(Some("null".into()))
        );
        assert_eq!(
            access.site(&headers(&[host, ("sec-fetch-site", "cross-site")])),
            Site::Foreign(None)
        );
        assert_eq!(
            access.site(&headers(&[host, ("sec-fetch-site", "same-site")])),
            Site::Foreign(None)
        );
    }
}
