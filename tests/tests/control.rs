//! Control cases, run against containerd 1.6 and 2.1: Pause/Resume (a counting Linux
//! container and a spinning Wasm guest), Update (a raised memory limit lets an allocation
//! succeed that was OOM-killed before; sent through containerd's gRPC `Tasks.Update`, since
//! ctr has no `task update`), OOM events, and Stats of Linux and Wasm containers. Every
//! case ends with the leak checks for each container it used.
//!
//! The counting container writes its counter to `/tmp/c` inside its rootfs, which the test
//! reads from the host through the bundle's `rootfs` mount. Cgroup files are read from the
//! host's cgroup tree (the directory whose name holds the container id).

use std::fs;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use amphi_e2e::api::LINUX_RESOURCES_TYPE_URL;
use amphi_e2e::command::Background;
use amphi_e2e::ctr::{Event, parse_events};
use amphi_e2e::leaks::cgroups_matching;
use amphi_e2e::wasm::{WasmImageSpec, fixture};
use amphi_e2e::{Containerd, e2e_test};

/// How long a counter or a cgroup value may take to change as expected.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a paused task is watched for progress it must not make.
const FROZEN_WATCH: Duration = Duration::from_millis(1500);
const MIB: u64 = 1024 * 1024;

/// Counts in `/tmp/c`, ten times a second.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/c; sleep 0.1; done";

/// The `/tasks/...` topics seen so far for container `id`, in order.
fn task_topics(events: &[Event], id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.topic.starts_with("/tasks/") && e.container_id() == Some(id))
        .map(|e| e.topic.clone())
        .collect()
}

/// Waits until `ctr events` has shown `topic` for `id`; returns the topics for `id`.
#[track_caller]
fn wait_topic(d: &Containerd, events: &Background, id: &str, topic: &str) -> Vec<String> {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    loop {
        let topics = task_topics(&parse_events(&events.stdout_so_far()), id);
        if topics.iter().any(|t| t == topic) {
            return topics;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no {topic} event for {id} within {CHANGE_TIMEOUT:?}; seen: {topics:?}",
            d.version()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The host path of `file` in the container's cgroup (the hierarchy that has it).
#[track_caller]
fn cgroup_file(d: &Containerd, id: &str, file: &str) -> PathBuf {
    let dirs = cgroups_matching(&[id.to_string()]);
    dirs.iter()
        .map(|dir| dir.join(file))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{}: no cgroup of {id} has {file}; cgroups: {dirs:?}",
                d.version()
            )
        })
}

fn read_trimmed(path: &PathBuf) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Whether the container's cgroup is frozen, from the freezer (v1) or `cgroup.events` (v2).
fn frozen(d: &Containerd, id: &str) -> bool {
    let dirs = cgroups_matching(&[id.to_string()]);
    if let Some(state) = dirs
        .iter()
        .map(|d| d.join("freezer.state"))
        .find(|p| p.exists())
    {
        return read_trimmed(&state) == "FROZEN";
    }
    let events = cgroup_file(d, id, "cgroup.events");
    read_trimmed(&events)
        .lines()
        .any(|l| l.trim() == "frozen 1")
}

/// The counter the counting container writes (`None` until it wrote one).
fn counter(d: &Containerd, id: &str) -> Option<u64> {
    let path = d.bundle_dir(id).join("rootfs/tmp/c");
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Waits until `value()` is above `floor`; returns it.
#[track_caller]
fn wait_above(d: &Containerd, what: &str, floor: u64, value: impl Fn() -> Option<u64>) -> u64 {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    loop {
        let now = value();
        if let Some(v) = now.filter(|v| *v > floor) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {what} did not grow above {floor} within {CHANGE_TIMEOUT:?} (last: {now:?})",
            d.version()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// `ctr task pause`/`resume` expecting success, then the status `ctr task ls` must show.
#[track_caller]
fn pause(d: &Containerd, id: &str) {
    d.ctr(&["tasks", "pause", id])
        .expect_success("ctr task pause");
    let row = d.task(id);
    assert_eq!(
        row.as_ref().map(|r| r.status.as_str()),
        Some("PAUSED"),
        "{}: ctr task ls after pause",
        d.version()
    );
    assert!(
        frozen(d, id),
        "{}: the cgroup of {id} is not frozen",
        d.version()
    );
}

#[track_caller]
fn resume(d: &Containerd, id: &str) {
    d.ctr(&["tasks", "resume", id])
        .expect_success("ctr task resume");
    let row = d.task(id);
    assert_eq!(
        row.as_ref().map(|r| r.status.as_str()),
        Some("RUNNING"),
        "{}: ctr task ls after resume",
        d.version()
    );
    assert!(
        !frozen(d, id),
        "{}: the cgroup of {id} is still frozen",
        d.version()
    );
}

/// SIGKILL to a paused task ends it (137); the task and container are deleted.
#[track_caller]
fn kill_paused(d: &Containerd, id: &str) {
    pause(d, id);
    assert_eq!(
        d.kill_and_remove(id, "SIGKILL"),
        137,
        "{}: SIGKILL of a paused task",
        d.version()
    );
}

/// The raw `ctr task metrics --format json` of `id`.
#[track_caller]
fn metrics_json(d: &Containerd, id: &str) -> serde_json::Value {
    let out = d
        .ctr(&["tasks", "metrics", "--format", "json", id])
        .expect_success("ctr task metrics");
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("{}: metrics are not JSON ({e}):\n{out}", d.version()))
}

/// A number at `path` (e.g. `/memory/usage/limit`) of the metrics; absent is 0, since
/// ctr's JSON leaves zero fields out.
fn metric(m: &serde_json::Value, path: &str) -> u64 {
    m.pointer(path).and_then(|v| v.as_u64()).unwrap_or(0)
}

e2e_test!(pause_resume_linux, [v1_6, v2_1], |d: &Containerd| {
    let events = d.subscribe_events();
    let id = d.new_id("pause");
    d.run_detached(&id, &[], &["sh", "-c", COUNTER]);
    let before = wait_above(d, "the counter", 0, || counter(d, &id));

    pause(d, &id);
    let frozen_at = counter(d, &id).expect("a counter value");
    assert!(frozen_at >= before, "{}", d.version());
    thread::sleep(FROZEN_WATCH);
    assert_eq!(
        counter(d, &id),
        Some(frozen_at),
        "{}: the container kept counting while paused",
        d.version()
    );

    // Wrong states are FAILED_PRECONDITION with a message naming the problem.
    let again = d.ctr(&["tasks", "pause", &id]);
    assert!(
        !again.success() && again.stderr.contains("already paused"),
        "{}: a second pause must fail:\n{again}",
        d.version()
    );

    resume(d, &id);
    wait_above(d, "the counter after resume", frozen_at, || counter(d, &id));
    let not_paused = d.ctr(&["tasks", "resume", &id]);
    assert!(
        !not_paused.success() && not_paused.stderr.contains("not paused"),
        "{}: resuming a running task must fail:\n{not_paused}",
        d.version()
    );

    let topics = wait_topic(d, &events, &id, "/tasks/resumed");
    let paused_at = topics.iter().position(|t| t == "/tasks/paused");
    let resumed_at = topics.iter().position(|t| t == "/tasks/resumed");
    assert!(
        paused_at.is_some() && paused_at < resumed_at,
        "{}: expected /tasks/paused then /tasks/resumed: {topics:?}",
        d.version()
    );

    // SIGKILL reaches a frozen task: the shim thaws after signalling.
    pause(d, &id);
    d.kill_task(&id, "SIGKILL");
    d.wait_task_status(&id, "STOPPED");
    let stopped = d.ctr(&["tasks", "pause", &id]);
    assert!(
        !stopped.success() && stopped.stderr.contains("has already stopped"),
        "{}: pausing a stopped task must fail:\n{stopped}",
        d.version()
    );
    assert_eq!(d.delete_task(&id), 137, "{}", d.version());
    d.delete_container(&id);
    events.kill();
    d.assert_no_leaks(&id);
});

e2e_test!(pause_resume_wasm, [v1_6, v2_1], |d: &Containerd| {
    let image = d.import_wasm("loop", &fixture("loop"), &WasmImageSpec::default());
    let id = d.new_id("wpause");
    d.run_image_detached(&id, &[], &image, &[]);
    let cpu = || Some(d.metrics(&id).cpu_ns);
    // The guest spins: its CPU time grows (compilation included, but that ends quickly).
    let running = wait_above(d, "the guest's cpu usage", 0, cpu);
    wait_above(d, "the guest's cpu usage", running, cpu);

    pause(d, &id);
    let frozen_at = d.metrics(&id).cpu_ns;
    thread::sleep(FROZEN_WATCH);
    assert_eq!(
        d.metrics(&id).cpu_ns,
        frozen_at,
        "{}: the Wasm guest used CPU while paused",
        d.version()
    );

    resume(d, &id);
    wait_above(d, "the guest's cpu usage after resume", frozen_at, cpu);

    kill_paused(d, &id);
    d.assert_no_leaks(&id);
});

/// Tries a 48 MiB allocation (busybox `tail -c` buffers what it keeps) each time `/tmp/go`
/// appears, and writes `ok` or `fail` to `/tmp/r<n>`. The allocation runs in a subshell
/// with `oom_score_adj` 1000 (raising needs no privilege), so under a small limit the OOM
/// killer takes it, never the container's shell: one victim could otherwise be the shell
/// when a second OOM hits while the first victim is still exiting.
const ALLOCATE_ON_DEMAND: &str = "n=0; while true; do if [ -e /tmp/go ]; then rm /tmp/go; \
     n=$((n+1)); if (echo 1000 > /proc/self/oom_score_adj; \
     head -c 50331648 /dev/zero | tail -c 50331648 > /dev/null); \
     then echo ok > /tmp/r$n; else echo fail > /tmp/r$n; fi; fi; sleep 0.05; done";

/// Triggers allocation attempt `n` and returns its outcome (`ok` or `fail`).
#[track_caller]
fn allocate(d: &Containerd, id: &str, n: u32) -> String {
    let rootfs = d.bundle_dir(id).join("rootfs/tmp");
    fs::write(rootfs.join("go"), "").expect("write the trigger");
    let result = rootfs.join(format!("r{n}"));
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    loop {
        if let Ok(text) = fs::read_to_string(&result)
            && text.ends_with('\n')
        {
            return text.trim().to_string();
        }
        if Instant::now() >= deadline {
            let files: Vec<_> = fs::read_dir(&rootfs)
                .map(|r| r.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            let oom: Vec<String> = cgroups_matching(&[id.to_string()])
                .iter()
                .flat_map(|dir| ["memory.oom_control", "memory.events"].map(|f| dir.join(f)))
                .filter_map(|f| fs::read_to_string(f).ok())
                .collect();
            panic!(
                "{}: allocation {n} gave no result within {CHANGE_TIMEOUT:?}; task: {:?}; \
                 /tmp: {files:?}; oom: {oom:?}",
                d.version(),
                d.task(id)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

e2e_test!(
    update_raises_memory_limit,
    [v1_6, v2_1],
    |d: &Containerd| {
        let events = d.subscribe_events();
        let id = d.new_id("update");
        let small = (32 * MIB).to_string();
        d.run_detached(
            &id,
            &["--memory-limit", &small],
            &["sh", "-c", ALLOCATE_ON_DEMAND],
        );
        let limit_file = {
            let v1 = cgroups_matching(std::slice::from_ref(&id))
                .iter()
                .any(|d| d.join("memory.limit_in_bytes").exists());
            cgroup_file(
                d,
                &id,
                if v1 {
                    "memory.limit_in_bytes"
                } else {
                    "memory.max"
                },
            )
        };
        assert_eq!(read_trimmed(&limit_file), small, "{}", d.version());

        assert_eq!(
            allocate(d, &id, 1),
            "fail",
            "{}: 48 MiB must not fit under a 32 MiB limit",
            d.version()
        );
        // The OOM kill of the child is an event of this container, and Stats count it.
        wait_topic(d, &events, &id, "/tasks/oom");
        let m = metrics_json(d, &id);
        let oom_kills =
            metric(&m, "/memory_oom_control/oom_kill") + metric(&m, "/memory_events/oom_kill");
        assert!(
            oom_kills >= 1,
            "{}: metrics carry no OOM kill: {m}",
            d.version()
        );

        // Bad input is refused by the shim with INVALID_ARGUMENT naming the problem.
        let bad = d.update_task_raw(&id, LINUX_RESOURCES_TYPE_URL, b"{\"memory\":".to_vec());
        assert!(
            bad.as_ref().is_err_and(
                |e| e.starts_with("InvalidArgument") && e.contains("LinuxResources JSON")
            ),
            "{}: bad resources JSON: {bad:?}",
            d.version()
        );

        // ctr has no `task update`: the request goes through containerd's gRPC API, as
        // CRI's UpdateContainerResources sends it.
        let big = (128 * MIB).to_string();
        d.update_task(&id, &serde_json::json!({"memory": {"limit": 128 * MIB}}))
            .unwrap_or_else(|e| panic!("{}: Tasks.Update: {e}", d.version()));
        assert_eq!(
            read_trimmed(&limit_file),
            big,
            "{}: the cgroup does not show the new limit",
            d.version()
        );
        let m = metrics_json(d, &id);
        assert_eq!(
            metric(&m, "/memory/usage/limit") + metric(&m, "/memory/usage_limit"),
            128 * MIB,
            "{}: metrics do not show the new limit: {m}",
            d.version()
        );
        assert_eq!(
            allocate(d, &id, 2),
            "ok",
            "{}: 48 MiB must fit under the raised 128 MiB limit",
            d.version()
        );

        assert_eq!(d.kill_and_remove(&id, "SIGKILL"), 137, "{}", d.version());
        events.kill();
        d.assert_no_leaks(&id);
    }
);

e2e_test!(
    oom_kill_publishes_task_oom,
    [v1_6, v2_1],
    |d: &Containerd| {
        let events = d.subscribe_events();
        let id = d.new_id("oomev");
        let limit = (32 * MIB).to_string();
        // `tail` keeps the last line of /dev/zero, which never ends: it grows until killed.
        let out = d.run_rm(&id, &["--memory-limit", &limit], &["tail", "/dev/zero"]);
        assert_eq!(
            out.code(),
            Some(137),
            "{}: the OOM-killed task should exit 137:\n{out}",
            d.version()
        );
        let topics = wait_topic(d, &events, &id, "/tasks/oom");
        let oom_at = topics.iter().position(|t| t == "/tasks/oom");
        let delete_at = topics.iter().position(|t| t == "/tasks/delete");
        assert!(
            delete_at.is_none() || oom_at < delete_at,
            "{}: /tasks/oom must come before /tasks/delete: {topics:?}",
            d.version()
        );
        events.kill();
        d.assert_no_leaks(&id);
    }
);

e2e_test!(stats_of_linux_and_wasm, [v1_6, v2_1], |d: &Containerd| {
    let limit = 64 * MIB;
    let id = d.new_id("stats");
    d.run_detached(
        &id,
        &["--memory-limit", &limit.to_string()],
        &["sh", "-c", "while true; do :; done"],
    );
    let cpu = || Some(d.metrics(&id).cpu_ns);
    wait_above(d, "cpu usage", 0, cpu);
    let m = d.metrics(&id);
    assert!(m.memory_bytes > 0, "{}: {m:?}", d.version());
    assert_eq!(m.pids, Some(1), "{}: pids.current: {m:?}", d.version());
    let raw = metrics_json(d, &id);
    assert_eq!(
        metric(&raw, "/memory/usage/limit") + metric(&raw, "/memory/usage_limit"),
        limit,
        "{}: the memory limit: {raw}",
        d.version()
    );
    if raw.pointer("/cpu/usage").is_some() {
        // cgroup v1: user + kernel time and one entry per CPU.
        let per_cpu = raw
            .pointer("/cpu/usage/per_cpu")
            .and_then(|v| v.as_array())
            .map(Vec::len)
            .unwrap_or(0);
        assert!(per_cpu >= 1, "{}: no per-cpu usage: {raw}", d.version());
    }
    assert_eq!(d.kill_and_remove(&id, "SIGKILL"), 137, "{}", d.version());
    d.assert_no_leaks(&id);

    let image = d.import_wasm("loop", &fixture("loop"), &WasmImageSpec::default());
    let wid = d.new_id("wstats");
    d.run_image_detached(&wid, &[], &image, &[]);
    let cpu = || Some(d.metrics(&wid).cpu_ns);
    wait_above(d, "the Wasm guest's cpu usage", 0, cpu);
    let m = d.metrics(&wid);
    // wasmtime's engine and the compiled module live in the container's cgroup.
    assert!(
        m.memory_bytes > MIB,
        "{}: Wasm memory usage: {m:?}",
        d.version()
    );
    assert!(
        m.pids.is_some_and(|p| p >= 1),
        "{}: Wasm pids: {m:?}",
        d.version()
    );
    assert_eq!(d.kill_and_remove(&wid, "SIGKILL"), 137, "{}", d.version());
    d.assert_no_leaks(&wid);
});
