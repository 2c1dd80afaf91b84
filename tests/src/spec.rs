//! A readable OCI runtime spec for `ctr run --config`, for what ctr has no flag for
//! (a pids limit).
//!
//! With `--config`, ctr takes the spec as is and prepares no snapshot: `root.path` must name
//! an existing directory. [`Spec::busybox`] points it at a copy of the busybox rootfs the
//! test owns, so the runtime sees an absolute `root.path` and an empty bundle `rootfs/`.

use std::path::Path;

use serde_json::{Value, json};

use crate::image::IMAGE_PATH_ENV;

/// A spec under construction; [`Spec::write`] saves it as JSON.
#[derive(Debug, Clone)]
pub struct Spec(pub Value);

/// The capabilities a default containerd spec grants.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

impl Spec {
    /// A spec running `args` in `rootfs` (read-only) with fresh pid, ipc, uts, mount and
    /// network namespaces and the cgroup path `/default/<id>` ctr would use.
    pub fn busybox(id: &str, rootfs: &Path, args: &[&str]) -> Spec {
        Spec(json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": { "uid": 0, "gid": 0 },
                "args": args,
                "env": [IMAGE_PATH_ENV],
                "cwd": "/",
                "capabilities": {
                    "bounding": DEFAULT_CAPS,
                    "effective": DEFAULT_CAPS,
                    "permitted": DEFAULT_CAPS
                },
                "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
                "noNewPrivileges": true
            },
            "root": { "path": rootfs.display().to_string(), "readonly": true },
            "hostname": "amphi-e2e",
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc",
                  "options": ["nosuid", "noexec", "nodev"] },
                { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                  "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
                { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                  "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
                { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                  "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
                { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                  "options": ["nosuid", "noexec", "nodev"] },
                { "destination": "/sys", "type": "sysfs", "source": "sysfs",
                  "options": ["nosuid", "noexec", "nodev", "ro"] },
                { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                  "options": ["nosuid", "nodev", "mode=1777", "size=65536k"] }
            ],
            "linux": {
                "cgroupsPath": format!("/default/{id}"),
                "resources": {
                    "devices": [{ "allow": false, "access": "rwm" }]
                },
                "namespaces": [
                    { "type": "pid" }, { "type": "ipc" }, { "type": "uts" },
                    { "type": "mount" }, { "type": "network" }
                ],
                "maskedPaths": [
                    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                    "/sys/firmware", "/proc/scsi"
                ],
                "readonlyPaths": [
                    "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq",
                    "/proc/sys", "/proc/sysrq-trigger"
                ]
            }
        }))
    }

    /// Sets `linux.resources.pids.limit`.
    pub fn pids_limit(mut self, limit: i64) -> Spec {
        self.0["linux"]["resources"]["pids"] = json!({ "limit": limit });
        self
    }

    /// Writes the spec as JSON to `path`.
    pub fn write(&self, path: &Path) {
        let text = serde_json::to_string_pretty(&self.0)
            .unwrap_or_else(|e| panic!("cannot serialize the spec: {e}"));
        std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_limit_lands_in_linux_resources() {
        let spec = Spec::busybox("c1", Path::new("/r"), &["sh"]).pids_limit(8);
        assert_eq!(spec.0["linux"]["resources"]["pids"]["limit"], 8);
        assert_eq!(spec.0["root"]["path"], "/r");
        assert_eq!(spec.0["linux"]["cgroupsPath"], "/default/c1");
        assert_eq!(spec.0["process"]["args"][0], "sh");
    }
}
