//! The cost sections of the report: CPU and memory per process and per phase, per saga at
//! the maximum rate, and where the CPU went.

use std::fmt::Write as _;

use super::*;

pub(super) fn render_costs(out: &mut String, report: &Report) {
    if report.costs.is_empty() {
        return;
    }
    let phases: Vec<(&str, &Phase)> = report.phases().collect();
    out.push_str("\n## Cost per process\n\nCPU seconds (user + system, all threads) from ");
    out.push_str(
        "`/proc/<pid>/stat`; RSS from `/proc/<pid>/status` (idle: after start-up, before ",
    );
    out.push_str("any load; peak: `VmHWM`, over the whole run; end: after the last phase).");
    if report.ab.is_some() {
        // The A/B rounds run their own fleets; these figures end where they begin.
        out.push_str(" The whole run here ends before the A/B rounds.");
    }
    if report
        .costs
        .iter()
        .any(|cost| cost.name == database::PROCESS_NAME)
    {
        let _ = write!(
            out,
            " `{}` is PostgreSQL's processes together: its memory is their proportional set \
             sizes (`Pss` in `/proc/<pid>/smaps_rollup`) summed, and its peak the largest sum \
             seen at the readings around each phase.",
            database::PROCESS_NAME
        );
    }
    out.push_str("\n\n");
    let mut header =
        "| process | idle RSS MB | peak RSS MB | end RSS MB | CPU s, whole run |".to_owned();
    let mut rule = "| --- | --- | --- | --- | --- |".to_owned();
    for (name, _) in &phases {
        let _ = write!(header, " CPU s, {name} |");
        rule.push_str(" --- |");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for cost in &report.costs {
        let _ = write!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.2} |",
            cost.name,
            cell(cost.idle_rss_kib.map(mb), 1),
            mb(cost.peak_rss_kib),
            mb(cost.end_rss_kib),
            cost.cpu_seconds
        );
        for (_, phase) in &phases {
            let cpu = phase.usage.get(&cost.name).map(|u| u.cpu_seconds);
            let _ = write!(out, " {} |", cell(cpu, 2));
        }
        out.push('\n');
    }
    if let Some(max1) = report.max1.as_ref() {
        render_per_saga(out, max1, "at the maximum rate with one replica");
    }
    if let Some(backlog) = report.backlog.as_ref() {
        let title = format!("while {} replicas drained the backlog", backlog.replicas);
        render_per_saga(out, &backlog.phase, &title);
    }
    render_by_load(out, report);
}

/// CPU per completed saga at each load the one-replica fleet ran. A saga is the same work at
/// every load, so what rises as the load falls is what each message costs alone: a write
/// transaction for fewer inputs, and processes woken from idle for each one.
fn render_by_load(out: &mut String, report: &Report) {
    let phases: Vec<(&str, &Phase)> = report
        .phases()
        .filter(|(name, phase)| name.ends_with(", 1 replica") && phase.outcome.captured > 0)
        .collect();
    if phases.len() < 2 || phases.iter().any(|(_, phase)| phase.usage.is_empty()) {
        return;
    }
    // PostgreSQL's processes get a column of their own when they ran.
    let database = phases
        .iter()
        .any(|(_, phase)| phase.usage.contains_key(database::PROCESS_NAME));
    if database {
        out.push_str(
            "\nPer completed saga at each load with one replica: CPU of all the workers, of \
             nats-server, of PostgreSQL and of every measured process (the generator included), \
             and the last as a multiple of its value at the maximum rate; how busy the \
             machine's cores were with the measured processes; and inputs per write transaction \
             (all workers).\n\n",
        );
        out.push_str(
            "| phase | sagas per second | cores busy | inputs per transaction | workers CPU ms | \
             nats-server CPU ms | postgres CPU ms | all CPU ms | all, x max rate |\n",
        );
        out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    } else {
        out.push_str(
            "\nPer completed saga at each load with one replica: CPU of all the workers, of \
             nats-server and of every measured process (the generator included), and the last \
             as a multiple of its value at the maximum rate; how busy the machine's cores were \
             with the measured processes; and inputs per write transaction (all workers).\n\n",
        );
        out.push_str(
            "| phase | sagas per second | cores busy | inputs per transaction | workers CPU ms | \
             nats-server CPU ms | all CPU ms | all, x max rate |\n",
        );
        out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    }
    let per_saga = |phase: &Phase, filter: &dyn Fn(&str) -> bool| {
        let cpu: f64 = phase
            .usage
            .iter()
            .filter(|(name, _)| filter(name))
            .map(|(_, u)| u.cpu_seconds)
            .sum();
        1000.0 * cpu / phase.outcome.captured as f64
    };
    let all = |phase: &Phase| per_saga(phase, &|_| true);
    let base = all(phases[0].1);
    for (name, phase) in &phases {
        let wall = phase.outcome.elapsed.as_secs_f64() * report.cores.max(1) as f64;
        let cpu: f64 = phase.usage.values().map(|u| u.cpu_seconds).sum();
        let batches = phase.worker_total("batches");
        let database_cell = if database {
            format!(
                " {:.3} |",
                per_saga(phase, &|name| name == database::PROCESS_NAME)
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {} | {:.3} | {:.3} |{database_cell} {:.3} | {} |",
            name.trim_end_matches(", 1 replica"),
            phase.outcome.per_second(),
            if wall > 0.0 {
                format!("{:.0}%", 100.0 * cpu / wall)
            } else {
                "n/a".to_owned()
            },
            cell(
                (batches > 0).then(|| phase.worker_total("handled") as f64 / batches as f64),
                1
            ),
            per_saga(phase, &|name| name.contains("-worker")),
            per_saga(phase, &|name| name == "nats-server"),
            all(phase),
            cell((base > 0.0).then(|| all(phase) / base), 2),
        );
    }
}

/// What each process spent per completed saga during `phase`, which ran `when`.
fn render_per_saga(out: &mut String, phase: &Phase, when: &str) {
    let sagas = phase.outcome.captured;
    if sagas == 0 || phase.usage.is_empty() {
        return;
    }
    let per = |v: f64| v / sagas as f64;
    let _ = write!(
        out,
        "\nPer completed saga {when}: CPU, context switches (live \
         threads, `/proc/<pid>/task/*/status`), read-like and write-like system calls on files \
         and sockets and bytes written to storage (`/proc/<pid>/io`).\n\n",
    );
    out.push_str(
        "| process | CPU ms | context switches | read calls | write calls | KB to storage |\n",
    );
    out.push_str("| --- | --- | --- | --- | --- | --- |\n");
    let mut total = Usage::default();
    let mut row = |name: &str, u: &Usage| {
        let _ = writeln!(
            out,
            "| {name} | {:.3} | {:.1} | {:.1} | {:.1} | {:.1} |",
            per(u.cpu_seconds * 1000.0),
            per(u.context_switches as f64),
            per(u.read_calls as f64),
            per(u.write_calls as f64),
            per(u.disk_write_bytes as f64 / 1024.0)
        );
    };
    for (name, u) in &phase.usage {
        row(name, u);
        total.cpu_seconds += u.cpu_seconds;
        total.context_switches += u.context_switches;
        total.read_calls += u.read_calls;
        total.write_calls += u.write_calls;
        total.disk_write_bytes += u.disk_write_bytes;
    }
    row("all", &total);
}

/// Where the CPU went during the maximum-rate phase with one replica.
pub fn dominance(report: &Report) -> Vec<String> {
    let Some(max1) = report.max1.as_ref() else {
        return Vec::new();
    };
    let cpu = max1.cpu();
    let total: f64 = cpu.values().sum();
    let wall = max1.outcome.elapsed.as_secs_f64();
    if total <= 0.0 || wall <= 0.0 {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "{total:.1} CPU seconds in {wall:.1} s: {:.0}% of {} cores busy with the measured processes.",
        100.0 * total / (wall * report.cores.max(1) as f64),
        report.cores
    )];
    let mut shares: Vec<(&String, &f64)> = cpu.iter().collect();
    shares.sort_by(|a, b| b.1.total_cmp(a.1));
    let workers: f64 = cpu
        .iter()
        .filter(|(name, _)| name.contains("-worker"))
        .map(|(_, cpu)| cpu)
        .sum();
    let database = cpu
        .get(database::PROCESS_NAME)
        .map(|cpu| format!("; PostgreSQL: {:.0}%", 100.0 * cpu / total))
        .unwrap_or_default();
    lines.push(format!(
        "All workers together: {:.0}% of that CPU; nats-server: {:.0}%{database}.",
        100.0 * workers / total,
        100.0 * cpu.get("nats-server").copied().unwrap_or(0.0) / total
    ));
    let list: Vec<String> = shares
        .iter()
        .map(|(name, cpu)| format!("{name} {:.0}%", 100.0 * **cpu / total))
        .collect();
    lines.push(format!("By process: {}.", list.join(", ")));
    lines
}

pub(super) fn render_dominance(out: &mut String, report: &Report) {
    let lines = dominance(report);
    if lines.is_empty() {
        return;
    }
    out.push_str("\n## What dominated (max rate, 1 replica)\n\n");
    for line in lines {
        let _ = writeln!(out, "- {line}");
    }
}
