//! Positions on the earth and the great-circle distance between them.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::object::Object;

/// Mean earth radius in kilometres (IUGG).
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A WGS84 position in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PointObject")]
pub struct GeoPoint {
    pub lat: f64,
    pub lng: f64,
}

/// The wire form, validated into a [`GeoPoint`].
#[derive(Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
struct RawPoint {
    /// Latitude in degrees, -90 to 90.
    #[schemars(range(min = -90.0, max = 90.0))]
    lat: f64,
    /// Longitude in degrees, -180 to 180.
    #[schemars(range(min = -180.0, max = 180.0))]
    lng: f64,
}

/// The wire form read from a JSON object only (not from `[lat, lng]`, which the JSON Schemas
/// refuse).
#[derive(Deserialize)]
#[serde(transparent)]
struct PointObject(Object<RawPoint>);

impl TryFrom<PointObject> for GeoPoint {
    type Error = GeoError;
    fn try_from(PointObject(Object(raw)): PointObject) -> Result<Self, GeoError> {
        GeoPoint::new(raw.lat, raw.lng)
    }
}

impl JsonSchema for GeoPoint {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("GeoPoint")
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = RawPoint::json_schema(generator);
        schema.insert(
            "description".into(),
            "A WGS84 position in decimal degrees.".into(),
        );
        schema
    }
}

/// Why a position was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeoError {
    #[error("latitude out of range: {0:?} (must be between -90 and 90)")]
    Latitude(f64),
    #[error("longitude out of range: {0:?} (must be between -180 and 180)")]
    Longitude(f64),
    #[error("expected LAT,LNG in decimal degrees (e.g. 52.52,13.40), got {0:?}")]
    Format(String),
}

impl GeoPoint {
    /// A validated point.
    pub fn new(lat: f64, lng: f64) -> Result<Self, GeoError> {
        if !(-90.0..=90.0).contains(&lat) {
            return Err(GeoError::Latitude(lat));
        }
        if !(-180.0..=180.0).contains(&lng) {
            return Err(GeoError::Longitude(lng));
        }
        Ok(Self { lat, lng })
    }

    /// Great-circle (haversine) distance in kilometres.
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        let (lat1, lat2) = (self.lat.to_radians(), other.lat.to_radians());
        let dlat = lat2 - lat1;
        let dlng = (other.lng - self.lng).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlng / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

impl FromStr for GeoPoint {
    type Err = GeoError;
    fn from_str(s: &str) -> Result<Self, GeoError> {
        let (lat, lng) = s
            .split_once(',')
            .ok_or_else(|| GeoError::Format(s.to_owned()))?;
        let parse = |v: &str| v.trim().parse::<f64>().ok().filter(|x| x.is_finite());
        match (parse(lat), parse(lng)) {
            (Some(lat), Some(lng)) => GeoPoint::new(lat, lng),
            _ => Err(GeoError::Format(s.to_owned())),
        }
    }
}

impl fmt::Display for GeoPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.5},{:.5}", self.lat, self.lng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lat_lng_and_names_the_bad_coordinate() {
        let p: GeoPoint = "52.52, 13.405".parse().unwrap();
        assert_eq!((p.lat, p.lng), (52.52, 13.405));
        assert_eq!(
            "91,0".parse::<GeoPoint>().unwrap_err().to_string(),
            "latitude out of range: 91.0 (must be between -90 and 90)"
        );
        assert!(
            "0,181"
                .parse::<GeoPoint>()
                .unwrap_err()
                .to_string()
                .starts_with("longitude")
        );
        assert!(matches!(
            "abc".parse::<GeoPoint>(),
            Err(GeoError::Format(_))
        ));
        assert!(matches!(
            "NaN,1".parse::<GeoPoint>(),
            Err(GeoError::Format(_))
        ));
    }

    #[test]
    fn haversine_matches_a_known_distance() {
        // Berlin Brandenburg Gate to Munich Marienplatz: about 504 km.
        let berlin = GeoPoint::new(52.5163, 13.3777).unwrap();
        let munich = GeoPoint::new(48.1374, 11.5755).unwrap();
        let d = berlin.distance_km(&munich);
        assert!((d - 504.0).abs() < 2.0, "{d}");
        assert_eq!(berlin.distance_km(&berlin), 0.0);
    }

    #[test]
    fn deserializing_refuses_out_of_range_and_incomplete_points() {
        assert!(serde_json::from_str::<GeoPoint>(r#"{"lat":91,"lng":0}"#).is_err());
        assert!(serde_json::from_str::<GeoPoint>(r#"{"lat":1}"#).is_err());
        // A field a newer producer added is ignored.
        assert_eq!(
            serde_json::from_str::<GeoPoint>(r#"{"lat":1,"lng":0,"alt":3}"#).unwrap(),
            GeoPoint::new(1.0, 0.0).unwrap()
        );
        assert!(serde_json::from_str::<GeoPoint>("[1,0]").is_err());
        assert_eq!(
            serde_json::from_str::<GeoPoint>(r#"{"lat":1,"lng":0}"#).unwrap(),
            GeoPoint::new(1.0, 0.0).unwrap()
        );
    }
}
