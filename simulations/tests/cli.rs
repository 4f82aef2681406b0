//! The command line: argument errors, an unwritable output folder, and a
//! full run's files.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use clap::Parser;
use shoal_sim::Error;
use shoal_sim::cli::Cli;
use shoal_sim::model::Params;
use shoal_sim::tokenomics;

/// A fresh folder under the system temp folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("shoal-sim-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create a temp folder");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn parse_error(args: &[&str]) -> String {
    let mut argv = vec!["shoal-sim", "tokenomics"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv)
        .expect_err("bad arguments are refused")
        .to_string()
}

#[test]
fn bad_numbers_are_refused_by_the_parser() {
    let e = parse_error(&["--months", "0"]);
    assert!(
        e.contains("--months") && e.contains("0 is not in 1..=240"),
        "{e}"
    );
    let e = parse_error(&["--months=-3"]);
    assert!(e.contains("--months"), "{e}");
    let e = parse_error(&["--months", "lots"]);
    assert!(e.contains("--months"), "{e}");
    let e = parse_error(&["--floor", "abc"]);
    assert!(e.contains("--floor") && e.contains("not a number"), "{e}");
    let e = parse_error(&["--gas-price=-1"]);
    assert!(e.contains("--gas-price"), "{e}");
    let e = parse_error(&["--sybil", "101"]);
    assert!(e.contains("--sybil") && e.contains("0 to 100"), "{e}");
    let e = parse_error(&["--growth=-5"]);
    assert!(e.contains("--growth"), "{e}");
    assert!(Cli::try_parse_from(["shoal-sim", "tokenomics", "--months", "12"]).is_ok());
}

#[test]
fn an_unwritable_output_folder_is_an_error_naming_it() {
    let tmp = TempDir::new("unwritable");
    let file = tmp.0.join("a-file");
    fs::write(&file, b"not a folder").expect("write a file");
    let out = file.join("out");
    let err = tokenomics::run(&Params::default(), &out).expect_err("a folder under a file");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("cannot create the output folder") && msg.contains(&*out.to_string_lossy()),
        "{msg}"
    );
}

#[test]
fn the_binary_reports_bad_input_on_stderr_and_fails() {
    let bin = env!("CARGO_BIN_EXE_shoal-sim");
    let out = Command::new(bin)
        .args(["tokenomics", "--months", "0"])
        .output()
        .expect("run shoal-sim");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--months"), "{stderr}");

    let tmp = TempDir::new("bin-unwritable");
    let file = tmp.0.join("a-file");
    fs::write(&file, b"x").expect("write a file");
    let out = Command::new(bin)
        .args(["tokenomics", "--out"])
        .arg(file.join("out"))
        .output()
        .expect("run shoal-sim");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot create the output folder"),
        "{stderr}"
    );
}

#[test]
fn a_run_writes_every_csv_and_svg_and_says_where() {
    let tmp = TempDir::new("run");
    let out = tmp.0.join("nested/out");
    let bin = env!("CARGO_BIN_EXE_shoal-sim");
    let res = Command::new(bin)
        .args(["tokenomics", "--months", "12", "--out"])
        .arg(&out)
        .output()
        .expect("run shoal-sim");
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(stdout.contains("DISAGREES") && stdout.contains("agrees"));
    for name in [
        "table1.csv",
        "baseline.csv",
        "revenue-collapse.csv",
        "growth-stall.csv",
        "token-crash.csv",
        "zero-revenue.csv",
        "stress.csv",
        "sybil.csv",
    ] {
        let path = out.join(name);
        let text = fs::read_to_string(&path).expect("the CSV exists");
        assert!(
            stdout.contains(&*path.to_string_lossy()),
            "{name} not listed"
        );
        let widths: Vec<usize> = text.lines().map(|l| l.split(',').count()).collect();
        assert!(
            widths.iter().all(|w| *w == widths[0]),
            "{name}: ragged rows"
        );
    }
    assert_eq!(
        fs::read_to_string(out.join("baseline.csv"))
            .expect("read")
            .lines()
            .count(),
        13
    );
    // The claim names hold commas, quoted.
    let gas = fs::read_to_string(out.join("gas.csv")).expect("gas.csv");
    assert_eq!(gas.lines().count(), 4);
    assert!(gas.contains("\"one viewer in 64, 1,000 receipts a claim\",1250,"));
    for name in [
        "baseline.svg",
        "revenue-collapse.svg",
        "growth-stall.svg",
        "token-crash.svg",
        "zero-revenue.svg",
        "creator-payout-per-1k-views.svg",
        "sybil.svg",
    ] {
        let svg = fs::read_to_string(out.join(name)).expect("the SVG exists");
        assert!(svg.starts_with("<?xml") && svg.contains("xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("<polyline") && svg.contains("month"));
    }
}
