//! The Kubernetes path, on containerd 1.6 and 2.1: containerd's CRI plugin drives amphi as
//! the RuntimeClass handler `amphi` (see `amphi_e2e::cri`), as the kubelet would. A pod
//! mixing a Linux and a Wasm container runs under one shim next to its pause container;
//! logs, ExecSync, stats and exit codes reach CRI; removing the pod leaves nothing behind.

use std::thread;
use std::time::{Duration, Instant};

use amphi_e2e::daemon::CRI_NAMESPACE;
use amphi_e2e::wasm::{WasmImageSpec, fixture, wasm_layout};
use amphi_e2e::{Containerd, IMAGE, e2e_test, env};

/// Imports a Wasm image of fixture `module` into the CRI namespace.
fn import_wasm(d: &Containerd, name: &str, module: &str) -> String {
    let layout = wasm_layout(name, &fixture(module), &WasmImageSpec::default());
    d.try_import_layout_in(CRI_NAMESPACE, &layout, &[])
        .expect_success("ctr -n k8s.io image import of a wasm image");
    layout.name().full()
}

/// Waits (up to 10 s) until the CRI log file holds `needle`.
fn wait_log(
    cri: &amphi_e2e::cri::Cri<'_>,
    pod: &amphi_e2e::cri::Pod,
    name: &str,
    needle: &str,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = cri.log(pod, name);
        if log.contains(needle) || Instant::now() >= deadline {
            return log;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

e2e_test!(
    pod_with_linux_and_wasm_containers,
    cri,
    [v1_6, v2_1],
    |d: &Containerd| {
        let cri = d.cri();
        let hello = import_wasm(d, "hello", "hello");
        let sleeper = import_wasm(d, "sleep", "sleep");
        let pod = cri.run_pod("mixed");

        let app = cri.create_start(
            &pod,
            "app",
            IMAGE,
            &["sh", "-c", "echo hello-from-linux; exec sleep 300"],
        );
        let wasm = cri.create_start(&pod, "wasm", &hello, &[]);
        let idle = cri.create_start(&pod, "idle", &sleeper, &[]);

        // The Wasm container ran to completion: its output went to the CRI log, exit 0.
        let status = cri.wait_exited(&wasm);
        assert_eq!(status.exit_code, 0, "{}: {status:?}", d.version());
        let log = wait_log(&cri, &pod, "wasm", "hello from wasm");
        assert!(
            log.contains(" stdout F hello from wasm"),
            "{}: the Wasm container's CRI log:\n{log}",
            d.version()
        );
        let log = wait_log(&cri, &pod, "app", "hello-from-linux");
        assert!(
            log.contains(" stdout F hello-from-linux"),
            "{}: the Linux container's CRI log:\n{log}",
            d.version()
        );

        // One shim for the pod: pause, the Linux container and both Wasm containers.
        if env::testing_amphi() {
            let servers = d.shim_servers();
            assert_eq!(
                servers.len(),
                1,
                "{}: one shim per pod expected: {servers:?}",
                d.version()
            );
            for (id, kind) in [
                (&pod.id, "linux"),
                (&app, "linux"),
                (&wasm, "wasm"),
                (&idle, "wasm"),
            ] {
                let line = d.dispatch_line(id).unwrap_or_default();
                assert!(
                    line.contains(&format!(": {kind} (")),
                    "{}: {id} should run as {kind}: {line:?}",
                    d.version()
                );
            }
        }

        // ExecSync in the Linux container.
        let (out, err, code) = cri.exec_sync(
            &app,
            &["sh", "-c", "echo exec-out; echo exec-err >&2; exit 3"],
        );
        assert_eq!(
            (out.as_str(), err.as_str(), code),
            ("exec-out\n", "exec-err\n", 3),
            "{}: ExecSync in the Linux container",
            d.version()
        );

        // Stats as the kubelet reads them.
        let stats = cri.stats(&app);
        let memory = stats
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref());
        assert!(
            memory.is_some_and(|m| m.value > 0),
            "{}: working set of the Linux container: {stats:?}",
            d.version()
        );
        let cpu = stats
            .cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds.as_ref());
        assert!(
            cpu.is_some_and(|c| c.value > 0),
            "{}: CPU usage of the Linux container: {stats:?}",
            d.version()
        );
        let stats = cri.stats(&idle);
        assert!(
            stats
                .memory
                .as_ref()
                .and_then(|m| m.working_set_bytes.as_ref())
                .is_some_and(|m| m.value > 0),
            "{}: working set of the Wasm container: {stats:?}",
            d.version()
        );

        cri.remove_pod(&pod);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d.shim_servers().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        assert!(
            d.shim_servers().is_empty(),
            "{}: the pod's shim outlived the pod",
            d.version()
        );
        for id in [&pod.id, &app, &wasm, &idle] {
            d.assert_no_leaks(id);
        }
    }
);
// A container over its memory limit is OOM-killed: CRI reports exit 137 and reason
// OOMKilled, which it reads from the shim's TaskOOM event.
e2e_test!(oom_killed_container, cri, [v1_6, v2_1], |d: &Containerd| {
    let cri = d.cri();
    let pod = cri.run_pod("oom");
    let id = cri.create_start_limited(
        &pod,
        "hog",
        IMAGE,
        &["sh", "-c", "echo start; x=a; while true; do x=$x$x; done"],
        Some(32 << 20),
    );
    let status = cri.wait_exited(&id);
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (137, "OOMKilled"),
        "{}: {status:?}",
        d.version()
    );
    cri.remove_pod(&pod);
    d.assert_no_leaks(&id);
    d.assert_no_leaks(&pod.id);
});
