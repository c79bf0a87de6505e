//! What the results say besides the figures: the run's conditions (server configuration,
//! revision) and its problems (failed sagas, redeliveries, worker log warnings).

use std::path::{Path, PathBuf};

use crate::process::count_problems;
use crate::results::{Phase, Results};

/// Adds what went wrong in a phase to the problems, prefixed with the phase's name.
pub fn note_phase_problems(results: &mut Results, name: &str, phase: &Phase) {
    let mut note = |text: String| results.problems.push(format!("{name}: {text}"));
    for (why, count) in &phase.failures {
        note(format!("{count} sagas failed: {why}"));
    }
    if phase.unfinished > 0 {
        note(format!(
            "{} sagas did not finish within the drain timeout",
            phase.unfinished
        ));
    }
    if phase.publish_errors > 0 {
        note(format!(
            "{} commands were not stored by the server",
            phase.publish_errors
        ));
    }
    if !phase.quiet && phase.unfinished == 0 {
        note("the consumers were not empty at the end".into());
    }
    let redelivered = phase.worker_total("redelivered");
    let duplicates = phase.worker_total("duplicates");
    if redelivered + duplicates > 0 {
        note(format!(
            "{redelivered} redeliveries and {duplicates} duplicate inputs (inbox hits)"
        ));
    }
    let failed = phase.worker_total("failed");
    if failed > 0 {
        note(format!(
            "{failed} transient handler failures (nak) during a phase"
        ));
    }
}

/// Adds a line per worker log with warnings or errors, with its most frequent kinds: the logs
/// of the usual phases' fleet, then those of each A/B fleet (`ab/<round>-<build>/logs`).
pub fn add_log_problems(results: &mut Results, dir: &Path) {
    add_logs_in(results, &dir.join("workers/logs"), "");
    for fleet in sorted_entries(&dir.join("ab")) {
        let name = fleet.file_name().unwrap_or_default().to_string_lossy();
        add_logs_in(results, &fleet.join("logs"), &format!("A/B {name}: "));
    }
}

fn add_logs_in(results: &mut Results, logs: &Path, prefix: &str) {
    for log in sorted_entries(logs) {
        let found = count_problems(&log);
        if found.warnings + found.errors > 0 {
            let name = log.file_stem().unwrap_or_default().to_string_lossy();
            results.problems.push(format!(
                "{prefix}worker {name} logged {} warnings and {} errors; most often: {}",
                found.warnings,
                found.errors,
                found.top.join("; ")
            ));
        }
    }
}

/// The entries of `dir` in name order (none when it cannot be read).
fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    paths
}

/// The `sync_interval` line of the server's configuration.
pub fn sync_interval(nats_conf: &Path) -> String {
    std::fs::read_to_string(nats_conf)
        .ok()
        .and_then(|text| {
            text.lines()
                .map(str::trim)
                .find(|l| l.starts_with("sync_interval"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "sync_interval: server default".into())
}

/// The checked-out commit, marked when the work tree has changes.
pub fn revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{commit} with local changes")
            } else {
                commit
            }
        }
        None => "unknown".into(),
    }
}
