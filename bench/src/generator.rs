//! The load generator: plays riders and drivers against the running workers, the way `ridectl`
//! would, and times every saga on its own clock.
//!
//! Each saga is `cmd.ride.request`, then `cmd.ride.start` as soon as `evt.ride.confirmed`
//! arrives, then `cmd.ride.complete` as soon as `evt.ride.started` arrives; it ends with
//! `evt.payment.captured` (or a cancellation, rejection or refusal, counted as a failure). Core
//! NATS subscriptions to those events exist before the first command is published. Latencies
//! run from just before a command is published to the moment its event is received here.
//!
//! Two paces: a window (keep `n` sagas in flight, starting one whenever one ends: the maximum
//! rate) and a rate (start sagas on a fixed schedule whatever happens, open loop, with a cap
//! on sagas in flight as a safety net). A phase stops starting sagas after its duration, waits
//! for the open ones, then for every consumer to be empty, so the last notifications are in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use ridesaga_schemas::{
    CompleteRide, DriverId, DriverOnline, Envelope, Message, MessageKind, RegisterDriver,
    RequestRide, RideId, RideState, RiderId, Service, StartRide, parse_subject,
};

use crate::city::{self, Rng};
use crate::consumers;
use crate::results::{Phase, Summary};
use crate::stats::{self, millis};

/// The `producer` of every message the generator publishes.
const PRODUCER: &str = "ridesaga-bench";
/// Events the generator follows.
const EVENTS: [MessageKind; 8] = [
    MessageKind::RideConfirmed,
    MessageKind::RideStarted,
    MessageKind::PaymentCaptured,
    MessageKind::NotificationSent,
    MessageKind::RideCancelled,
    MessageKind::RideRejected,
    MessageKind::RideCommandRefused,
    MessageKind::DriverUpdated,
];

/// How sagas are started.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Keep this many sagas in flight.
    Window(usize),
    /// Start this many sagas per second, skipping a start when `max_in_flight` are open.
    Rate {
        per_second: f64,
        max_in_flight: usize,
    },
}

/// One phase of load.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub pace: Pace,
    /// Sagas are started during this long.
    pub duration: Duration,
    /// How long open sagas and then the consumers may take to finish afterwards.
    pub drain_timeout: Duration,
}

/// What one phase measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub started: u64,
    pub captured: u64,
    /// Sagas that ended otherwise, by how they ended.
    pub failures: BTreeMap<String, u64>,
    /// Sagas still open when the drain timed out.
    pub unfinished: u64,
    /// From the first command to the last event of the phase's sagas (notifications too).
    pub elapsed: Duration,
    /// `cmd.ride.request` published -> `evt.ride.confirmed` received, in ms.
    pub confirm_ms: Vec<f64>,
    /// `cmd.ride.complete` published -> `evt.payment.captured` received, in ms.
    pub capture_ms: Vec<f64>,
    /// `cmd.ride.request` published -> `evt.payment.captured` received, in ms.
    pub saga_ms: Vec<f64>,
    /// Number of sagas by how many notifications were sent for them.
    pub notifications: BTreeMap<u32, u64>,
    /// Rate pace only: starts skipped because `max_in_flight` sagas were open.
    pub skipped_starts: u64,
    pub publish_errors: u64,
    /// Every consumer was empty at the end.
    pub quiet: bool,
}

impl Outcome {
    /// Completed sagas per second over the whole phase.
    pub fn per_second(&self) -> f64 {
        stats::per_second(self.captured, self.elapsed)
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// The phase's figures, its latencies summarised; the server's and the processes' figures
    /// are the caller's to add.
    pub fn into_phase(self, offered_per_s: Option<f64>) -> Phase {
        Phase {
            offered_per_s,
            started: self.started,
            completed: self.captured,
            unfinished: self.unfinished,
            publish_errors: self.publish_errors,
            skipped_starts: self.skipped_starts,
            quiet: self.quiet,
            seconds: self.elapsed.as_secs_f64(),
            per_second: self.per_second(),
            confirm_ms: Summary::of(&self.confirm_ms),
            capture_ms: Summary::of(&self.capture_ms),
            saga_ms: Summary::of(&self.saga_ms),
            notifications: self.notifications,
            failures: self.failures,
            ..Phase::default()
        }
    }
}

/// Ride requests stored while no worker runs, not yet followed.
#[derive(Debug)]
pub struct Backlog {
    sagas: HashMap<String, Saga>,
    /// Messages waiting for the ride service once they were all stored.
    pub waiting: u64,
}

impl Backlog {
    pub fn len(&self) -> usize {
        self.sagas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sagas.is_empty()
    }
}

#[derive(Debug)]
struct Saga {
    requested: Instant,
    confirmed: Option<Instant>,
    complete_sent: Option<Instant>,
    captured: Option<Instant>,
    notifications: u32,
    open: bool,
}

/// The generator: one NATS connection, its event subscriptions and its random source.
#[derive(Debug)]
pub struct Generator {
    js: jetstream::Context,
    events: SelectAll<async_nats::Subscriber>,
    rng: Rng,
    publish_errors: Arc<AtomicU64>,
}

impl Generator {
    /// Subscribes to the events it follows (and makes sure the server has the subscriptions)
    /// before anything is published.
    pub async fn connect(client: async_nats::Client) -> anyhow::Result<Generator> {
        let mut events = SelectAll::new();
        for kind in EVENTS {
            let subscriber = client
                .subscribe(format!("{kind}.*"))
                .await
                .with_context(|| format!("subscribing to {kind}.*"))?;
            events.push(subscriber);
        }
        client.flush().await.context("flushing subscriptions")?;
        Ok(Generator {
            js: jetstream::new(client),
            events,
            rng: Rng::new(0x5eed),
            publish_errors: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Publishes `envelope` with its `Nats-Msg-Id`; the publish ack is awaited in the
    /// background (a failure is counted), so the generator never waits on the server.
    async fn send(&self, envelope: &Envelope) {
        let publish = PublishMessage::build()
            .payload(envelope.encode().into())
            .message_id(envelope.id.as_str());
        match self.js.send_publish(envelope.subject(), publish).await {
            Ok(ack) => {
                let errors = self.publish_errors.clone();
                tokio::spawn(async move {
                    if ack.await.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            Err(_) => {
                self.publish_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Registers `count` drivers around the city centre, waits until the driver service knows
    /// them all, then brings them online and waits until it reports every one of them online.
    /// (Two waves, so no online command arrives before its driver's registration.)
    pub async fn bring_drivers_online(
        &mut self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut drivers = Vec::with_capacity(count);
        for n in 0..count {
            let driver_id = DriverId::generate();
            let location = city::near_center(&mut self.rng, city::DRIVER_SPREAD_KM);
            let register = RegisterDriver {
                driver_id: driver_id.clone(),
                name: format!("Bench driver {n}"),
                location,
                email: None,
                phone: None,
            };
            self.send(&Envelope::new(register, None, PRODUCER)).await;
            drivers.push(driver_id);
        }
        self.await_driver_updates(&drivers, false, deadline).await?;
        for driver_id in &drivers {
            let online = DriverOnline {
                driver_id: driver_id.clone(),
                location: None,
            };
            self.send(&Envelope::new(online, None, PRODUCER)).await;
        }
        self.await_driver_updates(&drivers, true, deadline).await
    }

    /// Waits for an `evt.driver.updated` of every driver in `drivers`; with `online`, only
    /// updates that say the driver is online count.
    async fn await_driver_updates(
        &mut self,
        drivers: &[DriverId],
        online: bool,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<()> {
        let mut waiting: HashSet<&str> = drivers.iter().map(DriverId::as_str).collect();
        while !waiting.is_empty() {
            let message = match tokio::time::timeout_at(deadline, self.events.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => bail!("the event subscriptions ended"),
                Err(_) => bail!(
                    "{} of {} drivers were not {} in time",
                    waiting.len(),
                    drivers.len(),
                    if online { "online" } else { "registered" }
                ),
            };
            if let Ok(envelope) = Envelope::decode(&message.subject, &message.payload)
                && let Message::DriverUpdated(update) = &envelope.message
                && (update.online || !online)
            {
                waiting.remove(update.driver_id.as_str());
            }
        }
        Ok(())
    }

    /// Starts one saga: a new rider requests a trip inside the city.
    async fn request(&mut self, sagas: &mut HashMap<String, Saga>) {
        let ride_id = RideId::generate();
        let (pickup, dropoff) = city::trip(&mut self.rng);
        let request = RequestRide {
            // A new rider each time: the fraud service's velocity rule limits requests per rider.
            rider_id: RiderId::generate(),
            pickup,
            dropoff,
            payment_token: "tok_visa".into(),
        };
        let envelope = Envelope::new(request, Some(ride_id.clone()), PRODUCER);
        let requested = Instant::now();
        self.send(&envelope).await;
        sagas.insert(
            ride_id.to_string(),
            Saga {
                requested,
                confirmed: None,
                complete_sent: None,
                captured: None,
                notifications: 0,
                open: true,
            },
        );
    }

    /// Publishes `count` ride requests and waits until the server has stored every one, for
    /// workers that are not running yet: a backlog that [`Generator::drain`] then follows.
    pub async fn queue_requests(&mut self, count: u64) -> anyhow::Result<Backlog> {
        let errors_before = self.publish_errors.load(Ordering::Relaxed);
        let mut sagas = HashMap::new();
        for _ in 0..count {
            self.request(&mut sagas).await;
        }
        // Each request's ack is awaited in the background; the ride service's consumer counts
        // what was stored.
        let deadline = Instant::now() + Duration::from_secs(30);
        let stored = loop {
            let errors = self.publish_errors.load(Ordering::Relaxed) - errors_before;
            if errors > 0 {
                bail!("{errors} of {count} ride requests were not stored by the server");
            }
            let pending = consumers::snapshot(&self.js).await?;
            let waiting = pending.get(&Service::Ride).map_or(0, |c| c.pending);
            if waiting >= count {
                break waiting;
            }
            if Instant::now() >= deadline {
                bail!("only {waiting} of {count} ride requests are waiting for the ride service");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Backlog {
            sagas,
            waiting: stored,
        })
    }

    /// Follows a backlog queued with [`Generator::queue_requests`] to its end, as a phase does
    /// once it stops starting sagas: each saga is started and completed as its events arrive,
    /// until every one has ended and every consumer is empty, or `drain_timeout` has passed.
    /// `from` is when the workers were started: the outcome's times (`elapsed`, the latencies
    /// of confirmation and of the whole saga) run from it.
    pub async fn drain(
        &mut self,
        backlog: Backlog,
        from: Instant,
        drain_timeout: Duration,
        health: &mut dyn FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<Outcome> {
        let mut sagas = backlog.sagas;
        for saga in sagas.values_mut() {
            saga.requested = from;
        }
        let plan = Plan {
            pace: Pace::Window(0),
            duration: Duration::ZERO,
            drain_timeout,
        };
        self.follow(plan, sagas, health).await
    }

    /// Runs one phase. `health` is called every 100 ms and ends the phase with its error (a
    /// worker that died, say).
    pub async fn run(
        &mut self,
        plan: Plan,
        health: &mut dyn FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<Outcome> {
        self.follow(plan, HashMap::new(), health).await
    }

    /// A phase over `sagas` already started and those `plan` starts.
    async fn follow(
        &mut self,
        plan: Plan,
        mut sagas: HashMap<String, Saga>,
        health: &mut dyn FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<Outcome> {
        let errors_before = self.publish_errors.load(Ordering::Relaxed);
        let mut out = Outcome {
            started: sagas.len() as u64,
            ..Outcome::default()
        };
        let mut open = sagas.len();
        let start = Instant::now();
        let stop_starting = start + plan.duration;
        let drain_deadline = stop_starting + plan.drain_timeout;
        let mut last_event = start;
        let mut next_start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut quiet_ticks = 0;

        loop {
            let now = Instant::now();
            let starting = now < stop_starting;
            if let (true, Pace::Window(window)) = (starting, plan.pace) {
                while open < window {
                    self.request(&mut sagas).await;
                    out.started += 1;
                    open += 1;
                }
            }
            let rate = match plan.pace {
                Pace::Rate {
                    per_second,
                    max_in_flight,
                } if starting => Some((per_second, max_in_flight)),
                _ => None,
            };
            tokio::select! {
                message = self.events.next() => {
                    let Some(message) = message else { bail!("the event subscriptions ended") };
                    let now = Instant::now();
                    let Ok((kind, id)) = parse_subject(&message.subject) else { continue };
                    let Some(saga) = sagas.get_mut(id) else { continue };
                    last_event = now;
                    match kind {
                        MessageKind::RideConfirmed if saga.confirmed.is_none() => {
                            saga.confirmed = Some(now);
                            out.confirm_ms.push(millis(saga.requested, now));
                            let ride = RideId::parse(id)?;
                            self.send(&Envelope::new(StartRide {}, Some(ride), PRODUCER)).await;
                        }
                        MessageKind::RideStarted if saga.complete_sent.is_none() => {
                            let ride = RideId::parse(id)?;
                            let complete = CompleteRide {
                                distance_km: None,
                                duration_min: Some(12.0),
                            };
                            saga.complete_sent = Some(Instant::now());
                            self.send(&Envelope::new(complete, Some(ride), PRODUCER)).await;
                        }
                        MessageKind::PaymentCaptured if saga.open => {
                            saga.open = false;
                            saga.captured = Some(now);
                            open -= 1;
                            out.captured += 1;
                            if let Some(sent) = saga.complete_sent {
                                out.capture_ms.push(millis(sent, now));
                            }
                            out.saga_ms.push(millis(saga.requested, now));
                        }
                        MessageKind::NotificationSent => saga.notifications += 1,
                        MessageKind::RideCancelled
                        | MessageKind::RideRejected
                        | MessageKind::RideCommandRefused
                            if saga.open =>
                        {
                            saga.open = false;
                            open -= 1;
                            let why = failure(&message.subject, &message.payload);
                            *out.failures.entry(why).or_default() += 1;
                        }
                        _ => {}
                    }
                }
                _ = tokio::time::sleep_until(next_start), if rate.is_some() => {
                    let (per_second, max_in_flight) = rate.unwrap_or((1.0, 0));
                    next_start += Duration::from_secs_f64(1.0 / per_second.max(0.001));
                    if open < max_in_flight {
                        self.request(&mut sagas).await;
                        out.started += 1;
                        open += 1;
                    } else {
                        out.skipped_starts += 1;
                    }
                }
                _ = tick.tick() => {
                    health()?;
                    if starting {
                        continue;
                    }
                    if now >= drain_deadline {
                        out.unfinished = open as u64;
                        break;
                    }
                    if open > 0 {
                        continue;
                    }
                    if consumers::is_quiet(&consumers::snapshot(&self.js).await?) {
                        quiet_ticks += 1;
                        if quiet_ticks >= 2 {
                            out.quiet = true;
                            break;
                        }
                    } else {
                        quiet_ticks = 0;
                    }
                }
            }
        }

        let first = sagas.values().map(|s| s.requested).min().unwrap_or(start);
        out.elapsed = last_event.saturating_duration_since(first);
        for saga in sagas.values().filter(|s| s.captured.is_some()) {
            *out.notifications.entry(saga.notifications).or_default() += 1;
        }
        out.publish_errors = self.publish_errors.load(Ordering::Relaxed) - errors_before;
        Ok(out)
    }
}

/// How a saga that did not complete ended, for the report: `cancelled (no_driver)`,
/// `rejected (...)` or `refused cmd.ride.start: ...`.
fn failure(subject: &str, payload: &[u8]) -> String {
    match Envelope::decode(subject, payload).map(|e| e.message) {
        Ok(Message::RideCancelled(c)) => {
            format!("{} ({})", RideState::Cancelled, c.reason.as_str())
        }
        Ok(Message::RideRejected(r)) => {
            format!("{} ({})", RideState::Rejected, r.reasons.join(", "))
        }
        Ok(Message::RideCommandRefused(r)) => format!("refused {}: {}", r.command, r.reason),
        Ok(other) => format!("ended with {}", other.kind()),
        Err(e) => format!("undecodable event on {subject}: {e}"),
    }
}
