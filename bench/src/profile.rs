//! An optional flat CPU profile of the measured processes with Linux `perf`: sampled during the
//! maximum-rate phase, summarised by object (executable, library, kernel), by thread name,
//! then by symbol.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::Command;

use crate::process::{PidLog, Spawned};

/// A running `perf record`.
#[derive(Debug)]
pub struct Recording {
    process: Spawned,
    data: PathBuf,
}

/// Starts sampling `pids` at 499 Hz into `dir/perf.data`.
pub fn start(pids: &[u32], dir: &Path, pid_log: &PidLog) -> anyhow::Result<Recording> {
    let data = dir.join("perf.data");
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut command = Command::new("perf");
    command
        .args(["record", "-F", "499", "-o"])
        .arg(&data)
        .arg("-p")
        .arg(list.join(","));
    let process = Spawned::start("perf", command, &dir.join("perf.log"), pid_log)?;
    Ok(Recording { process, data })
}

impl Recording {
    /// Stops sampling (SIGINT makes perf write its data) and returns the summary.
    pub async fn finish(mut self) -> anyhow::Result<String> {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.process.pid.to_string())
            .status()
            .await;
        self.process.stop(Duration::from_secs(20)).await;
        let by_object = report(&self.data, "dso", "1").await?;
        let by_thread = report(&self.data, "comm,dso", "2").await?;
        let by_symbol = report(&self.data, "dso,sym", "0.7").await?;
        Ok(format!(
            "By object (>= 1% of samples; [kernel.kallsyms] is the kernel working for any \
             process):\n{by_object}\nBy thread name and object (>= 2%):\n{by_thread}\n\
             By object and symbol (>= 0.7%):\n{by_symbol}"
        ))
    }
}

async fn report(data: &Path, sort: &str, limit: &str) -> anyhow::Result<String> {
    let out = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "--sort", sort])
        .args(["--percent-limit", limit, "-i"])
        .arg(data)
        .output()
        .await
        .context("running perf report")?;
    anyhow::ensure!(
        out.status.success(),
        "perf report failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(summarise(&String::from_utf8_lossy(&out.stdout), 25))
}

/// The first `lines` rows of a `perf report --stdio` table, without comments and blank lines.
pub fn summarise(text: &str, lines: usize) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .take(lines)
        .map(|l| format!("{}\n", l.trim_end()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_keeps_the_table_rows_only() {
        let text = "# Samples: 503\n#\n# Overhead  Command\n\n    74.55%  nats-server  nats-server\n     9.10%  ride-worker  libc.so.6\n";
        assert_eq!(summarise(text, 1), "    74.55%  nats-server  nats-server\n");
    }
}
