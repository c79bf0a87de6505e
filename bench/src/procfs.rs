//! CPU time, memory, context switches and I/O of a process, read from Linux's
//! `/proc/<pid>/stat`, `status`, `io` and `task/*/status`.

use std::fs;
use std::io;
use std::process::Command;

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

/// What a process did between two samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub context_switches: u64,
    pub read_calls: u64,
    pub write_calls: u64,
    pub disk_write_bytes: u64,
}

impl Usage {
    /// From `before` to `after`; a process with no `before` started in between and counts
    /// from zero. Context switches of threads that ended in between are lost, so that
    /// difference saturates at zero.
    pub fn between(before: Option<&ProcSample>, after: &ProcSample) -> Usage {
        let b = before.copied().unwrap_or_default();
        Usage {
            cpu_seconds: (after.cpu_seconds - b.cpu_seconds).max(0.0),
            context_switches: after.context_switches.saturating_sub(b.context_switches),
            read_calls: after.read_calls.saturating_sub(b.read_calls),
            write_calls: after.write_calls.saturating_sub(b.write_calls),
            disk_write_bytes: after.disk_write_bytes.saturating_sub(b.disk_write_bytes),
        }
    }
}

/// Reads the counters of `pid`; `ticks_per_second` is the kernel's clock tick rate.
pub fn sample(pid: u32, ticks_per_second: u64) -> io::Result<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what} of {pid}"));
    let ticks = cpu_ticks(&stat).ok_or_else(|| bad("unreadable /proc/<pid>/stat"))?;
    // Not readable everywhere (another user's process, some containers): zero then.
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    Ok(ProcSample {
        cpu_seconds: ticks as f64 / ticks_per_second.max(1) as f64,
        rss_kib: field(&status, "VmRSS").ok_or_else(|| bad("no VmRSS in status"))?,
        peak_rss_kib: field(&status, "VmHWM").ok_or_else(|| bad("no VmHWM in status"))?,
        context_switches: context_switches(pid),
        read_calls: field(&io, "syscr").unwrap_or(0),
        write_calls: field(&io, "syscw").unwrap_or(0),
        disk_write_bytes: field(&io, "write_bytes").unwrap_or(0),
    })
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
