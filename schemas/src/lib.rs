//! The Ridesaga contract: what every service, `ridectl` and any non-Rust client agree on.
//!
//! # Layout
//! - [`auth`]: the NATS identities, their permissions, seeds and the server's include file.
//! - [`ids`]: id newtypes that refuse anything that is not a valid subject token.
//! - [`geo`]: positions and great-circle distance.
//! - [`messages`]: every command and event payload, and the table of their subjects.
//! - [`envelope`]: the common envelope, JSON encoding, and decoding that checks everything.
//! - [`limits`]: bounds on amounts, distances, durations, scores, text and deadlines.
//! - [`money`]: amounts in cents written for people.
//! - [`ride_state`]: a ride's states, their names and which of them end it.
//! - [`schedule`]: drivers' weekly windows and one-off shifts, in their time zone.
//! - [`subject`]: subject builders and parsers.
//! - [`dead_letter`]: the record a worker publishes when it gives up on a message.
//! - [`streams`]: stream and consumer definitions, and provisioning.
//! - [`trace`]: W3C trace context in the headers, and spans as OTLP/HTTP JSON.
//! - [`json_schema`]: the JSON Schema of every message, as committed under `schemas/json/`.

pub mod auth;
pub mod dead_letter;
pub mod duration;
pub mod envelope;
pub mod geo;
pub mod ids;
pub mod json_schema;
pub mod limits;
pub mod messages;
pub mod money;
mod object;
pub mod position;
pub mod ride_state;
pub mod schedule;
pub mod streams;
pub mod subject;
pub mod trace;

pub use dead_letter::DeadLetter;
pub use envelope::{
    DecodeError, Envelope, MAX_CLOCK_SKEW, MAX_HEADER_BYTES, MAX_MESSAGE_BYTES, SCHEMA_VERSION,
};
pub use geo::{GeoError, GeoPoint};
pub use ids::{DriverId, IdError, MessageId, RefundId, RideId, RiderId};
pub use limits::ValueError;
pub use messages::*;
pub use position::{POSITION_PREFIX, Position, PositionError};
pub use ride_state::RideState;
pub use schedule::{DriverSchedule, OneOffShift, ScheduleError, Shifts, Weekday, WeeklyWindow};
pub use streams::Service;
pub use subject::{SubjectError, parse_subject, saga_filter, subject_for};
pub use trace::TraceContext;
