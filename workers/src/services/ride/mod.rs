//! The ride service: owns each ride's state machine (requested -> confirmed -> started ->
//! completed, or cancelled, or rejected), answers `cmd.ride.*`, reacts to fraud, driver and
//! payment events, and expires rides that are not confirmed in time.
//!
//! # Layout
//! - [`config`]: deadlines, fare table, trip limits.
//! - [`domain`]: the pure state machine.
//! - [`store`]: the `rides` table.
//! - this file: the [`Worker`] that loads, applies, saves and wraps outputs in envelopes.

pub mod config;
pub mod domain;
pub mod store;

use std::collections::HashMap;

use ridesaga_schemas::{Envelope, Message, MessageId, RideId, Service, Timestamp};
use sqlx::SqliteConnection;
use sqlx::migrate::Migrator;
use tracing::debug;

use self::config::RideConfig;
use self::domain::Ride;
use self::store::{Changed, Origin};
use crate::config::{ConfigError, Settings};
use crate::runtime::{BatchError, BatchOutput, HandleError, Input, Worker, apply_as_batch};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/ride");

/// Rides expired per tick; the rest wait for the next tick.
const EXPIRIES_PER_TICK: i64 = 256;

/// The ride service as the runtime runs it.
#[derive(Debug, Clone)]
pub struct RideService {
    config: RideConfig,
}

impl RideService {
    /// Reads the service's settings.
    pub fn load(settings: &Settings) -> Result<Self, ConfigError> {
        Ok(Self::new(RideConfig::load(settings)?))
    }

    pub fn new(config: RideConfig) -> Self {
        RideService { config }
    }

    /// Applies a batch's inputs in order against the rides loaded for all of them in one
    /// statement, and saves the rides that changed in one statement when the batch commits.
    async fn apply_many(
        &self,
        conn: &mut SqliteConnection,
        inputs: &[Input<'_>],
    ) -> Result<BatchOutput, BatchError> {
        let ride_ids: Vec<&str> = inputs
            .iter()
            .filter_map(|input| input.envelope.saga_id.as_ref().map(RideId::as_str))
            .collect();
        let mut rides: HashMap<RideId, Result<Slot, HandleError>> =
            store::load_many(conn, &ride_ids)
                .await
                .map_err(BatchError::Batch)?
                .into_iter()
                .map(|(id, stored)| (id, stored.map(Slot::stored)))
                .collect();
        let mut changed: Vec<RideId> = Vec::new();
        let mut outputs = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            let applied = self.apply_to(&mut rides, &mut changed, input);
            outputs.push(applied.map_err(|error| BatchError::Input { index, error })?);
        }
        let mut rows = Vec::with_capacity(changed.len());
        for ride_id in &changed {
            if let Some(Ok(Slot {
                ride: Some(ride),
                origin: Some(origin),
                changed_at: Some(at),
            })) = rides.get(ride_id)
            {
                rows.push(Changed {
                    ride_id,
                    ride,
                    origin,
                    at: *at,
                });
            }
        }
        let mut writes = Vec::new();
        if !rows.is_empty() {
            writes.push(store::save_many(&rows).map_err(BatchError::Batch)?);
        }
        Ok(BatchOutput { outputs, writes })
    }

    /// Applies one input to its ride's slot (created, empty, if the ride is new), and notes
    /// the ride in `changed` the first time it changes.
    fn apply_to(
        &self,
        rides: &mut HashMap<RideId, Result<Slot, HandleError>>,
        changed: &mut Vec<RideId>,
        input: &Input<'_>,
    ) -> Result<Vec<Envelope>, HandleError> {
        let Input { envelope, now } = *input;
        let ride_id = envelope.saga_id.as_ref().ok_or_else(|| {
            HandleError::Permanent(format!("{} without a saga id", envelope.kind()))
        })?;
        let slot = rides
            .entry(ride_id.clone())
            .or_insert_with(|| Ok(Slot::default()))
            .as_mut()
            .map_err(|e| e.clone())?;
        let (ride, messages) =
            domain::handle(slot.ride.clone(), &envelope.message, now, &self.config);
        let outputs: Vec<Envelope> = messages
            .into_iter()
            .map(|m| Envelope::caused_by(envelope, m, "", Service::Ride.name()))
            .collect();
        // A refused command for an unknown ride stores nothing.
        if let Some(ride) = ride {
            if slot.origin.is_none() {
                let requested = outputs
                    .iter()
                    .find(|e| matches!(e.message, Message::RideRequested(_)))
                    .ok_or_else(|| HandleError::Permanent("new ride without a request".into()))?;
                slot.origin = Some(Origin {
                    correlation_id: envelope.correlation_id.clone(),
                    requested_event_id: requested.id.clone(),
                });
            }
            slot.ride = Some(ride);
            if slot.changed_at.replace(now).is_none() {
                changed.push(ride_id.clone());
            }
        }
        debug!(%ride_id, input = %envelope.kind(), outputs = outputs.len(), "ride input applied");
        Ok(outputs)
    }

    async fn expire_due(
        &self,
        conn: &mut SqliteConnection,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        let mut outputs = Vec::new();
        let mut expired = Vec::new();
        for (ride_id, ride, origin) in store::due(conn, now, EXPIRIES_PER_TICK).await? {
            let (ride, message) = domain::expire(ride, now);
            if let Some(message) = message {
                debug!(%ride_id, "ride expired");
                outputs.push(timer_output(&ride_id, &origin, message, now));
            }
            expired.push((ride_id, ride, origin));
        }
        if !expired.is_empty() {
            let changed: Vec<Changed<'_>> = expired
                .iter()
                .map(|(ride_id, ride, origin)| Changed {
                    ride_id,
                    ride,
                    origin,
                    at: now,
                })
                .collect();
            store::save_many(&changed)?.execute(conn).await?;
        }
        Ok(outputs)
    }
}

/// A ride as a batch sees it: loaded (or not yet known), and changed by the batch or not.
#[derive(Debug, Default)]
struct Slot {
    ride: Option<Ride>,
    origin: Option<Origin>,
    /// When the batch last changed the ride; `None` while it has not.
    changed_at: Option<Timestamp>,
}

impl Slot {
    fn stored((ride, origin): (Ride, Origin)) -> Self {
        Slot {
            ride: Some(ride),
            origin: Some(origin),
            changed_at: None,
        }
    }
}

/// An output of the expiry timer: its id comes from the ride id alone, so replicas that race
/// to expire the same ride emit the same message.
fn timer_output(ride_id: &RideId, origin: &Origin, message: Message, now: Timestamp) -> Envelope {
    let mut envelope = Envelope::new(message, Some(ride_id.clone()), Service::Ride.name());
    envelope.id = MessageId::derive_from_key(&format!("ride/{ride_id}/expired"));
    envelope.occurred_at = now;
    envelope.causation_id = Some(origin.requested_event_id.clone());
    envelope.correlation_id = origin.correlation_id.clone();
    envelope
}

impl Worker for RideService {
    fn service(&self) -> Service {
        Service::Ride
    }

    fn migrator(&self) -> &'static Migrator {
        &MIGRATOR
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut SqliteConnection,
        input: &'a Envelope,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandleError>> + Send + 'a {
        apply_as_batch(self, conn, input, now)
    }

    fn apply_batch<'a>(
        &'a self,
        conn: &'a mut SqliteConnection,
        inputs: &'a [Input<'a>],
    ) -> impl Future<Output = Result<BatchOutput, BatchError>> + Send + 'a {
        self.apply_many(conn, inputs)
    }

    fn tick<'a>(
        &'a self,
        conn: &'a mut SqliteConnection,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandleError>> + Send + 'a {
        self.expire_due(conn, now)
    }
}

#[cfg(test)]
mod tests {
    use ridesaga_schemas::{
        CancelReason, DriverAssigned, DriverId, GeoPoint, PaymentAuthorized, RequestRide, RiderId,
        StartRide,
    };

    use super::domain::Status;
    use super::*;
    use crate::testing::{
        apply_batch_in_tx, apply_each_in_tx, apply_in_tx, database, tick_in_tx, timeless,
    };

    const T0: i64 = 1_700_000_000_000;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_millis(T0 + seconds * 1000)
    }

    fn service() -> RideService {
        RideService::new(RideConfig::default())
    }

    /// One transaction, as the runtime runs it (without the inbox).
    async fn apply(conn: &mut SqliteConnection, input: &Envelope, now: Timestamp) -> Vec<Envelope> {
        apply_in_tx(&service(), conn, input, now).await.unwrap()
    }

    async fn tick(conn: &mut SqliteConnection, now: Timestamp) -> Vec<Envelope> {
        tick_in_tx(&service(), conn, now).await.unwrap()
    }

    fn ride(id: &str) -> Option<RideId> {
        Some(RideId::parse(id).unwrap())
    }

    fn request(id: &str) -> Envelope {
        let message = RequestRide {
            rider_id: RiderId::parse("u_ada").unwrap(),
            pickup: GeoPoint::new(52.52, 13.40).unwrap(),
            dropoff: GeoPoint::new(52.50, 13.45).unwrap(),
            payment_token: "tok_visa".into(),
        };
        Envelope::new(message, ride(id), "ridectl")
    }

    fn assigned(id: &str) -> Envelope {
        let message = DriverAssigned {
            rider_id: RiderId::parse("u_ada").unwrap(),
            driver_id: DriverId::parse("d_bob").unwrap(),
            driver_name: "Bob".into(),
            pickup_distance_km: 0.5,
        };
        Envelope::new(message, ride(id), "driver")
    }

    fn authorized(id: &str) -> Envelope {
        let message = PaymentAuthorized {
            rider_id: RiderId::parse("u_ada").unwrap(),
            hold_id: "hold_x".into(),
            amount_cents: 1000,
        };
        Envelope::new(message, ride(id), "payment")
    }

    async fn status(conn: &mut SqliteConnection, id: &str) -> Option<Status> {
        let ride_id = RideId::parse(id).unwrap();
        store::load(conn, &ride_id)
            .await
            .unwrap()
            .map(|(ride, _)| ride.status)
    }

    #[tokio::test]
    async fn a_ride_survives_between_transactions_until_it_is_confirmed() {
        let (_dir, mut conn) = database(&MIGRATOR).await;
        let input = request("r_1");
        let out = apply(&mut conn, &input, at(0)).await;
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].subject(), "evt.ride.requested.r_1");
        assert_eq!(
            out[0].id,
            MessageId::derive(&input.id, "evt.ride.requested/")
        );
        assert_eq!(out[0].causation_id.as_ref(), Some(&input.id));

        assert!(apply(&mut conn, &authorized("r_1"), at(1)).await.is_empty());
        let out = apply(&mut conn, &assigned("r_1"), at(2)).await;
        assert_eq!(out[0].subject(), "evt.ride.confirmed.r_1");
        assert_eq!(status(&mut conn, "r_1").await, Some(Status::Confirmed));

        let (ride, origin) = store::load(&mut conn, &RideId::parse("r_1").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ride.driver_id.unwrap().as_str(), "d_bob");
        assert_eq!(origin.correlation_id, input.correlation_id);
    }

    /// Every ride's stored state, by ride id.
    async fn all_rides(conn: &mut SqliteConnection) -> Vec<(Ride, Origin)> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT ride_id FROM rides ORDER BY ride_id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let mut rides = Vec::new();
        for id in ids {
            let ride_id = RideId::parse(id).unwrap();
            rides.push(store::load(conn, &ride_id).await.unwrap().unwrap());
        }
        rides
    }

    #[tokio::test]
    async fn a_batch_gives_the_outputs_and_state_of_its_inputs_applied_one_by_one() {
        let inputs: Vec<(Envelope, Timestamp)> = [
            request("r_1"),
            request("r_2"),
            authorized("r_1"),
            Envelope::new(StartRide {}, ride("r_ghost"), "ridectl"),
            assigned("r_1"),
            Envelope::new(StartRide {}, ride("r_1"), "ridectl"),
            assigned("r_2"),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, input)| (input, at(i as i64)))
        .collect();
        let (_one_dir, mut one) = database(&MIGRATOR).await;
        let one_by_one = apply_each_in_tx(&service(), &mut one, &inputs).await;
        let (_batch_dir, mut conn) = database(&MIGRATOR).await;
        let batch = apply_batch_in_tx(&service(), &mut conn, &inputs)
            .await
            .unwrap();

        assert_eq!(timeless(batch), timeless(one_by_one));
        let stored = all_rides(&mut conn).await;
        assert_eq!(stored, all_rides(&mut one).await);
        assert_eq!(stored.len(), 2, "the refused command stored nothing");
        assert_eq!(stored[0].0.status, Status::Started);
        assert_eq!(stored[0].0.pickup, GeoPoint::new(52.52, 13.40).unwrap());
    }

    #[tokio::test]
    async fn coordinates_and_distances_survive_the_json_rows_bit_for_bit() {
        let (_dir, mut conn) = database(&MIGRATOR).await;
        let input = request("r_1");
        apply(&mut conn, &input, at(0)).await;
        let ride_id = RideId::parse("r_1").unwrap();
        let (template, origin) = store::load(&mut conn, &ride_id).await.unwrap().unwrap();
        // A fixed pseudo-random walk over the whole range of valid coordinates.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |span: f64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 * span - span
        };
        let mut rides = Vec::new();
        for i in 0..500 {
            let mut ride = template.clone();
            ride.pickup = GeoPoint::new(next(90.0), next(180.0)).unwrap();
            ride.dropoff = GeoPoint::new(next(90.0), next(180.0)).unwrap();
            ride.distance_km = next(1e4).abs();
            rides.push((RideId::parse(format!("r_x{i}")).unwrap(), ride));
        }
        let changed: Vec<Changed<'_>> = rides
            .iter()
            .map(|(ride_id, ride)| Changed {
                ride_id,
                ride,
                origin: &origin,
                at: at(1),
            })
            .collect();
        store::save_many(&changed)
            .unwrap()
            .execute(&mut conn)
            .await
            .unwrap();
        for (ride_id, ride) in &rides {
            let (stored, _) = store::load(&mut conn, ride_id).await.unwrap().unwrap();
            assert_eq!(stored.pickup, ride.pickup, "{ride_id}");
            assert_eq!(stored.dropoff, ride.dropoff, "{ride_id}");
            assert_eq!(stored.distance_km.to_bits(), ride.distance_km.to_bits());
        }
    }

    #[tokio::test]
    async fn a_failing_input_fails_alone_with_its_index() {
        let (_dir, mut conn) = database(&MIGRATOR).await;
        let mut orphan = request("r_2");
        orphan.saga_id = None;
        let inputs = [request("r_1"), orphan];
        let batch: Vec<Input<'_>> = inputs
            .iter()
            .map(|envelope| Input {
                envelope,
                now: at(0),
            })
            .collect();
        let err = service().apply_batch(&mut conn, &batch).await.unwrap_err();
        assert!(
            matches!(&err, BatchError::Input { index: 1, error: HandleError::Permanent(m) } if m.contains("saga id")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_command_stores_nothing() {
        let (_dir, mut conn) = database(&MIGRATOR).await;
        let start = Envelope::new(StartRide {}, ride("r_ghost"), "ridectl");
        let out = apply(&mut conn, &start, at(0)).await;
        assert_eq!(out[0].subject(), "evt.ride.refused.r_ghost");
        assert_eq!(status(&mut conn, "r_ghost").await, None);
    }

    #[tokio::test]
    async fn the_tick_expires_due_rides_once_with_a_timer_id() {
        let (_dir, mut conn) = database(&MIGRATOR).await;
        let early = request("r_early");
        apply(&mut conn, &early, at(0)).await;
        apply(&mut conn, &request("r_late"), at(10)).await;
        apply(&mut conn, &request("r_done"), at(0)).await;
        apply(&mut conn, &assigned("r_done"), at(1)).await;
        apply(&mut conn, &authorized("r_done"), at(1)).await;

        assert!(tick(&mut conn, at(44)).await.is_empty());
        let out = tick(&mut conn, at(50)).await;
        assert_eq!(out.len(), 1, "{out:?}");
        let expired = &out[0];
        assert_eq!(expired.subject(), "evt.ride.cancelled.r_early");
        assert!(matches!(
            &expired.message,
            Message::RideCancelled(c) if c.reason == CancelReason::Expired
        ));
        assert_eq!(
            expired.id,
            MessageId::derive_from_key("ride/r_early/expired")
        );
        assert_eq!(expired.correlation_id, early.correlation_id);
        assert!(expired.causation_id.is_some());
        assert!(tick(&mut conn, at(50)).await.is_empty());
        assert_eq!(
            status(&mut conn, "r_early").await,
            Some(Status::Cancelled(CancelReason::Expired))
        );
        assert_eq!(status(&mut conn, "r_late").await, Some(Status::Requested));
        assert_eq!(status(&mut conn, "r_done").await, Some(Status::Confirmed));
    }
}
