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

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

    /// Delivers a batch's notifications, in order; on failure, says which one failed (those
    /// before it may have been delivered, and will be again when the batch is retried). The
    /// default delivers them one by one; a channel that can send several at once (one write
    /// to a file, one request to a provider) does so.
    fn deliver_all(
        &self,
        deliveries: &[Delivery<'_>],
    ) -> impl Future<Output = Result<(), (usize, ChannelError)>> + Send {
        async move {
            for (position, delivery) in deliveries.iter().enumerate() {
                self.deliver(delivery).await.map_err(|e| (position, e))?;
            }
            Ok(())
        }
    }
}

/// `RIDESAGA_NOTIFY_LOG`: the JSON-lines file of the default channel.
pub fn log_path(settings: &Settings) -> Result<PathBuf, ConfigError> {
    settings.get(
        "RIDESAGA_NOTIFY_LOG",
        PathBuf::from(".run/notifications.jsonl"),
    )
}

/// The default channel: one JSON object per line, appended to a file (created with its
/// parent directories on first use). The file stays open between lines; it is opened again
/// when it was moved or deleted (log rotation) since the last line.
#[derive(Debug, Clone)]
pub struct LogChannel {
    path: Arc<Path>,
    open: Arc<Mutex<Option<OpenLog>>>,
}

/// The open log file and which file it is, to notice a rotation.
#[derive(Debug)]
struct OpenLog {
    file: File,
    id: Option<FileId>,
}

impl LogChannel {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LogChannel {
            path: Arc::from(path.into()),
            open: Arc::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line` with one write to the file opened in append mode, so lines from
    /// several replicas sharing the file do not interleave. Written in place, not on the
    /// blocking pool: an append goes to the page cache and takes microseconds, less than the
    /// hand-off to another thread would.
    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| std::io::Error::other("log file lock poisoned"))?;
        let current = std::fs::metadata(&self.path).ok().and_then(|m| file_id(&m));
        let stale = match &*open {
            Some(log) => log.id.is_none() || log.id != current,
            None => true,
        };
        if stale {
            *open = None;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let id = file.metadata().ok().and_then(|m| file_id(&m));
            *open = Some(OpenLog { file, id });
        }
        match open.as_mut() {
            Some(log) => log.file.write_all(line),
            None => Err(std::io::Error::other("log file not open")),
        }
    }
}

/// Device and inode: which file a path names.
type FileId = (u64, u64);

#[cfg(unix)]
fn file_id(metadata: &std::fs::Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some((metadata.dev(), metadata.ino()))
}

/// Without inodes the file is opened again for every line.
#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> Option<FileId> {
    None
}

impl Channel for LogChannel {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<(), ChannelError> {
        let mut line = Vec::new();
        self.write_line(delivery, &mut line)?;
        self.write_out(&line)
    }

    /// All the lines with one write: a batch costs one write (and one look at which file the
    /// path names), not one of each per line.
    async fn deliver_all(&self, deliveries: &[Delivery<'_>]) -> Result<(), (usize, ChannelError)> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::with_capacity(deliveries.len() * 256);
        for (position, delivery) in deliveries.iter().enumerate() {
            self.write_line(delivery, &mut lines)
                .map_err(|e| (position, e))?;
        }
        // Which line a failed write stopped at is not known: the first is named.
        self.write_out(&lines).map_err(|e| (0, e))
    }
}

impl LogChannel {
    /// Appends `delivery` to `out` as one JSON line.
    fn write_line(&self, delivery: &Delivery<'_>, out: &mut Vec<u8>) -> Result<(), ChannelError> {
        serde_json::to_writer(
            &mut *out,
            &serde_json::json!({
                "id": delivery.id,
                "at": delivery.at,
                "ride_id": delivery.ride_id,
                "kind": delivery.notice.kind,
                "recipient": delivery.notice.recipient,
                "recipient_id": delivery.notice.recipient_id,
                "channel": self.name(),
                "text": delivery.notice.text,
            }),
        )
        .map_err(|e| self.error(e))?;
        out.push(b'\n');
        Ok(())
    }

    /// [`LogChannel::append`], its error named for the channel and the file.
    fn write_out(&self, lines: &[u8]) -> Result<(), ChannelError> {
        self.append(lines)
            .map_err(|e| self.error(format!("{}: {e}", self.path.display())))
    }

    fn error(&self, problem: impl std::fmt::Display) -> ChannelError {
        ChannelError {
            channel: self.name(),
            problem: problem.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use ridesaga_schemas::{NotificationKind, Recipient};

    use super::*;

    /// Delivers a receipt for ride `r_1` to rider `u_ada` with message id `id`.
    async fn deliver(channel: &LogChannel, id: &str) {
        let notice = Notice {
            kind: NotificationKind::Receipt,
            recipient: Recipient::Rider,
            recipient_id: "u_ada".into(),
            text: "Receipt: 12.00 charged.".into(),
        };
        let delivery = Delivery {
            id: &MessageId::parse(id).unwrap(),
            ride_id: &RideId::parse("r_1").unwrap(),
            notice: &notice,
            at: Timestamp::from_unix_millis(0),
        };
        channel.deliver(&delivery).await.unwrap();
    }

    #[tokio::test]
    async fn the_log_channel_appends_one_json_line_per_delivery_and_creates_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let channel = LogChannel::new(dir.path().join("nested/out.jsonl"));
        deliver(&channel, "m_1").await;
        deliver(&channel, "m_1").await;

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

    #[tokio::test]
    async fn a_rotated_log_is_opened_again_and_a_deleted_one_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let channel = LogChannel::new(dir.path().join("out.jsonl"));
        let lines = |path: &Path| std::fs::read_to_string(path).unwrap().lines().count();
        deliver(&channel, "m_1").await;
        std::fs::rename(channel.path(), dir.path().join("out.jsonl.1")).unwrap();
        deliver(&channel, "m_2").await;
        assert_eq!(lines(&dir.path().join("out.jsonl.1")), 1);
        assert_eq!(lines(channel.path()), 1);
        std::fs::remove_file(channel.path()).unwrap();
        deliver(&channel, "m_3").await;
        deliver(&channel, "m_4").await;
        assert_eq!(lines(channel.path()), 2);
    }

    #[test]
    fn the_log_path_defaults_under_run() {
        let path = log_path(&Settings::from_pairs(Vec::<(String, String)>::new())).unwrap();
        assert_eq!(path, PathBuf::from(".run/notifications.jsonl"));
    }
}
