//! What the load generator reads from `/proc`: CPU time of a process or a thread, RSS of a
//! process, and the open-file limit of this one (which a spawned gateway inherits).

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Clock ticks per second of `/proc/<pid>/stat` times: `getconf CLK_TCK`, else 100.
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks: &u64| ticks > 0)
        .unwrap_or(100)
}

/// User + system CPU time of a process so far (all threads), read from `/proc/<pid>/stat`.
/// `pid` `None` means this process.
pub fn cpu_time(pid: Option<u32>, ticks_per_sec: u64) -> Result<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    stat_cpu_time(&path, ticks_per_sec)
}

/// User + system CPU time of the calling thread so far, read from `/proc/thread-self/stat`
/// as [`cpu_time`] reads a process's.
pub fn thread_cpu_time(ticks_per_sec: u64) -> Result<Duration> {
    stat_cpu_time("/proc/thread-self/stat", ticks_per_sec)
}

fn stat_cpu_time(path: &str, ticks_per_sec: u64) -> Result<Duration> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .with_context(|| format!("unexpected {path}: {stat:?}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime field 15.
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("no field {n} in {path}"))
    };
    let ticks = field(14)? + field(15)?;
    Ok(Duration::from_micros(ticks * 1_000_000 / ticks_per_sec))
}

/// Resident set size of a process in KiB (`VmRSS` in `/proc/<pid>/status`); `None` = self.
pub fn rss_kib(pid: Option<u32>) -> Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// The soft and hard open-file limits of this process (`None` = unlimited).
pub fn open_file_limits() -> Result<(Option<u64>, Option<u64>)> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .context("no `Max open files` in /proc/self/limits")?;
    let values: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    let parse = |v: Option<&&str>| -> Result<Option<u64>> {
        match v {
            Some(&"unlimited") => Ok(None),
            Some(v) => Ok(Some(v.parse().context("bad open-file limit")?)),
            None => bail!("bad `Max open files` line: {line:?}"),
        }
    };
    Ok((parse(values.first())?, parse(values.get(1))?))
}

/// Fails with what to do when the open-file limit cannot hold `connections` sockets (plus
/// a margin) in this process and in the gateway, which inherits the limit.
pub fn check_open_file_limit(connections: usize) -> Result<()> {
    let needed = connections as u64 + 256;
    let (soft, hard) = open_file_limits()?;
    let Some(soft) = soft else { return Ok(()) };
    if soft >= needed {
        return Ok(());
    }
    let suggested = match hard {
        Some(hard) if hard >= needed => needed.max(65536).min(hard),
        _ => needed.max(65536),
    };
    let hard_note = match hard {
        Some(hard) if hard < needed => format!(
            " The hard limit is {hard}, below that too: raise it first (as root, or in \
             /etc/security/limits.conf, or with `prlimit`)."
        ),
        Some(hard) => format!(" (the hard limit, {hard}, allows it)"),
        None => String::new(),
    };
    bail!(
        "the open-file limit (`ulimit -n`) is {soft}, but {connections} connections need at least \
         {needed} open files in the load generator and again in the gateway (which inherits the \
         limit). Raise it in this shell before running, e.g. `ulimit -n {suggested}`.{hard_note}"
    )
}
