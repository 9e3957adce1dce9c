//! What the benchmark reads from `/proc`: CPU time and resident memory of the
//! proxies, CPU time of the harness's own threads, and the machine.
//!
//! Reading `/proc` instead of asking each proxy for its own figures is what
//! keeps the comparison fair: the same counters, read the same way, for a
//! Rust binary, nginx's master and workers and HAProxy alike. Every reader
//! returns zero or `None` when a file is missing or malformed (a process that
//! just exited), never panics: a figure goes missing, the run goes on.

use std::fs;
use std::process::Command;

/// Kernel clock ticks per second, the unit of `utime` and `stime` in
/// `/proc/PID/stat`. Asked of `getconf`; 100 is the value on every Linux
/// configuration in practice, so it is the fallback.
pub fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The fields after `(comm)` of a `stat` file: the command name may contain
/// spaces and parentheses, so the split is at the last `)`.
fn stat_fields(text: &str) -> Option<(String, Vec<&str>)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest = text.get(close + 1..)?;
    Some((comm, rest.split_whitespace().collect()))
}

/// `utime + stime` of a stat file's fields (fields 14 and 15 of the whole
/// line, so 11 and 12 after the command name and the state).
fn cpu_of(fields: &[&str]) -> u64 {
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

/// CPU time (user + system, in clock ticks) of one process, all its threads.
pub fn process_ticks(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| stat_fields(&t).map(|(_, f)| cpu_of(&f)))
        .unwrap_or(0)
}

/// Direct children of `pid`, found by scanning every process's parent: nginx
/// workers are children of its master.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|t| {
                    let (_, f) = stat_fields(&t)?;
                    f.get(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// `pid` and its direct children: a proxy and its worker processes.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    all.extend(children(pid));
    all
}

/// CPU ticks of a process and its workers.
pub fn tree_ticks(pid: u32) -> u64 {
    tree(pid).into_iter().map(process_ticks).sum()
}

/// Open file descriptors of a process and its workers.
pub fn tree_fds(pid: u32) -> usize {
    tree(pid)
        .into_iter()
        .filter_map(|p| fs::read_dir(format!("/proc/{p}/fd")).ok())
        .map(|d| d.count())
        .sum()
}

/// Resident memory of a process and its workers, in KiB (`VmRSS`).
pub fn tree_rss_kib(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| status_field(&format!("/proc/{p}/status"), "VmRSS:"))
        .sum()
}

/// The number in a `/proc/.../status` line such as `VmRSS:   1234 kB`.
fn status_field(path: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.get(key.len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU ticks of this process's threads whose name starts with `prefix`: the
/// load generator's and the mock's tokio workers are named apart so their
/// costs can be told apart, though they share the process.
pub fn own_thread_ticks(prefix: &str) -> u64 {
    let Ok(entries) = fs::read_dir("/proc/self/task") else {
        return 0;
    };
    entries
        .filter_map(|e| fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter_map(|t| {
            let (comm, f) = stat_fields(&t)?;
            comm.starts_with(prefix).then(|| cpu_of(&f))
        })
        .sum()
}

/// CPUs this process may run on (`Cpus_allowed_list`, e.g. `0-3,6`), which
/// inside a container may be fewer than the machine has.
pub fn allowed_cpus() -> Vec<usize> {
    let text = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = text
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("")
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let mut ends = part.splitn(2, '-').map(|n| n.trim().parse::<usize>());
        match (ends.next(), ends.next()) {
            (Some(Ok(a)), None) => cpus.push(a),
            (Some(Ok(a)), Some(Ok(b))) if a <= b => cpus.extend(a..=b),
            _ => {}
        }
    }
    if cpus.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        cpus.extend(0..n);
    }
    cpus
}

/// The soft limit on open files of this process, which children inherit.
pub fn open_files_limit() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.get("Max open files".len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The machine, for the report: CPU count, CPU model and kernel.
pub fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = status_field("/proc/meminfo", "MemTotal:").unwrap_or(0) / 1024;
    format!(
        "{nproc} CPUs ({model}), {mem} MiB RAM, Linux {}",
        kernel.trim()
    )
}

/// Pins every thread of this process to `cpus` (a `taskset` list). Called
/// before the tokio runtimes start, so their threads inherit it too.
pub fn pin_self(cpus: &str) -> Result<(), String> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Busy and total clock ticks of `cpus` from `/proc/stat`, everything the
/// kernel did on them included: loopback TCP work done in softirq context
/// is charged to no thread, so per-thread times alone would understate how
/// busy a CPU is.
pub fn cpus_busy(cpus: &[usize]) -> (u64, u64) {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let (mut busy, mut total) = (0, 0);
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(cpu) = f.next().and_then(|n| n.strip_prefix("cpu")) else {
            continue;
        };
        if !cpu.parse::<usize>().is_ok_and(|c| cpus.contains(&c)) {
            continue;
        }
        // user nice system idle iowait irq softirq steal (guest is in user).
        let v: Vec<u64> = f.take(8).filter_map(|x| x.parse().ok()).collect();
        let all: u64 = v.iter().sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        busy += all.saturating_sub(idle);
        total += all;
    }
    (busy, total)
}
