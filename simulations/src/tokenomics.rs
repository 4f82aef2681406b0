//! `shoal-sim tokenomics`: Table 1 recomputed, the four stress scenarios,
//! their CSV files and SVG charts, and the text printed to stdout.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::chart::{Axis, COLORS, LineChart, Marker, Series};
use crate::model::{self, Month, Params, Run, SPLIT, Scenario, Summary};
use crate::money::{csv_tkn, csv_usd, group, usd};
use crate::table1::{self, Check};

/// A CSV field, quoted if it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Everything one `tokenomics` run produced.
#[derive(Debug)]
pub struct Outcome {
    pub checks: Vec<Check>,
    pub runs: Vec<Run>,
    pub summaries: Vec<Summary>,
    /// Every file written, in order.
    pub files: Vec<PathBuf>,
    /// What to print.
    pub report: String,
}

/// Runs Table 1's checks and every scenario, writes the files into `out`
/// (created if missing) and returns the report.
pub fn run(params: &Params, out: &Path) -> Result<Outcome, Error> {
    params.validate()?;
    let checks = table1::check_table1();
    let runs = Scenario::ALL
        .iter()
        .map(|s| model::simulate(*s, params))
        .collect::<Result<Vec<_>, _>>()?;
    let summaries: Vec<Summary> = runs.iter().map(Run::summary).collect();

    fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        action: "create the output folder",
        source,
    })?;
    let mut files = Vec::new();
    let mut write = |name: &str, contents: String| -> Result<(), Error> {
        let path = out.join(name);
        fs::write(&path, contents).map_err(|source| Error::Io {
            path: path.clone(),
            action: "write",
            source,
        })?;
        files.push(path);
        Ok(())
    };
    write("table1.csv", table1_csv(&checks))?;
    for r in &runs {
        write(&format!("{}.csv", r.scenario.name()), run_csv(r))?;
        write(
            &format!("{}.svg", r.scenario.name()),
            scenario_chart(r, params).to_svg(),
        )?;
    }
    write("stress.csv", stress_csv(&summaries))?;
    write(
        "creator-payout-per-1k-views.svg",
        comparison_chart(&runs, params).to_svg(),
    )?;

    let mut report = String::new();
    report.push_str(&table1_text(&checks));
    report.push('\n');
    report.push_str(&assumptions_text(params));
    report.push('\n');
    report.push_str(&stress_text(&summaries, params));
    report.push_str(&format!(
        "\nwrote {} files to {}:\n",
        files.len(),
        out.display()
    ));
    for f in &files {
        let _ = writeln!(report, "  {}", f.display());
    }
    Ok(Outcome {
        checks,
        runs,
        summaries,
        files,
        report,
    })
}

pub fn table1_csv(checks: &[Check]) -> String {
    let mut s = String::from("scenario,check,stated,recomputed,agrees\n");
    for c in checks {
        let _ = writeln!(
            s,
            "{},{},{},{},{}",
            csv_field(c.row.scenario),
            csv_field(c.kind.label()),
            csv_usd(c.stated_cents),
            csv_usd(c.recomputed_cents),
            c.agrees()
        );
    }
    s
}

pub fn table1_text(checks: &[Check]) -> String {
    let mut s = String::from(
        "Table 1 (study, section 5) recomputed from its own assumptions\n\
         (creator grant 40 TKN per 1,000 views; split 70% creators / 20% viewers / 10% treasury)\n\n",
    );
    let _ = writeln!(
        s,
        "{:<18} {:<52} {:>12} {:>12}  result",
        "scenario", "check", "stated", "recomputed"
    );
    for c in checks {
        let _ = writeln!(
            s,
            "{:<18} {:<52} {:>12} {:>12}  {}",
            c.row.scenario,
            c.kind.label(),
            usd(c.stated_cents),
            usd(c.recomputed_cents),
            c.verdict()
        );
    }
    let bad = checks.iter().filter(|c| !c.agrees()).count();
    let _ = writeln!(s, "\n{bad} of {} checks disagree.", checks.len());
    s
}

fn assumptions_text(p: &Params) -> String {
    let mut s = String::from("Model assumptions\n");
    let _ = writeln!(
        s,
        "  month 1: Table 1 moderate, {} ad revenue; {} ad revenue per 1,000 views -> {} views",
        usd(p.start_revenue_cents),
        usd(p.revenue_per_1k_views_cents),
        group(p.start_views())
    );
    let _ = writeln!(
        s,
        "  split {}/{}/{} to the cent; creators paid in USD; viewer tokens minted at price = reserve / circulating",
        SPLIT.creator_pct,
        SPLIT.viewer_pct,
        SPLIT.treasury_pct()
    );
    let _ = writeln!(
        s,
        "  launch: {} TKN at {} (reserve {}); sink {}% of circulating tokens burned a month; growth {}% a month",
        group(p.launch_supply_tkn),
        usd(p.launch_price_cents),
        usd(p.launch_supply_tkn * p.launch_price_cents),
        p.sink_bp as f64 / 100.0,
        p.growth_bp as f64 / 100.0
    );
    for sc in Scenario::ALL {
        let _ = writeln!(s, "  {:<17} {}", sc.name(), sc.describe(p));
    }
    s
}

fn backed_text(s: &Summary, months: u32) -> String {
    let over = match (s.first_over_share_month, s.last_over_share_month) {
        (Some(a), Some(b)) if s.months_viewer_rewards_over_share == b - a + 1 => {
            format!("worth more than the 20% share in months {a}-{b}")
        }
        (Some(_), _) => format!(
            "worth more than the 20% share in {} months",
            s.months_viewer_rewards_over_share
        ),
        _ => "never worth more than the 20% share".into(),
    };
    match s.months_viewer_rewards_unbacked {
        0 => "yes, every month".into(),
        n if n == months => format!("NO: minted with no USD behind them; {over}"),
        n => format!("NO in {n} months; {over}"),
    }
}

pub fn stress_text(summaries: &[Summary], p: &Params) -> String {
    let mut s = format!(
        "Stress scenarios over {} months (creator payout per 1,000 views, USD)\n\n",
        p.months
    );
    let _ = writeln!(
        s,
        "{:<17} {:>8} {:>8} {:>14} {:>9} {:>9} {:>9} {:>11} {:>11} {:>14}  viewer rewards revenue-backed",
        "scenario",
        "month 1",
        "end",
        "min (month)",
        "price 0",
        "price end",
        "price min",
        "viewers end",
        "20% share",
        "treasury end"
    );
    for x in summaries {
        let _ = writeln!(
            s,
            "{:<17} {:>8} {:>8} {:>14} {:>9} {:>9} {:>9} {:>11} {:>11} {:>14}  {}",
            x.scenario.name(),
            format!("${:.2}", x.creator_per_1k_first),
            format!("${:.2}", x.creator_per_1k_end),
            format!(
                "${:.2} ({})",
                x.creator_per_1k_min, x.creator_per_1k_min_month
            ),
            format!("${:.4}", x.price_launch),
            format!("${:.4}", x.price_end),
            format!("${:.4}", x.price_min),
            usd(x.viewer_paid_end_cents),
            usd(x.viewer_share_end_cents),
            usd(x.treasury_end_cents),
            backed_text(x, p.months)
        );
    }
    s
}

pub fn stress_csv(summaries: &[Summary]) -> String {
    let mut s = String::from(
        "scenario,creator_per_1k_views_month1_usd,creator_per_1k_views_end_usd,creator_per_1k_views_min_usd,\
         creator_per_1k_views_min_month,viewer_rewards_revenue_backed,months_viewer_rewards_unbacked,\
         months_viewer_rewards_over_20pct_share,\
         token_price_launch_usd,token_price_end_usd,token_price_min_usd,token_price_min_month,\
         viewer_paid_end_usd,viewer_share_end_usd,treasury_end_usd\n",
    );
    for x in summaries {
        let _ = writeln!(
            s,
            "{},{:.4},{:.4},{:.4},{},{},{},{},{:.6},{:.6},{:.6},{},{},{},{}",
            x.scenario.name(),
            x.creator_per_1k_first,
            x.creator_per_1k_end,
            x.creator_per_1k_min,
            x.creator_per_1k_min_month,
            x.months_viewer_rewards_unbacked == 0,
            x.months_viewer_rewards_unbacked,
            x.months_viewer_rewards_over_share,
            x.price_launch,
            x.price_end,
            x.price_min,
            x.price_min_month,
            csv_usd(x.viewer_paid_end_cents),
            csv_usd(x.viewer_share_end_cents),
            csv_usd(x.treasury_end_cents)
        );
    }
    s
}

pub fn run_csv(run: &Run) -> String {
    let mut s = String::from(
        "month,views,revenue_usd,creator_share_usd,viewer_share_usd,treasury_share_usd,\
         creator_paid_usd,creator_paid_per_1k_views_usd,viewer_paid_usd,viewer_rewards_revenue_backed,viewer_rewards_within_20pct_share,\
         viewer_tokens_issued,creator_tokens_issued,tokens_burned,circulating_tkn,token_price_usd,\
         reserve_usd,treasury_balance_usd\n",
    );
    for m in &run.months {
        let Month {
            month,
            views,
            revenue,
            split,
            creator_paid,
            viewer_paid,
            viewer_tokens,
            creator_tokens,
            burned_tokens,
            end_price,
            treasury,
            ..
        } = m;
        let _ = writeln!(
            s,
            "{month},{views},{},{},{},{},{},{:.4},{},{},{},{},{},{},{},{:.6},{},{}",
            csv_usd(*revenue),
            csv_usd(split.creator),
            csv_usd(split.viewer),
            csv_usd(split.treasury),
            csv_usd(*creator_paid),
            m.creator_paid_per_1k_views(),
            csv_usd(*viewer_paid),
            m.viewer_rewards_backed(),
            m.viewer_rewards_within_share(),
            csv_tkn(*viewer_tokens),
            csv_tkn(*creator_tokens),
            csv_tkn(*burned_tokens),
            csv_tkn(end_price.supply_units),
            end_price.usd(),
            csv_usd(end_price.reserve_cents),
            csv_usd(*treasury)
        );
    }
    s
}

fn shock_markers(scenario: Scenario, p: &Params) -> Vec<Marker> {
    let label = match scenario {
        Scenario::RevenueCollapse => format!("revenue -{}%", 100 - p.collapse_keep_pct),
        Scenario::GrowthStall => "growth stops".into(),
        _ => return vec![],
    };
    vec![Marker {
        x: f64::from(p.shock_month),
        label,
    }]
}

/// Creator payout per 1,000 views (left) and token price (right).
pub fn scenario_chart(run: &Run, p: &Params) -> LineChart {
    let months = |f: &dyn Fn(&Month) -> f64| -> Vec<(f64, f64)> {
        run.months
            .iter()
            .map(|m| (f64::from(m.month), f(m)))
            .collect()
    };
    LineChart {
        title: format!(
            "{}: creator payout per 1,000 views and token price",
            run.scenario.name()
        ),
        x_label: "month".into(),
        left_label: "creator payout per 1,000 views (USD)".into(),
        right_label: Some("token price (USD per TKN)".into()),
        series: vec![
            Series {
                name: "creator payout per 1,000 views".into(),
                color: COLORS[0],
                axis: Axis::Left,
                dash: None,
                width: 2.5,
                points: months(&|m| m.creator_paid_per_1k_views()),
            },
            Series {
                name: "token price, end of month".into(),
                color: COLORS[1],
                axis: Axis::Right,
                dash: Some("8,4"),
                width: 2.5,
                points: months(&|m| m.end_price.usd()),
            },
        ],
        markers: shock_markers(run.scenario, p),
    }
}

/// Dash pattern and width of each scenario's line in the comparison chart:
/// `baseline` and `growth-stall` coincide until the shock and `growth-stall`
/// stays on the same value after it, so each line is drawn narrower than
/// the one before.
const COMPARISON_STYLES: [(Option<&str>, f64); 4] = [
    (None, 7.0),
    (Some("10,4"), 4.5),
    (Some("3,3"), 2.5),
    (Some("12,3,3,3"), 2.0),
];

/// Creator payout per 1,000 views of every scenario.
pub fn comparison_chart(runs: &[Run], p: &Params) -> LineChart {
    LineChart {
        title: "Creator payout per 1,000 views by scenario".into(),
        x_label: "month".into(),
        left_label: "creator payout per 1,000 views (USD)".into(),
        right_label: None,
        series: runs
            .iter()
            .zip(COLORS)
            .zip(COMPARISON_STYLES)
            .map(|((r, color), (dash, width))| Series {
                name: r.scenario.name().into(),
                color,
                axis: Axis::Left,
                dash,
                width,
                points: r
                    .months
                    .iter()
                    .map(|m| (f64::from(m.month), m.creator_paid_per_1k_views()))
                    .collect(),
            })
            .collect(),
        markers: vec![Marker {
            x: f64::from(p.shock_month),
            label: format!("shock (month {})", p.shock_month),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_with_commas_are_quoted() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\", y"), "\"say \"\"x\"\", y\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
