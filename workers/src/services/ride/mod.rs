//! The ride service: owns each ride's state machine (requested -> confirmed -> started ->
//! completed, or cancelled, or rejected), answers `cmd.ride.*`, reacts to fraud, driver and
//! payment events, expires rides that are not confirmed in time, and cancels confirmed rides
//! that do not start in time (driver or rider no-show).
//!
//! # Layout
//! - [`config`]: deadlines, fare table, trip limits.
//! - [`domain`]: the pure state machine.
//! - [`route`]: a ride's route from its driver's positions, pure.
//! - [`positions`]: the loop that records routes from the positions stream.
//! - [`store`]: the `rides` and `ride_route` tables.
//! - this file: the [`Worker`] that loads, applies, saves and wraps outputs in envelopes.

pub mod config;
pub mod domain;
pub mod positions;
pub mod route;
pub mod store;

use ridesaga_schemas::{
    Envelope, INVALID_REQUEST, Message, MessageId, RideId, RideState, Service, Timestamp,
};
use sqlx::migrate::Migrator;
use tracing::debug;

use self::config::RideConfig;
use self::domain::Ride;
use self::store::{Changed, Origin};
use super::saga_states::SagaStates;
use crate::config::{ConfigError, Settings};
use crate::runtime::metrics::{SagaDeadlines, SagaOutcome};
use crate::runtime::{
    BatchError, BatchOutput, Conn, Database, HandleError, Input, Kind, Row, Worker, handle_as_batch,
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite/ride");
static PG_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres/ride");

/// Rides expired per tick; the rest wait for the next tick.
const EXPIRIES_PER_TICK: i64 = 256;

/// How a saga ends, as `ridesaga_sagas_finished_total` counts it: the terminal state and its
/// reason (a cancel reason; for a rejection, the fraud service's flag or the ride service's own
/// refusal of an invalid request).
const SAGA_OUTCOMES: &[SagaOutcome] = &[
    (COMPLETED, ""),
    (CANCELLED, "rider"),
    (CANCELLED, "no_driver"),
    (CANCELLED, "payment_declined"),
    (CANCELLED, "expired"),
    (CANCELLED, "driver_no_show"),
    (CANCELLED, "rider_no_show"),
    (REJECTED, "fraud_flagged"),
    (REJECTED, INVALID_REQUEST),
];
const COMPLETED: &str = RideState::Completed.as_str();
const CANCELLED: &str = RideState::Cancelled.as_str();
const REJECTED: &str = RideState::Rejected.as_str();

/// The outcome a ride event announces, if it ends the saga.
fn saga_outcome(message: &Message) -> Option<SagaOutcome> {
    match message {
        Message::RideCompleted(_) => Some((COMPLETED, "")),
        Message::RideCancelled(cancelled) => Some((CANCELLED, cancelled.reason.as_str())),
        Message::RideRejected(rejected)
            if rejected.reasons.iter().any(|r| r == INVALID_REQUEST) =>
        {
            Some((REJECTED, INVALID_REQUEST))
        }
        Message::RideRejected(_) => Some((REJECTED, "fraud_flagged")),
        _ => None,
    }
}

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
    /// statement, and saves the rides that changed in one statement (on `kind`) when the batch
    /// commits.
    async fn apply_many(
        &self,
        kind: Kind,
        inputs: &[Input<'_>],
        rows: Vec<Row>,
    ) -> Result<BatchOutput, BatchError> {
        let loaded = store::loaded(&rows).map_err(BatchError::Batch)?;
        let mut rides = SagaStates::loaded(
            loaded
                .into_iter()
                .map(|(id, stored)| (id, stored.map(BatchRide::stored))),
        );
        let mut outputs = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            let applied = self.apply_to(&mut rides, input);
            outputs.push(applied.map_err(|error| BatchError::Input { index, error })?);
        }
        let rows: Vec<Changed<'_>> = rides
            .changed()
            .filter_map(|(ride_id, batched, at)| {
                Some(Changed {
                    ride_id,
                    ride: batched.ride.as_ref()?,
                    origin: batched.origin.as_ref()?,
                    at,
                })
            })
            .collect();
        let mut writes = Vec::new();
        if !rows.is_empty() {
            writes.push(store::save_many(kind, &rows).map_err(BatchError::Batch)?);
        }
        Ok(BatchOutput {
            outputs,
            writes,
            effects: Vec::new(),
        })
    }

    /// Applies one input to its ride's [`BatchRide`] (empty if the ride is new).
    fn apply_to(
        &self,
        rides: &mut SagaStates<BatchRide>,
        input: &Input<'_>,
    ) -> Result<Vec<Envelope>, HandleError> {
        let Input { envelope, now, .. } = *input;
        let (ride_id, batched) = rides.of(envelope)?;
        let (ride, messages) =
            domain::handle(batched.ride.clone(), &envelope.message, now, &self.config);
        let outputs: Vec<Envelope> = messages
            .into_iter()
            .map(|m| Envelope::caused_by(envelope, m, "", Service::Ride.name()))
            .collect();
        // A command refused for an unknown ride stores nothing.
        if let Some(ride) = ride {
            if batched.origin.is_none() {
                // A new ride opens with its acceptance, or with its rejection when the
                // request broke the service's rules.
                let requested = outputs
                    .iter()
                    .find(|e| {
                        matches!(
                            e.message,
                            Message::RideRequested(_) | Message::RideRejected(_)
                        )
                    })
                    .ok_or_else(|| HandleError::Permanent("new ride without a request".into()))?;
                batched.origin = Some(Origin {
                    correlation_id: envelope.correlation_id.clone(),
                    requested_event_id: requested.id.clone(),
                });
            }
            batched.ride = Some(ride);
            rides.changed_at(ride_id.clone(), now);
        }
        debug!(%ride_id, input = %envelope.kind(), outputs = outputs.len(), "ride input applied");
        Ok(outputs)
    }

    async fn expire_due(
        &self,
        conn: &mut Conn<'_>,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        let mut outputs = Vec::new();
        let mut expired = Vec::new();
        let due = store::due(conn, now, EXPIRIES_PER_TICK).await?;
        for (ride_id, ride, origin) in due {
            let (ride, message) = domain::expire(ride, now);
            if let Some(message) = message {
                debug!(%ride_id, "ride past its deadline cancelled");
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
            store::save_many(conn.kind(), &changed)?
                .execute(conn)
                .await?;
        }
        Ok(outputs)
    }
}

/// A ride as a batch sees it: its state and origin, both `None` while the ride is unknown.
#[derive(Debug, Default)]
struct BatchRide {
    ride: Option<Ride>,
    origin: Option<Origin>,
}

impl BatchRide {
    fn stored((ride, origin): (Ride, Origin)) -> Self {
        BatchRide {
            ride: Some(ride),
            origin: Some(origin),
        }
    }
}

/// An output of the deadline timer: its id comes from the ride id alone (a ride is cancelled
/// once), so replicas that race to cancel the same ride emit the same message.
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

    fn handles(&self) -> &'static [ridesaga_schemas::MessageKind] {
        use ridesaga_schemas::MessageKind;
        &[
            MessageKind::RequestRide,
            MessageKind::CancelRide,
            MessageKind::ArriveRide,
            MessageKind::StartRide,
            MessageKind::CompleteRide,
            MessageKind::FraudFlagged,
            MessageKind::DriverAssigned,
            MessageKind::DriverUnavailable,
            MessageKind::PaymentAuthorized,
            MessageKind::PaymentDeclined,
        ]
    }

    fn migrator(&self, kind: Kind) -> &'static Migrator {
        match kind {
            Kind::Sqlite => &MIGRATOR,
            Kind::Postgres => &PG_MIGRATOR,
        }
    }

    fn handle<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        input: &'a Envelope,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandleError>> + Send + 'a {
        handle_as_batch(self, conn, input, now)
    }

    fn preload(&self, kind: Kind) -> Option<&str> {
        Some(store::load_sql(kind))
    }

    fn handle_preloaded<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        inputs: &'a [Input<'a>],
        rows: Vec<Row>,
    ) -> impl Future<Output = Result<BatchOutput, BatchError>> + Send + 'a {
        // Everything the batch reads came with the preload.
        self.apply_many(conn.kind(), inputs, rows)
    }

    fn tick<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandleError>> + Send + 'a {
        self.expire_due(conn, now)
    }

    fn saga_outcomes(&self) -> &'static [SagaOutcome] {
        SAGA_OUTCOMES
    }

    fn saga_outcome(&self, subject: &str, payload: &[u8]) -> Option<usize> {
        // Only the three terminal events are decoded: every other output returns here.
        let terminal = [
            "evt.ride.completed.",
            "evt.ride.cancelled.",
            "evt.ride.rejected.",
        ];
        if !terminal.iter().any(|prefix| subject.starts_with(prefix)) {
            return None;
        }
        let envelope = Envelope::decode(subject, payload).ok()?;
        let outcome = saga_outcome(&envelope.message)?;
        SAGA_OUTCOMES.iter().position(|known| *known == outcome)
    }

    async fn saga_deadlines(
        &self,
        conn: &mut Conn<'_>,
        now: Timestamp,
    ) -> Result<Option<SagaDeadlines>, sqlx::Error> {
        store::deadlines(conn, now).await.map(Some)
    }

    fn side_loop(
        &self,
        js: async_nats::jetstream::Context,
        database: Database,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>>> {
        Some(Box::pin(positions::follow(js, database, stop)))
    }
}

#[cfg(test)]
mod tests;
