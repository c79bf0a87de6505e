//! `ridectl fraud review [RIDE --approve|--reject [--note]] [--all]`: the completed rides fraud
//! flagged, read from the saga stream, with where their driver's share stands; or an
//! operator's decision on one, published as `cmd.fraud.review.<ride>` once the stream shows
//! the ride flagged and not yet decided.

use async_nats::jetstream::consumer::DeliverPolicy;
use ridesaga_schemas::{Envelope, MessageKind, ReviewDecision, ReviewRide, RideId, money};

use super::Ctx;
use crate::cli::DriverWaitArgs;
use crate::nats::scan_steps;
use crate::output::{Table, format_time};
use crate::saga::review::{Flagged, collect};

/// The subjects a review's facts are on.
fn filters(ride: Option<&RideId>) -> Vec<String> {
    let id = ride.map_or("*".to_owned(), ToString::to_string);
    [
        MessageKind::RideFlagged,
        MessageKind::RideReviewed,
        MessageKind::EarningsHold,
        MessageKind::PaymentCaptured,
    ]
    .iter()
    .map(|kind| format!("{}.{id}", kind.as_str()))
    .collect()
}

pub async fn run(
    ctx: &Ctx,
    ride: Option<RideId>,
    approve: Option<ReviewDecision>,
    note: Option<String>,
    all: bool,
    wait: DriverWaitArgs,
) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let stream = nats.saga_stream().await?;
    let steps = scan_steps(&stream, &filters(ride.as_ref()), DeliverPolicy::All).await?;
    let rides = collect(&steps);
    let Some(ride) = ride else {
        let listed: Vec<&Flagged> = rides
            .values()
            .filter(|f| f.flagged_at.is_some() && (all || f.awaiting_review()))
            .collect();
        return list(ctx, &listed);
    };
    let decision = approve.unwrap_or(ReviewDecision::Reject);
    match rides.get(ride.as_str()) {
        Some(f) if f.flagged_at.is_some() => {
            if let Some(first) = f.decision {
                anyhow::bail!(
                    "ride {ride} was reviewed already ({}); the first decision stands",
                    first.as_str()
                );
            }
        }
        _ => anyhow::bail!(
            "ride {ride} was not flagged by fraud: there is nothing to review \
             (`ridectl fraud review` lists the flagged rides)"
        ),
    }
    let message = ReviewRide { decision, note };
    let envelope = Envelope::new(message, Some(ride), "ridectl");
    super::driver::send(ctx, envelope, MessageKind::RideReviewed, &wait).await
}

fn list(ctx: &Ctx, rides: &[&Flagged]) -> anyhow::Result<()> {
    if ctx.out.is_json() {
        return ctx.out.json(&rides);
    }
    let mut table = Table::new([
        "FLAGGED", "RIDE", "DRIVER", "RIDER", "SHARE", "EARNINGS", "DECISION", "REASONS",
    ]);
    for f in rides {
        table.row([
            f.flagged_at.map(format_time).unwrap_or_default(),
            f.ride_id.clone(),
            f.driver_id.clone().unwrap_or_default(),
            f.rider_id.clone().unwrap_or_default(),
            f.driver_share_cents
                .map(money::format)
                .unwrap_or_else(|| "-".into()),
            f.status()
                .map_or("not captured yet", |s| s.as_str())
                .to_owned(),
            f.decision
                .map_or("awaiting review", |d| d.as_str())
                .to_owned(),
            f.reasons.join("; "),
        ]);
    }
    ctx.out.table(&table);
    Ok(())
}
