//! amphi demo: a private containerd 2.1 runs containers through `containerd-shim-amphi-v1`.
//!
//! Run as root after `cargo build -p amphi-shim -p amphi-e2e` (deploy/demo.sh does both):
//!
//! ```text
//! amphi-demo [--containerd 1.6|1.7|2.1]
//! ```
//!
//! `AMPHI_E2E_RUNTIME` picks another runtime (e.g. `io.containerd.runc.v2`) to compare.
//! The demo is a list of [`Act`]s run in order against one daemon: Linux containers, then
//! a Linux and a WebAssembly container side by side (the Wasm image is built from
//! `tests/fixtures/wasm/*.wat` with `amphi-image`). Exits non-zero if any act fails.

use std::process::ExitCode;
use std::time::Duration;

use amphi_e2e::wasm::{fixture, image_name};
use amphi_e2e::{Containerd, IMAGE, Version, env, runtime};

/// One step of the demo: a title and what it does with the daemon.
struct Act {
    title: &'static str,
    run: fn(&Containerd) -> Result<(), String>,
}

/// The demo, in order.
const ACTS: &[Act] = &[
    Act {
        title: "run a Linux container and print its output",
        run: linux_hello,
    },
    Act {
        title: "a detached Linux container: task ls, task ps, task metrics",
        run: linux_metrics,
    },
    Act {
        title: "a Linux container and a WebAssembly container side by side",
        run: wasm_side_by_side,
    },
];

fn main() -> ExitCode {
    let version = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("amphi-demo: {e}\nusage: amphi-demo [--containerd 1.6|1.7|2.1]");
            return ExitCode::from(2);
        }
    };
    banner(&format!("amphi demo: runtime {} on {version}", runtime()));
    if env::testing_amphi() {
        println!("shim binary: {}", env::shim_path().display());
    }
    env::require_root();

    println!("starting a private {version} ...");
    let daemon = Containerd::start(version);
    println!(
        "  socket {}  (logs: {})",
        daemon.socket().display(),
        daemon.log_path().display()
    );
    println!("importing {IMAGE} (built from /bin/busybox with umoci) ...");
    daemon.import_busybox();

    let mut failed = Vec::new();
    for (n, act) in ACTS.iter().enumerate() {
        banner(&format!("{}. {}", n + 1, act.title));
        match (act.run)(&daemon) {
            Ok(()) => println!("=> ok"),
            Err(e) => {
                println!("=> FAILED: {e}");
                failed.push(act.title);
            }
        }
    }

    banner("cleaning up");
    if !failed.is_empty() {
        println!("containerd log tail:\n{}", daemon.log_tail(40));
    }
    drop(daemon);
    println!("daemon stopped, its directory removed");
    if failed.is_empty() {
        banner("demo finished: every act passed");
        ExitCode::SUCCESS
    } else {
        banner(&format!("demo FAILED: {}", failed.join("; ")));
        ExitCode::FAILURE
    }
}

fn parse_args() -> Result<Version, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(Version::V2_1),
        [flag, v] if flag == "--containerd" => {
            Version::parse(v).ok_or_else(|| format!("unknown containerd version {v:?}"))
        }
        other => Err(format!("unexpected arguments {other:?}")),
    }
}

fn banner(text: &str) {
    println!("\n==== {text}");
}

/// Shows a ctr command, its output and its exit code; returns the output.
fn show(d: &Containerd, args: &[&str]) -> amphi_e2e::Output {
    println!("$ ctr {}", args.join(" "));
    let out = d.ctr(args);
    for line in out.stdout.lines() {
        println!("  | {line}");
    }
    for line in out.stderr.lines() {
        println!("  ! {line}");
    }
    match out.code() {
        Some(code) => println!("  (exit code {code})"),
        None => println!(
            "  (killed: {})",
            if out.timed_out { "timed out" } else { "signal" }
        ),
    }
    out
}

fn linux_hello(d: &Containerd) -> Result<(), String> {
    let rt = runtime();
    let script = format!(
        "echo 'hello from a Linux container run by {rt}'; \
         echo \"pid in the container: $$\"; id; hostname; exit 3"
    );
    let out = show(
        d,
        &[
            "run",
            "--rm",
            "--runtime",
            &rt,
            IMAGE,
            &d.new_id("demo-hello"),
            "sh",
            "-c",
            &script,
        ],
    );
    if !out.stdout.contains("hello from a Linux container") {
        return Err("the container's output did not arrive".into());
    }
    if out.code() != Some(3) {
        return Err(format!("expected exit code 3, got {:?}", out.code()));
    }
    println!("the container said hello, and `exit 3` came back as ctr's exit code 3");
    Ok(())
}

fn linux_metrics(d: &Containerd) -> Result<(), String> {
    let rt = runtime();
    let id = d.new_id("demo-busy");
    let id = id.as_str();
    let out = show(
        d,
        &[
            "run",
            "-d",
            "--runtime",
            &rt,
            "--memory-limit",
            "67108864",
            IMAGE,
            id,
            "sh",
            "-c",
            "while true; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; sleep 1; done",
        ],
    );
    if !out.success() {
        return Err("ctr run -d failed".into());
    }
    std::thread::sleep(Duration::from_millis(1500));
    show(d, &["tasks", "ls"]);
    show(d, &["tasks", "ps", id]);
    let metrics = show(d, &["tasks", "metrics", id]);
    let result = if metrics.success() && metrics.stdout.contains("memory") {
        Ok(())
    } else {
        Err("ctr task metrics printed no memory figures".to_string())
    };
    let status = kill_and_remove(d, id);
    println!("task {id} exited with status {status} (128 + SIGKILL)");
    println!("no mounts, cgroups, processes or sockets left for {id}");
    result
}

/// Kills a detached task with SIGKILL, removes it and its container (showing the ctr
/// commands), checks nothing is left, and returns its exit status.
fn kill_and_remove(d: &Containerd, id: &str) -> u32 {
    show(d, &["tasks", "kill", "-s", "SIGKILL", id]);
    d.wait_task_status(id, "STOPPED");
    let status = d.delete_task(id);
    show(d, &["containers", "delete", id]);
    d.assert_no_leaks(id);
    status
}

/// Builds `localhost/<name>:test` from the fixture `<fixture>.wat` with amphi-image and
/// imports it, showing the equivalent commands.
fn build_wasm_image(d: &Containerd, name: &str, fixture_name: &str) -> Result<String, String> {
    let module = fixture(fixture_name);
    let image = image_name(name);
    let tar = d.work_dir().join(format!("{name}.tar"));
    println!(
        "$ amphi-image wasm {} --name {} -o {}",
        module.display(),
        image.full(),
        tar.display()
    );
    let opts = amphi_image::WasmImageOptions::new(image.clone(), amphi_image::Platform::host());
    let layout = amphi_image::wasm_image(&module, &opts).map_err(|e| e.to_string())?;
    layout.write_tar(&tar).map_err(|e| e.to_string())?;
    println!(
        "  (one layer holding /{fixture_name}.wasm, entrypoint [\"/{fixture_name}.wasm\"], manifest {})",
        layout.manifest_digest()
    );
    let tar = tar.display().to_string();
    let out = show(
        d,
        &["images", "import", "--base-name", &image.repository, &tar],
    );
    if !out.success() {
        return Err(format!("import of {} failed", image.full()));
    }
    Ok(image.full())
}

fn wasm_side_by_side(d: &Containerd) -> Result<(), String> {
    let rt = runtime();
    let hello = build_wasm_image(d, "wasm-hello", "hello")?;
    let out = show(
        d,
        &[
            "run",
            "--rm",
            "--runtime",
            &rt,
            &hello,
            &d.new_id("demo-wasm-hello"),
        ],
    );
    if out.stdout.trim() != "hello from wasm" || !out.success() {
        return Err("the Wasm hello module did not say hello".into());
    }
    println!("the same runtime ran a WebAssembly module: amphi recognised it by its bytes");

    let spinner = build_wasm_image(d, "wasm-loop", "loop")?;
    let linux = d.new_id("demo-linux");
    let wasm = d.new_id("demo-wasm");
    let linux_log = d.work_dir().join("linux.log");
    let wasm_log = d.work_dir().join("wasm.log");
    let linux_uri = format!("file://{}", linux_log.display());
    let wasm_uri = format!("file://{}", wasm_log.display());
    let started = [
        show(
            d,
            &[
                "run",
                "-d",
                "--runtime",
                &rt,
                "--log-uri",
                &linux_uri,
                IMAGE,
                &linux,
                "sh",
                "-c",
                "while true; do echo linux tick; sleep 1; done",
            ],
        ),
        show(
            d,
            &[
                "run",
                "-d",
                "--runtime",
                &rt,
                "--log-uri",
                &wasm_uri,
                "--memory-limit",
                "67108864",
                &spinner,
                &wasm,
            ],
        ),
    ];
    if started.iter().any(|o| !o.success()) {
        return Err("ctr run -d failed".into());
    }
    d.wait_task_status(&linux, "RUNNING");
    d.wait_task_status(&wasm, "RUNNING");
    std::thread::sleep(Duration::from_millis(1500));
    let tasks = show(d, &["tasks", "ls"]);
    let both_running = [&linux, &wasm].iter().all(|id| {
        tasks
            .stdout
            .lines()
            .any(|l| l.starts_with(id.as_str()) && l.contains("RUNNING"))
    });
    let mut result = if both_running {
        Ok(())
    } else {
        Err("ctr task ls does not show both containers RUNNING".to_string())
    };
    for (what, log, want) in [
        ("Linux", &linux_log, "linux tick"),
        ("Wasm", &wasm_log, "looping"),
    ] {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        println!("output of the {what} container ({}):", log.display());
        for line in text.lines().take(5) {
            println!("  | {line}");
        }
        if !text.contains(want) && result.is_ok() {
            result = Err(format!("the {what} container printed nothing"));
        }
    }
    let metrics = show(d, &["tasks", "metrics", &wasm]);
    if !(metrics.success() && metrics.stdout.contains("memory")) && result.is_ok() {
        result = Err("ctr task metrics printed no memory figures for the Wasm task".into());
    }
    println!("the Wasm task is a real process in its own cgroup: memory and CPU are accounted");
    for id in [&wasm, &linux] {
        let status = kill_and_remove(d, id);
        println!("task {id} exited with status {status}");
    }
    println!("no mounts, cgroups, processes or sockets left for either container");
    result
}
