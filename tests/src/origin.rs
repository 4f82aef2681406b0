//! shoal's HTTP origin (`shoal_node::origin`), told to misbehave.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shoal_node::origin::Answer;

/// How the origin answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The files as they are, ranges honoured.
    Faithful,
    /// Every body cut short by a tenth (headers agree with the short body).
    Truncated,
    /// One byte of every body flipped.
    Altered,
    /// Every segment request redirected (302) to the same path under
    /// [`Origin::redirect_to`]'s URL.
    Redirect,
}

struct Served {
    dir: PathBuf,
    mode: Mode,
    redirect_to: std::sync::Mutex<String>,
    requests: AtomicUsize,
    segment_requests: AtomicUsize,
}

/// A running origin.
pub struct Origin {
    pub url: String,
    served: Arc<Served>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    /// Serves `dir` on 127.0.0.1 (any free port).
    pub async fn start(dir: PathBuf, mode: Mode) -> Origin {
        let served = Arc::new(Served {
            dir,
            mode,
            redirect_to: std::sync::Mutex::new(String::new()),
            requests: AtomicUsize::new(0),
            segment_requests: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/{*path}", get(file))
            .with_state(served.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Origin {
            url: format!("http://{addr}"),
            served,
            task,
        }
    }

    /// Where [`Mode::Redirect`] sends segment requests.
    pub fn redirect_to(&self, url: &str) {
        *self.served.redirect_to.lock().unwrap() = url.to_owned();
    }

    /// Requests of any kind so far.
    pub fn requests(&self) -> usize {
        self.served.requests.load(Ordering::Relaxed)
    }

    /// Requests for media segments (not playlists) so far.
    pub fn segment_requests(&self) -> usize {
        self.served.segment_requests.load(Ordering::Relaxed)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn file(
    State(s): State<Arc<Served>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    s.requests.fetch_add(1, Ordering::Relaxed);
    let Some(mut answer) = Answer::read(&s.dir, &path, &headers) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !path.ends_with(".m3u8") {
        s.segment_requests.fetch_add(1, Ordering::Relaxed);
        if s.mode == Mode::Redirect {
            let to = format!("{}/{path}", s.redirect_to.lock().unwrap());
            return (StatusCode::FOUND, [(axum::http::header::LOCATION, to)]).into_response();
        }
    }
    let body = &mut answer.body;
    match s.mode {
        Mode::Faithful | Mode::Redirect => {}
        Mode::Truncated => {
            let keep = body.len() - body.len() / 10;
            body.truncate(keep);
        }
        Mode::Altered => {
            let mid = body.len() / 2;
            if let Some(b) = body.get_mut(mid) {
                *b ^= 0x55;
            }
        }
    }
    answer.into_response()
}
