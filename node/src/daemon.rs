//! `shoal daemon`: the node, its gateway and its control API on one port,
//! on a repo, until a signal.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use libp2p::Multiaddr;

use crate::api::{self, ApiState};
use crate::local_http::Access;
use crate::repo::{RepoError, RepoPaths};
use crate::{Node, NodeConfig, NodeError};

/// Command-line settings that override `config.toml`.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub api: Option<String>,
    pub mdns: Option<bool>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("invalid {what} {value:?}: {detail}")]
    Setting {
        what: &'static str,
        value: String,
        detail: String,
    },
    #[error(
        "refusing to serve the API on {0} without an access token: set [api] token in config.toml, or use a loopback address"
    )]
    ApiNotLoopback(SocketAddr),
    #[error("cannot serve the API on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started daemon.
pub struct Daemon {
    /// First, so that a daemon dropped unserved removes its `api` and
    /// `api.token` files before its node and store go.
    api_file: ApiFile,
    token: String,
    pub node: Node,
    pub api_addr: SocketAddr,
    listener: tokio::net::TcpListener,
    paths: RepoPaths,
}

/// The repo's `api` and `api.token` files, which tell the CLI where the
/// running daemon listens and what token its control API takes (both mode
/// 0600, the token first). They are written once the API socket is bound
/// (requests made before serving begins wait in the socket's backlog), so
/// a CLI command run as soon as [`Daemon::start`] returns already goes
/// through the daemon, and removed when the daemon stops or is dropped
/// unserved.
struct ApiFile {
    url: std::path::PathBuf,
    token: std::path::PathBuf,
}

impl ApiFile {
    fn write(paths: &RepoPaths, url: &str, token: &str) -> Result<ApiFile, RepoError> {
        let write = |path: std::path::PathBuf, text: &str| {
            crate::identity::write_private(&path, format!("{text}\n").as_bytes())
                .map_err(|source| RepoError::Io { path, source })
        };
        write(paths.api_token(), token)?;
        write(paths.api_file(), url)?;
        Ok(ApiFile {
            url: paths.api_file(),
            token: paths.api_token(),
        })
    }
}

impl Drop for ApiFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.url);
        let _ = std::fs::remove_file(&self.token);
    }
}

/// A fresh control API token: 32 random bytes in hex.
fn fresh_token() -> String {
    crate::identity::random_secret()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Daemon {
    /// Opens the repo, starts the node, binds the API, announces the
    /// pinned streams and writes the repo's `api` file.
    pub async fn start(dir: &Path, options: DaemonOptions) -> Result<Daemon, DaemonError> {
        let paths = RepoPaths::load(dir)?;
        let mut config = NodeConfig::from_repo(&paths)?;
        if !options.listen.is_empty() {
            config.listen = options.listen.clone();
        }
        config.bootstrap.extend(options.bootstrap.iter().cloned());
        if let Some(mdns) = options.mdns {
            config.mdns = mdns;
        }
        let api_text = options
            .api
            .clone()
            .unwrap_or_else(|| paths.config.api.address.clone());
        let api_addr: SocketAddr =
            api_text
                .parse()
                .map_err(|e: std::net::AddrParseError| DaemonError::Setting {
                    what: "API address",
                    value: api_text.clone(),
                    detail: e.to_string(),
                })?;
        if !api_addr.ip().is_loopback() && paths.config.api.token.is_none() {
            return Err(DaemonError::ApiNotLoopback(api_addr));
        }
        let listener = tokio::net::TcpListener::bind(api_addr)
            .await
            .map_err(|source| DaemonError::Bind {
                addr: api_addr,
                source,
            })?;
        let api_addr = listener.local_addr().map_err(|source| DaemonError::Bind {
            addr: api_addr,
            source,
        })?;
        let node = Node::start_repo(&paths, config).await?;
        let pins = node.store().pins().map_err(RepoError::from)?;
        for root in pins {
            if let Err(e) = node.provide(root).await {
                tracing::warn!(%root, error = %e, "cannot announce a pinned stream");
            }
        }
        let token = paths.config.api.token.clone().unwrap_or_else(fresh_token);
        let api_file = ApiFile::write(&paths, &format!("http://{api_addr}"), &token)?;
        Ok(Daemon {
            node,
            api_addr,
            listener,
            paths,
            api_file,
            token,
        })
    }

    /// Serves the gateway and the API until SIGINT or SIGTERM, then shuts
    /// down cleanly: the server stops, the node closes its connections, the
    /// store is closed and the `api` files removed.
    pub async fn run_until_signal(self) -> Result<(), DaemonError> {
        self.serve_until(signal()).await
    }

    /// Serves the API until `stop` completes, then shuts down like
    /// [`Daemon::run_until_signal`].
    pub async fn serve_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), DaemonError> {
        let api = &self.paths.config.api;
        let access = Access::new(&api.hosts, &api.player_origins);
        let state = Arc::new(ApiState {
            node: self.node.clone(),
            dir: self.paths.dir.clone(),
            import: self.paths.import_options().map_err(NodeError::from)?,
            token: self.token.clone(),
            access: access.clone(),
            broadcasting: Default::default(),
        });
        let gateway = crate::gateway::Gateway::new(self.node.clone(), access);
        let app = api::router(state).merge(crate::gateway::router(gateway));
        crate::local_http::serve(self.listener, app, stop).await;
        drop(self.api_file);
        self.node.stop().await;
        Ok(())
    }
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("signal received; shutting down");
}
