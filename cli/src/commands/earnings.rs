//! `ridectl driver earnings <ID> [--since] [--until]`: a driver's earnings, read from the
//! captures on the saga stream: every `evt.payment.captured` names the ledger's split of the
//! amount (the driver's share and the platform's commission), as the payment service appended
//! it to its ledger. A share payment holds for a fake-ride review (`evt.payment.earnings_hold`)
//! is shown held until it is released, and forfeited once rejected.

use async_nats::jetstream::consumer::DeliverPolicy;
use std::collections::HashMap;

use ridesaga_schemas::{DriverId, EarningsHoldStatus, Message, MessageKind};
use serde::Serialize;
use time::OffsetDateTime;

use super::Ctx;
use crate::nats::scan_steps;
use crate::output::{Table, format_time, money};
use crate::saga::Step;

/// One captured fare of the driver.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub ride_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub captured_cents: u64,
    pub driver_cents: u64,
    pub commission_cents: u64,
    /// Where the share stands when a fake-ride review held it: `held`, `released` or
    /// `forfeited` (absent: never held).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<EarningsHoldStatus>,
}

/// The driver's earnings over a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statement {
    pub driver_id: String,
    pub rides: usize,
    pub captured_cents: u64,
    pub driver_cents: u64,
    pub commission_cents: u64,
    /// Of `driver_cents`: held for review, and forfeited by a rejection.
    pub held_cents: u64,
    pub forfeited_cents: u64,
    pub entries: Vec<Entry>,
}

/// The statement of `driver` from the captures among `steps` before `until`.
pub fn statement(driver: &DriverId, steps: &[Step], until: Option<OffsetDateTime>) -> Statement {
    // The last step payment took with each ride's share, as of the statement.
    let reviews: HashMap<&str, EarningsHoldStatus> = steps
        .iter()
        .filter_map(|step| match &step.envelope.message {
            Message::EarningsHold(m) if m.driver_id == *driver => Some((step.ride()?, m.status)),
            _ => None,
        })
        .collect();
    let entries: Vec<Entry> = steps
        .iter()
        .filter(|step| until.is_none_or(|until| step.time < until))
        .filter_map(|step| match &step.envelope.message {
            Message::PaymentCaptured(captured) => {
                let earnings = captured.earnings.as_ref()?;
                (earnings.driver_id == *driver).then(|| Entry {
                    ride_id: step
                        .envelope
                        .saga_id
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    at: step.time,
                    captured_cents: captured.amount_cents,
                    driver_cents: earnings.driver_cents,
                    commission_cents: earnings.commission_cents,
                    review: step.ride().and_then(|ride| reviews.get(ride).copied()),
                })
            }
            _ => None,
        })
        .collect();
    Statement {
        driver_id: driver.to_string(),
        rides: entries.len(),
        captured_cents: entries.iter().map(|e| e.captured_cents).sum(),
        driver_cents: entries.iter().map(|e| e.driver_cents).sum(),
        commission_cents: entries.iter().map(|e| e.commission_cents).sum(),
        held_cents: share_of(&entries, EarningsHoldStatus::Held),
        forfeited_cents: share_of(&entries, EarningsHoldStatus::Forfeited),
        entries,
    }
}

/// The driver's share of the entries whose review stands at `status`.
fn share_of(entries: &[Entry], status: EarningsHoldStatus) -> u64 {
    entries
        .iter()
        .filter(|e| e.review == Some(status))
        .map(|e| e.driver_cents)
        .sum()
}

pub async fn run(
    ctx: &Ctx,
    driver: DriverId,
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let stream = nats.saga_stream().await?;
    let deliver = match since {
        Some(start_time) => DeliverPolicy::ByStartTime { start_time },
        None => DeliverPolicy::All,
    };
    let filters = [MessageKind::PaymentCaptured, MessageKind::EarningsHold]
        .map(|kind| format!("{}.*", kind.as_str()));
    let steps = scan_steps(&stream, &filters, deliver).await?;
    let statement = statement(&driver, &steps, until);
    if ctx.out.is_json() {
        return ctx.out.json(&statement);
    }
    let mut table = Table::new(["TIME", "RIDE", "CAPTURED", "DRIVER", "COMMISSION", "REVIEW"]);
    for entry in &statement.entries {
        table.row([
            format_time(entry.at),
            entry.ride_id.clone(),
            money(entry.captured_cents),
            money(entry.driver_cents),
            money(entry.commission_cents),
            entry.review.map_or("", |r| r.as_str()).to_owned(),
        ]);
    }
    let review = match (statement.held_cents, statement.forfeited_cents) {
        (0, 0) => String::new(),
        (held, 0) => format!("{} held", money(held)),
        (0, lost) => format!("{} forfeited", money(lost)),
        (held, lost) => format!("{} held, {} forfeited", money(held), money(lost)),
    };
    table.row([
        "total".to_string(),
        format!("{} rides", statement.rides),
        money(statement.captured_cents),
        money(statement.driver_cents),
        money(statement.commission_cents),
        review,
    ]);
    ctx.out.table(&table);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::fixtures::Log;
    use ridesaga_schemas::{Earnings, PaymentCaptured};

    fn capture(log: &mut Log, driver: &str, amount: u64) {
        log.push(
            PaymentCaptured {
                rider_id: Log::rider(),
                hold_id: "h_1".into(),
                amount_cents: amount,
                earnings: Some(Earnings {
                    driver_id: Log::driver(driver),
                    driver_cents: amount * 4 / 5,
                    commission_cents: amount - amount * 4 / 5,
                }),
                fare: None,
            },
            "payment",
        );
    }

    #[test]
    fn a_statement_sums_the_drivers_captures_before_until() {
        let mut log = Log::new("r_1");
        capture(&mut log, "d_1", 1000);
        capture(&mut log, "d_2", 5000);
        capture(&mut log, "d_1", 2000);
        capture(&mut log, "d_1", 3000);
        let driver = Log::driver("d_1");
        let all = statement(&driver, &log.steps, None);
        assert_eq!(all.rides, 3);
        assert_eq!(
            (all.captured_cents, all.driver_cents, all.commission_cents),
            (6000, 4800, 1200)
        );
        let until = log.steps[3].time;
        let early = statement(&driver, &log.steps, Some(until));
        assert_eq!((early.rides, early.driver_cents), (2, 2400));
        assert_eq!((all.held_cents, all.forfeited_cents), (0, 0));
    }

    #[test]
    fn a_share_held_for_review_shows_where_it_stands() {
        use ridesaga_schemas::EarningsHold;
        let driver = Log::driver("d_1");
        let hold = |log: &mut Log, status| {
            log.push(
                EarningsHold {
                    driver_id: Log::driver("d_1"),
                    amount_cents: 800,
                    status,
                },
                "payment",
            );
        };
        let mut held = Log::new("r_1");
        capture(&mut held, "d_1", 1000);
        hold(&mut held, EarningsHoldStatus::Held);
        let s = statement(&driver, &held.steps, None);
        assert_eq!(s.entries[0].review, Some(EarningsHoldStatus::Held));
        assert_eq!(
            (s.driver_cents, s.held_cents, s.forfeited_cents),
            (800, 800, 0)
        );
        hold(&mut held, EarningsHoldStatus::Forfeited);
        let s = statement(&driver, &held.steps, None);
        assert_eq!((s.held_cents, s.forfeited_cents), (0, 800));
        let mut released = Log::new("r_2");
        capture(&mut released, "d_1", 1000);
        hold(&mut released, EarningsHoldStatus::Held);
        hold(&mut released, EarningsHoldStatus::Released);
        let s = statement(&driver, &released.steps, None);
        assert_eq!((s.held_cents, s.forfeited_cents), (0, 0));
        assert_eq!(s.entries[0].review, Some(EarningsHoldStatus::Released));
    }
}
