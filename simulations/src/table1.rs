//! The study's Table 1 ("Example token reward model"), recomputed from its
//! own assumptions.
//!
//! Each row states a monthly ad revenue, a viewer token pool, a token value
//! and a creator payout per 1,000 views, and the caption says the payout is
//! "a fixed 40-token grant per 1,000 views". Two checks per row:
//!
//! - the stated USD payout per 1,000 views against 40 TKN × the token value;
//! - the USD value of the viewer pool (tokens × token value) against the
//!   viewers' 20% share of the ad revenue under the study's 70/20/10 split.

use crate::model::{SPLIT, dollars};
use crate::money::{group, usd};

/// One row of Table 1, in integer cents and whole tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub scenario: &'static str,
    pub revenue_cents: u64,
    pub viewer_pool_tkn: u64,
    pub token_value_cents: u64,
    pub creator_payout_per_1k_cents: u64,
    pub creator_tkn_per_1k: u64,
}

/// Table 1 as printed in section 5 of the study.
pub const TABLE1: [Row; 3] = [
    Row {
        scenario: "Low Activity",
        revenue_cents: dollars(10_000),
        viewer_pool_tkn: 100_000,
        token_value_cents: 5,
        creator_payout_per_1k_cents: 50,
        creator_tkn_per_1k: 40,
    },
    Row {
        scenario: "Moderate Activity",
        revenue_cents: dollars(100_000),
        viewer_pool_tkn: 500_000,
        token_value_cents: 10,
        creator_payout_per_1k_cents: dollars(4),
        creator_tkn_per_1k: 40,
    },
    Row {
        scenario: "High Activity",
        revenue_cents: dollars(1_000_000),
        viewer_pool_tkn: 2_000_000,
        token_value_cents: 20,
        creator_payout_per_1k_cents: dollars(32),
        creator_tkn_per_1k: 40,
    },
];

/// What a check compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Stated USD payout per 1,000 views vs the token grant × token value.
    CreatorPayout,
    /// Viewer pool tokens × token value vs 20% of the ad revenue.
    ViewerPool,
}

impl CheckKind {
    pub fn label(self) -> &'static str {
        match self {
            CheckKind::CreatorPayout => "creator payout per 1k views vs 40 TKN x token value",
            CheckKind::ViewerPool => "viewer pool value vs 20% of ad revenue",
        }
    }
}

/// One check of one row: the figure Table 1 gives (or implies) and the same
/// figure recomputed from the row's other assumptions, both in cents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub row: Row,
    pub kind: CheckKind,
    pub stated_cents: u64,
    pub recomputed_cents: u64,
}

impl Check {
    pub fn agrees(&self) -> bool {
        self.stated_cents == self.recomputed_cents
    }

    /// "agrees", or "DISAGREES: " and by how much, in words.
    pub fn verdict(&self) -> String {
        if self.agrees() {
            return "agrees".into();
        }
        let r = &self.row;
        let ratio = self.stated_cents as f64 / self.recomputed_cents as f64;
        match self.kind {
            CheckKind::CreatorPayout => {
                // The token value that would make the stated payout right.
                let implied = self.stated_cents as f64 / 100.0 / r.creator_tkn_per_1k as f64;
                format!(
                    "DISAGREES: {} TKN x {} = {}, not {} (stated is {ratio:.2}x; {} would need ${implied:.4} per TKN)",
                    r.creator_tkn_per_1k,
                    usd(r.token_value_cents),
                    usd(self.recomputed_cents),
                    usd(self.stated_cents),
                    usd(self.stated_cents),
                )
            }
            CheckKind::ViewerPool => {
                let share_of_revenue = 100.0 * self.stated_cents as f64 / r.revenue_cents as f64;
                let backed_tkn = self.recomputed_cents / r.token_value_cents;
                format!(
                    "DISAGREES: {} TKN x {} = {} is {share_of_revenue:.0}% of revenue, not {}% ({}); \
                     the pool is {ratio:.2}x the viewer share, which buys {} TKN",
                    group(r.viewer_pool_tkn),
                    usd(r.token_value_cents),
                    usd(self.stated_cents),
                    SPLIT.viewer_pct,
                    usd(self.recomputed_cents),
                    group(backed_tkn),
                )
            }
        }
    }
}

/// Both checks of every row of [`TABLE1`], row by row.
pub fn check_table1() -> Vec<Check> {
    check_rows(&TABLE1)
}

/// Both checks of every given row.
pub fn check_rows(rows: &[Row]) -> Vec<Check> {
    let mut checks = Vec::with_capacity(rows.len() * 2);
    for row in rows {
        checks.push(Check {
            row: *row,
            kind: CheckKind::CreatorPayout,
            stated_cents: row.creator_payout_per_1k_cents,
            recomputed_cents: row.creator_tkn_per_1k * row.token_value_cents,
        });
        checks.push(Check {
            row: *row,
            kind: CheckKind::ViewerPool,
            stated_cents: row.viewer_pool_tkn * row.token_value_cents,
            recomputed_cents: SPLIT.split(row.revenue_cents).viewer,
        });
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consistent_row_passes_both_checks() {
        let row = Row {
            scenario: "consistent",
            revenue_cents: dollars(100_000),
            viewer_pool_tkn: 200_000,
            token_value_cents: 10,
            creator_payout_per_1k_cents: dollars(4),
            creator_tkn_per_1k: 40,
        };
        assert!(check_rows(&[row]).iter().all(Check::agrees));
    }
}
