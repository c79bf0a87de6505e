//! How notifications leave the service: a channel adapter behind a trait, and the default
//! channel that appends each notification as one JSON line to a log file.
//!
//! Delivery is at least once: the service writes the line inside the handling transaction,
//! after its database row proved the notification new, and before the commit. If the commit
//! never happens (crash, rollback, a later failure), the input is redelivered, the row is new
//! again, and the same line is written again with the same `id`. Readers dedupe by `id`; the
//! database row and `evt.notification.sent` stay exactly once. Writing after the commit
//! instead would lose the line on a crash in between, and a lost message is worse than a
//! repeated one that carries its own id. A real channel (SMS, push) gets the same id as its
//! idempotency key.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ridesaga_schemas::{MessageId, RideId, Timestamp};

use super::domain::Notice;
use crate::config::{ConfigError, Settings};

/// One notification on its way out.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The id of its `evt.notification.sent`: stable across retries.
    pub id: &'a MessageId,
    pub ride_id: &'a RideId,
    pub notice: &'a Notice,
    pub at: Timestamp,
}

/// Why a channel could not deliver; always worth a retry.
#[derive(Debug, thiserror::Error)]
#[error("channel {channel} could not deliver: {problem}")]
pub struct ChannelError {
    pub channel: &'static str,
    pub problem: String,
}

/// A way to reach riders and drivers.
pub trait Channel: Send + Sync + 'static {
    /// The name recorded with each notification, e.g. `log`.
    fn name(&self) -> &'static str;

    /// Delivers one notification. May be called again for the same `delivery.id`.
    fn deliver(
        &self,
        delivery: &Delivery<'_>,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send;
}

/// `RIDESAGA_NOTIFY_LOG`: the JSON-lines file of the default channel.
pub fn log_path(settings: &Settings) -> Result<PathBuf, ConfigError> {
    settings.get(
        "RIDESAGA_NOTIFY_LOG",
        PathBuf::from(".run/notifications.jsonl"),
    )
}

/// The default channel: one JSON object per line, appended to a file (created with its
/// parent directories on first use).
#[derive(Debug, Clone)]
pub struct LogChannel {
    path: Arc<Path>,
}

impl LogChannel {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LogChannel {
            path: Arc::from(path.into()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Channel for LogChannel {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<(), ChannelError> {
        let mut line = serde_json::to_vec(&serde_json::json!({
            "id": delivery.id,
            "at": delivery.at,
            "ride_id": delivery.ride_id,
            "kind": delivery.notice.kind,
            "recipient": delivery.notice.recipient,
            "recipient_id": delivery.notice.recipient_id,
            "channel": self.name(),
            "text": delivery.notice.text,
        }))
        .map_err(|e| self.error(e))?;
        line.push(b'\n');
        let path = Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || append(&path, &line))
            .await
            .map_err(|e| self.error(e))?
            .map_err(|e| self.error(format!("{}: {e}", self.path.display())))
    }
}

impl LogChannel {
    fn error(&self, problem: impl std::fmt::Display) -> ChannelError {
        ChannelError {
            channel: self.name(),
            problem: problem.to_string(),
        }
    }
}

/// Appends `line` with one write to a file opened in append mode, so lines from several
/// replicas sharing the file do not interleave.
fn append(path: &Path, line: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(line)
}

#[cfg(test)]
mod tests {
    use ridesaga_schemas::{NotificationKind, Recipient};

    use super::*;

    #[tokio::test]
    async fn the_log_channel_appends_one_json_line_per_delivery_and_creates_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let channel = LogChannel::new(dir.path().join("nested/out.jsonl"));
        let notice = Notice {
            kind: NotificationKind::Receipt,
            recipient: Recipient::Rider,
            recipient_id: "u_ada".into(),
            text: "Receipt: 12.00 charged.".into(),
        };
        let id = MessageId::parse("m_1").unwrap();
        let ride_id = RideId::parse("r_1").unwrap();
        let delivery = Delivery {
            id: &id,
            ride_id: &ride_id,
            notice: &notice,
            at: Timestamp::from_unix_millis(0),
        };
        channel.deliver(&delivery).await.unwrap();
        channel.deliver(&delivery).await.unwrap();

        let text = std::fs::read_to_string(channel.path()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["id"], "m_1");
        assert_eq!(lines[0]["kind"], "receipt");
        assert_eq!(lines[0]["recipient"], "rider");
        assert_eq!(lines[0]["at"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn the_log_path_defaults_under_run() {
        let path = log_path(&Settings::from_pairs(Vec::<(String, String)>::new())).unwrap();
        assert_eq!(path, PathBuf::from(".run/notifications.jsonl"));
    }
}
