//! The swarm model runs the node's own planner and engine: what a viewer
//! relies on from them shows up here at audience sizes the machine could
//! not run as real nodes — every segment arrives, the broadcaster's upload
//! stays a few copies of the stream however many watch, viewers that leave
//! cost the others nothing, and an origin fills in where peers cannot.

use std::time::Duration;

use clap::Parser;
use shoal_protocol::bitswap::EngineConfig;
use shoal_sim::cli::{self, Cli};
use shoal_sim::swarm::{self, Arrivals, OriginParams, SwarmParams, SwarmReport};

/// A well-provisioned swarm: 100 Mb/s uplinks, LAN latencies.
fn lan(viewers: usize) -> SwarmParams {
    SwarmParams {
        viewers,
        segments: 5,
        viewer_uplink: 100_000_000 / 8,
        source_uplink: 100_000_000 / 8,
        latency: (Duration::from_micros(200), Duration::from_millis(2)),
        ..SwarmParams::default()
    }
}

fn everyone_gets_everything(r: &SwarmReport) {
    assert_eq!(r.delivered, r.expected, "{r:?}");
    assert_eq!((r.missed, r.late, r.disconnects), (0, 0, 0), "{r:?}");
}

#[test]
fn every_viewer_gets_every_segment_and_the_broadcaster_sends_about_two_copies() {
    let p = lan(40);
    let r = swarm::run(&p).unwrap();
    everyone_gets_everything(&r);
    // The ration: each shard goes to two viewers first, so the broadcaster
    // sends about 2 × (k + m) / k = 2.8 copies of each segment, whether
    // 40 or 400 watch. Its share of what viewers received is bounded by
    // that over the audience (plus the warm-up segments, before any
    // viewer knew the others had shards).
    let k = f64::from(p.k);
    let n = f64::from(p.k + p.m);
    let copies = 2.0 * n / k;
    let bound = copies / p.viewers as f64 * 1.5;
    let all = r.from_peers + r.from_source + r.from_http;
    let source_share = r.from_source as f64 / all as f64;
    assert!(
        source_share <= bound,
        "broadcaster share {source_share:.3} over {bound:.3}: {r:?}"
    );
    // And what its uplink carried in shards is those two copies of every
    // shard, not one per viewer.
    let segments = (p.segments + p.warmup) as f64;
    let every_shard_once = segments * n * (p.segment_bytes as f64 / k);
    assert!(
        (r.source_shards_sent as f64) < every_shard_once * 2.0 * 1.2,
        "broadcaster sent {} bytes of shards; every shard once is {every_shard_once}",
        r.source_shards_sent
    );
}

#[test]
fn without_the_ration_every_viewer_turns_to_the_broadcaster() {
    // 10 Mb/s uplinks, 10-50 ms links: without the ration, every viewer
    // that asks the broadcaster for a shard before the others have traded
    // it is sent one, and its uplink fills with copies that arrive late.
    let slow = SwarmParams {
        viewers: 40,
        segments: 5,
        ..SwarmParams::default()
    };
    let rationed = swarm::run(&slow).unwrap();
    let mut live = slow.live.clone();
    live.ration_window = Duration::ZERO;
    let free = swarm::run(&SwarmParams { live, ..slow }).unwrap();
    assert!(
        free.source_shards_sent > rationed.source_shards_sent * 2,
        "ration off sent {} bytes of shards, on {}",
        free.source_shards_sent,
        rationed.source_shards_sent
    );
    assert!(rationed.offload() > free.offload(), "{rationed:?} {free:?}");
}

#[test]
fn pacing_keeps_a_thin_broadcaster_uplink_from_collapsing() {
    // A hundred viewers on a 5 Mb/s broadcaster, with no ration to hold
    // their asks back (with one, a refusal closes the want, and this
    // audience no longer overwhelms the uplink either way). Unpaced,
    // every copy it is asked for queues in its uplink, where a viewer's
    // cancel cannot reach it and announcements wait behind it: segments
    // arrive later than the viewers give them up.
    let mut thin = SwarmParams {
        viewers: 100,
        segments: 4,
        source_uplink: 5_000_000 / 8,
        ..SwarmParams::default()
    };
    thin.live.ration_window = Duration::ZERO;
    let paced = swarm::run(&thin).unwrap();
    everyone_gets_everything(&paced);
    let unpaced = swarm::run(&SwarmParams {
        engine: EngineConfig {
            max_paced_bytes: usize::MAX,
            ..EngineConfig::default()
        },
        ..thin
    })
    .unwrap();
    assert!(unpaced.missed + unpaced.late > 0, "{unpaced:?}");
    // Its uplink carried more shards for it, copies nobody needed by then.
    assert!(
        unpaced.source_shards_sent > paced.source_shards_sent,
        "unpaced {} bytes of shards, paced {}",
        unpaced.source_shards_sent,
        paced.source_shards_sent
    );
}

#[test]
fn viewers_that_leave_cost_the_others_no_segment() {
    let r = swarm::run(&SwarmParams {
        leave: 8,
        ..lan(30)
    })
    .unwrap();
    // Only the 22 that stayed are counted, and they miss nothing.
    assert_eq!(r.expected, 5 * 22);
    everyone_gets_everything(&r);
}

#[test]
fn an_origin_fills_in_what_uplinks_too_thin_for_the_stream_cannot_carry() {
    // 1 Mb/s uplinks for a 1 Mb/s stream: peers cannot keep up.
    let thin = SwarmParams {
        viewers: 20,
        segments: 4,
        viewer_uplink: 1_000_000 / 8,
        source_uplink: 2_000_000 / 8,
        ..SwarmParams::default()
    };
    let alone = swarm::run(&thin).unwrap();
    assert!(alone.missed + alone.late > 0, "{alone:?}");
    let helped = swarm::run(&SwarmParams {
        origin: Some(OriginParams {
            rtt: Duration::from_millis(40),
            rate: 50_000_000 / 8,
        }),
        ..thin
    })
    .unwrap();
    everyone_gets_everything(&helped);
    assert!(helped.from_http > 0, "{helped:?}");
}

#[test]
fn impossible_parameters_are_refused_with_the_reason() {
    let refused = |p: SwarmParams| swarm::run(&p).unwrap_err().to_string();
    assert!(
        refused(SwarmParams {
            viewers: 0,
            ..lan(1)
        })
        .contains("at least one viewer")
    );
    assert!(refused(SwarmParams { leave: 5, ..lan(5) }).contains("must stay"));
    assert!(
        refused(SwarmParams {
            latency: (Duration::from_millis(9), Duration::from_millis(1)),
            ..lan(5)
        })
        .contains("reversed")
    );
    assert!(
        refused(SwarmParams {
            viewer_uplink: 0,
            ..lan(5)
        })
        .contains("uplink")
    );
}

/// Viewers arriving over time, with connection limits small enough that
/// the DHT's twenty providers per key fill up many times over.
fn arriving(viewers: usize) -> SwarmParams {
    SwarmParams {
        segments: 8,
        arrivals: Arrivals::Poisson {
            over: Duration::from_secs(8),
        },
        max_connections: 40,
        nat_percent: 30,
        ..SwarmParams::home(viewers)
    }
}

#[test]
fn viewers_arriving_over_time_all_start_through_the_dht_despite_full_providers() {
    let n = 300;
    let r = swarm::run(&arriving(n)).unwrap();
    assert_eq!(r.joined, n, "{r:?}");
    assert_eq!(r.never_started, 0, "{r:?}");
    assert!(r.refused_dials > 0, "the limits were reached: {r:?}");
    assert!(
        r.unreachable_dials > 0,
        "some viewers are behind NAT: {r:?}"
    );
    assert!(r.startup_p50 > Duration::ZERO, "{r:?}");
    assert!(r.delivered * 10 >= r.expected * 9, "{r:?}");
    assert!(r.mean_peers <= 40.0, "{r:?}");
}

#[test]
fn the_command_prints_a_row_per_audience_and_refuses_bad_arguments() {
    let cli = Cli::try_parse_from([
        "shoal-sim",
        "swarm",
        "--viewers",
        "3,6",
        "--segments",
        "2",
        "--latency",
        "1-5",
    ])
    .unwrap();
    let out = cli::run(cli).unwrap();
    let rows: Vec<&str> = out.lines().skip(3).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[0].trim_start().starts_with("3 "), "{out}");
    assert!(rows[1].trim_start().starts_with("6 "), "{out}");
    assert!(out.contains("one-way latency 1-5 ms"), "{out}");

    let refused = |args: &[&str]| {
        let mut argv = vec!["shoal-sim", "swarm"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap_err().to_string()
    };
    assert!(refused(&["--latency", "50-10"]).contains("low end is above"));
    assert!(refused(&["--uplink", "0"]).contains("between 0.01"));
    assert!(refused(&["--uplink", "fast"]).contains("not a number"));
    assert!(refused(&["--viewers", "0"]).contains("viewers"));
    assert!(refused(&["--join-over", "10"]).contains("--home"));
    assert!(refused(&["--uplink-mix", "fifty:10"]).contains("share"));
    let cli = Cli::try_parse_from([
        "shoal-sim",
        "swarm",
        "--viewers",
        "4",
        "--uplink-mix",
        "50:10",
    ])
    .unwrap();
    assert!(cli::run(cli).unwrap_err().to_string().contains("100%"));
    // Short segments keep the stream's rate: 300 ms of 1 Mb/s.
    let cli = Cli::try_parse_from([
        "shoal-sim",
        "swarm",
        "--viewers",
        "3",
        "--segments",
        "4",
        "--segment-ms",
        "300",
        "--k",
        "4",
        "--m",
        "2",
    ])
    .unwrap();
    let out = cli::run(cli).unwrap();
    assert!(
        out.contains("37 kB segments every 0.3 s (k = 4, m = 2)"),
        "{out}"
    );
    assert!(refused(&["--segment-ms", "50"]).contains("100"));
    assert!(refused(&["--k", "0"]).contains("--k"));
    // The library checks what clap cannot: every viewer leaving.
    let cli =
        Cli::try_parse_from(["shoal-sim", "swarm", "--viewers", "4", "--leave", "4"]).unwrap();
    assert!(cli::run(cli).unwrap_err().to_string().contains("must stay"));
}
