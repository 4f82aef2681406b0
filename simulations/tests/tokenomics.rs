//! The tokenomics model as a library: Table 1's checks, the split, the
//! stress scenarios paid in the pool token, the creator floor, zero
//! revenue, the sybil sweep and the claim gas.

use std::collections::BTreeSet;

use shoal_sim::model::{self, Params, SPLIT, Scenario, TOKEN_UNIT, dollars};
use shoal_sim::table1::{self, CheckKind};

fn run(scenario: Scenario) -> model::Run {
    model::simulate(scenario, &Params::default()).expect("the default parameters run")
}

#[test]
fn table1_disagrees_exactly_where_its_figures_contradict_each_other() {
    let checks = table1::check_table1();
    assert_eq!(checks.len(), 6);
    let disagreeing: BTreeSet<(&str, &str)> = checks
        .iter()
        .filter(|c| !c.agrees())
        .map(|c| (c.row.scenario, c.kind.label()))
        .collect();
    let payout = CheckKind::CreatorPayout.label();
    let pool = CheckKind::ViewerPool.label();
    let expected: BTreeSet<(&str, &str)> = [
        ("Low Activity", payout),
        ("High Activity", payout),
        ("Low Activity", pool),
        ("Moderate Activity", pool),
        ("High Activity", pool),
    ]
    .into_iter()
    .collect();
    assert_eq!(disagreeing, expected);

    let find = |scenario: &str, kind: CheckKind| {
        checks
            .iter()
            .find(|c| c.row.scenario == scenario && c.kind == kind)
            .map(|c| (c.stated_cents, c.recomputed_cents))
    };
    // 40 TKN × token value against the stated payout per 1,000 views.
    assert_eq!(
        find("Low Activity", CheckKind::CreatorPayout),
        Some((50, 200))
    );
    assert_eq!(
        find("Moderate Activity", CheckKind::CreatorPayout),
        Some((400, 400))
    );
    assert_eq!(
        find("High Activity", CheckKind::CreatorPayout),
        Some((3_200, 800))
    );
    // Pool tokens × token value against 20% of the ad revenue.
    assert_eq!(
        find("Low Activity", CheckKind::ViewerPool),
        Some((dollars(5_000), dollars(2_000)))
    );
    assert_eq!(
        find("Moderate Activity", CheckKind::ViewerPool),
        Some((dollars(50_000), dollars(20_000)))
    );
    assert_eq!(
        find("High Activity", CheckKind::ViewerPool),
        Some((dollars(400_000), dollars(200_000)))
    );
    for c in &checks {
        assert_eq!(c.verdict() == "agrees", c.agrees());
        assert!(c.agrees() || c.verdict().starts_with("DISAGREES: "));
    }
}

#[test]
fn the_split_adds_up_to_the_cent_for_any_revenue() {
    let awkward = (0..10_000).chain([
        999_999_999,
        1_000_000_001,
        u64::MAX / 100,
        u64::MAX - 1,
        u64::MAX,
    ]);
    for revenue in awkward {
        let s = SPLIT.split(revenue);
        assert_eq!(
            s.creator as u128 + s.viewer as u128 + s.treasury as u128,
            revenue as u128,
            "revenue {revenue}"
        );
        // Creator and treasury get no more than their percentage; the
        // viewer pool's remainder is at most two cents.
        assert!(s.creator as u128 * 100 <= revenue as u128 * 70);
        assert!(s.treasury as u128 * 100 <= revenue as u128 * 10);
        assert!(s.viewer as u128 * 100 - revenue as u128 * 20 <= 200);
    }
}

#[test]
fn every_month_of_every_scenario_splits_what_was_funded_exactly() {
    let p = Params::default();
    for scenario in Scenario::ALL {
        let run = run(scenario);
        assert_eq!(run.months.len(), 24);
        let mut treasury = p.treasury_launch_tkn * TOKEN_UNIT;
        for m in &run.months {
            let s = m.split;
            assert_eq!(s.creator + s.viewer + s.treasury, m.funded);
            assert_eq!(m.funded, m.price.tokens_for(m.revenue));
            // Creators are paid their tokens at the price they sell at.
            assert_eq!(m.creator_share_paid, m.sale_price.value_cents(s.creator));
            // The treasury gains its share and what relayers left, and
            // loses only what the floor sold.
            let inflow = treasury + s.treasury + m.relayer_unclaimed;
            if m.floor_paid == 0 {
                assert_eq!(
                    m.treasury_tokens,
                    inflow,
                    "{} month {}",
                    scenario.name(),
                    m.month
                );
            } else {
                assert!(m.treasury_tokens < inflow);
            }
            treasury = m.treasury_tokens;
        }
    }
}

#[test]
fn with_zero_revenue_nothing_is_funded_and_the_floor_lasts_as_long_as_the_treasury() {
    let p = Params::default();
    let run = run(Scenario::ZeroRevenue);
    let floor_per_1k = p.creator_floor_cents_per_1k;
    // Worked out apart from the model: the launch treasury's worth, spent
    // on the floor month by month.
    let mut left = p.launch_price_micro_usd * p.treasury_launch_tkn / 10_000;
    let mut broke = None;
    for m in &run.months {
        assert_eq!((m.revenue, m.funded, m.creator_share_paid), (0, 0, 0));
        assert_eq!((m.relayer_paid, m.relayer_gas, m.sybil_paid), (0, 0, 0));
        let need = m.views * floor_per_1k / 1_000;
        let paid = need.min(left);
        left -= paid;
        assert_eq!(m.floor_paid, paid, "month {}", m.month);
        if paid < need && broke.is_none() {
            broke = Some(m.month);
        }
    }
    let summary = run.summary();
    assert_eq!(summary.floor_broke_month, broke);
    assert_eq!(
        broke,
        Some(10),
        "the default treasury holds $2 per 1,000 views for 9 months"
    );
    assert_eq!(summary.floor_paid_total, dollars(500_000));
    assert_eq!(summary.treasury_end_cents, 0);

    // Without a floor nobody is paid anything, and nothing fails.
    let no_floor = Params {
        creator_floor_cents_per_1k: 0,
        ..Params::default()
    };
    let run = model::simulate(Scenario::ZeroRevenue, &no_floor).expect("runs");
    for m in &run.months {
        assert_eq!(m.creator_paid_per_1k_views(), 0.0);
        assert_eq!(m.treasury_tokens, no_floor.treasury_launch_tkn * TOKEN_UNIT);
    }
    assert_eq!(run.summary().floor_broke_month, None);
}

#[test]
fn the_floor_holds_creator_pay_after_a_collapse_until_the_treasury_runs_dry() {
    let p = Params::default();
    let run = run(Scenario::RevenueCollapse);
    let summary = run.summary();
    let broke = summary.floor_broke_month.expect("the treasury runs dry");
    for m in &run.months {
        let per_1k = m.creator_paid_per_1k_views();
        if m.month < p.shock_month {
            assert_eq!(m.floor_paid, 0);
            assert!((per_1k - 3.50).abs() < 0.01, "month {}: {per_1k}", m.month);
        } else if m.month < broke {
            assert!((per_1k - 2.00).abs() < 0.001, "month {}: {per_1k}", m.month);
        } else if m.month > broke {
            // Only the month's inflow is left to pay with.
            assert!(per_1k < 1.0, "month {}: {per_1k}", m.month);
        }
    }
    assert_eq!(
        summary.floor_months as u64,
        run.months.len() as u64 - p.shock_month as u64 + 1
    );
}

#[test]
fn a_falling_token_costs_creators_only_its_fall_between_funding_and_sale() {
    let p = Params::default();
    let crash = run(Scenario::TokenCrash);
    let base = run(Scenario::Baseline);
    for (c, b) in crash.months.iter().zip(&base.months) {
        let ratio = c.creator_share_paid as f64 / b.creator_share_paid as f64;
        let fall = c.sale_price.usd() / c.price.usd();
        assert!(
            (ratio - fall).abs() < 1e-6,
            "month {}: {ratio} vs {fall}",
            c.month
        );
    }
    // Falling 20% a month: a fifth off while it falls, nothing once it
    // has hit bottom.
    let m = &crash.months[p.shock_month as usize - 2];
    assert!((m.creator_paid_per_1k_views() - 2.80).abs() < 0.01);
    let last = crash.months.last().expect("24 months");
    assert!((last.creator_paid_per_1k_views() - 3.50).abs() < 0.01);
    // The treasury, held in the token, loses what the token lost.
    assert!(crash.summary().treasury_end_cents < base.summary().treasury_end_cents / 3);
}

#[test]
fn honest_relayer_income_falls_with_the_sybil_share_and_the_attacker_pays_for_every_cap() {
    let p = Params::default();
    let rows = model::sybil_sweep(&p).expect("sweep");
    assert_eq!(rows.first().map(|r| r.share_pct), Some(0));
    assert_eq!(rows.last().map(|r| r.share_pct), Some(100));
    let pool = rows[0].honest_net
        + model::simulate(Scenario::Baseline, &p).expect("run").months[0].relayer_gas;
    for w in rows.windows(2) {
        assert!(w[1].honest_net <= w[0].honest_net);
        assert!(w[1].sybil_income > w[0].sybil_income);
    }
    for r in &rows {
        assert_eq!(r.sybil_income, pool * r.share_pct / 100);
        if let Some(keys) = r.keys {
            // Enough keys at the cap to count the sybil bytes, and no more.
            let honest_bytes = 20_000_000u128 * p.view_bytes as u128;
            let sybil_bytes = honest_bytes * r.share_pct as u128 / (100 - r.share_pct) as u128;
            let cap = p.cap_bytes_per_key_month as u128;
            assert!(keys as u128 * cap >= sybil_bytes);
            assert!(keys == 0 || (keys as u128 - 1) * cap < sybil_bytes);
        }
    }
    assert_eq!(rows[10].honest_net, 0);
    assert_eq!(rows[10].keys, None);
    // At the default deposit, capturing a tenth of the pool pays.
    assert!(rows[1].sybil_net.expect("10%") > 0);
    // The deposit that would deter it: one key's month at the cap.
    let deter = model::deposit_to_deter(&p).expect("runs");
    assert_eq!(deter, dollars(1_440));
}

#[test]
fn only_sampled_claims_pay_for_their_gas_at_a_tenth_of_a_gwei() {
    let p = Params::default();
    let rows = model::gas_table(&p);
    assert_eq!(rows.len(), 3);
    for r in &rows {
        // $0.001 a receipt: a fifth of a $5 CPM view.
        assert_eq!(r.income_micro_usd, 1_000);
        let expected = 0.001 / (r.gas_per_receipt as f64 * 1e-9 * 3_000.0);
        assert!((r.break_even_gwei - expected).abs() < 1e-9);
    }
    assert!(rows[0].break_even_gwei < 0.1 && rows[0].cost_micro_usd > rows[0].income_micro_usd);
    assert!(rows[1].break_even_gwei > 0.1 && rows[1].cost_micro_usd < rows[1].income_micro_usd);
}

#[test]
fn bad_parameters_are_refused_with_a_reason() {
    let months0 = Params {
        months: 0,
        ..Params::default()
    };
    let err = model::simulate(Scenario::Baseline, &months0).expect_err("0 months");
    assert!(err.to_string().contains("months"), "{err}");
    let sybil = Params {
        sybil_share_pct: 101,
        ..Params::default()
    };
    let err = model::simulate(Scenario::Baseline, &sybil).expect_err("101%");
    assert!(err.to_string().contains("sybil"), "{err}");
    let price = Params {
        launch_price_micro_usd: 0,
        ..Params::default()
    };
    let err = model::simulate(Scenario::Baseline, &price).expect_err("free token");
    assert!(err.to_string().contains("price"), "{err}");
}
