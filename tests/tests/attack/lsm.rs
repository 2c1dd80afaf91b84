//! LSM labels are applied or refused, never dropped: a container asking for an AppArmor
//! profile or an SELinux label that the host cannot apply must not start unconfined. The CI
//! host has neither LSM, so there both requests fail `Create` naming the setting (runc fails
//! them too); `linux.mountLabel` without SELinux is not applied, as runc, and says so in the
//! shim's log.

use std::path::Path;

use amphi_e2e::{Containerd, Spec, e2e_test, image};

fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

e2e_test!(
    apparmor_profile_is_never_dropped,
    [v1_6, v2_1],
    |d: &Containerd| {
        let id = d.new_id("aa");
        let out = d.run_rm(
            &id,
            &["--apparmor-profile", "amphi-e2e-not-loaded"],
            &["sh", "-c", "echo RAN; cat /proc/self/attr/current"],
        );
        // With AppArmor the profile is not loaded (the kernel refuses it); without AppArmor the
        // shim refuses it. Either way the container must not run unconfined.
        assert!(
            out.code() != Some(0) && !out.stdout.contains("RAN"),
            "{}: a container with an AppArmor profile ran anyway:\n{out}",
            d.version()
        );
        assert!(
            out.stderr.contains("process.apparmorProfile"),
            "{}: the error should name process.apparmorProfile:\n{out}",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);

e2e_test!(
    selinux_label_is_never_dropped,
    [v1_6, v2_1],
    |d: &Containerd| {
        let rootfs = d.work_dir().join("rootfs");
        image::copy_rootfs(&rootfs);
        let id = d.new_id("se");
        let spec_path = d.work_dir().join("selinux.json");
        let mut spec = Spec::busybox(&id, &rootfs, &["sh", "-c", "echo RAN"]);
        spec.0["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0:c1,c2".into();
        spec.write(&spec_path);
        let out = d.run_rm_config(&id, &spec_path);
        if selinux_enabled() {
            assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        } else {
            assert!(
                out.code() != Some(0) && !out.stdout.contains("RAN"),
                "{}: a container with an SELinux label ran on a host without SELinux:\n{out}",
                d.version()
            );
            assert!(
                out.stderr.contains("process.selinuxLabel")
                    && out.stderr.contains("SELinux is not enabled"),
                "{}: the error should name process.selinuxLabel:\n{out}",
                d.version()
            );
        }
        d.assert_no_leaks(&id);
    }
);

e2e_test!(
    mount_label_without_selinux_is_logged,
    [v1_6, v2_1],
    |d: &Containerd| {
        if selinux_enabled() {
            // On an SELinux host the label is applied; this case is about its absence.
            return;
        }
        let rootfs = d.work_dir().join("rootfs");
        image::copy_rootfs(&rootfs);
        let id = d.new_id("ml");
        let spec_path = d.work_dir().join("mountlabel.json");
        let mut spec = Spec::busybox(&id, &rootfs, &["sh", "-c", "echo RAN"]);
        spec.0["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0:c1,c2".into();
        spec.write(&spec_path);
        let out = d.run_rm_config(&id, &spec_path);
        assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
        assert_eq!(out.stdout_trimmed(), "RAN", "{}:\n{out}", d.version());
        let log = std::fs::read_to_string(d.log_path()).unwrap_or_default();
        assert!(
            log.contains("linux.mountLabel") && log.contains("SELinux is not enabled"),
            "{}: the shim's log should say the mount label was not applied",
            d.version()
        );
        d.assert_no_leaks(&id);
    }
);
