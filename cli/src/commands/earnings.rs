//! `ridectl driver earnings <ID> [--since] [--until]`: a driver's earnings, read from the
//! captures on the saga stream: every `evt.payment.captured` names the ledger's split of the
//! amount (the driver's share and the platform's commission), as the payment service appended
//! it to its ledger.

use async_nats::jetstream::consumer::DeliverPolicy;
use ridesaga_schemas::{DriverId, Message, MessageKind};
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
}

/// The driver's earnings over a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statement {
    pub driver_id: String,
    pub rides: usize,
    pub captured_cents: u64,
    pub driver_cents: u64,
    pub commission_cents: u64,
    pub entries: Vec<Entry>,
}

/// The statement of `driver` from the captures among `steps` before `until`.
pub fn statement(driver: &DriverId, steps: &[Step], until: Option<OffsetDateTime>) -> Statement {
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
        entries,
    }
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
    let filter = format!("{}.*", MessageKind::PaymentCaptured.as_str());
    let steps = scan_steps(&stream, &[filter], deliver).await?;
    let statement = statement(&driver, &steps, until);
    if ctx.out.is_json() {
        return ctx.out.json(&statement);
    }
    let mut table = Table::new(["TIME", "RIDE", "CAPTURED", "DRIVER", "COMMISSION"]);
    for entry in &statement.entries {
        table.row([
            format_time(entry.at),
            entry.ride_id.clone(),
            money(entry.captured_cents),
            money(entry.driver_cents),
            money(entry.commission_cents),
        ]);
    }
    table.row([
        "total".to_string(),
        format!("{} rides", statement.rides),
        money(statement.captured_cents),
        money(statement.driver_cents),
        money(statement.commission_cents),
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
    }
}
