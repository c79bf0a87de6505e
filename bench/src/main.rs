//! `ridesaga-bench`: runs the benchmark, writes its results as JSON, renders the report (and
//! the latest figures of `BENCHMARKS.md`) from that file, and prints the summary line last on
//! stdout. Progress goes to stderr.
//!
//! Exit codes: 0 measured, every saga completed; 1 the run failed (the error chain is
//! printed); 2 bad usage; 3 measured, but some sagas failed or did not finish, or the
//! backlog's audit was not clean (see the report's problems); 130 interrupted (every process
//! started is stopped).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use ridesaga_bench::cli::Cli;
use ridesaga_bench::report;
use ridesaga_bench::results::Results;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::select! {
        outcome = bench(&cli) => outcome,
        // Dropping the run kills every process it started.
        _ = interrupted() => {
            eprintln!("bench: interrupted; stopping everything started");
            return ExitCode::from(130);
        }
    };
    match outcome {
        Ok(results) => {
            println!("{}", results.summary_line());
            if results.broken() {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(cli: &Cli) -> anyhow::Result<Results> {
    let mut results = Box::pin(ridesaga_bench::run::run(cli)).await?;
    let results_dir = if cli.no_record {
        unrecorded_dir(&cli.results_dir)?
    } else {
        cli.results_dir.clone()
    };
    std::fs::create_dir_all(&results_dir)
        .with_context(|| format!("creating {}", results_dir.display()))?;
    let name = format!("{}{}", results.run.date, cli.report_suffix());
    let path = results_dir.join(format!("{name}.md"));
    results.run.report = path.display().to_string();
    let json = results_dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(&results).context("encoding the results")?;
    write(&json, &format!("{text}\n"))?;
    // The report is rendered from what the file holds.
    let written =
        std::fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))?;
    let results: Results =
        serde_json::from_str(&written).with_context(|| format!("decoding {}", json.display()))?;
    write(&path, &report::render(&results))?;
    eprintln!(
        "bench: results written to {}, report to {}",
        json.display(),
        path.display()
    );
    if cli.ab_only && !cli.no_record {
        // Its report has none of the latest figures: the block keeps the last full set.
        eprintln!("bench: --ab-only: BENCHMARKS.md left alone");
    } else if cli.backlog.is_some() && !cli.no_record {
        eprintln!("bench: --backlog: BENCHMARKS.md left alone");
    } else if !cli.no_record {
        let document = std::fs::read_to_string(&cli.benchmarks_file).unwrap_or_default();
        let updated = report::replace_block(&document, &report::latest_block(&results));
        write(&cli.benchmarks_file, &updated)?;
        eprintln!(
            "bench: latest figures written to {}",
            cli.benchmarks_file.display()
        );
    }
    Ok(results)
}

/// Where the reports of runs that are not recorded go: `<results>/unrecorded/`, which git
/// ignores (it holds its own `.gitignore`), so scratch and CI runs never overwrite the report
/// that BENCHMARKS.md links to.
fn unrecorded_dir(results_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = results_dir.join("unrecorded");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ignore = dir.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(&ignore, "*\n").with_context(|| format!("writing {}", ignore.display()))?;
    }
    Ok(dir)
}

/// Writes through a temporary file in the same directory, so a reader never sees half a file.
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
