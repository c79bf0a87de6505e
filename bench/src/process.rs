//! Child processes the bench starts (nats-server and the workers): spawned in their own process
//! group with their output in a log file, recorded in a pids file so `scripts/bench` can stop
//! them even if this process dies, and stopped with SIGTERM, then SIGKILL.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::procfs::{self, ProcSample};

/// A running child process.
#[derive(Debug)]
pub struct Spawned {
    /// What the report calls it, e.g. `ride-worker#2`.
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
    child: Child,
}

/// Where spawned processes are recorded, one `pid name` a line.
#[derive(Debug, Clone)]
pub struct PidLog {
    path: Option<PathBuf>,
}

impl PidLog {
    pub fn new(path: Option<PathBuf>) -> Self {
        PidLog { path }
    }

    fn record(&self, pid: u32, name: &str) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the pids file {}", path.display()))?;
        writeln!(file, "{pid} {name}").context("writing the pids file")
    }
}

impl Spawned {
    /// Starts `command` with stdin closed and stdout and stderr appended to `log`.
    pub fn start(
        name: impl Into<String>,
        mut command: Command,
        log: &Path,
        pids: &PidLog,
    ) -> anyhow::Result<Spawned> {
        let name = name.into();
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone().context("duplicating a log file handle")?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C at the terminal reaches the bench, which then
            // stops its children in order, instead of every process at once.
            .process_group(0)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child
            .id()
            .with_context(|| format!("{name} exited at once"))?;
        pids.record(pid, &name)?;
        Ok(Spawned {
            name,
            pid,
            log: log.to_owned(),
            child,
        })
    }

    /// Fails, with the end of the log, if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} (pid {}) exited with {status}; last lines of {}:\n{}",
                self.name,
                self.pid,
                self.log.display(),
                log_tail(&self.log, 20)
            ),
            Err(e) => Err(e).with_context(|| format!("checking on {}", self.name)),
        }
    }

    /// CPU time and memory now.
    pub fn sample(&self, ticks_per_second: u64) -> anyhow::Result<ProcSample> {
        procfs::sample(self.pid, ticks_per_second)
            .with_context(|| format!("reading /proc for {} (pid {})", self.name, self.pid))
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // tokio only sends SIGKILL; `kill` sends SIGTERM without unsafe code or another crate.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "bench: {} did not stop within {grace:?}; killing it",
                self.name
            );
            let _ = self.child.kill().await;
        }
    }
}

/// The last `lines` lines of a log file, indented, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    if all.is_empty() {
        return "    (empty)".into();
    }
    all[start..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Warnings and errors in a worker's log (tracing's `WARN` and `ERROR` levels, text or JSON,
/// with or without colours).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogProblems {
    pub warnings: usize,
    pub errors: usize,
    /// The most frequent kinds, as `count x level target: first words`, most frequent first.
    pub top: Vec<String>,
}

/// Reads a log and counts its warnings and errors by kind.
pub fn count_problems(path: &Path) -> LogProblems {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    let mut out = LogProblems::default();
    for line in text.lines() {
        let line = strip_ansi(line);
        let Some((level, rest)) = ["ERROR", "WARN"].into_iter().find_map(|level| {
            let text_form = format!(" {level} ");
            let json_form = format!("\"level\":\"{level}\"");
            if let Some(at) = line.find(&text_form) {
                Some((level, line[at + text_form.len()..].to_owned()))
            } else {
                line.contains(&json_form).then(|| (level, String::new()))
            }
        }) else {
            continue;
        };
        if level == "ERROR" {
            out.errors += 1;
        } else {
            out.warnings += 1;
        }
        // The target and the message's first words; fields (`key=value`) differ per line.
        let words: Vec<&str> = rest
            .split_whitespace()
            .take_while(|w| !w.contains('='))
            .take(6)
            .collect();
        *kinds
            .entry(format!("{level} {}", words.join(" ")))
            .or_default() += 1;
    }
    let mut kinds: Vec<(String, usize)> = kinds.into_iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out.top = kinds
        .into_iter()
        .take(3)
        .map(|(kind, n)| format!("{n} x {}", kind.trim_end()))
        .collect();
    out
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_and_errors_are_counted_by_kind_in_text_json_and_coloured_logs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.log");
        fs::write(
            &path,
            "2026-01-01T00:00:00Z  INFO ride: started\n\
             2026-01-01T00:00:01Z  WARN ride: will retry subject=a\n\
             \u{1b}[2m2026-01-01T00:00:01Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m ride: will retry subject=b\n\
             {\"level\":\"ERROR\",\"fields\":{}}\n\
             2026-01-01T00:00:02Z ERROR ride: dead letter\n",
        )
        .unwrap();
        let problems = count_problems(&path);
        assert_eq!((problems.warnings, problems.errors), (2, 2));
        assert_eq!(problems.top[0], "2 x WARN ride: will retry");
        assert_eq!(
            count_problems(&dir.path().join("missing.log")),
            LogProblems::default()
        );
    }

    #[test]
    fn the_log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&path, 2), "    b\n    c");
    }
}
