//! What every service's store shares to put domain values in columns and read them back: an
//! amount of cents as a `BIGINT`, and the error for a row that cannot be read.

use std::fmt::Display;

use crate::runtime::HandleError;

/// A row this code cannot read back, or a value it cannot store: retrying will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable row in {table}: {problem}")]
pub struct Corrupt {
    pub table: &'static str,
    pub problem: String,
}

/// The row of `table` is unreadable because of `problem`.
pub fn corrupt(table: &'static str, problem: impl Display) -> Corrupt {
    Corrupt {
        table,
        problem: problem.to_string(),
    }
}

impl From<Corrupt> for HandleError {
    fn from(e: Corrupt) -> Self {
        HandleError::Permanent(e.to_string())
    }
}

/// An amount of cents as the `BIGINT` of a column of `table`.
pub fn cents_to_column(table: &'static str, amount: u64) -> Result<i64, Corrupt> {
    i64::try_from(amount)
        .map_err(|_| corrupt(table, format!("amount {amount} does not fit BIGINT")))
}

/// The amount of cents in a `BIGINT` column of `table`.
pub fn cents_from_column(table: &'static str, amount: i64) -> Result<u64, Corrupt> {
    u64::try_from(amount).map_err(|_| corrupt(table, format!("negative amount {amount}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_go_to_a_column_and_back() {
        for amount in [0, 1, 1490, i64::MAX as u64] {
            let stored = cents_to_column("rides", amount).unwrap();
            assert_eq!(cents_from_column("rides", stored), Ok(amount));
        }
    }

    #[test]
    fn cents_that_do_not_fit_are_refused_with_the_table() {
        let too_large = cents_to_column("payments", i64::MAX as u64 + 1).unwrap_err();
        assert_eq!(
            too_large.to_string(),
            "unreadable row in payments: amount 9223372036854775808 does not fit BIGINT"
        );
        let negative = cents_from_column("rides", -5).unwrap_err();
        assert_eq!(negative, corrupt("rides", "negative amount -5"));
    }

    #[test]
    fn an_unreadable_row_is_a_permanent_failure() {
        let e: HandleError = corrupt("notifications", "unknown value \"fax\"").into();
        assert!(matches!(
            e,
            HandleError::Permanent(ref m) if m == "unreadable row in notifications: unknown value \"fax\""
        ));
    }
}
