//! The classic runtime escapes, checked from inside a Linux container on every version:
//! capability sets (no inheritable set, CVE-2022-29162), masked and read-only `/proc` and
//! `/sys` paths, no descriptor beyond stdio in the init or an exec (CVE-2024-21626), a cwd
//! inside the container, and a mount destination that is a symlink pointing at a host path
//! (CVE-2021-30465: it must resolve inside the rootfs).

use std::fs;
use std::os::unix::fs::symlink;

use amphi_e2e::{Containerd, Output, Spec, e2e_test, image};

/// containerd's default capability set (`ctr run`), as bit numbers.
const DEFAULT_CAP_BITS: &[u32] = &[0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];

fn cap_line(status: &str, name: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status:\n{status}"));
    let hex = line.split_whitespace().nth(1).unwrap_or_default();
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[track_caller]
fn ok(d: &Containerd, out: &Output) {
    assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
}

e2e_test!(capability_sets, [v1_6, v2_1], |d: &Containerd| {
    let id = d.new_id("caps");
    let out = d.run_rm(&id, &[], &["cat", "/proc/self/status"]);
    ok(d, &out);
    let want: u64 = DEFAULT_CAP_BITS.iter().map(|b| 1u64 << b).sum();
    for set in ["CapBnd:", "CapPrm:", "CapEff:"] {
        assert_eq!(
            cap_line(&out.stdout, set),
            want,
            "{}: {set} differs from containerd's default set",
            d.version()
        );
    }
    assert_eq!(
        cap_line(&out.stdout, "CapInh:"),
        0,
        "{}: inheritable set",
        d.version()
    );
    assert_eq!(
        cap_line(&out.stdout, "CapAmb:"),
        0,
        "{}: ambient set",
        d.version()
    );
    d.assert_no_leaks(&id);
});

e2e_test!(masked_and_readonly_paths, [v1_6, v2_1], |d: &Containerd| {
    let id = d.new_id("mask");
    let script = "echo timer_list=$(wc -c < /proc/timer_list); \
         echo keys=$(cat /proc/keys | wc -c); \
         echo acpi=$(ls -A /proc/acpi | wc -l); \
         echo firmware=$(ls -A /sys/firmware | wc -l); \
         (echo amphi > /proc/sys/kernel/hostname) 2>/dev/null && echo SYS-WRITTEN; \
         (echo h > /proc/sysrq-trigger) 2>/dev/null && echo SYSRQ-WRITTEN; \
         touch /proc/acpi/x 2>/dev/null && echo ACPI-WRITTEN; \
         true";
    let out = d.run_rm(&id, &[], &["sh", "-c", script]);
    ok(d, &out);
    for line in ["timer_list=0", "keys=0", "acpi=0", "firmware=0"] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "{}: expected {line} (masked):\n{out}",
            d.version()
        );
    }
    assert!(
        !out.stdout.contains("WRITTEN"),
        "{}: a read-only or masked path was written:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
});

e2e_test!(
    no_leaked_fds_and_cwd_inside,
    [v1_6, v2_1],
    |d: &Containerd| {
        // `ls` holds one descriptor of its own on the directory it lists (fd 3).
        let id = d.new_id("fds");
        let script = "ls /proc/self/fd | tr '\\n' ' '; echo; readlink /proc/self/cwd";
        let out = d.run_rm(&id, &["--cwd", "/tmp"], &["sh", "-c", script]);
        ok(d, &out);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            lines.first().map(|l| l.trim()),
            Some("0 1 2 3"),
            "{}: the init has descriptors beyond stdio:\n{out}",
            d.version()
        );
        assert_eq!(lines.get(1), Some(&"/tmp"), "{}: cwd:\n{out}", d.version());
        d.assert_no_leaks(&id);

        let held = d.new_id("fdsx");
        d.run_detached(&held, &[], &["sleep", "1000"]);
        let mut cmd = d.ctr_command();
        cmd.args(["tasks", "exec", "--exec-id", "x1", "--cwd", "/etc", &held]);
        cmd.args(["sh", "-c", script]);
        let out = amphi_e2e::command::run(&mut cmd, amphi_e2e::command::CTR_TIMEOUT);
        ok(d, &out);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            lines.first().map(|l| l.trim()),
            Some("0 1 2 3"),
            "{}: the exec has descriptors beyond stdio:\n{out}",
            d.version()
        );
        assert_eq!(
            lines.get(1),
            Some(&"/etc"),
            "{}: exec cwd:\n{out}",
            d.version()
        );
        assert_eq!(d.kill_and_remove(&held, "SIGKILL"), 137, "{}", d.version());
        d.assert_no_leaks(&held);
    }
);

e2e_test!(
    symlinked_mount_destination_stays_inside,
    [v1_6, v2_1],
    |d: &Containerd| {
        let rootfs = d.work_dir().join("rootfs");
        image::copy_rootfs(&rootfs);
        let id = d.new_id("symdest");
        // A host directory the link names; it must never be created or mounted over.
        let host_target = d.work_dir().join(format!("host-target-{id}"));
        fs::create_dir_all(rootfs.join("mnt")).expect("mkdir rootfs/mnt");
        symlink(&host_target, rootfs.join("mnt/evil")).expect("symlink in the rootfs");
        // The same path inside the rootfs, where the link must resolve.
        let inside = rootfs.join(host_target.strip_prefix("/").expect("absolute work dir"));
        fs::create_dir_all(&inside).expect("mkdir the link's target inside the rootfs");
        let source = d.work_dir().join("volume");
        fs::create_dir_all(&source).expect("mkdir volume");
        fs::write(source.join("marker"), "volume\n").expect("write marker");

        let spec_path = d.work_dir().join("symdest.json");
        let mut spec = Spec::busybox(&id, &rootfs, &["sh", "-c", "cat /mnt/evil/marker"]);
        spec.0["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(serde_json::json!({
                "destination": "/mnt/evil", "type": "bind",
                "source": source.display().to_string(), "options": ["rbind", "ro"]
            }));
        spec.write(&spec_path);
        let out = d.run_rm_config(&id, &spec_path);
        ok(d, &out);
        assert_eq!(out.stdout_trimmed(), "volume", "{}:\n{out}", d.version());
        assert!(
            !host_target.exists(),
            "{}: the runtime followed the rootfs's symlink to the host path {}",
            d.version(),
            host_target.display()
        );
        d.assert_no_leaks(&id);
    }
);
