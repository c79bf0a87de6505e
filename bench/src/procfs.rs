//! CPU time, memory, context switches and I/O of a process, read from Linux's
//! `/proc/<pid>/stat`, `status`, `io` and `task/*/status`; and of a process with its children
//! as one ([`sample_family`]).

use std::fs;
use std::io;
use std::process::Command;

use crate::results::Usage;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time since the process started, in seconds (all threads).
    pub cpu_seconds: f64,
    /// Resident set size now, in KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size since the process started, in KiB (`VmHWM`).
    pub peak_rss_kib: u64,
    /// Voluntary and involuntary context switches of its live threads.
    pub context_switches: u64,
    /// Read-like and write-like system calls (files and sockets), from `/proc/<pid>/io`.
    pub read_calls: u64,
    pub write_calls: u64,
    /// Bytes it caused to be written to storage (`write_bytes`).
    pub disk_write_bytes: u64,
}

/// What a process did from `before` to `after`; a process with no `before` started in between
/// and counts from zero. Context switches of threads that ended in between are lost, so that
/// difference saturates at zero.
pub fn usage(before: Option<&ProcSample>, after: &ProcSample) -> Usage {
    let b = before.copied().unwrap_or_default();
    Usage {
        cpu_seconds: (after.cpu_seconds - b.cpu_seconds).max(0.0),
        context_switches: after.context_switches.saturating_sub(b.context_switches),
        read_calls: after.read_calls.saturating_sub(b.read_calls),
        write_calls: after.write_calls.saturating_sub(b.write_calls),
        disk_write_bytes: after.disk_write_bytes.saturating_sub(b.disk_write_bytes),
    }
}

/// Reads the counters of `pid`; `ticks_per_second` is the kernel's clock tick rate.
pub fn sample(pid: u32, ticks_per_second: u64) -> io::Result<ProcSample> {
    read(pid, ticks_per_second).map(|(sample, _)| sample)
}

/// The counters of `pid`, and the clock ticks of its children that ended and were waited for.
fn read(pid: u32, ticks_per_second: u64) -> io::Result<(ProcSample, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what} of {pid}"));
    let ticks = cpu_ticks(&stat).ok_or_else(|| bad("unreadable /proc/<pid>/stat"))?;
    let reaped = reaped_children_ticks(&stat).unwrap_or(0);
    // Not readable everywhere (another user's process, some containers): zero then.
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let sample = ProcSample {
        cpu_seconds: ticks as f64 / ticks_per_second.max(1) as f64,
        rss_kib: field(&status, "VmRSS").ok_or_else(|| bad("no VmRSS in status"))?,
        peak_rss_kib: field(&status, "VmHWM").ok_or_else(|| bad("no VmHWM in status"))?,
        context_switches: context_switches(pid),
        read_calls: field(&io, "syscr").unwrap_or(0),
        write_calls: field(&io, "syscw").unwrap_or(0),
        disk_write_bytes: field(&io, "write_bytes").unwrap_or(0),
    };
    Ok((sample, reaped))
}

/// Reads a server that runs a process per connection or task (PostgreSQL's postmaster and the
/// processes it forks) as one: `pid` and its children.
///
/// CPU is the parent's own, plus that of its live children, plus that of the children that
/// ended and were waited for (the parent's `cutime + cstime`), so it keeps growing as children
/// come and go. The parent is read first: a child that ends between the two reads is missing
/// from this sample (not yet in the parent's count) and is in the next, never counted twice.
/// Memory is the sum of their proportional set sizes (`Pss` in `smaps_rollup`: the pages they
/// share, PostgreSQL's shared buffers among them, divided among the processes that map them),
/// or of their RSS where that cannot be read; there is no peak for a group of processes, so
/// `peak_rss_kib` is the sum now. Context switches and I/O are those of the live processes.
pub fn sample_family(pid: u32, ticks_per_second: u64) -> io::Result<ProcSample> {
    let (mut total, reaped) = read(pid, ticks_per_second)?;
    total.cpu_seconds += reaped as f64 / ticks_per_second.max(1) as f64;
    total.rss_kib = proportional_kib(pid).unwrap_or(total.rss_kib);
    for child in children(pid) {
        // A child that ended since the directory was listed is in the parent's count later.
        let Ok((sample, _)) = read(child, ticks_per_second) else {
            continue;
        };
        total.cpu_seconds += sample.cpu_seconds;
        total.rss_kib += proportional_kib(child).unwrap_or(sample.rss_kib);
        total.context_switches += sample.context_switches;
        total.read_calls += sample.read_calls;
        total.write_calls += sample.write_calls;
        total.disk_write_bytes += sample.disk_write_bytes;
    }
    total.peak_rss_kib = total.rss_kib;
    Ok(total)
}

/// The live processes whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| {
            fs::read_to_string(format!("/proc/{candidate}/stat"))
                .ok()
                .and_then(|stat| parent_pid(&stat))
                == Some(pid)
        })
        .collect();
    out.sort_unstable();
    out
}

/// The `Pss` line of `/proc/<pid>/smaps_rollup`, in KiB.
fn proportional_kib(pid: u32) -> Option<u64> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    field(&rollup, "Pss")
}

/// Context switches summed over the live threads of `pid`.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| fs::read_to_string(task.path().join("status")).ok())
        .map(|status| thread_context_switches(&status))
        .sum()
}

/// Voluntary plus involuntary context switches in a thread's `status`.
pub fn thread_context_switches(status: &str) -> u64 {
    field(status, "voluntary_ctxt_switches").unwrap_or(0)
        + field(status, "nonvoluntary_ctxt_switches").unwrap_or(0)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks. The command
/// name (field 2) may contain spaces and parentheses, so fields are counted after its last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state (3), ppid (4), ... utime is field 14, the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The n-th field of a `/proc/<pid>/stat` line counted from the state (field 3), as a number.
/// The command name (field 2) may contain spaces and parentheses, so fields are counted after
/// its last `)`.
fn stat_field(stat: &str, number: usize) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name
        .split_whitespace()
        .nth(number.checked_sub(3)?)?
        .parse()
        .ok()
}

/// The parent's pid (field 4) of a `/proc/<pid>/stat` line.
pub fn parent_pid(stat: &str) -> Option<u32> {
    u32::try_from(stat_field(stat, 4)?).ok()
}

/// `cutime + cstime` (fields 16 and 17) of a `/proc/<pid>/stat` line, in clock ticks: the CPU
/// of the process's children that ended and that it waited for.
pub fn reaped_children_ticks(stat: &str) -> Option<u64> {
    Some(stat_field(stat, 16)? + stat_field(stat, 17)?)
}

/// The number of a `Key:   1234 kB` or `key: 1234` line (`/proc/<pid>/status`, `io`,
/// `/proc/meminfo`); sizes are in KiB.
pub fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`), 100 when it cannot be asked.
pub fn ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// The 1, 5 and 15 minute load averages, e.g. `1.02 0.80 0.51`: how busy the machine was
/// apart from the run.
pub fn load_average() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    if fields.len() == 3 {
        fields.join(" ")
    } else {
        "unknown".into()
    }
}

/// CPU model, logical CPUs and memory of this machine, and the kernel release, for reports.
pub fn machine_description() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown CPU")
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = field(&meminfo, "MemTotal").unwrap_or(0) as f64 / (1024.0 * 1024.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} logical CPUs ({model}), {memory_gib:.1} GiB RAM, Linux {}",
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (ride worker) S 1 4242 4242 0 -1 4194560 2167 0 0 0 \
                        731 205 0 0 20 0 5 0 123456 123456789 4567 18446744073709551615 \
                        1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn cpu_time_is_user_plus_system_ticks() {
        assert_eq!(cpu_ticks(STAT), Some(731 + 205));
    }

    #[test]
    fn a_command_name_with_parentheses_does_not_shift_the_fields() {
        let tricky = STAT.replace("(ride worker)", "(a) b) c)");
        assert_eq!(cpu_ticks(&tricky), Some(936));
        assert_eq!(cpu_ticks("12 (cut short) S 1 2"), None);
    }

    #[test]
    fn the_parent_and_the_cpu_of_ended_children_are_read_from_stat() {
        assert_eq!(parent_pid(STAT), Some(1));
        assert_eq!(reaped_children_ticks(STAT), Some(0));
        // A postmaster (ppid 77) whose ended backends used 40 + 9 ticks.
        let postmaster = STAT
            .replace("(ride worker) S 1 ", "(postgres) S 77 ")
            .replace(" 731 205 0 0 ", " 731 205 40 9 ");
        assert_eq!(parent_pid(&postmaster), Some(77));
        assert_eq!(reaped_children_ticks(&postmaster), Some(49));
        assert_eq!(cpu_ticks(&postmaster), Some(936));
        let tricky = postmaster.replace("(postgres)", "(postgres: a) 1 2 3)");
        assert_eq!(parent_pid(&tricky), Some(77));
        assert_eq!(parent_pid("12 (cut short)"), None);
    }

    #[test]
    fn a_family_counts_the_parent_and_its_live_children() {
        // This process and a child of it that runs until killed.
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let ticks = ticks_per_second();
        let me = std::process::id();
        assert!(children(me).contains(&child.id()));
        let alone = sample(me, ticks).unwrap();
        let family = sample_family(me, ticks).unwrap();
        assert!(family.cpu_seconds >= alone.cpu_seconds);
        assert!(family.rss_kib > 0 && family.peak_rss_kib == family.rss_kib);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!children(me).contains(&child.id()));
    }

    #[test]
    fn status_values_are_read_in_kib() {
        let status = "Name:\tride-worker\nVmHWM:\t   21480 kB\nVmRSS:\t   19312 kB\nThreads:\t5\n";
        assert_eq!(field(status, "VmRSS"), Some(19312));
        assert_eq!(field(status, "VmHWM"), Some(21480));
        assert_eq!(field(status, "VmSwap"), None);
    }

    #[test]
    fn io_counters_and_context_switches_are_read() {
        let io = "rchar: 6976\nwchar: 0\nsyscr: 10\nsyscw: 3\nread_bytes: 0\nwrite_bytes: 4096\n";
        assert_eq!(field(io, "syscr"), Some(10));
        assert_eq!(field(io, "write_bytes"), Some(4096));
        let status = "voluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(thread_context_switches(status), 127);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = sample(std::process::id(), ticks_per_second()).unwrap();
        assert!(sample.rss_kib > 0 && sample.peak_rss_kib >= sample.rss_kib);
        assert!(sample.context_switches > 0);
    }
}
