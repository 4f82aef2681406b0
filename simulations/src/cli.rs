//! The `shoal-sim` command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use shoal_protocol::bitswap::EngineConfig;
use shoal_protocol::live::LiveConfig;

use crate::Error;
use crate::model::{MAX_MONTHS, Params};
use crate::swarm::{self, Arrivals, OriginParams, SwarmParams};
use crate::tokenomics;

#[derive(Parser, Debug)]
#[command(name = "shoal-sim", version, about = "shoal's models")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Recompute the study's Table 1 and run the tokenomics stress
    /// scenarios; writes CSV files and SVG charts
    Tokenomics(TokenomicsArgs),
    /// Simulate a live channel's swarm: the node's own planner and Bitswap
    /// engine over a modelled network; prints latency, stalls and offload
    Swarm(SwarmArgs),
}

#[derive(Args, Debug)]
pub struct SwarmArgs {
    /// Audience sizes to run, comma-separated
    #[arg(long, value_name = "N,..", default_value = "10,50,100",
          value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=20_000))]
    pub viewers: Vec<u64>,
    /// Segments measured, after two warm-up segments [default: 10; 30
    /// with --home]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub segments: Option<u64>,
    /// Viewers arrive over time and find their peers through the DHT, on
    /// home uplinks (some below the stream's rate), with the node's
    /// connection limit and gossipsub's mesh upkeep (--uplink and --dials
    /// do not apply)
    #[arg(long)]
    pub home: bool,
    /// With --home: the span over which viewers arrive, in seconds
    #[arg(long, value_name = "S", default_value_t = 30, requires = "home",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub join_over: u64,
    /// With --home: how long a viewer stays, on average, in seconds (0:
    /// to the end)
    #[arg(long, value_name = "S", default_value_t = 600, requires = "home",
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub mean_stay: u64,
    /// Per cent of viewers behind NAT (no inbound connections) [default:
    /// 30 with --home, else 0]
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub nat: Option<u32>,
    /// Viewers' uplinks as PCT:MBPS pairs adding up to 100%, such as
    /// 30:2,70:20 [default: --uplink for all; with --home, a home mix from
    /// 0.5 to 100 Mb/s]
    #[arg(long, value_name = "PCT:MBPS,..", value_delimiter = ',', value_parser = share_rate)]
    pub uplink_mix: Vec<(u32, u64)>,
    /// Run this many seeds, from --seed on; the table shows each run and
    /// the spread
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    pub seeds: u64,
    /// Each viewer's upload rate, in Mb/s
    #[arg(long, value_name = "MBPS", default_value = "10", value_parser = mbps)]
    pub uplink: u64,
    /// The broadcaster's upload rate, in Mb/s
    #[arg(long, value_name = "MBPS", default_value = "20", value_parser = mbps)]
    pub source_uplink: u64,
    /// One-way latency of each link, drawn from LO-HI milliseconds
    #[arg(long, value_name = "LO-HI", default_value = "10-50", value_parser = millis_range)]
    pub latency: (Duration, Duration),
    /// Viewers each viewer dials
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub dials: u64,
    /// Add an HTTP origin this many milliseconds away (round trip) for
    /// segments peers cannot deliver in time
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub origin_rtt: Option<u64>,
    /// How long the broadcaster rations each new shard, in ms (0: off)
    #[arg(long, value_name = "MS",
          default_value_t = LiveConfig::default().ration_window.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub ration_window: u64,
    /// How long a viewer lets other viewers deliver before it asks the
    /// broadcaster beyond its small quota, in ms
    #[arg(long, value_name = "MS",
          default_value_t = LiveConfig::default().source_wait.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub source_wait: u64,
    /// Let the broadcaster queue every copy a viewer asks for at once,
    /// instead of 128 KiB at a time
    #[arg(long)]
    pub no_pacing: bool,
    /// The broadcaster sends announcements to every viewer it is connected
    /// to, not just its gossip mesh
    #[arg(long)]
    pub flood_publish: bool,
    /// Viewers that leave at once halfway through
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub leave: usize,
    /// Seed for the topology and latencies
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Each segment's duration, in ms; the stream's rate stays the same
    /// (1 Mb/s), so shorter segments are smaller: what low-latency parts
    /// would be if the swarm moved them as segments
    #[arg(long, value_name = "MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(100..=10_000))]
    pub segment_ms: u64,
    /// Low-latency live: announce each --segment-ms unit as a part of a
    /// segment of this many parts (as `broadcast --low-latency` does),
    /// so viewers keep and fetch parts by segment; 1: whole segments
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parts: u32,
    /// Data shards per segment
    #[arg(long, value_name = "K", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub k: u16,
    /// Parity shards per segment
    #[arg(long, value_name = "M", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(0..=64))]
    pub m: u16,
}

/// A rate such as `10` or `2.5` Mb/s, as bytes per second.
fn mbps(s: &str) -> Result<u64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of Mb/s"))?;
    if !x.is_finite() || !(0.01..=100_000.0).contains(&x) {
        return Err(format!("{s} Mb/s is not between 0.01 and 100000"));
    }
    Ok((x * 1_000_000.0 / 8.0).round() as u64)
}

/// `PCT:MBPS`: a share of viewers and their uplink.
fn share_rate(s: &str) -> Result<(u32, u64), String> {
    let (pct, rate) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not PCT:MBPS"))?;
    let pct: u32 = pct
        .trim()
        .parse()
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| format!("{pct:?} is not a share from 0 to 100"))?;
    Ok((pct, mbps(rate)?))
}

/// `LO-HI` milliseconds (or one number for both).
fn millis_range(s: &str) -> Result<(Duration, Duration), String> {
    let one = |t: &str| -> Result<Duration, String> {
        let ms: u64 = t
            .trim()
            .parse()
            .map_err(|_| format!("{t:?} is not a whole number of milliseconds"))?;
        if ms > 10_000 {
            return Err(format!("{ms} ms is over the 10000 ms this model allows"));
        }
        Ok(Duration::from_millis(ms))
    };
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (one(lo)?, one(hi)?),
        None => (one(s)?, one(s)?),
    };
    if lo > hi {
        return Err(format!("{s}: the low end is above the high end"));
    }
    Ok((lo, hi))
}

#[derive(Args, Debug)]
pub struct TokenomicsArgs {
    /// Folder for the CSV and SVG files, created if missing
    /// [default: simulations/out in the source tree]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Months each scenario runs
    #[arg(long, value_name = "N", default_value_t = 24,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_MONTHS)))]
    pub months: u32,
    /// Monthly growth of views and revenue, in percent
    #[arg(long, value_name = "PCT", default_value = "5", value_parser = percent)]
    pub growth: u64,
    /// The creator floor, in dollars per 1,000 views, paid from the
    /// treasury while it lasts (0: none)
    #[arg(long, value_name = "USD", default_value = "2", value_parser = cents)]
    pub floor: u64,
    /// Gas price of relayers' claims, in gwei
    #[arg(long, value_name = "GWEI", default_value = "0.1", value_parser = milli_gwei)]
    pub gas_price: u64,
    /// Share of counted receipt bytes signed by sybil viewer keys in the
    /// monthly runs, in percent (the sweep runs 0-100 anyway)
    #[arg(long, value_name = "PCT", default_value = "0", value_parser = whole_percent)]
    pub sybil: u64,
}

/// Dollars such as `2` or `2.50`, as cents.
fn cents(s: &str) -> Result<u64, String> {
    scaled(s, "dollars", 1_000_000.0, 100.0)
}

/// Gwei such as `0.1`, as milli-gwei.
fn milli_gwei(s: &str) -> Result<u64, String> {
    scaled(s, "gwei", 100_000.0, 1_000.0)
}

/// A decimal number of `unit` from 0 to `max`, times `scale`, rounded.
fn scaled(s: &str, unit: &str, max: f64, scale: f64) -> Result<u64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of {unit}"))?;
    if !x.is_finite() || !(0.0..=max).contains(&x) {
        return Err(format!("{s} is not between 0 and {max} {unit}"));
    }
    Ok((x * scale).round() as u64)
}

/// A whole percentage, 0 to 100.
fn whole_percent(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(x) if x <= 100 => Ok(x),
        _ => Err(format!("{s:?} is not a whole percentage from 0 to 100")),
    }
}

/// A percentage such as `5` or `2.5`, as basis points.
fn percent(s: &str) -> Result<u64, String> {
    scaled(s, "percent", 100.0, 100.0)
}

/// The default output folder: `simulations/out` wherever the command is run.
pub fn default_out() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("out")
}

/// Runs a parsed command line; returns what to print.
pub fn run(cli: Cli) -> Result<String, Error> {
    match cli.command {
        Command::Tokenomics(args) => {
            let params = Params {
                months: args.months,
                growth_bp: args.growth,
                creator_floor_cents_per_1k: args.floor,
                gas_price_mgwei: args.gas_price,
                sybil_share_pct: args.sybil,
                ..Params::default()
            };
            let out = args.out.unwrap_or_else(default_out);
            Ok(tokenomics::run(&params, &out)?.report)
        }
        Command::Swarm(args) => {
            let live = LiveConfig {
                ration_window: Duration::from_millis(args.ration_window),
                source_wait: Duration::from_millis(args.source_wait),
                ..Default::default()
            };
            let preset = if args.home {
                SwarmParams {
                    arrivals: Arrivals::Poisson {
                        over: Duration::from_secs(args.join_over),
                    },
                    mean_stay: (args.mean_stay > 0).then(|| Duration::from_secs(args.mean_stay)),
                    ..SwarmParams::home(1)
                }
            } else {
                SwarmParams::default()
            };
            // The stream's rate, as the default segments have it.
            let rate = preset.segment_bytes as u64 * 1000
                / u64::try_from(preset.segment_duration.as_millis()).unwrap_or(1);
            let base = SwarmParams {
                segment_duration: Duration::from_millis(args.segment_ms),
                segment_bytes: (rate * args.segment_ms / 1000) as usize,
                parts_per_segment: args.parts,
                k: args.k,
                m: args.m,
                segments: args.segments.unwrap_or(preset.segments),
                nat_percent: args.nat.unwrap_or(preset.nat_percent),
                uplink_mix: if args.uplink_mix.is_empty() {
                    preset.uplink_mix.clone()
                } else {
                    args.uplink_mix.clone()
                },
                viewer_uplink: args.uplink,
                source_uplink: args.source_uplink,
                latency: args.latency,
                dials: args.dials as usize,
                origin: args.origin_rtt.map(|ms| OriginParams {
                    rtt: Duration::from_millis(ms),
                    rate: 50_000_000 / 8,
                }),
                leave: args.leave,
                flood_publish: args.flood_publish,
                seed: args.seed,
                live,
                engine: EngineConfig {
                    max_paced_bytes: if args.no_pacing {
                        usize::MAX
                    } else {
                        EngineConfig::default().max_paced_bytes
                    },
                    ..Default::default()
                },
                ..preset
            };
            let mut reports = Vec::new();
            for n in &args.viewers {
                for seed in args.seed..args.seed + args.seeds {
                    let params = SwarmParams {
                        viewers: *n as usize,
                        seed,
                        ..base.clone()
                    };
                    reports.push(swarm::run(&params)?);
                }
            }
            Ok(swarm::table(&base, &reports))
        }
    }
}
