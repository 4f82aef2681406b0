//! Reading criterion's estimates back, to print ratios against a baseline
//! measured in the same run.

use std::path::PathBuf;

/// criterion's output folder: `$CARGO_TARGET_DIR/criterion` or the
/// workspace's `target/criterion`.
fn criterion_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion")
}

/// The median time in nanoseconds criterion measured for `group/function`
/// in this run, if it ran.
pub fn median_ns(group: &str, function: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(group.replace('/', "_"))
        .join(function.replace('/', "_"))
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// Prints `name: time / baseline time` for each pair that ran.
#[allow(dead_code)] // each bench binary compiles this module; not all print pairs
pub fn print_ratios(title: &str, rows: &[(&str, &str, &str, &str)]) {
    println!("\n{title}");
    for (group, function, base_group, base_function) in rows {
        if let (Some(t), Some(b)) = (
            median_ns(group, function),
            median_ns(base_group, base_function),
        ) {
            println!(
                "  {group}/{function}: {:.2} ms, {:.3}x the time of {base_group}/{base_function} ({:.2} ms)",
                t / 1e6,
                t / b,
                b / 1e6
            );
        }
    }
}
