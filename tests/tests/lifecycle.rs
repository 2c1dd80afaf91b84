//! Lifecycle cases, run against every containerd version: output and exit codes, signals,
//! detached tasks, two containers at once, PID 1, a missing executable. Every case ends
//! with the leak checks for each container it used.

use std::time::Duration;

use amphi_e2e::{Containerd, e2e_test};

/// How long a foreground `ctr run` may take to return after its task is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

e2e_test!(
    output_and_exit_code,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        let id = d.new_id("exit3");
        let out = d.run_rm(&id, &[], &["sh", "-c", "echo hi; exit 3"]);
        assert_eq!(
            out.code(),
            Some(3),
            "{}: expected ctr to exit 3:\n{out}",
            d.version()
        );
        assert_eq!(
            out.stdout_trimmed(),
            "hi",
            "{}: wrong output:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);

e2e_test!(exit_zero_and_one, [v1_6, v1_7, v2_1], |d: &Containerd| {
    let ok = d.new_id("exit0");
    let out = d.run_rm(&ok, &[], &["sh", "-c", "echo ok"]);
    assert_eq!(
        out.code(),
        Some(0),
        "{}: expected exit 0:\n{out}",
        d.version()
    );
    assert_eq!(out.stdout_trimmed(), "ok", "{}:\n{out}", d.version());
    d.assert_no_leaks(&ok);

    let fail = d.new_id("exit1");
    let out = d.run_rm(&fail, &[], &["false"]);
    assert_eq!(
        out.code(),
        Some(1),
        "{}: expected exit 1:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&fail);
});

e2e_test!(
    sigkill_foreground_is_137,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        let id = d.new_id("fgkill");
        let run = d.spawn_run_rm(&id, &[], &["sleep", "100"]);
        d.wait_task_status(&id, "RUNNING");
        d.kill_task(&id, "SIGKILL");
        let out = run.wait_timeout(EXIT_TIMEOUT);
        assert_eq!(
            out.code(),
            Some(137),
            "{}: ctr run of a SIGKILLed task should exit 137:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);

e2e_test!(
    sigkill_detached_is_137,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        let id = d.new_id("dkill");
        let row = d.run_detached(&id, &[], &["sleep", "100"]);
        assert!(row.pid > 0, "{}: no pid for {id}: {row:?}", d.version());
        let status = d.kill_and_remove(&id, "SIGKILL");
        assert_eq!(status, 137, "{}: exit status after SIGKILL", d.version());
        d.assert_no_leaks(&id);
    }
);

// SIGTERM to a container's PID 1 with no handler is dropped by the kernel, so the target
// runs `sleep` as a non-init process inside the pid namespace of a holder container.
e2e_test!(sigterm_is_143, [v1_6, v1_7, v2_1], |d: &Containerd| {
    let holder = d.new_id("pidns");
    let holder_row = d.run_detached(&holder, &[], &["sleep", "1000"]);
    let ns = format!("pid:/proc/{}/ns/pid", holder_row.pid);

    let id = d.new_id("term");
    d.run_detached(&id, &["--with-ns", &ns], &["sleep", "100"]);
    let status = d.kill_and_remove(&id, "SIGTERM");
    assert_eq!(status, 143, "{}: exit status after SIGTERM", d.version());
    d.assert_no_leaks(&id);

    assert_eq!(
        d.kill_and_remove(&holder, "SIGKILL"),
        137,
        "{}",
        d.version()
    );
    d.assert_no_leaks(&holder);
});

e2e_test!(
    two_containers_at_once,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        let a = d.new_id("twoa");
        let b = d.new_id("twob");
        let row_a = d.run_detached(&a, &[], &["sleep", "100"]);
        let row_b = d.run_detached(&b, &[], &["sleep", "100"]);
        assert_ne!(
            row_a.pid,
            row_b.pid,
            "{}: both tasks report one pid",
            d.version()
        );

        let tasks = d.tasks();
        for id in [&a, &b] {
            let row = tasks.iter().find(|t| &t.id == id);
            assert!(
                row.is_some_and(|r| r.status == "RUNNING"),
                "{}: ctr task ls does not show {id} RUNNING: {tasks:?}",
                d.version()
            );
        }
        assert_eq!(
            d.kill_and_remove(&a, "SIGKILL"),
            137,
            "{}: {a}",
            d.version()
        );
        // Killing one must not disturb the other.
        let still = d.task(&b);
        assert!(
            still.as_ref().is_some_and(|r| r.status == "RUNNING"),
            "{}: {b} stopped when {a} was killed: {still:?}",
            d.version()
        );
        assert_eq!(
            d.kill_and_remove(&b, "SIGKILL"),
            137,
            "{}: {b}",
            d.version()
        );
        d.assert_no_leaks(&a);
        d.assert_no_leaks(&b);
    }
);

e2e_test!(
    pid1_is_the_workload,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        let id = d.new_id("pid1");
        let out = d.run_rm(&id, &[], &["sh", "-c", "echo $$"]);
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        assert_eq!(
            out.stdout_trimmed(),
            "1",
            "{}: the workload is not PID 1:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);

e2e_test!(
    missing_executable_fails_cleanly,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        let id = d.new_id("nobin");
        let out = d.run_rm(&id, &[], &["nosuchbinary"]);
        assert!(
            !out.success() && !out.timed_out,
            "{}: running a missing executable should fail promptly:\n{out}",
            d.version()
        );
        assert!(
            out.stderr.contains("nosuchbinary") || out.stdout.contains("nosuchbinary"),
            "{}: the error does not name the missing executable:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);
        // The daemon is still usable afterwards.
        let next = d.new_id("after");
        let out = d.run_rm(&next, &[], &["true"]);
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        d.assert_no_leaks(&next);
    }
);

e2e_test!(
    stdin_reaches_the_task_then_eof,
    [v1_6, v1_7, v2_1],
    |d: &Containerd| {
        let id = d.new_id("stdin");
        // `wc -l` only finishes when its stdin reaches EOF after the two lines.
        let out = d.run_rm_with_stdin(&id, &["sh", "-c", "wc -l; echo done"], b"one\ntwo\n");
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        assert_eq!(
            out.stdout_trimmed().split_whitespace().collect::<Vec<_>>(),
            ["2", "done"],
            "{}: stdin not delivered, or no EOF:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);
