//! Every decoder the workers and `ridectl` use, fed arbitrary bytes, arbitrary JSON and
//! envelope-shaped objects with random fields and types: none panics, and each either refuses
//! with a reason or returns a valid value that encodes and decodes back to itself.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_nats::HeaderMap;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ridesaga_schemas::*;
use serde_json::{Map, Value, json};
use time::macros::datetime;

/// The receiver's clock.
const NOW: Timestamp = Timestamp(datetime!(2030-01-01 12:00 UTC));

/// Subjects of every message type, with the ids the generated messages mostly carry.
fn subjects() -> Vec<String> {
    MessageKind::ALL
        .iter()
        .map(|kind| subject_for(*kind, key_of(*kind)))
        .collect()
}

fn key_of(kind: MessageKind) -> &'static str {
    match kind.key_kind() {
        KeyKind::Ride => "r_1",
        KeyKind::Driver => "d_1",
        KeyKind::Rider => "u_1",
    }
}

/// Decodes `payload` on `subject`: a refusal must say why; a message must be valid, carry the
/// subject it came on, and encode to bytes that decode to the same message.
fn check_decode(subject: &str, payload: &[u8]) -> Result<bool, TestCaseError> {
    match Envelope::decode_at(subject, payload, NOW) {
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            Ok(false)
        }
        Ok(envelope) => {
            prop_assert!(envelope.validate().is_ok(), "{envelope:?}");
            prop_assert_eq!(envelope.subject(), subject);
            let again = envelope.encode_checked();
            prop_assert!(again.is_ok(), "{:?}", again);
            let again = again.unwrap_or_default();
            let decoded = Envelope::decode_at(subject, &again, NOW);
            prop_assert!(decoded.is_ok(), "{:?}", decoded);
            prop_assert_eq!(decoded.ok(), Some(envelope));
            Ok(true)
        }
    }
}

/// Strings that mean something to the decoders, and arbitrary ones.
fn strings() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("r_1".to_owned()),
        Just("u_1".to_owned()),
        Just("d_1".to_owned()),
        Just("m_1".to_owned()),
        Just("".to_owned()),
        Just("a.b".to_owned()),
        Just("*".to_owned()),
        Just(">".to_owned()),
        Just("r_\u{0430}".to_owned()),
        Just("2030-01-01T12:00:00Z".to_owned()),
        Just("rider".to_owned()),
        Just("receipt".to_owned()),
        prop::sample::select(MessageKind::ALL).prop_map(|k| k.as_str().to_owned()),
        "[a-z_]{0,12}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})",
        any::<String>(),
    ]
}

fn numbers() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        (-200.0f64..50_000.0).prop_map(Value::from),
        (0u64..200_000_000).prop_map(Value::from),
    ]
}

/// Field names of envelopes and payloads, and other keys.
fn keys() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(field_names()),
        1 => "[a-z_]{1,8}",
    ]
}

fn field_names() -> Vec<String> {
    let mut names: Vec<String> = ENVELOPE_FIELDS.iter().map(|s| s.to_string()).collect();
    for kind in MessageKind::ALL {
        names.extend(payload_fields(*kind).iter().cloned());
    }
    names.extend(["lat".to_owned(), "lng".to_owned()]);
    names.sort();
    names.dedup();
    names
}

fn json_leaves() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        numbers(),
        strings().prop_map(Value::String),
    ]
}

fn json_values() -> impl Strategy<Value = Value> {
    json_leaves().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((keys(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

const ENVELOPE_FIELDS: [&str; 9] = [
    "id",
    "type",
    "schema_version",
    "occurred_at",
    "saga_id",
    "causation_id",
    "correlation_id",
    "producer",
    "data",
];

/// The payload's field names, from the type's JSON Schema (generated once).
fn payload_fields(kind: MessageKind) -> &'static [String] {
    static FIELDS: OnceLock<HashMap<MessageKind, Vec<String>>> = OnceLock::new();
    let fields = FIELDS.get_or_init(|| {
        MessageKind::ALL
            .iter()
            .map(|kind| {
                let schema = json_schema::schema_for(*kind);
                let name = schema["properties"]["data"]["$ref"]
                    .as_str()
                    .and_then(|r| r.rsplit('/').next())
                    .unwrap_or_default()
                    .to_owned();
                let names = schema["$defs"][&name]["properties"]
                    .as_object()
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default();
                (*kind, names)
            })
            .collect()
    });
    fields.get(&kind).map_or(&[], Vec::as_slice)
}

/// One field's fate in an envelope-shaped object: left out, a random value, or a plausible one
/// (built from `number`, which may still be out of bounds).
#[derive(Debug, Clone)]
struct Field {
    choice: u8,
    random: Value,
    number: f64,
}

fn field() -> impl Strategy<Value = Field> {
    let random = prop_oneof![4 => json_leaves(), 1 => json_values()];
    (0u8..20, random, -500.0f64..50_000.0).prop_map(|(choice, random, number)| Field {
        choice,
        random,
        number,
    })
}

fn timestamp(offset_seconds: f64) -> Value {
    let seconds = (offset_seconds as i64) % (20 * 86_400);
    let at = NOW.0 + time::Duration::seconds(seconds);
    json!(Timestamp(at).to_string())
}

/// A plausible value for a field, by its name.
fn plausible(kind: MessageKind, name: &str, n: f64) -> Value {
    let whole = n.abs() as u64;
    match name {
        "id" | "causation_id" | "correlation_id" => json!(format!("m_{whole}")),
        "type" => json!(kind.as_str()),
        "schema_version" => json!(1),
        "occurred_at" => timestamp(n * 2.0 - 100_000.0),
        "saga_id" => json!("r_1"),
        "producer" => json!("ridectl"),
        "rider_id" | "recipient_id" => json!("u_1"),
        "driver_id" => json!("d_1"),
        "pickup" | "dropoff" | "location" => json!({ "lat": n % 100.0, "lng": (n * 3.0) % 200.0 }),
        "score" => json!(whole % 120),
        "reasons" => json!(vec!["velocity"; (whole % 18) as usize]),
        "reason" if kind == MessageKind::RideCancelled => json!("no_driver"),
        "recipient" => json!("driver"),
        "kind" => json!("receipt"),
        "blocked" | "online" => json!(n > 0.0),
        _ if name.ends_with("_km") || name.ends_with("_min") => json!(n),
        _ if name.ends_with("_cents") => json!(whole * 2_500),
        _ if name.ends_with("deadline") || name == "expires_at" => timestamp(n * 20.0),
        _ => json!(format!("text {whole}")),
    }
}

/// Builds an envelope-shaped object for `kind` from `fields` (envelope fields first, then the
/// payload's), plus an extra key now and then, and the subject it is decoded on.
fn envelope_like(
    kind: MessageKind,
    fields: &[Field],
    extra: &Option<(String, Value)>,
) -> (String, Value) {
    let mut source = fields.iter().cycle();
    let mut fill = |names: &[String], object: &mut Map<String, Value>| {
        for name in names {
            let Some(f) = source.next() else { return };
            let value = match f.choice {
                0 => continue,
                1 => f.random.clone(),
                _ => plausible(kind, name, f.number),
            };
            object.insert(name.clone(), value);
        }
    };
    let mut data = Map::new();
    let mut envelope = Map::new();
    let envelope_fields: Vec<String> = ENVELOPE_FIELDS
        .iter()
        .filter(|f| **f != "data" && (**f != "saga_id" || kind.key_kind() == KeyKind::Ride))
        .map(|f| f.to_string())
        .collect();
    fill(&envelope_fields, &mut envelope);
    fill(payload_fields(kind), &mut data);
    envelope.insert("data".into(), Value::Object(data));
    if let Some((key, value)) = extra {
        envelope.insert(key.clone(), value.clone());
    }
    let key = match kind.key_kind() {
        KeyKind::Ride => envelope.get("saga_id"),
        KeyKind::Driver => envelope["data"].get("driver_id"),
        KeyKind::Rider => envelope["data"].get("rider_id"),
    };
    let token = key.and_then(Value::as_str).unwrap_or(key_of(kind));
    (format!("{kind}.{token}"), Value::Object(envelope))
}

#[test]
fn envelope_shaped_objects_decode_to_valid_messages_or_are_refused() {
    const CASES: u32 = 512;
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let decoded = AtomicUsize::new(0);
    let strategy = (
        prop::sample::select(MessageKind::ALL),
        prop::collection::vec(field(), 20),
        prop::option::weighted(0.1, (keys(), json_values())),
    );
    runner
        .run(&strategy, |(kind, fields, extra)| {
            let (subject, value) = envelope_like(kind, &fields, &extra);
            let bytes = serde_json::to_vec(&value).unwrap_or_default();
            if check_decode(&subject, &bytes)? {
                decoded.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    // The strategy reaches valid messages often, so the round trip above is exercised.
    let decoded = decoded.load(Ordering::Relaxed);
    eprintln!("{decoded} of {CASES} envelope-shaped objects decoded");
    assert!(
        decoded >= CASES as usize / 20,
        "only {decoded} of {CASES} decoded"
    );
}

proptest! {
    // Integration tests have no source file for proptest to store regressions next to.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(256)
    })]

    #[test]
    fn arbitrary_bytes_on_any_subject_are_refused_or_valid(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        subject in prop_oneof![prop::sample::select(subjects()), any::<String>()],
    ) {
        check_decode(&subject, &bytes)?;
    }

    #[test]
    fn arbitrary_json_on_every_subject_is_refused_or_valid(value in json_values()) {
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        for subject in subjects() {
            check_decode(&subject, &bytes)?;
        }
    }

    #[test]
    fn subjects_and_ids_parse_to_what_they_were_or_are_refused(text in prop_oneof![strings(), any::<String>()]) {
        if let Ok((kind, id)) = parse_subject(&text) {
            prop_assert_eq!(subject_for(kind, id), text.clone());
        }
        let id_like = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        let parsed = [
            RideId::parse(text.clone()).map(String::from),
            DriverId::parse(text.clone()).map(String::from),
            RiderId::parse(text.clone()).map(String::from),
            MessageId::parse(text.clone()).map(String::from),
        ];
        for result in parsed {
            match result {
                Ok(id) => {
                    prop_assert!(id_like(&id));
                    prop_assert_eq!(&id, &text);
                }
                Err(e) => {
                    prop_assert!(!id_like(&text));
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
        if let Ok(id) = serde_json::from_value::<RideId>(json!(text)) {
            prop_assert_eq!(id.as_str(), text.as_str());
        }
    }

    #[test]
    fn positions_parse_in_range_or_are_refused(text in prop_oneof![
        strings(),
        (any::<f64>(), any::<f64>()).prop_map(|(a, b)| format!("{a},{b}")),
        (-100.0f64..100.0, -200.0f64..200.0).prop_map(|(a, b)| format!("{a}, {b}")),
    ]) {
        match text.parse::<GeoPoint>() {
            Ok(p) => {
                prop_assert!((-90.0..=90.0).contains(&p.lat) && (-180.0..=180.0).contains(&p.lng));
                let encoded = serde_json::to_vec(&p).unwrap_or_default();
                prop_assert_eq!(serde_json::from_slice::<GeoPoint>(&encoded).ok(), Some(p));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn json_positions_are_in_range_or_refused(value in prop_oneof![
        json_values(),
        (numbers(), numbers()).prop_map(|(lat, lng)| json!({ "lat": lat, "lng": lng })),
    ]) {
        if let Ok(p) = serde_json::from_value::<GeoPoint>(value) {
            prop_assert!((-90.0..=90.0).contains(&p.lat) && (-180.0..=180.0).contains(&p.lng));
        }
    }

    #[test]
    fn dead_letter_records_decode_to_what_encodes_back_or_are_refused(value in prop_oneof![
        json_values(),
        (strings(), any::<u64>(), strings(), strings()).prop_map(|(s, n, reason, payload)| json!({
            "service": s, "instance": "i", "subject": s, "stream_sequence": n,
            "deliveries": n % 7, "reason": reason, "payload": payload,
            "failed_at": "2030-01-01T12:00:00Z",
        })),
    ]) {
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        if let Ok(record) = serde_json::from_slice::<DeadLetter>(&bytes) {
            let again = serde_json::to_vec(&record).unwrap_or_default();
            prop_assert_eq!(serde_json::from_slice::<DeadLetter>(&again).ok(), Some(record));
        }
    }

    #[test]
    fn headers_within_the_limit_pass_and_others_are_refused(
        headers in prop::collection::vec(("[A-Za-z-]{1,20}", "[ -~]{0,500}"), 0..10),
    ) {
        let mut map = HeaderMap::new();
        for (name, value) in &headers {
            map.append(name.as_str(), value.as_str());
        }
        let size = envelope::headers_size(&map);
        prop_assert_eq!(Envelope::check_headers(Some(&map)).is_ok(), size <= MAX_HEADER_BYTES);
    }
}
