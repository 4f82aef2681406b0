//! The monthly tokenomics model.
//!
//! Each month ad revenue `R` arrives and is split to the cent: 70% to
//! creators, 20% to the viewer/relayer reward pool, 10% to the treasury,
//! as the `RewardPool` contract splits a funding: creator and treasury
//! shares rounded down, the pool gets the rest (at most two cents more).
//!
//! The token's price is its reserve divided by the circulating supply:
//! the reserve is the USD that has flowed into tokens (the launch reserve
//! plus every viewer pool that bought tokens), so `price = reserve /
//! circulating`. Deterministic, no randomness. In order, each month:
//!
//! 1. audience (views) and revenue for the month, from the scenario;
//! 2. the split;
//! 3. rewards. Revenue-backed scenarios pay creators their 70% in USD and
//!    mint `floor(pool / price)` tokens for viewers, the pool's USD going
//!    into the reserve, so minting leaves the price where it was and the
//!    tokens are worth at most the pool. The `token-inflation` scenario
//!    instead mints a fixed schedule (Table 1's: a viewer pool of 500,000
//!    TKN a month and 40 TKN per 1,000 views for creators) with no USD
//!    behind it; the creator and viewer shares of revenue are not paid out
//!    and stay with the treasury;
//! 4. rewards are valued at the price just after minting;
//! 5. the sink: a share of the circulating tokens is spent (ads paid in
//!    tokens, premium features) and burned; the reserve stays, so the price
//!    rises by `1 / (1 - sink)`.

use crate::Error;

pub use crate::money::TOKEN_UNIT;

/// Cents in `d` dollars.
pub const fn dollars(d: u64) -> u64 {
    d * 100
}

/// How revenue is split; the viewer pool gets the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitRule {
    pub creator_pct: u64,
    pub viewer_pct: u64,
}

/// The study's split (section 5): 70% creators, 20% viewers, 10% platform.
pub const SPLIT: SplitRule = SplitRule {
    creator_pct: 70,
    viewer_pct: 20,
};

/// One month's revenue, split in cents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub creator: u64,
    pub viewer: u64,
    pub treasury: u64,
}

impl SplitRule {
    pub fn treasury_pct(&self) -> u64 {
        100 - self.creator_pct - self.viewer_pct
    }

    /// Creators and the treasury get their percentage rounded down; the
    /// viewer pool gets what is left, so the three always add up to
    /// `revenue_cents` (the contract's rule).
    pub fn split(&self, revenue_cents: u64) -> Split {
        let creator = share(revenue_cents, self.creator_pct, 100);
        let treasury = share(revenue_cents, self.treasury_pct(), 100);
        Split {
            creator,
            viewer: revenue_cents - creator - treasury,
            treasury,
        }
    }
}

/// `floor(a × num / den)` for `num <= den`, which cannot exceed `a`.
fn share(a: u64, num: u64, den: u64) -> u64 {
    debug_assert!(num <= den && den > 0);
    u64::try_from(a as u128 * num as u128 / den as u128).unwrap_or(a)
}

/// `floor(a × b / c)`, or `None` if it does not fit in 64 bits.
fn mul_div(a: u64, b: u64, c: u64) -> Option<u64> {
    if c == 0 {
        return None;
    }
    u64::try_from(a as u128 * b as u128 / c as u128).ok()
}

/// The token price as the exact ratio it is: reserve over circulating supply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    pub reserve_cents: u64,
    pub supply_units: u64,
}

impl Price {
    /// Dollars per TKN.
    pub fn usd(&self) -> f64 {
        (self.reserve_cents as f64 / 100.0) / (self.supply_units as f64 / TOKEN_UNIT as f64)
    }

    /// Cents `units` micro-TKN are worth, rounded down.
    pub fn value_cents(&self, units: u64) -> u64 {
        mul_div(units, self.reserve_cents, self.supply_units).unwrap_or(u64::MAX)
    }
}

/// How a scenario pays rewards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Issuance {
    /// Creators get their share in USD; viewer tokens are minted against the
    /// viewer share at the current price.
    RevenueBacked,
    /// A fixed schedule of tokens whatever the revenue.
    FixedEmission,
}

/// A named stress scenario, starting from Table 1's moderate row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Baseline,
    RevenueCollapse,
    GrowthStall,
    TokenInflation,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::Baseline,
        Scenario::RevenueCollapse,
        Scenario::GrowthStall,
        Scenario::TokenInflation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::RevenueCollapse => "revenue-collapse",
            Scenario::GrowthStall => "growth-stall",
            Scenario::TokenInflation => "token-inflation",
        }
    }

    pub fn describe(self, p: &Params) -> String {
        let g = p.growth_bp as f64 / 100.0;
        match self {
            Scenario::Baseline => format!("views and revenue grow {g}% a month"),
            Scenario::RevenueCollapse => format!(
                "from month {} revenue is {}% of month {}'s and stays; views stop growing",
                p.shock_month,
                p.collapse_keep_pct,
                p.shock_month.saturating_sub(1)
            ),
            Scenario::GrowthStall => {
                format!("growth stops at month {}", p.shock_month)
            }
            Scenario::TokenInflation => format!(
                "baseline views and revenue, but rewards are a fixed emission of {} TKN a month \
                 to viewers and {} TKN per 1,000 views to creators, minted with no USD behind \
                 them; the revenue stays with the treasury",
                crate::money::group(p.emission_viewer_tkn),
                p.emission_creator_tkn_per_1k
            ),
        }
    }

    pub fn issuance(self) -> Issuance {
        match self {
            Scenario::TokenInflation => Issuance::FixedEmission,
            _ => Issuance::RevenueBacked,
        }
    }

    /// Whether views stop growing from the shock month on.
    fn stalls(self) -> bool {
        matches!(self, Scenario::RevenueCollapse | Scenario::GrowthStall)
    }
}

/// The model's assumptions. [`Params::default`] starts from Table 1's
/// moderate row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Months to run.
    pub months: u32,
    /// Month 1's ad revenue: Table 1's moderate $100,000.
    pub start_revenue_cents: u64,
    /// Ad revenue per 1,000 views (an effective CPM: ad price × ads per view
    /// × fill), which turns revenue into views: $5.00.
    pub revenue_per_1k_views_cents: u64,
    /// Monthly growth of views (and so of revenue), in basis points.
    pub growth_bp: u64,
    /// Share of the circulating tokens spent and burned each month, in basis
    /// points.
    pub sink_bp: u64,
    /// Tokens circulating at launch.
    pub launch_supply_tkn: u64,
    /// Token price at launch (Table 1's moderate $0.10); the launch reserve
    /// is `launch_supply_tkn × launch_price_cents`.
    pub launch_price_cents: u64,
    /// The month the shock of `revenue-collapse` and `growth-stall` starts.
    pub shock_month: u32,
    /// Percent of the pre-shock revenue left after the collapse.
    pub collapse_keep_pct: u64,
    /// `token-inflation`: viewer tokens minted a month (Table 1's moderate
    /// pool).
    pub emission_viewer_tkn: u64,
    /// `token-inflation`: creator tokens minted per 1,000 views (Table 1's
    /// fixed grant).
    pub emission_creator_tkn_per_1k: u64,
}

/// The longest run: twenty years is already far past what a model with
/// constant growth can say anything about.
pub const MAX_MONTHS: u32 = 240;
/// Most monthly growth accepted (50% a month).
pub const MAX_GROWTH_BP: u64 = 5_000;
/// Most monthly sink accepted (50% of the circulating tokens a month).
pub const MAX_SINK_BP: u64 = 5_000;

impl Default for Params {
    fn default() -> Self {
        Params {
            months: 24,
            start_revenue_cents: dollars(100_000),
            revenue_per_1k_views_cents: 500,
            growth_bp: 500,
            sink_bp: 200,
            launch_supply_tkn: 10_000_000,
            launch_price_cents: 10,
            shock_month: 6,
            collapse_keep_pct: 10,
            emission_viewer_tkn: 500_000,
            emission_creator_tkn_per_1k: 40,
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::Params(msg));
        if self.months == 0 || self.months > MAX_MONTHS {
            return bad(format!(
                "months must be between 1 and {MAX_MONTHS}, not {}",
                self.months
            ));
        }
        if self.growth_bp > MAX_GROWTH_BP {
            return bad(format!(
                "growth must be at most {}% a month",
                MAX_GROWTH_BP / 100
            ));
        }
        if self.sink_bp > MAX_SINK_BP {
            return bad(format!(
                "sink must be at most {}% a month",
                MAX_SINK_BP / 100
            ));
        }
        if self.revenue_per_1k_views_cents == 0 {
            return bad("revenue per 1,000 views must be above zero".into());
        }
        if self.start_views() == 0 {
            return bad("the starting revenue buys no views at all".into());
        }
        if self.launch_supply_tkn == 0 || self.launch_price_cents == 0 {
            return bad("the launch supply and price must be above zero".into());
        }
        if self
            .launch_supply_tkn
            .checked_mul(TOKEN_UNIT)
            .and_then(|_| self.launch_supply_tkn.checked_mul(self.launch_price_cents))
            .is_none()
        {
            return bad("the launch supply is too large".into());
        }
        if self.shock_month < 2 {
            return bad("the shock month must be 2 or later".into());
        }
        if self.collapse_keep_pct > 100 {
            return bad("the revenue left after a collapse is at most 100%".into());
        }
        Ok(())
    }

    /// Views in month 1, from the starting revenue and the revenue per 1,000
    /// views.
    pub fn start_views(&self) -> u64 {
        mul_div(
            self.start_revenue_cents,
            1_000,
            self.revenue_per_1k_views_cents,
        )
        .unwrap_or(0)
    }

    fn launch_price(&self) -> Price {
        Price {
            reserve_cents: self.launch_supply_tkn * self.launch_price_cents,
            supply_units: self.launch_supply_tkn * TOKEN_UNIT,
        }
    }
}

/// One month of a run. Money in cents, tokens in micro-TKN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Month {
    /// 1-based.
    pub month: u32,
    pub views: u64,
    pub revenue: u64,
    /// The 70/20/10 split of `revenue`.
    pub split: Split,
    /// USD value creators received (cash, or tokens at `issue_price`).
    pub creator_paid: u64,
    /// USD value of the tokens minted for viewers, at `issue_price`.
    pub viewer_paid: u64,
    pub viewer_tokens: u64,
    pub creator_tokens: u64,
    pub burned_tokens: u64,
    /// The price just after this month's minting, at which rewards are
    /// valued.
    pub issue_price: Price,
    /// Reserve and circulating supply at the end of the month.
    pub end_price: Price,
    /// Treasury balance at the end of the month.
    pub treasury: u64,
    /// Cents that went into the reserve this month.
    pub to_reserve: u64,
    /// Cents that went into the treasury this month.
    pub to_treasury: u64,
}

impl Month {
    /// Dollars creators received per 1,000 views.
    pub fn creator_paid_per_1k_views(&self) -> f64 {
        self.creator_paid as f64 / 100.0 / (self.views as f64 / 1_000.0)
    }

    /// Whether the viewer tokens were worth no more than `cents`, compared
    /// exactly (`tokens × reserve <= cents × supply`).
    fn viewer_tokens_worth_at_most(&self, cents: u64) -> bool {
        self.viewer_tokens as u128 * self.issue_price.reserve_cents as u128
            <= cents as u128 * self.issue_price.supply_units as u128
    }

    /// Whether the viewer tokens were worth no more than the viewer share of
    /// revenue (20%).
    pub fn viewer_rewards_within_share(&self) -> bool {
        self.viewer_tokens_worth_at_most(self.split.viewer)
    }

    /// Whether the viewer tokens were revenue-backed: worth no more than the
    /// USD paid into the reserve for them, which is at most the viewer share.
    pub fn viewer_rewards_backed(&self) -> bool {
        self.viewer_tokens_worth_at_most(self.to_reserve.min(self.split.viewer))
    }
}

/// A scenario's months.
#[derive(Clone, Debug)]
pub struct Run {
    pub scenario: Scenario,
    pub launch_price: Price,
    pub months: Vec<Month>,
}

/// What a run comes to, for the stress table.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub scenario: Scenario,
    pub creator_per_1k_first: f64,
    pub creator_per_1k_end: f64,
    pub creator_per_1k_min: f64,
    pub creator_per_1k_min_month: u32,
    /// Months in which viewer rewards were not revenue-backed.
    pub months_viewer_rewards_unbacked: u32,
    /// Months in which viewer rewards were worth more than the viewer share.
    pub months_viewer_rewards_over_share: u32,
    pub first_over_share_month: Option<u32>,
    pub last_over_share_month: Option<u32>,
    pub price_launch: f64,
    pub price_end: f64,
    pub price_min: f64,
    pub price_min_month: u32,
    pub viewer_paid_end_cents: u64,
    pub viewer_share_end_cents: u64,
    pub treasury_end_cents: u64,
}

impl Run {
    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            scenario: self.scenario,
            creator_per_1k_first: f64::NAN,
            creator_per_1k_end: f64::NAN,
            creator_per_1k_min: f64::INFINITY,
            creator_per_1k_min_month: 0,
            months_viewer_rewards_unbacked: 0,
            months_viewer_rewards_over_share: 0,
            first_over_share_month: None,
            last_over_share_month: None,
            price_launch: self.launch_price.usd(),
            price_end: self.launch_price.usd(),
            price_min: self.launch_price.usd(),
            price_min_month: 0,
            viewer_paid_end_cents: 0,
            viewer_share_end_cents: 0,
            treasury_end_cents: 0,
        };
        for m in &self.months {
            let per_1k = m.creator_paid_per_1k_views();
            if m.month == 1 {
                s.creator_per_1k_first = per_1k;
            }
            s.creator_per_1k_end = per_1k;
            // The first month of the lowest payout to the cent, so that a
            // flat line's minimum is its first month rather than rounding
            // noise.
            if (per_1k * 100.0).round() < (s.creator_per_1k_min * 100.0).round() {
                s.creator_per_1k_min = per_1k;
                s.creator_per_1k_min_month = m.month;
            }
            if !m.viewer_rewards_backed() {
                s.months_viewer_rewards_unbacked += 1;
            }
            if !m.viewer_rewards_within_share() {
                s.months_viewer_rewards_over_share += 1;
                s.first_over_share_month.get_or_insert(m.month);
                s.last_over_share_month = Some(m.month);
            }
            // The lowest price a holder could see: after minting or at the
            // end of a month.
            for p in [m.issue_price.usd(), m.end_price.usd()] {
                if p < s.price_min {
                    s.price_min = p;
                    s.price_min_month = m.month;
                }
            }
            s.price_end = m.end_price.usd();
            s.viewer_paid_end_cents = m.viewer_paid;
            s.viewer_share_end_cents = m.split.viewer;
            s.treasury_end_cents = m.treasury;
        }
        s
    }
}

/// Runs one scenario month by month.
pub fn simulate(scenario: Scenario, p: &Params) -> Result<Run, Error> {
    p.validate()?;
    let overflow = |month| Error::Overflow {
        scenario: scenario.name(),
        month,
    };
    let launch_price = p.launch_price();
    let mut price = launch_price;
    let mut treasury: u64 = 0;
    let mut views = p.start_views();
    let mut revenue_before_shock = 0;
    let mut months = Vec::with_capacity(p.months as usize);

    for month in 1..=p.months {
        let shocked = month >= p.shock_month;
        if month > 1 && !(shocked && scenario.stalls()) {
            views = mul_div(views, 10_000 + p.growth_bp, 10_000).ok_or_else(|| overflow(month))?;
        }
        let mut revenue =
            mul_div(views, p.revenue_per_1k_views_cents, 1_000).ok_or_else(|| overflow(month))?;
        if scenario == Scenario::RevenueCollapse && shocked {
            revenue = share(revenue_before_shock, p.collapse_keep_pct, 100);
        } else {
            revenue_before_shock = revenue;
        }

        let split = SPLIT.split(revenue);
        let (viewer_tokens, creator_tokens, to_reserve, to_treasury, creator_cash) =
            match scenario.issuance() {
                Issuance::RevenueBacked => {
                    let tokens = mul_div(split.viewer, price.supply_units, price.reserve_cents)
                        .ok_or_else(|| overflow(month))?;
                    (tokens, 0, split.viewer, split.treasury, split.creator)
                }
                Issuance::FixedEmission => {
                    let viewer = p
                        .emission_viewer_tkn
                        .checked_mul(TOKEN_UNIT)
                        .ok_or_else(|| overflow(month))?;
                    let creator = mul_div(
                        views,
                        p.emission_creator_tkn_per_1k
                            .checked_mul(TOKEN_UNIT)
                            .ok_or_else(|| overflow(month))?,
                        1_000,
                    )
                    .ok_or_else(|| overflow(month))?;
                    (viewer, creator, 0, revenue, 0)
                }
            };

        price.reserve_cents = price
            .reserve_cents
            .checked_add(to_reserve)
            .ok_or_else(|| overflow(month))?;
        price.supply_units = price
            .supply_units
            .checked_add(viewer_tokens)
            .and_then(|s| s.checked_add(creator_tokens))
            .ok_or_else(|| overflow(month))?;
        treasury = treasury
            .checked_add(to_treasury)
            .ok_or_else(|| overflow(month))?;
        let issue_price = price;

        let burned_tokens = share(price.supply_units, p.sink_bp, 10_000);
        price.supply_units -= burned_tokens;

        months.push(Month {
            month,
            views,
            revenue,
            split,
            creator_paid: creator_cash + issue_price.value_cents(creator_tokens),
            viewer_paid: issue_price.value_cents(viewer_tokens),
            viewer_tokens,
            creator_tokens,
            burned_tokens,
            issue_price,
            end_price: price,
            treasury,
            to_reserve,
            to_treasury,
        });
    }
    Ok(Run {
        scenario,
        launch_price,
        months,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_gives_the_remainder_to_the_viewer_pool() {
        let s = SPLIT.split(1_001);
        assert_eq!((s.creator, s.viewer, s.treasury), (700, 201, 100));
        let s = SPLIT.split(9);
        assert_eq!((s.creator, s.viewer, s.treasury), (6, 3, 0));
    }

    #[test]
    fn minting_at_the_current_price_leaves_it_unchanged() {
        let p = Params {
            sink_bp: 0,
            ..Params::default()
        };
        let run = simulate(Scenario::Baseline, &p).expect("default params run");
        for m in &run.months {
            assert!((m.end_price.usd() - 0.10).abs() < 1e-9, "month {}", m.month);
        }
    }

    #[test]
    fn the_sink_raises_the_price_by_one_over_one_minus_the_sink() {
        let run = simulate(Scenario::GrowthStall, &Params::default()).expect("run");
        let last = run.months.last().expect("24 months");
        let expected = 0.10 / 0.98f64.powi(24);
        assert!((last.end_price.usd() / expected - 1.0).abs() < 1e-6);
    }

    #[test]
    fn month_one_is_table1s_moderate_row() {
        let run = simulate(Scenario::Baseline, &Params::default()).expect("run");
        let m = &run.months[0];
        assert_eq!(m.revenue, dollars(100_000));
        assert_eq!(m.views, 20_000_000);
        assert_eq!(m.viewer_tokens, 200_000 * TOKEN_UNIT);
    }

    #[test]
    fn absurd_growth_is_an_error_not_a_panic() {
        let p = Params {
            months: MAX_MONTHS,
            growth_bp: MAX_GROWTH_BP,
            ..Params::default()
        };
        assert!(matches!(
            simulate(Scenario::Baseline, &p),
            Err(Error::Overflow { .. })
        ));
    }
}
