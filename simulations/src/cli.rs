//! The `shoal-sim` command line.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::Error;
use crate::model::{MAX_MONTHS, Params};
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
    /// Share of the circulating tokens spent and burned each month, in percent
    #[arg(long, value_name = "PCT", default_value = "2", value_parser = percent)]
    pub sink: u64,
}

/// A percentage such as `5` or `2.5`, as basis points.
fn percent(s: &str) -> Result<u64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of percent"))?;
    if !x.is_finite() || !(0.0..=100.0).contains(&x) {
        return Err(format!("{s} is not between 0 and 100"));
    }
    Ok((x * 100.0).round() as u64)
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
                sink_bp: args.sink,
                ..Params::default()
            };
            let out = args.out.unwrap_or_else(default_out);
            Ok(tokenomics::run(&params, &out)?.report)
        }
    }
}
