//! A minimal HTTP origin: a folder served over HTTP with byte ranges, the
//! way a CDN serves a live encoder's output. `shoal demo` runs one so the
//! HTTP fallback has something to fall back to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// A file's bytes as an origin answers for them: the `Range` asked for
/// (one `bytes=a-b` range) with status 206, else the whole file.
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub content_range: Option<String>,
}

impl Answer {
    /// Reads `path` (relative, no `..`) under `dir` for a request with
    /// `headers`; `None` when there is no such file.
    pub fn read(dir: &Path, path: &str, headers: &HeaderMap) -> Option<Answer> {
        if path.split('/').any(|p| p == ".." || p.is_empty()) {
            return None;
        }
        let bytes = std::fs::read(dir.join(path)).ok()?;
        Some(match range(headers, bytes.len()) {
            Some((a, b)) => Answer {
                status: StatusCode::PARTIAL_CONTENT,
                content_range: Some(format!("bytes {a}-{}/{}", b - 1, bytes.len())),
                body: bytes[a..b].to_vec(),
            },
            None => Answer {
                status: StatusCode::OK,
                body: bytes,
                content_range: None,
            },
        })
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        if let Some(cr) = self.content_range
            && let Ok(v) = cr.parse()
        {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        response
    }
}

/// The one range of a `Range: bytes=a-b` header, clipped to the file.
fn range(headers: &HeaderMap, len: usize) -> Option<(usize, usize)> {
    let v = headers.get(header::RANGE)?.to_str().ok()?;
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let start: usize = a.parse().ok()?;
    let end: usize = b.parse::<usize>().ok()?.min(len.checked_sub(1)?);
    (start <= end).then_some((start, end + 1))
}

/// Serves `dir` on `listener` until the task is dropped.
pub async fn serve(dir: PathBuf, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let app = Router::new()
        .route("/{*path}", get(file))
        .with_state(Arc::new(dir));
    axum::serve(listener, app).await
}

async fn file(
    State(dir): State<Arc<PathBuf>>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    match Answer::read(&dir, &path, &headers) {
        Some(a) => a.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
