//! The envelope every message travels in, its JSON encoding, and decoding that checks the
//! envelope against the subject it arrived on.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ids::{IdError, MessageId, RideId};
use crate::messages::{KeyKind, Message, MessageKind, Timestamp};
use crate::subject::{SubjectError, parse_subject};

/// The schema version this build writes, and the newest it reads.
pub const SCHEMA_VERSION: u16 = 1;

/// Largest encoded message accepted, in bytes. Our messages are well under 1 KiB; the server's
/// `max_payload` in nats.conf is set above this.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
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
    #[error(transparent)]
    Subject(#[from] SubjectError),
    #[error("malformed envelope: {0}")]
    Envelope(#[source] serde_json::Error),
    #[error("envelope type {envelope:?} does not match subject type {subject}")]
    TypeMismatch {
        envelope: String,
        subject: MessageKind,
    },
    #[error("{kind} schema version {found} is newer than the supported {SCHEMA_VERSION}")]
    UnsupportedVersion { kind: MessageKind, found: u16 },
    #[error("invalid {kind} payload: {source}")]
    Payload {
        kind: MessageKind,
        #[source]
        source: serde_json::Error,
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

    /// Checks that the envelope is publishable: ride messages carry a saga id, others do not.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let kind = self.kind();
        match (kind.key_kind(), &self.saga_id) {
            (KeyKind::Ride, None) => Err(DecodeError::MissingSagaId { kind }),
            (KeyKind::Driver | KeyKind::Rider, Some(_)) => {
                Err(DecodeError::UnexpectedSagaId { kind })
            }
            _ => Ok(()),
        }
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

    /// Decodes a message received on `subject`, refusing oversize payloads, unknown fields,
    /// unknown types and any disagreement between the subject and the envelope.
    pub fn decode(subject: &str, payload: &[u8]) -> Result<Envelope, DecodeError> {
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge {
                size: payload.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        let (kind, token) = parse_subject(subject)?;
        let wire: WireIn<'_> = serde_json::from_slice(payload).map_err(DecodeError::Envelope)?;
        if wire.kind != kind.as_str() {
            return Err(DecodeError::TypeMismatch {
                envelope: wire.kind,
                subject: kind,
            });
        }
        if wire.schema_version > SCHEMA_VERSION || wire.schema_version == 0 {
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
        Ok(envelope)
    }
}

impl From<IdError> for DecodeError {
    fn from(e: IdError) -> Self {
        DecodeError::Subject(SubjectError::Id(e))
    }
}
