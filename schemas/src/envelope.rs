//! The envelope every message travels in, its JSON encoding, and decoding that checks the
//! envelope against the subject it arrived on.

use std::time::Duration;

use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ids::{IdError, MessageId, RideId, validate_token};
use crate::limits::ValueError;
use crate::messages::{KeyKind, Message, MessageKind, Timestamp};
use crate::object::Object;
use crate::subject::{SubjectError, parse_subject};

/// The contract's major version: what this build writes in every envelope's `schema_version`,
/// and the only one it reads. Compatible changes (a new message, an optional field) keep it;
/// a breaking change bumps it (see `schemas/released/CHANGELOG.md`). Within a major version a
/// reader ignores fields it does not know, so a newer producer's additions reach an older
/// reader as the message it knows.
pub const SCHEMA_VERSION: u16 = 1;

/// Largest encoded message accepted, in bytes. Our messages are well under 1 KiB; the server's
/// `max_payload` in nats.conf is set above this.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Largest total size of a message's headers accepted, in bytes, counted as they travel
/// (`NATS/1.0`, one `Name: value` line per value, the blank line). A publisher sets one,
/// `Nats-Msg-Id` (at most 64 bytes); tracing headers fit easily.
pub const MAX_HEADER_BYTES: usize = 4 * 1024;

/// How far ahead of the receiver's clock a message's `occurred_at` may be: a day. Producers
/// stamp messages with their own clock, and clocks drift by seconds, not days; a message from
/// further ahead would sort after everything that happens in the meantime.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(24 * 3600);

/// A message with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique id; also the `Nats-Msg-Id` it is published with.
    pub id: MessageId,
    /// Version of the payload's schema.
    pub schema_version: u16,
    /// When the producer created it.
    pub occurred_at: Timestamp,
    /// The ride this message belongs to; `None` for messages about drivers and riders.
    pub saga_id: Option<RideId>,
    /// The message this one reacts to.
    pub causation_id: Option<MessageId>,
    /// Shared by every message that descends from one command.
    pub correlation_id: String,
    /// Who published it: a service name or `ridectl`.
    pub producer: String,
    /// The payload; its kind is the envelope's `type`.
    pub message: Message,
}

#[derive(Serialize)]
struct WireOut<'a> {
    id: &'a MessageId,
    #[serde(rename = "type")]
    kind: &'static str,
    schema_version: u16,
    occurred_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    saga_id: Option<&'a RideId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<&'a MessageId>,
    correlation_id: &'a str,
    producer: &'a str,
    data: &'a Message,
}

/// The envelope as read: fields it does not know (a newer producer's of the same major version)
/// are ignored; every field it knows is checked as strictly as ever.
#[derive(Deserialize)]
struct WireIn<'a> {
    id: MessageId,
    #[serde(rename = "type")]
    kind: String,
    schema_version: u16,
    occurred_at: Timestamp,
    #[serde(default)]
    saga_id: Option<RideId>,
    #[serde(default)]
    causation_id: Option<MessageId>,
    correlation_id: String,
    producer: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Why a message could not be built or decoded. Every variant names the problem.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message is {size} bytes; the limit is {max}")]
    TooLarge { size: usize, max: usize },
    #[error("headers are {size} bytes; the limit is {max}")]
    HeadersTooLarge { size: usize, max: usize },
    #[error(transparent)]
    Subject(#[from] SubjectError),
    #[error("malformed envelope: {0}")]
    Envelope(#[source] serde_json::Error),
    #[error("malformed envelope: {0}")]
    EnvelopeField(#[source] IdError),
    #[error("envelope type {envelope:?} does not match subject type {subject}")]
    TypeMismatch {
        envelope: String,
        subject: MessageKind,
    },
    #[error(
        "{kind} follows contract major version {found}; this reader reads major version {SCHEMA_VERSION} only"
    )]
    UnsupportedVersion { kind: MessageKind, found: u16 },
    #[error("invalid {kind} payload: {source}")]
    Payload {
        kind: MessageKind,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid {kind} payload: {source}")]
    Value {
        kind: MessageKind,
        #[source]
        source: ValueError,
    },
    #[error("{kind} names {field} {in_message:?} but its subject ends with {in_subject:?}")]
    KeyMismatch {
        kind: MessageKind,
        field: &'static str,
        in_message: String,
        in_subject: String,
    },
    #[error("{kind} is a ride message but has no saga_id")]
    MissingSagaId { kind: MessageKind },
    #[error("{kind} is not a ride message but has a saga_id")]
    UnexpectedSagaId { kind: MessageKind },
    #[error(
        "{kind} occurred at {occurred_at}, more than {} hours ahead of the receiver's clock ({now})",
        MAX_CLOCK_SKEW.as_secs() / 3600
    )]
    FromTheFuture {
        kind: MessageKind,
        occurred_at: Timestamp,
        now: Timestamp,
    },
}

impl Envelope {
    /// A new message that starts a chain (a command from ridectl, a timer firing).
    pub fn new(message: impl Into<Message>, saga_id: Option<RideId>, producer: &str) -> Self {
        let id = MessageId::generate();
        Envelope {
            correlation_id: id.to_string(),
            id,
            schema_version: SCHEMA_VERSION,
            occurred_at: Timestamp::now(),
            saga_id,
            causation_id: None,
            producer: producer.to_owned(),
            message: message.into(),
        }
    }

    /// A message caused by `cause`, with an id derived from the cause's id and the new message's
    /// type plus `label` (to tell several outputs of one kind apart), so that handling the same
    /// input again yields the same id. Keeps the correlation id and saga id.
    pub fn caused_by(
        cause: &Envelope,
        message: impl Into<Message>,
        label: &str,
        producer: &str,
    ) -> Self {
        let message = message.into();
        let id = MessageId::derive(&cause.id, &format!("{}/{label}", message.kind()));
        Envelope {
            id,
            schema_version: SCHEMA_VERSION,
            occurred_at: Timestamp::now(),
            saga_id: cause.saga_id.clone(),
            causation_id: Some(cause.id.clone()),
            correlation_id: cause.correlation_id.clone(),
            producer: producer.to_owned(),
            message,
        }
    }

    pub fn kind(&self) -> MessageKind {
        self.message.kind()
    }

    /// The last subject token: the saga id, or the driver or rider id.
    pub fn subject_id(&self) -> &str {
        match self.message.entity_id() {
            Some(id) => id,
            None => self
                .saga_id
                .as_ref()
                .map(RideId::as_str)
                .unwrap_or_default(),
        }
    }

    /// The subject to publish on, e.g. `evt.ride.requested.r_123`.
    pub fn subject(&self) -> String {
        format!("{}.{}", self.kind(), self.subject_id())
    }

    /// Checks that the envelope is publishable: ride messages carry a saga id, others do not;
    /// the correlation id and the producer are id-like tokens; the payload's values are within
    /// the bounds of [`crate::limits`].
    pub fn validate(&self) -> Result<(), DecodeError> {
        let kind = self.kind();
        match (kind.key_kind(), &self.saga_id) {
            (KeyKind::Ride, None) => return Err(DecodeError::MissingSagaId { kind }),
            (KeyKind::Driver | KeyKind::Rider, Some(_)) => {
                return Err(DecodeError::UnexpectedSagaId { kind });
            }
            _ => {}
        }
        validate_token("correlation id", &self.correlation_id)
            .map_err(DecodeError::EnvelopeField)?;
        validate_token("producer", &self.producer).map_err(DecodeError::EnvelopeField)?;
        self.message
            .check_values(self.occurred_at)
            .map_err(|source| DecodeError::Value { kind, source })
    }

    /// Validates ([`Envelope::validate`]) and encodes, refusing a result over
    /// [`MAX_MESSAGE_BYTES`]: what a publisher sends.
    pub fn encode_checked(&self) -> Result<Vec<u8>, DecodeError> {
        self.validate()?;
        let bytes = self.encode();
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        Ok(bytes)
    }

    /// JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        let wire = WireOut {
            id: &self.id,
            kind: self.kind().as_str(),
            schema_version: self.schema_version,
            occurred_at: self.occurred_at,
            saga_id: self.saga_id.as_ref(),
            causation_id: self.causation_id.as_ref(),
            correlation_id: &self.correlation_id,
            producer: &self.producer,
            data: &self.message,
        };
        // Serializing these types cannot fail: no maps with non-string keys, no custom errors.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Decodes a message received on `subject`, refusing oversize payloads, another major
    /// version than [`SCHEMA_VERSION`], missing fields, wrong types, unknown types, values out of bounds ([`Envelope::validate`]), any disagreement between
    /// the subject and the envelope, and a message from more than [`MAX_CLOCK_SKEW`] ahead of
    /// this machine's clock. Fields it does not know are ignored (a newer producer's, of the
    /// same major version).
    pub fn decode(subject: &str, payload: &[u8]) -> Result<Envelope, DecodeError> {
        Envelope::decode_at(subject, payload, Timestamp::now())
    }

    /// [`Envelope::decode`] with the receiver's clock reading `now`.
    pub fn decode_at(
        subject: &str,
        payload: &[u8],
        now: Timestamp,
    ) -> Result<Envelope, DecodeError> {
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge {
                size: payload.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        let (kind, token) = parse_subject(subject)?;
        let Object(wire): Object<WireIn<'_>> =
            serde_json::from_slice(payload).map_err(DecodeError::Envelope)?;
        if wire.kind != kind.as_str() {
            return Err(DecodeError::TypeMismatch {
                envelope: wire.kind,
                subject: kind,
            });
        }
        if wire.schema_version != SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                kind,
                found: wire.schema_version,
            });
        }
        let message = Message::decode_data(kind, wire.data.get())
            .map_err(|source| DecodeError::Payload { kind, source })?;
        let envelope = Envelope {
            id: wire.id,
            schema_version: wire.schema_version,
            occurred_at: wire.occurred_at,
            saga_id: wire.saga_id,
            causation_id: wire.causation_id,
            correlation_id: wire.correlation_id,
            producer: wire.producer,
            message,
        };
        envelope.validate()?;
        if envelope.subject_id() != token {
            let field = match kind.key_kind() {
                KeyKind::Ride => "saga_id",
                KeyKind::Driver => "driver_id",
                KeyKind::Rider => "rider_id",
            };
            return Err(DecodeError::KeyMismatch {
                kind,
                field,
                in_message: envelope.subject_id().to_owned(),
                in_subject: token.to_owned(),
            });
        }
        let skew = time::Duration::seconds(MAX_CLOCK_SKEW.as_secs() as i64);
        if now
            .0
            .checked_add(skew)
            .is_some_and(|latest| envelope.occurred_at.0 > latest)
        {
            return Err(DecodeError::FromTheFuture {
                kind,
                occurred_at: envelope.occurred_at,
                now,
            });
        }
        Ok(envelope)
    }

    /// Refuses headers larger than [`MAX_HEADER_BYTES`]; checked by a receiver before
    /// [`Envelope::decode`].
    pub fn check_headers(headers: Option<&HeaderMap>) -> Result<(), DecodeError> {
        let size = headers.map_or(0, headers_size);
        if size > MAX_HEADER_BYTES {
            return Err(DecodeError::HeadersTooLarge {
                size,
                max: MAX_HEADER_BYTES,
            });
        }
        Ok(())
    }
}

/// The size of headers as they travel: `NATS/1.0\r\n`, `Name: value\r\n` per value, `\r\n`.
pub fn headers_size(headers: &HeaderMap) -> usize {
    let lines: usize = headers
        .iter()
        .map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .iter()
                .map(|value| name.len() + 2 + value.as_str().len() + 2)
                .sum::<usize>()
        })
        .sum();
    "NATS/1.0\r\n".len() + lines + 2
}

impl From<IdError> for DecodeError {
    fn from(e: IdError) -> Self {
        DecodeError::Subject(SubjectError::Id(e))
    }
}
