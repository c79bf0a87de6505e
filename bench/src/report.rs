//! The Markdown report of a run's [`Results`], as tables, and the block of `BENCHMARKS.md`
//! that keeps the latest figures. `BENCHMARKS.md` says what each figure means.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::results::{
    ALL_PROCESSES, ALL_WORKERS, Build, Comparison, DATABASE_PROCESS, Environment, Phase, Results,
    Round, SELF_NAME, Summary, TARGET_IDLE_RSS_MB, TARGET_P50_CONFIRM_MS, TARGET_P99_CONFIRM_MS,
    TARGET_PEAK_RSS_MB, TARGET_RATIO, Usage, mb,
};
use crate::table::{Table, num};

/// Where the latest figures go in `BENCHMARKS.md`; everything between the markers is replaced.
pub const BLOCK_BEGIN: &str = "<!-- bench:latest:begin (written by scripts/bench) -->";
pub const BLOCK_END: &str = "<!-- bench:latest:end -->";

/// A column: its header and its cell for an item.
type Column<'a, T> = (&'a str, &'a dyn Fn(&T) -> String);

/// A table with a row per item.
fn columns<T>(items: &[T], columns: &[Column<'_, T>]) -> Table {
    let mut table = Table::new(columns.iter().map(|(header, _)| *header));
    for item in items {
        table.row(columns.iter().map(|(_, cell)| cell(item)));
    }
    table
}

/// The full report.
pub fn render(results: &Results) -> String {
    let run = &results.run;
    let kind = if run.quick { " (quick)" } else { "" };
    let mut out = format!("# Ridesaga benchmark, {}{kind}\n\n", run.date);
    out.push_str(&environment(run).render());
    // An A/B-only run and a backlog drain have none of the headline's figures.
    if results.max_rate.is_some() || !results.relay.is_empty() {
        section(&mut out, "Summary", &headline(results));
    }
    list(&mut out, "\n## Problems\n\n", &results.problems);
    section(
        &mut out,
        "Relay ceiling and runtime floor",
        &ceilings(results),
    );
    let phases = phases(results);
    section(&mut out, "Phases", &phases_table(results, &phases));
    section(&mut out, "Latency, ms", &latency(&phases));
    section(&mut out, "Hops, ms (slowest p50 first)", &hops(&phases));
    if let Some((name, phase)) = phases.first() {
        let title = format!("Deliveries and worker counts, {name}");
        section(&mut out, &title, &deliveries(phase));
        let title = format!("Processes; per completed saga: {name}");
        section(&mut out, &title, &processes(results, phase));
    }
    if let Some(b) = &results.backlog {
        let mut drain = Table::new(["queued", "waiting", "replicas", "drivers", "audit"]);
        let audit = format!("`{}`: {}", b.audit.command, b.audit.verdict());
        let counts = [b.queued, b.waiting, b.replicas.into(), b.drivers as u64];
        drain.row(counts.map(|n| n.to_string()).into_iter().chain([audit]));
        let mut services: Vec<Option<&str>> = b
            .handled_per_replica
            .keys()
            .map(|s| Some(s.as_str()))
            .collect();
        services.push(None);
        let handled = |service: &Option<&str>| {
            let handled = service.and_then(|s| b.handled_per_replica.get(s));
            let each: Vec<String> = handled.into_iter().flatten().map(u64::to_string).collect();
            each.join(" / ")
        };
        let replicas = columns(
            &services,
            &[
                ("service", &|s| s.unwrap_or("all").to_owned()),
                ("inputs handled by each replica", &handled),
                ("database growth per saga, bytes", &|s| {
                    num(b.stored_bytes_per_saga(*s), 0)
                }),
            ],
        );
        let _ = write!(
            out,
            "\n## Backlog drain\n\n{}\n{}",
            drain.render(),
            replicas.render()
        );
        list(
            &mut out,
            "\n",
            &b.audit.violations[..b.audit.violations.len().min(20)],
        );
    }
    if let Some(comparison) = &results.ab {
        ab(&mut out, comparison);
    }
    if let Some(profile) = &results.profile {
        let profile = profile.trim_end();
        let _ = writeln!(
            out,
            "\n## Profile of the maximum-rate phase (perf, flat)\n\n```text\n{profile}\n```"
        );
    }
    let line = results.summary_line();
    let _ = writeln!(out, "\n## Summary line\n\n```text\n{line}\n```");
    out
}

/// `## title` and the table, unless the table is empty.
fn section(out: &mut String, title: &str, table: &Table) {
    if !table.is_empty() {
        let _ = write!(out, "\n## {title}\n\n{}", table.render());
    }
}

/// `title` and a bullet per item, unless there is none.
fn list(out: &mut String, title: &str, items: &[String]) {
    if !items.is_empty() {
        out.push_str(title);
        for item in items {
            let _ = writeln!(out, "- {item}");
        }
    }
}

fn environment(run: &Environment) -> Table {
    let gateway = run
        .gateway_latency_ms
        .map_or_else(|| "none".into(), |ms| format!("{ms} ms"));
    let rows = [
        ("command", format!("`{}`", run.command)),
        ("started", run.started_at.clone()),
        ("machine", run.machine.clone()),
        (
            "load average before / after",
            format!("{} / {}", run.load_before, run.load_after),
        ),
        (
            "server",
            format!("{}, `{}`", run.nats_version, run.nats_sync),
        ),
        ("revision", run.revision.clone()),
        ("database", run.database.clone()),
        (
            "RIDESAGA_BATCH / RIDESAGA_MAX_IN_FLIGHT",
            format!("{} / {}", run.batch, run.max_in_flight),
        ),
        (
            "sagas in flight at the maximum rate / drivers",
            format!("{} / {}", run.window, run.drivers),
        ),
        (
            "seconds of warm-up / maximum rate / latency",
            format!("{} / {} / {}", run.warmup_s, run.phase_s, run.latency_s),
        ),
        ("relay messages per run", run.relay_messages.to_string()),
        ("payment gateway latency (simulated)", gateway),
    ];
    let mut table = Table::new(["run", ""]);
    for (name, value) in rows.into_iter().filter(|(_, value)| !value.is_empty()) {
        table.row([name.to_owned(), value]);
    }
    table
}

/// The headline figures against the targets.
pub fn headline(results: &Results) -> Table {
    let max = results.max_rate.as_ref();
    let s = max.map(|p| p.per_second);
    let ratio = results.ratio();
    let confirm = results.confirm_latency();
    let (idle, peak) = (results.max_worker_idle_mb(), results.max_worker_peak_mb());
    let spread = |c: Option<Summary>| {
        [c.map(|c| c.p50), c.map(|c| c.p99), c.map(|c| c.max)]
            .map(|v| num(v, 2))
            .join(" / ")
    };
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "missed",
        None => "not measured",
    };
    let confirm_ok =
        confirm.map(|c| c.p50 <= TARGET_P50_CONFIRM_MS && c.p99 <= TARGET_P99_CONFIRM_MS);
    let scaling = match (s, results.max_rate_2x.as_ref().map(|p| p.per_second)) {
        (Some(s), Some(s2)) if s > 0.0 => format!("{s2:.1} ({:.2} x one replica)", s2 / s),
        _ => "n/a".into(),
    };
    let floor = !results.floor.is_empty();
    let rows = [
        (
            true,
            "sagas per second, 1 replica (S)",
            num(s, 1),
            String::new(),
        ),
        (
            true,
            "relay ceiling, messages per second (R)",
            num(results.relay_per_second(), 0),
            String::new(),
        ),
        (
            true,
            "deliveries per saga (D)",
            num(max.and_then(Phase::deliveries_per_saga), 2),
            String::new(),
        ),
        (
            floor,
            "runtime floor, messages per second (F)",
            num(results.floor_per_second(), 0),
            String::new(),
        ),
        (
            true,
            "ratio S / (R / D)",
            num(ratio, 3),
            format!(
                ">= {TARGET_RATIO} ({})",
                verdict(ratio.map(|r| r >= TARGET_RATIO))
            ),
        ),
        (
            floor,
            "share of the runtime-implied ceiling, S / (F / D)",
            num(results.floor_ratio(), 3),
            String::new(),
        ),
        (
            true,
            "request -> confirmed p50 / p99 / max, ms, at half rate",
            spread(confirm),
            format!(
                "<= {TARGET_P50_CONFIRM_MS} / <= {TARGET_P99_CONFIRM_MS} ({})",
                verdict(confirm_ok)
            ),
        ),
        (
            true,
            "complete -> captured p50 / p99 / max, ms, at half rate",
            spread(results.capture_latency()),
            String::new(),
        ),
        (
            true,
            "largest worker RSS idle, MB",
            num(idle, 1),
            format!(
                "<= {TARGET_IDLE_RSS_MB} ({})",
                verdict(idle.map(|m| m <= TARGET_IDLE_RSS_MB))
            ),
        ),
        (
            true,
            "largest worker peak RSS over the run, MB",
            num(peak, 1),
            format!(
                "<= {TARGET_PEAK_RSS_MB} ({})",
                verdict(peak.map(|m| m <= TARGET_PEAK_RSS_MB))
            ),
        ),
        (
            true,
            "sagas per second, 2 replicas",
            scaling,
            "does not fall".into(),
        ),
    ];
    let mut table = Table::new(["figure", "value", "target"]);
    for (_, figure, value, target) in rows.into_iter().filter(|row| row.0) {
        table.row([figure.to_owned(), value, target]);
    }
    table
}

/// CPU µs per message of process `name` over a run of `messages` messages.
fn micros(usage: &BTreeMap<String, Usage>, name: &str, messages: u64) -> String {
    let cpu = usage.get(name).filter(|_| messages > 0);
    num(cpu.map(|u| u.cpu_seconds * 1e6 / messages as f64), 1)
}

/// The relay runs, then the floor runs.
fn ceilings(results: &Results) -> Table {
    let mut table = Table::new([
        "run",
        "in flight",
        "messages",
        "seconds",
        "messages per second",
        "ms per message",
        "nats-server CPU µs per message",
        "bench CPU µs per message",
    ]);
    for (n, r) in results.relay.iter().enumerate() {
        let (server, bench) = (
            micros(&r.usage, "nats-server", r.messages),
            micros(&r.usage, SELF_NAME, r.messages),
        );
        let in_flight = results.run.max_in_flight.to_string();
        table.row([
            format!("relay {}", n + 1),
            in_flight,
            r.messages.to_string(),
            format!("{:.2}", r.seconds),
            format!("{:.0}", r.per_second),
            String::new(),
            server,
            bench,
        ]);
    }
    for (n, r) in results.floor.iter().enumerate() {
        let (server, bench) = (
            micros(&r.usage, "nats-server", r.messages),
            micros(&r.usage, SELF_NAME, r.messages),
        );
        let ms = format!("{:.3}", r.ms_per_message());
        table.row([
            format!("floor {}", n + 1),
            r.max_in_flight.to_string(),
            r.messages.to_string(),
            format!("{:.2}", r.seconds),
            format!("{:.0}", r.per_second),
            ms,
            server,
            bench,
        ]);
    }
    table
}

/// Every phase of saga load outside the A/B rounds, named, in the order they ran.
fn phases(results: &Results) -> Vec<(String, &Phase)> {
    let mut out: Vec<(String, &Phase)> = results
        .phases()
        .map(|(name, phase)| (name.to_owned(), phase))
        .collect();
    if let Some(backlog) = &results.backlog {
        out.push((
            format!("backlog drain, {} replicas", backlog.replicas),
            &backlog.drain,
        ));
    }
    out
}

type Named<'a> = (String, &'a Phase);

fn phases_table(results: &Results, phases: &[Named<'_>]) -> Table {
    let cores = results.run.cores;
    let cores_busy = |(_, p): &Named<'_>| {
        p.cores_busy(cores)
            .map_or_else(|| "n/a".into(), |c| format!("{:.0}%", 100.0 * c))
    };
    let notifications = |(_, p): &Named<'_>| {
        let counts: Vec<String> = p
            .notifications
            .iter()
            .map(|(n, sagas)| format!("{n}: {sagas}"))
            .collect();
        counts.join(", ")
    };
    let mut list: Vec<Column<'_, Named<'_>>> = vec![
        ("phase", &|(name, _)| name.clone()),
        ("offered per second", &|(_, p)| num(p.offered_per_s, 1)),
        ("started", &|(_, p)| p.started.to_string()),
        ("completed", &|(_, p)| p.completed.to_string()),
        ("failed", &|(_, p)| p.failed().to_string()),
        ("unfinished", &|(_, p)| p.unfinished.to_string()),
        ("seconds", &|(_, p)| format!("{:.2}", p.seconds)),
        ("sagas per second", &|(_, p)| format!("{:.1}", p.per_second)),
        ("D", &|(_, p)| num(p.deliveries_per_saga(), 2)),
        ("inputs per transaction", &|(_, p)| {
            num(p.inputs_per_batch(None), 1)
        }),
        ("notifications: sagas", &notifications),
        ("cores busy", &cores_busy),
        ("workers CPU ms per saga", &|(_, p)| {
            num(p.cpu_ms_per_saga(ALL_WORKERS), 3)
        }),
        ("nats-server CPU ms per saga", &|(_, p)| {
            num(p.cpu_ms_per_saga("nats-server"), 3)
        }),
    ];
    if phases
        .iter()
        .any(|(_, p)| p.usage.contains_key(DATABASE_PROCESS))
    {
        list.push(("postgres CPU ms per saga", &|(_, p)| {
            num(p.cpu_ms_per_saga(DATABASE_PROCESS), 3)
        }));
    }
    list.push(("all CPU ms per saga", &|(_, p)| {
        num(p.cpu_ms_per_saga(ALL_PROCESSES), 3)
    }));
    columns(phases, &list)
}

fn latency(phases: &[Named<'_>]) -> Table {
    let mut rows = Vec::new();
    for (name, p) in phases {
        let spans = [
            ("request -> confirmed", p.confirm_ms),
            ("complete -> captured", p.capture_ms),
            ("request -> captured", p.saga_ms),
        ];
        rows.extend(
            spans
                .into_iter()
                .filter_map(|(span, s)| Some((name, span, s?))),
        );
    }
    columns(
        &rows,
        &[
            ("phase", &|(name, _, _)| name.to_string()),
            ("span", &|(_, span, _)| span.to_string()),
            ("samples", &|(_, _, s)| s.count.to_string()),
            ("p50", &|(_, _, s)| format!("{:.2}", s.p50)),
            ("p99", &|(_, _, s)| format!("{:.2}", s.p99)),
            ("max", &|(_, _, s)| format!("{:.2}", s.max)),
            ("mean", &|(_, _, s)| format!("{:.2}", s.mean)),
        ],
    )
}

fn hops(phases: &[Named<'_>]) -> Table {
    let mut rows = Vec::new();
    for (name, p) in phases {
        let mut sorted: Vec<_> = p.hops.iter().map(|hop| (name, hop)).collect();
        sorted.sort_by(|a, b| b.1.summary.p50.total_cmp(&a.1.summary.p50));
        rows.extend(sorted);
    }
    columns(
        &rows,
        &[
            ("phase", &|(name, _)| name.to_string()),
            ("service", &|(_, hop)| hop.producer.clone()),
            ("effect", &|(_, hop)| hop.effect.clone()),
            ("samples", &|(_, hop)| hop.summary.count.to_string()),
            ("p50", &|(_, hop)| format!("{:.2}", hop.summary.p50)),
            ("p99", &|(_, hop)| format!("{:.2}", hop.summary.p99)),
            ("max", &|(_, hop)| format!("{:.2}", hop.summary.max)),
        ],
    )
}

/// The server's deliveries per service consumer beside what the workers counted; the last row
/// is all the services (`None`).
fn deliveries(phase: &Phase) -> Table {
    let mut services: Vec<Option<&str>> =
        phase.deliveries.keys().map(|s| Some(s.as_str())).collect();
    if !services.is_empty() {
        services.push(None);
    }
    let delivered = |service: &Option<&str>| match service {
        Some(service) => phase.deliveries.get(*service).copied().unwrap_or(0),
        None => phase.total_deliveries(),
    };
    let count = |service: &Option<&str>, name: &str| match service {
        Some(service) => phase
            .worker_counts
            .get(*service)
            .and_then(|c| c.get(name))
            .map_or_else(|| "n/a".into(), u64::to_string),
        None if phase.worker_counts.is_empty() => "n/a".into(),
        None => phase.worker_total(name).to_string(),
    };
    columns(
        &services,
        &[
            ("service", &|s| s.unwrap_or("all").to_owned()),
            ("deliveries", &|s| delivered(s).to_string()),
            ("per saga", &|s| {
                format!("{:.2}", delivered(s) as f64 / phase.started.max(1) as f64)
            }),
            ("handled", &|s| count(s, "handled")),
            ("duplicates", &|s| count(s, "duplicates")),
            ("redelivered", &|s| count(s, "redelivered")),
            ("failed", &|s| count(s, "failed")),
            ("inputs per transaction", &|s| {
                num(phase.inputs_per_batch(*s), 1)
            }),
        ],
    )
}

/// Memory and CPU of every process over the run, and what each spent per saga in `phase`; the
/// last row is all the processes.
fn processes(results: &Results, phase: &Phase) -> Table {
    let mut rows: Vec<(&str, Option<&crate::results::ProcessCost>)> = results
        .processes
        .iter()
        .map(|cost| (cost.name.as_str(), Some(cost)))
        .collect();
    if !rows.is_empty() {
        rows.push((ALL_PROCESSES, None));
    }
    let cost = |cost: Option<&crate::results::ProcessCost>,
                figure: fn(&crate::results::ProcessCost) -> f64,
                decimals| {
        cost.map_or_else(String::new, |c| format!("{:.decimals$}", figure(c)))
    };
    let per_saga = |name: &str, figure: fn(&Usage) -> f64, decimals| {
        num(phase.per_saga(name, figure), decimals)
    };
    columns(
        &rows,
        &[
            ("process", &|(name, _)| name.to_string()),
            ("idle RSS MB", &|(_, c)| {
                c.map_or_else(String::new, |c| num(c.idle_rss_kib.map(mb), 1))
            }),
            ("peak RSS MB", &|(_, c)| cost(*c, |c| mb(c.peak_rss_kib), 1)),
            ("end RSS MB", &|(_, c)| cost(*c, |c| mb(c.end_rss_kib), 1)),
            ("CPU s, whole run", &|(_, c)| cost(*c, |c| c.cpu_seconds, 2)),
            ("CPU ms", &|(name, _)| {
                per_saga(name, |u| u.cpu_seconds * 1000.0, 3)
            }),
            ("context switches", &|(name, _)| {
                per_saga(name, |u| u.context_switches as f64, 1)
            }),
            ("read calls", &|(name, _)| {
                per_saga(name, |u| u.read_calls as f64, 1)
            }),
            ("write calls", &|(name, _)| {
                per_saga(name, |u| u.write_calls as f64, 1)
            }),
            ("KB to storage", &|(name, _)| {
                per_saga(name, |u| u.disk_write_bytes as f64 / 1024.0, 1)
            }),
        ],
    )
}

/// The A/B rounds, and the medians over the rounds: at the maximum rate, at the common latency
/// rate, and per process.
fn ab(out: &mut String, c: &Comparison) {
    let mut builds = Table::new(["build", "workers"]);
    builds.row([
        "baseline".into(),
        format!("{} (`{}`)", c.baseline, c.baseline_bin_dir),
    ]);
    builds.row(["current".into(), format!("`{}`", c.current_bin_dir)]);
    builds.row(["latency phases, sagas per second".into(), num(c.rate, 1)]);
    let _ = write!(out, "\n## A/B against baseline\n\n{}", builds.render());

    type Figure = fn(&Round) -> Option<f64>;
    let figures: [(&str, Figure, usize); 10] = [
        ("S baseline", |r| Some(r.baseline.max.per_second), 1),
        ("S current", |r| Some(r.current.max.per_second), 1),
        ("S current / baseline", Round::speedup, 3),
        (
            "workers CPU ms per saga, baseline",
            |r| r.baseline.max.cpu_ms_per_saga(ALL_WORKERS),
            3,
        ),
        ("current", |r| r.current.max.cpu_ms_per_saga(ALL_WORKERS), 3),
        ("current / baseline", |r| r.cpu_ratio(ALL_WORKERS), 3),
        (
            "nats-server CPU ms per saga, baseline",
            |r| r.baseline.max.cpu_ms_per_saga("nats-server"),
            3,
        ),
        (
            "current",
            |r| r.current.max.cpu_ms_per_saga("nats-server"),
            3,
        ),
        ("current / baseline", |r| r.cpu_ratio("nats-server"), 3),
        (
            "S current / baseline at the server's pace",
            Round::paced_speedup,
            3,
        ),
    ];
    let mut max = Table::new(
        ["round", "first"]
            .into_iter()
            .chain(figures.iter().map(|f| f.0))
            .chain(["D baseline / current"]),
    );
    for r in &c.rounds {
        let d = |build: Build| num(r.side(build).max.deliveries_per_saga(), 2);
        let cells = figures
            .iter()
            .map(|(_, figure, decimals)| num(figure(r), *decimals));
        max.row(
            [r.number.to_string(), r.first.name().into()]
                .into_iter()
                .chain(cells)
                .chain([format!("{} / {}", d(Build::Baseline), d(Build::Current))]),
        );
    }
    let medians = figures
        .iter()
        .map(|(_, figure, decimals)| num(c.median_of(figure), *decimals));
    max.row(
        ["median".to_owned(), String::new()]
            .into_iter()
            .chain(medians)
            .chain([String::new()]),
    );
    let _ = write!(out, "\n### Maximum rate\n\n{}", max.render());

    if c.rate.is_some() {
        let spread = |s: Option<Summary>| {
            s.map_or_else(
                || "n/a".into(),
                |s| format!("{:.2} / {:.2} / {:.2}", s.p50, s.p99, s.max),
            )
        };
        let mut latency = Table::new([
            "round",
            "build",
            "completed",
            "starts skipped",
            "request -> confirmed p50 / p99 / max, ms",
            "complete -> captured p50 / p99 / max, ms",
        ]);
        for r in &c.rounds {
            let second = if r.first == Build::Baseline {
                Build::Current
            } else {
                Build::Baseline
            };
            for build in [r.first, second] {
                let side = r.side(build);
                let (completed, skipped) = side
                    .latency
                    .as_ref()
                    .map_or((0, 0), |p| (p.completed, p.skipped_starts));
                latency.row([
                    r.number.to_string(),
                    build.name().into(),
                    completed.to_string(),
                    skipped.to_string(),
                    spread(side.confirm()),
                    spread(side.capture()),
                ]);
            }
        }
        for build in [Build::Baseline, Build::Current] {
            let median = |span: fn(&crate::results::Side) -> Option<Summary>| {
                let picks: [fn(Summary) -> f64; 3] = [|s| s.p50, |s| s.p99, |s| s.max];
                picks
                    .map(|pick| num(c.median_of(|r| span(r.side(build)).map(pick)), 2))
                    .join(" / ")
            };
            let (confirm, capture) = (median(|s| s.confirm()), median(|s| s.capture()));
            latency.row([
                "median".into(),
                build.name().into(),
                String::new(),
                String::new(),
                confirm,
                capture,
            ]);
        }
        let _ = write!(out, "\n### Latency, open loop\n\n{}", latency.render());
    }

    let mut names: BTreeSet<&str> = BTreeSet::new();
    for r in &c.rounds {
        names.extend(
            r.baseline
                .max
                .usage
                .keys()
                .chain(r.current.max.usage.keys())
                .map(String::as_str),
        );
    }
    if names.is_empty() {
        return;
    }
    let names: Vec<&str> = names.into_iter().chain([ALL_WORKERS]).collect();
    let cpu =
        |name: &str, build: Build| num(c.median_of(|r| r.side(build).max.cpu_ms_per_saga(name)), 3);
    let switches = |name: &str, build: Build| {
        num(
            c.median_of(|r| {
                r.side(build)
                    .max
                    .per_saga(name, |u| u.context_switches as f64)
            }),
            1,
        )
    };
    let processes = columns(
        &names,
        &[
            ("process", &|name| name.to_string()),
            ("CPU ms per saga, baseline", &|name| {
                cpu(name, Build::Baseline)
            }),
            ("current", &|name| cpu(name, Build::Current)),
            ("current / baseline", &|name| {
                num(c.median_of(|r| r.cpu_ratio(name)), 3)
            }),
            ("context switches per saga, baseline", &|name| {
                switches(name, Build::Baseline)
            }),
            ("current", &|name| switches(name, Build::Current)),
        ],
    );
    let _ = write!(
        out,
        "\n### Per process at the maximum rate, medians\n\n{}",
        processes.render()
    );
}

/// The block of `BENCHMARKS.md` with the latest figures.
pub fn latest_block(results: &Results) -> String {
    let run = &results.run;
    let mut out = format!("{BLOCK_BEGIN}\n");
    let _ = writeln!(
        out,
        "Latest run: {} with `{}` on {} (load average {} before, {} after); {} ({}). Full \
         report: [`{}`]({}).\n",
        run.started_at,
        run.command,
        run.machine,
        run.load_before,
        run.load_after,
        run.nats_version,
        run.revision,
        run.report,
        run.report
    );
    out.push_str(&headline(results).render());
    list(&mut out, "\nProblems in this run:\n\n", &results.problems);
    let _ = writeln!(
        out,
        "\n```text\n{}\n```\n{BLOCK_END}",
        results.summary_line()
    );
    out
}

/// `document` with its latest-figures block replaced by `block` (appended when it has none).
pub fn replace_block(document: &str, block: &str) -> String {
    if let (Some(begin), Some(end)) = (document.find(BLOCK_BEGIN), document.find(BLOCK_END))
        && begin < end
    {
        let after = &document[end + BLOCK_END.len()..];
        let after = after.strip_prefix('\n').unwrap_or(after);
        return format!("{}{block}{after}", &document[..begin]);
    }
    let mut out = document.trim_end().to_owned();
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(block);
    out
}

#[cfg(test)]
mod tests;
