//! Driver positions: the compact messages a driver's phone sends every few seconds while
//! online. They are not saga messages: they live on a stream of their own
//! ([`crate::streams::POSITION_STREAM`]) under `pos.driver.<driver_id>`, so their rate never
//! reaches the saga stream or its consumers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::geo::GeoPoint;
use crate::ids::DriverId;

/// Subject prefix of driver positions: `pos.driver.<driver_id>`.
pub const POSITION_PREFIX: &str = "pos.driver";

/// Largest encoded position accepted, in bytes.
pub const MAX_POSITION_BYTES: usize = 256;

/// One reported position: where the driver was and when (Unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Position {
    #[schemars(range(min = -90.0, max = 90.0))]
    pub lat: f64,
    #[schemars(range(min = -180.0, max = 180.0))]
    pub lng: f64,
    /// When the position was taken, Unix milliseconds.
    #[schemars(range(min = 0))]
    pub at_ms: i64,
}

/// Why a position message was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PositionError {
    #[error("subject {0:?} is not pos.driver.<driver_id>")]
    Subject(String),
    #[error("position of {0} bytes is over the {MAX_POSITION_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("position is not valid JSON of {{lat, lng, at_ms}}: {0}")]
    Json(String),
    #[error("position out of range: {0}")]
    Range(String),
}

impl Position {
    /// The point, validated.
    pub fn point(&self) -> Result<GeoPoint, PositionError> {
        GeoPoint::new(self.lat, self.lng).map_err(|e| PositionError::Range(e.to_string()))
    }

    /// The subject a driver's positions are published on.
    pub fn subject(driver_id: &DriverId) -> String {
        format!("{POSITION_PREFIX}.{driver_id}")
    }

    /// The compact JSON body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a position message: the driver from the subject, the position from the body.
    pub fn decode(subject: &str, body: &[u8]) -> Result<(DriverId, Position), PositionError> {
        let id = subject
            .strip_prefix(POSITION_PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|id| !id.contains('.'))
            .ok_or_else(|| PositionError::Subject(subject.to_owned()))?;
        let driver_id =
            DriverId::parse(id).map_err(|_| PositionError::Subject(subject.to_owned()))?;
        if body.len() > MAX_POSITION_BYTES {
            return Err(PositionError::TooLarge(body.len()));
        }
        let position: Position =
            serde_json::from_slice(body).map_err(|e| PositionError::Json(e.to_string()))?;
        position.point()?;
        if position.at_ms < 0 {
            return Err(PositionError::Range(format!("at_ms {}", position.at_ms)));
        }
        Ok((driver_id, position))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_round_trips_through_its_subject() {
        let driver = DriverId::parse("d_1").unwrap();
        let position = Position {
            lat: 52.5,
            lng: 13.4,
            at_ms: 1_700_000_000_000,
        };
        let subject = Position::subject(&driver);
        assert_eq!(subject, "pos.driver.d_1");
        assert_eq!(
            Position::decode(&subject, &position.encode()).unwrap(),
            (driver, position)
        );
    }

    #[test]
    fn a_newer_producers_fields_are_ignored() {
        let body = br#"{"lat":1.0,"lng":2.0,"at_ms":3,"accuracy_m":5}"#;
        let (_, position) = Position::decode("pos.driver.d_1", body).unwrap();
        assert_eq!((position.lat, position.lng, position.at_ms), (1.0, 2.0, 3));
    }

    #[test]
    fn bad_positions_are_refused_with_their_reason() {
        let body = br#"{"lat":95.0,"lng":1.0,"at_ms":1}"#;
        assert!(matches!(
            Position::decode("pos.driver.d_1", body),
            Err(PositionError::Range(_))
        ));
        let body = br#"{"lat":1.0,"at_ms":1}"#;
        assert!(matches!(
            Position::decode("pos.driver.d_1", body),
            Err(PositionError::Json(_))
        ));
        let body = br#"{"lat":1.0,"lng":1.0,"at_ms":1}"#;
        assert!(matches!(
            Position::decode("pos.rider.d_1", body),
            Err(PositionError::Subject(_))
        ));
        assert!(matches!(
            Position::decode("pos.driver.d_1.x", body),
            Err(PositionError::Subject(_))
        ));
    }
}
