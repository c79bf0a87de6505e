//! `ridectl driver earnings <ID> [--since] [--until]` and `ridectl driver statement <ID>
//! [--date]`: a driver's earnings, read from the saga stream as the payment service appended
//! them to its ledger: every `evt.payment.captured` names the split of the amount (the driver's
//! share and the platform's commission), every `evt.payment.refunded` the reversal of a refund
//! (what came off each). A share payment holds for a fake-ride review
//! (`evt.payment.earnings_hold`) is shown held until it is released, and forfeited once rejected.

use std::collections::{BTreeMap, HashMap};

use async_nats::jetstream::consumer::DeliverPolicy;
use ridesaga_schemas::{DriverId, EarningsHoldStatus, Message, MessageKind, money};
use serde::Serialize;
use time::OffsetDateTime;

use super::Ctx;
use crate::nats::scan_steps;
use crate::output::{Table, format_time};
use crate::saga::Step;

/// One ledger movement of the driver: a captured fare's split, or a refund's reversal (its
/// amounts negative).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub ride_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `capture` or `refund`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    /// The amount captured, or minus the amount refunded.
    pub captured_cents: i64,
    pub driver_cents: i64,
    pub commission_cents: i64,
    /// Where the share stands when a fake-ride review held it: `held`, `released` or
    /// `forfeited` (absent: never held; refunds carry none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<EarningsHoldStatus>,
}

/// The driver's earnings over a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statement {
    pub driver_id: String,
    /// Captured fares.
    pub rides: usize,
    pub captured_cents: u64,
    pub refunded_cents: u64,
    /// Net of the reversals.
    pub driver_cents: i64,
    pub commission_cents: i64,
    /// Of the captured shares: held for review, and forfeited by a rejection.
    pub held_cents: u64,
    pub forfeited_cents: u64,
    pub entries: Vec<Entry>,
}

fn signed(cents: u64) -> i64 {
    i64::try_from(cents).unwrap_or(i64::MAX)
}

/// The ledger movement `step` makes for `driver`, if any.
fn entry(driver: &DriverId, step: &Step) -> Option<Entry> {
    let ride_id = || {
        step.envelope
            .saga_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    match &step.envelope.message {
        Message::PaymentCaptured(captured) => {
            let earnings = captured.earnings.as_ref()?;
            (earnings.driver_id == *driver).then(|| Entry {
                ride_id: ride_id(),
                at: step.time,
                kind: "capture",
                refund_id: None,
                captured_cents: signed(captured.amount_cents),
                driver_cents: signed(earnings.driver_cents),
                commission_cents: signed(earnings.commission_cents),
                review: None,
            })
        }
        Message::PaymentRefunded(refunded) => {
            let reversal = refunded.reversal.as_ref()?;
            (reversal.driver_id == *driver).then(|| Entry {
                ride_id: ride_id(),
                at: step.time,
                kind: "refund",
                refund_id: Some(refunded.refund_id.to_string()),
                captured_cents: -signed(refunded.amount_cents),
                driver_cents: -signed(reversal.driver_cents),
                commission_cents: -signed(reversal.commission_cents),
                review: None,
            })
        }
        _ => None,
    }
}

/// The statement of `driver` from the captures and refunds among `steps` before `until`.
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
        .filter_map(|step| entry(driver, step))
        .map(|mut entry| {
            if entry.kind == "capture" {
                entry.review = reviews.get(entry.ride_id.as_str()).copied();
            }
            entry
        })
        .collect();
    let captures = entries.iter().filter(|e| e.kind == "capture");
    Statement {
        driver_id: driver.to_string(),
        rides: captures.clone().count(),
        captured_cents: captures.map(|e| e.captured_cents.unsigned_abs()).sum(),
        refunded_cents: entries
            .iter()
            .filter(|e| e.kind == "refund")
            .map(|e| e.captured_cents.unsigned_abs())
            .sum(),
        driver_cents: entries.iter().map(|e| e.driver_cents).sum(),
        commission_cents: entries.iter().map(|e| e.commission_cents).sum(),
        held_cents: share_of(&entries, EarningsHoldStatus::Held),
        forfeited_cents: share_of(&entries, EarningsHoldStatus::Forfeited),
        entries,
    }
}

/// The driver's share of the captures whose review stands at `status`.
fn share_of(entries: &[Entry], status: EarningsHoldStatus) -> u64 {
    entries
        .iter()
        .filter(|e| e.review == Some(status))
        .map(|e| e.driver_cents.unsigned_abs())
        .sum()
}

/// One ride on a daily statement: what was captured and refunded that day, and the shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RideLine {
    pub ride_id: String,
    pub fare_cents: u64,
    pub driver_cents: u64,
    pub commission_cents: u64,
    pub refunded_cents: u64,
    pub driver_reversed_cents: u64,
    pub commission_reversed_cents: u64,
    /// The driver's share minus what refunds took off it.
    pub net_driver_cents: i64,
}

/// A driver's statement of one day (UTC).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Daily {
    pub driver_id: String,
    pub date: String,
    pub rides: Vec<RideLine>,
    /// The sums of the rides' lines.
    pub total: RideLine,
    /// The commission minus what refunds took off it.
    pub net_commission_cents: i64,
}

/// The daily statement of `driver` on `date` from `steps` (the ledger movements of that day,
/// by ride in the order of their first movement).
pub fn daily(driver: &DriverId, steps: &[Step], date: time::Date) -> Daily {
    let mut order: Vec<String> = Vec::new();
    let mut lines: BTreeMap<String, RideLine> = BTreeMap::new();
    for entry in steps
        .iter()
        .filter(|step| step.time.to_offset(time::UtcOffset::UTC).date() == date)
        .filter_map(|step| entry(driver, step))
    {
        let line = lines.entry(entry.ride_id.clone()).or_insert_with(|| {
            order.push(entry.ride_id.clone());
            RideLine {
                ride_id: entry.ride_id.clone(),
                ..RideLine::default()
            }
        });
        let abs = |c: i64| c.unsigned_abs();
        match entry.kind {
            "capture" => {
                line.fare_cents += abs(entry.captured_cents);
                line.driver_cents += abs(entry.driver_cents);
                line.commission_cents += abs(entry.commission_cents);
            }
            _ => {
                line.refunded_cents += abs(entry.captured_cents);
                line.driver_reversed_cents += abs(entry.driver_cents);
                line.commission_reversed_cents += abs(entry.commission_cents);
            }
        }
        line.net_driver_cents = signed(line.driver_cents) - signed(line.driver_reversed_cents);
    }
    let rides: Vec<RideLine> = order.iter().filter_map(|ride| lines.remove(ride)).collect();
    let mut total = RideLine {
        ride_id: format!("{} rides", rides.len()),
        ..RideLine::default()
    };
    for line in &rides {
        total.fare_cents += line.fare_cents;
        total.driver_cents += line.driver_cents;
        total.commission_cents += line.commission_cents;
        total.refunded_cents += line.refunded_cents;
        total.driver_reversed_cents += line.driver_reversed_cents;
        total.commission_reversed_cents += line.commission_reversed_cents;
        total.net_driver_cents += line.net_driver_cents;
    }
    Daily {
        driver_id: driver.to_string(),
        date: date.to_string(),
        net_commission_cents: signed(total.commission_cents)
            - signed(total.commission_reversed_cents),
        rides,
        total,
    }
}

/// The captures, refunds and review holds stored since `since` (all of them without).
async fn ledger_steps(ctx: &Ctx, since: Option<OffsetDateTime>) -> anyhow::Result<Vec<Step>> {
    let nats = ctx.connect().await?;
    let stream = nats.saga_stream().await?;
    let deliver = match since {
        Some(start_time) => DeliverPolicy::ByStartTime { start_time },
        None => DeliverPolicy::All,
    };
    let filters = [
        format!("{}.*", MessageKind::PaymentCaptured.as_str()),
        format!("{}.*", MessageKind::PaymentRefunded.as_str()),
        format!("{}.*", MessageKind::EarningsHold.as_str()),
    ];
    scan_steps(&stream, &filters, deliver).await
}

pub async fn run(
    ctx: &Ctx,
    driver: DriverId,
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
) -> anyhow::Result<()> {
    let steps = ledger_steps(ctx, since).await?;
    let statement = statement(&driver, &steps, until);
    if ctx.out.is_json() {
        return ctx.out.json(&statement);
    }
    let mut table = Table::new([
        "TIME",
        "RIDE",
        "ENTRY",
        "CAPTURED",
        "DRIVER",
        "COMMISSION",
        "REVIEW",
    ]);
    for entry in &statement.entries {
        let kind = match &entry.refund_id {
            Some(refund) => format!("refund {refund}"),
            None => entry.kind.to_string(),
        };
        table.row([
            format_time(entry.at),
            entry.ride_id.clone(),
            kind,
            money::format_signed(entry.captured_cents),
            money::format_signed(entry.driver_cents),
            money::format_signed(entry.commission_cents),
            entry.review.map_or("", |r| r.as_str()).to_owned(),
        ]);
    }
    let review = match (statement.held_cents, statement.forfeited_cents) {
        (0, 0) => String::new(),
        (held, 0) => format!("{} held", money::format(held)),
        (0, lost) => format!("{} forfeited", money::format(lost)),
        (held, lost) => format!(
            "{} held, {} forfeited",
            money::format(held),
            money::format(lost)
        ),
    };
    table.row([
        "total".to_string(),
        format!("{} rides", statement.rides),
        format!("refunded {}", money::format(statement.refunded_cents)),
        money::format(statement.captured_cents),
        money::format_signed(statement.driver_cents),
        money::format_signed(statement.commission_cents),
        review,
    ]);
    ctx.out.table(&table);
    Ok(())
}

/// `ridectl driver statement`.
pub async fn run_daily(
    ctx: &Ctx,
    driver: DriverId,
    date: Option<time::Date>,
) -> anyhow::Result<()> {
    let date = date.unwrap_or_else(|| OffsetDateTime::now_utc().date());
    let start = date.midnight().assume_utc();
    let steps = ledger_steps(ctx, Some(start)).await?;
    let daily = daily(&driver, &steps, date);
    if ctx.out.is_json() {
        return ctx.out.json(&daily);
    }
    ctx.out.line(format!(
        "statement of {} for {}",
        daily.driver_id, daily.date
    ));
    let mut table = Table::new(["RIDE", "FARE", "SHARE", "COMMISSION", "REFUNDED", "NET"]);
    let row = |line: &RideLine| {
        let refunded = if line.refunded_cents > 0 {
            format!(
                "{} (share -{}, commission -{})",
                money::format(line.refunded_cents),
                money::format(line.driver_reversed_cents),
                money::format(line.commission_reversed_cents)
            )
        } else {
            money::format(0)
        };
        [
            line.ride_id.clone(),
            money::format(line.fare_cents),
            money::format(line.driver_cents),
            money::format(line.commission_cents),
            refunded,
            money::format_signed(line.net_driver_cents),
        ]
    };
    for line in &daily.rides {
        table.row(row(line));
    }
    let mut total = row(&daily.total);
    total[0] = format!("total ({})", daily.total.ride_id);
    table.row(total);
    ctx.out.table(&table);
    ctx.out.line(format!(
        "net: driver {}, commission {}",
        money::format_signed(daily.total.net_driver_cents),
        money::format_signed(daily.net_commission_cents)
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::fixtures::Log;
    use ridesaga_schemas::{Earnings, PaymentCaptured, PaymentRefunded, RefundId};

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

    fn refund(log: &mut Log, driver: &str, id: &str, amount: u64) {
        log.push(
            PaymentRefunded {
                rider_id: Log::rider(),
                refund_id: RefundId::parse(id).unwrap(),
                hold_id: "h_1".into(),
                amount_cents: amount,
                refunded_cents: amount,
                captured_cents: 1000,
                reason: None,
                reversal: Some(Earnings {
                    driver_id: Log::driver(driver),
                    driver_cents: amount * 4 / 5,
                    commission_cents: amount - amount * 4 / 5,
                }),
            },
            "payment",
        );
    }

    #[test]
    fn refunds_show_as_reversals_and_net_the_totals() {
        let mut log = Log::new("r_1");
        capture(&mut log, "d_1", 1000);
        refund(&mut log, "d_1", "rf_1", 500);
        refund(&mut log, "d_2", "rf_2", 100);
        let driver = Log::driver("d_1");
        let s = statement(&driver, &log.steps, None);
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.entries[1].kind, "refund");
        assert_eq!(
            (
                s.entries[1].captured_cents,
                s.entries[1].driver_cents,
                s.entries[1].commission_cents
            ),
            (-500, -400, -100)
        );
        assert_eq!(
            (s.rides, s.captured_cents, s.refunded_cents),
            (1, 1000, 500)
        );
        assert_eq!((s.driver_cents, s.commission_cents), (400, 100));
    }

    #[test]
    fn a_daily_statement_lines_up_each_ride_of_the_day_with_its_refunds() {
        let mut log = Log::new("r_1");
        capture(&mut log, "d_1", 1000);
        refund(&mut log, "d_1", "rf_1", 250);
        capture(&mut log, "d_2", 3000);
        let mut other = Log::new("r_2");
        other.start = log.next_at();
        capture(&mut other, "d_1", 2000);
        let mut steps = log.steps.clone();
        steps.extend(other.steps.clone());
        let driver = Log::driver("d_1");
        let day = log.start.date();
        let d = daily(&driver, &steps, day);
        assert_eq!(d.date, day.to_string());
        let rides: Vec<&str> = d.rides.iter().map(|r| r.ride_id.as_str()).collect();
        assert_eq!(rides, ["r_1", "r_2"]);
        let first = &d.rides[0];
        assert_eq!(
            (first.fare_cents, first.driver_cents, first.commission_cents),
            (1000, 800, 200)
        );
        assert_eq!(
            (
                first.refunded_cents,
                first.driver_reversed_cents,
                first.commission_reversed_cents
            ),
            (250, 200, 50)
        );
        assert_eq!(first.net_driver_cents, 600);
        assert_eq!((d.total.fare_cents, d.total.refunded_cents), (3000, 250));
        assert_eq!(d.total.net_driver_cents, 600 + 1600);
        assert_eq!(d.net_commission_cents, 150 + 400);
        let next_day = day.next_day().unwrap();
        assert!(daily(&driver, &steps, next_day).rides.is_empty());
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
