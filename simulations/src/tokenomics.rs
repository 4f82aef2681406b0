//! `shoal-sim tokenomics`: Table 1 recomputed, the stress scenarios as
//! the `RewardPool` pays (in the pool token, along a price path), the
//! creator floor, the sybil sweep and the claim gas; their CSV files and
//! SVG charts, and the text printed to stdout.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::chart::{Axis, COLORS, LineChart, Marker, Series};
use crate::model::{self, GasRow, Month, Params, Run, SPLIT, Scenario, Summary, SybilRow};
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
    pub sybil: Vec<SybilRow>,
    pub gas: Vec<GasRow>,
    /// The deposit that would make one sybil key cost what it earns.
    pub deposit_to_deter_cents: u64,
    /// Every file written, in order.
    pub files: Vec<PathBuf>,
    /// What to print.
    pub report: String,
}

/// Runs Table 1's checks, every scenario, the sybil sweep and the gas
/// table, writes the files into `out` (created if missing) and returns
/// the report.
pub fn run(params: &Params, out: &Path) -> Result<Outcome, Error> {
    params.validate()?;
    let checks = table1::check_table1();
    let runs = Scenario::ALL
        .iter()
        .map(|s| model::simulate(*s, params))
        .collect::<Result<Vec<_>, _>>()?;
    let summaries: Vec<Summary> = runs.iter().map(Run::summary).collect();
    let sybil = model::sybil_sweep(params)?;
    let gas = model::gas_table(params);
    let deposit_to_deter_cents = model::deposit_to_deter(params)?;

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
    write("sybil.csv", sybil_csv(&sybil))?;
    write("sybil.svg", sybil_chart(&sybil).to_svg())?;
    write("gas.csv", gas_csv(&gas))?;

    let mut report = String::new();
    report.push_str(&table1_text(&checks));
    report.push('\n');
    report.push_str(&assumptions_text(params));
    report.push('\n');
    report.push_str(&stress_text(&summaries, params));
    report.push('\n');
    report.push_str(&sybil_text(&sybil, deposit_to_deter_cents, params));
    report.push('\n');
    report.push_str(&gas_text(&gas, params));
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
        sybil,
        gas,
        deposit_to_deter_cents,
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
        "  funders buy pool tokens at the month's price; the contract splits them {}/{}/{} \
         (creator/relayers/treasury); nothing is minted",
        SPLIT.creator_pct,
        SPLIT.viewer_pct,
        SPLIT.treasury_pct()
    );
    let _ = writeln!(
        s,
        "  token launch price ${:.4}; claims are sold {} month(s) after funding; treasury at launch {} TKN",
        p.launch_price_micro_usd as f64 / 1e6,
        p.claim_lag_months,
        group(p.treasury_launch_tkn)
    );
    let floor = if p.creator_floor_cents_per_1k == 0 {
        "none".to_string()
    } else {
        format!(
            "{} per 1,000 views, paid from the treasury while it lasts",
            usd(p.creator_floor_cents_per_1k)
        )
    };
    let _ = writeln!(s, "  creator floor: {floor}");
    let _ = writeln!(
        s,
        "  relayer claims: {} receipt(s) per view, {} gas each, at {} gwei and {} per ETH; sybil share {}%",
        p.receipts_per_view,
        group(p.gas_per_receipt),
        p.gas_price_mgwei as f64 / 1000.0,
        usd(p.eth_cents),
        p.sybil_share_pct
    );
    for sc in Scenario::ALL {
        let _ = writeln!(s, "  {:<17} {}", sc.name(), sc.describe(p));
    }
    s
}

fn floor_text(s: &Summary, p: &Params) -> String {
    if p.creator_floor_cents_per_1k == 0 {
        return "no floor".into();
    }
    match (s.floor_months, s.floor_broke_month) {
        (0, _) => "never needed".into(),
        (n, None) => format!("held {n} months, {} paid", usd(s.floor_paid_total)),
        (_, Some(m)) => format!(
            "treasury empty in month {m} ({} paid)",
            usd(s.floor_paid_total)
        ),
    }
}

pub fn stress_text(summaries: &[Summary], p: &Params) -> String {
    let mut s = format!(
        "Stress scenarios over {} months (per 1,000 views, USD, as sold after the claim)\n\n",
        p.months
    );
    let _ = writeln!(
        s,
        "{:<17} {:>9} {:>9} {:>14} {:>13} {:>10} {:>14}  creator floor",
        "scenario", "creator 1", "end", "min (month)", "relayers end", "price end", "treasury end"
    );
    for x in summaries {
        let _ = writeln!(
            s,
            "{:<17} {:>9} {:>9} {:>14} {:>13} {:>10} {:>14}  {}",
            x.scenario.name(),
            format!("${:.2}", x.creator_per_1k_first),
            format!("${:.2}", x.creator_per_1k_end),
            format!(
                "${:.2} ({})",
                x.creator_per_1k_min, x.creator_per_1k_min_month
            ),
            format!("${:.3}", x.relayer_net_per_1k_end),
            format!("${:.4}", x.price_end),
            usd(x.treasury_end_cents),
            floor_text(x, p)
        );
    }
    s
}

pub fn stress_csv(summaries: &[Summary]) -> String {
    let mut s = String::from(
        "scenario,creator_per_1k_views_month1_usd,creator_per_1k_views_end_usd,creator_per_1k_views_min_usd,\
         creator_per_1k_views_min_month,relayer_net_per_1k_views_end_usd,token_price_end_usd,\
         floor_months,floor_broke_month,floor_paid_usd,treasury_end_usd\n",
    );
    for x in summaries {
        let _ = writeln!(
            s,
            "{},{:.4},{:.4},{:.4},{},{:.4},{:.6},{},{},{},{}",
            x.scenario.name(),
            x.creator_per_1k_first,
            x.creator_per_1k_end,
            x.creator_per_1k_min,
            x.creator_per_1k_min_month,
            x.relayer_net_per_1k_end,
            x.price_end,
            x.floor_months,
            x.floor_broke_month.map_or(String::new(), |m| m.to_string()),
            csv_usd(x.floor_paid_total),
            csv_usd(x.treasury_end_cents)
        );
    }
    s
}

pub fn run_csv(run: &Run) -> String {
    let mut s = String::from(
        "month,views,revenue_usd,token_price_usd,sale_price_usd,funded_tkn,creator_tkn,relayer_pool_tkn,\
         treasury_share_tkn,creator_share_paid_usd,floor_paid_usd,floor_short_usd,\
         creator_paid_per_1k_views_usd,relayer_paid_usd,relayer_gas_usd,relayer_unclaimed_tkn,\
         relayer_net_per_1k_views_usd,sybil_paid_usd,treasury_tkn,treasury_value_usd\n",
    );
    for m in &run.months {
        let Month {
            month,
            views,
            revenue,
            price,
            sale_price,
            funded,
            split,
            creator_share_paid,
            floor_paid,
            floor_short,
            relayer_paid,
            relayer_gas,
            relayer_unclaimed,
            sybil_paid,
            treasury_tokens,
            treasury_value,
        } = m;
        let _ = writeln!(
            s,
            "{month},{views},{},{:.6},{:.6},{},{},{},{},{},{},{},{:.4},{},{},{},{:.4},{},{},{}",
            csv_usd(*revenue),
            price.usd(),
            sale_price.usd(),
            csv_tkn(*funded),
            csv_tkn(split.creator),
            csv_tkn(split.viewer),
            csv_tkn(split.treasury),
            csv_usd(*creator_share_paid),
            csv_usd(*floor_paid),
            csv_usd(*floor_short),
            m.creator_paid_per_1k_views(),
            csv_usd(*relayer_paid),
            csv_usd(*relayer_gas),
            csv_tkn(*relayer_unclaimed),
            m.relayer_net_per_1k_views(),
            csv_usd(*sybil_paid),
            csv_tkn(*treasury_tokens),
            csv_usd(*treasury_value)
        );
    }
    s
}

pub fn sybil_text(rows: &[SybilRow], deter_cents: u64, p: &Params) -> String {
    let mut s = format!(
        "Sybil share of counted receipt bytes (month 1 of the baseline; a key counts at most {} GB a month, \
         its {} deposit costs {}% a month to keep locked)\n\n",
        group(p.cap_bytes_per_key_month / 1_000_000_000),
        usd(p.deposit_cents),
        p.carry_bp as f64 / 100.0
    );
    let _ = writeln!(
        s,
        "{:>6} {:>14} {:>12} {:>14} {:>8} {:>12} {:>14}",
        "sybil", "honest net", "honest /GB", "attacker gets", "keys", "keys cost", "attacker net"
    );
    for r in rows {
        let opt = |v: Option<u64>, f: &dyn Fn(u64) -> String| v.map_or("-".into(), f);
        let _ = writeln!(
            s,
            "{:>5}% {:>14} {:>12} {:>14} {:>8} {:>12} {:>14}",
            r.share_pct,
            usd(r.honest_net),
            format!("${:.5}", r.honest_per_gb),
            usd(r.sybil_income),
            opt(r.keys, &group),
            opt(r.sybil_cost, &usd),
            r.sybil_net.map_or("-".into(), signed_usd)
        );
    }
    let _ = writeln!(
        s,
        "\nA deposit would have to be {} for its carrying cost to eat what one key at the cap earns.",
        usd(deter_cents)
    );
    s
}

fn signed_usd(cents: i128) -> String {
    let abs = u64::try_from(cents.unsigned_abs()).unwrap_or(u64::MAX);
    if cents < 0 {
        format!("-{}", usd(abs))
    } else {
        usd(abs)
    }
}

pub fn sybil_csv(rows: &[SybilRow]) -> String {
    let mut s = String::from(
        "sybil_share_pct,honest_net_usd,honest_net_per_gb_usd,attacker_income_usd,keys,keys_cost_usd,attacker_net_usd\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{:.6},{},{},{},{}",
            r.share_pct,
            csv_usd(r.honest_net),
            r.honest_per_gb,
            csv_usd(r.sybil_income),
            r.keys.map_or(String::new(), |k| k.to_string()),
            r.sybil_cost.map_or(String::new(), csv_usd),
            r.sybil_net
                .map_or(String::new(), |n| format!("{:.2}", n as f64 / 100.0))
        );
    }
    s
}

pub fn gas_text(rows: &[GasRow], p: &Params) -> String {
    let mut s = format!(
        "Claim gas against an honest relayer's income per receipt (ETH at {}, gas at {} gwei)\n\n",
        usd(p.eth_cents),
        p.gas_price_mgwei as f64 / 1000.0
    );
    let _ = writeln!(
        s,
        "{:<42} {:>10} {:>12} {:>12} {:>16}",
        "claim", "gas", "income", "gas cost", "break-even gwei"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<42} {:>10} {:>12} {:>12} {:>16}",
            r.strategy,
            group(r.gas_per_receipt),
            format!("${:.6}", r.income_micro_usd as f64 / 1e6),
            format!("${:.6}", r.cost_micro_usd as f64 / 1e6),
            format!("{:.3}", r.break_even_gwei)
        );
    }
    s
}

pub fn gas_csv(rows: &[GasRow]) -> String {
    let mut s = String::from(
        "claim,gas_per_receipt,income_per_receipt_usd,gas_cost_per_receipt_usd,break_even_gwei\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{:.6},{:.6},{:.4}",
            csv_field(r.strategy),
            r.gas_per_receipt,
            r.income_micro_usd as f64 / 1e6,
            r.cost_micro_usd as f64 / 1e6,
            r.break_even_gwei
        );
    }
    s
}

fn shock_markers(scenario: Scenario, p: &Params) -> Vec<Marker> {
    let label = match scenario {
        Scenario::RevenueCollapse => format!("revenue -{}%", 100 - p.collapse_keep_pct),
        Scenario::GrowthStall => "growth stops".into(),
        Scenario::TokenCrash => format!("token -{}% a month", p.crash_bp as f64 / 100.0),
        _ => return vec![],
    };
    vec![Marker {
        x: f64::from(p.shock_month),
        label,
    }]
}

/// Creator payout per 1,000 views with and without the floor (left) and
/// the token price claims were sold at (right).
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
        left_label: "per 1,000 views (USD)".into(),
        right_label: Some("token price (USD per TKN)".into()),
        series: vec![
            Series {
                name: "creator payout with the floor".into(),
                color: COLORS[0],
                axis: Axis::Left,
                dash: None,
                width: 3.5,
                points: months(&|m| m.creator_paid_per_1k_views()),
            },
            Series {
                name: "creator's 70% alone".into(),
                color: COLORS[2],
                axis: Axis::Left,
                dash: Some("3,3"),
                width: 2.0,
                points: months(&|m| {
                    m.creator_paid_per_1k_views()
                        - m.floor_paid as f64 / 100.0 / (m.views.max(1) as f64 / 1_000.0)
                }),
            },
            Series {
                name: "relayers, after gas".into(),
                color: COLORS[3],
                axis: Axis::Left,
                dash: Some("10,4"),
                width: 2.0,
                points: months(&|m| m.relayer_net_per_1k_views()),
            },
            Series {
                name: "token price at the sale".into(),
                color: COLORS[1],
                axis: Axis::Right,
                dash: Some("8,4"),
                width: 2.5,
                points: months(&|m| m.sale_price.usd()),
            },
        ],
        markers: shock_markers(run.scenario, p),
    }
}

/// Dash pattern and width of each scenario's line in the comparison chart:
/// `baseline` and `growth-stall` coincide, so each line is drawn narrower
/// than the one before.
const COMPARISON_STYLES: [(Option<&str>, f64); 5] = [
    (None, 7.0),
    (Some("10,4"), 4.5),
    (Some("3,3"), 2.5),
    (Some("12,3,3,3"), 2.0),
    (Some("2,6"), 2.0),
];

/// Creator payout per 1,000 views of every scenario.
pub fn comparison_chart(runs: &[Run], p: &Params) -> LineChart {
    LineChart {
        title: "Creator payout per 1,000 views by scenario (floor included)".into(),
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

/// Honest relayers' net and the attacker's net against the sybil share.
pub fn sybil_chart(rows: &[SybilRow]) -> LineChart {
    LineChart {
        title: "Sybil share of counted receipt bytes: who gets the relayer pool".into(),
        x_label: "sybil share of counted bytes (%)".into(),
        left_label: "USD a month".into(),
        right_label: None,
        series: vec![
            Series {
                name: "honest relayers, after gas".into(),
                color: COLORS[0],
                axis: Axis::Left,
                dash: None,
                width: 3.0,
                points: rows
                    .iter()
                    .map(|r| (r.share_pct as f64, r.honest_net as f64 / 100.0))
                    .collect(),
            },
            Series {
                name: "attacker, after deposits and gas".into(),
                color: COLORS[1],
                axis: Axis::Left,
                dash: Some("8,4"),
                width: 2.5,
                points: rows
                    .iter()
                    .filter_map(|r| Some((r.share_pct as f64, r.sybil_net? as f64 / 100.0)))
                    .collect(),
            },
        ],
        markers: vec![],
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
