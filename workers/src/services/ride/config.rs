//! The ride service's settings: how long a ride may wait for a driver and a payment hold, and
//! a confirmed ride for its driver and rider, the fare table, and the sanity limits a request
//! must pass.

use std::time::Duration;

use ridesaga_schemas::FareBreakdown;

use crate::config::{ConfigError, Settings};

/// Average speed assumed to turn a planned distance into a planned duration for the estimate.
pub const ESTIMATE_SPEED_KMH: f64 = 30.0;
/// Pickup and dropoff closer than this are the same place, not a trip.
pub const MIN_TRIP_KM: f64 = 0.05;

/// What a ride costs: a base fare plus a price per kilometre and per minute, in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fares {
    pub base_cents: u64,
    pub per_km_cents: u64,
    pub per_min_cents: u64,
    /// The surge multiplier in percent (100: none), applied to base, distance and time.
    pub surge_percent: u64,
}

/// Highest surge accepted: five times the fare.
pub const MAX_SURGE_PERCENT: u64 = 500;

impl Fares {
    /// The fare for a trip, rounded to the nearest cent.
    pub fn fare_cents(&self, distance_km: f64, duration_min: f64) -> u64 {
        self.breakdown(distance_km, duration_min).total_cents
    }

    /// The fare for a trip and its parts, each in whole cents and adding up to the total: the
    /// time part takes what rounding the sum leaves (a cent that rounding gave the distance
    /// is taken back from it when there is no time), the surge is the multiplier's share of
    /// the rounded sum.
    pub fn breakdown(&self, distance_km: f64, duration_min: f64) -> FareBreakdown {
        let distance_exact = self.per_km_cents as f64 * distance_km.max(0.0);
        let time_exact = self.per_min_cents as f64 * duration_min.max(0.0);
        // `as` saturates, and the inputs are validated to be finite and bounded.
        let unsurged = (self.base_cents as f64 + distance_exact + time_exact).round() as u64;
        let distance_cents = (distance_exact.round() as u64).min(unsurged - self.base_cents);
        let time_cents = unsurged - self.base_cents - distance_cents;
        let surge = self.surge_percent.saturating_sub(100) as f64 / 100.0;
        let surge_cents = (unsurged as f64 * surge).round() as u64;
        FareBreakdown {
            base_cents: self.base_cents,
            distance_cents,
            time_cents,
            surge_cents,
            total_cents: unsurged + surge_cents,
        }
    }

    /// The fare for the planned route at [`ESTIMATE_SPEED_KMH`]: the amount held.
    pub fn estimate_cents(&self, distance_km: f64) -> u64 {
        self.fare_cents(distance_km, distance_km / ESTIMATE_SPEED_KMH * 60.0)
    }
}

/// Everything the ride state machine is parameterised by.
#[derive(Debug, Clone, PartialEq)]
pub struct RideConfig {
    /// `RIDESAGA_MATCH_DEADLINE`: a driver must be assigned within this time of the request.
    pub match_deadline: Duration,
    /// `RIDESAGA_CONFIRM_GRACE`: extra time after the match deadline for the payment hold;
    /// a ride still unconfirmed then expires.
    pub confirm_grace: Duration,
    /// `RIDESAGA_PICKUP_DEADLINE`: after confirmation, the driver must report arrival or start
    /// the ride within this time, or the ride is cancelled (driver_no_show).
    pub pickup_deadline: Duration,
    /// `RIDESAGA_RIDER_WAIT`: after the driver's arrival, the ride must start within this
    /// time, or it is cancelled (rider_no_show).
    pub rider_wait: Duration,
    /// `RIDESAGA_FARE_BASE_CENTS`, `RIDESAGA_FARE_PER_KM_CENTS`, `RIDESAGA_FARE_PER_MIN_CENTS`.
    pub fares: Fares,
    /// `RIDESAGA_MAX_TRIP_KM`: longest planned trip accepted (great-circle distance).
    pub max_trip_km: f64,
}

impl Default for RideConfig {
    fn default() -> Self {
        RideConfig {
            match_deadline: Duration::from_secs(30),
            confirm_grace: Duration::from_secs(15),
            pickup_deadline: Duration::from_secs(20 * 60),
            rider_wait: Duration::from_secs(5 * 60),
            fares: Fares {
                base_cents: 250,
                per_km_cents: 120,
                per_min_cents: 30,
                surge_percent: 100,
            },
            max_trip_km: 200.0,
        }
    }
}

impl RideConfig {
    /// Reads the settings, each defaulting to [`RideConfig::default`].
    pub fn load(s: &Settings) -> Result<Self, ConfigError> {
        let d = RideConfig::default();
        let max_trip_km: f64 = s.get("RIDESAGA_MAX_TRIP_KM", d.max_trip_km)?;
        if !max_trip_km.is_finite() || max_trip_km < MIN_TRIP_KM {
            return Err(ConfigError {
                name: "RIDESAGA_MAX_TRIP_KM".into(),
                value: max_trip_km.to_string(),
                problem: format!("must be a number of kilometres of at least {MIN_TRIP_KM}"),
            });
        }
        let surge_percent: u64 = s.get("RIDESAGA_FARE_SURGE_PERCENT", d.fares.surge_percent)?;
        if !(100..=MAX_SURGE_PERCENT).contains(&surge_percent) {
            return Err(ConfigError {
                name: "RIDESAGA_FARE_SURGE_PERCENT".into(),
                value: surge_percent.to_string(),
                problem: format!("must be a percentage from 100 (no surge) to {MAX_SURGE_PERCENT}"),
            });
        }
        Ok(RideConfig {
            match_deadline: s.duration("RIDESAGA_MATCH_DEADLINE", d.match_deadline)?,
            confirm_grace: s.duration("RIDESAGA_CONFIRM_GRACE", d.confirm_grace)?,
            pickup_deadline: s.duration("RIDESAGA_PICKUP_DEADLINE", d.pickup_deadline)?,
            rider_wait: s.duration("RIDESAGA_RIDER_WAIT", d.rider_wait)?,
            fares: Fares {
                base_cents: s.get("RIDESAGA_FARE_BASE_CENTS", d.fares.base_cents)?,
                per_km_cents: s.get("RIDESAGA_FARE_PER_KM_CENTS", d.fares.per_km_cents)?,
                per_min_cents: s.get("RIDESAGA_FARE_PER_MIN_CENTS", d.fares.per_min_cents)?,
                surge_percent,
            },
            max_trip_km,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let config = RideConfig::load(&Settings::from_pairs(Vec::<(String, String)>::new()));
        assert_eq!(config.unwrap(), RideConfig::default());
    }

    #[test]
    fn settings_override_the_defaults_and_bad_ones_are_named() {
        let s = Settings::from_pairs([
            ("RIDESAGA_MATCH_DEADLINE", "2s"),
            ("RIDESAGA_FARE_PER_KM_CENTS", "99"),
            ("RIDESAGA_PICKUP_DEADLINE", "6s"),
            ("RIDESAGA_RIDER_WAIT", "4s"),
        ]);
        let config = RideConfig::load(&s).unwrap();
        assert_eq!(config.match_deadline, Duration::from_secs(2));
        assert_eq!(config.pickup_deadline, Duration::from_secs(6));
        assert_eq!(config.rider_wait, Duration::from_secs(4));
        assert_eq!(config.fares.per_km_cents, 99);

        let err = RideConfig::load(&s.with("RIDESAGA_FARE_BASE_CENTS", "-1")).unwrap_err();
        assert!(
            err.to_string().contains("RIDESAGA_FARE_BASE_CENTS"),
            "{err}"
        );
        let err = RideConfig::load(&Settings::from_pairs([("RIDESAGA_MAX_TRIP_KM", "0")]));
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("RIDESAGA_MAX_TRIP_KM")
        );
    }

    #[test]
    fn a_breakdown_adds_up_to_the_fare_and_surge_multiplies_it() {
        let mut fares = RideConfig::default().fares;
        let parts = fares.breakdown(10.0, 20.0);
        assert_eq!(
            (parts.base_cents, parts.distance_cents, parts.time_cents),
            (250, 1200, 600)
        );
        assert_eq!((parts.surge_cents, parts.total_cents), (0, 2050));
        fares.surge_percent = 150;
        let parts = fares.breakdown(10.0, 20.0);
        assert_eq!((parts.surge_cents, parts.total_cents), (1025, 3075));
        assert!(parts.is_balanced());
    }

    #[test]
    fn a_breakdown_balances_whatever_the_rounding() {
        let fares = RideConfig::default().fares;
        for (km, min) in [(0.0041, 0.0), (1.0042, 0.013), (3.3333, 7.7777), (0.0, 0.0)] {
            let parts = fares.breakdown(km, min);
            assert!(parts.is_balanced(), "{km} km {min} min: {parts:?}");
            let exact = 250.0 + 120.0 * km + 30.0 * min;
            assert_eq!(parts.total_cents, exact.round() as u64, "{km} km {min} min");
        }
    }

    #[test]
    fn a_surge_out_of_range_is_named() {
        for bad in ["99", "501"] {
            let s = Settings::from_pairs([("RIDESAGA_FARE_SURGE_PERCENT", bad)]);
            let error = RideConfig::load(&s).unwrap_err();
            assert_eq!(error.name, "RIDESAGA_FARE_SURGE_PERCENT");
        }
    }

    #[test]
    fn the_fare_is_base_plus_distance_plus_time() {
        let fares = RideConfig::default().fares;
        assert_eq!(fares.fare_cents(10.0, 20.0), 250 + 1200 + 600);
        assert_eq!(fares.fare_cents(0.0, 0.0), 250);
        // 15 km at 30 km/h is 30 minutes.
        assert_eq!(fares.estimate_cents(15.0), 250 + 1800 + 900);
    }
}
