//! `shoal-sim`: shoal's models; see the library for what they compute.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use shoal_sim::cli::{self, Cli};

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Ok(report) => {
            // A closed pipe (`| head`) is not an error worth reporting.
            let _ = std::io::stdout().write_all(report.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
