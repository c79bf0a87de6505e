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

use ridesaga_schemas::{Envelope, Message, MessageId, RideId, Service, Timestamp};
use sqlx::SqliteConnection;
use sqlx::migrate::Migrator;
use tracing::debug;

use self::config::RideConfig;
use self::store::Origin;
use crate::config::{ConfigError, Settings};
use crate::runtime::{HandleError, Worker};

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

    async fn apply_one(
        &self,
        conn: &mut SqliteConnection,
        input: &Envelope,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        let ride_id = input
            .saga_id
            .as_ref()
            .ok_or_else(|| HandleError::Permanent(format!("{} without a saga id", input.kind())))?;
        let loaded = store::load(conn, ride_id).await?;
        let existed = loaded.is_some();
        let (ride, _) = loaded.unzip();
        let (ride, messages) = domain::handle(ride, &input.message, now, &self.config);
        let outputs: Vec<Envelope> = messages
            .into_iter()
            .map(|m| Envelope::caused_by(input, m, "", Service::Ride.name()))
            .collect();
        match (&ride, existed) {
            (Some(ride), true) => store::update(conn, ride_id, ride, now).await?,
            (Some(ride), false) => {
                let requested = outputs
                    .iter()
                    .find(|e| matches!(e.message, Message::RideRequested(_)))
                    .ok_or_else(|| HandleError::Permanent("new ride without a request".into()))?;
                let origin = Origin {
                    correlation_id: input.correlation_id.clone(),
                    requested_event_id: requested.id.clone(),
                };
                store::insert(conn, ride_id, ride, &origin, now).await?;
            }
            (None, _) => {}
        }
        debug!(%ride_id, input = %input.kind(), outputs = outputs.len(), "ride input applied");
        Ok(outputs)
    }

    async fn expire_due(
        &self,
        conn: &mut SqliteConnection,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        let mut outputs = Vec::new();
        for (ride_id, ride, origin) in store::due(conn, now, EXPIRIES_PER_TICK).await? {
            let (ride, message) = domain::expire(ride, now);
            store::update(conn, &ride_id, &ride, now).await?;
            if let Some(message) = message {
                debug!(%ride_id, "ride expired");
                outputs.push(timer_output(&ride_id, &origin, message, now));
            }
        }
        Ok(outputs)
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
        self.apply_one(conn, input, now)
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
    use crate::testing::{apply_in_tx, database, tick_in_tx};

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
