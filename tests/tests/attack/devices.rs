//! Finding 6 of issue 8: device nodes of the host. Container root holds `CAP_MKNOD` by
//! containerd's default, so it can create a node for any device; only the device cgroup
//! stands between it and the host's disks and `/dev/kvm`. On v1 and hybrid hosts that is
//! `devices.deny`/`devices.allow` (`cgroup/v1_apply.rs`), on pure cgroup v2 hosts the eBPF
//! device program (`cgroup/device_filter`); the case is the same on both.

use amphi_e2e::{Containerd, e2e_test};

// Creates nodes for `/dev/loop0` (b 7:0), `/dev/kvm` (c 10:232) and `/dev/mem` (c 1:1)
// inside the container and opens each read-write: every open must fail with EPERM, while
// `/dev/null` (a default device) still opens. Catches the removal of the device rules
// (the v1 writes, or the v2 program not being attached).
e2e_test!(
    mknod_host_devices_cannot_be_opened,
    [v1_6, v2_1],
    |d: &Containerd| {
        let id = d.new_id("devnodes");
        let script = r#"
        mknod /tmp/loop0 b 7 0 && mknod /tmp/kvm c 10 232 && mknod /tmp/mem c 1 1 || exit 10
        for n in /tmp/loop0 /tmp/kvm /tmp/mem; do
            if (exec 3<>"$n") 2>/tmp/err; then echo "$n: opened"; else echo "$n: $(cat /tmp/err)"; fi
        done
        (exec 3<>/dev/null) && echo "/dev/null: opened"
    "#;
        let out = d.run_rm(&id, &[], &["sh", "-c", script]);
        assert_eq!(
            out.code(),
            Some(0),
            "{}: mknod (allowed by the default rules) or /dev/null failed:\n{out}",
            d.version()
        );
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 4, "{}:\n{out}", d.version());
        for line in &lines[..3] {
            assert!(
                line.contains("Operation not permitted"),
                "{}: a host device node opened from inside the container: {line}\n{out}",
                d.version()
            );
        }
        assert_eq!(lines[3], "/dev/null: opened", "{}:\n{out}", d.version());
        d.assert_no_leaks(&id);
    }
);
