//! Grouping and faults, on containerd 1.6 and 2.1: one shim process for a pod's containers
//! (Linux and Wasm mixed), containerd restarted under running tasks, many RPCs at once on
//! one task, and a stress loop of create/start/wait/delete cycles that must leave nothing
//! behind (processes, mounts, cgroups, sockets, the shim's own fds).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::thread;
use std::time::{Duration, Instant};

use amphi_e2e::api::Rootfs;
use amphi_e2e::wasm::{WasmImageSpec, fixture};
use amphi_e2e::{Containerd, Spec, e2e_test, env, image};

/// The annotation containerd's CRI plugin puts on every container of a pod, and amphi
/// groups by.
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Reads what is available from a non-blocking FIFO into `buf` until `want` says it has
/// enough or `timeout` passes.
fn read_until(fifo: &mut File, buf: &mut String, timeout: Duration, want: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + timeout;
    let mut chunk = [0u8; 4096];
    while !want(buf) && Instant::now() < deadline {
        match fifo.read(&mut chunk) {
            Ok(n) if n > 0 => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            _ => thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn numbers(text: &str) -> Vec<u64> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

// containerd stops (SIGTERM) and comes back while a task writes a line every 100 ms to a
// FIFO the test reads: the task keeps running, no line is lost, containerd reconnects to
// the shim (Connect, Pids: `ctr task ls` and `ps` answer), and the task is then killed and
// deleted normally.
e2e_test!(
    containerd_restart_under_a_running_task,
    [v1_6, v2_1],
    |d: &Containerd| {
        let id = d.new_id("restart");
        let rootfs = d.work_dir().join(format!("rootfs-{id}"));
        image::copy_rootfs(&rootfs);
        let fifo_path = d.work_dir().join(format!("{id}.out"));
        nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo_path)
            .expect("open the fifo");
        let script = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.1; done";
        let spec = Spec::busybox(&id, &rootfs, &["sh", "-c", script]).0;
        let fifo_uri = fifo_path.display().to_string();
        let pid = d
            .api_start(&id, "", &spec, Rootfs::SpecRoot, &fifo_uri, "")
            .unwrap_or_else(|e| panic!("{}: start: {e}", d.version()));
        d.remember_running(&id, pid);

        let mut out = String::new();
        read_until(&mut fifo, &mut out, Duration::from_secs(10), |t| {
            numbers(t).len() >= 5
        });
        let before = numbers(&out).len();
        assert!(
            before >= 5,
            "{}: no output before the restart: {out:?}",
            d.version()
        );
        let shims = d.shim_servers();

        d.restart();

        // The task and its shim lived through it.
        assert_eq!(
            d.shim_servers(),
            shims,
            "{}: the shim changed across the restart",
            d.version()
        );
        let row = d
            .task(&id)
            .unwrap_or_else(|| panic!("{}: {id} not listed after the restart", d.version()));
        assert_eq!(
            (row.pid, row.status.as_str()),
            (pid, "RUNNING"),
            "{}: after the restart",
            d.version()
        );
        let ps = d.ctr(&["task", "ps", &id]).expect_success("ctr task ps");
        assert!(
            amphi_e2e::ctr::parse_task_ps(&ps.stdout).contains(&pid),
            "{}: Pids after the restart:\n{ps}",
            d.version()
        );
        // Output kept flowing, with no gap.
        read_until(&mut fifo, &mut out, Duration::from_secs(10), |t| {
            numbers(t).len() >= before + 10
        });
        let seen = numbers(&out);
        assert!(
            seen.len() >= before + 10,
            "{}: output stopped after the restart: {out:?}",
            d.version()
        );
        let expected: Vec<u64> = (0..seen.len() as u64).collect();
        assert_eq!(seen, expected, "{}: lines were lost", d.version());

        d.kill_task(&id, "SIGKILL");
        assert_eq!(d.api_wait(&id), Ok(137), "{}: exit status", d.version());
        d.api_remove(&id);
        drop(fifo);
        let _ = std::fs::remove_file(&fifo_path);
        d.assert_no_leaks(&id);
    }
);

// Ten containers carrying one pod's sandbox id, nine Linux and one Wasm, share one shim
// process; deleting some leaves the others running under it; the shim exits with the last.
e2e_test!(
    ten_containers_in_one_pod_shim,
    [v1_6, v2_1],
    |d: &Containerd| {
        if !env::testing_amphi() {
            eprintln!("{}: not amphi: grouping is amphi's", d.version());
            return;
        }
        let pod = d.new_id("pod");
        let annotation = format!("{SANDBOX_ID}={pod}");
        let wasm_image = d.import_wasm("loop", &fixture("loop"), &WasmImageSpec::default());
        let mut ids = Vec::new();
        for n in 0..10 {
            let id = d.new_id(&format!("member{n}"));
            let row = if n == 9 {
                let argv = [
                    "run",
                    "-d",
                    "--runtime",
                    &env::runtime(),
                    "--annotation",
                    &annotation,
                    &wasm_image,
                    &id,
                ];
                d.ctr(&argv).expect_success("ctr run -d of the wasm member");
                d.wait_task_status(&id, "RUNNING")
            } else {
                d.run_detached(&id, &["--annotation", &annotation], &["sleep", "300"])
            };
            d.remember_running(&id, row.pid);
            ids.push(id);
        }
        let servers = d.shim_servers();
        assert_eq!(
            servers.len(),
            1,
            "{}: ten containers of one pod should share one shim: {servers:?}",
            d.version()
        );
        let sockets: Vec<_> = ids.iter().map(|id| d.recorded_shim_socket(id)).collect();
        assert!(
            sockets.iter().all(|s| s.is_some() && *s == sockets[0]),
            "{}: containerd recorded different shims: {sockets:?}",
            d.version()
        );
        let line = d.dispatch_line(&ids[9]).unwrap_or_default();
        assert!(
            line.contains(": wasm ("),
            "{}: the pod's Wasm member: {line:?}",
            d.version()
        );

        // Deleting half of them leaves the rest running, under the same shim, and nothing of
        // theirs but that shim (which the leak checks name after the first container).
        let shared = sockets[0].clone().unwrap_or_default().display().to_string();
        for id in &ids[..5] {
            assert_eq!(
                d.kill_and_remove(id, "SIGKILL"),
                137,
                "{}: {id}",
                d.version()
            );
            let left: Vec<_> = d
                .leaks(id)
                .into_iter()
                .filter(|l| !l.contains(&shared))
                .collect();
            assert!(left.is_empty(), "{}: {id} left {left:#?}", d.version());
        }
        assert_eq!(
            d.shim_servers(),
            servers,
            "{}: the shim must outlive its first containers",
            d.version()
        );
        for id in &ids[5..] {
            let row = d
                .task(id)
                .unwrap_or_else(|| panic!("{}: {id} gone with its neighbours", d.version()));
            assert_eq!(row.status, "RUNNING", "{}: {id}", d.version());
        }
        for id in &ids[5..] {
            assert_eq!(
                d.kill_and_remove(id, "SIGKILL"),
                137,
                "{}: {id}",
                d.version()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d.shim_servers().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        assert!(
            d.shim_servers().is_empty(),
            "{}: the shim outlived its last container",
            d.version()
        );
        for id in &ids {
            d.assert_no_leaks(id);
        }
    }
);

// Wait held open on a task while State, Pids, Stats and Execs arrive from several clients
// at once, then Kill.
e2e_test!(many_rpcs_at_once, [v1_6, v2_1], |d: &Containerd| {
    let id = d.new_id("busy");
    let row = d.run_detached(&id, &[], &["sleep", "300"]);
    d.remember_running(&id, row.pid);
    thread::scope(|s| {
        let waiter = s.spawn(|| d.api_wait(&id));
        let pollers: Vec<_> = (0..4)
            .map(|p| {
                let id = &id;
                s.spawn(move || {
                    for n in 0..10 {
                        d.ctr(&["task", "ls"]).expect_success("ctr task ls");
                        d.ctr(&["task", "ps", id]).expect_success("ctr task ps");
                        d.ctr(&["task", "metrics", id])
                            .expect_success("ctr task metrics");
                        let exec_id = format!("x{p}-{n}");
                        let script = format!("echo {exec_id}");
                        let out = d.ctr(&[
                            "task",
                            "exec",
                            "--exec-id",
                            &exec_id,
                            id,
                            "sh",
                            "-c",
                            &script,
                        ]);
                        assert_eq!(
                            (out.code(), out.stdout_trimmed()),
                            (Some(0), exec_id.as_str()),
                            "{}: exec {exec_id} during the held Wait:\n{out}",
                            d.version()
                        );
                    }
                })
            })
            .collect();
        for p in pollers {
            p.join().expect("poller");
        }
        assert!(
            !waiter.is_finished(),
            "{}: Wait returned early",
            d.version()
        );
        d.kill_task(&id, "SIGKILL");
        assert_eq!(
            waiter.join().expect("waiter"),
            Ok(137),
            "{}: the held Wait",
            d.version()
        );
    });
    d.delete_task(&id);
    d.delete_container(&id);
    d.assert_no_leaks(&id);
});

/// Create/start/wait/delete cycles per worker in [`stress_cycles`].
const CYCLES_PER_WORKER: usize = 50;
const WORKERS: usize = 4;

// 200 create/start/wait/delete cycles, four at a time, Linux and Wasm, inside one pod's
// shim that an anchor container keeps alive: every exit code is right, and afterwards the
// shim holds as many fds as before and nothing of any cycle is left on the host.
e2e_test!(stress_cycles, [v1_6, v2_1], |d: &Containerd| {
    let pod = d.new_id("stresspod");
    let annotation = format!("{SANDBOX_ID}={pod}");
    let hello = d.import_wasm("hello", &fixture("hello"), &WasmImageSpec::default());
    let anchor = d.new_id("anchor");
    let row = d.run_detached(&anchor, &["--annotation", &annotation], &["sleep", "600"]);
    d.remember_running(&anchor, row.pid);
    let shim = if env::testing_amphi() {
        let servers = d.shim_servers();
        assert_eq!(servers.len(), 1, "{}: {servers:?}", d.version());
        Some(servers[0])
    } else {
        None
    };
    // One warm-up cycle of each kind, so lazily opened fds (the cache dir, containerd's
    // event connection) are counted in the baseline.
    let warm = d.new_id("warm");
    let out = d.run_rm(&warm, &["--annotation", &annotation], &["true"]);
    assert_eq!(out.code(), Some(0), "{}: warm-up:\n{out}", d.version());
    let warm = d.new_id("warmw");
    let argv = [
        "run",
        "--rm",
        "--runtime",
        &env::runtime(),
        "--annotation",
        &annotation,
        &hello,
        &warm,
    ];
    assert_eq!(
        d.ctr(&argv).code(),
        Some(0),
        "{}: wasm warm-up",
        d.version()
    );
    let fds_before = shim.map(open_fds);

    let started = Instant::now();
    thread::scope(|s| {
        for w in 0..WORKERS {
            let annotation = &annotation;
            let hello = &hello;
            s.spawn(move || {
                for n in 0..CYCLES_PER_WORKER {
                    let code = (n % 7) as i32;
                    let id = d.new_id(&format!("cycle{w}x{n}x"));
                    if n % 5 == 4 {
                        let runtime = env::runtime();
                        let argv = [
                            "run",
                            "--rm",
                            "--runtime",
                            &runtime,
                            "--annotation",
                            annotation,
                            hello,
                            &id,
                        ];
                        let out = d.ctr(&argv);
                        assert_eq!(out.stdout_trimmed(), "hello from wasm", "{id}:\n{out}");
                        assert_eq!(out.code(), Some(0), "{id}:\n{out}");
                        continue;
                    }
                    let script = format!("echo {id}; exit {code}");
                    let out = d.run_rm(&id, &["--annotation", annotation], &["sh", "-c", &script]);
                    assert_eq!(out.code(), Some(code), "{id}:\n{out}");
                    assert_eq!(out.stdout_trimmed(), id, "{id}:\n{out}");
                }
            });
        }
    });
    eprintln!(
        "{}: {} cycles in {:?}",
        d.version(),
        WORKERS * CYCLES_PER_WORKER,
        started.elapsed()
    );

    if let (Some(shim), Some(before)) = (shim, fds_before) {
        assert_eq!(
            d.shim_servers(),
            vec![shim],
            "{}: the pod's shim changed",
            d.version()
        );
        let after = open_fds(shim);
        assert_eq!(
            after,
            before,
            "{}: the shim held {before} fds before the cycles and {after} after",
            d.version()
        );
    }
    assert_eq!(d.kill_and_remove(&anchor, "SIGKILL"), 137);
    // Every id (each cycle's included) is checked for leaks when the case finishes.
});
