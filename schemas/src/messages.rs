//! Every command and event of the saga: the payload types, and the one table that ties each to
//! its subject prefix and to the kind of id its subject ends with.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::geo::GeoPoint;
use crate::ids::{DriverId, RefundId, RiderId};
use crate::limits::{
    EMAIL_PATTERN, MAX_AMOUNT_CENTS, MAX_DISTANCE_KM, MAX_DURATION_MIN, MAX_EMAIL_CHARS,
    MAX_NOTIFICATION_CHARS, MAX_REASONS, MAX_SCORE, MAX_TEXT_CHARS, PHONE_PATTERN, TEXT_PATTERN,
};
use crate::object::Object;
use crate::schedule::DriverSchedule;

/// A point in time, written as RFC 3339 in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(#[serde(with = "time::serde::rfc3339")] pub OffsetDateTime);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(OffsetDateTime::now_utc())
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000_000) as i64
    }

    pub fn from_unix_millis(ms: i64) -> Self {
        Timestamp(
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        )
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use time::format_description::well_known::Rfc3339;
        match self.0.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Timestamp")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date-time" })
    }
}

/// Why a ride was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The rider cancelled.
    Rider,
    /// No driver was found within the match deadline.
    NoDriver,
    /// The payment hold was declined.
    PaymentDeclined,
    /// The ride was not confirmed in time.
    Expired,
    /// The driver neither reported arrival nor started the ride by the pickup deadline.
    DriverNoShow,
    /// The driver arrived, but the ride was not started within the rider wait.
    RiderNoShow,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Rider => "rider",
            CancelReason::NoDriver => "no_driver",
            CancelReason::PaymentDeclined => "payment_declined",
            CancelReason::Expired => "expired",
            CancelReason::DriverNoShow => "driver_no_show",
            CancelReason::RiderNoShow => "rider_no_show",
        }
    }
}

/// How a fare is made up, in cents: `total_cents` is the sum of the parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FareBreakdown {
    #[schemars(range(max = MAX_AMOUNT_CENTS))]
    pub base_cents: u64,
    /// The price per kilometre times the distance.
    #[schemars(range(max = MAX_AMOUNT_CENTS))]
    pub distance_cents: u64,
    /// The price per minute times the duration.
    #[schemars(range(max = MAX_AMOUNT_CENTS))]
    pub time_cents: u64,
    /// What the surge multiplier adds to the other parts (0 without surge).
    #[schemars(range(max = MAX_AMOUNT_CENTS))]
    pub surge_cents: u64,
    #[schemars(range(max = MAX_AMOUNT_CENTS))]
    pub total_cents: u64,
}

impl FareBreakdown {
    /// Whether the parts add up to the total.
    pub fn is_balanced(&self) -> bool {
        self.base_cents
            .checked_add(self.distance_cents)
            .and_then(|c| c.checked_add(self.time_cents))
            .and_then(|c| c.checked_add(self.surge_cents))
            == Some(self.total_cents)
    }
}

/// How a captured amount is shared, as the earnings ledger records it: the driver's share and
/// the platform's commission add up to the amount captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Earnings {
    pub driver_id: DriverId,
    #[schemars(range(max = MAX_AMOUNT_CENTS))]
    pub driver_cents: u64,
    #[schemars(range(max = MAX_AMOUNT_CENTS))]
    pub commission_cents: u64,
}

/// Where a completed ride's distance came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DistanceSource {
    /// The route the driver's positions recorded between the start and the completion.
    Route,
    /// The distance given with `cmd.ride.complete`, or the planned one (no route recorded).
    #[default]
    Reported,
}

impl DistanceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DistanceSource::Route => "route",
            DistanceSource::Reported => "reported",
        }
    }
}

/// What a completed ride's recorded route looked like, summed by the ride service from its
/// driver's positions so that other services can judge the route without the positions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSummary {
    /// Positions recorded between the start and the completion.
    #[schemars(range(max = 100_000_000))]
    pub points: u32,
    /// Distance along the positions.
    #[schemars(range(min = 0.0, max = MAX_DISTANCE_KM))]
    pub length_km: f64,
    /// From the first position's report time to the last's, in seconds.
    #[schemars(range(min = 0.0, max = MAX_ROUTE_SECONDS))]
    pub duration_s: f64,
    /// The highest speed between consecutive positions (their distance over the time between
    /// their reports, at least a second).
    #[schemars(range(min = 0.0, max = MAX_SPEED_KMH))]
    pub max_speed_kmh: f64,
    /// From the first position to the last.
    #[schemars(range(min = 0.0, max = MAX_DISTANCE_KM))]
    pub displacement_km: f64,
    /// The farthest any position was from the first.
    #[schemars(range(min = 0.0, max = MAX_DISTANCE_KM))]
    pub spread_km: f64,
}

/// The longest a route may last in a [`RouteSummary`]: a week, as a ride's duration.
pub const MAX_ROUTE_SECONDS: f64 = MAX_DURATION_MIN * 60.0;
/// The highest speed a [`RouteSummary`] may carry: once around the earth in a second.
pub const MAX_SPEED_KMH: f64 = MAX_DISTANCE_KM * 3600.0;

/// An operator's decision on a completed ride that fraud flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecision {
    /// The ride was genuine: the driver's earnings are released.
    Approve,
    /// The ride was fake: the driver's share is forfeited.
    Reject,
}

impl ReviewDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewDecision::Approve => "approve",
            ReviewDecision::Reject => "reject",
        }
    }
}

/// Where the driver's share of a flagged ride's capture stands in the earnings ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EarningsHoldStatus {
    /// Moved from the driver's account to the held account until a review.
    Held,
    /// Moved back to the driver's account (the ride was approved).
    Released,
    /// Moved from the held account to the forfeited account (the ride was rejected).
    Forfeited,
}

impl EarningsHoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EarningsHoldStatus::Held => "held",
            EarningsHoldStatus::Released => "released",
            EarningsHoldStatus::Forfeited => "forfeited",
        }
    }
}

/// Who a notification is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    Rider,
    Driver,
}

/// What a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    DriverAssigned,
    RideConfirmed,
    RideCancelled,
    RideRejected,
    Receipt,
    /// The ride completed but its fare could not be charged.
    PaymentFailed,
    /// Money captured for the ride was given back.
    Refund,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::DriverAssigned => "driver_assigned",
            NotificationKind::RideConfirmed => "ride_confirmed",
            NotificationKind::RideCancelled => "ride_cancelled",
            NotificationKind::RideRejected => "ride_rejected",
            NotificationKind::Receipt => "receipt",
            NotificationKind::PaymentFailed => "payment_failed",
            NotificationKind::Refund => "refund",
        }
    }
}

macro_rules! payload {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[schemars(deny_unknown_fields)]
        pub struct $name { $($(#[$fdoc])* pub $field: $ty,)* }
    };
}

// ---- commands -------------------------------------------------------------------------------

payload!(
    /// A rider asks for a ride. The publisher chooses the ride id (the subject's last token), so
    /// a retried command is the same command.
    RequestRide {
        rider_id: RiderId,
        pickup: GeoPoint,
        dropoff: GeoPoint,
        /// The payment method, as a gateway token (never a card number).
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        payment_token: String,
    }
);
payload!(
    /// The rider cancels the ride.
    CancelRide {}
);
payload!(
    /// The driver reached the pickup and waits for the rider.
    ArriveRide {}
);
payload!(
    /// The driver picked the rider up.
    StartRide {}
);
payload!(
    /// The driver dropped the rider off. Distance and duration default to the planned route
    /// and the time since the start.
    CompleteRide {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0.0, max = MAX_DISTANCE_KM))]
        distance_km: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0.0, max = MAX_DURATION_MIN))]
        duration_min: Option<f64>,
    }
);
payload!(
    /// Gives back money captured for the ride (payment owns refunds). `refund_id` names the
    /// refund: a command repeated with the same id refunds once. Without `amount_cents`, the
    /// rest of the capture (captured minus what was refunded or is being refunded).
    RefundRide {
        refund_id: RefundId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1, max = MAX_AMOUNT_CENTS))]
        amount_cents: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        reason: Option<String>,
    }
);
payload!(
    /// Registers (or renames and relocates) a driver; a new driver starts offline. The email
    /// address and the phone number (E.164) are where notifications reach the driver; one
    /// left out keeps what the notification service knew.
    RegisterDriver {
        driver_id: DriverId,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        name: String,
        location: GeoPoint,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = MAX_EMAIL_CHARS), pattern(EMAIL_PATTERN))]
        email: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(pattern(PHONE_PATTERN))]
        phone: Option<String>,
    }
);
payload!(
    /// The driver is available for rides, optionally at a new position.
    DriverOnline {
        driver_id: DriverId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<GeoPoint>,
    }
);
payload!(
    /// The driver takes no new rides.
    DriverOffline { driver_id: DriverId }
);
payload!(
    /// The driver's position changed.
    MoveDriver { driver_id: DriverId, location: GeoPoint }
);
payload!(
    /// Sets the driver's whole schedule (replacing any earlier one), or clears it (`null`):
    /// a driver without a schedule may be matched whenever online.
    SetDriverSchedule {
        driver_id: DriverId,
        schedule: Option<DriverSchedule>,
    }
);
payload!(
    /// Blocks a rider: every later request of theirs is flagged.
    BlockRider {
        rider_id: RiderId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        reason: Option<String>,
    }
);
payload!(
    /// Lifts a block.
    UnblockRider { rider_id: RiderId }
);
payload!(
    /// Registers a rider, or changes how notifications reach them: an email address and a
    /// phone number (E.164); one left out keeps what the notification service knew.
    RegisterRider {
        rider_id: RiderId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = MAX_EMAIL_CHARS), pattern(EMAIL_PATTERN))]
        email: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(pattern(PHONE_PATTERN))]
        phone: Option<String>,
    }
);

payload!(
    /// An operator's decision on a completed ride that fraud flagged.
    ReviewRide {
        decision: ReviewDecision,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        note: Option<String>,
    }
);

// ---- events ---------------------------------------------------------------------------------

payload!(
    /// A ride was accepted for processing.
    RideRequested {
        rider_id: RiderId,
        pickup: GeoPoint,
        dropoff: GeoPoint,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        payment_token: String,
        /// Great-circle distance of the trip.
        #[schemars(range(min = 0.0, max = MAX_DISTANCE_KM))]
        estimated_distance_km: f64,
        /// The fare for the planned trip, in cents; the payment hold.
        #[schemars(range(max = MAX_AMOUNT_CENTS))]
        estimated_fare_cents: u64,
        /// A driver must be assigned before this instant, or the ride is cancelled (no_driver).
        /// At most a week after the message occurred, as every deadline.
        match_deadline: Timestamp,
        /// The ride is cancelled (expired) unless confirmed before this instant.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<Timestamp>,
    }
);
payload!(
    /// Fraud checks passed.
    FraudCleared {
        rider_id: RiderId,
        #[schemars(range(max = MAX_SCORE))]
        score: u32,
        #[schemars(length(max = MAX_REASONS), inner(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN)))]
        reasons: Vec<String>,
    }
);
payload!(
    /// Fraud checks failed: the ride is rejected, nothing is reserved or charged.
    FraudFlagged {
        rider_id: RiderId,
        #[schemars(range(max = MAX_SCORE))]
        score: u32,
        #[schemars(length(max = MAX_REASONS), inner(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN)))]
        reasons: Vec<String>,
    }
);
payload!(
    /// A completed ride failed the route or pairing rules: its driver's earnings are held
    /// until an operator reviews it.
    RideFlagged {
        rider_id: RiderId,
        driver_id: DriverId,
        #[schemars(length(max = MAX_REASONS), inner(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN)))]
        reasons: Vec<String>,
    }
);
payload!(
    /// An operator decided on a flagged ride.
    RideReviewed {
        rider_id: RiderId,
        driver_id: DriverId,
        decision: ReviewDecision,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        note: Option<String>,
    }
);
payload!(
    /// A rider was blocked or unblocked.
    RiderBlockChanged {
        rider_id: RiderId,
        blocked: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        reason: Option<String>,
    }
);
payload!(
    /// A driver was reserved for the ride.
    DriverAssigned {
        rider_id: RiderId,
        driver_id: DriverId,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        driver_name: String,
        /// Distance from the driver to the pickup.
        #[schemars(range(min = 0.0, max = MAX_DISTANCE_KM))]
        pickup_distance_km: f64,
    }
);
payload!(
    /// No driver could be reserved before the match deadline.
    DriverUnavailable {
        rider_id: RiderId,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        reason: String,
    }
);
payload!(
    /// A driver reserved for the ride is free again.
    DriverReleased {
        driver_id: DriverId,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        reason: String,
    }
);
payload!(
    /// A driver's registration, availability or position changed.
    DriverUpdated {
        driver_id: DriverId,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        name: String,
        online: bool,
        location: GeoPoint,
    }
);
payload!(
    /// A driver's schedule was set (the whole of it) or cleared (`null`).
    DriverScheduleChanged {
        driver_id: DriverId,
        schedule: Option<DriverSchedule>,
    }
);
payload!(
    /// A hold for the estimated fare was placed.
    PaymentAuthorized {
        rider_id: RiderId,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        hold_id: String,
        #[schemars(range(max = MAX_AMOUNT_CENTS))]
        amount_cents: u64,
    }
);
payload!(
    /// The hold was declined.
    PaymentDeclined {
        rider_id: RiderId,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        code: String,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        message: String,
    }
);
payload!(
    /// The final fare was captured.
    PaymentCaptured {
        rider_id: RiderId,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        hold_id: String,
        #[schemars(range(max = MAX_AMOUNT_CENTS))]
        amount_cents: u64,
        /// The ledger's split of the amount (rides with a driver).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        earnings: Option<Earnings>,
        /// The fare's breakdown, for the receipt (a completed ride's fare).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fare: Option<FareBreakdown>,
    }
);
payload!(
    /// The driver's share of a flagged ride's capture was held, released or forfeited: the
    /// entries the earnings ledger appended.
    EarningsHold {
        driver_id: DriverId,
        #[schemars(range(max = MAX_AMOUNT_CENTS))]
        amount_cents: u64,
        status: EarningsHoldStatus,
    }
);
payload!(
    /// The hold was released without charge.
    PaymentVoided {
        rider_id: RiderId,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        hold_id: String,
        #[schemars(range(max = MAX_AMOUNT_CENTS))]
        amount_cents: u64,
    }
);
payload!(
    /// Capturing failed after every retry; an operator must act.
    PaymentCaptureFailed {
        rider_id: RiderId,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        hold_id: String,
        #[schemars(range(max = MAX_AMOUNT_CENTS))]
        amount_cents: u64,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        error: String,
    }
);
payload!(
    /// Money captured for the ride was given back through the gateway.
    PaymentRefunded {
        rider_id: RiderId,
        refund_id: RefundId,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        hold_id: String,
        /// What this refund gave back.
        #[schemars(range(max = MAX_AMOUNT_CENTS))]
        amount_cents: u64,
        /// Every refund of the ride so far, this one included; never above `captured_cents`.
        #[schemars(range(max = MAX_AMOUNT_CENTS))]
        refunded_cents: u64,
        /// What was captured for the ride.
        #[schemars(range(max = MAX_AMOUNT_CENTS))]
        captured_cents: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        reason: Option<String>,
        /// The ledger's reversal of the amount: what comes off the driver's share and off the
        /// commission (they add up to `amount_cents`), for rides whose capture was shared.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reversal: Option<Earnings>,
    }
);
/// [`PaymentRefundRefused::code`]: nothing was captured for the ride.
pub const REFUND_NOTHING_CAPTURED: &str = "nothing_captured";
/// [`PaymentRefundRefused::code`]: more than what is left to refund was asked for.
pub const REFUND_EXCEEDS_CAPTURE: &str = "exceeds_capture";

payload!(
    /// A refund was not made: nothing was captured (`nothing_captured`), the amount is more
    /// than the capture minus what was refunded (`exceeds_capture`), or the gateway refused it
    /// (`gateway_error`) or could not be reached (`gateway_unavailable`). `reason` says it in
    /// words.
    PaymentRefundRefused {
        refund_id: RefundId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rider_id: Option<RiderId>,
        /// The amount asked for (none: the rest of the capture).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(max = MAX_AMOUNT_CENTS))]
        amount_cents: Option<u64>,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        code: String,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        reason: String,
    }
);
payload!(
    /// The ride is confirmed: driver reserved and payment held.
    RideConfirmed {
        rider_id: RiderId,
        driver_id: DriverId,
        #[schemars(range(max = MAX_AMOUNT_CENTS))]
        estimated_fare_cents: u64,
        /// The driver must report arrival or start the ride before this instant, or the ride
        /// is cancelled (driver_no_show).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pickup_deadline: Option<Timestamp>,
    }
);
payload!(
    /// The driver reached the pickup.
    DriverArrived {
        rider_id: RiderId,
        driver_id: DriverId,
        /// The ride must start before this instant, or it is cancelled (rider_no_show).
        rider_wait_deadline: Timestamp,
    }
);
payload!(
    /// The rider was picked up.
    RideStarted { rider_id: RiderId, driver_id: DriverId }
);
payload!(
    /// The rider was dropped off; `fare_cents` is what is captured.
    RideCompleted {
        rider_id: RiderId,
        driver_id: DriverId,
        #[schemars(range(min = 0.0, max = MAX_DISTANCE_KM))]
        distance_km: f64,
        #[schemars(range(min = 0.0, max = MAX_DURATION_MIN))]
        duration_min: f64,
        #[schemars(range(max = MAX_AMOUNT_CENTS))]
        fare_cents: u64,
        /// Whether `distance_km` is the recorded route's or the reported one.
        #[serde(default)]
        distance_source: DistanceSource,
        /// Positions recorded on the route (0 without tracking).
        #[serde(default)]
        #[schemars(range(max = 100_000_000))]
        route_points: u32,
        /// How `fare_cents` is made up; its total is `fare_cents`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fare: Option<FareBreakdown>,
        /// The recorded route's summary (rides whose driver reported positions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<RouteSummary>,
    }
);
payload!(
    /// The ride was cancelled; every step already taken is compensated.
    RideCancelled {
        rider_id: RiderId,
        reason: CancelReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        driver_id: Option<DriverId>,
    }
);
/// The reason in [`RideRejected`] of a ride whose request broke one of the ride service's rules.
pub const INVALID_REQUEST: &str = "invalid_request";

payload!(
    /// The ride was not accepted: fraud checks flagged it (their score and reasons), or the
    /// request broke one of the ride service's rules (score 0, reason `invalid_request`, and
    /// `detail` says which rule, in words for the rider).
    RideRejected {
        rider_id: RiderId,
        #[schemars(range(max = MAX_SCORE))]
        score: u32,
        #[schemars(length(max = MAX_REASONS), inner(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN)))]
        reasons: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        detail: Option<String>,
    }
);
payload!(
    /// A command was refused (unknown ride, or not allowed in the ride's state).
    RideCommandRefused {
        /// The refused command's type, e.g. `cmd.ride.start`.
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        command: String,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        reason: String,
    }
);
payload!(
    /// A notification was delivered through a channel.
    NotificationSent {
        recipient: Recipient,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        recipient_id: String,
        kind: NotificationKind,
        #[schemars(length(max = MAX_TEXT_CHARS), pattern(TEXT_PATTERN))]
        channel: String,
        #[schemars(length(max = MAX_NOTIFICATION_CHARS), pattern(TEXT_PATTERN))]
        text: String,
        /// The refund a `refund` notification tells of: each refund of a ride is told once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refund_id: Option<RefundId>,
    }
);

/// Which id a message's subject ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The ride (saga) id; the envelope's `saga_id` carries it.
    Ride,
    /// A driver id, also in the payload's `driver_id`.
    Driver,
    /// A rider id, also in the payload's `rider_id`.
    Rider,
}

macro_rules! contract {
    ($($variant:ident($payload:ident) = $subject:literal, $key:ident;)*) => {
        /// The type of a message: its subject without the id.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum MessageKind { $($variant,)* }

        impl MessageKind {
            /// Every message type, commands first.
            pub const ALL: &'static [MessageKind] = &[$(MessageKind::$variant,)*];

            /// The subject prefix, e.g. `evt.ride.requested`; also the envelope's `type`.
            pub fn as_str(self) -> &'static str {
                match self { $(MessageKind::$variant => $subject,)* }
            }

            /// Which id the subject ends with.
            pub fn key_kind(self) -> KeyKind {
                match self { $(MessageKind::$variant => KeyKind::$key,)* }
            }

            pub(crate) fn payload_schema(self, generator: &mut SchemaGenerator) -> Schema {
                match self { $(MessageKind::$variant => generator.subschema_for::<$payload>(),)* }
            }
        }

        /// Any message's payload.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum Message { $($variant($payload),)* }

        impl Message {
            pub fn kind(&self) -> MessageKind {
                match self { $(Message::$variant(_) => MessageKind::$variant,)* }
            }

            pub(crate) fn decode_data(
                kind: MessageKind,
                raw: &str,
            ) -> Result<Message, serde_json::Error> {
                Ok(match kind {
                    $(MessageKind::$variant => {
                        Message::$variant(serde_json::from_str::<Object<$payload>>(raw)?.0)
                    })*
                })
            }
        }

        $(impl From<$payload> for Message {
            fn from(payload: $payload) -> Message { Message::$variant(payload) }
        })*
    };
}

contract! {
    RequestRide(RequestRide) = "cmd.ride.request", Ride;
    CancelRide(CancelRide) = "cmd.ride.cancel", Ride;
    ArriveRide(ArriveRide) = "cmd.ride.arrive", Ride;
    StartRide(StartRide) = "cmd.ride.start", Ride;
    CompleteRide(CompleteRide) = "cmd.ride.complete", Ride;
    RefundRide(RefundRide) = "cmd.payment.refund", Ride;
    RegisterDriver(RegisterDriver) = "cmd.driver.register", Driver;
    DriverOnline(DriverOnline) = "cmd.driver.online", Driver;
    DriverOffline(DriverOffline) = "cmd.driver.offline", Driver;
    MoveDriver(MoveDriver) = "cmd.driver.move", Driver;
    SetDriverSchedule(SetDriverSchedule) = "cmd.driver.schedule", Driver;
    BlockRider(BlockRider) = "cmd.fraud.block", Rider;
    UnblockRider(UnblockRider) = "cmd.fraud.unblock", Rider;
    RegisterRider(RegisterRider) = "cmd.rider.register", Rider;
    ReviewRide(ReviewRide) = "cmd.fraud.review", Ride;
    RideRequested(RideRequested) = "evt.ride.requested", Ride;
    RideConfirmed(RideConfirmed) = "evt.ride.confirmed", Ride;
    DriverArrived(DriverArrived) = "evt.ride.driver_arrived", Ride;
    RideStarted(RideStarted) = "evt.ride.started", Ride;
    RideCompleted(RideCompleted) = "evt.ride.completed", Ride;
    RideCancelled(RideCancelled) = "evt.ride.cancelled", Ride;
    RideRejected(RideRejected) = "evt.ride.rejected", Ride;
    RideCommandRefused(RideCommandRefused) = "evt.ride.refused", Ride;
    FraudCleared(FraudCleared) = "evt.fraud.cleared", Ride;
    FraudFlagged(FraudFlagged) = "evt.fraud.flagged", Ride;
    RiderBlockChanged(RiderBlockChanged) = "evt.fraud.blocklist", Rider;
    RideFlagged(RideFlagged) = "evt.fraud.ride_flagged", Ride;
    RideReviewed(RideReviewed) = "evt.fraud.reviewed", Ride;
    DriverAssigned(DriverAssigned) = "evt.driver.assigned", Ride;
    DriverUnavailable(DriverUnavailable) = "evt.driver.unavailable", Ride;
    DriverReleased(DriverReleased) = "evt.driver.released", Ride;
    DriverUpdated(DriverUpdated) = "evt.driver.updated", Driver;
    DriverScheduleChanged(DriverScheduleChanged) = "evt.driver.schedule", Driver;
    PaymentAuthorized(PaymentAuthorized) = "evt.payment.authorized", Ride;
    PaymentDeclined(PaymentDeclined) = "evt.payment.declined", Ride;
    PaymentCaptured(PaymentCaptured) = "evt.payment.captured", Ride;
    PaymentVoided(PaymentVoided) = "evt.payment.voided", Ride;
    PaymentCaptureFailed(PaymentCaptureFailed) = "evt.payment.capture_failed", Ride;
    PaymentRefunded(PaymentRefunded) = "evt.payment.refunded", Ride;
    PaymentRefundRefused(PaymentRefundRefused) = "evt.payment.refund_refused", Ride;
    EarningsHold(EarningsHold) = "evt.payment.earnings_hold", Ride;
    NotificationSent(NotificationSent) = "evt.notification.sent", Ride;
}

impl MessageKind {
    /// Parses a type such as `evt.ride.requested`.
    pub fn parse(s: &str) -> Option<MessageKind> {
        MessageKind::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    pub fn is_command(self) -> bool {
        self.as_str().starts_with("cmd.")
    }

    /// The domain (second subject token): ride, driver, fraud, payment, notification.
    pub fn domain(self) -> &'static str {
        self.as_str().split('.').nth(1).unwrap_or_default()
    }

    /// The verb or fact (third subject token).
    pub fn name(self) -> &'static str {
        self.as_str().split('.').nth(2).unwrap_or_default()
    }
}

impl std::fmt::Display for MessageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Message {
    /// The id the subject ends with for messages not keyed by a ride.
    pub(crate) fn entity_id(&self) -> Option<&str> {
        Some(match self {
            Message::RegisterDriver(m) => m.driver_id.as_str(),
            Message::DriverOnline(m) => m.driver_id.as_str(),
            Message::DriverOffline(m) => m.driver_id.as_str(),
            Message::MoveDriver(m) => m.driver_id.as_str(),
            Message::DriverUpdated(m) => m.driver_id.as_str(),
            Message::SetDriverSchedule(m) => m.driver_id.as_str(),
            Message::DriverScheduleChanged(m) => m.driver_id.as_str(),
            Message::BlockRider(m) => m.rider_id.as_str(),
            Message::UnblockRider(m) => m.rider_id.as_str(),
            Message::RegisterRider(m) => m.rider_id.as_str(),
            Message::RiderBlockChanged(m) => m.rider_id.as_str(),
            _ => return None,
        })
    }
}
