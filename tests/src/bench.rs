//! Measurements for `amphi-bench`: timed `ctr` runs, summary statistics, and the memory of
//! the runtime-side processes of a daemon's containers (shims and their helpers, never the
//! workload or containerd).
//!
//! Memory is read from `/proc/<pid>/smaps_rollup` (`Pss:` and `Rss:`), falling back to
//! `VmRSS` in `/proc/<pid>/status` when `smaps_rollup` is unreadable (PSS is then taken
//! to equal RSS and the figure is flagged).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::command::{self, Output};
use crate::daemon::Containerd;
use crate::leaks;

/// containerd's stock runc shim, the baseline.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";

/// Summary of a set of samples (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Number of samples.
    pub n: usize,
    /// Smallest sample.
    pub min: f64,
    /// Median (mean of the two middle samples for an even count).
    pub median: f64,
    /// 90th percentile, nearest rank.
    pub p90: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Largest sample.
    pub max: f64,
}

/// Summarises `samples`; `None` when there are none (or one is NaN).
pub fn stats(samples: &[f64]) -> Option<Stats> {
    if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    // Nearest rank: the smallest sample with at least 90 % of the samples at or below it.
    let rank = (n * 9).div_ceil(10).max(1);
    Some(Stats {
        n,
        min: sorted[0],
        median,
        p90: sorted[rank - 1],
        mean: sorted.iter().sum::<f64>() / n as f64,
        max: sorted[n - 1],
    })
}

/// Runs `ctr <args>` against `d` and measures its wall clock time, from just before the
/// spawn to the moment the exit is reaped.
///
/// Unlike [`Containerd::ctr`], whose wait polls every 10 ms, this blocks in `wait`, so the
/// figure is not quantised; a watchdog thread kills ctr when `timeout` passes.
pub fn timed_ctr(d: &Containerd, args: &[&str], timeout: Duration) -> (Duration, Output) {
    let mut cmd = d.ctr_command();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = command::describe(&cmd);
    let failed = |stderr: String, elapsed: Duration| {
        (
            elapsed,
            Output {
                command: line.clone(),
                status: None,
                stdout: String::new(),
                stderr,
                timed_out: false,
            },
        )
    };
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (pid_tx, pid_rx) = mpsc::channel::<u32>();
    let watchdog = thread::spawn(move || {
        let Ok(pid) = pid_rx.recv() else {
            return false;
        };
        match done_rx.recv_timeout(timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(raw) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
                }
                true
            }
            _ => false,
        }
    });
    let start = Instant::now();
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            drop(pid_tx);
            let _ = watchdog.join();
            return failed(format!("cannot start ctr: {e}"), start.elapsed());
        }
    };
    let _ = pid_tx.send(child.id());
    let result = child.wait_with_output();
    let elapsed = start.elapsed();
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    match result {
        Ok(out) => (
            elapsed,
            Output {
                command: line,
                status: if timed_out { None } else { Some(out.status) },
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                timed_out,
            },
        ),
        Err(e) => failed(format!("waiting for ctr failed: {e}"), elapsed),
    }
}

/// Memory of one process, KiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcMemory {
    /// The process.
    pub pid: u32,
    /// Its command line (arguments joined by spaces).
    pub cmdline: String,
    /// `/proc/<pid>/exe`, when readable.
    pub exe: Option<PathBuf>,
    /// Proportional set size; `None` when `smaps_rollup` was unreadable.
    pub pss_kib: Option<u64>,
    /// Resident set size.
    pub rss_kib: u64,
}

impl ProcMemory {
    /// PSS, or RSS when PSS is unavailable.
    pub fn pss_or_rss_kib(&self) -> u64 {
        self.pss_kib.unwrap_or(self.rss_kib)
    }
}

/// The `<key>: <n> kB` value of a `/proc` file.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Reads the memory of `pid`: PSS and RSS from `smaps_rollup`, else RSS from `status`.
pub fn process_memory(pid: u32) -> Option<ProcMemory> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let raw = fs::read(proc_dir.join("cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&raw)
        .replace('\0', " ")
        .trim()
        .to_string();
    let exe = fs::read_link(proc_dir.join("exe")).ok();
    let rollup = fs::read_to_string(proc_dir.join("smaps_rollup")).unwrap_or_default();
    let (pss_kib, rss_kib) = match (kib_field(&rollup, "Pss"), kib_field(&rollup, "Rss")) {
        (Some(pss), Some(rss)) => (Some(pss), rss),
        _ => {
            let status = fs::read_to_string(proc_dir.join("status")).ok()?;
            (None, kib_field(&status, "VmRSS")?)
        }
    };
    Some(ProcMemory {
        pid,
        cmdline,
        exe,
        pss_kib,
        rss_kib,
    })
}

/// The parent pid of every process on the host.
fn parent_map() -> HashMap<u32, u32> {
    crate::leaks::host_pids()
        .into_iter()
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Field 4; the command name (field 2) may contain spaces, so count after its ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())?;
            Some((pid, ppid))
        })
        .collect()
}

/// The basename of the first word of a command line.
fn program_name(cmdline: &str) -> &str {
    let argv0 = cmdline.split_whitespace().next().unwrap_or("");
    argv0.rsplit('/').next().unwrap_or(argv0)
}

/// The shim processes of daemon `d`: those named `containerd-shim-*` whose command line
/// names the daemon's socket (containerd starts every shim with `-address <socket>`).
pub fn shim_processes(d: &Containerd) -> Vec<(u32, String)> {
    leaks::processes_matching(&[d.socket().display().to_string()])
        .into_iter()
        .filter(|(_, cmd)| program_name(cmd).starts_with("containerd-shim-"))
        .collect()
}

/// The runtime side of `d`'s containers: the shim processes named `shim_name` (a binary
/// name such as `containerd-shim-runc-v2`) and all their descendants, except the
/// `workload` pids (and so their descendants). Sorted by pid.
pub fn runtime_processes(d: &Containerd, shim_name: &str, workload: &HashSet<u32>) -> Vec<u32> {
    let roots: Vec<u32> = shim_processes(d)
        .into_iter()
        .filter(|(_, cmd)| program_name(cmd) == shim_name)
        .map(|(pid, _)| pid)
        .collect();
    let parents = parent_map();
    let mut found: HashSet<u32> = roots.iter().copied().collect();
    let mut frontier = roots;
    while let Some(parent) = frontier.pop() {
        for (&pid, &ppid) in &parents {
            if ppid == parent && !workload.contains(&pid) && found.insert(pid) {
                frontier.push(pid);
            }
        }
    }
    let mut pids: Vec<u32> = found.into_iter().collect();
    pids.sort_unstable();
    pids
}

/// Waits until `d` has no shim process left (teardown after `ctr run --rm` is
/// asynchronous); returns the ones still there after `timeout`.
pub fn wait_no_shims(d: &Containerd, timeout: Duration) -> Result<(), Vec<(u32, String)>> {
    let deadline = Instant::now() + timeout;
    loop {
        let shims = shim_processes(d);
        if shims.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(shims);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A size in KiB as `1.9 MiB` (or `812 KiB` below 1 MiB).
pub fn format_kib(kib: f64) -> String {
    if kib < 1024.0 {
        format!("{kib:.0} KiB")
    } else {
        format!("{:.1} MiB", kib / 1024.0)
    }
}

/// Whether a binary path is a `release` or `debug` cargo build, from its path.
pub fn build_profile(path: &std::path::Path) -> &'static str {
    let text = path.display().to_string();
    if text.contains("/release/") {
        "release"
    } else if text.contains("/debug/") {
        "debug"
    } else {
        "unknown profile"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_odd_and_even_counts() {
        let s = stats(&[3.0, 1.0, 2.0]).expect("stats");
        assert_eq!((s.min, s.median, s.max, s.mean), (1.0, 2.0, 3.0, 2.0));
        let s = stats(&[4.0, 1.0, 3.0, 2.0]).expect("stats");
        assert_eq!(s.median, 2.5);
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = stats(&twenty).expect("stats");
        assert_eq!(s.p90, 18.0);
        assert_eq!(stats(&[7.0]).expect("stats").p90, 7.0);
        assert!(stats(&[]).is_none());
    }

    #[test]
    fn kib_fields_of_rollup_and_status() {
        let rollup = "55d0-7ff [rollup]\nRss:                3100 kB\nPss:                1234 kB\nPss_Anon:            900 kB\n";
        assert_eq!(kib_field(rollup, "Pss"), Some(1234));
        assert_eq!(kib_field(rollup, "Rss"), Some(3100));
        assert_eq!(kib_field("VmRSS:\t    2048 kB\n", "VmRSS"), Some(2048));
        assert_eq!(kib_field(rollup, "Swap"), None);
    }

    #[test]
    fn this_process_has_memory_figures() {
        let me = process_memory(std::process::id()).expect("own /proc entry");
        assert!(me.rss_kib > 0);
        assert!(me.pss_or_rss_kib() > 0);
    }

    #[test]
    fn program_names_and_profiles() {
        assert_eq!(
            program_name("/usr/bin/containerd-shim-runc-v2 -namespace default"),
            "containerd-shim-runc-v2"
        );
        assert_eq!(program_name(""), "");
        assert_eq!(
            build_profile(std::path::Path::new("/t/release/containerd-shim-amphi-v1")),
            "release"
        );
        assert_eq!(build_profile(std::path::Path::new("/t/debug/x")), "debug");
    }
}
