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
use shoal_protocol::channel::is_safe_relative_path;
use shoal_protocol::http::RangeAnswer;

/// A file's bytes as an origin answers for them: the `Range` asked for
/// with status 206, 416 for a range past the end, else the whole file
/// (the rules are [`RangeAnswer`]'s).
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub content_range: Option<String>,
}

impl Answer {
    /// Reads `path` under `dir` for a request with `headers`; `None` when
    /// there is no such file or the path is not plain file names
    /// ([`is_safe_relative_path`]: nothing that climbs out of `dir`).
    pub fn read(dir: &Path, path: &str, headers: &HeaderMap) -> Option<Answer> {
        if !is_safe_relative_path(path) {
            return None;
        }
        let bytes = std::fs::read(dir.join(path)).ok()?;
        let len = bytes.len() as u64;
        let header = headers.get(header::RANGE).map(|v| v.as_bytes());
        Some(match RangeAnswer::of(header, len) {
            RangeAnswer::Part { start, end } => Answer {
                status: StatusCode::PARTIAL_CONTENT,
                content_range: Some(format!("bytes {start}-{}/{len}", end - 1)),
                // Within the file: RangeAnswer clips to len.
                body: bytes[start as usize..end as usize].to_vec(),
            },
            RangeAnswer::Unsatisfiable => Answer {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                content_range: Some(format!("bytes */{len}")),
                body: Vec::new(),
            },
            RangeAnswer::Whole => Answer {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_answered_and_paths_stay_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("seg.ts"), b"0123456789").unwrap();
        let ask = |path: &str, range: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(r) = range {
                headers.insert(header::RANGE, r.parse().unwrap());
            }
            Answer::read(dir.path(), path, &headers)
        };
        let part = ask("seg.ts", Some("bytes=-3")).unwrap();
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.body, b"789");
        assert_eq!(part.content_range.as_deref(), Some("bytes 7-9/10"));
        let past = ask("seg.ts", Some("bytes=10-")).unwrap();
        assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(past.content_range.as_deref(), Some("bytes */10"));
        assert!(past.body.is_empty());
        let whole = ask("seg.ts", Some("bytes=0-1,4-5")).unwrap();
        assert_eq!((whole.status, whole.body.len()), (StatusCode::OK, 10));
        for outside in ["../seg.ts", "/etc/passwd", ".hidden", "a//seg.ts", ""] {
            assert!(ask(outside, None).is_none(), "{outside}");
        }
    }
}
