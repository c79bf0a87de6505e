//! The contract's promises: committed JSON Schemas match the types, real encoded messages
//! validate against them, and decoding refuses what it must with an error that names the problem.

use std::path::PathBuf;

use ridesaga_schemas::json_schema;
use ridesaga_schemas::*;

fn rider() -> RiderId {
    RiderId::parse("u_alice").unwrap()
}
fn driver() -> DriverId {
    DriverId::parse("d_bob").unwrap()
}
fn point(lat: f64, lng: f64) -> GeoPoint {
    GeoPoint::new(lat, lng).unwrap()
}

fn example_schedule() -> DriverSchedule {
    DriverSchedule {
        zone: "Europe/Paris".into(),
        weekly: vec![WeeklyWindow {
            day: Weekday::Sat,
            start: "22:00".into(),
            end: "04:00".into(),
        }],
        shifts: vec![OneOffShift {
            start: "2026-12-24T18:00".into(),
            end: "2026-12-25T02:00".into(),
        }],
    }
}

/// One realistic message of every type.
fn example(kind: MessageKind) -> Envelope {
    let ride = Some(RideId::parse("r_42").unwrap());
    let reasons = vec!["velocity".to_string()];
    let message: Message = match kind {
        MessageKind::RequestRide => RequestRide {
            rider_id: rider(),
            pickup: point(52.52, 13.40),
            dropoff: point(52.50, 13.45),
            payment_token: "tok_visa".into(),
        }
        .into(),
        MessageKind::CancelRide => CancelRide {}.into(),
        MessageKind::ArriveRide => ArriveRide {}.into(),
        MessageKind::StartRide => StartRide {}.into(),
        MessageKind::CompleteRide => CompleteRide {
            distance_km: Some(4.2),
            duration_min: None,
        }
        .into(),
        MessageKind::RefundRide => RefundRide {
            refund_id: RefundId::parse("rf_1").unwrap(),
            amount_cents: Some(500),
            reason: Some("the driver took a detour".into()),
        }
        .into(),
        MessageKind::PaymentRefunded => PaymentRefunded {
            rider_id: rider(),
            refund_id: RefundId::parse("rf_1").unwrap(),
            hold_id: "hold_1".into(),
            amount_cents: 500,
            refunded_cents: 500,
            captured_cents: 1300,
            reason: Some("the driver took a detour".into()),
            reversal: Some(Earnings {
                driver_id: driver(),
                driver_cents: 400,
                commission_cents: 100,
            }),
        }
        .into(),
        MessageKind::PaymentRefundRefused => PaymentRefundRefused {
            refund_id: RefundId::parse("rf_2").unwrap(),
            rider_id: Some(rider()),
            amount_cents: Some(5000),
            code: REFUND_EXCEEDS_CAPTURE.into(),
            reason: "50.00 asked for, 8.00 left to refund".into(),
        }
        .into(),
        MessageKind::RegisterDriver => RegisterDriver {
            driver_id: driver(),
            name: "Bob".into(),
            location: point(52.5, 13.4),
            email: Some("bob@example.com".into()),
            phone: Some("+4915112345678".into()),
        }
        .into(),
        MessageKind::DriverOnline => DriverOnline {
            driver_id: driver(),
            location: None,
        }
        .into(),
        MessageKind::DriverOffline => DriverOffline {
            driver_id: driver(),
        }
        .into(),
        MessageKind::MoveDriver => MoveDriver {
            driver_id: driver(),
            location: point(1.0, 2.0),
        }
        .into(),
        MessageKind::SetDriverSchedule => SetDriverSchedule {
            driver_id: driver(),
            schedule: Some(example_schedule()),
        }
        .into(),
        MessageKind::DriverScheduleChanged => DriverScheduleChanged {
            driver_id: driver(),
            schedule: None,
        }
        .into(),
        MessageKind::BlockRider => BlockRider {
            rider_id: rider(),
            reason: Some("chargebacks".into()),
        }
        .into(),
        MessageKind::UnblockRider => UnblockRider { rider_id: rider() }.into(),
        MessageKind::RegisterRider => RegisterRider {
            rider_id: rider(),
            email: Some("ada@example.com".into()),
            phone: None,
        }
        .into(),
        MessageKind::RideRequested => RideRequested {
            rider_id: rider(),
            pickup: point(52.52, 13.40),
            dropoff: point(52.50, 13.45),
            payment_token: "tok_visa".into(),
            estimated_distance_km: 4.1,
            estimated_fare_cents: 1234,
            match_deadline: Timestamp::now(),
            expires_at: Some(Timestamp::now()),
        }
        .into(),
        MessageKind::RideConfirmed => RideConfirmed {
            rider_id: rider(),
            driver_id: driver(),
            estimated_fare_cents: 1234,
            pickup_deadline: Some(Timestamp::now()),
        }
        .into(),
        MessageKind::DriverArrived => DriverArrived {
            rider_id: rider(),
            driver_id: driver(),
            rider_wait_deadline: Timestamp::now(),
        }
        .into(),
        MessageKind::RideStarted => RideStarted {
            rider_id: rider(),
            driver_id: driver(),
        }
        .into(),
        MessageKind::RideCompleted => RideCompleted {
            rider_id: rider(),
            driver_id: driver(),
            distance_km: 4.2,
            duration_min: 12.5,
            fare_cents: 1300,
            distance_source: DistanceSource::Route,
            route_points: 42,
            fare: Some(FareBreakdown {
                base_cents: 250,
                distance_cents: 504,
                time_cents: 375,
                surge_cents: 171,
                total_cents: 1300,
            }),
            route: Some(RouteSummary {
                points: 12,
                length_km: 4.2,
                duration_s: 540.0,
                max_speed_kmh: 48.5,
                displacement_km: 3.9,
                spread_km: 3.9,
            }),
        }
        .into(),
        MessageKind::RideCancelled => RideCancelled {
            rider_id: rider(),
            reason: CancelReason::PaymentDeclined,
            driver_id: Some(driver()),
        }
        .into(),
        MessageKind::RideRejected => RideRejected {
            rider_id: rider(),
            score: 90,
            reasons: reasons.clone(),
            detail: Some("the trip is 490.0 km; at most 200 km are accepted".into()),
        }
        .into(),
        MessageKind::RideCommandRefused => RideCommandRefused {
            command: "cmd.ride.start".into(),
            reason: "ride is not confirmed".into(),
        }
        .into(),
        MessageKind::FraudCleared => FraudCleared {
            rider_id: rider(),
            score: 0,
            reasons: vec![],
        }
        .into(),
        MessageKind::FraudFlagged => FraudFlagged {
            rider_id: rider(),
            score: 90,
            reasons: reasons.clone(),
        }
        .into(),
        MessageKind::ReviewRide => ReviewRide {
            decision: ReviewDecision::Reject,
            note: Some("same car seen at home all evening".into()),
        }
        .into(),
        MessageKind::RideFlagged => RideFlagged {
            rider_id: rider(),
            driver_id: driver(),
            reasons: reasons.clone(),
        }
        .into(),
        MessageKind::RideReviewed => RideReviewed {
            rider_id: rider(),
            driver_id: driver(),
            decision: ReviewDecision::Approve,
            note: None,
        }
        .into(),
        MessageKind::EarningsHold => EarningsHold {
            driver_id: driver(),
            amount_cents: 1040,
            status: EarningsHoldStatus::Held,
        }
        .into(),
        MessageKind::RiderBlockChanged => RiderBlockChanged {
            rider_id: rider(),
            blocked: true,
            reason: None,
        }
        .into(),
        MessageKind::DriverAssigned => DriverAssigned {
            rider_id: rider(),
            driver_id: driver(),
            driver_name: "Bob".into(),
            pickup_distance_km: 0.8,
        }
        .into(),
        MessageKind::DriverUnavailable => DriverUnavailable {
            rider_id: rider(),
            reason: "no driver within 5 km".into(),
        }
        .into(),
        MessageKind::DriverReleased => DriverReleased {
            driver_id: driver(),
            reason: "ride completed".into(),
        }
        .into(),
        MessageKind::DriverUpdated => DriverUpdated {
            driver_id: driver(),
            name: "Bob".into(),
            online: true,
            location: point(3.0, 4.0),
        }
        .into(),
        MessageKind::PaymentAuthorized => PaymentAuthorized {
            rider_id: rider(),
            hold_id: "h_1".into(),
            amount_cents: 1234,
        }
        .into(),
        MessageKind::PaymentDeclined => PaymentDeclined {
            rider_id: rider(),
            code: "card_declined".into(),
            message: "Your card was declined.".into(),
        }
        .into(),
        MessageKind::PaymentCaptured => PaymentCaptured {
            rider_id: rider(),
            hold_id: "h_1".into(),
            amount_cents: 1300,
            earnings: Some(Earnings {
                driver_id: driver(),
                driver_cents: 1040,
                commission_cents: 260,
            }),
            fare: None,
        }
        .into(),
        MessageKind::PaymentVoided => PaymentVoided {
            rider_id: rider(),
            hold_id: "h_1".into(),
            amount_cents: 1234,
        }
        .into(),
        MessageKind::PaymentCaptureFailed => PaymentCaptureFailed {
            rider_id: rider(),
            hold_id: "h_1".into(),
            amount_cents: 1300,
            error: "gateway timeout".into(),
        }
        .into(),
        MessageKind::NotificationSent => NotificationSent {
            recipient: Recipient::Rider,
            recipient_id: "u_alice".into(),
            kind: NotificationKind::Receipt,
            channel: "log".into(),
            text: "You paid 13.00".into(),
            refund_id: None,
        }
        .into(),
    };
    let saga = match kind.key_kind() {
        KeyKind::Ride => ride,
        _ => None,
    };
    let root = Envelope::new(message.clone(), saga.clone(), "ridectl");
    // Events carry a causation id, as workers emit them.
    if kind.is_command() {
        root
    } else {
        Envelope::caused_by(&root, message, "", "ride")
    }
}

fn json_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json")
}

#[test]
fn committed_json_schemas_match_the_types() {
    let bless = std::env::var_os("RIDESAGA_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, schema) in json_schema::all() {
        let path = json_dir().join(&name);
        let expected = json_schema::render(&schema);
        let found = std::fs::read_to_string(&path).unwrap_or_default();
        if found != expected {
            if bless {
                std::fs::write(&path, expected).unwrap();
            } else {
                stale.push(name);
            }
        }
    }
    let known: Vec<String> = json_schema::all().into_iter().map(|(n, _)| n).collect();
    for entry in std::fs::read_dir(json_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            known.contains(&name),
            "schemas/json/{name} belongs to no message type"
        );
    }
    assert!(
        stale.is_empty(),
        "schemas/json is out of date for {stale:?}; regenerate with \
         RIDESAGA_BLESS=1 cargo test -p ridesaga-schemas --test it contract::"
    );
}

#[test]
fn every_encoded_message_validates_against_its_schema_file() {
    for kind in MessageKind::ALL {
        let text = std::fs::read_to_string(json_dir().join(json_schema::file_name(*kind)))
            .unwrap_or_else(|e| panic!("schema file of {kind}: {e}"));
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let encoded: serde_json::Value = serde_json::from_slice(&example(*kind).encode()).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&encoded)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{kind} does not validate: {errors:?}\n{encoded}"
        );
    }
}

#[test]
fn schema_files_refuse_a_message_of_another_type_and_unknown_fields() {
    let text = std::fs::read_to_string(json_dir().join("evt.ride.requested.json")).unwrap();
    let validator = jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap();
    let other: serde_json::Value =
        serde_json::from_slice(&example(MessageKind::RideConfirmed).encode()).unwrap();
    assert!(!validator.is_valid(&other));
    let mut extra: serde_json::Value =
        serde_json::from_slice(&example(MessageKind::RideRequested).encode()).unwrap();
    extra["data"]["surge"] = 2.into();
    assert!(!validator.is_valid(&extra));
}

#[test]
fn every_message_round_trips_through_its_subject() {
    for kind in MessageKind::ALL {
        let env = example(*kind);
        let decoded = Envelope::decode(&env.subject(), &env.encode()).unwrap();
        assert_eq!(decoded, env);
        assert!(env.subject().starts_with(kind.as_str()));
    }
}

fn decode_err(subject: &str, value: &serde_json::Value) -> String {
    Envelope::decode(subject, &serde_json::to_vec(value).unwrap())
        .unwrap_err()
        .to_string()
}

#[test]
fn decoding_ignores_fields_it_does_not_know() {
    let env = example(MessageKind::RideRequested);
    let mut value: serde_json::Value = serde_json::from_slice(&env.encode()).unwrap();
    value["data"]["surge"] = 2.into();
    value["priority"] = 1.into();
    let decoded = Envelope::decode(&env.subject(), &serde_json::to_vec(&value).unwrap()).unwrap();
    assert_eq!(decoded, env);
}

#[test]
fn decoding_refuses_oversize_payloads() {
    let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
    let err = Envelope::decode("evt.ride.requested.r_1", &big).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("limit"));
}

#[test]
fn decoding_refuses_disagreement_between_subject_and_envelope() {
    let env = example(MessageKind::RideRequested);
    let err = Envelope::decode("evt.ride.requested.r_other", &env.encode()).unwrap_err();
    assert!(matches!(err, DecodeError::KeyMismatch { .. }), "{err}");
    let err = Envelope::decode("evt.ride.confirmed.r_42", &env.encode()).unwrap_err();
    assert!(matches!(err, DecodeError::TypeMismatch { .. }), "{err}");
    let driver_cmd = example(MessageKind::DriverOffline);
    let err = Envelope::decode("cmd.driver.offline.d_eve", &driver_cmd.encode()).unwrap_err();
    assert!(err.to_string().contains("driver_id"), "{err}");
}

#[test]
fn decoding_refuses_other_major_versions_and_bad_values() {
    let env = example(MessageKind::RequestRide);
    for other in [0, SCHEMA_VERSION + 1] {
        let mut value: serde_json::Value = serde_json::from_slice(&env.encode()).unwrap();
        value["schema_version"] = other.into();
        let err = decode_err(&env.subject(), &value);
        assert!(err.contains(&format!("major version {other}")), "{err}");
    }

    let mut value: serde_json::Value = serde_json::from_slice(&env.encode()).unwrap();
    value["data"]["pickup"]["lat"] = 91.into();
    let err = decode_err(&env.subject(), &value);
    assert!(err.contains("latitude out of range"), "{err}");
}

#[test]
fn derived_events_keep_the_saga_and_correlation() {
    let cmd = example(MessageKind::RequestRide);
    let evt = Envelope::caused_by(&cmd, CancelRide {}, "x", "ride");
    assert_eq!(evt.saga_id, cmd.saga_id);
    assert_eq!(evt.correlation_id, cmd.correlation_id);
    assert_eq!(evt.causation_id.as_ref(), Some(&cmd.id));
    assert_eq!(
        evt.id,
        Envelope::caused_by(&cmd, CancelRide {}, "x", "ride").id
    );
}

#[test]
fn decoding_refuses_a_schedule_that_cannot_be_applied() {
    let env = example(MessageKind::SetDriverSchedule);
    for (field, value, expected) in [
        (
            "zone",
            serde_json::json!("Mars/Olympus"),
            "unknown time zone",
        ),
        (
            "shifts",
            serde_json::json!([{"start": "2026-12-25T02:00", "end": "2026-12-24T18:00"}]),
            "ends before it starts",
        ),
        (
            "weekly",
            serde_json::json!([{"day": "mon", "start": "08:00", "end": "16:00", "x": 1}]),
            "unknown field",
        ),
    ] {
        let mut encoded: serde_json::Value = serde_json::from_slice(&env.encode()).unwrap();
        encoded["data"]["schedule"][field] = value;
        let err = decode_err(&env.subject(), &encoded);
        assert!(err.contains(expected), "{field}: {err}");
    }
    // Clearing needs no schedule.
    let clear = example(MessageKind::DriverScheduleChanged);
    Envelope::decode(&clear.subject(), &clear.encode()).unwrap();
}
