//! Every way a message can be wrong, one row each, with the exact reason decoding gives: the
//! reason a worker writes into the dead-letter record (after `undecodable message: `). Where
//! the committed JSON Schema can state the rule, the row also checks that the schema refuses
//! the message, so that clients validating against it and the services agree.
//!
//! A replayed message with changed content under an old id decodes (each copy is valid on its
//! own); what happens to it is the inbox's and the stream's business, tested in the workers'
//! runtime tests.

use async_nats::HeaderMap;
use ridesaga_schemas::*;
use serde_json::{Value, json};
use time::macros::datetime;

/// The receiver's clock in every row.
const NOW: Timestamp = Timestamp(datetime!(2030-01-01 12:00 UTC));

fn rider() -> RiderId {
    RiderId::parse("u_1").unwrap()
}
fn driver() -> DriverId {
    DriverId::parse("d_1").unwrap()
}
fn point(lat: f64, lng: f64) -> GeoPoint {
    GeoPoint::new(lat, lng).unwrap()
}

/// A valid envelope with fixed ids and times, so that every reason is exact.
fn envelope(message: impl Into<Message>) -> Envelope {
    let message = message.into();
    let saga_id = match message.kind().key_kind() {
        KeyKind::Ride => Some(RideId::parse("r_1").unwrap()),
        _ => None,
    };
    Envelope {
        id: MessageId::parse("m_1").unwrap(),
        schema_version: SCHEMA_VERSION,
        occurred_at: NOW,
        saga_id,
        causation_id: None,
        correlation_id: "m_1".into(),
        producer: "ridectl".into(),
        message,
    }
}

fn request() -> Envelope {
    envelope(RequestRide {
        rider_id: rider(),
        pickup: point(52.52, 13.40),
        dropoff: point(52.50, 13.45),
        payment_token: "tok_visa".into(),
    })
}
fn complete() -> Envelope {
    envelope(CompleteRide {
        distance_km: Some(4.2),
        duration_min: Some(12.5),
    })
}
fn register() -> Envelope {
    envelope(RegisterDriver {
        driver_id: driver(),
        name: "Ana".into(),
        location: point(52.5, 13.4),
        email: None,
        phone: None,
    })
}
fn block() -> Envelope {
    envelope(BlockRider {
        rider_id: rider(),
        reason: Some("chargebacks".into()),
    })
}
fn requested() -> Envelope {
    envelope(RideRequested {
        rider_id: rider(),
        pickup: point(52.52, 13.40),
        dropoff: point(52.50, 13.45),
        payment_token: "tok_visa".into(),
        estimated_distance_km: 4.1,
        estimated_fare_cents: 1234,
        match_deadline: Timestamp(datetime!(2030-01-01 12:00:30 UTC)),
        expires_at: Some(Timestamp(datetime!(2030-01-01 12:00:45 UTC))),
    })
}
fn completed() -> Envelope {
    envelope(RideCompleted {
        rider_id: rider(),
        driver_id: driver(),
        distance_km: 4.2,
        duration_min: 12.5,
        fare_cents: 1300,
        distance_source: DistanceSource::Reported,
        route_points: 0,
        fare: None,
        route: None,
    })
}
fn flagged() -> Envelope {
    envelope(FraudFlagged {
        rider_id: rider(),
        score: 90,
        reasons: vec!["velocity".into()],
    })
}
fn authorized() -> Envelope {
    envelope(PaymentAuthorized {
        rider_id: rider(),
        hold_id: "h_1".into(),
        amount_cents: 1234,
    })
}

/// The envelope's JSON, edited.
fn edit(base: &Envelope, change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(&base.encode()).unwrap();
    change(&mut value);
    serde_json::to_vec(&value).unwrap()
}

/// The envelope's JSON text with `from` replaced by `to` (for what a JSON value cannot hold:
/// duplicate keys, numbers beyond f64, bare NaN).
fn text(base: &Envelope, from: &str, to: &str) -> Vec<u8> {
    let encoded = String::from_utf8(base.encode()).unwrap();
    assert!(encoded.contains(from), "{from:?} not in {encoded}");
    encoded.replacen(from, to, 1).into_bytes()
}

fn remove(value: &mut Value, field: &str) {
    value.as_object_mut().unwrap().remove(field);
}

/// Whether the committed JSON Schema can state the broken rule (and so must refuse the row).
#[derive(Clone, Copy, PartialEq)]
enum Schema {
    Refuses,
    /// Not expressible in JSON Schema: sizes, subjects, clocks, relative deadlines.
    Silent,
}
use Schema::{Refuses, Silent};

struct Case {
    what: &'static str,
    subject: String,
    payload: Vec<u8>,
    reason: String,
    schema: Schema,
}

fn id_error(what: &str, value: &str, found: char) -> String {
    format!(
        "{what} {value:?} contains {found:?}; only ASCII letters, digits, '_' and '-' are allowed \
         (ids are NATS subject tokens)"
    )
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |what, subject: String, payload: Vec<u8>, reason: &str, schema| {
        cases.push(Case {
            what,
            subject,
            payload,
            reason: reason.to_owned(),
            schema,
        })
    };
    let (req, req_subject) = (request(), request().subject());
    let long_id = "r".repeat(300);
    let lookalike = "r_\u{0430}bc"; // Cyrillic 'а'
    let fullwidth = "d_\u{FF11}"; // fullwidth digit one

    // ---- size and encoding ------------------------------------------------------------------
    add(
        "payload over the limit",
        req_subject.clone(),
        vec![b' '; MAX_MESSAGE_BYTES + 1],
        "message is 65537 bytes; the limit is 65536",
        Silent,
    );
    add(
        "empty payload",
        req_subject.clone(),
        Vec::new(),
        "malformed envelope: EOF while parsing a value at line 1 column 0",
        Silent,
    );
    add(
        "not JSON",
        req_subject.clone(),
        b"not json".to_vec(),
        "malformed envelope: expected ident at line 1 column 2",
        Silent,
    );
    add(
        "not UTF-8",
        req_subject.clone(),
        b"{\"id\":\"\xff\xfe\"}".to_vec(),
        "malformed envelope: invalid unicode code point at line 1 column 8",
        Silent,
    );
    add(
        "a JSON array instead of an object",
        req_subject.clone(),
        b"[]".to_vec(),
        "malformed envelope: invalid type: sequence, expected a JSON object at line 1 column 0",
        Refuses,
    );

    // ---- wrong types ------------------------------------------------------------------------
    add(
        "schema_version as a string",
        req_subject.clone(),
        edit(&req, |v| v["schema_version"] = json!("1")),
        "malformed envelope: invalid type: string \"1\", expected u16 at line 1 column 251",
        Refuses,
    );
    add(
        "negative schema_version",
        req_subject.clone(),
        edit(&req, |v| v["schema_version"] = json!(-1)),
        "malformed envelope: invalid value: integer `-1`, expected u16 at line 1 column 250",
        Refuses,
    );
    add(
        "id as a number",
        req_subject.clone(),
        edit(&req, |v| v["id"] = json!(42)),
        "malformed envelope: invalid type: integer `42`, expected a string at line 1 column 153",
        Refuses,
    );
    add(
        "data null",
        req_subject.clone(),
        edit(&req, |v| v["data"] = Value::Null),
        "invalid cmd.ride.request payload: invalid type: null, expected a JSON object at line 1 column 4",
        Refuses,
    );
    add(
        "latitude as a string",
        req_subject.clone(),
        edit(&req, |v| v["data"]["pickup"]["lat"] = json!("52.52")),
        "invalid cmd.ride.request payload: invalid type: string \"52.52\", expected f64 at line 1 column 86",
        Refuses,
    );
    add(
        "fare with a fraction",
        completed().subject(),
        edit(&completed(), |v| v["data"]["fare_cents"] = json!(12.5)),
        "invalid evt.ride.completed payload: invalid type: floating point `12.5`, expected u64 at line 1 column 103",
        Refuses,
    );
    add(
        "negative fare",
        completed().subject(),
        edit(&completed(), |v| v["data"]["fare_cents"] = json!(-100)),
        "invalid evt.ride.completed payload: invalid value: integer `-100`, expected u64 at line 1 column 103",
        Refuses,
    );
    add(
        "reasons as a string",
        flagged().subject(),
        edit(&flagged(), |v| v["data"]["reasons"] = json!("velocity")),
        "invalid evt.fraud.flagged payload: invalid type: string \"velocity\", expected a sequence at line 1 column 21",
        Refuses,
    );

    // ---- missing fields --------------------------------------------------------------------
    add(
        "no id",
        req_subject.clone(),
        edit(&req, |v| remove(v, "id")),
        "malformed envelope: missing field `id` at line 1 column 265",
        Refuses,
    );
    add(
        "no type",
        req_subject.clone(),
        edit(&req, |v| remove(v, "type")),
        "malformed envelope: missing field `type` at line 1 column 250",
        Refuses,
    );
    add(
        "no data",
        req_subject.clone(),
        edit(&req, |v| remove(v, "data")),
        "malformed envelope: missing field `data` at line 1 column 154",
        Refuses,
    );
    add(
        "payload without rider_id",
        req_subject.clone(),
        edit(&req, |v| remove(&mut v["data"], "rider_id")),
        "invalid cmd.ride.request payload: missing field `rider_id` at line 1 column 97",
        Refuses,
    );
    add(
        "a field given twice",
        req_subject.clone(),
        text(&req, "\"id\":\"m_1\"", "\"id\":\"m_1\",\"id\":\"m_2\""),
        "malformed envelope: duplicate field `id` at line 1 column 16",
        Silent,
    );

    // ---- versions and types -----------------------------------------------------------------
    add(
        "unknown type in the envelope",
        req_subject.clone(),
        edit(&req, |v| v["type"] = json!("cmd.ride.fly")),
        "envelope type \"cmd.ride.fly\" does not match subject type cmd.ride.request",
        Refuses,
    );
    add(
        "schema_version 0",
        req_subject.clone(),
        edit(&req, |v| v["schema_version"] = json!(0)),
        "cmd.ride.request follows contract major version 0; this reader reads major version 1 only",
        Refuses,
    );
    add(
        "schema_version from the future",
        req_subject.clone(),
        edit(&req, |v| v["schema_version"] = json!(2)),
        "cmd.ride.request follows contract major version 2; this reader reads major version 1 only",
        Refuses,
    );

    // ---- subjects and ids that are not single subject tokens --------------------------------
    let payload = req.encode();
    add(
        "unknown subject type",
        "cmd.ride.fly.r_1".into(),
        payload.clone(),
        "subject \"cmd.ride.fly.r_1\" has a type this build does not know",
        Silent,
    );
    add(
        "subject without an id",
        "cmd.ride.r_1".into(),
        payload.clone(),
        "subject \"cmd.ride.r_1\" does not have the form <cmd|evt>.<domain>.<name>.<id>",
        Silent,
    );
    add(
        "id a.b in the subject",
        "cmd.ride.request.a.b".into(),
        payload.clone(),
        "subject \"cmd.ride.request.a.b\" does not have the form <cmd|evt>.<domain>.<name>.<id>",
        Silent,
    );
    for (what, id, reason) in [
        (
            "id * in the subject",
            "*",
            format!("subject id: {}", id_error("subject id", "*", '*')),
        ),
        (
            "id > in the subject",
            ">",
            format!("subject id: {}", id_error("subject id", ">", '>')),
        ),
        (
            "empty id in the subject",
            "",
            "subject id: subject id is empty".to_owned(),
        ),
        (
            "id with a space in the subject",
            "r 1",
            format!("subject id: {}", id_error("subject id", "r 1", ' ')),
        ),
        (
            "300-character id in the subject",
            &long_id,
            "subject id: subject id is 300 bytes long; at most 64 are allowed".to_owned(),
        ),
        (
            "look-alike id in the subject",
            lookalike,
            format!(
                "subject id: {}",
                id_error("subject id", lookalike, '\u{0430}')
            ),
        ),
    ] {
        add(
            what,
            format!("cmd.ride.request.{id}"),
            payload.clone(),
            &reason,
            Silent,
        );
    }
    add(
        "saga_id a.b",
        req_subject.clone(),
        edit(&req, |v| v["saga_id"] = json!("a.b")),
        &format!(
            "malformed envelope: {} at line 1 column 230",
            id_error("ride id", "a.b", '.')
        ),
        Refuses,
    );
    add(
        "message id >",
        req_subject.clone(),
        edit(&req, |v| v["id"] = json!(">")),
        &format!(
            "malformed envelope: {} at line 1 column 154",
            id_error("message id", ">", '>')
        ),
        Refuses,
    );
    add(
        "rider_id * in the payload",
        req_subject.clone(),
        edit(&req, |v| v["data"]["rider_id"] = json!("*")),
        &format!(
            "invalid cmd.ride.request payload: {} at line 1 column 112",
            id_error("rider id", "*", '*')
        ),
        Refuses,
    );
    add(
        "driver_id with a full-width digit",
        "cmd.driver.register.d_1".into(),
        edit(&register(), |v| v["data"]["driver_id"] = json!(fullwidth)),
        &format!(
            "invalid cmd.driver.register payload: {} at line 1 column 20",
            id_error("driver id", fullwidth, '\u{FF11}')
        ),
        Refuses,
    );
    add(
        "300-character causation_id",
        req_subject.clone(),
        edit(&req, |v| v["causation_id"] = json!(long_id)),
        "malformed envelope: message id is 300 bytes long; at most 64 are allowed at line 1 column 318",
        Refuses,
    );
    add(
        "correlation_id with a space",
        req_subject.clone(),
        edit(&req, |v| v["correlation_id"] = json!("a b")),
        &format!(
            "malformed envelope: {}",
            id_error("correlation id", "a b", ' ')
        ),
        Refuses,
    );
    add(
        "empty producer",
        req_subject.clone(),
        edit(&req, |v| v["producer"] = json!("")),
        "malformed envelope: producer is empty",
        Refuses,
    );

    // ---- subject and envelope that disagree -------------------------------------------------
    add(
        "another ride in the subject",
        "cmd.ride.request.r_2".into(),
        payload.clone(),
        "cmd.ride.request names saga_id \"r_1\" but its subject ends with \"r_2\"",
        Silent,
    );
    add(
        "another type in the subject",
        "evt.ride.confirmed.r_1".into(),
        payload.clone(),
        "envelope type \"cmd.ride.request\" does not match subject type evt.ride.confirmed",
        Silent,
    );
    add(
        "another driver in the subject",
        "cmd.driver.register.d_2".into(),
        register().encode(),
        "cmd.driver.register names driver_id \"d_1\" but its subject ends with \"d_2\"",
        Silent,
    );
    add(
        "a ride message without saga_id",
        req_subject.clone(),
        edit(&req, |v| remove(v, "saga_id")),
        "cmd.ride.request is a ride message but has no saga_id",
        Refuses,
    );
    add(
        "a rider message with a saga_id",
        block().subject(),
        edit(&block(), |v| v["saga_id"] = json!("r_1")),
        "cmd.fraud.block is not a ride message but has a saga_id",
        Refuses,
    );

    // ---- fares, distances, durations, scores, text ------------------------------------------
    add(
        "absurd fare",
        completed().subject(),
        edit(&completed(), |v| {
            v["data"]["fare_cents"] = json!(1_000_000_000_000u64)
        }),
        "invalid evt.ride.completed payload: fare_cents is 1000000000000; at most 100000000 is allowed",
        Refuses,
    );
    add(
        "hold beyond u64",
        authorized().subject(),
        text(
            &authorized(),
            "\"amount_cents\":1234",
            "\"amount_cents\":18446744073709551616",
        ),
        "invalid evt.payment.authorized payload: invalid type: floating point `1.8446744073709552e+19`, expected u64 at line 1 column 69",
        Refuses,
    );
    add(
        "negative distance driven",
        completed().subject(),
        edit(&completed(), |v| v["data"]["distance_km"] = json!(-3.0)),
        "invalid evt.ride.completed payload: distance_km is -3.0; it must be a number between 0 and 40075.0",
        Refuses,
    );
    let refund = envelope(RefundRide {
        refund_id: RefundId::parse("rf_1").unwrap(),
        amount_cents: Some(500),
        reason: None,
    });
    add(
        "a refund of nothing",
        refund.subject(),
        edit(&refund, |v| v["data"]["amount_cents"] = json!(0)),
        "invalid cmd.payment.refund payload: amount_cents is 0; at least 1 is required",
        Refuses,
    );
    add(
        "a refund id that is no subject token",
        refund.subject(),
        edit(&refund, |v| v["data"]["refund_id"] = json!("rf.1")),
        &format!(
            "invalid cmd.payment.refund payload: {} at line 1 column 39",
            id_error("refund id", "rf.1", '.')
        ),
        Refuses,
    );
    add(
        "negative distance in a command",
        complete().subject(),
        edit(&complete(), |v| v["data"]["distance_km"] = json!(-0.5)),
        "invalid cmd.ride.complete payload: distance_km is -0.5; it must be a number between 0 and 40075.0",
        Refuses,
    );
    add(
        "infinite distance",
        completed().subject(),
        text(&completed(), "\"distance_km\":4.2", "\"distance_km\":1e999"),
        "invalid evt.ride.completed payload: number out of range at line 1 column 55",
        Silent,
    );
    add(
        "absurd duration",
        complete().subject(),
        edit(&complete(), |v| v["data"]["duration_min"] = json!(1e6)),
        "invalid cmd.ride.complete payload: duration_min is 1000000.0; it must be a number between 0 and 10080.0",
        Refuses,
    );
    add(
        "negative duration",
        completed().subject(),
        edit(&completed(), |v| v["data"]["duration_min"] = json!(-1)),
        "invalid evt.ride.completed payload: duration_min is -1.0; it must be a number between 0 and 10080.0",
        Refuses,
    );
    add(
        "trip longer than the earth",
        requested().subject(),
        edit(&requested(), |v| {
            v["data"]["estimated_distance_km"] = json!(50_000)
        }),
        "invalid evt.ride.requested payload: estimated_distance_km is 50000.0; it must be a number between 0 and 40075.0",
        Refuses,
    );
    add(
        "latitude 91",
        req_subject.clone(),
        edit(&req, |v| v["data"]["pickup"]["lat"] = json!(91)),
        "invalid cmd.ride.request payload: latitude out of range: 91.0 (must be between -90 and 90) at line 1 column 93",
        Refuses,
    );
    add(
        "longitude -180.5",
        req_subject.clone(),
        edit(&req, |v| v["data"]["dropoff"]["lng"] = json!(-180.5)),
        "invalid cmd.ride.request payload: longitude out of range: -180.5 (must be between -180 and 180) at line 1 column 36",
        Refuses,
    );
    add(
        "infinite latitude",
        req_subject.clone(),
        text(&req, "\"lat\":52.52", "\"lat\":-1e400"),
        "invalid cmd.ride.request payload: number out of range at line 1 column 40",
        Silent,
    );
    add(
        "latitude NaN as a string",
        req_subject.clone(),
        edit(&req, |v| v["data"]["pickup"]["lat"] = json!("NaN")),
        "invalid cmd.ride.request payload: invalid type: string \"NaN\", expected f64 at line 1 column 84",
        Refuses,
    );
    add(
        "latitude NaN bare",
        req_subject.clone(),
        text(&req, "\"lat\":52.52", "\"lat\":NaN"),
        "malformed envelope: expected value at line 1 column 196",
        Silent,
    );
    add(
        "score over 100",
        flagged().subject(),
        edit(&flagged(), |v| v["data"]["score"] = json!(101)),
        "invalid evt.fraud.flagged payload: score is 101; at most 100 is allowed",
        Refuses,
    );
    add(
        "too many reasons",
        flagged().subject(),
        edit(&flagged(), |v| {
            v["data"]["reasons"] = json!(vec!["velocity"; 17])
        }),
        "invalid evt.fraud.flagged payload: reasons has 17 entries; at most 16 are allowed",
        Refuses,
    );
    add(
        "a name with a terminal escape",
        register().subject(),
        edit(&register(), |v| v["data"]["name"] = json!("Ana\u{1b}[2J")),
        "invalid cmd.driver.register payload: name contains the control character '\\u{1b}'",
        Refuses,
    );
    add(
        "a 501-character name",
        register().subject(),
        edit(&register(), |v| v["data"]["name"] = json!("a".repeat(501))),
        "invalid cmd.driver.register payload: name is 501 characters long; at most 500 are allowed",
        Refuses,
    );
    add(
        "a reason that reverses the text after it",
        block().subject(),
        edit(&block(), |v| {
            v["data"]["reason"] = json!("fraud \u{202E}gnirts")
        }),
        "invalid cmd.fraud.block payload: reason contains the control character '\\u{202e}'",
        Refuses,
    );
    add(
        "a reason with a line break",
        flagged().subject(),
        edit(&flagged(), |v| {
            v["data"]["reasons"] = json!(["ok", "two\nlines"])
        }),
        "invalid evt.fraud.flagged payload: reasons[1] contains the control character '\\n'",
        Refuses,
    );

    // ---- timestamps -------------------------------------------------------------------------
    add(
        "occurred two days ahead of the receiver",
        req_subject.clone(),
        edit(&req, |v| v["occurred_at"] = json!("2030-01-03T12:00:00Z")),
        "cmd.ride.request occurred at 2030-01-03T12:00:00Z, more than 24 hours ahead of the receiver's clock (2030-01-01T12:00:00Z)",
        Silent,
    );
    add(
        "occurred at the end of time",
        req_subject.clone(),
        edit(&req, |v| v["occurred_at"] = json!("9999-12-31T23:59:59Z")),
        "cmd.ride.request occurred at 9999-12-31T23:59:59Z, more than 24 hours ahead of the receiver's clock (2030-01-01T12:00:00Z)",
        Silent,
    );
    add(
        "occurred_at not a time",
        req_subject.clone(),
        edit(&req, |v| v["occurred_at"] = json!("yesterday")),
        "malformed envelope: the 'year' component could not be parsed at line 1 column 182",
        Refuses,
    );
    add(
        "occurred_at in month 13",
        req_subject.clone(),
        edit(&req, |v| v["occurred_at"] = json!("2030-13-01T00:00:00Z")),
        "malformed envelope: month was not in range at line 1 column 193",
        Refuses,
    );
    add(
        "occurred_at as a number",
        req_subject.clone(),
        edit(&req, |v| v["occurred_at"] = json!(1_893_456_000)),
        "malformed envelope: invalid type: integer `1893456000`, expected an RFC3339-formatted `OffsetDateTime` at line 1 column 181",
        Refuses,
    );
    add(
        "a match deadline a month out",
        requested().subject(),
        edit(&requested(), |v| {
            v["data"]["match_deadline"] = json!("2030-02-01T12:00:00Z")
        }),
        "invalid evt.ride.requested payload: match_deadline 2030-02-01T12:00:00Z is more than 7 days after the message occurred (2030-01-01T12:00:00Z)",
        Silent,
    );
    cases
}

fn schema_validator(kind: &str) -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("json")
        .join(format!("{kind}.json"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

#[test]
fn every_bad_input_is_refused_with_its_exact_reason() {
    let cases = cases();
    assert!(cases.len() >= 60, "{} rows", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        match Envelope::decode_at(&case.subject, &case.payload, NOW) {
            Ok(envelope) => wrong.push(format!("{}: decoded to {envelope:?}", case.what)),
            Err(e) if e.to_string() != case.reason => wrong.push(format!(
                "{}:\n  expected {}\n  got      {e}",
                case.what, case.reason
            )),
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_json_schemas_refuse_what_they_can_state() {
    let mut wrong = Vec::new();
    for case in cases().iter().filter(|c| c.schema == Refuses) {
        let kind = parse_subject(&case.subject).unwrap().0;
        let value: Value = serde_json::from_slice(&case.payload).unwrap();
        if schema_validator(kind.as_str()).is_valid(&value) {
            wrong.push(case.what);
        }
    }
    assert!(wrong.is_empty(), "the JSON Schema accepts {wrong:?}");
    // And every base row is valid, so a refusal is the edit's doing.
    for base in [
        request(),
        complete(),
        register(),
        block(),
        requested(),
        completed(),
    ] {
        let value: Value = serde_json::from_slice(&base.encode()).unwrap();
        assert!(schema_validator(base.kind().as_str()).is_valid(&value));
        assert_eq!(
            Envelope::decode_at(&base.subject(), &base.encode(), NOW).unwrap(),
            base
        );
    }
}

#[test]
fn oversize_headers_are_refused_and_ordinary_ones_pass() {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "m_1");
    assert_eq!(envelope::headers_size(&headers), 30);
    assert!(Envelope::check_headers(Some(&headers)).is_ok());
    assert!(Envelope::check_headers(None).is_ok());
    headers.insert("X-Filler", "x".repeat(MAX_HEADER_BYTES).as_str());
    assert_eq!(
        Envelope::check_headers(Some(&headers))
            .unwrap_err()
            .to_string(),
        "headers are 4138 bytes; the limit is 4096"
    );
}

#[test]
fn publishing_refuses_what_decoding_would_and_oversize_messages() {
    let mut bad = register();
    bad.message = Message::RegisterDriver(RegisterDriver {
        driver_id: driver(),
        name: "x".repeat(501),
        location: point(1.0, 2.0),
        email: None,
        phone: None,
    });
    assert_eq!(
        bad.encode_checked().unwrap_err().to_string(),
        "invalid cmd.driver.register payload: name is 501 characters long; at most 500 are allowed"
    );
    let mut bad = request();
    bad.correlation_id = "a.b".into();
    assert!(bad.validate().is_err());
    assert!(request().encode_checked().is_ok());
}

#[test]
fn a_registration_with_a_malformed_address_or_phone_is_refused_naming_it() {
    let mut bad = register();
    let Message::RegisterDriver(m) = &mut bad.message else {
        unreachable!()
    };
    m.email = Some("ana.example.com".into());
    assert_eq!(
        bad.encode_checked().unwrap_err().to_string(),
        "invalid cmd.driver.register payload: email \"ana.example.com\" is not an email \
         address (no '@')"
    );
    let rider = Envelope::new(
        RegisterRider {
            rider_id: RiderId::parse("u_ada").unwrap(),
            email: Some("ada@example.com".into()),
            phone: Some("0151 1234567".into()),
        },
        None,
        "ridectl",
    );
    let error = Envelope::decode(&rider.subject(), &rider.encode())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("phone \"0151 1234567\" is not a phone number in E.164"),
        "{error}"
    );
}

#[test]
fn the_largest_valid_messages_fit_the_size_limit() {
    // Four bytes per character is the most JSON needs for a character the text rules allow.
    let text = "\u{1F600}".repeat(limits::MAX_TEXT_CHARS);
    let reasons = vec![text.clone(); limits::MAX_REASONS];
    for message in [
        Message::from(RideRejected {
            rider_id: rider(),
            score: 100,
            reasons: reasons.clone(),
            detail: Some(text.clone()),
        }),
        Message::from(FraudFlagged {
            rider_id: rider(),
            score: 100,
            reasons,
        }),
        Message::from(NotificationSent {
            recipient: Recipient::Rider,
            recipient_id: text.clone(),
            kind: NotificationKind::Receipt,
            channel: text.clone(),
            text: "\u{1F600}".repeat(limits::MAX_NOTIFICATION_CHARS),
            refund_id: Some(RefundId::parse(format!("rf_{}", "x".repeat(61))).unwrap()),
        }),
    ] {
        let envelope = envelope(message);
        let bytes = envelope.encode_checked().unwrap();
        assert!(bytes.len() <= MAX_MESSAGE_BYTES, "{}", bytes.len());
        assert_eq!(
            Envelope::decode_at(&envelope.subject(), &bytes, NOW).unwrap(),
            envelope
        );
    }
}

/// A newer producer of the same major version adds fields (to the envelope, a payload, a nested
/// object): a reader of today decodes the message it knows, the additions dropped. The JSON
/// Schemas, which say what a producer of this version may write, still refuse them.
#[test]
fn a_newer_producers_additions_are_ignored_by_readers_and_refused_by_the_schemas() {
    let mut completed = completed();
    if let Message::RideCompleted(m) = &mut completed.message {
        m.fare = Some(FareBreakdown {
            base_cents: 250,
            distance_cents: 504,
            time_cents: 375,
            surge_cents: 171,
            total_cents: 1300,
        });
    }
    let rows: Vec<(&str, Envelope, Vec<u8>)> = vec![
        (
            "envelope field",
            request(),
            edit(&request(), |v| v["trace_parent"] = json!("00-ab-cd-01")),
        ),
        (
            "payload field",
            request(),
            edit(&request(), |v| v["data"]["surge"] = json!(2)),
        ),
        (
            "field of a position",
            request(),
            edit(&request(), |v| v["data"]["pickup"]["alt"] = json!(34)),
        ),
        (
            "field of a nested object, with a structured value",
            completed.clone(),
            edit(&completed, |v| {
                v["data"]["fare"]["tip"] = json!({"cents": 100, "currency": "EUR"})
            }),
        ),
        (
            "null in a field nobody knows",
            request(),
            edit(&request(), |v| v["data"]["refund_policy"] = Value::Null),
        ),
    ];
    for (what, base, payload) in rows {
        let decoded = Envelope::decode_at(&base.subject(), &payload, NOW)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(decoded, base, "{what}");
        let value: Value = serde_json::from_slice(&payload).unwrap();
        assert!(
            !schema_validator(base.kind().as_str()).is_valid(&value),
            "{what}: the schema accepts it"
        );
    }
}

/// Tolerance stops at fields a reader does not know: a known field of a newer producer is held
/// to today's type and bounds, a required one must be there, and another major version is
/// refused whatever else the message holds.
#[test]
fn a_newer_producer_is_still_held_to_what_the_reader_knows() {
    let with_extra = |change: fn(&mut Value)| {
        edit(&request(), |v| {
            v["data"]["surge"] = json!(2);
            change(v)
        })
    };
    let subject = request().subject();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            with_extra(|v| v["data"]["payment_token"] = json!(7)),
            "invalid type: integer `7`, expected a string",
        ),
        (
            with_extra(|v| v["data"]["pickup"]["lat"] = json!(91)),
            "latitude out of range",
        ),
        (
            with_extra(|v| remove(&mut v["data"], "rider_id")),
            "missing field `rider_id`",
        ),
        (
            with_extra(|v| v["schema_version"] = json!(2)),
            "follows contract major version 2; this reader reads major version 1 only",
        ),
    ];
    for (payload, reason) in cases {
        let err = Envelope::decode_at(&subject, &payload, NOW)
            .unwrap_err()
            .to_string();
        assert!(err.contains(reason), "expected {reason:?} in {err:?}");
    }
}
