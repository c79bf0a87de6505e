//! A ride's route, pure: the positions its driver reported between the start and the
//! completion, summed into a distance and into the summary the completion carries for the
//! fraud rules (duration, highest speed between consecutive positions, displacement, spread). Positions come in the positions stream's order; each
//! carries its stream sequence, so a position seen again (a redelivery, or one overtaken by a
//! later one another replica recorded first) adds nothing.

use ridesaga_schemas::limits::MAX_DISTANCE_KM;
use ridesaga_schemas::{GeoPoint, MAX_ROUTE_SECONDS, MAX_SPEED_KMH, RouteSummary};

/// Positions needed before the route's distance replaces the reported one: one segment.
pub const MIN_ROUTE_POINTS: u32 = 2;
/// The shortest time a segment's speed is computed over: positions reported within the same
/// second (or with a clock that went back) count as a second apart.
pub const MIN_SEGMENT_MS: i64 = 1_000;

/// The running total of a ride's route.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Route {
    /// Distance along the recorded positions.
    pub km: f64,
    /// Positions recorded.
    pub points: u32,
    /// Positions-stream sequence of the last position recorded (0: none yet).
    pub seq: u64,
    /// The last position recorded.
    pub last: Option<GeoPoint>,
    /// The first position recorded, and when it was reported (the phone's clock, Unix ms).
    pub first: Option<GeoPoint>,
    pub first_at_ms: i64,
    /// When the last position was reported.
    pub last_at_ms: i64,
    /// The highest speed between consecutive positions, in km/h.
    pub max_speed_kmh: f64,
    /// The farthest any position was from the first, in km.
    pub spread_km: f64,
}

impl Route {
    /// The route with the position at stream sequence `seq` added, or `None` when that
    /// position is not newer than the last one recorded.
    pub fn record(&self, seq: u64, point: GeoPoint, at_ms: i64) -> Option<Route> {
        if seq <= self.seq {
            return None;
        }
        let step = self.last.map_or(0.0, |last| last.distance_km(&point));
        let speed = match self.last {
            Some(_) => {
                let ms = at_ms.saturating_sub(self.last_at_ms).max(MIN_SEGMENT_MS);
                step / (ms as f64 / 3_600_000.0)
            }
            None => 0.0,
        };
        let first = self.first.unwrap_or(point);
        Some(Route {
            km: self.km + step,
            points: self.points.saturating_add(1),
            seq,
            last: Some(point),
            first: Some(first),
            first_at_ms: if self.first.is_some() {
                self.first_at_ms
            } else {
                at_ms
            },
            last_at_ms: at_ms,
            max_speed_kmh: self.max_speed_kmh.max(speed),
            spread_km: self.spread_km.max(first.distance_km(&point)),
        })
    }

    /// What the completion tells about the route: `None` without positions (or for a route
    /// whose first position was recorded before the summary was kept).
    pub fn summary(&self) -> Option<RouteSummary> {
        let (first, last) = (self.first?, self.last?);
        if self.points == 0 {
            return None;
        }
        let km = |v: f64| v.clamp(0.0, MAX_DISTANCE_KM);
        let duration_ms = self.last_at_ms.saturating_sub(self.first_at_ms).max(0);
        Some(RouteSummary {
            points: self.points,
            length_km: km(self.km),
            duration_s: (duration_ms as f64 / 1000.0).min(MAX_ROUTE_SECONDS),
            max_speed_kmh: self.max_speed_kmh.clamp(0.0, MAX_SPEED_KMH),
            displacement_km: km(first.distance_km(&last)),
            spread_km: km(self.spread_km),
        })
    }

    /// Whether the route is long enough for its distance to be the ride's.
    pub fn is_usable(&self) -> bool {
        self.points >= MIN_ROUTE_POINTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lng: f64) -> GeoPoint {
        GeoPoint::new(lat, lng).unwrap()
    }

    #[test]
    fn a_route_sums_the_segments_between_its_positions() {
        let a = p(52.50, 13.40);
        let b = p(52.51, 13.40);
        let c = p(52.51, 13.42);
        let route = Route::default();
        let route = route.record(1, a, 0).unwrap();
        assert_eq!(route.km, 0.0);
        assert!(!route.is_usable());
        let route = route
            .record(5, b, 60_000)
            .unwrap()
            .record(9, c, 120_000)
            .unwrap();
        let expected = a.distance_km(&b) + b.distance_km(&c);
        assert!((route.km - expected).abs() < 1e-9);
        assert_eq!(route.points, 3);
        assert_eq!(route.seq, 9);
        assert_eq!(route.last, Some(c));
        assert!(route.is_usable());
    }

    #[test]
    fn a_position_not_newer_than_the_last_adds_nothing() {
        let route = Route::default()
            .record(3, p(1.0, 1.0), 0)
            .unwrap()
            .record(4, p(1.0, 1.1), 5_000)
            .unwrap();
        assert_eq!(route.record(4, p(2.0, 2.0), 9_000), None);
        assert_eq!(route.record(2, p(2.0, 2.0), 9_000), None);
    }

    #[test]
    fn no_positions_no_summary() {
        assert_eq!(Route::default().summary(), None);
    }

    #[test]
    fn the_summary_has_duration_top_speed_displacement_and_spread() {
        let a = p(52.50, 13.40);
        let b = p(52.51, 13.40); // about 1.11 km north of a
        let route = Route::default()
            .record(1, a, 1_000)
            .unwrap()
            .record(2, b, 61_000) // 1.11 km in a minute: about 67 km/h
            .unwrap()
            .record(3, a, 181_000) // back in two minutes: about 33 km/h
            .unwrap();
        let summary = route.summary().unwrap();
        assert_eq!(summary.points, 3);
        assert_eq!(summary.duration_s, 180.0);
        let ab = a.distance_km(&b);
        assert!((summary.length_km - 2.0 * ab).abs() < 1e-9);
        assert!((summary.max_speed_kmh - ab * 60.0).abs() < 1e-6);
        // Back where it started: no displacement, but it went somewhere.
        assert!(summary.displacement_km < 1e-9);
        assert!((summary.spread_km - ab).abs() < 1e-9);
    }

    #[test]
    fn a_jump_between_positions_shows_as_speed_even_within_one_second() {
        let berlin = p(52.52, 13.40);
        let hamburg = p(53.55, 9.99);
        let route = Route::default()
            .record(1, berlin, 10_000)
            .unwrap()
            .record(2, hamburg, 10_000)
            .unwrap();
        let km = berlin.distance_km(&hamburg);
        // Reported at the same instant: counted as a second apart.
        assert!((route.summary().unwrap().max_speed_kmh - km * 3600.0).abs() < 1e-6);
    }
}
