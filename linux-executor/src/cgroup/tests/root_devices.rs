//! cgroup v2 device programs on the real kernel. Needs root and a cgroup2 mount: on a pure
//! v2 host that is `/sys/fs/cgroup`, on a hybrid host (the CI machines) `/sys/fs/cgroup/
//! unified`, found through `/proc/self/mountinfo`. Device programs attach to any cgroup2
//! directory and the kernel enforces them together with the v1 devices controller, so
//! these tests prove the filter on a hybrid host as well.
//!
//! The process under test is a shell that moves itself into the test cgroup and then
//! tries to open and create device nodes, reporting each outcome on stdout; the test
//! process itself never enters the cgroup. Test cgroups are made below a directory of the
//! test's own, so no controller of the host's root cgroup is touched.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use serde_json::json;

use super::resources;
use crate::cgroup::{
    Cgroup, CgroupErrorKind, CgroupRoot,
    device_filter::{DeviceRule, Program, attached, install, program_exists},
    parse_cgroups_path,
};

const EPERM_TEXT: &str = "Operation not permitted";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it creates cgroups in the host's cgroup2 hierarchy and \
         attaches eBPF programs); run the test suite as root"
    );
}

/// Where the host mounts cgroup2; fails loudly when it does not.
fn cgroup2_mount() -> PathBuf {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split(' ').next() == Some("cgroup2") {
            let mount_point = left.split(' ').nth(4).unwrap();
            return PathBuf::from(mount_point);
        }
    }
    panic!(
        "this test needs a cgroup2 mount (pure v2: /sys/fs/cgroup, hybrid: /sys/fs/cgroup/unified); none in /proc/self/mountinfo"
    );
}

/// A directory of the test's own in the cgroup2 hierarchy, removed (children first) on
/// drop even when an assertion failed half-way.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        let dir = cgroup2_mount().join(format!("amphi-test-{name}-{}", std::process::id()));
        fs::create_dir(&dir).unwrap();
        TestDir(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.0) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
        let _ = fs::remove_dir(&self.0);
    }
}

/// One probe: open a node read-write, or create one (`mknod <path> c <major> <minor>`).
enum Probe<'a> {
    Open(&'a Path),
    Mknod(&'a Path, u32, u32),
}

/// Runs a shell inside the cgroup `dir` that tries every probe; returns, per probe, "ok"
/// or the error message (in the C locale, so `EPERM` reads "Operation not permitted").
fn probe_in(dir: &Path, probes: &[Probe<'_>]) -> Vec<String> {
    let mut script = String::from("echo $$ > \"$0/cgroup.procs\" || exit 90\n");
    for p in probes {
        let cmd = match p {
            Probe::Open(path) => format!("(exec 3<>'{}')", path.display()),
            Probe::Mknod(path, major, minor) => {
                format!("mknod '{}' c {major} {minor}", path.display())
            }
        };
        script.push_str(&format!(
            "if msg=$( {cmd} 2>&1 ); then echo ok; else echo \"failed: $msg\"; fi\n"
        ));
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg(dir)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "probe shell: {:?}, stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), probes.len(), "{lines:?}");
    lines
}

fn assert_denied(outcome: &str, what: &str) {
    assert!(
        outcome.contains(EPERM_TEXT),
        "{what} should fail with EPERM, got {outcome:?}"
    );
}

/// Waits (generously: the kernel releases a removed cgroup's programs from a workqueue)
/// until no program with this id is loaded.
fn wait_released(id: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while program_exists(id).unwrap() {
        assert!(
            Instant::now() < deadline,
            "device program {id} still loaded 60 s after its cgroup went away"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn char_node(path: &Path, major: u64, minor: u64) {
    mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(major, minor),
    )
    .unwrap();
}

fn rules(json: serde_json::Value) -> Vec<DeviceRule> {
    let spec: Vec<oci_spec::runtime::LinuxDeviceCgroup> = serde_json::from_value(json).unwrap();
    spec.iter()
        .map(|r| DeviceRule::from_spec(r).unwrap().unwrap())
        .collect()
}

#[test]
fn root_v2_device_program_is_enforced_replaced_and_released() {
    require_root();
    let cg = TestDir::new("devprog");
    let nodes = tempfile::tempdir().unwrap();
    let zero_copy = nodes.path().join("zero");
    char_node(&zero_copy, 1, 5);
    let created = nodes.path().join("made-inside");

    let only_null = rules(json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    ]));
    install(&cg.0, &Program::generate(&only_null)).unwrap();
    let first = attached(&cg.0).unwrap();
    assert_eq!(first.len(), 1, "{first:?}");

    let out = probe_in(
        &cg.0,
        &[
            Probe::Open(Path::new("/dev/null")),
            Probe::Open(Path::new("/dev/zero")),
            Probe::Open(&zero_copy),
            Probe::Mknod(&created, 1, 5),
        ],
    );
    assert_eq!(out[0], "ok", "/dev/null");
    assert_denied(&out[1], "opening /dev/zero (c 1:5)");
    assert_denied(&out[2], "opening a mknod'd c 1:5 node");
    assert_denied(&out[3], "mknod c 1:5");
    assert!(!created.exists());

    // Update: the new program goes on, the old one comes off and is released.
    let null_and_zero = rules(json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"}
    ]));
    install(&cg.0, &Program::generate(&null_and_zero)).unwrap();
    let second = attached(&cg.0).unwrap();
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first);
    wait_released(first[0]);

    let out = probe_in(
        &cg.0,
        &[
            Probe::Open(Path::new("/dev/zero")),
            Probe::Open(&zero_copy),
            Probe::Mknod(&created, 1, 5),
            Probe::Open(Path::new("/dev/full")),
        ],
    );
    assert_eq!(out[..3], ["ok", "ok", "ok"], "{out:?}");
    assert_denied(&out[3], "opening /dev/full (c 1:7)");

    // Removing the cgroup releases its program; nothing of ours pins it.
    fs::remove_dir(&cg.0).unwrap();
    wait_released(second[0]);
}

#[test]
fn root_v2_driver_device_rules_follow_create_update_and_remove() {
    require_root();
    // The driver's root is a directory of the test's own, so enabling controllers top-down
    // stays inside it.
    let top = TestDir::new("devdrv");
    let root = CgroupRoot::at(&top.0).unwrap();
    assert!(root.is_v2() && !root.emulated, "{root:?}");
    let path = parse_cgroups_path("/ctr", "ctr").unwrap();
    let nodes = tempfile::tempdir().unwrap();
    let kmsg = nodes.path().join("kmsg");
    char_node(&kmsg, 1, 11);

    // containerd's form: deny all; the runtime's default devices come on top.
    let deny_all = resources(json!({"devices": [{"allow": false, "access": "rwm"}]}));
    let cg = Cgroup::create(&root, &path, Some(&deny_all)).unwrap();
    let dir = cg.dirs().remove(0);
    let first = attached(&dir).unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    let out = probe_in(
        &dir,
        &[Probe::Open(Path::new("/dev/null")), Probe::Open(&kmsg)],
    );
    assert_eq!(out[0], "ok", "/dev/null is a default device");
    assert_denied(&out[1], "opening a mknod'd /dev/kmsg (c 1:11)");

    // Updates without device rules leave the program alone.
    cg.apply(&resources(json!({}))).unwrap();
    cg.apply(&resources(json!({"devices": []}))).unwrap();
    assert_eq!(attached(&dir).unwrap(), first);

    let allow_kmsg = resources(json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "rw"}
    ]}));
    cg.apply(&allow_kmsg).unwrap();
    let second = attached(&dir).unwrap();
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first);
    wait_released(first[0]);
    let out = probe_in(&dir, &[Probe::Open(&kmsg)]);
    assert_eq!(out[0], "ok");

    cg.remove().unwrap();
    assert!(!dir.exists());
    wait_released(second[0]);

    // A Create that fails after the program was attached leaves nothing either.
    let failing = resources(json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "network": {"classID": 1}
    }));
    let err = Cgroup::create(&root, &path, Some(&failing)).unwrap_err();
    assert_eq!(err.kind(), CgroupErrorKind::Unsupported, "{err}");
    assert!(!dir.exists(), "a failed create left {}", dir.display());
}
