//! `ridesaga-bench`: runs the benchmark, writes the report (and the latest figures into
//! `BENCHMARKS.md`), and prints the summary line last on stdout. Progress goes to stderr.
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
use ridesaga_bench::markdown;
use ridesaga_bench::report::Report;

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
        Ok(report) => {
            println!("{}", report.summary_line());
            if report.broken() {
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

async fn bench(cli: &Cli) -> anyhow::Result<Report> {
    let mut report = Box::pin(ridesaga_bench::run::run(cli)).await?;
    let results_dir = if cli.no_record {
        unrecorded_dir(&cli.results_dir)?
    } else {
        cli.results_dir.clone()
    };
    std::fs::create_dir_all(&results_dir)
        .with_context(|| format!("creating {}", results_dir.display()))?;
    let path = results_dir.join(format!("{}{}.md", report.date, cli.report_suffix()));
    report.report_path = path.display().to_string();
    write(&path, &markdown::render(&report))?;
    eprintln!("bench: report written to {}", path.display());
    if cli.ab_only && !cli.no_record {
        // Its report has none of the latest figures: the block keeps the last full set.
        eprintln!("bench: --ab-only: BENCHMARKS.md left alone");
    } else if cli.backlog.is_some() && !cli.no_record {
        eprintln!("bench: --backlog: BENCHMARKS.md left alone");
    } else if !cli.no_record {
        let document = std::fs::read_to_string(&cli.benchmarks_file).unwrap_or_default();
        let updated = markdown::replace_block(&document, &markdown::latest_block(&report));
        write(&cli.benchmarks_file, &updated)?;
        eprintln!(
            "bench: latest figures written to {}",
            cli.benchmarks_file.display()
        );
    }
    Ok(report)
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
    let tmp = path.with_extension("md.tmp");
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
