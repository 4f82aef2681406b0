//! One description of a live audience on a star network (every host one
//! link away from a core router), run both by the network lab (real
//! daemons in network namespaces, `shoal_tests::lab_live`) and by the
//! model ([`super::run`]), so that their figures can be set side by side:
//! the cross-check (`cargo bench -p shoal-tests --bench lab -- crosscheck`).
//!
//! Both sides report what a viewer's session counted itself (the same
//! `LiveStats` code, read from each daemon's `stats.json` in the lab and
//! from each modelled machine here), and [`Figures`] sums them the same
//! way.

use std::time::Duration;

use super::{SessionSummary, SwarmParams, SwarmReport};

/// The lab's synthetic stream: 1 s segments of 1.5 Mb/s.
pub const LAB_SEGMENT: Duration = Duration::from_secs(1);
pub const LAB_SEGMENT_BYTES: usize = 187_500;

/// A live audience on a star network. See the module documentation.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveScenario {
    /// One-way delay from the broadcaster to the core.
    pub source_delay: Duration,
    /// One-way delay from each viewer to the core.
    pub viewer_delays: Vec<Duration>,
    /// Every host's uplink, bytes per second. Downlinks are five times
    /// as wide in the lab and never the limit; the model has none.
    pub uplink: u64,
    pub segment_bytes: usize,
    pub segment_duration: Duration,
    /// Segments the broadcaster publishes in all.
    pub segments: u64,
}

impl LiveScenario {
    /// The lab's usual audience: the broadcaster 5 ms from the core,
    /// `viewers` spread evenly from 5 to 45 ms (round trips of 20 to
    /// 100 ms to the broadcaster), 10 Mb/s uplinks, the lab's stream.
    pub fn spread(viewers: usize, segments: u64) -> LiveScenario {
        let n = viewers as u64;
        LiveScenario {
            source_delay: Duration::from_millis(5),
            viewer_delays: (0..n)
                .map(|i| Duration::from_millis(5 + i * 40 / (n.max(2) - 1)))
                .collect(),
            uplink: 10_000_000 / 8,
            segment_bytes: LAB_SEGMENT_BYTES,
            segment_duration: LAB_SEGMENT,
            segments,
        }
    }

    /// The mean round trip between a viewer and the broadcaster.
    pub fn mean_rtt(&self) -> Duration {
        let n = self.viewer_delays.len().max(1) as u32;
        let sum: Duration = self.viewer_delays.iter().sum();
        (self.source_delay + sum / n) * 2
    }

    /// The model's parameters: every viewer there from the start (the
    /// lab's daemons are up before the broadcast begins), each link the
    /// sum of its ends' delays, the node's own defaults otherwise. Jitter
    /// (a tenth of each delay in the lab) is not modelled.
    pub fn swarm_params(&self, seed: u64) -> SwarmParams {
        let delays: Vec<Duration> = std::iter::once(self.source_delay)
            .chain(self.viewer_delays.iter().copied())
            .collect();
        let min = delays.iter().min().copied().unwrap_or_default();
        let max = delays.iter().max().copied().unwrap_or_default();
        SwarmParams {
            viewers: self.viewer_delays.len(),
            segments: self.segments,
            warmup: 0,
            segment_bytes: self.segment_bytes,
            segment_duration: self.segment_duration,
            viewer_uplink: self.uplink,
            source_uplink: self.uplink,
            latency: (min * 2, max * 2),
            host_delays: delays,
            seed,
            ..SwarmParams::default()
        }
    }
}

/// What the cross-check compares, summed the same way on both sides.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// The median of the viewers' own p50 latencies.
    pub p50_ms: f64,
    /// The worst of the viewers' own p95 latencies.
    pub p95_ms: f64,
    /// Per cent of the viewers' bytes that came from other viewers.
    pub offload: f64,
    /// Bytes the viewers got from the broadcaster.
    pub source_bytes: u64,
    /// Those bytes in copies of the stream the viewers held.
    pub copies: f64,
    /// Segments the viewers gave up, summed.
    pub missed: u64,
    /// The most segments a viewer held.
    pub segments: u64,
}

impl Figures {
    /// From each viewer's session and the bytes by origin, summed over
    /// viewers.
    pub fn new(
        sessions: &[SessionSummary],
        from_peers: u64,
        from_source: u64,
        from_http: u64,
        segment_bytes: usize,
    ) -> Figures {
        let mut p50: Vec<u64> = sessions.iter().filter_map(|s| s.latency_p50_ms).collect();
        p50.sort_unstable();
        let p95 = sessions.iter().filter_map(|s| s.latency_p95_ms).max();
        let segments = sessions.iter().map(|s| s.segments).max().unwrap_or(0);
        let total = (from_peers + from_source + from_http).max(1);
        Figures {
            p50_ms: p50.get(p50.len() / 2).copied().unwrap_or(0) as f64,
            p95_ms: p95.unwrap_or(0) as f64,
            offload: 100.0 * from_peers as f64 / total as f64,
            source_bytes: from_source,
            copies: from_source as f64 / (segments * segment_bytes as u64).max(1) as f64,
            missed: sessions.iter().map(|s| s.missed).sum(),
            segments,
        }
    }

    /// A model run's figures.
    pub fn of_model(r: &SwarmReport, segment_bytes: usize) -> Figures {
        Figures::new(
            &r.sessions,
            r.from_peers,
            r.from_source,
            r.from_http,
            segment_bytes,
        )
    }

    /// Where `model` strays from `lab` beyond the cross-check's targets:
    /// latency within the larger of 15% and `rtt`, offload within 3
    /// points, the broadcaster's bytes within 10%, the same misses.
    pub fn differences(lab: &Figures, model: &Figures, rtt: Duration) -> Vec<String> {
        let mut out = Vec::new();
        let rtt = rtt.as_secs_f64() * 1000.0;
        for (what, l, m) in [
            ("p50", lab.p50_ms, model.p50_ms),
            ("p95", lab.p95_ms, model.p95_ms),
        ] {
            let allowed = (0.15 * l).max(rtt);
            if (l - m).abs() > allowed {
                out.push(format!(
                    "{what} {m:.0} ms against {l:.0} ms (allowed {allowed:.0} ms)"
                ));
            }
        }
        if (lab.offload - model.offload).abs() > 3.0 {
            out.push(format!(
                "offload {:.1}% against {:.1}%",
                model.offload, lab.offload
            ));
        }
        let (l, m) = (lab.source_bytes as f64, model.source_bytes as f64);
        if (l - m).abs() > 0.1 * l {
            out.push(format!(
                "broadcaster {:.1} MB against {:.1} MB",
                m / 1e6,
                l / 1e6
            ));
        }
        if lab.missed != model.missed {
            out.push(format!("missed {} against {}", model.missed, lab.missed));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_matches_the_labs_round_trips_and_the_model_runs_it() {
        let s = LiveScenario::spread(5, 6);
        let ms: Vec<u64> = s
            .viewer_delays
            .iter()
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(ms, vec![5, 15, 25, 35, 45]);
        assert_eq!(s.mean_rtt(), Duration::from_millis(60));
        let params = s.swarm_params(1);
        assert_eq!(params.host_delays.len(), 6);
        let r = super::super::run(&params).unwrap();
        assert_eq!(r.sessions.len(), 5);
        let f = Figures::of_model(&r, s.segment_bytes);
        assert!(f.p50_ms > 0.0 && f.p95_ms >= f.p50_ms, "{f:?}");
        assert!(f.offload > 0.0 && f.copies > 0.0, "{f:?}");
    }

    #[test]
    fn differences_name_what_is_beyond_its_target() {
        let lab = Figures {
            p50_ms: 400.0,
            p95_ms: 1000.0,
            offload: 80.0,
            source_bytes: 10_000_000,
            copies: 2.0,
            missed: 0,
            segments: 30,
        };
        let near = Figures {
            p50_ms: 450.0,
            p95_ms: 1140.0,
            offload: 78.0,
            source_bytes: 10_900_000,
            ..lab.clone()
        };
        assert!(Figures::differences(&lab, &near, Duration::from_millis(60)).is_empty());
        let far = Figures {
            p50_ms: 300.0,
            offload: 90.0,
            missed: 2,
            ..lab.clone()
        };
        let d = Figures::differences(&lab, &far, Duration::from_millis(60));
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].starts_with("p50 300 ms against 400 ms"), "{d:?}");
    }
}
