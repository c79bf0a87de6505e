//! How `ride show`, `ride ... --wait` and `saga list` render a ride's saga: its table, its JSON
//! and the colour of its state.

use ridesaga_schemas::{RideState, money};

use super::Ctx;
use super::effects::{self, Effects};
use crate::output::{Paint, Table, format_time};
use crate::saga::rest::outcome_label;
use crate::saga::{Rest, Saga, SagaState};

/// The saga as JSON, with how the wait ended.
pub fn saga_json(saga: &Saga, rest: &Rest) -> serde_json::Value {
    let mut value = serde_json::to_value(saga).unwrap_or_default();
    value["outcome"] = match rest {
        Rest::State => saga.state.as_str().into(),
        Rest::Refused(_) => "refused".into(),
    };
    value["label"] = outcome_label(saga, rest).into();
    value
}

/// The ride as a two-column table, with the calls to the outside world still pending.
pub fn print_saga(ctx: &Ctx, saga: &Saga, effects: &Effects) {
    let out = &ctx.out;
    let state = out.paint(state_paint(saga.state), saga.state.as_str());
    let dash = || "-".to_string();
    let mut table = Table::new(["FIELD", "VALUE"]);
    table.row(["ride".to_string(), saga.ride_id.clone()]);
    table.row(["state".to_string(), state]);
    table.row([
        "reason".to_string(),
        saga.reason.clone().unwrap_or_else(dash),
    ]);
    table.row([
        "rider".to_string(),
        saga.rider_id.clone().unwrap_or_else(dash),
    ]);
    let driver = match (&saga.driver_id, &saga.driver_name) {
        (Some(id), Some(name)) => format!("{id} ({name})"),
        (Some(id), None) => id.clone(),
        _ => dash(),
    };
    let driver = if saga.driver_released {
        format!("{driver}, released")
    } else {
        driver
    };
    table.row(["driver".to_string(), driver]);
    let cents = |c: Option<u64>| c.map_or_else(dash, money::format);
    table.row([
        "estimated fare".to_string(),
        cents(saga.estimated_fare_cents),
    ]);
    table.row(["fare".to_string(), cents(saga.fare_cents)]);
    if let Some(fare) = &saga.fare {
        let mut parts = format!(
            "base {} + distance {} + time {}",
            money::format(fare.base_cents),
            money::format(fare.distance_cents),
            money::format(fare.time_cents)
        );
        if fare.surge_cents > 0 {
            parts.push_str(&format!(" + surge {}", money::format(fare.surge_cents)));
        }
        table.row(["fare breakdown".to_string(), parts]);
    }
    if let Some(driver) = &saga.earning_driver {
        table.row([
            "earnings".to_string(),
            format!(
                "{driver} {} + commission {}",
                money::format(saga.driver_earned_cents),
                money::format(saga.commission_cents)
            ),
        ]);
    }
    for refund in &saga.refunds {
        let amount = refund
            .amount_cents
            .map_or_else(|| "the rest".to_string(), money::format);
        let value = match (refund.outcome.as_str(), &refund.reason) {
            ("refunded", _) => format!("{} {amount} refunded", refund.refund_id),
            (code, Some(reason)) => {
                format!("{} {amount} refused ({code}): {reason}", refund.refund_id)
            }
            (code, None) => format!("{} {amount} refused ({code})", refund.refund_id),
        };
        table.row(["refund".to_string(), value]);
    }
    if let (Some(km), Some(source)) = (saga.distance_km, &saga.distance_source) {
        let points = saga.route_points.unwrap_or(0);
        table.row([
            "distance".to_string(),
            format!("{km:.2} km ({source}, {points} positions)"),
        ]);
    }
    table.row(["held".to_string(), money::format(saga.held_cents)]);
    table.row(["captured".to_string(), money::format(saga.captured_cents)]);
    table.row(["voided".to_string(), money::format(saga.voided_cents)]);
    if saga.refunded_cents > 0 {
        table.row(["refunded".to_string(), money::format(saga.refunded_cents)]);
    }
    if let Some(error) = &saga.capture_failed {
        table.row(["capture failed".to_string(), out.paint(Paint::Red, error)]);
    }
    for refusal in &saga.refusals {
        table.row([
            "refused".to_string(),
            format!("{}: {}", refusal.command, refusal.reason),
        ]);
    }
    let time = |t: Option<time::OffsetDateTime>| t.map_or_else(dash, format_time);
    table.row(["first step".to_string(), time(saga.first_at)]);
    table.row(["last step".to_string(), time(saga.last_at)]);
    if saga.driver_arrived {
        table.row(["driver arrived".to_string(), "yes".to_string()]);
    }
    table.row(["deadline".to_string(), time(saga.deadline)]);
    table.row(["steps".to_string(), saga.steps.to_string()]);
    effects::rows(effects, &mut table);
    out.table(&table);
}

/// Green when it ended well, red when it ended otherwise, yellow while running.
pub fn state_paint(state: SagaState) -> Paint {
    match state {
        SagaState::Ride(RideState::Completed | RideState::Confirmed | RideState::Started) => {
            Paint::Green
        }
        SagaState::Ride(RideState::Cancelled | RideState::Rejected) | SagaState::Expired => {
            Paint::Red
        }
        _ => Paint::Yellow,
    }
}
