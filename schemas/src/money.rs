//! Amounts of money. Every amount in a message is a whole number of cents (`u64`, at most
//! [`MAX_AMOUNT_CENTS`](crate::limits::MAX_AMOUNT_CENTS)); a ledger movement may be negative
//! (`i64`). These functions write them for people, as the currency's units with two decimals.

/// Cents as a decimal amount: `1234` is `12.34`, `5` is `0.05`.
pub fn format(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Cents that may be negative: `-1234` is `-12.34`.
pub fn format_signed(cents: i64) -> String {
    let text = format(cents.unsigned_abs());
    if cents < 0 { format!("-{text}") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_print_with_two_digits() {
        assert_eq!(format(0), "0.00");
        assert_eq!(format(5), "0.05");
        assert_eq!(format(1234), "12.34");
        assert_eq!(format(120_000), "1200.00");
        assert_eq!(format(u64::MAX), "184467440737095516.15");
    }

    #[test]
    fn negative_cents_keep_their_sign() {
        assert_eq!(format_signed(-1234), "-12.34");
        assert_eq!(format_signed(-5), "-0.05");
        assert_eq!(format_signed(0), "0.00");
        assert_eq!(format_signed(700), "7.00");
        assert_eq!(format_signed(i64::MIN), "-92233720368547758.08");
    }
}
