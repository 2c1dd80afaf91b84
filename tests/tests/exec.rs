//! Exec cases, run against containerd 1.6 and 2.1: `ctr task exec` into running Linux and
//! Wasm containers. Exec ids start with the container id, so the leak checks (which look
//! for the container id in processes, FIFOs and mounts) cover the execs' leftovers too.
//!
//! - a Linux exec's output and exit code; env, cwd and user from the exec spec;
//! - errors: a duplicate exec id, a missing executable, a stopped container;
//! - `ctr task ps` lists a running exec; `ctr task kill --exec-id` stops only the exec;
//! - a Wasm container (a sleeping module) runs a second module from its rootfs as an exec;
//! - the init exiting while an exec runs (own and shared pid namespace): the exec is
//!   killed, and its `/tasks/exit` comes before the init's in `ctr events`.

use std::thread;
use std::time::{Duration, Instant};

use amphi_e2e::command::Background;
use amphi_e2e::ctr::{parse_events, parse_task_ps};
use amphi_e2e::wasm::{WasmImageSpec, fixture};
use amphi_e2e::{Containerd, Output, e2e_test};

/// How long an exec may take to show up in `ctr task ps`, or to go away.
const PS_TIMEOUT: Duration = Duration::from_secs(20);

/// `ctr task exec --exec-id <exec_id> [opts...] <id> <cmd...>`, run to completion.
fn exec(d: &Containerd, id: &str, exec_id: &str, opts: &[&str], cmd: &[&str]) -> Output {
    let mut args = vec!["tasks", "exec", "--exec-id", exec_id];
    args.extend_from_slice(opts);
    args.push(id);
    args.extend_from_slice(cmd);
    d.ctr(&args)
}

/// The same in the background (ctr stays attached until the exec exits).
fn spawn_exec(d: &Containerd, id: &str, exec_id: &str, cmd: &[&str]) -> Background {
    let mut command = d.ctr_command();
    command.args(["tasks", "exec", "--exec-id", exec_id, id]);
    command.args(cmd);
    Background::spawn(&mut command)
}

/// The pids `ctr task ps <id>` lists.
fn ps(d: &Containerd, id: &str) -> (Vec<u32>, String) {
    let out = d.ctr(&["tasks", "ps", id]).expect_success("ctr task ps");
    (parse_task_ps(&out.stdout), out.stdout)
}

/// Waits until `ctr task ps` lists a pid other than `init`; returns it and the listing.
#[track_caller]
fn wait_for_exec_pid(d: &Containerd, id: &str, init: u32) -> (u32, String) {
    let deadline = Instant::now() + PS_TIMEOUT;
    loop {
        let (pids, text) = ps(d, id);
        if let Some(pid) = pids.iter().copied().find(|p| *p != init) {
            return (pid, text);
        }
        assert!(
            Instant::now() < deadline,
            "{}: no exec process in ctr task ps of {id} within {PS_TIMEOUT:?}:\n{text}",
            d.version()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[track_caller]
fn assert_fails_with(d: &Containerd, out: &Output, needles: &[&str], what: &str) {
    assert!(!out.success(), "{}: {what} must fail:\n{out}", d.version());
    let text = format!("{}\n{}", out.stdout, out.stderr);
    for needle in needles {
        assert!(
            text.contains(needle),
            "{}: {what}: the error does not mention {needle:?}:\n{out}",
            d.version()
        );
    }
}

e2e_test!(output_and_exit_code, [v1_6, v2_1], |d: &Containerd| {
    let id = d.new_id("exec");
    d.run_detached(&id, &[], &["sleep", "1000"]);
    let e1 = format!("{id}-e1");
    let out = exec(
        d,
        &id,
        &e1,
        &[],
        &["sh", "-c", "echo hi; echo oops >&2; exit 7"],
    );
    assert_eq!(out.code(), Some(7), "{}: exit code:\n{out}", d.version());
    assert_eq!(
        out.stdout_trimmed(),
        "hi",
        "{}: stdout:\n{out}",
        d.version()
    );
    assert!(
        out.stderr.contains("oops"),
        "{}: stderr:\n{out}",
        d.version()
    );
    // A second exec in the same container, after the first was deleted by ctr.
    let e2 = format!("{id}-e2");
    let out = exec(d, &id, &e2, &[], &["cat", "/proc/1/cmdline"]);
    assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
    assert!(
        out.stdout.starts_with("sleep"),
        "{}: the exec does not see the container's pid namespace:\n{out}",
        d.version()
    );
    // Nothing of the shim leaks into an exec: fds 0-2, plus the one `ls` opens.
    let out = exec(d, &id, &format!("{id}-fds"), &[], &["ls", "/proc/self/fd"]);
    assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
    let fds: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(
        fds,
        ["0", "1", "2", "3"],
        "{}: the exec inherited fds:\n{out}",
        d.version()
    );
    // Only the init is left.
    let (pids, text) = ps(d, &id);
    assert_eq!(
        pids.len(),
        1,
        "{}: leftover exec process:\n{text}",
        d.version()
    );
    assert_eq!(d.kill_and_remove(&id, "SIGKILL"), 137, "{}", d.version());
    d.assert_no_leaks(&id);
});

e2e_test!(
    env_cwd_user_from_the_exec_spec,
    [v1_6, v2_1],
    |d: &Containerd| {
        let id = d.new_id("xenv");
        d.run_detached(&id, &["--env", "FOO=bar"], &["sleep", "1000"]);
        let e = format!("{id}-e");
        let out = exec(
            d,
            &id,
            &e,
            &["--cwd", "/tmp", "--user", "1000:1001"],
            &[
                "sh",
                "-c",
                "echo $FOO; pwd; id -u; id -g; cat /proc/self/status | grep NoNewPrivs",
            ],
        );
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
        assert_eq!(
            lines[..4],
            ["bar", "/tmp", "1000", "1001"],
            "{}: env, cwd or user not applied:\n{out}",
            d.version()
        );
        // As root by default, in the container's root.
        let out = exec(
            d,
            &id,
            &format!("{id}-r"),
            &[],
            &["sh", "-c", "id -u; pwd; ls /"],
        );
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
        assert_eq!(lines[..2], ["0", "/"], "{}:\n{out}", d.version());
        assert!(
            !out.stdout.contains("amphi-e2e"),
            "{}: the exec sees the host's root:\n{out}",
            d.version()
        );
        assert_eq!(d.kill_and_remove(&id, "SIGKILL"), 137, "{}", d.version());
        d.assert_no_leaks(&id);
    }
);

e2e_test!(errors, [v1_6, v2_1], |d: &Containerd| {
    let id = d.new_id("xerr");
    let row = d.run_detached(&id, &[], &["sleep", "1000"]);
    let dup = format!("{id}-dup");
    let first = spawn_exec(d, &id, &dup, &["sleep", "1000"]);
    wait_for_exec_pid(d, &id, row.pid);
    let out = exec(d, &id, &dup, &[], &["true"]);
    assert_fails_with(d, &out, &["already exists"], "a duplicate exec id");
    // The first exec is untouched by the refused one.
    let (pids, text) = ps(d, &id);
    assert_eq!(pids.len(), 2, "{}:\n{text}", d.version());
    d.ctr(&["tasks", "kill", "--exec-id", &dup, "-s", "SIGKILL", &id])
        .expect_success("ctr task kill --exec-id");
    let out = first.wait_timeout(Duration::from_secs(30));
    assert_eq!(out.code(), Some(137), "{}:\n{out}", d.version());

    let out = exec(
        d,
        &id,
        &format!("{id}-nope"),
        &[],
        &["no-such-program", "x"],
    );
    assert_fails_with(
        d,
        &out,
        &["no-such-program", "not found"],
        "a missing executable",
    );

    // A stopped container.
    d.kill_task(&id, "SIGKILL");
    d.wait_task_status(&id, "STOPPED");
    let out = exec(d, &id, &format!("{id}-late"), &[], &["true"]);
    assert_fails_with(
        d,
        &out,
        &["not running"],
        "an exec into a stopped container",
    );
    assert_eq!(d.delete_task(&id), 137, "{}", d.version());
    d.delete_container(&id);
    d.assert_no_leaks(&id);
});

e2e_test!(
    ps_lists_and_kill_stops_an_exec,
    [v1_6, v2_1],
    |d: &Containerd| {
        let id = d.new_id("xps");
        let row = d.run_detached(&id, &[], &["sleep", "1000"]);
        let e = format!("{id}-long");
        let running = spawn_exec(d, &id, &e, &["sleep", "1000"]);
        let (pid, text) = wait_for_exec_pid(d, &id, row.pid);
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(pid.to_string().as_str()))
            .unwrap_or_default();
        assert!(
            line.contains(&e),
            "{}: ctr task ps does not name exec {e} for pid {pid}:\n{text}",
            d.version()
        );
        d.ctr(&["tasks", "kill", "--exec-id", &e, "-s", "SIGTERM", &id])
            .expect_success("ctr task kill --exec-id");
        let out = running.wait_timeout(Duration::from_secs(30));
        assert_eq!(
            out.code(),
            Some(143),
            "{}: exec status:\n{out}",
            d.version()
        );
        // The exec is gone, the init still runs.
        let deadline = Instant::now() + PS_TIMEOUT;
        while ps(d, &id).0.contains(&pid) {
            assert!(
                Instant::now() < deadline,
                "{}: exec pid {pid} still listed",
                d.version()
            );
            thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(d.task(&id).map(|t| t.status).as_deref(), Some("RUNNING"));
        assert_eq!(d.kill_and_remove(&id, "SIGKILL"), 137, "{}", d.version());
        d.assert_no_leaks(&id);
    }
);

e2e_test!(
    wasm_container_runs_a_second_module,
    [v1_6, v2_1],
    |d: &Containerd| {
        let exit3 = fixture("exit3");
        let echo = fixture("echo");
        let spec = WasmImageSpec {
            args: &[],
            env: &["WHO=wasm"],
            files: &[(&exit3, "/tools/exit3.wat"), (&echo, "/tools/echo.wat")],
        };
        let image = d.import_wasm("sleeper", &fixture("sleep"), &spec);
        let id = d.new_id("xwasm");
        let row = d.run_image_detached(&id, &[], &image, &[]);

        let out = exec(d, &id, &format!("{id}-e3"), &[], &["/tools/exit3.wat"]);
        assert_eq!(out.code(), Some(3), "{}: exit3 module:\n{out}", d.version());
        assert_eq!(
            out.stdout_trimmed(),
            "exiting with 3",
            "{}:\n{out}",
            d.version()
        );

        let out = exec(
            d,
            &id,
            &format!("{id}-echo"),
            &[],
            &["/tools/echo.wat", "a b"],
        );
        assert_eq!(out.code(), Some(0), "{}: echo module:\n{out}", d.version());
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(
            lines.contains(&"arg: a b") && lines.contains(&"env: WHO=wasm"),
            "{}: args or env of the exec'd module:\n{out}",
            d.version()
        );
        // No native program in this rootfs: the error names what is missing.
        let out = exec(d, &id, &format!("{id}-sh"), &[], &["sh"]);
        assert_fails_with(
            d,
            &out,
            &["sh", "not found"],
            "a native exec without a binary",
        );
        let (pids, text) = ps(d, &id);
        assert_eq!(pids, [row.pid], "{}: leftover exec:\n{text}", d.version());
        assert_eq!(d.kill_and_remove(&id, "SIGKILL"), 137, "{}", d.version());
        d.assert_no_leaks(&id);
    }
);

/// Starts a container with `opts`, an exec `sleep`, kills the init, and checks the exec
/// died with it and that the exec's `/tasks/exit` precedes the init's.
fn init_exit_with_exec(d: &Containerd, label: &str, opts: &[&str]) {
    let events = d.subscribe_events();

    let id = d.new_id(label);
    let row = d.run_detached(&id, opts, &["sleep", "1000"]);
    let e = format!("{id}-e");
    let running = spawn_exec(d, &id, &e, &["sleep", "1000"]);
    let (exec_pid, _) = wait_for_exec_pid(d, &id, row.pid);
    d.kill_task(&id, "SIGKILL");
    d.wait_task_status(&id, "STOPPED");
    let out = running.wait_timeout(Duration::from_secs(30));
    assert_eq!(
        out.code(),
        Some(137),
        "{}: the exec must be killed:\n{out}",
        d.version()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{exec_pid}")).exists()
            || amphi_e2e::leaks::cmdline(exec_pid).is_none_or(|c| !c.contains("sleep")),
        "{}: exec pid {exec_pid} survived its container's init",
        d.version()
    );
    assert_eq!(d.delete_task(&id), 137, "{}", d.version());
    d.delete_container(&id);

    let deadline = Instant::now() + Duration::from_secs(20);
    let exits = |text: &str| {
        parse_events(text)
            .into_iter()
            .filter(|ev| ev.topic == "/tasks/exit" && ev.container_id() == Some(id.as_str()))
            .map(|ev| ev.body["id"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    while exits(&events.stdout_so_far()).len() < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let log = events.kill();
    assert_eq!(
        exits(&log.stdout),
        [e.clone(), id.clone()],
        "{}: /tasks/exit events of {id} (exec {e} first, then the init):\n{log}",
        d.version()
    );
    let topics: Vec<String> = parse_events(&log.stdout)
        .into_iter()
        .filter(|ev| ev.topic.starts_with("/tasks/exec") && ev.container_id() == Some(id.as_str()))
        .map(|ev| ev.topic)
        .collect();
    assert_eq!(
        topics,
        ["/tasks/exec-added", "/tasks/exec-started"],
        "{}:\n{log}",
        d.version()
    );
    d.assert_no_leaks(&id);
}

e2e_test!(
    init_exit_kills_execs_first,
    [v1_6, v2_1],
    |d: &Containerd| {
        // Its own pid namespace: the kernel kills the exec with the init.
        init_exit_with_exec(d, "xinit", &[]);
        // Another container's pid namespace: the shim must kill it (checklist T-X4).
        let holder = d.new_id("xpidns");
        let row = d.run_detached(&holder, &[], &["sleep", "1000"]);
        let pidns = format!("pid:/proc/{}/ns/pid", row.pid);
        init_exit_with_exec(d, "xshared", &["--with-ns", &pidns]);
        assert_eq!(
            d.kill_and_remove(&holder, "SIGKILL"),
            137,
            "{}",
            d.version()
        );
        d.assert_no_leaks(&holder);
    }
);
