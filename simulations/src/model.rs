//! The monthly tokenomics model, as the `RewardPool` contract pays.
//!
//! Nothing is minted: the contract pays out what funders deposit, in the
//! pool's token, and the token's price is a path the market sets, given
//! per scenario. Each month, deterministically (no randomness):
//!
//! 1. audience (views) and ad revenue `R`, from the scenario;
//! 2. funders buy `R` worth of pool tokens at the month's price and fund
//!    the content pools;
//! 3. the contract splits the tokens: the creator `floor(70%)`, the
//!    treasury `floor(10%)`, the relayer pool the rest (20% plus rounding);
//! 4. creators and relayers claim after the epoch's claim window and sell
//!    at the price [`Params::claim_lag_months`] later: that is what they
//!    earn in USD. A falling token costs them what it fell in between;
//! 5. the relayer pool is shared by counted receipt bytes: honest relayers
//!    get `1 - sybil share` of it, and pay the gas of their claims;
//! 6. the creator floor (an option): where a creator's 70% is worth less
//!    than the floor per 1,000 views, the treasury sells tokens at the
//!    month's price to make up the difference, as long as it has them.
//!    The run reports the month the treasury could no longer pay.
//!
//! Beside the monthly runs, [`sybil_sweep`] prices the one attack the
//! contract's rules leave (locked sybil viewers signing up to the cap for
//! a colluding relayer) and [`gas_table`] the claim cost against an honest
//! relayer's income per receipt. Money is integer cents, tokens integer
//! micro-TKN, the price integer micro-USD per TKN; only ratios shown to
//! people are floating point.

use crate::Error;

pub use crate::money::TOKEN_UNIT;

/// Cents in `d` dollars.
pub const fn dollars(d: u64) -> u64 {
    d * 100
}

/// How a funding is split; the relayer pool gets the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitRule {
    pub creator_pct: u64,
    pub viewer_pct: u64,
}

/// The study's split (section 5): 70% creators, 20% viewers (the relayers
/// who serve them), 10% platform treasury.
pub const SPLIT: SplitRule = SplitRule {
    creator_pct: 70,
    viewer_pct: 20,
};

/// One funding, split (in whatever unit it was given: cents or micro-TKN).
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
    /// relayer pool gets what is left, so the three always add up to
    /// `amount` (the contract's rule).
    pub fn split(&self, amount: u64) -> Split {
        let creator = share(amount, self.creator_pct, 100);
        let treasury = share(amount, self.treasury_pct(), 100);
        Split {
            creator,
            viewer: amount - creator - treasury,
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

/// Micro-USD in a cent.
const MICRO_USD_PER_CENT: u64 = 10_000;

/// The pool token's market price, in micro-USD per TKN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Price {
    pub micro_usd: u64,
}

impl Price {
    /// Dollars per TKN.
    pub fn usd(&self) -> f64 {
        self.micro_usd as f64 / 1e6
    }

    /// Cents `units` micro-TKN fetch, rounded down.
    pub fn value_cents(&self, units: u64) -> u64 {
        mul_div(units, self.micro_usd, TOKEN_UNIT * MICRO_USD_PER_CENT).unwrap_or(u64::MAX)
    }

    /// Micro-TKN `cents` buy, rounded down (none at a price of zero).
    pub fn tokens_for(&self, cents: u64) -> u64 {
        mul_div(cents, TOKEN_UNIT * MICRO_USD_PER_CENT, self.micro_usd).unwrap_or(0)
    }

    /// Micro-TKN to sell for at least `cents`, rounded up.
    fn tokens_to_raise(&self, cents: u64) -> u64 {
        let need = cents as u128 * (TOKEN_UNIT * MICRO_USD_PER_CENT) as u128;
        let p = self.micro_usd.max(1) as u128;
        u64::try_from(need.div_ceil(p)).unwrap_or(u64::MAX)
    }
}

/// A named stress scenario, starting from Table 1's moderate row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Baseline,
    RevenueCollapse,
    GrowthStall,
    TokenCrash,
    ZeroRevenue,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Baseline,
        Scenario::RevenueCollapse,
        Scenario::GrowthStall,
        Scenario::TokenCrash,
        Scenario::ZeroRevenue,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::RevenueCollapse => "revenue-collapse",
            Scenario::GrowthStall => "growth-stall",
            Scenario::TokenCrash => "token-crash",
            Scenario::ZeroRevenue => "zero-revenue",
        }
    }

    pub fn describe(self, p: &Params) -> String {
        let g = p.growth_bp as f64 / 100.0;
        match self {
            Scenario::Baseline => {
                format!("views and revenue grow {g}% a month; the token holds its price")
            }
            Scenario::RevenueCollapse => format!(
                "from month {} revenue is {}% of month {}'s and stays; views stop growing",
                p.shock_month,
                p.collapse_keep_pct,
                p.shock_month.saturating_sub(1)
            ),
            Scenario::GrowthStall => format!("growth stops at month {}", p.shock_month),
            Scenario::TokenCrash => format!(
                "baseline views and revenue; from month {} the token loses {}% a month, down to {}% of its launch price",
                p.shock_month,
                p.crash_bp as f64 / 100.0,
                p.crash_bottom_pct
            ),
            Scenario::ZeroRevenue => {
                "baseline views, no ad revenue at all: nothing is funded".into()
            }
        }
    }

    /// Whether views stop growing from the shock month on.
    fn stalls(self) -> bool {
        matches!(self, Scenario::RevenueCollapse | Scenario::GrowthStall)
    }

    /// The token's price in `month` (1-based; months past the run follow
    /// the same path, for claims that land after it).
    pub fn price(self, p: &Params, month: u32) -> Price {
        let launch = p.launch_price_micro_usd;
        if self != Scenario::TokenCrash || month < p.shock_month {
            return Price { micro_usd: launch };
        }
        let bottom = share(launch, p.crash_bottom_pct.min(100), 100);
        let mut price = launch;
        for _ in p.shock_month..=month {
            price = share(price, 10_000 - p.crash_bp.min(10_000), 10_000);
            if price <= bottom {
                return Price { micro_usd: bottom };
            }
        }
        Price { micro_usd: price }
    }
}

/// The model's assumptions. [`Params::default`] starts from Table 1's
/// moderate row; the gas figures are `cargo bench -p shoal-tests --bench
/// claims` (`docs/BENCHMARKS.md`).
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
    /// The pool token's price at launch, in micro-USD (Table 1's moderate
    /// $0.10).
    pub launch_price_micro_usd: u64,
    /// The month the shock of `revenue-collapse`, `growth-stall` and
    /// `token-crash` starts.
    pub shock_month: u32,
    /// Percent of the pre-shock revenue left after the collapse.
    pub collapse_keep_pct: u64,
    /// `token-crash`: what the token loses each month from the shock, in
    /// basis points.
    pub crash_bp: u64,
    /// `token-crash`: where the fall stops, in percent of the launch price.
    pub crash_bottom_pct: u64,
    /// Months between funding and the sale of what was claimed: the epoch,
    /// its claim window, the claim.
    pub claim_lag_months: u32,
    /// The treasury's tokens at launch.
    pub treasury_launch_tkn: u64,
    /// The creator floor, in cents per 1,000 views (0: none).
    pub creator_floor_cents_per_1k: u64,
    /// Share of counted receipt bytes that sybil viewers signed, in
    /// percent: honest relayers share the rest of the relayer pool.
    pub sybil_share_pct: u64,
    /// Receipts an honest relayer claims per view (one viewer, one
    /// content, one epoch).
    pub receipts_per_view: u64,
    /// Gas per receipt held, claim and draw amortised (sampled claims, one
    /// viewer in 64, 1,000 receipts a claim: about 1,250).
    pub gas_per_receipt: u64,
    /// Gas price in milli-gwei (100: 0.1 gwei).
    pub gas_price_mgwei: u64,
    /// Ether's price in cents.
    pub eth_cents: u64,
    /// Bytes an honest view takes: 20 minutes at 3 Mb/s.
    pub view_bytes: u64,
    /// What one locked viewer key may count a month: the contract's cap
    /// per hour epoch (`MAX_VIEWER_BYTES_PER_EPOCH`) for 720 epochs.
    pub cap_bytes_per_key_month: u64,
    /// The locked deposit a viewer key needs, in cents.
    pub deposit_cents: u64,
    /// What locking a deposit costs a month (interest forgone), in basis
    /// points of the deposit.
    pub carry_bp: u64,
}

/// The longest run: twenty years is already far past what a model with
/// constant growth can say anything about.
pub const MAX_MONTHS: u32 = 240;
/// Most monthly growth accepted (50% a month).
pub const MAX_GROWTH_BP: u64 = 5_000;

/// Gas per receipt measured by `cargo bench -p shoal-tests --bench claims`
/// (`docs/BENCHMARKS.md`): every receipt claimed; one viewer in 64 picked,
/// 1,000 receipts held, expected; and 100 receipts held, measured; each
/// with the epoch's draw.
pub const GAS_MEASURED: [(&str, u64); 3] = [
    ("every receipt claimed", 69_499),
    ("one viewer in 64, 1,000 receipts a claim", 1_250),
    ("one viewer in 64, 100 receipts a claim", 3_057),
];

impl Default for Params {
    fn default() -> Self {
        Params {
            months: 24,
            start_revenue_cents: dollars(100_000),
            revenue_per_1k_views_cents: 500,
            growth_bp: 500,
            launch_price_micro_usd: 100_000,
            shock_month: 6,
            collapse_keep_pct: 10,
            crash_bp: 2_000,
            crash_bottom_pct: 5,
            claim_lag_months: 1,
            treasury_launch_tkn: 5_000_000,
            creator_floor_cents_per_1k: 200,
            sybil_share_pct: 0,
            receipts_per_view: 1,
            gas_per_receipt: GAS_MEASURED[1].1,
            gas_price_mgwei: 100,
            eth_cents: dollars(3_000),
            view_bytes: 20 * 60 * 3_000_000 / 8,
            cap_bytes_per_key_month: shoal_protocol::receipt::MAX_VIEWER_BYTES_PER_EPOCH * 720,
            deposit_cents: dollars(10),
            carry_bp: 100,
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
        if self.revenue_per_1k_views_cents == 0 {
            return bad("revenue per 1,000 views must be above zero".into());
        }
        if self.start_views() == 0 {
            return bad("the starting revenue buys no views at all".into());
        }
        if self.launch_price_micro_usd == 0 {
            return bad("the launch price must be above zero".into());
        }
        if self.treasury_launch_tkn.checked_mul(TOKEN_UNIT).is_none() {
            return bad("the launch treasury is too large".into());
        }
        if self.shock_month < 2 {
            return bad("the shock month must be 2 or later".into());
        }
        if self.collapse_keep_pct > 100 || self.crash_bottom_pct > 100 {
            return bad("percentages of a price or revenue must be at most 100".into());
        }
        if self.crash_bp > 10_000 {
            return bad("the token cannot lose more than 100% a month".into());
        }
        if self.sybil_share_pct > 100 {
            return bad("the sybil share is at most 100%".into());
        }
        if self.cap_bytes_per_key_month == 0 || self.view_bytes == 0 {
            return bad("the cap per key and the bytes per view must be above zero".into());
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

    /// Cents of gas `receipts` claims cost.
    pub fn gas_cents(&self, receipts: u64, gas_per_receipt: u64) -> u64 {
        // gas × milli-gwei is 1e-12 ETH; × cents per ETH.
        let wei_scale = 1_000_000_000_000u128;
        let cents = receipts as u128
            * gas_per_receipt as u128
            * self.gas_price_mgwei as u128
            * self.eth_cents as u128
            / wei_scale;
        u64::try_from(cents).unwrap_or(u64::MAX)
    }
}

/// One month of a run. Money in cents, tokens in micro-TKN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Month {
    /// 1-based.
    pub month: u32,
    pub views: u64,
    pub revenue: u64,
    /// The price funders bought at.
    pub price: Price,
    /// The price claims were sold at ([`Params::claim_lag_months`] later).
    pub sale_price: Price,
    /// Tokens funded, and the contract's split of them.
    pub funded: u64,
    pub split: Split,
    /// What the creators' 70% fetched.
    pub creator_share_paid: u64,
    /// What the treasury paid creators to hold the floor.
    pub floor_paid: u64,
    /// What the floor asked and the treasury could not pay.
    pub floor_short: u64,
    /// What honest relayers' part of the pool fetched, and the gas of
    /// their claims.
    pub relayer_paid: u64,
    pub relayer_gas: u64,
    /// Honest relayers' tokens left unclaimed because the gas would have
    /// cost more (they go to the treasury).
    pub relayer_unclaimed: u64,
    /// What the sybil part of the pool fetched.
    pub sybil_paid: u64,
    /// The treasury's tokens at the end of the month, and their worth then.
    pub treasury_tokens: u64,
    pub treasury_value: u64,
}

impl Month {
    /// Dollars creators received per 1,000 views: their share, and the
    /// floor's top-up.
    pub fn creator_paid_per_1k_views(&self) -> f64 {
        per_1k(self.creator_share_paid + self.floor_paid, self.views)
    }

    /// Dollars honest relayers kept per 1,000 views, after gas.
    pub fn relayer_net_per_1k_views(&self) -> f64 {
        per_1k(self.relayer_paid, self.views) - per_1k(self.relayer_gas, self.views)
    }
}

fn per_1k(cents: u64, views: u64) -> f64 {
    if views == 0 {
        return 0.0;
    }
    cents as f64 / 100.0 / (views as f64 / 1_000.0)
}

/// A scenario's months.
#[derive(Clone, Debug)]
pub struct Run {
    pub scenario: Scenario,
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
    pub relayer_net_per_1k_end: f64,
    pub price_end: f64,
    /// Months in which the treasury topped creators up.
    pub floor_months: u32,
    /// The first month the treasury could not pay the whole floor.
    pub floor_broke_month: Option<u32>,
    pub floor_paid_total: u64,
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
            relayer_net_per_1k_end: f64::NAN,
            price_end: f64::NAN,
            floor_months: 0,
            floor_broke_month: None,
            floor_paid_total: 0,
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
            if m.floor_paid > 0 {
                s.floor_months += 1;
            }
            if m.floor_short > 0 && s.floor_broke_month.is_none() {
                s.floor_broke_month = Some(m.month);
            }
            s.floor_paid_total = s.floor_paid_total.saturating_add(m.floor_paid);
            s.relayer_net_per_1k_end = m.relayer_net_per_1k_views();
            s.price_end = m.sale_price.usd();
            s.treasury_end_cents = m.treasury_value;
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
    let mut treasury = p.treasury_launch_tkn * TOKEN_UNIT;
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
        match scenario {
            Scenario::ZeroRevenue => revenue = 0,
            Scenario::RevenueCollapse if shocked => {
                revenue = share(revenue_before_shock, p.collapse_keep_pct, 100)
            }
            _ => revenue_before_shock = revenue,
        }

        let price = scenario.price(p, month);
        let sale_price = scenario.price(p, month.saturating_add(p.claim_lag_months));
        let funded = price.tokens_for(revenue);
        let split = SPLIT.split(funded);
        treasury = treasury
            .checked_add(split.treasury)
            .ok_or_else(|| overflow(month))?;
        let creator_share_paid = sale_price.value_cents(split.creator);

        // The floor: the treasury sells at this month's price what it
        // takes to lift the creators' share to it, while it can.
        let floor =
            mul_div(views, p.creator_floor_cents_per_1k, 1_000).ok_or_else(|| overflow(month))?;
        let wanted = floor.saturating_sub(creator_share_paid);
        let sell = price.tokens_to_raise(wanted).min(treasury);
        treasury -= sell;
        let floor_paid = price.value_cents(sell).min(wanted);
        let floor_short = wanted - floor_paid;

        let honest = share(split.viewer, 100 - p.sybil_share_pct.min(100), 100);
        let sybil_paid = sale_price.value_cents(split.viewer - honest);
        // Honest relayers claim only when it pays for its gas; a pool
        // nobody claims rolls on and, after its rolls, goes to the
        // treasury.
        let (relayer_paid, relayer_gas, relayer_unclaimed) = claim(
            sale_price.value_cents(honest),
            p.gas_cents(views.saturating_mul(p.receipts_per_view), p.gas_per_receipt),
            honest,
        );
        treasury = treasury
            .checked_add(relayer_unclaimed)
            .ok_or_else(|| overflow(month))?;

        months.push(Month {
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
            treasury_tokens: treasury,
            treasury_value: price.value_cents(treasury),
        });
    }
    Ok(Run { scenario, months })
}

/// An honest relayer's claim: `(paid, gas, tokens left unclaimed)`. It
/// claims only when what the claim fetches is worth more than its gas.
fn claim(worth: u64, gas: u64, tokens: u64) -> (u64, u64, u64) {
    if worth > gas {
        (worth, gas, 0)
    } else {
        (0, 0, tokens)
    }
}

/// One share of the sybil sweep: month 1 of the baseline, with `share_pct`
/// of the counted receipt bytes signed by sybil viewer keys.
#[derive(Clone, Debug, PartialEq)]
pub struct SybilRow {
    pub share_pct: u64,
    /// What honest relayers keep (their part of the pool, less gas).
    pub honest_net: u64,
    /// Honest relayers' net per GB they served.
    pub honest_per_gb: f64,
    /// The attacker's part of the pool.
    pub sybil_income: u64,
    /// Locked viewer keys that many bytes need at the cap (none at 100%:
    /// no number of keys outcounts every honest receipt).
    pub keys: Option<u64>,
    /// What the keys' deposits cost to keep locked for the month, and the
    /// gas of their receipts.
    pub sybil_cost: Option<u64>,
    /// Income less cost.
    pub sybil_net: Option<i128>,
}

/// Honest relayer income and the attacker's profit as the sybil share of
/// counted receipt bytes goes from 0 to 100%, at month 1 of the baseline.
/// The contract bounds each locked viewer key to its cap; what it cannot
/// tell is whether the viewer behind a key is a person.
pub fn sybil_sweep(p: &Params) -> Result<Vec<SybilRow>, Error> {
    let run = simulate(
        Scenario::Baseline,
        &Params {
            months: 1,
            sybil_share_pct: 0,
            ..p.clone()
        },
    )?;
    let m = &run.months[0];
    let pool = m.split.viewer;
    let honest_bytes = m.views.saturating_mul(p.view_bytes);
    let honest_gas = p.gas_cents(
        m.views.saturating_mul(p.receipts_per_view),
        p.gas_per_receipt,
    );
    let mut rows = Vec::new();
    for share_pct in (0..=100).step_by(10) {
        let honest = share(pool, 100 - share_pct, 100);
        let (paid, gas, _) = claim(m.sale_price.value_cents(honest), honest_gas, honest);
        let honest_net = paid - gas;
        let sybil_income = m.sale_price.value_cents(pool - honest);
        let (keys, sybil_cost, sybil_net) = if share_pct < 100 {
            // Sybil bytes s / (1 - s) of the honest ones.
            let sybil_bytes = honest_bytes as u128 * share_pct as u128 / (100 - share_pct) as u128;
            let keys = u64::try_from(sybil_bytes.div_ceil(p.cap_bytes_per_key_month as u128))
                .unwrap_or(u64::MAX);
            let carry = mul_div(keys, p.deposit_cents * p.carry_bp, 10_000).unwrap_or(u64::MAX);
            // One receipt per key and epoch, each claimed like an honest one.
            let gas = p.gas_cents(keys.saturating_mul(720), p.gas_per_receipt);
            let cost = carry.saturating_add(gas);
            (
                Some(keys),
                Some(cost),
                Some(sybil_income as i128 - cost as i128),
            )
        } else {
            (None, None, None)
        };
        rows.push(SybilRow {
            share_pct,
            honest_net,
            honest_per_gb: if share_pct < 100 && honest_bytes > 0 {
                honest_net as f64 / 100.0 / (honest_bytes as f64 / 1e9)
            } else {
                0.0
            },
            sybil_income,
            keys,
            sybil_cost,
            sybil_net,
        });
    }
    Ok(rows)
}

/// The deposit (cents) at which one sybil key's month of counted bytes at
/// the cap earns no more than it costs to keep locked, at month 1 of the
/// baseline: what it would take for the deposit alone to stop the attack.
pub fn deposit_to_deter(p: &Params) -> Result<u64, Error> {
    let run = simulate(
        Scenario::Baseline,
        &Params {
            months: 1,
            ..p.clone()
        },
    )?;
    let m = &run.months[0];
    let honest_bytes = m.views.saturating_mul(p.view_bytes).max(1);
    // A key at the cap, a small part of the counted bytes, earns the pool's
    // worth per byte times its cap.
    let pool_cents = m.sale_price.value_cents(m.split.viewer);
    let per_key = mul_div(pool_cents, p.cap_bytes_per_key_month, honest_bytes).unwrap_or(u64::MAX);
    Ok(mul_div(per_key, 10_000, p.carry_bp.max(1)).unwrap_or(u64::MAX))
}

/// A claim strategy's gas against an honest relayer's income per receipt.
#[derive(Clone, Debug, PartialEq)]
pub struct GasRow {
    pub strategy: &'static str,
    pub gas_per_receipt: u64,
    /// An honest relayer's income per receipt (one view's part of the
    /// relayer pool), in micro-USD.
    pub income_micro_usd: u64,
    /// The gas at the params' gas price, in micro-USD.
    pub cost_micro_usd: u64,
    /// The gas price at which the claim costs all it earns, in gwei.
    pub break_even_gwei: f64,
}

/// [`GAS_MEASURED`] against the income of one receipt at month 1's price.
pub fn gas_table(p: &Params) -> Vec<GasRow> {
    // One view's part of the 20%, in micro-USD: CPM / 1,000 × 20%.
    let income = p.revenue_per_1k_views_cents * MICRO_USD_PER_CENT / 1_000 * SPLIT.viewer_pct
        / 100
        / p.receipts_per_view.max(1);
    GAS_MEASURED
        .iter()
        .map(|(strategy, gas)| {
            // gas × milli-gwei × cents/ETH / 1e12 cents, × 1e4 micro-USD.
            let cost = *gas as u128 * p.gas_price_mgwei as u128 * p.eth_cents as u128 / 100_000_000;
            let eth_usd = p.eth_cents as f64 / 100.0;
            GasRow {
                strategy,
                gas_per_receipt: *gas,
                income_micro_usd: income,
                cost_micro_usd: u64::try_from(cost).unwrap_or(u64::MAX),
                break_even_gwei: income as f64 / 1e6 / (*gas as f64 * 1e-9 * eth_usd),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_gives_the_remainder_to_the_relayer_pool() {
        let s = SPLIT.split(1_001);
        assert_eq!((s.creator, s.viewer, s.treasury), (700, 201, 100));
        let s = SPLIT.split(9);
        assert_eq!((s.creator, s.viewer, s.treasury), (6, 3, 0));
    }

    #[test]
    fn prices_convert_both_ways_exactly() {
        let p = Price { micro_usd: 100_000 };
        assert_eq!(p.tokens_for(dollars(1)), 10 * TOKEN_UNIT);
        assert_eq!(p.value_cents(10 * TOKEN_UNIT), dollars(1));
        assert_eq!(p.tokens_to_raise(1), TOKEN_UNIT / 10);
        assert_eq!(Price { micro_usd: 0 }.tokens_for(dollars(1)), 0);
    }

    #[test]
    fn month_one_is_table1s_moderate_row() {
        let run = simulate(Scenario::Baseline, &Params::default()).expect("run");
        let m = &run.months[0];
        assert_eq!(m.revenue, dollars(100_000));
        assert_eq!(m.views, 20_000_000);
        assert_eq!(m.funded, 1_000_000 * TOKEN_UNIT);
        assert_eq!(m.split.viewer, 200_000 * TOKEN_UNIT);
    }

    #[test]
    fn the_crash_falls_to_its_bottom_and_stays() {
        let p = Params::default();
        let s = Scenario::TokenCrash;
        assert_eq!(s.price(&p, 5).micro_usd, 100_000);
        assert_eq!(s.price(&p, 6).micro_usd, 80_000);
        assert_eq!(s.price(&p, 7).micro_usd, 64_000);
        assert_eq!(s.price(&p, 200).micro_usd, 5_000);
    }

    #[test]
    fn gas_costs_what_gas_times_price_says() {
        let p = Params::default();
        // 1,000 receipts × 1,000 gas × 0.1 gwei × $3,000 = $0.30.
        assert_eq!(p.gas_cents(1_000, 1_000), 30);
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
