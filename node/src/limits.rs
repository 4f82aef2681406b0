//! Settings a phone or a small device changes at run time: how much it
//! uploads, whether it uploads at all, how many peers it keeps, and how
//! many live segments it caches.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};

/// The run-time limits of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most bytes per second sent to peers; `None` for no limit.
    pub upload_bytes_per_sec: Option<u64>,
    /// Serve nothing to peers (a phone on a metered network): the node
    /// answers every want with DONT_HAVE.
    pub no_upload: bool,
    /// Most connected peers.
    pub max_peers: u32,
    /// Complete segments kept per rendition of a watched channel (5 is a
    /// typical phone setting); the byte limit is the store's quota.
    pub cache_segments: usize,
}

/// The smallest live cache: a player needs the segment it plays and the
/// next two to be served.
pub const MIN_CACHE_SEGMENTS: usize = 3;

/// Why limits were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("max_peers must be at least 1")]
    NoPeers,
    #[error("cache_segments must be at least {MIN_CACHE_SEGMENTS}")]
    CacheTooSmall,
    #[error("upload_bytes_per_sec of 0: use no_upload instead")]
    ZeroUpload,
}

impl Limits {
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.max_peers == 0 {
            return Err(LimitsError::NoPeers);
        }
        if self.cache_segments < MIN_CACHE_SEGMENTS {
            return Err(LimitsError::CacheTooSmall);
        }
        if self.upload_bytes_per_sec == Some(0) {
            return Err(LimitsError::ZeroUpload);
        }
        Ok(())
    }
}

/// A token bucket shared by every peer's writer. A message is never split
/// to fit: it may take the bucket into debt, and the next one waits until
/// the debt is paid, so the average rate holds. At most one second of
/// unused rate is saved up.
#[derive(Default)]
pub(crate) struct UploadLimiter {
    /// Bytes per second; 0 for no limit.
    rate: AtomicU64,
    tokens: Mutex<(f64, Option<Instant>)>,
}

impl UploadLimiter {
    pub(crate) fn set_rate(&self, rate: Option<u64>) {
        self.rate.store(rate.unwrap_or(0), Ordering::Relaxed);
    }

    /// Waits until `bytes` may be sent.
    pub(crate) async fn acquire(&self, bytes: usize) {
        loop {
            let rate = self.rate.load(Ordering::Relaxed);
            if rate == 0 {
                return;
            }
            let wait = {
                let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let (tokens, last) = &mut *t;
                if let Some(last) = last {
                    let earned = now.duration_since(*last).as_secs_f64() * rate as f64;
                    *tokens = (*tokens + earned).min(rate as f64);
                }
                *last = Some(now);
                if *tokens >= 0.0 {
                    *tokens -= bytes as f64;
                    None
                } else {
                    Some(Duration::from_secs_f64(-*tokens / rate as f64))
                }
            };
            match wait {
                None => return,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_average_rate_holds() {
        let l = UploadLimiter::default();
        l.set_rate(Some(1000));
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            l.acquire(1000).await;
        }
        // The first message goes at once; each next one waits a second.
        assert_eq!(start.elapsed().as_secs(), 4);
    }
}
