//! Session statistics in the form every surface reports them: `shoal
//! stats`, the control API, the gateway's read-only statistics for the
//! player page, and Prometheus text.

use serde::{Deserialize, Serialize};

/// One watch session's numbers, as `shoal stats` shows them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LiveStatsReport {
    pub channel: String,
    pub name: Option<String>,
    pub url: String,
    pub segments: u64,
    /// Segments given up before they were complete, once the playlist
    /// listed one: a player skips them.
    pub missed: u64,
    /// Segments given up while joining, before the playlist listed any:
    /// no player waited for them.
    #[serde(default)]
    pub skipped: u64,
    /// Segments complete after their deadline (two segment durations
    /// after their announcement by default): a player at the live edge
    /// would have stalled.
    pub late: u64,
    /// Bytes from other viewers.
    pub bytes_from_peers: u64,
    /// Bytes from the channel's broadcaster.
    pub bytes_from_source: u64,
    /// Bytes from HTTP origins.
    pub bytes_from_http: u64,
    /// Bytes of the channel's segments sent to other viewers.
    #[serde(default)]
    pub bytes_uploaded: u64,
    /// Share of bytes from other viewers (0..1), once anything arrived.
    pub offload: Option<f64>,
    pub startup_ms: Option<u64>,
    /// Publication to the playlist listing the segment.
    pub latency_p50_ms: Option<u64>,
    pub latency_p95_ms: Option<u64>,
    pub peers: usize,
    pub rejected_announcements: u64,
    pub renditions: usize,
    /// No peer announces the channel: segments come straight from an
    /// origin's playlist.
    #[serde(default)]
    pub proxying: bool,
}

impl LiveStatsReport {
    /// The numbers of a watch session as this node sees it now.
    pub fn of(view: &crate::LiveView) -> Self {
        let st = &view.stats;
        LiveStatsReport {
            channel: view.channel.to_string(),
            name: view.name.clone(),
            url: format!("/live/{}/index.m3u8", view.channel),
            segments: st.segments,
            missed: st.missed,
            skipped: st.skipped,
            late: st.late,
            bytes_from_peers: st.bytes_from_peers,
            bytes_from_source: st.bytes_from_source,
            bytes_from_http: st.bytes_from_http,
            bytes_uploaded: st.bytes_uploaded,
            offload: st.offload(),
            startup_ms: st.startup.map(|d| d.as_millis() as u64),
            latency_p50_ms: st.latency_quantile_ms(0.5),
            latency_p95_ms: st.latency_quantile_ms(0.95),
            peers: view.peers,
            rejected_announcements: st.rejected,
            renditions: view.renditions.len(),
            proxying: view.proxying,
        }
    }
}

/// A Prometheus series: name, type, help, and its value in a report.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&LiveStatsReport) -> f64,
);

/// The same numbers as Prometheus text: the node's peer count and one
/// series per session and measure.
pub fn prometheus(peers: usize, sessions: &[LiveStatsReport]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP shoal_peers Connected peers.\n# TYPE shoal_peers gauge\nshoal_peers {peers}"
    );
    let series: [Series; 11] = [
        (
            "shoal_live_segments_total",
            "counter",
            "Segments complete.",
            |r| r.segments as f64,
        ),
        (
            "shoal_live_missed_total",
            "counter",
            "Segments given up after the playlist listed one.",
            |r| r.missed as f64,
        ),
        (
            "shoal_live_skipped_total",
            "counter",
            "Segments given up while joining.",
            |r| r.skipped as f64,
        ),
        (
            "shoal_live_stalls_total",
            "counter",
            "Segments listed after their deadline.",
            |r| r.late as f64,
        ),
        (
            "shoal_live_bytes_from_peers_total",
            "counter",
            "Bytes received from peers.",
            |r| r.bytes_from_peers as f64,
        ),
        (
            "shoal_live_bytes_from_source_total",
            "counter",
            "Bytes received from the channel's broadcaster.",
            |r| r.bytes_from_source as f64,
        ),
        (
            "shoal_live_bytes_from_http_total",
            "counter",
            "Bytes received from HTTP origins.",
            |r| r.bytes_from_http as f64,
        ),
        (
            "shoal_live_bytes_uploaded_total",
            "counter",
            "Bytes of the channel's segments sent to other viewers.",
            |r| r.bytes_uploaded as f64,
        ),
        ("shoal_live_peers", "gauge", "Peers of the channel.", |r| {
            r.peers as f64
        }),
        (
            "shoal_live_proxying",
            "gauge",
            "1 while no peer announces the channel and segments come from an origin's playlist.",
            |r| f64::from(u8::from(r.proxying)),
        ),
        (
            "shoal_live_latency_p95_seconds",
            "gauge",
            "Publication to completion, 95th percentile.",
            |r| r.latency_p95_ms.unwrap_or(0) as f64 / 1000.0,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in sessions {
            let _ = writeln!(out, "{name}{{channel=\"{}\"}} {}", r.channel, value(r));
        }
    }
    out
}
