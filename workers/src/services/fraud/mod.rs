//! The fraud service: scores every ride request with deterministic rules (blocked riders,
//! request velocity, impossible trips, repeated payment declines; see [`domain`]), keeps
//! the blocklist, and judges every completed ride with the fake-ride rules (impossible speeds,
//! a driver who never moved, a driver and rider paired again and again; see [`rides`]).
//!
//! Consumes `evt.ride.requested`, `evt.ride.completed`, `evt.payment.declined` (counted per
//! rider) and `cmd.fraud.{block,unblock,review}`. Publishes `evt.fraud.cleared` or
//! `evt.fraud.flagged` once per ride (the id derives from the ride and the event type),
//! `evt.fraud.blocklist` for every block or unblock command (the rider's entry after it),
//! `evt.fraud.ride_flagged` for a completed ride the fake-ride rules flag and
//! `evt.fraud.reviewed` for the first review of a flagged ride (each once per ride).
//!
//! Fake-ride settings (defaults): `RIDESAGA_FRAUD_MAX_SPEED_KMH` (250),
//! `RIDESAGA_FRAUD_STILL_RADIUS_M` (30) for at least `RIDESAGA_FRAUD_STILL_FOR` (1m),
//! `RIDESAGA_FRAUD_PAIR_RIDES` (5) per `RIDESAGA_FRAUD_PAIR_WINDOW` (168h).
//!
//! Settings (defaults): `RIDESAGA_FRAUD_MAX_REQUESTS` (5) per `RIDESAGA_FRAUD_WINDOW` (60s),
//! `RIDESAGA_FRAUD_MAX_TRIP_KM` (200), `RIDESAGA_FRAUD_MAX_DECLINES` (3) per
//! `RIDESAGA_FRAUD_DECLINE_WINDOW` (24h), `RIDESAGA_FRAUD_FLAG_SCORE` (50), and
//! `RIDESAGA_FRAUD_RETENTION` (31 days: decisions are kept longer than the saga stream's
//! 30-day history, so a replayed request is still recognised).

pub mod domain;
pub mod rides;
mod store;

use std::time::Duration;

use crate::runtime::{Conn, Kind, Row};
use ridesaga_schemas::{
    Envelope, FraudCleared, FraudFlagged, Message, MessageId, ReviewRide, RideCompleted,
    RideFlagged, RideId, RideReviewed, RiderBlockChanged, Service, Timestamp,
};
use sqlx::migrate::Migrator;
use tracing::{debug, info, warn};

use crate::config::{ConfigError, Settings};
use crate::runtime::{self, BatchError, BatchOutput, HandleError, Worker, handle_as_batch};
use domain::{Effect, FraudRules, Input};
use rides::{Completion, Review, RideRules};
use store::rides::FraudRide;
use store::{Pending, Preloaded};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite/fraud");
static PG_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres/fraud");

const PRODUCER: &str = "fraud";
/// Rows pruned per timer run, per table.
const PRUNE_BATCH: i64 = 500;

/// The fraud service's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FraudConfig {
    pub rules: FraudRules,
    /// The fake-ride rules, for completed rides.
    pub rides: RideRules,
    /// How long decisions, declines and judged completions are kept.
    pub retention: Duration,
}

impl Default for FraudConfig {
    fn default() -> Self {
        FraudConfig {
            rules: FraudRules::default(),
            rides: RideRules::default(),
            retention: Duration::from_secs(31 * 24 * 3600),
        }
    }
}

impl FraudConfig {
    pub fn load(s: &Settings) -> Result<Self, ConfigError> {
        let d = FraudRules::default();
        let millis = |name: &str, default_ms: i64| -> Result<i64, ConfigError> {
            let default = Duration::from_millis(default_ms.unsigned_abs());
            let value = s.duration(name, default)?;
            match i64::try_from(value.as_millis()) {
                Ok(ms) if ms > 0 => Ok(ms),
                _ => Err(invalid(
                    name,
                    format!("{value:?}"),
                    "must be above 0 and below 292 million years",
                )),
            }
        };
        let max_trip_km: f64 = s.get("RIDESAGA_FRAUD_MAX_TRIP_KM", d.max_trip_km)?;
        if !(max_trip_km.is_finite() && max_trip_km > 0.0) {
            return Err(invalid(
                "RIDESAGA_FRAUD_MAX_TRIP_KM",
                max_trip_km.to_string(),
                "must be a distance above 0",
            ));
        }
        let max_declines: u32 = s.get("RIDESAGA_FRAUD_MAX_DECLINES", d.max_declines)?;
        if max_declines == 0 {
            return Err(invalid(
                "RIDESAGA_FRAUD_MAX_DECLINES",
                "0".into(),
                "must be at least 1",
            ));
        }
        let flag_score: u32 = s.get("RIDESAGA_FRAUD_FLAG_SCORE", d.flag_score)?;
        if !(1..=domain::MAX_SCORE).contains(&flag_score) {
            return Err(invalid(
                "RIDESAGA_FRAUD_FLAG_SCORE",
                flag_score.to_string(),
                "must be between 1 and 100",
            ));
        }
        let rules = FraudRules {
            max_requests: s.get("RIDESAGA_FRAUD_MAX_REQUESTS", d.max_requests)?,
            window_ms: millis("RIDESAGA_FRAUD_WINDOW", d.window_ms)?,
            max_trip_km,
            max_declines,
            decline_window_ms: millis("RIDESAGA_FRAUD_DECLINE_WINDOW", d.decline_window_ms)?,
            flag_score,
        };
        let rides = load_ride_rules(s, &millis)?;
        let retention = s.duration("RIDESAGA_FRAUD_RETENTION", FraudConfig::default().retention)?;
        let longest = Duration::from_millis(
            rules
                .window_ms
                .max(rules.decline_window_ms)
                .max(rides.pair_window_ms)
                .unsigned_abs(),
        );
        if retention < longest {
            return Err(invalid(
                "RIDESAGA_FRAUD_RETENTION",
                format!("{retention:?}"),
                "must be at least as long as the fraud windows",
            ));
        }
        Ok(FraudConfig {
            rules,
            rides,
            retention,
        })
    }
}

/// The fake-ride rules' settings.
fn load_ride_rules(
    s: &Settings,
    millis: &dyn Fn(&str, i64) -> Result<i64, ConfigError>,
) -> Result<RideRules, ConfigError> {
    let d = RideRules::default();
    let positive = |name: &str, default: f64| -> Result<f64, ConfigError> {
        let value: f64 = s.get(name, default)?;
        if value.is_finite() && value > 0.0 {
            Ok(value)
        } else {
            Err(invalid(name, value.to_string(), "must be a number above 0"))
        }
    };
    let pair_rides: u32 = s.get("RIDESAGA_FRAUD_PAIR_RIDES", d.pair_rides)?;
    if pair_rides < 2 {
        return Err(invalid(
            "RIDESAGA_FRAUD_PAIR_RIDES",
            pair_rides.to_string(),
            "must be at least 2",
        ));
    }
    Ok(RideRules {
        max_speed_kmh: positive("RIDESAGA_FRAUD_MAX_SPEED_KMH", d.max_speed_kmh)?,
        still_radius_m: positive("RIDESAGA_FRAUD_STILL_RADIUS_M", d.still_radius_m)?,
        still_for_ms: millis("RIDESAGA_FRAUD_STILL_FOR", d.still_for_ms)?,
        pair_rides,
        pair_window_ms: millis("RIDESAGA_FRAUD_PAIR_WINDOW", d.pair_window_ms)?,
    })
}

fn invalid(name: &str, value: String, problem: &str) -> ConfigError {
    ConfigError {
        name: name.to_owned(),
        value,
        problem: problem.to_owned(),
    }
}

/// The fraud service as the runtime runs it.
#[derive(Debug, Clone)]
pub struct FraudService {
    config: FraudConfig,
    /// [`store::preload_sql`] for the configured rules, on each backend.
    sqlite_preload: String,
    postgres_preload: String,
}

impl FraudService {
    pub fn load(settings: &Settings) -> Result<Self, ConfigError> {
        Ok(FraudService::new(FraudConfig::load(settings)?))
    }

    pub fn new(config: FraudConfig) -> Self {
        FraudService {
            sqlite_preload: store::preload_sql(Kind::Sqlite, &config.rules),
            postgres_preload: store::preload_sql(Kind::Postgres, &config.rules),
            config,
        }
    }

    pub fn config(&self) -> &FraudConfig {
        &self.config
    }
}

impl Worker for FraudService {
    fn service(&self) -> Service {
        Service::Fraud
    }

    fn handles(&self) -> &'static [ridesaga_schemas::MessageKind] {
        use ridesaga_schemas::MessageKind;
        &[
            MessageKind::BlockRider,
            MessageKind::UnblockRider,
            MessageKind::ReviewRide,
            MessageKind::RideRequested,
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

    fn handle<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        input: &'a Envelope,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandleError>> + Send + 'a {
        handle_as_batch(self, conn, input, now)
    }

    /// Every input's slice of the tables, read in the round trip that opens the batch.
    fn preload(&self, kind: Kind) -> Option<&str> {
        Some(match kind {
            Kind::Sqlite => &self.sqlite_preload,
            Kind::Postgres => &self.postgres_preload,
        })
    }

    fn preload_parameter(&self, inputs: &[runtime::Input<'_>]) -> String {
        // An input that cannot be read is answered by `handle_preloaded`, with its error.
        let read: Vec<_> = inputs
            .iter()
            .filter_map(|input| Some((&input.envelope.id, input_of(input.envelope).ok()?)))
            .collect();
        store::preload_parameter(&read, &self.config.rules)
    }

    /// Applies the inputs one by one, each reading its slice as the inputs before it left it:
    /// the preloaded rows, under what the batch added (`Pending`). What they added is written
    /// by the round trip that commits the batch.
    async fn handle_preloaded<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        inputs: &'a [runtime::Input<'a>],
        rows: Vec<Row>,
    ) -> Result<BatchOutput, BatchError> {
        let rules = &self.config.rules;
        let preloaded = Preloaded::new(rows).map_err(BatchError::Batch)?;
        let mut pending = Pending::default();
        let mut outputs = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            let failed = |error| BatchError::Input { index, error };
            // Completions and reviews read and write `fraud_rides` in place, in input order.
            match &input.envelope.message {
                Message::RideCompleted(m) => {
                    let out = self.completed(conn, input.envelope, m).await;
                    outputs.push(out.map_err(failed)?);
                    continue;
                }
                Message::ReviewRide(m) => {
                    let out = self.reviewed(conn, input.envelope, m, input.now).await;
                    outputs.push(out.map_err(failed)?);
                    continue;
                }
                _ => {}
            }
            let event = input_of(input.envelope).map_err(failed)?;
            let slice = preloaded.of(&input.envelope.id);
            let mut state =
                store::load_for_input(&event, rules, &pending, slice).map_err(failed)?;
            let before = state.clone();
            let effects = domain::handle(&mut state, &event, rules);
            pending.keep(&before, &state, input.now);
            outputs.push(
                effects
                    .into_iter()
                    .map(|effect| envelope(input.envelope, effect))
                    .collect(),
            );
        }
        let writes = pending.writes(conn.kind()).map_err(BatchError::Batch)?;
        Ok(BatchOutput {
            outputs,
            writes,
            effects: Vec::new(),
        })
    }

    async fn tick<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        let pruned =
            store::prune(conn, age_before(now, self.config.retention), PRUNE_BATCH).await?;
        let before = age_before(now, self.config.retention).unix_millis();
        let pruned = pruned + store::rides::prune(conn, before, PRUNE_BATCH).await?;
        if pruned > 0 {
            debug!(pruned, "fraud rows past retention deleted");
        }
        Ok(Vec::new())
    }
}

impl FraudService {
    /// Judges a completed ride once with the fake-ride rules; announces it if flagged.
    async fn completed(
        &self,
        conn: &mut Conn<'_>,
        envelope: &Envelope,
        m: &RideCompleted,
    ) -> Result<Vec<Envelope>, HandleError> {
        let ride_id = saga_of(envelope)?;
        if store::rides::ride(conn, &ride_id).await?.is_some() {
            debug!(%ride_id, "completion judged before");
            return Ok(Vec::new());
        }
        let rules = &self.config.rides;
        let at = envelope.occurred_at.unix_millis();
        let window = (at.saturating_sub(rules.pair_window_ms), at);
        let earlier =
            store::rides::pair_rides(conn, &m.driver_id, &m.rider_id, window, &ride_id).await?;
        let completion = Completion {
            distance_km: m.distance_km,
            route: m.route.as_ref(),
            earlier_pair_rides: earlier,
        };
        let reasons = rides::judge(&completion, rules);
        let ride = FraudRide {
            driver_id: m.driver_id.clone(),
            rider_id: m.rider_id.clone(),
            completed_at_ms: at,
            judged: rides::Judged {
                reasons: reasons.clone(),
                decision: None,
            },
        };
        store::rides::insert(conn, &ride_id, &ride).await?;
        if reasons.is_empty() {
            debug!(%ride_id, "completed ride passed the fake-ride rules");
            return Ok(Vec::new());
        }
        info!(%ride_id, driver_id = %m.driver_id, ?reasons, "completed ride flagged");
        let message = RideFlagged {
            rider_id: m.rider_id.clone(),
            driver_id: m.driver_id.clone(),
            reasons,
        };
        Ok(vec![once_per_ride(envelope, message.into(), ride_id)])
    }

    /// Takes an operator's first decision on a flagged ride and announces it.
    async fn reviewed(
        &self,
        conn: &mut Conn<'_>,
        envelope: &Envelope,
        m: &ReviewRide,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        let ride_id = saga_of(envelope)?;
        let ride = store::rides::ride(conn, &ride_id).await?;
        match rides::review(ride.as_ref().map(|r| &r.judged), m.decision) {
            Review::NotFlagged => {
                warn!(%ride_id, "review of a ride fraud did not flag; ignored");
                Ok(Vec::new())
            }
            Review::AlreadyDecided(first) => {
                info!(%ride_id, first = first.as_str(), "ride reviewed before; the first decision stands");
                Ok(Vec::new())
            }
            Review::Decide(decision) => {
                let Some(ride) = ride else {
                    return Ok(Vec::new());
                };
                store::rides::decide(
                    conn,
                    &ride_id,
                    decision,
                    m.note.as_deref(),
                    now.unix_millis(),
                )
                .await?;
                info!(%ride_id, decision = decision.as_str(), "flagged ride reviewed");
                let message = RideReviewed {
                    rider_id: ride.rider_id,
                    driver_id: ride.driver_id,
                    decision,
                    note: m.note.clone(),
                };
                Ok(vec![once_per_ride(envelope, message.into(), ride_id)])
            }
        }
    }
}

fn saga_of(envelope: &Envelope) -> Result<RideId, HandleError> {
    envelope
        .saga_id
        .clone()
        .ok_or_else(|| HandleError::Permanent(format!("{} without a saga id", envelope.kind())))
}

/// An output that happens once per ride: its id derives from the ride and its type.
fn once_per_ride(cause: &Envelope, message: Message, ride_id: RideId) -> Envelope {
    let mut envelope = Envelope::caused_by(cause, message, "", PRODUCER);
    envelope.id = MessageId::derive_from_key(&format!("{ride_id}/{}", envelope.kind()));
    envelope.saga_id = Some(ride_id);
    envelope
}

/// `age` before `now`; the epoch if that is earlier (a retention of centuries prunes nothing).
fn age_before(now: Timestamp, age: Duration) -> Timestamp {
    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_unix_millis(now.unix_millis().saturating_sub(age_ms).max(0))
}

/// The domain's view of an envelope.
fn input_of(envelope: &Envelope) -> Result<Input, HandleError> {
    let at = envelope.occurred_at.unix_millis();
    let ride_id = || {
        envelope
            .saga_id
            .clone()
            .ok_or_else(|| HandleError::Permanent(format!("{} without a saga id", envelope.kind())))
    };
    match &envelope.message {
        Message::RideRequested(m) => Ok(Input::Requested {
            ride_id: ride_id()?,
            rider_id: m.rider_id.clone(),
            estimated_distance_km: m.estimated_distance_km,
            at,
        }),
        Message::PaymentDeclined(m) => Ok(Input::Declined {
            ride_id: ride_id()?,
            rider_id: m.rider_id.clone(),
            code: m.code.clone(),
            at,
        }),
        Message::BlockRider(m) => Ok(Input::Block {
            rider_id: m.rider_id.clone(),
            reason: m.reason.clone(),
            at,
        }),
        Message::UnblockRider(m) => Ok(Input::Unblock {
            rider_id: m.rider_id.clone(),
            at,
        }),
        other => Err(HandleError::Permanent(format!(
            "the fraud service does not handle {}",
            other.kind()
        ))),
    }
}

fn envelope(cause: &Envelope, effect: Effect) -> Envelope {
    match effect {
        Effect::Scored {
            ride_id,
            rider_id,
            assessment,
        } => {
            let (score, reasons) = (assessment.score, assessment.reasons);
            let message: Message = if assessment.flagged {
                info!(%ride_id, %rider_id, score, ?reasons, "ride flagged");
                FraudFlagged {
                    rider_id,
                    score,
                    reasons,
                }
                .into()
            } else {
                debug!(%ride_id, %rider_id, score, "ride cleared");
                FraudCleared {
                    rider_id,
                    score,
                    reasons,
                }
                .into()
            };
            let mut envelope = Envelope::caused_by(cause, message, "", PRODUCER);
            // One decision per ride, whichever copy of the request made it.
            envelope.id = MessageId::derive_from_key(&format!("{ride_id}/{}", envelope.kind()));
            envelope.saga_id = Some(ride_id);
            envelope
        }
        Effect::BlocklistChanged {
            rider_id,
            blocked,
            reason,
        } => {
            info!(%rider_id, blocked, "blocklist changed");
            let message = RiderBlockChanged {
                rider_id,
                blocked,
                reason,
            };
            let mut envelope = Envelope::caused_by(cause, message, "", PRODUCER);
            envelope.saga_id = None;
            envelope
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_have_defaults_and_bad_ones_are_named() {
        assert_eq!(
            FraudConfig::load(&Settings::default()).unwrap(),
            FraudConfig::default()
        );
        let s = Settings::from_pairs([
            ("RIDESAGA_FRAUD_MAX_REQUESTS", "10"),
            ("RIDESAGA_FRAUD_WINDOW", "2m"),
            ("RIDESAGA_FRAUD_DECLINE_WINDOW", "1h"),
            ("RIDESAGA_FRAUD_FLAG_SCORE", "70"),
        ]);
        let rules = FraudConfig::load(&s).unwrap().rules;
        assert_eq!((rules.max_requests, rules.window_ms), (10, 120_000));
        assert_eq!((rules.decline_window_ms, rules.flag_score), (3_600_000, 70));
        let s = Settings::from_pairs([
            ("RIDESAGA_FRAUD_MAX_SPEED_KMH", "180"),
            ("RIDESAGA_FRAUD_PAIR_RIDES", "3"),
            ("RIDESAGA_FRAUD_PAIR_WINDOW", "24h"),
        ]);
        let rides = FraudConfig::load(&s).unwrap().rides;
        assert_eq!(rides.max_speed_kmh, 180.0);
        assert_eq!((rides.pair_rides, rides.pair_window_ms), (3, 86_400_000));
        // A pair window longer than the retention could never be counted.
        let s = Settings::from_pairs([("RIDESAGA_FRAUD_PAIR_WINDOW", "1440h")]);
        assert!(FraudConfig::load(&s).is_err());
        for (name, value) in [
            ("RIDESAGA_FRAUD_MAX_REQUESTS", "-1"),
            ("RIDESAGA_FRAUD_WINDOW", "0s"),
            ("RIDESAGA_FRAUD_MAX_TRIP_KM", "inf"),
            ("RIDESAGA_FRAUD_MAX_DECLINES", "0"),
            ("RIDESAGA_FRAUD_FLAG_SCORE", "101"),
            ("RIDESAGA_FRAUD_RETENTION", "1h"),
            ("RIDESAGA_FRAUD_MAX_SPEED_KMH", "0"),
            ("RIDESAGA_FRAUD_STILL_RADIUS_M", "NaN"),
            ("RIDESAGA_FRAUD_STILL_FOR", "0s"),
            ("RIDESAGA_FRAUD_PAIR_RIDES", "1"),
            ("RIDESAGA_FRAUD_PAIR_WINDOW", "0s"),
        ] {
            let err = FraudConfig::load(&Settings::from_pairs([(name, value)])).unwrap_err();
            assert_eq!(err.name, name, "{err}");
        }
    }
}
