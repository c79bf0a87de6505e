//! Driver matching as pure logic: the drivers and rides this service knows, and what each input
//! does to them. No I/O and no clock: the caller passes `now`, the store loads the part of the
//! state an input can touch, [`handle`] or [`tick`] change it and say what to publish, and the
//! store writes back what changed.
//!
//! Rules:
//! - A ride is matched once both its request and its fraud clearance have arrived (either
//!   order), before its match deadline: it reserves the nearest available (online, unreserved)
//!   driver within the radius, ties broken by driver id.
//! - A driver that becomes available (registered, online, moved, released) takes the waiting
//!   ride in range with the earliest deadline.
//! - An ending message (cancelled, rejected, completed, payment declined) releases the ride's
//!   driver, once. Before any assignment it leaves a tombstone: the ride never gets a driver.
//! - A requested ride still waiting at its deadline becomes unavailable, once, whether it waits
//!   for a driver or for its fraud clearance.
//! - Driver commands are last-writer-wins per field by the command's `occurred_at`, so a late
//!   redelivery never undoes a newer command. A reserved driver who goes offline stays reserved
//!   until released.
//! - Schedules are opt-in: a driver without one may be matched whenever available. A driver
//!   with one is matched to a ride only while on shift, and only if the shift lasts at least
//!   the estimated time to the pickup and then the trip ([`shift_allows`]). A shift's end, or a
//!   new schedule, never releases a driver already reserved: only the ride's end does.

use std::collections::BTreeMap;

use ridesaga_schemas::{DriverId, DriverSchedule, GeoPoint, RideId, RiderId, Timestamp};

/// How rides and drivers are matched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchRules {
    /// Largest great-circle distance from a driver to a pickup, in kilometres.
    pub radius_km: f64,
    /// The average speed that turns distances into the time a ride takes, in km/h.
    pub average_speed_kmh: f64,
}

/// A registered driver.
#[derive(Debug, Clone, PartialEq)]
pub struct Driver {
    pub id: DriverId,
    pub name: String,
    pub location: GeoPoint,
    pub online: bool,
    /// The ride this driver is reserved for. One column: a driver cannot hold two rides.
    pub current_ride: Option<RideId>,
    /// `occurred_at` (Unix ms) of the newest command applied to the name, to `online` and to
    /// the location.
    pub name_at: i64,
    pub online_at: i64,
    pub location_at: i64,
    /// When the driver works; none: whenever online.
    pub schedule: Option<DriverSchedule>,
    /// `occurred_at` (Unix ms) of the newest schedule command applied.
    pub schedule_at: i64,
}

impl Driver {
    /// Online and not reserved.
    pub fn is_available(&self) -> bool {
        self.online && self.current_ride.is_none()
    }
}

/// What `evt.ride.requested` tells this service.
#[derive(Debug, Clone, PartialEq)]
pub struct RideRequest {
    pub rider_id: RiderId,
    pub pickup: GeoPoint,
    /// Whole milliseconds, as stored.
    pub match_deadline: Timestamp,
    /// The planned trip from the pickup to the drop-off, in km.
    pub trip_km: f64,
}

/// Where a ride is, as far as drivers are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for its request, its clearance or a driver.
    Waiting,
    Assigned {
        driver_id: DriverId,
    },
    /// Ended after its assignment; the driver was released.
    Released {
        driver_id: DriverId,
        reason: String,
    },
    /// Ended before any assignment: a tombstone, so no driver is ever reserved for it.
    Closed {
        reason: String,
    },
    /// Its deadline passed without a driver.
    Unavailable,
}

impl Stage {
    /// The stage's name as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::Waiting => "waiting",
            Stage::Assigned { .. } => "assigned",
            Stage::Released { .. } => "released",
            Stage::Closed { .. } => "closed",
            Stage::Unavailable => "unavailable",
        }
    }
}

/// A ride this service heard of.
#[derive(Debug, Clone, PartialEq)]
pub struct Ride {
    pub id: RideId,
    pub request: Option<RideRequest>,
    pub cleared: bool,
    pub stage: Stage,
}

impl Ride {
    pub fn new(id: RideId) -> Self {
        Ride {
            id,
            request: None,
            cleared: false,
            stage: Stage::Waiting,
        }
    }

    /// The request, when the ride may be matched at `now`.
    pub fn matchable(&self, now: Timestamp) -> Option<&RideRequest> {
        let request = self.request.as_ref()?;
        let ready = self.stage == Stage::Waiting && self.cleared && now < request.match_deadline;
        ready.then_some(request)
    }

    /// What a request or a clearance tells about the ride itself: the first request stays, a
    /// clearance stays cleared. Other inputs leave the ride alone.
    fn record(&mut self, input: &Input) {
        match input {
            Input::Requested { request, .. } if self.request.is_none() => {
                self.request = Some(request.clone());
            }
            Input::Cleared { .. } => self.cleared = true,
            _ => {}
        }
    }

    /// Whether the ride is still waiting at or after its deadline.
    pub fn is_due(&self, now: Timestamp) -> bool {
        self.stage == Stage::Waiting
            && self
                .request
                .as_ref()
                .is_some_and(|r| r.match_deadline <= now)
    }
}

/// The drivers and rides an input can touch (the store loads this slice), or all of them (tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub drivers: BTreeMap<DriverId, Driver>,
    pub rides: BTreeMap<RideId, Ride>,
}

/// One input, already taken out of its envelope. `at` is the envelope's `occurred_at` in Unix ms.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Register {
        driver_id: DriverId,
        name: String,
        location: GeoPoint,
        at: i64,
    },
    Online {
        driver_id: DriverId,
        location: Option<GeoPoint>,
        at: i64,
    },
    Offline {
        driver_id: DriverId,
        at: i64,
    },
    Move {
        driver_id: DriverId,
        location: GeoPoint,
        at: i64,
    },
    /// A new schedule, or none to clear it.
    Schedule {
        driver_id: DriverId,
        schedule: Option<DriverSchedule>,
        at: i64,
    },
    Requested {
        ride_id: RideId,
        request: RideRequest,
    },
    Cleared {
        ride_id: RideId,
    },
    /// Cancelled, rejected, completed or payment declined: the ride needs no driver any more.
    Ended {
        ride_id: RideId,
        reason: String,
    },
}

impl Input {
    /// The ride the input is about; none for a driver's own command.
    pub fn ride_id(&self) -> Option<&RideId> {
        match self {
            Input::Requested { ride_id, .. }
            | Input::Cleared { ride_id }
            | Input::Ended { ride_id, .. } => Some(ride_id),
            Input::Register { .. }
            | Input::Online { .. }
            | Input::Offline { .. }
            | Input::Move { .. }
            | Input::Schedule { .. } => None,
        }
    }
}

/// What to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    DriverUpdated {
        driver_id: DriverId,
        name: String,
        online: bool,
        location: GeoPoint,
    },
    /// The driver's schedule as it stands after a schedule command.
    ScheduleChanged {
        driver_id: DriverId,
        schedule: Option<DriverSchedule>,
    },
    Assigned {
        ride_id: RideId,
        rider_id: RiderId,
        driver_id: DriverId,
        driver_name: String,
        pickup_distance_km: f64,
    },
    Released {
        ride_id: RideId,
        driver_id: DriverId,
        reason: String,
    },
    Unavailable {
        ride_id: RideId,
        rider_id: RiderId,
        reason: String,
    },
}

/// An input that cannot be applied yet.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriverError {
    /// A command for a driver not registered: its registration may still be on its way.
    #[error("driver {0} is not registered (yet)")]
    UnknownDriver(DriverId),
}

/// Applies one input.
pub fn handle(
    state: &mut State,
    input: &Input,
    now: Timestamp,
    rules: &MatchRules,
) -> Result<Vec<Effect>, DriverError> {
    let mut out = Vec::new();
    match input {
        Input::Register {
            driver_id,
            name,
            location,
            at,
        } => {
            let driver = state
                .drivers
                .entry(driver_id.clone())
                .or_insert_with(|| Driver {
                    id: driver_id.clone(),
                    name: name.clone(),
                    location: *location,
                    online: false,
                    current_ride: None,
                    name_at: *at,
                    online_at: *at,
                    location_at: *at,
                    schedule: None,
                    schedule_at: 0,
                });
            if *at >= driver.name_at {
                driver.name.clone_from(name);
                driver.name_at = *at;
            }
            set_location(driver, *location, *at);
            out.push(updated(driver));
            offer_driver(state, driver_id, now, rules, &mut out);
        }
        Input::Online {
            driver_id,
            location,
            at,
        } => {
            let driver = known_driver(state, driver_id)?;
            set_online(driver, true, *at);
            if let Some(location) = location {
                set_location(driver, *location, *at);
            }
            out.push(updated(driver));
            offer_driver(state, driver_id, now, rules, &mut out);
        }
        Input::Offline { driver_id, at } => {
            let driver = known_driver(state, driver_id)?;
            set_online(driver, false, *at);
            out.push(updated(driver));
        }
        Input::Move {
            driver_id,
            location,
            at,
        } => {
            let driver = known_driver(state, driver_id)?;
            set_location(driver, *location, *at);
            out.push(updated(driver));
            offer_driver(state, driver_id, now, rules, &mut out);
        }
        Input::Schedule {
            driver_id,
            schedule,
            at,
        } => {
            let driver = known_driver(state, driver_id)?;
            if *at >= driver.schedule_at {
                driver.schedule.clone_from(schedule);
                driver.schedule_at = *at;
            }
            out.push(Effect::ScheduleChanged {
                driver_id: driver_id.clone(),
                schedule: driver.schedule.clone(),
            });
            offer_driver(state, driver_id, now, rules, &mut out);
        }
        Input::Requested { ride_id, .. } | Input::Cleared { ride_id } => {
            ride_entry(state, ride_id).record(input);
            settle_ride(state, ride_id, now, rules, &mut out);
        }
        Input::Ended { ride_id, reason } => end_ride(state, ride_id, reason, now, rules, &mut out),
    }
    Ok(out)
}

/// Runs timers: rides waiting at their deadline become unavailable, and waiting rides are
/// offered the drivers in range again (earliest deadline first).
pub fn tick(state: &mut State, now: Timestamp, rules: &MatchRules) -> Vec<Effect> {
    let mut out = Vec::new();
    let due: Vec<RideId> = state
        .rides
        .values()
        .filter(|r| r.is_due(now))
        .map(|r| r.id.clone())
        .collect();
    for ride_id in due {
        settle_ride(state, &ride_id, now, rules, &mut out);
    }
    let mut waiting: Vec<(Timestamp, RideId)> = state
        .rides
        .values()
        .filter_map(|r| {
            r.matchable(now)
                .map(|req| (req.match_deadline, r.id.clone()))
        })
        .collect();
    waiting.sort();
    for (_, ride_id) in waiting {
        settle_ride(state, &ride_id, now, rules, &mut out);
    }
    out
}

/// The request of the ride where `input` may reserve an available driver (its pickup is where
/// to search), given the ride it names as stored (`None`:
/// not stored yet): the pickup, when the input is a request or a clearance after which the ride
/// is waiting, cleared and before its deadline. Every other input reserves no driver for its
/// ride, so the store searches for available drivers only where this says.
pub fn pickup_to_match(
    stored: Option<&Ride>,
    input: &Input,
    now: Timestamp,
) -> Option<RideRequest> {
    if !matches!(input, Input::Requested { .. } | Input::Cleared { .. }) {
        return None;
    }
    // Not stored yet: the input brings either the request or the clearance, never both.
    let mut ride = stored?.clone();
    ride.record(input);
    ride.matchable(now).cloned()
}

/// Whether ending `ride` leaves `driver` (its driver) available to take a waiting ride: only
/// then does the store load the rides near them.
pub fn ending_frees(ride: &Ride, driver: &Driver) -> bool {
    let holds_ride =
        matches!(&ride.stage, Stage::Assigned { driver_id } if *driver_id == driver.id);
    holds_ride && driver.online && driver.current_ride.as_ref().is_none_or(|r| *r == ride.id)
}

/// Whether `driver`'s schedule lets them take `request` at `now`: always without a schedule;
/// with one, only inside a shift that lasts at least the time to drive to the pickup and then
/// the planned trip at the rules' average speed (touching or overlapping windows and shifts
/// count as one shift).
pub fn shift_allows(
    driver: &Driver,
    request: &RideRequest,
    now: Timestamp,
    rules: &MatchRules,
) -> bool {
    let Some(schedule) = &driver.schedule else {
        return true;
    };
    // A stored schedule was checked on its way in; one that no longer compiles (a zone the
    // database dropped) keeps its driver off shift rather than unrestricted.
    let Ok(shifts) = schedule.compile() else {
        return false;
    };
    let now_ms = now.unix_millis();
    let km = driver.location.distance_km(&request.pickup) + request.trip_km;
    shifts
        .on_shift_until(now_ms)
        .is_some_and(|end| end - now_ms >= trip_ms(km, rules))
}

/// How long `km` take at the rules' average speed, in whole milliseconds (rounded up).
pub fn trip_ms(km: f64, rules: &MatchRules) -> i64 {
    let ms = (km.max(0.0) / rules.average_speed_kmh * 3_600_000.0).ceil();
    if ms.is_finite() && ms < i64::MAX as f64 {
        ms as i64
    } else {
        i64::MAX
    }
}

fn known_driver<'s>(state: &'s mut State, id: &DriverId) -> Result<&'s mut Driver, DriverError> {
    state
        .drivers
        .get_mut(id)
        .ok_or_else(|| DriverError::UnknownDriver(id.clone()))
}

fn ride_entry<'s>(state: &'s mut State, id: &RideId) -> &'s mut Ride {
    state
        .rides
        .entry(id.clone())
        .or_insert_with(|| Ride::new(id.clone()))
}

fn set_online(driver: &mut Driver, online: bool, at: i64) {
    if at >= driver.online_at {
        driver.online = online;
        driver.online_at = at;
    }
}

fn set_location(driver: &mut Driver, location: GeoPoint, at: i64) {
    if at >= driver.location_at {
        driver.location = location;
        driver.location_at = at;
    }
}

fn updated(driver: &Driver) -> Effect {
    Effect::DriverUpdated {
        driver_id: driver.id.clone(),
        name: driver.name.clone(),
        online: driver.online,
        location: driver.location,
    }
}

/// A ride whose request or clearance just arrived, or whose timer runs: expire it if due, else
/// reserve the nearest available driver in range if it may be matched.
fn settle_ride(
    state: &mut State,
    ride_id: &RideId,
    now: Timestamp,
    rules: &MatchRules,
    out: &mut Vec<Effect>,
) {
    let Some(ride) = state.rides.get_mut(ride_id) else {
        return;
    };
    if ride.is_due(now) {
        ride.stage = Stage::Unavailable;
        if let Some(request) = &ride.request {
            let reason = if ride.cleared {
                format!(
                    "no driver available within {} km before the match deadline",
                    rules.radius_km
                )
            } else {
                "no fraud clearance before the match deadline".to_owned()
            };
            out.push(Effect::Unavailable {
                ride_id: ride_id.clone(),
                rider_id: request.rider_id.clone(),
                reason,
            });
        }
        return;
    }
    let Some(request) = ride.matchable(now) else {
        return;
    };
    let pickup = request.pickup;
    let nearest = state
        .drivers
        .values()
        .filter(|d| d.is_available() && shift_allows(d, request, now, rules))
        .map(|d| (d.location.distance_km(&pickup), &d.id))
        .filter(|(km, _)| *km <= rules.radius_km)
        .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(km, id)| (km, id.clone()));
    if let Some((km, driver_id)) = nearest {
        reserve(state, ride_id, &driver_id, km, out);
    }
}

/// A driver who may have become available: reserve them for the waiting ride in range with the
/// earliest deadline.
fn offer_driver(
    state: &mut State,
    driver_id: &DriverId,
    now: Timestamp,
    rules: &MatchRules,
    out: &mut Vec<Effect>,
) {
    let Some(driver) = state.drivers.get(driver_id).filter(|d| d.is_available()) else {
        return;
    };
    let best = state
        .rides
        .values()
        .filter_map(|r| r.matchable(now).map(|req| (req, &r.id)))
        .filter(|(req, _)| shift_allows(driver, req, now, rules))
        .map(|(req, id)| {
            (
                req.match_deadline,
                id,
                driver.location.distance_km(&req.pickup),
            )
        })
        .filter(|(_, _, km)| *km <= rules.radius_km)
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, id, km)| (id.clone(), km));
    if let Some((ride_id, km)) = best {
        reserve(state, &ride_id, driver_id, km, out);
    }
}

/// Both sides of a reservation, and the event that announces it. Callers have checked that the
/// ride may be matched and the driver is available.
fn reserve(
    state: &mut State,
    ride_id: &RideId,
    driver_id: &DriverId,
    km: f64,
    out: &mut Vec<Effect>,
) {
    let (Some(ride), Some(driver)) = (
        state.rides.get_mut(ride_id),
        state.drivers.get_mut(driver_id),
    ) else {
        return;
    };
    let Some(request) = &ride.request else { return };
    if ride.stage != Stage::Waiting || !driver.is_available() {
        return;
    }
    ride.stage = Stage::Assigned {
        driver_id: driver_id.clone(),
    };
    driver.current_ride = Some(ride_id.clone());
    out.push(Effect::Assigned {
        ride_id: ride_id.clone(),
        rider_id: request.rider_id.clone(),
        driver_id: driver_id.clone(),
        driver_name: driver.name.clone(),
        pickup_distance_km: km,
    });
}

fn end_ride(
    state: &mut State,
    ride_id: &RideId,
    reason: &str,
    now: Timestamp,
    rules: &MatchRules,
    out: &mut Vec<Effect>,
) {
    let ride = ride_entry(state, ride_id);
    match &ride.stage {
        Stage::Waiting => {
            ride.stage = Stage::Closed {
                reason: reason.to_owned(),
            }
        }
        Stage::Assigned { driver_id } => {
            let driver_id = driver_id.clone();
            ride.stage = Stage::Released {
                driver_id: driver_id.clone(),
                reason: reason.to_owned(),
            };
            if let Some(driver) = state.drivers.get_mut(&driver_id)
                && driver.current_ride.as_ref() == Some(ride_id)
            {
                driver.current_ride = None;
            }
            out.push(Effect::Released {
                ride_id: ride_id.clone(),
                driver_id: driver_id.clone(),
                reason: reason.to_owned(),
            });
            offer_driver(state, &driver_id, now, rules, out);
        }
        Stage::Released { .. } | Stage::Closed { .. } | Stage::Unavailable => {}
    }
}

/// A latitude/longitude box that contains every point within a radius of its centre: the SQL
/// prefilter before the exact great-circle distance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundingBox {
    pub min_lat: f64,
    pub max_lat: f64,
    pub min_lng: f64,
    pub max_lng: f64,
}

impl BoundingBox {
    /// Mean earth radius in kilometres, as [`GeoPoint::distance_km`] uses.
    const EARTH_RADIUS_KM: f64 = 6371.0088;
    /// Widens the box a little so that rounding never drops a point on its edge.
    const SLACK: f64 = 1.0 + 1e-6;

    pub fn around(center: GeoPoint, radius_km: f64) -> Self {
        let angle = (radius_km / Self::EARTH_RADIUS_KM) * Self::SLACK;
        let min_lat = center.lat - angle.to_degrees();
        let max_lat = center.lat + angle.to_degrees();
        // The widest longitude offset of a circle at this latitude; the whole circle of longitudes
        // when the circle reaches a pole or crosses the antimeridian (rare, and still correct).
        let ratio = angle.sin() / center.lat.to_radians().cos();
        let full = BoundingBox {
            min_lat: min_lat.max(-90.0),
            max_lat: max_lat.min(90.0),
            min_lng: -180.0,
            max_lng: 180.0,
        };
        if min_lat <= -90.0
            || max_lat >= 90.0
            || angle >= std::f64::consts::FRAC_PI_2
            || ratio.is_nan()
            || ratio >= 1.0
        {
            return full;
        }
        let dlng = ratio.asin().to_degrees() * Self::SLACK;
        let (min_lng, max_lng) = (center.lng - dlng, center.lng + dlng);
        if min_lng < -180.0 || max_lng > 180.0 {
            return full;
        }
        BoundingBox {
            min_lat,
            max_lat,
            min_lng,
            max_lng,
        }
    }

    pub fn contains(&self, p: GeoPoint) -> bool {
        (self.min_lat..=self.max_lat).contains(&p.lat)
            && (self.min_lng..=self.max_lng).contains(&p.lng)
    }
}

#[cfg(test)]
mod tests;
