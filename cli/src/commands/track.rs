//! `ridectl ride track <RIDE>`: follows a ride live. The ride's state, driver, pickup and
//! drop-off come from the saga stream; the driver's last position is the last message on
//! `pos.driver.<id>` in the positions stream, and the distance travelled is summed over the
//! driver's positions since the ride started.

use anyhow::Context;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream as JsStream};
use ridesaga_schemas::streams::POSITION_STREAM;
use ridesaga_schemas::{DriverId, GeoPoint, Position, RideState, money};
use serde::Serialize;
use time::OffsetDateTime;

use super::Ctx;
use super::ride::load_saga;
use crate::cli::TrackArgs;
use crate::exit::TimedOut;
use crate::nats::scan;
use crate::saga::{Saga, SagaState};

/// Where a ride stands, as `ride track` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub ride_id: String,
    pub state: SagaState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_id: Option<String>,
    /// The driver's last reported position and when it was taken (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<GeoPoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position_at_ms: Option<i64>,
    /// Before the start: how far the driver is from the pickup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_pickup_km: Option<f64>,
    /// Since the start: the distance along the reported positions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub travelled_km: Option<f64>,
    /// Since the start: how far the driver is from the drop-off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_dropoff_km: Option<f64>,
    /// Minutes to the pickup (before the start) or to the drop-off (after), at the average
    /// speed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_min: Option<f64>,
    /// The completed ride's distance and its source (`route` or `reported`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fare_cents: Option<u64>,
}

/// The ride's progress from its saga, the driver's last position and the positions reported
/// since the start (in order), at `speed_kmh`.
pub fn progress(
    saga: &Saga,
    last: Option<Position>,
    since_start: &[GeoPoint],
    speed_kmh: f64,
) -> Progress {
    let position = last.and_then(|p| p.point().ok());
    let eta = |km: f64| (km / speed_kmh * 60.0 * 10.0).round() / 10.0;
    let mut progress = Progress {
        ride_id: saga.ride_id.clone(),
        state: saga.state,
        driver_id: saga.driver_id.clone(),
        position,
        position_at_ms: last.map(|p| p.at_ms),
        to_pickup_km: None,
        travelled_km: None,
        to_dropoff_km: None,
        eta_min: None,
        distance_km: saga.distance_km,
        distance_source: saga.distance_source.clone(),
        fare_cents: saga.fare_cents,
    };
    match saga.state {
        SagaState::Ride(RideState::Confirmed) => {
            if let (Some(at), Some(pickup)) = (position, saga.pickup) {
                let km = at.distance_km(&pickup);
                progress.to_pickup_km = Some(km);
                progress.eta_min = Some(eta(km));
            }
        }
        SagaState::Ride(RideState::Started) => {
            progress.travelled_km = Some(path_km(since_start));
            if let (Some(at), Some(dropoff)) = (position, saga.dropoff) {
                let km = at.distance_km(&dropoff);
                progress.to_dropoff_km = Some(km);
                progress.eta_min = Some(eta(km));
            }
        }
        _ => {}
    }
    progress
}

/// The distance along `points`, in order.
pub fn path_km(points: &[GeoPoint]) -> f64 {
    points.windows(2).map(|w| w[0].distance_km(&w[1])).sum()
}

impl Progress {
    /// One line for a terminal.
    pub fn line(&self) -> String {
        let mut parts = vec![format!("{} {}", self.ride_id, self.state.as_str())];
        if let Some(driver) = &self.driver_id {
            parts.push(format!("driver {driver}"));
        }
        match self.position {
            Some(at) => parts.push(format!("at {at}")),
            None if matches!(
                self.state,
                SagaState::Ride(RideState::Confirmed | RideState::Started)
            ) =>
            {
                parts.push("no position reported".into())
            }
            None => {}
        }
        if let Some(km) = self.to_pickup_km {
            parts.push(format!("{km:.2} km to pickup"));
        }
        if let Some(km) = self.travelled_km {
            parts.push(format!("travelled {km:.2} km"));
        }
        if let Some(km) = self.to_dropoff_km {
            parts.push(format!("{km:.2} km to drop-off"));
        }
        if let Some(eta) = self.eta_min {
            parts.push(format!("eta {eta:.1} min"));
        }
        if let (Some(km), Some(source)) = (self.distance_km, &self.distance_source) {
            parts.push(format!("distance {km:.2} km ({source})"));
        }
        if let Some(fare) = self.fare_cents {
            parts.push(format!("fare {}", money::format(fare)));
        }
        parts.join(", ")
    }
}

pub async fn run(ctx: &Ctx, args: TrackArgs) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let positions = nats.stream(POSITION_STREAM).await?;
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut shown: Option<Progress> = None;
    loop {
        let (saga, _) = load_saga(&nats, &args.ride).await?;
        let progress = look(&positions, &saga, args.speed_kmh).await?;
        if shown.as_ref() != Some(&progress) {
            if ctx.out.is_json() {
                ctx.out.json(&progress)?;
            } else {
                ctx.out.line(progress.line());
            }
        }
        let ended = saga.state.is_terminal();
        shown = Some(progress);
        if args.once || ended {
            return Ok(());
        }
        if tokio::time::Instant::now() + args.every > deadline {
            anyhow::bail!(TimedOut {
                waiting_for: format!("ride {} to end", args.ride),
                after: args.timeout,
                last_seen: format!("state {}", saga.state.as_str()),
            });
        }
        tokio::time::sleep(args.every).await;
    }
}

/// The ride's progress now.
async fn look(positions: &JsStream, saga: &Saga, speed_kmh: f64) -> anyhow::Result<Progress> {
    let driver = saga
        .driver_id
        .as_deref()
        .map(DriverId::parse)
        .transpose()
        .context("the saga names an invalid driver id")?;
    let Some(driver) = driver else {
        return Ok(progress(saga, None, &[], speed_kmh));
    };
    let subject = Position::subject(&driver);
    let last = last_position(positions, &subject).await?;
    let since_start = match (saga.state, saga.started_at) {
        (SagaState::Ride(RideState::Started), Some(started)) => {
            positions_since(positions, &subject, started).await?
        }
        _ => Vec::new(),
    };
    Ok(progress(saga, last, &since_start, speed_kmh))
}

async fn last_position(stream: &JsStream, subject: &str) -> anyhow::Result<Option<Position>> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => {
            let (_, position) = Position::decode(subject, &message.payload)
                .with_context(|| format!("the last message on {subject}"))?;
            Ok(Some(position))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("could not read the last {subject}")),
    }
}

async fn positions_since(
    stream: &JsStream,
    subject: &str,
    since: OffsetDateTime,
) -> anyhow::Result<Vec<GeoPoint>> {
    // Both streams are stamped by the server's clock: the positions stored after the start.
    let records = scan(
        stream,
        &[subject.to_owned()],
        DeliverPolicy::ByStartTime { start_time: since },
    )
    .await?;
    Ok(records
        .iter()
        .filter_map(|r| Position::decode(subject, &r.payload).ok())
        .filter_map(|(_, p)| p.point().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lng: f64) -> GeoPoint {
        GeoPoint::new(lat, lng).unwrap()
    }

    fn saga(state: SagaState) -> Saga {
        let mut saga = Saga::new("r_1");
        saga.state = state;
        saga.driver_id = Some("d_1".into());
        saga.pickup = Some(p(52.50, 13.40));
        saga.dropoff = Some(p(52.60, 13.40));
        saga
    }

    fn at(point: GeoPoint) -> Position {
        Position {
            lat: point.lat,
            lng: point.lng,
            at_ms: 1,
        }
    }

    #[test]
    fn before_the_start_the_driver_is_measured_to_the_pickup() {
        let here = p(52.45, 13.40);
        let got = progress(
            &saga(SagaState::Ride(RideState::Confirmed)),
            Some(at(here)),
            &[],
            30.0,
        );
        let km = here.distance_km(&p(52.50, 13.40));
        assert_eq!(got.to_pickup_km, Some(km));
        assert_eq!(got.eta_min, Some((km / 30.0 * 600.0).round() / 10.0));
        assert_eq!(got.travelled_km, None);
    }

    #[test]
    fn after_the_start_the_route_so_far_and_the_way_to_the_dropoff() {
        let route = [p(52.50, 13.40), p(52.52, 13.40), p(52.54, 13.41)];
        let got = progress(
            &saga(SagaState::Ride(RideState::Started)),
            Some(at(route[2])),
            &route,
            60.0,
        );
        let travelled = route[0].distance_km(&route[1]) + route[1].distance_km(&route[2]);
        assert!((got.travelled_km.unwrap() - travelled).abs() < 1e-9);
        let left = route[2].distance_km(&p(52.60, 13.40));
        assert_eq!(got.to_dropoff_km, Some(left));
        assert_eq!(got.eta_min, Some((left / 60.0 * 600.0).round() / 10.0));
        assert_eq!(got.to_pickup_km, None);
    }

    #[test]
    fn without_a_position_there_is_no_eta() {
        let got = progress(
            &saga(SagaState::Ride(RideState::Confirmed)),
            None,
            &[],
            30.0,
        );
        assert_eq!(got.eta_min, None);
        assert!(
            got.line().contains("no position reported"),
            "{}",
            got.line()
        );
    }
}
