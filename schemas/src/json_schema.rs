//! JSON Schemas of every message, one per type, written to `schemas/json/<type>.json` so that a
//! client in any language finds a message's schema from its subject.

use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::envelope::SCHEMA_VERSION;
use crate::ids::ID_PATTERN;
use crate::messages::MessageKind;

/// The file name of a type's schema, e.g. `evt.ride.requested.json`.
pub fn file_name(kind: MessageKind) -> String {
    format!("{kind}.json")
}

/// The full JSON Schema (draft 2020-12) of one message type, envelope included.
pub fn schema_for(kind: MessageKind) -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let payload = kind.payload_schema(&mut generator);
    let defs: serde_json::Map<String, Value> =
        generator.take_definitions(true).into_iter().collect();
    let id_schema = json!({ "type": "string", "pattern": ID_PATTERN });
    let ride_message = kind.key_kind() == crate::KeyKind::Ride;
    let mut required = vec![
        "id",
        "type",
        "schema_version",
        "occurred_at",
        "correlation_id",
        "producer",
        "data",
    ];
    if ride_message {
        required.push("saga_id");
    }
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("urn:ridesaga:schema:{kind}"),
        "title": kind.as_str(),
        "description": format!(
            "Envelope and payload of {kind}, published on subject {kind}.<{}>",
            match kind.key_kind() {
                crate::KeyKind::Ride => "ride_id",
                crate::KeyKind::Driver => "driver_id",
                crate::KeyKind::Rider => "rider_id",
            }
        ),
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": {
            "id": id_schema,
            "type": { "const": kind.as_str() },
            "schema_version": { "type": "integer", "minimum": 1, "maximum": SCHEMA_VERSION },
            "occurred_at": { "type": "string", "format": "date-time" },
            "saga_id": if ride_message { id_schema.clone() } else { json!(false) },
            "causation_id": id_schema,
            "correlation_id": id_schema,
            "producer": id_schema,
            "data": payload.to_value(),
        },
    });
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs);
    }
    schema
}

/// Every schema with its file name, in a stable order.
pub fn all() -> Vec<(String, Value)> {
    let mut all: Vec<(String, Value)> = MessageKind::ALL
        .iter()
        .map(|k| (file_name(*k), schema_for(*k)))
        .collect();
    all.push((POSITION_FILE.to_owned(), position_schema()));
    all
}

/// The file name of the driver position's schema (subject `pos.driver.<driver_id>`).
pub const POSITION_FILE: &str = "pos.driver.json";

/// The JSON Schema of a driver position: a bare compact body, no envelope.
pub fn position_schema() -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator
        .into_root_schema_for::<crate::position::Position>()
        .to_value();
    schema["$id"] = json!("urn:ridesaga:schema:pos.driver");
    schema["title"] = json!("pos.driver");
    schema["description"] = json!(
        "A driver's position, published on subject pos.driver.<driver_id> to the positions stream"
    );
    schema
}

/// The pretty-printed text of a schema file, with a trailing newline.
pub fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}
