//! Writing cents and micro-TKN for people and for CSV files, exactly.

/// Micro-TKN per TKN: token amounts are integers of this unit.
pub const TOKEN_UNIT: u64 = 1_000_000;

/// Cents as dollars: `123456` as `$1,234.56`.
pub fn usd(cents: u64) -> String {
    format!("${}.{:02}", group(cents / 100), cents % 100)
}

/// Cents as a CSV number of dollars: `123456` as `1234.56`.
pub fn csv_usd(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Micro-TKN as a CSV number of TKN: `1500001` as `1.500001`.
pub fn csv_tkn(units: u64) -> String {
    format!("{}.{:06}", units / TOKEN_UNIT, units % TOKEN_UNIT)
}

/// `1234567` as `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(2_000_000), "2,000,000");
    }

    #[test]
    fn money_and_tokens_are_written_exactly() {
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(5), "$0.05");
        assert_eq!(usd(123_456_789), "$1,234,567.89");
        assert_eq!(csv_usd(123_456_789), "1234567.89");
        assert_eq!(csv_tkn(1_500_001), "1.500001");
        assert_eq!(csv_tkn(7), "0.000007");
    }
}
