//! How notifications leave the service: a channel adapter behind a trait, and the default
//! channel that appends each notification as one JSON line to a log file.
//!
//! The service calls the channel only when it performs a notification's effect, after the
//! transaction that made the notification due has committed, so no database write waits for a
//! delivery. Delivery is at least once: if the process stops (or the settling transaction
//! fails) after a line was written and before the delivery was settled, the effect is
//! performed again once its claim expires, by this replica or another, with the same `id`.
//! The log channel remembers the ids it wrote lately and does not write one of them again, so
//! a repeat in the same process writes nothing; a repeat in another process (another replica,
//! or this one restarted) writes the line a second time with the same `id`, and readers dedupe
//! by `id`. The record and `evt.notification.sent` stay exactly once. The email and SMS
//! channels ([`super::email`], [`super::sms`]) give the same id to the outside party: the
//! email's `Message-ID`, the SMS provider's idempotency key.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ridesaga_schemas::{MessageId, RideId, Timestamp};

use tracing::debug;

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
    /// Where it goes on the channel: an email address, a phone number; none for the log.
    pub to: Option<&'a str>,
}

/// Why a channel could not deliver.
#[derive(Debug, thiserror::Error)]
#[error("channel {channel} could not deliver: {problem}")]
pub struct ChannelError {
    pub channel: &'static str,
    pub problem: String,
    /// The channel refused the notification for good (an unknown recipient): asking again
    /// gets the same answer. Otherwise (an outage, a full disk) a later attempt may succeed.
    pub permanent: bool,
}

/// A way to reach riders and drivers.
pub trait Channel: Send + Sync + 'static {
    /// The name recorded with each notification, e.g. `log`.
    fn name(&self) -> &'static str;

    /// Delivers one notification; the id the outside party gave it, if any. May be called
    /// again for the same `delivery.id`.
    fn deliver(
        &self,
        delivery: &Delivery<'_>,
    ) -> impl Future<Output = Result<Option<String>, ChannelError>> + Send;
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
/// when it was moved or deleted (log rotation) since the last line. A line whose id the
/// channel wrote lately is not written again.
#[derive(Debug, Clone)]
pub struct LogChannel {
    path: Arc<Path>,
    state: Arc<Mutex<LogState>>,
}

/// The open log file, and the ids of the lines written lately.
#[derive(Debug, Default)]
struct LogState {
    open: Option<OpenLog>,
    written: Written,
}

/// The open log file and which file it is, to notice a rotation.
#[derive(Debug)]
struct OpenLog {
    file: File,
    id: Option<FileId>,
}

/// How many ids of written lines [`Written`] keeps in each of its two generations.
const REMEMBERED: usize = 16_384;

/// The ids of the lines a channel wrote lately: the last [`REMEMBERED`] at least, and at most
/// twice as many, in two generations (the older one is dropped whole when the newer fills).
#[derive(Debug, Default)]
pub(super) struct Written {
    current: HashSet<MessageId>,
    previous: HashSet<MessageId>,
}

impl Written {
    pub(super) fn contains(&self, id: &MessageId) -> bool {
        self.current.contains(id) || self.previous.contains(id)
    }

    pub(super) fn insert(&mut self, id: MessageId) {
        if self.current.len() >= REMEMBERED {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(id);
    }
}

impl LogChannel {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LogChannel {
            path: Arc::from(path.into()),
            state: Arc::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line` with one write to the file opened in append mode, so lines from
    /// several replicas sharing the file do not interleave. Written in place, not on the
    /// blocking pool: an append goes to the page cache and takes microseconds, less than the
    /// hand-off to another thread would.
    fn append(&self, open: &mut Option<OpenLog>, line: &[u8]) -> std::io::Result<()> {
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

    /// Writes the line unless this channel wrote one with the same id lately. The check, the
    /// write and the note of it happen under one lock, so two attempts at once write it once.
    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<Option<String>, ChannelError> {
        let line = self.line(delivery)?;
        let mut state = self
            .state
            .lock()
            .map_err(|_| self.error("log file lock poisoned"))?;
        let LogState { open, written } = &mut *state;
        if written.contains(delivery.id) {
            debug!(id = %delivery.id, "notification already written; not written again");
            return Ok(None);
        }
        self.append(open, &line)
            .map_err(|e| self.error(format!("{}: {e}", self.path.display())))?;
        written.insert(delivery.id.clone());
        Ok(None)
    }
}

impl LogChannel {
    /// `delivery` as one JSON line.
    fn line(&self, delivery: &Delivery<'_>) -> Result<Vec<u8>, ChannelError> {
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
        Ok(line)
    }

    /// A transient error of this channel: the file may be writable on a later attempt.
    fn error(&self, problem: impl std::fmt::Display) -> ChannelError {
        ChannelError {
            channel: self.name(),
            problem: problem.to_string(),
            permanent: false,
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
            refund_id: None,
        };
        let delivery = Delivery {
            id: &MessageId::parse(id).unwrap(),
            ride_id: &RideId::parse("r_1").unwrap(),
            notice: &notice,
            at: Timestamp::from_unix_millis(0),
            to: None,
        };
        channel.deliver(&delivery).await.unwrap();
    }

    /// The log's lines, parsed.
    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn the_log_channel_appends_one_json_line_per_delivery_and_creates_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let channel = LogChannel::new(dir.path().join("nested/out.jsonl"));
        deliver(&channel, "m_1").await;
        deliver(&channel, "m_2").await;

        let lines = lines(channel.path());
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["id"], "m_1");
        assert_eq!(lines[0]["kind"], "receipt");
        assert_eq!(lines[0]["recipient"], "rider");
        assert_eq!(lines[0]["channel"], "log");
        assert_eq!(lines[0]["at"], "1970-01-01T00:00:00Z");
        assert_eq!(lines[1]["id"], "m_2");
    }

    #[tokio::test]
    async fn a_repeated_id_is_written_once_by_a_channel_and_again_by_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let channel = LogChannel::new(dir.path().join("out.jsonl"));
        deliver(&channel, "m_1").await;
        deliver(&channel.clone(), "m_1").await;
        assert_eq!(lines(channel.path()).len(), 1);

        // Another replica, or this one restarted, does not know what was written before it.
        let restarted = LogChannel::new(channel.path());
        deliver(&restarted, "m_1").await;
        let ids: Vec<String> = lines(channel.path())
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["m_1", "m_1"], "the same id, for readers to dedupe");
    }

    #[test]
    fn the_channel_remembers_the_last_ids_it_wrote_and_forgets_older_ones() {
        let id = |n: usize| MessageId::parse(format!("m_{n}")).unwrap();
        let mut written = Written::default();
        for n in 0..=2 * REMEMBERED {
            written.insert(id(n));
        }
        assert!(!written.contains(&id(0)));
        assert!((REMEMBERED..=2 * REMEMBERED).all(|n| written.contains(&id(n))));
        assert!(written.current.len() + written.previous.len() <= 2 * REMEMBERED);
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
