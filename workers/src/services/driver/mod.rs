//! The driver service: registers drivers, tracks whether they are online and where, and
//! reserves the nearest available driver for each ride that fraud cleared.
//!
//! Consumes `cmd.driver.{register,online,offline,move,schedule}`, `evt.ride.requested`,
//! `evt.fraud.cleared`, and, to release the driver, `evt.ride.{cancelled,rejected,completed}`
//! and `evt.payment.declined`. Publishes `evt.driver.updated` for every other driver command,
//! `evt.driver.schedule` for every schedule command (the schedule in force after it), and
//! `evt.driver.{assigned,released,unavailable}` at most once per ride each: their ids derive
//! from the ride and the event type, so the same fact reached by two paths (an input, a timer
//! in another replica) is one message.
//!
//! - [`domain`]: the rules, pure.
//! - `store`: the tables (`migrations/{sqlite,postgres}/driver`), on either backend.
//!
//! Settings: `RIDESAGA_MATCH_RADIUS_KM` (default 10), `RIDESAGA_AVERAGE_SPEED_KMH` (how fast a
//! scheduled driver is assumed to reach the pickup and drive the trip, default 30),
//! `RIDESAGA_DRIVER_TICK_BATCH` (rides each
//! timer run looks at, default 50), `RIDESAGA_DRIVER_RETENTION` (how long ended rides are kept
//! as tombstones, default 31 days: longer than the saga stream's 30-day history).

pub mod domain;
mod store;

use std::time::Duration;

use crate::runtime::{Conn, Kind, Row};
use ridesaga_schemas::{
    CancelReason, DriverAssigned, DriverReleased, DriverScheduleChanged, DriverUnavailable,
    DriverUpdated, Envelope, Message, MessageId, RideId, RideState, Service, Timestamp,
};
use sqlx::migrate::Migrator;
use tracing::{debug, warn};

use crate::config::{ConfigError, Settings};
use crate::runtime::{self, BatchError, BatchOutput, HandleError, Worker};
use domain::{DriverError, Effect, Input, MatchRules, RideRequest};
use store::{BatchView, Correlations, StoreError};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite/driver");
static PG_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres/driver");

/// Ended rides pruned per timer run.
const PRUNE_BATCH: i64 = 500;

/// The driver service's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverConfig {
    pub rules: MatchRules,
    /// Waiting rides each timer run examines (expiry and retry, each).
    pub tick_batch: u32,
    /// How long an ended ride's row is kept: its tombstone must outlive any redelivery.
    pub retention: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            rules: MatchRules {
                radius_km: 10.0,
                average_speed_kmh: 30.0,
            },
            tick_batch: 50,
            retention: Duration::from_secs(31 * 24 * 3600),
        }
    }
}

impl DriverConfig {
    pub fn load(s: &Settings) -> Result<Self, ConfigError> {
        let d = DriverConfig::default();
        let radius_km: f64 = s.get("RIDESAGA_MATCH_RADIUS_KM", d.rules.radius_km)?;
        if !(radius_km.is_finite() && radius_km > 0.0 && radius_km <= 1000.0) {
            return Err(ConfigError {
                name: "RIDESAGA_MATCH_RADIUS_KM".into(),
                value: radius_km.to_string(),
                problem: "must be a distance in kilometres above 0 and at most 1000".into(),
            });
        }
        let average_speed_kmh: f64 =
            s.get("RIDESAGA_AVERAGE_SPEED_KMH", d.rules.average_speed_kmh)?;
        if !(average_speed_kmh.is_finite() && average_speed_kmh > 0.0 && average_speed_kmh <= 500.0)
        {
            return Err(ConfigError {
                name: "RIDESAGA_AVERAGE_SPEED_KMH".into(),
                value: average_speed_kmh.to_string(),
                problem: "must be a speed in km/h above 0 and at most 500".into(),
            });
        }
        let tick_batch: u32 = s.get("RIDESAGA_DRIVER_TICK_BATCH", d.tick_batch)?;
        if tick_batch == 0 {
            return Err(ConfigError {
                name: "RIDESAGA_DRIVER_TICK_BATCH".into(),
                value: "0".into(),
                problem: "must be at least 1".into(),
            });
        }
        Ok(DriverConfig {
            rules: MatchRules {
                radius_km,
                average_speed_kmh,
            },
            tick_batch,
            retention: s.duration("RIDESAGA_DRIVER_RETENTION", d.retention)?,
        })
    }
}

/// The driver service as the runtime runs it.
#[derive(Debug, Clone)]
pub struct DriverService {
    config: DriverConfig,
}

impl DriverService {
    pub fn load(settings: &Settings) -> Result<Self, ConfigError> {
        Ok(DriverService::new(DriverConfig::load(settings)?))
    }

    pub fn new(config: DriverConfig) -> Self {
        DriverService { config }
    }

    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    /// Loads what `event` can touch as the batch in `view` has left it, applies it and keeps
    /// what changed in `view`, for the inputs after it and for the batch's save.
    async fn apply_event(
        &self,
        conn: &mut Conn<'_>,
        input: &Envelope,
        event: &Input,
        now: Timestamp,
        view: &mut BatchView,
    ) -> Result<Vec<Envelope>, HandleError> {
        let rules = &self.config.rules;
        let mut loaded = store::load_for_input(conn, event, now, rules, view)
            .await
            .map_err(store_failed)?;
        let before = loaded.state.clone();
        let effects =
            domain::handle(&mut loaded.state, event, now, rules).map_err(|e| match e {
                DriverError::UnknownDriver(_) => HandleError::Transient(e.to_string()),
            })?;
        if let Input::Requested { ride_id, .. } | Input::Cleared { ride_id } = event {
            loaded.correlations.remember(ride_id, &input.correlation_id);
        }
        view.keep(&before, &loaded);
        Ok(envelopes(effects, &loaded.correlations, Some(input), now))
    }
}

const PRODUCER: &str = "driver";

impl Worker for DriverService {
    fn service(&self) -> Service {
        Service::Driver
    }

    fn handles(&self) -> &'static [ridesaga_schemas::MessageKind] {
        use ridesaga_schemas::MessageKind;
        &[
            MessageKind::RegisterDriver,
            MessageKind::DriverOnline,
            MessageKind::DriverOffline,
            MessageKind::MoveDriver,
            MessageKind::SetDriverSchedule,
            MessageKind::RideRequested,
            MessageKind::FraudCleared,
            MessageKind::RideCancelled,
            MessageKind::RideRejected,
            MessageKind::RideCompleted,
            MessageKind::PaymentDeclined,
        ]
    }

    fn migrator(&self, kind: Kind) -> &'static Migrator {
        match kind {
            Kind::Sqlite => &MIGRATOR,
            Kind::Postgres => &PG_MIGRATOR,
        }
    }

    async fn handle<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        input: &'a Envelope,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        let event = input_of(input)?;
        let mut view = BatchView::default();
        let outputs = self
            .apply_event(conn, input, &event, now, &mut view)
            .await?;
        view.save(conn, now).await.map_err(store_failed)?;
        Ok(outputs)
    }

    fn preload(&self, kind: Kind) -> Option<&str> {
        Some(store::read_ahead_sql(kind))
    }

    /// Applies the inputs one by one, each seeing what the ones before it changed
    /// (`BatchView`), with the rides they name read ahead (`rows`), and saves what they
    /// changed in one round trip at the end: what [`Worker::handle`] input by input would
    /// decide and store.
    async fn handle_preloaded<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        inputs: &'a [runtime::Input<'a>],
        rows: Vec<Row>,
    ) -> Result<BatchOutput, BatchError> {
        let events = inputs
            .iter()
            .enumerate()
            .map(|(index, input)| {
                input_of(input.envelope).map_err(|error| BatchError::Input { index, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rides: Vec<&RideId> = events.iter().filter_map(Input::ride_id).collect();
        let mut view =
            BatchView::read_ahead(&rides, &rows).map_err(|e| BatchError::Batch(store_failed(e)))?;
        let mut outputs = Vec::with_capacity(inputs.len());
        for (index, (input, event)) in inputs.iter().zip(&events).enumerate() {
            let applied = self
                .apply_event(conn, input.envelope, event, input.now, &mut view)
                .await;
            outputs.push(applied.map_err(|error| BatchError::Input { index, error })?);
        }
        // Rows last changed as of the batch's latest input (retention counts from there).
        let now = inputs
            .iter()
            .map(|i| i.now)
            .max()
            .unwrap_or_else(Timestamp::now);
        // No one input is to blame for a save that fails (a guard that found a row changed
        // underneath): the whole batch is retried, and its inputs reach the dead letters
        // after their last delivery should it keep failing.
        view.save(conn, now).await.map_err(|e| {
            BatchError::Batch(match store_failed(e) {
                HandleError::Permanent(reason) => HandleError::Transient(reason),
                transient => transient,
            })
        })?;
        Ok(BatchOutput {
            outputs,
            writes: Vec::new(),
            effects: Vec::new(),
        })
    }

    async fn tick<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        let rules = &self.config.rules;
        let batch = i64::from(self.config.tick_batch);
        let mut loaded = store::load_for_tick(conn, now, rules, batch)
            .await
            .map_err(store_failed)?;
        let before = loaded.state.clone();
        let effects = domain::tick(&mut loaded.state, now, rules);
        store::save(conn, &before, &loaded, now)
            .await
            .map_err(store_failed)?;
        let pruned = store::prune(conn, age_before(now, self.config.retention), PRUNE_BATCH)
            .await
            .map_err(store_failed)?;
        if pruned > 0 {
            debug!(pruned, "ended rides past retention deleted");
        }
        Ok(envelopes(effects, &loaded.correlations, None, now))
    }
}

/// `age` before `now`; the epoch if that is earlier (a retention of centuries prunes nothing).
fn age_before(now: Timestamp, age: Duration) -> Timestamp {
    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_unix_millis(now.unix_millis().saturating_sub(age_ms).max(0))
}

/// The domain's view of an envelope.
fn input_of(envelope: &Envelope) -> Result<Input, HandleError> {
    let at = envelope.occurred_at.unix_millis();
    let ride_id = || -> Result<RideId, HandleError> {
        envelope
            .saga_id
            .clone()
            .ok_or_else(|| HandleError::Permanent(format!("{} without a saga id", envelope.kind())))
    };
    let ended = |reason: String| -> Result<Input, HandleError> {
        Ok(Input::Ended {
            ride_id: ride_id()?,
            reason,
        })
    };
    match &envelope.message {
        Message::RegisterDriver(m) => Ok(Input::Register {
            driver_id: m.driver_id.clone(),
            name: m.name.clone(),
            location: m.location,
            at,
        }),
        Message::DriverOnline(m) => Ok(Input::Online {
            driver_id: m.driver_id.clone(),
            location: m.location,
            at,
        }),
        Message::DriverOffline(m) => Ok(Input::Offline {
            driver_id: m.driver_id.clone(),
            at,
        }),
        Message::MoveDriver(m) => Ok(Input::Move {
            driver_id: m.driver_id.clone(),
            location: m.location,
            at,
        }),
        Message::SetDriverSchedule(m) => Ok(Input::Schedule {
            driver_id: m.driver_id.clone(),
            schedule: m.schedule.clone(),
            at,
        }),
        Message::RideRequested(m) => Ok(Input::Requested {
            ride_id: ride_id()?,
            request: RideRequest {
                rider_id: m.rider_id.clone(),
                pickup: m.pickup,
                // Whole milliseconds, as stored, so a reloaded ride compares equal.
                match_deadline: Timestamp::from_unix_millis(m.match_deadline.unix_millis()),
                trip_km: m.estimated_distance_km,
            },
        }),
        Message::FraudCleared(_) => Ok(Input::Cleared {
            ride_id: ride_id()?,
        }),
        // A decline and the cancel it causes give the same reason, so the release reads the
        // same whichever arrives first.
        Message::RideCancelled(m) => match m.reason {
            CancelReason::PaymentDeclined => ended("payment_declined".to_owned()),
            reason => ended(format!("{}:{}", RideState::Cancelled, reason.as_str())),
        },
        Message::RideRejected(_) => ended(RideState::Rejected.to_string()),
        Message::RideCompleted(_) => ended(RideState::Completed.to_string()),
        Message::PaymentDeclined(_) => ended("payment_declined".to_owned()),
        other => Err(HandleError::Permanent(format!(
            "the driver service does not handle {}",
            other.kind()
        ))),
    }
}

fn store_failed(e: StoreError) -> HandleError {
    match e {
        StoreError::Database(e) => HandleError::from(e),
        StoreError::Conflict { .. } => HandleError::Transient(e.to_string()),
        StoreError::Corrupt(e) => e.into(),
    }
}

/// The messages for `effects`: caused by `cause`, or (timer runs) starting a chain of their own;
/// those about a ride carry the ride's saga correlation id.
fn envelopes(
    effects: Vec<Effect>,
    correlations: &Correlations,
    cause: Option<&Envelope>,
    now: Timestamp,
) -> Vec<Envelope> {
    let mut out = Vec::with_capacity(effects.len());
    for effect in effects {
        let (message, ride_id): (Message, Option<RideId>) = match effect {
            Effect::DriverUpdated {
                driver_id,
                name,
                online,
                location,
            } => {
                debug!(%driver_id, online, %location, "driver updated");
                (
                    DriverUpdated {
                        driver_id,
                        name,
                        online,
                        location,
                    }
                    .into(),
                    None,
                )
            }
            Effect::ScheduleChanged {
                driver_id,
                schedule,
            } => {
                debug!(%driver_id, scheduled = schedule.is_some(), "driver schedule changed");
                (
                    DriverScheduleChanged {
                        driver_id,
                        schedule,
                    }
                    .into(),
                    None,
                )
            }
            Effect::Assigned {
                ride_id,
                rider_id,
                driver_id,
                driver_name,
                pickup_distance_km,
            } => {
                debug!(%ride_id, %driver_id, pickup_distance_km, "driver assigned");
                let m = DriverAssigned {
                    rider_id,
                    driver_id,
                    driver_name,
                    pickup_distance_km,
                };
                (m.into(), Some(ride_id))
            }
            Effect::Released {
                ride_id,
                driver_id,
                reason,
            } => {
                debug!(%ride_id, %driver_id, %reason, "driver released");
                (DriverReleased { driver_id, reason }.into(), Some(ride_id))
            }
            Effect::Unavailable {
                ride_id,
                rider_id,
                reason,
            } => {
                warn!(%ride_id, %reason, "no driver for the ride");
                (DriverUnavailable { rider_id, reason }.into(), Some(ride_id))
            }
        };
        let mut envelope = match cause {
            Some(cause) => Envelope::caused_by(cause, message, "", PRODUCER),
            None => Envelope::new(message, None, PRODUCER),
        };
        envelope.saga_id = ride_id.clone();
        if let Some(ride_id) = ride_id {
            // At most one of each per ride, whichever input or timer gets there.
            envelope.id = MessageId::derive_from_key(&format!("{ride_id}/{}", envelope.kind()));
            envelope.occurred_at = now;
            if let Some(correlation) = correlations.of(&ride_id) {
                envelope.correlation_id = correlation.to_owned();
            }
        }
        out.push(envelope);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_have_defaults_and_bad_ones_are_named() {
        assert_eq!(
            DriverConfig::load(&Settings::default()).unwrap(),
            DriverConfig::default()
        );
        let s = Settings::from_pairs([("RIDESAGA_MATCH_RADIUS_KM", "2.5")]);
        assert_eq!(DriverConfig::load(&s).unwrap().rules.radius_km, 2.5);
        for (name, value) in [
            ("RIDESAGA_MATCH_RADIUS_KM", "-1"),
            ("RIDESAGA_MATCH_RADIUS_KM", "NaN"),
            ("RIDESAGA_MATCH_RADIUS_KM", "far"),
            ("RIDESAGA_AVERAGE_SPEED_KMH", "0"),
            ("RIDESAGA_DRIVER_TICK_BATCH", "0"),
            ("RIDESAGA_DRIVER_RETENTION", "forever"),
        ] {
            let err = DriverConfig::load(&Settings::from_pairs([(name, value)])).unwrap_err();
            assert_eq!(err.name, name, "{err}");
        }
    }

    #[test]
    fn a_decline_and_the_cancel_it_causes_release_for_the_same_reason() {
        let rider = ridesaga_schemas::RiderId::parse("u_1").unwrap();
        let ride = Some(RideId::parse("r_1").unwrap());
        let declined = ridesaga_schemas::PaymentDeclined {
            rider_id: rider.clone(),
            code: "card_declined".into(),
            message: "declined".into(),
        };
        let cancelled = ridesaga_schemas::RideCancelled {
            rider_id: rider,
            reason: CancelReason::PaymentDeclined,
            driver_id: None,
        };
        let a = input_of(&Envelope::new(declined, ride.clone(), "payment")).unwrap();
        let b = input_of(&Envelope::new(cancelled, ride, "ride")).unwrap();
        assert_eq!(a, b);
    }
}
