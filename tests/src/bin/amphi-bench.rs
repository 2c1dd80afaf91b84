//! amphi benchmark: amphi and containerd's runc shim measured side by side against ONE
//! private containerd, with ratios.
//!
//! Run as root after building the shim (deploy/bench.sh builds a release shim and runs this):
//!
//! ```text
//! amphi-bench [--containerd 1.6|1.7|2.1] [--runs N] [--warmup W] [--containers K] [--shim PATH]
//! ```
//!
//! 1. start latency: W warm-up runs, then N timed `ctr run --rm --runtime R <image> <id> true`
//!    per runtime, interleaved (amphi, runc, amphi, runc, ...); before every run the bench
//!    waits until the previous run's shim has exited, so teardown never overlaps a timed run;
//! 2. memory: K detached `sleep 600` containers per runtime; once all run, the PSS and RSS of
//!    the shim processes (and any descendant that is not a container process) are summed,
//!    averaged over three samples, and divided by K; containerd and the workload are not
//!    counted. The containers are then killed, removed and leak-checked.
//!
//! `--shim PATH` (or `AMPHI_SHIM`) picks the amphi binary; without either, the harness
//! default (`<target>/debug/containerd-shim-amphi-v1`). Exits 1 when a run fails, 2 on bad
//! arguments; the daemon and everything it started is always torn down.

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use amphi_e2e::bench::{
    self, RUNC_RUNTIME, Stats, format_kib, process_memory, runtime_processes, stats, timed_ctr,
};
use amphi_e2e::env::{self, AMPHI_RUNTIME, SHIM_BINARY_NAME};
use amphi_e2e::{Containerd, IMAGE, Version};

const USAGE: &str = "usage: amphi-bench [--containerd 1.6|1.7|2.1] [--runs N] [--warmup W] \
                     [--containers K] [--shim PATH]";
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(10);
const MEMORY_SAMPLES: usize = 3;

/// The runtime-side binary measured for a runtime.
struct Runtime {
    label: &'static str,
    name: &'static str,
    shim: &'static str,
}

const AMPHI: Runtime = Runtime {
    label: "amphi",
    name: AMPHI_RUNTIME,
    shim: SHIM_BINARY_NAME,
};
const RUNC: Runtime = Runtime {
    label: "runc-v2",
    name: RUNC_RUNTIME,
    shim: "containerd-shim-runc-v2",
};
const RUNTIMES: [&Runtime; 2] = [&AMPHI, &RUNC];

struct Options {
    version: Version,
    runs: usize,
    warmup: usize,
    containers: usize,
    shim: Option<PathBuf>,
}

/// Memory per container of one runtime, KiB.
struct Memory {
    pss_kib: f64,
    rss_kib: f64,
    processes: usize,
    pss_exact: bool,
    exe: Option<PathBuf>,
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("amphi-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let shim = match resolve_shim(opts.shim.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("amphi-bench: {e}");
            return ExitCode::from(2);
        }
    };
    env::require_root();

    println!(
        "amphi shim: {} ({})",
        shim.display(),
        bench::build_profile(&shim)
    );
    println!("starting a private {} ...", opts.version);
    let daemon = Containerd::start_with_busybox(opts.version);

    let latency = match measure_latency(&daemon, &opts) {
        Ok(l) => l,
        Err(e) => return fail(daemon, &e),
    };
    let mut memory = Vec::new();
    for rt in RUNTIMES {
        match measure_memory(&daemon, rt, opts.containers) {
            Ok(m) => memory.push(m),
            Err(e) => return fail(daemon, &e),
        }
    }

    // Asserts that no container of the run left anything behind, then tears down.
    daemon.finish();
    println!("daemon stopped; no containers, mounts, cgroups or shims left\n");
    print_table(&opts, &shim, &latency, &memory);
    ExitCode::SUCCESS
}

fn fail(daemon: Containerd, error: &str) -> ExitCode {
    eprintln!("amphi-bench: FAILED: {error}");
    eprintln!("containerd log tail:\n{}", daemon.log_tail(30));
    drop(daemon);
    ExitCode::FAILURE
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        version: Version::V2_1,
        runs: 20,
        warmup: 3,
        containers: 10,
        shim: None,
    };
    let mut args = args;
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err("help requested".into());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let count = |v: &str| -> Result<usize, String> {
            match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{flag} wants a positive number, not {v:?}")),
            }
        };
        match flag.as_str() {
            "--containerd" => {
                opts.version = Version::parse(&value)
                    .ok_or_else(|| format!("unknown containerd version {value:?}"))?;
            }
            "--runs" => opts.runs = count(&value)?,
            "--warmup" => {
                opts.warmup = value
                    .parse()
                    .map_err(|_| format!("--warmup wants a number, not {value:?}"))?;
            }
            "--containers" => opts.containers = count(&value)?,
            "--shim" => opts.shim = Some(PathBuf::from(value)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(opts)
}

/// The absolute amphi shim path the daemon must use. The harness reads it from
/// `AMPHI_SHIM`; when that does not already hold it (a `--shim` flag, a relative path),
/// the bench re-executes itself with `AMPHI_SHIM` set (changing the environment of a
/// running process is unsafe in Rust 2024).
fn resolve_shim(flag: Option<&Path>) -> Result<PathBuf, String> {
    let wanted = flag.map(Path::to_path_buf).unwrap_or_else(env::shim_path);
    let absolute = wanted.canonicalize().map_err(|e| {
        format!(
            "the amphi shim {} is missing ({e}): build it (`cargo build --release -p amphi-shim`) \
             or pass --shim PATH",
            wanted.display()
        )
    })?;
    if !absolute.is_file() {
        return Err(format!("{} is not a file", absolute.display()));
    }
    if std::env::var_os("AMPHI_SHIM").as_deref() != Some(absolute.as_os_str()) {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("AMPHI_SHIM", &absolute)
            .exec();
        return Err(format!("re-executing with AMPHI_SHIM set failed: {err}"));
    }
    Ok(absolute)
}

/// Start latency samples (ms) per runtime, in [`RUNTIMES`] order.
fn measure_latency(d: &Containerd, opts: &Options) -> Result<Vec<Stats>, String> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(opts.runs); RUNTIMES.len()];
    println!(
        "start latency: {} warm-up + {} timed runs per runtime, interleaved ...",
        opts.warmup, opts.runs
    );
    for round in 0..opts.warmup + opts.runs {
        let warm = round < opts.warmup;
        for (i, rt) in RUNTIMES.iter().enumerate() {
            bench::wait_no_shims(d, SETTLE).map_err(|left| {
                format!("shims still running {SETTLE:?} after their run: {left:?}")
            })?;
            let id = d.new_id(if warm { "warm" } else { "lat" });
            let (took, out) = timed_ctr(
                d,
                &["run", "--rm", "--runtime", rt.name, IMAGE, &id, "true"],
                RUN_TIMEOUT,
            );
            if !out.success() {
                return Err(format!("{} run {id} failed:\n{out}", rt.label));
            }
            if !warm {
                samples[i].push(took.as_secs_f64() * 1000.0);
            }
        }
    }
    bench::wait_no_shims(d, SETTLE)
        .map_err(|left| format!("shims still running {SETTLE:?} after their run: {left:?}"))?;
    samples
        .iter()
        .map(|s| stats(s).ok_or_else(|| "no latency samples".to_string()))
        .collect()
}

/// Starts `k` detached `sleep 600` containers of `rt`, measures its runtime-side processes,
/// then kills, removes and leak-checks the containers.
fn measure_memory(d: &Containerd, rt: &Runtime, k: usize) -> Result<Memory, String> {
    println!("memory: {k} detached containers on {} ...", rt.name);
    let mut ids = Vec::with_capacity(k);
    let result = start_and_measure(d, rt, k, &mut ids);
    for id in &ids {
        if d.task(id).is_some() {
            d.kill_and_remove(id, "SIGKILL");
        } else {
            let _ = d.ctr(&["containers", "delete", id]);
        }
    }
    for id in &ids {
        d.assert_no_leaks(id);
    }
    result
}

fn start_and_measure(
    d: &Containerd,
    rt: &Runtime,
    k: usize,
    ids: &mut Vec<String>,
) -> Result<Memory, String> {
    for _ in 0..k {
        let id = d.new_id(&format!("mem-{}", rt.label));
        ids.push(id.clone());
        let out = d.ctr(&[
            "run",
            "-d",
            "--runtime",
            rt.name,
            IMAGE,
            &id,
            "sleep",
            "600",
        ]);
        if !out.success() {
            return Err(format!("{} ctr run -d {id} failed:\n{out}", rt.label));
        }
    }
    let mut workload = HashSet::new();
    for id in ids.iter() {
        let row = d.wait_task_status(id, "RUNNING");
        workload.insert(row.pid);
        let ps = d.ctr(&["tasks", "ps", id]);
        if !ps.success() {
            return Err(format!("ctr task ps {id} failed:\n{ps}"));
        }
        workload.extend(amphi_e2e::ctr::parse_task_ps(&ps.stdout));
    }
    // Let the shims finish their start-up work before sampling.
    thread::sleep(Duration::from_secs(2));
    let (mut pss, mut rss) = (0u64, 0u64);
    let mut pss_exact = true;
    let mut processes = 0;
    let mut exe = None;
    for sample in 0..MEMORY_SAMPLES {
        if sample > 0 {
            thread::sleep(Duration::from_millis(500));
        }
        let pids = runtime_processes(d, rt.shim, &workload);
        if pids.is_empty() {
            return Err(format!(
                "no {} process found for the daemon at {}",
                rt.shim,
                d.socket().display()
            ));
        }
        processes = processes.max(pids.len());
        for pid in pids {
            // A process may exit between the listing and the read; it then counts nothing.
            if let Some(m) = process_memory(pid) {
                pss_exact &= m.pss_kib.is_some();
                pss += m.pss_or_rss_kib();
                rss += m.rss_kib;
                if exe.is_none() {
                    exe = m.exe.clone();
                }
                if sample == 0 {
                    println!(
                        "  pid {pid:>7}  PSS {:>9}  RSS {:>9}  {}",
                        format_kib(m.pss_or_rss_kib() as f64),
                        format_kib(m.rss_kib as f64),
                        m.cmdline
                    );
                }
            }
        }
    }
    let per = (MEMORY_SAMPLES * k) as f64;
    Ok(Memory {
        pss_kib: pss as f64 / per,
        rss_kib: rss as f64 / per,
        processes,
        pss_exact,
        exe,
    })
}

fn print_table(opts: &Options, shim: &Path, latency: &[Stats], memory: &[Memory]) {
    println!(
        "amphi benchmark ({}, {} runs, {} containers, binary: {})",
        opts.version,
        opts.runs,
        opts.containers,
        bench::build_profile(shim)
    );
    println!("  amphi shim: {}", shim.display());
    if let Some(exe) = memory.get(1).and_then(|m| m.exe.as_ref()) {
        println!("  runc shim:  {}", exe.display());
    }
    println!(
        "{:<24}{:>14}{:>14}{:>14}",
        "", AMPHI.label, RUNC.label, "amphi/runc"
    );
    let row = |name: &str, a: f64, b: f64, fmt: &dyn Fn(f64) -> String| {
        let ratio = if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "n/a".to_string()
        };
        println!("{name:<24}{:>14}{:>14}{ratio:>14}", fmt(a), fmt(b));
    };
    let ms = |v: f64| format!("{v:.1} ms");
    if let [a, b] = latency {
        row("start latency median", a.median, b.median, &ms);
        row("start latency p90", a.p90, b.p90, &ms);
        row("start latency mean", a.mean, b.mean, &ms);
        row("start latency min", a.min, b.min, &ms);
        row("start latency max", a.max, b.max, &ms);
    }
    if let [a, b] = memory {
        let pss_name = if a.pss_exact && b.pss_exact {
            "memory/container PSS"
        } else {
            "memory/container PSS*"
        };
        row(pss_name, a.pss_kib, b.pss_kib, &format_kib);
        row("memory/container RSS", a.rss_kib, b.rss_kib, &format_kib);
        row(
            "runtime processes",
            a.processes as f64,
            b.processes as f64,
            &|v| format!("{v:.0}"),
        );
        if !(a.pss_exact && b.pss_exact) {
            println!("* smaps_rollup unreadable for some process: its RSS counted as PSS");
        }
    }
}
