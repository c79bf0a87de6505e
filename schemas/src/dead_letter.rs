//! The dead-letter record a worker publishes (on `dlq.<service>.<stream sequence>`, captured by
//! the dead-letter stream) before it terminates a message it cannot handle, so that operators
//! see the reason and can replay the original.

use serde::{Deserialize, Serialize};

use crate::messages::Timestamp;

/// Header carrying the reason on a dead-letter record, for tools that do not parse the body.
pub const REASON_HEADER: &str = "Ridesaga-Dead-Letter-Reason";

/// One message given up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    /// The service that gave up.
    pub service: String,
    /// The replica that gave up.
    pub instance: String,
    /// The original message's subject.
    pub subject: String,
    /// Its sequence in the saga stream.
    pub stream_sequence: u64,
    /// How many times it had been delivered.
    pub deliveries: u64,
    /// The envelope id, when the payload was readable enough to tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Why: a decode error, a permanent handler error, or retries exhausted.
    pub reason: String,
    /// The original payload as UTF-8 (lossy), for inspection and replay.
    pub payload: String,
    pub failed_at: Timestamp,
}

impl DeadLetter {
    /// The subject it is published on.
    pub fn subject_for(service: &str, stream_sequence: u64) -> String {
        format!(
            "{}.{service}.{stream_sequence}",
            crate::streams::DEAD_LETTER_PREFIX
        )
    }
}
