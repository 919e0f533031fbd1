//! A process's resource use read from `/proc/<pid>` (Linux): what the
//! benches sample over a run and the tests bound (peak memory while
//! streaming a large file).

/// A process's resident memory and open file descriptors at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// `VmHWM` (peak RSS of the process so far), KiB.
    pub peak_rss_kib: u64,
    /// Entries in `/proc/<pid>/fd`.
    pub open_fds: u64,
}

/// [`ProcSample`] of process `pid`; `None` if it is gone (or not Linux).
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcSample {
        rss_kib: kib("VmRSS:")?,
        peak_rss_kib: kib("VmHWM:")?,
        open_fds,
    })
}

/// The CPU time process `pid` has used so far (user + system), seconds;
/// `None` if it is gone (or not Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    // utime and stime.
    stat_seconds(&pid.to_string(), 11, 12)
}

/// The CPU time (user + system) of this process's children that have
/// exited and been waited for, seconds: the delta around a
/// `Command::status()` is that command's CPU time, threads included.
pub fn waited_children_cpu_seconds() -> Option<f64> {
    // cutime and cstime.
    stat_seconds("self", 13, 14)
}

/// The sum of two clock-tick fields of `/proc/{process}/stat`, counted
/// after the command name (which is in parentheses and may hold spaces), in
/// seconds.
fn stat_seconds(process: &str, first: usize, second: usize) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    Some((ticks(first)? + ticks(second)?) / clock_ticks_per_second())
}

/// `getconf CLK_TCK` (100 where it cannot be asked).
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_open_files_and_cpu_time() {
        let me = std::process::id();
        let sample = proc_sample(me).expect("/proc of this process");
        assert!(sample.rss_kib > 0 && sample.peak_rss_kib >= sample.rss_kib);
        assert!(sample.open_fds >= 3, "stdin, stdout, stderr");
        assert!(cpu_seconds(me).is_some_and(|s| s >= 0.0));
    }

    #[test]
    fn a_waited_child_adds_its_cpu_time_to_the_childrens() {
        let before = waited_children_cpu_seconds().expect("/proc/self/stat");
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let after = waited_children_cpu_seconds().expect("/proc/self/stat");
        assert!(after > before, "{before} -> {after}");
    }

    #[test]
    fn a_process_that_is_gone_has_no_sample() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(proc_sample(pid), None);
        assert_eq!(cpu_seconds(pid), None);
    }
}
