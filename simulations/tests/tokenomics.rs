//! The tokenomics model as a library: Table 1's checks, the split, the
//! revenue backing of viewer rewards, and the stress scenarios.

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
fn every_month_of_every_scenario_splits_and_spends_revenue_exactly() {
    for scenario in Scenario::ALL {
        let run = run(scenario);
        assert_eq!(run.months.len(), 24);
        let mut treasury = 0;
        for m in &run.months {
            let s = m.split;
            assert_eq!(s.creator + s.viewer + s.treasury, m.revenue);
            // Every cent goes somewhere: creators in cash, the token reserve
            // or the treasury.
            let creator_cash = match scenario.issuance() {
                model::Issuance::RevenueBacked => m.creator_paid,
                model::Issuance::FixedEmission => 0,
            };
            assert_eq!(creator_cash + m.to_reserve + m.to_treasury, m.revenue);
            treasury += m.to_treasury;
            assert_eq!(
                m.treasury,
                treasury,
                "{} month {}",
                scenario.name(),
                m.month
            );
        }
    }
}

#[test]
fn revenue_backed_viewer_rewards_never_exceed_the_viewer_share() {
    for scenario in [
        Scenario::Baseline,
        Scenario::RevenueCollapse,
        Scenario::GrowthStall,
    ] {
        for m in &run(scenario).months {
            // Compared exactly: tokens × reserve / supply <= 20% of revenue.
            let value_num = m.viewer_tokens as u128 * m.issue_price.reserve_cents as u128;
            let share_num = m.split.viewer as u128 * m.issue_price.supply_units as u128;
            assert!(
                value_num <= share_num,
                "{} month {}",
                scenario.name(),
                m.month
            );
            assert!(m.viewer_paid <= m.split.viewer);
            assert!(m.viewer_rewards_backed() && m.viewer_rewards_within_share());
            // And the pool is spent: less than one micro-TKN's worth is
            // left over.
            assert!(m.split.viewer - m.viewer_paid <= 1);
            assert_eq!(m.creator_paid, m.split.creator);
        }
    }
}

#[test]
fn token_inflation_erodes_the_price_and_the_payouts() {
    let run = run(Scenario::TokenInflation);
    let summary = run.summary();
    assert!(summary.price_end < summary.price_launch / 2.0);
    let mut last_price = run.launch_price.usd();
    for m in &run.months {
        assert!(m.issue_price.usd() < last_price, "month {}", m.month);
        last_price = m.issue_price.usd();
        // Table 1's fixed grant: 40 TKN per 1,000 views, whatever the price.
        assert_eq!(m.creator_tokens, m.views * 40 * TOKEN_UNIT / 1_000);
        assert_eq!(m.viewer_tokens, 500_000 * TOKEN_UNIT);
        assert!(!m.viewer_rewards_backed());
    }
    let first = &run.months[0];
    let last = &run.months[run.months.len() - 1];
    assert!(last.creator_paid_per_1k_views() < first.creator_paid_per_1k_views() / 2.0);
    assert!(last.viewer_paid < first.viewer_paid / 2);
    // Table 1's moderate pool is worth more than the 20% share at first.
    assert!(!first.viewer_rewards_within_share());
    assert_eq!(summary.months_viewer_rewards_unbacked, 24);
}

#[test]
fn a_revenue_collapse_cuts_creator_pay_per_view_by_ninety_percent() {
    let run = run(Scenario::RevenueCollapse);
    let before = &run.months[4];
    assert_eq!(before.month, 5);
    for m in &run.months[5..] {
        assert_eq!(m.revenue, before.revenue / 10);
        assert_eq!(m.views, before.views);
        let ratio = m.creator_paid_per_1k_views() / before.creator_paid_per_1k_views();
        assert!((ratio - 0.1).abs() < 1e-6, "month {}: {ratio}", m.month);
    }
    let baseline = model::simulate(Scenario::Baseline, &Params::default()).expect("runs");
    assert_eq!(run.months[..5], baseline.months[..5]);
}

#[test]
fn growth_stops_at_the_shock_month() {
    let run = run(Scenario::GrowthStall);
    assert!(run.months[4].views > run.months[3].views);
    for m in &run.months[5..] {
        assert_eq!(m.views, run.months[4].views);
        assert_eq!(m.revenue, run.months[4].revenue);
    }
}

#[test]
fn bad_parameters_are_refused_with_a_reason() {
    let months0 = Params {
        months: 0,
        ..Params::default()
    };
    let err = model::simulate(Scenario::Baseline, &months0).expect_err("0 months");
    assert!(err.to_string().contains("months"), "{err}");
    let sink = Params {
        sink_bp: 9_000,
        ..Params::default()
    };
    let err = model::simulate(Scenario::Baseline, &sink).expect_err("90% sink");
    assert!(err.to_string().contains("sink"), "{err}");
}
