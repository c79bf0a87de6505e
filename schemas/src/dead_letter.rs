//! The dead-letter record a worker publishes (on `dlq.<service>.<stream sequence>`, captured by
//! the dead-letter stream) before it terminates a message it cannot handle, so that operators
//! see the reason and can replay the original.

use serde::{Deserialize, Serialize};

use crate::messages::Timestamp;

/// Header carrying the reason on a dead-letter record, for tools that do not parse the body.
pub const REASON_HEADER: &str = "Ridesaga-Dead-Letter-Reason";

/// Longest reason kept in a record (and its header), in bytes; a longer one (a decode error
/// quoting a long value) is cut and ends with `…`.
pub const MAX_REASON_BYTES: usize = 2 * 1024;

/// Largest encoded record, in bytes: with its headers, well under the server's `max_payload`
/// (128 KB in nats.conf), so that a record can always be stored.
pub const MAX_RECORD_BYTES: usize = 96 * 1024;

/// One message given up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The original payload as UTF-8 (lossy), for inspection and replay; empty when the copy
    /// would make the record larger than [`MAX_RECORD_BYTES`] (the original stays in the saga
    /// stream at `stream_sequence`, where `ridectl dlq` reads it then).
    pub payload: String,
    pub failed_at: Timestamp,
}

impl DeadLetter {
    /// The record cut to fit: the reason to [`MAX_REASON_BYTES`], and without the payload copy
    /// when the record would exceed [`MAX_RECORD_BYTES`] (the reason then says so). A payload
    /// of control characters or invalid UTF-8 grows up to six times when copied into JSON.
    pub fn bounded(mut self) -> Self {
        let encoded_len = |record: &DeadLetter| serde_json::to_vec(record).map_or(0, |v| v.len());
        let mut note = String::new();
        if encoded_len(&self) > MAX_RECORD_BYTES {
            note = format!(
                " (the payload, {} bytes as text, is not copied: see saga stream sequence {})",
                self.payload.len(),
                self.stream_sequence
            );
            self.payload.clear();
        }
        self.reason = cut(&self.reason, MAX_REASON_BYTES - note.len()) + &note;
        self
    }

    /// The subject it is published on.
    pub fn subject_for(service: &str, stream_sequence: u64) -> String {
        format!(
            "{}.{service}.{stream_sequence}",
            crate::streams::DEAD_LETTER_PREFIX
        )
    }
}

/// `text` cut to at most `max` bytes on a character boundary, ending with `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let ellipsis = '…';
    let mut end = max.saturating_sub(ellipsis.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(reason: String, payload: String) -> DeadLetter {
        DeadLetter {
            service: "fraud".into(),
            instance: "fraud-1".into(),
            subject: "cmd.fraud.block.u_1".into(),
            stream_sequence: 7,
            deliveries: 1,
            message_id: None,
            reason,
            payload,
            failed_at: Timestamp::from_unix_millis(0),
        }
    }

    #[test]
    fn a_small_record_is_kept_whole() {
        let small = record("bad".into(), "{}".into());
        assert_eq!(small.clone().bounded(), small);
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        let bounded = record("é".repeat(5_000), "{}".into()).bounded();
        assert!(bounded.reason.len() <= MAX_REASON_BYTES);
        assert!(bounded.reason.ends_with("é…"), "{}", bounded.reason);
        assert_eq!(bounded.payload, "{}");
    }

    #[test]
    fn a_payload_that_grows_in_json_is_left_out_and_the_reason_says_where_it_is() {
        // 64 KiB of NUL bytes: each becomes `\u0000` in JSON.
        let payload = "\0".repeat(64 * 1024);
        let bounded = record("x".repeat(10_000), payload).bounded();
        assert!(serde_json::to_vec(&bounded).unwrap().len() <= MAX_RECORD_BYTES);
        assert!(bounded.payload.is_empty());
        assert!(bounded.reason.len() <= MAX_REASON_BYTES);
        assert!(
            bounded.reason.ends_with(
                "… (the payload, 65536 bytes as text, is not copied: see saga stream sequence 7)"
            ),
            "{}",
            bounded.reason
        );
    }
}
