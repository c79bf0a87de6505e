//! Where the bench's drivers wait and its riders go: one city, drivers spread within a few
//! kilometres of its centre and trips inside it, so every pickup has drivers within the match
//! radius and no trip looks impossible to the fraud rules. A small seeded generator keeps runs
//! repeatable.

use ridesaga_schemas::GeoPoint;

/// Berlin Mitte.
pub const CENTER: GeoPoint = GeoPoint {
    lat: 52.520_008,
    lng: 13.404_954,
};
/// Drivers wait within this distance of the centre (on each axis).
pub const DRIVER_SPREAD_KM: f64 = 3.0;
/// Pickups are within this distance of the centre (on each axis).
pub const PICKUP_SPREAD_KM: f64 = 2.0;
/// Trip lengths, as the straight distance between pickup and dropoff.
pub const TRIP_KM: (f64, f64) = (2.0, 6.0);

const KM_PER_DEGREE_LAT: f64 = 111.32;

/// SplitMix64: tiny, fast and good enough to scatter points.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`.
    pub fn between(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        low + unit * (high - low)
    }
}

/// `from` moved `east_km` east and `north_km` north (flat-earth approximation, fine at city
/// scale).
pub fn offset(from: GeoPoint, east_km: f64, north_km: f64) -> GeoPoint {
    let lat = from.lat + north_km / KM_PER_DEGREE_LAT;
    let lng = from.lng + east_km / (KM_PER_DEGREE_LAT * from.lat.to_radians().cos());
    GeoPoint { lat, lng }
}

/// A point within `spread_km` of the centre on each axis.
pub fn near_center(rng: &mut Rng, spread_km: f64) -> GeoPoint {
    offset(
        CENTER,
        rng.between(-spread_km, spread_km),
        rng.between(-spread_km, spread_km),
    )
}

/// A trip: a pickup near the centre and a dropoff `TRIP_KM` away in a random direction.
pub fn trip(rng: &mut Rng) -> (GeoPoint, GeoPoint) {
    let pickup = near_center(rng, PICKUP_SPREAD_KM);
    let km = rng.between(TRIP_KM.0, TRIP_KM.1);
    let bearing = rng.between(0.0, std::f64::consts::TAU);
    let dropoff = offset(pickup, km * bearing.sin(), km * bearing.cos());
    (pickup, dropoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pickup_is_within_ten_km_of_every_driver() {
        let mut rng = Rng::new(7);
        // The farthest a pickup and a driver can be: opposite corners of their squares.
        let worst = offset(CENTER, DRIVER_SPREAD_KM, DRIVER_SPREAD_KM).distance_km(&offset(
            CENTER,
            -PICKUP_SPREAD_KM,
            -PICKUP_SPREAD_KM,
        ));
        assert!(worst < 10.0, "{worst}");
        for _ in 0..1000 {
            let driver = near_center(&mut rng, DRIVER_SPREAD_KM);
            let (pickup, _) = trip(&mut rng);
            assert!(driver.distance_km(&pickup) <= worst + 1e-9);
        }
    }

    #[test]
    fn trips_have_the_planned_length() {
        let mut rng = Rng::new(42);
        for _ in 0..1000 {
            let (pickup, dropoff) = trip(&mut rng);
            let km = pickup.distance_km(&dropoff);
            assert!(km > TRIP_KM.0 * 0.98 && km < TRIP_KM.1 * 1.02, "{km}");
        }
    }

    #[test]
    fn the_generator_is_repeatable_and_uniform_enough() {
        let (mut a, mut b) = (Rng::new(1), Rng::new(1));
        assert_eq!(a.next_u64(), b.next_u64());
        let mean = (0..10_000).map(|_| a.between(0.0, 1.0)).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
