//! A ride's route, pure: the positions its driver reported between the start and the
//! completion, summed into a distance. Positions come in the positions stream's order; each
//! carries its stream sequence, so a position seen again (a redelivery, or one overtaken by a
//! later one another replica recorded first) adds nothing.

use ridesaga_schemas::GeoPoint;

/// Positions needed before the route's distance replaces the reported one: one segment.
pub const MIN_ROUTE_POINTS: u32 = 2;

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
}

impl Route {
    /// The route with the position at stream sequence `seq` added, or `None` when that
    /// position is not newer than the last one recorded.
    pub fn record(&self, seq: u64, point: GeoPoint) -> Option<Route> {
        if seq <= self.seq {
            return None;
        }
        let step = self.last.map_or(0.0, |last| last.distance_km(&point));
        Some(Route {
            km: self.km + step,
            points: self.points.saturating_add(1),
            seq,
            last: Some(point),
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
        let route = route.record(1, a).unwrap();
        assert_eq!(route.km, 0.0);
        assert!(!route.is_usable());
        let route = route.record(5, b).unwrap().record(9, c).unwrap();
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
            .record(3, p(1.0, 1.0))
            .unwrap()
            .record(4, p(1.0, 1.1))
            .unwrap();
        assert_eq!(route.record(4, p(2.0, 2.0)), None);
        assert_eq!(route.record(2, p(2.0, 2.0)), None);
    }
}
